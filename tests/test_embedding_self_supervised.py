"""Self-supervised and contrastive losses (ntxent, clip_contrastive, siglip, dino, ibot_patch, update_center)
against independent references.

Every expected number here comes from outside the code under test: optax's
``ntxent`` (value and ``jax.grad``), PyTorch autograd of the formulas written in
this file (``F.normalize``, ``F.cross_entropy`` with ``label_smoothing``,
``F.logsigmoid``, ``log_softmax``), NumPy loops written here, hand-computed
closed forms on tiny inputs, and float64 finite differences of the NumPy loops.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import mithril_losses as mlo
from mithril_losses.losses.embedding.self_supervised import update_center

from conftest import BACKENDS, installed, native, to_numpy

LOSSES = ("ntxent", "clip_contrastive", "siglip", "dino", "ibot_patch")


def close(actual, expected, rtol=1e-12, atol=1e-12):
    np.testing.assert_allclose(to_numpy(actual) if not isinstance(actual, (float, int)) else actual,
                               np.asarray(expected, dtype=np.float64), rtol=rtol, atol=atol)


def tt(a, grad=False):
    return torch.tensor(np.asarray(a, dtype=np.float64), requires_grad=grad)


def torch_grads(value, tensors):
    return [g.numpy() for g in torch.autograd.grad(value, tensors)]


def numeric_grad(f, x, h=1e-5):
    """4th-order central differences of the scalar f(x), entry by entry."""
    g = np.zeros_like(x)
    for idx in np.ndindex(x.shape):
        vals = []
        for step in (2.0, 1.0, -1.0, -2.0):
            moved = x.copy()
            moved[idx] += step * h
            vals.append(f(moved))
        g[idx] = (-vals[0] + 8.0 * vals[1] - 8.0 * vals[2] + vals[3]) / (12.0 * h)
    return g


@functools.lru_cache(maxsize=None)
def _optax_ntxent(temperature):
    import jax
    import optax

    jax.config.update("jax_enable_x64", True)
    return jax.jit(jax.value_and_grad(lambda e, labels: optax.losses.ntxent(e, labels, temperature=temperature)))


def optax_ntxent(x, labels, temperature=0.07):
    """optax's ntxent value and its jax.grad with respect to the embeddings (float64)."""
    value, grad = _optax_ntxent(temperature)(x, labels)
    return float(value), np.asarray(grad)


def groups(rng, n_groups, d):
    labels = rng.permutation(np.repeat(np.arange(n_groups), 2)).astype(np.int64)
    return rng.normal(size=(labels.size, d)), labels


# --------------------------------------------------------------------------
# references written here


def ref_ntxent_loop(x, labels, temperature):
    """NT-Xent by explicit loops over the positive pairs (NumPy)."""
    u = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), np.sqrt(np.finfo(x.dtype).eps))
    s = u @ u.T / temperature
    losses = []
    for i in range(len(x)):
        negatives = [s[i, k] for k in range(len(x)) if labels[k] != labels[i]]
        for j in range(len(x)):
            if j != i and labels[j] == labels[i]:
                terms = np.array([s[i, j]] + negatives)
                losses.append(-(s[i, j] - (terms.max() + np.log(np.sum(np.exp(terms - terms.max()))))))
    return float(np.mean(losses))


def torch_clip(image, text, temperature, smoothing=0.0, from_logits=False):
    if from_logits:
        li, lt = image / temperature, text / temperature
    else:
        li = F.normalize(image, dim=-1) @ F.normalize(text, dim=-1).T / temperature
        lt = li.T
    y = torch.arange(image.shape[0])
    return 0.5 * (F.cross_entropy(li, y, label_smoothing=smoothing) + F.cross_entropy(lt, y, label_smoothing=smoothing))


def torch_siglip(image, text, temperature, bias):
    z = F.normalize(image, dim=-1) @ F.normalize(text, dim=-1).T / temperature + bias
    y = 2.0 * torch.eye(image.shape[0], dtype=z.dtype) - 1.0
    return -F.logsigmoid(y * z).sum() / image.shape[0]


