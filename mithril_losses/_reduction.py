"""Reductions, weights and masks, with their own gradients, written once.

A reduction maps the unreduced loss ``L`` to its output and also returns the
pullback of that map: the cotangent of ``L`` given the output's cotangent
(1/N for a mean, the weights for a weighted sum). Masked-out elements are
replaced by 0 (so a NaN there cannot leak) and get a zero cotangent. A mean
over zero elements (or zero total weight) is 0 with a zero gradient.
"""

from __future__ import annotations

import math

from . import _numerics

REDUCTIONS = ("none", "mean", "sum")
ALL_REDUCTIONS = REDUCTIONS + ("batchmean",)
FILL_LIMIT = 1 << 14  # elements up to which a constant cotangent is a filled array rather than a broadcast view


def per_element(xp, w, loss_shape):
    """Weights/masks that fit NumPy broadcasting are used as they are; others are per sample."""
    fits = w.ndim <= len(loss_shape) and all(a in (1, b) for a, b in zip(reversed(w.shape), reversed(loss_shape)))
    return w if fits else xp.reshape(w, tuple(w.shape) + (1,) * (len(loss_shape) - w.ndim))


def reduce(xp, loss, *, reduction, weight=None, where=None, axis=None, weighted_mean="weights", mean_weights=None):
    """(reduced loss, pullback from the reduced loss's cotangent to ``loss``'s cotangent).

    The pullback takes an array of the reduced loss's shape, or a Python float (a constant cotangent).

    ``axis`` (a tuple of normalised axes or None for all) restricts "mean" and
    "sum" to those axes; "batchmean" divides the total by ``loss.shape[0]``.
    A weighted "mean" divides by the sum of the weights, or with
    ``weighted_mean="count"`` by the number of (unmasked) elements; a loss's
    own ``mean_weights`` (e.g. class weights of the targets, 0 where ignored)
    multiply what is counted.
    """
    shape = tuple(loss.shape)
    scale = None
    if weight is not None:
        scale = xp.astype(per_element(xp, weight, shape), loss.dtype)
    if where is not None:
        mask = per_element(xp, where, shape)
        loss = xp.where(mask, loss, 0.0)
        mask = xp.astype(mask, loss.dtype)
        scale = mask if scale is None else scale * mask
    else:
        mask = None
    scaled = loss if scale is None else loss * scale

    if reduction == "none":
        return scaled, lambda ct: _spread(xp, ct, scale, loss)

    axes = tuple(range(len(shape))) if axis is None or reduction == "batchmean" else axis
    total = xp.sum(scaled, axis=axes)
    if reduction == "sum":
        divisor = None
    elif reduction == "batchmean":
        divisor = float(shape[0]) if shape else 1.0
    else:
        counted = scale if weighted_mean == "weights" else mask
        if mean_weights is not None:
            # where counted is 0 (masked out), a non-finite weight of its own must not give 0 * inf
            counted = mean_weights if counted is None else \
                xp.where(counted != 0, mean_weights * counted, 0.0)
        divisor = _count(xp, counted, shape, axes)
    out = total if divisor is None else total / divisor

    def pullback(ct):
        if divisor is not None:  # divide, not /: PyTorch's float / tensor is two kernels (reciprocal, mul)
            ct = ct / divisor if isinstance(divisor, float) else xp.divide(ct, divisor)
        if not isinstance(ct, float):
            ct = xp.reshape(ct, tuple(1 if i in axes else n for i, n in enumerate(shape)))
        return _spread(xp, ct, scale, loss)

    return out, pullback


def _spread(xp, ct, scale, loss):
    """The cotangent of ``loss``: ``ct`` (broadcastable to it, or a Python float) times ``scale``, in its shape.

    A float cotangent (``value_and_grad``'s 1.0, divided by a mean's count) of a small loss becomes one filled
    array, cheaper than broadcasting a 0-d one; of a large loss, a broadcast 0-d array, which costs no pass over
    memory (and which ``_numerics.times_cotangent`` multiplies as a scalar).
    """
    ct = ct if scale is None else ct * scale
    if isinstance(ct, float):
        if math.prod(loss.shape) <= FILL_LIMIT:
            return xp.full_like(loss, ct)
        ct = _numerics.constant(xp, ct, loss)
    return ct if tuple(ct.shape) == tuple(loss.shape) else xp.broadcast_to(ct, tuple(loss.shape))


def _count(xp, scale, shape, axes):
    """Denominator of a mean: element count, or the weights' sum (0 becomes 1: 0/0 := 0)."""
    if scale is None:
        n = 1
        for a in axes:
            n *= shape[a]
        return float(max(n, 1))
    total = xp.sum(scale if tuple(scale.shape) == shape else xp.broadcast_to(scale, shape), axis=axes)
    return xp.where(total == 0, 1.0, total)
