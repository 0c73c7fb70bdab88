"""Cache the frozen DINOv2 trunk's features of many augmented training crops, once.

    python -m train.features --config-file train/configs/dinov2.yaml --features /work/features/dinov2-224

With the trunk frozen, its features of a crop never change: the crops (random scales,
places and flips, the non-food photos read more often, exactly as ``python -m train``
draws them: ``train.data.TrainBatches``) go through the encoder once, and the decoder's
epochs read them back from disk, so that a decoder step costs the decoder alone.

The folder holds shards ``shard_NNNNN/``, each with ``rgb.npy`` (``(n, S, S, 3)`` uint8: the
crop, from which L and the target ab are made), ``block_K.npy`` per read block (``(n, 384,
h, w)`` float16 token maps) and ``cls.npy`` (``(n, 384)`` float16), and ``meta.json`` (the
trunk, its size and blocks, the crop, shards written, and the data stream's position after
the last one). For training the encoder's last blocks (``--trunk-tune``), a shard also holds
``class_block_K.npy`` (``(n, 384)`` float16), the class token of block K's output, where
the tuned blocks start (their input is that token and block K's patch tokens); the same
command with ``--trunk-tune`` adds it to the shards already written (from their crops,
checked against their cached patch tokens). ``sources.json`` names each crop's photo
(its path under the data folder), which ``--subset`` runs need; to a cache made without
it the same command adds it by drawing the crops again (the photos decoded, no encoder),
each checked byte for byte against the cached one. An interrupted run resumes where it stopped; more ``--feature-crops`` extend
a finished cache. Shards are written whole (to a temporary name, then renamed), so a reader
sees only complete ones.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import time
from functools import partial
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from colorizer.errors import report_error
from colorizer.images import write_atomically
from train.config import TrainConfig, parse_args

__all__ = ["FeatureCache", "CachedBatches", "cache_meta", "add_sources", "build_cache", "main"]

logger = logging.getLogger("train.features")
SHARD = 256  # crops per shard (at least)


def parse_blocks(spec: str) -> tuple[int, ...]:
    try:
        blocks = tuple(int(b) for b in spec.split(",") if b.strip())
    except ValueError:
        raise ValueError(f"--trunk-blocks {spec!r}: comma-separated block numbers, e.g. 4,8,12") from None
    if not blocks:
        raise ValueError(f"--trunk-blocks {spec!r}: no block")
    return blocks


def _depth(trunk: str) -> int:
    """How many blocks the encoder ``trunk`` has."""
    from colorizer.dinov2 import TRUNKS

    return TRUNKS[trunk]["num_hidden_layers"]


def tune_start(cfg: TrainConfig) -> int | None:
    """The block after which ``--trunk-tune``'s blocks start (None: none tuned)."""
    return _depth(cfg.trunk) - cfg.trunk_tune if cfg.trunk_tune else None


def cache_meta(cfg: TrainConfig) -> dict:
    """What a cache's features depend on: a cache is only read or extended with these settings."""
    return {"trunk": cfg.trunk, "trunk_size": cfg.trunk_size, "blocks": list(parse_blocks(cfg.trunk_blocks)),
            "crop": cfg.crop}


