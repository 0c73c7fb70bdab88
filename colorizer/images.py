"""Reading photos of any kind into the lightness the model needs.

``read_image`` opens a path, bytes, file object, PIL image or numpy array and returns a
normalised PIL image: EXIF orientation applied, the first frame of an animation,
an embedded ICC profile converted to sRGB, pixels fully loaded. ``split_lightness``
turns that into the full-resolution CIE L (16-bit photos keep their precision) and
the alpha channel, if any. Every failure is an ``ImageError`` with a one-line message.
"""

from __future__ import annotations

import contextlib
import fnmatch
import hashlib
import io
import os
import re
import threading
import warnings
from pathlib import Path
from typing import BinaryIO, Callable, Sequence, Union

import numpy as np
import torch
from PIL import Image, ImageCms, ImageOps, PngImagePlugin, UnidentifiedImageError

from colorizer.color import _XYZ_FROM_RGB, _srgb_to_linear, rgb_to_l, y_to_l
from colorizer.errors import check_count, first_line

__all__ = [
    "ImageError",
    "ImageTooLargeError",
    "ImageInput",
    "DEFAULT_MAX_PIXELS",
    "check_max_pixels",
    "read_image",
    "split_lightness",
    "Lightness",
    "IMAGE_SUFFIXES",
    "GRAY_SPREAD",
    "channel_spread",
    "is_grayscale",
    "resize_short_side",
    "list_images",
    "OUTPUT_MARK",
    "OUTPUT_SOFTWARE",
    "temporary_name",
    "write_atomically",
]

ImageInput = Union[str, os.PathLike, bytes, bytearray, memoryview, BinaryIO, Image.Image, np.ndarray]
DEFAULT_MAX_PIXELS = 100_000_000  # a 12 MP photo is fine; a decompression bomb is not
GRAY_SPREAD = 2.0  # mean max(R,G,B) - min(R,G,B), in 8-bit levels, at or below which a photo is gray
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm"}


def list_images(
    paths: Sequence[str | os.PathLike],
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    missing: str = "error",
    on_error: Callable[[OSError], None] | None = None,
) -> list[Path]:
    """The image files of files and folders: the one folder-listing rule of every command.

    A folder gives its files with an ``IMAGE_SUFFIXES`` suffix (any case), searched
    recursively, in sorted order of their path relative to the folder; hidden files
    and folders (names starting with ".") are left out. A file given directly is kept
    whatever its suffix (reading it says whether it is an image).

    ``include`` / ``exclude`` are glob patterns (``fnmatch``, case-sensitive) matched
    against each file's path relative to the folder given, with ``/`` separators
    (``food/*0.*``), or its bare name for files given directly. A file is kept when it
    matches some ``include`` pattern (or none are given) and no ``exclude`` pattern.

    Args:
        missing: "error" raises ``FileNotFoundError`` for a path that does not exist;
            "keep" keeps it in the list, so that a command reports it with the files
            it cannot read and goes on with the others.
        on_error: called with the ``OSError`` of each folder that cannot be listed
            (permission denied, ...); by default such a folder gives no files.
    """
    if missing not in ("error", "keep"):
        raise ValueError(f"list_images: missing must be 'error' or 'keep', got {missing!r}")

    def keep(rel: str) -> bool:
        if include and not any(fnmatch.fnmatchcase(rel, g) for g in include):
            return False
        return not any(fnmatch.fnmatchcase(rel, g) for g in exclude)

    out: list[Path] = []
    for p in map(Path, paths):
        try:
            is_dir = p.is_dir()
        except OSError:  # e.g. a symlink loop: not a folder; reading it will say what it is
            is_dir = False
        if is_dir:
            found: list[tuple[str, Path]] = []
            for root, dirs, files in os.walk(p, onerror=on_error):
                dirs[:] = [d for d in dirs if not d.startswith(".")]
                for name in files:
                    if not name.startswith(".") and Path(name).suffix.lower() in IMAGE_SUFFIXES:
                        f = Path(root) / name
                        found.append((f.relative_to(p).as_posix(), f))
            out += [f for rel, f in sorted(found) if keep(rel)]
            continue
        if missing == "error" and not os.path.lexists(p):
            raise FileNotFoundError(f"{p}: no such file or folder")
        if keep(p.name):
            out.append(p)
    return out


