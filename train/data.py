"""The training data pipeline: rows -> decoded, cropped uint8 batches, on CPU workers.

Rows come from ``train.sources.open_source`` (a Hub or local data set, streamed).
Each DataLoader worker reads its own share of the rows (whole shards when the data set
has enough of them, every n-th row otherwise), decodes with ``read_image``, skips what
cannot be trained on (unreadable, tiny, grayscale; counted), crops and flips, and
yields whole ``(B, S, S, 3)`` uint8 batches. Lab conversion and soft-encoding happen
later, on the training device.

Workers loop over their rows forever (a new shuffle each pass), so the stream never
ends and the DataLoader's round-robin over workers stays regular. Every crop's
randomness is drawn from a generator seeded by (seed, worker, pass, row), so a batch's
position -- (pass, row, crops of that row already used) per worker -- is all that
exact resumption needs: rows before it are skipped without decoding.
"""

from __future__ import annotations

import collections
import logging
import math
import re
import signal
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import datasets
import numpy as np
import torch
from PIL import Image

from colorizer.images import ImageError, is_grayscale
from train.sources import cell_path, decode_row_image, open_source, row_image_size
from train.config import TrainConfig, parse_repeat, parse_subset, subset_draw

__all__ = [
    "open_rows",
    "train_crops",
    "val_crop",
    "usable",
    "PhotoStream",
    "TrainBatches",
    "load_val_images",
    "read_classes",
    "holdout_rule",
    "photo_key",
    "photo_path",
    "subset_rule",
    "LabelRule",
    "label_rule",
]

logger = logging.getLogger(__name__)
_ROWS_PER_READ = 64


# ----------------------------------------------------------------------------- rows
def read_classes(cfg: TrainConfig) -> list[str] | None:
    """The class filter of ``--classes`` and ``--classes-file`` as one list, or None."""
    items: list[str] = []
    if cfg.classes:
        items += [c.strip() for c in cfg.classes.split(",") if c.strip()]
    if cfg.classes_file:
        with open(cfg.classes_file) as f:
            items += [line.split("#")[0].strip() for line in f if line.split("#")[0].strip()]
    if (cfg.classes is not None or cfg.classes_file) and not items:
        raise ValueError("class filter is empty: --classes / --classes-file name no class")
    return items or None


def open_rows(cfg: TrainConfig, part: str = "train"):
    """The rows of the training (``part="train"``) or validation (``"val"``) data as a
    ``datasets.IterableDataset``, class-filtered and, with ``--holdout``, split by path.
    Returns None for "val" when no validation data is configured."""
    dataset, data_dir, split = cfg.dataset, cfg.data_dir, cfg.split
    if part == "val":
        if cfg.val_dir:
            dataset, data_dir, split = cfg.val_dataset or "imagefolder", cfg.val_dir, cfg.val_split or "train"
        elif cfg.val_dataset:
            dataset, data_dir, split = cfg.val_dataset, None, cfg.val_split or "validation"
        elif cfg.holdout or cfg.holdout_file:
            pass  # the held-out photos of the training data
        elif cfg.val_split:
            split = cfg.val_split
        elif cfg.dataset not in ("imagefolder", "parquet") or not data_dir:
            split = "validation"
        else:
            return None
    rows = open_source(
        dataset,
        data_dir=data_dir,
        split=split,
        image_column=cfg.image_column,
        label_column=cfg.label_column,
        classes=read_classes(cfg),
        streaming=cfg.streaming,
        name=cfg.config,
        data_files=cfg.data_files if part == "train" or not (cfg.val_dir or cfg.val_dataset) else None,
        cache_dir=cfg.cache_dir,
    )
    if not cfg.streaming:  # same downstream code path: an IterableDataset with real shards
        rows = rows.to_iterable_dataset(num_shards=max(1, min(len(rows), 64)))
    held_out = holdout_rule(cfg)
    if held_out is not None and not (part == "val" and cfg.val_dir):
        want = part == "val"

        def keep(image: Any) -> bool:
            path = cell_path(image)
            if not path:
                raise ValueError(
                    "--holdout/--holdout-file need image paths, but this data set's rows have none; use --val-split"
                )
            return held_out(path) == want

        rows = rows.filter(keep, input_columns=[cfg.image_column])
    if part == "train":
        subset = subset_rule(cfg)
        if subset is not None:
            rows = rows.filter(lambda image: subset(_path_of(image, "--subset")) > 0, input_columns=[cfg.image_column])
        rows = _repeated(rows, cfg)
    return rows


