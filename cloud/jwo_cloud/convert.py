"""ROS messages (jwo/Receipt, jwo/ReviewRequest: a review request or a FINAL receipt's
evidence), a receipt's token hash and the store's configuration to uplink envelopes.

Pure: it reads the messages' attributes and never imports rclpy, so it is tested with
plain stand-in objects as well as real messages. Each message becomes outbox items
``(item_id, visit_key, kind, payload)`` whose payload is a serialized Envelope; a review
request also yields one clip item per clip it references, queued before it, so the
review reaches the queue only after its clips are in the bucket.
"""
from jwo_cloud import wire
from jwo_cloud.wire import pb

# jwo/Receipt status constants.
ROS_FINAL = 0
ROS_NEEDS_REVIEW = 1


def _ns(stamp) -> int:
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def receipt_to_pb(msg, currency: str = '', tax_rate_bp: int = 0) -> pb.Receipt:
    status = {ROS_FINAL: pb.FINAL, ROS_NEEDS_REVIEW: pb.NEEDS_REVIEW}.get(
        int(msg.status), pb.RECEIPT_STATUS_UNSPECIFIED)
    return pb.Receipt(
        receipt_id=msg.receipt_id, store_id=msg.store_id, visit_code=msg.visit_code,
        stamp_ns=_ns(msg.header.stamp), entry_ns=_ns(msg.entry_stamp),
        exit_ns=_ns(msg.exit_stamp),
        lines=[pb.CartLine(sku=line.sku, name=line.name, quantity=int(line.quantity),
                           unit_price_cents=int(line.unit_price_cents),
                           line_total_cents=int(line.line_total_cents),
                           confidence=float(line.confidence),
                           sold_by_weight=bool(line.sold_by_weight), grams=int(line.grams),
                           age_restricted=bool(line.age_restricted),
                           id_verified=bool(line.id_verified)) for line in msg.lines],
        savings=[pb.SavingLine(promotion_id=s.promotion_id, name=s.name, skus=list(s.skus), cents=int(s.cents))
                 for s in msg.savings],
        savings_cents=int(msg.savings_cents),
        subtotal_cents=int(msg.subtotal_cents), tax_cents=int(msg.tax_cents),
        total_cents=int(msg.total_cents), status=status,
        reasons=[pb.ReviewReason(code=r.code, event_id=r.event_id, detail=r.detail)
                 for r in msg.reasons],
        confidence=float(msg.confidence), currency=currency, tax_rate_bp=int(tax_rate_bp))


def review_to_pb(msg) -> pb.ReviewRequest:
    return pb.ReviewRequest(
        receipt_id=msg.receipt_id, store_id=msg.store_id, visit_code=msg.visit_code,
        stamp_ns=_ns(msg.header.stamp),
        events=[pb.DoubtfulEvent(
            event_id=e.event_id, reason_code=e.reason_code, shelf_id=e.shelf_id,
            bin_ids=list(e.bin_ids), delta_grams=[float(g) for g in e.delta_grams],
            window_start_ns=_ns(e.window_start), window_end_ns=_ns(e.window_end),
            candidate_visits=list(e.candidate_visits),
            candidate_scores=[float(s) for s in e.candidate_scores],
            proposed_sku=e.proposed_sku, proposed_quantity=int(e.proposed_quantity),
            camera_ids=list(e.camera_ids), clip_refs=list(e.clip_refs),
            clip_ids=[wire.clip_id(ref) for ref in e.clip_refs],
            candidate_products=[pb.ProductCandidate(sku=sku, quantity=int(n), unit_grams=float(g),
                                                    probability=float(p))
                                for sku, n, g, p in zip(e.candidate_skus, e.candidate_quantities,
                                                        e.candidate_unit_grams, e.candidate_product_scores)],
            proposed_visit=e.proposed_visit,
            tracks=[pb.TrackPath(track_id=t.track_id, visit_code=t.visit_code,
                                 stamps_ns=[_ns(s) for s in t.stamps], x=list(t.x), y=list(t.y))
                    for t in e.tracks])
            for e in msg.events])


