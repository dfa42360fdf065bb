"""``minicpmv-quality``: how far size variants drift from the reference, in next-token distributions.

Every file evaluates the same fixed prompts with teacher forcing (the chat prompt and a fixed answer;
with a vision file, also questions about synthetic images, whose answers are evaluated after the image
prompt is prefilled). At each position the next-token distribution of a candidate is compared with the
reference's: the mean KL divergence KL(reference ‖ candidate) in nats, and how often the most likely
token is the same. One model is loaded at a time; the reference's log-probabilities are kept.

    minicpmv-quality ggml-model-F16.gguf ggml-model-Q8_0.gguf ggml-model-Q4_K_M.gguf --mmproj mmproj-model-f16.gguf
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import _core
from .model import Model


@dataclass(frozen=True)
class QualityPrompt:
    question: str
    answer: str  # teacher-forced after the prompt
    image: str | None = None  # a name from IMAGES


# Varied on purpose: facts, code, arithmetic, another language, a list, a longer answer.
PROMPTS = (
    QualityPrompt("What is the capital of France?", "The capital of France is Paris."),
    QualityPrompt(
        "Write a Python function that returns the square of a number.",
        "```python\ndef square(x):\n    return x * x\n```",
    ),
    QualityPrompt("What is 17 times 23?", "17 times 23 is 391."),
    QualityPrompt("请用一句话介绍长城。", "长城是中国古代修建的军事防御工程，全长两万多公里。"),
    QualityPrompt("Name three primary colors.", "Red, blue and yellow."),
    QualityPrompt(
        "Explain why the sky is blue.",
        "Sunlight is scattered by the molecules of the air, and blue light, with its shorter wavelength, is "
        "scattered much more than red light, so the sky looks blue from every direction.",
    ),
    QualityPrompt(
        "What shape is in the picture, and what colour is it?", "A red circle on a white background.", "circle"
    ),
    QualityPrompt("Describe this image.", "The image shows colored vertical stripes.", "stripes"),
)


def _circle(size: int = 448) -> np.ndarray:
    y, x = np.mgrid[:size, :size]
    image = np.full((size, size, 3), 255, np.uint8)
    image[(x - size / 2) ** 2 + (y - size / 2) ** 2 < (size / 3) ** 2] = (220, 30, 30)
    return image


def _stripes(width: int = 300, height: int = 200) -> np.ndarray:
    colors = np.array([(230, 30, 30), (30, 160, 60), (40, 60, 220), (240, 200, 20)], np.uint8)
    return np.broadcast_to(colors[(np.arange(width) * len(colors)) // width][None], (height, width, 3)).copy()


IMAGES = {"circle": _circle, "stripes": _stripes}


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return (shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))).astype(np.float32)


def prompt_log_probs(model: Model, prompt: QualityPrompt) -> np.ndarray:
    """Log-probabilities [positions, vocab] of the next token at each teacher-forced position."""
    msgs = [
        {
            "role": "user",
            "content": prompt.question if prompt.image is None else [IMAGES[prompt.image](), prompt.question],
        }
    ]
    answer = model.tokenize(prompt.answer)
    model.reset()
    if prompt.image is None:
        ids = model.chat_prompt(msgs) + answer
    else:
        # The image prompt goes through chat() (the only path that reads images); with no new tokens it
        # just fills the cache, and the answer is evaluated after it.
        model.chat(msgs, max_new_tokens=0)
        ids = answer
    logits = np.asarray(model.eval(ids, all_logits=True)).reshape(len(ids), -1)
    return _log_softmax(logits.astype(np.float64))


def compare(reference: np.ndarray, candidate: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per position: KL(reference ‖ candidate) in nats, and whether the argmax agrees."""
    p = np.exp(reference.astype(np.float64))
    kl = (p * (reference.astype(np.float64) - candidate)).sum(axis=-1)
    return kl, reference.argmax(axis=-1) == candidate.argmax(axis=-1)


def file_stats(path: Path) -> tuple[float, float]:
    """(file size in GB, bits per weight of the tensor data), from ggml's GGUF parser (gguf-py's reader
    would first parse the 300 k vocabulary strings, seconds per file)."""
    import ctypes

    import ggml

    tensors = ctypes.c_void_p()
    gguf = ggml.gguf_init_from_file(
        str(path).encode(), ggml.gguf_init_params(no_alloc=True, ctx=ctypes.pointer(tensors))
    )
    if not gguf:
        raise _core.ModelFormatError(f"{path}: ggml cannot parse this GGUF file")
    try:
        n_bytes = n_weights = 0
        for i in range(ggml.gguf_get_n_tensors(gguf)):
            n_bytes += ggml.gguf_get_tensor_size(gguf, i)
            n_weights += ggml.ggml_nelements(ggml.ggml_get_tensor(tensors, ggml.gguf_get_tensor_name(gguf, i)))
    finally:
        ggml.ggml_free(tensors)
        ggml.gguf_free(gguf)
    return path.stat().st_size / 1e9, 8 * n_bytes / n_weights


def evaluate(path: Path, prompts, mmproj: Path | None, **model_args) -> list[np.ndarray]:
    model = Model(path, mmproj_path=mmproj, **model_args)
    return [prompt_log_probs(model, p) for p in prompts]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="minicpmv-quality",
        description="Mean KL divergence and top-1 agreement of next-token distributions of LLM GGUF files "
        "against a reference (the F32 or F16 file), over fixed text and image prompts.",
    )
    parser.add_argument("reference", type=Path, help="the reference LLM file (F32 or F16)")
    parser.add_argument("candidates", type=Path, nargs="+", help="the LLM files to compare (ggml-model-Q4_K_M.gguf …)")
    parser.add_argument(
        "--mmproj", type=Path, help="vision file: adds the image prompts (the same file for every model)"
    )
    parser.add_argument("-c", "--ctx", type=int, default=2048, help="context size (default 2048)")
    parser.add_argument("-t", "--threads", type=int, default=None, help="threads (default: the core's choice)")
    args = parser.parse_args(argv)

    prompts = [p for p in PROMPTS if p.image is None or args.mmproj is not None]
    model_args = {"n_ctx": args.ctx, "n_threads": args.threads}
    try:
        reference = evaluate(args.reference, prompts, args.mmproj, **model_args)
        n_positions = sum(len(r) for r in reference)
        print(
            f"{len(prompts)} prompts ({sum(p.image is not None for p in prompts)} with images), {n_positions} positions"
        )
        print(f"{'file':<40} {'size GB':>8} {'bits/w':>7} {'mean KL':>10} {'top-1 agree':>12}")
        size, bpw = file_stats(args.reference)
        print(f"{args.reference.name:<40} {size:>8.2f} {bpw:>7.2f} {'reference':>10} {'':>12}")
        for path in args.candidates:
            kls, agree = zip(
                *(compare(r, c) for r, c in zip(reference, evaluate(path, prompts, args.mmproj, **model_args)))
            )
            size, bpw = file_stats(path)
            kl, top1 = np.concatenate(kls).mean(), np.concatenate(agree).mean()
            print(f"{path.name:<40} {size:>8.2f} {bpw:>7.2f} {kl:>10.5f} {100 * top1:>11.1f}%", flush=True)
    except (_core.MinicpmvError, ValueError, OSError) as e:
        print(f"minicpmv-quality: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
