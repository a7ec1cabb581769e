"""CTC against independent references.

Every expected number comes from outside the code under test: PyTorch's
``F.ctc_loss`` (values and autograd), a brute-force sum over all alignments
written in this file, and float64 finite differences of it.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import mithril_losses as mlo

from conftest import requires


def close(actual, expected, rtol=1e-11, atol=1e-11):
    np.testing.assert_allclose(np.asarray(actual, dtype=np.float64), np.asarray(expected, dtype=np.float64),
                               rtol=rtol, atol=atol)


def log_softmax(x, axis=-1):
    m = np.max(x, axis=axis, keepdims=True)
    return x - m - np.log(np.sum(np.exp(x - m), axis=axis, keepdims=True))


def torch_ctc(lp, targets, in_len, tg_len, ct=None, dtype=torch.float64, **options):
    """(value, gradient of sum(ct * value)) from PyTorch."""
    x = torch.tensor(lp, dtype=dtype, requires_grad=True)
    value = F.ctc_loss(x, torch.as_tensor(targets), torch.as_tensor(in_len), torch.as_tensor(tg_len), **options)
    ct = torch.ones_like(value) if ct is None else torch.as_tensor(ct, dtype=dtype)
    (g,) = torch.autograd.grad(value, x, ct)
    return value.detach().numpy(), g.numpy()


def ours(lp, targets, in_len, tg_len, ct=None, **options):
    loss = mlo.get("ctc_loss", **options)
    value = loss(lp, targets, in_len, tg_len)
    ct = np.ones(np.shape(value)) if ct is None else ct
    return value, loss.vjp(ct, lp, targets, in_len, tg_len)["log_probs"]


def batch(rng, frames=12, n=4, classes=6, width=4, blank=0, dtype=np.float64):
    lp = log_softmax(rng.normal(0.0, 2.0, (frames, n, classes))).astype(dtype)
    labels = rng.integers(0, classes - 1, (n, width))
    labels = labels + (labels >= blank)
    labels[0, :3] = labels[0, 0]  # "a a a": needs blanks between the repeats
    tg_len = rng.integers(0, width + 1, n)
    tg_len[0], tg_len[-1] = 3, 0  # an empty target too
    in_len = rng.integers(8, frames + 1, n)
    in_len[0] = frames
    return lp, labels.astype(np.int64), in_len.astype(np.int64), tg_len.astype(np.int64)


def test_registered():
    assert mlo.available(family="sequence") == ["ctc"]
    assert mlo.get("ctc_loss").name == "ctc"
    assert mlo.get("ctc").inputs == ("log_probs", "targets", "input_lengths", "target_lengths")
    assert mlo.get("ctc").differentiable == ("log_probs",)
    assert callable(mlo.ctc_loss) and callable(mlo.ctc_loss_gradient)
    assert mlo.get("ctc").reduction == "mean"


# --------------------------------------------------------------------------
# PyTorch parity


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("blank", [0, 5])
def test_torch_padded(reduction, blank):
    rng = np.random.default_rng(1 + blank)
    lp, tg, il, tl = batch(rng, blank=blank)
    ct = rng.uniform(0.5, 1.5, (4,)) if reduction == "none" else np.array(1.7)
    ev, eg = torch_ctc(lp, tg, il, tl, ct, blank=blank, reduction=reduction)
    v, g = ours(lp, tg, il, tl, ct, blank=blank, reduction=reduction)
    close(v, ev)
    close(g, eg)
    for n in range(4):  # frames past an input length: gradient 0
        assert np.all(g[il[n]:, n] == 0)
    assert np.any(il < 12)


def test_torch_concatenated_and_functional():
    rng = np.random.default_rng(2)
    lp, tg, il, tl = batch(rng)
    flat = np.concatenate([tg[i, :tl[i]] for i in range(len(tl))])
    ev, eg = torch_ctc(lp, flat, il, tl, reduction="mean")
    close(mlo.ctc_loss(lp, flat, il, tl), ev)
    close(mlo.ctc_loss_gradient(lp, flat, il, tl), eg)
    close(mlo.ctc_loss(lp, tg, il, tl), ev)  # the same as padded


def test_torch_unbatched():
    rng = np.random.default_rng(3)
    lp, tg, il, tl = batch(rng, n=1)
    lp1, tg1, il1, tl1 = lp[:, 0], tg[0, :3], il[0], 3  # PyTorch needs S = L unbatched; (S,) with L < S is padded here
    for reduction in ("none", "mean", "sum"):
        ev, eg = torch_ctc(lp1, tg1, il1, tl1, 0.8, reduction=reduction)
        v, g = ours(lp1, tg1, np.int64(il1), np.int64(tl1), np.array(0.8), reduction=reduction)
        assert np.shape(v) == () and g.shape == lp1.shape
        close(v, ev)
        close(g, eg)
    padded = np.concatenate([tg1, [5, 0]])  # anything past the length is ignored
    close(ours(lp1, padded, np.int64(il1), np.int64(3), reduction="none")[0], torch_ctc(lp1, tg1, il1, 3, reduction="none")[0])


def test_torch_float32_long_sequence():
    rng = np.random.default_rng(4)
    lp, tg, il, tl = batch(rng, frames=120, n=3, classes=20, width=30, dtype=np.float32)
    tl[:] = [30, 17, 0]
    il[:] = 120
    ev, eg = torch_ctc(lp, tg, il, tl, dtype=torch.float32, reduction="sum")
    e64, g64 = torch_ctc(lp.astype(np.float64), tg, il, tl, reduction="sum")
    v, g = ours(lp, tg, il, tl, reduction="sum")
    assert v.dtype == np.float32 and g.dtype == np.float32
    close(v, ev, rtol=1e-6)
    # the log-likelihood is ~ -1300 here: float32 rounds alpha + beta at ~1e-4, PyTorch's float32 as well
    torch_error = np.abs(eg - g64).max()
    assert np.abs(g - g64).max() <= 2 * torch_error + 1e-6
    close(g, g64, atol=5e-4)


def test_masked_classes_and_peaked_probabilities():
    # a class at -inf on every frame (masked) and nearly one-hot frames (loss ~ 0, never negative)
    rng = np.random.default_rng(5)
    lp, tg, il, tl = batch(rng, classes=6)
    tg = np.where(tg == 5, 4, tg)
    lp[..., 5] = -np.inf
    lp = log_softmax(lp)
    ev, eg = torch_ctc(lp, tg, il, tl, reduction="none")
    v, g = ours(lp, tg, il, tl, reduction="none")
    close(v, ev)
    # PyTorch's exp(-inf) - exp(-inf + inf) is NaN at the masked class; its gradient is 0 (finite object)
    assert np.all(np.isnan(eg[..., 5]) | (eg[..., 5] == 0))
    assert np.all(g[..., 5] == 0)
    close(g[..., :5], eg[..., :5])
    for dtype in (np.float32, np.float64):
        peaked = np.full((4, 1, 3), -1e4, dtype=dtype)
        peaked[[0, 1, 2, 3], 0, [1, 0, 1, 0]] = 0.0  # "a _ a _" is the one likely alignment of "a a"
        v, g = ours(peaked, np.array([[1, 1]]), np.array([4]), np.array([2]), reduction="none")
        assert v.dtype == dtype and v[0] >= 0 and v[0] < 1e-6 and np.all(np.isfinite(g))


def test_impossible_alignments():
    rng = np.random.default_rng(6)
    lp, tg, il, tl = batch(rng)
    tg[1, :] = [1, 1, 1, 1]
    il[1], tl[1] = 6, 4  # "a a a a" needs 7 frames
    il[2], tl[2] = 2, 3  # longer than its input
    ev, eg = torch_ctc(lp, tg, il, tl, reduction="none")
    v, g = ours(lp, tg, il, tl, reduction="none")
    assert np.isinf(v[1]) and np.isinf(v[2]) and np.all(np.isfinite(v[[0, 3]]))
    close(v, ev)
    np.testing.assert_array_equal(np.isnan(g), np.isnan(eg))  # PyTorch: NaN on the frames t < T_n
    close(np.nan_to_num(g), np.nan_to_num(eg))
    for reduction in ("none", "mean", "sum"):
        ev, eg = torch_ctc(lp, tg, il, tl, reduction=reduction, zero_infinity=True)
        v, g = ours(lp, tg, il, tl, reduction=reduction, zero_infinity=True)
        close(v, ev)
        close(g, eg)
        assert np.all(g[:, 1:3] == 0)


def test_zero_lengths_and_mean_divisor():
    rng = np.random.default_rng(7)
    lp, tg, il, tl = batch(rng)
    il[3], tl[3] = 0, 0  # no frames, empty target: loss 0
    il[2], tl[2] = 0, 1  # no frames, one label: inf -> 0 with zero_infinity
    ev, eg = torch_ctc(lp, tg, il, tl, reduction="mean", zero_infinity=True)
    v, g = ours(lp, tg, il, tl, reduction="mean", zero_infinity=True)
    close(v, ev)
    close(g, eg)
    v = ours(lp, tg, il, tl, reduction="none")[0]
    assert v[3] == 0 and np.isinf(v[2])
    # mean = batch mean of loss / max(L, 1): by hand from the per-sample losses of PyTorch
    ok = np.array([0, 1])
    per = torch_ctc(lp[:, ok], tg[ok], il[ok], tl[ok], reduction="none")[0]
    close(ours(lp[:, ok], tg[ok], il[ok], tl[ok])[0], np.mean(per / np.maximum(tl[ok], 1)))


def test_padding_is_ignored():
    rng = np.random.default_rng(8)
    lp, tg, il, tl = batch(rng)
    dirty = tg.copy()
    dirty[np.arange(4)[None, :] >= tl[:, None]] = -7  # garbage (and the blank) past each length
    dirty[3, 0] = 0
    close(ours(lp, dirty, il, tl, reduction="none")[0], torch_ctc(lp, tg, il, tl, reduction="none")[0])


# --------------------------------------------------------------------------
# brute force over all alignments, and its finite differences


def brute_force(z, target, blank):
    """-log sum over every path of softmax(z) whose collapse (merge repeats, drop blanks) is the target."""
    p = np.exp(log_softmax(z))
    frames, classes = z.shape
    total = 0.0
    for path in itertools.product(range(classes), repeat=frames):
        collapsed = [c for i, c in enumerate(path) if c != blank and (i == 0 or c != path[i - 1])]
        if collapsed == list(target):
            total += np.prod(p[np.arange(frames), path])
    return -np.log(total)


@pytest.mark.parametrize("target,blank", [((1, 2), 0), ((2, 2), 0), ((1,), 2), ((), 1), ((0, 1, 0), 2)])
def test_brute_force_and_finite_differences(target, blank):
    rng = np.random.default_rng(9)
    z = rng.normal(0.0, 1.0, (5, 3))  # not normalised: treated as logits (the value of log_softmax(z))
    expected = brute_force(z, target, blank)
    args = (np.array(target, dtype=np.int64), np.int64(5), np.int64(len(target)))
    v, g = ours(z, *args, reduction="sum", blank=blank)
    close(v, expected, rtol=1e-12)
    h, fd = 1e-5, np.zeros_like(z)
    for idx in np.ndindex(z.shape):
        e = np.zeros_like(z)
        e[idx] = h
        fd[idx] = (brute_force(z + e, target, blank) - brute_force(z - e, target, blank)) / (2 * h)
    close(g, fd, rtol=1e-7, atol=1e-8)


# --------------------------------------------------------------------------
# backends


@requires("array_api_strict")
def test_array_api_strict_matches_torch():
    import array_api_strict as xps

    rng = np.random.default_rng(10)
    lp, tg, il, tl = batch(rng)
    ev, eg = torch_ctc(lp, tg, il, tl, reduction="mean")
    value, grads = mlo.get("ctc").value_and_grad(*(xps.asarray(a) for a in (lp, tg, il, tl)))
    close(np.asarray(value), ev)
    close(np.asarray(grads["log_probs"]), eg)


@requires("jax")
def test_jax_jit_matches_torch():
    import jax

    jax.config.update("jax_enable_x64", True)
    rng = np.random.default_rng(11)
    lp, tg, il, tl = batch(rng)
    flat = np.concatenate([tg[i, :tl[i]] for i in range(len(tl))])
    loss = mlo.get("ctc", reduction="sum", blank=0)
    ev, eg = torch_ctc(lp, flat, il, tl, reduction="sum")
    value, grads = jax.jit(loss.value_and_grad)(*(jax.numpy.asarray(a) for a in (lp, flat, il, tl)))
    close(np.asarray(value), ev)
    close(np.asarray(grads["log_probs"]), eg)


def test_torch_tensors_float32():
    rng = np.random.default_rng(12)
    lp, tg, il, tl = batch(rng, dtype=np.float32)
    ev, eg = torch_ctc(lp, tg, il, tl, dtype=torch.float32)
    value, grads = mlo.get("ctc").value_and_grad(*(torch.tensor(a) for a in (lp, tg, il, tl)))
    assert isinstance(grads["log_probs"], torch.Tensor) and grads["log_probs"].dtype == torch.float32
    close(value.numpy(), ev, rtol=1e-5, atol=1e-6)
    close(grads["log_probs"].numpy(), eg, rtol=1e-4, atol=1e-6)


def test_inputs_never_modified():
    rng = np.random.default_rng(13)
    arrays = batch(rng)
    copies = [a.copy() for a in arrays]
    mlo.get("ctc").value_and_grad(*arrays)
    for a, c in zip(arrays, copies):
        np.testing.assert_array_equal(a, c)


# --------------------------------------------------------------------------
# errors


def test_errors():
    rng = np.random.default_rng(14)
    lp, tg, il, tl = batch(rng)
    loss = mlo.get("ctc")
    with pytest.raises(ValueError, match=r"`input_lengths` must be in \[0, 12\].*got 13"):
        loss(lp, tg, np.array([13, 9, 9, 9]), tl)
    with pytest.raises(ValueError, match=r"`target_lengths` must be in \[0, 4\].*got 5"):
        loss(lp, tg, il, np.array([5, 1, 1, 0]))
    bad = tg.copy()
    bad[0, 1] = 0
    with pytest.raises(ValueError, match="must not contain the blank index 0"):
        loss(lp, bad, il, tl)
    bad[0, 1] = 6
    with pytest.raises(ValueError, match=r"`targets` must be class indices in \[0, 6\).*got 6"):
        loss(lp, bad, il, tl)
    with pytest.raises(ValueError, match=r"`targets` must be padded \(N, S\) with N = 4"):
        loss(lp, tg[:3], il, tl)
    with pytest.raises(ValueError, match=r"`input_lengths` must have shape \(4,\)"):
        loss(lp, tg, il[:3], tl)
    with pytest.raises(ValueError, match="sum\\(`target_lengths`\\) = 5 labels; got 4"):
        loss(lp, np.array([1, 2, 3, 4]), il, np.array([2, 2, 1, 0]))
    with pytest.raises(TypeError, match="`target_lengths` must be an integer array"):
        loss(lp, tg, il, tl.astype(np.float64))
    with pytest.raises(TypeError, match="`targets` must hold integer class indices"):
        loss(lp, tg.astype(np.float64), il, tl)
    with pytest.raises(ValueError, match=r"`log_probs` must have shape \(T, N, C\)"):
        loss(lp[0, 0], tg, il, tl)
    with pytest.raises(ValueError, match=r"`blank` must be a class index in \[0, 6\).*got 6"):
        mlo.get("ctc", blank=6)(lp, tg, il, tl)
    with pytest.raises(ValueError, match="`blank`"):
        mlo.get("ctc", blank=-1)
    with pytest.raises(TypeError, match="`zero_infinity` must be True or False"):
        mlo.get("ctc", zero_infinity=1)
    with pytest.raises(ValueError, match="`reduction`"):
        mlo.get("ctc", reduction="batchmean")
