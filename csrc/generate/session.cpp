#include "generate/session.h"

#include "core/backend.h"
#include "core/error.h"
#include "model/decoder.h"
#include "model/kv_cache.h"
#include "model/model.h"
#include "model/resampler.h"
#include "model/step_batcher.h"
#include "model/vision_encoder.h"
#include "model/vision_model.h"
#include "text/tokenizer.h"

#include <ggml-cpu.h>
#include <ggml.h>

#include <algorithm>
#include <chrono>

namespace minicpmv {

namespace {

constexpr size_t kMaxGraphNodes = 8192;
// More threads than this only oversubscribe any machine (and 100000 made libgomp crash).
constexpr int32_t kMaxThreads = 1024;

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

// Rows of the token embedding table as f32 (the values ggml_get_rows computes in the graph).
void token_embeddings(const ggml_tensor * table, const int32_t * ids, size_t n, float * out) {
    const int64_t n_embd = table->ne[0];
    const ggml_to_float_t to_float = ggml_get_type_traits(table->type)->to_float;
    std::vector<uint8_t> row(table->nb[1]);
    for (size_t i = 0; i < n; ++i) {
        float * dst = out + i * n_embd;
        if (table->type == GGML_TYPE_F32) {
            ggml_backend_tensor_get(table, dst, static_cast<size_t>(ids[i]) * table->nb[1], table->nb[1]);
        } else {
            ggml_backend_tensor_get(table, row.data(), static_cast<size_t>(ids[i]) * table->nb[1], table->nb[1]);
            to_float(row.data(), dst, n_embd);
        }
    }
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
    if (params.n_threads < 0 || params.n_threads > kMaxThreads) {
        throw Error(ErrorCode::invalid_argument, "n_threads must be 0 (all hardware threads) to " + std::to_string(kMaxThreads) +
                                                     ", got " + std::to_string(params.n_threads));
    }
    if (params.n_batch < 1)
        throw Error(ErrorCode::invalid_argument, "n_batch must be >= 1, got " + std::to_string(params.n_batch));
    if (params.kv_type != GGML_TYPE_F16 && params.kv_type != GGML_TYPE_F32) {
        throw Error(ErrorCode::invalid_argument, "the KV cache type must be f16 or f32");
    }
    backends_.push_back(init_backend(model.device(), params.n_threads));
    if (ggml_backend_dev_type(model.device()) != GGML_BACKEND_DEVICE_TYPE_CPU) {
        // The scheduler needs the CPU as the last backend, for ops the device cannot run.
        backends_.push_back(init_backend(ggml_backend_dev_by_type(GGML_BACKEND_DEVICE_TYPE_CPU), params.n_threads));
    }
    sched_ = ggml_backend_sched_new(backends_.data(), nullptr, static_cast<int>(backends_.size()), kMaxGraphNodes, false, true);
    if (params.cb_eval != nullptr) ggml_backend_sched_set_eval_callback(sched_, params.cb_eval, params.cb_eval_user_data);
    cache_ = std::make_unique<KvCache>(model.config(), params.n_ctx, 1, params.kv_type, model.device());
    graph_buf_.resize(ggml_tensor_overhead() * kMaxGraphNodes + ggml_graph_overhead_custom(kMaxGraphNodes, false));
}

Session::~Session() {
    cache_.reset();
    if (sched_ != nullptr) ggml_backend_sched_free(sched_);
    for (ggml_backend_t b : backends_) ggml_backend_free(b);
}

void Session::compute(const DecoderBatch & batch, const int32_t * tokens, const float * embd, std::vector<float> & logits) {
    ggml_init_params ip{graph_buf_.size(), graph_buf_.data(), /*no_alloc =*/true};
    ggml_context * ctx = ggml_init(ip);
    ggml_cgraph * gf = ggml_new_graph_custom(ctx, kMaxGraphNodes, false);
    DecoderInputs in;
    ggml_tensor * out = build_decoder_graph(ctx, gf, model_.config(), model_.decoder(), batch, in);

    ggml_backend_sched_reset(sched_);
    if (!ggml_backend_sched_alloc_graph(sched_, gf)) {
        ggml_free(ctx);
        throw Error(ErrorCode::io, "cannot allocate the decoder graph (out of memory?)");
    }
    std::vector<int32_t> positions;
    fill_positions(batch, positions);
    if (embd != nullptr) {
        ggml_backend_tensor_set(in.embd, embd, 0, ggml_nbytes(in.embd));
    } else {
        ggml_backend_tensor_set(in.tokens, tokens, 0, ggml_nbytes(in.tokens));
    }
    ggml_backend_tensor_set(in.positions, positions.data(), 0, ggml_nbytes(in.positions));
    std::vector<uint16_t> mask;
    for (size_t s = 0; s < batch.seqs.size(); ++s) {
        fill_causal_mask(batch.seqs[s], batch.n_tokens, mask);
        ggml_backend_tensor_set(in.kq_masks[s], mask.data(), 0, ggml_nbytes(in.kq_masks[s]));
    }
    // ggml's reference attention on the CPU: one query row's arithmetic whatever rows come with it (no
    // tiles from 64 rows, no keys split between threads for a single row), so that a prefix reused from
    // the cache equals its fresh evaluation (#14). The vision graphs keep the tiles (1024-row images).
    // In ggml 0.15.3 the flag changes only attention and op fusion; ggml 0.25's tiled mul_mat (1.9×
    // faster prompts on AVX2) is off under it too, so a newer ggml needs another way (README).
    ggml_backend_cpu_set_use_ref(backends_.back(), true);
    const ggml_status status = ggml_backend_sched_graph_compute(sched_, gf);
    if (status != GGML_STATUS_SUCCESS) {
        ggml_free(ctx);
        throw Error(ErrorCode::io, "decoder graph failed on the device (status " + std::to_string(status) + ")");
    }
    logits.resize(ggml_nelements(out));
    ggml_backend_tensor_get(out, logits.data(), 0, ggml_nbytes(out));
    ggml_free(ctx);
    model_.check_files();
}

std::vector<float> Session::step(int32_t token) {
    if (tokens_.size() + 1 > static_cast<size_t>(params_.n_ctx)) {
        throw Error(ErrorCode::context_full, "the conversation fills the context (" + std::to_string(params_.n_ctx) + ")");
    }
    StepBatcher::Step st;
    st.seq = {cache_.get(), 0, static_cast<int>(tokens_.size())};
    st.token = token;
    auto compute_here = [this](const DecoderBatch & b, const std::vector<int32_t> & ids, std::vector<float> & logits) {
        compute(b, ids.data(), nullptr, logits);
    };
    if (params_.cb_eval != nullptr) {
        // The evaluation callback must see this session's graph alone.
        model_.steps().exclusive([&] {
            DecoderBatch b;
            b.n_tokens = 1;
            b.seqs = {st.seq};
            compute(b, &token, nullptr, st.logits);
        });
    } else {
        model_.steps().step(st, compute_here);
    }
    tokens_.push_back(token);
    keys_.push_back(0);
    return std::move(st.logits);
}

std::vector<float> Session::eval(const std::vector<int32_t> & tokens, bool all_logits) {
    if (tokens.empty()) throw Error(ErrorCode::invalid_argument, "nothing to evaluate");
    const int32_t n_vocab = model_.config().n_vocab;
    for (int32_t id : tokens) {
        if (id < 0 || id >= n_vocab) {
            throw Error(ErrorCode::invalid_argument,
                        "token id " + std::to_string(id) + " is outside the vocabulary (0.." + std::to_string(n_vocab - 1) + ")");
        }
    }
    const std::vector<uint64_t> text_keys(tokens.size(), 0);
    return append(tokens, nullptr, text_keys.data(), all_logits);
}

std::vector<float> Session::append(const std::vector<int32_t> & tokens, const float * embd, const uint64_t * keys,
                                   bool all_logits) {
    const size_t n_after = tokens_.size() + tokens.size();
    if (n_after > static_cast<size_t>(params_.n_ctx)) {
        throw Error(ErrorCode::context_full, "the conversation needs " + std::to_string(n_after) +
                                                 " positions but the context holds " + std::to_string(params_.n_ctx) +
                                                 " (raise n_ctx)");
    }
    const size_t n_embd = static_cast<size_t>(model_.config().n_embd);
    std::vector<float> logits, chunk;
    for (size_t i = 0; i < tokens.size(); i += params_.n_batch) {
        const size_t n = std::min<size_t>(params_.n_batch, tokens.size() - i);
        DecoderBatch batch;
        batch.n_tokens = static_cast<int>(n);
        batch.seqs = {{cache_.get(), 0, static_cast<int>(tokens_.size())}};
        batch.embeddings = embd != nullptr;
        batch.all_logits = all_logits;
        model_.steps().exclusive([&] { compute(batch, tokens.data() + i, embd ? embd + i * n_embd : nullptr, chunk); });
        tokens_.insert(tokens_.end(), tokens.begin() + i, tokens.begin() + i + n);
        keys_.insert(keys_.end(), keys + i, keys + i + n);
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
    if (static_cast<size_t>(n) < tokens_.size()) {
        tokens_.resize(n);
        keys_.resize(n);
    }
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
        DecoderBatch batch;
        batch.n_tokens = 1;
        for (int slot = 0; slot < static_cast<int>(tokens.size()); ++slot) batch.seqs.push_back({s_.cache_.get(), slot, n_past_});
        s_.model_.steps().exclusive([&] { s_.compute(batch, tokens.data(), nullptr, logits); });
        ++n_past_;
    }

  private:
    Session & s_;
    int n_past_;
};

GenerateResult Session::generate_beams(const std::vector<float> & first_logits, const GenerateParams & params,
                                       const PieceCallback & on_piece) {
    const int32_t n_prompt = static_cast<int32_t>(tokens_.size());
    BeamSearchParams bp = params.beam;
    // The search may not run past the context: cap its length.
    bp.max_new_tokens = std::min(bp.max_new_tokens, params_.n_ctx - n_prompt);
    if (bp.max_new_tokens < 1) {
        GenerateResult r;
        r.stop_reason = "length";
        return r;
    }
    ensure_slots(bp.num_beams);
    SessionBeamStepper stepper(*this, n_prompt);
    GenerateResult r;
    bool cancelled = false;
    const auto on_cancel = [&] {
        return cancelled = on_piece && !on_piece(std::string());
    };
    r.tokens = beam_search(stepper, first_logits.data(), model_.config().n_vocab, bp, model_.stop_ids(), on_cancel);
    // Slot 0 now holds some beam's tokens past the prompt: keep only the prompt as cached.
    truncate(n_prompt);
    r.stop_reason = cancelled ? "cancelled" : static_cast<int32_t>(r.tokens.size()) >= bp.max_new_tokens ? "length" : "stop";
    r.text = model_.tokenizer().decode(r.tokens);
    return r;
}

std::vector<float> Session::encode_slices(const std::vector<const VisionInput *> & inputs) {
    const VisionModel * vision = model_.vision();
    if (vision == nullptr) throw Error(ErrorCode::unsupported, "this model has no vision (mmproj) file: it cannot read images");
    const VisionConfig & c = vision->config();
    const size_t per_slice = static_cast<size_t>(c.n_query) * c.embed;
    std::vector<float> out(per_slice * inputs.size());

    // Slices are packed into graphs of at most kMaxBatchPatches patches (four 448×448 slices): a graph
    // amortises the weights' reads over its slices, the cap bounds activation memory. The tower is
    // compute-bound, so larger graphs buy nothing: 16k patches encoded a 1344² image (10 slices) as
    // fast and raised the peak RSS of a chat about it by 230 MB.
    constexpr int64_t kMaxBatchPatches = 4 * 1024;
    size_t first = 0;
    while (first < inputs.size()) {
        std::vector<PatchGrid> grids;
        std::vector<const float *> pixels;
        int64_t n_max = 0;
        size_t end = first;
        while (end < inputs.size()) {
            const VisionInput & in = *inputs[end];
            if (in.size.width % c.patch_size != 0 || in.size.height % c.patch_size != 0 ||
                in.pixels.size() != 3ULL * in.size.width * in.size.height) {
                throw Error(ErrorCode::invalid_argument, "slice " + std::to_string(end) +
                                                             " is not a 3-channel image with sides divisible by " +
                                                             std::to_string(c.patch_size));
            }
            const PatchGrid g{in.size.width / c.patch_size, in.size.height / c.patch_size};
            const int64_t grown = std::max<int64_t>(n_max, g.n_patches());
            if (end > first && grown * static_cast<int64_t>(grids.size() + 1) > kMaxBatchPatches) break;
            n_max = grown;
            grids.push_back(g);
            pixels.push_back(in.pixels.data());
            ++end;
        }
        const VisionBatch batch = make_vision_batch(grids);

        ggml_init_params ip{graph_buf_.size(), graph_buf_.data(), /*no_alloc =*/true};
        ggml_context * ctx = ggml_init(ip);
        ggml_cgraph * gf = ggml_new_graph_custom(ctx, kMaxGraphNodes, false);
        VisionInputs vin;
        ResamplerInputs rin;
        ggml_tensor * hidden = build_vision_graph(ctx, c, vision->weights(), batch, vin);
        ggml_tensor * emb = build_resampler_graph(ctx, c, vision->weights(), batch, hidden, rin);
        ggml_set_output(emb);
        ggml_build_forward_expand(gf, emb);
        ggml_backend_sched_reset(sched_);
        if (!ggml_backend_sched_alloc_graph(sched_, gf)) {
            ggml_free(ctx);
            throw Error(ErrorCode::io, "cannot allocate the vision graph (out of memory?)");
        }
        std::vector<float> patches, pos_embed;
        std::vector<int32_t> pos_ids;
        std::vector<uint16_t> attn_mask, key_mask;
        fill_patches(batch, c.patch_size, pixels, patches);
        fill_position_ids(batch, c.pos_side, pos_ids);
        fill_padding_mask(batch, batch.n_max, attn_mask);
        fill_padding_mask(batch, c.n_query, key_mask);
        fill_pos_embed(batch, c.embed, pos_embed);
        ggml_backend_tensor_set(vin.patches, patches.data(), 0, ggml_nbytes(vin.patches));
        ggml_backend_tensor_set(vin.pos_ids, pos_ids.data(), 0, ggml_nbytes(vin.pos_ids));
        if (vin.attn_mask != nullptr) ggml_backend_tensor_set(vin.attn_mask, attn_mask.data(), 0, ggml_nbytes(vin.attn_mask));
        ggml_backend_tensor_set(rin.pos_embed, pos_embed.data(), 0, ggml_nbytes(rin.pos_embed));
        if (rin.key_mask != nullptr) ggml_backend_tensor_set(rin.key_mask, key_mask.data(), 0, ggml_nbytes(rin.key_mask));
        ggml_status status = GGML_STATUS_SUCCESS;
        ggml_backend_cpu_set_use_ref(backends_.back(), false);
        model_.steps().exclusive([&] { status = ggml_backend_sched_graph_compute(sched_, gf); });
        if (status != GGML_STATUS_SUCCESS) {
            ggml_free(ctx);
            throw Error(ErrorCode::io, "vision graph failed on the device (status " + std::to_string(status) + ")");
        }
        ggml_backend_tensor_get(emb, out.data() + first * per_slice, 0, ggml_nbytes(emb));
        ggml_free(ctx);
        model_.check_files();
        first = end;
    }
    return out;
}

GenerateResult Session::generate(const Prompt & prompt, const GenerateParams & params, const PieceCallback & on_piece) {
    const size_t n_prompt = prompt.tokens.size();
    if (n_prompt == 0) throw Error(ErrorCode::invalid_argument, "the prompt is empty");
    if (params.max_new_tokens < 0) throw Error(ErrorCode::invalid_argument, "max_new_tokens must be >= 0");
    if (n_prompt > static_cast<size_t>(params_.n_ctx)) {
        throw Error(ErrorCode::context_full, "the prompt has " + std::to_string(n_prompt) + " positions but the context holds " +
                                                 std::to_string(params_.n_ctx) + " (raise n_ctx)");
    }
    if (!prompt.spans.empty() && model_.vision() == nullptr) {
        throw Error(ErrorCode::unsupported, "the prompt has images but the model has no vision (mmproj) file");
    }
    if (!prompt.spans.empty() && prompt.n_query != model_.vision()->config().n_query) {
        throw Error(ErrorCode::invalid_argument, "the prompt reserves " + std::to_string(prompt.n_query) +
                                                     " positions per slice but the resampler makes " +
                                                     std::to_string(model_.vision()->config().n_query));
    }
    const int32_t n_vocab = model_.config().n_vocab;
    for (int32_t id : prompt.tokens) {
        if (id < 0 || id >= n_vocab) {
            throw Error(ErrorCode::invalid_argument, "token id " + std::to_string(id) + " is outside the vocabulary");
        }
    }
    if (params.beam_search) {
        validate(params.beam);
    } else {
        validate(params.sampling);
    }

    // Reuse the longest cached prefix (same token and, for image positions, the same image); at
    // least the last prompt position is evaluated, for its logits.
    const std::vector<uint64_t> keys = prompt.position_keys();
    size_t reuse = 0;
    while (reuse < tokens_.size() && reuse + 1 < n_prompt && tokens_[reuse] == prompt.tokens[reuse] &&
           keys_[reuse] == keys[reuse]) {
        ++reuse;
    }
    truncate(static_cast<int32_t>(reuse));

    const auto t0 = std::chrono::steady_clock::now();
    // Encode only the slices whose positions are not cached, all images' slices together.
    std::vector<std::vector<VisionInput>> slices(prompt.images.size());
    std::vector<const VisionInput *> needed;
    std::vector<size_t> span_row(prompt.spans.size(), SIZE_MAX);
    for (size_t i = 0; i < prompt.spans.size(); ++i) {
        const Prompt::Span & sp = prompt.spans[i];
        if (static_cast<size_t>(sp.begin + prompt.n_query) <= reuse) continue;
        if (slices[sp.image].empty()) slices[sp.image] = preprocess_image(prompt.images[sp.image].image, prompt.slicing);
        span_row[i] = needed.size();
        needed.push_back(&slices[sp.image].at(sp.slice));
    }
    const std::vector<float> embeddings = needed.empty() ? std::vector<float>() : encode_slices(needed);

    // The rest of the prompt. With images in it, every position goes in as an embedding (text rows
    // looked up here), so that the prompt runs in full n_batch batches instead of one graph per text
    // run and per image span; text alone goes in as token ids.
    std::vector<float> logits;
    const size_t n_embd = static_cast<size_t>(model_.config().n_embd);
    const std::vector<int32_t> rest(prompt.tokens.begin() + reuse, prompt.tokens.end());
    if (needed.empty()) {
        logits = append(rest, nullptr, keys.data() + reuse, false);
    } else {
        std::vector<float> embd(rest.size() * n_embd);
        size_t pos = reuse;
        for (size_t i = 0; i <= prompt.spans.size() && pos < n_prompt; ++i) {
            const size_t span_begin =
                i < prompt.spans.size() ? std::max(pos, static_cast<size_t>(prompt.spans[i].begin)) : n_prompt;
            if (pos < span_begin) {
                token_embeddings(model_.decoder().token_embd, prompt.tokens.data() + pos, span_begin - pos,
                                 embd.data() + (pos - reuse) * n_embd);
                pos = span_begin;
            }
            if (i == prompt.spans.size()) break;
            const size_t span_end = static_cast<size_t>(prompt.spans[i].begin) + prompt.n_query;
            if (pos < span_end) {
                const float * e = embeddings.data() + (span_row[i] * prompt.n_query + (pos - prompt.spans[i].begin)) * n_embd;
                std::copy(e, e + (span_end - pos) * n_embd, embd.data() + (pos - reuse) * n_embd);
                pos = span_end;
            }
        }
        logits = append(rest, embd.data(), keys.data() + reuse, false);
    }
    const double prefill_ms = ms_since(t0);

    const auto t1 = std::chrono::steady_clock::now();
    GenerateResult r;
    if (params.beam_search && params.beam.num_beams > 1) {
        GenerateParams p = params;
        p.beam.max_new_tokens = params.max_new_tokens;
        r = generate_beams(logits, p, on_piece);
        if (on_piece && !r.text.empty()) on_piece(r.text);
    } else {
        const Tokenizer & tok = model_.tokenizer();
        const std::vector<int32_t> & stops = model_.stop_ids();
        // One beam is greedy search (beam_search.h): the sampler's greedy path with the search's
        // penalty, which streams and decodes in shared graphs.
        SamplingParams sp = params.sampling;
        if (params.beam_search) {
            sp = default_sampling_params();
            sp.temperature = 0.0f;
            sp.repetition_penalty = params.beam.repetition_penalty;
        }
        Sampler sampler(sp);
        const StepBatcher::Generating generating(model_.steps());
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
            if (n_prompt + r.tokens.size() >= static_cast<size_t>(params_.n_ctx)) break;  // reply fills the context
            logits = step(id);
        }
        if (!pending.empty()) {
            r.text += pending;
            if (on_piece && r.stop_reason != "cancelled") on_piece(pending);
        }
    }
    r.decode_ms = ms_since(t1);
    r.prefill_ms = prefill_ms;
    r.n_prompt = static_cast<int32_t>(n_prompt);
    r.n_reused = static_cast<int32_t>(reuse);
    r.n_encoded = static_cast<int32_t>(needed.size());
    return r;
}

}  // namespace minicpmv
