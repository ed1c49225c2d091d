"""What a wrong FINAL receipt costs the store, and the expected cost of issuing one
given the hypotheses: the review decision (see config.ReviewCosts)."""
from jwo_nodes.core.config import ReviewCosts


def wrong_cost(charged: dict, truth: dict, prices: dict, costs: ReviewCosts) -> float:
    """Cents lost by charging ``charged`` (sku -> count) when the visit took ``truth``:
    overcharged cents weighted, undercharged cents, and each wrong line's trust."""
    over = under = wrong_lines = 0
    for sku in set(charged) | set(truth):
        difference = charged.get(sku, 0) - truth.get(sku, 0)
        if difference > 0:
            over += difference * prices[sku]
        elif difference < 0:
            under -= difference * prices[sku]
        wrong_lines += difference != 0
    return over * costs.overcharge_weight + under + wrong_lines * costs.wrong_line_cents


def expected_cost(charged: dict, carts: list, prices: dict, costs: ReviewCosts, dropped: float = 0.0) -> float:
    """The expected wrong_cost of charging ``charged`` over (probability, cart) hypotheses
    and over the probability ``dropped`` that the cart is one the solver's beam let go
    of: such a cart costs what the wrong carts kept cost on average, or, where none was
    kept, one unit too many of the dearest item charged."""
    wrong = [(probability, wrong_cost(charged, cart, prices, costs)) for probability, cart in carts
             if cart != charged]
    kept = sum(probability * cents for probability, cents in wrong)
    if not dropped:
        return kept
    mass = sum(probability for probability, _ in wrong)
    unknown = kept / mass if mass > 0 else (
        max((prices[sku] for sku in charged), default=0) * costs.overcharge_weight + costs.wrong_line_cents)
    return (1.0 - dropped) * kept + dropped * unknown
