"""Segmentation losses against independent references.

References written in this file: segmentation_models_pytorch's DiceLoss /
JaccardLoss / TverskyLoss / MCCLoss formulas and Berman et al.'s Lovász code
(loops, boolean indexing of ignored pixels), in PyTorch with autograd; the
generalized Dice of Sudre et al. with MONAI's weight rule in NumPy;
hand-computed small cases; float64 finite differences of those formulas.
"""

from __future__ import annotations

import numpy as np
import pytest

import mithril_losses as mlo

from conftest import installed, to_numpy

torch = pytest.importorskip("torch")
F = torch.nn.functional

OVERLAP = ("dice", "jaccard", "tversky", "focal_tversky", "mcc", "generalized_dice")
ALL = OVERLAP + ("lovasz_hinge", "lovasz_softmax")


def close(actual, expected, rtol=1e-10, atol=1e-12):
    np.testing.assert_allclose(to_numpy(actual), np.asarray(expected, dtype=np.float64), rtol=rtol, atol=atol)


# --------------------------------------------------------------------------- torch references (smp / Berman)


def smp_prepare(x, y, mode, from_logits, ignore_index):
    """smp's DiceLoss.forward up to compute_score: (y_pred, y_true) as (N, C, P)."""
    if from_logits:
        x = x.log_softmax(dim=1).exp() if mode == "multiclass" else F.logsigmoid(x).exp()
    bs = y.shape[0]
    if mode == "binary":
        y, x = y.reshape(bs, 1, -1), x.reshape(bs, 1, -1)
        if ignore_index is not None:
            mask = y != ignore_index
            x, y = x * mask, y * mask
    elif mode == "multiclass":
        c = x.shape[1]
        y, x = y.reshape(bs, -1), x.reshape(bs, c, -1)
        if ignore_index is not None:
            mask = y != ignore_index
            x = x * mask.unsqueeze(1)
            y = F.one_hot((y * mask).to(torch.long), c).permute(0, 2, 1) * mask.unsqueeze(1)
        else:
            y = F.one_hot(y, c).permute(0, 2, 1)
    else:
        c = x.shape[1]
        y, x = y.reshape(bs, c, -1), x.reshape(bs, c, -1)
        if ignore_index is not None:
            mask = y != ignore_index
            x, y = x * mask, y * mask
    return x, y.to(x.dtype)


def smp_loss(name, x, y, *, mode="multiclass", from_logits=True, ignore_index=None, smooth=0.0, eps=1e-7,
             alpha=0.5, beta=0.5, gamma=0.75, per_image=False):
    """Unreduced loss per class (smp's, before its mean) from the smp formulas."""
    p, t = smp_prepare(x, y, mode, from_logits, ignore_index)
    dims = (2,) if per_image else (0, 2)
    inter = torch.sum(p * t, dim=dims)
    if name == "dice":
        score = (2.0 * inter + smooth) / (torch.sum(p + t, dim=dims) + smooth).clamp_min(eps)
        loss = 1.0 - score
    elif name == "jaccard":
        union = torch.sum(p + t, dim=dims) - inter
        loss = 1.0 - (inter + smooth) / (union + smooth).clamp_min(eps)
    else:
        fp = torch.sum(p * (1.0 - t), dim=dims)
        fn = torch.sum((1 - p) * t, dim=dims)
        score = (inter + smooth) / (inter + alpha * fp + beta * fn + smooth).clamp_min(eps)
        loss = 1.0 - score if name == "tversky" else (1.0 - score) ** gamma
    loss = loss * (t.sum(dims) > 0).to(loss.dtype)
    return loss[..., 0] if mode == "binary" else loss


def smp_mcc(p, t, eps=1e-5):
    """smp MCCLoss.forward (binary, probabilities, one global value)."""
    bs = t.shape[0]
    t, p = t.view(bs, 1, -1), p.view(bs, 1, -1)
    tp = torch.sum(p * t) + eps
    tn = torch.sum((1 - p) * (1 - t)) + eps
    fp = torch.sum(p * (1 - t)) + eps
    fn = torch.sum((1 - p) * t) + eps
    num = tp * tn - fp * fn
    den = torch.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    return 1.0 - num.sum() / den.sum()


def lovasz_grad(gt_sorted):
    p = len(gt_sorted)
    gts = gt_sorted.sum()
    intersection = gts - gt_sorted.double().cumsum(0)
    union = gts + (1 - gt_sorted).double().cumsum(0)
    jaccard = 1.0 - intersection / union
    if p > 1:
        jaccard[1:p] = jaccard[1:p] - jaccard[0:-1]
    return jaccard


