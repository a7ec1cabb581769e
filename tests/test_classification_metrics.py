"""brier, spiegelhalter_z and the AnyLoss family against independent references.

Every expected number comes from outside the code under test: NumPy/SciPy
formulas written in this file, hand-computed cases, float64 finite differences
of those formulas, and PyTorch autograd of the same formulas written in torch.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.special import expit, softmax

import mithril_losses as mlo

from conftest import installed, native, to_numpy

METRICS = ("brier", "spiegelhalter_z", "accuracy", "f1", "f_beta", "balanced_accuracy", "geometric_mean")
ANYLOSS = ("accuracy", "f1", "f_beta", "balanced_accuracy", "geometric_mean")


def close(actual, expected, rtol=1e-12, atol=1e-12):
    np.testing.assert_allclose(to_numpy(actual), np.asarray(expected, dtype=np.float64), rtol=rtol, atol=atol)


def test_family_and_aliases():
    assert set(METRICS) <= set(mlo.available(family="classification"))
    for alias, name in [("brier_score", "brier"), ("brier_loss", "brier"), ("spiegelhalter", "spiegelhalter_z"),
                        ("anyloss_f1", "f1"), ("fbeta", "f_beta"), ("gmean", "geometric_mean"),
                        ("anyloss_balanced_accuracy", "balanced_accuracy"), ("accuracy_loss", "accuracy")]:
        assert mlo.get(alias).spec is mlo.get(name).spec
    assert mlo.get("f_beta").options == {"amplifying_scale": 73.0, "from_logits": False, "beta": 1.0}
    for name in METRICS:
        loss = mlo.get(name)
        assert loss.family == "classification" and loss.inputs == ("input", "target")
        assert loss.differentiable == ("input",)
    assert callable(mlo.f1_loss) and callable(mlo.brier_loss_gradient) and callable(mlo.spiegelhalter_z_loss)


# --------------------------------------------------------------------------
# independent references (unreduced), from the formulas


def ref_brier(x, t, mode="multiclass", from_logits=False):
    if mode == "binary":
        p = expit(x) if from_logits else x
        return (p - t) ** 2
    p = softmax(x, axis=-1) if from_logits else x
    y = np.eye(x.shape[-1])[t] if np.ndim(t) < x.ndim else t
    return np.sum((p - y) ** 2, axis=-1)


def ref_spiegelhalter(x, y, from_logits=False, eps=1e-7, chance_corrected=False, normalize_by_n=False):
    p = expit(x) if from_logits else x
    z = np.sum((y - p) * (1 - 2 * p), axis=0) / np.sqrt(np.sum((1 - 2 * p) ** 2 * p * (1 - p), axis=0) + eps)
    out = np.maximum(z**2 - 1, 0.0) if chance_corrected else z**2
    return out / x.shape[0] if normalize_by_n else out


def _metric(name, tp, fn, fp, tn, beta):
    """One column's metric, written the textbook way (empty ratios: 0; absent class: left out)."""
    if name == "accuracy":
        return (tp + tn) / (tp + tn + fp + fn)
    if name in ("f1", "f_beta"):
        b2 = 1.0 if name == "f1" else beta**2
        den = (1 + b2) * tp + b2 * fn + fp
        return (1 + b2) * tp / den if den > 0 else 0.0
    rates = ([tp / (tp + fn)] if tp + fn > 0 else []) + ([tn / (tn + fp)] if tn + fp > 0 else [])
    if name == "balanced_accuracy":
        return sum(rates) / len(rates)
    return math.sqrt(rates[0] * rates[1] + 1e-12) if len(rates) == 2 else rates[0]


def ref_anyloss(name, x, y, amplifying_scale=73.0, from_logits=False, beta=1.0):
    p = expit(x) if from_logits else x
    a = expit(amplifying_scale * (p - 0.5))
    tp, fn = np.sum(y * a, axis=0), np.sum(y * (1 - a), axis=0)
    fp, tn = np.sum((1 - y) * a, axis=0), np.sum((1 - y) * (1 - a), axis=0)
    out = np.zeros(tp.shape)
    for i in np.ndindex(tp.shape):
        out[i] = 1.0 - _metric(name, tp[i], fn[i], fp[i], tn[i], beta)
    return out


