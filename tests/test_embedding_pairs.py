"""Pair and triplet embedding losses (triplet_margin, triplet_margin_with_distance, contrastive,
cosine_embedding, margin_ranking, hinge_embedding) against independent references.

Every expected number here comes from outside the code under test: PyTorch's
own functional losses and their autograd (the distance swap included), torch
formulas written in this file, NumPy formulas written here with float64
finite differences, and hand-computed cases.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import mithril_losses as mlo
from mithril_losses.losses.embedding import pairs

LOSSES = ("triplet_margin", "triplet_margin_with_distance", "contrastive", "cosine_embedding", "margin_ranking",
          "hinge_embedding")


def close(actual, expected, rtol=1e-12, atol=1e-12):
    np.testing.assert_allclose(np.asarray(actual, dtype=np.float64), np.asarray(expected, dtype=np.float64),
                               rtol=rtol, atol=atol)


def tt(a, grad=False):
    a = np.asarray(a)
    return torch.tensor(a, dtype=torch.float64 if a.dtype.kind == "f" else None, requires_grad=grad)


def torch_check(loss_name, options, arrays, torch_fn, reduction="none", seed=0, rtol=1e-12, atol=1e-12):
    """Value and vjp (random cotangent) of our loss against torch_fn's value and autograd."""
    loss = mlo.get(loss_name, reduction=reduction, **options)
    diff = loss.differentiable
    t = {k: tt(v, grad=k in diff) for k, v in arrays.items()}
    ref = torch_fn(**t)
    ct = np.random.default_rng(seed).uniform(-1.0, 1.0, tuple(ref.shape))
    ref_grads = torch.autograd.grad(ref, [t[k] for k in diff], tt(ct))
    close(loss(**arrays), ref.detach().numpy(), rtol, atol)
    ours = loss.vjp(ct, **arrays)
    for k, g in zip(diff, ref_grads):
        close(ours[k], g.numpy(), rtol, atol)


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


def triplets(rng, shape, spread=(0.9, 1.1)):
    a = rng.normal(size=shape)
    return {"anchor": a, "positive": a + rng.normal(0.0, spread[0], shape),
            "negative": a + rng.normal(0.0, spread[1], shape)}


@pytest.fixture
def own_distances():
    """The registered distances restored after a test that registers its own."""
    saved = dict(pairs._USER_DISTANCES)
    yield
    pairs._USER_DISTANCES.clear()
    pairs._USER_DISTANCES.update(saved)


# --------------------------------------------------------------------------
# registry, names, functional forms


def test_registered_in_the_embedding_family():
    assert set(LOSSES) <= set(mlo.available(family="embedding"))
    for name in LOSSES:
        assert mlo.get(name).family == "embedding"


@pytest.mark.parametrize("alias, name", [
    ("triplet_margin_loss", "triplet_margin"), ("triplet_loss", "triplet_margin"),
    ("triplet_margin_with_distance_loss", "triplet_margin_with_distance"), ("contrastive_loss", "contrastive"),
    ("cosine_embedding_loss", "cosine_embedding"), ("margin_ranking_loss", "margin_ranking"),
    ("hinge_embedding_loss", "hinge_embedding"),
])
def test_aliases(alias, name):
    assert mlo.get(alias).name == name


def test_inputs_options_and_defaults_follow_pytorch():
    t = mlo.get("triplet_margin")
    assert t.inputs == t.differentiable == ("anchor", "positive", "negative")
    assert t.options == {"margin": 1.0, "p": 2.0, "eps": 1e-6, "swap": False} and t.reduction == "mean"
    w = mlo.get("triplet_margin_with_distance")
    assert w.options == {"distance": "euclidean", "margin": 1.0, "swap": False}
    c = mlo.get("contrastive")
    assert c.inputs == ("embedding1", "embedding2", "label") and c.differentiable == ("embedding1", "embedding2")
    assert c.options == {"margin": 1.0}
    e = mlo.get("cosine_embedding")
    assert e.inputs == ("input1", "input2", "target") and e.differentiable == ("input1", "input2")
    assert e.options == {"margin": 0.0}
    r = mlo.get("margin_ranking")
    assert r.inputs == ("input1", "input2", "target") and r.options == {"margin": 0.0}
    h = mlo.get("hinge_embedding")
    assert h.inputs == ("input", "target") and h.differentiable == ("input",) and h.options == {"margin": 1.0}
    for name in LOSSES:
        loss = mlo.get(name, reduction="sum")
        assert mlo.from_config(loss.to_config()).to_config() == loss.to_config()
    cfg = mlo.get("triplet_margin_with_distance", distance="cosine", swap=True).to_config()
    assert cfg["distance"] == "cosine" and mlo.from_config(cfg).options["swap"] is True


