"""Evidence of one weight change: how likely each visit is to have made it (from where
the shoppers stood, their hands and the tracker's identity belief) and how well each
product and count fits the weight. Likelihoods, never gates: the solver weighs them
against each other and against what every cart and bin holds."""
import math
from dataclasses import dataclass

from jwo_nodes.core.config import StoreConfig
from jwo_nodes.core.fusion.types import FusionSettings

# Visit code of "somebody no open visit is known for": staff, an untracked shopper.
NOBODY = ''
# Density (per gram) of a weight change no product explains (an outlier: a wrong
# reading, an item from outside the catalogue), against a product's fit.
UNEXPLAINED_DENSITY = 2e-4
# Prior of taking or putting back n units at once: halves with each unit more.
COUNT_DECAY = 0.5
# A visit less likely than this to have made a change is no candidate.
_NEGLIGIBLE_VISIT = 2e-3
# A track whose hand was in a bin for this share of a change's window reached into it,
# whatever other hands did (FusionSettings.hand_reached).
HAND_SURE_SHARE = 0.4
_MAX_COUNT = 24


@dataclass(frozen=True)
class VisitCandidate:
    visit_code: str          # NOBODY for somebody unknown
    probability: float
    distance_m: float        # nearest track of the visit over the window (inf: unseen)
    hand_share: float        # share of the window its hand was in the bin


@dataclass(frozen=True)
class ProductFit:
    sku: str
    quantity: int
    # Density of the measured grams under this product and count, times the count's prior.
    likelihood: float
    residual_g: float
    sigma_g: float


def identity_belief(confidence: float, settings: FusionSettings) -> float:
    """The probability that a track carrying a visit code is that visit's shopper, from
    the tracker's confidence. Measured on the vision runs of the suite with 22 held-out
    hard scenarios, and of the real-store presets with 16 held-out ones: tracks at
    confidence 0.95 or more carried the right code at 99.3 % and 100 % of takes and
    put-backs (1,641 and 1,144), at 0.5 to 0.95 at 95.5 % and 96.2 % (752 and 851), under
    0.5 at 76 % and 86 % (see README "How fusion decides")."""
    floor = settings.identity_floor
    return floor + (1.0 - floor) * confidence


@dataclass(frozen=True)
class TrackCandidate:
    """One track seen around a change, as the solver weighs it."""
    # (track id, identity epoch, code it carried): the solver decides once per
    # hypothesis who that is, so every change the track made in that epoch follows the
    # same decision.
    identity: tuple
    visit_code: str          # the code it carried (NOBODY for none)
    probability: float       # that this track's shopper made the change
    belief: float            # that the track is visit_code's shopper
    # (code, share) of who else it may be, shares summing to 1; () for nobody else.
    elsewhere: tuple
    # Share of the change's window its hand was seen in the bin.
    hand_share: float = 0.0


@dataclass(frozen=True)
class Reach:
    """Who may have made a change: the tracks near it, somebody untracked (background),
    and the resulting probability per visit (for reports and bookkeeping)."""
    tracks: tuple
    # (visit code, probability) that somebody no track near stood for made it: one of
    # the visits' people the tracks do not account for, or a stranger (NOBODY).
    background: tuple
    visits: tuple            # VisitCandidate, most likely first


@dataclass(frozen=True)
class LaterIdentity:
    """Who the tracker later found a window's track to be within its identity epoch:
    the code it carried last there (TrackBook.code_after) and the highest confidence it
    gave that code (TrackBook.surest). Nothing put who the track is in doubt within the
    epoch, so that is who it followed all along."""
    visit_code: str
    confidence: float


