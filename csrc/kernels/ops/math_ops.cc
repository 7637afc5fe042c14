// Element-wise math in plain C++ for the dtypes the ISA tables do not cover: the trigonometric and
// hyperbolic functions, Round, the rarer activations (Softsign, Celu, ThresholdedRelu, Mish, Shrink),
// float64 and float16 forms of the float32 unary ops, and binary arithmetic on every numeric type:
// Add/Sub/Mul/Div/Max/Min beyond float32/64 and int32/64, Mod, BitShift, Bitwise*, PRelu, and the
// variadic Sum/Max/Min/Mean. float16 computes in float and rounds once; integers wrap like numpy's.
#include <limits>

#include "kernels/ops/typed.h"

namespace mopt {
namespace {

using typed::Arith;
using typed::Half;
using typed::is_float_v;
using typed::load;
using typed::store;

// ---- unary --------------------------------------------------------------------------------------------

enum class U {
  kSin, kCos, kTan, kAsin, kAcos, kAtan, kSinh, kCosh, kAsinh, kAcosh, kAtanh, kRound, kSoftsign, kCelu,
  kThresholdedRelu, kMish, kShrink, kExp, kLog, kSqrt, kRelu, kSigmoid, kTanh, kAbs, kNeg, kFloor, kCeil,
  kReciprocal, kErf, kSign, kElu, kSelu, kLeakyRelu, kHardSigmoid, kHardSwish, kSoftplus, kSwish,
};

struct UnaryDef {
  const char* name;
  U op;
  double alpha, beta;  // attribute defaults (alpha, and beta/gamma/bias/lambd where the op has one)
};

constexpr UnaryDef kUnary[] = {
    {"Sin", U::kSin, 0, 0}, {"Cos", U::kCos, 0, 0}, {"Tan", U::kTan, 0, 0}, {"Asin", U::kAsin, 0, 0},
    {"Acos", U::kAcos, 0, 0}, {"Atan", U::kAtan, 0, 0}, {"Sinh", U::kSinh, 0, 0}, {"Cosh", U::kCosh, 0, 0},
    {"Asinh", U::kAsinh, 0, 0}, {"Acosh", U::kAcosh, 0, 0}, {"Atanh", U::kAtanh, 0, 0}, {"Round", U::kRound, 0, 0},
    {"Softsign", U::kSoftsign, 0, 0}, {"Celu", U::kCelu, 1.0, 0}, {"ThresholdedRelu", U::kThresholdedRelu, 1.0, 0},
    {"Mish", U::kMish, 0, 0}, {"Shrink", U::kShrink, 0.5, 0.0}, {"Exp", U::kExp, 0, 0}, {"Log", U::kLog, 0, 0},
    {"Sqrt", U::kSqrt, 0, 0}, {"Relu", U::kRelu, 0, 0}, {"Sigmoid", U::kSigmoid, 0, 0}, {"Tanh", U::kTanh, 0, 0},
    {"Abs", U::kAbs, 0, 0}, {"Neg", U::kNeg, 0, 0}, {"Floor", U::kFloor, 0, 0}, {"Ceil", U::kCeil, 0, 0},
    {"Reciprocal", U::kReciprocal, 0, 0}, {"Erf", U::kErf, 0, 0}, {"Sign", U::kSign, 0, 0},
    {"Elu", U::kElu, 1.0, 0}, {"Selu", U::kSelu, 1.67326319217681884765625, 1.05070102214813232421875},
    {"LeakyRelu", U::kLeakyRelu, 0.01, 0}, {"HardSigmoid", U::kHardSigmoid, 0.2, 0.5},
    {"HardSwish", U::kHardSwish, 0, 0}, {"Softplus", U::kSoftplus, 0, 0}, {"Swish", U::kSwish, 1.0, 0},
};

template <class A>
A unary_apply(U op, A x, A alpha, A beta) {
  const A zero(0), one(1);
  switch (op) {
    case U::kSin: return std::sin(x);
    case U::kCos: return std::cos(x);
    case U::kTan: return std::tan(x);
    case U::kAsin: return std::asin(x);
    case U::kAcos: return std::acos(x);
    case U::kAtan: return std::atan(x);
    case U::kSinh: return std::sinh(x);
    case U::kCosh: return std::cosh(x);
    case U::kAsinh: return std::asinh(x);
    case U::kAcosh: return std::acosh(x);
    case U::kAtanh: return std::atanh(x);
    case U::kRound: return std::nearbyint(x);  // the default rounding mode: half to even, like numpy
    case U::kSoftsign: return x / (one + std::fabs(x));
    case U::kCelu: return std::max(zero, x) + std::min(zero, alpha * (std::exp(x / alpha) - one));
    case U::kThresholdedRelu: return x > alpha ? x : zero;
    case U::kMish: return x * std::tanh(std::log1p(std::exp(x)));
    case U::kShrink: return x < -alpha ? x + beta : x > alpha ? x - beta : zero;
    case U::kExp: return std::exp(x);
    case U::kLog: return std::log(x);
    case U::kSqrt: return std::sqrt(x);
    case U::kRelu: return x > zero ? x : (x != x ? x : zero);
    case U::kSigmoid: return one / (one + std::exp(-x));
    case U::kTanh: return std::tanh(x);
    case U::kAbs: return std::fabs(x);
    case U::kNeg: return -x;
    case U::kFloor: return std::floor(x);
    case U::kCeil: return std::ceil(x);
    case U::kReciprocal: return one / x;
    case U::kErf: return std::erf(x);
    case U::kSign: return x > zero ? one : x < zero ? -one : x;  // zeros and NaN map to themselves
    case U::kElu: return x > zero ? x : alpha * (std::exp(x) - one);
    case U::kSelu: return x > zero ? beta * x : beta * (alpha * std::exp(x) - alpha);
    case U::kLeakyRelu: return x >= zero ? x : alpha * x;
    case U::kHardSigmoid: return std::max(zero, std::min(one, alpha * x + beta));
    case U::kHardSwish: return x * std::max(zero, std::min(one, x / A(6) + A(0.5)));
    case U::kSoftplus: return std::log(std::exp(x) + one);  // the reference's form: inf for large x
    case U::kSwish: return x * (one / (one + std::exp(-alpha * x)));
  }
  return x;
}

class TypedUnaryKernel final : public Kernel {
 public:
  explicit TypedUnaryKernel(const KernelInit& init) {
    const std::string& name = init.node->op;
    const UnaryDef* def = nullptr;
    for (const UnaryDef& d : kUnary)
      if (name == d.name) def = &d;
    MOPT_CHECK(def, ErrorCode::kInternal, "no typed unary kernel for ", name);
    op_ = def->op;
    alpha_ = init.attrs.get_float(op_ == U::kShrink ? "lambd" : "alpha", def->alpha);
    beta_ = init.attrs.get_float(op_ == U::kShrink ? "bias" : op_ == U::kSelu ? "gamma" : "beta", def->beta);
    impl = "unary_typed";
  }
  void run(KernelContext& ctx) override {
    const Tensor& x = ctx.in(0);
    Tensor& y = ctx.output(0, x.shape);
    typed::dispatch(x.dtype, "this op", [&](auto tag) {
      using T = typename decltype(tag)::type;
      if constexpr (!is_float_v<T>) {
        fail(ErrorCode::kUnsupported, "no native kernel for ", dtype_name(x.dtype), " inputs");
      } else {
        using A = Arith<T>;
        const T* xp = x.ptr<T>();
        T* yp = y.ptr<T>();
        const A al = static_cast<A>(alpha_), be = static_cast<A>(beta_);
        const U op = op_;
        ctx.pool().parallel_for(x.numel(), 16384, [&](int64_t b, int64_t e) {
          for (int64_t i = b; i < e; ++i) yp[i] = store<T>(unary_apply<A>(op, load(xp[i]), al, be));
        });
      }
    });
  }

