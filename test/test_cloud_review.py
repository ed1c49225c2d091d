"""Settling visits in doubt: confirm / correct with prices from the receipt or the
store's catalogue (never typed in), re-totalling in cents, the reviewer's choice per
event changing the receipt, one decision per visit (also under a race on a real S3
API), the labelled data and figures a decision leaves, reviewer accounts, and the
scripted CLI."""
import json
import sys
import threading
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / 'cloud'))

from jwo_cloud import catalogue, cli, convert, layout, review, review_queue, testing  # noqa: E402
from jwo_cloud.bucket import DirBucket, S3Bucket  # noqa: E402
from jwo_cloud.ingest import Ingest  # noqa: E402
from jwo_cloud.review import EventChoice  # noqa: E402
from jwo_cloud.wire import pb  # noqa: E402


@pytest.fixture
def bucket(tmp_path):
    return DirBucket(tmp_path / 'bucket')


def settle(bucket, receipt_id: str, reviewer: str, *args, **kwargs) -> dict:
    visit = review.load_visit(bucket, 'demo', receipt_id, with_clips=False)
    return review.decide(bucket, visit, reviewer, *args, **kwargs)


def test_confirm_keeps_the_store_figures_and_finishes(tmp_path, bucket):
    testing.seed_visits(bucket, tmp_path, [1, 2])
    claim = review_queue.claim(bucket, review_queue.VisitKey('demo', 'R00001'), 'alice',
                               time.time_ns() - 12 * review_queue.NS)
    final = settle(bucket, 'R00001', 'alice', claimed_ns=claim.claimed_ns)
    assert (final['subtotal_cents'], final['tax_cents'], final['total_cents']) == (497, 41, 538)
    assert final['status'] == 'FINAL' and final['review']['action'] == 'confirm'
    assert 12 <= final['review']['seconds_to_settle'] < 20
    assert json.loads(bucket.get(layout.final_key('demo', 'R00001'))) == final
    assert [e.receipt_id for e in review_queue.read(bucket).ordered()] == ['R00002']
    assert bucket.get(layout.pending_key('demo', 'R00001')) is None
    with pytest.raises(review.AlreadySettled, match='alice'):
        settle(bucket, 'R00001', 'bob')


def test_corrections_are_priced_from_the_receipt_and_the_catalogue(tmp_path, bucket):
    testing.seed_visits(bucket, tmp_path, [1])
    final = settle(bucket, 'R00001', 'alice', {'COLA-330': 1, 'CHOC-100': 0, 'GUM-10': 3},
                          note='one can was the other shopper')
    assert [(l['sku'], l['name'], l['quantity'], l['unit_price_cents'], l['line_total_cents'])
            for l in final['lines']] == [('COLA-330', 'Cola 330 ml can', 1, 149, 149),
                                         ('GUM-10', 'Chewing gum', 3, 129, 387)]
    # 536 * 8.25 % = 44.22 -> 44 cents
    assert (final['subtotal_cents'], final['tax_cents'], final['total_cents']) == (536, 44, 580)
    assert final['review']['action'] == 'correct' and final['review']['proposed_total_cents'] == 538


@pytest.mark.parametrize('quantities, message', [
    ({'NOPE-1': 1}, 'not in the store'),
    ({'COLA-330': -1}, 'quantity'),
    ({'COLA-330': 'x'}, 'whole number'),
    ({'COLA-330': 1000}, 'quantity'),
])
def test_invalid_corrections_are_refused(tmp_path, bucket, quantities, message):
    testing.seed_visits(bucket, tmp_path, [1])
    with pytest.raises(review.InvalidDecision, match=message):
        settle(bucket, 'R00001', 'alice', quantities)
    assert len(review_queue.read(bucket).entries) == 1
    assert bucket.get(layout.final_key('demo', 'R00001')) is None


def test_without_a_catalogue_only_the_receipts_products_can_be_added(tmp_path, bucket):
    testing.seed_visits(bucket, tmp_path, [1])
    bucket.delete(layout.catalogue_key('demo'))
    with pytest.raises(review.InvalidDecision, match='GUM-10'):
        settle(bucket, 'R00001', 'alice', {'GUM-10': 1})
    final = settle(bucket, 'R00001', 'alice', {'COLA-330': 3, 'CHOC-100': 1})
    assert final['subtotal_cents'] == 3 * 149 + 199


