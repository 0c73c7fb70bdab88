"""Photo sources: Hugging Face ``datasets`` (Hub or local) as rows of images and labels.

The one module of the package that touches ``datasets``; it is imported lazily inside
the functions, so ``import colorizer`` never needs it. The same code path reads a Hub
data set (``"frgfm/imagenette"``, ``"ILSVRC/imagenet-1k"``), streamed or not, and a
local one (``"imagefolder"`` with ``data_dir``, ``"parquet"`` with ``data_files``), so
training and evaluation run offline on a folder exactly as they would on the Hub.

Images stay encoded in the rows (``datasets.Image(decode=False)``): ``iter_images``
decodes them with ``colorizer.images.read_image``, so an unreadable file is skipped and
counted instead of stopping a run hours in.

Class subsets (``classes=``) accept label ids, label names, ImageNet synset ids
(``n07747607``) and WordNet words (``fruit``: every class under that concept). Synset
ids and words need NLTK's WordNet (``pip install nltk`` then
``python -c "import nltk; nltk.download('wordnet')"``, or the Debian package
``wordnet-base``) unless the labels are synset ids themselves.
"""

from __future__ import annotations

import collections
import functools
import io
import logging
import os
import re
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np
from PIL import Image

from colorizer.errors import first_line
from colorizer.images import DEFAULT_MAX_PIXELS, ImageError, ImageTooLargeError, read_image

__all__ = ["open_source", "resolve_classes", "iter_images", "label_names_of", "cell_path", "decode_row_image",
           "row_image_size"]

logger = logging.getLogger(__name__)

_SYNSET = re.compile(r"^n\d{8}$")
_LOCAL_BUILDERS = {"imagefolder", "parquet", "arrow", "webdataset", "json", "csv"}
_WORDNET_DIRS = ("/usr/share/wordnet", "/usr/share/wordnet/dict")


def open_source(
    dataset: str,
    *,
    data_dir: str | Path | None = None,
    split: str = "train",
    image_column: str = "image",
    label_column: str = "label",
    classes: Sequence[int | str] | str | None = None,
    streaming: bool = False,
    shuffle_buffer: int = 0,
    seed: int = 0,
    name: str | None = None,
    data_files: Any = None,
    cache_dir: str | Path | None = None,
):
    """Open a data set of photos as a ``datasets`` Dataset (or IterableDataset when streaming).

    Args:
        dataset: a Hub id (``"frgfm/imagenette"``) or a builder (``"imagefolder"``,
            ``"parquet"``) used with ``data_dir`` / ``data_files``.
        data_dir: local folder (imagefolder: one subfolder per class, or flat).
        split: the split to read ("train", "validation", ...).
        image_column, label_column: column names; a missing image column is an error,
            a missing label column is an error only when ``classes`` is given.
        classes: keep only these classes (see ``resolve_classes``); None keeps all.
        streaming: stream rows instead of preparing the whole set on disk first.
        shuffle_buffer: > 0 shuffles (shard order and a buffer of that many rows when
            streaming, a full permutation otherwise) with ``seed``.
        name: the data set's configuration (``"320px"`` for frgfm/imagenette).
        data_files, cache_dir: passed to ``datasets.load_dataset``.
    Returns:
        rows with the image still encoded (``{"bytes", "path"}``) and the label.
    Raises:
        ValueError: missing column, empty class selection, unknown split; one line.
    """
    import datasets

    if data_dir is not None and not Path(data_dir).is_dir() and dataset in _LOCAL_BUILDERS:
        raise ValueError(f"data_dir {str(data_dir)!r} is not a folder")
    kwargs: dict[str, Any] = {"split": split, "streaming": streaming}
    if name is not None:
        kwargs["name"] = name
    if data_dir is not None:
        kwargs["data_dir"] = str(data_dir)
    if data_files is not None:
        kwargs["data_files"] = data_files
    if cache_dir is not None:
        kwargs["cache_dir"] = str(cache_dir)
    try:
        ds = datasets.load_dataset(dataset, **kwargs)
    except (FileNotFoundError, ValueError, KeyError) as e:
        raise ValueError(f"cannot open data set {dataset!r} (split {split!r}, data_dir {data_dir!r}): "
                         f"{first_line(e)}") from None

    features = ds.features
    if features is not None:
        if image_column not in features:
            raise ValueError(f"data set {dataset!r} has no image column {image_column!r}; columns: {sorted(features)}")
        if isinstance(features[image_column], datasets.Image):
            ds = ds.cast_column(image_column, datasets.Image(decode=False))
        if classes is not None and label_column not in features:
            raise ValueError(
                f"class filter needs a label column, but data set {dataset!r} has no {label_column!r}; "
                f"columns: {sorted(features)}"
            )

    if classes is not None:
        names = label_names_of(ds, label_column)
        if names is not None:
            keep = set(resolve_classes(names, classes))
        else:  # plain int or string labels
            wanted = _as_list(classes)
            keep = {int(w) if isinstance(w, str) and w.strip().isdigit() else w for w in wanted}
            if not keep:
                raise ValueError("class filter is empty")
        ds = ds.filter(lambda label: label in keep, input_columns=[label_column])
        logger.info("class filter: kept %d classes of %s", len(keep), "?" if names is None else len(names))

    if shuffle_buffer > 0:
        ds = ds.shuffle(seed=seed, buffer_size=shuffle_buffer) if streaming else ds.shuffle(seed=seed)
    return ds


