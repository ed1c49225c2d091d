"""What every jwo node shares: QoS per kind of topic, declared parameters, counters
published as diagnostics, stamp conversion and the one start/shutdown pattern.

This is the only module besides jwo_nodes.nodes that imports rclpy.
"""
import os
import sys
import time
from dataclasses import dataclass
from typing import Any, Callable, Optional

import rclpy
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import (FloatingPointRange, IntegerRange, ParameterDescriptor,
                                ParameterType, SetParametersResult)
from rclpy._rclpy_pybind11 import RCLError
from rclpy.event_handler import PublisherEventCallbacks, SubscriptionEventCallbacks
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import (DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy,
                       qos_profile_sensor_data)

from jwo.msg import NodeState

from jwo_nodes.core import health
from jwo_nodes.core.config import ConfigError
from jwo_nodes.core.readiness import IGNORED_TOPICS
from jwo_nodes.static_executor import StaticSingleThreadedExecutor

# Raw sensor streams: the newest sample matters, a lost one does not.
SENSOR_QOS = qos_profile_sensor_data
# Events that change carts and receipts: never dropped while the reader keeps up.
EVENT_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1000,
                       reliability=ReliabilityPolicy.RELIABLE,
                       durability=DurabilityPolicy.VOLATILE)
# Events that must survive a consumer's late start or restart (gate events, receipts,
# review requests): the publisher keeps the last thousand for late joiners, who drop
# what they already hold.
DURABLE_EVENT_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1000,
                               reliability=ReliabilityPolicy.RELIABLE,
                               durability=DurabilityPolicy.TRANSIENT_LOCAL)
# Status for monitors: only the newest matters, so the history stays small.
DIAGNOSTICS_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10,
                             reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.VOLATILE)
# State a late joiner needs at once (layout, configuration).
# Sensor samples played back from a bag (`jwo replay`): reliable, every sample kept
# until taken. The replayer's publishers are reliable (jwo_nodes/bag/replayer.py), so
# nothing is dropped however far behind a subscriber falls; the replayer waits instead.
REPLAY_INPUT_QOS = QoSProfile(history=HistoryPolicy.KEEP_ALL, depth=1000,
                              reliability=ReliabilityPolicy.RELIABLE,
                              durability=DurabilityPolicy.VOLATILE)
LATCHED_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1,
                         reliability=ReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy.TRANSIENT_LOCAL)

# rclpy gives every publisher and subscription QoS event handlers by default (they log
# an incompatible QoS or type). Each is a waitable that the executor walks on every
# wake-up, with a list membership test per waitable: quadratic, and in a container of
# 25 shelves it cost more than the work. The nodes on the sensor-to-cart path go
# without; the launcher's readiness check names an unmatched publisher and subscriber.
NO_PUBLISHER_EVENTS = PublisherEventCallbacks(use_default_callbacks=False)
NO_SUBSCRIPTION_EVENTS = SubscriptionEventCallbacks(use_default_callbacks=False)

# Every node's NodeState (latched, the newest per node) and the launcher's signal of
# scenario time 0 once the graph is ready (latched): absolute, outside any namespace.
NODE_STATES_TOPIC = '/jwo/node_states'
SIM_START_TOPIC = '/jwo/sim/start'
NODE_STATES_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1,
                             reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)

REQUIRED = object()
"""Default of a parameter that has none: a per-store value must be given."""

_TYPES = {
    bool: ParameterType.PARAMETER_BOOL,
    int: ParameterType.PARAMETER_INTEGER,
    float: ParameterType.PARAMETER_DOUBLE,
    str: ParameterType.PARAMETER_STRING,
}


@dataclass(frozen=True)
class Param:
    """One node parameter: declared once, with type, description and range; read-only
    unless dynamic."""

    name: str
    type: type
    description: str
    default: Any = REQUIRED
    min: Optional[float] = None
    max: Optional[float] = None
    # `ros2 param set` may change it while the node runs: only for a value the node
    # reads from its Params at every use (the others are taken once, at start, and a
    # change would silently have no effect).
    dynamic: bool = False

    def descriptor(self) -> ParameterDescriptor:
        descriptor = ParameterDescriptor(name=self.name, type=_TYPES[self.type],
                                         description=self.description, read_only=not self.dynamic)
        if self.min is not None and self.max is not None:
            if self.type is int:
                descriptor.integer_range = [IntegerRange(
                    from_value=int(self.min), to_value=int(self.max), step=0)]
            elif self.type is float:
                descriptor.floating_point_range = [FloatingPointRange(
                    from_value=float(self.min), to_value=float(self.max), step=0.0)]
        return descriptor

    def problem(self, value) -> str:
        """What is wrong with a value of this parameter; empty when nothing."""
        # A bool is an int to Python, not to ROS.
        if not isinstance(value, self.type) or isinstance(value, bool) and self.type is not bool:
            return f'expected {self.type.__name__}, got {value!r}'
        if self.min is not None and value < self.min or self.max is not None and value > self.max:
            low, high = ('-inf' if self.min is None else self.min), ('inf' if self.max is None else self.max)
            return f'{value} is out of range [{low}, {high}]'
        return ''


