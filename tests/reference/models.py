"""Independent references for tests: the checkpoint's LLM as transformers' Qwen2, its vision encoder as
transformers' Idefics2 vision tower, its resampler written here from docs/model.md §5, its tokenizer, and a
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
VISION_PREFIX = "vpm."
RESAMPLER_PREFIX = "resampler."


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


def navit_position_ids(tgt_size: torch.Tensor, side: int = 70) -> torch.Tensor:
    """Position-table row of each patch of one slice, row-major (docs/model.md §4), as MiniCPM-V's
    SiglipVisionEmbeddings computes it from ``tgt_sizes[i]``: one row of an **int32** tensor, so that
    ``1 / nb_patches`` is a float32 tensor, the step arange reads.

    Not what transformers' Idefics2VisionEmbeddings computes (it forms the fractions as
    arange(n) · float32(1/n)), nor what a Python-int size gives (a float64 step): each puts some
    buckets elsewhere (n = 25, 49, 50, 55, …).
    """
    if tgt_size.dtype != torch.int32 or tgt_size.shape != (2,):
        raise TypeError(
            f"tgt_size must be a row of an int32 tgt_sizes tensor, got {tgt_size.dtype} {tuple(tgt_size.shape)}"
        )
    nb_patches_h, nb_patches_w = tgt_size[0], tgt_size[1]
    boundaries = torch.arange(1 / side, 1.0, 1 / side)
    fractional_coords_h = torch.arange(0, 1 - 1e-6, 1 / nb_patches_h)
    fractional_coords_w = torch.arange(0, 1 - 1e-6, 1 / nb_patches_w)
    bucket_coords_h = torch.bucketize(fractional_coords_h, boundaries, right=True)
    bucket_coords_w = torch.bucketize(fractional_coords_w, boundaries, right=True)
    return (bucket_coords_h[:, None] * side + bucket_coords_w).flatten()


def tgt_sizes_of(grids: list[tuple[int, int]]) -> torch.Tensor:
    """HF's ``tgt_sizes`` for slices of (rows, cols) patches: stacked and cast to int32, as
    MiniCPMV.get_vllm_embedding does."""
    return torch.vstack([torch.tensor(g) for g in grids]).type(torch.int32)


class NavitEmbeddings(torch.nn.Module):
    """SigLIP-NaViT patch and position embeddings (docs/model.md §4 steps 2, 3), with the checkpoint's names,
    taking ``tgt_sizes`` as MiniCPM-V's SiglipVisionEmbeddings does.

    Stands in for Idefics2VisionEmbeddings (same weights) for its position ids only.
    """

    def __init__(self, hidden: int, channels: int, patch: int, side: int):
        super().__init__()
        self.side = side
        self.patch_embedding = torch.nn.Conv2d(channels, hidden, kernel_size=patch, stride=patch)
        self.position_embedding = torch.nn.Embedding(side * side, hidden)

    def forward(self, pixel_values, patch_attention_mask, tgt_sizes):
        """pixel_values [B, 3, patch, L·patch] (patches side by side), mask [B, 1, L], tgt_sizes int32 [B, 2]."""
        embeddings = self.patch_embedding(pixel_values).flatten(2).transpose(1, 2)  # [B, L, hidden]
        position_ids = torch.zeros(embeddings.shape[:2], dtype=torch.long)
        for b, mask in enumerate(patch_attention_mask):
            position_ids[b][mask.view(-1)] = navit_position_ids(tgt_sizes[b], self.side)
        return embeddings + self.position_embedding(position_ids)


def vision_tower(vpm, pixel_values, patch_attention_mask, tgt_sizes) -> torch.Tensor:
    """MiniCPM-V's SiglipVisionTransformer.forward on Idefics2's blocks: embeddings with tgt_sizes,
    padded patches masked out of attention (no mask when none is padded), post-LayerNorm."""
    from transformers.masking_utils import create_bidirectional_mask

    hidden = vpm.embeddings(pixel_values, patch_attention_mask, tgt_sizes)
    mask = patch_attention_mask.view(pixel_values.shape[0], -1)
    mask = (
        None if mask.all() else create_bidirectional_mask(config=vpm.config, inputs_embeds=hidden, attention_mask=mask)
    )
    return vpm.post_layernorm(vpm.encoder(inputs_embeds=hidden, attention_mask=mask).last_hidden_state)


def sincos_2d_reference(embed: int, size) -> np.ndarray:
    """The resampler's key position table [rows, cols, embed] (docs/model.md §5) as MiniCPM-V's
    get_2d_sincos_pos_embed computes it: numpy float32 at every step. ``size`` is (rows, cols), where
    the resampler passes its ``max_size`` (ints, or int32 tensors once grown).

    Patch (h, w) gets [emb(w), emb(h)]; emb(p) = [sin(p·ω), cos(p·ω)], ω_k = 1 / 10000^(k/(embed/4)).
    """
    grid = np.stack(np.meshgrid(np.arange(size[1], dtype=np.float32), np.arange(size[0], dtype=np.float32)))

    def emb(width: int, pos: np.ndarray) -> np.ndarray:
        omega = np.arange(width // 2, dtype=np.float32)
        omega /= width / 2.0
        omega = 1.0 / 10000**omega
        out = np.einsum("hw,d->hwd", pos, omega)
        return np.concatenate([np.sin(out), np.cos(out)], axis=-1)

    return np.concatenate([emb(embed // 2, grid[0]), emb(embed // 2, grid[1])], axis=-1)


class Resampler(torch.nn.Module):
    """MiniCPM-V 2.6's perceiver resampler (docs/model.md §5), with the checkpoint's parameter names, batched as
    HF runs it: keys of padded patches masked, positions from a table cached at ``max_size`` (70×70)
    and grown to the largest tgt_sizes seen."""

    def __init__(self, queries: int, embed: int, kv_width: int, eps: float = 1e-6, max_size=(70, 70)):
        super().__init__()
        self.query = torch.nn.Parameter(torch.empty(queries, embed))
        self.kv_proj = torch.nn.Linear(kv_width, embed, bias=False)
        # in_proj_weight / in_proj_bias (rows q | k | v) and out_proj, as in the checkpoint.
        self.attn = torch.nn.MultiheadAttention(embed, embed // 128)
        self.ln_q = torch.nn.LayerNorm(embed, eps=eps)
        self.ln_kv = torch.nn.LayerNorm(embed, eps=eps)
        self.ln_post = torch.nn.LayerNorm(embed, eps=eps)
        self.proj = torch.nn.Parameter(torch.empty(embed, embed))  # [in, out]: applied as x @ proj
        self.max_size = list(max_size)
        self.pos_embed = torch.from_numpy(sincos_2d_reference(embed, self.max_size)).float()

    def adjust_pos_cache(self, tgt_sizes: torch.Tensor) -> None:
        max_h, max_w = torch.max(tgt_sizes[:, 0]), torch.max(tgt_sizes[:, 1])
        if max_h > self.max_size[0] or max_w > self.max_size[1]:
            self.max_size = [max(max_h, self.max_size[0]), max(max_w, self.max_size[1])]
            self.pos_embed = torch.from_numpy(sincos_2d_reference(self.proj.shape[0], self.max_size)).float()

    def forward(self, x: torch.Tensor, tgt_sizes: torch.Tensor) -> torch.Tensor:
        """x: [B, L, kv_width] vision features (row-major patches, padded), tgt_sizes int32 [B, 2] → [B, queries, embed]."""
        patch_len = tgt_sizes[:, 0] * tgt_sizes[:, 1]
        self.adjust_pos_cache(tgt_sizes)
        key_padding_mask = torch.zeros((x.shape[0], int(torch.max(patch_len))), dtype=torch.bool)
        pos_embed = []
        for i in range(x.shape[0]):
            tgt_h, tgt_w = tgt_sizes[i]
            pos_embed.append(self.pos_embed[:tgt_h, :tgt_w, :].reshape((tgt_h * tgt_w, -1)))
            key_padding_mask[i, patch_len[i] :] = True
        pos_embed = torch.nn.utils.rnn.pad_sequence(pos_embed, batch_first=True).permute(1, 0, 2)  # [L, B, D]
        kv = self.ln_kv(self.kv_proj(x)).permute(1, 0, 2)  # [L, B, D]
        q = self.ln_q(self.query)[:, None].repeat(1, x.shape[0], 1)  # [Q, B, D]
        # MultiheadAttention's default layout is [length, batch, embed]; the positions go to the keys only.
        out = self.attn(q, kv + pos_embed, kv, key_padding_mask=key_padding_mask, need_weights=False)[0]
        return self.ln_post(out.permute(1, 0, 2)) @ self.proj


def load_vision_reference(ckpt_dir: str | Path):
    """(vpm, resampler) of the checkpoint, float32, eval mode.

    vpm is transformers' Idefics2VisionTransformer: the same maths and weight names as MiniCPM-V's
    SigLIP-NaViT (patch conv, learned position table, pre-norm blocks with tanh GELU, post-LayerNorm),
    with NavitEmbeddings for MiniCPM-V's position ids; run it through vision_tower().
    """
    from transformers.models.idefics2.configuration_idefics2 import Idefics2VisionConfig
    from transformers.models.idefics2.modeling_idefics2 import Idefics2VisionTransformer

    config = json.loads((Path(ckpt_dir) / "config.json").read_text())
    v = config["vision_config"]
    vision = Idefics2VisionConfig(
        hidden_size=v["hidden_size"],
        intermediate_size=v["intermediate_size"],
        num_hidden_layers=v["num_hidden_layers"],
        num_attention_heads=v["num_attention_heads"],
        num_channels=3,
        image_size=v["image_size"],
        patch_size=v["patch_size"],
        hidden_act="gelu_pytorch_tanh",
        layer_norm_eps=1e-6,
        attn_implementation="eager",
    )
    side = v["image_size"] // v["patch_size"]
    with torch.device("meta"):
        vpm = Idefics2VisionTransformer(vision)
        vpm.embeddings = NavitEmbeddings(v["hidden_size"], 3, v["patch_size"], side)
        resampler = Resampler(config["query_num"], config["hidden_size"], v["hidden_size"])
    if config.get("drop_vision_last_layer"):  # as MiniCPM-V does; false in 2.6
        vpm.encoder.layers = vpm.encoder.layers[:-1]
    vpm.load_state_dict(checkpoint_state_dict(ckpt_dir, VISION_PREFIX), strict=True, assign=True)
    resampler.load_state_dict(checkpoint_state_dict(ckpt_dir, RESAMPLER_PREFIX), strict=True, assign=True)
    resampler.pos_embed = torch.from_numpy(sincos_2d_reference(config["hidden_size"], resampler.max_size)).float()
    vpm.vision_batch_size = config.get("vision_batch_size", 16)
    return vpm.float().eval(), resampler.float().eval()


def reshape_by_patch(image: torch.Tensor, patch: int) -> torch.Tensor:
    """[3, H, W] → [3, patch, H·W/patch]: the patches side by side in row-major order, as HF's processor lays them."""
    patches = torch.nn.functional.unfold(image, (patch, patch), stride=(patch, patch))
    patches = patches.reshape(image.size(0), patch, patch, -1)
    return patches.permute(0, 1, 3, 2).reshape(image.size(0), patch, -1)


