"""Softmax classification losses: one decision among C classes per sample.

Each loss is a value function (unreduced, one value per sample) and its
hand-derived vjp side by side. ``x`` are the logits, ``p = softmax(x)``,
``l = log p`` (max-shifted, never ``log(softmax)``), ``y`` the target: integer
class indices, or class probabilities of the input's shape. Index targets are
never expanded to a one-hot array: the gradient is ``p * k`` with the label
terms added in place (``add_at_labels``). The PyTorch losses (``cross_entropy``,
``nll``) have the class axis 1 (0 for an unbatched ``(C,)`` input); the Keras
and optax ones (``categorical_cross_entropy``, ``poly1``, ``categorical_focal``)
the last axis. The engine adds reduction, weights and masks.
"""

from __future__ import annotations

import numpy as np

from ... import _numerics, _validation
from ...registry import LossSpec, Option, Reference, register
from .._common import CLASS_INDICES, integer, number, number_or_numbers

FAMILY = "classification"


def _is_index(xp, target) -> bool:
    return _validation._isdtype(xp, target.dtype, "integral")


def _expand(xp, v, axis):
    return xp.expand_dims(v, axis=axis)


# --------------------------------------------------------------------------- PyTorch layout (class axis 1)


def _torch_axis(x) -> int:
    return 1 if x.ndim > 1 else 0


def _without_axis(shape, axis):
    return tuple(n for i, n in enumerate(shape) if i != axis)


def _torch_output_shape(shapes, options):
    shape = shapes["input"]
    return _without_axis(shape, 1 if len(shape) > 1 else 0)


def _class_view(xp, w, ndim, axis):
    """Class weights (C,) shaped to broadcast along ``axis`` of an ndim-array."""
    return xp.reshape(w, (-1,) + (1,) * (ndim - axis - 1))


def _labels(xp, target, ignore_index):
    """(labels: the class indices with ignored targets set to 0, valid: the targets not ignored)."""
    valid = target != ignore_index
    return _numerics.as_index(xp, xp.where(valid, target, 0)), valid


def _label_weights(xp, target, weight, ignore_index, dtype):
    """(labels with ignored entries set to 0, per-sample weight w[y] (1 without weights) and 0 where ignored)."""
    labels, valid = _labels(xp, target, ignore_index)
    w = xp.astype(valid, dtype)
    if weight is not None:  # where, not a product: an ignored target reads weight[0], which may be NaN or inf
        w = xp.where(valid, _numerics.take_table(xp, weight, labels), w)
    return labels, w


def _torch_mean_weights(xp, input, target, weight=None, *, ignore_index, **options):
    # PyTorch's mean over index targets divides by the sum of the targets' class weights (ignored: 0);
    # over probability targets by the count, as the engine does without these weights
    if not _is_index(xp, target):
        return None
    if weight is None:  # the count of the targets not ignored
        return xp.astype(target != ignore_index, input.dtype)
    return _label_weights(xp, target, weight, ignore_index, input.dtype)[1]


def _check_torch_layout(xp, inputs, options, concrete, *, probabilities):
    x, y, w = inputs["input"], inputs["target"], inputs.get("weight")
    _validation.check_ndim("input", x, at_least=1)
    axis = _torch_axis(x)
    classes = x.shape[axis]
    _validation.check_min_size("input", classes, 1, f"a number of classes (axis {axis})")
    if probabilities and xp.isdtype(y.dtype, "real floating"):
        _validation.check_same_shape("input", x, "target", y)
        if options["ignore_index"] != -100:
            raise _validation.ignore_index_with_probabilities(options["ignore_index"])
    else:
        _validation.check_class_target_dtype("target", y, xp, probabilities=probabilities)
        where = "the input's shape without the class axis 1" if x.ndim > 1 else "a scalar for an unbatched (C,) input"
        _validation.check_shape("target", y, _without_axis(tuple(x.shape), axis), where)
        _validation.check_labels("target", y, xp, classes, ignore_index=options["ignore_index"], concrete=concrete)
    if w is not None:
        _validation.check_shape("weight", w, (classes,), "one weight per class")


# --------------------------------------------------------------------------- cross_entropy


def _class_weights_at(xp, target, weight, ignore_index):
    """(labels, valid, w_y): ``_labels`` and the class weights at the labels, None without class weights."""
    labels, valid = _labels(xp, target, ignore_index)
    return labels, valid, None if weight is None else _numerics.take_table(xp, weight, labels)


def _weighted(w, a):
    """w * a, or ``a`` itself where there are no class weights (w is None)."""
    return a if w is None else w * a


