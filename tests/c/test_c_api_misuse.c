/*
 * The C API from plain C99: every misuse returns its status and a message, never crashes; plus the
 * conversation, cancellation and ownership rules of minicpmv.h.
 *
 *   test_c_api_misuse LLM.gguf MMPROJ.gguf
 *
 * Prints "ok NAME" or "FAIL NAME: ..." per check and exits with the number of failures.
 */
#include <minicpmv.h>

#include <stdio.h>
#include <string.h>

static int n_failed = 0;

static void check(int ok, const char * name, const char * detail) {
    if (ok) {
        printf("ok %s\n", name);
    } else {
        printf("FAIL %s: %s\n", name, detail ? detail : "");
        ++n_failed;
    }
}

/* The call returned `want` and left a message containing `needle` in minicpmv_last_error(). */
static void expect(minicpmv_status got, minicpmv_status want, const char * needle, const char * name) {
    char detail[1024];
    const char * msg = minicpmv_last_error();
    const int ok = got == want && msg != NULL && (want == MINICPMV_OK ? msg[0] == '\0' : strstr(msg, needle) != NULL);
    snprintf(detail, sizeof detail, "status %d (%s), wanted %d (%s); message \"%s\", wanted \"%s\"", (int)got,
             minicpmv_status_string(got), (int)want, minicpmv_status_string(want), msg ? msg : "(null)", needle);
    check(ok, name, detail);
    if (ok && want != MINICPMV_OK) printf("   message: %s\n", msg);
}

struct callback_state {
    minicpmv_session * session;
    int calls;
    int stop_after;            /* return false at this call (0: never) */
    volatile int * set_flag;   /* set *set_flag = 1 at the first call */
    minicpmv_status reentrant; /* what a call on the session from inside the callback returned */
    int free_refused;          /* whether freeing the session from inside the callback was refused */
};

static bool on_piece(const char * piece, size_t len, void * user_data) {
    struct callback_state * st = (struct callback_state *)user_data;
    (void)piece;
    (void)len;
    ++st->calls;
    if (st->session != NULL && st->calls == 1) {
        st->reentrant = minicpmv_session_add_text(st->session, "again");
        minicpmv_session_free(st->session); /* refused: the session is generating */
        st->free_refused = strstr(minicpmv_last_error(), "busy") != NULL;
    }
    if (st->set_flag != NULL) *st->set_flag = 1;
    return st->stop_after == 0 || st->calls < st->stop_after;
}

