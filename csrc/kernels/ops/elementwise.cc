// Unary maps (activations and math), binary arithmetic with numpy broadcasting, and the variadic
// Sum/Max/Min/Mean. fp32 runs on the ISA tables; other numeric types on plain C++ loops.
#include <cmath>
#include <limits>

#include "kernels/ops/common.h"
#include "kernels/ops/typed.h"

namespace mopt {
namespace {

using cpu::BinaryOp;
using cpu::UnaryOp;

class UnaryKernel final : public Kernel {
 public:
  UnaryKernel(const KernelInit& init, cpu::UnaryParams p) : p_(p) {
    fn_ = init.fn<cpu::UnaryF32Fn>("unary_f32", &impl);
    clip_ = p.op == UnaryOp::kClip;
  }
  void run(KernelContext& ctx) override {
    const Tensor& x = ctx.in(0);
    Tensor& y = ctx.output(0, x.shape);
    cpu::UnaryParams p = p_;
    if (clip_) {
      p.alpha = -std::numeric_limits<float>::infinity();
      p.beta = std::numeric_limits<float>::infinity();
      if (const Tensor* lo = ctx.input(1); lo && lo->numel() > 0) p.alpha = static_cast<float>(scalar_as_double(*lo));
      if (const Tensor* hi = ctx.input(2); hi && hi->numel() > 0) p.beta = static_cast<float>(scalar_as_double(*hi));
    }
    const float* xp = x.ptr<float>();
    float* yp = y.ptr<float>();
    ctx.pool().parallel_for(x.numel(), 16384, [&](int64_t b, int64_t e) { fn_(xp + b, yp + b, e - b, p); });
  }

 private:
  cpu::UnaryParams p_;
  cpu::UnaryF32Fn fn_ = nullptr;
  bool clip_ = false;
};

template <UnaryOp OP>
std::unique_ptr<Kernel> make_unary(const KernelInit& init) {
  cpu::UnaryParams p;
  p.op = OP;
  const Attrs& a = init.attrs;
  if constexpr (OP == UnaryOp::kLeakyRelu) p.alpha = static_cast<float>(a.get_float("alpha", 0.01));
  if constexpr (OP == UnaryOp::kHardSigmoid) {
    p.alpha = static_cast<float>(a.get_float("alpha", 0.2));
    p.beta = static_cast<float>(a.get_float("beta", 0.5));
  }
  if constexpr (OP == UnaryOp::kElu) p.alpha = static_cast<float>(a.get_float("alpha", 1.0));
  if constexpr (OP == UnaryOp::kSelu) {
    p.alpha = static_cast<float>(a.get_float("alpha", 1.67326319217681884765625));
    p.beta = static_cast<float>(a.get_float("gamma", 1.05070102214813232421875));
  }
  return std::make_unique<UnaryKernel>(init, p);
}

// Neg and Abs of float64 and the integer types: plain loops (float32 runs on the ISA tables).
// Integers wrap as numpy's do: -(-128) and |-128| stay -128 in int8.
template <UnaryOp OP>
class TypedNegAbsKernel final : public Kernel {
 public:
  explicit TypedNegAbsKernel(const KernelInit&) { impl = OP == UnaryOp::kNeg ? "neg" : "abs"; }
  void run(KernelContext& ctx) override {
    const Tensor& x = ctx.in(0);
    Tensor& y = ctx.output(0, x.shape);
    switch (x.dtype) {
      case DType::kF64: return loop<double>(ctx, x, y);
      case DType::kI8: return loop<int8_t>(ctx, x, y);
      case DType::kI16: return loop<int16_t>(ctx, x, y);
      case DType::kI32: return loop<int32_t>(ctx, x, y);
      case DType::kI64: return loop<int64_t>(ctx, x, y);
      case DType::kU8: return loop<uint8_t>(ctx, x, y);
      case DType::kU16: return loop<uint16_t>(ctx, x, y);
      case DType::kU32: return loop<uint32_t>(ctx, x, y);
      case DType::kU64: return loop<uint64_t>(ctx, x, y);
      default: fail(ErrorCode::kUnsupported, "no native kernel for type ", dtype_name(x.dtype));
    }
  }

