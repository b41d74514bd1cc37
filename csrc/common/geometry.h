// Sizes shared by the CPU and CUDA paths: which transform a call needs, element sizes.
#pragma once
#include <algorithm>
#include <cstdint>

#include "fftconv_rt/fftconv.h"

namespace fftconv {

// Bytes of one element of an fftconv_dtype (float32 4, float16/bfloat16 2).
inline int64_t element_bytes(int32_t dtype) { return dtype == FFTCONV_FLOAT32 ? 4 : 2; }

inline int64_t next_pow2(int64_t x) {
  int64_t p = 1;
  while (p < x) p <<= 1;
  return p;
}

// 0 < fft_size < L + Lk - 1: circular convolution of period fft_size.
inline bool is_circular(int64_t L, int64_t Lk, int64_t fft_size) { return fft_size > 0 && fft_size < L + Lk - 1; }

// Filter taps that influence the L outputs: a linear causal convolution only
// sees k[:L]; a circular one sees all of k, and so does a frequency-sparse one
// (freq_keep > 0: its mask spreads every tap over the period).
inline int64_t used_taps(int64_t L, int64_t Lk, int64_t fft_size, int64_t freq_keep = 0) {
  return (freq_keep > 0 || is_circular(L, Lk, fft_size)) ? Lk : std::min(L, Lk);
}

// The power-of-two transform size: a circular result of period n is folded
// from the linear one (L + Lk - 1 < 2n). A frequency-sparse call transforms at its
// period n = fft_size (a power of two, see fftconv_resolve_sparse), where its mask is defined.
inline int64_t transform_size(int64_t L, int64_t Lk, int64_t fft_size, int64_t freq_keep = 0) {
  if (freq_keep > 0) return std::max<int64_t>(4, fft_size);
  return std::max<int64_t>(4, next_pow2(L + used_taps(L, Lk, fft_size) - 1));
}

// Frequency-sparse calls: true when the rfft bin of frequency f of an m-point
// transform lies outside the kept band (bins f and m - f are the same bin).
inline bool masked_bin(int64_t f, int64_t m, int64_t freq_keep) {
  return freq_keep > 0 && std::min(f, m - f) >= freq_keep;
}

// CPU, very short filters (Hyena's 3-tap short convolutions, say): the sum of the taps
// directly, a few multiply-adds per output, instead of any transform. The prepared filter
// of such a call is its taps.
constexpr int64_t kCpuDirectMaxTaps = 32;

inline bool cpu_direct(int64_t L, int64_t Lk, int64_t fft_size, int64_t freq_keep = 0) {
  return freq_keep == 0 && !is_circular(L, Lk, fft_size) && used_taps(L, Lk, fft_size) <= kCpuDirectMaxTaps;
}

// CPU, short filters on long sequences (a linear convolution with L much longer than
// the taps): overlap-save in blocks of this many points (at least 4x the taps, so that
// 3/4 of each block are new outputs), or 0 when one transform of the whole row is used.
// The blocks cost O(L log taps) instead of O(L log L) and memory independent of L.
inline int64_t cpu_block_size(int64_t L, int64_t Lk, int64_t fft_size, int64_t freq_keep = 0) {
  if (freq_keep > 0 || is_circular(L, Lk, fft_size)) return 0;
  const int64_t taps = used_taps(L, Lk, fft_size);
  const int64_t block = std::max<int64_t>(64, next_pow2(4 * taps));
  return 4 * block <= transform_size(L, Lk, fft_size) ? block : 0;
}

// The transform size of the CPU path: the block size, or the whole row's.
inline int64_t cpu_transform_size(int64_t L, int64_t Lk, int64_t fft_size, int64_t freq_keep = 0) {
  const int64_t block = cpu_block_size(L, Lk, fft_size, freq_keep);
  return block ? block : transform_size(L, Lk, fft_size, freq_keep);
}

}  // namespace fftconv
