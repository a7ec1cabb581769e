"""Drive an MLX model's backward pass with mithril_losses' output gradient, through mx.vjp.

The model computes its logits; mithril_losses gives the cross-entropy loss and d loss / d logits;
``mx.vjp`` of the model's forward function turns that output gradient into parameter gradients. They
equal the gradients of ``mlx.nn.losses.cross_entropy`` through ``nn.value_and_grad``. The same loss
called inside ``nn.value_and_grad`` (an ``mx.custom_function`` whose vjp is the hand-derived gradient)
gives them too.

Run: python examples/mlx_backward.py [--compile]
  --compile  run the model's forward function through mx.compile
"""

# example-needs: mlx
# example-prints: parameter gradients match mlx.nn.losses.cross_entropy
# example-run: --compile

import argparse

import mlx.core as mx
import mlx.nn as nn
import numpy as np
from mlx.utils import tree_flatten, tree_unflatten

import mithril_losses as mlo

parser = argparse.ArgumentParser()
parser.add_argument("--compile", action="store_true", help="run the forward function through mx.compile")
args = parser.parse_args()

mx.random.seed(0)
model = nn.Sequential(nn.Linear(8, 32), nn.Tanh(), nn.Linear(32, 5))
x = mx.random.normal((64, 8))
labels = mx.random.randint(0, 5, (64,))
loss = mlo.get("cross_entropy", label_smoothing=0.1)  # PyTorch's cross_entropy options
names = [name for name, _ in tree_flatten(model.parameters())]
params = [p for _, p in tree_flatten(model.parameters())]


def forward(*arrays):
    """The model's logits as a function of its parameters (in ``names`` order)."""
    model.update(tree_unflatten(list(zip(names, arrays))))
    return model(x)


forward_fn = mx.compile(forward) if args.compile else forward

# 1. mithril_losses: the loss and d loss / d logits, then the model's backward pass from its outputs
logits = forward_fn(*params)
value, grads = loss.value_and_grad(logits, labels)
_, vjps = mx.vjp(forward_fn, params, [grads["input"]])
ours = dict(zip(names, vjps))

# 2. the same loss inside MLX's autodiff: its custom vjp runs the hand-derived gradient
model.update(tree_unflatten(list(zip(names, params))))
inside, inside_grads = nn.value_and_grad(model, lambda m: loss(m(x), labels))(model)
inside_grads = dict(tree_flatten(inside_grads))

# 3. MLX's own loss and autodiff, for comparison
reference, theirs = nn.value_and_grad(
    model, lambda m: nn.losses.cross_entropy(m(x), labels, label_smoothing=0.1, reduction="mean"))(model)
theirs = dict(tree_flatten(theirs))

print(f"forward: {'mx.compile' if args.compile else 'eager'}")
print(f"loss: mithril_losses {value.item():.7f}   inside nn.value_and_grad {inside.item():.7f}   "
      f"mlx.nn.losses {reference.item():.7f}")
print(f"{'parameter':<16} {'shape':<10} {'max |mx.vjp - mlx|':>20} {'max |inside - mlx|':>20} {'max |grad|':>12}")
for name in names:
    a, b, c = np.array(ours[name]), np.array(inside_grads[name]), np.array(theirs[name])
    print(f"{name:<16} {str(a.shape):<10} {np.abs(a - c).max():>20.3e} {np.abs(b - c).max():>20.3e} "
          f"{np.abs(c).max():>12.4e}")
    np.testing.assert_allclose(a, c, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(b, c, rtol=1e-5, atol=1e-7)
np.testing.assert_allclose(value.item(), reference.item(), rtol=1e-6)
np.testing.assert_allclose(inside.item(), reference.item(), rtol=1e-6)
print("parameter gradients match mlx.nn.losses.cross_entropy")
