"""`samplegen` and `python -m samplegen.cli` (the README's torchrun line); the command lives in samplegen.app.cli."""

import sys

from samplegen.app.cli import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
