"""Perceptual losses on features the user's network produced: feature reconstruction, style (Gram), contextual.

``features_real`` and ``features_fake`` are one array, a list of arrays or a
dict of named arrays (a feature extractor's layers), with the batch on axis 0
of every layer. Each layer gives one loss per sample; the loss is the weighted
mean over layers, ``sum_k w_k L_k / sum_k w_k``, with ``layer_weights`` (a
dict for dict features, a list for list features; a layer it leaves out is
not used; default: every layer weighs 1). So the unreduced loss has shape
``(B,)`` and its "mean" is Artifex's weighted layer mean. Only the generated
side, ``features_fake``, gets a gradient, in its own structure. The engine
adds reduction, weights and masks.
"""

from __future__ import annotations

import numpy as np

from .. import _layers, _numerics, _validation
from ..registry import LossSpec, Option, register
from ._common import integer, number

FAMILY = "perceptual"


def _used_layers(features_real, features_fake, layer_weights):
    """[(key, real, fake, share)] for the layers with a positive weight, share = w_k / sum of the weights."""
    real = dict(_layers.items(features_real))
    if layer_weights is None:
        weights = {key: 1.0 for key, _ in _layers.items(features_fake)}
    else:
        weights = layer_weights if isinstance(layer_weights, dict) else dict(enumerate(layer_weights))
    total = sum(weights.values())
    fake = dict(_layers.items(features_fake))
    return [(key, real[key], fake[key], w / total) for key, w in weights.items() if w > 0]


def _layer_loss(layer_fused):
    """The spec's (value, vjp, fused) from one layer's ``(value (B,), pullback)``: the weighted layer mean."""

    def fused(xp, features_real, features_fake, *, layer_weights, **options):
        parts = [(key, share, layer_fused(xp, real, fake, **options))
                 for key, real, fake, share in _used_layers(features_real, features_fake, layer_weights)]
        value = sum(share * layer_value for _, share, (layer_value, _) in parts)

        def pullback(ct):
            grads = {key: pb(share * ct) for key, share, (_, pb) in parts}
            return {"features_fake": _layers.map_layers(lambda key, x: grads[key] if key in grads else
                                                        xp.zeros_like(x), features_fake)}

        return value, pullback

    def value(xp, features_real, features_fake, **options):
        return fused(xp, features_real, features_fake, **options)[0]

    def vjp(xp, cotangent, features_real, features_fake, **options):
        return fused(xp, features_real, features_fake, **options)[1](cotangent)

    return value, vjp, fused


def _per_sample(xp, ct, ndim):
    """A per-sample cotangent (B,) shaped to broadcast against a (B, ...) layer."""
    return xp.reshape(ct, (ct.shape[0],) + (1,) * (ndim - 1))


def _positions(xp, x, channel_axis):
    """``x`` as (B, P, C), the channel axis last and the others flattened into P positions, and the way back."""
    axis = channel_axis % x.ndim
    order = (0,) + tuple(i for i in range(1, x.ndim) if i != axis) + (axis,)
    moved = xp.permute_dims(x, order)
    flat = xp.reshape(moved, (x.shape[0], int(np.prod(moved.shape[1:-1])), x.shape[axis]))  # also for B = 0
    inverse = tuple(int(i) for i in np.argsort(order))

    def back(g):
        return xp.permute_dims(xp.reshape(g, tuple(moved.shape)), inverse)

    return flat, back


# --------------------------------------------------------------------------- layer checks and samples


