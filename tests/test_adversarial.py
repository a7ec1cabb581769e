"""Adversarial (GAN) losses and the WGAN-GP gradient penalty against independent references.

PyTorch has none of these losses, so every expected number comes from outside
the code under test: the formulas written here in PyTorch and differentiated
by its autograd (``F.logsigmoid``, ``F.binary_cross_entropy_with_logits``,
``torch.relu``, ``torch.linalg.vector_norm``), NumPy formulas written here with
float64 finite differences, ``math`` at extreme logits, and hand-computed cases.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import mithril_losses as mlo

from conftest import native, to_numpy

torch = pytest.importorskip("torch")
F = torch.nn.functional

GENERATORS = ("vanilla_generator", "least_squares_generator", "wasserstein_generator", "hinge_generator")
DISCRIMINATORS = ("vanilla_discriminator", "least_squares_discriminator", "wasserstein_discriminator",
                  "hinge_discriminator")
ADVERSARIAL = GENERATORS + DISCRIMINATORS + ("gradient_penalty",)


def close(actual, expected, rtol=1e-12, atol=1e-12):
    np.testing.assert_allclose(to_numpy(actual) if not isinstance(actual, (float, list)) else actual,
                               np.asarray(expected, dtype=np.float64), rtol=rtol, atol=atol)


def tt(a, grad=False):
    return torch.tensor(np.asarray(a), dtype=torch.float64, requires_grad=grad)


# --------------------------------------------------------------------------
# references: the formulas written in PyTorch (unreduced)


def torch_formula(name, options):
    o = options
    if name == "vanilla_generator":
        if o.get("non_saturating", True):
            return lambda fake: -F.logsigmoid(fake)
        return lambda fake: torch.log(1.0 - torch.sigmoid(fake))  # literal log(1 - D(G(z))), moderate logits only
    if name == "vanilla_discriminator":
        return lambda real, fake: (F.binary_cross_entropy_with_logits(real, torch.ones_like(real), reduction="none")
                                   + F.binary_cross_entropy_with_logits(fake, torch.zeros_like(fake), reduction="none"))
    if name == "least_squares_generator":
        return lambda fake: 0.5 * (fake - o.get("target_real", 1.0)) ** 2
    if name == "least_squares_discriminator":
        return lambda real, fake: (0.5 * (real - o.get("target_real", 1.0)) ** 2
                                   + 0.5 * (fake - o.get("target_fake", 0.0)) ** 2)
    if name in ("wasserstein_generator", "hinge_generator"):
        return lambda fake: -fake
    if name == "wasserstein_discriminator":
        return lambda real, fake: fake - real
    if name == "hinge_discriminator":
        return lambda real, fake: torch.relu(1.0 - real) + torch.relu(1.0 + fake)
    if name == "gradient_penalty":
        def gp(gradients):
            norms = torch.linalg.vector_norm(gradients.reshape(gradients.shape[0], -1), dim=1)
            return o.get("penalty_weight", 10.0) * (norms - o.get("target_norm", 1.0)) ** 2
        return gp
    raise ValueError(name)


def make(name, rng, shape=(4, 3)):
    if name == "gradient_penalty":
        return {"gradients": rng.normal(size=shape) * rng.uniform(0.1, 1.0, shape[:1] + (1,) * (len(shape) - 1))}
    if name == "hinge_discriminator":  # away from the kinks r = 1, f = -1
        real, fake = rng.uniform(-2, 4, shape), rng.uniform(-4, 2, shape)
        return {"real": np.where(np.abs(real - 1) < 0.1, real + 0.3, real),
                "fake": np.where(np.abs(fake + 1) < 0.1, fake - 0.3, fake)}
    scale = 2.0 if name != "vanilla_generator" else 1.5  # the literal saturating formula wants moderate logits
    fake = rng.normal(0, scale, shape)
    return {"fake": fake} if name in GENERATORS else {"real": rng.normal(0, scale, shape), "fake": fake}


OPTION_CASES = [
    ("vanilla_generator", {}), ("vanilla_generator", {"non_saturating": False}),
    ("vanilla_discriminator", {}),
    ("least_squares_generator", {}), ("least_squares_generator", {"target_real": 0.0}),
    ("least_squares_discriminator", {}), ("least_squares_discriminator", {"target_real": 1.0, "target_fake": -1.0}),
    ("wasserstein_generator", {}), ("wasserstein_discriminator", {}),
    ("hinge_generator", {}), ("hinge_discriminator", {}),
    ("gradient_penalty", {}), ("gradient_penalty", {"target_norm": 0.0, "penalty_weight": 1.0}),
    ("gradient_penalty", {"target_norm": 2.0, "penalty_weight": 0.5}),
]


def _torch_reduced(fn, arrays, wrt, reduction, weight, ct):
    t = {k: tt(v, k in wrt) for k, v in arrays.items()}
    per = fn(**t)
    if weight is not None:
        w = tt(weight).reshape(tuple(weight.shape) + (1,) * (per.ndim - weight.ndim))
        per_w = per * w
    else:
        w, per_w = None, per
    if reduction == "none":
        value = per_w
    elif reduction == "sum":
        value = per_w.sum()
    else:
        value = per_w.sum() / (torch.broadcast_to(w, per.shape).sum() if w is not None else per.numel())
    grads = torch.autograd.grad(value, [t[k] for k in wrt], tt(ct))
    return value.detach().numpy(), {k: g.numpy() for k, g in zip(wrt, grads)}


# --------------------------------------------------------------------------
# names and registration


def test_registered_in_the_adversarial_family():
    assert mlo.available(family="adversarial") == sorted(ADVERSARIAL)
    for name in ADVERSARIAL:
        assert mlo.get(name).family == "adversarial"


@pytest.mark.parametrize("alias, name", [
    ("ns_vanilla_generator_loss", "vanilla_generator"), ("ns_vanilla_discriminator_loss", "vanilla_discriminator"),
    ("lsgan_generator", "least_squares_generator"), ("lsgan_discriminator", "least_squares_discriminator"),
    ("wgan_generator", "wasserstein_generator"), ("wgan_discriminator", "wasserstein_discriminator"),
    ("wgan_critic", "wasserstein_discriminator"), ("wasserstein_critic", "wasserstein_discriminator"),
    ("hinge_gan_generator", "hinge_generator"), ("hinge_gan_discriminator", "hinge_discriminator"),
    ("wgan_gp", "gradient_penalty"),
])
def test_aliases(alias, name):
    assert mlo.get(alias).name == name


ARTIFEX_NAMES = ("vanilla_generator_loss", "vanilla_discriminator_loss", "least_squares_generator_loss",
                 "least_squares_discriminator_loss", "wasserstein_generator_loss", "wasserstein_discriminator_loss",
                 "hinge_generator_loss", "hinge_discriminator_loss", "ns_vanilla_generator_loss",
                 "ns_vanilla_discriminator_loss", "gradient_penalty_loss")


def test_artifex_functional_names_resolve():
    for fname in ARTIFEX_NAMES:
        assert callable(getattr(mlo, fname)) and callable(getattr(mlo, f"{fname}_gradient")), fname
    # Artifex's docstring examples (scores as raw values for the score-based losses)
    close(mlo.wasserstein_discriminator_loss(np.array([1.0, 0.8, 0.6]), np.array([-0.5, 0.2, -0.3])), -1.0)
    close(mlo.wasserstein_generator_loss(np.array([-0.5, 0.2, -0.3])), 0.2)
    close(mlo.hinge_discriminator_loss(np.array([0.9, 0.8, 0.7]), np.array([-0.5, -0.2, -0.3])),
          np.mean([0.1 + 0.5, 0.2 + 0.8, 0.3 + 0.7]))
    # Artifex's LSGAN losses: 0.5 (D(G(z)) - c)^2 and 0.5 (D(x) - b)^2 + 0.5 (D(G(z)) - a)^2
    real, fake = np.array([0.9, 0.8, 0.7]), np.array([0.3, 0.7, 0.1])
    close(mlo.least_squares_generator_loss(fake), np.mean(0.5 * (fake - 1.0) ** 2))
    close(mlo.least_squares_discriminator_loss(real, fake), np.mean(0.5 * (real - 1.0) ** 2 + 0.5 * fake ** 2))
    # Artifex's ns_vanilla_generator_loss: softplus(-x); its discriminator: softplus(-r) + softplus(f)
    x = np.array([-1.0, 0.5, -0.3])
    close(mlo.ns_vanilla_generator_loss(x), np.mean(np.logaddexp(0.0, -x)))
    r, f = np.array([2.0, 1.5, 1.0]), np.array([-1.0, -0.5, -0.3])
    close(mlo.ns_vanilla_discriminator_loss(r, f), np.mean(np.logaddexp(0.0, -r) + np.logaddexp(0.0, f)))


def test_inputs_and_functional_gradients():
    for name in GENERATORS:
        loss = mlo.get(name)
        assert loss.inputs == ("fake",) and loss.differentiable == ("fake",)
    for name in DISCRIMINATORS:
        loss = mlo.get(name)
        assert loss.inputs == ("real", "fake") and loss.differentiable == ("real", "fake")
    assert mlo.get("gradient_penalty").inputs == ("gradients",)
    r, f = np.array([0.3, -1.2]), np.array([0.5, 2.0])
    g = mlo.vanilla_discriminator_loss_gradient(r, f, reduction="sum")  # both sides: a dict
    assert set(g) == {"real", "fake"}
    close(g["real"], -1 / (1 + np.exp(r)))
    close(g["fake"], 1 / (1 + np.exp(-f)))
    g = mlo.vanilla_generator_loss_gradient(f, reduction="sum")  # one input: an array
    close(g, -1 / (1 + np.exp(f)))


def test_option_defaults_and_config():
    assert mlo.get("vanilla_generator").options == {"non_saturating": True}
    assert mlo.get("least_squares_generator").options == {"target_real": 1.0}
    assert mlo.get("least_squares_discriminator").options == {"target_real": 1.0, "target_fake": 0.0}
    assert mlo.get("gradient_penalty").options == {"target_norm": 1.0, "penalty_weight": 10.0}
    for name in ("wasserstein_generator", "wasserstein_discriminator", "hinge_generator", "hinge_discriminator",
                 "vanilla_discriminator"):
        assert mlo.get(name).options == {}
    cfg = mlo.get("wgan_gp", target_norm=0.0, penalty_weight=2, reduction="sum").to_config()
    assert cfg == {"name": "gradient_penalty", "reduction": "sum", "target_norm": 0.0, "penalty_weight": 2.0}
    assert mlo.from_config(cfg).options == {"target_norm": 0.0, "penalty_weight": 2.0}
    cfg = mlo.get("vanilla_generator", non_saturating=False).to_config()
    assert mlo.from_config(cfg).options == {"non_saturating": False}


# --------------------------------------------------------------------------
# PyTorch autograd of the formulas: values and gradients of every input, reductions, weights


@pytest.mark.parametrize("name, options", OPTION_CASES)
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("weighted", [False, True])
def test_torch_autograd_of_the_formula(name, options, reduction, weighted):
    rng = np.random.default_rng(1)
    shape = (2, 3, 4) if name == "gradient_penalty" else (3, 4)
    arrays = make(name, rng, shape)
    loss = mlo.get(name, reduction=reduction, **options)
    loss_shape = np.shape(mlo.get(name, reduction="none", **options)(**arrays))
    weight = None
    if weighted:  # per-sample weights (the leading axis) for a mean, per-element ones otherwise
        weight = rng.uniform(0.5, 2.0, loss_shape[:1] if reduction == "mean" else loss_shape)
    extra = {} if weight is None else {"weight": weight}
    ct = rng.uniform(-1.0, 1.0, np.shape(loss(**arrays, **extra)))
    ref, ref_grads = _torch_reduced(torch_formula(name, options), arrays, loss.differentiable, reduction, weight, ct)
    close(loss(**arrays, **extra), ref)
    grads = loss.vjp(ct, **arrays, **extra)
    assert set(grads) == set(loss.differentiable)
    for k in loss.differentiable:
        close(grads[k], ref_grads[k])


def test_pair_mean_is_mean_real_plus_mean_fake():
    rng = np.random.default_rng(2)
    r, f = rng.normal(size=6), rng.normal(size=6)
    rt, ft = tt(r), tt(f)
    ref = (F.binary_cross_entropy_with_logits(rt, torch.ones(6, dtype=torch.float64))
           + F.binary_cross_entropy_with_logits(ft, torch.zeros(6, dtype=torch.float64))).item()
    close(mlo.vanilla_discriminator_loss(r, f), ref)
    close(mlo.hinge_discriminator_loss(r, f), np.mean(np.maximum(0, 1 - r)) + np.mean(np.maximum(0, 1 + f)))
    close(mlo.least_squares_discriminator_loss(r, f), np.mean(0.5 * (r - 1) ** 2) + np.mean(0.5 * f ** 2))
    close(mlo.wasserstein_discriminator_loss(r, f), np.mean(f) - np.mean(r))


# --------------------------------------------------------------------------
# NumPy formulas written here, and float64 finite differences


def _sp(z):
    return np.logaddexp(0.0, z)


def ref_unreduced(name, a, o):
    if name == "vanilla_generator":
        f = a["fake"]
        return _sp(-f) if o.get("non_saturating", True) else np.log(1 - 1 / (1 + np.exp(-f)))
    if name == "vanilla_discriminator":
        return -np.log(1 / (1 + np.exp(-a["real"]))) - np.log(1 - 1 / (1 + np.exp(-a["fake"])))
    if name == "least_squares_generator":
        return 0.5 * (a["fake"] - o.get("target_real", 1.0)) ** 2
    if name == "least_squares_discriminator":
        return 0.5 * (a["real"] - o.get("target_real", 1.0)) ** 2 + 0.5 * (a["fake"] - o.get("target_fake", 0.0)) ** 2
    if name in ("wasserstein_generator", "hinge_generator"):
        return -a["fake"]
    if name == "wasserstein_discriminator":
        return a["fake"] - a["real"]
    if name == "hinge_discriminator":
        return np.maximum(0, 1 - a["real"]) + np.maximum(0, 1 + a["fake"])
    if name == "gradient_penalty":
        g = a["gradients"]
        norms = np.sqrt(np.sum(g.reshape(g.shape[0], -1) ** 2, axis=1)) if g.ndim > 1 else np.abs(g)
        return o.get("penalty_weight", 10.0) * (norms - o.get("target_norm", 1.0)) ** 2
    raise ValueError(name)


@pytest.mark.parametrize("name, options", OPTION_CASES)
def test_value_and_finite_differences(name, options):
    rng = np.random.default_rng(3)
    a = make(name, rng, (3, 2, 2) if name == "gradient_penalty" else (3, 4))
    loss = mlo.get(name, reduction="none", **options)
    close(loss(**a), ref_unreduced(name, a, options))
    ct = rng.uniform(-1, 1, np.shape(loss(**a)))
    grads = loss.vjp(ct, **a)
    h = 1e-5
    for k in loss.differentiable:
        num = np.zeros_like(a[k])
        for i in np.ndindex(a[k].shape):
            up, dn = a[k].copy(), a[k].copy()
            up[i] += h
            dn[i] -= h
            num[i] = np.sum(ct * (ref_unreduced(name, {**a, k: up}, options)
                                  - ref_unreduced(name, {**a, k: dn}, options))) / (2 * h)
        close(grads[k], num, 1e-7, 1e-8)


@pytest.mark.parametrize("name, options", OPTION_CASES)
def test_float32_close_to_float64(name, options):
    a = make(name, np.random.default_rng(4))
    a32 = {k: v.astype(np.float32) for k, v in a.items()}
    exact = {k: v.astype(np.float64) for k, v in a32.items()}
    loss = mlo.get(name, **options)
    value, grads = loss.value_and_grad(**a32)
    assert value.dtype == np.float32 and all(g.dtype == np.float32 for g in grads.values())
    close(value, np.mean(ref_unreduced(name, exact, options)), 2e-6, 1e-6)
    grads64 = loss.grad(**exact)
    for k in grads:
        close(grads[k], grads64[k], 2e-6, 2e-7)


# --------------------------------------------------------------------------
# hand-computed cases


def test_vanilla_by_hand():
    gen = mlo.get("vanilla_generator", reduction="none")
    x = np.array([0.0, 2.0])
    close(gen(x), [math.log(2.0), 0.12692801104297263])  # log(1 + e^-2)
    close(gen.grad(x)["fake"], [-0.5, -0.11920292202211755])  # -sigmoid(-2)
    sat = mlo.get("vanilla_generator", reduction="none", non_saturating=False)
    close(sat(x), [-math.log(2.0), -2.1269280110429727])  # log(1 - sigmoid(2)) = -log(1 + e^2)
    close(sat.grad(x)["fake"], [-0.5, -0.8807970779778823])  # -sigmoid(2)
    disc = mlo.get("vanilla_discriminator", reduction="none")
    close(disc(np.array([0.0]), np.array([0.0])), [2 * math.log(2.0)])
    g = disc.grad(np.array([2.0]), np.array([-2.0]))
    close(g["real"], [-0.11920292202211755])
    close(g["fake"], [0.11920292202211755])


def test_least_squares_by_hand():
    gen = mlo.get("least_squares_generator", reduction="none")
    close(gen(np.array([0.3, 2.0])), [0.245, 0.5])
    close(gen.grad(np.array([0.3, 2.0]))["fake"], [-0.7, 1.0])
    close(mlo.get("least_squares_generator", reduction="none", target_real=0.0)(np.array([0.3, -2.0])), [0.045, 2.0])
    disc = mlo.get("least_squares_discriminator", reduction="none")
    r, f = np.array([0.9, -1.0]), np.array([0.2, 1.0])
    close(disc(r, f), [0.025, 2.5])
    g = disc.grad(r, f)
    close(g["real"], [-0.1, -2.0])
    close(g["fake"], [0.2, 1.0])
    lsgan = mlo.get("least_squares_discriminator", reduction="none", target_real=1.0, target_fake=-1.0)
    close(lsgan(r, f), [0.005 + 0.72, 2.0 + 2.0])


def test_wasserstein_and_hinge_by_hand():
    r, f = np.array([0.5, 2.0, 1.0]), np.array([-2.0, 0.0, -1.0])
    w = mlo.get("wasserstein_discriminator", reduction="none")
    close(w(r, f), [-2.5, -2.0, -2.0])
    g = w.grad(r, f)
    close(g["real"], [-1.0, -1.0, -1.0])
    close(g["fake"], [1.0, 1.0, 1.0])
    h = mlo.get("hinge_discriminator", reduction="none")
    close(h(r, f), [0.5, 1.0, 0.0])
    g = h.grad(r, f)  # the last pair sits on both kinks: subgradient 0
    close(g["real"], [-1.0, 0.0, 0.0])
    close(g["fake"], [0.0, 1.0, 0.0])
    for name in ("wasserstein_generator", "hinge_generator"):
        loss = mlo.get(name, reduction="none")
        close(loss(f), [2.0, 0.0, 1.0])
        close(loss.grad(f)["fake"], [-1.0, -1.0, -1.0])


def test_gradient_penalty_by_hand():
    g = np.array([[3.0, 4.0], [0.0, 0.0], [0.6, 0.8]])
    gp = mlo.get("gradient_penalty", reduction="none")
    close(gp(g), [160.0, 10.0, 0.0])  # 10 (5 - 1)^2, 10 (0 - 1)^2, 10 (1 - 1)^2
    close(gp.grad(g)["gradients"], [[48.0, 64.0], [0.0, 0.0], [0.0, 0.0]])  # 2*10*4*(0.6, 0.8)
    close(mlo.gradient_penalty_loss(g), 170.0 / 3)
    zero_centred = mlo.get("gradient_penalty", reduction="none", target_norm=0.0, penalty_weight=1.0)
    close(zero_centred(g), [25.0, 0.0, 1.0])
    close(zero_centred.grad(g)["gradients"], 2 * g)
    # 1-D: one scalar gradient per sample, its norm is |g|
    g1 = np.array([-3.0, 0.5, 0.0])
    close(gp(g1), [40.0, 2.5, 10.0])
    close(gp.grad(g1)["gradients"], [-40.0, -10.0, 0.0])
    # per-sample engine weights
    w = np.array([1.0, 0.0, 3.0])
    close(mlo.get("gradient_penalty", reduction="sum")(g, weight=w), 160.0)


@pytest.mark.parametrize("shape", [(4,), (3, 7), (2, 3, 4, 5)])
def test_gradient_penalty_torch_autograd_with_zero_samples(shape):
    rng = np.random.default_rng(5)
    g = rng.normal(size=shape)
    g[1] = 0.0  # an all-zero sample
    ct = rng.uniform(-1, 1, shape[:1])
    ref, ref_grads = _torch_reduced(torch_formula("gradient_penalty", {}), {"gradients": g}, ("gradients",),
                                    "none", None, ct)
    loss = mlo.get("gradient_penalty", reduction="none")
    close(loss(g), ref)
    grad = loss.vjp(ct, g)["gradients"]
    close(grad, ref_grads["gradients"])  # torch's norm has the subgradient 0 at 0 too
    assert np.all(grad[1] == 0)


# --------------------------------------------------------------------------
# edges: huge logits, extreme penalty inputs, on every backend


def _sp_exact(z):
    return max(z, 0.0) + math.log1p(math.exp(-abs(z)))


def _sig_exact(z):
    return 1 / (1 + math.exp(-z)) if z >= 0 else math.exp(z) / (1 + math.exp(z))


BIG = [1e9, -1e9, 1e4, -1e4, 100.0, -100.0, 30.0, -30.0]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_vanilla_huge_logits(dtype):
    x = np.array(BIG, dtype=dtype)
    xs = [float(v) for v in x]
    tiny = 1e-300 if dtype == "float64" else 1e-37
    rtol = 1e-12 if dtype == "float64" else 1e-6
    for ns in (True, False):
        loss = mlo.get("vanilla_generator", reduction="none", non_saturating=ns)
        value, grad = loss(x), loss.grad(x)["fake"]
        assert value.dtype == dtype and np.all(np.isfinite(value)) and np.all(np.isfinite(grad))
        if ns:
            close(value, [_sp_exact(-v) for v in xs], rtol, tiny)
            close(grad, [-_sig_exact(-v) for v in xs], rtol, tiny)
        else:
            close(value, [-_sp_exact(v) for v in xs], rtol, tiny)
            close(grad, [-_sig_exact(v) for v in xs], rtol, tiny)
    disc = mlo.get("vanilla_discriminator", reduction="none")
    f = x[::-1].copy()
    value, grads = disc(x, f), disc.grad(x, f)
    assert np.all(np.isfinite(value)) and all(np.all(np.isfinite(g)) for g in grads.values())
    close(value, [_sp_exact(-a) + _sp_exact(b) for a, b in zip(xs, xs[::-1])], rtol, tiny)
    close(grads["real"], [-_sig_exact(-a) for a in xs], rtol, tiny)
    close(grads["fake"], [_sig_exact(b) for b in xs[::-1]], rtol, tiny)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_score_losses_huge_scores(dtype):
    x = np.array(BIG, dtype=dtype)
    xs = np.array([float(v) for v in x])
    f = x[::-1].copy()
    fs = xs[::-1]
    rtol = 1e-7 if dtype == "float32" else 1e-15  # one rounding of the sum
    close(mlo.get("wasserstein_discriminator", reduction="none")(x, f), fs - xs, rtol)
    close(mlo.get("hinge_discriminator", reduction="none")(x, f), np.maximum(0, 1 - xs) + np.maximum(0, 1 + fs), rtol)
    g = mlo.get("hinge_discriminator", reduction="none").grad(x, f)
    close(g["real"], np.where(xs < 1, -1.0, 0.0))
    close(g["fake"], np.where(fs > -1, 1.0, 0.0))
    ls = mlo.get("least_squares_discriminator", reduction="none")
    value = ls(x, f)
    assert np.all(np.isfinite(value))  # 0.5 (1e9 - 1)^2 = 5e17 fits float32
    close(value, 0.5 * (xs - 1) ** 2 + 0.5 * fs ** 2, 1e-6 if dtype == "float32" else 1e-15)


@pytest.mark.filterwarnings("ignore:overflow encountered")  # the huge sample's value is beyond the dtype
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_gradient_penalty_scaled_norm(dtype):
    small = 1e-25 if dtype == "float32" else 1e-200  # squares underflow to 0
    big = 1e19 if dtype == "float32" else 1e160  # squares overflow to inf
    g = np.array([[3 * small, 4 * small], [3 * big, 4 * big], [0.0, 0.0], [3.0, -4.0]], dtype=dtype)
    loss = mlo.get("gradient_penalty", reduction="none")
    value = loss(g)
    grad = loss.grad(g)["gradients"]
    assert value.dtype == dtype and grad.dtype == dtype
    # 10 (5e-25 - 1)^2 = 10; the huge sample's value is beyond the dtype's range; zero: 10; 10 (5 - 1)^2
    close(value[[0, 2, 3]], [10.0, 10.0, 160.0], 1e-6 if dtype == "float32" else 1e-14)
    assert value[1] == np.inf
    # 2 lambda (|g| - 1) g / |g|: the unit direction survives the underflow and the overflow of |g|^2
    expected = np.array([[-12.0, -16.0], [0.6 * 20 * 5 * big, 0.8 * 20 * 5 * big], [0.0, 0.0], [48.0, -64.0]])
    close(grad, expected, 1e-6 if dtype == "float32" else 1e-14, 0)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_edges_on_every_backend(backend, dtype):
    x = np.array([1e9, -1e9, 1e4, -1e4, 0.0], dtype=dtype)
    loss = mlo.get("vanilla_generator", reduction="none")
    value, grads = loss.value_and_grad(native(backend, x, dtype))
    close(value, [0.0, 1e9, 0.0, 1e4, math.log(2)], 1e-6 if dtype == "float32" else 1e-15, 1e-30)
    close(grads["fake"], [0.0, -1.0, 0.0, -1.0, -0.5], 1e-7, 1e-30)
    disc = mlo.get("vanilla_discriminator", reduction="sum")
    value, grads = disc.value_and_grad(native(backend, x, dtype), native(backend, -x, dtype))
    close(value, 2 * (1e9 + 1e4 + math.log(2)), 1e-6 if dtype == "float32" else 1e-15)
    close(grads["real"], [0.0, -1.0, 0.0, -1.0, -0.5], 1e-7, 1e-30)
    close(grads["fake"], [0.0, 1.0, 0.0, 1.0, 0.5], 1e-7, 1e-30)
    g = np.array([[0.0, 0.0, 0.0], [1e-25, 0.0, 0.0], [2.0, -1.0, 2.0]], dtype=dtype)
    gp = mlo.get("gradient_penalty", reduction="none")
    value, grads = gp.value_and_grad(native(backend, g, dtype))
    close(value, [10.0, 10.0, 40.0], 1e-6, 0)
    close(grads["gradients"], [[0, 0, 0], [-20.0, 0, 0], [80 / 3, -40 / 3, 80 / 3]], 1e-6, 1e-30)


# --------------------------------------------------------------------------
# array-api-strict, jax.jit, masks, inputs never modified


@pytest.mark.parametrize("name, options", OPTION_CASES)
def test_array_api_strict(name, options):
    xps = pytest.importorskip("array_api_strict")
    a = make(name, np.random.default_rng(6))
    loss = mlo.get(name, reduction="none", **options)
    out = loss(**{k: xps.asarray(v) for k, v in a.items()})
    assert type(out).__module__.startswith("array_api_strict")
    close(np.asarray(out), ref_unreduced(name, a, options))
    ct = np.random.default_rng(7).uniform(-1, 1, np.shape(np.asarray(out)))
    grads = loss.vjp(xps.asarray(ct), **{k: xps.asarray(v) for k, v in a.items()})
    ref = loss.vjp(ct, **a)
    for k in loss.differentiable:
        close(np.asarray(grads[k]), ref[k])


@pytest.mark.parametrize("name, options", OPTION_CASES)
def test_jax_jit_traces(name, options):
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)
    a = make(name, np.random.default_rng(8))
    loss = mlo.get(name, **options)
    value, grads = jax.jit(lambda d: loss.value_and_grad(**d))({k: jax.numpy.asarray(v) for k, v in a.items()})
    close(value, np.mean(ref_unreduced(name, a, options)))
    ref = loss.grad(**a)
    for k in loss.differentiable:
        close(grads[k], ref[k])


@pytest.mark.parametrize("name", ADVERSARIAL)
def test_all_masked_mean_is_zero_with_zero_gradient(name):
    a = make(name, np.random.default_rng(9))
    n = np.shape(mlo.get(name, reduction="none")(**a))
    value, grads = mlo.get(name).value_and_grad(**a, where=np.zeros(n, dtype=bool))
    assert value == 0.0 and all(np.all(g == 0) for g in grads.values())


@pytest.mark.parametrize("name", ADVERSARIAL)
def test_inputs_not_modified(name):
    a = make(name, np.random.default_rng(10))
    copies = {k: v.copy() for k, v in a.items()}
    loss = mlo.get(name)
    loss.value_and_grad(**a)
    loss.vjp(np.float64(2.0), **a)
    for k in a:
        np.testing.assert_array_equal(a[k], copies[k])
    ta = {k: torch.tensor(v) for k, v in a.items()}
    tcopies = {k: v.clone() for k, v in ta.items()}
    loss.value_and_grad(**ta)
    for k in ta:
        assert torch.equal(ta[k], tcopies[k])


# --------------------------------------------------------------------------
# bad input: clear errors naming the argument and showing what was received


@pytest.mark.parametrize("name", DISCRIMINATORS)
def test_real_and_fake_shapes_must_match(name):
    with pytest.raises(ValueError, match=r"`real` and `fake` must have the same shape; got \(3,\) and \(4,\)"):
        mlo.get(name)(np.zeros(3), np.zeros(4))
    with pytest.raises(ValueError, match=r"got \(2, 3\) and \(3, 2\)"):
        mlo.get(name)(np.zeros((2, 3)), np.zeros((3, 2)))
    with pytest.raises(TypeError, match=r"missing the input\(s\) `fake`"):
        mlo.get(name)(np.zeros(3))


@pytest.mark.parametrize("name, options, error, message", [
    ("vanilla_generator", {"non_saturating": "yes"}, TypeError, r"`non_saturating` must be True or False; got 'yes'"),
    ("vanilla_generator", {"non_saturating": 1}, TypeError, r"`non_saturating` must be True or False; got 1"),
    ("least_squares_generator", {"target_real": math.nan}, ValueError, r"`target_real` must be finite; got nan"),
    ("least_squares_discriminator", {"target_fake": "0"}, TypeError, r"`target_fake` must be a real number; got '0'"),
    ("least_squares_discriminator", {"target_real": math.inf}, ValueError, r"`target_real` must be finite"),
    ("gradient_penalty", {"penalty_weight": -1.0}, ValueError, r"`penalty_weight` must lie in \[0.0, inf\); got -1.0"),
    ("gradient_penalty", {"target_norm": -0.5}, ValueError, r"`target_norm` must lie in \[0.0, inf\); got -0.5"),
    ("gradient_penalty", {"weight": 10.0}, TypeError, r"unknown option `weight`"),
    ("hinge_discriminator", {"margin": 1.0}, TypeError, r"unknown option `margin`"),
    ("vanilla_discriminator", {"label_smoothing": 0.1}, TypeError, r"unknown option `label_smoothing`"),
])
def test_invalid_options(name, options, error, message):
    with pytest.raises(error, match=message):
        mlo.get(name, **options)


def test_input_errors():
    with pytest.raises(ValueError, match=r"`gradients` must have at least 1 dimension\(s\); got shape \(\)"):
        mlo.gradient_penalty_loss(np.float64(1.0))
    with pytest.raises(TypeError, match=r"`fake` must be a real floating-point array; got dtype int64"):
        mlo.vanilla_generator_loss(np.array([1, 2]))
    with pytest.raises(TypeError, match=r"`real` must be a real floating-point array"):
        mlo.hinge_discriminator_loss(np.array([1, 2]), np.array([0.5, 1.0]))
    with pytest.raises(TypeError, match=r"`gradients` must be a real floating-point array"):
        mlo.gradient_penalty_loss(np.ones((2, 3), dtype=np.int32))
    with pytest.raises(ValueError, match=r"`weight` of shape \(3,\) fits neither"):
        mlo.gradient_penalty_loss(np.ones((2, 3)), weight=np.ones(3))
    with pytest.raises(TypeError, match=r"takes 2 inputs \(real, fake\); got 3 positional"):
        mlo.wasserstein_discriminator_loss(np.ones(2), np.ones(2), np.ones(2))
