"""Perceptual losses (feature_reconstruction, style, contextual) against independent references.

The references are written here in PyTorch from the published definitions
(Johnson et al.'s feature loss as Artifex weighs it, Gatys et al.'s channel
Gram matrices, Mechrez et al.'s contextual loss: features centred on the real
mean, cosine distances, relative distances, a row softmax, the column maximum)
and differentiated by torch autograd. Besides: hand-computed small cases,
subsampling determinism, layer structures, edge cases and validation errors.
"""

from __future__ import annotations

import numpy as np
import pytest

import mithril_losses as mlo

from conftest import native, to_numpy

torch = pytest.importorskip("torch")

LOSSES = ("feature_reconstruction", "style", "contextual")


def layers(seed=0, batch=2, spread=0.5):
    rng = np.random.default_rng(seed)
    real = {"conv1": rng.normal(size=(batch, 5, 4, 3)), "conv2": rng.normal(size=(batch, 3, 3, 6))}
    fake = {k: v + spread * rng.normal(size=v.shape) for k, v in real.items()}
    return real, fake


def tt(a, grad=False):
    return torch.tensor(np.asarray(a), dtype=torch.float64, requires_grad=grad)


# -------------------------------------------------------------------------- torch references, per layer (B,)


def ref_reconstruction(real, fake):
    return ((fake - real) ** 2).flatten(1).mean(1)


def ref_style(real, fake):
    def gram(x):  # (B, ..., C) -> (B, C, C)
        f = x.flatten(1, -2)
        return torch.einsum("bpc,bpd->bcd", f, f) / f.shape[1]

    return ((gram(fake) - gram(real)) ** 2).flatten(1).mean(1)


def ref_contextual(real, fake, band_width=0.1, eps=1e-5):
    x, y = fake.flatten(1, -2), real.flatten(1, -2)
    mu = y.mean(1, keepdim=True)
    x = torch.nn.functional.normalize(x - mu, dim=-1, eps=eps)
    y = torch.nn.functional.normalize(y - mu, dim=-1, eps=eps)
    d = 1 - torch.einsum("bic,bjc->bij", x, y)
    d_rel = d / (d.min(dim=2, keepdim=True)[0] + eps)
    cx = torch.softmax((1 - d_rel) / band_width, dim=2)
    return -torch.log(cx.max(dim=1)[0].mean(1))


REFERENCES = {"feature_reconstruction": ref_reconstruction, "style": ref_style, "contextual": ref_contextual}


def reference(name, real, fake, layer_weights=None, reduction="mean"):
    """Value and gradient of the weighted layer mean, by torch autograd."""
    t_fake = {k: tt(v, grad=True) for k, v in fake.items()}
    weights = layer_weights or {k: 1.0 for k in fake}
    per_sample = sum(w * REFERENCES[name](tt(real[k]), t_fake[k]) for k, w in weights.items()) / sum(weights.values())
    value = {"mean": per_sample.mean(), "sum": per_sample.sum(), "none": per_sample}[reduction]
    value.backward(torch.ones_like(value))
    return value.detach().numpy(), {k: (t.grad.numpy() if t.grad is not None else np.zeros(t.shape))
                                    for k, t in t_fake.items()}


@pytest.mark.parametrize("name", LOSSES)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("layer_weights", [None, {"conv1": 2.0, "conv2": 0.5}, {"conv2": 1.0}])
def test_matches_torch_reference(name, reduction, layer_weights):
    real, fake = layers()
    loss = mlo.get(name, reduction=reduction, layer_weights=layer_weights)
    value, grads = loss.value_and_grad(real, fake)
    ref_value, ref_grads = reference(name, real, fake, layer_weights, reduction)
    np.testing.assert_allclose(value, ref_value, rtol=1e-12, atol=1e-14)
    assert set(grads) == {"features_fake"} and set(grads["features_fake"]) == {"conv1", "conv2"}
    for k in fake:
        np.testing.assert_allclose(grads["features_fake"][k], ref_grads[k], rtol=1e-9, atol=1e-13)


