"""Calibration and confusion-matrix losses: Brier score, Spiegelhalter's Z, AnyLoss.

``brier`` is per sample (multiclass) or per element (binary). ``spiegelhalter_z``
and the AnyLoss family (``accuracy``, ``f1``, ``f_beta``, ``balanced_accuracy``,
``geometric_mean``) are batch statistics: they reduce over axis 0 and give one
value per remaining position (one per label column; a scalar for 1-D input).
Predictions are probabilities, or logits with ``from_logits=True``.
"""

from __future__ import annotations

import numpy as np

from ... import _numerics, _validation
from ...registry import LossSpec, Option, register
from .._common import PROBABILITY_INPUT, away_from, number

FAMILY = "classification"


def _flag(name, value):
    _validation.check_bool(name, value)
    return value


def _choice(*choices):
    def check(name, value):
        _validation.check_choice(name, value, choices)
        return value
    return check


FROM_LOGITS = Option("from_logits", False, "Inputs are logits (a sigmoid/softmax is applied) instead of probabilities.",
                     _flag)
PROBABILITIES = "probabilities in [0, 1] (pass from_logits=True for logits)"


def _sigmoid_pair(xp, x):
    """sigmoid(x) and 1 - sigmoid(x) = sigmoid(-x), each to full relative precision."""
    return _numerics.sigmoid_terms(xp, x)[2:]


def _labels_as(xp, target, like):
    return target if target.dtype == like.dtype else xp.astype(target, like.dtype)


def _check_binary_inputs(xp, inputs, options, concrete):
    """(input, target) of one shape, with a batch axis; target exactly 0/1; probabilities in [0, 1]."""
    x, y = inputs["input"], inputs["target"]
    _validation.check_ndim("input", x, at_least=1)
    _validation.check_real_or_integral("target", y, xp)
    if concrete:
        if not options["from_logits"]:
            _validation.check_unit_interval("input", x, xp, PROBABILITIES)
        _validation.check_binary_labels("target", y, xp)


BINARY_DOMAINS = {"input": PROBABILITY_INPUT, "target": "{0, 1}"}


def _batch_shape(shapes, options):
    return shapes["input"][1:]


# --------------------------------------------------------------------------- brier


def brier_fused(xp, input, target, *, mode, from_logits):
    if mode == "binary":
        p, q = _sigmoid_pair(xp, input) if from_logits else (input, None)
        r = p - _labels_as(xp, target, p)

        def pullback(ct):
            g = 2.0 * ct * r
            return {"input": g * (p * q) if from_logits else g}  # sigmoid' = p (1 - p)

        return r * r, pullback

    p = xp.exp(_numerics.log_softmax(xp, input, axis=-1)) if from_logits else input
    if target.ndim == input.ndim:  # class probabilities
        r = p - _labels_as(xp, target, p)
    else:  # class indices: p minus the one-hot of the target, written into a fresh copy of p
        fresh = 1.0 * p  # add_at_labels may write in place
        r = _numerics.add_at_labels(xp, fresh, _numerics.as_index(xp, target), -xp.ones_like(p[..., 0]), axis=-1)
    value = xp.sum(r * r, axis=-1)

    def pullback(ct):
        # dl/dp = 2 r; through softmax: dl/dx = p * (dl/dp - sum_c p_c dl/dp_c)
        g = 2.0 * xp.expand_dims(ct, axis=-1) * r
        if from_logits:
            g = p * (g - xp.sum(p * g, axis=-1, keepdims=True))
        return {"input": g}

    return value, pullback


def brier_value(xp, input, target, *, mode, from_logits):
    """multiclass: sum_c (p_c - y_c)^2 over the last axis; binary: (p - y)^2 per element."""
    return brier_fused(xp, input, target, mode=mode, from_logits=from_logits)[0]


def brier_vjp(xp, cotangent, input, target, *, mode, from_logits):
    return brier_fused(xp, input, target, mode=mode, from_logits=from_logits)[1](cotangent)


def _check_brier(xp, inputs, options, concrete):
    x, y = inputs["input"], inputs["target"]
    _validation.check_real_or_integral("target", y, xp)
    binary = options["mode"] == "binary"
    if binary:
        _validation.check_same_shape("input", x, "target", y)
    else:
        _validation.check_ndim("input", x, at_least=1)
        _validation.check_min_size("input", x.shape[-1], 1, "a number of classes (last axis)")
        shape = tuple(x.shape)
        _validation.check_target_shape("target", y, {shape[:-1]: "class indices", shape: "class probabilities"})
    indices = not binary and y.ndim < x.ndim
    if indices:
        _validation.check_labels("target", y, xp, x.shape[-1], concrete=concrete)
    if concrete:
        if not options["from_logits"]:
            _validation.check_unit_interval("input", x, xp, PROBABILITIES)
        if not indices and not xp.isdtype(y.dtype, "bool"):
            _validation.check_unit_interval("target", y, xp, "probabilities in [0, 1]")


