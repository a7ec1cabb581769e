"""Segmentation and overlap losses: Dice, generalized Dice, Jaccard, Tversky, focal Tversky, MCC, Lovász.

Layout as segmentation_models_pytorch (smp): ``input`` is ``(N, C, *spatial)``
for ``mode="multiclass"`` (target: class indices ``(N, *spatial)``) and
``mode="multilabel"`` (target: a 0/1 mask of the input's shape); for
``mode="binary"`` the input and the 0/1 target share any shape ``(N, ...)``
and form one class. Inputs are logits by default (``from_logits=True``, smp's
default: softmax over axis 1 for multiclass, sigmoid otherwise); pass
``from_logits=False`` for probabilities.

The overlap losses reduce over the pixels of the batch (``per_image=False``,
smp's ``dims=(0, 2)``) or of each image (``per_image=True``) and give one
value per class: shape ``(C,)`` or ``(N, C)`` (binary: ``()`` or ``(N,)``).
Their ``reduction="mean"`` is smp's mean over classes. Every one of them is a
function of three soft counts per class, I = sum p t, Sp = sum p, St = sum t
(masked by ``ignore_index``), so a single pullback serves them all:
dL/dp = dL/dI * t + dL/dSp * mask.
"""

from __future__ import annotations

import math

import numpy as np

from .. import _numerics, _validation
from ..registry import LossSpec, Option, register
from ._common import PROBABILITY_INPUT, integer, number

FAMILY = "segmentation"
MODES = ("binary", "multiclass", "multilabel")


def _flag(name, value):
    _validation.check_bool(name, value)
    return value


def _choice(*choices):
    def check(name, value):
        _validation.check_choice(name, value, choices)
        return value
    return check


def _optional_integer(name, value):
    return None if value is None else integer()(name, value)


MODE = Option("mode", "multiclass", "'multiclass' (softmax over axis 1, class-index target), 'multilabel' "
              "(sigmoid per class, 0/1 mask target) or 'binary' (one class, input and mask of one shape).",
              _choice(*MODES))
FROM_LOGITS = Option("from_logits", True, "Inputs are logits (softmax/sigmoid applied, smp's default); False: "
                     "probabilities.", _flag)
SMOOTH = Option("smooth", 0.0, "Added to numerator and denominator (>= 0).", number(low=0))
PER_IMAGE = Option("per_image", False, "Sum over each image's pixels (output (N, C)) instead of the whole batch's "
                   "(output (C,)).", _flag)
IGNORE = Option("ignore_index", None, "Target value whose pixels are left out (None: none).", _optional_integer)
EPS = Option("eps", 1e-7, "Floor of the denominator (> 0).", number(low=0, low_open=True))
PROBABILITIES = "probabilities in [0, 1] (pass from_logits=True for logits)"


# --------------------------------------------------------------------------- shared parts


def _classes(mode, shape):
    return 1 if mode == "binary" else shape[1]


def _pixels(mode, shape):
    """Pixels per image and class (a size, never -1 to reshape with: an empty batch has one too)."""
    return math.prod(shape[1:] if mode == "binary" else shape[2:])


def _counts(xp, input, target, *, mode, from_logits, ignore_index, per_image, confusion=False):
    """Flattened probabilities and soft counts.

    Returns (I, Sp, St, M, pullback_parts): counts of shape (G, C) with G = N
    (per image) or 1; M is the number of counted pixels. With ``confusion`` the
    first four are instead TP, FP, FN, TN, each summed directly (no cancellation).
    """
    n = input.shape[0]
    c = _classes(mode, input.shape)
    pixels = _pixels(mode, input.shape)
    x = xp.reshape(input, (n, c, pixels))
    p_neg = None
    if not from_logits:
        p = x
        to_input = None
    elif mode == "multiclass":
        p = xp.exp(_numerics.log_softmax(xp, x, axis=1))
        def to_input(g):  # softmax: dx = p (g - <p, g>)
            return p * (g - xp.sum(p * g, axis=1, keepdims=True))
    else:
        q = _numerics.sigmoid_terms(xp, x)
        p, p_neg = q[2], q[3]
        def to_input(g):  # sigmoid' = p (1 - p)
            return g * (p * p_neg)
    if mode == "multiclass":
        labels = xp.reshape(target, (n, pixels))
        if ignore_index is None:
            m = None
            ones = xp.ones_like(labels, dtype=p.dtype)
            t = _numerics.add_at_labels(xp, xp.zeros_like(p), labels, ones, axis=1)
        else:
            valid = labels != ignore_index
            m = xp.expand_dims(xp.astype(valid, p.dtype), axis=1)
            safe = xp.where(valid, labels, xp.zeros_like(labels))
            t = _numerics.add_at_labels(xp, xp.zeros_like(p), safe, m[:, 0, :], axis=1)
    else:
        y = xp.reshape(target, (n, c, pixels))
        if ignore_index is None:
            m = None
            t = xp.astype(y, p.dtype)
        else:
            valid = y != ignore_index
            m = xp.astype(valid, p.dtype)
            t = xp.where(valid, xp.astype(y, p.dtype), xp.zeros_like(p))
    axes = (2,) if per_image else (0, 2)
    pm = p if m is None else p * m
    neg = 1.0 - t if m is None else (1.0 - t) * m  # counted background pixels
    if confusion:
        qm = 1.0 - p if p_neg is None else p_neg  # 1 - p, exact for the sigmoid
        i, sp = xp.sum(pm * t, axis=axes), xp.sum(pm * neg, axis=axes)  # TP, FP
        st, count = xp.sum(qm * t, axis=axes), xp.sum(qm * neg, axis=axes)  # FN, TN
    else:
        i = xp.sum(pm * t, axis=axes)
        sp = xp.sum(pm, axis=axes)
        st = xp.sum(t, axis=axes)
        count = xp.sum(xp.ones_like(p) if m is None else m * xp.ones_like(p), axis=axes)
    if not per_image:
        i, sp, st, count = (xp.expand_dims(v, axis=0) for v in (i, sp, st, count))
    return i, sp, st, count, (t, neg, to_input)


