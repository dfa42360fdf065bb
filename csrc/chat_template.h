// The ChatML prompt of spec §7, as the checkpoint's (Qwen2) chat template renders it:
// <|im_start|>{role}\n{content}<|im_end|>\n per turn, a default system turn when the first turn is not
// a system turn, and <|im_start|>assistant\n to open the reply.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace minicpmv {

class Tokenizer;

struct ChatTurn {
    std::string role;  // "system" (first turn only), "user" or "assistant"
    std::string content;
};

inline constexpr const char * kDefaultSystemPrompt = "You are a helpful assistant.";

// Markers are emitted as their special ids; the text between two markers is tokenized as one piece
// with special-token parsing off, so user text can never inject a marker. Throws
// Error(invalid_argument) on an empty conversation or a misplaced/unknown role.
std::vector<int32_t> chatml_prompt(const Tokenizer & tokenizer, const std::vector<ChatTurn> & turns,
                                   bool add_generation_prompt = true);

}  // namespace minicpmv
