"""Binary and multi-label classification losses: one independent decision per element.

Each loss is a value function (unreduced, per element unless said otherwise)
and its hand-derived vjp side by side; ``x`` is the input, ``t`` the target,
``s(x)`` the sigmoid and ``sp(x) = log(1 + e^x)`` the softplus, so that
``log s(x) = -sp(-x)``. The engine adds reduction, weights and masks.
"""

from __future__ import annotations

from ... import _numerics, _validation
from ...registry import LossSpec, Option, Reference, register
from .._common import away_from, number

FAMILY = "classification"


def _torch_ref(fname, *, own=()):
    """PyTorch's functional loss; ``own`` are optional inputs passed through by name (pos_weight, weight)."""
    def call(torch, inputs, options, reduction, weight=None):
        extra = {} if weight is None else {"weight": weight}
        extra.update({n: inputs[n] for n in own if inputs.get(n) is not None})
        fn = getattr(torch.nn.functional, fname)
        return fn(inputs["input"], inputs["target"], reduction=reduction, **options, **extra)
    return Reference(f"torch.nn.functional.{fname}", call)


def _signs(rng, shape):
    return rng.choice([-1.0, 1.0], size=shape)


# --------------------------------------------------------------------------- binary_cross_entropy

LOG_FLOOR = -100.0  # PyTorch clamps each log at -100, so p = 0 or 1 gives a finite loss
BCE_EPSILON = 1e-12  # PyTorch's floor of x (1 - x) in the input gradient


def _clamped_logs(xp, x):
    """(max(log x, -100), max(log(1 - x), -100)) for x in [0, 1], never evaluating log 0."""
    pos, below_one = x > 0, x < 1
    log_x = xp.log(xp.where(pos, x, 1.0))
    log_1mx = xp.log1p(-xp.where(below_one, x, 0.0))
    return (xp.where(pos, xp.maximum(log_x, LOG_FLOOR), LOG_FLOOR),
            xp.where(below_one, xp.maximum(log_1mx, LOG_FLOOR), LOG_FLOOR))


def binary_cross_entropy_value(xp, input, target):
    """-(t max(log x, -100) + (1 - t) max(log(1 - x), -100))."""
    log_x, log_1mx = _clamped_logs(xp, input)
    return -(target * log_x + (1.0 - target) * log_1mx)


def _bce_input_grad(xp, input, target):
    # d/dx = (x - t) / (x (1 - x)), with PyTorch's floor of the denominator: finite at x = 0 and 1
    return (input - target) / xp.maximum((1.0 - input) * input, BCE_EPSILON)


def binary_cross_entropy_vjp(xp, cotangent, input, target):
    log_x, log_1mx = _clamped_logs(xp, input)
    return {"input": cotangent * _bce_input_grad(xp, input, target),
            "target": cotangent * (log_1mx - log_x)}


def binary_cross_entropy_fused(xp, input, target):
    log_x, log_1mx = _clamped_logs(xp, input)
    value = -(target * log_x + (1.0 - target) * log_1mx)
    return value, lambda ct: {"input": ct * _bce_input_grad(xp, input, target), "target": ct * (log_1mx - log_x)}


def _check_probabilities(xp, inputs, options, concrete):
    # as PyTorch, NaN is rejected too: the clamped logs would turn it into a finite loss of 100
    if concrete:
        _validation.check_unit_interval("input", inputs["input"], xp, "probabilities in [0, 1]")
        _validation.check_unit_interval("target", inputs["target"], xp, "in [0, 1]")


def _sample_bce(rng, shape, options):
    # both inside [0, 1] with room for finite differences (the target is checked too)
    return {"input": rng.uniform(0.05, 0.95, shape), "target": rng.uniform(0.01, 0.99, shape)}


