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

from demo.survey.session import AnswerTooSoon, SessionState, SurveyRunner
from demo.survey.storage import StoreUnavailable

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


def build_survey_tab(runner: SurveyRunner, concurrency_limit: int = 16) -> None:
    """Lay out the Turing-test tab inside the current Blocks/Tab context."""
    cfg = runner.config
    ask = "real" if cfg.question == "real" else "fake"
    prompt = (
        "Which photo is the **real** one?"
        if ask == "real"
        else "Which photo has **fake** colours, made by a computer program?"
    )
    shown = (
        f"Each pair is shown for {cfg.display_seconds:g} s; answer even if it has gone."
        if cfg.display_seconds > 0
        else "Take the time you need."
    )
    state = gr.State(None, time_to_live=6 * 3600)
    # the participant's session id, kept by the browser: a reload or a server restart resumes it
    manifest = Path(runner.survey.folder) / "survey.json"
    secret = hashlib.sha256(b"colorizer-survey|" + (manifest.read_bytes() if manifest.is_file() else b"")).hexdigest()
    browser = gr.BrowserState(None, storage_key="colorizer-turing-test", secret=secret)
    shown_index = gr.Number(None, visible=False, elem_id="survey-index")  # the trial on the participant's screen
    with gr.Column(visible=True) as intro:
        gr.Markdown(intro_text(runner.n_practice, runner.n_test, prompt, shown), elem_id="survey-intro")
        start = gr.Button("Start", variant="primary", elem_id="survey-start")
    restart = gr.Button("Start over (a new session)", visible=False, elem_id="survey-restart")
    with gr.Column(visible=False) as trial_col:
        status = gr.Markdown(elem_id="survey-status")
        pair = gr.HTML("", js_on_load=None, elem_id="survey-pair")
        gr.Markdown(prompt)
        with gr.Row(elem_id="survey-buttons"):
            left = gr.Button("Left", variant="primary", elem_id="survey-left-button")
            right = gr.Button("Right", variant="primary", elem_id="survey-right-button")
    feedback = gr.Markdown(elem_id="survey-feedback")
    proceed = gr.Button("Next pair", variant="primary", visible=False, elem_id="survey-continue")

    def show(s: SessionState):
        """The next pair (its display clock starts now), or the end."""
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
        return (s, gr.update(visible=False), gr.update(visible=True), _status(s), pair_html(s, cfg.display_seconds),
                "", gr.update(visible=False), s.index, s.session_id, gr.update(visible=False))

    def on_start(kept: str | None):
        """A new participant, or the one this browser already started (after a reload or a restart)."""
        s = runner.resume(kept)
        return show(s if s is not None else runner.start())

    def on_restart():
        return show(runner.start(retake=True))

    def on_answer(s: SessionState | None, index, side: str):
        if s is None or s.done:
            return gr.skip()
        try:
            a = runner.answer(s, side, index=None if index is None else int(index))
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

    def on_continue(s: SessionState | None):
        return gr.skip() if s is None else show(s)

    outputs = [state, intro, trial_col, status, pair, feedback, proceed, shown_index, browser, restart]
    common = dict(concurrency_limit=concurrency_limit, concurrency_id="survey", show_progress="hidden")
    start.click(on_start, [browser], outputs, **common)
    restart.click(on_restart, None, outputs, **common)
    left.click(lambda s, i: on_answer(s, i, "left"), [state, shown_index], outputs, **common)
    right.click(lambda s, i: on_answer(s, i, "right"), [state, shown_index], outputs, **common)
    proceed.click(on_continue, [state], outputs, **common)
