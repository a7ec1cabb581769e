"""Softmax classification losses against independent references.

Every expected number comes from outside the code under test: PyTorch (values
and autograd of torch.nn.functional.cross_entropy / nll_loss and of formulas
written here in PyTorch), optax (poly_loss_cross_entropy through jax.vjp), the
Keras formulas written here in NumPy, mpmath at extreme logits, float64 finite
differences of the NumPy formulas, and hand-computed cases.
"""

from __future__ import annotations

import math
import zlib

import numpy as np
import pytest
from scipy.special import log_softmax as np_log_softmax
from scipy.special import softmax as np_softmax

import mithril_losses as mlo

torch = pytest.importorskip("torch")
F = torch.nn.functional

SOFTMAX = ("cross_entropy", "nll", "categorical_cross_entropy", "poly1", "categorical_focal")
KERAS_EPS = 1e-7


def close(actual, expected, rtol=1e-12, atol=1e-12):
    np.testing.assert_allclose(np.asarray(actual, dtype=np.float64), np.asarray(expected, dtype=np.float64),
                               rtol=rtol, atol=atol)


def tt(a, grad=False, dtype=torch.float64):
    a = np.asarray(a)
    return torch.tensor(a, dtype=dtype if a.dtype.kind == "f" else None, requires_grad=grad)


def numeric_grad(f, arrays, name, h=1e-5):
    """4th-order central differences of the scalar f(arrays) with respect to arrays[name], entry by entry."""
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


def seed_of(*case):
    return zlib.crc32(repr(case).encode())


def one_hot(labels, classes):
    return np.eye(classes)[labels]


# --------------------------------------------------------------------------
# independent NumPy formulas (unreduced)


def keras_categorical_crossentropy(p, y, eps=KERAS_EPS):
    """keras.losses.categorical_crossentropy(y, p, from_logits=False), written out."""
    q = p / np.sum(p, axis=-1, keepdims=True)
    q = np.clip(q, eps, 1.0 - eps)
    return -np.sum(y * np.log(q), axis=-1)


def keras_categorical_focal(x, y, gamma=2.0, alpha=0.25, clip=True):
    """keras.losses.categorical_focal_crossentropy(y, x, from_logits=True), written out (``clip`` as Keras)."""
    if not np.issubdtype(np.asarray(y).dtype, np.floating):
        y = one_hot(y, x.shape[-1])
    p = np_softmax(x, axis=-1)
    p = p / np.sum(p, axis=-1, keepdims=True)
    if clip:
        p = np.clip(p, KERAS_EPS, 1.0 - KERAS_EPS)
    a = 1.0 if alpha is None else np.asarray(alpha)
    return np.sum(-y * np.log(p) * a * (1.0 - p) ** gamma, axis=-1)


def poly1_formula(x, y, epsilon=2.0):
    if not np.issubdtype(np.asarray(y).dtype, np.floating):
        y = one_hot(y, x.shape[-1])
    p = np_softmax(x, axis=-1)
    return -np.sum(y * np_log_softmax(x, axis=-1), axis=-1) + epsilon * np.sum(y * (1.0 - p), axis=-1)


# --------------------------------------------------------------------------
# names and registration


def test_registered_in_the_classification_family():
    assert set(SOFTMAX) <= set(mlo.available(family="classification"))
    for name in SOFTMAX:
        assert mlo.get(name).family == "classification"


@pytest.mark.parametrize("alias, name", [
    ("cross_entropy_with_logits", "cross_entropy"), ("nll_loss", "nll"),
    ("cross_entropy_loss", "categorical_cross_entropy"), ("categorical_crossentropy", "categorical_cross_entropy"),
    ("poly_loss_cross_entropy", "poly1"),
    ("categorical_focal_crossentropy", "categorical_focal"), ("categorical_focal_loss", "categorical_focal"),
])
def test_aliases(alias, name):
    assert mlo.get(alias).name == name


def test_inputs_and_differentiable():
    assert mlo.get("cross_entropy").inputs == ("input", "target", "weight")
    assert mlo.get("nll").inputs == ("input", "target", "weight")
    for name in ("cross_entropy", "nll", "poly1", "categorical_focal"):
        assert mlo.get(name).differentiable == ("input",)
    assert mlo.get("categorical_cross_entropy").differentiable == ("input", "target")


def test_options_and_defaults_match_the_libraries():
    assert mlo.get("cross_entropy").to_config() == {"name": "cross_entropy", "reduction": "mean",
                                                    "ignore_index": -100, "label_smoothing": 0.0}
    assert mlo.get("nll").to_config() == {"name": "nll", "reduction": "mean", "ignore_index": -100}
    assert mlo.get("categorical_cross_entropy").options == {"eps": 1e-7}
    assert mlo.get("poly1").options == {"epsilon": 2.0}
    assert mlo.get("categorical_focal").options == {"gamma": 2.0, "alpha": 0.25}
    cfg = mlo.get("categorical_focal", alpha=[0.1, 0.2, 0.7]).to_config()
    assert cfg["alpha"] == [0.1, 0.2, 0.7]
    assert mlo.from_config(cfg).options["alpha"] == (0.1, 0.2, 0.7)


