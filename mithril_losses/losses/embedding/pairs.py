"""Pair and triplet embedding losses: triplet margin (PyTorch's, and with a named distance), contrastive,
cosine embedding, margin ranking and hinge embedding.

Each loss is a value function (unreduced) and its hand-derived vjp side by
side. Embeddings lie on the last axis: inputs of shape ``(..., D)`` give one
loss per vector pair or triplet, of shape ``(...)`` (an unbatched ``(D,)``
input gives a scalar). ``margin_ranking`` and ``hinge_embedding`` are
elementwise. Hinges follow PyTorch's ``clamp_min``: at the kink the gradient
of the active piece passes. The engine adds reduction, weights and masks.
"""

from __future__ import annotations

import math
import threading

import numpy as np

from ... import _numerics, _validation
from ...registry import LossSpec, Option, Reference, register
from .._common import away_from, number

FAMILY = "embedding"

PAIRWISE_EPS = 1e-6  # torch.nn.functional.pairwise_distance's default eps
COSINE_EPS = 1e-8  # torch.nn.functional.cosine_similarity's default eps
# PyTorch cosine_embedding_loss's EPSILON, added to each squared norm: the float32 1e-12f, not the double 1e-12
EMBEDDING_EPS = 9.999999960041972e-13


def _flag(name, value):
    _validation.check_bool(name, value)
    return value


def _expand(xp, v):
    return xp.expand_dims(v, axis=-1)


def _hinge_open(xp, z, ct):
    """The cotangent where z >= 0, else 0: PyTorch's clamp_min(z, 0) passes the gradient at z = 0."""
    return xp.where(z >= 0, ct, 0.0)


# --------------------------------------------------------------------------- distances over the last axis
# Each returns (d, pullback) with pullback(ct) -> (grad_u, grad_v).


def _pairwise(xp, u, v, p, eps):
    """PyTorch's pairwise_distance: ||u - v + eps||_p (eps added to every component of the difference)."""
    diff = u - v + eps
    d = _numerics.lp_norm(xp, diff, p, axis=-1)

    def pullback(ct):
        g = _expand(xp, ct) * _numerics.lp_norm_grad(xp, diff, _expand(xp, d), p)
        return g, -g

    return d, pullback


def _cosine_distance(xp, u, v):
    """1 - cos(u, v), each norm floored at 1e-8 (torch.nn.functional.cosine_similarity)."""
    norm_u = _expand(xp, _numerics.l2_norm(xp, u, (u.ndim - 1,)))
    norm_v = _expand(xp, _numerics.l2_norm(xp, v, (v.ndim - 1,)))
    floor = _numerics.norm_floor(xp, COSINE_EPS, u)
    inv_u = 1.0 / xp.maximum(norm_u, floor)
    inv_v = 1.0 / xp.maximum(norm_v, floor)
    unit_u, unit_v = u * inv_u, v * inv_v
    cos = xp.sum(unit_u * unit_v, axis=-1)

    def pullback(ct):
        # cos = u^ . v^, u^ = u / max(|u|, eps): d cos/du = (v^ - cos u^) / max(|u|, eps); below eps the floor
        # is a constant and the projection term drops out (a zero vector gets v^ / eps, as PyTorch)
        k, c = -_expand(xp, ct), _expand(xp, cos)
        return (k * inv_u * (unit_v - xp.where(norm_u > floor, c * unit_u, 0.0)),
                k * inv_v * (unit_u - xp.where(norm_v > floor, c * unit_v, 0.0)))

    return 1.0 - cos, pullback


def _euclidean_distance(xp, u, v):
    return _pairwise(xp, u, v, 2.0, PAIRWISE_EPS)


_BUILTIN_DISTANCES = {"euclidean": _euclidean_distance, "cosine": _cosine_distance}
_USER_DISTANCES: dict[str, tuple] = {}  # name -> (value, vjp)
_DISTANCES_LOCK = threading.Lock()


def register_distance(name, value, vjp, *, replace=False):
    """Register a distance for ``triplet_margin_with_distance(distance=name)``.

    ``value(xp, a, b)`` returns the distances between the vectors on the last
    axis of ``a`` and ``b`` (shape ``a.shape[:-1]``), written with the array
    namespace ``xp``; ``vjp(xp, cotangent, a, b)`` returns ``(grad_a, grad_b)``,
    the gradients of ``sum(cotangent * value(xp, a, b))``. The built-in names
    ("euclidean", "cosine") cannot be replaced; another registered name only
    with ``replace=True``. Returns ``name``.
    """
    _validation.check_distance_registration(name, value, vjp)
    with _DISTANCES_LOCK:
        if name in _BUILTIN_DISTANCES:
            raise _validation.distance_taken(name, builtin=True)
        if name in _USER_DISTANCES and not replace:
            raise _validation.distance_taken(name, builtin=False)
        _USER_DISTANCES[name] = (value, vjp)
    return name


