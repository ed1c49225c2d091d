"""The serial line protocol of HX711 load-cell boards, and its calibration to grams.

No rclpy here. One line per sample, ASCII, ended by "\\n" (a "\\r" before it is
ignored), at most MAX_LINE_BYTES bytes:

    $W,<seq>,<raw_0>,<raw_1>,...,<raw_n-1>*<CC>

- ``seq``: decimal 0..65535, one more on every line the board sends, 65535 -> 0
  (0 again after the board restarts). A gap of up to ``max_gap`` means lost lines
  (counted); the same number again, or one up to ``max_gap`` behind, is a duplicate
  or out-of-order line (rejected); 0 or any larger jump is a board restart.
- ``raw_i``: the signed 24-bit HX711 reading of bin i, decimal (-8388608..8388607),
  bins in the order of the shelf in the store configuration. The two extremes are the
  ADC's saturation codes: such a line is rejected (a cell is overloaded or unwired).
- ``CC``: two hex digits (either case), XOR of every byte between ``$`` and ``*``
  (NMEA style), e.g. ``$W,17,84021,-1200,355*73``.

Calibration per bin: ``grams = (raw - offset) / scale``, ``offset`` the raw count with
the bin empty (tare), ``scale`` counts per gram (the convention of the common HX711
libraries: ``(read() - OFFSET) / SCALE``). Anything else on the line (a boot banner,
noise, a truncated line) is rejected as malformed; the receiver keeps going.

Every rejection is a ProtocolError whose ``reason`` is the counter the node counts.
"""
import math
import re
from dataclasses import dataclass
from typing import List, Optional, Sequence, Union

SEQ_MODULO = 65536
RAW_MIN = -(1 << 23)          # saturation code (negative full scale)
RAW_MAX = (1 << 23) - 1       # saturation code (positive full scale)
MAX_LINE_BYTES = 256
DEFAULT_MAX_GAP = 1000

# ProtocolError reasons (counter names of the weight sensor node).
MALFORMED = 'malformed_reading'
BAD_CHECKSUM = 'bad_checksum'
WRONG_BIN_COUNT = 'wrong_bin_count'
SATURATED = 'saturated'
DUPLICATE = 'duplicate_line'
OUT_OF_ORDER = 'out_of_order'

_SEQ = re.compile(rb'[0-9]{1,5}\Z')
_RAW = re.compile(rb'-?[0-9]{1,7}\Z')
_HEX = re.compile(rb'[0-9A-Fa-f]{2}\Z')