def reference(name, options, arrays):
    x, t = arrays["input"], arrays["target"]
    if name == "brier":
        return ref_brier(x, t, **options)
    if name == "spiegelhalter_z":
        return ref_spiegelhalter(x, t, **options)
    return ref_anyloss(name, x, t, **options)


# --------------------------------------------------------------------------
# inputs


def _away(rng, low, high, shape, center, gap):
    v = rng.uniform(low, high, shape)
    for _ in range(200):
        near = np.abs(v - center) < gap
        if not near.any():
            return v
        v = np.where(near, rng.uniform(low, high, shape), v)
    raise AssertionError("could not draw away from the center")


def logit(p):
    return np.log(p / (1 - p))


def multiclass(shape, logits=False, prob_target=False):
    def make(rng):
        if logits:
            x = rng.normal(0, 2, shape)
        else:
            u = rng.uniform(0.1, 1.0, shape)
            x = u / u.sum(-1, keepdims=True)
        c = shape[-1]
        t = rng.dirichlet(np.ones(c), size=shape[:-1]) if prob_target else rng.integers(0, c, shape[:-1])
        return {"input": x, "target": t}
    return make


def binary(shape, logits=False, soft_target=False, gap=0.0, low=0.03, high=0.97):
    def make(rng):
        p = _away(rng, low, high, shape, 0.5, gap)
        y = rng.uniform(0, 1, shape) if soft_target else (rng.random(shape) < p).astype(np.float64)
        return {"input": logit(p) if logits else p, "target": y}
    return make


def spiegelhalter_chance(shape):
    # some columns above the kink Z^2 = 1, some below, none near it
    def make(rng):
        for _ in range(500):
            p = _away(rng, 0.05, 0.95, shape, 0.5, 0.15)
            y = (rng.random(shape) < np.clip(p + rng.choice([-0.4, 0.0], shape[1:]), 0, 1)).astype(np.float64)
            z2 = ref_spiegelhalter(p, y)
            if np.all(np.abs(z2 - 1) > 0.05) and np.any(z2 > 1) and np.any(z2 < 1):
                return {"input": p, "target": y}
        raise AssertionError("no sample")
    return make


def missing_classes(shape, logits=False):
    # column 0 all negatives, column 1 all positives, the others mixed
    def make(rng):
        d = binary(shape, logits=logits)(rng)
        d["target"][:, 0], d["target"][:, 1] = 0.0, 1.0
        return d
    return make


# (id, name, options, maker, h of the finite differences)
CASES = [
    ("brier-idx", "brier", {}, multiclass((4, 5)), 1e-4),
    ("brier-idx-1d", "brier", {}, multiclass((5,)), 1e-4),
    ("brier-prob-3d", "brier", {}, multiclass((2, 3, 4), prob_target=True), 1e-4),
    ("brier-logits-idx-3d", "brier", {"from_logits": True}, multiclass((2, 3, 4), logits=True), 1e-4),
    ("brier-logits-prob", "brier", {"from_logits": True}, multiclass((4, 5), logits=True, prob_target=True), 1e-4),
    ("brier-binary", "brier", {"mode": "binary"}, binary((3, 4), soft_target=True), 1e-4),
    ("brier-binary-logits", "brier", {"mode": "binary", "from_logits": True}, binary((7,), logits=True), 1e-4),
    ("spz-1d", "spiegelhalter_z", {}, binary((8,), gap=0.1), 1e-4),
    ("spz-logits", "spiegelhalter_z", {"from_logits": True}, binary((6, 3), logits=True, gap=0.1), 1e-4),
    ("spz-3d-eps", "spiegelhalter_z", {"eps": 1e-3}, binary((5, 2, 2), gap=0.1), 1e-4),
    ("spz-chance", "spiegelhalter_z", {"chance_corrected": True, "normalize_by_n": True},
     spiegelhalter_chance((10, 4)), 1e-4),
]
for _m in ANYLOSS:
    CASES += [
        # L = 73 with predictions in the steep middle too: small steps follow a = sigmoid(73 (p - 1/2))
        (f"{_m}-2d", _m, {}, binary((9, 3), low=0.35, high=0.65), 1e-6),
        (f"{_m}-1d-logits", _m, {"from_logits": True}, binary((8,), logits=True, low=0.3, high=0.7), 1e-6),
        (f"{_m}-3d-L5", _m, {"amplifying_scale": 5.0}, binary((5, 2, 2)), 1e-4),
        (f"{_m}-missing", _m, {"amplifying_scale": 10.0}, missing_classes((6, 4)), 1e-4),
    ]
