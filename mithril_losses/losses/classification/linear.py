"""Linear + softmax cross entropy, fused and chunked (PyTorch's ``linear_cross_entropy``).

The logits ``z = x W^T + b`` of an output layer with C classes (an LLM's
vocabulary head: C in the tens of thousands) are never formed for the whole
batch. They are formed one tile at a time: ``chunk_size`` rows of ``x`` by
``class_chunk_size`` classes (rows of ``W``). Along the classes each row keeps
a running max ``m``, sum ``s`` of ``exp(z - m)``, its label's logit and (for
label smoothing) ``sum_c w_c (z_c - m)``, rescaled when the max grows (an
online log-sum-exp). The pullback forms each tile again, with its logit
gradient ``g``, and accumulates ``dx += g W_tile``, ``dW_tile += g^T x``,
``db_tile += sum_rows g``. Memory beyond the inputs and the gradients is a few
tiles; the price is one more (N, H) x (H, C) product than the unfused path.
"""

from __future__ import annotations

import numpy as np

from ... import _numerics, _validation
from ...registry import LossSpec, Option, Reference, register
from .._common import integer, number
from .softmax import _label_weights, _torch_mean_weights

FAMILY = "classification"
# Default tiles: up to ROWS rows by as many classes as fill TILE_BYTES of logits. Products of fewer than a few
# hundred rows or classes run far below the BLAS's speed (CPU, 2024); an 8 MB tile is small next to the
# (N, C) logits it replaces.
ROWS = 2048
TILE_BYTES = 8 * 2**20
TORCH_IGNORE_INDEX = -100  # what PyTorch's ignore_index=None means for class-index targets


