"""Regression and reconstruction losses.

Each loss is a value function (unreduced, per element unless said otherwise)
and its hand-derived vjp side by side; ``r = input - target`` throughout.
The engine adds reduction, weights and masks.
"""

from __future__ import annotations

import math

import numpy as np

from .. import _numerics, _validation
from ..registry import LossSpec, Option, Reference, register
from ._common import away_from, axis_option, integer, number, number_or_numbers, residual_sampler

FAMILY = "regression"


def _pair(g):
    """Gradients of a function of r = input - target."""
    return {"input": g, "target": -g}


def _residual_fused(xp, input, target, value_and_slope, factor=1.0):
    """(l(r), pullback) of an elementwise l(r), r = input - target, from ``value_and_slope(r)`` = (l, s) with
    dl/dr = factor * s (s a fresh array, or r itself).

    The forward pass gives l and s; the pullback scales s into the input's gradient, in place where the
    backend allows (``_numerics.times_cotangent``), and negates it into a fresh array for the target's. (These
    formulas are a few cheap operations: NumPy row chunks, ``_numerics.map_chunks``, would cost more here
    than the memory passes they save.)
    """
    value, slope = value_and_slope(input - target)
    take_slope = _numerics.once(slope, lambda: value_and_slope(input - target)[1])
    return value, lambda ct: _pair(_numerics.times_cotangent(xp, ct, take_slope(), factor))


# --------------------------------------------------------------------------- mse


def _square(r):
    return r * r


def mse_value(xp, input, target):
    """(x - y)^2."""
    return _square(input - target)


def mse_vjp(xp, cotangent, input, target):
    return _pair(2.0 * cotangent * (input - target))


def mse_fused(xp, input, target):
    return _residual_fused(xp, input, target, lambda r: (_square(r), r), factor=2.0)


def _torch_ref(fname):
    def call(torch, inputs, options, reduction, weight=None):
        extra = {} if weight is None else {"weight": weight}
        fn = getattr(torch.nn.functional, fname)
        return fn(inputs["input"], inputs["target"], reduction=reduction, **options, **extra)
    return Reference(f"torch.nn.functional.{fname}", call)


register(LossSpec(
    name="mse", family=FAMILY, summary="Mean squared error.",
    inputs=("input", "target"), differentiable=("input", "target"),
    value=mse_value, vjp=mse_vjp, fused=mse_fused,
    formula=r"\ell = (x - y)^2",
    gradient=r"\partial\ell/\partial x = 2(x - y) = -\partial\ell/\partial y",
    sample=residual_sampler(kinks=lambda o: ()),
    aliases=("mse_loss", "mean_squared_error", "l2", "squared_error"),
    references={"torch": _torch_ref("mse_loss")},
    literature=("Gauss (1809); torch.nn.functional.mse_loss",),
))


# --------------------------------------------------------------------------- l1


def l1_value(xp, input, target):
    """|x - y|."""
    return xp.abs(input - target)


def l1_vjp(xp, cotangent, input, target):
    # subgradient 0 at r = 0, as PyTorch
    return _pair(cotangent * _numerics.sign(xp, input - target))


def l1_fused(xp, input, target):
    return _residual_fused(xp, input, target, lambda r: (xp.abs(r), _numerics.sign(xp, r)))


register(LossSpec(
    name="l1", family=FAMILY, summary="Mean absolute error (L1).",
    inputs=("input", "target"), differentiable=("input", "target"),
    value=l1_value, vjp=l1_vjp, fused=l1_fused,
    formula=r"\ell = |x - y|",
    gradient=r"\partial\ell/\partial x = \operatorname{sign}(x - y)\ (0\ \text{at}\ x = y)",
    sample=residual_sampler(),
    aliases=("l1_loss", "mae", "mae_loss", "mean_absolute_error"),
    references={"torch": _torch_ref("l1_loss")},
    literature=("torch.nn.functional.l1_loss",),
))


# --------------------------------------------------------------------------- huber


def _huber_terms(xp, r, delta):
    """(l, dl/dr) = (c (r - c / 2), c) with c = clip(r, -delta, delta): one formula for both pieces, no branch."""
    c = xp.clip(r, min=-delta, max=delta)
    return c * (r - 0.5 * c), c


def huber_value(xp, input, target, *, delta):
    """0.5 r^2 for |r| <= delta, else delta (|r| - delta / 2)."""
    return _huber_terms(xp, input - target, delta)[0]


