"""Where models come from and go: the shipped models' names, model folders, the Hugging Face
Hub (download, errors as one line), the model card's template and the cache folder.

``resolve_model`` decides once what a name means (a shipped model, a folder, a Hub repo id);
``Colorizer.from_pretrained`` and ``weights_file`` load from its answer.
"""

from __future__ import annotations

import difflib
import os
import re
from importlib import resources
from pathlib import Path

from huggingface_hub import hf_hub_download
from huggingface_hub.constants import SAFETENSORS_SINGLE_FILE

from colorizer.errors import first_line

__all__ = ["DEFAULT_MODEL", "REPO_URL", "PAPER_URL", "MODEL_CARD_TEMPLATE", "cache_folder", "resolve_model",
           "weights_file", "available_models", "check_config_file", "hub_error", "first_mismatch"]

DEFAULT_MODEL = "default"

REPO_URL = "https://github.com/colorizer/colorizer"
PAPER_URL = "https://arxiv.org/abs/1603.08511"

MODEL_CARD_TEMPLATE = """---
{{ card_data }}
---

# {{ title | default("Colorizer", true) }}

Automatic colorization of photos after Zhang, Isola & Efros (2016),
"[Colorful Image Colorization]({{ paper_url }})", made with
[colorizer]({{ repo_url }}).

## Use

```python
from colorizer import Colorizer

model = Colorizer.from_pretrained("{{ repo_id | default("path/to/this/folder", true) }}")
model.colorize("photo.jpg").save("photo-color.png")
```

## Model

{{ config_table }}

{{ description | default("", true) }}

## Results

{{ results | default("No evaluation results are attached to this card yet.", true) }}

{{ extra | default("", true) }}
"""


def cache_folder() -> Path:
    """Where colorizer keeps what it makes (the app's prepared survey and votes, ONNX exports):
    ``$COLORIZER_CACHE``, else ``$XDG_CACHE_HOME/colorizer``, else ``~/.cache/colorizer``."""
    if os.environ.get("COLORIZER_CACHE"):
        return Path(os.environ["COLORIZER_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "colorizer"


def _model_dir(name: str) -> Path:
    return Path(str(resources.files("colorizer").joinpath("pretrained", name)))


def check_config_file(path: Path, cls) -> None:
    """A model folder's ``config.json``, checked before anything is built from it: one line
    naming the file for a missing or unreadable file, not a JSON object, or unknown settings
    (which the Hub mixin would drop silently). Values are checked by ``Colorizer`` itself."""
    import inspect
    import json

    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file (a model folder holds config.json and model.safetensors)")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: not readable JSON ({e})") from None
    if not isinstance(config, dict) or not config:
        raise ValueError(f"{path}: must hold a JSON object of the model's settings, got {type(config).__name__}"
                         + (" (empty)" if isinstance(config, dict) else ""))
    known = set(inspect.signature(cls.__init__).parameters) - {"self"}
    unknown = sorted(set(config) - known)
    if unknown:
        raise ValueError(f"{path}: unknown setting(s) {', '.join(unknown)} (known: {', '.join(sorted(known))})")


def hub_error(error: Exception, what: str, advice: str) -> OSError:
    """One ``OSError`` line for a Hub failure: what failed, the error's type and first line, what to check."""
    message = str(error).strip() and f": {first_line(error)[:200]}"
    return OSError(f"{what} ({type(error).__name__}{message}); {advice}")


def first_mismatch(error: RuntimeError) -> str:
    """The first line of a state-dict error that says what differs (a size mismatch)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    detail = next((line for line in lines if line.startswith("size mismatch")), lines[-1] if lines else "")
    return (detail[:240] + "...") if len(detail) > 240 else detail


_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")  # owner/name, as the Hub spells repository ids


def resolve_model(name: str | Path | None = None) -> str:
    """What ``Colorizer.from_pretrained(name)`` loads from: the folder of a shipped model
    for None or a shipped name (even where the working directory has a folder of that
    name: write ``./default`` for that one), an existing folder, or a Hub repo id ("owner/name").

    Fails at once, without touching the network, for what can be neither:

    Raises:
        FileNotFoundError: a path (``./x``, ``/x``, ``~/x``, ``a/b/c``) that is not a folder.
        ValueError: a bare name that is not shipped (a typo such as "defualt"), or an empty
            one (which would be the current folder: write "." for that); the message lists
            the shipped names.
        TypeError: not a string or a path.
    """
    if name is not None and not isinstance(name, (str, os.PathLike)):
        raise TypeError(f"model: expected a shipped model's name, a model folder or a Hub id 'owner/name', "
                        f"got {type(name).__name__}")
    name = DEFAULT_MODEL if name is None else str(name)
    if not name.strip():
        raise ValueError(f"model: the name is empty ({name!r}); give a shipped name "
                         f"({', '.join(available_models()) or 'none'}), a model folder (\".\" for this one) or a "
                         "Hugging Face Hub id 'owner/name'")
    bare = "/" not in name and "\\" not in name
    if bare and (_model_dir(name) / "config.json").is_file():  # a shipped name wins over a folder of that name here ("./default")
        return str(_model_dir(name))
    if Path(name).expanduser().is_dir():
        return str(Path(name).expanduser())
    if bare:
        shipped = available_models()
        close = difflib.get_close_matches(name, shipped, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(
            f"no model named {name!r}{hint}: the shipped models are {', '.join(shipped) or 'none'}; "
            "otherwise give a model folder or a Hugging Face Hub id 'owner/name'"
        )
    if not _HUB_ID.match(name):
        raise FileNotFoundError(f"{name}: no such model folder")
    return name


def weights_file(
    model_id: str | Path | None = None,
    *,
    revision: str | None = None,
    cache_dir: str | Path | None = None,
    force_download: bool = False,
    local_files_only: bool = False,
    token: str | bool | None = None,
) -> Path:
    """The ``model.safetensors`` of a model (shipped name, folder or Hub repo id), downloaded
    from the Hub when needed. Raises FileNotFoundError for a folder without one."""
    return _weights_path(resolve_model(model_id), revision=revision, cache_dir=cache_dir, force_download=force_download,
                         local_files_only=local_files_only, token=token)


def _weights_path(model_id: str, *, revision, cache_dir, force_download, local_files_only, token) -> Path:
    """``weights_file`` of an already resolved source (a folder or a Hub repo id)."""
    if os.path.isdir(model_id):
        weights = Path(model_id) / SAFETENSORS_SINGLE_FILE
        if not weights.is_file():
            raise FileNotFoundError(f"{model_id}: no {SAFETENSORS_SINGLE_FILE} in this folder")
        return weights
    return Path(
        hf_hub_download(
            repo_id=model_id,
            filename=SAFETENSORS_SINGLE_FILE,
            revision=revision,
            cache_dir=cache_dir,
            force_download=force_download,
            token=token,
            local_files_only=local_files_only,
        )
    )


def available_models() -> list[str]:
    """Names of the models shipped inside the package (``from_pretrained(name)``)."""
    root = Path(str(resources.files("colorizer").joinpath("pretrained")))
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if (p / "config.json").is_file())
