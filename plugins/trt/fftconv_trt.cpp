// TensorRT plugin library: FFTConv, version "1", namespace "fftconv_rt" (IPluginV3).
//
// A thin adapter over the core C ABI, like the ONNX Runtime library: fields in, the
// same fftconv_resolve validation, the CUDA entry points on TensorRT's stream. The
// filter spectrum is prepared in the workspace at every enqueue (TensorRT hands a
// filter in as an ordinary input), then the forward pass runs. Only getCreators and
// setLoggerFinder are exported; REGISTER_TENSORRT_PLUGIN is not used, so the library
// needs no libnvinfer at load time (trtexec --dynamicPlugins, Polygraphy --plugins).
#include <NvInferRuntime.h>

#include <algorithm>
#include <cstring>
#include <string>
#include <vector>

#include "fftconv_rt/fftconv.h"

using namespace nvinfer1;

namespace {

constexpr char kPluginName[] = "FFTConv";
constexpr char kPluginVersion[] = "1";
constexpr char kPluginNamespace[] = "fftconv_rt";

ILoggerFinder* g_logger_finder = nullptr;

void log_error(std::string const& message) {
  ILogger* logger = g_logger_finder ? g_logger_finder->findLogger() : nullptr;
  if (logger) logger->log(ILogger::Severity::kERROR, ("fftconv_rt::FFTConv plugin: " + message).c_str());
}

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
  int64_t freq_keep = 0;  // frequency-sparse: rfft bins of the filter kept, 0 for all
  std::string layout = "BHL";
  // Which optional op inputs the plugin's inputs 2.. are; -1: from the number of inputs
  // (3: D; 4: D, pregate; 5: D, pregate, postgate).
  int32_t has_D = -1, has_pregate = -1, has_postgate = -1;

  // Op input slot of each plugin input.
  std::vector<int> slots(int32_t nb_inputs) const {
    std::vector<int> s{FFTCONV_INPUT_U, FFTCONV_INPUT_K};
    const bool by_count = has_D < 0 && has_pregate < 0 && has_postgate < 0;
    if (by_count ? nb_inputs >= 3 : has_D > 0) s.push_back(FFTCONV_INPUT_D);
    if (by_count ? nb_inputs >= 4 : has_pregate > 0) s.push_back(FFTCONV_INPUT_PREGATE);
    if (by_count ? nb_inputs >= 5 : has_postgate > 0) s.push_back(FFTCONV_INPUT_POSTGATE);
    return s;
  }
};

// Resolves the call from tensor descriptions (dims d and types of the plugin inputs).
template <typename DimsOf, typename TypeOf>
bool resolve(Attributes const& at, int32_t nb_inputs, DimsOf dims_of, TypeOf type_of, fftconv_params* params) {
  const std::vector<int> slots = at.slots(nb_inputs);
  if (int32_t(slots.size()) != nb_inputs) {
    log_error("got " + std::to_string(nb_inputs) + " inputs; the fields has_D/has_pregate/has_postgate say " +
              std::to_string(slots.size()));
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
  int64_t out_shape[3];
  if (fftconv_resolve_sparse(inputs, at.fft_size, at.layout.c_str(), at.freq_keep, params, out_shape) != FFTCONV_OK) {
    log_error(fftconv_last_error());
    return false;
  }
  return true;
}

// Workspace of one call: the prepared filter, then the kernels' workspace (256-byte aligned).
int64_t aligned(int64_t bytes) { return (bytes + 255) / 256 * 256; }
int64_t call_workspace(fftconv_params const& p) {
  return aligned(fftconv_cuda_filter_bytes(&p)) + aligned(fftconv_cuda_workspace_bytes(&p));
}

class FFTConvPlugin : public IPluginV3, public IPluginV3OneCore, public IPluginV3OneBuild, public IPluginV3OneRuntime {
 public:
  explicit FFTConvPlugin(Attributes attributes) : at_(std::move(attributes)) { describe_fields(); }
  FFTConvPlugin(FFTConvPlugin const& other) : at_(other.at_), nb_inputs_(other.nb_inputs_) { describe_fields(); }

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
    if (slot == FFTCONV_INPUT_K || slot == FFTCONV_INPUT_D) return d.type == u || d.type == DataType::kFLOAT;
    (void)nb_outputs;
    return d.type == u;  // the gates and the output
  }
  int32_t configurePlugin(DynamicPluginTensorDesc const* in, int32_t nb_inputs, DynamicPluginTensorDesc const*,
                          int32_t) noexcept override {
    nb_inputs_ = nb_inputs;
    fftconv_params p{};
    return resolve(at_, nb_inputs, [&](int32_t i) { return in[i].max; }, [&](int32_t i) { return in[i].desc.type; },
                   &p) ? 0 : -1;
  }
  size_t getWorkspaceSize(DynamicPluginTensorDesc const* in, int32_t nb_inputs, DynamicPluginTensorDesc const*,
                          int32_t) const noexcept override {
    fftconv_params p{};
    if (!resolve(at_, nb_inputs, [&](int32_t i) { return in[i].max; }, [&](int32_t i) { return in[i].desc.type; }, &p))
      return 0;
    // The largest lengths need the most, except that short filters switch paths at
    // 2048 taps: take the larger of both.
    int64_t bytes = call_workspace(p);
    const int64_t max_length = p.L;
    p.L = std::min<int64_t>(max_length, 2048);
    bytes = std::max(bytes, call_workspace(p));
    return size_t(bytes);
  }

  // IPluginV3OneRuntime
  int32_t onShapeChange(PluginTensorDesc const* in, int32_t nb_inputs, PluginTensorDesc const*, int32_t) noexcept
      override {
    nb_inputs_ = nb_inputs;
    fftconv_params p{};
    return resolve(at_, nb_inputs, [&](int32_t i) { return in[i].dims; }, [&](int32_t i) { return in[i].type; }, &p)
               ? 0 : -1;
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
    p.y = outputs[0];
    p.stream = stream;
    if (p.B == 0 || p.H == 0 || p.L == 0) return 0;
    char* spectrum = static_cast<char*>(workspace);
    char* scratch = spectrum + aligned(fftconv_cuda_filter_bytes(&p));
    const int64_t scratch_bytes = fftconv_cuda_workspace_bytes(&p);
    if (fftconv_cuda_prepare_filter(&p, spectrum, scratch, scratch_bytes) != FFTCONV_OK ||
        fftconv_cuda_forward(&p, spectrum, scratch, scratch_bytes) != FFTCONV_OK) {
      log_error(fftconv_last_error());
      return -1;
    }
    return 0;
  }
  IPluginV3* attachToContext(IPluginResourceContext*) noexcept override { return clone(); }
  PluginFieldCollection const* getFieldsToSerialize() noexcept override { return &collection_; }

 private:
  void describe_fields() {
    fields_ = {PluginField("fft_size", &at_.fft_size, PluginFieldType::kINT64, 1),
               PluginField("freq_keep", &at_.freq_keep, PluginFieldType::kINT64, 1),
               PluginField("layout", at_.layout.c_str(), PluginFieldType::kCHAR, int32_t(at_.layout.size())),
               PluginField("has_D", &at_.has_D, PluginFieldType::kINT32, 1),
               PluginField("has_pregate", &at_.has_pregate, PluginFieldType::kINT32, 1),
               PluginField("has_postgate", &at_.has_postgate, PluginFieldType::kINT32, 1)};
    collection_.nbFields = int32_t(fields_.size());
    collection_.fields = fields_.data();
  }

  Attributes at_;
  int32_t nb_inputs_ = 5;
  std::vector<PluginField> fields_;
  PluginFieldCollection collection_{};
};