def _cross_entropy_index(xp, input, weight, axis, smoothing, w_y, valid, log_p_y, parts):
    # l = (1 - e) w_y (-l_y) + e/C sum_c w_c (-l_c), 0 where y = ignore_index (PyTorch's label smoothing);
    # with smoothing, parts = (m, log_s): -l_c = log s - (x_c - m), no array of log-probabilities is formed
    value = xp.where(valid, -_weighted(w_y, log_p_y), 0.0)  # where ignored, l_y may be -inf and w_y NaN or inf
    if smoothing > 0:
        m, log_s = parts
        total = 1.0 * input.shape[axis] if weight is None else xp.sum(weight)
        smooth = total * xp.squeeze(log_s, axis=axis) - _shifted_class_sum(xp, input, weight, m, axis)
        value = (1.0 - smoothing) * value + (smoothing / input.shape[axis]) * xp.where(valid, smooth, 0.0)
    return value


def _cross_entropy_index_fused(xp, input, target, weight, axis, ignore_index, smoothing):
    # dl/dx_j = p_j ((1 - e) w_y + e/C sum_c w_c) - (1 - e) w_y [j = y] - e/C w_j, formed in the softmax's buffer
    labels, valid, w_y = _class_weights_at(xp, target, weight, ignore_index)
    if smoothing > 0:
        p, *parts = _numerics.softmax_parts(xp, input, axis)
        log_p_y = _numerics.log_softmax_from_parts(xp, input, labels, axis, *parts)
    else:
        (p, log_p_y), parts = _numerics.softmax_and_log_softmax_at(xp, input, labels, axis), None
    value = _cross_entropy_index(xp, input, weight, axis, smoothing, w_y, valid, log_p_y, parts)
    softmax = _numerics.once(p, lambda: _numerics.softmax_parts(xp, input, axis)[0])

    def pullback(ct):
        at_label = coef = xp.where(valid, _weighted(w_y, ct), 0.0)  # ignored: 0 for any ct
        if smoothing > 0:  # only then: the sum of a NaN or inf class weight would reach every sample
            at_label = (1.0 - smoothing) * at_label
            total = 1.0 * input.shape[axis] if weight is None else xp.sum(weight)
            spread = (smoothing / input.shape[axis]) * xp.where(valid, ct, 0.0)
            coef = at_label + total * spread
        g = _numerics.scale_slices(xp, softmax(), coef, axis)  # a -inf logit has p = 0: gradient 0 (no smoothing)
        if smoothing > 0:
            w = _weights_along(xp, weight, input.ndim, axis)
            g = _numerics.map_chunks(xp, lambda g, s: g - _weighted(w, s), g, xp.expand_dims(spread, axis=axis), out=g)
        # an ignored target's logits get 0, even where they hold NaN or inf (p * 0 would be NaN there)
        g = _numerics.zero_slices(xp, g, valid, axis)
        return {"input": _numerics.add_at_labels(xp, g, labels, -at_label, axis)}

    return value, pullback


def _cross_entropy_index_value(xp, input, target, weight, axis, ignore_index, smoothing):
    labels, valid, w_y = _class_weights_at(xp, target, weight, ignore_index)
    if smoothing > 0:
        parts = _numerics.logsumexp_parts(xp, input, axis)
        log_p_y = _numerics.log_softmax_from_parts(xp, input, labels, axis, *parts)
    else:
        log_p_y, parts = _numerics.log_softmax_at(xp, input, labels, axis), None
    return _cross_entropy_index(xp, input, weight, axis, smoothing, w_y, valid, log_p_y, parts)


def _weights_along(xp, weight, ndim, axis):
    return None if weight is None else _class_view(xp, weight, ndim, axis)


def _smoothed(xp, target, smoothing, classes):
    return target if smoothing == 0 else (1.0 - smoothing) * target + smoothing / classes


def _shifted_class_sum(xp, input, weight, m, axis):
    """sum_c w_c (x_c - m) along ``axis`` (in row chunks where they pay: no temporary of the input's size)."""
    w = _weights_along(xp, weight, input.ndim, axis)
    return _numerics.map_chunks(xp, lambda x, m: xp.sum(_weighted(w, x - m), axis=axis), input, m)


