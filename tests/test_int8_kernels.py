"""The int8 kernels (csrc/kernels/int8_kernels.h): q4_K / q6_K weights times a few activation rows.

AVX2 CPUs (the AVX-512 checks switched off where this one has AVX-512): prompt batches run ggml's own dot
products, weights unpacked once per batch; every output equals ggml_mul_mat's to the bit, so a decoder's
logits do not change with the kernel (tested for 1-20 rows, both types, and a whole prompt).

AVX-512 VNNI CPUs:

They round each activation row to 8 bits per block of 256 as ggml's q8_K does (scale 127 / max|x|,
round half to even) and sum each block's products exactly in integers. Stated bounds:
- against that computation emulated in float64 (gguf-py's dequantization of the weights times the
  rounded activations): |error| ≤ 2e-6 · Σ|w·x| per output (f32 accumulation over at most 74 blocks;
  measured ≤ 3e-7). Any misplaced nibble, scale or min breaks this by orders of magnitude.
- in a decoder (tiny checkpoint as Q4_K_M, one token per step): against ggml's own kernels, plain
  (the int8 kernels switched off, as on a CPU without AVX-512) and repacked (Model(cpu_repack=True)),
  which round activations identically: most
  positions agree to 1e-5 of the largest logit (f32 summation order); where a float difference flips
  one 8-bit rounding the random tiny model amplifies it (≤ 3e-2; ggml's plain and repacked kernels
  differ by as much, 1e-2 measured). Against the f32 model both are equally close (rms within 2 %),
  and along a greedy reply of 24 tokens each is ggml's first choice (measured: all 24, both layouts).
- prompt batches (weights unpacked once into panels of 16 rows, vpdpbusd; exact in the kernel test for
  8, 13 and 20 rows) against the same prompt fed one token per batch: within 5e-2 of the largest logit
  (measured 2.1e-2: the batch's attention runs in bf16) and as close to the f32 model (rms 0.16727
  against 0.16664, bound 1.02×).
"""

from __future__ import annotations

import numpy as np
import pytest
from gguf import GGMLQuantizationType as T
from gguf.quants import dequantize
from test_bf16_kernels import PROMPT, rms

import minicpmv


def rounded_activations(x: np.ndarray) -> np.ndarray:
    """ggml's q8_K rounding of rows of x (blocks of 256), back to values, in float64."""
    blocks = x.astype(np.float32).reshape(x.shape[0], -1, 256)
    amax = np.abs(blocks).max(axis=-1, keepdims=True)
    with np.errstate(divide="ignore"):
        iscale = np.where(amax > 0, np.float32(127) / amax, np.float32(0)).astype(np.float32)
    q = np.rint(blocks * iscale)
    d = np.where(amax > 0, np.float32(1) / np.where(iscale > 0, iscale, 1), 0).astype(np.float32)
    return (q.astype(np.float64) * d).reshape(x.shape)


def int8_kernels(use_kernels, isa: str) -> None:
    """Switches to the int8 kernels of `isa` ("avx512" or "avx2"), or skips where this CPU lacks them."""
    use_kernels(avx512=isa == "avx512")
    if minicpmv._core._testing.int8_kernels() != isa:
        pytest.skip(f"this CPU has no {isa} int8 kernels")


@pytest.mark.parametrize("isa", ["avx512", "avx2"])
@pytest.mark.parametrize("qtype", [T.Q4_K, T.Q6_K])
@pytest.mark.parametrize("n_rows", [1, 3, 6, 8, 13, 20])
def test_products_equal_the_integer_computation(qtype, n_rows, isa, use_kernels):
    int8_kernels(use_kernels, isa)
    rng = np.random.default_rng(int(qtype) * 10 + n_rows)
    M, K = 37, 768
    weights = rng.standard_normal((M, K)).astype(np.float32) * rng.uniform(0.1, 3.0, (M, 1)).astype(np.float32)
    wq = minicpmv._core.quantize(weights, int(T.F32), int(qtype))
    x = rng.standard_normal((n_rows, K)).astype(np.float32) * 2.5
    x[0, 256:512] = 0.0  # a block of zeros rounds to zeros
    if n_rows > 1:
        x[1, 5] = 40.0  # an outlier sets its block's scale
    y = minicpmv._core._testing.int8_matmul(wq, int(qtype), x)
    w = dequantize(wq, qtype).reshape(M, K).astype(np.float64)
    xr = rounded_activations(x)
    want = xr @ w.T
    scale = np.abs(xr) @ np.abs(w).T
    err = np.abs(y - want) / scale
    assert err.max() <= 2e-6, err.max()
    # and the rounding itself is what it claims: within half a step of the unrounded product
    step = np.abs(w) @ np.repeat(np.abs(x.reshape(n_rows, -1, 256)).max(-1) / 127, 256, axis=1).T
    assert (np.abs(y - x.astype(np.float64) @ w.T) <= 0.5 * step.T + 1e-4).all()