class FFTConvCreator : public IPluginCreatorV3One {
 public:
  FFTConvCreator() {
    names_ = {PluginField("fft_size", nullptr, PluginFieldType::kINT64, 1),
              PluginField("freq_keep", nullptr, PluginFieldType::kINT64, 1),
              PluginField("layout", nullptr, PluginFieldType::kCHAR, 3),
              PluginField("has_D", nullptr, PluginFieldType::kINT32, 1),
              PluginField("has_pregate", nullptr, PluginFieldType::kINT32, 1),
              PluginField("has_postgate", nullptr, PluginFieldType::kINT32, 1)};
    collection_.nbFields = int32_t(names_.size());
    collection_.fields = names_.data();
  }

  IPluginV3* createPlugin(AsciiChar const*, PluginFieldCollection const* fc, TensorRTPhase) noexcept override {
    Attributes at;
    for (int32_t i = 0; fc && i < fc->nbFields; ++i) {
      PluginField const& f = fc->fields[i];
      const std::string name = f.name ? f.name : "";
      if (!f.data || f.length < 1) continue;
      if (name == "fft_size" || name == "freq_keep") {
        int64_t& value = name == "fft_size" ? at.fft_size : at.freq_keep;
        if (f.type == PluginFieldType::kINT64) value = *static_cast<int64_t const*>(f.data);
        else if (f.type == PluginFieldType::kINT32) value = *static_cast<int32_t const*>(f.data);
        else return refuse("field '" + name + "' must be an integer (INT32 or INT64)");
      } else if (name == "layout") {
        if (f.type != PluginFieldType::kCHAR) return refuse("field 'layout' must be a string (CHAR)");
        at.layout.assign(static_cast<char const*>(f.data), strnlen(static_cast<char const*>(f.data), size_t(f.length)));
      } else if (name == "has_D" || name == "has_pregate" || name == "has_postgate") {
        if (f.type != PluginFieldType::kINT32) return refuse("field '" + name + "' must be INT32 (0, 1, or -1: by count)");
        int32_t& flag = name == "has_D" ? at.has_D : name == "has_pregate" ? at.has_pregate : at.has_postgate;
        const int32_t value = *static_cast<int32_t const*>(f.data);
        flag = value < 0 ? -1 : value != 0;
      }  // other fields (plugin_version, plugin_namespace from the ONNX parser) are not the plugin's
    }
    if (at.layout != "BHL" && at.layout != "BLH") return refuse("field 'layout' must be \"BHL\" or \"BLH\", got \"" +
                                                               at.layout + "\"");
    if (at.fft_size < 0) return refuse("field 'fft_size' must be >= 0, got " + std::to_string(at.fft_size));
    if (at.freq_keep < 0) return refuse("field 'freq_keep' must be >= 0, got " + std::to_string(at.freq_keep));
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
