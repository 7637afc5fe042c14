// MaxPool, AveragePool and LpPool over windows of any rank (3-D video and volume models), and of
// every dtype the ops take (MaxPool of int8/uint8, float64, float16): a direct loop over each
// output's window, in plain C++. The float32 1-D and 2-D pools stay on pool.cc's vectorized kernel;
// pool.cc routes the rest here. Geometry as pool.cc: explicit or auto pads, strides, dilations,
// ceil_mode (a window may not start in the end padding); count_include_pad counts the padded
// positions a window covers, not the ones ceil_mode adds past the end padding. LpPool sums |x|^p
// over the window's input elements (padding adds zero) and takes the p-th root. MaxUnpool, the
// inverse scatter of MaxPool's Indices, lives here too.
#include <cmath>
#include <limits>

#include "kernels/ops/typed.h"

namespace mopt {

std::unique_ptr<Kernel> make_pool_nd(const KernelInit& init);  // pool.cc routes to it

namespace {

using typed::load;
using typed::store;

enum class PoolKind { kMax, kAvg, kLp };

class PoolNdKernel final : public Kernel {
 public:
  PoolNdKernel(const KernelInit& init, PoolKind kind) : kind_(kind) {
    k_ = init.attrs.get_ints("kernel_shape", {});
    const size_t sp = k_.size();
    MOPT_CHECK(sp >= 1, ErrorCode::kInvalidModel, "kernel_shape is required");
    s_ = init.attrs.get_ints("strides", std::vector<int64_t>(sp, 1));
    d_ = init.attrs.get_ints("dilations", std::vector<int64_t>(sp, 1));
    pads_ = init.attrs.get_ints("pads", std::vector<int64_t>(2 * sp, 0));
    MOPT_CHECK(s_.size() == sp && d_.size() == sp && pads_.size() == 2 * sp, ErrorCode::kInvalidModel,
               "kernel_shape, strides, dilations and pads disagree on the number of spatial dimensions");
    for (size_t i = 0; i < sp; ++i)
      MOPT_CHECK(k_[i] >= 1 && s_[i] >= 1 && d_[i] >= 1, ErrorCode::kInvalidModel,
                 "kernel_shape, strides and dilations must be >= 1");
    for (int64_t p : pads_) MOPT_CHECK(p >= 0, ErrorCode::kInvalidModel, "pads must be >= 0");
    ceil_ = init.attrs.get_int("ceil_mode", 0) != 0;
    auto_pad_ = init.attrs.get_string("auto_pad", "NOTSET");
    MOPT_CHECK(auto_pad_ == "NOTSET" || auto_pad_ == "VALID" || auto_pad_ == "SAME_UPPER" || auto_pad_ == "SAME_LOWER",
               ErrorCode::kInvalidModel, "auto_pad '", auto_pad_, "' is not NOTSET, VALID, SAME_UPPER or SAME_LOWER");
    count_pad_ = init.attrs.get_int("count_include_pad", 0) != 0;
    storage_order_ = init.attrs.get_int("storage_order", 0);
    p_ = init.attrs.get_int("p", 2);
    MOPT_CHECK(kind != PoolKind::kLp || p_ >= 1, ErrorCode::kInvalidModel, "p must be >= 1, got ", p_);
    impl = kind == PoolKind::kMax ? "maxpool_nd" : kind == PoolKind::kAvg ? "avgpool_nd" : "lppool_nd";
  }

