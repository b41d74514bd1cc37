// CUDA implementation of FFTConv.
//
// As on the CPU, two rows (two (b, h) sequences, or two filters) are packed as
// the real and imaginary parts of one complex sequence of the power-of-two
// transform size m; the spectral product separates them (see fftconv_cpu.cpp).
// All arithmetic is float32; transforms are in-place radix-16 Stockham passes
// over shared memory, one thread per 16 points. Shared memory is addressed
// through Points (an XOR swizzle within groups of 16 values), which keeps the
// strided stores of the first passes free of bank conflicts.
//
// m <= kFusedMax: one kernel does load, forward transform, product, inverse
//   transform and the epilogue (skip term, gate, causal cut), several pairs per
//   block for short sequences.
// m > kFusedMax: the four-step split m = N1 x N2 (N2 = row_length_of(m)) in three
//   passes over a workspace of one complex sequence per pair:
//   1. columns: load (zero-padded) rows, length-N1 transforms down the columns,
//      twiddle W_m^(k1*n2), store;
//   2. rows: rows k1 and N1 - k1 together: length-N2 transforms, the product
//      (f and -f lie in those two rows), inverse transforms, store;
//   3. columns: twiddle W_m^(-k1*n2), inverse length-N1 transforms, and the
//      epilogue for the time steps t < L only (the causal cut).
// Filters much shorter than a (linear) row take overlap-save: the row is cut into
// pieces of `step` outputs, each one transform of m points over the inputs from
// taps - 1 before it (Pieces), and every kernel works on pieces as on rows.
// A NaN or an infinity in one row (or filter) of a packed pair would spread to the
// other: pass 1 flags such pairs in the workspace (for the rows, pass 2 also flags a
// pair whose filter spectrum is not finite), and the passes run twice more for the
// flagged pairs only, one row (or filter) alone each time.
// The spectrum of frequency k1 + N1*k2 lies at k1*N2 + k2; filter spectra are
// stored at the canonical positions (rows k1 <= N1/2) in that order.
#include <cuda_runtime.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <mutex>
#include <string>
#include <type_traits>
#include <vector>

#include "../common/error.h"
#include "../common/geometry.h"
#include "cuda_common.cuh"
#include "channels_last.h"
#include "direct_conv.h"
#include "fftconv_rt/fftconv.h"

