// NegativeLogLikelihoodLoss, SoftmaxCrossEntropyLoss and RMSNormalization in plain C++ (float32,
// float64, float16; arithmetic in double), except RMSNormalization on float32 with a per-row Scale,
// which runs the ISA's SIMD rows. Targets are checked against the class count unless they are the
// ignore_index; "mean" divides by the summed weights of the targets that count, as the spec says.
#include <limits>

#include "kernels/ops/typed.h"

namespace mopt {
namespace {

using typed::is_float_v;
using typed::load;
using typed::store;

// ---- losses -------------------------------------------------------------------------------------------

class LossKernel final : public Kernel {
 public:
  LossKernel(const KernelInit& init, bool softmax) : softmax_(softmax) {
    const std::string r = init.attrs.get_string("reduction", "mean");
    MOPT_CHECK(r == "none" || r == "sum" || r == "mean", ErrorCode::kInvalidModel, "reduction '", r,
               "' is not one of none, sum, mean");
    reduction_ = r == "none" ? 0 : r == "sum" ? 1 : 2;
    has_ignore_ = init.attrs.has("ignore_index");
    ignore_ = init.attrs.get_int("ignore_index", 0);
    impl = softmax ? "softmax_cross_entropy" : "nll_loss";
  }
  void run(KernelContext& ctx) override {
    const Tensor& x = ctx.in(0);
    const Tensor& t = ctx.in(1);
    const Tensor* w = ctx.input(2);
    MOPT_ENSURE(x.rank() >= 2, "input must be (N, C, d1, ..., dk), got shape ", shape_str(x.shape));
    MOPT_ENSURE(t.dtype == DType::kI64 || t.dtype == DType::kI32, "target must be int32 or int64, got ",
                dtype_name(t.dtype));
    const int64_t N = x.shape[0], C = x.shape[1], D = N ? x.numel() / std::max<int64_t>(1, N * C) : 0;
    Shape tshape = {N};
    tshape.insert(tshape.end(), x.shape.begin() + 2, x.shape.end());
    MOPT_ENSURE(t.shape == tshape, "target ", shape_str(t.shape), " must have shape ", shape_str(tshape),
                " for input ", shape_str(x.shape));
    if (w) {
      MOPT_ENSURE(w->rank() == 1 && w->shape[0] == C, "weight must have shape [", C, "], got ", shape_str(w->shape));
      MOPT_ENSURE(w->dtype == x.dtype, "weight is ", dtype_name(w->dtype), ", input is ", dtype_name(x.dtype));
    }
    const int64_t n = N * D;
    std::vector<int64_t> cls(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) {
      const int64_t c = typed::index_at(t, i);
      MOPT_ENSURE((has_ignore_ && c == ignore_) || (c >= 0 && c < C), "target value ", c, " is out of range [0, ", C,
                  ")", has_ignore_ ? " and is not the ignore_index" : "");
      cls[i] = (has_ignore_ && c == ignore_) ? -1 : c;
    }
    typed::dispatch(x.dtype, softmax_ ? "SoftmaxCrossEntropyLoss" : "NegativeLogLikelihoodLoss", [&](auto tag) {
      using T = typename decltype(tag)::type;
      if constexpr (!is_float_v<T>) {
        fail(ErrorCode::kUnsupported, "no native kernel for ", dtype_name(x.dtype), " inputs");
      } else {
        const T* xp = x.ptr<T>();
        // log-probabilities (softmax) or the input itself, as doubles, laid out as x
        std::vector<double> lp(static_cast<size_t>(x.numel()));
        for (int64_t i = 0; i < x.numel(); ++i) lp[i] = static_cast<double>(load(xp[i]));
        if (softmax_) {
          for (int64_t b = 0; b < N; ++b)
            for (int64_t d = 0; d < D; ++d) {
              double* row = lp.data() + b * C * D + d;
              double m = -std::numeric_limits<double>::infinity(), s = 0;
              for (int64_t c = 0; c < C; ++c) m = std::max(m, row[c * D]);
              for (int64_t c = 0; c < C; ++c) s += std::exp(row[c * D] - m);
              const double ls = std::log(s) + m;
              for (int64_t c = 0; c < C; ++c) row[c * D] -= ls;
            }
          if (ctx.num_outputs() > 1 && ctx.output_used(1)) {
            Tensor& lpo = ctx.output(1, x.shape);
            T* op = lpo.ptr<T>();
            for (int64_t i = 0; i < x.numel(); ++i) op[i] = store<T>(lp[i]);
          }
        }
        std::vector<double> loss(static_cast<size_t>(n));
        double wsum = 0, lsum = 0;
        for (int64_t i = 0; i < n; ++i) {
          const int64_t c = cls[i];
          if (c < 0) {
            loss[i] = 0;
            continue;
          }
          const double wt = w ? static_cast<double>(load(w->ptr<T>()[c])) : 1.0;
          const int64_t b = i / std::max<int64_t>(D, 1), d = i % std::max<int64_t>(D, 1);
          loss[i] = -lp[(b * C + c) * D + d] * wt;
          wsum += wt;
          lsum += loss[i];
        }
        if (reduction_ == 0) {
          Tensor& y = ctx.output(0, tshape);
          T* yp = y.ptr<T>();
          for (int64_t i = 0; i < n; ++i) yp[i] = store<T>(loss[i]);
        } else {
          Tensor& y = ctx.output(0, {});
          *y.ptr<T>() = store<T>(reduction_ == 1 ? lsum : lsum / wsum);
        }
      }
    });
  }