def distances():
    """The names ``triplet_margin_with_distance`` accepts: the built-ins, then the registered ones."""
    return tuple(_BUILTIN_DISTANCES) + tuple(sorted(_USER_DISTANCES))


def _distance(name):
    """The (d, pullback) function of a distance name."""
    if name in _BUILTIN_DISTANCES:
        return _BUILTIN_DISTANCES[name]
    value, vjp = _USER_DISTANCES[name]

    def user(xp, u, v):
        return value(xp, u, v), lambda ct: tuple(vjp(xp, ct, u, v))

    return user


def _distance_option(name, value):
    _validation.check_choice(name, value, distances())
    return value


# --------------------------------------------------------------------------- triplet core


def _triplet_fused(xp, anchor, positive, negative, dist, margin, swap):
    """max(0, margin + d(a, p) - d(a, n)), with d(a, n) -> min(d(a, n), d(p, n)) for the swap."""
    d_pos, back_pos = dist(xp, anchor, positive)
    d_neg, back_neg = dist(xp, anchor, negative)
    if swap:
        d_swap, back_swap = dist(xp, positive, negative)
        # PyTorch's minimum: the smaller distance gets the gradient, a tie splits it in halves
        w_swap = xp.astype(d_swap < d_neg, d_neg.dtype) + 0.5 * xp.astype(d_swap == d_neg, d_neg.dtype)
        d_neg = xp.minimum(d_neg, d_swap)
    z = margin + d_pos - d_neg
    value = xp.maximum(z, 0.0)

    def pullback(ct):
        g = _hinge_open(xp, z, ct)
        grad_a, grad_p = back_pos(g)
        if not swap:
            a_n, n_a = back_neg(-g)
            return {"anchor": grad_a + a_n, "positive": grad_p, "negative": n_a}
        a_n, n_a = back_neg(-g * (1.0 - w_swap))
        p_n, n_p = back_swap(-g * w_swap)
        return {"anchor": grad_a + a_n, "positive": grad_p + p_n, "negative": n_a + n_p}

    return value, pullback


def _check_triplet(xp, inputs, options, concrete):
    _validation.check_ndim("anchor", inputs["anchor"], at_least=1)
    _validation.check_min_size("anchor", inputs["anchor"].shape[-1], 1, "a vector size (last axis)")


def _triplet_shape(shapes, options):
    return shapes["anchor"][:-1]


def _redraw_rows(rng, draw, bad):
    """Draw arrays with ``draw(rng)`` and redraw the rows (vectors on the last axis) where ``bad`` holds."""
    arrays = draw(rng)
    for _ in range(200):
        rows = bad(arrays)
        if not rows.any():
            return arrays
        fresh = draw(rng)
        arrays = {k: np.where(rows[..., None] if a.ndim > rows.ndim else rows, fresh[k], a)
                  for k, a in arrays.items()}
    raise RuntimeError("could not draw inputs away from the kinks")


def _triplet_sampler(np_distance, componentwise_kink=lambda options: False):
    """Triplets with the hinge, the swap's minimum and (where ``componentwise_kink``: |w|^p not smooth at 0)
    every difference component away from a kink."""
    def sample(rng, shape, options):
        shape = tuple(shape)
        eps = options.get("eps", 0.0)

        def draw(rng):
            a = rng.normal(size=shape)
            return {"anchor": a, "positive": a + rng.normal(0.0, 0.9, shape),
                    "negative": a + rng.normal(0.0, 1.1, shape)}

        def bad(x):
            a, p, n = x["anchor"], x["positive"], x["negative"]
            d_pos, d_neg = np_distance(a, p, options), np_distance(a, n, options)
            pairs = [(a, p), (a, n)]
            rows = np.zeros(shape[:-1], dtype=bool)
            if options["swap"]:
                d_swap = np_distance(p, n, options)
                rows |= np.abs(d_neg - d_swap) < 0.05
                d_neg = np.minimum(d_neg, d_swap)
                pairs.append((p, n))
            rows |= np.abs(options["margin"] + d_pos - d_neg) < 0.05
            if componentwise_kink(options):
                for u, v in pairs:
                    rows |= (np.abs(u - v + eps) < 0.05).any(axis=-1)
            return rows

        return _redraw_rows(rng, draw, bad)

    return sample


