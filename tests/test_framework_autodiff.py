"""A loss called inside a framework's autodiff backpropagates its hand-derived gradient.

PyTorch runs it as a ``torch.autograd.Function`` (``backward()``, ``torch.autograd.grad``,
``torch.compile``), JAX as a ``jax.custom_vjp`` function (``jax.grad``, ``jax.vjp``, ``jax.jit``,
``jax.vmap``), MLX as an ``mx.custom_function`` (``mx.grad``, ``mx.value_and_grad``, ``mx.compile``,
``mx.vmap``). Proof that the hand-derived path is the one that runs: a registered toy loss whose vjp is
deliberately not the derivative of its value; a toy loss whose value's autodiff is NaN at 0 where its
hand-derived gradient is finite; ``binary_cross_entropy`` at probabilities 0 and 1, where the framework
gets PyTorch's gradient, not the subgradient autodiff of the value takes. Gradients are compared with
``loss.grad`` and with independent references: each framework's autodiff of ``spec.value``, PyTorch's
own losses and hand-computed values.
"""

from __future__ import annotations

import numpy as np
import pytest

import mithril_losses as mlo
from mithril_losses import LossSpec

from conftest import native, to_numpy



def framework_grad(name, fn, arrays, dtype="float64"):
    """NumPy gradients of the scalar ``fn(*arrays)`` w.r.t. every one of ``arrays``, by the framework's own autodiff.

    JAX runs under ``jax.jit``: eager JAX compiles every operation on its first call, which is slow.
    """
    args = [native(name, a, dtype) for a in arrays]
    argnums = tuple(range(len(args)))
    if name == "torch":
        import torch

        for a in args:
            a.requires_grad_(True)
        grads = torch.autograd.grad(fn(*args), args)
    elif name == "jax":
        import jax

        grads = jax.jit(jax.grad(fn, argnums=argnums))(*args)
    else:
        import mlx.core as mx

        grads = mx.grad(fn, argnums=list(argnums))(*args)
        grads = grads if isinstance(grads, (list, tuple)) else [grads]
    return [to_numpy(g) for g in grads]


def value_autodiff(name, loss, arrays, constants=()):
    """The framework's autodiff of the loss's value function ``spec.value`` itself, summed (no custom gradient)."""
    xp = mlo.backends.get_adapter(name).xp
    consts = [native(name, c) for c in constants]

    def summed(*diff):
        inputs = dict(zip(loss.inputs, (*diff, *consts)))
        return xp.sum(loss.spec.value(xp, **inputs, **loss.options))

    return framework_grad(name, summed, arrays)


def mithril_grad(name, loss, arrays, constants=()):
    """The framework's autodiff of ``loss(*arrays, *constants)``: the custom-gradient path."""
    consts = [native(name, c) for c in constants]
    return framework_grad(name, lambda *diff: loss(*diff, *consts), arrays)


def loss_grad(name, loss, *args, **kw):
    """``loss.grad`` as NumPy arrays; jitted on JAX, like ``framework_grad``."""
    if name == "jax":
        import jax

        return {n: to_numpy(g) for n, g in jax.jit(lambda *a: loss.grad(*a, **kw))(*args).items()}
    return {n: to_numpy(g) for n, g in loss.grad(*args, **kw).items()}


def assert_same(actual, expected, dtype="float64"):
    """Equal up to the last bits, which XLA's fusion under ``jax.jit`` may reorder."""
    rtol = 8 * np.finfo(dtype).eps
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=rtol * np.abs(expected).max())


# ---------------------------------------------------------------------------
# 1. the hand-derived gradient is the one that runs


def _toy_value(xp, input):
    return input * input


def _toy_vjp(xp, cotangent, input):
    return {"input": 3.0 * cotangent * input}  # deliberately not the derivative 2x of the value


