// The Reduce* family in plain C++ for every type the float32 kernels of data_ops.cc do not take:
// ReduceL1, L2, LogSum, LogSumExp, Prod, SumSquare of the float types, and ReduceSum/Mean/Max/Min/Prod
// of float64, float16, the integers (Sum/Prod/Max/Min; they wrap like numpy with dtype=x.dtype) and
// bool (Max/Min). Floats accumulate in double. Axes come from the `axes` attribute or input (opset 18).
#include <limits>

#include "kernels/ops/typed.h"

namespace mopt {
namespace {

using typed::Half;
using typed::is_float_v;
using typed::load;
using typed::store;

enum class R { kSum, kMean, kMax, kMin, kProd, kSumSquare, kL1, kL2, kLogSum, kLogSumExp };

R reduce_of(const std::string& op) {
  static const std::pair<const char*, R> names[] = {
      {"ReduceSum", R::kSum}, {"ReduceMean", R::kMean}, {"ReduceMax", R::kMax}, {"ReduceMin", R::kMin},
      {"ReduceProd", R::kProd}, {"ReduceSumSquare", R::kSumSquare}, {"ReduceL1", R::kL1}, {"ReduceL2", R::kL2},
      {"ReduceLogSum", R::kLogSum}, {"ReduceLogSumExp", R::kLogSumExp}};
  for (const auto& n : names)
    if (op == n.first) return n.second;
  fail(ErrorCode::kInternal, "no typed reduction for ", op);
}

// A float reduction of n values read by at(i), in double.
template <class F>
double reduce_float(R op, int64_t n, F&& at) {
  const double inf = std::numeric_limits<double>::infinity();
  switch (op) {
    case R::kMax:
    case R::kMin: {
      double acc = op == R::kMax ? -inf : inf;
      for (int64_t i = 0; i < n; ++i) {
        const double v = at(i);
        if (v != v) return v;  // NaN propagates, as numpy's maximum.reduce
        acc = op == R::kMax ? std::max(acc, v) : std::min(acc, v);
      }
      return acc;
    }
    case R::kProd: {
      double acc = 1;
      for (int64_t i = 0; i < n; ++i) acc *= at(i);
      return acc;
    }
    case R::kLogSumExp: {  // shifted by the largest finite value, as the reference does
      double m = -inf;
      for (int64_t i = 0; i < n; ++i) {
        const double v = at(i);
        if (!std::isinf(v) && (v > m || v != v)) m = v;
      }
      if (std::isinf(m)) m = 0;
      double s = 0;
      for (int64_t i = 0; i < n; ++i) s += std::exp(at(i) - m);
      return std::log(s) + m;
    }
    default: {
      double s = 0;
      for (int64_t i = 0; i < n; ++i) {
        const double v = at(i);
        s += op == R::kL1 ? std::fabs(v) : (op == R::kSumSquare || op == R::kL2) ? v * v : v;
      }
      if (op == R::kMean) return s / static_cast<double>(n);
      if (op == R::kL2) return std::sqrt(s);
      if (op == R::kLogSum) return std::log(s);
      return s;
    }
  }
}

class TypedReduceKernel final : public Kernel {
 public:
  explicit TypedReduceKernel(const KernelInit& init) : op_(reduce_of(init.node->op)), spec_(init.attrs) {
    impl = "reduce_typed";
  }
  void run(KernelContext& ctx) override {
    const Tensor& x = ctx.in(0);
    const int64_t r = x.rank();
    std::vector<bool> red;
    Shape out;
    if (!spec_.resolve(ctx, x, &red, &out)) return;
    std::vector<int64_t> kd, ks, rd, rs;  // kept / reduced dims and their element strides in x
    const std::vector<int64_t> cs = contiguous_strides(x.shape);
    for (int64_t d = 0; d < r; ++d) {
      (red[d] ? rd : kd).push_back(x.shape[d]);
      (red[d] ? rs : ks).push_back(cs[d]);
    }
    Tensor& y = ctx.output(0, out);
    const int64_t n_out = y.numel(), count = shape_numel(rd);
    if (n_out == 0) return;
    // offsets of the reduced elements relative to an output's base, computed once
    std::vector<int64_t> roff(static_cast<size_t>(count));
    {
      std::vector<int64_t> idx(rd.size(), 0);
      int64_t off = 0;
      for (int64_t i = 0; i < count; ++i) {
        roff[i] = off;
        for (int64_t d = static_cast<int64_t>(rd.size()) - 1; d >= 0; --d) {
          off += rs[d];
          if (++idx[d] < rd[d]) break;
          off -= rd[d] * rs[d];
          idx[d] = 0;
        }
      }
    }
    typed::dispatch(x.dtype, "this reduction", [&](auto tag) {
      using T = typename decltype(tag)::type;
      const T* xp = x.ptr<T>();
      T* yp = y.ptr<T>();
      ctx.pool().parallel_for(n_out, std::max<int64_t>(1, 16384 / std::max<int64_t>(count, 1)), [&](int64_t b, int64_t e) {
        for (int64_t o = b; o < e; ++o) {
          int64_t base = 0, rem = o;
          for (int64_t d = static_cast<int64_t>(kd.size()) - 1; d >= 0; --d) {
            base += (rem % kd[d]) * ks[d];
            rem /= kd[d];
          }
          const T* src = xp + base;
          yp[o] = one<T>(src, roff.data(), count);
        }
      });
    });
  }

