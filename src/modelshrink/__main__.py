"""`python -m modelshrink`: the same command line as the `modelshrink` script."""

import sys

from modelshrink.cli import main

if __name__ == "__main__":
    sys.exit(main())
