"""The "Colorize" tab: upload a photo, slide the temperature, download the result.

The network runs once per upload (``model.analyze``). What it leaves is small:
the network output (``(1, Q, H/4, W/4)`` at the network's input size), a
preview-sized L for the before/after slider (longer side ``PREVIEW_SIDE``) and
the upload's file path, kept per browser session in an ``AnalysisCache``
bounded by count and bytes (the oldest goes first; a session's is dropped when
its page closes); moving the temperature only re-renders the annealed mean over
the preview. A session whose analysis is gone (evicted, its page idle, the
server restarted) gets it made again from the photo its page still holds. The full-resolution PNG is made
only when asked for ("Make the full-resolution PNG", with progress), at the
temperature on screen; moving the slider hides a file made for another
temperature, so the download is always what the screen shows. The
full-resolution L is read again from the upload then, so a 50-megapixel photo
does not hold hundreds of megabytes for as long as the session lives.
"""

from __future__ import annotations

import base64
import binascii
import html
import logging
import re
import shutil
import tempfile
import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import gradio as gr
import numpy as np
import torch.nn.functional as F
from matplotlib import colormaps
from PIL import Image

from colorizer import Colorizer, ImageError, Prediction
from colorizer.images import Lightness, read_image, split_lightness
from colorizer.bins import check_temperature
from colorizer.errors import first_line
from colorizer.model import gray_rgb

__all__ = [
    "Analysis",
    "analyze",
    "reference_features",
    "render_preview",
    "full_prediction",
    "save_full_png",
    "build_colorize_tab",
    "PhotoUpload",
    "TemperatureSlider",
    "AnalysisCache",
    "PREVIEW_SIDE",
]

log = logging.getLogger(__name__)

# scroll the result into view when it is off the screen: Gradio's scroll_to_output is undone on a phone
# when the new images grow the result and the browser keeps the examples a user tapped in place, so it
# is done again as the result's images load
SHOW_RESULT_JS = """() => {
  const show = () => {
    const el = document.getElementById("result");
    if (!el) return;
    const r = el.getBoundingClientRect();
    if (r.top < 0 || r.top > window.innerHeight * 0.5) el.scrollIntoView({block: "start"});
  };
  show();
  document.querySelectorAll("#result img").forEach((img) => img.addEventListener("load", show, {once: true}));
  for (const ms of [250, 750, 1500]) setTimeout(show, ms);
}"""
PREVIEW_SIDE = 768  # longer side of the images shown in the page, in pixels
T_MIN, T_MAX = 0.05, 1.0
CACHE_ITEMS, CACHE_BYTES = 32, 400 * 2**20  # analyses kept for the sessions at most (about 10 MB each at 768 px)
_DOWNLOAD_TTL_S = 3600  # full-resolution PNGs are deleted after an hour


@dataclass
class Analysis:
    """One upload, analysed; everything in it is preview-sized or smaller.

    Attributes:
        name: the upload's file stem (for the download's name).
        path: the uploaded file, read again for the full-resolution download.
        size: the photo's (width, height) at full resolution.
        max_pixels: the pixel limit it was read under.
        preview: the network output over a downscaled L (fast to re-render).
        gray: the preview's grayscale (what the model sees: L only), RGB.
        uncertainty: heat map of the per-pixel entropy, RGB, preview size.
        reference: the reference photo whose scene it was coloured after, or None.
    """

    name: str
    path: Path
    size: tuple[int, int]
    max_pixels: int | None
    preview: Prediction
    gray: Image.Image
    uncertainty: Image.Image
    reference: Path | None = None

    @property
    def nbytes(self) -> int:
        """Bytes held: the network output, the preview L and the two preview images."""
        p = self.preview
        tensors = [p.output, p.network_l, p.lightness._l]
        images = sum(len(img.getbands()) * img.width * img.height for img in (self.gray, self.uncertainty))
        return images + sum(t.numel() * t.element_size() for t in tensors if t is not None)

    def made_from(self, path: str | Path | None, reference: str | Path | None) -> bool:
        """Whether this is the analysis of ``path`` (with ``reference``)."""
        return path is not None and Path(path) == self.path and (
            (reference or None) is None if self.reference is None else Path(reference or "") == self.reference)


