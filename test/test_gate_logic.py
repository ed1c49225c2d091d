"""Gate line protocol, anonymous visits, duplicates, debounce and ordering, open visits
across restarts (no ROS)."""
import json
import random
import re

import pytest

from jwo_nodes.core import gate_logic as g
from jwo_nodes.core import visit_access
from jwo_nodes.core.gate_logic import (ENTRY, EXIT, GateLineError, GateLogic, LineAssembler,
                                       parse_line)

S = 1_000_000_000
CARD = '4111111111111111'
QR = 'app-qr-Zx81-secret'


def seeded(seed=7):
    return random.Random(seed).randbytes


def logic(**kwargs):
    kwargs.setdefault('random_bytes', seeded())
    return GateLogic('G1', **kwargs)


def strings_in(obj, seen=None):
    """Every str and bytes reachable from obj (attributes, containers)."""
    seen = set() if seen is None else seen
    if id(obj) in seen:
        return
    seen.add(id(obj))
    if isinstance(obj, (str, bytes, bytearray)):
        yield obj
    elif isinstance(obj, dict):
        for key, value in obj.items():
            yield from strings_in(key, seen)
            yield from strings_in(value, seen)
    elif isinstance(obj, (list, tuple, set, frozenset)):
        for value in obj:
            yield from strings_in(value, seen)
    elif hasattr(obj, '__dict__'):
        yield from strings_in(vars(obj), seen)


# -- protocol ---------------------------------------------------------------------

@pytest.mark.parametrize('line, direction, kind, token, group', [
    ('ENTRY qr abc', ENTRY, g.CREDENTIAL_APP_QR, 'abc', 1),
    ('  entry   Card  T-1\t 4 \r', ENTRY, g.CREDENTIAL_CARD_TOKEN, 'T-1', 4),
    ('Entry BADGE b7 20', ENTRY, g.CREDENTIAL_BADGE, 'b7', 20),
    ('EXIT', EXIT, g.CREDENTIAL_NONE, '', 1),
    ('  exit  ', EXIT, g.CREDENTIAL_NONE, '', 1),
    ('exit badge B7', EXIT, g.CREDENTIAL_BADGE, 'B7', 1),
])
def test_parses_protocol_with_any_whitespace_and_case(line, direction, kind, token, group):
    command = parse_line(line)
    assert (command.direction, command.credential_kind, command.token,
            command.group_size) == (direction, kind, token, group)


def test_blank_lines_are_not_commands():
    assert parse_line('') is None
    assert parse_line('  \t\r') is None


@pytest.mark.parametrize('line, problem', [
    ('HELLO world', 'unknown command word'),
    ('ENTRY', 'ENTRY takes'),
    ('ENTRY qr', 'ENTRY takes'),
    ('ENTRY qr tok 2 extra', 'ENTRY takes'),
    ('ENTRY face tok', 'unknown credential kind'),
    ('ENTRY qr tok 0', 'group size'),
    ('ENTRY qr tok 21', 'group size'),
    ('ENTRY qr tok -1', 'group size'),
    ('ENTRY qr tok 2.5', 'group size'),
    ('ENTRY qr tok ²', 'group size'),
    ('ENTRY qr tökén', 'visible ASCII'),
    ('ENTRY qr ' + 'x' * 300, 'token must be 1 to 256'),
    ('EXIT qr', 'EXIT takes'),
    ('EXIT qr tok 2', 'EXIT takes'),
    ('x' * 600, 'line too long'),
])
def test_rejects_anything_else_with_a_specific_error(line, problem):
    with pytest.raises(GateLineError, match=re.escape(problem)):
        parse_line(line)


@pytest.mark.parametrize('line', [
    f'{CARD}', f'ENTRY {CARD}', f'ENTRY face {CARD}', f'ENTRY card {CARD} 99',
    f'EXIT card {CARD} 2', f'ENTRY card {CARD}é', f'{CARD} ENTRY card x',
])
def test_errors_never_repeat_the_line(line):
    with pytest.raises(GateLineError) as error:
        parse_line(line)
    assert CARD not in str(error.value)
    result = logic().feed(line, 0)
    assert result.outcome == g.MALFORMED and CARD not in repr(result)


# -- visits -----------------------------------------------------------------------

