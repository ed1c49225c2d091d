"""`jwo demo`: the whole edge stack on a simulated store, receipts against the truth.

Starts the store's node set (real processes over DDS), plays the scenario through the
simulated sensors, prints each receipt as it is issued next to the ground truth and
writes it as JSON under the run folder. Stops by itself once every party has its
receipt; exits non-zero if a receipt is wrong or missing, or is of no party. Prints the
first visit's live-cart link (and its QR code) as soon as its gate hands it off, and
the address of the staff view, where a simulated associate confirms every ID check.
"""
import json
import secrets
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import rclpy
import segno
from jwo.msg import IdCheckDecision, IdCheckRequest

from jwo_nodes.core.config import ConfigError, load_store_config
from jwo_common.money import format_cents
from jwo_nodes.core.scoring import items_of, percentiles
from jwo_nodes.core.sim import NS, Timeline, load_scenario
from jwo_common.visit_token import token_hash
from jwo_nodes.core.visit_access import handoff_path, read_handoff
from jwo_nodes.launcher import START_LEAD_S, add_shelves_per_process
from jwo_nodes.ros_common import DURABLE_EVENT_QOS, to_ns, to_stamp
from jwo_nodes.runner import run_scenario

MATCH, REVIEW, WRONG, MISSING = 'MATCH', 'REVIEW', 'WRONG', 'MISSING'
WEIGHED_GRAMS_SLACK = 5
# The demo's associate checks an ID this long (scenario time) after the request.
ASSOCIATE_DELAY_NS = NS
ASSOCIATE_ID = 'demo-associate'


def add_arguments(parser) -> None:
    add_shelves_per_process(parser)
    parser.add_argument('--store', default='config/stores/demo.yaml', help='store config YAML')
    parser.add_argument('--scenario', default='config/scenarios/demo.yaml', help='scenario YAML')
    parser.add_argument('--time-scale', type=float, default=2.0,
                        help='scenario seconds per wall second (default 2: the 1-minute demo takes 30 s)')
    parser.add_argument('--start-delay', type=float, default=START_LEAD_S,
                        help='wall seconds from the graph being ready (every node up, every '
                        f'publisher-subscriber pair matched) to scenario time 0 (default {START_LEAD_S:g})')
    parser.add_argument('--runs-dir', default='runs', help='where the run folder is created')
    parser.add_argument('--no-cameras', action='store_true', help='do not start camera nodes')
    parser.add_argument('--vision', action='store_true',
                        help='track shoppers on the rendered camera frames (vision_tracker_node) '
                             'instead of the simulator stand-in')
    parser.add_argument('--grace', type=float, default=30.0,
                        help='wall seconds to wait for receipts after the scenario ends')
    parser.add_argument('--no-cloud', action='store_true',
                        help='do not send receipts to a local cloud ingest and bucket')
    parser.add_argument('--no-live-cart', action='store_true',
                        help="do not run the shoppers' live carts (live_cart_node)")
    parser.add_argument('--no-staff-view', action='store_true',
                        help="do not run the associates' staff view (staff_view_node)")
    parser.add_argument('--live-cart-host', default='127.0.0.1', metavar='ADDRESS',
                        help='address the live cart listens on and its link names (default '
                             "127.0.0.1; this machine's address on the network to open the link "
                             'on a phone)')


def free_port(host: str = '127.0.0.1') -> int:
    """A TCP port free on ``host`` now (the OS's pick)."""
    with socket.socket() as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


class FirstVisitLink:
    """Prints, once, the live-cart link of the first visit to enter, with its QR code
    for a phone's camera, as soon as its gate has handed the token off (the gates'
    handoff files stand in for the shoppers' app)."""

    def __init__(self, handoff_dir: Path, gate_ids, base_url: str):
        self._files = [handoff_path(handoff_dir, gate_id) for gate_id in gate_ids]
        self._base_url = base_url
        self.printed = False
        self.first = None     # the AccessGrant of the first visit, once printed

    def poll(self) -> None:
        if self.printed:
            return
        grants = [grant for path in self._files for grant in read_handoff(path)]
        if not grants:
            return
        first = min(grants, key=lambda grant: grant.access.stamp_ns)
        self.first = first
        link = f'{self._base_url}cart/{first.token}'
        print(f'\nlive cart of visit {first.access.visit_code} (the first to enter), open while it '
              f'shops; the link dies at its exit:\n    {link}', flush=True)
        segno.make(link, error='m').terminal(out=sys.stdout, compact=True)
        sys.stdout.flush()
        self.printed = True