def huber_vjp(xp, cotangent, input, target, *, delta):
    return _pair(cotangent * _huber_terms(xp, input - target, delta)[1])


def huber_fused(xp, input, target, *, delta):
    return _residual_fused(xp, input, target, lambda r: _huber_terms(xp, r, delta))


def _optax_huber(optax, inputs, options, reduction, weight=None):
    return optax.losses.huber_loss(inputs["input"], inputs["target"], delta=options["delta"])


register(LossSpec(
    name="huber", family=FAMILY, summary="Huber loss: quadratic near zero, linear beyond delta.",
    inputs=("input", "target"), differentiable=("input", "target"),
    value=huber_value, vjp=huber_vjp, fused=huber_fused, weighted_mean="count",
    options=(Option("delta", 1.0, "Residual where the loss turns linear (> 0).", number(low=0, low_open=True)),),
    formula=r"\ell = \tfrac12 r^2\ (|r|\le\delta),\quad \delta(|r| - \tfrac12\delta)\ \text{otherwise}",
    gradient=r"\partial\ell/\partial x = \operatorname{clip}(r, -\delta, \delta) = -\partial\ell/\partial y",
    sample=residual_sampler(kinks=lambda o: (-o["delta"], o["delta"])),
    aliases=("huber_loss",),
    references={"torch": _torch_ref("huber_loss"), "optax": Reference("optax.losses.huber_loss", _optax_huber)},
    option_cases=({}, {"delta": 0.5}, {"delta": 2.5}),
    literature=("Huber, Robust Estimation of a Location Parameter (1964)",),
))


# --------------------------------------------------------------------------- smooth_l1


def _smooth_l1_terms(xp, r, beta):
    """(l, dl/dr) = (s (r - c / 2), s), s = c / beta, c = clip(r, -beta, beta): Huber's with delta = beta over
    beta; |r| and sign(r) for beta = 0."""
    if beta == 0:
        return xp.abs(r), _numerics.sign(xp, r)
    c = xp.clip(r, min=-beta, max=beta)
    s = c / beta
    return s * (r - 0.5 * c), s


def smooth_l1_value(xp, input, target, *, beta):
    """0.5 r^2 / beta for |r| < beta, else |r| - beta / 2; beta = 0 is exactly L1."""
    return _smooth_l1_terms(xp, input - target, beta)[0]


def smooth_l1_vjp(xp, cotangent, input, target, *, beta):
    return _pair(cotangent * _smooth_l1_terms(xp, input - target, beta)[1])


def smooth_l1_fused(xp, input, target, *, beta):
    return _residual_fused(xp, input, target, lambda r: _smooth_l1_terms(xp, r, beta))


register(LossSpec(
    name="smooth_l1", family=FAMILY, summary="Smooth L1 (Huber divided by beta); beta = 0 is L1.",
    inputs=("input", "target"), differentiable=("input", "target"),
    value=smooth_l1_value, vjp=smooth_l1_vjp, fused=smooth_l1_fused,
    options=(Option("beta", 1.0, "Residual where the loss turns linear (>= 0; 0 gives L1).", number(low=0)),),
    formula=r"\ell = \tfrac{1}{2\beta} r^2\ (|r|<\beta),\quad |r| - \tfrac12\beta\ \text{otherwise}",
    gradient=r"\partial\ell/\partial x = \operatorname{clip}(r/\beta, -1, 1)\ (\operatorname{sign}(r)\ \text{for}\ \beta=0)",
    sample=residual_sampler(kinks=lambda o: (-o["beta"], 0.0, o["beta"])),
    aliases=("smooth_l1_loss",),
    references={"torch": _torch_ref("smooth_l1_loss")},
    option_cases=({}, {"beta": 0.5}, {"beta": 0.0}),
    literature=("Girshick, Fast R-CNN (2015)",),
))


# --------------------------------------------------------------------------- charbonnier


def _charbonnier_root(xp, r, epsilon):
    """sqrt(r^2 + eps^2), scaled by m = max(|r|, eps): r^2 neither overflows nor underflows (float32 r of 1e30)."""
    m = xp.maximum(xp.abs(r), epsilon)
    return m * xp.sqrt((r / m) ** 2 + (epsilon / m) ** 2)


def charbonnier_value(xp, input, target, *, epsilon, alpha):
    """sqrt(r^2 + eps^2)^alpha."""
    return _charbonnier_root(xp, input - target, epsilon) ** alpha


