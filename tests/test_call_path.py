"""The cached call path: what it remembers never outlives the facts it was worked out from.

- The configured backend: an environment variable, ``use_backend`` or
  ``set_backend`` changed between two calls is honoured by the second; the
  config file is looked at again when the variables that place it change and
  after ``get_backend()``, ``read_config_file()`` or ``set_backend()`` (a loss
  call with an unchanged environment makes no ``stat``); a malformed file
  keeps raising until it is fixed.
- Per-spec facts worked out at ``get()``: a loss replaced in the registry
  gives its new behaviour to losses got afterwards, and the old one keeps its own.
- The direct path (arrays already of the backend's library) gives what the
  converting path gives, with the same errors, and gradients that are fresh,
  writable arrays (also from ``value_and_grad``'s constant cotangent).
- Its cost: cross_entropy's call with index targets launches a bounded number
  of PyTorch kernels besides its target validation (on a GPU each is a launch).

Values are checked against formulas written here in NumPy.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

import mithril_losses as mlo
from mithril_losses import LossSpec, config

from conftest import close, installed, requires

X = np.array([[0.5, -1.0, 2.0], [1.5, 0.0, -0.25]])
Y = np.array([[0.0, -0.5, 1.0], [1.0, 1.0, 0.75]])
MSE = np.mean((X - Y) ** 2)
MSE_GRAD = 2.0 * (X - Y) / X.size


def result_library(value) -> str:
    return type(value).__module__.partition(".")[0]


def mse_library(**kwargs) -> str:
    value = mlo.get("mse")(X, Y, **kwargs)
    close(value, MSE)
    return result_library(value)


def write_config(tmp_path, data) -> None:
    path = tmp_path / "xdg" / "mithril_losses" / "config.json"  # the conftest's $XDG_CONFIG_HOME
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(data if isinstance(data, str) else json.dumps(data), encoding="utf-8")


# ------------------------------------------------------------------------------------------- the configured backend


@requires("torch")
def test_environment_variable_set_and_unset_between_two_calls(monkeypatch):
    assert mse_library() == "numpy"
    monkeypatch.setenv("MITHRIL_LOSSES_BACKEND", "torch")
    assert mse_library() == "torch"
    monkeypatch.setenv("MITHRIL_LOSSES_BACKEND", "numpy")
    assert mse_library() == "numpy"
    monkeypatch.delenv("MITHRIL_LOSSES_BACKEND")
    assert mse_library() == "numpy"


@requires("torch")
def test_use_backend_and_set_backend_between_two_calls():
    assert mse_library() == "numpy"
    with mlo.use_backend("torch"):
        assert mse_library() == "torch"
    assert mse_library() == "numpy"
    mlo.set_backend("torch")
    assert mse_library() == "torch"
    mlo.set_backend(None)
    assert mse_library() == "numpy"


@requires("torch")
def test_config_file_placed_by_a_changed_variable_is_read_by_the_next_call(tmp_path, monkeypatch):
    assert mse_library() == "numpy"
    explicit = tmp_path / "explicit.json"
    explicit.write_text(json.dumps({"backend": "torch"}), encoding="utf-8")
    monkeypatch.setenv("MITHRIL_LOSSES_CONFIG", str(explicit))
    assert mse_library() == "torch"
    monkeypatch.delenv("MITHRIL_LOSSES_CONFIG")
    assert mse_library() == "numpy"
    other = tmp_path / "other"
    (other / "mithril_losses").mkdir(parents=True)
    (other / "mithril_losses" / "config.json").write_text(json.dumps({"backend": "torch"}), encoding="utf-8")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(other))
    assert mse_library() == "torch"


@requires("torch")
@pytest.mark.parametrize("look", ["get_backend", "read_config_file", "set_backend"])
def test_config_file_edited_in_place_is_seen_after_looking_at_it_again(tmp_path, look):
    looks = {"get_backend": mlo.get_backend, "read_config_file": config.read_config_file,
             "set_backend": lambda: mlo.set_backend(None)}
    assert mse_library() == "numpy"
    write_config(tmp_path, {"backend": "torch"})
    looks[look]()
    assert mse_library() == "torch"
    write_config(tmp_path, {"backend": "numpy", "device": "cpu"})
    looks[look]()
    assert mse_library() == "numpy"
    (tmp_path / "xdg" / "mithril_losses" / "config.json").unlink()
    looks[look]()
    assert mse_library() == "numpy"
    assert mlo.get_backend() is None


def test_a_loss_call_with_an_unchanged_environment_makes_no_stat(tmp_path, monkeypatch):
    write_config(tmp_path, {"device": "cpu"})
    mse_library()  # the first call looks at the file
    stats = []
    original = os.stat
    monkeypatch.setattr(os, "stat", lambda path, *a, **k: (stats.append(str(path)), original(path, *a, **k))[1])
    for _ in range(3):
        mse_library()
        mlo.get("mse").value_and_grad(X, Y)
    assert [s for s in stats if "mithril_losses" in s] == []
    mlo.get_backend()
    assert [s for s in stats if "mithril_losses" in s] == [str(config.config_path())]


def test_a_malformed_config_file_raises_on_every_call_until_fixed(tmp_path):
    write_config(tmp_path, "{not json")
    for _ in range(2):
        with pytest.raises(ValueError, match="not readable as JSON"):
            mse_library()
    write_config(tmp_path, {"backend": "numpy"})
    assert mse_library() == "numpy"


# ---------------------------------------------------------------------------------------------- per-spec facts


def _power_spec(name, *, label_target: bool, power: float):
    """|x - y|^power; with ``label_target`` its target may be an integer array."""
    def value(xp, input, target):
        return xp.abs(input - xp.astype(target, input.dtype)) ** power

    def vjp(xp, cotangent, input, target):
        r = input - xp.astype(target, input.dtype)
        return {"input": cotangent * power * xp.sign(r) * xp.abs(r) ** (power - 1)}

    return LossSpec(
        name=name, family="custom", summary="Power error.", inputs=("input", "target"), differentiable=("input",),
        value=value, vjp=vjp, formula="|x - y|^p", gradient="p sign(x - y) |x - y|^(p - 1)",
        sample=lambda rng, shape, options: {"input": rng.normal(size=shape), "target": rng.normal(size=shape)},
        label_inputs=("target",) if label_target else ())


def test_a_replaced_spec_is_not_confused_with_the_one_before(clean_registry):
    x, labels = np.array([0.5, 2.0, -1.0]), np.array([1, 0, 0])
    mlo.register(_power_spec("power_error", label_target=True, power=2.0))
    before = mlo.get("power_error")
    close(before(x, labels), np.mean((x - labels) ** 2))
    mlo.register(_power_spec("power_error", label_target=False, power=3.0), replace=True)
    after = mlo.get("power_error")
    with pytest.raises(TypeError, match=r"`target` must be a real floating-point array; got dtype int"):
        after(x, labels)
    close(after(x, labels.astype(float)), np.mean(np.abs(x - labels) ** 3))
    close(before(x, labels), np.mean((x - labels) ** 2))  # the loss got before keeps its own spec
    close(before.grad(x, labels)["input"], 2.0 * (x - labels) / x.size)
    mlo.register(_power_spec("other_power_error", label_target=True, power=4.0))
    close(mlo.get("other_power_error")(x, labels), np.mean((x - labels) ** 4))
    close(mlo.get("power_error")(x, labels.astype(float)), np.mean(np.abs(x - labels) ** 3))


# ------------------------------------------------------------------------------ the direct path and the general one


CASES = [
    ("mse", {}, lambda rng: (rng.normal(size=(4, 5)), rng.normal(size=(4, 5)))),
    ("cross_entropy", {"label_smoothing": 0.1}, lambda rng: (rng.normal(size=(4, 5)), rng.integers(0, 5, 4))),
    ("binary_cross_entropy_with_logits", {}, lambda rng: (rng.normal(size=(4, 5)), rng.integers(0, 2, (4, 5)) * 1.0)),
]


def _weight(name, x):
    """cross_entropy's own class weights, or the engine's per-element weights."""
    return np.linspace(0.5, 2.0, x.shape[1]) if name == "cross_entropy" else np.linspace(0.5, 2.0, x.size).reshape(x.shape)


def _where(name, x):
    return np.arange(x.shape[0]) % 2 == 0 if name == "cross_entropy" else np.arange(x.size).reshape(x.shape) % 3 != 1


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("name, options, draw", CASES, ids=[c[0] for c in CASES])
def test_direct_numpy_inputs_give_what_converted_lists_give(name, options, draw, reduction):
    rng = np.random.default_rng(3)
    x, y = draw(rng)
    loss = mlo.get(name, reduction=reduction, **options)
    for extra in ({}, {"weight": _weight(name, x)}, {"where": _where(name, x)}):
        direct_value, direct_grads = loss.value_and_grad(x, y, **extra)
        listed = {k: v.tolist() for k, v in extra.items() if k == "weight"}
        value, grads = loss.value_and_grad(x.tolist(), y.tolist(), **{**extra, **listed})
        close(direct_value, value, rtol=1e-15, atol=0)
        close(direct_value, loss(x, y, **extra), rtol=1e-15, atol=0)
        cotangent = np.ones(np.shape(direct_value))
        for key, g in direct_grads.items():
            close(g, grads[key], rtol=1e-15, atol=0)
            close(g, loss.vjp(cotangent, x, y, **extra)[key], rtol=1e-15, atol=0)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("name, options, draw", CASES, ids=[c[0] for c in CASES])
def test_gradients_are_fresh_writable_arrays(name, options, draw, reduction):
    x, y = draw(np.random.default_rng(4))
    before = (x.copy(), y.copy())
    for extra in ({}, {"weight": _weight(name, x)}):
        grads = mlo.get(name, reduction=reduction, **options).value_and_grad(x, y, **extra)[1]
        for g in grads.values():
            assert g.flags.writeable
            assert not np.shares_memory(g, x) and not np.shares_memory(g, y)
            g[...] = 7.0
    np.testing.assert_array_equal(x, before[0])
    np.testing.assert_array_equal(y, before[1])


@requires("torch")
@pytest.mark.parametrize("name, options, draw", CASES, ids=[c[0] for c in CASES])
def test_direct_torch_tensors_give_what_converted_numpy_inputs_give(name, options, draw):
    import torch

    x, y = draw(np.random.default_rng(5))
    loss = mlo.get(name, **options)
    direct_value, direct_grads = loss.value_and_grad(torch.tensor(x), torch.tensor(y))
    value, grads = loss.value_and_grad(x, y, backend="torch")
    assert isinstance(direct_value, torch.Tensor) and isinstance(direct_grads["input"], torch.Tensor)
    close(direct_value, value, rtol=1e-15, atol=0)
    close(loss(torch.tensor(x), torch.tensor(y)), value, rtol=1e-15, atol=0)
    for key, g in direct_grads.items():
        close(g, grads[key], rtol=1e-15, atol=0)
        close(g, loss.grad(x, y)[key], rtol=1e-12)


def test_direct_path_errors_are_the_general_paths():
    loss = mlo.get("mse")
    with pytest.raises(TypeError, match=r"^`input` must be a real floating-point array; got dtype int64\.$"):
        loss(np.array([1, 2]), np.array([1.0, 2.0]))
    with pytest.raises(ValueError, match=r"^`input` and `target` must have the same shape; got \(3,\) and \(3, 1\)\.$"):
        loss(np.zeros(3), np.zeros((3, 1)))
    with pytest.raises(TypeError, match=r"^`where` must be a boolean mask; got dtype float64\.$"):
        loss(np.zeros(3), np.zeros(3), where=np.ones(3))
    if installed("torch"):
        import torch

        with pytest.raises(TypeError, match=r"`target` is a torch array but the configured backend is 'numpy'"):
            loss(np.zeros(3), torch.zeros(3), backend="numpy")
        if installed("array_api_strict"):
            import array_api_strict as xps

            with pytest.raises(TypeError, match=r"Inputs come from two array libraries: `input` is a torch array"):
                loss(torch.zeros(3), xps.zeros(3))


# ------------------------------------------------------------------------------------------- the cost of a call


VIEWS_AND_HOST = {"unsqueeze", "squeeze", "view", "expand", "detach", "alias", "scalar_tensor", "_local_scalar_dense"}


def _kernels(fn):
    """The PyTorch operations ``fn`` runs that launch a kernel (not views, nor host-side scalars), by name."""
    from collections import Counter

    from torch.utils._python_dispatch import TorchDispatchMode

    class Count(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.ops = Counter()

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            name = str(func.overloadpacket).removeprefix("aten.")
            if name not in VIEWS_AND_HOST:
                self.ops[name] += 1
            return func(*args, **(kwargs or {}))

    with Count() as count:
        fn()
    return count.ops


@requires("torch")
@pytest.mark.parametrize("options, most", [({}, 20), ({"label_smoothing": 0.1}, 44)])
def test_cross_entropy_with_index_targets_launches_few_kernels(options, most):
    # default options, besides validation: log_softmax, gather, exp; the value (ne, where x2, neg); the mean's count
    # (ne, cast, sum, eq, where), sum and two divisions; the gradient (where, mul_, all (on a GPU: ~ and masked_fill_),
    # neg, scatter_add_). Before: 39 (smoothed: 67), with a negative-index-safe gather, a zeros_like per where,
    # reciprocal and mul for 1/N, products by a class weight of 1
    import array_api_compat
    import torch

    loss = mlo.get("cross_entropy", **options)
    x, y = torch.randn(4, 10, dtype=torch.float64), torch.tensor([1, 9, 3, 0])  # none ignored (no masked write)
    loss.value_and_grad(x, y)
    xp = array_api_compat.array_namespace(x)
    validation = _kernels(lambda: loss.spec.validate(xp, {"input": x, "target": y}, loss.options, True))
    kernels = _kernels(lambda: loss.value_and_grad(x, y)) - validation
    assert sum(kernels.values()) <= most, dict(kernels)
    assert not {"remainder", "zeros_like", "reciprocal"} & set(kernels), dict(kernels)