class SimulatedAssociate:
    """The demo's store associate: confirms every ID check ASSOCIATE_DELAY_NS after its
    request, as a script on the store's network would (the staff view is where a
    person does it). Spun by the demo's loop."""

    def __init__(self):
        self.node = rclpy.create_node('demo_associate', namespace='/jwo')
        self._decisions = self.node.create_publisher(IdCheckDecision, 'id_checks/decisions', DURABLE_EVENT_QOS)
        self.node.create_subscription(IdCheckRequest, 'id_checks/requests', self._confirm, DURABLE_EVENT_QOS)

    def _confirm(self, request: IdCheckRequest) -> None:
        decision = IdCheckDecision(decision_id=f'{ASSOCIATE_ID}-{request.visit_code}-{request.sku}',
                                   visit_code=request.visit_code, sku=request.sku,
                                   decision=IdCheckDecision.VERIFIED, associate_id=ASSOCIATE_ID)
        decision.header.stamp = to_stamp(to_ns(request.header.stamp) + ASSOCIATE_DELAY_NS)
        self._decisions.publish(decision)
        print(f'\nID check: visit {request.visit_code} took {request.name} ({request.shelf_id}); '
              f'{ASSOCIATE_ID} confirmed the ID', flush=True)

    def poll(self) -> None:
        rclpy.spin_once(self.node, timeout_sec=0)

    def close(self) -> None:
        self.node.destroy_node()


def staff_pin_file(run_dir: Path) -> Path:
    """A fresh staff PIN for this run, in a file only its owner reads."""
    path = run_dir / 'staff-pin'
    path.touch(mode=0o600)
    path.write_text(f'{secrets.randbelow(10 ** 6):06d}\n')
    return path


