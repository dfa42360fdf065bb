"""Soak of `minicpmv serve`: several clients at once for a bounded time, on 127.0.0.1 only.

    python tools/soak.py [--minutes 10] [--clients 8] [--max-requests 20000] [--parallel 4] [--threads 2]
                         [-m LLM.gguf --mmproj MMPROJ.gguf]

Without -m: the tiny synthetic model (written and converted into a temporary folder, ~30 s).
Each client loops over a seeded random mix until the time or the request count runs out:
- text, one image, and a second turn about the first turn's image, each streamed or not (greedy), whose
  answers must equal the answers the server gave to the same messages one at a time before the soak
  (a different answer is cross-talk or a corrupted cache);
- a stream the client drops after its first pieces (the slot must be freed at once);
- a bad request from a list (malformed JSON, unknown model, broken base64, text as an image, bad
  parameter values, an oversized body), which must get a 4xx answer in the OpenAI error shape.
The server's resident memory is sampled every 10 s; the report gives it per minute and its growth
after the first minute (warm-up). Exits 1 on any failure.
"""

from __future__ import annotations

import argparse
import base64
import collections
import http.client
import io
import json
import random
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from PIL import Image

TOKENS = 12
QUESTIONS = ["What is the capital of France?", "Write a haiku about rain.", "List three prime numbers.",
             "Describe a cat in one sentence.", "Why is the sky blue?", "Count from one to five."]  # fmt: skip
IMAGE_QUESTIONS = ["What is in the image?", "Which colours do you see?"]
FOLLOW_UP = "And what is in its corners?"


def tiny_model(folder: Path) -> tuple[Path, Path]:
    from minicpmv.convert.hf_to_gguf import convert_llm
    from minicpmv.convert.mmproj import convert_mmproj
    from minicpmv.convert.synthetic import write_checkpoint

    ckpt = write_checkpoint(folder / "ckpt", preset="tiny", seed=0)
    llm = convert_llm(ckpt, folder / "ggml-model-F16.gguf", outtype="f16", progress=False)
    return llm, convert_mmproj(ckpt, folder / "mmproj-model-f16.gguf", outtype="f16", progress=False)


def picture_url(seed: int) -> str:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:120, 0:180]
    pixels = np.stack([(x * (1 + seed)) % 256, (y * 3) % 256, rng.integers(0, 256, (120, 180))], -1)
    buf = io.BytesIO()
    Image.fromarray(pixels.astype(np.uint8)).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


IMAGES = [picture_url(s) for s in range(3)]


def text_turn(i: int) -> list[dict]:
    return [{"role": "user", "content": QUESTIONS[i]}]


def image_turn(i: int, q: int) -> list[dict]:
    return [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": IMAGES[i]}},
                                         {"type": "text", "text": IMAGE_QUESTIONS[q]}]}]  # fmt: skip


class Server:
    def __init__(self, port: int):
        self.port = port

    def post(self, body: bytes, timeout: float = 300) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.request("POST", "/v1/chat/completions", body=body, headers={"Content-Type": "application/json"})
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()

    def chat(self, messages: list[dict], stream: bool) -> str:
        body = {"model": "soak", "messages": messages, "temperature": 0, "max_tokens": TOKENS, "stream": stream}
        status, data = self.post(json.dumps(body).encode())
        if status != 200:
            raise AssertionError(f"status {status}: {data[:300]!r}")
        if not stream:
            return json.loads(data)["choices"][0]["message"]["content"]
        text, done = [], False
        for line in data.decode().splitlines():
            if line == "data: [DONE]":
                done = True
            elif line.startswith("data: "):
                choices = json.loads(line[6:])["choices"]
                if choices:
                    text.append(choices[0]["delta"].get("content") or "")
        if not done:
            raise AssertionError("the stream did not end with [DONE]")
        return "".join(text)

    def drop_stream(self) -> None:
        """Starts a long stream and closes the connection after its first pieces."""
        body = {"model": "soak", "messages": text_turn(0), "max_tokens": 200, "stream": True}
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=300)
        conn.request(
            "POST", "/v1/chat/completions", body=json.dumps(body), headers={"Content-Type": "application/json"}
        )
        response = conn.getresponse()
        if response.status != 200:
            raise AssertionError(f"status {response.status}")
        for _ in range(3):
            response.readline()
        conn.sock.shutdown(socket.SHUT_RDWR)
        conn.close()


def bad_requests() -> list[tuple[str, bytes]]:
    good = {"model": "soak", "messages": text_turn(1), "max_tokens": 4}

    def variant(**changes) -> bytes:
        return json.dumps({**good, **changes}).encode()

    broken = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,!!!"}}]}]
    text_image = [{"role": "user", "content": [{"type": "image_url", "image_url": {
        "url": "data:image/png;base64," + base64.b64encode(b"just some text").decode()}}]}]  # fmt: skip
    return [
        ("malformed JSON", b'{"model": "soak", "messages": ['),
        ("unknown model", variant(model="gpt-4")),
        ("broken base64", variant(messages=broken)),
        ("text as an image", variant(messages=text_image)),
        ("negative temperature", variant(temperature=-1)),
        ("top_p 2", variant(top_p=2)),
        ("max_tokens 0", variant(max_tokens=0)),
        ("n=3", variant(n=3)),
        ("messages not a list", variant(messages="hello")),
        (
            "a file path",
            variant(
                messages=[
                    {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "file:///etc/passwd"}}]}
                ]
            ),
        ),  # fmt: skip
        ("oversized body", b'{"x": "' + b"a" * (9 << 20) + b'"}'),
    ]


