"""Joint decisions over the weight changes of the visits still open: a beam of
hypotheses, each one explanation of every change (which visit, which product, how
many) with the carts and bins that follow from it. A put-back must come from a cart
that holds the item, a stray unit can be taken only from the bin it was left on, and
items are conserved; so a later put-back or take re-weighs the earlier choices. The
hypotheses' weights give each receipt line a probability and each receipt an expected
cost of being wrong."""
import math
from dataclasses import dataclass, field
from types import MappingProxyType

from jwo_nodes.core.config import StoreConfig
from jwo_nodes.core.fusion.evidence import COUNT_DECAY, NOBODY, UNEXPLAINED_DENSITY, Reach, ReachBasis, who_it_was
from jwo_nodes.core.fusion.ledger import Counts, Ledger
from jwo_nodes.core.fusion.types import FusionSettings

# A put-back of an item the visit's cart does not hold (a take that was missed, an
# item brought in) is this much less likely than one it holds.
_UNHELD = 1e-3
# Other carts of one visit kept beyond the beam width.
_ALTERNATIVES = 2
# Choices this much less likely than the best choice of the same change are dropped.
_NEGLIGIBLE = 1e-3
# Units a second shopper's hand may move against the change's way (put back while the
# other takes, or take while the other puts back).
_OTHER_WAY_UNITS = 2


@dataclass(frozen=True)
class ChangeEvidence:
    """One weight change on one bin and what may explain it."""
    event_id: str
    shelf_id: str
    bin_id: str
    delta_grams: float
    start_ns: int
    end_ns: int
    reach: Reach           # who may have made it
    products: tuple        # ProductFit, best first
    # A track stood within reach of the bin (else: nobody was seen there).
    seen_near: bool
    # TrackPath of the tracks that may have made it (for a reviewer, not weighed).
    paths: tuple = field(default=(), compare=False)
    basis: ReachBasis = field(default=None, compare=False)

    @property
    def is_take(self) -> bool:
        return self.delta_grams < 0

    @property
    def visits(self) -> tuple:
        """VisitCandidates, most likely first."""
        return self.reach.visits


@dataclass(frozen=True)
class Partner:
    """A second shopper whose hand was in the bin during the change: the load cell saw
    the sum of both hands' units."""
    visit_code: str
    # Units moved the change's way (taken in a take); negative: the other way.
    quantity: int
    decides: tuple = field(default=(), compare=False)
    actor: tuple = field(default=(), compare=False)


@dataclass(frozen=True)
class Choice:
    """One explanation of one change."""
    visit_code: str        # NOBODY: somebody no open visit is known for
    sku: str
    quantity: int
    # False: no product fits the weight (sku and quantity are the bin's product, a guess).
    explained: bool = True
    # A put-back of an item the visit's cart did not hold.
    unmatched: bool = False
    # (track identity, visit code) this choice decides, if it decides one: not part of
    # what the choice explains.
    decides: tuple = field(default=(), compare=False)
    # The identity of the track whose shopper made the change in this choice (() for
    # somebody untracked): one hand makes one change at a time.
    actor: tuple = field(default=(), compare=False)
    # Another shopper who made the change together with this one (quantity is then this
    # one's units alone), or None.
    partner: Partner = None

    @property
    def visit_codes(self) -> tuple:
        return (self.visit_code, self.partner.visit_code) if self.partner else (self.visit_code,)

    @property
    def actors(self) -> tuple:
        return (self.actor, self.partner.actor) if self.partner else (self.actor,)


@dataclass(frozen=True)
class Hypothesis:
    log_weight: float
    ledger: Ledger
    choices: tuple         # one Choice per change, in order


@dataclass(frozen=True)
class Weighted:
    probability: float
    ledger: Ledger
    choices: tuple


