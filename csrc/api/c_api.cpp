// The C API (include/minicpmv.h) over the C++ core. Every entry point catches everything: no C++
// exception crosses the C boundary (docs/architecture.md §3), and each failure becomes a status plus a message
// kept per session and per thread.
#include "minicpmv.h"

#include "core/backend.h"
#include "core/error.h"
#include "core/log.h"
#include "generate/conversation.h"
#include "image/image.h"
#include "model/model.h"

#include <algorithm>
#include <atomic>
#include <cstring>
#include <memory>
#include <mutex>
#include <new>
#include <random>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

using namespace minicpmv;

struct minicpmv_model {
    std::shared_ptr<const Model> model;
};

struct minicpmv_session {
    std::shared_ptr<const Model> model;  // keeps the weights alive after minicpmv_model_free
    std::unique_ptr<Conversation> conversation;
    std::string error;
    std::atomic<bool> busy{false};
};

namespace {

// --- errors --------------------------------------------------------------------------------------

// A failure that the C layer itself detects, with its status.
struct ApiError {
    minicpmv_status status;
    std::string message;
};

thread_local std::string t_last_error;

minicpmv_status status_of(ErrorCode code) {
    switch (code) {
        case ErrorCode::invalid_argument: return MINICPMV_ERR_INVALID_ARGUMENT;
        case ErrorCode::io: return MINICPMV_ERR_IO;
        case ErrorCode::bad_format: return MINICPMV_ERR_BAD_FORMAT;
        case ErrorCode::unsupported: return MINICPMV_ERR_UNSUPPORTED;
        case ErrorCode::context_full: return MINICPMV_ERR_CONTEXT_FULL;
        case ErrorCode::cancelled: return MINICPMV_ERR_CANCELLED;
    }
    return MINICPMV_ERR_INTERNAL;
}

// Runs `body`, turning whatever it throws into a status; the message (prefixed with the function's
// name) goes to the thread and, when the session is known, to the session.
template <class F>
minicpmv_status guarded(const char * fn, minicpmv_session * session, F && body) {
    minicpmv_status status = MINICPMV_OK;
    std::string message;
    try {
        body();
    } catch (const ApiError & e) {
        status = e.status;
        message = e.message;
    } catch (const Error & e) {
        status = status_of(e.code());
        message = e.what();
    } catch (const std::bad_alloc &) {
        status = MINICPMV_ERR_OUT_OF_MEMORY;
        message = "out of host memory";
    } catch (const std::exception & e) {
        status = MINICPMV_ERR_INTERNAL;
        message = std::string("internal error: ") + e.what();
    } catch (...) {
        status = MINICPMV_ERR_INTERNAL;
        message = "internal error: unknown exception";
    }
    try {
        t_last_error = status == MINICPMV_OK ? std::string() : std::string(fn) + ": " + message;
        if (session != nullptr) session->error = t_last_error;
    } catch (...) {  // no memory for the message: the status still says what happened
    }
    return status;
}

void set_last_error(const char * fn, const char * message) noexcept {
    try {
        t_last_error = std::string(fn) + ": " + message;
    } catch (...) {}
}

// --- handles -------------------------------------------------------------------------------------

enum class Kind { model, session };

// The live handles, so that NULL, freed and mistyped handles are reported instead of crashing
// (see "Handles" in minicpmv.h). Never destroyed: frees during static destruction must still work.
struct Registry {
    std::mutex mutex;
    std::unordered_map<const void *, Kind> live;
};

Registry & registry() {
    static Registry * r = new Registry;
    return *r;
}

void register_handle(const void * p, Kind kind) {
    Registry & r = registry();
    std::lock_guard<std::mutex> lock(r.mutex);
    r.live.emplace(p, kind);
}

// Removes the handle; false when it was not live with that kind.
bool unregister_handle(const void * p, Kind kind) {
    Registry & r = registry();
    std::lock_guard<std::mutex> lock(r.mutex);
    const auto it = r.live.find(p);
    if (it == r.live.end() || it->second != kind) return false;
    r.live.erase(it);
    return true;
}

// Empty when `p` is a live handle of `kind`, else why not.
std::string handle_problem(const void * p, Kind kind) {
    const char * want = kind == Kind::model ? "model" : "session";
    if (p == nullptr) return std::string(want) + " is NULL";
    Registry & r = registry();
    std::lock_guard<std::mutex> lock(r.mutex);
    const auto it = r.live.find(p);
    if (it == r.live.end()) return std::string("not a live ") + want + " handle (already freed, or never made by minicpmv)";
    if (it->second != kind)
        return std::string("a ") + (kind == Kind::model ? "session" : "model") + " handle was passed as a " + want;
    return {};
}

const minicpmv_model * model_of(const minicpmv_model * m) {
    const std::string problem = handle_problem(m, Kind::model);
    if (!problem.empty()) throw ApiError{MINICPMV_ERR_INVALID_HANDLE, problem};
    return m;
}

minicpmv_session * session_or_null(const minicpmv_session * s) {
    return handle_problem(s, Kind::session).empty() ? const_cast<minicpmv_session *>(s) : nullptr;
}

constexpr const char * kBusy =
    "the session is busy in another call (calls on one session must not overlap, and the "
    "piece callback must not call its session)";

// Runs `body(session)` on a valid session that no other call is using. The busy flag covers the
// session's error message too, so a refused overlapping call reports only to its own thread.
template <class F>
minicpmv_status on_session(const char * fn, minicpmv_session * s, F && body) {
    minicpmv_session * valid = session_or_null(s);
    if (valid == nullptr) {
        return guarded(fn, nullptr, [&] { throw ApiError{MINICPMV_ERR_INVALID_HANDLE, handle_problem(s, Kind::session)}; });
    }
    bool idle = false;
    if (!valid->busy.compare_exchange_strong(idle, true)) {
        return guarded(fn, nullptr, [&] { throw ApiError{MINICPMV_ERR_STATE, kBusy}; });
    }
    const minicpmv_status status = guarded(fn, valid, [&] { body(*valid); });
    valid->busy.store(false);
    return status;
}

// --- conversions ---------------------------------------------------------------------------------

RgbImage rgb_image(const minicpmv_image * image, const std::string & what) {
    if (image == nullptr) throw ApiError{MINICPMV_ERR_INVALID_ARGUMENT, what + " is NULL"};
    const Size size = checked_size(image->width, image->height, what);
    if (image->pixels == nullptr) throw ApiError{MINICPMV_ERR_INVALID_ARGUMENT, what + ": pixels is NULL"};
    const size_t row = static_cast<size_t>(size.width) * RgbImage::kChannels;
    const size_t stride = image->stride == 0 ? row : image->stride;
    if (stride < row) {
        throw ApiError{MINICPMV_ERR_INVALID_ARGUMENT,
                       what + ": stride " + std::to_string(stride) + " is below 3 * width = " + std::to_string(row)};
    }
    const size_t rows_before_last = static_cast<size_t>(size.height) - 1;
    if (rows_before_last > 0 && stride > (SIZE_MAX - row) / rows_before_last) {
        throw ApiError{MINICPMV_ERR_INVALID_ARGUMENT, what + ": stride " + std::to_string(stride) + " is too large"};
    }
    const size_t needed = rows_before_last * stride + row;
    if (image->size < needed) {
        throw ApiError{MINICPMV_ERR_INVALID_ARGUMENT, what + ": " + std::to_string(size.width) + "x" +
                                                          std::to_string(size.height) + " RGB with stride " +
                                                          std::to_string(stride) + " needs " + std::to_string(needed) +
                                                          " bytes, size says " + std::to_string(image->size)};
    }
    std::vector<uint8_t> pixels(row * size.height);
    for (int32_t y = 0; y < size.height; ++y) std::memcpy(pixels.data() + y * row, image->pixels + y * stride, row);
    return RgbImage(size, std::move(pixels));
}

void add_images(minicpmv_session & s, const minicpmv_image * images, size_t n, bool video) {
    std::vector<RgbImage> copies;
    copies.reserve(n);
    for (size_t i = 0; i < n; ++i) copies.push_back(rgb_image(images + i, video ? "frame " + std::to_string(i) : "image"));
    if (video) {
        s.conversation->add_video_frames(std::move(copies));
    } else {
        s.conversation->add_image(std::move(copies.front()));
    }
}

GenerateParams generate_params(const minicpmv_generate_params & c) {
    GenerateParams p = default_generate_params();
    p.max_new_tokens = c.max_new_tokens;
    p.beam_search = c.beam_search;
    p.sampling.temperature = c.sampling.temperature;
    p.sampling.top_k = c.sampling.top_k;
    p.sampling.top_p = c.sampling.top_p;
    p.sampling.min_p = c.sampling.min_p;
    p.sampling.repetition_penalty = c.sampling.repetition_penalty;
    p.sampling.seed = c.sampling.seed == MINICPMV_SEED_RANDOM ? (uint64_t(std::random_device{}()) << 32) ^ std::random_device{}()
                                                              : c.sampling.seed;
    p.beam.num_beams = c.beam.num_beams;
    p.beam.repetition_penalty = c.beam.repetition_penalty;
    p.beam.length_penalty = c.beam.length_penalty;
    // Checked here too, so that a bad value is reported before any prompt work.
    if (p.max_new_tokens < 0) {
        throw ApiError{MINICPMV_ERR_INVALID_ARGUMENT, "max_new_tokens must be >= 0, got " + std::to_string(p.max_new_tokens)};
    }
    if (p.beam_search) {
        BeamSearchParams b = p.beam;
        b.max_new_tokens = std::max(1, p.max_new_tokens);
        validate(b);
    } else {
        validate(p.sampling);
    }
    return p;
}

bool cancel_requested(const volatile int * flag) {
    if (flag == nullptr) return false;
#if defined(__GNUC__) || defined(__clang__)
    return __atomic_load_n(const_cast<const int *>(flag), __ATOMIC_ACQUIRE) != 0;
#else
    return *flag != 0;
#endif
}

minicpmv_stop_reason stop_reason_of(const std::string & reason) {
    if (reason == "stop") return MINICPMV_STOP_EOS;
    if (reason == "cancelled") return MINICPMV_STOP_CANCELLED;
    return MINICPMV_STOP_LENGTH;
}

}  // namespace

