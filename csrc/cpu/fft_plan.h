// Power-of-two complex FFTs on split real/imaginary float arrays.
//
// Small sizes use one Stockham autosort transform (radix 4, one radix-2 stage
// when log2(size) is odd): natural order in and out. Large sizes use the
// four-step (Monarch) split N = N1 * N2: column transforms of length N1 done a
// cache-sized block of columns at a time, a twiddle product, then row
// transforms of length N2; every pass works on data that fits in cache. Its
// spectrum comes out transposed (frequency k1 + N1*k2 at k1*N2 + k2), which
// the spectral product does not mind: spectrum_position() maps a frequency to
// where it lies.
#pragma once
#include <cstdint>
#include <memory>
#include <vector>

// Hot loops get an AVX2/FMA clone on machines that have it; the default clone keeps
// the library loadable on any x86-64.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(__SANITIZE_ADDRESS__)
#define FFTCONV_SIMD_CLONES __attribute__((target_clones("avx2,fma", "default")))
#else
#define FFTCONV_SIMD_CLONES
#endif

namespace fftconv {

// One Stockham transform of length `size`, applied to `batch` interleaved
// sequences (element j of sequence b at j*batch + b).
class StockhamFft {
 public:
  explicit StockhamFft(int64_t size);
  int64_t size() const { return size_; }
  // Forward, unscaled; the result lands in (re, im) or (scratch_re, scratch_im): returns true
  // when it is in the scratch pair.
  bool forward(int64_t batch, float* re, float* im, float* scratch_re, float* scratch_im) const;

 private:
  struct Stage {
    int64_t radix, span, stride;
    std::vector<float> tw_re, tw_im;  // w^(j*p) for j = 1 .. radix-1, planar by j
  };
  int64_t size_;
  std::vector<Stage> stages_;
};

class FftPlan {
 public:
  explicit FftPlan(int64_t size);
  int64_t size() const { return size_; }
  // Floats of per-thread work memory forward/inverse need besides the data.
  int64_t work_floats() const { return work_floats_; }

  // In-place forward transform (unscaled) of (re, im), natural order in,
  // spectrum order (see for_each_conjugate_run) out. Only the first `nonzero`
  // inputs are read: the rest are taken as zero, whatever the arrays hold there.
  void forward(float* re, float* im, float* work, int64_t nonzero) const;
  // In-place inverse transform (unscaled) from spectrum order to natural
  // order; only the first `needed` outputs are guaranteed to be written.
  void inverse(float* re, float* im, float* work, int64_t needed) const;

  // The spectrum as a grid: frequency k1 + rows*k2 lies at k1*cols + k2
  // (1 x size for a whole transform, N1 x N2 for the split).
  int64_t grid_rows() const { return split_ ? n1_ : 1; }
  int64_t grid_cols() const { return split_ ? n2_ : size_; }

  // Calls fn(p0, q0, count) for runs of positions p = p0 + i of frequency f
  // and q = q0 - i of -f (i < count), covering every pair {f, -f} once. The
  // p's are the canonical positions: all below canonical_count().
  template <typename Fn>
  void for_each_conjugate_run(Fn&& fn) const {
    const int64_t R = grid_rows(), C = grid_cols();
    fn(int64_t(0), int64_t(0), int64_t(1));  // f = 0
    fn(int64_t(1), C - 1, C / 2);            // row 0: k2 <-> C - k2 (k2 = C/2 is its own pair)
    if (R > 1) {
      // row k1 pairs with row R - k1, columns reversed; row R/2 with itself
      for (int64_t k1 = 1; k1 < R / 2; ++k1) fn(k1 * C, (R - k1) * C + C - 1, C);
      fn((R / 2) * C, (R / 2) * C + C - 1, C / 2);
    }
  }
  int64_t canonical_count() const { return grid_rows() > 1 ? (grid_rows() / 2 + 1) * grid_cols() : size_ / 2 + 1; }

  static std::shared_ptr<const FftPlan> get(int64_t size);

 private:
  void columns(float* re, float* im, float* work, bool inverse, int64_t rows_used) const;
  void rows(float* re, float* im, float* work, bool inverse) const;

  int64_t size_;
  bool split_ = false;
  int64_t n1_ = 0, n2_ = 0;
  std::unique_ptr<StockhamFft> whole_, col_, row_;
  // split: W_N^(k1*j) for the lanes j of a column block, and W_N^(k1*c0) per block start c0
  std::vector<float> tw_lane_re_, tw_lane_im_, tw_block_re_, tw_block_im_;
  int64_t work_floats_ = 0;
};

}  // namespace fftconv
