"""Devices, the pairs (ours vs theirs) per backend and mode, interleaved timing and peak memory."""

from __future__ import annotations

import contextlib
import gc
import importlib.util
import shutil
import signal
import statistics
import time
import tracemalloc
from dataclasses import dataclass, field

import numpy as np

import mithril_losses as mlo

from .cases import PER_CALL_ELEMENTS, QUICK_TORCH_COMPILE, Case, shape_elements

BACKENDS = ("numpy", "torch", "jax", "mlx")
MODES = ("eager", "torch.compile", "jit", "mx.compile", "compiled", "per-call")


@dataclass
class Pair:
    """One comparison on one backend and device: our callable and theirs, each returning what ``sync`` waits on."""

    backend: str
    device: str
    mode: str
    ours_label: str
    theirs_label: str
    ours: object
    theirs: object
    sync: object = lambda out: None
    scope: object = contextlib.nullcontext  # entered around every call (MLX: the device's stream)
    memory: object = None  # (fn, sync) -> peak extra bytes of one call; or {"ours": ..., "theirs": ...}
    memory_method: str = ""
    ours_times: list = field(default_factory=list)
    theirs_times: list = field(default_factory=list)
    ours_peak_bytes: int | None = None
    theirs_peak_bytes: int | None = None
    error: str = ""


@dataclass
class Row:
    loss: str
    shape: tuple
    dtype: str
    backend: str
    device: str
    mode: str
    ours_label: str
    theirs_label: str
    ours_ms: float | None
    theirs_ms: float | None
    ratio: float | None
    overhead_us: float | None  # ours - theirs per call, in microseconds
    ours_peak_bytes: int | None
    theirs_peak_bytes: int | None
    memory_ratio: float | None
    memory_method: str
    reps: int
    error: str = ""
    ours_all_ms: list = field(default_factory=list)
    theirs_all_ms: list = field(default_factory=list)


def installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


# --------------------------------------------------------------------------- devices


def discover_devices(backends) -> dict:
    """Every device each backend sees: CPU always, CUDA / MPS for torch, GPUs for JAX, the GPU for MLX."""
    found = {}
    for backend in backends:
        try:
            found[backend] = _DEVICES[backend]()
        except Exception as err:  # noqa: BLE001 - a backend that cannot start is reported by the caller
            found[backend] = []
            print(f"{backend}: no devices ({type(err).__name__}: {err})")
    return found


def _torch_devices():
    import torch

    mps = getattr(torch.backends, "mps", None)
    return ["cpu"] + (["cuda"] if torch.cuda.is_available() else []) + (
        ["mps"] if mps is not None and mps.is_available() else [])


def _jax_devices():
    import jax

    platforms = []
    for platform in ("cpu", "gpu", "tpu", "METAL"):
        with contextlib.suppress(RuntimeError):
            if jax.devices(platform):
                platforms.append(platform)
    return platforms


def _mlx_devices():
    import mlx.core as mx

    return ["cpu"] + (["gpu"] if mx.is_available(mx.gpu) else [])


_DEVICES = {"numpy": lambda: ["cpu"], "torch": _torch_devices, "jax": _jax_devices, "mlx": _mlx_devices}


def torch_compile_backend() -> str:
    """inductor where it can build kernels (a C++ compiler on CPU), else aot_eager (traced, not code-generated)."""
    return "inductor" if any(shutil.which(c) for c in ("g++", "c++", "clang++")) else "aot_eager"


# --------------------------------------------------------------------------- pairs


def _compiled(loss, **options):
    """``mlo.compile(loss)`` where the package has it (the compiled mode), else None."""
    compile_ = getattr(mlo, "compile", None)
    return None if compile_ is None else compile_(loss, **options)


def _split(loss, inputs):
    names = list(inputs)
    return names, [i for i, n in enumerate(names) if n in loss.differentiable]


def _raw(case: Case, inputs, modes, backend):
    """The formula written in the backend's operators, for the per-call rows: on at most 1k elements."""
    n = shape_elements(next(iter(inputs.values())).shape)
    return case.raw[backend](n) if "per-call" in modes and backend in case.raw and n <= PER_CALL_ELEMENTS else None


