"""Vote storage: fields, one vote per participant per pair, CSV export, and no vote lost
under concurrent writers, on SQLite and on a real PostgreSQL server started here."""

import csv
import importlib.util
import io
import os
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from demo.survey.storage import CSV_COLUMNS, VoteStore, is_fooled, sqlite_url

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request, tmp_path):
    """An empty VoteStore on each backend."""
    if request.param == "sqlite":
        s = VoteStore(sqlite_url(tmp_path / "votes.sqlite"))
    else:
        s = VoteStore(request.getfixturevalue("postgres_server_url"))
        with s.engine.begin() as conn:
            conn.execute(text("TRUNCATE votes RESTART IDENTITY"))
    yield s
    s.dispose()


def _vote(**over):
    v = dict(
        session_id="s1", pair_id="A010|default|T0.38", kind="trial", photo="A010", model="default",
        temperature=0.38, question="real", real_side="left", answer="right", response_ms=850,
    )  # fmt: skip
    v.update(over)
    return v


def test_is_fooled_truth_table():
    # "which is real?": fooled when the other side was clicked; "which is fake?": when the real one was.
    assert is_fooled("real", "left", "right") and not is_fooled("real", "left", "left")
    assert is_fooled("fake", "left", "left") and not is_fooled("fake", "right", "left")
    with pytest.raises(ValueError, match="'middle'"):
        is_fooled("real", "left", "middle")
    with pytest.raises(ValueError, match="'which'"):
        is_fooled("which", "left", "left")


def test_record_and_read_back(store):
    assert store.record(**_vote())
    assert store.record(**_vote(session_id="s2", answer="left", temperature=None, kind="trial"))
    rows = store.votes()
    assert [r["session_id"] for r in rows] == ["s1", "s2"]
    first = rows[0]
    for key, value in _vote().items():
        assert first[key] == value, key
    assert first["fooled"] is True and rows[1]["fooled"] is False
    assert rows[1]["temperature"] is None
    assert first["created_at"] is not None
    assert store.count() == 2 and store.count("practice") == 0
    assert store.voted_pairs("s1") == {"A010|default|T0.38"}


def test_one_vote_per_participant_per_pair(store):
    assert store.record(**_vote(answer="right"))
    assert not store.record(**_vote(answer="left"))  # the same participant, the same pair: refused
    assert store.record(**_vote(session_id="s2"))  # another participant: fine
    assert store.record(**_vote(pair_id="practice|A010|default|T0.38", kind="practice"))  # practice is its own pair
    assert store.count() == 3
    assert [r["answer"] for r in store.votes() if r["session_id"] == "s1" and r["kind"] == "trial"] == ["right"]


def test_bad_votes_are_refused(store):
    with pytest.raises(ValueError, match="'training'"):
        store.record(**_vote(kind="training"))
    with pytest.raises(ValueError, match="'up'"):
        store.record(**_vote(real_side="up"))
    with pytest.raises(ValueError, match="-5"):
        store.record(**_vote(response_ms=-5))
    with pytest.raises(ValueError, match="non-empty"):
        store.record(**_vote(session_id=""))
    assert store.count() == 0


def test_csv_never_shows_session_ids(tmp_path):
    store = VoteStore(sqlite_url(tmp_path / "v.sqlite"))
    secret_a, secret_b = "a" * 32, "b" * 32
    store.record(**_vote(session_id=secret_b))
    store.record(**_vote(session_id=secret_a))
    store.record(**_vote(session_id=secret_b, pair_id="p2", temperature=1.0, answer="left"))
    out = tmp_path / "votes.csv"
    text_ = store.to_csv(out)
    assert out.read_text() == text_
    assert secret_a not in text_ and secret_b not in text_
    rows = list(csv.DictReader(io.StringIO(text_)))
    assert list(rows[0]) == CSV_COLUMNS
    assert [r["participant"] for r in rows] == ["1", "2", "1"]  # numbered by first vote
    assert [r["fooled"] for r in rows] == ["1", "1", "0"]
    assert rows[2]["temperature"] == "1" and rows[0]["temperature"] == "0.38"
    from datetime import datetime, timezone

    for r in rows:  # SQLite returns naive datetimes: the CSV still says UTC
        when = datetime.fromisoformat(r["created_at"])
        assert when.tzinfo is not None and when.utcoffset().total_seconds() == 0
        assert abs((datetime.now(timezone.utc) - when).total_seconds()) < 600


def test_sqlite_runs_in_wal_mode(tmp_path):
    store = VoteStore(sqlite_url(tmp_path / "v.sqlite"))
    with store.engine.connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert conn.execute(text("PRAGMA synchronous")).scalar() == 2  # FULL


def test_votes_survive_a_new_process_view(tmp_path):
    url = sqlite_url(tmp_path / "v.sqlite")
    VoteStore(url).record(**_vote())
    assert VoteStore(url).count() == 1  # committed on disk, seen by a fresh engine