def _torch_reduce(loss, reduction, weight):
    """PyTorch's reduction of an unreduced torch loss, with the engine's weighted mean for a weight."""
    if weight is not None:
        loss = loss * weight
    if reduction == "none":
        return loss
    total = loss.sum()
    if reduction == "sum":
        return total
    return total / (loss.numel() if weight is None else weight.sum())


# --------------------------------------------------------------------------- triplet_margin


def triplet_margin_fused(xp, anchor, positive, negative, *, margin, p, eps, swap):
    def dist(xp, u, v):
        return _pairwise(xp, u, v, p, eps)

    return _triplet_fused(xp, anchor, positive, negative, dist, margin, swap)


def triplet_margin_value(xp, anchor, positive, negative, *, margin, p, eps, swap):
    """max(0, margin + ||a - p + eps||_p - ||a - n + eps||_p) per triplet (swap: the smaller of d(a, n), d(p, n))."""
    return triplet_margin_fused(xp, anchor, positive, negative, margin=margin, p=p, eps=eps, swap=swap)[0]


def triplet_margin_vjp(xp, cotangent, anchor, positive, negative, *, margin, p, eps, swap):
    return triplet_margin_fused(xp, anchor, positive, negative, margin=margin, p=p, eps=eps, swap=swap)[1](cotangent)


def _np_pairwise(u, v, options):
    w = np.abs(u - v + options["eps"])
    return np.sum(w ** options["p"], axis=-1) ** (1.0 / options["p"])


def _torch_triplet(torch, inputs, options, reduction, weight=None):
    loss = torch.nn.functional.triplet_margin_loss(inputs["anchor"], inputs["positive"], inputs["negative"],
                                                   reduction="none", **options)
    return _torch_reduce(loss, reduction, weight)


register(LossSpec(
    name="triplet_margin", family=FAMILY,
    summary="Triplet margin loss on p-norm distances, with the optional distance swap (PyTorch's).",
    inputs=("anchor", "positive", "negative"), differentiable=("anchor", "positive", "negative"),
    predictions=("anchor", "positive", "negative"),
    value=triplet_margin_value, vjp=triplet_margin_vjp, fused=triplet_margin_fused,
    validate=_check_triplet, output_shape=_triplet_shape,
    options=(Option("margin", 1.0, "Margin between the positive and negative distances (> 0).",
                    number(low=0, low_open=True)),
             Option("p", 2.0, "Order of the p-norm distance, a real >= 1.", number(low=1)),
             Option("eps", 1e-6, "Added to every component of the difference before the norm (>= 0).",
                    number(low=0)),
             Option("swap", False, "Use the distance swap: the negative distance is min(d(a, n), d(p, n)).", _flag)),
    formula=(r"\ell = \max(0,\ m + d(a, p) - d(a, n)),\ d(u, v) = \|u - v + \epsilon\|_p;\ "
             r"\text{swap: } d(a, n) \to \min(d(a, n), d(p, n))"),
    gradient=(r"\partial d(u, v)/\partial u = \operatorname{sign}(w)\,(|w|/\|w\|_p)^{p-1} = -\partial d/\partial v,\ "
              r"w = u - v + \epsilon;\ \ell' = 1\ \text{where}\ m + d(a,p) - d(a,n) \ge 0"),
    sample=_triplet_sampler(_np_pairwise, lambda o: o["p"] % 2 != 0),  # |w|^p is smooth at 0 for even p only
    aliases=("triplet_margin_loss", "triplet_loss"),
    functional=("triplet_margin_loss", "triplet_loss"),
    references={"torch": Reference("torch.nn.functional.triplet_margin_loss", _torch_triplet)},
    option_cases=({}, {"swap": True}, {"p": 1.0}, {"margin": 0.5, "p": 3.0, "swap": True}),
    literature=("Schroff et al., FaceNet (2015); Balntas et al., Learning shallow convolutional feature "
                "descriptors with triplet losses (2016); torch.nn.functional.triplet_margin_loss",),
    notes=("Vectors lie on the last axis: `anchor`, `positive` and `negative` of one shape (..., D) give a loss of "
           "shape (...), an unbatched (D,) triplet a scalar. As PyTorch's pairwise_distance, `eps` is added to "
           "each component of the difference, d(u, v) = ||u - v + eps||_p, so identical vectors are eps * D^(1/p) "
           "apart and have a finite gradient; a zero difference (eps = 0) gets the zero subgradient. With "
           "`swap`, the negative distance is the smaller of d(a, n) and d(p, n) and the gradient flows through "
           "the chosen one (a tie splits it in halves, as torch.minimum). At the hinge's kink the gradient "
           "passes (PyTorch's clamp_min). PyTorch accepts any p; here p >= 1, where d is a norm. "
           "`triplet_loss` is the Mithril guide's name: its gradient function returns a dict with "
           "'anchor', 'positive' and 'negative'. optax's triplet_margin_loss puts eps inside the root instead, "
           "so it is no alias."),
))


