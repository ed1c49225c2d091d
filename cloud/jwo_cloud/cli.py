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
    from jwo_cloud.review import add_reviewer
    path = args.reviewers or _home(args) / 'reviewers.json'
    add_reviewer(path, args.name, _read_password(args))
    print(f'reviewer {args.name} added to {path}')
    return 0


def cmd_init(args) -> int:
    from jwo_cloud.keys import enroll, keygen
    from jwo_cloud.review import add_reviewer
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
        add_reviewer(reviewers, args.reviewer, password)
    (home / 'bucket').mkdir(parents=True, exist_ok=True)
    print(f'cloud home:   {home}  (ingest key keys/ingest.key_secret, enrolled/, bucket/)')
    print(f'store home:   {edge}  (keys/store.key_secret, keys/ingest.key)')
    print(f'store {args.store_id!r} enrolled: {home / "enrolled" / (args.store_id + ".key")}')
    if password:
        print(f'reviewer:     {args.reviewer} / {password}  (in {reviewers})')
    return 0


def cmd_serve(args) -> int:
    from jwo_cloud import layout
    from jwo_cloud.ingest import Ingest
    from jwo_cloud.keys import enrolled_keys
    from jwo_cloud.review_web import ReviewApp, ReviewServer
    home = _home(args)
    secret_file = Path(args.server_key or home / 'keys' / 'ingest.key_secret')
    if not secret_file.exists():
        print(f'error: {secret_file} missing: run `jwo-cloud init` (or keygen) first',
              file=sys.stderr)
        return 2
    bucket = _bucket(args)
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
        app = ReviewApp(bucket, args.reviewers or home / 'reviewers.json',
                        secret_path.read_bytes(), counters=ingest.counters)
        server = ReviewServer(app, host or '127.0.0.1', int(port))
        server.start()
    stores = ', '.join(enrolled_keys(enrolled)) or 'none yet (jwo-cloud enroll)'
    print(f'ingest:        {endpoint}  (CURVE, server key {secret_file.with_suffix(".key")}; '
          f'enrolled stores: {stores})')
    print(f'receipts:      {bucket.location(layout.RECEIPTS)}')
    print(f'clips:         {bucket.location(layout.CLIPS)}')
    print(f'review queue:  {bucket.location(layout.PENDING_PREFIX)}')
    print(f'final:         {bucket.location(layout.FINAL)}')
    if server is not None:
        print(f'review UI:     {server.url}')
    sys.stdout.flush()
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    last = None
    while not done.wait(10.0):
        values = ingest.counters()
        if values != last:
            logging.getLogger('jwo_cloud').info('ingest counters: %s', json.dumps(values))
            last = values
    if server is not None:
        server.stop()
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
    from jwo_cloud import review
    bucket = _bucket(args)
    if args.review_command == 'list':
        visits = review.pending(bucket)
        if args.json:
            print(json.dumps(visits, indent=1))
        for v in [] if args.json else visits:
            print(f'{v["store_id"]}\t{v["receipt_id"]}\t{v["visit_code"]}\t'
                  f'{",".join(v["reasons"])}\t{v["total_cents"]}')
        return 0
    try:
        if args.review_command == 'show':
            print(json.dumps(review.load_visit(bucket, args.store_id, args.receipt_id), indent=1))
            return 0
        lines = None
        if args.action == 'correct':
            visit = review.load_visit(bucket, args.store_id, args.receipt_id)
            lines = [dict(line) for line in (visit['receipt'] or {}).get('lines', [])]
            for setting in args.set or []:
                sku, _, quantity = setting.partition('=')
                matching = [line for line in lines if line['sku'] == sku]
                if not matching:
                    raise review.InvalidDecision(f'--set {setting}: no line with sku {sku}')
                for line in matching:
                    line['quantity'] = quantity
            for addition in args.add or []:
                parts = addition.split(':', 3)
                if len(parts) < 3:
                    raise review.InvalidDecision(f'--add {addition}: SKU:QTY:UNIT_CENTS[:NAME]')
                lines.append({'sku': parts[0], 'quantity': parts[1], 'unit_price_cents': parts[2],
                              'name': parts[3] if len(parts) > 3 else ''})
        events = dict(e.split('=', 1) for e in args.event or [])
        final = review.decide(bucket, args.store_id, args.receipt_id, args.reviewer,
                              args.action, lines, events, args.note)
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

    sub = commands.add_parser('review', help='scripted review: list, show, decide')
    review_commands = sub.add_subparsers(dest='review_command', metavar='ACTION', required=True)
    listing = review_commands.add_parser('list', help='visits waiting for review')
    _add_bucket_args(listing)
    listing.add_argument('--json', action='store_true')
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
    decide.add_argument('--set', action='append', metavar='SKU=QTY',
                        help='with --correct: the quantity of a proposed line (0 drops it)')
    decide.add_argument('--add', action='append', metavar='SKU:QTY:UNIT_CENTS[:NAME]',
                        help='with --correct: an extra line')
    decide.add_argument('--event', action='append', metavar='EVENT_ID=DECISION',
                        help='this_visit | other_visit | no_item')
    decide.add_argument('--note', default='')
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
