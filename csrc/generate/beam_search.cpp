// transformers 5.x GenerationMixin._beam_search for one batch row, early_stopping=False,
// do_sample=False, with RepetitionPenaltyLogitsProcessor as the only processor (what chat() asks
// for). HF's float32 arithmetic and its -1e9 markers are kept as they are, because they decide which
// hypotheses win; helper names follow HF's (_get_top_k_continuations, _update_finished_beams, ...).
#include "generate/beam_search.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <string>

#include "core/error.h"
#include "generate/sampler.h"

namespace minicpmv {

namespace {

// HF marks dead beams and unfinished hypotheses by adding -1e9 in float32.
constexpr float kDead = -1.0e9f;

struct Hypothesis {
    std::vector<int32_t> tokens;  // generated tokens, a stop id included when it ended by one
    float score = kDead;
    bool finished = false;
};

struct Candidate {
    float score;  // beam score + processed log-prob of the token
    int32_t beam;
    int32_t token;
};

// torch.topk over the flattened (beam, token) scores; ties go to the lower flat index.
bool better(const Candidate & a, const Candidate & b) {
    return a.score > b.score || (a.score == b.score && (a.beam < b.beam || (a.beam == b.beam && a.token < b.token)));
}

bool is_stop(int32_t token, const std::vector<int32_t> & stop_ids) {
    return std::find(stop_ids.begin(), stop_ids.end(), token) != stop_ids.end();
}

// float32(len ** length_penalty): Python computes the power in double, torch divides in float32.
float length_divisor(int32_t length, double length_penalty) {
    return static_cast<float>(std::pow(static_cast<double>(length), length_penalty));
}

// NaN or +inf would turn every log-prob into NaN (HF's topk then returns garbage).
void check_logits(const float * row, int32_t n_vocab) {
    for (int32_t i = 0; i < n_vocab; ++i) {
        if (std::isnan(row[i]) || row[i] == std::numeric_limits<float>::infinity()) {
            throw Error(ErrorCode::invalid_argument,
                        "beam search: logit of token " + std::to_string(i) + " is " + std::to_string(row[i]));
        }
    }
}

// One beam's share of _beam_search steps b and c: log_softmax as torch computes it
// ((x - max) - log(sum exp(x - max))), the repetition penalty on those log-probs with the beam's own
// tokens, plus the beam score; then this beam's best `keep`, which contain every candidate of the
// beam that can reach the global top `keep`. A heap with the worst kept candidate on top makes this
// one pass over the vocabulary.
void beam_continuations(const float * logits, int32_t n_vocab, const Hypothesis & beam, int32_t beam_index, float penalty,
                        size_t keep, std::vector<float> & logp, std::vector<Candidate> & heap) {
    check_logits(logits, n_vocab);
    const float max_logit = *std::max_element(logits, logits + n_vocab);
    double sum = 0.0;
    logp.resize(n_vocab);
    for (int32_t i = 0; i < n_vocab; ++i) {
        logp[i] = logits[i] - max_logit;
        sum += std::exp(logp[i]);
    }
    const float log_sum = static_cast<float>(std::log(sum));
    for (int32_t i = 0; i < n_vocab; ++i) {
        logp[i] -= log_sum;
    }
    if (penalty != 1.0f) {
        apply_repetition_penalty(logp.data(), n_vocab, beam.tokens, penalty);
    }
    heap.clear();
    for (int32_t i = 0; i < n_vocab; ++i) {
        const Candidate c{logp[i] + beam.score, beam_index, i};
        if (heap.size() < keep) {
            heap.push_back(c);
            std::push_heap(heap.begin(), heap.end(), better);
        } else if (better(c, heap.front())) {
            std::pop_heap(heap.begin(), heap.end(), better);
            heap.back() = c;
            std::push_heap(heap.begin(), heap.end(), better);
        }
    }
}

std::vector<int32_t> without_stop(std::vector<int32_t> tokens, const std::vector<int32_t> & stop_ids) {
    if (!tokens.empty() && is_stop(tokens.back(), stop_ids)) {
        tokens.pop_back();
    }
    return tokens;
}

// num_beams == 1: HF generate runs _sample with do_sample=False, where the penalty applies to the
// raw logits and the argmax (first index on ties) is taken.
std::vector<int32_t> greedy_search(BeamStepper & stepper, const float * first_logits, int32_t n_vocab,
                                   const BeamSearchParams & params, const std::vector<int32_t> & stop_ids,
                                   const std::function<bool()> & on_cancel) {
    std::vector<int32_t> generated;
    std::vector<float> row(first_logits, first_logits + n_vocab);
    for (;;) {
        check_logits(row.data(), n_vocab);
        if (params.repetition_penalty != 1.0f) {
            apply_repetition_penalty(row.data(), n_vocab, generated, params.repetition_penalty);
        }
        const int32_t token = static_cast<int32_t>(std::max_element(row.begin(), row.end()) - row.begin());
        generated.push_back(token);
        if (is_stop(token, stop_ids) || static_cast<int32_t>(generated.size()) >= params.max_new_tokens) {
            break;
        }
        if (on_cancel && on_cancel()) {
            break;
        }
        stepper.step({0}, {token}, row);
        if (row.size() != static_cast<size_t>(n_vocab)) {
            throw Error(ErrorCode::invalid_argument, "beam search: the stepper returned " + std::to_string(row.size()) +
                                                         " logits, expected " + std::to_string(n_vocab));
        }
    }
    return without_stop(std::move(generated), stop_ids);
}

std::vector<int32_t> extended(const std::vector<Hypothesis> & running, const Candidate & c) {
    std::vector<int32_t> seq = running[c.beam].tokens;
    seq.push_back(c.token);
    return seq;
}

// _update_finished_beams: only the top num_beams candidates may finish; their score is divided by
// the generated length (stop token included). Everything else gets -1e9 added and competes as a
// placeholder, exactly like HF's merged topk; ties keep the earlier entry. (HF's other two -1e9
// terms, for early_stopping=True and for a satisfied heuristic, are zero whenever this runs.)
std::vector<Hypothesis> update_finished(const std::vector<Hypothesis> & finished, const std::vector<Hypothesis> & running,
                                        const std::vector<Candidate> & candidates, const std::vector<bool> & hit, float divisor) {
    const size_t num_beams = finished.size();
    struct Entry {
        float score;
        size_t source;  // < num_beams: an old finished slot; else num_beams + candidate index
        bool finished;
    };
    std::vector<Entry> merged;
    merged.reserve(num_beams + candidates.size());
    for (size_t s = 0; s < num_beams; ++s) {
        merged.push_back({finished[s].score, s, finished[s].finished});
    }
    for (size_t i = 0; i < candidates.size(); ++i) {
        const bool just_finished = hit[i] && i < num_beams;
        const float score = candidates[i].score / divisor;
        merged.push_back({just_finished ? score : score + kDead, num_beams + i, just_finished});
    }
    std::stable_sort(merged.begin(), merged.end(), [](const Entry & a, const Entry & b) { return a.score > b.score; });
    std::vector<Hypothesis> next(num_beams);
    for (size_t s = 0; s < num_beams; ++s) {
        const Entry & e = merged[s];
        next[s].score = e.score;
        next[s].finished = e.finished;
        next[s].tokens = e.source < num_beams ? finished[e.source].tokens : extended(running, candidates[e.source - num_beams]);
    }
    return next;
}

// _get_running_beams_for_next_iteration: the best num_beams candidates that did not stop (stopped
// ones carry -1e9 and only fill up when too few others exist). Also reports each new beam's parent
// and token for the stepper.
std::vector<Hypothesis> next_running(const std::vector<Hypothesis> & running, const std::vector<Candidate> & candidates,
                                     const std::vector<bool> & hit, std::vector<int32_t> & parents,
                                     std::vector<int32_t> & tokens) {
    const size_t num_beams = running.size();
    std::vector<float> score(candidates.size());
    for (size_t i = 0; i < candidates.size(); ++i) {
        score[i] = hit[i] ? candidates[i].score + kDead : candidates[i].score;
    }
    std::vector<size_t> order(candidates.size());
    std::iota(order.begin(), order.end(), size_t{0});
    std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return score[a] > score[b]; });
    std::vector<Hypothesis> next(num_beams);
    for (size_t b = 0; b < num_beams; ++b) {
        const Candidate & c = candidates[order[b]];
        next[b].tokens = extended(running, c);
        next[b].score = score[order[b]];
        parents[b] = c.beam;
        tokens[b] = c.token;
    }
    return next;
}