namespace fftconv {
namespace {

using cuda::allow_shared;
using cuda::check_cuda;
using cuda::Elem;
using cuda::load_any;

constexpr int64_t kFusedMax = 16384;  // largest transform done by the fused kernel (in place, 128 KiB)
constexpr int kFusedThreadsMax = int(kFusedMax / 16);  // one thread per 16 points
// Fused sizes from 2^13 points on have kernels that skip what a frequency-sparse band makes
// zero; smaller ones multiply by its zeros (the sparse benchmark starts at 2^14, and every
// fused kernel more costs CI compile time).
constexpr int kLogFusedBandFrom = 13;
constexpr int kSplitPoints = 4096;    // complex points per column block of the split passes (32 KiB)
constexpr int kThreads = 256;  // blocks of the element-wise kernels (the circular fold, the band mask)
// N2 of the split: 2048, or 4096 from m = 1M on (H200, fp16): at m = 1M, N1 = 256 takes two
// passes where 512 took three (L = 512K 1.23 -> 1.10 ms); at 4M, N1 = 1024, whose column blocks
// (8 columns, 8K points) share an SM two at a time, where the 16K-point blocks of N1 = 2048 had
// one SM each and nothing to overlap their workspace loads with (2M 1.30, r21 1.40). Below 1M the
// long rows were slower (L = 32K 0.99 -> 1.08 ms, 128K 1.02 -> 1.05).
constexpr int64_t kShortRow = 2048, kLongRow = 4096, kLongRowsFrom = int64_t(1) << 20;
__host__ __device__ constexpr int64_t row_length_of(int64_t m) { return m >= kLongRowsFrom ? kLongRow : kShortRow; }
// Threads of a row block: two rows of kRowN points, one thread per 16.
__host__ __device__ constexpr int row_threads_of(int row_n) { return row_n / 8; }
constexpr int kRowThreadsPerSM = 1024;  // the row kernels' blocks at 64 registers a thread
// A column block holds at least 8 columns (16-byte loads, whole sectors) up to this many
// points (128 KiB): long columns (N1 >= 1024) grow their blocks past kSplitPoints.
constexpr int kColumnPointsMax = 16384;
constexpr int kColumnThreadsMax = kColumnPointsMax / 16;
// Columns per block for N1 = 2^log_n1: kSplitPoints points, or at least 8 columns. (Conditional
// expressions: std::min and std::max are host functions, which device code may not call.)
__host__ __device__ constexpr int column_count_of(int log_n1) {
  const int points = kSplitPoints >> log_n1, cap = kColumnPointsMax >> log_n1;
  const int by_points = points > 1 ? points : 1, at_least_8 = cap < 8 ? cap : 8;
  const int cols = by_points > at_least_8 ? by_points : at_least_8;
  return cols < int(kShortRow) ? cols : int(kShortRow);
}
// Column lengths N1 of the split: m from 2 x kFusedMax to kLongRow x 2048 points.
constexpr int kLogSmallestN1 = 4, kLogLargestN1 = 11;
static_assert((int64_t(1) << kLogSmallestN1) * kShortRow == 2 * kFusedMax, "the split starts past the fused sizes");
static_assert(kLongRowsFrom / kLongRow >= (1 << kLogSmallestN1), "long rows leave columns of 16 points or more");
// Build-time tunables: points whose loads a thread of a split pass issues together
// (for_block_points; "output" groups load four values per point: the skip terms and gates
// of a pair, or filter bins). Measured on an H200: 1 was 8-10 % slower than 8 and 4. (On
// the fused path, at 64 registers, the groups made the transforms spill: its loops load
// one point at a time.)
#ifndef FFTCONV_CUDA_SPLIT_LOAD_GROUP
#define FFTCONV_CUDA_SPLIT_LOAD_GROUP 8
#endif
#ifndef FFTCONV_CUDA_SPLIT_OUTPUT_GROUP
#define FFTCONV_CUDA_SPLIT_OUTPUT_GROUP 4
#endif
constexpr int kSplitLoadGroup = FFTCONV_CUDA_SPLIT_LOAD_GROUP, kSplitOutputGroup = FFTCONV_CUDA_SPLIT_OUTPUT_GROUP;
static_assert(kShortRow % row_threads_of(kShortRow) == 0 && kLongRow % row_threads_of(kLongRow) == 0,
              "the product visits a row in whole steps of the block");
constexpr int kSplitPerThread = 16;  // points per thread of a split block

// Where a row (a (b, h) sequence of u, y and the gates, BHL: BLH calls are transposed
// around the kernels, channels_last.h) lies: element t at base + t.
struct RowAddress {
  int64_t base;
  int64_t channel;
};

struct Rows {
  int64_t H, L;
  // The division is done once per row, never per element.
  __device__ RowAddress address(int64_t row) const { return {row * L, row - row / H * H}; }
};

// ---- shared-memory transforms ----------------------------------------------

// The complex values of a block in shared memory. Value i lies at
// i ^ ((i >> 4) & 15): a warp that stores 16 values with stride 1, 2, 4, ... 16
// (a pass's butterfly outputs, interleaved sequences) reaches 16 different banks
// instead of 16 / stride. The swizzle stays within each aligned group of 16.
struct Points {
  float2* base;
  __device__ float2& operator[](int i) const { return base[i ^ ((i >> 4) & 15)]; }
};

// Visits idx = threadIdx.x + j * blockDim.x for j < kPer while idx < count (the caller
// ensures kPer * blockDim.x >= count), kGroup at a time: the group's `load(idx)` are all
// issued before its first `use(idx, loaded)`, so that a thread waits for global memory
// once per group rather than once per element (the loops were latency-bound).
template <int kPer, int kGroup, typename LoadFn, typename UseFn>
__device__ __forceinline__ void for_block_points(int count, LoadFn load, UseFn use) {
  static_assert(kPer % kGroup == 0, "whole groups");
  using Loaded = decltype(load(0));
#pragma unroll 1
  for (int g = 0; g < kPer; g += kGroup) {
    Loaded v[kGroup];
#pragma unroll
    for (int j = 0; j < kGroup; ++j) {
      const int idx = threadIdx.x + (g + j) * blockDim.x;
      if (idx < count) v[j] = load(idx);
    }
#pragma unroll
    for (int j = 0; j < kGroup; ++j) {
      const int idx = threadIdx.x + (g + j) * blockDim.x;
      if (idx < count) use(idx, v[j]);
    }
  }
}

// W^j = exp(-2 pi i j / kRootCount) for j < kRootCount: every in-block transform
// (sizes up to kRootCount) reads its twiddles here (through the read-only cache).
constexpr int kRootCount = int(kFusedMax);  // covers every in-block transform size
constexpr int kLogRootCount = 14;
static_assert(kRootCount == 1 << kLogRootCount, "kLogRootCount");
__device__ float2 g_roots[kRootCount];

// exp(sign * 2 pi i * num / m), m a power of two >= kRootCount (the split passes' twiddles): the
// table's root for the upper bits of num mod m times exp(-i theta) for the rest, theta <
// 2 pi / kRootCount, where sin and cos to third order are exact in float32. A load and a few
// FMAs where sincospif and a division had made the column passes issue-bound.
__device__ __forceinline__ float2 split_root(float sign, int64_t num, int64_t m) {
  const int log_m = __ffsll(m) - 1, log_fine = log_m - kLogRootCount;
  const int64_t e = num & (m - 1);
  const float2 coarse = __ldg(&g_roots[e >> log_fine]);
  const float theta = float(e & ((int64_t(1) << log_fine) - 1)) * ldexpf(6.28318530717958648f, -log_m);
  const float sin_t = theta - theta * theta * theta * (1.f / 6.f), cos_t = 1.f - 0.5f * theta * theta;
  return make_float2(coarse.x * cos_t + coarse.y * sin_t, -sign * (coarse.y * cos_t - coarse.x * sin_t));
}

__device__ __forceinline__ float2 cmul(float2 a, float2 b) {
  return make_float2(a.x * b.x - a.y * b.y, a.x * b.y + a.y * b.x);
}
__device__ __forceinline__ float2 cadd(float2 a, float2 b) { return make_float2(a.x + b.x, a.y + b.y); }
__device__ __forceinline__ float2 csub(float2 a, float2 b) { return make_float2(a.x - b.x, a.y - b.y); }
// (sign * i) * z
__device__ __forceinline__ float2 mul_i(float2 z, float sign) { return make_float2(-sign * z.y, sign * z.x); }

// exp(sign * 2 pi i * j / 16) for a compile-time j (folded to constants once unrolled).
__device__ __forceinline__ float2 root16(int j, float sign) {
  constexpr float c[16] = {1.f, 0.92387953f, 0.70710678f, 0.38268343f, 0.f, -0.38268343f, -0.70710678f,
                           -0.92387953f, -1.f, -0.92387953f, -0.70710678f, -0.38268343f, 0.f, 0.38268343f,
                           0.70710678f, 0.92387953f};
  return make_float2(c[j & 15], sign * c[(j + 12) & 15]);  // sin(x) = cos(x - pi/2)
}

__device__ __forceinline__ void dft2(float2& a0, float2& a1) {
  const float2 t = a0;
  a0 = cadd(t, a1);
  a1 = csub(t, a1);
}

__device__ __forceinline__ void dft4(float2& a0, float2& a1, float2& a2, float2& a3, float sign) {
  const float2 s02 = cadd(a0, a2), d02 = csub(a0, a2), s13 = cadd(a1, a3), d13 = mul_i(csub(a1, a3), sign);
  a0 = cadd(s02, s13);
  a2 = csub(s02, s13);
  a1 = cadd(d02, d13);
  a3 = csub(d02, d13);
}

// In-register DFT of R = 2, 4, 8 or 16 points, exp(sign * 2 pi i nk / R), natural order in and out.
// R = R1 * R2 (R1 = 4 or 2... below): n = R2*n1 + n2, k = k1 + R1*k2.
template <int R>
__device__ __forceinline__ void dft(float2 (&v)[R], float sign) {
  if constexpr (R == 2) {
    dft2(v[0], v[1]);
  } else if constexpr (R == 4) {
    dft4(v[0], v[1], v[2], v[3], sign);
  } else {
    constexpr int R2 = R / 4;  // R1 = 4
    // inner 4-point DFTs over n1, twiddle W_R^(n2*k1)
#pragma unroll
    for (int n2 = 0; n2 < R2; ++n2) {
      dft4(v[n2], v[n2 + R2], v[n2 + 2 * R2], v[n2 + 3 * R2], sign);
#pragma unroll
      for (int k1 = 1; k1 < 4; ++k1) v[n2 + R2 * k1] = cmul(v[n2 + R2 * k1], root16(n2 * k1 * (16 / R), sign));
    }
    // outer R2-point DFTs over n2 for each k1; X[k1 + 4*k2] ends at v[R2*k1 + k2]
    float2 out[R];
#pragma unroll
    for (int k1 = 0; k1 < 4; ++k1) {
      if constexpr (R2 == 2) {
        dft2(v[R2 * k1], v[R2 * k1 + 1]);
      } else {
        dft4(v[R2 * k1], v[R2 * k1 + 1], v[R2 * k1 + 2], v[R2 * k1 + 3], sign);
      }
#pragma unroll
      for (int k2 = 0; k2 < R2; ++k2) out[k1 + 4 * k2] = v[R2 * k1 + k2];
    }
#pragma unroll
    for (int k = 0; k < R; ++k) v[k] = out[k];
  }
}

// Stores v[i] * W_span^(i*p) at x[out + i*S] (W conjugated for the inverse, sign +1;
// root_step = kRootCount / span). The twiddles come from four table reads (i = 1, 4,
// 8, 12) and at most two products each instead of R - 1 scattered reads; they are
// made as they are stored, so that no array of them occupies registers.
template <int R, typename At>
__device__ __forceinline__ void store_twiddled(const float2 (&v)[R], int p, int root_step, float sign, At x) {
  auto root = [&](int i) {
    float2 r = __ldg(&g_roots[(i * p * root_step) & (kRootCount - 1)]);
    r.y *= -sign;
    return r;
  };
  float2 w[4];  // W^0 .. W^3
  w[0] = make_float2(1.f, 0.f);
  w[1] = root(1);
#pragma unroll
  for (int i = 2; i < 4; ++i) w[i] = cmul(w[i - 1], w[1]);
  x(0) = v[0];
#pragma unroll
  for (int i = 1; i < R && i < 4; ++i) x(i) = cmul(v[i], w[i]);
#pragma unroll
  for (int a = 4; a < R; a += 4) {
    const float2 wa = root(a);
    x(a) = cmul(v[a], wa);
#pragma unroll
    for (int i = 1; i < 4; ++i) x(a + i) = cmul(v[a + i], cmul(wa, w[i]));
  }
}

// What a pass may skip (template flags). kHalfInput: the upper half of the transform's
// input is zero, and its first pass reads R/2 values per butterfly; kNoTwiddle: the last
// pass, whose twiddles are all 1; kHalfOutput: only the lower half of the transform's output
// is needed (the causal cut), and its last pass computes and stores R/2 values per butterfly.
enum PassFlags : int { kPlain = 0, kHalfInput = 1, kNoTwiddle = 2, kHalfOutput = 4 };

// Whether a transform of n points skips the upper half of its input (its callers then need
// not write it): one pass (n <= 16) reads everything.
__device__ __forceinline__ bool skips_upper_input(int n, int prune) { return (prune & kHalfInput) && n > 16; }

// ---- in-block transforms --------------------------------------------------------
// Every transform has its size and shape as constants (the kernels are built per size):
// the swizzle of every value a butterfly touches then follows from that of its first. Where
// first has no bit set that i * kStep has (i < 16),
// swizzle(first + i * kStep) = swizzle(first) ^ key(i), key(i) = i * kStep ^ ((i * kStep >> 4) & 15),
// and key's bits from 4 up, where swizzle(first) has none, add. A pass works out one swizzle
// per butterfly, and each access costs at most one XOR with a constant, the rest being an
// immediate offset (the per-access index arithmetic of runtime-sized passes had kept the
// integer pipe the busiest; 8K 1.00 -> 0.81 ms on an H200).
template <int kStep>
struct Strided {
  float2* base;
  int swizzled_first;
  __device__ __forceinline__ Strided(Points x, int first) : base(x.base), swizzled_first(first ^ ((first >> 4) & 15)) {}
  __device__ __forceinline__ float2& operator()(int i) const {  // i a constant once unrolled
    const int key = i * kStep ^ ((i * kStep >> 4) & 15);
    return base[(swizzled_first ^ (key & 15)) + (key & ~15)];
  }
};

// Where a transform's first pass reads and its last pass writes: shared memory, or the
// thread's point j (the value at threadIdx.x + kThreadsN * j) by the caller's functions: in(j),
// and out() giving the writer put(j, v) (made only where the last pass stores, so that what it
// holds takes no registers during the transform). The first pass reads, and the last pass (no
// twiddles) writes, exactly the thread's points, so a caller that loads them from global memory
// or stores them there saves their trip through shared memory and the pass's barriers.
struct InShared {};
struct OutShared {};
// Shared memory too, but only the thread's points j where keep(j) holds: the others read as
// zero, or are not written. A frequency-sparse call's product is zero outside its band, so the
// forward transform need not write those points nor the inverse read them.
template <typename Keep>
struct InSharedWhere {
  Keep keep;
};
template <typename Keep>
struct OutSharedWhere {
  Keep keep;
};
template <typename T>
struct is_shared_where : std::false_type {};
template <typename Keep>
struct is_shared_where<InSharedWhere<Keep>> : std::true_type {};
template <typename Keep>
struct is_shared_where<OutSharedWhere<Keep>> : std::true_type {};

// One radix-R Stockham pass over kSpan-point sub-transforms with stride kS (= stride *
// batch), in place: butterfly (p, q) reads x[q + kS*(p + i*kSpan/R)] and writes
// x[q + kS*(R*p + i)] = W_kSpan^(i*p) * DFT_R(...)_i. Each of the block's kThreadsN threads
// takes 16 values (16/R butterflies; butterfly k of thread t reads points
// t + kThreadsN * (k + kPer * i)): they load them, the block waits, they write the results.
template <int R, int kSpan, int kS, int kThreadsN, int kFlags, typename In, typename Out>
__device__ __forceinline__ void radix_pass(Points x, float sign, In in, Out out_fn) {
  constexpr int kPer = 16 / R;
  constexpr int kLoaded = (kFlags & kHalfInput) ? R / 2 : R;
  constexpr int kStored = (kFlags & kHalfOutput) ? R / 2 : R;
  constexpr bool kInWhere = is_shared_where<In>::value, kOutWhere = is_shared_where<Out>::value;
  constexpr bool kFromShared = std::is_same_v<In, InShared> || kInWhere, kToShared = std::is_same_v<Out, OutShared>;
  static_assert(kToShared || (kFlags & kNoTwiddle), "only a last pass writes the thread's own points");
  float2 v[kPer][R];
  const Strided<kThreadsN> at(x, threadIdx.x);
#pragma unroll
  for (int k = 0; k < kPer; ++k) {
#pragma unroll
    for (int i = 0; i < R; ++i) {
      if (i >= kLoaded) {
        v[k][i] = make_float2(0.f, 0.f);
      } else if constexpr (kInWhere) {
        v[k][i] = in.keep(k + kPer * i) ? at(k + kPer * i) : make_float2(0.f, 0.f);
      } else if constexpr (kFromShared) {
        v[k][i] = at(k + kPer * i);
      } else {
        v[k][i] = in(k + kPer * i);
      }
    }
  }
  if constexpr (kFromShared && kToShared) __syncthreads();  // in place: every read before any write
#pragma unroll
  for (int k = 0; k < kPer; ++k) {
    const int idx = threadIdx.x + k * kThreadsN;
    const int q = idx & (kS - 1), p = idx / kS;
    dft<R>(v[k], sign);
    if constexpr (kOutWhere) {  // p = 0, q = idx: output i is the thread's point k + kPer * i
#pragma unroll
      for (int i = 0; i < kStored; ++i)
        if (out_fn.keep(k + kPer * i)) at(k + kPer * i) = v[k][i];
      continue;
    } else if constexpr (!kToShared) {
      const auto put = out_fn();
#pragma unroll
      for (int i = 0; i < kStored; ++i) put(k + kPer * i, v[k][i]);
      continue;
    }
    const Strided<kS> out(x, q + kS * R * p);
    if constexpr (kFlags & kNoTwiddle) {  // p = 0
#pragma unroll
      for (int i = 0; i < kStored; ++i) out(i) = v[k][i];
    } else {
      store_twiddled<R>(v[k], p, kRootCount / kSpan, sign, out);
    }
  }
  if constexpr (kToShared || kOutWhere) __syncthreads();
}

__host__ __device__ constexpr int log2_of(int n) { return n > 1 ? 1 + log2_of(n / 2) : 0; }

// Stockham transform of kBatch interleaved sequences of length kN (element j of sequence b
// at j*kBatch + b; powers of two, kN >= 16), unscaled, sign -1 forward and +1 inverse, in
// place, by a block of exactly kN*kBatch/16 threads, from stride kStride on: radix-16 passes
// in registers and one of radix 2, 4 or 8 for what is left, last or (kRestFirst) first.
// half_input: the upper half of the input is zero (kHalfInput); half_output: only the lower
// half of the output is used (kHalfOutput); a single pass prunes nothing. `in` and `out`: where
// the first pass reads and the last writes (InShared, OutShared, their ...Where forms, or the
// caller's functions). Ends with a barrier when the output is in shared memory.
// (kRestFirst measured faster for the fused inverse at 16K points, slower for the row pass.)
template <int kN, int kBatch, bool kRestFirst, int kStride = 1, typename In = InShared, typename Out = OutShared>
__device__ __forceinline__ void block_fft(Points x, float sign, bool half_input, bool half_output, In in = {},
                                          Out out = {}) {
  constexpr int kSpan = kN / kStride, kRest = 1 << (log2_of(kN) % 4);
  constexpr int R = (kRestFirst && kStride == 1 && kRest > 1) ? kRest : (kSpan >= 16 ? 16 : kSpan);
  constexpr int kS = kStride * kBatch, kThreadsN = kN * kBatch / 16;
  constexpr bool kFirst = kStride == 1, kLast = kSpan == R;
  static_assert(kN >= 16 && kThreadsN >= 1, "one thread per 16 points");
  if constexpr (kFirst && kLast) {
    radix_pass<R, kSpan, kS, kThreadsN, kNoTwiddle>(x, sign, in, out);
  } else if constexpr (kFirst) {
    if (half_input) {
      radix_pass<R, kSpan, kS, kThreadsN, kHalfInput>(x, sign, in, OutShared{});
    } else {
      radix_pass<R, kSpan, kS, kThreadsN, kPlain>(x, sign, in, OutShared{});
    }
  } else if constexpr (kLast) {
    if (half_output) {
      radix_pass<R, kSpan, kS, kThreadsN, kNoTwiddle | kHalfOutput>(x, sign, InShared{}, out);
    } else {
      radix_pass<R, kSpan, kS, kThreadsN, kNoTwiddle>(x, sign, InShared{}, out);
    }
  } else {
    radix_pass<R, kSpan, kS, kThreadsN, kPlain>(x, sign, InShared{}, OutShared{});
  }
  if constexpr (!kLast) {
    block_fft<kN, kBatch, kRestFirst, kStride * R>(x, sign, half_input, half_output, InShared{}, out);
  }
}

// The product of the packed pair with filters 1 and 2 (a = (K1 + K2)/2, c = (K1 - K2)/2,
// K at position i, spectra pre-scaled), for positions i (frequency f) and j (-f).
__device__ __forceinline__ void pair_product(float& zfr, float& zfi, float& zjr, float& zji, float k1r, float k1i,
                                             float k2r, float k2i) {
  const float ar = k1r + k2r, ai = k1i + k2i, cr = k1r - k2r, ci = k1i - k2i;
  const float fr = zfr, fi = zfi, jr = zjr, ji = zji;
  zfr = fr * ar - fi * ai + jr * cr + ji * ci;
  zfi = fr * ai + fi * ar + jr * ci - ji * cr;
  zjr = jr * ar + ji * ai + fr * cr - fi * ci;
  zji = ji * ar - jr * ai - fr * ci - fi * cr;
}

__device__ __forceinline__ bool finite_sum(float x) { return x - x == 0.f; }

// ---- the run ------------------------------------------------------------------

// Overlap-save pieces of a row: piece s gives outputs [s*step, s*step + step) from
// the inputs from s*step - lead on (lead = taps - 1). One piece of step = L, lead = 0:
// the whole row in one transform.
struct Pieces {
  int64_t count, step, lead;
};

struct RunArgs {
  const void* u;
  const void* pregate;
  const void* postgate;
  const void* D;
  void* y;
  const float* spectrum;  // per channel: re then im, `bins` floats each (the fused path pads them to a multiple of 4)
  float* spectrum_out;    // the filter kernels' output, same layout
  float2* work;           // split path: one complex sequence of m per pair
  unsigned* flags;        // split path, after the sequences: per pair, nonzero when it holds a non-finite value
  unsigned* any_flagged;  // after the flags: nonzero when any pair is flagged
  Rows rows;
  Pieces pieces;
  int64_t count;  // B * H * pieces.count sequences (rows, or pieces of rows)
  int64_t m, n1, n2, bins;
  int64_t fft_size;   // circular period, 0 for linear
  int64_t freq_keep;  // frequency-sparse: rfft bins kept, 0 for all
  int32_t D_dtype;
  bool vector_spectrum;  // the fused product may read 4 frequencies at once: the spectrum is 16-byte aligned
  bool vector_io;  // L, the pieces' step and lead multiples of 8, u, y and the gates 16-byte aligned (load_chunk)

