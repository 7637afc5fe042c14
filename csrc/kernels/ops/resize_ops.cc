// Resize (opsets 11-19 semantics with the opset-18/19 attributes) in plain C++: nearest (four
// rounding modes), linear and cubic, with antialiasing, every coordinate transformation mode,
// exclude_outside, extrapolation for tf_crop_and_resize, axes and keep_aspect_ratio_policy.
// Interpolation is separable, so each resized axis is one pass of per-output-position taps
// (source index, weight) over a double buffer; the result is rounded and clamped to the type.
#include <limits>

#include "kernels/ops/typed.h"

namespace mopt {
namespace {

using typed::load;
using typed::store;

enum class Mode { kNearest, kLinear, kCubic };
enum class Coord { kHalfPixel, kHalfPixelSymmetric, kPytorchHalfPixel, kAlignCorners, kAsymmetric, kTfCropAndResize };
enum class Near { kRoundPreferFloor, kRoundPreferCeil, kFloor, kCeil };

struct Taps {
  int n = 0;                 // taps per output position
  std::vector<int64_t> idx;  // [out * n + k], clamped to the input
  std::vector<double> w;
  std::vector<bool> extrapolated;  // per output position (tf_crop_and_resize)
};

class ResizeKernel final : public Kernel {
 public:
  explicit ResizeKernel(const KernelInit& init) {
    const Attrs& a = init.attrs;
    const std::string mode = a.get_string("mode", "nearest");
    if (mode == "nearest") mode_ = Mode::kNearest;
    else if (mode == "linear") mode_ = Mode::kLinear;
    else if (mode == "cubic") mode_ = Mode::kCubic;
    else fail(ErrorCode::kInvalidModel, "mode '", mode, "' is not nearest, linear or cubic");
    const std::string ct = a.get_string("coordinate_transformation_mode", "half_pixel");
    static const std::pair<const char*, Coord> coords[] = {
        {"half_pixel", Coord::kHalfPixel}, {"half_pixel_symmetric", Coord::kHalfPixelSymmetric},
        {"pytorch_half_pixel", Coord::kPytorchHalfPixel}, {"align_corners", Coord::kAlignCorners},
        {"asymmetric", Coord::kAsymmetric}, {"tf_crop_and_resize", Coord::kTfCropAndResize}};
    bool found = false;
    for (const auto& c : coords)
      if (ct == c.first) {
        coord_ = c.second;
        found = true;
      }
    MOPT_CHECK(found, ErrorCode::kInvalidModel, "coordinate_transformation_mode '", ct, "' is not supported");
    const std::string nm = a.get_string("nearest_mode", "round_prefer_floor");
    if (nm == "round_prefer_floor") near_ = Near::kRoundPreferFloor;
    else if (nm == "round_prefer_ceil") near_ = Near::kRoundPreferCeil;
    else if (nm == "floor") near_ = Near::kFloor;
    else if (nm == "ceil") near_ = Near::kCeil;
    else fail(ErrorCode::kInvalidModel, "nearest_mode '", nm, "' is not supported");
    const std::string kp = a.get_string("keep_aspect_ratio_policy", "stretch");
    MOPT_CHECK(kp == "stretch" || kp == "not_larger" || kp == "not_smaller", ErrorCode::kInvalidModel,
               "keep_aspect_ratio_policy '", kp, "' is not supported");
    policy_ = kp == "stretch" ? 0 : kp == "not_larger" ? 1 : 2;
    antialias_ = a.get_int("antialias", 0) != 0;
    MOPT_CHECK(!(antialias_ && mode_ == Mode::kNearest), ErrorCode::kInvalidModel,
               "antialias is not supported for mode nearest");
    cubic_a_ = a.get_float("cubic_coeff_a", -0.75);
    exclude_outside_ = a.get_int("exclude_outside", 0) != 0;
    extrapolation_ = a.get_float("extrapolation_value", 0.0);
    axes_ = a.get_ints("axes", {});
    impl = "resize";
  }