def _pullback(xp, input, parts, d_pos, d_neg):
    """dL/dinput from dL/dp at target pixels (d_pos) and at counted background pixels (d_neg), each (G, C).

    With I = sum p t and Sp = sum p m: d_pos = dL/dI + dL/dSp, d_neg = dL/dSp.
    """
    t, neg, to_input = parts
    g = xp.expand_dims(d_pos, axis=-1) * t + xp.expand_dims(d_neg, axis=-1) * neg
    if to_input is not None:
        g = to_input(g)
    return {"input": xp.reshape(g, input.shape)}


def _output(xp, v, mode, per_image):
    """(G, C) -> (C,) / (N, C); binary drops the class axis."""
    if not per_image:
        v = v[0, ...]
    return v[..., 0] if mode == "binary" else v


def _cotangent(xp, ct, mode, per_image):
    """The inverse of ``_output`` for a cotangent."""
    if mode == "binary":
        ct = xp.expand_dims(ct, axis=-1)
    return ct if per_image else xp.expand_dims(ct, axis=0)


def _floor(xp, den, eps):
    """max(den, eps) and d max / d den (0 where the floor holds)."""
    return xp.maximum(den, eps), xp.astype(den > eps, den.dtype)


def _overlap_loss(score_fn, *, mask_empty, confusion=False):
    """A fused (value, pullback) for an overlap loss ``score_fn(xp, *counts, **opts) -> (loss, d_pos, d_neg)``.

    ``counts`` are (I, Sp, St, M), or (TP, FP, FN, TN) with ``confusion``; see ``_pullback`` for d_pos, d_neg.
    """
    def fused(xp, input, target, *, mode, from_logits, ignore_index, per_image, **opts):
        i, sp, st, count, parts = _counts(xp, input, target, mode=mode, from_logits=from_logits,
                                          ignore_index=ignore_index, per_image=per_image, confusion=confusion)
        loss, d_pos, d_neg = score_fn(xp, i, sp, st, count, **opts)
        if mask_empty:  # smp: a class without target pixels contributes 0 (and counts in the class mean)
            present = xp.astype(st > 0, loss.dtype)
            loss, d_pos, d_neg = loss * present, d_pos * present, d_neg * present
        value = _output(xp, loss, mode, per_image)

        def pullback(ct):
            ct = _cotangent(xp, ct, mode, per_image)
            return _pullback(xp, input, parts, ct * d_pos, ct * d_neg)

        return value, pullback

    def value(xp, input, target, **options):
        return fused(xp, input, target, **options)[0]

    def vjp(xp, cotangent, input, target, **options):
        return fused(xp, input, target, **options)[1](cotangent)

    return fused, value, vjp


def _check_overlap(xp, inputs, options, concrete):
    x, y = inputs["input"], inputs["target"]
    mode, ignore = options["mode"], options.get("ignore_index")
    _validation.check_real_or_integral("target", y, xp)
    _validation.check_ndim("input", x, at_least=1 if mode == "binary" else 2)
    if mode != "binary":
        _validation.check_min_size("input", x.shape[1], 1, "a number of classes (axis 1)")
    if mode == "multiclass":
        _validation.check_shape("target", y, (x.shape[0],) + tuple(x.shape[2:]),
                                "class indices: the input's shape without its class axis 1")
        _validation.check_labels("target", y, xp, x.shape[1], ignore_index=ignore, concrete=concrete)
    else:
        _validation.check_same_shape("input", x, "target", y)
        if concrete:
            allowed = (0, 1) if ignore is None else (0, 1, ignore)
            what = "hold 0 or 1" + ("" if ignore is None else f" (or ignore_index={ignore})")
            _validation.check_values_in("target", y, xp, allowed, what)
    if concrete and not options.get("from_logits", True):
        _validation.check_unit_interval("input", x, xp, PROBABILITIES)


def _overlap_shape(shapes, options):
    shape = shapes["input"]
    c = () if options["mode"] == "binary" else (shape[1],)
    return ((shape[0],) if options["per_image"] else ()) + c


def _sample_overlap(rng, shape, options):
    mode = options["mode"]
    logits = rng.normal(0.0, 1.5, shape)
    if mode == "multiclass":
        c = shape[1]
        z = np.exp(logits - logits.max(axis=1, keepdims=True))
        p = 0.5 * z / z.sum(axis=1, keepdims=True) + 0.5 / c  # away from 0 and 1: room for finite differences
        target = rng.integers(0, c, (shape[0],) + tuple(shape[2:]))
    else:
        p = 0.1 + 0.8 / (1.0 + np.exp(-logits))
        target = (rng.random(shape) < 0.5).astype(np.float64)
    ignore = options.get("ignore_index")
    if ignore is not None:
        drop = rng.random(target.shape) < 0.2
        target = np.where(drop, ignore, target).astype(target.dtype)
    return {"input": logits if options["from_logits"] else p, "target": target}