 private:
  bool softmax_, has_ignore_;
  int reduction_;
  int64_t ignore_;
};

// ---- RMSNormalization ---------------------------------------------------------------------------------

// Y = X / sqrt(mean(X^2 over the axes from `axis` on) + epsilon) * Scale, Scale broadcast to X.
class RMSNormKernel final : public Kernel {
 public:
  explicit RMSNormKernel(const KernelInit& init) {
    axis_ = init.attrs.get_int("axis", -1);
    eps_ = init.attrs.get_float("epsilon", 1e-5);
    MOPT_CHECK(init.attrs.get_int("stash_type", 1) == 1, ErrorCode::kUnsupported, "stash_type other than float32");
    row_ = init.fn<cpu::RMSNormF32Fn>("rmsnorm_f32", &impl);
    impl += ",rms_norm";  // the float32 rows; any other type or Scale broadcast in double
  }
  void run(KernelContext& ctx) override {
    const Tensor& x = ctx.in(0);
    const Tensor& s = ctx.in(1);
    MOPT_ENSURE(x.rank() >= 1, "X must have rank >= 1, got a scalar");
    MOPT_ENSURE(s.dtype == x.dtype, "Scale is ", dtype_name(s.dtype), ", X is ", dtype_name(x.dtype));
    const int64_t a = normalize_axis(axis_, x.rank());
    Shape full;
    MOPT_ENSURE(broadcast_shapes(x.shape, s.shape, &full) && full == x.shape, "Scale ", shape_str(s.shape),
                " does not broadcast to X ", shape_str(x.shape));
    int64_t rows = 1, len = 1;
    for (int64_t d = 0; d < a; ++d) rows *= x.shape[d];
    for (int64_t d = a; d < x.rank(); ++d) len *= x.shape[d];
    Tensor& y = ctx.output(0, x.shape);
    if (x.dtype == DType::kF32 && scale_is_per_row(s, x, a, len)) {
      run_f32(ctx, x, s, y, rows, len);
      return;
    }
    // Scale's element for every element of X, by its broadcast strides
    const std::vector<int64_t> cs = contiguous_strides(s.shape);
    std::vector<int64_t> bs(static_cast<size_t>(x.rank()), 0);
    for (size_t i = 0; i < s.shape.size(); ++i)
      bs[x.rank() - s.rank() + static_cast<int64_t>(i)] = s.shape[i] == 1 ? 0 : cs[i];
    typed::dispatch(x.dtype, "RMSNormalization", [&](auto tag) {
      using T = typename decltype(tag)::type;
      if constexpr (!is_float_v<T>) {
        fail(ErrorCode::kUnsupported, "no native kernel for ", dtype_name(x.dtype), " inputs");
      } else {
        const T* xp = x.ptr<T>();
        const T* sp = s.ptr<T>();
        T* yp = y.ptr<T>();
        std::vector<int64_t> pos(static_cast<size_t>(x.rank()), 0);
        for (int64_t r = 0; r < rows; ++r) {
          double ss = 0;
          for (int64_t i = 0; i < len; ++i) {
            const double v = static_cast<double>(load(xp[r * len + i]));
            ss += v * v;
          }
          const double inv = 1.0 / std::sqrt(ss / static_cast<double>(std::max<int64_t>(len, 1)) + eps_);
          for (int64_t i = 0; i < len; ++i) {
            int64_t so = 0;
            for (int64_t d = 0; d < x.rank(); ++d) so += pos[d] * bs[d];
            yp[r * len + i] = store<T>(static_cast<double>(load(xp[r * len + i])) * inv * static_cast<double>(load(sp[so])));
            for (int64_t d = x.rank() - 1; d >= 0; --d) {
              if (++pos[d] < x.shape[d]) break;
              pos[d] = 0;
            }
          }
        }
      }
    });
  }

