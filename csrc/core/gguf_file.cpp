#include "core/gguf_file.h"

#include "core/error.h"

#include <ggml.h>
#include <gguf.h>

#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <mutex>

namespace minicpmv {

namespace {

[[noreturn]] void bad_format(const std::string & path, const std::string & what) {
    throw Error(ErrorCode::bad_format, path + ": " + what);
}

// Reads the header's fields in order; any read past the end is a truncated file.
class HeaderCursor {
  public:
    HeaderCursor(const void * data, size_t size, const std::string & path)
        : p_(static_cast<const uint8_t *>(data)), size_(size), path_(path) {}

    uint64_t u64() { return read<uint64_t>(); }
    uint32_t u32() { return read<uint32_t>(); }
    void skip(uint64_t n) {
        if (n > size_ - pos_) bad_format(path_, "malformed or truncated GGUF header");
        pos_ += n;
    }
    std::string string() {
        const uint64_t n = u64();
        skip(n);
        return std::string(reinterpret_cast<const char *>(p_ + pos_ - n), n);
    }
    // Bytes left: a count of entries larger than this cannot be real.
    uint64_t left() const { return size_ - pos_; }

  private:
    template <typename T>
    T read() {
        skip(sizeof(T));
        T v;
        std::memcpy(&v, p_ + pos_ - sizeof(T), sizeof v);
        return v;
    }