def charbonnier_vjp(xp, cotangent, input, target, *, epsilon, alpha):
    # d/dr (r^2 + e^2)^(a/2) = a r (r^2 + e^2)^(a/2 - 1) = a (r / n) n^(a - 1), n = sqrt(r^2 + e^2)
    r = input - target
    n = _charbonnier_root(xp, r, epsilon)
    return _pair(cotangent * alpha * (r / n) * n ** (alpha - 1.0))


register(LossSpec(
    name="charbonnier", family=FAMILY, summary="Charbonnier loss, a smooth L1 (robust for flow and super-resolution).",
    inputs=("input", "target"), differentiable=("input", "target"),
    value=charbonnier_value, vjp=charbonnier_vjp,
    options=(Option("epsilon", 1e-3, "Smoothing constant (> 0).", number(low=0, low_open=True)),
             Option("alpha", 1.0, "Exponent of the root (> 0).", number(low=0, low_open=True))),
    formula=r"\ell = \left(\sqrt{r^2 + \varepsilon^2}\right)^{\alpha}",
    gradient=r"\partial\ell/\partial x = \alpha\, r\,(r^2+\varepsilon^2)^{\alpha/2-1}",
    sample=residual_sampler(),  # r away from 0, where the curvature is 1 / epsilon
    aliases=("charbonnier_loss",),
    option_cases=({}, {"epsilon": 0.1, "alpha": 0.5}),
    literature=("Charbonnier et al., Two deterministic half-quadratic regularization algorithms (1994)",),
))


# --------------------------------------------------------------------------- log_cosh


def log_cosh_value(xp, input, target):
    """log(cosh(r)), via |r| + log1p(exp(-2|r|)) - log 2 (no overflow)."""
    return _numerics.log_cosh(xp, input - target)


def log_cosh_vjp(xp, cotangent, input, target):
    return _pair(cotangent * xp.tanh(input - target))


def _optax_log_cosh(optax, inputs, options, reduction, weight=None):
    return optax.losses.log_cosh(inputs["input"], inputs["target"])


register(LossSpec(
    name="log_cosh", family=FAMILY, summary="Log-cosh loss: quadratic near 0, linear for large residuals.",
    inputs=("input", "target"), differentiable=("input", "target"),
    value=log_cosh_value, vjp=log_cosh_vjp,
    formula=r"\ell = \log\cosh r = |r| + \log(1 + e^{-2|r|}) - \log 2",
    gradient=r"\partial\ell/\partial x = \tanh r = -\partial\ell/\partial y",
    sample=residual_sampler(kinks=lambda o: ()),
    aliases=("log_cosh_loss", "logcosh"),
    references={"optax": Reference("optax.losses.log_cosh", _optax_log_cosh)},
    literature=("Saleh & Saleh, Statistical properties of the log-cosh loss function (2022)",),
))


# --------------------------------------------------------------------------- mape


def _mape_scale(xp, target, epsilon):
    return 100.0 / xp.maximum(xp.abs(target), epsilon)


def mape_value(xp, input, target, *, epsilon):
    """100 |r| / max(|y|, eps) (percent)."""
    return xp.abs(input - target) * _mape_scale(xp, target, epsilon)


def mape_vjp(xp, cotangent, input, target, *, epsilon):
    return {"input": cotangent * _numerics.sign(xp, input - target) * _mape_scale(xp, target, epsilon)}


register(LossSpec(
    name="mape", family=FAMILY, summary="Mean absolute percentage error, in percent.",
    inputs=("input", "target"), differentiable=("input",),
    value=mape_value, vjp=mape_vjp,
    options=(Option("epsilon", 1e-7, "Floor of |target| in the denominator (> 0).", number(low=0, low_open=True)),),
    formula=r"\ell = 100\,|x - y| / \max(|y|, \varepsilon)",
    gradient=r"\partial\ell/\partial x = 100\,\operatorname{sign}(x - y)/\max(|y|,\varepsilon)",
    sample=residual_sampler(target=(0.5, 2.0)),
    aliases=("mape_loss", "mean_absolute_percentage_error"),
    literature=("Keras MeanAbsolutePercentageError",),
    notes="A zero target is divided by `epsilon`, as Keras does: the value is large but finite.",
))


# --------------------------------------------------------------------------- smape