def test_each_entry_gets_a_fresh_anonymous_code_and_tap_out_finds_it():
    gate = logic()
    a = gate.feed(f'ENTRY card {CARD}', 10 * S).event
    b = gate.feed(f'ENTRY qr {QR}', 11 * S).event
    assert re.fullmatch(r'v-[a-z2-7]{10}', a.visit_code)
    assert a.visit_code != b.visit_code
    assert (a.event_id, b.event_id) == ('G1/1', 'G1/2')
    assert (a.direction, a.credential_kind, a.group_size, a.stamp_ns) == (
        ENTRY, g.CREDENTIAL_CARD_TOKEN, 1, 10 * S)
    out = gate.feed(f'EXIT card {CARD}', 60 * S).event
    assert (out.direction, out.visit_code, out.event_id) == (EXIT, a.visit_code, 'G1/3')
    assert gate.open_visits == 1
    # The same card on a later visit gets a new code.
    again = gate.feed(f'ENTRY card {CARD}', 100 * S).event
    assert again.visit_code not in (a.visit_code, b.visit_code)


def test_each_entry_issues_a_live_cart_token_kept_only_as_its_hash():
    gate = logic()
    entry = gate.feed(f'ENTRY card {CARD} 2', 10 * S)
    issued = entry.access
    assert issued.access == visit_access.VisitAccess('G1', entry.event.visit_code, 10 * S,
                                                     visit_access.token_hash(issued.token))
    assert issued.token not in repr(entry)
    # The gate keeps the hash (offered again after a restart), never the token.
    assert gate.accesses() == [issued.access]
    assert not any(issued.token in value if isinstance(value, str) else issued.token.encode() in value
                   for value in strings_in(gate))
    other = gate.feed(f'ENTRY qr {QR}', 11 * S).access
    assert other.token != issued.token
    assert gate.feed(f'EXIT card {CARD}', 20 * S).access is None      # an exit issues nothing
    assert gate.feed('EXIT', 21 * S).access is None
    assert gate.accesses() == [other.access]                          # closed: forgotten


def test_codes_come_from_the_random_source_and_differ_between_gates():
    first = [logic(random_bytes=seeded(1)).feed('ENTRY qr a', 0).event.visit_code for _ in range(2)]
    assert first[0] == first[1]  # injectable: same seed, same code
    real = {GateLogic('G1').feed('ENTRY qr a', 0).event.visit_code for _ in range(50)}
    assert len(real) == 50


def test_no_token_in_any_output_or_state():
    gate = logic()
    outputs = [gate.feed(f'ENTRY card {CARD} 3', 0), gate.feed(f'ENTRY card {CARD}', 1 * S),
               gate.feed(f'ENTRY card {CARD}', 9 * S), gate.feed(f'ENTRY qr {QR}', 10 * S),
               gate.feed(f'EXIT qr {QR}', 11 * S), gate.feed(f'EXIT badge {QR}', 20 * S),
               gate.feed('EXIT', 21 * S), gate.feed(f'ENTRY qr {QR}', 1 * S)]
    assert {r.outcome for r in outputs} >= {g.EVENT, g.DEBOUNCED, g.DUPLICATE_ENTRY,
                                            g.EXIT_WITHOUT_ENTRY, g.OUT_OF_ORDER}
    text = ' '.join(repr(r) + str(r) + r.problem for r in outputs) + repr(gate)
    text += repr(parse_line(f'ENTRY card {CARD}'))
    for token in (CARD, QR):
        assert token not in text
        for value in strings_in(gate):
            assert (token.encode() not in value) if isinstance(value, (bytes, bytearray)) \
                else (token not in value)


def test_credential_hashes_are_salted():
    one, two = logic(salt=b'salt-one-0123456'), logic(salt=b'salt-two-0123456')
    assert one.credential_hash(3, CARD) != two.credential_hash(3, CARD)
    assert one.credential_hash(3, CARD) == logic(salt=b'salt-one-0123456').credential_hash(3, CARD)
    assert one.credential_hash(3, CARD) != one.credential_hash(1, CARD)  # kind is hashed too
    # No salt given: a random one per gate.
    assert GateLogic('G1').credential_hash(3, CARD) != GateLogic('G1').credential_hash(3, CARD)


def test_group_is_one_payer_one_visit_n_people():
    gate = logic()
    entry = gate.feed(f'ENTRY qr {QR} 4', 0).event
    assert (entry.group_size, gate.open_visits) == (4, 1)
    out = gate.feed(f'EXIT qr {QR}', 300 * S).event
    assert (out.visit_code, out.group_size) == (entry.visit_code, 4)


def test_walk_out_has_no_visit_code():
    gate = logic()
    gate.feed(f'ENTRY qr {QR}', 0)
    out = gate.feed('EXIT', 100 * S)
    assert out.outcome == g.EVENT
    assert (out.event.direction, out.event.visit_code, out.event.credential_kind,
            out.event.group_size) == (EXIT, '', g.CREDENTIAL_NONE, 1)
    # Two people walking out right after each other are two exits, not a double scan.
    assert gate.feed('EXIT', 100 * S).outcome == g.EVENT
    assert gate.counts['exits'] == 2


