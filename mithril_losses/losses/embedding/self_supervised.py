"""Self-supervised and contrastive losses: NT-Xent (InfoNCE), CLIP, SigLIP, DINO and iBOT.

Each loss is a value function and its hand-derived vjp side by side (here one
fused function, whose value part is the value function). The contrastive
losses (``ntxent``, ``clip_contrastive``, ``siglip``) score a whole batch
against itself and return one scalar, so their unreduced loss has shape ``()``;
``dino`` gives one value per sample and ``ibot_patch`` one per image.
Embeddings are L2-normalised inside with a floored norm (``unit_vectors``), so
zero vectors give finite values and gradients; similarity gradients go back to
the embeddings as ``dS u`` products, never through a loop over pairs. The
DINO/iBOT center is an input, not state: ``update_center`` advances it by EMA.
The engine adds reduction, weights and masks.
"""

from __future__ import annotations

import numpy as np

from ... import _numerics, _validation, backends
from ...registry import LossSpec, Option, Reference, register
from .._common import number

FAMILY = "embedding"

# torch.nn.functional.normalize's floor of the norm (max(|x|, 1e-12)), as a floor of |x|^2
_NORMALIZE_MIN_SQ = 1e-24


_POSITIVE = number(low=0.0, low_open=True)


def _flag(name, value):
    _validation.check_bool(name, value)
    return value


def _scalar_shape(shapes, options):
    return ()


def _eye(xp, n, like):
    i = _numerics.arange_like(xp, n, like)
    return xp.expand_dims(i, axis=1) == xp.expand_dims(i, axis=0)


def _pairwise_pullback(xp, g, a, b):
    """Cotangents of a and b for S = a b^T given the cotangent g of S: (g b, g^T a)."""
    return g @ b, xp.matrix_transpose(g) @ a


def _check_embedding_pair(xp, inputs, options, concrete, names=("image", "text")):
    for name in names:
        _validation.check_ndim_in(name, inputs[name], (2,), "(B, D): one embedding per row")
        _validation.check_min_size(name, inputs[name].shape[0], 1, "a batch size (axis 0)")
        _validation.check_min_size(name, inputs[name].shape[1], 1, "an embedding size (axis 1)")


# --------------------------------------------------------------------------- ntxent


def ntxent_fused(xp, embeddings, labels, *, temperature):
    # s = u u^T / t (u the unit embeddings); for each positive pair (i, j) (same label, i != j)
    # l_ij = -log(e^s_ij / (e^s_ij + sum_k neg_ik e^s_ik)) = softplus(A_i - s_ij), A_i = log sum_k neg_ik e^s_ik;
    # loss = sum l_ij / P (P positive pairs). With w_ij = pos_ij sigmoid(A_i - s_ij) and pi_ik = the softmax of
    # row i over its negatives: dL/ds_ij = -w_ij / P, dL/ds_ik = pi_ik sum_j w_ij / P; du = (G + G^T) u / t.
    u, n, active = _numerics.unit_vectors(xp, embeddings, float(xp.finfo(embeddings.dtype).eps))
    s = (u @ xp.matrix_transpose(u)) / temperature
    same = xp.expand_dims(labels, axis=1) == xp.expand_dims(labels, axis=0)
    pos = same & ~_eye(xp, labels.shape[0], labels)
    neg = ~same
    # shift by the row's largest negative (|s| <= 1/t, so the -1/t fill is never above it): no -inf anywhere,
    # and a row without negatives has total 0, where each of its pairs has loss exactly 0
    m = xp.max(xp.where(neg, s, xp.full_like(s, -1.0 / temperature)), axis=1, keepdims=True)
    e = xp.where(neg, xp.exp(s - m), xp.zeros_like(s))
    total = xp.sum(e, axis=1, keepdims=True)
    has_neg = total > 0
    a = m + xp.log(xp.where(has_neg, total, xp.ones_like(total)))
    counted = pos & has_neg
    count = xp.maximum(xp.sum(xp.astype(pos, s.dtype)), 1.0)  # no positive pair: 0 with a zero gradient
    value = xp.sum(xp.where(counted, _numerics.softplus(xp, a - s), xp.zeros_like(s))) / count

    def pullback(ct):
        w = xp.where(counted, _numerics.sigmoid(xp, a - s), xp.zeros_like(s))
        pi = e / xp.where(has_neg, total, xp.ones_like(total))
        g = (ct / (count * temperature)) * (pi * xp.sum(w, axis=1, keepdims=True) - w)
        du = (g + xp.matrix_transpose(g)) @ u
        return {"embeddings": _numerics.unit_vectors_vjp(xp, du, u, n, active)}

    return value, pullback


