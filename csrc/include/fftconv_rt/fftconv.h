/* fftconv-rt core C ABI.
 *
 * Framework-neutral: plain structs, status codes and a thread-local message.
 * The ORT op, the TensorRT plugin and the Python bindings (ctypes) all go
 * through this header; nothing here knows about tensors of any framework.
 *
 * Semantics (python/fftconv_rt/op_spec.toml, op version 2), n the period:
 *   v = pregate * u
 *   K = rfft(k[:n], n) + conj(rfft(k_rev[:n], n))          (no k_rev: K = rfft(k, n))
 *   y = postgate * (irfft(rfft(v, n) * K, n)[..., :L] + D * v)
 * n = fft_size when it is > 0; n = period_scale * L when period_scale > 0 (taps past n are
 * dropped, as rfft(k, n) does); else any n >= L + max(Lk, Lk_rev) - 1, which makes the result
 * the exact linear convolution: causal taps k at lags 0, 1, ... and anti-causal taps k_rev at
 * lags 0, -1, ... (y[t] += k_rev[j] * v[t + j]).
 * freq_keep = K > 0 (frequency-sparse): the spectrum is zeroed at the bins f >= K, with
 * n = fft_size, or 2L when fft_size is 0; n must then be a power of two and at least Lk.
 * max_length > 0: inputs with L > max_length are refused (a filter stored for max_length).
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

#define FFTCONV_ABI_VERSION 3

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
  FFTCONV_INPUT_K_REV = 5, /* op version 2: anti-causal taps (H, Lk_rev) */
  FFTCONV_NUM_INPUTS = 6
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
   * bins; 0 keeps all. fftconv_resolve sets it, with fft_size = the period n. */
  int64_t freq_keep;
  /* Two-sided filters (ABI 3): anti-causal taps, (H, Lk_rev), or NULL with Lk_rev = 0. The
   * sizes decide the geometry (Lk_rev > 0: a two-sided call), so that the size queries below
   * need no pointers. With fft_size = 0 a two-sided call is the exact linear convolution. */
  const void* k_rev;
  int64_t Lk_rev;
  int32_t k_rev_dtype; /* FFTCONV_FLOAT32 or dtype */
  /* ABI 3: 1 when fft_size came from the attribute period_scale (n = period_scale * L): taps
   * of k and k_rev past n are then dropped instead of refused. */
  int32_t truncate_filter;
} fftconv_params;

/* The node's attributes (op version 2); zero-initialised means every default (layout NULL: BHL). */
typedef struct fftconv_attributes {
  int64_t fft_size;     /* 0: automatic (linear); else the circular period n, max(L, Lk, Lk_rev) <= n <= 2^30 */
  const char* layout;   /* "BHL" or "BLH" */
  int64_t freq_keep;    /* 0: every bin */
  int64_t period_scale; /* 0: off; s > 0: n = s * L (fft_size must then be 0) */
  int64_t max_length;   /* 0: any L; else L > max_length is refused */
} fftconv_attributes;

/* The message of the last failed call on this thread ("" if none). */
FFTCONV_API const char* fftconv_last_error(void);

FFTCONV_API int32_t fftconv_abi_version(void);

/* Validates the inputs' shapes and types and the attributes against the op contract and
 * fills every size, type, layout and attribute field of *out (the data pointers are left alone).
 * Every adapter calls this, so the errors read the same from every framework. inputs has
 * num_inputs entries (5 for op version 1 nodes, 6 with k_rev); missing ones are absent. Where
 * freq_keep removes bins (K < n/2 + 1), *out gets freq_keep = K and fft_size = n, the
 * power-of-two period the mask is defined at; otherwise freq_keep = 0. period_scale becomes
 * fft_size = period_scale * L with truncate_filter = 1. *out_shape receives the output shape. */
FFTCONV_API fftconv_status fftconv_resolve(const fftconv_tensor_desc* inputs, int32_t num_inputs,
                                           const fftconv_attributes* attributes, fftconv_params* out,
                                           int64_t out_shape[3]);

/* ---- CPU ---------------------------------------------------------------
 * The filter spectrum depends on (H, Lk, the transform size) and k; callers
 * with a constant filter prepare it once per transform size and pass it to
 * every run. The transform size is a function of (L, Lk, fft_size). */

/* Transform size the CPU path uses for a causal call of these sizes (0 when invalid). */
FFTCONV_API int64_t fftconv_cpu_transform_size(int64_t L, int64_t Lk, int64_t fft_size);

/* How the CPU path computes a call (ABI 3; tests and benchmarks assert it). */
typedef enum fftconv_cpu_path_kind {
  FFTCONV_CPU_DIRECT_SUM = 0,     /* short causal filters: the taps summed directly, no transform */
  FFTCONV_CPU_BLOCKS = 1,         /* short filters on long rows: overlap-save in blocks */
  FFTCONV_CPU_WHOLE_ROW = 2,      /* one transform of the whole row (circular: folded at the period) */
  FFTCONV_CPU_AT_PERIOD = 3       /* circular or frequency-sparse with a power-of-two period: transformed at it */
} fftconv_cpu_path_kind;

/* The fftconv_cpu_path_kind of a call with these params (after fftconv_resolve), or -1 when
 * they are invalid (fftconv_last_error says why). */
FFTCONV_API int32_t fftconv_cpu_path(const fftconv_params* p);

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
