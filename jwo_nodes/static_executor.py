"""A single-threaded executor that builds its wait set once, not on every wake-up.

rclpy's SingleThreadedExecutor gathers every subscription, timer, service, client and
guard condition of every node, enters each handle, builds a fresh rcl wait set and, once
it returns, tests every entity against the ready lists, all in Python, on every
wake-up. A container of 25 shelves holds some 300 entities (each node's 7 parameter
and type-description services among them), so each wake-up cost milliseconds:
py-spy put half of such a container's CPU in that walk. rclcpp has a static executor
for the same reason. This one keeps the gathered entities, their entered handles and
the wait set until a node is added or removed or an entity is created or destroyed
(compared by identity on every wake-up, a few microseconds), and looks the ready
entities up by handle pointer. What it yields, and in what order, is what
SingleThreadedExecutor yields: per node, timers, subscriptions, guard conditions,
clients, services, after the waitables.

It falls back to SingleThreadedExecutor's walk for a wait with a timeout timer
(spin_once(timeout_sec>0)) and while coroutine tasks are pending (an async callback
waiting on a future), where an entity may not be executable when the wait starts.
(rclpy's experimental EventsExecutor would do this in C++, but in this rclpy build it
spun a core and delivered nothing.) No rclpy executor internals are changed: it only
replaces the generator that SingleThreadedExecutor.spin_once draws from.
"""
from contextlib import ExitStack
from dataclasses import dataclass, field

from rclpy.exceptions import InvalidHandle
from rclpy.executors import (ConditionReachedException, ExternalShutdownException, ShutdownException,
                             SingleThreadedExecutor, TimeoutException)
from rclpy.impl.implementation_singleton import rclpy_implementation as _rclpy
from rclpy.utilities import timeout_sec_to_nsec

# The kinds of entity rclpy yields, per node, in this order.
_KINDS = ('timer', 'subscription', 'guard_condition', 'client', 'service')


@dataclass
class _Entry:
    order: int        # position in SingleThreadedExecutor's yield order
    kind: str
    entity: object
    node: object
    take: object      # the executor's _take_<kind>


@dataclass
class _WaitLayout:
    """The entities of the executor's nodes, their handles held open, and a wait set
    sized for them."""
    signature: tuple
    stack: ExitStack
    wait_set: object
    handles: dict = field(default_factory=dict)      # kind -> [handle]
    by_pointer: dict = field(default_factory=dict)   # kind -> {handle pointer: _Entry}
    guards: list = field(default_factory=list)       # every node's guard conditions, as _Entry
    waitables: list = field(default_factory=list)    # (waitable, node)


def _signature(nodes) -> tuple:
    """What the layout depends on: the nodes and each node's entities, by identity."""
    return tuple((node, tuple(node._timers), tuple(node._subscriptions), tuple(node._guards),
                  tuple(node._clients), tuple(node._services), tuple(node.waitables))
                 for node in nodes)


