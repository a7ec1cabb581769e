"""linear_cross_entropy against independent references.

Expected numbers come from PyTorch (torch.nn.functional.linear_cross_entropy
and its autograd, float64), from the unfused NumPy path (logits = x W^T + b,
then cross_entropy and the chain rule written here), and from hand-computed
cases. Memory is measured with tracemalloc against that unfused path.
"""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

import mithril_losses as mlo

from conftest import native, to_numpy

torch = pytest.importorskip("torch")
F = torch.nn.functional

N, H, C = 7, 5, 11


def close(actual, expected, rtol=1e-10, atol=1e-12):
    np.testing.assert_allclose(to_numpy(actual), np.asarray(expected, dtype=np.float64), rtol=rtol, atol=atol)


def draw(seed, n=N, h=H, classes=C, *, ignore_index=-100, scale=1.0):
    """Features, layer, bias, class weights and targets (about a quarter ignored, never all)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    y = np.where(rng.random(n) < 0.25, ignore_index, y)
    y[:1] = 1 if ignore_index != 1 else 2
    return {"input": rng.normal(size=(n, h)) * scale, "linear_weight": rng.normal(size=(classes, h)),
            "linear_bias": rng.normal(size=classes), "weight": rng.uniform(0.5, 2.0, classes),
            "target": y.astype(np.int64)}


def torch_reference(data, cotangent, *, bias, class_weight, reduction, **options):
    """(value, {input, linear_weight[, linear_bias]: gradient}) of F.linear_cross_entropy through autograd."""
    t = {k: torch.tensor(v, requires_grad=k in ("input", "linear_weight", "linear_bias")) for k, v in data.items()}
    value = F.linear_cross_entropy(t["input"], t["linear_weight"], t["target"],
                                   linear_bias=t["linear_bias"] if bias else None,
                                   weight=t["weight"] if class_weight else None, reduction=reduction, **options)
    names = ["input", "linear_weight"] + (["linear_bias"] if bias else [])
    grads = torch.autograd.grad(value, [t[n] for n in names], torch.tensor(cotangent))
    return value.detach().numpy(), {n: g.numpy() for n, g in zip(names, grads)}


def ours(data, cotangent, *, bias, class_weight, reduction, backend=None, **options):
    loss = mlo.get("linear_cross_entropy", reduction=reduction, **options)
    inputs = {"linear_bias": data["linear_bias"]} if bias else {}
    if class_weight:
        inputs["weight"] = data["weight"]
    args = (data["input"], data["linear_weight"], data["target"])
    return loss(*args, **inputs, backend=backend), loss.vjp(cotangent, *args, **inputs, backend=backend)


def compare(data, *, bias, class_weight, reduction, chunks=(None, None), **options):
    out_shape = data["target"].shape if reduction == "none" else ()
    ct = np.random.default_rng(1).uniform(0.5, 1.5, out_shape)
    ref_value, ref_grads = torch_reference(data, ct, bias=bias, class_weight=class_weight, reduction=reduction,
                                           **options)
    value, grads = ours(data, ct, bias=bias, class_weight=class_weight, reduction=reduction,
                        chunk_size=chunks[0], class_chunk_size=chunks[1], **options)
    close(value, ref_value)
    assert sorted(grads) == sorted(ref_grads)
    for name, g in ref_grads.items():
        close(grads[name], g)


OPTIONS = ({}, {"ignore_index": 2}, {"label_smoothing": 0.15}, {"ignore_index": 0, "label_smoothing": 0.3})
CHUNKS = ((None, None), (3, 4), (1, 1), (2, 11), (7, 5))  # rows x classes; most do not divide 7 x 11


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("class_weight", [False, True])
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("options", OPTIONS, ids=str)
def test_matches_torch(bias, class_weight, reduction, options):
    data = draw(0, ignore_index=options.get("ignore_index", -100))
    compare(data, bias=bias, class_weight=class_weight, reduction=reduction, chunks=(3, 4), **options)


@pytest.mark.parametrize("chunks", CHUNKS, ids=str)
@pytest.mark.parametrize("options", OPTIONS, ids=str)
def test_chunks_do_not_change_the_result(chunks, options):
    data = draw(2, ignore_index=options.get("ignore_index", -100))
    for reduction in ("none", "mean"):
        compare(data, bias=True, class_weight=True, reduction=reduction, chunks=chunks, **options)


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_one_sample_and_unbatched(reduction):
    data = draw(3, n=1)
    compare(data, bias=True, class_weight=True, reduction=reduction, label_smoothing=0.1)
    flat = {**data, "input": data["input"][0], "target": data["target"][0]}  # (H,) features, a scalar target
    compare(flat, bias=True, class_weight=False, reduction=reduction, chunks=(1, 3))


def test_ignore_index_default_is_torchs():
    loss = mlo.get("linear_cross_entropy")
    assert loss.options["ignore_index"] == -100  # PyTorch's None, for class indices
    assert mlo.from_config(loss.to_config()).to_config() == loss.to_config()
    compare(draw(4), bias=True, class_weight=False, reduction="mean", ignore_index=None)


def test_logits_of_ten_thousand_keep_their_digits():
    # logits of order 1e4, spread over tiles: the online log-sum-exp rescales without overflow
    data = draw(5, scale=3e3)
    compare(data, bias=True, class_weight=True, reduction="none", chunks=(2, 3), label_smoothing=0.2)


def test_hand_computed_case():
    # x W^T = [0, log 3] (+ b = 0): p = (1/4, 3/4); target 1: -log(3/4); dz = (1/4, -1/4)
    x = np.array([[1.0, 0.0]])
    w = np.array([[0.0, 0.0], [np.log(3.0), 0.0]])
    loss = mlo.get("linear_cross_entropy", reduction="sum", class_chunk_size=1)
    value, grads = loss.value_and_grad(x, w, np.array([1]), linear_bias=np.zeros(2))
    close(value, -np.log(0.75))
    close(grads["input"], [[-0.25 * np.log(3.0), 0.0]])
    close(grads["linear_weight"], [[0.25, 0.0], [-0.25, 0.0]])
    close(grads["linear_bias"], [0.25, -0.25])


# --------------------------------------------------------------------------- the unfused NumPy path


def unfused(data, reduction="mean", **options):
    """logits = x W^T + b, cross_entropy's value and logit gradient, then the chain rule."""
    x, w = data["input"], data["linear_weight"]
    logits = x @ w.T + data["linear_bias"]
    value, g = mlo.get("cross_entropy", reduction=reduction, **options).value_and_grad(
        logits, data["target"], weight=data.get("weight"))
    dz = g["input"]
    return value, {"input": dz @ w, "linear_weight": dz.T @ x, "linear_bias": dz.sum(axis=0)}


