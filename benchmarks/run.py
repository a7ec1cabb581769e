"""Run the benchmarks: ``python benchmarks/run.py [--quick] [--json PATH] [--update-docs]``.

The same as ``mithril-losses bench``; see ``mithril_losses/bench/`` and docs/performance.md.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mithril_losses.bench import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
