// The ONNX quantized ops of the default domain, as the quantizer of another framework writes them:
//   MatMulInteger, QLinearMatMul   int8/uint8 A [..., M, K] @ B [..., K, N] (numpy batch broadcast)
//   ConvInteger, QLinearConv       int8/uint8 X (N, C, D1, ...) * W (M, C/group, k1, ...), any rank
//   DynamicQuantizeLinear          float32 -> uint8 with the scale and zero point of the data's range
// Scalar integer-exact code: products accumulate in int64 after the zero points are subtracted
// (a zero point per row of A, per column of B, per output channel of W, or one for all). The
// requantizing ops scale the accumulator by the float32 multiplier x_scale * w_scale / y_scale (in
// that order, as the reference computes it) in double, add the output zero point, clamp to the
// output type and round half to even. mopt's own int8 kernels (quant_ops.cc) take the com.mopt ops
// the mopt quantizer emits; these take models quantized elsewhere.
#include <cmath>
#include <limits>

#include "kernels/ops/typed.h"

namespace mopt {
namespace {

// An int8/uint8 tensor's element i, widened.
int32_t q_at(const Tensor& t, int64_t i) {
  return t.dtype == DType::kU8 ? static_cast<int32_t>(t.ptr<uint8_t>()[i]) : static_cast<int32_t>(t.ptr<int8_t>()[i]);
}

void ensure_q8(const Tensor& t, const char* what) {
  MOPT_ENSURE(t.dtype == DType::kU8 || t.dtype == DType::kI8, what, " must be uint8 or int8, got ", dtype_name(t.dtype));
}

// A zero point (absent: 0) with 1 value or `n` values, one per row/column/channel.
std::vector<int32_t> zero_points(const KernelContext& ctx, int i, int64_t n, const char* what, DType like) {
  const Tensor* z = ctx.input(i);
  if (!z) return {0};
  ensure_q8(*z, what);
  MOPT_ENSURE(z->dtype == like, what, " is ", dtype_name(z->dtype), ", its data is ", dtype_name(like));
  MOPT_ENSURE(z->rank() <= 1 && (z->numel() == 1 || z->numel() == n), what, " must be a scalar or have ", n,
              " values, got shape ", shape_str(z->shape));
  std::vector<int32_t> v(static_cast<size_t>(z->numel()));
  for (int64_t k = 0; k < z->numel(); ++k) v[k] = q_at(*z, k);
  return v;
}

// A float scale with 1 value or `n` values.
std::vector<float> scales(const Tensor& s, int64_t n, const char* what) {
  MOPT_ENSURE(s.rank() <= 1 && (s.numel() == 1 || s.numel() == n), what, " must be a scalar or have ", n,
              " values, got shape ", shape_str(s.shape));
  std::vector<float> v(static_cast<size_t>(s.numel()));
  typed::dispatch(s.dtype, what, [&](auto tag) {
    using T = typename decltype(tag)::type;
    if constexpr (!typed::is_float_v<T>) fail(ErrorCode::kRuntime, what, " must be a float tensor, got ", dtype_name(s.dtype));
    else for (int64_t k = 0; k < s.numel(); ++k) v[k] = static_cast<float>(typed::load(s.ptr<T>()[k]));
  });
  return v;
}

inline int32_t pick(const std::vector<int32_t>& v, int64_t k) { return v[v.size() == 1 ? 0 : k]; }
inline float pick(const std::vector<float>& v, int64_t k) { return v[v.size() == 1 ? 0 : k]; }

// The requantized value of an accumulator, stored as uint8 or int8.
template <class Q>
Q requantize(int64_t acc, float m, int32_t zp) {
  double r = static_cast<double>(acc) * static_cast<double>(m) + zp;
  r = std::clamp(r, static_cast<double>(std::numeric_limits<Q>::min()), static_cast<double>(std::numeric_limits<Q>::max()));
  return static_cast<Q>(std::nearbyint(r));
}

// Writes acc (int64 per output element) as int32 (the *Integer ops) or requantized.
struct Requant {
  bool on = false;
  std::vector<float> m;  // per output column / channel (or one)
  std::vector<int32_t> zp;
};

Requant read_requant(const KernelContext& ctx, int x_scale, int w_scale, int y_scale, int y_zp, int64_t n,
                     DType out) {
  Requant r;
  r.on = true;
  const std::vector<float> xs = scales(ctx.in(x_scale), 1, "the input scale");
  const std::vector<float> ws = scales(ctx.in(w_scale), n, "the weight scale");
  const std::vector<float> ys = scales(ctx.in(y_scale), 1, "y_scale");
  r.m.resize(ws.size());
  for (size_t k = 0; k < ws.size(); ++k) r.m[k] = xs[0] * ws[k] / ys[0];
  r.zp = zero_points(ctx, y_zp, 1, "y_zero_point", out);
  return r;
}

void store_out(Tensor& y, const std::vector<int64_t>& acc, const Requant& rq, int64_t inner, int64_t channels) {
  const int64_t n = y.numel();
  if (!rq.on) {
    int32_t* yp = y.ptr<int32_t>();
    for (int64_t i = 0; i < n; ++i) yp[i] = static_cast<int32_t>(acc[i]);
    return;
  }
  for (int64_t i = 0; i < n; ++i) {
    const float m = pick(rq.m, (i / inner) % channels);
    if (y.dtype == DType::kU8) y.ptr<uint8_t>()[i] = requantize<uint8_t>(acc[i], m, rq.zp[0]);
    else y.ptr<int8_t>()[i] = requantize<int8_t>(acc[i], m, rq.zp[0]);
  }
}

// MatMulInteger (A, B, a_zp, b_zp) and QLinearMatMul (a, a_scale, a_zp, b, b_scale, b_zp, y_scale, y_zp).
class IntMatMulKernel final : public Kernel {
 public:
  explicit IntMatMulKernel(const KernelInit& init) : qlinear_(init.node->op == "QLinearMatMul") {
    impl = qlinear_ ? "qlinear_matmul" : "matmul_integer";
  }

