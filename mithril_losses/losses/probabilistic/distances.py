"""Distances between samples and between vectors: Wasserstein, MMD, energy distance, cosine similarity.

Each loss is a value function (unreduced: one value per pair of sample sets
or of vectors) and its hand-derived vjp side by side. Sample-set losses take
``x`` of shape ``(..., n, d)`` and ``y`` of shape ``(..., m, d)`` (leading
dimensions are a batch; the output has shape ``(...)``), and their gradients
are written with matrix products over the (n, m) pair weights, never with a
loop over samples. The engine adds reduction, weights and masks.
"""

from __future__ import annotations

import math

import numpy as np

from ... import _numerics, _validation
from ...registry import LossSpec, Option, Reference, register
from .._common import axis_option, integer, number, number_or_numbers

FAMILY = "probabilistic"


def _choice(*choices):
    def check(name, value):
        _validation.check_choice(name, value, choices)
        return value
    return check


def _int_choice(*choices):
    def check(name, value):
        _validation.check_number(name, value, integer=True)
        _validation.check_choice(name, value, choices)
        return int(value)
    return check


def _expand(xp, v, axis):
    return xp.expand_dims(v, axis=axis)


def _sample_set_shape(shapes, options):
    return shapes["x"][:-2]


def _check_sample_sets(xp, inputs, options, concrete):
    x, y = inputs["x"], inputs["y"]
    for name, s in (("x", x), ("y", y)):
        _validation.check_ndim(name, s, at_least=2)
        _validation.check_min_size(name, s.shape[-2], 1, "a number of samples (axis -2)")
        _validation.check_min_size(name, s.shape[-1], 1, "a feature size (last axis)")
    _validation.check_sample_sets("x", x, "y", y)


def _sample_sets(rng, shape, options):
    """x of ``shape`` (..., n, d), y of (..., n + 1, d): two overlapping, different Gaussians."""
    shape = tuple(shape) if len(shape) >= 2 else (1,) + tuple(shape)
    y_shape = shape[:-2] + (shape[-2] + 1, shape[-1])
    return {"x": rng.normal(0.0, 0.7, shape), "y": rng.normal(0.3, 0.9, y_shape)}


# --------------------------------------------------------------------------- wasserstein_distance


def _wasserstein_value_from_sorted(xp, d, p, axis):
    if p == 1:
        return xp.mean(xp.abs(d), axis=axis)
    # sqrt(mean d^2) as |d|_2 / sqrt(n), the norm scaled so that d^2 does not overflow (float32 samples of 1e30)
    return _numerics.l2_norm(xp, d, (axis % d.ndim,)) / math.sqrt(d.shape[axis])


def wasserstein_distance_value(xp, u, v, *, p, axis):
    """W_p = (mean_i |u_(i) - v_(i)|^p)^(1/p) along ``axis``, u_(i) the i-th smallest sample."""
    d = xp.sort(u, axis=axis) - xp.sort(v, axis=axis)
    return _wasserstein_value_from_sorted(xp, d, p, axis)


def wasserstein_distance_fused(xp, u, v, *, p, axis):
    order_u, order_v = xp.argsort(u, axis=axis), xp.argsort(v, axis=axis)
    d = xp.take_along_axis(u, order_u, axis=axis) - xp.take_along_axis(v, order_v, axis=axis)
    value = _wasserstein_value_from_sorted(xp, d, p, axis)
    n = u.shape[axis]

    def pullback(ct):
        # dW/d(sorted u)_i = sign(d_i) / n for p = 1, d_i / (n W) for p = 2 (0 at W = 0);
        # the sorted positions go back to the samples through the ranks (inverse permutation)
        ct = _expand(xp, ct, axis)
        if p == 1:
            g = ct * _numerics.sign(xp, d) / n
        else:
            g = ct * _numerics.safe_divide(xp, d, n * _expand(xp, value, axis))
        rank_u, rank_v = xp.argsort(order_u, axis=axis), xp.argsort(order_v, axis=axis)
        return {"u": xp.take_along_axis(g, rank_u, axis=axis), "v": -xp.take_along_axis(g, rank_v, axis=axis)}

    return value, pullback


def wasserstein_distance_vjp(xp, cotangent, u, v, *, p, axis):
    return wasserstein_distance_fused(xp, u, v, p=p, axis=axis)[1](cotangent)