def ntxent_value(xp, embeddings, labels, *, temperature):
    """Mean over positive pairs (i, j) of -log(e^s_ij / (e^s_ij + sum_(k: y_k != y_i) e^s_ik)), s = cos / t."""
    return ntxent_fused(xp, embeddings, labels, temperature=temperature)[0]


def ntxent_vjp(xp, cotangent, embeddings, labels, *, temperature):
    return ntxent_fused(xp, embeddings, labels, temperature=temperature)[1](cotangent)


def _check_ntxent(xp, inputs, options, concrete):
    e, y = inputs["embeddings"], inputs["labels"]
    _validation.check_ndim_in("embeddings", e, (2,), "(N, D): one embedding per row")
    _validation.check_min_size("embeddings", e.shape[0], 1, "a batch size (axis 0)")
    _validation.check_class_target_dtype("labels", y, xp, probabilities=False)
    _validation.check_shape("labels", y, tuple(e.shape[:1]), "one group label per embedding")


def _sample_ntxent(rng, shape, options):
    """Groups of two or three views: every row has a positive and a negative."""
    groups = max(int(shape[0]), 2)
    sizes = [2 + int(rng.random() < 0.3) for _ in range(groups)]
    labels = rng.permutation([g for g, k in enumerate(sizes) for _ in range(k)]).astype("int64")
    return {"embeddings": rng.normal(0.0, 1.0, (len(labels), int(shape[-1]))), "labels": labels}


def _optax_ntxent(optax, inputs, options, reduction, weight=None):
    return optax.losses.ntxent(inputs["embeddings"], inputs["labels"], temperature=options["temperature"])


register(LossSpec(
    name="ntxent", family=FAMILY,
    summary="NT-Xent / InfoNCE contrastive loss over a batch of embeddings with group labels (optax's ntxent).",
    inputs=("embeddings", "labels"), differentiable=("embeddings",), label_inputs=("labels",), same_shape=(),
    value=ntxent_value, vjp=ntxent_vjp, fused=ntxent_fused,
    validate=_check_ntxent, output_shape=_scalar_shape,
    options=(Option("temperature", 0.07, "Divides the cosine similarities (> 0).", _POSITIVE),),
    formula=(r"\ell = \frac{1}{|P|}\sum_{(i,j)\in P} -\log\frac{e^{s_{ij}}}{e^{s_{ij}} + \sum_{k: y_k \ne y_i} e^{s_{ik}}},"
             r"\ s_{ij} = \frac{\hat x_i^\top \hat x_j}{\tau},\ P = \{(i, j): y_i = y_j,\ i \ne j\}"),
    gradient=(r"\partial\ell/\partial s_{ij} = -w_{ij}/|P|\ \text{(positives)},\ "
              r"\pi_{ik}\textstyle\sum_j w_{ij}/|P|\ \text{(negatives)},\ w_{ij} = \sigma(A_i - s_{ij}),\ "
              r"A_i = \log\textstyle\sum_{k: y_k \ne y_i} e^{s_{ik}};\ "
              r"\partial\ell/\partial\hat x = (G + G^\top)\hat x/\tau,\ \text{then through } \hat x = x/\|x\|"),
    sample=_sample_ntxent,
    aliases=("info_nce", "nt_xent"),
    functional=("ntxent", "ntxent_loss", "info_nce_loss"),
    references={"optax": Reference("optax.losses.ntxent", _optax_ntxent)},
    option_cases=({}, {"temperature": 0.5}),
    literature=("Chen et al., A Simple Framework for Contrastive Learning of Visual Representations (SimCLR, 2020); "
                "van den Oord et al., Representation Learning with Contrastive Predictive Coding (InfoNCE, 2018); "
                "optax.losses.ntxent",),
    notes=("`embeddings` (N, D) and integer `labels` (N,): rows with equal labels are positive pairs (a row is "
           "never its own positive), rows with different labels are negatives. Exactly optax's ntxent: cosine "
           "similarities with |x|^2 floored at the dtype's machine epsilon (a zero vector gives 0 similarities "
           "and finite gradients), each positive pair scored against the negatives of its anchor row only (not "
           "against the other positives), averaged over all positive pairs. The loss is one scalar for the "
           "batch (unreduced shape ()). A row without negatives adds 0 per pair but its pairs are counted, as "
           "optax; unlike optax, a batch without any positive pair gives 0 with a zero gradient, not NaN."),
))


