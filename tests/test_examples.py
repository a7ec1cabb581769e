"""Every example runs to the end (exit 0) and prints its key line; examples of a missing framework are skipped.

Each script in ``examples/`` says how it is checked, in header comments:

    # example-needs: torch optax        modules it imports (skipped, with their names, where one is missing)
    # example-prints: some line         a line it must print
    # example-run: --compile            extra arguments of a further run (one run with none is always made)
"""

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def _header(path, key):
    prefix = f"# example-{key}:"
    return [line[len(prefix):].strip() for line in path.read_text().splitlines() if line.startswith(prefix)]


def _cases():
    cases = []
    for path in sorted(EXAMPLES.glob("*.py")):
        needs = " ".join(_header(path, "needs")).split()
        prints = _header(path, "prints")
        for args in ["", *_header(path, "run")]:
            cases.append(pytest.param(path, args.split(), needs, prints, id=f"{path.name} {args}".strip()))
    return cases


@pytest.mark.parametrize(("path", "args", "needs", "prints"), _cases())
def test_example_runs(path, args, needs, prints):
    missing = [m for m in needs if importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip(f"{path.name} needs {', '.join(missing)}")
    proc = subprocess.run([sys.executable, str(path), *args], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"{path.name} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
    for line in prints:
        assert line in proc.stdout, proc.stdout


def test_every_example_declares_what_it_prints():
    for path in EXAMPLES.glob("*.py"):
        assert _header(path, "prints"), f"{path.name} has no '# example-prints:' line"
