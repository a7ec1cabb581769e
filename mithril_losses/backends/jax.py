"""JAX: jax.numpy namespace, jax.jit, jax.vjp, jax.custom_vjp.

float64 needs ``jax.config.update("jax_enable_x64", True)`` in the user's
program; the conformance run switches it on for itself.
"""

from __future__ import annotations

import numpy as np

from ._base import Adapter


class JaxAdapter(Adapter):
    name = "jax"
    dtypes = ("float16", "bfloat16", "float32", "float64")
    has_autodiff = True

    def _namespace(self):
        import jax.numpy as xp

        return xp

    def devices(self):
        import jax

        names = ["cpu"]
        for platform in ("gpu", "tpu"):
            try:
                found = jax.devices(platform)
            except RuntimeError:
                continue
            names += [platform] + [f"{platform}:{d.id}" for d in found]
        return names

    @staticmethod
    def _split(device):
        """(platform, index or None); PyTorch's "cuda" names JAX's "gpu"."""
        platform, _, index = str(device).partition(":")
        return {"cuda": "gpu"}.get(platform, platform), int(index) if index else None

    def check_device(self, device):
        if device is not None:
            platform, index = self._split(device)
            super().check_device(platform if index is None else f"{platform}:{index}")

    def _device(self, device):
        import jax

        platform, index = self._split(device)
        return jax.devices(platform)[index or 0]

    def device_of(self, x):
        if not self.is_concrete(x):
            return None  # a tracer has no concrete device; it runs where the compiled function runs
        (dev,) = x.devices()
        return "cpu" if dev.platform == "cpu" else f"{dev.platform}:{dev.id}"

    def on_device(self, x, device):
        if not self.is_concrete(x):
            return True
        (dev,) = x.devices()
        platform, index = self._split(device)
        return dev.platform == platform and index in (None, dev.id)

    def to_device(self, x, device):
        import jax

        return jax.device_put(x, self._device(device))

    def asarray(self, x, *, dtype=None, device=None):
        import jax

        self.check_device(device)
        arr = self.xp.asarray(x, dtype=dtype)
        return jax.device_put(arr, self._device(device)) if device is not None else arr

    def to_numpy(self, x):
        return np.asarray(x)

    # an H100: a range check with eager jax.numpy costs ~600-850 us at any size; a copy to the host and NumPy
    # 23 us at 65,536 elements, 100 us at 262,144, 734 us at 1,048,576
    host_check_elements = 1 << 19

    def host_values(self, x):
        if not self.is_concrete(x) or not (x.size <= self.host_check_elements or self.device_of(x) == "cpu"):
            return None
        values = np.asarray(x)
        return values if values.dtype.kind in "biuf" else None  # bfloat16 (ml_dtypes): checked by JAX

    def is_concrete(self, x):
        import jax

        return not isinstance(x, jax.core.Tracer)

    has_compiler = True

    def compile(self, fn, **options):
        import jax

        return jax.jit(fn, **options)

    def vjp(self, fn, primals, cotangent):
        import jax

        out, pullback = jax.vjp(fn, *primals)
        return out, pullback(cotangent)

    def records_gradients(self, arrays):
        # jax.grad, jax.vjp, jax.jit and jax.vmap all trace; a concrete array is a constant of any of them
        return any(not self.is_concrete(x) for x in arrays)

    def custom_gradient(self, arrays, *, value, forward, differentiable, labels, no_gradient):
        """A ``jax.custom_vjp`` function of every array: none is closed over, so tracers never leak.

        The residuals are the inputs; the backward recomputes the forward pass from them.
        """
        import jax

        loss = jax.custom_vjp(lambda *a: value(list(a)))

        def fwd(*primals):
            for p, wanted, label in zip(primals, differentiable, labels):
                if p.perturbed and not wanted:
                    raise no_gradient(label, f"jax.lax.stop_gradient({label})")
            a = [p.value for p in primals]
            return value(a), a

        def bwd(a, cotangent):
            if isinstance(cotangent, jax.custom_derivatives.SymbolicZero):
                return (None,) * len(a)
            return tuple(forward(a)[1](cotangent))

        loss.defvjp(fwd, bwd, symbolic_zeros=True)  # symbolic zeros: fwd learns which inputs are differentiated
        return loss(*arrays)


ADAPTER = JaxAdapter()
