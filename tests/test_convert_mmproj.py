"""The vision GGUF file ("mmproj", docs/model.md §9), the one-call CLI, and the PyTorch vision reference (§4, §5).

Expected names and transforms are written out here from the spec, independently of
convert/gguf_layout.py; files are read back with ggml's own parser (reference.read_gguf).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from test_convert import checkpoint_variant, leftover_temp_files

from minicpmv.convert import ConversionError
from minicpmv.convert.cli import main as cli_main
from minicpmv.convert.gguf_layout import vision_tensors
from minicpmv.convert.hf_to_gguf import Checkpoint, convert_llm
from minicpmv.convert.mmproj import convert_mmproj
from minicpmv.convert.synthetic import preset_config
from reference.models import (
    checkpoint_state_dict,
    load_vision_reference,
    navit_position_ids,
    read_gguf,
    reference_slice_embeddings,
    sincos_2d_reference,
    tgt_sizes_of,
)

GGML_F32, GGML_F16 = 0, 1
ALWAYS_F32 = {"resampler.query", "resampler.pos_embed_k"}  # besides every 1-D tensor (docs/model.md §9)


# --- docs/model.md §9, written out independently -----------------------------------------------------------


def spec_mmproj(c: dict) -> dict[str, tuple[str | None, str]]:
    """GGUF name → (HF name, how): "as is", "transposed", a row block "q" / "k" / "v" of the packed
    in_proj, or "sincos" (computed, no HF tensor)."""
    out = {
        "v.patch_embd.weight": ("vpm.embeddings.patch_embedding.weight", "as is"),
        "v.patch_embd.bias": ("vpm.embeddings.patch_embedding.bias", "as is"),
        "v.position_embd.weight": ("vpm.embeddings.position_embedding.weight", "as is"),
        "v.post_ln.weight": ("vpm.post_layernorm.weight", "as is"),
        "v.post_ln.bias": ("vpm.post_layernorm.bias", "as is"),
        "resampler.query": ("resampler.query", "as is"),
        "resampler.kv.weight": ("resampler.kv_proj.weight", "as is"),
        "resampler.attn.out.weight": ("resampler.attn.out_proj.weight", "as is"),
        "resampler.attn.out.bias": ("resampler.attn.out_proj.bias", "as is"),
        "resampler.proj.weight": ("resampler.proj", "transposed"),
        "resampler.pos_embed_k": (None, "sincos"),
    }
    for ln in ("ln_q", "ln_kv", "ln_post"):
        out |= {f"resampler.{ln}.{k}": (f"resampler.{ln}.{k}", "as is") for k in ("weight", "bias")}
    for x in "qkv":
        out |= {f"resampler.attn.{x}.{k}": (f"resampler.attn.in_proj_{k}", x) for k in ("weight", "bias")}
    for n in range(c["vision_config"]["num_hidden_layers"]):
        g, h = f"v.blk.{n}.", f"vpm.encoder.layers.{n}."
        for k in ("weight", "bias"):
            out |= {g + f"attn_{x}.{k}": (h + f"self_attn.{x}_proj.{k}", "as is") for x in ("q", "k", "v", "out")}
            out |= {
                g + f"ln1.{k}": (h + f"layer_norm1.{k}", "as is"),
                g + f"ln2.{k}": (h + f"layer_norm2.{k}", "as is"),
            }
            # The published quirk: fc1 under ffn_down, fc2 under ffn_up.
            out |= {
                g + f"ffn_down.{k}": (h + f"mlp.fc1.{k}", "as is"),
                g + f"ffn_up.{k}": (h + f"mlp.fc2.{k}", "as is"),
            }
    return out


def test_full_config_tensor_count():
    """455 tensors for the published model, from the name table alone (docs/model.md §9)."""
    c = preset_config("full")
    table = vision_tensors(c)
    names = [name for _, gguf_names, _ in table for name in gguf_names] + ["resampler.pos_embed_k"]
    assert len(names) == len(set(names)) == 455 == 16 * 27 + 23
    assert set(names) == set(spec_mmproj(c))
    shapes = {gguf_names[0]: shape for _, gguf_names, shape in table}
    assert shapes["v.patch_embd.weight"][::-1] == (14, 14, 3, 1152)
    assert shapes["v.position_embd.weight"][::-1] == (1152, 4900)
    assert shapes["v.blk.26.ffn_down.weight"][::-1] == (1152, 4304)  # ne[0] == width: llama.cpp's swap test
    assert shapes["resampler.attn.q.weight"] == (3 * 3584, 3584)  # the packed in_proj, cut when written


# --- the tiny vision file -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def config(tiny_ckpt) -> dict:
    return json.loads((tiny_ckpt / "config.json").read_text())


@pytest.fixture(scope="module")
def state(tiny_ckpt) -> dict[str, np.ndarray]:
    """The checkpoint's vpm. and resampler. tensors as float32, under their full names."""
    return {
        prefix + name: t.numpy()
        for prefix in ("vpm.", "resampler.")
        for name, t in checkpoint_state_dict(tiny_ckpt, prefix).items()
    }


