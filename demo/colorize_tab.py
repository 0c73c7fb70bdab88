"""The "Colorize" tab: upload a photo, slide the temperature, download the result.

The network runs once per upload (``model.analyze``). The user's ``gr.State``
keeps only what is small: the network output (``(1, Q, H/4, W/4)`` at the
network's input size), a preview-sized L for the before/after slider (longer
side ``PREVIEW_SIDE``) and the upload's file path; moving the temperature only
re-renders the annealed mean over the preview. The full-resolution PNG is made
only when asked for ("Make the full-resolution PNG", with progress), at the
temperature on screen; moving the slider hides a file made for another
temperature, so the download is always what the screen shows. The
full-resolution L is read again from the upload then, so a 50-megapixel photo
does not hold hundreds of megabytes for as long as the session lives.
"""

from __future__ import annotations

import html
import logging
import re
import shutil
import tempfile
import time
import uuid
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
    "PREVIEW_SIDE",
    "STATE_TTL_S",
]

log = logging.getLogger(__name__)

PREVIEW_SIDE = 768  # longer side of the images shown in the page, in pixels
T_MIN, T_MAX = 0.05, 1.0
STATE_TTL_S = 600  # a user's analysis is dropped 10 minutes after their last upload or change
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
    """

    name: str
    path: Path
    size: tuple[int, int]
    max_pixels: int | None
    preview: Prediction
    gray: Image.Image
    uncertainty: Image.Image


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
    """

    is_template = True  # the frontend renders it as a plain gr.Image

    def preprocess(self, payload):
        if payload is not None and payload.path is not None and not (payload.url or "").startswith("data:"):
            return str(payload.path)
        return super().preprocess(payload)


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
    return Analysis(Path(path).stem, Path(path), full.size, max_pixels, preview, gray, heat_map(preview.uncertainty()))


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
    return analysis.gray, analysis.preview.colorize(_check_temperature(temperature)).convert("RGB")


def _check_temperature(t: float) -> float:
    """The model's rule (``check_temperature``) as a message in the page; the slider
    itself only narrows the range to [T_MIN, T_MAX]."""
    try:
        return check_temperature(t)
    except ValueError as e:
        raise gr.Error(str(e)) from None


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
    full_prediction(analysis).colorize(temperature).save(path, compress_level=3)
    return path


