"""The `jwo-cloud` command: keys and enrolment, the ingest and review UI, scripted review.

One machine, embedded defaults (no flags needed):

    jwo-cloud init      # ingest + store keys, store enrolled, a reviewer account
    jwo-cloud serve     # ingest on tcp://127.0.0.1:7700, bucket runs/cloud/bucket,
                        # review UI on http://127.0.0.1:8080/
    uplink_node --ros-args -p store_config:=config/stores/demo.yaml \\
        --params-file config/params/uplink_node.yaml

Cloud files live under --home (default $JWO_CLOUD_HOME or runs/cloud), the store's
under --edge-home (default runs/edge): each side only ever holds its own secret key.
"""
import argparse
import json
import logging
import os
import secrets
import shutil
import signal
import sys
import threading
import time
from pathlib import Path

DEFAULT_HOME = os.environ.get('JWO_CLOUD_HOME', 'runs/cloud')
DEFAULT_EDGE_HOME = 'runs/edge'
DEFAULT_HTTP = '127.0.0.1:8080'


def _home(args) -> Path:
    return Path(args.home)


def _bucket(args):
    from jwo_cloud.bucket import open_bucket
    return open_bucket(args.bucket or str(_home(args) / 'bucket'), args.endpoint_url)


def _add_bucket_args(parser) -> None:
    parser.add_argument('--home', default=DEFAULT_HOME,
                        help='cloud files: keys/, enrolled/, bucket/, spool/, reviewers.json '
                             '(default %(default)s)')
    parser.add_argument('--bucket', default='',
                        help='s3://name[/prefix] or a directory (default <home>/bucket)')
    parser.add_argument('--endpoint-url', default=os.environ.get('JWO_S3_ENDPOINT_URL'),
                        help='S3 endpoint of an S3-compatible store (MinIO ...); '
                             'default $JWO_S3_ENDPOINT_URL or AWS')


def cmd_keygen(args) -> int:
    from jwo_cloud.keys import keygen
    public, secret = keygen(args.dir, args.name, args.force)
    print(f'public key: {public} (give this one out)\nsecret key: {secret} (keep it here)')
    return 0


def cmd_enroll(args) -> int:
    from jwo_cloud.keys import enroll
    target = enroll(args.enrolled or _home(args) / 'enrolled', args.store_id, args.public_key)
    print(f'store {args.store_id} enrolled: {target}')
    return 0


def cmd_revoke(args) -> int:
    from jwo_cloud.keys import revoke
    done = revoke(args.enrolled or _home(args) / 'enrolled', args.store_id)
    print(f'store {args.store_id} ' + ('revoked' if done else 'was not enrolled'))
    return 0 if done else 1


def _read_password(args) -> str:
    if args.password_stdin:
        return sys.stdin.readline().rstrip('\n')
    if os.environ.get('JWO_REVIEWER_PASSWORD'):
        return os.environ['JWO_REVIEWER_PASSWORD']
    import getpass
    return getpass.getpass(f'password for {args.name}: ')


def cmd_reviewer_add(args) -> int:
    from jwo_cloud.review import Reviewers
    path = args.reviewers or _home(args) / 'reviewers.json'
    Reviewers(path).add(args.name, _read_password(args))
    print(f'reviewer {args.name} added to {path} (any session of theirs has ended)')
    return 0


def cmd_reviewer_remove(args) -> int:
    from jwo_cloud.review import Reviewers
    path = args.reviewers or _home(args) / 'reviewers.json'
    if not Reviewers(path).remove(args.name):
        print(f'error: no reviewer {args.name} in {path}', file=sys.stderr)
        return 1
    print(f'reviewer {args.name} removed from {path}; their sessions have ended')
    return 0