CASES += [
    ("f_beta-2", "f_beta", {"beta": 2.0, "amplifying_scale": 8.0}, binary((7, 3)), 1e-4),
    ("f_beta-0.5", "f_beta", {"beta": 0.5, "from_logits": True}, binary((9, 2), logits=True, low=0.3, high=0.7),
     1e-6),
]
IDS = [c[0] for c in CASES]


def numeric_grad(f, arrays, h):
    """4th-order central differences of the scalar f w.r.t. arrays['input'], element by element."""
    x = arrays["input"]
    g = np.zeros_like(x)
    for idx in np.ndindex(x.shape):
        vals = []
        for step in (2.0, 1.0, -1.0, -2.0):
            moved = x.copy()
            moved[idx] += step * h
            vals.append(f({**arrays, "input": moved}))
        g[idx] = (-vals[0] + 8.0 * vals[1] - 8.0 * vals[2] + vals[3]) / (12.0 * h)
    return g


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_value_and_vjp_against_reference_and_finite_differences(case):
    _, name, options, maker, h = case
    arrays = maker(np.random.default_rng(1))
    expected = reference(name, options, arrays)
    loss = mlo.get(name, reduction="none", **options)
    out = loss(**arrays)
    assert np.shape(out) == expected.shape and out.dtype == np.float64
    close(out, expected, rtol=1e-11, atol=1e-12)
    close(mlo.get(name, reduction="sum", **options)(**arrays), expected.sum(), rtol=1e-11)
    close(mlo.get(name, **options)(**arrays), expected.mean(), rtol=1e-11)

    ct = np.random.default_rng(2).normal(size=expected.shape)
    grads = loss.vjp(ct, **arrays)
    assert set(grads) == {"input"} and grads["input"].shape == arrays["input"].shape
    num = numeric_grad(lambda a: float(np.sum(ct * reference(name, options, a))), arrays, h)
    close(grads["input"], num, rtol=1e-6, atol=1e-7 * max(1.0, float(np.abs(num).max())))

    value, mean_grads = mlo.get(name, **options).value_and_grad(**arrays)
    close(value, expected.mean(), rtol=1e-11)
    num = numeric_grad(lambda a: float(np.mean(reference(name, options, a))), arrays, h)
    close(mean_grads["input"], num, rtol=1e-6, atol=1e-7 * max(1.0, float(np.abs(num).max())))


@pytest.mark.parametrize("case", CASES[::3], ids=IDS[::3])
def test_float32_close_to_float64_reference(case):
    _, name, options, maker, _ = case
    arrays = maker(np.random.default_rng(3))
    single = {k: v.astype(np.float32) if v.dtype == np.float64 else v for k, v in arrays.items()}
    exact = {k: v.astype(np.float64) if v.dtype == np.float32 else v for k, v in single.items()}
    loss = mlo.get(name, reduction="none", **options)
    out = loss(**single)
    assert out.dtype == np.float32
    expected = reference(name, options, exact)
    close(out, expected, rtol=1e-4, atol=1e-5 * max(1.0, float(np.abs(expected).max())))
    g = loss.vjp(np.ones(np.shape(out), np.float32), **single)["input"]
    assert g.dtype == np.float32
    g64 = loss.vjp(np.ones(np.shape(out)), **exact)["input"]  # checked against references above
    close(g, g64, rtol=1e-4, atol=2e-4 * max(1.0, float(np.abs(g64).max())))


# --------------------------------------------------------------------------
# PyTorch autograd of the same formulas

try:
    import torch
except ImportError:  # the rest of the file runs without torch
    torch = None
needs_torch = pytest.mark.skipif(torch is None, reason="torch is not installed")


def torch_brier(x, t, mode="multiclass", from_logits=False):
    if mode == "binary":
        p = torch.sigmoid(x) if from_logits else x
        return (p - t) ** 2
    p = torch.softmax(x, -1) if from_logits else x
    y = torch.nn.functional.one_hot(t, x.shape[-1]).double() if t.dim() < x.dim() else t
    return ((p - y) ** 2).sum(-1)


