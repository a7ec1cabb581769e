"""Composition and training utilities against independent references.

Composite values and gradients are checked against NumPy formulas written
here and against torch autograd of the same weighted objective built from
``torch.nn.functional``; uncertainty weighting against torch autograd and
float64 finite differences; schedules at chosen steps against their closed
forms; the moving averages against a hand computation. Besides: routing of
inputs to parts, config round-trips (nested, JSON and TOML files, switching
the backend), error messages, and inputs left unmodified.
"""

from __future__ import annotations

import json
import math
import sys

import numpy as np
import pytest

import mithril_losses as mlo

from conftest import array_type, close, installed, native, requires, to_numpy

RNG = np.random.default_rng(20240607)
X = RNG.normal(size=(3, 4))
Y = RNG.normal(size=(3, 4))
R = X - Y


def _huber(r, delta):
    a = np.abs(r)
    return np.where(a <= delta, 0.5 * r * r, delta * (a - 0.5 * delta))


def _torch():
    return pytest.importorskip("torch")


def _t(a, grad=True):
    torch = _torch()
    return torch.tensor(np.asarray(a), dtype=torch.float64, requires_grad=grad)


def _regression_objective():
    return mlo.CompositeLoss({"mse": mlo.get("mse"), "l1": (mlo.get("l1"), 0.5),
                              "huber": (mlo.get("huber", delta=0.5), 2.0)})


# --------------------------------------------------------------------------
# composite values and gradients


def test_composite_total_gradients_and_components_are_the_weighted_sums_of_the_parts(backend):
    objective = _regression_objective()
    x, y = native(backend, X), native(backend, Y)
    total, grads, parts = objective.value_and_grad(x, y, return_components=True)

    expected = {"mse": np.mean(R * R), "l1": np.mean(np.abs(R)), "huber": np.mean(_huber(R, 0.5))}
    close(total, expected["mse"] + 0.5 * expected["l1"] + 2.0 * expected["huber"])
    assert list(parts) == ["mse", "l1", "huber"]
    for name, value in expected.items():
        close(parts[name], value)
    g = (2 * R + 0.5 * np.sign(R) + 2.0 * np.clip(R, -0.5, 0.5)) / R.size
    assert list(grads) == ["input", "target"]
    close(grads["input"], g)
    close(grads["target"], -g)
    assert all(isinstance(v, array_type(backend)) for v in grads.values())
    close(objective(x, y), to_numpy(total))
    close(objective.value(input=x, target=y), to_numpy(total))
    close(objective.grad(x, target=y)["input"], g)
    value, components = objective(x, y, return_components=True)
    close(value, to_numpy(total))
    assert list(components) == list(parts)
    close(components["huber"], expected["huber"])
    assert objective.weights == {"mse": 1.0, "l1": 0.5, "huber": 2.0}


def test_vae_objective_matches_torch_autograd_of_the_same_weighted_objective():
    torch = _torch()
    F = torch.nn.functional
    x, recon = RNG.normal(size=(5, 6)), RNG.normal(size=(5, 6))
    mean, logvar = RNG.normal(size=(5, 3)), RNG.normal(scale=0.5, size=(5, 3))
    kl = mlo.ScheduledLoss(mlo.get("gaussian_kl"), mlo.LossScheduler.linear_warmup(warmup_steps=4, max_weight=0.5),
                           step=1)
    objective = mlo.CompositeLoss({"reconstruction": mlo.get("mse"), "kl": kl}, name="vae")
    for kl_weight in (0.125, 0.375, 0.5):
        total, grads = objective.value_and_grad(input=recon, target=x, mean=mean, logvar=logvar)
        tx, tr, tm, tl = (_t(a) for a in (x, recon, mean, logvar))
        kl_t = 0.5 * (tl.exp() + tm ** 2 - 1 - tl).sum(-1).mean()
        total_t = F.mse_loss(tr, tx) + kl_weight * kl_t
        auto = torch.autograd.grad(total_t, [tr, tx, tm, tl])
        close(total, total_t.item())
        for name, a in zip(("input", "target", "mean", "logvar"), auto):
            close(grads[name], a.numpy())
        objective.step()
        objective.step()


def test_unreduced_parts_add_elementwise_and_vjp_is_the_weighted_sum_of_the_parts_vjps(backend):
    objective = mlo.CompositeLoss([mlo.get("mse", reduction="none"), (mlo.get("l1", reduction="none"), 0.5)])
    x, y = native(backend, X), native(backend, Y)
    close(objective(x, y), R * R + 0.5 * np.abs(R))
    ct = RNG.normal(size=X.shape)
    grads = objective.vjp(native(backend, ct), x, y)
    close(grads["input"], ct * (2 * R + 0.5 * np.sign(R)))
    close(grads["target"], -ct * (2 * R + 0.5 * np.sign(R)))
    close(objective.grad(x, y)["input"], 2 * R + 0.5 * np.sign(R))


def test_parts_whose_values_have_different_shapes_are_an_error():
    objective = mlo.CompositeLoss({"a": mlo.get("mse"), "b": mlo.get("l1", reduction="none")})
    with pytest.raises(ValueError, match=r"different shapes \('a': \(\), 'b': \(3, 4\)\)"):
        objective(X, Y)


def test_nested_composites_sum_their_totals_and_report_them_as_components():
    inner = mlo.CompositeLoss({"mse": mlo.get("mse"), "l1": (mlo.get("l1"), 0.5)}, name="inner")
    objective = mlo.CompositeLoss({"inner": (inner, 2.0), "huber": mlo.get("huber")})
    total, grads, parts = objective.value_and_grad(X, Y, return_components=True)
    inner_value = np.mean(R * R) + 0.5 * np.mean(np.abs(R))
    close(total, 2.0 * inner_value + np.mean(_huber(R, 1.0)))
    close(parts["inner"], inner_value)
    close(grads["input"], (2.0 * (2 * R + 0.5 * np.sign(R)) + np.clip(R, -1, 1)) / R.size)


# --------------------------------------------------------------------------
# routing inputs to parts


