"""Concurrency: the backend is chosen per thread and per asyncio task, and the registry is safe to share.

- Threads (a pool of 8, each making many calls) and asyncio tasks, each inside
  its own ``mlo.use_backend(...)``, compute on their own backend (the array
  type of every result proves it) with the precedence of DESIGN.md §2 inside
  them: an explicit ``backend=`` over ``use_backend`` over the main thread's
  ``set_backend``; a pool's reused worker threads never inherit a finished
  job's backend.
- The first use of the registry, of the functional names and of the
  backends from many threads at once, in a fresh interpreter, is safe and
  every thread sees the same registry.
- ``register`` from many threads at once (different user losses, or one name
  claimed by all) and reading the registry while others register are safe.

Values are checked against formulas written here in NumPy.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import mithril_losses as mlo
from mithril_losses import LossSpec

from conftest import BACKENDS, array_type, installed, to_numpy

INSTALLED = [b for b in BACKENDS if installed(b)]
X = np.array([[0.5, -1.0, 2.0], [1.5, 0.0, -0.25]])
Y = np.array([[0.0, -0.5, 1.0], [1.0, 1.0, 0.75]])
MSE = np.mean((X - Y) ** 2)
MSE_GRAD = 2.0 * (X - Y) / X.size
HUBER = np.mean(np.where(np.abs(X - Y) <= 1.0, 0.5 * (X - Y) ** 2, np.abs(X - Y) - 0.5))


def library(x) -> str:
    """The installed array library whose type ``x`` is (NumPy scalars count as NumPy)."""
    for name in INSTALLED:
        kind = (np.ndarray, np.generic) if name == "numpy" else array_type(name)
        if isinstance(x, kind):
            return name
    raise AssertionError(f"unexpected result type {type(x)}")


def calls(expected_backend: str, rounds: int) -> list[str]:
    """``rounds`` rounds of mse value_and_grad and huber values on NumPy inputs; each result's library."""
    seen = []
    for _ in range(rounds):
        value, grads = mlo.get("mse").value_and_grad(X, Y)
        np.testing.assert_allclose(to_numpy(value), MSE, rtol=1e-6)
        np.testing.assert_allclose(to_numpy(grads["input"]), MSE_GRAD, rtol=1e-6)
        huber = mlo.huber_loss(X, Y)
        np.testing.assert_allclose(to_numpy(huber), HUBER, rtol=1e-6)
        seen += [library(value), library(grads["input"]), library(huber)]
    assert seen == [expected_backend] * len(seen)
    return seen


def in_fresh_interpreter(code: str) -> str:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


# ---------------------------------------------------------------------------------- threads and asyncio tasks


def test_threads_each_compute_on_their_own_backend():
    names = [INSTALLED[i % len(INSTALLED)] for i in range(8)]
    barrier = threading.Barrier(len(names))

    def work(name):
        try:
            with mlo.use_backend(name):
                barrier.wait(timeout=60)  # every thread is inside its own block now
                calls(name, rounds=12)
                explicit = mlo.get("mse")(X, Y, backend="numpy")  # an explicit backend= beats use_backend
                barrier.wait(timeout=60)
        except BaseException:
            barrier.abort()  # fail fast instead of waiting out the others
            raise
        return mlo.get_backend(), library(explicit)

    with ThreadPoolExecutor(len(names)) as pool:
        results = list(pool.map(work, names))
    assert results == [(None, "numpy")] * len(names)  # each block was left; nothing else was set


@pytest.mark.skipif(not installed("torch"), reason="torch is not installed")
def test_threads_without_use_backend_follow_the_main_threads_set_backend():
    mlo.set_backend("torch")
    names = [None, "numpy", None, "numpy", None, "numpy", None, "numpy"]
    barrier = threading.Barrier(len(names))

    def work(name):
        try:
            barrier.wait(timeout=60)
            if name is None:
                return calls("torch", rounds=8)[0]
            with mlo.use_backend(name):
                return calls(name, rounds=8)[0]
        except BaseException:
            barrier.abort()
            raise

    with ThreadPoolExecutor(len(names)) as pool:
        got = list(pool.map(work, names))
    assert got == ["torch" if n is None else n for n in names]


@pytest.mark.skipif(not installed("torch"), reason="torch is not installed")
def test_reused_pool_threads_do_not_inherit_a_finished_jobs_backend():
    def job(i):
        if i % 2 == 0:
            try:
                with mlo.use_backend("torch"):
                    calls("torch", rounds=1)
                    if i % 4 == 0:
                        raise KeyError("left the block by an error")
            except KeyError:
                pass
            return "torch"
        return calls("numpy", rounds=1)[0]  # nothing configured: NumPy inputs stay NumPy

    with ThreadPoolExecutor(2) as pool:  # two workers take turns with the 40 jobs
        got = list(pool.map(job, range(40)))
    assert got == ["torch", "numpy"] * 20
    assert mlo.get_backend() is None


