"""Regenerate the README's and docs' results: ``python benchmarks/readme_tables.py``.

Runs, in this order, and splices each output between its markers (``<!-- NAME -->`` ...
``<!-- /NAME -->``, each on its own line) in the file that holds them (``FILES``):

- RESULTS, in README.md: ``python -m evaluation`` of the shipped default model on the
  held-out photos of ../shared/data/VALIDATION.txt, food and non-food reported apart (each
  with the gray, mean-ab and ground-truth rows and a temperature sweep); the non-food
  contact sheet becomes the README's first picture (docs/holdout.png), the food one
  docs/holdout-food.png, and the non-food sweep docs/sweep.png;
- SEMANTIC, in docs/evaluation.md: ``python -m evaluation.semantic`` on the food photos'
  group letters;
- TRUNKS, in docs/methods.md: ``python -m evaluation`` of the default (the pretrained DINOv2
  trunk, its last blocks fine-tuned) beside ``dinov2-frozen`` (the same trunk frozen) and
  ``hypercolumn-eccv16`` (the ECCV16 trunk trained here, the default they replaced), all
  shipped, so it always runs; its non-food sheet becomes docs/trunks.jpg;
- METHODS, in docs/methods.md: ``python -m evaluation`` of the other methods' models
  (``METHODS``: row label -> a shipped name or a run folder under ``--runs``; docs/methods.md
  says what each is and the command that trains it) on the same held-out photos, when their
  run folders are there; their sheet becomes docs/methods.jpg and each one's own
  (gray | method | truth) docs/methods/<row>.jpg;
- BENCH, in docs/benchmarks.md: ``python benchmarks/inference.py``.

Each can be skipped (``--skip bench`` ...). A file without the markers of a block that is
not skipped is an error naming the file, before anything runs. The photos folder is only
needed here, by the person regenerating the tables; nothing at run time or in the tests
reads it.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run as a script from anywhere: the repository's packages

from colorizer.hub import available_models  # noqa: E402
from train.publish import without_title  # noqa: E402


def holdout(photos: Path) -> list[str]:
    """The evaluation's photo selection: VALIDATION.txt beside the photos folder, by group."""
    return ["--files-from", str(photos.parent / "VALIDATION.txt"), "--group", "food=food/*", "--other-group", "non-food"]

TEMPERATURES = ["0", "0.1", "0.2", "0.38", "0.6", "1"]
# the methods table: row label -> model (each at its own default temperature), runs under --runs
METHODS = [
    ("hypercolumn-eccv16 (12.0 CPU-h)", "hypercolumn-eccv16"),
    ("hypercolumn, previous default, 11.3 CPU-h", "hc-lam025/model"),
    ("hypercolumn, frozen trunk, 7.0 CPU-h", "hc/model"),
    ("Zhang et al. ECCV16 5.5 CPU-h", "zhang-default/model"),
    ("Zhang et al. 0.1 CPU-h", "compare/base/model"),
    ("lambda 0.2 0.1 CPU-h", "compare/lam0.2/model"),
    ("L2 Lab 0.1 CPU-h", "compare/l2/model"),
    ("L2 YUV 0.1 CPU-h", "compare/yuv/model"),
    ("L2 RGB 0.1 CPU-h", "compare/rgb/model"),
    ("uv bins 0.1 CPU-h", "compare/uvbins/model"),
    ("Cheng et al. 0.1 CPU-h", "cheng/model"),
    ("Cheng et al. + semantic 0.1 CPU-h", "cheng-semantic/model"),
    ("global_local, ECCV16 +2.3 CPU-h", "s4/model"),
    ("global_local + labels, ECCV16 +0.1 CPU-h", "iizuka/model"),
    ("hypercolumn classes 0.1 CPU-h", "hypercolumn-classes/model"),
    ("hypercolumn L2 0.1 CPU-h", "hypercolumn-l2/model"),
]

# the pretrained trunk against the model it replaced, both shipped: always regenerable
TRUNKS = [
    ("default: DINOv2 ViT-S/14 trunk, its last four blocks fine-tuned, and its decoder", "default"),
    ("dinov2-frozen: the same trunk frozen, and its decoder", "dinov2-frozen"),
    ("hypercolumn-eccv16: the ECCV16 trunk trained here, 12.0 CPU-h", "hypercolumn-eccv16"),
]

# the file (relative to the repository) that holds each block's markers
FILES = {
    "RESULTS": "README.md",
    "SEMANTIC": "docs/evaluation.md",
    "TRUNKS": "docs/methods.md",
    "METHODS": "docs/methods.md",
    "BENCH": "docs/benchmarks.md",
}


def as_jpeg(sheet: Path, to: Path) -> None:
    """A contact sheet as JPEG for the README: a few hundred kB where the PNG takes MBs."""
    from PIL import Image

    with Image.open(sheet) as img:
        img.convert("RGB").save(to, quality=85, optimize=True)


def method_pictures(sheets: Path, to: Path) -> None:
    """One picture per method (gray | method | truth, the non-food photos of the methods
    table) as JPEG in ``to`` (replaced)."""
    shutil.rmtree(to, ignore_errors=True)
    to.mkdir(parents=True)
    for sheet in sorted(sheets.glob("*.png")):
        as_jpeg(sheet, to / f"{sheet.stem}.jpg")


