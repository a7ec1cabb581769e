"""The adapter interface every backend module implements."""

from __future__ import annotations

import numpy as np

from .. import _validation

FLOAT_DTYPES = ("float16", "bfloat16", "float32", "float64")


class Adapter:
    """One array library: namespace, devices, conversion, compiler, autodiff."""

    name = ""
    dtypes: tuple[str, ...] = ("float16", "float32", "float64")

    def __init__(self):
        self._xp = None

    # -- namespace ---------------------------------------------------------
    @property
    def xp(self):
        if self._xp is None:
            self._xp = self._namespace()
        return self._xp

    def _namespace(self):  # pragma: no cover - every adapter overrides it
        raise NotImplementedError

    # -- dtypes and devices --------------------------------------------------
    def dtype(self, name: str):
        if name not in self.dtypes:
            raise _validation.unsupported_dtype(self.name, name, self.dtypes)
        return getattr(self.xp, name)

    def devices(self) -> list[str]:
        return ["cpu"]

    def device_of(self, x):
        """Device name of `x`, or None where it has none yet (a tracer)."""
        return "cpu"

    def on_device(self, x, device) -> bool:
        """Whether `x` already lies on `device` (a tracer counts as being there)."""
        dev = self.device_of(x)
        return dev is None or dev == str(device)

    def check_device(self, device) -> None:
        if device is not None and str(device) not in self.devices():
            raise _validation.unknown_device(self.name, device, self.devices())

    # -- conversion ----------------------------------------------------------
    def asarray(self, x, *, dtype=None, device=None):
        """Array of this library from NumPy arrays, scalars or lists."""
        return self.xp.asarray(x, dtype=dtype, device=device)

    def to_numpy(self, x) -> np.ndarray:
        return np.asarray(x)

    def to_device(self, x, device):
        """`x`, an array of this library, moved to `device`."""
        return self.asarray(self.to_numpy(x), device=device)

    # an array on a GPU up to this size is copied to the host for a value check, where that is faster than the
    # library's own operations there (each adapter sets its measured crossover)
    host_check_elements = 1 << 16

    def host_values(self, x) -> np.ndarray | None:
        """`x`'s values as a NumPy array where a value check reads them faster there than with the library's
        own operations (on the CPU, or a small array on a GPU), else None: the check runs on the device."""
        return None

    # -- tracing, compiling, autodiff ----------------------------------------
    def is_concrete(self, x) -> bool:
        """False while a compiler traces `x`, or where `x` holds no values (value checks are then skipped)."""
        return True

    has_compiler = False

    def compile(self, fn, **options):
        """``fn`` compiled by the library's compiler with its ``options`` (``has_compiler``); else ``fn`` itself."""
        return fn

    has_autodiff = False

    def vjp(self, fn, primals, cotangent):
        """(fn(*primals), gradients of <cotangent, fn> w.r.t. each primal)."""
        raise NotImplementedError(f"The {self.name!r} backend has no autodiff.")

    def records_gradients(self, arrays) -> bool:
        """Whether a loss call on ``arrays`` may run inside this library's autodiff.

        Then ``Loss.value`` goes through ``custom_gradient``; a library without autodiff never does.
        """
        return False

    def custom_gradient(self, arrays, *, value, forward, differentiable, labels, no_gradient):
        """``value(arrays)`` as a function this library's autodiff differentiates with a hand-derived pullback.

        ``forward(arrays)`` returns ``(value, pullback)``; the pullback maps the
        value's cotangent to one gradient per array: those flagged in
        ``differentiable`` get theirs, the others (labels, targets the loss
        gives no gradient, the engine's weight and where) None. Where the
        library tells that one of them is being differentiated, the call raises
        ``no_gradient(label, stop)`` (``labels`` name the arrays; ``stop`` is the
        library's way to cut that input's gradient).
        """
        raise NotImplementedError(f"The {self.name!r} backend has no autodiff.")