@dataclass
class _Component:
    """Changes that bear on each other (through a visit, a bin or a track they share),
    with their hypotheses; changes in different components are independent."""
    indices: list          # positions in the solution's changes, in order
    beam: list             # Hypothesis, choices aligned with indices
    # visit code -> the probability of the hypotheses the beam dropped that gave the
    # visit a cart none it kept gives it: doubt the kept hypotheses no longer show.
    dropped: dict = field(default_factory=dict)

    def weighted(self) -> list:
        top = max(h.log_weight for h in self.beam)
        weights = [math.exp(h.log_weight - top) for h in self.beam]
        total = sum(weights)
        return [Weighted(w / total, h.ledger, h.choices) for w, h in zip(weights, self.beam)]


class Solution:
    """The hypotheses of each component of the changes, with normalised probabilities,
    most likely first."""

    def __init__(self, changes: list, start: Ledger, components: list):
        self.changes = changes
        self.start = start
        self.components = components
        self._hypotheses = [c.weighted() for c in components]
        self._where = {}       # change index -> (component number, position in it)
        self._of_visit = {}    # visit code -> component number
        self._of_track = {}    # track identity -> component number
        for number, component in enumerate(components):
            for position, index in enumerate(component.indices):
                self._where[index] = (number, position)
                for code in _visits_of(changes[index]):
                    self._of_visit[code] = number
                for track in changes[index].reach.tracks:
                    self._of_track[track.identity] = number

    def _weighted(self, visit_code: str) -> list:
        number = self._of_visit.get(visit_code)
        return self._hypotheses[number] if number is not None else [Weighted(1.0, self.start, ())]

    def best_choice(self, index: int) -> Choice:
        number, position = self._where[index]
        return self._hypotheses[number][0].choices[position]

    def strays(self, bin_id: str) -> dict:
        """sku -> stray units on a bin in the most likely hypothesis."""
        for number, component in enumerate(self.components):
            if any(self.changes[i].bin_id == bin_id for i in component.indices):
                return dict(self._hypotheses[number][0].ledger.strays.of(bin_id))
        return dict(self.start.strays.of(bin_id))

    def identity(self, track: tuple):
        """The visit a track was decided to be in the most likely hypothesis, or None."""
        number = self._of_track.get(track)
        ledger = self._hypotheses[number][0].ledger if number is not None else self.start
        return ledger.identities.get(track)

    def cart(self, visit_code: str) -> dict:
        """sku -> count in the most likely hypothesis."""
        return dict(self._weighted(visit_code)[0].ledger.carts.of(visit_code))

    def cart_probabilities(self, visit_code: str) -> list:
        """(probability, cart) for every hypothesis."""
        return [(h.probability, dict(h.ledger.carts.of(visit_code))) for h in self._weighted(visit_code)]

    def line_probability(self, visit_code: str, sku: str, quantity: int) -> float:
        return sum(h.probability for h in self._weighted(visit_code)
                   if h.ledger.carts.count(visit_code, sku) == quantity)

    def exact_probability(self, visit_code: str) -> float:
        """The probability that the most likely cart of the visit is its true cart."""
        best = self.cart(visit_code)
        kept = sum(h.probability for h in self._weighted(visit_code) if dict(h.ledger.carts.of(visit_code)) == best)
        return kept * (1.0 - self.dropped(visit_code))

    def dropped(self, visit_code: str) -> float:
        """The probability that the visit's cart is one the beam dropped (see _step)."""
        number = self._of_visit.get(visit_code)
        return min(1.0, self.components[number].dropped.get(visit_code, 0.0)) if number is not None else 0.0

    def marginals(self, index: int) -> dict:
        """Choice -> probability for the change at index."""
        number, position = self._where[index]
        found = {}
        for h in self._hypotheses[number]:
            choice = h.choices[position]
            found[choice] = found.get(choice, 0.0) + h.probability
        return found


