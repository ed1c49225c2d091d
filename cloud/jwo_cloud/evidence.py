"""What a reviewer is shown of each event in doubt, and the receipt their choices make:
plain values for the templates (review_web.py), no web framework here.

Per event: why it is in doubt in words, the measured change, the products it may have
been (fusion's candidates with their probabilities, then the catalogue's products whose
weight fits) with the unit weight and how far each count is from the measurement, the
visits that may have made it, a floor plan of the store with the bin and, where the
store sent them, the candidates' tracks over the event's window, and the clips cued a
moment before the event.
"""
from dataclasses import dataclass
from typing import Optional

from jwo_cloud.review import NOBODY, EventChoice, InvalidDecision, Visit, proposed_choice, sign_of

NS = 1_000_000_000
REASONS = {
    'ambiguous_attribution': 'More than one shopper was at the bin: who made this change?',
    'no_candidate': 'No shopper with a visit was seen at the bin.',
    'ambiguous_product': 'The weight fits more than one product: which was it?',
    'unidentified_item': 'No product of the store weighs what changed.',
    'unmatched_put_back': "Something was put back that this visit's cart did not hold.",
    'sensor_stale': 'A sensor went silent around this change.',
    'unresolved_exit': 'The walk-out could not be tied to this visit for sure.',
    'fusion_restarted': 'Fusion restarted while this visit was open.',
    'sensor_restarted': 'A shelf sensor restarted while this visit was open.',
    'low_confidence': 'Fusion is not sure enough of this receipt.',
    'disputed': 'The shopper disputes a line of the final receipt: is it right?',
}
# Catalogue products offered for an event besides fusion's candidates.
WEIGHT_FITS = 6
# The player starts this long before the event's window (the clip starts the clip
# writer's margin before it).
CUE_LEAD_S = 1.0
# Floor plan: pixels per metre at most, and the picture's width.
PLAN_WIDTH_PX = 320
PLAN_MARGIN_M = 0.8
# This visit first, then the other candidates, in the order they are listed.
VISIT_COLOURS = ('#1d6fd8', '#e07b00', '#2a9d3a', '#b03aa8', '#8a6d3b', '#555555')


def reason_text(code: str) -> str:
    if not code:   # listed for a reason of the whole visit (an unresolved exit), or a FINAL receipt's
        return "One of this visit's changes: is it right?"
    return REASONS.get(code, code.replace('_', ' '))


@dataclass(frozen=True)
class ProductOption:
    """One answer to "what was it"."""
    value: str               # 'SKU:COUNT', '' for "not known"
    sku: str
    name: str
    quantity: int
    unit_grams: float
    off_grams: Optional[float]       # |measured| - quantity x unit weight
    probability: Optional[float]     # fusion's; None for a catalogue weight fit


@dataclass(frozen=True)
class VisitOption:
    """One answer to "who made it"."""
    value: str               # a visit code, or NOBODY
    visit_code: str
    is_this_visit: bool
    probability: Optional[float]
    colour: str


@dataclass(frozen=True)
class PlanBin:
    x: float
    y: float
    label: str
    in_event: bool


@dataclass(frozen=True)
class PlanGate:
    x: float
    y: float
    r: float
    label: str


@dataclass(frozen=True)
class PlanTrack:
    points: str              # SVG polyline points, pixels
    end_x: float
    end_y: float
    colour: str
    label: str


@dataclass(frozen=True)
class FloorPicture:
    width: int
    height: int
    bins: tuple
    gates: tuple
    tracks: tuple


@dataclass(frozen=True)
class ClipView:
    clip_id: str
    present: bool
    is_image: bool
    cue_s: float


@dataclass(frozen=True)
class EventView:
    event_id: str
    reason_code: str
    reason: str
    shelf_id: str
    bin_ids: tuple
    measured_grams: float
    is_take: bool
    window_start_ns: int
    window_s: float
    who: tuple               # VisitOption
    what: tuple              # ProductOption
    chosen: EventChoice
    proposed: EventChoice
    decided: bool            # proposed is what the review before decided (a dispute's)
    clips: tuple             # ClipView
    floor: Optional[FloorPicture]


@dataclass(frozen=True)
class LineView:
    sku: str
    name: str
    quantity: int
    unit_price_cents: int
    line_total_cents: int
    changed: bool            # differs from the proposed receipt


@dataclass(frozen=True)
class ReceiptView:
    lines: tuple
    subtotal_cents: int
    tax_cents: int
    total_cents: int
    currency: str
    changed: bool
    error: str               # why these quantities cannot be a receipt ('' when they can)


def events(visit: Visit, chosen: dict, clip_margin_s: float) -> list:
    """An EventView per event in doubt; ``chosen``: event id -> the EventChoice shown."""
    return [_event(visit, event, chosen[event['event_id']], clip_margin_s) for event in visit.events]


def _event(visit: Visit, event: dict, chosen: EventChoice, clip_margin_s: float) -> EventView:
    measured = sum(event.get('delta_grams', []))
    who = _visit_options(visit, event)
    return EventView(
        event_id=event['event_id'], reason_code=event.get('reason_code', ''),
        reason=reason_text(event.get('reason_code', '')), shelf_id=event.get('shelf_id', ''),
        bin_ids=tuple(event.get('bin_ids', [])), measured_grams=measured,
        is_take=sign_of(event) > 0, window_start_ns=event.get('window_start_ns', 0),
        window_s=(event.get('window_end_ns', 0) - event.get('window_start_ns', 0)) / NS,
        who=who, what=_product_options(visit, event, chosen, measured), chosen=chosen,
        proposed=proposed_choice(event), decided=bool(event.get('decided')),
        clips=tuple(ClipView(clip_id, visit.clips[clip_id].present,
                             visit.clips[clip_id].content_type.startswith('image/'),
                             max(0.0, clip_margin_s - CUE_LEAD_S))
                    for clip_id in event.get('clip_ids', []) if clip_id in visit.clips),
        floor=_floor(visit, event, who))


