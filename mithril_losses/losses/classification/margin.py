"""Classification losses (being written)."""