TOY = LossSpec(
    name="p1_toy_three_x_gradient", family="custom", summary="x^2 with a vjp of 3x (a test fixture).",
    inputs=("input",), differentiable=("input",), value=_toy_value, vjp=_toy_vjp,
    formula="x^2", gradient="3x", sample=lambda rng, shape, options: {"input": rng.normal(size=shape)},
)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_the_framework_calls_the_registered_vjp_not_autodiff_of_the_value(framework, reduction, clean_registry):
    mlo.register(TOY, replace=True)
    x = np.array([[1.0, -2.0, 0.5], [3.0, 0.0, -1.5]])
    loss = mlo.get(TOY.name, reduction=reduction)
    scale = 1.0 / x.size if reduction == "mean" else 1.0
    (ours,) = mithril_grad(framework, loss, [x])
    np.testing.assert_allclose(ours, 3.0 * x * scale, rtol=1e-12)
    (plain,) = value_autodiff(framework, loss, [x])
    np.testing.assert_allclose(plain, 2.0 * x, rtol=1e-12)  # what autodiff of the value would have given


@pytest.mark.parametrize("transform", ["jit", "vmap", "vjp"])
def test_jax_transforms_call_the_registered_vjp(transform, clean_registry):
    jax = pytest.importorskip("jax")
    mlo.register(TOY, replace=True)
    x = native("jax", [[1.0, -2.0, 0.5], [3.0, 0.0, -1.5]])
    loss = mlo.get(TOY.name, reduction="sum")
    if transform == "jit":
        g = jax.jit(jax.grad(loss))(x)
    elif transform == "vmap":
        g = jax.vmap(jax.grad(loss))(x)
    else:
        g = jax.vjp(mlo.get(TOY.name, reduction="none"), x)[1](native("jax", np.full((2, 3), 2.0)))[0]
        x = 2.0 * x
    np.testing.assert_allclose(to_numpy(g), 3.0 * to_numpy(x), rtol=1e-12)


@pytest.mark.parametrize("transform", ["compile", "value_and_grad", "vmap"])
def test_mlx_transforms_call_the_registered_vjp(transform, clean_registry):
    mx = pytest.importorskip("mlx.core")
    mlo.register(TOY, replace=True)
    x = native("mlx", [[1.0, -2.0, 0.5], [3.0, 0.0, -1.5]], "float32")
    loss = mlo.get(TOY.name, reduction="sum")
    if transform == "compile":
        g = mx.compile(mx.grad(loss))(x)
    elif transform == "value_and_grad":
        value, g = mx.value_and_grad(loss)(x)
        np.testing.assert_allclose(to_numpy(value), np.sum(to_numpy(x) ** 2), rtol=1e-6)
    else:
        g = mx.vmap(mx.grad(loss))(x)
    np.testing.assert_allclose(to_numpy(g), 3.0 * to_numpy(x), rtol=1e-6)


def test_torch_compile_calls_the_registered_vjp(clean_registry):
    torch = pytest.importorskip("torch")
    mlo.register(TOY, replace=True)
    x = torch.tensor([[1.0, -2.0, 0.5], [3.0, 0.0, -1.5]], dtype=torch.float64, requires_grad=True)
    loss = mlo.get(TOY.name, reduction="sum")
    compiled = torch.compile(lambda a: loss(torch.tanh(a)), backend="aot_eager")
    compiled(x).backward()
    t = np.tanh(to_numpy(x))
    np.testing.assert_allclose(to_numpy(x.grad), 3.0 * t * (1.0 - t * t), rtol=1e-12)


