#include "image/image_preprocess.h"

#include "image/image_resize.h"

#include <array>
#include <cstddef>

namespace minicpmv {

namespace {

// docs/model.md §4 step 1 for every uint8 value, in float32 as HF computes it: astype(float32) / 255, then
// (x − mean) / std with mean = std = 0.5.
std::array<float, 256> normalisation_table() {
    std::array<float, 256> table{};
    for (int u = 0; u < 256; ++u) {
        const float scaled = static_cast<float>(u) / 255.0f;
        table[u] = (scaled - 0.5f) / 0.5f;
    }
    return table;
}

VisionInput normalised_crop(const RgbImage & image, const Rect & crop, int32_t patch_size, const std::array<float, 256> & table) {
    VisionInput input;
    input.size = crop.size;
    input.patches = Size{crop.size.width / patch_size, crop.size.height / patch_size};
    const size_t plane = static_cast<size_t>(crop.size.width) * crop.size.height;
    input.pixels.resize(plane * RgbImage::kChannels);
    for (int32_t y = 0; y < crop.size.height; ++y) {
        const uint8_t * src = image.row(crop.y + y) + static_cast<size_t>(crop.x) * RgbImage::kChannels;
        for (int c = 0; c < RgbImage::kChannels; ++c) {
            float * dst = input.pixels.data() + c * plane + static_cast<size_t>(y) * crop.size.width;
            for (int32_t x = 0; x < crop.size.width; ++x) dst[x] = table[src[x * RgbImage::kChannels + c]];
        }
    }
    return input;
}

}  // namespace

std::vector<VisionInput> preprocess_image(const RgbImage & image, const SlicingParams & params) {
    const SlicePlan plan = plan_slices(image.size(), params);
    const std::array<float, 256> table = normalisation_table();

    std::vector<VisionInput> inputs;
    const RgbImage overview = resize_bicubic(image, plan.overview);
    inputs.push_back(normalised_crop(overview, Rect{0, 0, plan.overview}, params.patch_size, table));
    if (plan.slices) {
        const RgbImage refined = resize_bicubic(image, plan.slices->refined);
        for (const Rect & crop : plan.slices->crops) {
            inputs.push_back(normalised_crop(refined, crop, params.patch_size, table));
        }
    }
    return inputs;
}

}  // namespace minicpmv
