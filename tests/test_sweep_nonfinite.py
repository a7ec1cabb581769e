"""NaN and +-inf inputs, for every registered loss: nothing crashes, non-finite values propagate, never leak.

For each loss, option case and floating input (each layer of a layer input;
label inputs aside), one entry of a sampled input is set to NaN, +inf or
-inf. Which outputs may change is found two ways, with no table per loss:

- *depends*: the outputs that change when that entry moves by small and
  large steps (NumPy float64; steps outside the input's domain skipped);
- *owns*: by structure, the outputs the entry belongs to: for an elementwise
  loss the entries it broadcasts to, for an input whose first axis is the
  output's first axis (a batch) that sample's outputs, otherwise all of them.

The policy checked:

- the only error is a ValueError of an input with a declared domain
  (``LossSpec.domains``) that names the input and shows the value (as
  PyTorch's ``binary_cross_entropy`` rejects NaN probabilities); nothing
  else raises;
- a NaN reaches every output that depends on the entry; outputs that
  neither depend on it nor own it keep their values (no leak into other
  samples or elements); an entry no output depends on (a non-target class of
  ``nll``, a frame past the input length, an unmasked patch, or a flat part
  such as a satisfied hinge) gives no other finite value, though a NaN may
  pass through a flat part as max(0, NaN) does;
- "sum" and "mean" are finite exactly when every unreduced output is, and
  NaN when one is NaN;
- the gradients (of the sum) of entries whose own outputs are unaffected
  keep their values; with a NaN entry that no output depends on, every
  gradient stays finite; with the non-finite outputs masked out by
  ``where``, "mean" is finite, and so is every gradient of an elementwise
  loss.

``SET_COUPLED`` names the documented exception (see ``koleo``'s notes).
Quick (CI): NumPy float64 and PyTorch float32, one entry per input.
``MITHRIL_LOSSES_SWEEP=full`` runs every installed backend in both dtypes,
conformance's full shapes and three entries per input.
"""

from __future__ import annotations

import functools
import math
import zlib

import numpy as np
import pytest

import mithril_losses as mlo
from mithril_losses import _layers, registry
from mithril_losses._loss import Loss
from mithril_losses.conformance.checks import FULL_SHAPES, QUICK_SHAPES, _leaves, _sample, _with_leaves
from mithril_losses.conformance.tolerances import tolerance

from _hypothesis_profiles import BACKENDS, DTYPES, FULL, on_backend
from conftest import to_numpy

NON_FINITE = {"nan": math.nan, "+inf": math.inf, "-inf": -math.inf}
STEPS = (1e-3, 0.5, 3.0, 30.0)  # relative to max(1, |entry|), both signs: large ones leave flat hinge regions
SHAPES = FULL_SHAPES if FULL else QUICK_SHAPES  # conformance's
ENTRIES = 3 if FULL else 1  # entries per input and option case
# quick: NumPy float64 and, where installed, PyTorch float32 (another library's NaN handling, cheaply)
RUNS = [(b, d) for b in BACKENDS for d in DTYPES] if FULL else \
    [("numpy", "float64")] + [("torch", "float32")] * ("torch" in BACKENDS)
# A NaN embedding has a NaN cosine with every vector of its set, which argmax takes as the largest (as DINOv2's
# torch.max does): every vector of the set gets it as its nearest neighbour, and a NaN loss.
SET_COUPLED = ("koleo",)


def _floating(spec, raw):
    """The inputs that get a non-finite entry: the floating ones given (label inputs aside)."""
    return tuple(n for n in spec.inputs if n not in spec.label_inputs and raw.get(n) is not None
                 and all(np.asarray(a).dtype.kind == "f" for _, a in _layers.items(raw[n])))


def _with_entry(raw, names, leaf, position, value):
    """A copy of the inputs with entry ``position`` of leaf ``leaf`` (of ``_leaves(raw, names)``) set to ``value``."""
    leaves = [np.array(a, dtype=np.float64) for _, a in _leaves(raw, names)]
    leaves[leaf].flat[position] = value
    return _with_leaves(raw, names, leaves)


