"""Semantic check: does a colorized photo carry the colour a classifier relies on?

The "colourization as pre-processing" / "feature preservation" test (Zhang et al.
2016, sec. 3.1, with a VGG on ImageNet): a classifier trained on real colour photos
labels held-out photos three ways, as **gray** (their L channel only), **colorized**
(by each model, at each temperature) and **real**. If colour matters to the classes,
gray loses accuracy, and a good colorizer wins some of it back.

The code takes any classifier, a callable from a list of PIL images to a list of
labels, and any labelled photos. ``python -m evaluation.semantic`` demonstrates it
offline: it trains a small CNN (``train_classifier``) on a folder of photos whose
class is the start of each file name (``A001.jpeg`` -> "A"), and tests on a held-out
part chosen by a glob (by default numbers ending in 0):

    python -m evaluation.semantic --data-dir photos/food --model default --temperature 0.38
"""

from __future__ import annotations

import argparse
import collections
import fnmatch
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Hashable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from tqdm import tqdm

from colorizer.bins import check_temperature
from colorizer.errors import first_line, report_error
from colorizer.hub import DEFAULT_MODEL
from colorizer.color import rgb_to_l
from colorizer.images import ImageError, list_images, read_image, resize_short_side
from colorizer.model import Colorizer, gray_rgb

__all__ = [
    "Classifier",
    "accuracy",
    "to_gray",
    "semantic_check",
    "SmallCNN",
    "TrainedClassifier",
    "train_classifier",
    "labelled_folder",
    "markdown_table",
    "main",
]

Classifier = Callable[[Sequence[Image.Image]], Sequence[Hashable]]


def accuracy(classify: Classifier, images: Sequence[Image.Image], labels: Sequence[Hashable], batch_size: int = 64) -> float:
    """Share of ``images`` (RGB PIL) that ``classify`` labels as in ``labels``, in [0, 1]."""
    if len(images) != len(labels):
        raise ValueError(f"accuracy: {len(images)} images but {len(labels)} labels")
    if not images:
        raise ValueError("accuracy: no images")
    correct = 0
    for start in range(0, len(images), batch_size):
        predicted = list(classify(images[start : start + batch_size]))
        correct += sum(p == t for p, t in zip(predicted, labels[start : start + batch_size]))
    return correct / len(images)


def to_gray(image: Image.Image) -> Image.Image:
    """The photo as the colorizer sees it: its CIE L with a = b = 0, as RGB."""
    rgb = torch.from_numpy(np.array(image.convert("RGB"))).permute(2, 0, 1)[None]  # (1, 3, H, W)
    return Image.fromarray(gray_rgb(rgb_to_l(rgb)))


def semantic_check(
    classify: Classifier,
    images: Sequence[Image.Image],
    labels: Sequence[Hashable],
    models: dict[str, Colorizer] | None = None,
    temperatures: Sequence[float] | None = None,
    progress: bool = False,
) -> list[dict]:
    """Accuracy of ``classify`` on gray, colorized and real versions of ``images``.

    Args:
        classify: list of RGB PIL images -> list of labels.
        images, labels: the labelled test photos (colour).
        models: label -> colorizer, each run once per photo.
        temperatures: temperatures for classification models (None: each model's own).
    Returns:
        rows ``{"name", "accuracy", "correct", "n"}``: "gray", "<model> T=<t>" (or
        "<model> (regression)") for each model and temperature, and "real".
    """
    if len(images) != len(labels) or not images:
        raise ValueError(f"semantic_check: need as many labels as images (>0), got {len(images)} and {len(labels)}")
    models = dict(models or {})
    real = [im.convert("RGB") for im in images]
    versions: dict[str, list[Image.Image]] = {"gray": [to_gray(im) for im in real]}
    for name, m in models.items():
        temps: list[float | None] = list(temperatures or [m.temperature]) if m.uses_temperature else [None]
        outs: dict[float | None, list[Image.Image]] = {t: [] for t in temps}
        for im in tqdm(real, desc=f"colorizing ({name})", unit="photo", disable=not progress):
            pred = m.analyze(im)  # the network runs once; each temperature is a decode
            for t in temps:
                outs[t].append(pred.render(t))
        for t in temps:
            versions[f"{name} (regression)" if t is None else f"{name} T={t:g}"] = outs[t]
    versions["real"] = real
    rows = []
    for name, ims in versions.items():
        acc = accuracy(classify, ims, labels)
        rows.append({"name": name, "accuracy": acc, "correct": round(acc * len(ims)), "n": len(ims)})
    return rows


