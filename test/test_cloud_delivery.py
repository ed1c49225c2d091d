"""Receipts reach the payer and can be disputed: the uplink's join of a receipt and its
token hash, the cloud's index by token hash, the delivery outbox and its adapters (a
real HTTP server receiving the webhook, one that fails and then recovers, the file),
disputes reviewed and delivered again, and the shopper's receipt page over HTTP."""
import hashlib
import json
import re
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / 'cloud'))

from jwo_cloud import (cli, convert, delivery, layout, payer, review, review_queue,  # noqa: E402
                       review_web, testing)
from jwo_cloud.bucket import DirBucket  # noqa: E402
from jwo_cloud.delivery import (Deliverer, DeliveryConfigError, DeliverySettings,  # noqa: E402
                                FileAdapter, WebhookAdapter)
from jwo_cloud.ingest import validate  # noqa: E402
from jwo_cloud.wire import pb  # noqa: E402

from jwo_nodes.core.outbox import NewItem, Outbox  # noqa: E402

TOKEN = 'tok-' + 'A' * 40
SECRET = b'webhook-secret-0123456789'
HTTPS = 'https://receipts.example'
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


class Webhook:
    """A real HTTP server on loopback that records the POSTs it accepts; it answers
    ``refusal`` (503, or a redirect) to the first ``fail`` of them."""

    def __init__(self, fail: int = 0, refusal: int = 503):
        self.received, self.fail, self.refused, self.refusal = [], fail, 0, refusal
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers['Content-Length']))
                if hook.refused < hook.fail:
                    hook.refused += 1
                    self.send_response(hook.refusal)
                    self.send_header('Location', '/elsewhere')
                else:
                    hook.received.append((dict(self.headers), body))
                    self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(('127.0.0.1', 0), Handler)
        self.url = f'http://127.0.0.1:{self.server.server_port}/receipts'
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def deliveries(self) -> list:
        return [json.loads(body) for _, body in self.received]

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def webhook():
    hooks = []

    def start(fail=0, refusal=503):
        hooks.append(Webhook(fail, refusal))
        return hooks[-1]
    yield start
    for hook in hooks:
        hook.close()


@pytest.fixture
def cloud(tmp_path):
    bucket = DirBucket(tmp_path / 'bucket')
    return bucket, testing.local_ingest(bucket, tmp_path)


def access_item(receipt_id: str, token: str = TOKEN, visit: str = 'visit:V1') -> pb.Envelope:
    _, _, _, payload = convert.access_item(receipt_id, visit, hashlib.sha256(token.encode()).digest(), 'demo', 1)
    return pb.Envelope.FromString(payload)


def settle_as_proposed(bucket, receipt_id: str, quantities=None) -> dict:
    visit = review.load_visit(bucket, 'demo', receipt_id)
    return review.decide(bucket, visit, 'alice', quantities)


# -- the store's side ------------------------------------------------------------------
def test_the_uplink_outbox_joins_a_receipt_and_its_token_hash_in_either_order(tmp_path):
    def item_of(link):
        return NewItem(*convert.access_item(link.receipt_id, link.visit_key, link.token_sha256, 'demo', 1))

    outbox = Outbox(tmp_path / 'outbox.sqlite3')
    # The gate's hash first (the usual order), then the receipt.
    assert not outbox.link_access('G1', 'V1', item_of, token_sha256=b'\x01' * 32)
    assert outbox.link_access('G1', 'V1', item_of, receipt_id='demo-V1', visit_key='visit:V1')
    # A restart replays both: nothing new.
    assert not outbox.link_access('G1', 'V1', item_of, token_sha256=b'\x01' * 32)
    assert not outbox.link_access('G1', 'V1', item_of, receipt_id='demo-V1', visit_key='visit:V1')
    # The receipt first (durable topics replayed after a restart), the outbox reopened between.
    assert not outbox.link_access('G2', 'V2', item_of, receipt_id='demo-V2', visit_key='visit:V2')
    outbox.close()
    outbox = Outbox(tmp_path / 'outbox.sqlite3')
    assert outbox.link_access('G2', 'V2', item_of, token_sha256=b'\x02' * 32)
    items = {item.item_id: item for item in outbox.due(0)}
    assert set(items) == {'access:demo-V1', 'access:demo-V2'}
    sent = pb.Envelope.FromString(items['access:demo-V2'].payload)
    assert sent.visit_key == 'visit:V2' and sent.receipt_access.token_sha256 == b'\x02' * 32
    assert validate(sent, 'demo') == ''
    outbox.close()