def torch_dino(student, teacher, center, student_temp, teacher_temp):
    q = torch.softmax((teacher - center) / teacher_temp, dim=-1)
    return -(q * torch.log_softmax(student / student_temp, dim=-1)).sum(-1)


def torch_ibot(student, teacher, mask, center, student_temp, teacher_temp):
    ce = torch_dino(student, teacher, center, student_temp, teacher_temp)
    m = mask.to(ce.dtype)
    return (ce * m).sum(-1) / m.sum(-1).clamp(min=1.0)


# --------------------------------------------------------------------------
# ntxent


@pytest.mark.parametrize("temperature", [0.07, 0.5, 2.0])
def test_ntxent_matches_optax_value_and_gradient(temperature):
    rng = np.random.default_rng(1)
    x, labels = groups(rng, 3, 4)
    labels[np.flatnonzero(labels == 2)[0]] = 0  # a group of three, and one row alone (no positive)
    want, want_grad = optax_ntxent(x, labels, temperature)
    loss = mlo.get("ntxent", temperature=temperature)
    value, grads = loss.value_and_grad(x, labels)
    close(value, want, rtol=1e-12)
    close(grads["embeddings"], want_grad, rtol=1e-10, atol=1e-13)
    close(value, ref_ntxent_loop(x, labels, temperature), rtol=1e-12)


def test_ntxent_closed_form_and_names():
    # two groups of identical unit vectors, orthogonal across groups, t = 1: every pair scores
    # -log(e / (e + 2)) = log(1 + 2 / e)
    x = np.array([[1.0, 0.0], [2.0, 0.0], [0.0, 1.0], [0.0, 3.0]])
    labels = np.array([0, 0, 1, 1])
    want = math.log(1.0 + 2.0 / math.e)
    for name in ("ntxent", "info_nce", "nt_xent"):
        close(mlo.get(name, temperature=1.0)(x, labels), want)
    close(mlo.ntxent(x, labels, temperature=1.0), want)
    close(mlo.info_nce_loss(x, labels, temperature=1.0), want)
    g = mlo.ntxent_loss_gradient(x, labels, temperature=1.0)
    assert isinstance(g, np.ndarray) and g.shape == x.shape
    assert mlo.get("ntxent").differentiable == ("embeddings",)


def test_ntxent_finite_differences_of_loop():
    rng = np.random.default_rng(2)
    x, labels = groups(rng, 3, 4)
    g = mlo.get("ntxent", temperature=0.3).grad(x, labels)["embeddings"]
    close(g, numeric_grad(lambda e: ref_ntxent_loop(e, labels, 0.3), x), rtol=1e-7, atol=1e-9)


def test_ntxent_rows_without_negatives_and_batches_without_positives():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(6, 4))
    # one group only: no negatives anywhere, every pair scores 0 (optax agrees)
    same = np.zeros(6, dtype=np.int64)
    value, grads = mlo.get("ntxent").value_and_grad(x, same)
    close(value, optax_ntxent(x, same)[0])
    close(value, 0.0)
    close(grads["embeddings"], np.zeros_like(x))
    # groups of unequal sizes, rows without a positive
    for lab in (np.array([0, 0, 1, 1, 1, 1]), np.array([0, 0, 0, 1, 1, 2]), np.array([3, 0, 0, 0, 0, 0])):
        want, want_grad = optax_ntxent(x, lab)
        value, grads = mlo.get("ntxent").value_and_grad(x, lab)
        close(value, want, rtol=1e-12)
        close(grads["embeddings"], want_grad, rtol=1e-10, atol=1e-13)
    # all labels distinct: no positive pair; optax gives NaN, here 0 with a zero gradient
    distinct = np.arange(6)
    assert math.isnan(optax_ntxent(x, distinct)[0])
    value, grads = mlo.get("ntxent").value_and_grad(x, distinct)
    assert float(value) == 0.0 and not np.any(grads["embeddings"])


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_ntxent_zero_vectors_and_huge_embeddings(dtype):
    x = np.array([[0.0, 0.0, 0.0], [1e-30, 0.0, 0.0], [1.0, 2.0, 0.5], [1e15, -3e15, 2e15]], dtype=dtype)
    labels = np.array([0, 0, 1, 1])
    value, grads = mlo.get("ntxent").value_and_grad(x, labels)
    g = grads["embeddings"]
    assert g.dtype == np.dtype(dtype) and np.isfinite(value) and np.all(np.isfinite(g))
    # the zero vector (and the tiny one, below the norm floor) have similarity ~0 with everything; the values
    # follow the NumPy loop with the same floor of the norm
    x64 = x.astype(np.float64)
    close(mlo.get("ntxent", temperature=1.0)(x64, labels), ref_ntxent_loop(x64, labels, 1.0), rtol=1e-12)