# --------------------------------------------------------------------------- clip_contrastive


def _smoothed_cross_entropy(xp, logits, axis, eye, smoothing):
    """Per row (``axis=1``) or column (``axis=0``) softmax cross entropy towards the smoothed diagonal, and
    its gradient softmax - t, t = (1 - e) I + e / B (PyTorch's label smoothing).

    With z = L - max L and the target summing to 1: CE = log sum exp z - (1 - e) z_diag - e/B sum z.
    """
    b = logits.shape[0]
    z, log_s = _numerics.shifted_logits(xp, logits, axis)
    diag = xp.sum(xp.where(eye, z, xp.zeros_like(z)), axis=axis, keepdims=True)
    ce = log_s - (1.0 - smoothing) * diag
    if smoothing > 0:
        ce = ce - (smoothing / b) * xp.sum(z, axis=axis, keepdims=True)
    p = xp.exp(z - log_s) - smoothing / b
    return xp.sum(ce) / b, xp.where(eye, p - (1.0 - smoothing), p)


def clip_contrastive_fused(xp, image, text, *, temperature, label_smoothing, from_logits):
    # embeddings: L = u v^T / t; loss = (CE_rows(L) + CE_rows(L^T)) / 2, each a mean over the B rows;
    # dL = (softmax_rows(L) - T + softmax_cols(L) - T) / (2B);  du = dL v / t, dv = dL^T u / t.
    # logits: image and text are the two (B, B) matrices, each scored by rows: d/d image = (softmax - T) / (2 B t)
    eye = _eye(xp, image.shape[0], image)
    b = image.shape[0]
    if from_logits:
        v_img, g_img = _smoothed_cross_entropy(xp, image / temperature, 1, eye, label_smoothing)
        v_txt, g_txt = _smoothed_cross_entropy(xp, text / temperature, 1, eye, label_smoothing)

        def logits_pullback(ct):
            k = ct / (2.0 * b * temperature)
            return {"image": k * g_img, "text": k * g_txt}

        return 0.5 * (v_img + v_txt), logits_pullback

    u, nu, au = _numerics.unit_vectors(xp, image, _NORMALIZE_MIN_SQ)
    v, nv, av = _numerics.unit_vectors(xp, text, _NORMALIZE_MIN_SQ)
    logits = (u @ xp.matrix_transpose(v)) / temperature
    v_i2t, g_rows = _smoothed_cross_entropy(xp, logits, 1, eye, label_smoothing)
    v_t2i, g_cols = _smoothed_cross_entropy(xp, logits, 0, eye, label_smoothing)

    def pullback(ct):
        du, dv = _pairwise_pullback(xp, (ct / (2.0 * b * temperature)) * (g_rows + g_cols), u, v)
        return {"image": _numerics.unit_vectors_vjp(xp, du, u, nu, au),
                "text": _numerics.unit_vectors_vjp(xp, dv, v, nv, av)}

    return 0.5 * (v_i2t + v_t2i), pullback


