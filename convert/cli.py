"""``minicpmv-convert``: HF MiniCPM-V 2.6 checkpoint → ``ggml-model-<TYPE>.gguf`` (the LLM) and
``mmproj-model-<type>.gguf`` (the vision encoder and resampler), llama.cpp's names for the pair."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path

from . import ConversionError
from .hf_to_gguf import llm_plan
from .mmproj import MMPROJ_OUTTYPES, mmproj_plan
from .quant_rules import VARIANTS

EXIT_BAD_INPUT = 2  # argparse's own code for a bad command line


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="minicpmv-convert",
        description="Convert a MiniCPM-V 2.6 HF checkpoint to the LLM and vision GGUF files in the llama.cpp "
        "layout. Both files are checked against the checkpoint before either is written; each appears "
        "complete or not at all.",
    )
    parser.add_argument("hf_dir", type=Path, help="checkpoint directory (config.json, safetensors, tokenizer files)")
    parser.add_argument(
        "--outtype",
        type=str.upper,
        choices=list(VARIANTS),
        default="F16",
        metavar="TYPE",
        help=f"the LLM file's size variant, any case: {', '.join(VARIANTS)} (default F16; the _S/_M/_L types are "
        "llama.cpp's per-tensor mixes)",
    )
    parser.add_argument(
        "--vision-outtype",
        type=str.upper,
        choices=MMPROJ_OUTTYPES,
        default="F16",
        help="type of the vision file's matrices (default F16; Q8_0 keeps the patch and position embeddings f16)",
    )
    parser.add_argument(
        "--outdir",
        type=Path,
        help="write each file not named by --outfile / --vision-outfile here, under llama.cpp's name (default: HF_DIR)",
    )
    parser.add_argument("--outfile", type=Path, help="write the LLM file exactly here")
    parser.add_argument("--vision-outfile", type=Path, help="write the vision file exactly here")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--no-vision", action="store_true", help="write only the LLM file")
    which.add_argument("--vision-only", action="store_true", help="write only the vision file")
    parser.add_argument("--no-progress", action="store_true", help="do not show a progress bar")
    args = parser.parse_args(argv)
    if args.vision_only and args.outfile:
        parser.error("--outfile names the LLM file, which --vision-only does not write")
    if args.no_vision and args.vision_outfile:
        parser.error("--vision-outfile names the vision file, which --no-vision does not write")

    outdir = args.outdir or args.hf_dir
    jobs = []  # (plan maker, output type, output path)
    if not args.vision_only:
        jobs.append((llm_plan, args.outtype, args.outfile or outdir / f"ggml-model-{args.outtype}.gguf"))
    if not args.no_vision:
        out = args.vision_outfile or outdir / f"mmproj-model-{args.vision_outtype.lower()}.gguf"
        jobs.append((mmproj_plan, args.vision_outtype, out))
    if len({out.resolve() for *_, out in jobs}) < len(jobs):
        parser.error("--outfile and --vision-outfile name the same file")

    def convert() -> None:
        plans = [(make(args.hf_dir, outtype), out) for make, outtype, out in jobs]
        for plan, out in plans:
            out.parent.mkdir(parents=True, exist_ok=True)
            plan.write(out, progress=not args.no_progress)
            print(out)
            print(plan.summary(out), file=sys.stderr)

    return run_reporting_errors("minicpmv-convert", convert)


class _Terminated(BaseException):
    """SIGTERM as an exception in the main thread, so that the files being written are removed as for
    Ctrl-C (the default action would leave the temporary file behind)."""


def _raise_terminated(_signum, _frame):
    raise _Terminated


def run_reporting_errors(prog: str, work: Callable[[], None]) -> int:
    """Runs a command's ``work`` and returns its exit status: errors become one line on stderr, no traceback."""
    # Signal handlers belong to the main thread (a caller may run this from another).
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _raise_terminated) if main_thread else None
    try:
        work()
    except ConversionError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except OSError as e:  # reading or writing failed (disk full, permissions): not the input's fault
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{prog}: interrupted; the files being written were removed", file=sys.stderr)
        return 130
    except _Terminated:
        print(f"{prog}: terminated; the files being written were removed", file=sys.stderr)
        return 143
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous)
    return 0


if __name__ == "__main__":
    sys.exit(main())
