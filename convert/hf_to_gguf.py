"""HF MiniCPM-V 2.6 checkpoint → the LLM GGUF file in the llama.cpp layout (docs/model.md §9), and the
machinery that the vision file's converter (``mmproj``) shares.

Streams: shard headers are parsed up front and tensor data memory-mapped, so one output tensor is in
memory at a time; the file is written under a temporary name and renamed when complete. A conversion
is planned first (config, names, shapes, tokenizer checked), so bad input fails before a byte is written.
"""

from __future__ import annotations

import json
import math
import os
import re
import secrets
import struct
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import partial
from math import prod
from pathlib import Path

import numpy as np
from gguf import GGMLQuantizationType, GGUFWriter, LlamaFileType, quant_shape_to_byte_shape
from tqdm import tqdm

from . import ConversionError
from .gguf_layout import (
    LLM_ARCH,
    QUANTIZATION_VERSION,
    RESAMPLER_PREFIX,
    TOKEN_CONTROL,
    TOKEN_NORMAL,
    TOKEN_UNUSED,
    TOKEN_USER_DEFINED,
    VISION_PREFIX,
    Key,
    config_dims,
    llm_tensors,
)
from .quant_rules import llm_tensor_type, parse_variant, tensor_nbytes

# numpy storage of the float types; bf16 is kept as its uint16 bit pattern. Quantized tensors are
# stored as uint8 rows of their blocks' bytes.
FLOAT_STORAGE = {
    GGMLQuantizationType.F32: np.dtype(np.float32),
    GGMLQuantizationType.F16: np.dtype(np.float16),
    GGMLQuantizationType.BF16: np.dtype(np.uint16),
}
# The published LLM file's BOS is the ChatML turn opener; it is never prepended (add_bos_token false).
BOS_TEXT = "<|im_start|>"
_ROWS_PER_CHUNK = 4096  # rows converted at a time into the output array


def f32_to_bf16_bits(x: np.ndarray) -> np.ndarray:
    """float32 → bfloat16 bit patterns (uint16), rounding to nearest even as torch does."""
    bits = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    return ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)


def bf16_bits_to_f32(bits: np.ndarray) -> np.ndarray:
    """bfloat16 bit patterns → float32, exactly."""
    return (bits.astype(np.uint32) << 16).view(np.float32)


# safetensors dtype → (numpy storage dtype, reader of float32 values from it, the same type in ggml)
_SAFETENSORS_DTYPES = {
    "BF16": (np.uint16, bf16_bits_to_f32, GGMLQuantizationType.BF16),
    "F16": (np.float16, lambda a: a.astype(np.float32), GGMLQuantizationType.F16),
    "F32": (np.float32, lambda a: a, GGMLQuantizationType.F32),
}


def quantize(
    values: np.ndarray, src_type: GGMLQuantizationType, out_type: GGMLQuantizationType, name: str, n_threads: int = 0
) -> np.ndarray:
    """``values`` (rows on the last axis; f32, f16 or bf16 bits) in ``out_type`` by ggml's own routines in
    the native core, on ``n_threads`` threads (0: every core): uint8 [..., bytes per row]."""
    from minicpmv import _core  # the native module; float conversions do not need it

    try:
        return _core.quantize(np.ascontiguousarray(values), int(src_type), int(out_type), n_threads)
    except _core.MinicpmvError as e:
        raise ConversionError(f"tensor {name}: {e}") from None


def check_finite(values: np.ndarray, bf16_bits: bool, where: str) -> None:
    """A NaN or an infinity in the weights is a corrupt file: it would convert and quantize without a
    word and answer NaN logits. ``values``: float storage, or bfloat16 bit patterns."""
    rows = values.reshape(len(values), -1) if values.ndim else values.reshape(1, 1)
    for i in range(0, len(rows), _ROWS_PER_CHUNK):
        chunk = rows[i : i + _ROWS_PER_CHUNK]
        bad = (chunk & 0x7F80) == 0x7F80 if bf16_bits else ~np.isfinite(chunk)
        if bad.any():
            row = i + int(np.argmax(bad.any(axis=1)))
            raise ConversionError(f"{where} holds NaN or infinite values (row {row}): a corrupt file")