def clip_contrastive_value(xp, image, text, *, temperature, label_smoothing, from_logits):
    """(CE(L, diag) + CE(L^T, diag)) / 2 over the (B, B) logits L = image text^T / t of unit embeddings."""
    return clip_contrastive_fused(xp, image, text, temperature=temperature, label_smoothing=label_smoothing,
                                  from_logits=from_logits)[0]


def clip_contrastive_vjp(xp, cotangent, image, text, *, temperature, label_smoothing, from_logits):
    return clip_contrastive_fused(xp, image, text, temperature=temperature, label_smoothing=label_smoothing,
                                  from_logits=from_logits)[1](cotangent)


def _check_clip(xp, inputs, options, concrete):
    if not options["from_logits"]:
        _check_embedding_pair(xp, inputs, options, concrete)
        return
    for name in ("image", "text"):
        x = inputs[name]
        _validation.check_ndim_in(name, x, (2,), "(B, B): a square matrix of logits (from_logits=True)")
        _validation.check_min_size(name, x.shape[0], 1, "a batch size (axis 0)")
        _validation.check_shape(name, x, (x.shape[0], x.shape[0]),
                                "a square matrix of logits, the matching pairs on the diagonal (from_logits=True)")


def _sample_clip(rng, shape, options):
    b = max(int(shape[0]), 2)
    if options["from_logits"]:
        logits = rng.normal(0.0, 0.3, (b, b)) + np.eye(b)  # matching pairs a little ahead
        return {"image": logits, "text": logits.T + rng.normal(0.0, 0.05, (b, b))}
    d = int(shape[-1])
    return {"image": rng.normal(0.0, 1.0, (b, d)), "text": rng.normal(0.0, 1.0, (b, d))}


register(LossSpec(
    name="clip_contrastive", family=FAMILY,
    summary="CLIP's symmetric contrastive loss: cross entropy over image-text similarities in both directions.",
    inputs=("image", "text"), differentiable=("image", "text"), predictions=("image", "text"),
    value=clip_contrastive_value, vjp=clip_contrastive_vjp, fused=clip_contrastive_fused,
    validate=_check_clip, output_shape=_scalar_shape,
    options=(Option("temperature", 0.07, "Divides the logits (> 0); CLIP's learned logit scale is 1 / temperature.",
                    _POSITIVE),
             Option("label_smoothing", 0.0, "Smoothing of the one-hot targets of each row, in [0, 1) (PyTorch's).",
                    number(low=0.0, high=1.0, high_open=True)),
             Option("from_logits", False, "False: `image`, `text` are (B, D) embeddings, normalised inside; True: "
                    "they are the (B, B) logits per image and per text (divided by temperature too).", _flag)),
    formula=(r"\ell = \tfrac12\left(\tfrac1B\textstyle\sum_i \mathrm{CE}(L_{i\cdot}, i) + "
             r"\tfrac1B\textstyle\sum_j \mathrm{CE}(L_{\cdot j}, j)\right),\ L = \hat I \hat T^\top/\tau"),
    gradient=(r"\partial\ell/\partial L = \frac{(\operatorname{softmax}_{\text{rows}}(L) - Y) + "
              r"(\operatorname{softmax}_{\text{cols}}(L) - Y)}{2B},\ Y = (1-\varepsilon)I + \varepsilon/B;\ "
              r"\partial\ell/\partial\hat I = \partial L\,\hat T/\tau,\ \partial\ell/\partial\hat T = \partial L^\top\hat I/\tau"),
    sample=_sample_clip,
    option_cases=({}, {"label_smoothing": 0.1}, {"temperature": 0.5, "from_logits": True},
                  {"temperature": 1.0, "label_smoothing": 0.2, "from_logits": True}),
    literature=("Radford et al., Learning Transferable Visual Models From Natural Language Supervision (CLIP, 2021); "
                "dl_techniques CLIPContrastiveLoss",),
    notes=("The main form takes image and text embeddings (B, D), row i of each a matching pair; each row is "
           "L2-normalised inside as torch's F.normalize (max(|x|, 1e-12), so a zero vector gives finite values "
           "and gradients) and the logits are image text^T / temperature. With from_logits=True, `image` and "
           "`text` are the (B, B) logits_per_image and logits_per_text (usually each other's transpose), as "
           "dl_techniques' CLIPContrastiveLoss takes them; they are divided by temperature as well (its "
           "apply_temperature=True), so pass temperature=1.0 for logits that are already scaled. "
           "label_smoothing smooths each row's one-hot target as PyTorch's cross_entropy does. The two "
           "directions weigh 1/2 each (dl_techniques' default loss weights). One scalar for the batch "
           "(unreduced shape ())."),
))


