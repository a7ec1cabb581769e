"""Listwise ranking losses and embedding regularisers: ListNet, ListMLE, optax's ranking softmax,
feature alignment, KoLeo and a clustering loss.

Each loss is a value function (unreduced) and its hand-derived vjp side by
side, fused where they share intermediates. Ranking losses take ``scores`` of
shape ``(..., n)``, one list of n items per leading index, and give one value
per list (the shape without the last axis); ``s`` are the scores, ``y`` the
relevance labels. Embedding losses take vectors on the last axis: ``(..., d)``
per pair (feature_alignment) or sets ``(..., n, d)`` (koleo, clustering).
Vectors are normalised with ``_numerics.unit_vectors`` (norm floored at eps,
so zero vectors stay finite). The engine adds reduction, weights and masks.
"""

from __future__ import annotations

import math

import numpy as np

from ... import _numerics, _validation
from ...registry import LossSpec, Option, Reference, register
from .._common import number

FAMILY = "embedding"


def _expand(xp, v, axis=-1):
    return xp.expand_dims(v, axis=axis)


def _like(xp, y, scores):
    """Labels (float, integer or bool) in the scores' dtype."""
    return y if y.dtype == scores.dtype else xp.astype(y, scores.dtype)


def _list_shape(shapes, options):
    return shapes["scores"][:-1]


def _check_lists(xp, inputs, options, concrete, labels):
    s, y = inputs["scores"], inputs[labels]
    _validation.check_ndim("scores", s, at_least=1)
    _validation.check_min_size("scores", s.shape[-1], 1, "a list length (last axis)")
    _validation.check_real_or_integral(labels, y, xp)
    _validation.check_same_shape("scores", s, labels, y)


# --------------------------------------------------------------------------- listnet


def listnet_fused(xp, scores, relevance, *, temperature):
    # t = softmax(y), p = softmax(s / T): l = -sum t log p;  dl/ds = (p - t) / T  (sum t = 1)
    target = xp.exp(_numerics.log_softmax(xp, _like(xp, relevance, scores), -1))
    log_p = _numerics.log_softmax(xp, scores / temperature, -1)
    value = -xp.sum(_numerics.xlog(xp, target, log_p), axis=-1)  # t = 0 at a -inf score adds 0

    def pullback(ct):
        return {"scores": _expand(xp, ct / temperature) * (xp.exp(log_p) - target)}

    return value, pullback


def listnet_value(xp, scores, relevance, *, temperature):
    """-sum_i softmax(y)_i log softmax(s / T)_i over each list (top-one ListNet)."""
    return listnet_fused(xp, scores, relevance, temperature=temperature)[0]


def listnet_vjp(xp, cotangent, scores, relevance, *, temperature):
    return listnet_fused(xp, scores, relevance, temperature=temperature)[1](cotangent)


def _sample_listnet(rng, shape, options):
    return {"scores": rng.normal(0.0, 2.0, shape), "relevance": rng.uniform(0.0, 3.0, shape)}


register(LossSpec(
    name="listnet", family=FAMILY,
    summary="ListNet: cross entropy between the top-one probabilities of the relevance and of the scores.",
    inputs=("scores", "relevance"), differentiable=("scores",), label_inputs=("relevance",), same_shape=(),
    value=listnet_value, vjp=listnet_vjp, fused=listnet_fused,
    validate=lambda xp, inputs, options, concrete: _check_lists(xp, inputs, options, concrete, "relevance"),
    output_shape=_list_shape,
    options=(Option("temperature", 1.0, "Divides the scores before their softmax (> 0).",
                    number(low=0, low_open=True)),),
    formula=(r"\ell = -\sum_i t_i \log p_i,\quad t = \operatorname{softmax}(y),\ "
             r"p = \operatorname{softmax}(s / T)\ \text{over the list}"),
    gradient=r"\partial\ell/\partial s = (p - t) / T",
    sample=_sample_listnet,
    aliases=("listnet_loss",),
    option_cases=({}, {"temperature": 0.5}),
    literature=("Cao et al., Learning to Rank: From Pairwise Approach to Listwise Approach, ICML 2007",),
    notes=("`scores` and `relevance` have shape (..., n): one list of n items per leading index; the loss has "
           "one value per list. The target is the top-one probability of the relevance, softmax(relevance) (not "
           "divided by the temperature; `relevance` may be float or integer grades); the prediction is "
           "softmax(scores / temperature). A -inf relevance gives an item target 0 (an item to ignore: pair it "
           "with a -inf score and it contributes 0 to value and gradient); each list needs one finite relevance."),
))


