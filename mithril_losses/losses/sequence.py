"""Sequence losses: connectionist temporal classification (CTC).

``ctc`` is PyTorch's ``ctc_loss``: log-probabilities ``(T, N, C)`` (or
unbatched ``(T, C)``), targets padded ``(N, S)`` or concatenated, per-sample
input and target lengths. The value is ``-log p(target | x)`` summed over all
alignments by the forward (alpha) recursion in log space; the gradient comes
from the forward-backward (alpha-beta) pass, with the time loop as the only
Python loop (vectorised over the batch and the extended label positions).
The engine adds reduction, weights and masks (PyTorch's "mean" divides each
loss by its target length first: ``mean_scale``).
"""

from __future__ import annotations

import math

import numpy as np

from .. import _numerics, _validation
from ..registry import LossSpec, Option, Reference, register
from ._common import integer

FAMILY = "sequence"
_NEG_INF = -math.inf


def _log_zero(xp, dtype):
    """alpha's log 0: the lowest finite number, so that autodiff of the value meets no logaddexp(-inf, -inf)
    (derivative NaN); x + log 0 rounds to log 0 (or below it: clipped), and logaddexp(x, log 0) = x."""
    return float(xp.finfo(dtype).min)


def _two_columns(xp, like):
    """(N, 2) of -inf for ``like`` (N, K), K >= 1: the padding that makes the s +- 1, 2 shifts slices."""
    return xp.full_like(xp.concat([like[:, :1], like[:, :1]], axis=1), _NEG_INF)


def _layout(xp, log_probs, targets, input_lengths, target_lengths, blank):
    """Batched views: log-probabilities (T, N, C), extended labels (N, 2W+1) (blank, l1, blank, l2, ..., blank),
    the skip mask (N, 2W+1), input and target lengths (N, 1)."""
    if log_probs.ndim == 2:  # unbatched (T, C), targets (S,), scalar lengths
        log_probs = xp.expand_dims(log_probs, axis=1)
        targets = xp.reshape(targets, (1, -1))
    input_lengths = xp.reshape(input_lengths, (-1, 1))
    target_lengths = xp.reshape(target_lengths, (-1, 1))
    frames, n = log_probs.shape[0], log_probs.shape[1]
    # a target longer than T has no alignment: only the first min(S, T) labels are ever read (the rest is inf)
    if targets.ndim == 1:  # concatenated: row n starts at the sum of the lengths before it
        total = targets.shape[0]
        width = min(total, frames)
        rows = _numerics.arange_like(xp, n, targets)
        earlier = xp.expand_dims(rows, axis=0) < xp.expand_dims(rows, axis=1)
        lengths = xp.reshape(target_lengths, (1, -1))
        offsets = xp.sum(xp.where(earlier, lengths, xp.zeros_like(lengths)), axis=1, keepdims=True)
        pos = offsets + xp.expand_dims(_numerics.arange_like(xp, width, targets), axis=0)
        pos = xp.clip(pos, min=0, max=max(total - 1, 0))
        labels = xp.reshape(xp.take(targets, xp.reshape(pos, (-1,)), axis=0), (n, width)) if width else \
            xp.reshape(targets[:0], (n, 0))  # no labels at all, on the targets' device
    else:
        width = min(targets.shape[1], frames)
        labels = targets[:, :width]
    s = xp.expand_dims(_numerics.arange_like(xp, width, targets), axis=0)
    labels = xp.where(s < target_lengths, labels, xp.full_like(labels, blank))  # padding may hold anything
    blanks = xp.full_like(labels, blank)
    last = xp.full_like(input_lengths, blank, dtype=labels.dtype)  # (N, 1), also when W = 0
    ext = xp.concat([xp.reshape(xp.stack([blanks, labels], axis=2), (n, 2 * width)), last], axis=1)
    ext = _numerics.as_index(xp, ext)
    before2 = xp.concat([xp.full_like(ext[:, :2], blank), ext[:, :-2]], axis=1)
    skip = (ext != blank) & (ext != before2)  # s -> s + 2 over a blank, unless the labels repeat
    return log_probs, ext, skip, input_lengths, target_lengths


