// Unit test of the TensorRT plugin's build-time side, run without TensorRT's library:
// the creator, fields and their serialization, output types, format combinations,
// validation through the core (errors reach TensorRT's logger) and the workspace size.
// Exit status 0 when every check passes; each failure is printed.
#include <NvInferRuntime.h>

#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

using namespace nvinfer1;

extern "C" IPluginCreatorInterface* const* getCreators(int32_t& nb_creators);
extern "C" void setLoggerFinder(ILoggerFinder* finder);

namespace {

int failures = 0;
void check(bool ok, char const* what) {
  if (!ok) {
    std::printf("FAIL: %s\n", what);
    ++failures;
  }
}

struct RecordingLogger : ILogger {
  std::string last;
  void log(Severity, AsciiChar const* msg) noexcept override { last = msg; }
};
struct Finder : ILoggerFinder {
  RecordingLogger logger;
  ILogger* findLogger() noexcept override { return &logger; }
};

DynamicPluginTensorDesc tensor(DataType type, std::vector<int64_t> dims, TensorFormat format = TensorFormat::kLINEAR) {
  DynamicPluginTensorDesc d{};
  d.desc.type = type;
  d.desc.format = format;
  d.desc.dims.nbDims = int32_t(dims.size());
  for (size_t i = 0; i < dims.size(); ++i) d.desc.dims.d[i] = dims[i];
  d.min = d.max = d.opt = d.desc.dims;
  return d;
}

int64_t field_int(PluginFieldCollection const* fc, char const* name) {
  for (int32_t i = 0; i < fc->nbFields; ++i)
    if (std::strcmp(fc->fields[i].name, name) == 0)
      return fc->fields[i].type == PluginFieldType::kINT64 ? *static_cast<int64_t const*>(fc->fields[i].data)
                                                           : *static_cast<int32_t const*>(fc->fields[i].data);
  return -999;
}

std::string field_string(PluginFieldCollection const* fc, char const* name) {
  for (int32_t i = 0; i < fc->nbFields; ++i)
    if (std::strcmp(fc->fields[i].name, name) == 0)
      return std::string(static_cast<char const*>(fc->fields[i].data), size_t(fc->fields[i].length));
  return "";
}

}  // namespace

