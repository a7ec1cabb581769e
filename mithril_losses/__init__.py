"""mithril_losses: loss values and hand-derived gradients on NumPy, JAX, PyTorch and MLX.

Importing this package imports none of jax, torch or mlx.
"""

from __future__ import annotations

from . import functional
from ._compiled import compile  # noqa: A004  (mlo.compile, as jax.jit / torch.compile)
from ._loss import Loss
from .compose import (CompositeLoss, LossCollection, LossMetrics, LossScheduler, MultiOutputLoss, Regularization,
                      ScheduledLoss, UncertaintyWeightedLoss, WeightedLoss, l1_regularization, l2_regularization,
                      load_objective, safe_divide, safe_log)
from .config import get_backend, set_backend, use_backend
from .registry import LossSpec, Option, Reference, Tolerance, available, families, from_config, get, register, spec

__version__ = "0.1.0"

__all__ = [
    "CompositeLoss", "Loss", "LossCollection", "LossMetrics", "LossScheduler", "LossSpec", "MultiOutputLoss", "Option",
    "Reference", "Regularization", "ScheduledLoss", "Tolerance", "UncertaintyWeightedLoss", "WeightedLoss",
    "available", "compile", "distances", "families", "from_config", "get", "get_backend", "l1_regularization",
    "l2_regularization", "load_objective", "register", "register_distance", "safe_divide", "safe_log",
    "set_backend", "spec", "update_center", "use_backend",
]

_HELPERS = {  # loss-specific helpers, imported with the loss families on first use
    "register_distance": "mithril_losses.losses.embedding.pairs",
    "distances": "mithril_losses.losses.embedding.pairs",
    "update_center": "mithril_losses.losses.embedding.self_supervised",
}


def __getattr__(name):
    """Functional names (``mse_loss``, ``mse_loss_gradient``, ...) come from the registry."""
    import importlib

    from .registry import _load_builtin

    _load_builtin()
    if name in _HELPERS:
        return getattr(importlib.import_module(_HELPERS[name]), name)
    try:
        return getattr(functional, name)
    except AttributeError:
        raise AttributeError(f"module 'mithril_losses' has no attribute {name!r}") from None


def __dir__():
    from .registry import _load_builtin

    _load_builtin()
    return sorted(set(globals()) | set(_HELPERS) | set(functional.__all__))