def test_parts_get_the_inputs_they_name_and_parts_without_an_input_add_nothing_to_it():
    depth, depth_target = RNG.normal(size=(2, 5)), RNG.normal(size=(2, 5))
    objective = mlo.CompositeLoss({
        "rgb": mlo.get("mse"),
        "depth": mlo.WeightedLoss(mlo.get("l1"), weight=0.3, inputs={"input": "depth", "target": "depth_target"}),
    })
    assert objective.inputs == ("input", "target", "depth", "depth_target")
    total, grads = objective.value_and_grad(input=X, target=Y, depth=depth, depth_target=depth_target)
    d = depth - depth_target
    close(total, np.mean(R * R) + 0.3 * np.mean(np.abs(d)))
    close(grads["input"], 2 * R / R.size)
    close(grads["depth"], 0.3 * np.sign(d) / d.size)
    close(grads["depth_target"], -0.3 * np.sign(d) / d.size)


def test_positional_inputs_bind_in_order_while_every_part_takes_them_at_that_position():
    ce_and_mse = mlo.CompositeLoss({"ce": mlo.get("cross_entropy"), "mse": mlo.get("mse")})
    assert ce_and_mse.positional == (("input", "target"), None)  # cross_entropy's `weight` is the call keyword
    vae = mlo.CompositeLoss({"mse": mlo.get("mse"), "kl": mlo.get("gaussian_kl")})
    assert vae.positional[0] == ("input", "target")
    with pytest.raises(TypeError, match=r"positions bind only \(input, target\): `mean` would be positional argument 3 "
                                        r"but is input 1 of 'kl'"):
        vae(X, Y, X)
    swapped = mlo.CompositeLoss({"a": mlo.get("mse"), "b": mlo.WeightedLoss(mlo.get("mse"), inputs={
        "input": "target", "target": "input"})})
    with pytest.raises(TypeError, match=r"positions bind none: `input` would be positional argument 1 but is input 2 "
                                        r"of 'b'"):
        swapped(X, Y)
    with pytest.raises(TypeError, match=r"takes at most 2 positional inputs \(input, target\); got 3"):
        _regression_objective()(X, Y, Y)
    with pytest.raises(TypeError, match=r"'composite' got an unexpected argument `prediction`"):
        _regression_objective()(prediction=X, target=Y)
    with pytest.raises(TypeError, match=r"'composite' is missing the input\(s\) `logvar`"):
        vae(input=X, target=Y, mean=X)
    with pytest.raises(TypeError, match=r"got `input` twice"):
        _regression_objective()(X, Y, input=X)


@pytest.mark.parametrize(("renamed", "error", "match"), [
    ({"prediction": "p"}, ValueError, r"renames \['prediction'\], which the loss does not take"),
    ({"input": "target"}, ValueError, r"\['target'\] would name two inputs"),
    ({"input": "weight"}, ValueError, r"\['weight'\] would name two inputs or the call keyword"),
    ({"input": 3}, TypeError, r"must be a dict from the loss's input names to new names"),
])
def test_renaming_inputs_is_checked(renamed, error, match):
    with pytest.raises(error, match=match):
        mlo.WeightedLoss(mlo.get("mse"), inputs=renamed)


# --------------------------------------------------------------------------
# weight=, where= and backend= through to the parts


def test_weight_and_where_go_to_every_part_or_to_the_parts_a_dict_names():
    w = RNG.uniform(0.5, 2.0, size=X.shape)
    mask = RNG.random(X.shape) < 0.6
    objective = mlo.CompositeLoss({"mse": mlo.get("mse"), "l1": (mlo.get("l1"), 0.5)})

    total, grads = objective.value_and_grad(X, Y, weight=w)
    close(total, np.sum(w * R * R) / w.sum() + 0.5 * np.sum(w * np.abs(R)) / w.sum())
    close(grads["input"], (2 * w * R + 0.5 * w * np.sign(R)) / w.sum())

    total, grads = objective.value_and_grad(X, Y, weight={"mse": w}, where={"l1": mask})
    close(total, np.sum(w * R * R) / w.sum() + 0.5 * np.sum(np.abs(R)[mask]) / mask.sum())
    close(grads["input"], 2 * w * R / w.sum() + 0.5 * np.where(mask, np.sign(R), 0.0) / mask.sum())

    with pytest.raises(ValueError, match=r"`where` of 'composite' is a dict naming \['mae'\], which are not its parts"):
        objective(X, Y, where={"mae": mask})


def test_one_weight_array_for_parts_that_read_it_differently_is_an_error_and_a_dict_routes_it():
    torch = _torch()
    logits, labels = RNG.normal(size=(4, 3)), np.array([0, 2, 1, 2])
    class_weights = np.array([1.0, 2.0, 0.5])
    objective = mlo.CompositeLoss({
        "ce": mlo.get("cross_entropy"),
        "aux": mlo.WeightedLoss(mlo.get("mse"), weight=0.1, inputs={"input": "aux", "target": "aux_target"}),
    })
    with pytest.raises(ValueError, match=r"'ce': class weights, 'aux': per-element weights"):
        objective(input=logits, target=labels, aux=X, aux_target=Y, weight=class_weights)
    total, grads = objective.value_and_grad(input=logits, target=labels, aux=X, aux_target=Y,
                                            weight={"ce": class_weights})
    tl = _t(logits)
    total_t = torch.nn.functional.cross_entropy(tl, torch.tensor(labels), weight=torch.tensor(class_weights))
    (g,) = torch.autograd.grad(total_t, [tl])
    close(total, total_t.item() + 0.1 * np.mean(R * R))
    close(grads["input"], g.numpy())


@requires("torch")
def test_parts_compute_on_one_backend_even_when_they_see_inputs_of_different_libraries():
    torch = _torch()
    objective = mlo.CompositeLoss({"mse": mlo.get("mse"), "kl": mlo.get("gaussian_kl")})
    mean, logvar = RNG.normal(size=(3, 2)), RNG.normal(size=(3, 2))
    total, grads = objective.value_and_grad(input=torch.tensor(X), target=Y, mean=mean, logvar=logvar)
    assert isinstance(total, torch.Tensor)
    assert all(isinstance(g, torch.Tensor) for g in grads.values())
    close(grads["mean"], mean / 3)
    with mlo.use_backend("torch"):
        assert isinstance(objective(input=X, target=Y, mean=mean, logvar=logvar), torch.Tensor)
    assert isinstance(objective(input=X, target=Y, mean=mean, logvar=logvar, backend="torch"), torch.Tensor)
    assert isinstance(objective(input=X, target=Y, mean=mean, logvar=logvar), np.floating | np.ndarray)


