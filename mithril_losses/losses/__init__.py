"""Built-in loss families; importing this package registers them."""

from . import adversarial, classification, detection, embedding, probabilistic, regression, segmentation, sequence  # noqa: F401