@pytest.mark.parametrize("transform", ["func.grad", "func.vmap(func.grad)", "create_graph"])
def test_torch_transforms_call_the_registered_vjp(transform, clean_registry):
    torch = pytest.importorskip("torch")
    mlo.register(TOY, replace=True)
    x = torch.tensor([[1.0, -2.0, 0.5], [3.0, 0.0, -1.5]], dtype=torch.float64)
    loss = mlo.get(TOY.name, reduction="sum")
    if transform == "func.grad":
        g = torch.func.grad(loss)(x)
    elif transform == "func.vmap(func.grad)":
        g = torch.func.vmap(torch.func.grad(loss))(x)
    else:
        leaf = x.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(loss(leaf), leaf, create_graph=True)
        (second,) = torch.autograd.grad(g.sum(), leaf)  # d/dx of the vjp 3x, not of the derivative 2x
        np.testing.assert_array_equal(to_numpy(second), np.full((2, 3), 3.0))
    np.testing.assert_allclose(to_numpy(g), 3.0 * to_numpy(x), rtol=1e-12)


def _norm_value(xp, input):
    return xp.sqrt(input * input)


def _norm_vjp(xp, cotangent, input):
    return {"input": cotangent * xp.sign(input)}  # the subgradient 0 at x = 0


NORM = LossSpec(
    name="p1_toy_sqrt_of_square", family="custom", summary="sqrt(x^2), whose autodiff is NaN at 0 (a test fixture).",
    inputs=("input",), differentiable=("input",), value=_norm_value, vjp=_norm_vjp,
    formula="sqrt(x^2)", gradient="sign(x)", sample=lambda rng, shape, options: {"input": rng.normal(size=shape)},
)


def test_autodiff_of_the_value_gives_nan_and_the_framework_gets_the_finite_hand_derived_gradient(framework,
                                                                                               clean_registry):
    mlo.register(NORM, replace=True)
    x = np.array([[0.0, -2.0], [0.5, 0.0]])
    loss = mlo.get(NORM.name, reduction="sum")
    (plain,) = value_autodiff(framework, loss, [x])
    assert np.isnan(plain[x == 0]).all()  # d sqrt(u) at u = 0 times du/dx = 0: inf * 0
    (ours,) = mithril_grad(framework, loss, [x])
    np.testing.assert_array_equal(ours, np.sign(x))


def test_binary_cross_entropy_at_probabilities_0_and_1_backpropagates_pytorchs_gradient(framework):
    torch = pytest.importorskip("torch")
    p = np.array([0.0, 1.0, 0.0, 1.0, 0.25])
    t = np.array([0.0, 1.0, 1.0, 0.0, 1.0])
    loss = mlo.get("binary_cross_entropy", reduction="sum")
    tp = torch.tensor(p, requires_grad=True)
    (reference,) = torch.autograd.grad(torch.nn.functional.binary_cross_entropy(tp, torch.tensor(t), reduction="sum"), tp)
    (ours,) = mithril_grad(framework, loss, [p], [t])
    np.testing.assert_allclose(ours, reference.numpy(), rtol=1e-8)  # PyTorch's eps 1e-12 is rounded to float32
    (plain,) = value_autodiff(framework, loss, [p], [t])
    assert not np.allclose(plain, reference.numpy())  # autodiff of the clamped logs takes other subgradients


# ---------------------------------------------------------------------------
# 2. equal to loss.grad and to autodiff of the value function, across families


def _case(name, rng):
    """(loss options, differentiable arrays, constant arrays, engine keywords as NumPy)."""
    n = rng.normal
    if name == "cross_entropy":
        return {"label_smoothing": 0.1}, [n(size=(4, 5))], [rng.integers(0, 5, 4), rng.uniform(0.5, 2, 5)], {}
    if name == "mse":
        return {}, [n(size=(4, 3)), n(size=(4, 3))], [], {"weight": rng.uniform(0.5, 2, (4, 3)),
                                                             "where": rng.random((4, 3)) < 0.6}
    if name == "huber":
        return {"delta": 0.5}, [n(size=(6,)), n(size=(6,))], [], {"where": np.array([1, 0, 1, 1, 0, 1], bool)}
    if name == "triplet_margin":
        return {"margin": 2.0}, [n(size=(5, 4)), n(size=(5, 4)), n(size=(5, 4))], [], {"weight": rng.uniform(0.5, 2, 5)}
    if name == "gaussian_nll":
        return {}, [n(size=(4, 2)), n(size=(4, 2)), rng.uniform(0.5, 2, (4, 2))], [], {}
    if name == "kl_div":
        logp = np.log(rng.dirichlet(np.ones(4), 3))
        return {"reduction": "batchmean"}, [logp, rng.dirichlet(np.ones(4), 3)], [], {}
    raise KeyError(name)