// --- status, version, devices --------------------------------------------------------------------

const char * minicpmv_status_string(minicpmv_status status) {
    switch (status) {
        case MINICPMV_OK: return "ok";
        case MINICPMV_ERR_INVALID_ARGUMENT: return "invalid argument";
        case MINICPMV_ERR_IO: return "i/o error";
        case MINICPMV_ERR_BAD_FORMAT: return "bad format";
        case MINICPMV_ERR_UNSUPPORTED: return "unsupported";
        case MINICPMV_ERR_CONTEXT_FULL: return "context full";
        case MINICPMV_ERR_CANCELLED: return "cancelled";
        case MINICPMV_ERR_INVALID_HANDLE: return "invalid handle";
        case MINICPMV_ERR_STATE: return "bad state";
        case MINICPMV_ERR_OUT_OF_MEMORY: return "out of memory";
        case MINICPMV_ERR_INTERNAL: return "internal error";
    }
    return "unknown status";
}

const char * minicpmv_last_error(void) { return t_last_error.c_str(); }

const char * minicpmv_version(void) { return "0.1.0"; }

void minicpmv_log_set(minicpmv_log_callback callback, void * user_data) {
    static_assert(static_cast<int>(LogLevel::error) == MINICPMV_LOG_ERROR, "log levels must match");
    struct Forward {
        minicpmv_log_callback callback;
        void * user_data;
    };
    try {
        if (callback == nullptr) {
            set_log_callback(nullptr, nullptr);
            return;
        }
        // Never freed: a message in flight may still use the previous one (core/log.h); a few bytes per call.
        auto * forward = new Forward{callback, user_data};
        set_log_callback(
            [](LogLevel level, const char * text, void * data) {
                const auto * f = static_cast<const Forward *>(data);
                f->callback(static_cast<minicpmv_log_level>(level), text, f->user_data);
            },
            forward);
    } catch (...) {  // out of memory: logging stays as it was
    }
}

