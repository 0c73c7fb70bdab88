"""The training configuration: one typed dataclass, filled from defaults, a config file
(YAML or JSON) and the command line, in that order. The resolved configuration is
written into the run folder (``config.json``) so a run can be repeated exactly with
``python -m train --config-file runs/NAME/config.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path

from colorizer.bins import PAPER_TEMPERATURE

__all__ = ["TrainConfig", "model_settings", "MODEL_ONLY", "parse_args", "load_config_file", "parse_repeat", "parse_subset", "parse_groups"]


def _opt(default, help: str, **kw):
    return field(default=default, metadata={"help": help, **kw})


@dataclass
class TrainConfig:
    """Every setting of a training run (``python -m train --help`` lists them)."""

    # ---------------------------------------------------------------- data
    dataset: str = _opt(
        "imagefolder",
        "Hub data set id (frgfm/imagenette, ILSVRC/imagenet-1k) or a local builder (imagefolder, parquet)",
    )
    config: str | None = _opt(None, "the data set's configuration name on the Hub, e.g. 320px for frgfm/imagenette")
    data_dir: str | None = _opt(None, "local folder of photos (imagefolder: class subfolders or flat)")
    data_files: str | None = _opt(None, "local data files (glob), e.g. 'shards/*.parquet' with --dataset parquet")
    split: str = _opt("train", "training split")
    val_dataset: str | None = _opt(None, "validation data set (default: --dataset)")
    val_dir: str | None = _opt(None, "validation folder (imagefolder)")
    val_split: str | None = _opt(
        None, "validation split (default: 'validation' for Hub data sets, 'train' of --val-dir for folders)"
    )
    holdout: str | None = _opt(
        None,
        "regular expression on image paths: matching photos are held out for validation and never trained on (instead of --val-dir)",
    )
    holdout_file: str | None = _opt(
        None,
        "text file of held-out image paths, one per line, relative to --data-dir (e.g. ../shared/data/VALIDATION.txt): "
        "those photos are held out for validation and never trained on (with or instead of --holdout)",
    )
    repeat: str | None = _opt(
        None,
        "sampling weights: 'REGEX=N[;REGEX=N...]': photos whose path matches REGEX are read N times per pass "
        "(the largest N of the rules that match; multiplied by --large-repeats for large photos), "
        "e.g. '^(?!.*/food/)=2' counts every photo outside food/ twice",
    )
    subset: str | None = _opt(
        None,
        "train on a share of the photos: 'REGEX=F[;REGEX=F...]': of the photos whose path matches REGEX (the first "
        "rule that matches), a fixed fraction F (0 < F <= 1) is kept, chosen by a hash of the path under --data-dir "
        "(so a smaller F keeps a subset of a larger one's), and each kept photo is read round(1/F) times as often, "
        "so those photos keep their share of the training steps: fewer distinct photos, not fewer crops of them; "
        "e.g. '^(?!.*/food/)=0.25' for a quarter of the photos outside food/ (a curve of quality against photos)",
    )
    subset_seed: int = _opt(
        0, "which photos --subset keeps: another number draws another share of the same size (nested across "
           "fractions for one number; 0: the hash of the path alone)",
    )
    image_column: str = _opt("image", "image column")
    label_column: str = _opt("label", "label column (needed by --classes and --labels column)")
    labels: str | None = _opt(
        None,
        "train the global branch to also predict a label per photo (Iizuka et al.; network global_local): "
        "'column' (the --label-column's classes, e.g. an imagefolder's folders) or a regular expression "
        "with one group, searched in each photo's path (e.g. 'food/([A-Z])' for the food group letters); "
        "photos it does not match count only for colour",
    )
    label_weight: float = _opt(1 / 300, "weight of the label loss beside the colour loss (Iizuka et al.: 1/300)")
    classes: str | None = _opt(
        None,
        "keep only these classes: comma-separated label ids, names, ImageNet synset ids (n07747607) or WordNet words (fruit)",
    )
    classes_file: str | None = _opt(
        None, "file with one class (id, name, synset id or word) per line, added to --classes"
    )
    streaming: bool = _opt(True, "stream rows (datasets streaming=True) instead of preparing the set on disk first")
    cache_dir: str | None = _opt(None, "datasets cache folder")
    shuffle_buffer: int = _opt(1000, "rows in the streaming shuffle buffer (0: no shuffling)")
    min_size: int = _opt(32, "skip photos whose short side is below this (pixels)")
    resize: int = _opt(256, "photos are resized so their short side is this before the random crop")
    crop: int = _opt(176, "training crop side (pixels, multiple of 8)")
    multiscale_min_side: int = _opt(
        512,
        "photos with a short side of at least this get multi-scale crops: a random square of side between --crop and the short side, resized to --crop",
    )
    large_crops: int = _opt(3, "crops drawn from each large (multi-scale) photo per pass over the data")
    large_repeats: int = _opt(
        1,
        "read each large (multi-scale) photo this many times per pass, at shuffled places in the stream: "
        "one large photo holds the content of dozens of small ones",
    )
    flip: bool = _opt(True, "random horizontal flips")
    gray_threshold: float = _opt(
        2.0, "skip photos whose mean channel spread max(R,G,B)-min(R,G,B) is below this (0-255): grayscale photos"
    )
    val_size: int = _opt(176, "validation photos: short side resized to this, centre square crop")
    val_images: int = _opt(64, "validation photos kept in memory (the first N of the validation split)")
    val_groups: str | None = _opt(
        None,
        "validation groups 'NAME=REGEX;...', the regular expression searched in each validation photo's path "
        "(photos matching none form 'other'): val.csv gets each group's AuC, rebalanced AuC, median colour cast "
        "and colourfulness, and val_baseline.json gray's",
    )
    max_pixels: int = _opt(100_000_000, "skip photos with more pixels than this")

    # ---------------------------------------------------------------- model
    objective: str = _opt(
        "classification",
        "classification (rebalanced cross-entropy over ab bins), regression (L2) or channel_classification "
        "(a and b each in --channel-bins classes, two softmaxes per pixel; Ciugurean)",
        choices=["classification", "regression", "channel_classification"],
    )
    channel_bins: int = _opt(64, "classes per channel of --objective channel_classification")
    trunk: str = _opt(
        "eccv16",
        "the trunk of --network hypercolumn: a trained model's network (eccv16 or global_local, that of "
        "--init-from) or the pretrained DINOv2 ViT-S/14 (dinov2-small, shipped with the package)",
        choices=["eccv16", "global_local", "dinov2-small"])
    trunk_size: int = _opt(224, "--trunk dinov2-small: the encoder sees photos at about trunk_size^2 pixels "
                                "(sides multiples of 14)")
    trunk_blocks: str = _opt("4,8,12", "--trunk dinov2-small: the encoder blocks whose tokens the decoder reads "
                                       "(comma-separated, 1-12; the last after the final norm)")
    features: str | None = _opt(
        None,
        "--trunk dinov2-small: train the decoder on the frozen encoder's features cached in this folder by "
        "python -m train.features (its crops, not --data-dir's); validation still reads --data-dir")
    feature_crops: int = _opt(12000, "python -m train.features: crops to cache")
    trunk_tune: int = _opt(
        0, "--trunk dinov2-small: train the encoder's last blocks and final norm with the decoder (4: blocks 9-12, "
        "after read block 8); their weights are then the model's own. With --features the cache must also hold the "
        "class token where they start (python -m train.features with the same --trunk-tune adds it)")
    trunk_lr: float = _opt(0.1, "--trunk-tune: the tuned blocks' learning rate as a fraction of --lr's")
    train_trunk: bool = _opt(
        False, "--network hypercolumn: train the trunk too, end to end (a fine-tuning step from an --init-from "
        "hypercolumn model whose decoder has learned on the frozen trunk; use a small --lr)")
    semantic_width: float = _opt(
        0.0, "--network cheng15: also read, as Cheng et al.'s semantic feature, the mid-level features of the "
        "frozen ECCV16 network of --init-from, whose width this is (0: no semantic feature)")
    color_space: str = _opt(
        "lab",
        "the colour the model predicts (Champati et al.'s comparison): lab (ab), yuv (U, V) or rgb (R, G, B, "
        "regression only); classification is over ab bins or, with yuv, over uv bins",
        choices=["lab", "yuv", "rgb"],
    )
    network: str = _opt(
        "eccv16",
        "eccv16 (Zhang et al.), global_local (with Iizuka et al.'s global branch fused into the mid-level "
        "features), cheng15 (Cheng et al.'s per-pixel network on patch and DAISY features; regression) or "
        "hypercolumn (a frozen trained trunk's features at four depths and a small trained decoder; Ciugurean)",
        choices=["eccv16", "global_local", "cheng15", "hypercolumn"],
    )
    width: float = _opt(1.0, "channel multiplier of the network (1.0 = the paper's)")
    grid: float = _opt(10.0, "side of an ab bin (10: Q=261 bins; 20: Q=77; over uv bins 283 and 81)")
    k: int = _opt(5, "soft-encoding neighbours")
    sigma: float = _opt(5.0, "soft-encoding Gaussian width (ab units)")
    lam: float = _opt(0.5, "rebalancing: mix of the prior with the uniform distribution")
    rebalance: bool | None = _opt(
        None, "weight the loss by the rebalancing weights (default: yes for the classification objectives, no for "
              "regression, the baseline papers' plain L2; the model decides, colorizer.model.Colorizer)")
    temperature: float = _opt(PAPER_TEMPERATURE, "default annealed-mean temperature saved in the model")
    cast_weight: float = _opt(
        0.0,
        "weight of the colour-cast loss beside the colour loss: per crop, the squared ab distance between the mean "
        "of its decoded colours (at --temperature) and its true mean colour (0: off; 0.01 weighs a cast of 10 as 1)",
    )
    input_size: int = _opt(256, "the trained model sees photos at about input_size^2 pixels at inference")
    regression_loss: str = _opt("l2", "regression loss: l2 or smooth_l1", choices=["l2", "smooth_l1"])
    prior: str | None = _opt(
        None,
        "prior over the model's bins (ab, or uv for --color-space yuv classification): a JSON file from python -m train.prior, 'uniform', or empty to compute it from --prior-images training photos at start",
    )
    prior_images: int = _opt(500, "training photos counted for the prior when --prior is not given")
    init_from: str | None = _opt(
        None,
        "start from this model's weights (a shipped name, a model folder or a Hub id) instead of random ones: "
        "fine-tuning; its network (width, grid, objective) must match this run's; the prior is this run's",
    )

    # ---------------------------------------------------------------- optimisation
    max_steps: int = _opt(5000, "optimiser steps")
    max_cpu_hours: float = _opt(
        0.0,
        "also stop when the training steps have used this many CPU-hours (this process, all threads; "
        "0: off): runs compared at equal compute",
    )
    batch_size: int = _opt(32, "photos per step per process")
    lr: float = _opt(3e-4, "peak learning rate (AdamW)")
    min_lr: float = _opt(3e-5, "final learning rate of the cosine schedule")
    schedule: str = _opt(
        "cosine", "learning-rate schedule after warm-up: cosine or constant", choices=["cosine", "constant"]
    )
    warmup_steps: int = _opt(200, "linear warm-up steps")
    weight_decay: float = _opt(1e-3, "AdamW weight decay")
    beta1: float = _opt(0.9, "AdamW beta1")
    beta2: float = _opt(0.99, "AdamW beta2")
    grad_clip: float = _opt(1.0, "clip the gradient norm to this (0: off)")
    mixed_precision: str = _opt(
        "auto", "auto (bf16 on CUDA and on CPUs with native bf16, AVX512-BF16 or AMX; else off), bf16, fp16 or no", choices=["auto", "bf16", "fp16", "no"]
    )
    compile: bool = _opt(False, "torch.compile the model (CUDA)")

    # ---------------------------------------------------------------- run
    out: str = _opt("runs/colorizer", "run folder: config, logs, checkpoints, samples, final model")
    resume: bool = _opt(False, "resume from the latest checkpoint in --out")
    num_workers: int = _opt(2, "DataLoader worker processes decoding photos (0: in the main process)")
    seed: int = _opt(0, "random seed (data order, crops, initial weights)")
    log_every: int = _opt(10, "log the training loss every N steps")
    val_every: int = _opt(250, "validate every N steps (0: only at the end)")
    ckpt_every: int = _opt(250, "checkpoint every N steps")
    ckpt_minutes: float = _opt(0.0, "also checkpoint when this many minutes of training passed since the last one (0: off)")
    ema: float = _opt(
        0.0,
        "keep an exponential moving average of the weights with this decay per step (e.g. 0.999; 0: off); "
        "validation, samples and the final model use the averaged weights",
    )
    keep_checkpoints: int = _opt(2, "checkpoints kept in --out/checkpoints")
    sample_images: int = _opt(8, "validation photos in the PNG grid of sample colorizations")
    push_to_hub: str | None = _opt(None, "push the final model to this Hub repository")
    cpu: bool = _opt(False, "train on the CPU even if a GPU is present")
    threads: int = _opt(0, "torch CPU threads (0: torch's default, one per core)")

    @property
    def bin_space(self) -> str:
        """The plane of the model's bins and prior: "yuv" for a classification over uv
        bins, else "lab" (ab bins, whatever the objective)."""
        from colorizer.bins import bin_space

        return bin_space(self.objective, self.color_space)

    @property
    def pretrained_trunk(self) -> bool:
        """Whether the model reads the pretrained DINOv2 encoder (``--trunk dinov2-small``)."""
        return self.network == "hypercolumn" and self.trunk == "dinov2-small"

    def validate(self) -> None:
        """Check values that would otherwise fail hours into a run."""
        if self.dataset in ("imagefolder",) and not (self.data_dir or self.data_files):
            raise ValueError("--dataset imagefolder needs --data-dir (or --data-files)")
        for name in ("crop", "val_size"):
            v = getattr(self, name)
            if v < 16 or v % 8:
                raise ValueError(f"--{name.replace('_', '-')} must be a multiple of 8 and at least 16, got {v}")
        if self.crop > self.resize:
            raise ValueError(f"--crop ({self.crop}) must not exceed --resize ({self.resize})")
        if self.batch_size < 1 or self.max_steps < 1:
            raise ValueError(f"--batch-size and --max-steps must be positive, got {self.batch_size}, {self.max_steps}")
        if self.lr <= 0 or self.min_lr < 0:
            raise ValueError(f"--lr must be positive and --min-lr non-negative, got {self.lr}, {self.min_lr}")
        if self.large_crops < 1 or self.large_repeats < 1:
            raise ValueError(f"--large-crops and --large-repeats must be >= 1, got {self.large_crops}, {self.large_repeats}")
        if self.num_workers < 0:
            raise ValueError(f"--num-workers must be >= 0, got {self.num_workers}")
        if (self.holdout or self.holdout_file) and self.val_dir:
            raise ValueError("give either --holdout/--holdout-file or --val-dir, not both")
        if self.holdout_file and not Path(self.holdout_file).is_file():
            raise ValueError(f"--holdout-file {self.holdout_file!r}: no such file")
        if self.repeat:
            parse_repeat(self.repeat)
        if self.subset:
            parse_subset(self.subset)
        if self.val_groups:
            parse_groups(self.val_groups)
        from colorizer.model import check_settings

        check_settings(model_settings(self), cli=True)  # the model's own checks, named as flags
        if self.train_trunk and self.network != "hypercolumn":
            raise ValueError("--train-trunk trains the trunk of --network hypercolumn")
        pretrained = self.pretrained_trunk
        if self.features and not pretrained:
            raise ValueError("--features holds the pretrained trunk's features: use it with --network hypercolumn "
                             "--trunk dinov2-small")
        if pretrained and self.train_trunk:
            raise ValueError("--train-trunk: the pretrained dinov2-small trunk is the package's file; train its last "
                             "blocks with --trunk-tune N instead")
        if not self.trunk_lr > 0:  # NaN too
            raise ValueError(f"--trunk-lr must be positive, got {self.trunk_lr}")
        if self.labels:
            if self.network != "global_local":
                raise ValueError(f"--labels needs --network global_local (a global branch to learn them), got {self.network}")
            if self.labels != "column":
                try:
                    groups = re.compile(self.labels).groups
                except re.error as e:
                    raise ValueError(f"--labels {self.labels!r}: not a regular expression ({e})") from None
                if groups != 1:
                    raise ValueError(f"--labels {self.labels!r}: needs exactly one group (...), the label; has {groups}")
        if self.label_weight < 0:
            raise ValueError(f"--label-weight must be >= 0, got {self.label_weight}")
        if not self.cast_weight >= 0:  # NaN too
            raise ValueError(f"--cast-weight must be >= 0, got {self.cast_weight}")
        if self.cast_weight and self.objective != "regression" and self.temperature == 0:
            raise ValueError("--cast-weight needs --temperature above 0: the mode (T = 0) has no gradient")
        if self.max_cpu_hours < 0:
            raise ValueError(f"--max-cpu-hours must be >= 0, got {self.max_cpu_hours}")
        if not 0.0 <= self.ema < 1.0:
            raise ValueError(f"--ema must be in [0, 1), got {self.ema}")
        if self.ckpt_minutes < 0:
            raise ValueError(f"--ckpt-minutes must be >= 0, got {self.ckpt_minutes}")
        if self.prior not in (None, "", "uniform") and not Path(self.prior).is_file():
            raise ValueError(
                f"--prior {self.prior!r}: no such file (give a JSON from python -m train.prior, or 'uniform')"
            )


# the model's settings that training does not set: normalisation constants, the ab grid's extent, the prior's
# smoothing (the model's own defaults), and what a run computes (the prior, the label names)
MODEL_ONLY = ("l_cent", "l_norm", "ab_norm", "ab_range", "prior_sigma", "prior", "labels")


def model_settings(cfg: TrainConfig, **computed) -> dict:
    """The ``Colorizer`` settings of a run: each of its constructor's parameters that is a
    field of ``cfg`` of the same name (one meaning, one default: ``tests/test_config.py``
    holds them to it), in the model's form (``trunk_blocks`` as a list, no semantic width
    as None), and ``computed`` ones (the prior, the label names)."""
    import inspect

    from colorizer.model import Colorizer

    settings = {}
    for name in inspect.signature(Colorizer.__init__).parameters:
        if name in computed:
            settings[name] = computed[name]
        elif name == "trunk_blocks":
            from train.features import parse_blocks

            settings[name] = list(parse_blocks(cfg.trunk_blocks))
        elif name == "semantic_width":
            settings[name] = cfg.semantic_width or None
        elif name != "self" and name not in MODEL_ONLY:
            settings[name] = getattr(cfg, name)
    return settings


def _path_rules(spec: str, flag: str, letter: str, value, what: str, valid, bounds: str) -> list:
    """'REGEX=V;REGEX=V' (the value after the last '=') as (compiled pattern, ``value(V)``)
    pairs; ``what`` names a value ``value`` cannot read, ``bounds`` one that ``valid`` refuses."""
    rules = []
    for part in spec.split(";"):
        if not part.strip():
            continue
        pattern, sep, text = part.strip().rpartition("=")
        if not sep or not pattern:
            raise ValueError(f"{flag} {spec!r}: each rule is REGEX={letter}, got {part.strip()!r}")
        try:
            v = value(text)
            rules.append((re.compile(pattern), v))
        except ValueError:
            raise ValueError(f"{flag} {spec!r}: {text!r} is not {what}") from None
        except re.error as e:
            raise ValueError(f"{flag} {spec!r}: bad regular expression {pattern!r} ({e})") from None
        if not valid(v):
            raise ValueError(f"{flag} {spec!r}: {bounds}, got {text}")
    if not rules:
        raise ValueError(f"{flag} {spec!r}: no rule (REGEX={letter})")
    return rules


def parse_repeat(spec: str) -> list[tuple["re.Pattern", int]]:
    """``--repeat``'s 'REGEX=N;REGEX=N' as compiled (pattern, count) rules."""
    return _path_rules(spec, "--repeat", "N", int, "a whole number of reads", lambda n: n >= 1, "counts must be >= 1")


