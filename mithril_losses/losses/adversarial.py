"""Adversarial (GAN) losses: generator and discriminator pairs on the discriminator's raw scores.

Every input is a raw discriminator (critic) output, a logit or an unbounded
score, never a probability: ``f`` are the scores of generated (fake) samples,
``r`` those of real samples, ``s`` the sigmoid and ``sp(z) = log(1 + e^z)``
the softplus. A discriminator loss takes one score per sample on each side,
``real`` and ``fake`` of the same shape (the same batch size), and is the
elementwise sum of its real and fake terms, so the engine's mean is
mean(real terms) + mean(fake terms), as Artifex reduces it. The engine adds
reduction, weights (Artifex's ``weights``) and masks.

``gradient_penalty`` is WGAN-GP's penalty on the critic's input gradients,
which the caller computes (they are the model's output here).
"""

from __future__ import annotations

import math

from .. import _numerics, _validation
from ..registry import LossSpec, Option, register
from ._common import away_from, number

FAMILY = "adversarial"

GAN_PAPERS = {
    "vanilla": "Goodfellow et al., Generative Adversarial Nets (2014)",
    "least_squares": "Mao et al., Least Squares Generative Adversarial Networks (2017)",
    "wasserstein": "Arjovsky et al., Wasserstein GAN (2017)",
    "hinge": "Lim & Ye, Geometric GAN (2017); Miyato et al., Spectral Normalization for GANs (2018)",
}


def _flag(name, value):
    _validation.check_bool(name, value)
    return value


def _scores(rng, shape, options):
    return {"fake": rng.normal(0.0, 2.0, shape)}


def _score_pairs(rng, shape, options):
    return {"real": rng.normal(0.0, 2.0, shape), "fake": rng.normal(0.0, 2.0, shape)}


_PAIR_NOTE = ("`real` and `fake` hold one raw score per sample and must have the same shape (equal batch "
              "sizes); the unreduced loss is the elementwise sum of the real and fake terms, so "
              "reduction='mean' gives mean(real terms) + mean(fake terms).")


# --------------------------------------------------------------------------- vanilla_generator


def vanilla_generator_value(xp, fake, *, non_saturating):
    """sp(-f) = -log s(f) (non-saturating); -sp(f) = log(1 - s(f)) (saturating, the minimax form)."""
    return _numerics.softplus(xp, -fake) if non_saturating else -_numerics.softplus(xp, fake)


def vanilla_generator_vjp(xp, cotangent, fake, *, non_saturating):
    # d/df sp(-f) = -s(-f);  d/df -sp(f) = -s(f)
    return {"fake": -cotangent * _numerics.sigmoid(xp, -fake if non_saturating else fake)}


def vanilla_generator_fused(xp, fake, *, non_saturating):
    # with z = -f (non-saturating) or f (saturating): value +-sp(z), gradient -s(z), sharing one exp(-|z|)
    sp_z, _, s_z, _ = _numerics.sigmoid_terms(xp, -fake if non_saturating else fake)
    return (sp_z if non_saturating else -sp_z), lambda ct: {"fake": -ct * s_z}


