// TensorRT plugin library: FFTConv, version "1", namespace "fftconv_rt" (IPluginV3).
//
// A thin adapter over the core C ABI, like the ONNX Runtime library: fields in, the
// same fftconv_resolve validation, the CUDA entry points on TensorRT's stream. TensorRT
// hands the filter in as an ordinary input and never says whether it is a constant, so
// its spectrum is prepared in the workspace at every enqueue, unless the field
// constant_filter says the filter is a build-time constant (the exporter sets it when k
// comes from initializers): then each execution context keeps the spectrum of its shape
// and prepares it only when the shape or the filter's address changes. Only getCreators
// and setLoggerFinder are exported; REGISTER_TENSORRT_PLUGIN is not used, so the library
// needs no libnvinfer at load time (trtexec --dynamicPlugins, Polygraphy --plugins).
#include <NvInferRuntime.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstring>
#include <set>
#include <string>
#include <vector>

#include "fftconv_rt/fftconv.h"

using namespace nvinfer1;

namespace {

constexpr char kPluginName[] = "FFTConv";
constexpr char kPluginVersion[] = "1";
constexpr char kPluginNamespace[] = "fftconv_rt";

ILoggerFinder* g_logger_finder = nullptr;

void log(ILogger::Severity severity, std::string const& message) {
  ILogger* logger = g_logger_finder ? g_logger_finder->findLogger() : nullptr;
  if (logger) logger->log(severity, ("fftconv_rt::FFTConv plugin: " + message).c_str());
}
void log_error(std::string const& message) { log(ILogger::Severity::kERROR, message); }

int32_t onnx_type(DataType type) {
  switch (type) {
    case DataType::kFLOAT: return FFTCONV_FLOAT32;
    case DataType::kHALF: return FFTCONV_FLOAT16;
    case DataType::kBF16: return FFTCONV_BFLOAT16;
    default: return 0;  // refused by fftconv_resolve with its message
  }
}

// The plugin's attributes: everything it serializes.
struct Attributes {
  int64_t fft_size = 0;
  int64_t freq_keep = 0;     // frequency-sparse: rfft bins of the filter kept, 0 for all
  int64_t period_scale = 0;  // n = period_scale * L when > 0
  int64_t max_length = 0;    // L > max_length refused when > 0
  std::string layout = "BHL";
  // Which optional op inputs the plugin's inputs 2.. are; all -1: from the number of inputs
  // (3: D; 4: D, pregate; 5: D, pregate, postgate; 6: and k_rev).
  int32_t has_D = -1, has_pregate = -1, has_postgate = -1, has_k_rev = -1;
  // 1: k (and k_rev) are build-time constants, so their spectrum is kept per context and shape.
  int32_t constant_filter = 0;

  // Op input slot of each plugin input.
  std::vector<int> slots(int32_t nb_inputs) const {
    std::vector<int> s{FFTCONV_INPUT_U, FFTCONV_INPUT_K};
    const bool by_count = has_D < 0 && has_pregate < 0 && has_postgate < 0 && has_k_rev < 0;
    if (by_count ? nb_inputs >= 3 : has_D > 0) s.push_back(FFTCONV_INPUT_D);
    if (by_count ? nb_inputs >= 4 : has_pregate > 0) s.push_back(FFTCONV_INPUT_PREGATE);
    if (by_count ? nb_inputs >= 5 : has_postgate > 0) s.push_back(FFTCONV_INPUT_POSTGATE);
    if (by_count ? nb_inputs >= 6 : has_k_rev > 0) s.push_back(FFTCONV_INPUT_K_REV);
    return s;
  }