def _depends(loss, raw, names, leaf, position, base):
    """The outputs that change when the entry moves by each step (a step the validation rejects is skipped)."""
    entry = float(np.asarray(_leaves(raw, names)[leaf][1]).flat[position])
    changed = np.zeros(base.shape, dtype=bool)
    for step in STEPS:
        for moved in (entry + step * max(1.0, abs(entry)), entry - step * max(1.0, abs(entry))):
            try:
                out = loss.value(**_with_entry(raw, names, leaf, position, moved))
            except ValueError:
                continue
            changed |= np.asarray(out) != base
    return changed


def _owns(spec, shape, position, out_shape):
    """The outputs entry ``position`` of an input of ``shape`` belongs to by structure (all: no claim).

    Elementwise losses: the outputs the entry broadcasts to, or the block it indexes where the output has
    further axes (pinball's quantiles); otherwise, where the input's first axis is the output's (a batch):
    that sample's outputs.
    """
    index = np.unravel_index(position, shape)
    owned = np.zeros(out_shape, dtype=bool)
    if spec.elementwise and _broadcasts(shape, out_shape):
        one = np.zeros(shape, dtype=bool)
        one[index] = True
        return np.broadcast_to(one, out_shape).copy()
    if spec.elementwise and tuple(out_shape[:len(shape)]) == tuple(shape):
        owned[index] = True
    elif spec.name not in SET_COUPLED and len(shape) and len(out_shape) and shape[0] == out_shape[0]:
        owned[index[0]] = True
    else:
        owned[...] = True
    return owned


def _broadcasts(shape, out_shape):
    return len(shape) <= len(out_shape) and all(a in (1, b) for a, b in zip(reversed(shape), reversed(out_shape)))


def _independent(spec, shape, out_shape, affected):
    """Entries of an input of ``shape`` that own outputs by structure (not all of them), none ``affected``."""
    keep = np.zeros(shape, dtype=bool)
    for q in range(keep.size):
        owned = _owns(spec, shape, q, out_shape)
        keep.flat[q] = not owned.all() and not (owned & affected).any()
    return keep


class Injection:
    """One entry of one input leaf: where it is, and the outputs that depend on it or own it."""

    def __init__(self, label, name, leaf, position, depends, owned):
        self.label, self.name, self.leaf, self.position = label, name, leaf, position
        self.depends, self.affected = depends, depends | owned

    def __repr__(self):
        return f"{self.label}.flat[{self.position}]"


@functools.cache
def _plan(name, case, shape):
    """(options, sampled inputs, the names of those that get non-finite entries, injections), case by index."""
    spec = registry.spec(name)
    options = spec.option_cases[case]
    seed = zlib.crc32(f"{name} {case} {shape}".encode())
    rng, raw = _sample(spec, options, shape, seed)
    loss = Loss(spec, reduction="none", **options)
    base = np.asarray(loss.value(**raw))
    names = _floating(spec, raw)
    injections = []
    for leaf, (label, a) in enumerate(_leaves(raw, names)):
        name_of_leaf = next(n for n in names if label == n or label.startswith(f"{n}["))
        for position in rng.choice(np.size(a), size=min(ENTRIES, np.size(a)), replace=False):
            position = int(position)
            injections.append(Injection(label, name_of_leaf, leaf, position,
                                        _depends(loss, raw, names, leaf, position, base),
                                        _owns(spec, np.shape(a), position, base.shape)))
    return options, raw, names, injections


CASES = [(name, case, shape) for name in mlo.available() for case in range(len(registry.spec(name).option_cases))
         for shape in SHAPES]


def _rejected(spec, options, injection, bad, error):
    """A ValueError is the documented rejection: the input has a declared domain, the message names it and
    shows the value."""
    domain = spec.domain(injection.name, Loss(spec, **options).options, "real floating")
    message = str(error)
    return domain is not None and f"`{injection.name}`" in message and repr(bad) in message


def _close(actual, expected, spec, dtype, what):
    rtol, atol = tolerance(spec, dtype)
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol, err_msg=what)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # NumPy's "invalid value": NaN and inf are the point here
@pytest.mark.parametrize("kind", NON_FINITE)
@pytest.mark.parametrize("name, case, shape", CASES,
                         ids=[f"{n}-{c}-{'x'.join(map(str, s))}" for n, c, s in CASES])
