"""``python -m bot`` is ``qlp-bot``."""

import sys

from bot.cli import main

sys.exit(main())
