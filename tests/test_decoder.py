"""The Qwen2 decoder against transformers' Qwen2ForCausalLM on the same (tiny, synthetic) weights.

Tolerances: F32 GGUF with an f32 KV cache computes what transformers computes in float32, so the
logits agree to float rounding (measured 6e-7 max relative error; bound 1e-4). F16 weights with an f16
KV cache round every weight and cached K/V to 11 significant bits (2^-11 ≈ 4.9e-4 relative each);
measured 4.6e-4, bound 3e-3.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import minicpmv
from reference.models import load_qwen2_reference

PROMPT = (
    "The quick brown fox jumps over the lazy dog, and then it runs back home through the forest. "
    "日本語のテキストと English が混ざっています。 Zahlen: 3.14159, 2.71828; code: def f(x): return x**2\n"
    "Der schnelle braune Fuchs springt über den faulen Hund. "
)


@pytest.fixture(scope="module")
def reference(tiny_ckpt):
    return load_qwen2_reference(tiny_ckpt)


@pytest.fixture(scope="module")
def model_f32(tiny_gguf_f32):
    return minicpmv.Model(tiny_gguf_f32, n_ctx=512, kv_cache_type="f32")


def relative_error(ours: np.ndarray, theirs: np.ndarray) -> float:
    return float(np.abs(ours - theirs).max() / np.abs(theirs).max())


def reference_logits(reference, ids: list[int]) -> np.ndarray:
    with torch.no_grad():
        return reference(torch.tensor([ids])).logits[0].numpy()


def hf_generate(reference, ids: list[int], stop_ids: list[int], **kwargs) -> list[int]:
    """transformers' generate() fed inputs_embeds, as MiniCPM-V's chat() calls it (so the repetition
    penalty sees only generated tokens), returning the new tokens."""
    embeds = reference.get_input_embeddings()(torch.tensor([ids]))
    with torch.no_grad():
        out = reference.generate(
            inputs_embeds=embeds,
            attention_mask=torch.ones(1, len(ids), dtype=torch.long),
            eos_token_id=stop_ids,
            pad_token_id=0,
            **kwargs,
        )
    return out[0].tolist()


def test_prompt_is_long_enough(model_f32):
    assert len(model_f32.tokenize(PROMPT)) >= 64


@pytest.mark.parametrize("outtype,kv,bound", [("f32", "f32", 1e-4), ("f16", "f16", 3e-3)])
def test_last_position_logits_match_transformers(request, reference, outtype, kv, bound):
    model = minicpmv.Model(request.getfixturevalue(f"tiny_gguf_{outtype}"), n_ctx=512, kv_cache_type=kv)
    ids = model.tokenize(PROMPT)
    theirs = reference_logits(reference, ids)[-1]
    ours = model.eval(ids)
    err = relative_error(ours, theirs)
    print(f"{outtype}: max relative error {err:.2e} over {len(ids)} positions")
    assert err <= bound
    assert ours.argmax() == theirs.argmax()


def test_every_position_matches_transformers_with_small_batches(tiny_gguf_f32, reference):
    # n_batch 16 splits the prompt into several graphs that read the cache written by earlier ones.
    model = minicpmv.Model(tiny_gguf_f32, n_ctx=512, n_batch=16, kv_cache_type="f32")
    ids = model.tokenize(PROMPT)
    ours = model.eval(ids, all_logits=True).reshape(len(ids), -1)
    assert relative_error(ours, reference_logits(reference, ids)) <= 1e-4


def test_cached_decoding_equals_full_recomputation(tiny_gguf_f32):
    model = minicpmv.Model(tiny_gguf_f32, n_ctx=512, kv_cache_type="f32")
    ids = model.tokenize(PROMPT)
    full = model.eval(ids, all_logits=True).reshape(len(ids), -1)
    model.reset()
    model.eval(ids[:40])
    stepwise = [model.eval([t]) for t in ids[40:]]
    assert relative_error(np.stack(stepwise), full[40:]) <= 1e-5


def test_greedy_tokens_equal_transformers(model_f32, reference):
    ids = model_f32.chat_prompt([{"role": "user", "content": "Tell me a story about a fox. " * 6}])
    theirs = hf_generate(reference, ids, model_f32._model.stop_ids, do_sample=False, num_beams=1, max_new_tokens=32)
    assert len(theirs) == 32
    # Temperature 0 (sampler) and one beam (the beam-search entry point) are both plain greedy.
    assert model_f32.generate(ids, max_new_tokens=32, temperature=0.0, repetition_penalty=1.0).tokens == theirs
    ours = model_f32.generate(ids, max_new_tokens=32, sampling=False, num_beams=1, repetition_penalty=1.0)
    assert ours.tokens == theirs


def test_greedy_with_repetition_penalty_equals_transformers(model_f32, reference):
    ids = model_f32.chat_prompt([{"role": "user", "content": "Repeat after me: la la la la la la."}])
    theirs = hf_generate(
        reference, ids, model_f32._model.stop_ids, do_sample=False, repetition_penalty=1.3, max_new_tokens=32
    )
    ours = model_f32.generate(ids, max_new_tokens=32, temperature=0.0, repetition_penalty=1.3)
    assert ours.tokens == theirs


def test_beam_search_equals_transformers(model_f32, reference):
    # HF chat(sampling=False): num_beams=3, repetition_penalty=1.2.
    ids = model_f32.chat_prompt([{"role": "user", "content": "Describe the sea in one sentence. " * 4}])
    theirs = hf_generate(
        reference,
        ids,
        model_f32._model.stop_ids,
        do_sample=False,
        num_beams=3,
        repetition_penalty=1.2,
        max_new_tokens=24,
    )
    ours = model_f32.generate(ids, max_new_tokens=24, sampling=False, num_beams=3, repetition_penalty=1.2)
    assert ours.tokens == theirs
    # chat() with sampling=False is the same search.
    text = model_f32.chat(
        [{"role": "user", "content": "Describe the sea in one sentence. " * 4}], sampling=False, max_new_tokens=24
    )
    assert text == model_f32.detokenize(theirs)


def test_later_turns_reuse_the_cache(model_f32):
    msgs = [{"role": "user", "content": "Hello there, who are you?"}]
    model_f32.reset()
    first = model_f32.generate(model_f32.chat_prompt(msgs), max_new_tokens=8, temperature=0.0)
    msgs += [{"role": "assistant", "content": first.text}, {"role": "user", "content": "And then?"}]
    second = model_f32.generate(model_f32.chat_prompt(msgs), max_new_tokens=8, temperature=0.0)
    assert second.n_reused >= first.n_prompt
    # The reused cache gives what a fresh session computes.
    fresh = minicpmv.Model(model_f32.model_path, n_ctx=512, kv_cache_type="f32")
    assert fresh.generate(fresh.chat_prompt(msgs), max_new_tokens=8, temperature=0.0).tokens == second.tokens


def test_weights_copied_into_memory_compute_the_same(tiny_q4_k_m, tiny_mmproj_f16):
    """use_mmap=False (weights copied out of the file mapping) changes where the weights live, not the math."""
    ids = list(range(1000, 1040))
    logits = []
    for use_mmap in (True, False):
        model = minicpmv.Model(tiny_q4_k_m, mmproj_path=tiny_mmproj_f16, n_ctx=128, use_mmap=use_mmap)
        img = np.full((64, 64, 3), 200, np.uint8)
        logits.append(
            (
                np.asarray(model.eval(ids, all_logits=True)),
                np.asarray(model.eval([7])),
                np.asarray(model.encode_slices(minicpmv._core._testing.preprocess_image(img))),
            )
        )
    for a, b in zip(*logits):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("n_threads", [1, 2])
def test_a_prompt_gives_the_same_logits_however_it_is_cut(model_f32, n_threads):
    # Cache reuse evaluates the rest of a prompt from wherever the cached prefix ends: the result
    # must not depend on it (#14; Session::compute asks for ggml's reference attention). Measured
    # with ggml's tiled attention from 64 query rows: 5.5e-6 apart between one 300-row batch and
    # chunks of 20; now bit-equal.
    ids = model_f32.tokenize("The quick brown fox jumps over the lazy dog. " * 40)[:300]
    results = []
    for chunk in (300, 128, 64, 20, 1):
        conversation = model_f32.conversation(n_threads=n_threads, kv_cache_type="f32")
        for i in range(0, len(ids), chunk):
            logits = conversation.eval(ids[i : i + chunk])
        results.append(logits)
    for chunk, logits in zip((128, 64, 20, 1), results[1:]):
        np.testing.assert_array_equal(logits, results[0], err_msg=f"chunks of {chunk}")


@pytest.mark.parametrize("kv_cache_type", ["f32", "f16"])
def test_decoding_over_512_cached_keys_equals_the_prompts_rows(tiny_gguf_f32, kv_cache_type):
    # A token decoded alone over 512+ cached positions must get the logits its row gets inside a
    # prompt batch (#14: a seed gives one answer whatever the cache held). From 512 keys, ggml's
    # attention splits a single query row's keys between threads and rounds otherwise unless its
    # reference path runs (measured at the first position over 512 keys, 2 threads: 6.1e-6 apart
    # with an f32 cache, 0.039 with an f16 one).
    model = minicpmv.Model(tiny_gguf_f32, n_ctx=1024)
    ids = model.tokenize("The quick brown fox jumps over the lazy dog. " * 70)[:600]
    whole = model.conversation(n_threads=2, kv_cache_type=kv_cache_type)
    want = np.asarray(whole.eval(ids, all_logits=True)).reshape(len(ids), -1)
    stepped = model.conversation(n_threads=2, kv_cache_type=kv_cache_type)
    stepped.eval(ids[:500])
    for i in range(500, len(ids)):
        np.testing.assert_array_equal(np.asarray(stepped.eval(ids[i : i + 1])), want[i], err_msg=f"position {i}")


@pytest.mark.parametrize("path", ["tiny_q4_k_m", "tiny_gguf_f16"])
def test_ggmls_kernels_give_a_row_the_same_logits_in_any_batch(request, path, use_kernels):
    # The path of every CPU without AVX-512 (forced here): a row's products and attention sum in one
    # order whatever rows come with it, so a prompt cut in chunks of 1, 7 or 16, on 1 or 2 threads,
    # gives one batch's logits (#14: a seed gives one answer whatever the cache held).
    use_kernels(int8=False, bf16=False)
    model = minicpmv.Model(request.getfixturevalue(path), n_ctx=256)
    ids = model.tokenize("The quick brown fox jumps over the lazy dog. " * 8)[:64]
    want = np.asarray(model.conversation(n_threads=2).eval(ids))
    for n_threads in (1, 2):
        for chunk in (1, 7, 16):
            conversation = model.conversation(n_threads=n_threads)
            for i in range(0, len(ids), chunk):
                logits = conversation.eval(ids[i : i + chunk])
            np.testing.assert_array_equal(logits, want, err_msg=f"{n_threads} threads, chunks of {chunk}")
