"""The network in ONNX: export, and ONNX Runtime as an optional CPU backend.

Only the network is exported (L in [0, 100] -> its output: logits for the classification
objectives, the colour in the model's space for a regression), with
any batch size and any height and width that are multiples of 8 (what ``network_size``
gives); decoding at a temperature and the full-resolution work stay in torch. A model with
the pretrained DINOv2 trunk has a second input, ``trunk_lightness``: the same L resized to
the trunk's size (``Colorizer.trunk_input``: area about ``trunk_size``^2, sides multiples of
14), so that the graph holds no size arithmetic. ::

    model = Colorizer.from_pretrained()
    model.export_onnx("colorizer.onnx")     # a file for other runtimes, checked to 1e-4
    model.use_onnxruntime()                  # analyze/colorize run the network in ONNX Runtime

or ``colorizer export-onnx -m default colorizer.onnx`` and ``colorizer --backend onnxruntime``.
``use_onnxruntime`` exports once per set of weights into the cache folder
(``$COLORIZER_CACHE``, else ``~/.cache/colorizer``) and falls back to torch, with a
warning, if the weights change afterwards. Needs ``pip install colorizer[onnx]`` (onnx
and onnxscript to export, onnxruntime to check the export and to run it).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from colorizer.hub import cache_folder

# ``model`` below is a ``colorizer.model.Colorizer`` (not imported here: the model imports this module)
__all__ = ["ONNX_TOLERANCE", "OnnxExportError", "OnnxRuntimeNetwork", "cached_onnx", "export_onnx"]

ONNX_TOLERANCE = 1e-4  # largest difference from torch allowed in an exported network's outputs
_INPUT, _OUTPUT, _TRUNK_INPUT = "lightness", "output", "trunk_lightness"
_CHECK_SHAPES = ((1, 64, 96), (2, 40, 56))  # (batch, height, width) the export is checked on


class OnnxExportError(RuntimeError):
    """The exported network does not compute what the torch one does, or could not be made."""


def _need(module: str, purpose: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise ImportError(f"{purpose} needs the {module} package: pip install 'colorizer[onnx]' "
                          "(onnx, onnxscript, onnxruntime)") from None


@contextlib.contextmanager
def _quiet_exporter():
    """The exporter's notices (missing torchvision ops, deprecations inside torch, its
    progress lines) are not the user's business: errors only, while it runs."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(open(os.devnull, "w")) as sink:
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            try:
                yield
            finally:
                sink.close()
    finally:
        logger.setLevel(level)


