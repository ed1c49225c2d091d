"""When a graph is ready (jwo_nodes.core.readiness), from plain node reports."""
from jwo_nodes.core.readiness import NodeReport, readiness

FUSION, SHELF, GATE = '/jwo/fusion_node', '/jwo/shelves/S1/weight_sensor_node', '/jwo/gates/G1/gate_node'
CHANGES, EVENTS = '/jwo/shelves/S1/weight/changes', '/jwo/gates/G1/events'


def reports(fusion_changes=1, fusion_events=1, shelf_subscribers=1, gate_subscribers=1):
    return {
        FUSION: NodeReport(FUSION, 10, {'/jwo/receipts': 0, '/diagnostics': 0},
                           {CHANGES: fusion_changes, EVENTS: fusion_events, '/rosout': 0}),
        SHELF: NodeReport(SHELF, 11, {CHANGES: shelf_subscribers, '/diagnostics': 0}, {}),
        GATE: NodeReport(GATE, 12, {EVENTS: gate_subscribers}, {}),
    }


def test_ready_when_every_node_reported_and_every_pair_matched():
    state = readiness([FUSION, SHELF, GATE], reports())
    assert state.ready and state.summary() == 'ready'


def test_a_node_not_up_is_named():
    found = reports()
    del found[GATE]
    state = readiness([FUSION, SHELF, GATE], found)
    assert not state.ready
    assert state.missing_nodes == (GATE,)
    assert 'not up: /jwo/gates/G1/gate_node' in state.summary()


def test_each_side_of_an_unmatched_pair_is_named():
    state = readiness([FUSION, SHELF, GATE], reports(fusion_changes=0, shelf_subscribers=0))
    assert not state.ready
    assert state.unmatched == (
        f'{FUSION} {CHANGES}: 0 of 1 publishers matched',
        f'{SHELF} {CHANGES}: 0 of 1 subscribers matched')


def test_peers_outside_the_graph_only_add_matches():
    # A monitor also subscribed: more matches than the graph needs is still ready.
    assert readiness([FUSION, SHELF, GATE], reports(shelf_subscribers=2, gate_subscribers=3)).ready


def test_topics_without_peers_in_the_graph_need_no_match():
    # Nobody in the graph subscribes to receipts or diagnostics; /rosout is ignored.
    state = readiness([FUSION, SHELF, GATE], reports())
    assert not any('receipts' in line or 'diagnostics' in line for line in state.unmatched)


def test_reports_of_nodes_outside_the_graph_are_ignored():
    found = reports()
    found['/other/node'] = NodeReport('/other/node', 13, {}, {CHANGES: 0})
    assert readiness([FUSION, SHELF, GATE], found).ready


def test_summary_is_one_bounded_line():
    names = [f'/jwo/shelves/S{i}/weight_sensor_node' for i in range(40)]
    summary = readiness(names, {}).summary(limit=3)
    assert summary.endswith('and 37 more') and '\n' not in summary