int32_t minicpmv_device_count(void) {
    try {
        return static_cast<int32_t>(ggml_backend_dev_count());
    } catch (...) {
        return 0;
    }
}

const char * minicpmv_device_name(int32_t i) {
    if (i < 0 || i >= minicpmv_device_count()) {
        set_last_error("minicpmv_device_name", "device index out of range");
        return nullptr;
    }
    return ggml_backend_dev_name(ggml_backend_dev_get(static_cast<size_t>(i)));
}

// --- model ---------------------------------------------------------------------------------------

minicpmv_model_params minicpmv_model_default_params(void) {
    static const std::string device = default_model_params().device;  // lives as long as the library
    minicpmv_model_params p;
    p.device = device.c_str();
    return p;
}

minicpmv_status minicpmv_model_load(const char * llm_path, const char * mmproj_path, const minicpmv_model_params * params,
                                    minicpmv_model ** out) {
    if (out != nullptr) *out = nullptr;
    return guarded("minicpmv_model_load", nullptr, [&] {
        if (out == nullptr) throw ApiError{MINICPMV_ERR_INVALID_ARGUMENT, "out is NULL"};
        if (llm_path == nullptr || *llm_path == '\0') throw ApiError{MINICPMV_ERR_INVALID_ARGUMENT, "llm_path is NULL or empty"};
        ModelParams mp = default_model_params();
        if (params != nullptr && params->device != nullptr) mp.device = params->device;
        auto handle = std::make_unique<minicpmv_model>();
        handle->model = std::make_shared<const Model>(llm_path, mmproj_path == nullptr ? "" : mmproj_path, mp);
        register_handle(handle.get(), Kind::model);
        *out = handle.release();
    });
}

