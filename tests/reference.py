"""Independent references for tests: the checkpoint's LLM as transformers' Qwen2, its tokenizer, and a
GGUF reader built on ggml's own parser.

They read the files directly (safetensors + transformers; ggml's C GGUF parser, the one llama.cpp
uses), sharing no code with the converter (which writes through gguf-py) or the runtime, so that
agreement with them means something.
"""

from __future__ import annotations

import ctypes
import json
from dataclasses import dataclass
from math import prod
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open

LLM_PREFIX = "llm."


def checkpoint_state_dict(ckpt_dir: str | Path, prefix: str) -> dict[str, torch.Tensor]:
    """Every tensor whose name starts with ``prefix`` (prefix stripped), as float32."""
    ckpt_dir = Path(ckpt_dir)
    index = json.loads((ckpt_dir / "model.safetensors.index.json").read_text())
    state = {}
    for shard in sorted(set(index["weight_map"].values())):
        with safe_open(ckpt_dir / shard, framework="pt") as f:
            for name in f.keys():  # noqa: SIM118 (safe_open is not iterable)
                if name.startswith(prefix):
                    state[name[len(prefix) :]] = f.get_tensor(name).float()
    return state


def load_qwen2_reference(ckpt_dir: str | Path):
    """The checkpoint's ``llm.`` weights in a float32 ``transformers.Qwen2ForCausalLM`` in eval mode."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    config = json.loads((Path(ckpt_dir) / "config.json").read_text())
    qwen2 = Qwen2Config(
        vocab_size=config["vocab_size"],
        hidden_size=config["hidden_size"],
        intermediate_size=config["intermediate_size"],
        num_hidden_layers=config["num_hidden_layers"],
        num_attention_heads=config["num_attention_heads"],
        num_key_value_heads=config["num_key_value_heads"],
        hidden_act=config["hidden_act"],
        max_position_embeddings=config["max_position_embeddings"],
        rms_norm_eps=config["rms_norm_eps"],
        rope_parameters={"rope_type": "default", "rope_theta": config["rope_theta"]},
        tie_word_embeddings=config["tie_word_embeddings"],
        use_sliding_window=False,
        bos_token_id=config["bos_token_id"],
        eos_token_id=config["eos_token_id"],
        attn_implementation="eager",
    )
    with torch.device("meta"):
        model = Qwen2ForCausalLM(qwen2)
    # `llm.model.*` → `model.*`, `llm.lm_head.weight` → `lm_head.weight`; strict, so names must match.
    model.load_state_dict(checkpoint_state_dict(ckpt_dir, LLM_PREFIX), strict=True, assign=True)
    # Buffers (RoPE inverse frequencies) are not in the checkpoint: rebuild them off the meta device.
    model.model.rotary_emb = type(model.model.rotary_emb)(config=qwen2)
    return model.float().eval()


def load_hf_tokenizer(ckpt_dir: str | Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(ckpt_dir))


# ggml's gguf_type values (gguf.h) → ggml getter suffix or numpy dtype of array elements.
_GGUF_SCALARS = {
    0: "u8",
    1: "i8",
    2: "u16",
    3: "i16",
    4: "u32",
    5: "i32",
    6: "f32",
    7: "bool",
    10: "u64",
    11: "i64",
    12: "f64",
}
_GGUF_ARRAYS = {0: np.uint8, 1: np.int8, 2: np.uint16, 3: np.int16, 4: np.uint32, 5: np.int32, 6: np.float32,
                7: np.bool_, 10: np.uint64, 11: np.int64, 12: np.float64}  # fmt: skip
GGUF_STRING, GGUF_ARRAY = 8, 9
# ggml_type → numpy storage (bf16 as its bit pattern)
GGML_STORAGE = {0: np.float32, 1: np.float16, 30: np.uint16}


@dataclass
class GgufTensor:
    type: int  # ggml_type: 0 F32, 1 F16, 30 BF16
    ne: tuple[int, ...]  # ggml order: ne[0] is the contiguous dimension
    data: np.ndarray  # memory-mapped, shaped as torch would (ne reversed)


@dataclass
class GgufContents:
    kv: dict  # key → int / float / bool / str / list[str] / np.ndarray
    tensors: dict[str, GgufTensor]  # in file order


def read_gguf(path: str | Path) -> GgufContents:
    """Every key and tensor of a GGUF file (F32/F16/BF16 tensors), parsed by ggml."""
    import ggml

    ggml_ctx = ctypes.c_void_p()
    params = ggml.gguf_init_params(no_alloc=True, ctx=ctypes.pointer(ggml_ctx))
    ctx = ggml.gguf_init_from_file(str(path).encode(), params)
    if not ctx:
        raise ValueError(f"{path}: ggml cannot parse this GGUF file")
    try:
        kv = {}
        for i in range(ggml.gguf_get_n_kv(ctx)):
            key, vtype = ggml.gguf_get_key(ctx, i).decode(), ggml.gguf_get_kv_type(ctx, i)
            if vtype == GGUF_STRING:
                kv[key] = ggml.gguf_get_val_str(ctx, i).decode()
            elif vtype == GGUF_ARRAY:
                atype, n = ggml.gguf_get_arr_type(ctx, i), ggml.gguf_get_arr_n(ctx, i)
                if atype == GGUF_STRING:
                    kv[key] = [ggml.gguf_get_arr_str(ctx, i, j).decode() for j in range(n)]
                else:
                    dtype = np.dtype(_GGUF_ARRAYS[atype])
                    raw = ctypes.string_at(ggml.gguf_get_arr_data(ctx, i), n * dtype.itemsize)
                    kv[key] = np.frombuffer(raw, dtype=dtype).copy()
            else:
                kv[key] = getattr(ggml, f"gguf_get_val_{_GGUF_SCALARS[vtype]}")(ctx, i)
        tensors = {}
        data_start = ggml.gguf_get_data_offset(ctx)
        for i in range(ggml.gguf_get_n_tensors(ctx)):
            name = ggml.gguf_get_tensor_name(ctx, i)
            t = ggml.ggml_get_tensor(ggml_ctx, name).contents
            ne = tuple(int(x) for x in t.ne[: ggml.ggml_n_dims(ggml.ggml_get_tensor(ggml_ctx, name))])
            data = np.memmap(
                path, dtype=GGML_STORAGE[t.type], mode="r", shape=(prod(ne),),
                offset=data_start + ggml.gguf_get_tensor_offset(ctx, i),
            ).reshape(ne[::-1])  # fmt: skip
            tensors[name.decode()] = GgufTensor(int(t.type), ne, data)
        return GgufContents(kv, tensors)
    finally:
        ggml.ggml_free(ggml_ctx)
        ggml.gguf_free(ctx)