def _visit_options(visit: Visit, event: dict) -> tuple:
    scores = dict(zip(event.get('candidate_visits', []), event.get('candidate_scores', [])))
    codes = [visit.visit_code] + [c for c in event.get('candidate_visits', []) if c != visit.visit_code]
    options = [VisitOption(code, code, code == visit.visit_code, scores.get(code),
                           VISIT_COLOURS[min(n, len(VISIT_COLOURS) - 1)])
               for n, code in enumerate(codes)]
    nobody = max(0.0, 1.0 - sum(scores.values())) if scores else None
    return tuple(options + [VisitOption(NOBODY, '', False, nobody, VISIT_COLOURS[-1])])


def _product_options(visit: Visit, event: dict, chosen: EventChoice, measured: float) -> tuple:
    options, seen = [], set()

    def add(sku: str, quantity: int, probability: Optional[float]) -> None:
        if (sku, quantity) in seen:
            return
        seen.add((sku, quantity))
        product = visit.catalogue.products.get(sku) or visit.product(sku)
        unit = next((c['unit_grams'] for c in event.get('candidate_products', [])
                     if c['sku'] == sku), product.unit_grams if product else 0.0)
        options.append(ProductOption(
            f'{sku}:{quantity}', sku, product.name if product else '', quantity, unit,
            abs(measured) - quantity * unit if unit else None, probability))
    for candidate in event.get('candidate_products', []):
        add(candidate['sku'], int(candidate['quantity']), candidate.get('probability'))
    for fit in visit.catalogue.weight_fits(measured, WEIGHT_FITS):
        add(fit.product.sku, fit.quantity, None)
    if chosen.sku:
        add(chosen.sku, chosen.quantity, None)
    if not (chosen.sku and proposed_choice(event).sku):
        options.append(ProductOption('', '', 'not known', 0, 0.0, None, None))
    return tuple(options)


def _floor(visit: Visit, event: dict, who: tuple) -> Optional[FloorPicture]:
    """The store from above (x along the front wall, y into the store, as the store's
    configuration has it), scaled to PLAN_WIDTH_PX; None without a floor plan."""
    bins, gates = visit.catalogue.bins, visit.catalogue.gates
    if not bins:
        return None
    tracks = [t for t in event.get('tracks', []) if t.get('x')]
    xs = [b.x for b in bins] + [g.x for g in gates] + [x for t in tracks for x in t['x']]
    ys = [b.y for b in bins] + [g.y for g in gates] + [y for t in tracks for y in t['y']]
    x0, y0 = min(xs) - PLAN_MARGIN_M, min(ys) - PLAN_MARGIN_M
    scale = PLAN_WIDTH_PX / max(1.0, max(xs) + PLAN_MARGIN_M - x0)
    height = round((max(ys) + PLAN_MARGIN_M - y0) * scale)

    def px(x: float, y: float) -> tuple:
        return round((x - x0) * scale, 1), round((y - y0) * scale, 1)
    in_event = set(event.get('bin_ids', []))
    colour = {option.visit_code: option.colour for option in who if option.visit_code}
    plan_tracks = []
    for track in tracks:
        points = [px(x, y) for x, y in zip(track['x'], track['y'])]
        plan_tracks.append(PlanTrack(' '.join(f'{x},{y}' for x, y in points), *points[-1],
                                     colour.get(track.get('visit_code', ''), VISIT_COLOURS[-1]),
                                     track.get('visit_code') or 'no visit'))
    return FloorPicture(
        PLAN_WIDTH_PX, height,
        tuple(PlanBin(*px(b.x, b.y), b.bin_id, b.bin_id in in_event) for b in bins),
        tuple(PlanGate(*px(g.x, g.y), round(g.radius_m * scale, 1), g.gate_id) for g in gates),
        tuple(plan_tracks))


def receipt_view(visit: Visit, quantities: dict) -> ReceiptView:
    """The receipt the quantities make, priced and totalled as the decision would be; a
    proposed line brought to zero stays as a row, so it can be brought back."""
    proposed = visit.proposed_quantities()
    try:
        lines, error = visit.lines(quantities), ''
    except InvalidDecision as problem:
        lines, error = [], str(problem)
    totals = visit.totals(lines)
    by_sku = {line['sku']: line for line in lines}
    rows = []
    for sku in list(proposed) + [sku for sku in by_sku if sku not in proposed]:
        line = by_sku.get(sku)
        if line is None:
            product = visit.product(sku)
            line = {'name': product.name, 'quantity': 0, 'unit_price_cents': product.price_cents,
                    'line_total_cents': 0}
        rows.append(LineView(sku, line['name'], line['quantity'], line['unit_price_cents'],
                             line['line_total_cents'], proposed.get(sku, 0) != line['quantity']))
    return ReceiptView(tuple(rows), totals.subtotal_cents, totals.tax_cents, totals.total_cents,
                       (visit.receipt or {}).get('currency', ''), any(r.changed for r in rows), error)
