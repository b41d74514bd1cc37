// Batched transposes between (B, L, H) and (B, H, L) through 32x32 shared-memory tiles.
#include "channels_last.h"

#include "../common/geometry.h"
#include "cuda_common.cuh"

namespace fftconv {
namespace cuda {
namespace {

constexpr int kTileSide = 64;  // a block moves a 64x64 tile, 16 elements per thread
constexpr int kTileRows = 8;   // threads per tile column step (32 x 8 threads)

// out[b][c][r] = in[b][r][c] for a batch of rows x cols matrices; T is a 2- or 4-byte word.
template <typename T>
__global__ void __launch_bounds__(32 * kTileRows) transpose_kernel(const T* in, T* out, int64_t rows, int64_t cols,
                                                                   uint32_t row_tiles, uint32_t col_tiles) {
  __shared__ T tile[kTileSide][kTileSide + 1];  // +1: the column reads meet (almost) no bank conflict
  const uint32_t tiles = row_tiles * col_tiles, b = blockIdx.x / tiles, in_matrix = blockIdx.x - b * tiles;
  const uint32_t row_tile = in_matrix / col_tiles, col_tile = in_matrix - row_tile * col_tiles;
  const int64_t r0 = int64_t(row_tile) * kTileSide, c0 = int64_t(col_tile) * kTileSide;
  const int64_t matrix = rows * cols;
  in += b * matrix;
  out += b * matrix;
#pragma unroll
  for (int i = threadIdx.y; i < kTileSide; i += kTileRows)
#pragma unroll
    for (int j = threadIdx.x; j < kTileSide; j += 32) {
      const int64_t r = r0 + i, c = c0 + j;
      if (r < rows && c < cols) tile[i][j] = in[r * cols + c];
    }
  __syncthreads();
#pragma unroll
  for (int i = threadIdx.y; i < kTileSide; i += kTileRows)
#pragma unroll
    for (int j = threadIdx.x; j < kTileSide; j += 32) {
      const int64_t c = c0 + i, r = r0 + j;
      if (r < rows && c < cols) out[c * rows + r] = tile[j][i];
    }
}

void transpose(const void* in, void* out, int64_t batch, int64_t rows, int64_t cols, int element_bytes,
               cudaStream_t stream) {
  const int64_t row_tiles = (rows + kTileSide - 1) / kTileSide, col_tiles = (cols + kTileSide - 1) / kTileSide;
  const int64_t blocks = batch * row_tiles * col_tiles;
  if (blocks > int64_t(0x7fffffff))
    fail(FFTCONV_ERR_UNSUPPORTED, "channels-last input too large to transpose in one launch");
  const dim3 grid{unsigned(blocks)}, block{32, kTileRows};
  if (element_bytes == 2)
    transpose_kernel<uint16_t><<<grid, block, 0, stream>>>(static_cast<const uint16_t*>(in),
                                                           static_cast<uint16_t*>(out), rows, cols,
                                                           uint32_t(row_tiles), uint32_t(col_tiles));
  else
    transpose_kernel<uint32_t><<<grid, block, 0, stream>>>(static_cast<const uint32_t*>(in),
                                                           static_cast<uint32_t*>(out), rows, cols,
                                                           uint32_t(row_tiles), uint32_t(col_tiles));
  check_cuda(cudaGetLastError(), "launching the layout transpose");
}

// Bytes of one BHL copy, rounded up to 256 so that every copy starts aligned.
int64_t copy_bytes(const fftconv_params& p) {
  return (p.B * p.H * p.L * int(element_bytes(p.dtype)) + 255) / 256 * 256;
}

}  // namespace

int64_t channels_last_bytes(const fftconv_params& p) {
  if (p.layout != FFTCONV_LAYOUT_BLH) return 0;
  const int copies = 2 + (p.pregate ? 1 : 0) + (p.postgate ? 1 : 0);  // u, y and the gates given
  return copies * copy_bytes(p);
}

fftconv_params to_channels_first(const fftconv_params& p, void* workspace, cudaStream_t stream) {
  fftconv_params inner = p;
  inner.layout = FFTCONV_LAYOUT_BHL;
  char* next = static_cast<char*>(workspace);
  auto copy_of = [&](const void* blh) -> void* {
    void* bhl = next;
    next += copy_bytes(p);
    if (blh) transpose(blh, bhl, p.B, p.L, p.H, int(element_bytes(p.dtype)), stream);
    return bhl;
  };
  inner.u = copy_of(p.u);
  inner.y = copy_of(nullptr);
  inner.pregate = p.pregate ? copy_of(p.pregate) : nullptr;
  inner.postgate = p.postgate ? copy_of(p.postgate) : nullptr;
  return inner;
}

void to_channels_last(const fftconv_params& p, const fftconv_params& inner, cudaStream_t stream) {
  transpose(inner.y, p.y, p.B, p.H, p.L, int(element_bytes(p.dtype)), stream);
}

}  // namespace cuda
}  // namespace fftconv
