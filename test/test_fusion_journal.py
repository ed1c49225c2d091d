"""Fusion's journal without a ROS graph: inputs through a journaled core, a "crash"
(the journal object dropped, its file kept, sometimes torn), a restart from the file,
and the receipts compared with those of a run that never stopped."""
import itertools
import json
import math
from collections import deque
from pathlib import Path
from types import MappingProxyType

import pytest

from jwo_nodes.core.config import load_store_config
from jwo_nodes.core.fusion import (FINAL, FUSION_RESTARTED, NEEDS_REVIEW, NS, ChangeInput,
                                   FusionCore, FusionJournal, FusionSettings, GateInput,
                                   JournalError, TrackInput)
from jwo_nodes.core.held_item import HeldItem
from jwo_nodes.core.fusion import journal as journal_module

STORE = Path(__file__).resolve().parent.parent / 'config' / 'stores' / 'demo.yaml'
WALL0 = 1_800_000_000 * NS   # the wall clock runs a fixed offset ahead of the stamps
SETTINGS = FusionSettings()


@pytest.fixture(scope='module')
def store():
    return load_store_config(STORE)


class Script:
    """The inputs a fusion_node hands its core, each with its wall clock: tracker frames
    and shelf heartbeats every 0.1 s, a tick every 0.2 s, gate events and weight
    changes in between. Shoppers sway around where they stand, so a frame lost in a
    replay changes the evidence (and the receipts' confidences)."""

    def __init__(self, store):
        self.store = store
        self.t = 0
        self.places = {}
        self.steps = []
        self._ids = itertools.count(1)

    def _step(self, kind, *args):
        self.steps.append((kind, *args, WALL0 + self.t))

    def enter(self, code):
        self._step('gate', GateInput(f'G1/{next(self._ids)}', 'G1', self.t, True, code, 1))

    def leave(self, code):
        self._step('gate', GateInput(f'G1/{next(self._ids)}', 'G1', self.t, False, code, 1))

    def place(self, track, code, where):
        if where is None:
            self.places.pop(track)
            return
        target = self.store.gates.get(where) or self.store.bin(where)
        self.places[track] = (code, (target.x, target.y))

    def change(self, bin_id, delta):
        shelf = self.store.bin(bin_id).shelf_id
        self._step('change', ChangeInput(f'{shelf}/{next(self._ids)}', shelf, (bin_id,), (delta,),
                                         self.t - NS, self.t, 1.5))

    def run(self, seconds):
        end = self.t + int(seconds * NS)
        while self.t < end:
            self.t += NS // 10
            sway = [(0.2 * math.sin(self.t / NS * 2.3 + i), 0.2 * math.cos(self.t / NS * 1.7 + 2 * i))
                    for i in range(len(self.places))]
            self._step('positions', self.t, [TrackInput(track, code, x + dx, y + dy)
                                             for (track, (code, (x, y))), (dx, dy)
                                             in zip(self.places.items(), sway)])
            for shelf_id in self.store.shelves:
                self._step('status', shelf_id, self.t - NS // 4)
            if self.t % (NS // 5) == 0:
                self._step('tick')

    def visit(self, code, track, *steps):
        self.place(track, code, 'G1')
        self.enter(code)
        self.run(1)
        for bin_id, delta in steps:
            self.place(track, code, bin_id)
            self.run(2)
            self.change(bin_id, delta)
            self.run(1)
        self.place(track, code, 'G1')
        self.run(1)
        self.leave(code)
        self.run(0.3)
        self.place(track, code, None)
        self.run(2)


def shopping(store) -> list:
    """Two overlapping visits; v1 leaves chips on the water bin, where v2 takes them: the
    stray outlives v1's visit."""
    s = Script(store)
    s.place('t1', 'v1', 'G1'); s.enter('v1'); s.run(1)
    s.place('t1', 'v1', 'S1-B1'); s.run(2); s.change('S1-B1', -700.5); s.run(1)
    s.place('t2', 'v2', 'G1'); s.enter('v2'); s.run(1)
    s.place('t1', 'v1', 'S2-B1'); s.place('t2', 'v2', 'S2-B3'); s.run(2)
    s.change('S2-B1', -165.0); s.change('S2-B3', -214.0); s.run(1)
    s.place('t1', 'v1', 'S1-B2'); s.run(2); s.change('S1-B2', +165.5); s.run(1)
    s.place('t1', 'v1', 'G1'); s.run(1); s.leave('v1'); s.run(0.3); s.place('t1', 'v1', None); s.run(2)
    s.place('t2', 'v2', 'S1-B2'); s.run(2); s.change('S1-B2', -165.2); s.run(1)
    s.place('t2', 'v2', 'G1'); s.run(1); s.leave('v2'); s.run(0.3); s.place('t2', 'v2', None); s.run(2)
    return s.steps


def feed(target, steps, receipts: dict, publish: bool = True) -> None:
    """Hands steps to a FusionCore or FusionJournal as the node does, keeping the
    receipts by visit (and marking them published, as the node does after publishing)."""
    for kind, *args in steps:
        if kind == 'gate':
            out = target.on_gate_event(*args)
        elif kind == 'change':
            out = target.on_weight_change(*args)
        elif kind == 'positions':
            out = target.on_positions(*args)
        elif kind == 'status':
            out = target.on_shelf_status(*args)
        else:
            out = target.advance(*args)
        for receipt in out.receipts if out is not None else ():
            receipts[receipt.visit_code] = receipt
            if publish and isinstance(target, FusionJournal):
                target.published(receipt.receipt_id)


def uninterrupted(store, steps, settings=SETTINGS) -> dict:
    receipts = {}
    feed(FusionCore(store, settings), steps, receipts)
    return receipts


def restart(store, state_dir, now_ns, receipts: dict, **options) -> FusionJournal:
    """A fusion_node's start: the journal replayed, the receipts it hands back published."""
    journal = FusionJournal(store, options.pop('settings', SETTINGS), state_dir, now_ns, **options)
    for receipt in journal.recovery.receipts:
        receipts[receipt.visit_code] = receipt
        journal.published(receipt.receipt_id)
    return journal


def assert_same_receipts(got: dict, expected: dict, restarted) -> None:
    """Receipts as the run that never stopped issued them; the visits open at the
    restart go to review for it, with the same lines."""
    assert set(got) == set(expected)
    for code, receipt in expected.items():
        if code in restarted:
            assert got[code].status == NEEDS_REVIEW
            assert [r.code for r in got[code].reasons].count(FUSION_RESTARTED) == 1
            assert (got[code].lines, got[code].total_cents, got[code].confidence) == \
                (receipt.lines, receipt.total_cents, receipt.confidence)
        else:
            assert got[code] == receipt


def state_of(value):
    """Everything a FusionCore holds, as comparable plain values (its solution cache,
    sequence counter and undrained problems left out)."""
    if isinstance(value, FusionCore):
        return {name: state_of(v) for name, v in vars(value).items()
                if name not in ('_solution', '_seq', 'problems')}
    if isinstance(value, (dict, MappingProxyType)):
        return {key: state_of(v) for key, v in value.items()}
    if isinstance(value, (list, tuple, deque)):
        return [state_of(v) for v in value]
    if hasattr(value, '__dict__'):
        return {name: state_of(v) for name, v in vars(value).items()}
    return value


def wall_of(step) -> int:
    return step[-1]


def lines_of(receipt) -> dict:
    return {line.sku: line.quantity for line in receipt.lines}


def test_the_scenario_is_what_it_says(store):
    receipts = uninterrupted(store, shopping(store))
    assert lines_of(receipts['v1']) == {'COLA-330': 2}
    assert lines_of(receipts['v2']) == {'NUTS-200': 1, 'CHIPS-150': 1}
    assert receipts['v1'].status == receipts['v2'].status == FINAL


def crash_points(steps) -> list:
    """Right after every gate event and weight change, and a few frames later."""
    events = [i + 1 for i, step in enumerate(steps) if step[0] in ('gate', 'change')]
    return sorted({k for k in events + [i + 7 for i in events] if k < len(steps)})


@pytest.mark.slow(40)
@pytest.mark.parametrize('eager', [False, True])
def test_a_crash_anywhere_gives_the_receipts_of_a_run_that_never_stopped(store, tmp_path, eager):
    """eager: the journal compacts at every chance it gets; it must still keep the
    chips v1 left on the water bin for v2's receipt."""
    options = {'compact_after_bytes': 1} if eager else {}
    steps = shopping(store)
    expected = uninterrupted(store, steps)
    for k in crash_points(steps):
        state_dir = tmp_path / f'crash-{k}'
        receipts = {}
        journal = restart(store, state_dir, WALL0, receipts, **options)
        feed(journal, steps[:k], receipts)
        # What kill -9 leaves: every line reached the kernel with one write() (close()
        # adds only an fsync, which matters after a power cut, not a killed process).
        journal.close()
        journal = restart(store, state_dir, wall_of(steps[k - 1]), receipts, **options)
        restarted = set(journal.recovery.restarted)
        if not eager:                       # the very state of the run that went on
            assert journal.recovery.inputs == k
            core = FusionCore(store)
            feed(core, steps[:k], {})
            core.mark_restarted(wall_of(steps[k - 1]), wall_of(steps[k - 1]))
            assert state_of(journal.core) == state_of(core)
        assert restarted == {code for code in ('v1', 'v2') if code not in receipts
                             and any(s[0] == 'gate' and s[1].visit_code == code for s in steps[:k])}
        feed(journal, steps[k:], receipts)
        journal.close()
        assert_same_receipts(receipts, expected, restarted)


def test_a_receipt_issued_but_not_marked_published_is_handed_out_again(store, tmp_path):
    steps = shopping(store)
    core, receipts = FusionCore(store), {}
    issuing = 0
    while not receipts:
        feed(core, steps[issuing:issuing + 1], receipts)
        issuing += 1
    issuing -= 1                                                    # the step that issued v1's
    journal = FusionJournal(store, SETTINGS, tmp_path, WALL0)
    feed(journal, steps[:issuing], {})
    feed(journal, steps[issuing:issuing + 1], {}, publish=False)    # killed before publishing
    journal.close()
    journal = FusionJournal(store, SETTINGS, tmp_path, wall_of(steps[issuing]))
    assert journal.recovery.receipts == [receipts['v1']]
    journal.published(receipts['v1'].receipt_id)
    journal.close()
    assert FusionJournal(store, SETTINGS, tmp_path, wall_of(steps[issuing])).recovery.receipts == []


def test_a_torn_last_line_is_cut_off_and_the_rest_replayed(store, tmp_path):
    steps = shopping(store)
    expected = uninterrupted(store, steps)
    k = next(i for i in range(len(steps) // 2, len(steps)) if steps[i][0] == 'positions') + 1
    journal = FusionJournal(store, SETTINGS, tmp_path, WALL0)
    receipts = {}
    feed(journal, steps[:k], receipts)
    journal.close()
    path = journal.path
    data = path.read_bytes()
    last = data.rstrip(b'\n').rsplit(b'\n', 1)[1]
    assert json.loads(last)['k'] == 'positions'
    path.write_bytes(data[:len(data) - len(last) // 2 - 1])   # a power cut mid-write
    journal = restart(store, tmp_path, wall_of(steps[k - 1]), receipts)
    assert journal.recovery.torn_bytes == len(last) - len(last) // 2
    # The lost frame is a frame lost in the outage: the next ones come as before.
    feed(journal, steps[k - 1:], receipts)
    assert_same_receipts(receipts, expected, set(journal.recovery.restarted))


def test_replaying_twice_gives_the_same_state(store, tmp_path):
    steps = shopping(store)
    k = len(steps) // 2
    journal = FusionJournal(store, SETTINGS, tmp_path / 'once', WALL0)
    feed(journal, steps[:k], {})
    journal.close()
    twice = tmp_path / 'twice'
    twice.mkdir()
    (twice / journal.path.name).write_bytes(journal.path.read_bytes())
    results = []
    for state_dir, starts in ((tmp_path / 'once', 1), (twice, 2)):
        receipts = {}
        for _ in range(starts):
            journal = restart(store, state_dir, wall_of(steps[k - 1]), receipts)
            journal.close()
        journal = restart(store, state_dir, wall_of(steps[k - 1]), receipts)
        feed(journal, steps[k:], receipts)
        journal.close()
        results.append(receipts)
    assert results[0] == results[1]
    assert [r.code for r in results[1]['v2'].reasons].count(FUSION_RESTARTED) == 1


def test_events_seen_before_are_dropped_resent_or_duplicated(store, tmp_path):
    steps = shopping(store)
    expected = uninterrupted(store, steps)
    k = len(steps) // 2
    journal = FusionJournal(store, SETTINGS, tmp_path, WALL0)
    receipts = {}
    feed(journal, steps[:k], receipts)
    journal.close()
    journal = restart(store, tmp_path, wall_of(steps[k - 1]), receipts)
    # The publishers' transient-local histories after the restart: all again.
    events = [step for step in steps[:k] if step[0] in ('gate', 'change')]
    for kind, event, wall in events:
        call = journal.on_gate_event if kind == 'gate' else journal.on_weight_change
        assert call(event, wall_of(steps[k - 1])) is None
        assert journal.resent(event.event_id)
    feed(journal, steps[k:], receipts)
    assert_same_receipts(receipts, expected, set(journal.recovery.restarted))
    kind, event, wall = next(step for step in steps[k:] if step[0] == 'gate')
    assert journal.on_gate_event(event, wall) is None and not journal.resent(event.event_id)


def test_an_open_visit_whose_evidence_was_lost_in_the_outage_goes_to_review(store, tmp_path):
    """Down from v2's entry until after its first take: the frames of that time are
    lost, the weight change comes again from its publisher's history after the restart."""
    steps = shopping(store)
    expected = uninterrupted(store, steps)
    down = next(i for i, s in enumerate(steps) if s[0] == 'gate' and s[1].visit_code == 'v2') + 1
    up = next(i for i, s in enumerate(steps) if s[0] == 'change' and s[1].shelf_id == 'S2') + 12
    journal = FusionJournal(store, SETTINGS, tmp_path, WALL0)
    receipts = {}
    feed(journal, steps[:down], receipts)
    journal.close()
    journal = restart(store, tmp_path, wall_of(steps[up]), receipts)
    assert set(journal.recovery.restarted) == {'v1', 'v2'}
    resent = [(kind, event, wall_of(steps[up])) for kind, event, _ in
              (s for s in steps[down:up] if s[0] in ('gate', 'change'))]
    feed(journal, resent + steps[up:], receipts)
    for code in ('v1', 'v2'):
        assert receipts[code].status == NEEDS_REVIEW
        assert FUSION_RESTARTED in {r.code for r in receipts[code].reasons}
    assert lines_of(receipts['v1'])['COLA-330'] == 2    # taken before the crash
    assert expected['v1'].status == FINAL


def test_compaction_keeps_what_the_core_still_needs(store, tmp_path):
    """A compacted journal is the ids seen and the core's saved state, then what came since."""
    settings = FusionSettings(history_s=5.0)
    s = Script(store)
    s.visit('v1', 't1', ('S1-B1', -350.0))
    s.run(10)
    first = len(s.steps)
    s.visit('v2', 't2', ('S2-B3', -214.0))
    s.visit('v3', 't3', ('S2-B2', -108.0))
    steps = s.steps
    expected = uninterrupted(store, steps, settings)
    journal = FusionJournal(store, settings, tmp_path, WALL0, compact_after_bytes=1)
    receipts = {}
    feed(journal, steps[:first], receipts)
    records = [json.loads(line) for line in journal.path.read_text().splitlines()]
    assert [r['k'] for r in records] == ['journal', 'seen', 'state']
    k = first + (len(steps) - first) // 4                          # v2 at the nuts
    feed(journal, steps[first:k], receipts)
    journal.close()
    journal = restart(store, tmp_path, wall_of(steps[k - 1]), receipts, settings=settings)
    for kind, event, _ in (step for step in steps[:first] if step[0] in ('gate', 'change')):
        assert journal.resent(event.event_id)               # the ids outlive the compaction
    feed(journal, steps[k:], receipts)
    assert_same_receipts(receipts, expected, set(journal.recovery.restarted))
    assert set(journal.recovery.restarted) == {'v2'}


def test_a_store_never_empty_is_compacted_with_its_strays_and_open_visits(store, tmp_path):
    """Compaction does not wait for a quiet store: a stray that outlives its visit and a
    visit still inside are in the saved state, and the restart gives the same receipts."""
    s = Script(store)
    s.place('t9', 'v9', 'G1'); s.enter('v9'); s.run(1)
    s.place('t9', 'v9', 'S4-B3')                                 # inside the whole time
    s.visit('v1', 't1', ('S2-B1', -165.0), ('S1-B2', +165.5))    # chips left on the water bin
    s.run(10)
    left = len(s.steps)
    s.visit('v2', 't2', ('S1-B2', -165.2))
    s.place('t9', 'v9', 'G1'); s.run(1); s.leave('v9'); s.run(0.3); s.place('t9', 'v9', None); s.run(2)
    steps = s.steps
    expected = uninterrupted(store, steps)
    assert lines_of(expected['v2']) == {'CHIPS-150': 1}
    journal = FusionJournal(store, SETTINGS, tmp_path, WALL0, compact_after_bytes=1)
    receipts = {}
    feed(journal, steps[:left], receipts)
    assert 'v1' in receipts and journal.core.open_visits() == ['v9']
    assert '"k":"change"' not in journal.path.read_text()        # compacted
    journal.close()
    journal = restart(store, tmp_path, wall_of(steps[left - 1]), receipts, compact_after_bytes=1)
    assert journal.recovery.restarted == ['v9']
    feed(journal, steps[left:], receipts)
    assert_same_receipts(receipts, expected, {'v9'})


def test_a_damaged_saved_state_is_refused_naming_the_journal(store, tmp_path):
    s = Script(store)
    s.visit('v1', 't1', ('S1-B1', -350.0))
    journal = FusionJournal(store, SETTINGS, tmp_path, WALL0, compact_after_bytes=1)
    feed(journal, s.steps, {})
    journal.close()
    lines = journal.path.read_text().splitlines()
    state = json.loads(lines[2])
    state['core'] = state['core'][:100]
    journal.path.write_text('\n'.join([*lines[:2], json.dumps(state), *lines[3:]]) + '\n')
    with pytest.raises(JournalError, match='saved state cannot be read'):
        FusionJournal(store, SETTINGS, tmp_path, WALL0)


def test_a_state_another_version_wrote_is_refused(store, tmp_path, monkeypatch):
    s = Script(store)
    s.visit('v1', 't1', ('S1-B1', -350.0))
    journal = FusionJournal(store, SETTINGS, tmp_path, WALL0, compact_after_bytes=1)
    feed(journal, s.steps, {})
    journal.close()
    monkeypatch.setattr(journal_module, 'code_fingerprint', lambda: 'another-version')
    with pytest.raises(JournalError, match='another version of jwo fusion'):
        FusionJournal(store, SETTINGS, tmp_path, WALL0)


def test_a_line_fusion_fails_on_is_skipped_not_fatal(store, tmp_path):
    script = Script(store)
    script.visit('v1', 't1', ('S1-B1', -350.0))
    journal = FusionJournal(store, SETTINGS, tmp_path, WALL0)
    feed(journal, script.steps[:5], {})
    journal.close()
    with journal.path.open('a') as handle:
        handle.write(json.dumps({'k': 'gate', 'now': WALL0, 'event': {'event_id': 'G1/x'}}) + '\n')
    journal = FusionJournal(store, SETTINGS, tmp_path, WALL0)
    [(line, error)] = journal.recovery.failed
    assert line == 7 and 'TypeError' in error      # header, 5 inputs, then this one
    assert journal.recovery.inputs == 6


def test_another_stores_journal_or_a_second_user_is_refused(store, tmp_path):
    journal = FusionJournal(store, SETTINGS, tmp_path, WALL0)
    with pytest.raises(JournalError, match='another fusion_node'):
        FusionJournal(store, SETTINGS, tmp_path, WALL0)
    journal.close()
    header = json.loads(journal.path.read_text().splitlines()[0])
    journal.path.write_text(json.dumps({**header, 'store_id': 'elsewhere'}) + '\n')
    with pytest.raises(JournalError, match='elsewhere'):
        FusionJournal(store, SETTINGS, tmp_path, WALL0)


def test_what_a_hand_held_is_journaled_and_replayed(store, tmp_path):
    item = HeldItem(0.9, 0.25, 0.53)
    journal = FusionJournal(store, SETTINGS, tmp_path, WALL0)
    journal.on_positions(NS, [TrackInput('t1', 'v1', 2.0, 6.0, (2.0, 6.6), 1.0, item),
                              TrackInput('t2', 'v2', 5.0, 6.0, (5.0, 6.6), 1.0)], WALL0 + NS)
    journal.close()
    replayed = restart(store, tmp_path, WALL0 + 2 * NS, {})
    held = {w.track_id: w.samples[0].hand_item for w in replayed.core._tracks.windows(0, 2 * NS)}
    assert held == {'t1': item, 't2': None}
    replayed.close()


def test_a_restored_state_keeps_what_hands_showed_and_takes_the_catalogue_of_the_config_now(store):
    """Learnt packaging colours come back with the saved state; catalogue colours come
    from the config fusion restarts on (measured with `jwo product-colours` since)."""
    from dataclasses import replace
    from jwo_nodes.core.fusion.looks import Sighting
    core = FusionCore(store, SETTINGS)
    core._looks.learn('YOG-STRAW', 5 * NS, [Sighting(4 * NS, 1.0, 0.2, 0.3), Sighting(4 * NS, 1.0, 0.2, 0.3)])
    painted = replace(store, products={**store.products,
                                       'YOG-PLAIN': replace(store.products['YOG-PLAIN'], colour=(0.4, 0.35))})
    restored = FusionCore(painted, SETTINGS)
    restored.load_state(core.saved_state())
    later = 60 * NS
    assert restored._looks.colour('YOG-STRAW', later) == (0.2, 0.3)
    assert restored._looks.colour('YOG-PLAIN', later) == (0.4, 0.35)
    assert core._looks.colour('YOG-PLAIN', later) is None
