"""Margin classification losses against independent references.

multi_margin and multilabel_margin against torch.nn.functional (values and
autograd, many shapes and options); categorical_hinge against Keras's formula
and capsule_margin against Sabour et al.'s formula, both written here in NumPy;
all four against float64 finite differences of those NumPy formulas, and
hand-computed cases. No expected number is produced by the code under test.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import array_type, installed, native, to_numpy

import mithril_losses as mlo

torch = pytest.importorskip("torch")
F = torch.nn.functional

MARGIN = ("multi_margin", "multilabel_margin", "categorical_hinge", "capsule_margin")
REDUCTIONS = ("none", "mean", "sum")


def close(actual, expected, rtol=1e-12, atol=1e-12):
    np.testing.assert_allclose(to_numpy(actual) if not isinstance(actual, (float, int)) else actual,
                               np.asarray(expected, dtype=np.float64), rtol=rtol, atol=atol)


def tt(a, grad=False):
    a = np.asarray(a)
    return torch.tensor(a, dtype=torch.float64 if a.dtype.kind == "f" else None, requires_grad=grad)


# --------------------------------------------------------------------------
# independent NumPy references (unreduced, per sample), written from the formulas


def ref_multi_margin(x, y, weight=None, p=1, margin=1.0):
    """PyTorch's documented formula, one sample and class at a time."""
    x2, y1 = np.atleast_2d(x), np.atleast_1d(y)
    n, c = x2.shape
    out = np.zeros(n)
    for r in range(n):
        w = 1.0 if weight is None else weight[y1[r]]
        for i in range(c):
            if i != y1[r]:
                out[r] += w * max(0.0, margin - x2[r, y1[r]] + x2[r, i]) ** p
    out /= c
    return out if np.ndim(x) == 2 else out[0]


def ref_multilabel_margin(x, y):
    """PyTorch's loop: the labels up to the first negative entry; each listed entry counts (duplicates too)."""
    x2, y2 = np.atleast_2d(x), np.atleast_2d(y)
    n, c = x2.shape
    out = np.zeros(n)
    for r in range(n):
        labels = []
        for v in y2[r]:
            if v < 0:
                break
            labels.append(int(v))
        for j in labels:
            for i in range(c):
                if i not in labels:
                    out[r] += max(0.0, 1.0 - (x2[r, j] - x2[r, i]))
    out /= c
    return out if np.ndim(x) == 2 else out[0]


def dense(target, c):
    t = np.asarray(target)
    return np.eye(c)[t] if t.dtype.kind in "iu" else t


def ref_categorical_hinge(x, y):
    """Keras: pos = sum(y x), neg = max((1 - y) x), max(0, neg - pos + 1)."""
    y = dense(y, x.shape[-1])
    pos = np.sum(y * x, axis=-1)
    neg = np.max((1.0 - y) * x, axis=-1)
    return np.maximum(neg - pos + 1.0, 0.0)


def ref_capsule_margin(v, t, m_plus=0.9, m_minus=0.1, lambda_=0.5):
    """Sabour et al. (2017), eq. 4, summed over the classes."""
    t = dense(t, v.shape[-1])
    present = t * np.maximum(0.0, m_plus - v) ** 2
    absent = lambda_ * (1.0 - t) * np.maximum(0.0, v - m_minus) ** 2
    return np.sum(present + absent, axis=-1)


REFS = {"multi_margin": ref_multi_margin, "multilabel_margin": ref_multilabel_margin,
        "categorical_hinge": ref_categorical_hinge, "capsule_margin": ref_capsule_margin}


def ref(name, arrays, options):
    return REFS[name](**arrays_for_ref(name, arrays), **options)


def arrays_for_ref(name, a):
    keys = {"multi_margin": ("x", "y", "weight"), "multilabel_margin": ("x", "y"),
            "categorical_hinge": ("x", "y"), "capsule_margin": ("v", "t")}[name]
    return dict(zip(keys, (a.get("input"), a.get("target"), a.get("weight"))))


def numeric_grad(f, x, h=1e-5):
    """4th-order central differences of the scalar f(x), entry by entry."""
    g = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        vals = []
        for s in (2.0, 1.0, -1.0, -2.0):
            moved = x.copy()
            moved[i] += s * h
            vals.append(f(moved))
        g[i] = (-vals[0] + 8.0 * vals[1] - 8.0 * vals[2] + vals[3]) / (12.0 * h)
    return g


# --------------------------------------------------------------------------
# inputs away from the kinks (drawn here, not by the specs' samplers)


def _redraw(rng, draw, bad):
    v = draw()
    for _ in range(2000):
        if not bad(v):
            return v
        v = draw()
    raise AssertionError("could not draw away from the kinks")


def mm_inputs(rng, shape, margin=1.0, weighted=False):
    c = shape[-1]
    y = rng.integers(0, c, shape[:-1])
    x = _redraw(rng, lambda: rng.uniform(-2.5, 2.5, shape),
                lambda v: np.any(np.abs(margin - np.take_along_axis(v, y[..., None], -1) + v) < 0.02))
    out = {"input": x, "target": np.asarray(y)}
    if weighted:
        out["weight"] = rng.uniform(0.2, 3.0, c)
    return out