// _check_early_stop_heuristic (early_stopping=False): the best running beam, scored at its current
// length, must beat the worst finished slot; an unfinished slot counts as -1e9. HF's flag is sticky,
// but the search ends the first time it turns false.
bool improvement_possible(float best_running_score, const std::vector<Hypothesis> & finished, float divisor) {
    const float best_possible = best_running_score / divisor;
    float worst = finished[0].score;
    for (const Hypothesis & h : finished) {
        worst = std::min(worst, h.score);
    }
    for (const Hypothesis & h : finished) {
        if (best_possible > (h.finished ? worst : kDead)) {
            return true;
        }
    }
    return false;
}

}  // namespace

BeamSearchParams default_beam_search_params() { return BeamSearchParams{}; }

void validate(const BeamSearchParams & p) {
    if (p.num_beams < 1) {
        throw Error(ErrorCode::invalid_argument,
                    "beam search parameter num_beams must be >= 1, got " + std::to_string(p.num_beams));
    }
    if (!(p.repetition_penalty > 0.0f) || !std::isfinite(p.repetition_penalty)) {
        throw Error(ErrorCode::invalid_argument,
                    "beam search parameter repetition_penalty must be finite and > 0 (1 disables), got " +
                        std::to_string(p.repetition_penalty));
    }
    if (!std::isfinite(p.length_penalty)) {
        throw Error(ErrorCode::invalid_argument,
                    "beam search parameter length_penalty must be finite, got " + std::to_string(p.length_penalty));
    }
    if (p.max_new_tokens < 1) {
        throw Error(ErrorCode::invalid_argument,
                    "beam search parameter max_new_tokens must be >= 1, got " + std::to_string(p.max_new_tokens));
    }
}

