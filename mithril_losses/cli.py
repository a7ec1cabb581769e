"""The ``mithril-losses`` command: ``conformance``, ``bench`` and ``list``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _csv(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def _progress(stream):
    """A bar redrawn in place on a terminal; a line per tenth of the work otherwise (CI logs)."""
    tty = stream.isatty()

    def show(done, total, result):
        if not tty:
            if done == total or done * 10 // total != (done - 1) * 10 // total:
                stream.write(f"conformance: {done}/{total} checks\n")
            return
        width = 30
        filled = width * done // total
        label = f"{result.loss} {result.backend} {result.dtype} {result.check}"
        stream.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total} {label[:48]:<48}")
        if done == total:
            stream.write("\n")
        stream.flush()
    return show


def _cells(report):
    """(losses, columns, {(loss, column): (status, worst relative error)})."""
    cells: dict = {}
    for r in report.results:
        key = (r.loss, f"{r.backend}/{r.dtype}" + ("" if r.device == "cpu" else f"@{r.device}"))
        status, worst = cells.get(key, ("passed", 0.0))
        rank = {"passed": 0, "skipped": 0, "xfail": 1, "failed": 2}
        if rank[r.status] > rank[status] or (status == "skipped" and r.status == "passed"):
            status = r.status
        cells[key] = (status, max(worst, r.max_rel_err or 0.0))
    losses = sorted({k[0] for k in cells})
    columns = sorted({k[1] for k in cells})
    return losses, columns, cells


def _cell_text(cell):
    if cell is None:
        return "-"
    status, worst = cell
    mark = {"passed": "ok", "failed": "FAIL", "xfail": "xfail", "skipped": "skip"}[status]
    return f"{mark} {worst:.0e}"


def format_table(report) -> str:
    losses, columns, cells = _cells(report)
    rows = [["loss"] + columns] + [[n] + [_cell_text(cells.get((n, c))) for c in columns] for n in losses]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def format_markdown(report) -> str:
    losses, columns, cells = _cells(report)
    out = ["# Conformance report", "", "Each cell: status and worst norm-wise relative error over its checks.", "",
           "| loss | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    out += [f"| {n} | " + " | ".join(_cell_text(cells.get((n, c))) for c in columns) + " |" for n in losses]
    s = report.summary
    out += ["", f"**{s['passed']} passed, {s['failed']} failed, {s['skipped']} skipped, {s['xfail']} known gaps.**", ""]
    problems = [r for r in report.results if r.status in ("failed", "xfail")]
    if problems:
        out += ["| loss | backend | device | dtype | check | status | detail |", "|---|---|---|---|---|---|---|"]
        out += [f"| {r.loss} | {r.backend} | {r.device} | {r.dtype} | {r.check} | {r.status} | {r.detail} |"
                for r in problems]
    env = report.environment
    out += ["", "## Environment", "", f"Python {env.get('python')}, NumPy {env.get('numpy')}, {env.get('platform')}", ""]
    out += [f"- {b}: {info['version']}, devices: {', '.join(info['devices'])}" for b, info in env.get("backends", {}).items()]
    return "\n".join(out) + "\n"


def conformance_main(args) -> int:
    from . import conformance

    report = conformance.run(args.losses, args.backends, args.devices, args.dtypes or conformance.DEFAULT_DTYPES,
                             full=args.full, seed=args.seed,
                             progress=None if args.quiet else _progress(sys.stderr))
    print(format_table(report))
    for r in report.results:
        if r.status in ("failed", "xfail"):
            print(f"{r.status.upper()}: {r.loss} {r.backend}/{r.device}/{r.dtype} {r.check}: {r.detail}")
    devices = {b: info["devices"] for b, info in report.environment["backends"].items()}
    s = report.summary
    print(f"devices: {devices}")
    print(f"{s['passed']} passed, {s['failed']} failed, {s['skipped']} skipped, {s['xfail']} known gaps")
    if args.json:
        Path(args.json).write_text(json.dumps(report.to_json(), indent=2) + "\n", encoding="utf-8")
    if args.markdown:
        Path(args.markdown).write_text(format_markdown(report), encoding="utf-8")
    return 0 if report.ok else 1


def list_main(args) -> int:
    from . import registry

    for name in registry.available(args.family):
        spec = registry.spec(name)
        print(f"{name:<20} {spec.family:<16} {spec.summary}")
    return 0


def bench_main(args, rest) -> int:
    from . import bench

    return bench.main(rest)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mithril-losses", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    conf = sub.add_parser("conformance", help="check every loss's gradient on every installed backend")
    conf.add_argument("--backends", type=_csv, help="comma-separated backends (default: all installed)")
    conf.add_argument("--losses", type=_csv, help="comma-separated loss names (default: all)")
    conf.add_argument("--devices", type=_csv, help="comma-separated devices, e.g. cpu,cuda (default: all seen)")
    conf.add_argument("--dtypes", type=_csv, help="comma-separated dtypes (default: float32,float64)")
    conf.add_argument("--full", action="store_true", help="more shapes per loss (the exhaustive sweep)")
    conf.add_argument("--seed", type=int, default=0)
    conf.add_argument("--json", metavar="PATH", help="write the JSON report here")
    conf.add_argument("--markdown", metavar="PATH", help="write the Markdown report here")
    conf.add_argument("--quiet", action="store_true", help="no progress bar")
    lst = sub.add_parser("list", help="list the registered losses")
    lst.add_argument("--family")
    sub.add_parser("bench", help="time value_and_grad and its peak memory against each framework's own loss, on "
                                 "every device found (see bench --help)", add_help=False)
    return parser


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] == "bench":
        return bench_main(None, argv[1:])
    args = build_parser().parse_args(argv)
    if args.command == "conformance":
        return conformance_main(args)
    return list_main(args)


if __name__ == "__main__":
    sys.exit(main())
