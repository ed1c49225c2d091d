"""The store simulator: a seeded scenario turned into a timeline of ground truth.

A scenario (YAML, see README "Scenario format") lists parties of shoppers with an
entry time, a gate, a credential and a script per person. ``Timeline`` plays the
scripts against the store's bins and yields what each simulated device needs (true
grams per bin, gate lines, floor positions) and what a scorer needs (the items each
party left with, every weight event). Pure and deterministic: no rclpy, no clocks.

Where shoppers stand depends on the store's layout (``store.layout``):

* ``aisle`` (the default): shelves along the walls; a shopper stands on the bin's
  point, one shopper per bin, and waits a step back into the aisle while it is taken.
* ``gondola``: gondolas in several aisles, each shelf facing its own way. A shopper
  stands at arm's length in front of the facing (0.4-0.6 m from the shelf's front
  edge, a little to one side of its middle), several work one gondola side by side,
  and a shopper waits (a step back into the aisle) only when nobody can stand within
  reach of the facing at least 0.5 m from everybody else. Shoppers walk around the
  gondolas, not through them.
"""
import bisect
import math
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import yaml

from jwo_nodes.core.config import SHELF_DEPTH_M, ConfigError, StoreConfig, check_keys, parse_yaml
from jwo_nodes.core.pricing import Measure, price_cart

NS = 1_000_000_000
CREDENTIAL_KINDS = ('qr', 'badge', 'card')
ACTIONS = ('walk_to', 'take', 'put_back', 'hand_to', 'linger', 'wait_until', 'leave')

# Body timing of one reach into a bin, seconds.
_DWELL_BEFORE_S = 0.6
_PRESS_S = 0.25
_RAMP_S = 0.45
_DWELL_AFTER_S = 0.6
# Group members pass the gate one after another, this far apart.
_GROUP_STAGGER_S = 0.5
# A person stays visible at the gate this long after the exit line fires.
_EXIT_VISIBLE_S = 0.3
# Waiting for a busy bin, a person stands this far back into the aisle.
_WAIT_BACK_M = 1.2

# Gondola layout (store.layout: gondola): a shopper stands this far in front of the
# shelf's front edge (arm's length, drawn per reach) ...
GONDOLA_STAND_M = (0.4, 0.6)
# ... this far to one side of the facing's middle (drawn per reach) ...
GONDOLA_SIDE_M = 0.1
# ... and, when somebody stands there, up to this far to the side still reaches it.
GONDOLA_REACH_SIDE_M = 0.3
# Two shoppers standing at shelves (or waiting) are at least this far apart.
GONDOLA_SPACING_M = 0.5
# Waiting for room at a facing, a shopper stands this far from the shelf's front edge.
GONDOLA_WAIT_M = 1.1
# Walking, a shopper's middle keeps this far from a gondola.
GONDOLA_CLEARANCE_M = 0.3