int main(int argc, char ** argv) {
    minicpmv_model *model = NULL, *text_model = NULL;
    minicpmv_session *s = NULL, *freed = NULL;
    minicpmv_model_params mp = minicpmv_model_default_params();
    minicpmv_session_params sp = minicpmv_session_default_params();
    minicpmv_generate_params gp = minicpmv_generate_default_params();
    minicpmv_result r;
    minicpmv_image img;
    static uint8_t pixels[20 * 16 * 4];
    minicpmv_status st;
    int i;

    if (argc != 3) {
        fprintf(stderr, "usage: test_c_api_misuse LLM.gguf MMPROJ.gguf\n");
        return 100;
    }
    for (i = 0; i < (int)sizeof pixels; ++i) pixels[i] = (uint8_t)(i * 7);

    /* --- defaults, statuses, devices --- */
    check(strcmp(mp.device, "auto") == 0, "model defaults: device auto", mp.device);
    check(sp.n_ctx == 4096 && sp.n_batch == 512 && sp.n_threads == 0 && sp.kv_type == MINICPMV_KV_F16, "session defaults", NULL);
    check(gp.max_new_tokens == 2048 && !gp.beam_search && gp.sampling.temperature > 0.69f && gp.sampling.temperature < 0.71f &&
              gp.sampling.top_k == 100 && gp.sampling.top_p > 0.79 && gp.sampling.top_p < 0.81 && gp.sampling.min_p == 0.0f &&
              gp.sampling.repetition_penalty > 1.049f && gp.sampling.repetition_penalty < 1.051f && gp.beam.num_beams == 3 &&
              gp.beam.repetition_penalty > 1.19f && gp.beam.repetition_penalty < 1.21f && gp.beam.length_penalty == 1.0 &&
              gp.max_slice_nums == 0 && gp.use_image_id == -1 && gp.cancel == NULL,
          "generate defaults = HF chat(sampling=True) / chat(sampling=False)", NULL);
    check(strcmp(minicpmv_status_string(MINICPMV_ERR_INVALID_HANDLE), "invalid handle") == 0 &&
              strcmp(minicpmv_status_string((minicpmv_status)1234), "unknown status") == 0,
          "status strings", NULL);
    check(minicpmv_device_count() >= 1 && minicpmv_device_name(0) != NULL && minicpmv_device_name(-1) == NULL &&
              minicpmv_device_name(minicpmv_device_count()) == NULL,
          "device list", NULL);
    check(strcmp(minicpmv_version(), "0.1.0") == 0, "version", minicpmv_version());

    /* --- loading --- */
    expect(minicpmv_model_load(NULL, NULL, NULL, &model), MINICPMV_ERR_INVALID_ARGUMENT, "llm_path", "load: NULL path");
    expect(minicpmv_model_load(argv[1], NULL, NULL, NULL), MINICPMV_ERR_INVALID_ARGUMENT, "out is NULL", "load: NULL out");
    expect(minicpmv_model_load("/nonexistent/model.gguf", NULL, NULL, &model), MINICPMV_ERR_IO, "/nonexistent/model.gguf",
           "load: missing file");
    check(model == NULL, "load: *out is NULL after a failure", NULL);
    expect(minicpmv_model_load(argv[2], NULL, NULL, &model), MINICPMV_ERR_BAD_FORMAT, "", "load: mmproj given as the LLM");
    mp.device = "nosuchdevice";
    expect(minicpmv_model_load(argv[1], argv[2], &mp, &model), MINICPMV_ERR_UNSUPPORTED,
           "available: ", "load: unknown device names the available ones");
    mp.device = "metal";
    expect(minicpmv_model_load(argv[1], argv[2], &mp, &model), MINICPMV_ERR_UNSUPPORTED, "'metal' is not available",
           "load: backend not built in");
    mp.device = "cpu";
    expect(minicpmv_model_load(argv[1], argv[2], &mp, &model), MINICPMV_OK, "", "load: LLM + mmproj on the CPU");
    if (model == NULL) return 100 + n_failed;
    check(minicpmv_model_has_vision(model) == 1 && strcmp(minicpmv_model_device(model), "CPU") == 0, "model: vision, CPU", NULL);
    expect(minicpmv_model_load(argv[1], "", NULL, &text_model), MINICPMV_OK, "", "load: text-only model");

    /* --- handles --- */
    expect(minicpmv_session_new(NULL, NULL, &s), MINICPMV_ERR_INVALID_HANDLE, "model is NULL", "session_new: NULL model");
    expect(minicpmv_session_add_text(NULL, "hi"), MINICPMV_ERR_INVALID_HANDLE, "session is NULL", "add_text: NULL session");
    expect(minicpmv_session_new((const minicpmv_model *)pixels, NULL, &s), MINICPMV_ERR_INVALID_HANDLE, "not a live model",
           "session_new: a pointer that is no handle");
    expect(minicpmv_session_new(model, NULL, &freed), MINICPMV_OK, "", "session_new: defaults");
    expect(minicpmv_session_add_text((minicpmv_session *)model, "hi"), MINICPMV_ERR_INVALID_HANDLE,
           "a model handle was passed as a session", "add_text: model handle as session");
    minicpmv_session_free(freed);
    check(minicpmv_last_error()[0] == '\0', "session_free: clears the message", minicpmv_last_error());
    expect(minicpmv_session_add_text(freed, "hi"), MINICPMV_ERR_INVALID_HANDLE, "already freed", "add_text: freed session");
    minicpmv_session_free(freed); /* double free: harmless, reported */
    check(strstr(minicpmv_last_error(), "already freed") != NULL, "session_free: double free is reported, not fatal",
          minicpmv_last_error());
    check(minicpmv_session_error(freed) == NULL && minicpmv_session_reply(freed) == NULL && minicpmv_session_n_turns(freed) == -1,
          "getters: freed session gives NULL / -1", NULL);
    minicpmv_session_free(NULL);
    minicpmv_model_free(NULL);
    check(1, "free(NULL) is harmless", NULL);

    /* --- session parameters --- */
    sp.n_ctx = 0;
    expect(minicpmv_session_new(model, &sp, &s), MINICPMV_ERR_INVALID_ARGUMENT, "n_ctx", "session_new: n_ctx 0");
    sp = minicpmv_session_default_params();
    sp.n_threads = -2;
    expect(minicpmv_session_new(model, &sp, &s), MINICPMV_ERR_INVALID_ARGUMENT, "n_threads", "session_new: negative threads");
    sp = minicpmv_session_default_params();
    sp.kv_type = (minicpmv_kv_type)7;
    expect(minicpmv_session_new(model, &sp, &s), MINICPMV_ERR_INVALID_ARGUMENT, "kv_type", "session_new: unknown kv type");
    check(s == NULL, "session_new: *out is NULL after a failure", NULL);
    sp = minicpmv_session_default_params();
    sp.n_ctx = 1024;
    sp.n_threads = 2;
    expect(minicpmv_session_new(model, &sp, &s), MINICPMV_OK, "", "session_new: n_ctx 1024");
    if (s == NULL) return 100 + n_failed;

    /* --- messages and images --- */
    expect(minicpmv_session_generate(s, NULL, NULL, NULL, &r), MINICPMV_ERR_STATE, "no pending user message",
           "generate: no message");
    check(strstr(minicpmv_session_error(s), "no pending user message") != NULL, "session_error: kept per session",
          minicpmv_session_error(s));
    expect(minicpmv_session_add_text(s, NULL), MINICPMV_ERR_INVALID_ARGUMENT, "text is NULL", "add_text: NULL text");
    expect(minicpmv_session_add_image(s, NULL), MINICPMV_ERR_INVALID_ARGUMENT, "image is NULL", "add_image: NULL image");
    img.width = 0;
    img.height = 16;
    img.stride = 0;
    img.pixels = pixels;
    img.size = sizeof pixels;
    expect(minicpmv_session_add_image(s, &img), MINICPMV_ERR_INVALID_ARGUMENT, "at least 1, got 0x16", "add_image: zero width");
    img.width = 20;
    img.height = -3;
    expect(minicpmv_session_add_image(s, &img), MINICPMV_ERR_INVALID_ARGUMENT, "got 20x-3", "add_image: negative height");
    img.height = 16;
    img.pixels = NULL;
    expect(minicpmv_session_add_image(s, &img), MINICPMV_ERR_INVALID_ARGUMENT, "pixels is NULL", "add_image: NULL pixels");
    img.pixels = pixels;
    img.stride = 59;
    expect(minicpmv_session_add_image(s, &img), MINICPMV_ERR_INVALID_ARGUMENT, "stride 59 is below 3 * width = 60",
           "add_image: stride too small");
    img.stride = 0;
    img.size = 20 * 16 * 3 - 1;
    expect(minicpmv_session_add_image(s, &img), MINICPMV_ERR_INVALID_ARGUMENT, "needs 960 bytes, size says 959",
           "add_image: buffer too small");
    img.stride = 80; /* padded rows: the last row needs only 60 bytes */
    img.size = 15 * 80 + 59;
    expect(minicpmv_session_add_image(s, &img), MINICPMV_ERR_INVALID_ARGUMENT, "needs 1260 bytes",
           "add_image: padded, too small");
    img.width = 1 << 25;
    img.height = 1;
    img.stride = 0;
    expect(minicpmv_session_add_image(s, &img), MINICPMV_ERR_INVALID_ARGUMENT, "too large", "add_image: absurd width");
    expect(minicpmv_session_add_video_frames(s, NULL, 3), MINICPMV_ERR_INVALID_ARGUMENT, "no frames", "add_video_frames: NULL");
    img.width = 20;
    img.height = 16;
    img.stride = 0;
    img.size = sizeof pixels;
    expect(minicpmv_session_add_video_frames(s, &img, 0), MINICPMV_ERR_INVALID_ARGUMENT, "no frames", "add_video_frames: none");
    check(minicpmv_session_n_turns(s) == 0, "failed adds leave no turn", NULL);
    expect(minicpmv_session_generate(s, NULL, NULL, NULL, &r), MINICPMV_ERR_STATE, "no pending", "failed adds add nothing");
    {
        minicpmv_session * ts = NULL;
        expect(minicpmv_session_new(text_model, NULL, &ts), MINICPMV_OK, "", "session_new: text-only model");
        expect(minicpmv_session_add_image(ts, &img), MINICPMV_ERR_UNSUPPORTED, "no vision (mmproj) file",
               "add_image: text-only model");
        minicpmv_session_free(ts);
    }

    /* --- generation parameters --- */
    expect(minicpmv_session_add_image(s, &img), MINICPMV_OK, "", "add_image: 20x16 packed");
    expect(minicpmv_session_add_text(s, "What is this?"), MINICPMV_OK, "", "add_text");
    gp.max_new_tokens = -1;
    expect(minicpmv_session_generate(s, &gp, NULL, NULL, &r), MINICPMV_ERR_INVALID_ARGUMENT, "max_new_tokens",
           "generate: max_new_tokens -1");
    gp = minicpmv_generate_default_params();
    gp.sampling.top_p = 1.5;
    expect(minicpmv_session_generate(s, &gp, NULL, NULL, &r), MINICPMV_ERR_INVALID_ARGUMENT, "top_p", "generate: top_p 1.5");
    gp = minicpmv_generate_default_params();
    gp.sampling.repetition_penalty = 0.0f;
    expect(minicpmv_session_generate(s, &gp, NULL, NULL, &r), MINICPMV_ERR_INVALID_ARGUMENT, "repetition_penalty",
           "generate: repetition_penalty 0");
    gp = minicpmv_generate_default_params();
    gp.beam_search = true;
    gp.beam.num_beams = 0;
    expect(minicpmv_session_generate(s, &gp, NULL, NULL, &r), MINICPMV_ERR_INVALID_ARGUMENT, "num_beams", "generate: 0 beams");
    gp = minicpmv_generate_default_params();
    gp.max_slice_nums = -1;
    expect(minicpmv_session_generate(s, &gp, NULL, NULL, &r), MINICPMV_ERR_INVALID_ARGUMENT, "max_slice_nums",
           "generate: max_slice_nums -1");
    gp = minicpmv_generate_default_params();
    gp.use_image_id = 2;
    expect(minicpmv_session_generate(s, &gp, NULL, NULL, &r), MINICPMV_ERR_INVALID_ARGUMENT, "use_image_id",
           "generate: use_image_id 2");
    check(minicpmv_session_n_turns(s) == 0, "failed generates leave the conversation alone", NULL);

    /* --- cancellation --- */
    {
        volatile int flag = 1;
        gp = minicpmv_generate_default_params();
        gp.cancel = &flag;
        expect(minicpmv_session_generate(s, &gp, NULL, NULL, &r), MINICPMV_ERR_CANCELLED, "before the generation began",
               "generate: cancel flag already set");
        check(minicpmv_session_n_turns(s) == 0, "cancelled before start: nothing recorded", NULL);
    }
    {
        struct callback_state cs;
        volatile int flag = 0;
        memset(&cs, 0, sizeof cs);
        cs.session = s;
        cs.set_flag = &flag; /* as another thread would */
        gp = minicpmv_generate_default_params();
        gp.max_new_tokens = 8;
        gp.cancel = &flag;
        st = minicpmv_session_generate(s, &gp, on_piece, &cs, &r);
        expect(st, MINICPMV_OK, "", "generate: cancel flag set during generation");
        check(r.stop_reason == MINICPMV_STOP_CANCELLED && cs.calls == 1 && r.n_tokens >= 1 && r.n_encoded == 1,
              "cancel flag: stops after the current token", NULL);
        check(cs.reentrant == MINICPMV_ERR_STATE, "callback calling its session gets MINICPMV_ERR_STATE (busy)", NULL);
        check(cs.free_refused && minicpmv_session_n_turns(s) == 2, "callback freeing its session is refused", NULL);
        check(minicpmv_session_n_turns(s) == 2 && strlen(minicpmv_session_reply(s)) > 0, "cancelled reply is kept as a turn",
              minicpmv_session_reply(s));
    }
    {
        struct callback_state cs;
        memset(&cs, 0, sizeof cs);
        cs.stop_after = 2;
        expect(minicpmv_session_add_text(s, "More?"), MINICPMV_OK, "", "second question");
        gp = minicpmv_generate_default_params();
        gp.max_new_tokens = 8;
        gp.sampling.seed = 42;
        st = minicpmv_session_generate(s, &gp, on_piece, &cs, &r);
        expect(st, MINICPMV_OK, "", "generate: second turn, callback stops at its 2nd piece");
        check(r.stop_reason == MINICPMV_STOP_CANCELLED && cs.calls == 2, "callback false: cancelled", NULL);
        check(r.n_reused > 0 && r.n_encoded == 0, "second turn reuses the KV cache and the image embeddings", NULL);
        check(minicpmv_session_n_turns(s) == 4, "four turns", NULL);
    }

    /* --- beam search, video frames, reset --- */
    {
        uint8_t frames_px[2][16 * 16 * 3];
        minicpmv_image frames[2];
        memset(frames_px, 0, sizeof frames_px);
        memset(frames_px[1], 200, sizeof frames_px[1]);
        for (i = 0; i < 2; ++i) {
            frames[i].width = 16;
            frames[i].height = 16;
            frames[i].stride = 0;
            frames[i].pixels = frames_px[i];
            frames[i].size = sizeof frames_px[i];
        }
        expect(minicpmv_session_reset(s), MINICPMV_OK, "", "reset");
        check(minicpmv_session_n_turns(s) == 0 && minicpmv_session_reply(s)[0] == '\0', "reset forgets the conversation", NULL);
        expect(minicpmv_session_add_video_frames(s, frames, 2), MINICPMV_OK, "", "add_video_frames: 2 frames");
        expect(minicpmv_session_add_text(s, "Describe the video."), MINICPMV_OK, "", "add_text after frames");
        gp = minicpmv_generate_default_params();
        gp.beam_search = true;
        gp.max_new_tokens = 4;
        expect(minicpmv_session_generate(s, &gp, NULL, NULL, &r), MINICPMV_OK, "", "generate: beam search over video frames");
        check(r.n_encoded == 2 && r.n_tokens >= 1 && r.n_tokens <= 4, "video: both frames encoded, at most 4 tokens", NULL);
    }

    /* --- ownership: sessions keep the model alive --- */
    minicpmv_model_free(model);
    check(minicpmv_model_has_vision(model) == -1, "model_free: the handle is gone", NULL);
    expect(minicpmv_session_new(model, NULL, &freed), MINICPMV_ERR_INVALID_HANDLE, "already freed", "session_new: freed model");
    minicpmv_model_free(model);
    check(strstr(minicpmv_last_error(), "already freed") != NULL, "model_free: double free is reported, not fatal", NULL);
    expect(minicpmv_session_add_text(s, "Still there?"), MINICPMV_OK, "", "session outlives its model handle");
    gp = minicpmv_generate_default_params();
    gp.max_new_tokens = 2;
    expect(minicpmv_session_generate(s, &gp, NULL, NULL, &r), MINICPMV_OK, "", "generate after model_free");
    minicpmv_session_free(s);
    minicpmv_model_free(text_model);

    printf("%d failed\n", n_failed);
    return n_failed;
}
