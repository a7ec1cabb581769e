"""Property tests over every registered loss (hypothesis), so that a loss added later is covered unchanged.

For each name of ``mlo.available()`` hypothesis draws a case shape, one of
the spec's ``option_cases``, a seed for ``spec.sample`` (valid inputs away
from kinks), a dtype and a backend, and checks:

- values and gradients are finite; gradients have their input's shape,
  dtype and array type (layer inputs: per layer), the value its inputs' type;
- the gradient equals float64 finite differences (NumPy, 4th-order central
  differences of the value function along a random direction, for a random
  cotangent of the unreduced loss);
- ``sum`` is ``mean`` times the mean's divisor, ``none`` summed is ``sum``
  (and ``batchmean`` is ``sum`` over the batch size, where offered);
- the vjp is linear in the cotangent: ``vjp(c * ct) = c * vjp(ct)``.

Profiles (``_hypothesis_profiles``): ``MITHRIL_LOSSES_SWEEP=quick`` (the
default: a few examples per test and loss, on NumPy, PyTorch, MLX and
array-api-strict) or ``full`` (many more examples, JAX too). Finite differences run
on NumPy float64 only; specs with a ``stopped_gradient`` skip them, with the
reason.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import mithril_losses as mlo
from mithril_losses import backends, registry
from mithril_losses._loss import Loss
from mithril_losses.conformance.checks import FULL_SHAPES, _leaves, _sample, _with_leaves
from mithril_losses.conformance.tolerances import FINITE_DIFFERENCES, tolerance

from _hypothesis_profiles import BACKENDS, DTYPES, SWEEP, on_backend
from conftest import array_type, dtype_name, to_numpy

NAMES = mlo.available()
FD_STEP = 1e-3


def shapes():
    """Case shapes every spec's ``sample`` reads: (B, n) or (B, n, k) with a batch B >= 1 and trailing axes >= 2."""
    trailing = st.integers(2, 5)
    return st.one_of(st.tuples(st.integers(1, 4), trailing), st.tuples(st.integers(1, 3), trailing, trailing))


class Case:
    """One drawn case: ``raw`` are the sampled NumPy float64 inputs, ``x`` the same on the backend in the dtype."""

    def __init__(self, options, shape, seed, backend, dtype, raw):
        self.options, self.shape, self.seed, self.backend, self.dtype = options, shape, seed, backend, dtype
        self.raw, self.x = raw, on_backend(raw, backend, dtype)

    def on_backend(self, a):
        """A NumPy array (a cotangent) on this case's backend, in its dtype."""
        return on_backend({"a": a}, self.backend, self.dtype)["a"]

    def __repr__(self):
        return (f"Case(options={self.options}, shape={self.shape}, seed={self.seed}, backend={self.backend!r}, "
                f"dtype={self.dtype!r})")


@st.composite
def cases(draw, spec, *, backends_=BACKENDS, dtypes=DTYPES):
    backend, dtype = draw(st.sampled_from(backends_)), draw(st.sampled_from(dtypes))
    options = draw(st.sampled_from(spec.option_cases))
    # JAX compiles every operation once per new shape (about a second per loss): its cases take conformance's
    shape = draw(st.sampled_from(FULL_SHAPES) if backend == "jax" else shapes())
    seed = draw(st.integers(0, 2**32 - 1))
    return Case(options, shape, seed, backend, dtype, _sample(spec, options, shape, seed)[1])


def _random(seed, shape):
    return np.random.default_rng(seed).uniform(-1.0, 1.0, tuple(shape))


def _close(actual, expected, rtol, atol, what, *, scale=None):
    """Norm-wise: max |a - e| <= atol + rtol * scale, the scale max |e| unless given (a sum's rounding is
    relative to the sum of its terms' magnitudes, not to the sum)."""
    a, e = np.asarray(actual, dtype=np.float64), np.asarray(expected, dtype=np.float64)
    assert a.shape == e.shape, f"{what}: shape {a.shape}, expected {e.shape}"
    scale = (float(np.max(np.abs(e))) if e.size else 0.0) if scale is None else scale
    err = float(np.max(np.abs(a - e))) if e.size else 0.0
    assert err <= atol + rtol * scale, f"{what}: max abs error {err:.3g} (scale {scale:.3g})"


def _names(reason_to_skip=lambda spec: ""):
    """Every registered name, skipped (with the reason) where ``reason_to_skip`` gives one."""
    params = []
    for name in NAMES:
        reason = reason_to_skip(registry.spec(name))
        params.append(pytest.param(name, marks=pytest.mark.skip(reason=reason) if reason else ()))
    return params


# --------------------------------------------------------------------------- finite, typed


@pytest.mark.parametrize("name", NAMES)
@SWEEP
@given(data=st.data())
def test_values_and_gradients_are_finite_and_typed(name, data):
    spec = registry.spec(name)
    case = data.draw(cases(spec))
    loss = Loss(spec, reduction="none", **case.options)
    value = loss.value(**case.x)
    # NumPy reduces to a 0-d value as a NumPy scalar (as np.sum does)
    kinds = (array_type(case.backend), np.generic) if case.backend == "numpy" else array_type(case.backend)
    assert isinstance(value, kinds) and dtype_name(value) == case.dtype, f"value: {type(value).__name__} {value.dtype}"
    assert np.all(np.isfinite(to_numpy(value))), f"non-finite loss {to_numpy(value)}"
    grads = loss.vjp(case.on_backend(_random(case.seed, value.shape)), **case.x)
    assert sorted(grads) == sorted(spec.differentiable)
    for (label, g), (_, a) in zip(_leaves(grads, spec.differentiable), _leaves(case.x, spec.differentiable)):
        assert isinstance(g, array_type(case.backend)), f"gradient of {label} is a {type(g).__name__}"
        assert tuple(g.shape) == tuple(a.shape) and dtype_name(g) == dtype_name(a), \
            f"gradient of {label}: {tuple(g.shape)} {g.dtype}, input {tuple(a.shape)} {a.dtype}"
        assert np.all(np.isfinite(to_numpy(g))), f"non-finite gradient of {label}: {to_numpy(g)}"