# --------------------------------------------------------------------------- listmle


def listmle_fused(xp, scores, relevance):
    # t = s in the order of decreasing relevance, c_i = log sum_{j>=i} exp(t_j): l = sum_i (c_i - t_i);
    # dl/dt_k = sum_{i<=k} exp(t_k - c_i) - 1 = exp(t_k + log sum_{i<=k} exp(-c_i)) - 1, every term <= 1
    order = xp.argsort(-_like(xp, relevance, scores), axis=-1, stable=True)  # ties: the earlier item first
    t = xp.take_along_axis(scores, order, axis=-1)
    c = _numerics.cumulative_logsumexp(xp, t, reverse=True)
    value = xp.sum(c - t, axis=-1)

    def pullback(ct):
        g = _expand(xp, ct) * (xp.exp(t + _numerics.cumulative_logsumexp(xp, -c)) - 1.0)
        return {"scores": xp.take_along_axis(g, xp.argsort(order, axis=-1), axis=-1)}  # back to the items

    return value, pullback


def listmle_value(xp, scores, relevance):
    """-log P(pi | s) of the permutation pi that sorts the relevance descending (Plackett-Luce)."""
    return listmle_fused(xp, scores, relevance)[0]


def listmle_vjp(xp, cotangent, scores, relevance):
    return listmle_fused(xp, scores, relevance)[1](cotangent)


def _sample_listmle(rng, shape, options):
    return {"scores": rng.normal(0.0, 2.0, shape), "relevance": rng.uniform(0.0, 3.0, shape)}  # no ties


register(LossSpec(
    name="listmle", family=FAMILY, summary="ListMLE: negative Plackett-Luce log-likelihood of the relevance order.",
    inputs=("scores", "relevance"), differentiable=("scores",), label_inputs=("relevance",), same_shape=(),
    value=listmle_value, vjp=listmle_vjp, fused=listmle_fused,
    validate=lambda xp, inputs, options, concrete: _check_lists(xp, inputs, options, concrete, "relevance"),
    output_shape=_list_shape,
    formula=(r"\ell = \sum_{i=1}^{n}\left(\log\sum_{j\ge i} e^{s_{\pi(j)}} - s_{\pi(i)}\right),\ "
             r"\pi\ \text{sorts}\ y\ \text{descending}"),
    gradient=(r"\partial\ell/\partial s_{\pi(k)} = \sum_{i\le k} e^{s_{\pi(k)} - c_i} - 1,\ "
              r"c_i = \log\sum_{j\ge i} e^{s_{\pi(j)}}"),
    sample=_sample_listmle,
    aliases=("listmle_loss",),
    literature=("Xia et al., Listwise Approach to Learning to Rank: Theory and Algorithm, ICML 2008",),
    notes=("`scores` and `relevance` have shape (..., n); the loss has one value per list. Only the order of "
           "`relevance` matters (float or integer grades). Ties are broken by position: of two items with equal "
           "relevance, the one earlier in the list is ranked first (a stable sort). The suffix log-sum-exps c_i "
           "are a cumulative logsumexp (logaddexp scans, no global max shift), exact for any spread of scores, "
           "and the gradient is formed in log space, so scores of +-1e4 and beyond stay finite."),
))


# --------------------------------------------------------------------------- ranking_softmax


def ranking_softmax_fused(xp, scores, labels, mask=None, weights=None):
    # l = -sum_i y_i log softmax(s)_i over the valid items;  dl/ds = p sum(y) - y, 0 at masked items
    y = _like(xp, labels, scores)
    if weights is not None:
        y = y * weights
    if mask is not None:
        y = xp.where(mask, y, 0.0)
        # masked items leave the softmax (-inf); a list with no valid item gets finite 0 scores (y = 0 there)
        scores = xp.where(xp.any(mask, axis=-1, keepdims=True), xp.where(mask, scores, -math.inf), 0.0)
    log_p = _numerics.log_softmax(xp, scores, -1)
    value = -xp.sum(_numerics.xlog(xp, y, log_p), axis=-1)
    p = xp.exp(log_p) if mask is None else xp.where(mask, xp.exp(log_p), 0.0)

    def pullback(ct):
        return {"scores": _expand(xp, ct) * (p * xp.sum(y, axis=-1, keepdims=True) - y)}

    return value, pullback


