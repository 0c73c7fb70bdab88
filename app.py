"""Colorizer web demo: `python app.py` (the Hugging Face Spaces entry point).

Options: `python app.py --help`. The model is loaded once per process; every
request shares it.
"""

from __future__ import annotations

from colorizer import load_model
from colorizer.errors import fail
from demo import build_app, launch_kwargs, parser, setup_survey


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    try:
        model = load_model(args.model)
    except Exception as e:  # no such model, weights that do not fit its config, Hub unreachable
        fail("app.py", e, f"--model {args.model}")
    try:
        survey = setup_survey(args, model)
        app = build_app(model, survey, args.max_pixels, args.concurrency, args.queue_size)
    except Exception as e:  # a bad or unreachable database (the photos are prepared in the background)
        fail("app.py", e)
    app.launch(**launch_kwargs(args))


if __name__ == "__main__":
    main()
