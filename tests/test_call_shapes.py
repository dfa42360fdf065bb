"""chat() called the ways users copy it: the model card's HF call (image=None, msgs=..., tokenizer=...,
**kwargs) and OpenAI-style content parts (text / image_url data URLs), each giving what the plain call
gives, and every other shape refused by name."""

from __future__ import annotations

import base64
import io
import warnings

import numpy as np
import pytest
from PIL import Image
from test_vision import picture

import minicpmv
from reference.models import load_hf_tokenizer

GREEDY = dict(sampling=False, num_beams=1, repetition_penalty=1.0, max_new_tokens=8)


@pytest.fixture(scope="module")
def model(tiny_gguf_f32, tiny_mmproj_f32):
    return minicpmv.Model(tiny_gguf_f32, mmproj_path=tiny_mmproj_f32, n_ctx=4096, kv_cache_type="f32")


@pytest.fixture(scope="module")
def hf_tokenizer(tiny_ckpt):
    return load_hf_tokenizer(tiny_ckpt)


def data_url(img: Image.Image, fmt: str = "PNG") -> str:
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return f"data:image/{fmt.lower()};base64," + base64.b64encode(buf.getvalue()).decode()


def test_the_model_card_call_answers_as_the_plain_call(model, hf_tokenizer):
    img = picture(640, 480, 30)
    question = "What is in the image?"
    expected = model.chat([{"role": "user", "content": [img, question]}], **GREEDY)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # tokenizer and processor are ignored without a word
        got = model.chat(
            image=None,
            msgs=[{"role": "user", "content": [img, question]}],
            tokenizer=hf_tokenizer,
            processor=object(),
            **GREEDY,
        )
        # The older card form: the image as chat()'s argument, the question as a string.
        older = model.chat(image=img, msgs=[{"role": "user", "content": question}], tokenizer=hf_tokenizer, **GREEDY)
    assert got == expected and older == expected


def test_the_model_card_video_call(model, hf_tokenizer):
    frames = [picture(320, 240, i) for i in range(3)]
    msgs = [{"role": "user", "content": frames + ["Describe the video."]}]
    params = {"use_image_id": False, "max_slice_nums": 2}
    expected = model.chat(msgs, **params, **GREEDY)
    assert model.chat(image=None, msgs=msgs, tokenizer=hf_tokenizer, **params, **GREEDY) == expected


def test_hf_generation_kwargs(model):
    msgs = [{"role": "user", "content": "Name a colour."}]
    # HF: sampling=True with do_sample=False is greedy search with the sampling repetition penalty.
    greedy = model.chat(msgs, sampling=True, do_sample=False, max_new_tokens=8)
    assert greedy == model.chat(msgs, sampling=True, temperature=0.0, max_new_tokens=8)
    assert greedy == model.chat(msgs, sampling=True, do_sample=False, max_new_tokens=8, seed=123)
    # A fixed seed reproduces a sampled answer; no seed draws a fresh one.
    assert model.chat(msgs, seed=5, max_new_tokens=8) == model.chat(msgs, seed=5, max_new_tokens=8)


def test_unknown_keyword_arguments_are_refused_by_name(model):
    msgs = [{"role": "user", "content": "Hi"}]
    with pytest.raises(minicpmv.InvalidArgumentError, match="unknown chat.*argument.*top_q"):
        model.chat(msgs, top_q=0.5)
    with pytest.raises(minicpmv.InvalidArgumentError, match="msgs"):
        model.chat(image=None, tokenizer=None)
    with pytest.raises(minicpmv.UnsupportedError, match="min_new_tokens"):
        model.chat(msgs, min_new_tokens=3)
    with pytest.raises(minicpmv.UnsupportedError, match="vision_hidden_states"):
        model.chat(msgs, vision_hidden_states=[np.zeros(3)])
    with pytest.raises(minicpmv.InvalidArgumentError, match="max_inp_length=5"):
        model.chat(msgs, max_inp_length=5)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_openai_content_parts_equal_plain_parts(model, fmt):
    img = picture(500, 300, 31)
    decoded = Image.open(io.BytesIO(base64.b64decode(data_url(img, fmt).split(",", 1)[1])))
    plain = [{"role": "user", "content": [decoded, "Describe it."]}]
    parts = [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": data_url(img, fmt), "detail": "auto"}},
        {"type": "text", "text": "Describe it."},
    ]}]  # fmt: skip
    assert model.chat_prompt(parts) == model.chat_prompt(plain)
    assert model.chat(parts, **GREEDY) == model.chat(plain, **GREEDY)
    # The image_url as a bare string, and transformers' {"type": "image", "image": ...} form.
    bare = [{"role": "user", "content": [{"type": "image_url", "image_url": data_url(img, fmt)}, "Describe it."]}]
    transformers_form = [{"role": "user", "content": [{"type": "image", "image": decoded}, "Describe it."]}]
    assert model.chat_prompt(bare) == model.chat_prompt(plain) == model.chat_prompt(transformers_form)


