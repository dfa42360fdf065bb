// The ChatML prompt builder (text/chat_template.cpp) with the micro preset's vocabulary: turns, roles,
// text and image placeholders from the bytes. The input is a header byte (bit 0: add the generation
// prompt, bit 1: image ids, bits 2-5: max_slice_nums) and parts separated by 0xff (never in UTF-8).
// A part's first byte: bits 0-1 open a new turn (0: no, 1: user, 2: assistant, 3: system); bit 2
// makes it an image, whose next two bytes are its width and height, else the rest is its text; bit 3
// references the image out of order.
#include "core/error.h"
#include "fuzz_input.h"
#include "model/model.h"
#include "text/chat_template.h"

#include <memory>

using namespace minicpmv;

namespace {

std::unique_ptr<Model> micro;

}  // namespace

extern "C" int LLVMFuzzerInitialize(int * /*argc*/, char *** argv) {
    micro = fuzz::micro_model((*argv)[0]);
    return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t * data, size_t size) {
    if (size < 1) return 0;
    PromptOptions options;
    options.add_generation_prompt = data[0] & 1;
    options.use_image_id = data[0] & 2;
    options.slicing.max_slice_nums = (data[0] >> 2) & 15;  // 0 is refused
    options.n_query = 4;                                   // the micro preset's resampler queries
    std::vector<ChatTurn> turns;
    std::vector<RgbImage> images;
    const uint8_t * end = data + size;
    for (const uint8_t * p = data + 1; p < end;) {
        const uint8_t * stop = std::find(p, end, 0xff);
        if (stop > p) {
            const uint8_t kind = *p++;
            static const char * const roles[] = {"", "user", "assistant", "system"};
            if (kind & 3 || turns.empty()) turns.push_back({roles[kind & 3], {}});
            ChatPart part;
            if (kind & 4 && stop - p >= 2) {
                part.image = static_cast<int32_t>(images.size()) + (kind & 8 ? 1 : 0);
                images.emplace_back(Size{p[0] + 1, p[1] + 1});
            } else {
                part.text.assign(reinterpret_cast<const char *>(p), stop - p);
            }
            turns.back().parts.push_back(std::move(part));
        }
        p = stop + (stop < end);
    }
    try {
        const Prompt prompt = chatml_prompt(micro->tokenizer(), turns, std::move(images), options);
        prompt.position_keys();
    } catch (const Error &) {
        // Refused with a message: what bad input must get.
    }
    return 0;
}
