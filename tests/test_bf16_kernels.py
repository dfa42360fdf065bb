"""The bfloat16 kernels (csrc/bf16_kernels.h) on prompt batches over quantized LLM weights.

A batch of at least 16 positions over a quantized file runs its matrix products and attention in bf16
with f32 sums (weights dequantized by ggml, then rounded to bf16); shorter batches keep ggml's kernels,
which round the activations to 8-bit blocks instead. Both approximate the same product with the
dequantized weights. Stated bounds, checked here on the tiny checkpoint quantized to Q4_K_M:
- the two paths give the same logits to 5e-2 of the largest logit (measured 2.2e-2; 4-bit weights put
  both 0.17 away from the f32 model), and the bf16 path is no further from the f32 model than ggml's
  (rms over all logits; measured 0.16635 against 0.16639, bound 1.05×);
- reading the CPU_REPACK layout (Model(cpu_repack=True)) gives bit for bit the logits of the plain
  layout: the kernels dequantize the interleaved blocks to exactly ggml's values.
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


def test_prompt_batches_in_bf16_agree_with_ggml_kernels(tiny_q4_k_m, tiny_gguf_f32):
    bf16 = prompt_logits(tiny_q4_k_m, n_batch=48)  # one batch of 48: the bf16 path
    ggml = prompt_logits(tiny_q4_k_m, n_batch=12)  # four batches of 12: ggml's kernels
    exact = prompt_logits(tiny_gguf_f32, n_batch=48)  # the unquantized model
    assert rel(bf16, ggml) <= 5e-2
    assert rms(bf16, exact) <= 1.05 * rms(ggml, exact)


def test_repacked_q4_k_is_read_exactly(tiny_q4_k_m):
    plain = prompt_logits(tiny_q4_k_m, n_batch=48)
    repacked = prompt_logits(tiny_q4_k_m, n_batch=48, cpu_repack=True)
    np.testing.assert_array_equal(plain, repacked)