def test_metadata(config, tiny_mmproj_f16):
    gguf = read_gguf(tiny_mmproj_f16)
    v = config["vision_config"]
    # value, and the GGUF type llama.cpp's clip loader reads it as (another type fails there)
    expect = {
        "general.architecture": ("clip", "str"),
        "general.file_type": (1, "u32"),
        "clip.has_text_encoder": (False, "bool"),
        "clip.has_vision_encoder": (True, "bool"),
        "clip.has_minicpmv_projector": (True, "bool"),
        "clip.projector_type": ("resampler", "str"),
        "clip.minicpmv_version": (3, "i32"),
        "clip.minicpmv_query_num": (config["query_num"], "u32"),
        "clip.use_gelu": (True, "bool"),
        "clip.vision.image_size": (config["image_size"], "u32"),
        "clip.vision.patch_size": (v["patch_size"], "u32"),
        "clip.vision.embedding_length": (v["hidden_size"], "u32"),
        "clip.vision.feed_forward_length": (v["intermediate_size"], "u32"),
        "clip.vision.projection_dim": (0, "u32"),
        "clip.vision.attention.head_count": (v["num_attention_heads"], "u32"),
        "clip.vision.block_count": (v["num_hidden_layers"], "u32"),
    }
    assert {k: (gguf.kv[k], gguf.kv_types[k]) for k in expect} == expect
    assert (config["image_size"], v["patch_size"], config["query_num"]) == (448, 14, 64)  # as docs/model.md §9
    assert gguf.kv_types["clip.vision.attention.layer_norm_epsilon"] == "f32"
    assert gguf.kv["clip.vision.attention.layer_norm_epsilon"] == pytest.approx(1e-6)
    for key in ("clip.vision.image_mean", "clip.vision.image_std"):
        assert gguf.kv_types[key] == "arr[f32]" and gguf.kv[key].tolist() == [0.5, 0.5, 0.5]
    assert gguf.kv["general.name"] == config["_name_or_path"]
    extra = {"clip.vision.attention.layer_norm_epsilon", "clip.vision.image_mean", "clip.vision.image_std",
             "general.name"}  # fmt: skip
    assert set(gguf.kv) == set(expect) | extra  # nothing of the LLM file (qwen2.*, tokenizer.*)


@pytest.mark.parametrize("fixture,weight_type", [("tiny_mmproj_f32", GGML_F32), ("tiny_mmproj_f16", GGML_F16)])
def test_tensors(request, config, state, fixture, weight_type):
    gguf = read_gguf(request.getfixturevalue(fixture))
    spec = spec_mmproj(config)
    n_layer, embed = config["vision_config"]["num_hidden_layers"], config["hidden_size"]
    assert len(gguf.tensors) == 16 * n_layer + 23
    assert set(gguf.tensors) == set(spec)
    for name, t in gguf.tensors.items():
        hf, how = spec[name]
        if how == "sincos":
            want = sincos_2d_reference(embed, (70, 70)).reshape(70 * 70, embed)
        elif how == "transposed":
            want = state[hf].T
        elif how in ("q", "k", "v"):
            want = np.split(state[hf], 3)["qkv".index(how)]
        else:
            want = state[hf]
        assert t.ne == want.shape[::-1], name  # ne is the written (torch-order) shape reversed
        assert t.type == (GGML_F32 if len(t.ne) == 1 or name in ALWAYS_F32 else weight_type), name
        if how == "sincos":
            # The same numpy float32 operations as HF's table: bit for bit.
            np.testing.assert_array_equal(t.data, want, err_msg=name)
        elif t.type == GGML_F32:
            assert np.array_equal(t.data, want), name  # bf16 values, exactly
        else:
            assert np.array_equal(t.data, want.astype(np.float16)), name  # f16 rounding of the bf16 value


