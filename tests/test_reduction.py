"""Reductions, weights and masks (``_reduction.py``) and their gradients.

The expected values are NumPy formulas written here (mse: l = r^2, dl/dx =
2r; l1: l = |r|, dl/dx = sign r) and PyTorch's own weighted losses.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import mithril_losses as mlo

from conftest import close


@pytest.fixture
def xy():
    rng = np.random.default_rng(0)
    y = rng.normal(size=(4, 3))
    x = y + rng.uniform(0.2, 1.5, size=(4, 3)) * rng.choice([-1.0, 1.0], size=(4, 3))
    return x, y


def mse_parts(x, y):
    r = x - y
    return r * r, 2.0 * r


# ---------------------------------------------------------------------------
# none / mean / sum


def test_none_mean_sum(xy):
    x, y = xy
    l, g = mse_parts(x, y)
    v, grads = mlo.get("mse", reduction="none").value_and_grad(x, y)
    close(v, l)
    close(grads["input"], g)  # gradient of the sum
    close(grads["target"], -g)
    v, grads = mlo.get("mse", reduction="mean").value_and_grad(x, y)
    close(v, l.mean())
    close(grads["input"], g / l.size)
    v, grads = mlo.get("mse", reduction="sum").value_and_grad(x, y)
    close(v, l.sum())
    close(grads["input"], g)


def test_default_reduction_is_mean(xy):
    x, y = xy
    assert mlo.get("mse").reduction == "mean"
    close(mlo.get("l1")(x, y), np.abs(x - y).mean())


def test_scalar_loss():
    value, grads = mlo.get("mse").value_and_grad(np.array(3.0), np.array(1.0))
    close(value, 4.0)
    close(grads["input"], 4.0)
    assert grads["input"].shape == ()


# ---------------------------------------------------------------------------
# weights


def test_same_shape_weight(xy):
    x, y = xy
    l, g = mse_parts(x, y)
    w = np.random.default_rng(1).uniform(0.1, 3.0, size=x.shape)
    v, grads = mlo.get("mse", reduction="none").value_and_grad(x, y, weight=w)
    close(v, w * l)
    close(grads["input"], w * g)
    v, grads = mlo.get("mse", reduction="sum").value_and_grad(x, y, weight=w)
    close(v, np.sum(w * l))
    close(grads["input"], w * g)
    v, grads = mlo.get("mse", reduction="mean").value_and_grad(x, y, weight=w)
    close(v, np.sum(w * l) / np.sum(w))
    close(grads["input"], w * g / np.sum(w))
    close(grads["target"], -w * g / np.sum(w))


@pytest.mark.parametrize("fname", ["mse_loss", "l1_loss"])
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_weighted_losses_match_torch(xy, fname, reduction):
    torch = pytest.importorskip("torch")
    x, y = xy
    w = np.random.default_rng(2).uniform(0.1, 3.0, size=x.shape)
    tx, ty = torch.tensor(x, requires_grad=True), torch.tensor(y, requires_grad=True)
    out = getattr(torch.nn.functional, fname)(tx, ty, reduction=reduction, weight=torch.tensor(w))
    ct = np.random.default_rng(3).normal(size=tuple(out.shape))
    gx, gy = torch.autograd.grad(out, (tx, ty), torch.tensor(ct))
    loss = mlo.get(fname, reduction=reduction)
    close(loss(x, y, weight=w), out.detach().numpy())
    grads = loss.vjp(ct, x, y, weight=w)
    close(grads["input"], gx.numpy())
    close(grads["target"], gy.numpy())


def test_per_sample_weight(xy):
    x, y = xy  # (4, 3): a (4,) weight does not broadcast by NumPy rules, so it is per sample
    l, g = mse_parts(x, y)
    w = np.array([0.5, 1.0, 2.0, 0.0])
    wc = w[:, None]
    v, grads = mlo.get("mse", reduction="none").value_and_grad(x, y, weight=w)
    close(v, wc * l)
    close(grads["input"], wc * g)
    v, grads = mlo.get("mse", reduction="sum").value_and_grad(x, y, weight=w)
    close(v, np.sum(wc * l))
    close(grads["input"], wc * g)
    v, grads = mlo.get("mse", reduction="mean").value_and_grad(x, y, weight=w)
    total = np.sum(np.broadcast_to(wc, l.shape))
    close(v, np.sum(wc * l) / total)
    close(grads["input"], wc * g / total)


def test_per_sample_weight_of_a_3d_loss():
    rng = np.random.default_rng(4)
    x, y = rng.normal(size=(2, 3, 5)), rng.normal(size=(2, 3, 5))
    l = (x - y) ** 2
    for w, wb in ((np.array([1.0, 3.0]), np.array([1.0, 3.0])[:, None, None]),
                  (rng.uniform(size=(2, 3)), None)):
        wb = w[..., None] if wb is None else wb
        close(mlo.get("mse", reduction="sum")(x, y, weight=w), np.sum(wb * l))


def test_numpy_broadcasting_wins_when_it_fits():
    rng = np.random.default_rng(5)
    x, y = rng.normal(size=(3, 3)), rng.normal(size=(3, 3))
    l, g = mse_parts(x, y)
    w = np.array([1.0, 2.0, 5.0])
    v, grads = mlo.get("mse", reduction="sum").value_and_grad(x, y, weight=w)
    close(v, np.sum(w[None, :] * l))  # along the last axis, as NumPy broadcasts
    assert not np.isclose(v, np.sum(w[:, None] * l))
    close(grads["input"], w[None, :] * g)
    for w2 in (np.array([[1.0, 2.0, 5.0]]), np.array([[2.0], [1.0], [0.5]]), np.array(2.0), 2.0):
        wb = np.broadcast_to(np.asarray(w2, dtype=float), l.shape)
        close(mlo.get("mse", reduction="mean")(x, y, weight=w2), np.sum(wb * l) / np.sum(wb))


def test_weight_dtype_follows_the_loss(xy):
    x, y = (a.astype(np.float32) for a in xy)
    w = np.linspace(0.5, 2.0, 12).reshape(4, 3)  # float64
    v, grads = mlo.get("mse").value_and_grad(x, y, weight=w)
    assert v.dtype == np.float32 and grads["input"].dtype == np.float32
    close(v, np.sum(w * (x.astype(float) - y) ** 2) / w.sum(), rtol=1e-5)


def test_wrong_weight_shape(xy):
    x, y = xy
    for w in (np.ones(5), np.ones((2,)), np.ones((4, 3, 1)), np.ones((2, 3))):
        with pytest.raises(ValueError, match=re.escape(f"`weight` of shape {tuple(w.shape)} fits neither")):
            mlo.get("mse")(x, y, weight=w)


# ---------------------------------------------------------------------------
# masks


def test_where_mask(xy):
    x, y = xy
    l, g = mse_parts(x, y)
    m = np.array([[True, False, True], [False, False, True], [True, True, True], [False, True, False]])
    v, grads = mlo.get("mse", reduction="none").value_and_grad(x, y, where=m)
    close(v, np.where(m, l, 0.0))
    close(grads["input"], np.where(m, g, 0.0))
    v, grads = mlo.get("mse", reduction="sum").value_and_grad(x, y, where=m)
    close(v, l[m].sum())
    close(grads["input"], np.where(m, g, 0.0))
    v, grads = mlo.get("mse", reduction="mean").value_and_grad(x, y, where=m)
    close(v, l[m].mean())
    close(grads["input"], np.where(m, g, 0.0) / m.sum())
    close(grads["target"], -np.where(m, g, 0.0) / m.sum())


def test_per_sample_where_and_weight_together(xy):
    x, y = xy
    l, g = mse_parts(x, y)
    m = np.array([True, False, True, True])
    w = np.array([1.0, 5.0, 2.0, 0.5])
    wm = (w * m)[:, None] * np.ones((1, 3))
    v, grads = mlo.get("mse").value_and_grad(x, y, weight=w, where=m)
    close(v, np.sum(wm * l) / np.sum(wm))
    close(grads["input"], wm * g / np.sum(wm))


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
def test_masked_nan_does_not_leak_into_the_value(xy):
    x, y = xy
    x = x.copy()
    y = y.copy()
    x[0, 1] = np.nan
    y[2, 0] = np.inf
    m = np.ones(x.shape, dtype=bool)
    m[0, 1] = m[2, 0] = False
    r = np.where(m, x - y, 0.0)
    for reduction, expected in (("mean", np.sum(r * r) / m.sum()), ("sum", np.sum(r * r))):
        v, grads = mlo.get("mse", reduction=reduction).value_and_grad(x, y, where=m)
        assert np.isfinite(v)
        close(v, expected)
        scale = m.sum() if reduction == "mean" else 1.0
        close(grads["input"][m], 2 * r[m] / scale)
    close(mlo.get("l1", reduction="none")(x, y, where=m), np.abs(r))


def test_all_masked_or_zero_weight_mean_is_zero_with_zero_gradient(xy):
    x, y = xy
    for kwargs in ({"where": np.zeros(x.shape, bool)}, {"where": np.zeros(4, bool)},
                   {"weight": np.zeros(x.shape)}, {"weight": np.zeros(4)},
                   {"weight": np.ones(4), "where": np.zeros(4, bool)}):
        for name in ("mse", "l1", "huber"):
            v, grads = mlo.get(name, reduction="mean").value_and_grad(x, y, **kwargs)
            assert v == 0.0, (name, kwargs)
            for g in grads.values():
                assert np.all(g == 0.0), (name, kwargs)
    # an empty input too: 0, not NaN
    v, grads = mlo.get("mse").value_and_grad(np.zeros((0, 3)), np.zeros((0, 3)))
    assert v == 0.0 and grads["input"].shape == (0, 3)


def test_bad_masks(xy):
    x, y = xy
    with pytest.raises(TypeError, match="`where` must be a boolean mask; got dtype float64"):
        mlo.get("mse")(x, y, where=np.ones(x.shape))
    with pytest.raises(TypeError, match="`where` must be a boolean mask; got dtype int"):
        mlo.get("mse")(x, y, where=np.ones(x.shape, dtype=int))
    with pytest.raises(ValueError, match=r"`where` of shape \(2, 3\)"):
        mlo.get("mse")(x, y, where=np.ones((2, 3), bool))
    with pytest.raises(ValueError, match=r"`where` of shape \(5,\)"):
        mlo.get("mse")(x, y, where=np.ones(5, bool))


def test_list_mask_and_weight(xy):
    x, y = xy
    l = (x - y) ** 2
    m = [True, False, True, False]
    close(mlo.get("mse", reduction="sum")(x, y, where=m, weight=[1.0, 1.0, 3.0, 1.0]),
          l[0].sum() + 3.0 * l[2].sum())


# ---------------------------------------------------------------------------
# the engine's axis option


def test_mean_over_one_axis(xy):
    x, y = xy
    l, g = mse_parts(x, y)
    loss = mlo.get("mse", reduction="mean", axis=1)
    close(loss(x, y), l.mean(axis=1))
    ct = np.array([1.0, -2.0, 0.5, 3.0])
    grads = loss.vjp(ct, x, y)
    close(grads["input"], ct[:, None] * g / 3)
    close(grads["target"], -ct[:, None] * g / 3)
    # value_and_grad is the gradient of the sum of the outputs
    close(loss.grad(x, y)["input"], g / 3)
    close(mlo.get("mse", axis=-1)(x, y), l.mean(axis=1))
    close(mlo.get("mse", reduction="sum", axis=0)(x, y), l.sum(axis=0))
    close(mlo.get("mse", axis=(0, 1))(x, y), l.mean())


def test_axis_of_a_3d_loss_with_weight_and_mask():
    rng = np.random.default_rng(6)
    x, y = rng.normal(size=(2, 3, 4)), rng.normal(size=(2, 3, 4))
    l, g = mse_parts(x, y)
    w = rng.uniform(0.5, 2.0, size=(2, 3, 4))
    m = rng.uniform(size=(2, 3, 4)) > 0.3
    m[:, 1, :] = False  # one output fully masked: 0 with zero gradient
    wm = w * m
    loss = mlo.get("mse", reduction="mean", axis=(0, 2))
    ct = np.array([1.0, 2.0, -1.0])
    value = loss(x, y, weight=w, where=m)
    denominator = np.where(wm.sum(axis=(0, 2)) == 0, 1.0, wm.sum(axis=(0, 2)))
    close(value, np.sum(wm * l, axis=(0, 2)) / denominator)
    assert value[1] == 0.0
    grads = loss.vjp(ct, x, y, weight=w, where=m)
    close(grads["input"], wm * g * (ct / denominator)[None, :, None])
    assert np.all(grads["input"][:, 1, :] == 0.0)


def test_axis_is_checked(xy):
    x, y = xy
    with pytest.raises(ValueError, match="`axis` 2 is out of range for an array of 2 dimensions"):
        mlo.get("mse", axis=2)(x, y)
    with pytest.raises(ValueError, match="repeated"):
        mlo.get("mse", axis=(1, -1))(x, y)
    with pytest.raises(TypeError, match="`axis` must be an int"):
        mlo.get("mse", axis="1")


def test_axis_with_reduction_none_keeps_the_shape(xy):
    x, y = xy
    close(mlo.get("mse", reduction="none", axis=1)(x, y), (x - y) ** 2)


def test_batchmean_is_refused_by_regression_losses():
    for name in ("mse", "l1", "huber", "psnr", "pinball", "mase"):
        with pytest.raises(ValueError, match=r"`reduction` of .*'batchmean'"):
            mlo.get(name, reduction="batchmean")


# ---------------------------------------------------------------------------
# property: any shape, reduction, axes, weight and mask against the NumPy formula


@st.composite
def reduction_cases(draw):
    shape = tuple(draw(st.lists(st.integers(0, 4), min_size=0, max_size=3)))
    reduction = draw(st.sampled_from(["none", "mean", "sum"]))
    axis = None
    if shape and reduction != "none" and draw(st.booleans()):
        axis = tuple(sorted(draw(st.sets(st.integers(0, len(shape) - 1), min_size=1))))
    lead = draw(st.integers(0, len(shape)))
    weight_shape = draw(st.sampled_from([None, shape, shape[:lead]]))
    use_where = draw(st.booleans())
    seed = draw(st.integers(0, 2**16))
    return shape, reduction, axis, weight_shape, use_where, seed


@settings(max_examples=150, deadline=None)
@given(reduction_cases())
def test_reductions_match_the_formula(case):
    shape, reduction, axis, weight_shape, use_where, seed = case
    rng = np.random.default_rng(seed)
    x, y = rng.normal(size=shape), rng.normal(size=shape)
    l, g = mse_parts(x, y)
    s = np.ones(shape)
    kwargs = {}
    if weight_shape is not None:
        w = rng.uniform(0.0, 2.0, size=weight_shape) * (rng.uniform(size=weight_shape) > 0.2)
        fits = all(a in (1, b) for a, b in zip(reversed(w.shape), reversed(shape)))
        s = s * (w if fits else w.reshape(w.shape + (1,) * (len(shape) - w.ndim)))
        kwargs["weight"] = w
    if use_where:
        m = rng.uniform(size=shape) > 0.3
        s = s * m
        kwargs["where"] = m
    axes = tuple(range(len(shape))) if axis is None else axis
    if reduction == "none":
        expected, denominator = s * l, None
    else:
        expected = np.sum(s * l, axis=axes)
        if reduction == "mean":
            total = np.sum(s, axis=axes)
            denominator = np.where(total == 0, 1.0, total)
            expected = expected / denominator
        else:
            denominator = np.ones(np.shape(expected))
    loss = mlo.get("mse", reduction=reduction, axis=axis)
    value = loss(x, y, **kwargs)
    assert np.shape(value) == np.shape(expected)
    close(value, expected)
    ct = rng.normal(size=np.shape(expected))
    if reduction == "none":
        expected_grad = ct * s * g
    else:
        keep = tuple(1 if i in axes else n for i, n in enumerate(shape))
        expected_grad = np.reshape(ct / denominator, keep) * s * g
    grads = loss.vjp(ct, x, y, **kwargs)
    close(grads["input"], expected_grad)
    close(grads["target"], -expected_grad)
