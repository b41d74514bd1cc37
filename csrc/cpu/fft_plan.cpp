#include "fft_plan.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
#include <mutex>
#include <utility>

namespace fftconv {
namespace {

// Columns per block of the four-step split (two cache lines of floats per row).
constexpr int64_t kColumnBlock = 32;


// One radix-4 butterfly (forward DFT of a, b, c, d, outputs 1..3 times the
// twiddles w1..w3) on values of type T: float in loops the compiler
// vectorises, or a vector of lanes where it would not.
template <typename T>
struct Radix4 {
  T r[4], i[4];
};

template <typename T>
inline Radix4<T> radix4(T ar, T ai, T br, T bi, T cr, T ci, T dr, T di, float w1r, float w1i, float w2r,
                        float w2i, float w3r, float w3i) {
  const T apc_r = ar + cr, apc_i = ai + ci, amc_r = ar - cr, amc_i = ai - ci;
  const T bpd_r = br + dr, bpd_i = bi + di;
  const T jbmd_r = di - bi, jbmd_i = br - dr;  // j * (b - d)
  const T t1r = amc_r - jbmd_r, t1i = amc_i - jbmd_i;
  const T t2r = apc_r - bpd_r, t2i = apc_i - bpd_i;
  const T t3r = amc_r + jbmd_r, t3i = amc_i + jbmd_i;
  return {{apc_r + bpd_r, t1r * w1r - t1i * w1i, t2r * w2r - t2i * w2i, t3r * w3r - t3i * w3i},
          {apc_i + bpd_i, t1r * w1i + t1i * w1r, t2r * w2i + t2i * w2r, t3r * w3i + t3i * w3r}};
}

// s butterflies on contiguous lanes: inputs at x + j*step, outputs at y + j*s (j < 4).
inline void radix4_columns(int64_t s, const float* __restrict xr, const float* __restrict xi,
                           int64_t step, float w1r, float w1i, float w2r, float w2i, float w3r,
                           float w3i, float* __restrict yr, float* __restrict yi) {
  const float *ar = xr, *br = xr + step, *cr = xr + 2 * step, *dr = xr + 3 * step;
  const float *ai = xi, *bi = xi + step, *ci = xi + 2 * step, *di = xi + 3 * step;
  float *y0r = yr, *y1r = yr + s, *y2r = yr + 2 * s, *y3r = yr + 3 * s;
  float *y0i = yi, *y1i = yi + s, *y2i = yi + 2 * s, *y3i = yi + 3 * s;
  // The outputs y0..y3 are disjoint runs of s: no dependence between iterations.
#pragma GCC ivdep
  for (int64_t q = 0; q < s; ++q) {
    const Radix4<float> o = radix4(ar[q], ai[q], br[q], bi[q], cr[q], ci[q], dr[q], di[q], w1r, w1i, w2r, w2i,
                                   w3r, w3i);
    y0r[q] = o.r[0], y1r[q] = o.r[1], y2r[q] = o.r[2], y3r[q] = o.r[3];
    y0i[q] = o.i[0], y1i[q] = o.i[1], y2i[q] = o.i[2], y3i[q] = o.i[3];
  }
}

typedef float Lanes4 __attribute__((vector_size(16)));

inline Lanes4 load4(const float* p) {
  Lanes4 v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}
inline void store4(float* p, Lanes4 v) { std::memcpy(p, &v, sizeof(v)); }

// Twiddles are planar: w^p at [p], w^2p at [quarter + p], w^3p at [2*quarter + p].
FFTCONV_SIMD_CLONES
void radix4_stage(int64_t span, int64_t stride, const float* twr, const float* twi,
                  const float* __restrict xr, const float* __restrict xi, float* __restrict yr,
                  float* __restrict yi) {
  const int64_t quarter = span / 4;
  const int64_t s = stride;
  const float *w1r = twr, *w2r = twr + quarter, *w3r = twr + 2 * quarter;
  const float *w1i = twi, *w2i = twi + quarter, *w3i = twi + 2 * quarter;
  if (s == 1) {
    // First stage of a single sequence: vectorise along p (stores interleave by 4).
    for (int64_t p = 0; p < quarter; ++p) {
      const Radix4<float> o = radix4(xr[p], xi[p], xr[p + quarter], xi[p + quarter], xr[p + 2 * quarter],
                                     xi[p + 2 * quarter], xr[p + 3 * quarter], xi[p + 3 * quarter], w1r[p],
                                     w1i[p], w2r[p], w2i[p], w3r[p], w3i[p]);
      for (int j = 0; j < 4; ++j) {
        yr[4 * p + j] = o.r[j];
        yi[4 * p + j] = o.i[j];
      }
    }
    return;
  }
  if (s == 4) {
    // Too short for the vectoriser (it would run scalar): one 4-lane vector per butterfly.
    const int64_t step = 4 * quarter;
    for (int64_t p = 0; p < quarter; ++p) {
      const float* ar = xr + 4 * p;
      const float* ai = xi + 4 * p;
      const Radix4<Lanes4> o = radix4(load4(ar), load4(ai), load4(ar + step), load4(ai + step),
                                      load4(ar + 2 * step), load4(ai + 2 * step), load4(ar + 3 * step),
                                      load4(ai + 3 * step), w1r[p], w1i[p], w2r[p], w2i[p], w3r[p], w3i[p]);
      for (int j = 0; j < 4; ++j) {
        store4(yr + 16 * p + 4 * j, o.r[j]);
        store4(yi + 16 * p + 4 * j, o.i[j]);
      }
    }
    return;
  }
  for (int64_t p = 0; p < quarter; ++p) {
    const float a1r = w1r[p], a1i = w1i[p], a2r = w2r[p], a2i = w2i[p], a3r = w3r[p], a3i = w3i[p];
    radix4_columns(s, xr + s * p, xi + s * p, s * quarter, a1r, a1i, a2r, a2i, a3r, a3i,
                   yr + s * 4 * p, yi + s * 4 * p);
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
    // The two outputs are disjoint runs of s: no dependence between iterations.
#pragma GCC ivdep
    for (int64_t q = 0; q < s; ++q) {
      const float dr = ar[q] - br[q], di = ai[q] - bi[q];
      y0r[q] = ar[q] + br[q];
      y0i[q] = ai[q] + bi[q];
      y0r[s + q] = dr * wr - di * wi;
      y0i[s + q] = dr * wi + di * wr;
    }
  }
}

// From this size on, the four-step split beats one whole Stockham transform
// (the whole transform streams every stage through L2).
constexpr int64_t kSplitFrom = int64_t(1) << 13;

// Multiplies kColumnBlock values by start * lane[j] (conjugated for the inverse).
FFTCONV_SIMD_CLONES
void twiddle(float start_re, float start_im, const float* lane_re, const float* lane_im,
             float* __restrict re, float* __restrict im, bool conjugate) {
  const float sign = conjugate ? -1.f : 1.f;
  for (int64_t j = 0; j < kColumnBlock; ++j) {
    const float c = start_re * lane_re[j] - start_im * lane_im[j];
    const float s = sign * (start_re * lane_im[j] + start_im * lane_re[j]);
    const float r = re[j], m = im[j];
    re[j] = r * c - m * s;
    im[j] = r * s + m * c;
  }
}

}  // namespace

StockhamFft::StockhamFft(int64_t size) : size_(size) {
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
        // exp(-2 pi i j p / span), computed in double then rounded once; planar by j
        const double angle = -2.0 * M_PI * double((j * p) % span) / double(span);
        st.tw_re[size_t((j - 1) * count + p)] = float(std::cos(angle));
        st.tw_im[size_t((j - 1) * count + p)] = float(std::sin(angle));
      }
    }
    span /= st.radix;
    stride *= st.radix;
    stages_.push_back(std::move(st));
  }
}