def _tracemalloc_peak(fn, sync):
    """NumPy reports its data allocations to tracemalloc: the peak traced bytes of one call."""
    gc.collect()
    tracemalloc.start()
    try:
        sync(fn())
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def numpy_pairs(case: Case, loss, inputs, device, modes, ctx):
    floor = "memory floor (copy of the inputs)"
    arrays = dict(inputs)
    pairs = []
    copies = lambda: [a.copy() for a in arrays.values()]  # noqa: E731
    if "eager" in modes:
        pairs.append(Pair("numpy", device, "eager", "value_and_grad", floor,
                          lambda: loss.value_and_grad(**arrays), copies,
                          memory=_tracemalloc_peak, memory_method="tracemalloc"))
    compiled = _compiled(loss) if "compiled" in modes else None
    if compiled is not None:
        pairs.append(Pair("numpy", device, "compiled", "mlo.compile(loss).value_and_grad", floor,
                          lambda: compiled.value_and_grad(**arrays), copies,
                          memory=_tracemalloc_peak, memory_method="tracemalloc"))
    raw = _raw(case, inputs, modes, "numpy")
    if raw is not None:
        pairs.append(Pair("numpy", device, "per-call", "value_and_grad", "the formula in NumPy operators",
                          lambda: loss.value_and_grad(**arrays), lambda: raw(**arrays)))
    return pairs


def _torch_sync(torch, device):
    if device == "cuda":
        return lambda out: torch.cuda.synchronize()
    if device == "mps":
        return lambda out: torch.mps.synchronize()
    return lambda out: None