# --------------------------------------------------------------------------- siglip


def siglip_fused(xp, image, text, *, temperature, bias):
    # z = u v^T / t + b, y = +1 on the diagonal, -1 elsewhere; loss = (1/B) sum_ij softplus(-y z);
    # dL/dz = -y sigmoid(-y z) / B: -sigmoid(-z) on the diagonal, sigmoid(z) elsewhere; du = dz v / t, dv = dz^T u / t
    b = image.shape[0]
    u, nu, au = _numerics.unit_vectors(xp, image, _NORMALIZE_MIN_SQ)
    v, nv, av = _numerics.unit_vectors(xp, text, _NORMALIZE_MIN_SQ)
    z = (u @ xp.matrix_transpose(v)) / temperature + bias
    eye = _eye(xp, b, image)
    sp_pos, sp_neg, sig_pos, sig_neg = _numerics.sigmoid_terms(xp, z)
    value = xp.sum(xp.where(eye, sp_neg, sp_pos)) / b

    def pullback(ct):
        g = (ct / (b * temperature)) * xp.where(eye, -sig_neg, sig_pos)
        du, dv = _pairwise_pullback(xp, g, u, v)
        return {"image": _numerics.unit_vectors_vjp(xp, du, u, nu, au),
                "text": _numerics.unit_vectors_vjp(xp, dv, v, nv, av)}

    return value, pullback


def siglip_value(xp, image, text, *, temperature, bias):
    """-(1/B) sum_ij log sigmoid(y_ij (cos_ij / t + b)), y = +1 for matching pairs (i = j), -1 otherwise."""
    return siglip_fused(xp, image, text, temperature=temperature, bias=bias)[0]


def siglip_vjp(xp, cotangent, image, text, *, temperature, bias):
    return siglip_fused(xp, image, text, temperature=temperature, bias=bias)[1](cotangent)


def _sample_siglip(rng, shape, options):
    b, d = max(int(shape[0]), 2), int(shape[-1])
    return {"image": rng.normal(0.0, 1.0, (b, d)), "text": rng.normal(0.0, 1.0, (b, d))}


register(LossSpec(
    name="siglip", family=FAMILY,
    summary="SigLIP's pairwise sigmoid loss: every image-text pair is a binary match / no-match decision.",
    inputs=("image", "text"), differentiable=("image", "text"), predictions=("image", "text"),
    value=siglip_value, vjp=siglip_vjp, fused=siglip_fused,
    validate=_check_embedding_pair, output_shape=_scalar_shape,
    options=(Option("temperature", 0.1, "Divides the cosine similarities (> 0): the paper's scale t = "
                    "1 / temperature, initialised at 10.", _POSITIVE),
             Option("bias", -10.0, "Added to the scaled similarities (the paper's b, initialised at -10).",
                    number())),
    formula=(r"\ell = -\frac1B\sum_{i,j}\log\sigma\!\left(y_{ij}\,(\hat I_i^\top \hat T_j/\tau + b)\right),\ "
             r"y_{ij} = 1\ (i = j),\ -1\ (i \ne j)"),
    gradient=(r"\partial\ell/\partial z_{ij} = -y_{ij}\,\sigma(-y_{ij} z_{ij})/B,\ "
              r"\partial\ell/\partial\hat I = \partial z\,\hat T/\tau,\ \partial\ell/\partial\hat T = \partial z^\top \hat I/\tau"),
    sample=_sample_siglip,
    option_cases=({}, {"temperature": 1.0, "bias": 0.0}, {"temperature": 0.5, "bias": -2.0}),
    literature=("Zhai et al., Sigmoid Loss for Language Image Pre-Training (ICCV 2023); "
                "dl_techniques SigLIPContrastiveLoss",),
    notes=("`image` and `text` are (B, D) embeddings, row i of each a matching pair, L2-normalised inside as "
           "torch's F.normalize (a zero vector gives finite values and gradients). As in the paper, the sum "
           "over all B^2 pairs is divided by B, the logits are t cos + b with t = 1 / temperature, and the "
           "defaults are the paper's initialisation t = 10, b = -10 (a learned t' = log t and b are the "
           "caller's: pass temperature = exp(-t')). Softplus terms are formed without overflow for any logit. "
           "dl_techniques' SigLIPContrastiveLoss differs on purpose: it takes precomputed logit matrices, "
           "multiplies them by its temperature, has no bias and averages over all B^2 entries. One scalar for "
           "the batch (unreduced shape ())."),
))