  // Frequency-sparse calls: whether frequency f of the m-point transform lies outside the band.
  // (32-bit: every transform of the CUDA path is below 2^31 points, and freq_keep < m.)
  __device__ bool masked(int f) const { return freq_keep > 0 && min(f, int(m) - f) >= int(freq_keep); }

  // What the transforms of the rows may prune: the inputs of whole rows (no pieces) no
  // longer than half a transform leave its upper half zero; outputs ending within the
  // lower half, with no circular fold, leave the upper half of the inverse unused.
  __host__ __device__ int forward_prune() const { return pieces.count == 1 && 2 * rows.L <= m ? kHalfInput : kPlain; }
  __host__ __device__ int inverse_prune() const {
    return fft_size == 0 && 2 * (pieces.lead + pieces.step) <= m ? kHalfOutput : kPlain;
  }
};

// One sequence of a call (a row, or a piece of one): where its row lies, its skip
// coefficient, the time of its transform's point 0, and the points [out_begin,
// out_end) of its inverse transform that are outputs.
struct Row {
  bool valid;
  RowAddress at;
  float d;
  int64_t t0, out_begin, out_end;
};

__device__ Row row_info(const RunArgs& a, int64_t sequence) {
  if (sequence < 0 || sequence >= a.count) return {false, {0, 0}, 0.f, 0, 0, 0};
  const Pieces& p = a.pieces;
  const int64_t row = p.count == 1 ? sequence : sequence / p.count, piece = sequence - row * p.count;
  const RowAddress at = a.rows.address(row);
  const int64_t first = piece * p.step;
  return {true, at, a.D ? load_any(a.D, a.D_dtype, at.channel) : 0.f, first - p.lead, p.lead,
          p.lead + min(p.step, a.rows.L - first)};
}

// Split passes: fn(pair, part) for the blocks' work, `parts` blocks per pair (column blocks,
// or rows k1); fn may return early. Mode 0: block (pair, part) = (blockIdx.x, blockIdx.y). The
// reruns (of the few pairs flagged) run on a small grid that strides over all of them, and
// return at once when mode 0 flagged none (their launches had cost 5-8 % of the run).
// Each kernel is built twice (kRerun), so that the loops cost mode 0 no registers.
template <bool kRerun, typename Fn>
__device__ void for_grid_pairs(const RunArgs& a, int parts, Fn fn) {
  if constexpr (!kRerun) {
    fn(int64_t(blockIdx.x), int(blockIdx.y));
  } else {
    if (*a.any_flagged == 0) return;
    const int64_t pairs = (a.count + 1) / 2;
    for (int64_t pair = blockIdx.x; pair < pairs; pair += gridDim.x) {
      if (a.flags[pair] == 0) continue;
      for (int part = blockIdx.y; part < parts; part += gridDim.y) {
        fn(pair, part);
        __syncthreads();  // the next part reuses the shared memory
      }
    }
  }
}

// Marks a pair for the reruns (a NaN or an infinity in it).
__device__ void flag_pair(const RunArgs& a, int64_t pair) {
  a.flags[pair] = 1;
  *a.any_flagged = 1;
}

// Split passes: which rows of pair `pair` a block works on. Mode 0: both, packed;
// mode 1 or 2 (the rerun of the pairs flagged in mode 0, which for_grid_pairs alone visits):
// the first or the second alone, as the real part. False when that row does not exist.
enum PairMode { kPacked = 0, kFirstAlone = 1, kSecondAlone = 2 };

__device__ bool pair_rows(const RunArgs& a, int64_t pair, int mode, Row* r1, Row* r2) {
  const int64_t first = 2 * pair + (mode == kSecondAlone ? 1 : 0);
  *r1 = row_info(a, first);
  *r2 = mode == kPacked ? row_info(a, first + 1) : row_info(a, -1);
  return r1->valid;
}

template <int DT>
__device__ float load_v(const RunArgs& a, const Row& r, int64_t t) {
  const int64_t i = r.at.base + t;
  float v = Elem<DT>::load(a.u, i);
  if (a.pregate) v *= Elem<DT>::load(a.pregate, i);
  return v;
}

// Point t of a sequence's transform input: the (gated) input at time t0 + t, zero outside the row.
template <int DT>
__device__ float load_point(const RunArgs& a, const Row& r, int64_t t) {
  const int64_t time = r.t0 + t;
  return (r.valid && time >= 0 && time < a.rows.L) ? load_v<DT>(a, r, time) : 0.f;
}

// What y at `time` of a row needs besides its convolution: the skip term and the postgate
// (loaded apart from the store, so that a loop can issue the loads of several points first).
struct OutputTerms {
  float skip, gate;
};

template <int DT>
__device__ OutputTerms output_terms(const RunArgs& a, const Row& r, int64_t time) {
  return {a.D ? r.d * load_v<DT>(a, r, time) : 0.f, a.postgate ? Elem<DT>::load(a.postgate, r.at.base + time) : 1.f};
}

template <int DT>
__device__ void store_output(const RunArgs& a, const Row& r, int64_t time, float conv, OutputTerms terms) {
  Elem<DT>::store(a.y, r.at.base + time, (conv + terms.skip) * terms.gate);
}

// Whether point t of a sequence's inverse transform is an output (time r.t0 + t).
__device__ __forceinline__ bool is_output(const Row& r, int64_t t) {
  return r.valid && t >= r.out_begin && t < r.out_end;
}

// The output terms of points t of the rows of a packed pair (unused where not outputs).
template <int DT>
__device__ float4 pair_output_terms(const RunArgs& a, const Row& r1, const Row& r2, int64_t t) {
  OutputTerms o1{0.f, 1.f}, o2{0.f, 1.f};
  if (is_output(r1, t)) o1 = output_terms<DT>(a, r1, r1.t0 + t);
  if (is_output(r2, t)) o2 = output_terms<DT>(a, r2, r2.t0 + t);
  return make_float4(o1.skip, o1.gate, o2.skip, o2.gate);
}

template <int DT>
__device__ void store_pair_outputs(const RunArgs& a, const Row& r1, const Row& r2, int64_t t, float2 conv,
                                   float4 terms) {
  if (is_output(r1, t)) store_output<DT>(a, r1, r1.t0 + t, conv.x, {terms.x, terms.y});
  if (is_output(r2, t)) store_output<DT>(a, r2, r2.t0 + t, conv.y, {terms.z, terms.w});
}

// Vector I/O (RunArgs::vector_io): points t .. t + 7 of a sequence (times r.t0 + t .. + 7,
// all in the row or all outside it), t a multiple of 8, in 16-byte accesses: a thread waits
// for one load where it waited for eight.
template <int DT>
__device__ void load_chunk(const RunArgs& a, const Row& r, int64_t t, float (&v)[8]) {
  const int64_t time = r.t0 + t;
  if (!r.valid || time < 0 || time >= a.rows.L) {
#pragma unroll
    for (int j = 0; j < 8; ++j) v[j] = 0.f;
    return;
  }
  Elem<DT>::load8(a.u, r.at.base + time, v);
  if (a.pregate) {
    float g[8];
    Elem<DT>::load8(a.pregate, r.at.base + time, g);
#pragma unroll
    for (int j = 0; j < 8; ++j) v[j] *= g[j];
  }
}

// y at points t .. t + 7 of a sequence (outputs: is_output(r, t)) from their convolution values c.
template <int DT>
__device__ void store_chunk(const RunArgs& a, const Row& r, int64_t t, float (&c)[8]) {
  const int64_t i = r.at.base + r.t0 + t;
  if (a.D) {
    float v[8];
    load_chunk<DT>(a, r, t, v);
#pragma unroll
    for (int j = 0; j < 8; ++j) c[j] += r.d * v[j];
  }
  if (a.postgate) {
    float g[8];
    Elem<DT>::load8(a.postgate, i, g);
#pragma unroll
    for (int j = 0; j < 8; ++j) c[j] *= g[j];
  }
  Elem<DT>::store8(a.y, i, c);
}

// Pairs per fused block of m = 2^log_m points: about 128 * sqrt(m) points per block, which
// measured best on an H200 (2048 points at m = 256, 4096 at m = 1024, 8192 at m = 4096;
// 1.1-1.3x over a fixed size).
__host__ __device__ constexpr int fused_batch_of(int log_m) { return 1 << (log_m < 13 ? 7 - (log_m + 1) / 2 : 0); }

// Fused path: a block transforms `batch` sequences at once (interleaved in
// shared memory: point t of sequence b at t*batch + b). Sequence b packs rows
// first_row + 2b and first_row + 2b + 1; in `alone` mode it holds row
// first_row + b only (imaginary part zero), so that a NaN or an infinity never
// shares a transform with another row. Returns false (and does nothing else)
// when a packed pair holds a non-finite value.
// kBand (frequency-sparse): the points outside the band are neither written by the forward's
// last pass nor read by the inverse's first pass (OutSharedWhere, InSharedWhere).
template <int DT, int kLogM, bool kBand>
__device__ __forceinline__ bool fused_block(const RunArgs& a, int64_t first_row, bool alone, float* sm) {
  constexpr int log_m = kLogM, m = 1 << kLogM, batch = fused_batch_of(kLogM);
  constexpr int points = m * batch;
  const Points x{reinterpret_cast<float2*>(sm)};  // in place: blockDim.x = points / 16
  // the rows of the block's sequences, looked up once: sequence b packs rows[2b] (real part)
  // and rows[2b + 1] (imaginary part)
  Row* rows = reinterpret_cast<Row*>(x.base + points);
  for (int i = threadIdx.x; i < 2 * batch; i += blockDim.x) {
    const int b = i >> 1, part = i & 1;
    rows[i] = row_info(a, alone ? (part == 0 ? first_row + b : -1) : first_row + 2 * b + part);
  }
  __syncthreads();
  // point t of sequence b at t*batch + b; consecutive threads take consecutive t of one row
  if (a.vector_io) {
    // eight points per thread and step; the upper half stays unwritten when the transform skips it
    const int log_loaded = skips_upper_input(m, a.forward_prune()) ? log_m - 1 : log_m;
    for (int chunk = threadIdx.x; chunk < (batch << log_loaded) / 8; chunk += blockDim.x) {
      const int b = (chunk * 8) >> log_loaded, t = (chunk * 8) & ((1 << log_loaded) - 1);
      float v1[8], v2[8];
      load_chunk<DT>(a, rows[2 * b], t, v1);
      load_chunk<DT>(a, rows[2 * b + 1], t, v2);
#pragma unroll
      for (int j = 0; j < 8; ++j) x[(t + j) * batch + b] = make_float2(v1[j], v2[j]);
    }
  } else {
    for (int idx = threadIdx.x; idx < points; idx += blockDim.x) {
      const int b = idx >> log_m, t = idx & (m - 1);
      const Row &r1 = rows[2 * b], &r2 = rows[2 * b + 1];
      x[t * batch + b] = make_float2(load_point<DT>(a, r1, t), load_point<DT>(a, r2, t));
    }
  }
  __syncthreads();
  // thread t's point j is frequency t / batch + j * m / 16 (of sequence t % batch)
  const auto kept = [&](int j) { return !a.masked(int(threadIdx.x) / batch + j * (m / 16)); };
  if constexpr (kBand) {
    block_fft<m, batch, false>(x, -1.f, a.forward_prune() & kHalfInput, false, InShared{},
                               OutSharedWhere<decltype(kept)>{kept});
  } else {
    block_fft<m, batch, false>(x, -1.f, a.forward_prune() & kHalfInput, false);
  }
  if (!alone) {
    // The DC bin is the sum of its sequence: non-finite exactly when a value (or its filter's) is.
    int bad = 0;
    for (int b = 0; b < batch; ++b) {
      const Row &r1 = rows[2 * b], &r2 = rows[2 * b + 1];
      if (!r2.valid) continue;
      const float k1 = a.spectrum[r1.at.channel * 2 * a.bins], k2 = a.spectrum[r2.at.channel * 2 * a.bins];
      bad |= !(finite_sum(x[b].x) && finite_sum(x[b].y) && finite_sum(k1) && finite_sum(k2));
    }
    __syncthreads();  // every thread has read the DC bins before the product rewrites them
    if (bad) return false;
  }
  // Pairs {f, m - f} for f in [1, m/2); the thread of f = 0 also takes the Nyquist bin m/2.
  const int half = m / 2, log_half = log_m - 1;
  // the filters of sequence b: k1 (real part's row) and k2 (imaginary part's; k1 when none)
  auto filters = [&](int b, const float** k1, const float** k2) {
    const Row &r1 = rows[2 * b], &r2 = rows[2 * b + 1];
    *k1 = a.spectrum + r1.at.channel * 2 * a.bins;
    *k2 = r2.valid ? a.spectrum + r2.at.channel * 2 * a.bins : *k1;
  };
  // k1 re, im, k2 re, im at frequency fi; outside the kept band no read (the product zeroes it)
  auto filter_at = [&](const float* k1, const float* k2, int fi) {
    if (a.masked(fi)) return make_float4(0.f, 0.f, 0.f, 0.f);
    return make_float4(k1[fi], k1[a.bins + fi], k2[fi], k2[a.bins + fi]);
  };
  auto product = [&](int b, int fi, float4 k) {
    const int i = fi * batch + b, j = ((m - fi) & (m - 1)) * batch + b;
    if (a.masked(fi)) {
      if constexpr (!kBand) x[i] = x[j] = make_float2(0.f, 0.f);
      return;
    }
    float2 zf = x[i], zj = x[j];
    pair_product(zf.x, zf.y, zj.x, zj.y, k.x, k.y, k.z, k.w);
    x[i] = zf;
    if (j != i) x[j] = zj;
  };
  if (a.vector_spectrum) {
    // four consecutive frequencies per thread and step, each filter part in one 16-byte read
    for (int idx = 4 * threadIdx.x; idx < half * batch; idx += 4 * blockDim.x) {
      const int b = idx >> log_half, f = idx & (half - 1);
      if (!rows[2 * b].valid) continue;
      const float *k1, *k2;
      filters(b, &k1, &k2);
      // below m/2, frequency f is masked from freq_keep on: a masked first frequency masks all four
      const bool read = !a.masked(f);
      const float4 zero = make_float4(0.f, 0.f, 0.f, 0.f);
      const float4 k1r = read ? *reinterpret_cast<const float4*>(k1 + f) : zero;
      const float4 k1i = read ? *reinterpret_cast<const float4*>(k1 + a.bins + f) : zero;
      const float4 k2r = read ? *reinterpret_cast<const float4*>(k2 + f) : zero;
      const float4 k2i = read ? *reinterpret_cast<const float4*>(k2 + a.bins + f) : zero;
      product(b, f, make_float4(k1r.x, k1i.x, k2r.x, k2i.x));
      product(b, f + 1, make_float4(k1r.y, k1i.y, k2r.y, k2i.y));
      product(b, f + 2, make_float4(k1r.z, k1i.z, k2r.z, k2i.z));
      product(b, f + 3, make_float4(k1r.w, k1i.w, k2r.w, k2i.w));
      if (f == 0) product(b, half, filter_at(k1, k2, half));
    }
  } else {
    for (int idx = threadIdx.x; idx < half * batch; idx += blockDim.x) {
      const int b = idx >> log_half, f = idx & (half - 1);
      if (!rows[2 * b].valid) continue;
      const float *k1, *k2;
      filters(b, &k1, &k2);
      product(b, f, filter_at(k1, k2, f));
      if (f == 0) product(b, half, filter_at(k1, k2, half));
    }
  }
  __syncthreads();
  if constexpr (kBand) {
    block_fft<m, batch, true>(x, 1.f, false, a.inverse_prune() & kHalfOutput, InSharedWhere<decltype(kept)>{kept});
  } else {
    block_fft<m, batch, true>(x, 1.f, false, a.inverse_prune() & kHalfOutput);
  }
  // t over the next power of two above the last output point (shifts, not divisions)
  const int outputs_end = int(a.pieces.lead + a.pieces.step);  // <= m
  const int log_lp = outputs_end > 1 ? 32 - __clz(outputs_end - 1) : 0;
  if (a.vector_io) {  // the output ranges start and end at multiples of 8
    for (int chunk = threadIdx.x; chunk < (batch << log_lp) / 8; chunk += blockDim.x) {
      const int b = (chunk * 8) >> log_lp, t = (chunk * 8) & ((1 << log_lp) - 1);
      if (t >= outputs_end) continue;
#pragma unroll 1
      for (int part = 0; part < 2; ++part) {
        const Row& r = rows[2 * b + part];
        if (!is_output(r, t)) continue;
        float c[8];
#pragma unroll
        for (int j = 0; j < 8; ++j) {
          const float2 z = x[(t + j) * batch + b];
          c[j] = part ? z.y : z.x;
          if (a.fft_size > 0 && t + j + a.fft_size < m) {
            const float2 wrap = x[(t + j + a.fft_size) * batch + b];
            c[j] += part ? wrap.y : wrap.x;
          }
        }
        store_chunk<DT>(a, r, t, c);
      }
    }
    __syncthreads();
    return true;
  }
  for (int idx = threadIdx.x; idx < (batch << log_lp); idx += blockDim.x) {
    const int b = idx >> log_lp, t = idx & ((1 << log_lp) - 1);  // consecutive threads: consecutive t
    const Row &r1 = rows[2 * b], &r2 = rows[2 * b + 1];
    if (t >= outputs_end || !r1.valid) continue;
    float2 c = x[t * batch + b];
    if (a.fft_size > 0 && t + a.fft_size < m) {
      const float2 wrap = x[(t + a.fft_size) * batch + b];
      c.x += wrap.x, c.y += wrap.y;
    }
    store_pair_outputs<DT>(a, r1, r2, t, c, pair_output_terms<DT>(a, r1, r2, t));
  }
  __syncthreads();
  return true;
}

template <int DT, int kLogM, bool kBand>
__global__ void __launch_bounds__(kFusedThreadsMax) fused_kernel(RunArgs a) {
  extern __shared__ float sm[];
  constexpr int batch = fused_batch_of(kLogM);
  const int64_t first_row = 2 * int64_t(blockIdx.x) * batch;
  // Attempt 0 packs pairs; when some pair of the block holds a NaN or an infinity, attempts
  // 1 and 2 take every row on its own (a loop, so that the block's code is there once).
#pragma unroll 1
  for (int attempt = 0; attempt < 3; ++attempt) {
    const bool done = fused_block<DT, kLogM, kBand>(a, first_row + (attempt == 2 ? batch : 0), attempt > 0, sm);
    if (attempt == 0 && done) return;
  }
}

// block_fft of the column blocks of the split passes (N1 x column_count_of(N1) points), its
// size picked at run time: one constant-size transform per column length.
template <bool kRestFirst, int kLogN1 = kLogSmallestN1, typename In, typename Out>
__device__ __forceinline__ void column_fft(int n1, Points x, float sign, bool half_input, bool half_output, In in,
                                           Out out) {
  if constexpr (kLogN1 <= kLogLargestN1) {
    if (n1 == 1 << kLogN1) {
      block_fft<1 << kLogN1, column_count_of(kLogN1), kRestFirst>(x, sign, half_input, half_output, in, out);
    } else {
      column_fft<kRestFirst, kLogN1 + 1>(n1, x, sign, half_input, half_output, in, out);
    }
  }
}

// The column passes' points of the workspace, thread by thread: point j of a thread, the
// block's point idx = threadIdx.x + j * blockDim.x (row k1 = idx / cols of column c0 + idx %
// cols), lies at at(j) = &work[k1 * N2 + column] and takes twiddle(j) = W_m^(sign * k1 * column).
// blockDim.x, a power of two of at least 256 (blocks hold at least kSplitPoints points), is a
// multiple of cols (N1 >= 16), so a thread keeps one column and steps over rows: one address per
// thread. These are the points the first and last passes of the block's transform take
// (block_fft's In/Out hooks), so the workspace is read and written by those passes, not through
// shared memory. The twiddles, W^(k1 c) for k1 = r0 + j * step, are W^(r0 c) W^(4 g step c) (g
// = j / 4) times W^(i step c) (i = j % 4): three split_root per thread, not 16.
struct ColumnPoints {
  float2* first;
  int64_t step;
  float2 w[4];      // W^(i * step * column), w[0] unused
  float2 group[4];  // W^((r0 + 4 g step) * column)