def test_mithril_guide_functional_forms():
    rng = np.random.default_rng(0)
    x = triplets(rng, (4, 3))
    value = mlo.functional.triplet_loss(x["anchor"], x["positive"], x["negative"], margin=1.0)
    grads = mlo.functional.triplet_loss_gradient(x["anchor"], x["positive"], x["negative"], margin=1.0)
    t = {k: tt(v, True) for k, v in x.items()}
    ref = F.triplet_margin_loss(t["anchor"], t["positive"], t["negative"], margin=1.0)
    ref.backward()
    close(value, ref.item())
    assert set(grads) == {"anchor", "positive", "negative"}
    for k in grads:
        close(grads[k], t[k].grad.numpy())
    close(mlo.functional.triplet_margin_loss(x["anchor"], x["positive"], x["negative"], reduction="sum"),
          F.triplet_margin_loss(t["anchor"], t["positive"], t["negative"], reduction="sum").item())

    e1, e2, labels = rng.normal(size=(4, 3)), rng.normal(size=(4, 3)), np.array([1, 0, 1, 0])
    grads = mlo.functional.contrastive_loss_gradient(e1, e2, labels, margin=1.0)
    assert set(grads) == {"embedding1", "embedding2"}
    close(grads["embedding1"], -grads["embedding2"])
    assert np.isfinite(mlo.functional.contrastive_loss(e1, e2, labels, margin=1.0))
    assert set(mlo.functional.cosine_embedding_loss_gradient(e1, e2, 2 * labels - 1)) == {"input1", "input2"}
    assert set(mlo.functional.margin_ranking_loss_gradient(e1, e2, np.ones((4, 3)))) == {"input1", "input2"}
    assert mlo.functional.hinge_embedding_loss_gradient(e1, np.ones((4, 3))).shape == (4, 3)
    assert set(mlo.functional.triplet_margin_with_distance_loss_gradient(e1, e2, e1[::-1])) == {
        "anchor", "positive", "negative"}


# --------------------------------------------------------------------------
# triplet_margin


@pytest.mark.parametrize("options", [
    {}, {"swap": True}, {"p": 1.0}, {"p": 1.5, "margin": 0.5}, {"p": 3.0, "swap": True, "margin": 2.0},
    {"eps": 0.0}, {"eps": 0.1, "swap": True},
])
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_triplet_margin_matches_pytorch(options, reduction):
    x = triplets(np.random.default_rng(1), (6, 5))

    def ref(anchor, positive, negative):
        return F.triplet_margin_loss(anchor, positive, negative, reduction=reduction, **options)

    torch_check("triplet_margin", options, x, ref, reduction)


@pytest.mark.parametrize("shape", [(5,), (2, 3, 4)])
def test_triplet_margin_unbatched_and_batched_shapes(shape):
    x = triplets(np.random.default_rng(2), shape)
    loss = mlo.get("triplet_margin", reduction="none", swap=True)
    assert loss(**x).shape == shape[:-1]
    torch_check("triplet_margin", {"swap": True}, x,
                lambda **t: F.triplet_margin_loss(*t.values(), swap=True, reduction="none"))


def test_triplet_swap_changes_the_negative_and_its_gradient():
    # the positive is far from the anchor but close to the negative: d(p, n) < d(a, n) for every triplet
    rng = np.random.default_rng(3)
    a = rng.normal(size=(5, 4))
    p = a + 3.0
    n = p + rng.normal(0.0, 0.3, (5, 4))
    x = {"anchor": a, "positive": p, "negative": n}
    plain = mlo.get("triplet_margin", reduction="none")(**x)
    swapped = mlo.get("triplet_margin", reduction="none", swap=True)(**x)
    assert np.all(swapped > plain)
    d_pn = np.linalg.norm(p - n + 1e-6, axis=-1)
    close(swapped, np.maximum(1.0 + np.linalg.norm(a - p + 1e-6, axis=-1) - d_pn, 0.0))
    torch_check("triplet_margin", {"swap": True}, x,
                lambda **t: F.triplet_margin_loss(*t.values(), swap=True, reduction="none"))


def test_triplet_hand_computed():
    a, p, n = np.array([[0.0, 0.0]]), np.array([[3.0, 4.0]]), np.array([[6.0, 8.0]])
    loss = mlo.get("triplet_margin", eps=0.0, margin=7.0, reduction="sum")
    value, grads = loss.value_and_grad(a, p, n)
    close(value, 7.0 + 5.0 - 10.0)
    close(grads["anchor"], [[-0.6 + 0.6, -0.8 + 0.8]])  # (a - p)/5 - (a - n)/10
    close(grads["positive"], [[0.6, 0.8]])
    close(grads["negative"], [[-0.6, -0.8]])
    l1 = mlo.get("triplet_margin", eps=0.0, p=1.0, margin=7.0, reduction="sum")
    close(l1(a, p, n), 7.0 + 7.0 - 14.0)
    close(mlo.get("triplet_margin", eps=0.0, margin=4.0, reduction="sum")(a, p, n), 0.0)


