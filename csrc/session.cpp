#include "session.h"

#include "backend.h"
#include "decoder.h"
#include "error.h"
#include "kv_cache.h"
#include "model.h"
#include "tokenizer.h"

#include <ggml.h>

#include <algorithm>
#include <chrono>

namespace minicpmv {

namespace {

constexpr size_t kMaxGraphNodes = 8192;

double ms_since(std::chrono::steady_clock::time_point t0) {
    return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

// Length of the longest prefix of `s` that does not end inside a UTF-8 sequence: streaming never
// shows half a character (a token may hold part of one).
size_t complete_utf8_prefix(const std::string & s) {
    size_t n = s.size();
    for (size_t back = 1; back <= 4 && back <= n; ++back) {
        const auto c = static_cast<unsigned char>(s[n - back]);
        if ((c & 0xC0) == 0x80) continue;  // continuation byte: keep looking for the lead byte
        const size_t len = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xE ? 3 : (c >> 3) == 0x1E ? 4 : 1;
        return back < len ? n - back : n;
    }
    return n;
}

}  // namespace

SessionParams default_session_params() { return SessionParams{}; }

GenerateParams default_generate_params() {
    GenerateParams p;
    p.sampling = default_sampling_params();
    p.beam = default_beam_search_params();
    return p;
}

Session::Session(const Model & model, const SessionParams & params) : model_(model), params_(params) {
    if (params.n_ctx < 1) throw Error(ErrorCode::invalid_argument, "n_ctx must be >= 1, got " + std::to_string(params.n_ctx));
    if (params.n_batch < 1) throw Error(ErrorCode::invalid_argument, "n_batch must be >= 1, got " + std::to_string(params.n_batch));
    if (params.kv_type != GGML_TYPE_F16 && params.kv_type != GGML_TYPE_F32) {
        throw Error(ErrorCode::invalid_argument, "the KV cache type must be f16 or f32");
    }
    backends_.push_back(init_backend(model.device(), params.n_threads));
    if (ggml_backend_dev_type(model.device()) != GGML_BACKEND_DEVICE_TYPE_CPU) {
        // The scheduler needs the CPU as the last backend, for ops the device cannot run.
        backends_.push_back(init_backend(ggml_backend_dev_by_type(GGML_BACKEND_DEVICE_TYPE_CPU), params.n_threads));
    }
    sched_ = ggml_backend_sched_new(backends_.data(), nullptr, static_cast<int>(backends_.size()), kMaxGraphNodes, false, true);
    cache_ = std::make_unique<KvCache>(model.config(), params.n_ctx, 1, params.kv_type, model.device());
    graph_buf_.resize(ggml_tensor_overhead() * kMaxGraphNodes + ggml_graph_overhead_custom(kMaxGraphNodes, false));
}

Session::~Session() {
    cache_.reset();
    if (sched_ != nullptr) ggml_backend_sched_free(sched_);
    for (ggml_backend_t b : backends_) ggml_backend_free(b);
}

void Session::decode(const int32_t * tokens, int n_tokens, int n_slots, int n_past, bool all_logits, std::vector<float> & logits) {
    const LlmConfig & c = model_.config();
    DecoderBatch batch;
    batch.n_tokens = n_tokens;
    batch.n_slots = n_slots;
    batch.n_past = n_past;
    batch.all_logits = all_logits;

    ggml_init_params ip{graph_buf_.size(), graph_buf_.data(), /*no_alloc =*/true};
    ggml_context * ctx = ggml_init(ip);
    ggml_cgraph * gf = ggml_new_graph_custom(ctx, kMaxGraphNodes, false);
    DecoderInputs in;
    ggml_tensor * out = build_decoder_graph(ctx, gf, c, model_.decoder(), *cache_, batch, in);

    ggml_backend_sched_reset(sched_);
    if (!ggml_backend_sched_alloc_graph(sched_, gf)) {
        ggml_free(ctx);
        throw Error(ErrorCode::io, "cannot allocate the decoder graph (out of memory?)");
    }
    std::vector<int32_t> positions;
    std::vector<uint16_t> mask;
    fill_positions(batch, positions);
    fill_causal_mask(batch, mask);
    ggml_backend_tensor_set(in.tokens, tokens, 0, ggml_nbytes(in.tokens));
    ggml_backend_tensor_set(in.positions, positions.data(), 0, ggml_nbytes(in.positions));
    ggml_backend_tensor_set(in.kq_mask, mask.data(), 0, ggml_nbytes(in.kq_mask));
    const ggml_status status = ggml_backend_sched_graph_compute(sched_, gf);
    if (status != GGML_STATUS_SUCCESS) {
        ggml_free(ctx);
        throw Error(ErrorCode::io, "decoder graph failed on the device (status " + std::to_string(status) + ")");
    }
    logits.resize(ggml_nelements(out));
    ggml_backend_tensor_get(out, logits.data(), 0, ggml_nbytes(out));
    ggml_free(ctx);
}

std::vector<float> Session::eval(const std::vector<int32_t> & tokens, bool all_logits) {
    if (tokens.empty()) throw Error(ErrorCode::invalid_argument, "nothing to evaluate");
    const int32_t n_vocab = model_.config().n_vocab;
    for (int32_t id : tokens) {
        if (id < 0 || id >= n_vocab) {
            throw Error(ErrorCode::invalid_argument, "token id " + std::to_string(id) + " is outside the vocabulary (0.." +
                                                         std::to_string(n_vocab - 1) + ")");
        }
    }
    const size_t n_after = tokens_.size() + tokens.size();
    if (n_after > static_cast<size_t>(params_.n_ctx)) {
        throw Error(ErrorCode::context_full, "the conversation needs " + std::to_string(n_after) + " positions but the context holds " +
                                                 std::to_string(params_.n_ctx) + " (raise n_ctx)");
    }
    std::vector<float> logits, chunk;
    for (size_t i = 0; i < tokens.size(); i += params_.n_batch) {
        const int n = static_cast<int>(std::min<size_t>(params_.n_batch, tokens.size() - i));
        decode(tokens.data() + i, n, 1, static_cast<int>(tokens_.size()), all_logits, chunk);
        tokens_.insert(tokens_.end(), tokens.begin() + i, tokens.begin() + i + n);
        if (all_logits) {
            logits.insert(logits.end(), chunk.begin(), chunk.end());
        } else {
            logits.swap(chunk);
        }
    }
    return logits;
}

void Session::truncate(int32_t n) {
    if (n < 0) throw Error(ErrorCode::invalid_argument, "cannot truncate to a negative length");
    if (static_cast<size_t>(n) < tokens_.size()) tokens_.resize(n);
}

void Session::ensure_slots(int n_slots) {
    if (cache_->n_slots() >= n_slots) return;
    auto bigger = std::make_unique<KvCache>(model_.config(), params_.n_ctx, n_slots, params_.kv_type, model_.device());
    // Carry slot 0 (the conversation) over.
    std::vector<uint8_t> staging;
    for (int il = 0; il < model_.config().n_layer; ++il) {
        for (auto [from, to] : {std::pair{cache_->k(il), bigger->k(il)}, std::pair{cache_->v(il), bigger->v(il)}}) {
            staging.resize(tokens_.size() * from->nb[1]);
            ggml_backend_tensor_get(from, staging.data(), 0, staging.size());
            ggml_backend_tensor_set(to, staging.data(), 0, staging.size());
        }
    }
    cache_ = std::move(bigger);
}

// Beam search drives the model through this: one cache slot per beam.
class SessionBeamStepper : public BeamStepper {
  public:
    SessionBeamStepper(Session & s, int n_past) : s_(s), n_past_(n_past) {}

