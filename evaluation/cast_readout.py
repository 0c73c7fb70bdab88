"""How much of a photo's overall colour can be read from its gray version?

The quality issue's colour-cast target (the median cast of the held-out photos at most half of
gray's) asks a colorizer to get each photo's mean colour right. This study asks whether that is in
reach of a *global* reading of the photo: it fits, on the training photos, a prediction of a
photo's mean ab from one feature vector of its gray version, and scores it on the held-out photos
with the colour cast of ``python -m evaluation`` (the distance in ab between the predicted and the
real mean colour; photos at ``--size`` on the short side, 256 as there):

    python -m evaluation.cast_readout ../shared/data/photos --held-out ../shared/data/VALIDATION.txt \\
        --group 'food=food/*' --other-group non-food --model default \\
        --onnx 'DINOv2 ViT-S=vit_s.onnx:/backbone/layernorm/Add_1_output_0' --out results/cast-readout

Feature vectors of the gray photo:

- ``--model NAME=SOURCE``: a colorizer's trunk, its deepest features averaged over the photo (for
  a hypercolumn network, those of its trunk). The colorizer's own output is scored beside them: the
  cast of its colorization at its default temperature, as ``evaluation`` measures it.
- ``--onnx NAME=FILE[:OUTPUT]``: any image encoder exported to ONNX (first input ``(B, 3, 224,
  224)`` RGB with ImageNet's mean and standard deviation; ``OUTPUT`` names an inner tensor, made a
  graph output here). Tokens ``(B, N, C)`` give their first (class) token and their mean, a map
  ``(B, C, H, W)`` its mean, a vector itself.

Readouts: ridge regression (features standardised, alpha by leave-one-out on the training
photos, ``sklearn.linear_model.RidgeCV``) and the mean colour of the ``k`` training photos nearest
by cosine similarity. Baselines: gray (mean ab 0) and the training photos' mean colour.
Everything is learnt from the training photos (those not in ``--held-out``) only.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from colorizer.errors import first_line, report_error
from colorizer.images import list_images
from colorizer.model import Colorizer, gray_rgb
from evaluation.evaluate import (DEFAULT_SIZE, Photo, _lab, group_rule, labelled_source, listed_names, load_photos,
                                 relative_names)

__all__ = ["Readout", "mean_ab", "colorizer_encoder", "onnx_encoder", "ridge_readout", "knn_readout",
           "cast_readout", "markdown", "main"]

ONNX_SIZE = 224
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
Encoder = Callable[[np.ndarray], dict[str, np.ndarray]]  # gray (H, W, 3) uint8 -> named feature vectors


@dataclass
class Readout:
    """One row: a way of guessing the mean colour, and its cast on each held-out photo."""

    name: str
    casts: dict[str, float]  # photo name -> cast


def mean_ab(rgb: np.ndarray) -> np.ndarray:
    """The mean colour ``(a, b)`` of ``(H, W, 3)`` uint8 sRGB, as the evaluation's cast takes it."""
    return _mean_ab(_lab(rgb))


def _mean_ab(lab: torch.Tensor) -> np.ndarray:
    return lab[0, 1:].double().mean(dim=(1, 2)).numpy()


def _truth_and_gray(photos: Sequence[Photo]) -> tuple[np.ndarray, list[np.ndarray]]:
    """Each photo's mean ab ``(N, 2)`` and gray version, from one Lab conversion a photo."""
    labs = [_lab(p.rgb) for p in photos]
    return np.stack([_mean_ab(lab) for lab in labs]), [gray_rgb(lab[:, :1]) for lab in labs]


def colorizer_encoder(model: Colorizer) -> Encoder:
    """The deepest features of ``model``'s trunk on a gray photo, averaged over the photo."""
    net = model.net
    features = net.trunk_features if hasattr(net, "trunk_features") else getattr(net, "features", None)
    if features is None:
        raise ValueError(f"network {model.network!r} has no trunk features to read")

    @torch.no_grad()
    def encode(gray: np.ndarray) -> dict[str, np.ndarray]:
        lightness = _lab(gray)[:, :1]
        small = model.network_input(lightness).to(model.device)
        with model.evaluating():
            deepest = features((small - model.l_cent) / model.l_norm)[-1]
        return {"trunk": deepest.float().mean(dim=(2, 3))[0].cpu().numpy()}

    return encode