 private:
  template <class T>
  static T apply(T v) {
    if constexpr (std::is_floating_point_v<T>) {
      return OP == UnaryOp::kNeg ? -v : std::fabs(v);
    } else if constexpr (std::is_unsigned_v<T>) {
      return OP == UnaryOp::kNeg ? static_cast<T>(0u - v) : v;
    } else {
      const T neg = static_cast<T>(0u - static_cast<std::make_unsigned_t<T>>(v));  // no signed overflow
      return OP == UnaryOp::kNeg || v < 0 ? neg : v;
    }
  }
  template <class T>
  static void loop(KernelContext& ctx, const Tensor& x, Tensor& y) {
    const T* xp = x.ptr<T>();
    T* yp = y.ptr<T>();
    ctx.pool().parallel_for(x.numel(), 16384, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) yp[i] = apply(xp[i]);
    });
  }
};

template <UnaryOp OP>
std::unique_ptr<Kernel> make_neg_abs(const KernelInit& init) {
  if (init.in_dtypes.empty() || init.in_dtypes[0] == DType::kF32) return make_unary<OP>(init);
  if (init.in_dtypes[0] == DType::kF16) return make_typed_unary(init);
  return std::make_unique<TypedNegAbsKernel<OP>>(init);
}

std::unique_ptr<Kernel> make_gelu(const KernelInit& init) {
  cpu::UnaryParams p;
  std::string approx = init.attrs.get_string("approximate", "none");
  if (approx == "none") p.op = UnaryOp::kGelu;
  else if (approx == "tanh") p.op = UnaryOp::kGeluTanh;
  else fail(ErrorCode::kUnsupported, "Gelu approximate='", approx, "' is not supported");
  return std::make_unique<UnaryKernel>(init, p);
}

// Identity and Dropout (inference): the output is a view of the input.
class PassThroughKernel final : public Kernel {
 public:
  void run(KernelContext& ctx) override {
    const Tensor& x = ctx.in(0);
    if (const Tensor* training = ctx.input(2); training && training->numel() > 0 && scalar_as_double(*training) != 0)
      fail(ErrorCode::kUnsupported, "Dropout with training_mode=true is not supported for inference");
    ctx.output_alias(0, x, x.shape);
    if (ctx.num_outputs() > 1 && ctx.output_used(1)) {  // Dropout mask: all kept
      Tensor& m = ctx.output(1, x.shape);
      std::memset(m.data, 1, m.nbytes());
    }
  }
};

std::unique_ptr<Kernel> make_pass_through(const KernelInit&) {
  auto k = std::make_unique<PassThroughKernel>();
  k->impl = "view";
  return k;
}

template <class T>
T apply_scalar(BinaryOp op, T a, T b) {
  switch (op) {
    case BinaryOp::kAdd: return a + b;
    case BinaryOp::kSub: return a - b;
    case BinaryOp::kMul: return a * b;
    case BinaryOp::kDiv:
      if constexpr (std::is_integral_v<T>) {
        if (b == 0) fail(ErrorCode::kRuntime, "integer division by zero");
      }
      return a / b;
    case BinaryOp::kMax:
      if constexpr (std::is_floating_point_v<T>) {
        if (a != a) return a;
      }
      return a > b ? a : b;  // a NaN b falls through to b
    default:
      if constexpr (std::is_floating_point_v<T>) {
        if (a != a) return a;
      }
      return a < b ? a : b;
  }
}

template <class T>
void binary_typed(BinaryOp op, const Broadcast& bc, const T* a, const T* b, T* y, ThreadPool& pool) {
  for_each_run(bc, pool, [&](int64_t oa, int64_t ob, int64_t oo, int64_t n, int mode) {
    for (int64_t i = 0; i < n; ++i) {
      T va = a[oa + (mode == 1 || mode == 3 ? 0 : i)];
      T vb = b[ob + (mode == 2 || mode == 3 ? 0 : i)];
      y[oo + i] = apply_scalar<T>(op, va, vb);
    }
  });
}

