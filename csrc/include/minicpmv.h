/*
 * minicpmv.h — the C API of minicpmv, a native runtime for MiniCPM-V 2.6 on ggml.
 *
 * Plain C99. Link libminicpmv (CMake: find_package(minicpmv) and target minicpmv::minicpmv).
 *
 * Objects
 *   minicpmv_model    the weights (LLM GGUF + optional vision "mmproj" GGUF) on one device. Immutable
 *                     after loading: any number of sessions, on any threads, may share one model.
 *   minicpmv_session  one conversation: the messages so far, the pending user message, the KV cache
 *                     (a later question reuses the cached prefix) and the vision embeddings. One
 *                     thread at a time: a call that overlaps another call on the same session fails
 *                     with MINICPMV_ERR_STATE instead of corrupting it (the getters error, reply and
 *                     n_turns are not guarded: call them from the thread that uses the session).
 *
 * Typical use
 *   minicpmv_model * model = NULL;
 *   minicpmv_model_params mp = minicpmv_model_default_params();
 *   if (minicpmv_model_load("ggml-model-Q4_K_M.gguf", "mmproj-model-f16.gguf", &mp, &model) != MINICPMV_OK)
 *       fprintf(stderr, "%s\n", minicpmv_last_error());
 *   minicpmv_session * s = NULL;
 *   minicpmv_session_params sp = minicpmv_session_default_params();
 *   minicpmv_session_new(model, &sp, &s);
 *   minicpmv_session_add_image(s, &image);              (image: width, height, stride, pixels)
 *   minicpmv_session_add_text(s, "What is in the image?");
 *   minicpmv_generate_params gp = minicpmv_generate_default_params();   (HF chat(sampling=True))
 *   minicpmv_session_generate(s, &gp, on_piece, user_data, NULL);
 *   minicpmv_session_add_text(s, "And what colour is it?");           (a second turn: the cache is reused)
 *   minicpmv_session_generate(s, &gp, on_piece, user_data, NULL);
 *   minicpmv_session_free(s);
 *   minicpmv_model_free(model);
 *
 * Errors
 *   Every function that can fail returns a minicpmv_status; MINICPMV_OK is 0. Its message is kept in
 *   two places: per session (minicpmv_session_error, for calls on a session) and per thread
 *   (minicpmv_last_error, for every call, including those with no valid handle, such as a failed
 *   load). No C++ exception ever leaves the library, and bad input is reported, never asserted.
 *
 * Handles
 *   The library keeps the set of live handles (the only process-wide state it has besides the
 *   per-thread message) so that a NULL handle, a freed one, or one of the wrong type is reported as
 *   MINICPMV_ERR_INVALID_HANDLE instead of crashing. Not detectable: a freed handle whose address the
 *   library has since given to a new object of the same type (it is then that new object), and a
 *   free that races with another call on the same handle (do not do that). Freeing NULL, or freeing
 *   twice, is harmless (the second free only sets minicpmv_last_error).
 *
 * Strings are UTF-8. Text in and out is copied: the library keeps no pointer the caller passed in
 * after the call returns, and the caller frees nothing the library returns (see each function).
 */
#ifndef MINICPMV_H
#define MINICPMV_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#if defined(_WIN32) && !defined(MINICPMV_STATIC)
#ifdef MINICPMV_BUILD
#define MINICPMV_API __declspec(dllexport)
#else
#define MINICPMV_API __declspec(dllimport)
#endif
#elif defined(__GNUC__) || defined(__clang__)
#define MINICPMV_API __attribute__((visibility("default")))
#else
#define MINICPMV_API
#endif

