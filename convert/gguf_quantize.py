"""An F32/F16/BF16 LLM GGUF file → its size variants (docs/model.md §10), as llama.cpp's ``llama-quantize`` makes them.

Bounded memory: the metadata is read once (gguf-py), then each tensor is memory-mapped on its own,
converted and written before the next is touched, so the mapping of one source tensor and one result
are in memory at a time. Writing several variants at once (``quantize_all``) reads each source tensor
once: the writer visits every file's tensor i before tensor i + 1, the files wanting the same type one
after the other, and the source keeps its last mapped tensor and its last result.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache, partial
from pathlib import Path

import numpy as np
from gguf import GGMLQuantizationType, GGUFReader, GGUFValueType, GGUFWriter

from . import ConversionError
from .gguf_layout import LLM_ARCH, QUANTIZATION_VERSION, Key
from .hf_to_gguf import FLOAT_STORAGE, GgufPlan, OutTensor, check_finite, check_output_dir, quantize, write_plans
from .quant_rules import SIZE_VARIANTS, llm_tensor_type, parse_variant

# Keys not copied: the header's own fields (gguf-py names them GGUF.*), the architecture (GGUFWriter
# writes it) and the alignment (the writer uses its default, so a copied value could lie).
_NOT_COPIED = (Key.ARCHITECTURE, "general.alignment")


@dataclass(frozen=True)
class _SourceTensor:
    name: str
    type: GGMLQuantizationType
    shape: tuple[int, ...]  # numpy order (ggml's ne reversed)
    offset: int  # of the data in the file


def variant_file_name(variant: str) -> str:
    """llama.cpp's name for the LLM file of a variant (ggml-model-Q4_K_M.gguf)."""
    return f"ggml-model-{parse_variant(variant).name}.gguf"


