"""Divergences between distributions and likelihood losses.

Each loss is a value function (unreduced: per element, or per distribution
for those that sum over the last axis) and its hand-derived vjp side by side.
Zero probabilities follow 0 log 0 = 0 (xlogy), so they add exactly 0. The
engine adds reduction, weights and masks.
"""

from __future__ import annotations

import math
import warnings

import numpy as np

from ... import _numerics, _validation
from ...registry import LossSpec, Option, Reference, register
from ..._reduction import ALL_REDUCTIONS
from .._common import number

FAMILY = "probabilistic"
LOG2 = math.log(2.0)
HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)


def _flag(name, value):
    _validation.check_bool(name, value)
    return value


def _per_distribution(name):
    """Output shape of a loss summed over the last axis of input `name`."""
    return lambda shapes, options: shapes[name][:-1]


def _check_distributions(*names, high=None):
    """At least one axis (the distribution's, last); concrete values non-negative (in [0, 1] with ``high``)."""
    def check(xp, inputs, options, concrete):
        _validation.check_ndim(names[0], inputs[names[0]], at_least=1)
        if not concrete:
            return
        for n in names:
            if high is None:
                _validation.check_value_range(n, inputs[n], xp, low=0.0, what="non-negative")
            else:
                _validation.check_unit_interval(n, inputs[n], xp, "probabilities in [0, 1]")
    return check


def _nan_where_zero(xp, t, g):
    """``g`` with NaN where ``t == 0``: what PyTorch's and JAX's autograd of xlogy give for d/dt there."""
    return xp.where(t == 0, math.nan, g)


def _softmax_rows(rng, shape, scale=1.5):
    """Random distributions on the last axis, each probability at least 0.4 / C: away from 0, where the
    curvature 1/p of p log p would spoil finite differences (and from the kl_divergence clip)."""
    z = rng.normal(0.0, scale, shape)
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return 0.6 * e / e.sum(axis=-1, keepdims=True) + 0.4 / shape[-1]


# --------------------------------------------------------------------------- kl_div (PyTorch)


def _kl_div_parts(xp, input, target, log_target):
    if log_target:
        p = xp.exp(target)
        # e^t (t - x); a zero probability (t = -inf, e^t = 0) adds exactly 0 (PyTorch: NaN)
        return p * xp.where(p == 0, p, target - input), p, None
    # t log t - t x, with t = 0 adding exactly 0, also at a -inf (masked) x
    zero = target == 0
    log_ratio = xp.log(xp.where(zero, 1.0, target)) - input
    return target * xp.where(zero, target, log_ratio), zero, log_ratio


def _kl_div_slopes(xp, target, log_target, value, p_or_zero, log_ratio):
    if log_target:
        # d/dx = -e^t;  d/dt = e^t (t - x + 1) = value + e^t, 0 where e^t = 0
        return -p_or_zero, value + p_or_zero
    # d/dx = -t;  d/dt = log t + 1 - x, which is -inf at t = 0: NaN there, as PyTorch's autograd (0 / 0)
    return -target, xp.where(p_or_zero, math.nan, log_ratio + 1.0)


def kl_div_value(xp, input, target, *, log_target):
    """t (log t - x) on log-probabilities x; e^t (t - x) with log_target."""
    return _kl_div_parts(xp, input, target, log_target)[0]


def kl_div_vjp(xp, cotangent, input, target, *, log_target):
    d_input, d_target = _kl_div_slopes(xp, target, log_target, *_kl_div_parts(xp, input, target, log_target))
    return {"input": cotangent * d_input, "target": cotangent * d_target}


def kl_div_fused(xp, input, target, *, log_target):
    # one pass forward gives the value and both slopes; the pullback scales the slopes in place
    def forward(x, t):
        parts = _kl_div_parts(xp, x, t, log_target)
        return (parts[0], *_kl_div_slopes(xp, t, log_target, *parts))

    value, *slopes = forward(input, target)
    take_slopes = _numerics.once(slopes, lambda: forward(input, target)[1:])

    def pullback(ct):
        d_input, d_target = take_slopes()
        return {"input": _numerics.times_cotangent(xp, ct, d_input),
                "target": _numerics.times_cotangent(xp, ct, d_target)}

    return value, pullback


