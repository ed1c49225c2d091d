"""Publishes sample receipts and review requests (with a short WebM clip each) on ROS,
for trying the cloud path without running the store simulation:

    PYTHONPATH=cloud .venv/bin/python cloud/publish_sample.py [--visits 3] [--clip-root runs/edge/clips]

Odd visits need review (receipt + review request + clip), even ones are FINAL.
"""
import argparse
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))


def write_clip(path: Path, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        import cv2
        import numpy as np
        writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*'VP80'), 10, (320, 240))
        for n in range(30):
            frame = np.full((240, 320, 3), 40, np.uint8)
            cv2.rectangle(frame, (10 + n * 8, 80), (60 + n * 8, 160), (0, 160, 255), -1)
            cv2.putText(frame, f'visit {seed} t={n / 10:.1f}s', (10, 30),
                        cv2.FONT_HERSHEY_SIMPLEX, 0.7, (255, 255, 255), 2)
            writer.write(frame)
        writer.release()
    except Exception:
        path.write_bytes(b'sample clip ' * 100)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--visits', type=int, default=3)
    parser.add_argument('--store-id', default='demo')
    parser.add_argument('--clip-root', default='runs/edge/clips')
    parser.add_argument('--first', type=int, default=int(time.time()) % 100000)
    args = parser.parse_args(argv)

    import rclpy
    from builtin_interfaces.msg import Time
    from jwo import msg as m

    from jwo_nodes.ros_common import DURABLE_EVENT_QOS
    rclpy.init()
    node = rclpy.create_node('jwo_publish_sample')
    receipts = node.create_publisher(m.Receipt, '/jwo/receipts', DURABLE_EVENT_QOS)
    reviews = node.create_publisher(m.ReviewRequest, '/jwo/review/requests', DURABLE_EVENT_QOS)
    deadline = time.monotonic() + 10
    while receipts.get_subscription_count() == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    if receipts.get_subscription_count() == 0:
        print('no uplink_node is subscribed to /jwo/receipts (same ROS_DOMAIN_ID?)', file=sys.stderr)
        return 1
    now = time.time_ns()
    for k in range(args.visits):
        n = args.first + k
        needs_review = k % 2 == 0
        stamp = Time(sec=now // 10**9, nanosec=now % 10**9)
        receipt = m.Receipt(receipt_id=f'R{n}', store_id=args.store_id, visit_code=f'V{n}',
                            status=m.Receipt.NEEDS_REVIEW if needs_review else m.Receipt.FINAL,
                            subtotal_cents=497, tax_cents=0, total_cents=497, confidence=0.55)
        receipt.header.stamp = receipt.exit_stamp = stamp
        receipt.entry_stamp = Time(sec=now // 10**9 - 180, nanosec=0)
        receipt.lines = [m.CartLine(sku='COLA-330', name='Cola 330 ml can', quantity=2,
                                    unit_price_cents=149, line_total_cents=298, confidence=0.55),
                         m.CartLine(sku='CHOC-100', name='Dark chocolate 100 g', quantity=1,
                                    unit_price_cents=199, line_total_cents=199, confidence=0.9)]
        if needs_review:
            receipt.reasons = [m.ReviewReason(code=m.ReviewReason.AMBIGUOUS_ATTRIBUTION,
                                              event_id=f'E{n}', detail='two shoppers at S1')]
        receipts.publish(receipt)
        print(f'published receipt R{n} ({"needs review" if needs_review else "final"})')
        if needs_review:
            clip = f'cam_front/R{n}.webm'
            write_clip(Path(args.clip_root) / clip, n)
            request = m.ReviewRequest(receipt_id=f'R{n}', store_id=args.store_id, visit_code=f'V{n}')
            request.header.stamp = stamp
            request.events = [m.DoubtfulEvent(
                event_id=f'E{n}', reason_code=m.ReviewReason.AMBIGUOUS_ATTRIBUTION, shelf_id='S1',
                bin_ids=['S1-B1'], delta_grams=[-700.0], window_start=stamp, window_end=stamp,
                candidate_visits=[f'V{n}', f'V{n + 1000}'], candidate_scores=[0.55, 0.45],
                proposed_sku='COLA-330', proposed_quantity=2, camera_ids=['cam_front'],
                clip_refs=[clip])]
            reviews.publish(request)
            print(f'published review request R{n} with clip {Path(args.clip_root) / clip}')
    time.sleep(1.0)   # let reliable delivery finish before the node goes away
    node.destroy_node()
    rclpy.shutdown()
    return 0


if __name__ == '__main__':
    sys.exit(main())
