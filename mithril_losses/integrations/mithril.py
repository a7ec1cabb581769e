"""Drive a compiled Mithril model's backward pass with mithril_losses' output gradients.

Mithril computes losses outside the model: the compiled model evaluates its
outputs, a loss gives d loss / d output for each of them, and the model turns
those output gradients into parameter gradients. Two API generations take
the output gradients:

- mithril 0.1.1: ``model.evaluate_gradients(params, data, output_gradients=...)``
  returns the parameter gradients;
- newer releases: ``model.evaluate(params, data, output_gradients=...)`` returns
  ``(outputs, parameter gradients)``.

The generation is read off the model (whether its ``evaluate`` takes
``output_gradients``), so one code path serves both, and mithril itself is
never imported here. Two rules guard against Mithril's silent failures:

- every output gradient is copied before the model sees it: Mithril's NumPy
  backend accumulates into the arrays it is handed (``gradients[key] += ...``
  for an output that also feeds other layers), which would change an array
  the caller still holds;
- every output gradient must have exactly its output's shape: Mithril
  broadcasts a wrong one, e.g. ``(1, C)`` for an ``(N, C)`` output, and returns
  wrong parameter gradients without an error.

Targets are data: they travel in ``data`` next to the model's inputs (a model
with a target input is compiled with it in ``data_keys``), and ``data`` goes to
the model unchanged.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .. import _validation, backends
from .._loss import Loss

__all__ = ["Step", "backward", "loss_and_gradients"]


@dataclass(frozen=True)
class Step:
    """One training step's results from ``loss_and_gradients``.

    ``loss`` is the total, the sum over outputs of weight * loss; ``losses``
    each output's loss value; ``outputs`` the model's outputs; ``output_gradients``
    d total / d output by output name (the model was handed copies);
    ``gradients`` d total / d parameter by parameter name.
    """

    loss: Any
    losses: dict
    outputs: dict
    output_gradients: dict
    gradients: dict


def backward(model, params, data, output_gradients, *, outputs=None) -> dict:
    """Parameter gradients of a compiled Mithril model for the given output gradients.

    ``output_gradients`` maps output names to d loss / d output. Each must have
    its output's shape, read from ``outputs`` (the model's evaluated outputs,
    where the caller has them), else from the compiled model's shapes where
    they are fully known, else from one forward pass; each is copied before
    the model sees it. ``data`` (inputs and targets) goes to the model unchanged.
    """
    run = _backward_function(model)
    _check_output_gradients(model, output_gradients)
    shapes = _output_shapes(model, params, data, tuple(output_gradients), outputs)
    for name, g in output_gradients.items():
        if tuple(g.shape) != shapes[name]:
            raise _validation.output_gradient_shape(name, tuple(g.shape), shapes[name])
    return run(params, data, {name: _copy(g) for name, g in output_gradients.items()})


def loss_and_gradients(model, params, data, losses) -> Step:
    """Evaluate a compiled Mithril model, mithril_losses losses on its outputs, and the parameter gradients.

    ``losses`` maps an output name to ``(loss, targets)`` or ``(loss, targets, weight)``:
    ``loss`` is a mithril_losses ``Loss`` (``mlo.get(...)``) with a reduction,
    called as ``loss(outputs[name], *(data[key] for key in targets))``; ``targets``
    is one key of ``data``, a tuple of keys (the loss's further inputs, in
    order), or None for a loss of the output alone; ``weight`` (default 1)
    scales that loss in the total

        total = sum over outputs of weight * loss(outputs[name], targets...)

    whose gradient d total / d output is fed to the model's backward pass (see ``backward``).
    """
    _backward_function(model)  # not a compiled model: say so before evaluating anything
    terms = {name: _loss_term(model, data, name, entry) for name, entry in _checked_losses(losses).items()}
    outputs = model.evaluate(params, data)
    values, output_gradients = {}, {}
    for name, (loss, keys, weight) in terms.items():
        output = outputs[name]  # the loss runs in the model's array library, so its gradient fits the model
        value, grads = loss.value_and_grad(output, *(data[key] for key in keys), backend=backends.library_of(output))
        values[name] = value
        output_gradients[name] = grads[loss.inputs[0]] * weight
    total = sum(weight * values[name] for name, (_, _, weight) in terms.items())
    gradients = backward(model, params, data, output_gradients, outputs=outputs)
    return Step(total, values, outputs, output_gradients, gradients)


# -- the model's API generation ------------------------------------------------


def _backward_function(model):
    """``(params, data, output_gradients) -> parameter gradients`` through the model's own API generation."""
    evaluate = getattr(model, "evaluate", None)
    if callable(evaluate) and "output_gradients" in _parameter_names(evaluate):  # newer Mithril
        return lambda params, data, grads: evaluate(params, data, output_gradients=grads)[1]
    evaluate_gradients = getattr(model, "evaluate_gradients", None)
    if callable(evaluate) and callable(evaluate_gradients):  # mithril 0.1.1
        return lambda params, data, grads: evaluate_gradients(params, data, output_gradients=grads)
    raise _validation.not_a_compiled_mithril_model(model)


