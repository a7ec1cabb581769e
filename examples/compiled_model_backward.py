"""Feed mithril_losses' output gradients to a PyTorch model's backward pass.

The model computes its outputs; mithril_losses computes the loss and d loss / d outputs from the
*detached* outputs; ``outputs.backward(gradient=...)`` then runs the model's own backward pass.
The parameter gradients equal those of ``F.mse_loss(outputs, target).backward()``, and so do those of
``loss(outputs, target).backward()`` (the loss inside autograd, whose backward is the hand-derived one).

Run: python examples/compiled_model_backward.py [--compile]
  --compile  wrap the model in torch.compile(backend="aot_eager") (a compiled graph, no C++ toolchain needed)
"""

# example-needs: torch
# example-prints: parameter gradients match torch's F.mse_loss + backward()
# example-run: --compile

import argparse

import torch
import torch.nn.functional as F

import mithril_losses as mlo

parser = argparse.ArgumentParser()
parser.add_argument("--compile", action="store_true", help="run the model through torch.compile")
args = parser.parse_args()

torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 4))
forward = torch.compile(model, backend="aot_eager") if args.compile else model
x = torch.randn(32, 8)
target = torch.randn(32, 4)
loss = mlo.get("mse")  # PyTorch's mse_loss: same arguments, options, values and gradients

# 1. mithril_losses: the loss and the output gradient, then the model's backward from its outputs
outputs = forward(x)
value, grads = loss.value_and_grad(outputs.detach(), target)
outputs.backward(gradient=grads["input"])
ours = {name: p.grad.clone() for name, p in model.named_parameters()}

# 2. the same loss inside autograd: its backward() runs the hand-derived gradient
model.zero_grad()
inside = loss(forward(x), target)
inside.backward()
inside_grads = {name: p.grad.clone() for name, p in model.named_parameters()}

# 3. PyTorch's own loss and backward, for comparison
model.zero_grad()
reference = F.mse_loss(forward(x), target)
reference.backward()
theirs = {name: p.grad.clone() for name, p in model.named_parameters()}

print(f"model: {'torch.compile(aot_eager)' if args.compile else 'eager'}")
print(f"loss: mithril_losses {float(value):.8f}   inside autograd {inside.item():.8f}   F.mse_loss {reference.item():.8f}")
print(f"{'parameter':<10} {'shape':<10} {'max |ours - torch|':>20} {'max |inside - torch|':>22} {'max |grad|':>12}")
for name in ours:
    diff = (ours[name] - theirs[name]).abs().max().item()
    diff_inside = (inside_grads[name] - theirs[name]).abs().max().item()
    print(f"{name:<10} {str(tuple(ours[name].shape)):<10} {diff:>20.3e} {diff_inside:>22.3e} "
          f"{theirs[name].abs().max().item():>12.4e}")
    torch.testing.assert_close(ours[name], theirs[name], rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(inside_grads[name], theirs[name], rtol=1e-5, atol=1e-7)
torch.testing.assert_close(value, reference.detach())
torch.testing.assert_close(inside.detach(), reference.detach())
print("parameter gradients match torch's F.mse_loss + backward()")
