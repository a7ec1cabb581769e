"""What is benchmarked: each hot loss, its inputs, its sizes and each framework's own formulation of it.

A :class:`Case` names a registered loss (with options) and how to draw its inputs for a size. Its references
are the frameworks' own losses written as ``f(**inputs) -> scalar`` on that framework's arrays, reduced the way
our loss reduces; the benchmark differentiates them with the framework's autodiff (``backward()``,
``jax.value_and_grad``, ``mx.value_and_grad``) with respect to the same inputs that ``loss.differentiable``
names. ``raw`` is the same formula with its gradient written directly in the backend's operators, for the
per-call overhead rows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

PER_CALL_ELEMENTS = 1000


@dataclass(frozen=True)
class Case:
    """One benchmarked loss: the registered loss, its inputs and sizes, and the frameworks' formulations."""

    key: str  # the row label; several cases may share one registered loss (cross entropy on indices/probabilities)
    loss: str
    make: Callable  # (shape, dtype, rng) -> {input name: NumPy array}, in the loss's input order
    sizes: tuple  # the full run's sizes; the first one is the "main" size the targets read
    quick_sizes: tuple
    options: dict = field(default_factory=dict)
    torch: tuple = ()  # ((label, builder(torch) -> f), ...); the first one is also compiled
    jax: tuple = ()  # ((label, builder(jax, jnp, optax) -> f),)
    mlx: tuple = ()  # ((label, builder(mx, nn) -> f),)
    raw: dict = field(default_factory=dict)  # backend -> builder(n) -> f(**inputs) -> (value, {name: grad})
    rank: int | None = 2  # the number of axes a size has (None: any)
    reps_scale: float = 1.0  # fewer repetitions for a case whose one call takes seconds


# --------------------------------------------------------------------------- inputs


def _normal(rng, shape, dtype):
    return rng.standard_normal(shape).astype(dtype)


