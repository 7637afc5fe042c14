// GroupNormalization (opsets 18 and 21) in plain C++ for float32/64/16 and bfloat16: the channels of
// each sample split into num_groups groups, each normalised over its channels and spatial elements
// (statistics in double, two passes), then scaled and shifted. Opset 21 reads scale and bias per
// channel, opset 18 per group; the kernel tells them apart by their length (when C == num_groups the
// two readings agree). MeanVarianceNormalization (opset 13) too: (X - E[X]) / (sqrt(Var[X]) + 1e-9)
// over `axes`, the variance taken in two passes (the function body's E[X^2] - E[X]^2 can go
// negative and give NaN on nearly constant data).
#include <cmath>

#include "kernels/ops/typed.h"

namespace mopt {
namespace {

using typed::load;
using typed::store;

class GroupNormKernel final : public Kernel {
 public:
  explicit GroupNormKernel(const KernelInit& init) {
    groups_ = init.attrs.get_int("num_groups");
    MOPT_CHECK(groups_ >= 1, ErrorCode::kInvalidModel, "num_groups must be >= 1, got ", groups_);
    eps_ = init.attrs.get_float("epsilon", 1e-5);
    impl = "group_norm";
  }

  void run(KernelContext& ctx) override {
    const Tensor& x = ctx.in(0);
    const Tensor& scale = ctx.in(1);
    const Tensor& bias = ctx.in(2);
    MOPT_ENSURE(x.rank() >= 2, "X must be (N, C, ...), got ", shape_str(x.shape));
    const int64_t N = x.shape[0], C = x.shape[1], G = groups_;
    MOPT_ENSURE(C % G == 0, "num_groups (", G, ") does not divide the ", C, " channels of X ", shape_str(x.shape));
    MOPT_ENSURE(scale.numel() == bias.numel() && scale.rank() == 1 && bias.rank() == 1 &&
                    (scale.numel() == C || scale.numel() == G),
                "scale ", shape_str(scale.shape), " and bias ", shape_str(bias.shape), " must both be (C) = (", C,
                ") or (num_groups) = (", G, ")");
    MOPT_ENSURE(scale.dtype == x.dtype && bias.dtype == x.dtype, "scale and bias must be ", dtype_name(x.dtype));
    Tensor& y = ctx.output(0, x.shape);
    if (y.numel() == 0) return;
    const int64_t inner = x.numel() / (N * C), per_group = C / G, len = per_group * inner;
    const bool per_channel = scale.numel() == C;
    typed::dispatch(x.dtype, "GroupNormalization", [&](auto tag) {
      using T = typename decltype(tag)::type;
      if constexpr (!typed::is_float_v<T>) {
        fail(ErrorCode::kUnsupported, "GroupNormalization of ", dtype_name(x.dtype), " has no native kernel");
      } else {
        const T* xp = x.ptr<T>();
        const T* sp = scale.ptr<T>();
        const T* bp = bias.ptr<T>();
        T* yp = y.ptr<T>();
        ctx.pool().parallel_for(N * G, std::max<int64_t>(1, 16384 / std::max<int64_t>(len, 1)), [&](int64_t b, int64_t e) {
          for (int64_t t = b; t < e; ++t) {
            const T* xg = xp + t * len;
            T* yg = yp + t * len;
            double mean = 0;
            for (int64_t i = 0; i < len; ++i) mean += static_cast<double>(load(xg[i]));
            mean /= static_cast<double>(len);
            double var = 0;
            for (int64_t i = 0; i < len; ++i) {
              const double d = static_cast<double>(load(xg[i])) - mean;
              var += d * d;
            }
            const double inv = 1.0 / std::sqrt(var / static_cast<double>(len) + eps_);
            const int64_t g = t % G;
            for (int64_t c = 0; c < per_group; ++c) {
              const int64_t k = per_channel ? g * per_group + c : g;
              const double s = static_cast<double>(load(sp[k])) * inv, h = static_cast<double>(load(bp[k]));
              for (int64_t i = c * inner; i < (c + 1) * inner; ++i)
                yg[i] = store<T>((static_cast<double>(load(xg[i])) - mean) * s + h);
            }
          }
        });
      }
    });
  }

 private:
  int64_t groups_ = 1;
  double eps_ = 1e-5;
};

std::unique_ptr<Kernel> make_group_norm(const KernelInit& i) { return std::make_unique<GroupNormKernel>(i); }

class MeanVarianceNormKernel final : public Kernel {
 public:
  explicit MeanVarianceNormKernel(const KernelInit& init) {
    axes_ = init.attrs.get_ints("axes", {0, 2, 3});
    impl = "mean_variance_norm";
  }

  void run(KernelContext& ctx) override {
    const Tensor& x = ctx.in(0);
    const int64_t rank = x.rank();
    const std::vector<bool> red = reduced_axes(axes_, rank);
    Tensor& y = ctx.output(0, x.shape);
    if (y.numel() == 0) return;
    // each element's group: its coordinates along the kept axes, flattened
    Shape kept;
    for (int64_t d = 0; d < rank; ++d)
      if (!red[d]) kept.push_back(x.shape[d]);
    const int64_t groups = shape_numel(kept), n = x.numel(), per = n / groups;
    std::vector<int64_t> group_of(static_cast<size_t>(n));
    {
      std::vector<int64_t> idx(rank, 0);
      for (int64_t e = 0; e < n; ++e) {
        int64_t g = 0;
        for (int64_t d = 0; d < rank; ++d)
          if (!red[d]) g = g * x.shape[d] + idx[d];
        group_of[e] = g;
        for (int64_t d = rank - 1; d >= 0; --d) {
          if (++idx[d] < x.shape[d]) break;
          idx[d] = 0;
        }
      }
    }
    typed::dispatch(x.dtype, "MeanVarianceNormalization", [&](auto tag) {
      using T = typename decltype(tag)::type;
      if constexpr (!typed::is_float_v<T>) {
        fail(ErrorCode::kUnsupported, "MeanVarianceNormalization of ", dtype_name(x.dtype), " has no native kernel");
      } else {
        const T* xp = x.ptr<T>();
        T* yp = y.ptr<T>();
        std::vector<double> mean(static_cast<size_t>(groups), 0.0), var(static_cast<size_t>(groups), 0.0);
        for (int64_t e = 0; e < n; ++e) mean[group_of[e]] += static_cast<double>(load(xp[e]));
        for (double& m : mean) m /= static_cast<double>(per);
        for (int64_t e = 0; e < n; ++e) {
          const double d = static_cast<double>(load(xp[e])) - mean[group_of[e]];
          var[group_of[e]] += d * d;
        }
        for (double& v : var) v = 1.0 / (std::sqrt(v / static_cast<double>(per)) + 1e-9);
        for (int64_t e = 0; e < n; ++e) {
          const int64_t g = group_of[e];
          yp[e] = store<T>((static_cast<double>(load(xp[e])) - mean[g]) * var[g]);
        }
      }
    });
  }

 private:
  std::vector<int64_t> axes_;
};

std::unique_ptr<Kernel> make_mvn(const KernelInit& i) { return std::make_unique<MeanVarianceNormKernel>(i); }

}  // namespace

void register_group_norm_ops(OpRegistry& r) {
  r.add({"", "GroupNormalization", {DType::kF32, DType::kF64, DType::kF16, DType::kBF16}, &make_group_norm});
  r.add({"", "MeanVarianceNormalization", {DType::kF32, DType::kF64, DType::kF16, DType::kBF16}, &make_mvn});
}

}  // namespace mopt