class Params:
    """Parameter values by attribute: ``params.rate_hz``."""

    def __init__(self, values: dict):
        self.__dict__.update(values)


def declare_params(node: Node, specs: list) -> Params:
    """Declares every spec on the node and returns the values.

    A missing required parameter or a value out of range raises ConfigError naming
    the node and the parameter, so start-up fails with one clear line. A change to a
    dynamic parameter is checked against its spec and, once set, is in the Params.
    """
    values = {}
    where = f'node {node.get_fully_qualified_name()}'
    for spec in specs:
        try:
            if spec.default is REQUIRED:
                node.declare_parameter(spec.name, _parameter_type(spec.type), spec.descriptor())
            else:
                node.declare_parameter(spec.name, spec.default, spec.descriptor())
            value = node.get_parameter(spec.name).value
        except rclpy.exceptions.ParameterUninitializedException:
            raise ConfigError(where, spec.name, f'required parameter is not set ({spec.description})')
        except (rclpy.exceptions.InvalidParameterValueException,
                rclpy.exceptions.InvalidParameterTypeException) as error:
            raise ConfigError(where, spec.name, f'invalid value: {error}')
        if value is None:
            raise ConfigError(where, spec.name, f'required parameter is not set ({spec.description})')
        if problem := spec.problem(value):
            raise ConfigError(where, spec.name, problem)
        values[spec.name] = value
    params = Params(values)
    dynamic = {spec.name: spec for spec in specs if spec.dynamic}
    if dynamic:
        node.add_on_set_parameters_callback(lambda changes: _check_changes(changes, dynamic))
        node.add_post_set_parameters_callback(lambda changes: params.__dict__.update(
            (change.name, change.value) for change in changes if change.name in dynamic))
    return params


def _check_changes(changes: list, dynamic: dict) -> SetParametersResult:
    """Refuses a change of a dynamic parameter that its spec does not allow (rclpy
    refuses the read-only ones before asking)."""
    for change in changes:
        spec = dynamic.get(change.name)
        problem = spec.problem(change.value) if spec else ''
        if problem:
            return SetParametersResult(successful=False, reason=f'{change.name}: {problem}')
    return SetParametersResult(successful=True)


def _parameter_type(python_type: type) -> Parameter.Type:
    return {bool: Parameter.Type.BOOL, int: Parameter.Type.INTEGER,
            float: Parameter.Type.DOUBLE, str: Parameter.Type.STRING}[python_type]


def to_ns(stamp: Time) -> int:
    return stamp.sec * 1_000_000_000 + stamp.nanosec


def to_stamp(ns: int) -> Time:
    return Time(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)


# Period ns -> the callbacks of that period's timer, while run_nodes runs several nodes
# in this process; None otherwise (a node alone, or nodes built by a test).
_shared_timers = None


def shared_timer(node: Node, period_s: float, callback: Callable[[], None]) -> None:
    """Calls ``callback`` every ``period_s``. Nodes composed in one process share one
    timer per period (its first node holds it): every executor wake-up walks the wait
    set of every node in the process, so 25 shelves ticking on timers of their own
    cost 25 times the wake-ups for the same work. Callbacks run in the order added."""
    if _shared_timers is None:
        node.create_timer(period_s, callback)
        return
    callbacks = _shared_timers.get(round(period_s * 1e9))
    if callbacks is None:
        callbacks = _shared_timers[round(period_s * 1e9)] = []

        def tick() -> None:
            for each in callbacks:
                each()
        node.create_timer(period_s, tick)
    callbacks.append(callback)


# diagnostic_msgs levels by jwo_nodes.core.health level.
_LEVELS = {health.OK: DiagnosticStatus.OK, health.WARN: DiagnosticStatus.WARN,
           health.ERROR: DiagnosticStatus.ERROR, health.STALE: DiagnosticStatus.STALE}


class Counters:
    """Counts what a node saw (bad input above all) and publishes the counts on
    /diagnostics once a second, so an operator sees a misbehaving device: the totals,
    ``<name>_recent`` over the last minute, and a level from those (OK, WARN, ERROR,
    STALE: see jwo_nodes.core.health)."""

    def __init__(self, node: Node, hardware_id: str, names: tuple):
        self._node = node
        self._hardware_id = hardware_id
        self.values = {name: 0 for name in names}
        self._bad_inputs = set()
        # Monotonic: silence is measured in wall time, whatever the system clock does.
        self._health = health.Health(time.monotonic_ns())
        self._publisher = node.create_publisher(DiagnosticArray, '/diagnostics', DIAGNOSTICS_QOS,
                                                event_callbacks=NO_PUBLISHER_EVENTS)
        shared_timer(node, 1.0, self.publish)

    def expect(self, name: str, within_s: float) -> None:
        """The counter ``name`` grows at least every ``within_s`` while the node's input
        is alive; when it does not, the status is STALE."""
        self._health.expect(name, within_s)

    def count(self, name: str, amount: int = 1) -> None:
        self.values[name] = self.values.get(name, 0) + amount

    def warn(self, name: str, message: str) -> None:
        """Counts a bad input and logs it, throttled so a flood cannot drown the log."""
        self.count(name)
        self._bad_inputs.add(name)
        self._node.get_logger().warning(f'{name}: {message} (total {self.values[name]})',
                                        throttle_duration_sec=1.0)

    def publish(self) -> None:
        report = self._health.update(time.monotonic_ns(), self.values, self._bad_inputs)
        values = {**self.values, **{f'{k}_recent': v for k, v in report.recent.items()}}
        status = DiagnosticStatus(
            level=_LEVELS[report.level], name=self._node.get_fully_qualified_name(),
            message=report.message, hardware_id=self._hardware_id,
            values=[KeyValue(key=k, value=str(v)) for k, v in sorted(values.items())])
        array = DiagnosticArray(status=[status])
        array.header.stamp = self._node.get_clock().now().to_msg()
        self._publisher.publish(array)