def _softmax(z, axis=-1):
    e = np.exp(z - z.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def _pair(shape, dtype, rng):
    return {"input": _normal(rng, shape, dtype), "target": _normal(rng, shape, dtype)}


def _class_indices(shape, dtype, rng):
    """Logits (N, C) and class indices (N,)."""
    return {"input": _normal(rng, shape, dtype), "target": rng.integers(0, shape[1], shape[0])}


def _class_probabilities(shape, dtype, rng):
    """Logits (N, C) and target probabilities (N, C)."""
    return {"input": _normal(rng, shape, dtype), "target": _softmax(rng.standard_normal(shape)).astype(dtype)}


def _binary(shape, dtype, rng):
    return {"input": _normal(rng, shape, dtype), "target": (rng.random(shape) < 0.5).astype(dtype)}


def _log_probabilities(shape, dtype, rng):
    """Log-probabilities (N, C) and target probabilities (N, C), as ``kl_div`` takes them."""
    return {"input": np.log(_softmax(rng.standard_normal(shape))).astype(dtype),
            "target": _softmax(rng.standard_normal(shape)).astype(dtype)}


def _triplet(shape, dtype, rng):
    return {name: _normal(rng, shape, dtype) for name in ("anchor", "positive", "negative")}


def _ctc(shape, dtype, rng):
    """Log-softmax (T, N, C); targets of T/4 to T/3 labels (padded), every input of full length T."""
    steps, batch, classes = shape
    longest = max(steps // 3, 1)
    log_probs = np.log(_softmax(rng.standard_normal(shape)))
    return {"log_probs": log_probs.astype(dtype), "targets": rng.integers(1, classes, (batch, longest)),
            "input_lengths": np.full(batch, steps), "target_lengths": rng.integers(steps // 4, longest + 1, batch)}


def _linear(shape, dtype, rng):
    """Hidden states (N, H), a classifier weight (V, H) and class indices (N,)."""
    n, hidden, vocab = shape
    return {"input": _normal(rng, (n, hidden), dtype),
            "linear_weight": (rng.standard_normal((vocab, hidden)) / np.sqrt(hidden)).astype(dtype),
            "target": rng.integers(0, vocab, n)}


# --------------------------------------------------------------------------- references


def _focal(sigmoid, bce_none, input, target, *, alpha, gamma):
    """Sigmoid focal loss (Lin et al., 2017), torchvision's formula: alpha_t (1 - p_t)^gamma BCE(x, t), mean."""
    p = sigmoid(input)
    p_t = p * target + (1 - p) * (1 - target)
    alpha_t = alpha * target + (1 - alpha) * (1 - target)
    return (alpha_t * (1 - p_t) ** gamma * bce_none(input, target)).mean()


def _mse_raw(n):
    """mean((x - y)^2) on ``n`` elements and its gradients, 2 (x - y) / n for x and the negative for y."""
    def f(input, target):
        d = input - target
        g = d * (2.0 / n)
        return (d * d).mean(), {"input": g, "target": -g}
    return f


# Cross entropy on class indices, per backend: mean_i(logsumexp(x_i) - x_i[t_i]), gradient (softmax(x) - onehot(t)) / N.


def _numpy_ce_raw(n):
    def f(input, target):
        shifted = input - input.max(axis=1, keepdims=True)
        e = np.exp(shifted)
        s = e.sum(axis=1, keepdims=True)
        rows = np.arange(input.shape[0])
        g = e / s
        g[rows, target] -= 1
        return (np.log(s[:, 0]) - shifted[rows, target]).mean(), {"input": g / input.shape[0]}
    return f


def _torch_ce_raw(n):
    import torch

    def f(input, target):
        value = (torch.logsumexp(input, 1) - input.gather(1, target[:, None])[:, 0]).mean()
        g = torch.softmax(input, 1) - torch.nn.functional.one_hot(target, input.shape[1])
        return value, {"input": g / input.shape[0]}
    return f


def _jax_ce_raw(n):
    import jax
    import jax.numpy as jnp

    def f(input, target):
        value = (jax.nn.logsumexp(input, axis=1) - jnp.take_along_axis(input, target[:, None], 1)[:, 0]).mean()
        g = jax.nn.softmax(input, axis=1) - jax.nn.one_hot(target, input.shape[1], dtype=input.dtype)
        return value, {"input": g / input.shape[0]}
    return f


def _mlx_ce_raw(n):
    import mlx.core as mx

    def f(input, target):
        value = (mx.logsumexp(input, axis=1) - mx.take_along_axis(input, target[:, None], 1)[:, 0]).mean()
        g = mx.softmax(input, axis=1) - (mx.arange(input.shape[1])[None, :] == target[:, None])
        return value, {"input": g / input.shape[0]}
    return f


_RAW_MSE = dict.fromkeys(("numpy", "torch", "jax", "mlx"), _mse_raw)
_RAW_CE = {"numpy": _numpy_ce_raw, "torch": _torch_ce_raw, "jax": _jax_ce_raw, "mlx": _mlx_ce_raw}

_MAIN, _VOCAB, _PER_CALL_CE = (4096, 1000), (256, 32000), (1, PER_CALL_ELEMENTS)
_QUICK = ((1024, 1000),)  # --quick: a quarter of the main size, except for the losses the targets read

CASES = (
    Case("cross_entropy", "cross_entropy", _class_indices, (_MAIN, _VOCAB, _PER_CALL_CE), (_MAIN, _PER_CALL_CE),
         torch=(("F.cross_entropy", lambda torch: torch.nn.functional.cross_entropy),),
         jax=(("optax softmax_cross_entropy_with_integer_labels",
               lambda jax, jnp, optax: lambda input, target:
               optax.losses.softmax_cross_entropy_with_integer_labels(input, target).mean()),),
         mlx=(("nn.losses.cross_entropy",
               lambda mx, nn: lambda input, target: nn.losses.cross_entropy(input, target, reduction="mean")),),
         raw=_RAW_CE),
    Case("cross_entropy[probs]", "cross_entropy", _class_probabilities, (_MAIN, _VOCAB), _QUICK,
         torch=(("F.cross_entropy", lambda torch: torch.nn.functional.cross_entropy),),
         jax=(("optax softmax_cross_entropy", lambda jax, jnp, optax: lambda input, target:
               optax.losses.softmax_cross_entropy(input, target).mean()),),
         mlx=(("nn.losses.cross_entropy",
               lambda mx, nn: lambda input, target: nn.losses.cross_entropy(input, target, reduction="mean")),)),
    Case("binary_cross_entropy_with_logits", "binary_cross_entropy_with_logits", _binary, (_MAIN, (1000,)),
         _QUICK, rank=None,
         torch=(("F.binary_cross_entropy_with_logits",
                 lambda torch: torch.nn.functional.binary_cross_entropy_with_logits),),
         jax=(("optax sigmoid_binary_cross_entropy", lambda jax, jnp, optax: lambda input, target:
               optax.losses.sigmoid_binary_cross_entropy(input, target).mean()),),
         mlx=(("nn.losses.binary_cross_entropy(with_logits=True)", lambda mx, nn: lambda input, target:
               nn.losses.binary_cross_entropy(input, target, with_logits=True, reduction="mean")),)),
    Case("focal", "focal", _binary, (_MAIN, (1000,)), _QUICK, rank=None, options={"gamma": 2.0, "alpha": 0.25},
         torch=(("torchvision's sigmoid focal formula in torch", lambda torch: lambda input, target: _focal(
             torch.sigmoid, lambda x, t: torch.nn.functional.binary_cross_entropy_with_logits(x, t, reduction="none"),
             input, target, alpha=0.25, gamma=2.0)),),
         jax=(("optax sigmoid_focal_loss", lambda jax, jnp, optax: lambda input, target:
               optax.losses.sigmoid_focal_loss(input, target, alpha=0.25, gamma=2.0).mean()),),
         mlx=(("the sigmoid focal formula in mx", lambda mx, nn: lambda input, target: _focal(
             mx.sigmoid, lambda x, t: nn.losses.binary_cross_entropy(x, t, with_logits=True, reduction="none"),
             input, target, alpha=0.25, gamma=2.0)),)),
    Case("mse", "mse", _pair, (_MAIN, (PER_CALL_ELEMENTS,)), (_MAIN, (PER_CALL_ELEMENTS,)), rank=None,
         torch=(("F.mse_loss", lambda torch: torch.nn.functional.mse_loss),),
         jax=(("optax squared_error", lambda jax, jnp, optax: lambda input, target:
               optax.losses.squared_error(input, target).mean()),),
         mlx=(("nn.losses.mse_loss",
               lambda mx, nn: lambda input, target: nn.losses.mse_loss(input, target, reduction="mean")),),
         raw=_RAW_MSE),
    Case("l1", "l1", _pair, (_MAIN, (1000,)), _QUICK, rank=None,
         torch=(("F.l1_loss", lambda torch: torch.nn.functional.l1_loss),),
         jax=(("jnp.abs(x - y).mean()", lambda jax, jnp, optax: lambda input, target:
               jnp.abs(input - target).mean()),),
         mlx=(("nn.losses.l1_loss",
               lambda mx, nn: lambda input, target: nn.losses.l1_loss(input, target, reduction="mean")),)),
    Case("huber", "huber", _pair, (_MAIN, (1000,)), _QUICK, rank=None, options={"delta": 1.0},
         torch=(("F.huber_loss", lambda torch: torch.nn.functional.huber_loss),),
         jax=(("optax huber_loss", lambda jax, jnp, optax: lambda input, target:
               optax.losses.huber_loss(input, target, delta=1.0).mean()),),
         mlx=(("nn.losses.huber_loss", lambda mx, nn: lambda input, target:
               nn.losses.huber_loss(input, target, delta=1.0, reduction="mean")),)),
    Case("kl_div", "kl_div", _log_probabilities, (_MAIN,), _QUICK, options={"reduction": "batchmean"},
         torch=(("F.kl_div(batchmean)", lambda torch: lambda input, target:
                 torch.nn.functional.kl_div(input, target, reduction="batchmean")),),
         jax=(("optax kl_divergence", lambda jax, jnp, optax: lambda input, target:
               optax.losses.kl_divergence(input, target).mean()),),
         mlx=(("sum(t (log t - x)) in mx", lambda mx, nn: lambda input, target:
               (target * (mx.log(target) - input)).sum(axis=-1).mean()),)),
    Case("triplet_margin", "triplet_margin", _triplet, ((4096, 256),), ((1024, 256),),
         torch=(("F.triplet_margin_loss", lambda torch: torch.nn.functional.triplet_margin_loss),),
         jax=(("optax triplet_margin_loss", lambda jax, jnp, optax: lambda anchor, positive, negative:
               optax.losses.triplet_margin_loss(anchor, positive, negative).mean()),),
         mlx=(("nn.losses.triplet_loss", lambda mx, nn: lambda anchor, positive, negative:
               nn.losses.triplet_loss(anchor, positive, negative, reduction="mean")),)),
    Case("ctc", "ctc", _ctc, ((200, 32, 30), (50, 4, 10)), ((50, 4, 10),),
         # no JAX row: our CTC's loop over the T frames is unrolled under jax.jit, whose compile takes minutes
         torch=(("F.ctc_loss", lambda torch: torch.nn.functional.ctc_loss),),
         rank=3, reps_scale=0.5),
    Case("linear_cross_entropy", "linear_cross_entropy", _linear, ((4096, 1024, 32000),), ((512, 128, 8192),),
         torch=(("naive F.linear + F.cross_entropy", lambda torch: lambda input, linear_weight, target:
                 torch.nn.functional.cross_entropy(torch.nn.functional.linear(input, linear_weight), target)),
                ("F.linear_cross_entropy(options=LinearCrossEntropyOptions())",
                 lambda torch: lambda input, linear_weight, target: torch.nn.functional.linear_cross_entropy(
                     input, linear_weight, target, options=torch.nn.LinearCrossEntropyOptions()))),
         jax=(("naive matmul + optax softmax_cross_entropy_with_integer_labels",
               lambda jax, jnp, optax: lambda input, linear_weight, target:
               optax.losses.softmax_cross_entropy_with_integer_labels(input @ linear_weight.T, target).mean()),),
         rank=3, reps_scale=0.25),  # no MLX reference: MLX's CPU matmul takes minutes at these sizes
)

CASES_BY_KEY = {c.key: c for c in CASES}
# torch.compile with inductor takes ~10 s per function on a small CPU machine: --quick compiles one loss
QUICK_TORCH_COMPILE = ("cross_entropy",)


def shape_elements(shape) -> int:
    return int(np.prod(shape))
