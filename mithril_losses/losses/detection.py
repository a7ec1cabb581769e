"""Detection losses: box regression (GIoU, DIoU, CIoU) and YOLO's distribution focal loss.

Box losses take two sets of boxes ``(..., 4)`` as ``(x1, y1, x2, y2)`` with
``x1 <= x2`` and ``y1 <= y2`` and give one loss per box pair, shape ``(...)``,
with the values of torchvision's ``generalized_box_iou_loss``,
``distance_box_iou_loss`` and ``complete_box_iou_loss``. Both box sets get a
gradient; ``boxes1`` are the predictions (what the functional ``_gradient``
returns), ``boxes2`` the targets. Per axis a box pair has an overlap
``min(hi1, hi2) - max(lo1, lo2)`` (negative when apart), an enclosing extent
``max(hi1, hi2) - min(lo1, lo2)``, two lengths and a centre offset; the
gradient is pulled back through these five numbers per axis. The min/max
kinks take the subgradient of the chosen side, half to each at a tie (as
PyTorch's ``minimum``/``maximum``). The engine adds reduction, weights and masks.
"""

from __future__ import annotations

import math

import numpy as np

from .. import _numerics, _validation
from ..registry import LossSpec, Option, Reference, register
from ._common import number

FAMILY = "detection"

_FOUR_OVER_PI2 = 4.0 / (math.pi * math.pi)


# --------------------------------------------------------------------------- box geometry


def _axis(xp, lo1, hi1, lo2, hi2):
    """Overlap, enclosing extent, the two lengths and the centre offset along one axis."""
    inner = xp.minimum(hi1, hi2) - xp.maximum(lo1, lo2)
    outer = xp.maximum(hi1, hi2) - xp.minimum(lo1, lo2)
    return inner, outer, hi1 - lo1, hi2 - lo2, 0.5 * ((lo1 + hi1) - (lo2 + hi2))


def _min_share(xp, a, b):
    """d min(a, b) / da: 1 where a < b, 1/2 at a tie, 0 otherwise (d/db is 1 minus it)."""
    return xp.astype(a < b, a.dtype) + 0.5 * xp.astype(a == b, a.dtype)


def _axis_vjp(xp, lo1, hi1, lo2, hi2, g_inner, g_outer, g_len1, g_len2, g_offset):
    """Coordinate gradients (lo1, hi1, lo2, hi2) from those of the five numbers of ``_axis``."""
    lo_in = _min_share(xp, lo2, lo1)   # share of lo1 in max(lo1, lo2)
    lo_out = _min_share(xp, lo1, lo2)  # share of lo1 in min(lo1, lo2)
    hi_in = _min_share(xp, hi1, hi2)   # share of hi1 in min(hi1, hi2)
    hi_out = _min_share(xp, hi2, hi1)  # share of hi1 in max(hi1, hi2)
    half = 0.5 * g_offset
    return (-g_len1 - g_inner * lo_in - g_outer * lo_out + half,
            g_len1 + g_inner * hi_in + g_outer * hi_out + half,
            -g_len2 - g_inner * (1.0 - lo_in) - g_outer * (1.0 - lo_out) - half,
            g_len2 + g_inner * (1.0 - hi_in) + g_outer * (1.0 - hi_out) - half)


