// GridSample (opset 20/22: any number of spatial dimensions) in plain C++: nearest, linear and cubic
// sampling, zeros / border / reflection padding, align_corners. Source coordinates are computed in
// float, as the reference does (it decides which sample "nearest" picks); the interpolation is a
// tensor product of per-dimension taps, each tap read through the padding rule of its dimension.
#include <array>
#include <limits>

#include "kernels/ops/typed.h"

namespace mopt {
namespace {

using typed::is_float_v;
using typed::load;
using typed::store;

class GridSampleKernel final : public Kernel {
 public:
  explicit GridSampleKernel(const KernelInit& init) {
    const std::string mode = init.attrs.get_string("mode", "linear");
    if (mode == "nearest") mode_ = 0;
    else if (mode == "linear" || mode == "bilinear") mode_ = 1;
    else if (mode == "cubic" || mode == "bicubic") mode_ = 2;
    else fail(ErrorCode::kInvalidModel, "mode '", mode, "' is not nearest, linear or cubic");
    const std::string pad = init.attrs.get_string("padding_mode", "zeros");
    if (pad == "zeros") pad_ = 0;
    else if (pad == "border") pad_ = 1;
    else if (pad == "reflection") pad_ = 2;
    else fail(ErrorCode::kInvalidModel, "padding_mode '", pad, "' is not zeros, border or reflection");
    align_ = init.attrs.get_int("align_corners", 0) != 0;
    impl = "grid_sample";
  }

  void run(KernelContext& ctx) override {
    const Tensor& x = ctx.in(0);
    const Tensor& grid = ctx.in(1);
    const int64_t r = x.rank() - 2;
    MOPT_ENSURE(r >= 1, "X must be (N, C, D1, ...), got ", shape_str(x.shape));
    MOPT_ENSURE(grid.rank() == r + 2 && grid.shape[0] == x.shape[0] && grid.shape.back() == r, "grid ",
                shape_str(grid.shape), " must be (N, ...", r, " output dims, ", r, ") for X ", shape_str(x.shape));
    const int64_t N = x.shape[0], C = x.shape[1];
    const Shape dims(x.shape.begin() + 2, x.shape.end());
    for (int64_t d : dims) MOPT_ENSURE(d > 0, "X has an empty spatial dimension: ", shape_str(x.shape));
    Shape out = {N, C};
    out.insert(out.end(), grid.shape.begin() + 1, grid.shape.end() - 1);
    Tensor& y = ctx.output(0, out);
    if (y.numel() == 0) return;
    const int64_t P = shape_numel(Shape(grid.shape.begin() + 1, grid.shape.end() - 1));  // output points
    const int64_t S = shape_numel(dims);
    const std::vector<int64_t> ds = contiguous_strides(dims);
    std::vector<float> lo(r), hi(r);
    for (int64_t i = 0; i < r; ++i) {
      lo[i] = align_ ? 0.f : -0.5f;
      hi[i] = align_ ? static_cast<float>(dims[i] - 1) : static_cast<float>(dims[i]) - 0.5f;
    }
    typed::dispatch(x.dtype, "GridSample", [&](auto tag) {
      using T = typename decltype(tag)::type;
      if constexpr (!is_float_v<T>) {
        fail(ErrorCode::kUnsupported, "GridSample of ", dtype_name(x.dtype), " has no native kernel");
      } else {
        MOPT_ENSURE(grid.dtype == x.dtype, "grid is ", dtype_name(grid.dtype), ", X is ", dtype_name(x.dtype));
        const T* xp = x.ptr<T>();
        const T* gp = grid.ptr<T>();
        T* yp = y.ptr<T>();
        const int taps = mode_ == 0 ? 1 : mode_ == 1 ? 2 : 4;
        std::vector<float> pos(r);
        std::vector<int64_t> base(r), idx(r);
        std::vector<std::array<double, 4>> w(r);
        for (int64_t n = 0; n < N; ++n)
          for (int64_t p = 0; p < P; ++p) {
            // the grid's last axis lists coordinates innermost dimension first
            for (int64_t i = 0; i < r; ++i) {
              const float g = static_cast<float>(load(gp[(n * P + p) * r + (r - 1 - i)]));
              const float len = static_cast<float>(dims[i]);
              float v = align_ ? (g + 1.f) / 2.f * (len - 1.f) : ((g + 1.f) * len - 1.f) / 2.f;
              if (mode_ == 0) v = std::nearbyint(v);
              if (v < lo[i] || v > hi[i]) {
                if (pad_ == 1) v = std::clamp(v, 0.f, len - 1.f);
                else if (pad_ == 2) v = reflect(v, lo[i], hi[i]);
              }
              pos[i] = v;
              if (mode_ == 0) {
                base[i] = static_cast<int64_t>(v);
                w[i][0] = 1;
              } else {
                const float f0 = std::floor(v);
                const double t = static_cast<double>(v - f0);
                base[i] = static_cast<int64_t>(f0) - (mode_ == 2 ? 1 : 0);
                if (mode_ == 1) {
                  w[i][0] = 1 - t;
                  w[i][1] = t;
                } else {
                  cubic(t, w[i]);
                }
              }
            }
            int64_t combos = 1;
            for (int64_t i = 0; i < r; ++i) combos *= taps;
            for (int64_t c = 0; c < C; ++c) {
              const T* plane = xp + (n * C + c) * S;
              double acc = 0;
              for (int64_t k = 0; k < combos; ++k) {
                int64_t rem = k, off = 0;
                double wt = 1;
                bool zero = false;
                for (int64_t i = r - 1; i >= 0; --i) {
                  const int64_t j = rem % taps;
                  rem /= taps;
                  int64_t at = base[i] + j;
                  wt *= w[i][j];
                  if (at < 0 || at >= dims[i]) {
                    if (pad_ == 0) {
                      zero = true;
                      break;
                    }
                    at = pad_ == 1 ? std::clamp<int64_t>(at, 0, dims[i] - 1)
                                   : static_cast<int64_t>(reflect(static_cast<float>(at), lo[i], hi[i]));
                    at = std::clamp<int64_t>(at, 0, dims[i] - 1);  // reflection lands inside; never read outside
                  }
                  off += at * ds[i];
                }
                if (!zero) acc += wt * static_cast<double>(load(plane[off]));
              }
              yp[(n * C + c) * P + p] = store<T>(acc);
            }
          }
      }
    });
  }

