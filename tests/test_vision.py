"""Images end to end against the reference pipeline (tests/reference/chat.py: HF MiniCPM-V chat()
rebuilt from transformers' Idefics2VisionTransformer, a torch.nn.MultiheadAttention resampler, Pillow
and the checkpoint's tokenizer) on the tiny synthetic checkpoint.

Tolerances: F32 files compute what the float32 reference computes (measured ≤ 1e-6 relative on the
resampler outputs; bound 1e-4). F16 vision weights round each weight to 11 significant bits (measured
≤ 7.5e-4 with ggml's f16 kernels); on a CPU with AVX-512 BF16 the f16 file runs in bfloat16 with f32
sums (csrc/kernels/bf16_kernels.h: 8 significant bits, the checkpoint's own precision; measured ≤ 8.7e-3 here,
3.4e-3 on the full-size model, where PyTorch running the encoder in bf16 is 3.4e-3 off too): bound 2e-2.
"""

from __future__ import annotations

import io

import av
import numpy as np
import pytest
import torch
from PIL import Image

import minicpmv
from reference.chat import hf_slices, reference_greedy, reference_inputs_embeds, reference_prompt
from reference.models import (
    load_hf_tokenizer,
    load_qwen2_reference,
    load_vision_reference,
    navit_position_ids,
    reference_vision_embeddings,
    sincos_2d_reference,
    tgt_sizes_of,
)

GREEDY = dict(sampling=False, num_beams=1, repetition_penalty=1.0, max_new_tokens=16)


