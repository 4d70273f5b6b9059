"""Command-line entry point: `python -m etalon.compare RUN_A RUN_B [RUN_C ...] [--gate FILE]`."""

from __future__ import annotations

import sys


def main() -> int:
    from etalon.runner.compare import main as compare_main

    return compare_main()


if __name__ == "__main__":
    sys.exit(main())
