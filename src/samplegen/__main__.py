"""`python -m samplegen`, the same command as `samplegen` (see samplegen.app.cli)."""

import sys

from samplegen.app.cli import main

if __name__ == "__main__":
    sys.exit(main())
