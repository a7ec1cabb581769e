"""Listwise ranking losses and embedding regularisers (listnet, listmle, ranking_softmax, feature_alignment,
koleo, clustering) against independent references.

PyTorch has none of these losses, so every expected number comes from outside
the code under test: the formulas written here in PyTorch and differentiated by
its autograd (DINOv2's KoLeo with ``F.normalize`` and ``F.pairwise_distance``;
ListMLE as a loop of ``torch.logsumexp`` over each suffix of the relevance
order), optax's ``ranking_softmax_loss`` with ``jax.grad``, SciPy's
``logsumexp``, float64 finite differences of those formulas, and hand-computed
cases (closed forms at extreme scores, on the unit circle, for one centroid).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.special import logsumexp

import mithril_losses as mlo
from mithril_losses import _numerics, backends

from conftest import installed, native, to_numpy

torch = pytest.importorskip("torch")
F = torch.nn.functional

RANKING = ("listnet", "listmle", "ranking_softmax", "feature_alignment", "koleo", "clustering")


def close(actual, expected, rtol=1e-12, atol=1e-12):
    np.testing.assert_allclose(to_numpy(actual), np.asarray(expected, dtype=np.float64), rtol=rtol, atol=atol)


def tt(a, grad=False):
    a = np.asarray(a)
    return torch.tensor(a, dtype=torch.float64 if a.dtype.kind == "f" else None, requires_grad=grad)


# --------------------------------------------------------------------------
# references: the formulas written in PyTorch (unreduced)


def t_listnet(scores, relevance, temperature=1.0):
    return -(torch.softmax(relevance.double(), -1) * torch.log_softmax(scores / temperature, -1)).sum(-1)


def t_listmle(scores, relevance):
    n = scores.shape[-1]
    rows = []
    for s, y in zip(scores.reshape(-1, n), relevance.reshape(-1, n)):
        order = sorted(range(n), key=lambda i: (-float(y[i]), i))  # decreasing relevance, ties by position
        t = s[order]
        rows.append(sum(torch.logsumexp(t[i:], 0) - t[i] for i in range(n)))
    return torch.stack(rows).reshape(scores.shape[:-1])


def t_ranking_softmax(scores, labels, mask=None, weights=None):
    n = scores.shape[-1]
    y = labels.double() * (1.0 if weights is None else weights)
    valid = torch.ones(scores.shape, dtype=torch.bool) if mask is None else mask.expand(scores.shape)
    rows = []
    for s, yy, v in zip(scores.reshape(-1, n), y.expand(scores.shape).reshape(-1, n), valid.reshape(-1, n)):
        rows.append(-(yy[v] * torch.log_softmax(s[v], 0)).sum() if v.any() else s.sum() * 0.0)
    return torch.stack(rows).reshape(scores.shape[:-1])


def t_feature_alignment(student, teacher, margin=0.85, eps=1e-12):
    cos = (F.normalize(student, dim=-1, eps=eps) * F.normalize(teacher, dim=-1, eps=eps)).sum(-1)
    return torch.where(cos > margin, torch.zeros_like(cos), 1.0 - cos)


def t_koleo(embeddings, eps=1e-8, pdist_eps=0.0):
    """DINOv2's KoLeoLoss before its mean (PairwiseDistance's own eps left out unless given)."""
    u = F.normalize(embeddings, eps=eps, p=2, dim=-1)
    with torch.no_grad():
        dots = u @ u.transpose(-1, -2)
        dots = dots - 3.0 * torch.eye(u.shape[-2], dtype=u.dtype)  # DINOv2 fills the diagonal with -1
        nearest = dots.argmax(-1)
    neighbour = torch.gather(u, -2, nearest.unsqueeze(-1).expand(u.shape))
    return -torch.log(F.pairwise_distance(u, neighbour, eps=pdist_eps) + eps)


def t_clustering(embeddings, centroids, temperature=1.0, distance_weight=1.0, distribution_weight=0.5):
    d = ((embeddings.unsqueeze(-2) - centroids.unsqueeze(-3)) ** 2).sum(-1)
    q = torch.softmax(-d / temperature, -1)
    k = centroids.shape[-2]
    return (distance_weight * (q * d).sum(-1).mean(-1)
            + distribution_weight * ((q.mean(-2) - 1.0 / k) ** 2).mean(-1))


FORMULAS = {"listnet": t_listnet, "listmle": t_listmle, "ranking_softmax": t_ranking_softmax,
            "feature_alignment": t_feature_alignment, "koleo": t_koleo, "clustering": t_clustering}


def torch_value_and_grads(name, arrays, options, ct=None):
    diff = mlo.get(name).differentiable
    t = {n: tt(a, grad=n in diff) for n, a in arrays.items()}
    value = FORMULAS[name](**t, **options)
    ct = np.ones(tuple(value.shape)) if ct is None else ct
    grads = torch.autograd.grad(value, [t[n] for n in diff], tt(ct))
    return value.detach().numpy(), {n: g.numpy() for n, g in zip(diff, grads)}


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
# ordinary inputs (float64, away from ties, margins and neighbour switches)


def distinct_neighbours(rng, shape):
    while True:
        x = rng.normal(size=shape)
        u = x / np.linalg.norm(x, axis=-1, keepdims=True)
        d = np.sort(np.linalg.norm(u[..., :, None, :] - u[..., None, :, :], axis=-1) + 10 * np.eye(shape[-2]), -1)
        if (d[..., 0] > 0.1).all() and (d[..., 1] - d[..., 0] > 0.05).all():
            return x


def case(name, rng, options=None):
    if name in ("listnet", "listmle"):
        return {"scores": rng.normal(0, 2, (2, 3, 5)), "relevance": rng.uniform(0, 3, (2, 3, 5))}, options or {}
    if name == "ranking_softmax":
        mask = rng.random((3, 6)) < 0.7
        mask[:, 0] = True
        return {"scores": rng.normal(0, 2, (3, 6)), "labels": rng.integers(0, 4, (3, 6)), "mask": mask,
                "weights": rng.uniform(0.5, 2, (3, 6))}, options or {}
    if name == "feature_alignment":
        while True:  # cosines away from the margins used here (0.85, 0.3, -0.2), where the loss jumps
            t = rng.normal(size=(6, 4))
            s = rng.uniform(-1, 3, (6, 1)) * t + rng.normal(size=(6, 4))
            s[0] = t[0] + 0.01 * rng.normal(size=4)  # one pair aligned beyond the margin: loss and gradient 0
            cos = np.sum(s * t, -1) / np.linalg.norm(s, axis=-1) / np.linalg.norm(t, axis=-1)
            if np.all(np.abs(cos[:, None] - np.array([0.85, 0.3, -0.2])) > 0.05):
                return {"student": s, "teacher": t}, options or {}
    if name == "koleo":
        return {"embeddings": distinct_neighbours(rng, (2, 5, 3))}, options or {}
    return ({"embeddings": rng.normal(size=(2, 6, 3)), "centroids": rng.normal(size=(2, 4, 3))},
            options or {"temperature": 2.0})


# --------------------------------------------------------------------------
# registry, names, options


def test_registered_in_the_embedding_family():
    assert set(RANKING) <= set(mlo.available(family="embedding"))
    specs = {n: mlo.get(n) for n in RANKING}
    assert {n: (s.inputs, s.differentiable) for n, s in specs.items()} == {
        "listnet": (("scores", "relevance"), ("scores",)),
        "listmle": (("scores", "relevance"), ("scores",)),
        "ranking_softmax": (("scores", "labels", "mask", "weights"), ("scores",)),
        "feature_alignment": (("student", "teacher"), ("student", "teacher")),
        "koleo": (("embeddings",), ("embeddings",)),
        "clustering": (("embeddings", "centroids"), ("embeddings", "centroids")),
    }
    assert specs["listnet"].options == {"temperature": 1.0}
    assert specs["feature_alignment"].options == {"margin": 0.85, "eps": 1e-12}
    assert specs["koleo"].options == {"eps": 1e-8}
    assert specs["clustering"].options == {"temperature": 1.0, "distance_weight": 1.0, "distribution_weight": 0.5}
    for name in RANKING:
        assert mlo.get(f"{name}_loss").name == name
        cfg = mlo.get(name).to_config()
        assert mlo.from_config(cfg).to_config() == cfg


def test_functional_names_and_gradient_forms():
    rng = np.random.default_rng(1)
    a, _ = case("listnet", rng)
    g = mlo.functional.listnet_loss_gradient(**a, temperature=0.5)
    _, auto = torch_value_and_grads("listnet", a, {"temperature": 0.5}, ct=np.full((2, 3), 1 / 6))
    close(g, auto["scores"])
    close(mlo.functional.ranking_softmax_loss(np.zeros(4), np.array([1, 0, 0, 0])), math.log(4))
    f, _ = case("feature_alignment", rng)
    assert isinstance(mlo.functional.feature_alignment_loss_gradient(**f), np.ndarray)  # the student's
    c, o = case("clustering", rng)
    grads = mlo.functional.clustering_loss_gradient(**c, **o)
    assert set(grads) == {"embeddings", "centroids"}
    _, auto = torch_value_and_grads("clustering", c, o, ct=np.full(2, 0.5))
    close(grads["embeddings"], auto["embeddings"])
    close(grads["centroids"], auto["centroids"])


# --------------------------------------------------------------------------
# values and gradients against the PyTorch formulas and finite differences


OPTION_CASES = [("listnet", {}), ("listnet", {"temperature": 0.3}), ("listmle", {}), ("ranking_softmax", {}),
                ("feature_alignment", {}), ("feature_alignment", {"margin": -0.2}), ("koleo", {}),
                ("koleo", {"eps": 1e-3}), ("clustering", {"temperature": 2.0}),
                ("clustering", {"temperature": 0.5, "distance_weight": 0.3, "distribution_weight": 4.0})]


@pytest.mark.parametrize("name, options", OPTION_CASES)
def test_matches_torch_formula(name, options):
    rng = np.random.default_rng(2)
    a, _ = case(name, rng)
    loss = mlo.get(name, reduction="none", **options)
    ct = rng.uniform(-1, 1, np.shape(loss(**a)))
    ref, auto = torch_value_and_grads(name, a, options, ct)
    close(loss(**a), ref)
    grads = loss.vjp(ct, **a)
    assert set(grads) == set(auto)
    for n in auto:
        close(grads[n], auto[n], atol=1e-12 * max(1.0, np.abs(auto[n]).max()))


@pytest.mark.parametrize("name, options", OPTION_CASES)
def test_finite_differences_of_the_formula(name, options):
    a, _ = case(name, np.random.default_rng(3))
    loss = mlo.get(name, reduction="none", **options)
    ct = np.random.default_rng(4).uniform(-1, 1, np.shape(loss(**a)))

    def f(arrays):
        t = {n: tt(v) for n, v in arrays.items()}
        return float(np.sum(ct * FORMULAS[name](**t, **options).numpy()))

    grads = loss.vjp(ct, **a)
    for n in loss.differentiable:
        close(grads[n], numeric_grad(f, a, n), rtol=1e-7, atol=1e-8)


# --------------------------------------------------------------------------
# listnet


def test_listnet_hand_computed():
    loss = mlo.get("listnet", reduction="none")
    # equal scores: p uniform, so the loss is log n whatever the target, and the gradient is (1/n - t)
    close(loss(np.zeros(4), np.array([0.0, 1.0, 2.0, 3.0])), math.log(4))
    t = np.exp(np.arange(4.0)) / np.exp(np.arange(4.0)).sum()
    close(loss.grad(np.zeros(4), np.arange(4.0))["scores"], 0.25 - t)
    # integer relevance grades are the same as their float values
    s = np.array([0.3, -1.0, 2.0])
    close(loss(s, np.array([2, 0, 1])), t_listnet(tt(s), tt([2.0, 0.0, 1.0])).numpy())
    # temperature: -sum t log softmax(s / T), s / T = [1, 0] and t = [1/2, 1/2]
    close(mlo.get("listnet", temperature=2.0, reduction="none")(np.array([2.0, 0.0]), np.zeros(2)),
          math.log(1 + math.e) - 0.5)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_listnet_huge_scores_and_excluded_items(dtype):
    loss = mlo.get("listnet", reduction="none")
    # relevance -inf: target exactly [1, 0, 0]; scores 2e4 apart: value lse - s_0 = 2e4, gradient p - t
    s = np.array([-1e4, 0.0, 1e4], dtype=dtype)
    y = np.array([5.0, -np.inf, -np.inf], dtype=dtype)
    value, grads = loss.value_and_grad(s, y)
    close(value, 2e4, rtol=1e-7)
    close(grads["scores"], [-1.0, 0.0, 1.0])
    value, grads = loss.value_and_grad(s[::-1].copy(), y)
    close(value, 0.0, atol=1e-30)
    close(grads["scores"], [0.0, 0.0, 0.0], atol=1e-30)
    # an item with -inf relevance and -inf score adds nothing to value and gradient
    s2 = np.array([0.5, -np.inf, -1.0], dtype=dtype)
    y2 = np.array([1.0, -np.inf, 2.0], dtype=dtype)
    value, grads = loss.value_and_grad(s2, y2)
    value_without, grads_without = loss.value_and_grad(s2[[0, 2]], y2[[0, 2]])
    assert np.isfinite(value) and np.all(np.isfinite(grads["scores"])) and grads["scores"][1] == 0
    close(value, value_without, rtol=1e-6)
    close(grads["scores"][[0, 2]], grads_without["scores"], rtol=1e-6)


# --------------------------------------------------------------------------
# listmle


def test_listmle_hand_computed():
    loss = mlo.get("listmle", reduction="none")
    # two items, the first more relevant: log(e^a + e^b) - a = softplus(b - a); gradient (-s(b - a), s(b - a))
    a, b = 1.0, -0.5
    sig = 1.0 / (1.0 + math.exp(a - b))
    value, grads = loss.value_and_grad(np.array([a, b]), np.array([1.0, 0.0]))
    close(value, math.log1p(math.exp(b - a)))
    close(grads["scores"], [-sig, sig])
    # three items given in reverse relevance order: the permutation is (2, 1, 0)
    s = np.array([0.2, -1.0, 0.7])
    expected = logsumexp([0.7, -1.0, 0.2]) - 0.7 + logsumexp([-1.0, 0.2]) + 1.0
    close(loss(s, np.array([0.0, 1.0, 2.0])), expected)


def test_listmle_ties_keep_the_list_order():
    loss = mlo.get("listmle", reduction="none")
    s = np.array([0.3, -0.4, 1.1, 0.0])
    y = np.array([1.0, 2.0, 1.0, 1.0])  # order: item 1, then the tied items 0, 2, 3 as listed
    t = s[[1, 0, 2, 3]]
    close(loss(s, y), sum(logsumexp(t[i:]) - t[i] for i in range(4)))
    ref, auto = torch_value_and_grads("listmle", {"scores": s, "relevance": y}, {})
    close(loss.grad(s, y)["scores"], auto["scores"])
    for backend in ("jax", "torch", "mlx", "array_api_strict"):
        if installed(backend):
            close(loss(native(backend, s, "float64"), native(backend, y, "float64")), ref)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_listmle_huge_score_spread(dtype):
    # in relevance order the scores are -1e4, 0, 1e4: suffix sums c = (1e4, 1e4, 1e4), so the value is
    # 2e4 + 1e4 + 0 and the gradient sum_{i<=k} exp(t_k - c_i) - 1 = (-1, -1, 3 - 1); a single max-shifted
    # cumulative sum would underflow to log(0) here
    loss = mlo.get("listmle", reduction="none")
    s = np.array([1e4, -1e4, 0.0], dtype=dtype)
    y = np.array([1.0, 3.0, 2.0], dtype=dtype)
    ulp = 4 * np.finfo(dtype).eps * 1e4  # the suffix sums c_i are rounded at the scale of the scores
    value, grads = loss.value_and_grad(s, y)
    close(value, 3e4, rtol=1e-7)
    close(grads["scores"], [2.0, -1.0, -1.0], atol=ulp)
    value, grads = loss.value_and_grad(s, -y)  # the scores' own order: value ~ e^-1e4, gradient 0
    close(value, 0.0, atol=ulp)
    close(grads["scores"], [0.0, 0.0, 0.0], atol=ulp)


@pytest.mark.parametrize("backend", ["numpy", "jax", "torch", "mlx", "array_api_strict"])
@pytest.mark.parametrize("reverse", [False, True])
def test_cumulative_logsumexp_every_backend(backend, reverse):
    if not installed(backend):
        pytest.skip(f"{backend} is not installed")
    xp = backends.get_adapter(backend).xp
    x = np.random.default_rng(5).normal(0, 30, (2, 9))
    x[0, 3], x[1, 7] = -1e4, 1e4
    rng_of = (lambda i: slice(None, i + 1)) if not reverse else (lambda i: slice(i, None))
    expected = np.array([[logsumexp(row[rng_of(i)]) for i in range(9)] for row in x])
    a = native(backend, x, "float64")
    close(_numerics.cumulative_logsumexp(xp, a, reverse=reverse), expected, rtol=1e-13, atol=1e-12)


# --------------------------------------------------------------------------
# ranking_softmax


def test_ranking_softmax_matches_optax():
    jax = pytest.importorskip("jax")
    optax = pytest.importorskip("optax")
    jax.config.update("jax_enable_x64", True)
    a, _ = case("ranking_softmax", np.random.default_rng(6))
    a["mask"][1] = False  # a list without a valid item
    for keys in (("scores", "labels"), ("scores", "labels", "mask"), ("scores", "labels", "mask", "weights")):
        given = {k: a[k] for k in keys}
        j = {k: jax.numpy.asarray(v) for k, v in given.items()}

        def f(s, reduce_fn):
            return optax.losses.ranking_softmax_loss(s, j["labels"], where=j.get("mask"), weights=j.get("weights"),
                                                     reduce_fn=reduce_fn)

        close(mlo.get("ranking_softmax", reduction="none")(**given), f(j["scores"], None))
        value, grads = mlo.get("ranking_softmax").value_and_grad(**given)  # optax's mean skips empty lists
        close(value, f(j["scores"], jax.numpy.mean))
        close(mlo.get("ranking_softmax", reduction="sum")(**given), f(j["scores"], jax.numpy.sum))
        ref = jax.grad(lambda s: f(s, jax.numpy.sum))(j["scores"])
        close(mlo.get("ranking_softmax", reduction="sum").grad(**given)["scores"],
              np.where(a["mask"], ref, 0.0) if "mask" in keys else ref)  # optax: NaN in the empty list


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_ranking_softmax_masked_items_and_empty_lists(dtype):
    s = np.array([[1.0, np.nan, -2.0, np.inf], [np.nan, 3.0, np.inf, -np.inf]], dtype=dtype)
    y = np.array([[1, 5, 0, 2], [1, 1, 1, 1]])
    mask = np.array([[True, False, True, False], [False, False, False, False]])
    value, grads = mlo.get("ranking_softmax", reduction="none").value_and_grad(s, y, mask)
    p = 1.0 / (1.0 + math.exp(-3.0))  # softmax of (1, -2) at the first item
    close(value, [-math.log(p), 0.0], rtol=1e-5)
    close(grads["scores"], [[p - 1.0, 0.0, 1.0 - p, 0.0], [0.0] * 4], rtol=1e-5, atol=0)
    assert np.all(grads["scores"][~mask] == 0)
    # the mean counts lists with a valid item; all masked: 0 with a zero gradient
    close(mlo.get("ranking_softmax")(s, y, mask), -math.log(p), rtol=1e-5)
    value, grads = mlo.get("ranking_softmax").value_and_grad(s[1:], y[1:], mask[1:])
    assert value == 0 and np.all(grads["scores"] == 0)
    # the engine's where= drops whole lists
    close(mlo.get("ranking_softmax")(np.zeros((2, 3)), np.ones((2, 3)), where=np.array([True, False])),
          3 * math.log(3), rtol=1e-6)


def test_ranking_softmax_hand_computed_and_broadcast():
    loss = mlo.get("ranking_softmax", reduction="none")
    close(loss(np.zeros(3), np.array([1.0, 0.0, 0.0])), math.log(3))
    close(loss(np.zeros(3), np.array([2.0, 1.0, 0.0])), 3 * math.log(3))  # labels are not normalised
    s = np.random.default_rng(7).normal(size=(2, 4))
    m = np.array([True, True, False, True])
    w = np.array([1.0, 2.0, 0.5, 1.0])
    full = {"scores": s, "labels": np.ones((2, 4)), "mask": np.broadcast_to(m, (2, 4)).copy(),
            "weights": np.broadcast_to(w, (2, 4)).copy()}
    ref, auto = torch_value_and_grads("ranking_softmax", full, {})
    close(loss(s, np.ones((2, 4)), m, w), ref)
    close(loss.grad(s, np.ones((2, 4)), m, w)["scores"], auto["scores"])


# --------------------------------------------------------------------------
# feature_alignment


def test_feature_alignment_hand_computed_and_dl_techniques():
    loss = mlo.get("feature_alignment", reduction="none")
    close(loss(np.array([[2.0, 0.0]]), np.array([[0.0, 3.0]])), [1.0])  # orthogonal: 1 - 0
    value, grads = loss.value_and_grad(np.array([[1.0, 1.0]]), np.array([[2.0, 2.0]]))
    assert value[0] == 0 and np.all(grads["student"] == 0) and np.all(grads["teacher"] == 0)
    # opposite vectors: 1 - (-1) = 2; d/ds of -cos at s = (1, 0), t = (-1, 0) is 0 along s, and -t^/|s| across it
    close(loss(np.array([[1.0, 0.0]]), np.array([[-1.0, 0.0]])), [2.0])
    # dl_techniques' FeatureAlignmentLoss: mean(where(sim > margin, 0, 1 - sim)), norms floored at 1e-12
    rng = np.random.default_rng(8)
    a, _ = case("feature_alignment", rng)
    s, t = a["student"], a["teacher"]
    sim = np.sum(s / np.maximum(np.linalg.norm(s, axis=-1, keepdims=True), 1e-12)
                 * t / np.maximum(np.linalg.norm(t, axis=-1, keepdims=True), 1e-12), -1)
    for margin in (0.85, 0.3):
        close(mlo.get("feature_alignment", margin=margin)(s, t), np.mean(np.where(sim > margin, 0.0, 1.0 - sim)))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_feature_alignment_zero_vectors_are_finite(dtype):
    s = np.array([[0.0, 0.0, 0.0], [1.0, 2.0, 0.0], [0.0, 0.0, 0.0]], dtype=dtype)
    t = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]], dtype=dtype)
    loss = mlo.get("feature_alignment", reduction="none", eps=1e-6)
    value, grads = loss.value_and_grad(s, t)
    close(value, [1.0, 1.0, 1.0])  # cosine 0
    # below eps the norm is the constant eps: d(-cos)/ds = -t^ / eps for the zero student
    close(grads["student"][0], [-1e6, 0.0, 0.0], rtol=1e-6)
    close(grads["teacher"][1], -np.array([1.0, 2.0, 0.0]) / math.sqrt(5.0) / 1e-6, rtol=1e-6)
    assert np.all(grads["student"][2] == 0) and np.all(grads["teacher"][2] == 0)


# --------------------------------------------------------------------------
# koleo


def test_koleo_on_the_unit_circle():
    # unit vectors at 0, 90 and 180 degrees (scaled, which the normalisation removes): the first and last
    # have their nearest neighbour at 90 degrees (sqrt 2); the middle one is tied and takes index 0
    x = np.array([[3.0, 0.0], [0.0, 0.5], [-2.0, 0.0]])
    loss = mlo.get("koleo", reduction="none")
    close(loss(x), np.full(3, -math.log(math.sqrt(2.0) + 1e-8)))
    # two points: d = sqrt 2; d l_0/du_0 = -(u_0 - u_1) / ((d + eps) d), u_1 receives the opposite, and so
    # does each through the other's term; the normalisation keeps the tangential part, divided by |x|
    ref, auto = torch_value_and_grads("koleo", {"embeddings": x}, {})
    close(loss.grad(x)["embeddings"], auto["embeddings"])
    value, grads = loss.value_and_grad(np.array([[2.0, 0.0], [0.0, 1.0]]))
    k = 2.0 / ((math.sqrt(2.0) + 1e-8) * math.sqrt(2.0))
    close(value, -math.log(math.sqrt(2.0) + 1e-8))
    close(grads["embeddings"], [[0.0, k / 2.0], [k, 0.0]])  # tangential, divided by |x| = 2 and 1


def test_koleo_is_dinov2s_and_dl_techniques():
    x = distinct_neighbours(np.random.default_rng(9), (6, 4))
    ours = mlo.get("koleo")(x)
    # DINOv2: PairwiseDistance adds its eps 1e-8 to the difference
    close(ours, t_koleo(tt(x), pdist_eps=1e-8).mean().item(), rtol=1e-7)
    # dl_techniques: distance sqrt(2 - 2 max off-diagonal cosine)
    u = x / np.linalg.norm(x, axis=-1, keepdims=True)
    sim = u @ u.T - 2.0 * np.eye(6)
    close(ours, np.mean(-np.log(np.sqrt(2.0 - 2.0 * sim.max(1)) + 1e-8)), rtol=1e-12)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_koleo_identical_and_zero_embeddings_are_finite(dtype):
    loss = mlo.get("koleo", reduction="none")
    x = np.array([[1.0, 2.0, 3.0], [2.0, 4.0, 6.0], [0.0, 0.0, 0.0], [-1.0, 0.0, 1.0]], dtype=dtype)
    value, grads = loss.value_and_grad(x)
    # rows 0 and 1 point the same way: distance exactly 0, value -log(eps), zero subgradient of their term
    close(value[:2], [-math.log(1e-8)] * 2, rtol=1e-6)
    assert np.all(np.isfinite(value)) and np.all(np.isfinite(grads["embeddings"]))
    # the zero vector's nearest is the lowest index at cosine 0: distance |u_0| = 1
    close(value[2], -math.log(1.0 + 1e-8), atol=1e-7)
    value, grads = loss.value_and_grad(np.ones((4, 3), dtype=dtype))  # a collapsed batch
    close(value, [-math.log(1e-8)] * 4, rtol=1e-6)
    assert np.all(grads["embeddings"] == 0)


# --------------------------------------------------------------------------
# clustering


def test_clustering_one_centroid_and_coincident_points():
    x = np.array([[1.0, 2.0], [0.0, -1.0], [3.0, 0.0]])
    m = np.array([[1.0, 0.0]])
    value, grads = mlo.get("clustering").value_and_grad(x, m)
    # q = 1 and the balance term is 0: mean |x - m|^2, gradients 2 (x - m) / N and -2 sum (x - m) / N
    close(value, np.mean(np.sum((x - m) ** 2, -1)))
    close(grads["embeddings"], 2.0 * (x - m) / 3.0)
    close(grads["centroids"], -2.0 * np.sum(x - m, 0, keepdims=True) / 3.0)
    # each point exactly on its own centroid of two far apart: no compactness, a balanced split, zero gradient
    value, grads = mlo.get("clustering").value_and_grad(np.array([[0.0, 0.0], [50.0, 0.0]]),
                                                        np.array([[0.0, 0.0], [50.0, 0.0]]))
    assert value == 0 and all(np.all(g == 0) for g in grads.values())
    # all points on one of the two centroids: compactness 0 and balance 0.5 mean((1 - 1/2)^2, (0 - 1/2)^2)
    close(mlo.get("clustering")(np.zeros((3, 2)), np.array([[0.0, 0.0], [50.0, 0.0]])), 0.125)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_clustering_far_points_are_finite(dtype):
    rng = np.random.default_rng(10)
    x = (rng.normal(size=(5, 3)) * 1e3).astype(dtype)
    m = rng.normal(size=(3, 3)).astype(dtype)
    value, grads = mlo.get("clustering", temperature=0.01).value_and_grad(x, m)
    assert np.isfinite(value) and all(np.all(np.isfinite(g)) for g in grads.values())
    ref, auto = torch_value_and_grads("clustering", {"embeddings": x.astype(np.float64),
                                                     "centroids": m.astype(np.float64)}, {"temperature": 0.01})
    close(value, ref, rtol=1e-5 if dtype == "float32" else 1e-10)


# --------------------------------------------------------------------------
# errors


def test_invalid_options():
    for name, option in (("listnet", "temperature"), ("clustering", "temperature")):
        for bad in (0.0, -1.0, float("nan")):
            with pytest.raises(ValueError, match=f"`{option}`"):
                mlo.get(name, **{option: bad})
    with pytest.raises(TypeError, match="`temperature` must be a real number; got '1'"):
        mlo.get("listnet", temperature="1")
    with pytest.raises(ValueError, match=r"`margin` must lie in \[-1.0, 1.0\]; got 1.5"):
        mlo.get("feature_alignment", margin=1.5)
    for name in ("feature_alignment", "koleo"):
        with pytest.raises(ValueError, match="`eps` must lie in"):
            mlo.get(name, eps=0.0)
    with pytest.raises(ValueError, match="`distribution_weight` must lie in"):
        mlo.get("clustering", distribution_weight=-0.1)
    with pytest.raises(TypeError, match="unknown option `where`"):
        mlo.get("ranking_softmax", where=None)


def test_invalid_inputs():
    s = np.zeros((2, 3))
    with pytest.raises(ValueError, match=r"`scores` and `relevance` must have the same shape; got \(2, 3\) and \(2, 4"):
        mlo.get("listnet")(s, np.zeros((2, 4)))
    with pytest.raises(ValueError, match="`scores` must have at least 1 dimension"):
        mlo.get("listmle")(np.float64(1.0), np.float64(1.0))
    with pytest.raises(TypeError, match="`scores` must be a real floating-point array"):
        mlo.get("listmle")(np.zeros((2, 3), dtype=np.int64), s)
    with pytest.raises(TypeError, match="`relevance` must be a real, integer or boolean array"):
        mlo.get("listmle")(s, np.zeros((2, 3), dtype=complex))
    with pytest.raises(TypeError, match="`mask` must be a boolean array; got dtype int64"):
        mlo.get("ranking_softmax")(s, s, np.ones((2, 3), dtype=np.int64))
    with pytest.raises(ValueError, match=r"`mask` of shape \(4,\) must broadcast to the shape of `scores` \(2, 3\)"):
        mlo.get("ranking_softmax")(s, s, np.ones(4, dtype=bool))
    with pytest.raises(ValueError, match=r"`weights` of shape \(2, 2\)"):
        mlo.get("ranking_softmax")(s, s, weights=np.ones((2, 2)))
    with pytest.raises(ValueError, match=r"`student` and `teacher` must have the same shape"):
        mlo.get("feature_alignment")(np.zeros((3, 4)), np.zeros((3, 5)))
    with pytest.raises(ValueError, match=r"`embeddings` must have a number of samples \(axis -2\) of at least 2"):
        mlo.get("koleo")(np.ones((1, 4)))
    with pytest.raises(ValueError, match="`embeddings` must have at least 2 dimension"):
        mlo.get("koleo")(np.ones(4))
    with pytest.raises(ValueError, match=r"`embeddings` and `centroids` must be sample sets"):
        mlo.get("clustering")(np.ones((5, 3)), np.ones((2, 4)))
    with pytest.raises(ValueError, match="`centroids` must have at least 2 dimension"):
        mlo.get("clustering")(np.ones((5, 3)), np.ones(3))


# --------------------------------------------------------------------------
# every array library, jax.jit, float32, masks, inputs never modified


@pytest.mark.parametrize("backend", ["array_api_strict", "torch", "mlx"])  # jax: under jit, below
@pytest.mark.parametrize("name", RANKING)
def test_backends_match_torch_formulas(name, backend):
    if not installed(backend):
        pytest.skip(f"{backend} is not installed")
    arrays, options = case(name, np.random.default_rng(11))
    ref, auto = torch_value_and_grads(name, arrays, options)
    converted = {n: native(backend, a, "float64" if a.dtype.kind == "f" else None) for n, a in arrays.items()}
    value, grads = mlo.get(name, reduction="sum", **options).value_and_grad(**converted)
    close(value, ref.sum())
    for n, g in grads.items():
        assert type(g) is type(converted[n])
        close(g, auto[n], rtol=1e-11, atol=1e-13)


@pytest.mark.parametrize("name", RANKING)
def test_jax_jit_traces(name):
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)
    arrays, options = case(name, np.random.default_rng(12))
    ref, auto = torch_value_and_grads(name, arrays, options)
    traced = {n: jax.numpy.asarray(a) for n, a in arrays.items()}
    value, grads = jax.jit(lambda **k: mlo.get(name, reduction="sum", **options).value_and_grad(**k))(**traced)
    close(value, ref.sum())
    for n, g in grads.items():
        close(g, auto[n], rtol=1e-11, atol=1e-13)


@pytest.mark.parametrize("name", RANKING)
def test_float32_close_to_float64_reference(name):
    arrays, options = case(name, np.random.default_rng(13))
    single = {n: a.astype(np.float32) if a.dtype.kind == "f" else a for n, a in arrays.items()}
    ref, auto = torch_value_and_grads(name, {n: a.astype(np.float64) if a.dtype.kind == "f" else a
                                             for n, a in single.items()}, options)
    value, grads = mlo.get(name, reduction="sum", **options).value_and_grad(**single)
    assert value.dtype == np.float32
    close(value, ref.sum(), rtol=2e-6, atol=1e-6)
    for n, g in grads.items():
        assert g.dtype == np.float32
        close(g, auto[n], rtol=1e-5, atol=1e-5 * np.abs(auto[n]).max())


@pytest.mark.parametrize("name", RANKING)
def test_all_masked_mean_is_zero_with_zero_gradient(name):
    arrays, options = case(name, np.random.default_rng(14))
    loss = mlo.get(name, **options)
    shape = np.shape(mlo.get(name, reduction="none", **options)(**arrays))
    value, grads = loss.value_and_grad(**arrays, where=np.zeros(shape, dtype=bool))
    assert value == 0 and all(np.all(g == 0) for g in grads.values())


@pytest.mark.parametrize("name", RANKING)
def test_inputs_never_modified(name):
    arrays, options = case(name, np.random.default_rng(15))
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
