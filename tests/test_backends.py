"""Backends: array type, dtype and device kept; conversion; mixed libraries; the array API
standard (array-api-strict); tracing under jax.jit, torch.compile and mx.compile; inputs never
modified or aliased.

Expected numbers are NumPy float64 formulas written here.
"""

from __future__ import annotations

import os
import warnings
from contextlib import nullcontext

import numpy as np
import pytest

import mithril_losses as mlo

from conftest import array_type, close, dtype_name, installed, native, requires, to_numpy

RNG = np.random.default_rng(0)
Y = RNG.uniform(-1.0, 1.0, size=(4, 5))
X = Y + RNG.uniform(0.1, 0.4, size=(4, 5)) * RNG.choice([-1.0, 1.0], size=(4, 5))
X[0, :2] = Y[0, :2] + np.array([1.5, -2.0])  # some residuals in huber's linear part
R = X - Y
N = R.size

# name, options, reduction -> (value, {input: gradient}) in float64, from the formulas
EXPECTED = {
    "mse": (np.mean(R**2), {"input": 2 * R / N, "target": -2 * R / N}),
    "l1": (np.mean(np.abs(R)), {"input": np.sign(R) / N, "target": -np.sign(R) / N}),
    "huber": (np.mean(np.where(np.abs(R) <= 1.0, 0.5 * R**2, np.abs(R) - 0.5)),
              {"input": np.clip(R, -1, 1) / N, "target": -np.clip(R, -1, 1) / N}),
    "pinball": (np.mean(np.maximum(0.5 * -R, -0.5 * -R)), {"input": np.where(R < 0, -0.5, 0.5) / N}),
}
TOLERANCE = {"float64": 1e-12, "float32": 2e-6, "float16": 2e-3, "bfloat16": 2e-2}
LOW_PRECISION = {"numpy": ("float16",), "jax": ("float16", "bfloat16"), "torch": ("float16", "bfloat16"),
                 "mlx": ("float16", "bfloat16"), "array_api_strict": ()}


def device_of(x):
    """The device of an array, by its library's own API."""
    module = type(x).__module__.partition(".")[0]
    if module == "torch":
        return x.device
    if module == "jax":
        return x.devices()
    if module == "array_api_strict":
        return x.device
    return "cpu"


def check_result(value, grads, inputs, name, dtype):
    ref_value, ref_grads = EXPECTED[name]
    template = inputs["input"]
    tol = TOLERANCE[dtype]
    assert isinstance(value, type(template) if not isinstance(template, np.ndarray) else (np.ndarray, np.generic))
    assert dtype_name(value) == dtype
    assert device_of(value) == device_of(template)
    close(value, ref_value, rtol=tol, atol=tol)
    assert tuple(grads) == mlo.get(name).differentiable
    for k, g in grads.items():
        x = inputs[k]
        assert isinstance(g, type(x)), (k, type(g))
        assert dtype_name(g) == dtype and tuple(g.shape) == tuple(x.shape)
        assert device_of(g) == device_of(x)
        close(g, ref_grads[k], rtol=tol, atol=tol / N)


# ---------------------------------------------------------------------------
# type, dtype, device


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_native_inputs_keep_type_dtype_and_device(backend, name, dtype):
    inputs = {"input": native(backend, X, dtype), "target": native(backend, Y, dtype)}
    loss = mlo.get(name)
    value, grads = loss.value_and_grad(**inputs)
    check_result(value, grads, inputs, name, dtype)
    check_result(loss(**inputs), loss.grad(**inputs), inputs, name, dtype)
    none = mlo.get(name, reduction="none")(**inputs)
    assert isinstance(none, type(inputs["input"])) and dtype_name(none) == dtype


def test_low_precision_mse(backend):
    if not LOW_PRECISION[backend]:
        pytest.skip(f"{backend} has no float16/bfloat16")
    for dtype in LOW_PRECISION[backend]:
        inputs = {"input": native(backend, X, dtype), "target": native(backend, Y, dtype)}
        rounded = {k: to_numpy(v) for k, v in inputs.items()}  # the values the backend really holds
        r = rounded["input"] - rounded["target"]
        value, grads = mlo.get("mse").value_and_grad(**inputs)
        tol = TOLERANCE[dtype]
        assert dtype_name(value) == dtype and dtype_name(grads["input"]) == dtype
        assert isinstance(value, type(inputs["input"])) or backend == "numpy"
        close(value, np.mean(r**2), rtol=tol, atol=tol)
        close(grads["input"], 2 * r / N, rtol=tol, atol=tol / N)
        close(grads["target"], -2 * r / N, rtol=tol, atol=tol / N)


