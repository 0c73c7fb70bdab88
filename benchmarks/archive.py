"""Archive benchmark: ``python -m colorizer.archive`` (Ray Data, a local instance) against
``python -m colorizer --workers 2`` on the same folder of one-megapixel JPEGs.

    python benchmarks/archive.py [--photos 500] [--model default]

Both commands run end to end in a fresh subprocess each (start-up, the model's load, reading,
colorizing and writing PNGs included), on the same photos, in this run; then the archive
command again on its finished output (every photo skipped: the cost of a resume's check).
Prints photos per second and their ratio, and the machine's load average before and after:
the figures depend on the machine and on whatever else runs on it, the ratio is what to compare.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from inference import _folder  # noqa: E402 - the one-megapixel JPEGs of the CLI's own benchmark


def _timed(cmd: list[str]) -> float:
    """Seconds of a command run to its end from the repository root; its failure ends the benchmark."""
    t0 = time.perf_counter()
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if out.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed ({out.returncode}):\n{out.stderr[-2000:]}")
    return seconds


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--photos", type=int, default=500, help="how many one-megapixel JPEGs (default 500)")
    p.add_argument("--model", default="default", help="the model both commands use")
    p.add_argument("--batch-size", type=int, default=8, help="the archive command's --batch-size")
    args = p.parse_args()
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="colorizer-archive-bench-") as tmp:
        tmp = Path(tmp)
        folder = _folder(tmp / "photos", args.photos)
        cli = _timed([sys.executable, "-m", "colorizer", str(folder), "-o", str(tmp / "cli"), "--workers", "2",
                      "-q", "-m", args.model])
        archive_cmd = [sys.executable, "-m", "colorizer.archive", str(folder), "-o", str(tmp / "archive"), "-q",
                       "-m", args.model, "--batch-size", str(args.batch_size)]
        archive = _timed(archive_cmd)
        resume = _timed(archive_cmd)
        written = sum(1 for _ in (tmp / "archive").rglob("*.png"))
        if written != args.photos:
            raise SystemExit(f"the archive command wrote {written} of {args.photos} photos")
    load_after = os.getloadavg()
    n = args.photos
    print(f"| {n} one-megapixel JPEGs, model {args.model}, {os.cpu_count()} CPUs | seconds | photos/s | ratio |")
    print("|---|---:|---:|---:|")
    print(f"| python -m colorizer --workers 2 | {cli:.1f} | {n / cli:.2f} | 1.00x |")
    print(f"| python -m colorizer.archive (local Ray, 2 actors of 1 CPU) | {archive:.1f} | {n / archive:.2f} | "
          f"{cli / archive:.2f}x |")
    print(f"| python -m colorizer.archive again (all {n} skipped: resume's check) | {resume:.1f} | | |")
    print(f"\nload average (1 min) before {load_before[0]:.1f}, after {load_after[0]:.1f} on {os.cpu_count()} CPUs"
          f"{': other jobs shared the CPU' if max(load_before[0], load_after[0]) > (os.cpu_count() or 1) else ''}")


if __name__ == "__main__":
    main()
