"""The public API of DESIGN section 1: registry, Loss objects, configs, functional names, registration.

Expected numbers come from formulas written here (NumPy) and from PyTorch
autograd of the same formulas, never from the code under test.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest

import mithril_losses as mlo
from mithril_losses import LossSpec, Option

from conftest import close

try:
    import torch
except ImportError:  # the autograd references need it; the rest of the file does not
    torch = None
needs_torch = pytest.mark.skipif(torch is None, reason="torch is not installed (autograd reference)")

REGRESSION_SUBJECTS = ("mse", "l1", "huber", "psnr", "pinball", "mase")


def residuals(rng, shape):
    """Residuals away from the kinks of l1 (0) and huber (+-0.5, +-1)."""
    magnitude = rng.choice(np.concatenate([rng.uniform(0.1, 0.4, 64), rng.uniform(0.6, 0.9, 64),
                                           rng.uniform(1.1, 2.0, 64)]), size=shape)
    return magnitude * rng.choice([-1.0, 1.0], size=shape)


def make_inputs(name, options, rng, shape=(4, 5)):
    y = rng.uniform(-1.0, 1.0, shape)
    if name == "pinball" and isinstance(options.get("quantile"), (list, tuple)):
        q = len(options["quantile"])
        return {"input": y[..., None] - residuals(rng, shape + (q,)), "target": y}
    x = y + residuals(rng, shape)
    if name == "mase":
        return {"input": x, "target": y, "insample": rng.normal(size=shape[:-1] + (9,))}
    return {"input": x, "target": y}


def torch_unreduced(name, options, t):
    """The unreduced loss written in PyTorch (the autograd reference)."""
    x, y = t["input"], t["target"]
    if name == "mse":
        return (x - y) ** 2
    if name == "l1":
        return (x - y).abs()
    if name == "huber":
        d = options.get("delta", 1.0)
        a = (x - y).abs()
        return torch.where(a <= d, 0.5 * a * a, d * (a - 0.5 * d))
    if name == "pinball":
        q = options.get("quantile", 0.5)
        if isinstance(q, (list, tuple)):
            u, q = y[..., None] - x, torch.tensor(q, dtype=x.dtype)
        else:
            u = y - x
        return torch.maximum(q * u, (q - 1.0) * u)
    if name == "mase":
        z = t["insample"]
        m = options.get("seasonality", 1)
        scale = (z[..., m:] - z[..., :-m]).abs().mean(-1, keepdim=True).clamp_min(options.get("epsilon", 1e-8))
        return (x - y).abs() / scale
    if name == "psnr":
        mv = options.get("max_value", 1.0)
        mse = ((x - y) ** 2).reshape(x.shape[0], -1).mean(-1)
        return 10.0 * torch.log10(mse) - 20.0 * math.log10(mv)
    raise ValueError(name)


def torch_reference(name, options, inputs, differentiable, reduction="mean", cotangent=None):
    """(reduced value, {input: gradient}) by PyTorch autograd."""
    t = {k: torch.tensor(v, requires_grad=k in differentiable) for k, v in inputs.items()}
    unreduced = torch_unreduced(name, options, t)
    out = {"none": unreduced, "mean": unreduced.mean(), "sum": unreduced.sum()}[reduction]
    ct = torch.ones_like(out) if cotangent is None else torch.as_tensor(cotangent, dtype=out.dtype)
    grads = torch.autograd.grad(out, [t[k] for k in differentiable], ct)
    return out.detach().numpy(), {k: g.numpy() for k, g in zip(differentiable, grads)}


CASES = [
    ("mse", {}),
    ("l1", {}),
    ("huber", {}),
    ("huber", {"delta": 0.5}),
    ("psnr", {"max_value": 2.0}),
    ("pinball", {"quantile": 0.3}),
    ("pinball", {"quantile": [0.1, 0.5, 0.9]}),
    ("mase", {}),
    ("mase", {"seasonality": 2, "epsilon": 1e-6}),
]
CASE_IDS = [f"{n}-{o}" if o else n for n, o in CASES]


# ---------------------------------------------------------------------------
# registry


def test_available_is_sorted_and_canonical():
    names = mlo.available()
    assert names == sorted(names)
    assert len(names) == len(set(names))
    assert set(REGRESSION_SUBJECTS) <= set(names)
    for alias in ("mse_loss", "mae", "quantile", "l1_loss"):
        assert alias not in names


def test_available_by_family():
    regression = mlo.available(family="regression")
    assert regression == sorted(regression)
    assert set(REGRESSION_SUBJECTS) <= set(regression)
    assert set(regression) <= set(mlo.available())
    assert all(mlo.get(n).family == "regression" for n in regression)
    assert "regression" in mlo.families()
    assert mlo.families() == sorted(mlo.families())


@pytest.mark.parametrize("alias, canonical", [("mse_loss", "mse"), ("mae", "l1"), ("l1_loss", "l1"),
                                              ("quantile", "pinball"), ("huber_loss", "huber")])
def test_alias_gives_the_same_spec(alias, canonical):
    by_alias, by_name = mlo.get(alias), mlo.get(canonical)
    assert by_alias.spec is by_name.spec
    assert by_alias.name == canonical
    assert mlo.spec(alias) is mlo.spec(canonical)
    rng = np.random.default_rng(1)
    inputs = make_inputs(canonical, {}, rng)
    close(by_alias(**inputs), by_name(**inputs))


@pytest.mark.parametrize("typo, closest", [("mse_los", "mse_loss"), ("hubber", "huber"), ("pinbal", "pinball")])
def test_unknown_name_is_a_key_error_listing_close_names(typo, closest):
    with pytest.raises(KeyError) as err:
        mlo.get(typo)
    message = str(err.value)
    assert repr(typo) in message and closest in message
    with pytest.raises(KeyError):
        mlo.spec(typo)


def test_unknown_option_is_a_type_error_naming_it():
    with pytest.raises(TypeError, match=r"`delt`.*Did you mean delta\?"):
        mlo.get("huber", delt=0.5)
    with pytest.raises(TypeError, match=r"`reduce`.*reduction"):
        mlo.get("mse", reduce="sum")
    with pytest.raises(TypeError, match="`quantiles`"):
        mlo.get("pinball", quantiles=0.1)


def test_invalid_option_values_are_rejected_at_get():
    with pytest.raises(ValueError, match="`delta`"):
        mlo.get("huber", delta=-1.0)
    with pytest.raises(ValueError, match="`reduction`.*'avg'"):
        mlo.get("mse", reduction="avg")
    with pytest.raises(TypeError, match="`seasonality`"):
        mlo.get("mase", seasonality=1.5)


def test_description():
    mse = mlo.get("mse")
    assert (mse.name, mse.family) == ("mse", "regression")
    assert mse.inputs == ("input", "target")
    assert mse.differentiable == ("input", "target")
    pinball = mlo.get("quantile")
    assert pinball.name == "pinball" and pinball.differentiable == ("input",)
    mase = mlo.get("mase")
    assert mase.inputs == ("input", "target", "insample")
    assert mase.differentiable == ("input",)
    assert "mse" in repr(mse)


# ---------------------------------------------------------------------------
# value, grad, value_and_grad, vjp


@needs_torch
@pytest.mark.parametrize("name, options", CASES, ids=CASE_IDS)
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_value_grad_value_and_grad(name, options, reduction):
    loss = mlo.get(name, reduction=reduction, **options)
    inputs = make_inputs(name, options, np.random.default_rng(2))
    expected_value, expected_grads = torch_reference(name, options, inputs, loss.differentiable, reduction)

    value = loss(**inputs)
    close(value, expected_value)
    close(loss.value(**inputs), expected_value)
    assert isinstance(value, np.ndarray) or np.isscalar(value)

    grads = loss.grad(**inputs)
    assert isinstance(grads, dict) and tuple(grads) == loss.differentiable
    for k in loss.differentiable:
        assert grads[k].shape == inputs[k].shape and grads[k].dtype == inputs[k].dtype
        close(grads[k], expected_grads[k])

    value2, grads2 = loss.value_and_grad(**inputs)
    close(value2, expected_value)
    assert tuple(grads2) == loss.differentiable
    for k in loss.differentiable:
        close(grads2[k], expected_grads[k])


def test_positional_and_keyword_inputs_agree():
    loss = mlo.get("mase")
    inputs = make_inputs("mase", {}, np.random.default_rng(3))
    positional = loss(inputs["input"], inputs["target"], inputs["insample"])
    close(loss(inputs["input"], target=inputs["target"], insample=inputs["insample"]), positional)
    close(loss(insample=inputs["insample"], input=inputs["input"], target=inputs["target"]), positional)


def test_grad_is_a_dict_even_for_one_differentiable_input():
    grads = mlo.get("pinball").grad(np.array([0.0, 1.0]), np.array([1.0, 0.0]))
    assert isinstance(grads, dict) and list(grads) == ["input"]
    close(grads["input"], [-0.5 / 2, 0.5 / 2])


@needs_torch
@pytest.mark.parametrize("name, options", CASES, ids=CASE_IDS)
def test_vjp_with_a_per_element_cotangent(name, options):
    loss = mlo.get(name, reduction="none", **options)
    rng = np.random.default_rng(4)
    inputs = make_inputs(name, options, rng)
    shape = np.shape(loss(**inputs))
    cotangent = rng.normal(size=shape)
    _, expected = torch_reference(name, options, inputs, loss.differentiable, "none", cotangent)
    grads = loss.vjp(cotangent, **inputs)
    assert tuple(grads) == loss.differentiable
    for k in loss.differentiable:
        close(grads[k], expected[k])


@needs_torch
@pytest.mark.parametrize("name, options", CASES, ids=CASE_IDS)
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_vjp_with_a_scalar_cotangent(name, options, reduction):
    loss = mlo.get(name, reduction=reduction, **options)
    inputs = make_inputs(name, options, np.random.default_rng(5))
    _, expected = torch_reference(name, options, inputs, loss.differentiable, reduction, -2.5)
    for cotangent in (-2.5, np.float64(-2.5), np.array(-2.5)):
        grads = loss.vjp(cotangent, **inputs)
        for k in loss.differentiable:
            close(grads[k], expected[k])


def test_vjp_rejects_a_wrong_cotangent_shape():
    x, y = np.zeros((4, 3)), np.ones((4, 3))
    with pytest.raises(ValueError, match=r"`cotangent`.*\(4, 3\).*\(3,\)"):
        mlo.get("mse", reduction="none").vjp(np.ones(3), x, y)
    with pytest.raises(ValueError, match=r"`cotangent`.*\(\).*\(4, 3\)"):
        mlo.get("mse").vjp(np.ones((4, 3)), x, y)
    with pytest.raises(ValueError, match=r"`cotangent`.*\(4,\).*\(3,\)"):
        mlo.get("mse", axis=1).vjp(np.ones(3), x, y)


# ---------------------------------------------------------------------------
# bad calls


def test_bad_arguments_name_what_is_wrong():
    loss = mlo.get("mse")
    x = np.zeros(3)
    with pytest.raises(TypeError, match="missing.*`target`"):
        loss(x)
    with pytest.raises(TypeError, match="3 positional"):
        loss(x, x, x)
    with pytest.raises(TypeError, match="unexpected argument `pred`"):
        loss(x, pred=x)
    with pytest.raises(TypeError, match="`input` twice"):
        loss(x, x, input=x)


def test_shape_mismatch_message_is_the_documented_one():
    with pytest.raises(ValueError) as err:
        mlo.get("mse")(np.zeros(3), np.zeros((3, 1)))
    assert str(err.value) == "`input` and `target` must have the same shape; got (3,) and (3, 1)."


def test_non_floating_predictions_are_rejected():
    with pytest.raises(TypeError, match="`input` must be a real floating-point array; got dtype int"):
        mlo.get("l1")(np.arange(3), np.zeros(3))
    with pytest.raises(TypeError, match="`target`"):
        mlo.get("mse")(np.zeros(3), np.arange(3))  # mse differentiates its target too


# ---------------------------------------------------------------------------
# configs


CONFIG_CASES = [
    ("mse", {}),
    ("mse_loss", {"reduction": "sum"}),
    ("mse", {"reduction": "mean", "axis": (0,)}),
    ("huber", {"delta": 0.25, "reduction": "none"}),
    ("pinball", {"quantile": (0.1, 0.5, 0.9)}),
    ("psnr", {"max_value": 255.0, "axis": (1,)}),
    ("mase", {"seasonality": 2, "epsilon": 1e-5}),
]


@pytest.mark.parametrize("name, options", CONFIG_CASES)
def test_config_round_trip(name, options):
    loss = mlo.get(name, **options)
    cfg = loss.to_config()
    assert cfg["name"] == mlo.spec(name).name
    text = json.dumps(cfg)  # JSON-serialisable
    loss2 = mlo.from_config(json.loads(text))
    assert loss2.name == loss.name and loss2.reduction == loss.reduction
    assert json.dumps(loss2.to_config()) == text
    inputs = make_inputs(loss.name, {k: v for k, v in options.items() if k not in ("reduction", "axis")},
                         np.random.default_rng(6))
    if loss.name == "psnr":
        inputs = {k: np.abs(v) * 100.0 for k, v in inputs.items()}
    close(loss2(**inputs), loss(**inputs))
    for k in loss.differentiable:
        close(loss2.grad(**inputs)[k], loss.grad(**inputs)[k])


def test_to_config_holds_every_option():
    assert mlo.get("huber").to_config() == {"name": "huber", "reduction": "mean", "delta": 1.0}
    assert mlo.get("huber_loss", delta=2).to_config() == {"name": "huber", "reduction": "mean", "delta": 2.0}


def test_from_config_rejects_bad_configs():
    with pytest.raises(KeyError, match="nope"):
        mlo.from_config({"name": "nope"})
    with pytest.raises(TypeError, match="`delta`"):
        mlo.from_config({"name": "mse", "delta": 1.0})
    with pytest.raises(ValueError, match="`delta`"):
        mlo.from_config({"name": "huber", "delta": -1.0})
    for bad in (["mse"], "mse", None, {"reduction": "mean"}, {"name": 3}):
        with pytest.raises(ValueError, match="loss config must be a dict"):
            mlo.from_config(bad)


# ---------------------------------------------------------------------------
# functional names


def test_functional_names():
    rng = np.random.default_rng(7)
    y = rng.normal(size=(3, 4))
    x = y + residuals(rng, (3, 4))
    r = x - y
    n = r.size
    close(mlo.mse_loss(x, y), np.mean(r**2))
    close(mlo.mse_loss(x, y, reduction="sum"), np.sum(r**2))
    close(mlo.mse_loss(input=x, target=y), np.mean(r**2))
    gradient = mlo.mse_loss_gradient(x, y)
    assert isinstance(gradient, np.ndarray)  # an array for one prediction input, not a dict
    close(gradient, 2 * r / n)
    close(mlo.l1_loss(x, y), np.mean(np.abs(r)))
    close(mlo.l1_loss_gradient(x, y, reduction="sum"), np.sign(r))
    close(mlo.huber_loss_gradient(x, y, delta=0.5), np.clip(r, -0.5, 0.5) / n)
    close(mlo.huber_loss(x, y, delta=0.5),
          np.mean(np.where(np.abs(r) <= 0.5, 0.5 * r**2, 0.5 * (np.abs(r) - 0.25))))
    w = rng.uniform(0.5, 2.0, size=(3, 4))
    close(mlo.mse_loss(x, y, weight=w), np.sum(w * r**2) / np.sum(w))
    close(mlo.quantile_loss(x, y, quantile=0.2), np.mean(np.maximum(0.2 * -r, -0.8 * -r)))
    assert mlo.mse_loss.__name__ == "mse_loss"
    assert {"mse_loss", "mse_loss_gradient", "l1_loss", "huber_loss_gradient", "pinball_loss"} <= set(dir(mlo))
    with pytest.raises(AttributeError, match="no_such_loss"):
        mlo.no_such_loss  # noqa: B018
    with pytest.raises(TypeError, match="`delt`"):
        mlo.huber_loss(x, y, delt=0.5)


def test_import_pulls_in_no_framework():
    code = (
        "import sys, numpy as np, mithril_losses as mlo\n"
        "mlo.available(); dir(mlo); mlo.mse_loss(np.ones(3), np.zeros(3)); mlo.get('mae').grad([1.0], [0.0])\n"
        "print(sorted(m for m in ('jax', 'torch', 'mlx') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


# ---------------------------------------------------------------------------
# a user's own loss


def _cubic_value(xp, input, target, *, scale):
    r = input - target
    return scale * xp.abs(r) ** 3


def _cubic_vjp(xp, cotangent, input, target, *, scale):
    r = input - target
    g = 3.0 * scale * cotangent * r * xp.abs(r)
    return {"input": g, "target": -g}


def _cubic_spec(scale_default=1.0, **changes):
    fields = dict(
        name="cubic", family="custom", summary="Absolute cubic error.",
        inputs=("input", "target"), differentiable=("input", "target"),
        value=_cubic_value, vjp=_cubic_vjp, formula=r"s|x - y|^3", gradient=r"3 s (x - y)|x - y|",
        sample=lambda rng, shape, options: {"input": rng.normal(size=shape), "target": rng.normal(size=shape)},
        options=(Option("scale", scale_default, "Factor.", None),), aliases=("cube", "cubic_error_loss"),
    )
    fields.update(changes)
    return LossSpec(**fields)


def test_register_a_users_loss(clean_registry):
    mlo.register(_cubic_spec())
    assert "cubic" in mlo.available() and mlo.available(family="custom") == ["cubic"]
    rng = np.random.default_rng(8)
    x, y = rng.normal(size=(3, 2)), rng.normal(size=(3, 2))
    r = x - y
    loss = mlo.get("cube", scale=2.0, reduction="sum")
    assert loss.name == "cubic"
    close(loss(x, y), np.sum(2.0 * np.abs(r) ** 3))
    grads = loss.grad(x, y)
    close(grads["input"], 6.0 * r * np.abs(r))
    close(grads["target"], -6.0 * r * np.abs(r))
    # generated functional names: <name>_loss and aliases that end in _loss
    close(mlo.cubic_loss(x, y), np.mean(np.abs(r) ** 3))
    close(mlo.cubic_loss_gradient(x, y, scale=2.0), 6.0 * r * np.abs(r) / r.size)
    close(mlo.cubic_error_loss(x, y), np.mean(np.abs(r) ** 3))
    assert "cubic_loss_gradient" in dir(mlo)
    close(mlo.from_config(loss.to_config())(x, y), np.sum(2.0 * np.abs(r) ** 3))
    # weights, masks and reductions come from the engine
    where = np.array([[True, False], [True, True], [False, False]])
    close(mlo.get("cubic", reduction="mean")(x, y, where=where), np.sum(np.abs(r[where]) ** 3) / 3)


def test_registering_a_taken_name_raises_unless_replace(clean_registry):
    mlo.register(_cubic_spec())
    with pytest.raises(ValueError, match="'cubic' is already registered.*replace=True"):
        mlo.register(_cubic_spec())
    with pytest.raises(ValueError, match="'mae' is already registered"):
        mlo.register(_cubic_spec(name="mae", aliases=()))
    with pytest.raises(ValueError, match="'l2' is already registered"):
        mlo.register(_cubic_spec(name="cubic2", aliases=("l2",)))
    assert "cubic2" not in mlo.available()
    assert mlo.get("mae").name == "l1" and mlo.get("l2").name == "mse"
    mlo.register(_cubic_spec(scale_default=10.0), replace=True)
    close(mlo.get("cubic")(np.array([1.0]), np.array([0.0])), 10.0)
    close(mlo.cubic_loss(np.array([1.0]), np.array([0.0])), 10.0)


def test_batchmean_where_a_loss_allows_it(clean_registry):
    from mithril_losses._reduction import ALL_REDUCTIONS

    mlo.register(_cubic_spec(reductions=ALL_REDUCTIONS))
    rng = np.random.default_rng(9)
    x, y = rng.normal(size=(4, 3)), rng.normal(size=(4, 3))
    r = x - y
    loss = mlo.get("cubic", reduction="batchmean")
    value, grads = loss.value_and_grad(x, y)
    close(value, np.sum(np.abs(r) ** 3) / 4)
    close(grads["input"], 3 * r * np.abs(r) / 4)
    with pytest.raises(ValueError, match="batchmean.*batch axis"):
        loss(np.array(1.0), np.array(0.0))
    with pytest.raises(ValueError, match="`reduction`.*'batchmean'"):
        mlo.get("mse", reduction="batchmean")


def _fresh_python(code):
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_first_use_from_many_threads_at_once():
    code = (
        "import threading, mithril_losses as mlo\n"
        "errors, barrier = [], threading.Barrier(8)\n"
        "def work():\n"
        "    barrier.wait()\n"
        "    try:\n"
        "        assert mlo.get('mse').name == 'mse' and 'l1' in mlo.available()\n"
        "    except Exception as e:\n"
        "        errors.append(repr(e))\n"
        "threads = [threading.Thread(target=work) for _ in range(8)]\n"
        "[t.start() for t in threads]; [t.join() for t in threads]\n"
        "print(errors)\n"
    )
    assert _fresh_python(code) == "[]"


def test_register_before_the_first_lookup():
    code = (
        "import mithril_losses as mlo\n"
        "from mithril_losses import LossSpec\n"
        "spec = LossSpec(name='mse', family='custom', summary='', inputs=('input', 'target'),\n"
        "                differentiable=('input',), value=lambda xp, input, target: (input - target) ** 4,\n"
        "                vjp=None, formula='', gradient='', sample=None)\n"
        "try:\n"
        "    mlo.register(spec)\n"
        "except ValueError as e:\n"
        "    print('refused')\n"
        "mlo.register(spec, replace=True)\n"
        "print(mlo.get('mse').family, mlo.get('l1').family, float(mlo.mse_loss([2.0], [0.0])))\n"
    )
    assert _fresh_python(code).splitlines() == ["refused", "custom regression 16.0"]
