"""Stable primitives written once; the only place for backend fast paths."""

from __future__ import annotations

import math

import array_api_compat

LOG2 = math.log(2.0)
LN10 = math.log(10.0)


def softplus(xp, x):
    """log(1 + exp(x)) without overflow: logaddexp(x, 0)."""
    return xp.logaddexp(x, xp.zeros_like(x))


def log_cosh(xp, x):
    """log(cosh(x)) = |x| + log1p(exp(-2|x|)) - log 2, finite for any finite x."""
    a = xp.abs(x)
    return a + xp.log1p(xp.exp(-2.0 * a)) - LOG2


def xlogy(xp, x, y):
    """x * log(y) with 0 * log(0) = 0."""
    zero = x == 0
    return xp.where(zero, xp.zeros_like(x), x * xp.log(xp.where(zero, xp.ones_like(y), y)))


def safe_divide(xp, num, den):
    """num / den with 0 where den == 0."""
    zero = den == 0
    return xp.where(zero, xp.zeros_like(num), num / xp.where(zero, xp.ones_like(den), den))


def median_and_onehot(xp, x, axis):
    """Median of ``x`` along ``axis`` (kept as size 1) and d median / d x (1, or 1/2 for each of the two middles)."""
    n = x.shape[axis]
    order = xp.argsort(x, axis=axis)
    ranks = xp.argsort(order, axis=axis)
    lo, hi = (n - 1) // 2, n // 2
    weight = (xp.astype(ranks == lo, x.dtype) + xp.astype(ranks == hi, x.dtype)) * 0.5
    return xp.sum(x * weight, axis=axis, keepdims=True), weight


def sigmoid(xp, x):
    """1 / (1 + exp(-x)) without overflow for either sign."""
    e = xp.exp(-xp.abs(x))
    return xp.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def log_softmax(xp, x, axis):
    """(x - max) - log(sum(exp(x - max))): keeps its digits for huge logits; -inf logits stay -inf."""
    z, log_s = shifted_logits(xp, x, axis)
    return z - log_s


SOFTMAX_CHUNK_BYTES = 1 << 18  # NumPy softmax rows in chunks of about 256 KB: their five passes run in the cache


def softmax_parts(xp, x, axis):
    """(p, m, log_s): p = softmax(x) along ``axis``, m = max(x) (0 where not finite) and log_s = log(sum(exp(x - m))),
    both kept (size 1), so that log softmax(x) = (x - m) - log_s keeps its digits for huge logits.

    ``p`` is a fresh array of the caller's (a gradient may be formed in it in place). NumPy writes it in row
    chunks sized for the cache, with no other temporary of x's size; PyTorch runs its fused softmax kernel and
    reads log_s = -log max(p) (the maximum's share is exp(0) / s); elsewhere the max-shifted formula, which XLA
    fuses into one loop. A row of only -inf gives NaN in p, like PyTorch's softmax.
    """
    if array_api_compat.is_numpy_namespace(xp):
        import numpy as np

        p = np.empty_like(x)
        return (p, *_numpy_softmax_rows(x, axis, p))
    if array_api_compat.is_torch_namespace(xp):
        import torch

        p = torch.softmax(x, axis)
        return p, _finite_max(xp, x, axis), -torch.log(torch.amax(p, dim=axis, keepdim=True))
    m = _finite_max(xp, x, axis)
    e = xp.exp(x - m)
    s = xp.sum(e, axis=axis, keepdims=True)
    return e / s, m, xp.log(s)


def logsumexp_parts(xp, x, axis):
    """(m, log_s) of ``softmax_parts`` without p: logsumexp(x) = m + log_s. NumPy needs only a chunk of scratch."""
    if array_api_compat.is_numpy_namespace(xp):
        return _numpy_softmax_rows(x, axis, None)
    if array_api_compat.is_torch_namespace(xp):
        return softmax_parts(xp, x, axis)[1:]
    m = _finite_max(xp, x, axis)
    return m, xp.log(xp.sum(xp.exp(x - m), axis=axis, keepdims=True))


