"""Names defined once: GGUF keys (docs/model.md §9) and the HF checkpoint's tensor table (docs/model.md §2).

Shapes are written as tuples of dimension names resolved from config.json, so that one table
serves the real model, the synthetic presets and the converter's checks. Each row also names the
tensor's GGUF counterpart: the LLM rows go to the LLM file, the vision and resampler rows to the
vision file ("mmproj").
"""

from __future__ import annotations

from math import prod

LLM_ARCH = "qwen2"
VISION_ARCH = "clip"  # llama.cpp's name for every vision file, whatever the encoder
LLM_PREFIX = "llm."
VISION_PREFIX = "vpm."
RESAMPLER_PREFIX = "resampler."


class Key:
    """GGUF metadata keys of the LLM file (general.* also of the vision file), as llama.cpp spells them."""

    ARCHITECTURE = "general.architecture"
    NAME = "general.name"
    FILE_TYPE = "general.file_type"
    QUANTIZATION_VERSION = "general.quantization_version"

    BLOCK_COUNT = f"{LLM_ARCH}.block_count"
    CONTEXT_LENGTH = f"{LLM_ARCH}.context_length"
    EMBEDDING_LENGTH = f"{LLM_ARCH}.embedding_length"
    FEED_FORWARD_LENGTH = f"{LLM_ARCH}.feed_forward_length"
    HEAD_COUNT = f"{LLM_ARCH}.attention.head_count"
    HEAD_COUNT_KV = f"{LLM_ARCH}.attention.head_count_kv"
    ROPE_FREQ_BASE = f"{LLM_ARCH}.rope.freq_base"
    RMS_EPS = f"{LLM_ARCH}.attention.layer_norm_rms_epsilon"

    TOKENIZER_MODEL = "tokenizer.ggml.model"
    TOKENIZER_PRE = "tokenizer.ggml.pre"
    TOKENS = "tokenizer.ggml.tokens"
    TOKEN_TYPE = "tokenizer.ggml.token_type"
    MERGES = "tokenizer.ggml.merges"
    BOS_ID = "tokenizer.ggml.bos_token_id"
    EOS_ID = "tokenizer.ggml.eos_token_id"
    UNK_ID = "tokenizer.ggml.unknown_token_id"
    PAD_ID = "tokenizer.ggml.padding_token_id"
    ADD_BOS = "tokenizer.ggml.add_bos_token"
    CHAT_TEMPLATE = "tokenizer.chat_template"


class ClipKey:
    """GGUF metadata keys of the vision file, as llama.cpp's clip loader spells them (docs/model.md §9)."""

    HAS_TEXT_ENCODER = "clip.has_text_encoder"
    HAS_VISION_ENCODER = "clip.has_vision_encoder"
    HAS_MINICPMV_PROJECTOR = "clip.has_minicpmv_projector"
    PROJECTOR_TYPE = "clip.projector_type"
    MINICPMV_VERSION = "clip.minicpmv_version"
    MINICPMV_QUERY_NUM = "clip.minicpmv_query_num"
    USE_GELU = "clip.use_gelu"

    IMAGE_SIZE = "clip.vision.image_size"
    PATCH_SIZE = "clip.vision.patch_size"
    EMBEDDING_LENGTH = "clip.vision.embedding_length"
    FEED_FORWARD_LENGTH = "clip.vision.feed_forward_length"
    PROJECTION_DIM = "clip.vision.projection_dim"
    HEAD_COUNT = "clip.vision.attention.head_count"
    LAYER_NORM_EPS = "clip.vision.attention.layer_norm_epsilon"
    BLOCK_COUNT = "clip.vision.block_count"
    IMAGE_MEAN = "clip.vision.image_mean"
    IMAGE_STD = "clip.vision.image_std"


# clip.minicpmv_version in llama.cpp's numbering, by config.json `version`.
MINICPMV_VERSIONS = {"2.6": 3}

# Values of tokenizer.ggml.token_type (llama.cpp's llama_token_type).
TOKEN_NORMAL = 1
TOKEN_CONTROL = 3
TOKEN_USER_DEFINED = 4
TOKEN_UNUSED = 5

QUANTIZATION_VERSION = 2

