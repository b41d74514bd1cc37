// Shape and type validation of the op contract, shared by every adapter so
// that each framework reports the same errors.
#include <algorithm>
#include <sstream>
#include <string>

#include "error.h"
#include "geometry.h"
#include "fftconv_rt/fftconv.h"

namespace fftconv {

namespace {

thread_local std::string last_error_message;


const char* const kInputNames[FFTCONV_NUM_INPUTS] = {"u", "k", "D", "pregate", "postgate", "k_rev"};

// Largest fft_size / transform the kernels accept.
constexpr int64_t kMaxFftSize = int64_t(1) << 30;

bool is_float_type(int32_t t) {
  return t == FFTCONV_FLOAT32 || t == FFTCONV_FLOAT16 || t == FFTCONV_BFLOAT16;
}

std::string type_name(int32_t t) {
  switch (t) {
    case FFTCONV_FLOAT32: return "float32";
    case FFTCONV_FLOAT16: return "float16";
    case FFTCONV_BFLOAT16: return "bfloat16";
    case 11: return "float64";
    case 2: return "uint8";
    case 3: return "int8";
    case 6: return "int32";
    case 7: return "int64";
    case 9: return "bool";
    default: return "ONNX type " + std::to_string(t);
  }
}

std::string shape_str(const fftconv_tensor_desc& d) {
  std::ostringstream s;
  s << "(";
  for (int i = 0; i < d.rank; ++i) s << (i ? ", " : "") << d.dims[i];
  if (d.rank == 1) s << ",";
  s << ")";
  return s.str();
}

void require_shape(const fftconv_tensor_desc& d, int slot, int rank, const int64_t* want,
                   const std::string& expected) {
  bool ok = d.rank == rank;
  for (int i = 0; ok && i < rank; ++i) ok = d.dims[i] == want[i];
  if (!ok)
    fail(FFTCONV_ERR_INVALID_ARGUMENT, std::string("input '") + kInputNames[slot] +
                                           "' must have shape " + expected + ", got " +
                                           shape_str(d));
}

}  // namespace

void set_last_error(const std::string& message) { last_error_message = message; }

void check_aligned(const void* ptr, const char* name, int64_t element_bytes) {
  if (ptr && reinterpret_cast<uintptr_t>(ptr) % uintptr_t(element_bytes) != 0)
    fail(FFTCONV_ERR_INVALID_ARGUMENT, std::string("'") + name + "' is not aligned to its element size (" +
                                           std::to_string(element_bytes) + " bytes)");
}

void check_pointer_alignment(const fftconv_params& p) {
  check_aligned(p.u, "u", element_bytes(p.dtype));
  check_aligned(p.pregate, "pregate", element_bytes(p.dtype));
  check_aligned(p.postgate, "postgate", element_bytes(p.dtype));
  check_aligned(p.y, "y", element_bytes(p.dtype));
  check_aligned(p.k, "k", element_bytes(p.k_dtype));
  check_aligned(p.D, "D", element_bytes(p.D_dtype));
  check_aligned(p.k_rev, "k_rev", element_bytes(p.k_rev_dtype));
}

void check_params(const fftconv_params* p) {
  if (!p) fail(FFTCONV_ERR_INVALID_ARGUMENT, "null params");
  if (p->B < 0 || p->H < 0 || p->L < 0 || p->Lk < 1)
    fail(FFTCONV_ERR_INVALID_ARGUMENT, "sizes must satisfy B, H, L >= 0 and Lk >= 1");
  if (p->Lk_rev < 0) fail(FFTCONV_ERR_INVALID_ARGUMENT, "Lk_rev must be >= 0 (0: no k_rev)");
  if (p->truncate_filter && p->fft_size == 0 && p->L > 0)
    fail(FFTCONV_ERR_INVALID_ARGUMENT, "truncate_filter needs the period in fft_size (fftconv_resolve sets both)");
  const int64_t filter_span = p->truncate_filter ? 0 : std::max(p->Lk, p->Lk_rev);
  if (p->fft_size < 0 || p->fft_size > kMaxFftSize ||
      (p->fft_size > 0 && (p->fft_size < p->L || p->fft_size < filter_span)))
    fail(FFTCONV_ERR_INVALID_ARGUMENT, "fft_size must be 0 or in [max(L, Lk, Lk_rev), 2^30]");
  for (int32_t t : {p->dtype, p->k_dtype, p->D_dtype})
    if (t != FFTCONV_FLOAT32 && t != FFTCONV_FLOAT16 && t != FFTCONV_BFLOAT16)
      fail(FFTCONV_ERR_INVALID_ARGUMENT, "element type must be float32, float16 or bfloat16");
  if (p->Lk_rev > 0 && p->k_rev_dtype != FFTCONV_FLOAT32 && p->k_rev_dtype != FFTCONV_FLOAT16 &&
      p->k_rev_dtype != FFTCONV_BFLOAT16)
    fail(FFTCONV_ERR_INVALID_ARGUMENT, "element type of k_rev must be float32, float16 or bfloat16");
  if (p->layout != FFTCONV_LAYOUT_BHL && p->layout != FFTCONV_LAYOUT_BLH)
    fail(FFTCONV_ERR_INVALID_ARGUMENT, "layout must be BHL or BLH");
  if (p->freq_keep < 0 || (p->freq_keep > 0 && (p->fft_size == 0 || !is_pow2(p->fft_size))))
    fail(FFTCONV_ERR_INVALID_ARGUMENT, "freq_keep > 0 needs fft_size set to its power-of-two period "
                                       "(fftconv_resolve sets both)");
}


}  // namespace fftconv