def test_unsupported_dtype_names_are_reported(backend):
    from mithril_losses.backends import get_adapter

    adapter = get_adapter(backend)
    missing = [d for d in ("float16", "bfloat16") if d not in LOW_PRECISION[backend]]
    for d in missing:
        with pytest.raises(TypeError, match=f"no dtype '{d}'"):
            adapter.dtype(d)


@requires("array_api_strict")
def test_array_api_strict_device_is_kept():
    import array_api_strict as xps

    device = xps.Device("device1")
    x, y = xps.asarray(X, device=device), xps.asarray(Y, device=device)
    value, grads = mlo.get("huber").value_and_grad(x, y)
    assert value.device == device and grads["input"].device == device and grads["target"].device == device
    close(value, EXPECTED["huber"][0])


# ---------------------------------------------------------------------------
# conversion and mixed libraries


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_numpy_and_lists_are_converted_to_the_configured_backend(backend, dtype):
    x32 = X.astype(dtype)
    for kwargs, context in (({"backend": backend}, None), ({}, backend)):
        with mlo.use_backend(context) if context else nullcontext():
            target = Y.tolist() if dtype == "float64" else Y.astype(dtype)  # lists hold float64
            value, grads = mlo.get("mse").value_and_grad(x32, target, **kwargs)
        if backend == "numpy":
            assert isinstance(value, (np.ndarray, np.generic))
        else:
            assert isinstance(value, array_type(backend))
            assert isinstance(grads["input"], array_type(backend))
            assert isinstance(grads["target"], array_type(backend))
        assert dtype_name(grads["input"]) == dtype
        assert dtype_name(value) == dtype
        tol = TOLERANCE[dtype]
        close(value, EXPECTED["mse"][0], rtol=tol, atol=tol)
        close(grads["input"], EXPECTED["mse"][1]["input"], rtol=tol, atol=tol / N)


@requires("torch")
@requires("jax")
def test_two_tensor_libraries_in_one_call_is_a_type_error():
    import jax.numpy as jnp
    import torch

    with pytest.raises(TypeError) as err:
        mlo.get("mse")(torch.tensor(X), jnp.asarray(Y))
    message = str(err.value)
    assert "`input`" in message and "`target`" in message and "torch" in message and "jax" in message
    with pytest.raises(TypeError, match="`weight` is a torch array"):
        mlo.get("mse")(jnp.asarray(X), jnp.asarray(Y), weight=torch.ones(5))
    with pytest.raises(TypeError, match="`insample` is a jax array"):
        mlo.get("mase")(torch.tensor(X), torch.tensor(Y), jnp.ones((4, 6)))


@requires("torch")
@requires("jax")
def test_tensor_of_another_library_than_the_configured_one_is_a_type_error():
    import torch

    for configure in ("argument", "context", "global"):
        kwargs = {"backend": "jax"} if configure == "argument" else {}
        if configure == "global":
            mlo.set_backend("jax")
        with mlo.use_backend("jax") if configure == "context" else nullcontext():
            with pytest.raises(TypeError, match="`input` is a torch array but the configured backend is 'jax'"):
                mlo.get("mse")(torch.tensor(X), Y, **kwargs)
            with pytest.raises(TypeError, match="`where` is a torch array"):
                mlo.get("mse")(X, Y, where=torch.ones(5, dtype=torch.bool), **kwargs)


@requires("torch")
def test_same_library_tensors_are_not_converted():
    import torch

    x, y = torch.tensor(X), torch.tensor(Y)
    with mlo.use_backend("torch"):
        value, grads = mlo.get("mse").value_and_grad(x, y)
    assert isinstance(value, torch.Tensor)
    close(value, EXPECTED["mse"][0])


# ---------------------------------------------------------------------------
# the array API standard


def _cases():
    from mithril_losses import registry

    out = []
    for name in mlo.available(family="regression"):
        spec = registry.spec(name)
        for options in getattr(spec, "option_cases", ({},)):
            out.append((name, options))
    return out


