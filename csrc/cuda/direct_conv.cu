// Short filters on tensor cores: the causal convolution as products of 16x16
// Toeplitz blocks (mma.sync, fp16/bf16 or tf32 operands, fp32 accumulation).
//
// With time cut in blocks of 16 steps, output block j of a row is
//   Y_j = sum_d T_d U_(j-d),   T_d[t][s] = k[16 d + t - s]  (0 outside 0 <= . < taps),
// so one mma takes T_d as A (t by s) and the input blocks j - d of 8 consecutive
// output blocks as B (s by j): a tile of 128 outputs. A warp owns up to 8 tiles of one
// or several rows (a "unit") and runs over d, loading T_d once for them. The work is
// (taps/16 + 1) mma per tile, where an FFT costs log(L): a path for short filters. The
// skip term D u is one more product per tile, with D times the identity as A.
//
// Operand layouts (fp16/bf16): B, 16 consecutive inputs per output block, comes from the
// input windows with ldmatrix (one instruction loads the B values of two tiles). The
// windows are 16-element blocks whose two 8-element halves swap places in every other
// group of 4 blocks: the 8 rows of an ldmatrix then lie in 8 different bank groups.
// A (T_d) is Toeplitz: lane (g, c) holds T_d[g][2c .. 2c + 1] = R[origin - 16d - g + 2c ..]
// of the reversed filter R[i] = k[origin - i], T_d[g + 8][..] 8 values lower and
// T_d[g][2c + 8 ..] 8 values higher (T_d[g + 8][2c + 8 ..] is T_d[g][2c ..] again): three
// 4-byte loads from the one of 2 copies of R (shifted by one element) where they are aligned.
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
// bfloat16: two products per block product (the filter in two parts); on an H200 the FFT path
// took 0.66 ms at 2048 taps (L = 2K, 2^26 elements) against 0.81, and 0.59 against 0.52 at 1024
constexpr int kBfloat16MaxTaps = 1024;

// Per I/O type: the shared-memory element of the operands, the shifted copies of the
// filter, and the stride of a 16-step block in the input windows.
// kRowRound: row windows are a multiple of this many elements (fp16/bf16: 8 blocks, so that
// every row starts at the same phase of the swizzle).
template <int DT> struct Operand {
  using T = uint16_t;
  static constexpr int kCopies = 2, kWindowBlock = 16, kWindows = 1, kRowRound = 8 * 16;
};
template <> struct Operand<FFTCONV_FLOAT32> {
  using T = float;
  static constexpr int kCopies = 2, kWindowBlock = 24, kWindows = 2, kRowRound = 1;  // tf32 part and remainder
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
  int row_round;     // row windows are a multiple of this many elements
  int windows;       // input windows per row (tf32: the tf32 parts and the remainders)
};