def softmax_and_log_softmax_at(xp, x, labels, axis):
    """(p, l): p = softmax(x) along ``axis`` as in ``softmax_parts``, l = log p at the ``labels`` (in [0, C)).

    PyTorch: its fused log_softmax kernel, then p = exp(log p) in the same buffer (two passes over the
    logits' size, no reduction kernels); elsewhere from ``softmax_parts``, l = (x_y - m) - log_s.
    """
    if array_api_compat.is_torch_namespace(xp):
        import torch

        log_p = torch.log_softmax(x, axis)
        at = take_labels(xp, log_p, labels, axis, in_range=True)
        return (log_p.exp_() if writes_in_place(xp, x) else torch.exp(log_p)), at
    p, m, log_s = softmax_parts(xp, x, axis)
    return p, log_softmax_from_parts(xp, x, labels, axis, m, log_s)


def log_softmax_at(xp, x, labels, axis):
    """log softmax(x) along ``axis`` at the ``labels`` in [0, C) (PyTorch: its log_softmax kernel; elsewhere from
    ``logsumexp_parts``, so NumPy needs only a chunk of scratch)."""
    if array_api_compat.is_torch_namespace(xp):
        import torch

        return take_labels(xp, torch.log_softmax(x, axis), labels, axis, in_range=True)
    return log_softmax_from_parts(xp, x, labels, axis, *logsumexp_parts(xp, x, axis))


def log_softmax_from_parts(xp, x, labels, axis, m, log_s):
    """log softmax(x) at the ``labels`` (in [0, C)) along ``axis`` from ``softmax_parts``'s m and log_s."""
    return (take_labels(xp, x, labels, axis, in_range=True) - xp.squeeze(m, axis=axis)) - xp.squeeze(log_s, axis=axis)


def _finite_max(xp, x, axis):
    m = xp.max(x, axis=axis, keepdims=True)
    return xp.where(xp.isfinite(m), m, 0.0)