def ranking_softmax_value(xp, scores, labels, mask=None, weights=None):
    """-sum_i y_i log softmax(s)_i over the valid items of each list (y times the item weights)."""
    return ranking_softmax_fused(xp, scores, labels, mask, weights)[0]


def ranking_softmax_vjp(xp, cotangent, scores, labels, mask=None, weights=None):
    return ranking_softmax_fused(xp, scores, labels, mask, weights)[1](cotangent)


def _ranking_softmax_mean_weights(xp, scores, labels, mask=None, weights=None):
    # optax's mean counts only the lists with at least one valid item
    return None if mask is None else xp.astype(xp.any(mask, axis=-1), scores.dtype)


def _check_ranking_softmax(xp, inputs, options, concrete):
    _check_lists(xp, inputs, options, concrete, "labels")
    shape = tuple(inputs["scores"].shape)
    if inputs.get("mask") is not None:
        _validation.check_bool_array("mask", inputs["mask"], xp)
        _validation.check_broadcasts_to("mask", inputs["mask"], "scores", shape)
    if inputs.get("weights") is not None:
        _validation.check_floating("weights", inputs["weights"], xp)
        _validation.check_broadcasts_to("weights", inputs["weights"], "scores", shape)


def _optax_ranking_softmax(optax, inputs, options, reduction, weight=None):
    return optax.losses.ranking_softmax_loss(inputs["scores"], inputs["labels"], where=inputs.get("mask"),
                                             weights=inputs.get("weights"), reduce_fn=None)


def _sample_ranking_softmax(rng, shape, options):
    """Graded integer labels 0..3; in two of three draws a mask (no list fully masked), in one also item weights."""
    out = {"scores": rng.normal(0.0, 2.0, shape), "labels": rng.integers(0, 4, shape).astype(np.int64)}
    form = int(rng.integers(3))
    if form > 0:
        mask = rng.random(shape) < 0.75
        mask[..., 0] = True
        out["mask"] = mask
    if form == 2:
        out["weights"] = rng.uniform(0.5, 2.0, shape)
    return out


register(LossSpec(
    name="ranking_softmax", family=FAMILY,
    summary="optax's ranking softmax loss: softmax cross entropy of the scores against unnormalised relevance labels.",
    inputs=("scores", "labels", "mask", "weights"), differentiable=("scores",),
    label_inputs=("labels", "mask"), optional_inputs=("mask", "weights"), same_shape=(),
    value=ranking_softmax_value, vjp=ranking_softmax_vjp, fused=ranking_softmax_fused,
    validate=_check_ranking_softmax, output_shape=_list_shape, mean_weights=_ranking_softmax_mean_weights,
    formula=(r"\ell = -\sum_{i\,\text{valid}} y_i w_i \log\frac{e^{s_i}}{\sum_{j\,\text{valid}} e^{s_j}}"),
    gradient=(r"\partial\ell/\partial s_i = p_i \sum_{j\,\text{valid}} y_j w_j - y_i w_i\ \text{(valid)},\ "
              r"0\ \text{(masked)},\ p = \operatorname{softmax}(s)\ \text{over the valid items}"),
    sample=_sample_ranking_softmax,
    aliases=("ranking_softmax_loss",),
    references={"optax": Reference("optax.losses.ranking_softmax_loss", _optax_ranking_softmax)},
    literature=("optax.losses.ranking_softmax_loss; Bruch et al., An Analysis of the Softmax Cross Entropy Loss "
                "for Learning-to-Rank with Binary Relevance, ICTIR 2019",),
    notes=("`scores` and `labels` have shape (..., n); the loss has one value per list. The labels (float or "
           "integer relevance grades) are not normalised, as optax's. optax's `where` is the optional boolean "
           "`mask` input here (the engine's own `where=` masks whole lists): masked items leave the softmax "
           "(-inf scores) and get a gradient of exactly 0, and a list without a valid item has a loss of 0 with "
           "a zero gradient. `weights` are optax's per-item weights, multiplying the labels. With a `mask`, "
           "reduction='mean' divides by the number of lists that have a valid item, as optax's mean does. Both "
           "`mask` and `weights` may broadcast to the scores' shape."),
))


