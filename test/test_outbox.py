"""The durable outbox (jwo_nodes/core/outbox.py): order within a visit, idempotency,
retries, resumable progress, and durability across kill -9."""
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap

from jwo_nodes.core.outbox import NewItem, Outbox


def item(n, visit='v1', kind='receipt'):
    return NewItem(f'{kind}:{n}', visit, kind, f'payload {n}'.encode())


def test_wal_and_full_sync(tmp_path):
    Outbox(tmp_path / 'o.db').close()
    db = sqlite3.connect(tmp_path / 'o.db')
    assert db.execute('PRAGMA journal_mode').fetchone()[0] == 'wal'
    # synchronous is per connection: check the outbox's own connection.
    box = Outbox(tmp_path / 'o.db')
    assert box._db.execute('PRAGMA synchronous').fetchone()[0] == 2   # FULL


def test_order_within_visit_and_parallel_visits(tmp_path):
    box = Outbox(tmp_path / 'o.db')
    assert box.add([item(1, 'a'), item(2, 'a'), item(3, 'b'), item(4, 'a'), item(5, 'c')]) == 5
    due = box.due(now_ns=1, limit=10)
    assert [i.item_id for i in due] == ['receipt:1', 'receipt:3', 'receipt:5']
    assert [i.item_id for i in box.due(1, busy_visits={'a'}, limit=10)] == ['receipt:3', 'receipt:5']
    box.mark_done(due[0].seq)
    assert [i.item_id for i in box.due(1, limit=10)] == ['receipt:2', 'receipt:3', 'receipt:5']
    assert box.due(1, limit=1)[0].item_id == 'receipt:2'


def test_duplicates_are_ignored_even_after_done(tmp_path):
    box = Outbox(tmp_path / 'o.db')
    assert box.add([item(1), item(2)]) == 2
    assert box.add([item(1), item(3)]) == 1
    box.mark_done(box.due(1)[0].seq)
    assert box.add([item(1)]) == 0
    assert box.counts() == {'pending': 2, 'done': 1, 'rejected': 0}


def test_defer_holds_the_visit_and_retry_now_releases(tmp_path):
    box = Outbox(tmp_path / 'o.db')
    box.add([item(1, 'a'), item(2, 'a'), item(3, 'b')])
    head = box.due(1)[0]
    box.defer(head.seq, next_attempt_ns=10_000, error='timeout')
    # The visit's head waits, and so does everything after it in that visit.
    assert [i.item_id for i in box.due(5_000)] == ['receipt:3']
    again = box.due(10_000)[0]
    assert again.item_id == 'receipt:1' and again.attempts == 1 and again.last_error == 'timeout'
    box.defer(head.seq, next_attempt_ns=10**18, error='x')
    assert box.retry_now() == 1
    assert box.due(1)[0].item_id == 'receipt:1'


def test_rejected_does_not_block_its_visit(tmp_path):
    box = Outbox(tmp_path / 'o.db')
    box.add([item(1), item(2)])
    box.mark_rejected(box.due(1)[0].seq, 'bad receipt')
    assert box.due(1)[0].item_id == 'receipt:2'
    assert box.get('receipt:1').state == 'rejected'
    assert box.get('receipt:1').last_error == 'bad receipt'
    assert box.rejected() == [('receipt:1', 'bad receipt')]
    assert box.requeue_rejected() == 1
    assert box.get('receipt:1').state == 'pending' and box.rejected() == []


def test_progress_survives_reopen_and_purge(tmp_path):
    box = Outbox(tmp_path / 'o.db', clock=lambda: 1000)
    box.add([item(1, kind='clip'), item(2)])
    box.set_progress(box.due(1)[0].seq, 65536)
    box.close()
    box = Outbox(tmp_path / 'o.db', clock=lambda: 5000)
    clip = box.get('clip:1')
    assert clip.progress == 65536 and clip.state == 'pending'
    box.mark_done(clip.seq)
    assert box.purge(retention_ns=10_000) == 0
    assert box.purge(retention_ns=0) == 0   # finished at 5000, cutoff 5000
    box._clock = lambda: 9000
    assert box.purge(retention_ns=1000) == 1
    assert box.get('clip:1') is None and box.get('receipt:2') is not None


WRITER = textwrap.dedent('''
    import sys
    from jwo_nodes.core.outbox import NewItem, Outbox
    box = Outbox(sys.argv[1])
    n = 0
    while True:
        box.add([NewItem(f"receipt:{n}", f"v{n % 7}", "receipt", b"x" * 200)])
        print(n, flush=True)   # reported only after add() returned (committed)
        n += 1
''')


def test_every_acknowledged_add_survives_kill_9(tmp_path):
    path = tmp_path / 'o.db'
    writer = subprocess.Popen([sys.executable, '-c', WRITER, str(path)],
                              stdout=subprocess.PIPE, text=True)
    reported = []
    for line in writer.stdout:
        reported.append(int(line))
        if len(reported) >= 150:
            break
    os.kill(writer.pid, signal.SIGKILL)
    writer.wait()
    box = Outbox(path)
    for n in reported:
        assert box.get(f'receipt:{n}') is not None, n
    assert box.counts()['pending'] >= len(reported)
    # The file is healthy and usable after the kill.
    assert sqlite3.connect(path).execute('PRAGMA integrity_check').fetchone()[0] == 'ok'
    box.add([item('after')])