register(LossSpec(
    name="binary_cross_entropy", family=FAMILY, summary="Binary cross entropy on probabilities (PyTorch's, logs clamped at -100).",
    inputs=("input", "target"), differentiable=("input", "target"),
    value=binary_cross_entropy_value, vjp=binary_cross_entropy_vjp, fused=binary_cross_entropy_fused,
    validate=_check_probabilities, weighted_mean="count", domains={"input": "[0, 1]", "target": "[0, 1]"},
    formula=r"\ell = -\left(t \max(\log x, -100) + (1 - t)\max(\log(1 - x), -100)\right)",
    gradient=(r"\partial\ell/\partial x = \frac{x - t}{\max(x(1 - x), 10^{-12})},\quad "
              r"\partial\ell/\partial t = \max(\log(1 - x), -100) - \max(\log x, -100)"),
    sample=_sample_bce,
    functional=("binary_cross_entropy",),
    references={"torch": _torch_ref("binary_cross_entropy")},
    literature=("torch.nn.functional.binary_cross_entropy",),
    notes=("`input` holds probabilities and `target` values in [0, 1]; others, NaN included, are rejected (as "
           "PyTorch does). As PyTorch, each log is clamped "
           "at -100 (x = 0 or 1 gives a finite loss), the input gradient's denominator x(1 - x) is floored at "
           "1e-12, and a weighted mean divides by the element count. The target gradient is the derivative of "
           "the clamped value, so it is +-100 (not PyTorch's +-inf) at x = 0 or 1."),
))


# --------------------------------------------------------------------------- binary_cross_entropy_with_logits


def _logistic(xp, x):
    """(-x, n, m, a, b, e, tail, den) of logits x: n = min(x, 0), m = min(-x, 0), a = e^n, b = e^m, e = ab = e^-|x|,
    tail = log1p(e), den = 1 + e, so that s(x) = a / den, s(-x) = b / den, sp(x) = tail - m, sp(-x) = tail - n.

    Every exponent is <= 0, so each part is exact to a few ulps for any finite x (no overflow, no cancellation).
    """
    x_neg = -x
    n, m = xp.minimum(x, 0.0), xp.minimum(x_neg, 0.0)
    a, b = xp.exp(n), xp.exp(m)
    e = a * b  # one factor is 1
    return x_neg, n, m, a, b, e, xp.log1p(e), 1.0 + e


def _bce_logits_parts(xp, input, target, pos_weight):
    x_neg, n, m, a, b, _, tail, den = _logistic(xp, input)
    sp_pos, sp_neg = tail - m, tail - n
    w = 1.0 - target
    pt = target if pos_weight is None else pos_weight * target
    return w * sp_pos + pt * sp_neg, (x_neg, a, b, den, sp_pos, sp_neg, w, pt)


def _bce_logits_slopes(pos_weight, parts):
    # l = (1 - t) sp(x) + p t sp(-x), p = pos_weight (1 if None):
    # dl/dx = (1 - t) s(x) - p t s(-x)  (= s(x) - t for p = 1, without its cancellation at large |x|);
    # dl/dt = -sp(x) + p sp(-x)  (= -x for p = 1)
    x_neg, a, b, den, sp_pos, sp_neg, w, pt = parts
    return (w * a - pt * b) / den, x_neg if pos_weight is None else pos_weight * sp_neg - sp_pos


def bce_with_logits_value(xp, input, target, pos_weight=None):
    """(1 - t) sp(x) + p t sp(-x) = -(p t log s(x) + (1 - t) log s(-x)); p = pos_weight."""
    return _bce_logits_parts(xp, input, target, pos_weight)[0]


def bce_with_logits_vjp(xp, cotangent, input, target, pos_weight=None):
    d_input, d_target = _bce_logits_slopes(pos_weight, _bce_logits_parts(xp, input, target, pos_weight)[1])
    return {"input": cotangent * d_input, "target": cotangent * d_target}


def bce_with_logits_fused(xp, input, target, pos_weight=None):
    # one pass forward gives the value and both slopes; the pullback scales the slopes in place
    def forward(x, t, p=None):
        value, parts = _bce_logits_parts(xp, x, t, p)
        return (value, *_bce_logits_slopes(p, parts))

    arrays = (input, target) if pos_weight is None else (input, target, pos_weight)
    value, *slopes = _numerics.map_chunks(xp, forward, *arrays)
    take_slopes = _numerics.once(slopes, lambda: forward(*arrays)[1:])

    def pullback(ct):
        d_input, d_target = take_slopes()
        return {"input": _numerics.times_cotangent(xp, ct, d_input),
                "target": _numerics.times_cotangent(xp, ct, d_target)}

    return value, pullback


def _check_pos_weight(xp, inputs, options, concrete):
    if inputs.get("pos_weight") is not None:
        _validation.check_broadcasts_to("pos_weight", inputs["pos_weight"], "input", tuple(inputs["input"].shape))


