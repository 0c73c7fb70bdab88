"""train.prior: the empirical ab prior of a data set, against a hand count."""

from __future__ import annotations

import json

import numpy as np
import pytest
import skimage.color
import skimage.data
from PIL import Image

from colorizer.bins import gamut_bins
from train.config import TrainConfig
from train.prior import count_prior, main, prior_from_config, read_prior


pytestmark = pytest.mark.usefixtures("one_thread")


def nearest_by_hand(rgb: tuple[int, int, int], centres: np.ndarray) -> int:
    lab = skimage.color.rgb2lab(np.array([[rgb]], dtype=np.uint8))[0, 0]
    return int(np.argmin(((centres - lab[1:]) ** 2).sum(1)))


def test_prior_matches_a_hand_count_on_a_synthetic_image():
    centres = gamut_bins(10)
    img = np.zeros((20, 40, 3), np.uint8)
    img[:, :10] = (200, 30, 40)  # 200 pixels
    img[:, 10:25] = (20, 160, 60)  # 300 pixels
    img[:, 25:] = (128, 128, 128)  # 300 pixels, gray: ab = (0, 0)
    counter, n = count_prior([Image.fromarray(img)], centres, n_images=5, size=20)
    prior = counter.prior().numpy()
    assert n == 1 and counter.total == 800
    assert prior.sum() == pytest.approx(1.0)
    expected = np.zeros(len(centres))
    for colour, pixels in (((200, 30, 40), 200), ((20, 160, 60), 300), ((128, 128, 128), 300)):
        expected[nearest_by_hand(colour, centres.numpy())] += pixels / 800
    np.testing.assert_allclose(prior, expected, atol=1e-12)
    assert (prior > 0).sum() == 3


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("prior") / "photos"
    root.mkdir()
    for name, load in (("coffee", skimage.data.coffee), ("chelsea", skimage.data.chelsea)):
        Image.fromarray(load()).resize((48, 32)).save(root / f"{name}.png")
    Image.fromarray(skimage.data.camera()).resize((48, 32)).save(root / "gray.png")  # skipped
    (root / "broken.png").write_bytes(b"nope")  # skipped
    return root.parent


def test_prior_of_a_folder_sums_to_one_and_is_written_as_json(folder, tmp_path):
    out = tmp_path / "prior.json"
    assert (
        main(
            ["--dataset", "imagefolder", "--data-dir", str(folder), "--images", "10", "--size", "32", "--out", str(out)]
        )
        == 0
    )
    record = json.loads(out.read_text())
    prior = np.array(record["prior"])
    assert len(prior) == len(gamut_bins(10)) == len(record["class_weights"])
    assert prior.sum() == pytest.approx(1.0) and (prior >= 0).all()
    assert record["images"] == 2 and record["pixels"] == 2 * 32 * 48
    assert record["skipped"] == {"grayscale": 1, "unreadable": 1}
    weights = np.array(record["class_weights"])
    assert weights[prior.argmax()] == weights.min()  # the commonest colour weighs least
    assert read_prior(out, 10.0) == record["prior"]
    with pytest.raises(ValueError, match="grid 20"):
        read_prior(out, 20.0)


def test_prior_from_config_counts_the_same_as_the_cli(folder, tmp_path):
    cfg = TrainConfig(dataset="imagefolder", data_dir=str(folder), shuffle_buffer=0)
    a = prior_from_config(cfg, 10, size=32, progress=False)
    assert (
        main(
            [
                "--data-dir",
                str(folder),
                "--images",
                "10",
                "--size",
                "32",
                "--out",
                str(tmp_path / "p.json"),
                "--shuffle-buffer",
                "0",
            ]
        )
        == 0
    )
    b = json.loads((tmp_path / "p.json").read_text())
    np.testing.assert_allclose(a["prior"], b["prior"])


def test_prior_cli_errors_are_one_line(tmp_path, capsys):
    assert main(["--data-dir", str(tmp_path / "missing"), "--out", str(tmp_path / "p.json")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("train.prior: error:")