def _forward(xp, log_probs, targets, input_lengths, target_lengths, blank):
    # PyTorch's gradient, exp(lp) - d(-log p)/dlp ... (see ctc_fused), is the gradient of the loss of
    # log_softmax(lp); the value is computed on log_softmax(lp) too (a no-op for log-probabilities), so that
    # value and gradient agree and equal PyTorch's on log-probabilities.
    log_probs, ext, skip, in_len, tg_len = _layout(xp, log_probs, targets, input_lengths, target_lengths, blank)
    frames, n, _ = log_probs.shape
    k = ext.shape[1]
    lp = _numerics.log_softmax(xp, log_probs, -1)
    zero = xp.zeros_like(ext, dtype=lp.dtype)
    never = xp.full_like(zero, _NEG_INF)
    # frames t < T_n (T, N, 1); the frames after emit nothing (-inf, also where they hold NaN)
    frame = xp.reshape(_numerics.arange_like(xp, frames, ext), (-1, 1, 1))
    in_len = xp.reshape(xp.clip(in_len, min=0, max=frames), (1, -1, 1))
    active = frame < in_len
    emit = xp.take_along_axis(lp, xp.broadcast_to(xp.expand_dims(ext, axis=0), (frames, n, k)), axis=2)
    emit = xp.where(active, emit, never)
    s = xp.expand_dims(_numerics.arange_like(xp, k, ext), axis=0)
    # alpha_{-1}: a virtual start in front of position 0, so that t = 0 is an ordinary step; alpha is kept behind
    # two -inf columns, so that alpha(s - 1) and alpha(s - 2) are slices
    lowest = _log_zero(xp, lp.dtype)
    dead = xp.full_like(zero, lowest)
    alphas, pad = [xp.where(s == 0, zero, dead)], _two_columns(xp, dead)
    for t in range(frames):  # alpha_t(s) = y_t(l'_s) * (alpha_{t-1}(s) + alpha_{t-1}(s-1) [+ alpha_{t-1}(s-2)])
        padded = xp.concat([pad, alphas[-1]], axis=1)
        two = xp.where(skip, padded[:, :-2], dead)
        step = emit[t, ...] + xp.logaddexp(xp.logaddexp(padded[:, 2:], padded[:, 1:-1]), two)
        alphas.append(xp.clip(step, min=lowest))
    alphas = xp.stack(alphas, axis=0)
    alpha = xp.take_along_axis(alphas, xp.broadcast_to(in_len, (1, n, k)), axis=0)[0, ...]  # alpha_{T_n-1}
    # log p = log(alpha_{T_n-1}(2L) + alpha_{T_n-1}(2L-1)); none of them exist for a target longer than S' = W
    last = 2 * tg_len
    fits = last <= k - 1
    end = xp.take_along_axis(alpha, xp.clip(last, min=0, max=k - 1), axis=1)
    before = xp.take_along_axis(alpha, xp.clip(last - 1, min=0, max=k - 1), axis=1)
    end = xp.where(fits, end, dead[:, :1])
    before = xp.where(fits & (tg_len > 0), before, dead[:, :1])
    log_p = xp.logaddexp(end, before)[:, 0]
    log_p = xp.where(log_p <= lowest, never[:, 0], log_p)  # NaN stays NaN
    # beta'_{T_n-1}: 0 at the two positions an alignment may end in, -inf at the others and at the other frames
    ends = (s == last) | ((s == last - 1) & (tg_len > 0))
    start = xp.where((frame == in_len - 1) & ends, zero, never)
    return lp, emit, ext, skip, active, log_p, alphas[1:, ...], start


def _finish(xp, log_p, log_probs, zero_infinity):
    nll = xp.maximum(-log_p, xp.zeros_like(log_p))  # p <= 1: only rounding could make it negative
    infinite = xp.isinf(nll)
    if zero_infinity:
        nll = xp.where(infinite, xp.zeros_like(nll), nll)
    return nll if log_probs.ndim == 3 else nll[0], infinite


def ctc_value(xp, log_probs, targets, input_lengths, target_lengths, *, blank, zero_infinity):
    """-log sum over the alignments a of the target (blanks between labels, labels repeated) of prod_t y_t(a_t)."""
    log_p = _forward(xp, log_probs, targets, input_lengths, target_lengths, blank)[5]
    return _finish(xp, log_p, log_probs, zero_infinity)[0]