  void run(KernelContext& ctx) override {
    const Tensor& x = ctx.in(0);
    const int64_t r = x.rank();
    std::vector<int64_t> axes;
    for (int64_t ax : axes_) axes.push_back(normalize_axis(ax, r));
    if (axes.empty())
      for (int64_t d = 0; d < r; ++d) axes.push_back(d);
    const size_t na = axes.size();
    for (size_t i = 0; i < na; ++i)
      for (size_t j = 0; j < i; ++j) MOPT_ENSURE(axes[i] != axes[j], "axes repeat axis ", axes[i]);
    const Tensor* roi_t = ctx.input(1);
    const Tensor* scales_t = ctx.input(2);
    const Tensor* sizes_t = ctx.input(3);
    if (scales_t && scales_t->numel() == 0) scales_t = nullptr;
    if (sizes_t && sizes_t->numel() == 0) sizes_t = nullptr;
    MOPT_ENSURE((scales_t != nullptr) != (sizes_t != nullptr), "exactly one of scales and sizes must be given");
    std::vector<double> scale(r, 1.0);
    Shape out = x.shape;
    if (scales_t) {
      MOPT_ENSURE(scales_t->numel() == static_cast<int64_t>(na), "scales has ", scales_t->numel(), " values for ", na,
                  " axes");
      for (size_t i = 0; i < na; ++i) {
        const double s = scalar_as_double(*scales_t, static_cast<int64_t>(i));
        MOPT_ENSURE(s > 0 && s < 1e9, "scale ", s, " must be positive");
        scale[axes[i]] = s;
        out[axes[i]] = static_cast<int64_t>(s * static_cast<double>(x.shape[axes[i]]));
      }
    } else {
      const std::vector<int64_t> sz = typed::ints_of(*sizes_t, "sizes");
      MOPT_ENSURE(sz.size() == na, "sizes has ", sz.size(), " values for ", na, " axes");
      for (size_t i = 0; i < na; ++i) {
        MOPT_ENSURE(sz[i] >= 0, "sizes ", shape_str(sz), " has a negative value");
        MOPT_ENSURE(x.shape[axes[i]] > 0, "cannot resize the empty axis ", axes[i], " to a size");
        out[axes[i]] = sz[i];
        scale[axes[i]] = static_cast<double>(sz[i]) / static_cast<double>(x.shape[axes[i]]);
      }
      if (policy_ != 0) {
        double s = scale[axes[0]];
        for (size_t i = 1; i < na; ++i) s = policy_ == 1 ? std::min(s, scale[axes[i]]) : std::max(s, scale[axes[i]]);
        for (size_t i = 0; i < na; ++i) {
          scale[axes[i]] = s;
          out[axes[i]] = static_cast<int64_t>(s * static_cast<double>(x.shape[axes[i]]) + 0.5);
        }
      }
    }
    std::vector<double> roi_lo(r, 0.0), roi_hi(r, 1.0);
    bool has_roi = false;
    if (roi_t && roi_t->numel() > 0 && coord_ == Coord::kTfCropAndResize) {
      MOPT_ENSURE(roi_t->numel() == static_cast<int64_t>(2 * na), "roi has ", roi_t->numel(), " values for ", na,
                  " axes (needs ", 2 * na, ")");
      for (size_t i = 0; i < na; ++i) {
        roi_lo[axes[i]] = scalar_as_double(*roi_t, static_cast<int64_t>(i));
        roi_hi[axes[i]] = scalar_as_double(*roi_t, static_cast<int64_t>(na + i));
      }
      has_roi = true;
    }
    MOPT_ENSURE(coord_ != Coord::kTfCropAndResize || has_roi, "tf_crop_and_resize needs a roi");
    Tensor& y = ctx.output(0, out);
    // the data in double, one axis resized at a time
    std::vector<double> cur(static_cast<size_t>(x.numel()));
    typed::dispatch(x.dtype, "Resize", [&](auto tag) {
      using T = typename decltype(tag)::type;
      const T* xp = x.ptr<T>();
      for (int64_t i = 0; i < x.numel(); ++i) cur[i] = static_cast<double>(load(xp[i]));
    });
    Shape shape = x.shape;
    for (int64_t ax : axes) {
      const bool trivial = std::fabs(scale[ax] - 1.0) <= 1e-9 && out[ax] == shape[ax] &&
                           (!has_roi || (std::fabs(roi_lo[ax]) <= 1e-9 && std::fabs(roi_hi[ax] - 1.0) <= 1e-9));
      if (trivial) continue;
      Shape next = shape;
      next[ax] = out[ax];
      std::vector<double> dst(static_cast<size_t>(shape_numel(next)));
      if (!dst.empty()) {
        MOPT_ENSURE(shape[ax] > 0, "cannot interpolate from the empty axis ", ax);
        const Taps taps = make_taps(shape[ax], out[ax], scale[ax], roi_lo[ax], roi_hi[ax]);
        const typed::AxisSplit in = typed::split_at(shape, ax);
        const int64_t on = out[ax];
        for (int64_t o = 0; o < in.outer; ++o)
          for (int64_t j = 0; j < on; ++j)
            for (int64_t i = 0; i < in.inner; ++i) {
              double v;
              if (!taps.extrapolated.empty() && taps.extrapolated[j]) {
                v = extrapolation_;
              } else {
                v = 0;
                for (int k = 0; k < taps.n; ++k)
                  v += taps.w[j * taps.n + k] * cur[(o * in.dim + taps.idx[j * taps.n + k]) * in.inner + i];
              }
              dst[(o * on + j) * in.inner + i] = v;
            }
      }
      cur.swap(dst);
      shape = next;
    }
    typed::dispatch(x.dtype, "Resize", [&](auto tag) {
      using T = typename decltype(tag)::type;
      T* yp = y.ptr<T>();
      for (int64_t i = 0; i < y.numel(); ++i) yp[i] = saturate<T>(cur[i]);
    });
  }

