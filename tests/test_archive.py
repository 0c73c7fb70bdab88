"""``python -m colorizer.archive`` on a real local Ray instance (2 CPUs): outputs pixel-equal to
``Colorizer.colorize``, the manifest, resume, a run killed mid-way, a corrupt photo in the middle,
Parquet and Hugging Face sources; and the command without Ray installed."""

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data

from colorizer import Colorizer
from colorizer.archive import (MANIFEST, ColorizeBatch, Settings, _file_rows, _Manifest, _output_path, encode, main,
                               read_manifest)

ray = pytest.importorskip("ray", reason="the archive command needs pip install 'colorizer[archive]'")


@pytest.fixture(scope="module")
def cluster():
    """One local Ray instance for the module (each run of the command reuses it); its address."""
    context = ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield context.address_info["gcs_address"]
    ray.shutdown()


def _photos() -> dict[str, bytes]:
    """Small photos of every kind, encoded: gray JPEG with EXIF, colour PNG, RGBA PNG."""
    def encoded(img: Image.Image, fmt: str, **kw) -> bytes:
        buf = io.BytesIO()
        img.save(buf, format=fmt, **kw)
        return buf.getvalue()

    exif = Image.Exif()
    exif[0x010F] = "Archive Camera Co"  # Make
    astronaut = Image.fromarray(data.astronaut()).resize((96, 96))
    alpha = Image.fromarray(np.dstack([np.asarray(astronaut), np.tile(np.arange(96, dtype=np.uint8), (96, 1))]))
    return {
        "a/coffee.jpg": encoded(Image.fromarray(data.coffee()).convert("L").resize((120, 80)), "JPEG", exif=exif),
        "a/cat.png": encoded(Image.fromarray(data.chelsea()).resize((90, 60)), "PNG"),
        "b/astronaut-alpha.png": encoded(alpha, "PNG"),
        "b/rocket.jpg": encoded(Image.fromarray(data.rocket()).resize((64, 96)), "JPEG"),
    }


CORRUPT = "a/corrupt.jpg"  # sorts in the middle of the photos


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "archive"
    photos = _photos()
    photos[CORRUPT] = photos["a/coffee.jpg"][:200]  # a JPEG cut short
    for name, blob in photos.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(blob)
    return root


