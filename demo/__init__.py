"""The colorizer web demo: a Colorize tab, a colorization Turing test (on the shipped
photos unless told otherwise) and its results.

``app.py`` parses the options (``parser()``), loads the model once, calls
``build_app`` and launches it. Every option has an environment variable, so a
Hugging Face Space can be configured from its settings (variables and secrets).
"""

from __future__ import annotations

import argparse
import logging
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:  # gradio and torch load only when the app is built: `demo.survey.stats` stays light
    import gradio as gr

    from colorizer import Colorizer
    from demo.colorize_tab import AnalysisCache
    from demo.survey.session import SurveyRunner
    from demo.survey.storage import VoteStore

log = logging.getLogger(__name__)
__all__ = ["parser", "build_app", "SurveySetup", "setup_survey", "EXAMPLES", "SURVEY_PHOTOS", "cache_folder",
           "launch_kwargs"]

EXAMPLES = sorted(str(p) for p in (Path(__file__).parent / "examples").glob("*.jpg"))
SURVEY_PHOTOS = Path(__file__).parent / "survey_photos"  # the Turing test's own photos (credits in its README)
TITLE = "Colorizer: automatic colorization"
# Gradio keeps each session's component state (a copy of the page's settings, the survey's place):
# the most recent this many (a participant whose place was dropped resumes from their browser's id)
STATE_SESSIONS = 2000


def cache_folder() -> Path:
    """Where the app keeps what it makes: the library's ``colorizer.model.cache_folder()``
    (``$COLORIZER_CACHE``, else ``$XDG_CACHE_HOME/colorizer``, else ``~/.cache/colorizer``),
    imported when asked for so that ``demo`` stays light."""
    from colorizer.hub import cache_folder as library_cache_folder

    return library_cache_folder()


def _env(name: str, default=None):
    value = os.environ.get(name)
    return default if value in (None, "") else value


def parser() -> argparse.ArgumentParser:
    """Options of ``python app.py`` (each defaults to its environment variable)."""
    p = argparse.ArgumentParser(
        prog="app.py",
        description="Colorizer web demo with an optional colorization Turing test.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--model", default=_env("COLORIZER_MODEL", "default"),
                   help="shipped model name, model folder or Hub id [COLORIZER_MODEL]")
    p.add_argument("--host", default=_env("GRADIO_SERVER_NAME"), help="address to listen on (0.0.0.0: all)")
    p.add_argument("--port", type=int, default=int(_env("GRADIO_SERVER_PORT", 7860)), help="port")
    p.add_argument("--max-pixels", type=int, default=int(_env("COLORIZER_MAX_PIXELS", 50_000_000)),
                   help="uploads with more pixels are refused")
    p.add_argument("--max-file-size", default=_env("COLORIZER_MAX_FILE_SIZE", "30mb"), help="largest upload")
    p.add_argument("--concurrency", type=int, default=int(_env("COLORIZER_CONCURRENCY", 2)),
                   help="photos colorized at once (bounds memory); others wait in the queue")
    p.add_argument("--queue-size", type=int, default=int(_env("COLORIZER_QUEUE_SIZE", 64)),
                   help="requests waiting at most; more are turned away")
    s = p.add_argument_group(
        "Turing test (on by default: the shipped photos of demo/survey_photos, prepared once into "
        "the cache folder $COLORIZER_CACHE or ~/.cache/colorizer)")
    s.add_argument("--survey", type=Path, default=_env("COLORIZER_SURVEY"),
                   help="survey folder: prepared (python -m demo.survey prepare), or where --survey-photos "
                        "are prepared; default: CACHE/survey [COLORIZER_SURVEY]")
    s.add_argument("--survey-photos", type=Path, default=_env("COLORIZER_SURVEY_PHOTOS"),
                   help="folder of real colour photos: prepare the survey into --survey at start-up "
                        "(cached: only missing images are made); default: the shipped photos unless "
                        "--survey is given [COLORIZER_SURVEY_PHOTOS]")
    s.add_argument("--no-survey", action="store_true", default=_env("COLORIZER_NO_SURVEY") not in (None, "0"),
                   help="only the Colorize tab [COLORIZER_NO_SURVEY=1]")
    s.add_argument("--survey-models", nargs="+", default=None,
                   help="models to compare (NAME, PATH or LABEL=SOURCE); default: --model")
    s.add_argument("--survey-temperatures", nargs="+", type=float, default=None,
                   help="temperatures to compare; default: the model's")
    s.add_argument("--db", default=_env("COLORIZER_DB_URL"),
                   help="vote database URL, e.g. postgresql+psycopg://user:pass@host/db; "
                        "default: sqlite in the survey folder [COLORIZER_DB_URL]")
    s.add_argument("--trials", type=int, default=_env("COLORIZER_TRIALS") and int(_env("COLORIZER_TRIALS")),
                   help="test trials per participant; default: as many as the photos allow after the practice "
                        "photos, at most 40 [COLORIZER_TRIALS]")
    s.add_argument("--practice", type=int, default=int(_env("COLORIZER_PRACTICE", 5)), help="practice trials")
    s.add_argument("--attention", type=int, default=int(_env("COLORIZER_ATTENTION", 2)), help="attention checks")
    s.add_argument("--question", choices=["real", "fake"], default=_env("COLORIZER_QUESTION", "real"),
                   help="ask which photo is real, or which has fake colours")
    s.add_argument("--display-seconds", type=float, default=float(_env("COLORIZER_DISPLAY_SECONDS", 1.0)),
                   help="how long each pair is shown (0: until answered)")
    s.add_argument("--results-key", default=_env("COLORIZER_RESULTS_KEY"),
                   help="if set, the Results tab asks for this key [COLORIZER_RESULTS_KEY]")
    return p  # fmt: skip