class _Network(nn.Module):
    """``Colorizer.forward`` alone, so the export sees a plain module. A model with the
    pretrained trunk takes a second input, the L its trunk reads at the trunk's size
    (``Colorizer.trunk_input``), so that the graph holds no size arithmetic."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, lightness: torch.Tensor, trunk_lightness: torch.Tensor | None = None) -> torch.Tensor:
        if trunk_lightness is None:
            return self.model(lightness)
        return self.model(lightness, trunk_lightness=trunk_lightness)


def export_onnx(model: nn.Module, path: str | Path, check: bool = True) -> Path:
    """Write ``model``'s network to ``path`` as ONNX (torch's dynamo exporter) with a dynamic
    batch and sizes, then (``check``) run it in ONNX Runtime on two shapes and raise
    ``OnnxExportError`` if an output differs from torch's by more than ``ONNX_TOLERANCE``.
    The file is written next to ``path`` and moved into place, so a failed export leaves
    nothing behind."""
    _need("onnx", "ONNX export")
    _need("onnxscript", "ONNX export")
    if check:
        _need("onnxruntime", "checking the export")
    if model.device.type != "cpu":
        raise ValueError(f"export_onnx: move the model to the CPU first (it is on {model.device})")
    path = Path(path)
    clone = type(model)(**model.settings)  # the caller's model keeps its mode and device
    clone.load_state_dict(model.state_dict())
    net = _Network(clone).eval()
    batch = torch.export.Dim("batch", min=1, max=1024)
    height, width = 8 * torch.export.Dim("h8", min=1, max=2048), 8 * torch.export.Dim("w8", min=1, max=2048)
    example = torch.linspace(0.0, 100.0, 2 * 64 * 64).view(2, 1, 64, 64)
    inputs, names, shapes = (example,), [_INPUT], {"lightness": {0: batch, 2: height, 3: width}}
    if clone.has_pretrained_trunk:
        th, tw = 14 * torch.export.Dim("h14", min=1, max=1024), 14 * torch.export.Dim("w14", min=1, max=1024)
        inputs += (torch.linspace(0.0, 100.0, 2 * 70 * 84).view(2, 1, 70, 84),)
        names.append(_TRUNK_INPUT)
        shapes["trunk_lightness"] = {0: batch, 2: th, 3: tw}
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        with torch.no_grad(), _quiet_exporter():
            program = torch.onnx.export(
                net, inputs, dynamo=True, input_names=names, output_names=[_OUTPUT], dynamic_shapes=shapes,
                verbose=False,
            )  # fmt: skip
        if program is None:
            raise OnnxExportError("torch.onnx.export returned no program")
        program.save(tmp)
        if check:
            difference = max_difference(model, tmp)
            if not difference <= ONNX_TOLERANCE:
                raise OnnxExportError(f"the exported network differs from torch by {difference:.2g} "
                                      f"(allowed {ONNX_TOLERANCE:g})")
        os.replace(tmp, path)
    except (OnnxExportError, ImportError):
        raise
    except Exception as e:  # the exporter's many error types: one line
        raise OnnxExportError(f"ONNX export failed: {type(e).__name__}: {e}") from e
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def max_difference(model: nn.Module, onnx_path: str | Path, shapes=_CHECK_SHAPES) -> float:
    """Largest absolute difference between torch's and ONNX Runtime's outputs of the network,
    over random L inputs of ``shapes`` ((batch, height, width) each)."""
    session = OnnxRuntimeNetwork(onnx_path)
    generator = torch.Generator().manual_seed(0)
    worst = 0.0
    with model.evaluating(), torch.no_grad():
        for b, h, w in shapes:
            x = torch.rand(b, 1, h, w, generator=generator) * 100.0
            trunk = model.trunk_input(x)
            ref = model(x).float()
            got = session(x, trunk)
            if got.shape != ref.shape:
                return float("inf")
            worst = max(worst, (got - ref).abs().max().item())
    return worst


def weights_key(model: nn.Module) -> str:
    """A hash of the network's weights, settings and the exporter's version: the name of
    its cached export."""
    digest = hashlib.sha256()
    digest.update(json.dumps(model.settings, sort_keys=True, default=str).encode())
    digest.update(f"torch {torch.__version__}".encode())
    if model.has_pretrained_trunk:  # the encoder's weights are the package's file, its code transformers'
        import transformers

        from colorizer.dinov2 import trunk_file

        digest.update(f"transformers {transformers.__version__}".encode())
        digest.update(hashlib.sha256(trunk_file(model.net.trunk_network).read_bytes()).digest())
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().to("cpu").contiguous().numpy().tobytes())
    return digest.hexdigest()[:24]


def cached_onnx(model: nn.Module, folder: str | Path | None = None) -> Path:
    """The ONNX export of ``model``'s current weights, made once (``export_onnx``, checked)
    and kept in ``folder`` (default: ``cache_folder()/onnx``)."""
    path = Path(folder) if folder is not None else cache_folder() / "onnx"
    path = path / f"{weights_key(model)}.onnx"
    if not path.is_file():
        export_onnx(model, path)
    return path


class OnnxRuntimeNetwork:
    """An exported network in an ONNX Runtime CPU session, called like the torch network:
    ``(B, 1, H, W)`` L tensor in, output tensor out.

    Args:
        path: the ``.onnx`` file.
        threads: intra-op threads (default: torch's, ``torch.get_num_threads()``).
    """

    def __init__(self, path: str | Path, threads: int | None = None):
        ort = _need("onnxruntime", "the ONNX Runtime backend")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.inter_op_num_threads = 1
        options.log_severity_level = 3  # errors only
        self.path = Path(path)
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def __call__(self, lightness: torch.Tensor, trunk_lightness: torch.Tensor | None = None) -> torch.Tensor:
        """``trunk_lightness``: the second input of a model with the pretrained trunk (see
        ``_Network``), needed exactly when the file has it."""
        def array(t: torch.Tensor) -> np.ndarray:
            return np.ascontiguousarray(t.detach().to("cpu", torch.float32).numpy())

        feeds = {_INPUT: array(lightness)}
        wanted = [i.name for i in self.session.get_inputs()]
        if _TRUNK_INPUT in wanted:
            if trunk_lightness is None:
                raise ValueError(f"{self.path}: this network also needs the trunk's L ({_TRUNK_INPUT})")
            feeds[_TRUNK_INPUT] = array(trunk_lightness)
        return torch.from_numpy(self.session.run(None, feeds)[0])

    def __repr__(self) -> str:
        return f"OnnxRuntimeNetwork({str(self.path)!r})"
