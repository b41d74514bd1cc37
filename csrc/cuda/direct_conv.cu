// Short filters on tensor cores: the causal convolution as products of 16x16
// Toeplitz blocks (mma.sync, fp16/bf16 or tf32 operands, fp32 accumulation).
//
// With time cut in blocks of 16 steps, output block j of a row is
//   Y_j = sum_d T_d U_(j-d),   T_d[t][s] = k[16 d + t - s]  (0 outside 0 <= . < taps),
// so one mma takes T_d as A (t by s) and the input blocks j - d of 8 consecutive
// output blocks as B (s by j): a tile of 128 outputs. A warp owns up to 8 tiles of one
// or several rows (a "unit") and runs over d, loading T_d once for them. The work is
// (taps/16 + 1) mma per tile, where an FFT costs log(L): a path for short filters.
//
// Operand layouts: the k index of the mma is permuted so that lane (g, c) holds
// s = 4c .. 4c + 3 in both operands. B is then one aligned 8-byte load of 4
// consecutive inputs, and row t of A is k[16d + t - 4c - 3 .. 16d + t - 4c]:
// 4 consecutive values of the reversed filter R[i] = k[origin - i]. R lies in
// shared memory in 4 copies shifted by one element, so that a lane reads its 4
// values with one aligned 8-byte load from the copy matching its row.
//
// A float32 filter with bf16 I/O is split into its rounding to bf16 plus the rounded
// remainder (two mma per block product): 16 significant bits instead of 8. fp16's 11
// bits are kept as they are (error ~3e-4 of the output, tolerance 1e-3).
//
// float32 I/O (filters up to 256 taps) uses tf32 products (m16n8k8, two k steps per
// block) with both operands split in a tf32 part and a tf32 remainder, three products
// each (hi*hi + hi*lo + lo*hi): ~2^-21 relative error against the tolerance of 1e-5.
// There lane (g, c) holds s = 8q + 2c, 8q + 2c + 1 of k step q: two consecutive values,
// read from 2 shifted copies of R; the input windows have 24-float blocks (16 used),
// which keeps the B reads of a warp free of bank conflicts.
#include "cuda_common.cuh"
#include "direct_conv.h"

#include <algorithm>
#include <cstdlib>
#include <type_traits>

#include "../common/geometry.h"