DirectGeometry direct_geometry(const fftconv_params& p) {
  DirectGeometry g{};
  g.taps = used_taps(p.L, p.Lk, p.fft_size);
  g.blocks = int((g.taps + kBlock - 2) / kBlock + 1);  // T_d holds k[16d - 15 .. 16d + 15]
  g.rlen = kBlock * g.blocks + 2 * kBlock;
  g.origin = kBlock * g.blocks + kBlock - 1;
  const bool tf32 = p.dtype == FFTCONV_FLOAT32;
  g.parts = tf32 || (p.k_dtype == FFTCONV_FLOAT32 && p.dtype == FFTCONV_BFLOAT16) ? 2 : 1;
  g.element_bytes = int(element_bytes(p.dtype));
  // 64 bytes modulo 128: the A reads of a warp from the two copies then meet no bank conflict
  const int period = 128 / g.element_bytes, offset = 64 / g.element_bytes;
  g.copy_stride = g.rlen + 8 + ((offset - (g.rlen + 8) % period) % period + period) % period;
  using F32 = Operand<FFTCONV_FLOAT32>;
  using F16 = Operand<FFTCONV_FLOAT16>;
  g.copies = tf32 ? F32::kCopies : F16::kCopies;
  g.window_block = tf32 ? F32::kWindowBlock : F16::kWindowBlock;
  g.row_round = tf32 ? F32::kRowRound : F16::kRowRound;
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
  uint32_t zero;   // always 0 (load_a)
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

// The A fragment of T_d for lane (g, c): a[0] = R[idx, idx + 1] (idx = origin - 16d - g + 2c),
// a[1] 8 values lower, a[2] 8 higher, a[3] = a[0]; `at` is the shared-memory address of
// R[idx]'s aligned place in the copy of the lane's parity. a[3] is loaded again, and a[2]
// too (it is a[1] of T_(d+1)), through `at_again` (the same address, which the compiler
// cannot know): with a value in two registers of a quad, ptxas made several copies of the
// whole fragment (12 moves per block product).
__device__ __forceinline__ void load_a(uint32_t at, uint32_t at_again, uint32_t (&a)[4]) {
  asm("ld.shared.b32 %0, [%4];\n"
      "ld.shared.b32 %1, [%4+-16];\n"
      "ld.shared.b32 %2, [%5+16];\n"
      "ld.shared.b32 %3, [%5];\n"
      : "=r"(a[0]), "=r"(a[1]), "=r"(a[2]), "=r"(a[3])
      : "r"(at), "r"(at_again));
}

// B values of two tiles (lanes 0-15 give the rows of the first, 16-31 those of the
// second), or of one (x2: lanes 0-15), from the shared-memory address of the lane's row.
__device__ __forceinline__ void load_b_pair(uint32_t address, uint32_t (&first)[2], uint32_t (&second)[2]) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(first[0]), "=r"(first[1]), "=r"(second[0]), "=r"(second[1])
               : "r"(address));
}
__device__ __forceinline__ void load_b(uint32_t address, uint32_t (&b)[2]) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x2.shared.b16 {%0, %1}, [%2];\n" : "=r"(b[0]), "=r"(b[1]) : "r"(address));
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
struct Operands {  // fp16/bf16
  uint32_t a_rounded;  // shared-memory addresses
  uint32_t a_remainder;
  uint32_t x;      // shared-memory address of the lane's ldmatrix row, its first half
  int lane_block;  // window block of that row for d = 0 (its bit 2 picks the swizzled half)
  int half;        // the half of the block the lane's row reads (0 or 1)
  int row_window;  // elements between the windows of the unit's rows
  bool split;      // the filter has a remainder part
  uint32_t zero;   // 0, from a kernel argument (load_a)
};
template <>
struct Operands<FFTCONV_FLOAT32> {
  const float* a_rounded;
  const float* a_remainder;
  const float* x;     // the input window's tf32 parts
  const float* x_lo;  // the remainders' window
  int row_window;
  bool split;
};

// fp16/bf16: the A fragment of T_d from the rounded part (base o.a_rounded) or the remainder.
template <int DT>
__device__ __forceinline__ void a_fragment(const Operands<DT>& o, uint32_t base, int d, uint32_t (&a)[4]) {
  const uint32_t at = base - 2 * kBlock * d;
  load_a(at, at + o.zero, a);
}

// fp16/bf16: the shared-memory address of the lane's ldmatrix row of tile 0 at step d (its
// half swapped where the window's block swaps them).
template <int DT>
__device__ __forceinline__ uint32_t b_row(const Operands<DT>& o, int d) {
  return o.x - 32 * d + 16 * (o.half ^ (((o.lane_block - d) >> 2) & 1));
}

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
    // Tiles in pairs: (j, j + 1) of a row, or with one tile per row, (r, r + 1).
    const uint32_t x = b_row(o, d);
    auto address = [&](int r, int j) { return x + 2 * uint32_t(o.row_window * r + kTile * j); };
    uint32_t b[R][TPR][2];
    if constexpr (TPR == 1) {
#pragma unroll
      for (int r = 0; r < R; r += 2) {
        if (r + 1 < R) {
          load_b_pair(address(r, 0), b[r][0], b[r + 1][0]);
        } else {
          load_b(address(r, 0), b[r][0]);
        }
      }
    } else {
#pragma unroll
      for (int r = 0; r < R; ++r)
#pragma unroll
        for (int j = FIRST; j < TPR; j += 2) {
          if (j + 1 < TPR) {
            load_b_pair(address(r, j), b[r][j], b[r][j + 1]);
          } else {
            load_b(address(r, j), b[r][j]);
          }
        }
    }
#pragma unroll
    for (int r = 0; r < R; ++r)
#pragma unroll
      for (int j = FIRST; j < TPR; ++j)
        if (!skip(r, j)) mma_16816<DT>(acc[r][j], a_rounded, b[r][j][0], b[r][j][1]);
    if (split) {
      fragment(0, 1, a_remainder);
#pragma unroll
      for (int r = 0; r < R; ++r)
#pragma unroll
        for (int j = FIRST; j < TPR; ++j)
          if (!skip(r, j)) mma_16816<DT>(acc[r][j], a_remainder, b[r][j][0], b[r][j][1]);
    }
  }
}

