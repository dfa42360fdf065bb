// Token sampling with the processor chain of HF generate() (docs/model.md §8, sampling=True).
//
// Order of operations, as transformers' _get_logits_processor builds it for do_sample=True:
//   repetition penalty (on raw logits) -> temperature -> top-k -> top-p -> min-p -> softmax -> draw.
// Temperature <= 0 selects greedy decoding, which in HF is do_sample=False: only the repetition
// penalty runs, then argmax (first index on ties).
//
// Interface note: top_p is a double because HF compares the float32 cumulative probabilities with
// float32(1.0 - top_p) where top_p is a Python double; 0.8 and 0.8f give thresholds one ulp apart.
#pragma once

#include <cstdint>
#include <random>
#include <vector>

namespace minicpmv {

struct SamplingParams {                // defaults = HF chat(sampling=True)
    float temperature = 0.7f;          // <= 0 means greedy
    int32_t top_k = 100;               // <= 0 disables
    double top_p = 0.8;                // in [0, 1]; 1 disables
    float min_p = 0.0f;                // in [0, 1]; 0 disables
    float repetition_penalty = 1.05f;  // > 0; 1 disables
    uint64_t seed = 0;                 // a fixed seed reproduces the same tokens
};

SamplingParams default_sampling_params();

// Throws Error(invalid_argument) naming the parameter and its allowed range.
void validate(const SamplingParams & params);

// HF RepetitionPenaltyLogitsProcessor on one row of scores: each DISTINCT token of `tokens` is
// penalised once (score < 0 ? score * penalty : score / penalty). Ids >= n_vocab are ignored, as HF
// clamps them to a dropped padding column; negative ids throw. The beam search uses it on log-probs.
void apply_repetition_penalty(float * scores, int32_t n_vocab, const std::vector<int32_t> & tokens, float penalty);

class Sampler {  // owns its RNG; one per session, not thread-safe
  public:
    explicit Sampler(const SamplingParams & params);  // validates params

    // logits: n_vocab floats, modified in place. generated: the tokens generated so far in this
    // reply (the prompt is never penalised: HF chat() passes inputs_embeds, no input_ids).
    int32_t sample(float * logits, int32_t n_vocab, const std::vector<int32_t> & generated);

    const SamplingParams & params() const { return params_; }

  private:
    struct Candidate {
        float logit;
        float prob;  // scratch for the filter that runs now
        int32_t id;
    };

    void top_k_filter(const float * logits, int32_t n_vocab);
    double exp_candidates();  // exp(logit − max) of each candidate into prob; returns their sum
    void softmax_candidates();
    void top_p_filter();
    void min_p_filter();
    int32_t draw();

    SamplingParams params_;
    std::mt19937_64 rng_;           // fully specified by the standard, so a seed reproduces across platforms
    std::vector<Candidate> cand_;   // the surviving tokens, in id order; kept between calls to avoid
    std::vector<Candidate> order_;  // reallocating per token. order_: top-p's selection workspace
    std::vector<float> scratch_;
};

}  // namespace minicpmv
