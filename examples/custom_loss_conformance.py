"""Add your own loss and run the conformance checks on it.

A loss is a value function and its hand-derived vjp, written once against the array namespace ``xp``,
plus a spec: inputs, options, a sampler of valid inputs, the formulas. Once registered, it works like the
built-in losses on every backend (values, gradients, weights, masks, configs, composites), and the
conformance suite checks its gradient: against each framework's autodiff, against float64 finite
differences, and across backends. Here: the Cauchy (Lorentzian) loss of robust regression,

    l = c^2 / 2 * log(1 + (r / c)^2),   dl/dx = r / (1 + (r / c)^2) = -dl/dy,   r = x - y.

Run: python examples/custom_loss_conformance.py
(the same checks from the command line, in a process that registered the loss:
``mithril_losses.cli.main(["conformance", "--losses", "cauchy"])``, i.e. ``mithril-losses conformance --losses cauchy``)
"""

# example-needs: numpy
# example-prints: custom loss 'cauchy' passed every conformance check

import numpy as np

import mithril_losses as mlo
from mithril_losses import cli, conformance
from mithril_losses.registry import LossSpec, Option


def cauchy_value(xp, input, target, *, c):
    """c^2 / 2 * log(1 + (r / c)^2), per element."""
    z = (input - target) / c
    return 0.5 * c * c * xp.log1p(z * z)


def cauchy_vjp(xp, cotangent, input, target, *, c):
    r = input - target
    g = cotangent * r / (1.0 + (r / c) ** 2)
    return {"input": g, "target": -g}


def check_scale(name, value):
    """An option check: returns the normalised value, raises with a clear message."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"`{name}` must be a positive number; got {value!r}.")
    return float(value)


def sample(rng, shape, options):
    """Valid float64 NumPy inputs for the checks (the loss is smooth: no kinks to avoid)."""
    target = rng.uniform(-2.0, 2.0, shape)
    return {"input": target + rng.uniform(-3.0, 3.0, shape), "target": target}


mlo.register(LossSpec(
    name="cauchy", family="regression", summary="Cauchy (Lorentzian) loss: quadratic near 0, logarithmic beyond c.",
    inputs=("input", "target"), differentiable=("input", "target"),
    value=cauchy_value, vjp=cauchy_vjp, sample=sample,
    options=(Option("c", 1.0, "scale where the loss turns from quadratic to logarithmic", check_scale),),
    option_cases=({}, {"c": 0.5}),
    formula=r"\ell = \frac{c^2}{2}\log\left(1 + \frac{(x - y)^2}{c^2}\right)",
    gradient=r"\partial\ell/\partial x = \frac{x - y}{1 + (x - y)^2 / c^2} = -\partial\ell/\partial y",
    aliases=("lorentzian",),
    literature=("Black and Anandan, The robust estimation of multiple motions (CVIU 1996)",),
))

# a registered loss is an ordinary loss: get it, call it, compose it
x, y = np.array([0.5, 2.0, -4.0]), np.array([0.0, 0.0, 0.0])
loss = mlo.get("lorentzian", c=2.0)
value, grads = loss.value_and_grad(x, y)
np.testing.assert_allclose(grads["input"], x / (1 + (x / 2.0) ** 2) / 3, rtol=1e-14)
print(f"cauchy(c=2) = {float(value):.6f}, d/dx = {grads['input']}")
print("functional:", mlo.cauchy_loss(x, y, c=2.0), mlo.cauchy_loss_gradient(x, y, c=2.0))
robust = mlo.CompositeLoss({"cauchy": (mlo.get("cauchy"), 0.7), "mse": (mlo.get("mse"), 0.3)})
print("in a composite:", float(robust(x, y)))

# the conformance checks, on every installed backend, float32 and float64
report = conformance.run(losses=["cauchy"])
print(cli.format_table(report))
summary = report.summary
print(f"{summary['passed']} passed, {summary['failed']} failed, {summary['skipped']} skipped "
      f"(a dtype a backend lacks), on {', '.join(report.environment['backends'])}")
problems = [r for r in report.results if r.status not in ("passed", "skipped")]
assert report.ok and not problems and summary["passed"] > 0, problems
assert all("has no" in r.detail for r in report.results if r.status == "skipped")

# the same checks through the command's entry point (in this process, where the loss is registered)
assert cli.main(["conformance", "--losses", "cauchy", "--quiet", "--backends", "numpy"]) == 0
print("custom loss 'cauchy' passed every conformance check")
