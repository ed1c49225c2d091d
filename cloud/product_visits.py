"""Visits in doubt that the product itself made, in a cloud bucket, in seconds: what the
review console's browser test and its benchmark (review_bench.py) review.

A scenario runs through the change detector, the stand-in tracker and fusion as pure
code (`jwo fusion-check`'s run); each receipt becomes the ROS messages fusion_node
publishes (its own _publish_receipt, publishers captured); each event in doubt gets the
clips clip_node writes (jwo_nodes.core.clips) from the frames the simulated camera
renders (jwo_nodes.core.render, as camera_node draws them); and everything, with the
store's catalogue, goes through the uplink's durable outbox and sender to a real ingest
over ZeroMQ + CURVE into the bucket. Only the ROS graph is left out: no DDS, no
processes, no real time.

    from product_visits import send_product_visits
"""
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

from jwo_cloud import convert, testing  # noqa: E402
from jwo_cloud.ingest import Ingest  # noqa: E402
from jwo_cloud.uplink import UplinkSender  # noqa: E402

STORE = REPO / 'config' / 'stores' / 'demo.yaml'
NS = 1_000_000_000
JPEG_QUALITY = 80            # camera_node's default


@dataclass(frozen=True)
class ProductVisits:
    receipts: tuple          # jwo/Receipt of every visit, as fusion_node published them
    reviews: tuple           # jwo/ReviewRequest of the visits in doubt
    clips: int               # clip files written
    seconds: float


def fusion_messages(scenario: Path, store) -> tuple:
    """(receipts, review requests, FINAL receipts' evidence) fusion_node publishes for
    the scenario."""
    from jwo_nodes import fusion_check
    from jwo_nodes.core.sim import Timeline, load_scenario
    from jwo_nodes.nodes.fusion_node import FusionNode
    timeline = Timeline(load_scenario(str(scenario), store), store)
    receipts, reviews, evidence = [], [], []
    publisher = SimpleNamespace(
        _receipts=SimpleNamespace(publish=receipts.append),
        _reviews=SimpleNamespace(publish=reviews.append),
        _evidence=SimpleNamespace(publish=evidence.append),
        _counters=SimpleNamespace(count=lambda *_: None),
        get_logger=lambda: SimpleNamespace(info=lambda *_: None))
    for receipt in sorted(fusion_check.run_scenario(timeline, fusion_check.standin_positions).values(),
                          key=lambda r: r.exit_ns):
        FusionNode._publish_receipt(publisher, receipt)
    return receipts, reviews, evidence


def write_clips(scenario: Path, store, reviews: list, clip_root: Path, margin_s: float) -> int:
    """The clips of the review requests as clip_node writes them, from the frames the
    scenario's cameras render (stamped as camera_node stamps them in scenario time)."""
    import cv2

    from jwo_nodes.core import render, sim
    from jwo_nodes.core.clips import EventWindow, StampedFrame, write_clip
    from jwo_nodes.ros_common import to_ns
    timeline = sim.Timeline(sim.load_scenario(str(scenario), store), store)
    figures = render.SceneFigures(timeline)
    written = 0
    for request in reviews:
        for event in request.events:
            window = EventWindow(to_ns(event.window_start), to_ns(event.window_end))
            for camera_id, ref in zip(event.camera_ids, event.clip_refs):
                camera = store.cameras[camera_id]
                renderer = render.CameraRenderer(store, camera, render.RenderSettings(
                    seed=timeline.scenario.seed, drop_rate=timeline.scenario.noise.dropped_messages))
                first = max(0, int((window.start_ns - margin_s * NS) * camera.fps // NS))
                last = int((window.end_ns + margin_s * NS) * camera.fps // NS)
                frames = []
                for k in range(first, last + 1):
                    if renderer.dropped(k):
                        continue
                    t_ns = int(round(k * NS / camera.fps))
                    image = renderer.render(figures.at(t_ns), t_ns / NS, k).image
                    jpeg = cv2.imencode('.jpg', image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])[1]
                    frames.append(StampedFrame(t_ns, jpeg.tobytes()))
                write_clip(clip_root / ref, frames, window, camera.fps)
                written += 1
    return written


def send_product_visits(bucket, workdir, scenarios, margin_s: float = 3.0,
                        store_path: Path = STORE) -> ProductVisits:
    """Runs the scenarios and sends what the store would send to an ingest writing to
    ``bucket``; returns once the outbox is empty (everything acknowledged)."""
    from jwo_nodes.core.config import load_store_config
    from jwo_nodes.core.outbox import NewItem, Outbox
    started = time.perf_counter()
    workdir = Path(workdir)
    store = load_store_config(str(store_path))
    keys = testing.make_keys(workdir / 'keys', store.store_id)
    clip_root = workdir / 'clips'
    outbox = Outbox(workdir / 'outbox.sqlite3')
    items = convert.catalogue_items(store, time.time_ns())
    all_receipts, all_reviews, clips = [], [], 0
    for scenario in scenarios:
        receipts, reviews, evidence = fusion_messages(Path(scenario), store)
        clips += write_clips(Path(scenario), store, reviews, clip_root, margin_s)
        review_of = {r.receipt_id: r for r in reviews}
        evidence_of = {e.receipt_id: e for e in evidence}
        for receipt in receipts:
            items += convert.receipt_items(receipt, store.store_id, time.time_ns(), store.currency,
                                           store.tax_rate_bp)
            if receipt.receipt_id in review_of:
                items += convert.review_items(review_of[receipt.receipt_id], store.store_id,
                                              time.time_ns())
            elif receipt.receipt_id in evidence_of:
                items += convert.evidence_items(evidence_of[receipt.receipt_id], store.store_id,
                                                time.time_ns())
        all_receipts += receipts
        all_reviews += reviews
    outbox.add([NewItem(*item) for item in items])
    ingest = Ingest(bucket, keys.server_secret, keys.enrolled, workdir / 'spool',
                    bind='tcp://127.0.0.1:0')
    sender = UplinkSender(outbox, ingest.start(), keys.store_secret, keys.server_public,
                          clip_root=str(clip_root), ack_timeout_s=5.0, backoff_max_s=0.5)
    sender.start()
    try:
        if not testing.wait_until(lambda: outbox.counts()['pending'] == 0, 60) \
                or outbox.counts()['rejected']:
            raise RuntimeError(f'the uplink did not deliver all: {outbox.counts()} {sender.counters}')
    finally:
        sender.stop()
        ingest.stop()
        outbox.close()
    return ProductVisits(tuple(all_receipts), tuple(all_reviews), clips,
                         time.perf_counter() - started)
