#include "mopt/tensor.h"

#include <sstream>

#include "mopt/status.h"

namespace mopt {

size_t dtype_size(DType t) {
  switch (t) {
    case DType::kF32: case DType::kI32: case DType::kU32: return 4;
    case DType::kF64: case DType::kI64: case DType::kU64: case DType::kC64: return 8;
    case DType::kC128: return 16;
    case DType::kF16: case DType::kBF16: case DType::kI16: case DType::kU16: return 2;
    case DType::kU8: case DType::kI8: case DType::kBool: case DType::kF8E4M3FN:
    case DType::kF8E4M3FNUZ: case DType::kF8E5M2: case DType::kF8E5M2FNUZ: case DType::kU4:
    case DType::kI4: case DType::kF4E2M1: case DType::kF8E8M0: case DType::kU2: case DType::kI2: return 1;
    case DType::kString: return sizeof(void*);
    case DType::kUndefined: return 0;
  }
  return 0;
}

const char* dtype_name(DType t) {
  switch (t) {
    case DType::kF32: return "float32";
    case DType::kU8: return "uint8";
    case DType::kI8: return "int8";
    case DType::kU16: return "uint16";
    case DType::kI16: return "int16";
    case DType::kI32: return "int32";
    case DType::kI64: return "int64";
    case DType::kString: return "string";
    case DType::kBool: return "bool";
    case DType::kF16: return "float16";
    case DType::kF64: return "float64";
    case DType::kU32: return "uint32";
    case DType::kU64: return "uint64";
    case DType::kC64: return "complex64";
    case DType::kC128: return "complex128";
    case DType::kBF16: return "bfloat16";
    case DType::kF8E4M3FN: return "float8_e4m3fn";
    case DType::kF8E4M3FNUZ: return "float8_e4m3fnuz";
    case DType::kF8E5M2: return "float8_e5m2";
    case DType::kF8E5M2FNUZ: return "float8_e5m2fnuz";
    case DType::kU4: return "uint4";
    case DType::kI4: return "int4";
    case DType::kF4E2M1: return "float4_e2m1fn";
    case DType::kF8E8M0: return "float8_e8m0fnu";
    case DType::kU2: return "uint2";
    case DType::kI2: return "int2";
    case DType::kUndefined: return "undefined";
  }
  return "unknown";
}

bool dtype_known(int32_t code) { return code >= 1 && code <= 26 && code != 8; }

int64_t shape_numel(const Shape& s) {
  int64_t n = 1;
  for (int64_t d : s) n *= d;
  return n;
}

std::string shape_str(const Shape& s) {
  std::ostringstream out;
  out << "[";
  for (size_t i = 0; i < s.size(); ++i) out << (i ? ", " : "") << s[i];
  out << "]";
  return out.str();
}

std::vector<int64_t> contiguous_strides(const Shape& s) {
  std::vector<int64_t> st(s.size(), 1);
  for (int64_t i = static_cast<int64_t>(s.size()) - 2; i >= 0; --i) st[i] = st[i + 1] * s[i + 1];
  return st;
}

int64_t normalize_axis(int64_t axis, int64_t rank, const char* what) {
  int64_t a = axis < 0 ? axis + rank : axis;
  MOPT_ENSURE(a >= 0 && a < rank, what, " ", axis, " is out of range for rank ", rank);
  return a;
}

}  // namespace mopt
