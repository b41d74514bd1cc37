// Sizes shared by the CPU and CUDA paths: which transform a call needs.
#pragma once
#include <algorithm>
#include <cstdint>

namespace fftconv {

inline int64_t next_pow2(int64_t x) {
  int64_t p = 1;
  while (p < x) p <<= 1;
  return p;
}

// 0 < fft_size < L + Lk - 1: circular convolution of period fft_size.
inline bool is_circular(int64_t L, int64_t Lk, int64_t fft_size) { return fft_size > 0 && fft_size < L + Lk - 1; }

// Filter taps that influence the L outputs: a linear causal convolution only
// sees k[:L]; a circular one sees all of k.
inline int64_t used_taps(int64_t L, int64_t Lk, int64_t fft_size) {
  return is_circular(L, Lk, fft_size) ? Lk : std::min(L, Lk);
}

// The power-of-two transform size: a circular result of period n is folded
// from the linear one (L + Lk - 1 < 2n).
inline int64_t transform_size(int64_t L, int64_t Lk, int64_t fft_size) {
  return std::max<int64_t>(4, next_pow2(L + used_taps(L, Lk, fft_size) - 1));
}

}  // namespace fftconv