def parse_subset(spec: str) -> list[tuple["re.Pattern", float]]:
    """``--subset``'s 'REGEX=F;REGEX=F' as compiled (pattern, fraction kept) rules."""
    return _path_rules(spec, "--subset", "F", float, "a fraction", lambda f: 0 < f <= 1,
                       "fractions must be in (0, 1]")


def subset_draw(subset: str | None, subset_seed: int | None) -> int | None:
    """Which draw of photos ``--subset-seed`` makes: None without ``--subset`` (the seed then
    chooses nothing) or with seed 0 or none (the hash of the path alone), else the seed."""
    return (subset_seed or None) if subset else None


def parse_groups(spec: str) -> list[tuple[str, "re.Pattern"]]:
    """``--val-groups``' 'NAME=REGEX;NAME=REGEX' as (name, compiled pattern) pairs."""
    groups = []
    for part in spec.split(";"):
        if not part.strip():
            continue
        name, sep, pattern = part.strip().partition("=")
        if not sep or not name.strip() or not pattern:
            raise ValueError(f"--val-groups {spec!r}: each group is NAME=REGEX, got {part.strip()!r}")
        if name.strip() in ("other", "val") or name.strip() in {n for n, _ in groups}:
            raise ValueError(f"--val-groups {spec!r}: group name {name.strip()!r} is taken")
        try:
            groups.append((name.strip(), re.compile(pattern)))
        except re.error as e:
            raise ValueError(f"--val-groups {spec!r}: bad regular expression {pattern!r} ({e})") from None
    if not groups:
        raise ValueError(f"--val-groups {spec!r}: no group (NAME=REGEX)")
    return groups


