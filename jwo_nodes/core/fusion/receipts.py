"""Receipt lines, cart snapshots, and the doubts a reviewer is shown, from a Solution."""
from jwo_nodes.core.config import StoreConfig
from jwo_nodes.core.fusion.evidence import NOBODY
from jwo_nodes.core.fusion.solver import Solution
from jwo_nodes.core.fusion.types import (AMBIGUOUS_ATTRIBUTION, AMBIGUOUS_PRODUCT, NO_CANDIDATE,
                                         UNIDENTIFIED_ITEM, UNMATCHED_PUT_BACK, Doubt, Line,
                                         ProductCandidate, Reason)

# A change whose most likely explanation has less than this probability is in doubt.
SURE = 0.99
# A visit with at least this probability of having made a change is its candidate.
INVOLVED = 0.01
# Reasons that always send a visit to review: something no product or cart explains.
UNEXPLAINED = (UNIDENTIFIED_ITEM, UNMATCHED_PUT_BACK)


def lines(store: StoreConfig, cart: dict, probability=lambda sku, quantity: 1.0) -> tuple:
    found = []
    for sku in sorted(cart):
        quantity = cart[sku]
        if quantity <= 0:
            continue
        product = store.products[sku]
        found.append(Line(sku, product.name, quantity, product.price_cents, quantity * product.price_cents,
                          round(probability(sku, quantity), 3)))
    return tuple(found)


def doubts_of(visit_code: str, solution: Solution, store: StoreConfig, cameras_of_shelf: dict,
              every_event: bool = False) -> list:
    """Doubts about the changes the visit may have made: each change whose explanation
    is not sure (or, with ``every_event``, each change attributed to the visit), with
    its candidate visits and products."""
    found = []
    for index, change in enumerate(solution.changes):
        marginals = solution.marginals(index)
        by_visit, by_product = {}, {}
        for choice, p in marginals.items():
            by_visit[choice.visit_code] = by_visit.get(choice.visit_code, 0.0) + p
            key = (choice.sku, choice.quantity) if choice.explained else ('', 0)
            by_product[key] = by_product.get(key, 0.0) + p
        chosen = solution.best_choice(index)
        if by_visit.get(visit_code, 0.0) < INVOLVED and chosen.visit_code != visit_code:
            continue
        code = _reason(change, chosen, marginals[chosen], by_visit[chosen.visit_code])
        if code is None:
            if not (every_event and chosen.visit_code == visit_code):
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
                                     for p, s, n in products)))
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