def ml_targets(rng, shape):
    """Rows listing 0..C classes (duplicates sometimes), ended by -1 unless full, then ignored entries."""
    c = shape[-1]
    rows = []
    for r in range(int(np.prod(shape[:-1], dtype=int))):
        k = int(rng.integers(0, c + 1))
        listed = list(rng.permutation(c)[:k])
        if 1 < k < c and r % 2:
            listed[-1] = listed[0]
        row = listed + ([-1] if k < c else [])
        row += list(rng.integers(-1, c, c - len(row)))
        rows.append(row)
    return np.array(rows, dtype=np.int64).reshape(shape)


def ml_inputs(rng, shape):
    y = ml_targets(rng, shape)

    def bad(v):
        d = np.abs(1.0 - v[..., :, None] + v[..., None, :])
        return np.any(d < 0.02)

    return {"input": _redraw(rng, lambda: rng.uniform(-1.0, 1.0, shape) * 1.7, bad), "target": y}


def ch_inputs(rng, shape, form):
    c = shape[-1]
    if form == "index":
        y = rng.integers(0, c, shape[:-1])
    elif form == "onehot":
        y = np.eye(c)[rng.integers(0, c, shape[:-1])]
    else:
        y = rng.dirichlet(np.ones(c), shape[:-1])
    yd = dense(y, c)

    def bad(v):
        rest = np.sort((1.0 - yd) * v, axis=-1)
        hinge = rest[..., -1] - np.sum(yd * v, axis=-1) + 1.0
        return np.any(np.abs(hinge) < 0.02) or np.any(rest[..., -1] - rest[..., -2] < 0.02)

    return {"input": _redraw(rng, lambda: rng.normal(0.0, 1.5, shape), bad), "target": np.asarray(y)}


def cm_inputs(rng, shape, form, m_plus=0.9, m_minus=0.1):
    c = shape[-1]
    v = _redraw(rng, lambda: rng.uniform(0.0, 1.0, shape),
                lambda v: np.any(np.abs(v - m_plus) < 0.02) or np.any(np.abs(v - m_minus) < 0.02))
    if form == "index":
        t = rng.integers(0, c, shape[:-1])
    elif form == "onehot":
        t = np.eye(c)[rng.integers(0, c, shape[:-1])]
    else:
        t = (rng.random(shape) < 0.4).astype(np.float64)
    return {"input": v, "target": np.asarray(t)}


# (id, loss, options, maker(rng))
CASES = [
    ("mm-2d", "multi_margin", {}, lambda r: mm_inputs(r, (4, 5))),
    ("mm-1d-p2", "multi_margin", {"p": 2}, lambda r: mm_inputs(r, (6,))),
    ("mm-w-m0.4", "multi_margin", {"margin": 0.4}, lambda r: mm_inputs(r, (3, 6), 0.4, True)),
    ("mm-w-p2-m2", "multi_margin", {"p": 2, "margin": 2.0}, lambda r: mm_inputs(r, (5, 4), 2.0, True)),
    ("ml-2d", "multilabel_margin", {}, lambda r: ml_inputs(r, (5, 4))),
    ("ml-1d", "multilabel_margin", {}, lambda r: ml_inputs(r, (6,))),
    ("ch-index", "categorical_hinge", {}, lambda r: ch_inputs(r, (5, 4), "index")),
    ("ch-onehot-3d", "categorical_hinge", {}, lambda r: ch_inputs(r, (2, 3, 4), "onehot")),
    ("ch-probs", "categorical_hinge", {}, lambda r: ch_inputs(r, (4, 5), "probs")),
    ("ch-1d", "categorical_hinge", {}, lambda r: ch_inputs(r, (5,), "index")),
    ("cm-index", "capsule_margin", {}, lambda r: cm_inputs(r, (4, 5), "index")),
    ("cm-onehot", "capsule_margin", {}, lambda r: cm_inputs(r, (2, 3, 4), "onehot")),
    ("cm-multihot-opts", "capsule_margin", {"m_plus": 0.75, "m_minus": 0.3, "lambda_": 0.2},
     lambda r: cm_inputs(r, (4, 6), "multi", 0.75, 0.3)),
]
IDS = [c[0] for c in CASES]


# --------------------------------------------------------------------------
# names, options, registration


def test_registered_in_the_classification_family():
    assert set(MARGIN) <= set(mlo.available(family="classification"))
    for name in MARGIN:
        loss = mlo.get(name)
        assert loss.family == "classification" and loss.differentiable == ("input",)
    assert mlo.get("multi_margin").inputs == ("input", "target", "weight")


@pytest.mark.parametrize("alias, name", [
    ("multi_margin_loss", "multi_margin"), ("multilabel_margin_loss", "multilabel_margin"),
    ("crammer_singer", "categorical_hinge"), ("capsule_margin_loss", "capsule_margin"),
])
def test_aliases(alias, name):
    assert mlo.get(alias).name == name