def _check_kl_div(xp, inputs, options, concrete):
    if concrete and not options["log_target"]:
        _validation.check_value_range("target", inputs["target"], xp, low=0.0,
                                      what="non-negative (probabilities; pass log_target=True for log-probabilities)")


def _sample_kl_div(rng, shape, options):
    p = _softmax_rows(rng, shape)
    return {"input": np.log(_softmax_rows(rng, shape)), "target": np.log(p) if options["log_target"] else p}


def _torch_kl_div(torch, inputs, options, reduction, weight=None):
    if weight is not None:
        raise TypeError("kl_div takes no weight")
    with warnings.catch_warnings():  # PyTorch warns that "mean" is not "batchmean"
        warnings.simplefilter("ignore")
        return torch.nn.functional.kl_div(inputs["input"], inputs["target"], reduction=reduction,
                                          log_target=options["log_target"])


register(LossSpec(
    name="kl_div", family=FAMILY,
    summary="PyTorch's pointwise KL divergence: log-probability input, probability (or log-probability) target.",
    inputs=("input", "target"), differentiable=("input", "target"),
    value=kl_div_value, vjp=kl_div_vjp, fused=kl_div_fused, validate=_check_kl_div,
    domains={"target": (("[0, inf)", {"log_target": False}),)},
    reductions=ALL_REDUCTIONS,
    options=(Option("log_target", False, "Whether `target` holds log-probabilities (True or False).", _flag),),
    formula=r"\ell = t\,(\log t - x)\ \ (0\ \text{at}\ t = 0),\qquad \ell = e^{t}(t - x)\ \ \text{with log\_target}",
    gradient=(r"\partial\ell/\partial x = -t,\ \ \partial\ell/\partial t = \log t + 1 - x\ (t > 0);\quad "
              r"\text{log\_target: } -e^{t},\ \ e^{t}(t - x + 1)"),
    sample=_sample_kl_div,
    functional=("kl_div",),
    references={"torch": Reference("torch.nn.functional.kl_div", _torch_kl_div)},
    option_cases=({}, {"log_target": True}),
    literature=("Kullback & Leibler, On Information and Sufficiency (1951); torch.nn.functional.kl_div",),
    notes=("Pointwise, as PyTorch: `input` holds log-probabilities, `target` probabilities (log-probabilities "
           "with `log_target=True`), both of one shape. `reduction=\"batchmean\"` (sum / input.shape[0]) is the "
           "true KL divergence of a batch of distributions; \"mean\" (the default, as PyTorch) divides by the "
           "element count. A zero target probability adds exactly 0, also against a -inf (masked) input, where "
           "PyTorch gives NaN; with log_target a -inf target adds 0 and gets a zero gradient (PyTorch: NaN). "
           "The target gradient log t + 1 - x is -inf at t = 0; there it is NaN, exactly as PyTorch's autograd "
           "gives (0 / 0), so only a target with no zeros gets a finite target gradient. A negative target "
           "(without log_target) is rejected."),
))


# --------------------------------------------------------------------------- kl_divergence (Artifex / Mithril)


def _kl_divergence_parts(xp, p, q, eps):
    p_hat, q_hat = xp.maximum(p, eps), xp.maximum(q, eps)
    log_ratio = xp.log(p_hat) - xp.log(q_hat)
    return xp.sum(p_hat * log_ratio, axis=-1), p_hat, q_hat, log_ratio


def _kl_divergence_grads(xp, ct, p, q, eps, p_hat, q_hat, log_ratio):
    # p^ = max(p, eps): d/dp = log(p^/q^) + 1 where p >= eps, d/dq = -p^/q^ where q >= eps (0 where clipped)
    ct = xp.expand_dims(ct, axis=-1)
    zero = xp.zeros_like(p)
    return {"p": ct * xp.where(p >= eps, log_ratio + 1.0, zero),
            "q": ct * xp.where(q >= eps, -p_hat / q_hat, zero)}