class ProtocolError(ValueError):
    """A line that is not a valid sample; ``reason`` says why (a counter name)."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


def checksum(payload: bytes) -> int:
    """XOR of the bytes between '$' and '*'."""
    value = 0
    for byte in payload:
        value ^= byte
    return value


def encode(seq: int, raws: Sequence[int]) -> bytes:
    """One protocol line, with its checksum and "\\r\\n"."""
    if not 0 <= seq < SEQ_MODULO:
        raise ValueError(f'seq {seq} out of 0..{SEQ_MODULO - 1}')
    for raw in raws:
        if not RAW_MIN <= int(raw) <= RAW_MAX:
            raise ValueError(f'raw reading {raw} out of 24 bits')
    payload = ('W,%d,' % seq + ','.join(str(int(r)) for r in raws)).encode('ascii')
    return b'$%s*%02X\r\n' % (payload, checksum(payload))


def parse_line(line: Union[bytes, str], n_bins: int) -> tuple:
    """(seq, raws) of one line (without or with its line ending); ProtocolError."""
    if isinstance(line, str):
        try:
            line = line.encode('ascii')
        except UnicodeEncodeError:
            raise ProtocolError(MALFORMED, 'not ASCII')
    line = line.rstrip(b'\r\n')
    if len(line) > MAX_LINE_BYTES:
        raise ProtocolError(MALFORMED, f'line of {len(line)} bytes (at most {MAX_LINE_BYTES})')
    if not line.startswith(b'$W,'):
        raise ProtocolError(MALFORMED, 'does not start with "$W,"')
    star = line.rfind(b'*')
    if star < 0 or not _HEX.match(line[star + 1:]):
        raise ProtocolError(MALFORMED, 'no "*<two hex digits>" checksum at the end')
    payload = line[1:star]
    if checksum(payload) != int(line[star + 1:], 16):
        raise ProtocolError(BAD_CHECKSUM, f'checksum {line[star + 1:].decode()} does not match '
                            f'{checksum(payload):02X}')
    fields = payload.split(b',')
    if not _SEQ.match(fields[1]) or int(fields[1]) >= SEQ_MODULO:
        raise ProtocolError(MALFORMED, 'sequence number is not 0..65535')
    raw_fields = fields[2:]
    if len(raw_fields) != n_bins:
        raise ProtocolError(WRONG_BIN_COUNT,
                            f'{len(raw_fields)} readings, the shelf has {n_bins} bins')
    raws = []
    for i, field in enumerate(raw_fields):
        if not _RAW.match(field):
            raise ProtocolError(MALFORMED, f'reading {i} is not a decimal integer')
        raw = int(field)
        if raw in (RAW_MIN, RAW_MAX):
            raise ProtocolError(SATURATED, f'reading {i} is the saturation code')
        if not RAW_MIN < raw < RAW_MAX:
            raise ProtocolError(MALFORMED, f'reading {i} is beyond 24 bits')
        raws.append(raw)
    return int(fields[1]), raws


@dataclass(frozen=True)
class Calibration:
    """Per bin: grams = (raw - offset) / scale (scale in counts per gram)."""

    offsets: tuple
    scales: tuple

    @classmethod
    def per_bin(cls, n_bins: int, offsets: Sequence[float],
                scales: Sequence[float]) -> 'Calibration':
        """One value per bin, or one value for all; ValueError when that is not so."""
        def expand(name, values):
            values = [float(v) for v in values]
            if len(values) == 1:
                values = values * n_bins
            if len(values) != n_bins:
                raise ValueError(f'{name}: expected 1 or {n_bins} values (one per bin), '
                                 f'got {len(values)}')
            if not all(math.isfinite(v) for v in values):
                raise ValueError(f'{name}: values must be finite')
            return tuple(values)

        offsets, scales = expand('offsets', offsets), expand('scales', scales)
        if any(s == 0 for s in scales):
            raise ValueError('scales: counts per gram must not be 0')
        return cls(offsets, scales)

    def to_grams(self, raws: Sequence[int]) -> List[float]:
        return [(r - o) / s for r, o, s in zip(raws, self.offsets, self.scales)]

    def to_raw(self, grams: Sequence[float]) -> List[int]:
        """Raw counts of these grams, clipped inside the 24-bit range (a saturated
        reading can only come from a real overload, never from rounding)."""
        return [min(RAW_MAX - 1, max(RAW_MIN + 1, int(round(g * s + o))))
                for g, o, s in zip(grams, self.offsets, self.scales)]


@dataclass(frozen=True)
class Frame:
    seq: int
    raws: tuple
    grams: tuple
    # Lines lost just before this one (sequence gap).
    dropped: int = 0
    # The sequence jumped too far (board restart, long outage): counting starts again.
    resync: bool = False


class Decoder:
    """Lines of one board to calibrated frames, tracking the sequence numbers.

    After line ``last``: ``last + 1`` is next; ``last + 1 + g`` (g <= max_gap) follows
    g lost lines; ``last`` again is a duplicate and a number up to ``max_gap`` behind
    is out of order (both rejected); 0 or any other jump is a restart of the board
    (accepted, ``resync``). RESYNC_RUN lines in a row that are rejected as out of
    order yet follow each other also resync, so a board whose counter jumped back is
    never locked out.
    """

    RESYNC_RUN = 3

    def __init__(self, n_bins: int, calibration: Calibration, max_gap: int = DEFAULT_MAX_GAP):
        if not 0 <= max_gap < SEQ_MODULO // 2:
            raise ValueError(f'max_gap must be 0..{SEQ_MODULO // 2 - 1}')
        self.n_bins = n_bins
        self.calibration = calibration
        self.max_gap = max_gap
        self.last_seq: Optional[int] = None
        self._behind_seq: Optional[int] = None
        self._behind_run = 0

    def decode(self, line: Union[bytes, str]) -> Frame:
        """ProtocolError for a bad line (the sequence state is then unchanged)."""
        seq, raws = parse_line(line, self.n_bins)
        dropped, resync = 0, False
        if self.last_seq is not None:
            gap = (seq - self.last_seq - 1) % SEQ_MODULO
            behind = SEQ_MODULO - 1 - gap          # 0: the same number again
            if gap <= self.max_gap:
                dropped = gap
            elif behind == 0:
                raise ProtocolError(DUPLICATE, f'sequence number {seq} again')
            elif behind <= self.max_gap and seq != 0:
                run = self._behind_run + 1 if self._behind_seq is not None and \
                    seq == (self._behind_seq + 1) % SEQ_MODULO else 1
                self._behind_seq, self._behind_run = seq, run
                if run < self.RESYNC_RUN:
                    raise ProtocolError(OUT_OF_ORDER, f'sequence number {seq} is {behind} '
                                        f'behind the last one ({self.last_seq})')
                resync = True
            else:
                resync = True
        self._behind_seq, self._behind_run = None, 0
        self.last_seq = seq
        return Frame(seq=seq, raws=tuple(raws), grams=tuple(self.calibration.to_grams(raws)),
                     dropped=dropped, resync=resync)


class LineSplitter:
    """Bytes from a serial port to lines. A line longer than ``max_bytes`` is
    discarded up to its end and reported as None (garbage without newlines must not
    grow the buffer)."""

    def __init__(self, max_bytes: int = MAX_LINE_BYTES):
        self.max_bytes = max_bytes
        self._buffer = bytearray()
        self._overlong = False

    def feed(self, data: bytes) -> List[Optional[bytes]]:
        lines = []
        start = 0
        while True:
            end = data.find(b'\n', start)
            if end < 0:
                break
            chunk = data[start:end]
            if self._overlong or len(self._buffer) + len(chunk) > self.max_bytes + 1:
                lines.append(None)
            else:
                lines.append(bytes(self._buffer + chunk).rstrip(b'\r'))
            self._buffer.clear()
            self._overlong = False
            start = end + 1
        rest = data[start:]
        if not self._overlong:
            if len(self._buffer) + len(rest) > self.max_bytes + 1:
                self._overlong = True
                self._buffer.clear()
            else:
                self._buffer += rest
        return lines