 private:
  U op_;
  double alpha_, beta_;
};

// BitwiseNot of the integer types.
class BitwiseNotKernel final : public Kernel {
 public:
  explicit BitwiseNotKernel(const KernelInit&) { impl = "bitwise_not"; }
  void run(KernelContext& ctx) override {
    const Tensor& x = ctx.in(0);
    Tensor& y = ctx.output(0, x.shape);
    typed::dispatch(x.dtype, "BitwiseNot", [&](auto tag) {
      using T = typename decltype(tag)::type;
      if constexpr (!std::is_integral_v<T> || std::is_same_v<T, bool>) {
        fail(ErrorCode::kUnsupported, "BitwiseNot needs an integer type, got ", dtype_name(x.dtype));
      } else {
        const T* xp = x.ptr<T>();
        T* yp = y.ptr<T>();
        ctx.pool().parallel_for(x.numel(), 65536, [&](int64_t b, int64_t e) {
          for (int64_t i = b; i < e; ++i) yp[i] = static_cast<T>(~xp[i]);
        });
      }
    });
  }
};

// ---- binary -------------------------------------------------------------------------------------------

enum class B { kAdd, kSub, kMul, kDiv, kMax, kMin, kMod, kFmod, kShl, kShr, kAnd, kOr, kXor, kPRelu };

template <class T>
using Wide = std::conditional_t<std::is_signed_v<T>, int64_t, uint64_t>;

// One element of a op b; A is the arithmetic type (float for float16).
template <class T, class A>
A binary_apply(B op, A a, A b) {
  if constexpr (std::is_floating_point_v<A>) {
    switch (op) {
      case B::kAdd: return a + b;
      case B::kSub: return a - b;
      case B::kMul: return a * b;
      case B::kDiv: return a / b;
      case B::kMax: return a != a ? a : (a > b ? a : b);  // NaN in either propagates
      case B::kMin: return a != a ? a : (a < b ? a : b);
      case B::kFmod: return std::fmod(a, b);
      case B::kMod: {  // numpy.mod: the sign of the divisor
        A r = std::fmod(a, b);
        if (r != 0 && ((r < 0) != (b < 0))) r += b;
        return r;
      }
      case B::kPRelu: return a < 0 ? a * b : a;
      default: fail(ErrorCode::kUnsupported, "bitwise operations need integer types");
    }
  } else if constexpr (std::is_same_v<A, bool>) {
    fail(ErrorCode::kUnsupported, "arithmetic on bool has no native kernel");
  } else {
    using UW = uint64_t;  // +, -, * wrap: computed modulo 2^64, then narrowed (modulo 2^bits)
    constexpr int bits = sizeof(A) * 8;
    switch (op) {
      case B::kAdd: return static_cast<A>(static_cast<UW>(a) + static_cast<UW>(b));
      case B::kSub: return static_cast<A>(static_cast<UW>(a) - static_cast<UW>(b));
      case B::kMul: return static_cast<A>(static_cast<UW>(a) * static_cast<UW>(b));
      case B::kDiv:
        MOPT_ENSURE(b != 0, "integer division by zero");
        if constexpr (std::is_signed_v<A>) {
          if (b == -1) return static_cast<A>(UW(0) - static_cast<UW>(a));  // MIN / -1 wraps to MIN
        }
        return static_cast<A>(a / b);
      case B::kMax: return a > b ? a : b;
      case B::kMin: return a < b ? a : b;
      case B::kMod:
      case B::kFmod: {
        MOPT_ENSURE(b != 0, "integer modulo by zero");
        if constexpr (std::is_signed_v<A>) {
          if (b == -1) return 0;
          A r = static_cast<A>(a % b);  // C++: the sign of the dividend (fmod)
          if (op == B::kMod && r != 0 && ((r < 0) != (b < 0))) r = static_cast<A>(r + b);
          return r;
        } else {
          return static_cast<A>(a % b);
        }
      }
      // shift counts outside [0, bits) leave only the sign fill: -1 (right shift of a negative), else 0
      case B::kShl: return static_cast<UW>(b) >= bits ? A(0) : static_cast<A>(static_cast<UW>(a) << b);
      case B::kShr:
        if (static_cast<UW>(b) >= bits) return a < A(0) ? static_cast<A>(-1) : A(0);
        return static_cast<A>(a >> b);  // arithmetic for signed types
      case B::kAnd: return static_cast<A>(a & b);
      case B::kOr: return static_cast<A>(a | b);
      case B::kXor: return static_cast<A>(a ^ b);
      case B::kPRelu: return a < A(0) ? static_cast<A>(static_cast<UW>(a) * static_cast<UW>(b)) : a;
    }
  }
  return a;
}

// y = a op b with broadcasting; y may be a itself when a has y's shape.
void binary_typed(B op, const Tensor& a, const Tensor& b, Tensor& y, ThreadPool& pool) {
  MOPT_ENSURE(a.dtype == b.dtype, "operand types differ: ", dtype_name(a.dtype), " and ", dtype_name(b.dtype));
  Broadcast bc = make_broadcast(a.shape, b.shape);
  if (shape_numel(bc.out) == 0) return;
  typed::dispatch(a.dtype, "this op", [&](auto tag) {
    using T = typename decltype(tag)::type;
    using A = Arith<T>;
    const T* ap = a.ptr<T>();
    const T* bp = b.ptr<T>();
    T* yp = y.ptr<T>();
    for_each_run(bc, pool, [&](int64_t oa, int64_t ob, int64_t oo, int64_t n, int mode) {
      const int64_t sa = (mode == 1 || mode == 3) ? 0 : 1, sb = (mode == 2 || mode == 3) ? 0 : 1;
      for (int64_t i = 0; i < n; ++i)
        yp[oo + i] = store<T>(binary_apply<T, A>(op, load(ap[oa + i * sa]), load(bp[ob + i * sb])));
    });
  });
}

B binary_op_of(const KernelInit& init) {
  const std::string& n = init.node->op;
  if (n == "Add" || n == "Sum" || n == "Mean") return B::kAdd;
  if (n == "Sub") return B::kSub;
  if (n == "Mul") return B::kMul;
  if (n == "Div") return B::kDiv;
  if (n == "Max") return B::kMax;
  if (n == "Min") return B::kMin;
  if (n == "Mod") return init.attrs.get_int("fmod", 0) ? B::kFmod : B::kMod;
  if (n == "BitShift") {
    const std::string dir = init.attrs.get_string("direction", "");
    MOPT_CHECK(dir == "LEFT" || dir == "RIGHT", ErrorCode::kInvalidModel, "BitShift direction must be LEFT or RIGHT, got '",
               dir, "'");
    return dir == "LEFT" ? B::kShl : B::kShr;
  }
  if (n == "BitwiseAnd") return B::kAnd;
  if (n == "BitwiseOr") return B::kOr;
  if (n == "BitwiseXor") return B::kXor;
  if (n == "PRelu") return B::kPRelu;
  fail(ErrorCode::kInternal, "no typed binary kernel for ", n);
}

class TypedBinaryKernel final : public Kernel {
 public:
  explicit TypedBinaryKernel(const KernelInit& init) : op_(binary_op_of(init)) { impl = "binary_typed"; }
  void run(KernelContext& ctx) override {
    const Tensor& a = ctx.in(0);
    const Tensor& b = ctx.in(1);
    Tensor& y = ctx.output(0, broadcast_or_fail(a.shape, b.shape));
    binary_typed(op_, a, b, y, ctx.pool());
  }