def solve(changes: list, start: Ledger, store: StoreConfig, settings: FusionSettings,
          previous: Solution = None) -> Solution:
    """Explains the changes in order from the state ``start`` (what decisions already
    issued on receipts left in carts and on bins), each component on its own.
    ``previous``, a solution of a prefix of the same changes from the same start, is
    extended where its components only gained changes instead of solved again."""
    extendable, solved = {}, 0
    if previous is not None and previous.changes == changes[:len(previous.changes)]:
        extendable = {tuple(c.indices): c for c in previous.components}
        solved = len(previous.changes)
    components = []
    for indices in _components(changes, store):
        old = [i for i in indices if i < solved]
        kept = extendable.get(tuple(old))
        beam, done = (kept.beam, len(old)) if kept is not None else ([Hypothesis(0.0, start, ())], 0)
        dropped = dict(kept.dropped) if kept is not None else {}
        # Sorted: which alternatives the beam keeps must not follow the string hash seed.
        visits = sorted(set().union(*(_visits_of(changes[i]) for i in indices)))
        for position in range(done, len(indices)):
            change = changes[indices[position]]
            # Earlier changes of the component at the same time on another bin.
            concurrent = tuple(p for p in range(position) if _concurrent(changes[indices[p]], change))
            beam, lost = _step(change, beam, visits, store, settings, concurrent)
            for code, share in lost.items():
                dropped[code] = dropped.get(code, 0.0) + share
        components.append(_Component(list(indices), beam, dropped))
    return Solution(list(changes), start, components)


@dataclass(frozen=True)
class Look:
    """A change as first looked at: its likeliest explanation, how likely that is among
    the others in the same state, and the visit's cart after it."""
    choice: Choice
    probability: float
    cart: dict


class FirstLook:
    """Carts at once: each new change explained the likeliest way in the likeliest state
    of a solution of the changes before it, earlier choices left as they are. The joint
    solve, which may re-weigh them, follows when there is time (milliseconds later)."""

    def __init__(self, solution: Solution, store: StoreConfig, settings: FusionSettings):
        self.solution, self._store, self._settings = solution, store, settings
        # The state as the looks so far left it, for what they touched.
        self._carts, self._strays, self._identities = {}, {}, {}

    def explain(self, change: ChangeEvidence) -> Look:
        own_sku = self._store.bin(change.bin_id).sku
        codes = sorted(_visits_of(change))
        for code in codes:
            self._carts.setdefault(code, self.solution.cart(code))
        self._strays.setdefault(change.bin_id, self.solution.strays(change.bin_id))
        for track in change.reach.tracks:
            if track.identity not in self._identities:
                self._identities[track.identity] = self.solution.identity(track.identity)
        ledger = Ledger(Counts({code: items for code, items in self._carts.items() if items}),
                        Counts({bin_id: items for bin_id, items in self._strays.items() if items}),
                        MappingProxyType({t: c for t, c in self._identities.items() if c is not None}))
        options = _options(change, ledger, own_sku, self._store, self._settings)
        choice, weight = max(options, key=lambda option: option[1])   # the first of equals
        after = apply_choice(change, choice, own_sku, ledger)
        for code in codes:
            self._carts[code] = dict(after.carts.of(code))
        self._strays[change.bin_id] = dict(after.strays.of(change.bin_id))
        self._identities.update(after.identities)
        probability = weight / sum(w for _, w in options)
        return Look(choice, probability, dict(self._carts.get(choice.visit_code, {})))


