"""The cross-backend conformance suite: each planned check of the harness as one test.

Every registered loss x installed backend x device x dtype; known gaps are
strict xfails. Quick by default (one shape per option set);
``MITHRIL_LOSSES_CONFORMANCE=full`` runs the exhaustive sweep, as
``mithril-losses conformance --full`` does, and
``MITHRIL_LOSSES_CONFORMANCE_BACKENDS=numpy,torch`` narrows the backends.
"""

import os

import pytest

from mithril_losses import conformance

FULL = os.environ.get("MITHRIL_LOSSES_CONFORMANCE", "quick") == "full"
BACKENDS = [b for b in os.environ.get("MITHRIL_LOSSES_CONFORMANCE_BACKENDS", "").split(",") if b] or None

CASES = conformance.plan(backends_=BACKENDS)


@pytest.mark.parametrize(
    "spec, backend, device, dtype, check", CASES,
    ids=[f"{s.name}-{b}-{d}-{t}-{c}" for s, b, d, t, c in CASES],
)
def test_conformance(spec, backend, device, dtype, check):
    result = conformance.run_check(spec, backend, device, dtype, check, full=FULL)
    if result.status == "skipped":
        pytest.skip(result.detail)
    if result.status == "xfail":
        pytest.xfail(result.detail)
    assert result.status == "passed", result.detail


def test_every_registered_loss_is_planned_on_every_installed_backend():
    from mithril_losses import available, backends

    planned = {(s.name, b) for s, b, *_ in CASES}
    expected = {(n, b) for n in available() for b in (BACKENDS or backends.installed())}
    assert planned == expected
