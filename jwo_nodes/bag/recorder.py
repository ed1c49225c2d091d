"""`jwo record`: records topics into a rosbag2 bag (MCAP storage) that `ros2 bag` opens.

    jwo record -o runs/bag1 --topics /jwo/gates/g1/events /jwo/receipts [--duration 60]
    jwo record -o runs/bag1 --all

Subscribes with raw (serialized) subscriptions, so recording never deserializes a
message; the topic's type comes from the ROS graph, its definition from the installed
.msg files. Topics are looked up once a second, so a topic that appears later (or, with
--all, any new topic) is recorded from then on. Each message is written with its receive
time as log time and its header stamp (when the type starts with a std_msgs/Header) as
publish time. Prints progress once a second; Ctrl-C, SIGTERM or --duration close the bag
cleanly (until then the file is <bag>/<bag>_0.mcap.part).
"""
import argparse
import importlib
import re
import signal
import sys
import time
from typing import Optional

import rclpy
from rclpy.duration import Duration
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.signals import SignalHandlerOptions

from jwo_nodes.bag.format import (BagError, BagWriter, DefinitionNotFoundError,
                                  DefinitionSource, cdr_header_stamp_ns, normalize_type_name,
                                  starts_with_header)

# Topics every ROS 2 process publishes: recorded only when named with --topics.
_ALL_EXCLUDED = ('/rosout', '/parameter_events')
RECORD_DEPTH = 1000


def message_class(type_name: str):
    """The Python class of 'pkg/msg/Type'; ImportError/AttributeError when not installed."""
    package, namespace, name = normalize_type_name(type_name).split('/')
    return getattr(importlib.import_module(f'{package}.{namespace}'), name)


def _duration_dict(duration) -> dict:
    nanoseconds = duration.nanoseconds if isinstance(duration, Duration) else int(duration)
    nanoseconds = max(0, nanoseconds)
    return {'sec': nanoseconds // 1_000_000_000, 'nsec': nanoseconds % 1_000_000_000}


def qos_to_dict(qos: QoSProfile) -> dict:
    """An rclpy QoS profile as a rosbag2 offered_qos_profiles entry (version 9)."""
    return {
        'history': qos.history.name.lower(),
        'depth': int(qos.depth),
        'reliability': qos.reliability.name.lower(),
        'durability': qos.durability.name.lower(),
        'deadline': _duration_dict(qos.deadline),
        'lifespan': _duration_dict(qos.lifespan),
        'liveliness': qos.liveliness.name.lower(),
        'liveliness_lease_duration': _duration_dict(qos.liveliness_lease_duration),
        'avoid_ros_namespace_conventions': bool(qos.avoid_ros_namespace_conventions),
    }


def subscription_qos(offers: list) -> QoSProfile:
    """What rosbag2 requests to connect to every publisher: reliable only when all
    publishers are, transient local only when all are (then latched samples arrive)."""
    reliable = bool(offers) and all(q.reliability == ReliabilityPolicy.RELIABLE for q in offers)
    latched = bool(offers) and all(q.durability == DurabilityPolicy.TRANSIENT_LOCAL for q in offers)
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST, depth=RECORD_DEPTH,
        reliability=ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT,
        durability=DurabilityPolicy.TRANSIENT_LOCAL if latched else DurabilityPolicy.VOLATILE)


def _hidden(topic: str) -> bool:
    return any(part.startswith('_') for part in topic.split('/'))


