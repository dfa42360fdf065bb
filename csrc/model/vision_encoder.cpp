#include "model/vision_encoder.h"

#include "core/error.h"
#include "model/graph_ops.h"

#include <ggml.h>

#include <algorithm>
#include <cmath>
#include <string>

namespace minicpmv {

VisionBatch make_vision_batch(const std::vector<PatchGrid> & slices) {
    if (slices.empty()) throw Error(ErrorCode::invalid_argument, "no image slices to encode");
    VisionBatch b;
    b.slices = slices;
    for (const PatchGrid & g : slices) {
        if (g.px <= 0 || g.py <= 0) throw Error(ErrorCode::invalid_argument, "an image slice has no patches");
        b.n_max = std::max(b.n_max, g.n_patches());
    }
    return b;
}

ggml_tensor * build_vision_graph(ggml_context * ctx, const VisionConfig & c, const VisionWeights & w, const VisionBatch & batch,
                                 VisionInputs & in) {
    const int64_t n_slices = static_cast<int64_t>(batch.slices.size());
    const int64_t n_max = batch.n_max;
    const int64_t n_rows = n_max * n_slices;
    const int64_t patch_len = 3LL * c.patch_size * c.patch_size;
    // f16/bf16 weights on an AVX-512 BF16 CPU: products and attention in bf16 with f32 sums (the
    // checkpoint's own precision, bf16_kernels.h); f16 weights on an AVX2 CPU: products with f32
    // activations (f16_kernels.h); otherwise ggml's operations at the file's precision.
    GraphOps g(ctx, w.cpu_kernels, bf16_kernels_usable(w.layers[0].q_w), /*per_row=*/false,
               /*f16=*/w.layers[0].q_w->type == GGML_TYPE_F16);

    in.patches = ggml_new_tensor_3d(ctx, GGML_TYPE_F32, patch_len, n_max, n_slices);
    ggml_set_input(in.patches);
    in.pos_ids = ggml_new_tensor_1d(ctx, GGML_TYPE_I32, n_rows);
    ggml_set_input(in.pos_ids);
    if (!g.bf16() || has_padding(batch)) {  // the bf16 attention needs no mask when no slice is padded
        in.attn_mask = ggml_new_tensor_4d(ctx, GGML_TYPE_F16, n_max, n_max, 1, n_slices);
        ggml_set_input(in.attn_mask);
    }

    // embeddings.patch_embedding: the stride-14 convolution is a matrix product over patches
    ggml_tensor * kernel = ggml_reshape_2d(ctx, w.patch_w, patch_len, c.n_embd);
    ggml_tensor * x = g.linear(kernel, ggml_reshape_2d(ctx, in.patches, patch_len, n_rows), {w.patch_b});
    // embeddings.position_embedding at the bucketized ids
    x = g.name(ggml_add(ctx, x, ggml_get_rows(ctx, w.pos_embd, in.pos_ids)), "vpm_embeddings");

    const float kq_scale = 1.0f / std::sqrt(static_cast<float>(c.head_dim));
    // self_attn.{q,k,v}_proj of the normalised input, as [head_dim, n_max, n_head, n_slices] views
    auto heads = [&](ggml_tensor * cur, ggml_tensor * wt, ggml_tensor * bias) {
        ggml_tensor * t = g.linear(wt, cur, {bias});
        return ggml_permute(ctx, ggml_reshape_4d(ctx, t, c.head_dim, c.n_head, n_max, n_slices), 0, 2, 1, 3);
    };
    for (int il = 0; il < c.n_layer; ++il) {
        const VisionLayer & L = w.layers[il];
        // encoder.layers[il]: x += out_proj(attn(layer_norm1(x)))
        ggml_tensor * cur = g.layer_norm(x, L.ln1_w, L.ln1_b, c.eps, g.takes_bf16_rows(L.q_w));
        ggml_tensor * attn = g.attention(heads(cur, L.q_w, L.q_b), heads(cur, L.k_w, L.k_b), heads(cur, L.v_w, L.v_b),
                                         in.attn_mask, kq_scale, g.takes_bf16_rows(L.out_w));
        x = g.linear(L.out_w, ggml_reshape_2d(ctx, attn, c.n_embd, n_rows), {L.out_b, x});
        g.name(x, "vpm_attn_out", il);

        // x += fc2(gelu_tanh(fc1(layer_norm2(x))))
        cur = g.layer_norm(x, L.ln2_w, L.ln2_b, c.eps, g.takes_bf16_rows(L.fc1_w));
        cur = g.linear(L.fc1_w, cur, {L.fc1_b, nullptr, Activation::gelu_tanh, g.takes_bf16_rows(L.fc2_w)});
        x = g.name(g.linear(L.fc2_w, cur, {L.fc2_b, x}), "vpm_layer_out", il);
    }
    x = g.name(g.layer_norm(x, w.post_ln_w, w.post_ln_b, c.eps), "vpm_out");  // post_layernorm
    return ggml_reshape_3d(ctx, x, c.n_embd, n_max, n_slices);
}

bool has_padding(const VisionBatch & batch) {
    for (const PatchGrid & g : batch.slices) {
        if (g.n_patches() != batch.n_max) return true;
    }
    return false;
}

std::vector<int32_t> position_ids(const PatchGrid & g, int32_t pos_side) {
    // torch.arange(start, end, step) in float32 as its CPU kernel computes it (checked bit for bit
    // against torch 2.13: float64 steps 1/n up to n = 400, float32 steps up to n = 1400): length ceil((end − start) / step);
    // values in blocks of two 8-float vectors, each vector from a float base = float(start + step·p) plus j·step in double,
    // rounded to float; the tail past the last whole pair of vectors as float(start + step·i).
    // bucketize(right=True) then counts the boundaries ≤ x.
    auto arange_f32 = [](double start, double end, double step) {
        constexpr size_t kLanes = 8;
        std::vector<float> v(static_cast<size_t>(std::ceil((end - start) / step)));
        const size_t n_vector = v.size() / (2 * kLanes) * (2 * kLanes);
        for (size_t i = 0; i < v.size(); ++i) {
            if (i < n_vector) {
                const size_t p = i / kLanes * kLanes;
                const float base = static_cast<float>(start + step * static_cast<double>(p));
                v[i] = static_cast<float>(static_cast<double>(base) + static_cast<double>(i - p) * step);
            } else {
                v[i] = static_cast<float>(start + step * static_cast<double>(i));
            }
        }
        return v;
    };
    // The boundaries' step 1/num_patches_per_side is a Python float (a double). The fractions' step is
    // 1 / tgt_sizes[i], tgt_sizes an int32 tensor: torch's reciprocal in float32, widened to double
    // when arange reads it (docs/model.md §4). The two steps put a few buckets apart (n = 25, 49, 50, 55, …).
    const std::vector<float> boundaries = arange_f32(1.0 / pos_side, 1.0, 1.0 / pos_side);
    auto buckets = [&](int32_t n) {
        const float step = 1.0f / static_cast<float>(n);
        std::vector<int32_t> out;
        for (float frac : arange_f32(0.0, 1.0 - 1e-6, static_cast<double>(step))) {
            out.push_back(
                static_cast<int32_t>(std::upper_bound(boundaries.begin(), boundaries.end(), frac) - boundaries.begin()));
        }
        return out;
    };
    const std::vector<int32_t> rows = buckets(g.py);
    const std::vector<int32_t> cols = buckets(g.px);
    std::vector<int32_t> ids;
    ids.reserve(static_cast<size_t>(g.n_patches()));
    for (int32_t r : rows) {
        for (int32_t col : cols) ids.push_back(r * pos_side + col);
    }
    return ids;
}

void fill_patches(const VisionBatch & b, int32_t p, const std::vector<const float *> & pixels, std::vector<float> & out) {
    const size_t patch_len = 3ULL * p * p;
    out.assign(patch_len * b.n_max * b.slices.size(), 0.0f);
    for (size_t s = 0; s < b.slices.size(); ++s) {
        const PatchGrid & g = b.slices[s];
        const size_t W = static_cast<size_t>(g.px) * p, H = static_cast<size_t>(g.py) * p;
        float * dst_slice = out.data() + s * patch_len * b.n_max;
        for (int32_t py = 0; py < g.py; ++py) {
            for (int32_t px = 0; px < g.px; ++px) {
                // The convolution kernel [p, p, 3, C] flattens as (channel, row, column).
                float * dst = dst_slice + (static_cast<size_t>(py) * g.px + px) * patch_len;
                for (int ch = 0; ch < 3; ++ch) {
                    for (int32_t y = 0; y < p; ++y) {
                        const float * src =
                            pixels[s] + ch * H * W + (static_cast<size_t>(py) * p + y) * W + static_cast<size_t>(px) * p;
                        std::copy(src, src + p, dst + (static_cast<size_t>(ch) * p + y) * p);
                    }
                }
            }
        }
    }
}

void fill_position_ids(const VisionBatch & b, int32_t pos_side, std::vector<int32_t> & out) {
    out.assign(static_cast<size_t>(b.n_max) * b.slices.size(), 0);  // padded patches read row 0, then are masked
    for (size_t s = 0; s < b.slices.size(); ++s) {
        const std::vector<int32_t> ids = position_ids(b.slices[s], pos_side);
        std::copy(ids.begin(), ids.end(), out.begin() + static_cast<ptrdiff_t>(s * b.n_max));
    }
}

void fill_padding_mask(const VisionBatch & b, int32_t n_rows, std::vector<uint16_t> & out) {
    const uint16_t zero = ggml_fp32_to_fp16(0.0f);
    const uint16_t neg_inf = ggml_fp32_to_fp16(-INFINITY);
    out.resize(static_cast<size_t>(b.n_max) * n_rows * b.slices.size());
    for (size_t s = 0; s < b.slices.size(); ++s) {
        const int32_t n = b.slices[s].n_patches();
        for (int32_t r = 0; r < n_rows; ++r) {
            uint16_t * row = out.data() + (s * n_rows + r) * b.n_max;
            for (int32_t j = 0; j < b.n_max; ++j) row[j] = j < n ? zero : neg_inf;
        }
    }
}

}  // namespace minicpmv