def _parameter_names(fn) -> tuple[str, ...]:
    try:
        return tuple(inspect.signature(fn).parameters)
    except (TypeError, ValueError):  # no signature to read (a builtin): it takes no output gradients
        return ()


# -- checks and helpers --------------------------------------------------------


def _check_output_gradients(model, output_gradients) -> None:
    if not isinstance(output_gradients, Mapping):
        raise _validation.not_a_mapping("output_gradients", output_gradients, "output name -> gradient")
    if not output_gradients:
        raise _validation.empty_mapping("output_gradients", "model output to its gradient")
    for name, g in output_gradients.items():
        if name not in model.output_keys:
            raise _validation.unknown_name("Mithril model output", name, model.output_keys)
        if backends.library_of(g) is None:
            raise _validation.output_gradient_not_an_array(name, g)


def _output_shapes(model, params, data, names, outputs) -> dict:
    """Shapes of the named outputs: evaluated ones where given, else fully known static ones, else a forward pass's."""
    if outputs is None:
        static = {name: (getattr(model, "shapes", None) or {}).get(name) for name in names}
        if all(_is_known(shape) for shape in static.values()):
            return {name: tuple(shape) for name, shape in static.items()}
        outputs = model.evaluate(params, data)
    missing = [name for name in names if name not in outputs]
    if missing:
        raise _validation.missing_outputs(missing, list(outputs))
    return {name: tuple(outputs[name].shape) for name in names}


def _is_known(shape) -> bool:
    """Mithril writes an unknown dimension as None and a variadic part as '...'."""
    return shape is not None and all(isinstance(d, int) and not isinstance(d, bool) for d in shape)


def _copy(g):
    """A copy of gradient ``g`` in its own library, so that Mithril may write into it."""
    return backends.get_adapter(backends.library_of(g)).xp.asarray(g, copy=True)


def _checked_losses(losses) -> Mapping:
    if not isinstance(losses, Mapping):
        raise _validation.not_a_mapping("losses", losses, "output name -> (loss, targets[, weight])")
    if not losses:
        raise _validation.empty_mapping("losses", "model output to its loss")
    return losses


def _loss_term(model, data, name, entry) -> tuple:
    """``(loss, target keys, weight)`` of one output's entry in ``losses``, checked."""
    if name not in model.output_keys:
        raise _validation.unknown_name("Mithril model output", name, model.output_keys)
    if not isinstance(entry, tuple) or len(entry) not in (2, 3) or not isinstance(entry[0], Loss):
        raise _validation.bad_mithril_loss_entry(name, entry)
    loss, targets, weight = entry if len(entry) == 3 else (*entry, 1.0)
    keys = () if targets is None else (targets,) if isinstance(targets, str) else targets
    if not isinstance(keys, tuple) or not all(isinstance(key, str) for key in keys):
        raise _validation.bad_mithril_loss_entry(name, entry)
    if loss.reduction == "none":
        raise _validation.unreduced_mithril_loss(name, loss.name)
    if loss.inputs[0] not in loss.differentiable:
        raise _validation.prediction_not_differentiable(name, loss.name, loss.inputs[0])
    for key in keys:
        if key not in (data or {}):
            raise _validation.missing_target(name, key, list(data or {}))
    _validation.check_number(f"losses[{name!r}][2]", weight)
    return loss, keys, weight