void minicpmv_model_free(minicpmv_model * model) {
    if (model == nullptr) return;
    if (!unregister_handle(model, Kind::model)) {
        set_last_error("minicpmv_model_free", handle_problem(model, Kind::model).c_str());
        return;
    }
    delete model;
    t_last_error.clear();
}

int32_t minicpmv_model_has_vision(const minicpmv_model * model) {
    const std::string problem = handle_problem(model, Kind::model);
    if (!problem.empty()) {
        set_last_error("minicpmv_model_has_vision", problem.c_str());
        return -1;
    }
    return model->model->vision() != nullptr ? 1 : 0;
}

const char * minicpmv_model_device(const minicpmv_model * model) {
    const std::string problem = handle_problem(model, Kind::model);
    if (!problem.empty()) {
        set_last_error("minicpmv_model_device", problem.c_str());
        return nullptr;
    }
    return ggml_backend_dev_name(model->model->device());
}

// --- session -------------------------------------------------------------------------------------

minicpmv_session_params minicpmv_session_default_params(void) {
    const SessionParams d = default_session_params();
    minicpmv_session_params p;
    p.n_ctx = d.n_ctx;
    p.n_batch = d.n_batch;
    p.n_threads = d.n_threads;
    p.kv_type = d.kv_type == GGML_TYPE_F32 ? MINICPMV_KV_F32 : MINICPMV_KV_F16;
    return p;
}

minicpmv_status minicpmv_session_new(const minicpmv_model * model, const minicpmv_session_params * params,
                                     minicpmv_session ** out) {
    if (out != nullptr) *out = nullptr;
    return guarded("minicpmv_session_new", nullptr, [&] {
        if (out == nullptr) throw ApiError{MINICPMV_ERR_INVALID_ARGUMENT, "out is NULL"};
        const minicpmv_model * m = model_of(model);
        const minicpmv_session_params c = params != nullptr ? *params : minicpmv_session_default_params();
        if (c.kv_type != MINICPMV_KV_F16 && c.kv_type != MINICPMV_KV_F32) {
            throw ApiError{MINICPMV_ERR_INVALID_ARGUMENT, "kv_type must be MINICPMV_KV_F16 (0) or MINICPMV_KV_F32 (1), got " +
                                                              std::to_string(static_cast<int>(c.kv_type))};
        }
        SessionParams sp = default_session_params();
        sp.n_ctx = c.n_ctx;
        sp.n_batch = c.n_batch;
        sp.n_threads = c.n_threads;
        sp.kv_type = c.kv_type == MINICPMV_KV_F32 ? GGML_TYPE_F32 : GGML_TYPE_F16;
        auto handle = std::make_unique<minicpmv_session>();
        handle->model = m->model;
        handle->conversation = std::make_unique<Conversation>(*handle->model, sp);
        register_handle(handle.get(), Kind::session);
        *out = handle.release();
    });
}

void minicpmv_session_free(minicpmv_session * session) {
    if (session == nullptr) return;
    const minicpmv_session * valid = session_or_null(session);
    if (valid != nullptr && valid->busy.load()) {  // e.g. freed from its own piece callback
        set_last_error("minicpmv_session_free", (std::string(kBusy) + ": not freed").c_str());
        return;
    }
    if (!unregister_handle(session, Kind::session)) {
        set_last_error("minicpmv_session_free", handle_problem(session, Kind::session).c_str());
        return;
    }
    delete session;
    t_last_error.clear();
}

const char * minicpmv_session_error(const minicpmv_session * session) {
    minicpmv_session * s = session_or_null(session);
    if (s == nullptr) {
        set_last_error("minicpmv_session_error", handle_problem(session, Kind::session).c_str());
        return nullptr;
    }
    return s->error.c_str();
}

minicpmv_status minicpmv_session_set_system_prompt(minicpmv_session * session, const char * text) {
    return on_session("minicpmv_session_set_system_prompt", session,
                      [&](minicpmv_session & s) { s.conversation->set_system_prompt(text == nullptr ? "" : text); });
}

minicpmv_status minicpmv_session_add_text(minicpmv_session * session, const char * text) {
    return on_session("minicpmv_session_add_text", session, [&](minicpmv_session & s) {
        if (text == nullptr) throw ApiError{MINICPMV_ERR_INVALID_ARGUMENT, "text is NULL"};
        s.conversation->add_text(text);
    });
}

