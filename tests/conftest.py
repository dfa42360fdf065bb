"""Session-scoped fixtures: the tiny synthetic checkpoint (written once) and its LLM and vision GGUF files."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_ckpt(tmp_path_factory) -> Path:
    """The ``tiny`` synthetic MiniCPM-V 2.6 checkpoint (HF layout, ~160 MB, a few seconds)."""
    from minicpmv.convert.synthetic import write_checkpoint

    return write_checkpoint(tmp_path_factory.mktemp("tiny_ckpt"), preset="tiny", seed=0)


def _convert(tiny_ckpt: Path, tmp_path_factory, outtype: str) -> Path:
    from minicpmv.convert.hf_to_gguf import convert_llm

    out = tmp_path_factory.mktemp(f"tiny_gguf_{outtype}") / f"ggml-model-{outtype.upper()}.gguf"
    return convert_llm(tiny_ckpt, out, outtype=outtype, progress=False)


@pytest.fixture(scope="session")
def tiny_gguf_f32(tiny_ckpt, tmp_path_factory) -> Path:
    """The tiny checkpoint's LLM as GGUF with f32 weights (bit-exact copies of the bf16 values)."""
    return _convert(tiny_ckpt, tmp_path_factory, "f32")


@pytest.fixture(scope="session")
def tiny_gguf_f16(tiny_ckpt, tmp_path_factory) -> Path:
    """The tiny checkpoint's LLM as GGUF with f16 weights, as llama.cpp's default conversion."""
    return _convert(tiny_ckpt, tmp_path_factory, "f16")


@pytest.fixture(scope="session")
def tiny_q4_k_m(tiny_gguf_f32, tmp_path_factory) -> Path:
    """The tiny checkpoint's LLM quantized to Q4_K_M by our quantizer (q4_K and q6_K matrices)."""
    from minicpmv.convert.gguf_quantize import quantize_gguf

    out = tmp_path_factory.mktemp("tiny_q4_k_m") / "ggml-model-Q4_K_M.gguf"
    return quantize_gguf(tiny_gguf_f32, out, "Q4_K_M", progress=False)


def _convert_mmproj(tiny_ckpt: Path, tmp_path_factory, outtype: str) -> Path:
    from minicpmv.convert.mmproj import convert_mmproj

    out = tmp_path_factory.mktemp(f"tiny_mmproj_{outtype}") / f"mmproj-model-{outtype}.gguf"
    return convert_mmproj(tiny_ckpt, out, outtype=outtype, progress=False)


@pytest.fixture(scope="session")
def tiny_mmproj_f32(tiny_ckpt, tmp_path_factory) -> Path:
    """The tiny checkpoint's vision encoder and resampler as GGUF with f32 weights (exact bf16 values)."""
    return _convert_mmproj(tiny_ckpt, tmp_path_factory, "f32")


@pytest.fixture(scope="session")
def tiny_mmproj_f16(tiny_ckpt, tmp_path_factory) -> Path:
    """The tiny checkpoint's vision file with f16 weights, as the published mmproj-model-f16.gguf."""
    return _convert_mmproj(tiny_ckpt, tmp_path_factory, "f16")


@pytest.fixture
def use_kernels():
    """use_kernels(int8=..., bf16=..., avx512=...): which of our kernel families the graphs built during the
    test may use, and whether with AVX-512; switched off, the dispatch takes the path of a CPU without them
    on this one (int8 and bf16 off: ggml's kernels; avx512 off: an AVX2 CPU's)."""
    from minicpmv import _core

    before = _core._testing.use_kernels(True, True)
    _core._testing.use_kernels(*before)
    yield lambda int8=True, bf16=True, avx512=True: _core._testing.use_kernels(int8, bf16, avx512)
    _core._testing.use_kernels(*before)
