// HF generate()'s sampling processors (transformers 5.x generation/logits_process.py), reproduced on
// one row of logits. Only the tokens that survive top-k are ever sorted or exponentiated twice, so a
// 151,666-token vocabulary costs one pass for the temperature, one nth_element and a few small sorts.
#include "generate/sampler.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <sstream>
#include <string>

#include "core/error.h"

namespace minicpmv {

namespace {

std::string describe(double value) {
    std::ostringstream out;
    out << value;
    return out.str();
}

[[noreturn]] void bad_param(const std::string & name, const std::string & range, double value) {
    throw Error(ErrorCode::invalid_argument, "sampling parameter " + name + " must be " + range + ", got " + describe(value));
}

}  // namespace

SamplingParams default_sampling_params() { return SamplingParams{}; }

void validate(const SamplingParams & p) {
    if (!std::isfinite(p.temperature)) {
        bad_param("temperature", "finite (<= 0 selects greedy decoding)", p.temperature);
    }
    if (!(p.top_p >= 0.0 && p.top_p <= 1.0)) {  // HF TopPLogitsWarper rejects values outside [0, 1]
        bad_param("top_p", "in [0, 1] (1 disables)", p.top_p);
    }
    if (!(p.min_p >= 0.0f && p.min_p <= 1.0f)) {  // HF MinPLogitsWarper: [0, 1]
        bad_param("min_p", "in [0, 1] (0 disables)", p.min_p);
    }
    if (!(p.repetition_penalty > 0.0f) || !std::isfinite(p.repetition_penalty)) {
        bad_param("repetition_penalty", "finite and > 0 (1 disables)", p.repetition_penalty);
    }
}

void apply_repetition_penalty(float * scores, int32_t n_vocab, const std::vector<int32_t> & tokens, float penalty) {
    // HF gathers the ORIGINAL score of every occurrence and scatters the penalised value back, so a
    // token seen several times is still penalised exactly once.
    std::vector<int32_t> distinct(tokens);
    std::sort(distinct.begin(), distinct.end());
    distinct.erase(std::unique(distinct.begin(), distinct.end()), distinct.end());
    for (int32_t id : distinct) {
        if (id < 0) {
            throw Error(ErrorCode::invalid_argument, "repetition penalty: token id " + std::to_string(id) +
                                                         " is negative (vocabulary size " + std::to_string(n_vocab) + ")");
        }
        if (id >= n_vocab) {
            continue;
        }
        const float s = scores[id];
        scores[id] = s < 0.0f ? s * penalty : s / penalty;
    }
}

Sampler::Sampler(const SamplingParams & params) : params_(params), rng_(params.seed) { validate(params_); }

int32_t Sampler::sample(float * logits, int32_t n_vocab, const std::vector<int32_t> & generated) {
    if (logits == nullptr || n_vocab <= 0) {
        throw Error(ErrorCode::invalid_argument,
                    "sampler: expected a logits row of n_vocab > 0 floats, got n_vocab " + std::to_string(n_vocab));
    }
    if (params_.repetition_penalty != 1.0f) {  // HF adds the processor only when penalty != 1
        apply_repetition_penalty(logits, n_vocab, generated, params_.repetition_penalty);
    }
    // HF divides in float32 by float32(temperature); it skips the warper when temperature == 1.
    const bool greedy = params_.temperature <= 0.0f;
    const bool scale = !greedy && params_.temperature != 1.0f;
    float max_logit = -std::numeric_limits<float>::infinity();
    int32_t best = 0;
    for (int32_t i = 0; i < n_vocab; ++i) {
        if (scale) {
            logits[i] /= params_.temperature;
        }
        // NaN or +inf make HF's softmax NaN and torch.multinomial refuse it.
        if (std::isnan(logits[i]) || logits[i] == std::numeric_limits<float>::infinity()) {
            throw Error(ErrorCode::invalid_argument,
                        "sampler: logit of token " + std::to_string(i) + " is " + std::to_string(logits[i]));
        }
        if (logits[i] > max_logit) {  // strict: torch.argmax returns the first maximal index
            max_logit = logits[i];
            best = i;
        }
    }
    if (max_logit == -std::numeric_limits<float>::infinity()) {
        throw Error(ErrorCode::invalid_argument, "sampler: every logit is -inf, nothing can be sampled");
    }
    if (greedy) {
        return best;
    }
    top_k_filter(logits, n_vocab);
    if (params_.top_p < 1.0) {
        top_p_filter();
    }
    if (params_.min_p > 0.0f) {
        min_p_filter();
    }
    return draw();
}

void Sampler::top_k_filter(const float * logits, int32_t n_vocab) {
    // HF TopKLogitsWarper: remove scores < the k-th largest, so ties with the k-th value all stay.
    // Candidates are collected in id order, which keeps every later step deterministic.
    cand_.clear();
    const int32_t k = params_.top_k > 0 ? std::min(params_.top_k, n_vocab) : n_vocab;
    if (k == n_vocab) {
        cand_.reserve(n_vocab);
        for (int32_t i = 0; i < n_vocab; ++i) {
            cand_.push_back({logits[i], 0.0f, i});
        }
        return;
    }
    scratch_.assign(logits, logits + n_vocab);
    std::nth_element(scratch_.begin(), scratch_.begin() + (k - 1), scratch_.end(), std::greater<float>());
    const float kth = scratch_[k - 1];
    for (int32_t i = 0; i < n_vocab; ++i) {
        if (!(logits[i] < kth)) {
            cand_.push_back({logits[i], 0.0f, i});
        }
    }
}

double Sampler::exp_candidates() {
    float max_logit = -std::numeric_limits<float>::infinity();
    for (const Candidate & c : cand_) {
        max_logit = std::max(max_logit, c.logit);
    }
    double sum = 0.0;
    for (Candidate & c : cand_) {
        c.prob = std::exp(c.logit - max_logit);
        sum += c.prob;
    }
    return sum;
}

void Sampler::softmax_candidates() {
    // torch softmax: exp(x - max) / sum. Tokens already filtered are -inf in HF and add exactly 0.
    const float total = static_cast<float>(exp_candidates());
    for (Candidate & c : cand_) {
        c.prob /= total;
    }
}

void Sampler::top_p_filter() {
    // HF TopPLogitsWarper: sort ascending, cumulative probability (torch's CPU cumsum accumulates in
    // double and stores float32), remove every token whose cumulative value is <= float32(1 - top_p),
    // keep the largest token regardless (min_tokens_to_keep = 1). Seen in descending order (ties by
    // id), position i goes when the mass of positions >= i is <= the threshold: a suffix. Its start is
    // found by quickselect on that mass, so a wide distribution costs O(n), not a sort of the vocabulary;
    // only the last block is sorted, and there the sums run in HF's order.
    softmax_candidates();
    const float threshold = static_cast<float>(1.0 - params_.top_p);
    const auto before = [](const Candidate & a, const Candidate & b) {
        return a.logit > b.logit || (a.logit == b.logit && a.id < b.id);
    };
    constexpr size_t kSortBlock = 256;
    // The selection permutes a copy: cand_ keeps its id order, so the draw stays independent of how
    // the standard library's nth_element arranges things.
    order_.assign(cand_.begin(), cand_.end());
    // Invariant: positions < lo are kept, positions >= hi are removed, `tail` is the mass at
    // positions >= hi, and [lo, hi) holds exactly the candidates that rank there.
    size_t lo = 0;
    size_t hi = order_.size();
    double tail = 0.0;
    for (bool first = true; hi - lo > kSortBlock; first = false) {
        // Usually the kept set is small: try a cut right after the first block before bisecting.
        const size_t mid = first ? lo + kSortBlock : lo + (hi - lo) / 2;
        std::nth_element(order_.begin() + lo, order_.begin() + mid, order_.begin() + hi, before);
        double upper = 0.0;
        for (size_t j = mid; j < hi; ++j) {
            upper += order_[j].prob;
        }
        if (static_cast<float>(tail + upper) > threshold) {
            lo = mid + 1;  // position mid stays, and so does everything ranked above it
        } else {
            hi = mid;
            tail += upper;
        }
    }
    std::sort(order_.begin() + lo, order_.begin() + hi, before);
    size_t first_removed = hi;
    double cum = tail;
    while (first_removed > lo) {
        cum += order_[first_removed - 1].prob;
        if (static_cast<float>(cum) > threshold) {
            break;
        }
        --first_removed;
    }
    // When everything would go (top_p = 0), lo is 0 and position 0 holds the largest token.
    const Candidate last_kept = order_[std::max<size_t>(first_removed, 1) - 1];
    cand_.erase(std::remove_if(cand_.begin(), cand_.end(), [&](const Candidate & c) { return before(last_kept, c); }),
                cand_.end());
}

void Sampler::min_p_filter() {
    // HF MinPLogitsWarper: remove probabilities < float32(min_p) * max probability; the top token
    // always satisfies that bound, so min_tokens_to_keep = 1 never has to step in.
    softmax_candidates();
    float top = 0.0f;
    for (const Candidate & c : cand_) {
        top = std::max(top, c.prob);
    }
    const float cutoff = params_.min_p * top;
    cand_.erase(std::remove_if(cand_.begin(), cand_.end(), [cutoff](const Candidate & c) { return c.prob < cutoff; }),
                cand_.end());
}

int32_t Sampler::draw() {
    // Inverse-CDF draw over the surviving candidates. The uniform is built from the raw 64-bit output
    // (not std::uniform_real_distribution, whose algorithm differs between standard libraries).
    const double u = static_cast<double>(rng_() >> 11) * 0x1.0p-53 * exp_candidates();
    double acc = 0.0;
    for (const Candidate & c : cand_) {
        acc += c.prob;
        if (u < acc) {
            return c.id;
        }
    }
    // Rounding can leave u just above the last partial sum: the last token with any mass gets it.
    for (auto it = cand_.rbegin(); it != cand_.rend(); ++it) {
        if (it->prob > 0.0f) {
            return it->id;
        }
    }
    return cand_.front().id;
}

}  // namespace minicpmv