def _path_of(image: Any, flag: str) -> str:
    path = cell_path(image)
    if not path:
        raise ValueError(f"{flag} needs image paths, but this data set's rows have none")
    return path


def photo_key(path: str, data_dir: str | None) -> str:
    """A photo's path under ``data_dir`` with forward slashes (the path as given when it
    is not under it): the same on every machine and checkout."""
    import os

    if data_dir:
        rel = os.path.relpath(os.path.abspath(path), os.path.abspath(data_dir))
        if not rel.startswith(".."):
            path = rel
    return path.replace("\\", "/")


def photo_path(key: str, data_dir: str | None) -> str:
    """The path of the photo ``photo_key`` named (rules such as ``--subset``'s and
    ``--val-groups``' are written for whole paths, e.g. '/food/')."""
    import os

    return key if os.path.isabs(key) or not data_dir else os.path.join(os.path.abspath(data_dir), key)


def subset_rule(cfg: TrainConfig) -> Callable[[str], int] | None:
    """``--subset`` as a function of an image path: how many times the photo is read
    for each time it would be (0: left out, 1: no rule matches, round(1/F): kept by
    rule F); None without ``--subset``. A photo is kept when a hash of ``photo_key``
    (and ``--subset-seed``), as a fraction in [0, 1), is below F: the choice depends on
    the photo alone."""
    if not cfg.subset:
        return None
    import hashlib

    rules, draw = parse_subset(cfg.subset), subset_draw(cfg.subset, cfg.subset_seed)

    def reads(path: str) -> int:
        for pattern, share in rules:
            if pattern.search(path):
                key = photo_key(path, cfg.data_dir)
                salted = key if draw is None else f"{draw}:{key}"
                digest = hashlib.blake2b(salted.encode(), digest_size=8).digest()
                if int.from_bytes(digest, "big") / 2**64 >= share:
                    return 0
                return _kept_reads(share)
        return 1

    return reads


def _kept_reads(share: float) -> int:
    """How many times ``--subset`` reads a photo it keeps at fraction ``share``."""
    return max(1, round(1 / share))


def holdout_rule(cfg: TrainConfig) -> Callable[[str], bool] | None:
    """Whether an image path is held out, from ``--holdout`` (a regular expression searched
    in the path) and ``--holdout-file`` (paths relative to the data folder, one per line,
    matched as the path's last components); None when neither is given."""
    pattern = re.compile(cfg.holdout) if cfg.holdout else None
    listed: set[str] = set()
    if cfg.holdout_file:
        with open(cfg.holdout_file) as f:
            listed = {line.strip().strip("/") for line in f if line.strip() and not line.startswith("#")}
    if pattern is None and not listed:
        return None
    depth = max((name.count("/") + 1 for name in listed), default=0)

    def rule(path: str) -> bool:
        if pattern is not None and pattern.search(path):
            return True
        parts = path.replace("\\", "/").split("/")
        return any("/".join(parts[-k:]) in listed for k in range(1, min(depth, len(parts)) + 1))

    return rule


def _repeated(rows, cfg: TrainConfig):
    """The rows with each photo read ``row_repeats`` times per pass: the extra reads are
    appended as filtered copies of the rows, and the shuffle buffer scatters them through
    the pass, so that repeated photos do not fill whole batches (BatchNorm statistics,
    gradient noise)."""
    rules = parse_repeat(cfg.repeat) if cfg.repeat else []
    subset = subset_rule(cfg)
    kept = max(_kept_reads(share) for _, share in parse_subset(cfg.subset)) if subset else 1
    most = max((n for _, n in rules), default=1) * cfg.large_repeats * kept
    if most <= 1:
        return rows

    def reads(image: Any) -> int:
        n = 1
        if rules:
            n = max((count for pattern, count in rules if pattern.search(_path_of(image, "--repeat"))), default=1)
        if subset is not None:
            n *= subset(_path_of(image, "--subset"))
        if cfg.large_repeats > 1:
            try:  # header only: no decoding
                if min(row_image_size(image)) >= cfg.multiscale_min_side:
                    n *= cfg.large_repeats
            except ImageError:  # not repeated; the training loop counts it as unreadable
                pass
        return n

    extra = [rows.filter(lambda image, k=k: reads(image) > k, input_columns=[cfg.image_column]) for k in range(1, most)]
    return datasets.concatenate_datasets([rows, *extra])


