"""The "Results" tab: fool rates with 95% Wilson intervals, a bar chart, CSV export.

Participants appear only as numbers in the CSV, never by session id. If a results
key is set (``--results-key`` / ``COLORIZER_RESULTS_KEY``), the tab shows nothing
until the key is entered, so participants of a public survey cannot read it.
"""

from __future__ import annotations

import hmac
import logging
import tempfile
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

import gradio as gr
from matplotlib.figure import Figure

from demo.survey.session import RETAKE_PREFIX
from demo.survey.stats import Rate, attention_pass_rate, failed_attention, fool_rates
from demo.survey.storage import UNREACHABLE, StoreUnavailable, votes_to_csv

if TYPE_CHECKING:
    from demo import SurveySetup

log = logging.getLogger(__name__)

__all__ = ["build_results_tab", "results", "sessions_line", "bar_chart", "TABLE_HEADERS"]

TABLE_HEADERS = ["group", "trials", "fooled", "fool rate %", "95% low %", "95% high %"]


def _pct(r: Rate) -> str:
    if r.n == 0:
        return "no votes yet"
    return f"{100 * r.rate:.1f}% (95% CI {100 * r.low:.1f}-{100 * r.high:.1f}%, {r.hits}/{r.n})"


def bar_chart(rates: list[Rate], title: str = "Fool rate per condition"):
    """A matplotlib bar chart of fool rates with Wilson error bars and the 50% ceiling."""
    fig = Figure(figsize=(max(4.0, 1.1 * len(rates) + 2), 3.4), dpi=100)  # no pyplot: thread-safe
    ax = fig.subplots()
    names = [r.group for r in rates]
    values = [100 * r.rate for r in rates]
    errors = [[100 * (r.rate - r.low) for r in rates], [100 * (r.high - r.rate) for r in rates]]
    ax.bar(names, values, yerr=errors, capsize=4, color="#4c78a8")
    ax.axhline(50, color="#e45756", linestyle="--", linewidth=1, label="50%: indistinguishable")
    ax.set_ylim(0, 100)
    ax.set_ylabel("fooled (%)")
    ax.set_title(title)
    ax.legend(loc="upper right", fontsize=8)
    ax.tick_params(axis="x", labelrotation=20)
    fig.tight_layout()
    return fig


def sessions_line(votes: list[dict], per_session: int | None = None) -> str:
    """How many sessions voted: complete and unfinished (fewer votes than ``per_session``,
    e.g. a participant who left), and restarted ones (``RETAKE_PREFIX``: a participant
    who had finished or started before and asked to start over)."""
    counts: dict[str, int] = {}
    for v in votes:
        counts[v["session_id"]] = counts.get(v["session_id"], 0) + 1
    retakes = sum(sid.startswith(RETAKE_PREFIX) for sid in counts)
    line = f"**Sessions**: {len(counts)}"
    if per_session:
        complete = sum(n >= per_session for n in counts.values())
        line += f" ({complete} complete, {len(counts) - complete} unfinished)"
    return line + f"; started over by a returning participant: {retakes}"


def results(votes: list[dict], exclude_failed: bool = False, per_session: int | None = None) -> dict:
    """Everything the tab shows, from ``VoteStore.votes()``; ``per_session``: the votes of a
    complete session (practice and test pairs), to count unfinished sessions.

    Returns:
        dict with "summary" (Markdown), "by_model", "by_temperature", "by_photo",
        "by_condition" (tables: lists of rows), "conditions" (list of ``Rate``).
    """
    excluded = failed_attention(votes) if exclude_failed else set()
    kept = [v for v in votes if v["session_id"] not in excluded]
    overall = fool_rates(kept)[0]
    attention = attention_pass_rate(votes)
    participants = len({v["session_id"] for v in kept if v["kind"] == "trial"})
    lines = [
        f"**Fool rate** (colorized photo taken for the real one; 50% is the ceiling): {_pct(overall)}",
        f"**Participants** with test votes: {participants}",
        f"**Attention checks passed**: {_pct(attention)}",
        sessions_line(votes, per_session),
    ]
    if exclude_failed:
        lines.append(f"Participants left out for failing an attention check: {len(excluded)}")
    conditions = fool_rates(kept, "condition")
    return {
        "summary": "\n\n".join(lines),
        "by_model": [r.as_row() for r in fool_rates(kept, "model")],
        "by_temperature": [r.as_row() for r in fool_rates(kept, "temperature")],
        "by_condition": [r.as_row() for r in conditions],
        "by_photo": [r.as_row() for r in fool_rates(kept, "photo")],
        "conditions": conditions,
    }


def build_results_tab(survey: SurveySetup) -> None:
    """Lay out the Results tab of ``survey`` (its store, results key and, once prepared, the
    votes of a complete session, to count unfinished ones) inside the current Blocks/Tab context.
    A database that cannot be read is one line where the results would be; Refresh works again
    once it is back."""
    store, results_key = survey.store, survey.results_key
    exports = Path(tempfile.gettempdir()) / "colorizer-demo-exports"
    with gr.Row():
        key = gr.Textbox(label="Results key", type="password", visible=bool(results_key), scale=2)
        exclude = gr.Checkbox(False, label="Leave out participants who failed an attention check", scale=2)
        refresh = gr.Button("Refresh", variant="primary", elem_id="results-refresh", scale=1)
    summary = gr.Markdown(elem_id="results-summary")
    chart = gr.Plot(label="Fool rate per model and temperature (95% Wilson intervals)")
    with gr.Row():
        by_model = gr.Dataframe(headers=TABLE_HEADERS, label="Per model", interactive=False)
        by_temperature = gr.Dataframe(headers=TABLE_HEADERS, label="Per temperature", interactive=False)
    by_condition = gr.Dataframe(headers=TABLE_HEADERS, label="Per model and temperature", interactive=False)
    by_photo = gr.Dataframe(headers=TABLE_HEADERS, label="Per photo", interactive=False, max_height=400)
    csv_button = gr.DownloadButton("Download all votes (CSV)", visible=False, elem_id="results-csv")

    def on_refresh(given_key: str, exclude_failed: bool):
        if results_key and not hmac.compare_digest((given_key or "").encode(), results_key.encode()):
            # one message where the results would be, and nothing else changes
            return ("**Wrong or missing results key.**", *[gr.skip()] * 5, gr.update(visible=False, value=None))
        try:
            votes = store.votes()
        except StoreUnavailable as e:
            log.warning("results not shown: %s", e)
            return (f"**{UNREACHABLE}** Refresh again in a moment; no vote is lost.", *[gr.skip()] * 5,
                    gr.skip())  # fmt: skip
        runner = survey.runner
        r = results(votes, exclude_failed, None if runner is None else runner.n_practice + runner.n_test)
        folder = exports / uuid.uuid4().hex
        folder.mkdir(parents=True, exist_ok=True)
        csv_path = folder / "turing-test-votes.csv"
        csv_path.write_text(votes_to_csv(votes), encoding="utf-8")
        fig = bar_chart(r["conditions"]) if r["conditions"] else None
        return (
            r["summary"], fig, r["by_model"], r["by_temperature"], r["by_condition"], r["by_photo"],
            gr.update(visible=True, value=str(csv_path)),
        )  # fmt: skip

    refresh.click(
        on_refresh,
        [key, exclude],
        [summary, chart, by_model, by_temperature, by_condition, by_photo, csv_button],
        concurrency_limit=2,
        api_visibility="private",
    )
