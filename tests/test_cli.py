import contextlib
import os
import signal

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data

from colorizer import Colorizer, cli
from colorizer.cli import main, plan_outputs
from colorizer.errors import first_line
from colorizer.images import temporary_name


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
    """An input at the output's name is passed over, even with --overwrite: the photo is
    written under the next number, with a line saying why."""
    before = (photos / "cat.png").read_bytes()
    rc = main([str(photos / "cat.png"), "-o", str(photos), "-m", str(model_dir), "--overwrite"])
    assert rc == 0 and (photos / "cat.png").read_bytes() == before
    assert (photos / "cat-2.png").is_file() and "cat.png: written as cat-2.png" in capsys.readouterr().err


def test_a_file_at_the_output_name_is_kept_and_a_complete_output_skipped(tmp_path, photos, model_dir, capsys):
    """Someone's file at the output's name is never replaced (not even with --overwrite):
    the photo gets the next number. Its complete output is skipped on a rerun (exit 0),
    and redone with --overwrite."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "coffee.png").write_bytes(b"keep me")
    assert main([str(photos / "coffee.jpg"), "-o", str(out), "-m", str(model_dir)]) == 0
    assert "coffee.jpg: written as coffee-2.png" in capsys.readouterr().err
    assert Image.open(out / "coffee-2.png").size == (600, 400)
    assert main([str(photos / "coffee.jpg"), "-o", str(out), "-m", str(model_dir), "-q"]) == 0  # skipped, not failed
    assert "1 photo(s): 1 skipped (their outputs are complete)" in capsys.readouterr().err
    made = os.stat(out / "coffee-2.png").st_ino
    assert main([str(photos / "coffee.jpg"), "-o", str(out), "-m", str(model_dir), "-q", "--overwrite"]) == 0
    assert os.stat(out / "coffee-2.png").st_ino != made  # written again (a new file renamed in)
    assert (out / "coffee.png").read_bytes() == b"keep me" and sorted(p.name for p in out.iterdir()) == [
        "coffee-2.png", "coffee.png"]


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


@pytest.mark.parametrize("tiny", ["1e-40", "5e-324"])
def test_a_tiny_temperature_colours_as_the_mode(tmp_path, photos, model_dir, tiny):
    """-t below float32's smallest normal number is the limit T -> 0 (the mode), never gray."""
    for t in ("0", tiny):
        assert main([str(photos / "cat.png"), "-o", str(tmp_path / t), "-m", str(model_dir), "-q", "-t", t]) == 0
    mode = np.asarray(Image.open(tmp_path / "0" / "cat.png"))
    assert np.array_equal(np.asarray(Image.open(tmp_path / tiny / "cat.png")), mode)


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
    assert "2 photo(s): 2 skipped (their outputs are complete)" in err and "error" not in err


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
    temporary_name(tmp_path / "two" / "cat.uncertainty.png").mkdir()  # cat's map cannot be written
    rc = main([str(photos), "-o", str(tmp_path / "two"), "-m", str(model_dir), "-q", "--uncertainty", "-j", "2"])
    err = capsys.readouterr().err
    assert rc == 1 and "Traceback" not in err
    assert err.count("empty.jpg") == 1 and "cat.png: cannot write the output" in err
    assert "3 photo(s): 1 colorized, 2 failed" in err
    for n in ("cat.png", "coffee.png", "coffee.uncertainty.png"):
        one, two = (np.asarray(Image.open(tmp_path / d / n)).astype(int) for d in ("one", "two"))
        assert one.shape == two.shape and np.abs(one - two).max() <= 1, n
    assert not (tmp_path / "two" / "cat.uncertainty.png").exists()
    assert main([str(photos), "-o", str(tmp_path / "x"), "-m", str(model_dir), "-j", "-1"]) == 2
    assert "--workers must be 0" in capsys.readouterr().err and not (tmp_path / "x").exists()


