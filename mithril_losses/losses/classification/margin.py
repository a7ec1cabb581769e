"""Margin (hinge-type) classification losses on class scores, one loss per sample.

Each loss is a value function (per sample: the class axis is the last one)
and its hand-derived vjp side by side. Integer class indices never become a
float one-hot: entries are read with ``take_labels`` and written with
``add_at_labels`` / ``zero_at_labels`` into arrays computed here. The engine
adds reduction, weights and masks.
"""

from __future__ import annotations

import math

import numpy as np

from ... import _numerics, _validation
from ...registry import LossSpec, Option, Reference, register
from .._common import CLASS_INDICES, away_from, number

FAMILY = "classification"


def _per_sample(shapes, options):
    return shapes["input"][:-1]


def _column(xp, v):
    """A per-sample array as a column against the class axis."""
    return xp.expand_dims(v, axis=-1)


def _rows_and_classes(shape):
    """(N, C) from a conformance shape: all but the first axis are classes; 1-D is one unbatched sample."""
    return (None, shape[0]) if len(shape) == 1 else (shape[0], math.prod(shape[1:]))


def _redraw_rows(rng, draw, bad, n, attempts=1000):
    """``draw(k)`` rows until no row is ``bad`` (``bad(rows)`` is a boolean per row)."""
    rows = draw(n)
    for _ in range(attempts):
        redo = bad(rows)
        if not redo.any():
            return rows
        rows[redo] = draw(int(redo.sum()))
    raise RuntimeError("could not draw rows away from the kinks")


def _torch_ref(fname, *options):
    """PyTorch's function with these options and the loss's own class `weight` where given.

    The engine's per-sample weight is passed as `weight` too: PyTorch rejects it (TypeError), so the
    weighted reference cases are skipped for losses without class weights.
    """
    def call(torch, inputs, opts, reduction, weight=None):
        own = inputs.get("weight")
        extra = {"weight": own} if own is not None else ({} if weight is None else {"weight": weight})
        fn = getattr(torch.nn.functional, fname)
        return fn(inputs["input"], inputs["target"], **{k: opts[k] for k in options}, reduction=reduction, **extra)
    return Reference(f"torch.nn.functional.{fname}", call)


# --------------------------------------------------------------------------- multi_margin


def _multi_margin_parts(xp, input, target, weight, p, margin):
    # z_i = margin - x_y + x_i; the i = y entry (z = margin) is set to 0 wherever it would count
    target = _numerics.as_index(xp, target)
    z = margin - _column(xp, _numerics.take_labels(xp, input, target, axis=-1)) + input
    c = input.shape[-1]
    if weight is None:
        return target, z, 1.0 / c
    w_y = xp.reshape(xp.take(weight, xp.reshape(target, (-1,)), axis=0), target.shape)
    return target, z, _column(xp, w_y) / c


def multi_margin_value(xp, input, target, weight=None, *, p, margin):
    """sum_{i != y} w_y max(0, margin - x_y + x_i)^p / C per sample."""
    target, z, scale = _multi_margin_parts(xp, input, target, weight, p, margin)
    m = xp.maximum(z, 0.0)
    h = _numerics.zero_at_labels(xp, m if p == 1 else m * m, target, axis=-1)
    return xp.sum(h * scale, axis=-1)


def multi_margin_vjp(xp, cotangent, input, target, weight=None, *, p, margin):
    # d/dx_i = w_y p max(0, z_i)^(p-1) / C for i != y (0 where z_i <= 0, as PyTorch); d/dx_y = -sum of those
    target, z, scale = _multi_margin_parts(xp, input, target, weight, p, margin)
    slope = xp.astype(z > 0, z.dtype) if p == 1 else 2.0 * xp.maximum(z, 0.0)
    d = _numerics.zero_at_labels(xp, slope * (_column(xp, cotangent) * scale), target, axis=-1)
    return {"input": _numerics.add_at_labels(xp, d, target, -xp.sum(d, axis=-1), axis=-1)}


def _p_option(name, value):
    _validation.check_number(name, value, integer=True)
    _validation.check_choice(name, value, (1, 2))
    return int(value)


def _check_multi_margin(xp, inputs, options, concrete):
    x, t, w = inputs["input"], inputs["target"], inputs["weight"]
    _validation.check_ndim_in("input", x, (1, 2), "(C,) or (N, C)")
    c = x.shape[-1]
    _validation.check_labels("target", t, xp, c, concrete=False)  # the dtype first
    _validation.check_shape("target", t, tuple(x.shape[:-1]), "one class index per sample")
    _validation.check_labels("target", t, xp, c, concrete=concrete)
    if w is not None:
        _validation.check_shape("weight", w, (c,), "one weight per class")