def test_functional_names():
    rng = np.random.default_rng(0)
    a = mm_inputs(rng, (3, 4), weighted=True)
    x, y, w = a["input"], a["target"], a["weight"]
    tx = tt(x, True)
    expected = F.multi_margin_loss(tx, tt(y), p=2, margin=0.5, weight=tt(w), reduction="sum")
    (g,) = torch.autograd.grad(expected, tx)
    close(mlo.multi_margin_loss(x, y, p=2, margin=0.5, weight=w, reduction="sum"), expected.item())
    close(mlo.multi_margin_loss_gradient(x, y, p=2, margin=0.5, weight=w, reduction="sum"), g.numpy())
    b = ml_inputs(rng, (3, 4))
    close(mlo.multilabel_margin_loss(b["input"], b["target"]),
          F.multilabel_margin_loss(tt(b["input"]), tt(b["target"])).item())
    c = ch_inputs(rng, (3, 4), "index")
    close(mlo.categorical_hinge_loss(c["input"], c["target"]), np.mean(ref_categorical_hinge(c["input"], c["target"])))
    d = cm_inputs(rng, (3, 4), "index")
    close(mlo.capsule_margin_loss(d["input"], d["target"], lambda_=0.25, reduction="sum"),
          np.sum(ref_capsule_margin(d["input"], d["target"], lambda_=0.25)))
    assert callable(mlo.categorical_hinge_loss_gradient) and callable(mlo.capsule_margin_loss_gradient)


def test_option_defaults_and_config_round_trip():
    assert mlo.get("multi_margin").options == {"p": 1, "margin": 1.0}
    assert mlo.get("capsule_margin").options == {"m_plus": 0.9, "m_minus": 0.1, "lambda_": 0.5}
    assert mlo.get("multilabel_margin").options == {} and mlo.get("categorical_hinge").options == {}
    loss = mlo.get("capsule_margin", lambda_=0.3, m_plus=0.8, reduction="sum")
    assert mlo.from_config(loss.to_config()).to_config() == loss.to_config()


# --------------------------------------------------------------------------
# PyTorch parity (float64)


def _torch_parity(fn, name, arrays, options, reduction, rng, rtol=1e-12):
    loss = mlo.get(name, reduction=reduction, **options)
    t = {k: tt(v, k == "input") for k, v in arrays.items()}
    expected = fn(**t, **options, reduction=reduction)
    ct = rng.normal(size=tuple(expected.shape))
    (g,) = torch.autograd.grad(expected, t["input"], tt(ct))
    value = loss(**arrays)
    assert np.shape(value) == tuple(expected.shape)
    close(value, expected.detach().numpy(), rtol, 1e-13)
    grads = loss.vjp(ct, **arrays)
    assert set(grads) == {"input"}
    close(grads["input"], g.numpy(), rtol, 1e-13)


@pytest.mark.parametrize("shape", [(5,), (4, 5), (7, 3), (4, 1)], ids=["1d", "4x5", "7x3", "c1"])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("options", [{}, {"p": 2}, {"margin": 0.3}, {"p": 2, "margin": 2.5}, {"margin": -0.5}],
                         ids=["default", "p2", "m0.3", "p2-m2.5", "m-0.5"])
@pytest.mark.parametrize("weighted", [False, True], ids=["plain", "weight"])
def test_multi_margin_torch(shape, reduction, options, weighted):
    rng = np.random.default_rng([len(shape), shape[-1], REDUCTIONS.index(reduction), int(weighted)])
    arrays = mm_inputs(rng, shape, options.get("margin", 1.0), weighted)
    _torch_parity(F.multi_margin_loss, "multi_margin", arrays, options, reduction, rng)


@pytest.mark.parametrize("shape", [(6,), (5, 4), (3, 7), (2, 1)], ids=["1d", "5x4", "3x7", "c1"])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("seed", [0, 1])
def test_multilabel_margin_torch(shape, reduction, seed):
    rng = np.random.default_rng(seed)
    _torch_parity(F.multilabel_margin_loss, "multilabel_margin", ml_inputs(rng, shape), {}, reduction, rng)


@pytest.mark.parametrize("target", [
    [[3, 0, -1, 1]],       # later entries ignored
    [[3, 3, -1, 2]],       # a duplicate counts twice
    [[-1, 0, 1, 2]],       # nothing listed: 0
    [[0, 1, 2, 3]],        # everything listed: 0
    [[2, 0, 1, -1]],
    [[1, -1, -1, -1]],
], ids=["ignored", "duplicate", "empty", "full", "three", "one"])
def test_multilabel_margin_target_lists_torch(target):
    x, t = np.array([[0.1, 0.2, 0.4, 0.8]]), np.array(target)
    rng = np.random.default_rng(3)
    _torch_parity(F.multilabel_margin_loss, "multilabel_margin", {"input": x, "target": t}, {}, "none", rng)
    close(mlo.get("multilabel_margin", reduction="none")(x, t), ref_multilabel_margin(x, t))


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_margin_losses_torch_at_kinks(reduction):
    # dyadic scores that put pairs exactly on the hinge: the subgradient there is 0, as PyTorch's
    x = np.array([[1.0, 0.0, 0.5, -0.25], [0.5, 1.5, 0.5, 0.0], [2.0, 1.0, 1.0, 1.0]])
    y = np.array([0, 1, 0])
    rng = np.random.default_rng(4)
    for options in ({}, {"p": 2}, {"margin": 0.5}):
        _torch_parity(F.multi_margin_loss, "multi_margin", {"input": x, "target": y}, options, reduction, rng)
    t = np.array([[0, -1, 0, 0], [1, 2, -1, 3], [0, 3, -1, -1]])
    _torch_parity(F.multilabel_margin_loss, "multilabel_margin", {"input": x, "target": t}, {}, reduction, rng)