def test_a_worker_that_cannot_start_answers_one_line_for_every_photo(tmp_path, monkeypatch):
    """A worker whose model will not load keeps the reason and gives it for each photo (no
    traceback in the worker); the main process turns it into one error line."""
    handler = signal.getsignal(signal.SIGINT)
    monkeypatch.setattr(cli, "_WORKER", {})
    try:
        cli._worker_start(str(tmp_path / "no-model"), {"threads": 1, "backend": "torch", "reference": None})
    finally:
        signal.signal(signal.SIGINT, handler)
    answer = cli._worker_photo(str(tmp_path / "a.png"), str(tmp_path / "b.png"), str(tmp_path / "c.png"), "0" * 16)
    assert isinstance(answer, cli._StartFailure) and "\n" not in answer.message and answer.message


def test_an_unwritable_output_is_reported_and_the_rest_goes_on(tmp_path, photos, model_dir, capsys):
    out = tmp_path / "out"
    out.mkdir()
    temporary_name(out / "coffee.png").mkdir()  # the temporary name of coffee's output is taken by a folder
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



@contextlib.contextmanager
def _no_hang(seconds: int = 120):
    """Fail (instead of stalling the suite) if the block takes over ``seconds``: SIGALRM
    interrupts even a blocked open() of a FIFO."""

    def hung(signum, frame):
        raise TimeoutError(f"still running after {seconds} s: hung")

    before = signal.signal(signal.SIGALRM, hung)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, before)


def test_a_pipe_named_like_a_png_is_refused_and_the_rest_is_done(tmp_path, photos, model_dir, capsys):
    """A FIFO named *.png, in a folder or named directly, is "not a regular file" and the
    batch goes on; nothing opens it (opening a FIFO blocks until a writer comes)."""
    os.mkfifo(photos / "p.png")
    os.mkfifo(tmp_path / "q.png")
    (photos / "empty.jpg").unlink()
    with _no_hang():
        rc = main([str(photos), str(tmp_path / "q.png"), "-o", str(tmp_path / "out"), "-m", str(model_dir), "-q"])
    lines = capsys.readouterr().err.strip().splitlines()
    assert rc == 1 and "Traceback" not in "\n".join(lines)
    assert sum("p.png: not a regular file" in line for line in lines) == 1
    assert sum("q.png: not a regular file" in line for line in lines) == 1
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["cat.png", "coffee.png"]


def test_a_rerun_maps_every_photo_to_the_same_outputs(tmp_path, photos, model_dir, capsys, monkeypatch):
    """A folder with x.png, rerun after adding x.jpg: x.png's output is skipped as complete
    (its output records its photo) and x.jpg is colorized under the next number, with a
    line; a third run does nothing. One file named twice is one photo."""
    folder = tmp_path / "d"
    folder.mkdir()
    (photos / "cat.png").rename(folder / "x.png")
    out = tmp_path / "out"
    assert main([str(folder), "-o", str(out), "-m", str(model_dir), "-q"]) == 0
    first = (out / "x.png").read_bytes()
    (photos / "coffee.jpg").rename(folder / "x.jpg")  # sorts before x.png
    assert main([str(folder), "-o", str(out), "-m", str(model_dir)]) == 0
    err = capsys.readouterr().err
    assert "x.jpg: written as x-2.png" in err and "2 photo(s): 1 colorized, 1 skipped" in err
    assert (out / "x.png").read_bytes() == first and Image.open(out / "x-2.png").size == (600, 400)
    assert main([str(folder), "-o", str(out), "-m", str(model_dir), "-q"]) == 0
    assert "2 photo(s): 2 skipped" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["x-2.png", "x.png"]
    monkeypatch.chdir(tmp_path)
    rc = main(["d/x.png", str(folder / "x.png"), "./d/../d/x.png", "-o", str(tmp_path / "twice"), "-m", str(model_dir)])
    err = capsys.readouterr().err
    assert rc == 0 and sorted(p.name for p in (tmp_path / "twice").iterdir()) == ["x.png"]
    assert err.count("the same file as d/x.png, colorized once") == 2
    assert "3 photo(s): 1 colorized, 2 left out (named twice)" in err


