// A conversation with a model: the per-run state (STYLE.md §5) — KV cache, backends and scheduler.
// Later turns reuse the cached prefix of the conversation instead of recomputing it.
#pragma once

#include "beam_search.h"
#include "sampler.h"

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
    int32_t n_ctx = 4096;             // positions the KV cache holds
    int32_t n_batch = 512;            // prompt positions evaluated per graph
    int32_t n_threads = 0;            // CPU threads; <= 0: all hardware threads
    ggml_type kv_type = GGML_TYPE_F16;  // f32 for exact parity tests
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
    std::string stop_reason;      // "stop", "length" or "cancelled"
    int32_t n_prompt = 0;         // prompt positions
    int32_t n_reused = 0;         // of which were already in the cache
    double prefill_ms = 0.0;
    double decode_ms = 0.0;
};

// Receives each new piece of text (complete UTF-8 only); return false to cancel.
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

    // Runs a full prompt (the whole conversation so far): its longest cached prefix is reused.
    GenerateResult generate(const std::vector<int32_t> & prompt, const GenerateParams & params,
                            const PieceCallback & on_piece = nullptr);

  private:
    friend class SessionBeamStepper;

    // One graph: n_tokens positions in each of n_slots slots from n_past; writes logits rows.
    void decode(const int32_t * tokens, int n_tokens, int n_slots, int n_past, bool all_logits, std::vector<float> & logits);
    void ensure_slots(int n_slots);
    GenerateResult generate_beams(const std::vector<float> & first_logits, const GenerateParams & params);

    const Model & model_;
    SessionParams params_;
    std::vector<ggml_backend_t> backends_;
    ggml_backend_sched_t sched_ = nullptr;
    std::unique_ptr<KvCache> cache_;
    std::vector<int32_t> tokens_;  // what slot 0 of the cache holds
    std::vector<uint8_t> graph_buf_;
};

}  // namespace minicpmv