@pytest.mark.parametrize("dtype, rtol", [("float64", 1e-10), ("float32", 2e-5)])
def test_matches_the_unfused_path(dtype, rtol):
    data = draw(6, n=300, h=16, classes=700)
    data = {k: v.astype(dtype) if v.dtype.kind == "f" else v for k, v in data.items()}
    expected_value, expected = unfused(data, label_smoothing=0.1)
    loss = mlo.get("linear_cross_entropy", label_smoothing=0.1, chunk_size=128, class_chunk_size=256)
    value, grads = loss.value_and_grad(data["input"], data["linear_weight"], data["target"],
                                       linear_bias=data["linear_bias"], weight=data["weight"])
    assert value.dtype == np.dtype(dtype) and all(g.dtype == np.dtype(dtype) for g in grads.values())
    close(value, expected_value, rtol=rtol, atol=0)
    for name, g in expected.items():
        # norm-wise: the largest error against the largest entry
        assert np.max(np.abs(grads[name] - g)) <= rtol * np.max(np.abs(g)), name


def test_peak_memory_is_a_quarter_of_the_unfused_path():
    # default tiles (2048 rows x 1024 classes in float32) in a batch of 2048 x 16000 logits
    data = {k: v.astype(np.float32) if v.dtype.kind == "f" else v
            for k, v in draw(7, n=2048, h=64, classes=16000).items() if k != "weight"}

    def peak(f):
        tracemalloc.start()
        try:
            f()
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    loss = mlo.get("linear_cross_entropy")
    ours_peak = peak(lambda: loss.value_and_grad(data["input"], data["linear_weight"], data["target"],
                                                 linear_bias=data["linear_bias"]))
    unfused_peak = peak(lambda: unfused(data))
    assert ours_peak <= unfused_peak / 4, (ours_peak, unfused_peak)


