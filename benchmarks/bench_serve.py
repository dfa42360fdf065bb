"""Total decode speed of `minicpmv serve` with 1, 2 and 4 concurrent streams, beside llama-cpp-python's
OpenAI server on the same files (the `full` synthetic Q4_K_M + f16 vision files of bench-cache/, the
same threads), both as server processes answering the OpenAI API on 127.0.0.1.

    python benchmarks/bench_serve.py [--streams 1,2,4] [--tokens 64] [--threads 2]
                                     [--llama-cpp-path /work/llama-cpp-python]

Each stream asks a different short text question (temperature 0, max_tokens). Two rows per count:
- decode: the streams' pieces (about one per token) that arrive while all of them are decoding (from
  the last stream's first piece to the first stream's last), over that window; where the streams ran
  one after another (llama-cpp-python's server serves one request at a time) there is no such window,
  and the row is the pieces over the sum of each stream's own decoding time.
- end to end: every piece over the wall time from sending the requests to the last piece (prompts
  included).
llama-cpp-python is installed apart from the project (see benchmarks/compare.py); its server also
needs `starlette-context` and `pydantic-settings` in that directory. Without it the llama.cpp rows are
left out.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from common import DEFAULT_CACHE, full_mmproj, machine  # noqa: E402
from compare import quantized_model  # noqa: E402


def stream(url: str, question: str, tokens: int) -> list[float]:
    """Arrival times of the content pieces of one streamed request."""
    body = {"model": "bench", "stream": True, "temperature": 0, "max_tokens": tokens,
            "messages": [{"role": "user", "content": question}]}  # fmt: skip
    request = urllib.request.Request(f"{url}/v1/chat/completions", json.dumps(body).encode(),
                                     {"Content-Type": "application/json"})  # fmt: skip
    times = []
    with urllib.request.urlopen(request, timeout=3600) as response:
        for line in response:
            line = line.decode().strip()
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            delta = json.loads(line[6:])["choices"]
            if delta and delta[0]["delta"].get("content"):
                times.append(time.perf_counter())
    return times


def rates(url: str, n: int, tokens: int) -> tuple[float, float, int]:
    """(decode tokens/s in all, end-to-end tokens/s, pieces) of n concurrent streams."""
    questions = [f"Write a long story about the number {i}." for i in range(n)]
    start = time.perf_counter()
    with ThreadPoolExecutor(n) as pool:
        runs = [r for r in pool.map(stream, [url] * n, questions, [tokens] * n) if len(r) > 1]
    total = sum(len(r) for r in runs)
    lo, hi = max(r[0] for r in runs), min(r[-1] for r in runs)
    if n > 1 and hi > lo:
        decode = sum(sum(lo <= t <= hi for t in r) for r in runs) / (hi - lo)
    else:
        decode = sum(len(r) - 1 for r in runs) / sum(r[-1] - r[0] for r in runs)
    return decode, total / (max(r[-1] for r in runs) - start), total


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def server(command: list[str], port: int, env: dict | None = None):
    """A server process on 127.0.0.1:port, ready once GET /v1/models answers."""
    log = tempfile.TemporaryFile("w+")  # a pipe nobody reads would stop the server once full
    process = subprocess.Popen(command, env={**os.environ, **(env or {})}, stdout=log, stderr=log, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        while True:
            if process.poll() is not None:
                log.seek(0)
                raise RuntimeError(f"{command[2]} exited: {log.read()[-2000:]}")
            try:
                urllib.request.urlopen(f"{url}/v1/models", timeout=1)
                break
            except OSError:
                time.sleep(0.5)
        yield url
    finally:
        process.terminate()
        process.wait()
        log.close()


def ours(llm: Path, mmproj: Path, counts: list[int], args) -> dict[int, tuple]:
    out = {}
    for n in counts:
        port = free_port()
        command = [sys.executable, "-m", "minicpmv.cli", "serve", "-m", str(llm), "--mmproj", str(mmproj),
                   "--parallel", str(n), "-t", str(args.threads), "-c", "1024", "--alias", "bench", "--port", str(port)]  # fmt: skip
        with server(command, port) as url:
            out[n] = rates(url, n, args.tokens)
            health = json.load(urllib.request.urlopen(f"{url}/health"))
        print(f"ours, {n} stream(s): decode {out[n][0]:.2f} tok/s in all, end to end {out[n][1]:.2f} "
              f"({health['decode_steps']} steps in {health['decode_batches']} graphs)", flush=True)  # fmt: skip
    return out


def llama_cpp(llm: Path, mmproj: Path, counts: list[int], args) -> dict[int, tuple]:
    if not (args.llama_cpp_path / "llama_cpp" / "server").is_dir():
        print(f"llama-cpp-python's server not found under {args.llama_cpp_path}: its rows are left out")
        return {}
    port = free_port()
    # interrupt_requests off: by default a new request cuts the running one short instead of waiting.
    command = [sys.executable, "-m", "llama_cpp.server", "--model", str(llm), "--clip_model_path", str(mmproj),
               "--chat_format", "minicpm-v-2.6", "--n_threads", str(args.threads), "--n_threads_batch",
               str(args.threads), "--n_ctx", "1024", "--interrupt_requests", "False", "--host", "127.0.0.1",
               "--port", str(port)]  # fmt: skip
    out = {}
    with server(command, port, {"PYTHONPATH": str(args.llama_cpp_path)}) as url:
        for n in counts:
            out[n] = rates(url, n, args.tokens)
            print(f"llama.cpp, {n} stream(s): decode {out[n][0]:.2f} tok/s, end to end {out[n][1]:.2f}", flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--streams", default="1,2,4")
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--llama-cpp-path", type=Path, default=Path("/work/llama-cpp-python"))
    args = parser.parse_args()

    counts = [int(s) for s in args.streams.split(",")]
    llm, mmproj = quantized_model(args.cache_dir, "Q4_K_M"), full_mmproj(args.cache_dir, "f16")
    print(f"{machine()}; {llm.name} + {mmproj.name}; {args.threads} threads; {args.tokens} tokens per stream")
    results = {"ours": ours(llm, mmproj, counts, args), "llama.cpp": llama_cpp(llm, mmproj, counts, args)}
    print("| streams | engine | decode tok/s in all | × 1 stream | end to end tok/s | pieces |")
    print("|---|---|---|---|---|---|")
    for n in counts:
        for engine, rows in results.items():
            if n in rows:
                decode, e2e, pieces = rows[n]
                print(f"| {n} | {engine} | {decode:.2f} | {decode / rows[counts[0]][0]:.2f}× | {e2e:.2f} | {pieces} |")
    if results["llama.cpp"]:
        for n in counts:
            print(f"{n} stream(s): ours / llama.cpp decode = {results['ours'][n][0] / results['llama.cpp'][n][0]:.2f}×")


if __name__ == "__main__":
    main()
