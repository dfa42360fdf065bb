// One error path for the whole core (docs/architecture.md §3): the core throws minicpmv::Error; the C API turns it
// into a status code and message, the binding into a Python exception with the same text.
#pragma once

#include <stdexcept>
#include <string>

namespace minicpmv {

enum class ErrorCode {
    invalid_argument = 1,  // a bad parameter or message from the caller
    io = 2,                // a file that cannot be opened or read
    bad_format = 3,        // a file that is not what it claims (truncated, wrong architecture, bad tensor)
    unsupported = 4,       // valid but not supported here (backend not built in, type not handled)
    context_full = 5,      // the prompt or generation does not fit the context
    cancelled = 6,         // the caller asked to stop
};

class Error : public std::runtime_error {
  public:
    Error(ErrorCode code, const std::string & message) : std::runtime_error(message), code_(code) {}
    ErrorCode code() const { return code_; }

  private:
    ErrorCode code_;
};

}  // namespace minicpmv