@dataclass(frozen=True)
class _Entry:
    path: Path
    dtype: str
    shape: tuple[int, ...]
    offset: int  # of the first data byte in the file


_MAX_HEADER_BYTES = 100_000_000


def _index_files(index: Path) -> list[str]:
    """The shard file names of model.safetensors.index.json, each a plain name in the checkpoint's folder."""
    try:
        weight_map = json.loads(index.read_text())["weight_map"]
    except (ValueError, KeyError, TypeError) as e:
        raise ConversionError(f"{index}: not a safetensors index ({e!r})") from None
    if not isinstance(weight_map, dict) or not all(
        isinstance(f, str) and f and Path(f).name == f and f not in (".", "..") for f in weight_map.values()
    ):
        raise ConversionError(f"{index}: weight_map must map tensor names to shard file names in the same folder")
    return list(weight_map.values())


def _check_header_entry(path: Path, name: str, info) -> None:
    ok = (
        isinstance(info, dict)
        and isinstance(info.get("dtype"), str)
        and isinstance(info.get("shape"), list)
        and all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in info["shape"])
        and isinstance(info.get("data_offsets"), list)
        and len(info["data_offsets"]) == 2
        and all(isinstance(n, int) and not isinstance(n, bool) for n in info["data_offsets"])
    )
    if not ok:
        raise ConversionError(f"{path}: tensor {name} has a malformed header entry {info!r}"[:300])


class Checkpoint:
    """Lazy view of a checkpoint's safetensors shards.

    safetensors' own numpy loader has no bfloat16 (numpy lacks the type) and its torch loader would
    make torch a conversion dependency, so headers are parsed here and data read through np.memmap.
    """

    def __init__(self, hf_dir: Path):
        index = hf_dir / "model.safetensors.index.json"
        if index.is_file():
            files = sorted({hf_dir / f for f in _index_files(index)})
        else:
            files = sorted(hf_dir.glob("*.safetensors"))
        if not files:
            raise ConversionError(f"{hf_dir}: no safetensors weights (model.safetensors.index.json or *.safetensors)")
        self.entries: dict[str, _Entry] = {}
        for path in files:
            self._read_header(path)

    def _read_header(self, path: Path) -> None:
        if not path.is_file():
            raise ConversionError(f"{path}: shard listed in the index is missing")
        file_size = path.stat().st_size
        with open(path, "rb") as f:
            try:
                (size,) = struct.unpack("<Q", f.read(8))
                # safetensors caps headers at 100 MB; a claim past the file is a corrupt or cut file.
                if size > min(file_size - 8, _MAX_HEADER_BYTES):
                    raise ValueError(f"a header of {size} bytes in a file of {file_size}")
                header = json.loads(f.read(size))
            except (struct.error, ValueError) as e:
                raise ConversionError(f"{path}: not a safetensors file ({e})") from None
        if not isinstance(header, dict):
            raise ConversionError(f"{path}: not a safetensors file (the header is not an object)")
        data_size = file_size - 8 - size
        for name, info in header.items():
            if name == "__metadata__":
                continue
            _check_header_entry(path, name, info)
            if info["dtype"] not in _SAFETENSORS_DTYPES:
                raise ConversionError(f"{path}: tensor {name} has unsupported dtype {info['dtype']}")
            if name in self.entries:
                raise ConversionError(f"tensor {name} is stored twice ({self.entries[name].path.name}, {path.name})")
            begin, end = info["data_offsets"]
            if not 0 <= begin <= end <= data_size:
                raise ConversionError(
                    f"{path}: tensor {name} lies at bytes {begin}..{end} of {data_size} (truncated or corrupt file)"
                )
            entry = _Entry(path, info["dtype"], tuple(info["shape"]), 8 + size + begin)
            if end - begin != prod(entry.shape) * np.dtype(_SAFETENSORS_DTYPES[entry.dtype][0]).itemsize:
                raise ConversionError(f"{path}: tensor {name} byte range does not match its shape {entry.shape}")
            self.entries[name] = entry

    def raw(self, name: str) -> np.ndarray:
        """The stored values, memory-mapped (not read until touched)."""
        e = self.entries[name]
        return np.memmap(e.path, dtype=_SAFETENSORS_DTYPES[e.dtype][0], mode="r", offset=e.offset, shape=e.shape)

    def read(self, name: str, out_type: GGMLQuantizationType, rows: slice = slice(None)) -> np.ndarray:
        """The tensor (or a range of its rows) converted to ``out_type``: F32, F16 or BF16 bits a chunk of
        rows at a time, a quantized type by ggml straight from the stored values."""
        e = self.entries[name]
        src = self.raw(name)[rows]
        check_finite(src, e.dtype == "BF16", f"{e.path}: tensor {name}")
        if out_type not in FLOAT_STORAGE:
            return quantize(src, _SAFETENSORS_DTYPES[e.dtype][2], out_type, name)
        if out_type == GGMLQuantizationType.BF16 and e.dtype == "BF16":
            return np.array(src)
        to_f32 = _SAFETENSORS_DTYPES[e.dtype][1]
        out = np.empty(src.shape, dtype=FLOAT_STORAGE[out_type])
        rows_out, rows_src = out.reshape(src.shape[0], -1), src.reshape(src.shape[0], -1)
        for i in range(0, src.shape[0], _ROWS_PER_CHUNK):
            values = to_f32(rows_src[i : i + _ROWS_PER_CHUNK])
            if out_type == GGMLQuantizationType.BF16:
                values = f32_to_bf16_bits(values)
            rows_out[i : i + _ROWS_PER_CHUNK] = values
        return out