def berman_hinge_flat(logits, labels):
    if len(labels) == 0:
        return logits.sum() * 0.0
    signs = 2.0 * labels.double() - 1.0
    errors = 1.0 - logits * signs
    errors_sorted, perm = torch.sort(errors, dim=0, descending=True)
    return torch.dot(F.relu(errors_sorted), lovasz_grad(labels[perm]).double())


def berman_hinge(logits, labels, per_image, ignore=None):
    def flat(lg, lb):
        lg, lb = lg.reshape(-1), lb.reshape(-1)
        if ignore is not None:
            keep = lb != ignore
            lg, lb = lg[keep], lb[keep]
        return berman_hinge_flat(lg, lb)
    if per_image:
        return torch.stack([flat(lg, lb) for lg, lb in zip(logits, labels)])
    return flat(logits, labels)


def berman_softmax_flat(probas, labels, classes="present"):
    if probas.numel() == 0:
        return probas.sum() * 0.0
    losses = []
    for c in range(probas.size(1)):
        fg = (labels == c).double()
        if classes == "present" and fg.sum() == 0:
            continue
        errors = (fg - probas[:, c]).abs()
        errors_sorted, perm = torch.sort(errors, 0, descending=True)
        losses.append(torch.dot(errors_sorted, lovasz_grad(fg[perm])))
    return torch.stack(losses).mean() if losses else probas.sum() * 0.0


def berman_softmax(probas, labels, classes="present", per_image=False, ignore=None):
    def flat(pr, lb):  # pr (N, C, ...), lb (N, ...)
        c = pr.shape[1]
        pr = pr.movedim(1, -1).reshape(-1, c)
        lb = lb.reshape(-1)
        if ignore is not None:
            keep = lb != ignore
            pr, lb = pr[keep], lb[keep]
        return berman_softmax_flat(pr, lb, classes)
    if per_image:
        return torch.stack([flat(p.unsqueeze(0), l.unsqueeze(0)) for p, l in zip(probas, labels)])
    return flat(probas, labels)


def torch_value_grad(fn, x, ct):
    xt = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    v = fn(xt)
    (g,) = torch.autograd.grad(v, xt, torch.as_tensor(ct, dtype=torch.float64))
    return v.detach().numpy(), g.numpy()


def check_against(name, fn, x, y, rtol=1e-9, **options):
    loss = mlo.get(name, reduction="none", **options)
    value = to_numpy(loss(x, y))
    ct = np.random.default_rng(3).uniform(0.5, 1.5, value.shape)
    ref_v, ref_g = torch_value_grad(fn, x, ct)
    close(value, ref_v, rtol=rtol, atol=1e-12)
    close(loss.vjp(ct, x, y)["input"], ref_g, rtol=rtol, atol=1e-12)


def data(rng, mode, shape=(2, 3, 4, 5)):
    x = rng.normal(0.0, 1.5, shape)
    if mode == "multiclass":
        y = rng.integers(0, shape[1], (shape[0],) + shape[2:])
    else:
        y = (rng.random(shape) < 0.4).astype(np.float64)
    return x, y


# --------------------------------------------------------------------------- registry


def test_registered_names_and_aliases():
    assert set(ALL) <= set(mlo.available(family="segmentation"))
    for alias, name in [("dice_loss", "dice"), ("iou", "jaccard"), ("jaccard_loss", "jaccard"),
                        ("tversky_loss", "tversky"), ("focal_tversky_loss", "focal_tversky"),
                        ("mcc_loss", "mcc"), ("generalized_dice_loss", "generalized_dice"),
                        ("lovasz_hinge_loss", "lovasz_hinge"), ("lovasz_softmax_loss", "lovasz_softmax")]:
        assert mlo.get(alias).spec is mlo.get(name).spec
    for name in ALL:
        loss = mlo.get(name)
        assert loss.inputs == ("input", "target") and loss.differentiable == ("input",)
    assert mlo.get("tversky").options["alpha"] == 0.5 and mlo.get("tversky").options["beta"] == 0.5
    assert callable(mlo.dice_loss) and callable(mlo.jaccard_loss_gradient) and callable(mlo.lovasz_softmax_loss)


# --------------------------------------------------------------------------- smp formulas


