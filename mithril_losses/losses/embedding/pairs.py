"""Embedding losses (being written)."""
