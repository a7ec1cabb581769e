"""cross_entropy at large vocabularies and at the NumPy row-chunk boundaries.

References are PyTorch's ``F.cross_entropy`` and its autograd in float64. The
NumPy path works in row chunks of about ``SOFTMAX_CHUNK_BYTES`` written into the
gradient's buffer, so batches are chosen around a chunk's row count, and its
peak memory is bounded with tracemalloc (NumPy reports its buffers to it).
"""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

import mithril_losses as mlo
from mithril_losses import _numerics
from tests.conftest import native, to_numpy

torch = pytest.importorskip("torch")
F = torch.nn.functional


def reference(x, y, weight=None, **options):
    """(value, gradient) of PyTorch's mean cross entropy, float64 autograd."""
    xt = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    w = None if weight is None else torch.tensor(weight, dtype=torch.float64)
    yt = torch.tensor(y) if y.dtype.kind == "i" else torch.tensor(y, dtype=torch.float64)
    value = F.cross_entropy(xt, yt, weight=w, **options)
    value.backward()
    return value.item(), xt.grad.numpy()


def rows_per_chunk(classes, itemsize=8):
    return max(1, _numerics.SOFTMAX_CHUNK_BYTES // (classes * itemsize))


def logits(rng, shape):
    return rng.normal(0.0, 3.0, shape)


@pytest.mark.parametrize("backend", ["numpy", "torch", "jax"])
def test_large_vocabulary_matches_pytorch(backend):
    if backend == "jax":
        pytest.importorskip("jax")
    rng = np.random.default_rng(0)
    x = logits(rng, (64, 50000))
    y = rng.integers(0, 50000, 64)
    y[5] = -100
    value, grads = mlo.get("cross_entropy").value_and_grad(native(backend, x), native(backend, y))
    expected_value, expected_grad = reference(x, y)
    np.testing.assert_allclose(to_numpy(value), expected_value, rtol=1e-12)
    np.testing.assert_allclose(to_numpy(grads["input"]), expected_grad, rtol=1e-10, atol=1e-16)


@pytest.mark.parametrize("offset", [-1, 0, 1])
@pytest.mark.parametrize("classes", [7, 3000])
def test_batches_around_a_chunk_match_pytorch(classes, offset):
    rng = np.random.default_rng(classes + offset)
    n = 2 * rows_per_chunk(classes) + offset
    x, y, w = logits(rng, (n, classes)), rng.integers(0, classes, n), rng.uniform(0.5, 2.0, classes)
    y[::3] = -100
    value, grads = mlo.get("cross_entropy", label_smoothing=0.1).value_and_grad(x, y, weight=w)
    expected_value, expected_grad = reference(x, y, w, label_smoothing=0.1)
    np.testing.assert_allclose(value, expected_value, rtol=1e-12)
    np.testing.assert_allclose(grads["input"], expected_grad, rtol=1e-10, atol=1e-16)
    np.testing.assert_allclose(mlo.get("cross_entropy", label_smoothing=0.1)(x, y, weight=w), expected_value,
                               rtol=1e-12)


@pytest.mark.parametrize("n", [1, 3 * rows_per_chunk(2000) + 2])
def test_probability_targets_across_chunks_match_pytorch(n):
    rng = np.random.default_rng(n)
    x, t = logits(rng, (n, 2000)), rng.uniform(0.0, 1.0, (n, 2000))
    t[:, ::7] = 0.0
    t /= t.sum(axis=1, keepdims=True)
    w = rng.uniform(0.5, 2.0, 2000)
    value, grads = mlo.get("cross_entropy", label_smoothing=0.2).value_and_grad(x, t, weight=w)
    expected_value, expected_grad = reference(x, t, w, label_smoothing=0.2)
    np.testing.assert_allclose(value, expected_value, rtol=1e-12)
    np.testing.assert_allclose(grads["input"], expected_grad, rtol=1e-10, atol=1e-16)


def test_k_dimensional_layout_across_chunks_matches_pytorch():
    rng = np.random.default_rng(3)
    n = rows_per_chunk(300 * 4 * 5) * 2 + 1
    x, y = logits(rng, (n, 300, 4, 5)), rng.integers(0, 300, (n, 4, 5))
    y[0, 1, 2] = -100
    value, grads = mlo.get("cross_entropy").value_and_grad(x, y)
    expected_value, expected_grad = reference(x, y)
    np.testing.assert_allclose(value, expected_value, rtol=1e-12)
    np.testing.assert_allclose(grads["input"], expected_grad, rtol=1e-10, atol=1e-16)


def test_single_sample_and_empty_batch():
    rng = np.random.default_rng(4)
    x, y = logits(rng, (1, 40000)), np.array([123])
    value, grads = mlo.get("cross_entropy").value_and_grad(x, y)
    expected_value, expected_grad = reference(x, y)
    np.testing.assert_allclose(value, expected_value, rtol=1e-12)
    np.testing.assert_allclose(grads["input"], expected_grad, rtol=1e-10, atol=1e-16)
    value, grads = mlo.get("cross_entropy").value_and_grad(np.zeros((0, 40000)), np.zeros(0, dtype=np.int64))
    assert value == 0.0 and grads["input"].shape == (0, 40000)
    none = mlo.get("cross_entropy", reduction="none").value_and_grad(np.zeros((0, 9)), np.zeros(0, dtype=np.int64))
    assert none[0].shape == (0,) and none[1]["input"].shape == (0, 9)


@pytest.mark.parametrize("options", [{}, {"label_smoothing": 0.1}])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_numpy_peak_memory_is_the_gradient_plus_per_sample_terms(dtype, options):
    rng = np.random.default_rng(5)
    n, classes = 256, 20000
    x, y = logits(rng, (n, classes)).astype(dtype), rng.integers(0, classes, n)
    loss = mlo.get("cross_entropy", **options)
    loss.value_and_grad(x, y)  # first call: imports and caches
    allowance = 4096 * n + 2 * (1 << 20)  # per-sample arrays, plus chunks of scratch (1 MiB with room)
    tracemalloc.start()
    try:
        start = tracemalloc.get_traced_memory()[0]
        grads = loss.value_and_grad(x, y)[1]
        grad_peak = tracemalloc.get_traced_memory()[1] - start
        del grads
        tracemalloc.reset_peak()
        start = tracemalloc.get_traced_memory()[0]
        loss(x, y)
        value_peak = tracemalloc.get_traced_memory()[1] - start
    finally:
        tracemalloc.stop()
    assert grad_peak <= x.nbytes + allowance
    assert value_peak <= allowance


@pytest.mark.parametrize("backend", ["numpy", "torch"])
@pytest.mark.parametrize("target", ["indices", "probabilities"])
def test_inputs_are_not_modified(backend, target):
    rng = np.random.default_rng(6)
    x = logits(rng, (3 * rows_per_chunk(1000) + 1, 1000))
    y = rng.integers(0, 1000, x.shape[0]) if target == "indices" else rng.dirichlet(np.ones(1000), x.shape[0])
    w = rng.uniform(0.5, 2.0, 1000)
    xs, ys, ws = native(backend, x), native(backend, y), native(backend, w)
    loss = mlo.get("cross_entropy", label_smoothing=0.1)
    grads = loss.value_and_grad(xs, ys, weight=ws)[1]
    loss.vjp(native(backend, 1.0), xs, ys, weight=ws)
    for given, original in ((xs, x), (ys, y), (ws, w)):
        np.testing.assert_array_equal(to_numpy(given), original)
    if backend == "numpy":
        assert not np.shares_memory(grads["input"], xs)


def test_retained_pytorch_graph_backpropagates_twice():
    rng = np.random.default_rng(7)
    x = torch.tensor(logits(rng, (9, 30)), requires_grad=True)
    y = torch.tensor(rng.integers(0, 30, 9))
    value = mlo.get("cross_entropy")(x, y)
    (first,) = torch.autograd.grad(value, x, retain_graph=True)
    (second,) = torch.autograd.grad(value, x)
    expected = reference(x.detach().numpy(), y.numpy())[1]
    np.testing.assert_allclose(first.numpy(), expected, rtol=1e-12, atol=1e-16)
    np.testing.assert_allclose(second.numpy(), expected, rtol=1e-12, atol=1e-16)
