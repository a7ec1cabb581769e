"""Stable primitives written once; the only place for backend fast paths."""

from __future__ import annotations

import math

LOG2 = math.log(2.0)
LN10 = math.log(10.0)


def softplus(xp, x):
    """log(1 + exp(x)) without overflow: logaddexp(x, 0)."""
    return xp.logaddexp(x, xp.zeros_like(x))


def log_cosh(xp, x):
    """log(cosh(x)) = |x| + log1p(exp(-2|x|)) - log 2, finite for any finite x."""
    a = xp.abs(x)
    return a + xp.log1p(xp.exp(-2.0 * a)) - LOG2


def xlogy(xp, x, y):
    """x * log(y) with 0 * log(0) = 0."""
    zero = x == 0
    return xp.where(zero, xp.zeros_like(x), x * xp.log(xp.where(zero, xp.ones_like(y), y)))


def safe_divide(xp, num, den):
    """num / den with 0 where den == 0."""
    zero = den == 0
    return xp.where(zero, xp.zeros_like(num), num / xp.where(zero, xp.ones_like(den), den))


def median_and_onehot(xp, x, axis):
    """Median of ``x`` along ``axis`` (kept as size 1) and d median / d x (1, or 1/2 for each of the two middles)."""
    n = x.shape[axis]
    order = xp.argsort(x, axis=axis)
    ranks = xp.argsort(order, axis=axis)
    lo, hi = (n - 1) // 2, n // 2
    weight = (xp.astype(ranks == lo, x.dtype) + xp.astype(ranks == hi, x.dtype)) * 0.5
    return xp.sum(x * weight, axis=axis, keepdims=True), weight