  void run(KernelContext& ctx) override {
    const Tensor& a = ctx.in(0);
    const Tensor& b = ctx.in(qlinear_ ? 3 : 1);
    ensure_q8(a, "A");
    ensure_q8(b, "B");
    const MatMulShape ms = matmul_shape(a.shape, b.shape);
    const int64_t M = ms.M, K = ms.K, N = ms.N;
    const Shape &abatch = ms.a_batch, &bbatch = ms.b_batch, &batch = ms.batch, &ys = ms.out;
    const std::vector<int32_t> azp = zero_points(ctx, 2, M, "a_zero_point", a.dtype);
    const std::vector<int32_t> bzp = zero_points(ctx, qlinear_ ? 5 : 3, N, "b_zero_point", b.dtype);
    Requant rq;
    if (qlinear_) {
      MOPT_ENSURE(ctx.in(1).numel() == 1, "a_scale must be a scalar (a scale per row of A has no native kernel)");
      rq = read_requant(ctx, 1, 4, 6, 7, N, ctx.output_dtype(0));
    }
    Tensor& y = ctx.output(0, ys);
    if (y.numel() == 0) return;
    const int64_t B = shape_numel(batch);
    // batch offsets of A and B for each broadcast batch index
    const Shape ab_pad = pad_front(abatch, batch.size()), bb_pad = pad_front(bbatch, batch.size());
    const std::vector<int64_t> ast = contiguous_strides(ab_pad), bst = contiguous_strides(bb_pad);
    std::vector<int64_t> acc(static_cast<size_t>(B * M * N));
    ctx.pool().parallel_for(B * M, std::max<int64_t>(1, 4096 / std::max<int64_t>(K * N, 1)), [&](int64_t lo, int64_t hi) {
      std::vector<int32_t> arow(static_cast<size_t>(K));
      for (int64_t t = lo; t < hi; ++t) {
        const int64_t bi = t / M, m = t % M;
        int64_t rem = bi, ao = 0, bo = 0;
        for (int64_t d = static_cast<int64_t>(batch.size()) - 1; d >= 0; --d) {
          const int64_t i = rem % batch[d];
          rem /= batch[d];
          if (ab_pad[d] != 1) ao += i * ast[d];
          if (bb_pad[d] != 1) bo += i * bst[d];
        }
        const int64_t abase = ao * M * K + m * K, bbase = bo * K * N;
        for (int64_t k = 0; k < K; ++k) arow[k] = q_at(a, abase + k) - pick(azp, m);
        int64_t* out = acc.data() + t * N;
        for (int64_t n = 0; n < N; ++n) out[n] = 0;
        for (int64_t k = 0; k < K; ++k) {
          const int64_t av = arow[k];
          if (av == 0) continue;
          for (int64_t n = 0; n < N; ++n) out[n] += av * (q_at(b, bbase + k * N + n) - pick(bzp, n));
        }
      }
    });
    store_out(y, acc, rq, 1, N);
  }