def _target_sums(xp, input, target, weight, m, axis, smoothing):
    """(sum_c w_c t_c, sum_c w_c t_c (x_c - m)) along ``axis`` for the smoothed target t, a term 0 where
    w_c t_c = 0 (also at a -inf logit); in row chunks where they pay: no temporary of the input's size."""
    w, classes = _weights_along(xp, weight, input.ndim, axis), input.shape[axis]

    def sums(x, y, m):
        wt = _weighted(w, _smoothed(xp, y, smoothing, classes))
        return xp.sum(wt, axis=axis), xp.sum(_numerics.xlog(xp, wt, x - m), axis=axis)

    return _numerics.map_chunks(xp, sums, input, target, m)


def _cross_entropy_probabilities(xp, input, target, weight, axis, smoothing, m, log_s):
    # l = -sum_c w_c t_c l_c = log s sum_c w_c t_c - sum_c w_c t_c (x_c - m),  t = (1 - e) y + e/C
    mass, shifted = _target_sums(xp, input, target, weight, m, axis, smoothing)
    return mass * xp.squeeze(log_s, axis=axis) - shifted, mass


def _cross_entropy_probabilities_fused(xp, input, target, weight, axis, smoothing):
    # dl/dx_j = p_j sum_c w_c t_c - w_j t_j, formed in the softmax's buffer
    p, m, log_s = _numerics.softmax_parts(xp, input, axis)
    value, mass = _cross_entropy_probabilities(xp, input, target, weight, axis, smoothing, m, log_s)
    softmax = _numerics.once(p, lambda: _numerics.softmax_parts(xp, input, axis)[0])
    w, classes = _weights_along(xp, weight, input.ndim, axis), input.shape[axis]

    def pullback(ct):
        g = _numerics.scale_slices(xp, softmax(), ct * mass, axis)
        return {"input": _numerics.map_chunks(
            xp, lambda g, y, ct: g - _weighted(w, ct) * _smoothed(xp, y, smoothing, classes),
            g, target, xp.expand_dims(ct, axis=axis), out=g)}

    return value, pullback


def cross_entropy_fused(xp, input, target, weight=None, *, ignore_index, label_smoothing):
    axis = _torch_axis(input)
    if _is_index(xp, target):
        return _cross_entropy_index_fused(xp, input, target, weight, axis, ignore_index, label_smoothing)
    return _cross_entropy_probabilities_fused(xp, input, target, weight, axis, label_smoothing)


def cross_entropy_value(xp, input, target, weight=None, *, ignore_index, label_smoothing):
    """-w_y log p_y for class indices (smoothed: (1 - e) of it + e/C of -sum_c w_c log p_c);
    -sum_c w_c t_c log p_c for class probabilities t (smoothed: (1 - e) t + e/C)."""
    axis = _torch_axis(input)
    if _is_index(xp, target):
        return _cross_entropy_index_value(xp, input, target, weight, axis, ignore_index, label_smoothing)
    m, log_s = _numerics.logsumexp_parts(xp, input, axis)
    return _cross_entropy_probabilities(xp, input, target, weight, axis, label_smoothing, m, log_s)[0]


def cross_entropy_vjp(xp, cotangent, input, target, weight=None, *, ignore_index, label_smoothing):
    return cross_entropy_fused(xp, input, target, weight, ignore_index=ignore_index,
                               label_smoothing=label_smoothing)[1](cotangent)


def _check_cross_entropy(xp, inputs, options, concrete):
    _check_torch_layout(xp, inputs, options, concrete, probabilities=True)


def _torch_cross_entropy(torch, inputs, options, reduction, weight=None):
    return torch.nn.functional.cross_entropy(
        inputs["input"], inputs["target"], weight=inputs.get("weight"), ignore_index=options["ignore_index"],
        label_smoothing=options["label_smoothing"], reduction=reduction)


def _torch_sample_parts(rng, shape, options, *, log_probabilities=False):
    """Logits (or log-probabilities) of ``shape``; targets drawn in one of three forms:
    indices (a quarter ignored), indices with class weights, probabilities with class weights."""
    shape = tuple(shape)
    axis = 1 if len(shape) > 1 else 0
    classes = shape[axis]
    x = rng.normal(0.0, 2.0, shape)
    if log_probabilities:
        x = x - np.log(np.sum(np.exp(x), axis=axis, keepdims=True))
    out = {"input": x}
    form = int(rng.integers(3))
    if form == 2 and not log_probabilities and options.get("ignore_index", -100) == -100:
        t = rng.uniform(0.05, 1.0, shape)
        out["target"] = t / np.sum(t, axis=axis, keepdims=True)
    else:
        ignore_index = options.get("ignore_index", -100)
        labels = np.asarray(rng.integers(0, classes, _without_axis(shape, axis)))
        ignored = np.asarray(rng.random(labels.shape) < 0.25)  # arrays, also when 0-d (unbatched)
        ignored.flat[0] = False  # never all ignored: PyTorch's mean would be NaN
        if labels.flat[0] == ignore_index:
            labels.flat[0] = (ignore_index + 1) % classes
        out["target"] = np.where(ignored, ignore_index, labels).astype(np.int64)
    if form > 0:
        out["weight"] = rng.uniform(0.5, 2.0, (classes,))
    return out


