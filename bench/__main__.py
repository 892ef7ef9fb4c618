"""``python -m bench`` is the ``bench`` console script."""

from __future__ import annotations

import sys

from bench.cli.main import main

sys.exit(main())
