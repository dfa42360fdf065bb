"""docs/model.md §6 read straight from its text: HF MiniCPM-V's slicing plan, independent of the C++ code."""

from __future__ import annotations

import math

SCALE = 448  # scale_resolution
PATCH = 14  # patch_size


def ensure_divide(length, p):
    return max(round(length / p) * p, p)


def best_resize(size, upscale):
    w, h = size
    if w * h > SCALE * SCALE or upscale:
        r = w / h
        h = int(SCALE / math.sqrt(r))
        w = int(h * r)
    return ensure_divide(w, PATCH), ensure_divide(h, PATCH)


def best_grid(size, max_slices):
    w, h = size
    m = min(math.ceil(w * h / SCALE**2), max_slices)
    if m <= 1:
        return None
    candidates = [
        (cols, n // cols)
        for n in (m - 1, m, m + 1)
        if n != 1 and n <= max_slices
        for cols in range(1, n + 1)
        if n % cols == 0
    ]
    # min() keeps the first of equal keys: the first candidate wins a tie.
    return min(candidates, key=lambda g: abs(math.log(w / h) - math.log(g[0] / g[1])))


def refine_size(size, grid):
    (w, h), (c, r) = size, grid
    rw, rh = ensure_divide(w, c), ensure_divide(h, r)
    gw, gh = best_resize((rw / c, rh / r), upscale=True)
    return gw * c, gh * r


def reference_plan(size, max_slices=9):
    """The dict slice_plan returns: sizes (w, h), grid (cols, rows), crops (x, y, w, h) row-major."""
    grid = best_grid(size, max_slices)
    if grid is None:
        return {"overview": best_resize(size, upscale=True), "grid": None, "refine": None, "slices": []}
    refine = refine_size(size, grid)
    cw, ch = refine[0] // grid[0], refine[1] // grid[1]
    slices = [(col * cw, row * ch, cw, ch) for row in range(grid[1]) for col in range(grid[0])]
    return {"overview": best_resize(size, upscale=False), "grid": grid, "refine": refine, "slices": slices}