def kl_divergence_value(xp, p, q, *, eps):
    """sum_c p^ log(p^ / q^) over the last axis, p^ = max(p, eps), q^ = max(q, eps)."""
    return _kl_divergence_parts(xp, p, q, eps)[0]


def kl_divergence_vjp(xp, cotangent, p, q, *, eps):
    _, *parts = _kl_divergence_parts(xp, p, q, eps)
    return _kl_divergence_grads(xp, cotangent, p, q, eps, *parts)


def kl_divergence_fused(xp, p, q, *, eps):
    value, *parts = _kl_divergence_parts(xp, p, q, eps)
    return value, lambda ct: _kl_divergence_grads(xp, ct, p, q, eps, *parts)


def _sample_two_distributions(rng, shape, options):
    return {"p": _softmax_rows(rng, shape), "q": _softmax_rows(rng, shape)}


register(LossSpec(
    name="kl_divergence", family=FAMILY,
    summary="KL divergence KL(p || q) between probability arrays (Artifex's, eps-clipped), per distribution.",
    inputs=("p", "q"), differentiable=("p", "q"),
    value=kl_divergence_value, vjp=kl_divergence_vjp, fused=kl_divergence_fused,
    validate=_check_distributions("p", "q", high=1.0), output_shape=_per_distribution("p"),
    domains={"p": "[0, 1]", "q": "[0, 1]"},
    options=(Option("eps", 1e-8, "Floor of both probabilities before the logs (Artifex's clip), in (0, 1).",
                    number(low=0.0, high=1.0, low_open=True, high_open=True)),),
    formula=(r"\ell = \textstyle\sum_c \hat p_c \log(\hat p_c / \hat q_c),\ "
             r"\hat p = \max(p, \epsilon),\ \hat q = \max(q, \epsilon)"),
    gradient=(r"\partial\ell/\partial p_c = \log(\hat p_c/\hat q_c) + 1\ (p_c \ge \epsilon),\ \ "
              r"\partial\ell/\partial q_c = -\hat p_c/\hat q_c\ (q_c \ge \epsilon);\ 0\ \text{where clipped}"),
    sample=_sample_two_distributions,
    functional=("kl_divergence",),
    option_cases=({}, {"eps": 1e-3}),
    literature=("Kullback & Leibler, On Information and Sufficiency (1951); Artifex "
                "generative_models.core.losses.divergence.kl_divergence; Mithril kl_divergence",),
    notes=("`p` and `q` hold probabilities (checked to lie in [0, 1]) with the classes on the last axis; the "
           "unreduced loss has one value per distribution (the shape without the last axis). Both are floored at "
           "`eps` before the logs, exactly as Artifex's clip to [eps, 1], so q = 0 stays finite; a floored entry "
           "gets a zero gradient, and p = 0 adds eps log(eps / q^) (about 1e-7 at most), not exactly 0. "
           "Artifex's summed value (`reduction=\"sum\"`) is this loss's \"sum\"; Artifex's \"mean\" averages "
           "over elements, this \"mean\" over distributions. `mlo.kl_divergence_gradient` is the gradient with "
           "respect to `p`, as Mithril's. Not optax's kl_divergence, which takes log-predictions (see "
           "`generalized_kl` and `kl_div`)."),
))


# --------------------------------------------------------------------------- js_divergence


def _log_half_ratio(xp, a, b):
    """log(2a / (a + b)) for a > 0, b >= 0 (a finite placeholder where a = 0, which callers mask).

    -log1p((b - a) / 2a) where |b - a| <= a (no cancellation as a -> b), a
    difference of logs elsewhere (no overflow of 1/a for tiny a).
    """
    one = xp.ones_like(a)
    pos = a > 0
    near = (xp.abs(b - a) <= a) & pos
    u = (b - a) / (2.0 * xp.where(near, a, one))
    s = a + b
    far = xp.log(2.0 * xp.where(pos, a, one)) - xp.log(xp.where(s > 0, s, one))
    return xp.where(near, -xp.log1p(xp.where(near, u, xp.zeros_like(u))), far)


