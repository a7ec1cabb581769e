"""Detection losses (giou, diou, ciou, distribution_focal) against independent references.

torchvision is not installed, so its ``generalized_box_iou_loss``,
``distance_box_iou_loss`` and ``complete_box_iou_loss`` are written here in
PyTorch from their published definitions (boolean-masked intersection, eps on
the union, the enclosing area and diagonal, CIoU's alpha under
``torch.no_grad()``) and differentiated by torch autograd. DFL is checked
against ``F.cross_entropy`` of the two neighbouring bins. Besides: hand-made
boxes with closed-form values, float64 finite differences of NumPy formulas
written here, edge cases and validation errors.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import mithril_losses as mlo

from conftest import native, to_numpy

torch = pytest.importorskip("torch")
F = torch.nn.functional

BOX_LOSSES = ("giou", "diou", "ciou")
EPS = 1e-7


def close(actual, expected, rtol=1e-12, atol=1e-12):
    np.testing.assert_allclose(to_numpy(actual) if not isinstance(actual, float) else actual,
                               np.asarray(expected, dtype=np.float64), rtol=rtol, atol=atol)


def tt(a, grad=False, dtype=torch.float64):
    return torch.tensor(np.asarray(a), dtype=dtype, requires_grad=grad)


# --------------------------------------------------------------------------
# torchvision's box losses, written in PyTorch (unreduced)


def _inter_union(b1, b2):
    x1, y1, x2, y2 = b1.unbind(-1)
    x1g, y1g, x2g, y2g = b2.unbind(-1)
    xk1, yk1 = torch.max(x1, x1g), torch.max(y1, y1g)
    xk2, yk2 = torch.min(x2, x2g), torch.min(y2, y2g)
    inter = torch.zeros_like(x1)
    mask = (yk2 > yk1) & (xk2 > xk1)
    inter[mask] = (xk2[mask] - xk1[mask]) * (yk2[mask] - yk1[mask])
    union = (x2 - x1) * (y2 - y1) + (x2g - x1g) * (y2g - y1g) - inter
    return inter, union


def tv_giou(b1, b2, eps=EPS):
    inter, union = _inter_union(b1, b2)
    iou = inter / (union + eps)
    x1, y1, x2, y2 = b1.unbind(-1)
    x1g, y1g, x2g, y2g = b2.unbind(-1)
    area_c = (torch.max(x2, x2g) - torch.min(x1, x1g)) * (torch.max(y2, y2g) - torch.min(y1, y1g))
    return 1 - (iou - (area_c - union) / (area_c + eps))


def _tv_diou_iou(b1, b2, eps=EPS):
    inter, union = _inter_union(b1, b2)
    iou = inter / (union + eps)
    x1, y1, x2, y2 = b1.unbind(-1)
    x1g, y1g, x2g, y2g = b2.unbind(-1)
    diag = (torch.max(x2, x2g) - torch.min(x1, x1g)) ** 2 + (torch.max(y2, y2g) - torch.min(y1, y1g)) ** 2 + eps
    dist = ((x1 + x2) / 2 - (x1g + x2g) / 2) ** 2 + ((y1 + y2) / 2 - (y1g + y2g) / 2) ** 2
    return 1 - iou + dist / diag, iou


def tv_diou(b1, b2, eps=EPS):
    return _tv_diou_iou(b1, b2, eps)[0]


def tv_ciou(b1, b2, eps=EPS):
    diou, iou = _tv_diou_iou(b1, b2, eps)
    x1, y1, x2, y2 = b1.unbind(-1)
    x1g, y1g, x2g, y2g = b2.unbind(-1)
    v = (4 / torch.pi ** 2) * (torch.atan((x2g - x1g) / (y2g - y1g)) - torch.atan((x2 - x1) / (y2 - y1))) ** 2
    with torch.no_grad():
        alpha = v / (1 - iou + v + eps)
    return diou + alpha * v


TV = {"giou": tv_giou, "diou": tv_diou, "ciou": tv_ciou}


def torch_value_and_grads(name, b1, b2, ct=None, eps=EPS, dtype=torch.float64):
    t1, t2 = tt(b1, True, dtype), tt(b2, True, dtype)
    value = TV[name](t1, t2, eps)
    ct = np.ones(value.shape) if ct is None else ct
    g1, g2 = torch.autograd.grad(value, (t1, t2), tt(ct, dtype=dtype))
    return value.detach().double().numpy(), g1.double().numpy(), g2.double().numpy()


def random_boxes(rng, n, overlap_gap=0.05):
    """Box pairs away from coordinate ties and from a zero overlap (the kinks)."""
    out1, out2 = [], []
    while len(out1) < n:
        c1 = rng.uniform(-2, 2, 2)
        c2 = c1 + rng.uniform(-2.5, 2.5, 2)
        s1, s2 = rng.uniform(0.3, 3, 2), rng.uniform(0.3, 3, 2)
        b1 = np.concatenate([c1 - s1 / 2, c1 + s1 / 2])
        b2 = np.concatenate([c2 - s2 / 2, c2 + s2 / 2])
        inner = np.minimum(b1[2:], b2[2:]) - np.maximum(b1[:2], b2[:2])
        if np.abs(b1 - b2).min() > 0.05 and np.abs(inner).min() > overlap_gap:
            out1.append(b1)
            out2.append(b2)
    return np.array(out1), np.array(out2)


# --------------------------------------------------------------------------
# against torchvision's formulas: values and both gradients


@pytest.mark.parametrize("name", BOX_LOSSES)
@pytest.mark.parametrize("eps", (EPS, 0.01))
def test_box_losses_match_torchvision_formula(name, eps):
    rng = np.random.default_rng(1)
    b1, b2 = random_boxes(rng, 40)
    b1, b2 = b1.reshape(5, 8, 4), b2.reshape(5, 8, 4)
    ct = rng.uniform(-1, 1, (5, 8))
    value, g1, g2 = torch_value_and_grads(name, b1, b2, ct, eps)
    loss = mlo.get(name, reduction="none", eps=eps)
    ours, grads = loss.value(b1, b2), loss.vjp(ct, b1, b2)
    close(ours, value)
    close(grads["boxes1"], g1)
    close(grads["boxes2"], g2)
    assert value.shape == (5, 8) and ((value > 0) & (value < 2.0 + 1.0)).all()
    overlapping = np.all(np.minimum(b1[..., 2:], b2[..., 2:]) > np.maximum(b1[..., :2], b2[..., :2]), axis=-1)
    assert overlapping.any() and (~overlapping).any()  # both regimes covered


@pytest.mark.parametrize("name", BOX_LOSSES)
def test_box_losses_reductions_match_torch(name):
    rng = np.random.default_rng(2)
    b1, b2 = random_boxes(rng, 6)
    t1, t2 = tt(b1, True), tt(b2, True)
    ref = TV[name](t1, t2).mean()
    g1, g2 = torch.autograd.grad(ref, (t1, t2))
    value, grads = mlo.get(name).value_and_grad(b1, b2)  # default reduction: mean
    close(value, float(ref.detach()))
    close(grads["boxes1"], g1.numpy())
    close(grads["boxes2"], g2.numpy())
    close(mlo.get(name, reduction="sum")(b1, b2), float(TV[name](tt(b1), tt(b2)).sum()))


# --------------------------------------------------------------------------
# hand-made boxes, closed forms


def test_identical_boxes():
    b = np.array([[0.0, 0.0, 2.0, 3.0], [1.0, -1.0, 1.5, 4.0]])
    area = np.array([6.0, 2.5])
    expected = EPS / (area + EPS)  # 1 - A / (A + eps); no enclosing, distance or aspect term
    for name in BOX_LOSSES:
        close(mlo.get(name, reduction="none")(b, b), expected, rtol=1e-9, atol=1e-15)
        # ties everywhere: half of each min/max goes to each side, as torch's minimum/maximum
        _, g1, g2 = torch_value_and_grads(name, b, b)
        grads = mlo.get(name, reduction="sum").grad(b, b)
        close(grads["boxes1"], g1)
        close(grads["boxes2"], g2)


def test_disjoint_boxes():
    b1, b2 = np.array([0.0, 0.0, 1.0, 1.0]), np.array([2.0, 0.0, 3.0, 1.0])
    # I = 0, U = 2, C = 3; centres 2 apart, enclosing box 3 x 1 (diagonal^2 = 10); same aspect, v = 0
    close(mlo.giou_loss(b1, b2, reduction="none"), 1.0 + 1.0 / (3.0 + EPS))
    close(mlo.diou_loss(b1, b2, reduction="none"), 1.0 + 4.0 / (10.0 + EPS))
    close(mlo.ciou_loss(b1, b2, reduction="none"), 1.0 + 4.0 / (10.0 + EPS))
    # GIoU, I = 0: l = 1 + (C - U)/(C + eps), dl/dU = -1/(C + eps), dl/dC = (U + eps)/(C + eps)^2.
    # x2 moves only A1 (dA1/dx2 = h1 = 1); x2g moves A2 (h2 = 1) and C (x2g is the enclosing max, ch = 1)
    g = mlo.get("giou", reduction="sum").grad(b1, b2)
    close(g["boxes1"][2], -1.0 / (3.0 + EPS))
    close(g["boxes2"][2], (2.0 + EPS) / (3.0 + EPS) ** 2 - 1.0 / (3.0 + EPS))


def test_nested_boxes():
    outer, inner = np.array([0.0, 0.0, 4.0, 4.0]), np.array([1.0, 1.0, 3.0, 3.0])
    # I = 4, U = C = 16, same centre and aspect: every loss is 1 - 4 / (16 + eps)
    for name in BOX_LOSSES:
        close(mlo.get(name, reduction="none")(inner, outer), 1.0 - 4.0 / (16.0 + EPS))
        close(mlo.get(name, reduction="none")(outer, inner), 1.0 - 4.0 / (16.0 + EPS))


def test_touching_boxes_have_no_intersection_gradient():
    b1, b2 = np.array([[0.0, 0.0, 1.0, 1.0]]), np.array([[1.0, 0.0, 2.0, 1.0]])
    close(mlo.get("giou", reduction="none")(b1, b2), [1.0])  # I = 0, U = C = 2
    close(mlo.get("diou", reduction="none")(b1, b2), [1.0 + 1.0 / (5.0 + EPS)])
    for name in BOX_LOSSES:
        _, g1, g2 = torch_value_and_grads(name, b1, b2)
        grads = mlo.get(name, reduction="sum").grad(b1, b2)
        close(grads["boxes1"], g1)
        close(grads["boxes2"], g2)


def test_ciou_aspect_term_closed_form():
    b1, b2 = np.array([0.0, 0.0, 2.0, 1.0]), np.array([0.0, 0.0, 1.0, 2.0])
    iou = 1.0 / (3.0 + EPS)
    diou = 1.0 - iou + 0.5 / (8.0 + EPS)  # centres (1, .5) and (.5, 1); enclosing 2 x 2
    v = 4.0 / math.pi ** 2 * (math.atan(0.5) - math.atan(2.0)) ** 2
    alpha = v / (1.0 - iou + v + EPS)
    close(mlo.ciou_loss(b1, b2, reduction="none"), diou + alpha * v)
    close(mlo.diou_loss(b1, b2, reduction="none"), diou)


# --------------------------------------------------------------------------
# float64 finite differences of NumPy formulas written here


def np_box_loss(name, b1, b2, eps=EPS, alpha=None):
    """The loss; for CIoU with ``alpha`` given, alpha held at that value."""
    x1, y1, x2, y2 = np.moveaxis(b1, -1, 0)
    u1, v1, u2, v2 = np.moveaxis(b2, -1, 0)
    iw, ih = np.minimum(x2, u2) - np.maximum(x1, u1), np.minimum(y2, v2) - np.maximum(y1, v1)
    inter = np.clip(iw, 0, None) * np.clip(ih, 0, None)
    union = (x2 - x1) * (y2 - y1) + (u2 - u1) * (v2 - v1) - inter
    iou = inter / (union + eps)
    cw, ch = np.maximum(x2, u2) - np.minimum(x1, u1), np.maximum(y2, v2) - np.minimum(y1, v1)
    if name == "giou":
        return 1 - iou + (cw * ch - union) / (cw * ch + eps)
    rho = ((x1 + x2 - u1 - u2) / 2) ** 2 + ((y1 + y2 - v1 - v2) / 2) ** 2
    out = 1 - iou + rho / (cw ** 2 + ch ** 2 + eps)
    if name == "ciou":
        v = 4 / np.pi ** 2 * (np.arctan((u2 - u1) / (v2 - v1)) - np.arctan((x2 - x1) / (y2 - y1))) ** 2
        a = v / (1 - iou + v + eps) if alpha is None else alpha
        out = out + a * v
    return out


def np_ciou_alpha(b1, b2, eps=EPS):
    # alpha v = ciou - diou and v = (ciou with alpha = 1) - diou
    diou = np_box_loss("diou", b1, b2, eps)
    v = np_box_loss("ciou", b1, b2, eps, alpha=1.0) - diou
    return (np_box_loss("ciou", b1, b2, eps) - diou) / v


@pytest.mark.parametrize("name", BOX_LOSSES)
def test_box_losses_finite_differences(name):
    rng = np.random.default_rng(3)
    b1, b2 = random_boxes(rng, 12, overlap_gap=0.1)
    ct = rng.uniform(-1, 1, 12)
    # CIoU's alpha is a constant for the gradient (torchvision's no_grad): frozen at the base point
    alpha = np_ciou_alpha(b1, b2) if name == "ciou" else None
    grads = mlo.get(name, reduction="none").vjp(ct, b1, b2)
    h = 1e-5
    for which, b in (("boxes1", b1), ("boxes2", b2)):
        for _ in range(3):
            d = rng.uniform(-1, 1, b.shape)

            def phi(t):
                args = (b + t * d, b2) if which == "boxes1" else (b1, b + t * d)
                return float(np.sum(ct * np_box_loss(name, *args, alpha=alpha)))

            fd = (phi(h) - phi(-h)) / (2 * h)
            np.testing.assert_allclose(float(np.sum(grads[which] * d)), fd, rtol=1e-7, atol=1e-9)


def test_ciou_alpha_gets_no_gradient():
    # the full derivative (alpha differentiated too) differs from torchvision's gradient, which ours follows
    b1, b2 = np.array([[0.0, 0.0, 2.0, 1.0]]), np.array([[0.5, 0.2, 1.5, 2.5]])
    t1 = tt(b1, True)
    full = torch.autograd.grad(_tv_ciou_full(t1, tt(b2)).sum(), t1)[0].numpy()
    ours = mlo.get("ciou", reduction="sum").grad(b1, b2)["boxes1"]
    _, g1, _ = torch_value_and_grads("ciou", b1, b2)
    close(ours, g1)
    assert np.abs(to_numpy(ours) - full).max() > 1e-4


def _tv_ciou_full(b1, b2, eps=EPS):
    diou, iou = _tv_diou_iou(b1, b2, eps)
    x1, y1, x2, y2 = b1.unbind(-1)
    x1g, y1g, x2g, y2g = b2.unbind(-1)
    v = (4 / torch.pi ** 2) * (torch.atan((x2g - x1g) / (y2g - y1g)) - torch.atan((x2 - x1) / (y2 - y1))) ** 2
    return diou + v / (1 - iou + v + eps) * v


# --------------------------------------------------------------------------
# edge cases


@pytest.mark.parametrize("name", ("giou", "diou"))
def test_zero_area_boxes_finite_with_eps(name):
    b1 = np.array([[0.0, 0.0, 0.0, 2.0], [1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 1.0, 1.0]])
    b2 = np.array([[0.5, 0.5, 2.0, 1.5], [1.0, 1.0, 1.0, 1.0], [0.3, 0.7, 0.3, 0.7]])
    ct = np.array([0.3, -0.7, 1.1])
    value, g1, g2 = torch_value_and_grads(name, b1, b2, ct)
    loss = mlo.get(name, reduction="none")
    grads = loss.vjp(ct, b1, b2)
    close(loss(b1, b2), value)
    close(grads["boxes1"], g1, rtol=1e-9, atol=1e-9)
    close(grads["boxes2"], g2, rtol=1e-9, atol=1e-9)
    assert np.isfinite(to_numpy(grads["boxes1"])).all()


def test_ciou_degenerate_boxes_stay_finite():
    # zero height: atan(w / 0) = pi/2 (torch's value agrees, its gradient is NaN); a point box: atan2(0, 0) = 0
    b1 = np.array([[0.0, 0.0, 2.0, 0.0], [1.0, 1.0, 1.0, 1.0]])
    b2 = np.array([[0.5, -0.5, 1.5, 1.5], [0.5, 0.5, 2.0, 1.5]])
    value, grads = mlo.get("ciou", reduction="none").value_and_grad(b1, b2)
    ref = to_numpy(tv_ciou(tt(b1), tt(b2)))
    close(to_numpy(value)[0], ref[0])
    assert np.isfinite(to_numpy(value)).all()
    assert all(np.isfinite(to_numpy(g)).all() for g in grads.values())


@pytest.mark.parametrize("name", BOX_LOSSES)
def test_huge_coordinates(name):
    rng = np.random.default_rng(4)
    b1, b2 = random_boxes(rng, 8)
    for scale, shift, dtype, rtol in ((1e3, 1e7, "float64", 1e-8), (100.0, 1e4, "float32", 1e-3)):
        s1, s2 = b1 * scale + shift, b2 * scale + shift
        value, g1, g2 = torch_value_and_grads(name, s1, s2)
        x1, x2 = native("torch", s1, dtype), native("torch", s2, dtype)
        ours, grads = mlo.get(name, reduction="none").value_and_grad(x1, x2)
        assert str(ours.dtype).endswith(dtype)
        close(ours, value, rtol=rtol, atol=rtol)
        scale_g = np.abs(g1).max()
        close(grads["boxes1"], g1, rtol=rtol, atol=rtol * scale_g)
        close(grads["boxes2"], g2, rtol=rtol, atol=rtol * scale_g)


@pytest.mark.parametrize("backend", ("numpy", "jax", "torch", "mlx", "array_api_strict"))
@pytest.mark.parametrize("name", BOX_LOSSES + ("distribution_focal",))
def test_every_backend_and_inputs_unchanged(backend, name):
    pytest.importorskip(backend if backend != "mlx" else "mlx.core")
    rng = np.random.default_rng(5)
    if name == "distribution_focal":
        a, b = rng.normal(size=(4, 6)), rng.uniform(0, 4.9, (4,))
    else:
        a, b = random_boxes(rng, 4)
    ref_value, ref_grads = mlo.get(name, reduction="sum").value_and_grad(a, b)
    x, y = native(backend, a), native(backend, b)
    value, grads = mlo.get(name, reduction="sum").value_and_grad(x, y)
    close(value, float(ref_value), rtol=1e-6)
    for k, g in grads.items():
        assert type(g) is type(x)
        close(g, ref_grads[k], rtol=1e-6, atol=1e-7)
    close(x, a, rtol=0, atol=0)
    close(y, b, rtol=0, atol=0)


@pytest.mark.parametrize("name", BOX_LOSSES + ("distribution_focal",))
def test_jax_jit_traces(name):
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)
    rng = np.random.default_rng(6)
    if name == "distribution_focal":
        a, b = rng.normal(size=(3, 5)), rng.uniform(0, 3.9, (3,))
    else:
        a, b = random_boxes(rng, 3)
    loss = mlo.get(name, reduction="sum")
    value, grads = jax.jit(loss.value_and_grad)(jax.numpy.asarray(a), jax.numpy.asarray(b))
    ref_value, ref_grads = loss.value_and_grad(a, b)
    close(value, float(ref_value), rtol=1e-10)
    for k in grads:
        close(grads[k], ref_grads[k], rtol=1e-10, atol=1e-12)


# --------------------------------------------------------------------------
# registry, functional names, validation


def test_names_and_functional_forms():
    assert mlo.get("generalized_box_iou_loss").name == "giou"
    assert mlo.get("distance_box_iou_loss").name == "diou"
    assert mlo.get("complete_box_iou_loss").name == "ciou"
    assert mlo.get("dfl").name == "distribution_focal"
    assert set(mlo.available(family="detection")) >= {"giou", "diou", "ciou", "distribution_focal"}
    rng = np.random.default_rng(7)
    b1, b2 = random_boxes(rng, 5)
    t1, t2 = tt(b1, True), tt(b2, True)
    ref = tv_giou(t1, t2).mean()
    g1, = torch.autograd.grad(ref, t1)
    close(mlo.generalized_box_iou_loss(b1, b2), float(ref.detach()))
    close(mlo.generalized_box_iou_loss_gradient(b1, b2), g1.numpy())  # the predictions: boxes1


@pytest.mark.parametrize("name", BOX_LOSSES)
def test_box_validation(name):
    good = np.array([[0.0, 0.0, 1.0, 1.0], [0.0, 0.0, 2.0, 2.0]])
    bad = np.array([[0.0, 0.0, 1.0, 1.0], [3.0, 0.0, 2.0, 2.0]])
    with pytest.raises(ValueError, match=r"`boxes1`.*x1 <= x2.*\(3\.0, 0\.0, 2\.0, 2\.0\)"):
        mlo.get(name)(bad, good)
    flipped_y = np.array([[0.0, 2.0, 1.0, 1.0], [0.0, 0.0, 2.0, 2.0]])
    with pytest.raises(ValueError, match=r"`boxes2`.*\(0\.0, 2\.0, 1\.0, 1\.0\)"):
        mlo.get(name)(good, flipped_y)
    with pytest.raises(ValueError, match=r"`boxes2`.*x1 <= x2"):
        mlo.get(name)(good, np.array([[0.0, 0.0, 1.0, 1.0], [0.0, 0.0, np.nan, 2.0]]))
    with pytest.raises(ValueError, match=r"`boxes1` must have shape \(\.\.\., 4\).*\(2, 3\)"):
        mlo.get(name)(good[:, :3], good[:, :3])
    with pytest.raises(ValueError, match=r"`boxes1` and `boxes2` must have the same shape"):
        mlo.get(name)(good, good[:1])
    with pytest.raises(ValueError, match="eps"):
        mlo.get(name, eps=-1.0)
    with pytest.raises(TypeError, match="boxes1"):
        mlo.get(name)(good.astype(np.int64), good)


# --------------------------------------------------------------------------
# distribution_focal


def torch_dfl(x, y):
    n = x.shape[-1]
    left = torch.floor(y)
    w_r = y - left
    left = left.long()
    ce_l = F.cross_entropy(x.reshape(-1, n), left.reshape(-1), reduction="none").reshape(y.shape)
    ce_r = F.cross_entropy(x.reshape(-1, n), (left + 1).reshape(-1), reduction="none").reshape(y.shape)
    return (1 - w_r) * ce_l + w_r * ce_r


def test_dfl_matches_torch_cross_entropy():
    rng = np.random.default_rng(8)
    x, y = rng.normal(0, 2, (3, 4, 16)), rng.uniform(0, 14.99, (3, 4))
    ct = rng.uniform(-1, 1, (3, 4))
    tx = tt(x, True)
    ref = torch_dfl(tx, tt(y))
    g, = torch.autograd.grad(ref, tx, tt(ct))
    loss = mlo.get("distribution_focal", reduction="none")
    close(loss(x, y), ref.detach().numpy())
    close(loss.vjp(ct, x, y)["input"], g.numpy())
    close(mlo.dfl_loss(x, y), float(ref.detach().mean()))
    close(mlo.distribution_focal_loss_gradient(x, y), torch.autograd.grad(torch_dfl(tx, tt(y)).mean(), tx)[0].numpy())


def test_dfl_hand_computed():
    # uniform logits: every bin has log p = -log n, so the loss is log n for any target
    close(mlo.get("dfl", reduction="none")(np.zeros((2, 5)), np.array([0.0, 3.7])), [math.log(5)] * 2)
    # integer target 2: plain cross entropy of bin 2; x = (0, 1, 2): -log(e^2 / (1 + e + e^2))
    x = np.array([0.0, 1.0, 2.0])
    expected = -(2.0 - math.log(1 + math.e + math.e ** 2))
    close(mlo.get("dfl", reduction="none")(x, np.array(1.0)), -(1.0 - math.log(1 + math.e + math.e ** 2)))
    close(mlo.get("dfl", reduction="none")(x, np.array(1.25)),
          0.75 * -(1.0 - math.log(1 + math.e + math.e ** 2)) + 0.25 * expected)
    # gradient: softmax - two-hot (0, .75, .25)
    p = np.exp(x) / np.exp(x).sum()
    close(mlo.get("dfl", reduction="sum").grad(x, np.array(1.25))["input"], p - np.array([0.0, 0.75, 0.25]))


def test_dfl_finite_differences():
    rng = np.random.default_rng(9)
    x, y = rng.normal(0, 2, (5, 7)), rng.uniform(0, 5.99, (5,))
    ct = rng.uniform(-1, 1, (5,))

    def np_dfl(x):
        lse = np.log(np.exp(x).sum(-1))
        left = np.floor(y).astype(int)
        take = lambda i: np.take_along_axis(x, i[:, None], -1)[:, 0] - lse
        return -((left + 1 - y) * take(left) + (y - left) * take(left + 1))

    g = mlo.get("dfl", reduction="none").vjp(ct, x, y)["input"]
    h = 1e-5
    for _ in range(3):
        d = rng.uniform(-1, 1, x.shape)
        fd = (np.sum(ct * np_dfl(x + h * d)) - np.sum(ct * np_dfl(x - h * d))) / (2 * h)
        np.testing.assert_allclose(float(np.sum(g * d)), fd, rtol=1e-7)


@pytest.mark.parametrize("dtype", ("float32", "float64"))
def test_dfl_huge_and_masked_logits(dtype):
    # huge logits: bin 1 dominates by 1e4; loss of target 0.5 is 0.5 * 1e4 (bin 0) + 0.5 * 0 (bin 1), ~exactly
    x = native("torch", [[0.0, 1e4, 0.0, 0.0]], dtype)
    value, grads = mlo.get("dfl", reduction="sum").value_and_grad(x, native("torch", [0.5], dtype))
    close(value, 5e3, rtol=1e-6)
    close(grads["input"], [[-0.5, 0.5, 0.0, 0.0]], atol=1e-6)
    # a -inf (masked) bin with zero weight: integer target 1 never reads bin 2's -inf
    x = native("torch", [[0.0, 1.0, -math.inf, 0.5]], dtype)
    value, grads = mlo.get("dfl", reduction="sum").value_and_grad(x, native("torch", [1.0], dtype))
    ref = F.cross_entropy(torch.tensor([[0.0, 1.0, -math.inf, 0.5]], dtype=torch.float64), torch.tensor([1]))
    close(value, float(ref), rtol=1e-6)
    assert np.isfinite(to_numpy(grads["input"])).all() and to_numpy(grads["input"])[0, 2] == 0.0


def test_dfl_validation():
    x = np.zeros((3, 5))
    with pytest.raises(ValueError, match=r"`target` must hold bin positions in \[0, 4\).*4\.0"):
        mlo.dfl_loss(x, np.array([0.5, 4.0, 1.0]))
    with pytest.raises(ValueError, match=r"`target`.*-0\.5"):
        mlo.dfl_loss(x, np.array([0.5, -0.5, 1.0]))
    with pytest.raises(ValueError, match=r"`target`.*nan"):
        mlo.dfl_loss(x, np.array([0.5, np.nan, 1.0]))
    with pytest.raises(ValueError, match=r"`target` must have shape \(3,\)"):
        mlo.dfl_loss(x, np.zeros((3, 5)))
    with pytest.raises(ValueError, match=r"`input` must have a number of bins.*at least 2; got 1"):
        mlo.dfl_loss(np.zeros((3, 1)), np.zeros(3))
    with pytest.raises(TypeError, match="`target`"):
        mlo.dfl_loss(x, np.array([0, 1, 2]))