def test_triplet_kink_and_ties_follow_pytorch():
    # margin + d(a, p) - d(a, n) = 0 exactly: PyTorch's clamp_min passes the gradient
    x = {"anchor": np.array([[0.0, 0.0]]), "positive": np.array([[1.0, 0.0]]), "negative": np.array([[2.0, 0.0]])}
    torch_check("triplet_margin", {"eps": 0.0}, x,
                lambda **t: F.triplet_margin_loss(*t.values(), eps=0.0, reduction="none"))
    g = mlo.get("triplet_margin", eps=0.0, reduction="sum").grad(**x)
    close(g["positive"], [[1.0, 0.0]])
    # d(a, n) = d(p, n) with the swap (a = p): torch.minimum splits the gradient in halves
    x = {"anchor": np.array([[0.0, 1.0]]), "positive": np.array([[0.0, 1.0]]), "negative": np.array([[3.0, 0.0]])}
    torch_check("triplet_margin", {"swap": True, "margin": 5.0}, x,
                lambda **t: F.triplet_margin_loss(*t.values(), swap=True, margin=5.0, reduction="none"))


@pytest.mark.parametrize("options", [{}, {"swap": True}, {"p": 1.0}, {"p": 3.0}, {"eps": 0.0}, {"eps": 0.0, "p": 3.0}])
def test_triplet_identical_vectors_are_finite(options):
    v = np.array([[1.0, -2.0, 0.5], [0.0, 0.0, 0.0]])
    x = {"anchor": v, "positive": v.copy(), "negative": v.copy()}
    value, grads = mlo.get("triplet_margin", reduction="sum", **options).value_and_grad(**x)
    assert np.isfinite(value) and all(np.all(np.isfinite(g)) for g in grads.values())
    torch_check("triplet_margin", options, x,
                lambda **t: F.triplet_margin_loss(*t.values(), reduction="none", **options))


@pytest.mark.parametrize("dtype, scale", [("float32", 1e20), ("float32", 1e-25), ("float64", 1e200)])
@pytest.mark.parametrize("p", [2.0, 3.0, 1.0])
def test_triplet_huge_and_tiny_vectors(dtype, scale, p):
    rng = np.random.default_rng(4)
    x = triplets(rng, (3, 4))
    scaled = {k: (v * scale).astype(dtype) for k, v in x.items()}
    margin = 0.5 * scale
    loss = mlo.get("triplet_margin", reduction="none", p=p, eps=0.0, margin=margin)
    value, grads = loss.value_and_grad(**scaled)
    # d scales with the vectors and its gradient does not: compare with the unit-scale float64 formula
    ref = {k: v.astype(np.float64) / scale for k, v in scaled.items()}

    def d(u, w):
        return np.sum(np.abs(u - w) ** p, axis=-1) ** (1.0 / p)

    expected = np.maximum(0.5 + d(ref["anchor"], ref["positive"]) - d(ref["anchor"], ref["negative"]), 0.0)
    assert value.dtype == dtype
    close(np.asarray(value, np.float64) / scale, expected, 1e-5 if dtype == "float32" else 1e-12, 1e-6)
    unit = mlo.get("triplet_margin", reduction="none", p=p, eps=0.0, margin=0.5).grad(**ref)
    for k in grads:
        assert np.all(np.isfinite(grads[k]))
        close(grads[k], unit[k], 1e-5 if dtype == "float32" else 1e-12, 1e-6)


def test_triplet_finite_differences_general_p():
    x = triplets(np.random.default_rng(5), (3, 4))
    ct = np.array([0.3, -1.2, 0.7])

    def f(arrays):
        def d(u, w):
            return np.sum(np.abs(u - w + 1e-6) ** 2.5, axis=-1) ** (1 / 2.5)
        n = np.minimum(d(arrays["anchor"], arrays["negative"]), d(arrays["positive"], arrays["negative"]))
        return float(np.sum(ct * np.maximum(0.8 + d(arrays["anchor"], arrays["positive"]) - n, 0.0)))

    grads = mlo.get("triplet_margin", p=2.5, margin=0.8, swap=True, reduction="none").vjp(ct, **x)
    for k in x:
        close(grads[k], numeric_grad(f, x, k), 1e-8, 1e-9)


# --------------------------------------------------------------------------
# triplet_margin_with_distance


def _cosine_distance(x, y):
    return 1.0 - F.cosine_similarity(x, y, dim=-1)


