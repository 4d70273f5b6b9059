"""Command line of the simulated server: ``serve`` and ``calibrate``."""

from __future__ import annotations

import sys

from etalon.sim.cli import main

if __name__ == "__main__":
    sys.exit(main())
