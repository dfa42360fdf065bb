// The Qwen2 decoder (docs/model.md §1): weights table and graph. The graph reads top to bottom like HF's
// Qwen2ForCausalLM: embed → N × (RMSNorm → attention → residual → RMSNorm → SwiGLU MLP → residual)
// → final RMSNorm → lm_head.
#pragma once

#include "core/model_weights.h"
#include "model/model_config.h"

#include <vector>

struct ggml_cgraph;
struct ggml_context;
struct ggml_tensor;

namespace minicpmv {

class KvCache;

struct DecoderLayer {
    ggml_tensor * attn_norm;
    ggml_tensor * wq;
    ggml_tensor * bq;
    ggml_tensor * wk;
    ggml_tensor * bk;
    ggml_tensor * wv;
    ggml_tensor * bv;
    ggml_tensor * wo;
    ggml_tensor * ffn_norm;
    ggml_tensor * ffn_gate;
    ggml_tensor * ffn_up;
    ggml_tensor * ffn_down;
};

struct DecoderWeights {
    ggml_tensor * token_embd;
    std::vector<DecoderLayer> layers;
    ggml_tensor * output_norm;
    ggml_tensor * output;
    // The model runs on the CPU device: the graphs may use the int8/bf16 kernels (custom ops only ggml's
    // CPU backend runs). Off on other devices, even for weights kept in CPU memory (model_weights.h).
    bool cpu_kernels = false;
};

// Every tensor of the decoder (llama.cpp's names and shapes) and its slot in `d`.
void for_each_decoder_tensor(const LlmConfig & config, DecoderWeights & d, const TensorVisitor & visit);

// Where one sequence of a batch keeps its keys and values: a cache, a slot of it, and how many of
// its positions are already there.
struct DecoderSequence {
    const KvCache * cache = nullptr;
    int slot = 0;
    int n_past = 0;
};

// One forward pass: n_tokens new positions for each sequence. The sequences may live in different
// caches and stand at different positions: the decode steps of several sessions (StepBatcher), the
// beams of a search (one slot each), or one prompt chunk. Input is either token ids (embedded here)
// or ready embeddings (image positions), sequence after sequence.
struct DecoderBatch {
    int n_tokens = 0;
    std::vector<DecoderSequence> seqs;
    bool embeddings = false;  // input is [n_embd, n_tokens·seqs] f32 instead of token ids
    bool all_logits = false;  // logits for every position, not only the last of each sequence
};

struct DecoderInputs {
    ggml_tensor * tokens = nullptr;       // i32 [n_tokens·seqs]         (when !embeddings)
    ggml_tensor * embd = nullptr;         // f32 [n_embd, n_tokens·seqs] (when embeddings)
    ggml_tensor * positions = nullptr;    // i32 [n_tokens·seqs]
    std::vector<ggml_tensor *> kq_masks;  // per sequence f16 [n_past + n_tokens, n_tokens]: 0 or -inf (causal)
};

// Builds the graph into gf (the K/V writes included) and returns the logits tensor
// [n_vocab, rows], rows = seqs (last position of each) or n_tokens·seqs.
ggml_tensor * build_decoder_graph(ggml_context * ctx, ggml_cgraph * gf, const LlmConfig & config, const DecoderWeights & w,
                                  const DecoderBatch & batch, DecoderInputs & inputs);

// Host-side values for the inputs above.
void fill_positions(const DecoderBatch & batch, std::vector<int32_t> & positions);
void fill_causal_mask(const DecoderSequence & seq, int n_tokens, std::vector<uint16_t> & mask);  // f16 bits

}  // namespace minicpmv