def _sample_brier(rng, shape, options):
    if options["mode"] == "binary":
        p = rng.uniform(0.05, 0.95, shape)
        x = np.log(p / (1.0 - p)) if options["from_logits"] else p
        return {"input": x, "target": rng.uniform(0.0, 1.0, shape)}
    c = shape[-1]
    if options["from_logits"]:
        x = rng.normal(0.0, 2.0, shape)
    else:
        u = rng.uniform(0.1, 1.0, shape)
        x = u / u.sum(axis=-1, keepdims=True)
    # both target forms across the conformance cases: indices or probabilities by (from_logits, rank)
    if options["from_logits"] != (len(shape) == 3):
        t = rng.dirichlet(np.ones(c), size=shape[:-1])
    else:
        t = rng.integers(0, c, shape[:-1])
    return {"input": x, "target": t}


register(LossSpec(
    name="brier", family=FAMILY, summary="Brier score: squared error of predicted probabilities (a proper scoring rule).",
    inputs=("input", "target"), differentiable=("input",), label_inputs=("target",), same_shape=(),
    value=brier_value, vjp=brier_vjp, fused=brier_fused, validate=_check_brier,
    domains={"input": PROBABILITY_INPUT,
             "target": (("[0, C)", {"mode": "multiclass", "dtype": "integral"}), ("[0, 1]", {}))},
    output_shape=lambda shapes, options: shapes["input"] if options["mode"] == "binary" else shapes["input"][:-1],
    options=(Option("mode", "multiclass",
                    "'multiclass': class axis last, per-sample sum over classes (softmax for logits); "
                    "'binary': per element (sigmoid for logits).", _choice("multiclass", "binary")),
             FROM_LOGITS),
    formula=r"\ell = \sum_c (p_c - y_c)^2\ \text{(multiclass)},\quad (p - y)^2\ \text{(binary)};\ "
            r"p = \operatorname{softmax}(x)\ /\ \sigma(x)\ \text{with from\_logits}",
    gradient=r"\partial\ell/\partial p = 2(p - y);\ \partial\ell/\partial x = p \odot (g - \langle p, g\rangle)\ "
             r"\text{(softmax)},\ g\,p(1-p)\ \text{(sigmoid)},\ g = 2(p - y)",
    sample=_sample_brier,
    aliases=("brier_score", "brier_loss", "brier_score_loss"),
    option_cases=({}, {"from_logits": True}, {"mode": "binary"}, {"mode": "binary", "from_logits": True}),
    literature=("Brier, Verification of forecasts expressed in terms of probability (1950)",
                "dl_techniques BrierScoreLoss"),
    notes="Multiclass targets are class indices (the input's shape without its last axis) or class probabilities "
          "(the input's shape). Binary targets lie in [0, 1]. dl_techniques' BrierScoreLoss is `mode=\"binary\"` "
          "with a per-sample mean over the remaining axes, which the engine's mean reproduces.",
))


# --------------------------------------------------------------------------- spiegelhalter_z


def spiegelhalter_z_fused(xp, input, target, *, from_logits, eps, chance_corrected, normalize_by_n):
    p, q = _sigmoid_pair(xp, input) if from_logits else (input, 1.0 - input)
    v = p * q  # Bernoulli variance p (1 - p)
    w = 1.0 - 2.0 * p
    y = _labels_as(xp, target, p)
    num = xp.sum((y - p) * w, axis=0)
    den = xp.sum(w * w * v, axis=0) + eps
    t = num / den
    z2 = num * t
    n = max(input.shape[0], 1)
    value = xp.maximum(z2 - 1.0, xp.zeros_like(z2)) if chance_corrected else z2
    if normalize_by_n:
        value = value / n

    def pullback(ct):
        # Z^2 = N^2 / D: dN/dp = 4p - 1 - 2y, dD/dp = (1 - 2p)(1 - 8 p(1 - p)),
        # dZ^2/dp = t (2 dN/dp - t dD/dp) with t = N / D
        k = ct / n if normalize_by_n else ct
        if chance_corrected:
            k = xp.where(z2 > 1.0, k, xp.zeros_like(k))
        g = k * t * (2.0 * (4.0 * p - 1.0 - 2.0 * y) - t * w * (1.0 - 8.0 * v))
        return {"input": g * v if from_logits else g}

    return value, pullback