bool StockhamFft::forward(int64_t batch, float* re, float* im, float* scratch_re, float* scratch_im) const {
  float *xr = re, *xi = im, *yr = scratch_re, *yi = scratch_im;
  for (const Stage& st : stages_) {
    if (st.radix == 4)
      radix4_stage(st.span, st.stride * batch, st.tw_re.data(), st.tw_im.data(), xr, xi, yr, yi);
    else
      radix2_stage(st.span, st.stride * batch, st.tw_re.data(), st.tw_im.data(), xr, xi, yr, yi);
    std::swap(xr, yr);
    std::swap(xi, yi);
  }
  return xr != re;
}

FftPlan::FftPlan(int64_t size) : size_(size) {
  split_ = size >= kSplitFrom;
  if (!split_) {
    whole_ = std::make_unique<StockhamFft>(size);
    work_floats_ = 2 * size;
  } else {
    int log2n = 0;
    while ((int64_t(1) << log2n) < size) ++log2n;
    // Columns of at most 64 rows: longer ones make the strided block gathers
    // thrash the caches (the row pitch is a power of two).
    n1_ = int64_t(1) << std::min(log2n / 2, 6);
    n2_ = size / n1_;
    col_ = std::make_unique<StockhamFft>(n1_);
    row_ = std::make_unique<StockhamFft>(n2_);
    // W_N^(k1*n2) with n2 = c0 + j is formed per block as W_N^(k1*c0) * W_N^(k1*j): two
    // small tables instead of one as large as the data, which would not stay in cache.
    const int64_t blocks = n2_ / kColumnBlock;
    auto unit = [size](int64_t e, float* re, float* im) {
      const double angle = -2.0 * M_PI * double(e % size) / double(size);
      *re = float(std::cos(angle));
      *im = float(std::sin(angle));
    };
    tw_lane_re_.resize(size_t(n1_ * kColumnBlock));
    tw_lane_im_.resize(size_t(n1_ * kColumnBlock));
    for (int64_t k1 = 0; k1 < n1_; ++k1)
      for (int64_t j = 0; j < kColumnBlock; ++j)
        unit(k1 * j, &tw_lane_re_[size_t(k1 * kColumnBlock + j)], &tw_lane_im_[size_t(k1 * kColumnBlock + j)]);
    tw_block_re_.resize(size_t(blocks * n1_));
    tw_block_im_.resize(size_t(blocks * n1_));
    for (int64_t b = 0; b < blocks; ++b)
      for (int64_t k1 = 0; k1 < n1_; ++k1)
        unit(k1 * b * kColumnBlock, &tw_block_re_[size_t(b * n1_ + k1)], &tw_block_im_[size_t(b * n1_ + k1)]);
    // a column block and its ping-pong partner, or a row's partner
    work_floats_ = std::max(4 * n1_ * kColumnBlock, 2 * n2_);
  }
}

