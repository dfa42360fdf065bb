// Beam search as HF chat(sampling=False) runs it: generate(num_beams=3, repetition_penalty=1.2) with
// inputs_embeds, i.e. transformers 5.x GenerationMixin._beam_search (docs/model.md §8). The model is hidden
// behind BeamStepper, so the search itself is plain C++ and testable against HF with a toy model.
//
// Changes from the first draft of this interface, each for HF parity or for the caller:
//   - beam_search takes an optional on_cancel callback, asked before every model step; when it
//     returns true the search stops and returns the best hypothesis so far (see beam_search below).
//   - num_beams == 1 runs greedy search, because that is what HF generate dispatches to: the
//     penalty then applies to raw logits, the argmax is taken and the first EOS ends the reply.
//   - length_penalty is a double: HF divides by float32(len ** length_penalty) computed in double
//     from a Python float.
//   - At the first step every beam's parent is 0: all beams start from the prompt in slot 0.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

namespace minicpmv {

struct BeamSearchParams {             // defaults = HF chat(sampling=False)
    int32_t num_beams = 3;            // >= 1; 1 means greedy
    float repetition_penalty = 1.2f;  // > 0; 1 disables
    double length_penalty = 1.0;      // finished score = sum of log-probs / generated_length ** this
    int32_t max_new_tokens = 2048;    // >= 1
};

BeamSearchParams default_beam_search_params();

// Throws Error(invalid_argument) naming the parameter and its allowed range.
void validate(const BeamSearchParams & params);

// The session implements this: it keeps one KV-cache slot per beam.
class BeamStepper {
  public:
    virtual ~BeamStepper() = default;
    // For each new beam b (parents.size() == tokens.size() == num_beams): continue from the cache
    // slot of beam parents[b] (the session copies slots as needed: several new beams may share a
    // parent and some old beams have none), append tokens[b], and write that beam's n_vocab logits
    // into logits[b * n_vocab ...]. `logits` arrives sized num_beams * n_vocab.
    virtual void step(const std::vector<int32_t> & parents, const std::vector<int32_t> & tokens, std::vector<float> & logits) = 0;
};

// first_logits: the n_vocab logits after the prompt (slot 0 holds the prompt; slots 1..num_beams-1
// are free). stop_ids: the EOS ids (chat() uses <|im_end|> and <|endoftext|>); their count sets how
// many candidates HF keeps per step, (max(2, 1 + count) * num_beams). Returns the generated tokens
// of the best hypothesis without a trailing stop id. If on_cancel stops the search, the result is
// the better of the best finished hypothesis and the best running beam, each scored as HF scores a
// finished one.
std::vector<int32_t> beam_search(BeamStepper & stepper, const float * first_logits, int32_t n_vocab,
                                 const BeamSearchParams & params, const std::vector<int32_t> & stop_ids,
                                 const std::function<bool()> & on_cancel = nullptr);

}  // namespace minicpmv
