"""Built-in loss families; importing this package registers them."""

from . import adversarial, classification, embedding, probabilistic, regression  # noqa: F401