def read_config(hf_dir: Path) -> dict:
    if not hf_dir.is_dir():
        raise ConversionError(f"{hf_dir}: not a directory")
    path = hf_dir / "config.json"
    if not path.is_file():
        raise ConversionError(f"{hf_dir}: no config.json")
    try:
        config = json.loads(path.read_text())
    except ValueError as e:
        raise ConversionError(f"{path}: invalid JSON ({e})") from None
    if not isinstance(config, dict):
        raise ConversionError(f"{path}: expected a JSON object, got {type(config).__name__}")
    if config.get("model_type") != "minicpmv" or "MiniCPMV" not in config.get("architectures", []):
        raise ConversionError(
            f"{path}: not a MiniCPM-V checkpoint (model_type {config.get('model_type')!r}, "
            f"architectures {config.get('architectures')!r}; expected 'minicpmv', ['MiniCPMV'])"
        )
    if str(config.get("version")) != "2.6":
        raise ConversionError(f"{path}: MiniCPM-V version {config.get('version')!r} is not supported (expected 2.6)")
    _check_hyper_parameters(config, path)
    return config


# The sizes and constants the conversion reads: positive integers, and finite numbers in range.
_LLM_SIZES = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
              "num_key_value_heads", "query_num")  # fmt: skip
_VISION_SIZES = (
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "image_size",
    "patch_size",
)


