"""Compiled mode: ``mlo.compile(loss)`` and ``get(..., compile=True)`` run a loss's calls under ``jax.jit``,
``torch.compile`` (here ``backend="aot_eager"``, which needs no C++ toolchain) and ``mx.compile``.

Values and gradients are compared with the eager loss and with PyTorch's own losses differentiated by
autograd (float64); the cache is checked by counting what the frameworks trace (PyTorch: graphs handed to a
counting ``torch.compile`` backend; JAX and MLX: executions of the loss's Python, which only a trace runs).
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

import mithril_losses as mlo
from mithril_losses._loss import Loss

from conftest import installed, native, to_numpy



def compiled(loss, framework):
    return mlo.compile(loss, backend="aot_eager") if framework == "torch" else mlo.compile(loss)


def assert_same(actual, expected, rtol=1e-10):
    if isinstance(expected, dict):
        assert actual.keys() == expected.keys()
        for key in expected:
            assert_same(actual[key], expected[key], rtol)
        return
    np.testing.assert_allclose(to_numpy(actual), to_numpy(expected), rtol=rtol, atol=1e-12)


def torch_reference(fn, arrays, differentiable):
    """Value and gradients of PyTorch's own loss ``fn(*arrays)`` (float64), by autograd."""
    import torch

    tensors = [torch.tensor(a, requires_grad=i in differentiable) for i, a in enumerate(arrays)]
    value = fn(*tensors)
    grads = torch.autograd.grad(value, [tensors[i] for i in differentiable])
    return value.detach().numpy(), [g.numpy() for g in grads]


rng = np.random.default_rng(0)
X, Y = rng.normal(size=(6, 5)), rng.normal(size=(6, 5))
LABELS = np.array([0, 4, 2, 2, 1, 3])
CLASS_WEIGHTS = rng.uniform(0.5, 2.0, size=5)
BITS = (rng.uniform(size=(6, 5)) > 0.5).astype(np.float64)

# name, options, inputs, differentiable positions, PyTorch's loss on the same inputs
CASES = {
    "mse": ("mse", {}, (X, Y), (0, 1), lambda F, a, b: F.mse_loss(a, b)),
    "cross_entropy": ("cross_entropy", {"ignore_index": 2}, (X, LABELS, CLASS_WEIGHTS), (0,),
                      lambda F, a, t, w: F.cross_entropy(a, t, weight=w, ignore_index=2)),
    "bce_with_logits": ("binary_cross_entropy_with_logits", {}, (X, BITS), (0, 1),
                        lambda F, a, t: F.binary_cross_entropy_with_logits(a, t)),
    "huber": ("huber", {"delta": 0.5, "reduction": "sum"}, (X, Y), (0, 1),
              lambda F, a, b: F.huber_loss(a, b, delta=0.5, reduction="sum")),
}


@pytest.mark.parametrize("case", CASES)
def test_values_and_gradients_equal_the_eager_loss_and_pytorch(framework, case):
    import torch.nn.functional as F

    name, options, arrays, differentiable, reference = CASES[case]
    loss = mlo.get(name, **options)
    fast = compiled(loss, framework)
    args = [native(framework, a, None if a.dtype.kind == "i" else "float64") for a in arrays]
    value, grads = fast.value_and_grad(*args)
    eager_value, eager_grads = loss.value_and_grad(*args)
    assert_same(value, eager_value)
    assert_same(grads, eager_grads)
    ref_value, ref_grads = torch_reference(lambda *t: reference(F, *t), arrays, differentiable)
    assert_same(value, ref_value)
    for i, g in zip(differentiable, ref_grads):
        assert_same(grads[loss.inputs[i]], g)
    assert_same(fast.grad(*args), grads)