def test_a_choice_per_event_changes_the_receipt_by_its_difference():
    take = {'event_id': 'T', 'delta_grams': [-216.0], 'candidate_visits': ['V1', 'V2'],
            'proposed_sku': 'CHOC-100', 'proposed_quantity': 2}
    put_back = {'event_id': 'P', 'delta_grams': [350.0], 'candidate_visits': ['V1'],
                'proposed_sku': 'COLA-330', 'proposed_quantity': 1}
    events = [take, put_back]
    proposed = {e['event_id']: review.proposed_choice(e) for e in events}
    assert proposed['T'] == EventChoice('V1', 'CHOC-100', 2)
    cart = {'CHOC-100': 2, 'COLA-330': 1}        # after both, as fusion proposed them
    # The take was the other visit's; the put-back was nothing (noise): the can stays.
    now = {'T': EventChoice('V2', 'CHOC-100', 2), 'P': EventChoice('', '', 0)}
    assert review.rechoose(cart, events, proposed, now, 'V1') == {'CHOC-100': 0, 'COLA-330': 2}
    # The take was one bar of gum instead; going back to the proposal restores the cart.
    gum = {'T': EventChoice('V1', 'GUM-10', 1)}
    changed = review.rechoose(cart, events, proposed, gum, 'V1')
    assert changed == {'CHOC-100': 0, 'COLA-330': 1, 'GUM-10': 1}
    assert review.rechoose(changed, events, {**proposed, **gum}, proposed, 'V1') == {
        'CHOC-100': 2, 'COLA-330': 1, 'GUM-10': 0}
    assert EventChoice.parse('this:GUM-10:1', 'V1') == gum['T']
    assert EventChoice.parse(gum['T'].encode(), 'V1') == gum['T']
    assert EventChoice.parse('nobody', 'V1') == EventChoice('', '', 0)


def test_decisions_leave_labelled_data_and_figures(tmp_path, bucket):
    testing.seed_visits(bucket, tmp_path, [1, 2, 3])
    settle(bucket, 'R00001', 'alice', claimed_ns=time.time_ns() - 12 * review_queue.NS)
    settle(bucket, 'R00002', 'bob', {'COLA-330': 2},
                  {'E2-1': EventChoice('V99999', 'COLA-330', 2)})
    with pytest.raises(review.InvalidDecision, match='not near'):
        settle(bucket, 'R00003', 'bob', None, {'E3-1': EventChoice('V12345', '', 0)})
    rows = review.labelled_rows(bucket)
    visits = {row['receipt_id']: row for row in rows if row['kind'] == 'visit'}
    events = {row['receipt_id']: row for row in rows if row['kind'] == 'event'}
    assert set(visits) == set(events) == {'R00001', 'R00002'}
    assert visits['R00001']['agrees'] and not visits['R00002']['agrees']
    assert visits['R00002']['final_lines'] == [{'sku': 'COLA-330', 'name': 'Cola 330 ml can', 'quantity': 2,
                                                'unit_price_cents': 149, 'line_total_cents': 298}]
    event = events['R00002']
    assert event['proposed'] == {'visit': 'V00002', 'sku': 'COLA-330', 'quantity': 2}
    assert event['decided'] == {'visit': 'V99999', 'sku': 'COLA-330', 'quantity': 2}
    assert not event['agrees'] and events['R00001']['agrees']
    assert event['delta_grams'] == [-700.0] and event['candidate_visits'] == ['V00002', 'V99999']
    assert bucket.head(layout.labels_key('demo', 'R00001'))['size'] > 0
    figures = review.figures(rows + [dict(visits['R00001'], receipt_id='R9', seconds_to_settle=20.0,
                                          reasons=['ambiguous_product'], agrees=False)])
    assert figures.overall.visits == 3 and figures.overall.agreement == pytest.approx(1 / 3)
    assert figures.overall.median_s == pytest.approx(16, abs=1)   # 12 s and 20 s; bob's untimed
    assert figures.by_reason['ambiguous_product'].median_s == 20.0
    assert figures.by_reason['ambiguous_attribution'].visits == 2
    assert figures.events == 2 and figures.event_agreement == 0.5