# LLM tensors: (HF name after "llm.", GGUF name, HF shape [out, in]); {n} is the layer index.
# GGUF stores each with ne = the HF shape reversed and no transposes.
LLM_TENSORS = (
    ("model.embed_tokens.weight", "token_embd.weight", ("vocab", "hidden")),
    ("model.layers.{n}.self_attn.q_proj.weight", "blk.{n}.attn_q.weight", ("q_dim", "hidden")),
    ("model.layers.{n}.self_attn.q_proj.bias", "blk.{n}.attn_q.bias", ("q_dim",)),
    ("model.layers.{n}.self_attn.k_proj.weight", "blk.{n}.attn_k.weight", ("kv_dim", "hidden")),
    ("model.layers.{n}.self_attn.k_proj.bias", "blk.{n}.attn_k.bias", ("kv_dim",)),
    ("model.layers.{n}.self_attn.v_proj.weight", "blk.{n}.attn_v.weight", ("kv_dim", "hidden")),
    ("model.layers.{n}.self_attn.v_proj.bias", "blk.{n}.attn_v.bias", ("kv_dim",)),
    ("model.layers.{n}.self_attn.o_proj.weight", "blk.{n}.attn_output.weight", ("hidden", "q_dim")),
    ("model.layers.{n}.mlp.gate_proj.weight", "blk.{n}.ffn_gate.weight", ("ffn", "hidden")),
    ("model.layers.{n}.mlp.up_proj.weight", "blk.{n}.ffn_up.weight", ("ffn", "hidden")),
    ("model.layers.{n}.mlp.down_proj.weight", "blk.{n}.ffn_down.weight", ("hidden", "ffn")),
    ("model.layers.{n}.input_layernorm.weight", "blk.{n}.attn_norm.weight", ("hidden",)),
    ("model.layers.{n}.post_attention_layernorm.weight", "blk.{n}.ffn_norm.weight", ("hidden",)),
    ("model.norm.weight", "output_norm.weight", ("hidden",)),
    ("lm_head.weight", "output.weight", ("vocab", "hidden")),
)

# SigLIP encoder: (HF name after "vpm.", GGUF name, HF shape); every Linear and LayerNorm has a bias
# (docs/model.md §2). The conv weight [out, c, kh, kw] keeps its layout, so its ne is [kw, kh, c, out].
VISION_TENSORS = (
    ("embeddings.patch_embedding.weight", "v.patch_embd.weight", ("v_hidden", "channels", "patch", "patch")),
    ("embeddings.patch_embedding.bias", "v.patch_embd.bias", ("v_hidden",)),
    ("embeddings.position_embedding.weight", "v.position_embd.weight", ("v_positions", "v_hidden")),
    *(
        (f"encoder.layers.{{n}}.self_attn.{proj}_proj.{kind}", f"v.blk.{{n}}.attn_{proj}.{kind}", shape)
        for proj in ("k", "v", "q", "out")
        for kind, shape in (("weight", ("v_hidden", "v_hidden")), ("bias", ("v_hidden",)))
    ),
    ("encoder.layers.{n}.layer_norm1.weight", "v.blk.{n}.ln1.weight", ("v_hidden",)),
    ("encoder.layers.{n}.layer_norm1.bias", "v.blk.{n}.ln1.bias", ("v_hidden",)),
    # The published files name fc1 `ffn_down` and fc2 `ffn_up` (docs/model.md §9); llama.cpp tells the swap by
    # shape, so files written this way load there, and a reader must do the same.
    ("encoder.layers.{n}.mlp.fc1.weight", "v.blk.{n}.ffn_down.weight", ("v_ffn", "v_hidden")),
    ("encoder.layers.{n}.mlp.fc1.bias", "v.blk.{n}.ffn_down.bias", ("v_ffn",)),
    ("encoder.layers.{n}.mlp.fc2.weight", "v.blk.{n}.ffn_up.weight", ("v_hidden", "v_ffn")),
    ("encoder.layers.{n}.mlp.fc2.bias", "v.blk.{n}.ffn_up.bias", ("v_hidden",)),
    ("encoder.layers.{n}.layer_norm2.weight", "v.blk.{n}.ln2.weight", ("v_hidden",)),
    ("encoder.layers.{n}.layer_norm2.bias", "v.blk.{n}.ln2.bias", ("v_hidden",)),
    ("post_layernorm.weight", "v.post_ln.weight", ("v_hidden",)),
    ("post_layernorm.bias", "v.post_ln.bias", ("v_hidden",)),
)

