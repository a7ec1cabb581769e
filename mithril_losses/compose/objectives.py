"""Weighted, scheduled and composite objectives (Artifex's composable losses, with hand-derived gradients).

``WeightedLoss`` and ``ScheduledLoss`` scale one term; ``CompositeLoss`` and
``LossCollection`` add named parts. Inputs are routed to each part by the
part's own input names, and each input's gradient is the sum of the parts'
weighted gradients for it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from .. import _validation
from . import _base
from ._base import VALUE, VJP, CallOptions, Evaluation, Objective, Signature, evaluate, signature
from .schedules import LossScheduler


class _Scaled(Objective):
    """One term times a weight, with its inputs optionally renamed."""

    def __init__(self, loss, *, name, inputs):
        self.loss = _base.check_term(f"The loss of {type(self).__name__}", loss)
        self.name = loss.name if name is None else _validation.check_part_name(type(self).__name__, name)
        inner = signature(loss)
        self.renamed = _validation.check_renaming(self.name, inputs, inner.inputs)
        self._inner_names = {self.renamed.get(n, n): n for n in inner.inputs}

    @property
    def weight(self) -> float:  # pragma: no cover - both subclasses override it
        raise NotImplementedError

    @property
    def signature(self) -> Signature:
        inner = signature(self.loss)

        def outer(names):
            return tuple(self.renamed.get(n, n) for n in names)

        return Signature(outer(inner.inputs), outer(inner.differentiable), outer(inner.predictions),
                         outer(inner.required), inner.weight)

    def children(self) -> list:
        return [self.loss]

    def _config(self, kind: str, **entries) -> dict:
        cfg = {"composite": kind, "name": self.name, **entries, "loss": self.loss.to_config()}
        return {**cfg, "inputs": dict(self.renamed)} if self.renamed else cfg

    def _evaluate(self, inputs, options, mode, cotangent) -> Evaluation:
        inner = evaluate(self.loss, {self._inner_names[n]: v for n, v in inputs.items()}, options, mode, cotangent)
        w = self.weight
        total = None if mode == VJP else _base.times(inner.total, w)
        grads = None
        if inner.grads is not None:
            grads = {self.renamed.get(n, n): g for n, g in _base.scaled(inner.grads, w).items()}
        return Evaluation(total, grads, inner.total, {self.name: inner.total})


class WeightedLoss(_Scaled):
    """A loss (or objective) times a fixed weight: ``weight * loss(...)``, with gradients ``weight * grad``.

    ``inputs`` renames the loss's inputs for the objective it is part of, e.g.
    ``WeightedLoss(mlo.get("mse"), weight=0.5, inputs={"input": "depth", "target": "depth_target"})``
    so that parts whose input names clash read different arrays.
    """

    def __init__(self, loss, *, weight: float = 1.0, name: str | None = None, inputs: dict | None = None):
        _validation.check_number("weight", weight)
        self._weight = float(weight)
        super().__init__(loss, name=name, inputs=inputs)

    @property
    def weight(self) -> float:
        return self._weight

    def to_config(self) -> dict:
        return self._config("weighted", weight=self._weight)

    def __repr__(self):
        return f"WeightedLoss({self.loss!r}, weight={self._weight!r}, name={self.name!r})"


class ScheduledLoss(_Scaled):
    """A loss whose weight follows the training step: ``schedule(step) * loss(...)``.

    ``schedule`` is a ``LossScheduler`` (which round-trips through
    ``to_config``) or any Python callable step -> weight (which does not).
    The step starts at ``step`` and moves with ``.step()`` (one ahead) and
    ``.set_step(n)``; an objective's ``step()`` / ``set_step`` reach every
    scheduled part inside it.
    """

    def __init__(self, loss, schedule, *, step: int = 0, name: str | None = None, inputs: dict | None = None):
        if not callable(schedule):
            raise _validation.schedule_not_callable(schedule)
        self.schedule = schedule
        self._step = _validation.check_step(step)
        super().__init__(loss, name=name, inputs=inputs)

    @property
    def current_step(self) -> int:
        return self._step

    @property
    def weight(self) -> float:
        """The schedule's weight at the current step."""
        return _validation.check_schedule_value(self.name, self._step, self.schedule(self._step))

    def set_step(self, step: int) -> None:
        self._step = _validation.check_step(step)
        super().set_step(step)

    def step(self) -> None:
        self._step += 1
        super().step()

    def to_config(self) -> dict:
        if not isinstance(self.schedule, LossScheduler):
            raise _validation.schedule_not_serialisable(self.name, self.schedule)
        return self._config("scheduled", schedule=self.schedule.to_config(), step=self._step)

    def __repr__(self):
        return f"ScheduledLoss({self.loss!r}, {self.schedule!r}, step={self._step}, name={self.name!r})"


