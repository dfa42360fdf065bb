"""`minicpmv serve` through the official openai client: the server (python/minicpmv/server.py) runs for
real on 127.0.0.1 in this process, over the tiny model; replies must equal model.chat() on the same
inputs (greedy), alone and with 8 clients at once, and bad requests get OpenAI-shaped 4xx errors."""

from __future__ import annotations

import base64
import contextlib
import http.client
import io
import json
import os
import socket
import threading
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor

import pytest
from test_vision import make_video, picture

import minicpmv
from minicpmv.server import Limits, create_app

openai = pytest.importorskip("openai")
KEY = "test-key"
NAME = "minicpmv-tiny"
MAX = 8


@pytest.fixture(scope="module")
def model(tiny_gguf_f32, tiny_mmproj_f32):
    return minicpmv.Model(tiny_gguf_f32, mmproj_path=tiny_mmproj_f32, n_ctx=2048)


@pytest.fixture(scope="module")
def allowed(tmp_path_factory):
    root = tmp_path_factory.mktemp("allowed")
    picture(300, 200, 60).save(root / "inside.png")
    outside = tmp_path_factory.mktemp("outside")
    picture(300, 200, 61).save(outside / "secret.png")
    os.symlink(outside / "secret.png", root / "link.png")
    return root


@contextlib.contextmanager
def running(app):
    """The app served by uvicorn on 127.0.0.1 (a free port) in a thread; its base URL."""
    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    srv = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=srv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not srv.started and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        srv.should_exit = True
        thread.join(timeout=10)


@pytest.fixture(scope="module")
def server(model, allowed):
    limits = Limits(max_body_bytes=4 << 20, max_queue=16)
    with running(create_app(model, NAME, parallel=2, api_key=KEY, allow_files=allowed, limits=limits)) as url:
        yield url


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=f"{server}/v1", api_key=KEY, max_retries=0)


def data_url(img, fmt="PNG") -> str:
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return f"data:image/{fmt.lower()};base64," + base64.b64encode(buf.getvalue()).decode()


def image_part(img) -> dict:
    return {"type": "image_url", "image_url": {"url": data_url(img)}}


def greedy(model, msgs) -> str:
    # The server's sampling with temperature 0: greedy after HF's sampling penalty (1.05), on a new
    # conversation of one thread as each of the server's two slots has. (With two threads, what the
    # cache held before can move a near-tie of this random tiny model: a known issue, #14.)
    return model.conversation(n_threads=1).chat(msgs, temperature=0.0, max_new_tokens=MAX)


def ask(client, messages, **kwargs):
    return client.chat.completions.create(model=NAME, messages=messages, temperature=0, max_tokens=MAX, **kwargs)


def request(server: str, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
    """(status, parsed JSON) of one plain HTTP request."""
    url = urllib.parse.urlsplit(server)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=120)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, json.loads(response.read() or b"null")
    finally:
        conn.close()


def health(server) -> dict:
    return request(server, "GET", "/health")[1]


def test_models_and_health(client, server):
    assert [m.id for m in client.models.list()] == [NAME]
    state = health(server)
    assert state["status"] == "ok" and state["slots"] == 2


def test_text_one_image_two_images(client, model):
    cases = [
        [{"role": "user", "content": "What is the capital of France?"}],
        [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "Hello!"}],
        [{"role": "user", "content": [image_part(picture(640, 480, 62)), {"type": "text", "text": "What is this?"}]}],
        [{"role": "user", "content": [image_part(picture(500, 300, 63)), image_part(picture(300, 500, 64)),
                                      {"type": "text", "text": "Compare them."}]}],
    ]  # fmt: skip
    for messages in cases:
        response = ask(client, messages)
        assert response.choices[0].message.content == greedy(model, messages)
        assert response.choices[0].finish_reason in ("stop", "length")
        assert response.usage.completion_tokens >= 1 and response.usage.prompt_tokens > 10