// The products of T_d (read from the filter copies in shared memory).
template <int DT, int TPR, int R, int FIRST, bool TESTED>
__device__ __forceinline__ void d_step(const Operands<DT>& o, int d, float (&acc)[R][TPR][4], int tiles, int rows,
                                       int first_limit) {
  auto fragment = [&](int q, int part, uint32_t(&a)[4]) {
    if constexpr (DT == FFTCONV_FLOAT32) {
      load_a((part ? o.a_remainder : o.a_rounded) - kBlock * d + 8 * q, a);
    } else {
      a_fragment(o, part ? o.a_remainder : o.a_rounded, d, a);
    }
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
  } else {  // a[0]: row g, columns 2c, 2c + 1; a[3]: row g + 8, columns 2c + 8, 2c + 9
    const uint16_t rounded = Elem<DT>::bits(D);
    const uint16_t bits = part ? Elem<DT>::bits(D - Elem<DT>::from_bits(rounded)) : rounded;
    if (c == g >> 1) a[0] = a[3] = g & 1 ? uint32_t(bits) << 16 : uint32_t(bits);
  }
}

// fp16/bf16 units of one row of 8 tiles: T_d, T_(d+8), ... T_(d+8(K-1)) in one step. Tile j
// takes input blocks 8j - d at step d, which tile j + h takes again at step d + 8h: 8 + K - 1
// B loads serve 8K mma instead of 8K (every mma otherwise reads 256 bytes of shared memory,
// the limit at 2K).
template <int DT, int K>
__device__ __forceinline__ void multi_step(const Operands<DT>& o, int d, float (&acc)[1][8][4]) {
  uint32_t a[K][4];
  auto fragments = [&](uint32_t base) {
#pragma unroll
    for (int h = 0; h < K; ++h) a_fragment(o, base, d + 8 * h, a[h]);
  };
  fragments(o.a_rounded);
  const uint32_t x = b_row(o, d);
  uint32_t b[8 + K - 1][2];  // input blocks 8j - d for j = 1 - K .. 7 (tiles 8 blocks = 256 bytes apart)
#pragma unroll
  for (int j = 1 - K; j < 7; j += 2) load_b_pair(x + 256 * j, b[j + K - 1], b[j + K]);
  load_b(x + 256 * 7, b[7 + K - 1]);
  auto products = [&] {
#pragma unroll
    for (int j = 0; j < 8; ++j)
#pragma unroll
      for (int h = 0; h < K; ++h) mma_16816<DT>(acc[0][j], a[h], b[j - h + K - 1][0], b[j - h + K - 1][1]);
  };
  products();
  if (o.split) {
    fragments(o.a_remainder);
    products();
  }
}

// Build-time tunable: K. H200, fp16 2K: 0.60 ms without (K = 1), 0.55 with 2, 0.53 with 4
// (114 registers, no spills).
#ifndef FFTCONV_CUDA_DIRECT_FRAGMENTS
#define FFTCONV_CUDA_DIRECT_FRAGMENTS 4
#endif
constexpr int kStepFragments = FFTCONV_CUDA_DIRECT_FRAGMENTS;
static_assert(kStepFragments % 2 == 0, "an even K leaves one single tile load (j = 7)");

// d in [d_begin, d_end) with tiles FIRST .. TPR-1 of every row.
template <int DT, int TPR, int R, int FIRST>
__device__ __forceinline__ void products(const Operands<DT>& o, int d_begin, int d_end, float (&acc)[R][TPR][4]) {
  int d = d_begin;
  if constexpr (DT != FFTCONV_FLOAT32 && TPR == 8 && R == 1 && FIRST == 0) {
    constexpr int K = kStepFragments;
    for (; d + 8 * K <= d_end; d += 8 * K) {  // steps d + e, d + 8 + e, ... for e < 8
#pragma unroll 1
      for (int e = 0; e < 8; ++e) multi_step<DT, K>(o, d + e, acc);
    }
  }
#pragma unroll 2
  for (; d < d_end; ++d) d_step<DT, TPR, R, FIRST, false>(o, d, acc, 0, 0, 0);
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
    Elem<DT>::unpack(raw, v);
  }
}