def _tiles(xp, n, classes, dtype, chunk_size, class_chunk_size):
    """(row spans, class spans) of the tiles."""
    rows = max(1, min(n, ROWS)) if chunk_size is None else chunk_size
    cols = class_chunk_size or max(1, TILE_BYTES // (rows * (xp.finfo(dtype).bits // 8)))
    return _spans(n, rows), _spans(classes, cols)


def _spans(n, size):
    return [(i, min(i + size, n)) for i in range(0, n, size)]


def _column(xp, v):
    return xp.expand_dims(v, axis=1)


def _tile_logits(xp, x, weight_t, bias, a, c):
    """Logits of the rows ``x`` for the classes a..c-1."""
    z = xp.matmul(x, weight_t[:, a:c])
    return z if bias is None else z + bias[a:c]


def _at_labels(xp, labels, a, c):
    """(labels as indices into the classes a..c-1, 0 where outside them; whether inside)."""
    local = labels - a
    inside = (local >= 0) & (local < c - a)
    return xp.where(inside, local, xp.zeros_like(local)), inside


def _row_statistics(xp, x, weight_t, bias, labels, weight, class_spans):
    """Per row, over the class tiles: (max m, log sum_c exp(z_c - m), the label's logit z_y,
    sum_c w_c (z_c - m) (w = 1 without class weights)), with m, s and that sum rescaled as m grows."""
    m = s = z_y = spread = None
    for a, c in class_spans:
        z = _tile_logits(xp, x, weight_t, bias, a, c)
        local, inside = _at_labels(xp, labels, a, c)
        picked = _numerics.take_labels(xp, z, local, 1)
        m_new = xp.max(z, axis=1) if m is None else xp.maximum(m, xp.max(z, axis=1))
        shifted = z - _column(xp, m_new)
        part = xp.sum(shifted if weight is None else shifted * weight[a:c], axis=1)
        if m is None:
            s, z_y, spread = xp.sum(xp.exp(shifted), axis=1), picked, part
        else:
            seen = float(a) if weight is None else xp.sum(weight[:a])
            s = s * xp.exp(m - m_new) + xp.sum(xp.exp(shifted), axis=1)
            z_y = xp.where(inside, picked, z_y)
            spread = spread + (m - m_new) * seen + part
        m = m_new
    return m, xp.log(s), z_y, spread


def linear_cross_entropy_fused(xp, input, linear_weight, target, linear_bias=None, weight=None, *,
                               ignore_index, label_smoothing, chunk_size, class_chunk_size):
    # z = x W^T + b; per row, with l = log softmax(z) = z - m - log s and e the smoothing:
    # loss = (1 - e) w_y (-l_y) + e/C sum_c w_c (-l_c), 0 where y = ignore_index (cross_entropy's);
    # dloss/dz_j = p_j ((1 - e) w_y + e/C sum_c w_c) - (1 - e) w_y [j = y] - e/C w_j;
    # dx = g W, dW = g^T x, db = sum over rows of g
    unbatched = input.ndim == 1
    x = xp.reshape(input, (1, -1)) if unbatched else input
    y = xp.reshape(target, (1,)) if unbatched else target
    classes = linear_weight.shape[0]
    weight_t = xp.matrix_transpose(linear_weight)
    row_spans, class_spans = _tiles(xp, x.shape[0], classes, x.dtype, chunk_size, class_chunk_size)
    labels, w_y = _label_weights(xp, y, weight, ignore_index, x.dtype)
    valid = y != ignore_index
    e = label_smoothing
    total = float(classes) if weight is None else xp.sum(weight)
    stats, values = [], []
    for i, j in row_spans:
        m, log_s, z_y, spread = _row_statistics(xp, x[i:j, :], weight_t, linear_bias, labels[i:j], weight,
                                                class_spans)
        value = w_y[i:j] * ((m - z_y) + log_s)
        if e > 0:  # sum_c w_c (-l_c) = log s sum_c w_c - sum_c w_c (z_c - m)
            value = (1.0 - e) * value + (e / classes) * (total * log_s - spread)
        values.append(xp.where(valid[i:j], value, xp.zeros_like(value)))  # the label's logit may be inf there
        stats.append((m, log_s))
    value = xp.concat(values, axis=0) if values else _zeros(xp, (0,), x)

    def pullback(ct):
        # every tile's logits are formed again: keeping them would cost the (N, C) array this loss avoids
        ct = xp.reshape(ct, (1,)) if unbatched else ct
        k = xp.where(valid, ct, xp.zeros_like(ct))
        coef = (1.0 - e) * ct * w_y
        if e > 0:
            coef = coef + (e / classes) * total * k
        at_label = -(1.0 - e) * ct * w_y
        dx, dw = _zeros(xp, tuple(x.shape), x), _zeros(xp, tuple(linear_weight.shape), x)
        db = None if linear_bias is None else _zeros(xp, (classes,), x)
        for (i, j), (m, log_s) in zip(row_spans, stats):
            rows = x[i:j, :]
            for a, c in class_spans:
                local, inside = _at_labels(xp, labels[i:j], a, c)
                g = _tile_gradient(xp, _tile_logits(xp, rows, weight_t, linear_bias, a, c), m, log_s, coef[i:j],
                                   local, xp.where(inside, at_label[i:j], xp.zeros_like(at_label[i:j])),
                                   None if e == 0 else ((e / classes) * k[i:j], weight, a, c))
                dx = _numerics.add_to_rows(dx, i, j, xp.matmul(g, linear_weight[a:c, :]))
                dw = _numerics.add_to_rows(dw, a, c, xp.matmul(xp.matrix_transpose(g), rows))
                if db is not None:
                    db = _numerics.add_to_rows(db, a, c, xp.sum(g, axis=0))
        grads = {"input": xp.reshape(dx, tuple(input.shape)) if unbatched else dx, "linear_weight": dw}
        return grads if db is None else {**grads, "linear_bias": db}

    return (xp.reshape(value, ()) if unbatched else value), pullback


def _tile_gradient(xp, z, m, log_s, coef, local, at_label, smoothing):
    """dloss/dz of one tile: p coef - spread w_c (label smoothing) + at_label at the labels.

    ``smoothing`` is (spread per row, class weights or None, the tile's classes a, c), or None.
    """
    g = xp.exp((z - _column(xp, m)) - _column(xp, log_s)) * _column(xp, coef)
    if smoothing is not None:
        spread, weight, a, c = smoothing
        g = g - (_column(xp, spread) if weight is None else _column(xp, spread) * weight[a:c])
    # coef, spread and at_label are 0 on an ignored row, so its gradient is 0 wherever its logits are finite
    # (a non-finite input row reaches dW = g^T x whatever g is, so masking g here would not keep W's gradient)
    return _numerics.add_at_labels(xp, g, local, at_label, 1)


def _zeros(xp, shape, like):
    return xp.zeros(shape, dtype=like.dtype, device=_numerics.device_of(like))


def linear_cross_entropy_value(xp, input, linear_weight, target, linear_bias=None, weight=None, *,
                               ignore_index, label_smoothing, chunk_size, class_chunk_size):
    """cross_entropy(x W^T + b, y): -w_y log p_y (smoothed: (1 - e) of it + e/C of -sum_c w_c log p_c),
    p = softmax(x W^T + b), formed tile by tile."""
    return linear_cross_entropy_fused(xp, input, linear_weight, target, linear_bias, weight, ignore_index=ignore_index,
                                      label_smoothing=label_smoothing, chunk_size=chunk_size,
                                      class_chunk_size=class_chunk_size)[0]


def linear_cross_entropy_vjp(xp, cotangent, input, linear_weight, target, linear_bias=None, weight=None, *,
                             ignore_index, label_smoothing, chunk_size, class_chunk_size):
    return linear_cross_entropy_fused(xp, input, linear_weight, target, linear_bias, weight, ignore_index=ignore_index,
                                      label_smoothing=label_smoothing, chunk_size=chunk_size,
                                      class_chunk_size=class_chunk_size)[1](cotangent)


def _check_linear_cross_entropy(xp, inputs, options, concrete):
    x, w, y = inputs["input"], inputs["linear_weight"], inputs["target"]
    bias, class_weight = inputs.get("linear_bias"), inputs.get("weight")
    _validation.check_ndim_in("input", x, (1, 2), "(N, H) or unbatched (H,)")
    _validation.check_ndim_in("linear_weight", w, (2,), "(C, H)")
    _validation.check_in_features("input", x, "linear_weight", w)
    classes = w.shape[0]
    _validation.check_min_size("linear_weight", classes, 1, "a number of classes (axis 0)")
    _validation.check_class_target_dtype("target", y, xp, probabilities=False)
    where = "the input's batch size" if x.ndim == 2 else "a scalar for an unbatched (H,) input"
    _validation.check_shape("target", y, tuple(x.shape[:-1]), where)
    _validation.check_labels("target", y, xp, classes, ignore_index=options["ignore_index"], concrete=concrete)
    if bias is not None:
        _validation.check_shape("linear_bias", bias, (classes,), "one bias per class, a row of `linear_weight`")
    if class_weight is not None:
        _validation.check_shape("weight", class_weight, (classes,), "one weight per class")


def _torch_ignore_index(name, value):
    return TORCH_IGNORE_INDEX if value is None else integer()(name, value)


def _optional_size(name, value):
    return None if value is None else integer(low=1)(name, value)


def _sample_linear_cross_entropy(rng, shape, options):
    """Features (N, H), a layer (C, H) and bias for the case shape (N, ..., C) (H = 4, or axis 1 of a 3-d shape);
    targets as indices (a quarter ignored), with class weights in two draws of three."""
    shape = tuple(shape)
    n, classes = shape[0], shape[-1]
    features = shape[1] if len(shape) > 2 else 4
    ignore_index = options.get("ignore_index", TORCH_IGNORE_INDEX)
    labels = rng.integers(0, classes, n)
    ignored = rng.random(n) < 0.25
    ignored[0] = False  # never all ignored: PyTorch's mean would be NaN
    if labels[0] == ignore_index:
        labels[0] = (ignore_index + 1) % classes
    out = {"input": rng.normal(0.0, 1.0, (n, features)),
           "linear_weight": rng.normal(0.0, 1.0 / np.sqrt(features), (classes, features)) * 2.0,
           "target": np.where(ignored, ignore_index, labels).astype(np.int64),
           "linear_bias": rng.normal(0.0, 0.5, (classes,))}
    if rng.integers(3) > 0:
        out["weight"] = rng.uniform(0.5, 2.0, (classes,))
    return out


def _torch_linear_cross_entropy(torch, inputs, options, reduction, weight=None):
    return torch.nn.functional.linear_cross_entropy(
        inputs["input"], inputs["linear_weight"], inputs["target"], linear_bias=inputs.get("linear_bias"),
        weight=inputs.get("weight"), reduction=reduction, ignore_index=options["ignore_index"],
        label_smoothing=options["label_smoothing"])


register(LossSpec(
    name="linear_cross_entropy", family=FAMILY,
    summary=("Cross entropy of a linear layer's logits x W^T + b (PyTorch's linear_cross_entropy), fused and "
             "chunked: the (N, C) logits are never formed."),
    inputs=("input", "linear_weight", "target", "linear_bias", "weight"),
    differentiable=("input", "linear_weight", "linear_bias"), predictions=("input",),
    label_inputs=("target",), optional_inputs=("linear_bias", "weight"), same_shape=(),
    value=linear_cross_entropy_value, vjp=linear_cross_entropy_vjp, fused=linear_cross_entropy_fused,
    validate=_check_linear_cross_entropy, output_shape=lambda shapes, options: shapes["input"][:-1],
    mean_weights=_torch_mean_weights,  # cross_entropy's: (linear_weight, linear_bias go to its **options)
    domains={"target": "[0, C)"},
    options=(Option("ignore_index", None, "Targets equal to it add nothing and are not counted (integer; None: -100, "
                    "as PyTorch).", _torch_ignore_index),
             Option("label_smoothing", 0.0, "Mass spread uniformly over the classes, in [0, 1].",
                    number(low=0.0, high=1.0)),
             Option("chunk_size", None, f"Rows of `input` per tile (integer >= 1; None: up to {ROWS}).",
                    _optional_size),
             Option("class_chunk_size", None, "Classes (rows of `linear_weight`) per tile (integer >= 1; None: as "
                    f"many as give {TILE_BYTES // 2**20} MB of logits per tile).", _optional_size)),
    formula=(r"\ell = -w_y \log p_y,\ p = \operatorname{softmax}(x W^\top + b);\ \text{smoothing } \varepsilon:\ "
             r"(1-\varepsilon)\,\ell + \tfrac{\varepsilon}{C}\textstyle\sum_c w_c(-\log p_c)"),
    gradient=(r"g = \partial\ell/\partial z = p\,\textstyle\sum_c w_c t_c - w \odot t\ "
              r"(t\ \text{the smoothed one-hot});\ \partial\ell/\partial x = g W,\ "
              r"\partial\ell/\partial W = g^\top x,\ \partial\ell/\partial b = \textstyle\sum_n g_n"),
    sample=_sample_linear_cross_entropy,
    references={"torch": Reference("torch.nn.functional.linear_cross_entropy", _torch_linear_cross_entropy)},
    option_cases=({}, {"label_smoothing": 0.1, "chunk_size": 2, "class_chunk_size": 2},
                  {"ignore_index": 1, "chunk_size": 1, "class_chunk_size": 3},
                  {"ignore_index": 0, "label_smoothing": 0.25, "class_chunk_size": 1}),
    literature=("torch.nn.functional.linear_cross_entropy; Wijmans et al., Cut Your Losses in Large-Vocabulary "
                "Language Models (2024), the logits never materialised",),
    notes=("`input` (N, H) or unbatched (H,), `linear_weight` (C, H) and `linear_bias` (C,) (optional) form the "
           "logits x W^T + b; `target` holds integer class indices (N,) (or a scalar); `weight` (C,) are class "
           "weights, and a mean divides by the sum of the targets' weights (ignored targets count 0), as "
           "cross_entropy. Gradients for `input`, `linear_weight` and `linear_bias`. The logits are formed in tiles "
           "of `chunk_size` rows by `class_chunk_size` classes (an online log-sum-exp along the classes), so "
           "memory beyond the inputs and gradients is a few tiles (the unfused path holds several (N, C) arrays); "
           "the gradient forms each tile again (one more matrix product than the unfused path). Class-probability "
           "targets and K-dimensional weights (C, d1, ..., H), which PyTorch also accepts, are not supported. "
           "Unlike PyTorch, a mean over targets that are all ignored (or an empty batch) is 0 with a zero "
           "gradient, not NaN. An ignored row's gradient is 0 wherever its logits are finite; a non-finite "
           "feature reaches `linear_weight`'s gradient (g^T x) whether its row is ignored or not. On JAX the "
           "tiles are static slices: the first call compiles each, and under jax.jit the gradient buffers are "
           "updated in place."),
))
