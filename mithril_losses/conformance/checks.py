"""The conformance checks, for every registered loss (a user's own too).

For one loss x backend x device x dtype:

- ``autodiff``: the hand-derived vjp against the backend's autodiff of the
  same value function, with random cotangents, unreduced and through a
  weighted, masked mean;
- ``framework`` (backends with autodiff): the backend's own ``jax.vjp``,
  ``torch.autograd.grad`` or ``mx.vjp`` of ``loss(...)``, on the same cases
  (a quick run: with the first option set), runs the custom-gradient
  wrapper: it equals ``vjp`` to the last bits;
- ``finite_differences`` (NumPy, float64): against 4th-order central
  differences along random directions, which catches a value function and a
  gradient that are wrong together;
- ``cross_backend``: values and gradients against NumPy float64 on the same
  (rounded) inputs;
- ``reference:<library>`` (NumPy, float64): values and gradients against
  PyTorch/optax where they have the loss.
"""

from __future__ import annotations

import dataclasses
import importlib

import numpy as np

from .. import _layers, backends
from .._loss import Loss
from .gaps import known_gap
from .tolerances import FINITE_DIFFERENCES, tolerance

# The framework's backward through the wrapper runs the very operations of ``vjp``: on CPU the same bits.
# A few units in the last place leave room for GPU kernels whose atomic additions round in another order.
_UNIT_ROUNDOFF = {"float64": 2.0**-52, "float32": 2.0**-23, "float16": 2.0**-10, "bfloat16": 2.0**-7}
QUICK_SHAPES = ((3, 5),)
FULL_SHAPES = ((3, 5), (2, 3, 4), (1, 7))


@dataclasses.dataclass
class Result:
    loss: str
    backend: str
    device: str
    dtype: str
    check: str
    status: str  # passed, failed, skipped, xfail
    max_abs_err: float | None = None
    max_rel_err: float | None = None
    detail: str = ""


class _Mismatch(AssertionError):
    pass


class _Errors:
    """Worst errors over the comparisons of one check."""

    def __init__(self, rtol, atol):
        self.rtol, self.atol = rtol, atol
        self.abs = self.rel = 0.0
        self.failures: list[str] = []

    def compare(self, what, ours, theirs, *, tolerance=None):
        """Record the errors of ``ours`` against ``theirs``; a failure past ``tolerance`` (rtol, atol), or this check's."""
        rtol, atol = tolerance or (self.rtol, self.atol)
        a = np.asarray(ours, dtype=np.float64)
        b = np.asarray(theirs, dtype=np.float64)
        if a.shape != b.shape:
            self.failures.append(f"{what}: shape {a.shape} != {b.shape}")
            return
        if not np.array_equal(np.isfinite(a), np.isfinite(b)) or not np.array_equal(a[~np.isfinite(a)], b[~np.isfinite(b)]):
            self.failures.append(f"{what}: non-finite entries differ")
            return
        finite = np.isfinite(b)
        diff = np.abs(a[finite] - b[finite])
        err = float(diff.max()) if diff.size else 0.0
        scale = float(np.abs(b[finite]).max()) if diff.size else 0.0
        rel = err / scale if scale > 0 else err
        self.abs, self.rel = max(self.abs, err), max(self.rel, rel)
        if err > atol and rel > rtol:
            self.failures.append(f"{what}: abs {err:.3g}, rel {rel:.3g}")


def base_devices(adapter) -> list[str]:
    return [d for d in adapter.devices() if ":" not in d]


def _cases(spec, full):
    shapes = FULL_SHAPES if full else QUICK_SHAPES
    return [(options, shape) for options in spec.option_cases for shape in shapes]


def _sample(spec, options, shape, seed):
    rng = np.random.default_rng(seed)
    normalised = Loss(spec, **options).options
    return rng, spec.sample(rng, shape, normalised)


def _on_backend(adapter, arrays, dtype, device):
    def convert(_, a):
        a = np.asarray(a)
        return adapter.asarray(a, dtype=adapter.dtype(dtype) if a.dtype.kind == "f" else None, device=device)

    return {name: _layers.map_layers(convert, a) for name, a in arrays.items()}