def _sample_multi_margin(rng, shape, options):
    n, c = _rows_and_classes(shape)
    rows = 1 if n is None else n
    y = rng.integers(0, c, rows)
    # x_i - x_y kept 0.05 away from -margin, where the hinge bends; both sides drawn
    m = options["margin"]
    d = away_from(rng, rng.uniform(-m - 2.0, -m + 1.5, (rows, c)), (-m,), 0.05, -m - 2.0, -m + 1.5)
    x_y = rng.uniform(-1.0, 1.0, (rows, 1))
    x = x_y + d
    x[np.arange(rows), y] = x_y[:, 0]
    out = {"input": x, "target": y} if n is not None else {"input": x[0], "target": np.asarray(y[0])}
    if options["p"] == 2:  # class weights in half the option cases
        out["weight"] = rng.uniform(0.5, 2.0, c)
    return out


register(LossSpec(
    name="multi_margin", family=FAMILY,
    summary="Multi-class hinge loss (Weston-Watkins), as torch.nn.functional.multi_margin_loss.",
    inputs=("input", "target", "weight"), differentiable=("input",), same_shape=(),
    label_inputs=("target",), optional_inputs=("weight",),
    value=multi_margin_value, vjp=multi_margin_vjp, validate=_check_multi_margin, output_shape=_per_sample,
    domains={"target": "[0, C)"},
    options=(Option("p", 1, "Power of the hinge: 1 or 2.", _p_option),
             Option("margin", 1.0, "Margin by which the target's score must beat every other score.", number())),
    formula=r"\ell = \frac{1}{C}\sum_{i \ne y} w_y \max(0, m - x_y + x_i)^p",
    gradient=r"\partial\ell/\partial x_i = \frac{w_y}{C} p \max(0, z_i)^{p-1}\ (i \ne y,\ z_i > 0),\quad "
             r"\partial\ell/\partial x_y = -\sum_{i \ne y}\partial\ell/\partial x_i",
    sample=_sample_multi_margin,
    aliases=("multi_margin_loss",), functional=("multi_margin_loss",),
    references={"torch": _torch_ref("multi_margin_loss", "p", "margin")},
    option_cases=({}, {"p": 2}, {"margin": 0.5}, {"p": 2, "margin": 2.0}),
    literature=("Weston & Watkins, Support Vector Machines for Multi-Class Pattern Recognition (1999); "
                "torch.nn.functional.multi_margin_loss",),
    notes="`input` is (N, C) or one unbatched sample (C,); `target` holds class indices of shape (N,) or (). "
          "`weight` holds one weight per class and scales a sample by its target's weight, after the power "
          "(PyTorch's placement); a 'mean' is the plain mean over samples, as in PyTorch. "
          "At z_i = 0 the subgradient is 0, as PyTorch's.",
))


# --------------------------------------------------------------------------- multilabel_margin


def _multilabel_pairs(xp, input, target):
    """(z, w): z[j, i] = 1 - x_j + x_i and the pair weight w[j, i] = (times j is listed) * (i not listed)."""
    c = input.shape[-1]
    classes = _numerics.arange_like(xp, c, input)
    # positions before the first negative entry are the row's list; later entries are ignored
    stop = xp.min(xp.where(target < 0, classes, c), axis=-1, keepdims=True)
    listed = _column(xp, classes < stop) & (_column(xp, target) == classes)  # [position, class]
    count = xp.sum(xp.astype(listed, input.dtype), axis=-2)  # a class listed twice counts twice, as PyTorch
    other = xp.astype(count == 0, input.dtype)
    z = 1.0 - _column(xp, input) + xp.expand_dims(input, axis=-2)
    return z, _column(xp, count) * xp.expand_dims(other, axis=-2)


def multilabel_margin_fused(xp, input, target):
    z, w = _multilabel_pairs(xp, input, target)
    c = input.shape[-1]
    # unlisted j get weight 0: where, not 0 * max(z, 0), so that a -inf score there gives 0, not NaN
    value = xp.sum(w * xp.where(w > 0, xp.maximum(z, 0.0), 0.0), axis=(-2, -1)) / c

    def pullback(ct):
        # d z[j, i] / d x_i = 1, d z[j, i] / d x_j = -1; active pairs have z > 0 (subgradient 0 at z = 0)
        a = w * xp.astype(z > 0, z.dtype) * (xp.reshape(ct, tuple(ct.shape) + (1, 1)) / c)
        return {"input": xp.sum(a, axis=-2) - xp.sum(a, axis=-1)}

    return value, pullback


