import io

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import color as skcolor
from skimage import data

from colorizer import Colorizer
from colorizer.images import ImageError, ImageTooLargeError, list_images, read_image, split_lightness


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return Colorizer(width=0.125, input_size=64).eval()


def _save(img: Image.Image, path, **kw):
    img.save(path, **kw)
    return path


def test_zero_byte_file(tmp_path):
    p = tmp_path / "empty.jpg"
    p.write_bytes(b"")
    with pytest.raises(ImageError, match="empty file"):
        read_image(p)
    with pytest.raises(ImageError, match="empty data"):
        read_image(b"")


def test_truncated_file(tmp_path):
    full = _save(Image.fromarray(data.astronaut()), tmp_path / "full.jpg")
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(full.read_bytes()[:4000])
    with pytest.raises(ImageError, match="truncated"):
        read_image(cut)


def test_not_an_image(tmp_path):
    p = tmp_path / "notes.jpg"
    p.write_text("this is not a photo")
    with pytest.raises(ImageError, match="not a readable image file") as e:
        read_image(p)
    assert "PIL" not in str(e.value)  # the user's words, not the library's
    with pytest.raises(ImageError, match="no such file"):
        read_image(tmp_path / "missing.png")
    with pytest.raises(ImageError, match="directory"):
        read_image(tmp_path)
    with pytest.raises(ImageError, match="expected a path"):
        read_image(3.5)


def test_decompression_bomb_is_refused_before_decoding(tmp_path):
    bomb = _save(Image.new("1", (12000, 10000)), tmp_path / "bomb.png")  # 120 MP, a few kB on disk
    assert bomb.stat().st_size < 100_000
    with pytest.raises(ImageTooLargeError, match="over the limit"):
        read_image(bomb)
    with pytest.raises(ImageTooLargeError):
        read_image(np.zeros((100, 100), np.uint8), max_pixels=5000)


def test_16_bit_gray_keeps_precision(tmp_path, model):
    ramp = (np.linspace(0, 65535, 64 * 80).reshape(64, 80)).astype(np.uint16)
    p = _save(Image.fromarray(ramp), tmp_path / "deep.png")
    img = read_image(p)
    assert img.mode == "F"
    l = split_lightness(img).l[0, 0].numpy()
    ref = skcolor.rgb2lab(np.repeat((ramp / 65535.0)[..., None], 3, axis=2))[..., 0]
    assert np.abs(l - ref).max() < 1e-3
    # distinct 16-bit levels that 8 bits would merge stay distinct
    assert len(np.unique(l)) > 256
    assert model.colorize(p).size == (80, 64)


def test_cmyk_jpeg(tmp_path, model):
    p = _save(Image.fromarray(data.coffee()).convert("CMYK"), tmp_path / "cmyk.jpg")
    img = read_image(p)
    assert img.mode == "RGB"
    assert model.colorize(p).mode == "RGB"


def test_palette_with_transparency_keeps_alpha(tmp_path, model):
    pal = Image.fromarray(data.chelsea()).quantize(16)
    pal.info["transparency"] = 0
    p = _save(pal, tmp_path / "pal.png", transparency=0)
    img = read_image(p)
    assert img.mode == "RGBA"
    out = model.colorize(p)
    assert out.mode == "RGBA"
    assert np.array_equal(np.asarray(out)[..., 3], np.asarray(img)[..., 3])
    assert (np.asarray(out)[..., 3] == 0).any()
    assert read_image(_save(Image.fromarray(data.chelsea()).quantize(16), tmp_path / "p.png")).mode == "RGB"


def test_la_and_rgba_modes(tmp_path, model):
    la = Image.fromarray(data.camera()).convert("LA")
    la.putalpha(128)
    out = model.colorize(la)
    assert out.mode == "RGBA" and (np.asarray(out)[..., 3] == 128).all()


def test_exif_rotation_is_applied(tmp_path, model):
    img = Image.fromarray(np.zeros((20, 40, 3), np.uint8))  # 40 wide, 20 high
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    p = _save(img, tmp_path / "rot.jpg", exif=exif)
    assert read_image(p).size == (20, 40)
    assert model.colorize(p).size == (20, 40)


