"""Entry/exit gate logic: the gate line protocol and the open visits of one gate.

No rclpy here. The gate node feeds lines with their stamps (int ns) and maps the
results to jwo/GateEvent.

Line protocol (serial, stdin and the simulator), one command per line, keywords in
any case, fields separated by any whitespace:

    ENTRY <qr|badge|card> <token> [<group_size>]   a credential opens a visit
    EXIT                                           a walk-out (no credential)
    EXIT <qr|badge|card> <token>                   a tap-out

Privacy: nothing that identifies a person ever leaves this module. Every ENTRY gets a
fresh random visit code; a credential token is kept only as a salted HMAC-SHA256
(per-gate salt) that maps an open visit, so a tap-out finds its visit code, and is
forgotten when the visit closes or expires. Error messages describe the shape of a
bad line and never repeat its content.

Live cart: every ENTRY also issues the visit a secret access token (core.visit_access)
for the shopper's live running receipt. The token leaves only in that ENTRY's result,
for the handoff to the shopper; the gate keeps, and the node publishes, its SHA-256.

Restarts: ``export_visits()`` gives the open visits as plain values (code, group size,
opening stamp, the credential hash and the access token's hash of each: no token) for
the node's state file, and ``restore_visits()`` reopens them in a restarted gate, which
must have the same salt for a tap-out to find its visit.
"""
import base64
import hashlib
import hmac
import secrets
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable, Iterator, Optional

from jwo_nodes.core import visit_access

# Same values as the constants of jwo/GateEvent.
ENTRY = 0
EXIT = 1
CREDENTIAL_NONE = 0
CREDENTIAL_APP_QR = 1
CREDENTIAL_BADGE = 2
CREDENTIAL_CARD_TOKEN = 3
CREDENTIAL_KINDS = {'qr': CREDENTIAL_APP_QR, 'badge': CREDENTIAL_BADGE,
                    'card': CREDENTIAL_CARD_TOKEN}

MAX_GROUP_SIZE = 20
# How often a gate says how far it has published (GateStatus): fusion acts on a weight
# change only once every gate has reported past it.
STATUS_PERIOD_S = 0.2
MAX_TOKEN_CHARS = 256
MAX_LINE_CHARS = 512
SALT_BYTES = 32
# HMAC message of the salt's check value: tells a state file hashed under another salt.
_SALT_CHECK = b'jwo gate salt check'

# Outcomes of one line; every one but EVENT and BLANK is also a counter name.
EVENT = 'event'
BLANK = 'blank'
MALFORMED = 'malformed_reading'
OUT_OF_ORDER = 'out_of_order'
DEBOUNCED = 'debounced'
DUPLICATE_ENTRY = 'duplicate_entry'
EXIT_WITHOUT_ENTRY = 'exit_without_entry'
VISIT_EXPIRED = 'visit_expired'
COUNTER_NAMES = ('lines', 'entries', 'exits', MALFORMED, OUT_OF_ORDER, DEBOUNCED,
                 DUPLICATE_ENTRY, EXIT_WITHOUT_ENTRY, VISIT_EXPIRED, 'open_visits')


class GateLineError(ValueError):
    """A line that is not in the gate protocol. The message never holds a token."""


@dataclass(frozen=True)
class GateCommand:
    """One parsed line. The token is left out of repr so it cannot reach a log."""

    direction: int
    credential_kind: int = CREDENTIAL_NONE
    token: str = field(default='', repr=False)
    group_size: int = 1


def _is_token(text: str) -> bool:
    return 0 < len(text) <= MAX_TOKEN_CHARS and all('!' <= c <= '~' for c in text)