def _reference(model_dir: Path, image) -> np.ndarray:
    """``Colorizer.colorize`` in this process, on one thread as each actor runs."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return np.asarray(Colorizer.from_pretrained(model_dir).colorize(image))
    finally:
        torch.set_num_threads(threads)


def _run(*args) -> int:
    return main([*map(str, args), "-q"])


def test_folder_tree_killed_then_resumed_matches_colorize(cluster, tree, model_dir, tmp_path, capsys):
    out = tmp_path / "out"
    many = tree / "many"  # enough photos that the run is still going when it is killed
    many.mkdir()
    for i in range(8):
        (many / f"coffee-{i}.jpg").write_bytes((tree / "a/coffee.jpg").read_bytes())
    cmd = [sys.executable, "-m", "colorizer.archive", str(tree), "-o", str(out), "-m", str(model_dir),
           "--address", cluster, "--batch-size", "1", "--actors", "1", "-q"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    manifest = out / MANIFEST
    deadline = time.monotonic() + 240
    while not (manifest.is_file() and len(read_manifest(manifest)) >= 1) and time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read()
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)  # mid-run: the driver dies, Ray ends its actors
    proc.wait(timeout=60)
    first = read_manifest(manifest)
    assert 1 <= len(first) < 13, "the run was not killed mid-way"
    for path in out.rglob("*.png"):  # whatever was written is whole: written then renamed
        Image.open(path).load()

    assert _run(tree, "-o", out, "-m", model_dir, "--address", cluster) == 1  # the corrupt photo
    err = capsys.readouterr().err
    rows = read_manifest(manifest)
    assert set(rows) == {*_photos(), CORRUPT} | {f"many/coffee-{i}.jpg" for i in range(8)}
    done_before = sum(1 for row in first.values() if not row["error"])
    assert f"{12 - done_before} done, {done_before} skipped (done before), 1 failed" in err
    assert rows[CORRUPT]["error"].startswith(str(tree / CORRUPT)) and "\n" not in rows[CORRUPT]["error"]
    assert f"error: {tree / CORRUPT}" in err and "Traceback" not in err
    assert not list(out.rglob("*.tmp")) and not list(out.rglob(".*"))
    for key, blob in _photos().items():
        row = rows[key]
        assert row["error"] is None and row["model"] == str(model_dir) and len(row["revision"]) == 16
        assert row["temperature"] == Colorizer.from_pretrained(model_dir).temperature and row["seconds"] > 0
        got = Image.open(row["output"])
        assert Path(row["output"]) == out / Path(key).with_suffix(".png")
        np.testing.assert_array_equal(np.asarray(got), _reference(model_dir, tree / key))
    assert Image.open(rows["b/astronaut-alpha.png"]["output"]).mode == "RGBA"
    assert Image.open(rows["a/coffee.jpg"]["output"]).getexif()[0x010F] == "Archive Camera Co"

    # the corrupt photo repaired: only it is done again
    (tree / CORRUPT).write_bytes((tree / "a/cat.png").read_bytes())
    before = {k: Path(r["output"]).stat().st_mtime_ns for k, r in rows.items() if r["output"]}
    assert _run(tree, "-o", out, "-m", model_dir, "--address", cluster) == 0
    assert "1 done, 12 skipped (done before), 0 failed" in capsys.readouterr().err
    after = read_manifest(manifest)
    assert after[CORRUPT]["error"] is None and Path(after[CORRUPT]["output"]).is_file()
    assert {k: Path(after[k]["output"]).stat().st_mtime_ns for k in before} == before


def test_parquet_table_to_parquet_with_a_corrupt_row(cluster, model_dir, tmp_path, capsys):
    import pyarrow as pa
    import pyarrow.parquet as pq

    photos = _photos()
    names = list(photos)
    names.insert(2, "broken")
    images = [photos.get(n, b"not an image at all") for n in names]
    pq.write_table(pa.table({"id": names, "image": pa.array(images, pa.binary())}), tmp_path / "photos.parquet")
    out = tmp_path / "out"
    rc = _run("--parquet", tmp_path / "photos.parquet", "--key-column", "id", "--format", "parquet", "-o", out,
              "-m", model_dir, "--batch-size", "2", "--actors", "1")
    assert rc == 1
    assert "4 done, 0 skipped (done before), 1 failed" in capsys.readouterr().err
    rows = read_manifest(out / MANIFEST)
    assert rows["broken"]["error"].startswith(f"{tmp_path / 'photos.parquet'}:broken: image: not a readable image")
    table = pa.concat_tables([pq.read_table(p) for p in sorted(out.glob("part-*.parquet"))])
    assert sorted(table["key"].to_pylist()) == sorted(photos)
    for key, blob in zip(table["key"].to_pylist(), table["image"].to_pylist()):
        assert rows[key]["output"] in map(str, out.glob("part-*.parquet"))
        np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(blob))), _reference(model_dir, photos[key]))


def test_hugging_face_data_set_streamed(cluster, model_dir, tmp_path, capsys):
    """A local data set in the Hub's layout (Parquet with an Image feature), loaded by the same
    ``datasets.load_dataset`` call as a Hub id; keys are the images' own names."""
    import datasets

    photos = _photos()
    folder = tmp_path / "hf-photos"
    rows = {"image": [{"bytes": blob, "path": Path(name).name} for name, blob in photos.items()],
            "caption": list(photos)}
    ds = datasets.Dataset.from_dict(rows, features=datasets.Features({"image": datasets.Image(),
                                                                      "caption": datasets.Value("string")}))
    ds.to_parquet(str(folder / "data" / "train-00000-of-00001.parquet"))
    out = tmp_path / "out"
    assert _run("--hf", folder, "--streaming", "-o", out, "-m", model_dir, "--actors", "1") == 0
    assert "4 done" in capsys.readouterr().err
    for name, blob in photos.items():
        png = out / Path(Path(name).name).with_suffix(".png")
        np.testing.assert_array_equal(np.asarray(Image.open(png)), _reference(model_dir, blob))


