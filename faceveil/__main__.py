"""``python -m faceveil``."""

import sys

from faceveil.cli import main

sys.exit(main())
