// MaxPool, AveragePool (float32, 1-D and 2-D windows, pads, strides, dilations, ceil_mode, auto_pad;
// other ranks and dtypes go to pool_nd_ops.cc),
// GlobalAveragePool, GlobalMaxPool, and LRN. NCHW.
#include <algorithm>
#include <cmath>

#include "kernels/ops/common.h"

namespace mopt {

std::unique_ptr<Kernel> make_pool_nd(const KernelInit& init);  // pool_nd_ops.cc

namespace {

struct PoolGeom {
  int spatial = 2;
  int64_t KH = 1, KW = 1, SH = 1, SW = 1, DH = 1, DW = 1, PT = 0, PL = 0, PB = 0, PR = 0;
  bool ceil_mode = false;
  std::string auto_pad;
};

PoolGeom read_pool_geom(const Attrs& a) {
  PoolGeom g;
  std::vector<int64_t> ks = a.get_ints("kernel_shape", {});
  MOPT_CHECK(ks.size() == 1 || ks.size() == 2, ErrorCode::kUnsupported,
             "only 1-D and 2-D pooling windows have a native kernel");
  g.spatial = static_cast<int>(ks.size());
  const size_t sp = ks.size();
  std::vector<int64_t> st = a.get_ints("strides", std::vector<int64_t>(sp, 1));
  std::vector<int64_t> dl = a.get_ints("dilations", std::vector<int64_t>(sp, 1));
  std::vector<int64_t> pd = a.get_ints("pads", std::vector<int64_t>(2 * sp, 0));
  MOPT_ENSURE(st.size() == sp && dl.size() == sp && pd.size() == 2 * sp, "pool attributes disagree on rank");
  for (int64_t v : ks) MOPT_ENSURE(v >= 1, "kernel_shape must be >= 1");
  for (int64_t v : st) MOPT_ENSURE(v >= 1, "strides must be >= 1");
  for (int64_t v : dl) MOPT_ENSURE(v >= 1, "dilations must be >= 1");
  g.ceil_mode = a.get_int("ceil_mode", 0) != 0;
  g.auto_pad = a.get_string("auto_pad", "NOTSET");
  if (sp == 2) {
    g.KH = ks[0]; g.KW = ks[1]; g.SH = st[0]; g.SW = st[1]; g.DH = dl[0]; g.DW = dl[1];
    g.PT = pd[0]; g.PL = pd[1]; g.PB = pd[2]; g.PR = pd[3];
  } else {
    g.KW = ks[0]; g.SW = st[0]; g.DW = dl[0]; g.PL = pd[0]; g.PR = pd[1];
  }
  return g;
}

void pool_dim(const PoolGeom& g, int64_t in, int64_t k, int64_t s, int64_t d, int64_t p0, int64_t p1, int64_t* out,
              int64_t* pad0, int64_t* pad1) {
  const int64_t ek = (k - 1) * d + 1;
  if (g.auto_pad == "SAME_UPPER" || g.auto_pad == "SAME_LOWER") {
    *out = (in + s - 1) / s;
    int64_t total = std::max<int64_t>(0, (*out - 1) * s + ek - in);
    *pad0 = g.auto_pad == "SAME_UPPER" ? total / 2 : total - total / 2;
    *pad1 = total - *pad0;
    return;
  }
  if (g.auto_pad == "VALID") p0 = p1 = 0;
  else MOPT_ENSURE(g.auto_pad == "NOTSET", "auto_pad '", g.auto_pad, "' is not valid");
  const int64_t span = in + p0 + p1 - ek;
  MOPT_ENSURE(span >= 0, "pooling window (", ek, ") is larger than the padded input (", in + p0 + p1, ")");
  if (g.ceil_mode) {
    *out = (span + s - 1) / s + 1;
    if ((*out - 1) * s >= in + p0) --*out;  // a window may not start inside the end padding
  } else {
    *out = span / s + 1;
  }
  *pad0 = p0;
  *pad1 = p1;
}

class PoolKernel final : public Kernel {
 public:
  PoolKernel(const KernelInit& init, bool is_max) : max_(is_max) {
    g_ = read_pool_geom(init.attrs);
    count_pad_ = init.attrs.get_int("count_include_pad", 0) != 0;
    storage_order_ = init.attrs.get_int("storage_order", 0);
    impl = is_max ? "maxpool_f32" : "avgpool_f32";
    plane_ = init.fn<cpu::PoolPlaneF32Fn>("pool_plane_f32", &impl);
  }

