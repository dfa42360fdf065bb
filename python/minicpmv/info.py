"""``minicpmv info FILE.gguf``: what a GGUF file holds — architecture, sizes, tensor types, bits per
weight — and what it pairs with, read from its header without loading the weights."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

from . import _core

_LLM_SIZES = {  # label → key suffix after "qwen2."
    "layers": "block_count",
    "width": "embedding_length",
    "MLP width": "feed_forward_length",
    "heads": "attention.head_count",
    "KV heads": "attention.head_count_kv",
    "trained context": "context_length",
    "RoPE base": "rope.freq_base",
}
_VISION_SIZES = {  # label → key suffix after "clip.vision."
    "layers": "block_count",
    "width": "embedding_length",
    "MLP width": "feed_forward_length",
    "heads": "attention.head_count",
    "patch": "patch_size",
    "slice resolution": "image_size",
}


def _value(reader, key: str):
    field = reader.fields.get(key)
    if field is None:
        return None
    value = field.contents()
    return value


def describe(path: str | os.PathLike) -> str:
    """A few lines about the file at ``path``; ModelFileError / ModelFormatError when it is not a
    readable GGUF file."""
    from gguf import GGMLQuantizationType, GGUFReader

    path = Path(path)
    if not path.is_file():
        raise _core.ModelFileError(f"{path}: not a regular file")
    try:
        reader = GGUFReader(path)
    except Exception as exc:  # gguf-py raises whatever its parsing meets
        raise _core.ModelFormatError(f"{path}: not a readable GGUF file ({exc})") from None

    arch = _value(reader, "general.architecture")
    lines = [f"{path.name}: {os.path.getsize(path) / 1e9:.2f} GB, architecture {arch!r}"]
    if _value(reader, "general.name"):
        lines.append(f"  name: {_value(reader, 'general.name')}")
    if arch == "qwen2":
        sizes = {label: _value(reader, f"qwen2.{key}") for label, key in _LLM_SIZES.items()}
        tokens = reader.fields.get("tokenizer.ggml.tokens")
        sizes["vocabulary"] = len(tokens.data) if tokens is not None else None
        pairs = f"a vision file (mmproj, architecture 'clip') whose resampler is {sizes['width']} wide"
    elif arch == "clip":
        sizes = {label: _value(reader, f"clip.vision.{key}") for label, key in _VISION_SIZES.items()}
        query = next((t for t in reader.tensors if t.name == "resampler.query"), None)
        width = int(query.shape[0]) if query is not None else None
        sizes["resampler"] = f"{width} wide, {int(query.shape[1])} queries" if query is not None else None
        sizes["projector"] = _value(reader, "clip.projector_type")
        sizes["minicpmv_version"] = _value(reader, "clip.minicpmv_version")
        pairs = f"a language model (architecture 'qwen2') {width} wide"
    else:
        sizes, pairs = {}, "nothing: this runtime reads MiniCPM-V 2.6 files ('qwen2' LLM, 'clip' vision)"
    lines += [f"  {label}: {value}" for label, value in sizes.items() if value is not None]

    types, n_bytes, n_params = Counter(), 0, 0
    for t in reader.tensors:
        name = (
            GGMLQuantizationType(t.tensor_type).name
            if t.tensor_type in GGMLQuantizationType._value2member_map_
            else str(t.tensor_type)
        )
        types[name] += 1
        n_bytes += int(t.n_bytes)
        n_params += int(t.n_elements)
    lines.append(f"  tensors: {len(reader.tensors)} ({', '.join(f'{n} {k}' for k, n in types.most_common())})")
    if n_params:
        lines.append(
            f"  parameters: {n_params / 1e9:.3f} B, {n_bytes / 1e9:.2f} GB, {8 * n_bytes / n_params:.2f} bits per weight"
        )
    lines.append(f"  pairs with: {pairs}")
    return "\n".join(lines)
