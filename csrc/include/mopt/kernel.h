// The interface between the runtime and an op kernel, and the registry of op kernels.
// A kernel is created once per node when a session loads (it may inspect constant inputs and
// pick its hot loops then) and run once per node per Session.run.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "mopt/attrs.h"
#include "mopt/cpu_features.h"
#include "mopt/registry.h"
#include "mopt/tensor.h"

namespace mopt {

class Program;
class ThreadPool;
struct NodeInfo;
struct SessionOptions;

// What a kernel sees while it runs.
class KernelContext {
 public:
  virtual ~KernelContext() = default;
  virtual int num_inputs() const = 0;
  virtual const Tensor* input(int i) const = 0;   // nullptr for an absent optional input
  virtual int num_outputs() const = 0;
  virtual bool output_used(int i) const = 0;      // false: nobody reads it (it may be skipped)
  virtual DType output_dtype(int i) const = 0;    // fixed at compile time
  virtual Tensor& output(int i, const Shape& shape) = 0;  // storage planned per input-shape signature
  // The same for a value whose dtype the compiler could not infer (fallback nodes): `dtype` is used
  // when the program has none; otherwise it must agree with the program.
  virtual Tensor& output(int i, const Shape& shape, DType dtype) = 0;
  virtual Tensor& output_alias(int i, const Tensor& src, const Shape& shape) = 0;  // a view of src
  virtual void* scratch(size_t bytes) = 0;        // temporary for this call, 64-byte aligned
  virtual ThreadPool& pool() = 0;

  const Tensor& in(int i) const;                  // a required input (throws when absent)
};

// A weight stored in the blob, possibly already packed for a kernel (`format` says how).
struct ConstInput {
  const Tensor* tensor = nullptr;  // nullptr: the input is computed at run time
  std::string format;              // "" = plain row-major
  size_t nbytes = 0;               // bytes stored (a packed format's size need not follow the shape)
};

struct KernelInit {
  const NodeInfo* node = nullptr;
  Attrs attrs;
  std::vector<ConstInput> consts;  // one per input
  std::vector<DType> in_dtypes;    // kUndefined for absent inputs
  std::vector<DType> out_dtypes;
  Isa isa = Isa::kScalar;          // dispatch cap for this session
  const KernelTable* table = nullptr;
  // The session being built: control-flow kernels build sessions over their bodies from these.
  std::shared_ptr<const Program> program;
  const SessionOptions* options = nullptr;
  ThreadPool* pool = nullptr;

  const Tensor* const_input(size_t i) const { return i < consts.size() ? consts[i].tensor : nullptr; }
  template <class T>
  T fn(const char* name, std::string* impl = nullptr) const;  // looks up a hot loop, notes its ISA
};

class Kernel {
 public:
  virtual ~Kernel() = default;
  virtual void run(KernelContext& ctx) = 0;
  std::string impl;  // what `mopt inspect` shows, e.g. "gemm_f32_6x16@avx2"
};

using KernelFactory = std::unique_ptr<Kernel> (*)(const KernelInit& init);

// Packs a constant input ahead of time. Returns false when this input is not packed.
struct PackedWeight {
  std::string format;
  std::vector<uint8_t> bytes;
  Shape shape;  // logical shape, kept for unpacking
};
using PrepackFn = bool (*)(const Attrs& attrs, int input_index, const Tensor& w, Isa isa,
                           PackedWeight* out);

struct OpDef {
  std::string domain;          // "" = ONNX default domain, "com.mopt" = fused ops
  std::string op;
  std::vector<DType> dtypes;   // supported dtypes of the first input; empty = any
  KernelFactory factory = nullptr;
  PrepackFn prepack = nullptr;
};

class OpRegistry {
 public:
  void add(OpDef def);
  const OpDef* find(const std::string& domain, const std::string& op) const;
  const std::vector<OpDef>& all() const { return defs_; }

 private:
  std::vector<OpDef> defs_;
};

const OpRegistry& op_registry();  // filled once from the per-family lists in kernels/ops

template <class T>
T KernelInit::fn(const char* name, std::string* impl_out) const {
  Isa chosen = Isa::kScalar;
  T f = table->get<T>(name, isa, &chosen);
  if (impl_out) {
    if (!impl_out->empty()) *impl_out += ",";
    *impl_out += std::string(name) + "@" + isa_name(chosen);
  }
  return f;
}

}  // namespace mopt
