#include "model/resampler.h"

#include "model/graph_ops.h"

#include <ggml.h>

#include <algorithm>
#include <cmath>

namespace minicpmv {

ggml_tensor * build_resampler_graph(ggml_context * ctx, const VisionConfig & c, const VisionWeights & w,
                                    const VisionBatch & batch, ggml_tensor * vision_out, ResamplerInputs & in) {
    const int64_t n_slices = static_cast<int64_t>(batch.slices.size());
    const int64_t n_max = batch.n_max;
    const int64_t E = c.embed, H = c.resampler_heads, D = E / H, Q = c.n_query;

    in.pos_embed = ggml_new_tensor_3d(ctx, GGML_TYPE_F32, E, n_max, n_slices);
    ggml_set_input(in.pos_embed);
    // The same choice of kernels as the encoder (vision_encoder.cpp): bf16 products for f16/bf16 files.
    GraphOps g(ctx, w.cpu_kernels, bf16_kernels_usable(w.kv_w), /*per_row=*/false, /*f16=*/w.kv_w->type == GGML_TYPE_F16);
    if (!g.bf16() || has_padding(batch)) {  // the bf16 attention needs no mask when no slice is padded
        in.key_mask = ggml_new_tensor_4d(ctx, GGML_TYPE_F16, n_max, Q, 1, n_slices);
        ggml_set_input(in.key_mask);
    }

    // kv = ln_kv(kv_proj(x))
    ggml_tensor * kv = g.linear(w.kv_w, ggml_reshape_2d(ctx, vision_out, c.n_embd, n_max * n_slices));
    kv = g.name(g.layer_norm(kv, w.ln_kv_w, w.ln_kv_b, c.eps), "resampler_kv");
    ggml_tensor * keys_in = ggml_add(ctx, kv, ggml_reshape_2d(ctx, in.pos_embed, E, n_max * n_slices));

    // q = in_proj_q(ln_q(query)): the same for every slice, computed once per batch
    ggml_tensor * q = g.linear(w.attn_q_w, g.layer_norm(w.query, w.ln_q_w, w.ln_q_b, c.eps), {w.attn_q_b});
    q = ggml_permute(ctx, ggml_reshape_4d(ctx, q, D, H, Q, 1), 0, 2, 1, 3);  // [D, Q, H, 1]
    if (!g.bf16()) {  // ggml's attention wants one query block per slice; the bf16 one shares it
        q = ggml_repeat(ctx, ggml_cont(ctx, q), ggml_new_tensor_4d(ctx, GGML_TYPE_F32, D, Q, H, n_slices));
    }

    // attn: keys = in_proj_k(kv + pos), values = in_proj_v(kv)
    auto heads = [&](ggml_tensor * wt, ggml_tensor * bias, ggml_tensor * x) {
        ggml_tensor * t = g.linear(wt, x, {bias});
        return ggml_permute(ctx, ggml_reshape_4d(ctx, t, D, H, n_max, n_slices), 0, 2, 1, 3);  // [D, n_max, H, n_slices]
    };
    ggml_tensor * attn = g.attention(q, heads(w.attn_k_w, w.attn_k_b, keys_in), heads(w.attn_v_w, w.attn_v_b, kv), in.key_mask,
                                     1.0f / std::sqrt(static_cast<float>(D)), g.takes_bf16_rows(w.attn_out_w));
    ggml_tensor * out = g.linear(w.attn_out_w, ggml_reshape_2d(ctx, attn, E, Q * n_slices), {w.attn_out_b});

    // ln_post, then x @ proj (proj is stored transposed for mul_mat)
    out = g.linear(w.proj, g.layer_norm(out, w.ln_post_w, w.ln_post_b, c.eps));
    g.name(out, "resampler_out");
    return ggml_reshape_3d(ctx, out, E, Q, n_slices);
}

std::vector<float> sincos_2d(const PatchGrid & g, int32_t embed) {
    // [emb(column), emb(row)], emb(p) = [sin(p·ω_k), cos(p·ω_k)] for k < embed/4, ω_k = 1 / 10000^(k/(embed/4)),
    // in float32 as HF's numpy code computes it: ω_k, then the angle p·ω_k, each rounded to float32
    // (the angle's rounding alone moves the values by up to 4e-6 from a double computation).
    const int32_t quarter = embed / 4;
    std::vector<float> omega(quarter);
    for (int32_t k = 0; k < quarter; ++k) {
        omega[k] = 1.0f / std::pow(10000.0f, static_cast<float>(k) / static_cast<float>(quarter));
    }
    auto sin_f32 = [](float angle) {
        return static_cast<float>(std::sin(static_cast<double>(angle)));
    };
    auto cos_f32 = [](float angle) {
        return static_cast<float>(std::cos(static_cast<double>(angle)));
    };
    std::vector<float> out(static_cast<size_t>(g.n_patches()) * embed);
    for (int32_t h = 0; h < g.py; ++h) {
        for (int32_t x = 0; x < g.px; ++x) {
            float * e = out.data() + (static_cast<size_t>(h) * g.px + x) * embed;
            for (int32_t k = 0; k < quarter; ++k) {
                const float angle_x = static_cast<float>(x) * omega[k];
                const float angle_h = static_cast<float>(h) * omega[k];
                e[k] = sin_f32(angle_x);
                e[quarter + k] = cos_f32(angle_x);
                e[2 * quarter + k] = sin_f32(angle_h);
                e[3 * quarter + k] = cos_f32(angle_h);
            }
        }
    }
    return out;
}

void fill_pos_embed(const VisionBatch & b, int32_t embed, std::vector<float> & out) {
    out.assign(static_cast<size_t>(embed) * b.n_max * b.slices.size(), 0.0f);
    for (size_t s = 0; s < b.slices.size(); ++s) {
        const std::vector<float> pe = sincos_2d(b.slices[s], embed);
        std::copy(pe.begin(), pe.end(), out.begin() + static_cast<ptrdiff_t>(s * embed * b.n_max));
    }
}

}  // namespace minicpmv