def _js_parts(xp, p, q):
    lp, lq = _log_half_ratio(xp, p, q), _log_half_ratio(xp, q, p)
    value = 0.5 * xp.sum(_numerics.xlog(xp, p, lp) + _numerics.xlog(xp, q, lq), axis=-1)
    return value, lp, lq


def _js_grads(xp, ct, p, q, lp, lq):
    # JS = 1/2 sum [p log(p/m) + q log(q/m)], m = (p + q)/2:  dJS/dp = 1/2 log(p/m) = 1/2 log(2p / (p + q)).
    # p = q = 0: the partial derivative is 1/2 log 2 (JS is linear in p there).  p = 0 < q: it is -inf;
    # the gradient there is 0 (masked-class convention: after a softmax it is multiplied by p = 0).
    ct = xp.expand_dims(ct, axis=-1)
    half_log2 = xp.full_like(p, 0.5 * LOG2)
    zero = xp.zeros_like(p)
    gp = xp.where(p > 0, 0.5 * lp, xp.where(q > 0, zero, half_log2))
    gq = xp.where(q > 0, 0.5 * lq, xp.where(p > 0, zero, half_log2))
    return {"p": ct * gp, "q": ct * gq}


def js_divergence_value(xp, p, q):
    """1/2 KL(p || m) + 1/2 KL(q || m), m = (p + q) / 2, over the last axis; in [0, log 2]."""
    return _js_parts(xp, p, q)[0]


def js_divergence_vjp(xp, cotangent, p, q):
    _, lp, lq = _js_parts(xp, p, q)
    return _js_grads(xp, cotangent, p, q, lp, lq)


def js_divergence_fused(xp, p, q):
    value, lp, lq = _js_parts(xp, p, q)
    return value, lambda ct: _js_grads(xp, ct, p, q, lp, lq)


register(LossSpec(
    name="js_divergence", family=FAMILY,
    summary="Jensen-Shannon divergence between probability arrays, per distribution; symmetric, in [0, log 2].",
    inputs=("p", "q"), differentiable=("p", "q"),
    value=js_divergence_value, vjp=js_divergence_vjp, fused=js_divergence_fused,
    validate=_check_distributions("p", "q", high=1.0), output_shape=_per_distribution("p"),
    domains={"p": "[0, 1]", "q": "[0, 1]"},
    formula=(r"\ell = \tfrac12\textstyle\sum_c \left(p_c \log\frac{p_c}{m_c} + q_c \log\frac{q_c}{m_c}\right),\ "
             r"m = \tfrac12(p + q),\ 0\log 0 = 0"),
    gradient=(r"\partial\ell/\partial p_c = \tfrac12\log\frac{2p_c}{p_c + q_c}\ (p_c > 0);\ "
              r"\tfrac12\log 2\ (p_c = q_c = 0);\ 0\ (p_c = 0 < q_c)"),
    sample=_sample_two_distributions,
    aliases=("jensen_shannon_divergence",),
    functional=("js_divergence",),
    literature=("Lin, Divergence measures based on the Shannon entropy (1991); Artifex "
                "generative_models.core.losses.divergence.js_divergence",),
    notes=("`p` and `q` hold probabilities (checked to lie in [0, 1]) with the classes on the last axis; one "
           "value per distribution. No eps: zero probabilities add exactly 0 (xlogy), so distributions with "
           "disjoint supports give exactly log 2 (Artifex clips at eps = 1e-8 and stays a little below). "
           "log(2p / (p + q)) is computed with log1p where p ~ q and as a difference of logs elsewhere, so it "
           "(and the gradient) keeps its digits as p -> q, and tiny (subnormal) probabilities do not overflow. "
           "The partial derivative in p_c is -inf where p_c = 0 < q_c; the gradient there is 0 (after a softmax "
           "it is multiplied by p_c = 0, and an infinite entry would turn the whole row into NaN); where "
           "p_c = q_c = 0 it is the exact partial 1/2 log 2. Likewise for q."),
))


# --------------------------------------------------------------------------- generalized_kl (optax)


def _generalized_kl_parts(xp, input, target):
    log_t = _numerics.log_or_zero(xp, target)
    e = xp.exp(input)
    return xp.sum(_numerics.xlog(xp, target, log_t - input) + e - target, axis=-1), log_t, e


