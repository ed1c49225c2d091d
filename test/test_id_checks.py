"""ID checks of age-restricted products in fusion's core and journal, without ROS: a
request once per visit and SKU from the stamps, the associates' decisions, and what
the receipt makes of them."""
from pathlib import Path

import pytest
import yaml

from jwo_nodes.core.config import load_store_config
from jwo_nodes.core.fusion import (FINAL, ID_NOT_VERIFIED, NEEDS_REVIEW, NS, FusionCore, FusionJournal,
                                   IdDecisionInput, IdVerdict)
from test_fusion_journal import SETTINGS, WALL0, Script

DEMO = Path(__file__).resolve().parent.parent / 'config' / 'stores' / 'demo.yaml'
JUICE, JUICE_GRAMS = 'JUICE-1L', 1080.0


@pytest.fixture(scope='module')
def store(tmp_path_factory):
    """The demo store with its orange juice sold to adults only."""
    document = yaml.safe_load(DEMO.read_text())
    for product in document['products']:
        product['age_restricted'] = product['sku'] == JUICE
    path = tmp_path_factory.mktemp('store') / 'store.yaml'
    path.write_text(yaml.safe_dump(document))
    return load_store_config(path)


def decide(script: Script, code: str, verdict: IdVerdict, stamp_ns: int, decision_id: str = None) -> None:
    script._step('id_decision', IdDecisionInput(decision_id or f'd-{code}-{stamp_ns}', code, JUICE, verdict,
                                                'A7', stamp_ns))


def shop(script: Script, code: str, track: str, *takes) -> dict:
    """One visit from the gate to its takes; returns the stamp of each take."""
    script.place(track, code, 'G1')
    script.enter(code)
    script.run(1)
    stamps = {}
    for bin_id, delta in takes:
        script.place(track, code, bin_id)
        script.run(2)
        script.change(bin_id, delta)
        stamps.setdefault(bin_id, []).append(script.t)
        script.run(1)
    return stamps


def leave(script: Script, code: str, track: str) -> int:
    script.place(track, code, 'G1')
    script.run(1)
    script.leave(code)
    exit_ns = script.t
    script.run(0.3)
    script.place(track, code, None)
    script.run(2)
    return exit_ns


def feed(target, steps) -> tuple:
    """Hands steps to a FusionCore or FusionJournal as fusion_node does; returns the ID
    checks its carts raised and the receipts by visit."""
    requests, receipts = [], {}
    for kind, *args in steps:
        handler = {'gate': target.on_gate_event, 'change': target.on_weight_change,
                   'positions': target.on_positions, 'status': target.on_shelf_status,
                   'id_decision': target.on_id_decision}.get(kind, target.advance)
        out = handler(*args)
        if out is None:
            continue
        for cart in out.carts + target.solved_carts():
            requests.extend(cart.id_checks)
        for receipt in out.receipts:
            receipts[receipt.visit_code] = receipt
            if isinstance(target, FusionJournal):
                target.published(receipt.receipt_id)
    return requests, receipts


def juice_line(receipt):
    return next(line for line in receipt.lines if line.sku == JUICE)


def test_a_request_once_per_visit_and_restricted_sku_from_the_change(store):
    s = Script(store)
    taken = shop(s, 'v1', 't1', ('S1-B3', -JUICE_GRAMS), ('S1-B1', -350.0), ('S1-B3', -JUICE_GRAMS))
    leave(s, 'v1', 't1')
    shop(s, 'v2', 't2', ('S1-B3', -JUICE_GRAMS))
    leave(s, 'v2', 't2')
    requests, receipts = feed(FusionCore(store, SETTINGS), s.steps)
    assert [(r.visit_code, r.sku, r.name, r.shelf_id) for r in requests] == [
        ('v1', JUICE, 'Orange juice 1 l', 'S1'), ('v2', JUICE, 'Orange juice 1 l', 'S1')]
    assert requests[0].stamp_ns == taken['S1-B3'][0]
    first_take = next(step[1] for step in s.steps if step[0] == 'change' and step[1].end_ns == requests[0].stamp_ns)
    assert requests[0].event_id == first_take.event_id
    assert juice_line(receipts['v1']).quantity == 2


def test_the_requests_follow_the_stamps_not_the_wall_clock(store):
    s = Script(store)
    shop(s, 'v1', 't1', ('S1-B3', -JUICE_GRAMS))
    leave(s, 'v1', 't1')
    late = [(kind, *args[:-1], args[-1] + 7 * NS) for kind, *args in s.steps]   # all arrive 7 s later
    assert feed(FusionCore(store, SETTINGS), late)[0] == feed(FusionCore(store, SETTINGS), s.steps)[0]