class GgufSource:
    """An F32/F16/BF16 LLM GGUF file, checked, with its metadata read and its tensors mapped on demand."""

    def __init__(self, path: str | Path, n_threads: int = 0):
        self.path = Path(path)
        self.n_threads = n_threads
        if not self.path.is_file():
            raise ConversionError(f"{self.path}: no such file")
        try:
            reader = GGUFReader(self.path)
        except (ValueError, IndexError, OSError) as e:  # gguf-py's errors for a file that is not GGUF
            raise ConversionError(f"{self.path}: not a GGUF file ({e})") from None
        arch = reader.fields.get(Key.ARCHITECTURE)
        arch = arch.contents() if arch else None
        if arch != LLM_ARCH:
            raise ConversionError(
                f"{self.path}: architecture {arch!r}, expected {LLM_ARCH!r} (the LLM file; a vision file is "
                "quantized from the checkpoint with minicpmv-convert --vision-outtype q8_0)"
            )
        # (key, value, type, array element type) in file order; plain Python values, so that the
        # reader and its ~1 M small arrays (the vocabulary) can go.
        self.fields = [
            (f.name, f.contents(), f.types[0], f.types[-1] if f.types[0] == GGUFValueType.ARRAY else None)
            for f in reader.fields.values()
            if not f.name.startswith("GGUF.") and f.name not in _NOT_COPIED
        ]
        self.tensors = [
            _SourceTensor(t.name, t.tensor_type, tuple(int(d) for d in reversed(t.shape)), t.data_offset)
            for t in reader.tensors
        ]
        for t in self.tensors:
            if t.type not in FLOAT_STORAGE:
                raise ConversionError(
                    f"{self.path}: tensor {t.name} is already quantized ({t.type.name}): quantize from the F32, F16 "
                    "or BF16 file instead (requantizing compounds the errors; llama.cpp refuses it too unless "
                    "given --allow-requantize)"
                )
        values = {k: v for k, v, *_ in self.fields}
        try:
            self.n_layer = int(values[Key.BLOCK_COUNT])
            self.gqa = int(values[Key.HEAD_COUNT]) // int(values[Key.HEAD_COUNT_KV])
        except (KeyError, ZeroDivisionError) as e:
            raise ConversionError(f"{self.path}: missing or bad head and layer counts ({e})") from None
        self._by_name = {t.name: t for t in self.tensors}
        # One source tensor mapped and one result kept, for the files written together (module doc).
        self._mapped = lru_cache(maxsize=1)(self._map)
        self.converted = lru_cache(maxsize=1)(self._convert)

    def _map(self, name: str) -> np.ndarray:
        t = self._by_name[name]
        return np.memmap(self.path, dtype=FLOAT_STORAGE[t.type], mode="r", offset=t.offset, shape=t.shape)

    def _convert(self, name: str, out_type: GGMLQuantizationType) -> np.ndarray:
        """Tensor ``name`` in ``out_type``, in the writer's storage (OutTensor.load)."""
        values = self._mapped(name)
        source_type = self._by_name[name].type
        check_finite(values, source_type == GGMLQuantizationType.BF16, f"{self.path}: tensor {name}")
        if out_type == source_type:
            return values
        return quantize(values, source_type, out_type, name, self.n_threads)

    def plan(self, variant: str) -> GgufPlan:
        v = parse_variant(variant, SIZE_VARIANTS)
        out = []
        for t in self.tensors:
            out_type = llm_tensor_type(v, t.name, t.shape, self.n_layer, self.gqa)
            out.append(OutTensor(t.name, t.shape, out_type, partial(self.converted, t.name, out_type)))
        return GgufPlan(LLM_ARCH, partial(self._copy_metadata, file_type=int(v.file_type)), out)

    def _copy_metadata(self, writer: GGUFWriter, file_type: int) -> None:
        """Every key of the source in its order, but the two that describe the new file's types."""
        new = {Key.FILE_TYPE: file_type, Key.QUANTIZATION_VERSION: QUANTIZATION_VERSION}
        for key, value, vtype, sub_type in self.fields:
            if key in new:
                writer.add_uint32(key, new.pop(key))
            else:
                writer.add_key_value(key, value, vtype, sub_type)
        for key, value in new.items():
            writer.add_uint32(key, value)


def write_variants(
    in_path: str | Path, outputs: dict[str, Path], progress: bool = True, n_threads: int = 0
) -> list[tuple[Path, GgufPlan]]:
    """Write each variant of ``outputs`` (variant → path) of the LLM GGUF ``in_path``, all in one pass
    over the source; returns (path, plan) per file. The names and paths are checked before the source
    is read."""
    for variant, out_path in outputs.items():
        parse_variant(variant, SIZE_VARIANTS)
        check_output_dir(Path(out_path))
        if Path(out_path).resolve() == Path(in_path).resolve():
            raise ConversionError(f"{out_path}: the output would replace the input file")
    source = GgufSource(in_path, n_threads)
    jobs = [(source.plan(v), Path(out_path)) for v, out_path in outputs.items()]
    return list(zip(write_plans(jobs, progress), (plan for plan, _ in jobs)))


def quantize_gguf(
    in_path: str | Path, out_path: str | Path, variant: str, progress: bool = True, n_threads: int = 0
) -> Path:
    """Write size variant ``variant`` of the LLM GGUF ``in_path`` to ``out_path``; returns ``out_path``."""
    return write_variants(in_path, {variant: Path(out_path)}, progress, n_threads)[0][0]


def quantize_all(in_path: str | Path, out_dir: str | Path, progress: bool = True, n_threads: int = 0) -> list[Path]:
    """Write the 16 size variants of ``in_path`` into ``out_dir`` under llama.cpp's names, reading each
    source tensor once; returns the paths."""
    outputs = {v: Path(out_dir) / variant_file_name(v) for v in SIZE_VARIANTS}
    return [path for path, _ in write_variants(in_path, outputs, progress, n_threads)]
