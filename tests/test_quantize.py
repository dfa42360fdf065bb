"""The 16 size variants (docs/model.md §10): llama.cpp's per-tensor types, ggml's quantization through the binding,
``minicpmv-quantize`` (one variant, or all 16 in one pass), the Q8_0 vision file, bad input, killed
runs, and ``minicpmv-quality``.

The expected types are written here from docs/model.md §10, independently of convert/quant_rules.py.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from math import prod
from pathlib import Path

import numpy as np
import pytest
from gguf import GGMLQuantizationType as T
from gguf import quants

import minicpmv
from minicpmv.convert import ConversionError
from minicpmv.convert.gguf_layout import llm_tensors
from minicpmv.convert.gguf_quantize import GgufSource, quantize_all, quantize_gguf
from minicpmv.convert.hf_to_gguf import convert_llm
from minicpmv.convert.mmproj import convert_mmproj
from minicpmv.convert.quant_rules import VARIANTS, llm_tensor_type, tensor_nbytes, vision_tensor_type
from minicpmv.convert.synthetic import PRESETS, preset_config, write_checkpoint
from reference.models import read_gguf

# --- docs/model.md §10's table, written independently ---------------------------------------------------------

# Base tensor type and llama.cpp's general.file_type (LLAMA_FTYPE_MOSTLY_*) of each variant.
SPEC_VARIANTS = {
    "F16": (T.F16, 1), "BF16": (T.BF16, 32), "Q8_0": (T.Q8_0, 7), "Q6_K": (T.Q6_K, 18),
    "Q5_K_M": (T.Q5_K, 17), "Q5_K_S": (T.Q5_K, 16), "Q5_1": (T.Q5_1, 9), "Q5_0": (T.Q5_0, 8),
    "Q4_K_M": (T.Q4_K, 15), "Q4_K_S": (T.Q4_K, 14), "Q4_1": (T.Q4_1, 3), "Q4_0": (T.Q4_0, 2),
    "Q3_K_L": (T.Q3_K, 13), "Q3_K_M": (T.Q3_K, 12), "Q3_K_S": (T.Q3_K, 11), "Q2_K": (T.Q2_K, 10),
}  # fmt: skip
K_QUANTS = {T.Q2_K, T.Q3_K, T.Q4_K, T.Q5_K, T.Q6_K}  # 256-value super-blocks; the others 32
FALLBACK = {T.Q4_K: T.Q5_0, T.Q5_K: T.Q5_1, T.Q6_K: T.Q8_0, T.Q2_K: T.Q4_0, T.Q3_K: T.Q4_0}


def spec_more_bits(i: int, n: int) -> bool:
    # Divisions are llama.cpp's integer ones: for n = 28, layers 0..2 and 24..27 (docs/model.md §10).
    return i < n // 8 or i >= 7 * n // 8 or (i - n // 8) % 3 == 2


def spec_type(variant: str, name: str, shape: tuple[int, ...], n_layer: int, gqa: int) -> T:
    """docs/model.md §10 for one tensor (numpy shape, rows on the last axis)."""
    base = SPEC_VARIANTS[variant][0]
    if len(shape) == 1:
        return T.F32  # norms and biases
    if variant in ("F16", "BF16"):
        return base
    m = re.match(r"blk\.(\d+)\.(\w+)\.weight", name)
    layer, kind = (int(m.group(1)), m.group(2)) if m else (None, name)
    t = base
    if name == "output.weight":
        t = base if variant == "Q8_0" else T.Q6_K
    elif variant in ("Q4_K_M", "Q5_K_M") and kind in ("attn_v", "ffn_down") and spec_more_bits(layer, n_layer):
        t = T.Q6_K
    elif variant == "Q4_K_S" and ((kind == "attn_v" and layer < 4) or (kind == "ffn_down" and layer < n_layer // 8)):
        t = T.Q5_K
    elif variant == "Q3_K_M" and kind == "attn_v":
        t = T.Q5_K if layer < 2 else T.Q4_K
    elif variant == "Q3_K_M" and kind == "ffn_down":
        t = T.Q5_K if layer < n_layer // 16 else T.Q4_K
    elif variant == "Q3_K_M" and kind == "attn_output":
        t = T.Q4_K
    elif variant == "Q3_K_L" and kind in ("attn_v", "ffn_down", "attn_output"):
        t = T.Q5_K
    elif variant == "Q2_K" and kind == "attn_v":
        t = T.Q4_K if gqa >= 4 else T.Q3_K  # llama.cpp's other branch: Q3_K below a GQA ratio of 4
    elif variant == "Q2_K" and kind in ("ffn_down", "attn_output"):
        t = T.Q3_K
    row = shape[-1]
    if row % (256 if t in K_QUANTS else 32):
        t = FALLBACK[t] if row % 32 == 0 else T.F16
    return t


def test_more_bits_layers_of_28_are_the_specs():
    assert {i for i in range(28) if spec_more_bits(i, 28)} == {0, 1, 2, *range(5, 24, 3), 24, 25, 26, 27}


def test_variant_table_matches_spec():
    assert [v for v in VARIANTS if v != "F32"] == list(SPEC_VARIANTS)
    for name, (base, file_type) in SPEC_VARIANTS.items():
        assert (VARIANTS[name].base, int(VARIANTS[name].file_type)) == (base, file_type)


@pytest.mark.parametrize("variant", list(SPEC_VARIANTS))
def test_tensor_types_of_28_layers_follow_spec(variant):
    config = preset_config("full")  # 28 layers, 28 query heads over 4 KV heads
    for _, name, shape in llm_tensors(config):
        assert llm_tensor_type(VARIANTS[variant], name, shape, 28, 7) == spec_type(variant, name, shape, 28, 7), name


# The published files' sizes (docs/model.md §10), from the types alone: tensor bytes of the full shapes.
@pytest.mark.parametrize("variant,published_gb", [("F16", 15.2), ("Q8_0", 8.1), ("Q4_K_M", 4.68), ("Q2_K", 3.01)])
def test_full_model_sizes_match_published_files(variant, published_gb):
    tensors = llm_tensors(preset_config("full"))
    n_bytes = sum(tensor_nbytes(s, llm_tensor_type(VARIANTS[variant], n, s, 28, 7)) for _, n, s in tensors)
    assert n_bytes / 1e9 == pytest.approx(published_gb, rel=0.006)
    if variant == "Q4_K_M":
        assert 8 * n_bytes / sum(prod(s) for *_, s in tensors) == pytest.approx(4.9, abs=0.05)


@pytest.mark.parametrize("variant", list(SPEC_VARIANTS))
def test_fallbacks_for_rows_that_are_not_block_multiples(variant):
    # Rows of 384 and 1120 values (multiples of 32, not of 256), of 100 (not even of 32), GQA ratio 3.
    for name, shape in [("blk.0.attn_q.weight", (384, 384)), ("blk.0.attn_v.weight", (128, 384)),
                        ("blk.1.ffn_down.weight", (384, 1120)), ("blk.1.attn_output.weight", (384, 384)),
                        ("token_embd.weight", (1000, 384)), ("output.weight", (1000, 384)),
                        ("blk.0.ffn_up.weight", (64, 100))]:  # fmt: skip
        base = SPEC_VARIANTS[variant][0]
        if shape[-1] == 100 and base not in K_QUANTS | {T.F16, T.BF16}:
            # llama.cpp defines no fallback for the 32-value types: it refuses the tensor.
            with pytest.raises(ConversionError, match="no fallback"):
                llm_tensor_type(VARIANTS[variant], name, shape, 2, 3)
            continue
        assert llm_tensor_type(VARIANTS[variant], name, shape, 2, 3) == spec_type(variant, name, shape, 2, 3), name


def test_vision_q8_0_types():
    assert vision_tensor_type("v.blk.0.attn_q.weight", (1152, 1152), T.Q8_0) == T.Q8_0
    assert vision_tensor_type("v.blk.0.ffn_down.weight", (4304, 1152), T.Q8_0) == T.Q8_0  # fc1
    assert vision_tensor_type("v.blk.0.ffn_up.weight", (1152, 4304), T.Q8_0) == T.F16  # fc2: 4304 = 134.5 blocks
    assert vision_tensor_type("v.patch_embd.weight", (1152, 3, 14, 14), T.Q8_0) == T.F16
    assert vision_tensor_type("v.position_embd.weight", (4900, 1152), T.Q8_0) == T.F16
    assert vision_tensor_type("v.blk.0.ln1.bias", (1152,), T.Q8_0) == T.F32


# --- ggml's quantization through the binding ----------------------------------------------------------


def test_binding_threads_do_not_change_the_bytes():
    x = np.random.default_rng(0).standard_normal((300, 512), dtype=np.float32)
    for t in (T.Q4_K, T.Q8_0, T.F16):
        one = minicpmv._core.quantize(x, int(T.F32), int(t), 1)
        assert np.array_equal(one, minicpmv._core.quantize(x, int(T.F32), int(t), 3))
        assert one.shape == (300, tensor_nbytes((512,), t))
    # f16 and bf16 sources are widened exactly first.
    assert np.array_equal(
        minicpmv._core.quantize(x.astype(np.float16), int(T.F16), int(T.Q6_K)),
        minicpmv._core.quantize(x.astype(np.float16).astype(np.float32), int(T.F32), int(T.Q6_K)),
    )


def test_binding_rejects_what_ggml_would_abort_on():
    x = np.zeros((4, 100), np.float32)
    with pytest.raises(minicpmv.InvalidArgumentError, match="not a multiple of q4_K's block of 256"):
        minicpmv._core.quantize(x, int(T.F32), int(T.Q4_K))
    with pytest.raises(minicpmv.InvalidArgumentError, match="float16 array"):
        minicpmv._core.quantize(x, int(T.F16), int(T.Q8_0))
    with pytest.raises(minicpmv.InvalidArgumentError, match="cannot write iq2_xxs"):
        minicpmv._core.quantize(np.zeros((4, 256), np.float32), int(T.F32), int(T.IQ2_XXS))
    with pytest.raises(minicpmv.InvalidArgumentError, match="C-contiguous"):
        minicpmv._core.quantize(np.zeros((64, 64), np.float32).T, int(T.F32), int(T.Q8_0))
    nan = np.zeros((4, 256), np.float32)
    nan[2, 7] = np.nan
    with pytest.raises(minicpmv.ModelFormatError, match="not all finite"):
        minicpmv._core.quantize(nan, int(T.F32), int(T.Q4_K))


# --- all 16 variants of the tiny model -------------------------------------------------------------------

# Relative RMS error ‖dequantized − source‖ / ‖source‖ expected of each type on Gaussian weights. A b-bit
# quantizer of a block spanning ±amax has bins of 2·amax / (2^b − 1) and an RMS error of bin / √12; for
# blocks of 32 Gaussian values amax ≈ 2.5 σ, so the estimate is 5 / ((2^b − 1) √12). The bound is 1.25×
# that; K-quants stay well inside it (their scales are fitted, not just the block's maximum). F16 and
# BF16 round to 11 and 8 significant bits (relative error ≤ 2^-11, 2^-9); the tiny model's bf16 values fit
# both exactly. Measured on the tiny model (all tensors of every file, seed 0), for the record:
BITS = {T.Q8_0: 8, T.Q6_K: 6, T.Q5_K: 5, T.Q5_1: 5, T.Q5_0: 5, T.Q4_K: 4, T.Q4_1: 4, T.Q4_0: 4, T.Q3_K: 3, T.Q2_K: 2}
MEASURED = {T.F16: 0.0, T.BF16: 0.0, T.Q8_0: 0.0054, T.Q6_K: 0.0178, T.Q5_K: 0.0364, T.Q5_1: 0.0381, T.Q5_0: 0.0430,
            T.Q4_K: 0.0717, T.Q4_1: 0.0787, T.Q4_0: 0.0863, T.Q3_K: 0.152, T.Q2_K: 0.298}  # fmt: skip


def error_bound(t: T) -> float:
    if t in (T.F16, T.BF16):
        return 2.0 ** (-11 if t == T.F16 else -9)
    return 1.25 * 5 / ((2 ** BITS[t] - 1) * np.sqrt(12))


def same_kv(a, b, but: tuple[str, ...] = ()) -> bool:
    """Two files' metadata are the same keys, types and values, apart from the keys in ``but``."""
    keys = [k for k in a.kv if k not in but]
    if keys != [k for k in b.kv if k not in but]:
        return False
    return all(a.kv_types[k] == b.kv_types[k] and np.array_equal(a.kv[k], b.kv[k]) for k in keys)