# --------------------------------------------------------------------------- triplet_margin_with_distance


def triplet_margin_with_distance_fused(xp, anchor, positive, negative, *, distance, margin, swap):
    return _triplet_fused(xp, anchor, positive, negative, _distance(distance), margin, swap)


def triplet_margin_with_distance_value(xp, anchor, positive, negative, *, distance, margin, swap):
    """max(0, margin + d(a, p) - d(a, n)) for a named distance d (swap: the smaller of d(a, n), d(p, n))."""
    return triplet_margin_with_distance_fused(xp, anchor, positive, negative, distance=distance, margin=margin,
                                              swap=swap)[0]


def triplet_margin_with_distance_vjp(xp, cotangent, anchor, positive, negative, *, distance, margin, swap):
    return triplet_margin_with_distance_fused(xp, anchor, positive, negative, distance=distance, margin=margin,
                                              swap=swap)[1](cotangent)


def _np_named_distance(u, v, options):
    if options["distance"] == "cosine":
        nu = np.maximum(np.linalg.norm(u, axis=-1), COSINE_EPS)
        nv = np.maximum(np.linalg.norm(v, axis=-1), COSINE_EPS)
        return 1.0 - np.sum(u * v, axis=-1) / (nu * nv)
    return np.linalg.norm(u - v + PAIRWISE_EPS, axis=-1)


def _torch_with_distance(torch, inputs, options, reduction, weight=None):
    F = torch.nn.functional
    functions = {"euclidean": F.pairwise_distance, "cosine": lambda x, y: 1.0 - F.cosine_similarity(x, y, dim=-1)}
    if options["distance"] not in functions:
        raise NotImplementedError(f"PyTorch has no reference for the registered distance {options['distance']!r}")
    loss = F.triplet_margin_with_distance_loss(inputs["anchor"], inputs["positive"], inputs["negative"],
                                               distance_function=functions[options["distance"]],
                                               margin=options["margin"], swap=options["swap"], reduction="none")
    return _torch_reduce(loss, reduction, weight)


register(LossSpec(
    name="triplet_margin_with_distance", family=FAMILY,
    summary="Triplet margin loss with a distance chosen by name: euclidean, cosine or a registered one (PyTorch's).",
    inputs=("anchor", "positive", "negative"), differentiable=("anchor", "positive", "negative"),
    predictions=("anchor", "positive", "negative"),
    value=triplet_margin_with_distance_value, vjp=triplet_margin_with_distance_vjp,
    fused=triplet_margin_with_distance_fused,
    validate=_check_triplet, output_shape=_triplet_shape,
    options=(Option("distance", "euclidean", "Distance by name: 'euclidean' (PyTorch's pairwise_distance), "
                                             "'cosine' (1 - cosine similarity) or one added by register_distance.",
                    _distance_option),
             Option("margin", 1.0, "Margin between the positive and negative distances (> 0).",
                    number(low=0, low_open=True)),
             Option("swap", False, "Use the distance swap: the negative distance is min(d(a, n), d(p, n)).", _flag)),
    formula=(r"\ell = \max(0,\ m + d(a, p) - d(a, n));\ d(u, v) = \|u - v + 10^{-6}\|_2\ \text{(euclidean)},\ "
             r"1 - \frac{u^\top v}{\max(\|u\|, 10^{-8})\max(\|v\|, 10^{-8})}\ \text{(cosine)}"),
    gradient=(r"\text{euclidean: } \partial d/\partial u = w/\|w\|,\ w = u - v + \epsilon;\ "
              r"\text{cosine: } \partial d/\partial u = -(\hat v - \cos\,\hat u)/\max(\|u\|, 10^{-8});\ "
              r"\ell' = 1\ \text{where}\ m + d(a,p) - d(a,n) \ge 0"),
    sample=_triplet_sampler(_np_named_distance),
    aliases=("triplet_margin_with_distance_loss",),
    functional=("triplet_margin_with_distance_loss",),
    references={"torch": Reference("torch.nn.functional.triplet_margin_with_distance_loss", _torch_with_distance)},
    option_cases=({}, {"swap": True}, {"distance": "cosine"}, {"distance": "cosine", "swap": True, "margin": 0.5}),
    literature=("Balntas et al., Learning shallow convolutional feature descriptors with triplet losses (2016); "
                "torch.nn.functional.triplet_margin_with_distance_loss",),
    notes=("PyTorch's `distance_function` callable is the `distance` option here, a name, so the loss stays "
           "serialisable: 'euclidean' is PyTorch's default F.pairwise_distance (p = 2, eps = 1e-6 added to the "
           "difference) and 'cosine' is 1 - F.cosine_similarity (each norm floored at 1e-8; a zero vector gets "
           "PyTorch's gradient v^/1e-8). Your own distance, with its gradient: "
           "`register_distance(name, value, vjp)`, where value(xp, a, b) returns the distances between the "
           "vectors on the last axis (shape a.shape[:-1]) using the array namespace xp and vjp(xp, cotangent, "
           "a, b) returns (grad_a, grad_b); then pass distance=name (a saved config that names it needs it "
           "registered again before from_config). Vectors lie on the last axis, the loss has "
           "shape (...) for inputs (..., D). Swap and kink as `triplet_margin`."),
))