def parse_line(line: str) -> Optional[GateCommand]:
    """Parses one protocol line; None for a blank line; GateLineError otherwise."""
    if len(line) > MAX_LINE_CHARS:
        raise GateLineError(f'line too long ({len(line)} characters, at most {MAX_LINE_CHARS})')
    fields = line.split()
    if not fields:
        return None
    command = fields[0].upper()
    if command not in ('ENTRY', 'EXIT'):
        raise GateLineError(f'unknown command word ({len(fields[0])} characters); '
                            'expected ENTRY or EXIT')
    if command == 'EXIT' and len(fields) == 1:
        return GateCommand(direction=EXIT)
    if command == 'EXIT' and len(fields) != 3:
        raise GateLineError(f'EXIT takes no fields or <kind> <token>, got {len(fields) - 1} fields')
    if command == 'ENTRY' and len(fields) not in (3, 4):
        raise GateLineError(f'ENTRY takes <kind> <token> [<group_size>], '
                            f'got {len(fields) - 1} fields')
    kind = CREDENTIAL_KINDS.get(fields[1].lower())
    if kind is None:
        raise GateLineError(f'{command}: unknown credential kind; expected one of '
                            + ', '.join(CREDENTIAL_KINDS))
    if not _is_token(fields[2]):
        raise GateLineError(f'{command}: the token must be 1 to {MAX_TOKEN_CHARS} '
                            'visible ASCII characters')
    group_size = 1
    if len(fields) == 4:
        text = fields[3]
        if not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= MAX_GROUP_SIZE:
            raise GateLineError(f'ENTRY: group size must be a whole number from 1 to '
                                f'{MAX_GROUP_SIZE}')
        group_size = int(text)
    return GateCommand(direction=ENTRY if command == 'ENTRY' else EXIT,
                       credential_kind=kind, token=fields[2], group_size=group_size)


@dataclass(frozen=True)
class GateEventData:
    """What the node publishes as jwo/GateEvent. No identity in here."""

    event_id: str
    gate_id: str
    stamp_ns: int
    direction: int
    # Empty on a walk-out EXIT: fusion resolves it from shopper positions.
    visit_code: str
    credential_kind: int
    # ENTRY: people entering on the credential. Tap-out EXIT: the visit's group size.
    # Walk-out EXIT: 1 (one person passing).
    group_size: int


@dataclass(frozen=True)
class GateResult:
    outcome: str
    event: Optional[GateEventData] = None
    # Why a line was dropped, for the log; never holds a token.
    problem: str = ''
    # ENTRY: the visit's live-cart token, to hand to the shopper (the only copy).
    access: Optional[visit_access.AccessGrant] = None


@dataclass
class _Visit:
    code: str
    group_size: int
    opened_ns: int
    # Of its ENTRY event, re-offered after a restart ('' in state saved without it).
    event_id: str = ''
    credential_kind: int = CREDENTIAL_NONE
    # SHA-256 of its live-cart token, published again after a restart (b'' in state
    # saved without it).
    access_hash: bytes = b''


def _saved_visit(item) -> tuple:
    """(credential hash, _Visit) of one item of export_visits(); ValueError when it is
    malformed."""
    try:
        key = bytes.fromhex(item['credential_hash'])
        code, group_size, opened_ns = item['code'], item['group_size'], item['opened_ns']
        event_id, kind = item.get('event_id', ''), item.get('credential_kind', CREDENTIAL_NONE)
        access_hash = bytes.fromhex(item.get('access_hash', ''))
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        raise ValueError(f'malformed saved visit ({type(error).__name__})') from error
    whole = all(isinstance(v, int) and not isinstance(v, bool) for v in (group_size, opened_ns, kind))
    digest_size = hashlib.sha256().digest_size
    if len(key) != digest_size or not isinstance(code, str) or not whole \
            or not isinstance(event_id, str) or not 1 <= group_size <= MAX_GROUP_SIZE \
            or len(access_hash) not in (0, digest_size):
        raise ValueError('malformed saved visit')
    return key, _Visit(code, group_size, opened_ns, event_id, kind, access_hash)


def new_visit_code(random_bytes: Callable[[int], bytes] = secrets.token_bytes) -> str:
    """'v-' and 10 base32 characters (50 random bits)."""
    return 'v-' + base64.b32encode(random_bytes(7)).decode('ascii')[:10].lower()


