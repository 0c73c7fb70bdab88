"""One participant's run through the Turing test, without any UI.

``SurveyRunner.start()`` draws a participant's trials; ``answer(state, side)``
stores the vote (one transaction) and moves on. The state is a small dataclass the
web app keeps per browser session in ``gr.State``.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from dataclasses import dataclass, field, replace

from demo.survey.prepare import Survey
from demo.survey.sampling import Trial, sample_session
from demo.survey.storage import QUESTIONS, SIDES, VoteStore, is_fooled

__all__ = ["SurveyConfig", "SurveyRunner", "SessionState", "Answer", "AnswerTooSoon", "RETAKE_PREFIX", "MIN_ANSWER_GAP_S",
           "MAX_TRIALS"]

MAX_TRIALS = 40  # test trials at most when the photos decide (Zhang et al. 2016: 40)
RETAKE_PREFIX = "retake-"  # session ids of participants who asked to start over (the results count them apart)
MIN_ANSWER_GAP_S = 0.1  # a session's answers closer together than this are refused (scripted clicks)

log = logging.getLogger(__name__)


class AnswerTooSoon(Exception):
    """A click for the trial on screen came within ``MIN_ANSWER_GAP_S`` of the session's last
    answer: nothing stored, the trial stays, and the participant is asked to click again."""


@dataclass(frozen=True)
class SurveyConfig:
    """How a session runs.

    Attributes:
        n_trials: test trials per participant (Zhang et al. 2016: 40); None: as many as the
            photos allow once ``n_practice`` photos are kept apart to practise on, at most
            ``MAX_TRIALS`` (``sized_to``).
        n_practice: practice trials with feedback first (Zhang et al.: 10).
        n_attention: attention checks mixed into the test trials.
        question: "real" (click the real photo) or "fake" (click the one with fake colours).
        display_seconds: how long the pair stays visible (Zhang et al.: 1 s); 0 = until answered.
    """

    n_trials: int | None = None
    n_practice: int = 5
    n_attention: int = 2
    question: str = "real"
    display_seconds: float = 1.0

    def __post_init__(self):
        if self.question not in QUESTIONS:
            raise ValueError(f"question must be one of {QUESTIONS}, got {self.question!r}")
        if self.display_seconds < 0:
            raise ValueError(f"display_seconds must be >= 0, got {self.display_seconds}")
        if min(self.n_practice, self.n_attention) < 0 or (self.n_trials is not None and self.n_trials < 1):
            raise ValueError(
                f"need n_trials >= 1 and practice/attention >= 0, got {self.n_trials}, {self.n_practice}, {self.n_attention}"
            )

    def sized_to(self, n_photos: int) -> SurveyConfig:
        """This config with ``n_trials`` set, if it is None, to what ``n_photos`` allow: the
        practice photos kept apart (practice never shows a test photo), the rest tested,
        at most ``MAX_TRIALS``."""
        if self.n_trials is not None:
            return self
        return replace(self, n_trials=max(1, min(MAX_TRIALS, n_photos - self.n_practice)))


@dataclass
class SessionState:
    """A participant's progress: the trials drawn, the next one, when it was shown."""

    session_id: str
    trials: list[Trial]
    index: int = 0
    shown_at: float = field(default_factory=time.monotonic)
    fooled: int = 0  # test trials (colorizations) where the participant was fooled
    answered: int = 0  # test trials (colorizations) answered
    test_answered: int = 0  # pairs of the test block answered: colorizations and attention checks
    test_right: int = 0  # of those, answered right (the real photo, or the fake one when asked for it)
    last_answer_at: float = float("-inf")

    @property
    def done(self) -> bool:
        return self.index >= len(self.trials)

    @property
    def current(self) -> Trial | None:
        return None if self.done else self.trials[self.index]

    @property
    def n_practice(self) -> int:
        return sum(t.kind == "practice" for t in self.trials)

    def count(self, kind: str, fooled: bool) -> None:
        """Add one stored answer of ``kind`` ("practice", "trial", "attention") to the tallies."""
        if kind == "trial":
            self.answered += 1
            self.fooled += fooled
        if kind != "practice":
            self.test_answered += 1
            self.test_right += not fooled

    @property
    def n_test(self) -> int:
        """Pairs of the test block (colorizations and attention checks), as the participant counts them."""
        return len(self.trials) - self.n_practice


@dataclass(frozen=True)
class Answer:
    """What happened to one answer: ``stored`` False for a repeated vote on a pair;
    ``correct``: the participant found the real photo."""

    trial: Trial
    side: str
    stored: bool
    correct: bool
    response_ms: int


