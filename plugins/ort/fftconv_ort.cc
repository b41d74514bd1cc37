// ONNX Runtime custom-op library: fftconv_rt::FFTConv (versions 1 and 2: a version-1 node is a
// version-2 node without k_rev, period_scale and max_length).
//
// A thin adapter over the core C ABI: it reads the attributes, describes the
// inputs to fftconv_resolve (which validates them), allocates the output and
// calls the core. A constant filter (k, and k_rev when given, initializers) has its spectrum
// prepared once per transform size and kept for the session.
//
// Built with CUDA, the library also registers the op for CUDAExecutionProvider:
// it runs on ORT's compute stream, takes its workspace (and the kept spectra of a
// constant filter) from ORT's allocator for the output's device, and never
// synchronises with the host.
#define ORT_API_MANUAL_INIT
#include "onnxruntime_cxx_api.h"
#undef ORT_API_MANUAL_INIT

#include <algorithm>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "fftconv_rt/fftconv.h"

namespace {

constexpr const char* kDomain = "fftconv_rt";
constexpr const char* kOpName = "FFTConv";
constexpr const char* kCudaProvider = "CUDAExecutionProvider";
constexpr int kFirstVersion = 1, kLastVersion = 2;  // the op versions this library serves

Ort::Status op_error(const std::string& message, OrtErrorCode code = ORT_INVALID_ARGUMENT) {
  return Ort::Status(message.c_str(), code);
}

Ort::Status core_error(fftconv_status status) {
  const OrtErrorCode code = status == FFTCONV_ERR_INVALID_ARGUMENT ? ORT_INVALID_ARGUMENT
                            : status == FFTCONV_ERR_UNSUPPORTED    ? ORT_NOT_IMPLEMENTED
                                                                   : ORT_RUNTIME_EXCEPTION;
  return op_error(fftconv_last_error(), code);
}

// Reads an optional attribute: absent gives the default, a wrong type is an error.
template <typename T>
T attribute_or(const Ort::ConstKernelInfo& info, const char* name, T fallback) {
  try {
    return info.GetAttribute<T>(name);
  } catch (const Ort::Exception& e) {
    if (std::string(e.what()).find("No attribute with name") != std::string::npos) return fallback;
    throw Ort::Exception(std::string("attribute '") + name + "': " + e.what(), e.GetOrtErrorCode());
  }
}

fftconv_tensor_desc describe(const Ort::ConstValue& value) {
  fftconv_tensor_desc d{};
  if (!value) return d;  // omitted optional input
  const auto info = value.GetTensorTypeAndShapeInfo();
  const std::vector<int64_t> shape = info.GetShape();
  d.present = 1;
  d.dtype = static_cast<int32_t>(info.GetElementType());
  d.rank = static_cast<int32_t>(shape.size());
  for (size_t i = 0; i < shape.size() && i < FFTCONV_MAX_RANK; ++i) d.dims[i] = shape[i];
  return d;
}

// Lends ORT's intra-op thread pool to the core (so the op starts no threads of
// its own beside ORT's, which spin between ops). If ORT refuses, the chunks run
// here, one after another.
void ort_parallel_for(void* host, fftconv_task_fn task, void* task_data, int64_t count) {
  struct Job {
    fftconv_task_fn task;
    void* data;
  } job{task, task_data};
  auto run = [](void* data, size_t index) {
    Job* j = static_cast<Job*>(data);
    j->task(j->data, int64_t(index));
  };
  OrtStatus* status = Ort::GetApi().KernelContext_ParallelFor(static_cast<const OrtKernelContext*>(host), run,
                                                               size_t(count), size_t(count), &job);
  if (status) {
    Ort::GetApi().ReleaseStatus(status);
    for (int64_t i = 0; i < count; ++i) task(task_data, i);
  }
}

// One constant input (an initializer): its description and raw bytes.
struct ConstantInput {
  fftconv_tensor_desc desc{};
  std::vector<char> bytes;
};

// Whether an input of the node is a constant float tensor (false: not constant, absent, or of a
// type fftconv_resolve refuses at the first run with its message); with `out`, copies it there
// (host kernels only: a CUDA kernel's initializer may live on the device).
bool read_constant(const Ort::ConstKernelInfo& info, int slot, ConstantInput* out) {
  if (size_t(slot) >= info.GetInputCount()) return false;
  int is_constant = 0;
  Ort::ConstValue value = info.GetTensorConstantInput(size_t(slot), &is_constant);
  if (!is_constant || !value) return false;
  const auto type = value.GetTensorTypeAndShapeInfo().GetElementType();
  if (type != ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT && type != ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16 &&
      type != ONNX_TENSOR_ELEMENT_DATA_TYPE_BFLOAT16)
    return false;
  if (!out) return true;
  out->desc = describe(value);
  const size_t element_bytes = out->desc.dtype == FFTCONV_FLOAT32 ? 4 : 2;
  const size_t bytes = value.GetTensorTypeAndShapeInfo().GetElementCount() * element_bytes;
  out->bytes.resize(bytes);
  std::memcpy(out->bytes.data(), value.GetTensorRawData(), bytes);
  return true;
}

// Whether a node's input slot is given (not omitted, not past its last input).
bool has_input(const Ort::ConstKernelInfo& info, int slot) {
  if (size_t(slot) >= info.GetInputCount()) return false;
  return !info.GetInputName(size_t(slot)).empty();
}

// The filter of a node whose 'k' (and 'k_rev', when given) are initializers: raw bytes and
// descriptions, plus its spectra by what they depend on: the transform size and the taps that
// reach the outputs (a linear convolution uses k[:L] and k_rev[:L] only, so two lengths with one
// transform size can need two spectra).
struct ConstantFilter {
  ConstantInput k, k_rev;  // k_rev.desc.present = 0: none
  std::mutex mutex;
  std::map<std::vector<int64_t>, std::vector<float>> spectra;