def _numpy_softmax_rows(x, axis, p):
    """(m, log_s) of NumPy ``x`` along ``axis``, and softmax(x) written into ``p`` unless it is None.

    Chunks of leading-axis rows of about ``SOFTMAX_CHUNK_BYTES``: max, subtract, exp, sum and divide run on a
    chunk while it is in the cache, in ``p`` or in one chunk of scratch.
    """
    import numpy as np

    axis = axis % x.ndim
    n = x.shape[0]
    rows = n if axis == 0 else max(1, SOFTMAX_CHUNK_BYTES // max(x.itemsize * (x.size // max(n, 1)), 1))
    kept = tuple(1 if i == axis else d for i, d in enumerate(x.shape))
    m, s = np.empty(kept, dtype=x.dtype), np.empty(kept, dtype=x.dtype)
    out = p if p is not None else np.empty((min(rows, n),) + x.shape[1:], dtype=x.dtype)
    with np.errstate(divide="ignore", invalid="ignore"):  # a row of only -inf: s = 0, p = 0 / 0 (NaN)
        for start in range(0, n, rows):
            xc, mc, sc = x[start:start + rows], m[start:start + rows], s[start:start + rows]
            ec = out[start:start + rows] if p is not None else out[:xc.shape[0]]
            np.maximum.reduce(xc, axis=axis, keepdims=True, out=mc)  # np.max, without its wrapper's microseconds
            mc[~np.isfinite(mc)] = 0
            np.subtract(xc, mc, out=ec)
            np.exp(ec, out=ec)
            np.add.reduce(ec, axis=axis, keepdims=True, out=sc)
            if p is not None:
                np.divide(ec, sc, out=ec)
        return m, np.log(s)


def scale_slices(xp, buffer, scale, axis):
    """``buffer`` times ``scale`` (buffer's shape without ``axis``) along ``axis``; written into ``buffer`` (one the
    loss allocated) wherever ``writes_in_place``."""
    k = _as_dtype_of(xp, xp.expand_dims(scale, axis=axis), buffer)
    if not writes_in_place(xp, buffer, scale):
        return buffer * k
    buffer *= k
    return buffer


def zero_slices(xp, buffer, keep, axis):
    """``buffer`` with exactly 0 in the slices along ``axis`` where ``keep`` (buffer's shape without ``axis``) is
    False, even where it holds NaN or inf; wherever ``writes_in_place`` only those slices are written."""
    if not writes_in_place(xp, buffer, keep):
        return xp.where(xp.expand_dims(keep, axis=axis), buffer, xp.zeros_like(buffer))
    if array_api_compat.is_torch_namespace(xp) and buffer.device.type != "cpu":  # no host sync: one masked pass
        return buffer.masked_fill_(xp.expand_dims(~keep, axis=axis), 0)
    if not xp.all(keep):  # PyTorch's masked write costs a pass over the buffer even when it writes nothing
        xp.moveaxis(buffer, axis, -1)[~keep] = 0
    return buffer


def _as_dtype_of(xp, x, like):
    """``x`` in ``like``'s dtype, itself where it already is (the standard's astype copies)."""
    return x if x.dtype == like.dtype else xp.astype(x, like.dtype)


def add_to_rows(buffer, a, c, part):
    """``buffer`` plus ``part`` in its rows a..c-1, never a copy of the whole (a gradient as big as a weight
    matrix): in place where arrays are mutable (NumPy, PyTorch, array-api-strict), ``.at[].add`` on JAX and MLX
    (in place under jit)."""
    if hasattr(buffer, "at"):
        return buffer.at[a:c].add(part)
    buffer[a:c, ...] += part
    return buffer


def take_labels(xp, x, labels, axis, *, in_range=False):
    """Entries of ``x`` at integer ``labels`` along ``axis`` (labels have x's shape without that axis).

    ``in_range``: the labels are known to lie in [0, n) (validated class indices), so PyTorch gathers directly,
    without array-api-compat's wrapping of negative indices (four more kernels).
    """
    if array_api_compat.is_numpy_namespace(xp):  # a fancy index: NumPy's take_along_axis costs microseconds
        import numpy as np

        return np.asarray(x[_label_index(np, labels, axis)])  # an array, also where labels are 0-d
    index = xp.expand_dims(as_index(xp, labels), axis=axis)
    if in_range and array_api_compat.is_torch_namespace(xp):
        return xp.squeeze(x.gather(axis, index), axis=axis)
    return xp.squeeze(xp.take_along_axis(x, index, axis=axis), axis=axis)


def add_at_labels(xp, buffer, labels, values, axis):
    """``buffer`` plus ``values`` at the ``labels`` positions along ``axis``.

    ``buffer`` must be an array the engine allocated: NumPy and PyTorch add in
    place; JAX and MLX use their scatter; others fall back to a comparison
    with the class index, which costs a boolean temporary of buffer's shape.
    """
    if array_api_compat.is_numpy_namespace(xp):  # one entry per slice: no index repeats
        import numpy as np

        buffer[_label_index(np, labels, axis)] += values
        return buffer
    labels = as_index(xp, labels)
    index = xp.expand_dims(labels, axis=axis)
    update = xp.expand_dims(values, axis=axis)
    if array_api_compat.is_torch_namespace(xp):
        return buffer.scatter_add_(axis, index, _as_dtype_of(xp, update, buffer))
    if array_api_compat.is_jax_namespace(xp):
        import jax.numpy as jnp

        return buffer.at[_label_index(jnp, labels, axis)].add(values)
    if hasattr(xp, "put_along_axis"):  # mlx
        return xp.put_along_axis(buffer, index, xp.take_along_axis(buffer, index, axis=axis) + update, axis=axis)
    classes = _class_ids(xp, buffer, axis)
    return xp.where(classes == index, buffer + update, buffer)


def _class_ids(xp, buffer, axis):
    """0..C-1 along ``axis`` of ``buffer`` (C entries there), shaped to broadcast against it, on its device."""
    return xp.reshape(arange_like(xp, buffer.shape[axis], buffer), (-1,) + (1,) * (buffer.ndim - axis % buffer.ndim - 1))


def _label_index(np_like, labels, axis):
    """The index (a tuple of arrays, NumPy's or JAX's ``np_like``) of the entries at ``labels`` along ``axis``."""
    axis = axis % (labels.ndim + 1)
    grids = np_like.indices(labels.shape, sparse=True)
    return (*grids[:axis], labels, *grids[axis:])


def sigmoid_terms(xp, x):
    """(softplus(x), softplus(-x), sigmoid(x), sigmoid(-x)) sharing one exp(-|x|).

    softplus(+-x) = max(+-x, 0) + log1p(exp(-|x|)) = -log sigmoid(-+x): exact for any finite x, no
    cancellation; sigmoid(-x) is computed directly, not as 1 - sigmoid(x).
    """
    e = xp.exp(-xp.abs(x))
    tail = xp.log1p(e)
    r = 1.0 / (1.0 + e)
    big, small = r, e * r  # sigmoid(|x|), sigmoid(-|x|)
    pos = x >= 0
    return (xp.maximum(x, 0.0) + tail, xp.maximum(-x, 0.0) + tail,
            xp.where(pos, big, small), xp.where(pos, small, big))


def as_index(xp, labels):
    """Integer labels in the dtype every backend's gather/scatter takes: PyTorch's need int64; others as they are."""
    if array_api_compat.is_torch_namespace(xp) and labels.dtype != xp.int64:
        return xp.astype(labels, xp.int64)
    return labels


def zero_at_labels(xp, buffer, labels, axis):
    """``buffer`` with its entries at the integer ``labels`` along ``axis`` set to exactly 0 (no one-hot is built).

    NumPy writes into ``buffer``, which must be an array the loss just
    computed; the others return a new array (PyTorch out of place, so that its
    autograd can differentiate a value function through it).
    """
    if array_api_compat.is_numpy_namespace(xp):
        import numpy as np

        buffer[_label_index(np, labels, axis)] = 0
        return buffer
    index = xp.expand_dims(labels, axis=axis)
    if array_api_compat.is_torch_namespace(xp):
        return buffer.scatter(axis, index, 0.0)
    if array_api_compat.is_jax_namespace(xp):
        import jax.numpy as jnp

        return buffer.at[_label_index(jnp, labels, axis)].set(0)
    if hasattr(xp, "put_along_axis"):  # mlx
        return xp.put_along_axis(buffer, index, xp.zeros_like(index, dtype=buffer.dtype), axis=axis)
    classes = _class_ids(xp, buffer, axis)
    return xp.where(classes == index, xp.zeros_like(buffer), buffer)


def xlog(xp, x, log_y):
    """x * log_y with 0 where x == 0 (log_y already a log, possibly -inf there)."""
    zero = x == 0
    return xp.where(zero, xp.zeros_like(x), x * xp.where(zero, xp.zeros_like(log_y), log_y))


def take_table(xp, table, indices):
    """``table[indices]`` for a 1-D ``table`` (e.g. class weights) and integer ``indices`` of any shape."""
    if array_api_compat.is_torch_namespace(xp):  # one kernel, where array-api-compat's take wraps negative indices
        import torch

        return torch.take(table, as_index(xp, indices))
    flat = xp.take(table, xp.reshape(indices, (-1,)), axis=0)
    return xp.reshape(flat, tuple(indices.shape))


def constant(xp, values, like):
    """``values`` (a number or a sequence) as an array of ``like``'s dtype, on ``like``'s device."""
    return xp.asarray(values, dtype=like.dtype, device=device_of(like))


def indices_like(xp, values, like):
    """Integer ``values`` (a NumPy array of indices) as an array on ``like``'s device."""
    device = device_of(like)
    return xp.asarray(values) if device is None else xp.asarray(values, device=device)


def device_of(x):
    """``x``'s device, or None for MLX arrays (unified memory: they have no device attribute)."""
    try:
        return array_api_compat.device(x)
    except (AttributeError, TypeError, ValueError):
        return None


def log_softmax_complement(xp, x, axis):
    """(log p, log(1 - p)) for p = softmax(x) along ``axis``, both accurate as p -> 1.

    Only the unique maximum can hold more than half the mass; for it the mass of
    the other classes, rest = sum over x_k < max of exp(x_k - max), is summed
    directly, so log p = -log1p(rest) and log(1 - p) = log(rest) - log1p(rest)
    keep their digits where 1 - p is below the rounding of 1 (logits 100 apart:
    log(1 - p) = -200, not -inf). Elsewhere log(1 - p) = log1p(-p). A -inf
    logit gives (-inf, 0).
    """
    z = x - _finite_max(xp, x, axis)
    e = xp.exp(z)
    rest = xp.sum(xp.where(z == 0, xp.zeros_like(e), e), axis=axis, keepdims=True)
    log_p = z - xp.log(xp.sum(e, axis=axis, keepdims=True))
    dominant = log_p > -LOG2  # p > 1/2: the unique maximum (z = 0)
    log1p_rest = xp.log1p(rest)
    log_rest = xp.where(rest > 0, xp.log(xp.where(rest > 0, rest, xp.ones_like(rest))), -math.inf)
    log_q_top = log_rest - log1p_rest
    p = xp.exp(log_p)
    log_q = xp.where(dominant, log_q_top, xp.log1p(-xp.where(dominant, xp.zeros_like(p), p)))
    return xp.where(dominant, -log1p_rest, log_p), log_q


def l2_norm(xp, x, axis, keepdims=False):
    """Euclidean norm over the tuple ``axis`` of non-negative axes (``()`` gives |x|), 0 for a zero vector.

    Scaled by the largest |x| along ``axis``, so it neither overflows nor
    underflows wherever the norm itself is representable (float32 entries of
    1e25 or 1e-25). ``axis=()`` is handled here: PyTorch reads ``dim=()`` as all axes.
    A zero vector never reaches the root (whose slope is infinite at 0), so a
    framework's autodiff of it gives 0 there, not NaN.
    """
    a = xp.abs(x)
    if not axis:
        return a
    m = xp.max(a, axis=axis, keepdims=True)
    nonzero = m != 0  # NaN included: a NaN entry gives a NaN norm
    m = xp.where(nonzero, m, xp.ones_like(m))
    r = a / m
    s = xp.sum(r * r, axis=axis, keepdims=True)  # >= 1 where nonzero
    n = xp.where(nonzero, m * xp.sqrt(xp.where(nonzero, s, xp.ones_like(s))), xp.zeros_like(m))
    n = xp.where(m == math.inf, m, n)  # inf / inf would give NaN
    return n if keepdims else xp.reshape(n, tuple(d for i, d in enumerate(x.shape) if i not in axis))


def log_or_zero(xp, x):
    """log x where x > 0 and 0 elsewhere, never evaluating log 0 (for terms that are multiplied by x == 0)."""
    pos = x > 0
    return xp.where(pos, xp.log(xp.where(pos, x, xp.ones_like(x))), xp.zeros_like(x))


def arange_like(xp, n, like):
    """``arange(n)`` (integers) on ``like``'s device, e.g. to build a diagonal mask ``i[:, None] == i[None, :]``."""
    device = device_of(like)
    return xp.arange(n) if device is None else xp.arange(n, device=device)


def unit_vectors(xp, x, min_sq):
    """(u, n, active): u = x / n along the last axis, n = sqrt(max(|x|^2, min_sq)), active = |x|^2 > min_sq.

    ``min_sq`` > 0 floors the squared norm, so a zero vector gives u = 0 with finite gradients (optax's
    cosine similarity clips |x|^2 at an epsilon; ``min_sq = eps^2`` is torch's F.normalize, max(|x|, eps)).
    |x| is ``l2_norm``'s, so vectors whose squared norm overflows (float32 entries of 1e30) keep their
    direction; the floor is ``norm_floor``'s (float16: at least its smallest normal number). Pull a cotangent
    of u back with ``unit_vectors_vjp``.
    """
    norm = l2_norm(xp, x, (x.ndim - 1,), keepdims=True)
    floor = norm_floor(xp, math.sqrt(min_sq), x)
    n = xp.maximum(norm, floor)
    return x / n, n, norm > floor


def norm_floor(xp, eps, like):
    """``eps`` as a floor of norms in ``like``'s dtype: at least its smallest normal number, so that a floor
    that underflows there (float16: 1e-8, 1e-12 become 0) still keeps zero vectors finite."""
    return max(eps, float(xp.finfo(like.dtype).smallest_normal))


def unit_vectors_vjp(xp, du, u, n, active):
    """Cotangent of x from the cotangent ``du`` of u = x / n: (du - u (u . du)) / n, just du / n where the floor holds n."""
    radial = u * xp.sum(u * du, axis=-1, keepdims=True)
    return (du - xp.where(active, radial, xp.zeros_like(radial))) / n


def cumulative_logsumexp(xp, x, *, reverse=False):
    """log(cumsum(exp(x))) along the last axis (``reverse``: the sums over i..n-1, suffix sums), no overflow.

    NumPy (logaddexp.accumulate), PyTorch (logcumsumexp) and JAX (lax.cumlogsumexp) use their own scans;
    elsewhere a doubling scan of ceil(log2 n) logaddexp steps, exact for any spread of x (a single global
    max shift would underflow suffixes more than ~700 (float64) or ~90 (float32) below the maximum).
    """
    if array_api_compat.is_numpy_namespace(xp):
        import numpy as np

        if reverse:
            return np.flip(np.logaddexp.accumulate(np.flip(x, axis=-1), axis=-1), axis=-1)
        return np.logaddexp.accumulate(x, axis=-1)
    if array_api_compat.is_torch_namespace(xp):
        import torch

        if reverse:
            return torch.flip(torch.logcumsumexp(torch.flip(x, dims=(-1,)), dim=-1), dims=(-1,))
        return torch.logcumsumexp(x, dim=-1)
    if array_api_compat.is_jax_namespace(xp):
        import jax

        return jax.lax.cumlogsumexp(x, axis=x.ndim - 1, reverse=reverse)
    n = x.shape[-1]
    step = 1
    while step < n:
        if reverse:  # position i adds the partial sum that starts at i + step
            x = xp.concat((xp.logaddexp(x[..., :n - step], x[..., step:]), x[..., n - step:]), axis=-1)
        else:  # position i adds the partial sum that ends at i - step
            x = xp.concat((x[..., :step], xp.logaddexp(x[..., step:], x[..., :n - step])), axis=-1)
        step *= 2
    return x


def lp_norm(xp, x, p, axis=-1, keepdims=False):
    """(sum |x|^p)^(1/p) along one ``axis`` for a real p >= 1; 0 for a zero vector.

    p = 2 is ``l2_norm``; other p > 1 are scaled by the largest |x| like it, so
    |x|^p neither overflows nor underflows where the norm is representable.
    """
    axis = axis % x.ndim
    if p == 2.0:
        return l2_norm(xp, x, (axis,), keepdims)
    a = xp.abs(x)
    if p == 1.0:
        return xp.sum(a, axis=axis, keepdims=keepdims)
    m = xp.max(a, axis=axis, keepdims=True)
    m = xp.where(m > 0, m, xp.ones_like(m))
    n = m * xp.sum((a / m) ** p, axis=axis, keepdims=True) ** (1.0 / p)
    return n if keepdims else xp.squeeze(n, axis=axis)


def sign(xp, x):
    """-1, 0 or 1 by the sign of ``x``, NaN where ``x`` is NaN. PyTorch's own ``sign`` gives 0 at NaN, and
    array-api-compat's fix writes through a boolean mask (a host sync on a GPU); a ``where`` needs none."""
    if array_api_compat.is_torch_namespace(xp):
        return xp.where(xp.isnan(x), x, x.sign())
    return xp.sign(x)


def lp_norm_grad(xp, x, norm, p):
    """d ||x||_p / dx = sign(x) (|x| / ||x||_p)^(p - 1), given the norm with its axis kept (size 1).

    A zero vector gets 0, and p = 1 gives sign(x) (0 where x = 0), as PyTorch's norm backward.
    """
    if p == 1.0:
        return sign(xp, x)
    if p == 2.0:
        return safe_divide(xp, x, norm)
    return sign(xp, x) * safe_divide(xp, xp.abs(x), norm) ** (p - 1.0)


def shifted_logits(xp, x, axis):
    """(z, log s): z = x - max(x) and log s = log(sum(exp(z))) along ``axis`` (kept, size 1).

    log softmax(x) = z - log s keeps its digits when the logits are huge: ``x - logsumexp(x)`` rounds the
    logsumexp at the magnitude of x (float32 logits of 5e4 lose log 2 to a step of 0.004). A row of only
    -inf gives z = -inf and log s = -inf.
    """
    z = x - _finite_max(xp, x, axis)
    return z, xp.log(xp.sum(xp.exp(z), axis=axis, keepdims=True))


def stop_gradient(xp, x):
    """``x`` as a constant for the backend's autodiff (torch's ``no_grad``/``detach``, ``jax.lax.stop_gradient``).

    Lets a value function hold a factor fixed that the reference computes under ``torch.no_grad()`` (CIoU's
    alpha), so that autodiff of the value function and the hand-derived vjp agree; the identity elsewhere.
    """
    if array_api_compat.is_torch_namespace(xp):
        return x.detach()
    if array_api_compat.is_jax_namespace(xp):
        import jax

        return jax.lax.stop_gradient(x)
    if not array_api_compat.is_numpy_namespace(xp) and hasattr(xp, "stop_gradient"):  # mlx
        return xp.stop_gradient(x)
    return x


def scatter_add_last(xp, buffer, index, values):
    """``buffer`` (..., C) plus ``values`` (..., K) summed into the classes ``index`` (broadcasts to values' shape)
    along the last axis; repeated indices accumulate (a segment sum: CTC's extended labels -> classes).

    ``buffer`` must be an array the engine allocated (NumPy and PyTorch add in place); array-api-strict
    falls back to a (..., K, C) comparison.
    """
    index = xp.broadcast_to(as_index(xp, index), tuple(values.shape))
    if array_api_compat.is_numpy_namespace(xp):
        import numpy as np

        c = buffer.shape[-1]
        rows = np.arange(values.size // max(values.shape[-1], 1)).reshape(values.shape[:-1] + (1,))
        flat = np.bincount((rows * c + index).ravel(), weights=values.ravel(), minlength=buffer.size)
        buffer += flat.reshape(buffer.shape).astype(buffer.dtype, copy=False)
        return buffer
    if array_api_compat.is_torch_namespace(xp):
        return buffer.scatter_add_(-1, index, xp.astype(values, buffer.dtype))
    if array_api_compat.is_jax_namespace(xp):
        import jax.numpy as jnp

        grids = jnp.indices(index.shape, sparse=True)[:-1]
        return buffer.at[(*grids, index)].add(values)
    if hasattr(xp, "stop_gradient") and hasattr(buffer, "at"):  # mlx
        import numpy as np

        grids = tuple(xp.array(g) for g in np.indices(tuple(index.shape), sparse=True)[:-1])
        return buffer.at[(*grids, index)].add(values)
    classes = arange_like(xp, buffer.shape[-1], buffer)
    hit = xp.expand_dims(index, axis=-1) == classes
    v = xp.expand_dims(values, axis=-1)
    return buffer + xp.sum(xp.where(hit, v, xp.zeros_like(v)), axis=-2)


# --------------------------------------------------------------------------- hot elementwise losses: buffers they own

CHUNK_ELEMENTS = 1 << 15  # rows of about this many elements: a formula's temporaries stay in the CPU cache


def map_chunks(xp, fn, *arrays, out=None):
    """``fn(*arrays)`` (an array or a tuple of arrays) for a ``fn`` that maps rows to rows (elementwise, or
    reducing within a row), on NumPy evaluated in chunks of rows (first-axis entries) of about
    ``CHUNK_ELEMENTS`` elements into fresh arrays.

    Every temporary of the formula then lives in the cache: a chain of k operations costs one pass over
    memory, not k. ``out`` (optional, one per result; None for a fresh one) are buffers the loss allocated
    and no longer needs, written in place (one may be among ``arrays``: each chunk is read before it is
    written). Arrays whose first axis is not the full one (scalars, per-class rows) go whole to every chunk.
    Elsewhere it is ``fn(*arrays)``: PyTorch's cost per operation and its threads make small chunks slower.
    """
    if not array_api_compat.is_numpy_namespace(xp):
        return fn(*arrays)
    shape = tuple(xp.broadcast_shapes(*(tuple(a.shape) for a in arrays if hasattr(a, "shape"))))
    size = math.prod(shape)
    if not shape or size <= CHUNK_ELEMENTS:
        return fn(*arrays)
    rows, n = max(1, CHUNK_ELEMENTS // (size // shape[0])), shape[0]
    sliced = [hasattr(a, "shape") and a.ndim == len(shape) and a.shape[0] == n for a in arrays]
    results = None
    for start in range(0, n, rows):
        part = fn(*(a[start:start + rows] if s else a for a, s in zip(arrays, sliced)))
        single = not isinstance(part, tuple)
        part = (part,) if single else part
        if results is None:
            given = (out,) if single else (out or (None,) * len(part))
            results = tuple(xp.empty((n, *p.shape[1:]), dtype=p.dtype, device=device_of(p)) if o is None else o
                            for p, o in zip(part, given))
        for buffer, p in zip(results, part):
            buffer[start:start + rows] = p
    return results[0] if single else results


def writes_in_place(xp, *arrays):
    """Whether a buffer the loss allocated may be written in place where it meets ``arrays``: always on NumPy;
    on PyTorch unless autograd records it (a double backward), a ``torch.func`` transform wraps it, or
    ``torch.compile`` traces it (which fuses the formula anyway); never on JAX, MLX or array-api-strict."""
    if array_api_compat.is_numpy_namespace(xp):
        return True
    if not array_api_compat.is_torch_namespace(xp):
        return False
    import torch

    tensors = [a for a in arrays if isinstance(a, torch.Tensor)]
    if torch.compiler.is_compiling() or any(torch._C._functorch.is_functorch_wrapped_tensor(a) for a in tensors):
        return False
    return not (torch.is_grad_enabled() and any(a.requires_grad for a in tensors))


def once(buffer, remake):
    """A function that gives ``buffer`` on its first call and ``remake()`` on later ones.

    A pullback that writes into its forward pass's buffer stays right when it runs again (PyTorch's
    ``backward(retain_graph=True)`` twice): the second run gets a fresh buffer.
    """
    kept = [buffer]
    return lambda: kept.pop() if kept else remake()


def times_cotangent(xp, ct, buffer, factor=1.0):
    """``factor * ct * buffer`` for a cotangent ``ct`` that broadcasts to ``buffer``'s shape.

    ``buffer`` must be one the loss allocated and needs no more: NumPy and PyTorch scale it in place, in one
    pass (a ``ct`` of one value, such as the broadcast 1/N of a mean, multiplies as a scalar); the others
    return a new array. ``ct`` itself is never written.
    """
    if not (writes_in_place(xp, ct, buffer) and _broadcasts_to(xp, ct, buffer)):
        return factor * ct * buffer
    single = _single_value(xp, ct)
    if single is not None:
        buffer *= single * factor
        return buffer
    buffer *= ct
    if factor != 1.0:
        buffer *= factor
    return buffer


def _broadcasts_to(xp, ct, buffer):
    shape, target = tuple(getattr(ct, "shape", ())), tuple(buffer.shape)
    return shape == target or tuple(xp.broadcast_shapes(shape, target)) == target


def _single_value(xp, ct):
    """``ct``'s one value (a Python number or a 0-d array) where every entry is the same memory, else None."""
    if not hasattr(ct, "shape"):
        return ct
    strides = ct.strides if array_api_compat.is_numpy_namespace(xp) else ct.stride()
    if math.prod(ct.shape) == 0 or any(strides):
        return None
    return ct[(0,) * ct.ndim]
