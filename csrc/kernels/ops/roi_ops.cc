// RoiAlign (opset 16+: half_pixel / output_half_pixel coordinates, avg / max) in plain C++ for
// float32/64/16. Each output bin averages (or takes the largest of) a grid of bilinear samples; the
// sample positions and weights are computed once per ROI and shared by every channel. Coordinates
// are computed in the input's arithmetic type (float for float32 and float16), as the reference and
// ONNX Runtime do, because they decide which pixels a sample reads; "max" takes the largest of the
// four *weighted* corner values, as both of them do.
#include <cmath>

#include "kernels/ops/typed.h"

namespace mopt {
namespace {

using typed::load;
using typed::store;

class RoiAlignKernel final : public Kernel {
 public:
  explicit RoiAlignKernel(const KernelInit& init) {
    const std::string ctm = init.attrs.get_string("coordinate_transformation_mode", "half_pixel");
    if (ctm == "half_pixel") half_pixel_ = true;
    else if (ctm == "output_half_pixel") half_pixel_ = false;
    else fail(ErrorCode::kInvalidModel, "coordinate_transformation_mode '", ctm, "' is not half_pixel or output_half_pixel");
    const std::string mode = init.attrs.get_string("mode", "avg");
    MOPT_CHECK(mode == "avg" || mode == "max", ErrorCode::kInvalidModel, "mode '", mode, "' is not avg or max");
    max_ = mode == "max";
    oh_ = init.attrs.get_int("output_height", 1);
    ow_ = init.attrs.get_int("output_width", 1);
    sampling_ = init.attrs.get_int("sampling_ratio", 0);
    scale_ = init.attrs.get_float("spatial_scale", 1.0);
    MOPT_CHECK(oh_ >= 1 && ow_ >= 1, ErrorCode::kInvalidModel, "output_height and output_width must be >= 1");
    MOPT_CHECK(sampling_ >= 0, ErrorCode::kInvalidModel, "sampling_ratio must be >= 0, got ", sampling_);
    impl = "roi_align";
  }

  void run(KernelContext& ctx) override {
    const Tensor& x = ctx.in(0);
    const Tensor& rois = ctx.in(1);
    const Tensor& bi = ctx.in(2);
    MOPT_ENSURE(x.rank() == 4, "X must be (N, C, H, W), got ", shape_str(x.shape));
    MOPT_ENSURE(rois.rank() == 2 && rois.shape[1] == 4, "rois must be (num_rois, 4), got ", shape_str(rois.shape));
    MOPT_ENSURE(bi.rank() == 1 && bi.shape[0] == rois.shape[0], "batch_indices ", shape_str(bi.shape),
                " must be (num_rois) = (", rois.shape[0], ")");
    MOPT_ENSURE(bi.dtype == DType::kI64 || bi.dtype == DType::kI32, "batch_indices must be int64, got ",
                dtype_name(bi.dtype));
    MOPT_ENSURE(rois.dtype == x.dtype, "rois are ", dtype_name(rois.dtype), ", X is ", dtype_name(x.dtype));
    const int64_t N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3], R = rois.shape[0];
    Tensor& y = ctx.output(0, {R, C, oh_, ow_});
    if (y.numel() == 0) return;
    MOPT_ENSURE(H > 0 && W > 0, "X has an empty spatial dimension: ", shape_str(x.shape));
    for (int64_t r = 0; r < R; ++r) {
      const int64_t b = typed::index_at(bi, r);
      MOPT_ENSURE(b >= 0 && b < N, "batch_indices[", r, "] = ", b, " is outside [0, ", N, ")");
    }
    typed::dispatch(x.dtype, "RoiAlign", [&](auto tag) {
      using T = typename decltype(tag)::type;
      if constexpr (!typed::is_float_v<T>) {
        fail(ErrorCode::kUnsupported, "RoiAlign of ", dtype_name(x.dtype), " has no native kernel");
      } else {
        run_typed<T>(x.ptr<T>(), rois.ptr<T>(), bi, y.ptr<T>(), ctx.pool(), C, H, W, R);
      }
    });
  }

 private:
  struct Tap {
    int64_t pos[4];
    double w[4];
  };

