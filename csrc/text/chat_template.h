// The ChatML prompt of docs/model.md §7, as the checkpoint's (Qwen2) chat template renders it:
// <|im_start|>{role}\n{content}<|im_end|>\n per turn, a default system turn when the first turn is not
// a system turn, and <|im_start|>assistant\n to open the reply. Images in a turn become their
// placeholders (<image_id>k</image_id><image>…</image><slice>…</slice>…), whose embedding positions
// the vision path fills.
#pragma once

#include "image/image.h"
#include "image/image_slicing.h"

#include <cstdint>
#include <string>
#include <vector>

namespace minicpmv {

class Tokenizer;

inline constexpr const char * kDefaultSystemPrompt = "You are a helpful assistant.";

// One item of a message's content: text, or the image at `image` in the request's image list.
struct ChatPart {
    std::string text;
    int32_t image = -1;
};

struct ChatTurn {
    std::string role;             // "system" (first turn only), "user" or "assistant"
    std::vector<ChatPart> parts;  // joined with "\n", as HF chat() joins a content list
};

struct PromptImage {
    RgbImage image;
    SlicePlan plan;
    uint64_t key = 0;  // content hash: equal images at the same place reuse the KV cache
};

struct PromptOptions {
    bool add_generation_prompt = true;
    bool use_image_id = true;  // <image_id>k</image_id> before each image (HF default; off for video)
    SlicingParams slicing;     // max_slice_nums etc.
    int32_t n_query = 64;      // embedding positions per slice (the resampler's query count)
};

// The prompt: one token per position. Embedding positions hold the <unk> id, as HF's do before the
// vision embeddings overwrite them; `spans` say which slice's embeddings go where.
struct Prompt {
    struct Span {
        int32_t begin = 0;  // first of n_query positions
        int32_t image = 0;  // index into images
        int32_t slice = 0;  // 0 = overview, then the grid row-major
    };
    std::vector<int32_t> tokens;
    std::vector<Span> spans;
    std::vector<PromptImage> images;
    int32_t n_query = 0;
    SlicingParams slicing;  // how images[i].plan was made; preprocessing repeats it

    // Per position: 0 for text, else a hash of (image content, slice, row) for cache reuse.
    std::vector<uint64_t> position_keys() const;
};

// Markers are emitted as their special ids; the text between two markers is tokenized as one piece
// with special-token parsing off, so user text can never inject a marker. Every image must be used
// exactly once, in order. Throws Error(invalid_argument) on an empty conversation, a misplaced or
// unknown role, or a bad image reference.
Prompt chatml_prompt(const Tokenizer & tokenizer, const std::vector<ChatTurn> & turns, std::vector<RgbImage> images,
                     const PromptOptions & options);

// A text-only prompt for tools that bring their own token ids.
Prompt token_prompt(std::vector<int32_t> tokens);

}  // namespace minicpmv