  fftconv_attributes core() const {
    fftconv_attributes a{};
    a.fft_size = fft_size;
    a.layout = layout.c_str();
    a.freq_keep = freq_keep;
    a.period_scale = period_scale;
    a.max_length = max_length;
    return a;
  }
};

// Resolves the call from tensor descriptions (dims and types of the plugin inputs); a refusal
// goes to TensorRT's logger when `report`.
template <typename DimsOf, typename TypeOf>
bool resolve(Attributes const& at, int32_t nb_inputs, DimsOf dims_of, TypeOf type_of, fftconv_params* params,
             bool report = true) {
  const std::vector<int> slots = at.slots(nb_inputs);
  if (int32_t(slots.size()) != nb_inputs) {
    if (report)
      log_error("got " + std::to_string(nb_inputs) + " inputs; the fields has_D/has_pregate/has_postgate/has_k_rev "
                "say " + std::to_string(slots.size()));
    return false;
  }
  fftconv_tensor_desc inputs[FFTCONV_NUM_INPUTS] = {};
  for (int32_t i = 0; i < nb_inputs; ++i) {
    fftconv_tensor_desc& d = inputs[slots[size_t(i)]];
    Dims const dims = dims_of(i);
    d.present = 1;
    d.dtype = onnx_type(type_of(i));
    d.rank = dims.nbDims;
    for (int32_t r = 0; r < dims.nbDims && r < FFTCONV_MAX_RANK; ++r) d.dims[r] = dims.d[r];
  }
  const fftconv_attributes attributes = at.core();
  int64_t out_shape[3];
  if (fftconv_resolve(inputs, FFTCONV_NUM_INPUTS, &attributes, params, out_shape) != FFTCONV_OK) {
    if (report) log_error(fftconv_last_error());
    return false;
  }
  return true;
}

// The size queries count the copies of the inputs that are present (the channels-last path
// transposes each gate given), which they tell by non-null pointers: before the data is known,
// mark the present inputs with a placeholder address that is never read.
void mark_present(fftconv_params& p, std::vector<int> const& slots) {
  static char placeholder;
  for (int slot : slots) {
    const void* mark = &placeholder;
    switch (slot) {
      case FFTCONV_INPUT_K: p.k = mark; break;
      case FFTCONV_INPUT_D: p.D = mark; break;
      case FFTCONV_INPUT_PREGATE: p.pregate = mark; break;
      case FFTCONV_INPUT_POSTGATE: p.postgate = mark; break;
      case FFTCONV_INPUT_K_REV: p.k_rev = mark; break;
      default: p.u = mark; break;
    }
  }
}

// Workspace of one call: the prepared filter, then the kernels' workspace (256-byte aligned).
int64_t aligned(int64_t bytes) { return (std::max<int64_t>(bytes, 0) + 255) / 256 * 256; }
int64_t call_workspace(fftconv_params p, std::vector<int> const& slots) {
  mark_present(p, slots);
  return aligned(fftconv_cuda_filter_bytes(&p)) + aligned(fftconv_cuda_workspace_bytes(&p));
}

// Lengths at which the workspace of a profile [low, high] is evaluated: both ends, every power of
// two between them and its neighbours (where transform sizes and kernel paths change), and eight
// steps per octave.
std::vector<int64_t> sampled_lengths(int64_t low, int64_t high) {
  std::set<int64_t> lengths{low, high};
  for (int64_t p = 1; p <= high; p *= 2)
    for (int64_t length : {p - 1, p, p + 1})
      if (length >= low && length <= high) lengths.insert(length);
  for (double length = double(std::max<int64_t>(low, 1)); length < double(high); length *= 1.0905077326652577)
    lengths.insert(int64_t(length));
  return {lengths.begin(), lengths.end()};
}

class FFTConvPlugin : public IPluginV3, public IPluginV3OneCore, public IPluginV3OneBuild, public IPluginV3OneRuntime {
 public:
  explicit FFTConvPlugin(Attributes attributes) : at_(std::move(attributes)) { describe_fields(); }
  // A clone shares no prepared spectrum: each context prepares its own.
  FFTConvPlugin(FFTConvPlugin const& other) : at_(other.at_), nb_inputs_(other.nb_inputs_) { describe_fields(); }
  ~FFTConvPlugin() override { release_cache(); }

  // IPluginV3
  IPluginCapability* getCapabilityInterface(PluginCapabilityType type) noexcept override {
    switch (type) {
      case PluginCapabilityType::kCORE: return static_cast<IPluginV3OneCore*>(this);
      case PluginCapabilityType::kBUILD: return static_cast<IPluginV3OneBuild*>(this);
      case PluginCapabilityType::kRUNTIME: return static_cast<IPluginV3OneRuntime*>(this);
    }
    return nullptr;
  }
  IPluginV3* clone() noexcept override { return new (std::nothrow) FFTConvPlugin(*this); }

