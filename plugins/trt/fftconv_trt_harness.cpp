// A stand-in for TensorRT's builder and runtime around the FFTConv plugin, for tests and timing
// on machines without TensorRT's libraries: a C API (driven from Python with ctypes) that calls
// the plugin's methods in the order TensorRT does. Building: the creator makes the plugin from
// fields, the builder checks the output type and every format combination, configures the
// plugin for a shape range and asks its workspace. Serializing: the fields are copied out and a
// runtime plugin is made from the copy. Running: each execution context attaches its own clone,
// is told its shapes (onShapeChange) and enqueues on the caller's stream with the caller's
// workspace. Device memory, streams and event timing for the caller come from the CUDA runtime.
#include <NvInferRuntime.h>
#include <cuda_runtime_api.h>

#include <cstring>
#include <memory>
#include <string>
#include <vector>

using namespace nvinfer1;

extern "C" IPluginCreatorInterface* const* getCreators(int32_t& nb_creators);
extern "C" void setLoggerFinder(ILoggerFinder* finder);

namespace {

constexpr int kMaxRank = 8;  // dims are passed as kMaxRank int64 per tensor
thread_local std::string g_error;

// The plugin's error messages, kept for the caller (as TensorRT's logger would print them).
struct RecordingLogger : ILogger {
  void log(Severity severity, AsciiChar const* message) noexcept override {
    if (severity <= Severity::kWARNING) g_error = message;
  }
};
struct Finder : ILoggerFinder {
  RecordingLogger logger;
  ILogger* findLogger() noexcept override { return &logger; }
};

// What attachToContext receives; the plugin asks it for nothing, as with TensorRT's defaults.
struct ResourceContext : IPluginResourceContext {
  IGpuAllocator* getGpuAllocator() const noexcept override { return nullptr; }
  IErrorRecorder* getErrorRecorder() const noexcept override { return nullptr; }
};

int32_t fail(std::string message) {
  g_error = std::move(message);
  return -1;
}

IPluginCreatorV3One* creator() {
  static Finder finder;
  static IPluginCreatorV3One* const found = [] {
    setLoggerFinder(&finder);
    int32_t count = 0;
    IPluginCreatorInterface* const* creators = getCreators(count);
    return count == 1 ? static_cast<IPluginCreatorV3One*>(creators[0]) : nullptr;
  }();
  return found;
}

DataType trt_type(int32_t onnx) {
  switch (onnx) {
    case 1: return DataType::kFLOAT;
    case 10: return DataType::kHALF;
    case 16: return DataType::kBF16;
    case 6: return DataType::kINT32;
    default: return DataType::kINT8;  // a type the plugin must refuse
  }
}

Dims dims_at(int32_t rank, int64_t const* dims) {
  Dims d{};
  d.nbDims = rank;
  for (int32_t r = 0; r < rank && r < kMaxRank; ++r) d.d[r] = dims[r];
  return d;
}

struct Plugin {
  std::unique_ptr<IPluginV3> plugin;
  IPluginV3OneBuild* build() {
    return static_cast<IPluginV3OneBuild*>(plugin->getCapabilityInterface(PluginCapabilityType::kBUILD));
  }
  IPluginV3OneRuntime* runtime() {
    return static_cast<IPluginV3OneRuntime*>(plugin->getCapabilityInterface(PluginCapabilityType::kRUNTIME));
  }
};

// Tensor descriptions of one call: inputs then the output (shaped and typed like input 0).
std::vector<PluginTensorDesc> call_descs(int32_t nb_inputs, int32_t const* types, int32_t const* ranks,
                                         int64_t const* dims) {
  std::vector<PluginTensorDesc> descs(size_t(nb_inputs) + 1);
  for (int32_t i = 0; i <= nb_inputs; ++i) {
    const int32_t source = i < nb_inputs ? i : 0;
    descs[size_t(i)].dims = dims_at(ranks[source], dims + source * kMaxRank);
    descs[size_t(i)].type = trt_type(types[source]);
    descs[size_t(i)].format = TensorFormat::kLINEAR;
    descs[size_t(i)].scale = 1.0f;
  }
  return descs;
}

}  // namespace

