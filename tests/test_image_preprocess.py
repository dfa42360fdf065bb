"""Image preprocessing (docs/model.md §6, §4 step 1): the C++ slicing plan against a Python reading of the spec,
the C++ bicubic resize against Pillow itself, the whole pipeline against Pillow + numpy, and bad input."""

from __future__ import annotations

import math
import random
import time

import numpy as np
import PIL
import pytest
from PIL import Image

from minicpmv import _core
from reference.slicing import PATCH, ensure_divide, reference_plan

QUERIES = 64  # resampler outputs per overview or slice (docs/model.md §5)

# Pillow 13 (python-pillow/Pillow#9549) resizes columns first when the height shrinks much more than the
# width; the C++ code follows it (pyproject pins pillow>=13). Older Pillow always does rows first.
assert int(PIL.__version__.split(".")[0]) >= 13, f"the reference is Pillow >= 13, found {PIL.__version__}"


# --- docs/model.md §6, read straight from its text -------------------------------------------------------------


def random_sizes(n, seed=20240917):
    """n sizes from 1x1 to 5000x5000 with aspect ratios up to 1:30 either way, log-uniform in area."""
    rng = random.Random(seed)
    sizes = []
    for _ in range(n):
        area = math.exp(rng.uniform(0.0, math.log(5000.0 * 5000.0)))
        aspect = math.exp(rng.uniform(-math.log(30.0), math.log(30.0)))
        w = min(max(round(math.sqrt(area * aspect)), 1), 5000)
        h = min(max(round(math.sqrt(area / aspect)), 1), 5000)
        sizes.append((w, h))
    return sizes


# --- the slicing plan ---------------------------------------------------------------------------------

# docs/model.md §6 table: input, grid, overview, each slice, image tokens (resampler outputs: 64 per overview and
# per slice; the marker tokens of docs/model.md §7 are not counted).
TABLE = [
    ((1344, 1344), (3, 3), (448, 448), (448, 448), 640),
    ((448, 448), None, (448, 448), None, 64),
    ((300, 200), None, (546, 364), None, 64),
    ((500, 500), (1, 2), (448, 448), (630, 322), 192),
    ((640, 480), (2, 1), (518, 392), (364, 546), 192),
    ((800, 600), (2, 2), (518, 392), (518, 392), 320),
    ((1920, 1080), (4, 2), (602, 336), (420, 476), 576),
    ((1000, 3000), (2, 4), (252, 770), (364, 546), 576),
]


@pytest.mark.parametrize("size, grid, overview, cell, tokens", TABLE)
def test_spec_table(size, grid, overview, cell, tokens):
    plan = _core._testing.slice_plan(*size)
    assert plan["grid"] == grid
    assert plan["overview"] == overview
    assert {s[2:] for s in plan["slices"]} == ({cell} if cell else set())
    assert QUERIES * (1 + len(plan["slices"])) == tokens
    assert plan == reference_plan(size)  # the Python reading agrees with the table too


@pytest.mark.parametrize("max_slices", [1, 2, 4, 9])
def test_plan_matches_spec_on_random_sizes(max_slices):
    sizes = random_sizes(300)
    assert max(max(w / h, h / w) for w, h in sizes) > 20  # the extreme ratios are really there
    for size in sizes:
        assert _core._testing.slice_plan(*size, max_slice_nums=max_slices) == reference_plan(size, max_slices), size


def test_plan_crops_tile_the_refined_image():
    for size in random_sizes(300, seed=7):
        plan = _core._testing.slice_plan(*size)
        if plan["grid"] is None:
            assert plan["refine"] is None and plan["slices"] == []
            continue
        (cols, rows), (rw, rh) = plan["grid"], plan["refine"]
        assert len(plan["slices"]) == cols * rows
        assert sum(w * h for _, _, w, h in plan["slices"]) == rw * rh
        assert all(w % PATCH == 0 and h % PATCH == 0 for _, _, w, h in plan["slices"])
        assert plan["slices"][-1][0] + plan["slices"][-1][2] == rw
        assert plan["slices"][-1][1] + plan["slices"][-1][3] == rh


def test_round_half_to_even():
    # 7/14 = 0.5 -> 0 -> at least 14; 21/14 = 1.5 -> 2; 35/14 = 2.5 -> 2: Python's round, not half up.
    assert ensure_divide(7, 14) == 14 and ensure_divide(21, 14) == 28 and ensure_divide(35, 14) == 28
    for w, h in [(7, 5000), (21, 5000), (35, 5000), (5000, 35)]:
        assert _core._testing.slice_plan(w, h) == reference_plan((w, h))