def _sample_cross_entropy(rng, shape, options):
    return _torch_sample_parts(rng, shape, options)


register(LossSpec(
    name="cross_entropy", family=FAMILY,
    summary="Softmax cross entropy on logits (PyTorch's): class indices or probabilities, class weights, ignore_index, label smoothing.",
    inputs=("input", "target", "weight"), differentiable=("input",),
    label_inputs=("target",), optional_inputs=("weight",), same_shape=(),
    value=cross_entropy_value, vjp=cross_entropy_vjp, fused=cross_entropy_fused,
    validate=_check_cross_entropy, output_shape=_torch_output_shape, mean_weights=_torch_mean_weights,
    domains={"target": CLASS_INDICES},
    options=(Option("ignore_index", -100, "Index targets equal to it add nothing and are not counted (integer).",
                    integer()),
             Option("label_smoothing", 0.0, "Mass spread uniformly over the classes, in [0, 1].",
                    number(low=0.0, high=1.0))),
    formula=(r"\ell = -w_y \log p_y\ \text{(indices)},\quad -\textstyle\sum_c w_c t_c \log p_c\ \text{(probabilities)},"
             r"\ p = \operatorname{softmax}(x);\ \text{smoothing } \varepsilon:\ "
             r"(1-\varepsilon)\,\ell + \tfrac{\varepsilon}{C}\textstyle\sum_c w_c(-\log p_c)"),
    gradient=(r"\partial\ell/\partial x = p\,\textstyle\sum_c w_c t_c - w \odot t"
              r"\ \ (t\ \text{the smoothed one-hot or probabilities})"),
    sample=_sample_cross_entropy,
    aliases=("cross_entropy_with_logits",),
    functional=("cross_entropy", "cross_entropy_with_logits"),
    references={"torch": Reference("torch.nn.functional.cross_entropy", _torch_cross_entropy)},
    option_cases=({}, {"label_smoothing": 0.1}, {"ignore_index": 1}, {"ignore_index": 0, "label_smoothing": 0.25}),
    literature=("torch.nn.functional.cross_entropy; Szegedy et al., Rethinking the Inception Architecture (2016), "
                "label smoothing",),
    notes=("Logits `input` of shape (N, C), (N, C, d1, ..., dk) or unbatched (C,); `target` holds integer class "
           "indices (the input's shape without axis 1) or floating class probabilities (the input's shape), as "
           "PyTorch. `weight` (C,) are class weights: a mean over index targets divides by the sum of the targets' "
           "weights (ignored targets count 0), a mean over probability targets by N d1...dk. `ignore_index` "
           "applies to index targets only (PyTorch rejects a non-default one with probabilities, so does this). "
           "Unlike PyTorch, a mean over targets that are all ignored is 0 with a zero gradient, not NaN; and a "
           "zero target probability at a -inf logit adds 0, not NaN. A -inf (masked) logit gets a zero gradient; "
           "with label smoothing it also receives e/C of the target mass, so the value is +inf there, as PyTorch's."),
))


# --------------------------------------------------------------------------- nll


def nll_fused(xp, input, target, weight=None, *, ignore_index):
    # l = -w_y x_y (x: log-probabilities), 0 where ignored;  dl/dx = -w_y at the label, 0 elsewhere
    axis = _torch_axis(input)
    labels, w_y = _label_weights(xp, target, weight, ignore_index, input.dtype)
    picked = _numerics.take_labels(xp, input, labels, axis)
    value = xp.where(target != ignore_index, -w_y * picked, xp.zeros_like(picked))

    def pullback(ct):
        return {"input": _numerics.add_at_labels(xp, xp.zeros_like(input), labels, -ct * w_y, axis)}

    return value, pullback


def nll_value(xp, input, target, weight=None, *, ignore_index):
    """-w_y x_y: the negative log-probability of the target class, times its class weight."""
    return nll_fused(xp, input, target, weight, ignore_index=ignore_index)[0]


def nll_vjp(xp, cotangent, input, target, weight=None, *, ignore_index):
    return nll_fused(xp, input, target, weight, ignore_index=ignore_index)[1](cotangent)


