"""The uplink schema: the committed protobuf module matches the .proto, and ROS
messages convert to envelopes (pure converter, real jwo messages too)."""
import sys
from types import SimpleNamespace
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / 'cloud'))

from jwo_cloud import convert, ingest, protogen, testing, wire  # noqa: E402
from jwo_cloud.wire import pb  # noqa: E402


def test_generated_module_is_up_to_date(tmp_path):
    pytest.importorskip('grpc_tools', reason='grpcio-tools generates the module')
    generated = protogen.generate(tmp_path)
    committed = protogen.PACKAGE / protogen.MODULE
    assert generated.read_bytes() == committed.read_bytes(), (
        'jwo_uplink_v1_pb2.py is stale: run PYTHONPATH=cloud .venv/bin/python -m jwo_cloud.protogen')


def test_receipt_converts_and_validates():
    (item_id, visit, kind, payload), = convert.receipt_items(
        testing.fake_receipt(7), 'demo', 123, 'USD', 825)
    assert (item_id, visit, kind) == ('receipt:R00007', 'visit:V00007', 'receipt')
    envelope = pb.Envelope.FromString(payload)
    assert envelope.schema_version == wire.SCHEMA_VERSION and envelope.created_ns == 123
    receipt = envelope.receipt
    assert receipt.status == pb.NEEDS_REVIEW and receipt.tax_rate_bp == 825
    assert [(line.sku, line.quantity, line.line_total_cents) for line in receipt.lines] == [
        ('COLA-330', 2, 298), ('CHOC-100', 1, 199)]
    assert receipt.total_cents == 497 + 41
    assert receipt.stamp_ns == 1_700_000_000_000_000_000 + 7_000_000_000
    assert ingest.validate(envelope, 'demo') == ''
    assert 'enrolled as' in ingest.validate(envelope, 'other')
    document = wire.to_dict(receipt)
    assert document['status'] == 'NEEDS_REVIEW' and isinstance(document['total_cents'], int)


def test_review_puts_each_clip_first_once():
    msg = testing.fake_review(3, ['/clips/a.webm', 'relative/b.mp4'])
    msg.events.append(testing.fake_review(3, ['/clips/a.webm']).events[0])
    items = convert.review_items(msg, 'demo', 1)
    assert [kind for _, _, kind, _ in items] == ['clip', 'clip', 'review']
    assert len({visit for _, visit, _, _ in items}) == 1
    clip = pb.Envelope.FromString(items[0][3]).clip_chunk
    assert clip.clip_ref == '/clips/a.webm' and clip.content_type == 'video/webm'
    assert clip.clip_id == wire.clip_id('/clips/a.webm') and clip.clip_id.endswith('-a.webm')
    review = pb.Envelope.FromString(items[-1][3])
    assert ingest.validate(review, 'demo') == ''
    assert list(review.review_request.events[0].clip_ids) == [
        wire.clip_id('/clips/a.webm'), wire.clip_id('relative/b.mp4')]
    products = review.review_request.events[0].candidate_products
    assert [(p.sku, p.quantity, p.unit_grams) for p in products] == [('COLA-330', 2, 350.0), ('MILK-1L', 1, 1050.0)]
    assert products[0].probability == pytest.approx(0.9)
    assert wire.clip_path('relative/b.mp4', '/root') == '/root/relative/b.mp4'
    assert wire.clip_path('file:///x/y.mp4', '/root') == '/x/y.mp4'


def test_invalid_receipts_are_caught():
    bad = testing.fake_receipt(1)
    bad.total_cents += 1
    envelope = pb.Envelope.FromString(convert.receipt_items(bad, 'demo', 1)[0][3])
    assert 'total_cents' in ingest.validate(envelope, 'demo')
    bad = testing.fake_receipt(1)
    bad.receipt_id = '../../etc'
    envelope = pb.Envelope.FromString(convert.receipt_items(bad, 'demo', 1)[0][3])
    assert 'receipt_id' in ingest.validate(envelope, 'demo')


def test_savings_and_lines_by_weight_travel_and_add_up():
    envelope = pb.Envelope.FromString(convert.receipt_items(testing.fake_priced_receipt(), 'demo', 1, 'USD', 825)[0][3])
    assert ingest.validate(envelope, 'demo') == ''
    document = wire.to_dict(envelope.receipt)
    assert document['savings'] == [{'promotion_id': 'cola-2-for-250', 'name': 'Any 2 colas for 2.50',
                                    'skus': ['COLA-330'], 'cents': 48}]
    assert document['lines'][1]['sold_by_weight'] and document['lines'][1]['grams'] == 541
    for spoil, problem in ((lambda r: setattr(r.lines[1], 'grams', 600), 'grams'),
                           (lambda r: setattr(r, 'savings_cents', 0), 'savings_cents'),
                           (lambda r: setattr(r.savings[0], 'cents', 0), 'takes nothing off')):
        receipt = testing.fake_priced_receipt()
        spoil(receipt)
        envelope = pb.Envelope.FromString(convert.receipt_items(receipt, 'demo', 1, 'USD', 825)[0][3])
        assert problem in ingest.validate(envelope, 'demo')