class FeatureCache:
    """The complete shards of a cache folder, read through memory maps.

    ``len(cache)`` crops; ``cache.batch(index)`` gives ``(rgb, maps, cls)`` for an array of
    crop indices: ``(B, S, S, 3)`` uint8, a list of ``(B, 384, h, w)`` float32 maps (one per
    block) and ``(B, 384)`` float32. With ``start_block`` K, only the shards that hold K's
    class tokens are read (they come first), and each batch has a fourth item: the tokens
    ``(B, 1 + h w, 384)`` of block K's output, class token first (``DinoTrunk.retune``'s).
    """

    def __init__(self, folder: str | Path, expect: dict | None = None, start_block: int | None = None):
        self.folder = Path(folder)
        meta_path = self.folder / "meta.json"
        if not meta_path.is_file():
            raise FileNotFoundError(f"{self.folder}: no feature cache here (make one with python -m train.features)")
        self.meta = json.loads(meta_path.read_text())
        if expect is not None:
            differ = {k: (self.meta.get(k), v) for k, v in expect.items() if self.meta.get(k) != v}
            if differ:
                raise ValueError(f"{self.folder}: the cache was made with other settings: " + ", ".join(
                    f"{k} {a!r} (this run: {b!r})" for k, (a, b) in differ.items()))
        shards = sorted(p for p in self.folder.glob("shard_*") if p.is_dir() and not p.name.endswith(".tmp"))
        if not shards:
            raise ValueError(f"{self.folder}: the cache has no complete shard yet")
        blocks = self.meta["blocks"]
        self.start = None
        if start_block is not None:
            if start_block not in blocks:
                raise ValueError(f"{self.folder}: the tuned blocks start after block {start_block}, whose tokens the "
                                 f"cache does not hold (blocks {blocks})")
            self.start = blocks.index(start_block)
            kept = [s for s in shards if (s / f"class_block_{start_block}.npy").is_file()]
            if not kept:
                tune = _depth(self.meta["trunk"]) - start_block
                raise ValueError(f"{self.folder}: no class tokens of block {start_block} in its first shard; add them "
                                 f"with python -m train.features --trunk-tune {tune}")
            if kept != shards[:len(kept)]:
                raise ValueError(f"{self.folder}: the shards with class tokens of block {start_block} are not the "
                                 "first ones; run python -m train.features again")
            if len(kept) < len(shards):  # a cache extended without the tuned blocks' start
                logger.warning("%s: %d of its %d shards hold class tokens of block %d: the other %d are not read "
                               "(python -m train.features with --trunk-tune adds them)", self.folder, len(kept),
                               len(shards), start_block, len(shards) - len(kept))
            shards = kept
            self.start_cls = [np.load(s / f"class_block_{start_block}.npy", mmap_mode="r") for s in shards]
        self.sources: list[str] | None = None  # each crop's photo, when every shard records them
        if all((s / "sources.json").is_file() for s in shards):
            self.sources = [name for s in shards for name in json.loads((s / "sources.json").read_text())]
        self.rgb = [np.load(s / "rgb.npy", mmap_mode="r") for s in shards]
        self.maps = [[np.load(s / f"block_{b}.npy", mmap_mode="r") for b in blocks] for s in shards]
        self.cls = [np.load(s / "cls.npy", mmap_mode="r") for s in shards]
        sizes = np.array([len(r) for r in self.rgb])
        self.starts = np.concatenate([[0], np.cumsum(sizes)])
        if self.sources is not None and len(self.sources) != len(self):
            raise ValueError(f"{self.folder}: its sources.json files name {len(self.sources)} photos for {len(self)} "
                             "crops; remove them and run python -m train.features again")

    def __len__(self) -> int:
        return int(self.starts[-1])

    def batch(self, index: np.ndarray) -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor]:
        shard = np.searchsorted(self.starts, index, side="right") - 1
        local = index - self.starts[shard]
        rgb = np.stack([self.rgb[s][i] for s, i in zip(shard, local)])
        maps = [torch.from_numpy(np.stack([self.maps[s][k][i] for s, i in zip(shard, local)])).float()
                for k in range(len(self.meta["blocks"]))]
        cls = torch.from_numpy(np.stack([self.cls[s][i] for s, i in zip(shard, local)])).float()
        if self.start is None:
            return torch.from_numpy(rgb), maps, cls
        first = torch.from_numpy(np.stack([self.start_cls[s][i] for s, i in zip(shard, local)])).float()
        patches = maps[self.start].flatten(2).transpose(1, 2)  # (B, h w, 384)
        return torch.from_numpy(rgb), maps, cls, torch.cat([first[:, None], patches], dim=1)


