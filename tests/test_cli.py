import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data

from colorizer.cli import main, plan_outputs
from colorizer.errors import first_line


@pytest.fixture
def photos(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray(data.coffee()).convert("L").save(src / "coffee.jpg")
    Image.fromarray(data.chelsea()).save(src / "cat.png")
    (src / "empty.jpg").write_bytes(b"")
    (src / "readme.txt").write_text("not a photo")
    return src


def test_colorizes_files_and_folders(tmp_path, photos, model_dir, capsys):
    out = tmp_path / "out"
    rc = main([str(photos / "coffee.jpg"), str(photos / "cat.png"), "-o", str(out), "-m", str(model_dir), "-q",
               "--uncertainty"])
    assert rc == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "cat.png", "cat.uncertainty.png", "coffee.png", "coffee.uncertainty.png"]
    assert Image.open(out / "coffee.png").size == (600, 400)
    assert Image.open(out / "coffee.png").mode == "RGB"


def test_bad_file_one_line_goes_on_and_exits_nonzero(tmp_path, photos, model_dir, capsys):
    out = tmp_path / "out"
    rc = main([str(photos), "-o", str(out), "-m", str(model_dir), "-q"])  # folder: 3 images, one empty
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1
    assert {p.name for p in out.iterdir()} == {"coffee.png", "cat.png"}
    errors = [line for line in err if "error" in line]
    assert len(errors) == 1 and "empty.jpg: empty file" in errors[0]
    assert "Traceback" not in "\n".join(err)


def test_never_overwrites_an_input(tmp_path, photos, model_dir, capsys):
    before = (photos / "cat.png").read_bytes()
    rc = main([str(photos / "cat.png"), "-o", str(photos), "-m", str(model_dir), "-q", "--overwrite"])
    assert rc == 1 and (photos / "cat.png").read_bytes() == before
    assert "would replace an input" in capsys.readouterr().err


def test_existing_output_kept_unless_overwrite(tmp_path, photos, model_dir, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "coffee.png").write_bytes(b"keep me")
    assert main([str(photos / "coffee.jpg"), "-o", str(out), "-m", str(model_dir), "-q"]) == 0  # skipped, not failed
    assert (out / "coffee.png").read_bytes() == b"keep me"
    assert "1 of 1 photo(s) skipped" in capsys.readouterr().err
    assert main([str(photos / "coffee.jpg"), "-o", str(out), "-m", str(model_dir), "-q", "--overwrite"]) == 0
    assert Image.open(out / "coffee.png").size == (600, 400)


def test_same_stems_get_distinct_outputs(tmp_path):
    plan = plan_outputs([tmp_path / "a" / "x.jpg", tmp_path / "b" / "x.png", tmp_path / "X.tif"], tmp_path / "o")
    assert [p.name for p in plan] == ["x.png", "x-2.png", "X-3.png"]


