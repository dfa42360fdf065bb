#include "model/model.h"

#include "core/backend.h"
#include "core/error.h"
#include "core/gguf_file.h"
#include "core/gguf_keys.h"
#include "core/log.h"
#include "core/model_weights.h"
#include "model/vision_model.h"
#include "text/tokenizer.h"

#include <chrono>

namespace minicpmv {

namespace {

double seconds_since(std::chrono::steady_clock::time_point t0) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

ModelParams default_model_params() { return ModelParams{}; }

Model::Model(const std::string & llm_path, const std::string & mmproj_path, const ModelParams & params) {
    route_ggml_log();
    const auto t0 = std::chrono::steady_clock::now();
    file_ = std::make_unique<GgufFile>(llm_path);
    config_ = read_llm_config(*file_);
    const std::string tok_model = file_->get_string(keys::tokenizer_model);
    if (tok_model != "gpt2") {
        throw Error(ErrorCode::bad_format,
                    llm_path + ": tokenizer model is '" + tok_model + "', expected 'gpt2' (byte-level BPE)");
    }
    tokenizer_ =
        std::make_unique<Tokenizer>(file_->get_strings(keys::tokenizer_tokens), file_->get_strings(keys::tokenizer_merges),
                                    file_->get_i32s(keys::tokenizer_token_type));
    // Generation ends on either ChatML terminator (docs/model.md §3); ids come from the vocabulary, by text.
    for (const char * text : {"<|im_end|>", "<|endoftext|>"}) {
        const int32_t id = tokenizer_->find(text);
        if (id < 0) throw Error(ErrorCode::bad_format, llm_path + ": the vocabulary has no '" + text + "' token");
        stop_ids_.push_back(id);
    }
    device_ = select_device(params.device);
    auto tensors = [&](DecoderWeights & d, const TensorVisitor & visit) {
        for_each_decoder_tensor(config_, d, visit);
    };
    weights_ =
        std::make_unique<Weights>(*file_, weight_table<DecoderWeights>(tensors), device_, params.cpu_repack, params.use_mmap);
    decoder_ = bind_weights<DecoderWeights>(*weights_, tensors);
    decoder_.cpu_kernels = ggml_backend_dev_type(device_) == GGML_BACKEND_DEVICE_TYPE_CPU;
    log_message(LogLevel::info,
                "%s: qwen2, %d layers, width %d, %d tokens in the vocabulary, %.1f MB of weights on %s (%s), %.2f s",
                llm_path.c_str(), config_.n_layer, config_.n_embd, config_.n_vocab, weights_->size_bytes() / 1e6,
                ggml_backend_dev_name(device_), params.use_mmap ? "mapped" : "copied", seconds_since(t0));
    if (!mmproj_path.empty()) {
        const auto t1 = std::chrono::steady_clock::now();
        vision_ = std::make_unique<VisionModel>(mmproj_path, device_, config_.n_embd, params.cpu_repack, params.use_mmap);
        log_message(LogLevel::info, "%s: SigLIP %d layers, width %d, resampler %d queries, %.1f MB of weights, %.2f s",
                    mmproj_path.c_str(), vision_->config().n_layer, vision_->config().n_embd, vision_->config().n_query,
                    vision_->weights_bytes() / 1e6, seconds_since(t1));
    }
}

Model::~Model() = default;

void Model::check_files() const {
    weights_->check_intact();
    if (vision_) vision_->check_file();
}

size_t Model::weights_bytes() const { return weights_->size_bytes() + (vision_ ? vision_->weights_bytes() : 0); }

}  // namespace minicpmv
