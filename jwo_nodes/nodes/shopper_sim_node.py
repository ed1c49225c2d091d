"""shopper_sim_node: the simulator's stand-in for the vision tracker.

Publishes the floor positions of the scenario's shoppers as anonymous tracks, and,
like the real tracker will, gives a track its visit code when its party passes the
entry gate as that gate's ENTRY event fires.
"""
import time

from jwo.msg import GateEvent, ShopperPosition, ShopperPositions
from rclpy.node import Node

from jwo_nodes.core.config import load_store_config
from jwo_nodes.core.sim import SimClock, Timeline, load_scenario
from jwo_nodes.core.tracker_sim import TrackerSim
from jwo_nodes.ros_common import (DURABLE_EVENT_QOS, EVENT_QOS, REQUIRED, Counters, Param,
                                  SimStart, declare_params, run_node, to_ns, to_stamp)

PARAMS = [
    Param('store_config', str, 'Path of the store YAML (config/stores/<store>.yaml).', REQUIRED),
    Param('scenario', str, 'Path of the scenario YAML to play.', REQUIRED),
    Param(SimStart.PARAM, int, SimStart.DESCRIPTION, 0, 0),
    Param('time_scale', float, 'Scenario seconds per wall second.', 1.0, 0.05, 50.0),
    Param('rate_hz', float, 'Tracker output rate (Hz, scenario time).', 10.0, 1.0, 60.0),
]


class ShopperSimNode(Node):
    def __init__(self, **node_options):
        super().__init__('shopper_sim_node', **node_options)
        params = declare_params(self, PARAMS)
        store = load_store_config(params.store_config)
        scenario = load_scenario(params.scenario, store)
        # Frames, tracks, lost frames, jitter and visit codes: the pure tracker
        # stand-in (jwo_nodes/core/tracker_sim.py), shared with `jwo simbag`.
        self._tracker = TrackerSim(Timeline(scenario, store), params.rate_hz)
        self._time_scale = params.time_scale
        self._sim_start = SimStart(self, params.sim_start_ns)
        self._sim_clock = None    # once scenario time 0 is known
        self._live_from = 0       # the first frame sent
        self._early_entries = []  # ENTRY events received before it
        self._rate_hz = params.rate_hz
        self._published = 0
        self._counters = Counters(self, 'shopper_sim', ('frames', 'visits_assigned'))
        self._publisher = self.create_publisher(ShopperPositions, 'shoppers/positions', EVENT_QOS)
        for gate_id in store.gates:
            self.create_subscription(GateEvent, f'gates/{gate_id}/events', self._on_gate, DURABLE_EVENT_QOS)
        self.create_timer(0.5 / (params.rate_hz * params.time_scale), self._tick)

    def _on_gate(self, msg: GateEvent) -> None:
        if msg.direction != GateEvent.ENTRY:
            return
        if self._scenario_clock() is None:
            # A restarted node gets the durable ENTRY events and the start signal at
            # once, in either order: entries wait for the clock.
            self._early_entries.append(msg)
            return
        t = to_ns(msg.header.stamp) - self._sim_clock.start_ns
        if self._tracker.on_entry(msg.gate_id, t, msg.visit_code) is None:
            self._counters.warn('unknown_entry', f'{msg.event_id}: no simulated party entered then')
            return
        self._counters.count('visits_assigned')

    def _scenario_clock(self):
        if self._sim_clock is None and self._sim_start.ns is not None:
            self._sim_clock = SimClock(self._sim_start.ns, self._time_scale)
            # Started (or restarted) mid-scenario, a tracker sees from now on, as a real
            # one would: the frames already past are drawn (in order, as the stand-in
            # needs) but not sent late.
            self._live_from = self._sim_clock.due(self._rate_hz, 0, time.time_ns()).stop - 1
            early, self._early_entries = self._early_entries, []
            for msg in early:
                self._on_gate(msg)
        return self._sim_clock

    def _tick(self) -> None:
        if self._scenario_clock() is None:
            return
        for k in self._sim_clock.due(self._rate_hz, self._published, time.time_ns()):
            self._published = k + 1
            t = self._tracker.frame_time(k)
            if t is None:
                self._counters.count('frames_dropped_by_scenario')
                continue
            shoppers = self._tracker.shoppers(t)
            if k < self._live_from:
                continue
            msg = ShopperPositions()
            msg.header.stamp = to_stamp(self._sim_clock.stamp_ns(t))
            msg.header.frame_id = 'floor'
            msg.shoppers = [ShopperPosition(track_id=s.track_id, visit_code=s.visit_code,
                                            x=s.x, y=s.y, confidence=s.confidence)
                            for s in shoppers]
            self._publisher.publish(msg)
            self._counters.count('frames')


def main(args=None):
    run_node(ShopperSimNode, args)


if __name__ == '__main__':
    main()