  __device__ ColumnPoints(const RunArgs& a, int64_t pair, int c0, int cols, float sign) {
    const int log_cols = __ffs(cols) - 1, row_step = blockDim.x >> log_cols;
    const int first_row = threadIdx.x >> log_cols;
    const int64_t column = c0 + (threadIdx.x & (cols - 1));
    first = a.work + pair * a.m + int64_t(first_row) * a.n2 + column;
    step = int64_t(row_step) * a.n2;
    w[1] = split_root(sign, row_step * column, a.m);
    w[2] = cmul(w[1], w[1]);
    w[3] = cmul(w[2], w[1]);
    const float2 group_step = split_root(sign, 4 * row_step * column, a.m);
    group[0] = split_root(sign, first_row * column, a.m);
#pragma unroll
    for (int g = 1; g < 4; ++g) group[g] = cmul(group[g - 1], group_step);
  }
  __device__ __forceinline__ float2* at(int j) const { return first + j * step; }
  __device__ __forceinline__ float2 twiddle(int j) const { return j % 4 ? cmul(group[j / 4], w[j % 4]) : group[j / 4]; }
};
static_assert(kSplitPerThread == 16, "ColumnPoints: four groups of four");

// Split pass 1: block (pair, column block b): columns c0 = b * cols .. c0 + cols - 1 of the
// N1 x N2 matrix of the packed pair (zero past L), transformed and twiddled.
// load(t) gives point t of the pair; with `chunked` (cols >= 8), chunk(t, v1, v2) gives
// points t .. t + 7 of its two rows instead. `prune`: kHalfInput when the input is zero from
// t = m/2 on. Returns whether every value loaded is finite.
template <typename LoadFn, typename ChunkFn>
__device__ bool columns_forward(const RunArgs& a, int64_t pair, int column_block, int cols, int prune, float* sm,
                                LoadFn load, bool chunked, ChunkFn chunk) {
  const int n1 = int(a.n1), n2 = int(a.n2);
  const int c0 = column_block * cols;
  const int log_cols = __ffs(cols) - 1;  // cols is a power of two
  const Points x{reinterpret_cast<float2*>(sm)};
  // point idx of the block: row idx / cols, column c0 + idx % cols; the rows from n1/2 on
  // stay unwritten when the transform skips them
  const int loaded = skips_upper_input(n1, prune) ? n1 * cols / 2 : n1 * cols;
  auto time = [&](int idx) { return int64_t(idx >> log_cols) * n2 + c0 + (idx & (cols - 1)); };
  bool finite = true;
  if (chunked) {
    for (int idx = 8 * threadIdx.x; idx < loaded; idx += 8 * blockDim.x) {
      float v1[8], v2[8];
      chunk(time(idx), v1, v2);
#pragma unroll
      for (int j = 0; j < 8; ++j) {
        finite = finite && finite_sum(v1[j]) && finite_sum(v2[j]);
        x[idx + j] = make_float2(v1[j], v2[j]);
      }
    }
  } else {
    for_block_points<kSplitPerThread, kSplitLoadGroup>(
        loaded, [&](int idx) { return load(time(idx)); },
        [&](int idx, float2 v) {
          finite = finite && finite_sum(v.x) && finite_sum(v.y);
          x[idx] = v;
        });
  }
  __syncthreads();
  column_fft<false>(n1, x, -1.f, prune & kHalfInput, false, InShared{}, [&] {
    return [points = ColumnPoints(a, pair, c0, cols, -1.f)](int j, float2 v) {
      *points.at(j) = cmul(v, points.twiddle(j));
    };
  });
  return finite;
}

// The column kernels run blocks of up to 1024 threads (64 registers); the row kernels hold to
// 64 registers in mode 0 (four blocks of 256 threads per SM for 2048-point rows, two of 512 for
// 4096), and their reruns, which loop over their few pairs, may take more instead of spilling.
template <int DT, bool kRerun>
__global__ void __launch_bounds__(kColumnThreadsMax) columns_forward_kernel(RunArgs a, int cols, int mode) {
  extern __shared__ float sm[];
  for_grid_pairs<kRerun>(a, int(a.n2) / cols, [&](int64_t pair, int column_block) {
    Row r1, r2;
    if (!pair_rows(a, pair, mode, &r1, &r2)) return;
    const bool finite = columns_forward(
        a, pair, column_block, cols, a.forward_prune(), sm,
        [&](int64_t t) { return make_float2(load_point<DT>(a, r1, t), load_point<DT>(a, r2, t)); },
        a.vector_io && cols >= 8, [&](int64_t t, float(&v1)[8], float(&v2)[8]) {
          load_chunk<DT>(a, r1, t, v1);
          load_chunk<DT>(a, r2, t, v2);
        });
    if (!finite && r2.valid) flag_pair(a, pair);
  });
}

// Split pass 2: block (pair, k1 in [0, N1/2]): rows k1 and N1 - k1 (one row when
// they coincide) transformed, multiplied (or, for a filter, split into its two
// spectra), transformed back. `product` gets the rows in shared memory.
template <int kRowN, typename ProductFn>
__device__ void rows_pass(const RunArgs& a, int64_t pair, int k1, float* sm, bool inverse_after, ProductFn product) {
  constexpr int kRowThreads = row_threads_of(kRowN);
  const int n1 = int(a.n1), n2 = int(a.n2);
  const int partner = (n1 - k1) % n1;
  const int rows = partner == k1 ? 1 : 2;
  // Two interleaved slots (element c of slot w at 2c + w): row k1 and its partner. A row
  // paired with itself (k1 = 0, N1/2) is loaded twice so that every block has the same
  // shape; only its first slot is multiplied and stored.
  const Points x{reinterpret_cast<float2*>(sm)};
  const int slot = threadIdx.x & 1, column = threadIdx.x >> 1;
  float2* row = a.work + pair * a.m + int64_t(slot ? partner : k1) * n2 + column;
  // Thread t's point j (shared-memory index t + j * kRowThreads) is column t / 2 + j * kRowThreads
  // / 2 of the row in slot t & 1: the first forward pass loads, and the last inverse pass
  // stores, the workspace itself (the row pass was bound by shared-memory bandwidth).
  const auto load = [&](int j) { return row[j * (kRowThreads / 2)]; };
  block_fft<kRowN, 2, false>(x, -1.f, false, false, load);
  product(k1, partner, rows, x);
  __syncthreads();
  if (!inverse_after) return;
  const auto store = [&](int j, float2 v) {
    if (slot < rows) row[j * (kRowThreads / 2)] = v;
  };
  block_fft<kRowN, 2, false>(x, 1.f, false, false, InShared{}, [&] { return store; });
}

// The pairs {f, -f} within rows k1 and partner: pair idx < row_pair_count is (i, j, c), with
// i, j the shared-memory indices (two interleaved slots, see rows_pass) and c the column of i in row k1.
__device__ __forceinline__ int row_pair_count(int k1, int rows, int n2) {
  return rows == 2 ? n2 : (k1 == 0 ? n2 / 2 + 1 : n2 / 2);
}

__device__ __forceinline__ int3 row_pair(int k1, int rows, int n2, int c) {
  if (rows == 2) return make_int3(2 * c, 2 * (n2 - 1 - c) + 1, c);  // row N1 - k1, column n2 - 1 - c
  if (k1 == 0) return make_int3(2 * c, 2 * ((n2 - c) & (n2 - 1)), c);  // row 0: column (n2 - c) mod n2
  return make_int3(2 * c, 2 * (n2 - 1 - c), c);                          // row N1/2: column n2 - 1 - c
}

template <bool kRerun, int kRowN>
__global__ void __launch_bounds__(row_threads_of(kRowN), kRerun ? 1 : kRowThreadsPerSM / row_threads_of(kRowN))
    rows_product_kernel(RunArgs a, int mode) {
  constexpr int kRowThreads = row_threads_of(kRowN);
  extern __shared__ float sm[];
  for_grid_pairs<kRerun>(a, int(a.n1) / 2 + 1, [&](int64_t pair, int part) {
    Row r1, r2;
    if (!pair_rows(a, pair, mode, &r1, &r2)) return;
    const float* k1s = a.spectrum + r1.at.channel * 2 * a.bins;
    const float* k2s = r2.valid ? a.spectrum + r2.at.channel * 2 * a.bins : k1s;
    // a non-finite filter (its DC bin, the sum of its taps) would spread to the other row
    if (r2.valid && threadIdx.x == 0 && !(finite_sum(k1s[0]) && finite_sum(k2s[0]))) flag_pair(a, pair);
    rows_pass<kRowN>(a, pair, part, sm, true, [&](int k1, int partner, int rows, Points x) {
      const int n2 = int(a.n2);
      const int64_t base = int64_t(k1) * n2;  // canonical positions of row k1
      if (rows == 2 && a.freq_keep == 0) {
        // Nearly every block: thread t takes the pairs c = t + j * kRowThreads at 2c and
        // 2 (n2 - 1 - c) + 1: both Strided with steps of 2 * kRowThreads.
        constexpr int kPairs = kRowN / kRowThreads;
        static_assert(kPairs % kSplitOutputGroup == 0, "whole groups");
        const int t = threadIdx.x;
        const float *f1 = k1s + base + t, *f2 = k2s + base + t;
        const int last = 2 * (n2 - 1 - t) + 1 - 2 * kRowThreads * (kPairs - 1);  // slot of j = kPairs - 1
        const Strided<2 * kRowThreads> fwd(x, 2 * t), back(x, last);
#pragma unroll
        for (int g = 0; g < kPairs; g += kSplitOutputGroup) {
          float4 k[kSplitOutputGroup];
#pragma unroll
          for (int j = 0; j < kSplitOutputGroup; ++j) {
            const int at = (g + j) * kRowThreads;
            k[j] = make_float4(f1[at], f1[a.bins + at], f2[at], f2[a.bins + at]);
          }
#pragma unroll
          for (int j = 0; j < kSplitOutputGroup; ++j) {
            float2 zf = fwd(g + j), zj = back(kPairs - 1 - g - j);
            pair_product(zf.x, zf.y, zj.x, zj.y, k[j].x, k[j].y, k[j].z, k[j].w);
            fwd(g + j) = zf;
            back(kPairs - 1 - g - j) = zj;
          }
        }
        return;
      }
      // frequency k1 + N1*c outside the kept band: no filter read, no product
      auto masked = [&](int c) { return a.masked(k1 + int(a.n1) * c); };
      for_block_points<kRowN / kRowThreads, kSplitOutputGroup>(
          row_pair_count(k1, rows, n2),
          [&](int c) {
            if (masked(c)) return make_float4(0.f, 0.f, 0.f, 0.f);
            return make_float4(k1s[base + c], k1s[a.bins + base + c], k2s[base + c], k2s[a.bins + base + c]);
          },
          [&](int c, float4 k) {
            const int3 at = row_pair(k1, rows, n2, c);
            if (masked(c)) {
              x[at.x] = x[at.y] = make_float2(0.f, 0.f);
              return;
            }
            float2 zf = x[at.x], zj = x[at.y];
            pair_product(zf.x, zf.y, zj.x, zj.y, k.x, k.y, k.z, k.w);
            x[at.x] = zf;
            if (at.y != at.x) x[at.y] = zj;
          });
    });
  });
}

// Split pass 3: block (pair, column block): twiddle back, inverse column
// transforms, then `finish(t, values, prepare(t))` for the time steps t < limit
// (prepare issues the loads that finish needs, several points at a time).
// With `chunked` (cols >= 8, limit a multiple of 8), finish_chunk(t, c1, c2) takes points
// t .. t + 7 of the two rows at once instead.
template <typename PrepareFn, typename FinishFn, typename ChunkFn>
__device__ void columns_inverse(const RunArgs& a, int64_t pair, int column_block, int cols, int64_t limit, float* sm,
                                PrepareFn prepare, FinishFn finish, bool chunked, ChunkFn finish_chunk) {
  const int n1 = int(a.n1), n2 = int(a.n2);
  const int c0 = column_block * cols;
  const int log_cols = __ffs(cols) - 1;  // cols is a power of two
  const Points x{reinterpret_cast<float2*>(sm)};
  const ColumnPoints points(a, pair, c0, cols, 1.f);
  column_fft<true>(n1, x, 1.f, false, 2 * limit <= a.m, [&](int j) { return cmul(*points.at(j), points.twiddle(j)); },
                   OutShared{});
  auto time = [&](int idx) { return int64_t(idx >> log_cols) * n2 + c0 + (idx & (cols - 1)); };
  if (chunked) {
    for (int idx = 8 * threadIdx.x; idx < n1 * cols; idx += 8 * blockDim.x) {
      const int64_t t = time(idx);
      if (t >= limit) continue;
      float c1[8], c2[8];
#pragma unroll
      for (int j = 0; j < 8; ++j) c1[j] = x[idx + j].x, c2[j] = x[idx + j].y;
      finish_chunk(t, c1, c2);
    }
    return;
  }
  for_block_points<kSplitPerThread, kSplitOutputGroup>(
      n1 * cols, [&](int idx) { return prepare(time(idx)); },
      [&](int idx, auto prepared) {
        const int64_t t = time(idx);
        if (t < limit) finish(t, x[idx], prepared);
      });
}

template <int DT, bool kRerun>
__global__ void __launch_bounds__(kColumnThreadsMax) columns_inverse_kernel(RunArgs a, int cols, int mode) {
  extern __shared__ float sm[];
  for_grid_pairs<kRerun>(a, int(a.n2) / cols, [&](int64_t pair, int column_block) {
    Row r1, r2;
    if (!pair_rows(a, pair, mode, &r1, &r2)) return;
    if (a.fft_size > 0) {
      // circular: keep the time series (the wrap lies in other columns), fold in fold_kernel
      float2* out = a.work + pair * a.m;
      columns_inverse(
          a, pair, column_block, cols, a.m, sm, [](int64_t) { return 0; },
          [&](int64_t t, float2 c, int) { out[t] = c; }, false, [](int64_t, float(&)[8], float(&)[8]) {});
      return;
    }
    columns_inverse(
        a, pair, column_block, cols, a.pieces.lead + a.pieces.step, sm,
        [&](int64_t t) { return pair_output_terms<DT>(a, r1, r2, t); },
        [&](int64_t t, float2 c, float4 terms) { store_pair_outputs<DT>(a, r1, r2, t, c, terms); },
        a.vector_io && cols >= 8, [&](int64_t t, float(&c1)[8], float(&c2)[8]) {
          if (is_output(r1, t)) store_chunk<DT>(a, r1, t, c1);
          if (is_output(r2, t)) store_chunk<DT>(a, r2, t, c2);
        });
  });
}

template <int DT, bool kRerun>
__global__ void fold_kernel(RunArgs a, int mode) {
  for_grid_pairs<kRerun>(a, 1, [&](int64_t pair, int) {
    Row r1, r2;
    if (!pair_rows(a, pair, mode, &r1, &r2)) return;
    const float2* series = a.work + pair * a.m;
    for (int64_t t = threadIdx.x; t < a.rows.L; t += blockDim.x) {
      float2 v = series[t];
      if (t + a.fft_size < a.m) {
        const float2 w = series[t + a.fft_size];
        v.x += w.x, v.y += w.y;
      }
      store_output<DT>(a, r1, t, v.x, output_terms<DT>(a, r1, t));
      if (r2.valid) store_output<DT>(a, r2, t, v.y, output_terms<DT>(a, r2, t));
    }
  });
}

// ---- the filter spectrum -------------------------------------------------------

// The effective filter of a call (geometry.h, Conv): c[t] = k[t] (t < taps) plus, for two-sided
// calls, k_rev[j] at t = (period - j) mod period (j < rev_taps), for t < extent (zero past it).
struct FilterArgs {
  const void* k;
  int32_t k_dtype;
  int64_t H, Lk, taps;
  const void* k_rev;  // null with rev_taps = 0 (causal)
  int32_t k_rev_dtype;
  int64_t Lk_rev, rev_taps, period;
  int64_t extent;  // points of c that reach the outputs
  bool vector_k;   // causal, Lk a multiple of 8 and k 16-byte aligned (load_filter_chunk)
};

// Point t of channel h's effective filter (h < 0: zero).
__device__ float filter_point(const FilterArgs& f, int64_t h, int64_t t) {
  if (h < 0 || t >= f.extent) return 0.f;
  float value = t < f.taps ? load_any(f.k, f.k_dtype, h * f.Lk + t) : 0.f;
  if (f.rev_taps > 0 && t < f.period) {
    const int64_t j = t == 0 ? 0 : f.period - t;  // the k_rev tap at lag -j lies at (n - j) mod n
    if (j < f.rev_taps) value += load_any(f.k_rev, f.k_rev_dtype, h * f.Lk_rev + j);
  }
  return value;
}

// Taps t .. t + 7 of filter h (t a multiple of 8; zero past the taps used, or for h < 0).
__device__ void load_filter_chunk(const FilterArgs& f, int64_t h, int64_t t, float (&v)[8]) {
  if (h < 0 || t >= f.taps) {
#pragma unroll
    for (int j = 0; j < 8; ++j) v[j] = 0.f;
    return;
  }
  const int64_t i = h * f.Lk + t;  // t + 8 <= Lk: Lk is a multiple of 8
  switch (f.k_dtype) {
    case FFTCONV_FLOAT16: Elem<FFTCONV_FLOAT16>::load8(f.k, i, v); break;
    case FFTCONV_BFLOAT16: Elem<FFTCONV_BFLOAT16>::load8(f.k, i, v); break;
    default: Elem<FFTCONV_FLOAT32>::load8(f.k, i, v); break;
  }
#pragma unroll
  for (int j = 0; j < 8; ++j)
    if (t + j >= f.taps) v[j] = 0.f;
}

// K1 = (Z[f] + conj Z[-f]) / 2 and K2 = (Z[f] - conj Z[-f]) / 2i, times `scale`.
__device__ __forceinline__ void split_pair(float zfr, float zfi, float zjr, float zji, float scale, float* k1r,
                                           float* k1i, float* k2r, float* k2i) {
  *k1r = (zfr + zjr) * scale;
  *k1i = (zfi - zji) * scale;
  *k2r = (zfi + zji) * scale;
  *k2i = (zjr - zfr) * scale;
}

// Fused-size filters: the spectra of channels `first` and `second` (< 0: none)
// by frequency f = 0 .. m/2. Refuses (false) a packed pair holding a NaN or an
// infinity, which the split would spread from one filter to the other.
template <int kLogM>
__device__ __forceinline__ bool fused_filter_pair(const RunArgs& a, const FilterArgs& f, int64_t first, int64_t second,
                                                  float* sm) {
  constexpr int m = 1 << kLogM;
  const Points x{reinterpret_cast<float2*>(sm)};  // in place: blockDim.x = m / 16
  const int prune = 2 * f.extent <= m ? kHalfInput : kPlain;
  if (f.vector_k) {
    for (int t = 8 * threadIdx.x; t < (skips_upper_input(m, prune) ? m / 2 : m); t += 8 * blockDim.x) {
      float v1[8], v2[8];
      load_filter_chunk(f, first, t, v1);
      load_filter_chunk(f, second, t, v2);
#pragma unroll
      for (int j = 0; j < 8; ++j) x[t + j] = make_float2(v1[j], v2[j]);
    }
  } else {
    for (int t = threadIdx.x; t < m; t += blockDim.x)
      x[t] = make_float2(filter_point(f, first, t), filter_point(f, second, t));
  }
  __syncthreads();
  block_fft<m, 1, false>(x, -1.f, prune & kHalfInput, false);
  if (second >= 0 && !(finite_sum(x[0].x) && finite_sum(x[0].y))) {
    __syncthreads();
    return false;
  }
  const float scale = 0.25f / float(m);
  float* s1 = a.spectrum_out + first * 2 * a.bins;
  float* s2 = second >= 0 ? a.spectrum_out + second * 2 * a.bins : nullptr;
  for (int k = threadIdx.x; k <= m / 2; k += blockDim.x) {
    float k1r, k1i, k2r, k2i;
    split_pair(x[k].x, x[k].y, x[(m - k) & (m - 1)].x, x[(m - k) & (m - 1)].y, scale, &k1r, &k1i, &k2r, &k2i);
    s1[k] = k1r, s1[a.bins + k] = k1i;
    if (s2) s2[k] = k2r, s2[a.bins + k] = k2i;
  }
  __syncthreads();
  return true;
}

template <int kLogM>
__global__ void __launch_bounds__(kFusedThreadsMax) fused_filter_kernel(RunArgs a, FilterArgs f) {
  extern __shared__ float sm[];
  const int64_t h1 = 2 * int64_t(blockIdx.x), h2 = h1 + 1 < f.H ? h1 + 1 : -1;
  // as fused_kernel: the pair packed, then (a NaN or an infinity in it) each filter alone
#pragma unroll 1
  for (int attempt = 0; attempt < 3; ++attempt) {
    const bool done = fused_filter_pair<kLogM>(a, f, attempt < 2 ? h1 : h2, attempt == 0 ? h2 : -1, sm);
    if (attempt == 0 && done) return;
  }
}

// The filters of pair `pair` in a split filter pass (h2 < 0: none), as pair_rows for the rows.
__device__ bool pair_filters(const RunArgs& a, const FilterArgs& f, int64_t pair, int mode, int64_t* h1,
                             int64_t* h2) {
  *h1 = 2 * pair + (mode == kSecondAlone ? 1 : 0);
  *h2 = (mode == kPacked && *h1 + 1 < f.H) ? *h1 + 1 : -1;
  return *h1 < f.H;
}

template <bool kRerun>
__global__ void __launch_bounds__(kColumnThreadsMax)
    columns_filter_kernel(RunArgs a, FilterArgs f, int cols, int mode) {
  extern __shared__ float sm[];
  for_grid_pairs<kRerun>(a, int(a.n2) / cols, [&](int64_t pair, int column_block) {
    int64_t h1, h2;
    if (!pair_filters(a, f, pair, mode, &h1, &h2)) return;
    const bool finite = columns_forward(
        a, pair, column_block, cols, 2 * f.extent <= a.m ? kHalfInput : kPlain, sm,
        [&](int64_t t) { return make_float2(filter_point(f, h1, t), filter_point(f, h2, t)); },
        f.vector_k && cols >= 8, [&](int64_t t, float(&v1)[8], float(&v2)[8]) {
          load_filter_chunk(f, h1, t, v1);
          load_filter_chunk(f, h2, t, v2);
        });
    if (!finite && h2 >= 0) flag_pair(a, pair);
  });
}

template <bool kRerun, int kRowN>
__global__ void __launch_bounds__(row_threads_of(kRowN), kRerun ? 1 : kRowThreadsPerSM / row_threads_of(kRowN))
    rows_filter_kernel(RunArgs a, FilterArgs f, int mode) {
  extern __shared__ float sm[];
  for_grid_pairs<kRerun>(a, int(a.n1) / 2 + 1, [&](int64_t pair, int part) {
    int64_t h1, h2;
    if (!pair_filters(a, f, pair, mode, &h1, &h2)) return;
    const float scale = 0.25f / float(a.m);
    rows_pass<kRowN>(a, pair, part, sm, false, [&](int k1, int partner, int rows, Points x) {
      const int64_t base = int64_t(k1) * a.n2;
      float* s1 = a.spectrum_out + h1 * 2 * a.bins;
      float* s2 = h2 >= 0 ? a.spectrum_out + h2 * 2 * a.bins : nullptr;
      auto split = [&](int i, int j, int c) {
        float k1r, k1i, k2r, k2i;
        split_pair(x[i].x, x[i].y, x[j].x, x[j].y, scale, &k1r, &k1i, &k2r, &k2i);
        s1[base + c] = k1r, s1[a.bins + base + c] = k1i;
        if (s2) s2[base + c] = k2r, s2[a.bins + base + c] = k2i;
      };
      // every column of row k1 is stored (rows 0 and N1/2 pair within themselves)
      if (rows == 2) {
        for (int c = threadIdx.x; c < a.n2; c += blockDim.x) split(2 * c, 2 * (int(a.n2) - 1 - c) + 1, c);
      } else {
        const int n2 = int(a.n2);
        for (int c = threadIdx.x; c < n2; c += blockDim.x)
          split(2 * c, 2 * (k1 == 0 ? (n2 - c) & (n2 - 1) : n2 - 1 - c), c);
      }
    });
  });
}

// Frequency-sparse filters: the prepared bins outside the kept band set to zero (the
// spectrum of frequency k1 + N1*k2 lies at k1*N2 + k2; N1 = 1 on the fused path).
__global__ void mask_spectrum_kernel(RunArgs a, int64_t channels) {
  const int64_t total = channels * a.bins;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t h = i / a.bins, q = i - h * a.bins;
    if (a.masked(int(q / a.n2 + a.n1 * (q % a.n2)))) {
      float* s = a.spectrum_out + h * 2 * a.bins;
      s[q] = s[a.bins + q] = 0.f;
    }
  }
}

// ---- host side -------------------------------------------------------------------

struct Plan {
  int64_t m, n1, n2, bins;
  Pieces pieces;
  bool fused;
  int batch;  // fused path: pairs per block
  int cols;   // columns per block of the split passes
};

// Shared memory of a column block of the split path (N1 x cols points).
int column_shared(const Plan& plan) { return int(plan.n1 * plan.cols * int64_t(sizeof(float2))); }

// Largest transform of the split: a column of N1 = m / N2 must fit a block's shared memory.
constexpr int64_t kLargestTransform = kLongRow << kLogLargestN1;

// Overlap-save pieces of m points for a linear convolution whose filter is short against
// the row (m = 4x the taps, at least 1024, and at most half the whole row's transform), or
// 0: one transform per row.
int64_t piece_size(const Conv& c) {
  if (c.freq_keep > 0 || is_circular(c.L, c.Lk, c.fft_size)) return 0;
  const int64_t m = std::max<int64_t>(1024, next_pow2(4 * used_taps(c.L, c.Lk, c.fft_size)));
  return 2 * m <= transform_size(c.L, c.Lk, c.fft_size) ? m : 0;
}

Plan make_plan(const fftconv_params& p) {
  const Conv c = conv_of(p);
  Plan plan{};
  // At least 16 points: the in-place transforms give each thread 16 (a larger power of
  // two gives the same convolution, and the circular fold works for any m >= L + Lk - 1).
  plan.m = std::max<int64_t>(16, transform_size(c.L, c.Lk, c.fft_size, c.freq_keep));
  plan.pieces = {1, p.L, 0};
  if (const int64_t piece = piece_size(c)) {
    // inputs from at least taps - 1 before the piece; a multiple of 8, like the step when L
    // is one, so that pieces take the 16-byte accesses of whole rows
    const int64_t lead = (used_taps(c.L, c.Lk, c.fft_size) - 1 + 7) / 8 * 8, step = piece - lead;
    plan.m = piece;
    plan.pieces = {(p.L + step - 1) / step, step, lead};
  }
  plan.fused = plan.m <= kFusedMax;
  if (plan.fused) {
    plan.n1 = 1;
    plan.n2 = plan.m;
    // frequencies 0 .. m/2, stored with a stride of a multiple of 4 (16-byte product reads)
    plan.bins = (plan.m / 2 + 1 + 3) / 4 * 4;
    plan.batch = fused_batch_of(log2_of(int(plan.m)));
  } else {
    plan.n2 = row_length_of(plan.m);
    plan.n1 = plan.m / plan.n2;
    plan.bins = (plan.n1 / 2 + 1) * plan.n2;
    plan.cols = column_count_of(log2_of(int(plan.n1)));
  }
  return plan;
}

// Fills g_roots on the current device, once per process (the first call waits for it).
void ensure_roots(cudaStream_t stream) {
  constexpr int kMaxDevices = 64;
  static std::once_flag once[kMaxDevices];
  int device = 0;
  check_cuda(cudaGetDevice(&device), "querying the current device");
  if (device >= kMaxDevices) fail(FFTCONV_ERR_UNSUPPORTED, "more than 64 CUDA devices");
  std::call_once(once[device], [stream] {
    std::vector<float2> roots(kRootCount);
    for (int j = 0; j < kRootCount; ++j) {
      const double angle = -2.0 * M_PI * double(j) / double(kRootCount);
      roots[size_t(j)] = make_float2(float(std::cos(angle)), float(std::sin(angle)));
    }
    check_cuda(cudaMemcpyToSymbolAsync(g_roots, roots.data(), sizeof(float2) * kRootCount, 0,
                                       cudaMemcpyHostToDevice, stream),
               "uploading the twiddle table");
    check_cuda(cudaStreamSynchronize(stream), "uploading the twiddle table");
  });
}

// Refuses host pointers and pointers not aligned to their element type.
void check_device_pointer(const void* ptr, const char* name, int64_t element_bytes) {
  if (!ptr) return;
  cudaPointerAttributes attributes{};
  if (cudaPointerGetAttributes(&attributes, ptr) != cudaSuccess) cudaGetLastError();  // clear it
  if (attributes.type != cudaMemoryTypeDevice && attributes.type != cudaMemoryTypeManaged)
    fail(FFTCONV_ERR_INVALID_ARGUMENT,
         std::string("'") + name + "' is not a CUDA device pointer; the CUDA path needs device memory");
  check_aligned(ptr, name, element_bytes);
}

// Split path: one complex sequence of m per pair of sequences, then a flag per pair and
// the flag of any pair.
int64_t workspace_bytes(const Plan& plan, int64_t sequences) {
  const int64_t pairs = (sequences + 1) / 2;
  if (plan.fused) return 0;
  return pairs * (plan.m * int64_t(sizeof(float2)) + int64_t(sizeof(unsigned))) + int64_t(sizeof(unsigned));
}

void set_pair_flags(RunArgs& a, void* workspace, const Plan& plan, int64_t sequences) {
  if (plan.fused || !workspace) {
    a.flags = a.any_flagged = nullptr;
    return;
  }
  const int64_t pairs = (sequences + 1) / 2;
  a.flags = reinterpret_cast<unsigned*>(static_cast<float2*>(workspace) + pairs * plan.m);
  a.any_flagged = a.flags + pairs;
}

// The three split passes in mode 0, one block per pair and part (column block or row), then
// twice more for the pairs that mode 0 flagged, over a grid of at most kRerunBlocks pairs and
// kRerunParts parts: launch(rerun, mode, grid(parts)) with rerun a std::bool_constant that picks
// the kernels' instantiation and grid(parts) the grid of a kernel with `parts` blocks per pair.
// The rerun grids fit one wave of blocks: with nothing flagged, larger ones (1024 blocks, one
// per SM) had taken 12-17 us each on an H200 for blocks that only return.
constexpr int64_t kRerunBlocks = 16, kRerunParts = 8;

template <typename Launch>
void run_split_modes(const RunArgs& a, int64_t pairs, cudaStream_t stream, Launch launch) {
  check_cuda(cudaMemsetAsync(a.flags, 0, size_t(pairs + 1) * sizeof(unsigned), stream), "clearing the pair flags");
  launch(std::false_type{}, kPacked, [&](int64_t parts) { return dim3(unsigned(pairs), unsigned(parts)); });
  for (int mode : {kFirstAlone, kSecondAlone})
    launch(std::true_type{}, mode, [&](int64_t parts) {
      return dim3(unsigned(std::min(pairs, kRerunBlocks)), unsigned(std::min(parts, kRerunParts)));
    });
}

// Whether 16-byte accesses may start at ptr (null: nothing to access).
bool aligned16(const void* ptr) { return (reinterpret_cast<uintptr_t>(ptr) & 15) == 0; }

RunArgs run_args(const fftconv_params& p, const Plan& plan, const float* spectrum, void* workspace) {
  RunArgs a{};
  a.u = p.u;
  a.pregate = p.pregate;
  a.postgate = p.postgate;
  a.D = p.D;
  a.y = p.y;
  a.spectrum = spectrum;
  a.work = static_cast<float2*>(workspace);
  a.rows = Rows{p.H, p.L};
  a.pieces = plan.pieces;
  a.count = p.B * p.H * plan.pieces.count;
  set_pair_flags(a, workspace, plan, a.count);
  a.m = plan.m, a.n1 = plan.n1, a.n2 = plan.n2, a.bins = plan.bins;
  // calls transformed at their period (frequency-sparse, or circular of a power-of-two period) need no fold
  const Conv c = conv_of(p);
  a.fft_size = folds(plan.m, c.L, c.Lk, c.fft_size, c.freq_keep) ? c.fft_size : 0;
  a.freq_keep = p.freq_keep;
  a.D_dtype = p.D_dtype;
  a.vector_spectrum = plan.fused && aligned16(spectrum);
  a.vector_io = p.L % 8 == 0 && plan.pieces.step % 8 == 0 && plan.pieces.lead % 8 == 0 && aligned16(p.u) &&
                aligned16(p.y) && aligned16(p.pregate) && aligned16(p.postgate);
  return a;
}

void check_workspace(int64_t need, void* workspace, int64_t bytes) {
  if (need > 0 && (!workspace || bytes < need))
    fail(FFTCONV_ERR_INVALID_ARGUMENT, "the workspace is " + std::to_string(workspace ? bytes : 0) +
                                           " bytes; this call needs " + std::to_string(need) +
                                           " (fftconv_cuda_workspace_bytes)");
  check_device_pointer(workspace, "workspace", 8);
}

// Workspace of the run of BHL rows (the FFT split path's complex sequences).
int64_t rows_workspace_bytes(const fftconv_params& p) {
  if (cuda::direct_applies(p)) return 0;
  const Plan plan = make_plan(p);
  return workspace_bytes(plan, p.B * p.H * plan.pieces.count);
}


void check_size(const Plan& plan, const fftconv_params& p) {
  if (plan.m > kLargestTransform)
    fail(FFTCONV_ERR_UNSUPPORTED, "L = " + std::to_string(p.L) + " with Lk = " +
                                      std::to_string(std::max(p.Lk, p.Lk_rev)) +
                                      " needs a transform of " + std::to_string(plan.m) +
                                      " points; the CUDA kernels go up to " + std::to_string(kLargestTransform));
}

void check_grid(int64_t pairs) {
  if (pairs > int64_t(0x7fffffff))
    fail(FFTCONV_ERR_UNSUPPORTED, "more than 2^31 row pairs in one call");
}

// fn(std::integral_constant<int, log_m>) for the fused sizes 16 .. kFusedMax (the kernels are
// built per size: their passes' strides are constants).
template <int kLogM = 4, typename Fn>
void with_fused_size(int log_m, Fn fn) {
  if constexpr ((1 << kLogM) <= kFusedMax) {
    if (log_m == kLogM) return fn(std::integral_constant<int, kLogM>{});
    return with_fused_size<kLogM + 1>(log_m, fn);
  }
  fail(FFTCONV_ERR_INTERNAL, "no fused kernel for a transform of 2^" + std::to_string(log_m) + " points");
}

// fn(std::integral_constant<int, N2>) for the split's row length.
template <typename Fn>
void with_row_length(const Plan& plan, Fn fn) {
  if (plan.n2 == kLongRow) return fn(std::integral_constant<int, int(kLongRow)>{});
  if (plan.n2 == kShortRow) return fn(std::integral_constant<int, int(kShortRow)>{});
  fail(FFTCONV_ERR_INTERNAL, "no row kernels for rows of " + std::to_string(plan.n2) + " points");
}

// Shared memory of a row block of the split path (two rows).
int row_shared(const Plan& plan) { return int(2 * plan.n2 * int64_t(sizeof(float2))); }

template <int DT>
void launch_forward(const fftconv_params& p, const Plan& plan, const RunArgs& a, cudaStream_t stream) {
  const int64_t pairs = (a.count + 1) / 2;
  check_grid(pairs);
  if (plan.fused) {
    const int64_t points = plan.m * plan.batch;
    const int fused_shared = int(points * sizeof(float2) + 2 * plan.batch * sizeof(Row));
    const int64_t blocks = (pairs + plan.batch - 1) / plan.batch;
    with_fused_size(log2_of(int(plan.m)), [&](auto log_m) {
      constexpr int kLogM = decltype(log_m)::value;
      const auto launch_fused = [&](auto band) {
        const auto kernel = fused_kernel<DT, kLogM, decltype(band)::value>;
        allow_shared(kernel, fused_shared);
        kernel<<<dim3(unsigned(blocks)), unsigned(points / 16), fused_shared, stream>>>(a);
      };
      if constexpr (kLogM >= kLogFusedBandFrom) {
        if (a.freq_keep > 0) return launch_fused(std::true_type{});
      }
      launch_fused(std::false_type{});
    });
  } else {
    run_split_modes(a, pairs, stream, [&](auto rerun, int mode, auto grid) {
      constexpr bool kRerun = decltype(rerun)::value;
      allow_shared(columns_forward_kernel<DT, kRerun>, column_shared(plan));
      allow_shared(columns_inverse_kernel<DT, kRerun>, column_shared(plan));
      const dim3 column_grid = grid(plan.n2 / plan.cols);
      const unsigned column_threads = unsigned(column_shared(plan) / sizeof(float2) / 16);
      columns_forward_kernel<DT, kRerun><<<column_grid, column_threads, column_shared(plan), stream>>>(a, plan.cols,
                                                                                                      mode);
      with_row_length(plan, [&](auto row_n) {
        constexpr int kRowN = decltype(row_n)::value;
        allow_shared(rows_product_kernel<kRerun, kRowN>, row_shared(plan));
        rows_product_kernel<kRerun, kRowN><<<grid(plan.n1 / 2 + 1), row_threads_of(kRowN), row_shared(plan), stream>>>(
            a, mode);
      });
      columns_inverse_kernel<DT, kRerun><<<column_grid, column_threads, column_shared(plan), stream>>>(a, plan.cols,
                                                                                                      mode);
      if (a.fft_size > 0) fold_kernel<DT, kRerun><<<grid(1), kThreads, 0, stream>>>(a, mode);
    });
  }
  check_cuda(cudaGetLastError(), "launching the FFTConv kernels");
}

// Runs a BHL call.
void forward_rows(const fftconv_params& p, const void* spectrum, void* workspace, cudaStream_t stream) {
  if (cuda::direct_applies(p)) return cuda::direct_forward(p, spectrum, stream);
  const Plan plan = make_plan(p);
  const RunArgs a = run_args(p, plan, static_cast<const float*>(spectrum), workspace);
  ensure_roots(stream);
  switch (p.dtype) {
    case FFTCONV_FLOAT16: launch_forward<FFTCONV_FLOAT16>(p, plan, a, stream); break;
    case FFTCONV_BFLOAT16: launch_forward<FFTCONV_BFLOAT16>(p, plan, a, stream); break;
    default: launch_forward<FFTCONV_FLOAT32>(p, plan, a, stream); break;
  }
}

}  // namespace
}  // namespace fftconv

