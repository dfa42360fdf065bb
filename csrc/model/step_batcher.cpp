#include "model/step_batcher.h"

#include <algorithm>
#include <chrono>

namespace minicpmv {

namespace {

// Steps per graph: each adds ~15 nodes per layer (cache writes, views, attention), 3.4k for 8 steps of
// the 28-layer model within the session's 8192; and on a CPU, 8 rows already make the products
// compute- rather than memory-bound.
constexpr size_t kMaxSteps = 8;
// How long a batch waits for generating sessions that have not handed in their step: the time one
// takes to sample and stream its token, a few percent of a step of the full model (~150 ms).
constexpr auto kGather = std::chrono::milliseconds(10);

}  // namespace

StepBatcher::Generating::Generating(StepBatcher & b) : b_(b) {
    std::lock_guard<std::mutex> lock(b_.mutex_);
    ++b_.n_generating_;
}

StepBatcher::Generating::~Generating() {
    std::lock_guard<std::mutex> lock(b_.mutex_);
    --b_.n_generating_;
    b_.changed_.notify_all();
}

void StepBatcher::step(Step & step, const Compute & compute) {
    std::unique_lock<std::mutex> lock(mutex_);
    waiting_.push_back(&step);
    changed_.notify_all();
    while (!step.done) {
        if (busy_) {
            changed_.wait(lock);
            continue;
        }
        // This thread computes the next batch: first let the other generating sessions join.
        busy_ = true;
        const auto deadline = std::chrono::steady_clock::now() + kGather;
        changed_.wait_until(lock, deadline, [&] {
            return waiting_.size() >= std::min<size_t>(static_cast<size_t>(std::max(n_generating_, 1)), kMaxSteps);
        });
        const size_t n = std::min(waiting_.size(), kMaxSteps);
        // The caller's own step first: it may have been handed in after others still waiting.
        std::vector<Step *> batch{&step};
        for (Step * s : waiting_) {
            if (s != &step && batch.size() < n) batch.push_back(s);
        }
        waiting_.erase(std::remove_if(waiting_.begin(), waiting_.end(),
                                      [&](Step * s) { return std::find(batch.begin(), batch.end(), s) != batch.end(); }),
                       waiting_.end());
        lock.unlock();

        DecoderBatch b;
        b.n_tokens = 1;
        std::vector<int32_t> tokens;
        for (const Step * s : batch) {
            b.seqs.push_back(s->seq);
            tokens.push_back(s->token);
        }
        std::exception_ptr error;
        std::vector<float> logits;
        try {
            compute(b, tokens, logits);
        } catch (...) {
            error = std::current_exception();
        }
        const size_t n_vocab = logits.size() / batch.size();

        lock.lock();
        for (size_t i = 0; i < batch.size(); ++i) {
            if (error) {
                batch[i]->error = error;
            } else {
                batch[i]->logits.assign(logits.begin() + i * n_vocab, logits.begin() + (i + 1) * n_vocab);
            }
            batch[i]->done = true;
        }
        counts_.steps += batch.size();
        ++counts_.batches;
        busy_ = false;
        changed_.notify_all();
    }
    if (step.error) std::rethrow_exception(step.error);
}

StepBatcher::Counts StepBatcher::counts() {
    std::lock_guard<std::mutex> lock(mutex_);
    return counts_;
}

void StepBatcher::exclusive(const std::function<void()> & work) {
    std::unique_lock<std::mutex> lock(mutex_);
    changed_.wait(lock, [&] { return !busy_; });
    busy_ = true;
    lock.unlock();
    std::exception_ptr error;
    try {
        work();
    } catch (...) {
        error = std::current_exception();
    }
    lock.lock();
    busy_ = false;
    changed_.notify_all();
    lock.unlock();
    if (error) std::rethrow_exception(error);
}

}  // namespace minicpmv
