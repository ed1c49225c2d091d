"""Random scenarios from a seed, with presets `easy`, `medium` and `hard` for any store,
and `corner_medium` and `corner_hard` for the real-store layout config/stores/corner.yaml
(gondolas in several aisles: several shoppers side by side at one gondola, flavours of
one brand that weigh the same next to each other).

The output is a scenario document (the YAML format of jwo_nodes.core.sim), so a
generated scenario can be written out, read, edited and replayed like a hand-written
one. Pure: no rclpy, no clocks; the same (store, preset, seed) gives the same document.
"""
import dataclasses
from collections import Counter
from dataclasses import dataclass

import numpy as np

from jwo_nodes.core.config import ConfigError, StoreConfig
from jwo_nodes.core.sim import GONDOLA_SPACING_M, stable_seed

# Products whose units weigh within this of each other are twins (flavours of one brand).
TWIN_GRAMS = 5.0


@dataclass(frozen=True)
class Preset:
    parties: int
    entry_gap_s: tuple          # (min, max) seconds between entries: crowding
    group_share: float          # share of parties with 2-3 people
    steps: tuple                # (min, max) shelf actions per person
    max_take: int
    put_back_share: float       # share of takes later put back
    wrong_bin_share: float      # of put-backs, share left on another bin
    linger_share: float
    meet_share: float           # share of takes staged beside another shopper
    handoff_share: float        # of group members holding items, share who hand one over
    noise: dict
    # The store (its id) the preset is made for, and its config; '' for any store.
    store: str = ''
    store_config: str = ''
    # Shoppers staged side by side at one shelf (gondola layout: one gondola side, at
    # facings at least GONDOLA_SPACING_M apart): (min, max) per meeting.
    meet_size: tuple = (2, 2)
    # Share of a shopper's takes from a twin of a product they already took (the lemon
    # soda after the cola), and of meetings where the second shopper reaches for a twin
    # of the first one's product.
    twin_share: float = 0.0
    # Of put-backs on another bin, share left on a neighbouring facing of the same shelf.
    wrong_neighbour_share: float = 0.0


PRESETS = {
    'easy': Preset(parties=6, entry_gap_s=(12.0, 18.0), group_share=0.0, steps=(1, 3), max_take=2,
                   put_back_share=0.1, wrong_bin_share=0.0, linger_share=0.1, meet_share=0.0,
                   handoff_share=0.0,
                   noise=dict(loadcell_sigma_g=1.0, spike_rate_hz=0.0, spike_g=30.0,
                              drift_g_per_15min=1.0, press_g=20.0, tracker_sigma_m=0.03)),
    'medium': Preset(parties=10, entry_gap_s=(5.0, 10.0), group_share=0.2, steps=(1, 4), max_take=3,
                     put_back_share=0.2, wrong_bin_share=0.5, linger_share=0.2, meet_share=0.15,
                     handoff_share=0.5,
                     noise=dict(loadcell_sigma_g=2.0, spike_rate_hz=0.05, spike_g=40.0,
                                drift_g_per_15min=3.0, press_g=40.0, tracker_sigma_m=0.06,
                                clock_jitter_ms=2.0)),
    'hard': Preset(parties=14, entry_gap_s=(2.0, 6.0), group_share=0.3, steps=(2, 5), max_take=3,
                   put_back_share=0.35, wrong_bin_share=0.6, linger_share=0.3, meet_share=0.3,
                   handoff_share=0.7,
                   noise=dict(loadcell_sigma_g=4.0, spike_rate_hz=0.2, spike_g=60.0,
                              drift_g_per_15min=10.0, press_g=60.0, tracker_sigma_m=0.1,
                              dropped_messages=0.01, clock_jitter_ms=5.0)),
}
# The real-store layout: medium's and hard's knobs, with more shoppers side by side at
# one gondola (2-3 at a time), more takes of same-weight flavours and put-backs on the
# neighbouring facing.
PRESETS['corner_medium'] = dataclasses.replace(
    PRESETS['medium'], store='corner', store_config='config/stores/corner.yaml',
    meet_share=0.35, meet_size=(2, 3), twin_share=0.3, wrong_neighbour_share=0.6)
PRESETS['corner_hard'] = dataclasses.replace(
    PRESETS['hard'], store='corner', store_config='config/stores/corner.yaml',
    meet_share=0.5, meet_size=(2, 3), twin_share=0.4, wrong_neighbour_share=0.6)


