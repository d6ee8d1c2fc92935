"""The command line (DESIGN.md §9). Thin: parses arguments and calls into the package."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `events-worker` console script."""
    del argv
    print("events-worker: not implemented yet", file=sys.stderr)
    return 2