 private:
  template <class T>
  T one(const T* src, const int64_t* roff, int64_t count) const {
    if constexpr (is_float_v<T>) {
      return store<T>(reduce_float(op_, count, [&](int64_t i) { return static_cast<double>(load(src[roff[i]])); }));
    } else if constexpr (std::is_same_v<T, bool>) {
      MOPT_ENSURE(op_ == R::kMax || op_ == R::kMin, "this reduction of bool has no native kernel");
      bool acc = op_ == R::kMin;  // empty: False for Max, True for Min
      for (int64_t i = 0; i < count; ++i) acc = op_ == R::kMax ? (acc || src[roff[i]]) : (acc && src[roff[i]]);
      return acc;
    } else {
      switch (op_) {
        case R::kMax:
        case R::kMin: {
          T acc = op_ == R::kMax ? std::numeric_limits<T>::lowest() : std::numeric_limits<T>::max();
          for (int64_t i = 0; i < count; ++i) acc = op_ == R::kMax ? std::max(acc, src[roff[i]]) : std::min(acc, src[roff[i]]);
          return acc;
        }
        case R::kSum:
        case R::kProd: {  // modulo 2^64, then narrowed: numpy's wrap-around in dtype=x.dtype
          uint64_t acc = op_ == R::kSum ? 0 : 1;
          for (int64_t i = 0; i < count; ++i) {
            const uint64_t v = static_cast<uint64_t>(src[roff[i]]);
            acc = op_ == R::kSum ? acc + v : acc * v;
          }
          return static_cast<T>(acc);
        }
        default: fail(ErrorCode::kUnsupported, "this reduction of integers has no native kernel");
      }
    }
  }

  R op_;
  ReduceSpec spec_;
};

}  // namespace

std::unique_ptr<Kernel> make_typed_reduce(const KernelInit& init) { return std::make_unique<TypedReduceKernel>(init); }

void register_reduce_ops(OpRegistry& r) {
  const std::vector<DType> floats = {DType::kF32, DType::kF64, DType::kF16, DType::kBF16};
  std::vector<DType> int_ok = floats;
  int_ok.insert(int_ok.end(), {DType::kI8, DType::kI16, DType::kI32, DType::kI64, DType::kU8, DType::kU16, DType::kU32,
                               DType::kU64});
  for (const char* op : {"ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare"})
    r.add({"", op, floats, &make_typed_reduce});
  r.add({"", "ReduceProd", int_ok, &make_typed_reduce});
}

}  // namespace mopt