class StaticSingleThreadedExecutor(SingleThreadedExecutor):

    def __init__(self, *, context=None):
        super().__init__(context=context)
        self._layout = None

    def shutdown(self, timeout_sec=None) -> bool:
        done = super().shutdown(timeout_sec)
        self._drop_layout()
        return done

    def _drop_layout(self) -> None:
        if self._layout is not None:
            self._layout.stack.close()
            self._layout = None

    def _current_layout(self, nodes) -> _WaitLayout:
        signature = _signature(nodes)
        if self._layout is not None and self._layout.signature == signature:
            return self._layout
        self._drop_layout()
        stack = ExitStack()
        try:
            layout = self._build_layout(nodes, signature, stack)
        except BaseException:
            stack.close()
            raise
        self._layout = layout
        return layout

    def _build_layout(self, nodes, signature: tuple, stack: ExitStack) -> _WaitLayout:
        handles = {kind: [] for kind in _KINDS}
        by_pointer = {kind: {} for kind in _KINDS}
        guards, waitables, order = [], [], 0
        events = 0
        takes = {'timer': self._take_timer, 'subscription': self._take_subscription,
                 'guard_condition': self._take_guard_condition, 'client': self._take_client,
                 'service': self._take_service}
        for node in nodes:
            entities = {'timer': node._timers, 'subscription': node._subscriptions,
                        'guard_condition': node._guards, 'client': node._clients,
                        'service': node._services}
            for kind in _KINDS:
                for entity in entities[kind]:
                    try:
                        stack.enter_context(entity.handle)
                    except InvalidHandle:
                        continue
                    entry = _Entry(order, kind, entity, node, takes[kind])
                    order += 1
                    handles[kind].append(entity.handle)
                    if kind == 'guard_condition':
                        guards.append(entry)
                    else:
                        by_pointer[kind][entity.handle.pointer] = entry
            for waitable in node.waitables:
                try:
                    stack.enter_context(waitable)
                except InvalidHandle:
                    continue
                waitables.append((waitable, node))
        for executor_guard in (self._guard, self._sigint_gc):
            if executor_guard:
                stack.enter_context(executor_guard.handle)
                handles['guard_condition'].append(executor_guard.handle)
        counts = {kind: len(handles[kind]) for kind in _KINDS}
        for waitable, _ in waitables:
            number = waitable.get_num_entities()
            counts['subscription'] += number.num_subscriptions
            counts['guard_condition'] += number.num_guard_conditions
            counts['timer'] += number.num_timers
            counts['client'] += number.num_clients
            counts['service'] += number.num_services
            events += number.num_events
        stack.enter_context(self._context.handle)
        wait_set = _rclpy.WaitSet(counts['subscription'], counts['guard_condition'], counts['timer'],
                                  counts['client'], counts['service'], events, self._context.handle)
        return _WaitLayout(signature, stack, wait_set, handles, by_pointer, guards, waitables)

    def _wait_for_ready_callbacks(self, timeout_sec=None, nodes=None, condition=lambda: False):
        timeout_nsec = timeout_sec_to_nsec(getattr(timeout_sec, 'timeout', timeout_sec))
        if timeout_nsec > 0:
            yield from super()._wait_for_ready_callbacks(timeout_sec, nodes, condition)
            return
        yielded_work = False
        while not yielded_work and not self._is_shutdown and not condition():
            nodes_to_use = self.get_nodes() if nodes is None else nodes
            with self._tasks_lock:
                self._tasks = [t for t in self._tasks if not (t[0].done() or t[0].cancelled())]
                pending = bool(self._tasks)
            if pending:
                # Coroutine tasks: rclpy's walk, which yields them and leaves their
                # entities out of the wait. (It raises TimeoutException itself.)
                yield from super()._wait_for_ready_callbacks(timeout_sec, nodes, condition)
                return
            layout = self._current_layout(nodes_to_use)
            for entry in layout.guards:  # retrigger what was triggered but not handled
                if entry.entity._executor_triggered:
                    entry.entity.trigger()
            wait_set = layout.wait_set
            wait_set.clear_entities()
            for kind, add in (('subscription', wait_set.add_subscription), ('client', wait_set.add_client),
                              ('service', wait_set.add_service), ('timer', wait_set.add_timer),
                              ('guard_condition', wait_set.add_guard_condition)):
                for handle in layout.handles[kind]:
                    add(handle)
            for waitable, _ in layout.waitables:
                waitable.add_to_wait_set(wait_set)

            wait_set.wait(timeout_nsec)
            if self._is_shutdown:
                raise ShutdownException()
            if not self._context.ok():
                raise ExternalShutdownException()

            ready = []
            for kind in ('timer', 'subscription', 'client', 'service'):
                entries = layout.by_pointer[kind]
                ready.extend(entries[pointer] for pointer in wait_set.get_ready_entities(kind)
                             if pointer in entries)
            guards_ready = set(wait_set.get_ready_entities('guard_condition'))
            for entry in layout.guards:
                if entry.entity.handle.pointer in guards_ready:
                    entry.entity._executor_triggered = True
                if entry.entity._executor_triggered:
                    ready.append(entry)
            ready.sort(key=lambda entry: entry.order)

            for waitable, node in layout.waitables:
                if waitable.is_ready(wait_set) and waitable.callback_group.can_execute(waitable):
                    yielded_work = True
                    yield self._make_handler(waitable, node, self._take_waitable), waitable, node
            for entry in ready:
                entity = entry.entity
                if entry.kind == 'timer' and not entity.handle.is_timer_ready():
                    continue  # rcl reports cancelled timers ready
                if entity.callback_group is None or not entity.callback_group.can_execute(entity):
                    continue
                yielded_work = True
                yield self._make_handler(entity, entry.node, entry.take), entity, entry.node

            if timeout_nsec == 0:
                raise TimeoutException()
        if self._is_shutdown:
            raise ShutdownException()
        if condition():
            raise ConditionReachedException()

