"""efficientnet family (being written)."""
