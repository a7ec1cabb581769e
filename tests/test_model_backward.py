"""Real small models trained for a few steps: mithril_losses' gradients drive each framework's backward pass.

For every framework, one model is trained three ways from the same initial parameters, on the same
batches, with plain SGD:

- the output-gradient path: the model's outputs -> ``loss.value_and_grad`` -> the framework's own
  backward from the outputs (``outputs.backward(gradient=...)`` of a ``torch.compile``d module,
  the pullback of ``jax.vjp(apply_fn, params)``, ``mx.vjp``);
- the custom-gradient path: the loss called inside the framework's autodiff (``loss(...).backward()``,
  ``jax.grad``, ``nn.value_and_grad`` / ``mx.grad``);
- the reference: the framework's own loss (``F.cross_entropy`` / ``F.mse_loss``, optax, ``mlx.nn.losses``)
  and autodiff.

The parameter gradients of every step agree with the reference to float32 rounding
(``rtol=1e-5`` with an absolute floor of 1e-6 of the largest gradient); the worst absolute difference of
each run is printed (``pytest -s``).
"""

from __future__ import annotations

import numpy as np
import pytest

import mithril_losses as mlo

STEPS = 4
LR = 0.1
IN, HIDDEN, OUT, BATCH = 10, 32, 4, 16