OVERLAP_OPTIONS = (MODE, FROM_LOGITS, SMOOTH, PER_IMAGE, IGNORE, EPS)
OVERLAP_CASES = ({}, {"from_logits": False}, {"mode": "binary"}, {"mode": "multilabel", "per_image": True},
                 {"ignore_index": -1, "smooth": 1.0}, {"mode": "binary", "ignore_index": 255, "per_image": True})
# target: class indices (multiclass) or a 0/1 mask, ignore_index aside, as _check_overlap checks
OVERLAP_DOMAINS = {"input": PROBABILITY_INPUT, "target": (("[0, C)", {"mode": "multiclass"}), ("{0, 1}", {}))}
OVERLAP_NOTES = (
    "Input `(N, C, *spatial)` (multiclass: target class indices `(N, *spatial)`; multilabel: 0/1 target of the "
    "input's shape); binary: input and 0/1 target of one shape `(N, ...)`. Output: one loss per class, `(C,)`, or "
    "`(N, C)` with `per_image=True` (binary: `()` or `(N,)`); `reduction=\"mean\"` is smp's mean over classes. "
    "`from_logits=True` by default, as smp.")


def _ratio(xp, num, den_raw, eps):
    den, active = _floor(xp, den_raw, eps)
    score = num / den
    return score, den, score * active / den  # the last: -d score / d den_raw


# --------------------------------------------------------------------------- dice


def _dice_score(xp, i, sp, st, count, *, smooth, eps):
    # s = (2I + smooth) / max(Sp + St + smooth, eps);  L = 1 - s
    score, den, k = _ratio(xp, 2.0 * i + smooth, sp + st + smooth, eps)
    return 1.0 - score, k - 2.0 / den, k


dice_fused, dice_value, dice_vjp = _overlap_loss(_dice_score, mask_empty=True)
dice_value.__doc__ = "Per class: 1 - (2 sum p t + smooth) / max(sum p + sum t + smooth, eps); 0 for empty classes."

register(LossSpec(
    name="dice", family=FAMILY, summary="Soft Dice loss per class (smp DiceLoss).",
    inputs=("input", "target"), differentiable=("input",), label_inputs=("target",), same_shape=(),
    value=dice_value, vjp=dice_vjp, fused=dice_fused, validate=_check_overlap, output_shape=_overlap_shape,
    domains=OVERLAP_DOMAINS,
    options=OVERLAP_OPTIONS,
    formula=r"\ell_c = 1 - \frac{2\sum_i p_{ic} t_{ic} + s}{\max(\sum_i p_{ic} + \sum_i t_{ic} + s,\ \varepsilon)}"
            r"\ \ (0\ \text{if}\ \textstyle\sum_i t_{ic} = 0)",
    gradient=r"\partial\ell_c/\partial p_{ic} = -\frac{2 t_{ic}}{D} + \frac{\text{dice}_c}{D},\ D = \max(\cdot)",
    sample=_sample_overlap,
    aliases=("dice_loss", "soft_dice"),
    option_cases=OVERLAP_CASES,
    literature=("Milletari et al., V-Net (2016)", "segmentation_models_pytorch DiceLoss"),
    notes=OVERLAP_NOTES,
))


# --------------------------------------------------------------------------- jaccard


def _jaccard_score(xp, i, sp, st, count, *, smooth, eps):
    # s = (I + smooth) / max(U + smooth, eps), U = Sp + St - I;  dU/dI = -1
    score, den, k = _ratio(xp, i + smooth, sp + st - i + smooth, eps)
    return 1.0 - score, -1.0 / den, k  # dL/dI = -1/D - k, dL/dSp = k


jaccard_fused, jaccard_value, jaccard_vjp = _overlap_loss(_jaccard_score, mask_empty=True)
jaccard_value.__doc__ = "Per class: 1 - (I + smooth) / max(Sp + St - I + smooth, eps); 0 for empty classes."

register(LossSpec(
    name="jaccard", family=FAMILY, summary="Soft Jaccard (IoU) loss per class (smp JaccardLoss).",
    inputs=("input", "target"), differentiable=("input",), label_inputs=("target",), same_shape=(),
    value=jaccard_value, vjp=jaccard_vjp, fused=jaccard_fused, validate=_check_overlap, output_shape=_overlap_shape,
    domains=OVERLAP_DOMAINS,
    options=OVERLAP_OPTIONS,
    formula=r"\ell_c = 1 - \frac{I_c + s}{\max(\sum_i p_{ic} + \sum_i t_{ic} - I_c + s,\ \varepsilon)},\ "
            r"I_c = \sum_i p_{ic} t_{ic}\ \ (0\ \text{if}\ \textstyle\sum_i t_{ic} = 0)",
    gradient=r"\partial\ell_c/\partial p_{ic} = -\frac{t_{ic}}{D} + \frac{J_c}{D}(1 - t_{ic})",
    sample=_sample_overlap,
    aliases=("iou", "jaccard_loss", "iou_loss", "soft_jaccard"),
    option_cases=OVERLAP_CASES,
    literature=("Rahman & Wang, Optimizing Intersection-over-Union in Deep Neural Networks (2016)",
                "segmentation_models_pytorch JaccardLoss"),
    notes=OVERLAP_NOTES,
))