def test_layout_details(config, state, tiny_mmproj_f32):
    """The three places where the file is not a plain rename, checked by what a ggml reader computes."""
    t = read_gguf(tiny_mmproj_f32).tensors
    width, ffn = config["vision_config"]["hidden_size"], config["vision_config"]["intermediate_size"]
    # ffn_down holds fc1 ([ffn, width]): ne[0] == width is how llama.cpp recognises the swap.
    assert t["v.blk.0.ffn_down.weight"].ne == (width, ffn) and t["v.blk.0.ffn_up.weight"].ne == (ffn, width)
    assert t["v.patch_embd.weight"].ne == (14, 14, 3, width)
    # ggml's mul_mat(W, x) computes W·x over ne[0]: with proj transposed, that is x @ proj.
    x = np.random.default_rng(0).standard_normal(config["hidden_size"]).astype(np.float32)
    np.testing.assert_allclose(t["resampler.proj.weight"].data @ x, x @ state["resampler.proj"], rtol=1e-5, atol=1e-5)
    # The three blocks rebuild the packed in_proj.
    q, k, v = (t[f"resampler.attn.{x}.weight"].data for x in "qkv")
    assert np.array_equal(np.concatenate([q, k, v]), state["resampler.attn.in_proj_weight"])
    # pos_embed_k row h·70 + w is [emb(w), emb(h)]: its first half depends on the column only.
    pos = np.asarray(t["resampler.pos_embed_k"].data).reshape(70, 70, -1)
    half = config["hidden_size"] // 2
    assert np.array_equal(pos[5, :, :half], pos[0, :, :half]) and np.array_equal(pos[:, 5, half:], pos[:, 0, half:])


# --- atomic writes, the CLI, bad input --------------------------------------------------------------


@pytest.mark.parametrize("error", [RuntimeError("disk on fire"), KeyboardInterrupt()])
def test_interrupted_conversion_leaves_nothing(tiny_ckpt, tmp_path, monkeypatch, error):
    real_read, calls = Checkpoint.read, []

    def failing_read(self, *args, **kwargs):
        calls.append(args)
        if len(calls) == 5:
            raise error
        return real_read(self, *args, **kwargs)

    monkeypatch.setattr(Checkpoint, "read", failing_read)
    out = tmp_path / "mmproj-model-f16.gguf"
    with pytest.raises(type(error)):
        convert_mmproj(tiny_ckpt, out, progress=False)
    assert not out.exists() and leftover_temp_files(tmp_path) == []

    out.write_bytes(b"previous")  # a failed conversion must not clobber an existing file either
    calls.clear()
    with pytest.raises(type(error)):
        convert_mmproj(tiny_ckpt, out, progress=False)
    assert out.read_bytes() == b"previous" and leftover_temp_files(tmp_path) == []


def test_cli_writes_both_files(tiny_ckpt, tmp_path, capsys):
    out = tmp_path / "out"
    assert cli_main([str(tiny_ckpt), "--outdir", str(out), "--no-progress"]) == 0
    llm, mmproj = out / "ggml-model-F16.gguf", out / "mmproj-model-f16.gguf"  # llama.cpp's published names
    assert capsys.readouterr().out.split() == [str(llm), str(mmproj)]
    assert sorted(p.name for p in out.iterdir()) == [llm.name, mmproj.name]
    llm_kv, mmproj_kv = read_gguf(llm).kv, read_gguf(mmproj).kv
    assert (llm_kv["general.architecture"], llm_kv["general.file_type"]) == ("qwen2", 1)
    assert (mmproj_kv["general.architecture"], mmproj_kv["general.file_type"]) == ("clip", 1)

    only = tmp_path / "v.gguf"
    args = [str(tiny_ckpt), "--vision-only", "--vision-outtype", "f32", "--vision-outfile", str(only), "--no-progress"]
    assert cli_main(args) == 0
    assert capsys.readouterr().out.split() == [str(only)]
    assert read_gguf(only).kv["general.file_type"] == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "v.gguf"]


@pytest.mark.parametrize(
    "args",
    [["--vision-only", "--no-vision"], ["--vision-only", "--outfile", "x.gguf"], ["--no-vision", "--vision-outfile",
     "x.gguf"], ["--outfile", "x.gguf", "--vision-outfile", "x.gguf"], ["--vision-outtype", "bf16"]],
)  # fmt: skip
def test_cli_rejects_contradictory_options(tiny_ckpt, tmp_path, monkeypatch, args):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        cli_main([str(tiny_ckpt), *args])
    assert exit_info.value.code == 2 and list(tmp_path.iterdir()) == []


def test_cli_checks_both_files_before_writing(tiny_ckpt, tmp_path, capsys):
    """A bad vision half stops the CLI before the (larger, first) LLM file is written."""
    bad = checkpoint_variant(tiny_ckpt, tmp_path, query_num=32)
    out = tmp_path / "out"
    assert cli_main([str(bad), "--outdir", str(out), "--no-progress"]) == 2
    assert "resampler.query has shape [64, 256], expected [32, 256]" in capsys.readouterr().err
    assert not out.exists() or list(out.iterdir()) == []


def _vision_config(tiny_ckpt: Path, **changes) -> dict:
    return json.loads((tiny_ckpt / "config.json").read_text())["vision_config"] | changes


