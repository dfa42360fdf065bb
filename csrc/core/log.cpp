#include "core/log.h"

#include <ggml.h>

#include <cstdarg>
#include <cstdio>
#include <mutex>
#include <string>
#include <vector>

namespace minicpmv {

namespace {

struct Sink {
    std::mutex mutex;
    LogCallback callback = nullptr;
    void * user_data = nullptr;
};

Sink & sink() {
    static Sink * s = new Sink;  // never destroyed: threads may still log during static destruction
    return *s;
}

// The callback runs outside the lock, so that it may take locks of its own (Python's GIL) without
// deadlocking against a thread that logs while holding them. A callback replaced while a message is
// in flight may still receive that message.
void emit(LogLevel level, const char * text) {
    LogCallback callback;
    void * user_data;
    {
        Sink & s = sink();
        std::lock_guard<std::mutex> lock(s.mutex);
        callback = s.callback;
        user_data = s.user_data;
    }
    if (callback != nullptr) callback(level, text, user_data);
}

// ggml sends a message in pieces (GGML_LOG_LEVEL_CONT continues the previous one, per thread) ending
// in a newline: pieces are joined and sent whole, without the newline.
thread_local std::string t_ggml_line;
thread_local LogLevel t_ggml_level = LogLevel::debug;

void from_ggml(ggml_log_level level, const char * text, void *) {
    if (level != GGML_LOG_LEVEL_CONT) {
        t_ggml_level = level == GGML_LOG_LEVEL_WARN    ? LogLevel::warn
                       : level == GGML_LOG_LEVEL_ERROR ? LogLevel::error
                                                       : LogLevel::debug;
    }
    t_ggml_line += text;
    if (!t_ggml_line.empty() && t_ggml_line.back() == '\n') {
        t_ggml_line.pop_back();
        emit(t_ggml_level, t_ggml_line.c_str());
        t_ggml_line.clear();
    }
}

}  // namespace

void set_log_callback(LogCallback callback, void * user_data) {
    route_ggml_log();
    Sink & s = sink();
    std::lock_guard<std::mutex> lock(s.mutex);
    s.callback = callback;
    s.user_data = user_data;
}

void log_message(LogLevel level, const char * format, ...) {
    {
        Sink & s = sink();
        std::lock_guard<std::mutex> lock(s.mutex);
        if (s.callback == nullptr) return;
    }
    va_list args;
    va_start(args, format);
    va_list copy;
    va_copy(copy, args);
    const int n = std::vsnprintf(nullptr, 0, format, copy);
    va_end(copy);
    std::vector<char> text(static_cast<size_t>(n > 0 ? n : 0) + 1);
    std::vsnprintf(text.data(), text.size(), format, args);
    va_end(args);
    emit(level, text.data());
}

void route_ggml_log() {
    static std::once_flag once;
    std::call_once(once, [] { ggml_log_set(from_ggml, nullptr); });
}

}  // namespace minicpmv
