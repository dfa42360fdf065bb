"""minicpmv against llama.cpp (llama-cpp-python) on the same files, side by side.

    python benchmarks/compare.py [--threads 2] [--rounds 3] [--llm-type Q4_K_M] [--engines ours,llama.cpp,torch]

Both engines read the same GGUF files: the `full` synthetic checkpoint (real MiniCPM-V 2.6 sizes) as a
Q4_K_M LLM (written once with our quantizer) plus the F16 vision file, all cached in bench-cache/.
Each engine runs in its own subprocess per round (so peak RSS is its own), the engines alternate
(ours, llama.cpp, then llama.cpp, ours, ...), and each row reports the median over the rounds:

  encode 448 / 1344   preprocessing + vision encoder + resampler for one image (1 and 10 slices);
                      llama.cpp: mtmd_tokenize + mtmd_encode_chunk of every image chunk
  ttft 1344           time to first token: a fresh chat with a 1344×1344 image and a 20-token question
                      (ours: chat(max_new_tokens=1); llama.cpp: create_chat_completion(max_tokens=1)
                      through MiniCPMv26ChatHandler)
  prefill 512         tokens/s of one 512-token prompt into an empty cache
  decode 64           tokens/s of 64 single-token steps after it (greedy, argmax on the host)
  load_time           constructing the model (LLM + vision file) with the files in the page cache
  peak RSS            the worker's peak resident set (mapped weights count once touched)

Engines: `ours` (defaults: weights used from the file mapping), `ours-no-mmap` (Model(use_mmap=False):
weights copied into allocated memory), `ours-repack` (Model(cpu_repack=True): ggml's CPU_REPACK
kernels), `llama.cpp` (its defaults: on this CPU the CPU_REPACK extra buffer type, which also copies
the weights into allocated memory), `llama.cpp-plain` (use_extra_bufts off: plain buffers over the
mapping, like `ours`).

`torch` times the PyTorch float32 reference of the tests (tests/reference/models.py) on the vision rows,
from the checkpoint's safetensors. The memory read bandwidth of the machine (benchmarks/membw.c, same
thread count) turns the decode rate into a fraction of the bandwidth limit: tokens/s × bytes read per
token / bandwidth; the in-register peaks of the dot-product instructions (benchmarks/peak.c) turn
prefill and encode into fractions of the compute limit (int8 for the Q4_K_M prompt kernels, bf16 for
the vision tower; the AVX2 instructions where the CPU has no AVX-512).

llama-cpp-python is a benchmark-only dependency. Do not install it into the project's environment: its
wheel writes ggml 0.25 headers and libraries into site-packages/include and site-packages/lib, over
the ggml-python ones the project builds against. Install it into its own directory and point
--llama-cpp-path there:

    CMAKE_ARGS="-DGGML_NATIVE=ON" pip install --target /work/llama-cpp-python llama-cpp-python==0.3.36

--isa avx2 measures what a CPU without AVX-512 gets, on any x86 machine: it builds ggml-python (ggml
0.15.3, our ggml), minicpmv against it, and llama-cpp-python, all with GGML_NATIVE=OFF, AVX2/FMA/F16C
on and AVX-512 and AVX-VNNI off, into their own directories under bench-cache/isa-avx2/ (from the
registry's source packages, once; minicpmv again when its sources change), turns our AVX-512 kernels
off (the test-only kernel switch), and runs the same rows. The peaks then are the AVX2 instructions'.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from common import DEFAULT_CACHE, full_mmproj, full_model, machine  # noqa: E402

ROWS = ["encode_448", "encode_1344", "ttft_1344", "prefill_512", "decode_64", "load_time", "peak_rss"]
# row -> (label, unit, higher is better)
ROW_INFO = {
    "encode_448": ("vision encode 448×448 (1 slice)", "s", False),
    "encode_1344": ("vision encode 1344×1344 (10 slices)", "s", False),
    "ttft_1344": ("time to first token, 1344² image + 20-token question", "s", False),
    "prefill_512": ("prefill 512 tokens", "tok/s", True),
    "decode_64": ("decode 64 tokens (median step)", "tok/s", True),
    "load_time": ("load (LLM + vision file, from the page cache)", "s", False),
    "peak_rss": ("peak RSS", "MiB", False),
}
QUESTION = "Describe this picture in detail: the colours, the shapes, any text, and the overall mood."  # 20 tokens
PREFILL_TEXT = "The history of the city begins with a small settlement on the river. " * 64
N_PREFILL = 512
N_DECODE = 64
LLAMA_CPP_PYTHON = "llama-cpp-python==0.3.36"
# ggml's CMake options for each --isa build (ggml 0.15.3 and 0.25.3 both read these).
ISA_CMAKE_ARGS = {
    "avx2": "-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON "
    "-DGGML_AVX512=OFF -DGGML_AVX512_VBMI=OFF -DGGML_AVX512_VNNI=OFF -DGGML_AVX512_BF16=OFF -DGGML_AVX_VNNI=OFF "
    "-DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF",
}


def picture(size: int) -> np.ndarray:
    rng = np.random.default_rng(size)
    return rng.integers(0, 256, (size, size, 3), dtype=np.uint8)


def peak_rss_mib() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def decode_rate(step, first_token: int) -> tuple[float, float]:
    """N_DECODE greedy single-token steps: (tokens/s from the median step, tokens/s over all steps).
    The median is the row (robust to other processes stealing a core for a few steps)."""
    tok, steps = first_token, []
    for _ in range(N_DECODE):
        t0 = time.perf_counter()
        tok = int(np.argmax(step(tok)))
        steps.append(time.perf_counter() - t0)
    return 1.0 / statistics.median(steps), N_DECODE / sum(steps)


def dump(args, name: str, rows) -> None:
    if args.dump_dir:
        np.save(Path(args.dump_dir) / f"{name}.npy", np.asarray(rows, dtype=np.float32).reshape(-1, 3584))


# --- workers: one engine, one round, results as JSON on stdout ---------------------------------------


def worker_ours(args) -> dict:
    import minicpmv

    if args.isa != "native":  # the kernels a CPU without AVX-512 gets
        minicpmv._core._testing.use_kernels(int8=True, bf16=True, avx512=False)
    load, model = timed(
        lambda: minicpmv.Model(
            args.llm,
            mmproj_path=args.mmproj,
            n_ctx=2048,
            n_threads=args.threads,
            cpu_repack=args.worker == "ours-repack",
            use_mmap=args.worker != "ours-no-mmap",
        )
    )
    prompt = model.tokenize(PREFILL_TEXT)[:N_PREFILL]
    res: dict = {"question_tokens": len(model.tokenize(QUESTION)), "load_time": load}

    def encode(size: int):
        img = picture(size)
        return model.encode_slices(minicpmv._core._testing.preprocess_image(img))

    # Warm-up: every weight page read once (the timed runs below read from memory, as llama.cpp's do).
    model.eval(prompt[:8])
    dump(args, f"{args.worker}-448", encode(448))
    model.reset()
    if "encode_448" in args.rows:
        res["encode_448"], _ = timed(lambda: encode(448))
    if "encode_1344" in args.rows:
        res["encode_1344"], _ = timed(lambda: encode(1344))
    if "ttft_1344" in args.rows:
        msgs = [{"role": "user", "content": [picture(1344), QUESTION]}]
        model.reset()
        res["ttft_1344"], _ = timed(lambda: model.chat(msgs, max_new_tokens=1, seed=0))
        res["ttft_positions"] = model.last_result.n_prompt
    if "prefill_512" in args.rows or "decode_64" in args.rows:
        model.reset()
        dt, logits = timed(lambda: model.eval(prompt))
        res["prefill_512"] = N_PREFILL / dt
        if "decode_64" in args.rows:
            res["decode_64"], res["decode_64_mean"] = decode_rate(lambda t: model.eval([t]), int(np.argmax(logits)))
    res["weights_bytes"] = model._model.weights_bytes
    res["peak_rss"] = peak_rss_mib()
    return res


def worker_llama(args) -> dict:
    import ctypes

    import llama_cpp
    import llama_cpp.mtmd_cpp as mtmd
    from llama_cpp.llama_chat_format import MiniCPMv26ChatHandler
    from PIL import Image

    if args.worker == "llama.cpp-plain":
        # Plain CPU buffers (use_extra_bufts off: no CPU_REPACK/AMX), as minicpmv runs by default.
        default_params = llama_cpp.llama_cpp.llama_model_default_params

        def plain_params():
            params = default_params()
            params.use_extra_bufts = False
            return params

        llama_cpp.llama_cpp.llama_model_default_params = plain_params
    t0 = time.perf_counter()
    handler = MiniCPMv26ChatHandler(clip_model_path=str(args.mmproj), verbose=False)
    llm = llama_cpp.Llama(
        str(args.llm),
        chat_handler=handler,
        n_ctx=2048,
        n_batch=512,
        n_ubatch=512,
        n_threads=args.threads,
        n_threads_batch=args.threads,
        flash_attn=args.llama_flash_attn,
        verbose=False,
    )
    handler._init_mtmd_context(llm)
    load = time.perf_counter() - t0
    ctx = handler.mtmd_ctx
    prompt = llm.tokenize(PREFILL_TEXT.encode(), add_bos=False)[:N_PREFILL]
    res: dict = {"question_tokens": len(llm.tokenize(QUESTION.encode(), add_bos=False)), "load_time": load}

    def encode(size: int):
        img = picture(size)
        data = (ctypes.c_uint8 * img.size).from_buffer_copy(img.tobytes())
        bitmap = mtmd.mtmd_bitmap_init(size, size, data)
        chunks = mtmd.mtmd_input_chunks_init()
        text = mtmd.mtmd_input_text()
        marker = mtmd.mtmd_default_marker()
        text.text, text.text_len, text.add_special, text.parse_special = marker, len(marker), False, True
        try:
            arr = (mtmd.mtmd_bitmap_p_ctypes * 1)(bitmap)
            if mtmd.mtmd_tokenize(ctx, chunks, ctypes.byref(text), arr, 1) != 0:
                raise RuntimeError("mtmd_tokenize failed")
            rows = []
            for i in range(mtmd.mtmd_input_chunks_size(chunks)):
                chunk = mtmd.mtmd_input_chunks_get(chunks, i)
                if mtmd.mtmd_input_chunk_get_type(chunk) == mtmd.MTMD_INPUT_CHUNK_TYPE_IMAGE:
                    if mtmd.mtmd_encode_chunk(ctx, chunk) != 0:
                        raise RuntimeError("mtmd_encode_chunk failed")
                    n = mtmd.mtmd_input_chunk_get_n_tokens(chunk)
                    rows.append(np.ctypeslib.as_array(mtmd.mtmd_get_output_embd(ctx), shape=(n * 3584,)).copy())
            return np.concatenate(rows)
        finally:
            mtmd.mtmd_input_chunks_free(chunks)
            mtmd.mtmd_bitmap_free(bitmap)

    llm.eval(prompt[:8])
    dump(args, "llama.cpp-448", encode(448))
    llm.reset()
    if "encode_448" in args.rows:
        res["encode_448"], _ = timed(lambda: encode(448))
    if "encode_1344" in args.rows:
        res["encode_1344"], out = timed(lambda: encode(1344))
        res["encode_1344_tokens"] = out.size // 3584
    if "ttft_1344" in args.rows:
        png = io.BytesIO()
        Image.fromarray(picture(1344)).save(png, format="PNG")
        url = "data:image/png;base64," + base64.b64encode(png.getvalue()).decode()
        messages = [
            {
                "role": "user",
                "content": [{"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": QUESTION}],
            }
        ]
        res["ttft_1344"], _ = timed(lambda: llm.create_chat_completion(messages=messages, max_tokens=1, seed=0))
        res["ttft_positions"] = llm.n_tokens
    if "prefill_512" in args.rows or "decode_64" in args.rows:
        llm.reset()
        llm._ctx.kv_cache_clear()
        dt, _ = timed(lambda: llm.eval(prompt))
        res["prefill_512"] = N_PREFILL / dt
        if "decode_64" in args.rows:
            n_vocab = llm.n_vocab()

            def last_logits():
                return np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llm._ctx.ctx, -1), shape=(n_vocab,))

            def step(tok):
                llm.eval([tok])
                return last_logits()

            res["decode_64"], res["decode_64_mean"] = decode_rate(step, int(np.argmax(last_logits())))
    res["peak_rss"] = peak_rss_mib()
    return res


def worker_torch(args) -> dict:
    sys.path.insert(0, str(HERE.parent / "tests"))
    import torch
    from PIL import Image

    from reference.chat import hf_slices
    from reference.models import load_vision_reference, reference_slice_embeddings

    torch.set_num_threads(args.threads)
    vpm, resampler = load_vision_reference(args.ckpt)

    def encode(size: int):
        pieces, _ = hf_slices(Image.fromarray(picture(size)))
        return [reference_slice_embeddings(vpm, resampler, np.asarray(p)) for p in pieces]

    dump(args, "torch-448", encode(448))
    res: dict = {}
    for size in (448, 1344):
        if f"encode_{size}" in args.rows:
            res[f"encode_{size}"], _ = timed(lambda: encode(size))  # noqa: B023 (run here)
    res["peak_rss"] = peak_rss_mib()
    return res


# "ours-repack": Model(cpu_repack=True), quantized weights in ggml's CPU_REPACK layout (ggml's kernels);
# "ours-no-mmap": Model(use_mmap=False), weights copied into allocated memory (as llama.cpp's repack does);
# "llama.cpp" runs with its defaults (extra buffer types: CPU_REPACK here), "llama.cpp-plain" without them.
WORKERS = {
    "ours": worker_ours,
    "ours-repack": worker_ours,
    "ours-no-mmap": worker_ours,
    "llama.cpp": worker_llama,
    "llama.cpp-plain": worker_llama,
    "torch": worker_torch,
}


# --- the driver ----------------------------------------------------------------------------------------


def source_digest() -> str:
    """A digest of the sources a minicpmv build compiles (to rebuild --isa builds when they change)."""
    root = HERE.parent
    files = subprocess.run(
        ["git", "-C", str(root), "ls-files", "csrc", "python", "CMakeLists.txt", "pyproject.toml"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    digest = hashlib.sha256()
    for name in sorted(files):
        if (root / name).is_file():
            digest.update(name.encode() + b"\0" + (root / name).read_bytes())
    return digest.hexdigest()


def isa_builds(cache_dir: Path, isa: str) -> tuple[Path, Path]:
    """minicpmv with its own ggml-python, and llama-cpp-python, built for `isa` under cache_dir/isa-<isa>/
    (pip --target directories; built from source with ISA_CMAKE_ARGS, never from pip's wheel cache)."""
    root = cache_dir / f"isa-{isa}"
    ours, llama = root / "minicpmv", root / "llama-cpp-python"
    env = dict(os.environ, CMAKE_ARGS=ISA_CMAKE_ARGS[isa])
    pip = [sys.executable, "-m", "pip", "install", "--quiet", "--no-cache-dir", "--upgrade", "--target"]
    # minicpmv's dependencies come from this environment; llama-cpp-python's go beside it.
    stamp, digest = root / "minicpmv.sources", source_digest()
    if not stamp.exists() or stamp.read_text() != digest:
        print(f"building minicpmv and ggml-python for {isa} into {ours} ...", flush=True)
        packages = ["--no-deps", "--no-binary", "ggml-python", "ggml-python==0.0.45", str(HERE.parent)]
        subprocess.run(pip + [str(ours), *packages], env=env, check=True)
        stamp.write_text(digest)
    stamp = root / "llama-cpp-python.installed"
    if not stamp.exists():
        print(f"building {LLAMA_CPP_PYTHON} for {isa} into {llama} ...", flush=True)
        subprocess.run(pip + [str(llama), "--no-binary", "llama-cpp-python", LLAMA_CPP_PYTHON], env=env, check=True)
        stamp.write_text(LLAMA_CPP_PYTHON)
    return ours, llama


def quantized_model(cache_dir: Path, llm_type: str) -> Path:
    """The `full` checkpoint's LLM as `llm_type`, quantized once from the F16 file with our quantizer."""
    f16 = full_model(cache_dir, "f16")
    if llm_type.upper() == "F16":
        return f16
    from minicpmv.convert.gguf_quantize import quantize_gguf, variant_file_name

    path = cache_dir / variant_file_name(llm_type.upper())
    if not path.exists():
        print(f"quantizing {f16.name} to {path.name} (once) ...", flush=True)
        quantize_gguf(f16, path, llm_type.upper(), progress=True)
    return path


def memory_bandwidth(cache_dir: Path, threads: int) -> float | None:
    exe = cache_dir / "membw"
    src = HERE / "membw.c"
    if not exe.exists() or exe.stat().st_mtime < src.stat().st_mtime:
        r = subprocess.run(
            ["cc", "-O3", "-march=native", "-fopenmp", str(src), "-o", str(exe)], capture_output=True, text=True
        )
        if r.returncode != 0:
            print(f"cannot build membw.c: {r.stderr.strip()}")
            return None
    out = subprocess.run([str(exe), str(threads), "1024", "10"], capture_output=True, text=True, check=True)
    return float(out.stdout.strip()) * 1e9


def peak_rates(cache_dir: Path, threads: int) -> dict[str, float]:
    """In-register G ops/s of each dot-product instruction this CPU has (benchmarks/peak.c)."""
    exe = cache_dir / "peak"
    src = HERE / "peak.c"
    if not exe.exists() or exe.stat().st_mtime < src.stat().st_mtime:
        r = subprocess.run(["cc", "-O2", "-fopenmp", str(src), "-o", str(exe)], capture_output=True, text=True)
        if r.returncode != 0:
            print(f"cannot build peak.c: {r.stderr.strip()}")
            return {}
    out = subprocess.run([str(exe), str(threads)], capture_output=True, text=True, check=True).stdout
    return {name: float(rate) for name, rate in (line.split() for line in out.splitlines())}


def product_ops(path: Path, prefix: str, skip: tuple[str, ...] = ()) -> int:
    """Multiplies and adds per input row of every 2-d weight under `prefix` (2 · rows · columns)."""
    from gguf import GGUFReader

    return sum(
        2 * int(t.shape[0]) * int(t.shape[1])
        for t in GGUFReader(path).tensors
        if t.name.startswith(prefix) and len(t.shape) == 2 and not t.name.startswith(skip)
    )


def decode_bytes_per_token(llm: Path) -> int:
    """Bytes of weights a decoder step reads: all tensors but the token embedding (one row of it)."""
    from gguf import GGUFReader

    return sum(int(t.n_bytes) for t in GGUFReader(llm).tensors if t.name != "token_embd.weight")


def load_avg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def run_worker(engine: str, args, files: dict) -> dict:
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--worker",
        engine,
        "--threads",
        str(args.threads),
        "--rows",
        ",".join(args.rows),
        "--llm",
        str(files["llm"]),
        "--mmproj",
        str(files["mmproj"]),
        "--ckpt",
        str(files["ckpt"]),
        "--isa",
        args.isa,
    ]
    if args.llama_flash_attn:
        cmd.append("--llama-flash-attn")
    if args.dump_dir:
        cmd += ["--dump-dir", str(args.dump_dir)]
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    extra_path = (
        args.llama_cpp_path if engine.startswith("llama.cpp") else args.ours_path if engine.startswith("ours") else None
    )
    if extra_path:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(extra_path), env.get("PYTHONPATH", "")) if p)
    load_before = load_avg()
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"{engine} worker failed:\n{proc.stderr[-4000:]}")
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    res["load_avg"] = f"{load_before} → {load_avg()}"
    res["wall"] = time.perf_counter() - t0
    return res