def _check_wasserstein(xp, inputs, options, concrete):
    u, v = inputs["u"], inputs["v"]
    _validation.check_ndim("u", u, at_least=1)
    axis = _validation.check_axis("axis", options["axis"], u.ndim)[0]
    _validation.check_min_size("u", u.shape[axis], 1, f"a number of samples (axis {options['axis']})")
    _validation.check_equal_sample_counts("u", u, "v", v, options["axis"])


def _wasserstein_shape(shapes, options):
    shape = shapes["u"]
    axis = options["axis"] % len(shape)
    return tuple(n for i, n in enumerate(shape) if i != axis)


def _sample_wasserstein(rng, shape, options):
    # sorted samples at least 0.5 apart, v's order statistics 0.05..0.2 above or below u's: no ties, no
    # kink of |d| and the same sort order under the finite-difference steps; then shuffled independently
    axis = options["axis"] % len(shape)
    moved = tuple(n for i, n in enumerate(shape) if i != axis) + (shape[axis],)
    su = rng.uniform(-2.0, 0.0, moved[:-1] + (1,)) + rng.uniform(0.5, 1.0, moved).cumsum(axis=-1)
    sv = su + rng.choice([-1.0, 1.0], moved) * rng.uniform(0.05, 0.2, moved)

    def shuffled(a):
        return np.moveaxis(rng.permuted(a, axis=-1), -1, axis)

    return {"u": shuffled(su), "v": shuffled(sv)}


register(LossSpec(
    name="wasserstein_distance", family=FAMILY,
    summary="1-D Wasserstein distance W_1 or W_2 between two sample sets of equal size (via sorting).",
    inputs=("u", "v"), differentiable=("u", "v"), same_shape=(),
    value=wasserstein_distance_value, vjp=wasserstein_distance_vjp, fused=wasserstein_distance_fused,
    validate=_check_wasserstein, output_shape=_wasserstein_shape,
    options=(Option("p", 1, "Order of the distance: 1 (earth mover's) or 2.", _int_choice(1, 2)),
             Option("axis", -1, "The sample axis (one int); the output has the shape without it.", integer())),
    formula=r"W_p = \left(\tfrac1n\sum_i |u_{(i)} - v_{(i)}|^p\right)^{1/p},\ u_{(i)}\ \text{the $i$-th smallest sample}",
    gradient=(r"\partial W_1/\partial u_{(i)} = \operatorname{sign}(u_{(i)} - v_{(i)})/n,\quad "
              r"\partial W_2/\partial u_{(i)} = (u_{(i)} - v_{(i)})/(n W_2),\quad "
              r"\partial W/\partial v_{(i)}\ \text{likewise with the opposite sign; back to the samples through the ranks}"),
    sample=_sample_wasserstein,
    option_cases=({}, {"p": 2}, {"p": 2, "axis": 0}),
    literature=("Villani, Optimal Transport: Old and New (2009); "
                "Artifex wasserstein_distance; scipy.stats.wasserstein_distance",),
    notes=("`u` and `v` hold equally many samples along `axis` (same shape; unequal counts raise a ValueError), "
           "each sample with weight 1/n: then W_p is the L^p distance between the sorted samples. The gradient "
           "flows through the sort order (ties get the gradient of one of their orders, a subgradient); "
           "W_2 = 0 gives a zero gradient, and p = 1 gives sign 0 where sorted samples coincide."),
))


# --------------------------------------------------------------------------- maximum_mean_discrepancy


def _rbf(xp, a, b, bandwidth):
    """Sum of exp(-s / (2 sigma^2)) over the bandwidths, s = |a - b|^2 (floored at 0), and dk/ds."""
    sq_a, sq_b = xp.sum(a * a, axis=-1), xp.sum(b * b, axis=-1)
    raw = _expand(xp, sq_a, -1) + _expand(xp, sq_b, -2) - 2.0 * (a @ xp.matrix_transpose(b))
    s = xp.maximum(raw, 0.0)  # |a|^2 + |b|^2 - 2 a.b rounds below 0 for (near) coincident points
    k = dk = 0.0
    for sigma in bandwidth:
        e = xp.exp(s * (-0.5 / sigma**2))
        k, dk = k + e, dk - e * (0.5 / sigma**2)
    return k, xp.where(raw > 0, dk, 0.0)


def _polynomial(xp, a, b, degree, coef0):
    """(t / d + coef0)^degree, t = a.b, and dk/dt."""
    gamma = 1.0 / a.shape[-1]
    base = gamma * (a @ xp.matrix_transpose(b)) + coef0
    return base**degree, (degree * gamma) * base ** (degree - 1)


