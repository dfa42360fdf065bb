#include "model/graph_ops.h"

#include "core/cpu_weights.h"
#include "kernels/f16_kernels.h"
#include "kernels/int8_kernels.h"

#include <ggml.h>

#include <vector>

namespace minicpmv {

ggml_tensor * GraphOps::linear(ggml_tensor * w, ggml_tensor * x, const LinearOptions & opt) {
    if (takes_bf16_rows(w)) return bf16_linear(ctx_, w, x, opt);
    ggml_tensor * y;
    Activation act = opt.act;  // what is left to apply after the product
    if (cpu_kernels_ && int8_kernels_usable(w, ggml_nrows(x))) {
        if (x != rounded_src_) {
            rounded_src_ = x;
            rounded_ = int8_rows(ctx_, x);
        }
        y = int8_linear(ctx_, w, rounded_, opt.bias, per_row_);
    } else if (f16_ && f16_kernels_usable(w, x)) {
        y = f16_linear(ctx_, w, x, opt.bias, opt.act);
        act = Activation::none;
    } else {
        y = ggml_mul_mat(ctx_, w, x);
        if (opt.bias != nullptr) y = ggml_add(ctx_, y, opt.bias);
    }
    if (act == Activation::gelu_tanh) y = gelu_tanh(ctx_, y);
    return opt.residual != nullptr ? ggml_add(ctx_, y, opt.residual) : y;
}

bool GraphOps::takes_bf16_rows(const ggml_tensor * w) const {
    return bf16_ && !int8_kernels_usable(w, 1) && bf16_kernels_usable(storage(w));  // bf16_ implies cpu_kernels_
}

ggml_tensor * GraphOps::layer_norm(ggml_tensor * x, ggml_tensor * w, ggml_tensor * b, float eps, bool bf16_out) {
    if (bf16_ && bf16_out) return bf16_layer_norm(ctx_, x, w, b, eps);
    return ggml_add(ctx_, ggml_mul(ctx_, ggml_norm(ctx_, x, eps), w), b);
}

ggml_tensor * GraphOps::rms_norm(ggml_tensor * x, ggml_tensor * w, float eps) {
    return ggml_mul(ctx_, ggml_rms_norm(ctx_, x, eps), w);
}

ggml_tensor * GraphOps::attention(ggml_tensor * q, ggml_tensor * k, ggml_tensor * v, ggml_tensor * mask, float scale,
                                  bool bf16_out) {
    if (bf16_) return bf16_attention(ctx_, q, k, v, mask, scale, bf16_out);
    if (f16_ && f32_attention_usable(q, k, v, mask)) return f32_attention(ctx_, q, k, v, mask, scale);
    ggml_tensor * out = ggml_flash_attn_ext(ctx_, q, k, v, mask, scale, 0.0f, 0.0f);
    ggml_flash_attn_ext_set_prec(out, GGML_PREC_F32);
    return out;
}

ggml_tensor * concat_all(ggml_context * ctx, std::vector<ggml_tensor *> parts, int dim) {
    while (parts.size() > 1) {
        std::vector<ggml_tensor *> joined;
        for (size_t i = 0; i < parts.size(); i += 2) {
            joined.push_back(i + 1 < parts.size() ? ggml_concat(ctx, parts[i], parts[i + 1], dim) : parts[i]);
        }
        parts.swap(joined);
    }
    return parts.front();
}

ggml_tensor * GraphOps::name(ggml_tensor * t, const char * name, int layer) const {
    return layer < 0 ? ggml_set_name(t, name) : ggml_format_name(t, "%s-%d", name, layer);
}

// Composed from exact operations because ggml's CPU gelu reads a float16 table (≈1e-3 relative
// error), too coarse for parity with HF.
ggml_tensor * gelu_tanh(ggml_context * ctx, ggml_tensor * x) {
    const float sqrt_2_over_pi = 0.79788456080286535588f;
    ggml_tensor * cube = ggml_mul(ctx, ggml_sqr(ctx, x), x);
    ggml_tensor * inner = ggml_scale(ctx, ggml_add(ctx, x, ggml_scale(ctx, cube, 0.044715f)), sqrt_2_over_pi);
    return ggml_mul(ctx, x, ggml_scale_bias(ctx, ggml_tanh(ctx, inner), 0.5f, 0.5f));
}

}  // namespace minicpmv
