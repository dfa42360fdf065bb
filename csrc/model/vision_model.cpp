#include "model/vision_model.h"

#include "core/error.h"
#include "core/gguf_file.h"
#include "core/gguf_keys.h"
#include "model/model_config.h"

#include <ggml.h>

#include <cmath>

namespace minicpmv {

namespace {

// MiniCPM-V's resampler heads are 128 wide (docs/model.md §5): heads = embed / 128.
constexpr int32_t kResamplerHeadDim = 128;

VisionConfig read_vision_config(const GgufFile & f, int32_t expected_embed) {
    auto fail = [&](const std::string & what) {
        throw Error(ErrorCode::bad_format, f.path() + ": " + what);
    };
    if (!f.has(keys::architecture) || f.get_string(keys::architecture) != "clip") {
        fail("not a vision (mmproj) file: architecture is '" +
             (f.has(keys::architecture) ? f.get_string(keys::architecture) : std::string("none")) + "', expected 'clip'");
    }
    if (!f.get_bool(keys::clip_has_vision_encoder, false)) fail("the file has no vision encoder");
    const std::string projector = f.has(keys::clip_projector_type) ? f.get_string(keys::clip_projector_type) : "";
    if (projector != "resampler") fail("projector type is '" + projector + "', expected 'resampler' (MiniCPM-V)");
    const uint32_t version = f.get_u32(keys::clip_minicpmv_version);
    if (version != 3) fail("minicpmv_version is " + std::to_string(version) + ", expected 3 (MiniCPM-V 2.6)");

    VisionConfig c;
    c.n_embd = f.get_size(keys::clip_embedding_length);
    c.n_ff = f.get_size(keys::clip_feed_forward_length);
    c.n_head = f.get_size(keys::clip_head_count);
    c.n_layer = f.get_size(keys::clip_block_count);
    c.patch_size = f.get_size(keys::clip_patch_size);
    c.image_size = f.get_size(keys::clip_image_size);
    c.eps = f.get_f32(keys::clip_layer_norm_eps);
    if (c.n_embd <= 0 || c.n_ff <= 0 || c.n_layer <= 0 || c.patch_size <= 0 || c.image_size <= 0 || c.n_head <= 0 ||
        c.n_embd % c.n_head != 0) {
        fail("inconsistent vision hyper-parameters");
    }
    if (!plausible_norm_eps(c.eps)) {
        fail("the layer norm epsilon must lie in (0, 1), got " + std::to_string(c.eps));
    }
    c.head_dim = c.n_embd / c.n_head;
    // SigLIP's heads are 72 wide; a width that is not a multiple of 8 comes from an edited file.
    if (c.head_dim % 8 != 0) {
        fail(std::to_string(c.n_head) + " heads of " + std::to_string(c.head_dim) + " values: not a multiple of 8");
    }

    const ggml_tensor * pos = f.tensor("v.position_embd.weight");
    const ggml_tensor * query = f.tensor("resampler.query");
    if (pos == nullptr) fail("tensor 'v.position_embd.weight' is missing");
    if (query == nullptr) fail("tensor 'resampler.query' is missing");
    c.pos_side = static_cast<int32_t>(std::lround(std::sqrt(static_cast<double>(pos->ne[1]))));
    if (static_cast<int64_t>(c.pos_side) * c.pos_side != pos->ne[1]) fail("the position table is not square");
    // image_size is the slices' scale resolution (448: 32 patches a side), within the position table's
    // side (70); a slice of one patch would come from an edited file.
    const int32_t slice_side = c.image_size / c.patch_size;
    if (c.image_size % c.patch_size != 0 || slice_side < 2 || slice_side > c.pos_side) {
        fail("image_size " + std::to_string(c.image_size) + " is not 2 to " + std::to_string(c.pos_side) + " patches of " +
             std::to_string(c.patch_size) + " (the position table's side)");
    }
    c.embed = static_cast<int32_t>(query->ne[0]);
    c.n_query = static_cast<int32_t>(query->ne[1]);
    if (c.embed % kResamplerHeadDim != 0) fail("resampler width " + std::to_string(c.embed) + " is not a multiple of 128");
    c.resampler_heads = c.embed / kResamplerHeadDim;
    if (c.embed != expected_embed) {
        throw Error(ErrorCode::invalid_argument, f.path() + ": the resampler emits " + std::to_string(c.embed) +
                                                     "-wide embeddings but the language model is " +
                                                     std::to_string(expected_embed) + " wide: the files do not belong together");
    }
    return c;
}

// The published files store SigLIP fc1 under ffn_down and fc2 under ffn_up (docs/model.md §9); a file written
// with the natural names has them the other way round. The shapes decide, as in llama.cpp.
bool ffn_names_swapped(const GgufFile & f, const VisionConfig & c) {
    const ggml_tensor * down = f.tensor("v.blk.0.ffn_down.weight");
    return down != nullptr && down->ne[0] == c.n_embd && c.n_embd != c.n_ff;
}

// Every tensor of the vision file (llama.cpp's clip names) and its slot in `v`.
void for_each_vision_tensor(const VisionConfig & c, bool swapped, VisionWeights & v, const TensorVisitor & visit) {
    const int64_t C = c.n_embd, F = c.n_ff, E = c.embed, p = c.patch_size;
    const int64_t n_pos = static_cast<int64_t>(c.pos_side) * c.pos_side;
    const std::string fc1 = swapped ? "ffn_down" : "ffn_up";
    const std::string fc2 = swapped ? "ffn_up" : "ffn_down";
    visit({"v.patch_embd.weight", {p, p, 3, C}}, v.patch_w);
    visit({"v.patch_embd.bias", {C}, true}, v.patch_b);
    visit({"v.position_embd.weight", {C, n_pos}}, v.pos_embd);
    visit({"v.post_ln.weight", {C}, true}, v.post_ln_w);
    visit({"v.post_ln.bias", {C}, true}, v.post_ln_b);
    v.layers.resize(static_cast<size_t>(c.n_layer));
    for (int il = 0; il < c.n_layer; ++il) {
        const std::string b = "v.blk." + std::to_string(il) + ".";
        VisionLayer & L = v.layers[static_cast<size_t>(il)];
        visit({b + "ln1.weight", {C}, true}, L.ln1_w);
        visit({b + "ln1.bias", {C}, true}, L.ln1_b);
        visit({b + "attn_q.weight", {C, C}}, L.q_w);
        visit({b + "attn_q.bias", {C}, true}, L.q_b);
        visit({b + "attn_k.weight", {C, C}}, L.k_w);
        visit({b + "attn_k.bias", {C}, true}, L.k_b);
        visit({b + "attn_v.weight", {C, C}}, L.v_w);
        visit({b + "attn_v.bias", {C}, true}, L.v_b);
        visit({b + "attn_out.weight", {C, C}}, L.out_w);
        visit({b + "attn_out.bias", {C}, true}, L.out_b);
        visit({b + "ln2.weight", {C}, true}, L.ln2_w);
        visit({b + "ln2.bias", {C}, true}, L.ln2_b);
        visit({b + fc1 + ".weight", {C, F}}, L.fc1_w);
        visit({b + fc1 + ".bias", {F}, true}, L.fc1_b);
        visit({b + fc2 + ".weight", {F, C}}, L.fc2_w);
        visit({b + fc2 + ".bias", {C}, true}, L.fc2_b);
    }
    visit({"resampler.query", {E, c.n_query}, true}, v.query);
    visit({"resampler.kv.weight", {C, E}}, v.kv_w);
    visit({"resampler.ln_q.weight", {E}, true}, v.ln_q_w);
    visit({"resampler.ln_q.bias", {E}, true}, v.ln_q_b);
    visit({"resampler.ln_kv.weight", {E}, true}, v.ln_kv_w);
    visit({"resampler.ln_kv.bias", {E}, true}, v.ln_kv_b);
    visit({"resampler.attn.q.weight", {E, E}}, v.attn_q_w);
    visit({"resampler.attn.q.bias", {E}, true}, v.attn_q_b);
    visit({"resampler.attn.k.weight", {E, E}}, v.attn_k_w);
    visit({"resampler.attn.k.bias", {E}, true}, v.attn_k_b);
    visit({"resampler.attn.v.weight", {E, E}}, v.attn_v_w);
    visit({"resampler.attn.v.bias", {E}, true}, v.attn_v_b);
    visit({"resampler.attn.out.weight", {E, E}}, v.attn_out_w);
    visit({"resampler.attn.out.bias", {E}, true}, v.attn_out_b);
    visit({"resampler.ln_post.weight", {E}, true}, v.ln_post_w);
    visit({"resampler.ln_post.bias", {E}, true}, v.ln_post_b);
    visit({"resampler.proj.weight", {E, E}}, v.proj);
    // llama.cpp requires this table at load time; the graphs compute the embedding directly (§5).
    visit({"resampler.pos_embed_k", {E, n_pos}}, v.pos_embed_k);
}

}  // namespace

VisionModel::VisionModel(const std::string & mmproj_path, ggml_backend_dev_t device, int32_t expected_embed, bool cpu_repack,
                         bool use_mmap) {
    file_ = std::make_unique<GgufFile>(mmproj_path);
    config_ = read_vision_config(*file_, expected_embed);
    const bool swapped = ffn_names_swapped(*file_, config_);
    auto tensors = [&](VisionWeights & v, const TensorVisitor & visit) {
        for_each_vision_tensor(config_, swapped, v, visit);
    };
    storage_ = std::make_unique<Weights>(*file_, weight_table<VisionWeights>(tensors), device, cpu_repack, use_mmap);
    weights_ = bind_weights<VisionWeights>(*storage_, tensors);
    weights_.cpu_kernels = ggml_backend_dev_type(device) == GGML_BACKEND_DEVICE_TYPE_CPU;
}

VisionModel::~VisionModel() = default;

}  // namespace minicpmv
