// The decode steps of a model's sessions, run together (docs/architecture.md §9). Sessions generating
// at the same time (the server's slots, an app's threads) each hand in their next token; one of them
// computes every waiting step in one graph with its own backends — one pass over the weights for all,
// which costs little more than a pass for one, since decoding is bound by memory. Every other graph
// of the model's sessions (prompts, images, beams) runs alone between two batches, so sessions share
// the CPU instead of oversubscribing it.
#pragma once

#include "model/decoder.h"

#include <condition_variable>
#include <cstdint>
#include <exception>
#include <functional>
#include <mutex>
#include <vector>

namespace minicpmv {

class StepBatcher {
  public:
    // One session's decode step: `token` at position seq.n_past of its cache.
    struct Step {
        DecoderSequence seq;
        int32_t token = 0;
        std::vector<float> logits;  // n_vocab values, once done
        std::exception_ptr error;
        bool done = false;
    };
    // Computes a batch of steps (rows of `logits` in the order of `steps`) on the caller's backends.
    using Compute =
        std::function<void(const DecoderBatch & batch, const std::vector<int32_t> & tokens, std::vector<float> & logits)>;

    // While one exists, its session is generating: a batch waits (briefly) for such sessions to hand
    // in their steps before it runs.
    class Generating {
      public:
        explicit Generating(StepBatcher & b);
        ~Generating();
        Generating(const Generating &) = delete;
        Generating & operator=(const Generating &) = delete;

      private:
        StepBatcher & b_;
    };

    // Runs `step` in the next batch; the calling thread may be the one that computes it, with `compute`.
    // Rethrows what the batch threw.
    void step(Step & step, const Compute & compute);
    // Runs `work` (any other graph) between two batches, alone.
    void exclusive(const std::function<void()> & work);

    // Decode steps computed so far, and in how many graphs.
    struct Counts {
        uint64_t steps = 0;
        uint64_t batches = 0;
    };
    Counts counts();

  private:
    std::mutex mutex_;
    std::condition_variable changed_;
    bool busy_ = false;  // a batch or exclusive work is running
    int n_generating_ = 0;
    std::vector<Step *> waiting_;
    Counts counts_;
};

}  // namespace minicpmv
