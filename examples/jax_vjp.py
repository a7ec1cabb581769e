"""Drive a JAX model's backward pass with mithril_losses' output gradient, through jax.vjp.

``jax.vjp(apply_fn, params)`` gives the outputs and the model's pullback; mithril_losses gives the
Huber loss and d loss / d outputs; the pullback turns that into parameter gradients, which equal
``jax.grad`` of ``optax.losses.huber_loss(...).mean()``. The loss called inside ``jax.grad`` (a
``jax.custom_vjp`` function whose backward is the hand-derived gradient) gives them too, under ``jax.jit``.

Run: python examples/jax_vjp.py
"""

# example-needs: jax optax
# example-prints: parameter gradients match jax.grad of optax.losses.huber_loss

import jax
import jax.numpy as jnp
import numpy as np
import optax

import mithril_losses as mlo

DELTA = 1.0

k1, k2, k3, k4 = jax.random.split(jax.random.PRNGKey(0), 4)
params = {
    "w1": jax.random.normal(k1, (8, 16)) * 0.5, "b1": jnp.zeros(16),
    "w2": jax.random.normal(k2, (16, 4)) * 0.5, "b2": jnp.zeros(4),
}
x = jax.random.normal(k3, (64, 8))
target = 2.0 * jax.random.normal(k4, (64, 4))  # large enough that some residuals pass delta


def apply_fn(p):
    return jnp.tanh(x @ p["w1"] + p["b1"]) @ p["w2"] + p["b2"]


# 1. mithril_losses: outputs and pullback from jax.vjp, the output gradient from the loss
outputs, pullback = jax.vjp(apply_fn, params)
value, grads = mlo.get("huber", delta=DELTA).value_and_grad(outputs, target)
(ours,) = pullback(grads["input"])

# 2. the same loss inside jax.grad, under jax.jit: its custom_vjp runs the hand-derived gradient
inside = jax.jit(jax.grad(lambda p: mlo.get("huber", delta=DELTA)(apply_fn(p), target)))(params)

# 3. JAX autodiff of optax's Huber loss, for comparison
reference, theirs = jax.value_and_grad(lambda p: optax.losses.huber_loss(apply_fn(p), target, delta=DELTA).mean())(params)

linear = float(jnp.mean(jnp.abs(outputs - target) > DELTA))
print(f"huber loss: mithril_losses {float(value):.7f}   optax {float(reference):.7f}   "
      f"({linear:.0%} of residuals beyond delta)")
print(f"{'parameter':<10} {'shape':<10} {'max |ours - optax|':>20} {'max |inside - optax|':>21} {'max |grad|':>12}")
for name in sorted(params):
    diff = float(jnp.max(jnp.abs(ours[name] - theirs[name])))
    diff_inside = float(jnp.max(jnp.abs(inside[name] - theirs[name])))
    print(f"{name:<10} {str(ours[name].shape):<10} {diff:>20.3e} {diff_inside:>21.3e} "
          f"{float(jnp.max(jnp.abs(theirs[name]))):>12.4e}")
    np.testing.assert_allclose(np.asarray(ours[name]), np.asarray(theirs[name]), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(np.asarray(inside[name]), np.asarray(theirs[name]), rtol=1e-5, atol=1e-7)
np.testing.assert_allclose(float(value), float(reference), rtol=1e-6)
print("parameter gradients match jax.grad of optax.losses.huber_loss")