def _kernel_block(xp, a, b, kernel, bandwidth, degree, coef0):
    """k(a_i, b_j) for all pairs, and the pullback of pair weights h to (da, db)."""
    if kernel == "rbf":
        k, dk = _rbf(xp, a, b, bandwidth)

        def pullback(h):
            # d/da_i sum_j h_ij k(|a_i - b_j|^2) = 2 sum_j h_ij k'_ij (a_i - b_j) = 2 (rowsum(H) a - H b)_i
            h = 2.0 * h * dk
            return (_expand(xp, xp.sum(h, axis=-1), -1) * a - h @ b,
                    _expand(xp, xp.sum(h, axis=-2), -1) * b - xp.matrix_transpose(h) @ a)
    else:
        k, dk = _polynomial(xp, a, b, degree, coef0)

        def pullback(h):
            # d/da_i sum_j h_ij k(a_i . b_j) = sum_j h_ij k'_ij b_j = (H b)_i
            h = h * dk
            return h @ b, xp.matrix_transpose(h) @ a

    return k, pullback


def maximum_mean_discrepancy_fused(xp, x, y, *, kernel, bandwidth, degree, coef0):
    n, m = x.shape[-2], y.shape[-2]
    if kernel == "linear":
        # mean_ij x_i.x_j + mean y_i.y_j - 2 mean x_i.y_j = |mean x - mean y|^2, O(n d) instead of O(n^2 d)
        delta = xp.mean(x, axis=-2) - xp.mean(y, axis=-2)

        def linear_pullback(ct):
            g = _expand(xp, 2.0 * _expand(xp, ct, -1) * delta, -2)
            return {"x": xp.zeros_like(x) + g / n, "y": xp.zeros_like(y) - g / m}  # writable, not broadcast views

        return xp.sum(delta * delta, axis=-1), linear_pullback

    options = (kernel, (bandwidth,) if isinstance(bandwidth, float) else bandwidth, degree, coef0)
    blocks = ((x, x, 1.0 / (n * n)), (y, y, 1.0 / (m * m)), (x, y, -2.0 / (n * m)))
    parts = [_kernel_block(xp, a, b, *options) for a, b, _ in blocks]
    value = sum(w * xp.sum(k, axis=(-2, -1)) for (_, _, w), (k, _) in zip(blocks, parts))

    def pullback(ct):
        h = _expand(xp, _expand(xp, ct, -1), -1)
        (xx_a, xx_b), (yy_a, yy_b), (xy_x, xy_y) = (back(w * h) for (_, _, w), (_, back) in zip(blocks, parts))
        return {"x": xx_a + xx_b + xy_x, "y": yy_a + yy_b + xy_y}

    return value, pullback


def maximum_mean_discrepancy_value(xp, x, y, *, kernel, bandwidth, degree, coef0):
    """MMD^2 = mean k(x_i, x_j) + mean k(y_i, y_j) - 2 mean k(x_i, y_j) (biased V-statistic)."""
    return maximum_mean_discrepancy_fused(xp, x, y, kernel=kernel, bandwidth=bandwidth, degree=degree,
                                          coef0=coef0)[0]


def maximum_mean_discrepancy_vjp(xp, cotangent, x, y, *, kernel, bandwidth, degree, coef0):
    return maximum_mean_discrepancy_fused(xp, x, y, kernel=kernel, bandwidth=bandwidth, degree=degree,
                                          coef0=coef0)[1](cotangent)