def onnx_encoder(path: str | Path, output: str | None = None, threads: int = 1) -> Encoder:
    """An ONNX image encoder (see the module's docstring) on a gray photo at 224 x 224."""
    import onnx
    import onnxruntime as ort

    graph = onnx.load(str(path))
    if output:
        graph.graph.output.append(onnx.helper.make_tensor_value_info(output, onnx.TensorProto.FLOAT, None))
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(graph.SerializeToString(), options, providers=["CPUExecutionProvider"])
    name_in = session.get_inputs()[0].name
    name_out = output or session.get_outputs()[0].name

    def encode(gray: np.ndarray) -> dict[str, np.ndarray]:
        small = Image.fromarray(gray).resize((ONNX_SIZE, ONNX_SIZE), Image.Resampling.BICUBIC)
        x = (np.asarray(small, dtype=np.float32) / 255 - IMAGENET_MEAN) / IMAGENET_STD
        out = session.run([name_out], {name_in: x.transpose(2, 0, 1)[None]})[0][0]
        if out.ndim == 2:  # tokens (N, C)
            return {"class token": out[0], "token mean": out.mean(axis=0)}
        if out.ndim == 3:  # a map (C, H, W)
            return {"map mean": out.mean(axis=(1, 2))}
        return {"vector": out.reshape(-1)}

    return encode


def ridge_readout(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray) -> np.ndarray:
    """Ridge regression on standardised features, alpha by leave-one-out on the training set."""
    from sklearn.linear_model import RidgeCV

    mean, std = x_train.mean(axis=0), x_train.std(axis=0) + 1e-6
    fit = RidgeCV(alphas=np.logspace(-2, 5, 29)).fit((x_train - mean) / std, y_train)
    return fit.predict((x_test - mean) / std)


def knn_readout(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, k: int) -> np.ndarray:
    """The mean of the ``k`` training targets nearest by cosine similarity (features centred)."""
    centre = x_train.mean(axis=0)
    a = x_train - centre
    b = x_test - centre
    a /= np.linalg.norm(a, axis=1, keepdims=True) + 1e-12
    b /= np.linalg.norm(b, axis=1, keepdims=True) + 1e-12
    nearest = np.argsort(-(b @ a.T), axis=1)[:, :k]
    return y_train[nearest].mean(axis=1)


def cast_readout(train: Sequence[Photo], test: Sequence[Photo], encoders: dict[str, Encoder],
                 models: dict[str, Colorizer] | None = None, k: Sequence[int] = (5,),
                 progress: bool = False) -> list[Readout]:
    """The readouts' casts on ``test``, learnt on ``train`` (see the module's docstring)."""
    if not train or not test:
        raise ValueError("cast_readout needs training photos and held-out photos")
    y_train, gray_train = _truth_and_gray(train)
    y_test, gray_test = _truth_and_gray(test)
    names = [p.name for p in test]

    def row(name: str, guess: np.ndarray) -> Readout:
        return Readout(name, dict(zip(names, np.linalg.norm(guess - y_test, axis=1).tolist())))

    rows = [row("gray (ab = 0)", np.zeros_like(y_test)), row("training photos' mean colour", y_train.mean(axis=0))]
    for model_name, model in (models or {}).items():
        out = []
        for gray in tqdm(gray_test, desc=f"colorizing ({model_name})", unit="photo", disable=not progress):
            out.append(mean_ab(np.asarray(model.colorize(gray).convert("RGB"))))
        rows.append(row(f"{model_name}: its colorization", np.stack(out)))
    for enc_name, encode in encoders.items():
        feats: dict[str, list[list[np.ndarray]]] = {}
        for split, grays in (("train", gray_train), ("test", gray_test)):
            for gray in tqdm(grays, desc=f"{enc_name} ({split})", unit="photo", disable=not progress):
                for key, v in encode(gray).items():
                    feats.setdefault(key, [[], []])[split == "test"].append(np.asarray(v, dtype=np.float64))
        for key, (xs_train, xs_test) in feats.items():
            x_train, x_test = np.stack(xs_train), np.stack(xs_test)
            rows.append(row(f"{enc_name} {key}: ridge", ridge_readout(x_train, y_train, x_test)))
            for n in k:
                rows.append(row(f"{enc_name} {key}: {n} nearest", knn_readout(x_train, y_train, x_test, n)))
    return rows


