"""Web front ends of the edge: the shopper's live cart (live_cart)."""