def test_multi_margin_weight_placement_by_hand():
    # PyTorch scales each term by w[y] after the power: sum_{i != y} w_y max(0, 1 - x_y + x_i)^p / C
    x = np.array([[0.1, 0.5, -0.3]])
    y = np.array([0])
    w = np.array([2.0, 3.0, 5.0])
    # z = 1 - 0.1 + (0.5, -0.3) = (1.4, 0.6)
    close(mlo.get("multi_margin", reduction="none")(x, y, weight=w), [2.0 * (1.4 + 0.6) / 3])
    close(mlo.get("multi_margin", reduction="none", p=2)(x, y, weight=w), [2.0 * (1.4**2 + 0.6**2) / 3])
    g = mlo.get("multi_margin", reduction="sum", p=2).grad(x, y, weight=w)["input"]
    close(g, [[-2.0 * 2 * (1.4 + 0.6) / 3, 2.0 * 2 * 1.4 / 3, 2.0 * 2 * 0.6 / 3]])
    # the mean is a plain mean over samples (the class weights do not divide it), as PyTorch's
    x2, y2 = np.vstack([x, [[0.0, 2.0, 0.0]]]), np.array([0, 1])
    per = mlo.get("multi_margin", reduction="none")(x2, y2, weight=w)
    close(mlo.get("multi_margin")(x2, y2, weight=w), np.mean(per))
    close(per[1], 3.0 * 0.0)  # 1 - 2 + 0 < 0 for both others


@pytest.mark.parametrize("dtype", [torch.int32, torch.int64, torch.uint8])
def test_torch_tensors_and_integer_dtypes(dtype):
    rng = np.random.default_rng(5)
    a = mm_inputs(rng, (3, 4), weighted=True)
    x = torch.tensor(a["input"], requires_grad=True)
    y = torch.tensor(a["target"]).to(dtype)
    w = torch.tensor(a["weight"])
    expected = F.multi_margin_loss(x, y.long(), weight=w)
    (g,) = torch.autograd.grad(expected, x)
    loss = mlo.get("multi_margin")
    value, grads = loss.value_and_grad(x.detach(), y, weight=w)
    assert isinstance(value, torch.Tensor) and isinstance(grads["input"], torch.Tensor)
    close(value, expected.item())
    close(grads["input"], g.numpy())
    # the value function differentiates with torch's own autograd too
    (auto,) = torch.autograd.grad(loss(x, y, weight=w), x)
    close(auto, g.numpy())
    b = ml_inputs(rng, (3, 4))
    close(mlo.get("multilabel_margin")(torch.tensor(b["input"]), torch.tensor(b["target"]).to(torch.int32)),
          np.mean(ref_multilabel_margin(b["input"], b["target"])))
    for name, maker in (("categorical_hinge", ch_inputs), ("capsule_margin", cm_inputs)):
        c = maker(rng, (3, 4), "index")
        close(mlo.get(name)(torch.tensor(c["input"]), torch.tensor(c["target"]).to(dtype)),
              np.mean(ref(name, c, {})))


# --------------------------------------------------------------------------
# NumPy formulas and float64 finite differences


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_value_matches_reference(case):
    _, name, options, maker = case
    arrays = maker(np.random.default_rng(11))
    expected = ref(name, arrays, options)
    out = mlo.get(name, reduction="none", **options)(**arrays)
    assert np.shape(out) == np.shape(expected)
    close(out, expected, 1e-12, 1e-13)
    close(mlo.get(name, reduction="sum", **options)(**arrays), np.sum(expected))
    close(mlo.get(name, **options)(**arrays), np.mean(expected))


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_vjp_matches_finite_differences(case):
    _, name, options, maker = case
    arrays = maker(np.random.default_rng(12))
    ct = np.random.default_rng(13).normal(size=np.shape(ref(name, arrays, options)))
    g = mlo.get(name, reduction="none", **options).vjp(ct, **arrays)["input"]
    assert g.shape == arrays["input"].shape and g.dtype == np.float64
    num = numeric_grad(lambda v: float(np.sum(ct * ref(name, {**arrays, "input": v}, options))), arrays["input"])
    close(g, num, 1e-7, 1e-8)
    value, grads = mlo.get(name, **options).value_and_grad(**arrays)
    close(value, np.mean(ref(name, arrays, options)))
    num = numeric_grad(lambda v: float(np.mean(ref(name, {**arrays, "input": v}, options))), arrays["input"])
    close(grads["input"], num, 1e-7, 1e-8)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_float32_close_to_float64_reference(case):
    _, name, options, maker = case
    arrays = maker(np.random.default_rng(14))
    single = {k: v.astype(np.float32) if v.dtype.kind == "f" else v for k, v in arrays.items()}
    exact = {k: v.astype(np.float64) if v.dtype.kind == "f" else v for k, v in single.items()}
    loss = mlo.get(name, reduction="none", **options)
    out = loss(**single)
    assert out.dtype == np.float32
    close(out, ref(name, exact, options), 2e-6, 2e-6)
    ct = np.random.default_rng(15).normal(size=np.shape(out))
    g = loss.vjp(ct.astype(np.float32), **single)["input"]
    assert g.dtype == np.float32
    num = numeric_grad(lambda v: float(np.sum(ct * ref(name, {**exact, "input": v}, options))), exact["input"])
    close(g, num, 2e-5, 2e-5)