def _to_numpy64(adapter, arrays):
    """Back to NumPy float64 (what the backend's rounding left of the inputs)."""
    def convert(_, a):
        a = adapter.to_numpy(a)
        return a.astype(np.float64) if a.dtype.kind == "f" or a.dtype.name == "bfloat16" else a

    return {name: _layers.map_layers(convert, a) for name, a in arrays.items()}


def _leaves(arrays, names):
    """[(label, array)] for the inputs ``names``, every layer of a layer input (dict or list of arrays) its own."""
    return [(_layers.label(n, key), a) for n in names for key, a in _layers.items(arrays[n])]


def _with_leaves(arrays, names, leaves):
    """``arrays`` with the leaves of ``names`` (in ``_leaves`` order) replaced by ``leaves``."""
    new = iter(leaves)
    return {**arrays, **{n: _layers.map_layers(lambda _, a: next(new), arrays[n]) for n in names}}


def _check_gradient_types(adapter, grads, inputs, errors):
    names = list(grads)
    for (label, g), (_, x) in zip(_leaves(grads, names), _leaves(inputs, names)):
        if tuple(g.shape) != tuple(x.shape) or g.dtype != x.dtype or backends.library_of(g) != backends.library_of(x):
            errors.failures.append(
                f"gradient of {label}: got {type(g).__name__} {tuple(g.shape)} {g.dtype}, "
                f"input is {type(x).__name__} {tuple(x.shape)} {x.dtype}")


def _random_like(rng, shape):
    return rng.uniform(-1.0, 1.0, tuple(shape))


# --------------------------------------------------------------------------- checks


def _gradient_cases(spec, adapter, device, dtype, cases, seed):
    """(tag, loss, inputs, engine weight/where, cotangent) on the backend for each (options, shape) of
    ``cases``: per sample with a random cotangent, and through a weighted, masked mean."""
    name = adapter.name
    for k, (options, shape) in enumerate(cases):
        rng, raw = _sample(spec, options, shape, seed + k)
        x = _on_backend(adapter, raw, dtype, device)
        for reduction, masked in (("none", False), ("mean", True)):
            loss = Loss(spec, reduction=reduction, **options)
            out_shape = tuple(loss.value(**x, backend=name).shape) if reduction == "none" else ()
            loss_shape = tuple(Loss(spec, reduction="none", **options).value(**x, backend=name).shape)
            extra = {}
            if masked:
                where = rng.random(loss_shape) < 0.7
                where.flat[0] = True
                extra = {"where": adapter.asarray(where, device=device)}
                if "weight" not in spec.inputs:  # the engine's weight, unless the loss owns the name
                    extra["weight"] = adapter.asarray(rng.uniform(0.5, 2.0, loss_shape), dtype=adapter.dtype(dtype),
                                                      device=device)
            ct = adapter.asarray(_random_like(rng, out_shape), dtype=adapter.dtype(dtype), device=device)
            yield f"{reduction} {shape}", loss, x, extra, ct


def _autodiff_of(adapter, value, x, extra, ct, diff):
    """The backend autodiff's gradients of ``value`` (a loss's ``value`` or ``_plain_value``) for ``ct``."""
    def f(*d):
        return value(**_with_leaves(x, diff, d), backend=adapter.name, **extra)

    return adapter.vjp(f, [a for _, a in _leaves(x, diff)], ct)[1]


def _autodiff(spec, adapter, device, dtype, full, seed, errors):
    diff = spec.differentiable
    for tag, loss, x, extra, ct in _gradient_cases(spec, adapter, device, dtype, _cases(spec, full), seed):
        auto = _autodiff_of(adapter, loss._plain_value, x, extra, ct, diff)
        ours = loss.vjp(ct, **x, backend=adapter.name, **extra)
        _check_gradient_types(adapter, ours, x, errors)
        for (label, g), a in zip(_leaves(ours, diff), auto):
            errors.compare(f"grad {label} {tag}", adapter.to_numpy(g), adapter.to_numpy(a))


def _framework(spec, adapter, device, dtype, full, seed, errors):
    """The framework's own vjp of ``loss(...)`` runs the custom-gradient wrapper: it equals ``loss.vjp``
    to the last bits (which the ``autodiff`` check compares with autodiff of the value function).

    A quick run checks the first option case only: the wrapper does not depend on a loss's options.
    """
    diff = spec.differentiable
    cases = _cases(spec, full)[: None if full else 1]
    for tag, loss, x, extra, ct in _gradient_cases(spec, adapter, device, dtype, cases, seed):
        framework = _autodiff_of(adapter, loss.value, x, extra, ct, diff)
        ours = loss.vjp(ct, **x, backend=adapter.name, **extra)
        for (label, g), a in zip(_leaves(ours, diff), framework):
            errors.compare(f"grad {label} {tag}", adapter.to_numpy(a), adapter.to_numpy(g),
                           tolerance=(8 * _UNIT_ROUNDOFF[dtype], 0.0))


