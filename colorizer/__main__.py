"""``python -m colorizer PHOTO... -o OUTDIR``: see ``colorizer.cli``."""

import sys

from colorizer.cli import main

sys.exit(main())