def _summary(casts: list[float], half_gray: float) -> str:
    c = np.asarray(casts)
    return f"{np.median(c):.1f} | {c.mean():.1f} | {int((c <= half_gray).sum())} of {len(c)}"


def markdown(rows: Sequence[Readout], groups: dict[str, str | None]) -> str:
    """One table a group (and one of all photos when there are groups): median and mean cast,
    and how many photos are within half of gray's median cast (the issue's target)."""
    parts = []
    labels = sorted({g for g in groups.values() if g is not None})
    for label in [*labels, None] if labels else [None]:
        names = [n for n, g in groups.items() if label is None or g == label]
        gray = np.median([rows[0].casts[n] for n in names])
        title = f"**{label}** ({len(names)} photos)" if label else f"**all** ({len(names)} photos)"
        lines = [title, "", f"| guess of the mean colour | cast median | cast mean | within {gray / 2:.1f} |",
                 "|---|---:|---:|---:|"]
        lines += [f"| {r.name} | {_summary([r.casts[n] for n in names], gray / 2)} |" for r in rows]
        parts.append("\n".join(lines))
    return "\n\n".join(parts) + "\n"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m evaluation.cast_readout", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("photos", nargs="+", help="folders or files of colour photos (training and held-out)")
    p.add_argument("--held-out", required=True, metavar="FILE",
                   help="list of held-out photos, relative to the first folder (VALIDATION.txt); the rest train")
    p.add_argument("--group", action="append", default=[], metavar="NAME=GLOB", help="group of held-out photos")
    p.add_argument("--other-group", default="other", help="name of the held-out photos no --group matches")
    p.add_argument("--model", action="append", default=[], metavar="[NAME=]SOURCE",
                   help="a colorizer: its trunk's features, and its own colorization")
    p.add_argument("--onnx", action="append", default=[], metavar="NAME=FILE[:OUTPUT]", help="an ONNX image encoder")
    p.add_argument("--k", type=int, nargs="+", default=[5], help="neighbours of the nearest-photos readout")
    p.add_argument("--size", type=int, default=DEFAULT_SIZE, help="short side of the photos (as evaluation)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", help="folder for cast_readout.md and .json")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    prog = "evaluation.cast_readout"
    if min(args.k) < 1:
        return report_error(prog, f"--k must be at least 1, got {min(args.k)}")
    try:
        held = set(listed_names(args.held_out, "--held-out"))
        files = list_images(args.photos)
        names = relative_names(files, args.photos)
        groups = group_rule(args.group, rest=args.other_group)
        models = {name: Colorizer.from_pretrained(source).to(args.device).eval()
                  for name, source in map(labelled_source, args.model)}
        encoders: dict[str, Encoder] = {}
        for name, m in models.items():
            try:
                encoders[name] = colorizer_encoder(m)
            except ValueError as e:  # no trunk to read (cheng15): its colorization is still scored
                print(f"{name}: {e}; only its colorization is scored", file=sys.stderr)
        for spec in args.onnx:
            name, source = labelled_source(spec)
            path, _, output = source.partition(":")
            encoders[name] = onnx_encoder(path, output or None)
        test_files = [f for f, n in zip(files, names) if n in held]
        train_files = [f for f, n in zip(files, names) if n not in held]
        if len(test_files) < len(held):
            raise ValueError(f"--held-out {args.held_out}: {len(held) - len(test_files)} listed photos are not "
                             f"in {', '.join(args.photos)}")
        progress = not args.quiet
        test, _ = load_photos(test_files, args.size, progress=progress, names=relative_names(test_files, args.photos),
                              groups=groups)
        train, skipped = load_photos(train_files, args.size, progress=progress,
                                     names=relative_names(train_files, args.photos))
        rows = cast_readout(train, test, encoders, models, args.k, progress)
    except (OSError, ValueError, RuntimeError, ImportError) as e:
        return report_error(prog, first_line(e))
    table = markdown(rows, {p.name: p.group for p in test})
    print(f"{len(train)} training photos ({skipped['grayscale']} gray ones skipped), {len(test)} held out\n")
    print(table)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        command = "python -m evaluation.cast_readout " + shlex.join(argv if argv is not None else sys.argv[1:])
        (out / "cast_readout.md").write_text(f"{table}\nCommand: `{command}`\n")
        (out / "cast_readout.json").write_text(json.dumps(
            {"rows": {r.name: r.casts for r in rows}, "groups": {p.name: p.group for p in test},
             "training_photos": len(train), "command": command}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
