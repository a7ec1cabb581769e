"""mithril_losses.integrations.mithril: output gradients into a compiled Mithril model's backward pass.

Two kinds of model are used:

- real Mithril models (``mithril==0.1.1``, NumPy backend): trained with mithril_losses' gradients
  and, in lockstep, with Mithril's own loss primitives compiled inside a ``TrainModel``; the
  parameter gradients must agree at every step. mithril 0.1.1 needs Python 3.12 and numpy<2.2,
  so these tests are skipped elsewhere (``.ci/run`` runs them in a separate Python 3.12 environment);
- small NumPy stand-ins with Mithril's two calling conventions (0.1.1's ``evaluate_gradients`` and
  the newer ``evaluate(..., output_gradients=...)``, which is not installable here). They are not
  Mithril: an affine map with a hand-written backward, which records what it is handed and, like
  Mithril's NumPy backend, writes into the output gradient it receives.
"""

from __future__ import annotations

import re

import numpy as np
import pytest

import mithril_losses as mlo
from mithril_losses.integrations.mithril import Step, backward, loss_and_gradients

MITHRIL_MISSING = "mithril==0.1.1 is not installed (it needs Python 3.12 and numpy<2.2; .ci/run tests it there)"
STEPS = 5
LEARNING_RATE = 0.5


# ---------------------------------------------------------------------------
# stand-ins for the two API generations


class _AffineStandIn:
    """``output = input @ w + b`` with Mithril's calling conventions; records each backward call.

    Its backward is written by hand (d w = input^T g, d b = sum over rows of g) and, like
    Mithril's NumPy backend, it adds into the output gradient it is handed.
    """

    output_keys = ["output"]

    def __init__(self, shapes):
        self.shapes = shapes
        self.handed = []  # (output gradients as received, a snapshot of their values, data)

    def _forward(self, params, data):
        return {"output": data["input"] @ params["w"] + params["b"]}

    def _backward(self, params, data, output_gradients):
        self.handed.append((output_gradients, {k: g.copy() for k, g in output_gradients.items()}, data))
        g = output_gradients["output"]
        grads = {"w": data["input"].T @ g, "b": g.sum(axis=0)}
        g += 1.0  # the in-place write that the integration's copy must absorb
        return grads


class Mithril011StandIn(_AffineStandIn):
    """Stand-in for mithril 0.1.1: ``evaluate(params, data)``, ``evaluate_gradients(params, data, output_gradients)``."""

    def evaluate(self, params=None, data=None):
        return self._forward(params, data)

    def evaluate_gradients(self, params=None, data=None, output_gradients=None):
        return self._backward(params, data, output_gradients)


class NewerApiStandIn(_AffineStandIn):
    """Stand-in for the newer Mithril API: ``evaluate(params, data, output_gradients=...)`` -> (outputs, gradients)."""

    def evaluate(self, params=None, data=None, output_gradients=None):
        outputs = self._forward(params, data)
        if output_gradients is None:
            return outputs
        return outputs, self._backward(params, data, output_gradients)


STAND_INS = [Mithril011StandIn, NewerApiStandIn]


def _affine_problem(n=6, d=4, c=3, seed=0):
    rng = np.random.default_rng(seed)
    params = {"w": rng.normal(size=(d, c)), "b": rng.normal(size=c)}
    data = {"input": rng.normal(size=(n, d)), "target": rng.normal(size=(n, c))}
    return params, data


def _affine_mse_gradients(params, data):
    """d mean((x w + b - t)^2) / d (w, b), by hand: the output gradient is 2 (out - t) / size."""
    x, t = data["input"], data["target"]
    g = 2.0 * (x @ params["w"] + params["b"] - t) / t.size
    return {"w": x.T @ g, "b": g.sum(axis=0)}


