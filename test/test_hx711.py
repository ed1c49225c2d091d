"""The HX711 serial line protocol: encoder, parser, sequence tracking, calibration,
line splitting, and the simulated board that speaks it."""
import math
import random

import pytest

from jwo_nodes.core import hx711
from jwo_nodes.core.hx711 import (BAD_CHECKSUM, DUPLICATE, MALFORMED, OUT_OF_ORDER, SATURATED,
                                  WRONG_BIN_COUNT, Calibration, Decoder, LineSplitter,
                                  ProtocolError, encode, parse_line)
from jwo_nodes.core.loadcell_sim import SimulatedBoard


def with_checksum(payload: bytes) -> bytes:
    return b'$%s*%02X' % (payload, hx711.checksum(payload))


def reason(line, n_bins=3) -> str:
    with pytest.raises(ProtocolError) as caught:
        parse_line(line, n_bins)
    return caught.value.reason


def test_documented_example():
    assert encode(17, [84021, -1200, 355]) == b'$W,17,84021,-1200,355*73\r\n'
    assert parse_line(b'$W,17,84021,-1200,355*73', 3) == (17, [84021, -1200, 355])
    assert parse_line('$W,17,84021,-1200,355*73\r\n', 3) == (17, [84021, -1200, 355])
    assert parse_line(b'$W,17,84021,-1200,355*73\n', 3) == (17, [84021, -1200, 355])


def test_round_trip_of_random_lines():
    rng = random.Random(5)
    for _ in range(2000):
        n = rng.randint(1, 8)
        seq = rng.randrange(hx711.SEQ_MODULO)
        raws = [rng.randint(hx711.RAW_MIN + 1, hx711.RAW_MAX - 1) for _ in range(n)]
        assert parse_line(encode(seq, raws), n) == (seq, raws)


def test_checksum_digits_in_either_case():
    line = encode(3, [10, 20, 30]).rstrip()
    assert parse_line(line.lower().replace(b'$w', b'$W'), 3) == (3, [10, 20, 30])


@pytest.mark.parametrize('line', [
    b'', b'hello world', b'W,1,2,3,4*00', b'$X,1,2,3,4*00', b'$W,1,2,3,4', b'$W,1,2,3,4*',
    b'$W,1,2,3,4*0', b'$W,1,2,3,4*0G', b'$W,1,2,3,4*001', b'$W,1,2,3,4*00 ',
    b'\x00\xff\xfe garbage', 'caf\u00e9'.encode('utf-8'),
])
def test_malformed_lines(line):
    assert reason(line) == MALFORMED


@pytest.mark.parametrize('payload', [
    b'W,1,nan,2,3', b'W,1,inf,2,3', b'W,1,1.5,2,3', b'W,1,+4,2,3', b'W,1, 4,2,3',
    b'W,1,4,,3', b'W,,4,2,3', b'W,-1,4,2,3', b'W,65536,4,2,3', b'W,1,99999999,2,3',
    b'W,1,1_000,2,3', b'W,1,0x10,2,3', b'W,1,9000000,2,3',
])
def test_malformed_fields_with_a_valid_checksum(payload):
    assert reason(with_checksum(payload)) == MALFORMED


def test_bad_checksum_is_its_own_reason():
    line = bytearray(encode(9, [1, 2, 3]).rstrip())
    line[-1] = ord('0') if line[-1] != ord('0') else ord('1')
    assert reason(bytes(line)) == BAD_CHECKSUM
    # One flipped digit anywhere in the payload is caught too.
    good = encode(9, [123, 456, 789]).rstrip()
    assert reason(good.replace(b'456', b'457')) == BAD_CHECKSUM


def test_wrong_bin_count():
    assert reason(encode(1, [1, 2]), 3) == WRONG_BIN_COUNT
    assert reason(encode(1, [1, 2, 3, 4]), 3) == WRONG_BIN_COUNT


def test_saturation_codes_are_rejected():
    assert reason(with_checksum(b'W,1,8388607,2,3')) == SATURATED
    assert reason(with_checksum(b'W,1,2,-8388608,3')) == SATURATED
    assert parse_line(with_checksum(b'W,1,8388606,-8388607,0'), 3) == (1, [8388606, -8388607, 0])


def test_overlong_line_is_malformed():
    payload = b'W,1,' + b','.join(b'1' for _ in range(200))
    assert reason(with_checksum(payload), 200) == MALFORMED


def test_encoder_refuses_what_it_cannot_send():
    with pytest.raises(ValueError):
        encode(hx711.SEQ_MODULO, [1])
    with pytest.raises(ValueError):
        encode(0, [hx711.RAW_MAX + 1])


# -- sequence numbers -----------------------------------------------------------------

def decoder(n_bins=2, max_gap=1000) -> Decoder:
    return Decoder(n_bins, Calibration.per_bin(n_bins, [0.0], [1.0]), max_gap)


def decode(d: Decoder, seq: int, raws=(1, 2)):
    return d.decode(encode(seq, list(raws)))


def test_consecutive_lines_and_gaps():
    d = decoder()
    assert decode(d, 10).dropped == 0
    assert decode(d, 11).dropped == 0
    frame = decode(d, 15)
    assert (frame.dropped, frame.resync) == (3, False)
    # Wrapping 65535 -> 0 is no gap.
    d = decoder()
    decode(d, 65535)
    assert decode(d, 0).dropped == 0
    assert decode(d, 3).dropped == 2