def test_functional_names():
    x = np.array([[0.0, math.log(3.0)]])
    y = np.array([1])
    # PyTorch's and the Mithril guide's names on logits
    close(mlo.cross_entropy(x, y), math.log(4.0 / 3.0))
    close(mlo.cross_entropy_with_logits(x, y), math.log(4.0 / 3.0))
    close(mlo.cross_entropy_gradient(x, y), [[0.25, -0.25]])
    close(mlo.cross_entropy_with_logits_gradient(x, y, label_smoothing=0.0), [[0.25, -0.25]])
    close(mlo.nll_loss(np.log([[0.25, 0.75]]), y), math.log(4.0 / 3.0))
    close(mlo.nll_loss_gradient(np.log([[0.25, 0.75]]), y), [[0.0, -1.0]])
    # the Mithril guide's cross_entropy_loss is on probabilities (softmax outputs), a separate loss
    p, t = np.array([[0.25, 0.75]]), np.array([[0.0, 1.0]])
    close(mlo.cross_entropy_loss(p, t), math.log(4.0 / 3.0))
    close(mlo.categorical_cross_entropy(p, t), math.log(4.0 / 3.0))
    # through the renormalisation q = p / sum(p): g = -y / q = (0, -4/3), dl/dp = g - sum(g q) = g + 1
    close(mlo.cross_entropy_loss_gradient(p, t), [[1.0, -1.0 / 3.0]])
    close(mlo.poly1_loss(x, y), math.log(4.0 / 3.0) + 2.0 * 0.25)
    close(mlo.categorical_focal_loss(x, y, gamma=1.0, alpha=None), 0.25 * math.log(4.0 / 3.0))


# --------------------------------------------------------------------------
# cross_entropy: hand-computed cases


def test_cross_entropy_hand_computed():
    x = np.array([[0.0, math.log(3.0)]])  # p = (1/4, 3/4)
    loss = mlo.get("cross_entropy", reduction="none")
    close(loss(x, np.array([1])), [math.log(4.0 / 3.0)])
    close(loss(x, np.array([0])), [math.log(4.0)])
    close(loss.grad(x, np.array([1]))["input"], [[0.25, -0.25]])
    # label smoothing 0.2 over C = 2: 0.8 (-log p_y) + 0.1 (-log p_0 - log p_1)
    smooth = mlo.get("cross_entropy", reduction="none", label_smoothing=0.2)
    close(smooth(x, np.array([1])), [0.9 * math.log(4.0 / 3.0) + 0.1 * math.log(4.0)])
    close(smooth.grad(x, np.array([1]))["input"], [[0.25 - 0.1, -0.25 + 0.1]])  # p - (0.1, 0.9)
    # probability target (1/2, 1/2)
    close(loss(x, np.array([[0.5, 0.5]])), [0.5 * math.log(4.0) + 0.5 * math.log(4.0 / 3.0)])
    close(loss.grad(x, np.array([[0.5, 0.5]]))["input"], [[-0.25, 0.25]])


def test_cross_entropy_weighted_mean_divides_by_target_weights():
    x = np.array([[0.0, math.log(3.0)], [math.log(3.0), 0.0], [0.0, 0.0]])
    y = np.array([1, 1, -100])
    w = np.array([1.0, 3.0])
    loss = mlo.get("cross_entropy")
    # (3 log(4/3) + 3 log 4) / (3 + 3); the ignored row counts nothing
    close(loss(x, y, w), (math.log(4.0 / 3.0) + math.log(4.0)) / 2.0)
    close(loss(x, y, weight=w), (math.log(4.0 / 3.0) + math.log(4.0)) / 2.0)
    close(loss.grad(x, y, w)["input"], [[1 / 8, -1 / 8], [3 / 8, -3 / 8], [0.0, 0.0]])
    # without weights: the mean is over the two counted rows
    close(mlo.get("cross_entropy")(x, y), (math.log(4.0 / 3.0) + math.log(4.0)) / 2.0)
    close(mlo.get("cross_entropy", reduction="sum")(x, y, w), 3.0 * (math.log(4.0 / 3.0) + math.log(4.0)))


# --------------------------------------------------------------------------
# cross_entropy and nll against PyTorch


def _class_axis(shape):
    return 1 if len(shape) > 1 else 0


def _labels(rng, shape, ignore_index=-100, ignored=0.3):
    axis = _class_axis(shape)
    classes = shape[axis]
    label_shape = tuple(n for i, n in enumerate(shape) if i != axis)
    labels = np.asarray(rng.integers(0, classes, label_shape))
    drop = np.asarray(rng.random(label_shape) < ignored)  # 0-d arrays for an unbatched input, not scalars
    drop.flat[0] = False
    if labels.flat[0] == ignore_index:
        labels.flat[0] = (ignore_index + 1) % classes
    return np.where(drop, ignore_index, labels).astype(np.int64)


def _probabilities(rng, shape):
    t = rng.uniform(0.0, 1.0, shape)
    return t / np.sum(t, axis=_class_axis(shape), keepdims=True)


def _torch_check(name, torch_fn, x, y, w, options, reduction, rng, rtol=1e-12):
    loss = mlo.get(name, reduction=reduction, **options)
    tx = tt(x, grad=True)
    expected = torch_fn(tx, tt(y), weight=None if w is None else tt(w), reduction=reduction, **options)
    ct = rng.normal(size=tuple(expected.shape)) if reduction == "none" else np.ones(())
    (gx,) = torch.autograd.grad(expected, (tx,), tt(ct))
    args = (x, y) if w is None else (x, y, w)
    value = loss(*args)
    assert np.shape(value) == tuple(expected.shape)
    close(value, expected.detach().numpy(), rtol=rtol, atol=1e-14)
    grads = loss.vjp(ct, *args)
    assert set(grads) == {"input"}
    close(grads["input"], gx.numpy(), rtol=rtol, atol=1e-14)
    if reduction != "none":
        value2, grads2 = loss.value_and_grad(*args)
        close(value2, expected.detach().numpy(), rtol=rtol, atol=1e-14)
        close(grads2["input"], gx.numpy(), rtol=rtol, atol=1e-14)


