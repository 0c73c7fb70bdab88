"""Durable storage of Turing-test votes (SQLAlchemy: SQLite by default, PostgreSQL for hosted surveys).

One row per vote, written in its own transaction. A unique constraint on
(session_id, pair_id) keeps one vote per participant per pair, whatever the
number of replicas writing at once. SQLite runs in WAL mode with synchronous=FULL,
so a committed vote survives a crash; PostgreSQL is reached through psycopg 3:
``postgresql+psycopg://user:password@host:5432/dbname``.
"""

from __future__ import annotations

import csv
import io
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable

from sqlalchemy import (
    Boolean,
    DateTime,
    Float,
    Integer,
    String,
    UniqueConstraint,
    create_engine,
    event,
    func,
    select,
)
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

__all__ = ["Vote", "VoteStore", "StoreUnavailable", "UNREACHABLE", "KINDS", "SIDES", "QUESTIONS", "CSV_COLUMNS", "is_fooled", "sqlite_url"]

KINDS = ("trial", "practice", "attention")
SIDES = ("left", "right")
QUESTIONS = ("real", "fake")  # "which photo is real?" or "which photo has fake colours?"
CSV_COLUMNS = [
    "vote",
    "participant",
    "kind",
    "pair",
    "photo",
    "model",
    "temperature",
    "question",
    "real_side",
    "answer",
    "fooled",
    "response_ms",
    "created_at",
]


UNREACHABLE = "The survey's vote database cannot be reached right now."  # what the app's pages say then
UNIQUE_VOTE = "one_vote_per_pair"  # the constraint that keeps one vote per participant per pair
_PG_UNIQUE_VIOLATION = "23505"  # PostgreSQL SQLSTATE unique_violation
_SQLITE_UNIQUE_VOTE = "UNIQUE constraint failed: votes.session_id, votes.pair_id"


class Base(DeclarativeBase):
    pass