  void run(KernelContext& ctx) override {
    const Tensor& x = ctx.in(0);
    const int sp = g_.spatial;
    MOPT_ENSURE(x.rank() == 2 + sp, "X must have rank ", 2 + sp, ", got ", shape_str(x.shape));
    const int64_t N = x.shape[0], C = x.shape[1];
    const int64_t H = sp == 2 ? x.shape[2] : 1, W = x.shape[1 + sp];
    int64_t OH = 1, OW, PT = 0, PB = 0, PL, PR;
    if (sp == 2) pool_dim(g_, H, g_.KH, g_.SH, g_.DH, g_.PT, g_.PB, &OH, &PT, &PB);
    pool_dim(g_, W, g_.KW, g_.SW, g_.DW, g_.PL, g_.PR, &OW, &PL, &PR);
    Shape ys = sp == 2 ? Shape{N, C, OH, OW} : Shape{N, C, OW};
    Tensor& y = ctx.output(0, ys);
    int64_t* idx = nullptr;
    if (max_ && ctx.num_outputs() > 1 && ctx.output_used(1)) idx = ctx.output(1, ys).ptr<int64_t>();
    const float* xp = x.ptr<float>();
    float* yp = y.ptr<float>();
    const int64_t HW = H * W, OHW = OH * OW;
    if (max_ && sp == 2 && !idx && g_.KH == 2 && g_.KW == 2 && g_.SH == 2 && g_.SW == 2 && g_.DH == 1 && g_.DW == 1 &&
        PT == 0 && PL == 0 && 2 * OH <= H && 2 * OW <= W) {
      // The common CNN downsampling (2x2, stride 2, no padding): every window lies inside the
      // image, so one branch-free pass per output row, instead of the general row/column passes.
      ctx.pool().parallel_for(N * C, 1, [&](int64_t b, int64_t e) {
        for (int64_t t = b; t < e; ++t) max_pool_2x2(xp + t * HW, yp + t * OHW, W, OH, OW);
      });
      return;
    }
    if (g_.DH == 1 && g_.DW == 1 && !idx && OW > 0) {
      cpu::PoolPlaneArgs geo{};
      geo.H = H;
      geo.W = W;
      geo.OH = OH;
      geo.OW = OW;
      geo.KH = g_.KH;
      geo.KW = g_.KW;
      geo.SH = g_.SH;
      geo.SW = g_.SW;
      geo.PT = PT;
      geo.PB = PB;
      geo.PL = PL;
      geo.max = max_ ? 1 : 0;
      geo.count_pad = count_pad_ ? 1 : 0;
      const int threads = ctx.pool().num_threads();
      const int64_t per = (cpu::pool_tmp_floats(geo) + 15) / 16 * 16;  // one thread's rows or plane
      float* buf = static_cast<float*>(ctx.scratch(static_cast<size_t>(per * threads + OW) * sizeof(float)));
      float* inv_cx = buf + per * threads;
      for (int64_t ox = 0; ox < OW; ++ox) {  // 1 / (columns counted) of each output column's window
        const int64_t ws = ox * g_.SW - PL;
        const int64_t cols = count_pad_ ? std::min(ws + g_.KW, W + PR) - std::max(ws, -PL)
                                        : std::min(ws + g_.KW, W) - std::max<int64_t>(ws, 0);
        inv_cx[ox] = cols > 0 ? 1.f / static_cast<float>(cols) : 0.f;
      }
      geo.inv_cx = inv_cx;
      const int64_t total = N * C, chunk = (total + threads - 1) / threads;
      ctx.pool().run_tasks(threads, [&](int64_t task, int thread) {
        cpu::PoolPlaneArgs a = geo;
        a.tmp = buf + per * thread;
        for (int64_t t = task * chunk; t < std::min(total, (task + 1) * chunk); ++t) {
          a.x = xp + t * HW;
          a.y = yp + t * OHW;
          plane_(a);
        }
      });
      return;
    }
    ctx.pool().parallel_for(N * C, 1, [&](int64_t b, int64_t e) {
      for (int64_t t = b; t < e; ++t) {
        const float* xc = xp + t * HW;
        float* yc = yp + t * OHW;
        for (int64_t oy = 0; oy < OH; ++oy) {
          const int64_t hs = oy * g_.SH - PT;
          for (int64_t ox = 0; ox < OW; ++ox) {
            const int64_t ws = ox * g_.SW - PL;
            if (max_) {
              float m = -INFINITY;
              int64_t arg = -1;
              for (int64_t ky = 0; ky < g_.KH; ++ky) {
                const int64_t iy = hs + ky * g_.DH;
                if (iy < 0 || iy >= H) continue;
                for (int64_t kx = 0; kx < g_.KW; ++kx) {
                  const int64_t ix = ws + kx * g_.DW;
                  if (ix < 0 || ix >= W) continue;
                  const float v = xc[iy * W + ix];
                  if (v > m || arg < 0) { m = v; arg = iy * W + ix; }
                }
              }
              yc[oy * OW + ox] = m;
              if (idx) {
                int64_t a = arg < 0 ? 0 : arg;
                if (storage_order_ == 1) a = (a % W) * H + a / W;
                idx[t * OHW + oy * OW + ox] = t * HW + a;
              }
            } else {
              float s = 0.f;
              int64_t cnt = 0, cnt_pad = 0;
              for (int64_t ky = 0; ky < g_.KH; ++ky) {
                const int64_t iy = hs + ky * g_.DH;
                const bool in_pad_y = iy >= -PT && iy < H + PB;
                for (int64_t kx = 0; kx < g_.KW; ++kx) {
                  const int64_t ix = ws + kx * g_.DW;
                  if (in_pad_y && ix >= -PL && ix < W + PR) ++cnt_pad;
                  if (iy < 0 || iy >= H || ix < 0 || ix >= W) continue;
                  s += xc[iy * W + ix];
                  ++cnt;
                }
              }
              const int64_t div = count_pad_ ? cnt_pad : cnt;
              yc[oy * OW + ox] = div > 0 ? s / static_cast<float>(div) : 0.f;
            }
          }
        }
      }
    });
  }