# ----------------------------------------------------------------------------- labels
class LabelRule:
    """The label index of a training row (``--labels``): its ``--label-column`` class, or the
    group a regular expression captures in its path; -1 when it has none (the photo then
    counts only for colour). Picklable, for the DataLoader's workers.

    Attributes:
        names: the labels, in index order (stored in the model's config).
    """

    def __init__(self, cfg: TrainConfig, names: list[str], class_label: bool):
        self.names = names
        self.column, self.image_column = cfg.label_column, cfg.image_column
        self.pattern = None if cfg.labels == "column" else re.compile(cfg.labels)
        self.class_label = class_label  # the column holds class indices in ``names``' order
        self.index = {name: i for i, name in enumerate(names)}

    def __call__(self, row: dict) -> int:
        if self.pattern is None:
            value = row.get(self.column)
            if self.class_label and isinstance(value, (int, np.integer)):
                return int(value) if 0 <= value < len(self.names) else -1
            return self.index.get(str(value), -1) if value is not None else -1
        found = self.pattern.search(cell_path(row.get(self.image_column)) or "")
        return self.index.get(found.group(1), -1) if found else -1


def label_rule(cfg: TrainConfig) -> LabelRule | None:
    """The ``LabelRule`` of ``--labels`` with its label names read from the training rows
    (the column's class names, or every value the pattern captures, sorted); None without
    ``--labels``. Reads paths and labels only, no pixels.

    Raises:
        ValueError: no label column, or fewer than two labels found.
    """
    if not cfg.labels:
        return None
    rows = open_rows(cfg)
    if cfg.labels == "column":
        feature = (rows.features or {}).get(cfg.label_column)
        if isinstance(feature, datasets.ClassLabel):
            names, class_label = list(feature.names), True
        else:
            if rows.features is not None and cfg.label_column not in rows.features:
                raise ValueError(f"--labels column: the data set has no {cfg.label_column!r} column "
                                 f"(columns: {sorted(rows.features)}); set --label-column")
            values = {r[cfg.label_column] for r in rows.select_columns([cfg.label_column])}
            names, class_label = sorted(str(v) for v in values if v is not None), False
    else:
        pattern = re.compile(cfg.labels)
        found = (pattern.search(cell_path(r[cfg.image_column]) or "") for r in rows.select_columns([cfg.image_column]))
        names, class_label = sorted({m.group(1) for m in found if m}), False
    if len(names) < 2:
        raise ValueError(f"--labels {cfg.labels!r}: found {len(names)} label(s) in the training photos ({names}); "
                         "a label head needs at least two")
    return LabelRule(cfg, names, class_label)


# ----------------------------------------------------------------------------- crops
def train_crops(img: Image.Image, rng: np.random.Generator, cfg: TrainConfig) -> list[np.ndarray]:
    """Random training crops of one RGB photo: ``(crop, crop, 3)`` uint8 arrays.

    Photos with a short side below ``multiscale_min_side`` give one crop: the photo
    resized so its short side is ``resize``, then a random ``crop`` square (done in
    one resampling, as a box of the original). Larger photos give ``large_crops``
    multi-scale crops: a random square whose side is drawn log-uniformly between
    ``crop`` and the short side, resized to ``crop``. Each crop is flipped
    horizontally with probability 1/2 when ``flip``.
    """
    w, h = img.size
    s = min(w, h)
    if s >= cfg.multiscale_min_side:
        lo, hi = math.log(min(cfg.crop, s)), math.log(s)
        sides = [math.exp(rng.uniform(lo, hi)) for _ in range(cfg.large_crops)]
    else:
        sides = [cfg.crop * s / cfg.resize]
    out = []
    for side in sides:
        x0 = rng.uniform(0, w - side)
        y0 = rng.uniform(0, h - side)
        patch = img.resize((cfg.crop, cfg.crop), Image.BILINEAR, box=(x0, y0, x0 + side, y0 + side))
        arr = np.asarray(patch)
        if cfg.flip and rng.random() < 0.5:
            arr = arr[:, ::-1]
        out.append(np.ascontiguousarray(arr))
    return out