def test_an_id_confirmed_before_the_exit_makes_the_line_verified_and_the_receipt_final(store):
    s = Script(store)
    taken = shop(s, 'v1', 't1', ('S1-B3', -JUICE_GRAMS))
    decide(s, 'v1', IdVerdict.VERIFIED, taken['S1-B3'][0] + NS)
    leave(s, 'v1', 't1')
    _, receipts = feed(FusionCore(store, SETTINGS), s.steps)
    receipt = receipts['v1']
    assert receipt.status == FINAL and not receipt.reasons
    assert juice_line(receipt).age_restricted and juice_line(receipt).id_verified


def test_an_unverified_restricted_item_sends_the_visit_to_review(store):
    s = Script(store)
    shop(s, 'v1', 't1', ('S1-B3', -JUICE_GRAMS), ('S1-B1', -350.0))
    leave(s, 'v1', 't1')
    requests, receipts = feed(FusionCore(store, SETTINGS), s.steps)
    receipt = receipts['v1']
    assert receipt.status == NEEDS_REVIEW
    assert [(r.code, r.event_id) for r in receipt.reasons] == [(ID_NOT_VERIFIED, requests[0].event_id)]
    assert not juice_line(receipt).id_verified
    assert not next(line for line in receipt.lines if line.sku == 'COLA-330').id_verified


def test_a_refused_id_keeps_the_line_on_the_review(store):
    s = Script(store)
    taken = shop(s, 'v1', 't1', ('S1-B3', -JUICE_GRAMS))
    decide(s, 'v1', IdVerdict.VERIFIED, taken['S1-B3'][0] + NS)
    decide(s, 'v1', IdVerdict.REFUSED, taken['S1-B3'][0] + 2 * NS)     # the later one counts
    leave(s, 'v1', 't1')
    _, receipts = feed(FusionCore(store, SETTINGS), s.steps)
    receipt = receipts['v1']
    assert receipt.status == NEEDS_REVIEW and juice_line(receipt).quantity == 1
    assert [r.code for r in receipt.reasons] == [ID_NOT_VERIFIED]
    assert 'refused' in receipt.reasons[0].detail and not juice_line(receipt).id_verified


def test_a_decision_stamped_after_the_exit_does_not_count(store):
    s = Script(store)
    shop(s, 'v1', 't1', ('S1-B3', -JUICE_GRAMS))
    s.place('t1', 'v1', 'G1')
    s.run(1)
    s.leave('v1')
    decide(s, 'v1', IdVerdict.VERIFIED, s.t + NS)
    s.run(0.3)
    s.place('t1', 'v1', None)
    s.run(2)
    core = FusionCore(store, SETTINGS)
    _, receipts = feed(core, s.steps)
    assert receipts['v1'].status == NEEDS_REVIEW
    assert [r.code for r in receipts['v1'].reasons] == [ID_NOT_VERIFIED]


def test_decisions_on_nothing_requested_or_after_the_receipt_are_problems(store):
    s = Script(store)
    shop(s, 'v1', 't1', ('S1-B1', -350.0))
    decide(s, 'v1', IdVerdict.VERIFIED, s.t)
    leave(s, 'v1', 't1')
    decide(s, 'v1', IdVerdict.VERIFIED, s.t)
    core = FusionCore(store, SETTINGS)
    feed(core, s.steps)
    assert [counter for counter, _ in core.problems if 'id' in counter] == ['unknown_id_check', 'late_id_decision']


def test_the_journal_keeps_the_decisions_across_a_restart(store, tmp_path):
    s = Script(store)
    taken = shop(s, 'v1', 't1', ('S1-B3', -JUICE_GRAMS))
    decide(s, 'v1', IdVerdict.VERIFIED, taken['S1-B3'][0] + NS, decision_id='d1')
    crash = len(s.steps)
    leave(s, 'v1', 't1')
    before = FusionJournal(store, SETTINGS, tmp_path, WALL0)
    feed(before, s.steps[:crash])
    before.close()   # the process dies; its journal stays
    after = FusionJournal(store, SETTINGS, tmp_path, s.steps[crash][-1])
    again = IdDecisionInput('d1', 'v1', JUICE, IdVerdict.VERIFIED, 'A7', taken['S1-B3'][0] + NS)
    assert after.on_id_decision(again, s.steps[crash][-1]) is None     # re-sent: dropped
    _, receipts = feed(after, s.steps[crash:])
    after.close()
    receipt = receipts['v1']
    assert juice_line(receipt).id_verified
    assert ID_NOT_VERIFIED not in [r.code for r in receipt.reasons]   # (it goes to review for the restart)
