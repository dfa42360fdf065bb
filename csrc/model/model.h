// The loaded model: immutable after construction and shareable between sessions (docs/architecture.md §2).
// Owns the file mapping, the weights on the chosen device and the tokenizer, and the StepBatcher through
// which its sessions take turns on the device (its one mutable part, thread-safe).
#pragma once

#include "model/decoder.h"
#include "model/model_config.h"
#include "model/step_batcher.h"

#include <memory>
#include <string>
#include <vector>

#include <ggml-backend.h>

namespace minicpmv {

class GgufFile;
class Tokenizer;
class VisionModel;
class Weights;

struct ModelParams {
    std::string device = "auto";  // see select_device()
    // Quantized matrices in ggml's CPU_REPACK layout (faster CPU kernels). An "extra" buffer type, so
    // off by default: ggml's AMX extra type crashes on some CPUs, and extra types stay opt-in.
    bool cpu_repack = false;
    // Weights used in place from the file mapping (fast to load, pages shared between processes) or,
    // off, copied into memory the process allocates (on the CPU, ~10 % faster decoding; loading reads
    // the whole file). As llama.cpp's --no-mmap.
    bool use_mmap = true;
};

ModelParams default_model_params();

class Model {
  public:
    // Throws Error(io) for a missing/unreadable file, Error(bad_format) for anything that is not a
    // MiniCPM-V 2.6 (qwen2) LLM GGUF (or mmproj file), Error(unsupported) for an unknown device.
    // mmproj_path may be empty: a text-only model.
    Model(const std::string & llm_path, const std::string & mmproj_path, const ModelParams & params);
    ~Model();

    const LlmConfig & config() const { return config_; }
    const Tokenizer & tokenizer() const { return *tokenizer_; }
    const DecoderWeights & decoder() const { return decoder_; }
    ggml_backend_dev_t device() const { return device_; }
    const std::vector<int32_t> & stop_ids() const { return stop_ids_; }  // <|im_end|>, <|endoftext|>
    size_t weights_bytes() const;
    // The vision half, or nullptr without an mmproj file.
    const VisionModel * vision() const { return vision_.get(); }
    StepBatcher & steps() const { return steps_; }
    // Throws Error(io) when a file whose mapping holds weights (this LLM file, or the vision file) was
    // truncated or rewritten since loading; sessions call it after each graph (GgufFile::check_intact).
    void check_files() const;

  private:
    std::unique_ptr<GgufFile> file_;
    LlmConfig config_;
    std::unique_ptr<Tokenizer> tokenizer_;
    ggml_backend_dev_t device_ = nullptr;
    std::unique_ptr<Weights> weights_;
    DecoderWeights decoder_;
    std::vector<int32_t> stop_ids_;
    std::unique_ptr<VisionModel> vision_;
    mutable StepBatcher steps_;
};

}  // namespace minicpmv