    const uint8_t * p_;
    size_t size_;
    size_t pos_ = 0;
    const std::string & path_;
};

// Walks the header up to the tensor descriptions and refuses what ggml's parser does not survive: an
// empty key (it asserts) and a zero dimension (it divides by it, SIGFPE, before it checks anything
// else). The rest (types, sizes, offsets) ggml checks and reports.
void check_tensor_dims(const void * data, size_t size, const std::string & path) {
    HeaderCursor c(data, size, path);
    c.skip(4);  // magic
    const uint32_t version = c.u32();
    if (version != 2 && version != 3) return;  // ggml refuses these itself
    const uint64_t n_tensors = c.u64(), n_kv = c.u64();
    if (n_tensors > c.left() || n_kv > c.left()) bad_format(path, "malformed GGUF header (impossible counts)");
    auto skip_value = [&](uint32_t type) {
        switch (type) {
            case GGUF_TYPE_UINT8:
            case GGUF_TYPE_INT8:
            case GGUF_TYPE_BOOL: c.skip(1); break;
            case GGUF_TYPE_UINT16:
            case GGUF_TYPE_INT16: c.skip(2); break;
            case GGUF_TYPE_UINT32:
            case GGUF_TYPE_INT32:
            case GGUF_TYPE_FLOAT32: c.skip(4); break;
            case GGUF_TYPE_UINT64:
            case GGUF_TYPE_INT64:
            case GGUF_TYPE_FLOAT64: c.skip(8); break;
            case GGUF_TYPE_STRING: c.skip(c.u64()); break;
            default: bad_format(path, "malformed GGUF header (value type " + std::to_string(type) + ")");
        }
    };
    for (uint64_t i = 0; i < n_kv; ++i) {
        const uint64_t key_length = c.u64();
        if (key_length == 0) bad_format(path, "malformed GGUF header (an empty key)");  // ggml asserts
        c.skip(key_length);
        const uint32_t type = c.u32();
        if (type != GGUF_TYPE_ARRAY) {
            skip_value(type);
            continue;
        }
        const uint32_t element = c.u32();
        const uint64_t n = c.u64();
        if (n > c.left()) bad_format(path, "malformed GGUF header (array of " + std::to_string(n) + " values)");
        for (uint64_t j = 0; j < n; ++j) skip_value(element);
    }
    for (uint64_t i = 0; i < n_tensors; ++i) {
        const std::string name = c.string();
        const uint32_t n_dims = c.u32();
        if (n_dims > GGML_MAX_DIMS) return;  // ggml refuses it
        for (uint32_t d = 0; d < n_dims; ++d) {
            if (c.u64() == 0) bad_format(path, "tensor '" + name + "' has a zero dimension");
        }
        c.skip(4 + 8);  // type, offset
    }
}

// The mappings the SIGBUS handler may repair: a fixed table, because a signal handler can neither lock
// nor allocate. A slot is free while its `end` is 0.
struct GuardedMapping {
    std::atomic<uintptr_t> begin{0};
    std::atomic<uintptr_t> end{0};
    std::atomic<bool> lost{false};
};
constexpr int kGuardSlots = 64;
GuardedMapping g_guarded[kGuardSlots];
std::mutex g_guard_mutex;  // taken by guard_mapping/unguard_mapping, never by the handler
struct sigaction g_previous{};
// Read before the handler is installed: sysconf is not on POSIX's list of async-signal-safe calls.
const uintptr_t g_page_size =
    static_cast<uintptr_t>(sysconf(_SC_PAGESIZE));  // the handler ours chains to for faults outside our mappings

// A read of a mapped page that truncation removed: map zero pages over the rest of that mapping (the
// read resumes and later reads do not fault again) and mark it lost for check_intact(). Any other
// SIGBUS goes to the previous handler, or kills the process as it would have.
void on_sigbus(int sig, siginfo_t * info, void * context) {
    const uintptr_t addr = reinterpret_cast<uintptr_t>(info->si_addr);
    for (GuardedMapping & g : g_guarded) {
        const uintptr_t begin = g.begin.load(), end = g.end.load();
        if (end == 0 || addr < begin || addr >= end) continue;
        const uintptr_t page = addr & ~(g_page_size - 1);
        if (mmap(reinterpret_cast<void *>(page), end - page, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0) !=
            MAP_FAILED) {
            g.lost.store(true);
            return;
        }
    }
    // Once only: a previous handler that re-raises into this one (faulthandler does) must not loop.
    static std::atomic<bool> chained{false};
    if (chained.exchange(true)) {
        signal(sig, SIG_DFL);
        raise(sig);
    } else if (g_previous.sa_flags & SA_SIGINFO) {
        g_previous.sa_sigaction(sig, info, context);
    } else if (g_previous.sa_handler != SIG_DFL && g_previous.sa_handler != SIG_IGN) {
        g_previous.sa_handler(sig);
    } else {
        signal(sig, SIG_DFL);
        raise(sig);  // pending until this handler returns, then the default action
    }
}

// Registers [data, data + size) with the handler and puts the handler on top of whatever is installed
// now (Python's faulthandler, for one, installs its own after we may have): -1 when the table is full.
int guard_mapping(const void * data, size_t size) {
    std::lock_guard<std::mutex> lock(g_guard_mutex);
    struct sigaction current{};
    sigaction(SIGBUS, nullptr, &current);
    if (!(current.sa_flags & SA_SIGINFO) || current.sa_sigaction != on_sigbus) {
        struct sigaction ours{};
        ours.sa_sigaction = on_sigbus;
        ours.sa_flags = SA_SIGINFO | SA_ONSTACK;
        sigemptyset(&ours.sa_mask);
        if (sigaction(SIGBUS, &ours, &g_previous) != 0) return -1;
    }
    for (int i = 0; i < kGuardSlots; ++i) {
        if (g_guarded[i].end.load() != 0) continue;
        g_guarded[i].lost.store(false);
        g_guarded[i].begin.store(reinterpret_cast<uintptr_t>(data));
        g_guarded[i].end.store(reinterpret_cast<uintptr_t>(data) + size);
        return i;
    }
    return -1;
}

void unguard_mapping(int slot) {
    std::lock_guard<std::mutex> lock(g_guard_mutex);
    g_guarded[slot].end.store(0);
    g_guarded[slot].begin.store(0);
}

int64_t modification_ns(const struct stat & st) { return int64_t(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec; }

}  // namespace

GgufFile::GgufFile(const std::string & path) : path_(path) {
    if (path.find('\0') != std::string::npos) {
        throw Error(ErrorCode::io, "the path '" + path.substr(0, path.find('\0')) + "...' holds a NUL character");
    }
    // O_NONBLOCK: opening a FIFO must not wait for a writer (it is refused just below).
    int fd = ::open(path.c_str(), O_RDONLY | O_NONBLOCK);
    if (fd < 0) {
        throw Error(ErrorCode::io, "cannot open '" + path + "': " + std::strerror(errno));
    }
    struct stat st{};
    if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        ::close(fd);
        throw Error(ErrorCode::io, "'" + path + "' is not a regular file");
    }
    map_size_ = static_cast<size_t>(st.st_size);
    char magic[4] = {};
    if (map_size_ < 4 || ::pread(fd, magic, 4, 0) != 4 || std::memcmp(magic, "GGUF", 4) != 0) {
        ::close(fd);
        bad_format(path, "not a GGUF file (bad magic)");
    }
    map_ = ::mmap(nullptr, map_size_, PROT_READ, MAP_SHARED, fd, 0);
    if (map_ == MAP_FAILED) {
        map_ = nullptr;
        ::close(fd);
        throw Error(ErrorCode::io, "cannot map '" + path + "': " + std::strerror(errno));
    }
    fd_ = fd;
    mtime_ns_ = modification_ns(st);
    guard_ = guard_mapping(map_, map_size_);