#define HARNESS_API extern "C" __attribute__((visibility("default")))

HARNESS_API const char* trth_last_error() { return g_error.c_str(); }

// The creator's createPlugin (build phase) from fields as the ONNX parser passes them; types are
// PluginFieldType values. NULL on a refusal (trth_last_error says why).
HARNESS_API void* trth_create(int32_t nb_fields, const char* const* names, const int32_t* types,
                              const void* const* data, const int32_t* lengths) {
  g_error.clear();
  if (!creator()) return fail("the plugin library has no IPluginCreatorV3One"), nullptr;
  std::vector<PluginField> fields;
  for (int32_t i = 0; i < nb_fields; ++i)
    fields.emplace_back(names[i], data[i], PluginFieldType(types[i]), lengths[i]);
  PluginFieldCollection fc{int32_t(fields.size()), fields.data()};
  IPluginV3* plugin = creator()->createPlugin("fftconv", &fc, TensorRTPhase::kBUILD);
  if (!plugin) return g_error.empty() ? (fail("createPlugin returned null without a message"), nullptr) : nullptr;
  return new Plugin{std::unique_ptr<IPluginV3>(plugin)};
}

HARNESS_API void trth_destroy(void* plugin) { delete static_cast<Plugin*>(plugin); }

// The builder's side for one optimization profile: output type, format combinations,
// configurePlugin and getWorkspaceSize. Returns the workspace bytes, or -1 when refused.
HARNESS_API int64_t trth_configure(void* handle, int32_t nb_inputs, const int32_t* types, const int32_t* ranks,
                                   const int64_t* dims_min, const int64_t* dims_opt, const int64_t* dims_max) {
  g_error.clear();
  IPluginV3OneBuild* build = static_cast<Plugin*>(handle)->build();
  if (build->getNbOutputs() != 1) return fail("getNbOutputs is not 1");
  std::vector<DataType> in_types;
  for (int32_t i = 0; i < nb_inputs; ++i) in_types.push_back(trt_type(types[i]));
  DataType out_type{};
  if (build->getOutputDataTypes(&out_type, 1, in_types.data(), nb_inputs) != 0 || out_type != in_types[0])
    return fail("getOutputDataTypes did not give u's type: " + g_error);
  std::vector<DynamicPluginTensorDesc> io(size_t(nb_inputs) + 1);
  for (int32_t i = 0; i <= nb_inputs; ++i) {
    const int32_t source = i < nb_inputs ? i : 0;
    DynamicPluginTensorDesc& d = io[size_t(i)];
    d.min = dims_at(ranks[source], dims_min + source * kMaxRank);
    d.opt = dims_at(ranks[source], dims_opt + source * kMaxRank);
    d.max = dims_at(ranks[source], dims_max + source * kMaxRank);
    d.desc.dims = d.min;  // the builder marks dynamic dims -1
    for (int32_t r = 0; r < d.min.nbDims; ++r)
      if (d.min.d[r] != d.max.d[r]) d.desc.dims.d[r] = -1;
    d.desc.type = i < nb_inputs ? in_types[size_t(i)] : out_type;
    d.desc.format = TensorFormat::kLINEAR;
  }
  for (int32_t pos = 0; pos <= nb_inputs; ++pos)
    if (!build->supportsFormatCombination(pos, io.data(), nb_inputs, 1))
      return fail("supportsFormatCombination refused the linear format at position " + std::to_string(pos));
  if (build->configurePlugin(io.data(), nb_inputs, io.data() + nb_inputs, 1) != 0)
    return fail(g_error.empty() ? "configurePlugin failed without a message" : g_error);
  return int64_t(build->getWorkspaceSize(io.data(), nb_inputs, io.data() + nb_inputs, 1));
}