  // IPluginV3OneCore
  AsciiChar const* getPluginName() const noexcept override { return kPluginName; }
  AsciiChar const* getPluginVersion() const noexcept override { return kPluginVersion; }
  AsciiChar const* getPluginNamespace() const noexcept override { return kPluginNamespace; }

  // IPluginV3OneBuild
  int32_t getNbOutputs() const noexcept override { return 1; }
  int32_t getOutputDataTypes(DataType* out, int32_t nb_outputs, DataType const* in, int32_t nb_inputs) const
      noexcept override {
    if (nb_outputs != 1 || nb_inputs < 2) return -1;
    out[0] = in[0];
    return 0;
  }
  int32_t getOutputShapes(DimsExprs const* in, int32_t nb_inputs, DimsExprs const*, int32_t, DimsExprs* out,
                          int32_t nb_outputs, IExprBuilder&) noexcept override {
    if (nb_outputs != 1 || nb_inputs < 2) return -1;
    out[0] = in[0];  // y is shaped like u
    return 0;
  }
  bool supportsFormatCombination(int32_t pos, DynamicPluginTensorDesc const* io, int32_t nb_inputs,
                                 int32_t nb_outputs) noexcept override {
    PluginTensorDesc const& d = io[pos].desc;
    if (d.format != TensorFormat::kLINEAR) return false;
    const DataType u = io[0].desc.type;
    const bool io_type = u == DataType::kFLOAT || u == DataType::kHALF || u == DataType::kBF16;
    if (pos == 0) return io_type;
    const std::vector<int> slots = at_.slots(nb_inputs);
    const int slot = pos < nb_inputs && pos < int32_t(slots.size()) ? slots[size_t(pos)] : -1;
    if (slot == FFTCONV_INPUT_K || slot == FFTCONV_INPUT_D || slot == FFTCONV_INPUT_K_REV)
      return d.type == u || d.type == DataType::kFLOAT;
    (void)nb_outputs;
    return d.type == u;  // the gates and the output
  }
  int32_t configurePlugin(DynamicPluginTensorDesc const* in, int32_t nb_inputs, DynamicPluginTensorDesc const*,
                          int32_t) noexcept override {
    nb_inputs_ = nb_inputs;
    fftconv_params p{};
    // Both ends of the profile must be valid calls (max_length, for one, bounds the longest).
    for (bool upper : {false, true})
      if (!resolve(at_, nb_inputs, [&](int32_t i) { return upper ? in[i].max : in[i].min; },
                   [&](int32_t i) { return in[i].desc.type; }, &p))
        return -1;
    return 0;
  }
  size_t getWorkspaceSize(DynamicPluginTensorDesc const* in, int32_t nb_inputs, DynamicPluginTensorDesc const*,
                          int32_t) const noexcept override {
    // The largest of the calls the profile allows: the largest batch, each filter length at both
    // ends of its range, and the sampled sequence lengths (the kernels' paths change with L).
    const int length_axis = at_.layout == "BLH" ? 1 : 2;
    const std::vector<int> slots = at_.slots(nb_inputs);
    if (int32_t(slots.size()) != nb_inputs || in[0].max.nbDims != 3) return 0;
    int64_t bytes = 0;
    for (int64_t length : sampled_lengths(std::max<int64_t>(in[0].min.d[length_axis], 0),
                                          in[0].max.d[length_axis]))
      for (bool short_filters : {false, true}) {
        auto dims_of = [&](int32_t i) {
          const int slot = slots[size_t(i)];
          Dims d = (short_filters && (slot == FFTCONV_INPUT_K || slot == FFTCONV_INPUT_K_REV)) ? in[i].min
                                                                                                : in[i].max;
          if (slot == FFTCONV_INPUT_U || slot == FFTCONV_INPUT_PREGATE || slot == FFTCONV_INPUT_POSTGATE)
            d.d[length_axis] = length;
          return d;
        };
        fftconv_params p{};
        if (resolve(at_, nb_inputs, dims_of, [&](int32_t i) { return in[i].desc.type; }, &p, false))
          bytes = std::max(bytes, call_workspace(p, slots));
      }
    return size_t(bytes);
  }