@pytest.mark.parametrize("isa", ["avx512", "avx2"])
@pytest.mark.parametrize("qtype", [T.Q4_K, T.Q6_K])
def test_per_row_products_equal_each_row_alone_to_the_bit(qtype, isa, use_kernels):
    # What decode steps of batched conversations rely on (docs/architecture.md §9); the AVX-512 panels
    # of 8+ rows (per_row=False) sum in another order.
    int8_kernels(use_kernels, isa)
    rng = np.random.default_rng(7)
    M, K = 40, 1024
    wq = minicpmv._core.quantize(rng.standard_normal((M, K)).astype(np.float32), int(T.F32), int(qtype))
    x = rng.standard_normal((12, K)).astype(np.float32)
    alone = np.concatenate([minicpmv._core._testing.int8_matmul(wq, int(qtype), x[i : i + 1]) for i in range(12)])
    for n in (2, 3, 4, 5, 8, 12):
        np.testing.assert_array_equal(minicpmv._core._testing.int8_matmul(wq, int(qtype), x[:n], True), alone[:n])


@pytest.mark.parametrize("qtype", [T.Q4_K, T.Q6_K])
def test_avx2_products_equal_ggmls_to_the_bit(qtype, use_kernels):
    int8_kernels(use_kernels, "avx2")
    rng = np.random.default_rng(int(qtype))
    # 19 blocks: ranges of 8, 8 and 3 whose sums carry over; 45 rows: chunks of 34 and 11 (an odd last
    # row, computed twice); 133 activation rows: two passes, the last quad short.
    M, K = 45, 19 * 256
    weights = rng.standard_normal((M, K)).astype(np.float32) * rng.uniform(0.1, 3.0, (M, 1)).astype(np.float32)
    wq = minicpmv._core.quantize(weights, int(T.F32), int(qtype))
    for n_rows in (1, 3, 4, 8, 13, 20, 133):
        x = rng.standard_normal((n_rows, K)).astype(np.float32) * 2.5
        x[0, 256:512] = 0.0
        x[-1, 700] = -60.0  # the block's largest value is negative: ggml's scale has the other sign
        want = minicpmv._core._testing.ggml_matmul(wq, int(qtype), x)
        np.testing.assert_array_equal(minicpmv._core._testing.int8_matmul(wq, int(qtype), x), want, f"{n_rows} rows")


def test_avx2_prompt_batches_give_ggmls_logits_to_the_bit(tiny_q4_k_m, use_kernels):
    ids = minicpmv.Model(tiny_q4_k_m).tokenize(PROMPT)[:28]

    def logits(**kernels) -> tuple[np.ndarray, list[str]]:
        use_kernels(**kernels)
        ran = []
        conversation = minicpmv.Model(tiny_q4_k_m, n_ctx=256, kv_cache_type="f32").conversation(
            eval_callback=lambda name, value: ran.append(name),
            eval_names=["int8_linear-blk.0.ffn_down.weight", "int8_linear-blk.2.ffn_down.weight"],
        )
        return np.asarray(conversation.eval(ids, all_logits=True)), ran

    ggml, ran = logits(int8=False, bf16=False)
    assert ran == []
    int8_kernels(use_kernels, "avx2")
    ours, ran = logits(avx512=False)
    assert ran == ["int8_linear-blk.0.ffn_down.weight", "int8_linear-blk.2.ffn_down.weight"]  # q4_K and q6_K
    np.testing.assert_array_equal(ours, ggml)


def test_binding_rejects_bad_shapes():
    with pytest.raises(minicpmv.MinicpmvError):
        minicpmv._core._testing.int8_matmul(np.zeros((2, 144), np.uint8), int(T.Q8_0), np.zeros((1, 256), np.float32))
    with pytest.raises(minicpmv.MinicpmvError):
        minicpmv._core._testing.int8_matmul(np.zeros((2, 144), np.uint8), int(T.Q4_K), np.zeros((1, 300), np.float32))
    with pytest.raises(minicpmv.MinicpmvError):
        minicpmv._core._testing.int8_matmul(np.zeros((2, 100), np.uint8), int(T.Q4_K), np.zeros((1, 256), np.float32))
    ggml_matmul = minicpmv._core._testing.ggml_matmul
    for w, qtype, x in [
        (np.zeros((2, 144), np.uint8), 999, np.zeros((1, 256), np.float32)),  # no such type
        (np.zeros((2, 144), np.uint8), int(T.Q4_K), np.zeros((1, 300), np.float32)),  # not whole blocks
        (np.zeros((2, 144), np.uint8), int(T.Q4_K), np.zeros(256, np.float32)),
        (np.zeros((2, 100), np.uint8), int(T.Q4_K), np.zeros((1, 256), np.float32)),
    ]:
        with pytest.raises(minicpmv.MinicpmvError):
            ggml_matmul(w, qtype, x)


