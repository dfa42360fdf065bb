/*
 * chat_image: ask MiniCPM-V 2.6 about an image through the C API, streaming the answer greedily.
 *
 *   chat_image -m ggml-model-Q4_K_M.gguf --mmproj mmproj-model-f16.gguf --image photo.ppm "What is this?"
 *   chat_image -m MODEL --mmproj MMPROJ --raw-rgb 640 480 pixels.rgb "Describe it." "What colour is it?"
 *
 * Each question after the first is a new turn of the same conversation (the KV cache is reused); the
 * image belongs to the first. Answers go to stdout, one per line; statistics go to stderr.
 * Images: binary PPM (P6, maxval <= 255; `convert photo.jpg photo.ppm`) or raw packed RGB8 with its size
 * given. No dependency beyond libminicpmv and the C standard library.
 */
#include <minicpmv.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void usage(void) {
    fprintf(stderr,
            "usage: chat_image -m MODEL.gguf --mmproj MMPROJ.gguf (--image FILE.ppm | --raw-rgb W H FILE)\n"
            "                  [-n MAX_NEW_TOKENS] [-c N_CTX] [-t THREADS] [--device NAME] [--kv f16|f32]\n"
            "                  QUESTION [QUESTION...]\n");
}

/* Reads a whole file; NULL on failure. */
static unsigned char * read_file(const char * path, size_t * size) {
    FILE * f = fopen(path, "rb");
    unsigned char * data = NULL;
    size_t cap = 0, n = 0;
    if (f == NULL) return NULL;
    for (;;) {
        if (n == cap) {
            unsigned char * bigger;
            cap = cap ? cap * 2 : 1 << 16;
            bigger = (unsigned char *)realloc(data, cap);
            if (bigger == NULL) {
                free(data);
                fclose(f);
                return NULL;
            }
            data = bigger;
        }
        {
            const size_t got = fread(data + n, 1, cap - n, f);
            n += got;
            if (got == 0) break;
        }
    }
    fclose(f);
    *size = n;
    return data;
}

/* The next PPM header number at *pos (skipping whitespace and # comments); -1 if there is none. */
static long ppm_number(const unsigned char * d, size_t size, size_t * pos) {
    long v = 0;
    int digits = 0;
    while (*pos < size) {
        if (d[*pos] == '#') {
            while (*pos < size && d[*pos] != '\n') ++*pos;
        } else if (d[*pos] == ' ' || d[*pos] == '\t' || d[*pos] == '\r' || d[*pos] == '\n') {
            ++*pos;
        } else {
            break;
        }
    }
    while (*pos < size && d[*pos] >= '0' && d[*pos] <= '9' && v < 100000000L) {
        v = v * 10 + (d[*pos] - '0');
        ++*pos;
        ++digits;
    }
    return digits ? v : -1;
}

/* Fills *image from a P6 file held in `data` (pixels point into it, scaled to 0..255). */
static int parse_ppm(unsigned char * data, size_t size, minicpmv_image * image) {
    size_t pos = 2, i;
    long w, h, maxval;
    if (size < 2 || data[0] != 'P' || data[1] != '6') return 0;
    w = ppm_number(data, size, &pos);
    h = ppm_number(data, size, &pos);
    maxval = ppm_number(data, size, &pos);
    if (w < 1 || h < 1 || maxval < 1 || maxval > 255 || pos >= size) return 0;
    ++pos; /* the single whitespace byte before the pixels */
    if ((size - pos) / 3 / (size_t)w < (size_t)h) return 0;
    image->width = (int32_t)w;
    image->height = (int32_t)h;
    image->stride = 0;
    image->pixels = data + pos;
    image->size = size - pos;
    if (maxval != 255) {
        for (i = 0; i < (size_t)w * (size_t)h * 3; ++i) data[pos + i] = (unsigned char)(data[pos + i] * 255 / maxval);
    }
    return 1;
}

static bool print_piece(const char * piece, size_t len, void * user_data) {
    (void)user_data;
    fwrite(piece, 1, len, stdout);
    fflush(stdout);
    return true;
}