def fmt(value: float, unit: str) -> str:
    if unit == "s":
        return f"{value:.2f} s"
    if unit == "MiB":
        return f"{value:,.0f} MiB"
    return f"{value:.2f} {unit}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--llm-type", default="Q4_K_M", help="LLM file type (F16, or a size variant written with our quantizer)"
    )
    parser.add_argument("--mmproj-type", default="f16", choices=["f16", "f32", "q8_0"])
    parser.add_argument("--engines", default="ours,llama.cpp,torch", help="any of " + ", ".join(WORKERS))
    parser.add_argument("--rows", default=",".join(r for r in ROWS if r not in ("load_time", "peak_rss")))
    parser.add_argument("--llama-flash-attn", action="store_true", help="llama.cpp flash attention (LLM and CLIP)")
    parser.add_argument(
        "--llama-cpp-path",
        type=Path,
        default=Path("/work/llama-cpp-python"),
        help="directory holding the llama_cpp package (pip install --target DIR llama-cpp-python)",
    )
    parser.add_argument(
        "--ours-path", type=Path, help="run `ours` from a minicpmv installed there (pip install --target DIR .)"
    )
    parser.add_argument(
        "--isa",
        default="native",
        choices=["native", *ISA_CMAKE_ARGS],
        help="native: the engines as installed; avx2: ggml, minicpmv and llama-cpp-python built with AVX-512 off",
    )
    parser.add_argument("--json", type=Path, help="also write every run's numbers here")
    # worker mode (internal)
    parser.add_argument("--worker", choices=sorted(WORKERS), help=argparse.SUPPRESS)
    parser.add_argument("--llm", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--mmproj", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--ckpt", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--dump-dir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.rows = [r for r in args.rows.split(",") if r]

    if args.worker:
        print(json.dumps(WORKERS[args.worker](args)))
        return

    engines = [e for e in args.engines.split(",") if e]
    for e in engines:
        if e not in WORKERS:
            parser.error(f"unknown engine {e!r} (choose from {', '.join(WORKERS)})")
    scratch = tempfile.TemporaryDirectory(prefix="compare-")
    args.dump_dir = args.dump_dir or Path(scratch.name)
    files = {
        "llm": quantized_model(args.cache_dir, args.llm_type),
        "mmproj": full_mmproj(args.cache_dir, args.mmproj_type),
        "ckpt": args.cache_dir / "full-hf",
    }
    if args.isa != "native":
        if args.ours_path:
            parser.error("--isa builds its own minicpmv: leave out --ours-path")
        try:
            args.ours_path, args.llama_cpp_path = isa_builds(args.cache_dir, args.isa)
        except subprocess.CalledProcessError as e:
            sys.exit(f"compare.py: the {args.isa} build failed ({' '.join(e.cmd[-3:])}: exit {e.returncode})")
    print(f"machine: {machine()}; threads: {args.threads}; isa: {args.isa}; load before: {load_avg()}")
    print(f"files: {files['llm'].name} + {files['mmproj'].name}")

    # Bandwidth before and after the runs (the better one: other processes only ever lower it).
    bandwidth_before = memory_bandwidth(args.cache_dir, args.threads)

    # The engines that compete alternate; the torch reference (vision rows only) runs once per round after them.
    pair = [e for e in engines if e != "torch"]
    runs: dict[str, list[dict]] = {e: [] for e in engines}
    for rnd in range(args.rounds):
        order = pair if rnd % 2 == 0 else pair[::-1]
        if "torch" in engines and any(r.startswith("encode") for r in args.rows):
            order = order + ["torch"]
        for engine in order:
            res = run_worker(engine, args, files)
            runs[engine].append(res)
            shown = ", ".join(f"{k} {v:.3g}" for k, v in res.items() if isinstance(v, float) and k != "wall")
            print(f"  round {rnd + 1} {engine}: {shown} (load {res['load_avg']}, {res['wall']:.0f} s)", flush=True)

    bandwidth = (
        max(b for b in (bandwidth_before, memory_bandwidth(args.cache_dir, args.threads)) if b)
        if bandwidth_before
        else None
    )
    rows = args.rows + ["load_time", "peak_rss"]
    med = {
        e: {r: statistics.median([x[r] for x in runs[e] if r in x]) for r in rows if any(r in x for x in runs[e])}
        for e in engines
    }

    if args.json:
        args.json.write_text(json.dumps({"runs": runs, "medians": med, "bandwidth": bandwidth}, indent=1))

    names = [e for e in engines]
    ratios = [
        (a, b) for a in names if a.startswith("ours") for b in ("llama.cpp", "llama.cpp-plain", "torch") if b in names
    ]
    head = f"| {'row':<55} | " + " | ".join(f"{n:>14}" for n in names) + "".join(f" | {a} / {b}" for a, b in ratios)
    print()
    print(f"medians of {args.rounds} rounds; threads {args.threads}; load after: {load_avg()}")
    print(head + " |")
    print("|" + "---|" * (head.count("|")))
    for r in rows:
        label, unit, higher = ROW_INFO[r]
        cells = [fmt(med[e][r], unit) if r in med[e] else "–" for e in names]
        line = f"| {label:<55} | " + " | ".join(f"{c:>14}" for c in cells)
        for a, b in ratios:
            if r in med[a] and r in med[b]:
                # "× faster" for times and rates alike; for RSS the plain ratio ours/theirs.
                if r == "peak_rss":
                    line += f" | {med[a][r] / med[b][r]:.2f}× the memory"
                else:
                    line += f" | {(med[a][r] / med[b][r] if higher else med[b][r] / med[a][r]):.2f}× faster"
            else:
                line += " | –"
        print(line + " |")

    if "decode_64" in rows and bandwidth:
        per_token = decode_bytes_per_token(files["llm"])
        print(
            f"\nmemory read bandwidth ({args.threads} threads, benchmarks/membw.c): {bandwidth / 1e9:.1f} GB/s; "
            f"a decode step reads {per_token / 1e9:.2f} GB of weights (all but token_embd)"
        )
        print(f"bandwidth limit: {bandwidth / per_token:.2f} tok/s")
        for e in names:
            if "decode_64" in med[e]:
                frac = med[e]["decode_64"] * per_token / bandwidth
                print(f"  {e}: {med[e]['decode_64']:.2f} tok/s = {frac * 100:.0f} % of the bandwidth limit")
    peaks = peak_rates(args.cache_dir, args.threads)
    if peaks:
        from gguf import GGUFReader

        print(f"\nin-register peaks ({args.threads} threads, benchmarks/peak.c, G ops/s): "
              + ", ".join(f"{k} {v:.0f}" for k, v in peaks.items()))  # fmt: skip
        # Prefill: the layers' products per token (lm_head runs for the last token only; attention over
        # at most 512 keys adds < 3 %). Encode: the tower's products for 1024 patches plus attention
        # (QKᵀ and AV over 1024 keys); the resampler (< 1 %) left out.
        llm_ops = product_ops(files["llm"], "blk.")
        vit_ops = 1024 * product_ops(files["mmproj"], "v.blk.")
        vit_layers = sum(1 for t in GGUFReader(files["mmproj"]).tensors if t.name.endswith("attn_q.weight"))
        vit_ops += vit_layers * 2 * 2 * 1024 * 1024 * 1152
        avx512 = args.isa == "native"  # which instructions the kernels of this run use
        int8_peak = (avx512 and peaks.get("int8_vnni512")) or peaks.get("int8_avx2")
        vision_peak_name = "bf16_512" if avx512 and "bf16_512" in peaks else "f32_fma256"
        vision_peak = peaks.get(vision_peak_name)
        for e in names:
            parts = []
            if "prefill_512" in med[e] and int8_peak:
                rate = med[e]["prefill_512"] * llm_ops / 1e9
                parts.append(f"prefill {rate:.0f} G ops/s = {rate / int8_peak * 100:.0f} % of the int8 peak")
            if "encode_448" in med[e] and vision_peak:
                rate = vit_ops / med[e]["encode_448"] / 1e9
                parts.append(
                    f"encode 448 {rate:.0f} G ops/s = {rate / vision_peak * 100:.0f} % of the {vision_peak_name} peak"
                )
            if parts:
                print(f"  {e}: " + "; ".join(parts))
    reference = args.dump_dir / "torch-448.npy"
    if reference.exists():
        ref = np.load(reference)
        print(
            "\nresampler output of the 448×448 image against the PyTorch float32 reference (max |Δ| / max |ref|, rms):"
        )
        for e in names:
            path = args.dump_dir / f"{e}-448.npy"
            if e != "torch" and path.exists():
                out = np.load(path).reshape(ref.shape)
                print(
                    f"  {e}: {np.abs(out - ref).max() / np.abs(ref).max():.2e}, "
                    f"{np.sqrt(((out - ref) ** 2).mean() / (ref**2).mean()):.2e}"
                )
    for e in names:
        extra = {
            k: runs[e][0][k]
            for k in ("ttft_positions", "question_tokens", "encode_1344_tokens", "decode_64_mean")
            if k in runs[e][0]
        }
        if extra:
            print(f"{e}: {extra}")


if __name__ == "__main__":
    main()
