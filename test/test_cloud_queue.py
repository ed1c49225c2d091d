"""The review queue's index (review/queue.json): conditional replaces on both bucket
kinds, nothing lost when writers race, one reviewer per visit (also on a real S3 API),
claims that expire, filters and pages, oldest exit first, and the index made again from
the queue entries."""
import sys
import threading
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / 'cloud'))

from jwo_cloud import layout, review_queue, testing  # noqa: E402
from jwo_cloud.bucket import DirBucket, S3Bucket  # noqa: E402
from jwo_cloud.review_queue import (NS, ClaimedByOther, NotPending, QueueEntry,  # noqa: E402
                                    QueueFilter, VisitKey)

T0 = 1_700_000_000 * NS
LATER = T0 + 1000 * NS     # after every exit of these tests


def entry(n: int, store_id='demo', reasons=('ambiguous_attribution',), exit_s=None) -> QueueEntry:
    return QueueEntry(store_id, f'R{n:05d}', f'V{n:05d}', T0 + (n if exit_s is None else exit_s) * NS,
                      T0 + 1000 * NS, tuple(reasons), 1, 100 * n, 'USD')


@pytest.fixture(params=['dir', 's3'])
def bucket(request, tmp_path):
    if request.param == 'dir':
        yield DirBucket(tmp_path / 'bucket')
        return
    with testing.moto_s3('jwo-queue') as endpoint:
        yield S3Bucket('jwo-queue', endpoint_url=endpoint)


def test_conditional_replace_writes_only_over_the_version_read(bucket):
    assert bucket.get_object('k/x.json') is None
    assert bucket.put('k/x.json', b'1', if_none_match=True)
    first = bucket.get_object('k/x.json')
    assert first.data == b'1'
    assert bucket.put('k/x.json', b'2', if_match=first.etag)
    assert not bucket.put('k/x.json', b'3', if_match=first.etag)      # changed since
    assert bucket.get('k/x.json') == b'2'
    assert not bucket.put('k/gone.json', b'4', if_match=first.etag)   # no such object
    assert bucket.get('k/gone.json') is None


def test_two_conditional_writes_of_one_version_on_the_s3_stand_in_never_both_win(monkeypatch):
    """S3 applies a conditional write atomically; moto checks the condition and writes
    with no lock between. With the write slowed down, both racers passed the check there
    and one update was lost (test_racing_writers_lose_nothing failed once in CI)."""
    from moto.s3.models import S3Backend
    put_object = S3Backend.put_object

    def slow_put_object(self, *args, **kwargs):
        time.sleep(0.2)
        return put_object(self, *args, **kwargs)
    monkeypatch.setattr(S3Backend, 'put_object', slow_put_object)
    with testing.moto_s3('jwo-race') as endpoint:
        bucket = S3Bucket('jwo-race', endpoint_url=endpoint)
        assert bucket.put('k/x.json', b'0', if_none_match=True)
        etag = bucket.get_object('k/x.json').etag
        won = []
        racers = [threading.Thread(target=lambda data=data: won.append(bucket.put('k/x.json', data, if_match=etag)))
                  for data in (b'1', b'2')]
        for racer in racers:
            racer.start()
        for racer in racers:
            racer.join()
        assert sorted(won) == [False, True]


