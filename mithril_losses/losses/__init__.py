"""Built-in loss families; importing this package registers them."""

from . import regression  # noqa: F401
