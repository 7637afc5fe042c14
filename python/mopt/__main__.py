"""`python -m mopt ...` is the `mopt` command."""

import sys

from mopt.cli import main

sys.exit(main())
