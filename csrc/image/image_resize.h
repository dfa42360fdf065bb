// Bicubic resizing with the results of Pillow's Image.resize(size, Image.BICUBIC) on RGB images
// (docs/model.md §6: HF resizes every overview and refined image that way, so the model saw these pixels).
//
// The behaviour it reproduces (checked against Pillow itself in tests/test_image_preprocess.py):
// - separable: one pass along rows (to the new width) and one along columns (to the new height), in
//   Pillow 13's order (columns first when the height shrinks by more than twice as many pixels as the
//   width, else rows first; Pillow before 13 always went rows first); a pass whose size is unchanged
//   is skipped, and the first pass's output is rounded to uint8 before the second reads it;
// - the Keys cubic with a = −0.5 on pixel centres, its support of 2 widened by the scale factor when
//   shrinking (antialiasing), weights normalised to sum 1 over the window that lies inside the image
//   (edges are not padded);
// - weights in 22-bit fixed point (rounded half away from zero), sums rounded half up and clamped to
//   [0, 255].
#pragma once

#include "image/image.h"

namespace minicpmv {

// Returns `image` resized to `target`. Throws Error(invalid_argument) when `target` is empty or too
// large (image.h limits).
RgbImage resize_bicubic(const RgbImage & image, Size target);

}  // namespace minicpmv