register(LossSpec(
    name="maximum_mean_discrepancy", family=FAMILY,
    summary="Squared maximum mean discrepancy between two sample sets (rbf, linear or polynomial kernel).",
    inputs=("x", "y"), differentiable=("x", "y"), same_shape=(),
    value=maximum_mean_discrepancy_value, vjp=maximum_mean_discrepancy_vjp, fused=maximum_mean_discrepancy_fused,
    validate=_check_sample_sets, output_shape=_sample_set_shape,
    options=(Option("kernel", "rbf", "Kernel: 'rbf' (Gaussian), 'linear' or 'polynomial'.",
                    _choice("rbf", "linear", "polynomial")),
             Option("bandwidth", 1.0, "rbf bandwidth sigma (> 0), or a sequence of them (a sum of rbf kernels).",
                    number_or_numbers(low=0, low_open=True)),
             Option("degree", 3, "Degree of the polynomial kernel (integer >= 1).", integer(low=1)),
             Option("coef0", 1.0, "Constant term of the polynomial kernel.", number())),
    formula=(r"\mathrm{MMD}^2 = \tfrac{1}{n^2}\sum_{ij} k(x_i, x_j) + \tfrac{1}{m^2}\sum_{ij} k(y_i, y_j) "
             r"- \tfrac{2}{nm}\sum_{ij} k(x_i, y_j),\quad k(a, b) = \sum_\sigma e^{-\|a - b\|^2/(2\sigma^2)},\ "
             r"a^\top b\ \text{or}\ (a^\top b/d + c_0)^{\text{degree}}"),
    gradient=(r"\partial/\partial x_i: \sum_j H_{ij}\,\partial k(x_i, z_j)/\partial x_i\ \text{over each block},\ "
              r"\partial k/\partial a = 2k'(s)(a - b)\ \text{(rbf)},\ k'(t)\,b\ \text{(inner-product kernels)}; "
              r"\text{linear: } 2(\bar x - \bar y)/n"),
    sample=_sample_sets,
    aliases=("mmd", "mmd_loss"),
    option_cases=({}, {"bandwidth": (0.5, 2.0, 5.0)}, {"kernel": "linear"}, {"kernel": "polynomial"},
                  {"kernel": "polynomial", "degree": 2, "coef0": 0.0}),
    literature=("Gretton et al., A Kernel Two-Sample Test, JMLR 13 (2012); Artifex maximum_mean_discrepancy",),
    notes=("`x` is (..., n, d) and `y` (..., m, d): n and m may differ, the leading dimensions are a batch and "
           "the loss has shape (...). The value is the biased V-statistic of MMD^2 (the diagonal k(x_i, x_i) "
           "included), so it is never negative and is 0 for identical sets. Artifex's `kernel_type` and "
           "`kernel_bandwidth` are `kernel` and `bandwidth` here. The polynomial kernel is scikit-learn's "
           "(gamma a.b + coef0)^degree with gamma = 1/d; `bandwidth` applies to the rbf kernel only. Squared "
           "distances come from matrix products (|a|^2 + |b|^2 - 2 a.b, floored at 0), memory O(nm) per batch."),
))


# --------------------------------------------------------------------------- energy_distance


def _energy_block(xp, a, b, beta):
    """|a_i - b_j|^beta for all pairs, exactly 0 (with derivative 0) where the points coincide, and its pullback."""
    diff = _expand(xp, a, -2) - _expand(xp, b, -3)  # (..., n, m, d): coincident points are exactly at 0
    r = _numerics.l2_norm(xp, diff, (diff.ndim - 1,))  # scaled: points 1e30 apart do not overflow in float32
    apart = r != 0  # not r > 0: a NaN distance stays in the loss (NaN), as |NaN|^beta does
    safe = xp.where(apart, r, 1.0)  # no 0^(negative power) on either path
    dist = xp.where(apart, safe**beta, 0.0)

    def pullback(h):
        # d/da_i sum_j h_ij r_ij^beta = sum_j h_ij beta r_ij^(beta - 1) (a_i - b_j) / r_ij, set to 0 at r = 0
        h = xp.where(apart, h * (beta * safe ** (beta - 1.0)), 0.0)
        g = _expand(xp, h, -1) * (diff / _expand(xp, safe, -1))
        return xp.sum(g, axis=-2), -xp.sum(g, axis=-3)

    return dist, pullback


def energy_distance_fused(xp, x, y, *, beta):
    n, m = x.shape[-2], y.shape[-2]
    blocks = ((x, x, -1.0 / (n * n)), (y, y, -1.0 / (m * m)), (x, y, 2.0 / (n * m)))
    parts = [_energy_block(xp, a, b, beta) for a, b, _ in blocks]
    value = sum(w * xp.sum(dist, axis=(-2, -1)) for (_, _, w), (dist, _) in zip(blocks, parts))

    def pullback(ct):
        h = _expand(xp, _expand(xp, ct, -1), -1)
        (xx_a, xx_b), (yy_a, yy_b), (xy_x, xy_y) = (back(w * h) for (_, _, w), (_, back) in zip(blocks, parts))
        return {"x": xx_a + xx_b + xy_x, "y": yy_a + yy_b + xy_y}

    return value, pullback


def energy_distance_value(xp, x, y, *, beta):
    """D^2 = 2 mean |x_i - y_j|^beta - mean |x_i - x_j|^beta - mean |y_i - y_j|^beta (V-statistics)."""
    return energy_distance_fused(xp, x, y, beta=beta)[0]