def receipt_items(msg, store_id: str, now_ns: int, currency: str = '',
                  tax_rate_bp: int = 0) -> list:
    receipt = receipt_to_pb(msg, currency, tax_rate_bp)
    receipt.store_id = receipt.store_id or store_id
    visit = wire.visit_key(msg.visit_code, msg.receipt_id)
    item = wire.item_id(wire.RECEIPT, msg.receipt_id)
    envelope = wire.make_envelope(store_id, item, visit, now_ns, receipt=receipt)
    return [(item, visit, wire.RECEIPT, envelope.SerializeToString())]


def access_item(receipt_id: str, visit: str, token_sha256: bytes, store_id: str, now_ns: int) -> tuple:
    """The item that gives the cloud a receipt's token hash (after its receipt, in the
    visit's order)."""
    item = wire.item_id(wire.ACCESS, receipt_id)
    envelope = wire.make_envelope(store_id, item, visit, now_ns, receipt_access=pb.ReceiptAccess(
        receipt_id=receipt_id, token_sha256=bytes(token_sha256)))
    return (item, visit, wire.ACCESS, envelope.SerializeToString())


def review_items(msg, store_id: str, now_ns: int, content_type_of=None) -> list:
    """The clip items (one per distinct clip reference, in order of appearance) and
    then the review item."""
    review, visit = _request(msg, store_id)
    items, seen = [], set()
    for event in review.events:
        for ref, clip in zip(event.clip_refs, event.clip_ids):
            if clip in seen:
                continue
            seen.add(clip)
            chunk = pb.ClipChunk(clip_id=clip, clip_ref=ref,
                                 content_type=(content_type_of or _content_type)(ref))
            envelope = wire.make_envelope(store_id, wire.item_id(wire.CLIP, clip), visit,
                                          now_ns, clip_chunk=chunk)
            items.append((envelope.item_id, visit, wire.CLIP, envelope.SerializeToString()))
    item = wire.item_id(wire.REVIEW, msg.receipt_id)
    envelope = wire.make_envelope(store_id, item, visit, now_ns, review_request=review)
    items.append((item, visit, wire.REVIEW, envelope.SerializeToString()))
    return items


def evidence_items(msg, store_id: str, now_ns: int) -> list:
    """The item of a FINAL receipt's events (fusion's receipts/evidence): no clips, which
    are cut only for review requests."""
    evidence, visit = _request(msg, store_id)
    item = wire.item_id(wire.EVIDENCE, msg.receipt_id)
    envelope = wire.make_envelope(store_id, item, visit, now_ns, receipt_evidence=evidence)
    return [(item, visit, wire.EVIDENCE, envelope.SerializeToString())]


def _request(msg, store_id: str) -> tuple:
    """A jwo/ReviewRequest as protobuf (of this store when it names none), and its visit key."""
    request = review_to_pb(msg)
    request.store_id = request.store_id or store_id
    return request, wire.visit_key(msg.visit_code, msg.receipt_id)


def catalogue_items(store, now_ns: int) -> list:
    """The store's catalogue and floor plan (a jwo_nodes StoreConfig: products, shelves
    with bins, gates) as one item: the uplink sends it when it starts, and the cloud
    keeps the one sent last (so going back to an earlier configuration works too)."""
    catalogue = pb.StoreCatalogue(
        name=store.name, currency=store.currency, tax_rate_bp=int(store.tax_rate_bp),
        products=[pb.CatalogueProduct(sku=p.sku, name=p.name, unit_grams=float(p.unit_grams),
                                      tolerance_grams=float(p.tolerance_grams),
                                      price_cents=int(p.price_cents),
                                      price_per_kg_cents=int(p.price_per_kg_cents or 0),
                                      age_restricted=bool(p.age_restricted))
                  for p in store.products.values()],
        bins=[pb.FloorBin(bin_id=b.id, shelf_id=shelf.id, sku=b.sku, x=float(b.x), y=float(b.y))
              for shelf in store.shelves.values() for b in shelf.bins],
        gates=[pb.FloorGate(gate_id=g.id, x=float(g.x), y=float(g.y), radius_m=float(g.radius_m))
               for g in store.gates.values()])
    item = wire.catalogue_item_id(catalogue, now_ns)
    envelope = wire.make_envelope(store.store_id, item, wire.STORE_VISIT_KEY, now_ns,
                                  catalogue=catalogue)
    return [(item, wire.STORE_VISIT_KEY, wire.CATALOGUE, envelope.SerializeToString())]


def _content_type(ref: str) -> str:
    import mimetypes
    return mimetypes.guess_type(ref)[0] or 'application/octet-stream'
