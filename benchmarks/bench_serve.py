"""Total decode speed of `minicpmv serve` with 1, 2 and 4 concurrent streams (the `full` synthetic
Q4_K_M + f16 vision files of bench-cache/, 2 threads in all), through the OpenAI API on 127.0.0.1.

    python benchmarks/bench_serve.py [--streams 1,2,4] [--tokens 64] [--threads 2]

Each stream asks a different short text question with temperature 0 and max_tokens; the row is the
sum of the streams' generated tokens over the wall time from the first token of any stream to the
last (prefill excluded), beside one stream's rate.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from common import DEFAULT_CACHE, full_mmproj, machine  # noqa: E402
from compare import quantized_model  # noqa: E402


def stream(url: str, question: str, tokens: int) -> tuple[float, float, int]:
    """(time of the first content, time of the last, content chunks) of one streamed request."""
    body = {"model": "bench", "stream": True, "temperature": 0, "max_tokens": tokens,
            "messages": [{"role": "user", "content": question}]}  # fmt: skip
    request = urllib.request.Request(f"{url}/v1/chat/completions", json.dumps(body).encode(),
                                     {"Content-Type": "application/json"})  # fmt: skip
    first = last = None
    n = 0
    with urllib.request.urlopen(request, timeout=3600) as response:
        for line in response:
            line = line.decode().strip()
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            delta = json.loads(line[6:])["choices"]
            if delta and delta[0]["delta"].get("content"):
                last = time.perf_counter()
                first = first or last
                n += 1
    return first, last, n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--streams", default="1,2,4")
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    import uvicorn

    import minicpmv
    from minicpmv.server import create_app

    counts = [int(s) for s in args.streams.split(",")]
    llm, mmproj = quantized_model(args.cache_dir, "Q4_K_M"), full_mmproj(args.cache_dir, "f16")
    model = minicpmv.Model(llm, mmproj_path=mmproj, n_ctx=1024, n_threads=args.threads)
    print(f"{machine()}; {llm.name} + {mmproj.name}; {args.threads} threads in all; {args.tokens} tokens per stream")
    rates = {}
    for n in counts:
        app = create_app(model, "bench", parallel=n, n_threads=args.threads)
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        while not server.started:
            time.sleep(0.05)
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        questions = [f"Write a long story about the number {i}." for i in range(n)]
        with ThreadPoolExecutor(n) as pool:
            results = list(pool.map(stream, [url] * n, questions, [args.tokens] * n))
        server.should_exit = True
        thread.join()
        start, end = min(r[0] for r in results), max(r[1] for r in results)
        # Chunks are pieces of text, about one per token; the server's usage counts exactly but the
        # chunk count is what a streaming client sees arrive.
        total = sum(r[2] for r in results)
        rates[n] = total / (end - start)
        print(f"{n} stream(s): {total} pieces in {end - start:.1f} s = {rates[n]:.2f} tokens/s in all"
              + (f" ({rates[n] / rates[counts[0]]:.2f}x {counts[0]} stream)" if n != counts[0] else ""))  # fmt: skip


if __name__ == "__main__":
    main()