def cmd_init(args) -> int:
    from jwo_cloud.keys import enroll, keygen
    from jwo_cloud.review import Reviewers
    home, edge = Path(args.home), Path(args.edge_home)
    if not (home / 'keys' / 'ingest.key_secret').exists():
        keygen(home / 'keys', 'ingest')
    if not (edge / 'keys' / 'store.key_secret').exists():
        keygen(edge / 'keys', 'store')
    shutil.copyfile(home / 'keys' / 'ingest.key', edge / 'keys' / 'ingest.key')
    enroll(home / 'enrolled', args.store_id, edge / 'keys' / 'store.key')
    reviewers = home / 'reviewers.json'
    password = None
    if not reviewers.exists():
        password = os.environ.get('JWO_REVIEWER_PASSWORD') or secrets.token_urlsafe(9)
        Reviewers(reviewers).add(args.reviewer, password)
    (home / 'bucket').mkdir(parents=True, exist_ok=True)
    print(f'cloud home:   {home}  (ingest key keys/ingest.key_secret, enrolled/, bucket/)')
    print(f'store home:   {edge}  (keys/store.key_secret, keys/ingest.key)')
    print(f'store {args.store_id!r} enrolled: {home / "enrolled" / (args.store_id + ".key")}')
    if password:
        print(f'reviewer:     {args.reviewer} / {password}  (in {reviewers})')
    return 0


def _delivery_adapter(args):
    """The adapter the final receipts go out through, None when none is configured
    (they wait in the bucket's delivery outbox)."""
    from jwo_cloud.delivery import DeliveryConfigError, FileAdapter, WebhookAdapter, read_secret
    if args.delivery_webhook:
        if not args.delivery_secret_file:
            raise DeliveryConfigError('--delivery-webhook needs --delivery-secret-file')
        return WebhookAdapter(args.delivery_webhook, read_secret(args.delivery_secret_file))
    if args.delivery_secret_file:
        raise DeliveryConfigError('--delivery-secret-file is for --delivery-webhook')
    return FileAdapter(args.delivery_file) if args.delivery_file else None


def cmd_serve(args) -> int:
    from jwo_cloud import layout, review_queue
    from jwo_cloud.delivery import Deliverer, DeliveryConfigError, DeliverySettings
    from jwo_cloud.ingest import Ingest
    from jwo_cloud.keys import enrolled_keys
    from jwo_cloud.review_web import ReviewServer, ReviewSettings, create_app
    home = _home(args)
    secret_file = Path(args.server_key or home / 'keys' / 'ingest.key_secret')
    if not secret_file.exists():
        print(f'error: {secret_file} missing: run `jwo-cloud init` (or keygen) first',
              file=sys.stderr)
        return 2
    try:
        adapter = _delivery_adapter(args)
    except DeliveryConfigError as error:
        print(f'error: {error}', file=sys.stderr)
        return 2
    bucket = _bucket(args)
    if bucket.head(layout.QUEUE_INDEX) is None:
        # A bucket of an earlier jwo, or a new one: the index from the queue entries.
        review_queue.rebuild(bucket)
    enrolled = Path(args.enrolled or home / 'enrolled')
    ingest = Ingest(bucket, secret_file, enrolled, home / 'spool', bind=args.bind,
                    workers=args.workers)
    endpoint = ingest.start()
    server = None
    if not args.no_ui:
        secret_path = home / 'web_secret'
        if not secret_path.exists():
            old = os.umask(0o077)
            try:
                secret_path.write_bytes(secrets.token_bytes(32))
            finally:
                os.umask(old)
        host, _, port = args.http.rpartition(':')
        settings = ReviewSettings(claim_s=args.claim_s, clip_margin_s=args.clip_margin_s,
                                  secure_cookies=not args.insecure_cookies)
        app = create_app(bucket, args.reviewers or home / 'reviewers.json',
                         secret_path.read_bytes(), settings, counters=ingest.counters)
        server = ReviewServer(app, host or '127.0.0.1', int(port))
        server.start()
    deliverer = None
    if adapter is not None:
        deliverer = Deliverer(bucket, adapter, DeliverySettings(backoff_max_s=args.delivery_backoff_max_s))
        deliverer.start()
    stores = ', '.join(enrolled_keys(enrolled)) or 'none yet (jwo-cloud enroll)'
    print(f'ingest:        {endpoint}  (CURVE, server key {secret_file.with_suffix(".key")}; '
          f'enrolled stores: {stores})')
    print(f'receipts:      {bucket.location(layout.RECEIPTS)}')
    print(f'clips:         {bucket.location(layout.CLIPS)}')
    print(f'review queue:  {bucket.location(layout.PENDING_PREFIX)}')
    print(f'final:         {bucket.location(layout.FINAL)}')
    print(f'deliveries:    {bucket.location(layout.DELIVERY_PENDING)} -> '
          + (f'{adapter.name} {getattr(adapter, "url", "") or adapter.path}' if adapter
             else 'nowhere yet (--delivery-webhook or --delivery-file)'))
    if server is not None:
        print(f'review UI:     {server.url}')
    sys.stdout.flush()
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    last = None
    while not done.wait(10.0):
        values = ingest.counters()
        if deliverer is not None:
            values.update({f'delivery_{name}': n for name, n in deliverer.counters.items()})
        if values != last:
            logging.getLogger('jwo_cloud').info('ingest counters: %s', json.dumps(values))
            last = values
    if server is not None:
        server.stop()
    if deliverer is not None:
        deliverer.stop()
    ingest.stop()
    print(f'stopped; ingest counters: {json.dumps(ingest.counters())}')
    return 0