def generate(store: StoreConfig, preset: str, seed: int, **changes) -> dict:
    """A scenario document for the store: parties with scripts, and the preset's noise.
    ``changes`` replace fields of the preset (e.g. ``parties=30``)."""
    if preset not in PRESETS:
        raise ValueError(f'unknown preset {preset!r} (known: {", ".join(PRESETS)})')
    p = dataclasses.replace(PRESETS[preset], **changes)
    if p.store and p.store != store.store_id:
        raise ConfigError(store.path, 'store.id', f'preset {preset} is made for store {p.store!r} '
                          f'({p.store_config}), not {store.store_id!r}')
    rng = np.random.default_rng(stable_seed('scenario', preset, seed))
    bins = sorted(store.bins)
    gates = sorted(store.gates)
    stock = {b: store.bin(b).initial_units for b in bins}
    parties = []
    t = 1.0
    for index in range(p.parties):
        people = 1 if rng.random() >= p.group_share else int(rng.integers(2, 4))
        scripts = [_script(store, p, rng, bins, stock) for _ in range(people)]
        if people > 1:
            _add_handoff(store, scripts, p, rng)
        kind = ('qr', 'badge', 'card')[int(rng.integers(0, 3))]
        party = {'id': f'p{index + 1:02d}', 'gate': gates[int(rng.integers(0, len(gates)))],
                 'enter_at_s': round(t, 2),
                 'credential': {'kind': kind, 'token': f'{kind}-{seed}-{index + 1}-{int(rng.integers(1e6))}'},
                 'tap_out': bool(rng.random() < 0.2)}
        if people == 1:
            party['script'] = scripts[0]
        else:
            party['scripts'] = scripts
        parties.append(party)
        t += float(rng.uniform(*p.entry_gap_s))
    if store.layout == 'gondola':
        _stage_side_by_side(parties, store, p, rng, stock)
    else:
        _stage_meetings(parties, store, p, rng, stock)
    document = {'name': f'{preset}-{seed}'}
    if p.store:
        document['store'] = p.store
    document.update({'seed': int(seed), 'noise': dict(p.noise), 'parties': parties})
    return document


def _script(store: StoreConfig, p: Preset, rng, bins: list, stock: dict) -> list:
    script, held = [], []
    for _ in range(int(rng.integers(p.steps[0], p.steps[1] + 1))):
        bin_id = bins[int(rng.integers(0, len(bins)))]
        if p.twin_share and held and rng.random() < p.twin_share:
            twins = _twin_bins(store, bins, set(held), stock)
            if twins:
                bin_id = twins[int(rng.integers(0, len(twins)))]
        if rng.random() < p.linger_share:
            script.append({'linger': {'at': bin_id, 's': round(float(rng.uniform(2, 6)), 1)}})
            continue
        n = min(int(rng.integers(1, p.max_take + 1)), stock[bin_id])
        if n < 1:
            continue
        stock[bin_id] -= n
        script.append({'take': {'bin': bin_id, 'n': n}})
        held.extend([store.bin(bin_id).sku] * n)
    for sku in list(held):
        if rng.random() >= p.put_back_share:
            continue
        home = [b for b in bins if store.bin(b).sku == sku]
        target = home[0]
        if rng.random() < p.wrong_bin_share:
            neighbours = _neighbours(store, target) if p.wrong_neighbour_share else []
            if neighbours and rng.random() < p.wrong_neighbour_share:
                target = neighbours[int(rng.integers(0, len(neighbours)))]
            else:
                target = _wrong_bin(store, sku, bins, rng)
        script.append({'put_back': {'bin': target, 'sku': sku}})
        held.remove(sku)
    script.append('leave')
    return script


def _twin_bins(store: StoreConfig, bins: list, skus: set, stock: dict) -> list:
    """Bins in stock holding a twin of one of these products (another product that
    weighs within TWIN_GRAMS)."""
    weights = [store.products[s].unit_grams for s in skus]
    return [b for b in bins if stock[b] > 0 and store.bin(b).sku not in skus
            and any(abs(store.products[store.bin(b).sku].unit_grams - w) <= TWIN_GRAMS for w in weights)]


def _neighbours(store: StoreConfig, bin_id: str) -> list:
    """The facings next to a bin on its shelf (holding other products)."""
    bin_ = store.bin(bin_id)
    ids = [b.id for b in store.shelves[bin_.shelf_id].bins]
    i = ids.index(bin_id)
    return [b for b in ids[max(0, i - 1):i + 2] if store.bin(b).sku != bin_.sku]


def _wrong_bin(store: StoreConfig, sku: str, bins: list, rng) -> str:
    """Another bin; half the time one holding a product of the same weight, if any."""
    weight = store.products[sku].unit_grams
    others = [b for b in bins if store.bin(b).sku != sku]
    twins = [b for b in others
             if abs(store.products[store.bin(b).sku].unit_grams - weight) <= store.products[sku].tolerance_grams]
    pool = twins if twins and rng.random() < 0.5 else others
    return pool[int(rng.integers(0, len(pool)))]


