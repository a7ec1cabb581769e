"""Extreme inputs, family by family, against closed forms.

``TABLE`` holds, for every loss family, cases at the edges that DESIGN.md §1
promises to survive: logits of +-1e9 and +-1e4 in float32, probabilities of
exactly 0 and 1, zero vectors, identical embeddings, masked (-inf) classes,
empty masks, huge and tiny scales (1e30, 1e-30 in float32) and
float16/bfloat16. Each case gives the loss's reduced value and the gradient of
every differentiable input in closed form, worked out by hand for that input
(the derivation is the comment next to it); nothing expected comes from the
library. Every case runs on NumPy, PyTorch and MLX where they are installed
and have its dtype, and on JAX (eager, slow to compile each new shape) in the
float16/bfloat16 cases, or in every case with ``MITHRIL_LOSSES_SWEEP=full``:
``value_and_grad`` and the plain value must be finite, keep the inputs' dtype
and equal the closed form.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pytest

import mithril_losses as mlo
from mithril_losses import registry

from _hypothesis_profiles import FULL
from conftest import dtype_name, installed, native, to_numpy

INF = math.inf
LN2 = math.log(2.0)
BACKENDS = ("numpy", "torch", "jax", "mlx")
HALF = ("float16", "bfloat16")
# (rtol, atol) of a comparison with the closed form, per dtype of the case's floating inputs
TOLERANCES = {"float32": (1e-5, 1e-6), "float16": (4e-3, 1e-3), "bfloat16": (3e-2, 1e-2)}


def softplus(z):
    return max(z, 0.0) + math.log1p(math.exp(-abs(z)))


def sigmoid(z):
    return 1.0 / (1.0 + math.exp(-z)) if z >= 0 else math.exp(z) / (1.0 + math.exp(z))


@dataclass(frozen=True)
class Case:
    """One loss at an extreme input: options, inputs, and the closed-form reduced value and gradients.

    Floating inputs become ``dtype``; a label input keeps integers (int64) and booleans, and
    becomes ``dtype`` where it holds floats. A layer input is a dict of layers.
    """

    what: str
    loss: str
    inputs: dict
    value: float
    grads: dict
    options: dict = field(default_factory=dict)
    dtype: str = "float32"
    where: list | None = None
    tol: tuple | None = None  # (rtol, atol) instead of the dtype's, where its rounding of the inputs bounds it


# ---------------------------------------------------------------------------------------------- regression

S5 = math.sqrt(0.5)

REGRESSION = [
    # huber, delta 1: |r| > 1 gives |r| - 1/2, gradient clip(r, -1, 1); weighted mean by the count
    Case("residuals of +-1e9", "huber", {"input": [1e9, -1e9, 0.5], "target": [0.0, 0.0, 0.0]},
         (2 * (1e9 - 0.5) + 0.125) / 3, {"input": [1 / 3, -1 / 3, 0.5 / 3], "target": [-1 / 3, 1 / 3, -0.5 / 3]}),
    # log cosh r = |r| - log 2 once e^(-2|r|) underflows; gradient tanh r = +-1
    Case("residuals of 1e4 and -1e9", "log_cosh", {"input": [1e4, -1e9, 0.0, 3.0], "target": [0.0, 0.0, 0.0, 3.0]},
         (1e4 + 1e9 - 2 * LN2) / 4, {"input": [0.25, -0.25, 0.0, 0.0], "target": [-0.25, 0.25, 0.0, 0.0]}),
    Case("residuals of 1e30 and -1e-30", "l1", {"input": [1e30, -1e-30], "target": [0.0, 0.0]},
         (1e30 + 1e-30) / 2, {"input": [0.5, -0.5], "target": [-0.5, 0.5]}),
    # sqrt(r^2 + eps^2): |r| for r = 1e30 (r^2 overflows float32), eps for r = 0 and 1e-30; gradient r / sqrt(.)
    Case("residuals of +-1e30, 1e-30 and 0", "charbonnier",
         {"input": [1e30, -1e30, 1e-30, 0.0], "target": [0.0, 0.0, 0.0, 0.0]},
         (2e30 + 2e-3) / 4, {"input": [0.25, -0.25, 1e-27 / 4, 0.0], "target": [-0.25, 0.25, -1e-27 / 4, 0.0]}),
    # 200 |x - y| / (|x| + |y| + eps): 0 at x = y = 0 (sign 0), 200 at x = 1e30, y = 0; there the input gradient
    # 200/D (1 - |x - y|/D) is 0 and the target gradient -200/D (sign y = 0) is -2e-28
    Case("zero vector and 1e30 against 0", "smape", {"input": [0.0, 1e30], "target": [0.0, 0.0]},
         100.0, {"input": [0.0, 0.0], "target": [0.0, -1e-28]}),
    # 100 |x - y| / max(|y|, eps): a zero target divides by eps = 1e-7
    Case("zero targets", "mape", {"input": [1e-3, -2.0], "target": [0.0, 0.0]},
         (1e6 + 2e9) / 2, {"input": [5e8, -5e8]}),
    # identical images: the MSE is floored at 1e-10 max^2, so -PSNR = -100 dB with a zero gradient
    Case("identical images", "psnr", {"input": [[0.25, 0.5], [0.75, 1.0]], "target": [[0.25, 0.5], [0.75, 1.0]]},
         -100.0, {"input": [[0.0, 0.0], [0.0, 0.0]], "target": [[0.0, 0.0], [0.0, 0.0]]}),
    # (log1p(x) - log1p(max(y, 1e-7)))^2 at x = 1e30: d = log1p(1e30) - log1p(1e-7), gradient 2 d / (1 + x);
    # the target is below the floor: no gradient
    Case("prediction of 1e30", "msle", {"input": [1e30], "target": [0.0]},
         (math.log1p(1e30) - math.log1p(1e-7)) ** 2,
         {"input": [2 * (math.log1p(1e30) - math.log1p(1e-7)) / 1e30], "target": [0.0]}),
    # quantile 0.9, u = y - x: max(q u, (q - 1) u) = 0.9e30 and 0.1e30; gradient -q (u > 0), 1 - q (u < 0)
    Case("residuals of +-1e30", "pinball", {"input": [-1e30, 1e30], "target": [0.0, 0.0]},
         0.5e30, {"input": [-0.45, 0.05]}, options={"quantile": 0.9}),
    # 256^2 = 65536 is past float16's range but exact in bfloat16
    Case("bfloat16 past float16's range", "mse", {"input": [256.0, -256.0], "target": [0.0, 0.0]},
         65536.0, {"input": [256.0, -256.0], "target": [-256.0, 256.0]}, dtype="bfloat16"),
    Case("float16 residuals of +-1e4", "huber", {"input": [1e4, -1e4], "target": [0.0, 0.0]},
         1e4 - 0.5, {"input": [0.5, -0.5], "target": [-0.5, 0.5]}, dtype="float16"),
    # every element masked out: 0 with a zero gradient, although r^2 = 1e60 overflows float32 there
    Case("empty mask over residuals of 1e30", "mse", {"input": [1e30, -1e30], "target": [0.0, 0.0]},
         0.0, {"input": [0.0, 0.0], "target": [0.0, 0.0]}, where=[False, False]),
]

# -------------------------------------------------------------------------------------------- classification


def _anyloss_accuracy_grad(p, y, n, scale=73.0):
    """d(1 - accuracy)/dp_i = -(2 y_i - 1) L a_i (1 - a_i) / N, a = sigmoid(L (p - 1/2)) (AnyLoss)."""
    a = sigmoid(scale * (p - 0.5))
    return -(2 * y - 1) * scale * a * (1 - a) / n


_FOCAL_U = 0.25 * 0.25 * (1 + 2 * LN2)  # alpha (1 - p)^2 (1 - 2 p log p / (1 - p)) at p = 1/2

CLASSIFICATION = [
    # sample 0: the target's logit dominates (loss 0, gradient p - onehot = 0); sample 1: loss 1e9 - (-1e9),
    # gradient p - onehot = (-1, 1, 0); mean over the two samples
    Case("logits of +-1e9", "cross_entropy", {"input": [[1e9, -1e9, 0.0], [-1e9, 1e9, 0.0]], "target": [0, 0]},
         1e9, {"input": [[0.0, 0.0, 0.0], [-0.5, 0.5, 0.0]]}),
    # a -inf class leaves the softmax: p = (1/2, 0, 1/2)
    Case("masked -inf class", "cross_entropy", {"input": [[0.0, -INF, 0.0]], "target": [0]},
         LN2, {"input": [[-0.5, 0.0, 0.5]]}),
    Case("masked -inf class, zero target there", "cross_entropy",
         {"input": [[0.0, -INF, 0.0]], "target": [[0.5, 0.0, 0.5]]}, LN2, {"input": [[0.0, 0.0, 0.0]]}),
    Case("every target ignored", "cross_entropy", {"input": [[1e9, -1e9], [0.0, 1e9]], "target": [-100, -100]},
         0.0, {"input": [[0.0, 0.0], [0.0, 0.0]]}),
    # smoothing 0.1 over 2 classes: 0.9 * 0 + 0.05 * (0 + 2e4); gradient p - (0.95, 0.05)
    Case("float16 logits of +-1e4, label smoothing", "cross_entropy", {"input": [[1e4, -1e4]], "target": [0]},
         1000.0, {"input": [[0.05, -0.05]]}, options={"label_smoothing": 0.1}, dtype="float16"),
    # (1 - t) sp(x) + t sp(-x) = (0, 1e9, 1e4, 0); d/dx = sigmoid(x) - t, d/dt = -x; mean over 4 (count)
    Case("logits of +-1e9 and +-1e4", "binary_cross_entropy_with_logits",
         {"input": [1e9, -1e9, 1e4, -1e4], "target": [1.0, 1.0, 0.0, 0.0]}, (1e9 + 1e4) / 4,
         {"input": [0.0, -0.25, 0.25, 0.0], "target": [-2.5e8, 2.5e8, -2500.0, 2500.0]}),
    Case("empty mask over infinite logits", "binary_cross_entropy_with_logits",
         {"input": [INF, -INF], "target": [0.0, 1.0]}, 0.0, {"input": [0.0, 0.0], "target": [0.0, 0.0]},
         where=[False, False]),
    # logs clamped at -100: losses (0, 0, 100, 100); d/dx = (x - t) / max(x (1 - x), 1e-12), d/dt = clamped
    # log(1 - x) - log x = +-100
    Case("probabilities of exactly 0 and 1", "binary_cross_entropy",
         {"input": [0.0, 1.0, 0.0, 1.0], "target": [0.0, 1.0, 1.0, 0.0]}, 50.0,
         {"input": [0.0, 0.0, -2.5e11, 2.5e11], "target": [25.0, -25.0, 25.0, -25.0]}),
    # x = 1e9, t = 1: ce = 0, 1 - p_t = 0; x = -1e9, t = 1: ce = 1e9, 1 - p_t = 1, loss alpha ce = 0.25e9,
    # gradient alpha (sigmoid(x) - t) = -0.25 (the gamma term has sigmoid(x) sigmoid(-x) = 0)
    Case("logits of +-1e9", "focal", {"input": [1e9, -1e9], "target": [1.0, 1.0]},
         0.125e9, {"input": [0.0, -0.125]}),
    # p = softmax(1e4, 0, -1e4) = (1, 0, 0); target 2: log p = -2e4, (1 - p)^2 = 1: loss 0.25 * 2e4;
    # gradient p sum(u) - u with u = alpha onehot: (0.25, 0, -0.25); mean over the two samples
    Case("logits of +-1e4", "categorical_focal", {"input": [[1e4, 0.0, -1e4], [1e4, 0.0, -1e4]], "target": [0, 2]},
         2500.0, {"input": [[0.0, 0.0, 0.0], [0.125, 0.0, -0.125]]}),
    # p = (1/2, 0, 1/2): loss -alpha (1/2)^2 log(1/2); gradient p_j u - u [j = y]
    Case("masked -inf class", "categorical_focal", {"input": [[0.0, -INF, 0.0]], "target": [0]},
         LN2 / 16, {"input": [[-_FOCAL_U / 2, 0.0, _FOCAL_U / 2]]}),
    # -log p_y + eps (1 - p_y) with p_y = 0: 2e9 + 2; gradient (p - onehot)(1 + eps p_y)
    Case("logits of +-1e9", "poly1", {"input": [[1e9, -1e9]], "target": [1]},
         2e9 + 2.0, {"input": [[1.0, -1.0]]}),
    # p = (1/2, 0, 1/2) = the target: CE log 2, eps sum y (1 - p) = 1; gradient p (S + eps p_t) - y (1 + eps p) = 0
    Case("masked -inf class, zero target there", "poly1",
         {"input": [[0.0, -INF, 0.0]], "target": [[0.5, 0.0, 0.5]]}, LN2 + 1.0, {"input": [[0.0, 0.0, 0.0]]}),
    # -x_y at log-probabilities 0 (the -inf entries are not the targets); gradient -[j = y] / N
    Case("masked -inf log-probabilities", "nll", {"input": [[-INF, 0.0], [0.0, -INF]], "target": [1, 0]},
         0.0, {"input": [[0.0, -0.5], [-0.5, 0.0]]}),
    Case("logits of +-1e9", "soft_margin", {"input": [1e9, -1e9], "target": [1.0, 1.0]},
         0.5e9, {"input": [0.0, -0.5]}),
    # (1/C) sum_c sp(-x) for t = 1: (0 + 1e4) / 2; gradient (sigmoid(x) - t) / C
    Case("float16 logits of +-1e4", "multilabel_soft_margin", {"input": [[1e4, -1e4]], "target": [[1.0, 1.0]]},
         5000.0, {"input": [[0.0, -0.5]]}, dtype="float16"),
    # renormalised (1, 0, 0) clipped to [eps, 1 - eps]: loss -log eps; every entry clipped: input gradient 0;
    # target gradient -log clip(q) = (-log(1 - eps), -log eps, -log eps)
    Case("probabilities of exactly 0 and 1", "categorical_cross_entropy",
         {"input": [[1.0, 0.0, 0.0]], "target": [[0.0, 1.0, 0.0]]}, -math.log(1e-7),
         {"input": [[0.0, 0.0, 0.0]], "target": [[-math.log1p(-1e-7), -math.log(1e-7), -math.log(1e-7)]]}),
    Case("scores of +-1e30", "hinge", {"input": [1e30, -1e30], "target": [1.0, 1.0]},
         0.5e30, {"input": [0.0, -0.5]}),
    # softmax(1e9, -1e9, 0) = (1, 0, 0) against class 1: sum (p - y)^2 = 2; the saturated softmax passes 0
    Case("logits of +-1e9", "brier", {"input": [[1e9, -1e9, 0.0]], "target": [1]},
         2.0, {"input": [[0.0, 0.0, 0.0]]}, options={"from_logits": True}),
    # a = sigmoid(73 (p - 1/2)): TP + TN = a(1) + a(0) + (1 - a(0)) + (1 - a(1)) = 2 of 4, exactly
    Case("probabilities of exactly 0 and 1", "accuracy", {"input": [0.0, 1.0, 1.0, 0.0], "target": [0, 1, 0, 1]},
         0.5, {"input": [_anyloss_accuracy_grad(p, y, 4) for p, y in ((0, 0), (1, 1), (1, 0), (0, 1))]}),
    # no positives and (almost) no predicted positives: F1 = 0 / FP = 0, loss 1; both targets 0 leave only
    # dF1/dFP - dF1/dTN = 0 in the gradient
    Case("no positives, probabilities of 0", "f1", {"input": [0.0, 0.0], "target": [0, 0]},
         1.0, {"input": [0.0, 0.0]}),
    # p in {0, 1}: the variance sum (1 - 2p)^2 p (1 - p) is 0, so Z = N / sqrt(eps) with N = sum (y - p)(1 - 2p) = 2;
    # gradient t (2 (4p - 1 - 2y) - t (1 - 2p)(1 - 8 p (1 - p))), t = N / eps
    Case("probabilities of exactly 0 and 1", "spiegelhalter_z", {"input": [0.0, 1.0], "target": [1, 0]},
         4.0 / 1e-7, {"input": [2e7 * (-6.0 - 2e7), 2e7 * (6.0 + 2e7)]}),
]

# --------------------------------------------------------------------------------------------- probabilistic

_KL_P = -math.log(1e-8)  # log(1 / eps)

PROBABILISTIC = [
    # log_target: e^t (t - x); a -inf target adds 0 with a zero gradient; d/dx = -e^t, d/dt = e^t (t - x + 1)
    Case("masked -inf log-probabilities", "kl_div", {"input": [[-INF, 0.0]], "target": [[-INF, 0.0]]},
         0.0, {"input": [[0.0, -0.5]], "target": [[0.0, 0.5]]}, options={"log_target": True}),
    # disjoint supports: exactly log 2; d/dp_c = 1/2 log(2 p / (p + q)) where p > 0, 0 where p = 0 < q
    Case("disjoint supports", "js_divergence", {"p": [[1.0, 0.0]], "q": [[0.0, 1.0]]},
         LN2, {"p": [[LN2 / 2, 0.0]], "q": [[0.0, LN2 / 2]]}),
    Case("float16 disjoint supports", "js_divergence", {"p": [[1.0, 0.0]], "q": [[0.0, 1.0]]},
         LN2, {"p": [[LN2 / 2, 0.0]], "q": [[0.0, LN2 / 2]]}, dtype="float16"),
    # identical distributions with a zero: value 0; at p_c = q_c = 0 the partial is 1/2 log 2
    Case("identical distributions with a zero", "js_divergence", {"p": [[1.0, 0.0]], "q": [[1.0, 0.0]]},
         0.0, {"p": [[0.0, LN2 / 2]], "q": [[0.0, LN2 / 2]]}),
    # floored at eps = 1e-8: p^ = (1, eps), q^ = (eps, 1); value log(1/eps) + eps log eps;
    # d/dp = log(p^/q^) + 1 (0 where floored), d/dq = -p^/q^ (0 where floored)
    Case("probabilities of exactly 0 and 1", "kl_divergence", {"p": [[1.0, 0.0]], "q": [[0.0, 1.0]]},
         _KL_P - 1e-8 * _KL_P, {"p": [[_KL_P + 1.0, 0.0]], "q": [[0.0, -1e-8]]}),
    # -cos with |a| floored at eps = 1e-8: 0; d/da = -b^/eps, d/db = -(a^ - cos b^) / |b| = 0
    Case("zero vector", "cosine_similarity", {"input": [[0.0, 0.0, 0.0]], "target": [[1.0, 2.0, 2.0]]},
         0.0, {"input": [[-1 / 3e-8, -2 / 3e-8, -2 / 3e-8]], "target": [[0.0, 0.0, 0.0]]}),
    # float16: eps = 1e-8 underflows, so the floor is float16's smallest normal number 2^-14 instead
    Case("float16 zero vector", "cosine_similarity", {"input": [[0.0, 0.0, 0.0]], "target": [[1.0, 2.0, 2.0]]},
         0.0, {"input": [[-2 ** 14 / 3, -2 ** 15 / 3, -2 ** 15 / 3]], "target": [[0.0, 0.0, 0.0]]}, dtype="float16"),
    # cos = 1/sqrt 2 at any scale; d/da = -(b^ - cos a^) / |a| = (0, -S5) / 1e30, d/db = -(a^ - cos b^) / |b|
    Case("vectors of 1e30", "cosine_similarity", {"input": [[1e30, 0.0]], "target": [[1e30, 1e30]]},
         -S5, {"input": [[0.0, -S5 * 1e-30]], "target": [[-0.5 * S5 * 1e-30, 0.5 * S5 * 1e-30]]}),
    # var 0 is clamped to eps = 1e-6: 1/2 log eps; d/dvar = (v - r^2) / (2 v^2) = 1 / (2 eps), passed through
    Case("zero variances", "gaussian_nll", {"input": [1.0, 2.0], "target": [1.0, 2.0], "var": [0.0, 0.0]},
         0.5 * math.log(1e-6), {"input": [0.0, 0.0], "target": [0.0, 0.0], "var": [2.5e5, 2.5e5]}),
    # log-rate -1e4: e^x - t x = (0, 3e4); gradient e^x - t
    Case("log-rates of -1e4", "poisson_nll", {"input": [-1e4, -1e4], "target": [0.0, 3.0]},
         1.5e4, {"input": [0.0, -1.5]}),
    # 1/2 sum (e^v + mu^2 - 1 - v) with v = -1e4: (9999 + 0) / 2; d/dv = (e^v - 1) / 2
    Case("log-variance of -1e4", "gaussian_kl", {"mean": [[0.0, 0.0]], "logvar": [[-1e4, 0.0]]},
         4999.5, {"mean": [[0.0, 0.0]], "logvar": [[-0.5, 0.0]]}),
    # sorted u = (0, 1e30), v = (0, 1): W1 = (0 + 1e30 - 1) / 2; sign(d) / n back through the ranks
    Case("samples of 1e30, p = 1", "wasserstein_distance", {"u": [1e30, 0.0], "v": [0.0, 1.0]},
         0.5e30, {"u": [0.5, 0.0], "v": [0.0, -0.5]}),
    # W2 = sqrt((0 + 1e60) / 2) (d^2 overflows float32); d / (n W2) = 1/sqrt 2 at the sample 1e30
    Case("samples of 1e30, p = 2", "wasserstein_distance", {"u": [1e30, 0.0], "v": [0.0, 1.0]},
         S5 * 1e30, {"u": [S5, 0.0], "v": [0.0, -S5]}, options={"p": 2}),
    Case("identical sets", "maximum_mean_discrepancy", {"x": [[0.0, 1.0], [2.0, 3.0]], "y": [[0.0, 1.0], [2.0, 3.0]]},
         0.0, {"x": [[0.0, 0.0], [0.0, 0.0]], "y": [[0.0, 0.0], [0.0, 0.0]]}),
    # x = ((1e30, 0), 0), y = ((0, 1e30), 0), beta 1: cross distances sqrt2 e30, 1e30, 1e30, 0 (times 2/4), within
    # each set 1e30 twice (times 1/4): D^2 = (1 + sqrt2 / 2 - 1) e30; gradients: sums of unit vectors (hand-summed)
    Case("samples of 1e30", "energy_distance", {"x": [[1e30, 0.0], [0.0, 0.0]], "y": [[0.0, 1e30], [0.0, 0.0]]},
         S5 * 1e30, {"x": [[0.5 * S5, -0.5 * S5], [0.5, -0.5]], "y": [[-0.5 * S5, 0.5 * S5], [-0.5, 0.5]]}),
]

# ----------------------------------------------------------------------------------------------- adversarial

ADVERSARIAL = [
    # sp(-r) + sp(f) = (0, 2e9); d/dr = -sigmoid(-r), d/df = sigmoid(f); mean over 2
    Case("logits of +-1e9", "vanilla_discriminator", {"real": [1e9, -1e9], "fake": [-1e9, 1e9]},
         1e9, {"real": [0.0, -0.5], "fake": [0.0, 0.5]}),
    Case("logits of +-1e9, non-saturating", "vanilla_generator", {"fake": [1e9, -1e9]},
         0.5e9, {"fake": [0.0, -0.5]}),
    # saturating: -sp(f) = (-1e9, 0), gradient -sigmoid(f)
    Case("logits of +-1e9, saturating", "vanilla_generator", {"fake": [1e9, -1e9]},
         -0.5e9, {"fake": [-0.5, 0.0]}, options={"non_saturating": False}),
    # |g| = 5e-30 (g^2 underflows float32): 10 (5e-30 - 1)^2 ~ 10; gradient 2 lambda (|g| - 1) g / |g| / N;
    # a zero sample: lambda t^2 = 10 with gradient 0
    Case("tiny and zero gradients", "gradient_penalty", {"gradients": [[3e-30, 4e-30], [0.0, 0.0]]},
         10.0, {"gradients": [[-6.0, -8.0], [0.0, 0.0]]}),
    # float16: g^2 = 9e-8 is below float16's normal range, |g| = 5e-4 is not; 10 (|g| - 1)^2, 20 (|g| - 1) g / |g|
    Case("float16 gradients of 3e-4, 4e-4", "gradient_penalty", {"gradients": [[3e-4, 4e-4]]},
         10 * (5e-4 - 1) ** 2, {"gradients": [[20 * (5e-4 - 1) * 0.6, 20 * (5e-4 - 1) * 0.8]]}, dtype="float16"),
    Case("scores of +-1e30", "wasserstein_discriminator", {"real": [1e30], "fake": [-1e30]},
         -2e30, {"real": [-1.0], "fake": [1.0]}),
    # max(0, 1 - r) + max(0, 1 + f) = (0, 2 + 2e9); mean over 2
    Case("scores of +-1e9", "hinge_discriminator", {"real": [1e9, -1e9], "fake": [-1e9, 1e9]},
         1e9 + 1.0, {"real": [0.0, -0.5], "fake": [0.0, 0.5]}),
    # 1/2 (r - 1)^2 + 1/2 f^2 = (4, 0); gradients (r - 1, f) / 2
    Case("bfloat16 scores", "least_squares_discriminator", {"real": [3.0, 1.0], "fake": [2.0, 0.0]},
         2.0, {"real": [1.0, 0.0], "fake": [1.0, 0.0]}, dtype="bfloat16"),
    Case("empty mask over scores of 1e30", "least_squares_generator", {"fake": [1e30, -1e30]},
         0.0, {"fake": [0.0, 0.0]}, where=[False, False]),
    Case("float16 scores of 6e4", "hinge_generator", {"fake": [6e4, -6e4]},
         0.0, {"fake": [-0.5, -0.5]}, dtype="float16"),
]

# ------------------------------------------------------------------------------------------------- embedding

_R1 = math.sqrt(np.float32(1e-12))  # PyTorch's float32 EPSILON inside the root for a zero vector
_SIG1 = sigmoid(-1.0)

EMBEDDING = [
    # cos = 0: 1 - cos = 1; d/dx1 = -(x2 / (r1 r2) - cos x1 / r1^2), r1 = sqrt(1e-12), r2 = 3; d/dx2 = 0
    Case("zero vector", "cosine_embedding",
         {"input1": [[0.0, 0.0, 0.0]], "input2": [[1.0, 2.0, 2.0]], "target": [1]}, 1.0,
         {"input1": [[-1 / (3 * _R1), -2 / (3 * _R1), -2 / (3 * _R1)]], "input2": [[0.0, 0.0, 0.0]]}),
    # float16: 1e-12 underflows, so the root is floored at float16's smallest normal number 2^-14 instead
    Case("float16 zero vector", "cosine_embedding",
         {"input1": [[0.0, 0.0, 0.0]], "input2": [[1.0, 2.0, 2.0]], "target": [1]}, 1.0,
         {"input1": [[-2 ** 14 / 3, -2 ** 15 / 3, -2 ** 15 / 3]], "input2": [[0.0, 0.0, 0.0]]}, dtype="float16"),
    Case("vectors of 1e30", "cosine_embedding", {"input1": [[1e30, 0.0]], "input2": [[1e30, 1e30]], "target": [1]},
         1 - S5, {"input1": [[0.0, -S5 * 1e-30]], "input2": [[-0.5 * S5 * 1e-30, 0.5 * S5 * 1e-30]]}),
    # d = 0: a dissimilar pair costs margin^2 = 1, a similar one 0; the zero subgradient
    Case("identical embeddings", "contrastive",
         {"embedding1": [[1.0, 2.0], [1.0, 2.0]], "embedding2": [[1.0, 2.0], [1.0, 2.0]], "label": [0, 1]},
         0.5, {"embedding1": [[0.0, 0.0], [0.0, 0.0]], "embedding2": [[0.0, 0.0], [0.0, 0.0]]}),
    # a dissimilar pair sqrt2 e30 apart is beyond the margin: 0 (d^2 overflows float32 but is not used)
    Case("dissimilar pair 1e30 apart", "contrastive",
         {"embedding1": [[1e30, 0.0]], "embedding2": [[0.0, 1e30]], "label": [0]},
         0.0, {"embedding1": [[0.0, 0.0]], "embedding2": [[0.0, 0.0]]}),
    # both distances eps sqrt3 (eps added to the difference): loss = margin; d d(u, v)/du = w / |w| = 1/sqrt3
    Case("identical vectors", "triplet_margin", {"anchor": [1.0, 1.0, 1.0], "positive": [1.0, 1.0, 1.0],
                                                 "negative": [1.0, 1.0, 1.0]},
         1.0, {"anchor": [0.0, 0.0, 0.0], "positive": [-3 ** -0.5] * 3, "negative": [3 ** -0.5] * 3}),
    # d(a, p) = sqrt2 e30, d(a, n) = 1e30: 1 + (sqrt2 - 1) e30; unit differences
    Case("vectors of 1e30", "triplet_margin", {"anchor": [1e30, 0.0], "positive": [0.0, 1e30], "negative": [0.0, 0.0]},
         1.0 + (math.sqrt(2) - 1) * 1e30, {"anchor": [S5 - 1, -S5], "positive": [-S5, S5], "negative": [1.0, 0.0]}),
    # both unit vectors coincide: distance 0, -log(eps) each, the zero subgradient
    Case("identical embeddings", "koleo", {"embeddings": [[1.0, 0.0], [1.0, 0.0]]},
         -math.log(1e-8), {"embeddings": [[0.0, 0.0], [0.0, 0.0]]}),
    # logits: each row's CE = logsumexp - diagonal = 1e4 - (-1e4); gradient (softmax - I) / (2 B t)
    Case("logits of +-1e4", "clip_contrastive",
         {"image": [[-1e4, 1e4], [1e4, -1e4]], "text": [[-1e4, 1e4], [1e4, -1e4]]}, 2e4,
         {"image": [[-0.25, 0.25], [0.25, -0.25]], "text": [[-0.25, 0.25], [0.25, -0.25]]},
         options={"from_logits": True, "temperature": 1.0}),
    # zero embeddings: all logits 0, log 2 both ways; the gradient dL v / t is 0 (v = 0)
    Case("zero vectors", "clip_contrastive", {"image": [[0.0, 0.0, 0.0], [0.0, 0.0, 0.0]],
                                              "text": [[0.0, 0.0, 0.0], [0.0, 0.0, 0.0]]},
         LN2, {"image": [[0.0, 0.0, 0.0], [0.0, 0.0, 0.0]], "text": [[0.0, 0.0, 0.0], [0.0, 0.0, 0.0]]}),
    # unit vectors e1, e2 at any scale: logits I / t with t = 1, each row's and column's CE sp(-1);
    # dL/dlogits = (softmax_rows - I + softmax_cols - I) / (2B) = (s/2) ((-1, 1), (1, -1)), s = sigmoid(-1);
    # du = dL v / t = dL, and through u = x / |x|: (du - u (u.du)) / 1e30 keeps the off-diagonal entries
    Case("embeddings of 1e30", "clip_contrastive", {"image": [[1e30, 0.0], [0.0, 1e30]],
                                                    "text": [[1e30, 0.0], [0.0, 1e30]]},
         softplus(-1.0), {"image": [[0.0, 0.5 * _SIG1 * 1e-30], [0.5 * _SIG1 * 1e-30, 0.0]],
                          "text": [[0.0, 0.5 * _SIG1 * 1e-30], [0.5 * _SIG1 * 1e-30, 0.0]]},
         options={"temperature": 1.0}),
    # zero vectors: every logit is the bias -10; (2 sp(10) + 2 sp(-10)) / B; the gradient carries a zero factor
    Case("zero vectors", "siglip", {"image": [[0.0, 0.0, 0.0], [0.0, 0.0, 0.0]],
                                    "text": [[0.0, 0.0, 0.0], [0.0, 0.0, 0.0]]},
         softplus(10.0) + softplus(-10.0),
         {"image": [[0.0, 0.0, 0.0], [0.0, 0.0, 0.0]], "text": [[0.0, 0.0, 0.0], [0.0, 0.0, 0.0]]}),
    # zero vectors: similarities 0, each positive pair sp(log 2 - 0) = log 3; du = (G + G^T) u / t = 0
    Case("zero vectors", "ntxent", {"embeddings": [[0.0, 0.0]] * 4, "labels": [0, 0, 1, 1]},
         math.log(3.0), {"embeddings": [[0.0, 0.0]] * 4}),
    # relevance order (0, 1, 2) with scores (-1e4, 0, 1e4): suffix logsumexps all 1e4, loss 2e4 + 1e4 + 0;
    # gradient sum_(i <= k) e^(s_k - c_i) - 1 = (-1, -1, 2). Its exponents are differences of float32 numbers
    # near 1e4, known to half an ulp (5e-4): the gradient is as exact as that (atol 2e-3)
    Case("scores of +-1e4", "listmle", {"scores": [[-1e4, 0.0, 1e4]], "relevance": [[2, 1, 0]]},
         3e4, {"scores": [[-1.0, -1.0, 2.0]]}, tol=(1e-5, 2e-3)),
    # a -inf relevance is an item to ignore: with a -inf score it adds 0 to value and gradient
    Case("ignored item, -inf score and relevance", "listnet", {"scores": [[0.0, -INF]], "relevance": [[0.0, -INF]]},
         0.0, {"scores": [[0.0, 0.0]]}),
    Case("scores of +-1e9", "margin_ranking", {"input1": [1e9], "input2": [-1e9], "target": [-1]},
         2e9, {"input1": [1.0], "input2": [-1.0]}),
    Case("distances of +-1e30", "hinge_embedding", {"input": [1e30, -1e30], "target": [1, -1]},
         1e30, {"input": [0.5, -0.5]}),
    Case("empty item mask", "ranking_softmax", {"scores": [[1e9, -1e9, 0.0]], "labels": [[1.0, 0.0, 0.0]],
                                               "mask": [[False, False, False]]},
         0.0, {"scores": [[0.0, 0.0, 0.0]]}),
    # the masked 1e30 item leaves the softmax: p = (1, 0) over the others, loss -log p_1 = 1e4; p - y, 0 if masked
    Case("masked item of 1e30", "ranking_softmax", {"scores": [[1e4, 0.0, 1e30]], "labels": [[0.0, 1.0, 0.0]],
                                                   "mask": [[True, True, False]]},
         1e4, {"scores": [[1.0, -1.0, 0.0]]}),
    # teacher softmax (1, 0); a -inf student logit where the teacher puts no mass adds 0
    Case("masked -inf student logit", "dino",
         {"student": [[0.0, -INF]], "teacher": [[1e4, -1e4]], "center": [0.0, 0.0]},
         0.0, {"student": [[0.0, 0.0]]}),
    # p = softmax((-1e4, 1e4) / 0.1) = (0, 1), q = (1, 0): -log p_0 = 2e5; (p - q) / 0.1
    Case("logits of +-1e4", "dino", {"student": [[-1e4, 1e4]], "teacher": [[1e4, -1e4]], "center": [0.0, 0.0]},
         2e5, {"student": [[-10.0, 10.0]]}),
    Case("no masked patch", "ibot_patch", {"student": [[[1e4, -1e4], [0.0, 0.0]]],
                                           "teacher": [[[-1e4, 1e4], [0.0, 0.0]]],
                                           "mask": [[False, False]], "center": [0.0, 0.0]},
         0.0, {"student": [[[0.0, 0.0], [0.0, 0.0]]]}),
    # cos = 0 <= margin: 1 - cos; d/du = -v^ / max(|u|, eps), eps = 1e-12; d/dv = -(u^ - cos v^) / |v| = 0
    Case("zero vector", "feature_alignment", {"student": [[0.0, 0.0]], "teacher": [[1.0, 0.0]]},
         1.0, {"student": [[-1e12, 0.0]], "teacher": [[0.0, 0.0]]}),
]

# ---------------------------------------------------------------------------------------------- segmentation

SEGMENTATION = [
    # (N, C, P) = (1, 2, 2): softmax saturates to the one-hot of the target, dice 1 per class
    Case("logits of +-1e9, right", "dice", {"input": [[[1e9, -1e9], [-1e9, 1e9]]], "target": [[0, 1]]},
         0.0, {"input": [[[0.0, 0.0], [0.0, 0.0]]]}),
    Case("float16 logits of +-1e4, right", "dice", {"input": [[[1e4, -1e4], [-1e4, 1e4]]], "target": [[0, 1]]},
         0.0, {"input": [[[0.0, 0.0], [0.0, 0.0]]]}, dtype="float16"),
    # every pixel wrong: I = 0, dice 0, loss 1 per class; the saturated softmax passes no gradient
    Case("logits of +-1e9, wrong", "dice", {"input": [[[1e9, -1e9], [-1e9, 1e9]]], "target": [[1, 0]]},
         1.0, {"input": [[[0.0, 0.0], [0.0, 0.0]]]}),
    # probabilities 0/1, class 1 absent from the target (loss 0, no gradient); class 0: I = 1, Sp = 1, St = 2,
    # dice 2/3, loss 1/3; d/dp = (-2 t + dice) / D with D = 3, halved by the mean over 2 classes
    Case("probabilities of 0 and 1, absent class", "dice", {"input": [[[1.0, 0.0], [0.0, 1.0]]], "target": [[0, 0]]},
         1 / 6, {"input": [[[-2 / 9, -2 / 9], [0.0, 0.0]]]}, options={"from_logits": False}),
    # class 1 absent: its weight is the largest present one, w = (1/4, 1/4) (not 1/0); GD = 2 sum w I / D with
    # D = sum w (Sp + St) = 1: GD = 1/2; d/dp_ic = (-2 t_ic + GD) w_c / D
    Case("probabilities of 0 and 1, absent class", "generalized_dice",
         {"input": [[[1.0, 0.0], [0.0, 1.0]]], "target": [[0, 0]]}, 0.5,
         {"input": [[[-0.375, -0.375], [0.125, 0.125]]]}, options={"from_logits": False}),
    Case("empty mask over classes", "dice", {"input": [[[1e9, -1e9], [-1e9, 1e9]]], "target": [[0, 1]]},
         0.0, {"input": [[[0.0, 0.0], [0.0, 0.0]]]}, where=[False, False]),
    Case("every pixel ignored", "jaccard", {"input": [[[1e9, -1e9], [-1e9, 1e9]]], "target": [[255, 255]]},
         0.0, {"input": [[[0.0, 0.0], [0.0, 0.0]]]}, options={"ignore_index": 255}),
    # binary, p = t = (1, 0): T = 1; d/dp = -t / D + T ((1 - a - b) t + a) / D with D = 1
    Case("perfect probabilities", "tversky", {"input": [[1.0, 0.0]], "target": [[1, 0]]},
         0.0, {"input": [[-0.5, 0.5]]}, options={"mode": "binary", "from_logits": False}),
    # (1 - T)^0.75 at T = 1: value 0 and, at that minimum, the zero gradient (not inf)
    Case("perfect probabilities", "focal_tversky", {"input": [[1.0, 0.0]], "target": [[1, 0]]},
         0.0, {"input": [[0.0, 0.0]]}, options={"mode": "binary", "from_logits": False}),
    # errors 1 - x (2y - 1) = (1 + 1e9, 1 + 2e9); sorted: the positive pixel first with Lovasz gradient (1, 0)
    Case("logits of 1e9 and -2e9, wrong", "lovasz_hinge", {"input": [[1e9, -2e9]], "target": [[0, 1]]},
         1.0 + 2e9, {"input": [[0.0, -1.0]]}),
    Case("logits of +-1e9, right", "lovasz_hinge", {"input": [[1e9, -1e9]], "target": [[1, 0]]},
         0.0, {"input": [[0.0, 0.0]]}),
    Case("logits of +-1e9, right", "lovasz_softmax", {"input": [[[1e9, -1e9], [-1e9, 1e9]]], "target": [[0, 1]]},
         0.0, {"input": [[[0.0, 0.0], [0.0, 0.0]]]}),
]

# -------------------------------------------------------------------------------------------------- sequence

_LOG_HALF = math.log(0.5)
_LOG_THIRD = math.log(1 / 3)

SEQUENCE = [
    # T = 1, target (1): the only alignment has probability 1 (blank masked at -inf): loss 0, gradient 0
    Case("masked -inf blank", "ctc", {"log_probs": [[[-INF, 0.0]]], "targets": [[1]], "input_lengths": [1],
                                      "target_lengths": [1]},
         0.0, {"log_probs": [[[0.0, 0.0]]]}),
    # T = 2, target (1), frame 1 has log-probabilities (0, -1e4): only "1 blank" survives (1/2 * 1), loss log 2;
    # gradient y - posterior: frame 0 (1/2, 1/2) - (0, 1), frame 1 (1, 0) - (1, 0)
    Case("log-probabilities of -1e4", "ctc", {"log_probs": [[[_LOG_HALF, _LOG_HALF]], [[0.0, -1e4]]], "targets": [[1]],
                                              "input_lengths": [2], "target_lengths": [1]},
         LN2, {"log_probs": [[[0.5, -0.5]], [[0.0, 0.0]]]}),
    # T = 2, target (1), log-probabilities (0, -1e9) in both frames: "1 blank" and "blank 1" each have e^(-1e9),
    # "1 1" e^(-2e9): loss 1e9 - log 2, posteriors (1/2, 1/2) in both frames, gradient (1, 0) - (1/2, 1/2)
    Case("log-probabilities of -1e9 on the only alignments", "ctc",
         {"log_probs": [[[0.0, -1e9]], [[0.0, -1e9]]], "targets": [[1]], "input_lengths": [2], "target_lengths": [1]},
         1e9 - LN2, {"log_probs": [[[0.5, -0.5]], [[0.5, -0.5]]]}),
    Case("float16 log-probabilities of -1e4", "ctc",
         {"log_probs": [[[_LOG_HALF, _LOG_HALF]], [[0.0, -1e4]]], "targets": [[1]], "input_lengths": [2],
          "target_lengths": [1]}, LN2, {"log_probs": [[[0.5, -0.5]], [[0.0, 0.0]]]}, dtype="float16"),
    # a target of 2 labels cannot fit T = 1: infinite, zeroed with zero_infinity
    Case("impossible alignment, zero_infinity", "ctc",
         {"log_probs": [[[_LOG_THIRD] * 3]], "targets": [[1, 2]], "input_lengths": [1], "target_lengths": [2]},
         0.0, {"log_probs": [[[0.0, 0.0, 0.0]]]}, options={"zero_infinity": True}),
    Case("empty mask over an impossible alignment", "ctc",
         {"log_probs": [[[_LOG_THIRD] * 3]], "targets": [[1, 2]], "input_lengths": [1], "target_lengths": [2]},
         0.0, {"log_probs": [[[0.0, 0.0, 0.0]]]}, where=[False]),
]

# ------------------------------------------------------------------------------------------------- detection


def _diou_far_apart():
    """b1 = (0, 0, 2, 2), b2 = (1e4, 0.5, 1e4 + 2, 1.5): no overlap (I = 0 and dI = 0), loss 1 + rho^2 / D.

    rho^2 = 1e8 (centres 1e4 apart in x), enclosing box cw = 1e4 + 2 (b2.x2 - b1.x1), ch = 2 (b1.y2 - b1.y1),
    D = cw^2 + ch^2 + eps; d/d = d rho^2 / D - rho^2 d c^2 / D^2.
    """
    cw, ch, rho2 = 1e4 + 2, 2.0, 1e8
    d = cw * cw + ch * ch + 1e-7
    k = rho2 / d ** 2
    b1 = [-1e4 / d + k * 2 * cw, k * 2 * ch, -1e4 / d, -k * 2 * ch]
    b2 = [1e4 / d, 0.0, 1e4 / d - k * 2 * cw, 0.0]
    return Case("boxes 1e4 apart", "diou", {"boxes1": [[0.0, 0.0, 2.0, 2.0]], "boxes2": [[1e4, 0.5, 1e4 + 2, 1.5]]},
                1.0 + rho2 / d, {"boxes1": [b1], "boxes2": [b2]})


def _ciou_zero_height():
    """b1 = (0, 5, 2, 5) (height 0), b2 = (-1, 0, 3, 2), above each other: I = 0 (and dI = 0), IoU = 0.

    DIoU = 1 + rho^2 / D with rho^2 = 16 (centres (1, 5), (1, 1)), c^2 = cw^2 + ch^2 = 4^2 + 5^2 (cw from b2's
    x-sides, ch = b1.y2 - b2.y1). v = 4/pi^2 (theta2 - theta1)^2 with theta = atan2(w, h): theta1 = pi/2 at
    h = 0 (finite), theta2 = atan(2); alpha = v / (1 + v + eps) is held constant. d theta/dw = h / (w^2 + h^2),
    d theta/dh = -w / (w^2 + h^2).
    """
    d = 41.0 + 1e-7
    k = 16.0 / d ** 2
    delta = math.atan2(4.0, 2.0) - math.pi / 2
    v = 4 / math.pi ** 2 * delta ** 2
    alpha = v / (1.0 + v + 1e-7)
    s = alpha * 8 / math.pi ** 2 * delta  # d(alpha v)/d theta2 = s, d/d theta1 = -s
    b1 = [0.0, 4 / d + s * -0.5, 0.0, 4 / d - k * 10 + s * 0.5]
    b2 = [-k * -8 + s * -0.1, -4 / d - k * -10 + s * 0.2, -k * 8 + s * 0.1, -4 / d + s * -0.2]
    return Case("zero-height box", "ciou", {"boxes1": [[0.0, 5.0, 2.0, 5.0]], "boxes2": [[-1.0, 0.0, 3.0, 2.0]]},
                1.0 + 16.0 / d + alpha * v, {"boxes1": [b1], "boxes2": [b2]})


DETECTION = [
    _ciou_zero_height(),
    _diou_far_apart(),
    # a point box inside (0, 0, 2, 2): I = 0, U = C = 4, loss 1; every derivative cancels (dU = dC on b2)
    Case("zero-area box inside another", "giou", {"boxes1": [[1.0, 1.0, 1.0, 1.0]], "boxes2": [[0.0, 0.0, 2.0, 2.0]]},
         1.0, {"boxes1": [[0.0, 0.0, 0.0, 0.0]], "boxes2": [[0.0, 0.0, 0.0, 0.0]]}),
    Case("empty mask", "giou", {"boxes1": [[0.0, 0.0, 1.0, 1.0]], "boxes2": [[1e4, 1e4, 1e4 + 1, 1e4 + 1]]},
         0.0, {"boxes1": [[0.0, 0.0, 0.0, 0.0]], "boxes2": [[0.0, 0.0, 0.0, 0.0]]}, where=[False]),
    # y = 0.25 between bins 0 and 1: -(0.75 log p_0 + 0.25 log p_1) = 0.25 * 2e4; p - (0.75, 0.25, 0)
    Case("logits of +-1e4", "distribution_focal", {"input": [[1e4, -1e4, -1e4]], "target": [0.25]},
         5000.0, {"input": [[0.25, -0.25, 0.0]]}),
    Case("float16 logits of +-1e4", "distribution_focal", {"input": [[1e4, -1e4]], "target": [0.5]},
         1e4, {"input": [[0.5, -0.5]]}, dtype="float16"),
]

# ------------------------------------------------------------------------------------------------ perceptual

PERCEPTUAL = [
    Case("identical features", "feature_reconstruction",
         {"features_real": {"a": [[1e4, -1e4]], "b": [[[1.0, 2.0], [3.0, 4.0]]]},
          "features_fake": {"a": [[1e4, -1e4]], "b": [[[1.0, 2.0], [3.0, 4.0]]]}},
         0.0, {"features_fake": {"a": [[0.0, 0.0]], "b": [[[0.0, 0.0], [0.0, 0.0]]]}}),
    # layer b weighs 0: its (2e30)^2 is never formed and its gradient is 0; layer a: mean((2, 0)^2) = 2,
    # gradient 2 (fake - real) / 2
    Case("zero-weight layer of 1e30", "feature_reconstruction",
         {"features_real": {"a": [[1.0, 2.0]], "b": [[1e30, -1e30]]},
          "features_fake": {"a": [[3.0, 2.0]], "b": [[-1e30, 1e30]]}},
         2.0, {"features_fake": {"a": [[2.0, 0.0]], "b": [[0.0, 0.0]]}},
         options={"layer_weights": {"a": 1.0, "b": 0.0}}),
    Case("bfloat16 past float16's range", "feature_reconstruction",
         {"features_real": {"a": [[0.0, 0.0]]}, "features_fake": {"a": [[256.0, -256.0]]}},
         65536.0, {"features_fake": {"a": [[256.0, -256.0]]}}, dtype="bfloat16"),
    # zero fake features: Gram 0 against the real Gram F^T F / P = ((5, 7), (7, 10)); loss sum(G^2) / C^2;
    # the gradient 4 F (G^ - G) / (C^2 P) carries F^ = 0
    Case("zero features", "style", {"features_real": {"a": [[[1.0, 2.0], [3.0, 4.0]]]},
                                    "features_fake": {"a": [[[0.0, 0.0], [0.0, 0.0]]]}},
         (25 + 49 + 49 + 100) / 4, {"features_fake": {"a": [[[0.0, 0.0], [0.0, 0.0]]]}}),
    Case("empty mask", "style", {"features_real": {"a": [[[1e4, 2.0], [3.0, 4.0]]]},
                                 "features_fake": {"a": [[[0.0, -1e4], [0.0, 0.0]]]}},
         0.0, {"features_fake": {"a": [[[0.0, 0.0], [0.0, 0.0]]]}}, where=[False]),
    # identical features: each fake position's own real position is at distance 0, the others at distances
    # 1/eps-scaled: the affinities are one-hot, every max is 1, loss -log 1 = 0, and the saturated softmax
    # passes no gradient
    Case("identical features", "contextual",
         {"features_real": {"a": [[[1.0, 0.0], [0.0, 1.0], [-1.0, -1.0]]]},
          "features_fake": {"a": [[[1.0, 0.0], [0.0, 1.0], [-1.0, -1.0]]]}},
         0.0, {"features_fake": {"a": [[[0.0, 0.0], [0.0, 0.0], [0.0, 0.0]]]}}),
]

TABLE = {
    "regression": REGRESSION,
    "classification": CLASSIFICATION,
    "probabilistic": PROBABILISTIC,
    "adversarial": ADVERSARIAL,
    "embedding": EMBEDDING,
    "segmentation": SEGMENTATION,
    "sequence": SEQUENCE,
    "detection": DETECTION,
    "perceptual": PERCEPTUAL,
}


# --------------------------------------------------------------------------------------------------- runner


def _runs_on(backend: str, dtype: str) -> bool:
    if backend == "numpy":
        return dtype != "bfloat16"
    return backend != "jax" or FULL or dtype in HALF


PARAMS = [pytest.param(c, b, id=f"{family}-{c.loss}-{c.what}-{c.dtype}-{b}".replace(" ", "_"))
          for family, cases in TABLE.items() for c in cases for b in BACKENDS if _runs_on(b, c.dtype)]


def _array(backend, spec, name, x, dtype):
    a = np.asarray(x)
    if name in spec.label_inputs and a.dtype.kind in "ib":
        return native(backend, a.astype(np.int64) if a.dtype.kind == "i" else a)
    return native(backend, a.astype(np.float64), dtype)


def _inputs(backend, c):
    spec = registry.spec(c.loss)
    out = {}
    for name, x in c.inputs.items():
        if name in spec.layer_inputs:
            out[name] = {key: _array(backend, spec, name, layer, c.dtype) for key, layer in x.items()}
        else:
            out[name] = _array(backend, spec, name, x, c.dtype)
    return out


def _check(what, actual, expected, dtype, rtol, atol):
    got = to_numpy(actual)
    assert dtype_name(actual) == dtype, f"{what}: dtype {dtype_name(actual)}, expected {dtype}"
    assert np.all(np.isfinite(got)), f"{what}: not finite: {got}"
    np.testing.assert_allclose(got, np.asarray(expected, dtype=np.float64), rtol=rtol, atol=atol, err_msg=what)


@pytest.mark.parametrize("c, backend", PARAMS)
def test_extreme_case(c, backend):
    if not installed(backend):
        pytest.skip(f"{backend} is not installed")
    spec = registry.spec(c.loss)
    assert set(c.grads) == set(spec.differentiable), "a case gives the gradient of every differentiable input"
    loss = mlo.get(c.loss, **c.options)
    inputs = _inputs(backend, c)
    where = None if c.where is None else native(backend, np.asarray(c.where, dtype=bool))
    rtol, atol = c.tol or TOLERANCES[c.dtype]
    with np.errstate(all="ignore"):
        value, grads = loss.value_and_grad(**inputs, where=where)
        plain = loss(**inputs, where=where)
    _check("value", value, c.value, c.dtype, rtol, atol)
    _check("value (value function)", plain, c.value, c.dtype, rtol, atol)
    for name, expected in c.grads.items():
        if name in spec.layer_inputs:
            assert set(grads[name]) == set(expected)
            for key, layer in expected.items():
                _check(f"gradient of {name}[{key!r}]", grads[name][key], layer, c.dtype, rtol, atol)
        else:
            _check(f"gradient of {name}", grads[name], expected, c.dtype, rtol, atol)


def test_every_family_has_its_extreme_cases():
    """A family added to the registry fails here until it has its own cases in TABLE."""
    assert set(TABLE) == set(mlo.families())
    for family, cases in TABLE.items():
        assert len(cases) >= 4, f"{family} has only {len(cases)} extreme cases"
        assert {mlo.get(c.loss).family for c in cases} == {family}
