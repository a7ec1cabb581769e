"""Composition and training utilities (not losses, the same contract).

Weighted, scheduled and composite objectives, multi-output objectives whose
gradients are a model's ``output_gradients``, learned uncertainty weighting,
L1/L2 regularisation, loss-weight schedules, smoothed loss metrics, Artifex's
``safe_log``/``safe_divide``, and objectives from configs and files.
"""

from __future__ import annotations

from .config import from_config, load_objective
from .metrics import LossMetrics
from .multitask import MultiOutputLoss, UncertaintyWeightedLoss
from .objectives import CompositeLoss, LossCollection, ScheduledLoss, WeightedLoss
from .regularization import Regularization, l1_regularization, l2_regularization
from .schedules import LossScheduler
from .stable import safe_divide, safe_log

__all__ = [
    "CompositeLoss", "LossCollection", "LossMetrics", "LossScheduler", "MultiOutputLoss", "Regularization",
    "ScheduledLoss", "UncertaintyWeightedLoss", "WeightedLoss", "from_config", "l1_regularization",
    "l2_regularization", "load_objective", "safe_divide", "safe_log",
]