def test_non_finite_inputs(name, case, shape, kind):
    spec = registry.spec(name)
    bad = NON_FINITE[kind]
    options, raw, names, injections = _plan(name, case, shape)
    if not injections:
        pytest.skip(f"{name} with {options} has no floating input that is not a label")
    diff = spec.differentiable
    for backend, dtype in RUNS:
        x = on_backend(raw, backend, dtype)
        losses = {r: Loss(spec, reduction=r, **options) for r in ("none", "sum", "mean")}
        base_out, base_grads = losses["none"].value_and_grad(**x)
        base_out = to_numpy(base_out)
        base_grads = [to_numpy(g) for _, g in _leaves(base_grads, diff)]
        for injection in injections:
            context = f"{name} {options} on {backend} {dtype}, {kind} at {injection}"
            y = on_backend(_with_entry(raw, names, injection.leaf, injection.position, bad), backend, dtype)
            try:
                out, grads = losses["none"].value_and_grad(**y)
            except ValueError as error:
                assert _rejected(spec, options, injection, bad, error), f"{context}: {error}"
                continue
            out = to_numpy(out)
            grads = [to_numpy(g) for _, g in _leaves(grads, diff)]
            _check_values(spec, dtype, injection, kind, out, base_out, context)
            _check_reductions(losses, y, out, kind, context)
            _check_gradients(spec, dtype, injection, kind, out, grads, base_grads, x, context)
            _check_masked(spec, options, y, out, context)


def _check_values(spec, dtype, injection, kind, out, base, context):
    apart = ~injection.affected
    leaks = np.argwhere(~np.isfinite(out) & apart).tolist()
    assert not leaks, f"{context}: the non-finite value leaks to outputs {leaks}"
    _close(out[apart], base[apart], spec, dtype, f"{context}: outputs that do not depend on the entry changed")
    if not injection.depends.any():
        same = np.isclose(out, base, rtol=tolerance(spec, dtype)[0], atol=tolerance(spec, dtype)[1])
        assert np.all(same | (np.isnan(out) & injection.affected)), \
            f"{context}: no output depends on the entry, yet the loss changed: {out} (was {base})"
    elif kind == "nan":
        assert np.all(np.isnan(out[injection.depends])), \
            f"{context}: NaN does not reach every output that depends on it: {out[injection.depends]}"


def _check_reductions(losses, y, out, kind, context):
    for reduction in ("sum", "mean"):
        value = float(to_numpy(losses[reduction].value(**y)))
        assert math.isfinite(value) == bool(np.all(np.isfinite(out))), f"{context}: {reduction} {value} of {out}"
        if kind == "nan" and np.isnan(out).any():
            assert math.isnan(value), f"{context}: {reduction} {value} of {out}"


def _check_gradients(spec, dtype, injection, kind, out, grads, base_grads, x, context):
    for (label, a), g, g0 in zip(_leaves(x, spec.differentiable), grads, base_grads):
        if kind == "nan" and np.all(np.isfinite(out)):  # the entry is unused: its own gradient is 0, not NaN
            assert np.all(np.isfinite(g)), f"{context}: finite loss {out}, non-finite gradient of {label} {g}"
        keep = _independent(spec, tuple(a.shape), out.shape, injection.affected)
        _close(g[keep], g0[keep], spec, dtype, f"{context}: the gradient of {label} changed at unaffected entries")


def _check_masked(spec, options, y, out, context):
    """With the non-finite outputs masked out by ``where`` (a NumPy mask, converted by the engine)."""
    finite = np.isfinite(out)
    if finite.all() or not finite.any():
        return
    masked, grads = Loss(spec, reduction="mean", **options).value_and_grad(**y, where=finite)
    assert math.isfinite(float(to_numpy(masked))), f"{context}: mean with the non-finite outputs masked out: {masked}"
    if spec.elementwise:
        for label, g in _leaves(grads, spec.differentiable):
            assert np.all(np.isfinite(to_numpy(g))), \
                f"{context}: a masked-out non-finite entry leaks into the gradient of {label}: {to_numpy(g)}"


@pytest.mark.parametrize("name", SET_COUPLED)
def test_exceptions_are_documented(name):
    assert "NaN" in registry.spec(name).notes, f"{name}'s notes must say how a NaN spreads over its set"
