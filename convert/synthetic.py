"""Write a synthetic MiniCPM-V 2.6 checkpoint in the HF layout (docs/model.md §2): real names, shapes, config and
tokenizer, seeded random bf16 weights. No real weights can be downloaded here, so tests run on the
``tiny`` preset, benchmarks on ``full`` (the real sizes, ~16 GB) and the fuzzers' seeds on ``micro`` (a
vocabulary of the 256 bytes and a few merges, under 1 MB of weights: fuzz/make_corpus.py).

    python -m minicpmv.convert.synthetic --preset tiny OUT_DIR
"""

from __future__ import annotations

import argparse
import base64
import copy
import json
import re
import struct
import tempfile
import zlib
from math import prod
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .gguf_layout import checkpoint_tensors
from .hf_to_gguf import f32_to_bf16_bits
from .tokenizer_files import SPECIAL_TOKENS, write_tokenizer_files

# The published config.json (docs/model.md §1, §2), minus fields that only describe the training run.
FULL_CONFIG = {
    "_name_or_path": "openbmb/MiniCPM-V-2_6",
    "architectures": ["MiniCPMV"],
    "auto_map": {
        "AutoConfig": "configuration_minicpm.MiniCPMVConfig",
        "AutoModel": "modeling_minicpmv.MiniCPMV",
        "AutoModelForCausalLM": "modeling_minicpmv.MiniCPMV",
    },
    "model_type": "minicpmv",
    "version": 2.6,
    "torch_dtype": "bfloat16",
    "transformers_version": "4.40.0",
    # Qwen2-7B
    "vocab_size": 151666,
    "hidden_size": 3584,
    "intermediate_size": 18944,
    "num_hidden_layers": 28,
    "num_attention_heads": 28,
    "num_key_value_heads": 4,
    "hidden_act": "silu",
    "max_position_embeddings": 32768,
    "max_window_layers": 28,
    "rms_norm_eps": 1e-06,
    "rope_theta": 1000000.0,
    "sliding_window": 131072,
    "use_sliding_window": False,
    "tie_word_embeddings": False,
    "attention_dropout": 0.0,
    "initializer_range": 0.02,
    "use_cache": True,
    "bos_token_id": 151643,
    "eos_token_id": 151645,
    # vision + resampler
    "query_num": 64,
    "image_size": 448,
    "patch_size": 14,
    "slice_mode": True,
    "slice_config": {"max_slice_nums": 9, "model_type": "minicpmv", "patch_size": 14, "scale_resolution": 448},
    "use_image_id": True,
    "drop_vision_last_layer": False,
    "batch_vision_input": True,
    "vision_batch_size": 16,
    "vision_config": {
        "hidden_size": 1152,
        "image_size": 980,
        "intermediate_size": 4304,
        "model_type": "siglip",
        "num_attention_heads": 16,
        "num_hidden_layers": 27,
        "patch_size": 14,
    },
}

# The micro preset's BPE tokens past the 256 bytes, in rank order; each is built from two lower-ranked ones.
MICRO_MERGED = (b"<u", b"<un", b"<unk", b"<unk>", b"He", b"ll", b"llo", b"Hello", b" t", b"he", b" the", b"in", b" in")

# Overrides of FULL_CONFIG. tiny keeps the full vocabulary (the tokenizer is the real one) and the
# 70×70 position table, and shrinks everything else; the resampler's width follows the LLM's
# (resampler heads = hidden / 128).
PRESETS = {
    "full": {"config": {}, "max_shard_bytes": 5_000_000_000},
    "tiny": {
        "config": {
            "_name_or_path": "minicpmv-synthetic-tiny",
            "hidden_size": 256,
            "intermediate_size": 512,
            "num_hidden_layers": 3,
            "max_window_layers": 3,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "vision_config": {
                "hidden_size": 96,
                "intermediate_size": 192,
                "num_attention_heads": 4,
                "num_hidden_layers": 3,
            },
        },
        # Small enough that the tiny checkpoint has several shards, like the real one.
        "max_shard_bytes": 64_000_000,
    },
    # The smallest files every loader check accepts: resampler width 128 (one head), heads 8 wide,
    # a 4×4 position table with slices of 2×2 patches.
    "micro": {
        "config": {
            "_name_or_path": "minicpmv-synthetic-micro",
            "vocab_size": 256 + len(MICRO_MERGED) + len(SPECIAL_TOKENS),
            "hidden_size": 128,
            "intermediate_size": 128,
            "num_hidden_layers": 1,
            "max_window_layers": 1,
            "num_attention_heads": 2,
            "num_key_value_heads": 1,
            "query_num": 4,
            "image_size": 28,
            "slice_config": {"max_slice_nums": 9, "model_type": "minicpmv", "patch_size": 14, "scale_resolution": 28},
            "vision_config": {
                "hidden_size": 16,
                "image_size": 56,
                "intermediate_size": 32,
                "num_attention_heads": 2,
                "num_hidden_layers": 1,
            },
        },
        "max_shard_bytes": 64_000_000,
        "merged": MICRO_MERGED,
    },
}

# Target std of the tiny LLM's logits: wide enough that greedy decoding is not decided by rounding.
LOGIT_STD = 3.0
_CHUNK = 1 << 22  # elements generated at a time, bounding memory for the 1 GB tensors of `full`