@dataclass(frozen=True)
class SimClock:
    """Maps scenario time to stamps and wall time: scenario time t is stamped
    ``start_ns + t`` and happens at wall time ``start_ns + t / time_scale``."""

    start_ns: int
    time_scale: float = 1.0

    def scenario_ns(self, wall_ns: int) -> int:
        return int((wall_ns - self.start_ns) * self.time_scale)

    def stamp_ns(self, t_ns: int) -> int:
        return self.start_ns + t_ns

    def due(self, rate_hz: float, published: int, wall_ns: int) -> range:
        """Indices of the samples at ``rate_hz`` that are due by now, after ``published``."""
        now = self.scenario_ns(wall_ns)
        if now < 0:
            return range(published, published)
        return range(published, int(now * rate_hz // NS) + 1)


@dataclass(frozen=True)
class Noise:
    loadcell_sigma_g: float = 1.0
    spike_rate_hz: float = 0.0
    spike_g: float = 40.0
    drift_g_per_15min: float = 0.0
    # Hand pressing on the shelf before a reach, grams (0 = none).
    press_g: float = 30.0
    dropped_messages: float = 0.0
    clock_jitter_ms: float = 0.0
    tracker_sigma_m: float = 0.05


@dataclass(frozen=True)
class Action:
    kind: str            # walk_to, take, put_back, hand_to, linger, wait_until, leave
    bin: str = ''
    sku: str = ''
    n: int = 1
    person: int = 0      # hand_to: index of the companion in the party
    seconds: float = 0.0


@dataclass(frozen=True)
class Party:
    id: str
    gate: str
    enter_at_ns: int
    credential_kind: str
    credential_token: str
    tap_out: bool
    scripts: tuple       # one tuple of Actions per person; person 0 pays


@dataclass(frozen=True)
class Scenario:
    path: str
    name: str
    seed: int
    noise: Noise
    parties: tuple
    walking_speed_mps: float = 1.0


@dataclass(frozen=True)
class SimPerson:
    person_id: str
    party_id: str
    x: float
    y: float


@dataclass(frozen=True)
class WeightEvent:
    """A true change of weight on one bin: what a perfect detector would report."""

    bin_id: str
    shelf_id: str
    start_ns: int        # hand starts pressing
    ramp_start_ns: int   # item starts leaving (or arriving)
    end_ns: int          # settled
    delta_grams: float
    press_grams: float
    party_id: str
    person_id: str
    sku: str
    n: int


@dataclass
class _Person:
    id: str
    party: Party
    index: int
    script: tuple
    t_ns: int
    x: float
    y: float
    keyframes: list = field(default_factory=list)   # (t_ns, x, y)
    hand: list = field(default_factory=list)        # (sku, grams)
    cursor: int = 0
    # Walked to the place of the action at cursor; it happens when its turn comes.
    arrived: bool = False
    # The bin whose standing point this person occupies, if any.
    at_bin: str = ''
    waiting: bool = False
    exit_ns: Optional[int] = None
    # Gondola layout: the floor point this person stands at (or is walking to) at a
    # shelf or waiting for one, which nobody else comes within GONDOLA_SPACING_M of;
    # and the bin whose facing it reaches ('' while waiting).
    spot: Optional[tuple] = None
    spot_bin: str = ''


def load_scenario(path, store: StoreConfig) -> Scenario:
    path = str(path)
    try:
        document = parse_yaml(Path(path).read_text())
    except OSError as error:
        raise ConfigError(path, '<file>', f'cannot read: {error.strerror}')
    except yaml.YAMLError as error:
        raise ConfigError(path, '<yaml>', f'malformed YAML: {error}')
    return parse_scenario(document, store, path)


def parse_scenario(document, store: StoreConfig, path: str = '<memory>') -> Scenario:
    def fail(key, problem):
        raise ConfigError(path, key, problem)

    if not isinstance(document, dict):
        fail('<root>', 'expected a mapping')
    check_keys(path, document, ('name', 'store', 'seed', 'noise', 'walking_speed_mps', 'parties'), '')
    store_id = document.get('store')
    if store_id is not None and store_id != store.store_id:
        fail('store', f'the scenario is for store {store_id!r}, not {store.store_id!r} ({store.path}): '
                      'give its store config (--store)')
    seed = document.get('seed', 0)
    if not isinstance(seed, int) or isinstance(seed, bool):
        fail('seed', f'expected an integer, got {seed!r}')
    noise_doc = document.get('noise', {}) or {}
    if not isinstance(noise_doc, dict):
        fail('noise', 'expected a mapping')
    check_keys(path, noise_doc, tuple(Noise.__dataclass_fields__), 'noise', 'noise knob')
    for key, value in noise_doc.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0 or not math.isfinite(value):
            fail(f'noise.{key}', f'expected a number >= 0, got {value!r}')
    noise = Noise(**{k: float(v) for k, v in noise_doc.items()})
    parties_doc = document.get('parties')
    if not isinstance(parties_doc, list) or not parties_doc:
        fail('parties', 'expected a non-empty list of parties')
    parties = []
    seen = set()
    for i, raw in enumerate(parties_doc):
        key = f'parties[{i}]'
        if not isinstance(raw, dict):
            fail(key, 'expected a mapping')
        check_keys(path, raw, ('id', 'gate', 'enter_at_s', 'credential', 'tap_out', 'script', 'scripts'), key)
        party_id = str(raw.get('id', ''))
        if not party_id or party_id in seen:
            fail(f'{key}.id', f'missing or duplicate party id {party_id!r}')
        seen.add(party_id)
        gate = raw.get('gate')
        if gate not in store.gates:
            fail(f'{key}.gate', f'unknown gate {gate!r}')
        enter_at = raw.get('enter_at_s')
        if isinstance(enter_at, bool) or not isinstance(enter_at, (int, float)) or enter_at < 0:
            fail(f'{key}.enter_at_s', f'expected seconds >= 0, got {enter_at!r}')
        credential = raw.get('credential', {})
        if isinstance(credential, dict):
            check_keys(path, credential, ('kind', 'token'), f'{key}.credential')
        kind = credential.get('kind') if isinstance(credential, dict) else None
        token = credential.get('token') if isinstance(credential, dict) else None
        if kind not in CREDENTIAL_KINDS:
            fail(f'{key}.credential.kind', f'expected one of {CREDENTIAL_KINDS}, got {kind!r}')
        if not isinstance(token, str) or not token or any(c.isspace() for c in token):
            fail(f'{key}.credential.token', 'expected a token without spaces')
        if 'script' in raw and 'scripts' in raw:
            fail(f'{key}.script', 'give script (one person) or scripts (one per person), not both')
        if 'scripts' in raw:
            scripts_doc = raw['scripts']
            if not isinstance(scripts_doc, list) or not scripts_doc:
                fail(f'{key}.scripts', 'expected a list with one script per person')
        else:
            scripts_doc = [raw.get('script')]
        scripts = tuple(
            _parse_script(s, store, f'{key}.scripts[{p}]' if 'scripts' in raw else f'{key}.script',
                          len(scripts_doc), fail, path)
            for p, s in enumerate(scripts_doc))
        if len(scripts) > 20:
            fail(f'{key}.scripts', 'a party has at most 20 people')
        parties.append(Party(id=party_id, gate=gate, enter_at_ns=int(round(enter_at * NS)),
                             credential_kind=kind, credential_token=token,
                             tap_out=bool(raw.get('tap_out', False)), scripts=scripts))
    speed = document.get('walking_speed_mps', 1.0)
    if isinstance(speed, bool) or not isinstance(speed, (int, float)) or speed <= 0:
        fail('walking_speed_mps', f'expected a speed > 0, got {speed!r}')
    return Scenario(path=path, name=str(document.get('name', Path(path).stem)), seed=seed,
                    noise=noise, parties=tuple(parties), walking_speed_mps=float(speed))


def _parse_script(raw, store: StoreConfig, key: str, people: int, fail, path: str) -> tuple:
    if not isinstance(raw, list):
        fail(key, 'expected a list of actions')
    actions = []
    for j, step in enumerate(raw):
        step_key = f'{key}[{j}]'
        if step == 'leave':
            actions.append(Action('leave'))
            continue
        if not isinstance(step, dict) or len(step) != 1:
            fail(step_key, 'expected one action: walk_to, take, put_back, hand_to, linger, wait_until or leave')
        check_keys(path, step, ACTIONS, step_key, 'action')
        kind, args = next(iter(step.items()))
        akey = f'{step_key}.{kind}'
        if kind == 'walk_to':
            actions.append(Action('walk_to', bin=_bin(args, store, akey, fail)))
        elif kind in ('take', 'put_back'):
            if not isinstance(args, dict):
                fail(akey, 'expected a mapping (bin, n, sku)')
            check_keys(path, args, ('bin', 'n', 'sku'), akey)
            bin_id = _bin(args.get('bin'), store, f'{akey}.bin', fail)
            n = args.get('n', 1)
            if isinstance(n, bool) or not isinstance(n, int) or n < 1:
                fail(f'{akey}.n', f'expected a count >= 1, got {n!r}')
            sku = args.get('sku', store.bin(bin_id).sku if kind == 'take' else None)
            if sku not in store.products:
                fail(f'{akey}.sku', f'unknown SKU {sku!r}')
            actions.append(Action(kind, bin=bin_id, sku=sku, n=n))
        elif kind == 'hand_to':
            if not isinstance(args, dict):
                fail(akey, 'expected a mapping (person, sku, n)')
            check_keys(path, args, ('person', 'sku', 'n'), akey)
            person = args.get('person')
            if not isinstance(person, int) or not 0 <= person < people:
                fail(f'{akey}.person', f'expected a companion index in this party (0..{people - 1})')
            sku = args.get('sku')
            if sku not in store.products:
                fail(f'{akey}.sku', f'unknown SKU {sku!r}')
            actions.append(Action('hand_to', sku=sku, n=int(args.get('n', 1)), person=person))
        elif kind in ('linger', 'wait_until'):
            spec = args if isinstance(args, dict) else {'s': args}
            check_keys(path, spec, ('s', 'at'), akey)
            seconds = spec.get('s')
            if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or seconds < 0:
                fail(f'{akey}.s', f'expected seconds >= 0, got {seconds!r}')
            bin_id = _bin(spec['at'], store, f'{akey}.at', fail) if 'at' in spec else ''
            actions.append(Action(kind, bin=bin_id, seconds=float(seconds)))
        else:
            fail(akey, "'leave' takes no arguments: write it alone")
    if not actions or actions[-1].kind != 'leave':
        actions.append(Action('leave'))
    return tuple(actions)


def _bin(value, store: StoreConfig, key: str, fail) -> str:
    if store.bin(str(value)) is None:
        fail(key, f'unknown bin {value!r}')
    return str(value)


def stable_seed(*parts) -> int:
    """A seed that depends only on its parts (Python's hash() changes per process)."""
    return zlib.crc32('/'.join(str(p) for p in parts).encode())


class Timeline:
    """Everything that happens in a scenario, with true weights and positions over time."""

    def __init__(self, scenario: Scenario, store: StoreConfig):
        self.scenario = scenario
        self.store = store
        rng = np.random.default_rng(stable_seed('timeline', scenario.seed))
        self._bin_items = {}
        for bin_ in store.bins.values():
            product = store.products[bin_.sku]
            self._bin_items[bin_.id] = [
                (bin_.sku, _unit_weight(product, rng)) for _ in range(bin_.initial_units)]
        self._base_grams = {b: sum(w for _, w in items) for b, items in self._bin_items.items()}
        self.weight_events = []
        self._gate_lines = {gate_id: [] for gate_id in store.gates}
        self.exits = []
        self._gondola = store.layout == 'gondola'
        self._floor = _Floor(store) if self._gondola else None
        self._persons = self._play(rng)
        self._events_by_bin = {b: [] for b in store.bins}
        for event in self.weight_events:
            self._events_by_bin[event.bin_id].append(event)
        for events in self._events_by_bin.values():
            events.sort(key=lambda e: e.start_ns)
        self._settled = {b: ([e.end_ns for e in events],
                             [float(c) for c in np.cumsum([e.delta_grams for e in events])])
                         for b, events in self._events_by_bin.items()}
        for lines in self._gate_lines.values():
            lines.sort()
        self.duration_ns = max([p.exit_ns for p in self._persons] + [0]) + NS

    # -- what the simulated devices read -------------------------------------------

    def bin_grams(self, shelf_id: str, t_ns: int) -> list:
        return [self._grams(b.id, t_ns) for b in self.store.shelves[shelf_id].bins]

    def gate_lines(self, gate_id: str) -> list:
        return list(self._gate_lines[gate_id])

    def positions(self, t_ns: int) -> list:
        people = []
        for person in self._persons:
            frames = person.keyframes
            if t_ns < frames[0][0] or t_ns > person.exit_ns + int(_EXIT_VISIBLE_S * NS):
                continue
            x, y = _interpolate(frames, t_ns)
            people.append(SimPerson(person.id, person.party.id, x, y))
        return people

    # -- what a scorer reads ---------------------------------------------------------

    def expected_items(self) -> dict:
        """party id -> Counter of SKUs the party walked out with."""
        items = {party.id: Counter() for party in self.scenario.parties}
        for person in self._persons:
            items[person.party.id].update(sku for sku, _ in person.hand)
        return items

    def expected_receipt(self, party_id: str, epoch_ns: int = 0) -> dict:
        """The receipt a perfect system issues for a party (integer cents), priced by
        jwo_nodes.core.pricing at the party's last exit (scenario time from
        ``epoch_ns``): what it walked out with, products sold by weight at the grams its
        pieces truly weighed."""
        counts, grams = Counter(), Counter()
        exit_ns = 0
        for person in self._persons:
            if person.party.id != party_id:
                continue
            exit_ns = max(exit_ns, person.exit_ns or 0)
            for sku, weight in person.hand:
                counts[sku] += 1
                grams[sku] += weight
        basket = {sku: round(grams[sku]) if self.store.products[sku].sold_by_weight else n
                  for sku, n in counts.items() if n > 0}
        priced = price_cart(self.store, basket, epoch_ns + exit_ns)
        lines = [{'sku': line.sku, 'name': line.name, 'quantity': counts[line.sku],
                  'unit_price_cents': line.unit_price_cents, 'line_total_cents': line.line_total_cents,
                  'grams': line.quantity if line.measure is Measure.GRAMS else 0}
                 for line in priced.lines]
        return {'party_id': party_id, 'lines': lines,
                'savings': [{'promotion_id': s.promotion_id, 'name': s.name, 'cents': s.cents}
                            for s in priced.savings],
                'savings_cents': priced.savings_cents, 'subtotal_cents': priced.subtotal_cents,
                'tax_cents': priced.tax_cents, 'total_cents': priced.total_cents}

    def party_at_entry(self, gate_id: str, t_ns: int, tolerance_ns: int = NS // 1000) -> Optional[str]:
        """The party whose ENTRY line fired at this gate at this scenario time."""
        for party in self.scenario.parties:
            if party.gate == gate_id and abs(party.enter_at_ns - t_ns) <= tolerance_ns:
                return party.id
        return None

    # -- the play ----------------------------------------------------------------------

    def _grams(self, bin_id: str, t_ns: int) -> float:
        ends, cumulative = self._settled[bin_id]
        settled = bisect.bisect_right(ends, t_ns)
        grams = self._base_grams[bin_id] + (cumulative[settled - 1] if settled else 0.0)
        for event in self._events_by_bin[bin_id][settled:]:
            if event.start_ns > t_ns:
                break
            if t_ns < event.ramp_start_ns:
                grams += event.press_grams
            else:
                grams += event.delta_grams * (t_ns - event.ramp_start_ns) / (event.end_ns - event.ramp_start_ns)
        return grams

    def _play(self, rng) -> list:
        persons = []
        for party in self.scenario.parties:
            gate = self.store.gates[party.gate]
            line = f'ENTRY {party.credential_kind} {party.credential_token} {len(party.scripts)}'
            self._gate_lines[party.gate].append((party.enter_at_ns, line))
            for index, script in enumerate(party.scripts):
                person_id = party.id if len(party.scripts) == 1 else f'{party.id}#{index + 1}'
                t = party.enter_at_ns + int(index * _GROUP_STAGGER_S * NS)
                person = _Person(id=person_id, party=party, index=index, script=script,
                                 t_ns=t, x=gate.x, y=gate.y)
                person.keyframes.append((t, gate.x, gate.y))
                persons.append(person)
        by_party = {}
        for person in persons:
            by_party.setdefault(person.party.id, []).append(person)
        # Play actions in global time order (walking first, then the action at the time
        # it happens) so shared bins and hand-offs see everything in turn.
        while True:
            active = [p for p in persons if p.exit_ns is None]
            if not active:
                break
            person = min(active, key=lambda p: (p.t_ns, p.id))
            action = person.script[person.cursor]
            if not person.arrived and self._gondola:
                person.arrived = self._approach(persons, person, action, rng)
                continue
            if not person.arrived:
                occupant = self._occupant(persons, person, action)
                if occupant is not None:
                    self._wait_turn(person, action, occupant, rng)
                    continue
                self._walk_for(person, action)
                person.arrived = True
                continue
            person.cursor += 1
            person.arrived = False
            self._act(person, action, by_party[person.party.id], rng)
        return persons

    @staticmethod
    def _target_bin(action: Action) -> str:
        return action.bin if action.kind in ('walk_to', 'take', 'put_back', 'linger') else ''

    def _occupant(self, persons: list, person: _Person, action: Action) -> Optional[_Person]:
        """Someone else standing at the bin this action needs (one shopper per bin)."""
        target = self._target_bin(action)
        if not target or person.at_bin == target:
            return None
        return next((o for o in persons if o is not person and o.exit_ns is None and o.at_bin == target), None)

    def _wait_turn(self, person: _Person, action: Action, occupant: _Person, rng) -> None:
        """Waits a step back into the aisle until the occupant has moved on."""
        if not person.waiting:
            bin_ = self.store.bin(action.bin)
            back = bin_.y + (_WAIT_BACK_M if self.store.centre_y > bin_.y else -_WAIT_BACK_M)
            self._walk(person, bin_.x, back, self.scenario.walking_speed_mps)
            person.at_bin, person.waiting = '', True
        self._stay(person, max(person.t_ns, occupant.t_ns) + 1, rng)

    def _walk_for(self, person: _Person, action: Action) -> None:
        person.waiting = False
        target_bin = self._target_bin(action)
        if target_bin:
            target = self.store.bin(target_bin)
        elif action.kind == 'leave':
            target = self.store.gates[person.party.gate]
        else:
            return
        person.at_bin = target_bin
        self._walk(person, target.x, target.y, self.scenario.walking_speed_mps)

    # -- gondola layout -------------------------------------------------------------------

    def _approach(self, persons: list, person: _Person, action: Action, rng) -> bool:
        """Gondola layout: goes where the action happens; False while waiting for room."""
        target_bin = self._target_bin(action)
        speed = self.scenario.walking_speed_mps
        if action.kind == 'leave':
            gate = self.store.gates[person.party.gate]
            person.spot, person.spot_bin, person.waiting = None, '', False
            self._walk_around(person, gate.x, gate.y, speed)
            return True
        if not target_bin:
            return True
        if person.spot_bin and self._in_reach(person.spot, target_bin):
            person.spot_bin = target_bin
            return True
        spot, blockers = self._free_spot(persons, person, target_bin)
        if spot is None:
            if not person.waiting:
                wait = self._wait_spot(persons, person, target_bin)
                person.spot, person.spot_bin, person.waiting = wait, '', True
                self._walk_around(person, wait[0], wait[1], speed)
            self._stay(person, max(person.t_ns, min(o.t_ns for o in blockers)) + 1, rng)
            return False
        person.spot, person.spot_bin, person.waiting = spot, target_bin, False
        self._walk_around(person, spot[0], spot[1], speed)
        return True

    def _in_reach(self, spot: Optional[tuple], bin_id: str) -> bool:
        """Whether somebody standing at a spot reaches into a bin without moving."""
        if spot is None:
            return False
        (cx, cy), (fx, fy) = self.store.face_point(bin_id), self.store.facing(bin_id)
        depth = (spot[0] - cx) * fx + (spot[1] - cy) * fy
        side = (spot[0] - cx) * -fy + (spot[1] - cy) * fx
        return (GONDOLA_STAND_M[0] - 1e-9 <= depth <= GONDOLA_STAND_M[1] + 1e-9
                and abs(side) <= GONDOLA_REACH_SIDE_M + 1e-9)

    def _others(self, persons: list, person: _Person) -> list:
        return [o for o in persons if o is not person and o.exit_ns is None and o.spot is not None]

    def _free_spot(self, persons: list, person: _Person, bin_id: str) -> tuple:
        """(spot, []) where this person would stand to reach a bin, at least
        GONDOLA_SPACING_M from everybody else's spot: at arm's length in front of the
        facing, a little to the side (drawn per person and action), or farther to the
        side within reach when somebody stands there; (None, the people in the way)
        when there is no room."""
        draw = np.random.default_rng(stable_seed('spot', self.scenario.seed, person.id, person.cursor))
        depth = float(draw.uniform(*GONDOLA_STAND_M))
        side = float(draw.uniform(-GONDOLA_SIDE_M, GONDOLA_SIDE_M))
        (cx, cy), (fx, fy) = self.store.face_point(bin_id), self.store.facing(bin_id)
        others = self._others(persons, person)
        standing = [o for o in others if not o.waiting]
        steps = int(round(GONDOLA_REACH_SIDE_M / 0.05))
        offsets = sorted({round(k * 0.05, 2) for k in range(-steps, steps + 1)} | {side},
                         key=lambda o: (abs(o - side), o))
        spots = [(cx + fx * depth - fy * offset, cy + fy * depth + fx * offset) for offset in offsets]
        # Room away from everybody; else room away from those at shelves (somebody
        # waiting steps aside: waiting for each other, nobody would ever reach in).
        for crowd in (others, standing):
            for x, y in spots:
                if all(math.hypot(o.spot[0] - x, o.spot[1] - y) >= GONDOLA_SPACING_M for o in crowd):
                    return (x, y), []
        x, y = cx + fx * depth, cy + fy * depth
        reach = GONDOLA_SPACING_M + GONDOLA_REACH_SIDE_M + GONDOLA_SIDE_M
        return None, [o for o in standing if math.hypot(o.spot[0] - x, o.spot[1] - y) < reach] or standing

    def _wait_spot(self, persons: list, person: _Person, bin_id: str) -> tuple:
        """Where to wait for room at a facing: a step back into the aisle, to the side
        when somebody already stands or waits there."""
        (cx, cy), (fx, fy) = self.store.face_point(bin_id), self.store.facing(bin_id)
        others = self._others(persons, person)
        best, best_gap = (cx + fx * GONDOLA_WAIT_M, cy + fy * GONDOLA_WAIT_M), -1.0
        for back in (GONDOLA_WAIT_M, GONDOLA_WAIT_M + GONDOLA_SPACING_M):
            for offset in (0.0, 0.25, -0.25, 0.5, -0.5, 0.75, -0.75, 1.0, -1.0):
                x, y = cx + fx * back - fy * offset, cy + fy * back + fx * offset
                if self._floor.blocked((x, y)):
                    continue
                gap = min((math.hypot(o.spot[0] - x, o.spot[1] - y) for o in others), default=math.inf)
                if gap >= GONDOLA_SPACING_M:
                    return x, y
                if gap > best_gap:
                    best, best_gap = (x, y), gap
        return best

    def _walk_around(self, person: _Person, x: float, y: float, speed: float) -> None:
        """Walks to a point around the gondolas in the way."""
        for wx, wy in self._floor.path((person.x, person.y), (x, y)):
            self._walk(person, wx, wy, speed)

    def _act(self, person: _Person, action: Action, party_people: list, rng) -> None:
        store = self.store
        where = f'person {person.index}'
        if action.kind in ('take', 'put_back'):
            bin_ = store.bin(action.bin)
            items = self._bin_items[bin_.id]
            if action.kind == 'take':
                chosen = [i for i, (sku, _) in enumerate(items) if sku == action.sku][-action.n:]
                if len(chosen) < action.n:
                    raise ConfigError(self.scenario.path, f'party {person.party.id}',
                                      f'takes {action.n} {action.sku} from {bin_.id}, which holds fewer')
                moved = [items[i] for i in chosen]
                for i in reversed(chosen):
                    del items[i]
                person.hand.extend(moved)
                delta = -sum(w for _, w in moved)
            else:
                held = [i for i, (sku, _) in enumerate(person.hand) if sku == action.sku][:action.n]
                if len(held) < action.n:
                    raise ConfigError(self.scenario.path, f'party {person.party.id}',
                                      f'{where} puts back {action.n} {action.sku} but holds fewer')
                moved = [person.hand[i] for i in held]
                for i in reversed(held):
                    del person.hand[i]
                items.extend(moved)
                delta = sum(w for _, w in moved)
            start = person.t_ns + int(_DWELL_BEFORE_S * NS)
            ramp = start + int(_PRESS_S * NS)
            end = ramp + int(_RAMP_S * NS)
            press = float(self.scenario.noise.press_g * rng.uniform(0.5, 1.5))
            self.weight_events.append(WeightEvent(
                bin_id=bin_.id, shelf_id=bin_.shelf_id, start_ns=start, ramp_start_ns=ramp,
                end_ns=end, delta_grams=delta, press_grams=press, party_id=person.party.id,
                person_id=person.id, sku=action.sku, n=action.n))
            self._stay(person, end + int(_DWELL_AFTER_S * NS), rng)
        elif action.kind == 'hand_to':
            companion = party_people[action.person]
            held = [i for i, (sku, _) in enumerate(person.hand) if sku == action.sku][:action.n]
            if len(held) < action.n:
                raise ConfigError(self.scenario.path, f'party {person.party.id}',
                                  f'{where} hands over {action.n} {action.sku} but holds fewer')
            for i in reversed(held):
                companion.hand.append(person.hand.pop(i))
        elif action.kind == 'linger':
            self._stay(person, person.t_ns + int(action.seconds * NS), rng)
        elif action.kind == 'wait_until':
            self._stay(person, max(person.t_ns, int(action.seconds * NS)), rng)
        elif action.kind == 'leave':
            person.exit_ns = person.t_ns
            tap = person.party.tap_out and person.index == 0
            line = f'EXIT {person.party.credential_kind} {person.party.credential_token}' if tap else 'EXIT'
            self._gate_lines[person.party.gate].append((person.t_ns, line))
            self.exits.append((person.t_ns, person.party.gate, person.party.id, person.id))

    @staticmethod
    def _walk(person: _Person, x: float, y: float, speed: float) -> None:
        distance = math.hypot(x - person.x, y - person.y)
        if distance < 1e-6:
            return
        person.t_ns += int(distance / speed * NS)
        person.x, person.y = x, y
        person.keyframes.append((person.t_ns, x, y))

    def _stay(self, person: _Person, until_ns: int, rng) -> None:
        """Stands still (with a little sway) until a time."""
        sigma = self.scenario.noise.tracker_sigma_m
        t = person.t_ns
        while t + NS // 2 < until_ns:
            t += NS // 2
            person.keyframes.append((t, person.x + float(rng.normal(0, sigma)),
                                     person.y + float(rng.normal(0, sigma))))
        person.t_ns = max(person.t_ns, until_ns)
        person.keyframes.append((person.t_ns, person.x, person.y))


class _Floor:
    """The gondolas as obstacles on the floor, and the shortest walk around them: each
    gondola side is a rectangle from its shelves' front edge to their back (the sides of
    a double-sided gondola join), widened by GONDOLA_CLEARANCE_M; a walk that would cross
    one goes by the corners of the widened rectangles."""

    def __init__(self, store: StoreConfig):
        sides = {}
        for shelf in store.shelves.values():
            if not shelf.bins:
                continue
            fx, fy = store.facing(shelf.bins[0].id)
            cx, cy = store.face_point(shelf.bins[0].id)
            line = round(cx * fx + cy * fy, 2)
            key = (round(fx, 3), round(fy, 3), line)
            for b in shelf.bins:
                bx, by = store.face_point(b.id)
                along = bx * -fy + by * fx
                half = store.facing_half_width(b.id)
                low, high = sides.get(key, (math.inf, -math.inf))
                sides[key] = (min(low, along - half), max(high, along + half))
        depth = SHELF_DEPTH_M
        # (facing, front edge along it, along-shelf range, range along the facing): the
        # along-shelf axis is the facing turned 90 degrees counterclockwise.
        self._boxes = []
        for (fx, fy, line), (low, high) in sides.items():
            self._boxes.append(((fx, fy), line, (low, high), (line - depth, line)))
        self._corners = []
        margin = GONDOLA_CLEARANCE_M + 0.05
        for (fx, fy), _line, (low, high), (near, far) in self._boxes:
            for along in (low - margin, high + margin):
                for across in (near - margin, far + margin):
                    point = (along * -fy + across * fx, along * fx + across * fy)
                    if not any(self._inside(box, point, GONDOLA_CLEARANCE_M + 0.01) for box in self._boxes):
                        self._corners.append(point)
        self._links = None   # corner -> the corners seen from it, when first needed

    @staticmethod
    def _local(box, point) -> tuple:
        (fx, fy) = box[0]
        return point[0] * -fy + point[1] * fx, point[0] * fx + point[1] * fy

    def _inside(self, box, point, grow: float) -> bool:
        along, across = self._local(box, point)
        (low, high), (near, far) = box[2], box[3]
        return low - grow < along < high + grow and near - grow < across < far + grow

    def blocked(self, point: tuple) -> bool:
        """Whether a point is too close to a gondola to stand there."""
        return any(self._inside(box, point, GONDOLA_CLEARANCE_M) for box in self._boxes)

    def _crosses(self, a: tuple, b: tuple) -> bool:
        """Whether the segment a-b passes through a widened gondola (one that holds a or
        b does not count: the walk starts or ends beside it)."""
        grow = GONDOLA_CLEARANCE_M
        for box in self._boxes:
            if self._inside(box, a, grow) or self._inside(box, b, grow):
                continue
            (a0, a1), (b0, b1) = self._local(box, a), self._local(box, b)
            (low, high), (near, far) = box[2], box[3]
            t0, t1 = 0.0, 1.0
            for p, d, lo, hi in ((a0, b0 - a0, low - grow, high + grow), (a1, b1 - a1, near - grow, far + grow)):
                if abs(d) < 1e-12:
                    if not lo < p < hi:
                        t0, t1 = 1.0, 0.0
                    continue
                u, v = (lo - p) / d, (hi - p) / d
                t0, t1 = max(t0, min(u, v)), min(t1, max(u, v))
            if t1 - t0 > 1e-9:
                return True
        return False

    def path(self, start: tuple, goal: tuple) -> list:
        """The points to walk through from start to goal (goal last)."""
        if not self._crosses(start, goal):
            return [goal]
        corners = self._corners
        if self._links is None:
            self._links = [[j for j in range(len(corners)) if j != i and not self._crosses(corners[i], corners[j])]
                           for i in range(len(corners))]
        to_goal = {j for j in range(len(corners)) if not self._crosses(corners[j], goal)}
        # Dijkstra over the corners, from those seen from the start to one that sees the goal.
        best = {j: math.dist(start, corners[j]) for j in range(len(corners))
                if not self._crosses(start, corners[j])}
        previous, done = {}, set()
        finish, finish_d = None, math.inf
        while True:
            open_ = [(d, j) for j, d in best.items() if j not in done]
            if not open_:
                break
            d, i = min(open_)
            if d >= finish_d:
                break
            done.add(i)
            if i in to_goal and d + math.dist(corners[i], goal) < finish_d:
                finish, finish_d = i, d + math.dist(corners[i], goal)
            for j in self._links[i]:
                dj = d + math.dist(corners[i], corners[j])
                if j not in done and dj < best.get(j, math.inf):
                    best[j], previous[j] = dj, i
        if finish is None:
            return [goal]
        points, i = [goal], finish
        while i is not None:
            points.append(corners[i])
            i = previous.get(i)
        return points[::-1]


def _unit_weight(product, rng) -> float:
    # Real units spread within the catalogue tolerance.
    return float(product.unit_grams + rng.uniform(-0.6, 0.6) * product.tolerance_grams)


def _interpolate(frames: list, t_ns: int) -> tuple:
    times = [f[0] for f in frames]
    i = bisect.bisect_right(times, t_ns)
    if i == 0:
        return frames[0][1], frames[0][2]
    if i == len(frames):
        return frames[-1][1], frames[-1][2]
    (t0, x0, y0), (t1, x1, y1) = frames[i - 1], frames[i]
    a = (t_ns - t0) / (t1 - t0) if t1 > t0 else 1.0
    return x0 + a * (x1 - x0), y0 + a * (y1 - y0)