SHAPES = [(5,), (4, 5), (3, 4, 2), (2, 3, 2, 2)]
SHAPE_IDS = ["unbatched", "2d", "3d", "4d"]


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("smoothing", [0.0, 0.2])
@pytest.mark.parametrize("weighted", [False, True], ids=["noweight", "weight"])
@pytest.mark.parametrize("form", ["index", "probabilities"])
@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
def test_cross_entropy_matches_torch(shape, form, weighted, smoothing, reduction):
    rng = np.random.default_rng(seed_of(shape, form, weighted, smoothing, reduction))
    x = rng.normal(0.0, 2.0, shape)
    y = _labels(rng, shape) if form == "index" else _probabilities(rng, shape)
    w = rng.uniform(0.2, 2.0, shape[_class_axis(shape)]) if weighted else None
    _torch_check("cross_entropy", F.cross_entropy, x, y, w, {"label_smoothing": smoothing}, reduction, rng)


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
@pytest.mark.parametrize("shape", [(4, 5), (3, 4, 2)], ids=["2d", "3d"])
def test_cross_entropy_ignore_index_matches_torch(shape, smoothing, reduction):
    rng = np.random.default_rng(7)
    x = rng.normal(0.0, 2.0, shape)
    y = _labels(rng, shape, ignore_index=1)
    assert (y == 1).any()
    w = rng.uniform(0.2, 2.0, shape[1])
    options = {"ignore_index": 1, "label_smoothing": smoothing}
    _torch_check("cross_entropy", F.cross_entropy, x, y, w, options, reduction, rng)
    _torch_check("cross_entropy", F.cross_entropy, x, y, None, options, reduction, rng)


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("ignore_index", [-100, 2])
@pytest.mark.parametrize("weighted", [False, True], ids=["noweight", "weight"])
@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
def test_nll_matches_torch(shape, weighted, ignore_index, reduction):
    rng = np.random.default_rng(seed_of(shape, weighted, ignore_index, reduction))
    x = np_log_softmax(rng.normal(0.0, 2.0, shape), axis=_class_axis(shape))
    y = _labels(rng, shape, ignore_index=ignore_index) if len(shape) > 1 else np.array(3)
    w = rng.uniform(0.2, 2.0, shape[_class_axis(shape)]) if weighted else None
    _torch_check("nll", F.nll_loss, x, y, w, {"ignore_index": ignore_index}, reduction, rng)


def test_cross_entropy_is_nll_of_log_softmax():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(4, 6, 3))
    y = _labels(rng, x.shape)
    w = rng.uniform(0.5, 2.0, 6)
    close(mlo.get("cross_entropy")(x, y, w), mlo.get("nll")(np_log_softmax(x, axis=1), y, w), rtol=1e-13)


# --------------------------------------------------------------------------
# cross_entropy and nll: edges


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("scale", [1e4, 1e6, 1e8])
def test_cross_entropy_huge_logits(dtype, scale):
    x = np.array([[scale, -scale, 0.0], [scale, -scale, 0.0], [-scale, 0.0, scale]], dtype=dtype)
    y = np.array([0, 1, 1])
    loss = mlo.get("cross_entropy", reduction="none")
    value = loss(x, y)
    g = loss.grad(x, y)["input"]
    assert value.dtype == np.dtype(dtype) and g.dtype == np.dtype(dtype)
    assert np.all(np.isfinite(value)) and np.all(np.isfinite(g))
    close(value, [0.0, 2.0 * scale, scale], rtol=1e-7)  # exact: the exp terms vanish below rounding
    close(g, [[0.0, 0.0, 0.0], [1.0, -1.0, 0.0], [0.0, -1.0, 1.0]])
    tx = tt(x, grad=True, dtype=getattr(torch, dtype))
    expected = F.cross_entropy(tx, torch.tensor(y), reduction="none")
    (tg,) = torch.autograd.grad(expected.sum(), tx)
    close(value, expected.detach().numpy(), rtol=1e-7)
    close(g, tg.numpy())
    # label smoothing stays finite: e/C of the mass lands on the losing classes
    smooth = mlo.get("cross_entropy", reduction="none", label_smoothing=0.1)
    expected = F.cross_entropy(tt(x, dtype=getattr(torch, dtype)), torch.tensor(y), reduction="none",
                               label_smoothing=0.1)
    close(smooth(x, y), expected.numpy(), rtol=1e-6)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_cross_entropy_masked_inf_logits(dtype):
    inf = np.inf
    x = np.array([[-inf, 1.0, 2.0, -inf], [0.5, -inf, -1.0, 3.0]], dtype=dtype)
    y = np.array([2, 0])
    loss = mlo.get("cross_entropy", reduction="none")
    value, g = loss(x, y), loss.grad(x, y)["input"]
    # the same as cross entropy over the finite classes alone
    expected = [math.log(math.exp(1.0) + math.exp(2.0)) - 2.0,
                math.log(math.exp(0.5) + math.exp(-1.0) + math.exp(3.0)) - 0.5]
    close(value, expected, rtol=1e-6 if dtype == "float32" else 1e-14)
    assert np.all(np.isfinite(g)) and g[0, 0] == 0 and g[0, 3] == 0 and g[1, 1] == 0
    tx = tt(x, grad=True, dtype=getattr(torch, dtype))
    (tg,) = torch.autograd.grad(F.cross_entropy(tx, torch.tensor(y), reduction="sum"), tx)
    close(g, tg.numpy(), rtol=1e-6 if dtype == "float32" else 1e-14)
    # probability targets with no mass on the masked classes: finite (PyTorch gives NaN: 0 * -inf)
    t = np.array([[0.0, 0.25, 0.75, 0.0], [0.5, 0.0, 0.25, 0.25]], dtype=dtype)
    finite = np.isfinite(x)
    lp = [np_log_softmax(x[i][finite[i]].astype(np.float64)) for i in range(2)]
    expected = [-np.sum(t[i][finite[i]] * lp[i]) for i in range(2)]
    close(loss(x, t), expected, rtol=1e-6 if dtype == "float32" else 1e-14)
    gp = loss.grad(x, t)["input"]
    assert np.all(np.isfinite(gp)) and gp[0, 0] == 0 and gp[1, 1] == 0
    # nll: a -inf log-probability off the target is untouched
    lx = np.array([[-inf, math.log(0.25), math.log(0.75)]], dtype=dtype)
    close(mlo.get("nll", reduction="none")(lx, np.array([2])), [math.log(4.0 / 3.0)], rtol=1e-6)
    close(mlo.get("nll").grad(lx, np.array([2]))["input"], [[0.0, 0.0, -1.0]])