# -- the cloud's index -----------------------------------------------------------------
def test_the_cloud_finds_a_receipt_by_its_token_hash_and_never_holds_the_token(cloud, tmp_path):
    bucket, ingest = cloud
    receipt_id = testing.seed_paid_visit(ingest, 1, TOKEN)
    found = payer.find(bucket, TOKEN)
    assert found.receipt_id == receipt_id and found.current.number == 1 and not found.in_review
    assert found.token_sha256 == hashlib.sha256(TOKEN.encode()).hexdigest()
    assert payer.find(bucket, TOKEN + 'x') is None and payer.find(bucket, '') is None
    for path in (tmp_path / 'bucket').rglob('*'):
        assert TOKEN not in str(path) and (path.is_dir() or TOKEN.encode() not in path.read_bytes())
    # Another receipt cannot take the hash over.
    assert ingest.process('demo', access_item('R00002')).status == pb.REJECTED
    assert payer.find(bucket, TOKEN).receipt_id == receipt_id
    # A store's id may not pass for a dispute's.
    assert 'invalid receipt_id' in validate(access_item(layout.dispute_id(receipt_id, 1)), 'demo')


# -- delivery --------------------------------------------------------------------------
def test_the_webhook_gets_each_final_receipt_once_signed_by_its_token_hash(cloud, webhook):
    bucket, ingest = cloud
    hook = webhook()
    deliverer = Deliverer(bucket, WebhookAdapter(hook.url, SECRET))
    testing.seed_paid_visit(ingest, 1, TOKEN)                   # FINAL at the ingest
    testing.seed_paid_visit(ingest, 2, 'other-token', status=1)  # in review: nothing yet
    assert deliverer.run_once() == 1
    (headers, body), = hook.received
    assert headers[delivery.SIGNATURE_HEADER] == delivery.signature(SECRET, body)
    sent = json.loads(body)
    assert headers[delivery.DELIVERY_HEADER] == sent['delivery_id'] == 'demo/R00001/1'
    assert sent['token_sha256'] == hashlib.sha256(TOKEN.encode()).hexdigest()
    assert sent['version'] == 1 and sent['receipt']['status'] == 'FINAL'
    assert [line['quantity'] for line in sent['receipt']['lines']] == [2, 1]
    assert sent['receipt']['total_cents'] == 538 and 'review' not in sent['receipt']
    # Settled by a reviewer: its first version goes out; nothing goes twice.
    settle_as_proposed(bucket, 'R00002')
    assert deliverer.run_once() == 1 and deliverer.run_once() == 0
    assert [d['delivery_id'] for d in hook.deliveries()] == ['demo/R00001/1', 'demo/R00002/1']
    assert list(bucket.list(layout.DELIVERY_PENDING)) == []


def test_a_webhook_that_is_down_gets_every_version_in_order_once_it_recovers(cloud, webhook):
    bucket, ingest = cloud
    hook = webhook(fail=3)
    clock = Clock()
    settings = DeliverySettings(backoff_min_s=1.0, backoff_max_s=4.0)
    deliverer = Deliverer(bucket, WebhookAdapter(hook.url, SECRET), settings, clock)
    testing.seed_paid_visit(ingest, 1, TOKEN)
    assert deliverer.run_once() == 0 and hook.refused == 1
    assert deliverer.run_once() == 0 and hook.refused == 1    # backing off: not tried again yet
    # The shopper disputes and the dispute is settled while the webhook is still down:
    # version 2 waits behind version 1.
    payer.open_dispute(bucket, payer.find(bucket, TOKEN), 'COLA-330', 'only one', 5)
    settle_as_proposed(bucket, layout.dispute_id('R00001', 1), {'COLA-330': 1, 'CHOC-100': 1})
    clock.now += 1.0
    assert deliverer.run_once() == 0 and hook.refused == 2
    # The process restarts (its backoff forgotten): the bucket still holds both.
    deliverer = Deliverer(bucket, WebhookAdapter(hook.url, SECRET), settings, clock)
    assert deliverer.run_once() == 0 and hook.refused == 3
    clock.now += 4.0
    assert deliverer.run_once() == 2
    assert [(d['version'], d['receipt']['total_cents']) for d in hook.deliveries()] == [(1, 538), (2, 377)]
    clock.now += 10.0
    assert deliverer.run_once() == 0 and len(hook.received) == 2