@pytest.mark.parametrize("name", ["dice", "jaccard", "tversky", "focal_tversky"])
@pytest.mark.parametrize("mode", ["multiclass", "multilabel", "binary"])
def test_overlap_matches_smp(name, mode):
    rng = np.random.default_rng(hash((name, mode)) % 2**32)
    x, y = data(rng, mode)
    extra = {"alpha": 0.3, "beta": 0.7} if name in ("tversky", "focal_tversky") else {}
    for opts in ({}, {"smooth": 1.0, "per_image": True}, {"from_logits": False}):
        xx = x
        if opts.get("from_logits") is False:
            xx = (F.softmax(torch.tensor(x), dim=1) if mode == "multiclass" else torch.sigmoid(torch.tensor(x))).numpy()
        check_against(name, lambda t: smp_loss(name, t, torch.tensor(y), mode=mode, **extra, **opts), xx, y,
                      mode=mode, **extra, **opts)


@pytest.mark.parametrize("mode", ["multiclass", "binary", "multilabel"])
def test_ignore_index_matches_smp(mode):
    rng = np.random.default_rng(7)
    x, y = data(rng, mode)
    ignore = -1
    y = np.where(rng.random(y.shape) < 0.3, ignore, y).astype(y.dtype)
    for name in ("dice", "jaccard", "tversky"):
        check_against(name, lambda t: smp_loss(name, t, torch.tensor(y), mode=mode, ignore_index=ignore),
                      x, y, mode=mode, ignore_index=ignore)


def test_empty_class_is_zero_and_mean_is_smp_mean():
    # class 2 never appears: its loss and gradient are 0, and the mean still divides by 3 classes
    x = np.random.default_rng(0).normal(size=(2, 3, 4))
    y = np.array([[0, 1, 1, 0], [1, 0, 0, 1]])
    per_class = to_numpy(mlo.get("dice", reduction="none")(x, y))
    assert per_class[2] == 0.0
    ref = smp_loss("dice", torch.tensor(x), torch.tensor(y))
    close(mlo.get("dice")(x, y), ref.mean().item())


def test_hand_computed_binary_cases():
    p = np.array([[0.9, 0.2, 0.6, 0.1]])
    t = np.array([[1.0, 0.0, 1.0, 0.0]])
    # I = 1.5, Sp = 1.8, St = 2
    close(mlo.get("dice", mode="binary", from_logits=False)(p, t), 1 - 3.0 / 3.8)
    close(mlo.get("iou", mode="binary", from_logits=False)(p, t), 1 - 1.5 / 2.3)
    # FP = 0.3, FN = 0.5: T = 1.5 / (1.5 + 0.3 * 0.3 + 0.7 * 0.5)
    tv = 1.5 / (1.5 + 0.09 + 0.35)
    close(mlo.get("tversky", mode="binary", from_logits=False, alpha=0.3, beta=0.7)(p, t), 1 - tv)
    close(mlo.get("focal_tversky", mode="binary", from_logits=False, alpha=0.3, beta=0.7, gamma=2.0)(p, t),
          (1 - tv) ** 2)
    # perfect prediction: every overlap loss is 0 with a zero gradient
    for name in ("dice", "jaccard", "tversky", "focal_tversky"):
        loss = mlo.get(name, mode="binary", from_logits=False)
        v, g = loss.value_and_grad(t, t)
        close(v, 0.0)
        assert np.all(np.isfinite(to_numpy(g["input"])))
    close(mlo.get("focal_tversky", mode="binary", from_logits=False).grad(t, t)["input"], np.zeros_like(t))


def test_mcc_matches_smp():
    rng = np.random.default_rng(5)
    p = rng.uniform(0.02, 0.98, (3, 1, 4, 4))
    t = (rng.random(p.shape) < 0.5).astype(np.float64)
    check_against("mcc", lambda a: smp_mcc(a, torch.tensor(t)), p, t, mode="binary", from_logits=False)
    # hand-computed: hard perfect / inverted predictions
    y = np.array([[1.0, 0.0, 1.0, 0.0]])
    close(mlo.get("mcc", mode="binary", from_logits=False)(y, y), 0.0, atol=1e-5)
    close(mlo.get("mcc", mode="binary", from_logits=False)(1.0 - y, y), 2.0, atol=1e-5)


def test_mcc_multiclass_per_class_is_binary_mcc_of_each_class():
    rng = np.random.default_rng(6)
    x, y = data(rng, "multiclass")
    out = to_numpy(mlo.get("mcc", reduction="none")(x, y))
    p = F.softmax(torch.tensor(x), dim=1)
    for c in range(3):
        ref = smp_mcc(p[:, c], torch.tensor((y == c).astype(np.float64)))
        close(out[c], ref.item())