def spiegelhalter_z_value(xp, input, target, **options):
    """Z^2 over the batch axis 0: Z = sum (y - p)(1 - 2p) / sqrt(sum (1 - 2p)^2 p (1 - p) + eps)."""
    return spiegelhalter_z_fused(xp, input, target, **options)[0]


def spiegelhalter_z_vjp(xp, cotangent, input, target, **options):
    return spiegelhalter_z_fused(xp, input, target, **options)[1](cotangent)


def _reference_z2(p, y, eps):
    w = 1.0 - 2.0 * p
    return np.sum((y - p) * w, axis=0) ** 2 / (np.sum(w * w * p * (1.0 - p), axis=0) + eps)


def _sample_spiegelhalter(rng, shape, options):
    def draw():
        # away from p = 0.5 (where the weight 1 - 2p vanishes) and from the chance kink Z^2 = 1
        p = away_from(rng, rng.uniform(0.05, 0.95, shape), (0.5,), 0.15, 0.05, 0.95)
        return p, (rng.random(shape) < p).astype(np.float64)

    p, y = draw()
    for _ in range(100):
        if not options["chance_corrected"] or np.all(np.abs(_reference_z2(p, y, options["eps"]) - 1.0) > 0.1):
            break
        p, y = draw()
    return {"input": np.log(p / (1.0 - p)) if options["from_logits"] else p, "target": y}


register(LossSpec(
    name="spiegelhalter_z", family=FAMILY,
    summary="Spiegelhalter's Z calibration statistic over the batch, squared, as a loss (binary probabilities).",
    inputs=("input", "target"), differentiable=("input",), label_inputs=("target",),
    value=spiegelhalter_z_value, vjp=spiegelhalter_z_vjp, fused=spiegelhalter_z_fused,
    validate=_check_binary_inputs, output_shape=_batch_shape, domains=BINARY_DOMAINS,
    options=(FROM_LOGITS,
             Option("eps", 1e-7, "Added to the variance sum under the root (> 0): Z stays finite when every p is "
                    "0, 1 or 0.5.", number(low=0, low_open=True)),
             Option("chance_corrected", False, "Penalise max(Z^2 - 1, 0): E[Z^2] = 1 for a calibrated model "
                    "(dl_techniques' default).", _flag),
             Option("normalize_by_n", False, "Divide by the batch size N, since Z^2 grows like N for a fixed bias "
                    "(dl_techniques' default).", _flag)),
    formula=r"\ell = Z^2,\ Z = \frac{\sum_i (y_i - p_i)(1 - 2p_i)}{\sqrt{\sum_i (1 - 2p_i)^2 p_i(1 - p_i) + \varepsilon}}"
            r"\ \text{(over the batch axis)}",
    gradient=r"\partial\ell/\partial p_i = t\left(2(4p_i - 1 - 2y_i) - t(1 - 2p_i)(1 - 8p_i(1 - p_i))\right),\ "
             r"t = \frac{\sum_j (y_j - p_j)(1 - 2p_j)}{\sum_j (1 - 2p_j)^2 p_j(1-p_j) + \varepsilon}",
    sample=_sample_spiegelhalter,
    aliases=("spiegelhalter_z_loss", "spiegelhalter"),
    option_cases=({}, {"from_logits": True}, {"chance_corrected": True, "normalize_by_n": True}),
    literature=("Spiegelhalter, Probabilistic prediction in patient management and clinical trials (1986)",
                "dl_techniques SpiegelhalterZLoss"),
    notes="A batch statistic: axis 0 is the batch, the output has the input's other axes (a scalar for 1-D input). "
          "The loss is Z^2, not |Z|, which has a kink at Z = 0. dl_techniques' SpiegelhalterZLoss defaults to "
          "chance_corrected=True, normalize_by_n=True, and clips p to [1e-6, 1 - 1e-6]; here eps alone keeps the "
          "root finite. Not a proper scoring rule: use it as a small-weight regulariser next to one (e.g. brier).",
))


# --------------------------------------------------------------------------- AnyLoss
#
# a = sigmoid(L (p - 1/2)); over the batch axis: TP = sum y a, FN = sum y (1 - a),
# FP = sum (1 - y) a, TN = sum (1 - y)(1 - a); loss = 1 - metric(TP, FN, FP, TN).
# Each metric returns its value and its partials w.r.t. (TP, FN, FP, TN); the shared
# pullback chains them: dm/da = y (m_TP - m_FN) + (1 - y)(m_FP - m_TN), da/dp = L a (1 - a),
# dp/dx = p (1 - p) for logits.

