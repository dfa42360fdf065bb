"""HF MiniCPM-V 2.6 checkpoint → the vision GGUF file ("mmproj") in the llama.cpp layout (docs/model.md §9).

The SigLIP encoder (``vpm.``) and the perceiver resampler (``resampler.``) go into one file with
``general.architecture = clip``, the layout llama.cpp's clip loader reads. Three tensors differ from a
plain rename (gguf_layout's tables say which): the packed attention in_proj is cut into q, k and v;
``proj`` is written transposed; ``resampler.pos_embed_k`` is computed, not read.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np
from gguf import GGMLQuantizationType, GGUFWriter, LlamaFileType

from . import ConversionError
from .gguf_layout import (
    LLM_PREFIX,
    MINICPMV_VERSIONS,
    POS_EMBED_K,
    TRANSPOSED,
    VISION_ARCH,
    ClipKey,
    Key,
    config_dims,
    vision_tensors,
)
from .hf_to_gguf import Checkpoint, GgufPlan, OutTensor, check_tensors, model_name, quantize, read_config
from .quant_rules import FLOAT_TYPES, parse_variant, vision_tensor_type

# The published vision file is f16 (docs/model.md §10); Q8_0 is the quantized option (llama.cpp loads it too).
MMPROJ_OUTTYPES = ("F32", "F16", "Q8_0")
# 2-D but never converted by llama.cpp's own converter (it converts 2-D `.weight` tensors only), so the
# published file holds them in f32.
_ALWAYS_F32 = frozenset({"resampler.query", POS_EMBED_K})
# docs/model.md §4 step 1: x = (u8/255 − 0.5) / 0.5 per channel.
IMAGE_MEAN = IMAGE_STD = (0.5, 0.5, 0.5)
# SiglipVisionConfig's default, which the published vision_config leaves implicit.
DEFAULT_LAYER_NORM_EPS = 1e-6


def sincos_2d(embed: int, side: int) -> np.ndarray:
    """The resampler's key positions for a side×side grid (docs/model.md §5): [side², embed] float32.

    Row h·side + w is [emb(w), emb(h)], emb(p) = [sin(p·ω_k) for k < embed/4, cos(p·ω_k) for k < embed/4],
    ω_k = 10000^(−k/(embed/4)); every step in numpy float32, as HF computes it.
    """
    quarter = embed // 4
    omega = np.float32(1.0) / np.float32(10000.0) ** (np.arange(quarter, dtype=np.float32) / np.float32(quarter))
    angles = np.arange(side, dtype=np.float32)[:, None] * omega[None, :]
    emb = np.concatenate([np.sin(angles), np.cos(angles)], axis=1)  # [side, embed/2], row p = emb(p)
    by_column = np.broadcast_to(emb[None, :, :], (side, side, embed // 2))  # [h, w] → emb(w)
    by_row = np.broadcast_to(emb[:, None, :], (side, side, embed // 2))  # [h, w] → emb(h)
    return np.concatenate([by_column, by_row], axis=2).reshape(side * side, embed)


def _add_metadata(writer: GGUFWriter, config: dict, name: str, file_type: LlamaFileType) -> None:
    dims = config_dims(config)
    vision = config["vision_config"]
    writer.add_string(Key.NAME, name)
    writer.add_uint32(Key.FILE_TYPE, int(file_type))
    writer.add_bool(ClipKey.HAS_TEXT_ENCODER, False)
    writer.add_bool(ClipKey.HAS_VISION_ENCODER, True)
    writer.add_bool(ClipKey.HAS_MINICPMV_PROJECTOR, True)
    writer.add_string(ClipKey.PROJECTOR_TYPE, "resampler")
    # llama.cpp reads the version as int32 and the rest as uint32: another type fails its loader.
    writer.add_int32(ClipKey.MINICPMV_VERSION, MINICPMV_VERSIONS[str(config["version"])])
    writer.add_uint32(ClipKey.MINICPMV_QUERY_NUM, dims["queries"])
    # The slice size of docs/model.md §6 (448), not SigLIP's own image_size (980).
    writer.add_uint32(ClipKey.IMAGE_SIZE, config["image_size"])
    writer.add_uint32(ClipKey.PATCH_SIZE, dims["patch"])
    writer.add_uint32(ClipKey.EMBEDDING_LENGTH, dims["v_hidden"])
    writer.add_uint32(ClipKey.FEED_FORWARD_LENGTH, dims["v_ffn"])
    # 0: the resampler, not a projection of this width, maps into the LLM.
    writer.add_uint32(ClipKey.PROJECTION_DIM, 0)
    writer.add_uint32(ClipKey.HEAD_COUNT, vision["num_attention_heads"])
    writer.add_float32(ClipKey.LAYER_NORM_EPS, vision.get("layer_norm_eps", DEFAULT_LAYER_NORM_EPS))
    # The layers the file holds (all of them in 2.6, where drop_vision_last_layer is false).
    writer.add_uint32(ClipKey.BLOCK_COUNT, dims["n_vision_layer"])
    writer.add_array(ClipKey.IMAGE_MEAN, list(IMAGE_MEAN))
    writer.add_array(ClipKey.IMAGE_STD, list(IMAGE_STD))
    # SigLIP's gelu_pytorch_tanh, which ggml_gelu computes.
    writer.add_bool(ClipKey.USE_GELU, True)


def _read_transposed(ckpt: Checkpoint, name: str, out_type: GGMLQuantizationType) -> np.ndarray:
    if out_type in FLOAT_TYPES:
        return np.ascontiguousarray(ckpt.read(name, out_type).T)
    # Quantized blocks run along the rows: transpose the values, then quantize.
    values = np.ascontiguousarray(ckpt.read(name, GGMLQuantizationType.F32).T)
    return quantize(values, GGMLQuantizationType.F32, out_type, name)


def mmproj_plan(hf_dir: str | Path, outtype: str = "f16") -> GgufPlan:
    """The vision file of the checkpoint in ``hf_dir``, checked but not yet written."""
    hf_dir = Path(hf_dir)
    variant = parse_variant(outtype, MMPROJ_OUTTYPES)
    config = read_config(hf_dir)
    ckpt = Checkpoint(hf_dir)
    tensors = vision_tensors(config)
    # llm. tensors go to the LLM file.
    check_tensors(ckpt, ((hf, shape) for hf, _, shape in tensors), others=(LLM_PREFIX,))
    dims = config_dims(config)
    side, embed = dims["v_side"], dims["embed"]
    if embed % 4:
        raise ConversionError(f"resampler width {embed} (hidden_size) is not a multiple of 4, as sincos_2d needs")

    def out_type(name: str, shape: tuple[int, ...]) -> GGMLQuantizationType:
        return GGMLQuantizationType.F32 if name in _ALWAYS_F32 else vision_tensor_type(name, shape, variant.base)

    out = []
    for hf, names, shape in tensors:
        if len(names) > 1:
            block = shape[0] // len(names)
            for i, name in enumerate(names):
                part = (block, *shape[1:])
                t = out_type(name, part)
                out.append(OutTensor(name, part, t, partial(ckpt.read, hf, t, slice(i * block, (i + 1) * block))))
        elif hf in TRANSPOSED:
            t = out_type(names[0], shape)
            out.append(OutTensor(names[0], shape[::-1], t, partial(_read_transposed, ckpt, hf, t)))
        else:
            t = out_type(names[0], shape)
            out.append(OutTensor(names[0], shape, t, partial(ckpt.read, hf, t)))
    out.append(OutTensor(POS_EMBED_K, (side * side, embed), GGMLQuantizationType.F32, partial(sincos_2d, embed, side)))
    metadata = partial(_add_metadata, config=config, name=model_name(config, hf_dir), file_type=variant.file_type)
    return GgufPlan(VISION_ARCH, metadata, out)


def convert_mmproj(hf_dir: str | Path, out_path: str | Path, outtype: str = "f16", progress: bool = True) -> Path:
    """Write the vision half of the checkpoint in ``hf_dir`` to ``out_path`` as GGUF; returns ``out_path``."""
    return mmproj_plan(hf_dir, outtype).write(out_path, progress)