class SurveyRunner:
    """Runs sessions of one prepared survey against one vote store."""

    def __init__(self, survey: Survey, store: VoteStore, config: SurveyConfig = SurveyConfig()):
        if not survey.pairs:
            raise ValueError(f"{survey.folder}: the survey has no colorized pairs")
        config = config.sized_to(len(survey.photos))
        self.survey, self.store, self.config = survey, store, config
        self._locks: dict[str, threading.Lock] = {}  # one per session: its clicks are answered one at a time
        self._locks_guard = threading.Lock()
        sample = self.start(seed=0)  # every session has the same counts
        self.n_practice, self.n_test = sample.n_practice, sample.n_test
        if self.n_practice < config.n_practice:
            log.warning(
                "%s: %d photos are too few for %d test and %d practice trials without practising on "
                "test photos: participants get %d practice trials",
                survey.folder, len(survey.photos), config.n_trials, config.n_practice, self.n_practice,
            )  # fmt: skip

    def _trials(self, seed: int | None) -> list[Trial]:
        c = self.config
        return sample_session(self.survey.pairs, self.survey.checks, c.n_trials, c.n_practice, c.n_attention, seed)

    @staticmethod
    def _seed(session_id: str) -> int:
        """The trials of a session follow from its id, so a session can be resumed from it."""
        return int(session_id[-15:], 16)

    def start(self, seed: int | None = None, retake: bool = False) -> SessionState:
        """A new participant: a fresh random session id and their trials (drawn from the id,
        or from ``seed``; a seeded session cannot be resumed). ``retake``: the same person
        starting over, marked in the session id so the results can tell."""
        session_id = (RETAKE_PREFIX if retake else "") + uuid.uuid4().hex
        return SessionState(session_id=session_id, trials=self._trials(self._seed(session_id) if seed is None else seed))

    def resume(self, session_id: str | None) -> SessionState | None:
        """The session ``session_id`` where its stored votes left it (after a page reload or a
        server restart: the browser keeps the id), or None for an id this survey never issued."""
        if not session_id or len(session_id) < 32 or session_id.removeprefix(RETAKE_PREFIX) != session_id[-32:]:
            return None
        try:
            seed = self._seed(session_id)
            uuid.UUID(session_id[-32:])
        except ValueError:
            return None
        state = SessionState(session_id=session_id, trials=self._trials(seed))
        votes = self.store.session_votes(session_id)
        if any(v["pair_id"] not in {t.pair_id for t in state.trials} for v in votes):
            return None  # not this survey's session (another survey, or other weights)
        for v in votes:
            state.count(v["kind"], bool(v["fooled"]))
        state.index = min(len(votes), len(state.trials))
        return state

    def _lock(self, session_id: str) -> threading.Lock:
        with self._locks_guard:
            return self._locks.setdefault(session_id, threading.Lock())

    def shown(self, state: SessionState, now: float | None = None) -> None:
        """Mark the current trial as shown now (starts its response clock)."""
        state.shown_at = time.monotonic() if now is None else now

    def answer(self, state: SessionState, side: str, now: float | None = None, index: int | None = None) -> Answer | None:
        """Record the participant's click on ``side`` ("left"/"right") for the current
        trial and advance. The vote is committed before this returns.

        A session's clicks are answered one at a time; a click for another trial than the
        current one (``index``: the trial on the participant's screen; a second click that
        arrived while the first advanced) is ignored: None, nothing stored, nothing advanced.

        Raises:
            ValueError: a bad side, or the session is over.
            AnswerTooSoon: within ``MIN_ANSWER_GAP_S`` of the last answer; the trial stays current.
            StoreUnavailable: the database did not take the vote; the trial stays current.
        """
        if side not in SIDES:
            raise ValueError(f"side must be 'left' or 'right', got {side!r}")
        with self._lock(state.session_id):
            now = time.monotonic() if now is None else now
            if index is not None and index != state.index:
                return None
            if now - state.last_answer_at < MIN_ANSWER_GAP_S:
                raise AnswerTooSoon(f"{now - state.last_answer_at:.3f} s after the last answer")
            if state.current is None:
                raise ValueError("the session is over: no trial to answer")
            answer = self._record(state, side, now)
            state.last_answer_at = now
            return answer

    def _record(self, state: SessionState, side: str, now: float) -> Answer:
        trial = state.current
        response_ms = max(0, round((now - state.shown_at) * 1000))
        stored = self.store.record(
            session_id=state.session_id,
            pair_id=trial.pair_id,
            kind=trial.kind,
            photo=trial.pair.photo,
            model=trial.pair.model,
            temperature=trial.pair.temperature,
            question=self.config.question,
            real_side=trial.real_side,
            answer=side,
            response_ms=response_ms,
        )
        fooled = is_fooled(self.config.question, trial.real_side, side)
        if stored:
            state.count(trial.kind, fooled)
        state.index += 1
        return Answer(trial, side, stored, not fooled, response_ms)
