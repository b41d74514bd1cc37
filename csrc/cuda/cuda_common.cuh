// Helpers shared by the CUDA translation units: element access by I/O type and
// the host-side checks of every launch. Internal to csrc/cuda.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <string>

#include "../common/error.h"
#include "fftconv_rt/fftconv.h"

namespace fftconv {
namespace cuda {

// ---- element access ------------------------------------------------------

template <int DT> struct Elem;
template <> struct Elem<FFTCONV_FLOAT32> {
  __device__ static float load(const void* p, int64_t i) { return static_cast<const float*>(p)[i]; }
  __device__ static void store(void* p, int64_t i, float v) { static_cast<float*>(p)[i] = v; }
};
template <> struct Elem<FFTCONV_FLOAT16> {
  __device__ static float load(const void* p, int64_t i) { return __half2float(static_cast<const __half*>(p)[i]); }
  __device__ static void store(void* p, int64_t i, float v) { static_cast<__half*>(p)[i] = __float2half_rn(v); }
  // the bits of v rounded to this type (the tensor-core operands)
  __device__ static uint16_t bits(float v) { return __half_as_ushort(__float2half_rn(v)); }
  __device__ static float from_bits(uint16_t b) { return __half2float(__ushort_as_half(b)); }
};
template <> struct Elem<FFTCONV_BFLOAT16> {
  __device__ static float load(const void* p, int64_t i) {
    return __bfloat162float(static_cast<const __nv_bfloat16*>(p)[i]);
  }
  __device__ static void store(void* p, int64_t i, float v) {
    static_cast<__nv_bfloat16*>(p)[i] = __float2bfloat16_rn(v);
  }
  __device__ static uint16_t bits(float v) { return __bfloat16_as_ushort(__float2bfloat16_rn(v)); }
  __device__ static float from_bits(uint16_t b) { return __bfloat162float(__ushort_as_bfloat16(b)); }
};

__device__ inline float load_any(const void* p, int32_t dtype, int64_t i) {
  switch (dtype) {
    case FFTCONV_FLOAT16: return Elem<FFTCONV_FLOAT16>::load(p, i);
    case FFTCONV_BFLOAT16: return Elem<FFTCONV_BFLOAT16>::load(p, i);
    default: return Elem<FFTCONV_FLOAT32>::load(p, i);
  }
}

// ---- host side -------------------------------------------------------------

inline void check_cuda(cudaError_t e, const char* what) {
  if (e != cudaSuccess)
    fail(FFTCONV_ERR_INTERNAL, std::string(what) + ": " + cudaGetErrorName(e) + " (" + cudaGetErrorString(e) + ")");
}

template <typename Kernel>
void allow_shared(Kernel kernel, int bytes) {
  check_cuda(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes),
             "setting the shared-memory size");
}

}  // namespace cuda
}  // namespace fftconv