@pytest.mark.parametrize("distance, fn", [("euclidean", F.pairwise_distance), ("cosine", _cosine_distance)])
@pytest.mark.parametrize("options", [{}, {"swap": True}, {"margin": 0.3, "swap": True}])
@pytest.mark.parametrize("reduction", ["none", "mean"])
def test_triplet_with_distance_matches_pytorch(distance, fn, options, reduction):
    x = triplets(np.random.default_rng(6), (6, 4))

    def ref(anchor, positive, negative):
        return F.triplet_margin_with_distance_loss(anchor, positive, negative, distance_function=fn,
                                                   reduction=reduction, **options)

    torch_check("triplet_margin_with_distance", {"distance": distance, **options}, x, ref, reduction)


def test_triplet_with_distance_euclidean_is_triplet_margin():
    x = triplets(np.random.default_rng(7), (5, 3))
    for swap in (False, True):
        a = mlo.get("triplet_margin_with_distance", swap=swap, reduction="none")
        b = mlo.get("triplet_margin", swap=swap, reduction="none")
        close(a(**x), b(**x))


def test_triplet_with_cosine_distance_zero_and_identical_vectors():
    z = np.zeros(3)
    v = np.array([1.0, 2.0, -2.0])
    x = {"anchor": np.stack([z, v, v]), "positive": np.stack([v, v, z]), "negative": np.stack([-v, z, v])}
    value, grads = mlo.get("triplet_margin_with_distance", distance="cosine", swap=True,
                           reduction="sum").value_and_grad(**x)
    assert np.isfinite(value) and all(np.all(np.isfinite(g)) for g in grads.values())
    torch_check("triplet_margin_with_distance", {"distance": "cosine", "swap": True}, x,
                lambda **t: F.triplet_margin_with_distance_loss(*t.values(), distance_function=_cosine_distance,
                                                                swap=True, reduction="none"))


def _sq_value(xp, a, b):
    d = a - b
    return xp.sum(d * d, axis=-1)


def _sq_vjp(xp, ct, a, b):
    g = 2.0 * xp.expand_dims(ct, axis=-1) * (a - b)
    return g, -g


def test_registered_distance_against_pytorch_autograd(own_distances):
    assert pairs.register_distance("sq_euclidean", _sq_value, _sq_vjp) == "sq_euclidean"
    assert "sq_euclidean" in pairs.distances()
    x = triplets(np.random.default_rng(8), (6, 3), spread=(0.6, 0.8))

    def sq(u, w):
        return ((u - w) ** 2).sum(-1)

    for swap in (False, True):
        torch_check("triplet_margin_with_distance", {"distance": "sq_euclidean", "swap": swap, "margin": 2.0}, x,
                    lambda **t: F.triplet_margin_with_distance_loss(*t.values(), distance_function=sq, margin=2.0,
                                                                    swap=swap, reduction="none"))
    # the registered distance runs on another backend and under jax.jit too
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)
    loss = mlo.get("triplet_margin_with_distance", distance="sq_euclidean", margin=2.0)
    value, grads = jax.jit(lambda d: loss.value_and_grad(**d))({k: jax.numpy.asarray(v) for k, v in x.items()})
    t = {k: tt(v, True) for k, v in x.items()}
    ref = F.triplet_margin_with_distance_loss(*t.values(), distance_function=sq, margin=2.0)
    ref.backward()
    close(value, ref.item())
    for k in x:
        close(grads[k], t[k].grad.numpy())


def test_register_distance_errors(own_distances):
    with pytest.raises(TypeError, match=r"distance's `name` must be a non-empty string; got 3 \(int\)"):
        pairs.register_distance(3, _sq_value, _sq_vjp)
    with pytest.raises(TypeError, match=r"`vjp` of distance 'mine' must be callable; got None"):
        pairs.register_distance("mine", _sq_value, None)
    with pytest.raises(TypeError, match=r"`value` of distance 'mine' must be callable; got 'x'"):
        pairs.register_distance("mine", "x", _sq_vjp)
    with pytest.raises(ValueError, match=r"'cosine' is a built-in distance"):
        pairs.register_distance("cosine", _sq_value, _sq_vjp)
    pairs.register_distance("mine", _sq_value, _sq_vjp)
    with pytest.raises(ValueError, match=r"distance named 'mine' is already registered; pass replace=True"):
        pairs.register_distance("mine", _sq_value, _sq_vjp)
    pairs.register_distance("mine", _sq_value, _sq_vjp, replace=True)
    with pytest.raises(ValueError, match=r"`distance` must be one of 'euclidean', 'cosine', 'mine'; got 'manhattan'"):
        mlo.get("triplet_margin_with_distance", distance="manhattan")


# --------------------------------------------------------------------------
# contrastive


def ref_contrastive(e1, e2, y, margin=1.0):
    d = np.linalg.norm(e1 - e2, axis=-1)
    return y * d**2 + (1 - y) * np.maximum(margin - d, 0.0) ** 2