class Soak:
    def __init__(self, server: Server, deadline: float, max_requests: int):
        self.server, self.deadline, self.max_requests = server, deadline, max_requests
        self.lock = threading.Lock()
        self.counts: collections.Counter = collections.Counter()
        self.failures: list[str] = []
        self.expected: dict[str, str] = {}
        self.bad = bad_requests()

    def cases(self) -> dict[str, list[dict]]:
        """The checked conversations by name; the follow-ups need the first turns' answers."""
        out = {f"text {i}": text_turn(i) for i in range(len(QUESTIONS))}
        for i in range(len(IMAGES)):
            for q in range(len(IMAGE_QUESTIONS)):
                out[f"image {i}/{q}"] = image_turn(i, q)
        return out

    def follow_up(self, name: str) -> list[dict]:
        msgs = self.cases()[name]
        return msgs + [{"role": "assistant", "content": self.expected[name]}, {"role": "user", "content": FOLLOW_UP}]

    def references(self) -> None:
        for name, msgs in self.cases().items():
            self.expected[name] = self.server.chat(msgs, stream=False)
        for name in [n for n in self.expected if n.startswith("image")]:
            self.expected[name + " + follow-up"] = self.server.chat(self.follow_up(name), stream=False)

    def take(self) -> bool:
        with self.lock:
            if time.monotonic() >= self.deadline or sum(self.counts.values()) >= self.max_requests:
                return False
            return True

    def client(self, seed: int) -> None:
        rng = random.Random(seed)
        names = list(self.expected)
        while self.take():
            kind = rng.choices(["checked", "drop", "bad"], weights=[8, 1, 2])[0]
            try:
                if kind == "checked":
                    name = rng.choice(names)
                    msgs = (
                        self.follow_up(name.removesuffix(" + follow-up")) if "follow-up" in name else self.cases()[name]
                    )
                    stream = rng.random() < 0.5
                    got = self.server.chat(msgs, stream)
                    if got != self.expected[name]:
                        raise AssertionError(f"{name}: {got!r} instead of {self.expected[name]!r}")
                    kind = "streamed" if stream else "plain"
                elif kind == "drop":
                    self.server.drop_stream()
                else:
                    what, body = rng.choice(self.bad)
                    status, data = self.server.post(body)
                    error = json.loads(data).get("error", {}) if data.startswith(b"{") else {}
                    if not 400 <= status < 500 or not error.get("message"):
                        raise AssertionError(f"bad request ({what}): status {status}, {data[:200]!r}")
                with self.lock:
                    self.counts[kind] += 1
            except Exception as exc:  # noqa: BLE001 - every failure is reported, none stops the soak
                with self.lock:
                    self.counts["failed"] += 1
                    self.failures.append(f"client {seed}, {kind}: {exc}")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-m", "--model", type=Path)
    parser.add_argument("--mmproj", type=Path)
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--max-requests", type=int, default=20000)
    parser.add_argument("--parallel", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        llm, mmproj = (args.model, args.mmproj) if args.model else tiny_model(Path(tmp))
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        log = open(Path(tmp) / "server.log", "w+")  # noqa: SIM115 - read back on failure
        command = [sys.executable, "-m", "minicpmv.cli", "serve", "-m", str(llm), "--mmproj", str(mmproj), "--alias",
                   "soak", "--parallel", str(args.parallel), "-t", str(args.threads), "-c", "2048", "--port", str(port),
                   "--max-body-bytes", str(8 << 20), "--max-queue", str(4 * args.clients)]  # fmt: skip
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        try:
            return run(args, Server(port), process, log)
        finally:
            process.terminate()
            process.wait(timeout=30)
            log.close()


def run(args, server: Server, process: subprocess.Popen, log) -> int:
    start = time.monotonic()
    while True:
        if process.poll() is not None or time.monotonic() - start > 120:
            log.seek(0)
            print(f"the server did not start:\n{log.read()[-3000:]}")
            return 1
        try:
            socket.create_connection(("127.0.0.1", server.port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.5)
    soak = Soak(server, 0, args.max_requests)
    soak.references()
    print(f"{len(soak.expected)} reference answers; soaking {args.clients} clients for {args.minutes:g} min "
          f"(at most {args.max_requests} requests), server --parallel {args.parallel} -t {args.threads}", flush=True)  # fmt: skip
    t0 = time.monotonic()
    soak.deadline = t0 + args.minutes * 60
    threads = [threading.Thread(target=soak.client, args=(seed,)) for seed in range(args.clients)]
    for t in threads:
        t.start()
    samples = []
    while any(t.is_alive() for t in threads):
        if process.poll() is not None:
            print(f"the server died (exit {process.returncode})")
            return 1
        samples.append((time.monotonic() - t0, rss_mb(process.pid), sum(soak.counts.values())))
        time.sleep(10)
    for t in threads:
        t.join()
    print("| minute | server RSS MB | requests so far |\n|---|---|---|")
    for minute in range(int(args.minutes) + 1):
        at = [s for s in samples if minute * 60 <= s[0] < (minute + 1) * 60]
        if at:
            print(f"| {minute} | {at[-1][1]:.0f} | {at[-1][2]} |")
    warm = [s[1] for s in samples if s[0] >= 60] or [s[1] for s in samples]
    print(f"RSS after the first minute: {min(warm):.0f} to {max(warm):.0f} MB "
          f"({100 * (warm[-1] / warm[0] - 1):+.1f} % from its first to its last sample)")  # fmt: skip
    print("requests:", dict(soak.counts))
    alive = process.poll() is None and server.chat(text_turn(2), stream=False) == soak.expected["text 2"]
    for failure in soak.failures[:20]:
        print("FAILED:", failure)
    if soak.failures or not alive:
        print(f"{len(soak.failures)} failures; server still answering: {alive}")
        return 1
    print("no failure; the server still answers as before")
    return 0


if __name__ == "__main__":
    sys.exit(main())