def _sample_bce_logits(rng, shape, options):
    out = {"input": rng.normal(0.0, 3.0, shape), "target": rng.uniform(0.0, 1.0, shape)}
    # pos_weight along the class (last) axis for 2-D batches, PyTorch's (C, 1) form for 3-D ones
    if len(shape) == 2 and shape[0] > 1:
        out["pos_weight"] = rng.uniform(0.5, 3.0, shape[-1:])
    elif len(shape) == 3:
        out["pos_weight"] = rng.uniform(0.5, 3.0, (shape[1], 1))
    return out


def _optax_bce(optax, inputs, options, reduction, weight=None):
    x, t, p = inputs["input"], inputs["target"], inputs.get("pos_weight")
    if p is None:
        return optax.losses.sigmoid_binary_cross_entropy(x, t)
    # optax has no pos_weight; the loss is linear in the label: (1 - t) l(x, 0) + p t l(x, 1)
    bce = optax.losses.sigmoid_binary_cross_entropy
    return (1.0 - t) * bce(x, 0.0 * t) + p * t * bce(x, 0.0 * t + 1.0)


register(LossSpec(
    name="binary_cross_entropy_with_logits", family=FAMILY,
    summary="Binary cross entropy on logits (sigmoid fused in), with PyTorch's pos_weight.",
    inputs=("input", "target", "pos_weight"), differentiable=("input", "target"),
    optional_inputs=("pos_weight",), same_shape=("input", "target"),
    value=bce_with_logits_value, vjp=bce_with_logits_vjp, fused=bce_with_logits_fused,
    validate=_check_pos_weight, weighted_mean="count",
    formula=r"\ell = (1 - t)\,\operatorname{sp}(x) + p\,t\,\operatorname{sp}(-x),\ \operatorname{sp}(x) = \log(1 + e^x)",
    gradient=(r"\partial\ell/\partial x = (1 - t)\,\sigma(x) - p\,t\,\sigma(-x)\ (\sigma(x) - t\ \text{for}\ p = 1),\quad "
              r"\partial\ell/\partial t = p\,\operatorname{sp}(-x) - \operatorname{sp}(x)"),
    sample=_sample_bce_logits,
    aliases=("bce_with_logits", "sigmoid_binary_cross_entropy"),
    functional=("binary_cross_entropy_with_logits", "sigmoid_binary_cross_entropy"),
    references={"torch": _torch_ref("binary_cross_entropy_with_logits", own=("pos_weight",)),
                "optax": Reference("optax.losses.sigmoid_binary_cross_entropy", _optax_bce)},
    literature=("torch.nn.functional.binary_cross_entropy_with_logits",),
    notes=("`pos_weight` (optional, no gradient) multiplies the positive term and broadcasts to the input by "
           "NumPy rules, as PyTorch's: shape (C,) weighs the classes of an (N, C) input. Written with two "
           "softplus terms and both sigmoids from exp(min(x, 0)) and exp(min(-x, 0)), whose exponents are never "
           "positive, so values and gradients are finite and exact for |x| up to 1e9 and beyond. A weighted mean "
           "divides by the element count, as PyTorch."),
))


# --------------------------------------------------------------------------- focal


def _focal_parts(xp, input, target, gamma, alpha):
    _, n, m, a, b, e, tail, den = _logistic(xp, input)
    w = 1.0 - target
    ce = w * (tail - m) + target * (tail - n)
    # q = 1 - p_t = (w a + t b) / den, w = 1 - t, its numerator floored at the dtype's smallest normal number: it never
    # underflows to a 0 that q^(gamma-1) would divide (a hard target at |x| beyond ~87 in float32); where the floor
    # holds, the outputs are themselves below that number (each carries a factor sp(-|x|) or s(-|x|), as q does)
    wa, tb = w * a, target * b
    q_den = xp.maximum(wa + tb, float(xp.finfo(w.dtype).smallest_normal))
    focal = (q_den / den) ** gamma
    weight = focal * ((1.0 - alpha) + (2.0 * alpha - 1.0) * target) if _balanced(alpha) else focal
    return weight * ce, (e, den, w, ce, wa, tb, q_den, weight)


def _focal_slope(target, gamma, parts):
    # l = a_t ce q^g with dce/dx = (1 - t) s(x) - t s(-x) (= s(x) - t without its cancellation where s(x) rounds
    # to 1) and dq/dx = (1 - 2t) s(x) s(-x):
    # dl/dx = a_t q^g [dce + g (1 - 2t) ce r], r = s(x) s(-x) / q = e / (den^2 q) <= 1
    e, den, w, ce, wa, tb, q_den, weight = parts
    return weight * ((wa - tb) / den + gamma * (w - target) * ce * (e / (den * q_den)))