def torch_spiegelhalter(x, y, from_logits=False, eps=1e-7, chance_corrected=False, normalize_by_n=False):
    p = torch.sigmoid(x) if from_logits else x
    num = ((y - p) * (1 - 2 * p)).sum(0)
    z2 = num**2 / ((1 - 2 * p) ** 2 * p * (1 - p)).sum(0).add(eps)
    z2 = torch.relu(z2 - 1) if chance_corrected else z2
    return z2 / x.shape[0] if normalize_by_n else z2


def torch_anyloss(name, x, y, amplifying_scale=73.0, from_logits=False, beta=1.0):
    # dl_techniques' formulas (without its epsilon), every column with both classes present
    p = torch.sigmoid(x) if from_logits else x
    a = torch.sigmoid(amplifying_scale * (p - 0.5))
    tp, fn = (y * a).sum(0), (y * (1 - a)).sum(0)
    fp, tn = ((1 - y) * a).sum(0), ((1 - y) * (1 - a)).sum(0)
    b2 = beta**2 if name == "f_beta" else 1.0
    metric = {
        "accuracy": lambda: (tp + tn) / (tp + tn + fp + fn),
        "f1": lambda: (1 + b2) * tp / ((1 + b2) * tp + b2 * fn + fp),
        "f_beta": lambda: (1 + b2) * tp / ((1 + b2) * tp + b2 * fn + fp),
        "balanced_accuracy": lambda: (tp / (tp + fn) + tn / (tn + fp)) / 2,
        "geometric_mean": lambda: torch.sqrt(tp / (tp + fn) * tn / (tn + fp) + 1e-12),
    }[name]()
    return 1 - metric


def _torch_formula(name):
    if name == "brier":
        return torch_brier
    if name == "spiegelhalter_z":
        return torch_spiegelhalter
    return lambda x, y, **o: torch_anyloss(name, x, y, **o)


@needs_torch
@pytest.mark.parametrize("case", [c for c in CASES if not c[0].endswith("missing")],
                         ids=[c[0] for c in CASES if not c[0].endswith("missing")])
def test_vjp_matches_torch_autograd(case):
    _, name, options, maker, _ = case
    arrays = maker(np.random.default_rng(4))
    if name in ANYLOSS:  # the torch formula needs both classes in every column
        y = arrays["target"]
        assert np.all(y.max(0) == 1) and np.all(y.min(0) == 0)
    x = torch.tensor(arrays["input"], requires_grad=True)
    t = torch.tensor(arrays["target"])
    expected = _torch_formula(name)(x, t, **options)
    ct = np.random.default_rng(5).normal(size=tuple(expected.shape))
    (gx,) = torch.autograd.grad(expected, x, torch.tensor(ct))
    loss = mlo.get(name, reduction="none", **options)
    close(loss(**arrays), expected.detach().numpy(), rtol=1e-11, atol=1e-12)
    close(loss.vjp(ct, **arrays)["input"], gx.numpy(), rtol=1e-9, atol=1e-12)
    # and the engine on torch tensors gives the same, as torch tensors
    tx, tt = torch.tensor(arrays["input"]), torch.tensor(arrays["target"])
    g = loss.vjp(torch.tensor(ct), tx, tt)["input"]
    assert isinstance(g, torch.Tensor) and g.dtype == torch.float64
    close(g, gx.numpy(), rtol=1e-9, atol=1e-12)


# --------------------------------------------------------------------------
# hand-computed cases


def test_brier_hand_computed():
    p = np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]])
    close(mlo.get("brier", reduction="none")(p, np.array([0, 1])), [0.09 + 0.04 + 0.01, 0.01 + 0.49 + 0.36])
    close(mlo.get("brier").grad(p, np.array([0, 1]))["input"], [[-0.3, 0.2, 0.1], [0.1, -0.7, 0.6]])
    close(mlo.get("brier", reduction="none")(p, np.array([[0.5, 0.5, 0.0], [0.0, 0.0, 1.0]])),
          [0.04 + 0.09 + 0.01, 0.01 + 0.09 + 0.16])
    # logits 0, 0: p = (1/2, 1/2), dl/dp = 2(p - y) = (1, -1), dl/dx = p (g - <p, g>) = (1/2, -1/2)
    value, grads = mlo.get("brier", from_logits=True, reduction="sum").value_and_grad(np.zeros((1, 2)), np.array([1]))
    close(value, 0.5)
    close(grads["input"], [[0.5, -0.5]])
    binary = mlo.get("brier", mode="binary", reduction="none")
    close(binary(np.array([0.8, 0.8, 0.25]), np.array([1.0, 0.0, 0.5])), [0.04, 0.64, 0.0625])
    # logit 0 -> p = 1/2: (1/2 - 1)^2, gradient 2 (p - y) p (1 - p) = -1/4
    close(mlo.get("brier", mode="binary", from_logits=True).grad(np.array([0.0]), np.array([1]))["input"], [-0.25])