def _finite_differences(spec, adapter, device, dtype, full, seed, errors):
    h = 1e-3
    for k, (options, shape) in enumerate(_cases(spec, full)):
        rng, x = _sample(spec, options, shape, seed + k)
        loss = Loss(spec, reduction="none", **options)
        ct = _random_like(rng, np.shape(loss.value(**x, backend="numpy")))
        grads = _leaves(loss.vjp(ct, **x, backend="numpy"), spec.differentiable)
        for i, (label, a) in enumerate(_leaves(x, spec.differentiable)):
            for _ in range(2):
                v = _random_like(rng, np.shape(a))

                def phi(t):
                    moved = [b + t * v if j == i else b for j, (_, b) in enumerate(_leaves(x, spec.differentiable))]
                    return float(np.sum(ct * loss.value(**_with_leaves(x, spec.differentiable, moved), backend="numpy")))

                fd = (-phi(2 * h) + 8 * phi(h) - 8 * phi(-h) + phi(-2 * h)) / (12 * h)
                errors.compare(f"d/d{label} {shape}", float(np.sum(grads[i][1] * v)), fd)


def _cross_backend(spec, adapter, device, dtype, full, seed, errors):
    name = adapter.name
    for k, (options, shape) in enumerate(_cases(spec, full)):
        rng, raw = _sample(spec, options, shape, seed + k)
        x = _on_backend(adapter, raw, dtype, device)
        x64 = _to_numpy64(adapter, x)
        loss = Loss(spec, reduction="none", **options)
        value64 = loss.value(**x64, backend="numpy")
        ct64 = _to_numpy64(adapter, {"ct": adapter.asarray(_random_like(rng, np.shape(value64)), dtype=adapter.dtype(dtype), device=device)})["ct"]
        ct = adapter.asarray(ct64, dtype=adapter.dtype(dtype), device=device)
        grads64 = loss.vjp(ct64, **x64, backend="numpy")
        value, grads = loss.value(**x, backend=name), loss.vjp(ct, **x, backend=name)
        if backends.library_of(value) != name or value.dtype != _leaves(x, spec.differentiable)[0][1].dtype:
            errors.failures.append(f"value is {type(value).__name__} of dtype {value.dtype}")
        _check_gradient_types(adapter, grads, x, errors)
        errors.compare(f"value {shape}", adapter.to_numpy(value), value64)
        for (label, g), (_, g64) in zip(_leaves(grads, spec.differentiable), _leaves(grads64, spec.differentiable)):
            errors.compare(f"grad {label} {shape}", adapter.to_numpy(g), g64)


def _reference(library):
    def check(spec, adapter, device, dtype, full, seed, errors):
        for k, (options, shape) in enumerate(_cases(spec, full)):
            rng, x = _sample(spec, options, shape, seed + k)
            normalised = Loss(spec, **options).options
            for reduction in REFERENCE_REDUCTIONS[library]:
                for weighted in (False, True) if "weight" not in spec.inputs else (False,):
                    loss = Loss(spec, reduction=reduction, **options)
                    loss_shape = np.shape(Loss(spec, reduction="none", **options).value(**x))
                    weight = rng.uniform(0.5, 2.0, loss_shape) if weighted else None
                    got = _REFERENCE_RUNNERS[library](spec, x, normalised, reduction, weight, rng)
                    if got is None:
                        continue
                    ref_value, ct, ref_grads = got
                    engine_weight = {} if weight is None else {"weight": weight}
                    ours = loss.value(**x, **engine_weight)
                    grads = loss.vjp(ct, **x, **engine_weight)
                    tag = f"{reduction}{' weighted' if weighted else ''} {shape}"
                    errors.compare(f"value {tag}", ours, ref_value)
                    for n in spec.differentiable:
                        errors.compare(f"grad {n} {tag}", grads[n], ref_grads[n])
    return check