def test_cross_entropy_masked_logits_with_label_smoothing_match_torch():
    # smoothing puts e/C of the mass on a -inf logit: +inf as PyTorch, with PyTorch's finite gradient
    x = np.array([[-np.inf, 1.0, 2.0]])
    y = np.array([2])
    tx = tt(x, grad=True)
    expected = F.cross_entropy(tx, torch.tensor(y), label_smoothing=0.3, reduction="sum")
    (tg,) = torch.autograd.grad(expected, tx)
    loss = mlo.get("cross_entropy", reduction="sum", label_smoothing=0.3)
    assert loss(x, y) == np.inf == expected.item()
    close(loss.grad(x, y)["input"], tg.numpy())


@pytest.mark.parametrize("name", ["cross_entropy", "nll"])
@pytest.mark.parametrize("weighted", [False, True])
def test_all_ignored_mean_is_zero_with_zero_gradient(name, weighted):
    x = np.random.default_rng(0).normal(size=(3, 4, 2))
    y = np.full((3, 2), -100)
    args = (x, y, np.array([1.0, 2.0, 0.5, 1.5])) if weighted else (x, y)
    options = {"label_smoothing": 0.2} if name == "cross_entropy" else {}
    value, grads = mlo.get(name, **options).value_and_grad(*args)
    assert float(value) == 0.0
    assert np.array_equal(grads["input"], np.zeros_like(x))
    assert float(mlo.get(name, reduction="sum", **options)(*args)) == 0.0
    assert np.array_equal(mlo.get(name, reduction="none", **options)(*args), np.zeros((3, 2)))


def test_ignored_labels_never_index_out_of_range():
    # -100 is never used as an index, and a huge ignore_index is fine too
    x = np.random.default_rng(1).normal(size=(2, 3))
    y = np.array([10**9, 1])
    loss = mlo.get("cross_entropy", reduction="none", ignore_index=10**9)
    close(loss(x, y), [0.0, -np_log_softmax(x[1])[1]])


# --------------------------------------------------------------------------
# categorical_cross_entropy (Keras, on probabilities)


def _torch_keras_cce(p, y, eps=KERAS_EPS):
    q = p / p.sum(-1, keepdim=True)
    return -(y * torch.log(torch.clamp(q, eps, 1.0 - eps))).sum(-1)


@pytest.mark.parametrize("eps", [KERAS_EPS, 1e-3])
@pytest.mark.parametrize("shape", [(5,), (4, 5), (2, 3, 4)], ids=["1d", "2d", "3d"])
def test_categorical_cross_entropy_matches_keras_formula_and_torch(shape, eps):
    rng = np.random.default_rng(len(shape))
    p = rng.uniform(0.05, 1.0, shape)  # not normalised: Keras renormalises
    y = rng.dirichlet(np.ones(shape[-1]), size=shape[:-1])
    loss = mlo.get("categorical_cross_entropy", reduction="none", eps=eps)
    close(loss(p, y), keras_categorical_crossentropy(p, y, eps), rtol=1e-13)
    ct = rng.normal(size=shape[:-1])
    tp, ty = tt(p, grad=True), tt(y, grad=True)
    gp, gy = torch.autograd.grad(_torch_keras_cce(tp, ty, eps), (tp, ty), tt(ct))
    grads = loss.vjp(ct, p, y)
    close(grads["input"], gp.numpy(), rtol=1e-12)
    close(grads["target"], gy.numpy(), rtol=1e-12)
    f = lambda a: float(np.sum(ct * keras_categorical_crossentropy(a["input"], a["target"], eps)))  # noqa: E731
    close(grads["input"], numeric_grad(f, {"input": p, "target": y}, "input"), rtol=1e-7, atol=1e-8)
    close(grads["target"], numeric_grad(f, {"input": p, "target": y}, "target"), rtol=1e-7, atol=1e-8)
    mean = mlo.get("categorical_cross_entropy", eps=eps)
    close(mean(p, y), np.mean(keras_categorical_crossentropy(p, y, eps)), rtol=1e-13)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_categorical_cross_entropy_probabilities_exactly_zero_and_one(dtype):
    p = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.5, 0.5, 0.0]], dtype=dtype)
    y = np.array([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.25, 0.75, 0.0]], dtype=dtype)
    loss = mlo.get("categorical_cross_entropy", reduction="none")
    value = loss(p, y)
    grads = loss.vjp(np.ones(3, dtype=dtype), p, y)
    assert np.all(np.isfinite(value)) and all(np.all(np.isfinite(g)) for g in grads.values())
    eps32 = float(np.float32(KERAS_EPS)) if dtype == "float32" else KERAS_EPS
    one32 = float(np.float32(1.0 - KERAS_EPS)) if dtype == "float32" else 1.0 - KERAS_EPS
    close(value, [-math.log(one32), -math.log(eps32), -0.25 * math.log(0.5) - 0.75 * math.log(0.5)], rtol=1e-6)
    tp, ty = tt(p, grad=True, dtype=getattr(torch, dtype)), tt(y, grad=True, dtype=getattr(torch, dtype))
    gp, gy = torch.autograd.grad(_torch_keras_cce(tp, ty).sum(), (tp, ty))
    close(grads["input"], gp.numpy(), rtol=1e-6)
    close(grads["target"], gy.numpy(), rtol=1e-6)
    # one-hot rows are clipped everywhere: no gradient; in the last row the renormalisation moves
    # mass from the clipped class too: g = -y/q = (-1/2, -3/2, 0), dl/dp = g - sum(g q) = g + 1
    assert np.all(grads["input"][:2] == 0)
    close(grads["input"][2], [0.5, -0.5, 1.0], rtol=1e-6)


