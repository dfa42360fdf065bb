"""Independent PyTorch references for tests: the checkpoint's LLM as transformers' Qwen2, and its tokenizer.

They read the HF checkpoint directly (safetensors + transformers), sharing no code with the
converter or the runtime, so that agreement with them means something.
"""

from __future__ import annotations

import json
from pathlib import Path

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
            for name in f.keys():
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