def test_contrastive_hand_computed():
    e1, e2 = np.array([[0.0, 0.0], [0.0, 0.0], [0.0, 0.0]]), np.array([[3.0, 4.0], [3.0, 4.0], [0.3, 0.4]])
    loss = mlo.get("contrastive", reduction="none", margin=6.0)
    close(loss(e1, e2, np.array([1, 0, 0])), [25.0, 1.0, 30.25])  # d^2; (6 - 5)^2; (6 - 0.5)^2
    close(mlo.get("contrastive", reduction="none")(e1, e2, np.array([1, 0, 0])), [25.0, 0.0, 0.25])
    g = loss.grad(e1, e2, np.array([1, 0, 0]))
    # similar: 2 (e1 - e2); dissimilar: -2 (m - d) (e1 - e2) / d
    close(g["embedding1"], [[-6.0, -8.0], [2.0 * 0.6, 2.0 * 0.8], [2.0 * 5.5 * 0.6, 2.0 * 5.5 * 0.8]])
    close(g["embedding2"], -g["embedding1"])


@pytest.mark.parametrize("margin", [1.0, 2.5])
def test_contrastive_against_torch_formula_and_finite_differences(margin):
    rng = np.random.default_rng(9)
    e1, e2 = rng.normal(size=(8, 4)), rng.normal(size=(8, 4)) * 0.6
    y = rng.integers(0, 2, 8)
    x = {"embedding1": e1, "embedding2": e2, "label": y}

    def ref(embedding1, embedding2, label):
        d = (embedding1 - embedding2).norm(dim=-1)
        return label * d**2 + (1 - label) * torch.clamp(margin - d, min=0.0) ** 2

    torch_check("contrastive", {"margin": margin}, x, ref)
    ct = rng.uniform(-1, 1, 8)
    grads = mlo.get("contrastive", reduction="none", margin=margin).vjp(ct, **x)
    for k in ("embedding1", "embedding2"):
        close(grads[k], numeric_grad(lambda a: float(np.sum(ct * ref_contrastive(a["embedding1"], a["embedding2"],
                                                                                 y, margin))), x, k), 1e-8, 1e-9)


def test_contrastive_labels_int_bool_float_agree_and_batched_shapes():
    rng = np.random.default_rng(10)
    e1, e2 = rng.normal(size=(2, 3, 4)), rng.normal(size=(2, 3, 4))
    y = rng.integers(0, 2, (2, 3))
    loss = mlo.get("contrastive", reduction="none")
    expected = ref_contrastive(e1, e2, y)
    for labels in (y, y.astype(bool), y.astype(np.float64), y.astype(np.float32), y.astype(np.int8)):
        close(loss(e1, e2, labels), expected)
    close(mlo.get("contrastive", reduction="none")(e1[0, 0], e2[0, 0], np.int64(y[0, 0])), expected[0, 0])


def test_contrastive_identical_embeddings_zero_subgradient():
    e = np.array([[1.0, -2.0], [0.0, 0.0], [3.0, 3.0]])
    loss = mlo.get("contrastive", reduction="none", margin=2.0)
    value = loss(e, e.copy(), np.array([1, 0, 0]))
    close(value, [0.0, 4.0, 4.0])
    g = loss.vjp(np.ones(3), e, e.copy(), np.array([1, 0, 0]))
    close(g["embedding1"], np.zeros((3, 2)))
    close(g["embedding2"], np.zeros((3, 2)))


@pytest.mark.parametrize("dtype, scale", [("float32", 1e15), ("float32", 1e-18), ("float64", 1e150)])
def test_contrastive_huge_and_tiny_distances(dtype, scale):
    e1 = (np.array([[3.0, 0.0], [0.0, 4.0]]) * scale).astype(dtype)
    e2 = np.zeros((2, 2), dtype=dtype)
    loss = mlo.get("contrastive", reduction="none", margin=float(10 * scale))
    value, grads = loss.value_and_grad(e1, e2, np.array([1, 0]))
    close(np.asarray(value, np.float64) / scale**2, [9.0, 36.0], 1e-6)
    # 2 (e1 - e2) and -2 (m - d) unit(e1 - e2)
    close(np.asarray(grads["embedding1"], np.float64) / scale, [[6.0, 0.0], [0.0, -12.0]], 1e-6)


# --------------------------------------------------------------------------
# cosine_embedding


@pytest.mark.parametrize("margin", [0.0, 0.5, -0.3, 1.0, -1.0])
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("float_target", [False, True])
def test_cosine_embedding_matches_pytorch(margin, reduction, float_target):
    rng = np.random.default_rng(11)
    x1 = rng.normal(size=(8, 5))
    x2 = rng.uniform(-1.5, 1.5, (8, 1)) * x1 + rng.normal(size=(8, 5))
    y = rng.choice([-1, 1], 8)
    x = {"input1": x1, "input2": x2, "target": y.astype(np.float64) if float_target else y}

    def ref(input1, input2, target):
        return F.cosine_embedding_loss(input1, input2, target, margin=margin, reduction=reduction)

    torch_check("cosine_embedding", {"margin": margin}, x, ref, reduction)


