"""colorizer: automatic colorization of photos after Zhang, Isola & Efros (2016).

Five lines::

    import colorizer
    color = colorizer.colorize("old-photo.jpg")                     # PIL image, full size
    color.save("old-photo-color.png")
    model = colorizer.Colorizer.from_pretrained()                   # the shipped default
    pred = model.analyze("old-photo.jpg"); pred.render(0.2); pred.uncertainty()
"""

from __future__ import annotations

import functools
import os

from colorizer.images import DEFAULT_MAX_PIXELS, ImageError, ImageInput, ImageTooLargeError
from colorizer.hub import DEFAULT_MODEL, available_models
from colorizer.model import Colorizer, Prediction

__all__ = [
    "Colorizer",
    "Prediction",
    "ImageError",
    "ImageTooLargeError",
    "available_models",
    "colorize",
    "colorize_batch",
    "load_model",
]
__version__ = "0.1.0"


@functools.lru_cache(maxsize=4)
def load_model(name: str = DEFAULT_MODEL) -> Colorizer:
    """A model by shipped name, folder or Hub id, loaded once per process and cached."""
    return Colorizer.from_pretrained(name).eval()


def _model(model: str | os.PathLike | Colorizer) -> Colorizer:
    """``colorize``'s ``model`` argument as a model: a ``Colorizer`` as it is, a name, folder or
    Hub id loaded once (``load_model``); anything else one ``TypeError`` line."""
    if isinstance(model, Colorizer):
        return model
    if isinstance(model, (str, os.PathLike)):
        return load_model(model)
    raise TypeError(f"model must be a shipped model's name, a model folder, a Hub id 'owner/name' or a Colorizer, "
                    f"got {type(model).__name__} {model!r}"[:300])


def colorize(
    image: ImageInput,
    temperature: float | None = None,
    model: str | Colorizer = DEFAULT_MODEL,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    reference: ImageInput | None = None,
):
    """Colorize one photo with the default (or a named) model; see ``Colorizer.colorize``
    (``reference``: colour it after another photo's global features)."""
    return _model(model).colorize(image, temperature=temperature, max_pixels=max_pixels, reference=reference)


def colorize_batch(images, temperature: float | None = None, model: str | Colorizer = DEFAULT_MODEL, batch_size: int = 8,
                   errors: str = "raise", reference: ImageInput | None = None):
    """Colorize many photos; see ``Colorizer.colorize_batch`` (``errors="return"`` keeps the
    good results and puts each unreadable photo's ``ImageError`` in its place)."""
    return _model(model).colorize_batch(images, temperature=temperature, batch_size=batch_size, errors=errors, reference=reference)
