"""The launcher's view of a starting graph: every node's NodeState (see
jwo_nodes.core.readiness) and, for a simulated store, the signal of scenario time 0.
Used by `jwo launch`, `jwo demo`, `jwo eval` and `jwo bench`."""
import time
from typing import Optional

from builtin_interfaces.msg import Time
from jwo.msg import NodeState
from rclpy.node import Node

from jwo_nodes.core.readiness import NodeReport, Readiness, readiness
from jwo_nodes.ros_common import (DURABLE_EVENT_QOS, LATCHED_QOS, NODE_STATES_TOPIC, SIM_START_TOPIC,
                                  StateReporter, spin_arrived, to_stamp)

NS = 1_000_000_000


class ReadinessWatch(Node):
    """Tells when the nodes ``nodes`` (fully qualified names; this one is added, and
    ``also`` such as a run monitor) are up and matched, and signals scenario time 0."""

    FQN = '/jwo/launcher'

    def __init__(self, nodes: list, also: tuple = ()):
        super().__init__('launcher', namespace='/jwo')
        self.nodes = list(nodes) + list(also) + [self.FQN]
        self.reports = {}              # node name -> its newest NodeReport
        self.states_seen = 0
        self.started_ns = time.time_ns()
        self.ready_ns: Optional[int] = None
        # A reader deep enough for every node's latched state at once.
        self.create_subscription(NodeState, NODE_STATES_TOPIC, self._on_state, DURABLE_EVENT_QOS)
        self._start = self.create_publisher(Time, SIM_START_TOPIC, LATCHED_QOS)
        self._reporter = StateReporter(self)

    def _on_state(self, msg: NodeState) -> None:
        self.states_seen += 1
        self.reports[msg.node] = NodeReport(msg.node, msg.pid,
                                            dict(zip(msg.publishes, msg.matched_subscribers)),
                                            dict(zip(msg.subscribes, msg.matched_publishers)))

    def state(self) -> Readiness:
        found = readiness(self.nodes, self.reports)
        if found.ready and self.ready_ns is None:
            self.ready_ns = time.time_ns()
        return found

    def ready_after_s(self) -> float:
        return ((self.ready_ns or time.time_ns()) - self.started_ns) / NS

    def signal_start(self, start_ns: int) -> None:
        """Scenario time 0 for every simulated sensor; latched, so a node restarted
        later gets it too."""
        self._start.publish(to_stamp(start_ns))


class GraphAnnouncer:
    """`jwo launch`'s readiness: says once when the graph is ready (and, while it is
    not, every ten seconds what it waits for) and, with ``start_lead_s`` (a scenario),
    signals scenario time 0 that long after."""

    def __init__(self, specs, start_lead_s: Optional[float], say):
        import rclpy
        from rclpy.executors import SingleThreadedExecutor
        self._rclpy = rclpy
        rclpy.init()
        self.watch = ReadinessWatch([spec.fqn for spec in specs])
        self._executor = SingleThreadedExecutor()
        self._executor.add_node(self.watch)
        self._lead_s = start_lead_s
        self._say = say
        self._announced = False
        self._next_note_s = 10.0

    def turn(self) -> None:
        # Every NodeState that has arrived, not one per turn: a starting graph of dozens
        # of nodes sends a hundred or more.
        spin_arrived(self._executor, lambda: self.watch.states_seen)
        if self._announced:
            return
        state = self.watch.state()
        waited = self.watch.ready_after_s()
        if state.ready:
            self._announced = True
            line = (f'graph ready in {waited:.1f} s: {len(self.watch.nodes)} nodes up, '
                    'every publisher-subscriber pair matched')
            if self._lead_s is not None:
                self.watch.signal_start(time.time_ns() + int(self._lead_s * NS))
                line += f'; scenario time 0 in {self._lead_s:g} s'
            self._say(line)
        elif waited > self._next_note_s:
            self._next_note_s += 10.0
            self._say(f'graph not ready after {waited:.0f} s: {state.summary()}')

    def close(self) -> None:
        self._executor.remove_node(self.watch)
        self.watch.destroy_node()
        self._rclpy.try_shutdown()