@requires("array_api_strict")
@pytest.mark.parametrize("name, options", _cases(), ids=lambda v: str(v))
def test_every_regression_loss_runs_on_array_api_strict(name, options):
    loss = mlo.get(name, **options)
    spec = loss.spec
    data = spec.sample(np.random.default_rng(1), (3, 6), loss.options)
    strict = {k: native("array_api_strict", v) for k, v in data.items()}
    value, grads = loss.value_and_grad(**strict)
    assert isinstance(value, array_type("array_api_strict"))
    ref_value, ref_grads = loss.value_and_grad(**data)  # the same code on NumPy
    close(value, ref_value, rtol=1e-10, atol=1e-12)
    for k in loss.differentiable:
        assert isinstance(grads[k], array_type("array_api_strict"))
        close(grads[k], ref_grads[k], rtol=1e-10, atol=1e-12)
    none = mlo.get(name, reduction="none", **options)
    out = to_numpy(none(**strict))
    ct = np.random.default_rng(2).normal(size=out.shape)
    grads = none.vjp(native("array_api_strict", ct), **strict)
    ref_grads = none.vjp(ct, **data)
    for k in none.differentiable:
        close(grads[k], ref_grads[k], rtol=1e-10, atol=1e-12)
        assert np.all(np.isfinite(to_numpy(grads[k])))


# ---------------------------------------------------------------------------
# tracing


@requires("jax")
def test_jax_jit():
    import jax
    import jax.numpy as jnp

    jax.config.update("jax_enable_x64", True)
    x, y = jnp.asarray(X), jnp.asarray(Y)
    loss = mlo.get("huber")
    close(jax.jit(lambda a, b: loss(a, b))(x, y), EXPECTED["huber"][0])
    close(jax.jit(lambda a, b: loss.grad(a, b)["input"])(x, y), EXPECTED["huber"][1]["input"])
    close(jax.jit(lambda a, b: mlo.huber_loss_gradient(a, b))(x, y), EXPECTED["huber"][1]["input"])
    value, grads = jax.jit(loss.value_and_grad)(x, y)
    close(value, EXPECTED["huber"][0])
    close(grads["target"], EXPECTED["huber"][1]["target"])
    ct = jnp.asarray(np.random.default_rng(3).normal(size=X.shape))
    none = mlo.get("huber", reduction="none")
    grads = jax.jit(lambda c, a, b: none.vjp(c, a, b))(ct, x, y)
    close(grads["input"], np.asarray(ct) * np.clip(R, -1, 1))
    # weights and masks traced too
    w = jnp.asarray(np.linspace(0.5, 2.0, 4))
    m = jnp.asarray(np.array([True, True, False, True]))
    wm = (np.linspace(0.5, 2.0, 4) * [1, 1, 0, 1])[:, None] * np.ones((1, 5))
    value = jax.jit(lambda a, b, w_, m_: mlo.get("mse")(a, b, weight=w_, where=m_))(x, y, w, m)
    close(value, np.sum(wm * R**2) / np.sum(wm))
    # losses with their own checks (shapes only while tracing)
    z = jnp.asarray(np.random.default_rng(4).normal(size=(4, 8)))
    value, grads = jax.jit(lambda a, b, c: mlo.get("mase").value_and_grad(a, b, c))(x, y, z)
    scale = np.mean(np.abs(np.diff(np.asarray(z), axis=-1)), axis=-1, keepdims=True)
    close(value, np.mean(np.abs(R) / scale))
    close(grads["input"], np.sign(R) / scale / N)


@requires("torch")
def test_torch_compile_eager():
    import torch

    x, y = torch.tensor(X), torch.tensor(Y)
    value, grads = torch.compile(mlo.get("huber").value_and_grad, backend="eager")(x, y)
    close(value, EXPECTED["huber"][0])
    close(grads["input"], EXPECTED["huber"][1]["input"])
    close(grads["target"], EXPECTED["huber"][1]["target"])
    assert isinstance(value, torch.Tensor) and grads["input"].dtype == torch.float64
    # weights and masks inside the compiled function
    loss = mlo.get("mse")
    fn = torch.compile(lambda a, b, w, m: loss.value_and_grad(a, b, weight=w, where=m), backend="eager")
    w = np.linspace(0.5, 2.0, 4)
    m = np.array([True, True, False, True])
    wm = (w * m)[:, None] * np.ones((1, 5))
    value, grads = fn(x, y, torch.tensor(w), torch.tensor(m))
    close(value, np.sum(wm * R**2) / np.sum(wm))
    close(grads["input"], 2 * wm * R / np.sum(wm))
    # the functional gradient
    fn = torch.compile(lambda a, b: mlo.l1_loss_gradient(a, b, reduction="sum"), backend="eager")
    close(fn(x, y), np.sign(R))