def _generalized_kl_grads(xp, ct, input, target, log_t, e):
    # d/dx = e^x - t;  d/dt = log t - x, -inf at t = 0: NaN there, as optax's autodiff gives
    ct = xp.expand_dims(ct, axis=-1)
    return {"input": ct * (e - target), "target": ct * _nan_where_zero(xp, target, log_t - input)}


def generalized_kl_value(xp, input, target):
    """sum_c t (log t - x) + e^x - t over the last axis, x = log-predictions (optax's)."""
    return _generalized_kl_parts(xp, input, target)[0]


def generalized_kl_vjp(xp, cotangent, input, target):
    _, log_t, e = _generalized_kl_parts(xp, input, target)
    return _generalized_kl_grads(xp, cotangent, input, target, log_t, e)


def generalized_kl_fused(xp, input, target):
    value, log_t, e = _generalized_kl_parts(xp, input, target)
    return value, lambda ct: _generalized_kl_grads(xp, ct, input, target, log_t, e)


def _sample_generalized_kl(rng, shape, options):
    return {"input": np.log(rng.uniform(0.1, 3.0, shape)), "target": rng.uniform(0.1, 3.0, shape)}


def _optax_generalized_kl(optax, inputs, options, reduction, weight=None):
    return optax.losses.generalized_kl_divergence(inputs["input"], inputs["target"])


register(LossSpec(
    name="generalized_kl", family=FAMILY,
    summary="Generalized KL divergence of unnormalised measures (optax's), on log-predictions, per distribution.",
    inputs=("input", "target"), differentiable=("input", "target"),
    value=generalized_kl_value, vjp=generalized_kl_vjp, fused=generalized_kl_fused,
    validate=_check_distributions("target"), output_shape=_per_distribution("input"),
    domains={"target": "[0, inf)"},
    formula=r"\ell = \textstyle\sum_c t_c(\log t_c - x_c) + e^{x_c} - t_c\ \ (0 \log 0 = 0)",
    gradient=r"\partial\ell/\partial x_c = e^{x_c} - t_c,\ \ \partial\ell/\partial t_c = \log t_c - x_c\ (t_c > 0)",
    sample=_sample_generalized_kl,
    aliases=("generalized_kl_divergence", "convex_kl_divergence"),
    functional=("generalized_kl_divergence", "generalized_kl"),
    references={"optax": Reference("optax.losses.generalized_kl_divergence", _optax_generalized_kl)},
    literature=("Boyd & Vandenberghe, Convex Optimization (2004), p. 90; optax.losses.generalized_kl_divergence",),
    notes=("optax's generalized_kl_divergence(log_predictions, targets) (and its deprecated name "
           "convex_kl_divergence), on the last axis: `input` holds log-predictions x (any real), `target` "
           "non-negative, unnormalised measures t (checked). It is the Bregman divergence of t log t - t, zero "
           "exactly where t = e^x. A zero target adds e^x and nothing else, also against a -inf input (optax: "
           "NaN). The target gradient log t - x is -inf at t = 0; there it is NaN, as optax's autodiff gives."),
))


# --------------------------------------------------------------------------- gaussian_kl (VAE)


def gaussian_kl_value(xp, mean, logvar):
    """1/2 sum_d (e^v + mu^2 - 1 - v) over the last axis, with expm1(v) - v (no cancellation near v = 0)."""
    return 0.5 * xp.sum(xp.expm1(logvar) - logvar + mean * mean, axis=-1)


def gaussian_kl_vjp(xp, cotangent, mean, logvar):
    ct = xp.expand_dims(cotangent, axis=-1)
    return {"mean": ct * mean, "logvar": 0.5 * ct * xp.expm1(logvar)}


def _check_latent(xp, inputs, options, concrete):
    _validation.check_ndim("mean", inputs["mean"], at_least=1)


def _sample_gaussian_kl(rng, shape, options):
    return {"mean": rng.normal(0.0, 1.5, shape), "logvar": rng.uniform(-3.0, 2.0, shape)}


