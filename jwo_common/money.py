"""Money is integer cents everywhere; this is the one place that rounds.

Every rounding is half up to the cent, on whole numbers only (no floats): tax on a
subtotal, the price of a weighed quantity, and a percentage off a price.
"""


def tax_cents(subtotal_cents: int, tax_rate_bp: int) -> int:
    """Tax on a subtotal at a rate in basis points, rounded half up to the cent."""
    return (subtotal_cents * tax_rate_bp + 5000) // 10000


def weighed_price_cents(grams: int, price_per_kg_cents: int) -> int:
    """The price of ``grams`` of a product sold by weight: grams x cents per kg / 1000,
    rounded half up to the cent."""
    return (grams * price_per_kg_cents + 500) // 1000


def percent_of_cents(cents: int, percent: int) -> int:
    """``percent`` % of a price (what a percentage off saves), rounded half up to the cent."""
    return (cents * percent + 50) // 100


def format_cents(cents: int, currency: str = 'USD') -> str:
    sign = '-' if cents < 0 else ''
    return f'{sign}{abs(cents) // 100}.{abs(cents) % 100:02d} {currency}'