def test_feature_reconstruction_hand_computed():
    # Artifex's docstring example shape: zeros vs ones gives MSE 1 in every layer; weights (1, 0.5) average to 1
    real = {"conv1": np.ones((2, 4, 4, 3)), "conv2": np.ones((2, 2, 2, 5))}
    fake = {k: np.zeros_like(v) for k, v in real.items()}
    assert float(mlo.feature_reconstruction_loss(real, fake, layer_weights={"conv1": 1.0, "conv2": 0.5})) == 1.0
    # one layer off by 2 everywhere, the other exact: (1 * 4 + 3 * 0) / 4
    fake = {"conv1": real["conv1"] + 2.0, "conv2": real["conv2"].copy()}
    assert float(mlo.feature_reconstruction_loss(real, fake, layer_weights={"conv1": 1.0, "conv2": 3.0})) == 1.0
    g = mlo.feature_reconstruction_loss_gradient(real, fake, layer_weights={"conv1": 1.0, "conv2": 3.0})
    # d/dx of (1/4) * mean over 2 * 48 elements of (x - r)^2: (1/4) * 2 * 2 / 96
    np.testing.assert_allclose(g["conv1"], np.full((2, 4, 4, 3), 1.0 / 96.0), rtol=1e-15)
    np.testing.assert_array_equal(g["conv2"], 0.0)


def test_style_hand_computed():
    # one sample, two positions, two channels: F = [[1, 0], [0, 2]] -> G = F^T F / 2 = diag(0.5, 2)
    fake = np.array([[[1.0, 0.0], [0.0, 2.0]]])
    real = np.zeros_like(fake)
    # mean over the 4 Gram entries of (G - 0)^2 = (0.25 + 4) / 4
    assert float(mlo.style_loss(real, fake)) == pytest.approx(4.25 / 4, rel=1e-15)


def test_contextual_hand_computed():
    # identical sets: every real feature is some fake one exactly, CX is the identity, loss 0
    real = np.random.default_rng(1).normal(size=(2, 6, 4))
    np.testing.assert_allclose(mlo.contextual_loss(real, real.copy(), reduction="none"), 0.0, atol=1e-12)
    # a permutation of the positions changes nothing (the loss ignores where a feature is)
    shuffled = real[:, ::-1].copy()
    np.testing.assert_allclose(mlo.contextual_loss(real, shuffled, reduction="none"), 0.0, atol=1e-12)
    # every fake feature at the real mean: centred they are 0, every distance is 1, CX is uniform 1/m, loss log m
    fake = np.broadcast_to(real.mean(axis=1, keepdims=True), real.shape).copy()
    np.testing.assert_allclose(mlo.contextual_loss(real, fake, reduction="none"), np.log(6), rtol=1e-12)
    g = mlo.contextual_loss_gradient(real, fake)
    assert np.isfinite(g).all()


