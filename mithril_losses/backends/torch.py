"""PyTorch: array-api-compat's torch namespace, torch.compile, autograd (a ``torch.autograd.Function``).

This module is imported on the torch backend's first use, so it imports torch at the top.
"""

from __future__ import annotations

import numpy as np
import torch

from ._base import Adapter

_DEVICE_NAMES: dict = {}  # torch.device -> its name: str() of a device is slow for the call path


class TorchAdapter(Adapter):
    name = "torch"
    dtypes = ("float16", "bfloat16", "float32", "float64")
    has_autodiff = True

    def _namespace(self):
        import array_api_compat.torch as xp

        return xp

    def devices(self):
        names = ["cpu"]
        if torch.cuda.is_available():
            names += ["cuda"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())]
        if torch.backends.mps.is_available():
            names.append("mps")
        return names

    def device_of(self, x):
        device = x.device
        name = _DEVICE_NAMES.get(device)
        if name is None:
            name = _DEVICE_NAMES[device] = str(device)
        return name

    def on_device(self, x, device):
        want = torch.device(device)  # "cuda" is any CUDA device, "cuda:1" that one
        return x.device.type == want.type and (want.index is None or x.device.index == want.index)

    def to_device(self, x, device):
        return x.to(device)  # device to device, keeping autograd history

    def asarray(self, x, *, dtype=None, device=None):
        self.check_device(device)
        if isinstance(x, np.ndarray) and not x.flags.writeable:
            x = x.copy()  # torch.as_tensor warns on read-only buffers
        return torch.as_tensor(x, dtype=dtype, device=device)

    def to_numpy(self, x):
        return x.detach().cpu().numpy()

    # an H100: a range check with CUDA kernels costs ~70 us at any size up to 4M elements; a copy to the host
    # and NumPy 101 us at 65,536 elements already (the crossover is below)
    host_check_elements = 1 << 14

    def host_values(self, x):
        if not self.is_concrete(x) or x.dtype == torch.bfloat16:  # NumPy has no bfloat16
            return None
        if x.device.type == "cpu":
            return x.detach().numpy()  # a view, no copy
        return self.to_numpy(x) if x.numel() <= self.host_check_elements else None

    def is_concrete(self, x):
        # a "meta" tensor has a shape, dtype and device but no values, like a tracer
        return not torch.compiler.is_compiling() and x.device.type != "meta"

    has_compiler = True

    def compile(self, fn, **options):
        return torch.compile(fn, **options)

    def vjp(self, fn, primals, cotangent):
        leaves = [p.detach().clone().requires_grad_(True) for p in primals]
        with torch.enable_grad():
            out = fn(*leaves)
            grads = torch.autograd.grad(out, leaves, cotangent, allow_unused=True)
        grads = [torch.zeros_like(p) if g is None else g for p, g in zip(leaves, grads)]
        return out.detach(), tuple(grads)

    def records_gradients(self, arrays):
        return torch.is_grad_enabled() and any(x.requires_grad for x in arrays)

    def custom_gradient(self, arrays, *, value, forward, differentiable, labels, no_gradient):
        for x, wanted, label in zip(arrays, differentiable, labels):
            if x.requires_grad and not wanted:
                raise no_gradient(label, f"{label}.detach()")
        return HandDerived.apply(forward, *arrays)[0]


class HandDerived(torch.autograd.Function):
    """A loss value whose backward is the loss's hand-derived pullback, kept from the forward pass.

    ``forward`` returns the pullback beside the value (a non-tensor output) so
    that ``setup_context`` can keep it; the ``setup_context`` form also lets
    ``torch.func`` transforms run the Function. A backward with
    ``create_graph=True`` recomputes the forward pass from the saved inputs
    with grad mode on, so autograd can differentiate the pullback itself
    (double backward).
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(forward, *arrays):
        return forward(list(arrays))

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.forward, ctx.pullback = inputs[0], output[1]
        ctx.save_for_backward(*inputs[1:])

    @staticmethod
    def backward(ctx, cotangent, _):
        arrays = ctx.saved_tensors  # raises if an input was modified in place since the forward
        pullback = ctx.forward(list(arrays))[1] if torch.is_grad_enabled() else ctx.pullback
        return None, *pullback(cotangent)


ADAPTER = TorchAdapter()
