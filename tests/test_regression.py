"""Regression and reconstruction losses against independent references.

Every expected number here comes from outside the code under test: PyTorch
(values and autograd), optax, plain-Python/NumPy formulas written in this file,
hand-computed cases, and float64 finite differences of the NumPy references.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import mithril_losses as mlo

REGRESSION = ("mse", "l1", "huber", "smooth_l1", "charbonnier", "log_cosh", "mape", "smape",
              "msle", "psnr", "pinball", "mase", "affine_invariant")
LN2 = math.log(2.0)


def close(actual, expected, rtol=1e-12, atol=1e-12):
    np.testing.assert_allclose(np.asarray(actual), np.asarray(expected), rtol=rtol, atol=atol)


def test_family_is_complete():
    assert sorted(mlo.available(family="regression")) == sorted(REGRESSION)


# --------------------------------------------------------------------------
# independent NumPy references (unreduced), written from the formulas


def ref_mse(x, y):
    return (x - y) ** 2


def ref_l1(x, y):
    return np.abs(x - y)


def ref_huber(x, y, delta=1.0):
    r = x - y
    a = np.abs(r)
    return np.where(a <= delta, 0.5 * r * r, delta * (a - 0.5 * delta))


def ref_smooth_l1(x, y, beta=1.0):
    r = x - y
    a = np.abs(r)
    if beta == 0:
        return a
    return np.where(a < beta, 0.5 * r * r / beta, a - 0.5 * beta)


def ref_charbonnier(x, y, epsilon=1e-3, alpha=1.0):
    return np.sqrt((x - y) ** 2 + epsilon**2) ** alpha


def ref_log_cosh(x, y):
    return np.log(np.cosh(x - y))


def ref_mape(x, y, epsilon=1e-7):
    return 100.0 * np.abs(x - y) / np.maximum(np.abs(y), epsilon)


def ref_smape(x, y, epsilon=1e-7):
    return 200.0 * np.abs(x - y) / (np.abs(x) + np.abs(y) + epsilon)


def ref_msle(x, y):
    return (np.log1p(np.clip(x, 1e-7, None)) - np.log1p(np.clip(y, 1e-7, None))) ** 2


def ref_psnr(x, y, max_value=1.0, axis=None):
    axes = tuple(range(1, x.ndim)) if axis is None else axis
    if x.ndim == 1 and axis is None:
        axes = (0,)
    mse = np.mean((x - y) ** 2, axis=axes)
    return -10.0 * np.log10(max_value**2 / mse)  # minus the textbook PSNR


def ref_pinball(x, y, quantile=0.5):
    if isinstance(quantile, tuple):
        u = y[..., None] - x
        q = np.asarray(quantile)
    else:
        u, q = y - x, quantile
    return np.where(u >= 0, q * u, (q - 1.0) * u)


def ref_mase(x, y, z, seasonality=1, epsilon=1e-8):
    m = seasonality
    scale = np.mean(np.abs(z[..., m:] - z[..., :-m]), axis=-1, keepdims=True)
    return np.abs(y - x) / np.maximum(scale, epsilon)


def ref_affine_invariant(x, y, epsilon=1e-6):
    def n(d):
        d = d.reshape(d.shape[0], -1)
        med = np.median(d, axis=-1, keepdims=True)
        return (d - med) / (np.mean(np.abs(d - med), axis=-1, keepdims=True) + epsilon)

    return np.mean(np.abs(n(x) - n(y)), axis=-1)


REFS = {"mse": ref_mse, "l1": ref_l1, "huber": ref_huber, "smooth_l1": ref_smooth_l1,
        "charbonnier": ref_charbonnier, "log_cosh": ref_log_cosh, "mape": ref_mape, "smape": ref_smape,
        "msle": ref_msle, "psnr": ref_psnr, "pinball": ref_pinball, "mase": ref_mase,
        "affine_invariant": ref_affine_invariant}


# --------------------------------------------------------------------------
# input generators (float64, away from kinks) and finite differences


def _away(rng, low, high, shape, kinks=(0.0,), gap=0.05):
    v = rng.uniform(low, high, shape)
    for _ in range(200):
        near = np.zeros(v.shape, dtype=bool)
        for k in kinks:
            near |= np.abs(v - k) < gap
        if not near.any():
            return v
        v = np.where(near, rng.uniform(low, high, v.shape), v)
    raise AssertionError("could not draw away from kinks")


def elementwise(shape=(2, 3, 4), kinks=(0.0,), target=(-2.0, 2.0), residual=(-3.0, 3.0), target_kinks=()):
    def make(rng):
        t = _away(rng, *target, shape, target_kinks)
        r = _away(rng, *residual, shape, kinks)
        return {"input": np.asarray(t + r), "target": np.asarray(t)}
    return make


def pinball_inputs(shape, nq=None):
    def make(rng):
        t = rng.uniform(-2.0, 2.0, shape)
        u = _away(rng, -3.0, 3.0, shape + ((nq,) if nq else ()))
        return {"input": (t[..., None] if nq else t) - u, "target": t}
    return make


def mase_inputs(shape, history):
    def make(rng):
        base = elementwise(shape)(rng)
        return {**base, "insample": rng.normal(size=shape[:-1] + (history,))}
    return make


def affine_inputs(shape):
    def make(rng):
        return {"input": rng.normal(size=shape) * 2.0 + 1.0, "target": rng.normal(size=shape)}
    return make


def positive_pairs(shape):
    def make(rng):
        t = rng.uniform(0.3, 3.0, shape)
        r = _away(rng, -0.25, 3.0, shape)
        return {"input": np.asarray(t + r), "target": np.asarray(t)}
    return make


# (id, loss name, options, input maker)
CASES = [
    ("mse-3d", "mse", {}, elementwise(kinks=())),
    ("mse-0d", "mse", {}, elementwise(shape=(), kinks=())),
    ("l1", "l1", {}, elementwise()),
    ("huber", "huber", {}, elementwise(kinks=(-1.0, 1.0))),
    ("huber-d0.3", "huber", {"delta": 0.3}, elementwise(kinks=(-0.3, 0.3))),
    ("smooth_l1", "smooth_l1", {}, elementwise(kinks=(-1.0, 0.0, 1.0))),
    ("smooth_l1-b0.4", "smooth_l1", {"beta": 0.4}, elementwise(kinks=(-0.4, 0.0, 0.4))),
    ("smooth_l1-b0", "smooth_l1", {"beta": 0.0}, elementwise()),
    # default eps = 1e-3: smooth, but curvature 1/eps at r = 0 is too sharp for the stencil
    ("charbonnier", "charbonnier", {}, elementwise()),
    ("charbonnier-a0.5", "charbonnier", {"epsilon": 0.1, "alpha": 0.5}, elementwise(shape=(9,), kinks=())),
    ("log_cosh", "log_cosh", {}, elementwise(kinks=())),
    ("mape", "mape", {}, elementwise(target=(0.5, 2.0))),
    ("mape-negtarget", "mape", {"epsilon": 1e-3}, elementwise(shape=(10,), target=(-2.0, 2.0), target_kinks=(0.0,))),
    ("smape", "smape", {}, positive_pairs((3, 4))),
    ("smape-signs", "smape", {"epsilon": 0.01}, elementwise(shape=(12,), target=(-2.0, 2.0), target_kinks=(0.0,),
                                                            kinks=(0.0,))),
    ("msle", "msle", {}, positive_pairs((2, 5))),
    ("psnr", "psnr", {}, elementwise(shape=(3, 4, 2), kinks=(), target=(0.0, 1.0), residual=(-0.3, 0.3))),
    ("psnr-1d", "psnr", {"max_value": 255.0}, elementwise(shape=(6,), kinks=())),
    ("psnr-axis", "psnr", {"axis": (0, 2), "max_value": 2.0}, elementwise(shape=(2, 3, 4), kinks=())),
    ("pinball-q0.1", "pinball", {"quantile": 0.1}, pinball_inputs((3, 4))),
    ("pinball-q0.9", "pinball", {"quantile": 0.9}, pinball_inputs((3, 4))),
    ("pinball-multi", "pinball", {"quantile": (0.1, 0.5, 0.9)}, pinball_inputs((2, 3), nq=3)),
    ("mase-m1", "mase", {}, mase_inputs((3, 4), 10)),
    ("mase-m3", "mase", {"seasonality": 3}, mase_inputs((2, 2, 5), 12)),
    ("mase-1d", "mase", {"seasonality": 2}, mase_inputs((5,), 7)),
    ("affine-odd", "affine_invariant", {}, affine_inputs((3, 7))),
    ("affine-even", "affine_invariant", {}, affine_inputs((2, 3, 4))),
]
CASE_IDS = [c[0] for c in CASES]


def numeric_grad(f, arrays, name, h=1e-4):
    """4th-order central differences of the scalar f(arrays) w.r.t. arrays[name], element by element."""
    x = arrays[name]
    g = np.zeros_like(x)
    for idx in np.ndindex(x.shape):
        vals = []
        for step in (2.0, 1.0, -1.0, -2.0):
            moved = dict(arrays)
            moved[name] = x.copy()
            moved[name][idx] += step * h
            vals.append(f(moved))
        g[idx] = (-vals[0] + 8.0 * vals[1] - 8.0 * vals[2] + vals[3]) / (12.0 * h)
    return g


def _make(rng_seed, maker):
    return maker(np.random.default_rng(rng_seed))


def _ref_value(name, options, arrays):
    spec = mlo.spec(name)
    return REFS[name](*(arrays[i] for i in spec.inputs), **options)


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_value_matches_numpy_reference(case):
    _, name, options, maker = case
    arrays = _make(1, maker)
    loss = mlo.get(name, reduction="none", **options)
    expected = _ref_value(name, options, arrays)
    out = loss(**arrays)
    assert out.shape == expected.shape
    close(out, expected, rtol=1e-12, atol=1e-13)
    close(mlo.get(name, reduction="sum", **options)(**arrays), expected.sum(), rtol=1e-12)
    close(mlo.get(name, **options)(**arrays), expected.mean(), rtol=1e-12)


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_vjp_matches_finite_differences(case):
    _, name, options, maker = case
    arrays = _make(2, maker)
    loss = mlo.get(name, reduction="none", **options)
    ct = np.random.default_rng(3).normal(size=np.shape(_ref_value(name, options, arrays)))

    def f(a):
        return float(np.sum(ct * _ref_value(name, options, a)))

    grads = loss.vjp(ct, **arrays)
    assert set(grads) == set(loss.differentiable)
    for key in loss.differentiable:
        assert grads[key].shape == arrays[key].shape and grads[key].dtype == np.float64
        close(grads[key], numeric_grad(f, arrays, key), rtol=1e-7, atol=1e-7)


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_mean_grad_matches_finite_differences(case):
    _, name, options, maker = case
    arrays = _make(4, maker)
    value, grads = mlo.get(name, reduction="mean", **options).value_and_grad(**arrays)
    close(value, np.mean(_ref_value(name, options, arrays)))
    for key, g in grads.items():
        num = numeric_grad(lambda a: float(np.mean(_ref_value(name, options, a))), arrays, key)
        close(g, num, rtol=1e-7, atol=1e-8)


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_float32_close_to_float64_reference(case):
    _, name, options, maker = case
    arrays = _make(12, maker)
    single = {k: v.astype(np.float32) for k, v in arrays.items()}
    exact = {k: v.astype(np.float64) for k, v in single.items()}  # same points, evaluated in float64
    loss = mlo.get(name, reduction="none", **options)
    out = loss(**single)
    assert out.dtype == np.float32
    close(out, _ref_value(name, options, exact), rtol=2e-5, atol=1e-5)
    ct = np.random.default_rng(13).normal(size=np.shape(out))
    grads = loss.vjp(ct.astype(np.float32), **single)
    for key in loss.differentiable:
        assert grads[key].dtype == np.float32
        num = numeric_grad(lambda a: float(np.sum(ct * _ref_value(name, options, a))), exact, key)
        close(grads[key], num, rtol=2e-5, atol=2e-5 * max(1.0, float(np.max(np.abs(num)))))


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_array_api_strict(case):
    """The loss code stays inside the Array API standard, with the same numbers."""
    xps = pytest.importorskip("array_api_strict")
    _, name, options, maker = case
    arrays = _make(14, maker)
    strict = {k: xps.asarray(v) for k, v in arrays.items()}
    loss = mlo.get(name, reduction="none", **options)
    out = loss(**strict)
    assert type(out).__module__.startswith("array_api_strict")
    close(np.asarray(out), _ref_value(name, options, arrays))
    ct = np.random.default_rng(15).normal(size=tuple(out.shape))
    grads = loss.vjp(xps.asarray(ct), **strict)
    for key in loss.differentiable:
        num = numeric_grad(lambda a: float(np.sum(ct * _ref_value(name, options, a))), arrays, key)
        close(np.asarray(grads[key]), num, rtol=1e-7, atol=1e-7)
    value, _ = mlo.get(name, **options).value_and_grad(**strict)
    close(float(value), np.mean(_ref_value(name, options, arrays)))


def test_differentiable_inputs():
    expected = {"mape": ("input",), "pinball": ("input",), "mase": ("input",)}
    for name in REGRESSION:
        assert mlo.get(name).differentiable == expected.get(name, ("input", "target")), name


# --------------------------------------------------------------------------
# PyTorch parity (float64): values, weights, gradients for input and target

try:
    import torch
    F = torch.nn.functional
except ImportError:  # the rest of the file runs without torch
    torch = F = None
needs_torch = pytest.mark.skipif(torch is None, reason="torch is not installed")

TORCH_CASES = [
    ("mse", {}, "mse_loss", True),
    ("l1", {}, "l1_loss", True),
    ("huber", {}, "huber_loss", True),
    ("huber", {"delta": 0.5}, "huber_loss", True),
    ("huber", {"delta": 2.5}, "huber_loss", True),
    ("smooth_l1", {}, "smooth_l1_loss", False),
    ("smooth_l1", {"beta": 0.5}, "smooth_l1_loss", False),
    ("smooth_l1", {"beta": 0.0}, "smooth_l1_loss", False),
]
TORCH_IDS = [f"{n}-{'-'.join(f'{k}{v}' for k, v in o.items()) or 'default'}" for n, o, _, _ in TORCH_CASES]


def _torch_check(name, options, fn, x, y, reduction, weight=None, ct=None):
    loss = mlo.get(name, reduction=reduction, **options)
    tx = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    ty = torch.tensor(y, dtype=torch.float64, requires_grad=True)
    kw = {} if weight is None else {"weight": torch.tensor(weight, dtype=torch.float64)}
    expected = getattr(F, fn)(tx, ty, reduction=reduction, **options, **kw)
    if ct is None:
        ct = np.ones(expected.shape)
    gx, gy = torch.autograd.grad(expected, (tx, ty), grad_outputs=torch.tensor(ct, dtype=torch.float64))
    value = loss(x, y, weight=weight)
    grads = loss.vjp(ct, x, y, weight=weight) if reduction == "none" else loss.grad(x, y, weight=weight)
    assert np.shape(value) == tuple(expected.shape)
    close(value, expected.detach().numpy(), rtol=1e-13, atol=1e-14)
    close(grads["input"], gx.numpy(), rtol=1e-13, atol=1e-14)
    close(grads["target"], gy.numpy(), rtol=1e-13, atol=1e-14)


@needs_torch
@pytest.mark.parametrize("shape", [(), (7,), (2, 3, 4)], ids=["0d", "1d", "3d"])
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("case", TORCH_CASES, ids=TORCH_IDS)
def test_torch_parity(case, reduction, shape):
    name, options, fn, has_weight = case
    rng = np.random.default_rng(10)
    y = rng.normal(size=shape)
    x = y + rng.uniform(-3.0, 3.0, shape)
    ct = rng.normal(size=shape) if reduction == "none" else None
    _torch_check(name, options, fn, x, y, reduction, ct=ct)
    if has_weight:
        w = rng.uniform(0.1, 2.0, shape)
        _torch_check(name, options, fn, x, y, reduction, weight=w, ct=ct)


@needs_torch
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("case", TORCH_CASES, ids=TORCH_IDS)
def test_torch_parity_at_kinks(case, reduction):
    # exact (dyadic) residuals 0, +-0.5, +-1, +-2.5: the kinks of every case
    name, options, fn, _ = case
    y = np.array([0.25, -1.5, 2.0, 0.75, -0.5, 1.0, -2.0, 0.0, 3.0])
    r = np.array([0.0, 0.5, -0.5, 1.0, -1.0, 2.5, -2.5, 0.0, 4.0])
    _torch_check(name, options, fn, y + r, y, reduction,
                 ct=np.linspace(-1.0, 2.0, 9) if reduction == "none" else None)


@needs_torch
def test_torch_weighted_mean_divides_by_weight_sum():
    x, y = np.array([1.0, 2.0, 4.0]), np.array([0.0, 0.0, 0.0])
    w = np.array([1.0, 0.5, 0.0])
    # (1 * 1 + 0.5 * 4 + 0 * 16) / 1.5
    close(mlo.get("mse")(x, y, weight=w), 3.0 / 1.5)
    close(mlo.get("mse")(x, y, weight=w), F.mse_loss(torch.tensor(x), torch.tensor(y), weight=torch.tensor(w)).item())
    close(mlo.get("l1")(x, y, weight=w), (1.0 + 0.5 * 2.0) / 1.5)
    g = mlo.get("mse").grad(x, y, weight=w)["input"]
    close(g, [2.0 * 1.0 * 1.0 / 1.5, 2.0 * 2.0 * 0.5 / 1.5, 0.0])


@needs_torch
def test_torch_weighted_huber_mean_divides_by_count():
    # PyTorch's huber_loss(weight=...) takes .mean() of the weighted losses, unlike mse_loss/l1_loss
    x, y = np.array([1.0, 2.0, 4.0]), np.array([0.0, 0.0, 0.0])
    w = np.array([1.0, 0.5, 0.0])
    close(mlo.get("huber")(x, y, weight=w), (1.0 * 0.5 + 0.5 * 1.5 + 0.0 * 3.5) / 3.0)
    close(mlo.get("huber").grad(x, y, weight=w)["input"], [1.0 / 3.0, 0.5 / 3.0, 0.0])
    close(mlo.get("huber")(x, y, weight=w),
          F.huber_loss(torch.tensor(x), torch.tensor(y), weight=torch.tensor(w)).item())


@needs_torch
def test_smooth_l1_beta0_is_l1_exactly():
    rng = np.random.default_rng(5)
    y = rng.normal(size=(4, 5))
    x = y + rng.normal(size=(4, 5))
    x[0, :2] = y[0, :2]  # ties too
    for reduction in ("none", "mean", "sum"):
        a = mlo.get("smooth_l1", beta=0.0, reduction=reduction)
        b = mlo.get("l1", reduction=reduction)
        np.testing.assert_array_equal(a(x, y), b(x, y))
        ga, gb = a.grad(x, y), b.grad(x, y)
        for k in ("input", "target"):
            np.testing.assert_array_equal(ga[k], gb[k])
        np.testing.assert_array_equal(a(x, y), F.l1_loss(torch.tensor(x), torch.tensor(y), reduction=reduction).numpy())


def test_option_defaults():
    assert mlo.get("huber").options["delta"] == 1.0
    assert mlo.get("smooth_l1").options["beta"] == 1.0
    assert mlo.get("mse").reduction == "mean"


@needs_torch
def test_functional_names_match_torch():
    rng = np.random.default_rng(6)
    x, y = rng.normal(size=(3, 4)), rng.normal(size=(3, 4))
    tx = torch.tensor(x, requires_grad=True)
    ty = torch.tensor(y)

    ref = F.mse_loss(tx, ty)
    (gx,) = torch.autograd.grad(ref, tx)
    close(mlo.mse_loss(x, y), ref.item())
    g = mlo.mse_loss_gradient(x, y)
    assert isinstance(g, np.ndarray)
    close(g, gx.numpy())

    ref = F.huber_loss(tx, ty, delta=0.5)
    (gx,) = torch.autograd.grad(ref, tx)
    close(mlo.huber_loss(x, y, delta=0.5), ref.item())
    close(mlo.huber_loss_gradient(x, y, delta=0.5), gx.numpy())

    ref = F.l1_loss(tx, ty, reduction="sum")
    close(mlo.l1_loss(x, y, reduction="sum"), ref.item())
    ref = F.smooth_l1_loss(tx, ty, beta=0.3, reduction="none")
    close(mlo.smooth_l1_loss(x, y, beta=0.3, reduction="none"), ref.detach().numpy())


# --------------------------------------------------------------------------
# optax parity


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_optax_huber_and_log_cosh(dtype):
    jax = pytest.importorskip("jax")
    optax = pytest.importorskip("optax")
    rng = np.random.default_rng(7)
    y = rng.normal(size=(4, 6)).astype(dtype)
    x = (y + rng.uniform(-4.0, 4.0, (4, 6))).astype(dtype)
    ct = rng.normal(size=(4, 6)).astype(dtype)
    tol = dict(rtol=1e-12, atol=1e-12) if dtype == "float64" else dict(rtol=2e-6, atol=2e-6)
    with jax.enable_x64(dtype == "float64"):
        cases = [("huber", {"delta": d}, lambda p, t, d=d: optax.losses.huber_loss(p, t, delta=d))
                 for d in (1.0, 0.5, 2.0)]
        cases.append(("log_cosh", {}, optax.losses.log_cosh))
        for name, options, fn in cases:
            jx, jy = jax.numpy.asarray(x), jax.numpy.asarray(y)
            assert jx.dtype == dtype
            expected = np.asarray(fn(jx, jy))
            loss = mlo.get(name, reduction="none", **options)
            out = loss(x, y)
            assert out.dtype == dtype
            close(out, expected, **tol)
            gx, gy = jax.grad(lambda p, t: (fn(p, t) * ct).sum(), argnums=(0, 1))(jx, jy)
            grads = loss.vjp(ct, x, y)
            close(grads["input"], np.asarray(gx), **tol)
            close(grads["target"], np.asarray(gy), **tol)


# --------------------------------------------------------------------------
# hand-computed small cases


def test_mse_by_hand():
    x, y = np.array([1.0, 2.0, -1.0]), np.array([0.5, 2.0, 1.0])  # r = 0.5, 0, -2
    close(mlo.get("mse", reduction="none")(x, y), [0.25, 0.0, 4.0])
    close(mlo.get("mse")(x, y), 4.25 / 3)
    g = mlo.get("mse").grad(x, y)
    close(g["input"], [1.0 / 3, 0.0, -4.0 / 3])
    close(g["target"], [-1.0 / 3, 0.0, 4.0 / 3])


def test_l1_by_hand():
    x, y = np.array([1.0, 2.0, -1.0]), np.array([0.5, 2.0, 1.0])
    close(mlo.get("l1", reduction="sum")(x, y), 2.5)
    g = mlo.get("l1", reduction="sum").grad(x, y)
    close(g["input"], [1.0, 0.0, -1.0])
    close(g["target"], [-1.0, 0.0, 1.0])


def test_huber_by_hand():
    x, y = np.array([0.5, 0.0, -2.0, 3.0]), np.zeros(4)
    close(mlo.get("huber", reduction="none")(x, y), [0.125, 0.0, 1.5, 2.5])
    close(mlo.get("huber", reduction="none", delta=2.0)(x, y), [0.125, 0.0, 2.0, 2.0 * (3.0 - 1.0)])
    close(mlo.get("huber", reduction="sum").grad(x, y)["input"], [0.5, 0.0, -1.0, 1.0])


def test_smooth_l1_by_hand():
    x, y = np.array([0.25, -1.0, 0.0]), np.zeros(3)
    loss = mlo.get("smooth_l1", beta=0.5, reduction="none")
    close(loss(x, y), [0.5 * 0.0625 / 0.5, 1.0 - 0.25, 0.0])
    close(mlo.get("smooth_l1", beta=0.5, reduction="sum").grad(x, y)["input"], [0.5, -1.0, 0.0])


def test_charbonnier_by_hand():
    x, y = np.array([0.0, 0.3, -1.0]), np.zeros(3)
    loss = mlo.get("charbonnier", epsilon=0.1, reduction="none")
    close(loss(x, y), [0.1, math.sqrt(0.1), math.sqrt(1.01)])
    loss = mlo.get("charbonnier", epsilon=0.1, alpha=0.5, reduction="none")
    close(loss(x, y), [0.01**0.25, 0.1**0.25, 1.01**0.25])
    # d/dx = alpha r (r^2 + eps^2)^(alpha/2 - 1)
    g = loss.vjp(np.ones(3), x, y)
    close(g["input"], [0.0, 0.5 * 0.3 * 0.1**-0.75, 0.5 * -1.0 * 1.01**-0.75])
    close(g["target"], -g["input"])
    # default epsilon 1e-3, alpha 1
    close(mlo.get("charbonnier", reduction="none")(np.array([2.0]), np.array([0.0])), [math.sqrt(4.0 + 1e-6)])


def test_log_cosh_by_hand():
    x, y = np.array([0.0, 1.0, -2.0]), np.zeros(3)
    loss = mlo.get("log_cosh", reduction="none")
    close(loss(x, y), [0.0, math.log(math.cosh(1.0)), math.log(math.cosh(2.0))], rtol=1e-14)
    close(loss.vjp(np.ones(3), x, y)["input"], [0.0, math.tanh(1.0), -math.tanh(2.0)])


def test_mape_by_hand():
    x, y = np.array([110.0, 45.0, 3.0]), np.array([100.0, 50.0, -2.0])
    close(mlo.get("mape", reduction="none")(x, y), [10.0, 10.0, 250.0])
    close(mlo.get("mape")(x, y), 90.0)
    # 100 sign(r) / |y| / 3
    close(mlo.get("mape").grad(x, y)["input"], [1.0 / 3, -2.0 / 3, 50.0 / 3])


def test_smape_by_hand():
    x, y = np.array([3.0, 1.0, -1.0]), np.array([1.0, 1.0, 1.0])
    e = 1e-7
    close(mlo.get("smape", reduction="none")(x, y), [200 * 2 / (4 + e), 0.0, 200 * 2 / (2 + e)])
    g = mlo.get("smape", reduction="none").vjp(np.ones(3), x, y)
    # x=3,y=1: D=4+e, N=2: dx = 200 (D - N)/D^2, dy = 200 (-D - N)/D^2
    d = 4 + e
    close(g["input"][0], 200 * (d - 2) / d**2)
    close(g["target"][0], 200 * (-d - 2) / d**2)


def test_msle_by_hand():
    x, y = np.array([math.e - 1.0, 1.0, -0.5]), np.array([0.0, 3.0, 0.0])
    c = math.log1p(1e-7)  # Keras clips both sides at 1e-7
    expected = [(1.0 - c) ** 2, (math.log(2.0) - math.log(4.0)) ** 2, 0.0]
    close(mlo.get("msle", reduction="none")(x, y), expected)
    g = mlo.get("msle", reduction="none").vjp(np.ones(3), x, y)
    close(g["input"], [2 * (1.0 - c) / math.e, 2 * (math.log(2.0) - math.log(4.0)) / 2.0, 0.0])
    close(g["target"], [0.0, -2 * (math.log(2.0) - math.log(4.0)) / 4.0, 0.0])


def test_psnr_by_hand():
    x = np.array([[0.5, 0.5], [1.0, 0.0]])
    y = np.array([[0.5, 0.0], [0.0, 0.0]])  # per-sample mse 0.125 and 0.5
    loss = mlo.get("psnr", reduction="none")
    close(loss(x, y), [10 * math.log10(0.125), 10 * math.log10(0.5)])
    loss = mlo.get("psnr", reduction="none", max_value=2.0)
    close(loss(x, y), [10 * math.log10(0.125) - 20 * math.log10(2.0), 10 * math.log10(0.5) - 20 * math.log10(2.0)])
    # d/dx 10 log10(mse) = 20 r / (ln 10 * M * mse)
    g = loss.vjp(np.array([1.0, 2.0]), x, y)["input"]
    close(g, [[0.0, 20 * 0.5 / (math.log(10) * 2 * 0.125)], [2.0 * 20 * 1.0 / (math.log(10) * 2 * 0.5), 0.0]])
    # 1-D input is one sample; scalar output
    v = mlo.get("psnr", reduction="none")(np.array([0.0, 1.0]), np.array([0.0, 0.0]))
    assert np.shape(v) == ()
    close(v, 10 * math.log10(0.5))


def test_pinball_by_hand():
    x, y = np.array([0.0, 2.0, 1.0]), np.array([1.0, 1.0, 1.0])  # u = y - x = 1, -1, 0
    for q, expected, slope in ((0.1, [0.1, 0.9, 0.0], [-0.1, 0.9, 0.0]),
                               (0.9, [0.9, 0.1, 0.0], [-0.9, 0.1, 0.0]),
                               (0.5, [0.5, 0.5, 0.0], [-0.5, 0.5, 0.0])):
        loss = mlo.get("pinball", quantile=q, reduction="none")
        close(loss(x, y), expected)
        g = loss.vjp(np.ones(3), x, y)
        assert set(g) == {"input"}
        close(g["input"], slope)
    assert mlo.get("quantile").options["quantile"] == 0.5
    # several quantiles: one column each
    xm = np.array([[0.0, 2.0], [1.0, 1.0]])
    ym = np.array([1.0, 3.0])
    loss = mlo.get("pinball", quantile=(0.1, 0.9), reduction="none")
    # row 0 (y=1): u = 1 at q=0.1, u = -1 at q=0.9;  row 1 (y=3): u = 2 at both
    close(loss(xm, ym), [[0.1, 0.1], [0.2, 1.8]])
    close(loss.vjp(np.ones((2, 2)), xm, ym)["input"], [[-0.1, 0.1], [-0.1, -0.9]])


def test_mase_by_hand():
    z = np.array([1.0, 3.0, 2.0, 6.0])  # m=1: |2|,|-1|,|4| -> 7/3;  m=2: |1|,|3| -> 2
    x, y = np.array([5.0, 0.0]), np.array([4.0, 2.0])
    close(mlo.get("mase", reduction="none")(x, y, z), [3.0 / 7.0, 6.0 / 7.0])
    close(mlo.get("mase", reduction="none", seasonality=2)(x, y, z), [0.5, 1.0])
    g = mlo.get("mase", seasonality=2, reduction="sum").grad(x, y, z)
    assert set(g) == {"input"}
    close(g["input"], [0.5, -0.5])
    # one history per series, time on the last axis
    x2, y2 = np.array([[1.0], [1.0]]), np.array([[0.0], [0.0]])
    z2 = np.array([[0.0, 1.0, 2.0], [0.0, 4.0, 0.0]])  # scales 1 and 4
    close(mlo.get("mase", reduction="none")(x2, y2, z2), [[1.0], [0.25]])


def _n(values, eps):
    s = sorted(values)
    k = len(s)
    med = s[k // 2] if k % 2 else 0.5 * (s[k // 2 - 1] + s[k // 2])
    u = [v - med for v in values]
    scale = sum(abs(v) for v in u) / k + eps
    return [v / scale for v in u]


def test_affine_invariant_by_hand():
    eps = 1e-6
    # x: median (2+4)/2 = 3, u = -2,-1,1,5, mean|u| = 9/4;  y: median 0, u = 0,0,0,4, mean|u| = 1
    x, y = [1.0, 2.0, 4.0, 8.0], [0.0, 0.0, 0.0, 4.0]
    nx = [-2.0 / (2.25 + eps), -1.0 / (2.25 + eps), 1.0 / (2.25 + eps), 5.0 / (2.25 + eps)]
    ny = [0.0, 0.0, 0.0, 4.0 / (1.0 + eps)]
    assert _n(x, eps) == pytest.approx(nx) and _n(y, eps) == pytest.approx(ny)
    expected0 = sum(abs(a - b) for a, b in zip(nx, ny)) / 4
    # second sample (a 2x2 image): median of (3, 1, 2, 10) is (2 + 3) / 2 = 2.5
    x1, y1 = [3.0, 1.0, 2.0, 10.0], [1.0, 2.0, 3.0, 4.0]
    expected1 = sum(abs(a - b) for a, b in zip(_n(x1, eps), _n(y1, eps))) / 4
    loss = mlo.get("affine_invariant", reduction="none")
    close(loss(np.array([x, x1]).reshape(2, 2, 2), np.array([y, y1]).reshape(2, 2, 2)), [expected0, expected1],
          rtol=1e-12)
    # odd length: the middle value (np.median agrees)
    x3, y3 = [1.0, 2.0, 4.0], [0.0, 1.0, 5.0]
    assert _n(x3, 0.0) == pytest.approx([-1.0, 0.0, 2.0])
    close(loss(np.array([x3]), np.array([y3])),
          [sum(abs(a - b) for a, b in zip(_n(x3, eps), _n(y3, eps))) / 3])


def test_affine_invariant_is_scale_and_shift_invariant():
    rng = np.random.default_rng(8)
    x, y = rng.normal(size=(3, 10)), rng.normal(size=(3, 10))
    loss = mlo.get("affine_invariant", reduction="none", epsilon=1e-12)
    close(loss(3.0 * x - 7.0, y), loss(x, y), rtol=1e-9)
    close(loss(x, 0.5 * y + 2.0), loss(x, y), rtol=1e-9)
    close(loss(x, 2.0 * x + 1.0), np.zeros(3), atol=1e-9)


# --------------------------------------------------------------------------
# edges


def test_zero_residual():
    x = np.array([1.0, -2.0, 0.5])
    ones = np.ones(3)
    for name, options in (("mse", {}), ("l1", {}), ("huber", {}), ("smooth_l1", {}), ("smooth_l1", {"beta": 0.0}),
                          ("log_cosh", {}), ("mape", {}), ("smape", {}), ("msle", {}),
                          ("pinball", {"quantile": 0.1}), ("pinball", {"quantile": 0.9})):
        loss = mlo.get(name, reduction="none", **options)
        close(loss(x, x), np.zeros(3), atol=0)
        g = loss.vjp(ones, x, x)
        for k, v in g.items():
            close(v, np.zeros(3), atol=0)
    close(mlo.get("charbonnier", reduction="none", epsilon=0.1)(x, x), np.full(3, 0.1))
    close(mlo.get("charbonnier", reduction="none").vjp(ones, x, x)["input"], np.zeros(3), atol=0)
    z = np.array([0.0, 1.0, 3.0])
    g = mlo.get("mase", reduction="none").vjp(ones, x, x, z)["input"]
    close(g, np.zeros(3), atol=0)


@pytest.mark.parametrize("delta", [1.0, 0.5, 2.5])
def test_huber_at_delta(delta):
    x, y = np.array([delta, -delta, 1.0 + delta]), np.array([0.0, 0.0, 1.0])
    loss = mlo.get("huber", delta=delta, reduction="none")
    close(loss(x, y), np.full(3, 0.5 * delta * delta))
    g = loss.vjp(np.ones(3), x, y)
    close(g["input"], [delta, -delta, delta])
    close(g["target"], [-delta, delta, -delta])


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("r", [1e3, 1e5])
def test_log_cosh_large_residual(dtype, r):
    x = np.array([r, -r, 0.0], dtype=dtype)
    y = np.array([0.0, 0.0, r], dtype=dtype)
    loss = mlo.get("log_cosh", reduction="none")
    with np.errstate(over="raise", invalid="raise", divide="raise"):  # exp(-2|r|) may underflow to 0
        v = loss(x, y)
        g = loss.vjp(np.ones(3, dtype=dtype), x, y)
    assert v.dtype == dtype and np.all(np.isfinite(v))
    close(v, np.full(3, r - LN2), rtol=1e-6 if dtype == "float32" else 1e-15)
    assert g["input"].dtype == dtype
    close(g["input"], [1.0, -1.0, -1.0], rtol=0, atol=0)
    close(g["target"], [-1.0, 1.0, 1.0], rtol=0, atol=0)


def test_mape_zero_target():
    x, y = np.array([2.0, -3.0, 0.0]), np.zeros(3)
    loss = mlo.get("mape", reduction="none")
    v = loss(x, y)
    assert np.all(np.isfinite(v))
    close(v, [100 * 2.0 / 1e-7, 100 * 3.0 / 1e-7, 0.0])
    close(loss.vjp(np.ones(3), x, y)["input"], [100 / 1e-7, -100 / 1e-7, 0.0])
    close(mlo.get("mape", reduction="none", epsilon=0.5)(x, y), [400.0, 600.0, 0.0])


@pytest.mark.parametrize("max_value", [1.0, 255.0])
def test_psnr_identical_images(max_value):
    x = np.random.default_rng(9).uniform(0, max_value, (2, 3, 3))
    loss = mlo.get("psnr", reduction="none", max_value=max_value)
    with np.errstate(all="raise"):
        v = loss(x, x)
        g = loss.vjp(np.ones(2), x, x)
    # MSE floored at 1e-10 max^2: 10 log10(1e-10 max^2) - 20 log10(max) = -100 (PSNR capped at 100 dB)
    close(v, [-100.0, -100.0], rtol=1e-12)
    for k in ("input", "target"):
        close(g[k], np.zeros_like(x), atol=0)
    # one sample identical, one not
    y = x.copy()
    y[1] += 0.1 * max_value
    v = loss(x, y)
    close(v[0], -100.0, rtol=1e-12)
    close(v[1], 10 * math.log10(0.01 * max_value**2) - 20 * math.log10(max_value), rtol=1e-12)


def test_mase_flat_history():
    x, y = np.array([[1.0, 2.0]]), np.array([[0.5, 2.5]])
    z = np.full((1, 6), 3.0)
    loss = mlo.get("mase", reduction="none")
    v = loss(x, y, z)
    assert np.all(np.isfinite(v))
    close(v, [[0.5 / 1e-8, 0.5 / 1e-8]])
    close(loss.vjp(np.ones((1, 2)), x, y, z)["input"], [[1e8, -1e8]])
    close(mlo.get("mase", reduction="none", epsilon=0.25)(x, y, z), [[2.0, 2.0]])


def test_affine_invariant_constant_map():
    eps = 1e-6
    c = np.full((2, 5), 3.0)
    y = np.array([[0.0, 1.0, 2.0, 3.0, 4.0], [1.0, 1.0, 1.0, 1.0, 1.0]])
    loss = mlo.get("affine_invariant", reduction="none")
    with np.errstate(all="raise"):
        v = loss(c, y)
        g = loss.vjp(np.ones(2), c, y)
    # n(constant) = 0, so the loss is mean |n(y)|: row 0 has u = -2..2, mean|u| = 6/5
    close(v, [(6.0 / 5.0) / (6.0 / 5.0 + eps), 0.0])
    for k in ("input", "target"):
        assert np.all(np.isfinite(g[k]))
    close(loss(c, c), np.zeros(2), atol=0)


def test_msle_negative_inputs_are_clipped():
    x, y = np.array([-0.5, -3.0, 2.0]), np.array([1.0, -1.0, -0.2])
    c = math.log1p(1e-7)
    loss = mlo.get("msle", reduction="none")
    v = loss(x, y)
    close(v, [(c - math.log(2.0)) ** 2, 0.0, (math.log(3.0) - c) ** 2])
    g = loss.vjp(np.ones(3), x, y)
    close(g["input"], [0.0, 0.0, 2 * (math.log(3.0) - c) / 3.0])
    close(g["target"], [-2 * (c - math.log(2.0)) / 2.0, 0.0, 0.0])


def test_smape_both_zero():
    z = np.zeros(3)
    loss = mlo.get("smape", reduction="none")
    with np.errstate(all="raise"):
        v = loss(z, z)
        g = loss.vjp(np.ones(3), z, z)
    close(v, z, atol=0)
    for k in ("input", "target"):
        close(g[k], z, atol=0)
    # one side zero: 200 |x| / (|x| + eps), just under the 200 cap
    close(loss(np.array([1.0]), np.array([0.0])), [200.0 / (1.0 + 1e-7)])


# --------------------------------------------------------------------------
# validation


@pytest.mark.parametrize("name, options, option", [
    ("huber", {"delta": 0.0}, "delta"),
    ("huber", {"delta": -1.0}, "delta"),
    ("smooth_l1", {"beta": -0.1}, "beta"),
    ("charbonnier", {"epsilon": 0.0}, "epsilon"),
    ("charbonnier", {"alpha": 0.0}, "alpha"),
    ("mape", {"epsilon": 0.0}, "epsilon"),
    ("smape", {"epsilon": -1e-3}, "epsilon"),
    ("mase", {"epsilon": 0.0}, "epsilon"),
    ("affine_invariant", {"epsilon": 0.0}, "epsilon"),
    ("psnr", {"max_value": 0.0}, "max_value"),
    ("pinball", {"quantile": 0.0}, "quantile"),
    ("pinball", {"quantile": 1.0}, "quantile"),
    ("pinball", {"quantile": -0.2}, "quantile"),
    ("pinball", {"quantile": (0.5, 1.5)}, "quantile"),
    ("mase", {"seasonality": 0}, "seasonality"),
    ("huber", {"delta": float("nan")}, "delta"),
])
def test_invalid_option_values(name, options, option):
    with pytest.raises(ValueError, match=f"`{option}`.*got"):
        mlo.get(name, **options)


@pytest.mark.parametrize("name, options, option", [
    ("mase", {"seasonality": 1.5}, "seasonality"),
    ("huber", {"delta": "1"}, "delta"),
    ("pinball", {"quantile": ()}, "quantile"),
])
def test_option_type_errors(name, options, option):
    with pytest.raises(TypeError, match=f"`{option}`"):
        mlo.get(name, **options)


def test_valid_option_edges():
    assert mlo.get("smooth_l1", beta=0).options["beta"] == 0.0
    assert mlo.get("pinball", quantile=[0.1, 0.9]).options["quantile"] == (0.1, 0.9)
    assert mlo.get("mase", seasonality=12).options["seasonality"] == 12


@pytest.mark.parametrize("name", REGRESSION)
def test_unknown_option(name):
    with pytest.raises(TypeError, match="unknown option `bogus`"):
        mlo.get(name, bogus=1)


def test_unknown_option_suggests_close_name():
    with pytest.raises(TypeError, match="Did you mean delta"):
        mlo.get("huber", delt=1.0)
    with pytest.raises(TypeError, match="`delta`"):
        mlo.get("mse", delta=1.0)


@pytest.mark.parametrize("name", ["mse", "l1", "huber", "smooth_l1", "charbonnier", "log_cosh", "mape", "smape",
                                  "msle", "psnr", "pinball"])
def test_shape_mismatch(name):
    with pytest.raises(ValueError, match=r"\(3,\).*\(3, 1\)"):
        mlo.get(name)(np.zeros(3), np.zeros((3, 1)))
    with pytest.raises(ValueError, match=r"\(3,\).*\(3, 1\)"):
        mlo.get(name).grad(np.zeros(3), np.zeros((3, 1)))


def test_shape_mismatch_multi_input():
    with pytest.raises(ValueError, match=r"`input` and `target`.*\(2, 3\) and \(2, 4\)"):
        mlo.get("mase")(np.zeros((2, 3)), np.zeros((2, 4)), np.zeros((2, 5)))
    with pytest.raises(ValueError, match=r"`insample`.*\(3, 5\)"):
        mlo.get("mase")(np.zeros((2, 3)), np.zeros((2, 3)), np.zeros((3, 5)))
    with pytest.raises(ValueError, match=r"`insample`.*at least 4; got 3"):
        mlo.get("mase", seasonality=3)(np.zeros((2, 3)), np.zeros((2, 3)), np.zeros((2, 3)))
    with pytest.raises(ValueError, match=r"`input`.*\(2, 3, 3\).*\(2, 3, 2\)"):
        mlo.get("pinball", quantile=(0.1, 0.5, 0.9))(np.zeros((2, 3, 2)), np.zeros((2, 3)))
    with pytest.raises(ValueError, match=r"`input` and `target`.*\(2, 3\) and \(3, 2\)"):
        mlo.get("affine_invariant")(np.zeros((2, 3)), np.zeros((3, 2)))
    with pytest.raises(ValueError, match=r"`input`.*at least 2"):
        mlo.get("affine_invariant")(np.zeros(3), np.zeros(3))
    with pytest.raises(ValueError, match="`axis`"):
        mlo.get("psnr", axis=3)(np.zeros((2, 3)), np.zeros((2, 3)))


@pytest.mark.parametrize("name", REGRESSION)
def test_integer_input_rejected(name):
    loss = mlo.get(name)
    extra = (np.zeros((2, 6)),) if name == "mase" else ()
    with pytest.raises(TypeError, match="`input`.*floating"):
        loss(np.ones((2, 3), dtype=np.int64), np.ones((2, 3)), *extra)
    if "target" in loss.differentiable:
        with pytest.raises(TypeError, match="`target`.*floating"):
            loss.grad(np.ones((2, 3)), np.ones((2, 3), dtype=np.int32), *extra)


# --------------------------------------------------------------------------
# inputs are never modified


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_inputs_not_modified(case):
    _, name, options, maker = case
    arrays = _make(11, maker)
    copies = {k: v.copy() for k, v in arrays.items()}
    for v in arrays.values():
        v.setflags(write=False)
    for reduction in ("none", "mean", "sum"):
        loss = mlo.get(name, reduction=reduction, **options)
        out = loss(**arrays)
        ct = np.ones(np.shape(out))
        ct.setflags(write=False)
        value, grads = loss.value_and_grad(**arrays)
        grads2 = loss.vjp(ct, **arrays)
        for g in list(grads.values()) + list(grads2.values()):
            assert not any(np.shares_memory(g, a) for a in arrays.values())
        close(value, out)
    for k, v in arrays.items():
        np.testing.assert_array_equal(v, copies[k])


# --------------------------------------------------------------------------
# the hot losses' fused paths: buffers written in place

HOT = [("mse", {}), ("l1", {}), ("huber", {"delta": 0.5}), ("smooth_l1", {"beta": 0.7}), ("smooth_l1", {"beta": 0.0})]
HOT_IDS = [f"{n}-{'-'.join(f'{k}{v}' for k, v in o.items()) or 'default'}" for n, o in HOT]


@pytest.mark.parametrize("shape", [(7, 3), (5, 2, 3)], ids=["2d", "3d"])
@pytest.mark.parametrize("case", HOT, ids=HOT_IDS)
def test_fused_path_matches_the_reference_and_touches_neither_inputs_nor_cotangent(case, shape):
    name, options = case
    rng = np.random.default_rng(21)
    y = rng.normal(size=shape)
    x = _away(rng, -3.0, 3.0, shape, kinks=(0.0, 0.5, -0.5, 0.7, -0.7)) + y
    ref = REFS[name](x, y, **options)
    ct = rng.normal(size=shape)
    arrays = (x, y, ct)
    copies = [a.copy() for a in arrays]
    for a in arrays:
        a.setflags(write=False)

    def f(a):
        return float(np.sum(ct * REFS[name](a["input"], a["target"], **options)))

    expected = {k: numeric_grad(f, {"input": x, "target": y}, k) for k in ("input", "target")}
    loss = mlo.get(name, reduction="none", **options)
    value, grads = loss(x, y), loss.vjp(ct, x, y)
    close(value, ref)
    mean, mean_grads = mlo.get(name, **options).value_and_grad(x, y)
    uniform = np.broadcast_to(np.float64(2.5), shape)  # one value in every entry: a read-only, strided view
    uniform_grads = loss.vjp(uniform, x, y)
    close(mean, ref.mean())
    for k in ("input", "target"):
        close(grads[k], expected[k], rtol=1e-7, atol=1e-7)
        close(mean_grads[k], grads[k] / ct / ref.size, rtol=1e-10, atol=1e-12)
        close(uniform_grads[k], grads[k] / ct * 2.5, rtol=1e-10, atol=1e-12)
        for g in (grads[k], mean_grads[k], uniform_grads[k]):
            assert not any(np.shares_memory(g, a) for a in (*arrays, uniform, value))
    for a, c in zip(arrays, copies):
        np.testing.assert_array_equal(a, c)


@needs_torch
@pytest.mark.parametrize("case", HOT, ids=HOT_IDS)
def test_torch_backward_twice_and_transforms(case):
    """The pullback writes into its forward buffer: a second backward (retain_graph) and torch.func transforms
    still get PyTorch's gradients."""
    name, options = case
    fn = {"mse": F.mse_loss, "l1": F.l1_loss, "huber": F.huber_loss, "smooth_l1": F.smooth_l1_loss}[name]
    rng = np.random.default_rng(22)
    y = rng.normal(size=(6, 4))
    x = _away(rng, -3.0, 3.0, (6, 4), kinks=(0.0, 0.5, -0.5, 0.7, -0.7)) + y
    loss = mlo.get(name, **options)
    ours = [torch.tensor(a, requires_grad=True) for a in (x, y)]
    theirs = [torch.tensor(a, requires_grad=True) for a in (x, y)]
    out, ref = loss(*ours), fn(*theirs, **options)
    for _ in range(2):
        out.backward(retain_graph=True)
        ref.backward(retain_graph=True)
        for a, b in zip(ours, theirs):
            close(a.grad.numpy(), b.grad.numpy(), rtol=1e-13, atol=1e-15)
    tx, ty = (torch.tensor(a) for a in (x, y))
    transforms = [lambda f: torch.func.grad(f, argnums=(0, 1))]
    if not (name == "l1" or options.get("beta") == 0.0):  # array-api-compat's sign indexes with a mask: no vmap
        transforms.append(lambda f: torch.func.vmap(torch.func.grad(f, argnums=(0, 1))))  # per row
    for transform in transforms:
        expected = transform(lambda a, b: fn(a, b, **options))(tx, ty)
        for a, b in zip(transform(loss)(tx, ty), expected):
            close(a.numpy(), b.numpy(), rtol=1e-13, atol=1e-15)