 private:
  PoolGeom g_;
  cpu::PoolPlaneF32Fn plane_ = nullptr;  // undilated windows, one channel at a time
  bool max_;
  bool count_pad_ = false;
  int64_t storage_order_ = 0;
};

// float32 1-D and 2-D windows here; other ranks and dtypes in pool_nd_ops.cc
bool takes_pool(const KernelInit& init) {
  const size_t sp = init.attrs.get_ints("kernel_shape", {}).size();
  return (sp == 1 || sp == 2) && !init.in_dtypes.empty() && init.in_dtypes[0] == DType::kF32;
}
std::unique_ptr<Kernel> make_maxpool(const KernelInit& init) {
  return takes_pool(init) ? std::make_unique<PoolKernel>(init, true) : make_pool_nd(init);
}
std::unique_ptr<Kernel> make_avgpool(const KernelInit& init) {
  return takes_pool(init) ? std::make_unique<PoolKernel>(init, false) : make_pool_nd(init);
}

class GlobalPoolKernel final : public Kernel {
 public:
  GlobalPoolKernel(const KernelInit& init, bool is_max) : max_(is_max) {
    fn_ = init.fn<cpu::ReduceF32Fn>(is_max ? "reduce_max_f32" : "reduce_sum_f32", &impl);
  }
  void run(KernelContext& ctx) override {
    const Tensor& x = ctx.in(0);
    MOPT_ENSURE(x.rank() >= 3, "X must have rank >= 3, got ", shape_str(x.shape));
    Shape ys = x.shape;
    int64_t inner = 1;
    for (size_t d = 2; d < ys.size(); ++d) {
      inner *= ys[d];
      ys[d] = 1;
    }
    Tensor& y = ctx.output(0, ys);
    const float* xp = x.ptr<float>();
    float* yp = y.ptr<float>();
    const int64_t rows = x.shape[0] * x.shape[1];
    MOPT_ENSURE(inner > 0 || rows == 0, "global pooling over an empty window");
    ctx.pool().parallel_for(rows, std::max<int64_t>(1, 4096 / std::max<int64_t>(inner, 1)), [&](int64_t b, int64_t e) {
      for (int64_t r = b; r < e; ++r) {
        float v = fn_(xp + r * inner, inner);
        yp[r] = max_ ? v : v / static_cast<float>(inner);
      }
    });
  }

