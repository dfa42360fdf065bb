#include "model/vision_model.h"

#include "core/error.h"
#include "core/gguf_file.h"
#include "core/gguf_keys.h"

#include <ggml.h>

#include <cmath>

namespace minicpmv {

namespace {

// MiniCPM-V's resampler heads are 128 wide (spec §5): heads = embed / 128.
constexpr int32_t kResamplerHeadDim = 128;

VisionConfig read_vision_config(const GgufFile & f, int32_t expected_embed) {
    auto fail = [&](const std::string & what) { throw Error(ErrorCode::bad_format, f.path() + ": " + what); };
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
    c.n_embd = static_cast<int32_t>(f.get_u32(keys::clip_embedding_length));
    c.n_ff = static_cast<int32_t>(f.get_u32(keys::clip_feed_forward_length));
    c.n_head = static_cast<int32_t>(f.get_u32(keys::clip_head_count));
    c.n_layer = static_cast<int32_t>(f.get_u32(keys::clip_block_count));
    c.patch_size = static_cast<int32_t>(f.get_u32(keys::clip_patch_size));
    c.image_size = static_cast<int32_t>(f.get_u32(keys::clip_image_size));
    c.eps = f.get_f32(keys::clip_layer_norm_eps);
    if (c.n_embd <= 0 || c.n_ff <= 0 || c.n_layer <= 0 || c.patch_size <= 0 || c.image_size <= 0 || c.n_head <= 0 ||
        c.n_embd % c.n_head != 0 || !(c.eps > 0.0f)) {
        fail("inconsistent vision hyper-parameters");
    }
    c.head_dim = c.n_embd / c.n_head;

    const ggml_tensor * pos = f.tensor("v.position_embd.weight");
    const ggml_tensor * query = f.tensor("resampler.query");
    if (pos == nullptr) fail("tensor 'v.position_embd.weight' is missing");
    if (query == nullptr) fail("tensor 'resampler.query' is missing");
    c.pos_side = static_cast<int32_t>(std::lround(std::sqrt(static_cast<double>(pos->ne[1]))));
    if (static_cast<int64_t>(c.pos_side) * c.pos_side != pos->ne[1]) fail("the position table is not square");
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

// The published files store SigLIP fc1 under ffn_down and fc2 under ffn_up (spec §9); a file written
// with the natural names has them the other way round. The shapes decide, as in llama.cpp.
bool ffn_names_swapped(const GgufFile & f, const VisionConfig & c) {
    const ggml_tensor * down = f.tensor("v.blk.0.ffn_down.weight");
    return down != nullptr && down->ne[0] == c.n_embd && c.n_embd != c.n_ff;
}

std::vector<WeightSpec> vision_weight_table(const VisionConfig & c, bool swapped) {
    const int64_t C = c.n_embd, F = c.n_ff, E = c.embed, p = c.patch_size;
    const int64_t n_pos = static_cast<int64_t>(c.pos_side) * c.pos_side;
    const std::string fc1 = swapped ? "ffn_down" : "ffn_up";
    const std::string fc2 = swapped ? "ffn_up" : "ffn_down";
    std::vector<WeightSpec> t = {
        {"v.patch_embd.weight", {p, p, 3, C}},
        {"v.patch_embd.bias", {C}, true},
        {"v.position_embd.weight", {C, n_pos}},
        {"v.post_ln.weight", {C}, true},
        {"v.post_ln.bias", {C}, true},
        {"resampler.query", {E, c.n_query}, true},
        {"resampler.kv.weight", {C, E}},
        {"resampler.ln_q.weight", {E}, true},
        {"resampler.ln_q.bias", {E}, true},
        {"resampler.ln_kv.weight", {E}, true},
        {"resampler.ln_kv.bias", {E}, true},
        {"resampler.ln_post.weight", {E}, true},
        {"resampler.ln_post.bias", {E}, true},
        {"resampler.attn.q.weight", {E, E}},
        {"resampler.attn.q.bias", {E}, true},
        {"resampler.attn.k.weight", {E, E}},
        {"resampler.attn.k.bias", {E}, true},
        {"resampler.attn.v.weight", {E, E}},
        {"resampler.attn.v.bias", {E}, true},
        {"resampler.attn.out.weight", {E, E}},
        {"resampler.attn.out.bias", {E}, true},
        {"resampler.proj.weight", {E, E}},
        // llama.cpp requires this table at load time; we compute the embedding directly (spec §5).
        {"resampler.pos_embed_k", {E, n_pos}},
    };
    for (int il = 0; il < c.n_layer; ++il) {
        const std::string b = "v.blk." + std::to_string(il) + ".";
        for (const char * n : {"attn_q", "attn_k", "attn_v", "attn_out"}) {
            t.push_back({b + n + ".weight", {C, C}});
            t.push_back({b + n + ".bias", {C}, true});
        }
        for (const char * n : {"ln1", "ln2"}) {
            t.push_back({b + n + ".weight", {C}, true});
            t.push_back({b + n + ".bias", {C}, true});
        }
        t.push_back({b + fc1 + ".weight", {C, F}});
        t.push_back({b + fc1 + ".bias", {F}, true});
        t.push_back({b + fc2 + ".weight", {F, C}});
        t.push_back({b + fc2 + ".bias", {C}, true});
    }
    return t;
}

}  // namespace

VisionModel::VisionModel(const std::string & mmproj_path, ggml_backend_dev_t device, int32_t expected_embed, bool cpu_repack,
                         bool use_mmap) {
    file_ = std::make_unique<GgufFile>(mmproj_path);
    config_ = read_vision_config(*file_, expected_embed);
    const bool swapped = ffn_names_swapped(*file_, config_);
    storage_ = std::make_unique<Weights>(*file_, vision_weight_table(config_, swapped), device, cpu_repack, use_mmap);
    const Weights & w = *storage_;
    VisionWeights & v = weights_;
    v.patch_w = w.get("v.patch_embd.weight");
    v.patch_b = w.get("v.patch_embd.bias");
    v.pos_embd = w.get("v.position_embd.weight");
    v.post_ln_w = w.get("v.post_ln.weight");
    v.post_ln_b = w.get("v.post_ln.bias");
    const std::string fc1 = swapped ? "ffn_down" : "ffn_up";
    const std::string fc2 = swapped ? "ffn_up" : "ffn_down";
    for (int il = 0; il < config_.n_layer; ++il) {
        const std::string b = "v.blk." + std::to_string(il) + ".";
        v.layers.push_back({w.get(b + "ln1.weight"), w.get(b + "ln1.bias"), w.get(b + "attn_q.weight"), w.get(b + "attn_q.bias"),
                            w.get(b + "attn_k.weight"), w.get(b + "attn_k.bias"), w.get(b + "attn_v.weight"),
                            w.get(b + "attn_v.bias"), w.get(b + "attn_out.weight"), w.get(b + "attn_out.bias"),
                            w.get(b + "ln2.weight"), w.get(b + "ln2.bias"), w.get(b + fc1 + ".weight"),
                            w.get(b + fc1 + ".bias"), w.get(b + fc2 + ".weight"), w.get(b + fc2 + ".bias")});
    }
    v.query = w.get("resampler.query");
    v.kv_w = w.get("resampler.kv.weight");
    v.ln_q_w = w.get("resampler.ln_q.weight");
    v.ln_q_b = w.get("resampler.ln_q.bias");
    v.ln_kv_w = w.get("resampler.ln_kv.weight");
    v.ln_kv_b = w.get("resampler.ln_kv.bias");
    v.attn_q_w = w.get("resampler.attn.q.weight");
    v.attn_q_b = w.get("resampler.attn.q.bias");
    v.attn_k_w = w.get("resampler.attn.k.weight");
    v.attn_k_b = w.get("resampler.attn.k.bias");
    v.attn_v_w = w.get("resampler.attn.v.weight");
    v.attn_v_b = w.get("resampler.attn.v.bias");
    v.attn_out_w = w.get("resampler.attn.out.weight");
    v.attn_out_b = w.get("resampler.attn.out.bias");
    v.ln_post_w = w.get("resampler.ln_post.weight");
    v.ln_post_b = w.get("resampler.ln_post.bias");
    v.proj = w.get("resampler.proj.weight");
}

VisionModel::~VisionModel() = default;

}  // namespace minicpmv
