"""Which type each tensor gets in each size variant (docs/model.md §10): llama.cpp's quantizer rules, as a table.

Everything here works on names and shapes alone (shapes in numpy order, so a row is ``shape[-1]`` =
ggml's ne[0]), so one table serves the HF converter, the GGUF quantizer and the tests. The rules are
llama.cpp's ``llama_tensor_get_type`` for a dense model (no experts, not Falcon, not a 70B llama);
where this module says "llama.cpp" it means that function and ``tensor_type_fallback``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from math import prod

from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, LlamaFileType

from . import ConversionError

T = GGMLQuantizationType
FLOAT_TYPES = frozenset({T.F32, T.F16, T.BF16})


@dataclass(frozen=True)
class Variant:
    """A file type: its name as llama.cpp spells it, general.file_type, and the base tensor type."""

    name: str
    file_type: LlamaFileType
    base: GGMLQuantizationType

    @property
    def quantized(self) -> bool:
        return self.base not in FLOAT_TYPES


# The 16 size variants of docs/model.md §10, largest first, and F32 (a lossless copy of the bf16 checkpoint).
VARIANTS = {
    v.name: v
    for v in (
        Variant("F32", LlamaFileType.ALL_F32, T.F32),
        Variant("F16", LlamaFileType.MOSTLY_F16, T.F16),
        Variant("BF16", LlamaFileType.MOSTLY_BF16, T.BF16),
        Variant("Q8_0", LlamaFileType.MOSTLY_Q8_0, T.Q8_0),
        Variant("Q6_K", LlamaFileType.MOSTLY_Q6_K, T.Q6_K),
        Variant("Q5_K_M", LlamaFileType.MOSTLY_Q5_K_M, T.Q5_K),
        Variant("Q5_K_S", LlamaFileType.MOSTLY_Q5_K_S, T.Q5_K),
        Variant("Q5_1", LlamaFileType.MOSTLY_Q5_1, T.Q5_1),
        Variant("Q5_0", LlamaFileType.MOSTLY_Q5_0, T.Q5_0),
        Variant("Q4_K_M", LlamaFileType.MOSTLY_Q4_K_M, T.Q4_K),
        Variant("Q4_K_S", LlamaFileType.MOSTLY_Q4_K_S, T.Q4_K),
        Variant("Q4_1", LlamaFileType.MOSTLY_Q4_1, T.Q4_1),
        Variant("Q4_0", LlamaFileType.MOSTLY_Q4_0, T.Q4_0),
        Variant("Q3_K_L", LlamaFileType.MOSTLY_Q3_K_L, T.Q3_K),
        Variant("Q3_K_M", LlamaFileType.MOSTLY_Q3_K_M, T.Q3_K),
        Variant("Q3_K_S", LlamaFileType.MOSTLY_Q3_K_S, T.Q3_K),
        Variant("Q2_K", LlamaFileType.MOSTLY_Q2_K, T.Q2_K),
    )
}
SIZE_VARIANTS = tuple(name for name in VARIANTS if name != "F32")  # the 16 of docs/model.md §10


def parse_variant(name: str, allowed: tuple[str, ...] = tuple(VARIANTS)) -> Variant:
    """The variant called ``name`` (any case), if it is one of ``allowed``."""
    key = name.upper()
    if key not in allowed:
        raise ConversionError(f"unknown outtype {name!r}; expected one of {', '.join(allowed)} (any case)")
    return VARIANTS[key]


def more_bits(i: int, n: int) -> bool:
    """llama.cpp's `use_more_bits`: the first and last eighth of the layers and every third between."""
    return i < n // 8 or i >= 7 * n // 8 or (i - n // 8) % 3 == 2


# A bump: (type, when) — `when(layer, n_layer, gqa)`; the first bump that applies wins, else the base.
Bump = tuple[GGMLQuantizationType, Callable[[int, int, int], bool]]


def _always(i: int, n: int, gqa: int) -> bool:
    return True


def _on_more_bits(i: int, n: int, gqa: int) -> bool:
    return more_bits(i, n)