def step_logits(path, **kwargs) -> np.ndarray:
    """Logits of every position of a 28-token prompt fed one token per batch (the decode path)."""
    model = minicpmv.Model(path, n_ctx=256, n_batch=1, kv_cache_type="f32", **kwargs)
    ids = model.tokenize(PROMPT)[:28]
    return np.asarray(model.eval(ids, all_logits=True)).reshape(len(ids), -1)


@pytest.mark.parametrize("ggml_layout", ["plain", "repacked"])
def test_decoding_matches_ggmls_kernels(tiny_q4_k_m, tiny_gguf_f32, use_kernels, ggml_layout):
    int8_kernels(use_kernels, "avx512")
    # A greedy reply in batches of 4, so that the prompt too takes the decode path. Beam search on this
    # random model ranks near-tied beams and is left to the kernel test.
    prompt = minicpmv.Model(tiny_q4_k_m).chat_prompt([{"role": "user", "content": "Tell me about the river."}])

    def model(**kwargs) -> minicpmv.Model:
        return minicpmv.Model(tiny_q4_k_m, n_ctx=256, n_batch=4, kv_cache_type="f32", **kwargs)

    ours = step_logits(tiny_q4_k_m)
    reply = model().generate(prompt, temperature=0.0, repetition_penalty=1.0, max_new_tokens=24).tokens
    exact = step_logits(tiny_gguf_f32)
    repack = ggml_layout == "repacked"
    if not repack:  # ggml's plain q4_K dot products: what a CPU without AVX-512 runs
        use_kernels(int8=False, bf16=False)
    ggml = step_logits(tiny_q4_k_m, cpu_repack=repack)
    forced = np.asarray(model(cpu_repack=repack).eval(prompt + reply[:-1], all_logits=True))
    forced = forced.reshape(len(prompt) + len(reply) - 1, -1)[len(prompt) - 1 :]

    top = np.abs(ggml).max()
    per_position = np.abs(ours - ggml).max(axis=1) / top
    # Positions where no activation rounds the other way agree to f32 summation order; elsewhere one
    # 8-bit step flips (ggml's two q4_K kernels, plain and repacked, differ by as much: measured 1e-2).
    assert np.median(per_position) <= 1e-5, per_position
    assert 0 < per_position.max() <= 3e-2, per_position  # > 0: another kernel ran
    assert rms(ours, exact) <= 1.02 * rms(ggml, exact)
    # Along our reply, each of our tokens is ggml's first choice or within that bound of it (a near-tie
    # of this random model can part two greedy replies).
    behind = (forced.max(axis=1) - forced[np.arange(len(reply)), reply]) / top
    print(f"{ggml_layout}: median {np.median(per_position):.1e}, max {per_position.max():.1e}; "
          f"{(behind == 0).sum()} of {len(reply)} tokens ggml's first choice, at most {behind.max():.1e} behind")  # fmt: skip
    assert behind.max() <= 3e-2, behind


def test_prompt_batches_match_the_decode_path(tiny_q4_k_m, tiny_gguf_f32, use_kernels):
    """A prompt batch (panels of unpacked weights) is as close to the f32 model as one token per batch."""
    int8_kernels(use_kernels, "avx512")
    batch = np.asarray(
        minicpmv.Model(tiny_q4_k_m, n_ctx=256, n_batch=28, kv_cache_type="f32").eval(
            minicpmv.Model(tiny_q4_k_m).tokenize(PROMPT)[:28], all_logits=True
        )
    ).reshape(28, -1)
    steps = step_logits(tiny_q4_k_m)
    exact = step_logits(tiny_gguf_f32)
    per_position = np.abs(batch - steps).max(axis=1) / np.abs(steps).max()
    # a prompt batch also runs attention in bf16 (bf16_kernels.h): 1.5-2.1e-2 measured at every position
    assert per_position.max() <= 5e-2, per_position
    assert rms(batch, exact) <= 1.02 * rms(steps, exact)
