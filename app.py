"""Colorizer web demo: `python app.py` (the Hugging Face Spaces entry point).

Options: `python app.py --help`. The model is loaded once per process; every
request shares it.
"""

from __future__ import annotations

import sys

from colorizer import load_model
from demo import build_app, launch_kwargs, parser, setup_survey


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    try:
        model = load_model(args.model)
        survey = setup_survey(args, model)
    except (OSError, ValueError) as e:
        sys.exit(f"app.py: error: {str(e).splitlines()[0]}")
    app = build_app(model, survey, args.max_pixels, args.concurrency, args.queue_size)
    app.launch(**launch_kwargs(args))


if __name__ == "__main__":
    main()