def _check_nll(xp, inputs, options, concrete):
    _check_torch_layout(xp, inputs, options, concrete, probabilities=False)


def _torch_nll(torch, inputs, options, reduction, weight=None):
    return torch.nn.functional.nll_loss(inputs["input"], inputs["target"], weight=inputs.get("weight"),
                                        ignore_index=options["ignore_index"], reduction=reduction)


register(LossSpec(
    name="nll", family=FAMILY, summary="Negative log-likelihood on log-probabilities (PyTorch's nll_loss).",
    inputs=("input", "target", "weight"), differentiable=("input",),
    label_inputs=("target",), optional_inputs=("weight",), same_shape=(),
    value=nll_value, vjp=nll_vjp, fused=nll_fused,
    validate=_check_nll, output_shape=_torch_output_shape, mean_weights=_torch_mean_weights,
    domains={"target": "[0, C)"},
    options=(Option("ignore_index", -100, "Targets equal to it add nothing and are not counted (integer).",
                    integer()),),
    formula=r"\ell = -w_y\, x_y",
    gradient=r"\partial\ell/\partial x_j = -w_y\,[j = y]",
    sample=lambda rng, shape, options: _torch_sample_parts(rng, shape, options, log_probabilities=True),
    aliases=("nll_loss",),
    functional=("nll_loss",),
    references={"torch": Reference("torch.nn.functional.nll_loss", _torch_nll)},
    option_cases=({}, {"ignore_index": 2}),
    literature=("torch.nn.functional.nll_loss",),
    notes=("`input` holds log-probabilities, shape (N, C), (N, C, d1, ..., dk) or unbatched (C,); `target` "
           "integer class indices (the input's shape without axis 1). A mean divides by the sum of the targets' "
           "class weights (1 each without `weight`; ignored targets count 0). Unlike PyTorch, a mean over "
           "targets that are all ignored is 0 with a zero gradient, not NaN."),
))


# --------------------------------------------------------------------------- categorical_cross_entropy (Keras)


def _keras_probabilities(xp, input, eps):
    s = xp.sum(input, axis=-1, keepdims=True)
    q = input / s
    return s, q, xp.clip(q, min=eps, max=1.0 - eps)


def categorical_cross_entropy_fused(xp, input, target, *, eps):
    # q = p / sum(p), r = clip(q, eps, 1 - eps), l = -sum_c y_c log r_c;
    # g_c = dl/dq_c = -y_c / r_c inside the clip, 0 outside;  dl/dp_j = (g_j - sum_c g_c q_c) / sum(p);
    # dl/dy_c = -log r_c
    s, q, r = _keras_probabilities(xp, input, eps)
    log_r = xp.log(r)
    value = -xp.sum(target * log_r, axis=-1)

    def pullback(ct):
        ct = _expand(xp, ct, -1)
        inside = (q > eps) & (q < 1.0 - eps)
        g = xp.where(inside, -ct * target / r, xp.zeros_like(q))
        return {"input": (g - xp.sum(g * q, axis=-1, keepdims=True)) / s, "target": -ct * log_r}

    return value, pullback


def categorical_cross_entropy_value(xp, input, target, *, eps):
    """-sum_c y_c log clip(p_c / sum(p), eps, 1 - eps), over the last axis (Keras)."""
    s, q, r = _keras_probabilities(xp, input, eps)
    return -xp.sum(target * xp.log(r), axis=-1)


def categorical_cross_entropy_vjp(xp, cotangent, input, target, *, eps):
    return categorical_cross_entropy_fused(xp, input, target, eps=eps)[1](cotangent)


def _check_categorical_cross_entropy(xp, inputs, options, concrete):
    _validation.check_ndim("input", inputs["input"], at_least=1)


def _sample_categorical_cross_entropy(rng, shape, options):
    t = rng.uniform(0.05, 1.0, shape)
    return {"input": rng.uniform(0.1, 1.0, shape), "target": t / np.sum(t, axis=-1, keepdims=True)}


