"""L1 and L2 regularisation of a dict (or list) of parameter arrays, with a gradient per parameter.

The penalties run through the engine as losses of one layer input, ``params``:
each parameter is converted, checked and given a gradient of its own shape,
dtype and array type, on any backend.
"""

from __future__ import annotations

from .. import _layers, _numerics, _validation
from .._loss import Loss
from ..registry import LossSpec
from .objectives import WeightedLoss


def _sum_over(xp, params, per_parameter):
    total = None
    for _, x in _layers.items(params):
        term = xp.sum(per_parameter(x))
        total = term if total is None else total + term
    return total


def l1_penalty_value(xp, params):
    """sum_k sum |x_k|."""
    return _sum_over(xp, params, xp.abs)


def l1_penalty_vjp(xp, cotangent, params):
    # subgradient 0 at 0, as PyTorch's and Keras's L1
    return {"params": _layers.map_layers(lambda _, x: cotangent * _numerics.sign(xp, x), params)}


def l2_penalty_value(xp, params):
    """1/2 sum_k sum x_k^2."""
    return 0.5 * _sum_over(xp, params, lambda x: x * x)


def l2_penalty_vjp(xp, cotangent, params):
    return {"params": _layers.map_layers(lambda _, x: cotangent * x, params)}


def _check_params(xp, inputs, options, concrete):
    if not _layers.items(inputs["params"]):
        raise _validation.empty_params(inputs["params"])


def _penalty(norm, value, vjp, formula, gradient):
    return Loss(LossSpec(
        name=f"{norm}_regularization", family="composition", summary=f"{norm.upper()} penalty of parameter arrays.",
        inputs=("params",), differentiable=("params",), layer_inputs=("params",),
        value=value, vjp=vjp, formula=formula, gradient=gradient, sample=None, validate=_check_params,
        output_shape=lambda shapes, options: (), reductions=("sum",), default_reduction="sum",
    ), reduction="sum")


_PENALTIES = {
    "l1": _penalty("l1", l1_penalty_value, l1_penalty_vjp, r"\sum_k \lVert x_k \rVert_1",
                   r"\operatorname{sign}(x_k)"),
    "l2": _penalty("l2", l2_penalty_value, l2_penalty_vjp, r"\tfrac12 \sum_k \lVert x_k \rVert_2^2", r"x_k"),
}


class Regularization(WeightedLoss):
    """An L1 or L2 penalty of the input ``params`` (a dict or list of parameter arrays), as an objective part.

    ``norm="l1"``: ``weight * sum_k sum |x_k|``, gradient ``weight * sign(x_k)``;
    ``norm="l2"``: ``weight / 2 * sum_k sum x_k^2``, gradient ``weight * x_k``
    (weight decay with coefficient ``weight``: the convention of Mithril's loss
    guide; Keras's ``L2(l2)`` has no 1/2, so it equals ``weight = 2 * l2``).
    ``grads["params"]`` has the structure of ``params``.
    """

    def __init__(self, norm: str, *, weight: float, name: str | None = None):
        _validation.check_choice("norm", norm, tuple(_PENALTIES))
        self.norm = norm
        super().__init__(_PENALTIES[norm], weight=weight, name=name or f"{norm}_regularization")

    def to_config(self) -> dict:
        return {"composite": "regularization", "name": self.name, "norm": self.norm, "weight": self.weight}

    def __repr__(self):
        return f"Regularization({self.norm!r}, weight={self.weight!r}, name={self.name!r})"


def l1_regularization(params, *, weight: float, backend: str | None = None):
    """``(weight * sum_k sum |x_k|, {k: weight * sign(x_k)})`` for a dict (or list) of parameter arrays.

    The gradients have the structure of ``params`` and each parameter's shape,
    dtype and array type; the subgradient at 0 is 0.
    """
    value, grads = Regularization("l1", weight=weight).value_and_grad(params, backend=backend)
    return value, grads["params"]


def l2_regularization(params, *, weight: float, backend: str | None = None):
    """``(weight / 2 * sum_k sum x_k^2, {k: weight * x_k})`` for a dict (or list) of parameter arrays.

    Weight decay with coefficient ``weight``, as in Mithril's loss guide
    (``0.5 * lambda * sum(square(param))``, gradient ``lambda * param``);
    Keras's ``L2(l2)`` regulariser has no 1/2 (it equals ``weight = 2 * l2``).
    """
    value, grads = Regularization("l2", weight=weight).value_and_grad(params, backend=backend)
    return value, grads["params"]
