"""Shared benchmark plumbing: the cached synthetic `full` model, timing and memory readings."""

from __future__ import annotations

import os
import platform
import resource
import statistics
import time
from pathlib import Path

DEFAULT_CACHE = Path(__file__).resolve().parent.parent / "bench-cache"


def full_model(cache_dir: Path, outtype: str = "f16") -> Path:
    """The `full` synthetic checkpoint converted to ``outtype``, built once and cached (~31 GB for f16)."""
    from minicpmv.convert.hf_to_gguf import convert_llm
    from minicpmv.convert.synthetic import write_checkpoint

    ckpt = cache_dir / "full-hf"
    if not (ckpt / "model.safetensors.index.json").exists():
        print(f"writing the full synthetic checkpoint to {ckpt} (once) ...", flush=True)
        write_checkpoint(ckpt, preset="full", seed=0, progress=True)
    gguf = cache_dir / f"ggml-model-{outtype.upper()}.gguf"
    if not gguf.exists():
        print(f"converting to {gguf} (once) ...", flush=True)
        convert_llm(ckpt, gguf, outtype=outtype, progress=True)
    return gguf


def full_mmproj(cache_dir: Path, outtype: str = "f16") -> Path:
    """The `full` checkpoint's vision file (SigLIP-400M + resampler), converted once and cached."""
    from minicpmv.convert.mmproj import convert_mmproj

    full_model(cache_dir, "f16")  # writes the checkpoint if needed
    path = cache_dir / f"mmproj-model-{outtype.lower()}.gguf"
    if not path.exists():
        print(f"converting to {path} (once) ...", flush=True)
        convert_mmproj(cache_dir / "full-hf", path, outtype=outtype, progress=True)
    return path


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores"


def median_time(fn, repeats: int) -> tuple[float, list[float]]:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), times
