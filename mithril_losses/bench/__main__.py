"""``python -m mithril_losses.bench``: the same as ``mithril-losses bench``."""

import sys

from . import main

sys.exit(main())