# Perceiver resampler: (HF name after "resampler.", GGUF name, HF shape). `query` and `proj` are bare
# parameters. A tuple of GGUF names cuts the tensor into that many equal row blocks, in order: the
# packed in_proj holds the rows q | k | v (docs/model.md §2).
RESAMPLER_TENSORS = (
    ("query", "resampler.query", ("queries", "embed")),
    ("proj", "resampler.proj.weight", ("embed", "embed")),
    ("kv_proj.weight", "resampler.kv.weight", ("embed", "v_hidden")),
    ("attn.in_proj_weight", tuple(f"resampler.attn.{x}.weight" for x in "qkv"), ("embed_qkv", "embed")),
    ("attn.in_proj_bias", tuple(f"resampler.attn.{x}.bias" for x in "qkv"), ("embed_qkv",)),
    ("attn.out_proj.weight", "resampler.attn.out.weight", ("embed", "embed")),
    ("attn.out_proj.bias", "resampler.attn.out.bias", ("embed",)),
    *(
        (f"{ln}.{kind}", f"resampler.{ln}.{kind}", ("embed",))
        for ln in ("ln_q", "ln_kv", "ln_post")
        for kind in ("weight", "bias")
    ),
)
# `proj` is applied as x @ proj, so it is stored [in, out] (docs/model.md §5); the GGUF holds it transposed,
# in the [out, in] order of every other matrix, so that ggml's mul_mat computes x @ proj.
TRANSPOSED = frozenset({RESAMPLER_PREFIX + "proj"})
# Not in the checkpoint: the resampler's 2-D sincos table over the vision position grid (docs/model.md §5),
# [v_positions, embed], which llama.cpp requires at load time.
POS_EMBED_K = "resampler.pos_embed_k"


def config_dims(config: dict) -> dict[str, int]:
    """Every size the tables use, from config.json (LLM fields at top level, SigLIP in vision_config)."""
    vision = config["vision_config"]
    n_head = config["num_attention_heads"]
    head_dim = config.get("head_dim") or config["hidden_size"] // n_head
    # MiniCPM-V deletes the last SigLIP layer from the module (and so from the checkpoint) when asked.
    n_vision_layer = vision["num_hidden_layers"] - (1 if config.get("drop_vision_last_layer") else 0)
    v_side = vision["image_size"] // vision["patch_size"]  # of the square position grid (70)
    return {
        "vocab": config["vocab_size"],
        "hidden": config["hidden_size"],
        "ffn": config["intermediate_size"],
        "q_dim": n_head * head_dim,
        "kv_dim": config["num_key_value_heads"] * head_dim,
        "n_layer": config["num_hidden_layers"],
        "v_hidden": vision["hidden_size"],
        "v_ffn": vision["intermediate_size"],
        "v_side": v_side,
        "v_positions": v_side**2,
        "patch": vision["patch_size"],
        "channels": vision.get("num_channels", 3),
        "n_vision_layer": n_vision_layer,
        "queries": config["query_num"],
        "embed": config["hidden_size"],
        "embed_qkv": 3 * config["hidden_size"],
    }


def _expand(table, n_layer: int):
    """Yield (row, layer) in module order: rows before the per-layer block, each layer's rows, rows after."""
    per_layer = [i for i, row in enumerate(table) if "{n}" in row[0]]
    first, last = (per_layer[0], per_layer[-1] + 1) if per_layer else (len(table), len(table))
    yield from ((row, None) for row in table[:first])
    for n in range(n_layer):
        yield from ((row, n) for row in table[first:last])
    yield from ((row, None) for row in table[last:])


def llm_tensors(config: dict) -> list[tuple[str, str, tuple[int, ...]]]:
    """(HF name, GGUF name, HF shape) of every LLM tensor."""
    dims = config_dims(config)
    return [
        (LLM_PREFIX + hf.format(n=n), gguf.format(n=n), tuple(dims[d] for d in shape))
        for (hf, gguf, shape), n in _expand(LLM_TENSORS, dims["n_layer"])
    ]


def vision_tensors(config: dict) -> list[tuple[str, tuple[str, ...], tuple[int, ...]]]:
    """(HF name, GGUF names, HF shape) of every vpm. and resampler. tensor; several GGUF names cut the
    tensor into that many row blocks."""
    dims = config_dims(config)
    out = []
    for prefix, table, n_layer in (
        (VISION_PREFIX, VISION_TENSORS, dims["n_vision_layer"]),
        (RESAMPLER_PREFIX, RESAMPLER_TENSORS, 0),
    ):
        for (hf, gguf, shape), n in _expand(table, n_layer):
            names = gguf if isinstance(gguf, tuple) else (gguf.format(n=n),)
            out.append((prefix + hf.format(n=n), names, tuple(dims[d] for d in shape)))
    return out


def checkpoint_tensors(config: dict) -> list[tuple[str, tuple[int, ...]]]:
    """(name, shape) of every tensor of the HF checkpoint described by ``config``, in module order."""
    return [(hf, shape) for hf, _, shape in (*llm_tensors(config), *vision_tensors(config))]


def parameter_count(tensors: list[tuple[str, tuple[int, ...]]], prefix: str = "") -> int:
    return sum(prod(shape) for name, shape in tensors if name.startswith(prefix))
