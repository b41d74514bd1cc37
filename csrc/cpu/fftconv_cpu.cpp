// CPU implementation of FFTConv.
//
// Rows (one (b, h) sequence each) are processed two at a time: the pair is
// packed as the real and imaginary parts of one complex sequence, so one
// complex FFT of the transform size m serves two real transforms. The two
// rows may have different filters; the spectral product separates them with
//   W[f] = Z[f] (K1 + K2)/2 + conj(Z[-f]) (K1 - K2)/2,
// whose inverse transform is y1 + i y2. All arithmetic is float32.
//
// Short filters on long rows (cpu_block_size) take overlap-save instead: blocks of
// m points, each giving m - taps + 1 outputs from the inputs taps - 1 before them.
// Filters of at most kCpuDirectMaxTaps taps are summed directly (cpu_direct).
// Every call convolves with its effective filter (geometry.h, Conv): k, with the anti-causal
// taps of k_rev at the end of the period; circular calls of a power-of-two period transform
// at the period, others fold the linear result at it.
#include <algorithm>
#include <cstring>
#include <exception>
#include <thread>
#include <vector>

#include "../common/error.h"
#include "../common/geometry.h"
#include "../common/half_float.h"
#include "fft_plan.h"
#include "fftconv_rt/fftconv.h"

