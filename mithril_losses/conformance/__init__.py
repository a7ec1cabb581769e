"""The conformance harness as a library: for every registered loss (a user's own too) x backend x device x dtype.

``run(...)`` returns a ``Report``; ``mithril-losses conformance`` and the
top-level ``conformance/`` pytest suite call the same checks.
"""

from __future__ import annotations

import platform
import sys
from dataclasses import asdict, dataclass, field

from .. import backends, registry
from .checks import Result, base_devices, planned_checks, run_check
from .tolerances import TOLERANCES

DEFAULT_DTYPES = ("float32", "float64")


@dataclass
class Report:
    results: list[Result] = field(default_factory=list)
    environment: dict = field(default_factory=dict)

    @property
    def summary(self) -> dict:
        counts = {"passed": 0, "failed": 0, "skipped": 0, "xfail": 0}
        for r in self.results:
            counts[r.status] += 1
        return counts

    @property
    def ok(self) -> bool:
        return self.summary["failed"] == 0

    def to_json(self) -> dict:
        keys = ("loss", "backend", "device", "dtype", "check", "status", "max_abs_err", "max_rel_err", "detail")
        return {"summary": self.summary,
                "results": [{k: asdict(r)[k] for k in keys} for r in self.results],
                "environment": self.environment}


def plan(losses=None, backends_=None, devices=None, dtypes=DEFAULT_DTYPES):
    """The (spec, backend, device, dtype, check) cases to run, over installed backends."""
    names = registry.available() if not losses else [registry.spec(n).name for n in losses]
    chosen = backends.installed() if not backends_ else [backends.canonical(b) for b in backends_]
    cases = []
    for backend in chosen:
        adapter = backends.get_adapter(backend)
        for device in base_devices(adapter):
            if devices and device not in devices:
                continue
            for dtype in dtypes:
                for name in names:
                    spec = registry.spec(name)
                    cases += [(spec, backend, device, dtype, c) for c in planned_checks(spec, backend, dtype)]
    return cases


def environment(chosen=None) -> dict:
    import numpy

    env = {"python": sys.version.split()[0], "platform": platform.platform(), "numpy": numpy.__version__,
           "backends": {}}
    for backend in chosen or backends.installed():
        adapter = backends.get_adapter(backend)
        module = {"array_api_strict": "array_api_strict"}.get(backend, backend)
        version = getattr(sys.modules.get(module), "__version__", "unknown")
        if backend == "mlx":
            import mlx.core as mx

            version = mx.__version__
        env["backends"][backend] = {"version": version, "devices": base_devices(adapter)}
    return env


def run(losses=None, backends_=None, devices=None, dtypes=DEFAULT_DTYPES, *, full=False, seed=0, progress=None) -> Report:
    """Run every planned check; ``progress(done, total, result)`` is called after each."""
    cases = plan(losses, backends_, devices, dtypes)
    report = Report(environment=environment(sorted({c[1] for c in cases})))
    for i, (spec, backend, device, dtype, check) in enumerate(cases):
        result = run_check(spec, backend, device, dtype, check, full=full, seed=seed)
        report.results.append(result)
        if progress is not None:
            progress(i + 1, len(cases), result)
    return report


__all__ = ["DEFAULT_DTYPES", "Report", "Result", "TOLERANCES", "plan", "planned_checks", "run", "run_check"]