def _torch_memory(torch, device):
    """CUDA: the allocator's peak; CPU: the profiler's allocation records of one call, summed in time order."""
    if device == "cuda":
        def peak(fn, sync):
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
            sync(fn())
            return torch.cuda.max_memory_allocated() - base
        return peak, "torch.cuda.max_memory_allocated"
    if device != "cpu":
        return None, ""

    def peak(fn, sync):
        from torch.profiler import ProfilerActivity, profile

        # The profiler counts the frees of blocks allocated under an earlier profile (e.g. the .grad a previous
        # measured call left) but not of blocks allocated while none ran: one unprofiled call first.
        sync(fn())
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            sync(fn())
        records = sorted((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events()
                         if e.name() == "[memory]")
        current = top = 0
        for _, nbytes in records:
            current += nbytes
            top = max(top, current)
        return top
    return peak, "torch.profiler allocation records"


def torch_pairs(case: Case, loss, inputs, device, modes, ctx):
    import torch

    _, diff = _split(loss, inputs)
    ours_in = {n: torch.from_numpy(np.ascontiguousarray(a)).to(device) for n, a in inputs.items()}
    sync = _torch_sync(torch, device)
    memory, method = _torch_memory(torch, device)
    extra = dict(sync=sync, memory=memory, memory_method=method)

    def backward_of(f):
        """``f`` and ``backward()`` on leaves of its own (so no other callable frees or accumulates its .grad)."""
        leaves_in = {n: t.clone().requires_grad_(i in diff) for i, (n, t) in enumerate(ours_in.items())}
        leaves = [t for t in leaves_in.values() if t.requires_grad]

        def run():
            for t in leaves:
                t.grad = None
            out = f(**leaves_in)
            out.backward()
            return out, [t.grad for t in leaves]
        return run

    pairs = []
    if "eager" in modes:
        for label, build in case.torch:
            pairs.append(Pair("torch", device, "eager", "value_and_grad", f"{label} + backward()",
                              lambda: loss.value_and_grad(**ours_in), backward_of(build(torch)), **extra))
    theirs_label, theirs_build = case.torch[0] if case.torch else (None, None)
    compiles = not ctx["quick"] or case.key in QUICK_TORCH_COMPILE  # ~10 s per torch.compile with inductor here
    compile_here = "torch.compile" in modes and compiles
    if theirs_build is not None and compiles and (compile_here or "compiled" in modes):
        backend = ctx["torch_compile_backend"]
        torch._dynamo.reset()  # a fresh cache per case: the lambdas below share code objects across cases
        theirs_compiled = backward_of(torch.compile(theirs_build(torch), backend=backend))
        theirs_text = f"torch.compile({theirs_label}, {backend}) + backward()"
        if compile_here:
            pairs.append(Pair("torch", device, "torch.compile", f"torch.compile(loss, {backend}) + backward()",
                              theirs_text, backward_of(torch.compile(lambda **a: loss(**a), backend=backend)),
                              theirs_compiled, **extra))
        compiled = _compiled(loss, backend=backend) if "compiled" in modes else None
        if compiled is not None:
            pairs.append(Pair("torch", device, "compiled", "mlo.compile(loss).value_and_grad", theirs_text,
                              lambda: compiled.value_and_grad(**ours_in), theirs_compiled, **extra))
    raw = _raw(case, inputs, modes, "torch")
    if raw is not None:
        pairs.append(Pair("torch", device, "per-call", "value_and_grad", "the formula in torch operators",
                          lambda: loss.value_and_grad(**ours_in), lambda: raw(**ours_in), sync=sync))
    return pairs


def _jax_memory(jitted, args):
    """XLA's compiled-memory analysis: temporaries plus outputs of the jitted call."""
    def peak(fn, sync):
        stats = jitted.lower(*args).compile().memory_analysis()
        return None if stats is None else stats.temp_size_in_bytes + stats.output_size_in_bytes
    return peak


def jax_pairs(case: Case, loss, inputs, device, modes, ctx):
    import jax
    import jax.numpy as jnp

    names, diff = _split(loss, inputs)
    where = jax.devices(device)[0]
    args = [jax.device_put(a, where) for a in inputs.values()]
    sync = jax.block_until_ready
    pairs = []
    if case.jax and installed("optax") and {"jit", "compiled"} & set(modes):
        import optax

        label, build = case.jax[0]
        f = build(jax, jnp, optax)
        theirs = jax.jit(jax.value_and_grad(lambda *a: f(**dict(zip(names, a))), argnums=diff))
        theirs_text = f"jax.jit(jax.value_and_grad({label}))"
        if "jit" in modes:
            ours = jax.jit(lambda *a: loss.value_and_grad(*a))
            pairs.append(Pair("jax", device, "jit", "jax.jit(value_and_grad)", theirs_text,
                              lambda: ours(*args), lambda: theirs(*args), sync=sync,
                              memory={"ours": _jax_memory(ours, args), "theirs": _jax_memory(theirs, args)},
                              memory_method="XLA memory_analysis (temp + output)"))
        compiled = _compiled(loss) if "compiled" in modes else None
        if compiled is not None:
            pairs.append(Pair("jax", device, "compiled", "mlo.compile(loss).value_and_grad", theirs_text,
                              lambda: compiled.value_and_grad(*args), lambda: theirs(*args), sync=sync))
    raw = _raw(case, inputs, modes, "jax")
    if raw is not None:
        named = dict(zip(names, args))
        pairs.append(Pair("jax", device, "per-call", "value_and_grad", "the formula in jax.numpy operators",
                          lambda: loss.value_and_grad(**named), lambda: raw(**named), sync=sync))
    return pairs


def _mlx_memory(mx):
    def peak(fn, sync):
        mx.synchronize()
        mx.reset_peak_memory()
        base = mx.get_active_memory()
        sync(fn())
        return mx.get_peak_memory() - base
    return peak


def mlx_pairs(case: Case, loss, inputs, device, modes, ctx):
    import mlx.core as mx
    import mlx.nn as nn

    names, diff = _split(loss, inputs)
    args = [mx.array(a) for a in inputs.values()]
    named = dict(zip(names, args))
    stream = mx.gpu if device == "gpu" else mx.cpu
    extra = dict(sync=mx.eval, scope=lambda: mx.stream(stream), memory=_mlx_memory(mx),
                 memory_method="mx.get_peak_memory")
    pairs = []
    if case.mlx:
        label, build = case.mlx[0]
        f = build(mx, nn)
        theirs = mx.value_and_grad(lambda *a: f(**dict(zip(names, a))), argnums=diff)
        theirs_compiled = mx.compile(theirs)
        if "eager" in modes:
            pairs.append(Pair("mlx", device, "eager", "value_and_grad", f"mx.value_and_grad({label})",
                              lambda: loss.value_and_grad(*args), lambda: theirs(*args), **extra))
        if "mx.compile" in modes:
            ours_compiled = mx.compile(lambda *a: loss.value_and_grad(*a))
            pairs.append(Pair("mlx", device, "mx.compile", "mx.compile(value_and_grad)",
                              f"mx.compile(mx.value_and_grad({label}))", lambda: ours_compiled(*args),
                              lambda: theirs_compiled(*args), **extra))
        compiled = _compiled(loss) if "compiled" in modes else None
        if compiled is not None:
            pairs.append(Pair("mlx", device, "compiled", "mlo.compile(loss).value_and_grad",
                              f"mx.compile(mx.value_and_grad({label}))", lambda: compiled.value_and_grad(*args),
                              lambda: theirs_compiled(*args), **extra))
    raw = _raw(case, inputs, modes, "mlx")
    if raw is not None:
        pairs.append(Pair("mlx", device, "per-call", "value_and_grad", "the formula in mx operators",
                          lambda: loss.value_and_grad(**named), lambda: raw(**named), sync=mx.eval,
                          scope=lambda: mx.stream(stream)))
    return pairs


PAIRS = {"numpy": numpy_pairs, "torch": torch_pairs, "jax": jax_pairs, "mlx": mlx_pairs}


# --------------------------------------------------------------------------- timing


class _TooSlow(Exception):
    pass


@contextlib.contextmanager
def _time_limit(seconds):
    """Interrupt a call (a compile, a first run) that takes longer than ``seconds``; main thread on POSIX only."""
    def too_slow(signum, frame):
        raise _TooSlow(f"first call over the {seconds:g} s limit (--limit)")

    armed = bool(seconds) and hasattr(signal, "setitimer")
    try:
        previous = signal.signal(signal.SIGALRM, too_slow) if armed else None
    except ValueError:  # not the main thread
        armed = False
    if armed:
        signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        if armed:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)