@pytest.mark.skipif(not (installed("torch") and installed("jax")), reason="needs torch and jax")
def test_inputs_of_two_tensor_libraries_are_an_error():
    import jax.numpy as jnp
    import torch

    objective = mlo.CompositeLoss({"mse": mlo.get("mse"), "kl": mlo.get("gaussian_kl")})
    with pytest.raises(TypeError, match=r"two array libraries: `input` is a torch array and `mean` is a jax array"):
        objective(input=torch.tensor(X), target=Y, mean=jnp.ones((3, 2)), logvar=np.ones((3, 2)))


@requires("torch")
def test_a_composite_value_inside_torch_autograd_backpropagates_the_weighted_gradients():
    x = _t(X)
    objective = _regression_objective()
    objective(x, Y).backward()
    close(x.grad.numpy(), objective.grad(X, Y)["input"])


@requires("jax")
def test_a_composite_runs_under_jax_jit():
    import jax
    import jax.numpy as jnp

    jax.config.update("jax_enable_x64", True)
    objective = _regression_objective()
    total, grads = jax.jit(lambda x, y: objective.value_and_grad(x, y))(jnp.asarray(X), jnp.asarray(Y))
    close(total, to_numpy(objective(X, Y)))
    close(grads["input"], objective.grad(X, Y)["input"])


def test_inputs_are_not_modified():
    torch = _torch()
    x, y, s = torch.tensor(X), Y.copy(), np.array([0.2, -0.1])
    params = {"w": torch.tensor(X), "b": np.array([0.0, -1.0, 2.0])}
    outputs, targets = {"a": X.copy()}, {"a": Y.copy()}
    before = [to_numpy(a) for a in (x, y, s, params["w"], params["b"], outputs["a"], targets["a"])]
    _regression_objective().value_and_grad(x, y, weight=np.ones(X.shape))
    mlo.UncertaintyWeightedLoss({"a": mlo.get("mse"), "b": mlo.get("l1")}).value_and_grad(x, y, log_vars=s)
    mlo.MultiOutputLoss({"a": (mlo.get("mse"), 2.0)}).value_and_grad(outputs, targets)
    mlo.l1_regularization({"w": params["w"]}, weight=0.1)
    mlo.l2_regularization({"b": params["b"]}, weight=0.1)
    after = [to_numpy(a) for a in (x, y, s, params["w"], params["b"], outputs["a"], targets["a"])]
    for a, b in zip(before, after):
        np.testing.assert_array_equal(a, b)


# --------------------------------------------------------------------------
# LossCollection


def test_loss_collection_adds_removes_and_reweights_parts():
    collection = mlo.LossCollection().add(mlo.get("mse")).add(mlo.get("l1"), weight=0.5, name="mae")
    assert collection.weights == {"mse": 1.0, "mae": 0.5}
    total, parts = collection(X, Y, return_components=True)
    close(total, np.mean(R * R) + 0.5 * np.mean(np.abs(R)))
    close(parts["mae"], np.mean(np.abs(R)))
    collection.set_weight("mae", 2.0)
    collection.remove("mse")
    close(collection(X, Y), 2.0 * np.mean(np.abs(R)))
    close(collection.grad(X, Y)["input"], 2.0 * np.sign(R) / R.size)
    assert mlo.from_config(collection.to_config()).to_config() == collection.to_config()
    with pytest.raises(ValueError, match=r"'collection' has two parts named 'mae'"):
        collection.add(mlo.get("mse"), name="mae")
    with pytest.raises(KeyError, match=r"Unknown part of 'collection' 'mse'"):
        collection.remove("mse")
    collection.add(mlo.ScheduledLoss(mlo.get("mse"), mlo.LossScheduler.constant(weight=0.5)))
    with pytest.raises(TypeError, match=r"Part 'mse' of 'collection' is a ScheduledLoss"):
        collection.set_weight("mse", 1.0)
    with pytest.raises(ValueError, match=r"'collection' has no parts"):
        mlo.LossCollection()(X, Y)


@pytest.mark.parametrize(("parts", "error", "match"), [
    ({}, ValueError, r"'composite' has no parts"),
    ("mse", TypeError, r"must be a dict name -> loss"),
    ({"a": lambda x, y: x}, TypeError, r"must be a loss \(mlo.get\(...\)\) or an objective .* A plain function"),
    ({"a": (mlo.get("mse"), 1.0, 2.0)}, TypeError, r"Part 'a' of 'composite' must be a loss, an objective or a pair"),
    ({"a": (mlo.get("mse"), "heavy")}, TypeError, r"`weight` must be a real number; got 'heavy'"),
    ([mlo.get("mse"), mlo.get("mse")], ValueError, r"two parts named 'mse'"),
    ({1: mlo.get("mse")}, TypeError, r"must be non-empty strings; got 1"),
    ({"m": mlo.MultiOutputLoss({"a": mlo.get("mse")})}, TypeError, r"cannot be a MultiOutputLoss"),
])
def test_malformed_parts_are_rejected(parts, error, match):
    with pytest.raises(error, match=match):
        mlo.CompositeLoss(parts)


# --------------------------------------------------------------------------
# schedules


@pytest.mark.parametrize(("schedule", "expected"), [
    (mlo.LossScheduler.constant(weight=0.3), {0: 0.3, 7: 0.3, 10**6: 0.3}),
    (mlo.LossScheduler.linear_warmup(warmup_steps=1000, max_weight=2.0), {0: 0.0, 250: 0.5, 500: 1.0, 1000: 2.0,
                                                                          5000: 2.0}),
    (mlo.LossScheduler.linear_warmup(warmup_steps=0), {0: 1.0, 3: 1.0}),
    (mlo.LossScheduler.cosine_annealing(period=100, min_weight=0.1, max_weight=1.0),
     {0: 1.0, 25: 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi / 4)), 50: 0.55, 100: 1.0, 150: 0.55,
      199: 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.99))}),
    (mlo.LossScheduler.warmup_cosine(warmup_steps=10, decay_steps=100, min_weight=0.1, max_weight=1.0),
     {0: 0.0, 5: 0.5, 10: 1.0, 35: 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi / 4)), 60: 0.55, 110: 0.1, 500: 0.1}),
    (mlo.LossScheduler.exponential_decay(decay_steps=10, decay_rate=0.5), {0: 1.0, 9: 1.0, 10: 0.5, 25: 0.25}),
])
def test_schedules_match_their_closed_forms(schedule, expected):
    for step, weight in expected.items():
        assert schedule(step) == pytest.approx(weight, rel=1e-14, abs=1e-15)
        assert schedule(np.int64(step)) == pytest.approx(weight, rel=1e-14, abs=1e-15)
    assert mlo.LossScheduler.from_config(json.loads(json.dumps(schedule.to_config()))) == schedule