// The engine's serialization round trip: the fields are copied (as into an engine file) and the
// creator makes the runtime plugin from the copy.
HARNESS_API void* trth_deserialize(void* handle) {
  g_error.clear();
  PluginFieldCollection const* saved = static_cast<Plugin*>(handle)->runtime()->getFieldsToSerialize();
  if (!saved) return fail("getFieldsToSerialize returned null"), nullptr;
  std::vector<std::string> names;
  std::vector<std::vector<char>> blobs;
  for (int32_t i = 0; i < saved->nbFields; ++i) {
    PluginField const& f = saved->fields[i];
    size_t element = 0;
    switch (f.type) {
      case PluginFieldType::kINT64: element = 8; break;
      case PluginFieldType::kINT32: case PluginFieldType::kFLOAT32: element = 4; break;
      case PluginFieldType::kCHAR: case PluginFieldType::kINT8: element = 1; break;
      default: return fail(std::string("field '") + f.name + "' has a type the harness does not copy"), nullptr;
    }
    names.emplace_back(f.name);
    const char* bytes = static_cast<const char*>(f.data);
    blobs.emplace_back(bytes, bytes + element * size_t(f.length));
  }
  std::vector<PluginField> fields;
  for (size_t i = 0; i < names.size(); ++i)
    fields.emplace_back(names[i].c_str(), blobs[i].data(), saved->fields[i].type, saved->fields[i].length);
  PluginFieldCollection fc{int32_t(fields.size()), fields.data()};
  IPluginV3* plugin = creator()->createPlugin("fftconv", &fc, TensorRTPhase::kRUNTIME);
  if (!plugin) return nullptr;
  return new Plugin{std::unique_ptr<IPluginV3>(plugin)};
}

// An execution context's own plugin: attachToContext's clone.
HARNESS_API void* trth_attach(void* handle) {
  g_error.clear();
  static ResourceContext context;
  IPluginV3* plugin = static_cast<Plugin*>(handle)->runtime()->attachToContext(&context);
  if (!plugin) return fail("attachToContext returned null"), nullptr;
  return new Plugin{std::unique_ptr<IPluginV3>(plugin)};
}

// The fields the plugin would serialize, as "name=value;..." (integers and strings), for checks.
HARNESS_API int32_t trth_fields(void* handle, char* out, int32_t capacity) {
  PluginFieldCollection const* saved = static_cast<Plugin*>(handle)->runtime()->getFieldsToSerialize();
  std::string text;
  for (int32_t i = 0; saved && i < saved->nbFields; ++i) {
    PluginField const& f = saved->fields[i];
    text += std::string(f.name) + "=";
    if (f.type == PluginFieldType::kINT64) text += std::to_string(*static_cast<int64_t const*>(f.data));
    else if (f.type == PluginFieldType::kINT32) text += std::to_string(*static_cast<int32_t const*>(f.data));
    else if (f.type == PluginFieldType::kCHAR) text.append(static_cast<char const*>(f.data), size_t(f.length));
    text += ";";
  }
  if (int32_t(text.size()) >= capacity) return fail("field text needs " + std::to_string(text.size()) + " bytes");
  std::memcpy(out, text.c_str(), text.size() + 1);
  return 0;
}

HARNESS_API int32_t trth_shape_change(void* handle, int32_t nb_inputs, const int32_t* types, const int32_t* ranks,
                                      const int64_t* dims) {
  g_error.clear();
  std::vector<PluginTensorDesc> descs = call_descs(nb_inputs, types, ranks, dims);
  if (static_cast<Plugin*>(handle)->runtime()->onShapeChange(descs.data(), nb_inputs, descs.data() + nb_inputs, 1))
    return fail(g_error.empty() ? "onShapeChange failed without a message" : g_error);
  return 0;
}

HARNESS_API int32_t trth_enqueue(void* handle, int32_t nb_inputs, const int32_t* types, const int32_t* ranks,
                                 const int64_t* dims, const void* const* inputs, void* output, void* workspace,
                                 void* stream) {
  g_error.clear();
  std::vector<PluginTensorDesc> descs = call_descs(nb_inputs, types, ranks, dims);
  void* outputs[1] = {output};
  if (static_cast<Plugin*>(handle)->runtime()->enqueue(descs.data(), descs.data() + nb_inputs, inputs, outputs,
                                                       workspace, static_cast<cudaStream_t>(stream)))
    return fail(g_error.empty() ? "enqueue failed without a message" : g_error);
  return 0;
}