// Applies y = a op b with broadcasting; y may alias a when a already has the output's shape.
void binary_any(BinaryOp op, cpu::BinaryF32Fn f32, const Tensor& a, const Tensor& b, Tensor& y, ThreadPool& pool) {
  MOPT_ENSURE(a.dtype == b.dtype, "operand types differ: ", dtype_name(a.dtype), " and ", dtype_name(b.dtype));
  Broadcast bc = make_broadcast(a.shape, b.shape);
  if (y.numel() == 0) return;
  switch (a.dtype) {
    case DType::kF32: {
      const float* ap = a.ptr<float>();
      const float* bp = b.ptr<float>();
      float* yp = y.ptr<float>();
      for_each_run(bc, pool, [&](int64_t oa, int64_t ob, int64_t oo, int64_t n, int mode) {
        f32(op, ap + oa, bp + ob, yp + oo, n, mode == 3 ? 0 : mode);
      });
      return;
    }
    case DType::kF64: return binary_typed<double>(op, bc, a.ptr<double>(), b.ptr<double>(), y.ptr<double>(), pool);
    case DType::kI64: return binary_typed<int64_t>(op, bc, a.ptr<int64_t>(), b.ptr<int64_t>(), y.ptr<int64_t>(), pool);
    case DType::kI32: return binary_typed<int32_t>(op, bc, a.ptr<int32_t>(), b.ptr<int32_t>(), y.ptr<int32_t>(), pool);
    default: fail(ErrorCode::kUnsupported, "no native kernel for type ", dtype_name(a.dtype));
  }
}

class BinaryKernel final : public Kernel {
 public:
  BinaryKernel(const KernelInit& init, BinaryOp op) : op_(op) {
    f32_ = init.fn<cpu::BinaryF32Fn>("binary_f32", &impl);
  }
  void run(KernelContext& ctx) override {
    const Tensor& a = ctx.in(0);
    const Tensor& b = ctx.in(1);
    Tensor& y = ctx.output(0, broadcast_or_fail(a.shape, b.shape));
    binary_any(op_, f32_, a, b, y, ctx.pool());
  }

 private:
  BinaryOp op_;
  cpu::BinaryF32Fn f32_ = nullptr;
};

template <BinaryOp OP>
std::unique_ptr<Kernel> make_binary(const KernelInit& init) {
  return std::make_unique<BinaryKernel>(init, OP);
}

// Pow for float32 bases, any numeric exponent type. Exponents 1, 2, 3, 0.5 and -1 given as one
// value (GELU's x^3, variance's x^2) are plain arithmetic; the rest go through std::pow.
class PowKernel final : public Kernel {
 public:
  explicit PowKernel(const KernelInit&) { impl = "pow_f32"; }
  void run(KernelContext& ctx) override {
    const Tensor& x = ctx.in(0);
    const Tensor& e = ctx.in(1);
    MOPT_ENSURE(x.dtype == DType::kF32, "X must be float32");
    const Shape out = broadcast_or_fail(x.shape, e.shape);
    std::vector<float> ev(static_cast<size_t>(e.numel()));
    for (int64_t i = 0; i < e.numel(); ++i) ev[i] = static_cast<float>(element_as_double(e, i));
    Tensor& y = ctx.output(0, out);
    if (y.numel() == 0) return;
    const float* xp = x.ptr<float>();
    float* yp = y.ptr<float>();
    if (ev.size() == 1 && x.numel() == y.numel()) {
      const float k = ev[0];
      ctx.pool().parallel_for(y.numel(), 16384, [&](int64_t b, int64_t end) {
        if (k == 2.f) {
          for (int64_t i = b; i < end; ++i) yp[i] = xp[i] * xp[i];
        } else if (k == 3.f) {
          for (int64_t i = b; i < end; ++i) yp[i] = xp[i] * xp[i] * xp[i];
        } else if (k == 1.f) {
          for (int64_t i = b; i < end; ++i) yp[i] = xp[i];
        } else if (k == 0.5f) {
          for (int64_t i = b; i < end; ++i) yp[i] = std::sqrt(xp[i]);
        } else if (k == -1.f) {
          for (int64_t i = b; i < end; ++i) yp[i] = 1.f / xp[i];
        } else {
          for (int64_t i = b; i < end; ++i) yp[i] = std::pow(xp[i], k);
        }
      });
      return;
    }
    Broadcast bc = make_broadcast(x.shape, e.shape);
    const float* ep = ev.data();
    for_each_run(bc, ctx.pool(), [&](int64_t oa, int64_t ob, int64_t oo, int64_t n, int mode) {
      for (int64_t i = 0; i < n; ++i)
        yp[oo + i] = std::pow(xp[oa + (mode == 1 || mode == 3 ? 0 : i)], ep[ob + (mode == 2 || mode == 3 ? 0 : i)]);
    });
  }