using namespace fftconv;

extern "C" {

const char* fftconv_last_error(void) { return fftconv::last_error_message.c_str(); }

int32_t fftconv_abi_version(void) { return FFTCONV_ABI_VERSION; }

fftconv_status fftconv_resolve(const fftconv_tensor_desc* inputs, int32_t num_inputs,
                               const fftconv_attributes* attributes, fftconv_params* out, int64_t out_shape[3]) {
  return guarded_call([&] {
    if (!inputs || !out || !out_shape) fail(FFTCONV_ERR_INVALID_ARGUMENT, "null argument");
    if (num_inputs < 1 || num_inputs > FFTCONV_NUM_INPUTS)
      fail(FFTCONV_ERR_INVALID_ARGUMENT, "the node has " + std::to_string(num_inputs) + " inputs; expected 1 to " +
                                             std::to_string(FFTCONV_NUM_INPUTS) +
                                             " (u, k, D, pregate, postgate, k_rev)");
    // the inputs past num_inputs are absent
    fftconv_tensor_desc given[FFTCONV_NUM_INPUTS] = {};
    std::copy(inputs, inputs + num_inputs, given);
    const fftconv_attributes attrs = attributes ? *attributes : fftconv_attributes{};
    int64_t fft_size = attrs.fft_size;

    const std::string lay = attrs.layout ? attrs.layout : "BHL";
    if (lay != "BHL" && lay != "BLH")
      fail(FFTCONV_ERR_INVALID_ARGUMENT,
           "attribute 'layout' must be \"BHL\" or \"BLH\", got \"" + lay + "\"");
    const bool blh = lay == "BLH";
    const std::string u_expected = blh ? "(B, L, H)" : "(B, H, L)";

    const fftconv_tensor_desc& u = given[FFTCONV_INPUT_U];
    if (!u.present) fail(FFTCONV_ERR_INVALID_ARGUMENT, "input 'u' is required");
    if (!is_float_type(u.dtype))
      fail(FFTCONV_ERR_INVALID_ARGUMENT, "input 'u' has element type " + type_name(u.dtype) +
                                             "; expected float32, float16 or bfloat16");
    if (u.rank != 3)
      fail(FFTCONV_ERR_INVALID_ARGUMENT, "input 'u' must be rank 3 " + u_expected + ", got rank " +
                                             std::to_string(u.rank) + " " + shape_str(u));
    for (int i = 0; i < 3; ++i)
      if (u.dims[i] < 0) fail(FFTCONV_ERR_INVALID_ARGUMENT, "input 'u' has a negative dimension");
    const int64_t B = u.dims[0], H = blh ? u.dims[2] : u.dims[1], L = blh ? u.dims[1] : u.dims[2];

    // k and k_rev: (H, taps) filters of float32 or u's type
    auto filter_length = [&](int slot, const char* taps_name) {
      const fftconv_tensor_desc& f = given[slot];
      const std::string name = kInputNames[slot];
      if (f.dtype != FFTCONV_FLOAT32 && f.dtype != u.dtype)
        fail(FFTCONV_ERR_INVALID_ARGUMENT, "input '" + name + "' has element type " + type_name(f.dtype) +
                                               "; expected float32 or the type of 'u' (" + type_name(u.dtype) + ")");
      if (f.rank != 2 || f.dims[0] != H)
        fail(FFTCONV_ERR_INVALID_ARGUMENT, "input '" + name + "' must have shape (H, " + taps_name + ") with H = " +
                                               std::to_string(H) + " from 'u' " + u_expected + ", got " +
                                               shape_str(f));
      if (f.dims[1] < 1)
        fail(FFTCONV_ERR_INVALID_ARGUMENT, "input '" + name + "' must have at least one tap (" + taps_name +
                                               " >= 1), got " + shape_str(f));
      return f.dims[1];
    };
    const fftconv_tensor_desc& k = given[FFTCONV_INPUT_K];
    if (!k.present) fail(FFTCONV_ERR_INVALID_ARGUMENT, "input 'k' is required");
    const int64_t Lk = filter_length(FFTCONV_INPUT_K, "Lk");
    const fftconv_tensor_desc& k_rev = given[FFTCONV_INPUT_K_REV];
    const int64_t Lk_rev = k_rev.present ? filter_length(FFTCONV_INPUT_K_REV, "Lk_rev") : 0;
    const int64_t taps = std::max(Lk, Lk_rev);

    const fftconv_tensor_desc& D = given[FFTCONV_INPUT_D];
    if (D.present) {
      if (D.dtype != FFTCONV_FLOAT32 && D.dtype != u.dtype)
        fail(FFTCONV_ERR_INVALID_ARGUMENT, "input 'D' has element type " + type_name(D.dtype) +
                                               "; expected float32 or the type of 'u' (" +
                                               type_name(u.dtype) + ")");
      const int64_t want[1] = {H};
      require_shape(D, FFTCONV_INPUT_D, 1, want, "(H,) = (" + std::to_string(H) + ",)");
    }
    for (int slot : {FFTCONV_INPUT_PREGATE, FFTCONV_INPUT_POSTGATE}) {
      const fftconv_tensor_desc& g = given[slot];
      if (!g.present) continue;
      if (g.dtype != u.dtype)
        fail(FFTCONV_ERR_INVALID_ARGUMENT, std::string("input '") + kInputNames[slot] +
                                               "' has element type " + type_name(g.dtype) +
                                               "; expected the type of 'u' (" +
                                               type_name(u.dtype) + ")");
      require_shape(g, slot, 3, u.dims, "equal to u's " + shape_str(u));
    }

    if (attrs.max_length < 0)
      fail(FFTCONV_ERR_INVALID_ARGUMENT, "attribute 'max_length' must be >= 0 (0: any length), got " +
                                             std::to_string(attrs.max_length));
    if (attrs.max_length > 0 && L > attrs.max_length)
      fail(FFTCONV_ERR_INVALID_ARGUMENT, "sequence length L = " + std::to_string(L) +
                                             " exceeds the attribute 'max_length' = " +
                                             std::to_string(attrs.max_length) +
                                             " the model was exported for; re-export with a larger max_length");
    if (attrs.period_scale < 0)
      fail(FFTCONV_ERR_INVALID_ARGUMENT, "attribute 'period_scale' must be >= 0 (0: off; s > 0: period n = s * L), "
                                         "got " + std::to_string(attrs.period_scale));
    if (fft_size < 0 || fft_size > kMaxFftSize)
      fail(FFTCONV_ERR_INVALID_ARGUMENT,
           "attribute 'fft_size' must be 0 (automatic) or in [max(L, Lk, Lk_rev), 2^30], got " +
               std::to_string(fft_size));
    const bool truncate = attrs.period_scale > 0;
    if (truncate) {
      if (fft_size > 0)
        fail(FFTCONV_ERR_INVALID_ARGUMENT, "attributes 'period_scale' = " + std::to_string(attrs.period_scale) +
                                               " and 'fft_size' = " + std::to_string(fft_size) +
                                               " both set the period; give one of them (the other 0)");
      if (L > 0 && attrs.period_scale > kMaxFftSize / L)
        fail(FFTCONV_ERR_UNSUPPORTED, "attribute 'period_scale' = " + std::to_string(attrs.period_scale) +
                                          " at L = " + std::to_string(L) +
                                          " gives a period n = period_scale * L larger than 2^30");
      fft_size = attrs.period_scale * L;  // L = 0: an empty output, whatever the period
    } else if (fft_size > 0) {
      if (fft_size < L)
        fail(FFTCONV_ERR_INVALID_ARGUMENT, "attribute 'fft_size' = " + std::to_string(fft_size) +
                                               " is smaller than the sequence length L = " +
                                               std::to_string(L) + "; expected fft_size >= L");
      if (Lk > fft_size)
        fail(FFTCONV_ERR_INVALID_ARGUMENT, "filter length Lk = " + std::to_string(Lk) +
                                               " exceeds attribute 'fft_size' = " +
                                               std::to_string(fft_size) + "; expected Lk <= fft_size");
      if (Lk_rev > fft_size)
        fail(FFTCONV_ERR_INVALID_ARGUMENT, "reversed filter length Lk_rev = " + std::to_string(Lk_rev) +
                                               " exceeds attribute 'fft_size' = " +
                                               std::to_string(fft_size) + "; expected Lk_rev <= fft_size");
    }
    if (L + std::min(L, taps) > kMaxFftSize || (fft_size > 0 && L + taps > 2 * kMaxFftSize))
      fail(FFTCONV_ERR_UNSUPPORTED, "sequence length L = " + std::to_string(L) +
                                        " with Lk = " + std::to_string(taps) +
                                        " needs a transform larger than 2^30");

    // frequency-sparse: the mask is defined at the period n, which the kernels transform at
    out->freq_keep = 0;
    if (attrs.freq_keep < 0)
      fail(FFTCONV_ERR_INVALID_ARGUMENT, "attribute 'freq_keep' must be >= 0 (0 keeps every bin), got " +
                                             std::to_string(attrs.freq_keep));
    const int64_t period = fft_size > 0 ? fft_size : 2 * L;
    if (attrs.freq_keep > 0 && L > 0 && attrs.freq_keep < period / 2 + 1) {
      if (!is_pow2(period))
        fail(FFTCONV_ERR_INVALID_ARGUMENT,
             "attribute 'freq_keep' needs a power-of-two period n (fft_size, period_scale * L, or 2L when both are "
             "0), got n = " + std::to_string(period));
      if (!truncate && taps > period)
        fail(FFTCONV_ERR_INVALID_ARGUMENT, "attribute 'freq_keep' with a filter of " + std::to_string(taps) +
                                               " taps, longer than the period n = 2L = " + std::to_string(period) +
                                               "; give fft_size >= Lk");
      out->freq_keep = attrs.freq_keep;
      fft_size = period;
    }
    out->B = B;
    out->H = H;
    out->L = L;
    out->Lk = Lk;
    out->fft_size = fft_size;
    out->dtype = u.dtype;
    out->k_dtype = k.dtype;
    out->D_dtype = D.present ? D.dtype : u.dtype;
    out->layout = blh ? FFTCONV_LAYOUT_BLH : FFTCONV_LAYOUT_BHL;
    out->Lk_rev = Lk_rev;
    out->k_rev_dtype = k_rev.present ? k_rev.dtype : k.dtype;
    out->truncate_filter = truncate ? 1 : 0;
    for (int i = 0; i < 3; ++i) out_shape[i] = u.dims[i];
  });
}

}  // extern "C"
