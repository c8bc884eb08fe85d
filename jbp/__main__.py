"""``python -m jbp``: the command line (see :mod:`jbp.cli`)."""

import sys

from jbp.cli import main

sys.exit(main())
