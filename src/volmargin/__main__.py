"""`python -m volmargin ...`: the same command line as the `volmargin` script."""

import sys

from volmargin.cli import main

sys.exit(main())
