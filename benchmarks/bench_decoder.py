"""Prefill and decode speed of the `full` (Qwen2-7B-sized) synthetic model.

    python benchmarks/bench_decoder.py [--outtype f16] [--threads 2] [--prefill 128] [--decode 16]

The first run writes the synthetic checkpoint and converts it (cached in bench-cache/). Prefill is
timed as one evaluation of `--prefill` tokens into an empty cache; decode as `--decode` single-token
steps after it (greedy sampling included). Medians over `--repeats` runs.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from common import DEFAULT_CACHE, full_model, machine, median_time, peak_rss_mib

import minicpmv


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--outtype", default="f16", choices=["f32", "f16", "bf16"])
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--prefill", type=int, default=128)
    parser.add_argument("--decode", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    path = full_model(args.cache_dir, args.outtype)
    t0 = time.perf_counter()
    model = minicpmv.Model(path, n_ctx=args.prefill + args.decode + 8, n_threads=args.threads)
    load_s = time.perf_counter() - t0

    text = "The history of the city begins with a small settlement on the river. " * 64
    prompt = model.tokenize(text)[: args.prefill]

    def prefill():
        model.reset()
        model.eval(prompt)

    prefill()  # touch every page of the mapping once, so the runs below read from memory
    prefill_s, _ = median_time(prefill, args.repeats)

    def decode():
        model.reset()
        out = model.generate(prompt, max_new_tokens=args.decode, temperature=0.0, repetition_penalty=1.0)
        assert len(out.tokens) == args.decode, "the model stopped early; use another prompt"
        decode.last = out.decode_ms / 1000

    decode_runs = []
    for _ in range(args.repeats):
        decode()
        decode_runs.append(decode.last)
    decode_s = sorted(decode_runs)[len(decode_runs) // 2]

    print(
        f"machine: {machine()}; threads: {args.threads or 'all'}; model: {path.name} "
        f"({model._model.weights_bytes / 2**30:.2f} GiB of weights)"
    )
    print(f"load: {load_s:.2f} s (mmap)")
    print(f"prefill: {args.prefill} tokens in {prefill_s:.2f} s = {args.prefill / prefill_s:.2f} tokens/s")
    print(f"decode: {args.decode} tokens in {decode_s:.2f} s = {args.decode / decode_s:.3f} tokens/s")
    print(f"peak RSS: {peak_rss_mib():.0f} MiB (mapped weights count as they are read)")


if __name__ == "__main__":
    main()