def label_names_of(source, label_column: str = "label") -> list[str] | None:
    """The class names of a data set's ``ClassLabel`` column, or None (no such column,
    or plain labels)."""
    import datasets

    features = getattr(source, "features", None)
    if not features or label_column not in features:
        return None
    feature = features[label_column]
    return list(feature.names) if isinstance(feature, datasets.ClassLabel) else None


def _as_list(wanted: Sequence[int | str] | str | int) -> list[int | str]:
    if isinstance(wanted, (int, str)):
        wanted = [wanted]
    out: list[int | str] = []
    for w in wanted:
        if isinstance(w, str):
            out.extend(p.strip() for p in w.split(",") if p.strip())
        else:
            out.append(w)
    return out


def _norm(s: str) -> str:
    return " ".join(s.replace("_", " ").lower().split())


def resolve_classes(label_names: Sequence[str], wanted: Sequence[int | str] | str | int) -> list[int]:
    """Label ids selected by ``wanted``.

    Each entry of ``wanted`` (a list, or a comma-separated string) may be:
    a label id (``3`` or ``"3"``); a label name, matched case-insensitively, spaces and
    underscores alike, also against each comma-separated synonym of ImageNet-style names
    ("tench, Tinca tinca"); an ImageNet synset id (``"n07747607"``); or a WordNet word
    (``"fruit"``), which selects every class whose synset lies under one of the word's
    noun senses. Synset ids and words go through WordNet (NLTK) unless the labels are
    synset ids themselves.

    Args:
        label_names: the data set's class names, in id order.
        wanted: what to keep.
    Returns:
        sorted label ids.
    Raises:
        ValueError: an entry matched nothing (all such entries are named), or nothing was asked for.
    """
    items = _as_list(wanted)
    if not items:
        raise ValueError("class filter is empty: give label ids, names, synset ids or WordNet words")
    n = len(label_names)
    synonyms = [{_norm(s) for s in str(name).split(",")} | {_norm(str(name))} for name in label_names]
    keep: set[int] = set()
    missing: list[str] = []
    for item in items:
        if isinstance(item, int) or (isinstance(item, str) and item.strip().isdigit()):
            i = int(item)
            if not 0 <= i < n:
                missing.append(f"{item} (ids are 0..{n - 1})")
            else:
                keep.add(i)
            continue
        key = _norm(str(item))
        hits = {i for i, syn in enumerate(synonyms) if key in syn}
        if not hits:
            hits = _wordnet_matches(str(item).strip(), label_names, synonyms)
        if hits:
            keep |= hits
        else:
            missing.append(repr(item))
    if missing:
        preview = ", ".join(map(str, label_names[:8])) + (", ..." if n > 8 else "")
        hint = "" if _wordnet() is not None else " (WordNet is not installed: synset ids and words need nltk's wordnet)"
        raise ValueError(f"class filter: no class matches {', '.join(missing)}; classes are: {preview}{hint}")
    return sorted(keep)


@functools.lru_cache(maxsize=1)
def _wordnet():
    """NLTK's WordNet reader, or None if NLTK or its data is missing (loaded once)."""
    try:
        from nltk.corpus import wordnet as wn
        from nltk.corpus.reader.wordnet import WordNetCorpusReader
    except ImportError:
        return None
    try:
        wn.ensure_loaded()
        return wn
    except LookupError:
        pass
    for folder in _WORDNET_DIRS:
        if not (Path(folder) / "data.noun").is_file():
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # "multilingual functions are not available"
                return WordNetCorpusReader(_with_lexnames(Path(folder)), None)
        except (OSError, LookupError, ValueError):
            continue
    return None