def test_cosine_embedding_unbatched_and_zero_vectors_match_pytorch():
    x1, x2 = np.array([0.3, -1.0, 2.0]), np.array([1.0, 0.5, 0.5])
    for y in (1, -1):
        torch_check("cosine_embedding", {"margin": -0.5}, {"input1": x1, "input2": x2, "target": np.array(y)},
                    lambda **t: F.cosine_embedding_loss(*t.values(), margin=-0.5, reduction="none"))
    z = np.zeros(3)
    x = {"input1": np.stack([z, x1, z, z]), "input2": np.stack([x2, z, z, x2]), "target": np.array([1, -1, -1, -1])}
    value, grads = mlo.get("cosine_embedding", margin=-0.5, reduction="none").value_and_grad(**x)
    close(value, [1.0, 0.5, 0.5, 0.5])  # cos = 0: 1 - 0 and max(0, 0 + 0.5)
    assert all(np.all(np.isfinite(g)) for g in grads.values())
    torch_check("cosine_embedding", {"margin": -0.5}, x,
                lambda **t: F.cosine_embedding_loss(*t.values(), margin=-0.5, reduction="none"), rtol=1e-12, atol=1e-8)


def test_cosine_embedding_kink_passes_the_gradient_as_pytorch():
    # cos = 0 = margin exactly for y = -1
    x = {"input1": np.array([[1.0, 0.0]]), "input2": np.array([[0.0, 2.0]]), "target": np.array([-1])}
    torch_check("cosine_embedding", {}, x, lambda **t: F.cosine_embedding_loss(*t.values(), reduction="none"))
    close(mlo.get("cosine_embedding").grad(**x)["input1"], [[0.0, 1.0]])


def test_cosine_embedding_batched_leading_axes():
    rng = np.random.default_rng(12)
    x1, x2, y = rng.normal(size=(2, 3, 4)), rng.normal(size=(2, 3, 4)), rng.choice([-1, 1], (2, 3))
    value = mlo.get("cosine_embedding", reduction="none", margin=0.2)(x1, x2, y)
    ref = F.cosine_embedding_loss(tt(x1.reshape(6, 4)), tt(x2.reshape(6, 4)), tt(y.reshape(6)), margin=0.2,
                                  reduction="none")
    close(value, ref.numpy().reshape(2, 3))


@pytest.mark.parametrize("dtype, scale", [("float32", 1e20), ("float32", 1e-25), ("float64", 1e160)])
def test_cosine_embedding_huge_and_tiny_vectors(dtype, scale):
    x1, x2 = np.array([[3.0, 4.0], [1.0, 0.0]]), np.array([[4.0, 3.0], [-1.0, 1.0]])
    value = mlo.get("cosine_embedding", reduction="none")((x1 * scale).astype(dtype), (x2 * scale).astype(dtype),
                                                           np.array([1, -1]))
    assert value.dtype == dtype
    expected = [1.0 - 24.0 / 25.0, 0.0]
    if scale < 1e-20:  # |x|^2 + 1e-12 is 1e-12: cos = x1.x2 / 1e-12, below the float32 resolution of 0
        expected = [1.0, 0.0]
    close(value, expected, 1e-6, 1e-7)
    grads = mlo.get("cosine_embedding", reduction="sum").grad((x1 * scale).astype(dtype), (x2 * scale).astype(dtype),
                                                              np.array([1, 1]))
    assert all(np.all(np.isfinite(g)) for g in grads.values())


# --------------------------------------------------------------------------
# margin_ranking and hinge_embedding


@pytest.mark.parametrize("margin", [0.0, 0.5, -0.25])
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_margin_ranking_matches_pytorch(margin, reduction):
    rng = np.random.default_rng(13)
    x = {"input1": rng.normal(size=(4, 5)), "input2": rng.normal(size=(4, 5)), "target": rng.choice([-1, 1], (4, 5))}
    for target in (x["target"], x["target"].astype(np.float64)):
        torch_check("margin_ranking", {"margin": margin}, {**x, "target": target},
                    lambda **t: F.margin_ranking_loss(*t.values(), margin=margin, reduction=reduction), reduction)


