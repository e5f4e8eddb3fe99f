"""``python -m ncollapse`` is the ``ncollapse`` command."""

import sys

from .cli import main

sys.exit(main())
