// BLH calls on the GPU: the rows are transposed to BHL copies in the workspace, run
// by the BHL kernels, and the output transposed back (channels_last.cu). Coalesced
// transposes cost ~3 passes over the data; strided rows cost 3-5x the whole op.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "fftconv_rt/fftconv.h"

namespace fftconv {
namespace cuda {

// Workspace bytes for the BHL copies of u, y and the gates of a BLH call (0 for BHL).
int64_t channels_last_bytes(const fftconv_params& p);

// Transposes u and the gates of BLH call p into `workspace` and returns the BHL call
// that reads them and writes its output there too.
fftconv_params to_channels_first(const fftconv_params& p, void* workspace, cudaStream_t stream);

// Transposes the output of `inner` (from to_channels_first) into p.y.
void to_channels_last(const fftconv_params& p, const fftconv_params& inner, cudaStream_t stream);

}  // namespace cuda
}  // namespace fftconv
