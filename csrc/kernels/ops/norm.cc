// BatchNormalization (inference form), LayerNormalization, and Softmax / LogSoftmax (opset >= 13: one axis).
#include <cmath>

#include "kernels/ops/common.h"
#include "kernels/ops/typed.h"

namespace mopt {
namespace {

class BatchNormKernel final : public Kernel {
 public:
  explicit BatchNormKernel(const KernelInit& init) {
    eps_ = static_cast<float>(init.attrs.get_float("epsilon", 1e-5));
    MOPT_CHECK(init.attrs.get_int("training_mode", 0) == 0, ErrorCode::kUnsupported,
               "BatchNormalization with training_mode=1 is not supported for inference");
    impl = "batchnorm_f32";
    act_ = activation_from_attrs(init.attrs);  // com.mopt.FusedBatchNormalization
    if (act_.op != cpu::UnaryOp::kIdentity) unary_ = init.fn<cpu::UnaryF32Fn>("unary_f32", &impl);
  }
  void run(KernelContext& ctx) override {
    const Tensor& x = ctx.in(0);
    MOPT_ENSURE(x.rank() >= 2, "X must have rank >= 2, got ", shape_str(x.shape));
    const int64_t N = x.shape[0], C = x.shape[1], inner = C ? x.numel() / std::max<int64_t>(1, N * C) : 0;
    const Tensor *sc = &ctx.in(1), *bi = &ctx.in(2), *mu = &ctx.in(3), *var = &ctx.in(4);
    for (const Tensor* t : {sc, bi, mu, var})
      MOPT_ENSURE(t->numel() == C && t->dtype == DType::kF32, "per-channel parameters must be ", C,
                  " float32 values, got ", shape_str(t->shape));
    Tensor& y = ctx.output(0, x.shape);
    float* scale = static_cast<float*>(ctx.scratch(2 * static_cast<size_t>(C) * sizeof(float)));
    float* shift = scale + C;
    for (int64_t c = 0; c < C; ++c) {
      scale[c] = sc->ptr<float>()[c] / std::sqrt(var->ptr<float>()[c] + eps_);
      shift[c] = bi->ptr<float>()[c] - mu->ptr<float>()[c] * scale[c];
    }
    const float* xp = x.ptr<float>();
    float* yp = y.ptr<float>();
    ctx.pool().parallel_for(N * C, std::max<int64_t>(1, 8192 / std::max<int64_t>(inner, 1)), [&](int64_t b, int64_t e) {
      for (int64_t t = b; t < e; ++t) {
        const float s = scale[t % C], h = shift[t % C];
        const float* xr = xp + t * inner;
        float* yr = yp + t * inner;
        for (int64_t i = 0; i < inner; ++i) yr[i] = xr[i] * s + h;
        if (unary_) unary_(yr, yr, inner, act_);  // while the row is in cache
      }
    });
  }

 private:
  float eps_;
  cpu::UnaryParams act_;
  cpu::UnaryF32Fn unary_ = nullptr;
};

std::unique_ptr<Kernel> make_batchnorm(const KernelInit& init) { return std::make_unique<BatchNormKernel>(init); }

// LayerNormalization (opset 17): each row of the trailing axes from `axis` on is normalised over
// its mean and variance (two passes, the second correcting the mean, so large offsets lose little), then scaled and
// shifted by Scale and B broadcast over those axes. Mean and InvStdDev outputs when read.
class LayerNormKernel final : public Kernel {
 public:
  explicit LayerNormKernel(const KernelInit& init) {
    axis_ = init.attrs.get_int("axis", -1);
    eps_ = init.attrs.get_float("epsilon", 1e-5);
    MOPT_CHECK(init.attrs.get_int("stash_type", 1) == 1, ErrorCode::kUnsupported, "stash_type other than float32");
    row_ = init.fn<cpu::LayerNormF32Fn>("layernorm_f32", &impl);
  }
  void run(KernelContext& ctx) override {
    const Tensor& x = ctx.in(0);
    const int64_t r = x.rank();
    MOPT_ENSURE(r >= 1, "X must have rank >= 1");
    const int64_t axis = normalize_axis(axis_, r);
    int64_t rows = 1, cols = 1;
    for (int64_t d = 0; d < r; ++d) (d < axis ? rows : cols) *= x.shape[d];
    const Tensor& scale = ctx.in(1);
    const Tensor* bias = ctx.input(2);
    if (bias && bias->numel() == 0) bias = nullptr;
    auto per_row = [&](const Tensor& t, const char* what) {
      MOPT_ENSURE(t.dtype == DType::kF32, what, " must be float32");
      MOPT_ENSURE(t.numel() == cols || t.numel() == 1, what, " has shape ", shape_str(t.shape), "; expected the normalised axes of ",
                  shape_str(x.shape), " from axis ", axis);
    };
    per_row(scale, "Scale");
    if (bias) per_row(*bias, "B");
    Tensor& y = ctx.output(0, x.shape);
    Shape stat_shape = x.shape;
    for (int64_t d = axis; d < r; ++d) stat_shape[d] = 1;
    float* mean_out = ctx.num_outputs() > 1 && ctx.output_used(1) ? ctx.output(1, stat_shape).ptr<float>() : nullptr;
    float* inv_out = ctx.num_outputs() > 2 && ctx.output_used(2) ? ctx.output(2, stat_shape).ptr<float>() : nullptr;
    const float* xp = x.ptr<float>();
    float* yp = y.ptr<float>();
    const float* sp = scale.ptr<float>();
    const float* bp = bias ? bias->ptr<float>() : nullptr;
    // Scalar Scale / B are spread over the row once, so the row loop reads full vectors.
    const bool s1 = scale.numel() == 1 && cols != 1, b1 = bias && bias->numel() == 1 && cols != 1;
    float* spread = (s1 || b1) ? static_cast<float*>(ctx.scratch(2 * cols * sizeof(float))) : nullptr;
    if (s1) {
      std::fill(spread, spread + cols, sp[0]);
      sp = spread;
    }
    if (b1) {
      std::fill(spread + cols, spread + 2 * cols, bp[0]);
      bp = spread + cols;
    }
    const float eps = static_cast<float>(eps_);
    ctx.pool().parallel_for(rows, std::max<int64_t>(1, 16384 / std::max<int64_t>(cols, 1)), [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i)
        row_(xp + i * cols, yp + i * cols, cols, sp, bp, eps, mean_out ? mean_out + i : nullptr, inv_out ? inv_out + i : nullptr);
    });
  }