def ref_generalized_dice(p, t, smooth=0.0, eps=1e-7):
    """Sudre et al.: w_c = 1 / (sum t_c)^2, absent classes -> the largest present weight (MONAI)."""
    i, sp, st = (p * t).sum(axis=(0, 2)), p.sum(axis=(0, 2)), t.sum(axis=(0, 2))
    w = np.where(st > 0, 1.0 / np.where(st > 0, st, 1.0) ** 2, 0.0)
    w = np.where(st > 0, w, w.max() if w.max() > 0 else 1.0)
    return 1.0 - (2.0 * (w * i).sum() + smooth) / max((w * (sp + st)).sum() + smooth, eps)


def test_generalized_dice_reference_and_finite_differences():
    rng = np.random.default_rng(8)
    x = rng.normal(size=(2, 4, 6))
    y = rng.integers(0, 3, (2, 6))  # class 3 absent
    def probs(z):
        e = np.exp(z - z.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)
    onehot = np.moveaxis(np.eye(4)[y], -1, 1)
    ref = lambda z: ref_generalized_dice(probs(z), onehot, smooth=0.5)
    loss = mlo.get("generalized_dice", smooth=0.5)
    close(loss(x, y), ref(x))
    g = to_numpy(loss.grad(x, y)["input"])
    h = 1e-6
    fd = np.zeros_like(x)
    for idx in np.ndindex(x.shape):
        d = np.zeros_like(x)
        d[idx] = h
        fd[idx] = (ref(x + d) - ref(x - d)) / (2 * h)
    close(g, fd, rtol=1e-6, atol=1e-9)
    # equal class volumes: generalized Dice over one global class set equals the class-weighted Dice
    t = np.array([[1.0, 0.0, 1.0, 0.0]])
    p = np.array([[0.9, 0.2, 0.6, 0.1]])
    close(mlo.get("generalized_dice", mode="binary", from_logits=False)(p, t), 1 - 3.0 / 3.8)


# --------------------------------------------------------------------------- lovasz


def hinge_data(rng, shape):
    y = (rng.random(shape) < 0.5).astype(np.float64)
    e = rng.uniform(-1.5, 2.5, shape)
    e = np.where(np.abs(e) < 0.05, 0.5, e)
    return (1.0 - e) * (2.0 * y - 1.0), y


@pytest.mark.parametrize("per_image", [False, True])
def test_lovasz_hinge_matches_berman(per_image):
    x, y = hinge_data(np.random.default_rng(11), (3, 4, 5))
    check_against("lovasz_hinge", lambda t: berman_hinge(t, torch.tensor(y), per_image), x, y, per_image=per_image)
    y2 = np.where(np.random.default_rng(12).random(y.shape) < 0.25, 255.0, y)
    check_against("lovasz_hinge", lambda t: berman_hinge(t, torch.tensor(y2), per_image, ignore=255), x, y2,
                  per_image=per_image, ignore_index=255)


def test_lovasz_hinge_hand_computed():
    # labels (1, 0), logits (0.5, 0.2): errors 0.5, 1.2; sorted desc: (1.2 [gt 0], 0.5 [gt 1]);
    # lovasz_grad: J = 1 - (1 - 0)/(1 + 1) = 0.5, then 1 - 0/(1 + 1) = 1 -> (0.5, 0.5); loss = 0.85
    x, y = np.array([[0.5, 0.2]]), np.array([[1.0, 0.0]])
    loss = mlo.get("lovasz_hinge")
    close(loss(x, y), 0.85)
    close(loss.grad(x, y)["input"], [[-0.5, 0.5]])
    # everything ignored: 0 with a zero gradient
    v, g = mlo.get("lovasz_hinge", ignore_index=255).value_and_grad(x, np.full_like(y, 255.0))
    close(v, 0.0)
    close(g["input"], np.zeros_like(x))


@pytest.mark.parametrize("opts", [{}, {"per_image": True}, {"classes": "all"}, {"ignore_index": -1},
                                  {"from_logits": False, "per_image": True, "ignore_index": -1}])
def test_lovasz_softmax_matches_berman(opts):
    rng = np.random.default_rng(13)
    x = rng.normal(0.0, 1.5, (2, 4, 3, 5))
    y = rng.integers(0, 3, (2, 3, 5))  # class 3 absent: "present" leaves it out
    if "ignore_index" in opts:
        y = np.where(rng.random(y.shape) < 0.25, -1, y)
    from_logits = opts.get("from_logits", True)
    if not from_logits:
        x = F.softmax(torch.tensor(x), dim=1).numpy()
    ref = lambda t: berman_softmax(t.softmax(dim=1) if from_logits else t, torch.tensor(y),
                                   classes=opts.get("classes", "present"), per_image=opts.get("per_image", False),
                                   ignore=opts.get("ignore_index"))
    check_against("lovasz_softmax", ref, x, y, **opts)


