import json
import math

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data

from evaluation import evaluate as ev
from colorizer.color import rgb_to_lab
from colorizer.images import list_images
from evaluation.evaluate import MEAN_AB_ROW, Photo, evaluate, load_photos, main, write_report
from colorizer.metrics import auc, colorfulness, evaluation_prior
from colorizer.model import Colorizer


def tiny_model(**kw):
    torch.manual_seed(0)
    return Colorizer(width=0.125, input_size=32, **kw).eval()


def solid(rgb, h=12, w=16):
    return np.broadcast_to(np.array(rgb, dtype=np.uint8), (h, w, 3)).copy()


@pytest.fixture(scope="module")
def photos():
    return [
        Photo("coffee", np.asarray(Image.fromarray(data.coffee()).resize((40, 30)))),
        Photo("chelsea", np.asarray(Image.fromarray(data.chelsea()).resize((36, 24)))),
        Photo("orange", solid((230, 120, 20))),
    ]


# ---------------------------------------------------------------- inputs
def test_load_photos_skips_unreadable_and_gray_and_limits(tmp_path):
    Image.fromarray(data.astronaut()).save(tmp_path / "a.png")
    Image.fromarray(data.coffee()).save(tmp_path / "b.jpg")
    Image.fromarray(data.camera()).save(tmp_path / "gray.png")  # mode L
    Image.fromarray(data.camera()).convert("RGB").save(tmp_path / "gray_rgb.png")  # black-and-white stored as RGB
    (tmp_path / "broken.jpg").write_bytes(b"not a jpeg")
    files = list_images([tmp_path])
    photos, skipped = load_photos(files, size=64)
    assert [p.name for p in photos] == ["a.png", "b.jpg"]
    assert skipped == {"unreadable": 1, "grayscale": 2}
    assert photos[0].rgb.shape == (64, 64, 3) and photos[0].rgb.dtype == np.uint8
    assert photos[1].rgb.shape == (64, 96, 3)  # 400x600 -> short side 64 (Lanczos)
    assert len(load_photos(files, size=64, limit=1)[0]) == 1
    small, _ = load_photos([tmp_path / "b.jpg"], size=1000)  # never upscaled
    assert small[0].rgb.shape == (400, 600, 3)


# ---------------------------------------------------------------- baselines
def test_baselines_and_ground_truth_rows(photos):
    report = evaluate(photos)
    assert [r.name for r in report.rows][0] == "gray (ab = 0)"
    assert report.rows[1].name == MEAN_AB_ROW == "mean ab (of this set)"
    assert "oracle" in report.settings["mean_ab_row"]
    assert report.rows[-1].name == "ground truth"
    truth = report.summary["ground truth"]
    assert truth["auc"] == 1.0 and truth["auc_rebalanced"] == 1.0 and truth["auc_per_image"] == 1.0
    assert truth["psnr"] == math.inf and truth["ssim"] == pytest.approx(1.0)
    assert truth["delta_colorfulness"] == 0.0
    assert truth["colorfulness"] == pytest.approx(np.mean([colorfulness(p.rgb) for p in photos]))

    gray = report.summary["gray (ab = 0)"]
    assert gray["colorfulness"] == 0.0  # exactly gray
    assert gray["delta_colorfulness"] == pytest.approx(truth["truth_colorfulness"])
    assert 0.0 < gray["auc"] < 1.0 and math.isfinite(gray["psnr"])
    for im in report.images:
        assert set(im["rows"]) == {r.name for r in report.rows}


def test_gray_auc_of_a_solid_colour_matches_hand_value():
    rgb = solid((230, 120, 20))
    report = evaluate([Photo("orange", rgb)])
    ab = rgb_to_lab(torch.from_numpy(rgb).permute(2, 0, 1)[None].contiguous())[0, 1:, 0, 0]
    d = float(torch.linalg.vector_norm(ab))  # gray is off by the photo's chroma everywhere
    expected = (150 - math.ceil(d) + 0.5) / 150
    assert report.summary["gray (ab = 0)"]["auc"] == pytest.approx(expected, abs=1.5 / 150)
    # the set's mean ab is this colour's ab: almost perfect, far better than gray
    assert report.summary[report.rows[1].name]["auc"] > 0.99
    assert report.settings["mean_ab"] == pytest.approx(ab.tolist(), abs=1e-3)


