"""``minicpmv-convert``: HF MiniCPM-V 2.6 checkpoint → ``ggml-model-<TYPE>.gguf`` (llama.cpp's naming)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import ConversionError
from .hf_to_gguf import OUTTYPES, convert_llm

EXIT_BAD_INPUT = 2  # argparse's own code for a bad command line


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="minicpmv-convert",
        description="Convert a MiniCPM-V 2.6 HF checkpoint to the LLM GGUF file in the llama.cpp layout.",
    )
    parser.add_argument("hf_dir", type=Path, help="checkpoint directory (config.json, safetensors, tokenizer files)")
    parser.add_argument("--outtype", choices=sorted(OUTTYPES), default="f16", help="type of the 2-D weights")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--outdir", type=Path, help="write ggml-model-<TYPE>.gguf here (default: HF_DIR)")
    where.add_argument("--outfile", type=Path, help="write exactly this file")
    parser.add_argument("--no-progress", action="store_true", help="do not show a progress bar")
    args = parser.parse_args(argv)

    out = args.outfile or (args.outdir or args.hf_dir) / f"ggml-model-{args.outtype.upper()}.gguf"
    try:
        if args.outdir is not None:
            args.outdir.mkdir(parents=True, exist_ok=True)
        convert_llm(args.hf_dir, out, args.outtype, progress=not args.no_progress)
    except ConversionError as e:
        print(f"minicpmv-convert: error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except OSError as e:  # reading or writing failed (disk full, permissions): not the input's fault
        print(f"minicpmv-convert: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("minicpmv-convert: interrupted; no file written", file=sys.stderr)
        return 130
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