register(LossSpec(
    name="vanilla_generator", family=FAMILY,
    summary="Vanilla GAN generator loss on discriminator logits; non-saturating (-log D(G(z))) by default.",
    inputs=("fake",), differentiable=("fake",),
    value=vanilla_generator_value, vjp=vanilla_generator_vjp, fused=vanilla_generator_fused,
    options=(Option("non_saturating", True, "True: -log s(f) (Goodfellow's non-saturating generator loss); "
                                            "False: log(1 - s(f)) (the minimax form, which saturates).", _flag),),
    formula=(r"\ell = \operatorname{sp}(-f) = -\log\sigma(f)\ \text{(non-saturating)},\quad "
             r"\ell = -\operatorname{sp}(f) = \log(1 - \sigma(f))\ \text{(saturating)},\ "
             r"\operatorname{sp}(z) = \log(1 + e^z)"),
    gradient=(r"\partial\ell/\partial f = -\sigma(-f)\ \text{(non-saturating)},\quad "
              r"-\sigma(f)\ \text{(saturating)}"),
    sample=_scores,
    aliases=("ns_vanilla_generator_loss",),
    option_cases=({}, {"non_saturating": False}),
    literature=(GAN_PAPERS["vanilla"], "Artifex vanilla_generator_loss / ns_vanilla_generator_loss"),
    notes=("`fake` holds the discriminator's logits for generated samples, D(G(z)) = s(fake). Written with "
           "softplus (logaddexp), so values and gradients are finite and exact for logits up to +-1e9. "
           "Artifex's `vanilla_generator_loss` takes probabilities D(G(z)) (clipped at 1e-7); this one takes "
           "logits and equals Artifex's logit form `ns_vanilla_generator_loss` (an alias here). Pass "
           "logit(p) for probabilities p."),
))


# --------------------------------------------------------------------------- vanilla_discriminator


def vanilla_discriminator_value(xp, real, fake):
    """sp(-r) + sp(f) = -log s(r) - log(1 - s(f))."""
    return _numerics.softplus(xp, -real) + _numerics.softplus(xp, fake)


def vanilla_discriminator_vjp(xp, cotangent, real, fake):
    return {"real": -cotangent * _numerics.sigmoid(xp, -real), "fake": cotangent * _numerics.sigmoid(xp, fake)}


def vanilla_discriminator_fused(xp, real, fake):
    _, sp_neg_r, _, s_neg_r = _numerics.sigmoid_terms(xp, real)
    sp_f, _, s_f, _ = _numerics.sigmoid_terms(xp, fake)
    return sp_neg_r + sp_f, lambda ct: {"real": -ct * s_neg_r, "fake": ct * s_f}


register(LossSpec(
    name="vanilla_discriminator", family=FAMILY,
    summary="Vanilla GAN discriminator loss on logits: binary cross entropy, real labelled 1 and fake 0.",
    inputs=("real", "fake"), differentiable=("real", "fake"), predictions=("real", "fake"),
    value=vanilla_discriminator_value, vjp=vanilla_discriminator_vjp, fused=vanilla_discriminator_fused,
    formula=(r"\ell = \operatorname{sp}(-r) + \operatorname{sp}(f) = -\log\sigma(r) - \log(1 - \sigma(f)),\ "
             r"\operatorname{sp}(z) = \log(1 + e^z)"),
    gradient=r"\partial\ell/\partial r = -\sigma(-r),\quad \partial\ell/\partial f = \sigma(f)",
    sample=_score_pairs,
    aliases=("ns_vanilla_discriminator_loss",),
    literature=(GAN_PAPERS["vanilla"], "Artifex vanilla_discriminator_loss / ns_vanilla_discriminator_loss"),
    notes=(_PAIR_NOTE + " Inputs are logits, finite and exact up to +-1e9. Artifex's "
           "`vanilla_discriminator_loss` takes probabilities; this one equals its logit form "
           "`ns_vanilla_discriminator_loss` (an alias here, without its `label_smoothing` option)."),
))


# --------------------------------------------------------------------------- least_squares_generator


def least_squares_generator_value(xp, fake, *, target_real):
    """0.5 (f - c)^2, c = target_real."""
    d = fake - target_real
    return 0.5 * d * d


def least_squares_generator_vjp(xp, cotangent, fake, *, target_real):
    return {"fake": cotangent * (fake - target_real)}