 private:
  cpu::LayerNormF32Fn row_ = nullptr;
  int64_t axis_;
  double eps_;
};

std::unique_ptr<Kernel> make_layernorm(const KernelInit& init) { return std::make_unique<LayerNormKernel>(init); }

class SoftmaxKernel final : public Kernel {
 public:
  SoftmaxKernel(const KernelInit& init, bool log) : log_(log) {
    axis_ = init.attrs.get_int("axis", -1);
    fn_ = init.fn<cpu::SoftmaxF32Fn>("softmax_f32", &impl);
  }
  void run(KernelContext& ctx) override {
    const Tensor& x = ctx.in(0);
    Tensor& y = ctx.output(0, x.shape);
    if (x.numel() == 0) return;
    const int64_t r = x.rank();
    const int64_t axis = r == 0 ? 0 : normalize_axis(axis_, r);
    int64_t outer = 1, inner = 1;
    const int64_t n = r == 0 ? 1 : x.shape[axis];
    for (int64_t d = 0; d < axis; ++d) outer *= x.shape[d];
    for (int64_t d = axis + 1; d < r; ++d) inner *= x.shape[d];
    const float* xp = x.ptr<float>();
    float* yp = y.ptr<float>();
    if (inner == 1) {
      ctx.pool().parallel_for(outer, std::max<int64_t>(1, 4096 / n), [&](int64_t b, int64_t e) {
        for (int64_t o = b; o < e; ++o) fn_(xp + o * n, yp + o * n, n, log_);
      });
      return;
    }
    // Strided axis: gather each column into a contiguous row, then scatter back.
    ctx.pool().parallel_for(outer * inner, 16, [&](int64_t b, int64_t e) {
      std::vector<float> row(n), out(n);
      for (int64_t t = b; t < e; ++t) {
        const int64_t o = t / inner, i = t % inner;
        const float* base = xp + o * n * inner + i;
        for (int64_t k = 0; k < n; ++k) row[k] = base[k * inner];
        fn_(row.data(), out.data(), n, log_);
        float* yb = yp + o * n * inner + i;
        for (int64_t k = 0; k < n; ++k) yb[k * inner] = out[k];
      }
    });
  }

 private:
  bool log_;
  int64_t axis_ = -1;
  cpu::SoftmaxF32Fn fn_ = nullptr;
};

std::unique_ptr<Kernel> make_softmax(const KernelInit& init) { return std::make_unique<SoftmaxKernel>(init, false); }
std::unique_ptr<Kernel> make_logsoftmax(const KernelInit& init) { return std::make_unique<SoftmaxKernel>(init, true); }

}  // namespace

void register_norm_ops(OpRegistry& r) {
  const std::vector<DType> f32 = {DType::kF32};
  r.add({"", "BatchNormalization", f32, &make_batchnorm});
  r.add({"com.mopt", "FusedBatchNormalization", f32, &make_batchnorm});
  r.add({"", "LayerNormalization", f32, &make_layernorm});
  r.add({"", "Softmax", {DType::kF32, DType::kF64, DType::kF16}, &route_by_dtype<&make_softmax, &make_typed_softmax, DType::kF32>});
  r.add({"", "LogSoftmax", {DType::kF32, DType::kF64, DType::kF16}, &route_by_dtype<&make_logsoftmax, &make_typed_softmax, DType::kF32>});
}

}  // namespace mopt
