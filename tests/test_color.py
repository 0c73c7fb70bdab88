import numpy as np
import pytest
import torch
from skimage import color as skcolor
from skimage import data

from colorizer.color import clip_chroma, lab_to_rgb, lab_to_rgb_in_gamut, rgb_to_l, rgb_to_lab


def _chw(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))


def _hwc(t: torch.Tensor) -> np.ndarray:
    return t.detach().numpy().transpose(1, 2, 0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_rgb_to_lab_matches_skimage_on_random_colours(dtype):
    rgb = np.random.default_rng(0).random((32, 32, 3))
    ours = _hwc(rgb_to_lab(_chw(rgb).to(dtype)))
    assert np.abs(ours - skcolor.rgb2lab(rgb)).max() < 1e-3


@pytest.mark.parametrize("photo", [data.astronaut, data.coffee, data.chelsea, data.rocket])
def test_rgb_to_lab_matches_skimage_on_photos_uint8(photo):
    img = photo()
    ours = _hwc(rgb_to_lab(_chw(img)))
    assert np.abs(ours - skcolor.rgb2lab(img)).max() < 1e-3


def test_rgb_to_l_is_the_l_channel():
    img = _chw(data.coffee())
    assert torch.allclose(rgb_to_l(img), rgb_to_lab(img)[:1], atol=1e-4)


def test_lab_to_rgb_matches_skimage_in_and_out_of_gamut():
    rng = np.random.default_rng(1)
    lab = np.stack([rng.uniform(0, 100, (24, 24)), rng.uniform(-110, 110, (24, 24)),
                    rng.uniform(-110, 110, (24, 24))], axis=-1)
    with pytest.warns(UserWarning):  # skimage warns about its own negative-Z clipping
        ref = skcolor.lab2rgb(lab)
    ours = _hwc(lab_to_rgb(_chw(lab)))
    assert np.abs(ours - ref).max() < 1e-3
    assert ours.min() >= 0.0 and ours.max() <= 1.0


def test_round_trip_on_photo():
    img = torch.from_numpy(data.astronaut().transpose(2, 0, 1).astype(np.float64) / 255.0)
    assert torch.allclose(lab_to_rgb(rgb_to_lab(img)), img, atol=1e-6)


def test_batched_leading_dimensions_and_device():
    x = torch.rand(2, 4, 3, 5, 6)
    lab = rgb_to_lab(x)
    assert lab.shape == x.shape and lab.device == x.device
    assert torch.allclose(rgb_to_lab(x[1, 2]), lab[1, 2], atol=1e-5)


@pytest.mark.parametrize("shape", [(3,), (4, 5), (2, 4, 5), (1, 2, 5, 5)])
def test_bad_shapes_raise_with_the_shape(shape):
    with pytest.raises(ValueError, match=r"expected \(\*, 3, H, W\)"):
        rgb_to_lab(torch.rand(shape))
    with pytest.raises(ValueError, match=r"expected \(\*, 3, H, W\)"):
        lab_to_rgb(torch.rand(shape))


def test_bad_dtypes_raise():
    with pytest.raises(TypeError):
        rgb_to_lab(torch.ones(3, 2, 2, dtype=torch.int64))
    with pytest.raises(TypeError):
        lab_to_rgb(torch.ones(3, 2, 2, dtype=torch.uint8))


def test_gradients_float64():
    # Stay away from the piecewise thresholds, where the function is only C0.
    rgb = (torch.rand(1, 3, 3, 3, dtype=torch.float64) * 0.8 + 0.1).requires_grad_()
    assert torch.autograd.gradcheck(rgb_to_lab, (rgb,))
    lab = torch.tensor([[[[50.0]], [[20.0]], [[-10.0]]]], dtype=torch.float64).repeat(1, 1, 2, 2).requires_grad_()
    assert torch.autograd.gradcheck(lab_to_rgb, (lab,))


def test_clip_chroma_keeps_l_and_hue_and_lands_in_gamut():
    lab = torch.tensor([[90.0, 80.0, 10.0], [20.0, -100.0, 90.0], [50.0, 5.0, -5.0]]).T.reshape(3, 3, 1)
    clipped = clip_chroma(lab)
    rgb = lab_to_rgb(clipped, clip=False)
    assert rgb.min() >= -1e-3 and rgb.max() <= 1 + 1e-3
    assert torch.equal(clipped[0], lab[0])  # L untouched
    ratio = clipped[1:] / lab[1:]  # one factor for a and b: hue kept
    assert torch.allclose(ratio[0], ratio[1], atol=1e-5)
    assert torch.allclose(clipped[:, 2], lab[:, 2])  # already in gamut: unchanged
    assert (ratio[0, :2] < 1).all()


def test_lab_to_rgb_in_gamut_equals_two_step_path_and_keeps_l():
    lab = torch.stack([torch.rand(40, 50) * 100, torch.randn(40, 50) * 60, torch.randn(40, 50) * 60])
    one = lab_to_rgb_in_gamut(lab)
    assert torch.allclose(one, lab_to_rgb(clip_chroma(lab)), atol=1e-6)
    assert torch.allclose(rgb_to_lab(one)[0], lab[0], atol=1e-3)


def test_yuv_matches_skimage_both_ways():
    from skimage.color import rgb2yuv, yuv2rgb

    from colorizer.color import rgb_to_yuv, yuv_to_rgb

    rgb = data.astronaut()[::8, ::8]  # (64, 64, 3) uint8
    ours = rgb_to_yuv(torch.from_numpy(rgb).permute(2, 0, 1)).permute(1, 2, 0).double().numpy()
    np.testing.assert_allclose(ours, rgb2yuv(rgb), atol=1e-6)
    back = yuv_to_rgb(torch.from_numpy(rgb2yuv(rgb)).permute(2, 0, 1)).permute(1, 2, 0).numpy()
    np.testing.assert_allclose(back, yuv2rgb(rgb2yuv(rgb)), atol=1e-9)
    np.testing.assert_allclose(back, rgb / 255.0, atol=1e-9)