 private:
  B op_;
};

// Sum / Max / Min / Mean over any number of inputs: the first input broadcast into the output, then
// each further input combined into it in place.
class TypedVariadicKernel final : public Kernel {
 public:
  explicit TypedVariadicKernel(const KernelInit& init) : op_(binary_op_of(init)), mean_(init.node->op == "Mean") {
    impl = "variadic_typed";
  }
  void run(KernelContext& ctx) override {
    const int n = ctx.num_inputs();
    const Shape out = broadcast_inputs(ctx);
    const Tensor& x0 = ctx.in(0);
    for (int i = 1; i < n; ++i)
      MOPT_ENSURE(ctx.in(i).dtype == x0.dtype, "input ", i, " is ", dtype_name(ctx.in(i).dtype), ", input 0 is ",
                  dtype_name(x0.dtype));
    Tensor& y = ctx.output(0, out);
    if (y.numel() == 0) return;
    Broadcast bc = make_broadcast(x0.shape, out);
    const size_t es = dtype_size(x0.dtype);
    const char* s = static_cast<const char*>(x0.data);
    char* d = static_cast<char*>(y.data);
    for_each_run(bc, ctx.pool(), [&](int64_t oa, int64_t, int64_t oo, int64_t len, int mode) {
      const int64_t sa = (mode == 1 || mode == 3) ? 0 : 1;
      for (int64_t i = 0; i < len; ++i) std::memcpy(d + (oo + i) * es, s + (oa + i * sa) * es, es);
    });
    for (int i = 1; i < n; ++i) binary_typed(op_, y, ctx.in(i), y, ctx.pool());
    if (mean_) {
      typed::dispatch(y.dtype, "Mean", [&](auto tag) {
        using T = typename decltype(tag)::type;
        if constexpr (!is_float_v<T>) {
          fail(ErrorCode::kUnsupported, "Mean needs a floating-point type, got ", dtype_name(y.dtype));
        } else {
          T* p = y.ptr<T>();
          for (int64_t i = 0; i < y.numel(); ++i) p[i] = store<T>(load(p[i]) / static_cast<Arith<T>>(n));
        }
      });
    }
  }

