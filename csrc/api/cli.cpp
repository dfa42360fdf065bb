// minicpmv-cli: the native command line, on the same core as the Python binding.
//   minicpmv-cli -m model.gguf [--mmproj mmproj.gguf --image FILE ...] -p PROMPT [-n MAX_NEW] [--temp T]
//                [--top-k K] [--top-p P] [--repeat-penalty R] [--seed S] [--beams N] [-c N_CTX] [-t THREADS]
//                [--device NAME]
#include "api/image_file.h"
#include "core/error.h"
#include "generate/conversation.h"
#include "model/model.h"

#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <string>
#include <vector>

using namespace minicpmv;

namespace {

void usage() {
    std::fprintf(stderr,
                 "usage: minicpmv-cli -m MODEL.gguf [--mmproj MMPROJ.gguf --image FILE ...] -p PROMPT [-n MAX_NEW_TOKENS]\n"
                 "                    [--temp T] [--top-k K] [--top-p P] [--repeat-penalty R] [--seed S] [--beams N]\n"
                 "                    [-c N_CTX] [-t THREADS] [--device NAME]\n"
                 "       --image (repeatable) goes before the prompt in the message; it reads %s files\n"
                 "       --temp 0 is greedy decoding; --beams N is beam search (HF chat(sampling=False) uses 3)\n",
                 image_file_formats().c_str());
}

}  // namespace

int main(int argc, char ** argv) {
    std::string model_path, mmproj_path, prompt, device = default_model_params().device;
    std::vector<std::string> image_paths;
    GenerateParams gen = default_generate_params();
    SessionParams sp = default_session_params();
    bool penalty_set = false;
    try {
        for (int i = 1; i < argc; ++i) {
            const std::string a = argv[i];
            auto next = [&]() -> std::string {
                if (i + 1 >= argc) throw Error(ErrorCode::invalid_argument, "option " + a + " needs a value");
                return argv[++i];
            };
            if (a == "-m" || a == "--model")
                model_path = next();
            else if (a == "--mmproj")
                mmproj_path = next();
            else if (a == "--image")
                image_paths.push_back(next());
            else if (a == "-p" || a == "--prompt")
                prompt = next();
            else if (a == "-n" || a == "--max-new-tokens")
                gen.max_new_tokens = std::stoi(next());
            else if (a == "--temp")
                gen.sampling.temperature = std::stof(next());
            else if (a == "--top-k")
                gen.sampling.top_k = std::stoi(next());
            else if (a == "--top-p")
                gen.sampling.top_p = std::stod(next());
            else if (a == "--min-p")
                gen.sampling.min_p = std::stof(next());
            else if (a == "--repeat-penalty") {
                gen.sampling.repetition_penalty = gen.beam.repetition_penalty = std::stof(next());
                penalty_set = true;
            } else if (a == "--seed")
                gen.sampling.seed = std::stoull(next());
            else if (a == "--beams") {
                gen.beam_search = true;
                gen.beam.num_beams = std::stoi(next());
            } else if (a == "-c" || a == "--ctx-size")
                sp.n_ctx = std::stoi(next());
            else if (a == "-t" || a == "--threads")
                sp.n_threads = std::stoi(next());
            else if (a == "--device")
                device = next();
            else if (a == "-h" || a == "--help") {
                usage();
                return 0;
            } else
                throw Error(ErrorCode::invalid_argument, "unknown option '" + a + "'");
        }
        if (model_path.empty() || prompt.empty()) {
            usage();
            return 2;
        }
        if (!image_paths.empty() && mmproj_path.empty()) {
            throw Error(ErrorCode::invalid_argument, "--image needs the vision file: --mmproj MMPROJ.gguf");
        }
        if (!penalty_set) gen.beam.repetition_penalty = default_beam_search_params().repetition_penalty;
        // Images first: a bad file is reported before the model loads.
        std::vector<RgbImage> images;
        for (const std::string & path : image_paths) images.push_back(read_image_file(path));
        ModelParams mp = default_model_params();
        mp.device = device;
        Model model(model_path, mmproj_path, mp);
        Conversation conversation(model, sp);
        for (RgbImage & image : images) conversation.add_image(std::move(image));
        conversation.add_text(prompt);
        conversation.generate(gen, default_chat_options(), [](const std::string & piece) {
            std::fwrite(piece.data(), 1, piece.size(), stdout);
            std::fflush(stdout);
            return true;
        });
        std::fputc('\n', stdout);
        return 0;
    } catch (const Error & e) {
        std::fprintf(stderr, "minicpmv-cli: error: %s\n", e.what());
        return 2;
    } catch (const std::exception & e) {  // std::stoi and friends on a malformed number
        std::fprintf(stderr, "minicpmv-cli: error: bad option value (%s)\n", e.what());
        return 2;
    }
}
