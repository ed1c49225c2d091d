"""Money is integer cents everywhere; this is the one place that rounds."""


def tax_cents(subtotal_cents: int, tax_rate_bp: int) -> int:
    """Tax on a subtotal at a rate in basis points, rounded half up to the cent."""
    return (subtotal_cents * tax_rate_bp + 5000) // 10000


def format_cents(cents: int, currency: str = 'USD') -> str:
    sign = '-' if cents < 0 else ''
    return f'{sign}{abs(cents) // 100}.{abs(cents) % 100:02d} {currency}'
