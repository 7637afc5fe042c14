// Tensors, dtypes and shapes shared by the runtime and every kernel.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace mopt {

// Element types; the numbers are ONNX TensorProto.DataType codes so the two never disagree.
enum class DType : int32_t {
  kUndefined = 0,
  kF32 = 1,
  kU8 = 2,
  kI8 = 3,
  kU16 = 4,
  kI16 = 5,
  kI32 = 6,
  kI64 = 7,
  kString = 8,
  kBool = 9,
  kF16 = 10,
  kF64 = 11,
  kU32 = 12,
  kU64 = 13,
  kC64 = 14,
  kC128 = 15,
  kBF16 = 16,
  kF8E4M3FN = 17,
  kF8E4M3FNUZ = 18,
  kF8E5M2 = 19,
  kF8E5M2FNUZ = 20,
  kU4 = 21,
  kI4 = 22,
  kF4E2M1 = 23,
  kF8E8M0 = 24,
  kU2 = 25,
  kI2 = 26,
};

size_t dtype_size(DType t);         // bytes per element (sub-byte types: 1, stored unpacked)
const char* dtype_name(DType t);    // numpy-style name: "float32", "int64", ...
bool dtype_known(int32_t code);     // a code this runtime can hold

using Shape = std::vector<int64_t>;

int64_t shape_numel(const Shape& s);
std::string shape_str(const Shape& s);  // "[1, 3, 224, 224]"

// A dense, row-major view. Ownership lives elsewhere (arena, weight blob, caller's array).
struct Tensor {
  DType dtype = DType::kUndefined;
  Shape shape;
  void* data = nullptr;

  int64_t numel() const { return shape_numel(shape); }
  size_t nbytes() const { return static_cast<size_t>(numel()) * dtype_size(dtype); }
  int64_t rank() const { return static_cast<int64_t>(shape.size()); }
  int64_t dim(int64_t i) const { return shape[static_cast<size_t>(i < 0 ? i + rank() : i)]; }
  template <class T>
  T* ptr() { return static_cast<T*>(data); }
  template <class T>
  const T* ptr() const { return static_cast<const T*>(data); }
};

// Strides (in elements) of a contiguous tensor of this shape.
std::vector<int64_t> contiguous_strides(const Shape& s);

// Normalizes a possibly negative axis against rank; throws kRuntime naming `what` when out of range.
int64_t normalize_axis(int64_t axis, int64_t rank, const char* what = "axis");

}  // namespace mopt