def _step(change: ChangeEvidence, beam: list, visits: list, store: StoreConfig,
          settings: FusionSettings, concurrent: tuple = ()) -> tuple:
    """The beam after one more change: the beam_width likeliest hypotheses, and for each
    of the component's visits the likeliest hypothesis of each other cart it may have
    (up to _ALTERNATIVES), so the unlikelier carts of one visit are not crowded out by
    the many combinations of other visits' doubts. With it, per visit, the share of
    this step's probability in dropped hypotheses that gave the visit a cart no kept one
    gives it: left out, a long crowded visit's receipt looks surer than it is (on
    held-out hard scenarios, wrong FINAL receipts at confidence 0.97-0.999).
    ``concurrent``: positions, in the hypotheses' choices, of the component's earlier
    changes made at the same time on another bin: a track's shopper that made one of
    them made this one too only with one_hand_share."""
    own_sku = store.bin(change.bin_id).sku
    placed = _placed(change, own_sku, store, settings)
    together = _together(change, own_sku, store, settings)
    grown = []
    for hypothesis in beam:
        busy = {actor for p in concurrent for actor in hypothesis.choices[p].actors} - {()}
        for choice, weight in _options(change, hypothesis.ledger, own_sku, store, settings, busy, placed,
                                       _NEGLIGIBLE, together):
            grown.append(Hypothesis(hypothesis.log_weight + math.log(weight),
                                    apply_choice(change, choice, own_sku, hypothesis.ledger),
                                    hypothesis.choices + (choice,)))
    ranked = _merged(grown)
    kept = ranked[:settings.beam_width]
    carts = {(code, frozenset(h.ledger.carts.of(code).items()))
             for h in kept for code in visits}
    extra = dict.fromkeys(visits, 0)
    for h in ranked[settings.beam_width:]:
        for code in visits:
            key = (code, frozenset(h.ledger.carts.of(code).items()))
            if key not in carts and extra[code] < _ALTERNATIVES:
                carts.add(key)
                extra[code] += 1
                kept.append(h)
                break
    top = ranked[0].log_weight
    total = sum(math.exp(h.log_weight - top) for h in ranked)
    kept_ids = {id(h) for h in kept}
    lost = {}
    for h in ranked[settings.beam_width:]:
        if id(h) in kept_ids:
            continue
        share = math.exp(h.log_weight - top) / total
        for code in visits:
            if (code, frozenset(h.ledger.carts.of(code).items())) not in carts:
                lost[code] = lost.get(code, 0.0) + share
    return kept, lost


def _visits_of(change: ChangeEvidence) -> set:
    """Every visit a change may be explained by."""
    codes = {code for code, _ in change.reach.background}
    for track in change.reach.tracks:
        codes.add(track.visit_code)
        codes.update(code for code, _ in track.elsewhere)
    codes.discard(NOBODY)
    return codes


def _components(changes: list, store: StoreConfig) -> list:
    """Indices of the changes grouped by what links them (a visit, a track, a bin where
    strays may matter), each group in order."""
    parent = {}

    def root(key):
        while parent.setdefault(key, key) != key:
            parent[key] = parent[parent[key]]
            key = parent[key]
        return key

    for index, change in enumerate(changes):
        keys = [('visit', c) for c in _visits_of(change)] + [('track', t.identity) for t in change.reach.tracks]
        # A bin links changes only through strays: when another product fits the weight.
        own_sku = store.bin(change.bin_id).sku
        if any(fit.sku != own_sku for fit in change.products):
            keys.append(('bin', change.bin_id))
        for key in keys:
            parent[root(key)] = root(('change', index))
    groups = {}
    for index in range(len(changes)):
        groups.setdefault(root(('change', index)), []).append(index)
    return sorted(groups.values())


def _merged(hypotheses: list) -> list:
    """The hypotheses, most likely first, those that leave the same state merged into
    the likeliest of them (their weights added): they are one hypothesis for what comes
    next, and duplicates would crowd real alternatives out of the beam."""
    merged = {}
    for h in sorted(hypotheses, key=lambda h: -h.log_weight):
        kept = merged.get(h.ledger)
        if kept is None:
            merged[h.ledger] = h
        else:
            top = kept.log_weight
            merged[h.ledger] = Hypothesis(top + math.log1p(math.exp(h.log_weight - top)), kept.ledger, kept.choices)
    return sorted(merged.values(), key=lambda h: -h.log_weight)


def _placed(change: ChangeEvidence, own_sku: str, store: StoreConfig, settings: FusionSettings) -> tuple:
    """(ProductFit, prior) of each product that fits a change, by where it belongs: the
    bin's own product, a stray (a take), one put back beside its own facing or
    elsewhere. The same in every hypothesis, so weighed once per change."""
    if change.is_take:
        return tuple((fit, 1.0 if fit.sku == own_sku else settings.stray_prior) for fit in change.products)
    return tuple((fit, 1.0 if fit.sku == own_sku else settings.beside_prior
                  if store.beside_home(change.bin_id, fit.sku) else settings.elsewhere_prior)
                 for fit in change.products)