def test_real_ros_messages_convert():
    msgs = pytest.importorskip('jwo.msg')
    from builtin_interfaces.msg import Time
    msg = msgs.Receipt(receipt_id='R1', store_id='demo', visit_code='V1', status=msgs.Receipt.FINAL,
                       subtotal_cents=1197, tax_cents=0, total_cents=1197, confidence=0.9)
    msg.header.stamp = Time(sec=5, nanosec=7)
    msg.lines = [msgs.CartLine(sku='COLA-330', name='Cola', quantity=2, unit_price_cents=149,
                               line_total_cents=298, confidence=0.9),
                 msgs.CartLine(sku='WINE-750', name='Red wine', quantity=1, unit_price_cents=899,
                               line_total_cents=899, confidence=0.9, age_restricted=True, id_verified=True)]
    envelope = pb.Envelope.FromString(convert.receipt_items(msg, 'demo', 1)[0][3])
    assert envelope.receipt.status == pb.FINAL and envelope.receipt.stamp_ns == 5_000_000_007
    assert [(line.age_restricted, line.id_verified) for line in envelope.receipt.lines] == [(False, False),
                                                                                           (True, True)]
    assert ingest.validate(envelope, 'demo') == ''
    request = msgs.ReviewRequest(receipt_id='R1', store_id='demo', visit_code='V1')
    request.events = [msgs.DoubtfulEvent(event_id='E1', candidate_visits=['V1', 'V2'],
                                         candidate_scores=[0.6, 0.4], clip_refs=['c/1.mp4'])]
    items = convert.review_items(request, 'demo', 1)
    assert [kind for _, _, kind, _ in items] == ['clip', 'review']
    assert ingest.validate(pb.Envelope.FromString(items[-1][3]), 'demo') == ''


def test_the_store_catalogue_converts_and_validates():
    store = testing.fake_store()
    (item_id, visit, kind, payload), = convert.catalogue_items(store, 123)
    envelope = pb.Envelope.FromString(payload)
    assert (visit, kind) == (wire.STORE_VISIT_KEY, wire.CATALOGUE) and item_id.startswith('catalogue:')
    assert item_id == wire.catalogue_item_id(envelope.catalogue, 123) and item_id.endswith('-123')
    assert ingest.validate(envelope, 'demo') == ''
    catalogue = envelope.catalogue
    assert [(p.sku, p.price_cents, p.unit_grams) for p in catalogue.products][:2] == [
        ('COLA-330', 149, 350.0), ('CHOC-100', 199, 108.0)]
    assert [(b.bin_id, b.shelf_id, b.sku, b.x) for b in catalogue.bins][0] == ('S1-B1', 'S1', 'COLA-330', 2.0)
    assert catalogue.tax_rate_bp == 825 and catalogue.gates[0].radius_m == 0.8
    catalogue.products[1].price_cents = 1                   # changed after it was named
    assert 'item_id' in ingest.validate(envelope, 'demo')
    catalogue.products[1].sku = 'COLA-330'
    envelope.item_id = wire.catalogue_item_id(catalogue, 123)
    assert 'unique' in ingest.validate(envelope, 'demo')


def test_tracks_and_the_proposed_visit_travel_when_the_store_sends_them():
    msg = testing.fake_review(4)
    event = msg.events[0]
    event.proposed_visit = 'V99999'
    event.tracks = [SimpleNamespace(track_id='t7', visit_code='V99999',
                                    stamps=[testing.stamp(1), testing.stamp(2)], x=[1.0, 1.5], y=[2.0, 2.0])]
    envelope = pb.Envelope.FromString(convert.review_items(msg, 'demo', 1)[-1][3])
    converted = envelope.review_request.events[0]
    assert converted.proposed_visit == 'V99999'
    assert [(t.track_id, list(t.stamps_ns), list(t.x)) for t in converted.tracks] == [('t7', [1, 2], [1.0, 1.5])]
    assert ingest.validate(envelope, 'demo') == ''
    converted.tracks[0].y.append(3.0)
    assert 'track' in ingest.validate(envelope, 'demo')