class AnalysisCache:
    """The sessions' analyses, bounded by count and bytes: adding one past either bound
    drops the least recently used. Thread-safe (every user's events share it).

    Args:
        max_items: analyses kept at most; max_bytes: their ``Analysis.nbytes`` in all, at
            most (the newest is kept even when it alone is larger).
    """

    def __init__(self, max_items: int = CACHE_ITEMS, max_bytes: int = CACHE_BYTES):
        if max_items < 1 or max_bytes < 1:
            raise ValueError(f"max_items and max_bytes must be >= 1, got {max_items}, {max_bytes}")
        self.max_items, self.max_bytes = max_items, max_bytes
        self._items: OrderedDict[str, Analysis] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._items)

    @property
    def nbytes(self) -> int:
        with self._lock:
            return sum(a.nbytes for a in self._items.values())

    def get(self, key: str) -> Analysis | None:
        """The analysis of session ``key`` (now the most recently used), or None."""
        with self._lock:
            a = self._items.get(key)
            if a is not None:
                self._items.move_to_end(key)
            return a

    def put(self, key: str, analysis: Analysis) -> None:
        """Keep ``analysis`` for session ``key`` (replacing its last), dropping the oldest over the bounds."""
        with self._lock:
            self._items.pop(key, None)
            self._items[key] = analysis
            total = sum(a.nbytes for a in self._items.values())
            while len(self._items) > 1 and (len(self._items) > self.max_items or total > self.max_bytes):
                _, dropped = self._items.popitem(last=False)
                total -= dropped.nbytes

    def pop(self, key: str) -> None:
        """Forget session ``key``."""
        with self._lock:
            self._items.pop(key, None)

    def forget(self, request: gr.Request) -> None:
        """Forget the session of ``request`` (for ``Blocks.unload``: its page was closed)."""
        self.pop(request.session_hash)


def _preview(pred: Prediction, side: int) -> Prediction:
    w, h = pred.size
    scale = side / max(w, h)
    if scale >= 1:
        return pred
    size = (max(1, round(h * scale)), max(1, round(w * scale)))
    l_small = F.interpolate(pred.lightness.l, size=size, mode="area")  # (1, 1, h', w')
    alpha = pred.lightness.alpha
    if alpha is not None:
        alpha = np.asarray(Image.fromarray(alpha).resize(size[::-1], Image.Resampling.BILINEAR))
    return Prediction(pred.model, Lightness(l_small, alpha), pred.output, pred.network_l)


class PhotoUpload(gr.Image):
    """``gr.Image(type="filepath")`` that hands an uploaded file to the handler unopened.

    Gradio's own preprocessing opens every upload with PIL, whose decompression-bomb
    check would fail with a traceback before ``read_image`` could refuse a too-large
    photo in one line; ``read_image`` applies ``max_pixels`` itself.

    A ``data:`` URI (what an API call may send instead of a file) is written to the
    cache as it is, unopened too; one that is not base64 is one line.
    """

    is_template = True  # the frontend renders it as a plain gr.Image

    def preprocess(self, payload):
        if payload is None:
            return None
        url = payload.url or ""
        if url.startswith("data:"):
            return _data_uri_file(url, payload.orig_name or "photo", self.GRADIO_CACHE)
        if payload.path is None:
            raise gr.Error("photo: no file was sent", print_exception=False)
        return str(payload.path)


def _data_uri_file(url: str, name: str, cache_dir: str) -> str:
    """The bytes of a ``data:[<type>];base64,<data>`` URI in a file of ``cache_dir`` (unopened:
    ``read_image`` judges them)."""
    from gradio.processing_utils import save_bytes_to_cache

    header, sep, body = url.partition(",")
    try:
        if not sep or not header.endswith(";base64"):
            raise ValueError("not base64")
        data = base64.b64decode(body, validate=True)
    except (ValueError, binascii.Error):
        raise gr.Error(f"{html.escape(name)}: not a base64 data: URI (data:image/png;base64,...)",
                       print_exception=False) from None
    return save_bytes_to_cache(data, Path(name).name or "photo", cache_dir)