def _check_hyper_parameters(config: dict, path: Path) -> None:
    def size(where: dict, key: str, prefix: str = "") -> int:
        value = where.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConversionError(f"{path}: {prefix}{key} must be a positive integer, got {value!r}")
        return value

    def number(where: dict, key: str, lo: float, hi: float, prefix: str = "", optional: bool = False) -> None:
        value = where.get(key)
        if optional and key not in where:
            return
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or not math.isfinite(value)
            or not lo < value < hi
        ):
            raise ConversionError(f"{path}: {prefix}{key} must be a finite number in ({lo:g}, {hi:g}), got {value!r}")

    hidden, heads, kv_heads = (size(config, k) for k in ("hidden_size", "num_attention_heads", "num_key_value_heads"))
    for key in _LLM_SIZES:
        size(config, key)
    if hidden % heads or heads % kv_heads:
        raise ConversionError(
            f"{path}: hidden_size {hidden}, {heads} heads and {kv_heads} key/value heads do not divide"
        )
    number(config, "rms_norm_eps", 0, 1)
    number(config, "rope_theta", 1, math.inf)
    vision = config.get("vision_config")
    if not isinstance(vision, dict):
        raise ConversionError(f"{path}: vision_config must be an object (SigLIP's sizes), got {vision!r}")
    v_hidden, v_heads, v_image, v_patch = (
        size(vision, k, "vision_config.") for k in ("hidden_size", "num_attention_heads", "image_size", "patch_size")
    )
    for key in _VISION_SIZES:
        size(vision, key, "vision_config.")
    if v_hidden % v_heads or v_image % v_patch:
        raise ConversionError(f"{path}: vision_config sizes do not divide (hidden_size {v_hidden}, {v_heads} heads, "
                              f"image_size {v_image}, patch_size {v_patch})")  # fmt: skip
    number(vision, "layer_norm_eps", 0, 1, "vision_config.", optional=True)  # SigLIP's default otherwise


@dataclass
class Vocab:
    tokens: list[str]
    token_types: list[int]
    merges: list[str]
    ids: dict[str, int]  # text → id, for looking markers up by their text
    eos: str
    unk: str
    pad: str
    chat_template: str | None


def _token_content(value) -> str:
    # tokenizer_config.json writes a special token either as its text or as an AddedToken dict.
    return value["content"] if isinstance(value, dict) else value


def read_vocab(hf_dir: Path, n_vocab: int) -> Vocab:
    """Tokens, types and merges from tokenizer.json, or from vocab.json + merges.txt without it."""
    config_path = hf_dir / "tokenizer_config.json"
    if not config_path.is_file():
        raise ConversionError(f"{hf_dir}: no tokenizer_config.json")
    tok_config = json.loads(config_path.read_text(encoding="utf-8"))
    added = {
        int(i): (t["content"], t.get("special", False)) for i, t in tok_config.get("added_tokens_decoder", {}).items()
    }

    if (hf_dir / "tokenizer.json").is_file():
        tok_json = json.loads((hf_dir / "tokenizer.json").read_text(encoding="utf-8"))
        if tok_json["model"]["type"] != "BPE":
            raise ConversionError(f"{hf_dir}/tokenizer.json: model type {tok_json['model']['type']}, expected BPE")
        vocab = tok_json["model"]["vocab"]
        merges = [m if isinstance(m, str) else " ".join(m) for m in tok_json["model"]["merges"]]
        added.update({t["id"]: (t["content"], t["special"]) for t in tok_json.get("added_tokens", [])})
    elif (hf_dir / "vocab.json").is_file() and (hf_dir / "merges.txt").is_file():
        vocab = json.loads((hf_dir / "vocab.json").read_text(encoding="utf-8"))
        lines = (hf_dir / "merges.txt").read_text(encoding="utf-8").splitlines()
        merges = [line for line in lines if line and not line.startswith("#version")]
    else:
        raise ConversionError(f"{hf_dir}: no tokenizer.json, nor vocab.json and merges.txt")

    # Ids past the tokenizer's (the embedding is often padded) get placeholders, as llama.cpp does.
    tokens = [f"[PAD{i}]" for i in range(n_vocab)]
    types = [TOKEN_UNUSED] * n_vocab
    for text, i in vocab.items():
        if not 0 <= i < n_vocab:
            raise ConversionError(f"token {text!r} has id {i}, outside the embedding's {n_vocab} rows")
        tokens[i], types[i] = text, TOKEN_NORMAL
    for i, (text, special) in added.items():
        if not 0 <= i < n_vocab:
            raise ConversionError(f"added token {text!r} has id {i}, outside the embedding's {n_vocab} rows")
        if types[i] == TOKEN_NORMAL and tokens[i] != text:
            raise ConversionError(f"added token {text!r} has id {i}, which the BPE vocabulary gives to {tokens[i]!r}")
        # Added tokens are matched as plain text, so their GGUF string is the text itself.
        tokens[i], types[i] = text, TOKEN_CONTROL if special else TOKEN_USER_DEFINED

    ids = {text: i for i, text in enumerate(tokens) if types[i] != TOKEN_UNUSED}
    specials = {key: _token_content(tok_config.get(key)) for key in ("eos_token", "unk_token", "pad_token")}
    for key, text in (*specials.items(), ("bos", BOS_TEXT)):
        if text not in ids:
            raise ConversionError(f"{config_path}: {key} {text!r} is not in the vocabulary")
    return Vocab(
        tokens, types, merges, ids,
        specials["eos_token"], specials["unk_token"], specials["pad_token"],
        tok_config.get("chat_template"),
    )  # fmt: skip


