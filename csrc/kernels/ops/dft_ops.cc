// DFT (opsets 17 and 20) in plain C++: a direct O(n * length) transform in double along one axis, of
// real ([..., 1]) or complex ([..., 2]) signals, with dft_length zero-padding or truncation, onesided
// output, and the inverse (full, or the one-sided irfft with its Hermitian extension, as numpy does).
// The axis comes from the opset-20 input, else the opset-17 attribute, else the opset's default,
// which the lowering writes as `_axis_default`. STFT (opset 17) too: the same direct transform of
// each windowed frame, with a twiddle table per frame length.
#include <limits>

#include "kernels/ops/typed.h"

namespace mopt {
namespace {

using typed::is_float_v;
using typed::load;
using typed::store;

class DftKernel final : public Kernel {
 public:
  explicit DftKernel(const KernelInit& init) {
    inverse_ = init.attrs.get_int("inverse", 0) != 0;
    onesided_ = init.attrs.get_int("onesided", 0) != 0;
    has_axis_attr_ = init.attrs.has("axis");
    axis_attr_ = init.attrs.get_int("axis", 0);
    MOPT_CHECK(has_axis_attr_ || init.attrs.has("_axis_default"), ErrorCode::kInvalidModel,
               "DFT without an axis needs the lowering's _axis_default");
    axis_default_ = init.attrs.get_int("_axis_default", 1);
    impl = "dft";
  }
  void run(KernelContext& ctx) override {
    const Tensor& x = ctx.in(0);
    const int64_t r = x.rank();
    MOPT_ENSURE(r >= 2 && (x.shape.back() == 1 || x.shape.back() == 2), "input must be [..., 1] (real) or [..., 2] "
                "(complex), got ", shape_str(x.shape));
    int64_t axis = has_axis_attr_ ? axis_attr_ : axis_default_;
    if (const Tensor* a = ctx.input(2); a && a->numel() > 0) {
      MOPT_ENSURE(a->numel() == 1, "axis must hold one value");
      axis = typed::index_at(*a, 0);
    }
    MOPT_ENSURE(axis >= -r && axis < r, "axis ", axis, " is out of range for rank ", r);
    axis = (axis + r) % r;
    MOPT_ENSURE(axis != r - 1, "axis must not be the last (real/imaginary) dimension");
    const int64_t n_in = x.shape[axis];
    int64_t L = inverse_ && onesided_ ? 2 * (n_in - 1) : n_in;
    if (const Tensor* d = ctx.input(1); d && d->numel() > 0) {
      MOPT_ENSURE(d->numel() == 1, "dft_length must hold one value");
      L = typed::index_at(*d, 0);
    }
    MOPT_ENSURE(L >= 1, "dft_length must be >= 1, got ", L);
    const bool complex_in = x.shape.back() == 2;
    const int64_t n_out = !inverse_ && onesided_ ? L / 2 + 1 : L;
    Shape out = x.shape;
    out[axis] = n_out;
    out.back() = inverse_ && onesided_ ? 1 : 2;
    Tensor& y = ctx.output(0, out);
    // (outer, axis, inner) with the real/imaginary pair inside `inner`
    int64_t outer = 1, inner = 1;
    for (int64_t d = 0; d < axis; ++d) outer *= x.shape[d];
    for (int64_t d = axis + 1; d < r - 1; ++d) inner *= x.shape[d];
    const int64_t cin = x.shape.back(), cout = out.back();
    const double two_pi = 6.283185307179586476925286766559;
    typed::dispatch(x.dtype, "DFT", [&](auto tag) {
      using T = typename decltype(tag)::type;
      if constexpr (!is_float_v<T>) {
        fail(ErrorCode::kUnsupported, "DFT of ", dtype_name(x.dtype), " has no native kernel");
      } else {
        const T* xp = x.ptr<T>();
        T* yp = y.ptr<T>();
        std::vector<double> re(static_cast<size_t>(L)), im(static_cast<size_t>(L));
        for (int64_t o = 0; o < outer; ++o)
          for (int64_t i = 0; i < inner; ++i) {
            // the signal along the axis, zero-padded or truncated to L
            for (int64_t t = 0; t < L; ++t) {
              re[t] = im[t] = 0;
              if (t < n_in) {
                const int64_t off = ((o * n_in + t) * inner + i) * cin;
                re[t] = static_cast<double>(load(xp[off]));
                if (complex_in) im[t] = static_cast<double>(load(xp[off + 1]));
              }
            }
            for (int64_t k = 0; k < n_out; ++k) {
              double sr = 0, si = 0;
              if (inverse_ && onesided_) {  // numpy.irfft: bins 0 .. L/2, Hermitian; DC/Nyquist imaginary parts dropped
                const int64_t half = L / 2;
                for (int64_t f = 0; f <= half && f < n_in; ++f) {
                  const double ang = two_pi * static_cast<double>((f * k) % L) / static_cast<double>(L);
                  const double c = std::cos(ang), s = std::sin(ang);
                  if (f == 0 || (L % 2 == 0 && f == half)) sr += re[f] * c;
                  else sr += 2 * (re[f] * c - im[f] * s);
                }
                sr /= static_cast<double>(L);
              } else {
                const double sign = inverse_ ? 1.0 : -1.0;
                for (int64_t t = 0; t < L; ++t) {
                  const double ang = sign * two_pi * static_cast<double>((t * k) % L) / static_cast<double>(L);
                  const double c = std::cos(ang), s = std::sin(ang);
                  sr += re[t] * c - im[t] * s;
                  si += re[t] * s + im[t] * c;
                }
                if (inverse_) {
                  sr /= static_cast<double>(L);
                  si /= static_cast<double>(L);
                }
              }
              const int64_t off = ((o * n_out + k) * inner + i) * cout;
              yp[off] = store<T>(sr);
              if (cout == 2) yp[off + 1] = store<T>(si);
            }
          }
      }
    });
  }

