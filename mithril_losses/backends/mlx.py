"""MLX: a thin shim where ``mlx.core`` deviates from the array API, mx.compile, mx.vjp, mx.custom_function."""

from __future__ import annotations

import math

import numpy as np

from ._base import Adapter


class MLXNamespace:
    """Standard names over ``mlx.core``; anything not overridden is mlx's own."""

    def __init__(self, mx):
        self._mx = mx
        self.bool = mx.bool_

    def __getattr__(self, name):
        return getattr(self._mx, name)

    def asarray(self, x, dtype=None, device=None, copy=None):
        if isinstance(x, self._mx.array):
            out = x if dtype is None else self.astype(x, dtype, copy=bool(copy))
            return self._mx.array(out) if copy and out is x else out
        return self._mx.array(x, dtype=dtype)

    def astype(self, x, dtype, /, *, copy=True, device=None):
        # MLX's astype to the same dtype returns the array itself; the standard's copy=True asks for a new one
        return self._mx.array(x) if copy and x.dtype == dtype else x.astype(dtype)

    def isdtype(self, dtype, kind):
        mx = self._mx
        kinds = {"real floating": mx.floating, "integral": mx.integer, "bool": mx.bool_,
                 "signed integer": mx.signedinteger, "unsigned integer": mx.unsignedinteger,
                 "numeric": mx.number}
        if isinstance(kind, tuple):
            return any(self.isdtype(dtype, k) for k in kind)
        if not isinstance(kind, str):
            return dtype == kind
        return dtype == mx.bool_ if kind == "bool" else mx.issubdtype(dtype, kinds[kind])

    # mlx.core.exp and logaddexp on float64 are only float32-accurate (mlx 0.32); power(e, x) and
    # log1p are accurate to float64, so float64 goes through them.
    def exp(self, x, /):
        mx = self._mx
        return mx.power(math.e, x) if x.dtype == mx.float64 else mx.exp(x)

    def logaddexp(self, x1, x2, /):
        mx = self._mx
        if mx.result_type(x1, x2) != mx.float64:
            return mx.logaddexp(x1, x2)
        gap = -mx.abs(x1 - x2)
        gap = mx.where(mx.isnan(gap), -math.inf, gap)  # both infinite of one sign
        return mx.maximum(x1, x2) + mx.log1p(self.exp(gap))

    def clip(self, x, /, min=None, max=None):
        return self._mx.clip(x, min, max)

    def concat(self, arrays, /, *, axis=0):
        return self._mx.concatenate(list(arrays), axis=axis)

    def pow(self, x1, x2, /):
        return self._mx.power(x1, x2)

    def zeros(self, shape, *, dtype=None, device=None):
        return self._mx.zeros(shape, dtype=dtype or self._mx.float32)

    def ones(self, shape, *, dtype=None, device=None):
        return self._mx.ones(shape, dtype=dtype or self._mx.float32)

    def full(self, shape, fill_value, *, dtype=None, device=None):
        return self._mx.full(shape, fill_value, dtype=dtype)

    def zeros_like(self, x, /, *, dtype=None, device=None):
        return self._mx.zeros_like(x) if dtype is None else self._mx.zeros(x.shape, dtype=dtype)

    def ones_like(self, x, /, *, dtype=None, device=None):
        return self._mx.ones_like(x) if dtype is None else self._mx.ones(x.shape, dtype=dtype)

    def arange(self, start, /, stop=None, step=1, *, dtype=None, device=None):
        if stop is None:
            start, stop = 0, start
        return self._mx.arange(start, stop, step, dtype=dtype)

    def sort(self, x, /, *, axis=-1, descending=False, stable=True):
        out = self._mx.sort(x, axis=axis)
        return self._flip(out, axis) if descending else out

    def argsort(self, x, /, *, axis=-1, descending=False, stable=True):
        return self._mx.argsort(-x if descending else x, axis=axis)

    def _flip(self, x, axis):
        index = [slice(None)] * x.ndim
        index[axis] = slice(None, None, -1)
        return x[tuple(index)]

    def count_nonzero(self, x, /, *, axis=None, keepdims=False):
        return self._mx.sum(x != 0, axis=axis, keepdims=keepdims)

    def reshape(self, x, /, shape, *, copy=None):
        return self._mx.reshape(x, shape)

    def isfinite(self, x, /):
        return self._mx.isfinite(x)

    def matrix_transpose(self, x, /):
        return self._mx.swapaxes(x, -1, -2)

    def vecdot(self, x1, x2, /, *, axis=-1):
        return self._mx.sum(x1 * x2, axis=axis)


class MLXAdapter(Adapter):
    name = "mlx"
    dtypes = ("float16", "bfloat16", "float32", "float64")
    has_autodiff = True

    def _namespace(self):
        import mlx.core as mx

        return MLXNamespace(mx)

    def devices(self):
        import mlx.core as mx

        return ["cpu", "gpu"] if mx.metal.is_available() else ["cpu"]

    def device_of(self, x):
        return str(self.xp.default_device().type).rpartition(".")[2]

    def asarray(self, x, *, dtype=None, device=None):
        self.check_device(device)
        if isinstance(x, np.ndarray) and x.dtype == np.float64 and dtype is None:
            dtype = self.xp.float64  # mx.array would silently narrow to float32
        return self.xp.asarray(np.asarray(x) if isinstance(x, (list, tuple)) else x, dtype=dtype)

    def to_numpy(self, x):
        return np.array(x)

    def host_values(self, x):
        import mlx.core as mx

        if x.size > self.host_check_elements or x.dtype == mx.bfloat16 or not self.is_concrete(x):
            return None
        return self.to_numpy(x)

    def is_concrete(self, x):
        import mlx.core as mx

        try:
            mx.eval(x)  # refused while mx.compile / mx.vmap trace
        except ValueError:
            return False
        return True

    has_compiler = True

    def compile(self, fn, **options):
        import mlx.core as mx

        return mx.compile(fn, **options)

    def vjp(self, fn, primals, cotangent):
        import mlx.core as mx

        (out,), grads = mx.vjp(lambda *p: [fn(*p)], list(primals), [cotangent])
        return out, tuple(grads)

    def records_gradients(self, arrays):
        # mx.grad and mx.vjp call the function on ordinary arrays and give no sign that they are under way,
        # so every MLX call is wrapped (the wrapper only costs when a gradient is taken)
        return True

    def custom_gradient(self, arrays, *, value, forward, differentiable, labels, no_gradient):
        """An ``mx.custom_function`` of every array, whose vjp recomputes the forward pass from its primals.

        MLX does not say which inputs are differentiated: the others get a zero cotangent.
        """
        import mlx.core as mx

        loss = mx.custom_function(lambda *a: value(list(a)))

        @loss.vjp
        def _(primals, cotangent, output):
            primals = [primals] if len(arrays) == 1 else list(primals)  # MLX passes a lone primal bare
            grads = forward(primals)[1](cotangent)
            return tuple(mx.zeros_like(x) if g is None else g for x, g in zip(primals, grads))

        return loss(*arrays)


ADAPTER = MLXAdapter()