def test_spiegelhalter_hand_computed():
    # num = (0 - .2)(.6) + (1 - .7)(-.4) = -.24; den = .36 * .16 + .16 * .21 = .0912
    p, y = np.array([0.2, 0.7]), np.array([0.0, 1.0])
    close(mlo.get("spiegelhalter_z")(p, y), 0.0576 / (0.0912 + 1e-7))
    close(mlo.get("spiegelhalter_z", eps=1e-3, normalize_by_n=True)(p, y), 0.0576 / 0.0922 / 2)
    close(mlo.get("spiegelhalter_z", chance_corrected=True)(p, y), 0.0)
    # dZ^2/dp_i = t (2 (4p - 1 - 2y) - t (1 - 2p)(1 - 8p(1 - p))), t = num / den
    t = -0.24 / 0.0912
    expected = [t * (2 * (0.8 - 1) - t * 0.6 * (1 - 8 * 0.16)), t * (2 * (2.8 - 3) - t * (-0.4) * (1 - 8 * 0.21))]
    close(mlo.get("spiegelhalter_z", eps=1e-300).grad(p, y)["input"], expected, rtol=1e-12)
    # 2-D: one statistic per column
    close(mlo.get("spiegelhalter_z", reduction="none")(np.stack([p, p[::-1]], 1), np.stack([y, y], 1)),
          [0.0576 / (0.0912 + 1e-7), ref_spiegelhalter(p[::-1], y)])


def test_anyloss_hand_computed():
    # L = 73 at p = 0.99 / 0.01 gives a = 1 or 0 up to 1e-15: TP = FN = FP = TN = 1
    p, y = np.array([0.99, 0.01, 0.99, 0.01]), np.array([1, 1, 0, 0])
    for name in ANYLOSS:
        close(mlo.get(name)(p, y), 0.5, atol=1e-12)
    # TP = 2, FN = 1, FP = 1: F2 = 5 * 2 / (5 * 2 + 4 * 1 + 1) = 2/3, F1 = 4/6, accuracy 1/2 (TN = 0)
    p, y = np.array([0.99, 0.99, 0.01, 0.99]), np.array([1.0, 1.0, 1.0, 0.0])
    close(mlo.get("f_beta", beta=2.0)(p, y), 1 / 3, atol=1e-12)
    close(mlo.get("f_beta", beta=0.5)(p, y), 1 - 1.25 * 2 / (1.25 * 2 + 0.25 + 1), atol=1e-12)
    close(mlo.get("f1")(p, y), 1 / 3, atol=1e-12)
    close(mlo.get("accuracy")(p, y), 0.5, atol=1e-12)
    # only positives: balanced accuracy and G-mean are the TPR (2/3)
    close(mlo.get("balanced_accuracy")(p[:3], y[:3]), 1 / 3, atol=1e-12)
    close(mlo.get("geometric_mean")(p[:3], y[:3]), 1 / 3, atol=1e-12)
    # accuracy at L = 1: d/dp_i = -(2 y_i - 1) / n * a_i (1 - a_i)
    p, y = np.array([0.3, 0.9]), np.array([1.0, 0.0])
    a = 1 / (1 + np.exp(-(p - 0.5)))
    close(mlo.get("accuracy", amplifying_scale=1.0)(p, y), 1 - (a[0] + 1 - a[1]) / 2)
    close(mlo.get("accuracy", amplifying_scale=1.0).grad(p, y)["input"], [-a[0] * (1 - a[0]) / 2, a[1] * (1 - a[1]) / 2])