def ctc_fused(xp, log_probs, targets, input_lengths, target_lengths, *, blank, zero_infinity):
    # With alpha_t(s) including y_t(l'_s) and beta'_t(s) the suffix after t (excluding it), every alignment
    # passes one s at each frame t < T_n:  p = sum_s alpha_t(s) beta'_t(s).  With
    # gamma_t(s) = alpha_t(s) beta'_t(s) / p,   d(-log p)/dlp_t(c) = -sum_{s: l'_s = c} gamma_t(s),
    # and through the log_softmax:  dl/dlp_t(c) = softmax(lp_t)_c sum_s gamma_t(s) - sum_{s: l'_s = c} gamma_t(s)
    # (sum_s gamma_t(s) = 1 for t < T_n, 0 after): PyTorch's exp(lp) - ... on log-probabilities.
    lp, emit, ext, skip, active, log_p, alphas, start = _forward(
        xp, log_probs, targets, input_lengths, target_lengths, blank)
    value, infinite = _finish(xp, log_p, log_probs, zero_infinity)

    def pullback(ct):
        gamma = _posteriors(xp, emit, skip, active, alphas, start) if lp.shape[0] else xp.zeros_like(emit)
        total = xp.sum(gamma, axis=2, keepdims=True)
        grad = _numerics.scatter_add_last(xp, xp.exp(lp) * total, ext, -gamma) * xp.reshape(ct, (1, -1, 1))
        # an impossible alignment: PyTorch's gradient is NaN on the frames t < T_n (0 with zero_infinity); a
        # sample whose cotangent is 0 (masked out, or weighted 0) gets 0, as any masked sample
        counted = infinite & (xp.reshape(ct, (-1,)) != 0)
        bad = active & xp.reshape(counted, (1, -1, 1))
        grad = xp.where(bad, xp.zeros_like(grad) if zero_infinity else xp.full_like(grad, math.nan), grad)
        # frames t >= T_n are never read: their gradient is 0 (PyTorch's) even where they hold NaN or inf
        grad = xp.where(active, grad, xp.zeros_like(grad))
        return {"log_probs": grad if log_probs.ndim == 3 else grad[:, 0, :]}

    return value, pullback


def _posteriors(xp, emit, skip, active, alphas, start):
    """gamma_t(s) = alpha_t(s) beta'_t(s) / p (T >= 1 frames), beta' by the backward recursion."""
    frames = emit.shape[0]
    skip_after = _shift_bool(xp, skip)
    pad, betas = _two_columns(xp, start[0, ...]), [start[frames - 1, ...]]
    for t in range(frames - 2, -1, -1):
        # beta'_t(s) = sum over s' in {s, s+1, s+2 (skip)} of y_{t+1}(l'_s') beta'_{t+1}(s'), plus the start at
        # t = T_n - 1 (where y_{t+1} = 0; skip_after is False where it starts); c is kept in front of two -inf
        # columns, so that c(s + 1) and c(s + 2) are slices
        c = xp.concat([emit[t + 1, ...] + betas[-1], pad], axis=1)
        two = xp.where(skip_after, c[:, 2:], start[t, ...])
        betas.append(xp.logaddexp(xp.logaddexp(c[:, :-2], c[:, 1:-1]), two))
    # normalised by each frame's own sum over s (p at every t < T_n), not by p: posteriors in [0, 1] summing to 1
    # even where float32 alpha and beta of 1e7 round by more than 1; a frame without alignments (p = 0, or
    # t >= T_n) gets 0, no log 0, no inf - inf
    joint = alphas + xp.stack(betas[::-1], axis=0)
    alive = xp.max(joint, axis=2, keepdims=True) > _log_zero(xp, joint.dtype)
    z, log_s = _numerics.shifted_logits(xp, xp.where(alive, joint, xp.zeros_like(joint)), 2)
    return xp.where(alive & active, xp.exp(z - log_s), xp.zeros_like(z))


def _shift_bool(xp, mask):
    """``mask`` (N, K) moved two places left, False filled in: skip_after(s) = skip(s + 2)."""
    return xp.concat([mask[:, 2:], xp.zeros_like(mask[:, :2])], axis=1)


def ctc_vjp(xp, cotangent, log_probs, targets, input_lengths, target_lengths, *, blank, zero_infinity):
    return ctc_fused(xp, log_probs, targets, input_lengths, target_lengths, blank=blank,
                     zero_infinity=zero_infinity)[1](cotangent)