def test_categorical_cross_entropy_is_not_the_logits_loss():
    x = np.array([[0.0, math.log(3.0)]])
    y = np.array([[0.0, 1.0]])
    assert mlo.get("cross_entropy_loss").name != mlo.get("cross_entropy_with_logits").name
    close(mlo.get("cross_entropy_loss")(np_softmax(x, axis=-1), y), mlo.get("cross_entropy_with_logits")(x, y))


# --------------------------------------------------------------------------
# poly1 against optax


def _optax_poly1(x, y, epsilon):
    jax = pytest.importorskip("jax")
    optax = pytest.importorskip("optax")
    jax.config.update("jax_enable_x64", True)
    labels = jax.numpy.asarray(y if np.issubdtype(np.asarray(y).dtype, np.floating) else one_hot(y, x.shape[-1]))

    def f(logits):
        return optax.losses.poly_loss_cross_entropy(logits, labels, epsilon=epsilon)

    value, pullback = jax.vjp(f, jax.numpy.asarray(x))
    return np.asarray(value), lambda ct: np.asarray(pullback(jax.numpy.asarray(ct))[0])


@pytest.mark.parametrize("shape, form, epsilon", [
    ((4, 5), "index", 2.0), ((4, 5), "probabilities", -1.0), ((4, 5), "unnormalised", 0.5),
    ((5,), "probabilities", 2.0), ((2, 3, 4), "index", 0.5)])
def test_poly1_matches_optax(shape, form, epsilon):
    rng = np.random.default_rng(11)
    x = rng.normal(0.0, 2.0, shape)
    if form == "index":
        y = rng.integers(0, shape[-1], shape[:-1])
    else:
        y = rng.dirichlet(np.ones(shape[-1]), size=shape[:-1]) * (1.7 if form == "unnormalised" else 1.0)
    value, pullback = _optax_poly1(x, y, epsilon)
    loss = mlo.get("poly1", reduction="none", epsilon=epsilon)
    close(loss(x, y), value, rtol=1e-13)
    ct = rng.normal(size=shape[:-1])
    close(loss.vjp(ct, x, y)["input"], pullback(ct), rtol=1e-12, atol=1e-14)
    close(loss(x, y), poly1_formula(x, y, epsilon), rtol=1e-13)


def test_poly1_hand_computed_and_edges():
    x = np.array([[0.0, math.log(3.0)]])
    loss = mlo.get("poly1", reduction="none")
    close(loss(x, np.array([1])), [math.log(4.0 / 3.0) + 2.0 * 0.25])
    close(loss.grad(x, np.array([1]))["input"], [[0.25 * 2.5, -0.25 * 2.5]])  # (p - e_y)(1 + eps p_y)
    # masked -inf logits and huge logits stay finite
    inf = np.inf
    for dtype in ("float32", "float64"):
        xe = np.array([[-inf, 1.0, 2.0], [1e8, -1e8, 0.0]], dtype=dtype)
        v = loss(xe, np.array([2, 1]))
        g = loss.grad(xe, np.array([2, 1]))["input"]
        assert np.all(np.isfinite(v)) and np.all(np.isfinite(g)) and g[0, 0] == 0
        close(v[1], 2e8 + 2.0, rtol=1e-7)
        t = np.array([[0.0, 0.5, 0.5], [0.0, 1.0, 0.0]], dtype=dtype)
        assert np.all(np.isfinite(loss(xe, t))) and np.all(np.isfinite(loss.grad(xe, t)["input"]))


# --------------------------------------------------------------------------
# categorical_focal


def _torch_focal(x, y, gamma, alpha):
    """The focal formula (no clip) in PyTorch, for autograd."""
    p = torch.softmax(x, dim=-1)
    a = 1.0 if alpha is None else torch.as_tensor(alpha, dtype=x.dtype)
    return (-y * torch.log(p) * a * (1.0 - p) ** gamma).sum(-1)


FOCAL_CASES = [
    ({}, "index"), ({}, "probabilities"),
    ({"gamma": 0.5, "alpha": None}, "index"), ({"gamma": 0.5, "alpha": None}, "probabilities"),
    ({"gamma": 0.0, "alpha": 0.7}, "probabilities"), ({"gamma": 3.0, "alpha": 1.0}, "index"),
    ({"gamma": 2.0, "alpha": (0.1, 0.2, 0.3, 0.15, 0.25)}, "index"),
    ({"gamma": 1.5, "alpha": (0.1, 0.2, 0.3, 0.15, 0.25)}, "probabilities"),
]


