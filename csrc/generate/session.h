// A conversation with a model: the per-run state (docs/architecture.md §2) — KV cache, backends and scheduler.
// Later turns reuse the cached prefix of the conversation instead of recomputing it.
#pragma once

#include "generate/beam_search.h"
#include "generate/sampler.h"
#include "image/image_preprocess.h"
#include "model/decoder.h"
#include "text/chat_template.h"

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <ggml-backend.h>

namespace minicpmv {

class KvCache;
class Model;

struct SessionParams {
    int32_t n_ctx = 4096;               // positions the KV cache holds
    int32_t n_batch = 512;              // prompt positions evaluated per graph
    int32_t n_threads = 0;              // CPU threads, up to 1024; 0: all hardware threads
    ggml_type kv_type = GGML_TYPE_F16;  // f32 for exact parity tests
    // Called for the graphs' nodes as ggml's scheduler computes them (llama.cpp's cb_eval): asked first
    // whether a node is wanted, then given it once computed. Nodes are named after the HF modules
    // ("layer_out-3", "vpm_out", "resampler_out", …: model/graph_ops.h). Slower when set.
    ggml_backend_sched_eval_callback cb_eval = nullptr;
    void * cb_eval_user_data = nullptr;
};

SessionParams default_session_params();

struct GenerateParams {
    int32_t max_new_tokens = 2048;
    bool beam_search = false;  // HF chat(sampling=False)
    SamplingParams sampling;   // used when !beam_search (temperature <= 0: greedy)
    BeamSearchParams beam;     // used when beam_search
};

GenerateParams default_generate_params();

struct GenerateResult {
    std::vector<int32_t> tokens;  // generated, without the stop token
    std::string text;
    std::string stop_reason;  // "stop", "length" or "cancelled"
    int32_t n_prompt = 0;     // prompt positions
    int32_t n_reused = 0;     // of which were already in the cache
    int32_t n_encoded = 0;    // image slices run through the vision encoder for this prompt
    double prefill_ms = 0.0;
    double decode_ms = 0.0;
};

// Receives each new piece of text (complete UTF-8 only); return false to cancel. Beam search, which
// hands over its whole answer at the end, calls it with an empty piece before each step instead, so
// that it can be cancelled midway too.
using PieceCallback = std::function<bool(const std::string & piece)>;

class Session {
  public:
    Session(const Model & model, const SessionParams & params);
    ~Session();
    Session(const Session &) = delete;
    Session & operator=(const Session &) = delete;

    // Appends tokens to the conversation and returns the logits of the last one (n_vocab values),
    // or of every new position when all_logits. Throws Error(context_full) when they do not fit.
    std::vector<float> eval(const std::vector<int32_t> & tokens, bool all_logits = false);
    // Forgets every position from n on.
    void truncate(int32_t n);
    const std::vector<int32_t> & tokens() const { return tokens_; }
    int32_t n_ctx() const { return params_.n_ctx; }

    // Runs a full prompt (the whole conversation so far): its longest cached prefix is reused, and
    // only the images whose positions lie past that prefix are encoded.
    GenerateResult generate(const Prompt & prompt, const GenerateParams & params, const PieceCallback & on_piece = nullptr);

    // The resampler outputs [n_query × embed] of each input, all in batched graphs (docs/model.md §4, §5).
    // Throws Error(unsupported) when the model has no vision file.
    std::vector<float> encode_slices(const std::vector<const VisionInput *> & inputs);

  private:
    friend class SessionBeamStepper;

    // One decoder graph on this session's backends (the caller holds the model's StepBatcher): input
    // as token ids or, when embd != nullptr, embeddings ([n_embd] per position); writes logits rows.
    void compute(const DecoderBatch & batch, const int32_t * tokens, const float * embd, std::vector<float> & logits);
    // The logits after `token` is appended to slot 0, batched with other sessions' steps.
    std::vector<float> step(int32_t token);
    // Appends positions (ids, or embeddings when embd != nullptr) with their reuse keys to slot 0.
    std::vector<float> append(const std::vector<int32_t> & tokens, const float * embd, const uint64_t * keys, bool all_logits);
    void ensure_slots(int n_slots);
    GenerateResult generate_beams(const std::vector<float> & first_logits, const GenerateParams & params,
                                  const PieceCallback & on_piece);

    const Model & model_;
    SessionParams params_;
    std::vector<ggml_backend_t> backends_;
    ggml_backend_sched_t sched_ = nullptr;
    std::unique_ptr<KvCache> cache_;
    std::vector<int32_t> tokens_;  // what slot 0 of the cache holds
    std::vector<uint64_t> keys_;   // per position: 0 for text, else which image embedding (Prompt::position_keys)
    std::vector<uint8_t> graph_buf_;
};

}  // namespace minicpmv