def _short_error(err: BaseException) -> str:
    text = (f"{type(err).__name__}: {err}".strip().splitlines() or [type(err).__name__])[0]
    return text[:160]


def _call(fn, sync):
    t0 = time.perf_counter()
    sync(fn())
    return time.perf_counter() - t0


def time_pair(p: Pair, reps: int, warmup: int, limit: float) -> None:
    """Warm each side up (compiles), then time them alternately: ours, theirs, theirs, ours, ...; then measure
    one call of each for its peak memory. A side that fails or is too slow is reported, not timed (and
    neither is theirs when ours failed)."""
    with p.scope():
        sides = []
        for side in ("ours", "theirs"):
            try:
                with _time_limit(limit):
                    for _ in range(max(warmup, 1)):
                        p.sync(getattr(p, side)())
            except Exception as err:  # noqa: BLE001
                p.error = (p.error + "; " if p.error else "") + f"{side}: {_short_error(err)}"
                continue
            sides.append(side)
        if "ours" not in sides:  # nothing to compare: do not spend the repetitions on theirs alone
            sides = []
        gc.collect()
        for rep in range(reps):
            for side in (sides if rep % 2 == 0 else sides[::-1]):
                getattr(p, f"{side}_times").append(_call(getattr(p, side), p.sync))
        for side in sides:
            measure = p.memory.get(side) if isinstance(p.memory, dict) else p.memory
            if measure is None:
                continue
            try:
                setattr(p, f"{side}_peak_bytes", measure(getattr(p, side), p.sync))
            except Exception as err:  # noqa: BLE001 - memory is reported when it can be measured
                p.error = (p.error + "; " if p.error else "") + f"{side} memory: {_short_error(err)}"


def row_of(case: Case, shape, dtype, p: Pair) -> Row:
    ours = statistics.median(p.ours_times) * 1e3 if p.ours_times else None
    theirs = statistics.median(p.theirs_times) * 1e3 if p.theirs_times else None
    both = ours is not None and theirs is not None
    memory_ratio = (p.ours_peak_bytes / p.theirs_peak_bytes
                    if p.ours_peak_bytes is not None and p.theirs_peak_bytes else None)
    return Row(case.key, tuple(shape), dtype, p.backend, p.device, p.mode, p.ours_label, p.theirs_label, ours,
               theirs, ours / theirs if both and theirs else None, (ours - theirs) * 1e3 if both else None,
               p.ours_peak_bytes, p.theirs_peak_bytes, memory_ratio, p.memory_method if (
                   p.ours_peak_bytes is not None or p.theirs_peak_bytes is not None) else "",
               max(len(p.ours_times), len(p.theirs_times)), p.error,
               [t * 1e3 for t in p.ours_times], [t * 1e3 for t in p.theirs_times])


def run_case(case: Case, shape, dtype: str, devices: dict, modes, reps: int, warmup: int, *, ctx: dict,
             limit: float = 0, seed: int = 0, log=None) -> list[Row]:
    """Every pair of one case at one size, on every backend and device, one pair at a time (so one framework's
    idle worker threads do not slow another's timed calls), its two sides interleaved."""
    loss = mlo.get(case.loss, **case.options)
    inputs = case.make(tuple(shape), dtype, np.random.default_rng(seed))
    rows = []
    for backend, backend_devices in devices.items():
        for device in backend_devices:
            try:
                pairs = PAIRS[backend](case, loss, inputs, device, modes, ctx)
            except Exception as err:  # noqa: BLE001 - a backend that cannot run is reported, not fatal
                pairs = []
                rows.append(Row(case.key, tuple(shape), dtype, backend, device, "-", "value_and_grad", "-", None,
                                None, None, None, None, None, None, "", 0, _short_error(err)))
                if log is not None:
                    log(rows[-1])
            for p in pairs:
                time_pair(p, reps, warmup, limit)
                rows.append(row_of(case, shape, dtype, p))
                if log is not None:
                    log(rows[-1])
    return rows
