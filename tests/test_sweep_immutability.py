"""Immutability sweep over every registered loss and backend: inputs are never modified, results are fresh.

For every loss (its own ``sample``, first option case, case shape ``(3, 5)``)
and backend, ``value``, ``value_and_grad``, ``grad`` and ``vjp`` run with the
reductions "none", "mean" and "sum", and with the engine's ``weight`` and
``where`` (reductions "none" and "mean"), on two kinds of input:

- read-only NumPy arrays (``flags.writeable = False`` on every input, every
  layer of a layer input, every label array, the weight, the mask and the
  cotangent), converted by the engine to the backend;
- native arrays of the backend (on NumPy: the read-only arrays themselves).

Afterwards every input, weight, mask and cotangent is bitwise what it was, no
value or gradient shares memory with any of them, and NumPy gradients are
writable. Memory is compared through NumPy views (``np.shares_memory``) on
NumPy, array-api-strict and MLX, and through ``untyped_storage()`` on PyTorch;
JAX arrays are immutable, so sharing a buffer cannot be observed there.

Quick profile: NumPy, PyTorch and array-api-strict; ``MITHRIL_LOSSES_SWEEP=full``:
every installed backend.
"""

from __future__ import annotations

import os
import warnings

import numpy as np
import pytest

import mithril_losses as mlo
from mithril_losses import registry
from mithril_losses.conformance.checks import _leaves, _sample, _with_leaves

from conftest import BACKENDS, installed, native

FULL = os.environ.get("MITHRIL_LOSSES_SWEEP", "quick") == "full"
SWEEP_BACKENDS = BACKENDS if FULL else ("numpy", "torch", "array_api_strict")
CASE_SHAPE = (3, 5)
SEED = 20240612
LOSSES = mlo.available()


def _read_only(a):
    a = np.array(a)
    a.flags.writeable = False
    return a


def _on(backend, a, native_arrays):
    """``a`` as the call gets it: a read-only NumPy array, or a native array of the backend."""
    return native(backend, a) if native_arrays and backend != "numpy" else _read_only(a)


def _storage(x):
    """(start, end) of the memory a PyTorch tensor's storage spans."""
    s = x.untyped_storage()
    return s.data_ptr(), s.data_ptr() + s.nbytes()


def _library(x):
    return type(x).__module__.partition(".")[0]


def _numpy_view(x):
    """A NumPy array on the memory of ``x`` (no copy; for JAX possibly a copy, which is never compared)."""
    if _library(x) == "torch":
        return x.detach().numpy()
    if _library(x) == "array_api_strict":
        return np.from_dlpack(x)
    return np.asarray(x)


def _shares_memory(result, array):
    """Whether a result lies in the memory of an array of the call (a NumPy one the engine converted, too)."""
    if _library(result) == "jax":  # immutable: a shared buffer cannot be observed
        return False
    if _library(result) == _library(array) == "torch":
        (a0, a1), (b0, b1) = _storage(result), _storage(array)
        return a0 < b1 and b0 < a1
    return np.shares_memory(_numpy_view(result), _numpy_view(array))


def _snapshot(x):
    """The dtype, shape and bytes of an array of any library."""
    a = _numpy_view(x)
    return a.dtype, a.shape, a.tobytes()


def _calls(loss, inputs, extra, cotangent):
    """The results of every entry point: ([(what, value)], [(what, gradient)])."""
    diff = loss.differentiable
    value, grads = loss.value_and_grad(**inputs, **extra)
    values = [("value", loss.value(**inputs, **extra)), ("value_and_grad's value", value)]
    gradients = [(f"value_and_grad's gradient of {k}", g) for k, g in _leaves(grads, diff)]
    gradients += [(f"grad's gradient of {k}", g) for k, g in _leaves(loss.grad(**inputs, **extra), diff)]
    gradients += [(f"vjp's gradient of {k}", g) for k, g in _leaves(loss.vjp(cotangent, **inputs, **extra), diff)]
    return values, gradients


def _engine_extras(spec, rng, loss_shape, backend, native_arrays):
    """The engine's weight (unless the loss owns the name) and a where mask, as the call gets them."""
    where = rng.random(loss_shape) < 0.7
    where.flat[0] = True
    extra = {"where": _on(backend, where, native_arrays)}
    if "weight" not in spec.inputs:
        extra["weight"] = _on(backend, rng.uniform(0.5, 2.0, loss_shape), native_arrays)
    return extra


# (backend, native arrays): NumPy's own arrays are the read-only ones
SOURCES = [("numpy", False)] + [(b, n) for b in SWEEP_BACKENDS if b != "numpy" for n in (False, True)]


@pytest.mark.parametrize(("backend", "native_arrays"), SOURCES,
                         ids=[f"{b}-{'native' if n else 'read-only numpy'}" for b, n in SOURCES])
@pytest.mark.parametrize("name", LOSSES)
def test_inputs_untouched_and_results_fresh(name, backend, native_arrays):
    if not installed(backend):
        pytest.skip(f"{backend} is not installed")
    if backend == "jax":
        import jax

        jax.config.update("jax_enable_x64", True)
    spec = registry.spec(name)
    options = spec.option_cases[0]
    rng, raw = _sample(spec, options, CASE_SHAPE, SEED)
    present = [n for n in spec.inputs if n in raw]
    inputs = _with_leaves(raw, present, [_on(backend, a, native_arrays) for _, a in _leaves(raw, present)])
    loss_shape = tuple(np.shape(mlo.get(name, reduction="none", **options)(**raw)))
    arrays = _leaves(inputs, present)
    for reduction in ("none", "mean", "sum"):
        loss = mlo.get(name, reduction=reduction, **options)
        engine = [{}] + ([_engine_extras(spec, rng, loss_shape, backend, native_arrays)] if reduction != "sum" else [])
        for extra in engine:
            out_shape = loss_shape if reduction == "none" else ()
            cotangent = _on(backend, rng.uniform(-1.0, 1.0, out_shape), native_arrays)
            protected = arrays + list(extra.items()) + [("cotangent", cotangent)]
            before = [_snapshot(a) for _, a in protected]
            with warnings.catch_warnings(), np.errstate(all="ignore"):
                warnings.simplefilter("ignore")
                values, gradients = _calls(loss, inputs, {**extra, "backend": backend}, cotangent)
            where = f"reduction={reduction!r}{' with weight/where' if extra else ''}"
            modified = [label for (label, a), snapshot in zip(protected, before) if _snapshot(a) != snapshot]
            assert not modified, f"{where}: {modified} were modified"
            aliases = [(what, label) for what, r in values + gradients for label, a in protected
                       if _shares_memory(r, a)]
            assert not aliases, f"{where}: results share memory with arrays of the call: {aliases}"
            if backend == "numpy":
                for what, g in gradients:
                    assert g.flags.writeable, f"{where}: {what} is a read-only array"
