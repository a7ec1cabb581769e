"""Built-in loss families; importing this package registers them."""

from . import adversarial, classification, probabilistic, regression  # noqa: F401