  // IPluginV3OneRuntime
  int32_t onShapeChange(PluginTensorDesc const* in, int32_t nb_inputs, PluginTensorDesc const*, int32_t) noexcept
      override {
    nb_inputs_ = nb_inputs;
    fftconv_params p{};
    if (!resolve(at_, nb_inputs, [&](int32_t i) { return in[i].dims; }, [&](int32_t i) { return in[i].type; }, &p))
      return -1;
    if (at_.constant_filter > 0) {
      mark_present(p, at_.slots(nb_inputs));
      reserve_cache(fftconv_cuda_filter_bytes(&p));
    }
    return 0;
  }
  int32_t enqueue(PluginTensorDesc const* in, PluginTensorDesc const*, void const* const* inputs,
                  void* const* outputs, void* workspace, cudaStream_t stream) noexcept override {
    const int32_t nb_inputs = nb_inputs_;  // enqueue is not told; onShapeChange was
    fftconv_params p{};
    if (!resolve(at_, nb_inputs, [&](int32_t i) { return in[i].dims; }, [&](int32_t i) { return in[i].type; }, &p))
      return -1;
    const std::vector<int> slots = at_.slots(nb_inputs);
    const void* data[FFTCONV_NUM_INPUTS] = {};
    for (int32_t i = 0; i < nb_inputs; ++i) data[slots[size_t(i)]] = inputs[i];
    p.u = data[FFTCONV_INPUT_U], p.k = data[FFTCONV_INPUT_K], p.D = data[FFTCONV_INPUT_D];
    p.pregate = data[FFTCONV_INPUT_PREGATE], p.postgate = data[FFTCONV_INPUT_POSTGATE];
    p.k_rev = data[FFTCONV_INPUT_K_REV];
    p.y = outputs[0];
    p.stream = stream;
    if (p.B == 0 || p.H == 0 || p.L == 0) return 0;
    const int64_t spectrum_bytes = fftconv_cuda_filter_bytes(&p);
    const int64_t scratch_bytes = fftconv_cuda_workspace_bytes(&p);
    // none when the call needs none: the address past the spectrum may be past the workspace's end
    char* scratch = scratch_bytes > 0 ? static_cast<char*>(workspace) + aligned(spectrum_bytes) : nullptr;
    const void* spectrum = cached_spectrum(p, spectrum_bytes, scratch, scratch_bytes, stream);
    if (!spectrum) {  // prepared for this call, in the workspace
      if (fftconv_cuda_prepare_filter(&p, workspace, scratch, scratch_bytes) != FFTCONV_OK) {
        log_error(fftconv_last_error());
        return -1;
      }
      spectrum = workspace;
    }
    if (fftconv_cuda_forward(&p, spectrum, scratch, scratch_bytes) != FFTCONV_OK) {
      log_error(fftconv_last_error());
      return -1;
    }
    if (spectrum == cache_ && cudaEventRecord(cache_used_, stream) == cudaSuccess) cache_stream_ = stream;
    return 0;
  }
  IPluginV3* attachToContext(IPluginResourceContext*) noexcept override { return clone(); }
  PluginFieldCollection const* getFieldsToSerialize() noexcept override { return &collection_; }

 private:
  void describe_fields() {
    fields_ = {PluginField("fft_size", &at_.fft_size, PluginFieldType::kINT64, 1),
               PluginField("freq_keep", &at_.freq_keep, PluginFieldType::kINT64, 1),
               PluginField("period_scale", &at_.period_scale, PluginFieldType::kINT64, 1),
               PluginField("max_length", &at_.max_length, PluginFieldType::kINT64, 1),
               PluginField("layout", at_.layout.c_str(), PluginFieldType::kCHAR, int32_t(at_.layout.size())),
               PluginField("has_D", &at_.has_D, PluginFieldType::kINT32, 1),
               PluginField("has_pregate", &at_.has_pregate, PluginFieldType::kINT32, 1),
               PluginField("has_postgate", &at_.has_postgate, PluginFieldType::kINT32, 1),
               PluginField("has_k_rev", &at_.has_k_rev, PluginFieldType::kINT32, 1),
               PluginField("constant_filter", &at_.constant_filter, PluginFieldType::kINT32, 1)};
    collection_.nbFields = int32_t(fields_.size());
    collection_.fields = fields_.data();
  }