# --------------------------------------------------------------------------
# edges


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("scale", [1e4, 1e8, 1e9])
def test_huge_logits_are_finite(dtype, scale):
    x = np.array([[1.0, -1.0, 0.5], [-1.0, 1.0, -0.5]], dtype) * np.asarray(scale, dtype)
    y = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 1.0]], dtype)
    cases = [("brier", {"from_logits": True}, np.array([0, 2])), ("brier", {"mode": "binary", "from_logits": True}, y),
             ("spiegelhalter_z", {"from_logits": True}, y)] + [(m, {"from_logits": True}, y) for m in ANYLOSS]
    for name, options, target in cases:
        value, grads = mlo.get(name, **options).value_and_grad(x, target)
        assert np.isfinite(value) and np.all(np.isfinite(grads["input"])), name
        assert grads["input"].dtype == np.dtype(dtype)
    # brier with saturated softmax: p is one-hot, sum of squares exact
    close(mlo.get("brier", from_logits=True, reduction="none")(x, np.array([0, 2])), [0.0, 2.0])
    # AnyLoss at saturated logits: hard confusion matrix; column 2 has TP = 0, TN = 0, FN = 1, FP = 1
    close(mlo.get("accuracy", from_logits=True, reduction="none")(x, y), [0.0, 0.0, 1.0], atol=1e-6)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_masked_classes_brier(dtype):
    x = np.array([[-np.inf, 1.0, 2.0], [0.5, -np.inf, -1.0]], dtype)
    t = np.array([1, 2])
    loss = mlo.get("brier", from_logits=True, reduction="none")
    value, grads = loss.value_and_grad(x, t)
    finite = np.where(np.isinf(x), -1e30, x).astype(np.float64)
    close(value, ref_brier(finite, t, from_logits=True), rtol=1e-6 if dtype == "float32" else 1e-12)
    g = grads["input"]
    assert np.all(np.isfinite(g)) and g[0, 0] == 0.0 and g[1, 1] == 0.0


def test_probabilities_exactly_zero_and_one():
    p = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    value, grads = mlo.get("brier", reduction="none").value_and_grad(p, np.array([0, 1]))
    close(value, [0.0, 2.0])
    close(grads["input"], [[0.0, 0.0, 0.0], [0.0, -2.0, 2.0]])
    # spiegelhalter: every p in {0, 1} leaves only eps under the root; all p = 1/2 gives 0 with zero slope
    y = np.array([1.0, 0.0, 0.0])
    value, grads = mlo.get("spiegelhalter_z").value_and_grad(np.array([1.0, 0.0, 1.0]), y)
    close(value, 1.0 / 1e-7, rtol=1e-12)
    assert np.all(np.isfinite(grads["input"]))
    value, grads = mlo.get("spiegelhalter_z").value_and_grad(np.full(3, 0.5), y)
    assert value == 0.0 and np.all(grads["input"] == 0.0)
    for name in ANYLOSS:
        value, grads = mlo.get(name).value_and_grad(np.array([1.0, 0.0, 1.0, 0.0]), np.array([1, 0, 0, 1]))
        close(value, 0.5, atol=1e-12)
        assert np.all(np.isfinite(grads["input"]))


def test_anyloss_empty_classes_and_masks():
    # no positives in the column: F1 = 0 (loss 1) with a zero gradient
    p, y = np.array([0.2, 0.6, 0.9]), np.zeros(3)
    value, grads = mlo.get("f1", amplifying_scale=10.0).value_and_grad(p, y)
    assert value == 1.0 and np.all(grads["input"] == 0.0)
    a = expit(10.0 * (p - 0.5))
    for name in ("balanced_accuracy", "geometric_mean"):  # the TNR alone
        value, grads = mlo.get(name, amplifying_scale=10.0).value_and_grad(p, y)
        close(value, 1 - np.mean(1 - a))
        close(grads["input"], 10.0 * a * (1 - a) / 3)
    # everything masked: 0 with zero gradient
    x, t = np.array([[0.2, 0.7], [0.9, 0.1]]), np.array([[0.0, 1.0], [1.0, 0.0]])
    for name in METRICS:
        value, grads = mlo.get(name).value_and_grad(x, t, where=np.zeros(2, bool))
        assert value == 0.0 and np.all(grads["input"] == 0.0), name
    # per-column weights in a weighted mean
    w = np.array([1.0, 3.0])
    close(mlo.get("f1")(x, t, weight=w), np.sum(w * ref_anyloss("f1", x, t)) / 4.0)