def _box_fused(xp, boxes1, boxes2, eps, kind):
    x1, y1, x2, y2 = (boxes1[..., i] for i in range(4))
    u1, v1, u2, v2 = (boxes2[..., i] for i in range(4))
    iw, cw, w1, w2, dx = _axis(xp, x1, x2, u1, u2)
    ih, ch, h1, h2, dy = _axis(xp, y1, y2, v1, v2)
    zero = xp.zeros_like(iw)
    overlap = (iw > 0) & (ih > 0)  # torchvision's mask: no intersection (and no gradient) unless both overlap
    inter = xp.where(overlap, iw * ih, zero)
    union = w1 * h1 + w2 * h2 - inter
    den = union + eps
    iou = inter / den
    # iou = I / (A1 + A2 - I + eps): d iou/dI = (1 + iou)/den, d iou/dA_k = -iou/den
    g_inter, g_area = -(1.0 + iou) / den, iou / den
    if kind == "giou":
        # l = 1 - iou + (C - u)/(C + eps), C = cw ch: dl/dC = (u + eps)/(C + eps)^2, dl/du = -1/(C + eps)
        area_c = cw * ch
        den_c = area_c + eps
        value = 1.0 - iou + (area_c - union) / den_c
        g_inter, g_area = g_inter + 1.0 / den_c, g_area - 1.0 / den_c
        g_c = (union + eps) / (den_c * den_c)
        g_cw, g_ch, g_dx, g_dy = g_c * ch, g_c * cw, zero, zero
    else:
        # l = 1 - iou + rho/D, rho = dx^2 + dy^2 (centre distance), D = cw^2 + ch^2 + eps (enclosing diagonal)
        diag = cw * cw + ch * ch + eps
        rho = dx * dx + dy * dy
        value = 1.0 - iou + rho / diag
        k = -2.0 * rho / (diag * diag)
        g_cw, g_ch, g_dx, g_dy = k * cw, k * ch, 2.0 * dx / diag, 2.0 * dy / diag
    g_w1, g_h1, g_w2, g_h2 = g_area * h1, g_area * w1, g_area * h2, g_area * w2
    if kind == "ciou":
        # + alpha v, v = 4/pi^2 (a2 - a1)^2, a = atan(w/h) = atan2(w, h) (also finite at h = 0);
        # alpha = v / (1 - iou + v + eps) is a constant for the gradient, as torchvision's no_grad
        a1, a2 = xp.atan2(w1, h1), xp.atan2(w2, h2)
        delta = a2 - a1
        v = _FOUR_OVER_PI2 * delta * delta
        alpha = _numerics.stop_gradient(xp, v / (1.0 - iou + v + eps))
        value = value + alpha * v
        # dv/da2 = -dv/da1 = 8/pi^2 delta; da/dw = h/(w^2 + h^2), da/dh = -w/(w^2 + h^2) (0 for a point box)
        g_v = 2.0 * _FOUR_OVER_PI2 * alpha * delta
        r1, r2 = w1 * w1 + h1 * h1, w2 * w2 + h2 * h2
        g_w1 = g_w1 - g_v * _numerics.safe_divide(xp, h1, r1)
        g_h1 = g_h1 + g_v * _numerics.safe_divide(xp, w1, r1)
        g_w2 = g_w2 + g_v * _numerics.safe_divide(xp, h2, r2)
        g_h2 = g_h2 - g_v * _numerics.safe_divide(xp, w2, r2)
    g_iw = g_inter * xp.where(overlap, ih, zero)
    g_ih = g_inter * xp.where(overlap, iw, zero)

    def pullback(ct):
        gx = _axis_vjp(xp, x1, x2, u1, u2, ct * g_iw, ct * g_cw, ct * g_w1, ct * g_w2, ct * g_dx)
        gy = _axis_vjp(xp, y1, y2, v1, v2, ct * g_ih, ct * g_ch, ct * g_h1, ct * g_h2, ct * g_dy)
        return {"boxes1": xp.stack((gx[0], gy[0], gx[1], gy[1]), axis=-1),
                "boxes2": xp.stack((gx[2], gy[2], gx[3], gy[3]), axis=-1)}

    return value, pullback


def _check_boxes(xp, inputs, options, concrete):
    for name in ("boxes1", "boxes2"):
        _validation.check_boxes(name, inputs[name], xp, concrete)


def _box_shape(shapes, options):
    return tuple(shapes["boxes1"][:-1])