def _fields() -> list[dataclasses.Field]:
    return list(dataclasses.fields(TrainConfig))


def _base_type(f: dataclasses.Field) -> type:
    hints = typing.get_type_hints(TrainConfig)
    t = hints[f.name]
    args = [a for a in typing.get_args(t) if a is not type(None)]
    return args[0] if args else t


def load_config_file(path: str | Path) -> dict:
    """Read a YAML or JSON config file into a dict of TrainConfig fields (unknown keys are an error)."""
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"config file {str(p)!r} not found")
    text = p.read_text()
    if p.suffix.lower() in (".yaml", ".yml"):
        import yaml

        data = yaml.safe_load(text) or {}
    else:
        data = json.loads(text)
    if not isinstance(data, dict):
        raise ValueError(f"config file {str(p)!r}: expected a mapping of settings, got {type(data).__name__}")
    names = {f.name for f in _fields()}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"config file {str(p)!r}: unknown settings {unknown}")
    return data


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser, one option per TrainConfig field (defaults shown in --help)."""
    parser = argparse.ArgumentParser(
        prog="python -m train",
        description="Train a Colorizer on a local folder or a Hugging Face data set "
        "(1 CPU, 1 GPU, or several GPUs with `accelerate launch -m train ...`).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--config-file", default=None, help="YAML or JSON file of settings; command-line options override it"
    )
    for f in _fields():
        flag = "--" + f.name.replace("_", "-")
        t = _base_type(f)
        kw = {"help": f.metadata["help"], "default": argparse.SUPPRESS}
        if "choices" in f.metadata:
            kw["choices"] = f.metadata["choices"]
        if t is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, **kw)
        else:
            parser.add_argument(flag, type=t, metavar=f.name.upper(), **kw)
    # show the real defaults in --help although argparse only fills given options
    for action in parser._actions:
        name = action.dest
        if name in {f.name for f in _fields()}:
            action.help = f"{action.help} (default: {getattr(TrainConfig, name, None)!r})"
    return parser


def parse_args(argv: list[str] | None = None) -> TrainConfig:
    """Defaults < config file < command line -> a validated TrainConfig."""
    args = vars(build_parser().parse_args(argv))
    settings: dict = {}
    if args.get("config_file"):
        settings.update(load_config_file(args["config_file"]))
    settings.update({k: v for k, v in args.items() if k != "config_file"})
    cfg = TrainConfig(**settings)
    cfg.validate()
    return cfg
