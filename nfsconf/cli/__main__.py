"""`python -m nfsconf.cli`: the command line, as the `nfsconf` script runs it."""

import sys

from nfsconf.cli import main

sys.exit(main())