# --------------------------------------------------------------------------
# clip_contrastive


@pytest.mark.parametrize("smoothing", [0.0, 0.1, 0.6])
@pytest.mark.parametrize("temperature", [0.07, 1.0])
def test_clip_embeddings_match_torch(temperature, smoothing):
    rng = np.random.default_rng(4)
    image, text = rng.normal(size=(5, 4)), rng.normal(size=(5, 4))
    ti, tx = tt(image, True), tt(text, True)
    want = torch_clip(ti, tx, temperature, smoothing)
    loss = mlo.get("clip_contrastive", temperature=temperature, label_smoothing=smoothing)
    value, grads = loss.value_and_grad(image, text)
    close(value, want.item(), rtol=1e-12)
    gi, gx = torch_grads(want, [ti, tx])
    close(grads["image"], gi, rtol=1e-10, atol=1e-13)
    close(grads["text"], gx, rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("smoothing", [0.0, 0.2])
def test_clip_from_logits_matches_torch(smoothing):
    rng = np.random.default_rng(5)
    li = rng.normal(size=(4, 4)) * 3.0
    lt = li.T + rng.normal(size=(4, 4)) * 0.1
    ti, tx = tt(li, True), tt(lt, True)
    want = torch_clip(ti, tx, 0.5, smoothing, from_logits=True)
    value, grads = mlo.get("clip_contrastive", temperature=0.5, label_smoothing=smoothing,
                           from_logits=True).value_and_grad(li, lt)
    close(value, want.item(), rtol=1e-12)
    gi, gx = torch_grads(want, [ti, tx])
    close(grads["image"], gi, rtol=1e-10, atol=1e-13)
    close(grads["text"], gx, rtol=1e-10, atol=1e-13)


def test_clip_closed_form_gradient_dict_and_zero_vectors():
    # image = text = I (two orthonormal pairs), t = 1: each direction's rows score log(1 + 1/e)
    eye = np.eye(2)
    close(mlo.get("clip_contrastive", temperature=1.0)(eye, eye), math.log(1.0 + 1.0 / math.e))
    g = mlo.clip_contrastive_loss_gradient(eye, 2.0 * eye)
    assert set(g) == {"image", "text"}
    # zero vectors: torch's F.normalize gives 0 there, values and gradients finite and equal to torch's
    image = np.array([[0.0, 0.0, 0.0], [1.0, 2.0, 3.0], [0.5, -1.0, 0.0]])
    text = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.5, -1.0, 0.1]])
    ti, tx = tt(image, True), tt(text, True)
    want = torch_clip(ti, tx, 0.07)
    value, grads = mlo.get("clip_contrastive").value_and_grad(image, text)
    close(value, want.item(), rtol=1e-12)
    gi, gx = torch_grads(want, [ti, tx])
    close(grads["image"], gi, rtol=1e-10, atol=1e-13)
    close(grads["text"], gx, rtol=1e-10, atol=1e-13)


