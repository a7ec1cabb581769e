"""Classification losses; one module per kind, all of the "classification" family."""

from . import binary, linear, margin, metrics, softmax  # noqa: F401