# --------------------------------------------------------------------------- contrastive


def contrastive_fused(xp, embedding1, embedding2, label, *, margin):
    diff = embedding1 - embedding2
    d = _numerics.l2_norm(xp, diff, (diff.ndim - 1,))
    y = xp.astype(label, diff.dtype)
    hinge = xp.maximum(margin - d, 0.0)
    value = xp.where(y == 1.0, d * d, hinge * hinge)  # y is 0 or 1: no 0 * inf where d^2 overflows (d of 1e30)

    def pullback(ct):
        # d(d^2)/de1 = 2 diff; d(max(0, m - d)^2)/de1 = -2 max(0, m - d) diff / d, taken as 0 at d = 0
        k = 2.0 * ct * (y - (1.0 - y) * _numerics.safe_divide(xp, hinge, d))
        g = _expand(xp, k) * diff
        return {"embedding1": g, "embedding2": -g}

    return value, pullback


def contrastive_value(xp, embedding1, embedding2, label, *, margin):
    """y d^2 + (1 - y) max(0, margin - d)^2, d = ||e1 - e2||_2, y = 1 for a similar pair."""
    return contrastive_fused(xp, embedding1, embedding2, label, margin=margin)[0]


def contrastive_vjp(xp, cotangent, embedding1, embedding2, label, *, margin):
    return contrastive_fused(xp, embedding1, embedding2, label, margin=margin)[1](cotangent)


def _check_contrastive(xp, inputs, options, concrete):
    e1, label = inputs["embedding1"], inputs["label"]
    _validation.check_ndim("embedding1", e1, at_least=1)
    _validation.check_real_or_integral("label", label, xp)
    _validation.check_shape("label", label, tuple(e1.shape[:-1]), "one label per pair: the embeddings' shape "
                                                                   "without the last axis")
    if concrete:
        _validation.check_binary_labels("label", label, xp)


def _sample_contrastive(rng, shape, options):
    shape, m = tuple(shape), options["margin"]
    e1 = rng.normal(size=shape)
    direction = rng.normal(size=shape)
    direction /= np.linalg.norm(direction, axis=-1, keepdims=True)
    d = away_from(rng, rng.uniform(0.2, 2.5 * m, shape[:-1]), (m,), 0.05 * m, 0.2, 2.5 * m)
    return {"embedding1": e1, "embedding2": e1 - d[..., None] * direction,
            "label": rng.integers(0, 2, shape[:-1])}


register(LossSpec(
    name="contrastive", family=FAMILY,
    summary="Contrastive loss on pairs of embeddings (Hadsell et al.): similar pairs pulled together, "
            "dissimilar pushed beyond the margin.",
    inputs=("embedding1", "embedding2", "label"), differentiable=("embedding1", "embedding2"),
    predictions=("embedding1", "embedding2"), label_inputs=("label",), same_shape=("embedding1", "embedding2"),
    value=contrastive_value, vjp=contrastive_vjp, fused=contrastive_fused,
    validate=_check_contrastive, output_shape=lambda shapes, options: shapes["embedding1"][:-1],
    domains={"label": "{0, 1}"},
    options=(Option("margin", 1.0, "Distance a dissimilar pair must exceed (> 0).", number(low=0, low_open=True)),),
    formula=r"\ell = y\,d^2 + (1 - y)\max(0, m - d)^2,\ d = \|e_1 - e_2\|_2,\ y = 1\ \text{for a similar pair}",
    gradient=(r"\partial\ell/\partial e_1 = 2\left(y - (1 - y)\frac{\max(0, m - d)}{d}\right)(e_1 - e_2) "
              r"= -\partial\ell/\partial e_2\ (0/0 \to 0\ \text{at}\ d = 0)"),
    sample=_sample_contrastive,
    aliases=("contrastive_loss",),
    functional=("contrastive_loss",),
    literature=("Hadsell, Chopra & LeCun, Dimensionality Reduction by Learning an Invariant Mapping (CVPR 2006); "
                "Mithril loss guide contrastive_loss",),
    notes=("`embedding1` and `embedding2` are (..., D), `label` (...) holds 1 for a similar pair and 0 for a "
           "dissimilar one (integer, boolean or floating 0/1). There is no factor 1/2 (TensorFlow Addons' and "
           "Keras's contrastive loss; Hadsell et al. write 1/2 D^2 and 1/2 max(0, m - D)^2 with the label the "
           "other way round, which is this loss halved). The distance is the exact Euclidean norm (scaled, no "
           "overflow); identical embeddings (d = 0) give a finite value (margin^2 for a dissimilar pair) and, "
           "for the dissimilar term whose direction is undefined there, the zero subgradient. The Mithril "
           "guide's contrastive_loss_gradient returns a dict with 'embedding1' and 'embedding2'."),
))