def test_actor_batch_rows_in_this_process(tree, model_dir, tmp_path):
    """The actor's work on one batch of file rows, without Ray: a row per photo, the corrupt one
    with its error, outputs written and equal to ``Colorizer.colorize``."""
    out = tmp_path / "out"
    settings = Settings(model=str(model_dir), revision=None, temperature=None, max_pixels=10**8, out=str(out),
                        format="jpeg", quality=95, threads=1, device="cpu")
    rows = _file_rows([tree], out)
    batch = {k: np.array([r[k] for r in rows], dtype=object) for k in rows[0]}
    result = ColorizeBatch(settings)(batch)
    by_key = {k: (o, e, skipped) for k, o, e, skipped in zip(result["key"], result["output"], result["error"],
                                                             result["skipped"])}
    assert set(by_key) == {*_photos(), CORRUPT} and not any(s for *_, s in by_key.values())
    assert by_key[CORRUPT][0] is None and by_key[CORRUPT][1].startswith(f"{tree / CORRUPT}: ")
    assert by_key["b/astronaut-alpha.png"][0] == str(out / "b" / "astronaut-alpha.png")  # alpha: PNG, kept
    assert by_key["a/cat.png"][0] == str(out / "a" / "cat.jpg")
    got = np.asarray(Image.open(by_key["b/astronaut-alpha.png"][0]))
    np.testing.assert_array_equal(got, _reference(model_dir, tree / "b/astronaut-alpha.png"))


def test_without_ray_one_line_naming_the_extra(tree, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    assert main([str(tree), "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "pip install 'colorizer[archive]'" in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("args, message", [
    ([], "give one source"),
    (["PHOTOS", "--hf", "x"], "give one source"),
    (["PHOTOS", "-t", "2"], "--temperature"),
    (["PHOTOS", "--batch-size", "0"], "--batch-size must be positive"),
])
def test_bad_arguments_one_line(tree, tmp_path, capsys, args, message):
    argv = [str(tree) if a == "PHOTOS" else a for a in args]
    assert main([*argv, "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err


def test_output_paths_mirror_the_tree_and_stay_inside_the_output_folder(tmp_path):
    root = tmp_path / "scans"
    for name in ("a/b.jpg", "a/b.png", "a/c.tif", "d.jpeg"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b"x")
    rows = _file_rows([root], tmp_path / "out")
    assert {r["key"]: r["name"] for r in rows} == {"a/b.jpg": "a/b.jpg", "a/b.png": "a/b.png", "a/c.tif": "a/c",
                                                  "d.jpeg": "d"}  # b.jpg and b.png keep their suffixes
    assert _output_path(tmp_path, "a/c", ".png") == tmp_path / "a" / "c.png"
    assert _output_path(tmp_path, "a/b.jpg", ".png") == tmp_path / "a" / "b.jpg.png"
    for hostile in ("../escape", "/etc/passwd", "a/../../b", ""):
        with pytest.raises(ValueError, match="not a name an output can have"):
            _output_path(tmp_path, hostile, ".png")


def test_manifest_survives_a_line_cut_short(tmp_path):
    path = tmp_path / MANIFEST
    path.write_text(json.dumps({"key": "a", "error": None}) + "\n" + '{"key": "b", "err')  # killed mid-line
    assert list(read_manifest(path)) == ["a"]
    manifest = _Manifest(path)
    manifest.append([{"key": "c", "error": None}])
    manifest.close()
    assert list(read_manifest(path)) == ["a", "c"]


def test_jpeg_keeps_alpha_as_png():
    rgba = Image.new("RGBA", (8, 8), (10, 20, 30, 40))
    data_, suffix = encode(rgba, "jpeg")
    assert suffix == ".png" and Image.open(io.BytesIO(data_)).mode == "RGBA"
    data_, suffix = encode(rgba.convert("RGB"), "jpeg")
    assert suffix == ".jpg" and Image.open(io.BytesIO(data_)).format == "JPEG"
