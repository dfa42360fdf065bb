// The GGUF reader, the weight table checks and the config validation (docs/architecture.md §5), as the
// real loader runs them: the bytes are loaded as a language model, then as the vision file of the
// micro language model. A model that loads also answers one token (with an image when it has the
// vision file), so values that pass the checks but break a graph are found too.
#include "core/error.h"
#include "fuzz_input.h"
#include "generate/conversation.h"
#include "model/model.h"

using namespace minicpmv;

namespace {

std::string micro_llm;

void reply(const std::string & llm, const std::string & mmproj) {
    const Model model(llm, mmproj, default_model_params());
    SessionParams sp = default_session_params();
    sp.n_ctx = 128;
    sp.n_threads = 1;
    Conversation conversation(model, sp);
    if (!mmproj.empty()) conversation.add_image(RgbImage(Size{30, 20}));
    conversation.add_text("Hello");
    GenerateParams gp = default_generate_params();
    gp.max_new_tokens = 1;
    conversation.generate(gp, default_chat_options());
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int * /*argc*/, char *** argv) {
    micro_llm = fuzz::micro_file((*argv)[0], "llm.gguf");
    return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t * data, size_t size) {
    const fuzz::InputFile file(data, size);
    for (const auto & [llm, mmproj] : {std::pair{file.path(), std::string()}, std::pair{micro_llm, file.path()}}) {
        try {
            reply(llm, mmproj);
        } catch (const Error &) {
            // Refused with a message: what bad input must get.
        }
    }
    return 0;
}