class StateReporter:
    """Publishes the node's NodeState: at start, and whenever one of its topics gains
    or loses a matched peer, so the launcher knows when the graph is ready."""

    def __init__(self, node: Node, period_s: float = 0.25):
        self._node = node
        self._last = None
        self._publisher = node.create_publisher(NodeState, NODE_STATES_TOPIC, NODE_STATES_QOS,
                                                event_callbacks=NO_PUBLISHER_EVENTS)
        shared_timer(node, period_s, self.report)
        self.report()

    def report(self) -> None:
        node = self._node
        publishes = sorted((p.topic_name, p.get_subscription_count()) for p in node.publishers
                           if p.topic_name not in IGNORED_TOPICS and p is not self._publisher)
        subscribes = sorted((s.topic_name, s.get_publisher_count()) for s in node.subscriptions
                            if s.topic_name not in IGNORED_TOPICS)
        if (publishes, subscribes) == self._last:
            return
        self._last = (publishes, subscribes)
        msg = NodeState(node=node.get_fully_qualified_name(), pid=os.getpid(),
                        publishes=[t for t, _ in publishes], matched_subscribers=[n for _, n in publishes],
                        subscribes=[t for t, _ in subscribes], matched_publishers=[n for _, n in subscribes])
        msg.header.stamp = node.get_clock().now().to_msg()
        self._publisher.publish(msg)


class SimStart:
    """The wall-clock epoch (ns) of scenario time 0 for a node that plays a scenario:
    the ``sim_start_ns`` parameter when it is given (> 0), else the launcher's signal
    on SIM_START_TOPIC, sent once every node of the graph is ready (None until then).
    A node restarted mid-run gets the same signal again: it is latched."""

    PARAM = 'sim_start_ns'
    DESCRIPTION = ("epoch ns of scenario time 0 (source 'sim'); 0: when the launcher signals "
                   f'that the graph is ready (on {SIM_START_TOPIC})')

    def __init__(self, node: Node, sim_start_ns: int):
        self.ns: Optional[int] = sim_start_ns if sim_start_ns > 0 else None
        if self.ns is None:
            self._subscription = node.create_subscription(Time, SIM_START_TOPIC, self._on_start,
                                                          LATCHED_QOS)

    def _on_start(self, msg: Time) -> None:
        if self.ns is None:
            self.ns = to_ns(msg)


def spin_arrived(executor, handled: Callable[[], int], limit: int = 1000) -> None:
    """Spins without waiting until the callbacks counted by ``handled()`` find nothing
    more (at most ``limit``): spin_once handles one callback, and one without a timeout
    finds nothing every other time, so only two empty ones in a row end it."""
    idle = 0
    for _ in range(limit):
        before = handled()
        executor.spin_once(timeout_sec=0.0)
        idle = idle + 1 if handled() == before else 0
        if idle == 2:
            return


def run_node(node_factory: Callable[..., Node], args=None) -> None:
    """The one start/shutdown pattern of every jwo executable: run_nodes with one node."""
    run_nodes([node_factory], args)


def run_nodes(node_factories: list, args=None) -> None:
    """Builds the nodes in order and spins them in one executor until Ctrl-C or SIGTERM
    (``node_container`` composes several nodes in one process this way).

    Exits 2 with one line on stderr when a node cannot start (bad config), 0 after
    Ctrl-C or SIGTERM, after destroying every node cleanly.
    """
    global _shared_timers
    rclpy.init(args=args)
    nodes = []
    # Composed nodes are destroyed together, so their timers can be shared.
    _shared_timers = {} if len(node_factories) > 1 else None
    try:
        executor = StaticSingleThreadedExecutor()
        for node_factory in node_factories:
            nodes.append(node_factory())
            StateReporter(nodes[-1])  # kept alive by its timer
            executor.add_node(nodes[-1])
        executor.spin()
    except ConfigError as error:
        print(f'error: {error}', file=sys.stderr, flush=True)
        sys.exit(2)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass  # Ctrl-C or SIGTERM, possibly while a node was still starting
    except RCLError:
        if rclpy.ok():
            raise  # else SIGTERM shut the context down while a node was being built
    finally:
        for node in reversed(nodes):
            node.destroy_node()
        rclpy.try_shutdown()