def test_reduction_none_and_vjp_with_a_cotangent(framework):
    loss = mlo.get("huber", reduction="none", delta=0.7)
    fast = compiled(loss, framework)
    x, y = native(framework, X, "float64"), native(framework, Y, "float64")
    ct = native(framework, rng.normal(size=X.shape), "float64")
    assert_same(fast(x, y), loss(x, y))
    assert_same(fast.vjp(ct, x, y), loss.vjp(ct, x, y))
    mean = mlo.get("cross_entropy", label_smoothing=0.1)
    labels = native(framework, LABELS)
    assert_same(compiled(mean, framework).vjp(native(framework, 3.0, "float64"), x, labels),
                {"input": 3.0 * to_numpy(mean.grad(x, labels)["input"])})


def test_weight_and_where_are_traced_arguments_not_constants(framework):
    loss = mlo.get("mse")
    fast = compiled(loss, framework)
    x, y = native(framework, X, "float64"), native(framework, Y, "float64")
    for seed in range(2):
        w = native(framework, np.random.default_rng(seed).uniform(size=X.shape), "float64")
        m = native(framework, np.random.default_rng(seed).uniform(size=X.shape) > 0.3)
        value, grads = fast.value_and_grad(x, y, weight=w, where=m)
        eager_value, eager_grads = loss.value_and_grad(x, y, weight=w, where=m)
        assert_same(value, eager_value)
        assert_same(grads, eager_grads)
    assert fast.cache_info() == (1, 1, 1)


def test_layer_inputs_are_compiled_in_their_structure(framework):
    loss = mlo.get("feature_reconstruction")
    fast = compiled(loss, framework)
    real = {"conv1": native(framework, X, "float64"), "conv2": native(framework, Y[:, :3], "float64")}
    fake = {"conv1": native(framework, Y, "float64"), "conv2": native(framework, X[:, :3], "float64")}
    value, grads = fast.value_and_grad(real, fake)
    eager_value, eager_grads = loss.value_and_grad(real, fake)
    assert_same(value, eager_value)
    assert set(grads["features_fake"]) == {"conv1", "conv2"}
    assert_same(grads, eager_grads)


def counting_loss(name, traces, **options):
    """``mlo.get(name)`` whose value and gradient functions count their executions (a compiled call runs them
    only while the framework traces)."""
    base = mlo.spec(name)

    def counted(fn):
        def run(*args, **kwargs):
            traces.append(fn)
            return fn(*args, **kwargs)
        return run

    return Loss(dataclasses.replace(base, value=counted(base.value), vjp=counted(base.vjp), fused=counted(base.fused)),
                **options)


@pytest.mark.parametrize("name", ["jax", "mlx"])
def test_the_cache_hits_for_the_same_shapes_and_recompiles_for_new_ones(name):
    if not installed(name):
        pytest.skip(f"{name} is not installed")
    traces = []
    fast = mlo.compile(counting_loss("mse", traces))
    x, y = native(name, X, "float32"), native(name, Y, "float32")
    fast.value_and_grad(x, y)
    first = len(traces)
    assert first > 0 and fast.cache_info() == (0, 1, 1)
    fast.value_and_grad(native(name, Y, "float32"), native(name, X, "float32"))  # new values, same signature
    assert len(traces) == first and fast.cache_info() == (1, 1, 1)
    fast.value_and_grad(x[:3], y[:3])  # new shape
    fast.value_and_grad(native(name, X, "float64"), native(name, Y, "float64"))  # new dtype
    fast.value_and_grad(x, y, weight=native(name, X, "float32"))  # a weight now
    fast(x, y)  # the value alone
    assert len(traces) > first and fast.cache_info() == (1, 5, 5)
    fast.cache_clear()
    assert fast.cache_info() == (0, 0, 0)


def test_torch_compiles_one_graph_per_signature():
    pytest.importorskip("torch")
    import torch

    graphs = []

    def counting_backend(graph, example_inputs):
        graphs.append(graph)
        return graph.forward

    fast = mlo.compile(mlo.get("mse"), backend=counting_backend)
    x, y = torch.tensor(X), torch.tensor(Y)
    fast.value_and_grad(x, y)
    compiled_once = len(graphs)
    assert compiled_once > 0
    fast.value_and_grad(y, x)
    assert len(graphs) == compiled_once and fast.cache_info() == (1, 1, 1)
    fast.value_and_grad(x.float(), y.float())
    assert len(graphs) > compiled_once and fast.cache_info() == (1, 2, 2)