# --------------------------------------------------------------------------- cosine_embedding


def _root_norm(xp, x):
    """sqrt(|x|^2 + 1e-12), the root of PyTorch's squared norm plus EPSILON, without overflow or underflow."""
    n = _numerics.l2_norm(xp, x, (x.ndim - 1,))
    floor = _numerics.norm_floor(xp, math.sqrt(EMBEDDING_EPS), x)  # float16: its smallest normal, not 0
    m = xp.maximum(n, floor)  # a hypot: both terms scaled by the larger one
    r, f = n / m, floor / m
    return m * xp.sqrt(r * r + f * f)


def _cosine_embedding_parts(xp, input1, input2, target, margin):
    # PyTorch: cos = x1.x2 / sqrt((|x1|^2 + 1e-12)(|x2|^2 + 1e-12)), here as u1.u2 with u = x / sqrt(|x|^2 + 1e-12)
    # (|u| < 1), so neither huge nor tiny vectors overflow or underflow where cos is finite
    r1, r2 = _expand(xp, _root_norm(xp, input1)), _expand(xp, _root_norm(xp, input2))
    u1, u2 = input1 / r1, input2 / r2
    cos = xp.sum(u1 * u2, axis=-1)
    y = xp.astype(target, input1.dtype)
    pos, neg = y == 1.0, y == -1.0
    value = xp.where(pos, 1.0 - cos, xp.where(neg, xp.maximum(cos - margin, 0.0), 0.0))
    return value, (r1, r2, u1, u2, cos, pos, neg)


def cosine_embedding_fused(xp, input1, input2, target, *, margin):
    value, (r1, r2, u1, u2, cos, pos, neg) = _cosine_embedding_parts(xp, input1, input2, target, margin)

    def pullback(ct):
        # d cos/dx1 = x2 / (r1 r2) - cos x1 / r1^2 = (u2 - cos u1) / r1 (and symmetrically), r = sqrt(|x|^2 + 1e-12);
        # the loss is 1 - cos (y = 1) or the hinge max(0, cos - margin) (y = -1)
        k = xp.where(pos, -ct, xp.where(neg, _hinge_open(xp, cos - margin, ct), 0.0))
        k, c = _expand(xp, k), _expand(xp, cos)
        return {"input1": k * (u2 - c * u1) / r1, "input2": k * (u1 - c * u2) / r2}

    return value, pullback


def cosine_embedding_value(xp, input1, input2, target, *, margin):
    """1 - cos (y = 1), max(0, cos - margin) (y = -1); cos with 1e-12 added to each squared norm (PyTorch)."""
    return _cosine_embedding_parts(xp, input1, input2, target, margin)[0]


def cosine_embedding_vjp(xp, cotangent, input1, input2, target, *, margin):
    return cosine_embedding_fused(xp, input1, input2, target, margin=margin)[1](cotangent)


def _check_cosine_embedding(xp, inputs, options, concrete):
    x1, t = inputs["input1"], inputs["target"]
    _validation.check_ndim("input1", x1, at_least=1)
    _validation.check_shape("target", t, tuple(x1.shape[:-1]), "one target per pair: the inputs' shape without "
                                                               "the last axis")
    _validation.check_sign_targets("target", t, xp, concrete)


def _sample_cosine_embedding(rng, shape, options):
    shape, m = tuple(shape), options["margin"]

    def draw(rng):
        x1 = rng.normal(size=shape)
        return {"input1": x1, "input2": rng.uniform(-1.5, 1.5, shape[:-1] + (1,)) * x1 + rng.normal(size=shape),
                "target": rng.choice(np.array([-1, 1]), shape[:-1])}

    def bad(x):
        x1, x2 = x["input1"], x["input2"]
        cos = np.sum(x1 * x2, axis=-1) / np.sqrt(np.sum(x1 * x1, axis=-1) * np.sum(x2 * x2, axis=-1))
        return (x["target"] == -1) & (np.abs(cos - m) < 0.05)

    return _redraw_rows(rng, draw, bad)


