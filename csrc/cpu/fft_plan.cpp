#include "fft_plan.h"

#include <cmath>
#include <map>
#include <mutex>
#include <utility>

namespace fftconv {
namespace {

// Hot loops get an AVX2/FMA clone on machines that have it; the default clone keeps
// the library loadable on any x86-64.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(__SANITIZE_ADDRESS__)
#define FFTCONV_SIMD_CLONES __attribute__((target_clones("avx2,fma", "default")))
#else
#define FFTCONV_SIMD_CLONES
#endif

FFTCONV_SIMD_CLONES
void radix4_stage(int64_t span, int64_t stride, const float* twr, const float* twi,
                  const float* __restrict xr, const float* __restrict xi, float* __restrict yr,
                  float* __restrict yi) {
  const int64_t quarter = span / 4;
  const int64_t s = stride;
  for (int64_t p = 0; p < quarter; ++p) {
    const float w1r = twr[3 * p], w1i = twi[3 * p];
    const float w2r = twr[3 * p + 1], w2i = twi[3 * p + 1];
    const float w3r = twr[3 * p + 2], w3i = twi[3 * p + 2];
    const float* ar = xr + s * p;
    const float* ai = xi + s * p;
    const float* br = ar + s * quarter;
    const float* bi = ai + s * quarter;
    const float* cr = br + s * quarter;
    const float* ci = bi + s * quarter;
    const float* dr = cr + s * quarter;
    const float* di = ci + s * quarter;
    float* y0r = yr + s * 4 * p;
    float* y0i = yi + s * 4 * p;
    for (int64_t q = 0; q < s; ++q) {
      const float apc_r = ar[q] + cr[q], apc_i = ai[q] + ci[q];
      const float amc_r = ar[q] - cr[q], amc_i = ai[q] - ci[q];
      const float bpd_r = br[q] + dr[q], bpd_i = bi[q] + di[q];
      // j * (b - d)
      const float jbmd_r = -(bi[q] - di[q]), jbmd_i = br[q] - dr[q];
      y0r[q] = apc_r + bpd_r;
      y0i[q] = apc_i + bpd_i;
      const float t1r = amc_r - jbmd_r, t1i = amc_i - jbmd_i;
      const float t2r = apc_r - bpd_r, t2i = apc_i - bpd_i;
      const float t3r = amc_r + jbmd_r, t3i = amc_i + jbmd_i;
      y0r[s + q] = t1r * w1r - t1i * w1i;
      y0i[s + q] = t1r * w1i + t1i * w1r;
      y0r[2 * s + q] = t2r * w2r - t2i * w2i;
      y0i[2 * s + q] = t2r * w2i + t2i * w2r;
      y0r[3 * s + q] = t3r * w3r - t3i * w3i;
      y0i[3 * s + q] = t3r * w3i + t3i * w3r;
    }
  }
}

FFTCONV_SIMD_CLONES
void radix2_stage(int64_t span, int64_t stride, const float* twr, const float* twi,
                  const float* __restrict xr, const float* __restrict xi, float* __restrict yr,
                  float* __restrict yi) {
  const int64_t half = span / 2;
  const int64_t s = stride;
  for (int64_t p = 0; p < half; ++p) {
    const float wr = twr[p], wi = twi[p];
    const float* ar = xr + s * p;
    const float* ai = xi + s * p;
    const float* br = ar + s * half;
    const float* bi = ai + s * half;
    float* y0r = yr + s * 2 * p;
    float* y0i = yi + s * 2 * p;
    for (int64_t q = 0; q < s; ++q) {
      const float dr = ar[q] - br[q], di = ai[q] - bi[q];
      y0r[q] = ar[q] + br[q];
      y0i[q] = ai[q] + bi[q];
      y0r[s + q] = dr * wr - di * wi;
      y0i[s + q] = dr * wi + di * wr;
    }
  }
}

}  // namespace

FftPlan::FftPlan(int64_t size) : size_(size) {
  int64_t span = size, stride = 1;
  while (span >= 2) {
    Stage st;
    st.radix = (span >= 4) ? 4 : 2;
    st.span = span;
    st.stride = stride;
    const int64_t count = span / st.radix;
    const int64_t per_p = st.radix - 1;
    st.tw_re.resize(size_t(count * per_p));
    st.tw_im.resize(size_t(count * per_p));
    for (int64_t p = 0; p < count; ++p) {
      for (int64_t j = 1; j <= per_p; ++j) {
        // exp(-2 pi i j p / span), computed in double then rounded once
        const double angle = -2.0 * M_PI * double((j * p) % span) / double(span);
        st.tw_re[size_t(p * per_p + j - 1)] = float(std::cos(angle));
        st.tw_im[size_t(p * per_p + j - 1)] = float(std::sin(angle));
      }
    }
    stages_.push_back(std::move(st));
    span /= stages_.back().radix;
    stride *= stages_.back().radix;
  }
}

void FftPlan::forward(float* re, float* im, float* scratch_re, float* scratch_im, float** out_re,
                      float** out_im) const {
  float *xr = re, *xi = im, *yr = scratch_re, *yi = scratch_im;
  for (const Stage& st : stages_) {
    if (st.radix == 4)
      radix4_stage(st.span, st.stride, st.tw_re.data(), st.tw_im.data(), xr, xi, yr, yi);
    else
      radix2_stage(st.span, st.stride, st.tw_re.data(), st.tw_im.data(), xr, xi, yr, yi);
    std::swap(xr, yr);
    std::swap(xi, yi);
  }
  *out_re = xr;
  *out_im = xi;
}

std::shared_ptr<const FftPlan> FftPlan::get(int64_t size) {
  static std::mutex mutex;
  static std::map<int64_t, std::shared_ptr<const FftPlan>> cache;
  std::lock_guard<std::mutex> lock(mutex);
  auto& slot = cache[size];
  if (!slot) slot = std::make_shared<const FftPlan>(size);
  return slot;
}

}  // namespace fftconv