def test_clip_huge_logits_float32():
    li = np.array([[1e6, -1e6, 0.0], [3e5, 1e6, -2e6], [0.0, 0.0, -1e6]], dtype=np.float32)
    value, grads = mlo.get("clip_contrastive", temperature=1.0, from_logits=True).value_and_grad(li, li.T.copy())
    assert np.isfinite(value) and all(np.all(np.isfinite(g)) for g in grads.values())
    ti, tx = tt(li, True), tt(li.T, True)
    want = torch_clip(ti, tx, 1.0, from_logits=True)
    close(value, want.item(), rtol=1e-6)
    close(grads["image"], torch_grads(want, [ti, tx])[0], rtol=1e-6, atol=1e-7)


# --------------------------------------------------------------------------
# siglip


@pytest.mark.parametrize("temperature,bias", [(0.1, -10.0), (1.0, 0.0), (0.5, 2.5)])
def test_siglip_matches_torch(temperature, bias):
    rng = np.random.default_rng(6)
    image, text = rng.normal(size=(4, 3)), rng.normal(size=(4, 3))
    image[1] = text[1] * 2.0  # one well-aligned pair
    ti, tx = tt(image, True), tt(text, True)
    want = torch_siglip(ti, tx, temperature, bias)
    value, grads = mlo.get("siglip", temperature=temperature, bias=bias).value_and_grad(image, text)
    close(value, want.item(), rtol=1e-12)
    gi, gx = torch_grads(want, [ti, tx])
    close(grads["image"], gi, rtol=1e-10, atol=1e-13)
    close(grads["text"], gx, rtol=1e-10, atol=1e-13)


def test_siglip_closed_form_and_extremes():
    # image = text = I, t = 1, b = 0: diagonal -log sigmoid(1) twice, off-diagonal log 2 twice, / B = 2
    eye = np.eye(2)
    close(mlo.get("siglip", temperature=1.0, bias=0.0)(eye, eye), math.log1p(math.exp(-1.0)) + math.log(2.0))
    assert set(mlo.siglip_loss_gradient(eye, eye)) == {"image", "text"}
    # logits of +-1e4 and a huge bias in float32, and zero vectors: finite, equal to torch in float64
    image = np.array([[1.0, 0.0], [0.0, 0.0], [0.6, 0.8]], dtype=np.float32)
    text = np.array([[1.0, 0.0], [0.0, 1.0], [-0.6, 0.8]], dtype=np.float32)
    for temperature, bias in ((1e-4, -10.0), (1.0, 1e6), (1.0, -1e6)):
        value, grads = mlo.get("siglip", temperature=temperature, bias=bias).value_and_grad(image, text)
        assert np.isfinite(value) and all(np.all(np.isfinite(g)) for g in grads.values())
        ti, tx = tt(image, True), tt(text, True)
        want = torch_siglip(ti, tx, temperature, bias)
        close(value, want.item(), rtol=1e-6)
        gi, gx = torch_grads(want, [ti, tx])
        close(grads["image"], gi, rtol=1e-5, atol=1e-3)
        close(grads["text"], gx, rtol=1e-5, atol=1e-3)


# --------------------------------------------------------------------------
# dino and update_center


@pytest.mark.parametrize("center_shape", [(6,), (1, 6)])
@pytest.mark.parametrize("temps", [(0.1, 0.04), (0.5, 0.2)])
def test_dino_matches_torch(center_shape, temps):
    rng = np.random.default_rng(7)
    s, t = rng.normal(size=(5, 6)), rng.normal(size=(5, 6))
    c = rng.normal(size=center_shape) * 0.3
    ts = tt(s, True)
    want = torch_dino(ts, tt(t), tt(c), *temps)
    ct = rng.normal(size=5)
    loss = mlo.get("dino", reduction="none", student_temp=temps[0], teacher_temp=temps[1])
    close(loss(s, t, c), want.detach().numpy(), rtol=1e-12)
    grads = loss.vjp(ct, s, t, c)
    assert set(grads) == {"student"}  # the teacher is a stop-gradient target, the center an input
    close(grads["student"], torch.autograd.grad(want, [ts], tt(ct))[0].numpy(), rtol=1e-10, atol=1e-13)
    close(mlo.get("dino", student_temp=temps[0], teacher_temp=temps[1])(s, t, c), want.mean().item(), rtol=1e-12)