  // ---- the constant filter's spectrum, kept per context (this clone) and shape ----
  // Memory is taken at a shape change (host side, like TensorRT's own setup), never in enqueue,
  // so that an enqueue can be captured into a CUDA graph once the shape has run.
  void reserve_cache(int64_t bytes) {
    if (bytes <= cache_bytes_) return;
    release_cache();
    if (cudaMalloc(&cache_, size_t(bytes)) != cudaSuccess ||
        cudaEventCreateWithFlags(&cache_used_, cudaEventDisableTiming) != cudaSuccess) {
      cudaGetLastError();  // clears the error: the calls fall back to preparing in the workspace
      log(ILogger::Severity::kWARNING, "no device memory for the constant filter's spectrum (" +
                                           std::to_string(bytes) + " bytes): it is prepared at every enqueue");
      release_cache();
      return;
    }
    cache_bytes_ = bytes;
  }
  void release_cache() {
    if (cache_) cudaFree(cache_);  // waits for the kernels that read it
    if (cache_used_) cudaEventDestroy(cache_used_);
    cache_ = nullptr, cache_used_ = nullptr, cache_stream_ = nullptr;
    cache_bytes_ = 0;
    cache_key_.clear();
  }
  // What a prepared spectrum is valid for: the whole shape (the batch too: a filter computed from
  // input shapes may depend on any of them), every type and attribute, and the filters' addresses
  // (a rebound filter is prepared again).
  static std::vector<int64_t> spectrum_key(fftconv_params const& p) {
    return {p.B,       p.H,           p.L,      p.Lk,
            p.Lk_rev,  p.fft_size,    p.freq_keep, p.dtype,
            p.k_dtype, p.k_rev_dtype, p.layout, p.truncate_filter,
            int64_t(reinterpret_cast<uintptr_t>(p.k)), int64_t(reinterpret_cast<uintptr_t>(p.k_rev))};
  }
  // The kept spectrum for this call, prepared now if the shape or filter changed; nullptr when
  // the filter is not constant or no memory was had (the caller prepares it in the workspace).
  const void* cached_spectrum(fftconv_params const& p, int64_t bytes, void* scratch, int64_t scratch_bytes,
                              cudaStream_t stream) {
    if (at_.constant_filter <= 0 || !cache_ || bytes > cache_bytes_) return nullptr;
    // An earlier enqueue of this context on another stream may still be reading or writing it.
    if (cache_stream_ && cache_stream_ != stream && cudaStreamWaitEvent(stream, cache_used_, 0) != cudaSuccess)
      return nullptr;
    std::vector<int64_t> key = spectrum_key(p);
    if (key == cache_key_) return cache_;
    cache_key_.clear();
    if (fftconv_cuda_prepare_filter(&p, cache_, scratch, scratch_bytes) != FFTCONV_OK) return nullptr;
    cache_key_ = std::move(key);
    return cache_;
  }

  Attributes at_;
  int32_t nb_inputs_ = 5;
  std::vector<PluginField> fields_;
  PluginFieldCollection collection_{};
  void* cache_ = nullptr;
  int64_t cache_bytes_ = 0;
  std::vector<int64_t> cache_key_;  // empty: nothing prepared
  cudaEvent_t cache_used_ = nullptr;
  cudaStream_t cache_stream_ = nullptr;
};

class FFTConvCreator : public IPluginCreatorV3One {
 public:
  FFTConvCreator() {
    names_ = {PluginField("fft_size", nullptr, PluginFieldType::kINT64, 1),
              PluginField("freq_keep", nullptr, PluginFieldType::kINT64, 1),
              PluginField("period_scale", nullptr, PluginFieldType::kINT64, 1),
              PluginField("max_length", nullptr, PluginFieldType::kINT64, 1),
              PluginField("layout", nullptr, PluginFieldType::kCHAR, 3),
              PluginField("has_D", nullptr, PluginFieldType::kINT32, 1),
              PluginField("has_pregate", nullptr, PluginFieldType::kINT32, 1),
              PluginField("has_postgate", nullptr, PluginFieldType::kINT32, 1),
              PluginField("has_k_rev", nullptr, PluginFieldType::kINT32, 1),
              PluginField("constant_filter", nullptr, PluginFieldType::kINT32, 1)};
    collection_.nbFields = int32_t(names_.size());
    collection_.fields = names_.data();
  }