def test_scheduled_loss_weight_follows_the_step_and_objectives_move_every_scheduled_part():
    warmup = mlo.ScheduledLoss(mlo.get("l1"), mlo.LossScheduler.linear_warmup(warmup_steps=4), name="warm")
    inner = mlo.CompositeLoss({"warm": warmup}, name="inner")
    objective = mlo.CompositeLoss({"mse": mlo.get("mse"), "inner": inner})
    l1, mse = np.mean(np.abs(R)), np.mean(R * R)
    for step in range(6):
        assert warmup.current_step == step
        assert warmup.weight == min(1.0, step / 4)
        close(objective(X, Y), mse + min(1.0, step / 4) * l1)
        close(objective.grad(X, Y)["input"], (2 * R + min(1.0, step / 4) * np.sign(R)) / R.size)
        objective.step()
    objective.set_step(2)
    assert warmup.current_step == 2 and objective.to_config()["parts"]["inner"]["loss"]["parts"]["warm"]["step"] == 2
    assert mlo.from_config(objective.to_config()).to_config() == objective.to_config()


def test_a_python_callable_schedule_works_in_code_but_has_no_config():
    scheduled = mlo.ScheduledLoss(mlo.get("mse"), lambda step: 0.25 * step, step=2)
    close(scheduled(X, Y), 0.5 * np.mean(R * R))
    with pytest.raises(TypeError, match=r"has the Python callable .* as its schedule, which has no config"):
        scheduled.to_config()
    for bad in (float("nan"), "high", None):
        with pytest.raises(ValueError, match=r"The schedule of 'mse' gave .* at step 0; a weight must be a finite"):
            mlo.ScheduledLoss(mlo.get("mse"), lambda step, bad=bad: bad)(X, Y)
    with pytest.raises(TypeError, match=r"`schedule` must be a LossScheduler or a callable"):
        mlo.ScheduledLoss(mlo.get("mse"), 0.5)