@functools.lru_cache(maxsize=None)
def _with_lexnames(folder: Path) -> str:
    """A WordNet 3.0 database folder NLTK can read. Debian's ``wordnet-base`` ships the
    database without the ``lexnames`` table, which NLTK opens but only uses for
    ``Synset.lexname()`` (never used here): copy the files into a cache folder with a
    placeholder table of the 45 lexicographer files, and let NLTK's path guard read both."""
    import nltk

    if (folder / "lexnames").is_file():
        target = folder
    else:
        uid = os.getuid() if hasattr(os, "getuid") else 0
        root = Path(tempfile.gettempdir()) / f"colorizer-nltk-data-{uid}"
        target = root / "corpora" / "wordnet"
        target.mkdir(parents=True, exist_ok=True)
        for f in folder.iterdir():  # copies: NLTK refuses symlinks that leave its root
            copy = target / f.name
            if f.is_file() and (not copy.exists() or copy.stat().st_size != f.stat().st_size):
                shutil.copyfile(f, copy)
        (target / "lexnames").write_text("".join(f"{i:02d}\tlexfile.{i:02d}\t1\n" for i in range(45)))
        nltk.data.path.append(str(root))
    return str(target)


def _wnid(synset) -> str:
    return f"n{synset.offset():08d}"


def _wordnet_matches(item: str, label_names: Sequence[str], synonyms: list[set[str]]) -> set[int]:
    """Labels under a synset id or a word's noun senses (hyponym closure), via WordNet."""
    wn = _wordnet()
    if _SYNSET.match(item):
        if wn is None:
            return set()
        try:
            roots = [wn.synset_from_pos_and_offset("n", int(item[1:]))]
        except Exception:  # nltk raises a bare WordNetError for unknown offsets
            return set()
    else:
        if wn is None:
            return set()
        roots = wn.synsets(item.replace(" ", "_"), pos="n")
    below = set()
    for root in roots:
        below.add(root)
        below.update(root.closure(lambda s: s.hyponyms() + s.instance_hyponyms()))
    wnids = {_wnid(s) for s in below}
    hits = set()
    for i, name in enumerate(label_names):
        if str(name) in wnids:
            hits.add(i)
            continue
        for syn in synonyms[i]:
            if any(s in below for s in wn.synsets(syn.replace(" ", "_"), pos="n")):
                hits.add(i)
                break
    return hits


def _cell_source(value: Any) -> Any:
    """What to read of one row's image cell (``{"bytes", "path"}``, bytes, path, PIL image
    or array): its bytes, path, image or array; ``ImageError`` when it holds none."""
    if isinstance(value, dict):
        data, path = value.get("bytes"), value.get("path")
        if data:
            return bytes(data)
        if path:
            return path
        raise ImageError("image cell has neither bytes nor a path")
    if value is None:
        raise ImageError("image cell is empty")
    return value


def cell_path(value: Any) -> str | None:
    """The file path a row's image cell names (``{"bytes", "path"}``), or None."""
    return (value.get("path") or None) if isinstance(value, dict) else None


def decode_row_image(value: Any, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Decode one row's image cell (``{"bytes", "path"}``, bytes, path, PIL image or array)
    with ``read_image``; raises ``ImageError`` with a one-line message."""
    return read_image(_cell_source(value), max_pixels)


def row_image_size(value: Any) -> tuple[int, int]:
    """``(width, height)`` of one row's image cell from the file's header alone, without
    decoding its pixels (before EXIF rotation); raises ``ImageError`` when it cannot be read."""
    source = _cell_source(value)
    if isinstance(source, Image.Image):
        return source.size
    if isinstance(source, np.ndarray):
        return source.shape[1], source.shape[0]
    if isinstance(source, (bytes, bytearray)):
        source = io.BytesIO(source)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(source) as img:
                return img.size
    except (OSError, SyntaxError, ValueError, TypeError, Image.DecompressionBombError) as e:
        raise ImageError(f"image cell: unreadable image header ({str(e).strip() or type(e).__name__})") from None


def iter_images(
    source: Iterable[dict],
    image_column: str = "image",
    label_column: str = "label",
    *,
    skipped: collections.Counter | None = None,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
) -> Iterator[tuple[Image.Image, Any]]:
    """Yield ``(PIL image, label or None)`` for each row of ``source``.

    Images come out of ``read_image`` (upright, sRGB, modes L, LA, F, RGB or RGBA; CMYK
    and 16-bit are converted). Rows whose image cannot be read are skipped and counted
    in ``skipped`` (keys "unreadable" and "too_large") and logged at debug level.

    Raises:
        ValueError: a row has no ``image_column``.
    """
    counts = skipped if skipped is not None else collections.Counter()
    for row in source:
        if image_column not in row:
            raise ValueError(f"row has no image column {image_column!r}; columns: {sorted(row)}")
        try:
            img = decode_row_image(row[image_column], max_pixels)
        except ImageTooLargeError as e:
            counts["too_large"] += 1
            logger.debug("skipped: %s", e)
            continue
        except ImageError as e:
            counts["unreadable"] += 1
            logger.debug("skipped: %s", e)
            continue
        yield img, row.get(label_column)