# --------------------------------------------------------------------------- feature_alignment


def feature_alignment_fused(xp, student, teacher, *, margin, eps):
    # l = 1 - cos where cos <= margin, 0 above (dl_techniques);  dcos/du = v, dcos/dv = u pulled back through
    # the normalisations u = s / max(|s|, eps), v = t / max(|t|, eps)
    u, n_s, active_s = _numerics.unit_vectors(xp, student, eps * eps)
    v, n_t, active_t = _numerics.unit_vectors(xp, teacher, eps * eps)
    cos = xp.sum(u * v, axis=-1)
    on = xp.logical_not(cos > margin)  # not cos <= margin: a NaN cosine stays in the loss (NaN) instead of adding 0
    value = xp.where(on, 1.0 - cos, 0.0)

    def pullback(ct):
        k = _expand(xp, xp.where(on, -ct, 0.0))
        return {"student": _numerics.unit_vectors_vjp(xp, k * v, u, n_s, active_s),
                "teacher": _numerics.unit_vectors_vjp(xp, k * u, v, n_t, active_t)}

    return value, pullback


def feature_alignment_value(xp, student, teacher, *, margin, eps):
    """1 - cos(student, teacher) where the cosine is at most `margin`, else 0."""
    return feature_alignment_fused(xp, student, teacher, margin=margin, eps=eps)[0]


def feature_alignment_vjp(xp, cotangent, student, teacher, *, margin, eps):
    return feature_alignment_fused(xp, student, teacher, margin=margin, eps=eps)[1](cotangent)


def _check_vectors(xp, inputs, options, concrete):
    _validation.check_ndim("student", inputs["student"], at_least=1)
    _validation.check_min_size("student", inputs["student"].shape[-1], 1, "a vector size (last axis)")


def _sample_feature_alignment(rng, shape, options):
    # student = a teacher + noise spreads the cosines over (-1, 1); rows near the margin's jump are redrawn
    margin = options["margin"]
    teacher = rng.normal(size=shape)
    student = np.empty(shape)
    lead = shape[:-1]
    todo = np.ones(lead, dtype=bool)
    for _ in range(200):
        a = rng.uniform(-1.0, 3.0, lead + (1,))
        fresh = a * teacher + rng.normal(size=shape)
        student = np.where(todo[..., None], fresh, student)
        cos = np.sum(student * teacher, -1) / np.linalg.norm(student, axis=-1) / np.linalg.norm(teacher, axis=-1)
        todo = np.abs(cos - margin) < 0.05
        if not todo.any():
            return {"student": student, "teacher": teacher}
    raise RuntimeError("could not draw cosines away from the margin")


register(LossSpec(
    name="feature_alignment", family=FAMILY,
    summary="Feature alignment (dl_techniques): 1 - cosine(student, teacher) where the cosine is at most the margin.",
    inputs=("student", "teacher"), differentiable=("student", "teacher"),
    value=feature_alignment_value, vjp=feature_alignment_vjp, fused=feature_alignment_fused,
    validate=_check_vectors, output_shape=lambda shapes, options: shapes["student"][:-1],
    options=(Option("margin", 0.85, "Cosine above which a pair adds nothing, in [-1, 1].",
                    number(low=-1.0, high=1.0)),
             Option("eps", 1e-12, "Floor of each vector's norm (> 0), applied as eps^2 to the squared norm.",
                    number(low=0, low_open=True))),
    formula=(r"\ell = (1 - \cos)\,[\cos \le m],\ \cos = \hat u^\top \hat v,\ "
             r"\hat u = u / \max(\|u\|, \varepsilon)"),
    gradient=(r"\partial\ell/\partial u = -[\cos \le m]\,\frac{\hat v - \cos\,\hat u}{\max(\|u\|, \varepsilon)}"
              r"\ \text{(no}\ \cos\,\hat u\ \text{term below}\ \varepsilon),\ \text{likewise for}\ v"),
    sample=_sample_feature_alignment,
    aliases=("feature_alignment_loss",),
    option_cases=({}, {"margin": 0.0}, {"margin": 1.0, "eps": 1e-3}),
    literature=("dl_techniques FeatureAlignmentLoss; Romero et al., FitNets: Hints for Thin Deep Nets (2014)",),
    notes=("`student` and `teacher` have shape (..., d), one feature vector per leading index; the loss has the "
           "shape without the last axis, and its mean is dl_techniques' FeatureAlignmentLoss. As there, the loss "
           "jumps from 1 - margin to 0 where the cosine passes the margin (no gradient from pairs already "
           "aligned beyond it). Both inputs get a gradient; a frozen teacher simply ignores its own, and the "
           "functional `feature_alignment_loss_gradient` returns the student's. Norms are floored at `eps` "
           "(dl_techniques: 1e-12), so a zero vector has cosine 0 and finite gradients."),
))