 private:
  B op_;
  bool mean_;
};

}  // namespace

std::unique_ptr<Kernel> make_typed_unary(const KernelInit& init) { return std::make_unique<TypedUnaryKernel>(init); }
std::unique_ptr<Kernel> make_typed_binary(const KernelInit& init) { return std::make_unique<TypedBinaryKernel>(init); }
std::unique_ptr<Kernel> make_bitwise_not(const KernelInit& init) { return std::make_unique<BitwiseNotKernel>(init); }
std::unique_ptr<Kernel> make_typed_variadic(const KernelInit& init) {
  return std::make_unique<TypedVariadicKernel>(init);
}

void register_math_ops(OpRegistry& r) {
  using D = DType;
  const std::vector<DType> floats = {D::kF32, D::kF64, D::kF16, D::kBF16};
  const std::vector<DType> ints = {D::kI8, D::kI16, D::kI32, D::kI64, D::kU8, D::kU16, D::kU32, D::kU64};
  std::vector<DType> num = floats;
  num.insert(num.end(), ints.begin(), ints.end());
  for (const char* op : {"Sin", "Cos", "Tan", "Asin", "Acos", "Atan", "Sinh", "Cosh", "Asinh", "Acosh", "Atanh",
                         "Round", "Softsign", "Celu", "ThresholdedRelu", "Mish", "Shrink", "Swish"})
    r.add({"", op, floats, &make_typed_unary});
  r.add({"", "Mod", num, &make_typed_binary});
  r.add({"", "BitShift", ints, &make_typed_binary});  // signed types: opset 28
  for (const char* op : {"BitwiseAnd", "BitwiseOr", "BitwiseXor"}) r.add({"", op, ints, &make_typed_binary});
  r.add({"", "BitwiseNot", ints, &make_bitwise_not});
  r.add({"", "PRelu", num, &make_typed_binary});
}

}  // namespace mopt