def energy_distance_vjp(xp, cotangent, x, y, *, beta):
    return energy_distance_fused(xp, x, y, beta=beta)[1](cotangent)


register(LossSpec(
    name="energy_distance", family=FAMILY, summary="Squared energy distance between two sample sets.",
    inputs=("x", "y"), differentiable=("x", "y"), same_shape=(),
    value=energy_distance_value, vjp=energy_distance_vjp, fused=energy_distance_fused,
    validate=_check_sample_sets, output_shape=_sample_set_shape,
    options=(Option("beta", 1.0, "Power of the distance, in (0, 2].", number(low=0, high=2, low_open=True)),),
    formula=(r"D^2 = \tfrac{2}{nm}\sum_{ij}\|x_i - y_j\|^\beta - \tfrac{1}{n^2}\sum_{ij}\|x_i - x_j\|^\beta "
             r"- \tfrac{1}{m^2}\sum_{ij}\|y_i - y_j\|^\beta"),
    gradient=(r"\partial D^2/\partial x_i = \tfrac{2\beta}{nm}\sum_j \|x_i - y_j\|^{\beta-2}(x_i - y_j) "
              r"- \tfrac{2\beta}{n^2}\sum_j \|x_i - x_j\|^{\beta-2}(x_i - x_j)\ (\text{terms with}\ x_i = z_j\ \text{are}\ 0)"),
    sample=_sample_sets,
    option_cases=({}, {"beta": 0.5}, {"beta": 1.5}, {"beta": 2.0}),
    literature=("Székely & Rizzo, Energy statistics: A class of statistics based on distances, J. Stat. Plan. "
                "Inference 143 (2013); Artifex energy_distance; scipy.stats.energy_distance",),
    notes=("`x` is (..., n, d) and `y` (..., m, d): n and m may differ, the leading dimensions are a batch and "
           "the loss has shape (...). The loss is D^2 (V-statistics, the diagonal contributing 0), not its square "
           "root, which has no derivative where D = 0 (identical sets): scipy.stats.energy_distance of 1-D samples is sqrt(D^2) for beta = 1, and beta = 2 gives "
           "2 |mean x - mean y|^2. Pairwise differences are formed explicitly (memory O(nmd) per batch), so "
           "coincident points are exactly at distance 0 and contribute a value and a gradient of 0 even for "
           "beta < 1, where the norm's derivative is unbounded."),
))


# --------------------------------------------------------------------------- cosine_similarity


def _cosine_parts(xp, input, target, axis, eps):
    axes = tuple(a % input.ndim for a in (axis if isinstance(axis, tuple) else (axis,)))
    # scaled norms: vectors whose squared norm overflows (float32 entries of 1e30) keep their cosine
    norm_a = _numerics.l2_norm(xp, input, axes, keepdims=True)
    norm_b = _numerics.l2_norm(xp, target, axes, keepdims=True)
    floor = _numerics.norm_floor(xp, eps, input)
    inv_a = 1.0 / xp.maximum(norm_a, floor)  # eps per vector: 0 vectors stay finite
    inv_b = 1.0 / xp.maximum(norm_b, floor)
    unit_a, unit_b = input * inv_a, target * inv_b
    cos = xp.sum(unit_a * unit_b, axis=axes, keepdims=True)
    return axes, cos, (norm_a > floor, norm_b > floor, inv_a, inv_b, unit_a, unit_b)


def cosine_similarity_fused(xp, input, target, *, axis, eps):
    axes, cos, (big_a, big_b, inv_a, inv_b, unit_a, unit_b) = _cosine_parts(xp, input, target, axis, eps)

    def pullback(ct):
        # cos = a.b r_a r_b, r = 1 / max(|a|, eps): d cos/da = r_a (b^ - cos a^) with a^ = a r_a, b^ = b r_b;
        # below eps, r_a is a constant and the projection term drops out
        k = -xp.reshape(ct, cos.shape)
        return {"input": k * inv_a * (unit_b - xp.where(big_a, cos * unit_a, 0.0)),
                "target": k * inv_b * (unit_a - xp.where(big_b, cos * unit_b, 0.0))}

    return -xp.squeeze(cos, axis=axes), pullback


def cosine_similarity_value(xp, input, target, *, axis, eps):
    """-a.b / (max(|a|, eps) max(|b|, eps)) along ``axis``, with max(|a|, eps) = sqrt(max(|a|^2, eps^2))."""
    return cosine_similarity_fused(xp, input, target, axis=axis, eps=eps)[0]