# --------------------------------------------------------------------------- koleo


def koleo_fused(xp, embeddings, *, eps):
    # u = x / max(|x|, eps); nn(a) = argmax_{b != a} u_a.u_b (the nearest by distance on the sphere);
    # l_a = -log(d_a + eps), d_a = |u_a - u_nn(a)|: dl/du_a = -r_a / ((d_a + eps) d_a) and the neighbour gets
    # the opposite, r_a = u_a - u_nn(a); at d_a = 0 the subgradient 0 is used
    u, norm, active = _numerics.unit_vectors(xp, embeddings, eps * eps)
    index = _numerics.arange_like(xp, u.shape[-2], u)
    self_pair = _expand(xp, index, -1) == _expand(xp, index, 0)
    sim = xp.where(self_pair, -math.inf, u @ xp.matrix_transpose(u))
    nearest = xp.argmax(sim, axis=-1)  # ties: the lowest index
    pick = xp.astype(index == _expand(xp, nearest), u.dtype)  # (..., n, n): row a is one-hot at nn(a)
    r = u - pick @ u
    d = xp.sqrt(xp.sum(r * r, axis=-1))
    value = -xp.log(d + eps)

    def pullback(ct):
        g = _expand(xp, _numerics.safe_divide(xp, -ct, (d + eps) * d)) * r
        du = g - xp.matrix_transpose(pick) @ g  # each neighbour's row collects the opposite terms
        return {"embeddings": _numerics.unit_vectors_vjp(xp, du, u, norm, active)}

    return value, pullback


def koleo_value(xp, embeddings, *, eps):
    """-log(|u_a - u_nn(a)| + eps) per sample of each set, u the L2-normalised embeddings."""
    return koleo_fused(xp, embeddings, eps=eps)[0]


def koleo_vjp(xp, cotangent, embeddings, *, eps):
    return koleo_fused(xp, embeddings, eps=eps)[1](cotangent)


def _check_koleo(xp, inputs, options, concrete):
    x = inputs["embeddings"]
    _validation.check_ndim("embeddings", x, at_least=2)
    _validation.check_min_size("embeddings", x.shape[-2], 2, "a number of samples (axis -2)")
    _validation.check_min_size("embeddings", x.shape[-1], 1, "a vector size (last axis)")


def _sample_koleo(rng, shape, options):
    # every sample's nearest neighbour at least 0.1 away and 0.05 nearer than the next: no switch of
    # neighbour under finite-difference steps or float32 rounding
    shape = tuple(shape[:-2]) + (max(shape[-2], 3), shape[-1])
    for _ in range(1000):
        x = rng.normal(size=shape)
        u = x / np.linalg.norm(x, axis=-1, keepdims=True)
        d = np.linalg.norm(u[..., :, None, :] - u[..., None, :, :], axis=-1)
        d = np.sort(d + np.eye(shape[-2]) * 10.0, axis=-1)
        if (d[..., 0] > 0.1).all() and (d[..., 1] - d[..., 0] > 0.05).all():
            return {"embeddings": x}
    raise RuntimeError("could not draw embeddings with distinct nearest neighbours")


