#include "model/model.h"

#include "core/backend.h"
#include "core/error.h"
#include "core/gguf_file.h"
#include "core/gguf_keys.h"
#include "core/model_weights.h"
#include "text/tokenizer.h"
#include "model/vision_model.h"

namespace minicpmv {

ModelParams default_model_params() { return ModelParams{}; }

Model::Model(const std::string & llm_path, const std::string & mmproj_path, const ModelParams & params) {
    file_ = std::make_unique<GgufFile>(llm_path);
    config_ = read_llm_config(*file_);
    const std::string tok_model = file_->get_string(keys::tokenizer_model);
    if (tok_model != "gpt2") {
        throw Error(ErrorCode::bad_format, llm_path + ": tokenizer model is '" + tok_model + "', expected 'gpt2' (byte-level BPE)");
    }
    tokenizer_ = std::make_unique<Tokenizer>(file_->get_strings(keys::tokenizer_tokens), file_->get_strings(keys::tokenizer_merges),
                                             file_->get_i32s(keys::tokenizer_token_type));
    // Generation ends on either ChatML terminator (spec §3); ids come from the vocabulary, by text.
    for (const char * text : {"<|im_end|>", "<|endoftext|>"}) {
        const int32_t id = tokenizer_->find(text);
        if (id < 0) throw Error(ErrorCode::bad_format, llm_path + ": the vocabulary has no '" + text + "' token");
        stop_ids_.push_back(id);
    }
    device_ = select_device(params.device);
    weights_ = std::make_unique<Weights>(*file_, decoder_weight_table(config_), device_, params.cpu_repack, params.use_mmap);
    decoder_ = bind_decoder_weights(*weights_, config_);
    if (!mmproj_path.empty()) vision_ = std::make_unique<VisionModel>(mmproj_path, device_, config_.n_embd, params.cpu_repack, params.use_mmap);
}

Model::~Model() = default;

size_t Model::weights_bytes() const { return weights_->size_bytes() + (vision_ ? vision_->weights_bytes() : 0); }

}  // namespace minicpmv
