"""Switch a whole training objective between backends by editing one line of a config file.

The objective (a reconstruction loss, a KL term with a warm-up and a segmentation head with dice +
cross entropy) and its backend live in one JSON (or, with --toml, TOML) file. The script computes the
objective with the backend the file names (NumPy), changes `backend` in the file to "torch", loads it
again and gets the same values and gradients as torch tensors.

Run: python examples/config_file_backend.py [--toml]
"""

# example-needs: torch
# example-prints: one edit of the config file switched the objective from numpy to torch
# example-run: --toml

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
import torch

import mithril_losses as mlo

parser = argparse.ArgumentParser()
parser.add_argument("--toml", action="store_true", help="write the objective as TOML instead of JSON")
args = parser.parse_args()

TOML = """\
backend = "numpy"

[objective]
composite = "composite"
name = "training_objective"

[objective.parts.reconstruction]
name = "mse"

[objective.parts.kl]
composite = "scheduled"
step = 3
loss = { name = "gaussian_kl" }
schedule = { kind = "linear_warmup", warmup_steps = 10, max_weight = 0.1 }

[objective.parts.segmentation]
composite = "weighted"
weight = 0.5
inputs = { input = "mask_logits", target = "mask" }

[objective.parts.segmentation.loss]
composite = "composite"
name = "dice_ce"

[objective.parts.segmentation.loss.parts.dice]
name = "dice"
mode = "binary"
from_logits = true

[objective.parts.segmentation.loss.parts.bce]
name = "binary_cross_entropy_with_logits"
"""


def objective_in_code():
    """The objective the TOML text describes, built in Python (its config is the JSON file)."""
    kl = mlo.ScheduledLoss(mlo.get("gaussian_kl"), mlo.LossScheduler.linear_warmup(warmup_steps=10, max_weight=0.1),
                           step=3)
    segmentation = mlo.CompositeLoss({"dice": mlo.get("dice", mode="binary", from_logits=True),
                                      "bce": mlo.get("binary_cross_entropy_with_logits")}, name="dice_ce")
    return mlo.CompositeLoss({
        "reconstruction": mlo.get("mse"), "kl": kl,
        "segmentation": mlo.WeightedLoss(segmentation, weight=0.5, inputs={"input": "mask_logits", "target": "mask"}),
    }, name="training_objective")


rng = np.random.default_rng(0)
inputs = {"input": rng.normal(size=(4, 6)), "target": rng.normal(size=(4, 6)),
          "mean": rng.normal(size=(4, 2)), "logvar": rng.normal(scale=0.3, size=(4, 2)),
          "mask_logits": rng.normal(size=(4, 1, 5, 5)), "mask": (rng.random((4, 1, 5, 5)) > 0.5).astype(np.float64)}

with tempfile.TemporaryDirectory() as tmp:
    path = Path(tmp) / ("objective.toml" if args.toml else "objective.json")
    if args.toml:
        path.write_text(TOML, encoding="utf-8")
    else:
        path.write_text(json.dumps({"backend": "numpy", "objective": objective_in_code().to_config()}, indent=2),
                        encoding="utf-8")
    print(f"--- {path.name}\n{path.read_text(encoding='utf-8')}")

    objective, backend = mlo.load_objective(path)
    assert objective.to_config() == objective_in_code().to_config()
    with mlo.use_backend(backend):
        total, grads, parts = objective.value_and_grad(**inputs, return_components=True)
    print(f"{backend}: total {float(total):.6f}, parts { {k: round(float(v), 6) for k, v in parts.items()} }")
    assert isinstance(grads["mask_logits"], np.ndarray)

    # the one edit: the backend line
    old, new = ('backend = "numpy"', 'backend = "torch"') if args.toml else ('"backend": "numpy"', '"backend": "torch"')
    path.write_text(path.read_text(encoding="utf-8").replace(old, new, 1), encoding="utf-8")
    objective, backend = mlo.load_objective(path)
    with mlo.use_backend(backend):
        total_torch, grads_torch = objective.value_and_grad(**inputs)
    print(f"{backend}: total {float(total_torch):.6f}")

assert backend == "torch" and isinstance(total_torch, torch.Tensor)
np.testing.assert_allclose(total_torch.numpy(), total, rtol=1e-12)
for name, g in grads.items():
    assert isinstance(grads_torch[name], torch.Tensor), name
    np.testing.assert_allclose(grads_torch[name].numpy(), g, rtol=1e-10, atol=1e-14)
print("one edit of the config file switched the objective from numpy to torch")