@pytest.mark.parametrize(
    "changes,message",
    [
        ({"version": 2.5}, "version 2.5 is not supported"),
        ({"vision_config": {"num_hidden_layers": 4}}, "tensor vpm.encoder.layers.3.self_attn.k_proj.weight is missing"),
        ({"vision_config": {"num_hidden_layers": 2}}, "unexpected tensors in the checkpoint: vpm.encoder.layers.2."),
        ({"vision_config": {"intermediate_size": 200}}, "fc1.weight has shape [192, 96], expected [200, 96]"),
        ({"vision_config": {"image_size": 84}}, "position_embedding.weight has shape [4900, 96], expected [36, 96]"),
        ({"query_num": 32}, "tensor resampler.query has shape [64, 256], expected [32, 256]"),
    ],
)
def test_bad_checkpoint_is_rejected(tiny_ckpt, tmp_path, changes, message):
    if "vision_config" in changes:
        changes = changes | {"vision_config": _vision_config(tiny_ckpt, **changes["vision_config"])}
    bad = checkpoint_variant(tiny_ckpt, tmp_path, **changes)
    with pytest.raises(ConversionError, match=message.replace("[", r"\[").replace(".", r"\.")):
        convert_mmproj(bad, tmp_path / "out.gguf", progress=False)
    assert not (tmp_path / "out.gguf").exists() and leftover_temp_files(tmp_path) == []


def test_llm_tensors_do_not_matter_to_the_vision_file(tiny_ckpt, tmp_path):
    """The llm. tensors belong to the other file: a config that mismatches them still converts here."""
    bad = checkpoint_variant(tiny_ckpt, tmp_path, num_hidden_layers=2)
    assert read_gguf(convert_mmproj(bad, tmp_path / "m.gguf", progress=False)).kv["general.architecture"] == "clip"


def test_unknown_tensor_is_rejected_by_both_files(tiny_ckpt, tmp_path):
    from safetensors.numpy import save_file

    bad = checkpoint_variant(tiny_ckpt, tmp_path)
    save_file({"extra.weight": np.zeros(4, np.float32)}, bad / "model-extra.safetensors")
    index = json.loads((bad / "model.safetensors.index.json").read_text())
    index["weight_map"]["extra.weight"] = "model-extra.safetensors"
    (bad / "model.safetensors.index.json").unlink()
    (bad / "model.safetensors.index.json").write_text(json.dumps(index))
    for convert in (convert_mmproj, convert_llm):
        with pytest.raises(ConversionError, match=r"unexpected tensors in the checkpoint: extra\.weight$"):
            convert(bad, tmp_path / "out.gguf", progress=False)


def test_bad_outtype(tiny_ckpt, tmp_path):
    for outtype in ("bf16", "q4_k_m"):
        with pytest.raises(ConversionError, match="unknown outtype"):
            convert_mmproj(tiny_ckpt, tmp_path / "out.gguf", outtype=outtype)
    with pytest.raises(ConversionError, match="output directory does not exist"):
        convert_mmproj(tiny_ckpt, tmp_path / "missing" / "out.gguf")


# --- the PyTorch vision reference ---------------------------------------------------------------------


def test_reference_position_ids_follow_spec():
    """docs/model.md §4: floor(70·i/n), one lower where float32 rounding lands on a boundary (n = 25, 49, 50, 55, …)."""
    lowered = set()
    for n in range(1, 129):
        got = navit_position_ids(tgt_sizes_of([(n, 1)])[0]).numpy() // 70
        nominal = np.array([70 * i // n for i in range(n)])
        assert set((nominal - got).tolist()) <= {0, 1}, n
        if (got != nominal).any():
            lowered.add(n)
    assert {25, 49, 50, 55} <= lowered
    assert navit_position_ids(tgt_sizes_of([(25, 1)])[0])[15] // 70 == 41  # floor(70·15/25) = 42
    assert navit_position_ids(tgt_sizes_of([(2, 3)])[0]).tolist() == [0, 23, 46, 35 * 70, 35 * 70 + 23, 35 * 70 + 46]
    with pytest.raises(TypeError, match="int32"):  # a Python int step is the slip docs/model.md §4 warns of
        navit_position_ids(torch.tensor([25, 1]))


@pytest.fixture(scope="module")
def vision_reference(tiny_ckpt):
    return load_vision_reference(tiny_ckpt)


@pytest.mark.parametrize("height,width", [(448, 448), (364, 546), (14, 28)])
def test_reference_vision_pipeline_runs(vision_reference, height, width):
    image = np.random.default_rng(height * width).integers(0, 256, (height, width, 3), dtype=np.uint8)
    out = reference_slice_embeddings(*vision_reference, image)
    assert out.shape == (64, 256) and out.dtype == np.float32 and np.isfinite(out).all()
    assert out.std(axis=0).mean() > 0.05  # the 64 queries give different embeddings
    other = reference_slice_embeddings(*vision_reference, 255 - image)
    assert np.abs(other - out).mean() > 0.01  # and they depend on the image