def _sample_boxes(rng, shape, options):
    """Box pairs (..., 4), overlapping or apart, with no coordinate ties and no overlap near 0 (the kinks)."""
    shape = tuple(shape[:-1]) + (4,)

    def draw(n):
        c1 = rng.uniform(-2.0, 2.0, (n, 2))
        c2 = c1 + rng.uniform(-2.5, 2.5, (n, 2))
        s1, s2 = rng.uniform(0.5, 3.0, (n, 2)), rng.uniform(0.5, 3.0, (n, 2))
        return np.concatenate((c1 - s1 / 2, c1 + s1 / 2), -1), np.concatenate((c2 - s2 / 2, c2 + s2 / 2), -1)

    def near_kink(b1, b2):
        inner = np.minimum(b1[:, 2:], b2[:, 2:]) - np.maximum(b1[:, :2], b2[:, :2])
        return (np.abs(b1 - b2) < 0.05).any(-1) | (np.abs(inner) < 0.05).any(-1)

    n = math.prod(shape[:-1])
    b1, b2 = draw(n)
    for _ in range(100):
        bad = near_kink(b1, b2)
        if not bad.any():
            return {"boxes1": b1.reshape(shape), "boxes2": b2.reshape(shape)}
        r1, r2 = draw(n)
        b1, b2 = np.where(bad[:, None], r1, b1), np.where(bad[:, None], r2, b2)
    raise RuntimeError("could not draw boxes away from the kinks")


_BOX_COMMON = dict(
    family=FAMILY, inputs=("boxes1", "boxes2"), differentiable=("boxes1", "boxes2"), predictions=("boxes1",),
    validate=_check_boxes, output_shape=_box_shape, sample=_sample_boxes,
    domains={"boxes1": "boxes", "boxes2": "boxes"},
    options=(Option("eps", 1e-7, "Added to the union, the enclosing area or diagonal (>= 0).", number(low=0)),),
    option_cases=({}, {"eps": 0.01}),
)

_BOX_NOTE = ("Boxes are (x1, y1, x2, y2) on the last axis, x1 <= x2 and y1 <= y2 (checked on concrete arrays); "
             "the loss has one value per box pair. `boxes1` are the predictions, the functional `_gradient` "
             "returns theirs; `loss.grad` gives both. The default reduction is 'mean' (torchvision's is 'none').")


# --------------------------------------------------------------------------- giou


def giou_fused(xp, boxes1, boxes2, *, eps):
    return _box_fused(xp, boxes1, boxes2, eps, "giou")


def giou_value(xp, boxes1, boxes2, *, eps):
    """1 - IoU + (C - U) / (C + eps), IoU = I / (U + eps), C the smallest enclosing box's area."""
    return giou_fused(xp, boxes1, boxes2, eps=eps)[0]


def giou_vjp(xp, cotangent, boxes1, boxes2, *, eps):
    return giou_fused(xp, boxes1, boxes2, eps=eps)[1](cotangent)


register(LossSpec(
    name="giou", summary="Generalized IoU loss of (x1, y1, x2, y2) box pairs (torchvision's generalized_box_iou_loss).",
    value=giou_value, vjp=giou_vjp, fused=giou_fused,
    formula=r"\ell = 1 - \frac{I}{U + \varepsilon} + \frac{C - U}{C + \varepsilon},\ "
            r"U = A_1 + A_2 - I,\ C = \text{area of the smallest enclosing box}",
    gradient=r"\text{chain rule through } I = \max(\min(x_2, x_2') - \max(x_1, x_1'), 0)\cdot(\dots),\ A_k,\ C"
             r"\ (\text{min/max: the chosen side, } \tfrac12 \text{ each at a tie})",
    aliases=("giou_loss", "generalized_box_iou_loss", "generalized_iou"),
    literature=("Rezatofighi et al., Generalized Intersection over Union (CVPR 2019); "
                "torchvision.ops.generalized_box_iou_loss",),
    notes=_BOX_NOTE, **_BOX_COMMON,
))


# --------------------------------------------------------------------------- diou


def diou_fused(xp, boxes1, boxes2, *, eps):
    return _box_fused(xp, boxes1, boxes2, eps, "diou")


def diou_value(xp, boxes1, boxes2, *, eps):
    """1 - IoU + rho^2 / (c^2 + eps): rho the centre distance, c the enclosing box's diagonal."""
    return diou_fused(xp, boxes1, boxes2, eps=eps)[0]


def diou_vjp(xp, cotangent, boxes1, boxes2, *, eps):
    return diou_fused(xp, boxes1, boxes2, eps=eps)[1](cotangent)


