"""Receipt lines, cart snapshots, and the doubts a reviewer is shown, from a Solution."""
from dataclasses import dataclass

from jwo_nodes.core.config import StoreConfig
from jwo_nodes.core.fusion.evidence import NOBODY
from jwo_nodes.core.fusion.solver import Solution
from jwo_nodes.core.fusion.types import (AMBIGUOUS_ATTRIBUTION, AMBIGUOUS_PRODUCT, NO_CANDIDATE,
                                         UNIDENTIFIED_ITEM, UNMATCHED_PUT_BACK, Doubt, Line,
                                         ProductCandidate, Reason, Saving)
from jwo_nodes.core.pricing import Measure, price_cart

# A change whose most likely explanation has less than this probability is in doubt.
SURE = 0.99
# A visit with at least this probability of having made a change is its candidate.
INVOLVED = 0.01
# Reasons that always send a visit to review: something no product or cart explains.
UNEXPLAINED = (UNIDENTIFIED_ITEM, UNMATCHED_PUT_BACK)


@dataclass(frozen=True)
class Priced:
    """A cart priced by the pricing engine, as a CartSnapshot or a receipt carries it."""
    lines: tuple           # Line, by SKU
    savings: tuple         # Saving
    savings_cents: int
    # The lines less the savings.
    subtotal_cents: int
    tax_cents: int


def priced(store: StoreConfig, cart: dict, grams: dict, stamp_ns: int,
           probability=lambda sku, quantity: 1.0) -> Priced:
    """Prices a cart (sku -> units) through jwo_nodes.core.pricing at a stamp; a product
    sold by weight is priced by ``grams`` (sku -> grams its pieces weighed, from the
    changes: see weighed_grams), or by its typical piece where that came to nothing (a
    take and a put-back of different pieces)."""
    units = {sku: n for sku, n in cart.items() if n > 0}
    basket = {}
    for sku, n in units.items():
        product = store.products[sku]
        basket[sku] = (max(grams.get(sku, 0), 0) or round(n * product.unit_grams)) if product.sold_by_weight else n
    result = price_cart(store, basket, stamp_ns)
    lines = tuple(Line(line.sku, line.name, units[line.sku], line.unit_price_cents, line.line_total_cents,
                       round(probability(line.sku, units[line.sku]), 3),
                       sold_by_weight=line.measure is Measure.GRAMS,
                       grams=line.quantity if line.measure is Measure.GRAMS else 0,
                       age_restricted=line.age_restricted)
                  for line in result.lines)
    savings = tuple(Saving(s.promotion_id, s.name, tuple(dict.fromkeys(item.sku for item in s.used)), s.cents)
                    for s in result.savings)
    return Priced(lines, savings, result.savings_cents, result.subtotal_cents, result.tax_cents)


def weighed_grams(solution: Solution, store: StoreConfig) -> dict:
    """visit code -> sku -> grams of each product sold by weight in the visits' most
    likely carts: what the changes each was decided to have made weighed (takes add,
    put-backs take off). One pass for every visit: it runs on every solve."""
    found = {}
    for index, change in enumerate(solution.changes):
        choice = solution.best_choice(index)
        if (choice.sku and choice.explained and not choice.unmatched
                and store.products[choice.sku].sold_by_weight):
            grams = found.setdefault(choice.visit_code, {})
            grams[choice.sku] = grams.get(choice.sku, 0) - round(change.delta_grams)
    return found


def doubts_of(visit_code: str, solution: Solution, store: StoreConfig, cameras_of_shelf: dict) -> list:
    """The changes the visit may have made, with their candidate visits and products:
    each change whose explanation is not sure (with its reason code), and each change
    surely attributed to the visit (reason code '')."""
    found = []
    for index, change in enumerate(solution.changes):
        marginals = solution.marginals(index)
        by_visit, by_product = {}, {}
        for choice, p in marginals.items():
            for code in choice.visit_codes:   # two shoppers' hands at once: both made it
                by_visit[code] = by_visit.get(code, 0.0) + p
            key = (choice.sku, choice.quantity) if choice.explained else ('', 0)
            by_product[key] = by_product.get(key, 0.0) + p
        chosen = solution.best_choice(index)
        if by_visit.get(visit_code, 0.0) < INVOLVED and visit_code not in chosen.visit_codes:
            continue
        code = _reason(change, chosen, marginals[chosen], by_visit[chosen.visit_code])
        if code is None:
            if visit_code not in chosen.visit_codes:
                continue
            code = ''
        visits = sorted(((p, c) for c, p in by_visit.items() if c != NOBODY and p >= INVOLVED), reverse=True)
        products = sorted(((p, s, n) for (s, n), p in by_product.items() if s and p >= INVOLVED), reverse=True)
        found.append(Doubt(
            event_id=change.event_id, reason_code=code, shelf_id=change.shelf_id,
            bin_ids=(change.bin_id,), delta_grams=(change.delta_grams,),
            window_start_ns=change.start_ns, window_end_ns=change.end_ns,
            candidate_visits=tuple(c for _, c in visits), candidate_scores=tuple(round(p, 3) for p, _ in visits),
            proposed_sku=chosen.sku, proposed_quantity=chosen.quantity,
            camera_ids=cameras_of_shelf[change.shelf_id],
            candidate_products=tuple(ProductCandidate(s, n, store.products[s].unit_grams, round(p, 3))
                                     for p, s, n in products),
            proposed_visit=chosen.visit_code, tracks=change.paths))
    return found


def _reason(change, chosen, p_choice: float, p_visit: float):
    """The review reason code of a change's most likely explanation, or None when sure."""
    if not chosen.explained:
        return UNIDENTIFIED_ITEM if change.is_take else UNMATCHED_PUT_BACK
    if chosen.unmatched:
        return UNMATCHED_PUT_BACK
    if p_choice >= SURE:
        return None
    if p_visit < SURE:
        return AMBIGUOUS_ATTRIBUTION if change.seen_near else NO_CANDIDATE
    return AMBIGUOUS_PRODUCT


def reasons_of(doubts: list, visit_code: str) -> list:
    return [Reason(d.reason_code, d.event_id,
                   f'{d.delta_grams[0]:+.1f} g on {d.bin_ids[0]}; proposed {d.proposed_quantity} x '
                   f'{d.proposed_sku or "?"}; visits ' + ', '.join(
                       f'{c} {p:.2f}' for c, p in zip(d.candidate_visits, d.candidate_scores))
                   + '; products ' + ', '.join(f'{c.quantity} x {c.sku} {c.probability:.2f}'
                                               for c in d.candidate_products))
            for d in doubts if d.reason_code]