def cosine_similarity_vjp(xp, cotangent, input, target, *, axis, eps):
    return cosine_similarity_fused(xp, input, target, axis=axis, eps=eps)[1](cotangent)


def _cosine_axes(ndim, axis):
    return _validation.check_axis("axis", axis, ndim)


def _check_cosine(xp, inputs, options, concrete):
    x = inputs["input"]
    _validation.check_ndim("input", x, at_least=1)
    axes = _cosine_axes(x.ndim, options["axis"])
    _validation.check_min_size("input", math.prod(x.shape[a] for a in axes), 1, "a vector size (along `axis`)")


def _cosine_shape(shapes, options):
    shape = shapes["input"]
    axes = _cosine_axes(len(shape), options["axis"])
    return tuple(n for i, n in enumerate(shape) if i not in axes)


def _torch_cosine(torch, inputs, options, reduction, weight=None):
    a, b, axis = inputs["input"], inputs["target"], options["axis"]
    if isinstance(axis, tuple):  # torch takes one dim: move the axes to the end and flatten them
        axes = [i % a.ndim for i in axis]
        keep = [i for i in range(a.ndim) if i not in axes]
        a, b = (t.permute(keep + axes).flatten(len(keep)) for t in (a, b))
        axis = -1
    loss = -torch.nn.functional.cosine_similarity(a, b, dim=axis, eps=options["eps"])
    if weight is not None:
        loss = loss * weight
    if reduction == "none":
        return loss
    total = loss.sum()
    return total if reduction == "sum" else total / (loss.numel() if weight is None else weight.sum())


register(LossSpec(
    name="cosine_similarity", family=FAMILY, summary="Negative cosine similarity per pair of vectors (cosine proximity).",
    inputs=("input", "target"), differentiable=("input", "target"),
    value=cosine_similarity_value, vjp=cosine_similarity_vjp, fused=cosine_similarity_fused,
    validate=_check_cosine, output_shape=_cosine_shape,
    options=(Option("axis", -1, "Axis (or tuple of axes) of one vector; the output has the shape without it.",
                    axis_option(allow_none=False)),
             Option("eps", 1e-8, "Floor of each vector's norm (> 0).",
                    number(low=0, low_open=True))),
    formula=r"\ell = -\frac{a^\top b}{\max(\|a\|, \varepsilon)\,\max(\|b\|, \varepsilon)},\ "
            r"\max(\|a\|, \varepsilon) = \sqrt{\max(\|a\|^2, \varepsilon^2)}",
    gradient=(r"\partial\ell/\partial a = -\frac{1}{\max(\|a\|, \varepsilon)}\left(\hat b - \cos\,\hat a\right),\ "
              r"\hat a = a/\max(\|a\|, \varepsilon)\ (\text{no}\ \cos\,\hat a\ \text{term below}\ \varepsilon)"),
    sample=lambda rng, shape, options: {"input": rng.normal(size=shape), "target": rng.normal(size=shape)},
    aliases=("cosine_proximity", "cosine_similarity_loss"),
    references={"torch": Reference("-torch.nn.functional.cosine_similarity", _torch_cosine)},
    option_cases=({}, {"axis": 1, "eps": 1e-3}, {"axis": (0, 1)}),
    literature=("Keras CosineSimilarity; torch.nn.functional.cosine_similarity; optax.losses.cosine_similarity",),
    notes=("The loss is -cos, in [-1, 1] (Keras's CosineSimilarity loss; 1 - it is a cosine distance). Each "
           "vector's norm is floored at `eps` (PyTorch's max(|a|, eps) per vector; |a| is scaled by the largest "
           "entry, so float32 vectors of 1e30 keep their cosine), so a zero vector gives a loss of 0 and a finite "
           "gradient -b^/eps (in float16, where eps underflows, the floor is its smallest normal number 6.1e-5; "
           "PyTorch gives NaN there). PyTorch's "
           "functional `cosine_similarity` is the similarity itself (+cos, arguments x1, x2, dim), so it is no "
           "function name here; its autograd differs from the derivative of its value for 0 < |a| < eps, where "
           "this loss gives the exact derivative of the floored value. optax's `epsilon` floors the squared norm "
           "itself (optax epsilon = eps^2; its default 0 gives NaN for a zero vector), and Keras's l2_normalize "
           "floors it at 1e-12 (eps = 1e-6)."),
))