 private:
  bool inverse_, onesided_, has_axis_attr_;
  int64_t axis_attr_, axis_default_;
};

std::unique_ptr<Kernel> make_dft(const KernelInit& i) { return std::make_unique<DftKernel>(i); }

// STFT: signal (batch, length, 1 or 2) -> (batch, frames, bins, 2), frames = (length - L) / step + 1,
// bins = L / 2 + 1 when onesided; each frame multiplied by the window (ones when absent) and
// transformed. The window's length is the frame length unless frame_length says otherwise.
class StftKernel final : public Kernel {
 public:
  explicit StftKernel(const KernelInit& init) {
    onesided_ = init.attrs.get_int("onesided", 1) != 0;
    impl = "stft";
  }

  void run(KernelContext& ctx) override {
    const Tensor& x = ctx.in(0);
    MOPT_ENSURE(x.rank() == 3 && (x.shape[2] == 1 || x.shape[2] == 2), "signal must be (batch, length, 1) or "
                "(batch, length, 2), got ", shape_str(x.shape));
    const std::vector<int64_t> step_v = typed::ints_of(ctx.in(1), "frame_step");
    MOPT_ENSURE(step_v.size() == 1 && step_v[0] >= 1, "frame_step must be one value >= 1");
    const int64_t B = x.shape[0], n = x.shape[1], cin = x.shape[2], step = step_v[0];
    const Tensor* win = ctx.input(2);
    int64_t L = win ? (win->rank() == 1 ? win->shape[0] : -1) : n;
    MOPT_ENSURE(L >= 0, "window must be 1-D, got ", shape_str(win->shape));
    if (const Tensor* fl = ctx.input(3)) {
      const std::vector<int64_t> v = typed::ints_of(*fl, "frame_length");
      MOPT_ENSURE(v.size() == 1, "frame_length must be one value");
      MOPT_ENSURE(!win || v[0] == L, "frame_length (", v[0], ") differs from the window's length (", L, ")");
      L = v[0];
    }
    MOPT_ENSURE(L >= 1 && L <= n, "frame_length (", L, ") must be in [1, signal length ", n, "]");
    if (win) MOPT_ENSURE(win->dtype == x.dtype, "window is ", dtype_name(win->dtype), ", signal is ", dtype_name(x.dtype));
    const int64_t frames = (n - L) / step + 1, bins = onesided_ ? L / 2 + 1 : L;
    Tensor& y = ctx.output(0, {B, frames, bins, 2});
    if (y.numel() == 0) return;
    const double two_pi = 6.283185307179586476925286766559;
    std::vector<double> cs(static_cast<size_t>(L)), sn(static_cast<size_t>(L));
    for (int64_t t = 0; t < L; ++t) {
      cs[t] = std::cos(two_pi * static_cast<double>(t) / static_cast<double>(L));
      sn[t] = std::sin(two_pi * static_cast<double>(t) / static_cast<double>(L));
    }
    typed::dispatch(x.dtype, "STFT", [&](auto tag) {
      using T = typename decltype(tag)::type;
      if constexpr (!is_float_v<T>) {
        fail(ErrorCode::kUnsupported, "STFT of ", dtype_name(x.dtype), " has no native kernel");
      } else {
        const T* xp = x.ptr<T>();
        const T* wp = win ? win->ptr<T>() : nullptr;
        T* yp = y.ptr<T>();
        ctx.pool().parallel_for(B * frames, 1, [&](int64_t lo, int64_t hi) {
          std::vector<double> re(static_cast<size_t>(L)), im(static_cast<size_t>(L));
          for (int64_t bf = lo; bf < hi; ++bf) {
            const int64_t b = bf / frames, f = bf % frames;
            for (int64_t t = 0; t < L; ++t) {
              const double w = wp ? static_cast<double>(load(wp[t])) : 1.0;
              const int64_t off = (b * n + f * step + t) * cin;
              re[t] = w * static_cast<double>(load(xp[off]));
              im[t] = cin == 2 ? w * static_cast<double>(load(xp[off + 1])) : 0.0;
            }
            for (int64_t k = 0; k < bins; ++k) {
              double sr = 0, si = 0;
              for (int64_t t = 0; t < L; ++t) {  // e^{-2 pi i k t / L}
                const int64_t j = (k * t) % L;
                sr += re[t] * cs[j] + im[t] * sn[j];
                si += im[t] * cs[j] - re[t] * sn[j];
              }
              yp[(bf * bins + k) * 2] = store<T>(sr);
              yp[(bf * bins + k) * 2 + 1] = store<T>(si);
            }
          }
        });
      }
    });
  }

 private:
  bool onesided_ = true;
};

std::unique_ptr<Kernel> make_stft(const KernelInit& i) { return std::make_unique<StftKernel>(i); }

}  // namespace

void register_dft_ops(OpRegistry& r) {
  r.add({"", "DFT", {DType::kF32, DType::kF64, DType::kF16}, &make_dft});
  r.add({"", "STFT", {DType::kF32, DType::kF64, DType::kF16}, &make_stft});
}

}  // namespace mopt
