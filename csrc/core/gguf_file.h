// A GGUF file opened for reading: metadata through gguf.h, tensor data memory-mapped.
// Every accessor checks the key's type first, because gguf.h aborts on a type mismatch.
// A file truncated while mapped would kill the process with SIGBUS at the next read of a lost page:
// a handler gives such reads zero pages instead and check_intact() then refuses the mapping.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

struct ggml_context;
struct ggml_tensor;
struct gguf_context;

namespace minicpmv {

class GgufFile {
  public:
    // Throws Error(io) when the file cannot be opened, Error(bad_format) when it is not a complete GGUF.
    explicit GgufFile(const std::string & path);
    ~GgufFile();
    GgufFile(const GgufFile &) = delete;
    GgufFile & operator=(const GgufFile &) = delete;

    const std::string & path() const { return path_; }
    bool has(const char * key) const;
    std::string get_string(const char * key) const;
    uint32_t get_u32(const char * key) const;  // accepts any integer type that fits
    // A model size (layers, widths, heads, patch side...): an integer from 1 to 2^24, else Error(bad_format).
    int32_t get_size(const char * key) const;
    float get_f32(const char * key) const;
    bool get_bool(const char * key, bool fallback) const;
    std::vector<std::string> get_strings(const char * key) const;
    std::vector<int32_t> get_i32s(const char * key) const;

    // Tensor metadata (no data) by name; nullptr when absent.
    ggml_tensor * tensor(const char * name) const;
    std::vector<ggml_tensor *> tensors() const;
    // The bytes of a tensor inside the mapping.
    const void * tensor_data(const ggml_tensor * t) const;
    void * mapping() const { return map_; }
    size_t mapping_size() const { return map_size_; }
    // Throws Error(io) once the file was truncated or rewritten since it was opened (a page lost to
    // truncation, or another size or modification time): whatever was computed from the mapping since
    // may be wrong. Call it after each computation that read the mapping.
    void check_intact() const;

  private:
    void release();

    std::string path_;
    gguf_context * gguf_ = nullptr;
    ggml_context * meta_ = nullptr;
    void * map_ = nullptr;
    size_t map_size_ = 0;
    int fd_ = -1;  // kept open to see changes of the file it maps (not of whatever the path names later)
    int64_t mtime_ns_ = 0;
    int guard_ = -1;  // the SIGBUS handler's slot for this mapping, -1 if none was free
    size_t data_offset_ = 0;
};

}  // namespace minicpmv
