"""A composite training objective: weighted, scheduled and regularised parts, one gradient per model output.

1. A VAE-style objective (reconstruction + KL with a warm-up + L2 weight decay): its total and gradients
   are checked against the parts computed one by one (sum of weight * value, sum of weight * gradient).
2. A two-headed NumPy model (class logits and box regression) trained with a MultiOutputLoss: the output
   gradients go through the model's backward pass (written by hand here), the loss falls, and LossMetrics
   smooths the logged values.

Run: python examples/composite_objective.py
"""

# example-needs: numpy
# example-prints: composite objective OK

import numpy as np

import mithril_losses as mlo

rng = np.random.default_rng(0)

# --- 1. a VAE-style objective --------------------------------------------------------------------
x, recon = rng.normal(size=(16, 8)), rng.normal(size=(16, 8))
mean, logvar = rng.normal(size=(16, 2)), rng.normal(scale=0.3, size=(16, 2))
params = {"w": rng.normal(size=(8, 2)), "b": rng.normal(size=(2,))}

kl = mlo.ScheduledLoss(mlo.get("gaussian_kl"), mlo.LossScheduler.linear_warmup(warmup_steps=10, max_weight=0.5))
objective = mlo.CompositeLoss({
    "reconstruction": mlo.get("mse"),
    "kl": kl,
    "decay": mlo.Regularization("l2", weight=1e-3),
})
print("inputs:", objective.inputs)
for step in range(4):
    total, grads, parts = objective.value_and_grad(recon, x, mean=mean, logvar=logvar, params=params,
                                                   return_components=True)
    print(f"step {step}: weights {objective.weights}, total {float(total):.5f}")
    # the same objective, part by part
    mse, gauss = mlo.get("mse"), mlo.get("gaussian_kl")
    penalty, penalty_grads = mlo.l2_regularization(params, weight=1e-3)
    expected = mse(recon, x) + kl.weight * gauss(mean, logvar) + penalty
    np.testing.assert_allclose(total, expected, rtol=1e-13)
    np.testing.assert_allclose(parts["kl"], gauss(mean, logvar), rtol=1e-13)
    np.testing.assert_allclose(grads["input"], mse.grad(recon, x)["input"], rtol=1e-13)
    np.testing.assert_allclose(grads["mean"], kl.weight * gauss.grad(mean, logvar)["mean"], rtol=1e-13)
    np.testing.assert_allclose(grads["params"]["w"], 1e-3 * params["w"], rtol=1e-13)
    objective.step()  # once per training step: the KL weight warms up

# --- 2. a two-headed model trained with its output gradients --------------------------------------
features = rng.normal(size=(64, 5))
labels = (features[:, 0] > 0).astype(np.int64) + (features[:, 1] > 0)
box_targets = features[:, 2:4] * 0.5
weights = {"cls": rng.normal(scale=0.1, size=(5, 3)), "box": rng.normal(scale=0.1, size=(5, 2))}

heads = mlo.MultiOutputLoss({"cls": (mlo.get("cross_entropy"), 1.0), "box": (mlo.get("smooth_l1"), 2.0)})
metrics = mlo.LossMetrics(decay=0.8)
first = None
for step in range(60):
    outputs = {name: features @ w for name, w in weights.items()}  # the model's forward pass
    total, output_gradients, parts = heads.value_and_grad(outputs, {"cls": labels, "box": box_targets},
                                                          return_components=True)
    for name, g in output_gradients.items():  # its backward pass: d loss / d w = features^T (d loss / d output)
        assert g.shape == outputs[name].shape
        weights[name] -= 0.5 * (features.T @ g)
    smoothed = metrics.update({"total": total, **parts})
    first = float(total) if first is None else first
print(f"total loss {first:.4f} -> {float(total):.4f}; smoothed {smoothed}")
assert float(total) < 0.6 * first

# the output gradients are the weighted gradients of each output's own loss
outputs = {name: features @ w for name, w in weights.items()}
_, output_gradients = heads.value_and_grad(outputs, {"cls": labels, "box": box_targets})
np.testing.assert_allclose(output_gradients["box"], 2.0 * mlo.smooth_l1_loss_gradient(outputs["box"], box_targets),
                           rtol=1e-13)
np.testing.assert_allclose(output_gradients["cls"], mlo.cross_entropy_gradient(outputs["cls"], labels), rtol=1e-13)
print("composite objective OK")
