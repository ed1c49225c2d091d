"""StaticSingleThreadedExecutor (jwo_nodes.static_executor) against rclpy's
SingleThreadedExecutor on the same graph in this process: the same callbacks in the
same order, and it notices nodes and entities added and removed while it spins."""
import time

import pytest
import rclpy
from rcl_interfaces.srv import GetParameters
from rclpy.executors import SingleThreadedExecutor
from std_msgs.msg import Int64

from conftest import wait_until
from jwo_nodes.ros_common import EVENT_QOS
from jwo_nodes.static_executor import StaticSingleThreadedExecutor


@pytest.fixture
def context():
    context = rclpy.Context()
    rclpy.init(context=context)
    yield context
    rclpy.shutdown(context=context)


def _graph(context, log: list, tag: str):
    """Two nodes, each with subscriptions, a guard condition and a service; a
    publisher node that feeds them."""
    nodes = [rclpy.create_node(f'static_{tag}_{k}', context=context) for k in range(2)]
    for k, node in enumerate(nodes):
        for topic in ('a', 'b'):
            node.create_subscription(Int64, f'/static_{tag}/{topic}',
                                     lambda msg, k=k, topic=topic: log.append((k, topic, msg.data)), EVENT_QOS)
    guard = nodes[1].create_guard_condition(lambda: log.append((1, 'guard', 0)))
    source = rclpy.create_node(f'static_{tag}_source', context=context)
    publishers = {topic: source.create_publisher(Int64, f'/static_{tag}/{topic}', EVENT_QOS) for topic in 'ab'}
    return nodes, guard, source, publishers


def _spin_until(executor, done, timeout_s: float = 10.0) -> None:
    """spin_once without a timeout: with one (a timer in the wait) the static
    executor hands the wait to rclpy's."""
    deadline = time.monotonic() + timeout_s
    while not done() and time.monotonic() < deadline:
        executor.spin_once(timeout_sec=0.0)
    assert done()


@pytest.mark.parametrize('executor_type', [SingleThreadedExecutor, StaticSingleThreadedExecutor])
def test_every_message_once_in_order_and_the_guard_once(context, executor_type):
    log = []
    nodes, guard, source, publishers = _graph(context, log, executor_type.__name__.lower())
    executor = executor_type(context=context)
    for node in nodes + [source]:
        executor.add_node(node)
    wait_until(lambda: all(p.get_subscription_count() == 2 for p in publishers.values()), timeout=10)
    for value in range(3):
        publishers['b'].publish(Int64(data=value))
        publishers['a'].publish(Int64(data=value))
    guard.trigger()
    _spin_until(executor, lambda: len(log) >= 13)
    time.sleep(0.2)
    executor.spin_once(timeout_sec=0.0)
    assert len(log) == 13 and log.count((1, 'guard', 0)) == 1
    for k in range(2):
        for topic in 'ab':
            assert [v for n, t, v in log if (n, t) == (k, topic)] == [0, 1, 2]
    executor.shutdown()
    for node in nodes + [source]:
        node.destroy_node()


@pytest.mark.parametrize('executor_type', [SingleThreadedExecutor, StaticSingleThreadedExecutor])
def test_one_wake_up_yields_each_node_in_creation_order(context, executor_type):
    """Everything ready at once: per node its subscriptions in the order created, then
    its guard condition (the fusion node relies on it: weight changes before
    heartbeats). The order of the nodes is the executor's set order, in both."""
    log = []
    nodes, guard, source, publishers = _graph(context, log, f'order_{executor_type.__name__.lower()}')
    wait_until(lambda: all(p.get_subscription_count() == 2 for p in publishers.values()), timeout=10)
    publishers['b'].publish(Int64(data=7))
    publishers['a'].publish(Int64(data=7))
    guard.trigger()
    time.sleep(0.5)   # everything has arrived before the first wait
    executor = executor_type(context=context)
    for node in nodes:
        executor.add_node(node)
    _spin_until(executor, lambda: len(log) >= 5)
    assert [e for e in log if e[0] == 0] == [(0, 'a', 7), (0, 'b', 7)]
    assert [e for e in log if e[0] == 1] == [(1, 'a', 7), (1, 'b', 7), (1, 'guard', 0)]
    first = log[0][0]
    assert [e[0] for e in log] == [first] * (2 + first) + [1 - first] * (3 - first)   # node by node
    executor.shutdown()
    for node in nodes + [source]:
        node.destroy_node()


def test_it_notices_what_is_added_and_removed_while_it_spins(context):
    log = []
    executor = StaticSingleThreadedExecutor(context=context)
    node = rclpy.create_node('static_changes', context=context)
    source = rclpy.create_node('static_changes_source', context=context)
    publisher = source.create_publisher(Int64, '/static_changes/a', EVENT_QOS)
    executor.add_node(node)
    executor.add_node(source)
    ticks = []
    timer = node.create_timer(0.01, lambda: ticks.append(1))
    _spin_until(executor, lambda: len(ticks) >= 3)
    node.destroy_timer(timer)
    subscription = node.create_subscription(Int64, '/static_changes/a', lambda m: log.append(m.data), EVENT_QOS)
    wait_until(lambda: publisher.get_subscription_count() == 1, timeout=10)
    publisher.publish(Int64(data=1))
    _spin_until(executor, lambda: log == [1])
    node.destroy_subscription(subscription)
    # A node added later: its service answers (the parameter services of every node
    # are services too).
    later = rclpy.create_node('static_changes_later', context=context)
    executor.add_node(later)
    client = source.create_client(GetParameters, '/static_changes_later/get_parameters')
    assert client.wait_for_service(timeout_sec=10)
    future = client.call_async(GetParameters.Request(names=['use_sim_time']))
    _spin_until(executor, future.done)
    assert future.result().values[0].bool_value is False
    executor.remove_node(later)
    later.destroy_node()
    publisher.publish(Int64(data=2))
    executor.spin_once(timeout_sec=0.2)
    assert log == [1]   # the destroyed subscription took nothing
    executor.shutdown()
    node.destroy_node()
    source.destroy_node()