def multilabel_margin_value(xp, input, target):
    """sum over listed j and unlisted i of max(0, 1 - (x_j - x_i)) / C per sample."""
    return multilabel_margin_fused(xp, input, target)[0]


def multilabel_margin_vjp(xp, cotangent, input, target):
    return multilabel_margin_fused(xp, input, target)[1](cotangent)


def _check_multilabel_margin(xp, inputs, options, concrete):
    x = inputs["input"]
    _validation.check_ndim_in("input", x, (1, 2), "(C,) or (N, C)")
    _validation.check_min_size("input", x.shape[-1], 1, "a number of classes (last axis)")
    _validation.check_label_lists("target", inputs["target"], xp, x.shape[-1], concrete=concrete)


def _sample_multilabel_margin(rng, shape, options):
    # each row lists 1..C-1 classes (sometimes one twice), then -1, then ignored entries; scores redrawn
    # while a listed/unlisted pair lies 0.02 or closer to the hinge 1 - x_j + x_i = 0
    n, c = _rows_and_classes(shape)
    rows = 1 if n is None else n
    targets = np.full((rows, c), -1, dtype=np.int64)
    x = np.empty((rows, c))
    for r in range(rows):
        k = int(rng.integers(1, c)) if c > 1 else 1
        listed = rng.permutation(c)[:k]
        if k > 1 and rng.random() < 0.5:
            listed[-1] = listed[0]
        targets[r, :k] = listed
        targets[r, k + 1:] = rng.integers(-1, c, max(c - k - 1, 0))
        mine = np.isin(np.arange(c), listed)

        def bad(v, mine=mine):
            z = 1.0 - v[:, mine, None] + v[:, None, ~mine]
            return (np.abs(z) < 0.02).reshape(len(v), -1).any(axis=1)

        x[r] = _redraw_rows(rng, lambda m: rng.uniform(-1.5, 1.5, (m, c)), bad, 1)[0]
    if n is None:
        return {"input": x[0], "target": targets[0]}
    return {"input": x, "target": targets}


register(LossSpec(
    name="multilabel_margin", family=FAMILY,
    summary="Multi-label hinge loss, as torch.nn.functional.multilabel_margin_loss.",
    inputs=("input", "target"), differentiable=("input",), label_inputs=("target",),
    value=multilabel_margin_value, vjp=multilabel_margin_vjp, fused=multilabel_margin_fused,
    validate=_check_multilabel_margin, output_shape=_per_sample, domains={"target": "[-1, C)"},
    formula=r"\ell = \frac{1}{C}\sum_{j \in Y}\sum_{i \notin Y} \max(0, 1 - (x_j - x_i))",
    gradient=r"\partial\ell/\partial x_k = \frac{1}{C}\Big(\sum_{j \in Y}[z_{jk} > 0]\,[k \notin Y] - "
             r"\sum_{i \notin Y}[z_{ki} > 0]\,[k \in Y]\Big),\ z_{ji} = 1 - x_j + x_i",
    sample=_sample_multilabel_margin,
    aliases=("multilabel_margin_loss",), functional=("multilabel_margin_loss",),
    references={"torch": _torch_ref("multilabel_margin_loss")},
    literature=("torch.nn.functional.multilabel_margin_loss",),
    notes="`target` has the shape of `input`, (N, C) or (C,), and lists each row's class indices; the first -1 "
          "ends the list and later entries are ignored (they must still lie in [-1, C), as PyTorch checks). "
          "A class listed twice counts twice, as in PyTorch. The pairs are formed at once: memory grows as "
          "N C^2.",
))


# --------------------------------------------------------------------------- categorical_hinge


def _categorical_hinge_parts(xp, input, target):
    """(sum y x, (1 - y) x, y is indices); (1 - y) x is a fresh array."""
    if xp.isdtype(target.dtype, "integral"):
        target = _numerics.as_index(xp, target)
        pos = _numerics.take_labels(xp, input, target, axis=-1)
        return target, pos, _numerics.zero_at_labels(xp, input * 1.0, target, axis=-1), True
    return target, xp.sum(target * input, axis=-1), (1.0 - target) * input, False


def categorical_hinge_value(xp, input, target):
    """max(0, max((1 - y) x) - sum(y x) + 1) per sample (Keras's categorical hinge)."""
    _, pos, rest, _ = _categorical_hinge_parts(xp, input, target)
    return xp.maximum(xp.max(rest, axis=-1) - pos + 1.0, 0.0)