def reach_evidence(windows: list, point: tuple, shelf_point: tuple, span: tuple, open_people: dict,
                   settings: FusionSettings, later: dict = None) -> Reach:
    """Who may have made a change at a bin (its standing point and shelf point).
    ``windows`` are the TrackWindows around the change, ``span`` its (start, end)
    stamps; ``open_people`` the visits inside the store then, with how many people
    each has inside. A track's shopper made it in proportion to how near they stood
    (and where hands were seen, whether theirs was in the bin); a track is its code's
    shopper with the identity belief, else one of the visits' people no sure track
    carried then, in proportion to how many of them are unaccounted for (a group of
    three followed on one track has two people somewhere, likely on anonymous tracks);
    where less than one person is unaccounted for, the doubt shrinks with it.
    ``later`` gives, by confirmation_key, the LaterIdentity of the windows the tracker
    grew surer of or moved a code onto or off later in their epoch."""
    s = settings
    later = later or {}
    shares = {id(w): w.hand_share(*shelf_point, s.hand_zone_m, s.hand_sigma_m) for w in windows}
    most = max(shares.values(), default=0.0)
    hands_seen = most > 0
    near = []           # (window, code, belief, likelihood, distance, hand share)
    for window in windows:
        code, confidence = _identity(window, later)
        code = code if code in open_people else NOBODY
        belief = identity_belief(confidence, s) if code else 0.0
        share = shares[id(window)]
        reached = share >= s.hand_reached and (share == most or share >= HAND_SURE_SHARE)
        d = window.reach_distance(*point, *span, reached=reached)
        if d > s.candidate_radius_m:
            continue
        likelihood = math.exp(-0.5 * (max(0.0, d - s.reach_free_m) / s.reach_sigma_m) ** 2)
        if hands_seen:
            likelihood *= s.hand_floor + (1.0 - s.hand_floor) * min(1.0, share / s.hand_full_share)
        near.append((window, code, belief, likelihood, d, share))
    total = s.background_weight + sum(item[3] for item in near)
    doubt = unaccounted(windows, open_people, s, later)
    # Somebody untracked is one of the people the tracks leave unaccounted for (a group
    # member nobody follows, a shopper whose track is lost), as many as are missing, or
    # a stranger.
    missing = {code: x for code, x in doubt.items() if x > 0}
    untracked = s.stranger_weight + sum(missing.values())
    background = tuple((code, p) for code, p in ((code, s.background_weight / total * x / untracked)
                                                 for code, x in [(NOBODY, s.stranger_weight), *sorted(missing.items())])
                       if code == NOBODY or p >= _NEGLIGIBLE_VISIT)
    tracks, distance, hand = [], {}, {}
    weight = dict(background)
    for window, code, belief, likelihood, d, share in near:
        if likelihood / total < _NEGLIGIBLE_VISIT:
            continue
        others = {c: x for c, x in doubt.items() if c != code and x > 0}
        spread = sum(others.values())
        elsewhere = tuple(sorted(((c, x / spread) for c, x in others.items()), key=lambda e: (-e[1], e[0])))
        if not elsewhere:
            belief = 1.0 if code else 0.0      # nobody else it could be
        elif code:
            belief = 1.0 - somebody_else(belief, spread)
        candidate = TrackCandidate((*window.identity, code), code, likelihood / total, belief, elsewhere, share)
        tracks.append(candidate)
        for visit, p, _ in who_it_was(candidate):
            weight[visit] = weight.get(visit, 0.0) + p
        if code:
            distance[code] = min(distance.get(code, math.inf), d)
            hand[code] = max(hand.get(code, 0.0), share)
    ranked = sorted(((c, w) for c, w in weight.items() if w >= _NEGLIGIBLE_VISIT), key=lambda i: (-i[1], i[0]))
    kept = sum(w for _, w in ranked)
    visits = tuple(VisitCandidate(c, w / kept, round(distance.get(c, math.inf), 3), round(hand.get(c, 0.0), 3))
                   for c, w in ranked)
    return Reach(tuple(tracks), background, visits)


@dataclass(frozen=True)
class ReachBasis:
    """What a change's Reach is weighed from (reach_evidence's arguments), kept to weigh
    it again when the tracker later vouches for a track's identity (``later``), and to
    weigh it under other settings (`jwo fusion-fit`)."""
    windows: tuple         # TrackWindow
    point: tuple           # the bin's standing point
    shelf_point: tuple
    span: tuple            # (start, end) stamps of the change
    open_people: dict
    # (confirmation_key, LaterIdentity) pairs: what the tracker found out since.
    later: tuple = ()

    def reach(self, settings: FusionSettings) -> Reach:
        return reach_evidence(list(self.windows), self.point, self.shelf_point, self.span, self.open_people,
                              settings, dict(self.later))