minicpmv_status minicpmv_session_add_image(minicpmv_session * session, const minicpmv_image * image) {
    return on_session("minicpmv_session_add_image", session, [&](minicpmv_session & s) {
        if (image == nullptr) throw ApiError{MINICPMV_ERR_INVALID_ARGUMENT, "image is NULL"};
        add_images(s, image, 1, false);
    });
}

minicpmv_status minicpmv_session_add_video_frames(minicpmv_session * session, const minicpmv_image * frames, size_t n_frames) {
    return on_session("minicpmv_session_add_video_frames", session, [&](minicpmv_session & s) {
        if (frames == nullptr || n_frames == 0)
            throw ApiError{MINICPMV_ERR_INVALID_ARGUMENT, "no frames (frames is NULL or n_frames is 0)"};
        add_images(s, frames, n_frames, true);
    });
}

minicpmv_status minicpmv_session_clear_pending(minicpmv_session * session) {
    return on_session("minicpmv_session_clear_pending", session, [&](minicpmv_session & s) { s.conversation->clear_pending(); });
}

minicpmv_status minicpmv_session_reset(minicpmv_session * session) {
    return on_session("minicpmv_session_reset", session, [&](minicpmv_session & s) { s.conversation->reset(); });
}

int32_t minicpmv_session_n_turns(const minicpmv_session * session) {
    minicpmv_session * s = session_or_null(session);
    if (s == nullptr) {
        set_last_error("minicpmv_session_n_turns", handle_problem(session, Kind::session).c_str());
        return -1;
    }
    return s->conversation->n_turns();
}

minicpmv_generate_params minicpmv_generate_default_params(void) {
    const GenerateParams d = default_generate_params();
    minicpmv_generate_params p;
    p.max_new_tokens = d.max_new_tokens;
    p.beam_search = d.beam_search;
    p.sampling.temperature = d.sampling.temperature;
    p.sampling.top_k = d.sampling.top_k;
    p.sampling.top_p = d.sampling.top_p;
    p.sampling.min_p = d.sampling.min_p;
    p.sampling.repetition_penalty = d.sampling.repetition_penalty;
    p.sampling.seed = d.sampling.seed;
    p.beam.num_beams = d.beam.num_beams;
    p.beam.repetition_penalty = d.beam.repetition_penalty;
    p.beam.length_penalty = d.beam.length_penalty;
    p.max_slice_nums = 0;
    p.use_image_id = -1;
    p.cancel = nullptr;
    return p;
}

minicpmv_status minicpmv_session_generate(minicpmv_session * session, const minicpmv_generate_params * params,
                                          minicpmv_piece_callback on_piece, void * user_data, minicpmv_result * result) {
    if (result != nullptr) *result = minicpmv_result{};
    return on_session("minicpmv_session_generate", session, [&](minicpmv_session & s) {
        const minicpmv_generate_params c = params != nullptr ? *params : minicpmv_generate_default_params();
        const GenerateParams gp = generate_params(c);
        if (!s.conversation->has_pending()) {
            throw ApiError{MINICPMV_ERR_STATE, "there is no pending user message: add text or images first"};
        }
        if (cancel_requested(c.cancel)) throw ApiError{MINICPMV_ERR_CANCELLED, "*cancel was set before the generation began"};

        PieceCallback cb;
        if (on_piece != nullptr || c.cancel != nullptr) {
            cb = [&](const std::string & piece) {
                // An empty piece is beam search asking whether to go on: only the flag answers.
                bool go = on_piece == nullptr || piece.empty() || on_piece(piece.c_str(), piece.size(), user_data);
                return go && !cancel_requested(c.cancel);
            };
        }
        const GenerateResult r = s.conversation->generate(gp, ChatOptions{c.max_slice_nums, c.use_image_id}, cb);
        if (result != nullptr) {
            result->stop_reason = stop_reason_of(r.stop_reason);
            result->n_tokens = static_cast<int32_t>(r.tokens.size());
            result->n_prompt = r.n_prompt;
            result->n_reused = r.n_reused;
            result->n_encoded = r.n_encoded;
            result->prefill_ms = r.prefill_ms;
            result->decode_ms = r.decode_ms;
        }
    });
}

const char * minicpmv_session_reply(const minicpmv_session * session) {
    minicpmv_session * s = session_or_null(session);
    if (s == nullptr) {
        set_last_error("minicpmv_session_reply", handle_problem(session, Kind::session).c_str());
        return nullptr;
    }
    return s->conversation->reply().c_str();
}