def check_tensors(ckpt: Checkpoint, wanted: Iterable[tuple[str, tuple[int, ...]]], others: tuple[str, ...]) -> None:
    """Every (name, shape) of ``wanted`` is in the checkpoint with that shape, and every other tensor's
    name starts with one of ``others`` (those belong to the other GGUF file)."""
    remaining = dict(ckpt.entries)
    for name, shape in wanted:
        entry = remaining.pop(name, None)
        if entry is None:
            raise ConversionError(f"tensor {name} is missing from the checkpoint")
        if entry.shape != shape:
            raise ConversionError(
                f"tensor {name} has shape {list(entry.shape)}, expected {list(shape)} from config.json"
            )
    leftovers = sorted(n for n in remaining if not n.startswith(others))
    if leftovers:
        more = f" and {len(leftovers) - 5} more" if len(leftovers) > 5 else ""
        raise ConversionError(f"unexpected tensors in the checkpoint: {', '.join(leftovers[:5])}{more}")


def model_name(config: dict, hf_dir: Path) -> str:
    """general.name: the model's hub name, or the checkpoint directory's."""
    return Path(config.get("_name_or_path") or hf_dir.resolve().name).name


@dataclass(frozen=True)
class OutTensor:
    """One tensor of a GGUF file. ``shape`` is in numpy (torch) order: gguf-py reverses it into ggml's ne.
    ``load`` returns the data when it is written: of that shape in the storage of ``type`` for F32, F16
    and BF16, uint8 [..., bytes per row] for a quantized type."""

    name: str
    shape: tuple[int, ...]
    type: GGMLQuantizationType
    load: Callable[[], np.ndarray]


@dataclass(frozen=True)
class GgufPlan:
    """Everything one GGUF file will hold, checked against the checkpoint before it is written."""

    arch: str
    metadata: Callable[[GGUFWriter], None]
    tensors: list[OutTensor]

    def write(self, out_path: str | Path, progress: bool = True) -> Path:
        """Write the file under a temporary name, then rename it to ``out_path``; returns ``out_path``."""
        return write_plans([(self, Path(out_path))], progress)[0]

    def summary(self, path: Path) -> str:
        """One line on the file written to ``path``: size, bits per weight (of the tensor data, as
        llama.cpp counts them) and how many tensors have each type."""
        n_weights = sum(prod(t.shape) for t in self.tensors)
        n_bytes = sum(tensor_nbytes(t.shape, t.type) for t in self.tensors)
        counts = Counter(t.type.name for t in self.tensors).most_common()
        return (
            f"{path}: {path.stat().st_size / 1e9:.2f} GB, {8 * n_bytes / n_weights:.2f} bits/weight, "
            f"{n_weights / 1e9:.3g} B weights; {len(self.tensors)} tensors: {', '.join(f'{n} {t}' for t, n in counts)}"
        )


