"""Train a compiled Mithril model with mithril_losses' output gradients.

A Mithril network (Linear(16) -> Tanh -> Linear, NumPy backend) is trained for a few SGD steps twice
from the same start: once with a mithril_losses loss, whose gradient with respect to the model's
output drives the model's own backward pass (``mithril_losses.integrations.mithril.backward``), and
once with Mithril's own loss primitive compiled inside a ``TrainModel``. The parameter gradients
agree at every step.

mithril 0.1.1 needs Python 3.12, numpy<2.2 and scipy:
    pip install "mithril==0.1.1" "numpy<2.2" scipy && pip install -e .

Run: python examples/mithril_backward.py [--mse]
  --mse  regression with mse against Mithril's SquaredError (default: cross entropy on logits
         against Mithril's CrossEntropy)
"""

# example-needs: mithril
# example-prints: parameter gradients match Mithril's own loss at every step
# example-run: --mse

import argparse

import mithril as ml
import numpy as np
from mithril.models import CrossEntropy, IOKey, Linear, Mean, Model, SquaredError, Tanh, TrainModel

import mithril_losses as mlo
from mithril_losses.integrations.mithril import backward

parser = argparse.ArgumentParser()
parser.add_argument("--mse", action="store_true", help="regression: mse vs Mithril's SquaredError")
args = parser.parse_args()

batch, features, width, steps, learning_rate = 32, 8, 4, 10, 0.5


def network():
    model = Model()
    model += Linear(16)(input="input", output="hidden")
    model += Tanh()(input="hidden", output="features")
    model += Linear(width)(input="features", output=IOKey("output"))
    return model


rng = np.random.default_rng(0)
data = {"input": rng.normal(size=(batch, features))}
if args.mse:
    loss, theirs_loss, data["target"] = mlo.get("mse"), SquaredError(), rng.normal(size=(batch, width))
else:
    loss, theirs_loss, data["target"] = mlo.get("cross_entropy"), CrossEntropy(), rng.integers(0, width, size=batch)

# The model alone (the loss stays outside), and the same network with Mithril's loss inside. The target is
# data in both: a data key of the TrainModel, and an extra key of `data` that the plain model ignores.
backend = ml.NumpyBackend(precision=64)
model = ml.compile(network(), backend=backend, data_keys={"input"}, shapes={"input": [batch, features]})
objective = TrainModel(network())
objective.add_loss(theirs_loss, input="output", target="target", reduce_steps=[Mean()])
reference = ml.compile(objective, backend=backend, data_keys={"input", "target"}, shapes={"input": [batch, features]})

params = {name: 0.5 * rng.normal(size=p.shape) for name, p in model.randomize_params().items()}
ours, theirs = dict(params), dict(params)
print(f"loss: mithril_losses {loss.name!r} vs Mithril's {type(theirs_loss).__name__}, {steps} SGD steps")
print(f"{'step':>4} {'ours':>12} {'Mithril':>12} {'max |d param, ours - Mithril|':>30}")
for step in range(steps):
    outputs = model.evaluate(ours, data)
    value, grads = loss.value_and_grad(outputs["output"], data["target"])
    ours_grads = backward(model, ours, data, {"output": grads["input"]}, outputs=outputs)

    theirs_value = reference.evaluate(theirs, data)["final_cost"]
    theirs_grads = reference.evaluate_gradients(theirs, data)

    diff = max(float(np.max(np.abs(ours_grads[k] - theirs_grads[k]))) for k in params)
    print(f"{step:>4} {float(value):>12.8f} {float(theirs_value):>12.8f} {diff:>30.3e}")
    np.testing.assert_allclose(value, theirs_value, rtol=1e-12)
    for name in params:
        np.testing.assert_allclose(ours_grads[name], theirs_grads[name], rtol=1e-10, atol=1e-14)
    ours = {k: p - learning_rate * ours_grads[k] for k, p in ours.items()}
    theirs = {k: p - learning_rate * theirs_grads[k] for k, p in theirs.items()}
print("parameter gradients match Mithril's own loss at every step")
