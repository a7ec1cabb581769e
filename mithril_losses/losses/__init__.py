"""Built-in loss families; importing this package registers them."""

from . import classification, regression  # noqa: F401