# --------------------------------------------------------------------------- dino


def _center_forms(k, ndim):
    forms = {(k,): "one value per class"}
    for lead in range(1, ndim):
        forms[(1,) * lead + (k,)] = "one value per class, broadcast over the leading axes"
    return forms


def _teacher_distillation(xp, student, teacher, center, student_temp, teacher_temp):
    """Per-row -sum_k q_k log p_k, q = softmax((t - c) / tau_t), p = softmax(s / tau_s), and (p - q) / tau_s."""
    q = xp.exp(_numerics.log_softmax(xp, (teacher - center) / teacher_temp, -1))
    z, log_s = _numerics.shifted_logits(xp, student / student_temp, -1)
    log_p = z - log_s  # not x - logsumexp(x): keeps log p's digits for float32 logits of 1e4 and beyond
    ce = -xp.sum(_numerics.xlog(xp, q, log_p), axis=-1)  # q = 0 at a -inf student logit adds 0, not NaN
    return ce, lambda: (xp.exp(log_p) - q) / student_temp


def dino_fused(xp, student, teacher, center, *, student_temp, teacher_temp):
    # l = -sum_k q_k log p_k with sum_k q_k = 1, so dl/ds = (p - q) / tau_s; the teacher gets no gradient
    # (DINO's stop-gradient) and neither does the center
    value, grad = _teacher_distillation(xp, student, teacher, center, student_temp, teacher_temp)
    return value, lambda ct: {"student": xp.expand_dims(ct, axis=-1) * grad()}


def dino_value(xp, student, teacher, center, *, student_temp, teacher_temp):
    """-sum_k softmax((t - c) / tau_t)_k log softmax(s / tau_s)_k, per sample."""
    return dino_fused(xp, student, teacher, center, student_temp=student_temp, teacher_temp=teacher_temp)[0]


def dino_vjp(xp, cotangent, student, teacher, center, *, student_temp, teacher_temp):
    return dino_fused(xp, student, teacher, center, student_temp=student_temp,
                      teacher_temp=teacher_temp)[1](cotangent)


def _check_dino(xp, inputs, options, concrete):
    s = inputs["student"]
    _validation.check_ndim("student", s, at_least=1)
    _validation.check_min_size("student", s.shape[-1], 1, "a number of prototypes (last axis)")
    _validation.check_target_shape("center", inputs["center"], _center_forms(s.shape[-1], s.ndim))


def _sample_center(rng, k, ndim):
    forms = list(_center_forms(k, ndim))
    return rng.normal(0.0, 0.5, forms[int(rng.integers(len(forms)))])


def _sample_dino(rng, shape, options):
    shape = tuple(int(n) for n in shape)
    return {"student": rng.normal(0.0, 1.0, shape), "teacher": rng.normal(0.0, 1.0, shape),
            "center": _sample_center(rng, shape[-1], len(shape))}


_TEMPS = (Option("student_temp", 0.1, "Temperature of the student's softmax (> 0).", _POSITIVE),
          Option("teacher_temp", 0.04, "Temperature of the centered teacher's softmax (> 0; sharper than the "
                 "student's).", _POSITIVE))