 private:
  // Scale is one value, or varies over the normalised axes only (leading axes of size 1): the same
  // `len` values for every row.
  static bool scale_is_per_row(const Tensor& s, const Tensor& x, int64_t a, int64_t len) {
    if (s.numel() == 1) return true;
    if (s.numel() != len || s.rank() > x.rank()) return false;
    for (int64_t d = 0; d < s.rank(); ++d) {
      const int64_t xd = x.rank() - s.rank() + d;
      if (xd < a ? s.shape[d] != 1 : s.shape[d] != x.shape[xd]) return false;
    }
    return true;
  }

  // float32 with a per-row Scale: one SIMD row function per row, rows split over the threads
  void run_f32(KernelContext& ctx, const Tensor& x, const Tensor& s, Tensor& y, int64_t rows, int64_t len) {
    if (rows == 0 || len == 0) return;
    const float* sp = s.ptr<float>();
    if (s.numel() == 1 && len != 1) {  // spread once, so the row loop reads full vectors
      float* spread = static_cast<float*>(ctx.scratch(static_cast<size_t>(len) * sizeof(float)));
      std::fill(spread, spread + len, sp[0]);
      sp = spread;
    }
    const float* xp = x.ptr<float>();
    float* yp = y.ptr<float>();
    const float eps = static_cast<float>(eps_);
    ctx.pool().parallel_for(rows, std::max<int64_t>(1, 16384 / len), [&](int64_t b, int64_t e) {
      for (int64_t r = b; r < e; ++r) row_(xp + r * len, yp + r * len, len, sp, eps);
    });
  }

  cpu::RMSNormF32Fn row_ = nullptr;
  int64_t axis_;
  double eps_;
};

std::unique_ptr<Kernel> make_nll(const KernelInit& i) { return std::make_unique<LossKernel>(i, false); }
std::unique_ptr<Kernel> make_sce(const KernelInit& i) { return std::make_unique<LossKernel>(i, true); }
std::unique_ptr<Kernel> make_rms(const KernelInit& i) { return std::make_unique<RMSNormKernel>(i); }

}  // namespace

void register_loss_ops(OpRegistry& r) {
  const std::vector<DType> floats = {DType::kF32, DType::kF64, DType::kF16};
  r.add({"", "NegativeLogLikelihoodLoss", floats, &make_nll});
  r.add({"", "SoftmaxCrossEntropyLoss", floats, &make_sce});
  r.add({"", "RMSNormalization", floats, &make_rms});
  r.add({"com.mopt", "RMSNormalization", floats, &make_rms});  // fused from its decomposed form below opset 23
}

}  // namespace mopt