# --------------------------------------------------------------------------- tversky / focal_tversky


def _tversky_parts(xp, i, sp, st, alpha, beta, smooth, eps):
    # T = (I + s) / max(I + a FP + b FN + s, eps), FP = Sp - I, FN = St - I
    score, den, k = _ratio(xp, i + smooth, (1.0 - alpha - beta) * i + alpha * sp + beta * st + smooth, eps)
    # dT/dI = 1/D - (1 - a - b) k, dT/dSp = -a k; returns T and dT at target / background pixels
    return score, 1.0 / den - (1.0 - beta) * k, -alpha * k


def _tversky_score(xp, i, sp, st, count, *, smooth, eps, alpha, beta):
    score, d_i, d_sp = _tversky_parts(xp, i, sp, st, alpha, beta, smooth, eps)
    return 1.0 - score, -d_i, -d_sp


def _focal_tversky_score(xp, i, sp, st, count, *, smooth, eps, alpha, beta, gamma):
    score, d_i, d_sp = _tversky_parts(xp, i, sp, st, alpha, beta, smooth, eps)
    base = xp.maximum(1.0 - score, xp.zeros_like(score))  # rounding can push T a hair above 1
    pos = base > 0
    # d base^g = g base^(g - 1): 0 at base = 0 (a minimum), not inf for g < 1
    slope = xp.where(pos, gamma * xp.where(pos, base, xp.ones_like(base)) ** (gamma - 1.0), xp.zeros_like(base))
    return base ** gamma, -slope * d_i, -slope * d_sp


TVERSKY_OPTIONS = (Option("alpha", 0.5, "Weight of false positives (>= 0).", number(low=0)),
                   Option("beta", 0.5, "Weight of false negatives (>= 0).", number(low=0)))

tversky_fused, tversky_value, tversky_vjp = _overlap_loss(_tversky_score, mask_empty=True)
tversky_value.__doc__ = "Per class: 1 - (I + s) / max(I + alpha FP + beta FN + s, eps); 0 for empty classes."

register(LossSpec(
    name="tversky", family=FAMILY, summary="Tversky loss per class: Dice with weighted false positives/negatives.",
    inputs=("input", "target"), differentiable=("input",), label_inputs=("target",), same_shape=(),
    value=tversky_value, vjp=tversky_vjp, fused=tversky_fused, validate=_check_overlap, output_shape=_overlap_shape,
    domains=OVERLAP_DOMAINS,
    options=OVERLAP_OPTIONS + TVERSKY_OPTIONS,
    formula=r"\ell_c = 1 - \frac{I_c + s}{\max(I_c + \alpha\,FP_c + \beta\,FN_c + s,\ \varepsilon)},\ "
            r"FP_c = \sum_i p_{ic}(1 - t_{ic}),\ FN_c = \sum_i (1 - p_{ic}) t_{ic}",
    gradient=r"\partial\ell_c/\partial p_{ic} = -\frac{t_{ic}}{D} + \frac{T_c}{D}\left((1-\alpha-\beta)t_{ic} + \alpha\right)",
    sample=_sample_overlap,
    aliases=("tversky_loss",),
    option_cases=OVERLAP_CASES + ({"alpha": 0.3, "beta": 0.7},),
    literature=("Salehi et al., Tversky loss function for image segmentation (2017)",
                "segmentation_models_pytorch TverskyLoss"),
    notes=OVERLAP_NOTES + " alpha = beta = 0.5 is Dice.",
))

focal_tversky_fused, focal_tversky_value, focal_tversky_vjp = _overlap_loss(_focal_tversky_score, mask_empty=True)
focal_tversky_value.__doc__ = "Per class: (1 - T_c)^gamma, T_c the Tversky index; 0 for empty classes."

register(LossSpec(
    name="focal_tversky", family=FAMILY, summary="Focal Tversky loss per class: (1 - Tversky index)^gamma.",
    inputs=("input", "target"), differentiable=("input",), label_inputs=("target",), same_shape=(),
    value=focal_tversky_value, vjp=focal_tversky_vjp, fused=focal_tversky_fused, validate=_check_overlap,
    domains=OVERLAP_DOMAINS,
    output_shape=_overlap_shape,
    options=OVERLAP_OPTIONS + TVERSKY_OPTIONS + (
        Option("gamma", 0.75, "Focal exponent (> 0); Abraham & Khan's 1/gamma = 3/4.", number(low=0, low_open=True)),),
    formula=r"\ell_c = (1 - T_c)^{\gamma},\ T_c = \frac{I_c + s}{\max(I_c + \alpha\,FP_c + \beta\,FN_c + s,\ \varepsilon)}",
    gradient=r"\partial\ell_c/\partial p_{ic} = -\gamma(1 - T_c)^{\gamma - 1}\,\partial T_c/\partial p_{ic}\ (0\ \text{at}\ T_c = 1)",
    sample=_sample_overlap,
    aliases=("focal_tversky_loss",),
    option_cases=OVERLAP_CASES + ({"alpha": 0.7, "beta": 0.3, "gamma": 2.0},),
    literature=("Abraham & Khan, A Novel Focal Tversky Loss Function with Improved Attention U-Net (2019)",),
    notes=OVERLAP_NOTES + " The exponent applies per class, as the paper (smp's TverskyLoss raises the class "
          "mean instead: with gamma = 1 both are the Tversky loss).",
))


