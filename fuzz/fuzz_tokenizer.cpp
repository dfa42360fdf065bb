// The byte-level BPE tokenizer (text/tokenizer.cpp) with the micro preset's vocabulary. Text that
// encodes must decode to its NFC form, with or without special-token parsing; the first byte chooses
// that, or reads the rest as token ids to decode.
#include "core/error.h"
#include "fuzz_input.h"
#include "model/model.h"
#include "text/tokenizer.h"
#include "text/unicode.h"

#include <cstring>
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
    const Tokenizer & tokenizer = micro->tokenizer();
    const std::string_view text(reinterpret_cast<const char *>(data + 1), size - 1);
    try {
        if (data[0] % 3 == 2) {
            std::vector<int32_t> ids((size - 1) / 4);
            for (size_t i = 0; i < ids.size(); ++i) std::memcpy(&ids[i], data + 1 + 4 * i, 4);
            tokenizer.decode(ids);
            return 0;
        }
        const std::vector<int32_t> ids = tokenizer.encode(text, /*parse_special =*/data[0] % 3 == 1);
        if (tokenizer.decode(ids) != utf8_nfc(text)) std::abort();  // lost or changed text
    } catch (const Error &) {
        // Refused with a message: what bad input must get.
    }
    return 0;
}