 private:
  static Shape pad_front(const Shape& s, size_t rank) {
    Shape p(rank - s.size(), 1);
    p.insert(p.end(), s.begin(), s.end());
    return p;
  }
  bool qlinear_;
};

// ConvInteger (x, w, x_zp, w_zp) and QLinearConv (x, x_scale, x_zp, w, w_scale, w_zp, y_scale, y_zp, B).
class IntConvKernel final : public Kernel {
 public:
  explicit IntConvKernel(const KernelInit& init) : qlinear_(init.node->op == "QLinearConv") {
    group_ = init.attrs.get_int("group", 1);
    MOPT_CHECK(group_ >= 1, ErrorCode::kInvalidModel, "group must be >= 1");
    ks_ = init.attrs.get_ints("kernel_shape", {});
    strides_ = init.attrs.get_ints("strides", {});
    dil_ = init.attrs.get_ints("dilations", {});
    pads_ = init.attrs.get_ints("pads", {});
    auto_pad_ = init.attrs.get_string("auto_pad", "NOTSET");
    MOPT_CHECK(auto_pad_ == "NOTSET" || auto_pad_ == "VALID" || auto_pad_ == "SAME_UPPER" || auto_pad_ == "SAME_LOWER",
               ErrorCode::kInvalidModel, "auto_pad '", auto_pad_, "' is not NOTSET, VALID, SAME_UPPER or SAME_LOWER");
    impl = qlinear_ ? "qlinear_conv" : "conv_integer";
  }

  void run(KernelContext& ctx) override {
    const Tensor& x = ctx.in(0);
    const Tensor& w = ctx.in(qlinear_ ? 3 : 1);
    ensure_q8(x, "X");
    ensure_q8(w, "W");
    const int64_t sp = x.rank() - 2;
    MOPT_ENSURE(sp >= 1 && w.rank() == x.rank(), "X ", shape_str(x.shape), " must be (N, C, D1, ...) and W ",
                shape_str(w.shape), " (M, C/group, k1, ...) of the same rank");
    const int64_t N = x.shape[0], C = x.shape[1], M = w.shape[0], CG = w.shape[1];
    MOPT_ENSURE(C == CG * group_ && M % group_ == 0, "W ", shape_str(w.shape), " does not fit X ", shape_str(x.shape),
                " with group ", group_);
    const Shape in(x.shape.begin() + 2, x.shape.end()), k(w.shape.begin() + 2, w.shape.end());
    MOPT_ENSURE(ks_.empty() || ks_ == std::vector<int64_t>(k.begin(), k.end()), "kernel_shape disagrees with W ",
                shape_str(w.shape));
    const std::vector<int64_t> st = strides_.empty() ? std::vector<int64_t>(sp, 1) : strides_;
    const std::vector<int64_t> dl = dil_.empty() ? std::vector<int64_t>(sp, 1) : dil_;
    std::vector<int64_t> pd = pads_.empty() ? std::vector<int64_t>(2 * sp, 0) : pads_;
    MOPT_ENSURE(static_cast<int64_t>(st.size()) == sp && static_cast<int64_t>(dl.size()) == sp &&
                    static_cast<int64_t>(pd.size()) == 2 * sp,
                "strides, dilations and pads disagree with the ", sp, " spatial dimensions of X");
    Shape out(sp);
    for (int64_t i = 0; i < sp; ++i) {
      MOPT_ENSURE(st[i] >= 1 && dl[i] >= 1, "strides and dilations must be >= 1");
      const int64_t ek = (k[i] - 1) * dl[i] + 1;
      if (auto_pad_ == "SAME_UPPER" || auto_pad_ == "SAME_LOWER") {
        out[i] = (in[i] + st[i] - 1) / st[i];
        const int64_t total = std::max<int64_t>(0, (out[i] - 1) * st[i] + ek - in[i]);
        pd[i] = auto_pad_ == "SAME_UPPER" ? total / 2 : total - total / 2;
        pd[sp + i] = total - pd[i];
      } else {
        if (auto_pad_ == "VALID") pd[i] = pd[sp + i] = 0;
        const int64_t span = in[i] + pd[i] + pd[sp + i] - ek;
        MOPT_ENSURE(span >= 0, "the kernel (", ek, ") is larger than the padded input (", in[i] + pd[i] + pd[sp + i], ")");
        out[i] = span / st[i] + 1;
      }
    }
    const std::vector<int32_t> xzp = zero_points(ctx, 2, 1, "x_zero_point", x.dtype);
    const std::vector<int32_t> wzp = zero_points(ctx, qlinear_ ? 5 : 3, M, "w_zero_point", w.dtype);
    Requant rq;
    std::vector<int64_t> bias;
    if (qlinear_) {
      rq = read_requant(ctx, 1, 4, 6, 7, M, ctx.output_dtype(0));
      if (const Tensor* b = ctx.input(8)) {
        MOPT_ENSURE(b->dtype == DType::kI32 && b->numel() == M && b->rank() == 1, "B must be int32 of shape (", M,
                    "), got ", dtype_name(b->dtype), " ", shape_str(b->shape));
        bias.assign(b->ptr<int32_t>(), b->ptr<int32_t>() + M);
      }
    }
    Shape ys = {N, M};
    ys.insert(ys.end(), out.begin(), out.end());
    Tensor& y = ctx.output(0, ys);
    if (y.numel() == 0) return;
    const int64_t S = shape_numel(in), OS = shape_numel(out), KS = shape_numel(k), MG = M / group_;
    const std::vector<int64_t> ist = contiguous_strides(in);
    // per kernel tap: its offset in each spatial dimension (dilated)
    std::vector<int64_t> tap(static_cast<size_t>(KS * sp));
    for (int64_t t = 0; t < KS; ++t) {
      int64_t rem = t;
      for (int64_t i = sp - 1; i >= 0; --i) {
        tap[t * sp + i] = (rem % k[i]) * dl[i];
        rem /= k[i];
      }
    }
    std::vector<int64_t> acc(static_cast<size_t>(y.numel()));
    ctx.pool().parallel_for(N * M, 1, [&](int64_t lo, int64_t hi) {
      std::vector<int64_t> o(sp);
      for (int64_t t = lo; t < hi; ++t) {
        const int64_t n = t / M, m = t % M, g = m / MG;
        const int32_t wz = pick(wzp, m);
        for (int64_t q = 0; q < OS; ++q) {
          int64_t rem = q;
          for (int64_t i = sp - 1; i >= 0; --i) {
            o[i] = rem % out[i] * st[i] - pd[i];
            rem /= out[i];
          }
          int64_t s = bias.empty() ? 0 : bias[m];
          for (int64_t kt = 0; kt < KS; ++kt) {
            int64_t off = 0;
            bool inside = true;
            for (int64_t i = 0; i < sp && inside; ++i) {
              const int64_t at = o[i] + tap[kt * sp + i];
              inside = at >= 0 && at < in[i];
              off += at * ist[i];
            }
            if (!inside) continue;  // padding holds the zero point: contributes zero
            for (int64_t c = 0; c < CG; ++c) {
              const int64_t xv = q_at(x, (n * C + g * CG + c) * S + off) - xzp[0];
              const int64_t wv = q_at(w, (m * CG + c) * KS + kt) - wz;
              s += xv * wv;
            }
          }
          acc[t * OS + q] = s;
        }
      }
    });
    store_out(y, acc, rq, OS, M);
  }

