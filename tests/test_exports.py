"""Loss-specific helpers are reachable from the top-level package."""

import numpy as np
import pytest

import mithril_losses as mlo


def test_update_center_is_the_ema_of_the_teacher_mean():
    center = np.array([1.0, -2.0, 0.5])
    teacher = np.arange(12.0).reshape(4, 3)
    expected = 0.9 * center + 0.1 * teacher.mean(axis=0)
    np.testing.assert_allclose(mlo.update_center(center, teacher), expected, rtol=1e-15)
    np.testing.assert_allclose(mlo.update_center(center, teacher, momentum=0.5),
                               0.5 * center + 0.5 * teacher.mean(axis=0), rtol=1e-15)


def test_register_distance_from_the_top_level_is_used_by_triplet_margin_with_distance():
    def value(xp, a, b):
        return xp.sum(xp.abs(a - b), axis=-1)

    def vjp(xp, ct, a, b):
        g = xp.expand_dims(ct, axis=-1) * xp.sign(a - b)
        return g, -g

    mlo.register_distance("test_manhattan", value, vjp, replace=True)
    assert "test_manhattan" in mlo.distances()
    rng = np.random.default_rng(0)
    a, p, n = (rng.normal(size=(5, 4)) for _ in range(3))
    loss = mlo.get("triplet_margin_with_distance", distance="test_manhattan", margin=1.0, reduction="none")
    d_ap, d_an = np.abs(a - p).sum(-1), np.abs(a - n).sum(-1)
    np.testing.assert_allclose(loss(a, p, n), np.maximum(d_ap - d_an + 1.0, 0.0), rtol=1e-13)


def test_unknown_top_level_name_raises_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'not_a_loss_loss'"):
        mlo.not_a_loss_loss
