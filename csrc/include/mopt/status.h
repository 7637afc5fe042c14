// Errors raised by the runtime. Every one becomes a Python exception of the matching class
// (mopt.errors) in the bindings, so a bad model or a bad input never takes the process down.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

namespace mopt {

enum class ErrorCode {
  kInvalidModel,     // the .mopt file or program is malformed
  kInvalidArgument,  // a caller's input: wrong name, shape, dtype, option
  kUnsupported,      // an op, dtype or attribute the runtime has no kernel for
  kRuntime,          // a failure while running (e.g. shape mismatch inside a kernel)
  kInternal,         // a bug in mopt
};

class Error : public std::runtime_error {
 public:
  Error(ErrorCode code, const std::string& message) : std::runtime_error(message), code_(code) {}
  ErrorCode code() const { return code_; }

 private:
  ErrorCode code_;
};

// str_cat("a", 1, "b") -> "a1b": message building without a format library.
template <class... Args>
std::string str_cat(Args&&... args) {
  std::ostringstream out;
  (out << ... << std::forward<Args>(args));
  return out.str();
}

template <class... Args>
[[noreturn]] void fail(ErrorCode code, Args&&... args) {
  throw Error(code, str_cat(std::forward<Args>(args)...));
}

#define MOPT_CHECK(cond, code, ...)          \
  do {                                       \
    if (!(cond)) ::mopt::fail(code, __VA_ARGS__); \
  } while (0)

// A precondition the caller controls (attributes, input shapes): kRuntime names the node.
#define MOPT_ENSURE(cond, ...) MOPT_CHECK(cond, ::mopt::ErrorCode::kRuntime, __VA_ARGS__)

}  // namespace mopt