def test_usage_errors_exit_2(tmp_path, photos, model_dir, capsys):
    assert main([str(photos / "cat.png"), "-o", str(tmp_path), "-t", "3"]) == 2
    assert main([str(photos / "cat.png"), "-o", str(tmp_path / "o"), "-m", str(tmp_path / "nothing-here")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(line.startswith("colorizer: error:") for line in err)


def test_temperature_changes_the_result(tmp_path, photos, model_dir):
    for t in ("0.05", "1.0"):
        assert main([str(photos / "cat.png"), "-o", str(tmp_path / t), "-m", str(model_dir), "-q", "-t", t]) == 0
    a = np.asarray(Image.open(tmp_path / "0.05" / "cat.png"))
    b = np.asarray(Image.open(tmp_path / "1.0" / "cat.png"))
    assert not np.array_equal(a, b)


def test_a_rerun_into_the_photos_folder_skips_done_work_and_its_own_outputs(tmp_path, photos, model_dir, capsys):
    """-o at the photos' folder, run twice: the second run neither fails on the existing
    outputs nor colorizes them (they carry colorizer's mark), and exits 0."""
    (photos / "empty.jpg").unlink()
    (photos / "cat.png").rename(photos / "cat.tif")  # the output cat.png must not be an input's name
    Image.open(photos / "cat.tif").save(photos / "cat.tif")
    assert main([str(photos), "-o", str(photos), "-m", str(model_dir), "-q"]) == 0
    made = sorted(p.name for p in photos.iterdir())
    assert made == ["cat.png", "cat.tif", "coffee.jpg", "coffee.png", "readme.txt"]
    capsys.readouterr()
    assert main([str(photos), "-o", str(photos), "-m", str(model_dir)]) == 0
    assert sorted(p.name for p in photos.iterdir()) == made  # no cat-2.png, no coffee-2.png
    err = capsys.readouterr().err
    assert "2 of 2 photo(s) skipped" in err and "error" not in err


def test_a_bad_model_device_or_pixel_limit_is_one_line_and_creates_nothing(tmp_path, photos, model_dir, capsys):
    out = tmp_path / "never"
    assert main([str(photos / "cat.png"), "-o", str(out), "-m", "defualt"]) == 2
    assert main([str(photos / "cat.png"), "-o", str(out), "-m", str(model_dir), "--max-pixels", "-5"]) == 2
    assert main([str(photos / "cat.png"), "-o", str(out), "-m", str(model_dir), "--device", "tpu9"]) == 2
    if not torch.cuda.is_available():
        assert main([str(photos / "cat.png"), "-o", str(out), "-m", str(model_dir), "--device", "cuda"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert all(line.startswith("colorizer: error:") for line in err) and not out.exists()
    assert "did you mean 'default'" in err[0] and "--max-pixels" in err[1] and "tpu9" in err[2]
    assert main([str(photos / "cat.png"), "-o", str(out), "-m", str(model_dir), "-q", "--suffix=-color"]) == 0
    assert (out / "cat-color.png").is_file()  # the --help example works as typed


def test_a_symlink_loop_among_the_arguments_fails_alone(tmp_path, photos, model_dir, capsys):
    import os

    loop = tmp_path / "loop.png"
    os.symlink(loop, loop)
    rc = main([str(loop), str(photos / "cat.png"), "-o", str(tmp_path / "out"), "-m", str(model_dir), "-q"])
    err = capsys.readouterr().err
    assert rc == 1 and (tmp_path / "out" / "cat.png").is_file() and "Traceback" not in err
    assert "loop.png: a symbolic link that leads nowhere" in err


def test_overlapped_and_sequential_write_the_same_files(tmp_path, photos, model_dir, capsys):
    """--overlap decodes, colorizes and writes in threads; the files, the failures reported
    and the exit status are those of one photo at a time."""
    for name, extra in (("a", ["--overlap"]), ("b", ["--sequential"])):
        rc = main([str(photos), "-o", str(tmp_path / name), "-m", str(model_dir), "-q", "--uncertainty"] + extra)
        assert rc == 1  # empty.jpg
        assert capsys.readouterr().err.count("empty.jpg") >= 1
    names = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert names == sorted(p.name for p in (tmp_path / "b").iterdir()) == [
        "cat.png", "cat.uncertainty.png", "coffee.png", "coffee.uncertainty.png"]
    for n in names:
        assert np.array_equal(np.asarray(Image.open(tmp_path / "a" / n)), np.asarray(Image.open(tmp_path / "b" / n)))


def test_worker_processes_write_what_one_process_writes(tmp_path, photos, model_dir, capsys):
    """--workers 2: two spawned processes share the photos; the files (within 1 level: a network
    on one thread sums in another order than on two), the failure
    lines (one each) and the exit status are those of one process, and an unwritable output
    is reported from a worker too. --workers on a GPU device or below 0 is a usage error."""
    rc = main([str(photos), "-o", str(tmp_path / "one"), "-m", str(model_dir), "-q", "--uncertainty"])
    assert rc == 1
    capsys.readouterr()
    (tmp_path / "two").mkdir()
    (tmp_path / "two" / ".cat.uncertainty.png.tmp").mkdir()  # cat's map cannot be written
    rc = main([str(photos), "-o", str(tmp_path / "two"), "-m", str(model_dir), "-q", "--uncertainty", "-j", "2"])
    err = capsys.readouterr().err
    assert rc == 1 and "Traceback" not in err
    assert err.count("empty.jpg") == 1 and "cat.png: cannot write the output" in err
    assert "2 of 3 photo(s) failed" in err
    for n in ("cat.png", "coffee.png", "coffee.uncertainty.png"):
        one, two = (np.asarray(Image.open(tmp_path / d / n)).astype(int) for d in ("one", "two"))
        assert one.shape == two.shape and np.abs(one - two).max() <= 1, n
    assert not (tmp_path / "two" / "cat.uncertainty.png").exists()
    assert main([str(photos), "-o", str(tmp_path / "x"), "-m", str(model_dir), "-j", "-1"]) == 2
    assert "--workers must be 0" in capsys.readouterr().err and not (tmp_path / "x").exists()


def test_a_worker_that_cannot_start_answers_one_line_for_every_photo(tmp_path, monkeypatch):
    """A worker whose model will not load keeps the reason and gives it for each photo (no
    traceback in the worker); the main process turns it into one error line."""
    import signal

    from colorizer import cli

    handler = signal.getsignal(signal.SIGINT)
    monkeypatch.setattr(cli, "_WORKER", {})
    try:
        cli._worker_start(str(tmp_path / "no-model"), {"threads": 1, "backend": "torch", "reference": None})
    finally:
        signal.signal(signal.SIGINT, handler)
    answer = cli._worker_photo(str(tmp_path / "a.png"), str(tmp_path / "b.png"), str(tmp_path / "c.png"))
    assert isinstance(answer, cli._StartFailure) and "\n" not in answer.message and answer.message


def test_an_unwritable_output_is_reported_and_the_rest_goes_on(tmp_path, photos, model_dir, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / ".coffee.png.tmp").mkdir()  # the temporary name of coffee's output is taken by a folder
    rc = main([str(photos / "coffee.jpg"), str(photos / "cat.png"), "-o", str(out), "-m", str(model_dir), "-q",
               "--overlap"])
    err = capsys.readouterr().err
    assert rc == 1 and "coffee.jpg: cannot write the output" in err and len(err.strip().splitlines()) == 2
    assert (out / "cat.png").is_file() and not (out / "coffee.png").exists()


def test_first_line_is_the_messages_first_nonblank_line_or_the_errors_type():
    assert first_line(ValueError("\n  cannot open x\n  Traceback details")) == "cannot open x"
    assert first_line(OSError("plain")) == "plain"
    assert first_line(KeyError()) == "KeyError"
    assert first_line(RuntimeError("   \n ")) == "RuntimeError"