register(LossSpec(
    name="dino", family=FAMILY,
    summary="DINO self-distillation: cross entropy from the centered, sharpened teacher to the student.",
    inputs=("student", "teacher", "center"), differentiable=("student",), same_shape=("student", "teacher"),
    value=dino_value, vjp=dino_vjp, fused=dino_fused,
    validate=_check_dino, output_shape=lambda shapes, options: shapes["student"][:-1],
    options=_TEMPS,
    formula=(r"\ell = -\textstyle\sum_k q_k \log p_k,\ q = \operatorname{softmax}((t - c)/\tau_t),\ "
             r"p = \operatorname{softmax}(s/\tau_s)"),
    gradient=r"\partial\ell/\partial s = (p - q)/\tau_s\ \ (\text{teacher and center: stop-gradient})",
    sample=_sample_dino,
    option_cases=({}, {"student_temp": 0.5, "teacher_temp": 0.2}),
    literature=("Caron et al., Emerging Properties in Self-Supervised Vision Transformers (DINO, ICCV 2021); "
                "dl_techniques DINOLoss",),
    notes=("`student` and `teacher` are logits (N, K) (or (..., K): one value per row); the teacher is a "
           "stop-gradient target and gets no gradient, as in DINO. `center` (K,) or (1, K) is an input, not "
           "state: advance it after each step with `update_center(center, teacher, momentum=0.9)` (m c + "
           "(1 - m) mean(teacher)), which dl_techniques' DINOLoss does inside its call. Multi-crop pairing is "
           "the caller's: stack the (student crop, teacher crop) pairs as rows, repeating teacher rows as "
           "needed, and mask out same-view pairs with `where`. A -inf student logit where the teacher puts no "
           "mass adds 0, not NaN."),
))


def update_center(center, teacher, *, momentum=0.9):
    """The DINO/iBOT center advanced by an exponential moving average: m center + (1 - m) mean(teacher).

    The mean runs over every axis of ``teacher`` but the last (rows; images and patches for iBOT); the
    result has ``center``'s shape, dtype and array type (NumPy, JAX, PyTorch, MLX; lists become NumPy).
    """
    _validation.check_number("momentum", momentum, low=0.0, high=1.0)
    libraries = [backends.library_of(x) or "numpy" for x in (center, teacher)]
    if libraries[0] != libraries[1] and "numpy" not in libraries:
        raise _validation.mixed_libraries(("center", libraries[0]), ("teacher", libraries[1]))
    name = libraries[0] if libraries[0] != "numpy" else libraries[1]
    adapter = backends.get_adapter(name)
    xp = adapter.xp
    center, teacher = (x if backends.library_of(x) == name else adapter.asarray(x) for x in (center, teacher))
    _validation.check_floating("center", center, xp)
    _validation.check_floating("teacher", teacher, xp)
    _validation.check_ndim("teacher", teacher, at_least=1)
    _validation.check_target_shape("center", center, _center_forms(teacher.shape[-1], teacher.ndim))
    batch = xp.mean(xp.astype(teacher, center.dtype), axis=tuple(range(teacher.ndim - 1)))
    return momentum * center + (1.0 - momentum) * xp.reshape(batch, tuple(center.shape))


# --------------------------------------------------------------------------- ibot_patch


def ibot_patch_fused(xp, student, teacher, mask, center, *, student_temp, teacher_temp):
    # per image l = sum_p m_p CE_p / max(sum_p m_p, 1), CE_p DINO's per patch; dl/ds_p = m_p (p - q)_p / tau_s / count
    ce, grad = _teacher_distillation(xp, student, teacher, center, student_temp, teacher_temp)
    m = mask if xp.isdtype(mask.dtype, "bool") else mask != 0
    count = xp.maximum(xp.sum(xp.astype(m, ce.dtype), axis=-1), 1.0)  # an empty mask gives 0, zero gradient
    value = xp.sum(xp.where(m, ce, xp.zeros_like(ce)), axis=-1) / count  # where: an unmasked inf patch adds 0

    def pullback(ct):
        g = xp.expand_dims(xp.expand_dims(ct / count, axis=-1), axis=-1) * grad()
        # where, as in the value: an unmasked patch gets 0 even where it holds NaN or inf
        return {"student": xp.where(xp.expand_dims(m, axis=-1), g, xp.zeros_like(g))}

    return value, pullback


