"""``python -m bench``: the workload driver (same as ``actorkv bench``)."""

import sys

from bench.driver.cli import main

sys.exit(main())