@pytest.mark.parametrize("shape", [(5,), (4, 5), (2, 3, 5)], ids=["1d", "2d", "3d"])
@pytest.mark.parametrize("options, form", FOCAL_CASES, ids=[f"{f}-{o}" for o, f in FOCAL_CASES])
def test_categorical_focal_matches_keras_formula_and_torch(options, form, shape):
    rng = np.random.default_rng(5)
    x = rng.normal(0.0, 2.0, shape)
    y = rng.integers(0, 5, shape[:-1]) if form == "index" else rng.dirichlet(np.ones(5), size=shape[:-1])
    opts = {"gamma": 2.0, "alpha": 0.25, **options}
    loss = mlo.get("categorical_focal", reduction="none", **options)
    # Keras clips p to [1e-7, 1 - 1e-7]; inactive at these logits
    close(loss(x, y), keras_categorical_focal(x, y, **opts), rtol=1e-12)
    ct = rng.normal(size=shape[:-1])
    ty = tt(y if form == "probabilities" else one_hot(y, 5))
    tx = tt(x, grad=True)
    (tg,) = torch.autograd.grad(_torch_focal(tx, ty, opts["gamma"], opts["alpha"]), tx, tt(ct))
    close(loss.vjp(ct, x, y)["input"], tg.numpy(), rtol=1e-12, atol=1e-15)
    f = lambda a: float(np.sum(ct * keras_categorical_focal(a["input"], y, clip=False, **opts)))  # noqa: E731
    close(loss.vjp(ct, x, y)["input"], numeric_grad(f, {"input": x}, "input"), rtol=1e-7, atol=1e-9)


def test_categorical_focal_gamma_zero_is_weighted_cross_entropy():
    rng = np.random.default_rng(8)
    x = rng.normal(size=(6, 4))
    y = rng.integers(0, 4, 6)
    expected = F.cross_entropy(tt(x), torch.tensor(y), reduction="none").numpy()
    close(mlo.get("categorical_focal", reduction="none", gamma=0.0, alpha=None)(x, y), expected, rtol=1e-13)
    close(mlo.get("categorical_focal", reduction="none", gamma=0.0, alpha=0.3)(x, y), 0.3 * expected, rtol=1e-13)


def _mp_focal(x, y, gamma, alpha):
    """Focal loss of one row in mpmath, 1 - p formed as the other classes' mass (no cancellation)."""
    import mpmath

    e = [mpmath.exp(v) for v in x]
    s = mpmath.fsum(e)
    total = 0
    for c, yc in enumerate(y):
        if yc == 0:
            continue
        q = mpmath.fsum(e[:c] + e[c + 1:]) / s
        total += -yc * alpha[c] * q**gamma * mpmath.log(e[c] / s)
    return total


@pytest.mark.parametrize("gamma", [0.25, 0.5, 2.0])
@pytest.mark.parametrize("row, label", [([100.0, -100.0, 0.0], 0), ([-100.0, 100.0, 0.0], 0),
                                        ([30.0, 0.0, -5.0], 0), ([12.0, -8.0, 1.0], 0)])
def test_categorical_focal_extreme_logits_match_mpmath(row, label, gamma):
    mpmath = pytest.importorskip("mpmath")
    mpmath.mp.dps = 200  # the losing classes move the loss by e^-200 of itself
    alpha = [0.25, 0.25, 0.25]
    y = [1.0 if c == label else 0.0 for c in range(3)]
    mp_x = [mpmath.mpf(v) for v in row]
    expected = _mp_focal(mp_x, y, gamma, alpha)
    expected_grad = [mpmath.diff(lambda t, j=j: _mp_focal([v + (t if i == j else 0) for i, v in enumerate(mp_x)],
                                                         y, gamma, alpha), 0) for j in range(3)]
    loss = mlo.get("categorical_focal", reduction="none", gamma=gamma)
    x = np.array([row])
    for target in (np.array([label]), np.array([y])):
        value = loss(x, target)
        g = loss.grad(x, target)["input"]
        assert np.all(np.isfinite(value)) and np.all(np.isfinite(g))
        close(value, [float(expected)], rtol=1e-12, atol=0)
        close(g[0], [float(v) for v in expected_grad], rtol=1e-10, atol=0)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("gamma", [0.1, 0.5, 0.9])
def test_categorical_focal_gamma_below_one_at_saturated_logits_is_finite(gamma, dtype):
    x = np.array([[100.0, -100.0], [-100.0, 100.0], [1e4, -1e4], [1e8, 0.0], [-np.inf, 3.0]], dtype=dtype)
    y = np.array([0, 0, 0, 0, 1])
    loss = mlo.get("categorical_focal", reduction="none", gamma=gamma, alpha=None)
    for target in (y, one_hot(y, 2).astype(dtype)):
        value = loss(x, target)
        g = loss.grad(x, target)["input"]
        assert np.all(np.isfinite(value)) and np.all(np.isfinite(g))
        # wrongly classified by 200: -(1)^gamma log p = 200, gradient (p - e_y) (1 - gamma p log p / (1 - p)) = +-1
        close(value[1], 200.0, rtol=1e-6)
        close(g[1], [-1.0, 1.0], rtol=1e-6)
        assert np.all(np.abs(value[[0, 2, 3, 4]]) < 1e-30) and np.all(np.abs(g[[0, 2, 3, 4]]) < 1e-30)
    # gamma < 1 in PyTorch's autograd of the plain formula: NaN where p rounds to 1
    tx = tt(x[:1], grad=True)
    (tg,) = torch.autograd.grad(_torch_focal(tx, tt([[1.0, 0.0]]), gamma, None).sum(), tx)
    assert torch.isnan(tg).any()


