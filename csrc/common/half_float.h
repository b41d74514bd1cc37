// float16 / bfloat16 <-> float32 conversions for the CPU path (round to nearest even).
#pragma once
#include <cstdint>
#include <cstring>

namespace fftconv {

inline float bits_to_float(uint32_t b) { float f; std::memcpy(&f, &b, 4); return f; }
inline uint32_t float_to_bits(float f) { uint32_t b; std::memcpy(&b, &f, 4); return b; }

inline float half_to_float(uint16_t h) {
  const uint32_t sign = uint32_t(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1fu;
  uint32_t mant = h & 0x3ffu;
  if (exp == 0x1f) return bits_to_float(sign | 0x7f800000u | (mant << 13));  // inf / nan
  if (exp != 0) return bits_to_float(sign | ((exp + 112) << 23) | (mant << 13));
  if (mant == 0) return bits_to_float(sign);
  // subnormal: value = mant * 2^-24
  float v = float(mant) * 5.9604644775390625e-08f;
  return sign ? -v : v;
}

inline uint16_t float_to_half(float f) {
  const uint32_t x = float_to_bits(f);
  const uint16_t sign = uint16_t((x >> 16) & 0x8000u);
  const uint32_t ax = x & 0x7fffffffu;
  if (ax >= 0x7f800000u)  // inf or nan (keep nan quiet)
    return uint16_t(sign | 0x7c00u | (ax > 0x7f800000u ? 0x200u | ((ax >> 13) & 0x3ffu) : 0u));
  if (ax >= 0x477ff000u) return uint16_t(sign | 0x7c00u);  // rounds to >= 65520: overflow
  if (ax < 0x38800000u) {
    // result is subnormal or zero: scale so that the half ulp 2^-24 becomes 1.0 and round there
    const float scaled = bits_to_float(ax) * 16777216.0f;  // exact (power-of-two scale)
    // round to nearest even via the float adder: adding 2^23 pushes fractions out
    const float r = (scaled + 8388608.0f) - 8388608.0f;
    return uint16_t(sign | uint16_t(r));
  }
  // normal: rebias exponent, round mantissa to 10 bits (nearest even)
  const uint32_t rounded = ax + 0xfffu + ((ax >> 13) & 1u);
  return uint16_t(sign | uint16_t((rounded - 0x38000000u) >> 13));
}

inline float bf16_to_float(uint16_t b) { return bits_to_float(uint32_t(b) << 16); }

inline uint16_t float_to_bf16(float f) {
  const uint32_t x = float_to_bits(f);
  if ((x & 0x7fffffffu) > 0x7f800000u) return uint16_t((x >> 16) | 0x40u);  // quiet nan
  return uint16_t((x + 0x7fffu + ((x >> 16) & 1u)) >> 16);
}

}  // namespace fftconv