    // Parse the header from the mapping; gguf.h returns null (it does not abort) on malformed input,
    // once the zero dimensions it would divide by are refused.
    try {
        check_tensor_dims(map_, map_size_, path);
    } catch (...) {
        release();
        throw;
    }
    gguf_init_params params{/*no_alloc =*/true, /*ctx =*/&meta_};
    gguf_ = gguf_init_from_buffer(map_, map_size_, params);
    if (gguf_ == nullptr) {
        release();
        bad_format(path, "malformed or truncated GGUF header");
    }
    data_offset_ = gguf_get_data_offset(gguf_);
    for (int64_t i = 0; i < gguf_get_n_tensors(gguf_); ++i) {
        const size_t end = data_offset_ + gguf_get_tensor_offset(gguf_, i) + gguf_get_tensor_size(gguf_, i);
        if (end > map_size_) {
            const std::string name = gguf_get_tensor_name(gguf_, i);
            release();
            bad_format(path, "truncated: tensor '" + name + "' ends at byte " + std::to_string(end) + " but the file has " +
                                 std::to_string(map_size_) + " bytes");
        }
    }
}

GgufFile::~GgufFile() { release(); }

void GgufFile::release() {
    if (gguf_ != nullptr) gguf_free(gguf_);
    if (meta_ != nullptr) ggml_free(meta_);
    if (guard_ >= 0) unguard_mapping(guard_);
    if (map_ != nullptr) ::munmap(map_, map_size_);
    if (fd_ >= 0) ::close(fd_);
    guard_ = -1;
    fd_ = -1;
    gguf_ = nullptr;
    meta_ = nullptr;
    map_ = nullptr;
}

void GgufFile::check_intact() const {
    struct stat st{};
    const bool lost = guard_ >= 0 && g_guarded[guard_].lost.load();
    if (lost || ::fstat(fd_, &st) != 0 || static_cast<size_t>(st.st_size) != map_size_ || modification_ns(st) != mtime_ns_) {
        throw Error(ErrorCode::io, "'" + path_ +
                                       "' was truncated or rewritten while the model was using it; load the model again "
                                       "(or load with use_mmap off, so that it keeps its own copy of the weights)");
    }
}

bool GgufFile::has(const char * key) const { return gguf_find_key(gguf_, key) >= 0; }

namespace {

int64_t find_typed(const gguf_context * g, const std::string & path, const char * key, std::initializer_list<gguf_type> allowed) {
    const int64_t id = gguf_find_key(g, key);
    if (id < 0) bad_format(path, std::string("missing key '") + key + "'");
    const gguf_type t = gguf_get_kv_type(g, id);
    for (gguf_type a : allowed) {
        if (t == a) return id;
    }
    bad_format(path, std::string("key '") + key + "' has type " + gguf_type_name(t));
}

}  // namespace

std::string GgufFile::get_string(const char * key) const {
    return gguf_get_val_str(gguf_, find_typed(gguf_, path_, key, {GGUF_TYPE_STRING}));
}

uint32_t GgufFile::get_u32(const char * key) const {
    const int64_t id = find_typed(gguf_, path_, key,
                                  {GGUF_TYPE_UINT32, GGUF_TYPE_INT32, GGUF_TYPE_UINT64, GGUF_TYPE_INT64, GGUF_TYPE_UINT16,
                                   GGUF_TYPE_INT16, GGUF_TYPE_UINT8, GGUF_TYPE_INT8});
    int64_t v = 0;
    switch (gguf_get_kv_type(gguf_, id)) {
        case GGUF_TYPE_UINT32: v = gguf_get_val_u32(gguf_, id); break;
        case GGUF_TYPE_INT32: v = gguf_get_val_i32(gguf_, id); break;
        case GGUF_TYPE_UINT64: v = static_cast<int64_t>(std::min<uint64_t>(gguf_get_val_u64(gguf_, id), INT64_MAX)); break;
        case GGUF_TYPE_INT64: v = gguf_get_val_i64(gguf_, id); break;
        case GGUF_TYPE_UINT16: v = gguf_get_val_u16(gguf_, id); break;
        case GGUF_TYPE_INT16: v = gguf_get_val_i16(gguf_, id); break;
        case GGUF_TYPE_UINT8: v = gguf_get_val_u8(gguf_, id); break;
        default: v = gguf_get_val_i8(gguf_, id); break;
    }
    if (v < 0 || v > UINT32_MAX) bad_format(path_, std::string("key '") + key + "' is out of range: " + std::to_string(v));
    return static_cast<uint32_t>(v);
}

int32_t GgufFile::get_size(const char * key) const {
    const uint32_t v = get_u32(key);
    if (v < 1 || v > (1u << 24))
        bad_format(path_, std::string("key '") + key + "' is " + std::to_string(v) + ", not a size (1 to 2^24)");
    return static_cast<int32_t>(v);
}

float GgufFile::get_f32(const char * key) const {
    const int64_t id = find_typed(gguf_, path_, key, {GGUF_TYPE_FLOAT32, GGUF_TYPE_FLOAT64});
    return gguf_get_kv_type(gguf_, id) == GGUF_TYPE_FLOAT32 ? gguf_get_val_f32(gguf_, id)
                                                            : static_cast<float>(gguf_get_val_f64(gguf_, id));
}

bool GgufFile::get_bool(const char * key, bool fallback) const {
    if (!has(key)) return fallback;
    return gguf_get_val_bool(gguf_, find_typed(gguf_, path_, key, {GGUF_TYPE_BOOL}));
}

std::vector<std::string> GgufFile::get_strings(const char * key) const {
    const int64_t id = find_typed(gguf_, path_, key, {GGUF_TYPE_ARRAY});
    if (gguf_get_arr_type(gguf_, id) != GGUF_TYPE_STRING)
        bad_format(path_, std::string("key '") + key + "' is not a string array");
    const size_t n = gguf_get_arr_n(gguf_, id);
    std::vector<std::string> out;
    out.reserve(n);
    for (size_t i = 0; i < n; ++i) out.emplace_back(gguf_get_arr_str(gguf_, id, i));
    return out;
}

std::vector<int32_t> GgufFile::get_i32s(const char * key) const {
    const int64_t id = find_typed(gguf_, path_, key, {GGUF_TYPE_ARRAY});
    const gguf_type t = gguf_get_arr_type(gguf_, id);
    if (t != GGUF_TYPE_INT32 && t != GGUF_TYPE_UINT32) bad_format(path_, std::string("key '") + key + "' is not an int32 array");
    const auto * data = static_cast<const int32_t *>(gguf_get_arr_data(gguf_, id));
    return std::vector<int32_t>(data, data + gguf_get_arr_n(gguf_, id));
}

ggml_tensor * GgufFile::tensor(const char * name) const { return ggml_get_tensor(meta_, name); }

std::vector<ggml_tensor *> GgufFile::tensors() const {
    std::vector<ggml_tensor *> out;
    for (ggml_tensor * t = ggml_get_first_tensor(meta_); t != nullptr; t = ggml_get_next_tensor(meta_, t)) out.push_back(t);
    return out;
}

const void * GgufFile::tensor_data(const ggml_tensor * t) const {
    const int64_t id = gguf_find_tensor(gguf_, ggml_get_name(t));
    return static_cast<const uint8_t *>(map_) + data_offset_ + gguf_get_tensor_offset(gguf_, id);
}

}  // namespace minicpmv