def test_a_redirect_is_not_a_delivery(webhook):
    hook = webhook(fail=1, refusal=302)
    adapter = WebhookAdapter(hook.url, SECRET)
    with pytest.raises(delivery.DeliveryFailed, match='HTTP 302'):
        adapter.deliver({'delivery_id': 'demo/R1/1'})
    adapter.deliver({'delivery_id': 'demo/R1/1'})
    assert hook.deliveries() == [{'delivery_id': 'demo/R1/1'}]


def test_the_file_adapter_appends_a_json_line_per_version_and_bad_config_is_refused(cloud, tmp_path):
    bucket, ingest = cloud
    out = tmp_path / 'receipts.jsonl'
    deliverer = Deliverer(bucket, FileAdapter(out))
    testing.seed_paid_visit(ingest, 1, TOKEN)
    testing.seed_paid_visit(ingest, 2, 'other-token')
    assert deliverer.run_once() == 2 and deliverer.run_once() == 0
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [line['delivery_id'] for line in lines] == ['demo/R00001/1', 'demo/R00002/1']
    with pytest.raises(DeliveryConfigError, match='no folder'):
        FileAdapter(tmp_path / 'missing' / 'receipts.jsonl')
    with pytest.raises(DeliveryConfigError, match='not an http'):
        WebhookAdapter('ftp://example.org/', SECRET)
    (tmp_path / 'short').write_bytes(b'short\n')
    parser = cli.build_parser()
    for argv, problem in ((['--delivery-webhook', 'http://127.0.0.1:1/'], 'needs --delivery-secret-file'),
                          (['--delivery-webhook', 'http://127.0.0.1:1/', '--delivery-secret-file',
                            str(tmp_path / 'short')], 'at least 16 bytes'),
                          (['--delivery-secret-file', str(tmp_path / 'short')], 'is for --delivery-webhook')):
        with pytest.raises(DeliveryConfigError, match=problem):
            cli._delivery_adapter(parser.parse_args(['serve', *argv]))


# -- disputes --------------------------------------------------------------------------
def test_a_dispute_is_reviewed_with_the_visits_evidence_and_settled_again(cloud):
    bucket, ingest = cloud
    testing.seed_paid_visit(ingest, 1, TOKEN, status=1)
    # The reviewer gives the event to nobody: the colas come off.
    visit = review.load_visit(bucket, 'demo', 'R00001')
    nobody = review.EventChoice('', 'COLA-330', 2)
    review.decide(bucket, visit, 'alice', {'CHOC-100': 1}, {'E1-1': nobody})
    shopper = payer.find(bucket, TOKEN)
    assert shopper.current.number == 1 and [line['sku'] for line in shopper.shown['lines']] == ['CHOC-100']
    with pytest.raises(payer.DisputeError, match='no such line'):
        payer.open_dispute(bucket, shopper, 'COLA-330', '', 1)
    dispute = payer.open_dispute(bucket, shopper, 'CHOC-100', '  never   took it ', 7)
    assert dispute == 'R00001.dispute1'
    shopper = payer.find(bucket, TOKEN)
    assert shopper.in_review and shopper.queued and shopper.current.number == 1
    with pytest.raises(payer.DisputeError, match='being checked'):
        payer.open_dispute(bucket, shopper, 'CHOC-100', '', 8)
    queued = review_queue.read(bucket).get(review_queue.VisitKey('demo', dispute))
    assert queued.reasons == ('ambiguous_attribution', payer.DISPUTED) and queued.events == 1
    # The reviewer sees the receipt disputed, the line and the event with its clip keys,
    # taken as the review before decided it.
    seen = review.load_visit(bucket, 'demo', dispute)
    assert seen.receipt['reasons'][0]['detail'] == 'Dark chocolate 100 g (CHOC-100) x1: "never took it"'
    assert seen.proposed_quantities() == {'CHOC-100': 1}
    assert seen.proposed_choices() == {'E1-1': nobody}
    assert seen.events[0]['candidate_visits'] == ['V00001', 'V99999']
    final = review.decide(bucket, seen, 'bob', {'CHOC-100': 0})
    assert final['lines'] == [] and final['total_cents'] == 0
    shopper = payer.find(bucket, TOKEN)
    assert not shopper.in_review and shopper.current.number == 2 and shopper.shown['total_cents'] == 0
    assert {key.rsplit('/', 1)[1] for key in bucket.list(layout.DELIVERY_PENDING)} == {'000001.json', '000002.json'}
    rows = [json.loads(line) for line in bucket.get(layout.labels_key('demo', dispute)).decode().splitlines()]
    assert payer.DISPUTED in rows[0]['reasons'] and rows[1]['proposed'] == nobody.document()