GMEAN_EPS = 1e-12  # inside the root of TPR * TNR: finite slope when either rate is 0


def _div(xp, a, b):
    return _numerics.safe_divide(xp, a, b)


def _rate(xp, hit, miss):
    """hit / (hit + miss) (0 for an empty class) and its partials w.r.t. hit and miss."""
    total = hit + miss
    return _div(xp, hit, total), _div(xp, _div(xp, miss, total), total), -_div(xp, _div(xp, hit, total), total)


def _accuracy(xp, tp, fn, fp, tn):
    n = tp + fn + fp + tn
    right, wrong = tp + tn, fn + fp
    d_right, d_wrong = _div(xp, _div(xp, wrong, n), n), -_div(xp, _div(xp, right, n), n)
    return _div(xp, right, n), (d_right, d_wrong, d_wrong, d_right)


def _f_beta(beta):
    b = beta * beta

    def metric(xp, tp, fn, fp, tn):
        d = (1.0 + b) * tp + b * fn + fp
        inv = _div(xp, xp.ones_like(d), d)
        k = (1.0 + b) * inv * inv
        return (1.0 + b) * tp * inv, (k * (b * fn + fp), -k * b * tp, -k * tp, xp.zeros_like(d))
    return metric


def _balanced_accuracy(xp, tp, fn, fp, tn):
    # mean of the rates of the classes present in the column (sklearn's convention); a class is present where
    # its count is not 0, so that a NaN count keeps it (and the NaN) in
    tpr, tpr_tp, tpr_fn = _rate(xp, tp, fn)
    tnr, tnr_tn, tnr_fp = _rate(xp, tn, fp)
    k = xp.astype(tp + fn != 0, tp.dtype) + xp.astype(tn + fp != 0, tp.dtype)
    return _div(xp, tpr + tnr, k), (_div(xp, tpr_tp, k), _div(xp, tpr_fn, k), _div(xp, tnr_fp, k),
                                    _div(xp, tnr_tn, k))


def _geometric_mean(xp, tp, fn, fp, tn):
    # sqrt(TPR TNR) with both classes present; the present class's rate otherwise
    tpr, tpr_tp, tpr_fn = _rate(xp, tp, fn)
    tnr, tnr_tn, tnr_fp = _rate(xp, tn, fp)
    both = (tp + fn != 0) & (tn + fp != 0)  # != 0, as in _balanced_accuracy: NaN counts stay in
    s = xp.sqrt(tpr * tnr + GMEAN_EPS)
    one = xp.ones_like(s)
    d_tpr = xp.where(both, tnr / (2.0 * s), one)
    d_tnr = xp.where(both, tpr / (2.0 * s), one)
    return xp.where(both, s, tpr + tnr), (d_tpr * tpr_tp, d_tpr * tpr_fn, d_tnr * tnr_fp, d_tnr * tnr_tn)


def _anyloss_fused(metric):
    def fused(xp, input, target, *, amplifying_scale, from_logits, **params):
        p, q = _sigmoid_pair(xp, input) if from_logits else (input, None)
        a, a_neg = _sigmoid_pair(xp, amplifying_scale * (p - 0.5))
        y = _labels_as(xp, target, p)
        y_neg = 1.0 - y
        tp, fn = xp.sum(y * a, axis=0), xp.sum(y * a_neg, axis=0)
        fp, tn = xp.sum(y_neg * a, axis=0), xp.sum(y_neg * a_neg, axis=0)
        m, (m_tp, m_fn, m_fp, m_tn) = metric(**params)(xp, tp, fn, fp, tn)

        def pullback(ct):
            g = -ct * (y * (m_tp - m_fn) + y_neg * (m_fp - m_tn)) * (amplifying_scale * a * a_neg)
            return {"input": g * (p * q) if from_logits else g}

        return 1.0 - m, pullback

    def value(xp, input, target, **options):
        return fused(xp, input, target, **options)[0]

    def vjp(xp, cotangent, input, target, **options):
        return fused(xp, input, target, **options)[1](cotangent)

    return fused, value, vjp


def _sample_anyloss(rng, shape, options):
    # with a steep approximation, p stays where a(p) is nearly 0 or 1 (as trained models put it);
    # the stencil of finite differences cannot follow L a (1 - a) near p = 1/2 for L ~ 73
    scale = options["amplifying_scale"]
    gap = 14.0 / scale if scale > 20.0 else 0.0
    p = away_from(rng, rng.uniform(0.02, 0.98, shape), (0.5,), gap, 0.02, 0.98)
    y = (rng.random(shape) < p).astype(np.float64)
    return {"input": np.log(p / (1.0 - p)) if options["from_logits"] else p, "target": y}