register(LossSpec(
    name="least_squares_generator", family=FAMILY,
    summary="Least squares GAN (LSGAN) generator loss: half the squared distance of the fake scores to target_real.",
    inputs=("fake",), differentiable=("fake",),
    value=least_squares_generator_value, vjp=least_squares_generator_vjp,
    options=(Option("target_real", 1.0, "Score the generator wants its samples to get (c in LSGAN).", number()),),
    formula=r"\ell = \tfrac12 (f - c)^2,\ c = \text{target\_real}",
    gradient=r"\partial\ell/\partial f = f - c",
    sample=_scores,
    aliases=("lsgan_generator",),
    option_cases=({}, {"target_real": 0.0}),
    literature=(GAN_PAPERS["least_squares"], "Artifex least_squares_generator_loss"),
    notes=("The factor 1/2 is Artifex's and the LSGAN paper's (Artifex's guide writes the objective without "
           "it: minimize (D(G(z)) - 1)^2, the same minimiser). `fake` holds raw scores, no sigmoid."),
))


# --------------------------------------------------------------------------- least_squares_discriminator


def least_squares_discriminator_value(xp, real, fake, *, target_real, target_fake):
    """0.5 (r - b)^2 + 0.5 (f - a)^2, b = target_real, a = target_fake."""
    dr, df = real - target_real, fake - target_fake
    return 0.5 * (dr * dr + df * df)


def least_squares_discriminator_vjp(xp, cotangent, real, fake, *, target_real, target_fake):
    return {"real": cotangent * (real - target_real), "fake": cotangent * (fake - target_fake)}


register(LossSpec(
    name="least_squares_discriminator", family=FAMILY,
    summary="Least squares GAN (LSGAN) discriminator loss: real scores pulled to target_real, fake to target_fake.",
    inputs=("real", "fake"), differentiable=("real", "fake"), predictions=("real", "fake"),
    value=least_squares_discriminator_value, vjp=least_squares_discriminator_vjp,
    options=(Option("target_real", 1.0, "Target score of real samples (b in LSGAN).", number()),
             Option("target_fake", 0.0, "Target score of generated samples (a in LSGAN).", number())),
    formula=r"\ell = \tfrac12 (r - b)^2 + \tfrac12 (f - a)^2,\ b = \text{target\_real},\ a = \text{target\_fake}",
    gradient=r"\partial\ell/\partial r = r - b,\quad \partial\ell/\partial f = f - a",
    sample=_score_pairs,
    aliases=("lsgan_discriminator",),
    option_cases=({}, {"target_real": 1.0, "target_fake": -1.0}),
    literature=(GAN_PAPERS["least_squares"], "Artifex least_squares_discriminator_loss"),
    notes=(_PAIR_NOTE + " The factors 1/2 are Artifex's and the LSGAN paper's (Artifex's guide omits them). "
           "The paper's a = -1, b = 1, c = 0 coding is target_fake=-1.0 here and target_real=0.0 for the "
           "generator."),
))


# --------------------------------------------------------------------------- wasserstein


def wasserstein_generator_value(xp, fake):
    """-f."""
    return -fake


def wasserstein_generator_vjp(xp, cotangent, fake):
    return {"fake": -cotangent}


register(LossSpec(
    name="wasserstein_generator", family=FAMILY,
    summary="Wasserstein GAN generator loss: the negated critic score of generated samples.",
    inputs=("fake",), differentiable=("fake",),
    value=wasserstein_generator_value, vjp=wasserstein_generator_vjp,
    formula=r"\ell = -f",
    gradient=r"\partial\ell/\partial f = -1",
    sample=_scores,
    aliases=("wgan_generator",),
    literature=(GAN_PAPERS["wasserstein"], "Artifex wasserstein_generator_loss"),
    notes="`fake` holds unbounded critic scores. Identical to `hinge_generator`.",
))


def wasserstein_discriminator_value(xp, real, fake):
    """f - r (the critic's loss: the negated Wasserstein estimate)."""
    return fake - real


def wasserstein_discriminator_vjp(xp, cotangent, real, fake):
    return {"real": -cotangent, "fake": xp.asarray(cotangent, copy=True)}  # never the caller's own array


