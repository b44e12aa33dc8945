"""`python -m volmargin.cli`: the `volmargin` command."""

import sys

from volmargin.cli import main

sys.exit(main())