@requires("torch")
@pytest.mark.skipif(not os.environ.get("MITHRIL_LOSSES_SLOW_TESTS"),
                    reason="inductor compiles for ~15 s on CPU; set MITHRIL_LOSSES_SLOW_TESTS=1")
def test_torch_compile_inductor():
    import torch

    fn = torch.compile(lambda a, b: mlo.get("mse").value_and_grad(a, b))
    value, grads = fn(torch.tensor(X, dtype=torch.float32), torch.tensor(Y, dtype=torch.float32))
    close(value, EXPECTED["mse"][0], rtol=1e-5)
    close(grads["input"], EXPECTED["mse"][1]["input"], rtol=1e-5, atol=1e-7)


@requires("mlx")
def test_mx_compile():
    import mlx.core as mx

    x, y = mx.array(X.astype(np.float32)), mx.array(Y.astype(np.float32))
    loss = mlo.get("mse")
    close(mx.compile(lambda a, b: loss(a, b))(x, y), EXPECTED["mse"][0], rtol=1e-5)
    value, grads = mx.compile(lambda a, b: loss.value_and_grad(a, b))(x, y)
    close(value, EXPECTED["mse"][0], rtol=1e-5)
    close(grads["input"], EXPECTED["mse"][1]["input"], rtol=1e-5, atol=1e-7)
    close(mx.compile(lambda a, b: mlo.l1_loss_gradient(a, b))(x, y), EXPECTED["l1"][1]["input"], rtol=1e-5)


# ---------------------------------------------------------------------------
# inputs are never modified, read-only input is fine, results never alias inputs


def test_inputs_are_never_modified(backend):
    weight = np.linspace(0.5, 2.0, 4)
    where = np.array([True, False, True, True])
    ct = np.random.default_rng(5).normal(size=X.shape)
    arrays = {"input": native(backend, X), "target": native(backend, Y), "weight": native(backend, weight),
              "where": native(backend, where), "ct": native(backend, ct)}
    before = {k: to_numpy(v) for k, v in arrays.items()}
    for name in ("mse", "l1", "huber", "pinball"):
        for reduction in ("none", "mean", "sum"):
            loss = mlo.get(name, reduction=reduction)
            loss.value_and_grad(arrays["input"], arrays["target"], weight=arrays["weight"], where=arrays["where"])
            if reduction == "none":
                loss.vjp(arrays["ct"], arrays["input"], arrays["target"], where=arrays["where"])
    for k, v in arrays.items():
        np.testing.assert_array_equal(to_numpy(v), before[k])