class LocalCloud:
    """The cloud side on this machine, as `jwo-cloud` runs it: keys and a reviewer made
    once under <runs>/cloud and <runs>/edge, an ingest on a free loopback port writing
    to the directory bucket <runs>/cloud/bucket and delivering final receipts to their
    payers through the file adapter (<runs>/cloud/deliveries.jsonl). The store's review
    clips are written to <runs>/edge/clips, where the uplink reads them."""

    def __init__(self, runs_dir: Path, log_path: Path):
        self.home = runs_dir / 'cloud'
        self.edge = runs_dir / 'edge'
        self.bucket = self.home / 'bucket'
        self.clips = (self.edge / 'clips').resolve()
        self.deliveries = self.home / 'deliveries.jsonl'
        self._delivered_before = 0
        self.earlier_receipts = set()
        self._log = open(log_path, 'w')
        self._ingest = None
        self.endpoint = f'tcp://127.0.0.1:{free_port()}'

    def start(self, store_id: str) -> str:
        cloud = str(Path(sys.executable).parent / 'jwo-cloud')
        init = subprocess.run([cloud, 'init', '--home', str(self.home), '--edge-home', str(self.edge),
                               '--store-id', store_id], capture_output=True, text=True, timeout=60)
        if init.returncode != 0:
            raise RuntimeError(f'jwo-cloud init failed: {init.stderr.strip()}')
        self._delivered_before = self._delivered()
        # A scenario run again repeats its visit codes, so its receipts (and their
        # deliveries, and their token hashes) went to the cloud the first time.
        self.earlier_receipts = set(self.bucket.glob('stores/*/receipts/*.json'))
        self.restart_ingest()
        return init.stdout

    def restart_ingest(self) -> None:
        cloud = str(Path(sys.executable).parent / 'jwo-cloud')
        self._ingest = subprocess.Popen(
            [cloud, 'serve', '--home', str(self.home), '--no-ui', '--bind', self.endpoint,
             '--delivery-file', str(self.deliveries)],
            stdout=self._log, stderr=subprocess.STDOUT)

    def kill_ingest(self) -> None:
        """SIGKILL, as a crash would (the chaos test)."""
        self._ingest.kill()
        self._ingest.wait()

    def overrides(self) -> dict:
        """Parameters of the uplink and of the clip writer, by executable."""
        return {'uplink_node': {
                    'ingest_endpoint': self.endpoint,
                    'outbox_path': str((self.edge / 'outbox.sqlite3').resolve()),
                    'store_secret_key_file': str((self.edge / 'keys' / 'store.key_secret').resolve()),
                    'ingest_public_key_file': str((self.edge / 'keys' / 'ingest.key').resolve()),
                    'clip_root': str(self.clips)},
                'clip_node': {'clip_root': str(self.clips)}}

    def wait_for(self, paths: list, timeout_s: float) -> list:
        """The bucket files among paths that are there, waiting up to the timeout for all."""
        deadline = time.monotonic() + timeout_s
        while True:
            there = [path for path in paths if path.is_file()]
            if len(there) == len(paths) or time.monotonic() > deadline:
                return there
            time.sleep(0.2)

    def wait_for_deliveries(self, count: int, timeout_s: float) -> int:
        """How many receipts the file adapter has delivered, waiting up to the timeout
        for ``count`` (this run's; the file keeps earlier runs' too)."""
        before = self._delivered_before
        deadline = time.monotonic() + timeout_s
        while True:
            delivered = self._delivered() - before
            if delivered >= count or time.monotonic() > deadline:
                return delivered
            time.sleep(0.2)

    def _delivered(self) -> int:
        try:
            return len(self.deliveries.read_text(encoding='utf-8').splitlines())
        except FileNotFoundError:
            return 0

    def stop(self) -> None:
        if self._ingest is not None and self._ingest.poll() is None:
            self._ingest.send_signal(signal.SIGINT)
            try:
                self._ingest.wait(10)
            except subprocess.TimeoutExpired:
                self._ingest.kill()
        self._log.close()


