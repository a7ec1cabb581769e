"""PyTorch: array-api-compat's torch namespace, torch.compile, autograd."""

from __future__ import annotations

import numpy as np

from ._base import Adapter


class TorchAdapter(Adapter):
    name = "torch"
    dtypes = ("float16", "bfloat16", "float32", "float64")
    has_autodiff = True

    def _namespace(self):
        import array_api_compat.torch as xp

        return xp

    def devices(self):
        import torch

        names = ["cpu"]
        if torch.cuda.is_available():
            names += ["cuda"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())]
        if torch.backends.mps.is_available():
            names.append("mps")
        return names

    def device_of(self, x):
        return str(x.device)

    def on_device(self, x, device):
        import torch

        want = torch.device(device)  # "cuda" is any CUDA device, "cuda:1" that one
        return x.device.type == want.type and (want.index is None or x.device.index == want.index)

    def to_device(self, x, device):
        return x.to(device)  # device to device, keeping autograd history

    def asarray(self, x, *, dtype=None, device=None):
        import torch

        self.check_device(device)
        if isinstance(x, np.ndarray) and not x.flags.writeable:
            x = x.copy()  # torch.as_tensor warns on read-only buffers
        return torch.as_tensor(x, dtype=dtype, device=device)

    def to_numpy(self, x):
        return x.detach().cpu().numpy()

    def is_concrete(self, x):
        import torch

        return not torch.compiler.is_compiling()

    def compile(self, fn):
        import torch

        return torch.compile(fn)

    def vjp(self, fn, primals, cotangent):
        import torch

        leaves = [p.detach().clone().requires_grad_(True) for p in primals]
        with torch.enable_grad():
            out = fn(*leaves)
            grads = torch.autograd.grad(out, leaves, cotangent, allow_unused=True)
        grads = [torch.zeros_like(p) if g is None else g for p, g in zip(leaves, grads)]
        return out.detach(), tuple(grads)


ADAPTER = TorchAdapter()