def test_asyncio_tasks_each_compute_on_their_own_backend():
    names = [INSTALLED[i % len(INSTALLED)] for i in range(10)]

    async def task(name):
        with mlo.use_backend(name):
            seen = []
            for _ in range(6):
                await asyncio.sleep(0)  # the other tasks run in between, inside their own blocks
                seen += calls(name, rounds=1)
            return seen[0], mlo.get_backend()

    async def main():
        results = await asyncio.gather(*(task(n) for n in names))
        return results, mlo.get_backend()

    results, outside = asyncio.run(main())
    assert results == [(n, n) for n in names]
    assert outside is None


@pytest.mark.skipif(not installed("torch"), reason="torch is not installed")
def test_asyncio_tasks_inherit_the_backend_they_were_created_under_and_carry_it_to_threads():
    """A task copies the context it is created in; ``asyncio.to_thread`` carries the task's context along."""
    mlo.set_backend("numpy")

    async def plain():
        await asyncio.sleep(0)
        return calls(mlo.get_backend(), rounds=1)[0]

    async def main():
        with mlo.use_backend("torch"):
            inherited = asyncio.create_task(plain())
            in_thread = await asyncio.to_thread(lambda: calls("torch", rounds=1)[0])
        outside = asyncio.create_task(plain())
        return await inherited, in_thread, await outside

    assert asyncio.run(main()) == ("torch", "torch", "numpy")


# ----------------------------------------------------------------------------------- first use, fresh interpreter

_FIRST_USE = """
import json, threading
import numpy as np
import mithril_losses as mlo
x, y = np.array([0.5, -1.0, 2.0]), np.array([0.0, -0.5, 0.5])
jobs = [
    lambda: mlo.available(),
    lambda: mlo.families(),
    lambda: mlo.get("l2").name,
    lambda: mlo.spec("mae").name,
    lambda: float(mlo.mse_loss(x, y)),
    lambda: mlo.huber_loss_gradient(x, y).tolist(),
    lambda: float(mlo.from_config({"name": "smooth_l1", "beta": 0.8})(x, y)),
    lambda: "huber_loss_gradient" in dir(mlo),
] * 2
results, barrier = [None] * len(jobs), threading.Barrier(len(jobs))
def work(i):
    barrier.wait()
    try:
        results[i] = jobs[i]()
    except Exception as err:
        results[i] = "error: " + repr(err)
threads = [threading.Thread(target=work, args=(i,)) for i in range(len(jobs))]
[t.start() for t in threads]; [t.join() for t in threads]
print(json.dumps(results))
"""


@pytest.mark.parametrize("attempt", range(3))
def test_first_use_of_the_registry_from_many_threads_in_a_fresh_interpreter(attempt):
    results = json.loads(in_fresh_interpreter(_FIRST_USE))
    r = np.array([0.5, -0.5, 1.5])
    smooth = np.where(np.abs(r) < 0.8, 0.5 * r ** 2 / 0.8, np.abs(r) - 0.4)
    expected = [mlo.available(), mlo.families(), "mse", "l1", np.mean(r ** 2), (np.clip(r, -1, 1) / 3).tolist(),
                np.mean(smooth), True] * 2
    assert [x for x in results if isinstance(x, str) and x.startswith("error")] == []
    for got, want in zip(results, expected):
        if isinstance(want, float):
            assert got == pytest.approx(want, rel=1e-12)
        elif isinstance(want, list) and want and isinstance(want[0], float):
            np.testing.assert_allclose(got, want, rtol=1e-12)
        else:
            assert got == want


_FIRST_BACKENDS = """
import json, sys, threading
import numpy as np
import mithril_losses as mlo
names = json.loads(sys.argv[1]) * 2
x, y = np.array([0.5, -1.0, 2.0]), np.array([0.0, -0.5, 1.0])
results, barrier = [None] * len(names), threading.Barrier(len(names))
def work(i):
    barrier.wait()
    try:
        with mlo.use_backend(names[i]):
            value, grads = mlo.get("mse").value_and_grad(x, y)
        results[i] = [type(value).__module__.partition(".")[0], type(grads["input"]).__module__.partition(".")[0],
                      float(value)]
    except Exception as err:
        results[i] = "error: " + repr(err)
threads = [threading.Thread(target=work, args=(i,)) for i in range(len(names))]
[t.start() for t in threads]; [t.join() for t in threads]
print(json.dumps(results))
"""
_MODULES = {"numpy": "numpy", "torch": "torch", "jax": "jaxlib", "mlx": "mlx", "array_api_strict": "array_api_strict"}