def run(args) -> int:
    try:
        store = load_store_config(args.store)
        timeline = Timeline(load_scenario(args.scenario, store), store)
    except ConfigError as error:
        print(f'error: {error}', file=sys.stderr)
        return 2
    run_dir = Path(args.runs_dir) / time.strftime('demo-%Y%m%d-%H%M%S')
    (run_dir / 'receipts').mkdir(parents=True, exist_ok=True)
    parties = [p.id for p in timeline.scenario.parties]
    expected = {party: timeline.expected_receipt(party) for party in parties}
    print(f'jwo demo: store {store.store_id}, scenario {timeline.scenario.name} '
          f'({len(parties)} parties, {timeline.duration_ns / NS:.0f} s at {args.time_scale:g}x); '
          f'run folder {run_dir}', flush=True)
    verdicts = {}

    def on_receipt(party, receipt, exit_to_receipt_s):
        verdict = _verdict(receipt, expected[party])
        verdicts[party] = verdict
        _print_receipt(receipt, party, expected[party], verdict, exit_to_receipt_s, store.currency)
        document = {'receipt': receipt, 'party': party, 'ground_truth': expected[party],
                    'verdict': verdict, 'exit_to_receipt_s': round(exit_to_receipt_s, 3)}
        (run_dir / 'receipts' / f'{receipt["receipt_id"]}.json').write_text(json.dumps(document, indent=2) + '\n')

    cloud = None if args.no_cloud else LocalCloud(Path(args.runs_dir), run_dir / 'cloud.log')
    overrides = cloud.overrides() if cloud else {}
    handoff_dir = link = None
    if not args.no_live_cart:
        handoff_dir = run_dir / 'access'
        port = free_port(args.live_cart_host)
        overrides['live_cart_node'] = {'host': args.live_cart_host, 'port': port}
        link = FirstVisitLink(handoff_dir, store.gates, f'http://{args.live_cart_host}:{port}/')
    pin_file = None
    if not args.no_staff_view:
        pin_file = staff_pin_file(run_dir)
        port = free_port(args.live_cart_host)
        overrides['staff_view_node'] = {'host': args.live_cart_host, 'port': port}
        print(f'staff view (ID checks): http://{args.live_cart_host}:{port}/staff (any associate id; '
              f'the PIN is in {pin_file})', flush=True)
    rclpy.init()
    associate = SimulatedAssociate()

    def on_turn(supervisor, start_ns):
        associate.poll()
        if link:
            link.poll()
    try:
        if cloud:
            print(cloud.start(store.store_id).rstrip(), flush=True)
        result = run_scenario(store, args.store, args.scenario, timeline, time_scale=args.time_scale,
                              start_delay_s=args.start_delay, with_cameras=not args.no_cameras,
                              vision=args.vision, state_dir=run_dir / 'state',
                              log_path=run_dir / 'nodes.log', grace_s=args.grace, on_receipt=on_receipt,
                              with_uplink=cloud is not None, shelves_per_process=args.shelves_per_process,
                              overrides=overrides, live_cart_handoff=handoff_dir, staff_pin_file=pin_file,
                              on_turn=on_turn,
                              before_stop=(lambda r: _report_cloud(cloud, store.store_id, r, link and link.first))
                              if cloud else None)
    except KeyboardInterrupt:
        print('interrupted')
        return 130
    finally:
        if cloud:
            cloud.stop()
        associate.close()
        rclpy.try_shutdown()
    if result.failure:
        print(f'error: {result.failure} (see {run_dir / "nodes.log"})', file=sys.stderr)
    for unmatched in result.unmatched:
        print(f'error: receipt {unmatched.receipt_id}: {unmatched.problem}', file=sys.stderr)
    for party in parties:
        if party not in verdicts:
            verdicts[party] = MISSING
            print(f'\nparty {party}: no receipt -> {MISSING}')
    latency = percentiles(result.cart_latency_ms)
    exit_latency = percentiles(list(result.exit_to_receipt_s.values()))
    counts = {v: list(verdicts.values()).count(v) for v in (MATCH, REVIEW, WRONG, MISSING)}
    summary = {'verdicts': verdicts, 'counts': counts, 'wall_s': round(result.wall_s, 2),
               'change_to_cart_update_ms': latency, 'exit_to_receipt_s': exit_latency,
               'unmatched_receipts': [asdict(u) for u in result.unmatched], 'failure': result.failure}
    (run_dir / 'summary.json').write_text(json.dumps(summary, indent=2) + '\n')
    print(f'\n{len(parties)} visits: {counts[MATCH]} match the ground truth, {counts[REVIEW]} sent to '
          f'review with reasons, {counts[WRONG]} wrong, {counts[MISSING]} missing.')
    if latency['count']:
        print(f'weight change -> cart update: median {latency["p50"]:.1f} ms, p99 {latency["p99"]:.1f} ms '
              f'({latency["count"]} changes); exit -> receipt median {exit_latency["p50"]:.2f} s; '
              f'wall time {result.wall_s:.1f} s')
    print(f'receipts, summary and node logs: {run_dir}')
    return 0 if counts[WRONG] == counts[MISSING] == 0 and not result.failure and not result.unmatched else 1