def test_dino_closed_form_batched_rows_and_masked_logits():
    # uniform teacher and student over 2 classes: log 2, zero gradient
    value, grads = mlo.get("dino").value_and_grad(np.zeros((1, 2)), np.zeros((1, 2)), np.zeros(2))
    close(value, math.log(2.0))
    close(grads["student"], np.zeros((1, 2)))
    # a (V, N, K) stack of rows gives one value per row
    rng = np.random.default_rng(8)
    s, t, c = rng.normal(size=(2, 3, 4)), rng.normal(size=(2, 3, 4)), rng.normal(size=(1, 1, 4))
    close(mlo.get("dino", reduction="none")(s, t, c), torch_dino(tt(s), tt(t), tt(c), 0.1, 0.04).numpy())
    # a -inf (masked) class in both: the teacher puts no mass there, the value is finite, the gradient 0 there
    s = np.array([[-np.inf, 0.3, 1.0], [0.2, -0.1, 0.5]])
    t = np.array([[-np.inf, 0.1, 0.2], [0.0, 0.1, 0.2]])
    value, grads = mlo.get("dino", reduction="none").value_and_grad(s, t, np.zeros(3))
    ts = tt(s[0:1, 1:], True)  # row 0 without its masked class
    want0 = torch_dino(ts, tt(t[0:1, 1:]), tt(np.zeros(2)), 0.1, 0.04)
    close(value[0], want0.item(), rtol=1e-12)
    assert grads["student"][0, 0] == 0.0
    close(grads["student"][0, 1:], torch_grads(want0.sum(), [ts])[0][0], rtol=1e-10, atol=1e-13)


def test_dino_huge_logits_float32():
    s = np.array([[1e4, -1e4, 0.0], [5e3, 5e3, -1e4]], dtype=np.float32)
    t = np.array([[-1e4, 1e4, 0.0], [1e4, 0.0, 0.0]], dtype=np.float32)
    loss = mlo.get("dino", reduction="none")
    value, grads = loss.value_and_grad(s, t, np.zeros(3, dtype=np.float32))
    assert value.dtype == np.float32 and np.all(np.isfinite(value)) and np.all(np.isfinite(grads["student"]))
    ts = tt(s, True)
    want = torch_dino(ts, tt(t), tt(np.zeros(3)), 0.1, 0.04)
    close(value, want.detach().numpy(), rtol=1e-6)
    close(grads["student"], torch_grads(want.sum(), [ts])[0], rtol=1e-6, atol=1e-4)


def test_update_center_numpy_and_shapes():
    rng = np.random.default_rng(9)
    c, t = rng.normal(size=4), rng.normal(size=(6, 4))
    before = (c.copy(), t.copy())
    close(update_center(c, t), 0.9 * c + 0.1 * t.mean(axis=0))
    close(update_center(c, t, momentum=0.0), t.mean(axis=0))
    close(update_center(c, t, momentum=1.0), c)
    np.testing.assert_array_equal(c, before[0])
    np.testing.assert_array_equal(t, before[1])
    c2 = c.reshape(1, 4)
    out = update_center(c2, t, momentum=0.5)
    assert out.shape == (1, 4)
    close(out, 0.5 * c2 + 0.5 * t.mean(axis=0, keepdims=True))
    patches = rng.normal(size=(2, 5, 4))  # iBOT: over images and patches
    close(update_center(c.reshape(1, 1, 4), patches, momentum=0.7), (0.7 * c + 0.3 * patches.mean(axis=(0, 1))).reshape(1, 1, 4))
    close(update_center(list(c), t.tolist()), 0.9 * c + 0.1 * t.mean(axis=0))
    with pytest.raises(ValueError, match="`momentum` must lie in"):
        update_center(c, t, momentum=1.5)
    with pytest.raises(ValueError, match="`center` must have shape"):
        update_center(np.zeros(3), t)
    with pytest.raises(ValueError, match="`center` must have shape"):
        update_center(np.zeros((6, 4)), t)