JAX_EAGER = ("mm-1d-p2", "ch-index", "cm-onehot")  # jax compiles each eager op: the rest run under jit below
BACKEND_CASES = [(c, b) for c in CASES for b in ("jax", "torch", "mlx", "array_api_strict")
                 if b != "jax" or c[0] in JAX_EAGER]


@pytest.mark.parametrize("case, backend", BACKEND_CASES, ids=[f"{c[0]}-{b}" for c, b in BACKEND_CASES])
def test_backends_match_reference(case, backend):
    """Every backend (array-api-strict proves the code stays in the standard) gives the reference numbers."""
    if not installed(backend):
        pytest.skip(f"{backend} is not installed")
    _, name, options, maker = case
    arrays = maker(np.random.default_rng(16))
    ct = np.random.default_rng(17).normal(size=np.shape(ref(name, arrays, options)))
    loss = mlo.get(name, reduction="none", **options)
    x = {k: native(backend, v) for k, v in arrays.items()}
    out = loss(**x)
    assert isinstance(out, array_type(backend))
    close(out, ref(name, arrays, options), 1e-12, 1e-13)
    g = loss.vjp(native(backend, ct), **x)["input"]
    num = numeric_grad(lambda v: float(np.sum(ct * ref(name, {**arrays, "input": v}, options))), arrays["input"])
    close(g, num, 1e-7, 1e-8)


@pytest.mark.parametrize("case", [c for c in CASES if c[0] in ("mm-w-p2-m2", "ml-2d", "ch-probs", "cm-index")],
                         ids=lambda c: c[0])
def test_jax_jit_and_autodiff(case):
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)
    _, name, options, maker = case
    arrays = maker(np.random.default_rng(18))
    loss = mlo.get(name, **options)
    j = {k: jax.numpy.asarray(v) for k, v in arrays.items()}
    value, grads = jax.jit(lambda d: loss.value_and_grad(**d))(j)
    close(value, np.mean(ref(name, arrays, options)))
    num = numeric_grad(lambda v: float(np.mean(ref(name, {**arrays, "input": v}, options))), arrays["input"])
    close(grads["input"], num, 1e-7, 1e-8)
    # jax's own autodiff through the value function agrees with the hand-derived gradient
    auto = jax.grad(lambda v: loss(**{**j, "input": v}))(j["input"])
    close(auto, grads["input"], 1e-12, 1e-13)


def test_validation_is_skipped_under_tracing():
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)
    jnp = jax.numpy
    x = jnp.asarray([[0.5, 0.1, 0.2]])
    # the label range needs concrete values: under jit the call traces instead of raising
    out = jax.jit(lambda a, t: mlo.get("multi_margin")(a, t))(x, jnp.asarray([1]))
    close(out, (1 - 0.1 + 0.5 + 1 - 0.1 + 0.2) / 3)
    out = jax.jit(lambda a, t: mlo.get("multilabel_margin")(a, t))(x, jnp.asarray([[2, -1, 0]]))
    close(out, (1 - 0.2 + 0.5 + 1 - 0.2 + 0.1) / 3)
    assert jax.jit(lambda a, t: mlo.get("multi_margin")(a, t))(x, jnp.asarray([7])).shape == ()
    assert jax.jit(lambda a, t: mlo.get("capsule_margin")(a, t))(x, jnp.asarray([9])).shape == ()


# --------------------------------------------------------------------------
# categorical_hinge and capsule_margin by hand


def test_categorical_hinge_by_hand_keras_not_optax():
    loss = mlo.get("categorical_hinge", reduction="none")
    x = np.array([[2.0, 0.5, -1.0], [-5.0, -3.0, -4.0], [0.2, 0.9, 0.4]])
    y = np.array([0, 0, 1])
    # row 0: neg = max(0, 0.5, -1) = 0.5, 1 + 0.5 - 2 < 0 -> 0
    # row 1: neg = max(0 (the target's own entry), -3, -4) = 0 -> 1 + 0 + 5 = 6 (optax's multiclass hinge gives 3)
    # row 2: neg = max(0.2, 0, 0.4) = 0.4 -> 1 + 0.4 - 0.9 = 0.5
    close(loss(x, y), [0.0, 6.0, 0.5])
    close(loss(x, np.eye(3)[y]), [0.0, 6.0, 0.5])
    g = loss.vjp(np.array([1.0, 2.0, 3.0]), x, y)["input"]
    # row 1: the maximum is the target's constant 0: only -y; row 2: e_2 - e_1
    close(g, [[0.0, 0.0, 0.0], [-2.0, 0.0, 0.0], [0.0, -3.0, 3.0]])
    close(loss.vjp(np.array([1.0, 2.0, 3.0]), x, np.eye(3)[y])["input"], g)
    # probabilities: pos = 0.5*0.2 + 0.5*0.9 = 0.55, (1 - y) x = (0.1, 0.45, 0.4): neg = 0.45 -> 0.9
    p = np.array([[0.5, 0.5, 0.0]])
    close(loss(x[2:], p), [0.9])
    # d/dx = (1 - y_1) e_1 - y = (-0.5, 0.5 - 0.5, 0)
    close(loss.vjp(np.ones(1), x[2:], p)["input"], [[-0.5, 0.0, 0.0]])


