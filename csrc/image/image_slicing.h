// How MiniCPM-V 2.6 cuts an image into an overview and slices (docs/model.md §6; HF
// image_processing_minicpmv.py: ensure_divide, find_best_resize, get_sliced_grid, get_refine_size,
// slice_image, split_to_patches). Sizes only: no pixels are touched here.
#pragma once

#include "image/image.h"

#include <cstdint>
#include <optional>
#include <vector>

namespace minicpmv {

struct SlicingParams {               // defaults = HF MiniCPMVImageProcessor
    int32_t max_slice_nums = 9;      // most slices an image may be cut into, >= 1
    int32_t scale_resolution = 448;  // a slice holds about scale_resolution² pixels
    int32_t patch_size = 14;         // every output side is a multiple of this (the vision patch)
};

SlicingParams default_slicing_params();

// Throws Error(invalid_argument) naming the parameter and its allowed range.
void validate(const SlicingParams & params);

// Columns and rows of slices.
struct Grid {
    int32_t cols = 0;
    int32_t rows = 0;
};

inline bool operator==(Grid a, Grid b) { return a.cols == b.cols && a.rows == b.rows; }

// The slicing of a grid: the image is resized to `refined`, then cut into equal `crops`.
struct SliceGrid {
    Grid grid;
    Size refined;
    std::vector<Rect> crops;  // cols × rows rectangles of `refined`, row-major (the model's order)
};

struct SlicePlan {
    Size overview;                    // the whole image is resized to this; always present
    std::optional<SliceGrid> slices;  // none when the image is not sliced
};

// max(round(length / divisor) · divisor, divisor), rounding halves to even as Python's round does
// (7 with divisor 14 gives 14, 21 gives 28, 35 gives 28).
int64_t ensure_divide(int64_t length, int64_t divisor);

// find_best_resize: when the image has more than scale_resolution² pixels, or `upscale`, the size of
// the same aspect ratio with about scale_resolution² pixels (float maths as HF: r = W/H,
// H' = int(S/√r), W' = int(H'·r)); otherwise the image's size. Both sides then ensure_divide'd by
// patch_size.
Size best_resize(Size image, const SlicingParams & params, bool upscale);

// get_sliced_grid: none when the image needs at most one slice, otherwise the grid of m−1, m or m+1
// cells (m = min(⌈W·H / S²⌉, max_slice_nums)) whose aspect ratio is closest in log scale to the image's;
// the first candidate (fewest cells, then fewest columns) wins a tie.
std::optional<Grid> best_grid(Size image, const SlicingParams & params);

// get_refine_size: the size the image is resized to before it is cut into `grid`, so that each cell
// is a best_resize'd (upscale allowed) size.
Size refine_size(Size image, Grid grid, const SlicingParams & params);

// The whole plan: without a grid the overview is best_resize with upscale (small images grow to about
// S²); with one, the overview is best_resize without upscale and the slices come from refine_size.
SlicePlan plan_slices(Size image, const SlicingParams & params);

}  // namespace minicpmv