@pytest.fixture(scope="module")
def all_run(tiny_gguf_f32, tmp_path_factory) -> tuple[dict[str, Path], Counter, Counter]:
    """quantize_all of the tiny F32 file: variant → path, and how often each source tensor was mapped
    and each (tensor, type) computed."""
    mapped, converted = Counter(), Counter()
    real_map, real_convert = GgufSource._map, GgufSource._convert

    def counting_map(self, name):
        mapped[name] += 1
        return real_map(self, name)

    def counting_convert(self, name, out_type):
        converted[name, out_type] += 1
        return real_convert(self, name, out_type)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(GgufSource, "_map", counting_map)
        mp.setattr(GgufSource, "_convert", counting_convert)
        paths = quantize_all(tiny_gguf_f32, tmp_path_factory.mktemp("variants"), progress=False)
    return {p.name.removeprefix("ggml-model-").removesuffix(".gguf"): p for p in paths}, mapped, converted


@pytest.fixture(scope="module")
def all_variants(all_run) -> dict[str, Path]:
    return all_run[0]


def test_all_reads_each_source_tensor_once_and_computes_each_type_once(all_run, tiny_gguf_f32):
    paths, mapped, converted = all_run
    tensors = read_gguf(tiny_gguf_f32).tensors
    assert mapped == Counter(dict.fromkeys(tensors, 1))
    types = {
        name: {read_gguf(p).tensors[name].type for p in paths.values()}
        for name in ("token_embd.weight", "output.weight")
    }
    assert len(types["token_embd.weight"]) == 12 and len(types["output.weight"]) == 4  # F16 BF16 Q8_0 Q6_K
    assert set(converted.values()) == {1}
    for name in types:
        assert {t for n, t in converted if n == name} == types[name]