@pytest.mark.parametrize("stand_in", STAND_INS, ids=lambda c: c.__name__)
def test_stand_in_loss_and_gradients_match_the_hand_derived_gradients(stand_in):
    params, data = _affine_problem()
    model = stand_in({"output": [6, 3]})
    step = loss_and_gradients(model, params, data, {"output": (mlo.get("mse"), "target")})
    assert isinstance(step, Step)
    out = data["input"] @ params["w"] + params["b"]
    np.testing.assert_allclose(step.loss, np.mean((out - data["target"]) ** 2), rtol=1e-14)
    np.testing.assert_allclose(step.losses["output"], step.loss, rtol=0)
    np.testing.assert_allclose(step.outputs["output"], out, rtol=1e-15)
    expected = _affine_mse_gradients(params, data)
    for name in ("w", "b"):
        np.testing.assert_allclose(step.gradients[name], expected[name], rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("stand_in", STAND_INS, ids=lambda c: c.__name__)
def test_what_the_model_is_handed(stand_in):
    """One call, with a copy of each output gradient and the data dict itself (targets included)."""
    params, data = _affine_problem()
    model = stand_in({"output": [6, 3]})
    ours = np.full((6, 3), 0.25)
    before = ours.copy()
    backward(model, params, data, {"output": ours})
    assert len(model.handed) == 1
    handed, snapshot, handed_data = model.handed[0]
    assert set(handed) == {"output"}
    assert handed["output"] is not ours and not np.shares_memory(handed["output"], ours)
    np.testing.assert_array_equal(snapshot["output"], before)  # the values were ours
    np.testing.assert_array_equal(handed["output"], before + 1.0)  # the model wrote into its copy ...
    np.testing.assert_array_equal(ours, before)  # ... and ours is unchanged
    assert handed_data is data and set(handed_data) == {"input", "target"}


def test_the_newer_api_is_preferred_where_evaluate_takes_output_gradients():
    class Both(NewerApiStandIn):
        def evaluate_gradients(self, *args, **kwargs):
            raise AssertionError("the 0.1.1 method was called on a model with the newer API")

    params, data = _affine_problem()
    model = Both({"output": [6, 3]})
    grads = backward(model, params, data, {"output": np.ones((6, 3))})
    np.testing.assert_allclose(grads["b"], np.full(3, 6.0))
    assert len(model.handed) == 1


@pytest.mark.parametrize("stand_in", STAND_INS, ids=lambda c: c.__name__)
@pytest.mark.parametrize("shapes", [{"output": [6, 3]}, {"output": [None, 3]}, {"output": [None, "...", 3]}, {}],
                         ids=["static", "unknown-batch", "variadic", "no-shapes"])
def test_a_wrong_gradient_shape_raises_before_the_model_runs(stand_in, shapes):
    params, data = _affine_problem()
    model = stand_in(shapes)
    for bad in (np.ones((1, 3)), np.ones(3), np.ones((6, 3, 1))):
        message = r"output_gradients\['output'\].*\(6, 3\); got " + re.escape(str(bad.shape))
        with pytest.raises(ValueError, match=message):
            backward(model, params, data, {"output": bad})
    assert model.handed == []


def test_the_shape_comes_from_the_given_outputs():
    params, data = _affine_problem()
    model = Mithril011StandIn({})
    outputs = {"output": np.zeros((2, 3))}  # what the caller evaluated (here: deliberately another shape)
    with pytest.raises(ValueError, match=r"\(2, 3\); got \(6, 3\)"):
        backward(model, params, data, {"output": np.ones((6, 3))}, outputs=outputs)
    with pytest.raises(KeyError, match="`outputs` has no output 'output'"):
        backward(model, params, data, {"output": np.ones((6, 3))}, outputs={"other": np.zeros(3)})


def test_an_unknown_output_name_raises():
    params, data = _affine_problem()
    model = NewerApiStandIn({"output": [6, 3]})
    with pytest.raises(KeyError, match="Unknown Mithril model output 'outptu'. Closest: output"):
        backward(model, params, data, {"outptu": np.ones((6, 3))})
    with pytest.raises(KeyError, match="Unknown Mithril model output 'logits'"):
        loss_and_gradients(model, params, data, {"logits": (mlo.get("mse"), "target")})
    assert model.handed == []


def test_bad_arguments_raise_clear_errors():
    params, data = _affine_problem()
    model = Mithril011StandIn({"output": [6, 3]})
    mse = mlo.get("mse")
    with pytest.raises(TypeError, match="Expected a compiled Mithril model .*got dict"):
        backward({"evaluate": None}, params, data, {"output": np.ones((6, 3))})
    with pytest.raises(TypeError, match="`output_gradients` must be a dict .*got list"):
        backward(model, params, data, [np.ones((6, 3))])
    with pytest.raises(ValueError, match="`output_gradients` is empty"):
        backward(model, params, data, {})
    with pytest.raises(TypeError, match=r"`output_gradients\['output'\]` must be an array .*got list"):
        backward(model, params, data, {"output": [[1.0] * 3] * 6})
    with pytest.raises(ValueError, match="`losses` is empty"):
        loss_and_gradients(model, params, data, {})
    with pytest.raises(TypeError, match=r"`losses\['output'\]` must be \(loss, targets\)"):
        loss_and_gradients(model, params, data, {"output": ("mse", "target")})
    with pytest.raises(TypeError, match=r"`losses\['output'\]` must be \(loss, targets\)"):
        loss_and_gradients(model, params, data, {"output": (mse, 3)})
    with pytest.raises(ValueError, match="reduction='none'"):
        loss_and_gradients(model, params, data, {"output": (mlo.get("mse", reduction="none"), "target")})
    with pytest.raises(KeyError, match="reads 'label' from `data`, which has no such key; it has 'input', 'target'"):
        loss_and_gradients(model, params, data, {"output": (mse, "label")})
    with pytest.raises(TypeError, match=r"`losses\['output'\]\[2\]` must be a real number"):
        loss_and_gradients(model, params, data, {"output": (mse, "target", "2")})
    assert model.handed == []


def test_weights_and_several_target_keys():
    """gaussian_nll takes (input, target, var): targets as a tuple of data keys; the weight scales loss and gradient."""
    params, data = _affine_problem()
    data = {**data, "var": np.full((6, 3), 0.5)}
    model = NewerApiStandIn({"output": [6, 3]})
    weight = 0.3
    step = loss_and_gradients(model, params, data, {"output": (mlo.get("gaussian_nll"), ("target", "var"), weight)})
    out = data["input"] @ params["w"] + params["b"]
    r = out - data["target"]
    value = np.mean(0.5 * (np.log(0.5) + r**2 / 0.5))  # PyTorch's gaussian_nll_loss (full=False, mean)
    np.testing.assert_allclose(step.losses["output"], value, rtol=1e-13)
    np.testing.assert_allclose(step.loss, weight * value, rtol=1e-13)
    g = weight * (r / 0.5) / r.size
    np.testing.assert_allclose(step.output_gradients["output"], g, rtol=1e-13)
    np.testing.assert_allclose(step.gradients["w"], data["input"].T @ g, rtol=1e-12)


def test_a_loss_of_the_output_alone_takes_no_targets():
    """wasserstein_generator is -mean(fake): its output gradient is -1 / size everywhere."""
    params, data = _affine_problem()
    model = Mithril011StandIn({"output": [6, 3]})
    step = loss_and_gradients(model, params, data, {"output": (mlo.get("wasserstein_generator"), None)})
    out = data["input"] @ params["w"] + params["b"]
    np.testing.assert_allclose(step.loss, -out.mean(), rtol=1e-14)
    g = np.full((6, 3), -1.0 / 18)
    np.testing.assert_allclose(step.gradients["w"], data["input"].T @ g, rtol=1e-13)
    np.testing.assert_allclose(step.gradients["b"], g.sum(axis=0), rtol=1e-14)


# ---------------------------------------------------------------------------
# the real library


@pytest.fixture(scope="module")
def ml():
    """mithril, imported. Its NumPy backend switches NumPy to legacy type promotion for the whole process
    (``np._set_promotion_state("legacy")``, numpy 2.0/2.1): this module's tests run under it, as a Mithril user's
    code does, and the state from before is restored afterwards so that later test modules are not affected."""
    before = np._get_promotion_state() if hasattr(np, "_get_promotion_state") else None
    yield pytest.importorskip("mithril", reason=MITHRIL_MISSING)
    if before is not None:
        np._set_promotion_state(before)


def _network(heads):
    """Linear(8) -> Tanh -> one Linear head per (output name, width)."""
    from mithril.models import IOKey, Linear, Model, Tanh

    model = Model()
    model += Linear(8)(input="input", output="hidden")
    model += Tanh()(input="hidden", output="features")
    for name, width in heads.items():
        model += Linear(width)(input="features", output=IOKey(name))
    return model


def _mithril_objective(heads, losses):
    """The same network in a TrainModel with Mithril's own loss primitives, mean-reduced, weighted by ``coef``."""
    from mithril.models import CrossEntropy, Mean, SquaredError, TrainModel

    primitives = {"cross_entropy": lambda: CrossEntropy(input_type="logits"), "mse": SquaredError}
    model = TrainModel(_network(heads))
    for output, (loss, target, weight) in losses.items():
        model.add_loss(primitives[loss](), input=output, target=target, reduce_steps=[Mean()],
                       coef=None if weight == 1 else weight)
    return model


def _problem(ml, heads, losses, precision, batch=10, features=5, seed=0):
    """Our compiled network, Mithril's compiled objective, shared initial parameters and data."""
    backend = ml.NumpyBackend(precision=precision)
    dtype = np.float32 if precision == 32 else np.float64
    targets = {target for _, target, _ in losses.values()}
    ours = ml.compile(_network(heads), backend=backend, data_keys={"input"}, shapes={"input": [batch, features]})
    theirs = ml.compile(_mithril_objective(heads, losses), backend=backend, data_keys={"input"} | targets,
                        shapes={"input": [batch, features]})
    rng = np.random.default_rng(seed)
    params = {k: (0.5 * rng.normal(size=v.shape)).astype(dtype) for k, v in ours.randomize_params().items()}
    data = {"input": rng.normal(size=(batch, features)).astype(dtype)}
    for output, (loss, target, _) in losses.items():
        width = heads[output]
        data[target] = (rng.integers(0, width, size=batch) if loss == "cross_entropy"
                        else rng.normal(size=(batch, width)).astype(dtype))
    return ours, theirs, params, data


TRAINING = {
    "cross_entropy": ({"logits": 4}, {"logits": ("cross_entropy", "label", 1)}),
    "mse": ({"prediction": 3}, {"prediction": ("mse", "target", 1)}),
    "two-heads-weighted": ({"logits": 4, "prediction": 3},
                           {"logits": ("cross_entropy", "label", 1), "prediction": ("mse", "target", 0.25)}),
}
TOLERANCE = {64: dict(rtol=1e-10, atol=1e-13), 32: dict(rtol=2e-4, atol=2e-6)}


@pytest.mark.parametrize("precision", [64, 32])
@pytest.mark.parametrize("case", TRAINING)
def test_training_with_mithril_losses_matches_mithril_own_loss(ml, case, precision):
    heads, losses = TRAINING[case]
    ours, theirs, params, data = _problem(ml, heads, losses, precision)
    objective = {output: (mlo.get(loss), target, weight) for output, (loss, target, weight) in losses.items()}
    ours_params, theirs_params = dict(params), dict(params)
    tol = TOLERANCE[precision]
    worst = 0.0
    for _ in range(STEPS):
        step = loss_and_gradients(ours, ours_params, data, objective)
        reference = theirs.evaluate_gradients(theirs_params, data)
        cost = theirs.evaluate(theirs_params, data)["final_cost"]
        np.testing.assert_allclose(step.loss, cost, **tol)
        assert set(step.gradients) == set(reference) == set(params)
        for name, g in step.output_gradients.items():
            assert g.dtype == step.outputs[name].dtype
        for name, g in step.gradients.items():
            assert g.dtype == reference[name].dtype
            np.testing.assert_allclose(g, reference[name], **tol)
            worst = max(worst, float(np.max(np.abs(g - reference[name]))))
        ours_params = {k: p - LEARNING_RATE * step.gradients[k] for k, p in ours_params.items()}
        theirs_params = {k: p - LEARNING_RATE * reference[k] for k, p in theirs_params.items()}
        for name in params:
            np.testing.assert_allclose(ours_params[name], theirs_params[name], **tol)
    final = loss_and_gradients(ours, ours_params, data, objective).loss
    first = loss_and_gradients(ours, params, data, objective).loss
    assert final < first  # the steps trained something
    print(f"{case} float{precision}: max |d param, ours - Mithril's| over {STEPS} steps = {worst:.3e}")


def _exposed_hidden():
    """A network whose output 'hidden' also feeds the rest: Mithril's NumPy backward adds into its gradient."""
    from mithril.models import IOKey, Linear, Model, Tanh

    model = Model()
    model += Linear(8)(input="input", output=IOKey("hidden"))
    model += Tanh()(input="hidden", output="features")
    model += Linear(3)(input="features", output=IOKey("output"))
    return model


def test_mithril_writes_into_output_gradients_and_we_hand_it_copies(ml):
    model = ml.compile(_exposed_hidden(), backend=ml.NumpyBackend(precision=64), data_keys={"input"},
                       shapes={"input": [6, 4]})
    rng = np.random.default_rng(1)
    params = model.randomize_params()
    data = {"input": rng.normal(size=(6, 4))}
    grads = {"hidden": rng.normal(size=(6, 8)), "output": rng.normal(size=(6, 3))}
    kept = {k: g.copy() for k, g in grads.items()}
    direct = {k: g.copy() for k, g in grads.items()}
    reference = model.evaluate_gradients(params, data, output_gradients=direct)
    assert not np.array_equal(direct["hidden"], kept["hidden"])  # the hazard: Mithril changed the caller's array
    ours = backward(model, params, data, grads)
    for name in grads:
        np.testing.assert_array_equal(grads[name], kept[name])
    for name in reference:
        np.testing.assert_allclose(ours[name], reference[name], rtol=1e-14, atol=1e-15)


@pytest.mark.parametrize("compiled_shapes", [{"input": [6, 4]}, {}], ids=["static-shapes", "no-shapes"])
def test_a_wrong_shape_that_mithril_broadcasts_raises(ml, compiled_shapes):
    backend = ml.NumpyBackend(precision=64)
    model = ml.compile(_network({"output": 3}), backend=backend, data_keys={"input"}, shapes=compiled_shapes)
    shaped = ml.compile(_network({"output": 3}), backend=backend, data_keys={"input"}, shapes={"input": [6, 4]})
    rng = np.random.default_rng(2)
    params = {k: rng.normal(size=v.shape) for k, v in shaped.randomize_params().items()}
    data = {"input": rng.normal(size=(6, 4))}
    right, wrong = np.ones((6, 3)), np.ones((1, 3))
    silently = model.evaluate_gradients(params, data, output_gradients={"output": wrong})  # no error from Mithril ...
    expected = model.evaluate_gradients(params, data, output_gradients={"output": right})
    assert not np.allclose(silently["b_1"], expected["b_1"])  # ... and a wrong bias gradient
    with pytest.raises(ValueError, match=r"output_gradients\['output'\].*\(6, 3\); got \(1, 3\)"):
        backward(model, params, data, {"output": wrong})
    np.testing.assert_allclose(backward(model, params, data, {"output": right})["b_1"], expected["b_1"], rtol=1e-15)


def test_an_unknown_output_of_a_real_model_raises(ml):
    model = ml.compile(_exposed_hidden(), backend=ml.NumpyBackend(precision=64), data_keys={"input"},
                       shapes={"input": [6, 4]})
    params = model.randomize_params()
    with pytest.raises(KeyError, match="Unknown Mithril model output 'features'.* Available: hidden, output"):
        backward(model, params, {"input": np.zeros((6, 4))}, {"features": np.ones((6, 8))})


def test_the_logical_model_is_not_accepted(ml):
    with pytest.raises(TypeError, match="Expected a compiled Mithril model .*got Model"):
        backward(_network({"output": 3}), {}, {"input": np.zeros((6, 4))}, {"output": np.ones((6, 3))})