using namespace fftconv;

extern "C" {

int32_t fftconv_cuda_available(void) {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    cudaGetLastError();
    return 0;
  }
  return count > 0 ? 1 : 0;
}

int64_t fftconv_cuda_filter_bytes(const fftconv_params* p) {
  if (!p || p->H < 0 || p->L < 0 || p->Lk < 1 || p->fft_size < 0 || p->Lk_rev < 0) return 0;
  if (cuda::direct_applies(*p)) return cuda::direct_filter_bytes(*p);
  return p->H * 2 * make_plan(*p).bins * int64_t(sizeof(float));
}

int64_t fftconv_cuda_workspace_bytes(const fftconv_params* p) {
  if (!p || p->B < 0 || p->H < 0 || p->L < 0 || p->Lk < 1 || p->fft_size < 0 || p->Lk_rev < 0) return 0;
  const int64_t filter = cuda::direct_applies(*p) ? 0 : workspace_bytes(make_plan(*p), p->H);
  return std::max(cuda::channels_last_bytes(*p) + rows_workspace_bytes(*p), filter);
}

fftconv_status fftconv_cuda_prepare_filter(const fftconv_params* p, void* spectrum, void* workspace,
                                           int64_t workspace_bytes_given) {
  return guarded_call([&] {
    check_params(p);
    if (!p->k || !spectrum) fail(FFTCONV_ERR_INVALID_ARGUMENT, "k and spectrum must not be null");
    if (p->Lk_rev > 0 && !p->k_rev) fail(FFTCONV_ERR_INVALID_ARGUMENT, "k_rev must not be null when Lk_rev > 0");
    if (p->H == 0) return;
    check_device_pointer(p->k, "k", element_bytes(p->k_dtype));
    if (p->Lk_rev > 0) check_device_pointer(p->k_rev, "k_rev", element_bytes(p->k_rev_dtype));
    const bool direct = cuda::direct_applies(*p);
    check_device_pointer(spectrum, "spectrum", direct ? 16 : 4);
    cudaStream_t stream = static_cast<cudaStream_t>(p->stream);
    if (direct) return cuda::direct_prepare_filter(*p, spectrum, stream);
    const Plan plan = make_plan(*p);
    check_size(plan, *p);
    check_workspace(workspace_bytes(plan, p->H), workspace, workspace_bytes_given);
    RunArgs a = run_args(*p, plan, nullptr, workspace);
    a.spectrum_out = static_cast<float*>(spectrum);
    a.count = p->H;
    set_pair_flags(a, workspace, plan, p->H);
    const Conv c = conv_of(*p);
    const int64_t extent = used_taps(c.L, c.Lk, c.fft_size, c.freq_keep);
    const bool two_sided = c.rev_taps > 0;
    const FilterArgs f{p->k,       p->k_dtype, p->H,    p->Lk,      std::min(c.k_taps, extent),
                       p->k_rev,   p->k_rev_dtype, p->Lk_rev, c.rev_taps, c.fft_size,
                       extent,     !two_sided && p->Lk % 8 == 0 && aligned16(p->k)};
    const int64_t pairs = (p->H + 1) / 2;
    check_grid(pairs);
    ensure_roots(stream);
    if (plan.fused) {
      const int fused_shared = int(plan.m * sizeof(float2));
      with_fused_size(log2_of(int(plan.m)), [&](auto log_m) {
        constexpr int kLogM = decltype(log_m)::value;
        allow_shared(fused_filter_kernel<kLogM>, fused_shared);
        fused_filter_kernel<kLogM><<<dim3(unsigned(pairs)), unsigned(plan.m / 16), fused_shared, stream>>>(a, f);
      });
    } else {
      run_split_modes(a, pairs, stream, [&](auto rerun, int mode, auto grid) {
        constexpr bool kRerun = decltype(rerun)::value;
        allow_shared(columns_filter_kernel<kRerun>, column_shared(plan));
        columns_filter_kernel<kRerun><<<grid(plan.n2 / plan.cols), unsigned(column_shared(plan) / sizeof(float2) / 16),
                                        column_shared(plan), stream>>>(a, f, plan.cols, mode);
        with_row_length(plan, [&](auto row_n) {
          constexpr int kRowN = decltype(row_n)::value;
          allow_shared(rows_filter_kernel<kRerun, kRowN>, row_shared(plan));
          rows_filter_kernel<kRerun, kRowN><<<grid(plan.n1 / 2 + 1), row_threads_of(kRowN), row_shared(plan), stream>>>(
              a, f, mode);
        });
      });
    }
    if (p->freq_keep > 0) {
      const int64_t blocks = std::min<int64_t>(4096, (p->H * plan.bins + kThreads - 1) / kThreads);
      mask_spectrum_kernel<<<unsigned(blocks), kThreads, 0, stream>>>(a, p->H);
    }
    check_cuda(cudaGetLastError(), "launching the filter-spectrum kernels");
  });
}

