"""Conversations over one loaded model (generate/conversation.h): each keeps its own cache, several
run at once on different threads, and each answers as if it ran alone."""

from __future__ import annotations

import logging
import threading
import time

import numpy as np
import pytest
from PIL import Image
from test_vision import picture

import minicpmv

GREEDY = dict(sampling=False, num_beams=1, repetition_penalty=1.0, max_new_tokens=12)


@pytest.fixture(scope="module")
def model(tiny_gguf_f32, tiny_mmproj_f32):
    return minicpmv.Model(tiny_gguf_f32, mmproj_path=tiny_mmproj_f32, n_ctx=4096, n_threads=1)


def run_together(work, keys) -> dict:
    """work(key) for every key, each on its own thread, all released at once; their results by key
    (an exception in any thread fails the test)."""
    got, errors = {}, []
    start = threading.Barrier(len(keys))

    def run(key):
        try:
            start.wait()
            got[key] = work(key)
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(key,)) for key in keys]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    return got


def two_turns(conversation, first_content, second_question) -> list[str]:
    msgs = [{"role": "user", "content": first_content}]
    answers = [conversation.chat(msgs, **GREEDY)]
    msgs += [{"role": "assistant", "content": answers[0]}, {"role": "user", "content": second_question}]
    answers.append(conversation.chat(msgs, **GREEDY))
    return answers


def test_two_conversations_on_two_threads_answer_as_one_after_the_other(model):
    jobs = {
        "image": ([picture(640, 480, 40), "What is in the image?"], "And its colours?"),
        "text": ("Tell me about the sea.", "And about rivers?"),
    }
    expected = {name: two_turns(model.conversation(), *job) for name, job in jobs.items()}
    assert all(all(answers) for answers in expected.values())

    conversations = {name: model.conversation() for name in jobs}
    got = run_together(lambda name: two_turns(conversations[name], *jobs[name]), list(jobs))
    assert got == expected


@pytest.mark.parametrize("weights", ["f32", "q4_k_m"])
def test_conversations_generating_at_once_share_decode_graphs_and_answer_as_alone(weights, request, tiny_mmproj_f32):
    # Ten threads (past the 8 rows from which the int8 kernels' panels would sum in another order):
    # their decode steps run in shared graphs, each answer token for token what it is alone.
    path = request.getfixturevalue("tiny_gguf_f32" if weights == "f32" else "tiny_q4_k_m")
    model = minicpmv.Model(path, mmproj_path=tiny_mmproj_f32, n_ctx=512, n_threads=2)
    questions = [f"Question {i}: what comes after {i * 7}?" for i in range(10)]
    options = {**GREEDY, "max_new_tokens": 24}
    expected = [model.conversation().chat([{"role": "user", "content": q}], **options) for q in questions]
    steps, batches = model.decode_counts
    assert steps == batches  # one after the other: a graph per step

    conversations = [model.conversation() for _ in questions]
    answers = run_together(
        lambda i: conversations[i].chat([{"role": "user", "content": questions[i]}], **options), range(len(questions))
    )
    assert [answers[i] for i in range(len(questions))] == expected
    shared_steps, shared_batches = (a - b for a, b in zip(model.decode_counts, (steps, batches)))
    assert shared_steps == steps
    assert shared_batches < shared_steps / 2, (shared_steps, shared_batches)


def test_conversations_keep_their_own_cache(model):
    a, b = model.conversation(), model.conversation()
    img = picture(500, 300, 41)
    a.chat([{"role": "user", "content": [img, "Describe it."]}], **GREEDY)
    assert a.last_result.n_encoded > 0
    b.chat([{"role": "user", "content": "Hello"}], **GREEDY)
    # b's turn did not evict a's image: a's follow-up reuses it.
    a.chat([{"role": "user", "content": [img, "Describe it."]}], **GREEDY)
    assert a.last_result.n_encoded == 0 and a.last_result.n_reused > 0