def test_all_writes_16_files_with_the_specs_types_and_copied_metadata(all_variants, tiny_gguf_f32):
    assert list(all_variants) == list(SPEC_VARIANTS)
    source = read_gguf(tiny_gguf_f32)
    config = preset_config("tiny")
    gqa = config["num_attention_heads"] // config["num_key_value_heads"]
    for variant, path in all_variants.items():
        g = read_gguf(path)
        assert g.kv["general.file_type"] == SPEC_VARIANTS[variant][1]
        assert g.kv["general.quantization_version"] == 2 and g.kv_types["general.file_type"] == "u32"
        assert same_kv(g, source, but=("general.file_type",))
        assert list(g.tensors) == list(source.tensors)
        for name, t in g.tensors.items():
            assert t.ne == source.tensors[name].ne
            assert T(t.type) == spec_type(variant, name, t.ne[::-1], config["num_hidden_layers"], gqa), (variant, name)


def test_dequantized_error_within_the_types_bound(all_variants, tiny_gguf_f32):
    source = read_gguf(tiny_gguf_f32).tensors
    worst: dict[T, float] = {}
    for path in all_variants.values():
        for name, t in read_gguf(path).tensors.items():
            if t.type == T.F32:
                continue
            rows = slice(0, 4096)  # of the two 151666-row matrices; all of the others
            src = np.asarray(source[name].data[rows], np.float64)
            values = quants.dequantize(np.asarray(t.data[rows]).view(np.uint8), T(t.type)).reshape(src.shape)
            err = np.sqrt(((values - src) ** 2).mean() / (src**2).mean())
            worst[T(t.type)] = max(worst.get(T(t.type), 0.0), err)
    print({t.name: f"{e:.4f} (bound {error_bound(t):.4f})" for t, e in worst.items()})
    assert set(worst) == set(MEASURED)
    for t, err in worst.items():
        assert err <= error_bound(t), t.name
        assert err == pytest.approx(MEASURED[t], rel=0.1, abs=1e-6), t.name  # the table above is current