  void run(KernelContext& ctx) override {
    const Tensor& x = ctx.in(0);
    const int64_t sp = static_cast<int64_t>(k_.size());
    MOPT_ENSURE(x.rank() == 2 + sp, "X must have rank ", 2 + sp, " for a ", sp, "-D window, got ", shape_str(x.shape));
    Shape in(x.shape.begin() + 2, x.shape.end()), out(sp);
    std::vector<int64_t> p0(sp), p1(sp);
    for (int64_t i = 0; i < sp; ++i) out_dim(i, in[i], &out[i], &p0[i], &p1[i]);
    Shape ys = {x.shape[0], x.shape[1]};
    ys.insert(ys.end(), out.begin(), out.end());
    Tensor& y = ctx.output(0, ys);
    int64_t* idx = nullptr;
    if (kind_ == PoolKind::kMax && ctx.num_outputs() > 1 && ctx.output_used(1)) idx = ctx.output(1, ys).ptr<int64_t>();
    if (y.numel() == 0) return;
    const int64_t planes = x.shape[0] * x.shape[1], S = shape_numel(in), OS = shape_numel(out);
    // window offsets and their per-dimension positions (relative to the window start)
    int64_t taps = 1;
    for (int64_t v : k_) taps *= v;
    std::vector<int64_t> tap_pos(static_cast<size_t>(taps * sp));
    for (int64_t t = 0; t < taps; ++t) {
      int64_t rem = t;
      for (int64_t i = sp - 1; i >= 0; --i) {
        tap_pos[t * sp + i] = (rem % k_[i]) * d_[i];
        rem /= k_[i];
      }
    }
    const std::vector<int64_t> st = contiguous_strides(in);
    typed::dispatch(x.dtype, "pooling", [&](auto tag) {
      using T = typename decltype(tag)::type;
      if constexpr (std::is_same_v<T, bool>) {
        fail(ErrorCode::kUnsupported, "pooling of bool has no native kernel");
      } else {
        if constexpr (!typed::is_float_v<T>)
          MOPT_CHECK(kind_ == PoolKind::kMax, ErrorCode::kUnsupported, "only MaxPool takes integer inputs");
        const T* xp = x.ptr<T>();
        T* yp = y.ptr<T>();
        ctx.pool().parallel_for(planes * OS, std::max<int64_t>(1, 4096 / taps), [&](int64_t b, int64_t e) {
          std::vector<int64_t> o(sp), start(sp);
          for (int64_t q = b; q < e; ++q) {
            const int64_t plane = q / OS;
            int64_t rem = q % OS;
            for (int64_t i = sp - 1; i >= 0; --i) {
              o[i] = rem % out[i];
              rem /= out[i];
            }
            for (int64_t i = 0; i < sp; ++i) start[i] = o[i] * s_[i] - p0[i];
            const T* xc = xp + plane * S;
            typed::Arith<T> best{};
            int64_t arg = -1, cnt = 0, padded = 0;  // padded: taps inside the explicit padding too
            double acc = 0;
            for (int64_t t = 0; t < taps; ++t) {
              int64_t off = 0;
              bool inside = true, in_pad = true;
              for (int64_t i = 0; i < sp; ++i) {
                const int64_t at = start[i] + tap_pos[t * sp + i];
                if (at < 0 || at >= in[i]) inside = false;
                if (at < -p0[i] || at >= in[i] + p1[i]) in_pad = false;
                off += at * st[i];
              }
              padded += in_pad;
              if (!inside) continue;
              const auto v = load(xc[off]);
              if (kind_ == PoolKind::kMax) {
                if (arg < 0 || v > best || (v != v && best == best)) {
                  best = v;
                  arg = off;
                }
              } else if (kind_ == PoolKind::kAvg) {
                acc += static_cast<double>(v);
                ++cnt;
              } else {
                acc += std::pow(std::fabs(static_cast<double>(v)), static_cast<double>(p_));
              }
            }
            if (kind_ == PoolKind::kMax) {
              if (arg < 0) best = std::numeric_limits<typed::Arith<T>>::lowest();
              yp[q] = store<T>(best);
              if (idx) {
                int64_t a = arg < 0 ? 0 : arg;
                if (storage_order_ == 1) {  // column-major over the spatial dimensions
                  int64_t cm = 0, mul = 1;
                  for (int64_t i = 0; i < sp; ++i) {
                    cm += (a / st[i] % in[i]) * mul;
                    mul *= in[i];
                  }
                  a = cm;
                }
                idx[q] = plane * S + a;
              }
            } else if (kind_ == PoolKind::kAvg) {
              const int64_t div = count_pad_ ? padded : cnt;
              yp[q] = store<T>(div > 0 ? acc / static_cast<double>(div) : 0.0);
            } else {
              yp[q] = store<T>(std::pow(acc, 1.0 / static_cast<double>(p_)));
            }
          }
        });
      }
    });
  }

 private:
  void out_dim(int64_t i, int64_t in, int64_t* out, int64_t* pad0, int64_t* pad1) const {
    const int64_t k = k_[i], s = s_[i], ek = (k - 1) * d_[i] + 1;
    if (auto_pad_ == "SAME_UPPER" || auto_pad_ == "SAME_LOWER") {
      *out = (in + s - 1) / s;
      const int64_t total = std::max<int64_t>(0, (*out - 1) * s + ek - in);
      *pad0 = auto_pad_ == "SAME_UPPER" ? total / 2 : total - total / 2;
      *pad1 = total - *pad0;
      return;
    }
    const bool valid = auto_pad_ == "VALID";
    const int64_t p0 = valid ? 0 : pads_[i], p1 = valid ? 0 : pads_[k_.size() + i];
    const int64_t span = in + p0 + p1 - ek;
    MOPT_ENSURE(span >= 0, "pooling window (", ek, ") is larger than the padded input (", in + p0 + p1, ")");
    if (ceil_) {
      *out = (span + s - 1) / s + 1;
      if ((*out - 1) * s >= in + p0) --*out;  // a window may not start inside the end padding
    } else {
      *out = span / s + 1;
    }
    *pad0 = p0;
    *pad1 = p1;
  }