def test_target_dtypes_are_equivalent():
    rng = np.random.default_rng(6)
    p = rng.uniform(0.05, 0.95, (6, 2))
    y = rng.random((6, 2)) < 0.5
    for name in ("spiegelhalter_z",) + ANYLOSS:
        loss = mlo.get(name, amplifying_scale=5.0) if name in ANYLOSS else mlo.get(name)
        expected = loss(p, y.astype(np.float64))
        for target in (y, y.astype(np.int32), y.astype(np.float32)):
            close(loss(p, target), expected, rtol=1e-15)
            close(loss.grad(p, target)["input"], loss.grad(p, y.astype(np.float64))["input"], rtol=1e-15)
    p = rng.uniform(0.05, 0.95, (4, 3))
    close(mlo.get("brier")(p, np.array([0, 2, 1, 1], np.int32)), np.mean(ref_brier(p, np.array([0, 2, 1, 1]))))


def test_inputs_are_never_modified():
    rng = np.random.default_rng(7)
    u = rng.uniform(0.1, 1, (4, 3))
    cases = [("brier", {}, u / u.sum(-1, keepdims=True), np.array([0, 1, 2, 1])),
             ("brier", {"from_logits": True}, rng.normal(size=(4, 3)), np.array([2, 1, 0, 0])),
             ("brier", {"mode": "binary"}, u / 2, (u > 0.5) * 1.0),
             ("spiegelhalter_z", {}, u / 2, (u > 0.5) * 1.0), ("f1", {"from_logits": True}, u, (u > 0.5) * 1.0)]
    libraries = ["numpy"] + [b for b in ("torch", "jax", "mlx") if installed(b)]
    for name, options, x, t in cases:
        for lib in libraries:
            nx, nt = native(lib, x), native(lib, t)
            loss = mlo.get(name, **options)
            loss.value_and_grad(nx, nt)
            loss.vjp(native(lib, 1.0), nx, nt)
            np.testing.assert_array_equal(to_numpy(nx), x)
            np.testing.assert_array_equal(to_numpy(nt), t)


@pytest.mark.skipif(not installed("jax"), reason="jax is not installed")
def test_traces_under_jax_jit():
    import jax
    import jax.numpy as jnp

    jax.config.update("jax_enable_x64", True)
    rng = np.random.default_rng(8)
    u = rng.uniform(0.1, 1, (5, 3))
    cases = [("brier", {}, u / u.sum(-1, keepdims=True), np.array([0, 1, 2, 1, 0])),
             ("brier", {"mode": "binary", "from_logits": True}, u, (u > 0.5) * 1.0),
             ("spiegelhalter_z", {}, u * 0.9, (u > 0.5) * 1.0)] + [(m, {}, u * 0.9, (u > 0.5) * 1.0) for m in ANYLOSS]
    for name, options, x, t in cases:
        loss = mlo.get(name, **options)
        f = jax.jit(lambda a, b: loss.value_and_grad(a, b))
        value, grads = f(jnp.asarray(x), jnp.asarray(t))
        expected, expected_grads = loss.value_and_grad(x, t)
        close(value, expected, rtol=1e-12)
        close(grads["input"], expected_grads["input"], rtol=1e-12, atol=1e-15)


def test_array_api_strict():
    xps = pytest.importorskip("array_api_strict")
    for _, name, options, maker, _ in CASES[::2]:
        arrays = maker(np.random.default_rng(9))
        strict = {k: xps.asarray(v) for k, v in arrays.items()}
        loss = mlo.get(name, reduction="none", **options)
        out = loss(**strict)
        assert type(out).__module__.startswith("array_api_strict")
        close(np.asarray(out), reference(name, options, arrays), rtol=1e-11, atol=1e-12)
        ct = np.random.default_rng(10).normal(size=tuple(out.shape))
        close(np.asarray(loss.vjp(xps.asarray(ct), **strict)["input"]), loss.vjp(ct, **arrays)["input"],
              rtol=1e-12, atol=1e-15)


# --------------------------------------------------------------------------
# errors


def _raises(error, match, name, *args, **options):
    with pytest.raises(error, match=match):
        mlo.get(name, **options)(*args)