def _torch_cosine_embedding(torch, inputs, options, reduction, weight=None):
    x1, x2, t = inputs["input1"], inputs["input2"], inputs["target"]
    lead = tuple(t.shape)
    if x1.ndim > 2:  # PyTorch takes (N, D) or (D,): the leading axes flattened
        x1, x2, t = x1.reshape(-1, x1.shape[-1]), x2.reshape(-1, x2.shape[-1]), t.reshape(-1)
    loss = torch.nn.functional.cosine_embedding_loss(x1, x2, t, margin=options["margin"], reduction="none")
    return _torch_reduce(loss.reshape(lead), reduction, weight)


register(LossSpec(
    name="cosine_embedding", family=FAMILY,
    summary="Cosine embedding loss on pairs with +-1 targets (PyTorch's).",
    inputs=("input1", "input2", "target"), differentiable=("input1", "input2"),
    predictions=("input1", "input2"), label_inputs=("target",), same_shape=("input1", "input2"),
    value=cosine_embedding_value, vjp=cosine_embedding_vjp, fused=cosine_embedding_fused,
    validate=_check_cosine_embedding, output_shape=lambda shapes, options: shapes["input1"][:-1],
    domains={"target": "{-1, 1}"},
    options=(Option("margin", 0.0, "Cosine a dissimilar pair must stay below, in [-1, 1].",
                    number(low=-1, high=1)),),
    formula=(r"\ell = 1 - \cos\ (y = 1),\ \max(0, \cos - m)\ (y = -1),\ "
             r"\cos = \frac{x_1^\top x_2}{\sqrt{(\|x_1\|^2 + \epsilon)(\|x_2\|^2 + \epsilon)}},\ \epsilon = 10^{-12}"),
    gradient=(r"\partial\cos/\partial x_1 = \frac{x_2}{r_1 r_2} - \cos\frac{x_1}{r_1^2},\ "
              r"r_i = \sqrt{\|x_i\|^2 + \epsilon};\ "
              r"\partial\ell/\partial\cos = -1\ (y = 1),\ 1\ (y = -1,\ \cos \ge m)"),
    sample=_sample_cosine_embedding,
    aliases=("cosine_embedding_loss",),
    functional=("cosine_embedding_loss",),
    references={"torch": Reference("torch.nn.functional.cosine_embedding_loss", _torch_cosine_embedding)},
    option_cases=({}, {"margin": 0.5}, {"margin": -0.3}),
    literature=("torch.nn.functional.cosine_embedding_loss",),
    notes=("`input1` and `input2` are (..., D) (PyTorch: (N, D) or (D,)), `target` (...) holds 1 (similar) or "
           "-1 (dissimilar), integer or floating. As PyTorch, its EPSILON 1e-12 (a float32 constant, "
           "9.99999996e-13) is added to each squared norm, so zero "
           "vectors give finite values (cos = 0) and finite gradients (x2 / (1e-6 |x2|) for a zero x1). The "
           "cosine is computed as u1.u2 with u = x / sqrt(|x|^2 + 1e-12), so vectors whose squared norms "
           "overflow or underflow (float32 entries of 1e20 or 1e-25), where PyTorch gives NaN or loses the "
           "value, keep their exact finite value. In float16, where 1e-12 underflows, the root is floored at "
           "float16's smallest normal number (6.1e-5) instead, so zero vectors stay finite there too (PyTorch: "
           "NaN). At the kink cos = margin the gradient passes (PyTorch's clamp_min)."),
))


# --------------------------------------------------------------------------- margin_ranking


def margin_ranking_value(xp, input1, input2, target, *, margin):
    """max(0, -y (x1 - x2) + margin)."""
    y = xp.astype(target, input1.dtype)
    return xp.maximum(margin - y * (input1 - input2), 0.0)


def margin_ranking_vjp(xp, cotangent, input1, input2, target, *, margin):
    y = xp.astype(target, input1.dtype)
    g = -y * _hinge_open(xp, margin - y * (input1 - input2), cotangent)
    return {"input1": g, "input2": -g}


def _check_signs(xp, inputs, options, concrete):
    _validation.check_sign_targets("target", inputs["target"], xp, concrete)


def _sample_margin_ranking(rng, shape, options):
    m = options["margin"]
    y = rng.choice(np.array([-1.0, 1.0]), shape)
    x2 = rng.uniform(-2.0, 2.0, shape)
    s = away_from(rng, rng.uniform(m - 3.0, m + 3.0, shape), (m,), 0.05, m - 3.0, m + 3.0)  # s = y (x1 - x2)
    return {"input1": x2 + y * s, "input2": x2, "target": y}