def test_mean_ab_is_pooled_over_all_pixels():
    red, blue = solid((200, 30, 30), 10, 10), solid((30, 30, 200), 10, 30)  # 100 and 300 pixels
    report = evaluate([Photo("r", red), Photo("b", blue)])
    lab = [rgb_to_lab(torch.from_numpy(x).permute(2, 0, 1)[None].contiguous())[0, 1:, 0, 0] for x in (red, blue)]
    expected = (lab[0] * 100 + lab[1] * 300) / 400
    assert report.settings["mean_ab"] == pytest.approx(expected.tolist(), abs=1e-3)


def test_rebalanced_auc_uses_the_evaluation_set_prior():
    # 3/4 of the pixels are gray, 1/4 red: gray predicts the common colour perfectly.
    img = solid((128, 128, 128), 8, 8)
    img[:2] = (200, 30, 30)
    report = evaluate([Photo("x", img)])
    gray = report.summary["gray (ab = 0)"]
    red_ab = rgb_to_lab(torch.from_numpy(img[:2]).permute(2, 0, 1)[None].contiguous())[:, 1:]
    miss = auc(torch.zeros_like(red_ab), red_ab)
    assert gray["auc"] == pytest.approx(0.75 + 0.25 * miss, abs=0.01)
    assert gray["auc_rebalanced"] == pytest.approx(0.5 + 0.5 * miss, abs=0.01)


def test_rebalanced_auc_is_the_metrics_definition(photos):
    """One definition: colorizer.metrics.evaluation_prior over all photos of the set."""
    report = evaluate(photos)
    labs = [rgb_to_lab(torch.tensor(p.rgb).permute(2, 0, 1)[None].contiguous()) for p in photos]
    prior = evaluation_prior(lab[:, 1:] for lab in labs)
    per_photo = [auc(torch.zeros_like(lab[:, 1:]), lab[:, 1:], prior.pixel_weights(lab[:, 1:])) for lab in labs]
    got = [im["rows"]["gray (ab = 0)"]["auc_rebalanced"] for im in report.images]
    assert got == pytest.approx(per_photo, abs=1e-3)  # gray row: L only, ab = 0 up to 8-bit rounding
    assert report.settings["pixels"] == prior.pixels == sum(p.rgb.shape[0] * p.rgb.shape[1] for p in photos)


def test_evaluate_rejects_empty_and_bad_temperature(photos):
    with pytest.raises(ValueError, match="no photos"):
        evaluate([])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        evaluate(photos, {"m": tiny_model()}, [1.5])


# ---------------------------------------------------------------- models
def test_models_run_once_per_photo_at_every_temperature(photos, monkeypatch):
    model = tiny_model()
    calls = []
    original = model.analyze
    monkeypatch.setattr(model, "analyze", lambda im, *a, **k: calls.append(1) or original(im, *a, **k))
    regression = tiny_model(objective="regression")
    report = evaluate(photos, {"tiny": model, "reg": regression}, [0.1, 0.5, 1.0], sheet_size=2)
    assert len(calls) == len(photos)
    names = [r.name for r in report.rows]
    assert names[2:-1] == ["tiny T=0.1", "tiny T=0.5", "tiny T=1", "reg (regression)"]
    assert [r.temperature for r in report.rows[2:-1]] == [0.1, 0.5, 1.0, None]
    # a lower temperature gives more saturated colours than the mean
    assert report.summary["tiny T=0.1"]["colorfulness"] != report.summary["tiny T=1"]["colorfulness"]
    for name in names[2:-1]:
        s = report.summary[name]
        assert 0.0 <= s["auc"] <= 1.0 and 0.0 <= s["auc_rebalanced"] <= 1.0 and math.isfinite(s["psnr"])
    assert list(report.sheet) == ["coffee", "orange"]  # evenly spaced, first and last
    assert list(report.sheet["coffee"]) == ["gray", "tiny T=0.5", "reg (regression)", "ground truth"]