def test_every_variant_loads_and_chats(all_variants):
    msgs = [{"role": "user", "content": "Tell me about the sea."}]
    for variant, path in all_variants.items():
        model = minicpmv.Model(path, n_ctx=256, n_threads=1)  # ggml's spinning threads crawl on a busy machine
        reply = model.chat(msgs, max_new_tokens=4, sampling=False, num_beams=1, repetition_penalty=1.0)
        assert model.last_result.tokens and isinstance(reply, str), variant


def test_from_checkpoint_equals_from_gguf(tiny_ckpt, tiny_gguf_f32, all_variants, tmp_path):
    # The bf16 checkpoint and the F32 file hold the same values, so both routes give the same bytes.
    direct = read_gguf(convert_llm(tiny_ckpt, tmp_path / "q.gguf", outtype="q4_k_m", progress=False))
    via_gguf = read_gguf(all_variants["Q4_K_M"])
    assert same_kv(direct, via_gguf)
    for name, t in direct.tensors.items():
        assert t.type == via_gguf.tensors[name].type and np.array_equal(t.data, via_gguf.tensors[name].data), name


def test_bf16_source_gives_the_same_bytes(all_variants, tmp_path):
    # The BF16 variant holds the tiny model's values exactly, so quantizing it matches quantizing the F32 file.
    again = read_gguf(quantize_gguf(all_variants["BF16"], tmp_path / "q.gguf", "Q4_0", progress=False))
    expected = read_gguf(all_variants["Q4_0"])
    for name, t in again.tensors.items():
        assert t.type == expected.tensors[name].type and np.array_equal(t.data, expected.tensors[name].data), name