def cmd_uplink(args) -> int:
    """Drains a store outbox to the ingest without ROS (what uplink_node runs inside)."""
    from jwo_cloud.uplink import UplinkSender
    from jwo_nodes.core.outbox import Outbox
    edge = Path(args.edge_home)
    outbox = Outbox(args.outbox or edge / 'outbox.sqlite3')
    if args.list_rejected or args.requeue_rejected:
        for item_id, error in outbox.rejected(10000):
            print(f'{item_id}\t{error}')
        if args.requeue_rejected:
            print(f'{outbox.requeue_rejected()} rejected items are pending again')
        outbox.close()
        return 0
    sender = UplinkSender(outbox, args.endpoint, args.store_key or edge / 'keys' / 'store.key_secret',
                          args.ingest_key or edge / 'keys' / 'ingest.key',
                          chunk_bytes=args.chunk_bytes, ack_timeout_s=args.ack_timeout_s,
                          backoff_min_s=args.backoff_min_s, backoff_max_s=args.backoff_max_s,
                          clip_root=args.clip_root, clip_wait_s=args.clip_wait_s)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    sender.start()
    print(f'uplink: {outbox.path} -> {args.endpoint} ({outbox.counts()["pending"]} pending)',
          flush=True)
    while not done.wait(0.2):
        if args.exit_when_empty and outbox.counts()['pending'] == 0 and not sender.in_flight():
            break
    sender.stop()
    print(f'uplink stopped: {json.dumps(sender.counters)} outbox {json.dumps(outbox.counts())}',
          flush=True)
    outbox.close()
    return 0


def cmd_review(args) -> int:
    from dataclasses import asdict

    from jwo_cloud import review, review_queue
    bucket = _bucket(args)
    if args.review_command == 'list':
        wanted = review_queue.QueueFilter(args.store, args.reason)
        visits = [e for e in review_queue.read(bucket).ordered()
                  if wanted.admits(e, time.time_ns())]
        if args.json:
            print(json.dumps([e.document() for e in visits], indent=1))
        for e in [] if args.json else visits:
            print(f'{e.store_id}\t{e.receipt_id}\t{e.visit_code}\t{",".join(e.reasons)}\t'
                  f'{e.total_cents}\t{e.claim.reviewer if e.claim else ""}')
        return 0
    if args.review_command == 'reindex':
        print(f'{review_queue.rebuild(bucket)} visits waiting for review')
        return 0
    if args.review_command == 'export':
        rows = review.labelled_rows(bucket)
        text = ''.join(json.dumps(row, sort_keys=True) + '\n' for row in rows)
        if args.out == '-':
            sys.stdout.write(text)
        else:
            Path(args.out).write_text(text)
            print(f'{len(rows)} rows ({sum(r["kind"] == "visit" for r in rows)} visits) '
                  f'written to {args.out}', file=sys.stderr)
        return 0
    if args.review_command == 'figures':
        figures = review.figures(review.labelled_rows(bucket))
        print(json.dumps(asdict(figures), indent=1))
        return 0
    try:
        if args.review_command == 'show':
            visit = review.load_visit(bucket, args.store_id, args.receipt_id)
            print(json.dumps(asdict(visit), indent=1))
            return 0
        visit = review.load_visit(bucket, args.store_id, args.receipt_id, with_clips=False)
        choices = {event_id: review.EventChoice.parse(text, visit.visit_code)
                   for event_id, _, text in (e.partition('=') for e in args.event or [])}
        quantities = None
        if args.action == 'correct':
            quantities = review.rechoose(visit.proposed_quantities(), visit.events,
                                         visit.proposed_choices(), choices, visit.visit_code)
            for setting in args.set or []:
                sku, _, quantity = setting.partition('=')
                quantities[sku] = int(quantity)
        final = review.decide(bucket, visit, args.reviewer, quantities, choices, args.note)
    except review.AlreadySettled as error:
        print(f'error: {error}', file=sys.stderr)
        return 3
    except review.NotPending as error:
        print(f'error: {error}', file=sys.stderr)
        return 4
    except (review.InvalidDecision, ValueError) as error:
        print(f'error: {error}', file=sys.stderr)
        return 2
    print(json.dumps(final, indent=1))
    return 0