def test_models_default_to_their_own_temperature(photos):
    report = evaluate(photos[:1], {"tiny": tiny_model(temperature=0.25)})
    assert [r.name for r in report.rows][2] == "tiny T=0.25"


# ---------------------------------------------------------------- report files
def test_write_report_files(photos, tmp_path):
    report = evaluate(photos, {"tiny": tiny_model()}, [0.2, 0.38])
    paths = write_report(report, tmp_path / "out", command="python -m evaluation x")
    assert {p.name for p in (tmp_path / "out").iterdir()} == {
        "results.md", "results.json", "sweep.png", "contact_sheet.png"}
    md = paths["markdown"].read_text()
    for row in report.rows:
        assert f"| {row.name} |" in md
    assert "| ground truth | 1.000 | 1.000 | 1.000 | 1.000 | inf |" in md
    assert "Command: `python -m evaluation x`" in md
    assert "oracle constant" in md and "| mean ab (of this set) |" in md
    saved = json.loads(paths["json"].read_text())
    assert [r["name"] for r in saved["table"]] == [r.name for r in report.rows]
    assert saved["table"][-1]["psnr"] == "inf"
    assert len(saved["images"]) == len(photos)
    assert saved["images"][0]["rows"]["tiny T=0.2"]["auc"] == pytest.approx(
        report.images[0]["rows"]["tiny T=0.2"]["auc"])
    assert "evaluation set" in saved["settings"]["prior"]
    for name in ("sweep.png", "contact_sheet.png"):
        with Image.open(tmp_path / "out" / name) as img:
            assert img.format == "PNG" and img.width > 100 and img.height > 100


