// DFT (opsets 17 and 20) in plain C++: a direct O(n * length) transform in double along one axis, of
// real ([..., 1]) or complex ([..., 2]) signals, with dft_length zero-padding or truncation, onesided
// output, and the inverse (full, or the one-sided irfft with its Hermitian extension, as numpy does).
// The axis comes from the opset-20 input, else the opset-17 attribute, else the opset's default,
// which the lowering writes as `_axis_default`.
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

}  // namespace

void register_dft_ops(OpRegistry& r) {
  r.add({"", "DFT", {DType::kF32, DType::kF64, DType::kF16}, &make_dft});
}

}  // namespace mopt