def markers(name: str) -> re.Pattern:
    """``<!-- name -->`` ... ``<!-- /name -->`` and what lies between them."""
    return re.compile(rf"(<!-- {name} -->\n).*?(<!-- /{name} -->)", re.S)


def check_markers(text: str, name: str, path: str) -> None:
    """Stop with one line naming ``path`` when ``text`` lacks the block's markers."""
    if not markers(name).search(text):
        raise SystemExit(f"readme_tables: {path} has no <!-- {name} --> ... <!-- /{name} --> markers")


def splice(text: str, name: str, body: str, path: str) -> str:
    """Put ``body`` between ``<!-- name -->`` and ``<!-- /name -->`` of ``text``, the file
    at ``path`` (the markers stay)."""
    check_markers(text, name, path)
    return markers(name).sub(lambda m: m.group(1) + body.strip() + "\n" + m.group(2), text)


def run(cmd: list[str]) -> str:
    print("$", " ".join(cmd), flush=True)
    return subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True, text=True).stdout


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--photos", type=Path, default=ROOT.parent / "shared" / "data" / "photos")
    p.add_argument("--model", default="default")
    p.add_argument("--out", type=Path, default=ROOT / "results")
    p.add_argument("--runs", type=Path, default=ROOT / "runs", help="where the methods' run folders are")
    p.add_argument("--skip", nargs="*", default=[], choices=["results", "semantic", "trunks", "methods", "bench"])
    args = p.parse_args()
    # relative paths, so the commands the reports print work from any checkout
    args.photos = Path(os.path.relpath(args.photos.resolve(), ROOT))
    args.out = Path(os.path.relpath(args.out.resolve(), ROOT))
    blocks = [name for name in FILES if name.lower() not in args.skip]
    texts: dict[str, str] = {}  # path -> its text, spliced as the blocks are made
    for name in blocks:
        path = FILES[name]
        if path not in texts:
            if not (ROOT / path).is_file():
                raise SystemExit(f"readme_tables: {path} is missing (it holds the <!-- {name} --> markers)")
            texts[path] = (ROOT / path).read_text()
        check_markers(texts[path], name, path)

    def put(name: str, body: str) -> None:
        path = FILES[name]
        texts[path] = splice(texts[path], name, body, path)

    py = sys.executable

    if "results" not in args.skip:
        out = args.out / "holdout"
        run([py, "-m", "evaluation", str(args.photos), *holdout(args.photos), "--model", args.model,
             "--temperature", *TEMPERATURES, "--sheet", "8", "--out", str(out), "-q"])
        (ROOT / "docs").mkdir(exist_ok=True)
        shutil.copy(out / "contact_sheet_non-food.png", ROOT / "docs" / "holdout.png")
        shutil.copy(out / "contact_sheet_food.png", ROOT / "docs" / "holdout-food.png")
        shutil.copy(out / "sweep_non-food.png", ROOT / "docs" / "sweep.png")
        put("RESULTS", without_title((out / "results.md").read_text()))
    if "semantic" not in args.skip:
        out = args.out / "semantic"
        run([py, "-m", "evaluation.semantic", "--data-dir", str(args.photos / "food"), "--model", args.model,
             "--threads", "2", "--out", str(out)])  # at the model's own temperature
        put("SEMANTIC", (out / "semantic.md").read_text())
    if "trunks" not in args.skip:
        out = args.out / "trunks"
        run([py, "-m", "evaluation", str(args.photos), *holdout(args.photos),
             *[x for label, name in TRUNKS for x in ("--model", f"{label}={name}")],
             "--sheet", "6", "--out", str(out), "-q"])
        as_jpeg(out / "contact_sheet_non-food.png", ROOT / "docs" / "trunks.jpg")
        put("TRUNKS", without_title((out / "results.md").read_text()))
    if "methods" not in args.skip:
        runs = Path(os.path.relpath(args.runs.absolute(), ROOT))  # as given (runs/ may be a link)
        shipped = set(available_models())
        models = [(label, path if path in shipped else str(runs / path)) for label, path in METHODS]
        missing = [path for _, path in models if path not in shipped and not (ROOT / path).is_dir()]
        if missing:
            print(f"methods: skipped, no run folder {', '.join(missing)} (train them first; docs/methods.md says how)")
        else:
            out = args.out / "methods"
            run([py, "-m", "evaluation", str(args.photos), *holdout(args.photos),
                 *[x for label, path in models for x in ("--model", f"{label}={path}")],
                 "--sheet", "6", "--sheet-each", "--out", str(out), "-q"])
            as_jpeg(out / "contact_sheet_non-food.png", ROOT / "docs" / "methods.jpg")
            method_pictures(out / "sheets" / "non-food", ROOT / "docs" / "methods")
            put("METHODS", without_title((out / "results.md").read_text()))
    if "bench" not in args.skip:
        table = run([py, "benchmarks/inference.py", "--model", args.model])
        put("BENCH", table)
    for path, text in texts.items():
        (ROOT / path).write_text(text)
        print(f"updated {path}")


if __name__ == "__main__":
    main()
