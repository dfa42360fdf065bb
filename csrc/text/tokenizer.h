// The Qwen2 byte-level BPE tokenizer (docs/model.md §3), built from the GGUF tokenizer arrays (docs/model.md §9).
// Immutable after construction, so one instance can serve many threads.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace minicpmv {

class Tokenizer {
  public:
    // tokens: `tokenizer.ggml.tokens`; BPE tokens in the GPT-2 byte-to-unicode form, added tokens
    //   (<|im_start|>, <image>, ...) as their plain text.
    // merges: `tokenizer.ggml.merges`, "left right" in the byte-to-unicode form, by rank.
    // types: `tokenizer.ggml.token_type` (1 normal, 3 control, 4 user-defined, 5 unused, ...); control
    //   and user-defined tokens are the special ones that encode(parse_special = true) matches as text.
    // Throws Error(invalid_argument) naming the offending entry when the three lists do not fit together.
    Tokenizer(std::vector<std::string> tokens, const std::vector<std::string> & merges, std::vector<int32_t> types);

    // NFC, then the pre-tokenizer regex, then BPE on each piece. With parse_special, special token texts
    // (longest first) become their ids and only the text between them is split. Throws
    // Error(invalid_argument) for text that is not UTF-8.
    std::vector<int32_t> encode(std::string_view utf8, bool parse_special) const;
    // The concatenated bytes of the tokens, specials as their text. Throws Error(invalid_argument) on an
    // id outside [0, n_vocab).
    std::string decode(const std::vector<int32_t> & ids) const;
    // The raw bytes of one token, which may be part of a UTF-8 sequence (streaming joins them).
    std::string token_bytes(int32_t id) const;
    // The id of the token whose text (as stored in the GGUF) is exactly `token_text`, or -1.
    int32_t find(std::string_view token_text) const;
    int32_t n_vocab() const { return static_cast<int32_t>(texts_.size()); }

  private:
    struct Merge {
        uint64_t pair;  // left id << 32 | right id; all ones marks an empty slot
        int32_t rank;
        int32_t result;
    };
    // Open-addressing hash index from a string to an id; the strings live in texts_ or bytes_. A slot
    // keeps part of its key's hash, so most probes that miss never touch the string.
    struct StringIndex {
        struct Slot {
            int32_t id;  // -1 for empty
            uint32_t tag;
        };
        std::vector<Slot> slots;
        void build(const std::vector<std::string> & keys, const std::vector<bool> & include);
        int32_t find(const std::vector<std::string> & keys, std::string_view key) const;
    };

    struct BpeScratch;  // buffers one encode() call reuses across its pieces
    const Merge * find_merge(int32_t left, int32_t right) const;
    void encode_text(std::string_view text, BpeScratch & scratch, std::vector<int32_t> & out) const;
    void encode_piece(std::string_view piece, BpeScratch & scratch, std::vector<int32_t> & out) const;
    void check_id(int32_t id) const;

    std::vector<std::string> texts_;  // as given
    std::vector<std::string> bytes_;  // what each token stands for, byte-to-unicode undone for BPE tokens
    StringIndex by_text_;
    StringIndex by_bytes_;                 // BPE tokens only
    std::vector<Merge> merges_;            // open-addressing table keyed by Merge::pair
    std::array<int32_t, 256> byte_ids_{};  // the single-byte token of each byte
    std::vector<int32_t> specials_;        // control and user-defined ids, longest text first
    std::array<bool, 256> special_first_byte_{};
};

}  // namespace minicpmv