def smape_value(xp, input, target, *, epsilon):
    """200 |r| / (|x| + |y| + eps) (percent, in [0, 200])."""
    return 200.0 * xp.abs(input - target) / (xp.abs(input) + xp.abs(target) + epsilon)


def smape_vjp(xp, cotangent, input, target, *, epsilon):
    # l = 200 N / D with N = |x - y|, D = |x| + |y| + eps:
    # dl/dx = 200 (sign(r) D - N sign(x)) / D^2, dl/dy likewise with -sign(r) and sign(y)
    r = input - target
    d = xp.abs(input) + xp.abs(target) + epsilon
    n_over_d = xp.abs(r) / d
    s = _numerics.sign(xp, r)
    k = 200.0 * cotangent / d
    return {"input": k * (s - n_over_d * _numerics.sign(xp, input)),
            "target": k * (-s - n_over_d * _numerics.sign(xp, target))}


register(LossSpec(
    name="smape", family=FAMILY, summary="Symmetric mean absolute percentage error (time series), in percent.",
    inputs=("input", "target"), differentiable=("input", "target"),
    value=smape_value, vjp=smape_vjp,
    options=(Option("epsilon", 1e-7, "Added to the denominator (> 0).", number(low=0, low_open=True)),),
    formula=r"\ell = 200\,|x - y| / (|x| + |y| + \varepsilon)",
    gradient=r"\partial\ell/\partial x = \frac{200}{D}\left(\operatorname{sign}(x-y) - \frac{|x-y|}{D}\operatorname{sign}(x)\right),\ D = |x|+|y|+\varepsilon",
    sample=residual_sampler(target=(0.5, 2.0), residual=(-0.4, 3.0)),
    aliases=("smape_loss", "symmetric_mean_absolute_percentage_error"),
    literature=("Makridakis, Accuracy measures: theoretical and practical concerns (1993)",),
))


# --------------------------------------------------------------------------- msle

MSLE_EPSILON = 1e-7  # Keras's fixed clip of both sides


def msle_value(xp, input, target):
    """(log1p(max(x, eps)) - log1p(max(y, eps)))^2."""
    d = xp.log1p(xp.maximum(input, MSLE_EPSILON)) - xp.log1p(xp.maximum(target, MSLE_EPSILON))
    return d * d


def msle_vjp(xp, cotangent, input, target):
    d = xp.log1p(xp.maximum(input, MSLE_EPSILON)) - xp.log1p(xp.maximum(target, MSLE_EPSILON))
    k = 2.0 * cotangent * d

    def side(v):  # zero below the clip
        return xp.where(v > MSLE_EPSILON, 1.0 / (1.0 + xp.maximum(v, MSLE_EPSILON)), xp.zeros_like(v))

    return {"input": k * side(input), "target": -k * side(target)}


register(LossSpec(
    name="msle", family=FAMILY, summary="Mean squared logarithmic error (values clipped at 1e-7 as Keras).",
    inputs=("input", "target"), differentiable=("input", "target"),
    value=msle_value, vjp=msle_vjp,
    formula=r"\ell = \left(\log(1 + \max(x,\epsilon)) - \log(1 + \max(y,\epsilon))\right)^2,\ \epsilon = 10^{-7}",
    gradient=r"\partial\ell/\partial x = 2 d / (1 + x)\ \text{for}\ x > \epsilon,\ 0\ \text{below}",
    sample=residual_sampler(target=(0.2, 3.0), residual=(-0.15, 3.0), kinks=lambda o: ()),
    aliases=("msle_loss", "mean_squared_logarithmic_error"),
    literature=("Keras MeanSquaredLogarithmicError",),
))


# --------------------------------------------------------------------------- psnr


def _sample_axes(ndim, axis):
    if axis is not None:
        return _validation.check_axis("axis", axis, ndim)
    return tuple(range(1, ndim)) if ndim > 1 else tuple(range(ndim))


def _psnr_parts(xp, input, target, max_value, axis):
    axes = _sample_axes(input.ndim, axis)
    count = math.prod(input.shape[a] for a in axes)
    r = input - target
    mse = xp.sum(r * r, axis=axes) / count
    floor = 1e-10 * max_value * max_value  # caps PSNR at 100 dB: mse = 0 stays finite
    return r, mse, floor, axes, count