@pytest.mark.parametrize(("call", "error", "match"), [
    (lambda: mlo.ScheduledLoss(mlo.get("mse"), mlo.LossScheduler.constant(), step=-1), ValueError,
     r"`step` must be a non-negative integer; got -1"),
    (lambda: mlo.ScheduledLoss(mlo.get("mse"), mlo.LossScheduler.constant()).set_step(1.5), TypeError,
     r"`step` must be a non-negative integer; got 1.5"),
    (lambda: mlo.LossScheduler.constant()(True), TypeError, r"`step` must be a non-negative integer; got True"),
    (lambda: mlo.LossScheduler.linear_warmup(warmup_steps=-1), ValueError, r"`warmup_steps` must lie in \[0, inf\)"),
    (lambda: mlo.LossScheduler.cosine_annealing(period=0), ValueError, r"`period` must lie in \[1, inf\)"),
    (lambda: mlo.LossScheduler.exponential_decay(decay_steps=3, decay_rate=0.0), ValueError,
     r"`decay_rate` must lie in \(0.0, inf\)"),
    (lambda: mlo.LossScheduler("cosine"), KeyError, r"Unknown schedule 'cosine'. Closest: .*cosine_annealing"),
    (lambda: mlo.LossScheduler("linear_warmup", max_weight=1.0), TypeError,
     r"schedule 'linear_warmup' is missing the parameter\(s\) `warmup_steps`"),
    (lambda: mlo.LossScheduler.from_config({"kind": "constant", "weight": 1.0, "wieght": 2.0}), TypeError,
     r"'constant' got an unknown option `wieght`"),
    (lambda: mlo.LossScheduler.from_config({"kind": "linear_warmup"}), TypeError,
     r"missing the parameter\(s\) `warmup_steps`"),
    (lambda: mlo.LossScheduler.from_config(["constant"]), ValueError, r"a dict with a string 'kind'"),
])
def test_schedule_and_step_errors(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_schedule_configs_fill_in_defaults():
    schedule = mlo.LossScheduler.from_config({"kind": "cosine_annealing", "period": 10})
    assert schedule == mlo.LossScheduler.cosine_annealing(period=10, min_weight=0.0, max_weight=1.0)


# --------------------------------------------------------------------------
# LossMetrics


def test_loss_metrics_are_bias_corrected_moving_averages_per_name():
    torch = _torch()
    metrics = mlo.LossMetrics(decay=0.9)
    assert metrics.update({"total": 3.0, "kl": np.float32(1.0)}) == {"total": 3.0, "kl": 1.0}
    metrics.update({"total": torch.tensor(2.0)})
    values = metrics.update({"total": np.array(1.0), "kl": 0.5})
    # weights decay^(n - k), normalised: the moving average from 0 divided by 1 - decay^n
    assert values["total"] == pytest.approx((0.81 * 3.0 + 0.9 * 2.0 + 1.0) / (0.81 + 0.9 + 1.0), rel=1e-14)
    assert values["kl"] == pytest.approx((0.9 * 1.0 + 0.5) / 1.9, rel=1e-14)
    artifex = 0.1 * (0.81 * 3.0 + 0.9 * 2.0 + 1.0)  # the same average started at 0, without the correction
    assert values["total"] == pytest.approx(artifex / (1 - 0.9 ** 3), rel=1e-14)
    assert metrics.counts == {"total": 3, "kl": 2}
    assert metrics.values == values
    metrics.reset()
    assert metrics.values == {} and metrics.counts == {}
    last = mlo.LossMetrics(decay=0.0)
    last.update({"a": 5.0})
    assert last.update({"a": 2.0}) == {"a": 2.0}


@pytest.mark.parametrize(("call", "error", "match"), [
    (lambda: mlo.LossMetrics(decay=1.0), ValueError, r"`decay` must lie in \[0.0, 1.0\)"),
    (lambda: mlo.LossMetrics().update([1.0]), TypeError, r"update takes a dict name -> loss value; got list"),
    (lambda: mlo.LossMetrics().update({"a": np.ones(2)}), TypeError, r"0-d arrays; `a` is"),
    (lambda: mlo.LossMetrics().update({"a": "1.0"}), TypeError, r"real numbers or 0-d arrays; `a` is '1.0'"),
])
def test_loss_metrics_errors(call, error, match):
    with pytest.raises(error, match=match):
        call()


# --------------------------------------------------------------------------
# safe_log and safe_divide


def test_safe_log_and_safe_divide_follow_artifex_on_every_backend(backend):
    x = np.array([0.0, 1e-12, 0.5, 2.0, -1.0])
    close(mlo.safe_log(native(backend, x)), np.log(np.maximum(x, 1e-8)))
    close(mlo.safe_log(native(backend, x), eps=1e-3), np.log(np.maximum(x, 1e-3)))
    den = np.array([0.0, 1.0, -2.0, 4.0, 1e-9])
    close(mlo.safe_divide(native(backend, x), native(backend, den)), x / (den + 1e-8), rtol=1e-15)
    close(mlo.safe_divide(native(backend, x), 2.0, eps=0.5), x / 2.5)
    assert isinstance(mlo.safe_log(native(backend, x)), array_type(backend))


def test_safe_functions_take_python_numbers_and_check_their_arguments():
    assert float(mlo.safe_log(0.0)) == pytest.approx(math.log(1e-8), rel=1e-15)
    assert float(mlo.safe_divide(1.0, 0.0)) == pytest.approx(1e8, rel=1e-15)
    with pytest.raises(ValueError, match=r"`eps` must lie in \(0.0, inf\); got 0.0"):
        mlo.safe_log(X, eps=0.0)
    with pytest.raises(TypeError, match=r"`x` must be a real floating-point array; got dtype int64"):
        mlo.safe_log(np.arange(3))
    if installed("torch"):
        import torch

        with pytest.raises(TypeError, match=r"`numerator` is a torch array and `denominator` is a numpy array"):
            mlo.safe_divide(torch.ones(2), np.ones(2))


# --------------------------------------------------------------------------
# uncertainty weighting


def _multitask():
    return mlo.UncertaintyWeightedLoss({
        "seg": mlo.get("cross_entropy"),
        "depth": mlo.WeightedLoss(mlo.get("mse"), inputs={"input": "depth", "target": "depth_target"}),
    })


LOGITS, LABELS = RNG.normal(size=(6, 4)), np.array([0, 3, 1, 1, 2, 0])
DEPTH, DEPTH_TARGET = RNG.normal(size=(6, 2)), RNG.normal(size=(6, 2))
LOG_VARS = np.array([0.3, -0.4])
TASK_INPUTS = {"input": LOGITS, "target": LABELS, "depth": DEPTH, "depth_target": DEPTH_TARGET}


def test_uncertainty_weighting_matches_torch_autograd():
    torch = _torch()
    F = torch.nn.functional
    total, grads, parts = _multitask().value_and_grad(**TASK_INPUTS, log_vars=LOG_VARS, return_components=True)
    tl, td, tt, ts = _t(LOGITS), _t(DEPTH), _t(DEPTH_TARGET), _t(LOG_VARS)
    losses = torch.stack([F.cross_entropy(tl, torch.tensor(LABELS)), F.mse_loss(td, tt)])
    total_t = (torch.exp(-ts) * losses + ts).sum()
    auto = torch.autograd.grad(total_t, [tl, td, tt, ts])
    close(total, total_t.item())
    for name, a in zip(("input", "depth", "depth_target", "log_vars"), auto):
        close(grads[name], a.numpy())
    close(parts["seg"], losses[0].item())
    close(grads["log_vars"], 1.0 - np.exp(-LOG_VARS) * losses.detach().numpy())


def test_uncertainty_weighting_matches_finite_differences():
    objective = _multitask()
    grads = objective.grad(**TASK_INPUTS, log_vars=LOG_VARS)
    h = 1e-5

    def f(**changed):
        return float(objective(**{**TASK_INPUTS, "log_vars": LOG_VARS, **changed}))

    for i in range(2):
        e = np.zeros(2)
        e[i] = h
        fd = (f(log_vars=LOG_VARS + e) - f(log_vars=LOG_VARS - e)) / (2 * h)
        assert grads["log_vars"][i] == pytest.approx(fd, rel=1e-8)
    direction = RNG.normal(size=DEPTH.shape)
    fd = (f(depth=DEPTH + h * direction) - f(depth=DEPTH - h * direction)) / (2 * h)
    assert np.sum(grads["depth"] * direction) == pytest.approx(fd, rel=1e-8)


def test_uncertainty_weighting_on_every_backend(backend):
    objective = mlo.UncertaintyWeightedLoss([mlo.get("mse"), mlo.get("l1")])
    total, grads = objective.value_and_grad(native(backend, X), native(backend, Y), log_vars=native(backend, LOG_VARS))
    losses = np.array([np.mean(R * R), np.mean(np.abs(R))])
    precision = np.exp(-LOG_VARS)
    close(total, np.sum(precision * losses + LOG_VARS))
    close(grads["input"], (precision[0] * 2 * R + precision[1] * np.sign(R)) / R.size)
    close(grads["log_vars"], 1.0 - precision * losses)
    assert isinstance(grads["log_vars"], array_type(backend))


@pytest.mark.parametrize(("call", "error", "match"), [
    (lambda: _multitask()(**TASK_INPUTS, log_vars=np.zeros(3)), ValueError,
     r"`log_vars` of 'uncertainty_weighted' must have shape \(2,\): one log-variance per task \(seg, depth\); "
     r"got \(3,\)"),
    (lambda: _multitask()(**TASK_INPUTS), TypeError, r"missing the input\(s\) `log_vars`"),
    (lambda: _multitask()(**TASK_INPUTS, log_vars=np.zeros(2, dtype=int)), TypeError,
     r"`log_vars` must be a real floating-point array"),
    (lambda: mlo.UncertaintyWeightedLoss({"a": mlo.get("mse", reduction="none")})(X, Y, log_vars=np.zeros(1)),
     ValueError, r"Task 'a' of 'uncertainty_weighted' gives a loss of shape \(3, 4\)"),
    (lambda: mlo.UncertaintyWeightedLoss({"a": mlo.WeightedLoss(mlo.get("mse"), inputs={"target": "log_vars"})}),
     ValueError, r"Task 'a' .* takes an input named `log_vars`"),
    (lambda: _multitask().vjp(1.0, **TASK_INPUTS, log_vars=LOG_VARS), TypeError,
     r"'uncertainty_weighted' has no vjp: its total is a scalar"),
])
def test_uncertainty_weighting_errors(call, error, match):
    with pytest.raises(error, match=match):
        call()


# --------------------------------------------------------------------------
# multi-output objectives


def test_multi_output_gradients_match_torch_autograd_of_the_weighted_sum():
    torch = _torch()
    F = torch.nn.functional
    boxes, box_targets = RNG.normal(size=(6, 4)), RNG.normal(size=(6, 4))
    objective = mlo.MultiOutputLoss({"logits": (mlo.get("cross_entropy", label_smoothing=0.1), 1.0),
                                     "box": (mlo.get("smooth_l1", beta=0.5), 0.5), "depth": mlo.get("mse")})
    outputs = {"logits": LOGITS, "box": boxes, "depth": DEPTH}
    targets = {"logits": LABELS, "box": box_targets, "depth": DEPTH_TARGET}
    total, output_gradients, parts = objective.value_and_grad(outputs, targets, return_components=True)
    tl, tb, td = _t(LOGITS), _t(boxes), _t(DEPTH)
    terms = [F.cross_entropy(tl, torch.tensor(LABELS), label_smoothing=0.1),
             F.smooth_l1_loss(tb, _t(box_targets, False), beta=0.5), F.mse_loss(td, _t(DEPTH_TARGET, False))]
    total_t = terms[0] + 0.5 * terms[1] + terms[2]
    auto = torch.autograd.grad(total_t, [tl, tb, td])
    close(total, total_t.item())
    assert list(output_gradients) == ["logits", "box", "depth"]
    for name, a in zip(outputs, auto):
        close(output_gradients[name], a.numpy())
    close(parts["box"], terms[1].item())


def test_multi_output_gradients_have_each_outputs_shape_dtype_and_array_type(backend):
    objective = mlo.MultiOutputLoss({"a": (mlo.get("mse"), 2.0), "b": mlo.get("l1")})
    outputs = {"a": native(backend, X, "float32"), "b": native(backend, DEPTH, "float32")}
    targets = {"a": native(backend, Y, "float32"), "b": native(backend, DEPTH_TARGET, "float32")}
    total, output_gradients = objective.value_and_grad(outputs, targets)
    d = DEPTH - DEPTH_TARGET
    close(total, 2 * np.mean(R * R) + np.mean(np.abs(d)), rtol=1e-5, atol=1e-6)
    close(output_gradients["a"], 4 * R / R.size, rtol=1e-5, atol=1e-6)
    close(output_gradients["b"], np.sign(d) / d.size, rtol=1e-5, atol=1e-6)
    for name, g in output_gradients.items():
        assert isinstance(g, array_type(backend))
        assert tuple(g.shape) == tuple(outputs[name].shape)
        assert str(g.dtype).endswith("float32")


def test_multi_output_losses_with_several_other_inputs_take_a_dict_of_targets_and_per_output_weights():
    torch = _torch()
    var = RNG.uniform(0.5, 2.0, size=DEPTH.shape)
    w = RNG.uniform(0.5, 2.0, size=X.shape)
    objective = mlo.MultiOutputLoss({"mu": mlo.get("gaussian_nll"), "rgb": (mlo.get("mse"), 0.5)})
    output_gradients = objective.grad({"mu": DEPTH, "rgb": X}, {"mu": {"target": DEPTH_TARGET, "var": var}, "rgb": Y},
                                      weight={"rgb": w})
    tm = _t(DEPTH)
    (g,) = torch.autograd.grad(torch.nn.functional.gaussian_nll_loss(tm, _t(DEPTH_TARGET, False), _t(var, False)), [tm])
    close(output_gradients["mu"], g.numpy())
    close(output_gradients["rgb"], 0.5 * 2 * w * R / w.sum())


@pytest.mark.parametrize(("call", "error", "match"), [
    (lambda m: m({"mu": DEPTH}, {"mu": DEPTH_TARGET}), ValueError,
     r"`targets\['mu'\]` of 'multi_output' must be a dict naming the loss's inputs target, var"),
    (lambda m: m({"mu": DEPTH}, {"mu": {"target": DEPTH_TARGET}}), TypeError,
     r"`targets\['mu'\]` of 'multi_output' is missing the input\(s\) `var`"),
    (lambda m: m({"mu": DEPTH}, {}), TypeError, r"`targets\['mu'\]` .* missing the input\(s\) `target`, `var`"),
    (lambda m: m({"mean": DEPTH}, {}), ValueError, r"must hold exactly its outputs \['mu'\]; missing \['mu'\], not its "
                                                   r"outputs \['mean'\]"),
    (lambda m: m(DEPTH, {}), TypeError, r"`outputs` of 'multi_output' must be a dict output name -> array"),
    (lambda m: m({"mu": DEPTH}, DEPTH_TARGET), TypeError, r"`targets` of 'multi_output' must be a dict"),
    (lambda m: m({"mu": DEPTH}, {"mu": {"target": DEPTH, "var": DEPTH}, "muu": DEPTH}), ValueError,
     r"`targets` of 'multi_output' is a dict naming \['muu'\], which are not its parts"),
    (lambda m: m.vjp(1.0, {"mu": DEPTH}, {}), TypeError, r"'multi_output' has no vjp"),
])
def test_multi_output_errors(call, error, match):
    with pytest.raises(error, match=match):
        call(mlo.MultiOutputLoss({"mu": mlo.get("gaussian_nll")}))


# --------------------------------------------------------------------------
# regularisation


def test_l1_and_l2_regularization_of_a_parameter_dict(backend):
    w = RNG.normal(size=(3, 2))
    w[0, 0] = 0.0
    b = RNG.normal(size=(2,))
    params = {"w": native(backend, w, "float32"), "b": native(backend, b)}
    value, grads = mlo.l2_regularization(params, weight=0.01)
    # Mithril's convention: weight/2 * sum x^2, so the gradient is weight * x (weight decay)
    close(value, 0.005 * (np.sum(w.astype(np.float32) ** 2) + np.sum(b ** 2)), rtol=1e-6)
    close(grads["w"], 0.01 * w, rtol=1e-6)
    close(grads["b"], 0.01 * b)
    value, grads = mlo.l1_regularization(params, weight=0.01)
    close(value, 0.01 * (np.sum(np.abs(w)) + np.sum(np.abs(b))), rtol=1e-6)
    close(grads["w"], 0.01 * np.sign(w), rtol=1e-6)
    assert to_numpy(grads["w"])[0, 0] == 0.0
    assert list(grads) == ["w", "b"]
    assert str(grads["w"].dtype).endswith("float32") and str(grads["b"].dtype).endswith("float64")
    assert all(isinstance(g, array_type(backend)) for g in grads.values())
    value, grads = mlo.l2_regularization([params["w"], params["b"]], weight=0.01)
    assert isinstance(grads, list) and len(grads) == 2


def test_regularization_terms_in_an_objective_match_torch_autograd():
    torch = _torch()
    w, b = RNG.normal(size=(3, 2)), RNG.normal(size=(2,))
    objective = mlo.CompositeLoss({"data": mlo.get("mse"), "l2": mlo.Regularization("l2", weight=1e-2),
                                   "l1": mlo.Regularization("l1", weight=1e-3)})
    total, grads = objective.value_and_grad(X, Y, params={"w": w, "b": b})
    tx, tw, tb = _t(X), _t(w), _t(b)
    penalty = 0.5e-2 * ((tw ** 2).sum() + (tb ** 2).sum()) + 1e-3 * (tw.abs().sum() + tb.abs().sum())
    total_t = torch.nn.functional.mse_loss(tx, _t(Y, False)) + penalty
    gx, gw, gb = torch.autograd.grad(total_t, [tx, tw, tb])
    close(total, total_t.item())
    close(grads["input"], gx.numpy())
    close(grads["params"]["w"], gw.numpy())
    close(grads["params"]["b"], gb.numpy())
    assert mlo.from_config(objective.to_config()).to_config() == objective.to_config()


@pytest.mark.parametrize(("call", "error", "match"), [
    (lambda: mlo.l2_regularization({}, weight=0.1), ValueError, r"`params` must hold at least one parameter array"),
    (lambda: mlo.l1_regularization({"w": np.arange(3)}, weight=0.1), TypeError,
     r"`params\['w'\]` must be a real floating-point array"),
    (lambda: mlo.Regularization("l3", weight=0.1), ValueError, r"`norm` must be one of 'l1', 'l2'; got 'l3'"),
    (lambda: mlo.l2_regularization({"w": X}, weight=math.inf), ValueError, r"`weight` must be finite"),
])
def test_regularization_errors(call, error, match):
    with pytest.raises(error, match=match):
        call()


# --------------------------------------------------------------------------
# configs and objective files


def _every_kind():
    scheduled = mlo.ScheduledLoss(mlo.get("gaussian_kl"), mlo.LossScheduler.warmup_cosine(warmup_steps=2,
                                                                                        decay_steps=5), step=3)
    composite = mlo.CompositeLoss({
        "recon": mlo.get("mse"), "kl": scheduled, "reg": mlo.Regularization("l2", weight=1e-3),
        "inner": mlo.CompositeLoss({"l1": (mlo.get("l1"), 0.5)}, name="inner"),
        "depth": mlo.WeightedLoss(mlo.get("huber", delta=0.3), weight=0.2,
                                  inputs={"input": "depth", "target": "depth_target"}),
    }, name="objective")
    return {
        "composite": composite,
        "collection": mlo.LossCollection().add(mlo.get("mse"), weight=2.0),
        "weighted": mlo.WeightedLoss(mlo.get("cross_entropy", label_smoothing=0.2), weight=0.7),
        "scheduled": scheduled,
        "regularization": mlo.Regularization("l1", weight=0.5),
        "uncertainty": _multitask(),
        "multi_output": mlo.MultiOutputLoss({"logits": (mlo.get("cross_entropy"), 1.0), "box": mlo.get("giou")}),
    }


@pytest.mark.parametrize("kind", list(_every_kind()))
def test_every_objective_round_trips_through_json(kind):
    objective = _every_kind()[kind]
    config = objective.to_config()
    rebuilt = mlo.from_config(json.loads(json.dumps(config)))
    assert type(rebuilt) is type(objective)
    assert rebuilt.to_config() == config


def _composite_inputs():
    mean, logvar = RNG.normal(size=(3, 2)), RNG.normal(size=(3, 2))
    return {"input": X, "target": Y, "mean": mean, "logvar": logvar, "params": {"w": X[:2]},
            "depth": DEPTH, "depth_target": DEPTH_TARGET}


def test_a_rebuilt_objective_computes_the_same_values_and_gradients():
    objective = _every_kind()["composite"]
    rebuilt = mlo.from_config(objective.to_config())
    inputs = _composite_inputs()
    total, grads = objective.value_and_grad(**inputs)
    total2, grads2 = rebuilt.value_and_grad(**inputs)
    close(total2, to_numpy(total))
    for name in ("input", "mean", "logvar", "depth"):
        close(grads2[name], to_numpy(grads[name]))
    close(grads2["params"]["w"], to_numpy(grads["params"]["w"]))


_TOML = """
backend = "{backend}"

[objective]
composite = "composite"
name = "vae"

[objective.parts.reconstruction]
name = "mse"

[objective.parts.kl]
composite = "scheduled"
step = 2
loss = {{ name = "gaussian_kl" }}
schedule = {{ kind = "linear_warmup", warmup_steps = 4, max_weight = 0.5 }}
"""


def _vae_file(tmp_path, fmt, backend):
    path = tmp_path / f"objective.{fmt}"
    if fmt == "toml":
        path.write_text(_TOML.format(backend=backend), encoding="utf-8")
    else:
        kl = mlo.ScheduledLoss(mlo.get("gaussian_kl"), mlo.LossScheduler.linear_warmup(warmup_steps=4, max_weight=0.5),
                               step=2)
        objective = mlo.CompositeLoss({"reconstruction": mlo.get("mse"), "kl": kl}, name="vae")
        path.write_text(json.dumps({"backend": backend, "objective": objective.to_config()}), encoding="utf-8")
    return path


@pytest.mark.parametrize("fmt", ["json", "toml"])
@pytest.mark.parametrize("backend_name", ["numpy", pytest.param("torch", marks=requires("torch"))])
def test_load_objective_reads_the_objective_and_its_backend_from_a_file(tmp_path, fmt, backend_name):
    objective, backend = mlo.load_objective(_vae_file(tmp_path, fmt, backend_name))
    assert backend == backend_name
    mean, logvar = RNG.normal(size=(3, 2)), RNG.normal(size=(3, 2))
    kl = np.mean(0.5 * np.sum(np.exp(logvar) + mean ** 2 - 1 - logvar, axis=-1))
    with mlo.use_backend(backend):
        total, grads = objective.value_and_grad(input=X, target=Y, mean=mean, logvar=logvar)
    close(total, np.mean(R * R) + 0.25 * kl)
    close(grads["mean"], 0.25 * mean / 3)
    assert type(total).__module__.partition(".")[0] == backend_name
    assert isinstance(grads["input"], array_type(backend_name))


@requires("torch")
def test_switching_the_backend_is_one_edit_of_the_file(tmp_path):
    path = _vae_file(tmp_path, "json", "numpy")
    data = json.loads(path.read_text(encoding="utf-8"))
    inputs = {"input": X, "target": Y, "mean": np.ones((3, 2)), "logvar": np.zeros((3, 2))}
    objective, backend = mlo.load_objective(path)
    on_numpy = objective.grad(**inputs, backend=backend)["input"]
    path.write_text(json.dumps({**data, "backend": "torch"}), encoding="utf-8")
    objective, backend = mlo.load_objective(path)
    on_torch = objective.grad(**inputs, backend=backend)["input"]
    assert isinstance(on_torch, array_type("torch")) and isinstance(on_numpy, np.ndarray)
    close(on_torch, on_numpy)


def test_a_file_without_a_backend_leaves_it_to_the_inputs(tmp_path):
    path = tmp_path / "o.json"
    path.write_text(json.dumps({"objective": {"name": "mse"}}), encoding="utf-8")
    objective, backend = mlo.load_objective(path)
    assert backend is None and isinstance(objective, mlo.Loss)


@pytest.mark.parametrize(("config", "error", "match"), [
    ({"composite": "wieghted", "loss": {"name": "mse"}}, KeyError,
     r"config: Unknown composite kind 'wieghted'. Closest: weighted"),
    ({"composite": "weighted", "loss": {"name": "mse"}, "wieght": 2.0}, ValueError,
     r"at config: a 'weighted' config has unknown keys \['wieght'\]; its keys are composite, loss, weight, name"),
    ({"composite": "scheduled", "loss": {"name": "mse"}}, ValueError, r"missing keys \['schedule'\]"),
    ({"composite": "composite", "parts": {"a": {"name": "msee"}}}, KeyError,
     r"config.parts\['a'\]: Unknown loss 'msee'. Closest: mse"),
    ({"composite": "composite", "parts": {"a": {"name": "mse", "delta": 1.0}}}, TypeError,
     r"config.parts\['a'\]: 'mse' got an unknown option `delta`"),
    ({"composite": "composite", "parts": {"a": {"composite": "scheduled", "loss": {"name": "mse"},
                                                "schedule": {"kind": "cosine", "period": 3}}}}, KeyError,
     r"config.parts\['a'\].schedule: Unknown schedule 'cosine'"),
    ({"composite": "scheduled", "loss": {"name": "mse"}, "schedule": {"kind": "constant"}, "step": -2}, ValueError,
     r"config: `step` must be a non-negative integer; got -2"),
    ({"composite": "weighted", "loss": {"name": "mse"}, "weight": "heavy"}, TypeError,
     r"config: `weight` must be a real number; got 'heavy'"),
    ({"composite": "weighted", "loss": "mse"}, ValueError, r"config.loss: expected a dict .*got 'mse'"),
    ({"composite": "composite", "parts": ["mse"]}, ValueError, r"config.parts: expected a dict name -> config"),
    ({"composite": "regularization", "norm": "l3", "weight": 1.0}, ValueError, r"config: `norm` must be one of"),
    ({"composite": "uncertainty_weighted", "tasks": {}}, ValueError, r"config: 'uncertainty_weighted' has no parts"),
])
def test_malformed_configs_name_what_is_wrong_and_where(config, error, match):
    with pytest.raises(error, match=match):
        mlo.from_config(config)


@pytest.mark.parametrize(("name", "text", "match"), [
    ("o.yaml", "{}", r"must end in .json or .toml; got '.yaml'"),
    ("o.json", "{not json", r"not readable as JSON"),
    ("o.toml", "objective = [", r"not readable as TOML"),
    ("o.json", "[1, 2]", r"expected an object .* got list"),
    ("o.json", '{"backend": "numpy"}', r"missing the key\(s\) \['objective'\]"),
    ("o.json", '{"backnd": "numpy", "objective": {"name": "mse"}}', r"unknown keys \['backnd'\]"),
    ("o.json", '{"backend": "tensorflow", "objective": {"name": "mse"}}', r"Unknown backend 'tensorflow'"),
])
def test_objective_file_errors_name_the_file(tmp_path, name, text, match):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ValueError, match=match) as info:
        mlo.load_objective(path)
    assert str(path) in str(info.value)