namespace fftconv {
namespace cuda {
namespace {

constexpr int kMaxWarps = 8;         // warps per block, all on one channel
constexpr int kBlock = 16;           // time steps per Toeplitz block
constexpr int kTile = 8 * kBlock;    // outputs of one mma: 8 blocks
constexpr int kDefaultMaxTaps = 2048;
constexpr int kLargestTaps = 4096;   // the filter and 8 windows still fit a block's shared memory
constexpr int kFloat32MaxTaps = 256;  // 6 tf32 products per block product: the FFT path is faster beyond (H200)

// Per I/O type: the shared-memory element of the operands, the shifted copies of the
// filter, and the stride of a 16-step block in the input windows.
template <int DT> struct Operand {
  using T = uint16_t;
  static constexpr int kCopies = 4, kWindowBlock = 16, kWindows = 1;
  static constexpr int kLaneSpan = 4;  // consecutive s values a lane holds per k step
};
template <> struct Operand<FFTCONV_FLOAT32> {
  using T = float;
  static constexpr int kCopies = 2, kWindowBlock = 24, kWindows = 2;  // tf32 part and remainder
  static constexpr int kLaneSpan = 2;
};

// The filter's shape in the prepared buffer and in shared memory.
struct DirectGeometry {
  int64_t taps;     // filter taps that reach an output
  int blocks;       // Toeplitz blocks T_0 .. T_(blocks-1) that are not zero
  int rlen;         // length of the reversed filter R
  int origin;       // R[i] = k[origin - i]
  int copy_stride;  // elements between the shifted copies in shared memory (>= rlen + 8)
  int parts;        // 2 when the filter is split in a rounded part and its remainder
  int element_bytes;
  int copies;
  int window_block;  // elements per 16-step block in the input windows
  int windows;       // input windows per row (tf32: the tf32 parts and the remainders)
};

DirectGeometry direct_geometry(const fftconv_params& p) {
  DirectGeometry g{};
  g.taps = used_taps(p.L, p.Lk, p.fft_size);
  g.blocks = int((g.taps + kBlock - 2) / kBlock + 1);  // T_d holds k[16d - 15 .. 16d + 15]
  g.rlen = kBlock * g.blocks + 2 * kBlock;
  g.origin = kBlock * g.blocks + kBlock - 1;
  // 16 modulo 32: the A reads of a warp then meet no bank conflict (two wavefronts)
  g.copy_stride = g.rlen + 8 + (16 - (g.rlen + 8) % 32 + 32) % 32;
  const bool tf32 = p.dtype == FFTCONV_FLOAT32;
  g.parts = tf32 || (p.k_dtype == FFTCONV_FLOAT32 && p.dtype == FFTCONV_BFLOAT16) ? 2 : 1;
  g.element_bytes = int(element_bytes(p.dtype));
  using F32 = Operand<FFTCONV_FLOAT32>;
  using F16 = Operand<FFTCONV_FLOAT16>;
  g.copies = tf32 ? F32::kCopies : F16::kCopies;
  g.window_block = tf32 ? F32::kWindowBlock : F16::kWindowBlock;
  g.windows = tf32 ? F32::kWindows : F16::kWindows;
  return g;
}

struct DirectArgs {
  const void* u;
  const void* pregate;
  const void* postgate;
  const void* D;
  void* y;
  const void* filter;  // prepared: [parts][H][rlen] in the I/O type (tf32 values for float32)
  int64_t B, H, L;
  int64_t units;    // units per channel: row groups * chunks (< 2^31)
  uint32_t chunks;  // units per row group
  uint32_t groups;  // blocks per channel
  int blocks, rlen, origin, copy_stride, parts;
  int32_t D_dtype;
  bool vector_io;  // L a multiple of kVector<DT> and u, y and the gates 16-byte aligned: 16-byte accesses
};

// Elements of the I/O type per 16-byte access.
template <int DT>
constexpr int kVector = DT == FFTCONV_FLOAT32 ? 4 : 8;

template <int DT>
__device__ __forceinline__ void mma_16816(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  if constexpr (DT == FFTCONV_FLOAT16) {
    asm(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  } else {
    asm(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  }
}

__device__ __forceinline__ void mma_tf32(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm("mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// x rounded to tf32 (10 stored mantissa bits), as a float.
__device__ __forceinline__ float to_tf32(float x) {
  uint32_t bits;
  asm("cvt.rna.tf32.f32 %0, %1;\n" : "=r"(bits) : "f"(x));
  return __uint_as_float(bits);
}

// A fragment of T_d for lane (g, c): rows g and g + 8 are R[idx .. idx + 3] and
// R[idx - 8 .. idx - 5] (idx = origin - 16d - g + 4c), read at `at`, their aligned
// place in the copy of the lane's shift.
__device__ __forceinline__ void load_a(const uint16_t* at, uint32_t (&a)[4]) {
  const uint2 row_g = *reinterpret_cast<const uint2*>(at);
  const uint2 row_g8 = *reinterpret_cast<const uint2*>(at - 8);
  a[0] = row_g.x, a[1] = row_g8.x, a[2] = row_g.y, a[3] = row_g8.y;
}

// tf32: k step q of T_d for lane (g, c): rows g and g + 8 are R[idx], R[idx + 1] and
// R[idx - 8], R[idx - 7] (idx = origin - 16d - g + 8q + 2c).
__device__ __forceinline__ void load_a(const float* at, uint32_t (&a)[4]) {
  const float2 row_g = *reinterpret_cast<const float2*>(at);
  const float2 row_g8 = *reinterpret_cast<const float2*>(at - 8);
  a[0] = __float_as_uint(row_g.x), a[1] = __float_as_uint(row_g8.x);
  a[2] = __float_as_uint(row_g.y), a[3] = __float_as_uint(row_g8.y);
}

// Where a lane's operands lie for d = 0: A values of T_0 (T_d lies 16 d elements lower),
// B values of tile 0 of the unit's first row (tile j lies 8 window blocks higher, row r
// one row window higher, and d moves them one window block lower per step).
template <int DT>
struct Operands {
  using T = typename Operand<DT>::T;
  const T* a_rounded;
  const T* a_remainder;
  const T* x;     // the input window (tf32: its tf32 part)
  const T* x_lo;  // tf32: the remainders' window
  int row_window;  // elements between the windows of the unit's rows
  bool split;      // fp16/bf16: the filter has a remainder part
};

template <int DT>
__device__ __forceinline__ int b_offset(const Operands<DT>& o, int r, int j, int d) {
  constexpr int block = Operand<DT>::kWindowBlock;
  return o.row_window * r + 8 * block * j - block * d;
}

// All products of one Toeplitz block (T_d, or the skip term's diagonal for d = 0) with
// tiles FIRST .. TPR-1 of every row, accumulated. fragment(q, part, a) gives the A values of
// k step q (tf32: 0, 1; fp16/bf16: 0) of the rounded part (part 0) or the remainder
// (part 1, used when `split`; tf32 always). TESTED: only the tiles that exist (r < rows,
// j < tiles) and need T_d (d <= first_limit + 8 j).
template <int DT, int TPR, int R, int FIRST, bool TESTED, typename Fragment>
__device__ __forceinline__ void block_products(const Operands<DT>& o, int d, Fragment fragment, bool split,
                                               float (&acc)[R][TPR][4], int tiles, int rows, int first_limit) {
  auto skip = [&](int r, int j) { return TESTED && (r >= rows || j >= tiles || d > first_limit + 8 * j); };
  if constexpr (DT == FFTCONV_FLOAT32) {
#pragma unroll
    for (int q = 0; q < 2; ++q) {
      uint32_t a_hi[4], a_lo[4];
      fragment(q, 0, a_hi);
      fragment(q, 1, a_lo);
#pragma unroll
      for (int r = 0; r < R; ++r)
#pragma unroll
        for (int j = FIRST; j < TPR; ++j) {
          if (skip(r, j)) continue;
          const int at = b_offset(o, r, j, d) + 8 * q;
          const float2 hi = *reinterpret_cast<const float2*>(o.x + at);
          const float2 lo = *reinterpret_cast<const float2*>(o.x_lo + at);
          mma_tf32(acc[r][j], a_hi, __float_as_uint(hi.x), __float_as_uint(hi.y));
          mma_tf32(acc[r][j], a_hi, __float_as_uint(lo.x), __float_as_uint(lo.y));
          mma_tf32(acc[r][j], a_lo, __float_as_uint(hi.x), __float_as_uint(hi.y));
        }
    }
  } else {
    uint32_t a_rounded[4], a_remainder[4];
    fragment(0, 0, a_rounded);
    uint2 x[R][TPR];
#pragma unroll
    for (int r = 0; r < R; ++r)
#pragma unroll
      for (int j = FIRST; j < TPR; ++j) {
        if (skip(r, j)) continue;
        x[r][j] = *reinterpret_cast<const uint2*>(o.x + b_offset(o, r, j, d));
        mma_16816<DT>(acc[r][j], a_rounded, x[r][j].x, x[r][j].y);
      }
    if (split) {
      fragment(0, 1, a_remainder);
#pragma unroll
      for (int r = 0; r < R; ++r)
#pragma unroll
        for (int j = FIRST; j < TPR; ++j)
          if (!skip(r, j)) mma_16816<DT>(acc[r][j], a_remainder, x[r][j].x, x[r][j].y);
    }
  }
}

// The products of T_d (read from the filter copies in shared memory).
template <int DT, int TPR, int R, int FIRST, bool TESTED>
__device__ __forceinline__ void d_step(const Operands<DT>& o, int d, float (&acc)[R][TPR][4], int tiles, int rows,
                                       int first_limit) {
  auto fragment = [&](int q, int part, uint32_t(&a)[4]) {
    load_a((part ? o.a_remainder : o.a_rounded) - kBlock * d + 8 * q, a);
  };
  block_products<DT, TPR, R, FIRST, TESTED>(o, d, fragment, o.split, acc, tiles, rows, first_limit);
}

// The A values of k step q of D times the identity (the skip term, one more product of each
// tile with its own inputs), part 0: D rounded to the operand type, part 1: the remainder.
// Lane (g, c) holds rows g and g + 8 at the columns s of its operand layout (load_a).
template <int DT>
__device__ __forceinline__ void diagonal_fragment(float D, int q, int part, int lane, uint32_t (&a)[4]) {
  const int g = lane >> 2, c = lane & 3;
  a[0] = a[1] = a[2] = a[3] = 0;
  if constexpr (DT == FFTCONV_FLOAT32) {  // row g at s = 8q + 2c + e: s = g for q = 0; row g + 8 for q = 1
    const float rounded = to_tf32(D);
    const uint32_t value = __float_as_uint(part ? to_tf32(D - rounded) : rounded);
    if (c == g >> 1) a[(g & 1 ? 2 : 0) + q] = value;
  } else {  // row g at s = 4c + e, row g + 8 at s = 4c + e - 8
    const uint16_t rounded = Elem<DT>::bits(D);
    const uint16_t bits = part ? Elem<DT>::bits(D - Elem<DT>::from_bits(rounded)) : rounded;
    const uint32_t word = g & 1 ? uint32_t(bits) << 16 : uint32_t(bits);
    const int slot = g & 2 ? 2 : 0;
    if (c == g >> 2) a[slot] = word;
    if (c == 2 + (g >> 2)) a[slot + 1] = word;
  }
}

// d in [d_begin, d_end) with tiles FIRST .. TPR-1 of every row.
template <int DT, int TPR, int R, int FIRST>
__device__ __forceinline__ void products(const Operands<DT>& o, int d_begin, int d_end, float (&acc)[R][TPR][4]) {
#pragma unroll 2
  for (int d = d_begin; d < d_end; ++d) d_step<DT, TPR, R, FIRST, false>(o, d, acc, 0, 0, 0);
}

// Tile j takes T_d for d <= first_limit + 8 j only (earlier inputs are zero): the d ranges
// where tiles FIRST .. TPR-1 remain.
template <int DT, int TPR, int R, int FIRST>
__device__ __forceinline__ void products_from(const Operands<DT>& o, int first_limit, int d_end,
                                              float (&acc)[R][TPR][4]) {
  if constexpr (FIRST < TPR) {
    const int begin = first_limit + 8 * (FIRST - 1) + 1;
    if (begin >= d_end) return;
    products<DT, TPR, R, FIRST>(o, begin, min(d_end, begin + 8), acc);
    products_from<DT, TPR, R, FIRST + 1>(o, first_limit, d_end, acc);
  }
}

// 16 bytes of the I/O type as kVector<DT> floats, and back (rounded to DT).
template <int DT>
__device__ __forceinline__ void unpack16(uint4 raw, float (&v)[kVector<DT>]) {
  if constexpr (DT == FFTCONV_FLOAT32) {
    v[0] = __uint_as_float(raw.x), v[1] = __uint_as_float(raw.y), v[2] = __uint_as_float(raw.z),
    v[3] = __uint_as_float(raw.w);
  } else {
    const uint32_t words[4] = {raw.x, raw.y, raw.z, raw.w};
#pragma unroll
    for (int e = 0; e < 8; ++e) v[e] = Elem<DT>::from_bits(uint16_t(words[e / 2] >> (16 * (e % 2))));
  }
}

template <int DT>
__device__ __forceinline__ uint4 pack16(const float (&v)[kVector<DT>]) {
  if constexpr (DT == FFTCONV_FLOAT32) {
    return make_uint4(__float_as_uint(v[0]), __float_as_uint(v[1]), __float_as_uint(v[2]), __float_as_uint(v[3]));
  } else {
    uint32_t words[4];
#pragma unroll
    for (int w = 0; w < 4; ++w)
      words[w] = uint32_t(Elem<DT>::bits(v[2 * w])) | uint32_t(Elem<DT>::bits(v[2 * w + 1])) << 16;
    return make_uint4(words[0], words[1], words[2], words[3]);
  }
}

// x times gate, 16 bytes each: 16-bit types as products of pairs rounded once (the window
// holds operands of the I/O type anyway), float32 as float32 products.
template <int DT>
__device__ __forceinline__ uint4 mul16(uint4 x, uint4 gate) {
  if constexpr (DT == FFTCONV_FLOAT32) {
    return make_uint4(__float_as_uint(__uint_as_float(x.x) * __uint_as_float(gate.x)),
                      __float_as_uint(__uint_as_float(x.y) * __uint_as_float(gate.y)),
                      __float_as_uint(__uint_as_float(x.z) * __uint_as_float(gate.z)),
                      __float_as_uint(__uint_as_float(x.w) * __uint_as_float(gate.w)));
  } else {
    using Pair = typename std::conditional<DT == FFTCONV_FLOAT16, __half2, __nv_bfloat162>::type;
    auto mul = [](uint32_t p, uint32_t q) {
      const Pair r = __hmul2(*reinterpret_cast<const Pair*>(&p), *reinterpret_cast<const Pair*>(&q));
      return *reinterpret_cast<const uint32_t*>(&r);
    };
    return make_uint4(mul(x.x, gate.x), mul(x.y, gate.y), mul(x.z, gate.z), mul(x.w, gate.w));
  }
}

// A warp's lanes visit the 16-byte vectors of the same span of each of R rows (rows < R
// given): offsets i = kVector<DT> * (lane + 32 n) below count, kGroup vectors of each row
// per lane at a time, whose `load(r, i)` are all issued before the first `use(r, i, loaded)`
// (one wait for global memory per group, not per vector).
template <int DT, int R, int kGroup, typename LoadFn, typename UseFn>
__device__ __forceinline__ void for_row_vectors(int count, int rows, int lane, LoadFn load, UseFn use) {
  constexpr int kStep = 32 * kVector<DT>;
#pragma unroll 1
  for (int first = kVector<DT> * lane; first < count; first += kGroup * kStep) {
    uint4 v[R][kGroup];
#pragma unroll
    for (int r = 0; r < R; ++r)
#pragma unroll
      for (int n = 0; n < kGroup; ++n)
        if (r < rows && first + n * kStep < count) v[r][n] = load(r, first + n * kStep);
#pragma unroll
    for (int r = 0; r < R; ++r)
#pragma unroll
      for (int n = 0; n < kGroup; ++n)
        if (r < rows && first + n * kStep < count) use(r, first + n * kStep, v[r][n]);
  }
}
// Vectors of one row that a lane loads together: 4 in flight per lane (8 with 8 rows).
template <int R>
constexpr int kRowGroup = R >= 4 ? 1 : 4 / R;

// Shared memory of one warp: the input windows of its rows, later its staged outputs
// (8 floats of padding per 32).
__host__ __device__ inline int warp_region_bytes(int blocks, int tiles_per_row, int rows, int element_bytes,
                                                 int window_block, int windows) {
  const int row_window = (blocks - 1 + 8 * tiles_per_row) * window_block;
  const int inputs = windows * rows * row_window * element_bytes;
  const int staged = rows * tiles_per_row * kTile * 5;
  return ((inputs > staged ? inputs : staged) + 15) / 16 * 16;
}

template <int DT>
__global__ void direct_filter_kernel(const void* k, int32_t k_dtype, int64_t H, int64_t Lk, int64_t taps, int rlen,
                                     int origin, int parts, void* prepared) {
  using T = typename Operand<DT>::T;
  T* out = static_cast<T*>(prepared);
  const int64_t total = H * rlen;
  for (int64_t idx = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; idx < total;
       idx += int64_t(gridDim.x) * blockDim.x) {
    const int64_t h = idx / rlen;
    const int64_t tap = origin - (idx - h * rlen);
    const float value = (tap >= 0 && tap < taps) ? load_any(k, k_dtype, h * Lk + tap) : 0.f;
    if constexpr (DT == FFTCONV_FLOAT32) {
      const float rounded = to_tf32(value);
      out[idx] = rounded;
      out[total + idx] = to_tf32(value - rounded);
    } else {
      const uint16_t rounded = Elem<DT>::bits(value);
      out[idx] = rounded;
      if (parts == 2) out[total + idx] = Elem<DT>::bits(value - Elem<DT>::from_bits(rounded));
    }
  }
}

// Input t of the row at `base` times the pregate, 0 outside [0, L).
template <int DT>
__device__ __forceinline__ float input_at(const DirectArgs& a, int64_t base, int64_t t) {
  if (t < 0 || t >= a.L) return 0.f;
  const float x = Elem<DT>::load(a.u, base + t);
  return a.pregate ? x * Elem<DT>::load(a.pregate, base + t) : x;
}

// Input i of a window lies at (i / 16) * kWindowBlock + i % 16.
template <int DT>
__device__ __forceinline__ int window_position(int i) {
  return (i >> 4) * Operand<DT>::kWindowBlock + (i & 15);
}

// The 16-byte vector of x holding element `first` (a multiple of kVector<DT>).
template <int DT>
__device__ __forceinline__ uint4 vector_at(const void* x, int64_t first) {
  return reinterpret_cast<const uint4*>(x)[first / kVector<DT>];
}

// Loads inputs t0 + i (i in [0, span), zero outside [0, L)) of the unit's rows (row r at
// row_base(r)), times the pregate, into their windows (row_window elements apart; tf32: the
// tf32 parts into `window`, the remainders into `window_lo`).
template <int DT, int R, typename RowBase>
__device__ void load_windows(const DirectArgs& a, RowBase row_base, int rows, int64_t t0, int span,
                             typename Operand<DT>::T* window, typename Operand<DT>::T* window_lo, int row_window,
                             int lane) {
  if (a.vector_io) {  // t0, span and L are multiples of kVector<DT>: a vector lies inside or outside [0, L)
    auto load = [&](int r, int i) {
      const int64_t t = t0 + i;
      if (t < 0 || t >= a.L) return make_uint4(0, 0, 0, 0);
      const uint4 x = vector_at<DT>(a.u, row_base(r) + t);
      return a.pregate ? mul16<DT>(x, vector_at<DT>(a.pregate, row_base(r) + t)) : x;
    };
    auto store = [&](int r, int i, uint4 x) {
      if constexpr (DT == FFTCONV_FLOAT32) {
        float v[4], hi[4], lo[4];
        unpack16<DT>(x, v);
        for (int e = 0; e < 4; ++e) hi[e] = to_tf32(v[e]), lo[e] = to_tf32(v[e] - hi[e]);
        const int at = r * row_window + window_position<DT>(i);
        *reinterpret_cast<float4*>(window + at) = make_float4(hi[0], hi[1], hi[2], hi[3]);
        *reinterpret_cast<float4*>(window_lo + at) = make_float4(lo[0], lo[1], lo[2], lo[3]);
      } else {
        *reinterpret_cast<uint4*>(window + r * row_window + i) = x;  // 16-element window blocks: position i
      }
    };
    for_row_vectors<DT, R, kRowGroup<R>>(span, rows, lane, load, store);
    return;
  }
  for (int r = 0; r < rows; ++r)
    for (int i = lane; i < span; i += 32) {
      const float v = input_at<DT>(a, row_base(r), t0 + i);
      const int at = r * row_window + window_position<DT>(i);
      if constexpr (DT == FFTCONV_FLOAT32) {
        const float hi = to_tf32(v);
        window[at] = hi;
        window_lo[at] = to_tf32(v - hi);
      } else {
        window[at] = Elem<DT>::bits(v);
      }
    }
}

// y[t0 + p] for p in [0, count), t0 + p < L, of the unit's rows, from the staged outputs
// (`stage`, padded; row r from r * count on: the convolution and the skip term) times the postgate.
template <int DT, int R, typename RowBase>
__device__ void store_outputs(const DirectArgs& a, RowBase row_base, int rows, int64_t t0, int count,
                              const float* stage, int lane) {
  const int stage_stride = count;
  count = int(min(int64_t(count), a.L - t0));
  auto staged = [&](int r, int p) -> const float& {
    const int s = r * stage_stride + p;
    return stage[s + 8 * (s >> 5)];
  };
  if (a.vector_io) {
    auto load = [&](int r, int p) {
      return a.postgate ? vector_at<DT>(a.postgate, row_base(r) + t0 + p) : make_uint4(0, 0, 0, 0);
    };
    auto store = [&](int r, int p, uint4 gate_bits) {
      float out[kVector<DT>], gate[kVector<DT>];
#pragma unroll
      for (int e = 0; e < kVector<DT>; e += 4) {  // 4 staged floats lie together (8 of padding per 32)
        const float4 conv = *reinterpret_cast<const float4*>(&staged(r, p + e));
        out[e] = conv.x, out[e + 1] = conv.y, out[e + 2] = conv.z, out[e + 3] = conv.w;
      }
      if (a.postgate) {
        unpack16<DT>(gate_bits, gate);
#pragma unroll
        for (int e = 0; e < kVector<DT>; ++e) out[e] *= gate[e];
      }
      reinterpret_cast<uint4*>(a.y)[(row_base(r) + t0 + p) / kVector<DT>] = pack16<DT>(out);
    };
    for_row_vectors<DT, R, kRowGroup<R>>(count, rows, lane, load, store);
    return;
  }
  for (int r = 0; r < rows; ++r)
    for (int p = lane; p < count; p += 32) {
      const float out = staged(r, p);
      const int64_t i = row_base(r) + t0 + p;
      Elem<DT>::store(a.y, i, a.postgate ? out * Elem<DT>::load(a.postgate, i) : out);
    }
}

// Block (channel h, group): warp w takes unit group * warps + w of channel h,
// unit = row_group * chunks + chunk: TPR tiles (TPR * 128 outputs) of each of the R rows
// b = row_group * R + r. Short rows put several rows in a unit, so that every T_d read
// serves R * TPR products.
template <int DT, int TPR, int R>
__global__ void __launch_bounds__(kMaxWarps * 32, 1) direct_kernel(DirectArgs a) {
  using T = typename Operand<DT>::T;
  constexpr int kCopies = Operand<DT>::kCopies, kWindowBlock = Operand<DT>::kWindowBlock;
  constexpr int kLaneSpan = Operand<DT>::kLaneSpan;
  extern __shared__ __align__(16) unsigned char smem[];
  const uint32_t h = blockIdx.x / a.groups, group = blockIdx.x - h * a.groups;
  const uint32_t warps = blockDim.x >> 5;

  // The channel's filter, kCopies shifted copies per part: copy s holds R[i + s]. Copy 0
  // comes in 16-byte loads (rlen is a multiple of 16), the others are cut from it.
  T* filters = reinterpret_cast<T*>(smem);
  const int groups16 = a.rlen * int(sizeof(T)) / 16;
  for (int part = 0; part < a.parts; ++part) {
    const uint4* r = static_cast<const uint4*>(a.filter) + (part * a.H + h) * groups16;
    uint4* copy0 = reinterpret_cast<uint4*>(filters + part * kCopies * a.copy_stride);
    for (int q = threadIdx.x; q <= groups16; q += blockDim.x) copy0[q] = q < groups16 ? r[q] : make_uint4(0, 0, 0, 0);
  }
  __syncthreads();
  for (int job = threadIdx.x; job < a.parts * groups16; job += blockDim.x) {
    const int part = job >= groups16, q = job - part * groups16;
    T* copies = filters + part * kCopies * a.copy_stride;
    const uint4 lo = reinterpret_cast<const uint4*>(copies)[q], hi = reinterpret_cast<const uint4*>(copies)[q + 1];
    const uint32_t w[8] = {lo.x, lo.y, lo.z, lo.w, hi.x, hi.y, hi.z, hi.w};
#pragma unroll
    for (int shift = 1; shift < kCopies; ++shift) {
      constexpr int kHalves = int(sizeof(T)) / 2;  // 16-bit units per element
      const int words = shift * kHalves / 2;
      uint32_t out[4];
#pragma unroll
      for (int j = 0; j < 4; ++j)
        out[j] = (shift * kHalves) % 2 == 0 ? w[j + words] : __byte_perm(w[j + words], w[j + words + 1], 0x5432);
      reinterpret_cast<uint4*>(copies + shift * a.copy_stride)[q] = make_uint4(out[0], out[1], out[2], out[3]);
    }
  }
  __syncthreads();

  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const uint32_t unit = group * warps + warp;
  if (unit >= a.units) return;  // no block barrier below
  const uint32_t row_group = unit / a.chunks, chunk = unit - row_group * a.chunks;
  const int rows = int(min(int64_t(R), a.B - int64_t(row_group) * R));
  const int64_t first_tile = int64_t(chunk) * TPR, t0 = first_tile * kTile;

  // Each row's window: inputs t0 - halo .. t0 + TPR * 128 - 1. The warp's region holds
  // the windows, later the staged outputs.
  const int halo = (a.blocks - 1) * kBlock, span = halo + TPR * kTile;
  const int row_window = (span / kBlock) * kWindowBlock;
  T* window = reinterpret_cast<T*>(
      smem + a.parts * kCopies * a.copy_stride * int(sizeof(T)) +
      warp * warp_region_bytes(a.blocks, TPR, R, int(sizeof(T)), kWindowBlock, Operand<DT>::kWindows));
  T* window_lo = window + R * row_window;  // tf32 only
  float* stage = reinterpret_cast<float*>(window);
  auto row_base = [&](int r) { return ((int64_t(row_group) * R + r) * a.H + h) * a.L; };
  const float skip = a.D ? load_any(a.D, a.D_dtype, h) : 0.f;  // issued before the window loads
  load_windows<DT, R>(a, row_base, rows, t0 - halo, span, window, window_lo, row_window, lane);
  __syncwarp();

  const int g = lane >> 2, c = lane & 3;
  const int shift = (a.origin - g) & (kCopies - 1);
  const T* a_rounded_0 = filters + shift * a.copy_stride - shift + a.origin - g + kLaneSpan * c;
  const int lane_x = (g + a.blocks - 1) * kWindowBlock + kLaneSpan * c;
  const Operands<DT> ops{a_rounded_0, a_rounded_0 + kCopies * a.copy_stride, window + lane_x, window_lo + lane_x,
                         row_window, a.parts == 2};
  const int tiles = int(min(int64_t(TPR), (a.L + kTile - 1) / kTile - first_tile));
  const int first_limit = int(min(8 * first_tile + 7, int64_t(a.blocks)));
  const int d_end = min(a.blocks, first_limit + 8 * (tiles - 1) + 1);
  float acc[R][TPR][4] = {};
  if (a.D) {  // the skip term: one product of each tile with D times the identity
    auto fragment = [&](int q, int part, uint32_t(&f)[4]) { diagonal_fragment<DT>(skip, q, part, lane, f); };
    block_products<DT, TPR, R, 0, true>(ops, 0, fragment, true, acc, tiles, rows, first_limit);
  }
  if (tiles == TPR && rows == R) {
    products<DT, TPR, R, 0>(ops, 0, min(d_end, first_limit + 1), acc);  // every tile
    products_from<DT, TPR, R, 1>(ops, first_limit, d_end, acc);          // then one fewer every 8
  } else {
    for (int d = 0; d < d_end; ++d) d_step<DT, TPR, R, 0, true>(ops, d, acc, tiles, rows, first_limit);
  }
  __syncwarp();  // the windows are read by every lane before the outputs overwrite them

  // Accumulator e of tile (r, j) is output p = (r * TPR + j) * 128 + 16 n + t of the staged
  // outputs (n = 2c + e%2, t = g + 8*(e/2)); 8 floats of padding per 32: no bank conflicts.
#pragma unroll
  for (int r = 0; r < R; ++r)
#pragma unroll
    for (int j = 0; j < TPR; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int p = (r * TPR + j) * kTile + kBlock * (2 * c + (e & 1)) + g + 8 * (e >> 1);
        stage[p + 8 * (p >> 5)] = acc[r][j][e];
      }
  __syncwarp();
  store_outputs<DT, R>(a, row_base, rows, t0, TPR * kTile, stage, lane);
}

struct DirectLaunch {
  DirectGeometry geo;
  int tiles_per_row, rows, warps;  // a unit: `rows` rows times `tiles_per_row` tiles (at most 8 tiles)
  int64_t chunks, units, groups;
  int shared;
};

int64_t pow2_at_most(int64_t x) {
  int64_t p = 1;
  while (2 * p <= x) p *= 2;
  return p;
}

DirectLaunch direct_launch(const fftconv_params& p) {
  DirectLaunch l{};
  l.geo = direct_geometry(p);
  const int64_t row_tiles = (p.L + kTile - 1) / kTile;
  l.tiles_per_row = int(std::min<int64_t>(8, next_pow2(row_tiles)));
  l.rows = int(std::min<int64_t>(8 / l.tiles_per_row, pow2_at_most(p.B)));
  l.chunks = (row_tiles + l.tiles_per_row - 1) / l.tiles_per_row;
  l.units = (p.B + l.rows - 1) / l.rows * l.chunks;
  l.warps = int(std::max<int64_t>(1, std::min<int64_t>(kMaxWarps, l.units)));
  l.groups = (l.units + l.warps - 1) / l.warps;
  l.shared = l.geo.parts * l.geo.copies * l.geo.copy_stride * l.geo.element_bytes +
             l.warps * warp_region_bytes(l.geo.blocks, l.tiles_per_row, l.rows, l.geo.element_bytes,
                                         l.geo.window_block, l.geo.windows);
  return l;
}

template <int DT, int TPR, int R>
void launch_direct(const DirectArgs& a, const DirectLaunch& l, cudaStream_t stream) {
  allow_shared(direct_kernel<DT, TPR, R>, l.shared);
  direct_kernel<DT, TPR, R><<<dim3(unsigned(a.H * l.groups)), unsigned(l.warps * 32), l.shared, stream>>>(a);
}

// Units of 8 tiles where rows are long enough, else of up to 8 / tiles_per_row rows.
template <int DT>
void launch_direct(const DirectArgs& a, const DirectLaunch& l, cudaStream_t stream) {
  switch (l.tiles_per_row * 16 + l.rows) {
    case 1 * 16 + 1: launch_direct<DT, 1, 1>(a, l, stream); break;
    case 1 * 16 + 2: launch_direct<DT, 1, 2>(a, l, stream); break;
    case 1 * 16 + 4: launch_direct<DT, 1, 4>(a, l, stream); break;
    case 1 * 16 + 8: launch_direct<DT, 1, 8>(a, l, stream); break;
    case 2 * 16 + 1: launch_direct<DT, 2, 1>(a, l, stream); break;
    case 2 * 16 + 2: launch_direct<DT, 2, 2>(a, l, stream); break;
    case 2 * 16 + 4: launch_direct<DT, 2, 4>(a, l, stream); break;
    case 4 * 16 + 1: launch_direct<DT, 4, 1>(a, l, stream); break;
    case 4 * 16 + 2: launch_direct<DT, 4, 2>(a, l, stream); break;
    default: launch_direct<DT, 8, 1>(a, l, stream); break;
  }
}

}  // namespace

int64_t direct_max_taps() {
  static const int64_t max_taps = [] {
    const char* text = std::getenv("FFTCONV_CUDA_DIRECT_MAX_TAPS");
    return text ? std::max<int64_t>(0, std::atoll(text)) : int64_t(kDefaultMaxTaps);
  }();
  return max_taps;
}

bool direct_applies(const fftconv_params& p) {
  if (p.freq_keep > 0 || is_circular(p.L, p.Lk, p.fft_size)) return false;  // not a causal FIR then
  const int64_t taps = used_taps(p.L, p.Lk, p.fft_size);
  const int64_t largest = p.dtype == FFTCONV_FLOAT32 ? kFloat32MaxTaps : kLargestTaps;
  return taps >= 1 && taps <= std::min<int64_t>(direct_max_taps(), largest);
}

int64_t direct_filter_bytes(const fftconv_params& p) {
  const DirectGeometry g = direct_geometry(p);
  return (g.parts * p.H * g.rlen * g.element_bytes + 15) / 16 * 16;
}

void direct_prepare_filter(const fftconv_params& p, void* prepared, cudaStream_t stream) {
  const DirectGeometry g = direct_geometry(p);
  const int64_t total = p.H * g.rlen;
  const unsigned blocks = unsigned(std::min<int64_t>((total + 255) / 256, 65536));
  auto launch = [&](auto kernel) {
    kernel<<<blocks, 256, 0, stream>>>(p.k, p.k_dtype, p.H, p.Lk, g.taps, g.rlen, g.origin, g.parts, prepared);
  };
  switch (p.dtype) {
    case FFTCONV_FLOAT16: launch(direct_filter_kernel<FFTCONV_FLOAT16>); break;
    case FFTCONV_BFLOAT16: launch(direct_filter_kernel<FFTCONV_BFLOAT16>); break;
    default: launch(direct_filter_kernel<FFTCONV_FLOAT32>); break;
  }
  check_cuda(cudaGetLastError(), "launching the tensor-core filter kernel");
}

void direct_forward(const fftconv_params& p, const void* prepared, cudaStream_t stream) {
  const DirectLaunch l = direct_launch(p);
  if (p.H * l.groups > int64_t(0x7fffffff) || l.units > int64_t(0x7fffffff))
    fail(FFTCONV_ERR_UNSUPPORTED, "more than 2^31 blocks or row chunks in one call");
  DirectArgs a{};
  a.u = p.u, a.pregate = p.pregate, a.postgate = p.postgate, a.D = p.D, a.y = p.y;
  a.filter = prepared;
  a.B = p.B, a.H = p.H, a.L = p.L;
  a.units = l.units, a.chunks = uint32_t(l.chunks), a.groups = uint32_t(l.groups);
  a.blocks = l.geo.blocks, a.rlen = l.geo.rlen, a.origin = l.geo.origin, a.copy_stride = l.geo.copy_stride;
  a.parts = l.geo.parts;
  a.D_dtype = p.D_dtype;
  auto aligned = [](const void* ptr) { return reinterpret_cast<uintptr_t>(ptr) % 16 == 0; };
  a.vector_io = p.L % (16 / l.geo.element_bytes) == 0 && aligned(p.u) && aligned(p.y) && aligned(p.pregate) &&
                aligned(p.postgate);
  switch (p.dtype) {
    case FFTCONV_FLOAT16: launch_direct<FFTCONV_FLOAT16>(a, l, stream); break;
    case FFTCONV_BFLOAT16: launch_direct<FFTCONV_BFLOAT16>(a, l, stream); break;
    default: launch_direct<FFTCONV_FLOAT32>(a, l, stream); break;
  }
  check_cuda(cudaGetLastError(), "launching the tensor-core FFTConv kernel");
}

}  // namespace cuda
}  // namespace fftconv