class CachedBatches:
    """Training batches from a ``FeatureCache``: each pass over its crops in a new random
    order (seeded by the run's seed and the pass; process ``rank`` of ``world_size`` takes
    every world_size-th crop of it), ``batch_size`` at a time. Yields ``(rgb, maps, cls)`` as
    ``FeatureCache.batch``; ``state_dict()`` / ``state=`` resume at the same batch, as
    ``train.data.TrainBatches`` do (a state of the other kind is refused). With
    ``--subset``, a pass reads the crops of the kept photos ``train.data.subset_rule``'s
    number of times each and those of the others not at all (the cache must name its
    crops' photos)."""

    def __init__(self, cache: FeatureCache, cfg: TrainConfig, rank: int = 0, world_size: int = 1,
                 state: dict | None = None):
        if len(cache) < cfg.batch_size * world_size:
            raise ValueError(f"{cache.folder}: {len(cache)} cached crops, fewer than a batch of every process "
                             f"({cfg.batch_size} x {world_size})")
        if state and "positions" in state:  # train.data.TrainBatches' state (older cached states have no "kind")
            raise ValueError("resume: the checkpoint's data position is of photos read from --data-dir, not of "
                             "cached features; resume with the settings it was made with, or start a new --out")
        state = state or {}
        self.rank, self.world_size = rank, world_size
        self.cache, self.batch_size, self.seed = cache, cfg.batch_size, cfg.seed
        self.epoch, self.position = int(state.get("epoch", 0)), int(state.get("position", 0))
        self.batches = int(state.get("batches", 0))
        self.size = int(state.get("size", len(cache)))  # a resumed run keeps the crops it started with
        if self.size > len(cache):
            raise ValueError(f"{cache.folder}: the checkpoint read {self.size} cached crops, the cache has {len(cache)}")
        self.subset = [cfg.subset, cfg.subset_seed] if cfg.subset else None
        if state and state.get("subset") != self.subset:
            raise ValueError(f"resume: the checkpoint read the cache with --subset {state.get('subset')}, this run "
                             f"with {self.subset}; resume with the settings it was made with, or start a new --out")
        self.index = np.arange(self.size)
        if cfg.subset:
            from train.data import photo_path, subset_rule

            if cache.sources is None:
                raise ValueError(f"{cache.folder}: the cache does not name its crops' photos, which --subset needs; "
                                 "python -m train.features with the cache's settings adds them")
            reads = subset_rule(cfg)
            self.index = np.repeat(self.index, [reads(photo_path(name, cfg.data_dir))
                                                for name in cache.sources[:self.size]])
            if len(self.index) < cfg.batch_size * world_size:
                raise ValueError(f"--subset {cfg.subset!r} keeps {len(self.index)} crop reads of the cache's "
                                 f"{self.size}, fewer than a batch of every process")
        self.wait_s = 0.0
        self.last_labels = None

    def photos(self) -> list[str]:
        """The distinct photos (``train.data.photo_key``) whose crops a pass reads."""
        return sorted({self.cache.sources[i] for i in self.index}) if self.cache.sources is not None else []

    def _order(self) -> np.ndarray:
        order = self.index[np.random.default_rng([self.seed, self.epoch]).permutation(len(self.index))]
        return order[self.rank :: self.world_size]

    def __iter__(self):
        return self

    def __next__(self):
        t0 = time.perf_counter()
        if self.position + self.batch_size > len(self.index) // self.world_size:
            self.epoch, self.position = self.epoch + 1, 0
        index = np.sort(self._order()[self.position : self.position + self.batch_size])  # sorted: sequential reads
        self.position += self.batch_size
        self.batches += 1
        out = self.cache.batch(index)
        self.wait_s += time.perf_counter() - t0
        return out

    def skipped_total(self) -> dict[str, int]:
        return {}

    def state_dict(self) -> dict:
        return {"kind": "cached", "epoch": self.epoch, "position": self.position, "batches": self.batches,
                "size": self.size, "subset": self.subset}


def _write_shard(folder: Path, rgb: list[np.ndarray], maps: list[list[np.ndarray]], cls: list[np.ndarray],
                 blocks: list[int], sources: list[str], start: tuple[int, list[np.ndarray]] | None = None) -> None:
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    np.save(tmp / "rgb.npy", np.concatenate(rgb))
    (tmp / "sources.json").write_text(json.dumps(sources) + "\n")
    for k, b in enumerate(blocks):
        np.save(tmp / f"block_{b}.npy", np.concatenate([m[k] for m in maps]))
    np.save(tmp / "cls.npy", np.concatenate(cls))
    if start is not None:
        np.save(tmp / f"class_block_{start[0]}.npy", np.concatenate(start[1]))
    tmp.rename(folder)


def _save_npy(array: np.ndarray, path: Path) -> None:
    """``array`` as ``.npy`` at ``path`` as it is (``np.save`` of a name would add ``.npy``)."""
    with open(path, "wb") as f:
        np.save(f, array)