def focal_value(xp, input, target, *, gamma, alpha):
    """a_t ce (1 - p_t)^gamma, ce = BCE with logits, p_t = p t + (1-p)(1-t), a_t = a t + (1-a)(1-t)."""
    return _focal_parts(xp, input, target, gamma, alpha)[0]


def focal_vjp(xp, cotangent, input, target, *, gamma, alpha):
    return {"input": cotangent * _focal_slope(target, gamma, _focal_parts(xp, input, target, gamma, alpha)[1])}


def focal_fused(xp, input, target, *, gamma, alpha):
    # one pass forward gives the value and the slope; the pullback scales the slope in place
    def forward(x, t):
        value, parts = _focal_parts(xp, x, t, gamma, alpha)
        return value, _focal_slope(t, gamma, parts)

    value, slope = _numerics.map_chunks(xp, forward, input, target)
    take_slope = _numerics.once(slope, lambda: forward(input, target)[1])
    return value, lambda ct: {"input": _numerics.times_cotangent(xp, ct, take_slope())}


def _alpha(name, value):
    """alpha in [0, 1]; None, or any negative value as torchvision, means no class balance."""
    if value is None:
        return None
    _validation.check_number(name, value, high=1.0)
    return float(value)


def _balanced(alpha):
    return alpha is not None and alpha >= 0


def _check_binary_targets(xp, inputs, options, concrete):
    if concrete:
        _validation.check_value_range("target", inputs["target"], xp, low=0.0, high=1.0, what="in [0, 1]")


def _sample_focal(rng, shape, options):
    x = rng.uniform(-4.0, 4.0, shape)
    # hard labels, except soft ones for 3-D shapes
    t = rng.uniform(0.0, 1.0, shape) if len(shape) == 3 else rng.integers(0, 2, shape).astype(float)
    return {"input": x, "target": t}


def _optax_focal(optax, inputs, options, reduction, weight=None):
    alpha = options["alpha"] if _balanced(options["alpha"]) else None
    return optax.losses.sigmoid_focal_loss(inputs["input"], inputs["target"], alpha=alpha, gamma=options["gamma"])


register(LossSpec(
    name="focal", family=FAMILY, summary="Sigmoid focal loss (torchvision's): cross entropy scaled by (1 - p_t)^gamma.",
    inputs=("input", "target"), differentiable=("input",),
    value=focal_value, vjp=focal_vjp, fused=focal_fused, validate=_check_binary_targets,
    domains={"target": "[0, 1]"},
    options=(Option("gamma", 2.0, "Focusing exponent of (1 - p_t) (>= 0; 0 gives balanced cross entropy).",
                    number(low=0.0)),
             Option("alpha", 0.25, "Weight of the positive class in [0, 1] (1 - alpha for the negative); "
                                   "None (or a negative value, as torchvision) for no class balance.", _alpha)),
    formula=(r"\ell = \alpha_t\,(1 - p_t)^{\gamma}\,\mathrm{BCE}(x, t),\ p_t = p\,t + (1 - p)(1 - t),\ "
             r"\alpha_t = \alpha t + (1 - \alpha)(1 - t),\ p = \sigma(x)"),
    gradient=(r"\partial\ell/\partial x = \alpha_t\left[(\sigma(x) - t)(1 - p_t)^{\gamma} + "
              r"\gamma (1 - 2t)\,\mathrm{BCE}\,(1 - p_t)^{\gamma - 1}\sigma(x)\sigma(-x)\right]"),
    sample=_sample_focal,
    aliases=("sigmoid_focal_loss", "focal_loss", "binary_focal"),
    functional=("focal_loss", "sigmoid_focal_loss"),
    references={"optax": Reference("optax.losses.sigmoid_focal_loss", _optax_focal)},
    option_cases=({}, {"gamma": 0.5, "alpha": None}, {"gamma": 0.0, "alpha": 0.5}, {"gamma": 3.0, "alpha": 0.9}),
    literature=("Lin et al., Focal Loss for Dense Object Detection (2017); torchvision.ops.sigmoid_focal_loss",),
    notes=("`input` holds logits, `target` labels in [0, 1] (soft labels allowed). 1 - p_t is formed from "
           "sigmoid terms exact for any logit and floored at the dtype's smallest normal number, so it never "
           "underflows to 0 and gamma < 1 gives finite gradients even at logits of +-1e9 (the floor changes only "
           "results that are themselves below that number)."),
))