def test_margin_ranking_hand_computed_and_kink():
    x1, x2, y = np.array([1.0, 2.0, 0.0, 3.0]), np.array([2.0, 2.0, 1.0, 1.0]), np.array([1, 1, -1, -1])
    loss = mlo.get("margin_ranking", margin=0.5, reduction="none")
    close(loss(x1, x2, y), [1.5, 0.5, 0.0, 2.5])
    close(loss.grad(x1, x2, y)["input1"], [-1.0, -1.0, 0.0, 1.0])
    kink = {"input1": np.array([1.0, 2.0]), "input2": np.array([1.0, 2.0]), "target": np.array([1, -1])}
    torch_check("margin_ranking", {}, kink, lambda **t: F.margin_ranking_loss(*t.values(), reduction="none"))


@pytest.mark.parametrize("margin", [1.0, 0.5, 2.0, -0.5])
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_hinge_embedding_matches_pytorch(margin, reduction):
    rng = np.random.default_rng(14)
    x = {"input": rng.uniform(-1.0, 3.0, (4, 5)), "target": rng.choice([-1, 1], (4, 5))}
    for target in (x["target"], x["target"].astype(np.float64)):
        torch_check("hinge_embedding", {"margin": margin}, {**x, "target": target},
                    lambda **t: F.hinge_embedding_loss(*t.values(), margin=margin, reduction=reduction), reduction)


def test_hinge_embedding_hand_computed_and_kink():
    x, y = np.array([0.3, 0.3, 1.0, 2.5]), np.array([1, -1, -1, -1])
    loss = mlo.get("hinge_embedding", reduction="none")
    close(loss(x, y), [0.3, 0.7, 0.0, 0.0])
    close(loss.grad(x, y)["input"], [1.0, -1.0, -1.0, 0.0])  # x = margin: the gradient passes, as PyTorch
    torch_check("hinge_embedding", {}, {"input": x, "target": y},
                lambda **t: F.hinge_embedding_loss(*t.values(), reduction="none"))


# --------------------------------------------------------------------------
# every backend, array-api-strict, jax.jit, masks, inputs never modified


def sample(name, options, shape=(4, 5), seed=15):
    spec = mlo.registry.spec(name)
    return spec.sample(np.random.default_rng(seed), shape, mlo.get(name, **options).options)


CASES = [("triplet_margin", {}), ("triplet_margin", {"swap": True, "p": 1.0}),
         ("triplet_margin_with_distance", {"distance": "cosine", "swap": True}), ("contrastive", {}),
         ("cosine_embedding", {"margin": 0.3}), ("margin_ranking", {"margin": 0.5}), ("hinge_embedding", {})]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name, options", CASES)
def test_every_backend_agrees_with_numpy_float64(backend, name, options, dtype):
    from conftest import native, to_numpy

    a = sample(name, options)
    loss = mlo.get(name, reduction="sum", **options)
    ref_value, ref_grads = loss.value_and_grad(**a)
    value, grads = loss.value_and_grad(**{k: native(backend, v, dtype if v.dtype.kind == "f" else None)
                                          for k, v in a.items()})
    tol = 2e-5 if dtype == "float32" else 1e-12
    close(to_numpy(value), ref_value, tol, tol)
    for k in loss.differentiable:
        close(to_numpy(grads[k]), ref_grads[k], tol, tol)


@pytest.mark.parametrize("name, options", CASES)
def test_jax_jit_traces(name, options):
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)
    a = sample(name, options)
    loss = mlo.get(name, **options)
    value, grads = jax.jit(lambda d: loss.value_and_grad(**d))({k: jax.numpy.asarray(v) for k, v in a.items()})
    ref_value, ref_grads = loss.value_and_grad(**a)
    close(value, ref_value)
    for k in loss.differentiable:
        close(grads[k], ref_grads[k])


@pytest.mark.parametrize("name", LOSSES)
def test_all_masked_mean_is_zero_with_zero_gradient(name):
    a = sample(name, {})
    shape = np.shape(mlo.get(name, reduction="none")(**a))
    value, grads = mlo.get(name).value_and_grad(**a, where=np.zeros(shape, dtype=bool))
    assert value == 0.0 and all(np.all(g == 0) for g in grads.values())


@pytest.mark.parametrize("name", LOSSES)
def test_inputs_not_modified(name):
    a = sample(name, {})
    copies = {k: v.copy() for k, v in a.items()}
    loss = mlo.get(name)
    loss.value_and_grad(**a)
    loss.vjp(np.float64(2.0), **a)
    for k in a:
        np.testing.assert_array_equal(a[k], copies[k])
    ta = {k: torch.tensor(v) for k, v in a.items()}
    tcopies = {k: v.clone() for k, v in ta.items()}
    loss.value_and_grad(**ta)
    for k in ta:
        assert torch.equal(ta[k], tcopies[k])


def test_weighted_mean_per_sample():
    a = sample("triplet_margin", {}, shape=(5, 3))
    w = np.array([0.5, 1.0, 2.0, 0.0, 1.5])
    t = {k: tt(v) for k, v in a.items()}
    per = F.triplet_margin_loss(*t.values(), reduction="none").numpy()
    close(mlo.get("triplet_margin")(**a, weight=w), np.sum(w * per) / np.sum(w))