  template <class T>
  void run_typed(const T* xp, const T* rp, const Tensor& bi, T* yp, ThreadPool& pool, int64_t C, int64_t H,
                 int64_t W, int64_t R) const {
    using A = typed::Arith<T>;
    pool.parallel_for(R, 1, [&](int64_t rb, int64_t re) {
      std::vector<Tap> taps;
      for (int64_t r = rb; r < re; ++r) {
        const A off = half_pixel_ ? A(0.5) : A(0);
        const A sc = static_cast<A>(scale_);
        const A x0 = load(rp[r * 4 + 0]) * sc - off, y0 = load(rp[r * 4 + 1]) * sc - off;
        const A x1 = load(rp[r * 4 + 2]) * sc - off, y1 = load(rp[r * 4 + 3]) * sc - off;
        A rw = x1 - x0, rh = y1 - y0;
        if (!half_pixel_) {  // malformed ROIs become 1x1
          rw = std::max(rw, A(1));
          rh = std::max(rh, A(1));
        }
        const A bh = rh / static_cast<A>(oh_), bw = rw / static_cast<A>(ow_);
        const int64_t gh = sampling_ > 0 ? sampling_ : static_cast<int64_t>(std::ceil(rh / static_cast<A>(oh_)));
        const int64_t gw = sampling_ > 0 ? sampling_ : static_cast<int64_t>(std::ceil(rw / static_cast<A>(ow_)));
        const double count = static_cast<double>(std::max<int64_t>(gh * gw, 1));
        taps.assign(static_cast<size_t>(std::max<int64_t>(oh_ * ow_ * gh * gw, 0)), Tap{});
        size_t k = 0;
        for (int64_t ph = 0; ph < oh_; ++ph)
          for (int64_t pw = 0; pw < ow_; ++pw)
            for (int64_t iy = 0; iy < gh; ++iy) {
              const A yy = y0 + static_cast<A>(ph) * bh + (static_cast<A>(iy) + A(0.5)) * bh / static_cast<A>(gh);
              for (int64_t ix = 0; ix < gw; ++ix, ++k) {
                A xx = x0 + static_cast<A>(pw) * bw + (static_cast<A>(ix) + A(0.5)) * bw / static_cast<A>(gw);
                A yv = yy;
                Tap& t = taps[k];
                if (yv < A(-1) || yv > static_cast<A>(H) || xx < A(-1) || xx > static_cast<A>(W)) continue;  // zero weights
                yv = std::max(yv, A(0));
                xx = std::max(xx, A(0));
                int64_t yl = static_cast<int64_t>(yv), xl = static_cast<int64_t>(xx), yh, xh;
                if (yl >= H - 1) {
                  yh = yl = H - 1;
                  yv = static_cast<A>(yl);
                } else {
                  yh = yl + 1;
                }
                if (xl >= W - 1) {
                  xh = xl = W - 1;
                  xx = static_cast<A>(xl);
                } else {
                  xh = xl + 1;
                }
                const A ly = yv - static_cast<A>(yl), lx = xx - static_cast<A>(xl), hy = A(1) - ly, hx = A(1) - lx;
                t.pos[0] = yl * W + xl;
                t.pos[1] = yl * W + xh;
                t.pos[2] = yh * W + xl;
                t.pos[3] = yh * W + xh;
                t.w[0] = static_cast<double>(hy * hx);
                t.w[1] = static_cast<double>(hy * lx);
                t.w[2] = static_cast<double>(ly * hx);
                t.w[3] = static_cast<double>(ly * lx);
              }
            }
        const int64_t b = typed::index_at(bi, r), per_bin = gh * gw;
        for (int64_t c = 0; c < C; ++c) {
          const T* plane = xp + (b * C + c) * H * W;
          T* out = yp + (r * C + c) * oh_ * ow_;
          for (int64_t p = 0; p < oh_ * ow_; ++p) {
            double acc = 0;
            for (int64_t s = 0; s < per_bin; ++s) {
              const Tap& t = taps[p * per_bin + s];
              double v[4];
              for (int j = 0; j < 4; ++j) v[j] = t.w[j] * static_cast<double>(load(plane[t.pos[j]]));
              if (max_) {
                const double m = std::max(std::max(v[0], v[1]), std::max(v[2], v[3]));
                acc = s == 0 ? m : std::max(acc, m);
              } else {
                acc += v[0] + v[1] + v[2] + v[3];
              }
            }
            out[p] = store<T>(max_ ? acc : acc / count);
          }
        }
      }
    });
  }

  bool half_pixel_ = true, max_ = false;
  int64_t oh_ = 1, ow_ = 1, sampling_ = 0;
  double scale_ = 1.0;
};

std::unique_ptr<Kernel> make_roi_align(const KernelInit& i) { return std::make_unique<RoiAlignKernel>(i); }

}  // namespace

void register_roi_ops(OpRegistry& r) {
  r.add({"", "RoiAlign", {DType::kF32, DType::kF64, DType::kF16}, &make_roi_align});
}

}  // namespace mopt
