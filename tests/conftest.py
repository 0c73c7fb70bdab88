"""Shared test fixtures."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest
import torch


@pytest.fixture
def one_thread():
    """Run torch on one thread: tiny models run faster that way, and the CPU is shared
    with other test runs. Use it per module with
    ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A tiny colorizer (an eighth of the width, 64 px input) saved with ``save_pretrained``: the
    model the command-line tests (the CLI's, the archive's) load by its folder."""
    from colorizer import Colorizer

    d = tmp_path_factory.mktemp("model")
    torch.manual_seed(0)
    Colorizer(width=0.125, input_size=64).save_pretrained(d)
    return d


@pytest.fixture(autouse=True, scope="session")
def _cache_in_a_temporary_folder(tmp_path_factory):
    """What the app caches (the default Turing test) goes to a temporary folder, never
    to the user's ~/.cache, in every test and in every app the tests start."""
    import os

    old = os.environ.get("COLORIZER_CACHE")
    os.environ["COLORIZER_CACHE"] = str(tmp_path_factory.mktemp("colorizer-cache"))
    yield
    if old is None:
        os.environ.pop("COLORIZER_CACHE", None)
    else:
        os.environ["COLORIZER_CACHE"] = old


# ----------------------------------------------------------------------------- a PostgreSQL server
PG_BIN_DIRS = [Path("/usr/lib/postgresql") / v / "bin" for v in ("17", "16", "15", "14")]


def _pg_bin() -> Path | None:
    for d in PG_BIN_DIRS:
        if (d / "initdb").is_file() and (d / "pg_ctl").is_file():
            return d
    found = shutil.which("pg_ctl")
    return Path(found).parent if found and shutil.which("initdb") else None


def _free_port_pg() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PostgresServer:
    """A throwaway PostgreSQL server: ``url``, and ``stop()``/``start()`` to take it away and back."""

    def __init__(self, url: str, start, stop):
        self.url, self.start, self.stop = url, start, stop


@pytest.fixture(scope="session")
def postgres_server():
    """A throwaway PostgreSQL server (initdb into a temp dir, pg_ctl start on a free
    localhost port; run as the 'postgres' user when we are root), stopped at teardown."""
    bindir = _pg_bin()
    if bindir is None:
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) are not installed: apt-get install postgresql")
    as_user: list[str] = []
    root = Path(tempfile.mkdtemp(prefix="colorizer-pg-"))
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root
        runuser = shutil.which("runuser")
        try:
            import pwd

            pw = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no 'postgres' user to run the PostgreSQL server as")
        if runuser is None:
            pytest.skip("running as root and runuser (util-linux) is missing to start PostgreSQL as 'postgres'")
        os.chown(root, pw.pw_uid, pw.pw_gid)
        as_user = [runuser, "-u", "postgres", "--"]
    data, log = root / "data", root / "server.log"
    port = _free_port_pg()

    def run(*cmd):
        return subprocess.run(as_user + [str(c) for c in cmd], check=True, capture_output=True, text=True, timeout=120)

    def start():
        opts = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=60"
        run(bindir / "pg_ctl", "-D", data, "-o", opts, "-l", log, "-w", "-t", "60", "start")

    def stop():
        subprocess.run(as_user + [str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"],
                       capture_output=True, timeout=60)  # fmt: skip

    run(bindir / "initdb", "-D", data, "-U", "colorizer", "--auth=trust", "-E", "UTF8", "--no-sync")
    start()
    try:
        yield PostgresServer(f"postgresql+psycopg://colorizer@127.0.0.1:{port}/postgres", start, stop)
    finally:
        stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_server_url(postgres_server):
    return postgres_server.url