def _check_layers(min_ndim, same_shape):
    def validate(xp, inputs, options, concrete):
        real, fake = inputs["features_real"], inputs["features_fake"]
        _validation.check_same_layers("features_real", real, "features_fake", fake)
        _validation.check_layer_weights_match("layer_weights", options["layer_weights"], "features_fake", fake)
        first = _layers.label("features_fake", _layers.items(fake)[0][0])
        batch = _layers.first(fake).shape[0] if _layers.first(fake).ndim else 0
        real_layers = dict(_layers.items(real))
        for key, f in _layers.items(fake):
            pair = ((_layers.label("features_fake", key), f), (_layers.label("features_real", key), real_layers[key]))
            for name, x in pair:
                _validation.check_ndim(name, x, at_least=min_ndim)
                _validation.check_batch_size(name, x, batch, first)
            if same_shape:
                _validation.check_same_shape(*pair[0], *pair[1])
            else:
                axes = [_validation.check_channel_axis(name, options["channel_axis"], x) for name, x in pair]
                _validation.check_same_channels(*pair[0], axes[0], *pair[1], axes[1])
                for (name, x), axis in zip(pair, axes):
                    positions = int(np.prod([n for i, n in enumerate(x.shape) if i not in (0, axis)]))
                    _validation.check_min_size(name, x.shape[axis], 1, "a number of channels")
                    _validation.check_min_size(name, positions, 1, "a number of positions per sample")
    return validate


def _batch_shape(shapes, options):
    return next(iter(shapes["features_fake"].values()))[:1]


def _sample_layers(rng, shape, options, spread=0.5):
    """Two layers of features (B, 6, 3) and (B, 2, 3, 4) (channels on ``channel_axis``), the case shape's batch;
    fake = real + U(-spread, spread)."""
    batch = shape[0]
    shapes = {"conv1": (batch, 6, 3), "conv2": (batch, 2, 3, 4)}
    if options.get("channel_axis", -1) == 1:
        shapes = {"conv1": (batch, 3, 6), "conv2": (batch, 4, 2, 3)}
    real = {k: rng.uniform(-1.0, 1.0, s) for k, s in shapes.items()}
    fake = {k: real[k] + rng.uniform(-spread, spread, s) for k, s in shapes.items()}
    return {"features_real": real, "features_fake": fake}


_LAYER_WEIGHTS = Option("layer_weights", None, "Per-layer weights: a dict for dict features, a list for list "
                        "features (>= 0, one positive); None weighs every layer 1.", _validation.check_layer_weights)
_CHANNEL_AXIS = Option("channel_axis", -1, "The channel axis of every layer (-1: (B, ..., C), as Artifex and "
                       "Keras; 1: PyTorch's (B, C, ...)); every other non-batch axis is a position.", integer())

_COMMON = dict(family=FAMILY, inputs=("features_real", "features_fake"), differentiable=("features_fake",),
               layer_inputs=("features_real", "features_fake"), same_shape=(), output_shape=_batch_shape,
               sample=_sample_layers)

_LAYERS_NOTE = ("Features are one array, a list or a dict of layers, batch on axis 0; the loss per sample is "
                "the weighted mean of the layer losses, so 'mean' equals Artifex's weighted layer mean and "
                "'sum' sums it over the batch. Only `features_fake` gets a gradient, in its own structure. "
                "Positional order is (real, fake), where Artifex's functions take (predictions, targets).")


# --------------------------------------------------------------------------- feature reconstruction


def _reconstruction_layer(xp, real, fake):
    """Mean squared difference per sample, over every non-batch element."""
    diff = fake - real
    size = int(np.prod(fake.shape[1:]))
    count = max(size, 1)
    value = xp.sum(xp.reshape(diff * diff, (fake.shape[0], size)), axis=1) / count
    return value, lambda ct: (2.0 / count) * diff * _per_sample(xp, ct, fake.ndim)


feature_reconstruction_value, feature_reconstruction_vjp, feature_reconstruction_fused = _layer_loss(
    _reconstruction_layer)

