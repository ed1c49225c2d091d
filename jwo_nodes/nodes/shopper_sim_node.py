"""shopper_sim_node: the simulator's stand-in for the vision tracker.

Publishes the floor positions of the scenario's shoppers as anonymous tracks, and,
like the real tracker will, gives a track its visit code when its party passes the
entry gate as that gate's ENTRY event fires.
"""
import time

import numpy as np
from jwo_msgs.msg import GateEvent, ShopperPosition, ShopperPositions
from rclpy.node import Node

from jwo_nodes.core.config import ConfigError, load_store_config
from jwo_nodes.core.sim import NS, SimClock, Timeline, load_scenario, stable_seed
from jwo_nodes.ros_common import (EVENT_QOS, REQUIRED, Counters, Param, declare_params,
                                  run_node, to_ns, to_stamp)

PARAMS = [
    Param('store_config', str, 'Path of the store YAML (config/stores/<store>.yaml).', REQUIRED),
    Param('scenario', str, 'Path of the scenario YAML to play.', REQUIRED),
    Param('sim_start_ns', int, 'Wall-clock epoch (ns) at which scenario time 0 happens.', REQUIRED),
    Param('time_scale', float, 'Scenario seconds per wall second.', 1.0, 0.05, 50.0),
    Param('rate_hz', float, 'Tracker output rate (Hz, scenario time).', 10.0, 1.0, 60.0),
]


class ShopperSimNode(Node):
    def __init__(self):
        super().__init__('shopper_sim_node')
        params = declare_params(self, PARAMS)
        store = load_store_config(params.store_config)
        scenario = load_scenario(params.scenario, store)
        self._timeline = Timeline(scenario, store)
        self._noise = scenario.noise
        # Tracker frames lost and stamps jittered as the scenario's noise knobs say.
        self._rng = np.random.default_rng(stable_seed('tracker', scenario.seed))
        if params.sim_start_ns <= 0:
            raise ConfigError(f'node {self.get_fully_qualified_name()}', 'sim_start_ns', 'must be > 0')
        self._sim_clock = SimClock(params.sim_start_ns, params.time_scale)
        self._rate_hz = params.rate_hz
        self._published = 0
        self._visit_of_party = {}
        self._track_of_person = {}
        self._counters = Counters(self, 'shopper_sim', ('frames', 'visits_assigned'))
        self._publisher = self.create_publisher(ShopperPositions, 'shoppers/positions', EVENT_QOS)
        for gate_id in store.gates:
            self.create_subscription(GateEvent, f'gates/{gate_id}/events', self._on_gate, EVENT_QOS)
        self.create_timer(0.5 / (params.rate_hz * params.time_scale), self._tick)

    def _on_gate(self, msg: GateEvent) -> None:
        if msg.direction != GateEvent.ENTRY:
            return
        t = to_ns(msg.header.stamp) - self._sim_clock.start_ns
        party = self._timeline.party_at_entry(msg.gate_id, t)
        if party is None:
            self._counters.warn('unknown_entry', f'{msg.event_id}: no simulated party entered then')
            return
        self._visit_of_party[party] = msg.visit_code
        self._counters.count('visits_assigned')

    def _tick(self) -> None:
        period_ns = int(NS / self._rate_hz)
        for k in self._sim_clock.due(self._rate_hz, self._published, time.time_ns()):
            self._published = k + 1
            dropped = self._rng.random() < self._noise.dropped_messages
            jitter = float(self._rng.normal(0.0, self._noise.clock_jitter_ms * 1e6))
            if dropped:
                self._counters.count('frames_dropped_by_scenario')
                continue
            t = k * period_ns + int(max(-0.4 * period_ns, min(0.4 * period_ns, jitter)))
            msg = ShopperPositions()
            msg.header.stamp = to_stamp(self._sim_clock.stamp_ns(t))
            msg.header.frame_id = 'floor'
            for person in self._timeline.positions(t):
                track = self._track_of_person.setdefault(
                    person.person_id, f'track-{len(self._track_of_person) + 1}')
                msg.shoppers.append(ShopperPosition(
                    track_id=track, visit_code=self._visit_of_party.get(person.party_id, ''),
                    x=person.x, y=person.y, confidence=1.0))
            self._publisher.publish(msg)
            self._counters.count('frames')


def main(args=None):
    run_node(ShopperSimNode, args)


if __name__ == '__main__':
    main()