def test_invalid_targets_are_named_with_the_value():
    p = np.full((3, 4), 0.25)
    _raises(ValueError, r"`target` must hold class indices in \[0, 4\); got 4", "brier", p, np.array([0, 4, 1]))
    _raises(ValueError, r"`target` must hold class indices in \[0, 4\); got -1", "brier", p, np.array([0, -1, 1]))
    _raises(TypeError, r"`target` must hold integer class indices; got dtype float64", "brier", p, np.zeros(3))
    _raises(ValueError, r"`target` must have shape \(3,\) \(class indices\) or \(3, 4\) \(class probabilities\); "
                        r"got \(4,\)", "brier", p, np.zeros(4, int))
    _raises(ValueError, r"`target` must be probabilities in \[0, 1\]; got a value of 1.5", "brier", p,
            np.full((3, 4), 1.5))
    _raises(ValueError, r"`target` must be probabilities in \[0, 1\]; got a value of -0.5", "brier", p,
            np.full((3, 4), -0.5), mode="binary")
    _raises(ValueError, r"`input` and `target` must have the same shape; got \(3, 4\) and \(3,\)", "brier", p,
            np.zeros(3), mode="binary")
    y = np.array([0.0, 1.0, 0.5])
    for name in ("spiegelhalter_z",) + ANYLOSS:
        _raises(ValueError, r"`target` must hold binary labels 0 or 1; got 0.5", name, np.full(3, 0.4), y)
        _raises(ValueError, r"`target` must hold binary labels 0 or 1; got 2\b", name, np.full(3, 0.4),
                np.array([0, 2, 1]))
        _raises(TypeError, r"`target` must be a real, integer or boolean array; got dtype complex128", name,
                np.full(3, 0.4), np.zeros(3, complex))
        _raises(ValueError, r"`input` and `target` must have the same shape", name, np.full(3, 0.4), np.zeros(2))
        _raises(ValueError, r"`input` must have at least 1 dimension", name, np.float64(0.4), np.float64(1.0))


def test_invalid_inputs_and_options():
    p = np.array([[0.2, 1.2], [0.5, 0.5]])
    for name in METRICS:
        target = np.array([0, 1]) if name == "brier" else np.ones((2, 2))
        _raises(ValueError, r"`input` must be probabilities in \[0, 1\] \(pass from_logits=True for logits\); "
                            r"got a value of 1.2", name, p, target)
        _raises(ValueError, r"got a value of nan", name, np.array([[0.2, np.nan], [0.5, 0.5]]), target)
        _raises(TypeError, r"`input` must be a real floating-point array", name, np.ones((2, 2), int), target)
        mlo.get(name, from_logits=True)(p, target)  # logits may be anything
        with pytest.raises(TypeError, match=r"`from_logits` must be True or False; got 'yes' \(str\)"):
            mlo.get(name, from_logits="yes")
    with pytest.raises(ValueError, match=r"`mode` must be one of 'multiclass', 'binary'; got 'ternary'"):
        mlo.get("brier", mode="ternary")
    with pytest.raises(ValueError, match=r"`eps` must lie in \(0, inf\); got 0"):
        mlo.get("spiegelhalter_z", eps=0)
    for name in ANYLOSS:
        with pytest.raises(ValueError, match=r"`amplifying_scale` must lie in \(0, inf\); got -1"):
            mlo.get(name, amplifying_scale=-1)
    with pytest.raises(ValueError, match=r"`beta` must lie in \(0, inf\); got 0"):
        mlo.get("f_beta", beta=0)
    with pytest.raises(TypeError, match="unknown option `beta`"):
        mlo.get("f1", beta=2.0)


@pytest.mark.skipif(not installed("mlx"), reason="mlx is not installed")
def test_mlx_errors_show_the_value():
    import mlx.core as mx

    with pytest.raises(ValueError, match=r"binary labels 0 or 1; got 0.5"):
        mlo.get("f1")(mx.array([0.2, 0.3]), mx.array([1.0, 0.5]))
    with pytest.raises(ValueError, match=r"probabilities in \[0, 1\].*got a value of 1.5"):
        mlo.get("spiegelhalter_z")(mx.array([0.2, 1.5]), mx.array([1.0, 0.0]))


def test_config_round_trip():
    for name, options in [("brier", {"mode": "binary", "from_logits": True}),
                          ("spiegelhalter_z", {"eps": 1e-5, "chance_corrected": True, "normalize_by_n": True}),
                          ("f_beta", {"beta": 2.0, "amplifying_scale": 10.0, "from_logits": True})]:
        loss = mlo.get(name, reduction="sum", **options)
        cfg = loss.to_config()
        assert cfg == {"name": name, "reduction": "sum", **{**loss.options, **options}}
        assert mlo.from_config(cfg).options == loss.options