register(LossSpec(
    name="wasserstein_discriminator", family=FAMILY,
    summary="Wasserstein GAN critic loss: critic score of fake minus real samples.",
    inputs=("real", "fake"), differentiable=("real", "fake"), predictions=("real", "fake"),
    value=wasserstein_discriminator_value, vjp=wasserstein_discriminator_vjp,
    formula=r"\ell = f - r",
    gradient=r"\partial\ell/\partial r = -1,\quad \partial\ell/\partial f = 1",
    sample=_score_pairs,
    aliases=("wgan_discriminator", "wasserstein_critic", "wgan_critic"),
    literature=(GAN_PAPERS["wasserstein"], "Artifex wasserstein_discriminator_loss"),
    notes=(_PAIR_NOTE + " The critic needs a Lipschitz constraint: add `gradient_penalty` (WGAN-GP) or clip "
           "its weights."),
))


# --------------------------------------------------------------------------- hinge


register(LossSpec(
    name="hinge_generator", family=FAMILY,
    summary="Hinge GAN generator loss: the negated discriminator score of generated samples.",
    inputs=("fake",), differentiable=("fake",),
    value=wasserstein_generator_value, vjp=wasserstein_generator_vjp,  # the same loss, -f
    formula=r"\ell = -f",
    gradient=r"\partial\ell/\partial f = -1",
    sample=_scores,
    aliases=("hinge_gan_generator",),
    literature=(GAN_PAPERS["hinge"], "Artifex hinge_generator_loss"),
    notes="`fake` holds raw scores. The same as `wasserstein_generator`; paired with `hinge_discriminator`.",
))


def hinge_discriminator_value(xp, real, fake):
    """max(0, 1 - r) + max(0, 1 + f)."""
    return xp.maximum(1.0 - real, 0.0) + xp.maximum(1.0 + fake, 0.0)


def hinge_discriminator_vjp(xp, cotangent, real, fake):
    # -1 / +1 where a margin is violated, 0 elsewhere (subgradient 0 at the kinks r = 1, f = -1)
    zero = xp.zeros_like(cotangent)
    return {"real": xp.where(real < 1.0, -cotangent, zero), "fake": xp.where(fake > -1.0, cotangent, zero)}


def _sample_hinge(rng, shape, options):
    real = away_from(rng, rng.uniform(-2.0, 4.0, shape), (1.0,), 0.05, -2.0, 4.0)
    fake = away_from(rng, rng.uniform(-4.0, 2.0, shape), (-1.0,), 0.05, -4.0, 2.0)
    return {"real": real, "fake": fake}


register(LossSpec(
    name="hinge_discriminator", family=FAMILY,
    summary="Hinge GAN discriminator loss: real scores pushed above 1, fake scores below -1.",
    inputs=("real", "fake"), differentiable=("real", "fake"), predictions=("real", "fake"),
    value=hinge_discriminator_value, vjp=hinge_discriminator_vjp,
    formula=r"\ell = \max(0, 1 - r) + \max(0, 1 + f)",
    gradient=r"\partial\ell/\partial r = -[r < 1],\quad \partial\ell/\partial f = [f > -1]\ (0\ \text{at the kinks})",
    sample=_sample_hinge,
    aliases=("hinge_gan_discriminator",),
    literature=(GAN_PAPERS["hinge"], "Artifex hinge_discriminator_loss"),
    notes=_PAIR_NOTE + " The subgradient at the kinks r = 1 and f = -1 is 0.",
))


# --------------------------------------------------------------------------- gradient_penalty


def _sample_axes(ndim):
    return tuple(range(1, ndim))


def _penalty_parts(xp, gradients, target_norm, penalty_weight):
    norm = _numerics.l2_norm(xp, gradients, axis=_sample_axes(gradients.ndim), keepdims=True)
    d = norm - target_norm
    value = penalty_weight * d * d
    return xp.reshape(value, (gradients.shape[0],)), norm, d