def test_read_only_numpy_inputs_are_accepted(backend):
    x, y, w = X.copy(), Y.copy(), np.linspace(0.5, 2.0, 4)
    for a in (x, y, w):
        a.setflags(write=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        value, grads = mlo.get("mse").value_and_grad(x, y, weight=w, backend=backend)
    wb = w[:, None] * np.ones((1, 5))
    close(value, np.sum(wb * R**2) / np.sum(wb))
    close(grads["input"], 2 * wb * R / np.sum(wb))


ALIAS_CASES = [("mse", {}), ("l1", {}), ("huber", {"delta": 0.5}), ("pinball", {"quantile": 0.3}),
               ("psnr", {}), ("mase", {})]


@pytest.mark.parametrize("name, options", ALIAS_CASES)
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_numpy_results_never_alias_inputs(name, options, reduction):
    inputs = {"input": X.copy(), "target": Y.copy()}
    if name == "mase":
        inputs["insample"] = np.random.default_rng(6).normal(size=(4, 7))
    loss = mlo.get(name, reduction=reduction, **options)
    extras = {"weight": np.ones(4), "where": np.ones(4, dtype=bool)}
    owned = list(inputs.values()) + list(extras.values())
    for kwargs in ({}, extras):
        value, grads = loss.value_and_grad(**inputs, **kwargs)
        shape = np.shape(value)
        ct = np.ones(shape)
        results = [value, *grads.values(), *loss.vjp(ct, **inputs, **kwargs).values()]
        for out in results:
            for a in owned + [ct]:
                assert not np.shares_memory(out, a), name
        # writing into a returned gradient leaves the inputs alone
        for g in grads.values():
            g[...] = 7.0
        np.testing.assert_array_equal(inputs["input"], X)
        np.testing.assert_array_equal(inputs["target"], Y)


@requires("torch")
def test_torch_results_never_alias_inputs():
    import torch

    x, y = torch.tensor(X), torch.tensor(Y)
    ct = torch.ones_like(x)
    for name in ("mse", "l1", "huber"):
        loss = mlo.get(name, reduction="none")
        value, grads = loss.value_and_grad(x, y)
        outs = [value, *grads.values(), *loss.vjp(ct, x, y).values()]
        pointers = {t.untyped_storage().data_ptr() for t in (x, y, ct)}
        assert not pointers & {o.untyped_storage().data_ptr() for o in outs}


# ---------------------------------------------------------------------------
# accelerators, where the machine has one


def _cuda():
    if not installed("torch"):
        return False
    import torch

    return torch.cuda.is_available()


@pytest.mark.skipif(not _cuda(), reason="no CUDA device")
def test_torch_cuda_device_is_kept_and_configurable():
    import torch

    x, y = torch.tensor(X, device="cuda"), torch.tensor(Y, device="cuda")
    value, grads = mlo.get("mse").value_and_grad(x, y)
    assert value.device.type == "cuda" and grads["input"].device == x.device
    close(value, EXPECTED["mse"][0])
    with mlo.use_backend("torch", device="cuda:0"):
        value = mlo.get("mse")(X, Y)
        assert value.device == torch.device("cuda:0")
        value = mlo.get("mse")(x, y)  # already there: no copy through the host
        assert value.device == torch.device("cuda:0")
    with mlo.use_backend("torch", device="cuda"):  # any CUDA device: cuda:0 inputs stay where they are
        assert mlo.get("mse")(x, y).device == torch.device("cuda:0")
        assert mlo.get("mse")(torch.tensor(X), Y).device.type == "cuda"  # a CPU tensor is moved
    with pytest.raises(ValueError, match="different devices"):
        mlo.get("mse")(x, torch.tensor(Y))


@requires("torch")
def test_torch_device_matching():
    import torch

    from mithril_losses.backends import get_adapter

    adapter = get_adapter("torch")
    x = torch.zeros(3)
    assert adapter.on_device(x, "cpu") and adapter.on_device(x, torch.device("cpu"))
    assert not adapter.on_device(x, "cuda") and not adapter.on_device(x, "cuda:0")
    assert adapter.to_device(x, "cpu") is x
    # a tensor already on the configured device is used as it is, not copied through NumPy
    leaf = torch.tensor(X, requires_grad=True)
    with mlo.use_backend("torch", device="cpu"):
        value = mlo.get("mse", reduction="none")(leaf, torch.tensor(Y))
    close(value, R**2)


@requires("jax")
def test_jax_device_matching_and_traced_inputs_under_a_configured_device():
    import jax
    import jax.numpy as jnp

    from mithril_losses.backends import get_adapter

    jax.config.update("jax_enable_x64", True)
    adapter = get_adapter("jax")
    x = jax.device_put(jnp.zeros(3), jax.devices("cpu")[0])  # JAX's default device is a GPU where there is one
    assert adapter.on_device(x, "cpu") and adapter.on_device(x, "cpu:0")
    assert not adapter.on_device(x, "gpu") and not adapter.on_device(x, "cuda:0")
    with mlo.use_backend("jax", device="cpu"):
        value = jax.jit(lambda a, b: mlo.get("mse")(a, b, weight=np.ones(5)))(jnp.asarray(X), jnp.asarray(Y))
    close(value, EXPECTED["mse"][0])


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_weights_masks_and_empty_means_on_every_backend(backend, dtype):
    x, y = native(backend, X, dtype), native(backend, Y, dtype)
    w = np.array([0.5, 1.0, 2.0, 3.0])
    m = np.array([True, False, True, True])
    wm = (w * m)[:, None] * np.ones((1, 5))
    tol = TOLERANCE[dtype]
    value, grads = mlo.get("mse").value_and_grad(x, y, weight=native(backend, w, dtype), where=native(backend, m))
    close(value, np.sum(wm * R**2) / np.sum(wm), rtol=tol, atol=tol)
    close(grads["input"], 2 * wm * R / np.sum(wm), rtol=tol, atol=tol / N)
    ct = np.random.default_rng(7).normal(size=4)
    grads = mlo.get("mse", axis=1).vjp(native(backend, ct, dtype), x, y, where=native(backend, m))
    close(grads["target"], -2 * R * (ct * m)[:, None] / 5, rtol=tol, atol=tol / N)
    for kwargs in ({"where": native(backend, np.zeros(4, bool))}, {"weight": native(backend, np.zeros(4), dtype)}):
        value, grads = mlo.get("l1").value_and_grad(x, y, **kwargs)
        assert to_numpy(value) == 0.0
        assert np.all(to_numpy(grads["input"]) == 0.0) and np.all(to_numpy(grads["target"]) == 0.0)
        assert dtype_name(value) == dtype and dtype_name(grads["input"]) == dtype


def test_a_missing_framework_names_the_extra_to_install():
    import subprocess
    import sys

    code = (
        "import sys\n"
        "sys.modules['mlx'] = sys.modules['mlx.core'] = None  # as if mlx were not installed\n"
        "import numpy as np, mithril_losses as mlo\n"
        "from mithril_losses import backends\n"
        "print('mlx' in backends.installed())\n"
        "try:\n"
        "    mlo.get('mse')(np.ones(3), np.zeros(3), backend='mlx')\n"
        "except ImportError as e:\n"
        "    print(e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    first, message = out.stdout.strip().splitlines()
    assert first == "False"
    assert "'mlx' backend" in message and "pip install 'mithril-losses[mlx]'" in message


@pytest.mark.parametrize("dtype", ["int64", "float32"])
def test_value_checks_read_cpu_arrays_through_numpy_with_the_same_result(backend, dtype):
    from mithril_losses.backends import get_adapter

    a = np.array([[0, 2, 1], [1, 0, 2]], dtype=dtype)
    values = get_adapter(backend).host_values(native(backend, a))
    if backend == "array_api_strict":  # checked with its own operations
        assert values is None
    else:
        assert isinstance(values, np.ndarray) and values.dtype == a.dtype
        np.testing.assert_array_equal(values, a)
    # the message is the same whichever namespace read the values
    logits = native(backend, np.zeros((2, 3), np.float32))
    for bad, shown in ((np.array([1, 3]), "got 3"), (np.array([-2, 0]), "got -2")):
        with pytest.raises(ValueError, match=f"`target` must hold class indices in \\[0, 3\\).*; {shown}\\."):
            mlo.get("cross_entropy")(logits, native(backend, bad))


@requires("torch")
def test_value_checks_leave_tensors_without_host_values_on_the_device():
    import torch

    from mithril_losses.backends import get_adapter

    adapter = get_adapter("torch")
    assert adapter.host_values(torch.zeros(3, device="meta")) is None
    assert adapter.host_values(torch.zeros(3, dtype=torch.bfloat16)) is None  # NumPy has no bfloat16
    with pytest.raises(ValueError, match="in \\[0, 1\\]; got a value of 2.0"):
        mlo.get("binary_cross_entropy")(torch.full((2,), 0.5, dtype=torch.bfloat16),
                                        torch.tensor([1.0, 2.0], dtype=torch.bfloat16))


@requires("jax")
def test_value_checks_are_skipped_for_jax_tracers_and_run_on_concrete_arrays():
    import jax
    import jax.numpy as jnp

    from mithril_losses.backends import get_adapter

    seen = []
    jax.jit(lambda x: seen.append(get_adapter("jax").host_values(x)) or x)(jnp.zeros(3))
    assert seen == [None]
    with pytest.raises(ValueError, match="got 5"):
        mlo.get("cross_entropy")(jnp.zeros((2, 3)), jnp.asarray([0, 5]))


@requires("jax")
def test_jax_arrays_left_on_their_device_are_checked_by_one_compiled_call(monkeypatch):
    """A JAX array too large to copy from a GPU is checked with one jitted predicate (forced here on the CPU)."""
    import jax.numpy as jnp

    from mithril_losses import _validation
    from mithril_losses.backends import get_adapter

    monkeypatch.setattr(type(get_adapter("jax")), "host_values", lambda self, x: None)
    _validation._compiled_any.cache_clear()
    probabilities = jnp.asarray([[0.2, 0.8], [1.0, 0.0]])
    logits = jnp.zeros((2, 2))
    focal = mlo.get("focal")
    for _ in range(2):
        focal(logits, probabilities)
    assert _validation._compiled_any.cache_info().misses == 1  # one predicate compiled, then reused
    with pytest.raises(ValueError, match="`target` must be in \\[0, 1\\]; got a value of 1.5"):
        focal(logits, jnp.asarray([[0.2, 1.5], [1.0, 0.0]]))
    with pytest.raises(ValueError, match="class indices in \\[0, 2\\) or ignore_index=-100; got 7"):
        mlo.get("cross_entropy")(logits, jnp.asarray([7, 1]))