def test_bad_inputs_raise_the_engine_errors_before_tracing(framework):
    fast = compiled(mlo.get("cross_entropy"), framework)
    x, labels = native(framework, X, "float64"), native(framework, LABELS)
    bad_calls = [
        (lambda loss: loss(x, native(framework, LABELS + 5)), ValueError),  # labels out of range: values checked
        (lambda loss: loss(x, native(framework, LABELS[:4])), ValueError),
        (lambda loss: loss(native(framework, LABELS[:, None] * np.ones((1, 5), int)), labels), TypeError),
        (lambda loss: loss.vjp(native(framework, np.ones(3), "float64"), x, labels), ValueError),
    ]
    for call, error in bad_calls:
        with pytest.raises(error) as eager:
            call(fast.loss)
        with pytest.raises(error, match=str(eager.value).replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
            call(fast)


@pytest.mark.parametrize("name", ["numpy", "array_api_strict"])
def test_backends_without_a_compiler_run_eagerly(name):
    if not installed(name):
        pytest.skip(f"{name} is not installed")
    loss = mlo.get("cross_entropy", label_smoothing=0.2)
    fast = mlo.compile(loss)
    x, labels = native(name, X, "float64"), native(name, LABELS)
    (value, grads), (eager_value, eager_grads) = fast.value_and_grad(x, labels), loss.value_and_grad(x, labels)
    assert_same(value, eager_value, rtol=1e-15)
    assert_same(grads, eager_grads, rtol=1e-15)
    assert type(fast(x, labels)) is type(loss(x, labels))
    assert fast.cache_info() == (0, 0, 0)


def test_numpy_input_is_converted_to_the_configured_backend():
    pytest.importorskip("jax")
    import jax

    fast = mlo.compile(mlo.get("mse"))
    value, grads = fast.value_and_grad(X, Y, backend="jax")
    assert isinstance(value, jax.Array) and isinstance(grads["input"], jax.Array)
    with mlo.use_backend("jax"):
        assert_same(fast(X, Y), np.mean((X - Y) ** 2), rtol=1e-6)
    assert fast.cache_info().misses == 2  # float32 value_and_grad (x64 may be off) and value


def test_get_compile_and_from_config():
    fast = mlo.get("cross_entropy", compile=True, ignore_index=1, label_smoothing=0.1)
    assert (fast.name, fast.family, fast.inputs, fast.differentiable) == \
        ("cross_entropy", "classification", ("input", "target", "weight"), ("input",))
    assert fast.reduction == "mean" and fast.options == {"ignore_index": 1, "label_smoothing": 0.1}
    cfg = fast.to_config()
    assert cfg == {**mlo.get("cross_entropy", ignore_index=1, label_smoothing=0.1).to_config(), "compile": True}
    again = mlo.from_config(json.loads(json.dumps(cfg)))
    assert again.to_config() == cfg and repr(again) == repr(fast)
    assert repr(fast).startswith("compile(Loss('cross_entropy'")
    with_options = mlo.from_config({"name": "mse", "compile": {"backend": "aot_eager"}})
    assert with_options.compile_options == {"backend": "aot_eager"}
    assert with_options.to_config() == {"name": "mse", "reduction": "mean", "compile": {"backend": "aot_eager"}}
    assert repr(with_options) == "compile(Loss('mse', reduction='mean'), backend='aot_eager')"
    assert isinstance(mlo.get("mse", compile=False), Loss)
    with pytest.raises(TypeError, match="`compile` must be True, False or a dict of compiler options; got 'yes'"):
        mlo.get("mse", compile="yes")
    with pytest.raises(TypeError, match="`compile` takes a loss from mithril_losses.get"):
        mlo.compile("mse")
    with pytest.raises(TypeError, match="unknown option `reductoin`"):
        mlo.from_config({"name": "mse", "reductoin": "sum", "compile": True})