ANYLOSS_OPTIONS = (
    Option("amplifying_scale", 73.0, "L of the approximation a = sigmoid(L (p - 1/2)) (> 0; the paper's 73).",
           number(low=0, low_open=True)),
    FROM_LOGITS,
)
COUNTS = (r"a = \sigma(L(p - \tfrac12)),\ TP = \sum y a,\ FN = \sum y(1-a),\ FP = \sum (1-y)a,\ "
          r"TN = \sum (1-y)(1-a)")
CHAIN = (r"\partial\ell/\partial p_i = -\left(y_i(m_{TP} - m_{FN}) + (1-y_i)(m_{FP} - m_{TN})\right) L a_i(1-a_i)"
         r"\ \text{with}\ m_X = \partial\,\mathrm{metric}/\partial X")


def _register_anyloss(name, metric, summary, formula, aliases, *, options=(), option_cases=(), note=""):
    fused, value, vjp = _anyloss_fused(metric)
    register(LossSpec(
        name=name, family=FAMILY, summary=summary,
        inputs=("input", "target"), differentiable=("input",), label_inputs=("target",),
        value=value, vjp=vjp, fused=fused, validate=_check_binary_inputs, output_shape=_batch_shape,
        domains=BINARY_DOMAINS,
        options=ANYLOSS_OPTIONS + options,
        formula=formula + r",\quad " + COUNTS,
        gradient=CHAIN,
        sample=_sample_anyloss,
        aliases=aliases,
        option_cases=({}, {"from_logits": True}, {"amplifying_scale": 5.0}) + option_cases,
        literature=("Han, Moniz & Chawla, AnyLoss: Transforming Classification Metrics into Loss Functions "
                    "(KDD 2024)", "dl_techniques any_loss"),
        notes="A batch statistic: axis 0 is the batch, the output has the input's other axes (one metric per "
              "label column; a scalar for 1-D input). Targets are 0/1. A ratio with a zero denominator is 0." + note,
    ))


_register_anyloss(
    "accuracy", lambda: _accuracy, "AnyLoss accuracy: 1 - (TP + TN) / n of the soft confusion matrix.",
    r"\ell = 1 - \frac{TP + TN}{TP + TN + FP + FN}", ("accuracy_loss", "anyloss_accuracy"))

_register_anyloss(
    "f1", lambda: _f_beta(1.0), "AnyLoss F1: 1 - 2TP / (2TP + FN + FP) of the soft confusion matrix.",
    r"\ell = 1 - \frac{2TP}{2TP + FN + FP}", ("f1_loss", "anyloss_f1"),
    note=" No positives and no predicted positives give F1 = 0 (loss 1).")

_register_anyloss(
    "f_beta", _f_beta, "AnyLoss F-beta: 1 - F_beta of the soft confusion matrix.",
    r"\ell = 1 - \frac{(1+\beta^2)TP}{(1+\beta^2)TP + \beta^2 FN + FP}",
    ("f_beta_loss", "fbeta", "fbeta_loss", "anyloss_f_beta", "anyloss_fbeta"),
    options=(Option("beta", 1.0, "Weight of recall relative to precision (> 0).", number(low=0, low_open=True)),),
    option_cases=({"beta": 2.0, "from_logits": True}, {"beta": 0.5, "amplifying_scale": 5.0}),
    note=" No positives and no predicted positives give F = 0 (loss 1).")

_register_anyloss(
    "balanced_accuracy", lambda: _balanced_accuracy,
    "AnyLoss balanced accuracy: 1 - (TPR + TNR) / 2 of the soft confusion matrix.",
    r"\ell = 1 - \tfrac12\left(\frac{TP}{TP + FN} + \frac{TN}{TN + FP}\right)",
    ("balanced_accuracy_loss", "anyloss_balanced_accuracy"),
    note=" A class absent from a column's targets is left out of the mean, as scikit-learn does.")

_register_anyloss(
    "geometric_mean", lambda: _geometric_mean, "AnyLoss G-mean: 1 - sqrt(TPR TNR) of the soft confusion matrix.",
    r"\ell = 1 - \sqrt{\frac{TP}{TP + FN}\cdot\frac{TN}{TN + FP} + \varepsilon},\ \varepsilon = 10^{-12}",
    ("geometric_mean_loss", "gmean", "gmean_loss", "anyloss_geometric_mean", "anyloss_gmean"),
    note=" With one class absent from a column's targets, the G-mean is the present class's rate.")