def test_animated_gif_uses_first_frame(tmp_path, model):
    frames = [Image.new("L", (30, 20), v) for v in (10, 128, 250)]
    p = tmp_path / "anim.gif"
    frames[0].save(p, save_all=True, append_images=frames[1:], duration=100)
    img = read_image(p)
    assert img.size == (30, 20)
    assert np.asarray(img.convert("L")).mean() == pytest.approx(10, abs=1)
    assert model.colorize(p).size == (30, 20)


@pytest.mark.parametrize(
    "array,mode",
    [
        (np.zeros((8, 9), np.uint8), "L"),
        (np.zeros((8, 9), np.uint16), "F"),
        (np.zeros((8, 9), np.float32), "F"),
        (np.zeros((8, 9), bool), "L"),
        (np.zeros((8, 9, 1), np.uint8), "L"),
        (np.zeros((8, 9, 3), np.float64), "RGB"),
        (np.zeros((8, 9, 4), np.uint8), "RGBA"),
    ],
)
def test_arrays(array, mode):
    img = read_image(array)
    assert img.mode == mode and img.size == (9, 8)


@pytest.mark.parametrize(
    "array,match",
    [
        (np.zeros((8, 9, 2), np.uint8), "expected an array"),
        (np.full((4, 4), np.nan, np.float32), "NaN"),
        (np.full((4, 4), 3.0), r"\[0, 1\]"),
        (np.zeros((4, 4), np.complex64), "dtype"),
        (np.zeros((0, 4), np.uint8), "no pixels"),
    ],
)
def test_bad_arrays(array, match):
    with pytest.raises(ImageError, match=match):
        read_image(array)


def test_bytes_input(model):
    buf = io.BytesIO()
    Image.fromarray(data.coffee()).save(buf, format="PNG")
    assert model.colorize(buf.getvalue()).size == (600, 400)


def test_float_tiff_in_8_bit_levels_is_normalised(tmp_path, model):
    ramp = np.round(np.linspace(0, 255, 40 * 50, dtype=np.float32)).reshape(40, 50)
    p = _save(Image.fromarray(ramp), tmp_path / "float.tif")
    l = split_lightness(read_image(p)).l
    assert 0.0 <= l.min() and l.max() <= 100.0 + 1e-3 and l.max() > 99
    bad = _save(Image.fromarray(np.full((4, 4), -3.0, np.float32)), tmp_path / "neg.tif")
    with pytest.raises(ImageError, match="neg.tif: pixel values .* negative"):
        read_image(bad)


def test_unusual_value_ranges_are_scaled_with_a_warning_never_silently(tmp_path):
    """Floats up to 1000 and int32 up to 255000 are neither 8- nor 16-bit: scaled by their
    maximum with a warning naming the file, not read as nearly black or clipped to white."""
    cases = {"float1000.tif": np.linspace(0, 1000, 400, dtype=np.float32).reshape(20, 20),
             "int32.tif": np.linspace(0, 255000, 400).astype(np.int32).reshape(20, 20)}
    for name, a in cases.items():
        p = _save(Image.fromarray(a), tmp_path / name)
        with pytest.warns(UserWarning, match=f"{name}: pixel values .* scaled by their maximum"):
            img = read_image(p)
        v = np.asarray(img)
        assert img.mode == "F" and v.max() == pytest.approx(1.0) and v[10, 10] == pytest.approx(a[10, 10] / a.max(), rel=1e-5)
    p = _save(Image.fromarray(np.full((4, 4), 40000, np.int32)), tmp_path / "16bit-in-int32.tif")
    assert np.asarray(read_image(p)).max() == pytest.approx(40000 / 65535)


def test_odd_arrays_modes_and_files_are_image_errors(tmp_path):
    import os

    with pytest.raises(ImageError, match="no pixels"):
        read_image(np.zeros((64, 0), np.float32))
    la = Image.new("La", (8, 8))
    assert read_image(la).mode == "LA"
    loop = tmp_path / "loop.jpg"
    os.symlink(loop, loop)
    with pytest.raises(ImageError, match="symbolic link"):
        read_image(loop)
    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)
    with pytest.raises(ImageError, match="not a regular file"):
        read_image(fifo)


def test_grayscale_detection_and_short_side_resize():
    from colorizer.images import is_grayscale, resize_short_side

    gray_rgb = np.repeat(data.camera()[..., None], 3, axis=2)
    assert is_grayscale(Image.fromarray(data.camera())) and is_grayscale(gray_rgb)
    assert not is_grayscale(data.coffee())
    img = Image.fromarray(data.coffee())  # 600 x 400
    assert resize_short_side(img, 200).size == (300, 200)
    assert resize_short_side(img, 800).size == (600, 400)
    assert resize_short_side(img, 800, upscale=True).size == (1200, 800)