def _class_tokens(trunk, l: torch.Tensor, block: int) -> tuple[np.ndarray, torch.Tensor]:
    """The class tokens ``(B, 384)`` float16 of ``block``'s output for L ``(B, 1, S, S)``, and
    its patch tokens as a ``(B, 384, h, w)`` map (to check against a shard's)."""
    from colorizer.dinov2 import PATCH, token_map

    pixels = trunk.pixels(trunk.resize(l))
    tokens = trunk.tokens(pixels, block)
    return tokens[:, 0].half().numpy(), token_map(tokens, (pixels.shape[-2] // PATCH, pixels.shape[-1] // PATCH))


@torch.no_grad()
def add_class_tokens(folder: Path, trunk, block: int, shards: list[Path], batch_size: int = 32) -> None:
    """Add ``class_block_K.npy`` to written shards that lack it, from their crops; each
    shard's first crops are checked against its cached block-K patch tokens (the same crops
    and encoder, or the file is not written)."""
    from train.loop import to_lab

    todo = [s for s in shards if not (s / f"class_block_{block}.npy").is_file()]
    bar = tqdm(total=len(todo), desc=f"class tokens of block {block}", unit="shard", dynamic_ncols=True)
    for shard in todo:
        rgb = np.load(shard / "rgb.npy", mmap_mode="r")
        cached = np.load(shard / f"block_{block}.npy", mmap_mode="r")
        out = []
        for i in range(0, len(rgb), batch_size):
            l, _, _ = to_lab(torch.from_numpy(np.array(rgb[i:i + batch_size])))
            first, patches = _class_tokens(trunk, l, block)
            if i == 0:
                want = torch.from_numpy(np.array(cached[:len(l)])).float()
                err = (patches - want).abs().max().item()
                if err > 0.02 * want.abs().max().item() + 1e-2:
                    raise ValueError(f"{shard}: its cached block-{block} tokens differ from the encoder's by {err:.3g}; "
                                     "the cache was made with another encoder or settings")
            out.append(first)
        write_atomically(shard / f"class_block_{block}.npy", partial(_save_npy, np.concatenate(out)))
        bar.update(1)
    bar.close()


def add_sources(cfg: TrainConfig, shards: list[Path]) -> None:
    """Write ``sources.json`` (each crop's photo) into written shards that lack it, by
    drawing the crops again from the start of the data stream (photos decoded and
    cropped, no encoder): every drawn crop must equal the cached one byte for byte, or
    nothing more is written (the cache was made from other photos or settings)."""
    from train.data import TrainBatches, open_rows

    if all((s / "sources.json").is_file() for s in shards):
        return
    last = max(k for k, s in enumerate(shards) if not (s / "sources.json").is_file())
    total = sum(len(np.load(s / "rgb.npy", mmap_mode="r")) for s in shards[:last + 1])
    batches = TrainBatches(open_rows(cfg, "train"), cfg)
    bar = tqdm(total=total, desc="photos of the cached crops", unit="crop", dynamic_ncols=True)
    drawn: list[np.ndarray] = []
    names: list[str] = []
    for shard in shards[:last + 1]:
        rgb = np.load(shard / "rgb.npy", mmap_mode="r")
        while sum(len(d) for d in drawn) < len(rgb):
            drawn.append(next(batches).numpy())
            names.extend(batches.last_sources)
            bar.update(len(drawn[-1]))
        crops = np.concatenate(drawn)
        if len(crops) != len(rgb) or not np.array_equal(crops, rgb):
            raise ValueError(f"{shard}: the crops drawn again differ from the cached ones; the cache was made from "
                             "other photos or data settings (--data-dir, --repeat, --seed, --crop, ...)")
        if not (shard / "sources.json").is_file():
            write_atomically(shard / "sources.json", lambda path, n=names: Path(path).write_text(json.dumps(n) + "\n"))
        drawn, names = [], []
    bar.close()


@torch.no_grad()
def build_cache(cfg: TrainConfig) -> Path:
    """Encode crops until the cache holds ``cfg.feature_crops`` (resuming a partial cache)."""
    from colorizer.dinov2 import DinoTrunk
    from train.data import TrainBatches, open_rows
    from train.loop import to_lab

    if cfg.trunk != "dinov2-small":
        raise ValueError(f"feature caching is for the pretrained trunk (--trunk dinov2-small), got --trunk {cfg.trunk}")
    if cfg.subset:
        raise ValueError("a feature cache holds crops of all the training photos: give --subset to the training runs "
                         "that read it, not to python -m train.features")
    if not cfg.features:
        raise ValueError("give the cache folder with --features DIR")
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    folder = Path(cfg.features)
    folder.mkdir(parents=True, exist_ok=True)
    meta_path = folder / "meta.json"
    want = cache_meta(cfg)
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {**want, "shards": 0, "crops": 0,
                                                                           "data_state": None, "seconds": 0.0}
    differ = [k for k in want if meta.get(k) != want[k]]
    if differ:
        raise ValueError(f"{folder}: the cache was made with other {', '.join(differ)}; use another --features folder")
    for stale in folder.glob("shard_*.tmp"):  # a shard that was being written when the last run stopped
        shutil.rmtree(stale)
    for extra in sorted(folder.glob("shard_*"))[meta["shards"]:]:  # written but not recorded: redone
        shutil.rmtree(extra)
    torch.manual_seed(cfg.seed)
    trunk = DinoTrunk(cfg.trunk, parse_blocks(cfg.trunk_blocks), cfg.trunk_size, tune=cfg.trunk_tune).eval()
    start = tune_start(cfg)
    if start is not None:  # the shards written before, up to the crops asked for, get the tuned blocks' start
        shards = sorted(folder.glob("shard_*"))
        sizes = np.cumsum([len(np.load(s / "rgb.npy", mmap_mode="r")) for s in shards])
        add_class_tokens(folder, trunk, start, shards[:int(np.searchsorted(sizes, cfg.feature_crops)) + 1])
    add_sources(cfg, sorted(p for p in folder.glob("shard_*") if p.is_dir()))
    rows = open_rows(cfg, "train")
    batches = TrainBatches(rows, cfg, state=meta["data_state"])
    bar = tqdm(total=cfg.feature_crops, initial=meta["crops"], desc="encode", unit="crop", dynamic_ncols=True)
    rgb, maps, cls, firsts, sources = [], [], [], [], []
    t0 = time.perf_counter()

    def flush() -> None:
        """The crops encoded since the last shard as a new shard, and where the stream is."""
        nonlocal t0
        _write_shard(folder / f"shard_{meta['shards']:05d}", rgb, maps, cls, want["blocks"], sources,
                     None if start is None else (start, firsts))
        meta["shards"] += 1
        meta["crops"] += sum(len(r) for r in rgb)
        meta["data_state"] = batches.state_dict()
        meta["seconds"] += time.perf_counter() - t0
        meta["crops_per_s"] = meta["crops"] / meta["seconds"]
        tmp = meta_path.with_name("meta.json.tmp")
        tmp.write_text(json.dumps(meta, indent=1) + "\n")
        os.replace(tmp, meta_path)  # whole or not at all, like the shards
        t0 = time.perf_counter()
        rgb.clear(), maps.clear(), cls.clear(), firsts.clear(), sources.clear()

    while meta["crops"] + sum(len(r) for r in rgb) < cfg.feature_crops:
        batch = next(batches)  # (B, S, S, 3) uint8
        l, _, _ = to_lab(batch)
        if start is None:
            m, c = trunk(l)
        else:  # the same pass gives block K's class token
            m, c, first = trunk.encode_from(l, start)
            firsts.append(first.half().numpy())
        rgb.append(batch.numpy())
        sources.extend(batches.last_sources)
        maps.append([x.half().numpy() for x in m])
        cls.append(c.half().numpy())
        bar.update(len(batch))
        if sum(len(r) for r in rgb) >= SHARD:
            flush()
    if rgb:
        flush()
    bar.close()
    return folder


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for noisy in ("datasets", "httpx", "huggingface_hub", "fsspec", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        cfg = parse_args(argv)
        folder = build_cache(cfg)
    except KeyboardInterrupt:
        print("interrupted: the complete shards are kept; run the same command to go on", file=sys.stderr)
        return 130
    except (ValueError, OSError, RuntimeError) as e:
        return report_error("train.features", str(e))
    print(f"cache: {folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
