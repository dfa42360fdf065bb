/*
 * Two conversations on one model, run one after the other and then at the same time on two threads:
 * the replies must be the same (the model is shared and immutable; each session owns its cache).
 *
 *   test_c_api_threads MODEL.gguf MMPROJ.gguf
 *
 * Conversation A asks two questions about a synthetic image, B two text questions. Prints each reply
 * and "threads: same replies" on success; exits 1 otherwise.
 */
#define _POSIX_C_SOURCE 200809L

#include <minicpmv.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define N_TURNS 2
#define REPLY_MAX 4096

typedef struct job {
    const minicpmv_model * model;
    int with_image;
    const char * questions[N_TURNS];
    char replies[N_TURNS][REPLY_MAX];
    int failed;
} job;

static unsigned char g_pixels[48 * 64 * 3];

static void * run(void * arg) {
    job * j = (job *)arg;
    minicpmv_session * s = NULL;
    minicpmv_session_params sp = minicpmv_session_default_params();
    minicpmv_generate_params gp = minicpmv_generate_default_params();
    int t;
    sp.n_threads = 1;
    gp.beam_search = true; /* one beam, no penalty: greedy */
    gp.beam.num_beams = 1;
    gp.beam.repetition_penalty = 1.0f;
    gp.max_new_tokens = 12;
    if (minicpmv_session_new(j->model, &sp, &s) != MINICPMV_OK) {
        fprintf(stderr, "session_new: %s\n", minicpmv_last_error());
        j->failed = 1;
        return NULL;
    }
    for (t = 0; t < N_TURNS; ++t) {
        if (t == 0 && j->with_image) {
            minicpmv_image image;
            image.width = 64;
            image.height = 48;
            image.stride = 0;
            image.pixels = g_pixels;
            image.size = sizeof g_pixels;
            if (minicpmv_session_add_image(s, &image) != MINICPMV_OK) j->failed = 1;
        }
        if (minicpmv_session_add_text(s, j->questions[t]) != MINICPMV_OK ||
            minicpmv_session_generate(s, &gp, NULL, NULL, NULL) != MINICPMV_OK) {
            fprintf(stderr, "turn %d: %s\n", t + 1, minicpmv_session_error(s));
            j->failed = 1;
            break;
        }
        strncpy(j->replies[t], minicpmv_session_reply(s), REPLY_MAX - 1);
        j->replies[t][REPLY_MAX - 1] = '\0';
    }
    minicpmv_session_free(s);
    return NULL;
}

static void setup(job * j, const minicpmv_model * model, int with_image) {
    memset(j, 0, sizeof *j);
    j->model = model;
    j->with_image = with_image;
    j->questions[0] = with_image ? "What is in the image?" : "Tell me about the sea.";
    j->questions[1] = with_image ? "And its colours?" : "And about rivers?";
}

int main(int argc, char ** argv) {
    minicpmv_model * model = NULL;
    job seq[2], par[2];
    pthread_t threads[2];
    size_t i;
    int k, t, same = 1;
    if (argc != 3) {
        fprintf(stderr, "usage: test_c_api_threads MODEL.gguf MMPROJ.gguf\n");
        return 2;
    }
    for (i = 0; i < sizeof g_pixels; ++i) g_pixels[i] = (unsigned char)((i * 7919u) >> 3);
    if (minicpmv_model_load(argv[1], argv[2], NULL, &model) != MINICPMV_OK) {
        fprintf(stderr, "model_load: %s\n", minicpmv_last_error());
        return 1;
    }
    for (k = 0; k < 2; ++k) {
        setup(&seq[k], model, k == 0);
        run(&seq[k]);
        setup(&par[k], model, k == 0);
    }
    for (k = 0; k < 2; ++k) {
        if (pthread_create(&threads[k], NULL, run, &par[k]) != 0) return 1;
    }
    for (k = 0; k < 2; ++k) pthread_join(threads[k], NULL);
    for (k = 0; k < 2; ++k) {
        for (t = 0; t < N_TURNS; ++t) {
            printf("%c%d: %s\n", 'A' + k, t + 1, par[k].replies[t]);
            if (seq[k].failed || par[k].failed || strcmp(seq[k].replies[t], par[k].replies[t]) != 0 ||
                par[k].replies[t][0] == '\0') {
                printf("differs from the sequential run: %s\n", seq[k].replies[t]);
                same = 0;
            }
        }
    }
    minicpmv_model_free(model);
    printf(same ? "threads: same replies\n" : "threads: replies differ\n");
    return same ? 0 : 1;
}