 private:
  // numpy_helper.saturate_cast: integers round half to even, then everything clamps to the type's range
  template <class T>
  static T saturate(double v) {
    if constexpr (std::is_same_v<T, bool>) {
      return v != 0;
    } else if constexpr (std::is_integral_v<T>) {
      if (v != v) return T(0);
      v = std::nearbyint(v);
      v = std::clamp(v, static_cast<double>(std::numeric_limits<T>::lowest()), static_cast<double>(std::numeric_limits<T>::max()));
      return static_cast<T>(v);
    } else if constexpr (std::is_same_v<T, typed::Half>) {
      if (v == v) v = std::clamp(v, -65504.0, 65504.0);
      return store<T>(v);
    } else if constexpr (std::is_same_v<T, typed::BF16>) {
      if (v == v) v = std::clamp(v, -3.3895313892515355e38, 3.3895313892515355e38);
      return store<T>(v);
    } else {
      if (v == v) v = std::clamp(v, static_cast<double>(std::numeric_limits<T>::lowest()), static_cast<double>(std::numeric_limits<T>::max()));
      return static_cast<T>(v);
    }
  }

  // The weights of the taps around a source coordinate, `ratio` its distance past the tap below
  // (1 when it sits exactly on a sample).
  std::vector<double> coeffs(double ratio, double scale) const {
    if (mode_ == Mode::kNearest) {
      if (ratio == 1.0) return {0, 1};
      switch (near_) {
        case Near::kRoundPreferFloor: return {ratio <= 0.5 ? 1.0 : 0.0, ratio > 0.5 ? 1.0 : 0.0};
        case Near::kRoundPreferCeil: return {ratio < 0.5 ? 1.0 : 0.0, ratio >= 0.5 ? 1.0 : 0.0};
        case Near::kFloor: return {1, 0};
        default: return {0, 1};
      }
    }
    if (mode_ == Mode::kLinear) {
      if (!antialias_) return {1 - ratio, ratio};
      const double s = std::min(scale, 1.0);
      const int64_t start = static_cast<int64_t>(std::floor(-1 / s) + 1), n = 2 - 2 * start;
      std::vector<double> c(static_cast<size_t>(n));
      double sum = 0;
      for (int64_t i = 0; i < n; ++i) {
        c[i] = std::clamp(1 - std::fabs((static_cast<double>(start + i) - ratio) * s), 0.0, 1.0);
        sum += c[i];
      }
      for (double& v : c) v /= sum;
      return c;
    }
    const double A = cubic_a_;
    if (!antialias_) {
      const double r1 = ratio + 1, q = 1 - ratio, q1 = q + 1;
      return {((A * r1 - 5 * A) * r1 + 8 * A) * r1 - 4 * A, ((A + 2) * ratio - (A + 3)) * ratio * ratio + 1,
              ((A + 2) * q - (A + 3)) * q * q + 1, ((A * q1 - 5 * A) * q1 + 8 * A) * q1 - 4 * A};
    }
    const double s = std::min(scale, 1.0);
    const int64_t start = static_cast<int64_t>(std::floor(-2 / s) + 1), end = 2 - start;
    std::vector<double> c;
    double sum = 0;
    for (int64_t i = start; i < end; ++i) {
      const double t = std::fabs(s * (static_cast<double>(i) - ratio)), t2 = t * t, t3 = t2 * t;
      const double v = t <= 1 ? (A + 2) * t3 - (A + 3) * t2 + 1 : t < 2 ? A * t3 - 5 * A * t2 + 8 * A * t - 4 * A : 0.0;
      c.push_back(v);
      sum += v;
    }
    for (double& v : c) v /= sum;
    return c;
  }