# --------------------------------------------------------------------------- mcc


def _mcc_score(xp, tp, fp, fn, tn, *, eps):
    # soft confusion counts, +eps each as smp; a = TP+FP, b = TP+FN, c = TN+FP, d = TN+FN
    tp, fp, fn, tn = tp + eps, fp + eps, fn + eps, tn + eps
    a, b, c, d = tp + fp, tp + fn, tn + fp, tn + fn
    den = xp.sqrt(a * b * c * d)
    mcc = (tp * tn - fp * fn) / den
    # d mcc = d num / den - mcc d log den, log den = (log a + log b + log c + log d) / 2. A target pixel
    # moves TP up and FN down: d mcc/dTP - d mcc/dFN = c / den - mcc (1/a - 1/d) / 2 (the 1/b terms cancel);
    # a background pixel moves FP up and TN down: d mcc/dFP - d mcc/dTN = -b / den - mcc (1/a - 1/d) / 2
    h = 0.5 * mcc * (1.0 / a - 1.0 / d)
    return 1.0 - mcc, h - c / den, h + b / den


mcc_fused, mcc_value, mcc_vjp = _overlap_loss(_mcc_score, mask_empty=False, confusion=True)
mcc_value.__doc__ = "Per class: 1 - (TP TN - FP FN) / sqrt((TP+FP)(TP+FN)(TN+FP)(TN+FN)) of soft counts (+eps)."

register(LossSpec(
    name="mcc", family=FAMILY, summary="Matthews correlation coefficient loss of soft confusion counts (smp MCCLoss).",
    inputs=("input", "target"), differentiable=("input",), label_inputs=("target",), same_shape=(),
    value=mcc_value, vjp=mcc_vjp, fused=mcc_fused, validate=_check_overlap, output_shape=_overlap_shape,
    domains=OVERLAP_DOMAINS,
    options=(MODE, FROM_LOGITS, PER_IMAGE, IGNORE,
             Option("eps", 1e-5, "Added to each soft count (> 0), smp's default.", number(low=0, low_open=True))),
    formula=r"\ell_c = 1 - \frac{TP\,TN - FP\,FN}{\sqrt{(TP+FP)(TP+FN)(TN+FP)(TN+FN)}},\ "
            r"TP = \sum p t + \varepsilon,\ FP = \sum p(1-t) + \varepsilon,\ \dots",
    gradient=r"\partial\,\mathrm{mcc}/\partial TP = \frac{TN}{\sqrt{\cdot}} - \frac{\mathrm{mcc}}{2}\left(\frac{1}{TP+FP} + "
             r"\frac{1}{TP+FN}\right)\ \text{(and alike)},\ \text{chained through}\ p",
    sample=_sample_overlap,
    aliases=("mcc_loss", "matthews_correlation"),
    option_cases=tuple({k: v for k, v in case.items() if k != "smooth"} for case in OVERLAP_CASES),
    literature=("Abhishek & Hamarneh, Matthews Correlation Coefficient Loss for Deep Convolutional Networks (2021)",
                "segmentation_models_pytorch MCCLoss"),
    notes=OVERLAP_NOTES.replace("smp's mean over classes", "the mean over classes") + " smp's MCCLoss is "
          "`mode=\"binary\", from_logits=False` (one global value); classes without target pixels are not zeroed.",
))


# --------------------------------------------------------------------------- generalized_dice


def generalized_dice_fused(xp, input, target, *, mode, from_logits, ignore_index, per_image, smooth, eps):
    i, sp, st, count, parts = _counts(xp, input, target, mode=mode, from_logits=from_logits,
                                      ignore_index=ignore_index, per_image=per_image)
    # w_c = 1 / (sum t_c)^2; a class absent from the target gets the largest present weight (MONAI),
    # all weights 1 when none is present
    present = st > 0
    w = 1.0 / xp.where(present, st, xp.ones_like(st)) ** 2
    w_max = xp.max(xp.where(present, w, xp.zeros_like(w)), axis=-1, keepdims=True)
    w = xp.where(present, w, xp.where(w_max > 0, w_max, xp.ones_like(w_max)))
    num = 2.0 * xp.sum(w * i, axis=-1) + smooth
    score, den, k = _ratio(xp, num, xp.sum(w * (sp + st), axis=-1) + smooth, eps)
    value = 1.0 - score
    if not per_image:
        value = value[0]

    def pullback(ct):
        ct = ct if per_image else xp.expand_dims(ct, axis=0)
        ct = xp.expand_dims(ct, axis=-1)
        d_sp = ct * w * xp.expand_dims(k, axis=-1)
        return _pullback(xp, input, parts, d_sp - ct * (2.0 * w / xp.expand_dims(den, axis=-1)), d_sp)

    return value, pullback


def generalized_dice_value(xp, input, target, **options):
    """1 - (2 sum_c w_c I_c + s) / max(sum_c w_c (Sp_c + St_c) + s, eps), w_c = 1 / St_c^2."""
    return generalized_dice_fused(xp, input, target, **options)[0]


