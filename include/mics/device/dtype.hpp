#pragma once
// Element types the device backends compute in. The model picks its compute type at run
// time (f64 for the gradient check, f32 or bf16 on CPU, bf16 on GPUs), so every kernel call
// carries a DType instead of being a template: one Backend object serves all of them.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <ostream>
#include <string>

namespace mics::device {

enum class DType : std::uint8_t {
  f32 = 0,   // IEEE binary32
  f64 = 1,   // IEEE binary64 (CPU only; used by the reference tests and gradient check)
  bf16 = 2,  // bfloat16, stored as the upper 16 bits of a binary32
};

inline std::size_t dtype_size(DType t) {
  switch (t) {
    case DType::f32: return 4;
    case DType::f64: return 8;
    case DType::bf16: return 2;
  }
  return 0;
}

inline const char* dtype_name(DType t) {
  switch (t) {
    case DType::f32: return "f32";
    case DType::f64: return "f64";
    case DType::bf16: return "bf16";
  }
  return "?";
}

inline std::ostream& operator<<(std::ostream& os, DType t) { return os << dtype_name(t); }

// Parses "f32" / "fp32" / "float32", "f64" / "fp64" / "float64", "bf16" / "bfloat16".
// Throws mics::UsageError naming the value otherwise (defined in lib/device).
DType parse_dtype(const std::string& s);

// The type that reductions, statistics and per-row losses are kept in when computing in
// `t`: bf16 accumulates in f32 (and its LayerNorm statistics and losses are f32); f32 and
// f64 accumulate in themselves at the interface level (a backend may use more inside).
inline DType accum_dtype(DType t) { return t == DType::f64 ? DType::f64 : DType::f32; }

// Host-side bfloat16 value, for tests and host-side casts. Conversion rounds to nearest
// even, and keeps NaN a NaN.
struct bf16_t {
  std::uint16_t bits = 0;
};

inline bf16_t float_to_bf16(float f) {
  std::uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7f800000u) == 0x7f800000u && (u & 0x007fffffu) != 0)
    return bf16_t{static_cast<std::uint16_t>((u >> 16) | 0x0040u)};
  const std::uint32_t rounding = 0x7fffu + ((u >> 16) & 1u);
  return bf16_t{static_cast<std::uint16_t>((u + rounding) >> 16)};
}

inline float bf16_to_float(bf16_t b) {
  const std::uint32_t u = static_cast<std::uint32_t>(b.bits) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

}  // namespace mics::device
