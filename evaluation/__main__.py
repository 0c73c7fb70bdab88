"""``python -m evaluation``: the evaluation tool (see ``evaluation.evaluate``)."""

import sys

from evaluation.evaluate import main

if __name__ == "__main__":
    sys.exit(main())