// ---- MatMul, Softmax, LogSoftmax of the types beyond float32 --------------------------------------------
// numpy.matmul semantics (1-D operands promoted and the added axis dropped, batch dimensions
// broadcast); products accumulate in double. Softmax and LogSoftmax (opset 13: one axis) in double.
namespace mopt {
namespace {

class TypedMatMulKernel final : public Kernel {
 public:
  explicit TypedMatMulKernel(const KernelInit&) { impl = "matmul_typed"; }
  void run(KernelContext& ctx) override {
    const Tensor& a = ctx.in(0);
    const Tensor& b = ctx.in(1);
    MOPT_ENSURE(a.dtype == b.dtype, "operand types differ: ", dtype_name(a.dtype), " and ", dtype_name(b.dtype));
    const MatMulShape ms = matmul_shape(a.shape, b.shape);
    const int64_t M = ms.M, K = ms.K, N = ms.N;
    const Shape &ab = ms.a_batch, &bb = ms.b_batch, &batch = ms.batch;
    Tensor& y = ctx.output(0, ms.out);
    const int64_t nb = shape_numel(batch);
    // batch offsets of each operand (0 stride where it broadcasts)
    auto offsets = [&](const Shape& s) {
      std::vector<int64_t> off(static_cast<size_t>(nb));
      const size_t lead = batch.size() - s.size();
      const std::vector<int64_t> cs = contiguous_strides(s);
      std::vector<int64_t> pos(batch.size(), 0);
      for (int64_t i = 0; i < nb; ++i) {
        int64_t o = 0;
        for (size_t d = 0; d < s.size(); ++d) o += (s[d] == 1 ? 0 : pos[lead + d]) * cs[d];
        off[i] = o;
        for (int64_t d = static_cast<int64_t>(batch.size()) - 1; d >= 0; --d) {
          if (++pos[d] < batch[d]) break;
          pos[d] = 0;
        }
      }
      return off;
    };
    const std::vector<int64_t> oa = offsets(ab), ob = offsets(bb);
    typed::dispatch(a.dtype, "MatMul", [&](auto tag) {
      using T = typename decltype(tag)::type;
      if constexpr (!is_float_v<T>) {
        fail(ErrorCode::kUnsupported, "MatMul of ", dtype_name(a.dtype), " has no native kernel");
      } else {
        const T* ap = a.ptr<T>();
        const T* bp = b.ptr<T>();
        T* yp = y.ptr<T>();
        // float16/bfloat16 accumulate in float32, in k order (numpy's and ONNX Runtime's choice);
        // float64 in double
        using Acc = Arith<T>;
        ctx.pool().parallel_for(nb * M, 1, [&](int64_t lo, int64_t hi) {
          std::vector<Acc> row(static_cast<size_t>(N));
          for (int64_t t = lo; t < hi; ++t) {
            const int64_t i = t / M, m = t % M;
            const T* ar = ap + oa[i] * M * K + m * K;
            const T* bm = bp + ob[i] * K * N;
            std::fill(row.begin(), row.end(), Acc(0));
            for (int64_t k = 0; k < K; ++k) {
              const Acc av = load(ar[k]);
              for (int64_t n = 0; n < N; ++n) row[n] += av * load(bm[k * N + n]);
            }
            for (int64_t n = 0; n < N; ++n) yp[t * N + n] = store<T>(row[n]);
          }
        });
      }
    });
  }
};

class TypedSoftmaxKernel final : public Kernel {
 public:
  explicit TypedSoftmaxKernel(const KernelInit& init)
      : axis_(init.attrs.get_int("axis", -1)), log_(init.node->op == "LogSoftmax") {
    impl = log_ ? "log_softmax_typed" : "softmax_typed";
  }
  void run(KernelContext& ctx) override {
    const Tensor& x = ctx.in(0);
    Tensor& y = ctx.output(0, x.shape);
    if (x.numel() == 0) return;
    const typed::AxisSplit as = typed::split_at(x.shape, normalize_axis(axis_, std::max<int64_t>(x.rank(), 1)));
    typed::dispatch(x.dtype, "Softmax", [&](auto tag) {
      using T = typename decltype(tag)::type;
      if constexpr (!is_float_v<T>) {
        fail(ErrorCode::kUnsupported, "Softmax of ", dtype_name(x.dtype), " has no native kernel");
      } else {
        const T* xp = x.ptr<T>();
        T* yp = y.ptr<T>();
        const int64_t dim = as.dim, inner = as.inner;
        // rows in parallel, each with its own buffers: the values, and (float16/bfloat16) their
        // rounded exponentials, computed once for the sum and the quotient
        ctx.pool().parallel_for(as.outer * as.inner, std::max<int64_t>(1, 4096 / std::max<int64_t>(dim, 1)),
                                [&](int64_t t0, int64_t t1) {
         std::vector<double> v(static_cast<size_t>(dim)), e(static_cast<size_t>(dim));
         for (int64_t t = t0; t < t1; ++t) {
          const int64_t base = (t / inner) * dim * inner + t % inner;
          double m = -std::numeric_limits<double>::infinity(), s = 0;
          for (int64_t j = 0; j < dim; ++j) {
            v[j] = static_cast<double>(load(xp[base + j * inner]));
            m = std::max(m, v[j]);
          }
          if constexpr (std::is_same_v<Arith<T>, float> && !std::is_same_v<T, float>) {
            // float16/bfloat16: each step rounded to the type, as the op's definition reads when
            // evaluated in it (x - max, exp, the sum, the quotient)
            auto r = [](double u) { return static_cast<double>(load(store<T>(u))); };
            for (int64_t j = 0; j < dim; ++j) {
              v[j] = r(v[j] - m);
              e[j] = log_ ? std::exp(v[j]) : r(std::exp(v[j]));
              s += e[j];
            }
            s = r(s);
            for (int64_t j = 0; j < dim; ++j) yp[base + j * inner] = store<T>(log_ ? v[j] - r(std::log(s)) : e[j] / s);
            continue;
          }
          for (int64_t j = 0; j < dim; ++j) s += std::exp(v[j] - m);
          for (int64_t j = 0; j < dim; ++j)
            yp[base + j * inner] = store<T>(log_ ? v[j] - m - std::log(s) : std::exp(v[j] - m) / s);
         }
        });
      }
    });
  }

 private:
  int64_t axis_;
  bool log_;
};

}  // namespace

std::unique_ptr<Kernel> make_typed_matmul(const KernelInit& init) { return std::make_unique<TypedMatMulKernel>(init); }
std::unique_ptr<Kernel> make_typed_softmax(const KernelInit& init) { return std::make_unique<TypedSoftmaxKernel>(init); }

}  // namespace mopt
