"""Compiled mode: a loss whose calls run under the backend's compiler (``jax.jit``, ``torch.compile``, ``mx.compile``).

``compile(loss)`` keeps the loss's public calls. Each call first binds, converts
and validates its arguments eagerly (so label ranges and probability domains
are checked on concrete values, and a bad input raises the engine's error
before anything is traced), then calls a compiled function of the converted
arrays. Compiled functions are cached per call signature: the backend, the
call (value, value and gradient, vjp), and for each array its place (input,
layer, ``weight``, ``where``, ``cotangent``), shape, dtype and device. Weights,
masks and the cotangent are traced arguments, never constants. NumPy and
array-api-strict have no compiler: their calls run eagerly, as the loss's own.
"""

from __future__ import annotations

import threading
import types
from collections import namedtuple

from . import _layers, _validation

CacheInfo = namedtuple("CacheInfo", ["hits", "misses", "currsize"])


def compile(loss, **options):  # noqa: A001  (mlo.compile, as jax.jit / torch.compile / mx.compile)
    """``loss`` with its calls compiled by the framework of the arrays they get.

    ``options`` go to that framework's compiler (``jax.jit``, ``torch.compile``
    or ``mx.compile``), e.g. ``backend="aot_eager"`` for ``torch.compile``.
    """
    from ._loss import Loss

    if not isinstance(loss, Loss):
        raise _validation.not_a_loss(loss)
    return CompiledLoss(loss, options)


class CompiledLoss:
    """A ``Loss`` whose calls run compiled; the same calls, arguments and results as the loss."""

    def __init__(self, loss, options: dict):
        self.loss = loss
        self.compile_options = dict(options)
        self._functions = {}  # call signature -> compiled function
        self._lock = threading.Lock()
        self._hits = self._misses = 0

    # -- description (the loss's) --------------------------------------------------
    spec = property(lambda self: self.loss.spec)
    name = property(lambda self: self.loss.name)
    family = property(lambda self: self.loss.family)
    inputs = property(lambda self: self.loss.inputs)
    differentiable = property(lambda self: self.loss.differentiable)
    reduction = property(lambda self: self.loss.reduction)
    axis = property(lambda self: self.loss.axis)
    options = property(lambda self: self.loss.options)

    def to_config(self) -> dict:
        """The loss's config with ``"compile"``: true, or the compiler options when there are some."""
        return {**self.loss.to_config(), "compile": dict(self.compile_options) or True}

    def __repr__(self):
        opts = "".join(f", {k}={v!r}" for k, v in self.compile_options.items())
        return f"compile({self.loss!r}{opts})"

    # -- public calls ----------------------------------------------------------------
    def __call__(self, *args, weight=None, where=None, backend=None, **inputs):
        return self.value(*args, weight=weight, where=where, backend=backend, **inputs)

    def value(self, *args, weight=None, where=None, backend=None, **inputs):
        return self._run("value", None, args, inputs, weight, where, backend)

    def value_and_grad(self, *args, weight=None, where=None, backend=None, **inputs):
        return self._run("value_and_grad", None, args, inputs, weight, where, backend)

    def grad(self, *args, weight=None, where=None, backend=None, **inputs):
        """Gradients of the reduced loss (of its sum, for reduction="none")."""
        return self.value_and_grad(*args, weight=weight, where=where, backend=backend, **inputs)[1]

    def vjp(self, cotangent, *args, weight=None, where=None, backend=None, **inputs):
        return self._run("vjp", cotangent, args, inputs, weight, where, backend)

    # -- the cache ---------------------------------------------------------------------
    def cache_info(self) -> CacheInfo:
        """Calls that found their compiled function (hits), that compiled one (misses), and how many are kept."""
        return CacheInfo(self._hits, self._misses, len(self._functions))

    def cache_clear(self) -> None:
        with self._lock:
            self._functions.clear()
            self._hits = self._misses = 0

    # -- internals -----------------------------------------------------------------------
    def _run(self, kind, cotangent, args, inputs, weight, where, backend):
        call = self.loss._prepare(args, inputs, weight, where, backend)  # eager: bind, convert, validate
        adapter = call.adapter
        arrays = [x for _, _, x in call.arrays()]
        if kind == "vjp":
            arrays.append(call.convert("cotangent", cotangent))
        layout = _Layout(call, kind == "vjp")
        run = self._traced(kind, layout, adapter.name)
        if not adapter.has_compiler:
            return run(*arrays)
        key = (adapter.name, kind, layout.key,
               tuple((tuple(x.shape), str(x.dtype), adapter.device_of(x)) for x in arrays))
        with self._lock:
            fn = self._functions.get(key)
            if fn is None:
                fn = self._functions[key] = adapter.compile(_own_code(run), **self.compile_options)
                self._misses += 1
            else:
                self._hits += 1
        return fn(*arrays)

    def _traced(self, kind, layout, backend):
        """The function the compiler traces: the loss's own call on the arrays put back in their places."""
        method = getattr(self.loss, kind)

        def run(*arrays):
            cotangent, arguments = layout.arguments(arrays)
            return method(*cotangent, **arguments, backend=backend)

        return run


def _own_code(fn):
    """``fn`` with a code object of its own.

    ``torch.compile`` keeps its cache, and counts recompilations against its limit (8), per code object: the
    functions of every signature of every compiled loss would otherwise share one.
    """
    return types.FunctionType(fn.__code__.replace(), fn.__globals__, fn.__name__, fn.__defaults__, fn.__closure__)


class _Layout:
    """Where each of a call's flat arrays goes: the inputs (layer inputs in their structure), weight, where,
    and the cotangent last (for a vjp)."""

    def __init__(self, call, with_cotangent: bool):
        self.skeletons = {n: _layers.map_layers(lambda key, _: key, v) for n, v in call.inputs.items() if v is not None}
        self.extras = tuple(n for n, x in (("weight", call.weight), ("where", call.where)) if x is not None)
        self.with_cotangent = with_cotangent
        self.key = (tuple((n, _frozen(s)) for n, s in self.skeletons.items()), self.extras, with_cotangent)

    def arguments(self, arrays):
        """([cotangent], keyword arguments) of the loss call on ``arrays``."""
        it = iter(arrays)
        arguments = {n: _layers.map_layers(lambda key, _: next(it), s) for n, s in self.skeletons.items()}
        arguments.update(zip(self.extras, it))
        return [next(it)] if self.with_cotangent else [], arguments


def _frozen(skeleton):
    """A hashable form of a layer input's structure (its keys, and whether it is a dict or a list)."""
    if isinstance(skeleton, dict):
        return ("dict", tuple(skeleton))
    if isinstance(skeleton, list):
        return ("list", len(skeleton))
    return skeleton