def psnr_value(xp, input, target, *, max_value, axis):
    """Negative PSNR per sample: 10 log10(mse) - 20 log10(max_value)."""
    _, mse, floor, _, _ = _psnr_parts(xp, input, target, max_value, axis)
    return 10.0 * xp.log10(xp.maximum(mse, floor)) - 20.0 * math.log10(max_value)


def psnr_vjp(xp, cotangent, input, target, *, max_value, axis):
    # d/dx 10 log10(mse) = 10 / (ln 10 mse) * 2 r / M, zero where mse is floored
    r, mse, floor, axes, count = _psnr_parts(xp, input, target, max_value, axis)
    k = xp.where(mse > floor, cotangent * (20.0 / _numerics.LN10 / count) / xp.maximum(mse, floor),
                 xp.zeros_like(mse))
    k = xp.reshape(k, tuple(1 if i in axes else n for i, n in enumerate(input.shape)))
    return _pair(k * r)


def _check_psnr(xp, inputs, options, concrete):
    x = inputs["input"]
    axes = _sample_axes(x.ndim, options["axis"])
    _validation.check_min_size("input", math.prod(x.shape[a] for a in axes), 1, "a number of values per sample")


def _psnr_shape(shapes, options):
    shape = shapes["input"]
    axes = _sample_axes(len(shape), options["axis"])
    return tuple(n for i, n in enumerate(shape) if i not in axes)


register(LossSpec(
    name="psnr", family=FAMILY, summary="Negative peak signal-to-noise ratio per sample (dB).",
    inputs=("input", "target"), differentiable=("input", "target"),
    value=psnr_value, vjp=psnr_vjp, validate=_check_psnr, output_shape=_psnr_shape,
    options=(Option("max_value", 1.0, "Peak signal value (> 0), e.g. 1.0 or 255.0.", number(low=0, low_open=True)),
             Option("axis", None, "Axes of one sample; None: all but the first (all, for 1-D input).",
                    axis_option(allow_none=True))),
    formula=r"\ell = -\mathrm{PSNR} = 10\log_{10}\max(\mathrm{MSE}, 10^{-10} m^2) - 20\log_{10} m",
    gradient=r"\partial\ell/\partial x = \frac{20}{\ln 10\, M\,\mathrm{MSE}}\,(x - y)",
    # residuals away from 0: log MSE curves sharply where the MSE is small
    sample=residual_sampler(target=(0.0, 1.0), residual=(-0.3, 0.3)),
    aliases=("psnr_loss",),
    option_cases=({}, {"max_value": 255.0, "axis": (1,)}),
    literature=("Artifex psnr_loss; Huynh-Thu & Ghanbari, Scope of validity of PSNR (2008)",),
    notes="MSE is floored at 1e-10 max_value^2 (PSNR capped at 100 dB) so identical images give a finite value and a zero gradient.",
))


# --------------------------------------------------------------------------- pinball


def _pinball_residual(xp, input, target, quantile):
    if isinstance(quantile, tuple):
        return xp.expand_dims(target, axis=-1) - input, _numerics.constant(xp, quantile, input)
    return target - input, quantile


def pinball_value(xp, input, target, *, quantile):
    """max(q u, (q - 1) u) with u = y - x; several quantiles: one column of `input` each."""
    u, q = _pinball_residual(xp, input, target, quantile)
    return xp.maximum(q * u, (q - 1.0) * u)


def pinball_vjp(xp, cotangent, input, target, *, quantile):
    # d/dx = -q for y > x, 1 - q for y < x, 0 at a tie (subgradient)
    u, q = _pinball_residual(xp, input, target, quantile)
    slope = xp.where(u > 0, -q * xp.ones_like(u), xp.where(u < 0, (1.0 - q) * xp.ones_like(u), xp.zeros_like(u)))
    return {"input": cotangent * slope}


def _check_pinball(xp, inputs, options, concrete):
    x, y = inputs["input"], inputs["target"]
    q = options["quantile"]
    if isinstance(q, tuple):
        _validation.check_shape("input", x, tuple(y.shape) + (len(q),), "target's shape plus one column per quantile")
    else:
        _validation.check_same_shape("input", x, "target", y)


def _sample_pinball(rng, shape, options):
    q = options["quantile"]
    columns = (len(q),) if isinstance(q, tuple) else ()
    t = rng.uniform(-2.0, 2.0, shape)
    u = away_from(rng, rng.uniform(-3.0, 3.0, tuple(shape) + columns), (0.0,), 0.05, -3.0, 3.0)
    return {"input": (t[..., None] if columns else t) - u, "target": t}