def test_categorical_hinge_optax_where_they_agree():
    optax = pytest.importorskip("optax")
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)
    # with some other score >= 0 the target's own 0 never wins, and Keras's and optax's formulas coincide
    rng = np.random.default_rng(19)
    y = rng.integers(0, 5, 6)
    x = rng.normal(size=(6, 5))
    x[np.arange(6), (y + 1) % 5] = np.abs(x[np.arange(6), (y + 1) % 5]) + 0.1
    expected = optax.losses.multiclass_hinge_loss(jax.numpy.asarray(x), jax.numpy.asarray(y))
    close(mlo.get("categorical_hinge", reduction="none")(x, y), np.asarray(expected))
    auto = jax.grad(lambda s: optax.losses.multiclass_hinge_loss(s, jax.numpy.asarray(y)).sum())(jax.numpy.asarray(x))
    close(mlo.get("categorical_hinge", reduction="sum").grad(x, y)["input"], np.asarray(auto))


def test_capsule_margin_by_hand():
    v = np.array([[0.95, 0.3, 0.05], [0.5, 0.0, 1.0]])
    y = np.array([0, 2])
    loss = mlo.get("capsule_margin", reduction="none")
    # row 0: present 0.95 >= 0.9 -> 0; absent 0.3 -> 0.5 * 0.2^2, 0.05 <= 0.1 -> 0
    # row 1: present 1.0 -> 0; absent 0.5 -> 0.5 * 0.4^2, 0.0 -> 0
    close(loss(v, y), [0.5 * 0.04, 0.5 * 0.16])
    close(loss(v, np.eye(3)[y]), [0.5 * 0.04, 0.5 * 0.16])
    g = loss.vjp(np.array([1.0, 2.0]), v, y)["input"]
    close(g, [[0.0, 2 * 0.5 * 0.2, 0.0], [2.0 * 2 * 0.5 * 0.4, 0.0, 0.0]])
    # a short present capsule: -2 (m+ - v); options
    loss = mlo.get("capsule_margin", reduction="none", m_plus=0.8, m_minus=0.2, lambda_=0.25)
    close(loss(np.array([0.5, 0.6]), np.array(0)), 0.3**2 + 0.25 * 0.4**2)
    close(loss.vjp(np.array(1.0), np.array([0.5, 0.6]), np.array(0))["input"], [-2 * 0.3, 2 * 0.25 * 0.4])
    # multi-hot: two present entities (MultiMNIST)
    t = np.array([1.0, 1.0, 0.0])
    close(mlo.get("capsule_margin", reduction="none")(np.array([0.7, 0.95, 0.6]), t), 0.2**2 + 0.5 * 0.5**2)


# --------------------------------------------------------------------------
# edges


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("big", [1e4, 1e8])
def test_huge_scores(dtype, big):
    x = np.array([[big, -big, 0.0], [-big, big, 0.5 * big]], dtype=dtype)
    y = np.array([0, 2])
    for p in (1, 2):
        loss = mlo.get("multi_margin", reduction="none", p=p)
        tx = torch.tensor(x, requires_grad=True)
        expected = F.multi_margin_loss(tx, torch.tensor(y), p=p, reduction="none")
        (g,) = torch.autograd.grad(expected, tx, torch.ones(2, dtype=tx.dtype))
        with np.errstate(all="raise"):
            v = loss(x, y)
            grads = loss.vjp(np.ones(2, dtype=dtype), x, y)["input"]
        assert v.dtype == dtype and np.all(np.isfinite(v)) and np.all(np.isfinite(grads))
        close(v, expected.detach().numpy(), 1e-6, 0)
        close(grads, g.numpy(), 1e-6, 0)
    t = np.array([[0, -1, 0], [2, 1, -1]])
    with np.errstate(all="raise"):
        v = mlo.get("multilabel_margin", reduction="none")(x, t)
        gm = mlo.get("multilabel_margin", reduction="none").vjp(np.ones(2, dtype=dtype), x, t)["input"]
    close(v, ref_multilabel_margin(x.astype(np.float64), t), 1e-6, 0)
    assert np.all(np.isfinite(gm))
    for target in (y, np.eye(3, dtype=dtype)[y]):
        with np.errstate(all="raise"):
            v = mlo.get("categorical_hinge", reduction="none")(x, target)
            gc = mlo.get("categorical_hinge", reduction="none").vjp(np.ones(2, dtype=dtype), x, target)["input"]
        close(v, ref_categorical_hinge(x.astype(np.float64), y), 1e-6, 0)
        close(gc, [[0.0, 0.0, 0.0], [0.0, 1.0, -1.0]], 0, 0)