 private:
  bool max_;
  cpu::ReduceF32Fn fn_ = nullptr;
};

std::unique_ptr<Kernel> make_gap(const KernelInit& init) { return std::make_unique<GlobalPoolKernel>(init, false); }
std::unique_ptr<Kernel> make_gmp(const KernelInit& init) { return std::make_unique<GlobalPoolKernel>(init, true); }

// Local response normalization across channels:
//   y = x / (bias + alpha/size * sum_{window} x^2)^beta
class LrnKernel final : public Kernel {
 public:
  explicit LrnKernel(const KernelInit& init) {
    size_ = init.attrs.get_int("size");
    MOPT_ENSURE(size_ >= 1, "size must be >= 1");
    alpha_ = static_cast<float>(init.attrs.get_float("alpha", 1e-4));
    beta_ = static_cast<float>(init.attrs.get_float("beta", 0.75));
    bias_ = static_cast<float>(init.attrs.get_float("bias", 1.0));
    impl = "lrn_f32";
  }
  void run(KernelContext& ctx) override {
    const Tensor& x = ctx.in(0);
    MOPT_ENSURE(x.rank() >= 3, "X must have rank >= 3, got ", shape_str(x.shape));
    Tensor& y = ctx.output(0, x.shape);
    const int64_t N = x.shape[0], C = x.shape[1], inner = x.numel() / std::max<int64_t>(1, N * C);
    const int64_t lo = (size_ - 1) / 2, hi = size_ - 1 - lo;
    const float* xp = x.ptr<float>();
    float* yp = y.ptr<float>();
    const float k = alpha_ / static_cast<float>(size_);
    ctx.pool().parallel_for(N * C, 1, [&](int64_t b, int64_t e) {
      for (int64_t t = b; t < e; ++t) {
        const int64_t n = t / C, c = t % C;
        const int64_t c0 = std::max<int64_t>(0, c - lo), c1 = std::min<int64_t>(C - 1, c + hi);
        const float* xc = xp + t * inner;
        float* yc = yp + t * inner;
        for (int64_t i = 0; i < inner; ++i) {
          float s = 0.f;
          for (int64_t cc = c0; cc <= c1; ++cc) {
            const float v = xp[(n * C + cc) * inner + i];
            s += v * v;
          }
          const float base = bias_ + k * s;
          // base^-0.75 = 1 / (sqrt(base) * sqrt(sqrt(base))): the common case without pow
          const float scale = beta_ == 0.75f ? 1.f / (std::sqrt(base) * std::sqrt(std::sqrt(base)))
                                             : std::pow(base, -beta_);
          yc[i] = xc[i] * scale;
        }
      }
    });
  }

 private:
  int64_t size_ = 1;
  float alpha_, beta_, bias_;
};

std::unique_ptr<Kernel> make_lrn(const KernelInit& init) { return std::make_unique<LrnKernel>(init); }

}  // namespace

void register_pool_ops(OpRegistry& r) {
  const std::vector<DType> f32 = {DType::kF32};
  const std::vector<DType> floats = {DType::kF32, DType::kF64, DType::kF16, DType::kBF16};
  r.add({"", "MaxPool", {DType::kF32, DType::kF64, DType::kF16, DType::kBF16, DType::kI8, DType::kU8}, &make_maxpool});
  r.add({"", "AveragePool", floats, &make_avgpool});
  r.add({"", "GlobalAveragePool", f32, &make_gap});
  r.add({"", "GlobalMaxPool", f32, &make_gmp});
  r.add({"", "LRN", f32, &make_lrn});
}

}  // namespace mopt