def categorical_hinge_vjp(xp, cotangent, input, target):
    # d/dx = [l > 0] ((1 - y_t) e_t - y), t = argmax (1 - y) x (the first of tied maxima): the maximum is
    # linear near a unique argmax; for indices with t = y it is the constant 0 of (1 - y_y) x_y
    target, pos, rest, indices = _categorical_hinge_parts(xp, input, target)
    top = _numerics.as_index(xp, xp.argmax(rest, axis=-1))
    k = cotangent * xp.astype(_numerics.take_labels(xp, rest, top, axis=-1) - pos + 1.0 > 0, rest.dtype)
    if indices:
        g = _numerics.add_at_labels(xp, xp.zeros_like(input), target, -k, axis=-1)
        return {"input": _numerics.add_at_labels(xp, g, top, xp.where(top == target, xp.zeros_like(k), k), axis=-1)}
    lift = k * (1.0 - _numerics.take_labels(xp, target, top, axis=-1))
    return {"input": _numerics.add_at_labels(xp, -_column(xp, k) * target, top, lift, axis=-1)}


def _check_class_scores(xp, inputs, options, concrete):
    x, t = inputs["input"], inputs["target"]
    _validation.check_ndim("input", x, at_least=1)
    if _validation.check_class_targets("target", t, "input", x, xp):
        _validation.check_labels("target", t, xp, x.shape[-1], concrete=concrete)


def _class_targets(rng, lead, c, soft):
    """Index targets, or for ``soft`` one-hot rows mixed with probability rows."""
    y = rng.integers(0, c, lead)
    if not soft:
        return y
    probs = np.asarray(rng.random(lead) < 0.5)[..., None]
    return np.where(probs, rng.dirichlet(np.ones(c), lead), np.eye(c)[y])


def _keras_categorical_hinge(x, y):
    """Keras's formula in NumPy, on one-hot/probability targets (the sampler's own check)."""
    pos = np.sum(y * x, axis=-1)
    rest = (1.0 - y) * x
    part = np.sort(rest, axis=-1)
    return np.max(rest, axis=-1) - pos + 1.0, part[..., -1] - part[..., -2]


def _sample_categorical_hinge(rng, shape, options):
    # index targets for 1-D and 2-D shapes, one-hot/probability rows for more; rows redrawn near the hinge
    # (margin 0) or near a tie of the maximum of (1 - y) x
    lead, c = tuple(shape[:-1]), shape[-1]
    soft = len(shape) > 2
    y = _class_targets(rng, lead, c, soft)
    dense = y if soft else np.eye(c)[y]
    flat_y = dense.reshape(-1, c)

    def draw(k):
        return rng.normal(0.0, 1.5, (k, c))

    rows = []
    for r in range(flat_y.shape[0]):
        def bad(v, yr=flat_y[r]):
            margin, gap = _keras_categorical_hinge(v, yr)
            return (np.abs(margin) < 0.05) | (gap < 0.05)
        rows.append(_redraw_rows(rng, draw, bad, 1)[0])
    x = np.array(rows).reshape(tuple(shape))
    return {"input": x, "target": y}


register(LossSpec(
    name="categorical_hinge", family=FAMILY,
    summary="Categorical (Crammer-Singer) hinge loss on class scores, as Keras's categorical_hinge.",
    inputs=("input", "target"), differentiable=("input",), same_shape=(), label_inputs=("target",),
    value=categorical_hinge_value, vjp=categorical_hinge_vjp,
    validate=_check_class_scores, output_shape=_per_sample, domains={"target": CLASS_INDICES},
    formula=r"\ell = \max\big(0,\ \max_i (1 - y_i) x_i - \textstyle\sum_i y_i x_i + 1\big)",
    gradient=r"\partial\ell/\partial x = [\ell > 0]\big((1 - y_t) e_t - y\big),\ t = \arg\max_i (1 - y_i) x_i",
    sample=_sample_categorical_hinge,
    aliases=("crammer_singer",),
    literature=("Crammer & Singer, On the Algorithmic Implementation of Multiclass Kernel-based Vector "
                "Machines (2001); Keras categorical_hinge",),
    notes="The class axis is the last one. `target` is integer class indices (the input's shape without its "
          "class axis) or floating one-hot/probability rows (the input's shape). As in Keras the negative part "
          "is max((1 - y) x), so the target's own entry counts as 0: when every other score is negative the "
          "loss is 1 - x_y, not optax's multiclass_hinge_loss max_(i != y)(x_i) + 1 - x_y. Ties of the maximum "
          "take the first index's subgradient.",
))