def test_racing_writers_lose_nothing(bucket):
    """Four writers adding visits and two claiming them at once: every change is kept."""
    barrier = threading.Barrier(6)

    def add(first):
        barrier.wait()
        for n in range(first, first + 6):
            review_queue.enqueue(bucket, entry(n))

    def claim(reviewer, numbers):
        barrier.wait()
        for n in numbers:
            review_queue.enqueue(bucket, entry(n))
            review_queue.claim(bucket, VisitKey('demo', f'R{n:05d}'), reviewer, T0)
    threads = [threading.Thread(target=add, args=(first,)) for first in (0, 6, 12, 18)]
    threads += [threading.Thread(target=claim, args=(name, numbers))
                for name, numbers in (('alice', (30, 31, 32)), ('bob', (33, 34, 35)))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    index = review_queue.read(bucket)
    assert [e.receipt_id for e in index.ordered()] == [f'R{n:05d}' for n in (*range(24), *range(30, 36))]
    assert {e.receipt_id: e.claim.reviewer for e in index.ordered() if e.claim} == {
        'R00030': 'alice', 'R00031': 'alice', 'R00032': 'alice',
        'R00033': 'bob', 'R00034': 'bob', 'R00035': 'bob'}


def test_one_reviewer_per_visit_even_racing(bucket):
    review_queue.enqueue(bucket, entry(1))
    barrier = threading.Barrier(6)
    won, lost = [], []

    def reviewer(name):
        barrier.wait()
        try:
            won.append(review_queue.claim(bucket, VisitKey('demo', 'R00001'), name, T0).reviewer)
        except ClaimedByOther as problem:
            lost.append(problem.claim.reviewer)
    threads = [threading.Thread(target=reviewer, args=(f'r{n}',)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(won) == 1 and lost == won * 5
    assert review_queue.read(bucket).get(VisitKey('demo', 'R00001')).claim.reviewer == won[0]


def test_claim_next_gives_racing_reviewers_different_visits(tmp_path):
    bucket = DirBucket(tmp_path / 'bucket')
    for n in (3, 1, 2):
        review_queue.enqueue(bucket, entry(n))
    barrier = threading.Barrier(3)
    taken = {}

    def reviewer(name):
        barrier.wait()
        taken[name] = review_queue.claim_next(bucket, name, QueueFilter(), LATER).receipt_id
    threads = [threading.Thread(target=reviewer, args=(name,)) for name in ('a', 'b', 'c')]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(taken.values()) == ['R00001', 'R00002', 'R00003']
    assert review_queue.claim_next(bucket, 'd', QueueFilter(), LATER) is None     # all held
    # ... and each reviewer asking again gets their own visit back, nobody else's.
    assert review_queue.claim_next(bucket, 'a', QueueFilter(), LATER).receipt_id == taken['a']


def test_claims_expire_and_renewing_keeps_their_start(tmp_path):
    bucket = DirBucket(tmp_path / 'bucket')
    review_queue.enqueue(bucket, entry(1))
    key = VisitKey('demo', 'R00001')
    first = review_queue.claim(bucket, key, 'alice', T0, claim_s=60)
    assert first.expires_ns == T0 + 60 * NS
    renewed = review_queue.claim(bucket, key, 'alice', T0 + 30 * NS, claim_s=60)
    assert (renewed.claimed_ns, renewed.expires_ns) == (T0, T0 + 90 * NS)
    with pytest.raises(ClaimedByOther, match='alice'):
        review_queue.claim(bucket, key, 'bob', T0 + 89 * NS)
    assert review_queue.claim(bucket, key, 'bob', T0 + 90 * NS).claimed_ns == T0 + 90 * NS
    review_queue.release(bucket, key, 'alice')                  # not hers any more: no effect
    assert review_queue.read(bucket).get(key).claim.reviewer == 'bob'
    review_queue.release(bucket, key, 'bob')
    assert review_queue.read(bucket).get(key).claim is None
    with pytest.raises(NotPending):
        review_queue.claim(bucket, VisitKey('demo', 'R00009'), 'bob', T0)


def test_filters_pages_and_oldest_exit_first(tmp_path):
    bucket = DirBucket(tmp_path / 'bucket')
    for n in range(1, 26):
        reasons = ('ambiguous_product',) if n % 5 == 0 else ('ambiguous_attribution',)
        review_queue.enqueue(bucket, entry(n, 'north' if n % 2 else 'south', reasons, exit_s=100 - n))
    counting = testing.CountingBucket(bucket)
    index = review_queue.read(counting)
    assert counting.requests == [('get', layout.QUEUE_INDEX)]    # a page is one request
    now = T0 + 100 * NS
    first = index.page(QueueFilter(), 1, now, size=10)
    assert (first.matching, first.waiting, first.pages) == (25, 25, 3)
    assert [e.receipt_id for e in first.entries] == [f'R{n:05d}' for n in range(25, 15, -1)]
    assert index.page(QueueFilter(), 9, now, size=10).number == 3
    assert first.stores == ('north', 'south') and first.reasons == ('ambiguous_attribution',
                                                                    'ambiguous_product')
    north_product = index.page(QueueFilter('north', 'ambiguous_product'), 1, now)
    assert [e.receipt_id for e in north_product.entries] == ['R00025', 'R00015', 'R00005']
    # Visit n left n seconds before now.
    assert index.page(QueueFilter(min_age_s=26), 1, now).matching == 0
    assert [e.receipt_id for e in index.page(QueueFilter(min_age_s=20), 1, now).entries] == [
        f'R{n:05d}' for n in range(25, 19, -1)]


def test_rebuild_from_the_entries_keeps_claims_and_drops_settled_visits(tmp_path):
    bucket = DirBucket(tmp_path / 'bucket')
    testing.seed_visits(bucket, tmp_path, [1, 2, 3])
    indexed = review_queue.read(bucket).get(VisitKey('demo', 'R00001'))
    review_queue.claim(bucket, VisitKey('demo', 'R00002'), 'alice', T0 * 2)
    bucket.put(layout.final_key('demo', 'R00003'), b'{}')       # settled, entry left behind
    review_queue.dequeue(bucket, VisitKey('demo', 'R00001'))    # an index update lost
    assert review_queue.rebuild(bucket) == 2
    index = review_queue.read(bucket)
    assert [e.receipt_id for e in index.ordered()] == ['R00001', 'R00002']
    assert index.get(VisitKey('demo', 'R00001')) == indexed
    assert index.get(VisitKey('demo', 'R00002')).claim.reviewer == 'alice'
    assert bucket.get(layout.pending_key('demo', 'R00003')) is None


def test_the_ingest_indexes_what_it_queues(tmp_path):
    bucket = DirBucket(tmp_path / 'bucket')
    testing.seed_visits(bucket, tmp_path, [2, 1])
    first, second = review_queue.read(bucket).ordered()
    assert (first.receipt_id, second.receipt_id) == ('R00001', 'R00002')    # by exit
    assert (first.store_id, first.visit_code, first.exit_ns, first.reasons, first.events,
            first.total_cents, first.currency, first.claim) == (
        'demo', 'V00001', 1_700_000_000_000_000_000 + NS, ('ambiguous_attribution',), 1, 538,
        'USD', None)