# Temporary files are named <output name>.tmp-<pid>-<random>: the pid tells a later run whether the
# writer is still alive, the random part keeps two writers in one process apart.
_TEMP = re.compile(r"\.tmp-(\d+)-[0-9a-f]+$")


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def remove_stale_temp_files(out_path: Path) -> None:
    """Delete the temporary files that killed runs (SIGKILL, power loss) left beside ``out_path``; the
    files of writers still running are kept."""
    for path in out_path.parent.glob(f"{out_path.name}.tmp-*"):
        m = _TEMP.search(path.name)
        if m and path.name[: m.start()] == out_path.name and not _process_alive(int(m.group(1))):
            path.unlink(missing_ok=True)


def check_output_dir(out_path: Path) -> None:
    if not out_path.parent.is_dir():
        raise ConversionError(f"{out_path.parent}: output directory does not exist")


class _PendingFile:
    """One GGUF file being written under a temporary name beside its destination: nothing is ever at the
    destination but a complete file, and a failure removes the temporary file."""

    def __init__(self, plan: GgufPlan, out_path: Path):
        check_output_dir(out_path)
        remove_stale_temp_files(out_path)
        self.out_path = out_path
        # A random suffix rather than mkstemp, whose 0600 mode would stick to the renamed file.
        self.tmp = out_path.with_name(f"{out_path.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")
        self.writer = GGUFWriter(self.tmp, plan.arch)
        try:
            plan.metadata(self.writer)
            for t in plan.tensors:
                if t.type in FLOAT_STORAGE:
                    storage, shape = FLOAT_STORAGE[t.type], t.shape
                else:
                    storage, shape = np.dtype(np.uint8), quant_shape_to_byte_shape(t.shape, t.type)
                self.writer.add_tensor_info(t.name, shape, storage, tensor_nbytes(t.shape, t.type), raw_dtype=t.type)
            self.writer.write_header_to_file()
            self.writer.write_kv_data_to_file()
            self.writer.write_ti_data_to_file()
        except BaseException:
            self.abort()
            raise

    def commit(self) -> None:
        self.writer.close()
        os.replace(self.tmp, self.out_path)

    def abort(self) -> None:
        self.writer.close()
        self.tmp.unlink(missing_ok=True)


def write_plans(jobs: list[tuple[GgufPlan, Path]], progress: bool = True) -> list[Path]:
    """Write several files whose plans list the same source tensors in the same order, tensor by tensor:
    all files' tensor i, then all files' tensor i + 1, the files wanting the same type one after the
    other, so that loads which cache their last source tensor and their last result read each source
    tensor once and compute each type once. Each file appears complete, or not at all."""
    counts = {len(plan.tensors) for plan, _ in jobs}
    if len(counts) != 1:
        raise ValueError(f"plans written together must have the same tensors, got counts {sorted(counts)}")
    pending: list[_PendingFile] = []
    try:
        for plan, out_path in jobs:
            pending.append(_PendingFile(plan, Path(out_path)))
        first = jobs[0][0].tensors
        desc = pending[0].out_path.name if len(jobs) == 1 else f"{len(jobs)} files"
        with tqdm(
            total=sum(prod(t.shape) for t in first), unit="w", unit_scale=True, disable=not progress, desc=desc
        ) as bar:
            for i, t in enumerate(first):
                for k in sorted(range(len(jobs)), key=lambda k: jobs[k][0].tensors[i].type):
                    pending[k].writer.write_tensor_data(jobs[k][0].tensors[i].load())
                bar.update(prod(t.shape))
        for p in pending:
            p.commit()
    except BaseException:
        for p in pending:
            p.abort()
        raise
    return [p.out_path for p in pending]