  PoolKind kind_;
  std::vector<int64_t> k_, s_, d_, pads_;
  bool ceil_ = false, count_pad_ = false;
  std::string auto_pad_;
  int64_t storage_order_ = 0, p_ = 2;
};

std::unique_ptr<Kernel> make_lp_pool(const KernelInit& i) { return std::make_unique<PoolNdKernel>(i, PoolKind::kLp); }

// MaxUnpool: X scattered to the flat positions I (MaxPool's Indices) of a zero tensor of the pooled
// input's shape, (in - 1) * stride + kernel - pads per dimension. With an output_shape input, that
// tensor is placed at the start of a larger zero one, as onnx.reference (the conformance
// suite's expected outputs) reads it.
class MaxUnpoolKernel final : public Kernel {
 public:
  explicit MaxUnpoolKernel(const KernelInit& init) {
    k_ = init.attrs.get_ints("kernel_shape", {});
    const size_t sp = k_.size();
    MOPT_CHECK(sp >= 1, ErrorCode::kInvalidModel, "kernel_shape is required");
    s_ = init.attrs.get_ints("strides", std::vector<int64_t>(sp, 1));
    pads_ = init.attrs.get_ints("pads", std::vector<int64_t>(2 * sp, 0));
    MOPT_CHECK(s_.size() == sp && pads_.size() == 2 * sp, ErrorCode::kInvalidModel,
               "kernel_shape, strides and pads disagree on the number of spatial dimensions");
    impl = "max_unpool";
  }

  void run(KernelContext& ctx) override {
    const Tensor& x = ctx.in(0);
    const Tensor& ind = ctx.in(1);
    const int64_t sp = static_cast<int64_t>(k_.size());
    MOPT_ENSURE(x.rank() == 2 + sp, "X must have rank ", 2 + sp, " for a ", sp, "-D window, got ", shape_str(x.shape));
    MOPT_ENSURE(ind.shape == x.shape && ind.dtype == DType::kI64, "I must be int64 of X's shape ", shape_str(x.shape),
                ", got ", dtype_name(ind.dtype), " ", shape_str(ind.shape));
    Shape inner = {x.shape[0], x.shape[1]};
    for (int64_t i = 0; i < sp; ++i) {
      inner.push_back((x.shape[2 + i] - 1) * s_[i] - (pads_[i] + pads_[sp + i]) + k_[i]);
      MOPT_ENSURE(inner.back() >= 0, "the unpooled dimension ", i, " would be negative");
    }
    Shape out = inner;
    if (const Tensor* os = ctx.input(2)) {
      out = typed::ints_of(*os, "output_shape");
      MOPT_ENSURE(out.size() == inner.size(), "output_shape has ", out.size(), " values; X has rank ", x.rank());
      for (size_t i = 0; i < out.size(); ++i)
        MOPT_ENSURE(out[i] >= inner[i], "output_shape ", shape_str(out), " is smaller than the unpooled shape ",
                    shape_str(inner));
    }
    Tensor& y = ctx.output(0, out);
    if (y.nbytes() > 0) std::memset(y.data, 0, y.nbytes());
    const int64_t total = shape_numel(inner);
    const std::vector<int64_t> ist = contiguous_strides(inner), ost = contiguous_strides(out);
    const int64_t* ip = ind.ptr<int64_t>();
    const size_t es = dtype_size(x.dtype);
    const auto* xp = static_cast<const uint8_t*>(x.data);
    auto* yp = static_cast<uint8_t*>(y.data);
    for (int64_t e = 0; e < x.numel(); ++e) {
      const int64_t f = ip[e];
      MOPT_ENSURE(f >= 0 && f < total, "index ", f, " in I is outside the ", total, " elements of the unpooled shape ",
                  shape_str(inner));
      int64_t o = 0;
      for (size_t d = 0; d < inner.size(); ++d) o += (f / ist[d] % inner[d]) * ost[d];
      std::memcpy(yp + o * es, xp + e * es, es);
    }
  }

 private:
  std::vector<int64_t> k_, s_, pads_;
};

std::unique_ptr<Kernel> make_max_unpool(const KernelInit& i) { return std::make_unique<MaxUnpoolKernel>(i); }

}  // namespace

std::unique_ptr<Kernel> make_pool_nd(const KernelInit& init) {
  return std::make_unique<PoolNdKernel>(init, init.node->op == "MaxPool" ? PoolKind::kMax : PoolKind::kAvg);
}

void register_pool_nd_ops(OpRegistry& r) {
  r.add({"", "LpPool", {DType::kF32, DType::kF64, DType::kF16, DType::kBF16}, &make_lp_pool});
  r.add({"", "MaxUnpool", {DType::kF32, DType::kF64, DType::kF16, DType::kBF16}, &make_max_unpool});
}

}  // namespace mopt