@pytest.mark.parametrize("name", [b for b in BACKENDS if b != "numpy"])
def test_update_center_keeps_the_array_type(name):
    if not installed(name):
        pytest.skip(f"{name} is not installed")
    rng = np.random.default_rng(10)
    c, t = rng.normal(size=(1, 3)), rng.normal(size=(4, 3))
    out = update_center(native(name, c, "float32"), native(name, t, "float32"), momentum=0.8)
    assert type(out).__module__.partition(".")[0] == type(native(name, c)).__module__.partition(".")[0]
    assert tuple(out.shape) == (1, 3)
    close(out, 0.8 * c + 0.2 * t.mean(axis=0), rtol=1e-6, atol=1e-6)


# --------------------------------------------------------------------------
# ibot_patch


@pytest.mark.parametrize("center_shape", [(5,), (1, 5), (1, 1, 5)])
def test_ibot_matches_torch(center_shape):
    rng = np.random.default_rng(11)
    s, t = rng.normal(size=(3, 4, 5)), rng.normal(size=(3, 4, 5))
    mask = np.array([[True, False, True, True], [False, False, False, False], [False, True, False, False]])
    c = rng.normal(size=center_shape) * 0.2
    ts = tt(s, True)
    want = torch_ibot(ts, tt(t), torch.tensor(mask), tt(c), 0.1, 0.04)
    ct = rng.normal(size=3)
    loss = mlo.get("ibot_patch", reduction="none")
    value = loss(s, t, mask, c)
    close(value, want.detach().numpy(), rtol=1e-12)
    assert value[1] == 0.0  # an image without masked patches
    grads = loss.vjp(ct, s, t, mask, c)
    assert set(grads) == {"student"}
    close(grads["student"], torch.autograd.grad(want, [ts], tt(ct))[0].numpy(), rtol=1e-10, atol=1e-13)
    assert not np.any(grads["student"][1]) and not np.any(grads["student"][0, 1])
    # an integer 0/1 mask means the same; the mean over images
    close(mlo.get("ibot")(s, t, mask.astype(np.int64), c), want.mean().item(), rtol=1e-12)


def test_ibot_all_empty_masks_and_masked_inf_patches():
    rng = np.random.default_rng(12)
    s, t = rng.normal(size=(2, 3, 4)), rng.normal(size=(2, 3, 4))
    none = np.zeros((2, 3), dtype=bool)
    value, grads = mlo.get("ibot_patch").value_and_grad(s, t, none, np.zeros(4))
    assert float(value) == 0.0 and not np.any(grads["student"])
    # an unmasked patch whose cross entropy is infinite (student -inf where the teacher has mass) adds nothing
    s[0, 0, 0] = -np.inf
    mask = np.array([[False, True, True], [True, False, False]])
    value, grads = mlo.get("ibot_patch", reduction="none").value_and_grad(s, t, mask, np.zeros(4))
    assert np.all(np.isfinite(value)) and np.all(np.isfinite(grads["student"]))
    s2 = s.copy()
    s2[0, 0, 0] = 0.0
    close(value, torch_ibot(tt(s2), tt(t), torch.tensor(mask), tt(np.zeros(4)), 0.1, 0.04).numpy(), rtol=1e-12)


# --------------------------------------------------------------------------
# every loss: backends, jit, inputs untouched, reductions of a scalar loss, errors


def _inputs(name, rng):
    if name == "ntxent":
        x, labels = groups(rng, 3, 4)
        return {"embeddings": x, "labels": labels}
    if name in ("clip_contrastive", "siglip"):
        return {"image": rng.normal(size=(3, 4)), "text": rng.normal(size=(3, 4))}
    if name == "dino":
        return {"student": rng.normal(size=(3, 5)), "teacher": rng.normal(size=(3, 5)), "center": rng.normal(size=5)}
    return {"student": rng.normal(size=(2, 3, 5)), "teacher": rng.normal(size=(2, 3, 5)),
            "mask": np.array([[True, False, True], [False, True, True]]), "center": rng.normal(size=(1, 5))}