def test_categorical_focal_options_and_alpha_weighting():
    x = np.array([[0.0, math.log(3.0)], [math.log(3.0), 0.0]])  # p_y = 3/4, 1/4
    y = np.array([1, 1])
    loss = mlo.get("categorical_focal", reduction="none", gamma=2.0, alpha=(0.5, 2.0))
    close(loss(x, y), [2.0 * (0.25**2) * math.log(4.0 / 3.0), 2.0 * (0.75**2) * math.log(4.0)])


# --------------------------------------------------------------------------
# float32: close to the float64 references on ordinary inputs


def _float32_case(name, rng):
    if name == "cross_entropy":
        x = rng.normal(size=(4, 5, 3))
        return (x, _labels(rng, x.shape), rng.uniform(0.5, 2.0, 5)), {"label_smoothing": 0.1}
    if name == "nll":
        x = np_log_softmax(rng.normal(size=(4, 5)), axis=1)
        return (x, _labels(rng, x.shape), None), {}
    if name == "categorical_cross_entropy":
        return (rng.uniform(0.1, 1.0, (4, 5)), rng.dirichlet(np.ones(5), size=4)), {}
    x = rng.normal(size=(4, 5))
    return (x, rng.dirichlet(np.ones(5), size=4)), {"gamma": 0.5} if name == "categorical_focal" else {}


def _reference64(name, args, options):
    if name in ("cross_entropy", "nll"):
        fn = F.cross_entropy if name == "cross_entropy" else F.nll_loss
        x, y, w = args
        tx = tt(x, grad=True)
        v = fn(tx, tt(y), weight=None if w is None else tt(w), reduction="sum", **options)
        return v.item(), {"input": torch.autograd.grad(v, tx)[0].numpy()}
    if name == "categorical_cross_entropy":
        tp, ty = tt(args[0], grad=True), tt(args[1], grad=True)
        v = _torch_keras_cce(tp, ty).sum()
        gp, gy = torch.autograd.grad(v, (tp, ty))
        return v.item(), {"input": gp.numpy(), "target": gy.numpy()}
    tx = tt(args[0], grad=True)
    if name == "poly1":
        p = torch.softmax(tx, -1)
        y = tt(args[1])
        v = (-(y * torch.log_softmax(tx, -1)).sum(-1) + 2.0 * (y * (1 - p)).sum(-1)).sum()
    else:
        v = _torch_focal(tx, tt(args[1]), options["gamma"], 0.25).sum()
    return v.item(), {"input": torch.autograd.grad(v, tx)[0].numpy()}


@pytest.mark.parametrize("name", SOFTMAX)
def test_float32_close_to_float64_reference(name):
    rng = np.random.default_rng(21)
    args, options = _float32_case(name, rng)
    single = tuple(None if a is None else (a.astype(np.float32) if a.dtype.kind == "f" else a) for a in args)
    exact = tuple(None if a is None else (a.astype(np.float64) if a.dtype.kind == "f" else a) for a in single)
    ref_value, ref_grads = _reference64(name, exact, options)
    single = tuple(a for a in single if a is not None)
    value, grads = mlo.get(name, reduction="sum", **options).value_and_grad(*single)
    assert value.dtype == np.float32
    close(value, ref_value, rtol=2e-6, atol=1e-6)
    for key, g in grads.items():
        assert g.dtype == np.float32
        close(g, ref_grads[key], rtol=1e-5, atol=2e-6)


# --------------------------------------------------------------------------
# other array libraries (values against the same independent references)


BACKEND_CASES = [(n, "array_api_strict") for n in SOFTMAX] + [
    (n, b) for b in ("jax", "torch", "mlx") for n in ("cross_entropy", "categorical_focal")]


@pytest.mark.parametrize("name, backend", BACKEND_CASES)
def test_backends_match_references(name, backend):
    """Array API only (array-api-strict), and the frameworks; the conformance suite covers every pair."""
    from conftest import installed, native, to_numpy

    if not installed(backend):
        pytest.skip(f"{backend} is not installed")
    rng = np.random.default_rng(31)
    args, options = _float32_case(name, rng)
    args = tuple(a for a in args if a is not None)
    ref_value, ref_grads = _reference64(name, args + ((None,) if name == "nll" else ()), options)
    # labels as int32 too: PyTorch's gather wants int64, the loss converts
    converted = tuple(native(backend, a, "float64" if a.dtype.kind == "f" else "int32") for a in args)
    value, grads = mlo.get(name, reduction="sum", **options).value_and_grad(*converted)
    tol = 1e-12
    close(to_numpy(value), ref_value, rtol=tol, atol=tol)
    for key, g in grads.items():
        assert type(g) is type(converted[0])
        close(to_numpy(g), ref_grads[key], rtol=5 * tol, atol=tol)


@pytest.mark.parametrize("name", SOFTMAX)
def test_jax_jit_traces(name):
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)
    rng = np.random.default_rng(41)
    args, options = _float32_case(name, rng)
    ref_value, ref_grads = _reference64(name, args, options)
    traced = tuple(jax.numpy.asarray(a) for a in args if a is not None)
    value, grads = jax.jit(mlo.get(name, reduction="sum", **options).value_and_grad)(*traced)
    close(value, ref_value, rtol=1e-12)
    for key, g in grads.items():
        close(g, ref_grads[key], rtol=1e-11, atol=1e-14)


# --------------------------------------------------------------------------
# inputs are never modified