def test_an_openai_system_message_is_the_system_prompt(model):
    msgs = [{"role": "user", "content": [{"type": "text", "text": "Hello?"}]}]
    system = [{"role": "system", "content": "Answer in French."}] + msgs
    assert model.chat_prompt(system) == model.chat_prompt(msgs, system_prompt="Answer in French.")
    with pytest.raises(minicpmv.InvalidArgumentError, match="once"):
        model.chat_prompt(system, system_prompt="Answer in German.")


def test_local_image_paths_in_image_url(model, tmp_path):
    img = picture(200, 100, 32)
    path = tmp_path / "p.png"
    img.save(path)
    plain = model.chat_prompt([{"role": "user", "content": [img, "?"]}])
    for url in (str(path), f"file://{path}"):
        assert (
            model.chat_prompt([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}}, "?"]}])
            == plain
        )


@pytest.mark.parametrize("part,error,match", [
    ({"type": "image_url", "image_url": {"url": "data:image/png;base64,@@@not base64@@@"}},
     minicpmv.InvalidArgumentError, "base64"),
    ({"type": "image_url", "image_url": {"url": "data:text/plain;base64,aGVsbG8="}}, minicpmv.InvalidArgumentError,
     "not an image"),
    ({"type": "image_url", "image_url": {"url": "data:image/png;base64,aGVsbG8="}}, minicpmv.InvalidArgumentError,
     "not a readable image"),
    ({"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}, minicpmv.UnsupportedError, "remote"),
    ({"type": "image_url", "image_url": {"url": "/nonexistent/cat.png"}}, minicpmv.InvalidArgumentError,
     "not a readable image"),
    ({"type": "image_url", "image_url": 5}, minicpmv.InvalidArgumentError, "image_url must be"),
    ({"type": "text", "text": 5}, minicpmv.InvalidArgumentError, "string 'text'"),
    ({"type": "audio", "audio": "x"}, minicpmv.InvalidArgumentError, "unknown content part type 'audio'"),
    ({"text": "no type"}, minicpmv.InvalidArgumentError, "unknown content part type None"),
    (3.5, minicpmv.InvalidArgumentError, "got float"),
])  # fmt: skip
def test_bad_parts_are_named(model, part, error, match):
    with pytest.raises(error, match=match):
        model.chat([{"role": "user", "content": [part, "?"]}], max_new_tokens=1)


@pytest.mark.parametrize("content", [{"text": "a dict"}, {"a", "set"}, 5, None])
def test_content_that_is_neither_text_nor_a_list_is_refused(model, content):
    with pytest.raises(minicpmv.InvalidArgumentError, match="content must be a string or a list"):
        model.chat([{"role": "user", "content": content}], max_new_tokens=1)


@pytest.mark.parametrize(
    "name,value",
    [("temperature", "hot"), ("top_k", 2.5), ("num_beams", "3"), ("seed", "x"), ("seed", -1), ("seed", 2**70)],
)
def test_generation_options_of_the_wrong_type_are_named(model, name, value):
    sampling = name != "num_beams"
    with pytest.raises(minicpmv.InvalidArgumentError, match=name):
        model.chat([{"role": "user", "content": "Hi"}], sampling=sampling, max_new_tokens=1, **{name: value})


def test_none_options_take_the_defaults(model):
    msgs = [{"role": "user", "content": "Hi"}]
    expected = model.chat(msgs, seed=3, max_new_tokens=4)
    assert model.chat(msgs, seed=3, max_new_tokens=4, temperature=None, repetition_penalty=None, top_p=None) == expected


@pytest.mark.parametrize("where", ["content", "part", "system"])
def test_text_that_is_not_unicode_is_refused(model, where):
    bad = "half a pair: \ud800"
    msgs = {
        "content": [{"role": "user", "content": bad}],
        "part": [{"role": "user", "content": [{"type": "text", "text": bad}]}],
        "system": [{"role": "system", "content": bad}, {"role": "user", "content": "Hi"}],
    }[where]
    with pytest.raises(minicpmv.InvalidArgumentError, match="not valid Unicode"):
        model.chat(msgs, max_new_tokens=1)