register(LossSpec(
    name="koleo", family=FAMILY,
    summary="KoLeo regulariser (DINOv2): minus the log distance of each normalised embedding to its nearest neighbour.",
    inputs=("embeddings",), differentiable=("embeddings",),
    value=koleo_value, vjp=koleo_vjp, fused=koleo_fused,
    validate=_check_koleo, output_shape=lambda shapes, options: shapes["embeddings"][:-1],
    options=(Option("eps", 1e-8, "Added to each distance inside the log, and floor of each norm (> 0).",
                    number(low=0, low_open=True)),),
    formula=(r"\ell_a = -\log\left(\|u_a - u_{\mathrm{nn}(a)}\| + \varepsilon\right),\ "
             r"u = x / \max(\|x\|, \varepsilon),\ \mathrm{nn}(a) = \arg\max_{b \ne a} u_a^\top u_b"),
    gradient=(r"\partial\ell_a/\partial u_a = -\partial\ell_a/\partial u_{\mathrm{nn}(a)} = "
              r"-\frac{u_a - u_{\mathrm{nn}(a)}}{(d_a + \varepsilon)\,d_a}\ (0\ \text{at}\ d_a = 0),\ "
              r"\text{then through the normalisation}"),
    sample=_sample_koleo,
    aliases=("koleo_loss",),
    option_cases=({}, {"eps": 1e-3}),
    literature=("Sablayrolles et al., Spreading vectors for similarity search, ICLR 2019; "
                "Oquab et al., DINOv2: Learning Robust Visual Features without Supervision (2023); "
                "Kozachenko & Leonenko (1987); dl_techniques KoLeoLoss",),
    notes=("`embeddings` have shape (..., n, d): a set of n >= 2 vectors per leading index; the loss has shape "
           "(..., n), one term per sample, and its mean is the KoLeo regulariser. Each vector is L2-normalised "
           "(norm floored at `eps`); its nearest neighbour is the other vector of largest cosine, i.e. of "
           "smallest distance (ties: the lowest index), and the gradient flows through that chosen neighbour to "
           "both vectors. The distance is the norm of the difference (DINOv2's PairwiseDistance also adds 1e-8 "
           "to the difference; dl_techniques uses sqrt(2 - 2 cos)), so identical embeddings give a distance of "
           "exactly 0, the finite value -log(eps) and the subgradient 0. A NaN in one embedding makes the loss of "
           "every vector of its set NaN (not only its own): its cosine with each vector is NaN, which argmax takes "
           "as the largest, so it becomes every vector's nearest neighbour, as with DINOv2's torch.max."),
))


# --------------------------------------------------------------------------- clustering


def clustering_fused(xp, embeddings, centroids, *, temperature, distance_weight, distribution_weight):
    # D_ik = |x_i - m_k|^2, q_i = softmax(-D_i / T), c_i = sum_k q_ik D_ik, f = mean_i q_i, r = f - 1/K;
    # L = w_d mean_i c_i + w_b mean_k r_k^2.  With h = dL/df = 2 w_b r / K:
    # dL/dD_ij = q_ij (w_d (1 - (D_ij - c_i) / T) - (h_j - sum_k q_ik h_k) / T) / N   (softmax Jacobian);
    # dD_ik/dx_i = 2 (x_i - m_k) = -dD_ik/dm_k, summed with matrix products
    x, m = embeddings, centroids
    n, k = x.shape[-2], m.shape[-2]
    sq_x, sq_m = xp.sum(x * x, axis=-1), xp.sum(m * m, axis=-1)
    dist = xp.maximum(_expand(xp, sq_x) + _expand(xp, sq_m, -2) - 2.0 * (x @ xp.matrix_transpose(m)), 0.0)
    q = xp.exp(_numerics.log_softmax(xp, -dist / temperature, -1))
    c = xp.sum(q * dist, axis=-1)
    r = xp.mean(q, axis=-2) - 1.0 / k
    value = distance_weight * xp.mean(c, axis=-1) + distribution_weight * xp.mean(r * r, axis=-1)

    def pullback(ct):
        h = _expand(xp, (2.0 * distribution_weight / k) * r, -2)
        qh = xp.sum(q * h, axis=-1, keepdims=True)
        inner = distance_weight * (1.0 - (dist - _expand(xp, c)) / temperature) - (h - qh) / temperature
        g = _expand(xp, _expand(xp, ct)) * (q * inner / n)
        return {"embeddings": 2.0 * (_expand(xp, xp.sum(g, axis=-1)) * x - g @ m),
                "centroids": 2.0 * (_expand(xp, xp.sum(g, axis=-2)) * m - xp.matrix_transpose(g) @ x)}

    return value, pullback