# --- the resize against Pillow ------------------------------------------------------------------------


def make_image(kind, w, h, seed=0):
    rng = np.random.default_rng(seed)
    if kind == "noise":
        return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    if kind == "smooth":
        img = np.stack([x / max(w, 1), y / max(h, 1), 0.5 + 0.5 * np.sin(x / 7.0 + y / 11.0)], axis=-1) * 255.0
        return np.clip(np.round(img), 0, 255).astype(np.uint8)
    if kind == "edges":  # hard 0/255 steps, thin lines and a checkerboard: the cubic overshoots, so clamps
        img = np.zeros((h, w, 3), np.uint8)
        img[..., 0] = np.where((x // 5 + y // 3) % 2 == 0, 255, 0)
        img[..., 1] = np.where(x > w / 2, 255, 0)
        img[..., 2] = np.where((x.astype(int) % 9 == 0) | (y.astype(int) % 13 == 0), 255, 0)
        return img
    raise ValueError(kind)


# (source size, target size); sizes are (w, h).
RESIZE_CASES = [
    ((1344, 1344), (448, 448)),  # the overview of the table's first row
    ((1920, 1080), (1680, 952)),  # refine, down
    ((1000, 3000), (728, 2184)),  # refine, columns first in Pillow 13
    ((640, 480), (518, 392)),
    ((300, 200), (546, 364)),  # small image, up
    ((1, 1), (448, 448)),
    ((20000, 20), (448, 14)),  # extreme ratios
    ((20, 20000), (14, 448)),
    ((20000, 20), (30, 600)),
    ((3, 1000), (999, 2)),
    ((17, 31), (503, 7)),  # odd sizes, up one way and down the other
    ((31, 17), (7, 503)),
    ((5000, 167), (1, 1)),
    ((448, 300), (448, 602)),  # one axis only
    ((301, 448), (57, 448)),
    ((123, 45), (123, 45)),  # unchanged
]
KINDS = ["noise", "smooth", "edges"]


def pillow_resize(img, size):
    return np.asarray(Image.fromarray(img).resize(size, Image.BICUBIC))


def random_resize_cases(n, seed=11):
    rng = random.Random(seed)
    return [((rng.randint(1, 300), rng.randint(1, 300)), (rng.randint(1, 300), rng.randint(1, 300))) for _ in range(n)]


@pytest.fixture(scope="module")
def resize_diffs():
    """|C++ − Pillow| for every case and image kind: (case, kind, max diff, exact fraction)."""
    out = []
    for i, (src, dst) in enumerate(RESIZE_CASES + random_resize_cases(150)):
        for kind in KINDS:
            img = make_image(kind, *src, seed=i)
            ours = _core._testing.resize_rgb(img, *dst)
            ref = pillow_resize(img, dst)
            assert ours.shape == ref.shape == (dst[1], dst[0], 3) and ours.dtype == np.uint8
            d = np.abs(ours.astype(np.int16) - ref.astype(np.int16))
            out.append(((src, dst), kind, int(d.max()), float((d == 0).mean())))
    return out


def test_resize_within_one_of_pillow(resize_diffs):
    worst = max(resize_diffs, key=lambda r: r[2])
    assert worst[2] <= 1, worst


def test_resize_is_bit_exact(resize_diffs):
    # The aim (same fixed point and rounding as Pillow): every pixel of every case identical.
    inexact = [r for r in resize_diffs if r[3] < 1.0]
    assert inexact == []


def test_resize_accepts_strided_arrays():
    img = make_image("noise", 401, 301)[::-1, ::2]  # negative and non-unit strides
    assert np.array_equal(_core._testing.resize_rgb(img, 97, 203), pillow_resize(np.ascontiguousarray(img), (97, 203)))


def test_resize_speed():
    # Milliseconds, not seconds: the overview of a 1344x1344 image (Pillow itself takes ~10 ms).
    img = make_image("noise", 1344, 1344)
    best = math.inf
    for _ in range(3):
        t = time.perf_counter()
        _core._testing.resize_rgb(img, 448, 448)
        best = min(best, time.perf_counter() - t)
    assert best < 0.25, f"{best * 1e3:.1f} ms"


# --- the whole pipeline -------------------------------------------------------------------------------


def reference_preprocess(img, max_slices=9):
    """HF's pipeline with Pillow and numpy: resize, crop, (x / 255 − 0.5) / 0.5, HWC -> CHW."""
    pil = Image.fromarray(img)
    plan = reference_plan(pil.size, max_slices)
    crops = [pil.resize(plan["overview"], Image.BICUBIC)]
    if plan["grid"] is not None:
        refined = pil.resize(plan["refine"], Image.BICUBIC)
        crops += [refined.crop((x, y, x + w, y + h)) for x, y, w, h in plan["slices"]]
    return [((np.asarray(c).astype(np.float32) / 255 - 0.5) / 0.5).transpose(2, 0, 1) for c in crops]


@pytest.mark.parametrize("size", [s for s, *_ in TABLE] + [(1, 1), (37, 1200), (2000, 33), (5000, 167), (513, 1025)])
def test_preprocess_matches_pillow_pipeline(size):
    img = make_image("smooth" if size[0] * size[1] > 10**6 else "noise", *size, seed=size[0])
    ours = _core._testing.preprocess_image(img)
    ref = reference_preprocess(img)
    assert [a.shape for a in ours] == [r.shape for r in ref]
    for a, r in zip(ours, ref):
        assert a.dtype == np.float32
        assert a.shape[1] % PATCH == 0 and a.shape[2] % PATCH == 0  # whole patches (Px = W/14, Py = H/14)
        assert np.abs(a - r).max() <= 1 / 127.5 + 1e-6


def test_preprocess_max_slice_nums():
    img = make_image("noise", 1920, 1080)
    assert len(_core._testing.preprocess_image(img, max_slice_nums=1)) == 1  # never split
    assert len(_core._testing.preprocess_image(img, max_slice_nums=2)) == 3  # docs/model.md §7: video uses 2
    assert [a.shape for a in _core._testing.preprocess_image(img)][1:] == [(3, 476, 420)] * 8


def test_normalisation_range():
    img = np.zeros((14, 14, 3), np.uint8)
    img[:, 7:] = 255
    (out,) = _core._testing.preprocess_image(img)  # upscaled to 448x448; the edge overshoot is clamped
    assert out.min() == -1.0 and out.max() == 1.0


# --- bad input ----------------------------------------------------------------------------------------

BAD_ARRAYS = [
    (np.zeros((0, 5, 3), np.uint8), "at least 1"),
    (np.zeros((5, 0, 3), np.uint8), "at least 1"),
    (np.zeros((5, 5, 4), np.uint8), r"shape \(height, width, 3\)"),
    (np.zeros((5, 5, 1), np.uint8), r"shape \(height, width, 3\)"),
    (np.zeros((5, 5), np.uint8), r"shape \(height, width, 3\)"),
    (np.zeros((2, 5, 5, 3), np.uint8), r"shape \(height, width, 3\)"),
    (np.zeros((5, 5, 3), np.float32), "uint8"),
    (np.zeros((5, 5, 3), np.int64), "uint8"),
]


@pytest.mark.parametrize("array, message", BAD_ARRAYS)
def test_bad_arrays(array, message):
    with pytest.raises(_core.InvalidArgumentError, match=message):
        _core._testing.preprocess_image(array)
    with pytest.raises(_core.InvalidArgumentError, match=message):
        _core._testing.resize_rgb(array, 10, 10)


@pytest.mark.parametrize(
    "width, height, message",
    [(0, 10, "at least 1"), (10, -1, "at least 1"), (10**6, 10**6, "too large"), (2**40, 1, "too large")],
)
def test_bad_sizes(width, height, message):
    with pytest.raises(_core.InvalidArgumentError, match=message):
        _core._testing.slice_plan(width, height)
    with pytest.raises(_core.InvalidArgumentError, match=message):
        _core._testing.resize_rgb(make_image("noise", 4, 4), width, height)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"max_slice_nums": 0}, "max_slice_nums"),
        ({"max_slice_nums": -3}, "max_slice_nums"),
        ({"scale_resolution": 0}, "scale_resolution"),
        ({"patch_size": 0}, "patch_size"),
    ],
)
def test_bad_slicing_params(kwargs, message):
    with pytest.raises(_core.InvalidArgumentError, match=message):
        _core._testing.slice_plan(100, 100, **kwargs)


def test_bad_max_slice_nums_in_preprocess():
    with pytest.raises(_core.InvalidArgumentError, match="max_slice_nums"):
        _core._testing.preprocess_image(make_image("noise", 8, 8), max_slice_nums=0)


def test_errors_are_value_errors():
    with pytest.raises(ValueError):
        _core._testing.slice_plan(0, 0)