  Taps make_taps(int64_t in, int64_t out, double scale, double lo, double hi) const {
    Taps t;
    const double out_f = scale * static_cast<double>(in);  // the unrounded output length
    const double inf = static_cast<double>(in);
    if (coord_ == Coord::kTfCropAndResize) t.extrapolated.assign(static_cast<size_t>(out), false);
    for (int64_t j = 0; j < out; ++j) {
      const double yj = static_cast<double>(j);
      double xo = 0;
      switch (coord_) {
        case Coord::kAlignCorners: xo = out_f == 1 ? 0.0 : yj * (inf - 1) / (out_f - 1); break;
        case Coord::kAsymmetric: xo = yj / scale; break;
        case Coord::kTfCropAndResize:
          xo = out_f == 1 ? (hi - lo) * (inf - 1) / 2 : yj * (hi - lo) * (inf - 1) / (out_f - 1);
          xo += lo * (inf - 1);
          t.extrapolated[j] = xo < 0 || xo > inf - 1;
          break;
        case Coord::kPytorchHalfPixel: xo = out_f == 1 ? -0.5 : (yj + 0.5) / scale - 0.5; break;
        case Coord::kHalfPixel: xo = (yj + 0.5) / scale - 0.5; break;
        case Coord::kHalfPixelSymmetric: {
          const double adjustment = static_cast<double>(out) / out_f, center = inf / 2;
          xo = center * (1 - adjustment) + (yj + 0.5) / scale - 0.5;
          break;
        }
      }
      const double fl = std::floor(xo);
      const double ratio = xo == fl ? 1.0 : xo - fl;
      std::vector<double> c = coeffs(ratio, scale);
      const int n = static_cast<int>(c.size());
      if (t.n == 0) {
        t.n = n;
        t.idx.resize(static_cast<size_t>(out * n));
        t.w.resize(static_cast<size_t>(out * n));
      }
      MOPT_CHECK(n == t.n, ErrorCode::kInternal, "tap count changed along an axis");
      // the n samples nearest xo, preferring lower ones, as indices of the edge-padded axis
      const int64_t pad = (n + 1) / 2;
      const double xp = xo + static_cast<double>(pad);
      const double p = std::floor(xp), frac = xp - p;
      int64_t off;
      if (n % 2 == 0) off = frac == 0 ? -(n / 2) : -(n / 2) + 1;
      else off = frac <= 0.5 ? -((n - 1) / 2) : -((n - 1) / 2) + 1;
      const int64_t start = static_cast<int64_t>(p) + off - pad;
      if (exclude_outside_) {
        double sum = 0;
        for (int k = 0; k < n; ++k) {
          const int64_t i = start + k;
          if (i < 0 || i >= in) c[k] = 0;
          sum += c[k];
        }
        if (sum == 0) sum = 1;
        for (double& v : c) v /= sum;
      }
      for (int k = 0; k < n; ++k) {
        t.idx[j * n + k] = std::clamp<int64_t>(start + k, 0, in - 1);
        t.w[j * n + k] = c[k];
      }
    }
    return t;
  }

  Mode mode_;
  Coord coord_ = Coord::kHalfPixel;
  Near near_;
  int policy_;
  bool antialias_, exclude_outside_;
  double cubic_a_, extrapolation_;
  std::vector<int64_t> axes_;
};

std::unique_ptr<Kernel> make_resize(const KernelInit& i) { return std::make_unique<ResizeKernel>(i); }

}  // namespace

void register_resize_ops(OpRegistry& r) {
  using D = DType;
  r.add({"", "Resize", {D::kF32, D::kF64, D::kF16, D::kI8, D::kU8, D::kI16, D::kU16, D::kI32, D::kI64}, &make_resize});
}

}  // namespace mopt