# ---------------------------------------------------------------- listing folders
def test_list_images_recursive_with_include_and_exclude(tmp_path):
    for rel in ["food/A010.jpeg", "food/A011.jpeg", "food/B020.png", "wallpapers/Kite.jpg",
                "wallpapers/Storm.jpg", "wallpapers/Aqua.jpg", "notes.txt"]:
        (tmp_path / rel).parent.mkdir(exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    everything = list_images([tmp_path])
    assert [p.name for p in everything] == ["A010.jpeg", "A011.jpeg", "B020.png", "Aqua.jpg", "Kite.jpg", "Storm.jpg"]
    held_out = list_images([tmp_path], include=["food/*0.*", "wallpapers/Kite.*", "wallpapers/Storm.*"])
    assert [p.name for p in held_out] == ["A010.jpeg", "B020.png", "Kite.jpg", "Storm.jpg"]
    training = list_images([tmp_path], exclude=["food/*0.*", "wallpapers/Kite.*", "wallpapers/Storm.*"])
    assert [p.name for p in training] == ["A011.jpeg", "Aqua.jpg"]
    assert [p.name for p in list_images([tmp_path / "food" / "A011.jpeg"], include=["A01*"])] == ["A011.jpeg"]
    with pytest.raises(FileNotFoundError, match="missing"):
        list_images([tmp_path / "missing"])
    assert [p.name for p in list_images([tmp_path / "missing", tmp_path / "food"], missing="keep")] == [
        "missing", "A010.jpeg", "A011.jpeg", "B020.png"]


def test_list_images_skips_hidden_files_and_folders_and_matches_suffixes_in_any_case(tmp_path):
    for rel in ["a/.hidden/x.jpg", "a/.y.png", "a/b/Z.JPG", "a/c.Tif", "a/d.jpg.txt"]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    assert [p.relative_to(tmp_path).as_posix() for p in list_images([tmp_path / "a"])] == ["a/b/Z.JPG", "a/c.Tif"]
    with pytest.raises(ValueError, match="missing"):
        list_images([tmp_path], missing="ignore")


def test_animations_close_their_file_and_opaque_webp_frames_stay_rgb(tmp_path):
    import gc
    import warnings

    frames = [Image.fromarray(data.chelsea()).resize((64, 48)), Image.fromarray(data.coffee()).resize((64, 48))]
    for name in ("anim.gif", "anim.tif", "anim.webp"):
        frames[0].save(tmp_path / name, save_all=True, append_images=frames[1:])
        with warnings.catch_warnings():
            warnings.simplefilter("error", ResourceWarning)
            img = read_image(tmp_path / name)
            gc.collect()
        assert img.size == (64, 48)
        if name == "anim.webp":
            assert img.mode == "RGB"  # no transparency: no alpha channel made up


def test_a_pixel_limit_above_pillows_own_is_ours(tmp_path):
    """Pillow refuses more than about 179 MP on its own; a larger --max-pixels is honoured,
    and a photo over our limit is refused with our limit in the message."""
    big = tmp_path / "big.png"
    Image.new("1", (15000, 12000)).save(big)  # 180 megapixels in a few kB
    with pytest.raises(ImageTooLargeError, match="big.png: 180,000,000 pixels is over the limit of 100,000,000"):
        read_image(big, max_pixels=100_000_000)
    img = read_image(big, max_pixels=200_000_000)
    assert img.size == (15000, 12000)
    assert Image.MAX_IMAGE_PIXELS and Image.MAX_IMAGE_PIXELS < 100_000_000  # Pillow's own cap is left as it was


def _gray_icc(gamma: float) -> bytes:
    """A minimal ICC v2 gray display profile: a gamma curve (kTRC) and the D50 white point."""
    import struct

    def s15(x):
        return struct.pack(">i", round(x * 65536))

    text = b"gray gamma\0"
    desc = b"desc" + bytes(4) + struct.pack(">I", len(text)) + text + bytes(4 + 4 + 2 + 1 + 67)
    tags = [(b"desc", desc), (b"wtpt", b"XYZ " + bytes(4) + s15(0.9642) + s15(1.0) + s15(0.8249)),
            (b"kTRC", b"curv" + bytes(4) + struct.pack(">IH", 1, round(gamma * 256)) + bytes(2)),
            (b"cprt", b"text" + bytes(4) + b"none\0")]
    offset, table, body = 128 + 4 + 12 * len(tags), b"", b""
    for sig, tag in tags:
        tag += bytes(-len(tag) % 4)
        table += sig + struct.pack(">II", offset + len(body), len(tag))
        body += tag
    header = (struct.pack(">I", offset + len(body)) + b"lcms" + bytes([2, 0x10, 0, 0]) + b"mntrGRAYXYZ " + bytes(12)
              + b"acsp" + bytes(16 + 8 + 4) + s15(0.9642) + s15(1.0) + s15(0.8249) + bytes(4 + 16 + 28))
    assert len(header) == 128
    return header + struct.pack(">I", len(tags)) + table + body


def test_gray_icc_profiles_are_applied(tmp_path):
    """A gray photo's ICC profile (gray gamma 1.8 here) is converted to sRGB like a colour
    one's: once ignored, its lightness was off by 5 on average; it stays a gray (L, LA) photo."""
    from colorizer.color import y_to_l

    ramp = np.tile(np.arange(256, dtype=np.uint8), (4, 1))
    truth = y_to_l((torch.arange(256) / 255.0) ** 1.8)
    for mode in ("L", "LA"):
        p = _save(Image.fromarray(ramp).convert(mode), tmp_path / f"gamma18-{mode}.png", icc_profile=_gray_icc(1.8))
        img = read_image(p)
        assert img.mode == mode
        err = (split_lightness(img).l[0, 0, 0] - truth).abs()
        assert err.mean() < 0.2 and err.max() < 0.5, (err.mean(), err.max())
    assert (split_lightness(read_image(ramp)).l[0, 0, 0] - truth).abs().mean() > 4  # what ignoring it gave


@pytest.mark.parametrize("mode,colour", [("L", 7), ("RGB", (1, 2, 3))])
def test_a_transparent_colour_is_kept_as_alpha(tmp_path, model, mode, colour):
    """Gray and RGB PNGs with a tRNS chunk, and a PIL image with info['transparency'], keep
    their transparency as alpha (once RGB out), as palette transparency always was."""
    pixels = Image.fromarray(data.camera()[::8, ::8].clip(10, 255)).convert(mode)  # the colour is nowhere else
    pixels.paste(colour, (0, 0, 20, 20))
    p = _save(pixels, tmp_path / "trns.png", transparency=colour)
    img = read_image(p)
    assert img.mode == {"L": "LA", "RGB": "RGBA"}[mode]
    alpha = np.asarray(img)[..., -1]
    assert (alpha[:20, :20] == 0).all() and (alpha[20:] == 255).all()
    out = model.colorize(p)
    assert out.mode == "RGBA" and np.array_equal(np.asarray(out)[..., 3], alpha)
    given = pixels.copy()
    given.info["transparency"] = colour
    assert np.array_equal(np.asarray(model.colorize(given))[..., 3], alpha)
    assert read_image(pixels).mode == mode  # no transparency: no alpha made up


def test_a_16_bit_gray_png_keeps_its_transparent_colour_as_alpha(tmp_path, model):
    """A 16-bit gray PNG with a tRNS chunk: alpha kept (as LA, its gray to 8 bits)."""
    a = (data.camera()[::8, ::8].astype(np.uint16) * 257).clip(2570, 65535)
    a[:20, :20] = 1234  # the transparent level, nowhere else
    Image.fromarray(a).save(tmp_path / "trns16.png", transparency=1234)
    img = read_image(tmp_path / "trns16.png")
    assert img.mode == "LA"
    alpha = np.asarray(img)[..., 1]
    assert (alpha[:20, :20] == 0).all() and (alpha[20:] == 255).all()
    assert np.array_equal(np.asarray(img)[20:, :, 0], np.round(a[20:] / 257).astype(np.uint8))
    out = model.colorize(tmp_path / "trns16.png")
    assert out.mode == "RGBA" and np.array_equal(np.asarray(out)[..., 3], alpha)
    Image.fromarray(a).save(tmp_path / "plain16.png")
    assert read_image(tmp_path / "plain16.png").mode == "F"  # no transparency: still 16-bit gray, no alpha


def test_file_objects_and_memoryviews_are_read(model):
    """io.BytesIO, an open file and memoryview (what web frameworks and requests hand over)
    read like bytes; a text-mode file or a closed one is one line."""
    buf = io.BytesIO()
    Image.fromarray(data.coffee()[::4, ::4]).save(buf, format="PNG")
    encoded = buf.getvalue()
    expected = np.asarray(model.colorize(encoded))
    for given in (io.BytesIO(encoded), memoryview(encoded), bytearray(encoded)):
        assert np.array_equal(np.asarray(model.colorize(given)), expected)
    with pytest.raises(ImageError, match="gives str, not bytes .*'rb'"):
        read_image(io.StringIO("not bytes"))
    closed = io.BytesIO(encoded)
    closed.close()
    with pytest.raises(ImageError, match="the file object cannot be read"):
        read_image(closed)
    with pytest.raises(ImageError, match="empty data"):
        read_image(io.BytesIO())


def test_big_endian_arrays_are_read():
    """A big-endian uint16 (or float) array reads as its little-endian twin (once refused)."""
    a = (np.arange(48 * 64).reshape(48, 64) * 21).astype(np.uint16)
    for dtype in (">u2",):
        assert np.array_equal(np.asarray(read_image(a.astype(dtype))), np.asarray(read_image(a)))
    rgb = data.coffee()[::8, ::8] / 255.0
    assert np.array_equal(np.asarray(read_image(rgb.astype(">f8"))), np.asarray(read_image(rgb)))


def test_a_large_xmp_chunk_is_read_and_a_text_bomb_refused():
    """A valid PNG with 2.4 MB of compressed XMP (over Pillow's 1 MB text cap) is read; a
    zTXt chunk that inflates past 16 MB is still refused, and Pillow's cap is left as it was."""
    from PIL import PngImagePlugin

    cap = PngImagePlugin.MAX_TEXT_CHUNK
    info = PngImagePlugin.PngInfo()
    info.add_itxt("XML:com.adobe.xmp", "<x:xmpmeta>" + "0123456789abcdef" * 150_000 + "</x:xmpmeta>", zip=True)
    buf = io.BytesIO()
    Image.fromarray(data.camera()[::8, ::8]).save(buf, format="PNG", pnginfo=info)
    assert np.array_equal(np.asarray(read_image(buf.getvalue())), data.camera()[::8, ::8])
    bomb = PngImagePlugin.PngInfo()
    bomb.add_text("comment", "\0" * 40_000_000, zip=True)
    buf = io.BytesIO()
    Image.new("L", (8, 8)).save(buf, format="PNG", pnginfo=bomb)
    with pytest.raises(ImageError, match="image: a PNG text chunk decompresses to over 16 MB"):
        read_image(buf.getvalue())
    assert PngImagePlugin.MAX_TEXT_CHUNK == cap


def test_no_file_is_left_open(tmp_path):
    """GIF, ICO and truncated PNG or JPEG files are closed after reading, read or refused
    (once "unclosed file" ResourceWarnings)."""
    import gc
    import warnings

    photo = Image.fromarray(data.coffee()[::4, ::4])
    for name in ("a.gif", "a.ico", "a.png", "a.jpg"):
        photo.save(tmp_path / name)
    for name in ("a.png", "a.jpg"):
        (tmp_path / f"cut-{name}").write_bytes((tmp_path / name).read_bytes()[:3000])
    for name in ("a.gif", "a.ico", "cut-a.png", "cut-a.jpg"):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                read_image(tmp_path / name)
            except ImageError as e:
                assert name.startswith("cut-"), e
            gc.collect()
        assert not [w for w in caught if issubclass(w.category, ResourceWarning)], name


@pytest.mark.parametrize("bad,error,match", [("10", TypeError, "max_pixels must be a whole number.*str '10'"),
                                             (0, ValueError, r"pixels >= 1 or None \(no limit\), got 0"),
                                             (2.5, TypeError, "float 2.5"), (True, TypeError, "bool")])
def test_a_bad_pixel_limit_is_one_line_not_an_image_error(bad, error, match):
    with pytest.raises(error, match=match) as e:
        read_image(data.camera(), max_pixels=bad)
    assert not isinstance(e.value, ImageError)
    assert read_image(data.camera(), max_pixels=np.int64(512 * 512)).size == (512, 512)