def clustering_value(xp, embeddings, centroids, *, temperature, distance_weight, distribution_weight):
    """w_d mean_i sum_k q_ik |x_i - m_k|^2 + w_b mean_k (mean_i q_ik - 1/K)^2, q_i = softmax(-|x_i - m|^2 / T)."""
    return clustering_fused(xp, embeddings, centroids, temperature=temperature, distance_weight=distance_weight,
                            distribution_weight=distribution_weight)[0]


def clustering_vjp(xp, cotangent, embeddings, centroids, *, temperature, distance_weight, distribution_weight):
    return clustering_fused(xp, embeddings, centroids, temperature=temperature, distance_weight=distance_weight,
                            distribution_weight=distribution_weight)[1](cotangent)


def _check_clustering(xp, inputs, options, concrete):
    x, m = inputs["embeddings"], inputs["centroids"]
    for name, s in (("embeddings", x), ("centroids", m)):
        _validation.check_ndim(name, s, at_least=2)
        _validation.check_min_size(name, s.shape[-2], 1, "a number of samples (axis -2)")
    _validation.check_sample_sets("embeddings", x, "centroids", m)


def _sample_clustering(rng, shape, options):
    shape = tuple(shape)
    centroids = rng.normal(0.0, 1.0, shape[:-2] + (3, shape[-1]))
    return {"embeddings": rng.normal(0.0, 1.0, shape), "centroids": centroids}


register(LossSpec(
    name="clustering", family=FAMILY,
    summary="Clustering loss: soft k-means compactness plus a penalty on unbalanced clusters (dl_techniques' terms).",
    inputs=("embeddings", "centroids"), differentiable=("embeddings", "centroids"),
    predictions=("embeddings", "centroids"), same_shape=(),
    value=clustering_value, vjp=clustering_vjp, fused=clustering_fused,
    validate=_check_clustering, output_shape=lambda shapes, options: shapes["embeddings"][:-2],
    options=(Option("temperature", 1.0, "Temperature of the soft assignment softmax(-distance^2 / T) (> 0).",
                    number(low=0, low_open=True)),
             Option("distance_weight", 1.0, "Weight of the compactness term (>= 0).", number(low=0)),
             Option("distribution_weight", 0.5, "Weight of the cluster-balance term (>= 0).", number(low=0))),
    formula=(r"\ell = w_d\,\tfrac1N\sum_i\sum_k q_{ik} D_{ik} + w_b\,\tfrac1K\sum_k\left(\tfrac1N\sum_i q_{ik} "
             r"- \tfrac1K\right)^2,\ D_{ik} = \|x_i - m_k\|^2,\ q_i = \operatorname{softmax}(-D_{i\cdot}/T)"),
    gradient=(r"G_{ij} = \tfrac{q_{ij}}{N}\left(w_d\left(1 - \tfrac{D_{ij} - c_i}{T}\right) - \tfrac{h_j - "
              r"\sum_k q_{ik} h_k}{T}\right),\ h = \tfrac{2 w_b}{K}(f - \tfrac1K);\ "
              r"\partial\ell/\partial x_i = 2\sum_j G_{ij}(x_i - m_j),\ \partial\ell/\partial m_j = "
              r"-2\sum_i G_{ij}(x_i - m_j)"),
    sample=_sample_clustering,
    aliases=("clustering_loss",),
    option_cases=({}, {"temperature": 4.0, "distribution_weight": 2.0}, {"distance_weight": 0.0, "temperature": 3.0}),
    literature=("dl_techniques ClusteringLoss; Xie et al., Unsupervised Deep Embedding for Clustering Analysis "
                "(DEC), ICML 2016",),
    notes=("`embeddings` (..., N, d) and `centroids` (..., K, d) share their leading dimensions (a batch of "
           "problems; one loss value each, a scalar for 2-D inputs) and the feature size d; both get a gradient, "
           "so learned centroids train with the embeddings. dl_techniques' ClusteringLoss scores given soft "
           "assignments against a target (MSE) plus the MSE of the mean assignment to the uniform distribution; "
           "here the assignments come from the embeddings and centroids themselves, q_i = softmax(-|x_i - m|^2 / "
           "temperature) (soft k-means; the hard k-means objective as temperature -> 0), the first term is the "
           "expected squared distance of each point to its clusters (compactness) and the second is "
           "dl_techniques' balance penalty unchanged, with its default weights 1.0 and 0.5. Squared distances "
           "come from matrix products (floored at 0), memory O(NK) per problem."),
))