register(LossSpec(
    name="diou", summary="Distance IoU loss of (x1, y1, x2, y2) box pairs (torchvision's distance_box_iou_loss).",
    value=diou_value, vjp=diou_vjp, fused=diou_fused,
    formula=r"\ell = 1 - \frac{I}{U + \varepsilon} + \frac{\rho^2}{c^2 + \varepsilon},\ "
            r"\rho = \text{centre distance},\ c = \text{enclosing box diagonal}",
    gradient=r"\partial(\rho^2/D)/\partial\rho^2 = 1/D,\ \partial(\rho^2/D)/\partial c_w = -2\rho^2 c_w / D^2"
             r"\ \text{plus the IoU term, as for GIoU}",
    aliases=("diou_loss", "distance_box_iou_loss", "distance_iou"),
    literature=("Zheng et al., Distance-IoU Loss (AAAI 2020); torchvision.ops.distance_box_iou_loss",),
    notes=_BOX_NOTE, **_BOX_COMMON,
))


# --------------------------------------------------------------------------- ciou


def ciou_fused(xp, boxes1, boxes2, *, eps):
    return _box_fused(xp, boxes1, boxes2, eps, "ciou")


def ciou_value(xp, boxes1, boxes2, *, eps):
    """DIoU loss + alpha v, v = 4/pi^2 (atan(w2/h2) - atan(w1/h1))^2, alpha = v / (1 - IoU + v + eps) held constant."""
    return ciou_fused(xp, boxes1, boxes2, eps=eps)[0]


def ciou_vjp(xp, cotangent, boxes1, boxes2, *, eps):
    return ciou_fused(xp, boxes1, boxes2, eps=eps)[1](cotangent)


register(LossSpec(
    name="ciou", summary="Complete IoU loss of (x1, y1, x2, y2) box pairs (torchvision's complete_box_iou_loss).",
    value=ciou_value, vjp=ciou_vjp, fused=ciou_fused,
    formula=r"\ell = \ell_{\mathrm{DIoU}} + \alpha v,\ v = \tfrac{4}{\pi^2}\left(\arctan\tfrac{w_2}{h_2} - "
            r"\arctan\tfrac{w_1}{h_1}\right)^2,\ \alpha = \frac{v}{1 - \mathrm{IoU} + v + \varepsilon}",
    gradient=r"\alpha\ \text{constant (torchvision's no\_grad)}:\ \partial(\alpha v)/\partial w_1 = "
             r"-\alpha\tfrac{8}{\pi^2}\Delta\,\frac{h_1}{w_1^2 + h_1^2},\ \text{plus the DIoU gradient}",
    aliases=("ciou_loss", "complete_box_iou_loss", "complete_iou"),
    stopped_gradient=("alpha is held constant in the gradient, as torchvision computes it under torch.no_grad(); "
                      "the value's derivative would also differentiate alpha"),
    literature=("Zheng et al., Distance-IoU Loss (AAAI 2020); Zheng et al., Enhancing Geometric Factors in "
                "Model Learning and Inference for Object Detection (2021); torchvision.ops.complete_box_iou_loss",),
    notes=_BOX_NOTE + " The aspect angle is atan2(w, h), equal to atan(w / h) for h > 0 and finite for "
                      "zero-height boxes (torchvision gives NaN there). As in torchvision, alpha gets no gradient.",
    **_BOX_COMMON,
))


# --------------------------------------------------------------------------- distribution_focal