# The FusionSettings reach_evidence weighs a change's makers by: what `jwo fusion-fit`
# fits to a store's scenarios.
REACH_SETTINGS = ('reach_free_m', 'reach_sigma_m', 'candidate_radius_m', 'hand_zone_m', 'hand_sigma_m',
                  'hand_floor', 'hand_full_share', 'hand_reached', 'background_weight', 'stranger_weight',
                  'identity_floor')


def somebody_else(belief: float, others_missing: float) -> float:
    """The probability that a track is not its code's shopper, from the identity belief:
    to be somebody else, somebody else must be missing, so the doubt shrinks with how few
    other people the tracks leave unaccounted for (a swap needs a partner)."""
    return (1.0 - belief) * min(1.0, others_missing)


def walk_out_doubt(confidence: float, visit_code: str, windows: list, open_people: dict,
                   settings: FusionSettings) -> float:
    """The probability that a walk-out given to ``visit_code`` (its code rode on the
    track that left, with the tracker's ``confidence``) was somebody else's: that visit's
    shopper would still be inside, shopping on after the receipt. ``windows`` and
    ``open_people`` as for reach_evidence, around the exit."""
    missing = unaccounted(windows, open_people, settings)
    others = sum(x for code, x in missing.items() if code != visit_code)
    return somebody_else(identity_belief(confidence, settings), others)


def unaccounted(windows: list, open_people: dict, settings: FusionSettings, later: dict = None) -> dict:
    """visit code -> how many of its people inside are not on its tracks in the
    windows: its people less the beliefs of its surest tracks, one per person."""
    beliefs = {code: [] for code in open_people}
    for window in windows:
        code, confidence = _identity(window, later or {})
        if code in beliefs:
            beliefs[code].append(identity_belief(confidence, settings))
    return {code: max(0.0, people - sum(sorted(beliefs[code], reverse=True)[:people]))
            for code, people in open_people.items()}


def confirmation_key(window) -> tuple:
    """(track id, identity epoch, code) of a TrackWindow: what TrackBook.surest looks up."""
    return (*window.identity, window.visit_code)


def _identity(window, later: dict) -> tuple:
    """(visit code, tracker confidence) of a window's track: as later found, else as in
    the window."""
    found = later.get(confirmation_key(window))
    return (found.visit_code, found.confidence) if found else (window.visit_code, window.confidence)


def who_it_was(track: TrackCandidate) -> list:
    """(visit code, probability, (track identity, visit code)) of whose shopper a
    track's change was, before a hypothesis has decided who the track is."""
    found = [(track.visit_code, track.probability * track.belief)] if track.belief > 0 else []
    rest = track.probability * (1.0 - track.belief)
    if rest > 0:
        found += [(code, rest * share) for code, share in track.elsewhere] or [(NOBODY, rest)]
    return [(code, p, (track.identity, code)) for code, p in found]


def product_fits(store: StoreConfig, grams: float, noise_g: float) -> tuple:
    """Every product and count whose weight could read as ``grams`` (the size of the
    change), best fit first. A count's spread: each unit's own (the catalogue tolerance
    as two sigma) and the change detector's (its measured noise, a level on each side,
    and a gram of drift)."""
    fits = []
    measurement = 2.0 * max(noise_g, 0.5) ** 2 + 1.0
    for sku, product in store.products.items():
        middle = grams / product.unit_grams
        for n in {math.floor(middle), math.ceil(middle)}:
            if not 1 <= n <= _MAX_COUNT:
                continue
            sigma = math.sqrt(n * (product.tolerance_grams / 2.0) ** 2 + measurement)
            residual = grams - n * product.unit_grams
            z = residual / sigma
            if abs(z) > 6.0:
                continue
            density = math.exp(-0.5 * z * z) / (sigma * math.sqrt(2 * math.pi))
            fits.append(ProductFit(sku, n, density * COUNT_DECAY ** (n - 1), round(residual, 2),
                                   round(sigma, 2)))
    fits.sort(key=lambda f: (-f.likelihood, f.sku))
    return tuple(fits)