// Length-N1 transforms down every column of the N1 x N2 matrix, a block of
// columns at a time, with the twiddle W_N^(n2*k1) applied after (forward) or
// its conjugate before (inverse).
// Rows at or past `rows_used` are zero on input (forward) or not needed on output (inverse).
void FftPlan::columns(float* re, float* im, float* work, bool inverse, int64_t rows_used) const {
  const int64_t V = kColumnBlock;
  float* br = work;
  float* bi = br + n1_ * V;
  float* sr = bi + n1_ * V;
  float* si = sr + n1_ * V;
  const int64_t rows_in = inverse ? n1_ : rows_used;
  const int64_t rows_out = inverse ? rows_used : n1_;
  for (int64_t c0 = 0; c0 < n2_; c0 += V) {
    const float* start_re = &tw_block_re_[size_t((c0 / V) * n1_)];
    const float* start_im = &tw_block_im_[size_t((c0 / V) * n1_)];
    for (int64_t r = 0; r < rows_in; ++r) {
      std::memcpy(br + r * V, re + r * n2_ + c0, sizeof(float) * size_t(V));
      std::memcpy(bi + r * V, im + r * n2_ + c0, sizeof(float) * size_t(V));
      if (inverse)
        twiddle(start_re[r], start_im[r], &tw_lane_re_[size_t(r * V)], &tw_lane_im_[size_t(r * V)],
                br + r * V, bi + r * V, true);
    }
    std::fill(br + rows_in * V, br + n1_ * V, 0.f);
    std::fill(bi + rows_in * V, bi + n1_ * V, 0.f);
    // the inverse is the forward transform with real and imaginary swapped
    const bool in_scratch = inverse ? col_->forward(V, bi, br, si, sr) : col_->forward(V, br, bi, sr, si);
    const float* outr = in_scratch ? sr : br;
    const float* outi = in_scratch ? si : bi;
    for (int64_t r = 0; r < rows_out; ++r) {
      std::memcpy(re + r * n2_ + c0, outr + r * V, sizeof(float) * size_t(V));
      std::memcpy(im + r * n2_ + c0, outi + r * V, sizeof(float) * size_t(V));
      if (!inverse)
        twiddle(start_re[r], start_im[r], &tw_lane_re_[size_t(r * V)], &tw_lane_im_[size_t(r * V)],
                re + r * n2_ + c0, im + r * n2_ + c0, false);
    }
  }
}

// Length-N2 transforms along every (contiguous) row.
void FftPlan::rows(float* re, float* im, float* work, bool inverse) const {
  float* sr = work;
  float* si = work + n2_;
  for (int64_t r = 0; r < n1_; ++r) {
    float* xr = re + r * n2_;
    float* xi = im + r * n2_;
    const bool in_scratch = inverse ? row_->forward(1, xi, xr, si, sr) : row_->forward(1, xr, xi, sr, si);
    if (in_scratch) {
      std::memcpy(xr, sr, sizeof(float) * size_t(n2_));
      std::memcpy(xi, si, sizeof(float) * size_t(n2_));
    }
  }
}

void FftPlan::forward(float* re, float* im, float* work, int64_t nonzero) const {
  if (!split_) {
    std::fill(re + nonzero, re + size_, 0.f);
    std::fill(im + nonzero, im + size_, 0.f);
    if (whole_->forward(1, re, im, work, work + size_)) {
      std::memcpy(re, work, sizeof(float) * size_t(size_));
      std::memcpy(im, work + size_, sizeof(float) * size_t(size_));
    }
    return;
  }
  // The columns read whole rows: clear the part of the last used row past `nonzero`.
  const int64_t rows_used = (nonzero + n2_ - 1) / n2_;
  std::fill(re + nonzero, re + rows_used * n2_, 0.f);
  std::fill(im + nonzero, im + rows_used * n2_, 0.f);
  columns(re, im, work, false, rows_used);
  rows(re, im, work, false);
}

void FftPlan::inverse(float* re, float* im, float* work, int64_t needed) const {
  if (!split_) {
    // the inverse is the forward transform with real and imaginary swapped
    if (whole_->forward(1, im, re, work + size_, work)) {
      std::memcpy(re, work, sizeof(float) * size_t(size_));
      std::memcpy(im, work + size_, sizeof(float) * size_t(size_));
    }
    return;
  }
  rows(re, im, work, true);
  columns(re, im, work, true, (needed + n2_ - 1) / n2_);
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