# --------------------------------------------------------------------------- soft_margin


def soft_margin_value(xp, input, target):
    """log(1 + exp(-t x)) = sp(-t x)."""
    return _numerics.softplus(xp, -target * input)


def soft_margin_vjp(xp, cotangent, input, target):
    return {"input": -cotangent * target * _numerics.sigmoid(xp, -target * input)}


def _sample_soft_margin(rng, shape, options):
    return {"input": rng.normal(0.0, 2.0, shape), "target": _signs(rng, shape)}


register(LossSpec(
    name="soft_margin", family=FAMILY, summary="Two-class logistic loss on +-1 targets (PyTorch's soft margin).",
    inputs=("input", "target"), differentiable=("input",),
    value=soft_margin_value, vjp=soft_margin_vjp,
    formula=r"\ell = \log(1 + e^{-t x})",
    gradient=r"\partial\ell/\partial x = -t\,\sigma(-t x)",
    sample=_sample_soft_margin,
    aliases=("soft_margin_loss",),
    functional=("soft_margin_loss",),
    references={"torch": _torch_ref("soft_margin_loss")},
    literature=("torch.nn.functional.soft_margin_loss",),
    notes="`target` holds +-1 (as PyTorch, other values are not rejected).",
))


# --------------------------------------------------------------------------- multilabel_soft_margin


def _multilabel_parts(xp, input, target, weight):
    sp_pos, sp_neg, sig, sig_neg = _numerics.sigmoid_terms(xp, input)
    per_class = target * sp_neg + (1.0 - target) * sp_pos
    w = 1.0 / input.shape[-1] if weight is None else weight / input.shape[-1]
    return xp.sum(w * per_class, axis=-1), (sig, sig_neg, w)


def _multilabel_grad(xp, ct, target, parts):
    sig, sig_neg, w = parts  # s(x) - t as (1 - t) s(x) - t s(-x): no cancellation at large |x|
    return {"input": xp.expand_dims(ct, axis=-1) * w * ((1.0 - target) * sig - target * sig_neg)}


def multilabel_soft_margin_value(xp, input, target, weight=None):
    """Per sample: (1/C) sum_c w_c (t sp(-x) + (1 - t) sp(x)) = -(1/C) sum_c w_c (t log s(x) + (1 - t) log s(-x))."""
    return _multilabel_parts(xp, input, target, weight)[0]


def multilabel_soft_margin_vjp(xp, cotangent, input, target, weight=None):
    return _multilabel_grad(xp, cotangent, target, _multilabel_parts(xp, input, target, weight)[1])


def multilabel_soft_margin_fused(xp, input, target, weight=None):
    value, parts = _multilabel_parts(xp, input, target, weight)
    return value, lambda ct: _multilabel_grad(xp, ct, target, parts)


def _check_multilabel(xp, inputs, options, concrete):
    x = inputs["input"]
    _validation.check_ndim("input", x, at_least=1)
    if inputs.get("weight") is not None:
        _validation.check_broadcasts_to("weight", inputs["weight"], "input", tuple(x.shape))


def _sample_multilabel(rng, shape, options):
    out = {"input": rng.normal(0.0, 2.0, shape), "target": rng.integers(0, 2, shape).astype(float)}
    if len(shape) >= 2 and shape[0] > 1:
        out["weight"] = rng.uniform(0.5, 2.0, shape[-1:])
    return out


register(LossSpec(
    name="multilabel_soft_margin", family=FAMILY,
    summary="Multi-label one-versus-all logistic loss, averaged over the classes (PyTorch's).",
    inputs=("input", "target", "weight"), differentiable=("input",),
    optional_inputs=("weight",), same_shape=("input", "target"),
    value=multilabel_soft_margin_value, vjp=multilabel_soft_margin_vjp, fused=multilabel_soft_margin_fused,
    validate=_check_multilabel, output_shape=lambda shapes, options: shapes["input"][:-1],
    formula=r"\ell_n = -\tfrac1C\sum_c w_c\left(t_{nc}\log\sigma(x_{nc}) + (1 - t_{nc})\log\sigma(-x_{nc})\right)",
    gradient=r"\partial\ell_n/\partial x_{nc} = \tfrac1C\,w_c\,(\sigma(x_{nc}) - t_{nc})",
    sample=_sample_multilabel,
    aliases=("multilabel_soft_margin_loss",),
    functional=("multilabel_soft_margin_loss",),
    references={"torch": _torch_ref("multilabel_soft_margin_loss", own=("weight",))},
    literature=("torch.nn.functional.multilabel_soft_margin_loss",),
    notes=("Classes lie on the last axis; the unreduced loss has one value per sample. `weight` (optional, "
           "no gradient) holds PyTorch's class weights, shape (C,) or anything that broadcasts to the input."),
))


