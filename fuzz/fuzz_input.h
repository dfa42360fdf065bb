// What the fuzz targets share: the fuzz bytes as a file (the loaders and decoders read paths), and the
// micro model that make_corpus.py writes beside the targets.
#pragma once

#include <sys/mman.h>
#include <unistd.h>

#include "model/model.h"

#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string>

namespace minicpmv::fuzz {

// The bytes in an anonymous memory file, read through /proc/self/fd as any path; closed on destruction.
class InputFile {
  public:
    InputFile(const uint8_t * data, size_t size) : fd_(memfd_create("fuzz-input", 0)) {
        if (fd_ < 0 || write(fd_, data, size) != static_cast<ssize_t>(size)) std::abort();
    }
    ~InputFile() { close(fd_); }
    InputFile(const InputFile &) = delete;
    InputFile & operator=(const InputFile &) = delete;

    std::string path() const { return "/proc/self/fd/" + std::to_string(fd_); }

  private:
    int fd_;
};

// <directory of the target>/micro/<name>: the synthetic micro preset, converted by make_corpus.py.
inline std::string micro_file(const char * argv0, const char * name) {
    const std::string self(argv0);
    const size_t slash = self.rfind('/');
    return (slash == std::string::npos ? std::string(".") : self.substr(0, slash)) + "/micro/" + name;
}

// The micro preset's LLM file as a Model: the vocabulary of the tokenizer and prompt targets.
inline std::unique_ptr<Model> micro_model(const char * argv0) {
    return std::make_unique<Model>(micro_file(argv0, "llm.gguf"), "", default_model_params());
}

}  // namespace minicpmv::fuzz
