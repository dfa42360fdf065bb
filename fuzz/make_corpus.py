"""Write the fuzz targets' seeds and the micro model they load into OUT_DIR (tools/fuzz.sh calls it).

    python fuzz/make_corpus.py OUT_DIR

OUT_DIR/micro/ gets the synthetic micro checkpoint's two GGUF files (convert/synthetic.py),
OUT_DIR/seeds/<target>/ the seeds, in the input formats the targets' comments describe, and
OUT_DIR/gguf.dict the GGUF keys and tensor names, for libFuzzer's -dict (most bytes of a GGUF are
tensor data: the words steer mutations into the header).
"""

from __future__ import annotations

import argparse
import io
import shutil
import tempfile
from pathlib import Path

import numpy as np
from gguf import GGUFReader
from PIL import Image

from minicpmv.convert.hf_to_gguf import convert_llm
from minicpmv.convert.mmproj import convert_mmproj
from minicpmv.convert.synthetic import write_checkpoint

TEXTS = (
    "Hello the in",
    " the  in\n\n\tHello, world! 123 4567",
    "<|im_start|>user\nHello<|im_end|>\n<unk><image></image>",
    "Café naïve e\u0301 한국어 日本語 🙂 I'm we'll",
    "<|im_end",
)


def micro_model(out: Path) -> tuple[Path, Path]:
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = write_checkpoint(Path(tmp) / "micro", preset="micro")
        llm = convert_llm(ckpt, out / "llm.gguf", outtype="f16", progress=False)
        mmproj = convert_mmproj(ckpt, out / "mmproj.gguf", outtype="f16", progress=False)
    return llm, mmproj


def image_files() -> dict[str, bytes]:
    rgb = np.random.default_rng(0).integers(0, 256, (11, 17, 3), dtype=np.uint8)
    files = {}
    for name, image, fmt in (
        ("rgb.png", Image.fromarray(rgb), "PNG"),
        ("gray.png", Image.fromarray(rgb[..., 0]), "PNG"),
        ("rgba.png", Image.fromarray(rgb).convert("RGBA"), "PNG"),
        ("palette.png", Image.fromarray(rgb).convert("P"), "PNG"),
        ("rgb.jpg", Image.fromarray(rgb), "JPEG"),
        ("gray.jpg", Image.fromarray(rgb[..., 0]), "JPEG"),
        ("rgb.ppm", Image.fromarray(rgb), "PPM"),
        ("gray.pgm", Image.fromarray(rgb[..., 0]), "PPM"),
    ):
        buf = io.BytesIO()
        image.save(buf, fmt)
        files[name] = buf.getvalue()
    return files


def chat_prompts() -> list[bytes]:
    # Header: generation prompt, image ids, max_slice_nums 9; parts: 1 user text, 5 user image, 0 more text.
    header = bytes([1 | 2 | 9 << 2])
    return [
        header + b"\x01Hello",
        header + b"\x03Be brief.\xff\x01What is it?\xff\x05\x1d\x13\xff\x00the in\xff\x02Hello\xff\x01\x04\x40\x08",
        bytes([9 << 2]) + b"\x01<|im_end|>\xff\x05\xff\xff\x04\x01\x30",
    ]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path)
    out = parser.parse_args(argv).out_dir
    (out / "micro").mkdir(parents=True, exist_ok=True)
    llm, mmproj = micro_model(out / "micro")
    seeds = out / "seeds"
    for target in ("fuzz_model_load", "fuzz_image", "fuzz_tokenizer", "fuzz_chat_prompt"):
        (seeds / target).mkdir(parents=True, exist_ok=True)
    for path in (llm, mmproj):
        shutil.copy(path, seeds / "fuzz_model_load" / path.name)
    # max_slice_nums 9, scale resolution 2 patches (the micro preset's), then the file.
    for name, data in image_files().items():
        (seeds / "fuzz_image" / name).write_bytes(bytes([9, 2]) + data)
    for i, text in enumerate(TEXTS):
        for mode in range(2):  # special tokens as text, then parsed
            (seeds / "fuzz_tokenizer" / f"text{i}-{mode}").write_bytes(bytes([mode]) + text.encode())
    ids = np.array([0, 263, 256 + 13, 256 + 13 + 22], dtype="<i4").tobytes()
    (seeds / "fuzz_tokenizer" / "ids").write_bytes(b"\x02" + ids)
    words = {name for path in (llm, mmproj) for name in GGUFReader(path).fields if not name.startswith("GGUF.")}
    words |= {t.name for path in (llm, mmproj) for t in GGUFReader(path).tensors}
    (out / "gguf.dict").write_text("".join(f'"{w}"\n' for w in sorted(words)))
    for i, data in enumerate(chat_prompts()):
        (seeds / "fuzz_chat_prompt" / f"prompt{i}").write_bytes(data)


if __name__ == "__main__":
    main()