# --------------------------------------------------------------------------- hinge


def hinge_value(xp, input, target, *, margin):
    """max(0, margin - t x)."""
    return xp.maximum(margin - target * input, 0.0)


def hinge_vjp(xp, cotangent, input, target, *, margin):
    # -t where the margin is violated, 0 elsewhere (subgradient 0 at the kink)
    return {"input": xp.where(margin - target * input > 0, -cotangent * target, 0.0)}


def _check_signs(xp, inputs, options, concrete):
    if concrete:
        _validation.check_values_in("target", inputs["target"], xp, (-1.0, 1.0), "hold -1 or 1")


def _margin_sampler(kink):
    def sample(rng, shape, options):
        t = _signs(rng, shape)
        k = kink(options)
        s = away_from(rng, rng.uniform(k - 3.0, k + 3.0, shape), (k,), 0.05, k - 3.0, k + 3.0)  # s = t x
        return {"input": t * s, "target": t}
    return sample


def _optax_hinge(optax, inputs, options, reduction, weight=None):
    if options["margin"] != 1.0:  # optax's hinge has a fixed margin of 1; shifting the score gives the others
        return optax.losses.hinge_loss(inputs["input"] - inputs["target"] * (options["margin"] - 1.0), inputs["target"])
    return optax.losses.hinge_loss(inputs["input"], inputs["target"])


register(LossSpec(
    name="hinge", family=FAMILY, summary="Hinge loss on +-1 targets (SVM).",
    inputs=("input", "target"), differentiable=("input",),
    value=hinge_value, vjp=hinge_vjp, validate=_check_signs, domains={"target": "{-1, 1}"},
    options=(Option("margin", 1.0, "Margin the score t x must reach (>= 0).", number(low=0.0)),),
    formula=r"\ell = \max(0, m - t x)",
    gradient=r"\partial\ell/\partial x = -t\ (t x < m),\ 0\ \text{otherwise}",
    sample=_margin_sampler(lambda o: o["margin"]),
    aliases=("hinge_loss",),
    functional=("hinge_loss",),
    references={"optax": Reference("optax.losses.hinge_loss", _optax_hinge)},
    option_cases=({}, {"margin": 0.5}, {"margin": 0.0}),
    literature=("Cortes & Vapnik, Support-Vector Networks (1995); optax.losses.hinge_loss",),
    notes="`target` must hold -1 or 1. The subgradient at the kink t x = margin is 0.",
))


# --------------------------------------------------------------------------- squared_hinge


def squared_hinge_value(xp, input, target):
    """max(0, 1 - t x)^2."""
    h = xp.maximum(1.0 - target * input, 0.0)
    return h * h


def squared_hinge_vjp(xp, cotangent, input, target):
    return {"input": -2.0 * cotangent * target * xp.maximum(1.0 - target * input, 0.0)}


register(LossSpec(
    name="squared_hinge", family=FAMILY, summary="Squared hinge loss on +-1 targets (Keras's, elementwise).",
    inputs=("input", "target"), differentiable=("input",),
    value=squared_hinge_value, vjp=squared_hinge_vjp, validate=_check_signs, domains={"target": "{-1, 1}"},
    formula=r"\ell = \max(0, 1 - t x)^2",
    gradient=r"\partial\ell/\partial x = -2t\max(0, 1 - t x)",
    sample=_margin_sampler(lambda o: 1.0),
    aliases=("squared_hinge_loss",),
    functional=("squared_hinge_loss",),
    literature=("Keras SquaredHinge",),
    notes="`target` must hold -1 or 1 (Keras converts 0/1 labels; here they are rejected). Elementwise: "
          "Keras's mean over the last axis is reduction='mean' with axis=-1.",
))
