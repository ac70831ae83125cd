"""``python -m labrun``: the same as the ``labrun`` console script."""

import sys

from labrun.cli import main

sys.exit(main())