  const float* spectrum_for(fftconv_params params) {
    const std::vector<int64_t> key{fftconv_cpu_filter_floats(&params), std::min(params.L, params.Lk),
                                   std::min(params.L, params.Lk_rev), params.fft_size, params.freq_keep,
                                   params.truncate_filter};
    std::lock_guard<std::mutex> lock(mutex);
    auto it = spectra.find(key);
    if (it != spectra.end()) return it->second.data();
    std::vector<float> spectrum(size_t(fftconv_cpu_filter_floats(&params)));
    params.k = k.bytes.data();
    params.k_rev = k_rev.desc.present ? k_rev.bytes.data() : nullptr;
    if (fftconv_cpu_prepare_filter(&params, spectrum.data()) != FFTCONV_OK) return nullptr;
    return spectra.emplace(key, std::move(spectrum)).first->second.data();
  }
};

// The allocator KernelContext_GetAllocator hands out: a new handle per call, which holds the
// provider's memory arena until it is released (kept, it kept each session's arena alive:
// about 3 MB of device memory per session, measured over 1000 sessions on an H200).
using SharedAllocator = std::shared_ptr<OrtAllocator>;

#ifdef FFTCONV_ORT_CUDA
SharedAllocator kernel_allocator(Ort::KernelContext& context, const OrtMemoryInfo& memory_info) {
  return SharedAllocator(context.GetAllocator(memory_info),
                         [](OrtAllocator* a) { Ort::GetApi().ReleaseAllocator(a); });
}
#endif

// Device memory from an ORT allocator, returned to it when dropped (the buffer holds the
// allocator handle until then).
struct DeviceBuffer {
  SharedAllocator allocator;
  void* data = nullptr;
  DeviceBuffer() = default;
  DeviceBuffer(SharedAllocator a, size_t bytes)
      : allocator(std::move(a)), data(bytes ? allocator->Alloc(allocator.get(), bytes) : nullptr) {
    if (bytes && !data) throw Ort::Exception("FFTConv: out of device memory (" + std::to_string(bytes) + " bytes)",
                                             ORT_RUNTIME_EXCEPTION);
  }
  DeviceBuffer(DeviceBuffer&& o) noexcept : allocator(o.allocator), data(o.data) { o.data = nullptr; }
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept {
    std::swap(allocator, o.allocator);
    std::swap(data, o.data);
    return *this;
  }
  ~DeviceBuffer() {
    if (data) allocator->Free(allocator.get(), data);
  }
};

// The prepared spectra of a constant filter on the GPU, by the params they depend on
// (the filter itself does not change for the session).
struct DeviceSpectra {
  std::mutex mutex;
  std::map<std::vector<int64_t>, DeviceBuffer> spectra;
};

struct FFTConvKernel {
  int64_t fft_size = 0;
  int64_t freq_keep = 0;  // frequency-sparse: rfft bins of the filter kept, 0 for all
  int64_t period_scale = 0;
  int64_t max_length = 0;
  std::string layout = "BHL";
  bool on_gpu = false;
  std::unique_ptr<ConstantFilter> constant_filter;  // CPU kernels
  std::unique_ptr<DeviceSpectra> device_spectra;    // CUDA kernels with a constant filter

