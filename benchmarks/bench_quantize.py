"""Quantizing the `full` (Qwen2-7B-sized) synthetic model: F16 → Q4_K_M by default.

    python benchmarks/bench_quantize.py [--type Q4_K_M] [--threads 2]

Reports wall time, peak resident memory (which must stay far below the model's size: the source is
mapped one tensor at a time and each result written before the next), output size and bits per weight.
The F16 file is built once in bench-cache/ (see common.py); the output is written there too.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from common import DEFAULT_CACHE, full_model, machine, peak_rss_mib

from minicpmv.convert.gguf_quantize import variant_file_name, write_variants


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--type", default="Q4_K_M")
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args()

    source_path = full_model(args.cache_dir, "f16")
    out = args.cache_dir / variant_file_name(args.type)
    t0 = time.perf_counter()
    [(path, plan)] = write_variants(source_path, {args.type: out}, progress=True, n_threads=args.threads)
    wall_s = time.perf_counter() - t0

    print(f"machine: {machine()}; threads: {args.threads or 'all'}")
    print(f"input: {source_path.name}, {source_path.stat().st_size / 1e9:.2f} GB")
    print(plan.summary(path))
    print(f"wall time: {wall_s:.1f} s")
    print(f"peak RSS: {peak_rss_mib():.0f} MiB")


if __name__ == "__main__":
    main()