_TORCH_FORMULAS = {
    "clip_contrastive": lambda x: torch_clip(x["image"], x["text"], 0.07),
    "siglip": lambda x: torch_siglip(x["image"], x["text"], 0.1, -10.0),
    "dino": lambda x: torch_dino(x["student"], x["teacher"], x["center"], 0.1, 0.04).mean(),
    "ibot_patch": lambda x: torch_ibot(x["student"], x["teacher"], x["mask"], x["center"], 0.1, 0.04).mean(),
}


def _reference(name, x):
    """Mean loss and gradients of the differentiable inputs from optax (ntxent) or torch autograd."""
    diff = mlo.get(name).differentiable
    if name == "ntxent":
        v, g = optax_ntxent(x["embeddings"], x["labels"])
        return v, {"embeddings": g}
    t = {k: (torch.tensor(a) if a.dtype == bool else tt(a, k in diff)) for k, a in x.items()}
    v = _TORCH_FORMULAS[name](t)
    return v.item(), dict(zip(diff, torch_grads(v, [t[k] for k in diff])))


@functools.lru_cache(maxsize=None)
def _float32_case(name):
    x = _inputs(name, np.random.default_rng(13))
    return x, _reference(name, x)


@pytest.mark.parametrize("name", LOSSES)
@pytest.mark.parametrize("backend", BACKENDS)
def test_every_backend_in_float32_matches_the_reference(name, backend):
    if not installed(backend):
        pytest.skip(f"{backend} is not installed")
    x, (want, want_grads) = _float32_case(name)
    arrays = {k: native(backend, a, "float32" if a.dtype.kind == "f" else None) for k, a in x.items()}
    value, grads = mlo.get(name).value_and_grad(**arrays)
    close(value, want, rtol=2e-5, atol=1e-6)
    for k, g in want_grads.items():
        assert tuple(grads[k].shape) == g.shape and "float32" in str(grads[k].dtype)
        close(grads[k], g, rtol=2e-4, atol=2e-5)


