"""Built-in loss families; importing this package registers them."""

from . import (adversarial, classification, detection, embedding, perceptual, probabilistic,  # noqa: F401
               regression, segmentation, sequence)
