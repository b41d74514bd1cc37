// Power-of-two complex FFT (Stockham autosort, radix 4 with one radix-2 stage
// when log2(size) is odd) on split real/imaginary arrays: natural order in
// and out, so the spectral product needs no bit reversal.
#pragma once
#include <cstdint>
#include <memory>
#include <vector>

namespace fftconv {

class FftPlan {
 public:
  explicit FftPlan(int64_t size);
  int64_t size() const { return size_; }

  // Forward transform (exp(-2*pi*i*j*k/size), unscaled) of (re, im) using
  // (scratch_re, scratch_im) as the ping-pong buffer; the result lands in
  // whichever pair is returned through out_re/out_im.
  void forward(float* re, float* im, float* scratch_re, float* scratch_im, float** out_re,
               float** out_im) const;

  // Inverse (unscaled): the forward transform with real and imaginary swapped.
  void inverse(float* re, float* im, float* scratch_re, float* scratch_im, float** out_re,
               float** out_im) const {
    forward(im, re, scratch_im, scratch_re, out_im, out_re);
  }

  // The shared plan for a size (plans are immutable and cached per process).
  static std::shared_ptr<const FftPlan> get(int64_t size);

 private:
  struct Stage {
    int64_t radix;
    int64_t span;    // length of the sub-transform this stage splits
    int64_t stride;  // distance between its interleaved sequences
    std::vector<float> tw_re, tw_im;  // radix 4: w^p, w^2p, w^3p per p; radix 2: w^p
  };
  int64_t size_;
  std::vector<Stage> stages_;
};

}  // namespace fftconv