register(LossSpec(
    name="categorical_cross_entropy", family=FAMILY,
    summary="Cross entropy on probabilities (softmax outputs), Keras's: renormalised, clipped to [eps, 1 - eps].",
    inputs=("input", "target"), differentiable=("input", "target"),
    value=categorical_cross_entropy_value, vjp=categorical_cross_entropy_vjp, fused=categorical_cross_entropy_fused,
    validate=_check_categorical_cross_entropy, output_shape=lambda shapes, options: shapes["input"][:-1],
    options=(Option("eps", 1e-7, "Clip of the probabilities to [eps, 1 - eps] (Keras's epsilon), in (0, 0.5).",
                    number(low=0.0, high=0.5, low_open=True, high_open=True)),),
    formula=r"\ell = -\textstyle\sum_c y_c \log \operatorname{clip}(q_c, \epsilon, 1 - \epsilon),\ q = p / \textstyle\sum_c p_c",
    gradient=(r"\partial\ell/\partial p_j = (g_j - \textstyle\sum_c g_c q_c) / \textstyle\sum_c p_c,\ "
              r"g_c = -y_c / q_c\ (0\ \text{where clipped});\quad \partial\ell/\partial y_c = -\log\operatorname{clip}(q_c)"),
    sample=_sample_categorical_cross_entropy,
    aliases=("cross_entropy_loss", "categorical_crossentropy"),
    functional=("cross_entropy_loss", "categorical_cross_entropy"),
    option_cases=({}, {"eps": 1e-3}),
    literature=("keras.losses.categorical_crossentropy (from_logits=False); Mithril cross_entropy_loss",),
    notes=("`input` holds probabilities (e.g. softmax outputs) with the classes on the last axis; each row is "
           "renormalised to sum 1 and clipped to [eps, 1 - eps] before the log, exactly as Keras, so "
           "probabilities of exactly 0 and 1 give a finite value (and a zero gradient where clipped). `target` "
           "(one-hot or probabilities, same shape) gets a gradient too. For logits use `cross_entropy`."),
))


# --------------------------------------------------------------------------- poly1 (optax)


def poly1_fused(xp, input, target, *, epsilon):
    # l = CE + e sum_c y_c (1 - p_c), CE = -sum_c y_c l_c (optax);  with S = sum y, p_t = sum y p:
    # dl/dx_j = p_j S - y_j - e p_j (y_j - p_t) = p_j (S + e p_t) - y_j (1 + e p_j);
    # index targets (one-hot): (p - onehot) (1 + e p_y)
    log_p = _numerics.log_softmax(xp, input, -1)
    p = xp.exp(log_p)
    if _is_index(xp, target):
        target = _numerics.as_index(xp, target)
        log_py = _numerics.take_labels(xp, log_p, target, -1)
        p_y = xp.exp(log_py)
        value = -log_py + epsilon * (1.0 - p_y)

        def pullback(ct):
            k = ct * (1.0 + epsilon * p_y)
            return {"input": _numerics.add_at_labels(xp, p * _expand(xp, k, -1), target, -k, -1)}

        return value, pullback

    total = xp.sum(target, axis=-1, keepdims=True)
    p_t = xp.sum(target * p, axis=-1, keepdims=True)
    value = -xp.sum(_numerics.xlog(xp, target, log_p), axis=-1) + epsilon * xp.squeeze(total - p_t, axis=-1)

    def pullback(ct):
        ct = _expand(xp, ct, -1)
        return {"input": ct * (p * (total + epsilon * p_t) - target * (1.0 + epsilon * p))}

    return value, pullback


def poly1_value(xp, input, target, *, epsilon):
    """-sum_c y_c log p_c + epsilon sum_c y_c (1 - p_c) (optax's poly_loss_cross_entropy)."""
    return poly1_fused(xp, input, target, epsilon=epsilon)[0]


def poly1_vjp(xp, cotangent, input, target, *, epsilon):
    return poly1_fused(xp, input, target, epsilon=epsilon)[1](cotangent)


def _check_last_axis_classes(xp, inputs, options, concrete):
    x, y = inputs["input"], inputs["target"]
    _validation.check_ndim("input", x, at_least=1)
    _validation.check_min_size("input", x.shape[-1], 1, "a number of classes (last axis)")
    if xp.isdtype(y.dtype, "real floating"):
        _validation.check_same_shape("input", x, "target", y)
    else:
        _validation.check_class_target_dtype("target", y, xp, probabilities=True)
        _validation.check_shape("target", y, tuple(x.shape[:-1]), "the input's shape without the class axis -1")
        _validation.check_labels("target", y, xp, x.shape[-1], concrete=concrete)


def _sample_last_axis(rng, shape, options):
    """Logits; targets as class indices or probabilities (drawn at random)."""
    x = rng.normal(0.0, 2.0, shape)
    if rng.random() < 0.5:
        return {"input": x, "target": rng.integers(0, shape[-1], tuple(shape[:-1])).astype(np.int64)}
    t = rng.uniform(0.05, 1.0, shape)
    return {"input": x, "target": t / np.sum(t, axis=-1, keepdims=True)}


