"""Profiles of the registry sweep (``test_sweep_properties.py``, ``test_sweep_nonfinite.py``).

``MITHRIL_LOSSES_SWEEP`` picks one: ``quick`` (the default, for CI) or ``full``
(many more examples, every installed backend, more shapes and positions).
Hypothesis is seeded (``derandomize=True``: the same examples on every run,
no example database) and has no deadline (a backend's first call of a new
shape compiles).

Inputs reach a backend through each library's own calls (``conftest.native``),
never through the adapters under test.
"""

from __future__ import annotations

import os

import numpy as np
from hypothesis import settings

from mithril_losses import _layers

from conftest import installed, native

PROFILES = ("quick", "full")
PROFILE = os.environ.get("MITHRIL_LOSSES_SWEEP", "quick")
if PROFILE not in PROFILES:
    raise ValueError(f"MITHRIL_LOSSES_SWEEP must be one of {', '.join(PROFILES)}; got {PROFILE!r}.")
FULL = PROFILE == "full"

EXAMPLES = {"quick": 10, "full": 200}
settings.register_profile("sweep-quick", max_examples=EXAMPLES["quick"], derandomize=True, database=None,
                          deadline=None)
settings.register_profile("sweep-full", settings.get_profile("sweep-quick"), max_examples=EXAMPLES["full"])
SWEEP = settings.get_profile(f"sweep-{PROFILE}")

# JAX compiles every operation once per new shape and dtype (seconds per loss): the thorough profile only.
BACKENDS = tuple(b for b in ("numpy", "torch", "mlx", "array_api_strict") + (("jax",) if FULL else ())
                 if installed(b))
DTYPES = ("float32", "float64")


def on_backend(arrays: dict, backend: str, dtype: str) -> dict:
    """Sampled NumPy inputs as ``backend`` arrays: floating ones in ``dtype``, labels as they are, layer by layer."""
    def convert(_, a):
        a = np.asarray(a)
        return native(backend, a, dtype if a.dtype.kind == "f" else None)

    return {name: None if a is None else _layers.map_layers(convert, a) for name, a in arrays.items()}