def _torch_margin_ranking(torch, inputs, options, reduction, weight=None):
    loss = torch.nn.functional.margin_ranking_loss(inputs["input1"], inputs["input2"], inputs["target"],
                                                   margin=options["margin"], reduction="none")
    return _torch_reduce(loss, reduction, weight)


register(LossSpec(
    name="margin_ranking", family=FAMILY,
    summary="Margin ranking loss: x1 should rank above x2 by the margin where y = 1, below where y = -1 (PyTorch's).",
    inputs=("input1", "input2", "target"), differentiable=("input1", "input2"),
    predictions=("input1", "input2"), label_inputs=("target",),
    value=margin_ranking_value, vjp=margin_ranking_vjp, validate=_check_signs, domains={"target": "{-1, 1}"},
    options=(Option("margin", 0.0, "Margin by which the preferred input must lead (a real number).", number()),),
    formula=r"\ell = \max(0,\ -y\,(x_1 - x_2) + m)",
    gradient=r"\partial\ell/\partial x_1 = -y = -\partial\ell/\partial x_2\ \text{where}\ -y(x_1 - x_2) + m \ge 0",
    sample=_sample_margin_ranking,
    aliases=("margin_ranking_loss",),
    functional=("margin_ranking_loss",),
    references={"torch": Reference("torch.nn.functional.margin_ranking_loss", _torch_margin_ranking)},
    option_cases=({}, {"margin": 0.5}),
    literature=("torch.nn.functional.margin_ranking_loss; mlx.nn.losses.margin_ranking_loss",),
    notes=("Elementwise; `input1`, `input2` and `target` have one shape (PyTorch broadcasts, here shapes must "
           "match). `target` holds 1 or -1, integer or floating. At the kink the gradient passes (PyTorch's "
           "clamp_min)."),
))


# --------------------------------------------------------------------------- hinge_embedding


def hinge_embedding_value(xp, input, target, *, margin):
    """x (y = 1), max(0, margin - x) (y = -1)."""
    y = xp.astype(target, input.dtype)
    return xp.where(y == 1.0, input, xp.maximum(margin - input, 0.0))


def hinge_embedding_vjp(xp, cotangent, input, target, *, margin):
    y = xp.astype(target, input.dtype)
    return {"input": xp.where(y == 1.0, cotangent, -_hinge_open(xp, margin - input, cotangent))}


def _sample_hinge_embedding(rng, shape, options):
    m = options["margin"]
    x = away_from(rng, rng.uniform(m - 2.0, m + 2.0, shape), (m,), 0.05, m - 2.0, m + 2.0)
    return {"input": x, "target": rng.choice(np.array([-1, 1]), shape)}


def _torch_hinge_embedding(torch, inputs, options, reduction, weight=None):
    loss = torch.nn.functional.hinge_embedding_loss(inputs["input"], inputs["target"], margin=options["margin"],
                                                    reduction="none")
    return _torch_reduce(loss, reduction, weight)


register(LossSpec(
    name="hinge_embedding", family=FAMILY,
    summary="Hinge embedding loss: x for y = 1, max(0, margin - x) for y = -1 (PyTorch's).",
    inputs=("input", "target"), differentiable=("input",), label_inputs=("target",),
    value=hinge_embedding_value, vjp=hinge_embedding_vjp, validate=_check_signs, domains={"target": "{-1, 1}"},
    options=(Option("margin", 1.0, "Value a dissimilar pair's input (a distance) must exceed (a real number).",
                    number()),),
    formula=r"\ell = x\ (y = 1),\quad \max(0, m - x)\ (y = -1)",
    gradient=r"\partial\ell/\partial x = 1\ (y = 1),\quad -1\ (y = -1,\ x \le m),\ 0\ \text{otherwise}",
    sample=_sample_hinge_embedding,
    aliases=("hinge_embedding_loss",),
    functional=("hinge_embedding_loss",),
    references={"torch": Reference("torch.nn.functional.hinge_embedding_loss", _torch_hinge_embedding)},
    option_cases=({}, {"margin": 0.5}, {"margin": 2.0}),
    literature=("torch.nn.functional.hinge_embedding_loss",),
    notes=("Elementwise; `input` is typically a distance between two embeddings and `target` (same shape as the "
           "input: PyTorch broadcasts, here shapes must match) holds 1 (similar) or -1 (dissimilar), integer or "
           "floating. At the kink x = margin the gradient passes (PyTorch's clamp_min)."),
))