def val_crop(img: Image.Image, size: int) -> np.ndarray:
    """The centre square of a photo resized to ``(size, size, 3)`` uint8 (deterministic)."""
    w, h = img.size
    s = min(w, h)
    box = ((w - s) / 2, (h - s) / 2, (w + s) / 2, (h + s) / 2)
    return np.asarray(img.convert("RGB").resize((size, size), Image.BILINEAR, box=box))


def usable(img: Image.Image, cfg: TrainConfig, skipped: collections.Counter) -> Image.Image | None:
    """The photo as RGB if it can be trained on, else None with the reason counted:
    "tiny" (short side under ``min_size``) or "grayscale" (``colorizer.images.is_grayscale``:
    a gray mode, or a 32x32 thumbnail whose mean channel spread is at most ``gray_threshold``)."""
    if min(img.size) < cfg.min_size:
        skipped["tiny"] += 1
        return None
    if img.mode not in ("RGB", "RGBA") and is_grayscale(img):  # L, LA, F, ...: no colour at all
        skipped["grayscale"] += 1
        return None
    rgb = img.convert("RGB") if img.mode != "RGB" else img
    thumb = np.asarray(rgb.resize((32, 32), Image.BILINEAR)) if max(rgb.size) > 64 else np.asarray(rgb)
    if is_grayscale(thumb, cfg.gray_threshold):  # a black-and-white photo stored as colour
        skipped["grayscale"] += 1
        return None
    return rgb


# ----------------------------------------------------------------------------- stream
@dataclass
class Position:
    """Where a worker's stream is: pass over the data, next row, crops of that row used."""

    epoch: int = 0
    row: int = 0
    crop: int = 0

    def as_list(self) -> list[int]:
        return [self.epoch, self.row, self.crop]