class SurveySetup:
    """A Turing test being prepared in a background thread, then ready: its vote store at
    once, its runner (survey + store + session settings) once ``ready``.

    Args:
        folder: the survey folder.
        store: the vote store (open: an unreachable database fails at start).
        make_runner: prepares the survey and returns its runner (run in the thread).
        results_key: the Results tab's key, or None.
    """

    def __init__(self, folder: Path, store: VoteStore, make_runner: Callable[[], SurveyRunner],
                 results_key: str | None = None):  # fmt: skip
        self.folder, self.store, self.results_key = Path(folder), store, results_key
        self.error: str | None = None
        self._runner: SurveyRunner | None = None
        self._done = threading.Event()
        threading.Thread(target=self._prepare, args=(make_runner,), name="survey-preparation", daemon=True).start()

    def _prepare(self, make_runner) -> None:
        from colorizer.errors import error_line

        try:
            self._runner = make_runner()
        except Exception as e:  # bad photos, a model that cannot load, a full disk: one line, the app goes on
            self.error = error_line("app.py", e, "Turing test")
            log.error("%s", self.error)
        finally:
            self._done.set()

    @property
    def ready(self) -> bool:
        """Whether preparation has ended (``runner`` set, or ``error``)."""
        return self._done.is_set()

    @property
    def runner(self) -> SurveyRunner | None:
        """The runner once prepared; None while preparing or after a failure."""
        return self._runner

    def wait(self, timeout: float | None = None) -> SurveyRunner:
        """The runner, once prepared.

        Raises:
            ValueError: preparation failed (its one line); TimeoutError: not done in ``timeout`` s.
        """
        if not self._done.wait(timeout):
            raise TimeoutError(f"the Turing test is still being prepared after {timeout} s")
        if self._runner is None:
            raise ValueError(self.error)
        return self._runner