def reference_vision_embeddings(vpm, resampler, slices: list[np.ndarray]) -> list[np.ndarray]:
    """The 64 LLM embeddings of each slice (H×W×3 uint8, sides multiples of the patch), as
    MiniCPMV.get_vllm_embedding computes them for one request: every slice normalised in float32,
    laid out by patch, padded to the longest, run in batches of ``vision_batch_size`` with padded
    patches masked, then the resampler over all of them with the int32 ``tgt_sizes``."""
    patch = vpm.config.patch_size
    flat, grids = [], []
    for image in slices:
        image = np.asarray(image)
        height, width = image.shape[:2]
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3 or height % patch or width % patch:
            raise ValueError(f"expected H×W×3 uint8 with sides multiples of {patch}, got {image.shape} {image.dtype}")
        # docs/model.md §4 step 1 as HF's processor: astype(float32) / 255, then (x − 0.5) / 0.5 in float32.
        pixels = (image.astype(np.float32) / 255 - np.float32(0.5)) / np.float32(0.5)
        by_patch = reshape_by_patch(torch.from_numpy(pixels).permute(2, 0, 1).contiguous(), patch)
        flat.append(by_patch.flatten(end_dim=1).permute(1, 0))  # [L·patch, 3·patch]
        grids.append((height // patch, width // patch))
    tgt_sizes = tgt_sizes_of(grids)
    max_patches = torch.max(tgt_sizes[:, 0] * tgt_sizes[:, 1])
    pixel_values = torch.nn.utils.rnn.pad_sequence(flat, batch_first=True, padding_value=0.0)
    B, L, _ = pixel_values.shape
    pixel_values = pixel_values.permute(0, 2, 1).reshape(B, 3, -1, L)
    patch_attn_mask = torch.zeros((B, 1, max_patches), dtype=torch.bool)
    for i in range(B):
        patch_attn_mask[i, 0, : tgt_sizes[i][0] * tgt_sizes[i][1]] = True
    with torch.no_grad():
        step = vpm.vision_batch_size
        hidden = torch.cat(
            [
                vision_tower(vpm, pixel_values[i : i + step], patch_attn_mask[i : i + step], tgt_sizes[i : i + step])
                for i in range(0, B, step)
            ]
        )
        return list(resampler(hidden, tgt_sizes).numpy())


def reference_slice_embeddings(vpm, resampler, slice_uint8_hwc: np.ndarray) -> np.ndarray:
    """The 64 LLM embeddings of one slice alone: [queries, embed]."""
    return reference_vision_embeddings(vpm, resampler, [slice_uint8_hwc])[0]


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
# ggml_type → numpy storage (bf16 as its bit pattern); quantized types are mapped as uint8 rows of bytes.
GGML_STORAGE = {0: np.float32, 1: np.float16, 30: np.uint16}


def _gguf_type_name(gguf_type: int) -> str:
    return "str" if gguf_type == GGUF_STRING else _GGUF_SCALARS[gguf_type]


@dataclass
class GgufTensor:
    type: int  # ggml_type: 0 F32, 1 F16, 30 BF16, or a quantized type
    ne: tuple[int, ...]  # ggml order: ne[0] is the contiguous dimension
    data: np.ndarray  # memory-mapped, shaped as torch would (ne reversed); quantized: uint8 [..., row bytes]


@dataclass
class GgufContents:
    kv: dict  # key → int / float / bool / str / list[str] / np.ndarray
    kv_types: dict[str, str]  # key → "u32", "i32", "f32", "bool", "str", … or "arr[<element type>]"
    tensors: dict[str, GgufTensor]  # in file order


def read_gguf(path: str | Path) -> GgufContents:
    """Every key and tensor of a GGUF file, parsed by ggml."""
    import ggml

    ggml_ctx = ctypes.c_void_p()
    params = ggml.gguf_init_params(no_alloc=True, ctx=ctypes.pointer(ggml_ctx))
    ctx = ggml.gguf_init_from_file(str(path).encode(), params)
    if not ctx:
        raise ValueError(f"{path}: ggml cannot parse this GGUF file")
    try:
        kv, kv_types = {}, {}
        for i in range(ggml.gguf_get_n_kv(ctx)):
            key, vtype = ggml.gguf_get_key(ctx, i).decode(), ggml.gguf_get_kv_type(ctx, i)
            if vtype != GGUF_ARRAY:
                kv_types[key] = _gguf_type_name(vtype)
            if vtype == GGUF_STRING:
                kv[key] = ggml.gguf_get_val_str(ctx, i).decode()
            elif vtype == GGUF_ARRAY:
                atype, n = ggml.gguf_get_arr_type(ctx, i), ggml.gguf_get_arr_n(ctx, i)
                kv_types[key] = f"arr[{_gguf_type_name(atype)}]"
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
            offset = data_start + ggml.gguf_get_tensor_offset(ctx, i)
            if t.type in GGML_STORAGE:
                data = np.memmap(path, dtype=GGML_STORAGE[t.type], mode="r", shape=(prod(ne),), offset=offset)
                data = data.reshape(ne[::-1])
            else:
                row = ggml.ggml_row_size(t.type, ne[0])
                data = np.memmap(path, dtype=np.uint8, mode="r", shape=(prod(ne[1:]), row), offset=offset)
                data = data.reshape((*ne[:0:-1], row))
            tensors[name.decode()] = GgufTensor(int(t.type), ne, data)
        return GgufContents(kv, kv_types, tensors)
    finally:
        ggml.ggml_free(ggml_ctx)
        ggml.gguf_free(ctx)
