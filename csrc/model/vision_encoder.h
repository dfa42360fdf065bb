// The SigLIP-NaViT encoder of docs/model.md §4 as one ggml graph over a batch of slices of different sizes.
// Slices are packed to the longest one; padded patches are masked out of attention, so each slice
// gets exactly its own result (docs/model.md §4, last paragraph).
#pragma once

#include "model/vision_model.h"

#include <cstdint>
#include <vector>

struct ggml_context;
struct ggml_tensor;

namespace minicpmv {

// One slice's patch grid: px columns × py rows of patches (W = px·patch, H = py·patch).
struct PatchGrid {
    int32_t px = 0;
    int32_t py = 0;
    int32_t n_patches() const { return px * py; }
};

struct VisionBatch {
    std::vector<PatchGrid> slices;
    int32_t n_max = 0;  // the longest slice's patch count: every slice is padded to it
};

VisionBatch make_vision_batch(const std::vector<PatchGrid> & slices);
// Whether some slice is shorter than the longest one (its padded patches must be masked out).
bool has_padding(const VisionBatch & batch);

struct VisionInputs {
    ggml_tensor * patches = nullptr;    // f32 [3·p·p, n_max, n_slices]: pixels of each patch, (c, y, x) order
    ggml_tensor * pos_ids = nullptr;    // i32 [n_max·n_slices]: rows of the position table
    ggml_tensor * attn_mask = nullptr;  // f16 [n_max, n_max, 1, n_slices]: -inf on padded keys (nullptr: not needed)
};

// Returns the post-LayerNorm hidden states [n_embd, n_max, n_slices].
ggml_tensor * build_vision_graph(ggml_context * ctx, const VisionConfig & c, const VisionWeights & w, const VisionBatch & batch,
                                 VisionInputs & in);

// HF's position ids (docs/model.md §4 step 3): bucketize of float32 fractional coordinates, bit for bit.
std::vector<int32_t> position_ids(const PatchGrid & grid, int32_t pos_side);

// Host-side inputs. `pixels[s]` is slice s as normalised float32 CHW (3 × py·p × px·p).
void fill_patches(const VisionBatch & batch, int32_t patch_size, const std::vector<const float *> & pixels,
                  std::vector<float> & out);
void fill_position_ids(const VisionBatch & batch, int32_t pos_side, std::vector<int32_t> & out);
void fill_padding_mask(const VisionBatch & batch, int32_t n_rows, std::vector<uint16_t> & out);  // [n_max, n_rows, n_slices]

}  // namespace minicpmv
