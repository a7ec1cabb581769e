"""Probabilistic losses and divergences; one module per kind, all of the "probabilistic" family."""

from . import distances, divergences  # noqa: F401