fftconv_status fftconv_cuda_forward(const fftconv_params* p, const void* spectrum, void* workspace,
                                    int64_t workspace_bytes_given) {
  return guarded_call([&] {
    check_params(p);
    if (p->B == 0 || p->H == 0 || p->L == 0) return;  // empty output
    if (!p->u || !p->y || !spectrum)
      fail(FFTCONV_ERR_INVALID_ARGUMENT, "u, y and the prepared spectrum must not be null");
    const int64_t io = element_bytes(p->dtype);
    check_device_pointer(p->u, "u", io);
    check_device_pointer(p->y, "y", io);
    check_device_pointer(p->pregate, "pregate", io);
    check_device_pointer(p->postgate, "postgate", io);
    check_device_pointer(p->D, "D", element_bytes(p->D_dtype));
    const bool direct = cuda::direct_applies(*p);
    check_device_pointer(spectrum, "spectrum", direct ? 16 : 4);
    if (!direct) check_size(make_plan(*p), *p);
    const int64_t channels_last = cuda::channels_last_bytes(*p);
    check_workspace(channels_last + rows_workspace_bytes(*p), workspace, workspace_bytes_given);
    cudaStream_t stream = static_cast<cudaStream_t>(p->stream);
    if (channels_last == 0) return forward_rows(*p, spectrum, workspace, stream);
    const fftconv_params rows = cuda::to_channels_first(*p, workspace, stream);
    forward_rows(rows, spectrum, static_cast<char*>(workspace) + channels_last, stream);
    cuda::to_channels_last(*p, rows, stream);
  });
}

}  // extern "C"
