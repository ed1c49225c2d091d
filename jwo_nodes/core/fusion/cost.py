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


def expected_cost(charged: dict, carts: list, prices: dict, costs: ReviewCosts) -> float:
    """The expected wrong_cost of charging ``charged`` over (probability, cart) hypotheses."""
    return sum(probability * wrong_cost(charged, cart, prices, costs) for probability, cart in carts
               if cart != charged)