def test_errors_inside_a_file_s_objective_name_the_file_and_the_place(tmp_path):
    path = tmp_path / "o.toml"
    path.write_text('[objective]\ncomposite = "composite"\n[objective.parts.a]\nname = "msee"\n', encoding="utf-8")
    with pytest.raises(KeyError, match=rf"In {str(path)!s}: objective.parts\['a'\]: Unknown loss 'msee'"):
        mlo.load_objective(path)
    with pytest.raises(ValueError, match=r"the file cannot be read"):
        mlo.load_objective(tmp_path / "missing.json")


def test_toml_without_tomllib_or_tomli_is_a_clear_error(tmp_path, monkeypatch):
    path = tmp_path / "o.toml"
    path.write_text('[objective]\nname = "mse"\n', encoding="utf-8")
    monkeypatch.setitem(sys.modules, "tomllib", None)
    monkeypatch.setitem(sys.modules, "tomli", None)
    with pytest.raises(ValueError, match=r"reading TOML needs Python 3.11\+ \(tomllib\) or the tomli package"):
        mlo.load_objective(path)


def test_the_composition_api_is_exported_at_the_top_level():
    from mithril_losses import compose

    for name in compose.__all__:
        if name != "from_config":
            assert getattr(mlo, name) is getattr(compose, name)
            assert name in mlo.__all__