def test_streaming_equals_the_whole_reply(client, model):
    messages = [
        {"role": "user", "content": [image_part(picture(400, 400, 65)), {"type": "text", "text": "Describe it."}]}
    ]
    chunks = list(ask(client, messages, stream=True, stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == greedy(model, messages)
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens >= 1
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] in ("stop", "length")


def test_beam_search_and_timings_extensions(client, model):
    messages = [{"role": "user", "content": "Name three colours."}]
    reply = client.chat.completions.create(model=NAME, messages=messages, max_tokens=MAX, extra_body={"num_beams": 3})
    expected = model.conversation(n_threads=1).chat(messages, sampling=False, num_beams=3, max_new_tokens=MAX)
    assert reply.choices[0].message.content == expected  # HF chat(sampling=False)
    timings = reply.model_extra["timings"]
    assert timings["predicted_n"] == reply.usage.completion_tokens
    assert timings["prompt_n"] + timings["cache_n"] == reply.usage.prompt_tokens
    assert timings["predicted_ms"] > 0 and timings["prompt_per_second"] > 0
    last = [c for c in ask(client, messages, stream=True) if c.choices][-1]
    assert last.choices[0].finish_reason and last.model_extra["timings"]["predicted_n"] >= 1


def test_video(client, model, tmp_path):
    path = tmp_path / "clip.mp4"
    make_video(path, seconds=3, size=(320, 240))
    url = "data:video/mp4;base64," + base64.b64encode(path.read_bytes()).decode()
    messages = [
        {
            "role": "user",
            "content": [
                {"type": "video_url", "video_url": {"url": url}},
                {"type": "text", "text": "Describe the video."},
            ],
        }
    ]
    frames = minicpmv.video.load_frames(path)
    expected = greedy(model, [{"role": "user", "content": [{"type": "video", "video": frames}, "Describe the video."]}])
    assert ask(client, messages).choices[0].message.content == expected


def test_a_second_turn_reuses_the_first_turns_image(client, model):
    first = [{"role": "user", "content": [image_part(picture(800, 600, 66)), {"type": "text", "text": "What is it?"}]}]
    r1 = ask(client, first)
    second = first + [{"role": "assistant", "content": r1.choices[0].message.content},
                      {"role": "user", "content": "And its colours?"}]  # fmt: skip
    r2 = ask(client, second)
    assert r2.choices[0].message.content == greedy(model, second)
    # The slot that answered the first turn took the second: the image's positions came from its cache.
    assert r2.usage.prompt_tokens_details.cached_tokens >= r1.usage.prompt_tokens - 1


def test_stop_strings_and_local_files(client, model, allowed):
    messages = [{"role": "user", "content": "Tell me a story."}]
    full = greedy(model, messages)
    stop = full[3:6] if len(full) > 6 else None
    if stop:
        cut = ask(client, messages, stop=[stop]).choices[0].message.content
        assert cut == full[: full.find(stop)]
    local = [
        {
            "role": "user",
            "content": [{"type": "image_url", "image_url": {"url": "inside.png"}}, {"type": "text", "text": "?"}],
        }
    ]
    from PIL import Image

    expected = greedy(model, [{"role": "user", "content": [Image.open(allowed / "inside.png"), "?"]}])
    assert ask(client, local).choices[0].message.content == expected


def test_eight_clients_at_once_each_get_their_own_answer(model):
    # Eight slots, new: what each answers cannot depend on what its cache held before (#14).
    with running(create_app(model, NAME, parallel=8, api_key=KEY)) as server:
        eight_clients(openai.OpenAI(base_url=f"{server}/v1", api_key=KEY, max_retries=0), model, server)


def eight_clients(client, model, server):
    prompts = [f"Question number {i}: what comes after {i}?" for i in range(8)]
    expected = [greedy(model, [{"role": "user", "content": p}]) for p in prompts]

    def run(i):
        if i == 3:  # a client that leaves mid-stream
            url = urllib.parse.urlsplit(server)
            conn = http.client.HTTPConnection(url.hostname, url.port, timeout=120)
            body = {
                "model": NAME,
                "stream": True,
                "max_tokens": 200,
                "messages": [{"role": "user", "content": "A long story."}],
            }
            conn.request(
                "POST", "/v1/chat/completions", body=json.dumps(body), headers={"Authorization": f"Bearer {KEY}"}
            )
            response = conn.getresponse()
            for _ in range(3):
                response.readline()
            conn.sock.close()  # gone without a word
            conn.close()
            return None
        return ask(client, [{"role": "user", "content": prompts[i]}]).choices[0].message.content

    before = health(server)
    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(run, range(8)))
    assert [g for i, g in enumerate(got) if i != 3] == [e for i, e in enumerate(expected) if i != 3]
    after = health(server)
    steps, batches = (after[k] - before[k] for k in ("decode_steps", "decode_batches"))
    assert batches < steps / 2, (steps, batches)  # the clients' decode steps ran in shared graphs
    deadline = time.monotonic() + 60  # the departed client's slot comes back
    while health(server)["busy"] and time.monotonic() < deadline:
        time.sleep(0.2)
    assert health(server)["busy"] == 0