def generalized_dice_vjp(xp, cotangent, input, target, **options):
    return generalized_dice_fused(xp, input, target, **options)[1](cotangent)


register(LossSpec(
    name="generalized_dice", family=FAMILY,
    summary="Generalized Dice loss: classes weighted by their inverse squared target volume (Sudre et al.).",
    inputs=("input", "target"), differentiable=("input",), label_inputs=("target",), same_shape=(),
    value=generalized_dice_value, vjp=generalized_dice_vjp, fused=generalized_dice_fused,
    validate=_check_overlap, domains=OVERLAP_DOMAINS,
    output_shape=lambda shapes, options: (shapes["input"][0],) if options["per_image"] else (),
    options=OVERLAP_OPTIONS,
    formula=r"\ell = 1 - \frac{2\sum_c w_c \sum_i p_{ic} t_{ic} + s}{\max(\sum_c w_c \sum_i (p_{ic} + t_{ic}) + s,\ "
            r"\varepsilon)},\ w_c = 1 / (\textstyle\sum_i t_{ic})^2",
    gradient=r"\partial\ell/\partial p_{ic} = -\frac{2 w_c t_{ic}}{D} + \frac{w_c\,\mathrm{GD}}{D}",
    sample=_sample_overlap,
    aliases=("generalized_dice_loss", "generalised_dice"),
    option_cases=OVERLAP_CASES,
    literature=("Sudre et al., Generalised Dice overlap as a deep learning loss function (2017)",
                "MONAI GeneralizedDiceLoss"),
    notes="Layout and modes as `dice`. Output: one value over all classes, `()`, or `(N,)` with `per_image=True`. "
          "The weights depend on the target only (no gradient); a class absent from the target gets the largest "
          "weight of the present classes, as MONAI does, instead of an infinite one.",
))


# --------------------------------------------------------------------------- lovasz


def _lovasz_grad(xp, gt_sorted):
    """Gradient of the Lovász extension of the Jaccard loss at sorted errors (Berman et al., Alg. 1), last axis."""
    gts = xp.sum(gt_sorted, axis=-1, keepdims=True)
    intersection = gts - xp.cumulative_sum(gt_sorted, axis=-1)
    union = gts + xp.cumulative_sum(1.0 - gt_sorted, axis=-1)  # >= 1 at every position
    jaccard = 1.0 - intersection / union
    return xp.concat((jaccard[..., :1], jaccard[..., 1:] - jaccard[..., :-1]), axis=-1)


def _lovasz_sorted(xp, key, gt):
    """Sort ``key`` descending on the last axis; the Lovász weights and the order (and its inverse)."""
    order = _numerics.stop_gradient(xp, xp.argsort(key, axis=-1, descending=True, stable=True))  # MLX: no vjp to indices
    return xp.take_along_axis(key, order, axis=-1), _lovasz_grad(xp, xp.take_along_axis(gt, order, axis=-1)), order


def _unsort(xp, g_sorted, order):
    return xp.take_along_axis(g_sorted, xp.argsort(order, axis=-1), axis=-1)


def lovasz_hinge_fused(xp, input, target, *, per_image, ignore_index):
    # L = <relu(e_sorted), lovasz_grad(gt_sorted)>, e = 1 - x s, s = 2y - 1. The weights are piecewise
    # constant in x (they change only where the order does), so dL/de_sorted = lovasz_grad * [e > 0],
    # scattered back through the sort permutation; de/dx = -s.
    g_rows = input.shape[0] if per_image else 1
    pixels = _pixels("binary", input.shape) * (1 if per_image else input.shape[0])
    x = xp.reshape(input, (g_rows, pixels))
    y = xp.astype(xp.reshape(target, (g_rows, pixels)), x.dtype)
    if ignore_index is None:
        valid = None
    else:  # ignored pixels sort last (key -inf) with gt 0: they add nothing before them and 0 themselves
        valid = y != ignore_index
        y = xp.where(valid, y, xp.zeros_like(y))
    signs = 2.0 * y - 1.0
    errors = 1.0 - x * signs
    key = errors if valid is None else xp.where(valid, errors, xp.zeros_like(errors) - math.inf)
    e_sorted, weights, order = _lovasz_sorted(xp, key, y)
    pos = xp.logical_not(e_sorted <= 0)  # not e > 0: a NaN error stays in (NaN), as relu(NaN) does
    value = xp.sum(xp.where(pos, e_sorted, xp.zeros_like(e_sorted)) * weights, axis=-1)
    if not per_image:
        value = value[0]

    def pullback(ct):
        ct = xp.expand_dims(ct if per_image else xp.expand_dims(ct, axis=0), axis=-1)
        g = _unsort(xp, ct * xp.where(pos, weights, xp.zeros_like(weights)), order)
        return {"input": xp.reshape(-signs * g, input.shape)}

    return value, pullback


def lovasz_hinge_value(xp, input, target, **options):
    """Lovász hinge of logits: <relu(1 - x s)_sorted desc, lovasz_grad(gt_sorted)>, per image or over the batch."""
    return lovasz_hinge_fused(xp, input, target, **options)[0]


def lovasz_hinge_vjp(xp, cotangent, input, target, **options):
    return lovasz_hinge_fused(xp, input, target, **options)[1](cotangent)


