// The perceiver resampler of docs/model.md §5: 64 learned queries attend over a slice's encoder output (keys
// carry a 2-D sin-cos position code), giving 64 LLM-width embeddings per slice.
#pragma once

#include "model/vision_encoder.h"

namespace minicpmv {

struct ResamplerInputs {
    ggml_tensor * pos_embed = nullptr;  // f32 [embed, n_max, n_slices]: sincos2d of each patch (0 on padding)
    ggml_tensor * key_mask = nullptr;   // f16 [n_max, n_query, 1, n_slices]: -inf on padded keys (nullptr: not needed)
};

// vision_out: [n_embd, n_max, n_slices] from build_vision_graph. Returns [embed, n_query, n_slices].
ggml_tensor * build_resampler_graph(ggml_context * ctx, const VisionConfig & c, const VisionWeights & w,
                                    const VisionBatch & batch, ggml_tensor * vision_out, ResamplerInputs & in);

// sincos2d(py, px) of docs/model.md §5 for one slice, row-major patches, `embed` values each.
std::vector<float> sincos_2d(const PatchGrid & grid, int32_t embed);
void fill_pos_embed(const VisionBatch & batch, int32_t embed, std::vector<float> & out);

}  // namespace minicpmv