    void step(const std::vector<int32_t> & parents, const std::vector<int32_t> & tokens, std::vector<float> & logits) override {
        if (n_past_ + 1 > s_.params_.n_ctx) throw Error(ErrorCode::context_full, "beam search reached the end of the context");
        s_.cache_->copy_slots(std::vector<int>(parents.begin(), parents.end()), n_past_);
        s_.decode(tokens.data(), 1, static_cast<int>(tokens.size()), n_past_, false, logits);
        ++n_past_;
    }

  private:
    Session & s_;
    int n_past_;
};

GenerateResult Session::generate_beams(const std::vector<float> & first_logits, const GenerateParams & params) {
    const int32_t n_prompt = static_cast<int32_t>(tokens_.size());
    BeamSearchParams bp = params.beam;
    // The search may not run past the context: cap its length.
    bp.max_new_tokens = std::min(bp.max_new_tokens, params_.n_ctx - n_prompt);
    ensure_slots(bp.num_beams);
    SessionBeamStepper stepper(*this, n_prompt);
    GenerateResult r;
    r.tokens = beam_search(stepper, first_logits.data(), model_.config().n_vocab, bp, model_.stop_ids());
    // Slot 0 now holds some beam's tokens past the prompt: keep only the prompt as cached.
    truncate(n_prompt);
    r.stop_reason = static_cast<int32_t>(r.tokens.size()) >= bp.max_new_tokens ? "length" : "stop";
    r.text = model_.tokenizer().decode(r.tokens);
    return r;
}

GenerateResult Session::generate(const std::vector<int32_t> & prompt, const GenerateParams & params, const PieceCallback & on_piece) {
    if (prompt.empty()) throw Error(ErrorCode::invalid_argument, "the prompt is empty");
    if (params.max_new_tokens < 0) throw Error(ErrorCode::invalid_argument, "max_new_tokens must be >= 0");
    if (prompt.size() > static_cast<size_t>(params_.n_ctx)) {
        throw Error(ErrorCode::context_full, "the prompt has " + std::to_string(prompt.size()) + " tokens but the context holds " +
                                                 std::to_string(params_.n_ctx) + " (raise n_ctx)");
    }
    if (params.beam_search) {
        if (params.beam.num_beams < 1) throw Error(ErrorCode::invalid_argument, "num_beams must be >= 1");
    } else {
        validate(params.sampling);
    }

    // Reuse the longest common prefix; at least the last prompt token is evaluated, for its logits.
    size_t reuse = 0;
    while (reuse < tokens_.size() && reuse + 1 < prompt.size() && tokens_[reuse] == prompt[reuse]) ++reuse;
    truncate(static_cast<int32_t>(reuse));

    const auto t0 = std::chrono::steady_clock::now();
    std::vector<float> logits = eval(std::vector<int32_t>(prompt.begin() + reuse, prompt.end()));
    const double prefill_ms = ms_since(t0);

    const auto t1 = std::chrono::steady_clock::now();
    GenerateResult r;
    if (params.beam_search) {
        GenerateParams p = params;
        p.beam.max_new_tokens = params.max_new_tokens;
        r = generate_beams(logits, p);
        if (on_piece && !r.text.empty()) on_piece(r.text);
    } else {
        const Tokenizer & tok = model_.tokenizer();
        const std::vector<int32_t> & stops = model_.stop_ids();
        Sampler sampler(params.sampling);
        std::string pending;
        r.stop_reason = "length";
        const int32_t n_vocab = model_.config().n_vocab;
        while (static_cast<int32_t>(r.tokens.size()) < params.max_new_tokens) {
            const int32_t id = sampler.sample(logits.data(), n_vocab, r.tokens);
            if (std::find(stops.begin(), stops.end(), id) != stops.end()) {
                r.stop_reason = "stop";
                break;
            }
            r.tokens.push_back(id);
            pending += tok.token_bytes(id);
            const size_t n = complete_utf8_prefix(pending);
            if (n > 0) {
                const std::string piece = pending.substr(0, n);
                pending.erase(0, n);
                r.text += piece;
                if (on_piece && !on_piece(piece)) {
                    r.stop_reason = "cancelled";
                    break;
                }
            }
            if (static_cast<int32_t>(r.tokens.size()) >= params.max_new_tokens) break;
            if (prompt.size() + r.tokens.size() >= static_cast<size_t>(params_.n_ctx)) break;  // reply fills the context
            logits = eval({id});
        }
        if (!pending.empty()) {
            r.text += pending;
            if (on_piece && r.stop_reason != "cancelled") on_piece(pending);
        }
    }
    r.decode_ms = ms_since(t1);
    r.prefill_ms = prefill_ms;
    r.n_prompt = static_cast<int32_t>(prompt.size());
    r.n_reused = static_cast<int32_t>(reuse);
    return r;
}

}  // namespace minicpmv