  // When the model fixes u's shape, the constant filter's spectrum is prepared
  // now, at kernel creation; otherwise at the first run of each transform size.
  void prepare_for_static_shape(const Ort::ConstKernelInfo& info) {
    const std::vector<int64_t> shape = info.GetInputTypeInfo(FFTCONV_INPUT_U).GetTensorTypeAndShapeInfo().GetShape();
    if (shape.size() != 3) return;
    for (int64_t d : shape)
      if (d < 0) return;  // symbolic dimension
    fftconv_tensor_desc inputs[FFTCONV_NUM_INPUTS] = {};
    inputs[FFTCONV_INPUT_U].present = 1;
    inputs[FFTCONV_INPUT_U].dtype =
        static_cast<int32_t>(info.GetInputTypeInfo(FFTCONV_INPUT_U).GetTensorTypeAndShapeInfo().GetElementType());
    inputs[FFTCONV_INPUT_U].rank = 3;
    for (int i = 0; i < 3; ++i) inputs[FFTCONV_INPUT_U].dims[i] = shape[size_t(i)];
    inputs[FFTCONV_INPUT_K] = constant_filter->k.desc;
    inputs[FFTCONV_INPUT_K_REV] = constant_filter->k_rev.desc;
    fftconv_params params{};
    int64_t out_shape[3];
    const fftconv_attributes attributes = node_attributes();
    // An invalid combination is left for the first run to report with its message.
    if (fftconv_resolve(inputs, FFTCONV_NUM_INPUTS, &attributes, &params, out_shape) == FFTCONV_OK && params.L > 0)
      constant_filter->spectrum_for(params);
  }

  fftconv_attributes node_attributes() const {
    return fftconv_attributes{fft_size, layout.c_str(), freq_keep, period_scale, max_length};
  }

