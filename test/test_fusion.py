"""Fusion core without a ROS graph: the demo scenario through a perfect detector and
tracker, then each hard case and each kind of bad input on its own."""
from collections import Counter

import pytest

from jwo_nodes.core.config import load_store_config
from jwo_nodes.core.fusion import (AMBIGUOUS_ATTRIBUTION, AMBIGUOUS_PRODUCT, FINAL,
                                   NEEDS_REVIEW, NS, UNIDENTIFIED_ITEM, UNMATCHED_PUT_BACK,
                                   ChangeInput, FusionCore, GateInput, TrackInput)
from jwo_nodes.core.sim import Timeline, load_scenario

STORE = 'config/stores/demo.yaml'
WALL = 10**18  # wall clock far from stamps: only staleness reads it


@pytest.fixture(scope='module')
def store(repo=None):
    from pathlib import Path
    return load_store_config(Path(__file__).resolve().parent.parent / STORE)


def run_timeline(store, timeline, shuffle_seed=None):
    """Feeds a timeline to FusionCore the way the nodes would; returns receipts by party."""
    core = FusionCore(store)
    visit_of_party, party_of_visit = {}, {}
    inputs = []
    for gate_id in store.gates:
        for i, (t, line) in enumerate(timeline.gate_lines(gate_id)):
            words = line.split()
            if words[0] == 'ENTRY':
                party = timeline.party_at_entry(gate_id, t)
                code = f'v-{party}'
                visit_of_party[party], party_of_visit[code] = code, party
                inputs.append((t, 'gate', GateInput(f'{gate_id}/{i}', gate_id, t, True, code, int(words[3]))))
            else:
                code = ''
                if len(words) > 1:
                    code = next(visit_of_party[p.id] for p in timeline.scenario.parties
                                if p.credential_token == words[2])
                inputs.append((t, 'gate', GateInput(f'{gate_id}/{i}', gate_id, t, False, code, 1)))
    for i, event in enumerate(timeline.weight_events):
        inputs.append((event.end_ns + NS // 2, 'change', ChangeInput(
            f'{event.shelf_id}/{i}', event.shelf_id, (event.bin_id,), (event.delta_grams,),
            event.start_ns, event.end_ns, 1.5)))
    for t in range(0, timeline.duration_ns + 3 * NS, NS // 10):
        tracks = [TrackInput(p.person_id, visit_of_party.get(p.party_id, '') if t >= next(
            x.enter_at_ns for x in timeline.scenario.parties if x.id == p.party_id) else '', p.x, p.y)
            for p in timeline.positions(t)]
        inputs.append((t, 'positions', tracks))
        if t % (NS // 5) == 0:
            for shelf_id in store.shelves:
                inputs.append((t, 'status', shelf_id))
    inputs.sort(key=lambda item: item[0])
    receipts = {}
    for t, kind, item in inputs:
        if kind == 'gate':
            out = core.on_gate_event(item, WALL)
        elif kind == 'change':
            out = core.on_weight_change(item, WALL)
        elif kind == 'positions':
            out = core.on_positions(t, item, WALL)
        else:
            out = core.on_shelf_status(item, t - NS // 2, WALL)
        for receipt in out.receipts:
            receipts[party_of_visit[receipt.visit_code]] = receipt
    return receipts, core


def lines_of(receipt):
    return {line.sku: line.quantity for line in receipt.lines}


def test_demo_scenario_receipts_match_ground_truth(store):
    timeline = Timeline(load_scenario('config/scenarios/demo.yaml', store), store)
    receipts, core = run_timeline(store, timeline)
    expected = timeline.expected_items()
    assert set(receipts) == set(expected)
    for party, items in expected.items():
        receipt = receipts[party]
        if receipt.status == FINAL:
            assert lines_of(receipt) == dict(+items), party
        else:
            assert receipt.reasons, party
    assert receipts['ana'].status == FINAL
    assert receipts['ana'].total_cents == 2 * 149 + 399


def test_totals_in_integer_cents(store):
    timeline = Timeline(load_scenario('config/scenarios/demo.yaml', store), store)
    receipts, _ = run_timeline(store, timeline)
    for receipt in receipts.values():
        assert all(isinstance(line.line_total_cents, int) for line in receipt.lines)
        assert receipt.subtotal_cents == sum(line.line_total_cents for line in receipt.lines)
        assert receipt.total_cents == receipt.subtotal_cents + receipt.tax_cents
