"""``minicpmv``: the command line.

minicpmv chat -m ggml-model-Q4_K_M.gguf "Write a haiku about GGUF"
minicpmv chat -m ggml-model-Q4_K_M.gguf --mmproj mmproj-model-f16.gguf --image cat.jpg "What is this?"
minicpmv chat -m ggml-model-Q4_K_M.gguf --mmproj mmproj-model-f16.gguf --video clip.mp4 "Describe the video."
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import _core, hub, video
from .info import describe
from .model import _GENERATE, _MODEL, _SESSION, Model


def _load(args: argparse.Namespace) -> Model:
    """-m/--mmproj files, or a model by name from the hub (--hf-repo/--hf-file; by default the
    published Q4_K_M pair)."""
    options = dict(n_ctx=args.ctx_size, n_threads=args.threads, device=args.device, use_mmap=not args.no_mmap)
    if args.model:
        return Model(args.model, mmproj_path=args.mmproj, **options)
    return Model.from_pretrained(args.hf_repo, args.hf_file, mmproj_filename=args.hf_mmproj, **options)


def _chat(args: argparse.Namespace) -> int:
    model = _load(args)
    content = [Path(p) for p in args.image]
    if args.video:
        # Frames at 1 frame/s; the core lays them out as the model card's video chat does.
        content.append({"type": "video", "video": video.load_frames(args.video, max_frames=args.max_frames)})
    msgs = [{"role": "user", "content": content + [args.prompt]}]
    sampling = not args.beam_search and not args.greedy
    options = dict(
        sampling=sampling,
        max_new_tokens=args.max_new_tokens,
        system_prompt=args.system_prompt,
        temperature=args.temperature,
        top_p=args.top_p,
        top_k=args.top_k,
        repetition_penalty=1.0 if args.greedy and args.repetition_penalty is None else args.repetition_penalty,
        num_beams=1 if args.greedy else args.num_beams,
        seed=args.seed,
        max_slice_nums=args.max_slice_nums,
    )
    if sampling or args.greedy:
        for piece in model.chat(msgs, stream=True, **options):
            sys.stdout.write(piece)
            sys.stdout.flush()
        sys.stdout.write("\n")
    else:
        print(model.chat(msgs, **options))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="minicpmv", description="Run MiniCPM-V 2.6 GGUF models.")
    sub = parser.add_subparsers(dest="command", required=True)
    chat = sub.add_parser("chat", help="answer one prompt (streams the reply)")
    chat.add_argument("prompt")
    chat.add_argument("-m", "--model", help="the LLM GGUF (ggml-model-<TYPE>.gguf); without it, a model from the hub")
    chat.add_argument("--hf-repo", default=None, help=f"hub repository (default {hub.DEFAULT_REPO})")
    chat.add_argument("--hf-file", default=None, help=f"LLM file in it (default {hub.DEFAULT_FILE})")
    chat.add_argument("--hf-mmproj", default=None, help="vision file in it (default: its mmproj*.gguf)")
    chat.add_argument("--mmproj", default=None, help="the vision GGUF (mmproj-model-f16.gguf), for images and video")
    chat.add_argument("--image", action="append", default=[], help="an image file (repeat for several)")
    chat.add_argument("--video", default=None, help="a video file: sampled at 1 frame/s (PyAV)")
    chat.add_argument("--max-frames", type=int, default=64)
    chat.add_argument(
        "--max-slice-nums",
        type=int,
        default=None,
        help=f"slices per image (default {_core.default_slice_nums()}, video 2)",
    )
    chat.add_argument("-n", "--max-new-tokens", type=int, default=_GENERATE.max_new_tokens)
    chat.add_argument("-c", "--ctx-size", type=int, default=_SESSION.n_ctx)
    chat.add_argument("-t", "--threads", type=int, default=None)
    chat.add_argument("--device", default=_MODEL.device)
    chat.add_argument(
        "--no-mmap", action="store_true", help="copy the weights into memory (slower start, faster decoding on CPU)"
    )
    chat.add_argument("--system-prompt", default="")
    chat.add_argument("--temperature", type=float, default=_GENERATE.sampling.temperature)
    chat.add_argument("--top-p", type=float, default=_GENERATE.sampling.top_p)
    chat.add_argument("--top-k", type=int, default=_GENERATE.sampling.top_k)
    chat.add_argument("--repetition-penalty", type=float, default=None)
    chat.add_argument("--seed", type=int, default=None)
    mode = chat.add_mutually_exclusive_group()
    mode.add_argument("--beam-search", action="store_true", help="HF chat(sampling=False): beam search")
    mode.add_argument("--greedy", action="store_true", help="plain greedy decoding")
    chat.add_argument("--num-beams", type=int, default=_GENERATE.beam.num_beams)
    info = sub.add_parser("info", help="what a GGUF file holds and what it pairs with")
    info.add_argument("files", nargs="+", metavar="FILE.gguf")
    args = parser.parse_args(argv)
    try:
        if args.command == "info":
            print("\n".join(describe(path) for path in args.files))
            return 0
        if args.model is None and args.mmproj is not None:
            parser.error("--mmproj needs -m (a hub model finds its own vision file)")
        return _chat(args)
    except (_core.MinicpmvError, OSError, ValueError) as exc:
        print(f"minicpmv: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
