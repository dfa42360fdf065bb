#include "model/decoder.h"

#include "model/graph_ops.h"
#include "model/kv_cache.h"

#include <ggml.h>

#include <cmath>
#include <string>

namespace minicpmv {

void for_each_decoder_tensor(const LlmConfig & c, DecoderWeights & d, const TensorVisitor & visit) {
    const int64_t n_embd = c.n_embd;
    const int64_t n_embd_kv = static_cast<int64_t>(c.head_dim) * c.n_head_kv;
    visit({"token_embd.weight", {n_embd, c.n_vocab}}, d.token_embd);
    visit({"output_norm.weight", {n_embd}, true}, d.output_norm);
    visit({"output.weight", {n_embd, c.n_vocab}}, d.output);
    d.layers.resize(static_cast<size_t>(c.n_layer));
    for (int il = 0; il < c.n_layer; ++il) {
        const std::string p = "blk." + std::to_string(il) + ".";
        DecoderLayer & L = d.layers[static_cast<size_t>(il)];
        visit({p + "attn_norm.weight", {n_embd}, true}, L.attn_norm);
        visit({p + "attn_q.weight", {n_embd, n_embd}}, L.wq);
        visit({p + "attn_q.bias", {n_embd}, true}, L.bq);
        visit({p + "attn_k.weight", {n_embd, n_embd_kv}}, L.wk);
        visit({p + "attn_k.bias", {n_embd_kv}, true}, L.bk);
        visit({p + "attn_v.weight", {n_embd, n_embd_kv}}, L.wv);
        visit({p + "attn_v.bias", {n_embd_kv}, true}, L.bv);
        visit({p + "attn_output.weight", {n_embd, n_embd}}, L.wo);
        visit({p + "ffn_norm.weight", {n_embd}, true}, L.ffn_norm);
        visit({p + "ffn_gate.weight", {n_embd, c.n_ff}}, L.ffn_gate);
        visit({p + "ffn_up.weight", {n_embd, c.n_ff}}, L.ffn_up);
        visit({p + "ffn_down.weight", {c.n_ff, n_embd}}, L.ffn_down);
    }
}

namespace {

// Rows from which a prompt batch over quantized weights takes the bf16 path (see build_decoder_graph).
constexpr int kMinBf16Rows = 16;

// ggml's CPU flash attention rounds differently from 64 query rows up (measured: a 300-token prompt
// in one batch vs token by token, F32 weights and cache, logits 5e-6 apart; chunks of up to 48 rows
// are bit-equal). Prompt batches attend 32 rows at a time, so a position's K/V do not depend on how
// the prompt was cut, and a prefix reused from the cache equals its fresh evaluation (#14). Left: with
// several threads and a single query row over more than ~300 keys (decoding a long conversation),
// ggml splits the keys between threads and rounds differently again.
constexpr int64_t kQueryTile = 32;

// View of one layer's K or V cache as [head_dim, n_kv, n_head_kv, n_slots] for flash attention.
ggml_tensor * cache_view(ggml_context * ctx, ggml_tensor * cache, const LlmConfig & c, int n_kv, int n_slots) {
    ggml_tensor * v = ggml_view_4d(ctx, cache, c.head_dim, c.n_head_kv, n_kv, n_slots, ggml_row_size(cache->type, c.head_dim),
                                   cache->nb[1], cache->nb[2], 0);
    return ggml_permute(ctx, v, 0, 2, 1, 3);
}

// Writes the new K or V rows [n_embd_kv, n_tokens, n_slots] at position n_past of each slot.
ggml_tensor * cache_store(ggml_context * ctx, ggml_tensor * cache, ggml_tensor * cur, int n_tokens, int n_slots, int n_past) {
    ggml_tensor * dst = ggml_view_3d(ctx, cache, cache->ne[0], n_tokens, n_slots, cache->nb[1], cache->nb[2],
                                     static_cast<size_t>(n_past) * cache->nb[1]);
    return ggml_cpy(ctx, ggml_reshape_3d(ctx, cur, cache->ne[0], n_tokens, n_slots), dst);
}

}  // namespace

ggml_tensor * build_decoder_graph(ggml_context * ctx, ggml_cgraph * gf, const LlmConfig & c, const DecoderWeights & w,
                                  const KvCache & cache, const DecoderBatch & b, DecoderInputs & in) {
    const int n_rows = b.n_tokens * b.n_slots;
    // q4_K/q6_K matrices (a Q4_K_M file) on an AVX-512 VNNI CPU: the int8 kernels (int8_kernels.h), for
    // decoding and prompts alike. Other quantized matrices in prompt batches on an AVX-512 BF16 CPU:
    // expanded to bf16 once per batch and multiplied by the bf16 kernel (bf16_kernels.h), faster than
    // ggml's quantized dot products at this batch size; attention of prompt batches the same way (the
    // causal tail of each block of queries skipped). The rest: ggml's kernels.
    GraphOps g(ctx,
               n_rows >= kMinBf16Rows && ggml_is_quantized(w.layers[0].ffn_up->type) && bf16_kernels_usable(w.layers[0].ffn_up));
    const int n_kv = b.n_past + b.n_tokens;
    const float kq_scale = 1.0f / std::sqrt(static_cast<float>(c.head_dim));

    // model.embed_tokens (or embeddings supplied by the vision path)
    ggml_tensor * x;
    if (b.embeddings) {
        in.embd = ggml_new_tensor_2d(ctx, GGML_TYPE_F32, c.n_embd, n_rows);
        ggml_set_input(in.embd);
        x = in.embd;
    } else {
        in.tokens = ggml_new_tensor_1d(ctx, GGML_TYPE_I32, n_rows);
        ggml_set_input(in.tokens);
        x = ggml_get_rows(ctx, w.token_embd, in.tokens);
    }
    in.positions = ggml_new_tensor_1d(ctx, GGML_TYPE_I32, n_rows);
    ggml_set_input(in.positions);
    in.kq_mask = ggml_new_tensor_2d(ctx, GGML_TYPE_F16, n_kv, b.n_tokens);
    ggml_set_input(in.kq_mask);

    auto rope = [&](ggml_tensor * t) {  // NEOX RoPE on all head dims
        return ggml_rope_ext(ctx, t, in.positions, nullptr, c.head_dim, GGML_ROPE_TYPE_NEOX, 0, c.rope_freq_base, 1.0f, 0.0f,
                             1.0f, 0.0f, 0.0f);
    };
    for (int il = 0; il < c.n_layer; ++il) {
        const DecoderLayer & L = w.layers[il];

        // input_layernorm, self_attn: q/k/v projections with bias, RoPE
        ggml_tensor * cur = g.name(g.rms_norm(x, L.attn_norm, c.rms_eps), "attn_norm", il);
        ggml_tensor * q = rope(ggml_reshape_3d(ctx, g.linear(L.wq, cur, {L.bq}), c.head_dim, c.n_head, n_rows));
        ggml_tensor * k = rope(ggml_reshape_3d(ctx, g.linear(L.wk, cur, {L.bk}), c.head_dim, c.n_head_kv, n_rows));
        ggml_tensor * v = g.linear(L.wv, cur, {L.bv});
        g.name(q, "attn_q_rope", il);

        // past_key_values: append this batch, then attend over the whole prefix of each slot
        ggml_build_forward_expand(gf, cache_store(ctx, cache.k(il), k, b.n_tokens, b.n_slots, b.n_past));
        ggml_build_forward_expand(gf, cache_store(ctx, cache.v(il), v, b.n_tokens, b.n_slots, b.n_past));
        q = ggml_permute(ctx, ggml_reshape_4d(ctx, q, c.head_dim, c.n_head, b.n_tokens, b.n_slots), 0, 2, 1, 3);
        ggml_tensor * attn =
            g.attention(q, cache_view(ctx, cache.k(il), c, n_kv, b.n_slots), cache_view(ctx, cache.v(il), c, n_kv, b.n_slots),
                        in.kq_mask, kq_scale, g.takes_bf16_rows(L.wo), kQueryTile);
        // o_proj (no bias) + residual
        x = g.name(g.linear(L.wo, ggml_reshape_2d(ctx, attn, c.n_embd, n_rows), {nullptr, x}), "attn_out", il);

        // post_attention_layernorm, mlp: down(silu(gate(x)) * up(x)) + residual
        cur = g.name(g.rms_norm(x, L.ffn_norm, c.rms_eps), "ffn_norm", il);
        cur = ggml_swiglu_split(ctx, g.linear(L.ffn_gate, cur), g.linear(L.ffn_up, cur));
        x = g.name(g.linear(L.ffn_down, cur, {nullptr, x}), "layer_out", il);
    }

    if (!b.all_logits && b.n_tokens > 1) {
        // Only the last position of each slot feeds the sampler: skip the rest of the head's work.
        x = ggml_view_2d(ctx, x, c.n_embd, b.n_slots, x->nb[1] * b.n_tokens, x->nb[1] * (b.n_tokens - 1));
    }
    x = g.name(g.rms_norm(x, w.output_norm, c.rms_eps), "output_norm");  // model.norm
    ggml_tensor * logits = g.name(g.linear(w.output, x), "logits");      // lm_head
    ggml_set_output(logits);
    ggml_build_forward_expand(gf, logits);
    return logits;
}

void fill_positions(const DecoderBatch & b, std::vector<int32_t> & positions) {
    positions.resize(static_cast<size_t>(b.n_tokens) * b.n_slots);
    for (int s = 0; s < b.n_slots; ++s) {
        for (int i = 0; i < b.n_tokens; ++i) positions[static_cast<size_t>(s) * b.n_tokens + i] = b.n_past + i;
    }
}

void fill_causal_mask(const DecoderBatch & b, std::vector<uint16_t> & mask) {
    const int n_kv = b.n_past + b.n_tokens;
    const uint16_t zero = ggml_fp32_to_fp16(0.0f);
    const uint16_t neg_inf = ggml_fp32_to_fp16(-INFINITY);
    mask.resize(static_cast<size_t>(n_kv) * b.n_tokens);
    for (int i = 0; i < b.n_tokens; ++i) {
        for (int j = 0; j < n_kv; ++j) mask[static_cast<size_t>(i) * n_kv + j] = j <= b.n_past + i ? zero : neg_inf;
    }
}

}  // namespace minicpmv
