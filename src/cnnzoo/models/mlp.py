"""mlp family (being written)."""