def test_a_photos_entropy_map_never_replaces_another_photos_colorization(tmp_path, photos, model_dir, capsys):
    """a.uncertainty.png and a.png with --uncertainty: a.png's map would be named like the
    other photo's colorization; it gets the next number instead, reported."""
    (photos / "coffee.jpg").rename(tmp_path / "a.uncertainty.png")
    (photos / "cat.png").rename(tmp_path / "a.png")
    out = tmp_path / "o"
    rc = main([str(tmp_path / "a.uncertainty.png"), str(tmp_path / "a.png"), "-o", str(out), "-m", str(model_dir),
               "--uncertainty"])
    err = capsys.readouterr().err
    assert rc == 0 and "a.png: written as a-2.png" in err
    assert sorted(p.name for p in out.iterdir()) == [
        "a-2.png", "a-2.uncertainty.png", "a.uncertainty.png", "a.uncertainty.uncertainty.png"]
    colour = Image.open(out / "a.uncertainty.png")
    assert colour.mode == "RGB" and colour.size == (600, 400)  # the coffee's colorization, not the cat's map
    assert Image.open(out / "a-2.png").size == (451, 300) and Image.open(out / "a-2.uncertainty.png").mode == "L"


def test_a_missing_entropy_map_is_made_on_a_rerun_and_the_colorization_kept(tmp_path, photos, model_dir, capsys):
    """Outputs are skipped only when complete: a map that failed to be written, or that an
    earlier run without --uncertainty did not make, is made by the rerun, which leaves the
    photo's colorization as it was."""
    out = tmp_path / "out"
    out.mkdir()
    blocker = temporary_name(out / "cat.uncertainty.png")
    blocker.mkdir()  # the map cannot be written (as on a full disk)
    args = [str(photos / "cat.png"), "-o", str(out), "-m", str(model_dir), "-q", "--uncertainty"]
    assert main(args) == 1 and not (out / "cat.uncertainty.png").exists()
    capsys.readouterr()
    blocker.rmdir()
    made = os.stat(out / "cat.png").st_ino
    assert main(args) == 0 and Image.open(out / "cat.uncertainty.png").mode == "L"
    assert os.stat(out / "cat.png").st_ino == made  # not written again
    assert main([str(photos / "coffee.jpg"), "-o", str(out), "-m", str(model_dir), "-q"]) == 0
    assert main([str(photos / "coffee.jpg"), "-o", str(out), "-m", str(model_dir), "-q", "--uncertainty"]) == 0
    assert (out / "coffee.uncertainty.png").is_file() and "error" not in capsys.readouterr().err


def test_a_named_earlier_output_is_left_out_with_a_line(tmp_path, photos, model_dir, capsys):
    """An output of colorizer named as an input is not colorized again, and says so (one
    line, counted in the summary); a folder's earlier outputs are left out quietly."""
    out = tmp_path / "out"
    assert main([str(photos / "cat.png"), "-o", str(out), "-m", str(model_dir), "-q"]) == 0
    rc = main([str(out / "cat.png"), str(photos / "coffee.jpg"), "-o", str(tmp_path / "o2"), "-m", str(model_dir)])
    err = capsys.readouterr().err
    assert rc == 0 and sorted(p.name for p in (tmp_path / "o2").iterdir()) == ["coffee.png"]
    assert f"{out / 'cat.png'}: left out: an output of colorizer" in err
    assert "2 photo(s): 1 colorized, 1 left out (outputs of colorizer)" in err
    assert main([str(out / "cat.png"), "-o", str(tmp_path / "o3"), "-m", str(model_dir)]) == 0
    assert "1 photo(s): 1 left out (outputs of colorizer)" in capsys.readouterr().err
    assert not (tmp_path / "o3").exists()