@pytest.mark.parametrize("name", SOFTMAX)
def test_inputs_never_modified(name):
    rng = np.random.default_rng(51)
    args, options = _float32_case(name, rng)
    args = tuple(a for a in args if a is not None)
    for lib in ("numpy", "torch"):
        arrays = args if lib == "numpy" else tuple(torch.tensor(a) for a in args)
        before = [np.array(a, copy=True) for a in args]
        loss = mlo.get(name, reduction="none", **options)
        out = loss(*arrays)
        loss.value_and_grad(*arrays)
        loss.vjp(np.ones(tuple(out.shape)) if lib == "numpy" else torch.ones(tuple(out.shape), dtype=torch.float64),
                 *arrays)
        for a, b in zip(arrays, before):
            assert np.array_equal(np.asarray(a), b)


# --------------------------------------------------------------------------
# bad input: clear errors before any arithmetic


def test_label_errors_name_target_and_show_the_value():
    x = np.zeros((3, 5))
    for name in ("cross_entropy", "nll"):
        with pytest.raises(ValueError, match=r"`target` must hold class indices in \[0, 5\) or ignore_index=-100; got 5"):
            mlo.get(name)(x, np.array([0, 5, 1]))
        with pytest.raises(ValueError, match=r"`target`.*got -3"):
            mlo.get(name)(x, np.array([0, -3, 1]))
        with pytest.raises(ValueError, match=r"`target` must have shape \(3,\)"):
            mlo.get(name)(x, np.array([0, 1]))
        with pytest.raises(ValueError, match=r"`weight` must have shape \(5,\).*got \(4,\)"):
            mlo.get(name)(x, np.array([0, 1, 2]), np.ones(4))
        with pytest.raises(TypeError, match="`target` must hold integer class indices"):
            mlo.get(name)(x, np.array([True, False, True]))
        with pytest.raises(TypeError, match="`input` must be a real floating-point array"):
            mlo.get(name)(np.zeros((3, 5), dtype=np.int64), np.array([0, 1, 2]))
        with pytest.raises(ValueError, match="`input` must have at least 1 dimension"):
            mlo.get(name)(np.float64(1.0), np.array(0))
    with pytest.raises(TypeError, match="`target` must hold integer class indices; got dtype float64"):
        mlo.get("nll")(x, np.zeros((3, 5)))
    for name in ("poly1", "categorical_focal"):
        with pytest.raises(ValueError, match=r"`target` must hold class indices in \[0, 5\); got 7"):
            mlo.get(name)(x, np.array([0, 7, 1]))
        with pytest.raises(ValueError, match=r"`target` must have shape \(3,\)"):
            mlo.get(name)(x, np.array([[0, 1, 2]]))
        with pytest.raises(ValueError, match="`input` and `target` must have the same shape"):
            mlo.get(name)(x, np.zeros((3, 4)))


def test_cross_entropy_target_form_errors():
    x = np.zeros((2, 3))
    with pytest.raises(ValueError, match="`input` and `target` must have the same shape; got \\(2, 3\\) and \\(2, 4\\)"):
        mlo.get("cross_entropy")(x, np.zeros((2, 4)))
    with pytest.raises(ValueError, match="ignore_index=1 with a floating"):
        mlo.get("cross_entropy", ignore_index=1)(x, np.full((2, 3), 1.0 / 3.0))
    with pytest.raises(TypeError, match="integer class indices or floating class probabilities; got dtype bool"):
        mlo.get("cross_entropy")(x, np.zeros((2,), dtype=bool))
    with pytest.raises(RuntimeError, match="ignore_index is not supported"):  # PyTorch refuses it too
        F.cross_entropy(torch.zeros(2, 3), torch.full((2, 3), 1.0 / 3.0), ignore_index=1)


def test_option_errors():
    with pytest.raises(ValueError, match=r"`label_smoothing` must lie in \[0.0, 1.0\]; got 1.5"):
        mlo.get("cross_entropy", label_smoothing=1.5)
    with pytest.raises(ValueError, match="`label_smoothing`.*got -0.1"):
        mlo.get("cross_entropy", label_smoothing=-0.1)
    with pytest.raises(TypeError, match="`ignore_index` must be an integer; got 1.5"):
        mlo.get("nll", ignore_index=1.5)
    with pytest.raises(ValueError, match="`eps`.*got 0"):
        mlo.get("categorical_cross_entropy", eps=0)
    with pytest.raises(ValueError, match="`gamma`.*got -1"):
        mlo.get("categorical_focal", gamma=-1)
    with pytest.raises(ValueError, match="`alpha`.*got -0.5"):
        mlo.get("categorical_focal", alpha=-0.5)
    with pytest.raises(TypeError, match="`alpha`"):
        mlo.get("categorical_focal", alpha="balanced")
    with pytest.raises(ValueError, match=r"`alpha` must have 3 entries \(one weight per class\); got 2"):
        mlo.get("categorical_focal", alpha=(0.5, 0.5))(np.zeros((2, 3)), np.array([0, 1]))
    with pytest.raises(TypeError, match="`epsilon` must be a real number"):
        mlo.get("poly1", epsilon="2")
    with pytest.raises(TypeError, match="unknown option `weight`"):
        mlo.get("cross_entropy", weight=np.ones(3))


def test_label_range_is_not_checked_under_tracing():
    jax = pytest.importorskip("jax")
    x = jax.numpy.zeros((2, 3))
    y = jax.numpy.asarray([0, 2])
    # traced labels cannot be read: the value check is skipped, the dtype/shape checks still run
    jax.jit(mlo.get("cross_entropy"))(x, y)
    with pytest.raises(ValueError, match="`target` must have shape"):
        jax.jit(mlo.get("cross_entropy"))(x, jax.numpy.asarray([0, 1, 2]))