# A checkpoint whose LLM widths are multiples of 32 but not of 256: every K-quant falls back (docs/model.md §10).
ODD = {
    "_name_or_path": "minicpmv-synthetic-odd",
    "hidden_size": 384,
    "intermediate_size": 1120,
    "num_hidden_layers": 2,
    "max_window_layers": 2,
    "num_attention_heads": 3,
    "num_key_value_heads": 1,
    "vision_config": PRESETS["tiny"]["config"]["vision_config"],
}


@pytest.mark.parametrize("variant", ["Q4_K_M", "Q2_K", "Q6_K"])
def test_fallbacks_on_a_model_with_odd_widths(tmp_path_factory, variant):
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(PRESETS, "odd", {"config": ODD, "max_shard_bytes": 1 << 30})
        ckpt = tmp_path_factory.getbasetemp() / "odd_ckpt"
        if not ckpt.exists():
            write_checkpoint(ckpt, preset="odd", seed=0)
    path = convert_llm(ckpt, tmp_path_factory.mktemp("odd") / "m.gguf", outtype=variant, progress=False)
    g = read_gguf(path)
    types = {name: T(t.type) for name, t in g.tensors.items()}
    for name, t in g.tensors.items():
        assert types[name] == spec_type(variant, name, t.ne[::-1], 2, 3), name
    assert not set(types.values()) & K_QUANTS  # nothing of 384 or 1120 values fits a super-block
    model = minicpmv.Model(path, n_ctx=128, n_threads=1)
    model.chat([{"role": "user", "content": "Hi"}], max_new_tokens=4, sampling=False, num_beams=1)
    assert model.last_result.tokens


# --- the vision file in Q8_0 -------------------------------------------------------------------------------