def test_two_reviewers_race_on_s3_exactly_one_settles(tmp_path):
    with testing.moto_s3('jwo-review') as endpoint:
        bucket = S3Bucket('jwo-review', endpoint_url=endpoint)
        testing.seed_visits(bucket, tmp_path, [1])
        barrier = threading.Barrier(6)
        outcomes = []

        def reviewer(name):
            barrier.wait()
            try:
                settle(bucket, 'R00001', name)
                outcomes.append(('won', name))
            except review.AlreadySettled:
                outcomes.append(('lost', name))
        threads = [threading.Thread(target=reviewer, args=(f'r{n}',)) for n in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        winners = [name for outcome, name in outcomes if outcome == 'won']
        assert len(winners) == 1 and len(outcomes) == 6
        final = json.loads(bucket.get(layout.final_key('demo', 'R00001')))
        assert final['review']['reviewer'] == winners[0]
        assert review_queue.read(bucket).entries == {}


def test_redelivered_review_does_not_requeue_a_settled_visit_and_repairs_the_index(tmp_path, bucket):
    testing.seed_visits(bucket, tmp_path, [1, 2])
    settle(bucket, 'R00001', 'alice')
    review_queue.dequeue(bucket, review_queue.VisitKey('demo', 'R00002'))   # index update lost
    ingest = Ingest(bucket, tmp_path / 'keys/cloud/ingest.key_secret', tmp_path / 'keys/enrolled',
                    tmp_path / 'spool')
    for n in (1, 2):
        payload = convert.review_items(testing.fake_review(n), 'demo', 1)[-1][3]
        assert ingest.process('demo', pb.Envelope.FromString(payload)).status == pb.OK
    assert [e.receipt_id for e in review_queue.read(bucket).ordered()] == ['R00002']
    assert bucket.get(layout.pending_key('demo', 'R00001')) is None


def test_the_newest_catalogue_the_store_sent_wins(tmp_path, bucket):
    store = testing.fake_store()
    keys = testing.make_keys(tmp_path / 'keys')
    ingest = Ingest(bucket, keys.server_secret, keys.enrolled, tmp_path / 'spool')
    older = pb.Envelope.FromString(convert.catalogue_items(store, 100)[0][3])
    store.products['GUM-10'].price_cents = 139
    newer = pb.Envelope.FromString(convert.catalogue_items(store, 200)[0][3])
    for envelope in (newer, older, newer):
        assert ingest.process('demo', envelope).status == pb.OK
    known = catalogue.load(bucket, 'demo')
    assert known.products['GUM-10'].price_cents == 139 and len(known.bins) == 4
    assert ingest.counters()['objects_written'] == 1 and ingest.counters()['duplicates'] == 2


def test_reviewer_accounts(tmp_path):
    path = tmp_path / 'reviewers.json'
    reviewers = review.Reviewers(path)
    reviewers.add('alice', 'correct horse')
    epoch = reviewers.verify('alice', 'correct horse')
    assert epoch and epoch == reviewers.epoch('alice')
    assert reviewers.verify('alice', 'wrong horse') is None
    assert reviewers.verify('mallory', 'correct horse') is None
    assert '$argon2id$' in path.read_text() and 'correct horse' not in path.read_text()
    assert path.stat().st_mode & 0o077 == 0
    reviewers.add('alice', 'battery staple')           # a new password ends her sessions
    assert reviewers.epoch('alice') not in (None, epoch)
    assert review.Reviewers(path).remove('alice') and reviewers.epoch('alice') is None
    with pytest.raises(review.ReviewError):
        reviewers.add('bob', 'short')


def test_a_reviewer_of_an_earlier_jwo_signs_in_and_is_upgraded(tmp_path):
    import hashlib
    path = tmp_path / 'reviewers.json'
    salt = b's' * 16
    path.write_text(json.dumps({'carol': {
        'salt': salt.hex(), 'iterations': 1000,
        'hash': hashlib.pbkdf2_hmac('sha256', b'old password', salt, 1000).hex()}}))
    reviewers = review.Reviewers(path)
    assert reviewers.verify('carol', 'wrong password') is None
    epoch = reviewers.verify('carol', 'old password')
    assert epoch and reviewers.epoch('carol') == epoch
    assert '$argon2id$' in path.read_text() and reviewers.verify('carol', 'old password') == epoch


def test_cli_review(tmp_path, bucket, capsys):
    testing.seed_visits(bucket, tmp_path, [1, 2])
    where = ['--bucket', str(tmp_path / 'bucket')]
    assert cli.main(['review', 'list', *where]) == 0
    assert 'R00001' in capsys.readouterr().out
    # The event was one can, not two; and a bar of gum from the catalogue.
    assert cli.main(['review', 'decide', *where, 'demo', 'R00001', '--reviewer', 'script',
                     '--correct', '--event', 'E1-1=this:COLA-330:1', '--set', 'GUM-10=1']) == 0
    final = json.loads(capsys.readouterr().out)
    assert [(l['sku'], l['quantity']) for l in final['lines']] == [
        ('COLA-330', 1), ('CHOC-100', 1), ('GUM-10', 1)]
    assert (final['subtotal_cents'], final['tax_cents']) == (149 + 199 + 129, 39)   # 39.35 -> 39
    assert final['review']['event_decisions'] == {
        'E1-1': {'visit': 'V00001', 'sku': 'COLA-330', 'quantity': 1}}
    assert cli.main(['review', 'decide', *where, 'demo', 'R00001', '--reviewer', 'x',
                     '--confirm']) == 3
    assert cli.main(['review', 'decide', *where, 'demo', 'R00009', '--reviewer', 'x',
                     '--confirm']) == 4
    assert cli.main(['review', 'decide', *where, 'demo', 'R00002', '--reviewer', 'x',
                     '--correct', '--set', 'NOPE=1']) == 2
    capsys.readouterr()
    assert cli.main(['review', 'list', '--json', *where]) == 0
    assert [v['receipt_id'] for v in json.loads(capsys.readouterr().out)] == ['R00002']
    assert cli.main(['review', 'export', *where, '--out', str(tmp_path / 'labels.jsonl')]) == 0
    rows = [json.loads(line) for line in (tmp_path / 'labels.jsonl').read_text().splitlines()]
    assert [row['kind'] for row in rows] == ['visit', 'event']
    capsys.readouterr()
    assert cli.main(['review', 'figures', *where]) == 0
    assert json.loads(capsys.readouterr().out)['overall']['visits'] == 1
    bucket.delete(layout.QUEUE_INDEX)
    assert cli.main(['review', 'reindex', *where]) == 0
    assert '1 visits waiting' in capsys.readouterr().out


def test_a_correction_keeps_the_savings_whose_items_it_left_alone():
    """The cloud has no promotion engine: after a correction, a saving of the edge stays
    only while every SKU it used keeps its proposed count; a line by weight keeps the
    grams the shelf measured, scaled to a corrected count."""
    from jwo_cloud import wire
    from jwo_cloud.wire import pb
    envelope = pb.Envelope.FromString(convert.receipt_items(testing.fake_priced_receipt(), 'demo', 1, 'USD', 825)[0][3])
    receipt = wire.to_dict(envelope.receipt)
    visit = review.Visit('demo', receipt['receipt_id'], None, receipt, None, {},
                         catalogue.Catalogue('demo', {}))
    same = visit.totals(visit.lines(visit.proposed_quantities()))
    assert (same.savings_cents, same.subtotal_cents) == (48, receipt['subtotal_cents'])
    fewer_apples = visit.lines({'COLA-330': 2, 'APPLE-1': 2})
    assert fewer_apples[1]['grams'] == 361 and fewer_apples[1]['line_total_cents'] == 118   # 541 g x 2/3
    totals = visit.totals(fewer_apples)
    assert (totals.savings_cents, totals.subtotal_cents) == (48, 298 + 118 - 48)
    one_cola = visit.totals(visit.lines({'COLA-330': 1, 'APPLE-1': 3}))
    assert (one_cola.savings, one_cola.subtotal_cents) == ([], 149 + 177)
    assert one_cola.tax_cents == (326 * 825 + 5000) // 10000
