"""`jwo replay`: plays a bag (rosbag2 MCAP, as `jwo record` or `ros2 bag record` write it).

    jwo replay runs/bag1 [--rate 2.0 | --max] [--topics T ...] [--clock-hz 100] [--duration S]

Publishes every message's recorded bytes with the original timing scaled by --rate, or
as fast as possible with --max (after waiting for each topic to have a subscriber, so
nothing is lost to discovery). Before exiting it waits for the reliable subscribers to
acknowledge everything. Publishes /clock (rosgraph_msgs/Clock) with the bag's time so
nodes started with use_sim_time follow the replay. Each topic is published with its
recorded QoS where that makes sense: reliable (which every subscriber can match),
transient local only when the recording publishers were (latched state), otherwise
keeping every message until each reliable subscriber has it (KEEP_ALL): a reliable
subscriber that keeps all too (as weight_sensor_node's replay input does) never loses a
message however fast the replay runs -- when its queue is full the replay waits for it
(the ``as fast as the graph keeps up`` of --max); one with a KEEP_LAST queue (EVENT_QOS)
drops its oldest messages when it falls further behind than its depth. The bag is
checked before the first message goes out: a truncated or damaged bag, time running
backwards, or a message type that is not installed, is one clear line on stderr naming
the file and record, and exit status 1. Exit status 0 at the end.
"""
import argparse
import signal
import sys
import time
from typing import Optional

import rclpy
from rclpy.duration import Duration
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.signals import SignalHandlerOptions
from rosgraph_msgs.msg import Clock

from jwo_nodes.bag.format import BagError, BagReader, UnknownMessageTypeError
from jwo_nodes.bag.recorder import message_class

CLOCK_TOPIC = '/clock'
REPLAY_DEPTH = 1000
# A subscriber that has taken nothing for this long while the replay waits for room in
# its queue fails the replay (it is stuck, not slow).
STALL_TIMEOUT_S = 60.0
CLOCK_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10,
                       reliability=ReliabilityPolicy.RELIABLE,
                       durability=DurabilityPolicy.VOLATILE)


# Types whose live publishers offer transient local (ros_common.DURABLE_EVENT_QOS) and
# whose subscribers ask for it, also in bags recorded before they did.
DURABLE_TYPES = {'jwo/msg/GateEvent'}


def replay_qos(profiles, type_name: str = '') -> QoSProfile:
    """The publisher QoS of a recorded topic (profiles: normalized offered_qos_profiles).

    Reliable always: a reliable publisher matches reliable and best-effort subscribers
    alike (the latter still get best-effort delivery). Transient local only when every
    recording publisher offered it (or the type is in DURABLE_TYPES), keeping its depth
    so late joiners get the same latched samples; otherwise volatile and KEEP_ALL: a message stays with the publisher
    until every reliable subscriber has acknowledged it (a KEEP_LAST history would drop
    unacknowledged messages in a burst), and publishing waits when a subscriber's queue
    is full.
    """
    latched = type_name in DURABLE_TYPES or (
        bool(profiles) and all(p['durability'] == 'transient_local' for p in profiles))
    if latched:
        depth = max([p.get('depth', 0) for p in profiles] + [1])
        return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth,
                          reliability=ReliabilityPolicy.RELIABLE,
                          durability=DurabilityPolicy.TRANSIENT_LOCAL)
    depth = max([p.get('depth', 0) for p in profiles] + [REPLAY_DEPTH])
    return QoSProfile(history=HistoryPolicy.KEEP_ALL, depth=depth,
                      reliability=ReliabilityPolicy.RELIABLE,
                      durability=DurabilityPolicy.VOLATILE)


