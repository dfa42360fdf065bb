// UTF-8 and the little of Unicode the tokenizer needs (docs/model.md §3): the classes its pre-tokenizer regex
// asks about and NFC normalisation. The data is generated from Python's unicodedata
// (csrc/tools/gen_unicode_tables.py), the same source the reference tokenizer normalises with.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace minicpmv {

// Bit flags: \p{L}, \p{N} and \s (the White_Space property, which is what \s means in the reference regex).
enum CodepointClass : uint8_t {
    kCodepointLetter = 1,
    kCodepointNumber = 2,
    kCodepointSpace = 4,
};

uint8_t codepoint_class(char32_t cp);

// Strict UTF-8 (no overlong forms, surrogates or values past U+10FFFF); throws Error(invalid_argument)
// naming the byte offset of the first bad sequence.
std::u32string utf8_to_codepoints(std::string_view text);
// `text` with each ill-formed part replaced by U+FFFD, one per maximal subpart (Unicode's recommended
// practice, and Python's bytes.decode("utf-8", "replace")): what a reply cut inside a character reads as.
std::string utf8_replace_invalid(std::string_view text);
void append_utf8(std::string & out, char32_t cp);

// Canonical decomposition, canonical ordering, canonical composition (UAX #15), in place.
void nfc_normalize(std::u32string & cps);

// Validates `text` as UTF-8 and returns its NFC form; text already in NFC (the usual case) is copied as is.
std::string utf8_nfc(std::string_view text);

}  // namespace minicpmv