 private:
  static double element_as_double(const Tensor& t, int64_t i) {
    switch (t.dtype) {
      case DType::kF32: return t.ptr<float>()[i];
      case DType::kF64: return t.ptr<double>()[i];
      case DType::kI32: return t.ptr<int32_t>()[i];
      case DType::kI64: return static_cast<double>(t.ptr<int64_t>()[i]);
      case DType::kI8: return t.ptr<int8_t>()[i];
      case DType::kU8: return t.ptr<uint8_t>()[i];
      case DType::kI16: return t.ptr<int16_t>()[i];
      case DType::kU16: return t.ptr<uint16_t>()[i];
      case DType::kU32: return t.ptr<uint32_t>()[i];
      case DType::kU64: return static_cast<double>(t.ptr<uint64_t>()[i]);
      default: fail(ErrorCode::kUnsupported, "Pow exponent of type ", dtype_name(t.dtype), " has no native kernel");
    }
  }
};

std::unique_ptr<Kernel> make_pow(const KernelInit& init) { return std::make_unique<PowKernel>(init); }

// Sum / Max / Min / Mean over any number of inputs, all broadcast together.
class VariadicKernel final : public Kernel {
 public:
  VariadicKernel(const KernelInit& init, BinaryOp op, bool mean) : op_(op), mean_(mean) {
    f32_ = init.fn<cpu::BinaryF32Fn>("binary_f32", &impl);
  }
  void run(KernelContext& ctx) override {
    const int n = ctx.num_inputs();
    const Shape out = broadcast_inputs(ctx);
    Tensor& y = ctx.output(0, out);
    Shape first;
    if (n >= 2) broadcast_shapes(ctx.in(0).shape, ctx.in(1).shape, &first);
    if (n >= 2 && first == out) {
      binary_any(op_, f32_, ctx.in(0), ctx.in(1), y, ctx.pool());
    } else {  // start from the first input expanded to the full output shape
      expand_into(ctx, ctx.in(0), y);
      if (n >= 2) binary_any(op_, f32_, y, ctx.in(1), y, ctx.pool());
    }
    for (int i = 2; i < n; ++i) binary_any(op_, f32_, y, ctx.in(i), y, ctx.pool());
    if (mean_) {
      MOPT_ENSURE(y.dtype == DType::kF32, "Mean supports float32 only");
      float* p = y.ptr<float>();
      const float inv = 1.f / static_cast<float>(n);
      for (int64_t i = 0; i < y.numel(); ++i) p[i] *= inv;
    }
  }

 private:
  static void expand_into(KernelContext& ctx, const Tensor& src, Tensor& dst) {
    Broadcast bc = make_broadcast(src.shape, dst.shape);
    const size_t es = dtype_size(src.dtype);
    const char* s = static_cast<const char*>(src.data);
    char* d = static_cast<char*>(dst.data);
    for_each_run(bc, ctx.pool(), [&](int64_t oa, int64_t, int64_t oo, int64_t n, int mode) {
      for (int64_t i = 0; i < n; ++i)
        std::memcpy(d + (oo + i) * es, s + (oa + (mode == 1 || mode == 3 ? 0 : i)) * es, es);
    });
  }
  BinaryOp op_;
  bool mean_;
  cpu::BinaryF32Fn f32_ = nullptr;
};

template <BinaryOp OP, bool MEAN>
std::unique_ptr<Kernel> make_variadic(const KernelInit& init) {
  return std::make_unique<VariadicKernel>(init, OP, MEAN);
}

}  // namespace