def preset_config(preset: str) -> dict:
    """The config.json of a preset: FULL_CONFIG with the preset's overrides merged in."""
    config = copy.deepcopy(FULL_CONFIG)
    for key, value in PRESETS[preset]["config"].items():
        if isinstance(value, dict):
            config[key].update(value)
        else:
            config[key] = value
    return config


def _init(name: str, shape: tuple[int, ...], config: dict) -> tuple[float, float]:
    """(mean, std) of a tensor's values, chosen so activations stay O(1) through every layer."""
    if re.search(r"(norm\w*|ln_\w+)\.weight$", name):
        # Near 1 but not 1, so a norm weight applied to the wrong channel changes the result.
        return 1.0, 0.1
    if name.endswith("bias"):
        # Non-zero so that a dropped bias shows.
        return 0.0, 0.1
    if name.endswith(("embed_tokens.weight", "resampler.query")):
        return 0.0, 1.0
    if name.endswith("position_embedding.weight"):
        return 0.0, 0.5
    if name.endswith("lm_head.weight"):
        # The final norm output has rms ~1, so the logits' std is LOGIT_STD.
        return 0.0, LOGIT_STD / np.sqrt(config["hidden_size"])
    # Linear [out, in] or conv [out, c, kh, kw]: unit gain over the fan-in. `resampler.proj` is
    # [in, out] but square.
    return 0.0, 1.0 / np.sqrt(prod(shape[1:]))


def tensor_values(name: str, shape: tuple[int, ...], config: dict, seed: int):
    """Yield the tensor's float32 values in chunks, flattened in row-major order.

    Seeded per tensor by its name, so a tensor's values do not depend on the others or on the order.
    """
    mean, std = _init(name, shape, config)
    rng = np.random.Generator(np.random.PCG64([seed, zlib.crc32(name.encode())]))
    total = prod(shape)
    for start in range(0, total, _CHUNK):
        chunk = rng.standard_normal(min(_CHUNK, total - start), dtype=np.float32)
        chunk *= np.float32(std)
        chunk += np.float32(mean)
        yield chunk


def _shards(tensors, max_bytes: int) -> list[list[tuple[str, tuple[int, ...]]]]:
    """Greedy split in module order, as HF's save_pretrained does; a larger tensor gets its own shard."""
    shards, size = [[]], 0
    for name, shape in tensors:
        nbytes = 2 * prod(shape)
        if shards[-1] and size + nbytes > max_bytes:
            shards.append([])
            size = 0
        shards[-1].append((name, shape))
        size += nbytes
    return shards


def _write_safetensors(path: Path, tensors, config: dict, seed: int, bar) -> None:
    """Write one bf16 safetensors file without holding it in memory.

    The format is an 8-byte little-endian header length, a JSON header giving every tensor's dtype,
    shape and byte range, then the raw data; since all shapes are known first, the header is written
    up front and the data streamed after it.
    """
    header, offset = {"__metadata__": {"format": "pt"}}, 0
    for name, shape in tensors:
        header[name] = {"dtype": "BF16", "shape": list(shape), "data_offsets": [offset, offset + 2 * prod(shape)]}
        offset += 2 * prod(shape)
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)  # the data start is kept 8-byte aligned
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(blob)))
        f.write(blob)
        for name, shape in tensors:
            for chunk in tensor_values(name, shape, config, seed):
                f.write(f32_to_bf16_bits(chunk).tobytes())
                bar.update(2 * chunk.size)


def write_checkpoint(out_dir: str | Path, preset: str = "tiny", seed: int = 0, progress: bool = False) -> Path:
    """Write config, generation config, tokenizer files and sharded bf16 weights into ``out_dir``."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; expected one of {sorted(PRESETS)}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    config = preset_config(preset)
    with open(out_dir / "config.json", "w") as f:
        json.dump(config, f, indent=2)
    generation = {"bos_token_id": config["bos_token_id"], "eos_token_id": config["eos_token_id"]}
    with open(out_dir / "generation_config.json", "w") as f:
        json.dump(generation, f, indent=2)
    merged = PRESETS[preset].get("merged")
    if merged is None:
        write_tokenizer_files(out_dir)
    else:
        # A ranks file of the preset's own: the bytes, then its merged tokens.
        with tempfile.TemporaryDirectory() as tmp:
            ranks = Path(tmp) / "ranks.tiktoken"
            tokens = [bytes([b]) for b in range(256)] + list(merged)
            ranks.write_bytes(b"".join(base64.b64encode(t) + b" %d\n" % r for r, t in enumerate(tokens)))
            write_tokenizer_files(out_dir, ranks)

    tensors = checkpoint_tensors(config)
    shards = _shards(tensors, PRESETS[preset]["max_shard_bytes"])
    weight_map, total = {}, 2 * sum(prod(shape) for _, shape in tensors)
    with tqdm(total=total, unit="B", unit_scale=True, disable=not progress, desc="weights") as bar:
        for i, shard in enumerate(shards):
            file_name = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
            _write_safetensors(out_dir / file_name, shard, config, seed, bar)
            weight_map.update({name: file_name for name, _ in shard})
    index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
    with open(out_dir / "model.safetensors.index.json", "w") as f:
        json.dump(index, f, indent=2)
    return out_dir


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Write a synthetic MiniCPM-V 2.6 checkpoint (HF layout).")
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--preset", choices=sorted(PRESETS), default="tiny")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    write_checkpoint(args.out_dir, args.preset, args.seed, progress=True)


if __name__ == "__main__":
    main()