register(LossSpec(
    name="feature_reconstruction",
    summary="Weighted mean over layers of the mean squared difference of two networks' features.",
    value=feature_reconstruction_value, vjp=feature_reconstruction_vjp, fused=feature_reconstruction_fused,
    formula=r"\ell_b = \frac{\sum_k w_k\, \frac{1}{M_k}\lVert \phi_k(\hat x)_b - \phi_k(x)_b \rVert^2}{\sum_k w_k}",
    gradient=r"\frac{\partial \ell_b}{\partial \phi_k(\hat x)_b} = "
             r"\frac{w_k}{\sum_j w_j}\,\frac{2}{M_k}\,(\phi_k(\hat x)_b - \phi_k(x)_b)",
    options=(_LAYER_WEIGHTS,), option_cases=({}, {"layer_weights": {"conv1": 1.0, "conv2": 0.25}}),
    validate=_check_layers(1, same_shape=True),
    aliases=("feature_reconstruction_loss", "content_loss"),
    literature=("Johnson, Alahi and Fei-Fei, Perceptual Losses for Real-Time Style Transfer and "
                "Super-Resolution (ECCV 2016); Artifex feature_reconstruction_loss",),
    notes=_LAYERS_NOTE + " Each layer's loss is the mean over its non-batch elements (M_k of them).",
    **_COMMON,
))


# --------------------------------------------------------------------------- style


def _gram(xp, f):
    """Gram matrices F^T F / P of (B, P, C) features: (B, C, C)."""
    return xp.matrix_transpose(f) @ f / f.shape[1]


def _style_layer(xp, real, fake, *, channel_axis):
    """Mean squared difference of the channel Gram matrices, per sample."""
    f, back = _positions(xp, fake, channel_axis)
    r, _ = _positions(xp, real, channel_axis)
    diff = _gram(xp, f) - _gram(xp, r)
    count = diff.shape[1] * diff.shape[2]
    value = xp.sum(xp.reshape(diff * diff, (diff.shape[0], count)), axis=1) / count

    def pullback(ct):
        # d/dG = 2 (G - G_r) / C^2 (symmetric), and dG = (dF^T F + F^T dF) / P, so dF = 2 F (d/dG) / P
        g_gram = (2.0 / count) * diff * _per_sample(xp, ct, 3)
        return back(2.0 * (f @ g_gram) / f.shape[1])

    return value, pullback


style_value, style_vjp, style_fused = _layer_loss(_style_layer)

register(LossSpec(
    name="style",
    summary="Weighted mean over layers of the mean squared difference of the features' channel Gram matrices.",
    value=style_value, vjp=style_vjp, fused=style_fused,
    formula=r"G_k(x)_b = \frac{F^\top F}{P_k},\ F = \phi_k(x)_b \in \mathbb{R}^{P_k\times C_k};\ "
            r"\ell_b = \frac{\sum_k w_k\, \frac{1}{C_k^2}\lVert G_k(\hat x)_b - G_k(x)_b \rVert_F^2}{\sum_k w_k}",
    gradient=r"\frac{\partial \ell_b}{\partial \hat F} = \frac{w_k}{\sum_j w_j}\,"
             r"\frac{4}{C_k^2 P_k}\,\hat F\,(G_k(\hat x)_b - G_k(x)_b)",
    options=(_LAYER_WEIGHTS, _CHANNEL_AXIS),
    option_cases=({}, {"layer_weights": {"conv2": 2.0}}, {"channel_axis": 1}),
    validate=_check_layers(3, same_shape=False),
    aliases=("style_loss", "gram_loss"),
    literature=("Gatys, Ecker and Bethge, Image Style Transfer Using Convolutional Neural Networks (CVPR 2016); "
                "Artifex style_loss",),
    notes=_LAYERS_NOTE + " Gram matrices are channel by channel (C x C, divided by the P positions), as "
          "Gatys et al.; Artifex multiplies positions by positions (P x P), which is not a style statistic and "
          "needs P^2 memory. Real and fake layers need the same channels, not the same positions.",
    **_COMMON,
))


# --------------------------------------------------------------------------- contextual


def _subsample(xp, x, max_samples, rng):
    """At most ``max_samples`` positions of (B, P, C) features, drawn without replacement by ``rng`` (in order),
    and a function putting a cotangent of them back at their positions (0 elsewhere)."""
    count = x.shape[1]
    if count <= max_samples:
        return x, lambda g: g
    chosen = np.sort(rng.choice(count, max_samples, replace=False))
    inverse = np.full(count, max_samples)  # unchosen positions read the zero row appended below
    inverse[chosen] = np.arange(max_samples)

    def put_back(g):
        padded = xp.concat((g, xp.zeros_like(g[:, :1, :])), axis=1)
        return xp.take(padded, _numerics.indices_like(xp, inverse, g), axis=1)

    return xp.take(x, _numerics.indices_like(xp, chosen, x), axis=1), put_back