register(LossSpec(
    name="gaussian_kl", family=FAMILY,
    summary="KL divergence of N(mean, exp(logvar)) from N(0, I), closed form (the VAE prior term), per sample.",
    inputs=("mean", "logvar"), differentiable=("mean", "logvar"), predictions=("mean", "logvar"),
    value=gaussian_kl_value, vjp=gaussian_kl_vjp,
    validate=_check_latent, output_shape=_per_distribution("mean"),
    formula=r"\ell = \tfrac12\textstyle\sum_d \left(e^{v_d} + \mu_d^2 - 1 - v_d\right),\ v = \log\sigma^2",
    gradient=r"\partial\ell/\partial\mu_d = \mu_d,\ \ \partial\ell/\partial v_d = \tfrac12\left(e^{v_d} - 1\right)",
    sample=_sample_gaussian_kl,
    literature=("Kingma & Welling, Auto-Encoding Variational Bayes (2014), Appendix B; Artifex "
                "gaussian_kl_divergence",),
    notes=("`mean` and `logvar` of one shape, the latent dimensions on the last axis; one value per sample (the "
           "shape without the last axis), as Artifex's gaussian_kl_divergence for (batch, latent) inputs (for "
           "more dimensions Artifex sums all but the first; here reduce further with `reduction`/`axis`). "
           "e^v - 1 - v is computed as expm1(v) - v, exact near v = 0. exp(logvar) overflows above logvar ~ 88.7 "
           "in float32 (709.8 in float64): the value and the logvar gradient are then +inf, the true value being "
           "beyond the dtype's range."),
))


# --------------------------------------------------------------------------- poisson_nll (PyTorch)


def _counts(xp, target, like):
    return target if target.dtype == like.dtype else xp.astype(target, like.dtype)


def poisson_nll_value(xp, input, target, *, log_input, full, eps):
    """e^x - t x (log_input), else x - t log(x + eps); full adds t log t - t + 1/2 log(2 pi t) where t > 1."""
    t = _counts(xp, target, input)
    if log_input:
        loss = xp.exp(input) - t * input
    else:
        loss = input - _numerics.xlogy(xp, t, input + eps)
    if full:
        big = t > 1
        ts = xp.where(big, t, xp.ones_like(t))
        stirling = ts * xp.log(ts) - ts + 0.5 * xp.log(2.0 * math.pi * ts)
        loss = loss + xp.where(big, stirling, xp.zeros_like(t))
    return loss


def poisson_nll_vjp(xp, cotangent, input, target, *, log_input, full, eps):
    t = _counts(xp, target, input)
    if log_input:
        return {"input": cotangent * (xp.exp(input) - t)}
    # d/dx = 1 - t / (x + eps); t = 0 gives exactly 1 (the value is x there), also at x + eps = 0
    return {"input": cotangent * (1.0 - t / xp.where(t == 0, xp.ones_like(input), input + eps))}


def _check_poisson(xp, inputs, options, concrete):
    x, t = inputs["input"], inputs["target"]
    _validation.check_real_or_integral("target", t, xp)
    if concrete:
        _validation.check_value_range("target", t, xp, low=0, what="non-negative (Poisson counts)")
        if not options["log_input"]:
            _validation.check_value_range("input", x, xp, low=0.0,
                                          what="non-negative rates with log_input=False")


def _sample_poisson(rng, shape, options):
    x = rng.normal(0.3, 1.0, shape) if options["log_input"] else rng.uniform(0.2, 4.0, shape)
    return {"input": x, "target": rng.poisson(2.5, shape).astype(float)}


def _torch_poisson(torch, inputs, options, reduction, weight=None):
    if weight is not None:
        raise TypeError("poisson_nll_loss takes no weight")
    return torch.nn.functional.poisson_nll_loss(inputs["input"], inputs["target"], reduction=reduction, **options)