@dataclass
class _Components:
    """The Colorize tab's components, as ``_layout`` places them."""

    analysis: gr.State
    rendered: gr.State
    upload: gr.Image
    temperature: gr.Slider
    reference: gr.Image
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
    analysis = gr.State(None, time_to_live=STATE_TTL_S)
    rendered = gr.State(None, time_to_live=STATE_TTL_S)  # the temperature of the file behind the download button
    with gr.Row(elem_id="colorize-row"):
        with gr.Column(scale=1, min_width=280, elem_id="controls-column"):
            upload = PhotoUpload(
                type="filepath", image_mode=None, label="Photo", sources=["upload", "clipboard"], elem_id="upload"
            )
            temperature = gr.Slider(
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
                gr.Examples(examples=[[e] for e in examples], inputs=[upload], label="Examples")
        with gr.Column(scale=2, min_width=280, elem_id="result-column"):
            slider = gr.ImageSlider(
                label="Grayscale input | colorized", type="pil", format="png", elem_id="result", interactive=False
            )
            uncertainty = gr.Image(
                label="Uncertainty (bright: unsure)", type="pil", visible=False, interactive=False, elem_id="uncertainty"
            )

    return _Components(analysis, rendered, upload, temperature, reference, show_uncertainty, render, download, slider,
                       uncertainty)


def build_colorize_tab(
    model: Colorizer,
    examples: list[str] | None = None,
    max_pixels: int | None = 50_000_000,
    concurrency_limit: int = 2,
) -> None:
    """Lay out the Colorize tab inside the current ``gr.Blocks``/``gr.Tab`` context.

    Args:
        model: the loaded model (shared by all users, read-only).
        examples: example image paths.
        max_pixels: uploads with more pixels get a one-line error.
        concurrency_limit: network runs and renders at once (bounds memory).
    """
    downloads = Path(tempfile.gettempdir()) / "colorizer-demo-downloads"
    c = _layout(model, examples)
    analysis, rendered, upload, temperature, reference = c.analysis, c.rendered, c.upload, c.temperature, c.reference
    show_uncertainty, render, download, slider, uncertainty = (c.show_uncertainty, c.render, c.download, c.slider,
                                                               c.uncertainty)
    hidden = gr.update(visible=False, value=None)

    def on_upload(path, ref, t, progress=gr.Progress()):
        if not path:
            return None, None, None, hidden, gr.update(visible=False)
        progress(0.1, desc="Reading the photo and running the network")
        try:
            a = analyze(model, path, max_pixels, reference=ref or None)
        except ImageError as e:  # one message (the upload is then cleared: no broken thumbnail)
            raise gr.Error(_user_message(e, ref if ref and str(e).startswith("reference") else path),
                           print_exception=False) from None
        except (MemoryError, RuntimeError) as e:
            log.exception("colorizing %s failed", path)
            raise gr.Error(f"Could not colorize this photo: {_user_message(e, path)}", print_exception=False) from None
        progress(0.8, desc="Rendering")
        return a, render_preview(a, t), a.uncertainty, hidden, gr.update(visible=True)

    def on_reference(path, ref, t, progress=gr.Progress()):
        """A new (or cleared) reference: the photo coloured again; without a photo yet, the
        reference is only read, so a bad one is refused (and cleared) at once."""
        if ref and not path:
            try:
                reference_features(model, ref, max_pixels)
            except ImageError as e:
                raise gr.Error(_user_message(e, ref), print_exception=False) from None
            return gr.skip()
        return on_upload(path, ref, t, progress)

    def on_temperature(a, t):
        if a is None:
            return gr.skip()
        return render_preview(a, t)

    def on_full_png(a, t, progress=gr.Progress()):
        """The full-resolution PNG at the temperature on screen, made only when asked for."""
        if a is None:
            return hidden, None
        t = _check_temperature(t)
        progress(0.3, desc=f"Rendering {a.size[0]}x{a.size[1]} pixels at T = {t:g}")
        try:
            path = save_full_png(a, t, downloads)
        except ImageError as e:
            raise gr.Error(html.escape(str(e)), print_exception=False) from None
        return gr.update(visible=True, value=str(path), label=f"Download full-resolution PNG (T = {t:g})"), t

    def still_on_screen(t, done):
        """Hide a file rendered for a temperature the slider has left meanwhile."""
        return gr.skip() if done is not None and abs(t - done) < 1e-9 else hidden

    common = dict(concurrency_limit=concurrency_limit, concurrency_id="colorizer")
    outputs = [analysis, slider, uncertainty, download, render]
    upload.change(on_upload, [upload, reference, temperature], outputs, **common).failure(
        lambda: (None, None, None, hidden, gr.update(visible=False), None), None,
        [*outputs, upload], queue=False, show_progress="hidden",
    )  # a photo that could not be colorized leaves nothing behind, not even its broken thumbnail
    # a new (or cleared) reference colours the same photo again; an unreadable one is cleared, the photo stays
    reference.change(on_reference, [upload, reference, temperature], outputs, **common).failure(
        lambda: None, None, [reference], queue=False, show_progress="hidden",
    )
    # a file made for another temperature must never be downloadable: hide it at once, re-render the preview
    temperature.change(lambda: hidden, None, [download], queue=False, show_progress="hidden")
    temperature.change(
        on_temperature, [analysis, temperature], [slider], trigger_mode="always_last", show_progress="minimal", **common
    )
    render.click(on_full_png, [analysis, temperature], [download, rendered], **common).then(
        still_on_screen, [temperature, rendered], [download], queue=False, show_progress="hidden"
    )
    show_uncertainty.change(lambda s: gr.update(visible=s), [show_uncertainty], [uncertainty], queue=False)