# --------------------------------------------------------------------------- edges and errors


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", ALL)
def test_huge_logits_stay_finite(name, dtype):
    mode = {"lovasz_hinge": {}, "lovasz_softmax": {}}.get(name, {"mode": "multiclass"})
    x = (np.array([[[1e4, -1e9], [-1e4, 1e9], [0.0, -np.inf]]])).astype(dtype)  # (1, 3, 2)
    y = np.array([[0, 1]])
    if name == "lovasz_hinge":
        x, y = x[:, :2], (np.array([[[1.0, 0.0], [0.0, 1.0]]]))
    v, g = mlo.get(name, **mode).value_and_grad(x, y)
    assert np.all(np.isfinite(to_numpy(v))) and np.all(np.isfinite(to_numpy(g["input"])))
    assert g["input"].dtype == dtype and v.dtype == dtype


def test_probabilities_exactly_zero_and_one():
    p = np.array([[[1.0, 0.0], [0.0, 1.0]]])
    y = np.array([[0, 1]])
    for name in OVERLAP:
        v, g = mlo.get(name, from_logits=False).value_and_grad(p, y)
        assert np.all(np.isfinite(to_numpy(g["input"])))
        close(v, 0.0, atol=1e-4)


def test_all_ignored_is_zero_with_zero_gradient():
    x = np.random.default_rng(1).normal(size=(2, 3, 4))
    y = np.full((2, 4), -1)
    for name in ("dice", "jaccard", "tversky", "focal_tversky", "lovasz_softmax"):
        v, g = mlo.get(name, ignore_index=-1).value_and_grad(x, y)
        close(v, 0.0)
        close(g["input"], np.zeros_like(x))


def test_inputs_not_modified():
    rng = np.random.default_rng(2)
    x, y = data(rng, "multiclass")
    x0, y0 = x.copy(), y.copy()
    for name in ALL:
        if name == "lovasz_hinge":
            continue
        mlo.get(name, ignore_index=0).value_and_grad(x, y)
    xb, yb = hinge_data(rng, (2, 5))
    xb0 = xb.copy()
    mlo.get("lovasz_hinge").value_and_grad(xb, yb)
    assert np.array_equal(x, x0) and np.array_equal(y, y0) and np.array_equal(xb, xb0)


def test_errors():
    x = np.zeros((2, 3, 4))
    with pytest.raises(ValueError, match="target.*class indices in \\[0, 3\\).*got 3"):
        mlo.get("dice")(x, np.full((2, 4), 3))
    with pytest.raises(ValueError, match="`target`.*shape"):
        mlo.get("dice")(x, np.zeros((2, 5), dtype=np.int64))
    with pytest.raises(TypeError, match="`target` must hold integer class indices"):
        mlo.get("jaccard")(x, np.zeros((2, 4)))
    with pytest.raises(ValueError, match="`target` must hold 0 or 1.*got a value of 2"):
        mlo.get("dice", mode="binary")(np.zeros((2, 4)), np.full((2, 4), 2.0))
    with pytest.raises(ValueError, match="same shape"):
        mlo.get("dice", mode="multilabel")(x, np.zeros((2, 3, 5)))
    with pytest.raises(ValueError, match="`input` must be probabilities"):
        mlo.get("dice", from_logits=False)(x + 2.0, np.zeros((2, 4), dtype=np.int64))
    with pytest.raises(ValueError, match="mode"):
        mlo.get("dice", mode="multi")
    with pytest.raises(ValueError, match="smooth"):
        mlo.get("jaccard", smooth=-1.0)
    with pytest.raises(ValueError, match="classes"):
        mlo.get("lovasz_softmax", classes="some")
    with pytest.raises(ValueError, match="`target` must hold 0 or 1"):
        mlo.get("lovasz_hinge")(np.zeros((2, 4)), np.full((2, 4), -1.0))


@pytest.mark.skipif(not installed("jax"), reason="jax not installed")
def test_traces_under_jit():
    import jax
    import jax.numpy as jnp

    rng = np.random.default_rng(4)
    x, y = data(rng, "multiclass", (2, 3, 6))
    xb, yb = hinge_data(rng, (2, 6))
    for name in ALL:
        loss = mlo.get(name)
        a, b = (xb, yb) if name == "lovasz_hinge" else (x, y)
        fn = jax.jit(lambda u, v: loss.value_and_grad(u, v))
        v, g = fn(jnp.asarray(a), jnp.asarray(b))
        ref_v, ref_g = loss.value_and_grad(a, b)
        close(v, to_numpy(ref_v), rtol=1e-5, atol=1e-6)
        close(g["input"], to_numpy(ref_g["input"]), rtol=1e-4, atol=1e-6)