def test_a_conversation_refuses_a_second_caller_only_by_waiting(model):
    # One conversation serves one call at a time: a second thread waits for the first, both finish.
    conversation = model.conversation()
    msgs = [{"role": "user", "content": "Count to three."}]
    expected = conversation.chat(msgs, **GREEDY)
    results = []
    threads = [threading.Thread(target=lambda: results.append(conversation.chat(msgs, **GREEDY))) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [expected, expected]


def test_video_parts_take_the_model_card_video_settings(model):
    frames = [np.asarray(picture(320, 240, i)) for i in range(3)]
    as_video = [{"role": "user", "content": [{"type": "video", "video": frames}, "Describe the video."]}]
    explicit = [{"role": "user", "content": frames + ["Describe the video."]}]
    # The core's automatic settings for frames: no image ids, at most 2 slices (HF's model card).
    assert model.chat_prompt(as_video) == model.chat_prompt(explicit, use_image_id=False, max_slice_nums=2)
    assert model.chat_prompt(as_video) != model.chat_prompt(explicit)
    # Explicit options still win.
    assert model.chat_prompt(as_video, use_image_id=True, max_slice_nums=9) == model.chat_prompt(explicit)


def test_the_eval_callback_shows_named_layers_as_the_reference_computes_them(tiny_ckpt, tiny_gguf_f32, tiny_mmproj_f32):
    import torch
    from test_vision import normalised

    from reference.models import load_qwen2_reference, load_vision_reference, reference_vision_embeddings

    model = minicpmv.Model(tiny_gguf_f32, mmproj_path=tiny_mmproj_f32, kv_cache_type="f32")
    seen = {}
    conversation = model.conversation(
        eval_callback=lambda name, value: seen.setdefault(name, value.copy()),
        eval_names=["resampler_out", "vpm_out", "layer_out-0", "logits"],
    )
    piece = np.random.default_rng(3).integers(0, 256, (224, 336, 3), dtype=np.uint8)
    out = conversation.encode_slices([np.ascontiguousarray(normalised(Image.fromarray(piece)))])
    vpm, resampler = load_vision_reference(tiny_ckpt)
    expected = reference_vision_embeddings(vpm, resampler, [piece])[0]
    assert seen["vpm_out"].shape == (16 * 24, vpm.config.hidden_size)
    np.testing.assert_array_equal(seen["resampler_out"], out.reshape(expected.shape))
    assert np.abs(seen["resampler_out"] - expected).max() <= 1e-4 * np.abs(expected).max()  # measured ≤ 1e-6

    ids = model.tokenize("The first layer of the decoder, seen from Python.")
    logits = conversation.eval(ids)
    with torch.no_grad():
        hf = load_qwen2_reference(tiny_ckpt)(torch.tensor([ids]), output_hidden_states=True)
    layer0 = hf.hidden_states[1][0].numpy()
    assert seen["layer_out-0"].shape == layer0.shape
    assert np.abs(seen["layer_out-0"] - layer0).max() <= 1e-4 * np.abs(layer0).max()  # f32 files, f32 cache
    np.testing.assert_array_equal(seen["logits"].reshape(-1), logits)  # the last position only


def test_loading_is_logged_at_info_through_the_logging_module(tiny_gguf_f32, tiny_mmproj_f32, caplog):
    with caplog.at_level(logging.INFO, logger="minicpmv"):
        minicpmv.Model(tiny_gguf_f32, mmproj_path=tiny_mmproj_f32)
    messages = [r.getMessage() for r in caplog.records if r.name == "minicpmv" and r.levelno == logging.INFO]
    assert any(str(tiny_gguf_f32) in m and "qwen2, 3 layers" in m and "MB of weights on CPU" in m for m in messages), (
        messages
    )
    assert any(str(tiny_mmproj_f32) in m and "SigLIP" in m for m in messages), messages
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="minicpmv"):
        minicpmv.Model(tiny_gguf_f32)
    assert not [r for r in caplog.records if r.name == "minicpmv"]  # nothing below the logger's level


@pytest.mark.parametrize(
    "args",
    [
        "sampling=True, do_sample=True, temperature=2.0, max_new_tokens=1000",
        "sampling=False, num_beams=3, repetition_penalty=1.0, length_penalty=5.0, max_new_tokens=400",
    ],
    ids=["sampling", "beam search"],
)
def test_ctrl_c_stops_a_non_streaming_chat_at_the_next_step(tiny_gguf_f32, tmp_path, args):
    import signal
    import subprocess
    import sys

    script = tmp_path / "chat.py"
    script.write_text(
        "import sys, time, minicpmv\n"
        f"model = minicpmv.Model({str(tiny_gguf_f32)!r}, n_ctx=4096)\n"
        "msgs = [{'role': 'user', 'content': 'Tell me a long story.'}]\n"
        f"args = dict({args})\n"
        "t = time.perf_counter(); model.chat(msgs, **args); print(time.perf_counter() - t, flush=True)\n"
        "print('again', flush=True)\n"
        "try:\n"
        "    model.chat(msgs, **args)\n"
        "except KeyboardInterrupt:\n"
        "    print('interrupted', flush=True)\n"
    )
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    full = float(proc.stdout.readline())
    assert full > 1.5, full  # long enough to interrupt (a length penalty of 5 keeps the beams going)
    assert proc.stdout.readline().strip() == "again"
    time.sleep(0.3)
    sent = time.perf_counter()
    proc.send_signal(signal.SIGINT)
    assert proc.stdout.readline().strip() == "interrupted"
    waited = time.perf_counter() - sent
    proc.wait(timeout=30)
    assert waited < min(1.0, full / 3), (waited, full)  # one step, not the whole answer


def test_an_abandoned_stream_is_cancelled_by_the_next_call(model):
    conversation = model.conversation()
    long = [{"role": "user", "content": "Tell me a long story."}]
    stream = conversation.chat(long, stream=True, sampling=True, do_sample=True, temperature=2.0, max_new_tokens=2000)
    first = next(stream)  # generating now, and never read again
    started = time.perf_counter()
    short = conversation.chat([{"role": "user", "content": "Hello"}], **GREEDY)
    waited = time.perf_counter() - started
    assert short == model.conversation().chat([{"role": "user", "content": "Hello"}], **GREEDY)
    rest = "".join(stream)  # the abandoned stream ended where it was cancelled
    assert conversation.last_result.stop_reason != "cancelled"  # the latest call's own report
    assert waited < 5, waited  # not the 2000 tokens of the stream (~15 s on the tiny model)
    assert len(model.tokenize(first + rest)) < 1900