# --------------------------------------------------------------------------- capsule_margin


def capsule_margin_value(xp, input, target, *, m_plus, m_minus, lambda_):
    """sum_c T_c max(0, m+ - v_c)^2 + lambda (1 - T_c) max(0, v_c - m-)^2 per sample."""
    short = xp.maximum(m_plus - input, 0.0)
    long = xp.maximum(input - m_minus, 0.0)
    if xp.isdtype(target.dtype, "integral"):
        target = _numerics.as_index(xp, target)
        absent = _numerics.zero_at_labels(xp, lambda_ * long * long, target, axis=-1)
        s = _numerics.take_labels(xp, short, target, axis=-1)
        return xp.sum(absent, axis=-1) + s * s
    return xp.sum(target * short * short + lambda_ * (1.0 - target) * long * long, axis=-1)


def capsule_margin_vjp(xp, cotangent, input, target, *, m_plus, m_minus, lambda_):
    # d/dv_c = -2 T_c max(0, m+ - v_c) + 2 lambda (1 - T_c) max(0, v_c - m-)
    ct = _column(xp, cotangent)
    short = xp.maximum(m_plus - input, 0.0)
    long = xp.maximum(input - m_minus, 0.0)
    if xp.isdtype(target.dtype, "integral"):
        target = _numerics.as_index(xp, target)
        g = _numerics.zero_at_labels(xp, (2.0 * lambda_) * ct * long, target, axis=-1)
        s = _numerics.take_labels(xp, short, target, axis=-1)
        return {"input": _numerics.add_at_labels(xp, g, target, -2.0 * cotangent * s, axis=-1)}
    return {"input": 2.0 * ct * (lambda_ * (1.0 - target) * long - target * short)}


def _check_capsule_margins(options):
    _validation.check_option_order("m_minus", options["m_minus"], "m_plus", options["m_plus"])


def _sample_capsule_margin(rng, shape, options):
    # lengths in [0, 1], 0.05 away from both margins; index targets for 1-D and 2-D shapes, multi-hot for more
    v = away_from(rng, rng.uniform(0.0, 1.0, shape), (options["m_plus"], options["m_minus"]), 0.05, 0.0, 1.0)
    lead, c = tuple(shape[:-1]), shape[-1]
    if len(shape) <= 2:
        return {"input": v, "target": rng.integers(0, c, lead)}
    t = (rng.random(shape) < 0.3).astype(np.float64)  # several present entities (MultiMNIST)
    return {"input": v, "target": t}


register(LossSpec(
    name="capsule_margin", family=FAMILY,
    summary="Margin loss of capsule networks on capsule lengths (Sabour et al. 2017).",
    inputs=("input", "target"), differentiable=("input",), same_shape=(), label_inputs=("target",),
    value=capsule_margin_value, vjp=capsule_margin_vjp,
    validate=_check_class_scores, check_options=_check_capsule_margins, output_shape=_per_sample, domains={"target": CLASS_INDICES},
    options=(Option("m_plus", 0.9, "Length a present class's capsule should reach, in (0, 1].",
                    number(low=0, high=1, low_open=True)),
             Option("m_minus", 0.1, "Length an absent class's capsule should stay under, in [0, 1); below m_plus.",
                    number(low=0, high=1, high_open=True)),
             Option("lambda_", 0.5, "Down-weighting of the absent classes' term (>= 0); the paper's lambda "
                    "(spelled lambda_, as lambda is a Python keyword).", number(low=0))),
    formula=r"\ell = \sum_c T_c \max(0, m^+ - v_c)^2 + \lambda (1 - T_c) \max(0, v_c - m^-)^2",
    gradient=r"\partial\ell/\partial v_c = -2 T_c \max(0, m^+ - v_c) + 2\lambda (1 - T_c) \max(0, v_c - m^-)",
    sample=_sample_capsule_margin,
    aliases=("capsule_margin_loss", "capsnet_margin"),
    option_cases=({}, {"m_plus": 0.8, "m_minus": 0.25, "lambda_": 0.25}),
    literature=("Sabour, Frosst & Hinton, Dynamic Routing Between Capsules (2017); dl_techniques CapsuleMarginLoss",),
    notes="`input` holds capsule lengths (expected in [0, 1]; the formula is applied to any value), class axis "
          "last. `target` is integer class indices (the input's shape without its class axis) or floating "
          "one-hot/multi-hot rows T (the input's shape). The option `lambda_` is the paper's lambda.",
))