def test_a_dispute_of_a_final_receipt_shows_the_events_the_store_sent_with_it(cloud):
    bucket, ingest = cloud
    testing.seed_paid_visit(ingest, 1, TOKEN)
    dispute = payer.open_dispute(bucket, payer.find(bucket, TOKEN), 'COLA-330', '', 1)
    assert review.load_visit(bucket, 'demo', dispute).events == []    # a store that sends none
    review.decide(bucket, review.load_visit(bucket, 'demo', dispute), 'alice')
    testing.seed_paid_visit(ingest, 2, TOKEN + '2')
    (_, _, _, payload), = convert.evidence_items(testing.fake_evidence(2), 'demo', 1)
    assert ingest.process('demo', pb.Envelope.FromString(payload)).status == pb.OK
    dispute = payer.open_dispute(bucket, payer.find(bucket, TOKEN + '2'), 'COLA-330', 'one can', 2)
    queued = review_queue.read(bucket).get(review_queue.VisitKey('demo', dispute))
    assert queued.reasons == (payer.DISPUTED,) and queued.events == 1
    # The change behind the line, as fusion decided it: its weight, window, candidates;
    # no clips.
    seen = review.load_visit(bucket, 'demo', dispute)
    event, = seen.events
    assert (event['event_id'], event['reason_code'], event['delta_grams'], event['clip_ids']) == (
        'E2-1', '', [-700.0], [])
    assert seen.proposed_choices() == {'E2-1': review.EventChoice('V00002', 'COLA-330', 2)}
    assert seen.proposed_quantities() == {'COLA-330': 2, 'CHOC-100': 1}


def test_a_dispute_cut_short_before_its_queue_entry_is_queued_when_its_page_is_opened(cloud):
    bucket, ingest = cloud
    testing.seed_paid_visit(ingest, 1, TOKEN)
    dispute = payer.open_dispute(bucket, payer.find(bucket, TOKEN), 'COLA-330', '', 1)
    review_queue.dequeue(bucket, review_queue.VisitKey('demo', dispute))
    bucket.delete(layout.pending_key('demo', dispute))
    shopper = payer.find(bucket, TOKEN)
    assert shopper.in_review and not shopper.queued
    payer.repair(bucket, shopper, 2)
    assert review_queue.read(bucket).get(review_queue.VisitKey('demo', dispute)) is not None
    assert payer.find(bucket, TOKEN).queued


# -- the receipt page over HTTP --------------------------------------------------------
def test_the_receipt_page_opens_by_token_only_and_a_dispute_needs_the_forms_token(cloud, tmp_path):
    bucket, ingest = cloud
    testing.seed_paid_visit(ingest, 1, TOKEN)
    app = review_web.create_app(bucket, tmp_path / 'reviewers.json', b'k' * 32)
    client = app.test_client()
    page = client.get(f'/receipt/{TOKEN}', base_url=HTTPS)
    assert page.status_code == 200 and 'Dark chocolate 100 g' in page.text
    assert '>final<' in page.text and page.text.count('name="sku"') == 2
    missing = client.get(f'/receipt/{TOKEN}x', base_url=HTTPS)
    assert missing.status_code == 404 and 'R00001' not in missing.text
    refused = client.post(f'/receipt/{TOKEN}', base_url=HTTPS, data={'sku': 'COLA-330'})
    assert refused.status_code == 400 and not payer.find(bucket, TOKEN).in_review
    form = {'csrf_token': CSRF.search(page.text).group(1), 'sku': 'COLA-330', 'text': 'one can only'}
    posted = client.post(f'/receipt/{TOKEN}', base_url=HTTPS, data=form, headers={'Referer': HTTPS + '/'})
    assert posted.status_code == 302
    page = client.get(f'/receipt/{TOKEN}', base_url=HTTPS)
    assert 'being checked' in page.text and 'name="sku"' not in page.text
    assert client.post(f'/receipt/{TOKEN}', base_url=HTTPS, data=form,
                       headers={'Referer': HTTPS + '/'}).status_code == 409
    # Request lines of the shopper's paths (they hold the token) are never logged.
    assert review_web._TOKEN_PATH.match(f'/receipt/{TOKEN}') and review_web._TOKEN_PATH.match('/receipt/x?a=1')
    assert not review_web._TOKEN_PATH.match('/receipt/demo/R00001')