void register_elementwise_ops(OpRegistry& r) {
  const std::vector<DType> f32 = {DType::kF32};
  const std::vector<DType> num = {DType::kF32, DType::kF64, DType::kI64, DType::kI32};
  // float64 and float16 unary maps, and the other numeric types of the binary ops: math_ops.cc
  const std::vector<DType> floats = {DType::kF32, DType::kF64, DType::kF16, DType::kBF16};
  const std::vector<DType> all = {DType::kF32, DType::kF64, DType::kF16, DType::kBF16, DType::kI8, DType::kI16, DType::kI32,
                                  DType::kI64, DType::kU8, DType::kU16, DType::kU32, DType::kU64};
  r.add({"", "Relu", floats, &route_by_dtype<&make_unary<UnaryOp::kRelu>, &make_typed_unary, DType::kF32>});
  r.add({"", "LeakyRelu", floats, &route_by_dtype<&make_unary<UnaryOp::kLeakyRelu>, &make_typed_unary, DType::kF32>});
  r.add({"", "Clip", all, &route_by_dtype<&make_unary<UnaryOp::kClip>, &make_typed_clip, DType::kF32>});
  r.add({"", "Sigmoid", floats, &route_by_dtype<&make_unary<UnaryOp::kSigmoid>, &make_typed_unary, DType::kF32>});
  r.add({"", "Tanh", floats, &route_by_dtype<&make_unary<UnaryOp::kTanh>, &make_typed_unary, DType::kF32>});
  r.add({"", "HardSigmoid", floats, &route_by_dtype<&make_unary<UnaryOp::kHardSigmoid>, &make_typed_unary, DType::kF32>});
  r.add({"", "HardSwish", floats, &route_by_dtype<&make_unary<UnaryOp::kHardSwish>, &make_typed_unary, DType::kF32>});
  r.add({"", "Elu", floats, &route_by_dtype<&make_unary<UnaryOp::kElu>, &make_typed_unary, DType::kF32>});
  r.add({"", "Selu", floats, &route_by_dtype<&make_unary<UnaryOp::kSelu>, &make_typed_unary, DType::kF32>});
  r.add({"", "Softplus", floats, &route_by_dtype<&make_unary<UnaryOp::kSoftplus>, &make_typed_unary, DType::kF32>});
  r.add({"", "Exp", floats, &route_by_dtype<&make_unary<UnaryOp::kExp>, &make_typed_unary, DType::kF32>});
  r.add({"", "Erf", floats, &route_by_dtype<&make_unary<UnaryOp::kErf>, &make_typed_unary, DType::kF32>});
  r.add({"", "Neg", {DType::kF32, DType::kF64, DType::kF16, DType::kI8, DType::kI16, DType::kI32, DType::kI64},
         &make_neg_abs<UnaryOp::kNeg>});
  r.add({"", "Abs",
         {DType::kF32, DType::kF64, DType::kF16, DType::kI8, DType::kI16, DType::kI32, DType::kI64, DType::kU8, DType::kU16,
          DType::kU32, DType::kU64},
         &make_neg_abs<UnaryOp::kAbs>});
  r.add({"", "Sqrt", floats, &route_by_dtype<&make_unary<UnaryOp::kSqrt>, &make_typed_unary, DType::kF32>});
  r.add({"", "Reciprocal", floats, &route_by_dtype<&make_unary<UnaryOp::kReciprocal>, &make_typed_unary, DType::kF32>});
  r.add({"", "Floor", floats, &route_by_dtype<&make_unary<UnaryOp::kFloor>, &make_typed_unary, DType::kF32>});
  r.add({"", "Ceil", floats, &route_by_dtype<&make_unary<UnaryOp::kCeil>, &make_typed_unary, DType::kF32>});
  r.add({"", "Gelu", f32, &make_gelu});
  r.add({"", "Identity", {}, &make_pass_through});
  r.add({"", "Dropout", {}, &make_pass_through});
  r.add({"", "Add", all, &route_by_dtype<&make_binary<BinaryOp::kAdd>, &make_typed_binary, DType::kF32, DType::kF64, DType::kI64, DType::kI32>});
  r.add({"", "Sub", all, &route_by_dtype<&make_binary<BinaryOp::kSub>, &make_typed_binary, DType::kF32, DType::kF64, DType::kI64, DType::kI32>});
  r.add({"", "Mul", all, &route_by_dtype<&make_binary<BinaryOp::kMul>, &make_typed_binary, DType::kF32, DType::kF64, DType::kI64, DType::kI32>});
  r.add({"", "Div", all, &route_by_dtype<&make_binary<BinaryOp::kDiv>, &make_typed_binary, DType::kF32, DType::kF64, DType::kI64, DType::kI32>});
  r.add({"", "Sum", all, &route_by_dtype<&make_variadic<BinaryOp::kAdd, false>, &make_typed_variadic, DType::kF32, DType::kF64, DType::kI64, DType::kI32>});
  r.add({"", "Max", all, &route_by_dtype<&make_variadic<BinaryOp::kMax, false>, &make_typed_variadic, DType::kF32, DType::kF64, DType::kI64, DType::kI32>});
  r.add({"", "Min", all, &route_by_dtype<&make_variadic<BinaryOp::kMin, false>, &make_typed_variadic, DType::kF32, DType::kF64, DType::kI64, DType::kI32>});
  r.add({"", "Mean", floats, &route_by_dtype<&make_variadic<BinaryOp::kAdd, true>, &make_typed_variadic, DType::kF32>});
  r.add({"", "Pow", all, &route_by_dtype<&make_pow, &make_typed_pow, DType::kF32>});
}

}  // namespace mopt