register(LossSpec(
    name="poisson_nll", family=FAMILY,
    summary="Poisson negative log-likelihood (PyTorch's poisson_nll_loss), on log-rates or rates.",
    inputs=("input", "target"), differentiable=("input",), label_inputs=("target",),
    value=poisson_nll_value, vjp=poisson_nll_vjp, validate=_check_poisson,
    domains={"input": (("[0, inf)", {"log_input": False}),), "target": "[0, inf)"},
    options=(Option("log_input", True, "Whether `input` holds log-rates (True) or rates (False).", _flag),
             Option("full", False, "Add Stirling's approximation of log(t!) where t > 1 (True or False).", _flag),
             Option("eps", 1e-8, "Added to the rate inside the log when log_input=False (>= 0).", number(low=0.0))),
    formula=(r"\ell = e^{x} - t x\ (\text{log\_input}),\quad x - t\log(x + \epsilon)\ \text{otherwise};\ "
             r"\text{full: } + \left(t\log t - t + \tfrac12\log(2\pi t)\right)[t > 1]"),
    gradient=(r"\partial\ell/\partial x = e^{x} - t\ (\text{log\_input}),\quad "
              r"1 - t/(x + \epsilon)\ \text{otherwise}"),
    sample=_sample_poisson,
    aliases=("poisson_nll_loss",),
    functional=("poisson_nll_loss",),
    references={"torch": Reference("torch.nn.functional.poisson_nll_loss", _torch_poisson)},
    option_cases=({}, {"full": True}, {"log_input": False}, {"log_input": False, "full": True, "eps": 1e-3}),
    literature=("torch.nn.functional.poisson_nll_loss",),
    notes=("As PyTorch: `input` is the log-rate (log_input=True) or the rate, `target` the observed counts "
           "(floating or integer; non-negative, checked; no gradient). With log_input=False rates must be "
           "non-negative (checked); a zero count adds exactly x, also at x + eps = 0. `full` adds Stirling's "
           "term where t > 1 (0 for t <= 1). Keras's `poisson` (y_pred - y_true log(y_pred + 1e-7), averaged "
           "over the last axis) is this loss with log_input=False, eps=1e-7, with the arguments swapped."),
))


# --------------------------------------------------------------------------- gaussian_nll (PyTorch)


def _var_form(var_shape, input_shape):
    """How `var` meets the input, by PyTorch's rules: "same", "drop_last" (one dim fewer), "broadcast", or None."""
    var_shape, input_shape = tuple(var_shape), tuple(input_shape)
    if var_shape == input_shape:
        return "same"
    if var_shape == input_shape[:-1]:
        return "drop_last"
    if not var_shape:
        return "broadcast"  # a scalar variance (PyTorch's float var)
    if len(var_shape) == len(input_shape) and sum(v for i, v in zip(input_shape, var_shape) if i != v) == 1:
        return "broadcast"
    return None


def _variance(xp, input, var, eps):
    if var.dtype != input.dtype:  # a Python float var arrives as float64
        var = xp.astype(var, input.dtype)
    v = xp.expand_dims(var, axis=-1) if _var_form(var.shape, input.shape) == "drop_last" else var
    # PyTorch clamps under no_grad: the value uses max(var, eps), the gradient passes straight through
    return xp.maximum(v, eps)


def _sum_to_var(xp, g, var):
    """The gradient of the broadcast variance, summed back to `var`'s own shape."""
    form = _var_form(var.shape, g.shape)
    if form == "same":
        return g
    if form == "drop_last":
        return xp.sum(g, axis=-1)
    if var.ndim == 0:
        return xp.sum(g)
    axes = tuple(i for i, (n, m) in enumerate(zip(var.shape, g.shape)) if n == 1 and m != 1)
    return xp.sum(g, axis=axes, keepdims=True) if axes else g


def gaussian_nll_value(xp, input, target, var, *, full, eps):
    """1/2 (log v + (x - y)^2 / v), v = max(var, eps); full adds 1/2 log(2 pi)."""
    v = _variance(xp, input, var, eps)
    r = input - target
    loss = 0.5 * (xp.log(v) + r * r / v)
    return loss + HALF_LOG_2PI if full else loss