def _feature_sets(xp, real, fake, *, max_samples, seed, channel_axis):
    """Fake and real features (B, n, C), (B, m, C) after subsampling, and the way back to the fake's layout."""
    f, back = _positions(xp, fake, channel_axis)
    r, _ = _positions(xp, real, channel_axis)
    rng = np.random.default_rng(seed)
    f, put_back = _subsample(xp, f, max_samples, rng)
    r, _ = _subsample(xp, r, max_samples, rng)
    return f, r, lambda g: back(put_back(g))


def _similarities(xp, f, r, *, band_width, eps):
    """Cosine distances d (B, n, m) of the fake to the real features centred on the real mean, their
    row minima, d / (min + eps), CX = softmax_j((1 - d / (min + eps)) / h), and the unit vectors."""
    center = xp.mean(r, axis=1, keepdims=True)  # the real features' mean, per sample
    unit = _numerics.unit_vectors(xp, f - center, eps * eps)
    v = _numerics.unit_vectors(xp, r - center, eps * eps)[0]
    dist = 1.0 - unit[0] @ xp.matrix_transpose(v)
    scale = xp.min(dist, axis=2, keepdims=True) + eps
    rel = dist / scale
    w = xp.exp((xp.min(rel, axis=2, keepdims=True) - rel) / band_width)  # shifted by the row's largest logit
    return dist, scale, rel, w / xp.sum(w, axis=2, keepdims=True), unit, v


def _contextual_layer(xp, real, fake, *, band_width, eps, max_samples, seed, channel_axis):
    """-log CX per sample: Mechrez et al.'s contextual similarity of the fake to the real feature sets."""
    f, r, back = _feature_sets(xp, real, fake, max_samples=max_samples, seed=seed, channel_axis=channel_axis)
    dist, scale, rel, cx, (u, norm, active), v = _similarities(xp, f, r, band_width=band_width, eps=eps)
    best = xp.max(cx, axis=1)  # (B, m): each real feature's closest fake one
    sim = xp.mean(best, axis=1)  # >= 1/m: each row of cx sums to 1
    value = -xp.log(sim)

    def pullback(ct):
        n = cx.shape[1]
        rows = _numerics.arange_like(xp, n, cx)
        chosen = xp.reshape(rows, (1, n, 1)) == xp.expand_dims(xp.argmax(cx, axis=1), axis=1)
        g_best = xp.reshape(-ct / (sim * best.shape[1]), (-1, 1, 1))
        g_cx = xp.where(chosen, g_best, xp.zeros_like(cx))
        g_logits = cx * (g_cx - xp.sum(g_cx * cx, axis=2, keepdims=True))  # softmax pullback
        g_rel = -g_logits / band_width
        # rel = dist / (min_j dist + eps): the minimum's share goes to the argmin
        cols = _numerics.arange_like(xp, dist.shape[2], dist)
        argmin = xp.reshape(cols, (1, 1, -1)) == xp.expand_dims(xp.argmin(dist, axis=2), axis=2)
        g_nearest = -xp.sum(g_rel * rel, axis=2, keepdims=True) / scale
        g_dist = g_rel / scale + xp.where(argmin, g_nearest, xp.zeros_like(dist))
        return back(_numerics.unit_vectors_vjp(xp, -(g_dist @ v), u, norm, active))

    return value, pullback