def _penalty_grad(xp, ct, gradients, penalty_weight, norm, d):
    # d/dg lambda (|g| - t)^2 = 2 lambda (|g| - t) g / |g|; g / |g| := 0 at g = 0 (the subgradient 0 there)
    k = xp.reshape(ct, tuple(norm.shape)) * (2.0 * penalty_weight) * d
    return {"gradients": k * _numerics.safe_divide(xp, gradients, norm)}


def gradient_penalty_value(xp, gradients, *, target_norm, penalty_weight):
    """Per sample: lambda (||g_n||_2 - t)^2, the norm over all axes but the first."""
    return _penalty_parts(xp, gradients, target_norm, penalty_weight)[0]


def gradient_penalty_vjp(xp, cotangent, gradients, *, target_norm, penalty_weight):
    _, norm, d = _penalty_parts(xp, gradients, target_norm, penalty_weight)
    return _penalty_grad(xp, cotangent, gradients, penalty_weight, norm, d)


def gradient_penalty_fused(xp, gradients, *, target_norm, penalty_weight):
    value, norm, d = _penalty_parts(xp, gradients, target_norm, penalty_weight)
    return value, lambda ct: _penalty_grad(xp, ct, gradients, penalty_weight, norm, d)


def _check_penalty(xp, inputs, options, concrete):
    g = inputs["gradients"]
    _validation.check_ndim("gradients", g, at_least=1)
    _validation.check_min_size("gradients", math.prod(g.shape[1:]), 1, "a number of values per sample")


def _sample_penalty(rng, shape, options):
    # per-sample scales spread the norms on both sides of the target norm
    scale = rng.uniform(0.1, 1.0, shape[:1] + (1,) * (len(shape) - 1))
    return {"gradients": rng.normal(size=shape) * scale}


register(LossSpec(
    name="gradient_penalty", family=FAMILY,
    summary="WGAN-GP gradient penalty on the critic's input gradients, one value per sample.",
    inputs=("gradients",), differentiable=("gradients",),
    value=gradient_penalty_value, vjp=gradient_penalty_vjp, fused=gradient_penalty_fused,
    validate=_check_penalty, output_shape=lambda shapes, options: shapes["gradients"][:1],
    options=(Option("target_norm", 1.0, "Norm the gradients are pulled to (>= 0; 0 gives a zero-centred penalty).",
                    number(low=0.0)),
             Option("penalty_weight", 10.0, "Penalty coefficient lambda (>= 0).", number(low=0.0))),
    formula=r"\ell_n = \lambda\left(\lVert g_n\rVert_2 - t\right)^2,\ \text{norm over all axes but the first}",
    gradient=(r"\partial\ell_n/\partial g_n = 2\lambda\left(\lVert g_n\rVert_2 - t\right) g_n / \lVert g_n\rVert_2"
              r"\ (0\ \text{at}\ g_n = 0)"),
    sample=_sample_penalty,
    aliases=("wgan_gp",),
    option_cases=({}, {"target_norm": 0.0, "penalty_weight": 1.0}, {"target_norm": 2.0, "penalty_weight": 0.5}),
    literature=("Gulrajani et al., Improved Training of Wasserstein GANs (2017)",),
    notes=("`gradients` (shape (N, ...)) are the critic's gradients with respect to its inputs, usually at "
           "random interpolates of real and fake samples; computing them is the caller's (double backward). "
           "The unreduced loss has one value per sample, so reduction='mean' is WGAN-GP's "
           "lambda E[(||g|| - t)^2]. The coefficient lambda is the option `penalty_weight`, not `weight`: "
           "`weight=` is every call's per-sample weight. The norm is scaled by the largest |g| of each sample, so "
           "neither huge nor tiny gradients overflow or underflow; an all-zero sample has value "
           "lambda t^2 and gradient 0 (the norm is not differentiable there). For 1-D `gradients` each "
           "entry is one sample and its norm is |g|."),
))