  OrtStatusPtr ComputeV2(OrtKernelContext* raw_context) {
    try {
      Ort::KernelContext context(raw_context);
      fftconv_tensor_desc inputs[FFTCONV_NUM_INPUTS] = {};
      const void* data[FFTCONV_NUM_INPUTS] = {};
      const size_t count = context.GetInputCount();
      for (size_t i = 0; i < count && i < FFTCONV_NUM_INPUTS; ++i) {
        Ort::ConstValue value = context.GetInput(i);
        inputs[i] = describe(value);
        if (value) data[i] = value.GetTensorRawData();
      }
      fftconv_params params{};
      int64_t out_shape[3];
      const fftconv_attributes attributes = node_attributes();
      if (fftconv_resolve(inputs, FFTCONV_NUM_INPUTS, &attributes, &params, out_shape) != FFTCONV_OK)
        return core_error(FFTCONV_ERR_INVALID_ARGUMENT).release();
      Ort::UnownedValue output = context.GetOutput(0, out_shape, 3);
      if (params.B == 0 || params.H == 0 || params.L == 0) return nullptr;  // empty output

      params.u = data[FFTCONV_INPUT_U];
      params.k = data[FFTCONV_INPUT_K];
      params.D = data[FFTCONV_INPUT_D];
      params.pregate = data[FFTCONV_INPUT_PREGATE];
      params.postgate = data[FFTCONV_INPUT_POSTGATE];
      params.k_rev = data[FFTCONV_INPUT_K_REV];
      params.y = output.GetTensorMutableRawData();
#ifdef FFTCONV_ORT_CUDA
      if (on_gpu) return run_on_gpu(context, output, params);
#endif
      params.parallel_for = &ort_parallel_for;
      params.parallel_host = raw_context;

      const float* spectrum = nullptr;
      if (constant_filter) {
        spectrum = constant_filter->spectrum_for(params);
        if (!spectrum) return core_error(FFTCONV_ERR_INTERNAL).release();
      }
      const fftconv_status status = fftconv_cpu_forward(&params, spectrum);
      if (status != FFTCONV_OK) return core_error(status).release();
      return nullptr;
    } catch (const Ort::Exception& e) {
      return op_error(std::string("FFTConv: ") + e.what(), e.GetOrtErrorCode()).release();
    } catch (const std::exception& e) {
      return op_error(std::string("FFTConv: ") + e.what(), ORT_RUNTIME_EXCEPTION).release();
    }
  }

#ifdef FFTCONV_ORT_CUDA
  // On ORT's CUDA stream, with memory from ORT's allocator for the output's device.
  OrtStatusPtr run_on_gpu(Ort::KernelContext& context, Ort::UnownedValue& output, fftconv_params& params) {
    params.stream = context.GetGPUComputeStream();
    const SharedAllocator allocator =
        kernel_allocator(context, *static_cast<const OrtMemoryInfo*>(output.GetTensorMemoryInfo()));
    const int64_t workspace_bytes = fftconv_cuda_workspace_bytes(&params);
    DeviceBuffer workspace(allocator, size_t(workspace_bytes));
    // The filter's spectrum, prepared into a new buffer (the core's status on failure).
    auto prepare = [&](DeviceBuffer& buffer) {
      buffer = DeviceBuffer(allocator, size_t(fftconv_cuda_filter_bytes(&params)));
      return fftconv_cuda_prepare_filter(&params, buffer.data, workspace.data, workspace_bytes);
    };
    DeviceBuffer per_call;
    const void* spectrum = nullptr;
    if (device_spectra) {
      const std::vector<int64_t> key{params.H,        params.L,           params.Lk,        params.fft_size,
                                     params.dtype,    params.k_dtype,     params.freq_keep, params.Lk_rev,
                                     params.k_rev_dtype, params.truncate_filter};
      std::lock_guard<std::mutex> lock(device_spectra->mutex);
      auto it = device_spectra->spectra.find(key);
      if (it == device_spectra->spectra.end()) {
        DeviceBuffer prepared;
        if (const fftconv_status status = prepare(prepared); status != FFTCONV_OK)
          return core_error(status).release();
        it = device_spectra->spectra.emplace(key, std::move(prepared)).first;
      }
      spectrum = it->second.data;
    } else {
      if (const fftconv_status status = prepare(per_call); status != FFTCONV_OK) return core_error(status).release();
      spectrum = per_call.data;
    }
    const fftconv_status status = fftconv_cuda_forward(&params, spectrum, workspace.data, workspace_bytes);
    if (status != FFTCONV_OK) return core_error(status).release();
    return nullptr;  // the buffers go back to ORT's stream-ordered allocator, after the kernels in order
  }
#endif
};

struct FFTConvOp : Ort::CustomOpBase<FFTConvOp, FFTConvKernel, /*WithStatus=*/true> {
  explicit FFTConvOp(const char* provider) : provider_(provider) {
    // The output has u's element type and shape. The C++ ShapeInferContext
    // cannot read input types, so the inference works on the C API directly.
    OrtCustomOp::InferOutputShapeFn = &InferOutput;
    start_ver_ = kFirstVersion;
    end_ver_ = kLastVersion;
  }

  OrtStatusPtr CreateKernelV2(const OrtApi& /*api*/, const OrtKernelInfo* raw_info,
                              void** kernel_out) const {
    try {
      Ort::ConstKernelInfo info(raw_info);
      auto kernel = std::make_unique<FFTConvKernel>();
      kernel->on_gpu = std::strcmp(provider_, kCudaProvider) == 0;
      kernel->fft_size = attribute_or<int64_t>(info, "fft_size", 0);
      kernel->layout = attribute_or<std::string>(info, "layout", "BHL");
      kernel->freq_keep = attribute_or<int64_t>(info, "freq_keep", 0);
      kernel->period_scale = attribute_or<int64_t>(info, "period_scale", 0);
      kernel->max_length = attribute_or<int64_t>(info, "max_length", 0);
      if (kernel->layout != "BHL" && kernel->layout != "BLH")
        return op_error("FFTConv: attribute 'layout' must be \"BHL\" or \"BLH\", got \"" +
                        kernel->layout + "\"").release();
      if (kernel->fft_size < 0)
        return op_error("FFTConv: attribute 'fft_size' must be >= 0 (0 = automatic), got " +
                        std::to_string(kernel->fft_size)).release();
      if (kernel->freq_keep < 0)
        return op_error("FFTConv: attribute 'freq_keep' must be >= 0 (0 keeps every bin), got " +
                        std::to_string(kernel->freq_keep)).release();
      if (kernel->period_scale < 0)
        return op_error("FFTConv: attribute 'period_scale' must be >= 0 (0: off; s > 0: period n = s * L), got " +
                        std::to_string(kernel->period_scale)).release();
      if (kernel->period_scale > 0 && kernel->fft_size > 0)
        return op_error("FFTConv: attributes 'period_scale' = " + std::to_string(kernel->period_scale) +
                        " and 'fft_size' = " + std::to_string(kernel->fft_size) +
                        " both set the period; give one of them (the other 0)").release();
      if (kernel->max_length < 0)
        return op_error("FFTConv: attribute 'max_length' must be >= 0 (0: any length), got " +
                        std::to_string(kernel->max_length)).release();
      // The filter is constant when k is an initializer and so is k_rev, if given.
      auto filter = std::make_unique<ConstantFilter>();
      const bool on_host = !kernel->on_gpu;
      const bool constant = read_constant(info, FFTCONV_INPUT_K, on_host ? &filter->k : nullptr) &&
                            (!has_input(info, FFTCONV_INPUT_K_REV) ||
                             read_constant(info, FFTCONV_INPUT_K_REV, on_host ? &filter->k_rev : nullptr));
      if (kernel->on_gpu) {  // the filter lives on the device: its spectra are made at the first runs
        if (constant) kernel->device_spectra = std::make_unique<DeviceSpectra>();
        *kernel_out = kernel.release();
        return nullptr;
      }
      if (constant) {
        kernel->constant_filter = std::move(filter);
        kernel->prepare_for_static_shape(info);
      }
      *kernel_out = kernel.release();
      return nullptr;
    } catch (const Ort::Exception& e) {
      return op_error(std::string("FFTConv: ") + e.what(), e.GetOrtErrorCode()).release();
    }
  }