def picture(width: int, height: int, seed: int) -> Image.Image:
    """Smooth gradients, stripes and a little noise: structure for the resize and the encoder."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    r = 127 + 120 * np.sin(x / (7 + seed) + y / 31)
    g = 255 * x / max(width - 1, 1)
    b = 255 * ((x // 9 + y // 13) % 2)
    img = np.stack([r, g, b], axis=-1) + rng.normal(0, 12, (height, width, 3))
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))


@pytest.fixture(scope="module")
def references(tiny_ckpt):
    vpm, resampler = load_vision_reference(tiny_ckpt)
    return load_qwen2_reference(tiny_ckpt), vpm, resampler, load_hf_tokenizer(tiny_ckpt)


@pytest.fixture(scope="module")
def model(tiny_gguf_f32, tiny_mmproj_f32):
    return minicpmv.Model(tiny_gguf_f32, mmproj_path=tiny_mmproj_f32, n_ctx=4096, kv_cache_type="f32")


def normalised(piece: Image.Image) -> np.ndarray:
    return ((np.asarray(piece, dtype=np.float32) / 255 - 0.5) / 0.5).transpose(2, 0, 1)


# docs/model.md §4: the sides where a float32 step (HF: 1 / an int32 tgt_sizes entry) and a float64 step
# (1 / a Python int) bucket differently, measured with torch 2.13.
STEP_SENSITIVE_SIDES = {25, 49, 50, 55, 58, 82, 86, 94, 95, 98, 100, 110, 115, 125}


def test_position_ids_equal_hf_for_every_side():
    for n in range(1, 129):
        for rows, cols in ((n, 1), (1, n), (n, n), (n, 129 - n)):
            expected = navit_position_ids(tgt_sizes_of([(rows, cols)])[0]).tolist()
            assert minicpmv._core._testing.position_ids(cols, rows) == expected, (rows, cols)


def test_a_float64_step_would_move_buckets_at_the_step_sensitive_sides():
    # What the runtime computed before (and a reference dividing by a Python int): this is what the
    # test above tells apart.
    boundaries = torch.arange(1 / 70, 1.0, 1 / 70)
    differ = set()
    for n in range(1, 129):
        float64_step = torch.bucketize(torch.arange(0, 1 - 1e-6, 1 / n), boundaries, right=True)
        if float64_step.tolist() != minicpmv._core._testing.position_ids(n, 1):
            differ.add(n)
    assert differ == STEP_SENSITIVE_SIDES


@pytest.mark.parametrize("rows,cols", [(1, 1), (18, 55), (32, 32), (70, 70), (10, 100), (125, 3)])
def test_resampler_positions_equal_hf_table(rows, cols):
    # HF: numpy float32 from a 70×70 table grown to the largest grid. Ours rounds ω and each angle to
    # float32 as numpy does, with correctly rounded powf/sin/cos; numpy's SIMD float32 power (SVML on
    # AVX-512) leaves some ω one ulp off, which positions up to 125 turn into ≤ 1.2e-5 (measured
    # 1.9e-6 at 70×70). Most values are then equal to the bit (measured 83–85 %); angles computed in
    # double, as before, match 42–58 %.
    embed = 256
    table = sincos_2d_reference(embed, (max(rows, 70), max(cols, 70)))
    expected = table[:rows, :cols].reshape(rows * cols, embed)
    diff = np.abs(minicpmv._core._testing.sincos_2d(cols, rows, embed) - expected)
    assert diff.max() <= 2e-5
    assert (diff == 0).mean() >= 0.75


@pytest.mark.parametrize(
    "vision_type,kernels,bound",
    # ggml's kernels: f16 products of f16-rounded activations, measured ≤ 8.6e-4; the f16 kernels of an
    # AVX2 CPU (f32 activations, attention in f32, padded slices masked) ≤ 1.2e-6; the bf16 kernels
    # ≤ 6.9e-3 (the bound tells them apart)
    [("f32", "ours", 1e-4), ("f16", "ours", 2e-2), ("f16", "avx2", 2e-5), ("f16", "ggml", 2e-3)],
)
def test_slices_of_different_sizes_batched_equal_the_reference(
    request, tiny_gguf_f32, references, use_kernels, vision_type, kernels, bound
):
    _, vpm, resampler, _ = references
    if kernels == "ggml":
        use_kernels(int8=False, bf16=False)
    if kernels == "avx2":
        use_kernels(avx512=False)
        if minicpmv._core._testing.f16_matmul(np.zeros((1, 8), np.uint16), np.zeros((1, 8), np.float32)) is None:
            pytest.skip("this CPU has no AVX2 with FMA")
    model = minicpmv.Model(tiny_gguf_f32, mmproj_path=request.getfixturevalue(f"tiny_mmproj_{vision_type}"))
    rng = np.random.default_rng(1)
    # (W, H), multiples of 14; 770×252 and 252×770 have a step-sensitive side (55).
    sizes = [(448, 448), (364, 546), (14, 28), (602, 336), (1008, 14), (770, 252), (252, 770), (1400, 350)]
    slices = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for w, h in sizes]
    ours = model.encode_slices([np.ascontiguousarray(normalised(Image.fromarray(s))) for s in slices])
    theirs_all = reference_vision_embeddings(vpm, resampler, slices)  # one HF batch, padded and masked
    for size, row, theirs in zip(sizes, ours, theirs_all):
        err = np.abs(row.reshape(theirs.shape) - theirs).max() / np.abs(theirs).max()
        print(f"{vision_type}, {kernels} kernels, {size}: {err:.1e}")
        assert err <= bound, (size, err)


def make_video(path, seconds: int, fps: int = 4, size=(640, 360)):
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.width, stream.height, stream.pix_fmt = size[0], size[1], "yuv420p"
        for i in range(seconds * fps):
            frame = av.VideoFrame.from_image(picture(*size, seed=i))
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def user(*content) -> dict:
    return {"role": "user", "content": list(content)}


def conversations(tmp_path_factory):
    video = tmp_path_factory.mktemp("video") / "clip.mp4"
    make_video(video, seconds=6)
    frames = minicpmv.video.load_frames(video)
    assert len(frames) == 6
    what = "What is this?"
    return {
        "one image": ([user(picture(800, 600, 1), "What is in the picture?")], {}),
        "three images": (
            [user(picture(500, 500, 2), picture(300, 200, 3), picture(1920, 1080, 4), "Compare the three pictures.")],
            {},
        ),
        "two-shot": (
            [
                user(picture(448, 448, 5), "What colour dominates?"),
                {"role": "assistant", "content": "Red."},
                user(picture(640, 480, 6), "What colour dominates?"),
                {"role": "assistant", "content": "Green."},
                user(picture(1000, 3000, 7), "What colour dominates?"),
            ],
            {},
        ),
        "video": ([user(*frames, "Describe the video.")], dict(use_image_id=False, max_slice_nums=2)),
        # Grids with step-sensitive sides (docs/model.md §4): overview 18×55 patches, 2×4 slices of 26×39.
        "tall 1000x3000": ([user(picture(1000, 3000, 15), what)], {}),
        "wide 900x300": ([user(picture(900, 300, 16), what)], {}),  # overview 55×18
        "350x700": ([user(picture(350, 700, 17), what)], {}),
        "700x350": ([user(picture(700, 350, 18), what)], {}),
        "small tall upscaled 40x390": ([user(picture(40, 390, 19), what)], {}),  # 10×100
        "small wide upscaled 50x30": ([user(picture(50, 30, 20), what)], {}),  # 41×25
        "three aspect ratios": (
            [user(picture(1000, 3000, 21), picture(900, 300, 22), picture(700, 350, 23), "Which is the widest?")],
            {},
        ),
    }


@pytest.fixture(scope="module")
def cases(tmp_path_factory):
    return conversations(tmp_path_factory)


@pytest.mark.parametrize(
    "name",
    [
        "one image",
        "three images",
        "two-shot",
        "video",
        "tall 1000x3000",
        "wide 900x300",
        "350x700",
        "700x350",
        "small tall upscaled 40x390",
        "small wide upscaled 50x30",
        "three aspect ratios",
    ],
)
def test_chat_with_images_equals_the_reference(model, references, cases, name):
    qwen2, vpm, resampler, tokenizer = references
    msgs, options = cases[name]
    ids, slices = reference_prompt(tokenizer, msgs, **options)
    # Prompt ids, markers and embedding positions included.
    assert model.chat_prompt(msgs, **options) == ids

    # The embedding sequence: our slices and their resampler outputs against the reference's.
    images = [c for m in msgs if not isinstance(m["content"], str) for c in m["content"] if isinstance(c, Image.Image)]
    ours = [
        a
        for img in images
        for a in minicpmv._core._testing.preprocess_image(np.asarray(img), options.get("max_slice_nums", 9))
    ]
    assert [a.shape for a in ours] == [normalised(s).shape for s in slices]
    for a, s in zip(ours, slices):
        assert np.abs(a - normalised(s)).max() <= 1 / 127.5
    # All slices of the request in one reference batch, as HF's get_vllm_embedding runs them.
    embedded = model.encode_slices(ours)
    for i, (row, theirs) in enumerate(
        zip(embedded, reference_vision_embeddings(vpm, resampler, [np.asarray(s) for s in slices]))
    ):
        err = np.abs(row.reshape(theirs.shape) - theirs).max() / np.abs(theirs).max()
        assert err <= 1e-4, (i, slices[i].size, err)

    # The answer: 16 greedy tokens.
    embeds = reference_inputs_embeds(qwen2, vpm, resampler, tokenizer, ids, slices)
    expected = reference_greedy(qwen2, embeds, model._model.stop_ids, 16)
    model.reset()
    text = model.chat(msgs, **options, **GREEDY)
    assert model.last_result.tokens == expected
    assert text == model.detokenize(expected)


def test_an_image_is_encoded_once_per_conversation(model):
    img = picture(800, 600, 11)
    msgs = [{"role": "user", "content": [img, "Describe it."]}]
    model.reset()
    answer = model.chat(msgs, **GREEDY)
    first = model.last_result
    assert first.n_encoded == 5  # overview + 2×2 slices
    msgs += [{"role": "assistant", "content": answer}, {"role": "user", "content": "And the colours?"}]
    model.chat(msgs, **GREEDY)
    assert model.last_result.n_encoded == 0
    assert model.last_result.n_reused >= first.n_prompt
    # A different image in the same place is encoded again.
    msgs[0] = {"role": "user", "content": [picture(800, 600, 12), "Describe it."]}
    model.chat(msgs, **GREEDY)
    assert model.last_result.n_encoded == 5


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "CMYK", "I;16"])
def test_any_pil_mode_is_converted_to_rgb_as_hf_does(model, mode):
    rgb = picture(300, 200, 13)
    img = rgb.convert(mode)
    expected = model.chat_prompt([{"role": "user", "content": [img.convert("RGB"), "?"]}])
    assert model.chat_prompt([{"role": "user", "content": [img, "?"]}]) == expected
    model.reset()
    assert isinstance(model.chat([{"role": "user", "content": [img, "?"]}], max_new_tokens=2, seed=0), str)


@pytest.mark.parametrize("size", [(1, 1), (20000, 20), (20, 20000)])
def test_extreme_sizes_are_handled(model, size):
    img = Image.new("RGB", size, (200, 30, 90))
    pieces, grid = hf_slices(img)
    ours = minicpmv._core._testing.preprocess_image(np.asarray(img))
    assert [a.shape[1:] for a in ours] == [(p.height, p.width) for p in pieces]
    model.reset()
    assert isinstance(model.chat([{"role": "user", "content": [img, "What is this?"]}], max_new_tokens=2, seed=0), str)


def test_encoded_bytes_and_arrays_are_images(model):
    img = picture(300, 200, 14)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    expected = model.chat_prompt([{"role": "user", "content": [img, "?"]}])
    assert model.chat_prompt([{"role": "user", "content": [buf.getvalue(), "?"]}]) == expected
    assert model.chat_prompt([{"role": "user", "content": [np.asarray(img), "?"]}]) == expected


def test_bad_images_are_clear_errors(model, tiny_gguf_f32):
    with pytest.raises(minicpmv.InvalidArgumentError, match="not a readable image"):
        model.chat([{"role": "user", "content": [b"definitely not a PNG", "?"]}])
    with pytest.raises(minicpmv.InvalidArgumentError, match="uint8"):
        model.chat([{"role": "user", "content": [np.zeros((8, 8, 3), np.float32), "?"]}])
    with pytest.raises(minicpmv.InvalidArgumentError, match="empty"):
        model.chat([{"role": "user", "content": [Image.new("RGB", (0, 0)), "?"]}])
    with pytest.raises(minicpmv.InvalidArgumentError, match="max_slice_nums"):
        model.chat([{"role": "user", "content": [picture(30, 30, 0), "?"]}], max_slice_nums=0)
    text_only = minicpmv.Model(tiny_gguf_f32)
    with pytest.raises(minicpmv.UnsupportedError, match="mmproj"):
        text_only.chat([{"role": "user", "content": [picture(30, 30, 0), "?"]}])


def test_more_images_than_the_context_holds(tiny_gguf_f32, tiny_mmproj_f32):
    small = minicpmv.Model(tiny_gguf_f32, mmproj_path=tiny_mmproj_f32, n_ctx=512)
    msgs = [{"role": "user", "content": [picture(1344, 1344, i) for i in range(3)] + ["?"]}]
    with pytest.raises(minicpmv.ContextFullError, match="context holds 512"):
        small.chat(msgs, max_new_tokens=4)
    assert small.last_result is None
    assert isinstance(
        small.chat([{"role": "user", "content": [picture(100, 100, 0), "?"]}], max_new_tokens=2, seed=0), str
    )


def test_mismatched_files_are_rejected(tiny_gguf_f32, tiny_mmproj_f32):
    with pytest.raises(minicpmv.ModelFormatError, match="architecture is 'clip'"):
        minicpmv.Model(tiny_mmproj_f32)
    with pytest.raises(minicpmv.ModelFormatError, match="expected 'clip'"):
        minicpmv.Model(tiny_gguf_f32, mmproj_path=tiny_gguf_f32)


def test_position_ids_are_not_plain_floor():
    # docs/model.md §4: nominally floor(70·j/n), but float32 rounding puts some boundaries one lower (n = 25, …).
    assert minicpmv._core._testing.position_ids(25, 1) != [(70 * j) // 25 for j in range(25)]


def test_cli_answers_about_an_image(tiny_gguf_f32, tiny_mmproj_f32, tmp_path):
    import subprocess
    import sys

    path = tmp_path / "picture.png"
    picture(400, 300, 21).save(path)
    args = [
        "chat",
        "-m",
        str(tiny_gguf_f32),
        "--mmproj",
        str(tiny_mmproj_f32),
        "--image",
        str(path),
        "-n",
        "6",
        "--greedy",
    ]
    out = subprocess.run(
        [sys.executable, "-m", "minicpmv.cli", *args, "What is this?"], capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr
    model = minicpmv.Model(tiny_gguf_f32, mmproj_path=tiny_mmproj_f32)
    expected = model.chat(
        [{"role": "user", "content": [Image.open(path), "What is this?"]}],
        sampling=False,
        num_beams=1,
        repetition_penalty=1.0,
        max_new_tokens=6,
    )
    assert out.stdout == expected + "\n"


@pytest.mark.parametrize("K", [588, 1152, 37])
def test_f16_products_are_float32_sums_whatever_the_batch(K, use_kernels):
    # The AVX2 vision kernel (f16_kernels.h): f16 weights times f32 activations, one FMA chain per output
    # over k in order, so a slice's rows do not depend on the rows beside them.
    use_kernels(avx512=False)
    rng = np.random.default_rng(K)
    M, N = 37, 13  # a partial panel of 16 rows and a partial tile of 6
    w = (rng.standard_normal((M, K)) * 0.05).astype(np.float16)
    x = rng.standard_normal((N, K)).astype(np.float32)
    y = minicpmv._core._testing.f16_matmul(w.view(np.uint16), x)
    if y is None:
        pytest.skip("this CPU has no AVX2 with FMA")
    exact = x.astype(np.float64) @ w.astype(np.float64).T
    err = np.abs(y - exact) / (np.abs(x).astype(np.float64) @ np.abs(w.astype(np.float64)).T)
    assert err.max() <= 1e-6, err.max()  # f32 rounding of the sums: measured ≤ 1.7e-7
    for n in (1, 5, 7):
        np.testing.assert_array_equal(minicpmv._core._testing.f16_matmul(w.view(np.uint16), x[:n]), y[:n])
