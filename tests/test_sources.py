"""train.sources: local data sets through Hugging Face datasets, class filters, bad images."""

from __future__ import annotations

import collections
import io

import numpy as np
import pytest
import skimage.data
from PIL import Image

from colorizer.images import ImageError
from train.sources import _wordnet, iter_images, label_names_of, open_source, resolve_classes, row_image_size

SAMPLES = {"astronaut": skimage.data.astronaut, "coffee": skimage.data.coffee, "chelsea": skimage.data.chelsea}


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """imagefolder with three classes of two small photos each, cut from scikit-image samples."""
    root = tmp_path_factory.mktemp("photos")
    for name, load in SAMPLES.items():
        (root / name).mkdir()
        img = Image.fromarray(load())
        for i in range(2):
            w, h = img.size
            img.crop((i * w // 4, 0, w - (1 - i) * w // 4, h)).resize((64, 48)).save(root / name / f"{name}{i}.png")
    return root


def rows_of(ds):
    return [(row["image"]["path"].rsplit("/", 1)[-1], row["label"]) for row in ds]


def test_streaming_and_prepared_give_the_same_samples(folder, tmp_path):
    streamed = open_source("imagefolder", data_dir=folder, streaming=True)
    prepared = open_source("imagefolder", data_dir=folder, streaming=False, cache_dir=tmp_path)
    assert label_names_of(streamed) == label_names_of(prepared) == ["astronaut", "chelsea", "coffee"]
    a, b = rows_of(streamed), rows_of(prepared)
    assert sorted(a) == sorted(b) and len(a) == 6
    pixels_a = {
        lbl: np.asarray(img) for img, lbl in iter_images(open_source("imagefolder", data_dir=folder, streaming=True))
    }
    pixels_b = {lbl: np.asarray(img) for img, lbl in iter_images(prepared)}
    assert pixels_a.keys() == pixels_b.keys()
    for k in pixels_a:
        np.testing.assert_array_equal(pixels_a[k], pixels_b[k])


@pytest.mark.parametrize("streaming", [True, False])
def test_class_filter_by_id_and_by_name(folder, tmp_path, streaming):
    by_name = open_source(
        "imagefolder", data_dir=folder, classes=["coffee", "Chelsea"], streaming=streaming, cache_dir=tmp_path
    )
    assert sorted({lbl for _, lbl in rows_of(by_name)}) == [1, 2]
    by_id = open_source("imagefolder", data_dir=folder, classes="0", streaming=streaming, cache_dir=tmp_path)
    assert [lbl for _, lbl in rows_of(by_id)] == [0, 0]


def test_resolve_classes_ids_names_synonyms_and_synsets():
    names = ["tench, Tinca tinca", "goldfish, Carassius auratus", "Granny_Smith", "n07747607"]
    assert resolve_classes(names, [1]) == [1]
    assert resolve_classes(names, "0, goldfish") == [0, 1]
    assert resolve_classes(names, ["Tinca tinca", "granny smith"]) == [0, 2]
    assert resolve_classes(names, ["n07747607"]) == [3]


def test_resolve_classes_names_what_did_not_match():
    with pytest.raises(ValueError, match=r"'durian'.*7 \(ids are 0\.\.1\)|7 \(ids are 0\.\.1\).*'durian'"):
        resolve_classes(["a", "b"], ["durian", 7, "a"])
    with pytest.raises(ValueError, match="empty"):
        resolve_classes(["a", "b"], [])


@pytest.mark.skipif(
    _wordnet() is None, reason="WordNet not installed (nltk + its data, or Debian wordnet-base and wordnet-sense-index)"
)
def test_wordnet_words_and_synsets_select_the_classes_below_them():
    names = ["Granny Smith", "strawberry", "tabby, tabby cat", "orange", "n07753592", "head cabbage", "broccoli"]
    assert resolve_classes(names, ["fruit"]) == [0, 1, 3, 4]  # n07753592 is banana
    assert resolve_classes(names, "vegetable") == [5, 6]
    assert resolve_classes(names, ["n07739125"]) == [0]  # apple
    assert resolve_classes(names, ["fruit", "vegetable"]) == [0, 1, 3, 4, 5, 6]


def test_open_source_errors_are_one_line(folder, tmp_path):
    with pytest.raises(ValueError, match="no image column 'photo'"):
        open_source("imagefolder", data_dir=folder, image_column="photo")
    with pytest.raises(ValueError, match="no class matches 'durian'"):
        open_source("imagefolder", data_dir=folder, classes=["durian"])
    with pytest.raises(ValueError, match="not a folder"):
        open_source("imagefolder", data_dir=tmp_path / "missing")
    flat = tmp_path / "flat"
    flat.mkdir()
    Image.fromarray(skimage.data.coffee()).save(flat / "a.png")
    with pytest.raises(ValueError, match="needs a label column"):
        open_source("imagefolder", data_dir=flat, classes=["0"])


def test_iter_images_skips_and_counts_unreadable_rows():
    good = io.BytesIO()
    Image.fromarray(skimage.data.coffee()).save(good, format="JPEG")
    cmyk = io.BytesIO()
    Image.fromarray(skimage.data.chelsea()).convert("CMYK").save(cmyk, format="JPEG")
    gray16 = io.BytesIO()
    Image.fromarray((np.arange(64 * 64, dtype=np.uint16) * 16).reshape(64, 64)).save(gray16, format="PNG")
    rows = [
        {"image": {"bytes": good.getvalue(), "path": None}, "label": 0},
        {"image": {"bytes": b"not an image", "path": None}, "label": 1},
        {"image": {"bytes": None, "path": "/nonexistent/photo.jpg"}, "label": 2},
        {"image": {"bytes": cmyk.getvalue(), "path": None}, "label": 3},
        {"image": {"bytes": gray16.getvalue(), "path": None}, "label": 4},
        {"image": None, "label": 5},
    ]
    skipped = collections.Counter()
    out = list(iter_images(rows, skipped=skipped))
    assert [lbl for _, lbl in out] == [0, 3, 4]
    assert [img.mode for img, _ in out] == ["RGB", "RGB", "F"]
    assert skipped == {"unreadable": 3}
    with pytest.raises(ValueError, match="no image column"):
        list(iter_images([{"picture": 1}]))


def test_parquet_data_set_takes_the_same_path(tmp_path):
    import datasets

    photos = []
    for load in SAMPLES.values():
        buf = io.BytesIO()
        Image.fromarray(load()).resize((40, 30)).save(buf, format="PNG")
        photos.append({"bytes": buf.getvalue(), "path": None})
    features = datasets.Features({"photo": datasets.Image(), "kind": datasets.ClassLabel(names=list(SAMPLES))})
    datasets.Dataset.from_dict({"photo": photos, "kind": [0, 1, 2]}, features=features).to_parquet(
        str(tmp_path / "a.parquet")
    )
    for streaming in (True, False):
        ds = open_source(
            "parquet",
            data_files=str(tmp_path / "a.parquet"),
            image_column="photo",
            label_column="kind",
            classes=["coffee", "0"],
            streaming=streaming,
            cache_dir=tmp_path / "cache",
        )
        out = list(iter_images(ds, image_column="photo", label_column="kind"))
        assert [lbl for _, lbl in out] == [0, 1] and all(img.size == (40, 30) for img, _ in out)


def test_row_image_size_reads_only_the_header(tmp_path):
    buf = io.BytesIO()
    Image.fromarray(skimage.data.coffee()).save(buf, "PNG")  # 600 x 400
    path = tmp_path / "coffee.png"
    path.write_bytes(buf.getvalue())
    for cell in ({"bytes": buf.getvalue(), "path": None}, {"bytes": None, "path": str(path)}, str(path),
                 buf.getvalue(), Image.open(path), skimage.data.coffee()):
        assert row_image_size(cell) == (600, 400)
    truncated = buf.getvalue()[: len(buf.getvalue()) // 2]
    assert row_image_size(truncated) == (600, 400)  # the header is enough: pixels are not decoded
    for bad in (b"not an image", {"bytes": None, "path": None}, None, str(tmp_path / "missing.png")):
        with pytest.raises(ImageError):
            row_image_size(bad)