def _check_lovasz_hinge(xp, inputs, options, concrete):
    _validation.check_ndim("input", inputs["input"], at_least=1)
    _check_overlap(xp, inputs, {**options, "mode": "binary"}, concrete)


def _per_image_shape(shapes, options):
    return (shapes["input"][0],) if options["per_image"] else ()


def _sample_lovasz_hinge(rng, shape, options):
    y = (rng.random(shape) < 0.5).astype(np.float64)
    # errors 1 - x s away from the hinge at 0 and spread over a grid, at least 3/4 of its step apart (no two
    # swap places in the sort under finite-difference steps)
    size = math.prod(shape)
    step = min(0.02, 3.6 / size)  # room for every pixel on the grid of [-1.5, 2.5] without (-0.1, 0.1)
    grid = np.arange(-1.5, 2.5, step)
    e = rng.choice(grid[np.abs(grid) >= 0.1], size=shape, replace=False) + rng.uniform(0.0, step / 4, shape)
    x = (1.0 - e) * (2.0 * y - 1.0)
    ignore = options["ignore_index"]
    if ignore is not None:
        y = np.where(rng.random(shape) < 0.2, float(ignore), y)
    return {"input": x, "target": y}


register(LossSpec(
    name="lovasz_hinge", family=FAMILY, summary="Lovász hinge: convex surrogate of the binary Jaccard loss, on logits.",
    inputs=("input", "target"), differentiable=("input",), label_inputs=("target",),
    value=lovasz_hinge_value, vjp=lovasz_hinge_vjp, fused=lovasz_hinge_fused, validate=_check_lovasz_hinge,
    domains={"target": "{0, 1}"},
    output_shape=_per_image_shape,
    options=(Option("per_image", False, "One loss per image (output (N,)) instead of one over the batch (output ()).",
                    _flag), IGNORE),
    formula=r"\ell = \sum_k \max(e_{\pi(k)}, 0)\,\Delta J_k,\ e_i = 1 - x_i(2y_i - 1),\ "
            r"\pi\ \text{sorts}\ e\ \text{descending},\ \Delta J\ \text{the Lovász gradient of}\ y_\pi",
    gradient=r"\partial\ell/\partial x_{\pi(k)} = -(2y_{\pi(k)} - 1)\,\Delta J_k\,[e_{\pi(k)} > 0]",
    sample=_sample_lovasz_hinge,
    aliases=("lovasz_hinge_loss", "lovasz"),
    option_cases=({}, {"per_image": True}, {"ignore_index": 255}),
    literature=("Berman, Rannen Triki & Blaschko, The Lovász-Softmax loss (CVPR 2018)",
                "segmentation_models_pytorch LovaszLoss (binary)"),
    notes="Input: logits of any shape `(N, ...)`; target: 0/1 of the same shape. `per_image=False` (smp's default; "
          "Berman's code defaults to True) pools the batch's pixels. Pixels whose target equals `ignore_index` are "
          "left out. The loss is piecewise linear: its gradient changes where two errors swap order.",
))


def lovasz_softmax_fused(xp, input, target, *, classes, per_image, ignore_index, from_logits):
    # per class c: L_c = <e_sorted, lovasz_grad(fg_sorted)>, e = |fg - p_c|; the weights are piecewise constant,
    # so dL_c/dp_c = sign(p_c - fg) * (lovasz_grad scattered back through the sort); loss = mean over classes
    n, c = input.shape[0], input.shape[1]
    pixels = _pixels("multiclass", input.shape)
    x = xp.reshape(input, (n, c, pixels))
    if from_logits:
        p = xp.exp(_numerics.log_softmax(xp, x, axis=1))
    else:
        p = x
    labels = xp.reshape(target, (n, pixels))
    if not per_image:  # one group holding all pixels: (1, C, N P)
        pg = xp.reshape(xp.permute_dims(p, (1, 0, 2)), (1, c, n * pixels))
        labels = xp.reshape(labels, (1, n * pixels))
    else:
        pg = p
    valid = None if ignore_index is None else xp.expand_dims(labels != ignore_index, axis=1)
    ids = xp.reshape(xp.astype(_numerics.arange_like(xp, c, labels), labels.dtype), (1, c, 1))
    hit = xp.expand_dims(labels, axis=1) == ids
    fg = xp.astype(hit if valid is None else hit & valid, pg.dtype)
    errors = xp.abs(fg - pg)
    key = errors if valid is None else xp.where(valid, errors, xp.zeros_like(errors) - 1.0)  # ignored: last
    e_sorted, weights, order = _lovasz_sorted(xp, key, fg)
    kept = xp.logical_not(e_sorted < 0)  # ignored pixels (-1) out, a NaN error in (NaN)
    per_class = xp.sum(xp.where(kept, e_sorted, xp.zeros_like(e_sorted)) * weights, axis=-1)
    if classes == "present":  # the mean over the classes present in the target (0 when none is)
        counted = xp.astype(xp.sum(fg, axis=-1) > 0, p.dtype)
    else:
        counted = xp.ones_like(per_class)
    share = counted / xp.maximum(xp.sum(counted, axis=-1, keepdims=True), 1.0)
    value = xp.sum(share * per_class, axis=-1)
    if not per_image:
        value = value[0]

    def pullback(ct):
        ct = ct if per_image else xp.expand_dims(ct, axis=0)
        k = xp.expand_dims(xp.expand_dims(ct, axis=-1) * share, axis=-1)
        g = _unsort(xp, k * xp.where(kept, weights, xp.zeros_like(weights)), order) * _numerics.sign(xp, pg - fg)
        if not per_image:
            g = xp.permute_dims(xp.reshape(g, (c, n, pixels)), (1, 0, 2))
        if from_logits:
            g = p * (g - xp.sum(p * g, axis=1, keepdims=True))
        g = xp.reshape(g, input.shape)
        if ignore_index is None:
            return {"input": g}
        # an ignored pixel gets 0, even where its input holds NaN or inf (0 * sign(NaN) would be NaN there)
        return {"input": xp.where(xp.expand_dims(target != ignore_index, axis=1), g, xp.zeros_like(g))}

    return value, pullback