@pytest.mark.parametrize("mode", ["--sequential", "--overlap"])
def test_ctrl_c_is_one_line_and_exit_130(tmp_path, photos, model_dir, capsys, monkeypatch, mode):
    """Ctrl-C (a real SIGINT, while the second photo is colorized) in one process, one photo
    at a time or overlapped: one line, status 130; the photo written before it is whole."""
    render, calls = cli._render, []

    def interrupted(*args):
        calls.append(1)
        if len(calls) == 2:
            os.kill(os.getpid(), signal.SIGINT)
        return render(*args)

    monkeypatch.setattr(cli, "_render", interrupted)
    # Python's own handler, as in a terminal: a shell's background job (``pytest &``) starts with SIGINT ignored
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    (photos / "empty.jpg").unlink()
    out = tmp_path / "out"
    try:
        with _no_hang():
            rc = main([str(photos), "-o", str(out), "-m", str(model_dir), "-q", mode])
    finally:
        signal.signal(signal.SIGINT, previous)
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 130 and len(err) == 1 and err[0].startswith("colorizer: error: interrupted"), err
    assert [p.name for p in out.iterdir()] == ["cat.png"] and Image.open(out / "cat.png").size == (451, 300)


def test_warnings_are_one_line_naming_the_photo(tmp_path, photos, model_dir, capsys):
    """Pillow's corrupt-EXIF warning (which names no file), for each of two photos: one
    ``colorizer: warning: FILE: ...`` line each, no source path of a library."""
    from PIL import Image as PILImage

    exif = PILImage.Exif()
    exif[0x0112] = 1
    cut = exif.tobytes()[: 6 + 8 + 2 + 6]  # the IFD's first entry cut in half
    for name in ("one.jpg", "two.jpg"):
        Image.fromarray(data.camera()[:64, :64]).save(tmp_path / name, exif=cut)
    rc = main([str(tmp_path / "one.jpg"), str(tmp_path / "two.jpg"), "-o", str(tmp_path / "out"), "-m",
               str(model_dir), "-q", "--overlap"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 0 and len(err) == 2, err
    for name, line in zip(("one.jpg", "two.jpg"), err):
        assert line.startswith(f"colorizer: warning: {tmp_path / name}: Corrupt EXIF data"), line
    assert not any(".py" in line for line in err)


def test_a_255_byte_name_is_written_and_a_write_error_keeps_its_reason(tmp_path, photos, model_dir, capsys):
    """The temporary name is short, so a 255-byte output name can be written; a failed
    write's line ends with its reason, however long the path."""
    long = photos / ("x" * 251 + ".jpg")
    (photos / "coffee.jpg").rename(long)
    out = tmp_path / "out"
    assert main([str(long), "-o", str(out), "-m", str(model_dir), "-q"]) == 0
    assert (out / ("x" * 251 + ".png")).is_file()
    temporary_name(out / ("x" * 251 + ".png")).mkdir()
    rc = main([str(long), "-o", str(out), "-m", str(model_dir), "-q", "--overwrite"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1 and err[0].endswith("cannot write the output (Is a directory)"), err


def test_an_unreadable_folder_says_so_and_the_rest_goes_on(tmp_path, photos, model_dir, capsys, monkeypatch):
    """A folder that cannot be listed (permission denied, simulated: root reads any folder)
    is one line saying so, counted as a failure, not "no image files found"."""
    import errno

    locked = photos / "locked"
    locked.mkdir()
    Image.fromarray(data.camera()[:64, :64]).save(locked / "hidden.png")
    (photos / "empty.jpg").unlink()
    listing = os.scandir

    def scandir(path=".", *args):
        if os.fspath(path) in (str(locked), str(tmp_path / "alone")):
            raise PermissionError(errno.EACCES, "Permission denied", os.fspath(path))
        return listing(path, *args)

    monkeypatch.setattr(os, "scandir", scandir)
    rc = main([str(photos), "-o", str(tmp_path / "out"), "-m", str(model_dir), "-q"])
    err = capsys.readouterr().err
    assert rc == 1 and f"colorizer: error: {locked}: cannot be read (Permission denied)" in err
    assert "2 photo(s): 2 colorized; 1 folder(s) could not be read" in err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["cat.png", "coffee.png"]
    (tmp_path / "alone").mkdir()
    assert main([str(tmp_path / "alone"), "-o", str(tmp_path / "o2"), "-m", str(model_dir)]) == 1
    err = capsys.readouterr().err
    assert "alone: cannot be read (Permission denied)" in err and "no image files" not in err
