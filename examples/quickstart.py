"""Quickstart: a loss value and its output gradients on NumPy, then the same on PyTorch via use_backend.

Run: python examples/quickstart.py
"""

# example-needs: numpy
# example-prints: quickstart OK

import importlib.util

import numpy as np

import mithril_losses as mlo

outputs = np.array([[0.5, 2.0, -1.0], [0.1, -3.0, 0.4]], dtype=np.float32)  # a model's outputs
target = np.array([[0.0, 0.5, -1.0], [0.0, 0.0, 1.0]], dtype=np.float32)

# --- NumPy (inferred from the inputs) ------------------------------------------------------------
mse = mlo.get("mse")  # or "mse_loss", as in torch.nn.functional
value, grads = mse.value_and_grad(outputs, target)
print(f"mse value: {float(value):.6f}")
print("mse d/d outputs:\n", grads["input"])
np.testing.assert_allclose(grads["input"], 2 * (outputs - target) / outputs.size, rtol=1e-6)

huber = mlo.get("huber", delta=1.0)
value, grads = huber.value_and_grad(outputs, target)
print(f"huber value: {float(value):.6f}")
print("huber d/d outputs (clip(r, -delta, delta) / N):\n", grads["input"])
np.testing.assert_allclose(grads["input"], np.clip(outputs - target, -1.0, 1.0) / outputs.size, rtol=1e-6)

# Mithril-style functional names, generated from the registry
print("mlo.huber_loss:", float(mlo.huber_loss(outputs, target, delta=1.0)))
print("mlo.huber_loss_gradient shape:", mlo.huber_loss_gradient(outputs, target, delta=1.0).shape)

# Per-sample losses and an upstream cotangent
per_sample = mlo.get("huber", reduction="none")
print("huber, reduction='none':\n", per_sample(outputs, target))

# --- PyTorch, chosen by configuration: the same call, NumPy in, torch tensors out ---------------
if importlib.util.find_spec("torch") is None:
    print("torch is not installed: skipping the use_backend('torch') part")
else:
    with mlo.use_backend("torch"):
        value_t, grads_t = huber.value_and_grad(outputs, target)
    print(f"torch backend: huber value {float(value_t):.6f} ({type(value_t).__module__}.{type(value_t).__name__})")
    np.testing.assert_allclose(grads_t["input"].numpy(), grads["input"], rtol=1e-6)
    print("torch gradients equal the NumPy ones")

print("quickstart OK")
