"""Backend selection and its precedence (``config.py``), checked by the array type a call returns.

explicit ``backend=`` > ``use_backend()`` > ``set_backend()`` > $MITHRIL_LOSSES_BACKEND
> config file > inferred from the inputs > NumPy.
"""

from __future__ import annotations

import asyncio
import json
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import mithril_losses as mlo

from conftest import array_type, close, installed, native, requires

X = np.array([[0.5, -1.0, 2.0], [1.5, 0.0, -0.25]])
Y = np.array([[0.0, -0.5, 1.0], [1.0, 1.0, 0.75]])
EXPECTED = np.mean((X - Y) ** 2)


def run(**kwargs):
    """An mse call on NumPy inputs; returns the value (its type tells the backend)."""
    value = mlo.get("mse")(X, Y, **kwargs)
    close(value, EXPECTED, rtol=1e-6)
    return value


def library(value) -> str:
    for name in ("numpy", "torch", "jax", "mlx", "array_api_strict"):
        if installed(name) and isinstance(value, array_type(name) if name != "numpy" else (np.ndarray, np.generic)):
            return name
    raise AssertionError(f"unexpected result type {type(value)}")


def write_config(path, data):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


def xdg_config(tmp_path, data):
    return write_config(tmp_path / "xdg" / "mithril_losses" / "config.json", data)


ALL = pytest.mark.skipif(not all(installed(n) for n in ("jax", "torch", "mlx", "array_api_strict")),
                         reason="needs every backend")


@ALL
def test_precedence_layer_by_layer(tmp_path, monkeypatch):
    xdg_config(tmp_path, {"backend": "array_api_strict"})
    monkeypatch.setenv("MITHRIL_LOSSES_BACKEND", "mlx")
    mlo.set_backend("jax")
    with mlo.use_backend("torch"):
        assert library(run(backend="numpy")) == "numpy"  # explicit argument
        assert library(run()) == "torch"  # use_backend()
        assert mlo.get_backend() == "torch"
    assert library(run()) == "jax"  # set_backend()
    assert mlo.get_backend() == "jax"
    mlo.set_backend(None)
    assert library(run()) == "mlx"  # environment variable
    assert mlo.get_backend() == "mlx"
    monkeypatch.delenv("MITHRIL_LOSSES_BACKEND")
    assert library(run()) == "array_api_strict"  # config file
    assert mlo.get_backend() == "array_api_strict"
    (tmp_path / "xdg" / "mithril_losses" / "config.json").unlink()
    assert mlo.get_backend() is None
    assert library(run()) == "numpy"  # NumPy input: NumPy
    import torch

    value = mlo.get("mse")(torch.tensor(X), torch.tensor(Y))  # inferred from the inputs
    assert isinstance(value, torch.Tensor)
    close(value, EXPECTED)


def test_default_is_numpy_for_numpy_lists_and_scalars():
    assert mlo.get_backend() is None
    assert isinstance(run(), np.ndarray | np.floating)
    value = mlo.get("mse", reduction="none")(X.tolist(), Y.tolist())
    assert isinstance(value, np.ndarray) and value.dtype == np.float64
    close(mlo.get("l1")(3.0, 1.0), 2.0)


@pytest.mark.parametrize("name", ["jax", "torch", "mlx", "array_api_strict"])
def test_inferred_from_the_inputs(name):
    if not installed(name):
        pytest.skip(f"{name} is not installed")
    value = mlo.get("mse")(native(name, X), native(name, Y))
    assert isinstance(value, array_type(name))
    close(value, EXPECTED)
    # NumPy and list arguments next to a tensor are converted to the tensor's library
    value = mlo.get("mse")(native(name, X), Y.tolist(), weight=np.ones(3))
    assert isinstance(value, array_type(name))
    close(value, EXPECTED)


@requires("torch")
def test_backend_aliases_and_case():
    import torch

    for alias in ("pytorch", "Torch", "TORCH"):
        assert isinstance(run(backend=alias), torch.Tensor)
    assert isinstance(run(backend="np"), np.ndarray | np.floating)
    mlo.set_backend("pytorch")
    assert mlo.get_backend() == "torch"


@requires("torch")
def test_use_backend_nests_and_restores_on_error():
    import torch

    with mlo.use_backend("torch"):
        with mlo.use_backend("numpy"):
            assert mlo.get_backend() == "numpy"
        assert mlo.get_backend() == "torch"
        with pytest.raises(RuntimeError):
            with mlo.use_backend("numpy"):
                raise RuntimeError
        assert isinstance(run(), torch.Tensor)
    assert mlo.get_backend() is None


def test_unknown_backend_names_give_key_errors_with_close_matches(monkeypatch):
    with pytest.raises(KeyError, match="Unknown backend 'torhc'. Closest: torch"):
        mlo.set_backend("torhc")
    with pytest.raises(KeyError, match="Closest: jax"):
        with mlo.use_backend("jaxx"):
            pass
    with pytest.raises(KeyError, match="Closest: numpy"):
        run(backend="nmupy")
    monkeypatch.setenv("MITHRIL_LOSSES_BACKEND", "mxl")
    for call in (run, mlo.get_backend):
        with pytest.raises(KeyError, match=r"Closest: mlx.*\$MITHRIL_LOSSES_BACKEND"):
            call()


# ---------------------------------------------------------------------------
# the config file


