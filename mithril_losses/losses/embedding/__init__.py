"""Embedding, metric-learning, ranking and self-supervised losses; one module per kind, all of the "embedding" family."""

from . import pairs, ranking, self_supervised  # noqa: F401