def test_q8_0_vision_file_loads_and_answers(tiny_ckpt, tiny_gguf_f16, tiny_mmproj_f16, tmp_path):
    path = convert_mmproj(tiny_ckpt, tmp_path / "mmproj-model-q8_0.gguf", outtype="q8_0", progress=False)
    g = read_gguf(path)
    assert g.kv["general.file_type"] == 7
    for name, t in g.tensors.items():
        expected = (T.F32 if len(t.ne) == 1 or name in ("resampler.query", "resampler.pos_embed_k")
                    else T.F16 if name in ("v.patch_embd.weight", "v.position_embd.weight") else T.Q8_0)  # fmt: skip
        assert T(t.type) == expected, name
    image = np.random.default_rng(1).integers(0, 256, (300, 400, 3), dtype=np.uint8)
    q8 = minicpmv.Model(tiny_gguf_f16, mmproj_path=path, n_ctx=1024, n_threads=1)
    q8.chat(
        [{"role": "user", "content": [image, "What is in the image?"]}], max_new_tokens=4, sampling=False, num_beams=1
    )
    assert q8.last_result.tokens and q8.last_result.n_encoded > 0
    # The resampler's output stays close to the f16 file's.
    slice_ = np.random.default_rng(2).uniform(-1, 1, (3, 112, 112)).astype(np.float32)
    ref = minicpmv.Model(tiny_gguf_f16, mmproj_path=tiny_mmproj_f16, n_ctx=256, n_threads=1).encode_slices([slice_])
    got = q8.encode_slices([slice_])
    assert np.linalg.norm(got - ref) / np.linalg.norm(ref) < 0.05


# --- interrupted runs and bad input ---------------------------------------------------------------------------


def test_failure_midway_through_all_leaves_no_file(tiny_gguf_f32, tmp_path, monkeypatch):
    real, calls = GgufSource._convert, []

    def failing(self, name, out_type):
        calls.append(name)
        if len(calls) == 3:  # within the first tensor: all 16 files have been started
            raise KeyboardInterrupt
        return real(self, name, out_type)

    monkeypatch.setattr(GgufSource, "_convert", failing)
    with pytest.raises(KeyboardInterrupt):
        quantize_all(tiny_gguf_f32, tmp_path, progress=False)
    assert os.listdir(tmp_path) == []


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "minicpmv.convert.quantize_cli", *args],
        capture_output=True, text=True, check=False,
    )  # fmt: skip


_SLOW_QUANTIZE = """
import sys, time
from minicpmv.convert import quantize_cli
from minicpmv.convert.gguf_quantize import GgufSource
real = GgufSource._convert
def slow(self, *args):
    time.sleep(0.3)
    return real(self, *args)
GgufSource._convert = slow
sys.exit(quantize_cli.main(sys.argv[1:]))
"""


