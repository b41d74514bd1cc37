/* fftconv-rt core C ABI.
 *
 * Framework-neutral: plain structs, status codes and a thread-local message.
 * The ORT op, the TensorRT plugin and the Python bindings (ctypes) all go
 * through this header; nothing here knows about tensors of any framework.
 *
 * Semantics (python/fftconv_rt/op_spec.toml), n = fft_size:
 *   v = pregate * u
 *   y = postgate * (irfft(rfft(v, n) * rfft(k, n), n)[..., :L] + D * v)
 * fft_size == 0 means the exact linear causal convolution.
 * freq_keep = K > 0 (frequency-sparse): rfft(k, n) is zeroed at the bins f >= K, with
 * n = fft_size, or 2L when fft_size is 0; n must then be a power of two and at least Lk.
 */
#ifndef FFTCONV_RT_FFTCONV_H
#define FFTCONV_RT_FFTCONV_H

#include <stddef.h>
#include <stdint.h>

#if defined(_WIN32)
#define FFTCONV_API __declspec(dllexport)
#else
#define FFTCONV_API __attribute__((visibility("default")))
#endif

#ifdef __cplusplus
extern "C" {
#endif

#define FFTCONV_ABI_VERSION 2

typedef enum fftconv_status {
  FFTCONV_OK = 0,
  FFTCONV_ERR_INVALID_ARGUMENT = 1, /* a shape, type or attribute violates the op contract */
  FFTCONV_ERR_UNSUPPORTED = 2,      /* valid by the contract, not supported by this build */
  FFTCONV_ERR_OUT_OF_MEMORY = 3,
  FFTCONV_ERR_INTERNAL = 4
} fftconv_status;

/* Element types; the numbering matches ONNX TensorProto.DataType. */
typedef enum fftconv_dtype {
  FFTCONV_FLOAT32 = 1,
  FFTCONV_FLOAT16 = 10,
  FFTCONV_BFLOAT16 = 16
} fftconv_dtype;

typedef enum fftconv_layout {
  FFTCONV_LAYOUT_BHL = 0, /* u, y, gates are (B, H, L) */
  FFTCONV_LAYOUT_BLH = 1  /* u, y, gates are (B, L, H): channels-last */
} fftconv_layout;

/* Input slots, in the order of the ONNX node's inputs. */
enum {
  FFTCONV_INPUT_U = 0,
  FFTCONV_INPUT_K = 1,
  FFTCONV_INPUT_D = 2,
  FFTCONV_INPUT_PREGATE = 3,
  FFTCONV_INPUT_POSTGATE = 4,
  FFTCONV_NUM_INPUTS = 5
};

#define FFTCONV_MAX_RANK 8

/* Shape and type of one input as a framework sees it, for fftconv_resolve. */
typedef struct fftconv_tensor_desc {
  int32_t present; /* 0 for an omitted optional input */
  int32_t dtype;   /* an fftconv_dtype value, or any other ONNX type number to be refused */
  int32_t rank;
  int64_t dims[FFTCONV_MAX_RANK];
} fftconv_tensor_desc;

/* A host framework may lend its thread pool: parallel_for(host, task, task_data,
 * count) must run task(task_data, i) for every i in [0, count), in any order and
 * on any threads, and return when all are done. */
typedef void (*fftconv_task_fn)(void* task_data, int64_t index);
typedef void (*fftconv_parallel_for_fn)(void* host, fftconv_task_fn task, void* task_data, int64_t count);

/* Everything one call needs. Pointers may be NULL for omitted optional inputs.
 * All buffers are dense (contiguous) in the given layout. */
typedef struct fftconv_params {
  const void* u;
  const void* k;
  const void* D;        /* (H,) or NULL */
  const void* pregate;  /* like u, or NULL */
  const void* postgate; /* like u, or NULL */
  void* y;              /* like u */
  int64_t B, H, L, Lk;
  int64_t fft_size; /* 0: linear causal convolution; else the circular period n, L <= n, Lk <= n */
  int32_t dtype;    /* of u, y and the gates */
  int32_t k_dtype;  /* FFTCONV_FLOAT32 or dtype */
  int32_t D_dtype;  /* FFTCONV_FLOAT32 or dtype */
  int32_t layout;   /* fftconv_layout */
  int32_t num_threads; /* CPU: parallel chunks; 0 = one per hardware thread */
  void* stream;        /* CUDA: the cudaStream_t to run on; unused on the CPU */
  /* CPU: the host's thread pool (ONNX Runtime's intra-op threads, say), so
   * the op does not start threads of its own beside it; NULL: own threads. */
  fftconv_parallel_for_fn parallel_for;
  void* parallel_host;
  /* Frequency-sparse convolution (ABI 2): the filter spectrum keeps its freq_keep lowest rfft
   * bins; 0 keeps all. fftconv_resolve_sparse sets it, with fft_size = the period n. */
  int64_t freq_keep;
} fftconv_params;

/* The message of the last failed call on this thread ("" if none). */
FFTCONV_API const char* fftconv_last_error(void);

FFTCONV_API int32_t fftconv_abi_version(void);

/* Validates the inputs' shapes and types against the op contract and fills
 * B, H, L, Lk, dtype, k_dtype, D_dtype, layout and fft_size of *out (the
 * pointers are left alone). Every adapter calls this, so the errors read the
 * same from every framework. *out_shape receives the output shape (rank 3). */
FFTCONV_API fftconv_status fftconv_resolve(const fftconv_tensor_desc inputs[FFTCONV_NUM_INPUTS],
                                           int64_t fft_size, const char* layout,
                                           fftconv_params* out, int64_t out_shape[3]);

/* fftconv_resolve with the attribute freq_keep (>= 0): where it removes bins (K < n/2 + 1),
 * *out gets freq_keep = K and fft_size = n, the power-of-two period the mask is defined at;
 * otherwise freq_keep = 0. */
FFTCONV_API fftconv_status fftconv_resolve_sparse(const fftconv_tensor_desc inputs[FFTCONV_NUM_INPUTS],
                                                  int64_t fft_size, const char* layout, int64_t freq_keep,
                                                  fftconv_params* out, int64_t out_shape[3]);

/* ---- CPU ---------------------------------------------------------------
 * The filter spectrum depends on (H, Lk, the transform size) and k; callers
 * with a constant filter prepare it once per transform size and pass it to
 * every run. The transform size is a function of (L, Lk, fft_size). */

/* Transform size the CPU path uses for these sizes (0 when invalid). */
FFTCONV_API int64_t fftconv_cpu_transform_size(int64_t L, int64_t Lk, int64_t fft_size);

/* Number of floats of the prepared filter spectrum for these params. */
FFTCONV_API int64_t fftconv_cpu_filter_floats(const fftconv_params* p);

/* Computes the spectrum of p->k into spectrum (fftconv_cpu_filter_floats floats). */
FFTCONV_API fftconv_status fftconv_cpu_prepare_filter(const fftconv_params* p, float* spectrum);

/* Runs the op. spectrum: a prepared filter for the same (H, Lk, k, transform
 * size), or NULL to transform p->k within the call. */
FFTCONV_API fftconv_status fftconv_cpu_forward(const fftconv_params* p, const float* spectrum);

/* ---- CUDA (present when the library was built with CUDA) -------------------
 * All pointers of params are device pointers; everything runs on
 * params->stream (a cudaStream_t; NULL = the legacy default stream), with no
 * device-wide synchronisation and no allocation: the caller provides the
 * prepared-filter buffer and the workspace, whose sizes these queries give.
 * The prepared filter is opaque: a spectrum, or, for short filters of fp16/bf16
 * calls (tensor-core path), the reversed taps. A constant filter is prepared
 * once and reused by every run whose params differ only in B and the pointers. */

/* 1 when this library has the CUDA kernels and a CUDA device is visible. */
FFTCONV_API int32_t fftconv_cuda_available(void);

/* Bytes of the prepared filter spectrum for these params. */
FFTCONV_API int64_t fftconv_cuda_filter_bytes(const fftconv_params* p);

/* Bytes of workspace fftconv_cuda_prepare_filter and fftconv_cuda_forward need (0 for short sequences). */
FFTCONV_API int64_t fftconv_cuda_workspace_bytes(const fftconv_params* p);

/* Computes the spectrum of p->k into `spectrum` (device memory, fftconv_cuda_filter_bytes). */
FFTCONV_API fftconv_status fftconv_cuda_prepare_filter(const fftconv_params* p, void* spectrum, void* workspace,
                                                       int64_t workspace_bytes);

/* Runs the op with a prepared spectrum (p->k is not read). */
FFTCONV_API fftconv_status fftconv_cuda_forward(const fftconv_params* p, const void* spectrum, void* workspace,
                                                int64_t workspace_bytes);

#ifdef __cplusplus
}
#endif

#endif /* FFTCONV_RT_FFTCONV_H */
