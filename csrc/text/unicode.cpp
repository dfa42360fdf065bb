#include "text/unicode.h"

#include "core/error.h"

#include <algorithm>
#include <array>
#include <cstdio>
#include <iterator>
#include <vector>

namespace minicpmv {

namespace {

struct ClassRange {
    char32_t lo, hi;
    uint8_t value;
};
struct CodepointRange {
    char32_t lo, hi;
};
struct Decomposition {
    char32_t cp, first, second;  // second is 0 for a singleton
};
struct Composition {
    char32_t first, second, composite;
};

#include "text/unicode_tables.inc"

// Hangul syllables decompose and compose by arithmetic (Unicode §3.12).
constexpr char32_t kHangulS = 0xAC00, kHangulL = 0x1100, kHangulV = 0x1161, kHangulT = 0x11A7;
constexpr char32_t kHangulLCount = 19, kHangulVCount = 21, kHangulTCount = 28;
constexpr char32_t kHangulNCount = kHangulVCount * kHangulTCount, kHangulSCount = kHangulLCount * kHangulNCount;

// Below U+0300 every code point has combining class 0, passes the NFC quick check and, in ASCII, has a
// class known from a short table; the common case never reaches a binary search.
constexpr char32_t kFirstCombining = 0x300;

constexpr std::array<uint8_t, 128> ascii_classes() {
    std::array<uint8_t, 128> t{};
    for (char32_t c = 0; c < 128; ++c) {
        t[c] = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ? kCodepointLetter
               : (c >= '0' && c <= '9')                         ? kCodepointNumber
               : (c == ' ' || (c >= '\t' && c <= '\r'))         ? kCodepointSpace
                                                                : 0;
    }
    return t;
}

template <typename Row, size_t N>
const Row * find_range(const Row (&rows)[N], char32_t cp) {
    const Row * it = std::upper_bound(rows, rows + N, cp, [](char32_t c, const Row & r) { return c < r.lo; });
    return it != rows && cp <= std::prev(it)->hi ? std::prev(it) : nullptr;
}

uint8_t combining_class(char32_t cp) {
    if (cp < kFirstCombining) {
        return 0;
    }
    const ClassRange * r = find_range(kCombiningClassRanges, cp);
    return r ? r->value : 0;
}

bool quick_check_fails(char32_t cp) { return cp >= kFirstCombining && find_range(kNfcQuickCheckRanges, cp) != nullptr; }

// UAX #15 quick check: true when the text is certainly in NFC already.
bool is_nfc_quick(const std::u32string & cps) {
    uint8_t last = 0;
    for (char32_t cp : cps) {
        const uint8_t ccc = combining_class(cp);
        if ((ccc != 0 && last > ccc) || quick_check_fails(cp)) {
            return false;
        }
        last = ccc;
    }
    return true;
}

void decompose(char32_t cp, std::u32string & out) {
    if (cp >= kHangulS && cp < kHangulS + kHangulSCount) {
        const char32_t s = cp - kHangulS;
        out.push_back(kHangulL + s / kHangulNCount);
        out.push_back(kHangulV + s % kHangulNCount / kHangulTCount);
        if (s % kHangulTCount != 0) {
            out.push_back(kHangulT + s % kHangulTCount);
        }
        return;
    }
    if (cp >= kDecompositions[0].cp) {
        const Decomposition * end = std::end(kDecompositions);
        const Decomposition * d =
            std::lower_bound(std::begin(kDecompositions), end, cp, [](const Decomposition & r, char32_t c) { return r.cp < c; });
        if (d != end && d->cp == cp) {
            decompose(d->first, out);
            if (d->second != 0) {
                decompose(d->second, out);
            }
            return;
        }
    }
    out.push_back(cp);
}

// The primary composite of a starter and the character after it, or 0.
char32_t compose(char32_t first, char32_t second) {
    if (first >= kHangulL && first < kHangulL + kHangulLCount && second >= kHangulV && second < kHangulV + kHangulVCount) {
        return kHangulS + ((first - kHangulL) * kHangulVCount + (second - kHangulV)) * kHangulTCount;
    }
    if (first >= kHangulS && first < kHangulS + kHangulSCount && (first - kHangulS) % kHangulTCount == 0 && second > kHangulT &&
        second < kHangulT + kHangulTCount) {
        return first + (second - kHangulT);
    }
    const Composition * end = std::end(kCompositions);
    const Composition * c = std::lower_bound(std::begin(kCompositions), end, std::make_pair(first, second),
                                             [](const Composition & r, const std::pair<char32_t, char32_t> & k) {
                                                 return r.first != k.first ? r.first < k.first : r.second < k.second;
                                             });
    return c != end && c->first == first && c->second == second ? c->composite : 0;
}

[[noreturn]] void invalid_utf8(std::string_view text, size_t offset) {
    char byte[8];
    std::snprintf(byte, sizeof(byte), "0x%02X", static_cast<unsigned>(static_cast<unsigned char>(text[offset])));
    throw Error(ErrorCode::invalid_argument, "text is not valid UTF-8: bad sequence starting with byte " + std::string(byte) +
                                                 " at offset " + std::to_string(offset));
}

}  // namespace

uint8_t codepoint_class(char32_t cp) {
    static constexpr std::array<uint8_t, 128> kAscii = ascii_classes();
    if (cp < 128) {
        return kAscii[cp];
    }
    const ClassRange * r = find_range(kClassRanges, cp);
    return r ? r->value : 0;
}

namespace {

// The UTF-8 sequence at s[i]: true with its length and code point when well formed (no overlong
// forms, surrogates or values past U+10FFFF); false with the length of its maximal subpart (the
// longest prefix that could still begin a valid sequence, at least 1), Unicode's unit of replacement.
bool next_sequence(const unsigned char * s, size_t i, size_t n, size_t & length, char32_t & cp) {
    const unsigned char b = s[i];
    length = 1;
    cp = b;
    if (b < 0x80) return true;
    const size_t len = b >= 0xC2 && b <= 0xDF ? 2 : b >= 0xE0 && b <= 0xEF ? 3 : b >= 0xF0 && b <= 0xF4 ? 4 : 0;
    if (len == 0) return false;
    // The second byte's range excludes overlong forms (E0, F0), surrogates (ED) and > U+10FFFF (F4).
    const unsigned char lo = b == 0xE0 ? 0xA0 : b == 0xF0 ? 0x90 : 0x80;
    const unsigned char hi = b == 0xED ? 0x9F : b == 0xF4 ? 0x8F : 0xBF;
    cp = b & (0x7F >> len);
    for (size_t k = 1; k < len; ++k) {
        if (i + k >= n) return false;
        const unsigned char c = s[i + k];
        if (c < (k == 1 ? lo : 0x80) || c > (k == 1 ? hi : 0xBF)) return false;
        cp = (cp << 6) | (c & 0x3F);
        length = k + 1;
    }
    return true;
}

// f(offset, length, code point, valid) for each sequence of `text` in order, an ill-formed part as
// its maximal subpart.
template <class F>
void for_each_sequence(std::string_view text, F && f) {
    const auto * s = reinterpret_cast<const unsigned char *>(text.data());
    for (size_t i = 0, length = 0; i < text.size(); i += length) {
        char32_t cp;
        const bool valid = next_sequence(s, i, text.size(), length, cp);
        f(i, length, cp, valid);
    }
}

}  // namespace

std::u32string utf8_to_codepoints(std::string_view text) {
    std::u32string out;
    out.reserve(text.size());
    for_each_sequence(text, [&](size_t offset, size_t, char32_t cp, bool valid) {
        if (!valid) invalid_utf8(text, offset);
        out.push_back(cp);
    });
    return out;
}

std::string utf8_replace_invalid(std::string_view text) {
    std::string out;
    out.reserve(text.size());
    for_each_sequence(text, [&](size_t offset, size_t length, char32_t, bool valid) {
        out.append(valid ? text.substr(offset, length) : std::string_view("\xEF\xBF\xBD"));  // U+FFFD
    });
    return out;
}

void append_utf8(std::string & out, char32_t cp) {
    if (cp < 0x80) {
        out.push_back(static_cast<char>(cp));
    } else if (cp < 0x800) {
        out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
        out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    } else if (cp < 0x10000) {
        out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
        out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
        out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    } else {
        out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
        out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
        out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
        out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    }
}

void nfc_normalize(std::u32string & cps) {
    std::u32string d;
    d.reserve(cps.size() + cps.size() / 2);
    for (char32_t cp : cps) {
        decompose(cp, d);
    }

    // Canonical ordering: a stable sort of each run of non-starters by combining class.
    std::vector<uint8_t> ccc(d.size());
    for (size_t i = 0; i < d.size(); ++i) {
        ccc[i] = combining_class(d[i]);
        for (size_t j = i; j > 0 && ccc[j] != 0 && ccc[j - 1] > ccc[j]; --j) {
            std::swap(ccc[j], ccc[j - 1]);
            std::swap(d[j], d[j - 1]);
        }
    }

    // Canonical composition: each character joins the last starter unless something between blocks it,
    // i.e. an uncomposed character of the same or a higher class (a starter always blocks).
    cps.clear();
    size_t starter = std::u32string::npos;
    int last_ccc = -1;  // class of the last uncomposed character after the starter; -1: none yet
    for (size_t i = 0; i < d.size(); ++i) {
        if (starter != std::u32string::npos && (last_ccc < 0 || last_ccc < ccc[i])) {
            if (const char32_t c = compose(cps[starter], d[i])) {
                cps[starter] = c;
                continue;
            }
        }
        if (ccc[i] == 0) {
            starter = cps.size();
            last_ccc = -1;
        } else {
            last_ccc = ccc[i];
        }
        cps.push_back(d[i]);
    }
}

std::string utf8_nfc(std::string_view text) {
    if (std::all_of(text.begin(), text.end(), [](char c) { return static_cast<unsigned char>(c) < 0x80; })) {
        return std::string(text);
    }
    std::u32string cps = utf8_to_codepoints(text);
    if (is_nfc_quick(cps)) {
        return std::string(text);
    }
    nfc_normalize(cps);
    std::string out;
    out.reserve(text.size());
    for (char32_t cp : cps) {
        append_utf8(out, cp);
    }
    return out;
}

}  // namespace minicpmv