class PhotoStream(torch.utils.data.IterableDataset):
    """An endless stream of ``(B, crop, crop, 3)`` uint8 training batches.

    Args:
        rows: the training rows (``open_rows(cfg)``), images still encoded.
        cfg: the run's configuration (crop, flips, thresholds, batch size, seed).
        rank, world_size: this process among the data-parallel processes.
        num_workers: DataLoader workers of this process (0: the main process).
        positions: resume state: global worker id -> [epoch, row, crop].
        skipped: resume state: global worker id -> counts of skipped photos.
        offset: resumed loaders start with worker ``offset`` in the round-robin.
        labels: the ``LabelRule`` of ``--labels``; batches then carry each crop's label.
    """

    def __init__(
        self,
        rows,
        cfg: TrainConfig,
        rank: int = 0,
        world_size: int = 1,
        num_workers: int = 0,
        positions: dict[int, list[int]] | None = None,
        skipped: dict[int, dict] | None = None,
        offset: int = 0,
        labels: LabelRule | None = None,
    ):
        super().__init__()
        self.rows, self.cfg, self.labels = rows, cfg, labels
        self.rank, self.world_size = rank, world_size
        self.slots = max(1, num_workers)
        self.positions = positions or {}
        self.skipped = skipped or {}
        self.offset = offset

    def global_id(self, worker: int) -> int:
        return self.rank * self.slots + (worker + self.offset) % self.slots

    def _my_rows(self, gid: int, epoch: int) -> Iterator[tuple[int, dict]]:
        """(row index, row) of this worker's share of one pass; indices count every row
        the worker reads, so skipping them on resume needs no decoding."""
        total = self.world_size * self.slots
        rows = self.rows
        by_shard = rows.num_shards >= total and total > 1
        if by_shard:
            rows = rows.shard(num_shards=total, index=gid, contiguous=False)
        if self.cfg.shuffle_buffer > 0:
            # the same seed in every worker when striding rows, so the shares do not overlap
            rows = rows.shuffle(seed=self.cfg.seed + (gid if by_shard else 0), buffer_size=self.cfg.shuffle_buffer)
            rows.set_epoch(epoch)
        i = 0
        # .iter() reads rows without datasets' own per-worker split (we did ours above)
        for chunk in rows.iter(batch_size=_ROWS_PER_READ):
            n = len(next(iter(chunk.values())))
            for j in range(n):
                if by_shard or total == 1 or (i % total) == gid:
                    yield i, {k: v[j] for k, v in chunk.items()}
                i += 1

    def __iter__(self) -> Iterator[dict]:
        info = torch.utils.data.get_worker_info()
        gid = self.global_id(info.id if info is not None else 0)
        cfg = self.cfg
        pos = Position(*self.positions.get(gid, [0, 0, 0]))
        skipped = collections.Counter(self.skipped.get(gid, {}))
        pending: list[tuple[int, int, int, int, str, np.ndarray]] = []  # (epoch, row, crop index, label, photo, crop)
        epoch = pos.epoch
        while True:
            produced = 0
            for i, row in self._my_rows(gid, epoch):
                if epoch == pos.epoch and i < pos.row:
                    continue  # resuming: already trained on
                # skipped photos are counted on the first pass only: counts of distinct photos
                crops = self._crops(row, gid, epoch, i, skipped if epoch == 0 else collections.Counter())
                first = pos.crop if (epoch == pos.epoch and i == pos.row) else 0
                label = self.labels(row) if self.labels is not None and crops else -1
                source = photo_key(cell_path(row.get(cfg.image_column)) or "", cfg.data_dir) if crops else ""
                pending.extend((epoch, i, c, label, source, crop) for c, crop in enumerate(crops) if c >= first)
                produced += len(crops)
                while len(pending) >= cfg.batch_size:
                    batch, pending = pending[: cfg.batch_size], pending[cfg.batch_size :]
                    nxt = Position(*pending[0][:3]) if pending else Position(epoch, i + 1, 0)
                    yield self._batch(batch, gid, nxt, skipped)
            if produced == 0 and not (epoch == pos.epoch and pos.row > 0):
                raise RuntimeError(
                    f"data worker {gid}: no usable photo in its share of the data (skipped: {dict(skipped)}); "
                    "check the data set and class filter, or use fewer --num-workers"
                )
            epoch += 1

    def _crops(self, row: dict, gid: int, epoch: int, i: int, skipped: collections.Counter) -> list[np.ndarray]:
        cfg = self.cfg
        if cfg.image_column not in row:
            raise ValueError(f"rows have no image column {cfg.image_column!r}; columns: {sorted(row)}")
        try:
            img = decode_row_image(row[cfg.image_column], cfg.max_pixels)
        except ImageError as e:
            skipped["unreadable"] += 1
            logger.debug("skipped: %s", e)
            return []
        rgb = usable(img, cfg, skipped)
        if rgb is None:
            return []
        rng = np.random.default_rng((cfg.seed, gid, epoch, i))
        # a crop of plain background can be colourless in a colour photo: drop it
        return [c for c in train_crops(rgb, rng, cfg) if not is_grayscale(c, cfg.gray_threshold / 2)]

    def _batch(self, batch, gid: int, nxt: Position, skipped: collections.Counter) -> dict:
        rgb = torch.from_numpy(np.stack([c[-1] for c in batch]))  # (B, S, S, 3) uint8
        item = {"rgb": rgb, "worker": gid, "position": nxt.as_list(), "skipped": dict(skipped),
                "sources": [c[4] for c in batch]}
        if self.labels is not None:
            item["labels"] = torch.tensor([c[3] for c in batch], dtype=torch.long)  # (B,), -1: none
        return item