def test_first_use_of_every_backend_from_threads_at_once_in_a_fresh_interpreter():
    """Each backend's adapter (and its framework's import) is first reached by two threads at the same moment."""
    out = subprocess.run([sys.executable, "-c", _FIRST_BACKENDS, json.dumps(INSTALLED)], capture_output=True,
                         text=True, timeout=180)
    assert out.returncode == 0, out.stderr
    results = json.loads(out.stdout.strip().splitlines()[-1])
    expected_value = float(np.mean((np.array([0.5, -1.0, 2.0]) - np.array([0.0, -0.5, 1.0])) ** 2))
    for name, got in zip(INSTALLED * 2, results):
        assert not isinstance(got, str), f"{name}: {got}"
        assert got[:2] == [_MODULES[name]] * 2, (name, got)
        assert got[2] == pytest.approx(expected_value, rel=1e-6)


# ------------------------------------------------------------------------------------- registering concurrently


def _user_spec(name, factor, aliases=()):
    """factor * (x - y)^2: the factor tells which registration a computation used."""
    return LossSpec(
        name=name, family="custom", summary="Scaled squared error.", inputs=("input", "target"),
        differentiable=("input",), value=lambda xp, input, target: factor * (input - target) ** 2,
        vjp=lambda xp, cotangent, input, target: {"input": 2.0 * factor * cotangent * (input - target)},
        formula=rf"{factor}(x - y)^2", gradient=rf"{2 * factor}(x - y)",
        sample=lambda rng, shape, options: {"input": rng.normal(size=shape), "target": rng.normal(size=shape)},
        aliases=aliases)


def test_concurrent_registration_of_different_losses(clean_registry):
    n = 16
    barrier = threading.Barrier(n)

    def work(i):
        try:
            barrier.wait(timeout=60)
            mlo.register(_user_spec(f"user_{i}", float(i + 1), aliases=(f"user_alias_{i}",)))
            return float(mlo.get(f"user_alias_{i}", reduction="sum")(X, Y))
        except BaseException:
            barrier.abort()
            raise

    with ThreadPoolExecutor(n) as pool:
        values = list(pool.map(work, range(n)))
    squared = np.sum((X - Y) ** 2)
    np.testing.assert_allclose(values, [(i + 1) * squared for i in range(n)], rtol=1e-12)
    assert mlo.available(family="custom") == sorted(f"user_{i}" for i in range(n))
    for i in range(n):  # every functional pair exists and computes its own loss
        np.testing.assert_allclose(getattr(mlo, f"user_{i}_loss")(X, Y), (i + 1) * MSE, rtol=1e-12)
        np.testing.assert_allclose(getattr(mlo, f"user_{i}_loss_gradient")(X, Y), (i + 1) * MSE_GRAD, rtol=1e-12)


def test_concurrent_registration_of_one_name_admits_exactly_one(clean_registry):
    n = 8
    barrier = threading.Barrier(n)

    def work(i):
        barrier.wait(timeout=60)
        try:
            mlo.register(_user_spec("contested", float(i + 1)))
        except ValueError as err:
            assert "'contested' is already registered" in str(err)
            return None
        return i

    with ThreadPoolExecutor(n) as pool:
        winners = [i for i in pool.map(work, range(n)) if i is not None]
    assert len(winners) == 1
    np.testing.assert_allclose(mlo.get("contested", reduction="sum")(X, Y),
                               (winners[0] + 1) * np.sum((X - Y) ** 2), rtol=1e-12)


def test_reading_the_registry_while_others_register(clean_registry):
    builtins = mlo.available()
    families = mlo.families()
    done, errors = threading.Event(), []

    def reader():
        while not done.is_set():
            try:
                names = mlo.available()
                assert names == sorted(names) and set(builtins) <= set(names)
                assert set(families) <= set(mlo.families())
                assert mlo.get("mse").name == "mse"
            except Exception as err:  # collected: a thread's exception would be lost
                errors.append(repr(err))
                return

    def writer():
        try:
            for i in range(400):
                mlo.register(_user_spec(f"streamed_{i}", 1.0))
        finally:
            done.set()

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible: races show up within the run
    try:
        threads = [threading.Thread(target=reader) for _ in range(4)] + [threading.Thread(target=writer)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
    finally:
        sys.setswitchinterval(interval)
    assert errors == []
    assert len(mlo.available(family="custom")) == 400