def _optax_poly1(optax, inputs, options, reduction, weight=None):
    x, y = inputs["input"], inputs["target"]
    if not np.issubdtype(y.dtype, np.floating):
        import jax

        y = jax.nn.one_hot(y, x.shape[-1], dtype=x.dtype)
    return optax.losses.poly_loss_cross_entropy(x, y, epsilon=options["epsilon"])


register(LossSpec(
    name="poly1", family=FAMILY, summary="Poly-1 loss: softmax cross entropy plus epsilon (1 - p_t) (optax's).",
    inputs=("input", "target"), differentiable=("input",), label_inputs=("target",), same_shape=(),
    value=poly1_value, vjp=poly1_vjp, fused=poly1_fused,
    validate=_check_last_axis_classes, output_shape=lambda shapes, options: shapes["input"][:-1],
    domains={"target": CLASS_INDICES},
    options=(Option("epsilon", 2.0, "Coefficient of the first polynomial term (any real; 2 for ImageNet, "
                    "-1 for detection in the paper).", number()),),
    formula=r"\ell = -\textstyle\sum_c y_c \log p_c + \epsilon \textstyle\sum_c y_c (1 - p_c),\ p = \operatorname{softmax}(x)",
    gradient=r"\partial\ell/\partial x_j = p_j (S + \epsilon p_t) - y_j (1 + \epsilon p_j),\ S = \textstyle\sum_c y_c,\ p_t = \textstyle\sum_c y_c p_c",
    sample=_sample_last_axis,
    aliases=("poly_loss_cross_entropy",),
    references={"optax": Reference("optax.losses.poly_loss_cross_entropy", _optax_poly1)},
    option_cases=({}, {"epsilon": -1.0}, {"epsilon": 0.5}),
    literature=("Leng et al., PolyLoss: A Polynomial Expansion Perspective of Classification Loss Functions (ICLR 2022)",),
    notes=("Logits with the classes on the last axis; `target` holds class probabilities (one-hot or soft, the "
           "input's shape) or integer class indices (the input's shape without the last axis), which mean a "
           "one-hot. The value is optax's: for targets that do not sum to 1 the polynomial term is "
           "epsilon sum_c y_c (1 - p_c). A zero target at a -inf logit adds 0, not NaN."),
))


# --------------------------------------------------------------------------- categorical_focal (Keras)


def _focal_factors(xp, log_p, log_q, gamma):
    """(p, q, f, p r) per class: p, q = 1 - p, f = q^gamma = exp(gamma log q), p r = p log p / q in [-1, 0].

    All come from log p and log q (accurate as p -> 1) and take their limits exactly:
    f = 0 at q = 0 (gamma > 0), p r = -1 at q = 0 and 0 at p = 0, so no 0 * inf is ever formed.
    """
    p, q = xp.exp(log_p), xp.exp(log_q)
    f = xp.ones_like(log_p) if gamma == 0 else xp.exp(gamma * log_q)
    at_one = q == 0
    r = xp.where(at_one, -xp.ones_like(q), log_p / xp.where(at_one, xp.ones_like(q), q))
    return p, q, f, p * xp.where(p == 0, xp.zeros_like(r), r)


def categorical_focal_fused(xp, input, target, *, gamma, alpha):
    # l = -sum_c a_c y_c f_c l_c, f_c = q_c^g, q_c = 1 - p_c, l_c = log p_c. With dl_c/dx_j = [c=j] - p_j
    # and df_c/dx_j = -g f_c (p_c / q_c) ([c=j] - p_j):
    # dl/dx_j = p_j sum_c u_c - u_j = p_j sum_(c != j) u_c - q_j u_j,  u_c = a_c y_c f_c (1 - g p_c l_c / q_c)
    # (gamma = 0: weighted cross entropy's p sum(a y) - a y). The second form keeps the dominant class's
    # entry accurate when q_j is below the rounding of 1 (p_j - 1 would round to 0).
    log_p, log_q = _numerics.log_softmax_complement(xp, input, -1)
    if _is_index(xp, target):
        target = _numerics.as_index(xp, target)
        log_py = _numerics.take_labels(xp, log_p, target, -1)
        _, q_y, f, pr = _focal_factors(xp, log_py, _numerics.take_labels(xp, log_q, target, -1), gamma)
        a = 1.0 if alpha is None else (
            _numerics.take_table(xp, _numerics.constant(xp, alpha, input), target) if isinstance(alpha, tuple)
            else alpha)
        value = -a * f * log_py

        def pullback(ct):
            # one-hot u: p_j u_y off the label, -q_y u_y on it (set, not added to p_y u_y)
            k = ct * a * f * (1.0 - gamma * pr)
            g = _numerics.zero_at_labels(xp, xp.exp(log_p) * _expand(xp, k, -1), target, -1)
            return {"input": _numerics.add_at_labels(xp, g, target, -k * q_y, -1)}

        return value, pullback

    p, q, f, pr = _focal_factors(xp, log_p, log_q, gamma)
    ay = target if alpha is None else target * (
        _numerics.constant(xp, alpha, input) if isinstance(alpha, tuple) else alpha)
    value = -xp.sum(_numerics.xlog(xp, ay, log_p) * f, axis=-1)

    def pullback(ct):
        u = _expand(xp, ct, -1) * ay * f * (1.0 - gamma * pr)
        dominant = log_p > -_numerics.LOG2  # p > 1/2: its others' sum is formed without it, not as total - u
        rest = xp.sum(xp.where(dominant, xp.zeros_like(u), u), axis=-1, keepdims=True)
        others = xp.where(dominant, rest, xp.sum(u, axis=-1, keepdims=True) - u)
        return {"input": p * others - q * u}

    return value, pullback


