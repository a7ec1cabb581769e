"""Distances between samples and vectors (wasserstein_distance, maximum_mean_discrepancy, energy_distance,
cosine_similarity) against independent references.

Every expected number here comes from outside the code under test: SciPy
(``wasserstein_distance``, ``energy_distance``, ``linear_sum_assignment`` for
the optimal transport), PyTorch (``cosine_similarity`` and autograd of torch
formulas written here), optax, NumPy formulas written in this file,
hand-computed cases, and float64 finite differences of the NumPy formulas.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import optimize, stats

import mithril_losses as mlo

DISTANCES = ("wasserstein_distance", "maximum_mean_discrepancy", "energy_distance", "cosine_similarity")


def close(actual, expected, rtol=1e-12, atol=1e-12):
    np.testing.assert_allclose(np.asarray(actual, dtype=np.float64), np.asarray(expected, dtype=np.float64),
                               rtol=rtol, atol=atol)


def tt(a, grad=False):
    return torch.tensor(np.asarray(a, dtype=np.float64), requires_grad=grad)


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


# --------------------------------------------------------------------------
# independent NumPy references (unreduced), written from the formulas


def ref_wasserstein(u, v, p=1, axis=-1):
    d = np.sort(u, axis=axis) - np.sort(v, axis=axis)
    return np.mean(np.abs(d) ** p, axis=axis) ** (1.0 / p)


def _pairwise_sq(a, b):
    return np.sum((a[..., :, None, :] - b[..., None, :, :]) ** 2, axis=-1)


def ref_mmd(x, y, kernel="rbf", bandwidth=1.0, degree=3, coef0=1.0):
    def k(a, b):
        if kernel == "rbf":
            sigmas = bandwidth if isinstance(bandwidth, (tuple, list)) else (bandwidth,)
            return sum(np.exp(-_pairwise_sq(a, b) / (2.0 * s * s)) for s in sigmas)
        dot = a @ np.swapaxes(b, -1, -2)
        return dot if kernel == "linear" else (dot / a.shape[-1] + coef0) ** degree

    return (k(x, x).mean(axis=(-2, -1)) + k(y, y).mean(axis=(-2, -1)) - 2.0 * k(x, y).mean(axis=(-2, -1)))


def ref_energy(x, y, beta=1.0):
    def mean_dist(a, b):
        return (np.sqrt(_pairwise_sq(a, b)) ** beta).mean(axis=(-2, -1))

    return 2.0 * mean_dist(x, y) - mean_dist(x, x) - mean_dist(y, y)


def ref_cosine(a, b, axis=-1, eps=1e-8):
    na = np.maximum(np.linalg.norm(a, axis=axis, keepdims=True), eps)
    nb = np.maximum(np.linalg.norm(b, axis=axis, keepdims=True), eps)
    return -np.sum((a / na) * (b / nb), axis=axis)


# torch formulas (independent of the code under test) for values and autograd gradients


def torch_formula(name, arrays, options):
    o = dict(options)
    if name == "wasserstein_distance":
        u, v = arrays["u"], arrays["v"]
        axis, p = o.get("axis", -1), o.get("p", 1)
        d = torch.sort(u, dim=axis).values - torch.sort(v, dim=axis).values
        return (d.abs() ** p).mean(dim=axis) ** (1.0 / p)
    if name == "cosine_similarity":
        return -F.cosine_similarity(arrays["input"], arrays["target"], dim=o.get("axis", -1), eps=o.get("eps", 1e-8))
    x, y = arrays["x"], arrays["y"]

    def sq(a, b):
        return ((a.unsqueeze(-2) - b.unsqueeze(-3)) ** 2).sum(-1)

    if name == "energy_distance":
        beta = o.get("beta", 1.0)

        def mean_dist(a, b, own):
            s = sq(a, b)
            if own:  # the diagonal is 0 (sqrt has no derivative there)
                s = s + torch.eye(s.shape[-1], dtype=s.dtype)
                return ((s.sqrt() ** beta) * (1 - torch.eye(s.shape[-1], dtype=s.dtype))).mean((-2, -1))
            return (s.sqrt() ** beta).mean((-2, -1))

        return 2 * mean_dist(x, y, False) - mean_dist(x, x, True) - mean_dist(y, y, True)
    kernel = o.get("kernel", "rbf")
    if kernel == "rbf":
        sigmas = o.get("bandwidth", 1.0)
        sigmas = sigmas if isinstance(sigmas, (tuple, list)) else (sigmas,)

        def k(a, b):
            return sum(torch.exp(-sq(a, b) / (2 * s * s)) for s in sigmas)
    else:
        def k(a, b):
            dot = a @ b.transpose(-1, -2)
            return dot if kernel == "linear" else (dot / a.shape[-1] + o.get("coef0", 1.0)) ** o.get("degree", 3)
    return k(x, x).mean((-2, -1)) + k(y, y).mean((-2, -1)) - 2 * k(x, y).mean((-2, -1))


def torch_value_and_grads(name, arrays, options, ct=None):
    t = {n: tt(a, grad=True) for n, a in arrays.items()}
    value = torch_formula(name, t, options)
    ct = np.ones(tuple(value.shape)) if ct is None else ct
    grads = torch.autograd.grad(value, list(t.values()), tt(ct))
    return value.detach().numpy(), {n: g.numpy() for n, g in zip(t, grads)}


# --------------------------------------------------------------------------
# samplers (float64, away from ties and coincidences)


def sorted_apart(rng, shape, axis=-1):
    """Samples along ``axis`` at least 0.3 apart, and a second set whose order statistics differ by >= 0.05."""
    moved = np.moveaxis(np.empty(shape), axis, -1).shape
    su = rng.uniform(-1.0, 1.0, moved[:-1] + (1,)) + rng.uniform(0.3, 1.0, moved).cumsum(-1)
    sv = su + rng.choice([-1.0, 1.0], moved) * rng.uniform(0.05, 0.12, moved)
    return (np.moveaxis(rng.permuted(su, axis=-1), -1, axis), np.moveaxis(rng.permuted(sv, axis=-1), -1, axis))


def sample_sets(rng, n=5, m=7, d=3, batch=()):
    return rng.normal(0.0, 0.8, batch + (n, d)), rng.normal(0.4, 1.0, batch + (m, d))


def case(name, rng, options=None):
    """(arrays, options) of an ordinary input for each loss."""
    if name == "wasserstein_distance":
        u, v = sorted_apart(rng, (3, 6))
        return {"u": u, "v": v}, options or {"p": 2}
    if name == "cosine_similarity":
        return {"input": rng.normal(size=(4, 5)), "target": rng.normal(size=(4, 5))}, options or {}
    x, y = sample_sets(rng, batch=(2,))
    return {"x": x, "y": y}, options or ({"bandwidth": (0.5, 2.0)} if name == "maximum_mean_discrepancy"
                                         else {"beta": 1.5})


# --------------------------------------------------------------------------
# registry


def test_registered_in_the_probabilistic_family():
    assert set(DISTANCES) <= set(mlo.available(family="probabilistic"))
    for name in DISTANCES:
        assert mlo.get(name).family == "probabilistic"


@pytest.mark.parametrize("alias, name", [
    ("mmd", "maximum_mean_discrepancy"), ("mmd_loss", "maximum_mean_discrepancy"),
    ("cosine_proximity", "cosine_similarity"), ("cosine_similarity_loss", "cosine_similarity"),
])
def test_aliases(alias, name):
    assert mlo.get(alias).name == name


def test_inputs_options_and_functional_names():
    w = mlo.get("wasserstein_distance")
    assert (w.inputs, w.differentiable) == (("u", "v"), ("u", "v"))
    assert {k: v for k, v in w.to_config().items() if k not in ("name", "reduction")} == {"p": 1, "axis": -1}
    m = mlo.get("mmd")
    assert (m.inputs, m.differentiable) == (("x", "y"), ("x", "y"))
    assert m.options == {"kernel": "rbf", "bandwidth": 1.0, "degree": 3, "coef0": 1.0}
    assert mlo.get("energy_distance").options == {"beta": 1.0}
    c = mlo.get("cosine_similarity")
    assert (c.inputs, c.differentiable, c.options) == (("input", "target"), ("input", "target"),
                                                      {"axis": -1, "eps": 1e-8})
    # PyTorch's cosine_similarity is the similarity (+cos), so it is not a function name here
    assert not hasattr(mlo.functional, "cosine_similarity")
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(3, 4)), rng.normal(size=(3, 4))
    close(mlo.functional.cosine_similarity_loss(a, b), ref_cosine(a, b).mean())
    x, y = sample_sets(rng)
    close(mlo.functional.mmd_loss(x, y), ref_mmd(x, y))
    close(mlo.functional.maximum_mean_discrepancy_loss(x, y), ref_mmd(x, y))
    close(mlo.functional.energy_distance_loss(x, y), ref_energy(x, y))
    u, v = sorted_apart(rng, (6,))
    close(mlo.functional.wasserstein_distance_loss(u, v), ref_wasserstein(u, v))
    # the functional gradient is that of the prediction, the first input (the loss's grad gives both)
    close(mlo.functional.wasserstein_distance_loss_gradient(u, v), mlo.get("wasserstein_distance").grad(u, v)["u"])
    cfg = mlo.get("mmd", bandwidth=[0.5, 2.0]).to_config()
    assert mlo.from_config(cfg).options["bandwidth"] == (0.5, 2.0)


# --------------------------------------------------------------------------
# wasserstein_distance


def test_wasserstein_artifex_example_hand_computed():
    u = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    v = np.array([[1.5, 2.5, 3.5], [4.5, 5.5, 6.5]])
    for p in (1, 2):
        loss = mlo.get("wasserstein_distance", p=p, axis=1, reduction="none")
        value, grads = loss.value_and_grad(u, v)
        close(value, [0.5, 0.5])
        # every sorted u is 0.5 below its v: dW/du_i = -1/3 for W1, d/(n W) = -0.5 / 1.5 for W2
        close(grads["u"], np.full((2, 3), -1.0 / 3.0))
        close(grads["v"], np.full((2, 3), 1.0 / 3.0))


@pytest.mark.parametrize("shape, axis", [((7,), -1), ((4, 6), -1), ((6, 4), 0), ((2, 5, 3), 1)])
def test_wasserstein_p1_matches_scipy(shape, axis):
    rng = np.random.default_rng(hash(shape) % 1000)
    u, v = rng.normal(size=shape), rng.normal(0.5, 2.0, size=shape)
    value = mlo.get("wasserstein_distance", axis=axis, reduction="none")(u, v)
    um, vm = np.moveaxis(u, axis, -1), np.moveaxis(v, axis, -1)
    expected = np.array([stats.wasserstein_distance(a, b) for a, b in zip(um.reshape(-1, um.shape[-1]),
                                                                          vm.reshape(-1, vm.shape[-1]))])
    close(value, expected.reshape(um.shape[:-1]))


def test_wasserstein_p2_is_the_optimal_assignment():
    # W2^2 = min over one-to-one couplings of mean (u_i - v_s(i))^2: scipy's assignment solver
    rng = np.random.default_rng(2)
    u, v = rng.normal(size=(4, 8)), rng.exponential(size=(4, 8))
    value = mlo.get("wasserstein_distance", p=2, reduction="none")(u, v)
    for row, (a, b) in enumerate(zip(u, v)):
        cost = (a[:, None] - b[None, :]) ** 2
        i, j = optimize.linear_sum_assignment(cost)
        close(value[row], math.sqrt(cost[i, j].mean()))
    # and the 1-D quantile-function integral: W2^2 = int_0^1 (F^-1(q) - G^-1(q))^2 dq with step quantiles
    q = (np.arange(8000) + 0.5) / 8000
    inv = [np.quantile(r, q, method="inverted_cdf") for r in (u[0], v[0])]
    close(value[0], math.sqrt(np.mean((inv[0] - inv[1]) ** 2)), rtol=1e-9)


@pytest.mark.parametrize("p", [1, 2])
@pytest.mark.parametrize("shape, axis", [((3, 6), -1), ((5, 2), 0), ((2, 4, 3), 1)])
def test_wasserstein_gradients_through_the_sort(shape, axis, p):
    rng = np.random.default_rng(10 * p + len(shape))
    u, v = sorted_apart(rng, shape, axis)
    arrays = {"u": u, "v": v}
    loss = mlo.get("wasserstein_distance", p=p, axis=axis, reduction="none")
    value = loss(u, v)
    close(value, ref_wasserstein(u, v, p, axis))
    ct = rng.uniform(0.5, 1.5, value.shape)
    grads = loss.vjp(ct, u, v)
    for name in arrays:
        fd = numeric_grad(lambda a: float(np.sum(ct * ref_wasserstein(a["u"], a["v"], p, axis))), arrays, name)
        close(grads[name], fd, rtol=1e-8, atol=1e-9)
    _, auto = torch_value_and_grads("wasserstein_distance", arrays, {"p": p, "axis": axis}, ct)
    for name in arrays:
        close(grads[name], auto[name])


def test_wasserstein_zero_distance_and_translation():
    u = np.array([0.3, -1.2, 2.5, 0.9])
    v = u[[2, 0, 3, 1]]  # the same samples in another order
    for p in (1, 2):
        value, grads = mlo.get("wasserstein_distance", p=p).value_and_grad(u, v)
        assert value == 0.0
        for g in grads.values():
            assert np.all(np.isfinite(g)) and np.all(g == 0.0)
        # moving every sample by c moves the distribution by exactly |c|
        close(mlo.get("wasserstein_distance", p=p)(u, u - 0.75), 0.75)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_wasserstein_large_values(dtype):
    rng = np.random.default_rng(4)
    u, v = (a * 1e6 for a in sorted_apart(rng, (3, 5)))
    value, grads = mlo.get("wasserstein_distance", p=2).value_and_grad(u.astype(dtype), v.astype(dtype))
    ref, auto = torch_value_and_grads("wasserstein_distance", {"u": u, "v": v}, {"p": 2})
    close(value, ref.mean(), rtol=1e-6 if dtype == "float32" else 1e-12)
    for name, g in grads.items():
        assert g.dtype == dtype
        close(g, auto[name] / 3.0, rtol=1e-5 if dtype == "float32" else 1e-12, atol=0)


def test_wasserstein_errors():
    u = np.zeros((2, 3))
    with pytest.raises(ValueError, match=r"`u` and `v` must have the same shape: equally many samples along "
                                         r"axis=-1.*got \(2, 3\) and \(2, 4\)"):
        mlo.get("wasserstein_distance")(u, np.zeros((2, 4)))
    with pytest.raises(ValueError, match=r"axis=0.*got \(2, 3\) and \(3, 3\)"):
        mlo.get("wasserstein_distance", axis=0)(u, np.zeros((3, 3)))
    with pytest.raises(ValueError, match="`p` must be one of 1, 2; got 3"):
        mlo.get("wasserstein_distance", p=3)
    with pytest.raises(TypeError, match="`p` must be an integer; got 1.5"):
        mlo.get("wasserstein_distance", p=1.5)
    with pytest.raises(TypeError, match="`axis` must be an integer; got \\(0, 1\\)"):
        mlo.get("wasserstein_distance", axis=(0, 1))
    with pytest.raises(ValueError, match="`axis` 2 is out of range for an array of 2 dimensions"):
        mlo.get("wasserstein_distance", axis=2)(u, u)
    with pytest.raises(ValueError, match="`u` must have at least 1 dimension"):
        mlo.get("wasserstein_distance")(np.float64(1.0), np.float64(2.0))
    with pytest.raises(TypeError, match="`v` must be a real floating-point array"):
        mlo.get("wasserstein_distance")(u, np.zeros((2, 3), dtype=np.int64))


# --------------------------------------------------------------------------
# maximum_mean_discrepancy

MMD_OPTIONS = [{}, {"bandwidth": 0.5}, {"bandwidth": (0.5, 1.0, 4.0)}, {"kernel": "linear"},
               {"kernel": "polynomial"}, {"kernel": "polynomial", "degree": 2, "coef0": -0.5},
               {"kernel": "polynomial", "degree": 1, "coef0": 0.0}]


@pytest.mark.parametrize("options", MMD_OPTIONS, ids=lambda o: "-".join(f"{k}={v}" for k, v in o.items()) or "default")
def test_mmd_matches_formula_and_finite_differences(options):
    rng = np.random.default_rng(len(repr(options)))
    x, y = sample_sets(rng, n=4, m=6, d=3, batch=(2,))
    loss = mlo.get("mmd", reduction="none", **options)
    value = loss(x, y)
    assert value.shape == (2,)
    close(value, ref_mmd(x, y, **options))
    ct = np.array([0.7, -1.3])
    grads = loss.vjp(ct, x, y)
    arrays = {"x": x, "y": y}
    for name in arrays:
        fd = numeric_grad(lambda a: float(np.sum(ct * ref_mmd(a["x"], a["y"], **options))), arrays, name)
        close(grads[name], fd, rtol=1e-8, atol=1e-9)
    _, auto = torch_value_and_grads("maximum_mean_discrepancy", arrays, options, ct)
    for name in arrays:
        close(grads[name], auto[name])


def test_mmd_kernel_identities():
    rng = np.random.default_rng(5)
    x, y = sample_sets(rng, n=6, m=4, d=2)
    # linear kernel: |mean x - mean y|^2; polynomial of degree 1 with coef0 0 is the linear kernel over d
    close(mlo.get("mmd", kernel="linear")(x, y), np.sum((x.mean(0) - y.mean(0)) ** 2))
    close(mlo.get("mmd", kernel="polynomial", degree=1, coef0=0.0)(x, y), np.sum((x.mean(0) - y.mean(0)) ** 2) / 2)
    # several bandwidths: the sum of the single-bandwidth discrepancies
    total = sum(mlo.get("mmd", bandwidth=s)(x, y) for s in (0.3, 1.0, 3.0))
    close(mlo.get("mmd", bandwidth=[0.3, 1.0, 3.0])(x, y), total)
    # hand-computed: one point each, rbf: 2 - 2 exp(-|a - b|^2 / 2)
    a, b = np.array([[0.0, 0.0]]), np.array([[3.0, 4.0]])
    close(mlo.get("mmd")(a, b), 2.0 - 2.0 * math.exp(-12.5))


@pytest.mark.parametrize("kernel", ["rbf", "linear", "polynomial"])
def test_mmd_identical_sets_give_zero_and_zero_gradient(kernel):
    rng = np.random.default_rng(6)
    x = rng.normal(size=(5, 3))
    value, grads = mlo.get("mmd", kernel=kernel).value_and_grad(x, x.copy())
    close(value, 0.0, atol=1e-14)
    for g in grads.values():
        close(g, np.zeros_like(g), atol=1e-14)
    # coincident points inside one set: finite (the rbf squared distance is floored at 0)
    y = np.concatenate([x[:2], x[:2]])
    value, grads = mlo.get("mmd").value_and_grad(x, y)
    close(value, ref_mmd(x, y))
    assert all(np.all(np.isfinite(g)) for g in grads.values())


def test_mmd_artifex_example_shape():
    rng = np.random.default_rng(7)
    pred, target = rng.normal(size=(2, 100, 5)), rng.normal(size=(2, 100, 5))
    value = mlo.get("mmd", reduction="none", kernel="rbf", bandwidth=1.0)(pred, target)
    close(value, ref_mmd(pred, target))
    assert value.shape == (2,) and np.all(value > 0) and np.all(value < 0.1)  # same distribution: small
    # per-batch weights of the engine: a weighted mean over the batch
    w = np.array([1.0, 3.0])
    close(mlo.get("mmd")(pred, target, weight=w), np.sum(w * value) / 4.0)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_mmd_float32_against_float64_reference(dtype):
    rng = np.random.default_rng(8)
    x, y = sample_sets(rng, n=40, m=30, d=6, batch=(2,))
    x, y = x.astype(dtype), y.astype(dtype)
    opts = {"bandwidth": (1.0, 3.0)}
    value, grads = mlo.get("mmd", reduction="sum", **opts).value_and_grad(x, y)
    ref, auto = torch_value_and_grads("maximum_mean_discrepancy", {"x": x, "y": y}, opts)
    tol = 5e-5 if dtype == "float32" else 1e-11
    close(value, ref.sum(), rtol=tol)
    for name, g in grads.items():
        assert g.dtype == dtype
        close(g, auto[name], rtol=tol, atol=tol * np.abs(auto[name]).max())


def test_mmd_errors():
    x = np.zeros((4, 3))
    with pytest.raises(ValueError, match=r"`x` and `y` must be sample sets.*got \(4, 3\) and \(5, 2\)"):
        mlo.get("mmd")(x, np.zeros((5, 2)))
    with pytest.raises(ValueError, match=r"same leading dimensions.*got \(2, 4, 3\) and \(3, 4, 3\)"):
        mlo.get("mmd")(np.zeros((2, 4, 3)), np.zeros((3, 4, 3)))
    with pytest.raises(ValueError, match=r"`y` must have at least 2 dimension\(s\); got shape \(3,\)"):
        mlo.get("mmd")(x, np.zeros(3))
    with pytest.raises(ValueError, match="`kernel` must be one of 'rbf', 'linear', 'polynomial'; got 'gaussian'"):
        mlo.get("mmd", kernel="gaussian")
    with pytest.raises(ValueError, match=r"`bandwidth` must lie in \(0, inf\); got 0"):
        mlo.get("mmd", bandwidth=0)
    with pytest.raises(ValueError, match="`bandwidth`.*got -1.0"):
        mlo.get("mmd", bandwidth=[1.0, -1.0])
    with pytest.raises(TypeError, match="`bandwidth` must be a number or a non-empty sequence"):
        mlo.get("mmd", bandwidth=[])
    with pytest.raises(ValueError, match="`degree`.*got 0"):
        mlo.get("mmd", degree=0)
    with pytest.raises(TypeError, match="`degree` must be an integer; got 2.5"):
        mlo.get("mmd", degree=2.5)
    with pytest.raises(TypeError, match="unknown option `kernel_type`. Did you mean kernel"):
        mlo.get("mmd", kernel_type="rbf")  # Artifex's name; here `kernel`


# --------------------------------------------------------------------------
# energy_distance


def test_energy_distance_root_is_scipys_for_1d_samples():
    rng = np.random.default_rng(9)
    for n, m in ((5, 5), (6, 9), (1, 4)):
        x, y = rng.normal(size=(n, 1)), rng.gamma(2.0, size=(m, 1))
        value = mlo.get("energy_distance")(x, y)
        close(math.sqrt(value), stats.energy_distance(x[:, 0], y[:, 0]))


@pytest.mark.parametrize("beta", [0.5, 1.0, 1.5, 2.0])
def test_energy_distance_matches_formula_and_finite_differences(beta):
    rng = np.random.default_rng(int(10 * beta))
    x, y = sample_sets(rng, n=4, m=5, d=3, batch=(2,))
    loss = mlo.get("energy_distance", beta=beta, reduction="none")
    value = loss(x, y)
    close(value, ref_energy(x, y, beta))
    ct = np.array([1.1, -0.4])
    grads = loss.vjp(ct, x, y)
    arrays = {"x": x, "y": y}
    for name in arrays:
        fd = numeric_grad(lambda a: float(np.sum(ct * ref_energy(a["x"], a["y"], beta))), arrays, name)
        close(grads[name], fd, rtol=1e-8, atol=1e-9)
    _, auto = torch_value_and_grads("energy_distance", arrays, {"beta": beta}, ct)
    for name in arrays:
        close(grads[name], auto[name])


def test_energy_distance_beta_two_is_twice_the_mean_gap():
    rng = np.random.default_rng(11)
    x, y = sample_sets(rng, n=5, m=3, d=4)
    close(mlo.get("energy_distance", beta=2.0)(x, y), 2.0 * np.sum((x.mean(0) - y.mean(0)) ** 2))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("beta", [0.5, 1.0, 1.5, 2.0])
def test_energy_distance_coincident_points_are_finite(beta, dtype):
    x = np.array([[0.0, 1.0], [0.0, 1.0], [2.0, 3.0]])  # a repeated point
    y = np.array([[2.0, 3.0], [5.0, -1.0]])              # and a point shared with x
    value, grads = mlo.get("energy_distance", beta=beta).value_and_grad(x.astype(dtype), y.astype(dtype))
    close(value, ref_energy(x, y, beta), rtol=1e-6 if dtype == "float32" else 1e-12)
    assert all(np.all(np.isfinite(g)) for g in grads.values())
    # the gradient sums only the pairs that are apart (a coincident pair contributes 0): written out here
    def grad_x(x, y):
        def block(a, b, w):
            diff = a[:, None, :] - b[None, :, :]
            s = np.sum(diff**2, axis=-1)
            h = np.where(s > 0, beta * np.where(s > 0, s, 1.0) ** (beta / 2 - 1), 0.0) * w
            return np.sum(h[..., None] * diff, axis=1)
        return block(x, y, 2.0 / 6) - 2 * block(x, x, 1.0 / 9)
    close(grads["x"], grad_x(x, y), rtol=1e-5 if dtype == "float32" else 1e-12, atol=1e-6)
    if beta > 1 and dtype == "float64":  # |d|^beta is differentiable at 0 (derivative 0): finite differences agree
        fd = numeric_grad(lambda a: float(ref_energy(a["x"], a["y"], beta)), {"x": x, "y": y}, "x", h=1e-4)
        close(grads["x"], fd, rtol=1e-6, atol=1e-6)


def test_energy_distance_identical_sets_are_zero():
    x = np.random.default_rng(12).normal(size=(4, 2))
    value, grads = mlo.get("energy_distance").value_and_grad(x, x.copy())
    close(value, 0.0, atol=1e-15)
    for g in grads.values():
        close(g, np.zeros_like(g), atol=1e-15)


def test_energy_distance_errors():
    x = np.zeros((4, 3))
    with pytest.raises(ValueError, match=r"`beta` must lie in \(0, 2\]; got 0"):
        mlo.get("energy_distance", beta=0)
    with pytest.raises(ValueError, match=r"`beta` must lie in \(0, 2\]; got 2.5"):
        mlo.get("energy_distance", beta=2.5)
    with pytest.raises(TypeError, match="`beta` must be a real number; got '1'"):
        mlo.get("energy_distance", beta="1")
    with pytest.raises(ValueError, match=r"`x` and `y` must be sample sets.*got \(4, 3\) and \(4, 4\)"):
        mlo.get("energy_distance")(x, np.zeros((4, 4)))
    with pytest.raises(ValueError, match=r"`x` must have at least 2 dimension"):
        mlo.get("energy_distance")(np.zeros(3), x)


# --------------------------------------------------------------------------
# cosine_similarity


@pytest.mark.parametrize("shape, options", [((4, 5), {}), ((4, 5), {"axis": 0}), ((2, 3, 4), {"axis": 1}),
                                            ((6, 3), {"eps": 0.5})])
def test_cosine_matches_torch(shape, options):
    rng = np.random.default_rng(len(shape) + len(options))
    a, b = rng.normal(size=shape), rng.normal(size=shape)
    loss = mlo.get("cosine_similarity", reduction="none", **options)
    value = loss(a, b)
    ref, auto = torch_value_and_grads("cosine_similarity", {"input": a, "target": b}, options)
    close(value, ref)
    close(value, ref_cosine(a, b, **options))
    grads = loss.vjp(np.ones(value.shape), a, b)
    for name in ("input", "target"):
        close(grads[name], auto[name])


def test_cosine_matches_optax_with_epsilon_on_the_squared_norm():
    jax = pytest.importorskip("jax")
    optax = pytest.importorskip("optax")
    jax.config.update("jax_enable_x64", True)
    rng = np.random.default_rng(13)
    a, b = rng.normal(size=(5, 4)), rng.normal(size=(5, 4))
    a[0] = 0.0  # a zero vector: finite here and in optax once its epsilon is eps^2
    eps = 1e-3

    def f(a, b):
        return -optax.losses.cosine_similarity(a, b, epsilon=eps**2).sum()

    ref = f(jax.numpy.asarray(a), jax.numpy.asarray(b))
    ga, gb = jax.grad(f, argnums=(0, 1))(jax.numpy.asarray(a), jax.numpy.asarray(b))
    value, grads = mlo.get("cosine_similarity", eps=eps, reduction="sum").value_and_grad(a, b)
    close(value, ref)
    close(grads["input"], ga)
    close(grads["target"], gb)


def test_cosine_matches_keras_formula():
    # Keras: -sum(l2_normalize(y_true) * l2_normalize(y_pred)), l2_normalize(x) = x / sqrt(max(sum x^2, 1e-12))
    rng = np.random.default_rng(14)
    a, b = rng.normal(size=(3, 4)), rng.normal(size=(3, 4))
    a[1] = 1e-8

    def l2_normalize(x):
        return x / np.sqrt(np.maximum(np.sum(x * x, axis=-1, keepdims=True), 1e-12))

    close(mlo.get("cosine_proximity", eps=1e-6, reduction="none")(a, b), -np.sum(l2_normalize(a) * l2_normalize(b), -1))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_cosine_zero_vectors_are_finite(dtype):
    a = np.array([[0.0, 0.0, 0.0], [1.0, 2.0, 2.0], [0.0, 0.0, 0.0]], dtype=dtype)
    b = np.array([[1.0, -2.0, 2.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]], dtype=dtype)
    value, grads = mlo.get("cosine_similarity", reduction="none").value_and_grad(a, b)
    close(value, [0.0, 0.0, 0.0])
    # the floored norm is eps: d(-a.b / (eps |b|))/da = -b^/eps for a zero a; the other side's gradient is 0
    close(grads["input"][0], -np.array([1.0, -2.0, 2.0]) / 3.0 / 1e-8, rtol=1e-6 if dtype == "float32" else 1e-12)
    close(grads["target"][1], -np.array([1.0, 2.0, 2.0]) / 3.0 / 1e-8, rtol=1e-6 if dtype == "float32" else 1e-12)
    close(grads["target"][0], 0.0)
    close(grads["input"][1], 0.0)
    close(grads["input"][2], 0.0)
    close(grads["target"][2], 0.0)
    assert all(g.dtype == dtype for g in grads.values())


def test_cosine_below_eps_is_the_exact_derivative_of_the_floored_value():
    rng = np.random.default_rng(15)
    a, b = rng.normal(size=(2, 4)) * 1e-3, rng.normal(size=(2, 4))
    eps = 0.1  # |a| < eps: the loss is linear in a there
    loss = mlo.get("cosine_similarity", eps=eps, reduction="sum")
    grads = loss.grad(a, b)
    arrays = {"input": a, "target": b}
    for name in arrays:
        fd = numeric_grad(lambda x: float(ref_cosine(x["input"], x["target"], eps=eps).sum()), arrays, name, h=1e-6)
        close(grads[name], fd, rtol=1e-8, atol=1e-9)
    close(grads["input"], -b / np.linalg.norm(b, axis=-1, keepdims=True) / eps)


@pytest.mark.parametrize("dtype, scale", [("float32", 1e15), ("float32", 1e-15), ("float64", 1e150),
                                          ("float64", 1e-150)])
def test_cosine_scale_invariance_at_extreme_magnitudes(dtype, scale):
    rng = np.random.default_rng(16)
    a, b = rng.normal(size=(3, 4)), rng.normal(size=(3, 4))
    loss = mlo.get("cosine_similarity", eps=1e-300 if dtype == "float64" else 1e-30, reduction="none")
    value, grads = loss.value_and_grad((a * scale).astype(dtype), b.astype(dtype))
    ref, auto = torch_value_and_grads("cosine_similarity", {"input": a, "target": b}, {})
    tol = 1e-6 if dtype == "float32" else 1e-12
    close(value, ref, rtol=tol, atol=tol)
    close(grads["input"] * scale, auto["input"], rtol=tol, atol=tol)  # d/d(sa) = (d/da) / s
    close(grads["target"], auto["target"], rtol=tol, atol=tol)


def test_cosine_several_axes_flatten_the_vector():
    rng = np.random.default_rng(17)
    a, b = rng.normal(size=(3, 4, 5)), rng.normal(size=(3, 4, 5))
    value, grads = mlo.get("cosine_similarity", axis=(1, 2), reduction="none").value_and_grad(a, b)
    flat, flat_grads = mlo.get("cosine_similarity", reduction="none").value_and_grad(a.reshape(3, 20),
                                                                                     b.reshape(3, 20))
    close(value, ref_cosine(a.reshape(3, 20), b.reshape(3, 20)))
    close(grads["input"], flat_grads["input"].reshape(3, 4, 5))
    value0 = mlo.get("cosine_similarity", axis=[0, -1], reduction="none")(a, b)
    close(value0, ref_cosine(np.moveaxis(a, 1, 0).reshape(4, 15), np.moveaxis(b, 1, 0).reshape(4, 15)))


def test_cosine_errors():
    a = np.zeros((3, 4))
    with pytest.raises(ValueError, match=r"`input` and `target` must have the same shape; got \(3, 4\) and \(1, 4\)"):
        mlo.get("cosine_similarity")(a, np.zeros((1, 4)))
    with pytest.raises(ValueError, match="`axis` 2 is out of range for an array of 2 dimensions"):
        mlo.get("cosine_similarity", axis=2)(a, a)
    with pytest.raises(ValueError, match="`axis` has repeated axes"):
        mlo.get("cosine_similarity", axis=(1, -1))(a, a)
    with pytest.raises(TypeError, match="`axis` must be an int, a tuple of ints or None; got 'last'"):
        mlo.get("cosine_similarity", axis="last")
    with pytest.raises(ValueError, match=r"`eps` must lie in \(0, inf\); got 0"):
        mlo.get("cosine_similarity", eps=0)
    with pytest.raises(ValueError, match="`input` must have at least 1 dimension"):
        mlo.get("cosine_similarity")(np.float64(1.0), np.float64(1.0))


# --------------------------------------------------------------------------
# every array library, jax.jit, float32, inputs never modified


@pytest.mark.parametrize("backend", ["array_api_strict", "jax", "torch", "mlx"])
@pytest.mark.parametrize("name", DISTANCES)
def test_backends_match_torch_formulas(name, backend):
    from conftest import installed, native, to_numpy

    if not installed(backend):
        pytest.skip(f"{backend} is not installed")
    arrays, options = case(name, np.random.default_rng(18))
    ref, auto = torch_value_and_grads(name, arrays, options)
    converted = {n: native(backend, a, "float64") for n, a in arrays.items()}
    value, grads = mlo.get(name, reduction="sum", **options).value_and_grad(**converted)
    close(to_numpy(value), ref.sum())
    for n, g in grads.items():
        assert type(g) is type(converted[n])
        close(to_numpy(g), auto[n], rtol=1e-11, atol=1e-13)


@pytest.mark.parametrize("name", DISTANCES)
def test_jax_jit_traces(name):
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)
    arrays, options = case(name, np.random.default_rng(19))
    ref, auto = torch_value_and_grads(name, arrays, options)
    traced = {n: jax.numpy.asarray(a) for n, a in arrays.items()}
    value, grads = jax.jit(lambda **k: mlo.get(name, reduction="sum", **options).value_and_grad(**k))(**traced)
    close(value, ref.sum())
    for n, g in grads.items():
        close(g, auto[n], rtol=1e-11, atol=1e-13)


@pytest.mark.parametrize("name", DISTANCES)
def test_float32_close_to_float64_reference(name):
    arrays, options = case(name, np.random.default_rng(20))
    single = {n: a.astype(np.float32) for n, a in arrays.items()}
    ref, auto = torch_value_and_grads(name, {n: a.astype(np.float64) for n, a in single.items()}, options)
    value, grads = mlo.get(name, reduction="sum", **options).value_and_grad(**single)
    assert value.dtype == np.float32
    close(value, ref.sum(), rtol=2e-6, atol=1e-6)
    for n, g in grads.items():
        assert g.dtype == np.float32
        close(g, auto[n], rtol=1e-5, atol=1e-5 * np.abs(auto[n]).max())


@pytest.mark.parametrize("name", DISTANCES)
def test_inputs_never_modified(name):
    arrays, options = case(name, np.random.default_rng(21))
    for lib in ("numpy", "torch"):
        given = arrays if lib == "numpy" else {n: torch.tensor(a) for n, a in arrays.items()}
        before = {n: np.array(a, copy=True) for n, a in arrays.items()}
        loss = mlo.get(name, reduction="none", **options)
        out = loss(**given)
        loss.value_and_grad(**given)
        ct = np.ones(tuple(out.shape)) if lib == "numpy" else torch.ones(tuple(out.shape), dtype=torch.float64)
        loss.vjp(ct, **given)
        for n, a in given.items():
            assert np.array_equal(np.asarray(a), before[n])
