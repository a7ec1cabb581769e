"""mithril_losses: loss values and hand-derived gradients on NumPy, JAX, PyTorch and MLX.

Importing this package imports none of jax, torch or mlx.
"""

from __future__ import annotations

from . import functional
from ._loss import Loss
from .config import get_backend, set_backend, use_backend
from .registry import LossSpec, Option, Tolerance, available, families, from_config, get, register, spec

__version__ = "0.1.0"

__all__ = [
    "Loss", "LossSpec", "Option", "Tolerance", "available", "families", "from_config", "get",
    "get_backend", "register", "set_backend", "spec", "use_backend",
]


def __getattr__(name):
    """Functional names (``mse_loss``, ``mse_loss_gradient``, ...) come from the registry."""
    from .registry import _load_builtin

    _load_builtin()
    try:
        return getattr(functional, name)
    except AttributeError:
        raise AttributeError(f"module 'mithril_losses' has no attribute {name!r}") from None


def __dir__():
    from .registry import _load_builtin

    _load_builtin()
    return sorted(set(globals()) | set(functional.__all__))