@pytest.mark.parametrize("name", ["style", "contextual"])
def test_channel_axis_first_equals_last(name):
    real, fake = layers(3)
    last = mlo.get(name).value_and_grad(real, fake)
    to_first = {k: np.moveaxis(v, -1, 1) for k, v in real.items()}, {k: np.moveaxis(v, -1, 1) for k, v in fake.items()}
    first = mlo.get(name, channel_axis=1).value_and_grad(*to_first)
    np.testing.assert_allclose(first[0], last[0], rtol=1e-12)
    for k in fake:
        np.testing.assert_allclose(first[1]["features_fake"][k], np.moveaxis(last[1]["features_fake"][k], -1, 1),
                                   rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("name", ["style", "contextual"])
def test_real_and_fake_may_have_different_positions(name):
    rng = np.random.default_rng(4)
    real, fake = rng.normal(size=(2, 7, 5, 3)), rng.normal(size=(2, 4, 4, 3))
    value, grads = mlo.get(name, reduction="none").value_and_grad(real, fake)
    ref = REFERENCES[name](tt(real), tt(fake, grad=True))
    ref.sum().backward()
    np.testing.assert_allclose(value, ref.detach().numpy(), rtol=1e-12)
    assert grads["features_fake"].shape == fake.shape


def test_layer_structures_list_and_single_array():
    real, fake = layers(5)
    as_dict = mlo.get("style", layer_weights={"conv1": 1.0, "conv2": 3.0}).value_and_grad(real, fake)
    as_list = mlo.get("style", layer_weights=[1.0, 3.0]).value_and_grad(list(real.values()), list(fake.values()))
    assert float(as_list[0]) == pytest.approx(float(as_dict[0]), rel=1e-15)
    assert isinstance(as_list[1]["features_fake"], list)
    np.testing.assert_array_equal(as_list[1]["features_fake"][1], as_dict[1]["features_fake"]["conv2"])
    single = mlo.get("style").value_and_grad(real["conv1"], fake["conv1"])
    only = mlo.get("style", layer_weights={"conv1": 1.0}).value_and_grad(real, fake)
    assert float(single[0]) == float(only[0])
    np.testing.assert_array_equal(single[1]["features_fake"], only[1]["features_fake"]["conv1"])
    np.testing.assert_array_equal(only[1]["features_fake"]["conv2"], 0.0)  # a layer left out gets no gradient


def test_contextual_subsampling_is_deterministic_and_exact():
    rng = np.random.default_rng(6)
    real, fake = rng.normal(size=(2, 10, 10, 4)), rng.normal(size=(2, 12, 9, 4))
    loss = mlo.get("contextual", max_samples=32, seed=11, reduction="none")
    v1, g1 = loss.value_and_grad(real, fake)
    v2, g2 = loss.value_and_grad(real.copy(), fake.copy())
    np.testing.assert_array_equal(v1, v2)
    np.testing.assert_array_equal(g1["features_fake"], g2["features_fake"])
    assert not np.array_equal(mlo.get("contextual", max_samples=32, seed=12, reduction="none")(real, fake), v1)
    # the same as the full loss on the positions the seeded generator picks: fake first, then real
    pick = np.random.default_rng(11)
    fake_idx = np.sort(pick.choice(108, 32, replace=False))
    real_idx = np.sort(pick.choice(100, 32, replace=False))
    f, r = fake.reshape(2, 108, 4)[:, fake_idx], real.reshape(2, 100, 4)[:, real_idx]
    ref = ref_contextual(tt(r), t_f := tt(f, grad=True))
    ref.sum().backward()
    np.testing.assert_allclose(v1, ref.detach().numpy(), rtol=1e-12)
    flat = g1["features_fake"].reshape(2, 108, 4)
    np.testing.assert_allclose(flat[:, fake_idx], t_f.grad.numpy(), rtol=1e-9, atol=1e-14)
    unused = np.setdiff1d(np.arange(108), fake_idx)
    np.testing.assert_array_equal(flat[:, unused], 0.0)
    # positions within the limit are all used
    small = mlo.get("contextual", max_samples=108, reduction="none")(real[:, :10, :10], fake)
    np.testing.assert_allclose(small, ref_contextual(tt(real), tt(fake)).numpy(), rtol=1e-12)


@pytest.mark.parametrize("name", LOSSES)
def test_identical_features_give_zero_and_finite_gradients(name):
    real, _ = layers(7)
    value, grads = mlo.get(name).value_and_grad(real, {k: v.copy() for k, v in real.items()})
    assert abs(float(value)) < 1e-12
    for g in grads["features_fake"].values():
        assert np.isfinite(g).all()
        if name != "contextual":  # contextual's minimum at identity is a kink with a finite subgradient
            np.testing.assert_array_equal(g, 0.0)


@pytest.mark.parametrize("name", LOSSES)
@pytest.mark.parametrize("scale", [0.0, 1e-150, 1e70])  # 1e70: the style loss's squared Gram entries stay finite
def test_zero_tiny_and_huge_features_are_finite(name, scale):
    real, fake = layers(8)
    value, grads = mlo.get(name).value_and_grad(real, {k: scale * v for k, v in fake.items()})
    assert np.isfinite(float(value))
    assert all(np.isfinite(g).all() for g in grads["features_fake"].values())
    if name == "contextual" and scale < 1:
        # every fake feature is (about) 0, so after centring all are -mean: CX has equal rows, the loss is
        # log m per layer (m = 20 and 9 real positions)
        assert float(value) == pytest.approx(np.log([20, 9]).mean(), rel=1e-9)


@pytest.mark.parametrize("name", LOSSES)
def test_backends_return_native_layer_gradients(backend, name):
    real, fake = layers(9)
    ref_value, ref_grads = reference(name, real, fake)
    value, grads = mlo.get(name).value_and_grad({k: native(backend, v) for k, v in real.items()},
                                                {k: native(backend, v) for k, v in fake.items()})
    np.testing.assert_allclose(to_numpy(value), ref_value, rtol=1e-10)
    for k, g in grads["features_fake"].items():
        assert type(g) is type(native(backend, fake[k]))
        np.testing.assert_allclose(to_numpy(g), ref_grads[k], rtol=1e-8, atol=1e-12)


@pytest.mark.parametrize("name", LOSSES)
def test_inputs_are_not_modified(name):
    real, fake = layers(10)
    for v in (*real.values(), *fake.values()):
        v.flags.writeable = False
    before = {k: v.copy() for k, v in fake.items()}
    grads = mlo.get(name).grad(real, fake)["features_fake"]
    for k in fake:
        np.testing.assert_array_equal(fake[k], before[k])
        assert not np.shares_memory(grads[k], fake[k])


@pytest.mark.parametrize("name", LOSSES)
def test_config_round_trip_and_vjp(name):
    real, fake = layers(11)
    loss = mlo.get(name, reduction="none", layer_weights={"conv1": 0.3, "conv2": 0.7})
    again = mlo.from_config(loss.to_config())
    np.testing.assert_array_equal(again(real, fake), loss(real, fake))
    ct = np.array([0.5, -2.0])
    _, ref = reference(name, real, fake, {"conv1": 0.3, "conv2": 0.7}, "none")  # cotangent of ones
    g = loss.vjp(ct, real, fake)["features_fake"]
    g_ones = loss.vjp(np.ones(2), real, fake)["features_fake"]
    np.testing.assert_allclose(g_ones["conv1"], ref["conv1"], rtol=1e-9, atol=1e-13)
    np.testing.assert_allclose(g["conv1"][0], 0.5 * g_ones["conv1"][0], rtol=1e-12)
    np.testing.assert_allclose(g["conv1"][1], -2.0 * g_ones["conv1"][1], rtol=1e-12)
    with pytest.raises(ValueError, match="cotangent"):
        loss.vjp(np.ones(3), real, fake)


def test_engine_weight_and_mask_are_per_sample():
    real, fake = layers(12, batch=3)
    per_sample = mlo.get("style", reduction="none")(real, fake)
    weighted = mlo.get("style")(real, fake, weight=np.array([1.0, 2.0, 0.0]), where=np.array([True, True, False]))
    assert float(weighted) == pytest.approx(float((per_sample[0] + 2 * per_sample[1]) / 3), rel=1e-14)


@pytest.mark.parametrize("bad, options, name, error, match", [
    (lambda r, f: (r, list(f.values())), {}, "style", TypeError, r"both be one array, a list or a dict.*a dict and a list"),
    (lambda r, f: (r, {"conv1": f["conv1"]}), {}, "style", ValueError, r"same layer names.*\['conv1', 'conv2'\]"),
    (lambda r, f: ({}, {}), {}, "style", ValueError, r"`features_real` must hold at least one layer"),
    (lambda r, f: (r, f), {"layer_weights": {"conv9": 1.0}}, "style", ValueError, r"names layers \['conv9'\]"),
    (lambda r, f: (r, f), {"layer_weights": [1.0, 2.0]}, "style", ValueError, r"must be a list of 2 layers; got a dict"),
    (lambda r, f: (r["conv1"], f["conv1"]), {"layer_weights": {"conv1": 1.0}}, "style", TypeError, "got one array"),
    (lambda r, f: (r, {**f, "conv2": f["conv2"][:1]}), {}, "contextual", ValueError,
     r"`features_fake\['conv2'\]` must have the batch size 2"),
    (lambda r, f: (r, {**f, "conv1": f["conv1"][..., :2]}), {}, "contextual", ValueError, "same number of channels"),
    (lambda r, f: (r, {**f, "conv1": f["conv1"][:, :, :2]}), {}, "feature_reconstruction", ValueError,
     r"`features_fake\['conv1'\]` and `features_real\['conv1'\]` must have the same shape"),
    (lambda r, f: ({"a": r["conv1"][:, 0, 0]}, {"a": f["conv1"][:, 0, 0]}), {}, "style", ValueError,
     r"`features_fake\['a'\]` must have at least 3 dimension"),
    (lambda r, f: (r, f), {"channel_axis": 0}, "contextual", ValueError, "not a non-batch axis"),
    (lambda r, f: (r, f), {"channel_axis": 4}, "style", ValueError, "not a non-batch axis"),
    (lambda r, f: (r, {**f, "conv1": f["conv1"].astype(np.int64)}), {}, "style", TypeError,
     r"`features_fake\['conv1'\]` must be a real floating-point array"),
])
def test_validation_errors(bad, options, name, error, match):
    real, fake = layers(13)
    with pytest.raises(error, match=match):
        mlo.get(name, **options)(*bad(real, fake))


@pytest.mark.parametrize("options, error, match", [
    ({"layer_weights": {"a": -1.0}}, ValueError, r"`layer_weights\['a'\]` must lie in \[0.0, inf\)"),
    ({"layer_weights": {"a": 0.0}}, ValueError, "at least one layer a positive weight"),
    ({"layer_weights": "conv1"}, TypeError, "must be None, a dict of layer weights or a list"),
    ({"max_samples": 0}, ValueError, r"`max_samples` must lie in \[1, inf\)"),
    ({"band_width": 0.0}, ValueError, r"`band_width` must lie in \(0.0, inf\)"),
    ({"seed": -1}, ValueError, "`seed`"),
])
def test_option_errors(options, error, match):
    with pytest.raises(error, match=match):
        mlo.get("contextual", **options)
