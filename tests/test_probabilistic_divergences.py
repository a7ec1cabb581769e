"""Divergences and likelihood losses of the probabilistic family, against independent references.

Every expected number comes from outside the code under test: PyTorch
(functional losses, torch.distributions and autograd), optax (with jax.grad),
SciPy (rel_entr, jensenshannon, xlogy), Artifex's formula and plain NumPy
formulas written in this file, mpmath, hand-computed cases, and float64
finite differences of the NumPy references.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import special
from scipy.spatial import distance

import mithril_losses as mlo

DIVERGENCES = ("kl_div", "kl_divergence", "js_divergence", "generalized_kl", "gaussian_kl", "poisson_nll",
               "gaussian_nll")
LN2 = math.log(2.0)

try:
    import torch
    F = torch.nn.functional
except ImportError:  # the NumPy parts run without torch
    torch = F = None
needs_torch = pytest.mark.skipif(torch is None, reason="torch is not installed")


def close(actual, expected, rtol=1e-12, atol=1e-12):
    np.testing.assert_allclose(np.asarray(actual, dtype=np.float64), np.asarray(expected, dtype=np.float64),
                               rtol=rtol, atol=atol)


def tt(a, grad=False):
    return torch.tensor(np.asarray(a), dtype=torch.float64 if np.asarray(a).dtype == np.float64 else None,
                        requires_grad=grad)


# --------------------------------------------------------------------------
# registry: names, aliases, functional names, inputs


def test_registered_in_the_probabilistic_family():
    available = mlo.available(family="probabilistic")
    for name in DIVERGENCES:
        assert name in available
        assert mlo.get(name).family == "probabilistic"


@pytest.mark.parametrize("alias, name", [
    ("poisson_nll_loss", "poisson_nll"), ("gaussian_nll_loss", "gaussian_nll"),
    ("generalized_kl_divergence", "generalized_kl"), ("convex_kl_divergence", "generalized_kl"),
    ("jensen_shannon_divergence", "js_divergence"),
])
def test_aliases(alias, name):
    assert mlo.get(alias).name == name


def test_names_of_other_semantics_are_not_aliases():
    # MLX's kl_div_loss (log-targets, summed), Keras's poisson (rates, eps 1e-7) and SciPy's jensenshannon
    # (a square root) differ from these losses
    for name in ("kl_div_loss", "poisson", "jensenshannon"):
        with pytest.raises(KeyError):
            mlo.get(name)


def test_inputs_differentiable_and_defaults():
    expected = {
        "kl_div": (("input", "target"), ("input", "target")),
        "kl_divergence": (("p", "q"), ("p", "q")),
        "js_divergence": (("p", "q"), ("p", "q")),
        "generalized_kl": (("input", "target"), ("input", "target")),
        "gaussian_kl": (("mean", "logvar"), ("mean", "logvar")),
        "poisson_nll": (("input", "target"), ("input",)),
        "gaussian_nll": (("input", "target", "var"), ("input", "target", "var")),
    }
    for name, (inputs, diff) in expected.items():
        loss = mlo.get(name)
        assert loss.inputs == inputs and loss.differentiable == diff, name
        assert loss.reduction == "mean"
    assert mlo.get("kl_div").options == {"log_target": False}
    assert mlo.get("kl_divergence").options == {"eps": 1e-8}
    assert mlo.get("poisson_nll").options == {"log_input": True, "full": False, "eps": 1e-8}
    assert mlo.get("gaussian_nll").options == {"full": False, "eps": 1e-6}
    assert mlo.get("kl_div", reduction="batchmean").reduction == "batchmean"
    with pytest.raises(ValueError, match="`reduction`"):
        mlo.get("poisson_nll", reduction="batchmean")
    cfg = mlo.get("gaussian_nll", full=True, eps=1e-3).to_config()
    assert mlo.from_config(cfg).options == {"full": True, "eps": 1e-3}


@needs_torch
def test_functional_names():
    rng = np.random.default_rng(0)
    x, t = np.log(_dist(rng, (3, 4))), _dist(rng, (3, 4))
    tx = tt(x, grad=True)
    ref = F.kl_div(tx, tt(t), reduction="batchmean")
    close(mlo.kl_div(x, t, reduction="batchmean"), ref.item())
    close(mlo.kl_div_gradient(x, t, reduction="batchmean"), torch.autograd.grad(ref, tx)[0].numpy())
    rate, counts = rng.normal(size=5), rng.poisson(2.0, 5).astype(float)
    tr = tt(rate, grad=True)
    ref = F.poisson_nll_loss(tr, tt(counts), full=True)
    close(mlo.poisson_nll_loss(rate, counts, full=True), ref.item())
    close(mlo.poisson_nll_loss_gradient(rate, counts, full=True), torch.autograd.grad(ref, tr)[0].numpy())
    mu, y, var = rng.normal(size=(4, 2)), rng.normal(size=(4, 2)), rng.uniform(0.5, 2.0, (4, 1))
    tm = tt(mu, grad=True)
    ref = F.gaussian_nll_loss(tm, tt(y), tt(var))
    close(mlo.gaussian_nll_loss(mu, y, var), ref.item())
    tv = tt(var, grad=True)
    ref = F.gaussian_nll_loss(tm, tt(y), tv)
    gm, gv = torch.autograd.grad(ref, (tm, tv))
    g = mlo.gaussian_nll_loss_gradient(mu, y, var)  # both predictions: the mean and the variance
    assert set(g) == {"input", "var"}
    close(g["input"], gm.numpy())
    close(g["var"], gv.numpy())
    g = mlo.gaussian_kl_loss_gradient(mu, y)  # y as the log-variance: the mean over 4 samples
    assert set(g) == {"mean", "logvar"}
    close(g["mean"], mu / 4)
    close(g["logvar"], 0.5 * np.expm1(y) / 4)
    # Mithril's kl_divergence / kl_divergence_gradient: the gradient is w.r.t. the first input, p
    p, q = _dist(rng, (2, 3)), _dist(rng, (2, 3))
    g = mlo.kl_divergence_gradient(p, q)
    assert isinstance(g, np.ndarray)
    close(g, (np.log(p / q) + 1.0) / 2.0)
    close(mlo.js_divergence(p, q), np.mean(distance.jensenshannon(p, q, axis=-1) ** 2))
    close(mlo.generalized_kl_divergence(x, t), mlo.get("generalized_kl")(x, t))


# --------------------------------------------------------------------------
# independent NumPy references (unreduced), written from the formulas


def ref_kl_div(x, t, log_target=False):
    if log_target:
        return np.exp(t) * (t - x)
    return special.xlogy(t, t) - t * x


def ref_kl_divergence(p, q, eps=1e-8):
    # Artifex: clip both to [eps, 1], then sum p log(p / q); summed here over the last axis
    pc, qc = np.clip(p, eps, 1.0), np.clip(q, eps, 1.0)
    return np.sum(pc * (np.log(pc) - np.log(qc)), axis=-1)


def ref_js(p, q):
    m = 0.5 * (p + q)
    return 0.5 * np.sum(special.rel_entr(p, m) + special.rel_entr(q, m), axis=-1)


def ref_generalized_kl(x, t):
    return np.sum(special.xlogy(t, t) - t * x + np.exp(x) - t, axis=-1)


def ref_gaussian_kl(mu, logvar):
    return -0.5 * np.sum(1.0 + logvar - mu**2 - np.exp(logvar), axis=-1)


def ref_poisson(x, t, log_input=True, full=False, eps=1e-8):
    loss = np.exp(x) - t * x if log_input else x - t * np.log(x + eps)
    if full:
        ts = np.where(t > 1, t, 2.0)
        loss = loss + np.where(t > 1, ts * np.log(ts) - ts + 0.5 * np.log(2 * np.pi * ts), 0.0)
    return loss


def ref_gaussian_nll(x, y, var, full=False, eps=1e-6):
    var = np.asarray(var)
    if var.shape != x.shape and var.shape == x.shape[:-1]:
        var = var[..., None]
    v = np.maximum(var, eps)
    loss = 0.5 * (np.log(v) + (x - y) ** 2 / v)
    return loss + 0.5 * np.log(2 * np.pi) if full else loss


REFS = {"kl_div": ref_kl_div, "kl_divergence": ref_kl_divergence, "js_divergence": ref_js,
        "generalized_kl": ref_generalized_kl, "gaussian_kl": ref_gaussian_kl, "poisson_nll": ref_poisson,
        "gaussian_nll": ref_gaussian_nll}


def _dist(rng, shape, floor=0.3):
    """Random distributions on the last axis, every probability at least floor / C."""
    e = rng.uniform(0.0, 1.0, shape) ** 2
    return (1.0 - floor) * e / e.sum(axis=-1, keepdims=True) + floor / shape[-1]


def make(name, options, shape, rng):
    if name == "kl_div":
        t = _dist(rng, shape)
        return {"input": np.log(_dist(rng, shape)), "target": np.log(t) if options.get("log_target") else t}
    if name in ("kl_divergence", "js_divergence"):
        return {"p": _dist(rng, shape), "q": _dist(rng, shape)}
    if name == "generalized_kl":
        return {"input": rng.normal(0.0, 0.7, shape), "target": rng.uniform(0.2, 2.0, shape)}
    if name == "gaussian_kl":
        return {"mean": rng.normal(size=shape), "logvar": rng.uniform(-2.0, 1.5, shape)}
    if name == "poisson_nll":
        x = rng.normal(0.2, 0.8, shape) if options.get("log_input", True) else rng.uniform(0.3, 3.0, shape)
        return {"input": x, "target": rng.poisson(2.0, shape).astype(float)}
    if name == "gaussian_nll":
        var_shape = options.pop("_var_shape", shape)
        y = rng.normal(size=shape)
        return {"input": y + rng.normal(size=shape), "target": y, "var": rng.uniform(0.3, 2.0, var_shape)}
    raise ValueError(name)


# (id, name, options, shape); gaussian_nll's "_var_shape" is the variance's shape, not an option
CASES = [
    ("kl_div", "kl_div", {}, (3, 4)),
    ("kl_div-log_target", "kl_div", {"log_target": True}, (2, 3, 2)),
    ("kl_divergence", "kl_divergence", {}, (3, 4)),
    ("kl_divergence-eps", "kl_divergence", {"eps": 1e-2}, (5,)),
    ("js_divergence", "js_divergence", {}, (2, 2, 3)),
    ("generalized_kl", "generalized_kl", {}, (3, 4)),
    ("gaussian_kl", "gaussian_kl", {}, (3, 4)),
    ("poisson_nll", "poisson_nll", {}, (3, 4)),
    ("poisson_nll-full", "poisson_nll", {"full": True}, (12,)),
    ("poisson_nll-rates", "poisson_nll", {"log_input": False, "eps": 1e-3}, (3, 4)),
    ("gaussian_nll", "gaussian_nll", {}, (3, 4)),
    ("gaussian_nll-rowvar", "gaussian_nll", {"full": True, "_var_shape": (3,)}, (3, 4)),
    ("gaussian_nll-var1", "gaussian_nll", {"_var_shape": (3, 1)}, (3, 4)),
    ("gaussian_nll-middle1", "gaussian_nll", {"eps": 1e-3, "_var_shape": (2, 1, 2)}, (2, 3, 2)),
    ("gaussian_nll-scalar", "gaussian_nll", {"_var_shape": ()}, (3, 4)),
]
CASE_IDS = [c[0] for c in CASES]


def _case(case, seed):
    _, name, options, shape = case
    options = dict(options)
    arrays = make(name, options, shape, np.random.default_rng(seed))
    return name, options, arrays


def _ref(name, options, arrays):
    return REFS[name](*(arrays[i] for i in mlo.spec(name).inputs), **options)


def numeric_grad(f, arrays, key, h=1e-4):
    """4th-order central differences of the scalar f(arrays) w.r.t. arrays[key], entry by entry."""
    x = arrays[key]
    g = np.zeros_like(x)
    for idx in np.ndindex(x.shape):
        vals = []
        for step in (2.0, 1.0, -1.0, -2.0):
            moved = dict(arrays)
            moved[key] = x.copy()
            moved[key][idx] += step * h
            vals.append(f(moved))
        g[idx] = (-vals[0] + 8.0 * vals[1] - 8.0 * vals[2] + vals[3]) / (12.0 * h)
    return g


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_value_matches_reference(case):
    name, options, arrays = _case(case, 1)
    expected = _ref(name, options, arrays)
    out = mlo.get(name, reduction="none", **options)(**arrays)
    assert out.shape == expected.shape
    close(out, expected, rtol=1e-13, atol=1e-14)
    close(mlo.get(name, reduction="sum", **options)(**arrays), expected.sum(), rtol=1e-13)
    close(mlo.get(name, **options)(**arrays), expected.mean(), rtol=1e-13)


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_vjp_matches_finite_differences(case):
    name, options, arrays = _case(case, 2)
    loss = mlo.get(name, reduction="none", **options)
    ct = np.random.default_rng(3).normal(size=np.shape(_ref(name, options, arrays)))
    grads = loss.vjp(ct, **arrays)
    assert set(grads) == set(loss.differentiable)
    for key in loss.differentiable:
        assert grads[key].shape == np.shape(arrays[key]) and grads[key].dtype == np.float64
        num = numeric_grad(lambda a: float(np.sum(ct * _ref(name, options, a))), arrays, key)
        close(grads[key], num, rtol=1e-7, atol=1e-8)


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_float32_close_to_float64_reference(case):
    name, options, arrays = _case(case, 4)
    single = {k: v.astype(np.float32) for k, v in arrays.items()}
    exact = {k: v.astype(np.float64) for k, v in single.items()}
    loss = mlo.get(name, reduction="sum", **options)
    value, grads = loss.value_and_grad(**single)
    assert value.dtype == np.float32
    close(value, np.sum(_ref(name, options, exact)), rtol=2e-6, atol=2e-6)
    for key, g in grads.items():
        assert g.dtype == np.float32 and g.shape == np.shape(arrays[key])
        num = numeric_grad(lambda a: float(np.sum(_ref(name, options, a))), exact, key)
        close(g, num, rtol=1e-5, atol=1e-5)


# --------------------------------------------------------------------------
# kl_div: PyTorch parity


@needs_torch
@pytest.mark.parametrize("reduction", ["none", "mean", "sum", "batchmean"])
@pytest.mark.parametrize("log_target", [False, True])
@pytest.mark.parametrize("shape", [(4, 5), (2, 3, 4), (6,)], ids=["2d", "3d", "1d"])
def test_kl_div_matches_torch(shape, log_target, reduction):
    rng = np.random.default_rng(5)
    x = np.log(_dist(rng, shape, floor=0.05))
    t = _dist(rng, shape, floor=0.05)
    t = np.log(t) if log_target else t
    tx, tt_ = tt(x, grad=True), tt(t, grad=True)
    with pytest.warns(UserWarning) if reduction == "mean" else _nothing():
        ref = F.kl_div(tx, tt_, reduction=reduction, log_target=log_target)
    ct = rng.normal(size=shape) if reduction == "none" else np.ones(())
    gx, gt = torch.autograd.grad(ref, (tx, tt_), tt(ct))
    loss = mlo.get("kl_div", reduction=reduction, log_target=log_target)
    close(loss(x, t), ref.detach().numpy(), rtol=1e-13, atol=1e-15)
    grads = loss.vjp(ct, x, t)
    close(grads["input"], gx.numpy(), rtol=1e-13, atol=1e-15)
    close(grads["target"], gt.numpy(), rtol=1e-13, atol=1e-15)


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_kl_div_batchmean_is_sum_over_first_axis_length():
    rng = np.random.default_rng(6)
    x, t = np.log(_dist(rng, (3, 4))), _dist(rng, (3, 4))
    total = np.sum(ref_kl_div(x, t))
    close(mlo.get("kl_div", reduction="batchmean")(x, t), total / 3)
    close(mlo.get("kl_div", reduction="batchmean").grad(x, t)["input"], -t / 3)
    # the true KL divergence per row: batchmean of kl_div == mean of scipy's per-row KL(t || exp(x))
    close(mlo.get("kl_div", reduction="batchmean")(x, t), np.mean(np.sum(special.rel_entr(t, np.exp(x)), -1)))
    with pytest.raises(ValueError, match="batchmean"):
        mlo.get("kl_div", reduction="batchmean")(np.array(-1.0), np.array(0.5))


@needs_torch
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("scale", [1e2, 1e4, 1e6])
def test_kl_div_huge_logits_match_torch(dtype, scale):
    # log-softmax of huge logits: log-probabilities down to -1e6, targets with exact zeros (underflow)
    rng = np.random.default_rng(7)
    x = torch.log_softmax(torch.tensor(rng.normal(size=(3, 6)) * scale, dtype=getattr(torch, dtype)), -1)
    t = torch.softmax(torch.tensor(rng.normal(size=(3, 6)) * scale, dtype=getattr(torch, dtype)), -1)
    t[0, 0] = 0.0  # an exact zero also where nothing underflows
    tx, tt_ = x.clone().requires_grad_(True), t.clone().requires_grad_(True)
    ref = F.kl_div(tx, tt_, reduction="sum")
    gx, gt = torch.autograd.grad(ref, (tx, tt_))
    loss = mlo.get("kl_div", reduction="sum")
    xn, tn = x.numpy(), t.numpy()
    value, grads = loss.value_and_grad(xn, tn)
    assert value.dtype == dtype and np.isfinite(value)
    tol = 1e-12 if dtype == "float64" else 2e-6
    close(value, ref.item(), rtol=tol, atol=tol)
    close(grads["input"], gx.numpy(), rtol=tol, atol=0)
    # the target gradient is NaN exactly where t = 0, as PyTorch's autograd; finite elsewhere
    assert np.array_equal(np.isnan(grads["target"]), tn == 0) and np.array_equal(np.isnan(gt.numpy()), tn == 0)
    close(grads["target"], gt.numpy(), rtol=tol, atol=tol)


def test_kl_div_zero_target_adds_exactly_zero():
    x = np.array([[-0.5, -1.0, -np.inf], [-2.0, -0.1, -3.0]])  # -inf: a masked class
    t = np.array([[0.5, 0.5, 0.0], [0.0, 1.0, 0.0]])
    loss = mlo.get("kl_div", reduction="none")
    out = loss(x, t)
    expected = [[0.5 * (math.log(0.5) + 0.5), 0.5 * (math.log(0.5) + 1.0), 0.0], [0.0, 0.1, 0.0]]
    np.testing.assert_array_equal(out == 0, np.array(expected) == 0)  # exactly 0, not NaN (PyTorch: NaN at -inf)
    close(out, expected, rtol=1e-15)
    g = loss.vjp(np.ones((2, 3)), x, t)
    close(g["input"], -t)
    assert np.all(np.isfinite(g["input"]))
    # d/dt = log t + 1 - x where t > 0; NaN where t = 0 (PyTorch's autograd: 0 / 0)
    np.testing.assert_array_equal(np.isnan(g["target"]), t == 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        expected_target = np.log(t) + 1.0 - x
    close(g["target"][t > 0], expected_target[t > 0])
    # log_target: a -inf target (probability 0) adds 0 and has zero gradients (PyTorch: NaN)
    lt = np.log(np.where(t > 0, t, 1.0))
    lt[t == 0] = -np.inf
    loss = mlo.get("kl_div", reduction="none", log_target=True)
    out = loss(np.where(np.isinf(x), -5.0, x), lt)
    g = loss.vjp(np.ones((2, 3)), np.where(np.isinf(x), -5.0, x), lt)
    assert np.all(out[t == 0] == 0) and np.all(np.isfinite(out))
    assert np.all(g["target"][t == 0] == 0) and np.all(g["input"][t == 0] == 0)


def test_kl_div_target_one_and_identical_distributions():
    t = np.array([[1.0, 0.0, 0.0], [0.25, 0.25, 0.5]])
    with np.errstate(divide="ignore"):
        x = np.log(t)  # includes log 0 = -inf where t = 0
    out = mlo.get("kl_div", reduction="none")(x, t)
    np.testing.assert_array_equal(out, np.zeros((2, 3)))
    assert mlo.get("kl_div", reduction="batchmean")(x, t) == 0.0


# --------------------------------------------------------------------------
# kl_divergence (Artifex) and js_divergence


def test_kl_divergence_matches_artifex_formula_and_scipy():
    rng = np.random.default_rng(8)
    p, q = _dist(rng, (4, 6)), _dist(rng, (4, 6))
    loss = mlo.get("kl_divergence", reduction="none")
    close(loss(p, q), np.sum(special.rel_entr(p, q), -1), rtol=1e-13)
    # Artifex's reduction="sum" over all elements equals this loss's "sum" over distributions
    close(mlo.get("kl_divergence", reduction="sum")(p, q), np.sum(ref_kl_divergence(p, q)), rtol=1e-13)


def test_kl_divergence_zeros_are_clipped_at_eps():
    eps = 1e-8
    p = np.array([[0.5, 0.5, 0.0], [1.0, 0.0, 0.0]])
    q = np.array([[0.0, 0.5, 0.5], [0.5, 0.5, 0.0]])
    loss = mlo.get("kl_divergence", reduction="none")
    out = loss(p, q)
    # row 0: 0.5 log(0.5 / eps) + 0 + eps log(eps / 0.5);  row 1: log 2 + eps log(eps / 0.5) + 0
    expected = [0.5 * math.log(0.5 / eps) + eps * math.log(eps / 0.5), LN2 + eps * math.log(eps / 0.5)]
    close(out, expected, rtol=1e-14)
    close(out, ref_kl_divergence(p, q), rtol=1e-14)
    g = loss.vjp(np.ones(2), p, q)
    # clipped entries get zero gradients; others d/dp = log(p^/q^) + 1, d/dq = -p^/q^
    close(g["p"], [[math.log(0.5 / eps) + 1.0, 1.0, 0.0], [LN2 + 1.0, 0.0, 0.0]])
    close(g["q"], [[0.0, -1.0, -eps / 0.5], [-2.0, -eps / 0.5, 0.0]])
    assert all(np.all(np.isfinite(v)) for v in g.values())
    out = mlo.get("kl_divergence", reduction="none", eps=1e-3)(p, q)
    close(out, ref_kl_divergence(p, q, eps=1e-3), rtol=1e-14)


def test_js_divergence_matches_scipy():
    rng = np.random.default_rng(9)
    p, q = _dist(rng, (5, 7), floor=0.0), _dist(rng, (5, 7), floor=0.0)
    out = mlo.get("js_divergence", reduction="none")(p, q)
    close(out, distance.jensenshannon(p, q, axis=-1) ** 2, rtol=1e-12)
    close(out, mlo.get("js_divergence", reduction="none")(q, p), rtol=1e-14)  # symmetric
    assert np.all(out >= 0) and np.all(out <= LN2)


def test_js_divergence_disjoint_supports_give_exactly_log2():
    loss = mlo.get("js_divergence", reduction="none")
    p = np.array([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]])
    q = np.array([[0.0, 1.0], [1.0, 0.0], [0.5, 0.5]])
    np.testing.assert_array_equal(loss(p, q), [LN2, LN2, 0.0])
    p = np.array([0.25, 0.75, 0.0, 0.0, 0.0])
    q = np.array([0.0, 0.0, 0.5, 0.125, 0.375])
    assert abs(float(loss(p, q)) - LN2) <= 2 * np.spacing(LN2)
    for dtype in (np.float32, np.float64):
        out = loss(p.astype(dtype), q.astype(dtype))
        assert out.dtype == dtype and abs(float(out) - LN2) <= 4 * np.spacing(dtype(LN2))


def test_js_divergence_gradients_at_zero_probabilities():
    # classes: p > 0 = q | p = 0 < q | p = q = 0 | both > 0
    p = np.array([0.5, 0.0, 0.0, 0.5])
    q = np.array([0.0, 0.5, 0.0, 0.5])
    g = mlo.get("js_divergence", reduction="sum").grad(p, q)
    # dJS/dp = 1/2 log(2p / (p + q)): log 2 / 2 where q = 0; -inf where p = 0 < q (taken as 0); at p = q = 0
    # the partial derivative is log 2 / 2 (JS is linear in p there); both > 0 and equal: 0
    close(g["p"], [0.5 * LN2, 0.0, 0.5 * LN2, 0.0], rtol=1e-15)
    close(g["q"], [0.0, 0.5 * LN2, 0.5 * LN2, 0.0], rtol=1e-15)
    # one-sided finite differences of the reference confirm the finite ones
    h = 1e-7
    for i in (0, 2, 3):
        dp = np.zeros(4)
        dp[i] = h
        fd = (ref_js(p + dp, q) - ref_js(p, q)) / h
        assert abs(fd - g["p"][i]) < 1e-6


def test_js_divergence_near_equal_and_tiny_probabilities_match_mpmath():
    mpmath = pytest.importorskip("mpmath")
    mpmath.mp.dps = 50

    def exact(p, q):
        total = mpmath.mpf(0)
        for a, b in zip(p, q):
            a, b = mpmath.mpf(float(a)), mpmath.mpf(float(b))
            m = (a + b) / 2
            total += (a * mpmath.log(a / m) if a else 0) + (b * mpmath.log(b / m) if b else 0)
        return float(total / 2)

    loss = mlo.get("js_divergence", reduction="none")
    for p, q, rtol in (([0.5 + 1e-4, 0.5 - 1e-4], [0.5, 0.5], 1e-9),
                       ([0.3, 0.7 - 1e-300, 1e-300], [0.3 + 1e-5, 0.7 - 1e-5, 0.0], 1e-9),
                       ([1.0 - 4e-320, 4e-320], [0.0, 1.0], 1e-15)):  # subnormal: no overflow of 1/p
        p, q = np.array(p), np.array(q)
        out = loss(p, q)
        close(out, exact(p, q), rtol=rtol, atol=0)
        g = loss.grad(p, q)
        assert all(np.all(np.isfinite(v)) for v in g.values())


# --------------------------------------------------------------------------
# generalized_kl: optax parity


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_generalized_kl_matches_optax(dtype):
    jax = pytest.importorskip("jax")
    optax = pytest.importorskip("optax")
    rng = np.random.default_rng(10)
    x = rng.normal(0.0, 1.0, (3, 5)).astype(dtype)
    t = rng.uniform(0.1, 3.0, (3, 5)).astype(dtype)
    ct = rng.normal(size=3).astype(dtype)
    tol = dict(rtol=1e-13, atol=1e-13) if dtype == "float64" else dict(rtol=3e-6, atol=3e-6)
    with jax.enable_x64(dtype == "float64"):
        jx, jt = jax.numpy.asarray(x), jax.numpy.asarray(t)
        expected = np.asarray(optax.losses.generalized_kl_divergence(jx, jt))
        gx, gt = jax.grad(lambda a, b: (optax.losses.generalized_kl_divergence(a, b) * ct).sum(),
                          argnums=(0, 1))(jx, jt)
    loss = mlo.get("generalized_kl_divergence", reduction="none")
    out = loss(x, t)
    assert out.dtype == dtype
    close(out, expected, **tol)
    grads = loss.vjp(ct, x, t)
    close(grads["input"], np.asarray(gx), **tol)
    close(grads["target"], np.asarray(gt), **tol)


def test_generalized_kl_edges():
    x = np.array([[0.0, math.log(2.0), -np.inf, -1.0]])
    t = np.array([[1.0, 2.0, 0.0, 0.0]])
    loss = mlo.get("generalized_kl", reduction="none")
    # t = e^x gives 0; t = 0 adds e^x (0 at x = -inf, where optax gives NaN)
    close(loss(x, t), [math.exp(-1.0)], rtol=1e-15)
    g = loss.vjp(np.ones(1), x, t)
    close(g["input"], [[0.0, 0.0, 0.0, math.exp(-1.0)]], atol=1e-15)
    # d/dt = log t - x: 0 where t = e^x, NaN where t = 0 (as optax's autodiff)
    np.testing.assert_array_equal(np.isnan(g["target"]), t == 0)
    close(g["target"][t > 0], [0.0, 0.0], atol=1e-15)


# --------------------------------------------------------------------------
# gaussian_kl: torch.distributions and closed form


@needs_torch
def test_gaussian_kl_matches_torch_distributions():
    from torch.distributions import Normal, kl_divergence

    rng = np.random.default_rng(11)
    mu, logvar = rng.normal(size=(4, 3)), rng.uniform(-3.0, 2.0, (4, 3))
    tm, tv = tt(mu, grad=True), tt(logvar, grad=True)
    ref = kl_divergence(Normal(tm, torch.exp(0.5 * tv)), Normal(torch.zeros(4, 3, dtype=torch.float64),
                                                                   torch.ones(4, 3, dtype=torch.float64))).sum(-1)
    ct = rng.normal(size=4)
    gm, gv = torch.autograd.grad(ref, (tm, tv), tt(ct))
    loss = mlo.get("gaussian_kl", reduction="none")
    close(loss(mu, logvar), ref.detach().numpy(), rtol=1e-13)
    g = loss.vjp(ct, mu, logvar)
    close(g["mean"], gm.numpy(), rtol=1e-13)
    close(g["logvar"], gv.numpy(), rtol=1e-12, atol=1e-15)


def test_gaussian_kl_edges():
    loss = mlo.get("gaussian_kl", reduction="none")
    z = np.zeros((2, 3))
    np.testing.assert_array_equal(loss(z, z), [0.0, 0.0])
    np.testing.assert_array_equal(loss.grad(z, z)["logvar"], z)
    # near logvar = 0: e^v - 1 - v = v^2/2 + v^3/6 keeps its digits (naive exp(v) - 1 - v would not)
    v = np.array([1e-6, -1e-5, 3e-8])
    close(loss(np.zeros(3), v), 0.5 * np.sum(v**2 / 2 + v**3 / 6 + v**4 / 24), rtol=1e-9, atol=0)
    # large |logvar|: finite in float64; float32 overflows above ~88.7 (documented)
    big = np.array([-300.0, 300.0])
    close(loss(np.zeros(2), big), 0.5 * (math.exp(300.0) - 1.0 - 300.0 + math.exp(-300.0) - 1.0 + 300.0), rtol=1e-14)
    with np.errstate(over="ignore"):
        out = loss(np.zeros((1, 2), np.float32), np.array([[10.0, 100.0]], np.float32))
    assert out.dtype == np.float32 and np.isposinf(out[0])
    out = loss(np.zeros((1, 2), np.float32), np.array([[-80.0, 80.0]], np.float32))
    close(out, 0.5 * (math.expm1(-80.0) + 80.0 + math.expm1(80.0) - 80.0), rtol=1e-6)


# --------------------------------------------------------------------------
# poisson_nll: PyTorch parity


@needs_torch
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("options", [{}, {"full": True}, {"log_input": False}, {"log_input": False, "eps": 1e-2},
                                     {"log_input": False, "full": True}], ids=str)
def test_poisson_nll_matches_torch(options, reduction):
    rng = np.random.default_rng(12)
    shape = (4, 5)
    x = rng.normal(0.3, 1.0, shape) if options.get("log_input", True) else rng.uniform(0.05, 4.0, shape)
    t = rng.poisson(2.0, shape).astype(float)
    t[0, :3] = [0.0, 1.0, 0.0]  # the Stirling mask at t <= 1
    tx = tt(x, grad=True)
    ref = F.poisson_nll_loss(tx, tt(t), reduction=reduction, **options)
    ct = rng.normal(size=shape) if reduction == "none" else np.ones(())
    (gx,) = torch.autograd.grad(ref, tx, tt(ct))
    loss = mlo.get("poisson_nll_loss", reduction=reduction, **options)
    close(loss(x, t), ref.detach().numpy(), rtol=1e-13, atol=1e-15)
    close(loss.vjp(ct, x, t)["input"], gx.numpy(), rtol=1e-13, atol=1e-15)


@needs_torch
def test_poisson_nll_integer_counts_and_edges():
    x = np.array([0.5, -1.0, 2.0, 0.0])
    counts = np.array([0, 3, 7, 1])
    # (PyTorch itself evaluates Stirling's term of integer counts in float32: compare with float64 counts)
    ref = F.poisson_nll_loss(torch.tensor(x), torch.tensor(counts, dtype=torch.float64), full=True, reduction="none")
    loss = mlo.get("poisson_nll", reduction="none", full=True)
    for c in (counts, counts.astype(np.int32), counts.astype(np.float64)):
        out = loss(x, c)
        assert out.dtype == np.float64
        close(out, ref.numpy(), rtol=1e-14)
        close(loss.vjp(np.ones(4), x, c)["input"], np.exp(x) - counts, rtol=1e-15)
    # rates: a zero count adds exactly x (0 at x = 0 even with eps = 0, where PyTorch gives NaN), gradient 1
    loss = mlo.get("poisson_nll", reduction="none", log_input=False, eps=0.0)
    out = loss(np.array([0.0, 2.0]), np.array([0.0, 0.0]))
    np.testing.assert_array_equal(out, [0.0, 2.0])
    np.testing.assert_array_equal(loss.vjp(np.ones(2), np.array([0.0, 2.0]), np.array([0.0, 0.0]))["input"], [1.0, 1.0])
    # huge log-rates in float32 stay finite below exp's overflow
    out = mlo.get("poisson_nll", reduction="none")(np.array([80.0, -1e4], np.float32), np.array([3.0, 2.0], np.float32))
    assert out.dtype == np.float32 and np.all(np.isfinite(out))
    close(out, [math.exp(80.0) - 240.0, 2e4], rtol=1e-6)


# --------------------------------------------------------------------------
# gaussian_nll: PyTorch parity with every variance form


GNLL_VAR = [((4, 3), (4, 3)), ((4, 3), (4,)), ((4, 3), (4, 1)), ((4, 3), (1, 3)), ((2, 3, 4), (2, 1, 4)),
            ((2, 3, 4), (2, 3)), ((2, 3, 4), (2, 3, 1)), ((5,), ()), ((5,), (5,)), ((5,), (1,))]


@needs_torch
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("full", [False, True])
@pytest.mark.parametrize("shapes", GNLL_VAR, ids=str)
def test_gaussian_nll_matches_torch(shapes, full, reduction):
    shape, var_shape = shapes
    rng = np.random.default_rng(13)
    y = rng.normal(size=shape)
    x = y + rng.normal(size=shape)
    var = rng.uniform(0.2, 2.0, var_shape)
    tx, ty, tv = tt(x, grad=True), tt(y, grad=True), tt(var, grad=True)
    ref = F.gaussian_nll_loss(tx, ty, tv, full=full, reduction=reduction)
    ct = rng.normal(size=shape) if reduction == "none" else np.ones(())
    gx, gy, gv = torch.autograd.grad(ref, (tx, ty, tv), tt(ct))
    loss = mlo.get("gaussian_nll", full=full, reduction=reduction)
    close(loss(x, y, var), ref.detach().numpy(), rtol=1e-13, atol=1e-15)
    grads = loss.vjp(ct, x, y, var)
    assert grads["var"].shape == var_shape
    for key, g in (("input", gx), ("target", gy), ("var", gv)):
        close(grads[key], g.numpy(), rtol=1e-13, atol=1e-15)


@needs_torch
def test_gaussian_nll_scalar_variance_and_clamp_match_torch():
    rng = np.random.default_rng(14)
    x, y = rng.normal(size=(3, 4)), rng.normal(size=(3, 4))
    # a Python float var (PyTorch's homoscedastic scalar); its gradient is the sum over all elements
    ref = F.gaussian_nll_loss(tt(x), tt(y), 0.7, reduction="sum")
    loss = mlo.get("gaussian_nll", reduction="sum")
    close(loss(x, y, 0.7), ref.item(), rtol=1e-14)
    gv = loss.grad(x, y, 0.7)["var"]
    assert np.shape(gv) == ()
    close(gv, np.sum(0.5 * (0.7 - (x - y) ** 2) / 0.7**2), rtol=1e-13)
    # a float var with float32 inputs keeps float32 (the var gradient is a 0-d float64 array, like var)
    single = mlo.get("gaussian_nll").value_and_grad(x.astype(np.float32), y.astype(np.float32), 0.7)
    assert single[0].dtype == np.float32 and single[1]["input"].dtype == np.float32
    close(single[0], ref.item() / 12, rtol=1e-6)
    # variances below eps (and 0): the value uses eps, the gradient passes straight through the clamp
    var = rng.uniform(0.2, 2.0, (3, 4))
    var[0, :3] = [0.0, 1e-3, 0.05]
    for eps in (1e-6, 0.1):
        tv = tt(var, grad=True)
        tx = tt(x, grad=True)
        ref = F.gaussian_nll_loss(tx, tt(y), tv, eps=eps, reduction="sum")
        gx, gv = torch.autograd.grad(ref, (tx, tv))
        loss = mlo.get("gaussian_nll", eps=eps, reduction="sum")
        close(loss(x, y, var), ref.item(), rtol=1e-13)
        grads = loss.grad(x, y, var)
        close(grads["input"], gx.numpy(), rtol=1e-13)
        close(grads["var"], gv.numpy(), rtol=1e-13)


def test_gaussian_nll_mask_with_broadcast_variance():
    rng = np.random.default_rng(15)
    x, y, var = rng.normal(size=(3, 4)), rng.normal(size=(3, 4)), rng.uniform(0.5, 2.0, (3, 1))
    where = np.ones((3, 4), dtype=bool)
    where[1] = False
    where[0, 2] = False
    loss = mlo.get("gaussian_nll")
    value, grads = loss.value_and_grad(x, y, var, where=where)
    per = ref_gaussian_nll(x, y, var)
    close(value, per[where].mean(), rtol=1e-14)
    gv = np.where(where, 0.5 * (var - (x - y) ** 2) / var**2, 0.0).sum(-1, keepdims=True) / where.sum()
    close(grads["var"], gv, rtol=1e-13)
    assert grads["var"][1, 0] == 0.0 and np.all(grads["input"][1] == 0.0)


# --------------------------------------------------------------------------
# other array libraries, jax.jit, inputs never modified


BACKEND_CASES = [(c, "array_api_strict") for c in CASES] + [
    (c, b) for b in ("jax", "torch", "mlx") for c in CASES if c[0] in ("kl_div-log_target", "js_divergence",
                                                                          "gaussian_nll-rowvar", "poisson_nll-full")]


@pytest.mark.parametrize("case, backend", BACKEND_CASES, ids=[f"{c[0]}-{b}" for c, b in BACKEND_CASES])
def test_backends_match_references(case, backend):
    from conftest import installed, native, to_numpy

    if not installed(backend):
        pytest.skip(f"{backend} is not installed")
    name, options, arrays = _case(case, 16)
    converted = {k: native(backend, v, "float64") for k, v in arrays.items()}
    value, grads = mlo.get(name, reduction="sum", **options).value_and_grad(**converted)
    assert type(value) is type(converted[mlo.spec(name).inputs[0]])
    close(to_numpy(value), np.sum(_ref(name, options, arrays)), rtol=1e-13)
    for key, g in grads.items():
        assert tuple(g.shape) == np.shape(arrays[key])
        num = numeric_grad(lambda a: float(np.sum(_ref(name, options, a))), arrays, key)
        close(to_numpy(g), num, rtol=1e-7, atol=1e-8)


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_jax_jit_traces(case):
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)
    name, options, arrays = _case(case, 17)
    loss = mlo.get(name, reduction="sum", **options)
    expected_value, expected = loss.value_and_grad(**arrays)
    value, grads = jax.jit(loss.value_and_grad)(**{k: jax.numpy.asarray(v) for k, v in arrays.items()})
    close(value, expected_value, rtol=1e-13)
    for key in expected:
        close(grads[key], expected[key], rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_inputs_never_modified(case):
    name, options, arrays = _case(case, 18)
    libs = ("numpy", "torch") if torch is not None else ("numpy",)
    for lib in libs:
        given = arrays if lib == "numpy" else {k: torch.tensor(v) for k, v in arrays.items()}
        before = {k: np.array(v, copy=True) for k, v in arrays.items()}
        loss = mlo.get(name, reduction="none", **options)
        out = loss(**given)
        loss.value_and_grad(**given)
        ct = np.ones(tuple(out.shape)) if lib == "numpy" else torch.ones(tuple(out.shape), dtype=torch.float64)
        loss.vjp(ct, **given)
        for k, v in given.items():
            np.testing.assert_array_equal(np.asarray(v), before[k])


# --------------------------------------------------------------------------
# bad input: clear errors that name the argument and show what was received


def test_shape_errors():
    a, b = np.full((2, 3), 1 / 3), np.full((2, 4), 0.25)
    for name in ("kl_div", "kl_divergence", "js_divergence", "generalized_kl", "gaussian_kl", "poisson_nll"):
        with pytest.raises(ValueError, match=r"must have the same shape; got \(2, 3\) and \(2, 4\)"):
            mlo.get(name)(a, b)
    with pytest.raises(ValueError, match=r"at least 1 dimension"):
        mlo.get("js_divergence")(np.array(0.5), np.array(0.5))
    x = np.zeros((4, 3))
    for bad in ((3,), (4, 2), (1, 1), (4, 3, 1), (3, 4)):
        with pytest.raises(ValueError, match=rf"`var` of shape {re_shape(bad)} does not fit `input` of shape \(4, 3\)"):
            mlo.get("gaussian_nll")(x, x, np.ones(bad))


def re_shape(shape):
    return str(tuple(shape)).replace("(", r"\(").replace(")", r"\)")


def test_value_errors():
    p = np.array([[0.5, 0.5], [0.2, 0.8]])
    bad = np.array([[0.5, 0.5], [-0.1, 1.1]])
    for name in ("kl_divergence", "js_divergence"):
        with pytest.raises(ValueError, match=r"`p` must be probabilities in \[0, 1\]; got a value of -0.1"):
            mlo.get(name)(bad, p)
        with pytest.raises(ValueError, match=r"`q` must be probabilities in \[0, 1\]; got a value of 1.5"):
            mlo.get(name)(p, np.array([[0.5, 0.5], [1.5, 0.0]]))
    with pytest.raises(ValueError, match=r"`target` must be non-negative.*got a value of -0.1"):
        mlo.get("kl_div")(np.log(p), bad)
    mlo.get("kl_div", log_target=True)(np.log(p), np.log(p) - 1.0)  # negative log-targets are fine
    with pytest.raises(ValueError, match=r"`target` must be non-negative; got a value of -0.1"):
        mlo.get("generalized_kl")(p, bad)
    with pytest.raises(ValueError, match=r"`target` must be non-negative \(Poisson counts\); got a value of -1"):
        mlo.get("poisson_nll")(p, np.array([[1, 2], [-1, 0]]))
    with pytest.raises(ValueError, match=r"`input` must be non-negative rates with log_input=False; got a value of -0.1"):
        mlo.get("poisson_nll", log_input=False)(bad, p)
    mlo.get("poisson_nll")(bad, p)  # log-rates may be negative
    with pytest.raises(ValueError, match=r"`var` must be non-negative \(variances\); got a value of -0.1"):
        mlo.get("gaussian_nll")(p, p, bad)
    with pytest.raises(TypeError, match=r"`target` must be a real, integer or boolean array"):
        mlo.get("poisson_nll")(p, np.array([[1 + 1j, 2], [3, 4]]))
    with pytest.raises(TypeError, match=r"`input` must be a real floating-point array; got dtype int64"):
        mlo.get("kl_div")(np.array([[1, 2]]), p[:1])


def test_option_errors():
    with pytest.raises(TypeError, match=r"`log_target` must be True or False; got 1"):
        mlo.get("kl_div", log_target=1)
    with pytest.raises(TypeError, match=r"`full` must be True or False; got 'yes'"):
        mlo.get("poisson_nll", full="yes")
    with pytest.raises(ValueError, match=r"`eps` must lie in \(0.0, 1.0\); got 0"):
        mlo.get("kl_divergence", eps=0)
    with pytest.raises(ValueError, match=r"`eps` must lie in \(0.0, inf\); got -1e-06"):
        mlo.get("gaussian_nll", eps=-1e-6)
    with pytest.raises(ValueError, match=r"`eps` must lie in \[0.0, inf\); got -1"):
        mlo.get("poisson_nll", eps=-1)
    with pytest.raises(TypeError, match=r"unknown option `log_targets`. Did you mean log_target"):
        mlo.get("kl_div", log_targets=True)


def test_value_checks_are_skipped_under_tracing():
    jax = pytest.importorskip("jax")
    p = jax.numpy.asarray([[0.5, 0.5]])
    # a negative probability is not checked while jax traces (no concrete values); the loss still runs
    out = jax.jit(mlo.get("js_divergence"))(p, jax.numpy.asarray([[-0.5, 1.5]]))
    assert out.shape == ()
    with pytest.raises(ValueError, match="`q` must be probabilities"):
        mlo.get("js_divergence")(p, jax.numpy.asarray([[-0.5, 1.5]]))


@pytest.mark.parametrize("log_target", [False, True])
def test_kl_div_fused_path_leaves_read_only_inputs_and_cotangent(log_target):
    """The pullback scales buffers of its own in place: inputs and the cotangent stay as they were."""
    rng = np.random.default_rng(7)
    x, p = np.log(_dist(rng, (5, 3), floor=0.05)), _dist(rng, (5, 3), floor=0.05)
    t = np.log(p) if log_target else p
    ct = rng.normal(size=(5, 3))
    arrays = (x, t, ct)
    copies = [a.copy() for a in arrays]
    for a in arrays:
        a.setflags(write=False)
    loss = mlo.get("kl_div", reduction="none", log_target=log_target)
    grads = loss.vjp(ct, x, t)
    _, mean_grads = mlo.get("kl_div", log_target=log_target).value_and_grad(x, t)
    d_input, d_target = -p, (np.log(p) + 1.0 - x) * (p if log_target else 1.0)  # d/dt of p log p - p x
    close(grads["input"], ct * d_input)
    close(grads["target"], ct * d_target)
    close(mean_grads["input"], d_input / p.size)
    close(mean_grads["target"], d_target / p.size)
    for g in (*grads.values(), *mean_grads.values()):
        assert not any(np.shares_memory(g, a) for a in arrays)
    for a, c in zip(arrays, copies):
        np.testing.assert_array_equal(a, c)