  IPluginV3* createPlugin(AsciiChar const*, PluginFieldCollection const* fc, TensorRTPhase) noexcept override {
    Attributes at;
    for (int32_t i = 0; fc && i < fc->nbFields; ++i) {
      PluginField const& f = fc->fields[i];
      const std::string name = f.name ? f.name : "";
      if (!f.data || f.length < 1) continue;
      if (name == "fft_size" || name == "freq_keep" || name == "period_scale" || name == "max_length") {
        int64_t& value = name == "fft_size" ? at.fft_size : name == "freq_keep" ? at.freq_keep
                       : name == "period_scale" ? at.period_scale : at.max_length;
        if (f.type == PluginFieldType::kINT64) value = *static_cast<int64_t const*>(f.data);
        else if (f.type == PluginFieldType::kINT32) value = *static_cast<int32_t const*>(f.data);
        else return refuse("field '" + name + "' must be an integer (INT32 or INT64)");
        if (value < 0) return refuse("field '" + name + "' must be >= 0, got " + std::to_string(value));
      } else if (name == "layout") {
        if (f.type != PluginFieldType::kCHAR) return refuse("field 'layout' must be a string (CHAR)");
        at.layout.assign(static_cast<char const*>(f.data), strnlen(static_cast<char const*>(f.data), size_t(f.length)));
      } else if (name == "has_D" || name == "has_pregate" || name == "has_postgate" || name == "has_k_rev" ||
                 name == "constant_filter") {
        if (f.type != PluginFieldType::kINT32)
          return refuse("field '" + name + "' must be INT32 (" +
                        (name == "constant_filter" ? "0 or 1" : "0, 1, or -1: by count") + ")");
        int32_t& flag = name == "has_D" ? at.has_D : name == "has_pregate" ? at.has_pregate
                      : name == "has_postgate" ? at.has_postgate : name == "has_k_rev" ? at.has_k_rev
                      : at.constant_filter;
        const int32_t value = *static_cast<int32_t const*>(f.data);
        flag = value < 0 && name != "constant_filter" ? -1 : value > 0;
      }  // other fields (plugin_version, plugin_namespace from the ONNX parser) are not the plugin's
    }
    if (at.layout != "BHL" && at.layout != "BLH") return refuse("field 'layout' must be \"BHL\" or \"BLH\", got \"" +
                                                               at.layout + "\"");
    if (at.period_scale > 0 && at.fft_size > 0)
      return refuse("fields 'period_scale' (" + std::to_string(at.period_scale) + ") and 'fft_size' (" +
                    std::to_string(at.fft_size) + ") exclude each other: one sets the period");
    return new (std::nothrow) FFTConvPlugin(std::move(at));
  }
  PluginFieldCollection const* getFieldNames() noexcept override { return &collection_; }
  AsciiChar const* getPluginName() const noexcept override { return kPluginName; }
  AsciiChar const* getPluginVersion() const noexcept override { return kPluginVersion; }
  AsciiChar const* getPluginNamespace() const noexcept override { return kPluginNamespace; }

 private:
  static IPluginV3* refuse(std::string const& message) {
    log_error(message);
    return nullptr;
  }
  std::vector<PluginField> names_;
  PluginFieldCollection collection_{};
};

}  // namespace

extern "C" __attribute__((visibility("default"))) void setLoggerFinder(ILoggerFinder* finder) {
  g_logger_finder = finder;
}

extern "C" __attribute__((visibility("default"))) IPluginCreatorInterface* const* getCreators(int32_t& nb_creators) {
  static FFTConvCreator creator;
  static IPluginCreatorInterface* const creators[] = {&creator};
  nb_creators = 1;
  return creators;
}