class RecorderNode(Node):
    """Subscribes (raw) to the chosen topics and writes every message to a BagWriter."""

    def __init__(self, writer: BagWriter, topics: Optional[list] = None, all_topics: bool = False,
                 exclude: Optional[str] = None, discovery_period: float = 1.0,
                 progress: bool = True, node_name: str = 'jwo_recorder'):
        super().__init__(node_name)
        self.writer = writer
        self.wanted = [t if t.startswith('/') else '/' + t for t in (topics or [])]
        self.all_topics = all_topics
        self.exclude = re.compile(exclude) if exclude else None
        self.definitions = DefinitionSource()
        self._recording = {}
        self._skipped = set()
        self._headers = {}
        self._sequences = {}
        self.started = time.monotonic()
        self._progress = progress
        self.discover()
        self._discovery_timer = self.create_timer(discovery_period, self.discover)
        self._progress_timer = self.create_timer(1.0, self.print_progress) if progress else None

    # -- discovery

    def _selected(self, topic: str) -> bool:
        if topic in self.wanted:
            return True
        if not self.all_topics or _hidden(topic) or topic in _ALL_EXCLUDED:
            return False
        return not (self.exclude and self.exclude.search(topic))

    def discover(self) -> None:
        for topic, types in self.get_topic_names_and_types():
            if topic in self._recording or topic in self._skipped or not self._selected(topic):
                continue
            if len(types) != 1:
                self._skip(topic, f'it carries {len(types)} types ({", ".join(types)})')
                continue
            offers = [info.qos_profile for info in self.get_publishers_info_by_topic(topic)]
            if not offers:
                continue  # nothing publishes yet: look again at the next discovery
            self._subscribe(topic, types[0], offers)

    def _skip(self, topic: str, why: str) -> None:
        self._skipped.add(topic)
        self.get_logger().warning(f'not recording {topic}: {why}')

    def _subscribe(self, topic: str, type_name: str, offers: list) -> None:
        try:
            msg_type = message_class(type_name)
            definition = self.definitions.full_text(type_name)
        except (ImportError, AttributeError, ValueError, DefinitionNotFoundError) as error:
            self._skip(topic, f'message type {type_name} is not installed ({error})')
            return
        self.writer.add_topic(topic, type_name, [qos_to_dict(q) for q in offers],
                              definition=definition)
        self._headers[topic] = starts_with_header(definition)
        self._sequences[topic] = 0

        def on_message(data: bytes, info) -> None:
            self._record(topic, data, info)

        self._recording[topic] = self.create_subscription(
            msg_type, topic, on_message, subscription_qos(offers), raw=True)
        self.get_logger().info(f'recording {topic} ({type_name})')

    # -- recording

    def _record(self, topic: str, data: bytes, info) -> None:
        if self.writer.closed:
            return
        received = self.get_clock().now().nanoseconds
        stamp = cdr_header_stamp_ns(data) if self._headers[topic] else None
        if stamp is None:
            stamp = info.get('source_timestamp') or received
        self._sequences[topic] += 1
        sequence = info.get('publication_sequence_number') or self._sequences[topic]
        self.writer.write(topic, data, received, stamp, sequence)

    @property
    def recorded_topics(self) -> list:
        return sorted(self._recording)

    def print_progress(self) -> None:
        elapsed = time.monotonic() - self.started
        print(f'recording {elapsed:6.1f} s: {self.writer.message_count} messages, '
              f'{self.writer.data_bytes / 1e6:.2f} MB, {len(self._recording)} topics',
              flush=True)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('-o', '--output', required=True, metavar='BAG',
                        help='bag directory to create (must not exist or be empty)')
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument('--topics', nargs='+', metavar='TOPIC', help='topics to record')
    which.add_argument('-a', '--all', action='store_true',
                       help='record every topic, also those appearing later (not hidden ones, '
                            '/rosout nor /parameter_events)')
    parser.add_argument('--exclude', metavar='REGEX', help='with --all: topics not to record')
    parser.add_argument('--duration', type=float, metavar='S',
                        help='stop after S seconds (default: until Ctrl-C / SIGTERM)')
    parser.add_argument('--compression', choices=('zstd', 'lz4', 'none'), default='zstd',
                        help='MCAP chunk compression (default zstd)')
    parser.add_argument('--quiet', action='store_true', help='no progress line every second')


def run(args) -> int:
    if args.duration is not None and args.duration <= 0:
        print('error: --duration must be positive', file=sys.stderr)
        return 2
    try:
        writer = BagWriter(args.output, compression=args.compression)
    except BagError as error:
        print(f'error: {error}', file=sys.stderr)
        return 1
    stop = {'requested': False}

    def request_stop(signum, frame) -> None:
        if stop['requested']:
            raise KeyboardInterrupt  # a second Ctrl-C: stop now
        stop['requested'] = True

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    rclpy.init(args=['--ros-args'], signal_handler_options=SignalHandlerOptions.NO)
    node = None
    try:
        node = RecorderNode(writer, topics=args.topics, all_topics=args.all,
                            exclude=args.exclude, progress=not args.quiet)
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        deadline = None if args.duration is None else time.monotonic() + args.duration
        try:
            while not stop['requested'] and rclpy.ok():
                if deadline is not None and time.monotonic() >= deadline:
                    break
                executor.spin_once(timeout_sec=0.05)
        except (KeyboardInterrupt, ExternalShutdownException):
            pass
        executor.remove_node(node)
    finally:
        bag = writer.close()
        if node is not None:
            if node.wanted:
                missing = sorted(set(node.wanted) - set(node.recorded_topics))
                if missing:
                    print(f'warning: never saw a publisher on {", ".join(missing)}',
                          file=sys.stderr)
            node.destroy_node()
        rclpy.try_shutdown()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    print(f'recorded {writer.message_count} messages on {len(writer.topics)} topics, '
          f'{writer.data_bytes / 1e6:.2f} MB, into {bag}', flush=True)
    return 0
