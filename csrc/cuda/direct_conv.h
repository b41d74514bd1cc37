// Tensor-core path for short filters (direct_conv.cu), chosen by fftconv_cuda.cu.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "fftconv_rt/fftconv.h"

namespace fftconv {
namespace cuda {

// Whether a call takes the tensor-core path: a linear (not circular) convolution and
// at most direct_max_taps() filter taps in use (float32 I/O: at most 256). The kernels take BHL
// rows (BLH calls are transposed around them, channels_last.h).
bool direct_applies(const fftconv_params& p);

// The largest number of taps the path takes: 2048, or FFTCONV_CUDA_DIRECT_MAX_TAPS
// from the environment (read once; 0 turns the path off, at most 4096).
int64_t direct_max_taps();

// Bytes of the prepared filter (the reversed taps in the I/O type, split in a
// rounded part and its remainder for bf16 I/O with a float32 k, and for float32 I/O).
int64_t direct_filter_bytes(const fftconv_params& p);

void direct_prepare_filter(const fftconv_params& p, void* prepared, cudaStream_t stream);

// p: a BHL call.
void direct_forward(const fftconv_params& p, const void* prepared, cudaStream_t stream);

}  // namespace cuda
}  // namespace fftconv