@requires("torch")
def test_config_file_at_xdg_and_at_env_path(tmp_path, monkeypatch):
    import torch

    xdg_config(tmp_path, {"backend": "torch", "device": "cpu"})
    value = run()
    assert isinstance(value, torch.Tensor) and value.device.type == "cpu"
    other = write_config(tmp_path / "elsewhere.json", {"backend": "numpy"})
    monkeypatch.setenv("MITHRIL_LOSSES_CONFIG", str(other))  # the explicit path wins over XDG
    assert mlo.get_backend() == "numpy"
    assert isinstance(run(), np.ndarray | np.floating)


def test_config_file_is_read_never_written(tmp_path):
    run()
    mlo.set_backend("numpy")
    run()
    assert not (tmp_path / "xdg").exists()


def test_config_file_without_backend_infers(tmp_path):
    xdg_config(tmp_path, {"device": "cpu"})
    assert mlo.get_backend() is None
    assert isinstance(run(), np.ndarray | np.floating)


@pytest.mark.parametrize("content, problem", [
    ("{not json", "not readable as JSON"),
    ('["numpy"]', "expected a JSON object"),
    ({"backend": "numpy", "colour": "blue"}, "unknown keys"),
    ({"backend": "tensorflow"}, "Unknown backend 'tensorflow'"),
    ({"backend": 3}, "`backend` must be a string"),
    ({"device": ["cpu"]}, "`device` must be a string"),
])
@pytest.mark.parametrize("where", ["xdg", "env"])
def test_malformed_config_file_is_a_value_error_naming_the_file(tmp_path, monkeypatch, content, problem, where):
    if where == "xdg":
        path = xdg_config(tmp_path, content)
    else:
        path = write_config(tmp_path / "my config.json", content)
        monkeypatch.setenv("MITHRIL_LOSSES_CONFIG", str(path))
    for call in (run, mlo.get_backend):
        with pytest.raises(ValueError) as err:
            call()
        assert str(path) in str(err.value) and problem in str(err.value)
    # higher layers do not read the file at all
    assert isinstance(run(backend="numpy"), np.ndarray | np.floating)
    mlo.set_backend("numpy")
    assert mlo.get_backend() == "numpy"


@requires("torch")
def test_configured_device(tmp_path):
    import torch

    with mlo.use_backend("torch", device="cpu"):
        value = run()
        assert isinstance(value, torch.Tensor) and value.device == torch.device("cpu")
    with pytest.raises(ValueError, match="'torch' backend sees no device 'tpu:7'"):
        with mlo.use_backend("torch", device="tpu:7"):
            run()
    mlo.set_backend("torch", device="tpu:7")
    with pytest.raises(ValueError, match="sees no device 'tpu:7'"):
        run()
    assert isinstance(run(backend="torch"), torch.Tensor)  # an explicit backend= brings its own (default) device


# ---------------------------------------------------------------------------
# isolation across threads and asyncio tasks


def _all_installed(*names):
    return pytest.mark.skipif(not all(installed(n) for n in names), reason=f"needs {names}")


@_all_installed("torch", "array_api_strict")
def test_use_backend_is_isolated_between_threads():
    names = ["numpy", "torch", "array_api_strict", "numpy", "torch", "array_api_strict"]
    barrier = threading.Barrier(len(names))

    def work(name):
        try:
            with mlo.use_backend(name):
                barrier.wait(timeout=30)  # every thread is inside its own block now
                got = [library(run()) for _ in range(3)]
                barrier.wait(timeout=30)
        except BaseException:
            barrier.abort()  # fail fast instead of waiting out the others
            raise
        return got, mlo.get_backend()

    with mlo.use_backend("torch"):  # the main thread's context does not leak into the workers
        with ThreadPoolExecutor(len(names)) as pool:
            results = list(pool.map(work, names))
        assert mlo.get_backend() == "torch"
    for name, (got, after) in zip(names, results):
        assert got == [name] * 3
        assert after is None


@_all_installed("torch")
def test_set_backend_is_process_wide():
    import torch

    mlo.set_backend("torch")
    with ThreadPoolExecutor(2) as pool:
        values = list(pool.map(lambda _: run(), range(2)))
    assert all(isinstance(v, torch.Tensor) for v in values)


@_all_installed("torch", "array_api_strict")
def test_use_backend_is_isolated_between_asyncio_tasks():
    async def task(name, delay):
        with mlo.use_backend(name):
            await asyncio.sleep(delay)
            first = library(run())
            await asyncio.sleep(0)
            return first, library(run())

    async def main():
        with mlo.use_backend("numpy"):
            results = await asyncio.gather(task("torch", 0.01), task("array_api_strict", 0), task("numpy", 0.005))
            return results, mlo.get_backend()

    results, outer = asyncio.run(main())
    assert results == [("torch", "torch"), ("array_api_strict", "array_api_strict"), ("numpy", "numpy")]
    assert outer == "numpy"
    assert mlo.get_backend() is None


@requires("torch")
def test_environment_device(monkeypatch):
    import torch

    monkeypatch.setenv("MITHRIL_LOSSES_BACKEND", "torch")
    monkeypatch.setenv("MITHRIL_LOSSES_DEVICE", "cpu")
    value = run()
    assert isinstance(value, torch.Tensor) and value.device.type == "cpu"
    monkeypatch.setenv("MITHRIL_LOSSES_DEVICE", "tpu:3")
    with pytest.raises(ValueError, match="'torch' backend sees no device 'tpu:3'"):
        run()
    with mlo.use_backend("numpy"):  # a higher layer replaces the environment's backend and device
        assert isinstance(run(), np.ndarray | np.floating)