  const char* GetName() const { return kOpName; }
  const char* GetExecutionProviderType() const { return provider_; }

  size_t GetInputTypeCount() const { return FFTCONV_NUM_INPUTS; }
  // Types are checked by fftconv_resolve, which names the offending input.
  ONNXTensorElementDataType GetInputType(size_t) const { return ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED; }
  OrtCustomOpInputOutputCharacteristic GetInputCharacteristic(size_t index) const {
    return index <= FFTCONV_INPUT_K ? OrtCustomOpInputOutputCharacteristic::INPUT_OUTPUT_REQUIRED
                                    : OrtCustomOpInputOutputCharacteristic::INPUT_OUTPUT_OPTIONAL;
  }
  size_t GetOutputTypeCount() const { return 1; }
  ONNXTensorElementDataType GetOutputType(size_t) const { return ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED; }

 private:
  static OrtStatusPtr ORT_API_CALL InferOutput(const OrtCustomOp*, OrtShapeInferContext* context) {
    const OrtApi& api = Ort::GetApi();
    OrtTensorTypeAndShapeInfo* u_info = nullptr;
    if (OrtStatusPtr status = api.ShapeInferContext_GetInputTypeShape(context, 0, &u_info)) return status;
    size_t rank = 0;
    if (OrtStatusPtr status = api.GetDimensionsCount(u_info, &rank)) return status;
    if (rank != 3)
      return op_error("FFTConv: input 'u' must be rank 3 (B, H, L) or (B, L, H), got rank " +
                      std::to_string(rank)).release();
    return api.ShapeInferContext_SetOutputTypeShape(context, 0, u_info);
  }

  const char* provider_;
};

}  // namespace

extern "C" __attribute__((visibility("default"))) OrtStatus* ORT_API_CALL
RegisterCustomOps(OrtSessionOptions* options, const OrtApiBase* api_base) {
  if (!api_base) return nullptr;
  const OrtApi* api = api_base->GetApi(ORT_API_VERSION);
  if (!api)
    return api_base->GetApi(1)->CreateStatus(
        ORT_FAIL, "fftconv_rt: this onnxruntime is older than the ORT API version the library was built for");
  Ort::InitApi(api);
  static std::once_flag once;
  // Deliberately never freed: the domain must outlive every session, and
  // releasing it at process exit may run after onnxruntime is unloaded.
  static Ort::CustomOpDomain* domain = nullptr;
  static FFTConvOp cpu_op("CPUExecutionProvider");
#ifdef FFTCONV_ORT_CUDA
  static FFTConvOp cuda_op(kCudaProvider);
#endif
  try {
    std::call_once(once, [] {
      domain = new Ort::CustomOpDomain(kDomain);
      domain->Add(&cpu_op);
#ifdef FFTCONV_ORT_CUDA
      domain->Add(&cuda_op);
#endif
    });
    Ort::UnownedSessionOptions(options).Add(*domain);
  } catch (const Ort::Exception& e) {
    return Ort::Status(e).release();
  }
  return nullptr;
}
