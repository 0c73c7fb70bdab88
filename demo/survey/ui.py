"""The "Turing test" tab: a two-alternative forced choice between a real photo and a colorized one.

After Zhang, Isola & Efros (2016), section 3.1: practice trials with feedback,
then test trials; each pair is shown side by side (the real one on a random, balanced
side) for a limited time, and the participant clicks the photo they believe is real
(or the one with fake colours). Images are sent inline (data URIs), so they are in
the page as soon as the trial is; the time limit is a CSS animation that starts
when the pair enters the page.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import logging
from pathlib import Path

import gradio as gr

from typing import TYPE_CHECKING

from demo.survey.session import AnswerTooSoon, SessionState
from demo.survey.storage import UNREACHABLE, StoreUnavailable

if TYPE_CHECKING:
    from demo import SurveySetup

__all__ = ["build_survey_tab", "pair_html", "intro_text"]

log = logging.getLogger(__name__)


@functools.lru_cache(maxsize=512)
def _data_uri(path: str, mtime: float) -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return f"data:image/png;base64,{data}"


def data_uri(path: Path) -> str:
    """The image file as a data: URI (cached; prepared images never change in place)."""
    return _data_uri(str(path), path.stat().st_mtime)


def pair_html(state: SessionState, display_seconds: float) -> str:
    """The current pair as HTML: two images, hidden after ``display_seconds`` (0: never)."""
    trial = state.current
    if trial is None:
        return ""
    style = ""
    if display_seconds > 0:
        # Alternate two identical animations so that a re-used <img> restarts its clock.
        name = "survey-hide-a" if state.index % 2 == 0 else "survey-hide-b"
        style = f' style="animation: {name} 0s step-end {display_seconds:g}s forwards"'
    figures = "".join(
        f'<figure class="survey-side"><div class="survey-frame"><img id="survey-{side}" alt="{side} photo"'
        f' data-trial="{state.index}" src="{data_uri(path)}"{style}></div>'
        f"<figcaption>{side.capitalize()}</figcaption></figure>"
        for side, path in (("left", trial.left), ("right", trial.right))
    )
    css = (
        "<style>@keyframes survey-hide-a{to{visibility:hidden}}@keyframes survey-hide-b{to{visibility:hidden}}"
        # always side by side, even on a phone, so "Left" and "Right" are where they say
        ".survey-pair{display:flex;gap:12px;justify-content:center;flex-wrap:nowrap}"
        ".survey-side{margin:0;text-align:center;flex:0 1 auto;min-width:0}"
        ".survey-frame{min-width:64px;min-height:64px;background:#808080;display:flex;"
        "align-items:center;justify-content:center}"
        ".survey-frame img{display:block;max-width:100%}</style>"
    )
    return f'{css}<div class="survey-pair" data-trial="{state.index}">{figures}</div>'


def _status(state: SessionState) -> str:
    """"Practice pair i of P" / "Test pair k of T": the counts the intro and the end use."""
    trial = state.current
    if trial is None:
        return ""
    if trial.kind == "practice":
        return f"**Practice pair {state.index + 1} of {state.n_practice}** (you will be told if you were right)"
    return f"**Test pair {state.index - state.n_practice + 1} of {state.n_test}**"


def intro_text(n_practice: int, n_test: int, prompt: str, shown: str) -> str:
    """What the participant is told before Start: exactly the pairs the session holds."""
    if n_practice:
        plan = (f"You will see {n_practice + n_test} pairs: first {n_practice} practice "
                f"{'pair' if n_practice == 1 else 'pairs'}, each followed by whether you were right, "
                f"then {n_test} test pairs without feedback.")
    else:
        plan = f"You will see {n_test} test pairs, without feedback (this survey has no practice pairs)."
    return (
        f"## Real or colorized?\nYou will see pairs of photos. One is a real colour photo; the other is the "
        f"same photo colorized by a computer from its black-and-white version. {prompt} {shown}\n\n"
        f"{plan} Your answers are stored anonymously, with a random session number."
    )


def _prompt(question: str) -> str:
    return ("Which photo is the **real** one?" if question == "real"
            else "Which photo has **fake** colours, made by a computer program?")  # fmt: skip


def survey_intro(survey: SurveySetup) -> str:
    """What the tab says before Start: the plan once the survey is prepared, else that it is
    being prepared (or why it could not be)."""
    if survey.error:
        return f"## Real or colorized?\nThe Turing test is not available: {survey.error}"
    runner = survey.runner
    if runner is None:
        return ("## Real or colorized?\n**Preparing the Turing test's photos** (the model colorizes each "
                "once; a minute at most on the first start). This page opens the test by itself when they are ready.")
    cfg = runner.config
    shown = (f"Each pair is shown for {cfg.display_seconds:g} s; answer even if it has gone."
             if cfg.display_seconds > 0 else "Take the time you need.")  # fmt: skip
    return intro_text(runner.n_practice, runner.n_test, _prompt(cfg.question), shown)


def build_survey_tab(survey: SurveySetup, concurrency_limit: int = 16) -> None:
    """Lay out the Turing-test tab of ``survey`` inside the current Blocks/Tab context, with
    its API endpoints ``/survey_start`` and ``/vote`` (the UI's own events are private).
    Until the survey is prepared the tab says so, and opens the test when it is."""
    state = gr.State(None, time_to_live=6 * 3600)
    # the participant's session id, kept by the browser: a reload or a server restart resumes it
    browser = gr.BrowserState(None, storage_key="colorizer-turing-test", secret=_secret(survey))
    shown_index = gr.Number(None, visible=False, elem_id="survey-index")  # the trial on the participant's screen
    with gr.Column(visible=True) as intro:
        intro_md = gr.Markdown(survey_intro(survey), elem_id="survey-intro")
        start = gr.Button("Start", variant="primary", elem_id="survey-start", visible=survey.runner is not None)
    restart = gr.Button("Start over (a new session)", visible=False, elem_id="survey-restart")
    with gr.Column(visible=False) as trial_col:
        status = gr.Markdown(elem_id="survey-status")
        pair = gr.HTML("", js_on_load=None, elem_id="survey-pair")
        question = gr.Markdown(_prompt(survey.runner.config.question) if survey.runner else "")
        with gr.Row(elem_id="survey-buttons"):
            left = gr.Button("Left", variant="primary", elem_id="survey-left-button")
            right = gr.Button("Right", variant="primary", elem_id="survey-right-button")
    feedback = gr.Markdown(elem_id="survey-feedback")
    proceed = gr.Button("Next pair", variant="primary", visible=False, elem_id="survey-continue")
    preparing = gr.Timer(2.0, active=not survey.ready)  # polls only while the photos are being prepared

    def on_load():
        runner = survey.runner
        return (survey_intro(survey), gr.update(visible=runner is not None),
                _prompt(runner.config.question) if runner else "", gr.Timer(active=not survey.ready))

    def show(s: SessionState, message: str = ""):
        """The next pair (its display clock starts now), or the end."""
        runner = survey.runner
        if s.done:
            summary = ""
            if s.test_answered:
                summary = f" You answered {s.test_right} of the {s.test_answered} test pairs right."
            return (
                s, gr.update(visible=False), gr.update(visible=False), "", "",
                f"**Thank you — all done.**{summary}", gr.update(visible=False), None, s.session_id,
                gr.update(visible=True),
            )  # fmt: skip
        runner.shown(s)
        return (s, gr.update(visible=False), gr.update(visible=True), _status(s),
                pair_html(s, runner.config.display_seconds), message, gr.update(visible=False), s.index, s.session_id,
                gr.update(visible=False))  # fmt: skip

    def unreachable(what: str):
        return (*[gr.skip()] * 5, f"**{UNREACHABLE}** {what}", *[gr.skip()] * 4)

    def on_start(kept: str | None):
        """A new participant, or the one this browser already started (after a reload or a restart)."""
        runner = survey.runner
        if runner is None:
            return (*[gr.skip()] * 5, survey_intro(survey), *[gr.skip()] * 4)
        try:
            s = runner.resume(kept)
        except StoreUnavailable as e:  # a returning participant's place is in the database: wait for it
            log.warning("session not resumed, the participant was asked to try again: %s", e)
            return unreachable("Please click Start again in a moment; your answers so far are kept.")
        return show(s if s is not None else runner.start())

    def on_restart():
        return show(survey.runner.start(retake=True))

    def on_answer(s: SessionState | None, index, kept: str | None, side: str):
        if s is None:  # the server restarted (or dropped the session): pick it up from the browser's id
            try:
                s = survey.runner.resume(kept) if survey.runner else None
            except StoreUnavailable as e:
                log.warning("session not resumed, the participant was asked to answer again: %s", e)
                return unreachable("Your answer was not saved; please click it again in a moment.")
            if s is None:
                return (*[gr.skip()] * 5, "**This page's session has ended.** Please reload the page and click Start.",
                        *[gr.skip()] * 4)  # fmt: skip
            return show(s, "**The server was restarted**: your answers so far are kept. Here is your pair again; "
                           "please answer it.")  # fmt: skip
        if s.done:
            return gr.skip()
        try:
            a = survey.runner.answer(s, side, index=None if index is None else int(index))
        except StoreUnavailable as e:  # the trial stays; the same click works once the database is back
            log.warning("vote not stored, the participant was asked to answer again: %s", e)
            message = ("**Your answer was not saved**: the survey's database is not reachable right now. "
                       "Please click your answer again in a moment.")
            return (s, *[gr.skip()] * 4, message, *[gr.skip()] * 4)
        except AnswerTooSoon:  # the trial stays, and the participant knows their click did not count
            message = "**That click came too soon** after the last one to count. Please look at the pair and click again."
            return (s, *[gr.skip()] * 4, message, *[gr.skip()] * 4)
        if a is None:  # a repeated click: the screen already moved on
            return gr.skip()
        if a.trial.kind != "practice" or not a.stored:
            return show(s)
        # practice feedback gets its own moment: the next pair waits for "Next pair"
        message = f"{'Correct' if a.correct else 'Not quite'}: the real photo was on the {a.trial.real_side}."
        if s.current is not None and s.current.kind != "practice":
            message += " Practice is over; the test pairs come next (no more feedback)."
        label = "Start the test" if s.current is not None and s.current.kind != "practice" else "Next pair"
        return (s, gr.update(visible=False), gr.update(visible=False), "", "", message,
                gr.update(visible=True, value=label), None, s.session_id, gr.update(visible=False))

    def on_continue(s: SessionState | None, kept: str | None):
        return on_answer(None, None, kept, "") if s is None else show(s)

    outputs = [state, intro, trial_col, status, pair, feedback, proceed, shown_index, browser, restart]
    common = dict(concurrency_limit=concurrency_limit, concurrency_id="survey", show_progress="hidden",
                  api_visibility="private")  # fmt: skip
    gr.on([gr.context.get_blocks_context().root_block.load, preparing.tick], on_load, None,
          [intro_md, start, question, preparing], **common)
    start.click(on_start, [browser], outputs, **common)
    restart.click(on_restart, None, outputs, **common)
    left.click(lambda s, i, k: on_answer(s, i, k, "left"), [state, shown_index, browser], outputs, **common)
    right.click(lambda s, i, k: on_answer(s, i, k, "right"), [state, shown_index, browser], outputs, **common)
    proceed.click(on_continue, [state, browser], outputs, **common)
    _api(survey, state, concurrency_limit)


def _secret(survey: SurveySetup) -> str:
    """The key of the browser's stored session id: the same for every start of a survey folder
    (``SurveyRunner.resume`` refuses an id whose votes are not this survey's)."""
    return hashlib.sha256(b"colorizer-survey|" + str(Path(survey.folder).resolve()).encode()).hexdigest()


def _api(survey: SurveySetup, state: gr.State, concurrency_limit: int) -> None:
    """``/survey_start`` (a session, or the one of ``session_id``) and ``/vote`` (``left`` or
    ``right`` for the pair shown), for a program taking the test: each returns the next pair's
    two images and what a participant is told (JSON), errors as one line."""
    with gr.Column(visible=False):
        session_id = gr.Textbox(None, label="session_id (to resume; empty: a new session)")
        side = gr.Textbox(label="answer: left or right")  # checked by vote, in one line
        images = [gr.Image(type="filepath", format="png", label=f"{s} photo") for s in ("left", "right")]
        info = gr.JSON(label="session")
        triggers = [gr.Button(f"API {name}", visible=False) for name in ("survey_start", "vote")]

    def runner():
        if survey.runner is None:
            raise gr.Error(survey.error or "The Turing test is still being prepared; try again in a minute.",
                           print_exception=False)
        return survey.runner

    def reply(s: SessionState, **extra):
        trial = s.current
        about = {"session_id": s.session_id, "done": s.done, **extra}
        if trial is None:
            return None, None, {**about, "test_right": s.test_right, "test_answered": s.test_answered}
        runner().shown(s)
        about.update(pair=s.index + 1, pairs=len(s.trials), kind="practice" if trial.kind == "practice" else "test",
                     question=runner().config.question)
        return str(trial.left), str(trial.right), about

    def survey_start(session_id: str | None):
        """Start a session (or resume ``session_id``): the first pair to answer."""
        try:
            s = runner().resume(session_id) if session_id else None
        except StoreUnavailable:
            raise gr.Error(f"{UNREACHABLE} Try again in a moment.", print_exception=False) from None
        if session_id and s is None:
            raise gr.Error(f"no session {session_id!r} in this survey", print_exception=False)
        s = s or runner().start()
        return s, *reply(s)

    def vote(s: SessionState | None, answer: str | None):
        """Answer the pair shown with ``left`` or ``right``: the next pair, and for a practice
        pair whether the answer was right."""
        if s is None:
            raise gr.Error("No survey session: call /survey_start first.", print_exception=False)
        if answer not in ("left", "right"):
            raise gr.Error(f"side must be 'left' or 'right', got {answer!r}", print_exception=False)
        if s.done:
            raise gr.Error("This session is over: every pair is answered.", print_exception=False)
        try:
            a = runner().answer(s, answer)
        except StoreUnavailable:
            raise gr.Error(f"{UNREACHABLE} The vote was not saved; send it again in a moment.",
                           print_exception=False) from None
        except AnswerTooSoon:
            raise gr.Error("That vote came too soon after the last one to count; send it again.",
                           print_exception=False) from None
        extra = {"stored": a.stored}
        if a.trial.kind == "practice":
            extra["correct"] = a.correct
        return s, *reply(s, **extra)

    common = dict(concurrency_limit=concurrency_limit, concurrency_id="survey", show_progress="hidden")
    triggers[0].click(survey_start, [session_id], [state, *images, info], api_name="survey_start", **common)
    triggers[1].click(vote, [state, side], [state, *images, info], api_name="vote", **common)
