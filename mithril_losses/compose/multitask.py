"""Multi-task and multi-output objectives: learned uncertainty weighting, and Mithril's output-gradient pattern."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from .. import _validation, backends
from .._loss import Loss
from ..registry import LossSpec
from . import _base
from ._base import GRAD, VALUE, VJP, Evaluation, Objective, Signature, signature
from .objectives import _Parts


def uncertainty_value(xp, losses, log_vars):
    """exp(-s_i) L_i + s_i per task."""
    return xp.exp(-log_vars) * losses + log_vars


def uncertainty_vjp(xp, cotangent, losses, log_vars):
    precision = xp.exp(-log_vars)
    return {"losses": cotangent * precision, "log_vars": cotangent * (1.0 - precision * losses)}


# The weighting itself runs through the engine, which converts and checks `log_vars` as any loss input.
_UNCERTAINTY = Loss(LossSpec(
    name="uncertainty_weighting", family="composition",
    summary="Task losses weighted by learned log-variances (Kendall, Gal and Cipolla 2018).",
    inputs=("losses", "log_vars"), differentiable=("losses", "log_vars"),
    value=uncertainty_value, vjp=uncertainty_vjp,
    formula=r"\mathcal{L} = \sum_i e^{-s_i} L_i + s_i",
    gradient=r"\partial\mathcal{L}/\partial L_i = e^{-s_i},\ \partial\mathcal{L}/\partial s_i = 1 - e^{-s_i} L_i",
    sample=None, reductions=("sum",), default_reduction="sum",
), reduction="sum")


class UncertaintyWeightedLoss(_Parts):
    """Task losses balanced by learned log-variances ``s_i`` (homoscedastic uncertainty weighting).

    ``total = sum_i exp(-s_i) L_i + s_i``, the form of dl_techniques' YOLOv12
    multi-task loss; Kendall et al.'s regression form ``exp(-s_i) L_i / 2 +
    s_i / 2`` is half of it and has the same minimiser ``s_i = log L_i``. The
    log-variances are parameters the caller owns and updates: a 1-D array
    ``log_vars`` with one entry per task, in the order of ``tasks``, passed by
    keyword. ``value_and_grad`` returns the gradients of every task input,
    ``exp(-s_i) dL_i/dinput`` summed over the tasks that take it, and
    ``grads["log_vars"] = 1 - exp(-s_i) L_i``. Tasks are routed like the parts
    of a ``CompositeLoss`` and must each reduce to a scalar. Components are the
    task losses ``L_i``. The total is a scalar, so there is no ``vjp``: scale
    ``grad`` by the cotangent.

    References: Kendall, Gal and Cipolla, Multi-Task Learning Using Uncertainty
    to Weigh Losses for Scene Geometry and Semantics (CVPR 2018);
    dl_techniques ``YOLOv12MultiTaskLoss(use_uncertainty_weighting=True)``.
    """

    def __init__(self, tasks, *, name: str = "uncertainty_weighted"):
        super().__init__(tasks, name=name)
        for task, part in self._parts.items():
            if "log_vars" in signature(part).inputs:
                raise _validation.reserved_input(self.name, task, "log_vars")

    @property
    def signature(self) -> Signature:
        tasks = super().signature
        return Signature(tasks.inputs + ("log_vars",), tasks.differentiable + ("log_vars",), tasks.predictions,
                         tasks.required + ("log_vars",), tasks.weight)

    def _evaluate(self, inputs, options, mode, cotangent) -> Evaluation:
        if mode == VJP:
            raise _validation.vjp_unsupported(self.name, "its total is a scalar; scale `grad` by the cotangent")
        log_vars = inputs["log_vars"]
        _validation.check_log_vars_shape(self.name, tuple(np.shape(log_vars)), tuple(self._parts))
        evals = self._evaluate_parts(inputs, options, mode, cotangent)
        for task, e in evals.items():
            if tuple(e.total.shape) != ():
                raise _validation.task_not_scalar(self.name, task, tuple(e.total.shape))
        values = [e.total for e in evals.values()]
        losses = backends.get_adapter(backends.library_of(values[0])).xp.stack(values)
        components = {n: e.total for n, e in evals.items()}
        if mode == VALUE:
            total = _UNCERTAINTY.value(losses, log_vars, backend=options.backend)
            return Evaluation(total, None, total, components)
        total, weighting = _UNCERTAINTY.value_and_grad(losses, log_vars, backend=options.backend)
        grads = _base.summed([_base.scaled(e.grads, weighting["losses"][i]) for i, e in enumerate(evals.values())],
                             self.inputs)
        return Evaluation(total, {**grads, "log_vars": weighting["log_vars"]}, total, components)

    def to_config(self) -> dict:
        return {"composite": "uncertainty_weighted", "name": self.name,
                "tasks": {n: p.to_config() for n, p in self._parts.items()}}

    def __repr__(self):
        return f"UncertaintyWeightedLoss({self._parts!r}, name={self.name!r})"


class MultiOutputLoss(_Parts):
    """A loss per named model output, weighted and summed; the gradients are the model's ``output_gradients``.

    ``MultiOutputLoss({"logits": (mlo.get("cross_entropy"), 1.0), "box": (mlo.get("giou"), 0.5)})``
    is called with ``outputs`` (output name -> array) and ``targets``
    (output name -> the loss's other input, or a dict of its other inputs by
    name; outputs whose loss takes nothing else need no entry). Each output is
    its loss's prediction input (``mlo.spec(name).prediction_inputs``:
    ``input`` of cross_entropy, ``boxes1`` of giou). ``value_and_grad``
    returns ``(total, output_gradients)`` with ``output_gradients[name] =
    weight * d loss / d output``, in the output's shape, dtype and array type:
    Mithril's ``evaluate(params, data, output_gradients=...)`` pattern.
    ``weight=`` and ``where=`` may be dicts output name -> array. Components
    are the unweighted per-output losses. A multi-output loss is a whole
    objective: it is not a part of another one, and it has no ``vjp`` (its
    outputs have different shapes).
    """

    nestable = False
    positional = Objective.positional

    def __init__(self, outputs: Mapping, *, name: str = "multi_output"):
        if not isinstance(outputs, Mapping):
            raise _validation.bad_parts(name, outputs)
        super().__init__(outputs, name=name)
        for output, part in self._parts.items():
            if not signature(part).predictions:
                raise _validation.no_prediction(self.name, output)

    @property
    def signature(self) -> Signature:
        return Signature(("outputs", "targets"), ("outputs",), ("outputs",), ("outputs",), "per-element")

    def _evaluate(self, inputs, options, mode, cotangent) -> Evaluation:
        if mode == VJP:
            raise _validation.vjp_unsupported(self.name, "its outputs have different shapes; use `grad`")
        outputs, targets = inputs["outputs"], inputs.get("targets")
        _validation.check_outputs(self.name, outputs, tuple(self._parts))
        if targets is not None and not isinstance(targets, Mapping):
            raise _validation.bad_targets(self.name, targets)
        targets = _base.per_part(self.name, "targets", targets or {}, self._parts)
        weights = _base.per_part(self.name, "weight", options.weight, self._parts)
        wheres = _base.per_part(self.name, "where", options.where, self._parts)
        evals, predictions = {}, {}
        for name, part in self._parts.items():
            predictions[name] = signature(part).predictions[0]
            part_inputs = {predictions[name]: outputs[name], **self._targets(name, part, targets[name])}
            evals[name] = _base.evaluate(part, part_inputs, _base.CallOptions(weights[name], wheres[name],
                                                                              options.backend), mode)
        total = _base.total_of(self.name, {n: e.total for n, e in evals.items()})
        grads = None if mode != GRAD else {n: e.grads[predictions[n]] for n, e in evals.items()}
        return Evaluation(total, grads, total, {n: e.raw for n, e in evals.items()})

    def _targets(self, output, part, target) -> dict:
        """The inputs of ``output``'s loss besides the prediction, by name."""
        sig = signature(part)
        others = [n for n in sig.required if n != sig.predictions[0]]
        if target is not None and not isinstance(target, Mapping):
            if len(others) != 1:
                raise _validation.targets_need_names(self.name, output, others)
            return {others[0]: target}
        given = dict(target or {})
        missing = [n for n in others if n not in given]
        if missing:
            raise _validation.missing_targets(self.name, output, missing)
        return given

    def to_config(self) -> dict:
        return {"composite": "multi_output", "name": self.name,
                "outputs": {n: p.to_config() for n, p in self._parts.items()}}

    def __repr__(self):
        return f"MultiOutputLoss({self._parts!r}, name={self.name!r})"
