// Errors inside the core are thrown as FFTConvError and turned into a status
// plus the thread-local message at the C ABI boundary (guarded_call).
#pragma once
#include <cstdint>
#include <new>
#include <stdexcept>
#include <string>

#include "fftconv_rt/fftconv.h"

namespace fftconv {

class FFTConvError : public std::runtime_error {
 public:
  FFTConvError(fftconv_status status, const std::string& message)
      : std::runtime_error(message), status_(status) {}
  fftconv_status status() const { return status_; }

 private:
  fftconv_status status_;
};

[[noreturn]] inline void fail(fftconv_status status, const std::string& message) {
  throw FFTConvError(status, "FFTConv: " + message);
}

void set_last_error(const std::string& message);

// Checks the numbers of a params struct (for callers that skipped fftconv_resolve).
void check_params(const fftconv_params* p);

// Refuses a pointer that is not aligned to its element size, naming the input.
void check_aligned(const void* ptr, const char* name, int64_t element_bytes);

// Refuses any pointer of the params (u, k, D, gates, y) not aligned to its element type.
void check_pointer_alignment(const fftconv_params& p);

// Runs fn, mapping every exception to a status and the thread's last-error message.
template <typename Fn>
fftconv_status guarded_call(Fn&& fn) {
  try {
    fn();
    set_last_error("");
    return FFTCONV_OK;
  } catch (const FFTConvError& e) {
    set_last_error(e.what());
    return e.status();
  } catch (const std::bad_alloc&) {
    set_last_error("FFTConv: out of host memory");
    return FFTCONV_ERR_OUT_OF_MEMORY;
  } catch (const std::exception& e) {
    set_last_error(std::string("FFTConv: internal error: ") + e.what());
    return FFTCONV_ERR_INTERNAL;
  }
}

}  // namespace fftconv
