"""evaluation/compare.sh: the equal-compute comparison's runs, streams, options and records.

Its training runs are replaced by a stand-in ``python`` (first on PATH) that answers
``python -m train`` with the files a finished run leaves and passes everything else to
this interpreter, so the script's own logic runs as it does for a real comparison."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "evaluation" / "compare.sh"

# python -m train stand-in: writes what a run stopped by its CPU budget leaves, logs its arguments
FAKE_PYTHON = r"""#!/usr/bin/env bash
if [ "$1" = "-m" ] && [ "$2" = "train" ]; then
  shift 2
  echo "$*" >> "$CALLS"
  out="" budget=""
  while [ $# -gt 0 ]; do
    case "$1" in --out) out="$2"; shift ;; --max-cpu-hours) budget="$2"; shift ;; esac
    shift
  done
  [ -n "${FAIL_RUN:-}" ] && [ "$(basename "$out")" = "$FAIL_RUN" ] && { echo "stand-in: $FAIL_RUN fails" >&2; exit 3; }
  exec "$REAL_PYTHON" - "$out" "$budget" <<'EOF'
import csv, json, sys
from pathlib import Path
out, budget = Path(sys.argv[1]), float(sys.argv[2])
out.mkdir(parents=True, exist_ok=True)
cpu = budget * 3600
(out / "config.json").write_text(json.dumps({"out": str(out), "lam": 0.75}))
(out / "final.json").write_text(json.dumps({"step": 100, "cpu_s": cpu}))
(out / "val_baseline.json").write_text(json.dumps({"photos": 2, "size": 176, "groups": {"food": 1, "other": 1},
    "gray": {"food_auc": 0.9, "other_auc": 0.85}, "truth_colorfulness": {"food": 36.0, "other": 48.0}}))
with open(out / "val.csv", "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(["step", "elapsed_s", "cpu_s", "other_auc", "food_auc"])
    for i in (1, 2, 3):
        w.writerow([100 * i, cpu * i / 3, cpu * i / 3, 0.8 + 0.01 * i, 0.9])
EOF
fi
exec "$REAL_PYTHON" "$@"
"""


@pytest.fixture
def env(tmp_path):
    if shutil.which("bash") is None:
        pytest.skip("no bash")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "python"
    fake.write_text(FAKE_PYTHON)
    fake.chmod(0o755)
    return {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "REAL_PYTHON": sys.executable,
            "CALLS": str(tmp_path / "calls.log"), "PYTHONPATH": str(ROOT), "MPLBACKEND": "Agg"}


def compare(tmp_path, env, *args):
    return subprocess.run(["bash", str(SCRIPT), *args], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)


def test_runs_in_streams_with_shared_options_then_records_the_curves(tmp_path, env):
    done = compare(tmp_path, env, "out", "0.2", "--jobs", "2", "--val-scale", "4", "--runs", "l2,base,crop64",
                   "--keep", "docs/compare", "--mixed-precision", "auto")
    assert done.returncode == 0, done.stderr
    calls = (tmp_path / "calls.log").read_text().splitlines()
    assert len(calls) == 3
    by_run = {c.split("--out ")[1].split()[0]: c for c in calls}
    assert set(by_run) == {"out/base", "out/l2", "out/crop64"}
    # each run's own validation interval times --val-scale, its own options, then the shared ones
    assert "--val-every 480 --max-cpu-hours 0.2 --resume --mixed-precision auto" in by_run["out/base"]
    assert ("--val-every 520 --max-cpu-hours 0.2 --resume --objective regression --mixed-precision auto"
            in by_run["out/l2"])
    assert "--val-every 1000 --max-cpu-hours 0.2 --resume --crop 64 --mixed-precision auto" in by_run["out/crop64"]
    assert "base: 100 steps 720 CPU-s" in done.stdout
    # what the curves are drawn from, kept in docs/compare, and the curves themselves
    for name in ("base", "l2", "crop64"):
        kept = tmp_path / "docs" / "compare" / name
        assert json.loads((kept / "final.json").read_text())["cpu_s"] == pytest.approx(720)
        assert (kept / "val.csv").is_file() and (kept / "config.json").is_file()
    assert (tmp_path / "docs" / "compare" / "curves.png").stat().st_size > 0
    assert "base" in (tmp_path / "docs" / "compare" / "curves.md").read_text()

    # the same budget again: every run is done, none trains; a larger one resumes each
    again = compare(tmp_path, env, "out", "0.2", "--runs", "l2,base,crop64")
    assert again.returncode == 0, again.stderr
    assert "base: done" in again.stdout and len((tmp_path / "calls.log").read_text().splitlines()) == 3
    longer = compare(tmp_path, env, "out", "0.3", "--runs", "base", "--mixed-precision", "auto")
    assert longer.returncode == 0, longer.stderr
    assert ("--out out/base --val-every 120 --max-cpu-hours 0.3 --resume --mixed-precision auto"
            in (tmp_path / "calls.log").read_text())


def test_without_keep_the_records_stay_in_out(tmp_path, env):
    done = compare(tmp_path, env, "out", "0.1", "--runs", "base")
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "out" / "curves.md").is_file() and not (tmp_path / "docs").exists()


def test_a_failed_run_fails_the_comparison_but_not_its_stream(tmp_path, env):
    env["FAIL_RUN"] = "base"
    done = compare(tmp_path, env, "out", "0.1", "--runs", "base,l2", "--keep", "docs/compare")
    assert done.returncode == 1
    assert "base: failed, see out/base.log" in done.stdout and "l2: 100 steps" in done.stdout
    assert "stand-in: base fails" in (tmp_path / "out" / "base.log").read_text()
    assert not (tmp_path / "docs").exists()  # no curves or records from a comparison with a failed run


@pytest.mark.parametrize("args, message", [
    (["--jobs"], "--jobs needs a value"),
    (["--jobs", "0"], "--jobs must be a whole number"),
    (["--val-scale", "--dry-run"], "--val-scale needs a value"),
    (["--val-scale", "abc"], "--val-scale must be a positive number"),
    (["--runs", ""], "--runs takes names separated by commas"),
    (["--runs", "base lam0.5"], "--runs takes names separated by commas"),
    (["out", "soon"], "CPU_HOURS must be a number"),
])
def test_bad_options_are_one_error_line(tmp_path, env, args, message):
    done = compare(tmp_path, env, *args)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.strip().splitlines() == [done.stderr.strip()] and message in done.stderr
    assert not (tmp_path / "calls.log").exists() and not (tmp_path / "runs").exists()


def test_dry_run_prints_each_stream_and_trains_nothing(tmp_path, env):
    done = compare(tmp_path, env, "out", "0.5", "--jobs", "2", "--runs", "base,lam0.5,l2", "--dry-run")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert sorted(line.split(":")[0] for line in lines) == ["stream 0", "stream 0", "stream 1"]
    assert any("--out out/lam0.5" in line and line.startswith("stream 1") for line in lines)
    assert not (tmp_path / "calls.log").exists() and not (tmp_path / "out").exists()


def test_unknown_run_name_is_one_error_line(tmp_path, env):
    done = compare(tmp_path, env, "--runs", "base,nosuch")
    assert done.returncode == 2
    assert done.stdout == "" and len(done.stderr.strip().splitlines()) == 1
    assert "no run named 'nosuch'" in done.stderr and "base lam0.5" in done.stderr
    assert not (tmp_path / "calls.log").exists()