class TemperatureSlider(gr.Slider):
    """``gr.Slider`` whose value, from the page or the API, passes the model's rule
    (``check_temperature``) before the slider's own range: anything else is one line."""

    is_template = True  # the frontend renders it as a plain gr.Slider

    def preprocess(self, payload):
        t = _check_temperature(payload)
        if not self.minimum <= t <= self.maximum:
            raise gr.Error(f"temperature must be in [{self.minimum:g}, {self.maximum:g}] here, got {t:g}",
                           print_exception=False)
        return super().preprocess(t)


def heat_map(values: np.ndarray, cmap: str = "magma") -> Image.Image:
    """``(H, W)`` values in [0, 1] -> RGB heat map (dark: certain, bright: uncertain), with its
    colour scale drawn underneath: 0 (one colour certain) to 1 (all colours equally likely)."""
    from PIL import ImageDraw

    rgba = colormaps[cmap](np.clip(values, 0.0, 1.0))  # (H, W, 4) float
    heat = Image.fromarray((rgba[..., :3] * 255 + 0.5).astype(np.uint8))
    w, h = heat.size
    bar_h, text_h = max(6, h // 40), 14
    ramp = colormaps[cmap](np.linspace(0.0, 1.0, w))[None, :, :3].repeat(bar_h, axis=0)  # (bar_h, W, 3)
    out = Image.new("RGB", (w, h + bar_h + text_h + 4), "white")
    out.paste(heat, (0, 0))
    out.paste(Image.fromarray((ramp * 255 + 0.5).astype(np.uint8)), (0, h + 2))
    draw = ImageDraw.Draw(out)
    draw.text((2, h + bar_h + 3), "0: sure", fill="black")
    label = "1: any colour"
    draw.text((max(2, w - 6 * len(label) - 2), h + bar_h + 3), label, fill="black")
    return out


def _user_message(e: Exception, path: str | Path) -> str:
    """One line for the user, without the server's temporary paths."""
    text = first_line(str(e).replace(str(path), Path(path).name)) or type(e).__name__
    return html.escape(text)  # gr.Error renders HTML


def analyze(model: Colorizer, path: str | Path, max_pixels: int | None, preview_side: int = PREVIEW_SIDE,
            reference: str | Path | None = None) -> Analysis:
    """Run the network once on an uploaded file (with the global features of ``reference``,
    if given); keep only preview-sized results.

    Raises:
        ImageError / ImageTooLargeError: unreadable or too large (one-line message).
    """
    features = None if reference is None else reference_features(model, reference, max_pixels)
    full = model.analyze(path, max_pixels=max_pixels, reference=features)
    preview = _preview(full, preview_side)
    gray = Image.fromarray(gray_rgb(preview.lightness.l))
    return Analysis(Path(path).stem, Path(path), full.size, max_pixels, preview, gray, heat_map(preview.uncertainty()),
                    None if reference is None else Path(reference))


def reference_features(model: Colorizer, reference: str | Path, max_pixels: int | None):
    """``model.reference_features`` of an uploaded reference photo.

    Raises:
        ImageError: it cannot be read; the message starts with "reference photo: ".
    """
    try:
        return model.reference_features(reference, max_pixels)
    except ImageError as e:
        raise ImageError(f"reference photo: {e}") from None


def full_prediction(analysis: Analysis) -> Prediction:
    """The full-resolution ``Prediction``: the upload's L read again, the kept network output.

    Raises:
        ImageError: the upload is gone (the server's cache was cleared) or changed size.
    """
    try:
        lightness = split_lightness(read_image(analysis.path, analysis.max_pixels))
    except ImageError:
        raise ImageError(f"{analysis.name}: the uploaded photo has expired; upload it again") from None
    if lightness.size != analysis.size:
        raise ImageError(f"{analysis.name}: the uploaded photo changed; upload it again")
    return Prediction(analysis.preview.model, lightness, analysis.preview.output, analysis.preview.network_l)


def render_preview(analysis: Analysis, temperature: float) -> tuple[Image.Image, Image.Image]:
    """(grayscale, colorized) previews at ``temperature`` for the before/after slider."""
    return analysis.gray, analysis.preview.render(_check_temperature(temperature)).convert("RGB")


def _check_temperature(t: float) -> float:
    """The model's rule (``check_temperature``) as one line in the page (``TemperatureSlider``
    applies it to every value from the page or the API; the slider narrows it to [T_MIN, T_MAX])."""
    try:
        return check_temperature(t)
    except ValueError as e:
        raise gr.Error(html.escape(str(e), quote=False), print_exception=False) from None


def _prune(root: Path, ttl_s: float) -> None:
    cutoff = time.time() - ttl_s
    for d in root.iterdir():
        if d.is_dir() and d.stat().st_mtime < cutoff:
            shutil.rmtree(d, ignore_errors=True)


def save_full_png(analysis: Analysis, temperature: float, root: Path) -> Path:
    """Write the full-resolution colorization at ``temperature`` as a PNG under ``root``
    (one fresh folder per file; folders older than an hour are removed)."""
    root.mkdir(parents=True, exist_ok=True)
    _prune(root, _DOWNLOAD_TTL_S)
    folder = root / uuid.uuid4().hex
    folder.mkdir()
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", analysis.name).strip("-.") or "photo"
    path = folder / f"{name}-color-T{temperature:g}.png"
    full_prediction(analysis).render(temperature).save(path, compress_level=3)
    return path


@dataclass
class _Components:
    """The Colorize tab's components, as ``_layout`` places them."""

    rendered: gr.State
    upload: PhotoUpload
    temperature: TemperatureSlider
    reference: PhotoUpload
    show_uncertainty: gr.Checkbox
    render: gr.Button
    download: gr.DownloadButton
    slider: gr.ImageSlider
    uncertainty: gr.Image


def _layout(model: Colorizer, examples: list[str] | None) -> _Components:
    """The tab's text, controls and results, in the current ``gr.Blocks`` context: the temperature
    slider only where it changes the colours, the reference upload only for a global branch."""
    t_default = float(min(max(model.temperature, T_MIN), T_MAX))
    gr.Markdown(
        "Upload a photo (colour or black-and-white). The model sees only its lightness and "
        "predicts the colours."
        + (" **Temperature**: low values give vivid colours (each pixel's most likely colour), high values "
           "safe, muted ones (the mean); the network runs once per photo, so the slider is instant."
           if model.uses_temperature else "")
    )
    rendered = gr.State(None)  # the temperature of the file behind the download button
    with gr.Row(elem_id="colorize-row"):
        with gr.Column(scale=1, min_width=280, elem_id="controls-column"):
            upload = PhotoUpload(
                type="filepath", image_mode=None, label="Photo", sources=["upload", "clipboard"], elem_id="upload"
            )
            temperature = TemperatureSlider(
                T_MIN, T_MAX, value=t_default, step=0.01, label="Temperature",
                info="annealed mean: 1 = mean of the colour distribution, towards 0 = its mode",
                elem_id="temperature", visible=model.uses_temperature,  # a regression gives one colour: no slider
            )  # fmt: skip
            transfer = model.has_global_branch  # a global branch to take the reference's scene from
            reference = PhotoUpload(
                type="filepath", image_mode=None, label="Reference photo (optional)", sources=["upload", "clipboard"],
                visible=transfer, elem_id="reference", height=160,
            )  # fmt: skip
            if transfer:
                gr.Markdown("A reference photo lends its *scene* (the network's global features) to yours: "
                            "a sunny beach's reading makes a gray sky blue. Clear it to go back.",
                            elem_id="reference-help")  # fmt: skip
            show_uncertainty = gr.Checkbox(False, label="Show uncertainty (entropy of the colour distribution)")
            render = gr.Button("Make the full-resolution PNG", visible=False, elem_id="render")
            download = gr.DownloadButton("Download full-resolution PNG", visible=False, elem_id="download")
            if examples:
                gr.Examples(examples=[[e] for e in examples], inputs=[upload], label="Examples",
                            api_visibility="private")  # fmt: skip
        with gr.Column(scale=2, min_width=280, elem_id="result-column"):
            slider = gr.ImageSlider(  # its own download would save the preview: the button above gives the full file
                label="Grayscale input | colorized", type="pil", format="png", elem_id="result", interactive=False,
                buttons=["fullscreen"],
            )  # fmt: skip
            uncertainty = gr.Image(
                label="Uncertainty (bright: unsure)", type="pil", visible=False, interactive=False, elem_id="uncertainty"
            )

    return _Components(rendered, upload, temperature, reference, show_uncertainty, render, download, slider,
                       uncertainty)


def build_colorize_tab(
    model: Colorizer,
    examples: list[str] | None = None,
    max_pixels: int | None = 50_000_000,
    concurrency_limit: int = 2,
    cache: AnalysisCache | None = None,
) -> AnalysisCache:
    """Lay out the Colorize tab inside the current ``gr.Blocks``/``gr.Tab`` context, with its
    API endpoints ``/colorize``, ``/render`` and ``/uncertainty`` (every UI event is private).

    Args:
        model: the loaded model (shared by all users, read-only).
        examples: example image paths.
        max_pixels: uploads with more pixels get a one-line error.
        concurrency_limit: network runs and renders at once (bounds memory).
        cache: where the sessions' analyses are kept (default: a new ``AnalysisCache()``).
    Returns:
        the cache, so that the app can drop a session's analysis when its page closes.
    """
    downloads = Path(tempfile.gettempdir()) / "colorizer-demo-downloads"
    cache = AnalysisCache() if cache is None else cache
    c = _layout(model, examples)
    rendered, upload, temperature, reference = c.rendered, c.upload, c.temperature, c.reference
    show_uncertainty, render, download, slider, uncertainty = (c.show_uncertainty, c.render, c.download, c.slider,
                                                               c.uncertainty)
    hidden = gr.update(visible=False, value=None)

    def run_network(path, ref, request: gr.Request) -> Analysis:
        """Analyse the photo for this session (kept in the cache); errors as one line."""
        try:
            a = analyze(model, path, max_pixels, reference=ref or None)
        except ImageError as e:  # one message (the upload is then cleared: no broken thumbnail)
            raise gr.Error(_user_message(e, ref if ref and str(e).startswith("reference") else path),
                           print_exception=False) from None
        except (MemoryError, RuntimeError) as e:
            log.exception("colorizing %s failed", path)
            raise gr.Error(f"Could not colorize this photo: {_user_message(e, path)}", print_exception=False) from None
        cache.put(request.session_hash, a)
        return a

    def session_analysis(path, ref, request: gr.Request) -> Analysis | None:
        """This session's analysis of the photo on its page: the cached one, else made again
        (it was evicted, or the server restarted while the page stayed open); None without a photo."""
        a = cache.get(request.session_hash)
        if a is not None and (path is None or a.made_from(path, ref)):
            return a
        return None if not path else run_network(path, ref, request)

    def on_upload(path, ref, t, request: gr.Request, progress=gr.Progress()):
        if not path:
            cache.pop(request.session_hash)
            return None, None, hidden, gr.update(visible=False)
        progress(0.1, desc="Reading the photo and running the network")
        a = run_network(path, ref, request)
        progress(0.8, desc="Rendering")
        return render_preview(a, t), a.uncertainty, hidden, gr.update(visible=True)

    def on_reference(path, ref, t, request: gr.Request, progress=gr.Progress()):
        """A new (or cleared) reference: the photo coloured again; without a photo yet, the
        reference is only read, so a bad one is refused (and cleared) at once."""
        if ref and not path:
            try:
                reference_features(model, ref, max_pixels)
            except ImageError as e:
                raise gr.Error(_user_message(e, ref), print_exception=False) from None
            return gr.skip()
        return on_upload(path, ref, t, request, progress)

    def on_temperature(path, ref, t, request: gr.Request):
        a = session_analysis(path, ref, request)
        return gr.skip() if a is None else render_preview(a, t)

    def full_png(a: Analysis, t: float, progress) -> Path:
        progress(0.3, desc=f"Rendering {a.size[0]}x{a.size[1]} pixels at T = {t:g}")
        try:
            return save_full_png(a, t, downloads)
        except ImageError as e:
            raise gr.Error(html.escape(str(e)), print_exception=False) from None

    def on_full_png(path, ref, t, request: gr.Request, progress=gr.Progress()):
        """The full-resolution PNG at the temperature on screen, made only when asked for."""
        a = session_analysis(path, ref, request)
        if a is None:
            return hidden, None
        png = full_png(a, t, progress)
        return gr.update(visible=True, value=str(png), label=f"Download full-resolution PNG (T = {t:g})"), t

    def still_on_screen(t, done):
        """Hide a file rendered for a temperature the slider has left meanwhile."""
        return gr.skip() if done is not None and abs(t - done) < 1e-9 else hidden

    common = dict(concurrency_limit=concurrency_limit, concurrency_id="colorizer", api_visibility="private")
    private = dict(queue=False, show_progress="hidden", api_visibility="private")
    sources = [upload, reference, temperature]
    outputs = [slider, uncertainty, download, render]
    colorized = upload.change(on_upload, sources, outputs, scroll_to_output=True, **common)
    colorized.failure(
        lambda: (None, None, hidden, gr.update(visible=False), None), None, [*outputs, upload], **private,
    )  # a photo that could not be colorized leaves nothing behind, not even its broken thumbnail
    # on a phone the result is above the examples a user scrolled down to: bring it into view
    colorized.success(None, None, None, js=SHOW_RESULT_JS, **private)
    # a new (or cleared) reference colours the same photo again; an unreadable one is cleared, the photo stays
    reference.change(on_reference, sources, outputs, **common).failure(lambda: None, None, [reference], **private)
    # a file made for another temperature must never be downloadable: hide it at once, re-render the preview
    temperature.change(lambda: hidden, None, [download], **private)
    temperature.change(on_temperature, sources, [slider], trigger_mode="always_last", show_progress="minimal", **common)
    render.click(on_full_png, sources, [download, rendered], **common).then(
        still_on_screen, [temperature, rendered], [download], **private
    )
    show_uncertainty.change(lambda s: gr.update(visible=s), [show_uncertainty], [uncertainty], **private)
    _api(model, cache, c, run_network, full_png, concurrency_limit)
    return cache


def _api(model: Colorizer, cache: AnalysisCache, c: _Components, run_network, full_png, concurrency_limit: int) -> None:
    """The endpoints a program calls (``gradio_client``): ``/colorize`` a photo at a temperature
    into a full-resolution PNG, ``/render`` it at another temperature, its ``/uncertainty`` map.
    Their inputs are the tab's own components (the same checks); their outputs, hidden ones."""
    with gr.Column(visible=False):
        png = gr.File(label="colorized PNG (full resolution)", file_types=[".png"])
        heat = gr.Image(label="uncertainty map (preview size)", type="pil", format="png")
        triggers = [gr.Button(f"API {name}", visible=False) for name in ("colorize", "render", "uncertainty")]
    none_yet = "No photo in this session yet (or it was dropped from the cache): call /colorize first."

    def colorize(photo, temperature, reference=None, request: gr.Request = None, progress=gr.Progress()):
        """A photo colorized at a temperature in [0, 1]: the full-resolution PNG."""
        if not photo:
            raise gr.Error("photo: no file was sent", print_exception=False)
        return str(full_png(run_network(photo, reference, request), temperature, progress))

    def render(temperature, request: gr.Request, progress=gr.Progress()):
        """The last photo of this session (``/colorize``) at another temperature: the full-resolution PNG."""
        a = cache.get(request.session_hash)
        if a is None:
            raise gr.Error(none_yet, print_exception=False)
        return str(full_png(a, temperature, progress))

    def uncertainty(request: gr.Request):
        """The last photo's uncertainty: the per-pixel entropy as a heat map (bright: unsure), preview size."""
        a = cache.get(request.session_hash)
        if a is None:
            raise gr.Error(none_yet, print_exception=False)
        return a.uncertainty

    common = dict(concurrency_limit=concurrency_limit, concurrency_id="colorizer", show_progress="hidden")
    photo = [c.upload, c.temperature] + ([c.reference] if model.has_global_branch else [])
    triggers[0].click(colorize, photo, [png], api_name="colorize", **common)
    triggers[1].click(render, [c.temperature], [png], api_name="render", **common)
    triggers[2].click(uncertainty, None, [heat], api_name="uncertainty", **common)