def build_parser() -> argparse.ArgumentParser:
    from jwo_cloud.delivery import DeliverySettings
    parser = argparse.ArgumentParser(prog='jwo-cloud', description='jwo cloud: ingest, bucket, review')
    parser.add_argument('-v', '--verbose', action='store_true')
    commands = parser.add_subparsers(dest='command', metavar='COMMAND', required=True)

    sub = commands.add_parser('keygen', help='make a CURVE key pair (<name>.key, <name>.key_secret)')
    sub.add_argument('--dir', required=True)
    sub.add_argument('--name', required=True)
    sub.add_argument('--force', action='store_true')
    sub.set_defaults(run=cmd_keygen)

    sub = commands.add_parser('enroll', help="allow a store's public key at the ingest")
    sub.add_argument('store_id')
    sub.add_argument('public_key', help="the store's <name>.key file")
    sub.add_argument('--home', default=DEFAULT_HOME)
    sub.add_argument('--enrolled', help='enrolled-keys directory (default <home>/enrolled)')
    sub.set_defaults(run=cmd_enroll)

    sub = commands.add_parser('revoke', help='remove an enrolled store key')
    sub.add_argument('store_id')
    sub.add_argument('--home', default=DEFAULT_HOME)
    sub.add_argument('--enrolled')
    sub.set_defaults(run=cmd_revoke)

    sub = commands.add_parser('reviewer-add', help='add or reset a reviewer account')
    sub.add_argument('name')
    sub.add_argument('--home', default=DEFAULT_HOME)
    sub.add_argument('--reviewers', help='reviewers file (default <home>/reviewers.json)')
    sub.add_argument('--password-stdin', action='store_true')
    sub.set_defaults(run=cmd_reviewer_add)

    sub = commands.add_parser('reviewer-remove', help='remove a reviewer (their sessions end at once)')
    sub.add_argument('name')
    sub.add_argument('--home', default=DEFAULT_HOME)
    sub.add_argument('--reviewers', help='reviewers file (default <home>/reviewers.json)')
    sub.set_defaults(run=cmd_reviewer_remove)

    sub = commands.add_parser('init', help='one-machine set-up: keys, enrolment, a reviewer')
    sub.add_argument('--home', default=DEFAULT_HOME)
    sub.add_argument('--edge-home', default=DEFAULT_EDGE_HOME)
    sub.add_argument('--store-id', default='demo')
    sub.add_argument('--reviewer', default='reviewer')
    sub.set_defaults(run=cmd_init)

    sub = commands.add_parser('serve', help='run the ingest and the review UI')
    _add_bucket_args(sub)
    sub.add_argument('--bind', default='tcp://127.0.0.1:7700')
    sub.add_argument('--http', default=DEFAULT_HTTP, help='review UI host:port (default %(default)s)')
    sub.add_argument('--no-ui', action='store_true', help='ingest only')
    sub.add_argument('--server-key', help='default <home>/keys/ingest.key_secret')
    sub.add_argument('--enrolled', help='default <home>/enrolled')
    sub.add_argument('--reviewers', help='default <home>/reviewers.json')
    sub.add_argument('--workers', type=int, default=4)
    sub.add_argument('--claim-s', type=float, default=300.0,
                     help='a reviewer holds a visit this long unless renewed (default %(default)s)')
    sub.add_argument('--clip-margin-s', type=float, default=3.0,
                     help="clip_node's margin_s: the clips start this long before the event "
                          '(default %(default)s)')
    sub.add_argument('--insecure-cookies', action='store_true',
                     help='session cookie without Secure: only for plain HTTP off this machine, '
                          'on a network you trust (put a TLS proxy in front instead)')
    delivery = sub.add_mutually_exclusive_group()
    delivery.add_argument('--delivery-webhook', metavar='URL',
                          help='POST each final receipt (each version) to this URL, signed with '
                               'HMAC-SHA256 (X-Jwo-Signature)')
    delivery.add_argument('--delivery-file', metavar='PATH',
                          help='append each final receipt (each version) to this file as a JSON line')
    sub.add_argument('--delivery-secret-file', metavar='PATH',
                     help="the webhook's shared HMAC secret (at least 16 bytes)")
    sub.add_argument('--delivery-backoff-max-s', type=float, default=DeliverySettings.backoff_max_s,
                     help='longest wait between tries of a failing delivery (default %(default)s)')
    sub.set_defaults(run=cmd_serve)

    sub = commands.add_parser('uplink', help="send a store's outbox to the ingest (no ROS)")
    sub.add_argument('--edge-home', default=DEFAULT_EDGE_HOME)
    sub.add_argument('--outbox', help='default <edge-home>/outbox.sqlite3')
    sub.add_argument('--endpoint', default='tcp://127.0.0.1:7700')
    sub.add_argument('--store-key', help='default <edge-home>/keys/store.key_secret')
    sub.add_argument('--ingest-key', help='default <edge-home>/keys/ingest.key')
    sub.add_argument('--clip-root', default='')
    sub.add_argument('--clip-wait-s', type=float, default=30.0,
                     help='wait this long for a clip file not written yet (default %(default)s)')
    sub.add_argument('--chunk-bytes', type=int, default=1 << 20)
    sub.add_argument('--ack-timeout-s', type=float, default=10.0)
    sub.add_argument('--backoff-min-s', type=float, default=0.2)
    sub.add_argument('--backoff-max-s', type=float, default=30.0)
    sub.add_argument('--exit-when-empty', action='store_true')
    sub.add_argument('--list-rejected', action='store_true',
                     help='print the items the ingest rejected (kept in the outbox) and exit')
    sub.add_argument('--requeue-rejected', action='store_true',
                     help='make rejected items pending again (the cause was fixed) and exit')
    sub.set_defaults(run=cmd_uplink)

    sub = commands.add_parser('review', help='scripted review: list, show, decide, figures')
    review_commands = sub.add_subparsers(dest='review_command', metavar='ACTION', required=True)
    listing = review_commands.add_parser('list', help='visits waiting for review (the index)')
    _add_bucket_args(listing)
    listing.add_argument('--json', action='store_true')
    listing.add_argument('--store', default='', help='only this store')
    listing.add_argument('--reason', default='', help='only visits with this reason')
    show = review_commands.add_parser('show', help='one visit as JSON')
    _add_bucket_args(show)
    show.add_argument('store_id')
    show.add_argument('receipt_id')
    decide = review_commands.add_parser('decide', help='settle a visit')
    _add_bucket_args(decide)
    decide.add_argument('store_id')
    decide.add_argument('receipt_id')
    decide.add_argument('--reviewer', required=True)
    group = decide.add_mutually_exclusive_group(required=True)
    group.add_argument('--confirm', dest='action', action='store_const', const='confirm')
    group.add_argument('--correct', dest='action', action='store_const', const='correct')
    decide.add_argument('--event', action='append', metavar='EVENT_ID=WHO[:SKU:QTY]',
                        help='what an event was: WHO is this, nobody or a visit code; with '
                             '--correct the receipt follows it')
    decide.add_argument('--set', action='append', metavar='SKU=QTY',
                        help='with --correct: the count of a product on the receipt (0 drops '
                             'it); any product of the store, priced from the receipt or catalogue')
    decide.add_argument('--note', default='')
    reindex = review_commands.add_parser('reindex', help="rebuild the queue's index from the entries")
    _add_bucket_args(reindex)
    export = review_commands.add_parser('export', help='the decisions as labelled data (JSON lines)')
    _add_bucket_args(export)
    export.add_argument('--out', default='-', help='file to write (default stdout)')
    figures = review_commands.add_parser('figures', help='time to settle, agreement with fusion')
    _add_bucket_args(figures)
    sub.set_defaults(run=cmd_review)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format='%(asctime)s %(levelname)s %(name)s: %(message)s')
    from jwo_cloud.keys import KeyFileError
    from jwo_cloud.review import ReviewError
    try:
        return args.run(args)
    except (KeyFileError, ReviewError, OSError, ValueError) as error:
        print(f'error: {error}', file=sys.stderr)
        return 2


if __name__ == '__main__':
    sys.exit(main())
