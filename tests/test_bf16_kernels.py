"""The bfloat16 kernels (csrc/kernels/bf16_kernels.h) on prompt batches over quantized LLM weights.

A batch of at least 16 positions over quantized matrices the int8 kernels do not take (here Q8_0, or
q4_K in ggml's CPU_REPACK layout) runs its matrix products and attention in bf16 with f32 sums
(weights dequantized, then rounded to bf16); shorter batches keep ggml's kernels, which round the
activations to 8-bit blocks instead. Both approximate the same product with the dequantized weights.
Stated bounds, on the tiny checkpoint:
- Q8_0: the two paths give the same logits to 5e-2 of the largest logit (measured 1.5e-2), and the
  bf16 path is no further from the f32 model than ggml's (rms over all logits; measured 0.0150
  against 0.0189, bound 1.05×);
- Q4_K_M with Model(cpu_repack=True): the bf16 kernels reading block_q4_Kx8 agree with the int8
  kernels on the plain layout to 5e-2 (measured 2.1e-2) and are as close to the f32 model (0.16648
  against 0.16656, bound 1.05×).
The vision side (f16 files) is bounded in test_vision.py.
"""

from __future__ import annotations

import numpy as np
import pytest

import minicpmv

PROMPT = "The history of the city begins with a small settlement on the river, " * 4


def prompt_logits(path, n_batch: int, **kwargs) -> np.ndarray:
    model = minicpmv.Model(path, n_ctx=512, n_batch=n_batch, kv_cache_type="f32", **kwargs)
    ids = model.tokenize(PROMPT)[:48]
    assert len(ids) == 48
    return np.asarray(model.eval(ids, all_logits=True)).reshape(len(ids), -1)


def rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / np.abs(b).max())


def rms(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.sqrt(((a - b) ** 2).mean() / (b**2).mean()))


@pytest.fixture(scope="module")
def tiny_q8_0(tiny_gguf_f32, tmp_path_factory):
    """Q8_0 matrices: not the int8 kernels' types, so prompt batches take the bf16 kernels."""
    from minicpmv.convert.gguf_quantize import quantize_gguf

    out = tmp_path_factory.mktemp("tiny_q8_0") / "ggml-model-Q8_0.gguf"
    return quantize_gguf(tiny_gguf_f32, out, "Q8_0", progress=False)


def test_prompt_batches_in_bf16_agree_with_ggml_kernels(tiny_q8_0, tiny_gguf_f32):
    bf16 = prompt_logits(tiny_q8_0, n_batch=48)  # one batch of 48: the bf16 path
    ggml = prompt_logits(tiny_q8_0, n_batch=12)  # four batches of 12: ggml's kernels
    exact = prompt_logits(tiny_gguf_f32, n_batch=48)  # the unquantized model
    assert rel(bf16, ggml) <= 5e-2
    assert rms(bf16, exact) <= 1.05 * rms(ggml, exact)


def test_repacked_q4_k_agrees_with_the_int8_kernels(tiny_q4_k_m, tiny_gguf_f32):
    int8 = prompt_logits(tiny_q4_k_m, n_batch=48)  # plain layout: the int8 kernels
    repacked = prompt_logits(tiny_q4_k_m, n_batch=48, cpu_repack=True)  # q4_K as block_q4_Kx8: bf16
    exact = prompt_logits(tiny_gguf_f32, n_batch=48)
    assert rel(repacked, int8) <= 5e-2
    assert rms(repacked, exact) <= 1.05 * rms(int8, exact)