# ---------------------------------------------------------------- command line
@pytest.fixture
def photo_dir(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    for name, img in [("A010", data.coffee()), ("A011", data.chelsea()), ("B020", data.astronaut())]:
        Image.fromarray(img).resize((48, 32)).save(folder / f"{name}.png")
    return folder


def test_main_end_to_end(photo_dir, tmp_path, capsys):
    model_dir = tmp_path / "model"
    tiny_model().save_pretrained(model_dir)
    out = tmp_path / "report"
    rc = main([str(photo_dir), "--include", "*0.*", "--model", str(model_dir), "--temperature", "0.1", "1",
               "--out", str(out), "--quiet", "--sheet", "2"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert f"| {model_dir} T=0.1 |" in printed and "| ground truth |" in printed
    saved = json.loads((out / "results.json").read_text())
    assert saved["settings"]["photos"] == 2 and saved["settings"]["size"] == 256
    assert [im["name"] for im in saved["images"]] == ["A010.png", "B020.png"]
    assert "--include '*0.*'" in saved["command"]
    assert (out / "sweep.png").is_file() and (out / "contact_sheet.png").is_file()


def test_main_baselines_only_with_limit(photo_dir, tmp_path):
    out = tmp_path / "r"
    assert main([str(photo_dir), "--baselines-only", "--limit", "1", "-o", str(out), "-q"]) == 0
    saved = json.loads((out / "results.json").read_text())
    assert saved["settings"]["photos"] == 1 and len(saved["table"]) == 3


@pytest.mark.parametrize(
    "args,message",
    [
        (["--baselines-only"], "give photo folders or --dataset"),
        (["{photos}", "--baselines-only", "--limit", "0"], "--limit must be at least 1"),
        (["{photos}", "--temperature", "2"], "--temperature must be in [0, 1]"),
        (["{photos}", "--model", "{tmp}/no-such-model"], "cannot load model"),
        (["{photos}", "--baselines-only", "--include", "*.gif"], "no image files found"),
        (["{tmp}/nowhere", "--baselines-only"], "no such file or folder"),
    ],
)
def test_main_errors_are_one_line(photo_dir, tmp_path, capsys, args, message):
    argv = [a.format(photos=photo_dir, tmp=tmp_path) for a in args] + ["-o", str(tmp_path / "o"), "-q"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and err.startswith("evaluation: error:")


def test_main_reads_a_local_dataset(tmp_path):
    pytest.importorskip("datasets")
    root = tmp_path / "ds" / "validation"
    for label, img in [("cat", data.chelsea()), ("coffee", data.coffee())]:
        (root / label).mkdir(parents=True)
        for i in range(2):
            Image.fromarray(img).resize((40 + i, 30)).save(root / label / f"{i}.png")
    out = tmp_path / "r"
    rc = main(["--dataset", "imagefolder", "--data-dir", str(tmp_path / "ds"), "--split", "validation",
               "--classes", "cat", "--baselines-only", "-o", str(out), "-q"])
    assert rc == 0
    saved = json.loads((out / "results.json").read_text())
    assert saved["settings"]["photos"] == 2
    assert [im["width"] for im in saved["images"]] == [40, 41]


def test_dataset_photos_limit(tmp_path):
    pytest.importorskip("datasets")
    root = tmp_path / "ds" / "train" / "x"
    root.mkdir(parents=True)
    for i in range(4):
        Image.fromarray(data.coffee()).resize((20, 16)).save(root / f"{i}.png")
    Image.fromarray(data.camera()).resize((20, 16)).save(root / "gray.png")
    photos, skipped = ev.dataset_photos("imagefolder", data_dir=str(tmp_path / "ds"), split="train", limit=3)
    assert len(photos) == 3 and photos[0].name == "train-0"
    photos, skipped = ev.dataset_photos("imagefolder", data_dir=str(tmp_path / "ds"), split="train")
    assert len(photos) == 4 and skipped == {"unreadable": 0, "grayscale": 1}


# ---------------------------------------------------------------- groups and colour cast
def test_colour_cast_is_the_distance_between_mean_colours():
    from colorizer.metrics import colour_cast

    truth = torch.zeros(1, 2, 4, 4)
    truth[:, 0] = 10.0  # a = 10 everywhere
    tinted = truth.clone()
    tinted[:, 1] += 5.0  # b shifted by 5: a cast of 5
    assert colour_cast(tinted, truth) == pytest.approx(5.0)
    assert colour_cast(torch.zeros_like(truth), truth) == pytest.approx(10.0)  # gray: the truth's own mean colour
    noisy = truth.clone()
    noisy[:, 0, :2] += 7.0
    noisy[:, 0, 2:] -= 7.0  # per-pixel errors that cancel in the mean: no cast
    assert colour_cast(noisy, truth) == pytest.approx(0.0, abs=1e-9)


def test_groups_get_their_own_tables_priors_and_sheets(tmp_path):
    rng = np.random.default_rng(0)
    photos = [Photo(f"food/{i}.png", solid((200, 120 + 10 * i, 40)), "food") for i in range(3)]
    photos += [Photo(f"sky/{i}.png", solid((60, 120, 220 - 10 * i)), "scenes") for i in range(2)]
    photos[0].rgb = np.clip(photos[0].rgb.astype(int) + rng.integers(-30, 30, photos[0].rgb.shape), 0, 255).astype(np.uint8)
    report = evaluate(photos, sheet_size=1)
    assert list(report.groups) == ["food", "scenes"] and report.settings["groups"] == {"food": 3, "scenes": 2}
    gray = "gray (ab = 0)"
    # each group's figures are those of an evaluation of its photos alone (its own prior)
    alone = evaluate([p for p in photos if p.group == "scenes"], sheet_size=0)
    for key in ("auc", "auc_rebalanced", "psnr", "cast"):
        assert report.groups["scenes"][gray][key] == pytest.approx(alone.summary[gray][key], abs=1e-9), key
    # gray's cast is how far each photo's mean colour is from neutral; the truth has none
    casts = [im["rows"][gray]["cast"] for im in report.images if im["group"] == "scenes"]
    assert report.groups["scenes"][gray]["cast"] == pytest.approx(np.median(casts)) and min(casts) > 20
    assert report.summary["ground truth"]["cast"] == pytest.approx(0.0, abs=1e-6)
    assert sorted(report.sheet) == ["food/0.png", "sky/0.png"]  # one photo per group
    paths = write_report(report, tmp_path / "out")
    assert {p.name for p in paths.values()} >= {"contact_sheet_food.png", "contact_sheet_scenes.png", "sweep_food.png",
                                              "sweep_scenes.png"}
    md = (tmp_path / "out" / "results.md").read_text()
    assert md.index("**food** (3 photos)") < md.index("**scenes** (2 photos)") < md.index("**all** (5 photos)")
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    assert [r["name"] for r in saved["groups"]["food"]] == [r.name for r in report.rows]


def test_main_groups_by_rule_or_folder_and_reads_a_list_of_photos(tmp_path, capsys):
    root = tmp_path / "photos"
    for rel, img in [("food/A010.png", data.coffee()), ("food/A011.png", data.chelsea()),
                     ("sky/x.png", data.astronaut()), ("sky/y.png", data.rocket())]:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).resize((40, 30)).save(root / rel)
    listed = tmp_path / "VALIDATION.txt"
    listed.write_text("# held out\nfood/A010.png\nsky/y.png\n")
    out = tmp_path / "r"
    assert main([str(root), "--files-from", str(listed), "--group", "food=food/*", "--other-group", "non-food",
                 "--baselines-only", "-o", str(out), "-q"]) == 0
    saved = json.loads((out / "results.json").read_text())
    assert [(im["name"], im["group"]) for im in saved["images"]] == [("food/A010.png", "food"), ("sky/y.png", "non-food")]
    assert "**non-food** (1 photos)" in capsys.readouterr().out
    assert main([str(root), "--group-by-folder", "--baselines-only", "-o", str(out), "-q"]) == 0
    assert json.loads((out / "results.json").read_text())["settings"]["groups"] == {"food": 2, "sky": 2}
    for bad, message in [(["--group", "food"], "NAME=GLOB"), (["--files-from", str(tmp_path / "no.txt")], "--files-from")]:
        assert main([str(root), "--baselines-only", "-o", str(out), "-q", *bad]) == 2
        assert message in capsys.readouterr().err


def test_models_can_be_named_for_their_rows(photo_dir, tmp_path, capsys):
    model_dir = tmp_path / "model"
    tiny_model().save_pretrained(model_dir)
    assert main([str(photo_dir), "--limit", "1", "--model", f"tiny zhang={model_dir}", "-o", str(tmp_path / "r"),
                 "-q"]) == 0  # fmt: skip
    printed = capsys.readouterr().out
    assert "| tiny zhang T=0.38 |" in printed and str(model_dir) not in printed.split("Command:")[0]
    assert main([str(photo_dir), "--model", f"a={model_dir}", "--model", f"a={model_dir}", "-o", str(tmp_path / "s"),
                 "-q"]) == 2  # fmt: skip
    assert "two models named 'a'" in capsys.readouterr().err


def test_sheet_each_writes_one_sheet_per_model_and_group(photo_dir, tmp_path):
    """--sheet-each: beside the sheet of every model, one per model column (gray | that
    model | truth): as tall as the full sheet, three columns wide."""
    from PIL import Image

    model_dir = tmp_path / "model"
    tiny_model().save_pretrained(model_dir)
    out = tmp_path / "r"
    assert main([str(photo_dir), "--limit", "2", "--model", f"one={model_dir}", "--model", f"two b={model_dir}",
                 "--sheet", "2", "--sheet-each", "-o", str(out), "-q"]) == 0  # fmt: skip
    sheets = sorted(p.name for p in (out / "sheets").iterdir())  # no groups: all photos
    assert sheets == ["one.png", "two-b.png"]  # named after the --model labels
    full = Image.open(out / "contact_sheet.png")
    each = Image.open(out / "sheets" / "one.png")
    assert each.height == full.height and each.width * 4 == pytest.approx(full.width * 3, abs=8)