int main(int argc, char ** argv) {
    const char *model_path = NULL, *mmproj_path = NULL, *image_path = NULL, *device = NULL, *kv = "f16";
    long raw_w = 0, raw_h = 0, n_predict = 256, n_ctx = 4096, n_threads = 0;
    int first_question = 0, i, rc = 1;
    unsigned char * file = NULL;
    size_t file_size = 0;
    minicpmv_image image;
    minicpmv_model * model = NULL;
    minicpmv_session * session = NULL;
    minicpmv_model_params mp = minicpmv_model_default_params();
    minicpmv_session_params sp = minicpmv_session_default_params();
    minicpmv_generate_params gp = minicpmv_generate_default_params();
    minicpmv_status st;

    for (i = 1; i < argc; ++i) {
        const char * a = argv[i];
        const int has_value = i + 1 < argc;
        if (strcmp(a, "-m") == 0 && has_value)
            model_path = argv[++i];
        else if (strcmp(a, "--mmproj") == 0 && has_value)
            mmproj_path = argv[++i];
        else if (strcmp(a, "--image") == 0 && has_value)
            image_path = argv[++i];
        else if (strcmp(a, "--raw-rgb") == 0 && i + 3 < argc) {
            raw_w = strtol(argv[++i], NULL, 10);
            raw_h = strtol(argv[++i], NULL, 10);
            image_path = argv[++i];
        } else if (strcmp(a, "-n") == 0 && has_value)
            n_predict = strtol(argv[++i], NULL, 10);
        else if (strcmp(a, "-c") == 0 && has_value)
            n_ctx = strtol(argv[++i], NULL, 10);
        else if (strcmp(a, "-t") == 0 && has_value)
            n_threads = strtol(argv[++i], NULL, 10);
        else if (strcmp(a, "--device") == 0 && has_value)
            device = argv[++i];
        else if (strcmp(a, "--kv") == 0 && has_value)
            kv = argv[++i];
        else if (a[0] == '-') {
            usage();
            return 2;
        } else {
            first_question = i;
            break;
        }
    }
    if (model_path == NULL || mmproj_path == NULL || image_path == NULL || first_question == 0) {
        usage();
        return 2;
    }

    file = read_file(image_path, &file_size);
    if (file == NULL) {
        fprintf(stderr, "chat_image: cannot read %s\n", image_path);
        return 1;
    }
    if (raw_w != 0 || raw_h != 0) {
        /* Raw RGB: the library checks the sizes against the bytes we have. */
        image.width = (int32_t)raw_w;
        image.height = (int32_t)raw_h;
        image.stride = 0;
        image.pixels = file;
        image.size = file_size;
    } else if (!parse_ppm(file, file_size, &image)) {
        fprintf(stderr, "chat_image: %s is not a binary PPM (P6, maxval <= 255) image\n", image_path);
        free(file);
        return 1;
    }

    if (device != NULL) mp.device = device;
    sp.n_ctx = (int32_t)n_ctx;
    sp.n_threads = (int32_t)n_threads;
    sp.kv_type = strcmp(kv, "f32") == 0 ? MINICPMV_KV_F32 : MINICPMV_KV_F16;
    /* Greedy decoding: temperature 0 is argmax; no repetition penalty. */
    gp.max_new_tokens = (int32_t)n_predict;
    gp.sampling.temperature = 0.0f;
    gp.sampling.repetition_penalty = 1.0f;

    st = minicpmv_model_load(model_path, mmproj_path, &mp, &model);
    if (st != MINICPMV_OK) goto fail;
    fprintf(stderr, "chat_image: device %s\n", minicpmv_model_device(model));
    st = minicpmv_session_new(model, &sp, &session);
    if (st != MINICPMV_OK) goto fail;
    st = minicpmv_session_add_image(session, &image);
    if (st != MINICPMV_OK) goto fail;
    free(file); /* the session keeps its own copy of the pixels */
    file = NULL;

    for (i = first_question; i < argc; ++i) {
        minicpmv_result r;
        st = minicpmv_session_add_text(session, argv[i]);
        if (st != MINICPMV_OK) goto fail;
        st = minicpmv_session_generate(session, &gp, print_piece, NULL, &r);
        if (st != MINICPMV_OK) goto fail;
        fputc('\n', stdout);
        fflush(stdout);
        fprintf(stderr,
                "chat_image: turn %d: n_prompt=%d n_reused=%d n_encoded=%d n_tokens=%d stop=%d prefill_ms=%.1f decode_ms=%.1f\n",
                i - first_question + 1, r.n_prompt, r.n_reused, r.n_encoded, r.n_tokens, (int)r.stop_reason, r.prefill_ms,
                r.decode_ms);
    }
    rc = 0;
    goto done;

fail:
    fprintf(stderr, "chat_image: %s (%s)\n", minicpmv_last_error(), minicpmv_status_string(st));
done:
    minicpmv_session_free(session);
    minicpmv_model_free(model);
    free(file);
    return rc;
}
