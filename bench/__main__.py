"""``python -m bench``: the one entry point of the benchmark suite."""

import sys

from bench.cli import main

sys.exit(main())