register(LossSpec(
    name="pinball", family=FAMILY, summary="Pinball (quantile) loss; several quantiles at once give the MQ loss.",
    inputs=("input", "target"), differentiable=("input",), same_shape=(),
    value=pinball_value, vjp=pinball_vjp, validate=_check_pinball,
    options=(Option("quantile", 0.5, "Quantile in (0, 1), or a sequence of them (input gets one last-axis column each).",
                    number_or_numbers(low=0, high=1, low_open=True, high_open=True)),),
    formula=r"\ell = \max(q\,u, (q-1)\,u),\ u = y - x",
    gradient=r"\partial\ell/\partial x = -q\ (u>0),\ 1-q\ (u<0),\ 0\ (u=0)",
    sample=_sample_pinball,
    aliases=("quantile", "pinball_loss", "quantile_loss", "mq"),
    option_cases=({}, {"quantile": 0.1}, {"quantile": (0.1, 0.5, 0.9)}),
    literature=("Koenker & Bassett, Regression Quantiles (1978); Wen et al., A Multi-Horizon Quantile Recurrent Forecaster (2017)",),
))


# --------------------------------------------------------------------------- mase


def _mase_scale(xp, insample, seasonality, epsilon):
    m = seasonality
    naive = xp.mean(xp.abs(insample[..., m:] - insample[..., :-m]), axis=-1, keepdims=True)
    return xp.maximum(naive, epsilon)


def mase_value(xp, input, target, insample, *, seasonality, epsilon):
    """|y - x| / scale, scale = mean |z_t - z_(t-m)| of each series' in-sample history z."""
    return xp.abs(input - target) / _mase_scale(xp, insample, seasonality, epsilon)


def mase_vjp(xp, cotangent, input, target, insample, *, seasonality, epsilon):
    return {"input": cotangent * _numerics.sign(xp, input - target) / _mase_scale(xp, insample, seasonality, epsilon)}


def _check_mase(xp, inputs, options, concrete):
    x, z = inputs["input"], inputs["insample"]
    _validation.check_ndim("input", x, at_least=1)
    _validation.check_floating("insample", z, xp)
    _validation.check_shape("insample", z, tuple(x.shape[:-1]) + (z.shape[-1] if z.ndim else 0,),
                            "the input's leading dimensions, then the history length")
    _validation.check_min_size("insample", z.shape[-1], options["seasonality"] + 1, "a history length (last axis)")


def _sample_mase(rng, shape, options):
    base = residual_sampler()(rng, shape, options)
    return {**base, "insample": rng.normal(size=tuple(shape[:-1]) + (options["seasonality"] + 8,))}


register(LossSpec(
    name="mase", family=FAMILY, summary="Mean absolute scaled error: errors over the in-sample seasonal naive forecast's.",
    inputs=("input", "target", "insample"), differentiable=("input",), same_shape=("input", "target"),
    value=mase_value, vjp=mase_vjp, validate=_check_mase,
    options=(Option("seasonality", 1, "Season length m of the naive forecast (integer >= 1).", integer(low=1)),
             Option("epsilon", 1e-8, "Floor of the scale (> 0), for flat histories.", number(low=0, low_open=True))),
    formula=r"\ell = |y - x| / s,\ s = \max\left(\tfrac{1}{T-m}\sum_t |z_t - z_{t-m}|, \varepsilon\right)",
    gradient=r"\partial\ell/\partial x = \operatorname{sign}(x - y)/s",
    sample=_sample_mase,
    aliases=("mase_loss", "mean_absolute_scaled_error"),
    option_cases=({}, {"seasonality": 3}),
    literature=("Hyndman & Koehler, Another look at measures of forecast accuracy (2006)",),
    notes="`insample` is the history each forecast series was fitted on, time on the last axis; its leading dimensions match the input's.",
))


# --------------------------------------------------------------------------- affine_invariant


def _normalise(xp, d, epsilon):
    """(d - median) / (mean |d - median| + eps) per row, and what its vjp needs."""
    t, dt = _numerics.median_and_onehot(xp, d, axis=-1)
    u = d - t
    s = xp.mean(xp.abs(u), axis=-1, keepdims=True) + epsilon
    return u / s, (u, s, dt)