def post(server, body, key=KEY, raw: bytes | None = None):
    headers = {"Content-Type": "application/json"}
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    return request(
        server, "POST", "/v1/chat/completions", raw if raw is not None else json.dumps(body).encode(), headers
    )


def text_body(**extra):
    return {"model": NAME, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2, **extra}


def with_image(url):
    return {
        "model": NAME,
        "max_tokens": 2,
        "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}}]}],
    }


@pytest.mark.parametrize(
    "name,body,raw,key,status,match",
    [
        ("malformed JSON", None, b"{not json", KEY, 400, "not valid JSON"),
        ("not an object", None, b"[1, 2]", KEY, 400, "JSON object"),
        ("unknown model", text_body(model="gpt-4o"), None, KEY, 404, "does not exist"),
        ("no messages", {"model": NAME, "messages": []}, None, KEY, 400, "messages"),
        ("bad role", {"model": NAME, "messages": [{"role": "tool", "content": "x"}]}, None, KEY, 400, "role"),
        ("broken base64", with_image("data:image/png;base64,@@@@"), None, KEY, 400, "base64"),
        ("not an image", with_image("data:image/png;base64," + base64.b64encode(b"hello").decode()), None, KEY, 400, "not a readable image"),
        ("text as image", with_image("data:text/plain;base64,aGk="), None, KEY, 400, "not image"),
        ("too many tokens", text_body(max_tokens=10**6), None, KEY, 400, "max_tokens"),
        ("bad temperature", text_body(temperature=7), None, KEY, 400, "temperature"),
        ("bad top_p", text_body(top_p="high"), None, KEY, 400, "top_p"),
        ("n > 1", text_body(n=2), None, KEY, 400, "n=1"),
        ("bad stop", text_body(stop=[1]), None, KEY, 400, "stop"),
        ("outside allow-files", with_image("/etc/passwd"), None, KEY, 403, "outside"),
        ("dot-dot", with_image("../outside0/secret.png"), None, KEY, 403, "outside"),
        ("symlink out", with_image("link.png"), None, KEY, 403, "outside"),
        ("remote URL", with_image("http://127.0.0.1:9/x.png"), None, KEY, 400, "remote URLs are off"),
        ("no key", text_body(), None, None, 401, "API key"),
        ("wrong key", text_body(), None, "nope", 401, "API key"),
        ("stream_options not an object", text_body(stream=True, stream_options=[1]), None, KEY, 400, "stream_options"),
        ("lone surrogate", {"model": NAME, "messages": [{"role": "user", "content": "\ud800"}]}, None, KEY, 400, "Unicode"),
        ("oversized body", text_body(pad="x" * (5 << 20)), None, KEY, 413, "larger than"),
    ],
)  # fmt: skip
def test_bad_requests_get_openai_errors(server, name, body, raw, key, status, match):
    code, answer = post(server, body, key=key, raw=raw)
    assert code == status, (name, answer)
    error = answer["error"]
    assert match in error["message"] and {"message", "type", "param", "code"} <= set(error), (name, error)
    assert health(server)["status"] == "ok"  # still serving


def test_the_openai_client_sees_the_errors(client):
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "Hi"}])
    bad = openai.OpenAI(base_url=client.base_url, api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.chat.completions.create(model=NAME, messages=[{"role": "user", "content": "Hi"}])