def _options(change: ChangeEvidence, ledger: Ledger, own_sku: str, store: StoreConfig, settings: FusionSettings,
             busy: set = frozenset(), placed: tuple = None, negligible: float = 0.0,
             together: '_Together' = None) -> list:
    """(Choice, weight) for every explanation of a change in one hypothesis's state but
    those less likely than ``negligible`` times the likeliest; ``placed`` and
    ``together``: _placed's and _together's, if already weighed; ``busy``: the tracks
    whose shoppers made a change on another bin at the same time. Weights come first,
    Choices only for what is kept: a crowded change has hundreds of explanations in each
    of the beam's hypotheses."""
    take = change.is_take
    placed = placed if placed is not None else _placed(change, own_sku, store, settings)
    if take:
        # A stray can be taken only from the bin it lies on, whoever took it.
        placed = [(fit, prior) for fit, prior in placed
                  if fit.sku == own_sku or ledger.strays.count(change.bin_id, fit.sku) >= fit.quantity]
    # (weight, code, ProductFit or None for "no product explains it", unmatched,
    # decides, actor): plain tuples, as most are dropped.
    weighed = []
    who = _who(change.reach, ledger)
    for code, p_visit, decides, actor in who:
        if actor in busy:
            p_visit *= settings.one_hand_share
        cart = ledger.carts.of(code) if not take and code != NOBODY else None
        for fit, prior in placed:
            unmatched = cart is not None and cart.get(fit.sku, 0) < fit.quantity
            weighed.append((p_visit * fit.likelihood * (prior * _UNHELD if unmatched else prior),
                            code, fit, unmatched, decides, actor))
        weighed.append((p_visit * UNEXPLAINED_DENSITY, code, None, False, decides, actor))
    if not weighed:
        return []
    together = _two_hands(change, who, ledger, together or _together(change, own_sku, store, settings), settings,
                          busy)
    least = max(max(item[0] for item in weighed), max((weight for _, weight in together), default=0.0)) * negligible
    guess = _guess(change, own_sku, store)
    return [(Choice(code, fit.sku, fit.quantity, unmatched=unmatched, decides=decides, actor=actor)
             if fit is not None else Choice(code, *guess, explained=False, decides=decides, actor=actor), weight)
            for weight, code, fit, unmatched, decides, actor in weighed if weight >= least] + [
        (choice, weight) for choice, weight in together if weight >= least]


@dataclass(frozen=True)
class _Together:
    """What lets a change be two shoppers' at once, the same in every hypothesis."""
    # Track identity -> TrackCandidate of the tracks whose hands were in the bin: at
    # least two, or none.
    hands: dict
    # (ProductFit, its density without its count's prior: each hand's count has its
    # own) of the bin's own product.
    fits: tuple


def _together(change: ChangeEvidence, own_sku: str, store: StoreConfig, settings: FusionSettings) -> _Together:
    hands = {track.identity: track for track in change.reach.tracks if track.hand_share >= settings.hand_reached}
    if len(hands) < 2 or settings.two_hands_prior <= 0 or store.products[own_sku].sold_by_weight:
        return _Together({}, ())
    return _Together(hands, tuple((fit, fit.likelihood / COUNT_DECAY ** (fit.quantity - 1))
                                  for fit in change.products if fit.sku == own_sku))


