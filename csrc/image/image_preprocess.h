// From an RGB image to the vision encoder's inputs (docs/model.md §6 then §4 step 1): the overview and the
// slices of plan_slices, each resized with resize_bicubic, cut, and normalised.
#pragma once

#include "image/image.h"
#include "image/image_slicing.h"

#include <vector>

namespace minicpmv {

// One input of the vision encoder.
struct VisionInput {
    Size size;                  // pixels; both sides are multiples of the patch size
    Size patches;               // Px × Py: size / patch_size
    std::vector<float> pixels;  // planar CHW: [3][height][width], R then G then B, each (u8/255 − 0.5) / 0.5
};

// The overview first, then the slices row-major (the order of the prompt's placeholders, docs/model.md §7).
// Throws Error(invalid_argument) for bad params or a plan whose sizes exceed the image.h limits.
std::vector<VisionInput> preprocess_image(const RgbImage & image, const SlicingParams & params);

}  // namespace minicpmv
