"""Bad input gets a clear exception (or CLI error) naming the problem, never a crash: every case runs
in this process, so an abort inside ggml would kill the test run."""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from gguf import GGMLQuantizationType, GGUFReader, GGUFValueType, GGUFWriter

import minicpmv
from minicpmv.convert.gguf_quantize import quantize_gguf


@pytest.fixture(scope="module")
def model(tiny_gguf_f32):
    return minicpmv.Model(tiny_gguf_f32, n_ctx=64, kv_cache_type="f32")


@pytest.fixture(scope="module")
def gguf_parts(tiny_gguf_f16):
    """The tiny model's metadata and tensors, read once (parsing 151k token strings is slow)."""
    reader = GGUFReader(tiny_gguf_f16)
    fields = []
    for field in reader.fields.values():
        if field.name.startswith("GGUF.") or field.name == "general.architecture":
            continue
        vtype = field.types[0]
        fields.append((field.name, field.contents(), vtype, field.types[-1] if vtype == GGUFValueType.ARRAY else None))
    tensors = [(t.name, np.array(t.data), t.tensor_type) for t in reader.tensors]
    return reader.get_field("general.architecture").contents(), fields, tensors


def write_variant(
    parts,
    dst: Path,
    arch: str | None = None,
    drop: str | None = None,
    reshape: str | None = None,
    values: dict | None = None,
) -> Path:
    """A copy of the tiny GGUF with its architecture renamed, one tensor left out, one tensor cut in half
    or some metadata values replaced."""
    src_arch, fields, tensors = parts
    writer = GGUFWriter(dst, arch or src_arch)
    for name, value, vtype, sub in fields:
        writer.add_key_value(name, (values or {}).get(name, value), vtype, sub_type=sub)
    for name, data, dtype in tensors:
        if name == drop:
            continue
        if name == reshape:
            data = data.reshape(-1)[: data.size // 2]
        writer.add_tensor(name, data, raw_dtype=dtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return dst


def test_missing_file(tmp_path):
    with pytest.raises(minicpmv.ModelFileError, match="cannot open"):
        minicpmv.Model(tmp_path / "nope.gguf")
    with pytest.raises(minicpmv.ModelFileError, match="not a regular file"):
        minicpmv.Model(tmp_path)


def test_not_a_gguf(tmp_path):
    path = tmp_path / "junk.gguf"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(1000))
    with pytest.raises(minicpmv.ModelFormatError, match="not a GGUF"):
        minicpmv.Model(path)


@pytest.mark.parametrize("fraction", [0.5, 0.999])
def test_truncated_tensor_data(tiny_gguf_f32, tmp_path, fraction):
    data = Path(tiny_gguf_f32).read_bytes()
    path = tmp_path / "cut.gguf"
    path.write_bytes(data[: int(len(data) * fraction)])
    with pytest.raises(minicpmv.ModelFormatError, match="truncated"):
        minicpmv.Model(path)


def test_truncated_header(tiny_gguf_f32, tmp_path):
    path = tmp_path / "header.gguf"
    path.write_bytes(Path(tiny_gguf_f32).read_bytes()[:4096])
    with pytest.raises(minicpmv.ModelFormatError):
        minicpmv.Model(path)


def zero_dimension(src: Path, dst: Path, tensor: str, dim: int) -> Path:
    """A copy of src with one dimension of one tensor's description set to 0."""
    data = bytearray(Path(src).read_bytes())
    name = tensor.encode()
    at = data.index(len(name).to_bytes(8, "little") + name) + 8 + len(name)
    assert dim < int.from_bytes(data[at : at + 4], "little")
    data[at + 4 + 8 * dim : at + 12 + 8 * dim] = bytes(8)
    dst.write_bytes(bytes(data))
    return dst


@pytest.mark.parametrize("tensor,dim", [("blk.0.attn_q.bias", 0), ("output.weight", 1), ("token_embd.weight", 0)])
def test_a_zero_dimension_is_refused_not_divided_by(tiny_gguf_f32, tmp_path, tensor, dim):
    # ggml's parser divides by every dimension (SIGFPE) before it checks anything: found before it runs.
    path = zero_dimension(tiny_gguf_f32, tmp_path / "zero.gguf", tensor, dim)
    with pytest.raises(minicpmv.ModelFormatError, match=f"tensor '{tensor}' has a zero dimension"):
        minicpmv.Model(path)
    cli = Path(minicpmv.__file__).parent / "minicpmv-cli"
    out = subprocess.run([str(cli), "-m", str(path), "-p", "hi"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "has a zero dimension" in out.stderr, out.stderr


def test_a_zero_dimension_in_the_vision_file_is_refused(tiny_gguf_f32, tiny_mmproj_f16, tmp_path):
    path = zero_dimension(tiny_mmproj_f16, tmp_path / "zero-mmproj.gguf", "v.blk.1.attn_k.weight", 1)
    with pytest.raises(minicpmv.ModelFormatError, match="tensor 'v.blk.1.attn_k.weight' has a zero dimension"):
        minicpmv.Model(tiny_gguf_f32, mmproj_path=path)


def retype(src: Path, dst: Path, tensor: str, new_type: GGMLQuantizationType) -> Path:
    """A copy of src with one tensor's type field changed (its bytes left as they are)."""
    data = bytearray(Path(src).read_bytes())
    name = tensor.encode()
    at = data.index(len(name).to_bytes(8, "little") + name) + 8 + len(name)
    at += 4 + 8 * int.from_bytes(data[at : at + 4], "little")
    data[at : at + 4] = int(new_type).to_bytes(4, "little")
    dst.write_bytes(bytes(data))
    return dst


@pytest.mark.parametrize(
    "tensor,stored,new_type",
    [
        ("token_embd.weight", "f32", GGMLQuantizationType.I32),
        ("blk.0.attn_q.weight", "f32", GGMLQuantizationType.I32),
        ("blk.2.ffn_down.weight", "f16", GGMLQuantizationType.I16),
    ],
)
def test_an_integer_type_of_the_same_size_is_refused(tiny_gguf_f32, tiny_gguf_f16, tmp_path, tensor, stored, new_type):
    # Issue 14: a type field changed to another type of the same byte size loaded, then failed at decode.
    src = tiny_gguf_f32 if stored == "f32" else tiny_gguf_f16
    path = retype(src, tmp_path / "retyped.gguf", tensor, new_type)
    with pytest.raises(
        minicpmv.ModelFormatError, match=f"tensor '{tensor}' has an unusable type {new_type.name.lower()}"
    ):
        minicpmv.Model(path)


def test_a_quantized_type_read_as_its_same_size_twin_is_refused(tiny_gguf_f32, tmp_path):
    # Q3_K and IQ3_S blocks are both 110 bytes; read as IQ3_S, Q3_K's high-bit masks become the f16
    # block scales, and among thousands of blocks some are NaN or infinite (ggml_validate_row_data).
    q3 = quantize_gguf(tiny_gguf_f32, tmp_path / "q3.gguf", "Q3_K_S", progress=False)
    tensors = GGUFReader(q3).tensors
    tensor = max((t for t in tensors if t.tensor_type == GGMLQuantizationType.Q3_K), key=lambda t: t.n_elements)
    minicpmv.Model(q3)  # loads as it is
    path = retype(q3, tmp_path / "iq3.gguf", tensor.name, GGMLQuantizationType.IQ3_S)
    with pytest.raises(minicpmv.ModelFormatError, match=f"'{tensor.name}' \\(iq3_s\\) holds NaN or infinite values"):
        minicpmv.Model(path)


@pytest.mark.parametrize("value", [np.nan, -np.inf])
def test_nan_or_infinite_weights_are_refused(gguf_parts, tmp_path, value):
    arch, fields, tensors = gguf_parts
    tensors = [
        (
            n,
            np.where(np.arange(d.size).reshape(d.shape) == 77, value, d).astype(d.dtype)
            if n == "blk.1.ffn_up.weight"
            else d,
            t,
        )
        for n, d, t in tensors
    ]
    path = write_variant((arch, fields, tensors), tmp_path / "nan.gguf")
    with pytest.raises(minicpmv.ModelFormatError, match="'blk.1.ffn_up.weight' \\(f16\\) holds NaN or infinite values"):
        minicpmv.Model(path)


@pytest.mark.parametrize("change", ["truncated", "rewritten", "vision file truncated"])
def test_a_mapped_file_changed_under_the_model_is_an_error_not_sigbus(tiny_gguf_f32, tiny_mmproj_f16, tmp_path, change):
    # Issue 14: a model file truncated while mapped killed the process with SIGBUS at the next read of
    # a lost page; one rewritten in place changed the weights under the model without a word.
    llm, mmproj = tmp_path / "llm.gguf", tmp_path / "mmproj.gguf"
    shutil.copy(tiny_gguf_f32, llm)
    shutil.copy(tiny_mmproj_f16, mmproj)
    model = minicpmv.Model(llm, mmproj_path=mmproj, n_ctx=256, use_mmap=True)
    image = np.random.default_rng(0).integers(0, 256, (40, 60, 3), np.uint8)
    msgs = [{"role": "user", "content": [image, "What is this?"]}]
    model.chat(msgs, max_new_tokens=2, sampling=False)
    if change == "truncated":
        os.truncate(llm, 1 << 16)
    elif change == "rewritten":
        size = llm.stat().st_size
        with open(llm, "r+b") as f:
            f.seek(size // 2)
            f.write(bytes(size - size // 2))
    else:
        os.truncate(mmproj, 1 << 16)
    name = mmproj.name if change.startswith("vision") else llm.name
    for _ in range(2):
        with pytest.raises(
            minicpmv.ModelFileError, match=f"{name}' was truncated or rewritten while the model was using it"
        ):
            model.chat(msgs, max_new_tokens=2, sampling=False)


def test_an_empty_key_is_refused_not_asserted(tmp_path):
    # Found by fuzz_model_load: ggml's GGUF parser aborts the process on a key of length 0.
    path = tmp_path / "empty-key.gguf"
    path.write_bytes(b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + struct.pack("<QI", 0, 0) + b"\x01")
    with pytest.raises(minicpmv.ModelFormatError, match="an empty key"):
        minicpmv.Model(path)


def test_other_architecture(gguf_parts, tmp_path):
    path = write_variant(gguf_parts, tmp_path / "llama.gguf", arch="llama")
    with pytest.raises(minicpmv.ModelFormatError, match="architecture is 'llama'"):
        minicpmv.Model(path)


def test_missing_tensor(gguf_parts, tmp_path):
    path = write_variant(gguf_parts, tmp_path / "missing.gguf", drop="blk.1.ffn_up.weight")
    with pytest.raises(minicpmv.ModelFormatError, match="blk.1.ffn_up.weight' is missing"):
        minicpmv.Model(path)


@pytest.mark.parametrize(
    "key,value,match",
    [
        ("qwen2.rope.freq_base", float("inf"), "rope.freq_base must be a finite number above 1, got inf"),
        ("qwen2.rope.freq_base", float("nan"), "rope.freq_base must be a finite number above 1"),
        ("qwen2.attention.layer_norm_rms_epsilon", float("inf"), r"RMS norm epsilon must lie in \(0, 1\), got inf"),
        ("qwen2.attention.layer_norm_rms_epsilon", 0.0, r"RMS norm epsilon must lie in \(0, 1\)"),
        ("qwen2.attention.head_count", 64, "head dimension 4 is not a multiple of 8"),
    ],
)
def test_absurd_llm_hyper_parameters_are_refused(gguf_parts, tmp_path, key, value, match):
    path = write_variant(gguf_parts, tmp_path / "absurd.gguf", values={key: value})
    with pytest.raises(minicpmv.ModelFormatError, match=match):
        minicpmv.Model(path)


@pytest.mark.parametrize(
    "key,value,match",
    [
        ("clip.vision.image_size", 14, "image_size 14 is not 2 to 70 patches of 14"),
        ("clip.vision.image_size", 1000, "image_size 1000 is not 2 to 70 patches of 14"),
        ("clip.vision.attention.head_count", 12, "12 heads of 8 values"),  # legal: loads
        ("clip.vision.attention.head_count", 48, "48 heads of 2 values: not a multiple of 8"),
        ("clip.vision.attention.layer_norm_epsilon", float("inf"), r"layer norm epsilon must lie in \(0, 1\), got inf"),
    ],
)
def test_absurd_vision_hyper_parameters_are_refused(tiny_gguf_f32, tiny_mmproj_f16, tmp_path, key, value, match):
    reader = GGUFReader(tiny_mmproj_f16)
    fields = [
        (f.name, f.contents(), f.types[0], f.types[-1] if f.types[0] == GGUFValueType.ARRAY else None)
        for f in reader.fields.values()
        if not f.name.startswith("GGUF.") and f.name != "general.architecture"
    ]
    parts = ("clip", fields, [(t.name, np.array(t.data), t.tensor_type) for t in reader.tensors])
    path = write_variant(parts, tmp_path / "absurd-mmproj.gguf", values={key: value})
    if "heads of 8" in match:
        minicpmv.Model(tiny_gguf_f32, mmproj_path=path)
        return
    with pytest.raises(minicpmv.ModelFormatError, match=match):
        minicpmv.Model(tiny_gguf_f32, mmproj_path=path)


def test_wrong_tensor_shape(gguf_parts, tmp_path):
    path = write_variant(gguf_parts, tmp_path / "shape.gguf", reshape="blk.0.attn_q.bias")
    with pytest.raises(minicpmv.ModelFormatError, match=r"blk.0.attn_q.bias' has shape \[\d+\], expected"):
        minicpmv.Model(path)


@pytest.mark.parametrize(
    "msgs,match",
    [
        ([], "empty"),
        ("hello", "list"),
        ([{"role": "user"}], "'role' and 'content'"),
        ([{"role": "robot", "content": "hi"}], "unknown role 'robot'"),
        ([{"role": "assistant", "content": "hi"}], "first message"),
        ([{"role": "user", "content": "hi"}, {"role": "system", "content": "x"}], "unknown role 'system'"),
    ],
)
def test_bad_messages(model, msgs, match):
    with pytest.raises(minicpmv.InvalidArgumentError, match=match):
        model.chat(msgs)


def test_image_without_vision_file(model):
    with pytest.raises(minicpmv.UnsupportedError, match="mmproj"):
        model.chat([{"role": "user", "content": [np.zeros((4, 4, 3), np.uint8), "What is this?"]}])


def test_context_overflow_then_still_usable(model):
    with pytest.raises(minicpmv.ContextFullError, match="context holds 64"):
        model.chat([{"role": "user", "content": "word " * 200}], max_new_tokens=4)
    assert isinstance(model.chat([{"role": "user", "content": "hi"}], max_new_tokens=4, seed=0), str)


def test_generation_stops_at_the_end_of_the_context(model):
    ids = model.chat_prompt([{"role": "user", "content": "hi"}])
    out = model.generate(ids, max_new_tokens=1000, temperature=0.0, repetition_penalty=1.0)
    assert out.stop_reason in ("length", "stop")
    assert len(ids) + len(out.tokens) <= model.n_ctx


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(top_p=1.5), "top_p"),
        (dict(min_p=2.0), "min_p"),
        (dict(repetition_penalty=0.0), "repetition_penalty"),
        (dict(temperature=float("nan")), "temperature"),
        (dict(max_new_tokens=-1), "max_new_tokens"),
        (dict(sampling=False, num_beams=0), "num_beams"),
    ],
)
def test_bad_generation_parameters(model, kwargs, match):
    with pytest.raises(minicpmv.InvalidArgumentError, match=match):
        model.chat([{"role": "user", "content": "hi"}], **kwargs)


@pytest.mark.parametrize(
    "kwargs,exc,match",
    [
        (dict(n_ctx=0), minicpmv.InvalidArgumentError, "n_ctx"),
        (dict(n_threads=-2), minicpmv.InvalidArgumentError, "n_threads"),
        (dict(kv_cache_type="q3"), minicpmv.InvalidArgumentError, "kv_cache_type"),
        (dict(device="warp-drive"), minicpmv.UnsupportedError, "warp-drive"),
        (dict(mmproj_path="no-such-mmproj.gguf"), minicpmv.ModelFileError, "no-such-mmproj.gguf"),
    ],
)
def test_bad_model_parameters(tiny_gguf_f32, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        minicpmv.Model(tiny_gguf_f32, **kwargs)


def test_out_of_vocabulary_ids(model):
    model.reset()
    with pytest.raises(minicpmv.InvalidArgumentError, match="outside the vocabulary"):
        model.eval([10**9])
    with pytest.raises(minicpmv.InvalidArgumentError):
        model.detokenize([-1])


def bomb_png(path: Path, side: int = 20000) -> Path:
    """A PNG header claiming side×side pixels (no pixel data): Pillow refuses it on open as a bomb."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b""))
    return path


def test_a_decompression_bomb_is_an_invalid_image(tiny_gguf_f32, tiny_mmproj_f32, tmp_path):
    bomb = bomb_png(tmp_path / "bomb.png")
    model = minicpmv.Model(tiny_gguf_f32, mmproj_path=tiny_mmproj_f32, n_ctx=256)
    with pytest.raises(minicpmv.InvalidArgumentError, match="not a readable image .*decompression bomb"):
        model.chat([{"role": "user", "content": [bomb, "What is it?"]}])
    out = subprocess.run(
        [sys.executable, "-m", "minicpmv.cli", "chat", "-m", str(tiny_gguf_f32), "--mmproj", str(tiny_mmproj_f32),
         "--image", str(bomb), "What is it?"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 2 and "not a readable image" in out.stderr and "Traceback" not in out.stderr, out.stderr


def test_cli_errors_are_messages(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "minicpmv.cli", "chat", "-m", str(tmp_path / "x.gguf"), "hi"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 2
    assert "minicpmv: error: cannot open" in out.stderr and "Traceback" not in out.stderr
    cli = Path(minicpmv.__file__).parent / "minicpmv-cli"
    out = subprocess.run(
        [str(cli), "-m", str(tmp_path / "x.gguf"), "-p", "hi"], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 2 and "error: cannot open" in out.stderr


def test_absurd_thread_counts_and_special_paths_are_refused(tiny_gguf_f32, tmp_path):
    # Issue 14: 100000 threads crashed libgomp; a FIFO hung in open(); a NUL ended the path early.
    with pytest.raises(minicpmv.InvalidArgumentError, match="n_threads must be 0 .* to 1024"):
        minicpmv.Model(tiny_gguf_f32, n_threads=100000)
    fifo = tmp_path / "model.gguf"
    os.mkfifo(fifo)
    with pytest.raises(minicpmv.ModelFileError, match="not a regular file"):
        minicpmv.Model(fifo)
    with pytest.raises((minicpmv.ModelFileError, ValueError), match="NUL|null"):
        minicpmv.Model(str(tiny_gguf_f32) + "\0ignored")
    cli = Path(minicpmv.__file__).parent / "minicpmv-cli"
    out = subprocess.run([str(cli), "-m", str(tiny_gguf_f32), "-p", "Hi", "-t", "-3", "-n", "1"],
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    assert out.returncode != 0 and "n_threads must be" in out.stderr