def test_bad_url():
    with pytest.raises(ValueError, match="not a database URL"):
        VoteStore("not a url")


def test_unreachable_database_is_one_line_without_its_password():
    url = f"postgresql+psycopg://voter:s3cret-pw@127.0.0.1:{_free_port()}/votes"  # nothing listens there
    with pytest.raises(ValueError) as e:
        VoteStore(url)
    msg = str(e.value)
    assert msg.startswith("database postgresql+psycopg://voter:***@127.0.0.1:") and "cannot open it" in msg
    assert "s3cret-pw" not in msg and "\n" not in msg


def test_missing_driver_is_one_line():
    if importlib.util.find_spec("pymysql") is not None:
        pytest.skip("pymysql is installed: this test needs a missing driver")
    with pytest.raises(ValueError, match=r"^database mysql\+pymysql://u:\*\*\*@localhost/db: its driver is not installed"):
        VoteStore("mysql+pymysql://u:pw@localhost/db")


def test_a_failed_vote_is_not_taken_for_a_repeated_one(store):
    """Only the one-vote-per-pair constraint means "already voted"; any other integrity
    error (here a NOT NULL column left empty) is raised, not swallowed as a duplicate."""
    with pytest.raises(IntegrityError):
        store.record(**_vote(photo=None))
    assert store.count() == 0
    assert store.record(**_vote())
    assert not store.record(**_vote())  # the real duplicate still reads as one


def test_concurrent_votes_lose_nothing(store):
    """24 threads x 15 participants' votes at once, plus every thread also racing to cast
    the same duplicate vote: all distinct votes stored, the duplicate exactly once."""
    n_threads, n_votes = 24, 15
    barrier = threading.Barrier(n_threads)
    results: list[list[bool]] = [[] for _ in range(n_threads)]
    errors: list[BaseException] = []

    def worker(i: int):
        try:
            barrier.wait()
            for j in range(n_votes):
                results[i].append(store.record(**_vote(session_id=f"s{i}", pair_id=f"photo{j}|m|T0.38")))
                results[i].append(store.record(**_vote(session_id="shared", pair_id=f"photo{j}|m|T0.38")))
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n_threads)]
    start = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors[0]
    assert all(r[0::2] == [True] * n_votes for r in results)  # every distinct vote accepted
    assert sum(sum(r[1::2]) for r in results) == n_votes  # each shared pair accepted exactly once
    assert store.count() == n_threads * n_votes + n_votes
    per_session = {}
    for v in store.votes():
        per_session[v["session_id"]] = per_session.get(v["session_id"], 0) + 1
    assert per_session == {**{f"s{i}": n_votes for i in range(n_threads)}, "shared": n_votes}
    assert time.monotonic() - start < 60


KILLED_WRITER = """
import sys
from demo.survey.storage import VoteStore
store = VoteStore(sys.argv[1])
for i in range(100000):
    store.record(session_id="killed", pair_id=f"p{i}", kind="trial", photo="x", model="m", temperature=0.38,
                 question="real", real_side="left", answer="right", response_ms=1)
    print(i, flush=True)  # acknowledged: committed before this line
"""


def test_kill_9_in_a_burst_loses_no_acknowledged_vote(store):
    """A writer process killed with SIGKILL in the middle of a burst of votes: every vote it
    had acknowledged is stored, and the store works on."""
    import signal

    proc = subprocess.Popen([os.sys.executable, "-c", KILLED_WRITER, store.url], stdout=subprocess.PIPE, text=True,
                            cwd=Path(__file__).resolve().parents[1])  # fmt: skip
    acked = -1
    deadline = time.monotonic() + 60
    try:
        while acked < 40 and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            acked = int(line)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    assert acked >= 40, "the writer did not get going"
    stored = {v["pair_id"] for v in store.votes() if v["session_id"] == "killed"}
    assert {f"p{i}" for i in range(acked + 1)} <= stored
    assert store.record(**_vote(session_id="after"))


def test_reads_of_a_database_that_went_away_are_one_line(postgres_server):
    """PostgreSQL stops: every read (and the vote) is StoreUnavailable with one line, not a
    driver's traceback; once it is back the same calls work, nothing lost."""
    from demo.survey.storage import StoreUnavailable

    s = VoteStore(postgres_server.url)
    assert s.record(**_vote(session_id="outage", pair_id="outage|1"))
    postgres_server.stop()
    try:
        for read in (s.count, s.votes, lambda: s.session_votes("outage"), lambda: s.voted_pairs("outage")):
            with pytest.raises(StoreUnavailable) as e:
                read()
            assert str(e.value).startswith("the vote database cannot ") and "\n" not in str(e.value)
        with pytest.raises(StoreUnavailable, match="^the vote database cannot store votes now"):
            s.record(**_vote(session_id="outage", pair_id="outage|2"))
    finally:
        postgres_server.start()
    assert [v["pair_id"] for v in s.session_votes("outage")] == ["outage|1"]
    s.dispose()