# -- duplicates, debounce, ordering -----------------------------------------------

def test_double_scan_within_debounce_is_ignored_and_counted():
    gate = logic(debounce_ns=3 * S)
    assert gate.feed(f'ENTRY card {CARD}', 0).outcome == g.EVENT
    assert gate.feed(f'ENTRY card {CARD}', 1 * S).outcome == g.DEBOUNCED
    # A tap-out 2 s after the last scan is the reader repeating, not the shopper leaving.
    assert gate.feed(f'EXIT card {CARD}', 3 * S).outcome == g.DEBOUNCED
    assert gate.counts[g.DEBOUNCED] == 2
    assert gate.open_visits == 1
    assert gate.feed(f'EXIT card {CARD}', 7 * S).outcome == g.EVENT
    assert gate.open_visits == 0


def test_debounce_is_decided_from_stamps_not_arrival():
    gate = logic(debounce_ns=3 * S)
    gate.feed(f'ENTRY card {CARD}', 0)
    # Arrives at once after the first, but stamped 5 s later: not a double scan.
    result = gate.feed(f'ENTRY card {CARD}', 5 * S)
    assert result.outcome == g.DUPLICATE_ENTRY


def test_entry_with_an_open_visit_is_a_duplicate():
    gate = logic()
    first = gate.feed(f'ENTRY badge {QR}', 0).event
    result = gate.feed(f'ENTRY badge {QR} 2', 60 * S)
    assert (result.outcome, result.event) == (g.DUPLICATE_ENTRY, None)
    assert gate.counts[g.DUPLICATE_ENTRY] == 1 and gate.open_visits == 1
    assert gate.feed(f'EXIT badge {QR}', 120 * S).event.visit_code == first.visit_code


def test_exit_without_entry_emits_nothing():
    gate = logic()
    result = gate.feed(f'EXIT card {CARD}', 0)
    assert (result.outcome, result.event) == (g.EXIT_WITHOUT_ENTRY, None)
    assert gate.counts[g.EXIT_WITHOUT_ENTRY] == 1
    # Another kind with the same token is another credential.
    gate.feed(f'ENTRY qr {CARD}', 10 * S)
    assert gate.feed(f'EXIT card {CARD}', 20 * S).outcome == g.EXIT_WITHOUT_ENTRY


def test_out_of_order_stamps_are_counted_and_ignored():
    gate = logic()
    gate.feed('ENTRY qr a', 10 * S)
    result = gate.feed('ENTRY qr b', 9 * S)
    assert (result.outcome, result.event) == (g.OUT_OF_ORDER, None)
    assert gate.counts[g.OUT_OF_ORDER] == 1 and gate.open_visits == 1
    assert gate.feed('ENTRY qr b', 10 * S).outcome == g.EVENT  # equal stamps are in order
    assert gate.feed('EXIT', 5 * S).outcome == g.OUT_OF_ORDER


def test_stale_visits_are_forgotten():
    gate = logic(max_visit_ns=3600 * S)
    gate.feed(f'ENTRY card {CARD}', 0)
    gate.feed('EXIT', 600 * S)  # walked out without tapping
    # Next day: the same card opens a new visit instead of being a duplicate.
    assert gate.feed(f'ENTRY card {CARD}', 86400 * S).outcome == g.EVENT
    assert gate.counts[g.VISIT_EXPIRED] == 1 and gate.open_visits == 1


def test_counts():
    gate = logic()
    for stamp, line in enumerate(['ENTRY qr a', 'garbage', '', 'EXIT', 'EXIT qr a']):
        gate.feed(line, stamp * 10 * S)
    assert gate.counts['lines'] == 4  # blank lines are not counted
    assert (gate.counts['entries'], gate.counts['exits'], gate.counts[g.MALFORMED]) == (1, 2, 1)


# -- restarts: open visits exported and restored ------------------------------------

SALT = b'gate-secret-salt-0123'


