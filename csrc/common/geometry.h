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

inline bool is_pow2(int64_t x) { return x > 0 && (x & (x - 1)) == 0; }

// 0 < fft_size < L + Lk - 1: circular convolution of period fft_size.
inline bool is_circular(int64_t L, int64_t Lk, int64_t fft_size) { return fft_size > 0 && fft_size < L + Lk - 1; }

// Filter taps that influence the L outputs: a linear causal convolution only
// sees k[:L]; a circular one sees all of k, and so does a frequency-sparse one
// (freq_keep > 0: its mask spreads every tap over the period).
inline int64_t used_taps(int64_t L, int64_t Lk, int64_t fft_size, int64_t freq_keep = 0) {
  return (freq_keep > 0 || is_circular(L, Lk, fft_size)) ? Lk : std::min(L, Lk);
}

// Whether a call transforms at its period n = fft_size: a frequency-sparse call (n is a power
// of two, see fftconv_resolve; its mask is defined there) and a circular call whose period is
// a power of two, which needs no fold then (half the points of the linear transform).
inline bool at_period(int64_t L, int64_t Lk, int64_t fft_size, int64_t freq_keep = 0) {
  return freq_keep > 0 || (is_circular(L, Lk, fft_size) && is_pow2(fft_size));
}

// The power-of-two transform size: at the period (at_period), else the linear convolution's,
// from which a circular result of period n is folded (L + Lk - 1 < 2n).
inline int64_t transform_size(int64_t L, int64_t Lk, int64_t fft_size, int64_t freq_keep = 0) {
  if (at_period(L, Lk, fft_size, freq_keep)) return std::max<int64_t>(4, fft_size);
  return std::max<int64_t>(4, next_pow2(L + used_taps(L, Lk, fft_size) - 1));
}

// Whether the result of a transform of m points is folded at the period: circular calls not
// transformed at their period (m > n; m >= L + Lk - 1 then, so one fold suffices).
inline bool folds(int64_t m, int64_t L, int64_t Lk, int64_t fft_size, int64_t freq_keep = 0) {
  return freq_keep == 0 && is_circular(L, Lk, fft_size) && m != fft_size;
}

// A call (op version 2) in the terms of the transform code: every call convolves with one
// effective filter c, zero from c[Lk] on (Lk here is its extent, not the input's), of period
// fft_size (0: linear causal):
//   c[j] = k[j] (j < k_taps) + k_rev[(n - j) mod n] (the k_rev taps below rev_taps)
// Causal calls: c = k, cut at the period under period_scale (taps past n dropped). Two-sided
// calls (Lk_rev > 0): the period n = fft_size, or for fft_size = 0 the power of two that the
// linear causal call with max(Lk, Lk_rev) taps would use, with the taps that reach the
// outputs (k[:L], k_rev[:L]): the anti-causal taps lie at the end of the period, where no
// causal tap reaches, so the circular result of period n is the exact linear two-sided one.
struct Conv {
  int64_t L, Lk, fft_size, freq_keep;
  int64_t k_taps, rev_taps;  // taps of k and of k_rev read (rev_taps = 0: causal)
};

inline Conv conv_of(const fftconv_params& p) {
  Conv c{p.L, p.Lk, p.fft_size, p.freq_keep, 0, 0};
  if (p.Lk_rev > 0) {
    int64_t n = p.fft_size;
    if (n == 0) {
      c.k_taps = std::min(p.Lk, p.L);
      c.rev_taps = std::min(p.Lk_rev, p.L);
      n = next_pow2(std::max<int64_t>(1, p.L + std::max(c.k_taps, c.rev_taps) - 1));
    } else {
      c.k_taps = std::min(p.Lk, n);
      c.rev_taps = std::min(p.Lk_rev, n);
    }
    c.Lk = n;
    c.fft_size = n;
    return c;
  }
  if (p.fft_size > 0) c.Lk = std::min(p.Lk, p.fft_size);
  c.k_taps = used_taps(c.L, c.Lk, c.fft_size, c.freq_keep);
  return c;
}

// Position of tap j of k_rev in the effective filter of period n.
inline int64_t reversed_position(int64_t j, int64_t n) { return j == 0 ? 0 : n - j; }

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