# --------------------------------------------------------------------------- finite differences


def _stop_gradient(spec):
    if spec.stopped_gradient:
        return ("the gradient holds a term constant by design (a stop-gradient), so finite differences of the "
                f"value cannot check it: {spec.stopped_gradient}")
    return ""


@pytest.mark.parametrize("name", _names(_stop_gradient))
@SWEEP
@given(data=st.data())
def test_gradient_matches_finite_differences(name, data):
    spec = registry.spec(name)
    case = data.draw(cases(spec, backends_=("numpy",), dtypes=("float64",)))
    loss = Loss(spec, reduction="none", **case.options)
    diff, x = spec.differentiable, case.raw
    ct = _random(case.seed, np.shape(loss.value(**x)))
    grads = _leaves(loss.vjp(ct, **x), diff)
    leaves = _leaves(x, diff)
    for i, (label, a) in enumerate(leaves):
        direction = _random(case.seed + 1 + i, np.shape(a))

        def phi(t):
            moved = [b + t * direction if j == i else b for j, (_, b) in enumerate(leaves)]
            return float(np.sum(ct * loss.value(**_with_leaves(x, diff, moved))))

        h = FD_STEP
        fd = (-phi(2 * h) + 8 * phi(h) - 8 * phi(-h) + phi(-2 * h)) / (12 * h)
        ours = float(np.sum(grads[i][1] * direction))
        rtol, atol = FINITE_DIFFERENCES
        assert abs(ours - fd) <= atol + rtol * abs(fd), f"d/d{label} along a direction: {ours!r}, differences {fd!r}"


# --------------------------------------------------------------------------- reductions


def _spec_function(fn, spec, case):
    """A spec's own ``mean_weights``/``mean_scale`` on the case's NumPy float64 inputs (None: it has none here)."""
    if fn is None:
        return None
    out = fn(backends.get_adapter("numpy").xp, **case.raw, **Loss(spec, **case.options).options)
    return None if out is None else np.asarray(out, dtype=np.float64)


def _mean_parts(spec, case, unreduced):
    """(what "mean" sums, what it divides by): the loss over the spec's ``mean_scale``, and the sum of its
    ``mean_weights`` or the element count (a zero divisor is 1: a mean over nothing is 0)."""
    scale, weights = _spec_function(spec.mean_scale, spec, case), _spec_function(spec.mean_weights, spec, case)
    summed = float(np.sum(unreduced if scale is None else unreduced / scale))
    divisor = unreduced.size if weights is None else float(np.sum(np.broadcast_to(weights, unreduced.shape)))
    return summed, divisor if divisor != 0 else 1.0


@pytest.mark.parametrize("name", NAMES)
@SWEEP
@given(data=st.data())
def test_reductions_agree(name, data):
    spec = registry.spec(name)
    case = data.draw(cases(spec))
    rtol, atol = tolerance(spec, case.dtype)

    def reduced(reduction):
        return to_numpy(Loss(spec, reduction=reduction, **case.options).value(**case.x))

    unreduced, total, mean = reduced("none"), reduced("sum"), reduced("mean")
    assert total.shape == () and mean.shape == ()
    magnitude = float(np.sum(np.abs(unreduced)))
    _close(total, np.sum(unreduced), rtol, atol, "sum vs none summed", scale=magnitude)
    summed, divisor = _mean_parts(spec, case, unreduced)
    _close(mean * divisor, summed, rtol, atol * divisor, f"mean x {divisor} vs the sum it divides", scale=magnitude)
    if "batchmean" in spec.reductions:
        _close(reduced("batchmean") * unreduced.shape[0], np.sum(unreduced), rtol, atol, "batchmean x batch vs sum",
               scale=magnitude)


# --------------------------------------------------------------------------- linearity in the cotangent


# 0 and +-2^k: scaling by a power of two is exact, so rounding (of terms that cancel) scales exactly too
SCALES = st.one_of(st.just(0.0), st.builds(lambda sign, k: sign * 2.0**k, st.sampled_from((1.0, -1.0)),
                                           st.integers(-6, 6)))


@pytest.mark.parametrize("name", NAMES)
@SWEEP
@given(data=st.data(), c=SCALES)
def test_scaling_the_cotangent_scales_the_gradient(name, data, c):
    spec = registry.spec(name)
    case = data.draw(cases(spec))
    rtol, atol = tolerance(spec, case.dtype)
    loss = Loss(spec, reduction="none", **case.options)
    ct = _random(case.seed, loss.value(**case.x).shape)
    base = loss.vjp(case.on_backend(ct), **case.x)
    scaled = loss.vjp(case.on_backend(c * ct), **case.x)
    for (label, g), (_, g_scaled) in zip(_leaves(base, spec.differentiable), _leaves(scaled, spec.differentiable)):
        _close(to_numpy(g_scaled), c * to_numpy(g), rtol, atol, f"gradient of {label} for {c} x cotangent")