def _normalise_vjp(xp, g, parts):
    # n = u / s, s = mean|u| + eps, u = d - median(d):
    # dL/du = g / s - sum(g u) / s^2 * sign(u) / P;  dL/dd = dL/du - dmedian/dd * sum(dL/du)
    u, s, dt = parts
    p = u.shape[-1]
    du = g / s - xp.sum(g * u, axis=-1, keepdims=True) / (s * s) * _numerics.sign(xp, u) / p
    return du - dt * xp.sum(du, axis=-1, keepdims=True)


def _rows(xp, x):
    return xp.reshape(x, (x.shape[0], math.prod(x.shape[1:])))  # sizes, not -1: also for an empty batch


def affine_invariant_fused(xp, input, target, *, epsilon):
    n_x, parts_x = _normalise(xp, _rows(xp, input), epsilon)
    n_y, parts_y = _normalise(xp, _rows(xp, target), epsilon)
    diff = n_x - n_y
    p = diff.shape[-1]
    value = xp.mean(xp.abs(diff), axis=-1)

    def pullback(ct):
        g = xp.expand_dims(ct, axis=-1) * _numerics.sign(xp, diff) / p
        return {"input": xp.reshape(_normalise_vjp(xp, g, parts_x), input.shape),
                "target": xp.reshape(_normalise_vjp(xp, -g, parts_y), target.shape)}

    return value, pullback


def affine_invariant_value(xp, input, target, *, epsilon):
    """Per sample: mean |n(x) - n(y)|, n(d) = (d - median d) / (mean |d - median d| + eps)."""
    return affine_invariant_fused(xp, input, target, epsilon=epsilon)[0]


def affine_invariant_vjp(xp, cotangent, input, target, *, epsilon):
    return affine_invariant_fused(xp, input, target, epsilon=epsilon)[1](cotangent)


def _sample_affine(rng, shape, options):
    """Each sample's values at least 0.05 apart (its median stays the same entry under finite-difference steps),
    and |n(x) - n(y)| at least 0.02 from 0 except where both are the median (0 on a whole neighbourhood)."""
    pixels = math.prod(shape[1:])

    def spaced(count, mean, scale):
        v = np.sort(rng.normal(mean, scale, (count, pixels)), axis=1) + 0.05 * np.arange(pixels)
        return rng.permuted(v, axis=1)

    def normalised(d):
        u = d - np.median(d, axis=1, keepdims=True)
        return u / (np.mean(np.abs(u), axis=1, keepdims=True) + options["epsilon"])

    x, y = spaced(shape[0], 1.0, 2.0), spaced(shape[0], 0.0, 1.0)
    for _ in range(1000):
        diff = normalised(x) - normalised(y)
        near = np.any((np.abs(diff) < 0.02) & (diff != 0), axis=1)
        if not near.any():
            return {"input": x.reshape(shape), "target": y.reshape(shape)}
        y[near] = spaced(int(near.sum()), 0.0, 1.0)
    raise RuntimeError("could not draw samples away from the kinks")


def _check_affine(xp, inputs, options, concrete):
    x = inputs["input"]
    _validation.check_ndim("input", x, at_least=2)
    _validation.check_min_size("input", math.prod(x.shape[1:]), 1, "a number of pixels per sample")


register(LossSpec(
    name="affine_invariant", family=FAMILY,
    summary="Scale-and-shift invariant L1 per sample (MiDaS depth loss).",
    inputs=("input", "target"), differentiable=("input", "target"),
    value=affine_invariant_value, vjp=affine_invariant_vjp, fused=affine_invariant_fused,
    validate=_check_affine, output_shape=lambda shapes, options: shapes["input"][:1],
    options=(Option("epsilon", 1e-6, "Added to each scale (> 0), for constant maps.", number(low=0, low_open=True)),),
    formula=r"\ell = \tfrac1P\sum_i |n(x)_i - n(y)_i|,\ n(d) = \frac{d - \operatorname{med}(d)}{\tfrac1P\sum_j|d_j - \operatorname{med}(d)| + \varepsilon}",
    gradient=r"\text{through } n:\ \partial n/\partial d \text{ with the median's one-hot (two halves for even } P)",
    sample=_sample_affine,
    aliases=("affine_invariant_loss", "scale_shift_invariant"),
    literature=("Ranftl et al., Towards Robust Monocular Depth Estimation (MiDaS), TPAMI 2022",),
    notes="One sample per entry of the first axis; all other axes are the sample's pixels.",
))
