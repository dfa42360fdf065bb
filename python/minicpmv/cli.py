"""``minicpmv``: the command line.

minicpmv chat -m ggml-model-Q4_K_M.gguf "Write a haiku about GGUF"
minicpmv chat -m ggml-model-Q4_K_M.gguf --mmproj mmproj-model-f16.gguf --image cat.jpg "What is this?"
minicpmv chat -m ggml-model-Q4_K_M.gguf --mmproj mmproj-model-f16.gguf --video clip.mp4 "Describe the video."
"""

from __future__ import annotations

import argparse
import json
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


def _options(args: argparse.Namespace) -> dict:
    return dict(
        sampling=not args.beam_search and not args.greedy,
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


def _attachments(args: argparse.Namespace) -> list:
    content = [Path(p) for p in args.image]
    if args.video:
        # Frames at 1 frame/s; the core lays them out as the model card's video chat does.
        content.append({"type": "video", "video": video.load_frames(args.video, max_frames=args.max_frames)})
    return content


def _chat(args: argparse.Namespace) -> int:
    model = _load(args)
    if args.prompt is None:
        return interactive(model, _options(args), _attachments(args))
    reply = _ask(model, [{"role": "user", "content": [*_attachments(args), args.prompt]}], _options(args))
    return 0 if reply is not None else 2


HELP = """/image PATH  attach an image to the next question     /reset      start a new conversation
/save FILE   write the conversation as JSON (msgs)      /quit       leave (or Ctrl-D)
Ctrl-C stops an answer; the conversation goes on."""


def interactive(model: Model, options: dict, attachments: list) -> int:
    """A multi-turn chat on standard input: answers stream as they come, Ctrl-C stops one (its part so
    far stays in the conversation), lines are edited with readline and kept in its history."""
    try:
        import readline  # noqa: F401 (line editing and history for input())
    except ImportError:
        pass
    tty = sys.stdin.isatty()
    if tty:
        print(f"minicpmv chat: {Path(model.model_path).name}; /help for commands", file=sys.stderr)
    msgs: list[dict] = []
    pending = list(attachments)
    while True:
        try:
            line = input("> " if tty else "")
        except EOFError:
            return 0
        except KeyboardInterrupt:
            print("\n(Ctrl-D or /quit leaves)", file=sys.stderr)
            continue
        command, _, rest = line.strip().partition(" ")
        if command in ("/quit", "/exit"):
            return 0
        if command == "/help":
            print(HELP, file=sys.stderr)
        elif command == "/reset":
            msgs, pending = [], []
            model.reset()
            print("(new conversation)", file=sys.stderr)
        elif command == "/image":
            path = Path(rest.strip()).expanduser()
            if not path.is_file():
                print(f"minicpmv: no image file {str(path)!r}", file=sys.stderr)
            else:
                pending.append(path)
                print(f"(attached {path.name} to the next question)", file=sys.stderr)
        elif command == "/save":
            _save(msgs, options, rest.strip())
        elif line.strip():
            msgs.append({"role": "user", "content": [*pending, line]})
            pending = []
            reply = _ask(model, msgs, options)
            if reply is None:
                msgs.pop()
            else:
                msgs.append({"role": "assistant", "content": reply})


def _ask(model: Model, msgs: list, options: dict) -> str | None:
    """Streams the reply to stdout and returns it (cut short by Ctrl-C: what came so far; beam search
    prints it whole), or None when the question failed (the error is printed)."""
    pieces = []
    try:
        if not options["sampling"] and options["num_beams"] > 1:
            pieces.append(model.chat(msgs, **options))
            sys.stdout.write(pieces[0])
        else:
            stream = model.chat(msgs, stream=True, **options)
            try:
                for piece in stream:
                    pieces.append(piece)
                    sys.stdout.write(piece)
                    sys.stdout.flush()
            except KeyboardInterrupt:
                stream.close()  # cancels the generation at the next token
                sys.stdout.write(" [stopped]")
    except (_core.MinicpmvError, OSError, ValueError) as exc:
        print(f"minicpmv: error: {exc}", file=sys.stderr)
        return None
    sys.stdout.write("\n")
    sys.stdout.flush()
    return "".join(pieces)


def _save(msgs: list, options: dict, path: str) -> None:
    """msgs as JSON, images as file:// URLs (chat() reads them back as they are)."""

    def part(p):
        return {"type": "image_url", "image_url": {"url": f"file://{Path(p).resolve()}"}} if isinstance(p, Path) else p

    saved = [
        {
            "role": m["role"],
            "content": [part(p) for p in m["content"]] if isinstance(m["content"], list) else m["content"],
        }
        for m in msgs
    ]
    if any(isinstance(p, dict) and p.get("type") == "video" for m in msgs for p in m["content"]):
        print("minicpmv: video frames are not saved (only their place in the conversation is lost)", file=sys.stderr)
        saved = [
            {**m, "content": [p for p in m["content"] if not (isinstance(p, dict) and p.get("type") == "video")]}
            for m in saved
        ]
    if not path:
        print("minicpmv: /save needs a file name", file=sys.stderr)
        return
    try:
        Path(path).write_text(
            json.dumps({"system_prompt": options["system_prompt"], "msgs": saved}, ensure_ascii=False, indent=1)
        )
        print(f"(saved {len(msgs)} messages to {path})", file=sys.stderr)
    except OSError as exc:
        print(f"minicpmv: cannot save: {exc}", file=sys.stderr)


def _model_arguments(parser: argparse.ArgumentParser) -> None:
    """The files (local or from the hub) and how to load them: `chat` and `serve` alike."""
    parser.add_argument("-m", "--model", help="the LLM GGUF (ggml-model-<TYPE>.gguf); without it, a model from the hub")
    parser.add_argument("--hf-repo", default=None, help=f"hub repository (default {hub.DEFAULT_REPO})")
    parser.add_argument("--hf-file", default=None, help=f"LLM file in it (default {hub.DEFAULT_FILE})")
    parser.add_argument("--hf-mmproj", default=None, help="vision file in it (default: its mmproj*.gguf)")
    parser.add_argument("--mmproj", default=None, help="the vision GGUF (mmproj-model-f16.gguf), for images and video")
    parser.add_argument("-c", "--ctx-size", type=int, default=_SESSION.n_ctx)
    parser.add_argument("-t", "--threads", type=int, default=None)
    parser.add_argument("--device", default=_MODEL.device)
    parser.add_argument(
        "--no-mmap", action="store_true", help="copy the weights into memory (slower start, faster decoding on CPU)"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="minicpmv", description="Run MiniCPM-V 2.6 GGUF models.")
    sub = parser.add_subparsers(dest="command", required=True)
    chat = sub.add_parser("chat", help="answer a prompt, or chat interactively without one (streams the replies)")
    chat.add_argument("prompt", nargs="?", default=None, help="the question; none: an interactive chat")
    _model_arguments(chat)
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
    serve = sub.add_parser("serve", help="an OpenAI-compatible server (POST /v1/chat/completions)")
    _model_arguments(serve)
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    serve.add_argument("--port", type=int, default=8080)
    serve.add_argument("--parallel", type=int, default=1, help="conversations served at once, each with its own cache")
    serve.add_argument("--alias", default=None, help="the model's name in the API (default: the file name)")
    serve.add_argument("--api-key", default=None, help="require 'Authorization: Bearer KEY' (or $MINICPMV_API_KEY)")
    serve.add_argument("--allow-files", default=None, metavar="DIR", help="image_url may name files under DIR")
    serve.add_argument(
        "--allow-remote-urls", action="store_true", help="image_url may be http(s) URLs the server fetches"
    )
    serve.add_argument("--max-body-bytes", type=int, default=32 << 20)
    serve.add_argument("--max-image-pixels", type=int, default=5000 * 5000)
    serve.add_argument("--max-images", type=int, default=64)
    serve.add_argument("--max-queue", type=int, default=32, help="requests waiting for a slot before 503")
    info = sub.add_parser("info", help="what a GGUF file holds and what it pairs with")
    info.add_argument("files", nargs="+", metavar="FILE.gguf")
    args = parser.parse_args(argv)
    try:
        if args.command == "info":
            print("\n".join(describe(path) for path in args.files))
            return 0
        if args.model is None and args.mmproj is not None:
            parser.error("--mmproj needs -m (a hub model finds its own vision file)")
        if args.command == "serve":
            from .server import serve as run_server

            return run_server(args)
        return _chat(args)
    except (_core.MinicpmvError, OSError, ValueError) as exc:
        print(f"minicpmv: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
