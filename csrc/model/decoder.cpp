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

// Positions per sequence from which a prompt batch over quantized weights takes the bf16 path (see build_decoder_graph).
constexpr int kMinBf16Rows = 16;

// View of one layer's K or V cache for one sequence: [head_dim, n_kv, n_head_kv] for flash attention.
ggml_tensor * cache_view(ggml_context * ctx, ggml_tensor * cache, const LlmConfig & c, const DecoderSequence & seq, int n_kv) {
    ggml_tensor * v = ggml_view_3d(ctx, cache, c.head_dim, c.n_head_kv, n_kv, ggml_row_size(cache->type, c.head_dim),
                                   cache->nb[1], static_cast<size_t>(seq.slot) * cache->nb[2]);
    return ggml_permute(ctx, v, 0, 2, 1, 3);
}

// Writes a sequence's new K or V rows [n_embd_kv, n_tokens] at its position n_past.
ggml_tensor * cache_store(ggml_context * ctx, ggml_tensor * cache, ggml_tensor * rows, const DecoderSequence & seq) {
    ggml_tensor * dst =
        ggml_view_2d(ctx, cache, cache->ne[0], rows->ne[1], cache->nb[1],
                     static_cast<size_t>(seq.slot) * cache->nb[2] + static_cast<size_t>(seq.n_past) * cache->nb[1]);
    return ggml_cpy(ctx, rows, dst);
}

// Rows [s·n, (s+1)·n) of a 2-d tensor.
ggml_tensor * rows_of(ggml_context * ctx, ggml_tensor * t, int64_t s, int64_t n) {
    return ggml_view_2d(ctx, t, t->ne[0], n, t->nb[1], s * n * t->nb[1]);
}

}  // namespace

ggml_tensor * build_decoder_graph(ggml_context * ctx, ggml_cgraph * gf, const LlmConfig & c, const DecoderWeights & w,
                                  const DecoderBatch & b, DecoderInputs & in) {
    const int n_seqs = static_cast<int>(b.seqs.size());
    const int n_rows = b.n_tokens * n_seqs;
    // q4_K/q6_K matrices (a Q4_K_M file) on an AVX-512 VNNI CPU: the int8 kernels (int8_kernels.h), for
    // decoding and prompts alike; on an AVX2 CPU for prompts, with ggml's numbers. Other quantized matrices in prompt batches on
    // an AVX-512 BF16 CPU: expanded to bf16 once per batch and multiplied by the bf16 kernel (bf16_kernels.h), faster than ggml's
    // quantized dot products at this batch size; attention of prompt batches the same way (the causal tail of each block of
    // queries skipped). The rest, and decode steps however many sequences a batch holds (a sequence's logits must not depend on
    // its company): ggml's kernels.
    GraphOps g(
        ctx, w.cpu_kernels,
        b.n_tokens >= kMinBf16Rows && ggml_is_quantized(w.layers[0].ffn_up->type) && bf16_kernels_usable(w.layers[0].ffn_up),
        b.n_tokens == 1);
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
    for (const DecoderSequence & seq : b.seqs) {
        in.kq_masks.push_back(ggml_new_tensor_2d(ctx, GGML_TYPE_F16, seq.n_past + b.n_tokens, b.n_tokens));
        ggml_set_input(in.kq_masks.back());
    }

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
        ggml_tensor * k2 = ggml_reshape_2d(ctx, k, c.n_head_kv * c.head_dim, n_rows);
        ggml_tensor * v = g.linear(L.wv, cur, {L.bv});
        g.name(q, "attn_q_rope", il);

        // past_key_values: each sequence appends its rows, then attends over its whole prefix
        std::vector<ggml_tensor *> attn_seqs;
        for (int s = 0; s < n_seqs; ++s) {
            const DecoderSequence & seq = b.seqs[s];
            ggml_build_forward_expand(gf, cache_store(ctx, seq.cache->k(il), rows_of(ctx, k2, s, b.n_tokens), seq));
            ggml_build_forward_expand(gf, cache_store(ctx, seq.cache->v(il), rows_of(ctx, v, s, b.n_tokens), seq));
            const int n_kv = seq.n_past + b.n_tokens;
            ggml_tensor * qs = ggml_permute(ctx,
                                            ggml_view_3d(ctx, q, c.head_dim, c.n_head, b.n_tokens, q->nb[1], q->nb[2],
                                                         static_cast<size_t>(s) * b.n_tokens * q->nb[2]),
                                            0, 2, 1, 3);
            ggml_tensor * attn =
                g.attention(qs, cache_view(ctx, seq.cache->k(il), c, seq, n_kv), cache_view(ctx, seq.cache->v(il), c, seq, n_kv),
                            in.kq_masks[s], kq_scale, g.takes_bf16_rows(L.wo));
            attn_seqs.push_back(ggml_reshape_2d(ctx, attn, c.n_embd, b.n_tokens));
        }
        ggml_tensor * attn = concat_all(ctx, attn_seqs, 1);
        // o_proj (no bias) + residual
        x = g.name(g.linear(L.wo, attn, {nullptr, x}), "attn_out", il);

        // post_attention_layernorm, mlp: down(silu(gate(x)) * up(x)) + residual
        cur = g.name(g.rms_norm(x, L.ffn_norm, c.rms_eps), "ffn_norm", il);
        cur = ggml_swiglu_split(ctx, g.linear(L.ffn_gate, cur), g.linear(L.ffn_up, cur));
        x = g.name(g.linear(L.ffn_down, cur, {nullptr, x}), "layer_out", il);
    }

    if (!b.all_logits && b.n_tokens > 1) {
        // Only the last position of each sequence feeds the sampler: skip the rest of the head's work.
        x = ggml_view_2d(ctx, x, c.n_embd, n_seqs, x->nb[1] * b.n_tokens, x->nb[1] * (b.n_tokens - 1));
    }
    x = g.name(g.rms_norm(x, w.output_norm, c.rms_eps), "output_norm");  // model.norm
    ggml_tensor * logits = g.name(g.linear(w.output, x), "logits");      // lm_head
    ggml_set_output(logits);
    ggml_build_forward_expand(gf, logits);
    return logits;
}

void fill_positions(const DecoderBatch & b, std::vector<int32_t> & positions) {
    positions.resize(static_cast<size_t>(b.n_tokens) * b.seqs.size());
    for (size_t s = 0; s < b.seqs.size(); ++s) {
        for (int i = 0; i < b.n_tokens; ++i) positions[s * b.n_tokens + i] = b.seqs[s].n_past + i;
    }
}

void fill_causal_mask(const DecoderSequence & seq, int n_tokens, std::vector<uint16_t> & mask) {
    const int n_kv = seq.n_past + n_tokens;
    const uint16_t zero = ggml_fp32_to_fp16(0.0f);
    const uint16_t neg_inf = ggml_fp32_to_fp16(-INFINITY);
    mask.resize(static_cast<size_t>(n_kv) * n_tokens);
    for (int i = 0; i < n_tokens; ++i) {
        for (int j = 0; j < n_kv; ++j) mask[static_cast<size_t>(i) * n_kv + j] = j <= seq.n_past + i ? zero : neg_inf;
    }
}

}  // namespace minicpmv