namespace fftconv {
namespace {

// Element access by the ONNX type number of the buffer.
template <int DT> struct Elem;
template <> struct Elem<FFTCONV_FLOAT32> {
  static float load(const void* p, int64_t i) { return static_cast<const float*>(p)[i]; }
  static void store(void* p, int64_t i, float v) { static_cast<float*>(p)[i] = v; }
};
template <> struct Elem<FFTCONV_FLOAT16> {
  static float load(const void* p, int64_t i) { return half_to_float(static_cast<const uint16_t*>(p)[i]); }
  static void store(void* p, int64_t i, float v) { static_cast<uint16_t*>(p)[i] = float_to_half(v); }
};
template <> struct Elem<FFTCONV_BFLOAT16> {
  static float load(const void* p, int64_t i) { return bf16_to_float(static_cast<const uint16_t*>(p)[i]); }
  static void store(void* p, int64_t i, float v) { static_cast<uint16_t*>(p)[i] = float_to_bf16(v); }
};

float load_any(const void* p, int32_t dtype, int64_t i) {
  switch (dtype) {
    case FFTCONV_FLOAT16: return Elem<FFTCONV_FLOAT16>::load(p, i);
    case FFTCONV_BFLOAT16: return Elem<FFTCONV_BFLOAT16>::load(p, i);
    default: return Elem<FFTCONV_FLOAT32>::load(p, i);
  }
}

// Runs fn(begin, end) over [0, count) in `chunks` contiguous parts, on the
// host's thread pool when it lent one, else on threads of our own.
template <typename Fn>
void parallel_for(const fftconv_params& p, int64_t count, int chunks, Fn fn) {
  chunks = int(std::min<int64_t>(chunks, count));
  if (chunks <= 1) {
    if (count > 0) fn(int64_t(0), count);
    return;
  }
  std::vector<std::exception_ptr> errors(static_cast<size_t>(chunks));
  struct Job {
    Fn* fn;
    int64_t count;
    int chunks;
    std::vector<std::exception_ptr>* errors;
  } job{&fn, count, chunks, &errors};
  auto run_chunk = [](void* data, int64_t index) {
    Job& j = *static_cast<Job*>(data);
    try {
      (*j.fn)(j.count * index / j.chunks, j.count * (index + 1) / j.chunks);
    } catch (...) {
      (*j.errors)[size_t(index)] = std::current_exception();
    }
  };
  if (p.parallel_for) {
    p.parallel_for(p.parallel_host, run_chunk, &job, chunks);
  } else {
    std::vector<std::thread> pool;
    pool.reserve(size_t(chunks - 1));
    for (int t = 1; t < chunks; ++t) pool.emplace_back(run_chunk, &job, int64_t(t));
    run_chunk(&job, 0);  // the calling thread takes the first part
    for (auto& th : pool) th.join();
  }
  for (auto& e : errors)
    if (e) std::rethrow_exception(e);
}

int chunk_count(const fftconv_params& p, int64_t points_per_item, int64_t items) {
  // Below ~2^16 complex points of work, splitting costs more than it saves.
  if (points_per_item * items < (int64_t(1) << 16)) return 1;
  const int hw = p.num_threads > 0 ? p.num_threads : int(std::thread::hardware_concurrency());
  return std::max(1, hw);
}

// Per-thread buffers: the packed pair and the transform's work memory.
struct Scratch {
  explicit Scratch(const FftPlan& plan)
      : re(size_t(plan.size())), im(size_t(plan.size())), work(size_t(plan.work_floats())) {}
  std::vector<float> re, im, work;
};

struct RowAddress {
  int64_t offset, stride;
};

RowAddress row_address(const fftconv_params& p, int64_t row) {
  if (p.layout == FFTCONV_LAYOUT_BLH) {
    const int64_t b = row / p.H, h = row % p.H;
    return {b * p.L * p.H + h, p.H};
  }
  return {row * p.L, 1};
}

// Floats of one channel's prepared spectrum: real and imaginary parts at the
// plan's canonical positions (see FftPlan::for_each_conjugate_run).
int64_t channel_floats(const FftPlan& plan) { return 2 * plan.canonical_count(); }

// Processes items [0, count) (filters, or rows of u) two at a time, packed as the
// real and imaginary parts of one transform: load(item, dst) writes the item's
// `len` values, process(scratch, first, second) transforms them and returns
// false when the pair holds a NaN or an infinity, which the packing would
// spread from one item to the other; such a pair, like a lone last item, is
// processed one item at a time (second = -1, imaginary part zero).
// points_per_item: the transform work of one item, which decides the threading.
template <typename Load, typename Process>
void for_each_pair(const fftconv_params& p, const FftPlan& plan, int64_t count, int64_t len, Load load,
                   Process process, int64_t points_per_item) {
  const int64_t pairs = (count + 1) / 2;
  parallel_for(p, pairs, chunk_count(p, points_per_item, pairs), [&](int64_t begin, int64_t end) {
    Scratch s(plan);
    auto alone = [&](int64_t item) {
      load(item, s.re.data());
      std::fill(s.im.begin(), s.im.begin() + len, 0.f);
      process(s, item, int64_t(-1));
    };
    for (int64_t pair = begin; pair < end; ++pair) {
      const int64_t first = 2 * pair, second = first + 1;
      if (second < count) {
        load(first, s.re.data());
        load(second, s.im.data());
        if (process(s, first, second)) continue;
        alone(first);
        alone(second);
      } else {
        alone(first);
      }
    }
  });
}

// A sum is non-finite iff a summand was (or it overflowed, which is handled the same way).
bool finite_sum(float x) { return x - x == 0.f; }

// The first `count` points of channel h's effective filter (geometry.h, Conv): the taps of k,
// plus those of k_rev at the end of the period.
void load_effective_filter(const fftconv_params& p, const Conv& c, int64_t h, int64_t count, float* dst) {
  const int64_t k_taps = std::min(c.k_taps, count);
  for (int64_t t = 0; t < k_taps; ++t) dst[t] = load_any(p.k, p.k_dtype, h * p.Lk + t);
  std::fill(dst + k_taps, dst + count, 0.f);
  for (int64_t j = 0; j < c.rev_taps; ++j) {
    const int64_t at = reversed_position(j, c.fft_size);
    if (at < count) dst[at] += load_any(p.k_rev, p.k_rev_dtype, h * p.Lk_rev + j);
  }
}

void prepare_filter(const fftconv_params& p, float* spectrum) {
  const Conv c = conv_of(p);
  if (cpu_direct(c.L, c.Lk, c.fft_size, c.freq_keep)) {  // the prepared filter is its taps
    const int64_t taps = used_taps(c.L, c.Lk, c.fft_size);
    for (int64_t h = 0; h < p.H; ++h) load_effective_filter(p, c, h, taps, spectrum + h * taps);
    return;
  }
  const int64_t m = cpu_transform_size(c.L, c.Lk, c.fft_size, c.freq_keep);
  const int64_t taps = used_taps(c.L, c.Lk, c.fft_size, c.freq_keep);
  const auto plan = FftPlan::get(m);
  const int64_t bins = plan->canonical_count();
  // 1/2 from separating the packed pair, 1/2 from the (K1 +- K2)/2 of the product,
  // 1/m of the inverse transform: all folded into the stored spectrum.
  const float scale = 0.25f / float(m);
  auto load_filter = [&](int64_t h, float* dst) { load_effective_filter(p, c, h, taps, dst); };
  // Transforms the loaded pair and splits it into the spectra of `first` and
  // `second` (-1: none, the imaginary part is zero). Refuses (false) a pair
  // holding a NaN or an infinity, which the split would spread to both.
  auto transform = [&](Scratch& s, int64_t first, int64_t second) {
    plan->forward(s.re.data(), s.im.data(), s.work.data(), taps);
    const float* zr = s.re.data();
    const float* zi = s.im.data();
    if (second >= 0 && !(finite_sum(zr[0]) && finite_sum(zi[0]))) return false;
    float* k1r = spectrum + first * 2 * bins;
    float* k1i = k1r + bins;
    float* k2r = second >= 0 ? spectrum + second * 2 * bins : nullptr;
    float* k2i = k2r ? k2r + bins : nullptr;
    plan->for_each_conjugate_run([&](int64_t p0, int64_t q0, int64_t count) {
      for (int64_t t = 0; t < count; ++t) {
        const int64_t i = p0 + t, j = q0 - t;
        // K1 = (Z[f] + conj Z[-f]) / 2, K2 = (Z[f] - conj Z[-f]) / 2i, stored at f's position
        k1r[i] = (zr[i] + zr[j]) * scale;
        k1i[i] = (zi[i] - zi[j]) * scale;
        if (k2r) {
          k2r[i] = (zi[i] + zi[j]) * scale;
          k2i[i] = (zr[j] - zr[i]) * scale;
        }
      }
    });
    return true;
  };
  for_each_pair(p, *plan, p.H, taps, load_filter, transform, m);
  if (c.freq_keep > 0) {  // frequency-sparse: the bins outside the kept band are zero
    const int64_t R = plan->grid_rows(), C = plan->grid_cols();
    for (int64_t h = 0; h < p.H; ++h) {
      float* re = spectrum + h * 2 * bins;
      for (int64_t q = 0; q < bins; ++q)
        if (masked_bin(R > 1 ? q / C + R * (q % C) : q, m, c.freq_keep)) re[q] = re[bins + q] = 0.f;
    }
  }
}

// conv[j] = sum_i k[i] * v[j + taps - 1 - i] for j < count: v holds the taps - 1 inputs
// before the outputs' first, then theirs. Over j innermost, which vectorizes.
FFTCONV_SIMD_CLONES
void direct_fir(const float* v, const float* k, int64_t taps, int64_t count, float* conv) {
  std::fill(conv, conv + count, 0.f);
  for (int64_t i = 0; i < taps; ++i) {
    const float ki = k[i];
    const float* src = v + taps - 1 - i;
    for (int64_t j = 0; j < count; ++j) conv[j] += ki * src[j];
  }
}

// W[f] = Z[f] a + conj(Z[-f]) c and W[-f] = Z[-f] conj(a) + conj(Z[f]) conj(c) with
// a = (K1 + K2)/2, c = (K1 - K2)/2 (already scaled by 1/m), over the run of
// positions p0 + t (frequency f) and q0 - t (frequency -f).
FFTCONV_SIMD_CLONES
void spectral_product(int64_t p0, int64_t q0, int64_t count, const float* k1r, const float* k1i,
                      const float* k2r, const float* k2i, float* zr, float* zi) {
  for (int64_t t = 0; t < count; ++t) {
    const int64_t i = p0 + t, j = q0 - t;
    const float ar = k1r[i] + k2r[i], ai = k1i[i] + k2i[i];
    const float cr = k1r[i] - k2r[i], ci = k1i[i] - k2i[i];
    const float zfr = zr[i], zfi = zi[i], zjr = zr[j], zji = zi[j];
    zr[i] = zfr * ar - zfi * ai + zjr * cr + zji * ci;
    zi[i] = zfr * ai + zfi * ar + zjr * ci - zji * cr;
    // for f = -f (0 and m/2) a and c are real and this rewrites the same value
    zr[j] = zjr * ar + zji * ai + zfr * cr - zfi * ci;
    zi[j] = zji * ar - zjr * ai - zfr * ci - zfi * cr;
  }
}

template <int DT>
void run_rows(const fftconv_params& p, const float* spectrum, const std::vector<float>& D) {
  using E = Elem<DT>;
  const Conv c = conv_of(p);
  const int64_t m = cpu_transform_size(c.L, c.Lk, c.fft_size, c.freq_keep);
  const int64_t block = cpu_block_size(c.L, c.Lk, c.fft_size, c.freq_keep);
  // a call transformed at its period (at_period) needs no fold
  const bool circular = folds(m, c.L, c.Lk, c.fft_size, c.freq_keep);
  const int64_t n = c.fft_size;
  const int64_t rows = p.B * p.H;
  const int64_t L = p.L;

  // v[t0 .. t0 + count) of a row into dst (zero before t = 0 and from t = L on)
  auto load_range = [&](int64_t row, int64_t t0, int64_t count, float* dst) {
    const RowAddress a = row_address(p, row);
    const int64_t begin = std::clamp<int64_t>(-t0, 0, count), end = std::clamp<int64_t>(L - t0, begin, count);
    std::fill(dst, dst + begin, 0.f);
    std::fill(dst + end, dst + count, 0.f);
    if (p.pregate) {
      for (int64_t j = begin; j < end; ++j) {
        const int64_t i = a.offset + (t0 + j) * a.stride;
        dst[j] = E::load(p.u, i) * E::load(p.pregate, i);
      }
    } else {
      for (int64_t j = begin; j < end; ++j) dst[j] = E::load(p.u, a.offset + (t0 + j) * a.stride);
    }
  };
  auto load_v = [&](int64_t row, float* dst) { load_range(row, 0, L, dst); };
  // y[t0 .. t0 + count) of a row from conv[0 .. count) (and, circular, the wrapped part)
  auto store_range = [&](int64_t row, int64_t t0, int64_t count, const float* conv) {
    const RowAddress a = row_address(p, row);
    const float d = D.empty() ? 0.f : D[size_t(row % p.H)];
    for (int64_t j = 0; j < count; ++j) {
      const int64_t t = t0 + j;
      const int64_t i = a.offset + t * a.stride;
      float y = conv[j];
      if (circular && t + n < m) y += conv[t + n];
      if (!D.empty()) {
        float v = E::load(p.u, i);
        if (p.pregate) v *= E::load(p.pregate, i);
        y += d * v;
      }
      if (p.postgate) y *= E::load(p.postgate, i);
      E::store(p.y, i, y);
    }
  };
  auto store_y = [&](int64_t row, const float* conv) { store_range(row, 0, L, conv); };

  if (cpu_direct(c.L, c.Lk, c.fft_size, c.freq_keep)) {  // the taps (the prepared filter) summed directly
    constexpr int64_t kSpan = 4096;  // outputs per step: their inputs stay in the L1 cache
    const int64_t taps = used_taps(c.L, c.Lk, c.fft_size);
    parallel_for(p, rows, chunk_count(p, L * taps / 8, rows), [&](int64_t begin, int64_t end) {
      std::vector<float> v(static_cast<size_t>(kSpan + taps - 1)), conv(static_cast<size_t>(kSpan));
      for (int64_t row = begin; row < end; ++row)
        for (int64_t t0 = 0; t0 < L; t0 += kSpan) {
          const int64_t count = std::min(kSpan, L - t0);
          load_range(row, t0 - (taps - 1), count + taps - 1, v.data());
          direct_fir(v.data(), spectrum + (row % p.H) * taps, taps, count, conv.data());
          store_range(row, t0, count, conv.data());
        }
    });
    return;
  }
  const auto plan = FftPlan::get(m);
  const int64_t bins = plan->canonical_count();

  // The spectral product of the pair transformed in (zr, zi). Refuses (false) a pair where
  // a NaN or an infinity in one row or filter would spread to the other: the DC bin
  // (position 0) of a spectrum is the sum of its sequence, non-finite exactly then.
  auto multiply = [&](float* zr, float* zi, int64_t first, int64_t second) {
    const float* k1r = spectrum + (first % p.H) * 2 * bins;
    const float* k1i = k1r + bins;
    const float* k2r = second >= 0 ? spectrum + (second % p.H) * 2 * bins : k1r;
    const float* k2i = k2r + bins;
    if (second >= 0 && !(finite_sum(zr[0]) && finite_sum(zi[0]) && finite_sum(k1r[0]) && finite_sum(k2r[0])))
      return false;
    plan->for_each_conjugate_run([&](int64_t p0, int64_t q0, int64_t count) {
      spectral_product(p0, q0, count, k1r, k1i, k2r, k2i, zr, zi);
    });
    return true;
  };

  // Convolves the loaded pair (row `second` < 0: the imaginary part is zero) and stores it.
  auto convolve = [&](Scratch& s, int64_t first, int64_t second) {
    float* zr = s.re.data();
    float* zi = s.im.data();
    plan->forward(zr, zi, s.work.data(), L);
    if (!multiply(zr, zi, first, second)) return false;
    // a circular result also needs the wrapped part, up to m
    plan->inverse(zr, zi, s.work.data(), circular ? m : L);
    store_y(first, zr);
    if (second >= 0) store_y(second, zi);
    return true;
  };

  // Overlap-save: block b transforms inputs [b*step - (taps - 1), b*step + step) and keeps
  // its last `step` outputs. The rows are read block by block (the load is a no-op).
  const int64_t taps = used_taps(c.L, c.Lk, c.fft_size, c.freq_keep), step = block - taps + 1;
  auto convolve_blocks = [&](Scratch& s, int64_t first, int64_t second) {
    float* zr = s.re.data();
    float* zi = s.im.data();
    for (int64_t t0 = 0; t0 < L; t0 += step) {
      load_range(first, t0 - (taps - 1), block, zr);
      if (second >= 0) load_range(second, t0 - (taps - 1), block, zi);
      else std::fill(zi, zi + block, 0.f);
      plan->forward(zr, zi, s.work.data(), block);
      if (!multiply(zr, zi, first, second)) return false;
      plan->inverse(zr, zi, s.work.data(), block);
      const int64_t count = std::min(step, L - t0);
      store_range(first, t0, count, zr + taps - 1);
      if (second >= 0) store_range(second, t0, count, zi + taps - 1);
    }
    return true;
  };

  if (block)
    for_each_pair(p, *plan, rows, 0, [](int64_t, float*) {}, convolve_blocks, std::max(L, block));
  else
    for_each_pair(p, *plan, rows, L, load_v, convolve, m);
}

}  // namespace
}  // namespace fftconv