def setup_survey(args: argparse.Namespace, model: Colorizer) -> SurveySetup | None:
    """The survey the options ask for, or None with ``--no-survey``. The vote store opens
    at once; the photos are prepared (``--survey-photos``) and the survey loaded in a
    background thread, so the app answers while they are (``SurveySetup.ready``). With
    neither ``--survey`` nor ``--survey-photos``, the shipped photos (``SURVEY_PHOTOS``) are
    prepared with ``--model`` into ``cache_folder() / "survey"``: once, then only when the
    model's weights change (``prepare_survey`` keys its images by the weights' digest), and
    the votes go to SQLite there.

    Raises:
        ValueError: a bad database URL, or an unreachable database (one-line message).
        OSError: an unwritable folder.
    """
    from demo.survey.prepare import load_survey, prepare_survey
    from demo.survey.session import SurveyConfig, SurveyRunner
    from demo.survey.storage import VoteStore, sqlite_url

    if args.no_survey:
        return None
    photos = args.survey_photos
    if args.survey is None and photos is None:
        photos = SURVEY_PHOTOS
    folder = Path(args.survey or cache_folder() / "survey")
    folder.mkdir(parents=True, exist_ok=True)
    store = VoteStore(args.db or sqlite_url(folder / "votes.sqlite"))  # first: an unreachable database fails fast
    config = SurveyConfig(args.trials, args.practice, args.attention, args.question, args.display_seconds)

    def make_runner() -> SurveyRunner:
        if photos is not None:
            temps = args.survey_temperatures or [model.temperature]
            prepare_survey(photos, folder, args.survey_models or [args.model], temps, progress=False)
        return SurveyRunner(load_survey(folder), store, config)

    return SurveySetup(folder, store, make_runner, args.results_key)


def build_app(
    model: Colorizer,
    survey: SurveySetup | None = None,
    max_pixels: int | None = 50_000_000,
    concurrency: int = 2,
    queue_size: int | None = 64,
    examples: list[str] | None = None,
    cache: AnalysisCache | None = None,
) -> gr.Blocks:
    """The whole demo as ``gr.Blocks``, its queue set up; call ``.launch(**launch_kwargs(...))``.

    Args:
        model: the loaded model, shared read-only by all users.
        survey: a Turing test to add (with its Results tab), or None.
        max_pixels: uploads with more pixels get a one-line error.
        concurrency: colorizations at once (bounds memory); queue_size: waiting requests at most.
        cache: where the Colorize tab keeps the sessions' analyses (default: ``AnalysisCache()``,
            bounded by count and bytes).
    """
    import gradio as gr

    from demo.colorize_tab import build_colorize_tab

    with gr.Blocks(title=TITLE, analytics_enabled=False, delete_cache=(3600, 3600)) as app:
        gr.Markdown(
            f"# {TITLE}\nAfter Zhang, Isola & Efros, "
            "[*Colorful Image Colorization*](https://arxiv.org/abs/1603.08511) (ECCV 2016)."
        )
        with gr.Tabs():
            with gr.Tab("Colorize", id="colorize"):
                analyses = build_colorize_tab(model, EXAMPLES if examples is None else examples, max_pixels,
                                              concurrency, cache)  # fmt: skip
            if survey is not None:
                from demo.results_tab import build_results_tab
                from demo.survey.ui import build_survey_tab

                with gr.Tab("Turing test", id="survey"):
                    build_survey_tab(survey)
                with gr.Tab("Results", id="results"):
                    build_results_tab(survey)
        app.unload(analyses.forget)  # a closed page's analysis goes at once
    app.queue(max_size=queue_size, default_concurrency_limit=concurrency)
    return app


# On a narrow screen (a phone) the columns stack: the result comes first, above the controls,
# so an upload visibly does something without scrolling.
# The survey's answer buttons stay side by side, under the photos they name.
CSS = ("@media (max-width: 720px) { #colorize-row { flex-direction: column; } #result-column { order: -1; } "
       "#survey-buttons { flex-wrap: nowrap; } #survey-buttons > * { min-width: 0; } }")


def launch_kwargs(args: argparse.Namespace) -> dict:
    """Arguments for ``Blocks.launch`` from the options."""
    kwargs = dict(server_port=args.port, max_file_size=args.max_file_size, ssr_mode=False, show_error=False, css=CSS,
                  state_session_capacity=STATE_SESSIONS)  # fmt: skip
    if args.host:
        kwargs["server_name"] = args.host
    return kwargs