def ibot_patch_value(xp, student, teacher, mask, center, *, student_temp, teacher_temp):
    """Per image, the mean over its masked patches of DINO's cross entropy (0 for an empty mask)."""
    return ibot_patch_fused(xp, student, teacher, mask, center, student_temp=student_temp,
                            teacher_temp=teacher_temp)[0]


def ibot_patch_vjp(xp, cotangent, student, teacher, mask, center, *, student_temp, teacher_temp):
    return ibot_patch_fused(xp, student, teacher, mask, center, student_temp=student_temp,
                            teacher_temp=teacher_temp)[1](cotangent)


def _check_ibot(xp, inputs, options, concrete):
    s, mask = inputs["student"], inputs["mask"]
    _validation.check_ndim("student", s, at_least=2)
    _validation.check_real_or_integral("mask", mask, xp)
    _validation.check_shape("mask", mask, tuple(s.shape[:-1]), "the student's shape without the class axis: "
                            "True for the masked patches that are scored")
    if concrete:
        _validation.check_binary_labels("mask", mask, xp)
    _validation.check_target_shape("center", inputs["center"], _center_forms(s.shape[-1], s.ndim))


def _sample_ibot(rng, shape, options):
    shape = tuple(int(n) for n in shape)
    n, k = shape[0], shape[-1]
    full = (n, shape[1] if len(shape) == 3 else 4, k)
    mask = rng.random(full[:-1]) < 0.5
    mask[0, 0] = True
    if n > 1:
        mask[-1] = False  # one image without masked patches
    return {"student": rng.normal(0.0, 1.0, full), "teacher": rng.normal(0.0, 1.0, full), "mask": mask,
            "center": _sample_center(rng, k, 3)}


register(LossSpec(
    name="ibot_patch", family=FAMILY,
    summary="iBOT masked patch loss: DINO's cross entropy on the masked patch tokens, averaged per image.",
    inputs=("student", "teacher", "mask", "center"), differentiable=("student",), label_inputs=("mask",),
    same_shape=("student", "teacher"),
    value=ibot_patch_value, vjp=ibot_patch_vjp, fused=ibot_patch_fused,
    validate=_check_ibot, output_shape=lambda shapes, options: shapes["student"][:-2],
    domains={"mask": "{0, 1}"},
    options=_TEMPS,
    formula=(r"\ell_n = \frac{\sum_p m_{np}\,\mathrm{CE}_{np}}{\max(\sum_p m_{np}, 1)},\ "
             r"\mathrm{CE}_{np} = -\textstyle\sum_k q_{npk}\log p_{npk},\ "
             r"q = \operatorname{softmax}((t - c)/\tau_t),\ p = \operatorname{softmax}(s/\tau_s)"),
    gradient=(r"\partial\ell_n/\partial s_{np} = m_{np}\,(p_{np} - q_{np})/(\tau_s \max(\textstyle\sum_p m_{np}, 1))"
              r"\ \ (\text{teacher and center: stop-gradient})"),
    sample=_sample_ibot,
    aliases=("ibot",),
    option_cases=({}, {"student_temp": 0.5, "teacher_temp": 0.2}),
    literature=("Zhou et al., iBOT: Image BERT Pre-Training with Online Tokenizer (ICLR 2022); "
                "dl_techniques iBOTPatchLoss",),
    notes=("`student` and `teacher` are patch logits (N, P, K) (or (..., P, K)), `mask` (N, P) is True (or 1) "
           "for the masked patches that are scored, `center` (K,), (1, K) or (1, 1, K) is an input; advance it "
           "with `update_center`, which averages the teacher over images and patches. The teacher gets no "
           "gradient. As iBOT's reference code, each image's loss is the mean over its own masked patches (an "
           "image without masked patches gives 0 with a zero gradient) and the images are then averaged by the "
           "reduction; dl_techniques' iBOTPatchLoss instead averages over all masked patches of the batch at once."),
))