def _add_metadata(writer: GGUFWriter, config: dict, vocab: Vocab, name: str, file_type: LlamaFileType) -> None:
    writer.add_string(Key.NAME, name)
    writer.add_uint32(Key.FILE_TYPE, int(file_type))
    writer.add_uint32(Key.QUANTIZATION_VERSION, QUANTIZATION_VERSION)
    writer.add_uint32(Key.BLOCK_COUNT, config["num_hidden_layers"])
    writer.add_uint32(Key.CONTEXT_LENGTH, config["max_position_embeddings"])
    writer.add_uint32(Key.EMBEDDING_LENGTH, config["hidden_size"])
    writer.add_uint32(Key.FEED_FORWARD_LENGTH, config["intermediate_size"])
    writer.add_uint32(Key.HEAD_COUNT, config["num_attention_heads"])
    writer.add_uint32(Key.HEAD_COUNT_KV, config["num_key_value_heads"])
    writer.add_float32(Key.ROPE_FREQ_BASE, config["rope_theta"])
    writer.add_float32(Key.RMS_EPS, config["rms_norm_eps"])

    writer.add_string(Key.TOKENIZER_MODEL, "gpt2")
    writer.add_string(Key.TOKENIZER_PRE, "qwen2")
    writer.add_array(Key.TOKENS, vocab.tokens)
    writer.add_array(Key.TOKEN_TYPE, vocab.token_types)
    writer.add_array(Key.MERGES, vocab.merges)
    writer.add_uint32(Key.BOS_ID, vocab.ids[BOS_TEXT])
    writer.add_uint32(Key.EOS_ID, vocab.ids[vocab.eos])
    writer.add_uint32(Key.UNK_ID, vocab.ids[vocab.unk])
    writer.add_uint32(Key.PAD_ID, vocab.ids[vocab.pad])
    writer.add_bool(Key.ADD_BOS, False)
    if vocab.chat_template:
        writer.add_string(Key.CHAT_TEMPLATE, vocab.chat_template)


def llm_plan(hf_dir: str | Path, outtype: str = "f16") -> GgufPlan:
    """The LLM file of the checkpoint in ``hf_dir`` as size variant ``outtype`` (docs/model.md §10), checked but
    not yet written."""
    hf_dir = Path(hf_dir)
    variant = parse_variant(outtype)
    config = read_config(hf_dir)
    ckpt = Checkpoint(hf_dir)
    tensors = llm_tensors(config)
    # vpm. and resampler. tensors go to the vision file.
    check_tensors(ckpt, ((hf, shape) for hf, _, shape in tensors), others=(VISION_PREFIX, RESAMPLER_PREFIX))
    vocab = read_vocab(hf_dir, config["vocab_size"])
    n_layer, gqa = llm_layers_and_gqa(config)
    out = []
    for hf, gguf_name, shape in tensors:
        out_type = llm_tensor_type(variant, gguf_name, shape, n_layer, gqa)
        out.append(OutTensor(gguf_name, shape, out_type, partial(ckpt.read, hf, out_type)))
    metadata = partial(
        _add_metadata, config=config, vocab=vocab, name=model_name(config, hf_dir), file_type=variant.file_type
    )
    return GgufPlan(LLM_ARCH, metadata, out)


def llm_layers_and_gqa(config: dict) -> tuple[int, int]:
    """(layers, query heads per KV head): what the variants' per-layer rules depend on."""
    return config_dims(config)["n_layer"], config["num_attention_heads"] // config["num_key_value_heads"]


def convert_llm(hf_dir: str | Path, out_path: str | Path, outtype: str = "f16", progress: bool = True) -> Path:
    """Write the LLM half of the checkpoint in ``hf_dir`` to ``out_path`` as GGUF; returns ``out_path``."""
    return llm_plan(hf_dir, outtype).write(out_path, progress)