def gaussian_nll_vjp(xp, cotangent, input, target, var, *, full, eps):
    # d/dx = r / v = -d/dy;  d/dvar = (v - r^2) / (2 v^2), through the clamp (PyTorch's no_grad clamp)
    v = _variance(xp, input, var, eps)
    r = input - target
    g = cotangent * r / v
    # summed here, not by the engine: an element with a zero cotangent (masked out) must add 0 even where it is NaN
    gv = xp.where(cotangent == 0, xp.zeros_like(g), 0.5 * cotangent * (v - r * r) / (v * v))
    return {"input": g, "target": -g, "var": _sum_to_var(xp, gv, var)}


def _check_gaussian_nll(xp, inputs, options, concrete):
    x, var = inputs["input"], inputs["var"]
    if _var_form(var.shape, x.shape) is None:
        raise _validation.bad_variance_shape("var", var, "input", x)
    if concrete:
        _validation.check_value_range("var", var, xp, low=0.0, what="non-negative (variances)")


def _sample_gaussian_nll(rng, shape, options):
    # the variance's form cycles with the option case, so that the conformance cases cover all three:
    # the input's shape, one dimension fewer (PyTorch's homoscedastic form), a dimension of size 1
    shape = tuple(shape)
    case = int(options["full"]) + 2 * int(options["eps"] != 1e-6)
    form = (len(shape) + case) % 3
    if form == 0:
        var_shape = shape
    elif form == 1:
        var_shape = shape[:-1]
    else:
        axis = 1 if len(shape) >= 3 else len(shape) - 1
        var_shape = shape[:axis] + (1,) + shape[axis + 1:]
    target = rng.normal(0.0, 1.0, shape)
    return {"input": target + rng.normal(0.0, 1.5, shape), "target": target, "var": rng.uniform(0.2, 2.0, var_shape)}


def _torch_gaussian_nll(torch, inputs, options, reduction, weight=None):
    if weight is not None:
        raise TypeError("gaussian_nll_loss takes no weight")
    return torch.nn.functional.gaussian_nll_loss(inputs["input"], inputs["target"], inputs["var"],
                                                 reduction=reduction, **options)


register(LossSpec(
    name="gaussian_nll", family=FAMILY,
    summary="Gaussian negative log-likelihood with predicted variances (PyTorch's gaussian_nll_loss).",
    inputs=("input", "target", "var"), differentiable=("input", "target", "var"), predictions=("input", "var"),
    same_shape=("input", "target"),
    value=gaussian_nll_value, vjp=gaussian_nll_vjp, validate=_check_gaussian_nll, domains={"var": "[0, inf)"},
    options=(Option("full", False, "Add the constant 1/2 log(2 pi) (True or False).", _flag),
             Option("eps", 1e-6, "Floor of the variance (> 0); the gradient passes through it, as PyTorch.",
                    number(low=0.0, low_open=True))),
    formula=r"\ell = \tfrac12\left(\log v + (x - y)^2 / v\right)\ (+\tfrac12\log 2\pi),\ v = \max(\mathrm{var}, \epsilon)",
    gradient=(r"\partial\ell/\partial x = (x - y)/v = -\partial\ell/\partial y,\ \ "
              r"\partial\ell/\partial\,\mathrm{var} = \frac{v - (x - y)^2}{2v^2}\ \text{(summed over broadcast axes)}"),
    sample=_sample_gaussian_nll,
    aliases=("gaussian_nll_loss",),
    functional=("gaussian_nll_loss",),
    references={"torch": Reference("torch.nn.functional.gaussian_nll_loss", _torch_gaussian_nll)},
    option_cases=({}, {"full": True}, {"eps": 1e-3}),
    literature=("Nix & Weigend, Estimating the mean and variance of the target probability distribution (1994); "
                "torch.nn.functional.gaussian_nll_loss",),
    notes=("`input` (the mean) and `target` have one shape; `var` broadcasts by PyTorch's rules: the input's "
           "shape (heteroscedastic), the input's shape without its last dimension (one variance per row), the "
           "input's shape with exactly one dimension of size 1, or a scalar (PyTorch's float var). Its gradient "
           "has var's own shape (summed over the broadcast dimensions). Negative variances are rejected. As "
           "PyTorch, the variance is clamped at `eps` without a gradient of the clamp: below eps the gradient is "
           "that of the clamped value, passed straight through to `var`."),
))