// Milliseconds of each of `count` enqueues (CUDA events around each on the stream), after one
// untimed enqueue.
HARNESS_API int32_t trth_time_enqueue(void* handle, int32_t nb_inputs, const int32_t* types, const int32_t* ranks,
                                      const int64_t* dims, const void* const* inputs, void* output, void* workspace,
                                      void* stream, int32_t count, float* milliseconds) {
  std::vector<cudaEvent_t> events(size_t(count) + 1);
  for (cudaEvent_t& e : events)
    if (cudaEventCreate(&e) != cudaSuccess) return fail("cudaEventCreate failed");
  int32_t status = trth_enqueue(handle, nb_inputs, types, ranks, dims, inputs, output, workspace, stream);
  cudaStream_t s = static_cast<cudaStream_t>(stream);
  cudaEventRecord(events[0], s);
  for (int32_t i = 0; status == 0 && i < count; ++i) {
    status = trth_enqueue(handle, nb_inputs, types, ranks, dims, inputs, output, workspace, stream);
    cudaEventRecord(events[size_t(i) + 1], s);
  }
  if (status == 0 && cudaEventSynchronize(events.back()) != cudaSuccess)
    status = fail(std::string("the timed enqueues failed: ") + cudaGetErrorString(cudaGetLastError()));
  for (int32_t i = 0; status == 0 && i < count; ++i)
    cudaEventElapsedTime(&milliseconds[i], events[size_t(i)], events[size_t(i) + 1]);
  for (cudaEvent_t e : events) cudaEventDestroy(e);
  return status;
}

// ---- device memory and streams for the caller ----
HARNESS_API void* trth_malloc(int64_t bytes) {
  void* p = nullptr;
  if (cudaMalloc(&p, size_t(bytes > 0 ? bytes : 1)) != cudaSuccess) {
    fail("cudaMalloc of " + std::to_string(bytes) + " bytes: " + cudaGetErrorString(cudaGetLastError()));
    return nullptr;
  }
  return p;
}
HARNESS_API void trth_free(void* p) { cudaFree(p); }

int32_t cuda_status(cudaError_t e, char const* what) {
  return e == cudaSuccess ? 0 : fail(std::string(what) + ": " + cudaGetErrorString(e));
}
HARNESS_API int32_t trth_upload(void* device, const void* host, int64_t bytes) {
  return cuda_status(cudaMemcpy(device, host, size_t(bytes), cudaMemcpyHostToDevice), "copy to the device");
}
HARNESS_API int32_t trth_download(void* host, const void* device, int64_t bytes) {
  return cuda_status(cudaMemcpy(host, device, size_t(bytes), cudaMemcpyDeviceToHost), "copy from the device");
}
HARNESS_API int32_t trth_fill(void* device, int32_t byte, int64_t bytes) {
  return cuda_status(cudaMemset(device, byte, size_t(bytes)), "cudaMemset");
}
HARNESS_API void* trth_stream_create() {
  cudaStream_t s = nullptr;
  return cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking) == cudaSuccess ? s : nullptr;
}
HARNESS_API void trth_stream_destroy(void* s) { cudaStreamDestroy(static_cast<cudaStream_t>(s)); }
HARNESS_API int32_t trth_stream_synchronize(void* s) {
  return cuda_status(cudaStreamSynchronize(static_cast<cudaStream_t>(s)), "the stream's work");
}
HARNESS_API int32_t trth_device_name(char* out, int32_t capacity) {
  cudaDeviceProp prop{};
  if (const int32_t status = cuda_status(cudaGetDeviceProperties(&prop, 0), "cudaGetDeviceProperties")) return status;
  std::strncpy(out, prop.name, size_t(capacity - 1));
  out[capacity - 1] = 0;
  return 0;
}