using namespace fftconv;

extern "C" {

int64_t fftconv_cpu_transform_size(int64_t L, int64_t Lk, int64_t fft_size) {
  if (L < 0 || Lk < 1 || fft_size < 0) return 0;
  return cpu_transform_size(L, Lk, fft_size);
}

int64_t fftconv_cpu_filter_floats(const fftconv_params* p) {
  if (!p || p->H < 0 || p->L < 0 || p->Lk < 1 || p->fft_size < 0 || p->Lk_rev < 0) return 0;
  const Conv c = conv_of(*p);
  if (cpu_direct(c.L, c.Lk, c.fft_size, c.freq_keep)) return p->H * used_taps(c.L, c.Lk, c.fft_size);
  return p->H * channel_floats(*FftPlan::get(cpu_transform_size(c.L, c.Lk, c.fft_size, c.freq_keep)));
}

int32_t fftconv_cpu_path(const fftconv_params* p) {
  int32_t path = -1;
  const fftconv_status status = guarded_call([&] {
    check_params(p);
    const Conv c = conv_of(*p);
    if (cpu_direct(c.L, c.Lk, c.fft_size, c.freq_keep)) path = FFTCONV_CPU_DIRECT_SUM;
    else if (cpu_block_size(c.L, c.Lk, c.fft_size, c.freq_keep)) path = FFTCONV_CPU_BLOCKS;
    else if (at_period(c.L, c.Lk, c.fft_size, c.freq_keep) && c.fft_size >= 4) path = FFTCONV_CPU_AT_PERIOD;
    else path = FFTCONV_CPU_WHOLE_ROW;
  });
  return status == FFTCONV_OK ? path : -1;
}

fftconv_status fftconv_cpu_prepare_filter(const fftconv_params* p, float* spectrum) {
  return guarded_call([&] {
    check_params(p);
    if (!p->k || !spectrum) fail(FFTCONV_ERR_INVALID_ARGUMENT, "k and spectrum must not be null");
    if (p->Lk_rev > 0 && !p->k_rev) fail(FFTCONV_ERR_INVALID_ARGUMENT, "k_rev must not be null when Lk_rev > 0");
    check_pointer_alignment(*p);
    check_aligned(spectrum, "spectrum", 4);
    prepare_filter(*p, spectrum);
  });
}

fftconv_status fftconv_cpu_forward(const fftconv_params* p, const float* spectrum) {
  return guarded_call([&] {
    check_params(p);
    if (p->B == 0 || p->H == 0 || p->L == 0) return;  // empty output
    if (!p->u || !p->y || (!spectrum && !p->k))
      fail(FFTCONV_ERR_INVALID_ARGUMENT, "u, y and k (or a prepared spectrum) must not be null");
    if (!spectrum && p->Lk_rev > 0 && !p->k_rev)
      fail(FFTCONV_ERR_INVALID_ARGUMENT, "k_rev must not be null when Lk_rev > 0 (or give a prepared spectrum)");
    check_pointer_alignment(*p);
    check_aligned(spectrum, "spectrum", 4);
    std::vector<float> own_spectrum;
    if (!spectrum) {
      own_spectrum.resize(size_t(fftconv_cpu_filter_floats(p)));
      prepare_filter(*p, own_spectrum.data());
      spectrum = own_spectrum.data();
    }
    std::vector<float> D;
    if (p->D) {
      D.resize(size_t(p->H));
      for (int64_t h = 0; h < p->H; ++h) D[size_t(h)] = load_any(p->D, p->D_dtype, h);
    }
    switch (p->dtype) {
      case FFTCONV_FLOAT16: run_rows<FFTCONV_FLOAT16>(*p, spectrum, D); break;
      case FFTCONV_BFLOAT16: run_rows<FFTCONV_BFLOAT16>(*p, spectrum, D); break;
      default: run_rows<FFTCONV_FLOAT32>(*p, spectrum, D); break;
    }
  });
}

}  // extern "C"
