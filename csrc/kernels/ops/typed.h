// Typed dispatch for the plain-C++ kernels of math_ops.cc, index_ops.cc and reduce_ops.cc: one
// C++ type per numeric dtype (float16 as Half, computed in float), loads and stores that widen and
// round float16, and the small integer inputs (axes, k, split sizes) read with their checks.
#pragma once

#include <cmath>
#include <cstring>
#include <type_traits>
#include <vector>

#include "kernels/ops/common.h"

namespace mopt {
namespace typed {

template <class T>
struct Tag {
  using type = T;
};

struct Half {  // IEEE binary16, as stored
  uint16_t bits;
};

inline float half_to_float(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1Fu, mant = h & 0x3FFu;
  if (exp == 0) {  // zero or subnormal: exact in float
    const float v = std::ldexp(static_cast<float>(mant), -24);
    return sign ? -v : v;
  }
  const uint32_t bits = exp == 0x1F ? (sign | 0x7F800000u | (mant << 13)) : (sign | ((exp + 112) << 23) | (mant << 13));
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

// Round to nearest, ties to even (numpy's float32 -> float16); NaN stays NaN, overflow gives inf.
inline uint16_t float_to_half(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  const uint16_t sign = static_cast<uint16_t>((x >> 16) & 0x8000u);
  const uint32_t ax = x & 0x7FFFFFFFu;
  if (ax > 0x7F800000u) return sign | 0x7E00u;
  if (ax >= 0x477FF000u) return sign | 0x7C00u;  // >= 65520 rounds to inf (65520 is a tie to even inf)
  if (ax < 0x38800000u) {                        // below 2^-14: a subnormal (or zero) of step 2^-24
    float a;
    std::memcpy(&a, &ax, 4);
    return sign | static_cast<uint16_t>(std::nearbyint(a * 16777216.0f));
  }
  const uint32_t r = ax + 0xFFFu + ((ax >> 13) & 1u) - (112u << 23);
  return sign | static_cast<uint16_t>(r >> 13);
}

struct BF16 {  // bfloat16, as stored: the top half of a float32
  uint16_t bits;
};

inline float bf16_to_float(uint16_t b) {
  const uint32_t bits = static_cast<uint32_t>(b) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

// Round to nearest, ties to even (ml_dtypes' float32 -> bfloat16); NaN stays a quiet NaN.
inline uint16_t float_to_bf16(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  if (std::isnan(f)) return static_cast<uint16_t>(((bits >> 16) & 0x8000u) | 0x7FC0u);
  bits += 0x7FFFu + ((bits >> 16) & 1u);
  return static_cast<uint16_t>(bits >> 16);
}

// The arithmetic type of a stored type: float16 and bfloat16 compute in float, the rest in themselves.
template <class T>
using Arith = std::conditional_t<std::is_same_v<T, Half> || std::is_same_v<T, BF16>, float, T>;

template <class T>
inline Arith<T> load(T v) {
  if constexpr (std::is_same_v<T, Half>) return half_to_float(v.bits);
  else if constexpr (std::is_same_v<T, BF16>) return bf16_to_float(v.bits);
  else return v;
}

template <class T, class V>
inline T store(V v) {
  if constexpr (std::is_same_v<T, Half>) return Half{float_to_half(static_cast<float>(v))};
  else if constexpr (std::is_same_v<T, BF16>) return BF16{float_to_bf16(static_cast<float>(v))};
  else return static_cast<T>(v);
}

template <class T>
constexpr bool is_float_v = std::is_floating_point_v<T> || std::is_same_v<T, Half> || std::is_same_v<T, BF16>;

// fn(Tag<T>{}) for a numeric dtype (float16 as Half, bfloat16 as BF16, bool as bool). `what` names the op in the error.
template <class F>
void dispatch(DType t, const char* what, F&& fn) {
  switch (t) {
    case DType::kF32: return fn(Tag<float>{});
    case DType::kF64: return fn(Tag<double>{});
    case DType::kF16: return fn(Tag<Half>{});
    case DType::kBF16: return fn(Tag<BF16>{});
    case DType::kI8: return fn(Tag<int8_t>{});
    case DType::kI16: return fn(Tag<int16_t>{});
    case DType::kI32: return fn(Tag<int32_t>{});
    case DType::kI64: return fn(Tag<int64_t>{});
    case DType::kU8: return fn(Tag<uint8_t>{});
    case DType::kU16: return fn(Tag<uint16_t>{});
    case DType::kU32: return fn(Tag<uint32_t>{});
    case DType::kU64: return fn(Tag<uint64_t>{});
    case DType::kBool: return fn(Tag<bool>{});
    default: fail(ErrorCode::kUnsupported, what, " has no native kernel for type ", dtype_name(t));
  }
}

// fn(Tag<T>{}) with T an unsigned type of the element size: for ops that only move elements.
struct Bytes16 {
  uint64_t lo, hi;
};
template <class F>
void dispatch_size(size_t es, F&& fn) {
  switch (es) {
    case 1: return fn(Tag<uint8_t>{});
    case 2: return fn(Tag<uint16_t>{});
    case 4: return fn(Tag<uint32_t>{});
    case 8: return fn(Tag<uint64_t>{});
    case 16: return fn(Tag<Bytes16>{});
    default: fail(ErrorCode::kUnsupported, "no native copy for elements of ", es, " bytes");
  }
}

inline std::vector<int64_t> ints_of(const Tensor& t, const char* what) { return read_ints(t, what); }

inline int64_t index_at(const Tensor& t, int64_t i) {
  return t.dtype == DType::kI64 ? t.ptr<int64_t>()[i] : t.ptr<int32_t>()[i];
}

// (outer, dim, inner) around one axis of a shape.
struct AxisSplit {
  int64_t outer = 1, dim = 1, inner = 1;
};
inline AxisSplit split_at(const Shape& s, int64_t axis) {
  AxisSplit a;
  for (int64_t d = 0; d < axis; ++d) a.outer *= s[d];
  a.dim = s[axis];
  for (size_t d = static_cast<size_t>(axis) + 1; d < s.size(); ++d) a.inner *= s[d];
  return a;
}

}  // namespace typed

// The typed kernels of math_ops.cc, for ops whose float32 (or int32/64) kernels live elsewhere: the
// op is read from the node.
std::unique_ptr<Kernel> make_typed_unary(const KernelInit& init);
std::unique_ptr<Kernel> make_typed_binary(const KernelInit& init);
std::unique_ptr<Kernel> make_typed_variadic(const KernelInit& init);
std::unique_ptr<Kernel> make_typed_reduce(const KernelInit& init);  // reduce_ops.cc
std::unique_ptr<Kernel> make_typed_pow(const KernelInit& init);     // misc_ops.cc
std::unique_ptr<Kernel> make_typed_clip(const KernelInit& init);    // misc_ops.cc
std::unique_ptr<Kernel> make_typed_matmul(const KernelInit& init);  // math_ops.cc
std::unique_ptr<Kernel> make_typed_softmax(const KernelInit& init); // math_ops.cc (Softmax, LogSoftmax)

// OLD for inputs of the listed types, NEW for the rest: a registration row that widens an existing
// kernel's types without touching it.
template <KernelFactory OLD, KernelFactory NEW, DType... OLD_TYPES>
std::unique_ptr<Kernel> route_by_dtype(const KernelInit& init) {
  const DType t = init.in_dtypes.empty() ? DType::kUndefined : init.in_dtypes[0];
  return ((t == OLD_TYPES) || ...) ? OLD(init) : NEW(init);
}

}  // namespace mopt