class GateLogic:
    """The open visits of one gate, keyed by salted credential hashes.

    Decides from the stamps only: a stamp older than the newest one seen is dropped
    (out of order); the same credential within ``debounce_ns`` of its previous scan
    is a double scan (the window slides with every scan); an open visit older than
    ``max_visit_ns`` is forgotten (its shopper left without tapping out).
    """

    def __init__(self, gate_id: str, *, debounce_ns: int = 3_000_000_000,
                 max_visit_ns: int = 4 * 3600 * 1_000_000_000, salt: Optional[bytes] = None,
                 random_bytes: Callable[[int], bytes] = secrets.token_bytes, first_seq: int = 1):
        if debounce_ns < 0 or max_visit_ns <= 0:
            raise ValueError('debounce_ns must be >= 0 and max_visit_ns > 0')
        self.gate_id = gate_id
        self.debounce_ns = int(debounce_ns)
        self.max_visit_ns = int(max_visit_ns)
        self._salt = salt if salt else random_bytes(SALT_BYTES)
        self._random_bytes = random_bytes
        self._seq = int(first_seq)
        self._last_stamp_ns: Optional[int] = None
        # Credential hash -> open visit, in opening order (stamps never go back).
        self._visits: 'OrderedDict[bytes, _Visit]' = OrderedDict()
        self._codes = set()
        # Credential hash -> stamp of its latest scan, oldest first.
        self._last_scan: 'OrderedDict[bytes, int]' = OrderedDict()
        self.counts = {name: 0 for name in COUNTER_NAMES}
        self._revision = 0

    def __repr__(self) -> str:
        return f'GateLogic({self.gate_id!r}, open_visits={len(self._visits)})'

    @property
    def open_visits(self) -> int:
        return len(self._visits)

    @property
    def revision(self) -> int:
        """Grows whenever a visit opens, closes or expires: export_visits() changed."""
        return self._revision

    def export_visits(self) -> dict:
        """The open visits as JSON values, oldest first: code, group size, opening
        stamp, credential hash and access token hash (hex) of each, with a check value
        of the salt (not the salt). No token: a credential hash cannot be turned back
        into one without the salt, an access hash not at all."""
        return {'salt_check': self._salt_check(),
                'visits': [{'credential_hash': key.hex(), 'code': visit.code,
                            'group_size': visit.group_size, 'opened_ns': visit.opened_ns,
                            'event_id': visit.event_id, 'credential_kind': visit.credential_kind,
                            'access_hash': visit.access_hash.hex()}
                           for key, visit in self._visits.items()]}

    def entry_events(self) -> list:
        """The ENTRY events of the open visits, as first published (same ids): what a
        restarted gate offers again to consumers that start after it (they drop the
        ids they hold)."""
        return [GateEventData(event_id=visit.event_id, gate_id=self.gate_id, stamp_ns=visit.opened_ns,
                              direction=ENTRY, visit_code=visit.code, credential_kind=visit.credential_kind,
                              group_size=visit.group_size)
                for visit in self._visits.values() if visit.event_id]

    def accesses(self) -> list:
        """The VisitAccess of the open visits (token hashes), as first published: what a
        restarted gate offers again, so a live cart service that starts after it still
        opens the carts of the shoppers inside."""
        return [visit_access.VisitAccess(self.gate_id, visit.code, visit.opened_ns, visit.access_hash)
                for visit in self._visits.values() if visit.access_hash]

    def restore_visits(self, document: dict) -> int:
        """Reopens the visits of export_visits() (after a restart, before any line);
        returns how many. ValueError, with nothing restored, when the document is
        malformed or was hashed under another salt (no tap-out could match it)."""
        if self._visits or self._last_stamp_ns is not None:
            raise ValueError('visits are restored before the first line')
        if not isinstance(document, dict) or document.get('salt_check') != self._salt_check():
            raise ValueError('the saved visits were hashed under another salt')
        visits = document.get('visits')
        if not isinstance(visits, list):
            raise ValueError('saved visits must be a list')
        restored = [_saved_visit(item) for item in visits]
        if len({key for key, _ in restored}) != len(restored) or \
                len({visit.code for _, visit in restored}) != len(restored):
            raise ValueError('saved visits repeat a credential or a code')
        for key, visit in sorted(restored, key=lambda kv: kv[1].opened_ns):
            self._visits[key] = visit
            self._codes.add(visit.code)
        self.counts['open_visits'] = len(self._visits)
        self._revision += 1
        return len(restored)

    def _salt_check(self) -> str:
        return hmac.new(self._salt, _SALT_CHECK, hashlib.sha256).hexdigest()[:16]

    def credential_hash(self, credential_kind: int, token: str) -> bytes:
        """HMAC-SHA256 of kind and token under this gate's salt."""
        message = bytes([credential_kind]) + token.encode('utf-8')
        return hmac.new(self._salt, message, hashlib.sha256).digest()

    def feed(self, line: str, stamp_ns: int) -> GateResult:
        """One line of the gate protocol, stamped when the gate produced it."""
        try:
            command = parse_line(line)
        except GateLineError as error:
            self.counts['lines'] += 1
            return self._drop(MALFORMED, str(error))
        if command is None:
            return GateResult(BLANK)
        self.counts['lines'] += 1
        return self.handle(command, stamp_ns)

    def handle(self, command: GateCommand, stamp_ns: int) -> GateResult:
        if self._last_stamp_ns is not None and stamp_ns < self._last_stamp_ns:
            return self._drop(OUT_OF_ORDER, f'stamp {stamp_ns} is '
                              f'{(self._last_stamp_ns - stamp_ns) / 1e9:.3f} s older than '
                              'the newest line')
        self._last_stamp_ns = stamp_ns
        self._expire(stamp_ns)
        if command.direction == EXIT and command.credential_kind == CREDENTIAL_NONE:
            self.counts['exits'] += 1
            return self._event(stamp_ns, EXIT, '', CREDENTIAL_NONE, 1)
        key = self.credential_hash(command.credential_kind, command.token)
        previous = self._last_scan.pop(key, None)
        self._last_scan[key] = stamp_ns
        if previous is not None and stamp_ns - previous < self.debounce_ns:
            return self._drop(DEBOUNCED, 'same credential scanned again within '
                              f'{self.debounce_ns / 1e9:g} s')
        if command.direction == ENTRY:
            if key in self._visits:
                return self._drop(DUPLICATE_ENTRY, 'ENTRY for a credential that already '
                                  'has an open visit')
            code = new_visit_code(self._random_bytes)
            while code in self._codes:
                code = new_visit_code(self._random_bytes)
            issued = visit_access.grant(self.gate_id, code, stamp_ns)
            result = self._event(stamp_ns, ENTRY, code, command.credential_kind, command.group_size,
                                 access=issued)
            self._visits[key] = _Visit(code, command.group_size, stamp_ns, result.event.event_id,
                                       command.credential_kind, issued.access.token_sha256)
            self._codes.add(code)
            self._revision += 1
            self.counts['entries'] += 1
            self.counts['open_visits'] = len(self._visits)
            return result
        visit = self._visits.pop(key, None)
        if visit is None:
            return self._drop(EXIT_WITHOUT_ENTRY, 'tap-out with a credential that has no '
                              'open visit at this gate')
        self._codes.discard(visit.code)
        self._revision += 1
        self.counts['exits'] += 1
        self.counts['open_visits'] = len(self._visits)
        return self._event(stamp_ns, EXIT, visit.code, command.credential_kind,
                           visit.group_size)

    def _expire(self, stamp_ns: int) -> None:
        while self._visits:
            key, visit = next(iter(self._visits.items()))
            if stamp_ns - visit.opened_ns <= self.max_visit_ns:
                break
            del self._visits[key]
            self._codes.discard(visit.code)
            self._revision += 1
            self.counts[VISIT_EXPIRED] += 1
        self.counts['open_visits'] = len(self._visits)
        horizon = max(self.debounce_ns, 0)
        while self._last_scan:
            key, seen = next(iter(self._last_scan.items()))
            if stamp_ns - seen < horizon:
                break
            del self._last_scan[key]

    def _drop(self, outcome: str, problem: str) -> GateResult:
        self.counts[outcome] += 1
        return GateResult(outcome, problem=problem)

    def _event(self, stamp_ns, direction, code, kind, group_size, access=None) -> GateResult:
        event = GateEventData(event_id=f'{self.gate_id}/{self._seq}', gate_id=self.gate_id,
                              stamp_ns=stamp_ns, direction=direction, visit_code=code,
                              credential_kind=kind, group_size=group_size)
        self._seq += 1
        return GateResult(EVENT, event=event, access=access)


class LineAssembler:
    """Splits a byte stream (serial, stdin) into text lines of bounded length.

    feed(data) yields each complete line (str, '\\r' stripped, undecodable bytes
    replaced) and ``None`` for a line that grew past ``max_bytes`` (its bytes are
    dropped up to the next newline), so garbage without newlines cannot grow memory.
    """

    def __init__(self, max_bytes: int = MAX_LINE_CHARS):
        self.max_bytes = max_bytes
        self._buffer = bytearray()
        self._overflow = False

    def feed(self, data: bytes) -> Iterator[Optional[str]]:
        self._buffer.extend(data)
        while True:
            newline = self._buffer.find(b'\n')
            if newline < 0:
                if len(self._buffer) > self.max_bytes:
                    if not self._overflow:
                        self._overflow = True
                        yield None
                    self._buffer.clear()
                return
            raw = bytes(self._buffer[:newline])
            del self._buffer[:newline + 1]
            if self._overflow:
                self._overflow = False
                continue
            if len(raw) > self.max_bytes:
                yield None
                continue
            yield raw.rstrip(b'\r').decode('utf-8', errors='replace')