std::vector<int32_t> beam_search(BeamStepper & stepper, const float * first_logits, int32_t n_vocab,
                                 const BeamSearchParams & params, const std::vector<int32_t> & stop_ids,
                                 const std::function<bool()> & on_cancel) {
    validate(params);
    if (first_logits == nullptr || n_vocab <= 0) {
        throw Error(ErrorCode::invalid_argument,
                    "beam search: expected first logits of n_vocab > 0 floats, got n_vocab " + std::to_string(n_vocab));
    }
    if (params.num_beams == 1) {
        return greedy_search(stepper, first_logits, n_vocab, params, stop_ids, on_cancel);
    }
    const int32_t num_beams = params.num_beams;
    const size_t n_logits = static_cast<size_t>(num_beams) * static_cast<size_t>(n_vocab);
    // HF keeps (n_eos + 1) * num_beams candidates (at least 2 * num_beams), so that num_beams of them
    // survive even when every beam's best continuations are stop tokens.
    const size_t keep = std::max<size_t>(2, 1 + stop_ids.size()) * static_cast<size_t>(num_beams);
    if (n_logits < keep) {
        throw Error(ErrorCode::invalid_argument, "beam search: a vocabulary of " + std::to_string(n_vocab) +
                                                     " tokens cannot supply " + std::to_string(keep) + " candidates");
    }

    // Beam 0 starts at score 0 and the others at -1e9, so that the first step, where every beam
    // holds the same prompt, only draws continuations from beam 0.
    std::vector<Hypothesis> running(num_beams);
    running[0].score = 0.0f;
    std::vector<Hypothesis> finished(num_beams);  // best first, as HF's topk leaves them

    std::vector<float> logits;  // num_beams rows from the stepper
    std::vector<float> logp;
    std::vector<Candidate> heap;
    std::vector<Candidate> candidates;
    std::vector<int32_t> parents(num_beams);
    std::vector<int32_t> tokens(num_beams);

    for (int32_t cur_len = 0;; ++cur_len) {
        const bool first_step = cur_len == 0;

        // _get_top_k_continuations: the best `keep` of all (beam, token) pairs.
        candidates.clear();
        for (int32_t b = 0; b < num_beams; ++b) {
            const float * row = first_step ? first_logits : logits.data() + static_cast<size_t>(b) * n_vocab;
            beam_continuations(row, n_vocab, running[b], b, params.repetition_penalty, keep, logp, heap);
            candidates.insert(candidates.end(), heap.begin(), heap.end());
        }
        std::sort(candidates.begin(), candidates.end(), better);
        candidates.resize(keep);

        // Stopping criteria per candidate: a stop id, or max_new_tokens reached (HF's max_length with
        // inputs_embeds is max_new_tokens, compared with the length including this token).
        const bool at_max = cur_len + 1 >= params.max_new_tokens;
        std::vector<bool> hit(keep);
        bool all_hit = true;
        for (size_t i = 0; i < keep; ++i) {
            hit[i] = at_max || is_stop(candidates[i].token, stop_ids);
            all_hit = all_hit && hit[i];
        }

        const float divisor = length_divisor(cur_len + 1, params.length_penalty);
        finished = update_finished(finished, running, candidates, hit, divisor);
        running = next_running(running, candidates, hit, parents, tokens);
        if (first_step) {
            std::fill(parents.begin(), parents.end(), 0);  // every beam held the prompt in slot 0
        }
        if (all_hit || !improvement_possible(running[0].score, finished, divisor)) {
            break;
        }

        if (on_cancel && on_cancel()) {
            const bool running_wins = !finished[0].finished || running[0].score / divisor > finished[0].score;
            return without_stop(running_wins ? running[0].tokens : finished[0].tokens, stop_ids);
        }
        logits.resize(n_logits);
        stepper.step(parents, tokens, logits);
        if (logits.size() != n_logits) {
            throw Error(ErrorCode::invalid_argument, "beam search: the stepper returned " + std::to_string(logits.size()) +
                                                         " logits, expected " + std::to_string(n_logits));
        }
    }
    return without_stop(finished[0].tokens, stop_ids);
}

}  // namespace minicpmv