# ---------------------------------------------------------------------- a small classifier
class SmallCNN(nn.Module):
    """Four 3x3 conv blocks (width, 2w, 4w, 4w channels; BatchNorm, ReLU, 2x2 max-pool
    after the first three), global average pooling, dropout and a linear layer.
    ``(B, 3, S, S)`` RGB in [0, 1] -> ``(B, classes)`` logits."""

    def __init__(self, num_classes: int, width: int = 32):
        super().__init__()

        def block(cin: int, cout: int, pool: bool) -> list[nn.Module]:
            layers: list[nn.Module] = [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]
            return layers + [nn.MaxPool2d(2)] if pool else layers

        w = width
        self.features = nn.Sequential(
            *block(3, w, True), *block(w, 2 * w, True), *block(2 * w, 4 * w, True), *block(4 * w, 4 * w, False)
        )
        self.head = nn.Sequential(nn.Dropout(0.3), nn.Linear(4 * w, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features((x - 0.5) / 0.25)  # (B, 4w, S/8, S/8)
        return self.head(x.mean(dim=(2, 3)))  # (B, classes)


def _to_tensor(images: Sequence[Image.Image], side: int) -> torch.Tensor:
    """RGB PIL images squashed to ``side`` x ``side`` -> ``(B, 3, side, side)`` in [0, 1]."""
    arrays = [np.asarray(im.convert("RGB").resize((side, side), Image.Resampling.BILINEAR)) for im in images]
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float() / 255.0


@dataclass
class TrainedClassifier:
    """A trained ``SmallCNN`` with its class names; call it on RGB PIL images.
    Test photos are squashed to ``pad`` pixels square and centre-cropped to ``size``."""

    net: SmallCNN
    classes: list
    size: int
    pad: int

    @torch.no_grad()
    def __call__(self, images: Sequence[Image.Image]) -> list:
        self.net.eval()
        x = _to_tensor(images, self.pad)
        o = (self.pad - self.size) // 2
        logits = self.net(x[..., o : o + self.size, o : o + self.size])  # (B, classes)
        return [self.classes[i] for i in logits.argmax(1).tolist()]


def train_classifier(
    images: Sequence[Image.Image],
    labels: Sequence[Hashable],
    size: int = 64,
    epochs: int = 30,
    batch_size: int = 32,
    lr: float = 3e-3,
    width: int = 32,
    seed: int = 0,
    progress: bool = False,
) -> TrainedClassifier:
    """Train a ``SmallCNN`` on colour photos (AdamW, one-cycle learning rate, random
    crops of ``size`` from photos squashed to 1.125 ``size`` and horizontal flips; no
    colour augmentation, since colour is what is being tested). Deterministic for a
    given ``seed`` on the CPU."""
    if len(images) != len(labels) or not images:
        raise ValueError(f"train_classifier: need as many labels as images (>0), got {len(images)} and {len(labels)}")
    if size < 8 or size % 8:
        raise ValueError(f"train_classifier: size must be a multiple of 8 and at least 8, got {size}")
    classes = sorted(set(labels), key=str)
    index = {c: i for i, c in enumerate(classes)}
    pad = size + size // 8
    x_all = _to_tensor(images, pad)  # (N, 3, pad, pad)
    y_all = torch.tensor([index[c] for c in labels])
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    net = SmallCNN(len(classes), width)
    steps = epochs * ((len(images) + batch_size - 1) // batch_size)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=max(steps, 1))
    net.train()
    bar = tqdm(range(epochs), desc="training classifier", unit="epoch", disable=not progress)
    for _ in bar:
        order = torch.randperm(len(images), generator=g)
        total = 0.0
        for start in range(0, len(images), batch_size):
            idx = order[start : start + batch_size]
            if len(idx) < 2:
                continue  # BatchNorm needs two samples
            dy, dx = torch.randint(0, pad - size + 1, (2,), generator=g).tolist()
            x = x_all[idx, :, dy : dy + size, dx : dx + size]  # (b, 3, size, size)
            flip = torch.rand(len(idx), generator=g) < 0.5
            x = torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)
            loss = F.cross_entropy(net(x), y_all[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
        bar.set_postfix(loss=f"{total / len(images):.3f}")
    net.eval()
    return TrainedClassifier(net, classes, size, pad)


# ---------------------------------------------------------------------- data and command line
def labelled_folder(
    data_dir: str | Path, label_chars: int = 1, test_glob: str = "*0.*"
) -> tuple[list[tuple[Path, str]], list[tuple[Path, str]]]:
    """(path, label) pairs of the images in ``data_dir`` (not recursive), labelled by
    the first ``label_chars`` characters of the file name, split into train and test:
    test files match ``test_glob`` (``fnmatch`` on the name; ``*0.*``: numbers ending in 0).

    Raises:
        FileNotFoundError: ``data_dir`` is not a folder.
    """
    folder = Path(data_dir)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: not a folder")
    train, test = [], []
    for f in list_images([folder]):
        item = (f, f.name[:label_chars])
        (test if fnmatch.fnmatchcase(f.name, test_glob) else train).append(item)
    return train, test


def markdown_table(rows: Sequence[dict], majority: float | None = None) -> str:
    """Rows of ``semantic_check`` as a Markdown table (plus the majority-class rate)."""
    lines = ["| input to the classifier | accuracy | correct |", "|---|---:|---:|"]
    if majority is not None:
        lines.append(f"| (always the most common class) | {majority:.3f} | |")
    lines += [f"| {r['name']} | {r['accuracy']:.3f} | {r['correct']}/{r['n']} |" for r in rows]
    return "\n".join(lines)


def _read(items: Sequence[tuple[Path, str]], side: int) -> tuple[list[Image.Image], list[str]]:
    images, labels = [], []
    for path, label in items:
        try:
            img = read_image(path)
        except ImageError as e:
            print(f"skipped: {e}", file=sys.stderr)
            continue
        images.append(resize_short_side(img.convert("RGB"), side))
        labels.append(label)
    return images, labels


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m evaluation.semantic",
        description="Semantic check: train a small classifier on colour photos labelled by file name, "
        "then compare its accuracy on gray, colorized and real held-out photos.",
    )
    p.add_argument("--data-dir", type=Path, required=True, help="folder of photos named <label>...")
    p.add_argument("--label-chars", type=int, default=1, help="the label is this many leading characters (1)")
    p.add_argument("--test-glob", default="*0.*", help="held-out files (fnmatch on the name; default '*0.*')")
    p.add_argument("-m", "--model", action="append", default=[], help="colorizer(s) to test (default: 'default')")
    p.add_argument("-t", "--temperature", type=float, nargs="+", help="temperatures (default: each model's own)")
    p.add_argument("--size", type=int, default=48, help="classifier input side in pixels (48)")
    p.add_argument("--width", type=int, default=32, help="classifier channels in its first layer (32)")
    p.add_argument("--epochs", type=int, default=20, help="classifier training epochs (20)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("-o", "--out", type=Path, help="also write semantic.md and semantic.json here")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    prog = "evaluation.semantic"

    def error(msg: str) -> int:
        return report_error(prog, msg)

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    try:
        for t in args.temperature or ():
            check_temperature(t)
    except ValueError as e:
        return error(f"--{e}")
    if args.epochs < 1 or args.label_chars < 1:
        return error("--epochs and --label-chars must be at least 1")
    try:
        train_items, test_items = labelled_folder(args.data_dir, args.label_chars, args.test_glob)
    except FileNotFoundError as e:
        return error(str(e))
    if not train_items or not test_items:
        return error(f"{args.data_dir}: need photos both matching and not matching --test-glob "
                     f"{args.test_glob!r} (got {len(train_items)} train, {len(test_items)} test)")
    models: dict[str, Colorizer] = {}
    for name in args.model or [DEFAULT_MODEL]:
        try:
            models[name] = Colorizer.from_pretrained(name).eval()
        except Exception as e:  # noqa: BLE001 - any load failure is one line for the user
            return error(f"cannot load model {name!r}: {first_line(e)}")

    progress = not args.quiet
    side = 256  # photos are colorized at the evaluation size of evaluation.evaluate
    train_images, train_labels = _read(train_items, side)
    test_images, test_labels = _read(test_items, side)
    try:
        classify = train_classifier(train_images, train_labels, size=args.size, epochs=args.epochs,
                                    width=args.width, seed=args.seed, progress=progress)
        rows = semantic_check(classify, test_images, test_labels, models, args.temperature, progress=progress)
    except (ValueError, RuntimeError) as e:
        return error(first_line(e))
    common = collections.Counter(train_labels).most_common(1)[0][0]
    majority = sum(label == common for label in test_labels) / len(test_labels)
    table = markdown_table(rows, majority)
    summary = (f"{len(train_images)} training and {len(test_images)} held-out photos, "
               f"{len(set(train_labels))} classes; classifier: SmallCNN (width {args.width}) at {args.size} px, "
               f"{args.epochs} epochs, "
               f"seed {args.seed}.")
    print(table)
    print(summary)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "semantic.md").write_text(f"{table}\n\n{summary}\n")
        data = {"rows": rows, "majority_class": majority, "train": len(train_images), "test": len(test_images),
                "classes": sorted(set(train_labels)), "size": args.size, "width": args.width, "epochs": args.epochs,
                "seed": args.seed}
        (args.out / "semantic.json").write_text(json.dumps(data, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
