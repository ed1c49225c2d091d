"""Settling visits in doubt: the queue, confirm / correct, re-totalling in cents, one
decision per visit (conditional create, also under a race on a real S3 API), reviewers,
and the scripted CLI."""
import json
import sys
import threading
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / 'cloud'))

from jwo_cloud import cli, layout, review, testing  # noqa: E402
from jwo_cloud.bucket import DirBucket, S3Bucket  # noqa: E402
from jwo_cloud.ingest import Ingest  # noqa: E402
from jwo_cloud.wire import pb  # noqa: E402


@pytest.fixture
def bucket(tmp_path):
    return DirBucket(tmp_path / 'bucket')


def test_queue_lists_waiting_visits(tmp_path, bucket):
    testing.seed_visits(bucket, tmp_path, [3, 1, 2], clip=b'frames')
    visits = review.pending(bucket)
    assert [v['receipt_id'] for v in visits] == ['R00003', 'R00001', 'R00002']   # queue order
    assert visits[0]['reasons'] == ['ambiguous_attribution'] and visits[0]['total_cents'] == 538
    visit = review.load_visit(bucket, 'demo', 'R00001')
    assert visit['receipt']['visit_code'] == 'V00001'
    (clip,) = visit['clips'].values()
    assert clip['present'] and clip['size'] == 6 and clip['content_type'] == 'video/webm'


def test_confirm_keeps_the_store_figures(tmp_path, bucket):
    testing.seed_visits(bucket, tmp_path, [1])
    final = review.decide(bucket, 'demo', 'R00001', 'alice', 'confirm')
    assert (final['subtotal_cents'], final['tax_cents'], final['total_cents']) == (497, 41, 538)
    assert final['status'] == 'FINAL' and final['review']['reviewer'] == 'alice'
    assert json.loads(bucket.get(layout.final_key('demo', 'R00001'))) == final
    assert review.pending(bucket) == []
    with pytest.raises(review.AlreadySettled, match='alice'):
        review.decide(bucket, 'demo', 'R00001', 'bob', 'confirm')


def test_correct_retotals_in_cents(tmp_path, bucket):
    testing.seed_visits(bucket, tmp_path, [1])
    lines = [{'sku': 'COLA-330', 'name': 'Cola', 'quantity': 1, 'unit_price_cents': 149},
             {'sku': 'CHOC-100', 'name': 'Choc', 'quantity': 0, 'unit_price_cents': 199},
             {'sku': 'GUM-10', 'name': 'Gum', 'quantity': '3', 'unit_price_cents': '129'}]
    final = review.decide(bucket, 'demo', 'R00001', 'alice', 'correct', lines,
                          {'E1-1': 'other_visit'}, 'one can was the other shopper')
    assert [(l['sku'], l['quantity'], l['line_total_cents']) for l in final['lines']] == [
        ('COLA-330', 1, 149), ('GUM-10', 3, 387)]
    # 536 * 8.25 % = 44.22 -> 44 cents
    assert (final['subtotal_cents'], final['tax_cents'], final['total_cents']) == (536, 44, 580)
    assert final['review']['event_decisions'] == {'E1-1': 'other_visit'}
    assert final['review']['proposed_total_cents'] == 538


@pytest.mark.parametrize('lines, message', [
    ([{'sku': '', 'quantity': 1, 'unit_price_cents': 1}], 'invalid sku'),
    ([{'sku': 'A', 'quantity': -1, 'unit_price_cents': 1}], 'quantity'),
    ([{'sku': 'A', 'quantity': 'x', 'unit_price_cents': 1}], 'whole numbers'),
    ([{'sku': 'A', 'quantity': 1, 'unit_price_cents': ''}], 'whole numbers'),
])
def test_invalid_corrections_are_refused(tmp_path, bucket, lines, message):
    testing.seed_visits(bucket, tmp_path, [1])
    with pytest.raises(review.InvalidDecision, match=message):
        review.decide(bucket, 'demo', 'R00001', 'alice', 'correct', lines)
    assert len(review.pending(bucket)) == 1


def test_two_reviewers_race_on_s3_exactly_one_settles(tmp_path):
    with testing.moto_s3('jwo-review') as endpoint:
        bucket = S3Bucket('jwo-review', endpoint_url=endpoint)
        testing.seed_visits(bucket, tmp_path, [1])
        barrier = threading.Barrier(6)
        outcomes = []

        def reviewer(name):
            barrier.wait()
            try:
                review.decide(bucket, 'demo', 'R00001', name, 'confirm')
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
        assert review.pending(bucket) == []


def test_redelivered_review_does_not_requeue_a_settled_visit(tmp_path, bucket):
    testing.seed_visits(bucket, tmp_path, [1])
    review.decide(bucket, 'demo', 'R00001', 'alice', 'confirm')
    from jwo_cloud import convert
    payload = convert.review_items(testing.fake_review(1), 'demo', 1)[-1][3]
    ingest = Ingest(bucket, tmp_path / 'keys/cloud/ingest.key_secret', tmp_path / 'keys/enrolled',
                    tmp_path / 'spool')
    assert ingest.process('demo', pb.Envelope.FromString(payload)).status == pb.OK
    assert review.pending(bucket) == []
    # A queue entry left behind (crash between the final write and the delete) is cleaned.
    bucket.put(layout.pending_key('demo', 'R00001'), b'{}')
    assert review.pending(bucket) == []
    assert bucket.get(layout.pending_key('demo', 'R00001')) is None


def test_reviewer_passwords(tmp_path):
    path = tmp_path / 'reviewers.json'
    review.add_reviewer(path, 'alice', 'correct horse')
    assert review.check_reviewer(path, 'alice', 'correct horse')
    assert not review.check_reviewer(path, 'alice', 'wrong horse')
    assert not review.check_reviewer(path, 'mallory', 'correct horse')
    assert 'correct horse' not in path.read_text()
    assert path.stat().st_mode & 0o077 == 0
    with pytest.raises(review.ReviewError):
        review.add_reviewer(path, 'bob', 'short')


def test_cli_review_list_and_decide(tmp_path, bucket, capsys):
    testing.seed_visits(bucket, tmp_path, [1, 2])
    where = ['--bucket', str(tmp_path / 'bucket')]
    assert cli.main(['review', 'list', *where]) == 0
    assert 'R00001' in capsys.readouterr().out
    assert cli.main(['review', 'decide', *where, 'demo', 'R00001', '--reviewer', 'script',
                     '--correct', '--set', 'CHOC-100=0', '--add', 'GUM-10:1:129:Gum',
                     '--event', 'E1-1=this_visit']) == 0
    final = json.loads(capsys.readouterr().out)
    assert (final['subtotal_cents'], final['tax_cents']) == (298 + 129, 35)   # 35.2 -> 35
    assert cli.main(['review', 'decide', *where, 'demo', 'R00001', '--reviewer', 'x',
                     '--confirm']) == 3
    assert cli.main(['review', 'decide', *where, 'demo', 'R00009', '--reviewer', 'x',
                     '--confirm']) == 4
    assert cli.main(['review', 'decide', *where, 'demo', 'R00002', '--reviewer', 'x',
                     '--correct', '--set', 'NOPE=1']) == 2
    capsys.readouterr()
    assert cli.main(['review', 'list', '--json', *where]) == 0
    assert [v['receipt_id'] for v in json.loads(capsys.readouterr().out)] == ['R00002']