class Vote(Base):
    """One answer of one participant to one pair."""

    __tablename__ = "votes"
    __table_args__ = (UniqueConstraint("session_id", "pair_id", name=UNIQUE_VOTE),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    session_id: Mapped[str] = mapped_column(String(64), index=True)
    pair_id: Mapped[str] = mapped_column(String(512))
    kind: Mapped[str] = mapped_column(String(16))  # trial | practice | attention
    photo: Mapped[str] = mapped_column(String(256))
    model: Mapped[str] = mapped_column(String(256))  # the model's label, or the check ("hue", "swap")
    temperature: Mapped[float | None] = mapped_column(Float, nullable=True)
    question: Mapped[str] = mapped_column(String(8))  # real | fake
    real_side: Mapped[str] = mapped_column(String(8))  # left | right
    answer: Mapped[str] = mapped_column(String(8))  # the side the participant clicked
    fooled: Mapped[bool] = mapped_column(Boolean)  # the colorized photo was taken for the real one
    response_ms: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


def is_fooled(question: str, real_side: str, answer: str) -> bool:
    """Whether an answer took the colorized photo for the real one.

    ``question`` "real": the participant clicked the photo they think is real;
    "fake": the one they think has fake colours.
    """
    if question not in QUESTIONS:
        raise ValueError(f"question must be one of {QUESTIONS}, got {question!r}")
    if real_side not in SIDES or answer not in SIDES:
        raise ValueError(f"sides must be 'left' or 'right', got real_side={real_side!r}, answer={answer!r}")
    picked_real = answer == real_side
    return not picked_real if question == "real" else picked_real


def sqlite_url(path: str | Path) -> str:
    """The SQLAlchemy URL of an SQLite file."""
    return f"sqlite:///{Path(path).resolve()}"


def _is_repeated_vote(error: IntegrityError) -> bool:
    """Whether an IntegrityError is the one-vote-per-pair constraint (and not, say, a NOT NULL)."""
    orig = error.orig
    sqlstate = getattr(orig, "sqlstate", None)  # psycopg 3
    if sqlstate is not None:
        return sqlstate == _PG_UNIQUE_VIOLATION and getattr(orig.diag, "constraint_name", None) == UNIQUE_VOTE
    return str(orig).startswith(_SQLITE_UNIQUE_VOTE)


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    cur = dbapi_connection.cursor()
    cur.execute("PRAGMA journal_mode=WAL")  # readers never block the writer; replicas on one disk share it
    cur.execute("PRAGMA synchronous=FULL")  # a committed vote is on disk
    cur.execute("PRAGMA busy_timeout=30000")  # writers wait for each other instead of failing
    cur.close()


class StoreUnavailable(RuntimeError):
    """The database did not take a vote or could not be read (down, locked, unreachable);
    the same call works again once it is back."""


class VoteStore:
    """The vote table behind a database URL.

    Args:
        url: an SQLAlchemy URL, e.g. ``sqlite:///votes.sqlite`` or
            ``postgresql+psycopg://user:pass@host/db``. The table is created if missing.

    Raises:
        ValueError: not a URL, its database driver is not installed, or the database
            cannot be reached (one line naming the URL, its password hidden).
    """

    def __init__(self, url: str):
        try:
            parsed = make_url(url)
        except Exception as e:  # sqlalchemy raises ArgumentError with a long message
            raise ValueError(f"not a database URL: {url!r} ({e})") from None
        self.url = url
        kwargs: dict = {"future": True}
        if parsed.get_backend_name() == "sqlite":
            if parsed.database and parsed.database != ":memory:":
                Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
            kwargs["connect_args"] = {"timeout": 30, "check_same_thread": False}
        else:
            kwargs.update(pool_pre_ping=True, pool_size=5, max_overflow=10)
        shown = parsed.render_as_string(hide_password=True)
        try:
            self.engine: Engine = create_engine(url, **kwargs)
            if parsed.get_backend_name() == "sqlite":
                event.listen(self.engine, "connect", _sqlite_pragmas)
            Base.metadata.create_all(self.engine)
        except ImportError as e:  # e.g. psycopg missing for postgresql+psycopg://
            raise ValueError(f"database {shown}: its driver is not installed ({_first_line(e, parsed.password)})") from None
        except SQLAlchemyError as e:  # unreachable server, bad credentials, unwritable file, ...
            reason = _first_line(getattr(e, "orig", None) or e, parsed.password)
            raise ValueError(f"database {shown}: cannot open it ({reason})") from None

    def __repr__(self) -> str:
        return f"VoteStore({self.engine.url.render_as_string(hide_password=True)!r})"

    def record(
        self,
        *,
        session_id: str,
        pair_id: str,
        kind: str,
        photo: str,
        model: str,
        temperature: float | None,
        question: str,
        real_side: str,
        answer: str,
        response_ms: int,
        created_at: datetime | None = None,
    ) -> bool:
        """Store one vote in its own transaction.

        Returns:
            True if stored, False if this participant already voted on this pair
            (the first vote stands).
        Raises:
            ValueError: a field out of its range (kind, sides, question, response_ms < 0).
            StoreUnavailable: the database could not store it (one line; nothing was stored).
        """
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        if not session_id or not pair_id:
            raise ValueError(f"session_id and pair_id must be non-empty, got {session_id!r}, {pair_id!r}")
        if response_ms < 0:
            raise ValueError(f"response_ms must be >= 0, got {response_ms}")
        vote = Vote(
            session_id=session_id,
            pair_id=pair_id,
            kind=kind,
            photo=photo,
            model=model,
            temperature=None if temperature is None else float(temperature),
            question=question,
            real_side=real_side,
            answer=answer,
            fooled=is_fooled(question, real_side, answer),
            response_ms=int(response_ms),
            created_at=created_at or datetime.now(timezone.utc),
        )
        try:
            with Session(self.engine) as session, session.begin():
                session.add(vote)
        except IntegrityError as e:
            if _is_repeated_vote(e):
                return False
            raise
        except SQLAlchemyError as e:  # the database is down, locked or unreachable: the vote is not stored
            raise _unavailable(e, "store votes") from None
        return True

    def _read(self, query, what: str, one: bool = False):
        """Run a read query: its scalars (or one scalar); StoreUnavailable when the database is not there."""
        try:
            with Session(self.engine) as session:
                if one:
                    return session.scalar(query)
                return list(session.scalars(query))
        except SQLAlchemyError as e:
            raise _unavailable(e, what) from None

    def count(self, kind: str | None = None) -> int:
        """Number of stored votes (of one kind, or all).

        Raises:
            StoreUnavailable: the database cannot be read now (one line); so do the reads below.
        """
        query = select(func.count(Vote.id))
        if kind is not None:
            query = query.where(Vote.kind == kind)
        return int(self._read(query, "count votes", one=True) or 0)

    def session_votes(self, session_id: str) -> list[dict]:
        """One session's votes, oldest first."""
        query = select(Vote).where(Vote.session_id == session_id).order_by(Vote.id)
        return [_as_dict(v) for v in self._read(query, "read votes")]

    def votes(self, kind: str | None = None) -> list[dict]:
        """All votes as dicts (the ``Vote`` columns), oldest first."""
        query = select(Vote).order_by(Vote.id)
        if kind is not None:
            query = query.where(Vote.kind == kind)
        return [_as_dict(v) for v in self._read(query, "read votes")]

    def voted_pairs(self, session_id: str) -> set[str]:
        """Pair ids this participant has already answered."""
        return set(self._read(select(Vote.pair_id).where(Vote.session_id == session_id), "read votes"))

    def to_csv(self, path: str | Path | None = None) -> str:
        """All votes as CSV (``CSV_COLUMNS``); participants appear as numbers 1, 2, ...
        in order of their first vote, never by their session id. Written to ``path``
        if given; the text is returned either way."""
        text = votes_to_csv(self.votes())
        if path is not None:
            Path(path).write_text(text, encoding="utf-8")
        return text

    def dispose(self) -> None:
        """Close the connection pool."""
        self.engine.dispose()


def _as_dict(v: Vote) -> dict:
    return {c.name: getattr(v, c.name) for c in Vote.__table__.columns}


def _unavailable(e: SQLAlchemyError, what: str) -> StoreUnavailable:
    """The one-line error of a database that is down, locked or unreachable."""
    first = str(getattr(e, "orig", None) or e).strip().splitlines()
    return StoreUnavailable(f"the vote database cannot {what} now ({first[0] if first else type(e).__name__})")


def _first_line(e: BaseException, secret: str | None = None) -> str:
    """The first line of an error's message, whitespace collapsed, ``secret`` masked."""
    text = " ".join(str(e).strip().split("\n")[0].split()) or type(e).__name__
    return text.replace(secret, "***") if secret else text


def anonymize(votes: Iterable[dict]) -> list[dict]:
    """Votes with ``session_id`` replaced by ``participant`` (1, 2, ... by first vote)."""
    numbers: dict[str, int] = {}
    out = []
    for v in votes:
        row = dict(v)
        row["participant"] = numbers.setdefault(row.pop("session_id"), len(numbers) + 1)
        out.append(row)
    return out


def _utc_iso(when) -> str:
    """An ISO 8601 timestamp with its zone: votes are stored in UTC, and SQLite gives them
    back without the zone."""
    if not isinstance(when, datetime):
        return "" if when is None else str(when)
    return (when if when.tzinfo else when.replace(tzinfo=timezone.utc)).astimezone(timezone.utc).isoformat()


def votes_to_csv(votes: Iterable[dict]) -> str:
    """CSV text of votes (from ``VoteStore.votes``), participant ids anonymized."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for v in anonymize(votes):
        created = v["created_at"]
        writer.writerow(
            [
                v["id"],
                v["participant"],
                v["kind"],
                v["pair_id"],
                v["photo"],
                v["model"],
                "" if v["temperature"] is None else f"{v['temperature']:g}",
                v["question"],
                v["real_side"],
                v["answer"],
                int(v["fooled"]),
                v["response_ms"],
                _utc_iso(created),
            ]
        )
    return buf.getvalue()