def _torch_reference(spec, x, options, reduction, weight, rng):
    import torch

    t = {n: torch.tensor(a, dtype=torch.float64 if np.asarray(a).dtype.kind == "f" else None) for n, a in x.items()}
    for n in spec.differentiable:
        t[n].requires_grad_(True)
    w = None if weight is None else torch.tensor(weight)
    try:
        value = spec.references["torch"](torch, t, options, reduction, w)
    except TypeError:
        if weight is None:
            raise
        return None  # the torch function takes no weight
    ct = _random_like(rng, tuple(value.shape))
    grads = torch.autograd.grad(value, [t[n] for n in spec.differentiable], torch.tensor(ct))
    return value.detach().numpy(), ct, {n: g.numpy() for n, g in zip(spec.differentiable, grads)}


def _optax_reference(spec, x, options, reduction, weight, rng):
    import jax
    import optax

    if weight is not None:
        return None
    jax.config.update("jax_enable_x64", True)
    j = {n: jax.numpy.asarray(a) for n, a in x.items()}
    diff = spec.differentiable

    def f(*d):
        return spec.references["optax"](optax, {**j, **dict(zip(diff, d))}, options, reduction, None)

    value, pullback = jax.vjp(f, *[j[n] for n in diff])
    ct = _random_like(rng, tuple(value.shape))
    grads = pullback(jax.numpy.asarray(ct))
    return np.asarray(value), ct, {n: np.asarray(g) for n, g in zip(diff, grads)}


REFERENCE_REDUCTIONS = {"torch": ("none", "mean", "sum"), "optax": ("none",)}
_REFERENCE_RUNNERS = {"torch": _torch_reference, "optax": _optax_reference}


def _tolerance(spec, check, dtype):
    return FINITE_DIFFERENCES if check == "finite_differences" else tolerance(spec, dtype)


def planned_checks(spec, backend: str, dtype: str) -> list[str]:
    """The checks that apply to a loss on a backend and dtype."""
    adapter = backends.get_adapter(backend)
    checks = []
    if adapter.has_autodiff:
        checks += ["autodiff", "framework"]
    if backend == "numpy" and dtype == "float64":
        checks.append("finite_differences")
        checks += [f"reference:{lib}" for lib in spec.references if lib in _REFERENCE_RUNNERS]
    else:
        checks.append("cross_backend")
    return checks


_CHECKS = {"autodiff": _autodiff, "framework": _framework, "finite_differences": _finite_differences,
           "cross_backend": _cross_backend,
           "reference:torch": _reference("torch"), "reference:optax": _reference("optax")}


def run_check(spec, backend: str, device: str, dtype: str, check: str, *, full=False, seed=0) -> Result:
    """One check of one loss on one backend/device/dtype, as a Result (never raises for a loss's bug)."""
    result = Result(spec.name, backend, device, dtype, check, "passed")
    if check.startswith("reference:"):
        lib = check.partition(":")[2]
        try:
            importlib.import_module({"torch": "torch", "optax": "optax"}[lib])
        except ImportError:
            result.status, result.detail = "skipped", f"{lib} is not installed"
            return result
    if check == "finite_differences" and spec.stopped_gradient:
        result.status, result.detail = "skipped", f"stop-gradient by design: {spec.stopped_gradient}"
        return result
    adapter = backends.get_adapter(backend)
    if dtype not in adapter.dtypes:
        result.status, result.detail = "skipped", f"{backend} has no {dtype}"
        return result
    if backend == "jax" and dtype == "float64":
        import jax

        jax.config.update("jax_enable_x64", True)
    errors = _Errors(*_tolerance(spec, check, dtype))
    try:
        _CHECKS[check](spec, adapter, device, dtype, full, seed, errors)
    except Exception as err:  # a crash is a failure of this check, reported with its cause
        errors.failures.append(f"{type(err).__name__}: {err}")
    result.max_abs_err, result.max_rel_err = errors.abs, errors.rel
    if errors.failures:
        result.status, result.detail = "failed", "; ".join(errors.failures[:3])
    gap = known_gap(backend, spec.name, check, dtype)
    if gap is not None:
        if result.status == "failed":
            result.status, result.detail = "xfail", f"known gap: {gap}"
        else:
            result.status, result.detail = "failed", f"known gap now passes, remove it from gaps/{backend}.py: {gap}"
    return result
