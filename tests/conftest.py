"""Shared fixtures of the engine tests.

``backend`` runs a test once per installed array library (skipped where the
library is not installed); native arrays are built and read back with each
library's own calls, never through the adapters under test. Every test starts
from a clean configuration: no backend environment variables, an empty config
directory, no process-wide backend, and the registry as the built-ins left it.
"""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

import mithril_losses as mlo

BACKENDS = ("numpy", "jax", "torch", "mlx", "array_api_strict")
_MODULES = {"numpy": "numpy", "jax": "jax", "torch": "torch", "mlx": "mlx", "array_api_strict": "array_api_strict"}


def installed(name: str) -> bool:
    return importlib.util.find_spec(_MODULES[name]) is not None


def _enable_jax_x64():
    import jax

    jax.config.update("jax_enable_x64", True)  # float64 tests; the conformance run does the same


def requires(name: str):
    """Skip marker for a test that needs backend `name`."""
    return pytest.mark.skipif(not installed(name), reason=f"{name} is not installed")


@pytest.fixture(params=("torch", "jax", "mlx"))
def framework(request):
    """A backend with its own autodiff and compiler (skipped where not installed)."""
    if not installed(request.param):
        pytest.skip(f"{request.param} is not installed")
    return request.param


@pytest.fixture(params=BACKENDS)
def backend(request):
    name = request.param
    if not installed(name):
        pytest.skip(f"{name} is not installed")
    if name == "jax":
        _enable_jax_x64()
    return name


# ---------------------------------------------------------------------------
# native arrays, independently of the adapters


def native(name: str, x, dtype: str | None = None):
    """`x` (NumPy/list) as an array of library `name`, in `dtype` (a dtype name)."""
    x = np.asarray(x)
    if name == "numpy":
        return x.astype(dtype) if dtype else x.copy()
    if name == "jax":
        import jax.numpy as jnp

        _enable_jax_x64()
        return jnp.asarray(x, dtype=getattr(jnp, dtype) if dtype else None)
    if name == "torch":
        import torch

        return torch.tensor(x, dtype=getattr(torch, dtype) if dtype else None)
    if name == "mlx":
        import mlx.core as mx

        if dtype is None and x.dtype == np.float64:
            dtype = "float64"
        return mx.array(x, dtype=getattr(mx, dtype) if dtype else None)
    if name == "array_api_strict":
        import array_api_strict as xps

        return xps.asarray(x, dtype=getattr(xps, dtype) if dtype else None)
    raise ValueError(name)


def to_numpy(x) -> np.ndarray:
    """A float64 (or bool) NumPy copy of an array of any library."""
    module = type(x).__module__.partition(".")[0]
    if module == "torch":
        x = x.detach().cpu()
        out = x.numpy() if x.dtype not in _torch_low() else x.float().numpy()
    elif module == "mlx":
        import mlx.core as mx

        out = np.array(x.astype(mx.float32) if x.dtype == mx.bfloat16 else x)
    elif module == "array_api_strict":
        out = np.from_dlpack(x)
    else:
        out = np.asarray(x)
    out = np.array(out, copy=True)
    return out if out.dtype == bool else out.astype(np.float64)


def _torch_low():
    import torch

    return (torch.bfloat16,)


def array_type(name: str):
    """The array class of library `name`."""
    if name == "numpy":
        return np.ndarray
    if name == "jax":
        import jax

        return jax.Array
    if name == "torch":
        import torch

        return torch.Tensor
    if name == "mlx":
        import mlx.core as mx

        return mx.array
    if name == "array_api_strict":
        import array_api_strict as xps

        return type(xps.asarray(0.0))
    raise ValueError(name)


def dtype_name(x) -> str:
    """'float32', 'bfloat16', ... for an array of any library."""
    return str(x.dtype).rpartition(".")[2]


def close(actual, expected, rtol=1e-12, atol=1e-12):
    np.testing.assert_allclose(to_numpy(actual), np.asarray(expected, dtype=np.float64), rtol=rtol, atol=atol)


# ---------------------------------------------------------------------------
# clean state around every test


@pytest.fixture(autouse=True)
def clean_config(monkeypatch, tmp_path):
    for var in ("MITHRIL_LOSSES_BACKEND", "MITHRIL_LOSSES_CONFIG", "MITHRIL_LOSSES_DEVICE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    mlo.set_backend(None)
    yield
    mlo.set_backend(None)


@pytest.fixture
def clean_registry():
    """Registry and functional names restored after a test that registers its own losses."""
    from mithril_losses import functional, registry

    mlo.available()  # the built-ins are loaded before the snapshot
    specs, names = dict(registry._SPECS), dict(registry._NAMES)
    exported, functions = list(functional.__all__), dict(vars(functional))
    yield
    registry._SPECS.clear()
    registry._SPECS.update(specs)
    registry._NAMES.clear()
    registry._NAMES.update(names)
    functional.__all__[:] = exported
    for key in set(vars(functional)) - set(functions):
        delattr(functional, key)
    for key, value in functions.items():
        setattr(functional, key, value)