def scaled_part(owner: str, name: str, part):
    """A part as a weighted term named ``name``: ``(loss, weight)`` pairs and bare terms (weight 1) are wrapped."""
    if isinstance(part, tuple):
        if len(part) != 2:
            raise _validation.bad_part(owner, name, part)
        return WeightedLoss(part[0], weight=part[1], name=name)
    if isinstance(part, _Scaled):
        return part
    return WeightedLoss(part, name=name)


def named_parts(owner: str, parts, *, allow_empty: bool = False) -> dict:
    """A dict name -> weighted part from a dict name -> term or (term, weight), or a list of terms (named by
    their ``name``)."""
    if isinstance(parts, Mapping):
        named = [(_validation.check_part_name(owner, k), v) for k, v in parts.items()]
    elif isinstance(parts, Sequence) and not isinstance(parts, str):
        named = [(_listed_name(p), p) for p in parts]
    else:
        raise _validation.bad_parts(owner, parts)
    out: dict = {}
    for name, part in named:
        if name is None:
            raise _validation.bad_part(owner, name, part)
        if name in out:
            raise _validation.duplicate_part(owner, name)
        out[name] = scaled_part(owner, name, part)
    if not out and not allow_empty:
        raise _validation.no_parts(owner)
    return out


def _listed_name(part):
    """The name a part given in a list goes by: its loss's (or objective's) own name."""
    term = part[0] if isinstance(part, tuple) and part else part
    return getattr(term, "name", None)


class _Parts(Objective):
    """Named weighted parts called on one set of named inputs."""

    allow_empty = False

    def __init__(self, parts, *, name: str):
        self.name = _validation.check_part_name(type(self).__name__, name)
        self._parts = named_parts(self.name, parts, allow_empty=self.allow_empty)

    @property
    def parts(self) -> dict:
        """Part name -> weighted part (a ``WeightedLoss`` or ``ScheduledLoss``)."""
        return dict(self._parts)

    @property
    def weights(self) -> dict:
        """Part name -> its current weight (fixed, or its schedule's at the current step)."""
        return {n: p.weight for n, p in self._parts.items()}

    def children(self) -> list:
        return list(self._parts.values())

    @property
    def signature(self) -> Signature:
        sigs = [signature(p) for p in self._parts.values()]
        inputs = _base.union(s.inputs for s in sigs)

        def ordered(names):
            chosen = set(names)
            return tuple(n for n in inputs if n in chosen)

        meanings = {s.weight for s in sigs}
        return Signature(inputs, ordered(n for s in sigs for n in s.differentiable),
                         ordered(n for s in sigs for n in s.predictions), ordered(n for s in sigs for n in s.required),
                         meanings.pop() if len(meanings) == 1 else "mixed")

    @property
    def positional(self):
        return _base.positional_names({n: signature(p).inputs for n, p in self._nonempty_parts().items()})

    def _nonempty_parts(self) -> dict:
        if not self._parts:
            raise _validation.no_parts(self.name)
        return self._parts

    def _evaluate_parts(self, inputs, options: CallOptions, mode, cotangent) -> dict:
        if options.weight is not None and not isinstance(options.weight, Mapping):
            meanings = {n: signature(p).weight for n, p in self._parts.items()}
            if len(set(meanings.values())) > 1:
                raise _validation.ambiguous_weight(self.name, meanings)
        weights = _base.per_part(self.name, "weight", options.weight, self._parts)
        wheres = _base.per_part(self.name, "where", options.where, self._parts)
        return {n: evaluate(p, {k: inputs[k] for k in signature(p).inputs if k in inputs},
                            CallOptions(weights[n], wheres[n], options.backend), mode, cotangent)
                for n, p in self._nonempty_parts().items()}