#ifdef __cplusplus
extern "C" {
#endif

#define MINICPMV_VERSION_MAJOR 0
#define MINICPMV_VERSION_MINOR 1
#define MINICPMV_VERSION_PATCH 0

/* ---------------------------------------------------------------------------------------------- */
/* Status codes                                                                                   */
/* ---------------------------------------------------------------------------------------------- */

typedef enum minicpmv_status {
    MINICPMV_OK = 0,
    MINICPMV_ERR_INVALID_ARGUMENT = 1, /* a bad parameter, image or string from the caller */
    MINICPMV_ERR_IO = 2,               /* a file that cannot be opened or read; a device out of memory */
    MINICPMV_ERR_BAD_FORMAT = 3,       /* a file that is not a MiniCPM-V 2.6 GGUF (or not a matching mmproj) */
    MINICPMV_ERR_UNSUPPORTED = 4,      /* valid but not available here: a backend not built in, images without mmproj */
    MINICPMV_ERR_CONTEXT_FULL = 5,     /* the conversation does not fit n_ctx */
    MINICPMV_ERR_CANCELLED = 6,        /* *cancel was already set when generate began: nothing was done (a
                                          generation cancelled later returns MINICPMV_OK and
                                          MINICPMV_STOP_CANCELLED) */
    MINICPMV_ERR_INVALID_HANDLE = 7,   /* NULL, freed, or a handle of another type */
    MINICPMV_ERR_STATE = 8,            /* the call does not fit the session's state: generate with no pending
                                          message, or a call while another call on the session runs */
    MINICPMV_ERR_OUT_OF_MEMORY = 9,    /* host memory */
    MINICPMV_ERR_INTERNAL = 10         /* a bug: please report the message */
} minicpmv_status;

/* A static English name for a status ("ok", "invalid argument", ...); "unknown status" otherwise. */
MINICPMV_API const char * minicpmv_status_string(minicpmv_status status);

/* The message of this thread's latest failed minicpmv call, or "" when its latest call that returns a
 * status (or frees) succeeded. Getters that return NULL or -1 for a bad handle set it too; getters
 * that succeed leave it alone. Owned by the library; valid until this thread's next minicpmv call. */
MINICPMV_API const char * minicpmv_last_error(void);

/* "0.1.0". Static. */
MINICPMV_API const char * minicpmv_version(void);

/* ---------------------------------------------------------------------------------------------- */
/* Logging                                                                                        */
/* ---------------------------------------------------------------------------------------------- */

typedef enum minicpmv_log_level {
    MINICPMV_LOG_DEBUG = 0, /* ggml's own messages, and details */
    MINICPMV_LOG_INFO = 1,  /* what was loaded: sizes, device, time */
    MINICPMV_LOG_WARN = 2,
    MINICPMV_LOG_ERROR = 3
} minicpmv_log_level;

/* Receives one message (UTF-8, NUL-terminated, no trailing newline), valid during the call only. It
 * may be called from any thread, including ggml's workers, and must not call minicpmv functions. */
typedef void (*minicpmv_log_callback)(minicpmv_log_level level, const char * text, void * user_data);

/* Sends the library's messages, and ggml's, to `callback` (NULL: silence, the default: the library
 * prints nothing by itself). Process-wide; safe to call from any thread at any time. */
MINICPMV_API void minicpmv_log_set(minicpmv_log_callback callback, void * user_data);

/* ---------------------------------------------------------------------------------------------- */
/* Devices: whatever the linked ggml was built with (CPU; Metal, Vulkan, CUDA in app builds)      */
/* ---------------------------------------------------------------------------------------------- */

/* Number of devices in ggml's registry, and the name of the i-th ("CPU", "Vulkan0", "Metal"...).
 * The name is static (owned by ggml); NULL when i is out of range. */
MINICPMV_API int32_t minicpmv_device_count(void);
MINICPMV_API const char * minicpmv_device_name(int32_t i);

/* ---------------------------------------------------------------------------------------------- */
/* Model                                                                                          */
/* ---------------------------------------------------------------------------------------------- */

typedef struct minicpmv_model minicpmv_model;

typedef struct minicpmv_model_params {
    /* "auto" (the first GPU, else the CPU), a backend ("cpu", "metal", "vulkan", "cuda": its first
     * device) or a device name ("Vulkan1"), case-insensitive. NULL means "auto". A name the linked
     * ggml does not have fails with MINICPMV_ERR_UNSUPPORTED, naming the devices it has. The string
     * is read during minicpmv_model_load only. */
    const char * device;
} minicpmv_model_params;

MINICPMV_API minicpmv_model_params minicpmv_model_default_params(void);

/* Loads the LLM GGUF and, when mmproj_path is not NULL (nor ""), the vision GGUF; params may be
 * NULL for the defaults. On success *out is a new model the caller owns (minicpmv_model_free);
 * on failure *out is NULL. Returns MINICPMV_ERR_IO (missing or unreadable file),
 * MINICPMV_ERR_BAD_FORMAT (not a MiniCPM-V 2.6 file, or an mmproj of another width),
 * MINICPMV_ERR_UNSUPPORTED (device), MINICPMV_ERR_INVALID_ARGUMENT (NULL llm_path or out). */
MINICPMV_API minicpmv_status minicpmv_model_load(const char * llm_path, const char * mmproj_path,
                                                 const minicpmv_model_params * params, minicpmv_model ** out);

/* Releases the caller's handle. Sessions made from the model keep it alive: the weights are freed
 * when the handle and every such session are gone. NULL is harmless. */
MINICPMV_API void minicpmv_model_free(minicpmv_model * model);

/* Whether the model has a vision file (1) or is text-only (0); -1 for an invalid handle. */
MINICPMV_API int32_t minicpmv_model_has_vision(const minicpmv_model * model);

/* The name of the device the model runs on ("CPU", "Vulkan0"); owned by ggml, static. NULL for an
 * invalid handle. */
MINICPMV_API const char * minicpmv_model_device(const minicpmv_model * model);

/* ---------------------------------------------------------------------------------------------- */
/* Session                                                                                        */
/* ---------------------------------------------------------------------------------------------- */

typedef struct minicpmv_session minicpmv_session;

typedef enum minicpmv_kv_type {
    MINICPMV_KV_F16 = 0, /* default, as llama.cpp */
    MINICPMV_KV_F32 = 1  /* exact parity with the reference, twice the memory */
} minicpmv_kv_type;

typedef struct minicpmv_session_params {
    int32_t n_ctx;            /* positions the KV cache holds (default 4096), >= 1 */
    int32_t n_batch;          /* prompt positions evaluated per graph (default 512), >= 1 */
    int32_t n_threads;        /* CPU threads, up to 1024; 0 = all hardware threads (default); < 0 is an error */
    minicpmv_kv_type kv_type; /* default MINICPMV_KV_F16 */
} minicpmv_session_params;

MINICPMV_API minicpmv_session_params minicpmv_session_default_params(void);

/* A new, empty conversation on `model`; params may be NULL for the defaults. The session holds a
 * reference to the model (see minicpmv_model_free). On success *out is a new session the caller
 * owns (minicpmv_session_free); on failure *out is NULL. */
MINICPMV_API minicpmv_status minicpmv_session_new(const minicpmv_model * model, const minicpmv_session_params * params,
                                                  minicpmv_session ** out);

/* NULL is harmless. Must not race with another call on the same session from another thread; from
 * the session's own piece callback it is refused (the session stays, minicpmv_last_error says why). */
MINICPMV_API void minicpmv_session_free(minicpmv_session * session);

/* The message of the latest status-returning call on this session ("" when it succeeded), or NULL
 * for an invalid handle. Owned by the session; valid until the next call on it. */
MINICPMV_API const char * minicpmv_session_error(const minicpmv_session * session);

/* The system prompt of the conversation; NULL or "" uses the chat template's default ("You are a
 * helpful assistant."), as HF chat() does without system_prompt. Copied. Changing it between turns
 * re-evaluates the whole conversation on the next generate. */
MINICPMV_API minicpmv_status minicpmv_session_set_system_prompt(minicpmv_session * session, const char * text);

/* --- the pending user message: parts are joined with "\n", as HF chat() joins a content list --- */

/* Appends NUL-terminated UTF-8 text (copied). NULL is MINICPMV_ERR_INVALID_ARGUMENT. */
MINICPMV_API minicpmv_status minicpmv_session_add_text(minicpmv_session * session, const char * text);

/* An 8-bit RGB image in the caller's memory: pixel (x, y) is the 3 bytes R, G, B at
 * pixels + y * stride + 3 * x, rows top to bottom. */
typedef struct minicpmv_image {
    int32_t width;  /* >= 1 */
    int32_t height; /* >= 1 */
    size_t stride;  /* bytes from one row to the next; 0 means packed rows (3 * width) */
    const uint8_t * pixels;
    size_t size; /* bytes readable at pixels: at least (height - 1) * stride + 3 * width */
} minicpmv_image;

/* Appends an image (its pixels are copied; the caller's buffer may be freed on return). Needs a model
 * with a vision file (else MINICPMV_ERR_UNSUPPORTED). Zero or negative sides, a NULL pixel pointer,
 * a stride below 3 * width or a size below what width, height and stride need are
 * MINICPMV_ERR_INVALID_ARGUMENT, as are sides beyond 2^24 or images beyond 2^28 pixels. */
MINICPMV_API minicpmv_status minicpmv_session_add_image(minicpmv_session * session, const minicpmv_image * image);

/* Appends video frames (each checked and copied as minicpmv_session_add_image does), in order, as
 * the model card's video chat passes them: a conversation with frames is rendered with HF's video
 * options (use_image_id off, max_slice_nums 2) unless minicpmv_generate_params says otherwise.
 * Frames sampled one per second, at most 64, is the model card's choice. */
MINICPMV_API minicpmv_status minicpmv_session_add_video_frames(minicpmv_session * session, const minicpmv_image * frames,
                                                               size_t n_frames);

/* Drops the pending user message (the conversation is kept). */
MINICPMV_API minicpmv_status minicpmv_session_clear_pending(minicpmv_session * session);

/* Forgets the whole conversation and the pending message (the system prompt is kept). The KV cache
 * keeps what the next conversation shares with the old one (the system turn). */
MINICPMV_API minicpmv_status minicpmv_session_reset(minicpmv_session * session);

/* Completed turns so far (each question and each answer counts one; the system turn does not);
 * -1 for an invalid handle. */
MINICPMV_API int32_t minicpmv_session_n_turns(const minicpmv_session * session);

/* --- generation --- */

/* Sampling, as HF chat(sampling=True): repetition penalty -> temperature -> top-k -> top-p -> min-p. */
typedef struct minicpmv_sampling_params {
    float temperature;        /* 0.7; <= 0 is greedy decoding (argmax after the penalty) */
    int32_t top_k;            /* 100; <= 0 disables */
    double top_p;             /* 0.8; in [0, 1], 1 disables */
    float min_p;              /* 0; in [0, 1], 0 disables */
    float repetition_penalty; /* 1.05; > 0, 1 disables */
    uint64_t seed;            /* 0; the same seed gives the same reply; MINICPMV_SEED_RANDOM draws one */
} minicpmv_sampling_params;

#define MINICPMV_SEED_RANDOM UINT64_MAX

/* Beam search, as HF chat(sampling=False). */
typedef struct minicpmv_beam_params {
    int32_t num_beams;        /* 3; >= 1, 1 is greedy search */
    float repetition_penalty; /* 1.2; > 0, 1 disables */
    double length_penalty;    /* 1.0 */
} minicpmv_beam_params;

typedef struct minicpmv_generate_params {
    int32_t max_new_tokens; /* 2048; >= 0 */
    bool beam_search;       /* false: sample with `sampling` (HF sampling=True, the default);
                               true: beam search with `beam` (HF sampling=False) */
    minicpmv_sampling_params sampling;
    minicpmv_beam_params beam;
    int32_t max_slice_nums; /* 0 = automatic: 9 (HF's default), 2 when the conversation has video
                               frames; else >= 1 */
    int32_t use_image_id;   /* -1 = automatic: 1, 0 when the conversation has video frames; else 0 or 1 */
    /* When not NULL, generation stops after the token during which *cancel became nonzero. Another
     * thread may set it at any time (use an atomic store: C11 atomic_store on an atomic_int whose
     * address is passed here, or __atomic_store_n); the library only reads it. */
    const volatile int * cancel;
} minicpmv_generate_params;

MINICPMV_API minicpmv_generate_params minicpmv_generate_default_params(void);

/* Receives each new piece of the reply: `len` bytes of complete UTF-8 at `piece` (also
 * NUL-terminated), valid during the call only. Return false to stop the generation (it then ends
 * with MINICPMV_STOP_CANCELLED). Called on the thread that called generate. It must not call
 * functions on the same session (they fail with MINICPMV_ERR_STATE). */
typedef bool (*minicpmv_piece_callback)(const char * piece, size_t len, void * user_data);

typedef enum minicpmv_stop_reason {
    MINICPMV_STOP_EOS = 0,      /* the model ended its reply */
    MINICPMV_STOP_LENGTH = 1,   /* max_new_tokens, or the context is full */
    MINICPMV_STOP_CANCELLED = 2 /* the callback returned false or *cancel became nonzero */
} minicpmv_stop_reason;

typedef struct minicpmv_result {
    minicpmv_stop_reason stop_reason;
    int32_t n_tokens;  /* generated tokens, without the stop token */
    int32_t n_prompt;  /* prompt positions of this turn (the whole conversation) */
    int32_t n_reused;  /* of which came from the KV cache */
    int32_t n_encoded; /* image slices run through the vision encoder for this turn */
    double prefill_ms;
    double decode_ms;
} minicpmv_result;

/* Answers the pending user message: the conversation so far plus that message is rendered as the
 * checkpoint's ChatML prompt, its cached prefix reused, the rest evaluated, and the reply generated.
 * params may be NULL for the defaults; on_piece may be NULL; result may be NULL.
 *
 * On MINICPMV_OK the pending message and the reply (also a cancelled, partial one) become the
 * conversation's two newest turns; minicpmv_session_reply returns the reply. On any error the
 * conversation and the pending message are unchanged (call generate again, or clear_pending).
 *
 * Sampling and greedy decoding stream piece by piece and check the cancel flag after each token.
 * Beam search streams its whole answer at the end and checks the flag before each step (a cancelled
 * search answers with its best hypothesis so far). The prompt evaluation (prefill, vision encoding) is not
 * interruptible. A flag already set when generate begins gives MINICPMV_ERR_CANCELLED.
 *
 * Errors: MINICPMV_ERR_STATE (no pending message, or the session is busy),
 * MINICPMV_ERR_INVALID_ARGUMENT (parameters out of range: the message names the field),
 * MINICPMV_ERR_CONTEXT_FULL, MINICPMV_ERR_IO (the device failed or ran out of memory). */
MINICPMV_API minicpmv_status minicpmv_session_generate(minicpmv_session * session, const minicpmv_generate_params * params,
                                                       minicpmv_piece_callback on_piece, void * user_data,
                                                       minicpmv_result * result);

/* The latest reply (NUL-terminated UTF-8; "" before the first), owned by the session and valid until
 * the next call on it; NULL for an invalid handle. */
MINICPMV_API const char * minicpmv_session_reply(const minicpmv_session * session);

#ifdef __cplusplus
}
#endif

#endif /* MINICPMV_H */