def _report_cloud(cloud: LocalCloud, store_id: str, result, first_visit=None) -> None:
    """Waits for the receipts and the review requests (which follow their clips) to reach
    the bucket, and for the FINAL receipts' deliveries to their payers, and says where
    everything is; with the first visit's AccessGrant, where its shopper finds the receipt."""
    stores = cloud.bucket / 'stores' / store_id
    queue = cloud.bucket / 'review' / 'pending' / store_id
    receipts = [stores / 'receipts' / f'{r["receipt_id"]}.json' for r in result.receipts.values()]
    reviews = [queue / f'{r["receipt_id"]}.json' for r in result.receipts.values()
               if r['status'] == 'NEEDS_REVIEW']
    started = time.monotonic()
    there = cloud.wait_for(receipts + reviews, timeout_s=30.0)
    print(f'\ncloud: {len(set(there) & set(receipts))} of {len(receipts)} receipts and '
          f'{len(set(there) & set(reviews))} of {len(reviews)} review requests (each after its clips) '
          f'in the bucket ({time.monotonic() - started:.1f} s after the last receipt was issued)')
    print(f'    receipts:     {stores / "receipts"}/')
    print(f'    review queue: {queue}/ ({len(reviews)} from this run)')
    print(f'    clips:        {stores / "clips"}/ (camera clips of doubtful events)')
    print(f'    store clips:  {cloud.clips}/ (as clip_node wrote them, <store>/<receipt>/)')
    print(f'    review UI:    {Path(sys.executable).parent / "jwo-cloud"} serve --home {cloud.home} '
          f'-> http://127.0.0.1:8080/ (reviewer accounts in {cloud.home / "reviewers.json"}; '
          f'jwo-cloud reviewer-add sets a password)')
    new = [r for r, path in zip(result.receipts.values(), receipts) if path not in cloud.earlier_receipts]
    if len(new) < len(receipts):
        print(f'    (of those, {len(receipts) - len(new)} were there from an earlier run of this scenario: '
              'its visit codes repeat, so nothing new went out for them; make clean starts over)')
    finals = sum(r['status'] == 'FINAL' for r in new)
    delivered = cloud.wait_for_deliveries(finals, timeout_s=15.0)
    print(f'    deliveries:   {delivered} of {finals} new FINAL receipts delivered to their payers '
          f'({cloud.deliveries}, one JSON line each, addressed by the token hash)')
    if first_visit is not None and cloud.wait_for(
            [cloud.bucket / 'access' / f'{token_hash(first_visit.token).hex()}.json'], timeout_s=10.0 if new else 0):
        print(f'    receipt page: of visit {first_visit.access.visit_code}, where its shopper can dispute a line, '
              f'with the review UI running: http://127.0.0.1:8080/receipt/{first_visit.token}')


def _verdict(receipt: dict, expected: dict) -> str:
    if receipt['status'] == 'NEEDS_REVIEW' and receipt['reasons']:
        return REVIEW
    want = {line['sku']: line['quantity'] for line in expected['lines']}
    # A product sold by weight is charged for the grams the load cells measured, which
    # may be this far from what its pieces weighed (their noise, a level on each side).
    slack = sum(-(-WEIGHED_GRAMS_SLACK * line['unit_price_cents'] // 1000)
                for line in expected['lines'] if line['grams'])
    exact = items_of(receipt) == want and abs(receipt['total_cents'] - expected['total_cents']) <= slack
    return MATCH if exact else WRONG


def _id_mark(line: dict) -> str:
    """An issued age-restricted line says whether its ID was checked."""
    if 'id_verified' not in line or not line['age_restricted']:
        return ''
    return ' ID ok' if line['id_verified'] else ' ID not ok'


def _print_receipt(receipt, party, expected, verdict, exit_to_receipt_s, currency) -> None:
    print(f'\nreceipt {receipt["receipt_id"]}  party {party}  {receipt["status"]}  '
          f'confidence {receipt["confidence"]:.2f}  ({exit_to_receipt_s:.2f} s after exit)  -> {verdict}')

    def rows(document):
        found = [f'{line["quantity"]} x {line["sku"]:<10} {format_cents(line["line_total_cents"], currency):>10}'
                 + (f' ({line["grams"]} g)' if line['grams'] else '') + _id_mark(line) for line in document['lines']]
        return found + [f'  {saving["name"][:22]:<22} {format_cents(-saving["cents"], currency):>10}'
                        for saving in document['savings']]
    got, want = rows(receipt), rows(expected)
    print(f'    {"issued":<36} | ground truth')
    for i in range(max(len(got), len(want))):
        print(f'    {got[i] if i < len(got) else "":<36} | {want[i] if i < len(want) else ""}')
    print(f'    {"total " + format_cents(receipt["total_cents"], currency):<36} | '
          f'total {format_cents(expected["total_cents"], currency)}')
    for reason in receipt['reasons']:
        print(f'    review: {reason["code"]} {reason["event_id"]} {reason["detail"]}')
    sys.stdout.flush()