def test_masked_classes_at_minus_infinity():
    # a -inf score of another class is never on the hinge: 0 loss and 0 gradient there, as PyTorch
    x = np.array([[0.5, -np.inf, 0.2], [-np.inf, 1.0, 0.7]])
    y = np.array([0, 1])
    tx = torch.tensor(x, requires_grad=True)
    expected = F.multi_margin_loss(tx, torch.tensor(y), reduction="sum")
    (g,) = torch.autograd.grad(expected, tx)
    loss = mlo.get("multi_margin", reduction="sum")
    close(loss(x, y), expected.item())
    close(loss.grad(x, y)["input"], g.numpy())
    ml = mlo.get("multilabel_margin", reduction="sum")
    t = np.array([[0, -1, 0], [1, 2, -1]])
    with np.errstate(invalid="ignore"):  # -inf - -inf on the pairs of an unlisted class with itself, masked out
        close(ml(x, t), np.sum(ref_multilabel_margin(x, t)))
        close(ml.grad(x, t)["input"], [[-1 / 3, 0.0, 1 / 3], [0.0, 0.0, 0.0]])
    # categorical hinge with index targets: the -inf class never is the maximum of (1 - y) x
    ch = mlo.get("categorical_hinge", reduction="none")
    close(ch(x, y), [1 + 0.2 - 0.5, 1 + 0.7 - 1.0])
    close(ch.vjp(np.ones(2), x, y)["input"], [[-1.0, 0.0, 1.0], [0.0, -1.0, 1.0]])


def test_well_classified_is_exactly_zero():
    x = np.array([[3.0, 0.1, -0.2], [0.0, 5.0, 1.0]])
    y = np.array([0, 1])
    for name, t in (("multi_margin", y), ("categorical_hinge", y), ("categorical_hinge", np.eye(3)[y]),
                    ("multilabel_margin", np.array([[0, -1, 2], [1, -1, -1]]))):
        loss = mlo.get(name, reduction="none")
        np.testing.assert_array_equal(loss(x, t), 0.0)
        np.testing.assert_array_equal(loss.vjp(np.ones(2), x, t)["input"], 0.0)
    v = np.array([[1.0, 0.0, 0.1], [0.05, 0.9, 0.0]])  # lengths exactly 0, 1 and at the margins
    loss = mlo.get("capsule_margin", reduction="none")
    np.testing.assert_array_equal(loss(v, y), 0.0)
    np.testing.assert_array_equal(loss.vjp(np.ones(2), v, y)["input"], 0.0)


def test_all_masked_mean_is_zero_with_zero_gradient():
    rng = np.random.default_rng(20)
    for name, arrays in (("multi_margin", mm_inputs(rng, (3, 4))), ("multilabel_margin", ml_inputs(rng, (3, 4))),
                         ("categorical_hinge", ch_inputs(rng, (3, 4), "index")),
                         ("capsule_margin", cm_inputs(rng, (3, 4), "index"))):
        value, grads = mlo.get(name).value_and_grad(**arrays, where=np.zeros(3, dtype=bool))
        assert float(value) == 0.0
        np.testing.assert_array_equal(grads["input"], 0.0)
    # rows that list no class (-1 first) are 0 with zero gradient; PyTorch agrees
    x, t = rng.normal(size=(3, 4)), np.full((3, 4), -1)
    value, grads = mlo.get("multilabel_margin").value_and_grad(x, t)
    assert float(value) == 0.0 == F.multilabel_margin_loss(tt(x), tt(t)).item()
    np.testing.assert_array_equal(grads["input"], 0.0)


def test_engine_weight_and_mask_per_sample():
    rng = np.random.default_rng(21)
    a = cm_inputs(rng, (4, 3), "index")
    w = np.array([1.0, 0.5, 2.0, 0.0])
    m = np.array([True, True, False, True])
    per = ref_capsule_margin(a["input"], a["target"])
    close(mlo.get("capsule_margin")(**a, weight=w, where=m), np.sum((w * per)[m]) / np.sum(w[m]))
    # multi_margin owns `weight` (class weights, PyTorch's): a keyword weight is that input
    b = mm_inputs(rng, (3, 4), weighted=True)
    close(mlo.get("multi_margin", reduction="none")(b["input"], b["target"], weight=b["weight"]),
          ref_multi_margin(b["input"], b["target"], b["weight"]))


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_inputs_not_modified(case):
    _, name, options, maker = case
    arrays = maker(np.random.default_rng(22))
    copies = {k: v.copy() for k, v in arrays.items()}
    for v in arrays.values():
        v.setflags(write=False)
    for reduction in REDUCTIONS:
        loss = mlo.get(name, reduction=reduction, **options)
        out = loss(**arrays)
        ct = np.ones(np.shape(out))
        ct.setflags(write=False)
        value, grads = loss.value_and_grad(**arrays)
        grads2 = loss.vjp(ct, **arrays)
        for g in (grads["input"], grads2["input"]):
            assert not any(np.shares_memory(g, a) for a in arrays.values())
        close(value, out)
    for k, v in arrays.items():
        np.testing.assert_array_equal(v, copies[k])
    t = {k: torch.tensor(v) for k, v in arrays.items()}
    mlo.get(name, **options).value_and_grad(**t)
    for k, v in t.items():
        np.testing.assert_array_equal(v.numpy(), copies[k])