def _two_hands(change: ChangeEvidence, who: list, ledger: Ledger, together: _Together, settings: FusionSettings,
               busy: set) -> list:
    """(Choice, weight) for every way two shoppers whose hands were both seen in the bin
    may have made the change together with the bin's own product: one took while the
    other put back, or both took (or put back) and the load cell saw the sum. The first
    in ``who`` (see _who) made it as any change is made; the partner's weight is how much
    of the window its hand was in the bin and how likely its track is that visit."""
    if not together.fits:
        return []
    tracks = together.hands
    hands = [(code, p, decides, actor) for code, p, decides, actor in who if actor in tracks and code != NOBODY]
    if len({actor for *_, actor in hands}) < 2:
        return []
    take = change.is_take
    found = []
    for fit, density in together.fits:
        for code, p, decides, actor in hands:
            cart = ledger.carts.of(code)
            for other, p_other, other_decides, other_actor in hands:
                if other_actor == actor or other == code:
                    continue
                track = tracks[other_actor]
                weight = (settings.two_hands_prior * p * density * min(1.0, track.hand_share / settings.hand_full_share)
                          * p_other / track.probability)
                if actor in busy or other_actor in busy:
                    weight *= settings.one_hand_share
                other_cart = ledger.carts.of(other)
                # Both the change's way: the first is the one who moved more (once per pair).
                splits = [(n, fit.quantity - n) for n in range(1, fit.quantity)
                          if n > fit.quantity - n or (n == fit.quantity - n and code < other)]
                # The partner the other way.
                splits += [(fit.quantity + m, -m) for m in range(1, _OTHER_WAY_UNITS + 1)]
                for units, other_units in splits:
                    # What goes back must have been in that cart.
                    if take:
                        held = other_units > 0 or other_cart.get(fit.sku, 0) >= -other_units
                    else:
                        held = cart.get(fit.sku, 0) >= units and (
                            other_units < 0 or other_cart.get(fit.sku, 0) >= other_units)
                    if not held:
                        continue
                    prior = COUNT_DECAY ** (units - 1) * COUNT_DECAY ** (abs(other_units) - 1)
                    found.append((Choice(code, fit.sku, units, decides=decides, actor=actor,
                                         partner=Partner(other, other_units, other_decides, other_actor)),
                                  weight * prior))
    return found


def _who(reach: Reach, ledger: Ledger) -> list:
    """(visit code, probability, identity decided, track) of whose change it was in one
    hypothesis: a track already decided is who it was decided to be; () for the track
    of somebody untracked."""
    found = [(code, p, (), ()) for code, p in reach.background]
    for track in reach.tracks:
        decided = ledger.identities.get(track.identity)
        if decided is not None:
            found.append((decided, track.probability, (), track.identity))
            continue
        found += [(code, p, decides, track.identity) for code, p, decides in who_it_was(track)]
    return [item for item in found if item[1] > 0]


def _concurrent(earlier: ChangeEvidence, change: ChangeEvidence) -> bool:
    """Whether two changes on different bins (not one change seen on two) overlap in time."""
    return (earlier.event_id != change.event_id and earlier.bin_id != change.bin_id
            and earlier.start_ns < change.end_ns and change.start_ns < earlier.end_ns)


def _guess(change: ChangeEvidence, own_sku: str, store: StoreConfig) -> tuple:
    """(sku, quantity) proposed for a change no product explains: a take of the bin's
    product in the nearest count; nothing for a put-back."""
    if not change.is_take:
        return '', 0
    return own_sku, max(1, round(abs(change.delta_grams) / store.products[own_sku].unit_grams))


def apply_choice(change: ChangeEvidence, choice: Choice, own_sku: str, ledger: Ledger) -> Ledger:
    if choice.decides:
        ledger = ledger.with_identity(*choice.decides)
    if not choice.sku or choice.unmatched:
        return ledger
    if choice.partner is not None:
        partner = choice.partner
        if partner.decides:
            ledger = ledger.with_identity(*partner.decides)
        ledger = ledger.with_cart(partner.visit_code, choice.sku,
                                  partner.quantity if change.is_take else -partner.quantity)
    n = choice.quantity
    if change.is_take:
        if choice.visit_code != NOBODY:
            ledger = ledger.with_cart(choice.visit_code, choice.sku, n)
        if choice.sku != own_sku and choice.explained:
            ledger = ledger.with_stray(change.bin_id, choice.sku, -n)
    else:
        if choice.visit_code != NOBODY:
            ledger = ledger.with_cart(choice.visit_code, choice.sku, -n)
        if choice.sku != own_sku:
            ledger = ledger.with_stray(change.bin_id, choice.sku, n)
    return ledger