OUTPUT_MARK = "colorizer"  # the PNG "Software" text of every output starts so: a rerun never takes one for a photo
OUTPUT_SOFTWARE = f"{OUTPUT_MARK} (colorized from the photo's lightness)"


def temporary_name(dst: Path) -> Path:
    """The hidden name ``dst`` is written under before its rename: short (a 255-byte output
    name has room for no suffix), and the same for the same ``dst``, so that the next write
    of ``dst`` replaces the one a killed run left."""
    return dst.with_name(f".colorizer-{hashlib.sha256(os.fsencode(dst.name)).hexdigest()[:16]}.tmp")


def write_atomically(dst: Path, write: Callable[[Path], object]) -> None:
    """``write(tmp)`` to ``temporary_name(dst)``, then rename it to ``dst``: a crash or a kill
    never leaves half a file (every output of the command line and of the archive command)."""
    tmp = temporary_name(dst)
    try:
        write(tmp)
        os.replace(tmp, dst)
    finally:
        tmp.unlink(missing_ok=True)


class ImageError(ValueError):
    """The input is not an image the colorizer can read."""


class ImageTooLargeError(ImageError):
    """The image has more pixels than the limit (a guard against decompression bombs)."""


def check_max_pixels(max_pixels: int | None) -> int | None:
    """The one rule for a pixel limit: None (no limit) or a whole number of pixels >= 1
    (``colorizer.errors.check_count``: a ``TypeError`` or ``ValueError``, never an
    ``ImageError``, since it is the argument that is wrong, not a photo)."""
    return None if max_pixels is None else check_count(max_pixels, "max_pixels", "pixels", " or None (no limit)")


def _check_size(width: int, height: int, max_pixels: int | None, name: str) -> None:
    if width < 1 or height < 1:
        raise ImageError(f"{name}: image has no pixels ({width}x{height})")
    if max_pixels is not None and width * height > max_pixels:
        raise ImageTooLargeError(
            f"{name}: {width}x{height} = {width * height:,} pixels is over the limit of {max_pixels:,}"
        )