def lovasz_softmax_value(xp, input, target, **options):
    """Mean over classes of the Lovász extension of the Jaccard loss at the errors |fg_c - p_c|."""
    return lovasz_softmax_fused(xp, input, target, **options)[0]


def lovasz_softmax_vjp(xp, cotangent, input, target, **options):
    return lovasz_softmax_fused(xp, input, target, **options)[1](cotangent)


def _check_lovasz_softmax(xp, inputs, options, concrete):
    _check_overlap(xp, inputs, {**options, "mode": "multiclass"}, concrete)


def _sample_lovasz_softmax(rng, shape, options):
    # pixel by pixel, each redrawn until in every class its error |fg - p| is `gap` or more from those of the
    # pixels sorted with it, so that no two swap places under finite-difference steps (inputs move by 2e-3:
    # probabilities by as much, softmax outputs by at most 1e-3)
    n, c, pixels = shape[0], shape[1], math.prod(shape[2:])
    ignore, gap = options["ignore_index"], 0.002 if options["from_logits"] else 0.004
    logits, probabilities = np.empty((n, pixels, c)), np.empty((n, pixels, c))
    target = np.empty((n, pixels), dtype=np.int64)
    errors = [np.empty((0, c))] * (n if options["per_image"] else 1)  # so far, per group sorted together
    for i in range(n):
        group = i if options["per_image"] else 0
        for k in range(pixels):
            for _ in range(1000):
                x, label = rng.normal(0.0, 1.5, c), int(rng.integers(0, c))
                q = np.exp(x - x.max()) / np.sum(np.exp(x - x.max()))
                p = 0.8 * q + 0.2 / c  # away from 0 and 1: room for finite differences
                e = np.abs((np.arange(c) == label) - (q if options["from_logits"] else p))
                if not np.any(np.abs(errors[group] - e) < gap):
                    break
            else:
                raise RuntimeError("could not draw Lovász errors apart from each other")
            if ignore is not None and rng.random() < 0.2:  # ignored: its error is never sorted with the others
                label = ignore
            else:
                errors[group] = np.concatenate([errors[group], e[None]])
            logits[i, k], probabilities[i, k], target[i, k] = x, p, label
    x = logits if options["from_logits"] else probabilities
    return {"input": np.reshape(np.moveaxis(x, 2, 1), shape), "target": np.reshape(target, (n,) + tuple(shape[2:]))}


register(LossSpec(
    name="lovasz_softmax", family=FAMILY,
    summary="Lovász-Softmax: convex surrogate of the multiclass Jaccard loss, mean over classes.",
    inputs=("input", "target"), differentiable=("input",), label_inputs=("target",), same_shape=(),
    value=lovasz_softmax_value, vjp=lovasz_softmax_vjp, fused=lovasz_softmax_fused,
    validate=_check_lovasz_softmax, output_shape=_per_image_shape,
    domains={"input": PROBABILITY_INPUT, "target": "[0, C)"},
    options=(Option("classes", "present", "'present': average over the classes present in the target; 'all': over "
                    "all classes.", _choice("present", "all")),
             Option("per_image", False, "One loss per image (output (N,)) instead of one over the batch (output ()).",
                    _flag),
             IGNORE, FROM_LOGITS),
    formula=r"\ell = \frac{1}{|K|}\sum_{c\in K}\sum_k e^c_{\pi_c(k)}\,\Delta J^c_k,\ e^c_i = |[y_i = c] - p_{ic}|",
    gradient=r"\partial\ell/\partial p_{\pi_c(k)c} = \frac{1}{|K|}\operatorname{sign}(p - [y = c])\,\Delta J^c_k\ "
             r"(\text{then through the softmax})",
    sample=_sample_lovasz_softmax,
    aliases=("lovasz_softmax_loss",),
    option_cases=({}, {"per_image": True}, {"classes": "all", "from_logits": False}, {"ignore_index": -1}),
    literature=("Berman, Rannen Triki & Blaschko, The Lovász-Softmax loss (CVPR 2018)",
                "segmentation_models_pytorch LovaszLoss (multiclass)"),
    notes="Input `(N, C, *spatial)` logits (softmax over axis 1; `from_logits=False` for probabilities), target "
          "class indices `(N, *spatial)`. `per_image=False` pools the batch; with `per_image=True` the output is "
          "`(N,)`. Pixels whose target equals `ignore_index` are left out.",
))