int main() {
  Finder finder;
  setLoggerFinder(&finder);
  int32_t count = 0;
  IPluginCreatorInterface* const* creators = getCreators(count);
  check(count == 1, "one creator");
  auto* creator = static_cast<IPluginCreatorV3One*>(creators[0]);
  check(std::strcmp(creator->getPluginName(), "FFTConv") == 0, "plugin name FFTConv");
  check(std::strcmp(creator->getPluginVersion(), "1") == 0, "plugin version 1");
  check(std::strcmp(creator->getPluginNamespace(), "fftconv_rt") == 0, "plugin namespace fftconv_rt");
  check(creator->getFieldNames()->nbFields == 10, "ten fields");

  // As the ONNX parser passes them: integers as INT32, strings as CHAR without a terminator.
  int32_t fft_size = 0, has_D = 1, freq_keep = 2048, max_length = 16384, constant_filter = 1;
  char const layout[] = {'B', 'L', 'H'};
  std::vector<PluginField> fields{PluginField("fft_size", &fft_size, PluginFieldType::kINT32, 1),
                                  PluginField("freq_keep", &freq_keep, PluginFieldType::kINT32, 1),
                                  PluginField("max_length", &max_length, PluginFieldType::kINT32, 1),
                                  PluginField("layout", layout, PluginFieldType::kCHAR, 3),
                                  PluginField("has_D", &has_D, PluginFieldType::kINT32, 1),
                                  PluginField("constant_filter", &constant_filter, PluginFieldType::kINT32, 1)};
  PluginFieldCollection fc{int32_t(fields.size()), fields.data()};
  std::unique_ptr<IPluginV3> plugin(creator->createPlugin("conv", &fc, TensorRTPhase::kBUILD));
  check(plugin != nullptr, "plugin created");
  if (!plugin) return 1;
  auto* core = static_cast<IPluginV3OneCore*>(plugin->getCapabilityInterface(PluginCapabilityType::kCORE));
  auto* build = static_cast<IPluginV3OneBuild*>(plugin->getCapabilityInterface(PluginCapabilityType::kBUILD));
  auto* runtime = static_cast<IPluginV3OneRuntime*>(plugin->getCapabilityInterface(PluginCapabilityType::kRUNTIME));
  check(std::strcmp(core->getPluginName(), "FFTConv") == 0, "core capability");
  check(build->getNbOutputs() == 1, "one output");
  DataType in_types[3] = {DataType::kHALF, DataType::kFLOAT, DataType::kFLOAT}, out_type{};
  check(build->getOutputDataTypes(&out_type, 1, in_types, 3) == 0 && out_type == DataType::kHALF, "y has u's type");

  // (B, L, H) = (2, 8192, 16) fp16, k (16, 8192) fp32, D (16,) fp32
  std::vector<DynamicPluginTensorDesc> io{tensor(DataType::kHALF, {2, 8192, 16}), tensor(DataType::kFLOAT, {16, 8192}),
                                          tensor(DataType::kFLOAT, {16}), tensor(DataType::kHALF, {2, 8192, 16})};
  for (int32_t pos = 0; pos < 4; ++pos) check(build->supportsFormatCombination(pos, io.data(), 3, 1), "valid types");
  io[3] = tensor(DataType::kFLOAT, {2, 8192, 16});
  check(!build->supportsFormatCombination(3, io.data(), 3, 1), "y must have u's type");
  io[3] = tensor(DataType::kHALF, {2, 8192, 16}, TensorFormat::kHWC8);
  check(!build->supportsFormatCombination(3, io.data(), 3, 1), "linear format only");
  io[3] = tensor(DataType::kHALF, {2, 8192, 16});
  io[0] = tensor(DataType::kINT32, {2, 8192, 16});
  check(!build->supportsFormatCombination(0, io.data(), 3, 1), "integer u refused");
  io[0] = tensor(DataType::kHALF, {2, 8192, 16});

  check(build->configurePlugin(io.data(), 3, io.data() + 3, 1) == 0, "valid shapes configure");
  check(build->getWorkspaceSize(io.data(), 3, io.data() + 3, 1) > 0, "workspace for the filter spectrum");
  io[1] = tensor(DataType::kFLOAT, {15, 8192});
  check(build->configurePlugin(io.data(), 3, io.data() + 3, 1) != 0, "mismatched channels refused");
  check(finder.logger.last.find("'k'") != std::string::npos, "the refusal names the filter input");
  io[1] = tensor(DataType::kFLOAT, {16, 8192});
  // a profile reaching past max_length is refused at build time
  std::vector<DynamicPluginTensorDesc> longer = io;
  longer[0].max.d[1] = longer[3].max.d[1] = 16385;
  check(build->configurePlugin(longer.data(), 3, longer.data() + 3, 1) != 0, "profile past max_length refused");
  check(finder.logger.last.find("max_length") != std::string::npos, "the refusal names max_length");

  // serialization: the fields rebuild an identical plugin
  PluginFieldCollection const* saved = runtime->getFieldsToSerialize();
  check(field_int(saved, "fft_size") == 0 && field_string(saved, "layout") == "BLH" && field_int(saved, "has_D") == 1 &&
            field_int(saved, "freq_keep") == 2048 && field_int(saved, "max_length") == 16384 &&
            field_int(saved, "period_scale") == 0 && field_int(saved, "has_k_rev") == -1 &&
            field_int(saved, "constant_filter") == 1,
        "serialized fields");
  std::unique_ptr<IPluginV3> rebuilt(creator->createPlugin("conv", saved, TensorRTPhase::kRUNTIME));
  check(rebuilt != nullptr, "rebuilt from its fields");
  if (rebuilt) {
    auto* again = static_cast<IPluginV3OneRuntime*>(rebuilt->getCapabilityInterface(PluginCapabilityType::kRUNTIME));
    PluginFieldCollection const* fc2 = again->getFieldsToSerialize();
    check(field_string(fc2, "layout") == "BLH" && field_int(fc2, "has_D") == 1 && field_int(fc2, "has_pregate") == -1 &&
              field_int(fc2, "freq_keep") == 2048 && field_int(fc2, "max_length") == 16384 &&
              field_int(fc2, "constant_filter") == 1,
          "identical fields after a round trip");
  }
  std::unique_ptr<IPluginV3> attached(runtime->attachToContext(nullptr));
  check(attached != nullptr && attached.get() != plugin.get(), "attachToContext gives its own clone");

  char const bad_layout[] = {'H', 'L', 'B'};
  PluginField bad("layout", bad_layout, PluginFieldType::kCHAR, 3);
  PluginFieldCollection bad_fc{1, &bad};
  check(creator->createPlugin("conv", &bad_fc, TensorRTPhase::kBUILD) == nullptr, "bad layout refused");
  check(finder.logger.last.find("layout") != std::string::npos, "the refusal names the layout");

  int64_t period_scale = 2, fixed_size = 4096;
  PluginField both[] = {PluginField("period_scale", &period_scale, PluginFieldType::kINT64, 1),
                        PluginField("fft_size", &fixed_size, PluginFieldType::kINT64, 1)};
  PluginFieldCollection both_fc{2, both};
  check(creator->createPlugin("conv", &both_fc, TensorRTPhase::kBUILD) == nullptr,
        "period_scale with fft_size refused");
  check(finder.logger.last.find("period_scale") != std::string::npos, "the refusal names period_scale");
  int32_t negative = -3;
  PluginField negative_field("max_length", &negative, PluginFieldType::kINT32, 1);
  PluginFieldCollection negative_fc{1, &negative_field};
  check(creator->createPlugin("conv", &negative_fc, TensorRTPhase::kBUILD) == nullptr, "negative max_length refused");

  // k_rev by count: the sixth input; its filter type is checked like k's
  PluginField scale_field("period_scale", &period_scale, PluginFieldType::kINT64, 1);
  PluginFieldCollection scale_fc{1, &scale_field};
  std::unique_ptr<IPluginV3> two_sided(creator->createPlugin("conv", &scale_fc, TensorRTPhase::kBUILD));
  check(two_sided != nullptr, "period_scale plugin created");
  if (two_sided) {
    auto* b = static_cast<IPluginV3OneBuild*>(two_sided->getCapabilityInterface(PluginCapabilityType::kBUILD));
    // u, k, D, pregate, postgate, k_rev, then y
    const std::vector<int64_t> u_shape{2, 16, 1024};
    std::vector<DynamicPluginTensorDesc> six{
        tensor(DataType::kHALF, u_shape),  tensor(DataType::kFLOAT, {16, 512}), tensor(DataType::kFLOAT, {16}),
        tensor(DataType::kHALF, u_shape),  tensor(DataType::kHALF, u_shape),    tensor(DataType::kFLOAT, {16, 300}),
        tensor(DataType::kHALF, u_shape)};
    six[0].min.d[2] = six[3].min.d[2] = six[4].min.d[2] = six[6].min.d[2] = 128;
    for (int32_t pos = 0; pos < 7; ++pos) check(b->supportsFormatCombination(pos, six.data(), 6, 1), "k_rev types");
    check(b->configurePlugin(six.data(), 6, six.data() + 6, 1) == 0, "six inputs configure (k_rev by count)");
    check(b->getWorkspaceSize(six.data(), 6, six.data() + 6, 1) > 0, "workspace with k_rev");
    six[5] = tensor(DataType::kFLOAT, {8, 300});
    check(b->configurePlugin(six.data(), 6, six.data() + 6, 1) != 0, "k_rev with other channels refused");
    check(finder.logger.last.find("k_rev") != std::string::npos, "the refusal names k_rev");
  }

  std::printf("%s (%d failures)\n", failures ? "FAILED" : "PASSED", failures);
  return failures ? 1 : 0;
}