def _from_array(array: np.ndarray, name: str) -> Image.Image:
    a = np.asarray(array)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] not in (3, 4)):
        raise ImageError(f"{name}: expected an array of shape (H, W), (H, W, 3) or (H, W, 4), got {a.shape}")
    if a.size == 0:
        raise ImageError(f"{name}: image has no pixels (shape {a.shape})")
    if not a.dtype.isnative:  # big-endian uint16 (">u2", as FITS and some TIFF readers give) and the like
        a = a.astype(a.dtype.newbyteorder("="))
    if a.dtype == np.bool_:
        a = a.astype(np.uint8) * 255
    elif a.dtype == np.uint16 and a.ndim == 2:
        return _gray16(a)
    elif np.issubdtype(a.dtype, np.floating):
        if not np.isfinite(a).all():
            raise ImageError(f"{name}: float array has NaN or infinite values")
        if a.min() < 0 or a.max() > 1:
            raise ImageError(f"{name}: float arrays must lie in [0, 1], got [{a.min():.3g}, {a.max():.3g}]")
        a = np.round(a * 255).astype(np.uint8) if a.ndim == 3 else a.astype(np.float32)
        if a.ndim == 2:
            return Image.fromarray(a)  # float32 (H, W): mode F
    elif a.dtype == np.uint16:
        a = (a // 257).astype(np.uint8)
    elif a.dtype != np.uint8:
        raise ImageError(f"{name}: unsupported array dtype {a.dtype} (use uint8, uint16, bool or float in [0, 1])")
    return Image.fromarray(np.ascontiguousarray(a))


def _gray16(a: np.ndarray) -> Image.Image:
    """A 16-bit grayscale array as a PIL 'F' image in [0, 1], keeping its precision."""
    return Image.fromarray(a.astype(np.float32) / 65535.0)  # mode F


_SRGB = ImageCms.createProfile("sRGB")


def _to_srgb(img: Image.Image) -> Image.Image:
    """Apply an embedded ICC profile (Adobe RGB, CMYK press profiles, gray gamma or dot-gain
    profiles of gray photos, ...) into sRGB; a gray photo stays gray (L or LA)."""
    icc = img.info.get("icc_profile")
    if not icc or img.mode not in ("RGB", "RGBA", "CMYK", "L", "LA"):
        return img
    try:
        src = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        if img.mode in ("L", "LA"):  # the gray levels through the profile to sRGB's (R = G = B), alpha kept
            gray = ImageCms.profileToProfile(img.getchannel("L"), src, _SRGB, outputMode="RGB").getchannel("G")
            return Image.merge("LA", (gray, img.getchannel("A"))) if img.mode == "LA" else gray
        out_mode = "RGBA" if img.mode == "RGBA" else "RGB"
        return ImageCms.profileToProfile(img, src, _SRGB, outputMode=out_mode)
    except (ImageCms.PyCMSError, OSError, ValueError):
        return img  # a broken profile, or one of another colour space: fall back to the plain conversion


def read_image(image: ImageInput, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Open and normalise an image.

    Args:
        image: a path, encoded bytes (``bytes``, ``bytearray``, ``memoryview``), a binary
            file object (``io.BytesIO``, an upload's stream: read from where it stands to its
            end), a PIL image, or a numpy array ``(H, W)``, ``(H, W, 3)`` or ``(H, W, 4)``
            (uint8, uint16 of either byte order, bool, or float in [0, 1]).
        max_pixels: refuse images with more pixels than this (``None``: no limit;
            ``check_max_pixels``).
    Returns:
        a loaded PIL image, upright, first frame only, in sRGB, in one of the modes
        L, LA, F (16-bit or float gray, values in [0, 1]), RGB or RGBA (transparency,
        a PNG's tRNS colour included, as alpha). A file is closed whatever happens.
    Raises:
        ImageError: unreadable, empty, truncated or unsupported input.
        ImageTooLargeError: more than ``max_pixels`` pixels.
        TypeError / ValueError: ``max_pixels`` is not None or a whole number >= 1.
    """
    max_pixels = check_max_pixels(max_pixels)
    name = "image"
    if isinstance(image, np.ndarray):
        img = _from_array(image, "array")
        _check_size(*img.size, max_pixels, "array")
        return _normalise_mode(img, "array")
    if isinstance(image, (str, os.PathLike)):
        path = Path(image)
        name = str(path)
        try:
            exists, is_dir, is_file = path.exists(), path.is_dir(), path.is_file()
        except OSError as e:  # e.g. a name too long, a permission denied on a folder on the way
            raise ImageError(f"{name}: cannot be read ({e.strerror or e})") from None
        if not exists:
            if path.is_symlink():
                raise ImageError(f"{name}: a symbolic link that leads nowhere (broken, or a loop)")
            raise ImageError(f"{name}: no such file")
        if is_dir:
            raise ImageError(f"{name}: is a directory, not an image")
        if not is_file:
            raise ImageError(f"{name}: not a regular file (a pipe, socket or device), not an image")
        if path.stat().st_size == 0:
            raise ImageError(f"{name}: empty file (0 bytes)")
        source: object = path
    elif isinstance(image, (bytes, bytearray, memoryview)) or _is_binary_file(image):
        if not isinstance(image, (bytes, bytearray, memoryview)):
            name = str(getattr(image, "name", "")) or name
            try:
                image = image.read()
            except (OSError, ValueError) as e:  # closed, or not readable
                raise ImageError(f"{name}: the file object cannot be read ({first_line(e)})") from None
            if not isinstance(image, (bytes, bytearray, memoryview)):
                raise ImageError(f"{name}: the file object gives {type(image).__name__}, not bytes (open it in "
                                 "binary mode, 'rb')")
        if not len(image):
            raise ImageError(f"{name}: empty data (0 bytes)")
        source = image
    elif isinstance(image, Image.Image):
        source = None
    else:
        raise ImageError(f"image: expected a path, bytes, a binary file object, a PIL image or a numpy array, "
                         f"got {type(image).__name__}")

    try:
        with warnings.catch_warnings():
            # We apply our own pixel limit; PIL's own warning and bomb check are lifted.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            if source is None:
                img = _first_frame(image, max_pixels, name, from_file=False)  # type: ignore[arg-type]
            else:
                img = _read(source, max_pixels, name)
    except ImageError:
        raise
    except UnidentifiedImageError:
        raise ImageError(f"{name}: not a readable image file (or a format that is not supported)") from None
    except Image.DecompressionBombError as e:  # over Pillow's own cap, and ours is lower: our words, its count
        found = re.search(r"\((\d+) pixels\)", str(e))
        size = f"{int(found.group(1)):,} pixels" if found else "the image"
        raise ImageTooLargeError(f"{name}: {size} is over the limit of {max_pixels:,}") from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        msg = str(e).strip() or type(e).__name__
        raise ImageError(f"{name}: unreadable or truncated image ({msg})") from None
    return _normalise_mode(_to_srgb(_with_transparency(img)), name)


def _is_binary_file(obj) -> bool:
    """Whether ``obj`` reads like a file (``io.BytesIO``, an open file, an upload's stream)."""
    return callable(getattr(obj, "read", None)) and not isinstance(obj, (Image.Image, np.ndarray))


TEXT_CHUNK_CAP = 16 << 20  # a PNG text chunk (XMP, say) may decompress to this much; Pillow's own cap is 1 MB


def _read(source: Path | bytes | bytearray | memoryview, max_pixels: int | None, name: str) -> Image.Image:
    """``_first_frame`` of a file or encoded bytes. A PNG text chunk that decompresses past
    Pillow's 1 MB (a photo with a few MB of XMP, whose pixels are fine) is read again with
    the cap at ``TEXT_CHUNK_CAP``; past that it is refused as a decompression bomb."""
    try:
        return _read_once(source, max_pixels, name)
    except ValueError as e:
        if "MAX_TEXT_CHUNK" not in str(e):
            raise
    with _PIL_CAP:
        cap = PngImagePlugin.MAX_TEXT_CHUNK
        PngImagePlugin.MAX_TEXT_CHUNK = max(cap, TEXT_CHUNK_CAP)
        try:
            return _read_once(source, max_pixels, name)
        except ValueError as e:
            if "MAX_TEXT_CHUNK" not in str(e):
                raise
            raise ImageError(f"{name}: a PNG text chunk decompresses to over {TEXT_CHUNK_CAP >> 20} MB; refused "
                             "as a decompression bomb") from None
        finally:
            PngImagePlugin.MAX_TEXT_CHUNK = cap


def _read_once(source: Path | bytes | bytearray | memoryview, max_pixels: int | None, name: str) -> Image.Image:
    """Open and decode; a file is opened here and closed whatever happens (Pillow leaves
    GIF, ICO and truncated files open: "unclosed file" warnings)."""
    with contextlib.ExitStack() as files:
        fp = files.enter_context(open(source, "rb")) if isinstance(source, Path) else io.BytesIO(source)
        return _first_frame(_open(fp, max_pixels), max_pixels, name, from_file=True)


def _first_frame(img: Image.Image, max_pixels: int | None, name: str, from_file: bool) -> Image.Image:
    """The image checked against ``max_pixels``, its first frame loaded (a copy, when it came
    from a file, so nothing refers to the file after), upright by its EXIF orientation."""
    _check_size(*img.size, max_pixels, name)
    animated = getattr(img, "n_frames", 1) > 1
    if animated:
        img.seek(0)  # animations: the first frame
    img.load()
    if animated and from_file:  # a multi-frame image reads its file for each frame: copy the frame
        frame = img.copy()
        img.close()
        img = frame
        if img.mode == "RGBA" and img.getextrema()[3][0] == 255:
            img = img.convert("RGB")  # animated WebP frames decode as RGBA even without transparency
    if img.getexif().get(0x0112, 1) not in (0, 1):  # EXIF orientation: turn upright (a copy)
        img = ImageOps.exif_transpose(img)
    return img


def _with_transparency(img: Image.Image) -> Image.Image:
    """A gray (8- or 16-bit) or RGB image with a transparent colour (a PNG's tRNS chunk, a PIL
    image's ``info["transparency"]``) as LA or RGBA, so its transparency is kept as alpha."""
    colour = img.info.get("transparency")
    if colour is None:
        return img
    if img.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I") and isinstance(colour, int):
        # 16-bit gray has no form with alpha here: 8-bit gray and alpha (the output is 8-bit anyway)
        a = np.asarray(img, dtype=np.int64)
        if a.min() < 0 or a.max() > 65535:
            return img
        gray = Image.fromarray(np.round(a / 257.0).astype(np.uint8))
        return Image.merge("LA", (gray, Image.fromarray(np.where(a == colour, 0, 255).astype(np.uint8))))
    if img.mode not in ("L", "RGB"):
        return img
    try:
        return img.convert("LA" if img.mode == "L" else "RGBA")
    except (ValueError, TypeError):  # a transparency of the wrong kind for the mode: none
        return img


_PIL_CAP = threading.RLock()  # Pillow's module-wide caps, changed for one read at a time (re-entered by _open)


def _open(source, max_pixels: int | None) -> Image.Image:
    """``Image.open``, with Pillow's own decompression-bomb cap (about 179 MP) raised to our
    ``max_pixels`` for this one call when that is larger (the caller checks the size itself)."""
    try:
        return Image.open(source)
    except Image.DecompressionBombError:
        if max_pixels is not None and max_pixels <= 2 * (Image.MAX_IMAGE_PIXELS or 0):
            raise
        if hasattr(source, "seek"):
            source.seek(0)
        with _PIL_CAP:
            cap = Image.MAX_IMAGE_PIXELS
            Image.MAX_IMAGE_PIXELS = None if max_pixels is None else max_pixels
            try:
                return Image.open(source)
            finally:
                Image.MAX_IMAGE_PIXELS = cap


def _scaled_gray(img: Image.Image, name: str, integer: bool) -> Image.Image:
    """A one-channel float or integer image into a float ('F') image in [0, 1]. Floats in
    [0, 1] are kept; whole numbers up to 255 are 8-bit levels; integers up to 65535 are
    16-bit ones (a 16-bit mode always is). Anything else (say floats up to 1000) is not
    guessed silently: values from 0 up to some other maximum are scaled by that maximum,
    with a warning naming the file; NaN, infinite or negative values are refused."""
    a = np.asarray(img, dtype=np.float64)
    if a.size == 0:
        raise ImageError(f"{name}: image has no pixels")
    if not np.isfinite(a).all():
        raise ImageError(f"{name}: float image has NaN or infinite values")
    lo, hi = float(a.min()), float(a.max())
    if lo < 0:
        raise ImageError(f"{name}: pixel values [{lo:.6g}, {hi:.6g}] include negative ones; not an image to colorize")
    whole = integer or bool(np.all(a == np.round(a)))
    if img.mode.startswith("I;16"):
        top = 65535.0
    elif not integer and hi <= 1.0:
        top = 1.0
    elif whole and hi <= 255.0:
        top = 255.0
    elif integer and hi <= 65535.0:
        top = 65535.0
    else:
        top = hi if hi > 0 else 1.0
        warnings.warn(f"{name}: pixel values [{lo:.6g}, {hi:.6g}] fit no usual range; scaled by their maximum",
                      stacklevel=3)
    return Image.fromarray((a / top).astype(np.float32))  # mode F


def _normalise_mode(img: Image.Image, name: str = "image") -> Image.Image:
    mode = img.mode
    if mode == "F":
        return _scaled_gray(img, name, integer=False)
    if mode in ("L", "LA", "RGB", "RGBA"):
        return img
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        return _scaled_gray(img, name, integer=True)
    try:
        if mode == "1":
            return img.convert("L")
        if mode in ("P", "PA"):
            return img.convert("RGBA" if ("transparency" in img.info or mode == "PA") else "RGB")
        if mode == "La":  # L with premultiplied alpha
            return img.convert("LA")
        if mode in ("CMYK", "YCbCr", "LAB", "HSV", "RGBX", "RGBa"):
            return img.convert("RGBA" if mode == "RGBa" else "RGB")
        return img.convert("RGB")
    except (ValueError, OSError) as e:
        raise ImageError(f"{name}: unsupported image mode {mode} ({e})") from None


class Lightness:
    """A photo split for colorization: its full-resolution CIE L and its alpha.

    An 8-bit gray photo keeps its gray levels (1 byte a pixel) and gives L by lookup, a
    strip at a time (``rows``); other photos keep L as float32. ``l`` gives the whole L
    as a tensor either way (made on first use for gray levels, then kept).

    Attributes:
        alpha: ``(H, W)`` uint8 alpha, or None.
        levels: ``(H, W)`` uint8 gray levels, or None.
    """

    def __init__(self, l: torch.Tensor | None = None, alpha: np.ndarray | None = None,
                 levels: np.ndarray | None = None):
        if (l is None) == (levels is None):
            raise ValueError("Lightness: give either l or levels")
        if levels is not None and (levels.dtype != np.uint8 or levels.ndim != 2):
            raise ValueError(f"Lightness: levels must be (H, W) uint8 gray levels, got {levels.dtype} {levels.shape}")
        self._l, self.alpha, self.levels = l, alpha, levels

    @property
    def l(self) -> torch.Tensor:
        """``(1, 1, H, W)`` float32 CIE L in [0, 100] at full resolution."""
        if self._l is None:
            width, height = self.size
            self._l = torch.cat([self.rows(top, self.strip_rows).view(1, 1, -1, width)
                                 for top in range(0, height, self.strip_rows)], dim=2)
        return self._l

    @property
    def strip_rows(self) -> int:
        """Rows of a strip for work that goes through the photo a strip at a time."""
        return max(1, _STRIP_PIXELS // self.size[0])

    @property
    def size(self) -> tuple[int, int]:
        """(width, height), as PIL gives it."""
        if self.levels is not None:
            return self.levels.shape[1], self.levels.shape[0]
        return self._l.shape[-1], self._l.shape[-2]

    def rows(self, top: int, count: int, device: torch.device | str = "cpu") -> torch.Tensor:
        """L of rows ``top`` .. ``top + count - 1`` (cut at the bottom), flattened: ``(count * W,)`` float32."""
        if self.levels is None:
            return self._l[0, 0, top : top + count].reshape(-1).to(device)
        index = torch.from_numpy(self.levels[top : top + count]).to(device).reshape(-1).to(torch.int32)
        return _level_tables(device)[0].index_select(0, index)


_STRIP_PIXELS = 1 << 18  # pixels converted at a time: no full-size float temporaries


def _level_tables(device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """L of each 8-bit gray level (256,), and Y's share of each 8-bit level of R, G and B
    (3, 256), both made with ``colorizer.color`` in float64 so that a lookup gives what
    ``rgb_to_l`` computes; made once per device."""
    key = str(torch.device(device))
    if key not in _LEVELS:
        levels = torch.arange(256, dtype=torch.float64) / 255.0
        gray = rgb_to_l(levels.view(1, 1, 256).expand(3, 1, 256)).view(256)
        row = torch.tensor(_XYZ_FROM_RGB[1], dtype=torch.float64)  # Y of linear R, G, B
        _LEVELS[key] = gray.float().to(device), (row[:, None] * _srgb_to_linear(levels)[None]).float().to(device)
    return _LEVELS[key]


_LEVELS: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}


def split_lightness(img: Image.Image) -> Lightness:
    """Full-resolution L and alpha of an image from ``read_image``.

    8-bit gray photos keep their levels (L is a lookup of them); 8-bit colour takes each
    channel's share of Y from a table, then the cube root; 16-bit and float gray use
    ``rgb_to_l``'s formula. Colour and float work in strips of rows, so no full-size float
    copy of the photo is made besides L itself.
    """
    alpha = None
    if img.mode in ("LA", "RGBA"):
        alpha = np.asarray(img.getchannel("A")).copy()
    if img.mode in ("L", "LA"):
        return Lightness(levels=np.array(img.getchannel("L") if img.mode == "LA" else img), alpha=alpha)
    width, height = img.size
    out = torch.empty(1, 1, height, width)
    flat = out.view(height, width)
    rows = max(1, _STRIP_PIXELS // width)
    if img.mode == "F":  # gray in [0, 1]: R = G = B, so Y is the linear value itself
        for top in range(0, height, rows):
            v = torch.from_numpy(np.array(img.crop((0, top, width, min(height, top + rows))), dtype=np.float32))
            flat[top : top + rows] = y_to_l(_srgb_to_linear(v))
        return Lightness(l=out, alpha=alpha)
    shares = _level_tables()[1]
    rgb = img if img.mode == "RGB" else img.convert("RGB")
    for top in range(0, height, rows):
        band = torch.from_numpy(np.array(rgb.crop((0, top, width, min(height, top + rows)))))  # (r, W, 3) uint8
        y = torch.zeros(band.shape[0] * width)
        for c in range(3):
            y.add_(shares[c].index_select(0, band[..., c].reshape(-1).to(torch.int32)))
        flat[top : top + rows] = y_to_l(y).view(-1, width)
    return Lightness(l=out, alpha=alpha)


def channel_spread(rgb: np.ndarray) -> float:
    """Mean over pixels of max(R, G, B) - min(R, G, B) of ``(H, W, 3)`` uint8: 0 for gray."""
    return float((rgb.max(axis=2).astype(np.int16) - rgb.min(axis=2)).mean())


def is_grayscale(img: Image.Image | np.ndarray, threshold: float = GRAY_SPREAD) -> bool:
    """Whether a photo has no colour to learn from or to score against: a gray mode
    (L, LA, F, I, 1), or RGB whose mean channel spread is at most ``threshold`` (a
    black-and-white photo stored as colour, or one with only a faint tint)."""
    if isinstance(img, Image.Image):
        if img.mode in ("L", "LA", "F", "I", "I;16", "1"):
            return True
        img = np.asarray(img.convert("RGB"))
    if img.ndim == 2 or img.shape[-1] == 1:
        return True
    return channel_spread(img[..., :3]) <= threshold


def resize_short_side(
    img: Image.Image,
    size: int,
    upscale: bool = False,
    resample: Image.Resampling = Image.Resampling.LANCZOS,
) -> Image.Image:
    """Resize keeping the aspect ratio so the short side is ``size`` pixels.

    Photos already that small are returned as they are unless ``upscale``; ``size`` 0
    returns the photo unchanged.
    """
    w, h = img.size
    short = min(w, h)
    if size <= 0 or short == size or (short < size and not upscale):
        return img
    scale = size / short
    return img.resize((max(1, round(w * scale)), max(1, round(h * scale))), resample)
