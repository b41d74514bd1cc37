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

// load8/store8: the eight elements from p + i (p 16-byte aligned, i a multiple of 8) in one
// 16-byte access (two for float32).
template <int DT> struct Elem;
template <> struct Elem<FFTCONV_FLOAT32> {
  __device__ static float load(const void* p, int64_t i) { return static_cast<const float*>(p)[i]; }
  __device__ static void store(void* p, int64_t i, float v) { static_cast<float*>(p)[i] = v; }
  __device__ static void load8(const void* p, int64_t i, float (&v)[8]) {
    const float4* q = reinterpret_cast<const float4*>(static_cast<const float*>(p) + i);
    const float4 lo = q[0], hi = q[1];
    v[0] = lo.x, v[1] = lo.y, v[2] = lo.z, v[3] = lo.w, v[4] = hi.x, v[5] = hi.y, v[6] = hi.z, v[7] = hi.w;
  }
  __device__ static void store8(void* p, int64_t i, const float (&v)[8]) {
    float4* q = reinterpret_cast<float4*>(static_cast<float*>(p) + i);
    q[0] = make_float4(v[0], v[1], v[2], v[3]);
    q[1] = make_float4(v[4], v[5], v[6], v[7]);
  }
};

// 16-bit types: eight elements as the four 32-bit words of a uint4, two per word.
template <typename Pair, typename Convert>
__device__ inline void unpack8(uint4 raw, float (&v)[8], Convert to_float2) {
  const uint32_t words[4] = {raw.x, raw.y, raw.z, raw.w};
#pragma unroll
  for (int w = 0; w < 4; ++w) {
    Pair pair;
    memcpy(&pair, &words[w], 4);
    const float2 f = to_float2(pair);
    v[2 * w] = f.x, v[2 * w + 1] = f.y;
  }
}

template <typename Pair, typename Convert>
__device__ inline uint4 pack8(const float (&v)[8], Convert from_float2) {
  uint32_t words[4];
#pragma unroll
  for (int w = 0; w < 4; ++w) {
    const Pair pair = from_float2(make_float2(v[2 * w], v[2 * w + 1]));
    memcpy(&words[w], &pair, 4);
  }
  return make_uint4(words[0], words[1], words[2], words[3]);
}

template <> struct Elem<FFTCONV_FLOAT16> {
  __device__ static float load(const void* p, int64_t i) { return __half2float(static_cast<const __half*>(p)[i]); }
  __device__ static void store(void* p, int64_t i, float v) { static_cast<__half*>(p)[i] = __float2half_rn(v); }
  // eight elements as the bits of 16 bytes, and back (rounded)
  __device__ static void unpack(uint4 raw, float (&v)[8]) {
    unpack8<__half2>(raw, v, [](__half2 h) { return __half22float2(h); });
  }
  __device__ static uint4 pack(const float (&v)[8]) {
    return pack8<__half2>(v, [](float2 f) { return __float22half2_rn(f); });
  }
  __device__ static void load8(const void* p, int64_t i, float (&v)[8]) {
    unpack(*reinterpret_cast<const uint4*>(static_cast<const __half*>(p) + i), v);
  }
  __device__ static void store8(void* p, int64_t i, const float (&v)[8]) {
    *reinterpret_cast<uint4*>(static_cast<__half*>(p) + i) = pack(v);
  }
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
  __device__ static void unpack(uint4 raw, float (&v)[8]) {
    unpack8<__nv_bfloat162>(raw, v, [](__nv_bfloat162 h) { return __bfloat1622float2(h); });
  }
  __device__ static uint4 pack(const float (&v)[8]) {
    return pack8<__nv_bfloat162>(v, [](float2 f) { return __float22bfloat162_rn(f); });
  }
  __device__ static void load8(const void* p, int64_t i, float (&v)[8]) {
    unpack(*reinterpret_cast<const uint4*>(static_cast<const __nv_bfloat16*>(p) + i), v);
  }
  __device__ static void store8(void* p, int64_t i, const float (&v)[8]) {
    *reinterpret_cast<uint4*>(static_cast<__nv_bfloat16*>(p) + i) = pack(v);
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
