"""When a node graph is ready: every node it should have is up, and every publisher
and subscription of theirs has matched the peers the graph has for it. Pure: the
launcher passes in the nodes it started and what they reported (NodeState).

Whoever publishes a topic in the graph should be matched by every node of the graph
that subscribes to it, and the other way round; nodes outside the graph (a monitor,
`ros2 topic echo`) only add matches, so counts are compared with at least.
"""
from dataclasses import dataclass

# Topics every rclpy node has that say nothing about the store's data flow.
IGNORED_TOPICS = frozenset({'/rosout', '/parameter_events'})


@dataclass(frozen=True)
class NodeReport:
    node: str                   # fully qualified name
    pid: int
    publishes: dict             # topic -> matched subscriptions
    subscribes: dict            # topic -> matched publishers


@dataclass(frozen=True)
class Readiness:
    missing_nodes: tuple        # expected nodes that have not reported
    unmatched: tuple            # '<node> <topic>: n of m subscribers|publishers matched'

    @property
    def ready(self) -> bool:
        return not self.missing_nodes and not self.unmatched

    def summary(self, limit: int = 4) -> str:
        """One line of what is still missing."""
        parts = [f'not up: {", ".join(self.missing_nodes[:limit])}'
                 + (f' and {len(self.missing_nodes) - limit} more' if len(self.missing_nodes) > limit else '')
                 ] if self.missing_nodes else []
        if self.unmatched:
            parts.append('unmatched: ' + '; '.join(self.unmatched[:limit])
                         + (f' and {len(self.unmatched) - limit} more' if len(self.unmatched) > limit else ''))
        return ', '.join(parts) or 'ready'


def readiness(expected_nodes, reports: dict) -> Readiness:
    """``expected_nodes``: the fully qualified names the graph starts; ``reports``:
    node name -> its newest NodeReport."""
    expected = list(dict.fromkeys(expected_nodes))
    present = [reports[name] for name in expected if name in reports]
    publishers, subscribers = {}, {}
    for report in present:
        for topic in report.publishes:
            publishers.setdefault(topic, set()).add(report.node)
        for topic in report.subscribes:
            subscribers.setdefault(topic, set()).add(report.node)
    unmatched = []
    for report in present:
        for topic, matched in sorted(report.publishes.items()):
            want = len(subscribers.get(topic, set()) - {report.node})
            if topic not in IGNORED_TOPICS and matched < want:
                unmatched.append(f'{report.node} {topic}: {matched} of {want} subscribers matched')
        for topic, matched in sorted(report.subscribes.items()):
            want = len(publishers.get(topic, set()) - {report.node})
            if topic not in IGNORED_TOPICS and matched < want:
                unmatched.append(f'{report.node} {topic}: {matched} of {want} publishers matched')
    return Readiness(tuple(name for name in expected if name not in reports), tuple(unmatched))