def _ctc_mean_scale(xp, log_probs, targets, input_lengths, target_lengths, *, blank, zero_infinity):
    # PyTorch's "mean": the batch mean of loss_n / max(L_n, 1)
    return xp.astype(xp.maximum(target_lengths, xp.ones_like(target_lengths)), log_probs.dtype)


def _check_ctc(xp, inputs, options, concrete):
    lp, targets = inputs["log_probs"], inputs["targets"]
    in_len, tg_len = inputs["input_lengths"], inputs["target_lengths"]
    _validation.check_ndim_in("log_probs", lp, (2, 3), "(T, N, C), or (T, C) unbatched")
    frames, classes = lp.shape[0], lp.shape[-1]
    _validation.check_min_size("log_probs", classes, 1, "a number of classes (last axis)")
    blank = options["blank"]
    if blank >= classes:
        raise _validation.ctc_blank_out_of_range(blank, classes)
    _validation.check_labels("targets", targets, xp, classes, concrete=False)
    _validation.check_integer_array("input_lengths", in_len, xp, "frames per sample")
    _validation.check_integer_array("target_lengths", tg_len, xp, "labels per sample")
    if lp.ndim == 3:
        n = lp.shape[1]
        if not (targets.ndim == 1 or (targets.ndim == 2 and targets.shape[0] == n)):
            raise _validation.ctc_targets_shape(targets, n)
        _validation.check_shape("input_lengths", in_len, (n,), "one length per sample")
        _validation.check_shape("target_lengths", tg_len, (n,), "one length per sample")
    else:
        _validation.check_ndim_in("targets", targets, (1,), "(S,) for an unbatched (T, C) `log_probs`")
        _validation.check_shape("input_lengths", in_len, (), "a scalar for an unbatched (T, C) `log_probs`")
        _validation.check_shape("target_lengths", tg_len, (), "a scalar for an unbatched (T, C) `log_probs`")
    if not concrete:
        return
    _validation.check_integers_in("input_lengths", in_len, xp, 0, frames,
                                  f"in [0, {frames}] (the number of frames T of `log_probs`)")
    concatenated = lp.ndim == 3 and targets.ndim == 1
    width = targets.shape[-1]
    if concatenated:
        _validation.check_integers_in("target_lengths", tg_len, xp, 0, width, "non-negative")
        if int(xp.sum(tg_len)) != width:
            raise _validation.ctc_concatenated_length(width, int(xp.sum(tg_len)))
        used = None
    else:
        _validation.check_integers_in("target_lengths", tg_len, xp, 0, width,
                                      f"in [0, {width}] (the target width S of `targets`)")
        pos = _numerics.arange_like(xp, width, targets)
        used = pos < xp.reshape(tg_len, (-1, 1)) if lp.ndim == 3 else pos < tg_len
    _validation.check_integers_in("targets", targets, xp, 0, classes - 1,
                                  f"class indices in [0, {classes}) within the target lengths", where=used)
    blank_used = targets == blank if used is None else (targets == blank) & used
    if bool(xp.any(blank_used)):
        raise _validation.ctc_target_is_blank(blank)


def _torch_ctc(torch, inputs, options, reduction, weight=None):
    if weight is not None:
        raise TypeError("torch.nn.functional.ctc_loss takes no per-sample weight")
    return torch.nn.functional.ctc_loss(
        inputs["log_probs"], inputs["targets"], inputs["input_lengths"], inputs["target_lengths"],
        blank=options["blank"], reduction=reduction, zero_infinity=options["zero_infinity"])