 private:
  bool qlinear_;
  int64_t group_ = 1;
  std::vector<int64_t> ks_, strides_, dil_, pads_;
  std::string auto_pad_;
};

// DynamicQuantizeLinear: the float32 arithmetic of the spec's formula, step by step.
class DynamicQuantizeKernel final : public Kernel {
 public:
  explicit DynamicQuantizeKernel(const KernelInit&) { impl = "dynamic_quantize_linear"; }

  void run(KernelContext& ctx) override {
    const Tensor& x = ctx.in(0);
    MOPT_ENSURE(x.dtype == DType::kF32, "x must be float32, got ", dtype_name(x.dtype));
    const float* xp = x.ptr<float>();
    float hi = 0.f, lo = 0.f;  // the range always holds zero
    for (int64_t i = 0; i < x.numel(); ++i) {
      hi = std::max(hi, xp[i]);
      lo = std::min(lo, xp[i]);
    }
    const float scale = (hi == lo ? 1.f : hi - lo) / 255.f;
    const float zp = std::nearbyint(std::clamp(0.f - lo / scale, 0.f, 255.f));
    Tensor& y = ctx.output(0, x.shape);
    uint8_t* yp = y.ptr<uint8_t>();
    ctx.pool().parallel_for(x.numel(), 16384, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i)
        yp[i] = static_cast<uint8_t>(std::clamp(std::nearbyint(xp[i] / scale) + zp, 0.f, 255.f));
    });
    if (ctx.num_outputs() > 1 && ctx.output_used(1)) ctx.output(1, {}).ptr<float>()[0] = scale;
    if (ctx.num_outputs() > 2 && ctx.output_used(2)) ctx.output(2, {}).ptr<uint8_t>()[0] = static_cast<uint8_t>(zp);
  }
};

std::unique_ptr<Kernel> make_int_matmul(const KernelInit& i) { return std::make_unique<IntMatMulKernel>(i); }
std::unique_ptr<Kernel> make_int_conv(const KernelInit& i) { return std::make_unique<IntConvKernel>(i); }
std::unique_ptr<Kernel> make_dynamic_quantize(const KernelInit& i) { return std::make_unique<DynamicQuantizeKernel>(i); }

}  // namespace

void register_qlinear_ops(OpRegistry& r) {
  const std::vector<DType> q8 = {DType::kU8, DType::kI8};
  r.add({"", "MatMulInteger", q8, &make_int_matmul});
  r.add({"", "QLinearMatMul", q8, &make_int_matmul});
  r.add({"", "ConvInteger", q8, &make_int_conv});
  r.add({"", "QLinearConv", q8, &make_int_conv});
  r.add({"", "DynamicQuantizeLinear", {DType::kF32}, &make_dynamic_quantize});
}

}  // namespace mopt
