#include "runtime/f16_adapter.h"

#include <algorithm>
#include <cstring>
#include <string>
#include <vector>

#include "kernels/cpu/isa_fns.h"
#include "mopt/registry.h"
#include "mopt/status.h"
#include "mopt/thread_pool.h"

namespace mopt {

namespace {

// Ops whose float16 form is their float32 form on widened inputs, rounded once at the end (the
// float16 definition computes in float16; accumulating in float32 is what every CPU runtime does
// and is closer to the exact result). The pools, the unary activations and Add/Sub/Mul/Div are
// here too: widening, the vectorized float32 loop and narrowing give the plain-C++ float16
// kernels' values (both compute each element in float and round once) 5-10x faster. Softmax keeps
// its float16 kernel: the float32 one's vectorized exp moved the ONNX attention fp16 case one
// float16 step past its tolerance. Control flow, casts, quantization and the integer-valued ops
// keep their own kernels.
bool adaptable(const std::string& domain, const std::string& op) {
  static const char* kOnnx[] = {"Conv", "Gemm", "MatMul", "Gelu", "GlobalAveragePool", "GlobalMaxPool", "LRN",
                                "BatchNormalization", "LayerNormalization", "MaxPool", "AveragePool", "Relu",
                                "LeakyRelu", "Sigmoid", "Tanh", "Erf", "Clip", "Add", "Sub", "Mul", "Div"};
  static const char* kMopt[] = {"FusedConv", "FusedGemm", "FusedMatMul", "FusedMLP", "Attention"};
  if (domain.empty()) return std::find_if(std::begin(kOnnx), std::end(kOnnx), [&](const char* s) { return op == s; }) != std::end(kOnnx);
  if (domain == "com.mopt") return std::find_if(std::begin(kMopt), std::end(kMopt), [&](const char* s) { return op == s; }) != std::end(kMopt);
  return false;
}

DType widened(DType t) { return t == DType::kF16 ? DType::kF32 : t; }

// n elements converted in chunks across the pool (a few hundred KB per task)
template <class Fn>
void convert(ThreadPool& pool, int64_t n, Fn fn) {
  pool.parallel_for(n, 1 << 16, [&](int64_t b, int64_t e) { fn(b, e - b); });
}

class F16Adapter;

// The float32 stand-ins of one call, kept by the kernel so a run allocates nothing (runs of a
// session are serialized): tensors whose shapes are assigned in place, and which of them are live.
struct Slots {
  std::vector<Tensor> in, out;
  std::vector<char> widened, made;  // in[i] holds input i's float32 copy; out[i] is a buffer to narrow
};

// What the float32 kernel sees: its float16 inputs widened, its float16 outputs as float32 buffers
// (both from the call's scratch); everything else passes through to the session's context.
class F32View final : public KernelContext {
 public:
  F32View(KernelContext& outer, const F16Adapter& a, Slots& slots);
  int num_inputs() const override { return outer_.num_inputs(); }
  const Tensor* input(int i) const override;
  int num_outputs() const override { return outer_.num_outputs(); }
  bool output_used(int i) const override { return outer_.output_used(i); }
  DType output_dtype(int i) const override { return widened(outer_.output_dtype(i)); }
  Tensor& output(int i, const Shape& shape) override { return output(i, shape, DType::kUndefined); }
  Tensor& output(int i, const Shape& shape, DType dtype) override;
  Tensor& output_alias(int i, const Tensor& src, const Shape& shape) override;
  void* scratch(size_t bytes) override { return outer_.scratch(bytes); }
  ThreadPool& pool() override { return outer_.pool(); }

  // the float16 outputs rounded into the session's tensors
  void narrow();

 private:
  KernelContext& outer_;
  const F16Adapter& a_;
  Slots& s_;
};

class F16Adapter final : public Kernel {
 public:
  F16Adapter(const OpDef& def, const KernelInit& init) {
    cvt_in_ = init.fn<cpu::CvtF16F32Fn>("cvt_f16_f32", nullptr);
    cvt_out_ = init.fn<cpu::CvtF32F16Fn>("cvt_f32_f16", nullptr);
    KernelInit wide = init;
    for (DType& t : wide.in_dtypes) t = widened(t);
    for (DType& t : wide.out_dtypes) t = widened(t);
    // float16 constants widened once (they stay plain: nothing packs a float16 weight)
    consts_.resize(init.consts.size());
    for (size_t i = 0; i < init.consts.size(); ++i) {
      const Tensor* c = init.consts[i].tensor;
      if (!c || c->dtype != DType::kF16) continue;
      MOPT_CHECK(init.consts[i].format.empty(), ErrorCode::kInvalidModel, "a float16 constant stored packed ('",
                 init.consts[i].format, "')");
      consts_[i].resize(static_cast<size_t>(c->numel()));
      cvt_in_(c->ptr<uint16_t>(), consts_[i].data(), c->numel());
      const_tensors_.push_back(std::make_unique<Tensor>(Tensor{DType::kF32, c->shape, consts_[i].data()}));
      wide.consts[i].tensor = const_tensors_.back().get();
      wide.consts[i].nbytes = consts_[i].size() * sizeof(float);
    }
    inner_ = def.factory(wide);
    impl = inner_->impl + ",f16io";
    slots_.in.resize(init.in_dtypes.size());
    slots_.widened.resize(init.in_dtypes.size());
    slots_.out.resize(init.out_dtypes.size());
    slots_.made.resize(init.out_dtypes.size());
  }