def _sample_ctc(rng, shape, options):
    """Log-softmax outputs (T = 10, N, C), targets of up to 3 labels (one with a repeat), padded or concatenated."""
    shape = tuple(shape)
    n, classes = (shape[-2] if len(shape) > 1 else 1), max(shape[-1], 3)
    frames, blank = 10, options.get("blank", 0)
    x = rng.normal(0.0, 1.5, (frames, n, classes))
    log_probs = x - np.log(np.sum(np.exp(x), axis=2, keepdims=True))
    lengths = rng.integers(0, 4, n)
    lengths[0] = 3
    in_len = rng.integers(frames - 3, frames + 1, n)
    in_len[0] = frames
    labels = rng.integers(0, classes - 1, (n, 4))
    labels = labels + (labels >= blank)  # never the blank
    labels[0, 1] = labels[0, 0]  # a repeat: needs a blank between
    if options.get("zero_infinity") and n > 1:
        in_len[-1], lengths[-1] = 2, 3  # impossible: 0 with a zero gradient
    if len(shape) == 3 or rng.random() < 0.5:
        targets = np.concatenate([labels[i, :lengths[i]] for i in range(n)])
    else:
        padding = rng.integers(0, classes, labels.shape)  # ignored past each length, blanks included
        targets = np.where(np.arange(4) < lengths[:, None], labels, padding)
    return {"log_probs": log_probs, "targets": targets.astype(np.int64),
            "input_lengths": in_len.astype(np.int64), "target_lengths": lengths.astype(np.int64)}


def _check_zero_infinity(name, value):
    _validation.check_bool(name, value)


register(LossSpec(
    name="ctc", family=FAMILY,
    summary="Connectionist temporal classification (PyTorch's ctc_loss), with a forward-backward gradient.",
    inputs=("log_probs", "targets", "input_lengths", "target_lengths"), differentiable=("log_probs",),
    label_inputs=("targets", "input_lengths", "target_lengths"), same_shape=(),
    value=ctc_value, vjp=ctc_vjp, fused=ctc_fused, validate=_check_ctc,
    domains={"targets": "[0, C)", "input_lengths": "[0, T]", "target_lengths": "[0, S]"},
    output_shape=lambda shapes, options: tuple(shapes["log_probs"][1:2]) if len(shapes["log_probs"]) == 3 else (),
    mean_scale=_ctc_mean_scale,
    options=(Option("blank", 0, "Class index of the blank (an integer in [0, C)).", integer(low=0)),
             Option("zero_infinity", False, "Impossible alignments (infinite losses) give 0 and a zero gradient.",
                    _check_zero_infinity)),
    formula=(r"\ell = -\log \textstyle\sum_{a \in \mathcal{B}^{-1}(y)} \prod_{t < T_n} \hat y_{t, a_t},\ "
             r"\hat y = \operatorname{softmax}(\text{log\_probs})"),
    gradient=(r"\partial\ell/\partial\,\text{lp}_{t,c} = \hat y_{t,c} - \textstyle\sum_{s: l'_s = c} "
              r"\alpha_t(s)\beta'_t(s)/p\ \ (t < T_n;\ 0\ \text{after})"),
    sample=_sample_ctc,
    aliases=("ctc_loss",),
    functional=("ctc_loss",),
    references={"torch": Reference("torch.nn.functional.ctc_loss", _torch_ctc)},
    option_cases=({}, {"blank": 2}, {"zero_infinity": True}),
    literature=("Graves et al., Connectionist Temporal Classification (ICML 2006); torch.nn.functional.ctc_loss",),
    notes=("`log_probs` (T, N, C) or unbatched (T, C) are log-probabilities (log_softmax outputs); `targets` are "
           "padded (N, S) (entries past a target's length are ignored) or concatenated 1-D (sum of "
           "`target_lengths`), or (S,) unbatched; `input_lengths` and `target_lengths` are integer (N,) (scalars "
           "unbatched). The reductions are PyTorch's: \"mean\" is the batch mean of loss / max(target length, 1). "
           "The gradient is PyTorch's, exp(lp) - sum_s alpha beta / p on the frames t < T_n and 0 after, which is "
           "the gradient of the loss of log_softmax(log_probs); the value is computed on log_softmax(log_probs) "
           "as well, so value and gradient agree (a no-op for log-probabilities; inputs that are not normalised "
           "are treated as logits, where PyTorch's value and gradient disagree). The alignment posteriors are "
           "normalised frame by frame, so float32 gradients stay exact for log-probabilities down to -1e9. An "
           "impossible alignment (a target "
           "too long for its input) gives +inf and, as PyTorch, a NaN gradient on its frames; with "
           "`zero_infinity=True` 0 and a zero gradient (so does a sample masked out by `where` or weighted 0). "
           "The loss is never negative. Targets may not contain the "
           "blank within their lengths, and lengths may not exceed T or S (ValueError)."),
))