# --------------------------------------------------------------------------- backends


def test_backends_agree_with_torch(backend):
    data = draw(8, n=8, classes=12, ignore_index=3)  # 2 x 2 tiles of one shape: JAX compiles each op once
    ct = np.random.default_rng(9).uniform(0.5, 1.5, 8)
    ref_value, ref_grads = torch_reference(data, ct, bias=True, class_weight=True, reduction="none",
                                           ignore_index=3, label_smoothing=0.2)
    x = {k: native(backend, v, "float64" if v.dtype.kind == "f" else None) for k, v in data.items()}
    loss = mlo.get("linear_cross_entropy", reduction="none", ignore_index=3, label_smoothing=0.2, chunk_size=4,
                   class_chunk_size=6)
    args = (x["input"], x["linear_weight"], x["target"])
    close(loss(*args, linear_bias=x["linear_bias"], weight=x["weight"]), ref_value)
    grads = loss.vjp(native(backend, ct, "float64"), *args, linear_bias=x["linear_bias"], weight=x["weight"])
    for name, g in ref_grads.items():
        close(grads[name], g)


# --------------------------------------------------------------------------- bad input


def call(**changes):
    data = {**draw(10), **changes}
    return mlo.get("linear_cross_entropy")(data["input"], data["linear_weight"], data["target"],
                                            linear_bias=data["linear_bias"], weight=data["weight"])


@pytest.mark.parametrize("changes, error, words", [
    ({"linear_weight": np.ones((C, H + 1))}, ValueError, ["`input`", "`linear_weight`", "features", "(7, 5)",
                                                          "(11, 6)"]),
    ({"linear_bias": np.ones(C - 1)}, ValueError, ["`linear_bias`", f"({C},)", f"({C - 1},)"]),
    ({"weight": np.ones(C + 2)}, ValueError, ["`weight`", f"({C},)", f"({C + 2},)"]),
    ({"target": np.zeros(N + 1, dtype=np.int64)}, ValueError, ["`target`", f"({N},)", f"({N + 1},)"]),
    ({"target": np.full(N, C, dtype=np.int64)}, ValueError, ["`target`", f"[0, {C})", str(C)]),
    ({"target": np.zeros(N)}, TypeError, ["`target`", "integer class indices"]),
    ({"linear_weight": np.ones((C, 2, H))}, ValueError, ["`linear_weight`", "(C, H)"]),
    ({"input": np.ones((2, N, H))}, ValueError, ["`input`", "(N, H)"]),
    ({"input": np.ones((N, H), dtype=np.int64)}, TypeError, ["`input`", "floating"]),
])
def test_bad_input_names_the_argument(changes, error, words):
    with pytest.raises(error) as info:
        call(**changes)
    for word in words:
        assert word in str(info.value)


@pytest.mark.parametrize("option", ["chunk_size", "class_chunk_size"])
def test_chunk_sizes_are_positive_integers(option):
    with pytest.raises(ValueError, match=f"`{option}`"):
        mlo.get("linear_cross_entropy", **{option: 0})
    with pytest.raises(TypeError, match=f"`{option}`"):
        mlo.get("linear_cross_entropy", **{option: 2.5})


def test_an_empty_batch():
    data = draw(11, n=0)
    for reduction, expected in (("none", np.zeros(0)), ("sum", 0.0), ("mean", 0.0)):  # mean: 0, not NaN
        loss = mlo.get("linear_cross_entropy", reduction=reduction)
        value, grads = loss.value_and_grad(data["input"], data["linear_weight"], data["target"],
                                           linear_bias=data["linear_bias"])
        close(value, expected)
        assert grads["input"].shape == (0, H)
        close(grads["linear_weight"], np.zeros((C, H)))
        close(grads["linear_bias"], np.zeros(C))
