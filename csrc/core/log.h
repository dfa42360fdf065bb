// The library's messages (load information, ggml's own chatter) go to one callback the application
// installs (whisper.h's whisper_log_set); none is installed by default, and the library prints
// nothing itself (docs/architecture.md §8).
#pragma once

namespace minicpmv {

enum class LogLevel { debug = 0, info = 1, warn = 2, error = 3 };

using LogCallback = void (*)(LogLevel level, const char * text, void * user_data);

// nullptr silences the library again. Safe to call from any thread; the callback may be called from
// any thread, including ggml's workers, and must not call back into the library. A message already
// on its way may still reach the previous callback: keep its user_data alive.
void set_log_callback(LogCallback callback, void * user_data);

// printf-style; text without a trailing newline.
void log_message(LogLevel level, const char * format, ...)
#if defined(__GNUC__) || defined(__clang__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

// Sends ggml's process-wide log to ours: its debug and info lines at debug, warnings and errors as
// such. Installed once, on the first model load, and never swapped back and forth.
void route_ggml_log();

}  // namespace minicpmv