def _add_handoff(store: StoreConfig, scripts: list, p: Preset, rng) -> None:
    """Some companions hand the payer one item they still hold, before leaving."""
    for script in scripts[1:]:
        held = Counter()
        for step in script:
            if isinstance(step, dict) and 'take' in step:
                held[store.bin(step['take']['bin']).sku] += step['take']['n']
            elif isinstance(step, dict) and 'put_back' in step:
                held[step['put_back']['sku']] -= 1
        kept = sorted(sku for sku, n in held.items() if n > 0)
        if kept and rng.random() < p.handoff_share:
            sku = kept[int(rng.integers(0, len(kept)))]
            script.insert(len(script) - 1, {'hand_to': {'person': 0, 'sku': sku}})


def _stage_meetings(parties: list, store: StoreConfig, p: Preset, rng, stock: dict) -> None:
    """Some consecutive parties first meet at one shelf: each takes one item from
    neighbouring bins at the same scenario time (two shoppers reaching side by side)."""
    shelves = sorted(store.shelves)
    for first, second in zip(parties, parties[1:]):
        if rng.random() >= p.meet_share:
            continue
        shelf = store.shelves[shelves[int(rng.integers(0, len(shelves)))]]
        ids = [b.id for b in shelf.bins]
        if len(ids) < 2:
            # No neighbouring bins to meet at. Skipped after the draw, so every other
            # seed makes the scenario it always made.
            continue
        i = int(rng.integers(0, len(ids) - 1))
        pair = ids[i], ids[i + 1]
        if any(stock[b] < 1 for b in pair):
            continue
        meet_at = round(second['enter_at_s'] + 12.0, 1)
        for party, bin_id in zip((first, second), pair):
            stock[bin_id] -= 1
            script = party.get('script') or party['scripts'][0]
            script[0:0] = [{'walk_to': bin_id}, {'wait_until': {'s': meet_at}},
                           {'take': {'bin': bin_id, 'n': 1}}]


def _stage_side_by_side(parties: list, store: StoreConfig, p: Preset, rng, stock: dict) -> None:
    """Gondola layout: some runs of consecutive parties (p.meet_size of them) first meet
    at one gondola side: each takes one item, all at the same scenario time, from facings
    (on any level) at least GONDOLA_SPACING_M apart along the gondola, so they stand side
    by side; with p.twin_share the others reach for twins of the first one's product
    where the gondola side has them."""
    sides = {}
    for bin_ in store.bins.values():
        fx, fy = store.facing(bin_.id)
        cx, cy = store.face_point(bin_.id)
        key = (round(fx, 3), round(fy, 3), round(cx * fx + cy * fy, 2))
        sides.setdefault(key, []).append((round(cx * -fy + cy * fx, 3), bin_.id))
    keys = sorted(sides)
    index = 0
    while index < len(parties) - 1:
        if rng.random() >= p.meet_share:
            index += 1
            continue
        size = min(int(rng.integers(p.meet_size[0], p.meet_size[1] + 1)), len(parties) - index)
        group = parties[index:index + size]
        side = sorted(sides[keys[int(rng.integers(0, len(keys)))]])
        chosen = []
        order = [int(i) for i in rng.permutation(len(side))]
        twins = p.twin_share and rng.random() < p.twin_share
        for i in order:
            along, bin_id = side[i]
            if stock[bin_id] < 1 or any(abs(along - a) < GONDOLA_SPACING_M + 0.05 for a, _ in chosen):
                continue
            chosen.append((along, bin_id))
            if len(chosen) == size:
                break
        if twins and len(chosen) > 1:
            first = store.products[store.bin(chosen[0][1]).sku].unit_grams
            for k in range(1, len(chosen)):
                taken = {b for _, b in chosen}
                twins_here = [(a, b) for a, b in side if b not in taken and stock[b] > 0
                              and abs(store.products[store.bin(b).sku].unit_grams - first) <= TWIN_GRAMS
                              and all(abs(a - c) >= GONDOLA_SPACING_M + 0.05
                                      for c, _ in chosen[:k] + chosen[k + 1:])]
                if twins_here:
                    chosen[k] = twins_here[int(rng.integers(0, len(twins_here)))]
        if len(chosen) < 2:
            index += 1
            continue
        meet_at = round(group[len(chosen) - 1]['enter_at_s'] + 12.0, 1)
        for party, (_, bin_id) in zip(group, chosen):
            stock[bin_id] -= 1
            script = party.get('script') or party['scripts'][0]
            script[0:0] = [{'walk_to': bin_id}, {'wait_until': {'s': meet_at}},
                           {'take': {'bin': bin_id, 'n': 1}}]
        index += len(chosen)