 private:
  // Reflects v into [lo, hi] by the nearer border, as often as needed.
  static float reflect(float v, float lo, float hi) {
    const float range = hi - lo;
    if (range <= 0) return lo;
    if (v < lo) {
      const float dx = lo - v;
      const int64_t n = static_cast<int64_t>(dx / range);
      const float rem = dx - static_cast<float>(n) * range;
      return n % 2 == 0 ? lo + rem : hi - rem;
    }
    if (v > hi) {
      const float dx = v - hi;
      const int64_t n = static_cast<int64_t>(dx / range);
      const float rem = dx - static_cast<float>(n) * range;
      return n % 2 == 0 ? hi - rem : lo + rem;
    }
    return v;
  }
  static void cubic(double t, std::array<double, 4>& c) {
    const double A = -0.75, t1 = t + 1, u = 1 - t, u1 = 2 - t;
    c[0] = ((A * t1 - 5 * A) * t1 + 8 * A) * t1 - 4 * A;
    c[1] = ((A + 2) * t - (A + 3)) * t * t + 1;
    c[2] = ((A + 2) * u - (A + 3)) * u * u + 1;
    c[3] = ((A * u1 - 5 * A) * u1 + 8 * A) * u1 - 4 * A;
  }

  int mode_, pad_;
  bool align_;
};

std::unique_ptr<Kernel> make_grid_sample(const KernelInit& i) { return std::make_unique<GridSampleKernel>(i); }

}  // namespace

void register_grid_ops(OpRegistry& r) {
  r.add({"", "GridSample", {DType::kF32, DType::kF64, DType::kF16}, &make_grid_sample});
}

}  // namespace mopt