def _ignore_sigint(worker_id: int) -> None:
    """DataLoader workers ignore Ctrl-C: the main process finishes its step, writes a
    checkpoint and then stops them (a worker killed by the terminal's SIGINT would
    turn the clean stop into a "worker exited unexpectedly" error)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class TrainBatches:
    """The training batches of one process, with the state needed to resume exactly.

    Iterating yields ``(B, S, S, 3)`` uint8 tensors (pinned when ``pin_memory``);
    with ``labels`` (a ``LabelRule``), ``last_labels`` holds the last batch's ``(B,)``
    label indices (-1: none); ``last_sources`` names the photo of each of its crops
    (``photo_key``). ``wait_s`` accumulates the time spent waiting for them;
    ``state_dict()`` is JSON-ready and ``TrainBatches(..., state=...)`` continues where
    it stopped.
    """

    def __init__(
        self,
        rows,
        cfg: TrainConfig,
        rank: int = 0,
        world_size: int = 1,
        pin_memory: bool = False,
        state: dict | None = None,
        labels: LabelRule | None = None,
    ):
        state = state or {}
        if state.get("kind") == "cached":
            raise ValueError("resume: the checkpoint's data position is of cached features (--features), not of "
                             "photos; resume with the settings it was made with, or start a new --out")
        slots = max(1, cfg.num_workers)
        if state and state.get("slots", slots) != slots:
            raise ValueError(
                f"resume: the checkpoint was made with --num-workers {state['slots']}, got {cfg.num_workers}; "
                "use the same number to resume exactly"
            )
        self.cfg, self.slots = cfg, slots
        self.batches = int(state.get("batches", 0))
        self.positions = {int(k): v for k, v in state.get("positions", {}).items()}
        self.skipped = {int(k): v for k, v in state.get("skipped", {}).items()}
        self.stream = PhotoStream(
            rows, cfg, rank, world_size, cfg.num_workers, self.positions, self.skipped, offset=self.batches % slots,
            labels=labels,
        )
        self.last_labels: torch.Tensor | None = None
        self.last_sources: list[str] = []  # each crop's photo (``photo_key``; "" when rows have no paths)
        self.loader = torch.utils.data.DataLoader(
            self.stream,
            batch_size=None,
            num_workers=cfg.num_workers,
            pin_memory=pin_memory,
            prefetch_factor=4 if cfg.num_workers > 0 else None,
            persistent_workers=cfg.num_workers > 0,
            worker_init_fn=_ignore_sigint,
        )
        self.wait_s = 0.0
        self._it: Iterator | None = None

    def __iter__(self):
        return self

    def __next__(self) -> torch.Tensor:
        import time

        if self._it is None:
            self._it = iter(self.loader)
        t0 = time.perf_counter()
        item = next(self._it)
        self.wait_s += time.perf_counter() - t0
        self.batches += 1
        self.positions[int(item["worker"])] = [int(x) for x in item["position"]]
        self.skipped[int(item["worker"])] = dict(item["skipped"])
        self.last_labels = item.get("labels")
        self.last_sources = list(item["sources"])
        return item["rgb"]

    def skipped_total(self) -> dict[str, int]:
        """Photos skipped so far by all workers of this process, by reason."""
        total: collections.Counter = collections.Counter()
        for counts in self.skipped.values():
            total.update(counts)
        return dict(total)

    def state_dict(self) -> dict:
        return {
            "batches": self.batches,
            "slots": self.slots,
            "positions": {str(k): v for k, v in self.positions.items()},
            "skipped": {str(k): v for k, v in self.skipped.items()},
        }


def load_val_images(
    rows, cfg: TrainConfig, skipped: collections.Counter | None = None, names: list[str] | None = None
) -> torch.Tensor:
    """The first ``val_images`` usable validation photos as ``(N, S, S, 3)`` uint8 centre
    crops; ``names``, when given, gets each kept photo's path ("" where the row has none)."""
    from train.sources import iter_images

    counts = skipped if skipped is not None else collections.Counter()
    current = {"path": ""}

    def tapped(source):  # iter_images yields a row's image before it reads the next row
        for row in source:
            cell = row.get(cfg.image_column)
            current["path"] = (cell if isinstance(cell, str) else cell_path(cell)) or ""
            yield row

    crops = []
    for img, _ in iter_images(tapped(rows), cfg.image_column, cfg.label_column, skipped=counts,
                              max_pixels=cfg.max_pixels):
        rgb = usable(img, cfg, counts)
        if rgb is None:
            continue
        crops.append(val_crop(rgb, cfg.val_size))
        if names is not None:
            names.append(current["path"])
        if len(crops) >= cfg.val_images:
            break
    if not crops:
        raise ValueError(f"the validation data has no usable photo (skipped: {dict(counts)})")
    return torch.from_numpy(np.stack(crops))