class ReplayerNode(Node):
    """Publishers for a bag's topics (and /clock); ``play`` runs the replay loop."""

    def __init__(self, reader: BagReader, topics: Optional[list] = None, clock_hz: float = 100.0,
                 node_name: str = 'jwo_replayer'):
        super().__init__(node_name)
        self.reader = reader
        self.topics = sorted(topics if topics is not None else reader.topics)
        self.clock_hz = clock_hz
        self._topic_publishers = {}
        reader.check_definitions(self.topics)
        for topic in self.topics:
            info = reader.topics[topic]
            try:
                msg_type = message_class(info.type)
            except (ImportError, AttributeError, ValueError) as error:
                raise UnknownMessageTypeError(
                    info.file, f'message type {info.type} of topic {topic} is not installed '
                    f'here ({error})', where=info.where)
            qos = replay_qos(info.offered_qos_profiles, info.type)
            self._topic_publishers[topic] = self.create_publisher(msg_type, topic, qos)
        self.clock_publisher = (self.create_publisher(Clock, CLOCK_TOPIC, CLOCK_QOS)
                                if clock_hz > 0 else None)
        self.waits = 0          # publishes that found a subscriber's queue full
        self.wait_s = 0.0       # time spent waiting for them

    def wait_for_subscribers(self, timeout: float, should_stop, settle: float = 1.0,
                             expected: Optional[dict] = None) -> list:
        """Waits until every topic's publisher has matched its subscribers (``expected``:
        topic -> how many, default 1) and no new match came for ``settle`` seconds
        (discovery finds a topic's subscribers one by one: starting at the first would
        lose the early messages to the others), or until the timeout; returns the
        topics still short of subscribers."""
        expected = expected or {}
        deadline = time.monotonic() + timeout
        counts, changed = None, time.monotonic()
        while True:
            now = time.monotonic()
            latest = {t: p.get_subscription_count() for t, p in self._topic_publishers.items()}
            if latest != counts:
                counts, changed = latest, now
            unmatched = [t for t, n in counts.items() if n < expected.get(t, 1)]
            if (not unmatched and now - changed >= settle) or now >= deadline or should_stop():
                return unmatched
            time.sleep(0.05)

    def publish_clock(self, stamp_ns: int) -> None:
        if self.clock_publisher is not None:
            msg = Clock()
            msg.clock.sec, msg.clock.nanosec = divmod(int(stamp_ns), 1_000_000_000)
            self.clock_publisher.publish(msg)

    def publish(self, topic: str, data: bytes, should_stop=lambda: False) -> bool:
        """Publishes one message; when the publisher's history is full (a reliable
        subscriber keeping all messages has no room left) waits until it has room.
        False when stopped while waiting; RuntimeError when a subscriber took nothing
        for STALL_TIMEOUT_S."""
        publisher = self._topic_publishers[topic]
        try:
            publisher.publish(data)
            return True
        except RuntimeError:  # rclpy's RCLError: the write timed out, history full
            pass
        started = time.monotonic()
        self.waits += 1
        next_warning = started + 5.0
        try:
            while not should_stop():
                time.sleep(0.005)
                try:
                    publisher.publish(data)
                    return True
                except RuntimeError as error:
                    now = time.monotonic()
                    if now - started > STALL_TIMEOUT_S:
                        raise RuntimeError(f'{topic}: a subscriber took no message for '
                                           f'{STALL_TIMEOUT_S:g} s ({error})') from None
                    if now >= next_warning:
                        print(f'waiting for the subscribers of {topic} to make room '
                              f'({now - started:.0f} s)', file=sys.stderr, flush=True)
                        next_warning = now + 5.0
            return False
        finally:
            self.wait_s += time.monotonic() - started

    def wait_for_acks(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        ok = True
        for publisher in list(self._topic_publishers.values()) + [self.clock_publisher]:
            if publisher is None:
                continue
            left = max(0.0, deadline - time.monotonic())
            ok = publisher.wait_for_all_acked(Duration(nanoseconds=int(left * 1e9))) and ok
        return ok

    def play(self, rate: Optional[float], should_stop, progress: bool = True,
             duration_s: Optional[float] = None) -> int:
        """Publishes the messages; rate None = as fast as possible; only the first
        ``duration_s`` seconds of bag time when given. Returns the count."""
        start_ns = self.reader.start_ns or 0
        end_ns = self.reader.end_ns or start_ns
        if duration_s is not None:
            end_ns = min(end_ns, start_ns + int(duration_s * 1e9))
        total = sum(self.reader.topics[t].message_count for t in self.topics)
        skip_clock = self.clock_publisher is not None and CLOCK_TOPIC in self._topic_publishers
        period = 1.0 / self.clock_hz if self.clock_hz > 0 else None
        wall_start = time.monotonic()
        next_clock = wall_start
        next_progress = wall_start + 1.0
        count = 0
        self.publish_clock(start_ns)

        def report(now: float, bag_ns: int) -> None:
            percent = 100.0 * count / total if total else 100.0
            print(f'replay {now - wall_start:6.1f} s: {count}/{total} messages ({percent:.0f}%), '
                  f'bag time {(bag_ns - start_ns) / 1e9:.1f}/{(end_ns - start_ns) / 1e9:.1f} s',
                  flush=True)

        for message in self.reader.messages(self.topics):
            if should_stop() or message.log_time > end_ns:
                break
            if rate is not None:
                due = wall_start + (message.log_time - start_ns) / 1e9 / rate
                while True:
                    now = time.monotonic()
                    if period is not None and now >= next_clock:
                        bag_now = start_ns + int((now - wall_start) * rate * 1e9)
                        self.publish_clock(min(bag_now, message.log_time))
                        next_clock = max(next_clock + period, now)
                    if progress and now >= next_progress:
                        report(now, min(start_ns + int((now - wall_start) * rate * 1e9),
                                        message.log_time))
                        next_progress += 1.0
                    if now >= due or should_stop():
                        break
                    wake = min(due, next_clock) if period is not None else due
                    time.sleep(max(0.0, min(wake - now, 0.1)))
                if should_stop():
                    break
            else:
                now = time.monotonic()
                if period is not None and now >= next_clock:
                    self.publish_clock(message.log_time)
                    next_clock = now + period
                if progress and now >= next_progress:
                    report(now, message.log_time)
                    next_progress = now + 1.0
            if skip_clock and message.topic == CLOCK_TOPIC:
                continue  # the replay publishes its own /clock
            if not self.publish(message.topic, message.data, should_stop):
                break
            count += 1
        self.publish_clock(end_ns)
        if progress:
            report(time.monotonic(), end_ns)
        return count


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('bag', metavar='BAG', help='bag directory (or .mcap file)')
    speed = parser.add_mutually_exclusive_group()
    speed.add_argument('--rate', type=float, default=1.0, metavar='X',
                       help='play X times as fast as recorded (default 1.0)')
    speed.add_argument('--max', action='store_true',
                       help='play as fast as possible (waits for subscribers first; they need '
                            'queues deep enough for the burst)')
    parser.add_argument('--topics', nargs='+', metavar='TOPIC', help='only these topics')
    parser.add_argument('--duration', type=float, metavar='S',
                        help='play only the first S seconds of bag time')
    parser.add_argument('--clock-hz', type=float, default=100.0, metavar='HZ',
                        help='rate of /clock messages (default 100; 0: no /clock)')
    parser.add_argument('--wait-subscribers', type=float, default=None, metavar='S',
                        help='wait up to S seconds for every topic to have a subscriber '
                             'before starting (default 10 with --max, 0 otherwise)')
    parser.add_argument('--subscribers', nargs='+', default=[], metavar='TOPIC=N',
                        help='with --wait-subscribers: wait for N subscribers on TOPIC '
                             '(default 1 per topic)')
    parser.add_argument('--check-stamps', action='store_true',
                        help='also refuse a bag in which the header stamps of a topic go back '
                             '(a sensor stream whose clock ran backwards)')
    parser.add_argument('--skip-check', action='store_true',
                        help='do not read the whole bag for damage before starting')
    parser.add_argument('--quiet', action='store_true', help='no progress line every second')


def run(args) -> int:
    if not args.max and args.rate <= 0:
        print('error: --rate must be positive', file=sys.stderr)
        return 2
    if args.clock_hz < 0:
        print('error: --clock-hz must not be negative', file=sys.stderr)
        return 2
    if args.duration is not None and not args.duration > 0:
        print('error: --duration must be positive', file=sys.stderr)
        return 2
    expected = {}
    for item in args.subscribers:
        topic, _, count = item.rpartition('=')
        if not topic or not count.isdigit():
            print(f'error: --subscribers takes TOPIC=N, got {item!r}', file=sys.stderr)
            return 2
        expected[topic if topic.startswith('/') else '/' + topic] = int(count)
    try:
        reader = BagReader(args.bag)
    except BagError as error:
        print(f'error: {error}', file=sys.stderr)
        return 1
    stop = {'requested': False}

    def request_stop(signum, frame) -> None:
        if stop['requested']:
            raise KeyboardInterrupt
        stop['requested'] = True

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    node = None
    try:
        topics = sorted(reader.topics)
        if args.topics:
            wanted = [t if t.startswith('/') else '/' + t for t in args.topics]
            missing = [t for t in wanted if t not in reader.topics]
            if missing:
                print(f'warning: not in the bag: {", ".join(missing)}', file=sys.stderr)
            topics = [t for t in topics if t in wanted]
            if not topics:
                print(f'error: {args.bag}: none of the topics {", ".join(wanted)} is in the bag',
                      file=sys.stderr)
                return 1
        if not args.skip_check:
            reader.validate()
        if args.check_stamps:
            reader.check_stamp_order(topics)
        rclpy.init(args=['--ros-args'], signal_handler_options=SignalHandlerOptions.NO)
        node = ReplayerNode(reader, topics=topics, clock_hz=args.clock_hz)
        wait = args.wait_subscribers if args.wait_subscribers is not None else (
            10.0 if args.max else 0.0)
        should_stop = lambda: stop['requested'] or not rclpy.ok()  # noqa: E731
        if wait > 0:
            unmatched = node.wait_for_subscribers(wait, should_stop, expected=expected)
            if unmatched:
                print(f'warning: no subscriber after {wait:g} s on {", ".join(unmatched)}',
                      file=sys.stderr)
            time.sleep(0.2)  # let the subscribers' side of discovery finish too
        print(f'replaying {reader.message_count if not args.topics else "selected"} messages '
              f'of {len(topics)} topics from {args.bag}'
              f' ({"as fast as possible" if args.max else f"rate {args.rate:g}"})', flush=True)
        started = time.monotonic()
        count = node.play(None if args.max else args.rate, should_stop, progress=not args.quiet,
                          duration_s=args.duration)
        played_s = time.monotonic() - started
        if not node.wait_for_acks(10.0):
            print('warning: some subscribers did not acknowledge every message', file=sys.stderr)
        interrupted = stop['requested']
        waited = (f'; waited {node.wait_s:.1f} s for subscribers to make room ({node.waits} times)'
                  if node.waits else '')
        print(f'replay {"interrupted" if interrupted else "done"}: {count} messages in '
              f'{played_s:.1f} s{waited}', flush=True)
        return 0
    except BagError as error:
        print(f'error: {error}', file=sys.stderr)
        return 1
    except RuntimeError as error:  # a subscriber stuck (see ReplayerNode.publish)
        print(f'error: {args.bag}: {error}', file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
        reader.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