class CompositeLoss(_Parts):
    """A sum of named weighted parts, with the unweighted part values as components.

    ``parts`` is a dict name -> loss, (loss, weight) or ``WeightedLoss`` /
    ``ScheduledLoss``, or a list of them named by their ``name``. The total is
    ``sum_k w_k L_k``; the gradient of each input is ``sum_k w_k dL_k/dinput``
    over the parts that take that input. ``value(..., return_components=True)``
    gives ``(total, {name: L_k})``, and ``value_and_grad(...,
    return_components=True)`` gives ``(total, grads, {name: L_k})``, as
    Artifex's ``CompositeLoss(return_components=True)``.

    Routing: the objective's inputs are its parts' input names, in order of
    first appearance, and each part gets the inputs it names (a part that does
    not take an input adds nothing to its gradient). Positional arguments bind
    to those names in that order, as far as every part that takes a name takes
    it at the same position: ``mse`` and ``l1`` (both ``input, target``) take
    ``objective(x, y)``; ``mse`` with ``gaussian_kl`` takes ``objective(x, y,
    mean=m, logvar=v)``, and a third positional argument is an error, as
    ``mean`` is the first input of ``gaussian_kl``. Parts whose input names
    clash but should read different arrays are renamed with
    ``WeightedLoss(..., inputs={...})``. ``weight=`` and ``where=`` go to every
    part, or, as a dict part name -> array, to the parts they name; one array
    for parts that read it differently (cross_entropy's class weights and
    another loss's per-element weights) is an error.
    """

    kind = "composite"

    def __init__(self, parts, *, name: str = "composite"):
        super().__init__(parts, name=name)

    def _evaluate(self, inputs, options, mode, cotangent) -> Evaluation:
        evals = self._evaluate_parts(inputs, options, mode, cotangent)
        total = None if mode == VJP else _base.total_of(self.name, {n: e.total for n, e in evals.items()})
        grads = None if mode == VALUE else _base.summed((e.grads for e in evals.values()), self.inputs)
        return Evaluation(total, grads, total, {n: e.raw for n, e in evals.items()})

    def to_config(self) -> dict:
        return {"composite": self.kind, "name": self.name,
                "parts": {n: p.to_config() for n, p in self._parts.items()}}

    def __repr__(self):
        return f"{type(self).__name__}({self._parts!r}, name={self.name!r})"


class LossCollection(CompositeLoss):
    """A composite built one part at a time: ``LossCollection().add(mse, weight=1.0).add(l1, weight=0.5)``."""

    kind = "collection"
    allow_empty = True

    def __init__(self, parts=(), *, name: str = "collection"):
        super().__init__(parts, name=name)

    def add(self, loss, *, weight: float | None = None, name: str | None = None) -> LossCollection:
        """Add ``loss`` (times ``weight``, if given) under ``name`` (default: its own name); returns the collection."""
        key = _base.check_term(f"The loss added to {self.name!r}", loss).name if name is None else name
        key = _validation.check_part_name(self.name, key)
        if key in self._parts:
            raise _validation.duplicate_part(self.name, key)
        self._parts[key] = scaled_part(self.name, key, loss if weight is None else (loss, weight))
        return self

    def remove(self, name: str) -> None:
        self._part(name)
        del self._parts[name]

    def set_weight(self, name: str, weight: float) -> None:
        """Set the fixed weight of the part ``name`` (a scheduled part takes its weight from its schedule)."""
        part = self._part(name)
        if not isinstance(part, WeightedLoss):
            raise _validation.scheduled_weight(self.name, name)
        self._parts[name] = WeightedLoss(part.loss, weight=weight, name=part.name, inputs=part.renamed)

    def _part(self, name):
        if name not in self._parts:
            raise _validation.unknown_name(f"part of {self.name!r}", name, self._parts)
        return self._parts[name]