# --------------------------------------------------------------------------
# validation


X = np.zeros((3, 4))


@pytest.mark.parametrize("name, args, error, pattern", [
    ("multi_margin", (X, np.array([0, 4, 1])), ValueError, r"`target`.*\[0, 4\).*got 4"),
    ("multi_margin", (X, np.array([0, -1, 1])), ValueError, r"`target`.*got -1"),
    ("multi_margin", (X, np.array([0.0, 1.0, 1.0])), TypeError, r"`target`.*integer.*float64"),
    ("multi_margin", (X, np.array([0, 1])), ValueError, r"`target`.*\(3,\).*got \(2,\)"),
    ("multi_margin", (X, np.array([0, 1, 2]), np.ones(3)), ValueError, r"`weight`.*\(4,\).*got \(3,\)"),
    ("multi_margin", (np.zeros((2, 3, 4)), np.zeros((2, 3), dtype=int)), ValueError, r"`input`.*\(N, C\).*\(2, 3, 4\)"),
    ("multi_margin", (np.zeros((3, 4), dtype=int), np.array([0, 1, 2])), TypeError, r"`input`.*floating"),
    ("multilabel_margin", (X, np.array([[0, 7, -1, 0]] * 3)), ValueError, r"`target`.*\[0, 4\).*-1.*got 7"),
    ("multilabel_margin", (X, np.array([[0, -2, -1, 0]] * 3)), ValueError, r"`target`.*got -2"),
    ("multilabel_margin", (X, np.zeros((3, 4))), TypeError, r"`target`.*integer"),
    ("multilabel_margin", (X, np.zeros((3, 3), dtype=int)), ValueError, r"`input` and `target`.*\(3, 4\).*\(3, 3\)"),
    ("multilabel_margin", (np.zeros((1, 3, 4)), np.zeros((1, 3, 4), dtype=int)), ValueError, r"`input`"),
    ("categorical_hinge", (X, np.array([0, 1, 9])), ValueError, r"`target`.*got 9"),
    ("categorical_hinge", (X, np.zeros((3, 4), dtype=bool)), TypeError, r"`target`.*bool"),
    ("categorical_hinge", (X, np.zeros(3)), ValueError, r"`target`.*\(3, 4\).*got \(3,\).*integer dtype"),
    ("categorical_hinge", (X, np.zeros((3, 4), dtype=int)), ValueError, r"`target`.*\(3,\).*got \(3, 4\)"),
    ("capsule_margin", (X, np.array([0, -3, 1])), ValueError, r"`target`.*got -3"),
    ("capsule_margin", (X, np.zeros((4, 4))), ValueError, r"`target`.*\(3, 4\).*got \(4, 4\)"),
    ("capsule_margin", (np.zeros(()), np.zeros((), dtype=int)), ValueError, r"`input`.*at least 1"),
])
def test_bad_inputs(name, args, error, pattern):
    with pytest.raises(error, match=pattern):
        mlo.get(name)(*args)
    with pytest.raises(error, match=pattern):
        mlo.get(name).grad(*args)


@pytest.mark.parametrize("name, options, error, pattern", [
    ("multi_margin", {"p": 3}, ValueError, r"`p` must be one of 1, 2; got 3"),
    ("multi_margin", {"p": 1.5}, TypeError, r"`p` must be an integer"),
    ("multi_margin", {"p": True}, TypeError, r"`p`"),
    ("multi_margin", {"margin": "1"}, TypeError, r"`margin`"),
    ("multi_margin", {"margin": float("inf")}, ValueError, r"`margin` must be finite"),
    ("capsule_margin", {"m_plus": 0.0}, ValueError, r"`m_plus`.*got 0.0"),
    ("capsule_margin", {"m_plus": 1.5}, ValueError, r"`m_plus`"),
    ("capsule_margin", {"m_minus": 1.0}, ValueError, r"`m_minus`"),
    ("capsule_margin", {"lambda_": -0.5}, ValueError, r"`lambda_`"),
    ("capsule_margin", {"lambda": 0.5}, TypeError, r"Did you mean lambda_"),
])
def test_bad_options(name, options, error, pattern):
    with pytest.raises(error, match=pattern):
        mlo.get(name, **options)


def test_capsule_margins_in_order_at_get():
    with pytest.raises(ValueError, match=r"`m_minus` must be less than `m_plus`; got m_minus=0.9 and m_plus=0.5"):
        mlo.get("capsule_margin", m_plus=0.5, m_minus=0.9)
    with pytest.raises(ValueError, match=r"got m_minus=0.5 and m_plus=0.5"):
        mlo.from_config({"name": "capsule_margin", "m_plus": 0.5, "m_minus": 0.5})