def distribution_focal_fused(xp, input, target):
    # y_l = floor(y), y_r = y_l + 1, w_r = y - y_l, w_l = 1 - w_r:
    # l = -(w_l log p_{y_l} + w_r log p_{y_r});  dl/dx = p - w_l e_{y_l} - w_r e_{y_r}  (w_l + w_r = 1)
    floor = xp.floor(target)
    w_r = target - floor
    w_l = 1.0 - w_r
    left = _numerics.as_index(xp, xp.astype(floor, xp.int32))
    right = left + 1
    log_p = _numerics.log_softmax(xp, input, -1)
    value = -(_numerics.xlog(xp, w_l, _numerics.take_labels(xp, log_p, left, -1))
              + _numerics.xlog(xp, w_r, _numerics.take_labels(xp, log_p, right, -1)))

    def pullback(ct):
        g = xp.exp(log_p) * xp.expand_dims(ct, axis=-1)
        g = _numerics.add_at_labels(xp, g, left, -ct * w_l, -1)
        return {"input": _numerics.add_at_labels(xp, g, right, -ct * w_r, -1)}

    return value, pullback


def distribution_focal_value(xp, input, target):
    """w_l CE(x, y_l) + w_r CE(x, y_r) over the last (bin) axis: y_l = floor(y), y_r = y_l + 1, w_l = y_r - y, w_r = y - y_l."""
    return distribution_focal_fused(xp, input, target)[0]


def distribution_focal_vjp(xp, cotangent, input, target):
    return distribution_focal_fused(xp, input, target)[1](cotangent)


def _check_dfl(xp, inputs, options, concrete):
    x, y = inputs["input"], inputs["target"]
    _validation.check_ndim("input", x, at_least=1)
    _validation.check_min_size("input", x.shape[-1], 2, "a number of bins (last axis)")
    _validation.check_shape("target", y, tuple(x.shape[:-1]), "the input's shape without the bin axis")
    if concrete:
        _validation.check_bin_targets("target", y, xp, x.shape[-1])


def _sample_dfl(rng, shape, options):
    n = shape[-1]
    return {"input": rng.normal(0.0, 2.0, shape), "target": rng.uniform(0.0, n - 1.0 - 1e-3, tuple(shape[:-1]))}


def _torch_dfl(torch, inputs, options, reduction, weight=None):
    # two-hot cross entropy with torch's own cross_entropy, as Ultralytics' DFLoss (without its side mean)
    if weight is not None:
        raise TypeError("the reference takes no weight")
    x, y = inputs["input"], inputs["target"]
    n = x.shape[-1]
    left = torch.floor(y)
    w_r = y - left
    left = left.long()

    def ce(labels):
        return torch.nn.functional.cross_entropy(x.reshape(-1, n), labels.reshape(-1), reduction="none").reshape(y.shape)

    loss = (1.0 - w_r) * ce(left) + w_r * ce(left + 1)
    return {"none": loss, "mean": loss.mean(), "sum": loss.sum()}[reduction]


register(LossSpec(
    name="distribution_focal", family=FAMILY,
    summary="Distribution focal loss (YOLO DFL): two-hot cross entropy of bin logits with a continuous target.",
    inputs=("input", "target"), differentiable=("input",), same_shape=(),
    value=distribution_focal_value, vjp=distribution_focal_vjp, fused=distribution_focal_fused,
    validate=_check_dfl, output_shape=lambda shapes, options: tuple(shapes["input"][:-1]),
    domains={"target": "[0, n_bins - 1)"},
    formula=r"\ell = -(y_r - y)\log p_{y_l} - (y - y_l)\log p_{y_r},\ y_l = \lfloor y\rfloor,\ y_r = y_l + 1,\ "
            r"p = \operatorname{softmax}(x)\ \text{over the last axis}",
    gradient=r"\partial\ell/\partial x = p - (y_r - y)\,e_{y_l} - (y - y_l)\,e_{y_r}",
    sample=_sample_dfl,
    aliases=("dfl", "distribution_focal_loss", "dfl_loss"),
    references={"torch": Reference("torch.nn.functional.cross_entropy (two-hot, Ultralytics DFLoss)", _torch_dfl)},
    literature=("Li et al., Generalized Focal Loss (NeurIPS 2020); Ultralytics DFLoss",),
    notes="`input` holds bin logits on the last axis (n_bins >= 2); `target` (the input's shape without that "
          "axis) is a continuous bin position in [0, n_bins - 1), checked on concrete arrays. Ultralytics "
          "clamps its targets to n_bins - 1.01 and averages over the four box sides; here one value per "
          "position, reduced by the engine.",
))