def batches(seed, classes):
    """STEPS batches of (inputs, targets): integer labels when ``classes``, real targets otherwise."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(STEPS):
        x = rng.normal(size=(BATCH, IN)).astype(np.float32)
        y = rng.integers(0, OUT, BATCH) if classes else rng.normal(scale=2.0, size=(BATCH, OUT)).astype(np.float32)
        out.append((x, y))
    return out


def compare(name, ours, theirs):
    """Per-step dicts of NumPy parameter gradients; returns the worst absolute difference."""
    worst = 0.0
    for step, (a, b) in enumerate(zip(ours, theirs)):
        assert set(a) == set(b)
        for key in a:
            scale = np.abs(b[key]).max()
            np.testing.assert_allclose(a[key], b[key], rtol=1e-5, atol=1e-6 * scale, err_msg=f"{name} step {step} {key}")
            worst = max(worst, float(np.abs(a[key] - b[key]).max()))
    print(f"{name}: max |parameter gradient - reference| over {len(ours)} steps = {worst:.3e}")
    return worst


# ---------------------------------------------------------------------------
# PyTorch: a torch.compile'd module


@pytest.mark.parametrize("name", ["cross_entropy", "mse"])
def test_torch_compiled_module(name):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(IN, HIDDEN), torch.nn.Tanh(), torch.nn.Linear(HIDDEN, OUT))
    compiled = torch.compile(model, backend="aot_eager")
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    loss = mlo.get(name)
    reference_loss = {"cross_entropy": F.cross_entropy, "mse": F.mse_loss}[name]
    data = [(torch.tensor(x), torch.tensor(y)) for x, y in batches(1, classes=name == "cross_entropy")]

    def output_gradients(x, y):
        outputs = compiled(x)
        _, grads = loss.value_and_grad(outputs.detach(), y)
        outputs.backward(gradient=grads["input"])

    def train(backward):
        model.load_state_dict(initial)  # in place: the compiled module is not recompiled
        history = []
        for x, y in data:
            model.zero_grad()
            backward(x, y)
            history.append({k: p.grad.numpy().copy() for k, p in model.named_parameters()})
            with torch.no_grad():
                for p in model.parameters():
                    p -= LR * p.grad
        return history

    reference = train(lambda x, y: reference_loss(compiled(x), y).backward())
    compare(f"torch {name} outputs.backward(gradient=...)", train(output_gradients), reference)
    compare(f"torch {name} loss(...).backward()", train(lambda x, y: loss(compiled(x), y).backward()), reference)


# ---------------------------------------------------------------------------
# JAX: jax.vjp(apply_fn, params)


def _jax_setup(jax):
    f32 = jax.numpy.float32  # explicit: other tests switch on jax_enable_x64
    k1, k2 = jax.random.split(jax.random.PRNGKey(0))
    params = {"w1": jax.random.normal(k1, (IN, HIDDEN), f32) * 0.3, "b1": jax.numpy.zeros(HIDDEN, f32),
              "w2": jax.random.normal(k2, (HIDDEN, OUT), f32) * 0.3, "b2": jax.numpy.zeros(OUT, f32)}

    def apply_fn(p, x):
        return jax.numpy.tanh(x @ p["w1"] + p["b1"]) @ p["w2"] + p["b2"]

    return params, apply_fn


@pytest.mark.parametrize("name", ["cross_entropy", "huber"])
def test_jax_vjp_of_apply_fn(name):
    jax = pytest.importorskip("jax")
    optax = pytest.importorskip("optax")
    params, apply_fn = _jax_setup(jax)
    assert params["w1"].dtype == jax.numpy.float32
    loss = mlo.get(name)
    reference_loss = {"cross_entropy": optax.losses.softmax_cross_entropy_with_integer_labels,
                      "huber": optax.losses.huber_loss}[name]
    data = [(jax.numpy.asarray(x), jax.numpy.asarray(y)) for x, y in batches(2, classes=name == "cross_entropy")]

    def output_gradients(p, x, y):
        outputs, pullback = jax.vjp(lambda q: apply_fn(q, x), p)
        _, grads = loss.value_and_grad(outputs, y)
        return pullback(grads["input"])[0]

    def train(gradient):
        p, history = params, []
        for x, y in data:
            g = gradient(p, x, y)
            history.append({k: np.asarray(v) for k, v in g.items()})
            p = jax.tree_util.tree_map(lambda a, b: a - LR * b, p, g)
        return history

    reference = train(jax.jit(jax.grad(lambda p, x, y: reference_loss(apply_fn(p, x), y).mean())))
    compare(f"jax {name} jax.vjp pullback (eager)", train(output_gradients), reference)
    compare(f"jax {name} jax.vjp pullback (jit)", train(jax.jit(output_gradients)), reference)
    compare(f"jax {name} jax.grad of loss(...) (jit)", train(jax.jit(jax.grad(lambda p, x, y: loss(apply_fn(p, x), y)))),
            reference)


# ---------------------------------------------------------------------------
# MLX: mx.vjp


@pytest.mark.parametrize("name", ["cross_entropy", "mse"])
def test_mlx_vjp_of_a_module(name):
    mx = pytest.importorskip("mlx.core")
    nn = pytest.importorskip("mlx.nn")
    from mlx.utils import tree_flatten, tree_map, tree_unflatten

    mx.random.seed(0)
    model = nn.Sequential(nn.Linear(IN, HIDDEN), nn.Tanh(), nn.Linear(HIDDEN, OUT))
    initial = model.parameters()
    loss = mlo.get(name)
    reference_loss = {"cross_entropy": lambda out, y: nn.losses.cross_entropy(out, y, reduction="mean"),
                      "mse": lambda out, y: nn.losses.mse_loss(out, y, reduction="mean")}[name]
    data = [(mx.array(x), mx.array(y)) for x, y in batches(3, classes=name == "cross_entropy")]

    def output_gradients(x, y):
        names = [k for k, _ in tree_flatten(model.parameters())]

        def apply(*arrays):
            model.update(tree_unflatten(list(zip(names, arrays))))
            return model(x)

        _, grads = loss.value_and_grad(model(x), y)
        primals = [a for _, a in tree_flatten(model.parameters())]
        _, vjps = mx.vjp(apply, primals, [grads["input"]])
        model.update(tree_unflatten(list(zip(names, primals))))
        return tree_unflatten(list(zip(names, vjps)))

    def train(gradient):
        model.update(initial)
        history = []
        for x, y in data:
            g = gradient(x, y)
            history.append({k: np.array(v) for k, v in tree_flatten(g)})
            model.update(tree_map(lambda a, b: a - LR * b, model.parameters(), g))
        return history

    reference = train(lambda x, y: nn.value_and_grad(model, lambda m: reference_loss(m(x), y))(model)[1])
    compare(f"mlx {name} mx.vjp", train(output_gradients), reference)
    compare(f"mlx {name} nn.value_and_grad of loss(...)",
            train(lambda x, y: nn.value_and_grad(model, lambda m: loss(m(x), y))(model)[1]), reference)