template <int DT>
__device__ __forceinline__ uint4 pack16(const float (&v)[kVector<DT>]) {
  if constexpr (DT == FFTCONV_FLOAT32) {
    return make_uint4(__float_as_uint(v[0]), __float_as_uint(v[1]), __float_as_uint(v[2]), __float_as_uint(v[3]));
  } else {
    return Elem<DT>::pack(v);
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

// Elements between the windows of a unit's rows.
__host__ __device__ inline int row_window_elements(int blocks, int tiles_per_row, int window_block, int row_round) {
  return ((blocks - 1 + 8 * tiles_per_row) * window_block + row_round - 1) / row_round * row_round;
}

// Shared memory of one warp: the input windows of its rows, later its staged outputs
// (8 floats of padding per 32).

__host__ __device__ inline int warp_region_bytes(int blocks, int tiles_per_row, int rows, int element_bytes,
                                                 int window_block, int row_round, int windows) {
  const int row_window = row_window_elements(blocks, tiles_per_row, window_block, row_round);
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

// Where input i of a row window lies: fp16/bf16, the halves of 16-element blocks swapped in
// every other group of 4 blocks; float32, blocks of 24 elements (16 used).
template <int DT>
__device__ __forceinline__ int window_position(int i) {
  if constexpr (DT == FFTCONV_FLOAT32) {
    return (i >> 4) * Operand<DT>::kWindowBlock + (i & 15);
  } else {
    return i ^ (((i >> 6) & 1) << 3);
  }
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
        *reinterpret_cast<uint4*>(window + r * row_window + window_position<DT>(i)) = x;
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

// The lane's operand places for d = 0 (Operands).
template <int DT, int TPR>
__device__ __forceinline__ Operands<DT> lane_operands(const DirectArgs& a, const typename Operand<DT>::T* filters,
                                                      const typename Operand<DT>::T* window,
                                                      const typename Operand<DT>::T* window_lo, int row_window,
                                                      int lane) {
  constexpr int kCopies = Operand<DT>::kCopies, kWindowBlock = Operand<DT>::kWindowBlock;
  const int g = lane >> 2, c = lane & 3;
  const int shift = (a.origin - g) & (kCopies - 1);
  if constexpr (DT == FFTCONV_FLOAT32) {
    constexpr int kLaneSpan = Operand<DT>::kLaneSpan;
    const float* a_rounded = filters + shift * a.copy_stride - shift + a.origin - g + kLaneSpan * c;
    const int lane_x = (g + a.blocks - 1) * kWindowBlock + kLaneSpan * c;
    return {a_rounded, a_rounded + kCopies * a.copy_stride, window + lane_x, window_lo + lane_x, row_window, true};
  } else {
    const uint32_t a_rounded =
        uint32_t(__cvta_generic_to_shared(filters + shift * a.copy_stride - shift + a.origin - g + 2 * c));
    // ldmatrix rows: lane l reads row l % 8 (an output block of the tile), half (l / 8) % 2,
    // of the first tile of a pair (l < 16) or the second: 8 blocks on, or one row on.
    const int block = (lane & 7) + a.blocks - 1, half = (lane >> 3) & 1;
    const int second = lane >> 4 ? (TPR >= 2 ? kTile : row_window) : 0;
    const uint32_t x = uint32_t(__cvta_generic_to_shared(window + block * kWindowBlock + second));
    return {a_rounded, a_rounded + 2 * kCopies * a.copy_stride, x, block, half, row_window, a.parts == 2, a.zero};
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
  extern __shared__ __align__(16) unsigned char smem[];
  const uint32_t h = blockIdx.x / a.groups, group = blockIdx.x - h * a.groups;
  const uint32_t warps = blockDim.x >> 5;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const uint32_t unit = group * warps + warp;
  const bool active = unit < a.units;
  const uint32_t row_group = unit / a.chunks, chunk = unit - row_group * a.chunks;
  const int rows = int(min(int64_t(R), a.B - int64_t(row_group) * R));
  const int64_t first_tile = int64_t(chunk) * TPR, t0 = first_tile * kTile;

  // The channel's filter, kCopies shifted copies per part (copy s holds R[i + s]), each
  // 16-byte chunk cut from two chunks of R in global memory (rlen is a multiple of 16).
  // A thread's first two chunks are loaded before the windows: one wait for both.
  T* filters = reinterpret_cast<T*>(smem);
  const int groups16 = a.rlen * int(sizeof(T)) / 16, jobs = a.parts * groups16;
  auto chunk_pair = [&](int job, uint4& lo, uint4& hi) {
    const int part = job >= groups16, q = job - part * groups16;
    const uint4* r = static_cast<const uint4*>(a.filter) + (part * a.H + h) * groups16;
    lo = r[q];
    hi = q + 1 < groups16 ? r[q + 1] : make_uint4(0, 0, 0, 0);
  };
  uint4 lo = make_uint4(0, 0, 0, 0), hi = lo;
  if (int(threadIdx.x) < jobs) chunk_pair(threadIdx.x, lo, hi);

  // Each row's window: inputs t0 - halo .. t0 + TPR * 128 - 1. The warp's region holds
  // the windows, later the staged outputs.
  const int halo = (a.blocks - 1) * kBlock, span = halo + TPR * kTile;
  const int row_window = row_window_elements(a.blocks, TPR, kWindowBlock, Operand<DT>::kRowRound);
  T* window = reinterpret_cast<T*>(smem + a.parts * kCopies * a.copy_stride * int(sizeof(T)) +
                                   warp * warp_region_bytes(a.blocks, TPR, R, int(sizeof(T)), kWindowBlock,
                                                            Operand<DT>::kRowRound, Operand<DT>::kWindows));
  T* window_lo = window + R * row_window;  // tf32 only
  float* stage = reinterpret_cast<float*>(window);
  auto row_base = [&](int r) { return ((int64_t(row_group) * R + r) * a.H + h) * a.L; };
  const float skip = a.D && active ? load_any(a.D, a.D_dtype, h) : 0.f;
  if (active) load_windows<DT, R>(a, row_base, rows, t0 - halo, span, window, window_lo, row_window, lane);

  for (int job = threadIdx.x; job < jobs; job += blockDim.x) {
    if (job != int(threadIdx.x)) chunk_pair(job, lo, hi);
    const int part = job >= groups16, q = job - part * groups16;
    T* copies = filters + part * kCopies * a.copy_stride;
    const uint32_t w[8] = {lo.x, lo.y, lo.z, lo.w, hi.x, hi.y, hi.z, hi.w};
#pragma unroll
    for (int shift = 0; shift < kCopies; ++shift) {
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
  if (!active) return;  // no block barrier below

  const Operands<DT> ops = lane_operands<DT, TPR>(a, filters, window, window_lo, row_window, lane);
  const int tiles = int(min(int64_t(TPR), (a.L + kTile - 1) / kTile - first_tile));
  const int first_limit = int(min(8 * first_tile + 7, int64_t(a.blocks)));
  const int d_end = min(a.blocks, first_limit + 8 * (tiles - 1) + 1);
  float acc[R][TPR][4] = {};
  const bool full = tiles == TPR && rows == R;
  if (a.D) {  // the skip term: one product of each tile with D times the identity
    auto fragment = [&](int q, int part, uint32_t(&f)[4]) { diagonal_fragment<DT>(skip, q, part, lane, f); };
    if (full) {
      block_products<DT, TPR, R, 0, false>(ops, 0, fragment, true, acc, tiles, rows, first_limit);
    } else {
      block_products<DT, TPR, R, 0, true>(ops, 0, fragment, true, acc, tiles, rows, first_limit);
    }
  }
  if (full) {
    products<DT, TPR, R, 0>(ops, 0, min(d_end, first_limit + 1), acc);  // every tile
    products_from<DT, TPR, R, 1>(ops, first_limit, d_end, acc);          // then one fewer every 8
  } else {
    for (int d = 0; d < d_end; ++d) d_step<DT, TPR, R, 0, true>(ops, d, acc, tiles, rows, first_limit);
  }
  __syncwarp();  // the windows are read by every lane before the outputs overwrite them

  // Accumulator e of tile (r, j) is output p = (r * TPR + j) * 128 + 16 n + t of the staged
  // outputs (n = 2c + e%2, t = g + 8*(e/2)); 8 floats of padding per 32 (no bank conflicts)
  // put it at p + 8 * (p / 32) = (r * TPR + j) * 160 + 40 c + 16 (e%2) + 8 (e/2) + g.
  const int g = lane >> 2, c = lane & 3;
  float* lane_stage = stage + 40 * c + g;
#pragma unroll
  for (int r = 0; r < R; ++r)
#pragma unroll
    for (int j = 0; j < TPR; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) lane_stage[(r * TPR + j) * 160 + 16 * (e & 1) + 8 * (e >> 1)] = acc[r][j][e];
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
                                         l.geo.window_block, l.geo.row_round, l.geo.windows);
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
  // not a causal FIR then (two-sided calls take the FFT path)
  if (p.freq_keep > 0 || p.Lk_rev > 0 || is_circular(p.L, p.Lk, p.fft_size)) return false;
  const int64_t taps = used_taps(p.L, p.Lk, p.fft_size);
  const int64_t largest = p.dtype == FFTCONV_FLOAT32    ? kFloat32MaxTaps
                          : p.dtype == FFTCONV_BFLOAT16 ? kBfloat16MaxTaps
                                                        : kLargestTaps;
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