def categorical_focal_value(xp, input, target, *, gamma, alpha):
    """-sum_c alpha_c y_c (1 - p_c)^gamma log p_c over the last axis, p = softmax(x)."""
    return categorical_focal_fused(xp, input, target, gamma=gamma, alpha=alpha)[0]


def categorical_focal_vjp(xp, cotangent, input, target, *, gamma, alpha):
    return categorical_focal_fused(xp, input, target, gamma=gamma, alpha=alpha)[1](cotangent)


def _focal_alpha(name, value):
    if value is None:
        return None
    return number_or_numbers(low=0.0)(name, value)


def _check_categorical_focal(xp, inputs, options, concrete):
    _check_last_axis_classes(xp, inputs, options, concrete)
    alpha = options["alpha"]
    if isinstance(alpha, tuple):
        _validation.check_option_length("alpha", alpha, inputs["input"].shape[-1], "one weight per class")


register(LossSpec(
    name="categorical_focal", family=FAMILY,
    summary="Softmax focal loss on logits (Keras's CategoricalFocalCrossentropy): cross entropy scaled by (1 - p_c)^gamma.",
    inputs=("input", "target"), differentiable=("input",), label_inputs=("target",), same_shape=(),
    value=categorical_focal_value, vjp=categorical_focal_vjp, fused=categorical_focal_fused,
    validate=_check_categorical_focal, output_shape=lambda shapes, options: shapes["input"][:-1],
    domains={"target": CLASS_INDICES},
    options=(Option("gamma", 2.0, "Focusing exponent of (1 - p) (>= 0; 0 gives alpha-weighted cross entropy).",
                    number(low=0.0)),
             Option("alpha", 0.25, "Class balance: a number for all classes, one per class, or None for 1.",
                    _focal_alpha)),
    formula=r"\ell = -\textstyle\sum_c \alpha_c\, y_c\, (1 - p_c)^{\gamma} \log p_c,\ p = \operatorname{softmax}(x)",
    gradient=(r"\partial\ell/\partial x_j = p_j \textstyle\sum_c u_c - u_j,\ "
              r"u_c = \alpha_c y_c (1 - p_c)^{\gamma}\left(1 - \gamma\,\frac{p_c \log p_c}{1 - p_c}\right)"),
    sample=_sample_last_axis,
    aliases=("categorical_focal_crossentropy", "categorical_focal_loss"),
    option_cases=({}, {"gamma": 0.5, "alpha": None}, {"gamma": 0.0, "alpha": 0.7}, {"gamma": 3.0, "alpha": 1.0}),
    literature=("Lin et al., Focal Loss for Dense Object Detection (ICCV 2017); "
                "keras.losses.CategoricalFocalCrossentropy",),
    notes=("Logits with the classes on the last axis; `target` holds class probabilities (one-hot or soft, the "
           "input's shape) or integer class indices (the input's shape without the last axis). The focal weight "
           "is exp(gamma log(1 - p)) with log(1 - p) formed without cancellation (from the other classes' mass "
           "for the dominant class), so values and gradients stay finite for any gamma >= 0 at logits of +-100 "
           "and beyond. Keras clips p to [1e-7, 1 - 1e-7] before the log; here p is exact, so the two agree "
           "wherever that clip is inactive."),
))