@pytest.mark.parametrize("name", ["cross_entropy", "mse", "huber", "triplet_margin", "gaussian_nll", "kl_div"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_framework_gradients_equal_loss_grad_and_autodiff_of_the_value(framework, name, dtype):
    options, diff, constants, engine = _case(name, np.random.default_rng(3))
    loss = mlo.get(name, **{"reduction": "mean", **options})
    native_engine = {k: native(framework, v, dtype if v.dtype.kind == "f" else None) for k, v in engine.items()}
    consts = [native(framework, c, dtype if c.dtype.kind == "f" else None) for c in constants]
    args = [native(framework, a, dtype) for a in diff]

    ours = framework_grad(framework, lambda *d: loss(*d, *consts, **native_engine), diff, dtype)
    expected = loss_grad(framework, loss, *args, *consts, **native_engine)
    for g, n in zip(ours, loss.differentiable):
        assert_same(g, expected[n], dtype)

    plain = framework_grad(framework, lambda *d: loss._plain_value(*d, *consts, **native_engine), diff, dtype)
    tol = 1e-5 if dtype == "float32" else 1e-12
    for g, a in zip(ours, plain):
        np.testing.assert_allclose(g, a, rtol=tol, atol=tol)


def test_layer_inputs_get_per_layer_gradients(framework):
    rng = np.random.default_rng(5)
    real = {"conv1": rng.normal(size=(2, 3, 4, 4)), "conv2": rng.normal(size=(2, 5, 2, 2))}
    fake = {k: v + 0.3 * rng.normal(size=v.shape) for k, v in real.items()}
    loss = mlo.get("style", layer_weights={"conv1": 1.0, "conv2": 0.5})
    real_n = {k: native(framework, v) for k, v in real.items()}
    fake_n = {k: native(framework, v) for k, v in fake.items()}
    if framework == "torch":
        import torch

        leaves = {k: v.requires_grad_(True) for k, v in fake_n.items()}
        loss(real_n, leaves).backward()
        ours = {k: v.grad for k, v in leaves.items()}
    elif framework == "jax":
        import jax

        ours = jax.grad(lambda f: loss(real_n, f))(fake_n)
    else:
        import mlx.core as mx

        ours = mx.grad(lambda f: loss(real_n, f))(fake_n)
    expected = loss.grad(real, fake)["features_fake"]
    assert set(ours) == set(expected)
    for k in expected:
        np.testing.assert_allclose(to_numpy(ours[k]), expected[k], rtol=1e-12 if framework != "mlx" else 1e-5,
                                   atol=1e-12 if framework != "mlx" else 1e-7)


def test_reduction_none_with_a_cotangent_equals_loss_vjp(framework):
    rng = np.random.default_rng(6)
    x, y, ct = rng.normal(size=(4, 5)), rng.integers(0, 5, 4), rng.normal(size=4)
    loss = mlo.get("cross_entropy", reduction="none")
    xs, ys, cts = native(framework, x), native(framework, y), native(framework, ct)
    if framework == "torch":
        xs.requires_grad_(True)
        loss(xs, ys).backward(cts)
        got = xs.grad
    elif framework == "jax":
        import jax

        got = jax.vjp(lambda a: loss(a, ys), xs)[1](cts)[0]
    else:
        import mlx.core as mx

        got = mx.vjp(lambda a: loss(a, ys), [xs], [cts])[1][0]
    np.testing.assert_array_equal(to_numpy(got), to_numpy(loss.vjp(cts, xs, ys)["input"]))  # eager: the same bits


# ---------------------------------------------------------------------------
# 3. compilers and batching


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_jax_jit_grad_and_vmap_over_a_batch_axis(dtype):
    jax = pytest.importorskip("jax")
    rng = np.random.default_rng(7)
    x, y = rng.normal(size=(3, 4, 5)), rng.integers(0, 5, (3, 4))
    xs, ys = native("jax", x, dtype), native("jax", y)
    mean, none = mlo.get("cross_entropy"), mlo.get("cross_entropy", reduction="none")
    tol = 1e-6 if dtype == "float32" else 1e-14

    per_batch = jax.jit(jax.vmap(jax.grad(mean)))(xs, ys)
    assert per_batch.dtype == xs.dtype
    for b in range(3):
        np.testing.assert_allclose(to_numpy(per_batch[b]), to_numpy(mean.grad(xs[b], ys[b])["input"]), rtol=tol, atol=tol)

    ct = native("jax", rng.normal(size=(3, 4)), dtype)
    values, pullback = jax.vjp(lambda a: jax.vmap(none)(a, ys), xs)
    (g,) = pullback(ct)
    for b in range(3):
        np.testing.assert_allclose(to_numpy(values[b]), to_numpy(none(xs[b], ys[b])), rtol=tol, atol=tol)
        np.testing.assert_allclose(to_numpy(g[b]), to_numpy(none.vjp(ct[b], xs[b], ys[b])["input"]), rtol=tol, atol=tol)

    g = jax.jit(jax.grad(lambda a: jax.vmap(mean)(a, ys).sum()))(xs)
    np.testing.assert_allclose(to_numpy(g), to_numpy(per_batch), rtol=tol, atol=tol)


def test_mlx_compile_and_value_and_grad():
    mx = pytest.importorskip("mlx.core")
    rng = np.random.default_rng(8)
    x, t = rng.normal(size=(6, 3)), rng.normal(size=(6, 3))
    xs, ts = native("mlx", x, "float32"), native("mlx", t, "float32")
    loss = mlo.get("huber", delta=0.7)
    expected = loss.grad(xs, ts)
    compiled = mx.compile(mx.value_and_grad(loss, argnums=[0, 1]))
    value, (gx, gt) = compiled(xs, ts)
    np.testing.assert_allclose(to_numpy(value), to_numpy(loss(xs, ts)), rtol=1e-6)
    np.testing.assert_allclose(to_numpy(gx), to_numpy(expected["input"]), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(to_numpy(gt), to_numpy(expected["target"]), rtol=1e-6, atol=1e-7)
    outer = mx.grad(mx.compile(lambda a: loss(a, ts)))(xs)  # compiled inside, differentiated outside
    np.testing.assert_allclose(to_numpy(outer), to_numpy(expected["input"]), rtol=1e-6, atol=1e-7)


def test_torch_compile_of_a_function_that_calls_the_loss_and_backward():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(9)
    x = torch.tensor(rng.normal(size=(4, 5)), requires_grad=True)
    y = torch.tensor(rng.integers(0, 5, 4))
    loss = mlo.get("cross_entropy", label_smoothing=0.05)

    @torch.compile(backend="aot_eager")
    def step(a, labels):
        value = loss(torch.tanh(a) * 3.0, labels)
        value.backward()
        return value.detach()

    value = step(x, y)
    ref_x = x.detach().clone().requires_grad_(True)
    reference = torch.nn.functional.cross_entropy(torch.tanh(ref_x) * 3.0, y, label_smoothing=0.05)
    reference.backward()
    np.testing.assert_allclose(value.item(), reference.item(), rtol=1e-12)
    np.testing.assert_allclose(to_numpy(x.grad), to_numpy(ref_x.grad), rtol=1e-12, atol=1e-15)


# ---------------------------------------------------------------------------
# 4. inputs that get no gradient


def test_torch_targets_get_pytorchs_gradient_where_the_loss_gives_one():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(10)
    x, t = rng.normal(size=(3, 4)), rng.normal(size=(3, 4))
    ours = [torch.tensor(a, requires_grad=True) for a in (x, t)]
    mlo.get("mse")(*ours).backward()
    theirs = [torch.tensor(a, requires_grad=True) for a in (x, t)]
    torch.nn.functional.mse_loss(*theirs).backward()
    for a, b in zip(ours, theirs):
        np.testing.assert_allclose(to_numpy(a.grad), to_numpy(b.grad), rtol=1e-12)


@pytest.mark.parametrize("what", ["target", "weight"])
def test_torch_raises_for_an_input_that_requires_grad_but_gets_no_gradient(what):
    torch = pytest.importorskip("torch")
    x = torch.zeros(3, 2, requires_grad=True)
    t = torch.ones(3, 2, requires_grad=what == "target")
    w = torch.ones(3, 2, requires_grad=what == "weight")
    with pytest.raises(ValueError, match=rf"`{what}` is being differentiated, but 'focal' gives it no gradient.*"
                                         rf"`{what}.detach\(\)`"):
        mlo.get("focal")(x, t, weight=w)
    # detached, it works; and with grad mode off no graph is recorded at all
    assert mlo.get("focal")(x, t.detach(), weight=w.detach()).requires_grad
    with torch.no_grad():
        assert not mlo.get("focal")(x, t).requires_grad


def test_torch_layer_inputs_name_the_layer_that_gets_no_gradient():
    torch = pytest.importorskip("torch")
    real = [torch.ones(2, 3, 2, 2), torch.ones(2, 3, 2, 2, requires_grad=True)]
    fake = [torch.zeros(2, 3, 2, 2, requires_grad=True), torch.zeros(2, 3, 2, 2, requires_grad=True)]
    with pytest.raises(ValueError, match=r"`features_real\[1\]` is being differentiated"):
        mlo.get("feature_reconstruction")(real, fake)


def test_jax_raises_for_a_differentiated_input_that_gets_no_gradient():
    jax = pytest.importorskip("jax")
    x, t = native("jax", np.zeros((3, 2))), native("jax", np.ones((3, 2)))
    focal = mlo.get("focal")
    with pytest.raises(ValueError, match=r"`target` is being differentiated.*jax\.lax\.stop_gradient\(target\)"):
        jax.grad(focal, argnums=1)(x, t)
    with pytest.raises(ValueError, match=r"`weight` is being differentiated"):
        jax.grad(lambda w: focal(x, t, weight=w))(native("jax", np.ones((3, 2))))
    # a target under jit (traced, not differentiated) is fine
    g = jax.jit(jax.grad(focal))(x, t)
    np.testing.assert_allclose(to_numpy(g), to_numpy(focal.grad(x, t)["input"]), rtol=1e-12)


def test_mlx_gives_a_zero_gradient_to_an_input_the_loss_does_not_differentiate():
    mx = pytest.importorskip("mlx.core")
    x, t = native("mlx", np.zeros((3, 2)), "float32"), native("mlx", np.ones((3, 2)), "float32")
    g = mx.grad(mlo.get("focal"), argnums=1)(x, t)  # MLX does not say which inputs are differentiated
    np.testing.assert_array_equal(to_numpy(g), np.zeros((3, 2)))


def test_integer_labels_and_boolean_masks_need_no_gradient(framework):
    rng = np.random.default_rng(11)
    x, y, where = rng.normal(size=(4, 3)), rng.integers(0, 3, 4), np.array([True, False, True, True])
    loss = mlo.get("cross_entropy")
    labels, mask = native(framework, y), native(framework, where)
    (ours,) = framework_grad(framework, lambda a: loss(a, labels, where=mask), [x])
    assert_same(ours, loss_grad(framework, loss, native(framework, x), labels, where=mask)["input"])
    np.testing.assert_array_equal(ours[~where], 0.0)


# ---------------------------------------------------------------------------
# 5. second order, limits, inputs never modified


@pytest.mark.parametrize("name", ["cross_entropy", "huber"])
def test_double_backward_differentiates_the_hand_derived_gradient(framework, name):
    rng = np.random.default_rng(12)
    x = rng.normal(size=(3, 4))
    other = rng.integers(0, 4, 3) if name == "cross_entropy" else rng.normal(size=(3, 4))
    loss = mlo.get(name)
    const = native(framework, other)

    def squared_gradient_norm(value):
        if framework == "torch":
            import torch

            def f(a):
                (g,) = torch.autograd.grad(value(a, const), a, create_graph=True)
                return (g * g).sum()
        elif framework == "jax":
            import jax

            def f(a):
                return (jax.grad(lambda b: value(b, const))(a) ** 2).sum()
        else:
            import mlx.core as mx

            def f(a):
                return (mx.grad(lambda b: value(b, const))(a) ** 2).sum()
        return f

    ours = framework_grad(framework, squared_gradient_norm(loss), [x])[0]
    plain = framework_grad(framework, squared_gradient_norm(loss._plain_value), [x])[0]
    tol = 1e-5 if framework == "mlx" else 1e-12  # MLX arrays of NumPy float64 here are float32
    np.testing.assert_allclose(ours, plain, rtol=tol, atol=tol * np.abs(plain).max())
    assert np.abs(ours).max() > 0


def test_jax_forward_mode_is_refused_by_custom_vjp():
    jax = pytest.importorskip("jax")
    x = native("jax", np.ones(3))
    with pytest.raises(TypeError, match="forward-mode"):
        jax.jvp(lambda a: mlo.get("mse")(a, x), (x,), (x,))


def test_torch_backward_after_an_input_was_modified_in_place_raises():
    torch = pytest.importorskip("torch")
    x = torch.ones(3, requires_grad=True)
    y = x * 2.0
    value = mlo.get("mse")(y, torch.zeros(3))
    with torch.no_grad():
        y.add_(1.0)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        value.backward()


def test_torch_inputs_are_not_modified_by_the_backward_pass():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(13)
    x, t = rng.normal(size=(3, 4)), rng.normal(size=(3, 4))
    xs, ts = torch.tensor(x, requires_grad=True), torch.tensor(t, requires_grad=True)
    mlo.get("smooth_l1")(xs, ts).backward()
    np.testing.assert_array_equal(to_numpy(xs), x)
    np.testing.assert_array_equal(to_numpy(ts), t)
    np.testing.assert_array_equal(to_numpy(xs.grad), -to_numpy(ts.grad))


def test_no_wrapper_outside_autodiff():
    torch = pytest.importorskip("torch")
    value = mlo.get("mse")(torch.ones(3), torch.zeros(3))
    assert value.grad_fn is None and not value.requires_grad


# ---------------------------------------------------------------------------
# 6. the conformance check `framework`


def test_conformance_framework_check_sees_which_gradient_the_framework_runs(framework, clean_registry, monkeypatch):
    from mithril_losses import backends, conformance

    mlo.register(TOY, replace=True)
    assert "framework" in conformance.planned_checks(TOY, framework, "float32")
    # the framework runs the registered vjp (3x): `framework` passes, `autodiff` (of the value, 2x) fails
    assert conformance.run_check(TOY, framework, "cpu", "float64", "framework").status == "passed"
    assert conformance.run_check(TOY, framework, "cpu", "float64", "autodiff").status == "failed"
    # with the wrapper switched off the framework differentiates the value function, and `framework` fails
    monkeypatch.setattr(backends.get_adapter(framework), "records_gradients", lambda arrays: False)
    result = conformance.run_check(TOY, framework, "cpu", "float64", "framework")
    assert result.status == "failed" and "grad input" in result.detail