# Per variant and tensor role, the bumps above the base type (docs/model.md §10). Roles are matched as llama.cpp
# matches them, by name: attn_v (the value projection; 1/gqa of attn_q's size, so cheap to keep precise)
# and ffn_down and attn_output (the sums feeding the residual stream).
_BUMPS: dict[str, dict[str, tuple[Bump, ...]]] = {
    "Q4_K_M": {"attn_v": ((T.Q6_K, _on_more_bits),), "ffn_down": ((T.Q6_K, _on_more_bits),)},
    "Q5_K_M": {"attn_v": ((T.Q6_K, _on_more_bits),), "ffn_down": ((T.Q6_K, _on_more_bits),)},
    "Q4_K_S": {
        "attn_v": ((T.Q5_K, lambda i, n, gqa: i < 4),),
        "ffn_down": ((T.Q5_K, lambda i, n, gqa: i < n // 8),),
    },
    "Q3_K_M": {
        "attn_v": ((T.Q5_K, lambda i, n, gqa: i < 2), (T.Q4_K, _always)),
        "ffn_down": ((T.Q5_K, lambda i, n, gqa: i < n // 16), (T.Q4_K, _always)),
        "attn_output": ((T.Q4_K, _always),),
    },
    "Q3_K_L": {"attn_v": ((T.Q5_K, _always),), "ffn_down": ((T.Q5_K, _always),), "attn_output": ((T.Q5_K, _always),)},
    # With 4 or more query heads per KV head, attn_v is small enough to afford Q4_K (llama.cpp; Q3_K below).
    "Q2_K": {
        "attn_v": ((T.Q4_K, lambda i, n, gqa: gqa >= 4), (T.Q3_K, _always)),
        "ffn_down": ((T.Q3_K, _always),),
        "attn_output": ((T.Q3_K, _always),),
    },
}
# llama.cpp's replacements for a type whose block does not divide a row: the K-quants' 256-value super
# blocks fall back to the nearest 32-value type; when even that does not divide the row, F16. The
# 32-value types themselves have no fallback there: llama.cpp refuses such a tensor, and so do we.
_FALLBACK = {T.Q2_K: T.Q4_0, T.Q3_K: T.Q4_0, T.Q4_K: T.Q5_0, T.Q5_K: T.Q5_1, T.Q6_K: T.Q8_0}
_LAYER = re.compile(r"^blk\.(\d+)\.")
# Tensors llama.cpp never quantizes although they are 2-D weights: the vision tower's patch and
# position embeddings (read by a convolution and ggml_get_rows).
_KEEP_FLOAT = (".position_embd", ".patch_embd")


def block_size(t: GGMLQuantizationType) -> int:
    return GGML_QUANT_SIZES[t][0]


def tensor_nbytes(shape: tuple[int, ...], t: GGMLQuantizationType) -> int:
    """Bytes of a tensor of numpy ``shape`` stored as ``t``."""
    block, size = GGML_QUANT_SIZES[t]
    return prod(shape) // block * size


def quantizable(name: str, shape: tuple[int, ...]) -> bool:
    """llama.cpp quantizes 2-D (and higher) ``*weight`` tensors other than norms and the embeddings above."""
    return (
        len(shape) >= 2
        and name.endswith("weight")
        and "_norm.weight" not in name
        and not any(k in name for k in _KEEP_FLOAT)
    )


def _role(name: str) -> str:
    if name in ("output.weight", "token_embd.weight"):
        return name.split(".")[0]
    for role in ("attn_v.weight", "attn_output.weight", "ffn_down"):
        if role in name:
            return role.split(".")[0]
    return "other"


def _fit(name: str, row: int, t: GGMLQuantizationType) -> GGMLQuantizationType:
    """``t``, or llama.cpp's fallback when ``t``'s block does not divide the row."""
    if row % block_size(t) == 0:
        return t
    if t not in _FALLBACK:
        raise ConversionError(
            f"tensor {name}: rows of {row} values are not a multiple of {t.name}'s {block_size(t)}-value block, "
            "and llama.cpp defines no fallback for that type"
        )
    fallback = _FALLBACK[t]
    return fallback if row % block_size(fallback) == 0 else T.F16


def llm_tensor_type(
    variant: Variant, name: str, shape: tuple[int, ...], n_layer: int, gqa: int
) -> GGMLQuantizationType:
    """The type of LLM tensor ``name`` (numpy ``shape``) in ``variant``; ``gqa`` = query heads per KV head."""
    if not quantizable(name, shape):
        return T.F32  # norms and biases (docs/model.md §9)
    if not variant.quantized:
        return variant.base
    role, row = _role(name), shape[-1]
    t = variant.base
    if role == "output":
        # Q6_K below Q8_0; Q8_0 when the base type's block does not divide the row.
        t = T.Q8_0 if row % block_size(t) else t if t == T.Q8_0 else T.Q6_K
    elif role in _BUMPS.get(variant.name, {}):
        layer = _LAYER.match(name)
        if layer is None:
            raise ConversionError(f"tensor {name}: a per-layer tensor without a blk.N. prefix")
        i = int(layer.group(1))
        t = next((bump for bump, when in _BUMPS[variant.name][role] if when(i, n_layer, gqa)), t)
    return _fit(name, row, t)


def vision_tensor_type(name: str, shape: tuple[int, ...], weight_type: GGMLQuantizationType) -> GGMLQuantizationType:
    """The type of vision-file tensor ``name`` when its matrices are ``weight_type`` (F32, F16 or Q8_0)."""
    if len(shape) < 2:
        return T.F32  # norms and biases (docs/model.md §9)
    if weight_type in FLOAT_TYPES:
        return weight_type
    if not quantizable(name, shape):
        return T.F16  # the patch and position embeddings stay unquantized (docs/model.md §10)
    # SigLIP's FFN width 4304 is no multiple of 32: fc2's rows stay f16, as llama.cpp's fallback does
    # for a row that fits no block.
    return weight_type if shape[-1] % block_size(weight_type) == 0 else T.F16
