#include "text/chat_template.h"

#include "core/error.h"
#include "text/tokenizer.h"

namespace minicpmv {

namespace {

int32_t marker(const Tokenizer & tokenizer, const char * text) {
    const int32_t id = tokenizer.find(text);
    if (id < 0) throw Error(ErrorCode::bad_format, std::string("the vocabulary has no '") + text + "' token");
    return id;
}

// FNV-1a over the pixels and size: identifies an image for KV-cache reuse.
uint64_t image_key(const RgbImage & image, const SlicePlan & plan) {
    uint64_t h = 1469598103934665603ULL;
    auto mix = [&h](uint64_t v) {
        h ^= v;
        h *= 1099511628211ULL;
    };
    for (uint8_t b : image.pixels()) mix(b);
    mix(static_cast<uint64_t>(image.size().width));
    mix(static_cast<uint64_t>(image.size().height));
    mix(static_cast<uint64_t>(plan.overview.width));
    mix(plan.slices ? static_cast<uint64_t>(plan.slices->grid.cols * 131 + plan.slices->grid.rows) : 0);
    return h | 1;  // never 0, which marks text positions
}

// Accumulates text and markers; text runs between markers are tokenized as one piece.
class PromptWriter {
  public:
    PromptWriter(const Tokenizer & tokenizer, Prompt & prompt) : tok_(tokenizer), prompt_(prompt) {}

    void text(const std::string & s) { pending_ += s; }
    void special(int32_t id) {
        flush();
        prompt_.tokens.push_back(id);
    }
    void embeddings(int32_t image, int32_t slice, int32_t n, int32_t filler) {
        flush();
        prompt_.spans.push_back({static_cast<int32_t>(prompt_.tokens.size()), image, slice});
        prompt_.tokens.insert(prompt_.tokens.end(), n, filler);
    }
    void flush() {
        if (pending_.empty()) return;
        const std::vector<int32_t> ids = tok_.encode(pending_, /*parse_special =*/false);
        prompt_.tokens.insert(prompt_.tokens.end(), ids.begin(), ids.end());
        pending_.clear();
    }

  private:
    const Tokenizer & tok_;
    Prompt & prompt_;
    std::string pending_;
};

}  // namespace

std::vector<uint64_t> Prompt::position_keys() const {
    std::vector<uint64_t> keys(tokens.size(), 0);
    for (const Span & s : spans) {
        const uint64_t base = images[s.image].key;
        for (int32_t i = 0; i < n_query; ++i) {
            keys[s.begin + i] =
                ((base * 1099511628211ULL) ^ ((static_cast<uint64_t>(s.slice) << 32) | static_cast<uint32_t>(i))) | 1;
        }
    }
    return keys;
}

Prompt token_prompt(std::vector<int32_t> tokens) {
    Prompt p;
    p.tokens = std::move(tokens);
    return p;
}

Prompt chatml_prompt(const Tokenizer & tokenizer, const std::vector<ChatTurn> & turns, std::vector<RgbImage> images,
                     const PromptOptions & options) {
    if (turns.empty()) throw Error(ErrorCode::invalid_argument, "the conversation is empty");
    validate(options.slicing);
    const int32_t im_start = marker(tokenizer, "<|im_start|>");
    const int32_t im_end = marker(tokenizer, "<|im_end|>");

    Prompt prompt;
    prompt.n_query = options.n_query;
    prompt.slicing = options.slicing;
    PromptWriter w(tokenizer, prompt);
    int32_t next_image = 0;

    auto emit_image = [&](int32_t index) {
        if (index != next_image || index >= static_cast<int32_t>(images.size())) {
            throw Error(ErrorCode::invalid_argument,
                        "image " + std::to_string(index) + " is referenced out of order or does not exist");
        }
        ++next_image;
        RgbImage & image = images[index];
        SlicePlan plan = plan_slices(image.size(), options.slicing);
        const int32_t unk = marker(tokenizer, "<unk>");
        if (options.use_image_id) {
            w.special(marker(tokenizer, "<image_id>"));
            w.text(std::to_string(index));
            w.special(marker(tokenizer, "</image_id>"));
        }
        w.special(marker(tokenizer, "<image>"));
        w.embeddings(index, 0, options.n_query, unk);
        w.special(marker(tokenizer, "</image>"));
        if (plan.slices) {
            const Grid g = plan.slices->grid;
            for (int32_t r = 0; r < g.rows; ++r) {
                if (r > 0) w.text("\n");
                for (int32_t c = 0; c < g.cols; ++c) {
                    w.special(marker(tokenizer, "<slice>"));
                    w.embeddings(index, 1 + r * g.cols + c, options.n_query, unk);
                    w.special(marker(tokenizer, "</slice>"));
                }
            }
        }
        prompt.images.push_back({std::move(image), plan, 0});
        prompt.images.back().key = image_key(prompt.images.back().image, plan);
    };

    auto emit_turn = [&](const std::string & role, const std::vector<ChatPart> & parts) {
        w.special(im_start);
        w.text(role + "\n");
        for (size_t i = 0; i < parts.size(); ++i) {
            if (i > 0) w.text("\n");
            if (parts[i].image >= 0) {
                emit_image(parts[i].image);
            } else {
                w.text(parts[i].text);
            }
        }
        w.special(im_end);
        w.text("\n");
    };

    if (turns.front().role != "system") emit_turn("system", {{kDefaultSystemPrompt, -1}});
    for (size_t i = 0; i < turns.size(); ++i) {
        const std::string & role = turns[i].role;
        if (role == "system" && i != 0) {
            throw Error(ErrorCode::invalid_argument, "message " + std::to_string(i) + ": a system turn may only come first");
        }
        if (role != "system" && role != "user" && role != "assistant") {
            throw Error(ErrorCode::invalid_argument,
                        "message " + std::to_string(i) + ": unknown role '" + role + "' (expected user or assistant)");
        }
        emit_turn(role, turns[i].parts);
    }
    if (next_image != static_cast<int32_t>(images.size())) {
        throw Error(ErrorCode::invalid_argument,
                    std::to_string(images.size() - next_image) + " image(s) are not referenced by any message");
    }
    if (options.add_generation_prompt) {
        w.special(im_start);
        w.text("assistant\n");
    }
    w.flush();
    return prompt;
}

}  // namespace minicpmv