def test_duplicate_and_out_of_order_lines_are_rejected_without_changing_state():
    d = decoder()
    decode(d, 100)
    with pytest.raises(ProtocolError) as caught:
        decode(d, 100)
    assert caught.value.reason == DUPLICATE
    with pytest.raises(ProtocolError) as caught:
        decode(d, 97)
    assert caught.value.reason == OUT_OF_ORDER
    assert d.last_seq == 100
    assert decode(d, 101).dropped == 0


def test_board_restart_and_long_jumps_resync():
    d = decoder()
    decode(d, 500)
    frame = decode(d, 0)                    # the board restarted
    assert frame.resync and frame.dropped == 0
    assert decode(d, 1).dropped == 0
    frame = decode(d, 5000)                 # silent for longer than max_gap lines
    assert frame.resync and frame.dropped == 0


def test_a_counter_that_jumped_back_resyncs_after_a_few_lines():
    d = decoder()
    decode(d, 800)
    for seq in (700, 701):
        with pytest.raises(ProtocolError):
            decode(d, seq)
    frame = decode(d, 702)
    assert frame.resync
    assert decode(d, 703).dropped == 0


def test_bad_lines_do_not_disturb_the_sequence():
    d = decoder()
    decode(d, 7)
    for bad in (b'junk', encode(8, [1, 2, 3]), b'$W,8,1,2*00'):
        with pytest.raises(ProtocolError):
            d.decode(bad)
    assert decode(d, 8).dropped == 0


# -- calibration ------------------------------------------------------------------------

def test_calibration_per_bin_and_broadcast():
    c = Calibration.per_bin(3, [100.0, -200.0, 0.0], [2.0])
    assert c.scales == (2.0, 2.0, 2.0)
    assert c.to_grams([300, -200, -50]) == [100.0, 0.0, -25.0]
    d = Decoder(3, c)
    assert d.decode(encode(0, [300, -200, -50])).grams == (100.0, 0.0, -25.0)


@pytest.mark.parametrize('offsets, scales', [
    ([0.0, 0.0], [1.0]), ([0.0], [1.0, 2.0]), ([0.0], [0.0]), ([math.nan], [1.0]),
    ([0.0], [math.inf]), ([], [1.0]),
])
def test_bad_calibration_is_refused(offsets, scales):
    with pytest.raises(ValueError):
        Calibration.per_bin(3, offsets, scales)


def test_grams_to_raw_and_back_within_one_count():
    rng = random.Random(1)
    c = Calibration.per_bin(4, [8123.0, -500.0, 0.0, 42.0], [420.5, 98.0, 1.0, -230.0])
    for _ in range(500):
        grams = [rng.uniform(-500, 15000) for _ in range(4)]
        back = c.to_grams(c.to_raw(grams))
        for g, b, scale in zip(grams, back, c.scales):
            assert abs(g - b) <= 0.5 / abs(scale) + 1e-9
    # Overloads clip inside the range: never a saturation code by rounding.
    assert c.to_raw([1e9, -1e9, 0, 0])[:2] == [hx711.RAW_MAX - 1, hx711.RAW_MIN + 1]


# -- splitting a byte stream into lines ---------------------------------------------------

def test_line_splitter_reassembles_chunks():
    stream = b''.join(encode(i, [i, -i]) for i in range(50)) + b'partial'
    rng = random.Random(2)
    splitter = LineSplitter()
    lines, at = [], 0
    while at < len(stream):
        step = rng.randint(1, 40)
        lines += splitter.feed(stream[at:at + step])
        at += step
    assert lines == [encode(i, [i, -i]).rstrip() for i in range(50)]


def test_line_splitter_drops_overlong_lines_without_growing():
    splitter = LineSplitter(max_bytes=64)
    out = splitter.feed(b'x' * 1000)
    out += splitter.feed(b'y' * 1000)
    assert out == []
    assert len(splitter._buffer) == 0
    out = splitter.feed(b'zz\n' + encode(1, [2]))
    assert out == [None, encode(1, [2]).rstrip()]
    assert splitter.feed(b'a' * 70 + b'\nok\n') == [None, b'ok']


# -- the simulated board ---------------------------------------------------------------------

def test_simulated_board_speaks_the_protocol():
    offsets, scales = [8000.0, -5000.0, 100.0], [2.0, 2.0, 4.0]
    board = SimulatedBoard(3, offsets, scales, first_seq=65534)
    d = Decoder(3, Calibration.per_bin(3, offsets, scales))
    samples = [[1000.0 + i, 2000.5, 30.25 * i] for i in range(6)]
    samples[3] = None                            # a lost sample skips its number
    frames = []
    for grams in samples:
        line = board.line(grams)
        if line is not None:
            frames.append(d.decode(line))
    assert [f.seq for f in frames] == [65534, 65535, 0, 2, 3]
    assert [f.dropped for f in frames] == [0, 0, 0, 1, 0]
    for frame, grams in zip(frames, [s for s in samples if s is not None]):
        assert all(abs(a - b) <= 0.25 for a, b in zip(frame.grams, grams))