@pytest.mark.parametrize("name", LOSSES)
def test_traces_under_jax_jit_and_leaves_inputs_untouched(name):
    import jax

    jax.config.update("jax_enable_x64", True)
    x = _inputs(name, np.random.default_rng(14))
    copies = {k: a.copy() for k, a in x.items()}
    loss = mlo.get(name)
    value, grads = loss.value_and_grad(**x)
    for k, a in x.items():
        np.testing.assert_array_equal(a, copies[k])
    want, want_grads = _reference(name, x)
    close(value, want, rtol=1e-12)
    names = tuple(x)
    jitted = jax.jit(lambda *arrays: loss.value_and_grad(**dict(zip(names, arrays))))
    jv, jg = jitted(*(jax.numpy.asarray(a) for a in x.values()))
    close(jv, want, rtol=1e-12)
    for k, g in want_grads.items():
        close(grads[k], g, rtol=1e-10, atol=1e-13)
        close(jg[k], g, rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("name", ["ntxent", "clip_contrastive", "siglip"])
def test_scalar_losses_reduce_to_themselves(name):
    x = _inputs(name, np.random.default_rng(15))
    want, _ = _reference(name, x)
    for reduction in ("none", "mean", "sum"):
        value = mlo.get(name, reduction=reduction)(**x)
        assert np.shape(value) == ()
        close(value, want, rtol=1e-12)
    ct = 2.5
    grads = mlo.get(name, reduction="none").vjp(np.asarray(ct), **x)
    for k, g in mlo.get(name).grad(**x).items():
        close(grads[k], ct * g, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("name,option", [
    ("ntxent", "temperature"), ("clip_contrastive", "temperature"), ("siglip", "temperature"),
    ("dino", "student_temp"), ("dino", "teacher_temp"), ("ibot_patch", "teacher_temp")])
@pytest.mark.parametrize("bad", [0.0, -0.5, float("nan"), float("inf")])
def test_temperatures_are_validated(name, option, bad):
    with pytest.raises(ValueError, match=f"`{option}` must"):
        mlo.get(name, **{option: bad})
    with pytest.raises(TypeError, match=f"`{option}` must be a real number"):
        mlo.get(name, **{option: "0.1"})


def test_option_errors():
    with pytest.raises(ValueError, match=r"`label_smoothing` must lie in \[0.0, 1.0\); got 1.0"):
        mlo.get("clip_contrastive", label_smoothing=1.0)
    with pytest.raises(ValueError, match="`label_smoothing` must lie in"):
        mlo.get("clip_contrastive", label_smoothing=-0.1)
    with pytest.raises(TypeError, match="`from_logits` must be True or False"):
        mlo.get("clip_contrastive", from_logits=1)
    with pytest.raises(ValueError, match="`bias` must be finite"):
        mlo.get("siglip", bias=float("-inf"))
    with pytest.raises(TypeError, match="unknown option `margin`"):
        mlo.get("ntxent", margin=1.0)


def test_input_errors_name_the_argument():
    rng = np.random.default_rng(16)
    x, labels = groups(rng, 2, 3)
    with pytest.raises(TypeError, match="`labels` must hold integer"):
        mlo.get("ntxent")(x, labels.astype(np.float64))
    with pytest.raises(ValueError, match=r"`labels` must have shape \(4,\).*got \(3,\)"):
        mlo.get("ntxent")(x, labels[:3])
    with pytest.raises(ValueError, match=r"`embeddings` must have shape \(N, D\).*got \(4,\)"):
        mlo.get("ntxent")(x[:, 0], labels)
    with pytest.raises(TypeError, match="`embeddings` must be a real floating-point array"):
        mlo.get("ntxent")(x.astype(np.int64), labels)
    with pytest.raises(ValueError, match="`image` and `text` must have the same shape"):
        mlo.get("siglip")(rng.normal(size=(3, 4)), rng.normal(size=(3, 5)))
    with pytest.raises(ValueError, match=r"`image` must have shape \(B, D\)"):
        mlo.get("clip_contrastive")(rng.normal(size=(2, 3, 4)), rng.normal(size=(2, 3, 4)))
    with pytest.raises(ValueError, match=r"`image` must have shape \(2, 2\) \(a square matrix of logits"):
        mlo.get("clip_contrastive", from_logits=True)(rng.normal(size=(2, 3)), rng.normal(size=(2, 3)))
    s = rng.normal(size=(3, 4))
    with pytest.raises(ValueError, match="`student` and `teacher` must have the same shape"):
        mlo.get("dino")(s, s[:2], np.zeros(4))
    with pytest.raises(ValueError, match=r"`center` must have shape \(4,\) .* or \(1, 4\) .*got \(3, 4\)"):
        mlo.get("dino")(s, s, s)
    with pytest.raises(ValueError, match="`center` must have shape"):
        mlo.get("dino")(s, s, np.zeros(5))
    p = rng.normal(size=(2, 3, 4))
    with pytest.raises(ValueError, match=r"`mask` must have shape \(2, 3\)"):
        mlo.get("ibot_patch")(p, p, np.ones((2, 4), dtype=bool), np.zeros(4))
    with pytest.raises(ValueError, match="`mask` must hold binary labels 0 or 1; got 2"):
        mlo.get("ibot_patch")(p, p, np.array([[0, 1, 2], [1, 1, 1]]), np.zeros(4))
    with pytest.raises(ValueError, match=r"`student` must have at least 2 dimension\(s\)"):
        mlo.get("ibot_patch")(p[0, 0], p[0, 0], np.ones(4, dtype=bool), np.zeros(4))
    with pytest.raises(TypeError, match="`center` must be a real floating-point array"):
        mlo.get("dino")(s, s, np.zeros(4, dtype=np.int64))
