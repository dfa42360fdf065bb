"""``minicpmv-quantize``: an F32/F16/BF16 LLM GGUF → a size variant (docs/model.md §10), or all 16 in one pass.

minicpmv-quantize ggml-model-F16.gguf ggml-model-Q4_K_M.gguf Q4_K_M
minicpmv-quantize ggml-model-F16.gguf models/ --all
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .cli import run_reporting_errors
from .gguf_quantize import variant_file_name, write_variants
from .quant_rules import SIZE_VARIANTS


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="minicpmv-quantize",
        description="Quantize the LLM GGUF file of MiniCPM-V 2.6 with llama.cpp's per-tensor type rules. Each "
        "output appears complete or not at all.",
    )
    parser.add_argument("input", type=Path, help="the F32, F16 or BF16 LLM file (ggml-model-F16.gguf)")
    parser.add_argument("output", type=Path, help="the file to write; with --all, the directory for all 16")
    parser.add_argument(
        "type",
        nargs="?",
        type=str.upper,
        choices=SIZE_VARIANTS,
        metavar="TYPE",
        help=f"the size variant, any case: {', '.join(SIZE_VARIANTS)}",
    )
    parser.add_argument("--all", action="store_true", help="write all 16 variants into OUTPUT, reading the input once")
    parser.add_argument("-t", "--threads", type=int, default=0, help="quantization threads (default: every core)")
    parser.add_argument("--no-progress", action="store_true", help="do not show a progress bar")
    args = parser.parse_args(argv)
    if args.all == (args.type is not None):
        parser.error("give either TYPE or --all")
    if args.threads < 0:
        parser.error("--threads must be >= 0")

    def quantize() -> None:
        if args.all:
            args.output.mkdir(parents=True, exist_ok=True)
            outputs = {v: args.output / variant_file_name(v) for v in SIZE_VARIANTS}
        else:
            outputs = {args.type: args.output}
        for path, plan in write_variants(args.input, outputs, not args.no_progress, args.threads):
            print(path)
            print(plan.summary(path), file=sys.stderr)

    return run_reporting_errors("minicpmv-quantize", quantize)


if __name__ == "__main__":
    sys.exit(main())