  void run(KernelContext& ctx) override {
    F32View view(ctx, *this, slots_);
    inner_->run(view);
    view.narrow();
  }

  cpu::CvtF16F32Fn cvt_in_ = nullptr;
  cpu::CvtF32F16Fn cvt_out_ = nullptr;

 private:
  std::vector<std::vector<float>> consts_;
  std::vector<std::unique_ptr<Tensor>> const_tensors_;
  std::unique_ptr<Kernel> inner_;
  Slots slots_;
};

F32View::F32View(KernelContext& outer, const F16Adapter& a, Slots& slots) : outer_(outer), a_(a), s_(slots) {
  MOPT_CHECK(s_.in.size() >= static_cast<size_t>(outer.num_inputs()) && s_.out.size() >= static_cast<size_t>(outer.num_outputs()),
             ErrorCode::kInternal, "float16 adapter: more inputs or outputs than at build time");
  std::fill(s_.widened.begin(), s_.widened.end(), 0);
  std::fill(s_.made.begin(), s_.made.end(), 0);
}

// t's fields set in place (its shape's storage is reused from the last run)
void set(Tensor& t, DType dtype, const Shape& shape, void* data) {
  t.dtype = dtype;
  t.shape = shape;
  t.data = data;
}

const Tensor* F32View::input(int i) const {
  const Tensor* t = outer_.input(i);
  if (!t || t->dtype != DType::kF16) return t;
  if (!s_.widened[i]) {
    // (the scratch is the call's: requested through the outer context, it is planned like the rest)
    auto* self = const_cast<F32View*>(this);
    float* buf = static_cast<float*>(self->outer_.scratch(static_cast<size_t>(t->numel()) * sizeof(float)));
    const uint16_t* src = t->ptr<uint16_t>();
    convert(self->outer_.pool(), t->numel(), [&](int64_t b, int64_t n) { a_.cvt_in_(src + b, buf + b, n); });
    set(s_.in[i], DType::kF32, t->shape, buf);
    s_.widened[i] = 1;
  }
  return &s_.in[i];
}

Tensor& F32View::output(int i, const Shape& shape, DType dtype) {
  if (outer_.output_dtype(i) != DType::kF16) return outer_.output(i, shape, dtype);
  MOPT_CHECK(dtype == DType::kUndefined || dtype == DType::kF32, ErrorCode::kInternal,
             "a float32 kernel behind float16 storage produced ", dtype_name(dtype));
  if (s_.made[i] && s_.out[i].shape == shape) return s_.out[i];  // asked again: the same buffer
  set(s_.out[i], DType::kF32, shape, outer_.scratch(static_cast<size_t>(shape_numel(shape)) * sizeof(float)));
  s_.made[i] = 1;
  return s_.out[i];
}

Tensor& F32View::output_alias(int i, const Tensor& src, const Shape& shape) {
  if (outer_.output_dtype(i) != DType::kF16) return outer_.output_alias(i, src, shape);
  Tensor& t = output(i, shape, DType::kF32);  // a view of a float32 buffer: copied, then narrowed
  std::memcpy(t.data, src.data, t.nbytes());
  return t;
}

void F32View::narrow() {
  for (size_t i = 0; i < s_.made.size(); ++i) {
    if (!s_.made[i]) continue;
    const Tensor& w = s_.out[i];
    Tensor& y = outer_.output(static_cast<int>(i), w.shape, DType::kF16);
    const float* src = w.ptr<float>();
    uint16_t* dst = y.ptr<uint16_t>();
    convert(outer_.pool(), w.numel(), [&](int64_t b, int64_t n) { a_.cvt_out_(src + b, dst + b, n); });
  }
}

}  // namespace

bool f16_via_f32(const OpDef& def) {
  const auto& d = def.dtypes;
  return adaptable(def.domain, def.op) && std::find(d.begin(), d.end(), DType::kF32) != d.end();
}

std::unique_ptr<Kernel> make_f16_adapter(const OpDef& def, const KernelInit& init) {
  return std::make_unique<F16Adapter>(def, init);
}

}  // namespace mopt
