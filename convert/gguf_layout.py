"""Names defined once: GGUF keys (spec §9) and the HF checkpoint's tensor table (spec §2).

Shapes are written as tuples of dimension names resolved from config.json, so that one table
serves the real model, the synthetic presets and the converter's checks.
"""

from __future__ import annotations

from math import prod

LLM_ARCH = "qwen2"
LLM_PREFIX = "llm."
VISION_PREFIX = "vpm."
RESAMPLER_PREFIX = "resampler."


class Key:
    """GGUF metadata keys of the LLM file, exactly as llama.cpp spells them."""

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

# SigLIP encoder, names after "vpm."; every Linear and LayerNorm has a bias (spec §2).
VISION_TENSORS = (
    ("embeddings.patch_embedding.weight", ("v_hidden", "channels", "patch", "patch")),
    ("embeddings.patch_embedding.bias", ("v_hidden",)),
    ("embeddings.position_embedding.weight", ("v_positions", "v_hidden")),
    *(
        (f"encoder.layers.{{n}}.self_attn.{proj}.{kind}", shape)
        for proj in ("k_proj", "v_proj", "q_proj", "out_proj")
        for kind, shape in (("weight", ("v_hidden", "v_hidden")), ("bias", ("v_hidden",)))
    ),
    ("encoder.layers.{n}.layer_norm1.weight", ("v_hidden",)),
    ("encoder.layers.{n}.layer_norm1.bias", ("v_hidden",)),
    ("encoder.layers.{n}.mlp.fc1.weight", ("v_ffn", "v_hidden")),
    ("encoder.layers.{n}.mlp.fc1.bias", ("v_ffn",)),
    ("encoder.layers.{n}.mlp.fc2.weight", ("v_hidden", "v_ffn")),
    ("encoder.layers.{n}.mlp.fc2.bias", ("v_hidden",)),
    ("encoder.layers.{n}.layer_norm2.weight", ("v_hidden",)),
    ("encoder.layers.{n}.layer_norm2.bias", ("v_hidden",)),
    ("post_layernorm.weight", ("v_hidden",)),
    ("post_layernorm.bias", ("v_hidden",)),
)

# Perceiver resampler, names after "resampler.". `query` and `proj` are bare parameters; `proj`
# is applied as x @ proj, so its shape is [in, out] (spec §2, §5).
RESAMPLER_TENSORS = (
    ("query", ("queries", "embed")),
    ("proj", ("embed", "embed")),
    ("kv_proj.weight", ("embed", "v_hidden")),
    ("attn.in_proj_weight", ("embed_qkv", "embed")),
    ("attn.in_proj_bias", ("embed_qkv",)),
    ("attn.out_proj.weight", ("embed", "embed")),
    ("attn.out_proj.bias", ("embed",)),
    *((f"{ln}.{kind}", ("embed",)) for ln in ("ln_q", "ln_kv", "ln_post") for kind in ("weight", "bias")),
)


def config_dims(config: dict) -> dict[str, int]:
    """Every size the tables use, from config.json (LLM fields at top level, SigLIP in vision_config)."""
    vision = config["vision_config"]
    n_head = config["num_attention_heads"]
    head_dim = config.get("head_dim") or config["hidden_size"] // n_head
    # MiniCPM-V deletes the last SigLIP layer from the module (and so from the checkpoint) when asked.
    n_vision_layer = vision["num_hidden_layers"] - (1 if config.get("drop_vision_last_layer") else 0)
    return {
        "vocab": config["vocab_size"],
        "hidden": config["hidden_size"],
        "ffn": config["intermediate_size"],
        "q_dim": n_head * head_dim,
        "kv_dim": config["num_key_value_heads"] * head_dim,
        "n_layer": config["num_hidden_layers"],
        "v_hidden": vision["hidden_size"],
        "v_ffn": vision["intermediate_size"],
        "v_positions": (vision["image_size"] // vision["patch_size"]) ** 2,
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


def checkpoint_tensors(config: dict) -> list[tuple[str, tuple[int, ...]]]:
    """(name, shape) of every tensor of the HF checkpoint described by ``config``, in module order."""
    dims = config_dims(config)
    out = [(hf, shape) for hf, _, shape in llm_tensors(config)]
    for prefix, table, n_layer in (
        (VISION_PREFIX, VISION_TENSORS, dims["n_vision_layer"]),
        (RESAMPLER_PREFIX, RESAMPLER_TENSORS, 0),
    ):
        out += [
            (prefix + name.format(n=n), tuple(dims[d] for d in shape)) for (name, shape), n in _expand(table, n_layer)
        ]
    return out


def parameter_count(tensors: list[tuple[str, tuple[int, ...]]], prefix: str = "") -> int:
    return sum(prod(shape) for name, shape in tensors if name.startswith(prefix))