# --------------------------------------------------------------------------
# bad input: clear errors naming the argument and showing what was received


@pytest.mark.parametrize("name, options, error, message", [
    ("triplet_margin", {"margin": 0.0}, ValueError, r"`margin` must lie in \(0, inf\); got 0.0"),
    ("triplet_margin", {"margin": -1.0}, ValueError, r"`margin` must lie in \(0, inf\); got -1.0"),
    ("triplet_margin", {"p": 0.5}, ValueError, r"`p` must lie in \[1, inf\); got 0.5"),
    ("triplet_margin", {"p": math.inf}, ValueError, r"`p` must be finite; got inf"),
    ("triplet_margin", {"eps": -1e-6}, ValueError, r"`eps` must lie in \[0, inf\); got -1e-06"),
    ("triplet_margin", {"swap": 1}, TypeError, r"`swap` must be True or False; got 1"),
    ("triplet_margin_with_distance", {"margin": 0}, ValueError, r"`margin` must lie in \(0, inf\); got 0"),
    ("triplet_margin_with_distance", {"distance": None}, ValueError,
     r"`distance` must be one of 'euclidean', 'cosine'"),
    ("triplet_margin_with_distance", {"p": 2}, TypeError, r"unknown option `p`"),
    ("contrastive", {"margin": 0.0}, ValueError, r"`margin` must lie in \(0, inf\); got 0.0"),
    ("contrastive", {"margin": "1"}, TypeError, r"`margin` must be a real number; got '1'"),
    ("cosine_embedding", {"margin": 1.5}, ValueError, r"`margin` must lie in \[-1, 1\]; got 1.5"),
    ("margin_ranking", {"margin": math.nan}, ValueError, r"`margin` must be finite; got nan"),
    ("hinge_embedding", {"margin": None}, TypeError, r"`margin` must be a real number; got None"),
])
def test_invalid_options(name, options, error, message):
    with pytest.raises(error, match=message):
        mlo.get(name, **options)


def test_invalid_inputs():
    v = np.zeros((3, 4))
    with pytest.raises(ValueError, match=r"`anchor` and `negative` must have the same shape; got \(3, 4\) and \(3, 5"):
        mlo.get("triplet_margin")(v, v, np.zeros((3, 5)))
    with pytest.raises(ValueError, match=r"`anchor` must have at least 1 dimension\(s\); got shape \(\)"):
        mlo.get("triplet_margin")(np.float64(1.0), np.float64(1.0), np.float64(1.0))
    with pytest.raises(TypeError, match=r"`positive` must be a real floating-point array; got dtype int64"):
        mlo.get("triplet_margin")(v, np.zeros((3, 4), dtype=np.int64), v)
    with pytest.raises(ValueError, match=r"`label` must hold binary labels 0 or 1; got 2"):
        mlo.get("contrastive")(v, v, np.array([0, 1, 2]))
    with pytest.raises(ValueError, match=r"`label` must hold binary labels 0 or 1; got 0.5"):
        mlo.get("contrastive")(v, v, np.array([0.0, 1.0, 0.5]))
    with pytest.raises(ValueError, match=r"`label` must have shape \(3,\) \(one label per pair"):
        mlo.get("contrastive")(v, v, np.zeros((3, 1), dtype=np.int64))
    with pytest.raises(TypeError, match=r"`embedding2` must be a real floating-point array"):
        mlo.get("contrastive")(v, np.zeros((3, 4), dtype=np.int32), np.zeros(3, dtype=np.int64))
    with pytest.raises(ValueError, match=r"`target` must hold -1 or 1; got 0"):
        mlo.get("cosine_embedding")(v, v, np.array([1, 0, -1]))
    with pytest.raises(TypeError, match=r"`target` must be a real or integer array of -1 and 1; got dtype bool"):
        mlo.get("cosine_embedding")(v, v, np.array([True, False, True]))
    with pytest.raises(ValueError, match=r"`target` must have shape \(3,\) \(one target per pair"):
        mlo.get("cosine_embedding")(v, v, np.ones(4))
    with pytest.raises(ValueError, match=r"`target` must hold -1 or 1; got 2.0"):
        mlo.get("margin_ranking")(v, v, np.full((3, 4), 2.0))
    with pytest.raises(ValueError, match=r"`input1` and `target` must have the same shape; got \(3, 4\) and \(3,\)"):
        mlo.get("margin_ranking")(v, v, np.ones(3))
    with pytest.raises(ValueError, match=r"`target` must hold -1 or 1; got 0"):
        mlo.get("hinge_embedding")(v, np.zeros((3, 4), dtype=np.int64))
