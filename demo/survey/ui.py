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
from pathlib import Path

import gradio as gr

from demo.survey.session import SessionState, SurveyRunner

__all__ = ["build_survey_tab", "pair_html"]


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
        ".survey-pair{display:flex;gap:24px;justify-content:center;flex-wrap:wrap}"
        ".survey-side{margin:0;text-align:center}"
        ".survey-frame{min-width:128px;min-height:128px;background:#808080;display:flex;"
        "align-items:center;justify-content:center}"
        ".survey-frame img{display:block;max-width:100%}</style>"
    )
    return f'{css}<div class="survey-pair" data-trial="{state.index}">{figures}</div>'


def _status(state: SessionState) -> str:
    trial = state.current
    n_practice = state.n_practice
    if trial is None:
        return ""
    if trial.kind == "practice":
        return f"**Practice {state.index + 1} of {n_practice}** (you will be told if you were right)"
    return f"**Trial {state.index - n_practice + 1} of {len(state.trials) - n_practice}**"


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
    with gr.Column(visible=True) as intro:
        gr.Markdown(
            f"## Real or colorized?\nYou will see pairs of photos. One is a real colour photo; the other is the "
            f"same photo colorized by a computer from its black-and-white version. {prompt} {shown}\n\n"
            f"The first {cfg.n_practice} pairs are practice, with feedback. Then come the test pairs "
            "(no feedback). Your answers are stored anonymously, with a random session number."
        )
        start = gr.Button("Start", variant="primary", elem_id="survey-start")
    with gr.Column(visible=False) as trial_col:
        status = gr.Markdown(elem_id="survey-status")
        pair = gr.HTML("", js_on_load=None, elem_id="survey-pair")
        gr.Markdown(prompt)
        with gr.Row():
            left = gr.Button("Left", variant="primary", elem_id="survey-left-button")
            right = gr.Button("Right", variant="primary", elem_id="survey-right-button")
    feedback = gr.Markdown(elem_id="survey-feedback")

    def show(s: SessionState, message: str = ""):
        if s.done:
            summary = ""
            if s.answered:
                summary = f" You took the colorized photo for the real one in {s.fooled} of {s.answered} test pairs."
            return (
                s, gr.update(visible=True), gr.update(visible=False), "", "",
                f"**Thank you — all done.**{summary} {message}".strip(),
            )  # fmt: skip
        runner.shown(s)
        return s, gr.update(visible=False), gr.update(visible=True), _status(s), pair_html(s, cfg.display_seconds), message

    def on_start():
        return show(runner.start())

    def on_answer(s: SessionState | None, side: str):
        if s is None or s.done:
            return gr.skip()
        a = runner.answer(s, side)
        message = ""
        if a.trial.kind == "practice" and a.stored:
            where = a.trial.real_side
            message = f"{'Correct' if a.correct else 'Not quite'}: the real photo was on the {where}."
            if s.current is not None and s.current.kind != "practice":
                message += " Practice is over; the test begins now (no more feedback)."
        return show(s, message)

    outputs = [state, intro, trial_col, status, pair, feedback]
    common = dict(concurrency_limit=concurrency_limit, concurrency_id="survey", show_progress="hidden")
    start.click(on_start, None, outputs, **common)
    left.click(lambda s: on_answer(s, "left"), [state], outputs, **common)
    right.click(lambda s: on_answer(s, "right"), [state], outputs, **common)
