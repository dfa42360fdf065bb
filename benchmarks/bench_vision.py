"""Vision encode time and time to first token of the `full` (MiniCPM-V 2.6-sized) synthetic model.

    python benchmarks/bench_vision.py [--threads 2] [--repeats 2] [--ttft-size 448]

Encode: the C++ preprocessing plus one batched SigLIP + resampler pass for a 448×448 image (1 slice)
and a 1344×1344 image (overview + 3×3 = 10 slices). Time to first token: chat() with one image and a
20-token question, max_new_tokens=1, on a fresh cache (prefill includes the encode).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from common import DEFAULT_CACHE, full_mmproj, full_model, machine, median_time, peak_rss_mib

import minicpmv


def picture(size: int) -> np.ndarray:
    rng = np.random.default_rng(size)
    return rng.integers(0, 256, (size, size, 3), dtype=np.uint8)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--vision-outtype", default="f16", choices=["f32", "f16"])
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--ttft-size", type=int, default=448, help="image side for the time-to-first-token row")
    args = parser.parse_args()

    llm = full_model(args.cache_dir, "f16")
    mmproj = full_mmproj(args.cache_dir, args.vision_outtype)
    model = minicpmv.Model(llm, mmproj_path=mmproj, n_ctx=2048, n_threads=args.threads)
    print(f"machine: {machine()}; threads: {args.threads or 'all'}; {llm.name} + {mmproj.name}")

    for size in (448, 1344):
        img = picture(size)
        slices = minicpmv._core._testing.preprocess_image(img)
        prep_s, _ = median_time(lambda: minicpmv._core._testing.preprocess_image(img), args.repeats)  # noqa: B023 (run here)
        enc_s, runs = median_time(lambda: model.encode_slices(slices), args.repeats)  # noqa: B023 (run here)
        print(
            f"encode {size}x{size} ({len(slices)} slices): {enc_s:.2f} s (runs {', '.join(f'{r:.2f}' for r in runs)}), "
            f"preprocessing {prep_s * 1000:.0f} ms"
        )

    question = "Describe this picture in detail, including colours, shapes, any text and the overall mood."
    msgs = [{"role": "user", "content": [picture(args.ttft_size), question]}]

    def first_token():
        model.reset()
        model.chat(msgs, max_new_tokens=1, seed=0)

    ttft_s, _ = median_time(first_token, args.repeats)
    print(
        f"time to first token ({args.ttft_size}x{args.ttft_size} image + question, "
        f"{model.last_result.n_prompt} positions): {ttft_s:.2f} s"
    )
    print(f"peak RSS: {peak_rss_mib():.0f} MiB")


if __name__ == "__main__":
    main()