def test_sigkill_leaves_nothing_at_the_output_and_the_next_run_cleans_up(tiny_gguf_f32, tmp_path):
    out = tmp_path / "ggml-model-Q3_K_M.gguf"
    args = [str(tiny_gguf_f32), str(out), "q3_k_m", "--no-progress"]
    proc = subprocess.Popen([sys.executable, "-c", _SLOW_QUANTIZE, *args], stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 90
    while not list(tmp_path.glob("*.tmp-*")) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    [stale] = tmp_path.glob("*.tmp-*")  # nothing runs after SIGKILL: the temporary file stays...
    assert stale.name.startswith(f"{out.name}.tmp-{proc.pid}-") and not out.exists()  # ...but the output is absent

    live = tmp_path / f"{out.name}.tmp-{os.getpid()}-0123abcd"  # a writer that is still running
    live.write_bytes(b"")
    done = run_cli(*args)
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([out.name, live.name])  # the dead writer's file went
    assert done.stdout.split() == [str(out)]
    assert done.stderr.strip().endswith(
        f"{out}: 0.06 GB, 4.98 bits/weight, 0.0794 B weights; 39 tensors: 16 F32, 13 Q3_K, 7 Q4_K, 2 Q5_K, 1 Q6_K"
    )


def test_cli_bad_input(tiny_gguf_f32, all_variants, tiny_mmproj_f16, tmp_path):
    out = str(tmp_path / "out.gguf")
    not_gguf = tmp_path / "notes.gguf"
    not_gguf.write_text("this is not a GGUF file\n" * 10)
    cases = [
        ((str(tiny_gguf_f32), out, "Q4_K_X"), "invalid choice: 'Q4_K_X'"),
        ((str(tiny_gguf_f32), out), "give either TYPE or --all"),
        ((str(all_variants["Q4_K_M"]), out, "q8_0"), "is already quantized (Q4_K)"),
        ((str(not_gguf), out, "q8_0"), "not a GGUF file"),
        ((str(tmp_path / "missing.gguf"), out, "q8_0"), "no such file"),
        ((str(tiny_mmproj_f16), out, "q8_0"), "architecture 'clip'"),
        ((str(tiny_gguf_f32), str(tiny_gguf_f32), "q8_0"), "would replace the input"),
        ((str(tiny_gguf_f32), str(tmp_path / "nodir" / "x.gguf"), "q8_0"), "output directory does not exist"),
    ]
    for args, message in cases:
        proc = run_cli(*args, "--no-progress")
        assert proc.returncode == 2, (args, proc.stderr)
        assert message in proc.stderr and "Traceback" not in proc.stderr, (args, proc.stderr)
        assert "--allow-requantize" in proc.stderr or "already quantized" not in message
    assert sorted(os.listdir(tmp_path)) == ["notes.gguf"]


def test_convert_cli_outtype_any_case(tiny_ckpt, tmp_path):
    from minicpmv.convert.cli import main as convert_main

    assert convert_main([str(tiny_ckpt), "--outdir", str(tmp_path), "--outtype", "q3_k_m", "--vision-outtype", "Q8_0",
                         "--no-progress"]) == 0  # fmt: skip
    assert sorted(os.listdir(tmp_path)) == ["ggml-model-Q3_K_M.gguf", "mmproj-model-q8_0.gguf"]
    assert read_gguf(tmp_path / "ggml-model-Q3_K_M.gguf").kv["general.file_type"] == 12
    with pytest.raises(SystemExit) as e:
        convert_main([str(tiny_ckpt), "--outtype", "q9_k"])
    assert e.value.code == 2


def test_quantize_gguf_rejects_an_unknown_variant(tiny_gguf_f32, tmp_path):
    with pytest.raises(ConversionError, match="unknown outtype 'f32'"):  # F32 is no size variant
        quantize_gguf(tiny_gguf_f32, tmp_path / "x.gguf", "f32")


# --- minicpmv-quality -------------------------------------------------------------------------------------------


def test_quality_report(tiny_gguf_f32, all_variants, tiny_mmproj_f16, capsys):
    from minicpmv.quality import main as quality_main

    files = [str(all_variants[v]) for v in ("Q8_0", "Q4_K_M", "Q2_K")]
    assert quality_main([str(tiny_gguf_f32), *files, "--mmproj", str(tiny_mmproj_f16), "-t", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert re.match(r"8 prompts \(2 with images\), \d+ positions", lines[0])
    rows = {line.split()[0]: line.split() for line in lines[2:]}
    assert rows["ggml-model-F32.gguf"][3] == "reference"
    kl = {v: float(rows[f"ggml-model-{v}.gguf"][3]) for v in ("Q8_0", "Q4_K_M", "Q2_K")}
    top1 = {v: float(rows[f"ggml-model-{v}.gguf"][4].rstrip("%")) for v in ("Q8_0", "Q4_K_M", "Q2_K")}
    assert 0 < kl["Q8_0"] < kl["Q4_K_M"] < kl["Q2_K"]
    assert top1["Q8_0"] > top1["Q4_K_M"] > top1["Q2_K"] and top1["Q8_0"] > 85
    assert rows["ggml-model-Q4_K_M.gguf"][1:3] == ["0.06", "5.51"]
    assert quality_main([str(tiny_gguf_f32), "missing.gguf"]) == 2
    assert "minicpmv-quality: error:" in capsys.readouterr().err


def test_nan_weights_in_the_source_file_are_refused(tiny_gguf_f16, tmp_path):
    from gguf import GGUFReader

    data = bytearray(Path(tiny_gguf_f16).read_bytes())
    t = next(t for t in GGUFReader(tiny_gguf_f16).tensors if t.name == "blk.1.attn_v.weight")
    data[t.data_offset + 2 * 300 : t.data_offset + 2 * 301] = np.float16(np.nan).tobytes()
    src = tmp_path / "nan.gguf"
    src.write_bytes(bytes(data))
    with pytest.raises(ConversionError, match=r"tensor blk.1.attn_v.weight holds NaN or infinite values \(row 1\)"):
        quantize_gguf(src, tmp_path / "out.gguf", "Q4_K_M", progress=False)
    assert not (tmp_path / "out.gguf").exists()