def _sample_contextual(rng, shape, options):
    """Unrelated real and fake features, each sample redrawn until no row minimum of d is within 0.01 of 0
    (where d / min d curves sharply) or of the runner-up, and no column maximum of CX within 2% of the
    runner-up (the kinks of the gradient)."""
    def gap(x, axis):
        top = np.sort(x, axis=axis)
        return np.take(top, -1, axis=axis) - np.take(top, -2, axis=axis)

    def draw():
        out = _sample_layers(rng, shape, options, spread=2.0)
        # the loss is scale-free; features of size ~10 keep its sharp kernel smooth at finite-difference steps
        return {name: {k: 10.0 * x for k, x in layers.items()} for name, layers in out.items()}

    out = draw()
    for _ in range(100):
        clear = np.ones(shape[0], dtype=bool)
        for key, real in out["features_real"].items():
            sets = _feature_sets(np, real, out["features_fake"][key], max_samples=options["max_samples"],
                                 seed=options["seed"], channel_axis=options["channel_axis"])
            dist, _, _, cx, _, _ = _similarities(np, *sets[:2], band_width=options["band_width"], eps=options["eps"])
            top = cx.max(axis=1)  # ties at an underflowed or saturated CX have (almost) no gradient to switch
            flat = (top < 1e-8) | (1.0 - top < 1e-6)
            clear &= ((dist.min(axis=2) > 0.01).all(axis=1) & (gap(-dist, 2) > 0.01).all(axis=1)
                      & ((gap(cx, 1) > 0.02 * top) | flat).all(axis=1))
        if clear.all():
            return out
        fresh = draw()  # the samples are independent: only those near a kink are redrawn
        out = {name: {k: np.where(np.reshape(clear, (-1,) + (1,) * (x.ndim - 1)), x, fresh[name][k])
                      for k, x in layers.items()} for name, layers in out.items()}
    raise RuntimeError("could not draw contextual features away from the kinks")


contextual_value, contextual_vjp, contextual_fused = _layer_loss(_contextual_layer)


register(LossSpec(
    name="contextual",
    summary="Contextual loss: how well every real feature finds a close generated one, regardless of position.",
    value=contextual_value, vjp=contextual_vjp, fused=contextual_fused,
    formula=r"d_{ij} = 1 - \cos(\hat x_i - \mu, x_j - \mu),\ \tilde d_{ij} = \frac{d_{ij}}{\min_l d_{il} + "
            r"\varepsilon},\ CX_{ij} = \operatorname{softmax}_j\frac{1 - \tilde d_{ij}}{h};\ "
            r"\ell_b = -\log \frac{1}{m}\sum_j \max_i CX_{ij}",
    gradient=r"\text{chain rule through the max (chosen } i\text{), the row softmax, the row minimum "
             r"(chosen } l\text{) and the normalised, centred fake features}",
    options=(_LAYER_WEIGHTS,
             Option("band_width", 0.1, "h > 0: the similarity kernel's band width.", number(low=0.0, low_open=True)),
             Option("eps", 1e-5, "Added to the nearest distance (> 0); also floors the feature norms.",
                    number(low=0.0, low_open=True)),
             Option("max_samples", 1024, "Most positions used per layer; more are subsampled without "
                    "replacement, the same ones for the same seed and shapes.", integer(low=1)),
             Option("seed", 0, "Seed of the position subsampling.", integer(low=0)),
             _CHANNEL_AXIS),
    option_cases=({}, {"band_width": 0.5, "layer_weights": {"conv1": 1.0, "conv2": 3.0}},
                  {"max_samples": 4, "seed": 3}, {"channel_axis": 1}),
    validate=_check_layers(3, same_shape=False), sample=_sample_contextual,
    aliases=("contextual_loss",),
    literature=("Mechrez, Talmi and Zelnik-Manor, The Contextual Loss for Image Transformation with "
                "Non-Aligned Data (ECCV 2018); Artifex contextual_loss",),
    notes=_LAYERS_NOTE + " Features are centred on the real features' mean per sample and compared by cosine "
          "distance, as Mechrez et al.; Artifex divides the affinities by their global maximum instead, which "
          "gives about 0 for unrelated features. Real and fake layers may have different positions.",
    **{k: v for k, v in _COMMON.items() if k != "sample"},
))