def test_open_visits_survive_a_restart_as_hashes_and_codes():
    gate = logic(salt=SALT)
    card = gate.feed(f'ENTRY card {CARD} 3', 10 * S).event
    qr = gate.feed(f'ENTRY qr {QR}', 20 * S).event
    gate.feed(f'EXIT qr {QR}', 30 * S)
    badge = gate.feed('ENTRY badge b7', 40 * S).event
    saved = json.loads(json.dumps(gate.export_visits()))      # through a file
    assert [v['code'] for v in saved['visits']] == [card.visit_code, badge.visit_code]
    text = json.dumps(saved)
    assert CARD not in text and QR not in text and SALT.hex() not in text
    assert qr.visit_code not in text                          # closed: forgotten

    restarted = logic(salt=SALT, random_bytes=seeded(99))
    assert restarted.restore_visits(saved) == 2 and restarted.open_visits == 2
    out = restarted.feed(f'EXIT card {CARD}', 50 * S).event
    assert (out.visit_code, out.group_size) == (card.visit_code, 3)
    # A restored credential's entry is a duplicate, as before the restart.
    assert restarted.feed('ENTRY badge b7', 60 * S).outcome == g.DUPLICATE_ENTRY
    assert restarted.open_visits == 1


def test_restored_visits_expire_from_their_opening_stamp():
    gate = logic(salt=SALT, max_visit_ns=3600 * S)
    gate.feed(f'ENTRY card {CARD}', 0)
    restarted = logic(salt=SALT, max_visit_ns=3600 * S)
    restarted.restore_visits(gate.export_visits())
    assert restarted.feed(f'EXIT card {CARD}', 3601 * S).outcome == g.EXIT_WITHOUT_ENTRY
    assert restarted.counts[g.VISIT_EXPIRED] == 1


def test_a_restarted_gate_offers_the_entry_events_of_its_open_visits_again():
    gate = logic(salt=SALT)
    first = gate.feed(f'ENTRY card {CARD} 2', 0).event
    gate.feed(f'ENTRY qr {QR}', S)
    gate.feed(f'EXIT qr {QR}', 60 * S)         # closed: not offered again
    restarted = logic(salt=SALT)
    restarted.restore_visits(json.loads(json.dumps(gate.export_visits())))
    assert restarted.entry_events() == [first]
    # ... and their live-cart token hashes.
    assert restarted.accesses() == gate.accesses() and len(gate.accesses()) == 1
    assert restarted.accesses()[0].visit_code == first.visit_code


def test_revision_follows_every_change_of_the_open_visits():
    gate = logic(max_visit_ns=3600 * S)
    revisions = [gate.revision]
    for stamp, line in [(0, f'ENTRY card {CARD}'), (10, 'EXIT'), (20, f'EXIT card {CARD}'),
                        (30, 'ENTRY qr a'), (30, 'garbage'), (4000, 'EXIT')]:
        gate.feed(line, stamp * S)
        revisions.append(gate.revision)
    # entry, walk-out (no change), tap-out, entry, garbage (none), expiry
    assert revisions == [0, 1, 1, 2, 3, 3, 4]


@pytest.mark.parametrize('change', [
    lambda d: d.update(salt_check='0' * 16),                  # hashed under another salt
    lambda d: d.pop('visits'),
    lambda d: d['visits'][0].update(credential_hash='abc'),
    lambda d: d['visits'][0].update(credential_hash='00' * 31),
    lambda d: d['visits'][0].pop('code'),
    lambda d: d['visits'][0].update(group_size=0),
    lambda d: d['visits'][0].update(opened_ns='1'),
    lambda d: d['visits'].append(dict(d['visits'][0])),       # twice
    lambda d: d['visits'][0].update(access_hash='ab' * 31),
])
def test_a_bad_saved_state_restores_nothing(change):
    gate = logic(salt=SALT)
    gate.feed(f'ENTRY card {CARD}', 0)
    gate.feed(f'ENTRY qr {QR}', S)
    document = json.loads(json.dumps(gate.export_visits()))
    change(document)
    restarted = logic(salt=SALT)
    with pytest.raises(ValueError):
        restarted.restore_visits(document)
    assert restarted.open_visits == 0 and restarted.revision == 0


def test_visits_are_restored_before_any_line():
    gate = logic(salt=SALT)
    saved = gate.export_visits()
    gate.feed('EXIT', 0)
    with pytest.raises(ValueError):
        gate.restore_visits(saved)


# -- byte stream to lines ---------------------------------------------------------

def test_line_assembler_splits_bounds_and_decodes():
    assembler = LineAssembler(max_bytes=16)
    assert list(assembler.feed(b'ENTRY qr a\r\nEX')) == ['ENTRY qr a']
    assert list(assembler.feed(b'IT\n\xff\xfe\n')) == ['EXIT', '\ufffd\ufffd']
    # A flood without newlines is dropped once, up to the next newline.
    assert list(assembler.feed(b'x' * 40)) == [None]
    assert list(assembler.feed(b'y' * 40)) == []
    assert list(assembler.feed(b'zz\nEXIT\n')) == ['EXIT']
    assert list(assembler.feed(b'w' * 17 + b'\nEXIT\n')) == [None, 'EXIT']
