#include "chat_template.h"

#include "error.h"
#include "tokenizer.h"

namespace minicpmv {

namespace {

int32_t marker(const Tokenizer & tokenizer, const char * text) {
    const int32_t id = tokenizer.find(text);
    if (id < 0) throw Error(ErrorCode::bad_format, std::string("the vocabulary has no '") + text + "' token");
    return id;
}

void append(std::vector<int32_t> & out, const std::vector<int32_t> & ids) { out.insert(out.end(), ids.begin(), ids.end()); }

}  // namespace

std::vector<int32_t> chatml_prompt(const Tokenizer & tokenizer, const std::vector<ChatTurn> & turns,
                                   bool add_generation_prompt) {
    if (turns.empty()) throw Error(ErrorCode::invalid_argument, "the conversation is empty");
    const int32_t im_start = marker(tokenizer, "<|im_start|>");
    const int32_t im_end = marker(tokenizer, "<|im_end|>");

    std::vector<int32_t> out;
    auto emit = [&](const std::string & role, const std::string & content) {
        out.push_back(im_start);
        append(out, tokenizer.encode(role + "\n" + content, /*parse_special =*/false));
        out.push_back(im_end);
        append(out, tokenizer.encode("\n", false));
    };
    if (turns.front().role != "system") emit("system", kDefaultSystemPrompt);
    for (size_t i = 0; i < turns.size(); ++i) {
        const std::string & role = turns[i].role;
        if (role == "system" && i != 0) {
            throw Error(ErrorCode::invalid_argument, "message " + std::to_string(i) + ": a system turn may only come first");
        }
        if (role != "system" && role != "user" && role != "assistant") {
            throw Error(ErrorCode::invalid_argument, "message " + std::to_string(i) + ": unknown role '" + role +
                                                         "' (expected user or assistant)");
        }
        emit(role, turns[i].content);
    }
    if (add_generation_prompt) {
        out.push_back(im_start);
        append(out, tokenizer.encode("assistant\n", false));
    }
    return out;
}

}  // namespace minicpmv
