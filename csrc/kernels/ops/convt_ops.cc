// ConvTranspose in plain C++ (N-D, groups, strides, dilations, pads, output_padding, output_shape,
// SAME_UPPER / SAME_LOWER), accumulating in double: every input element scatters its kernel-weighted
// value to the output positions i * stride + k * dilation - pad_begin that fall inside the output.
#include <limits>

#include "kernels/ops/typed.h"

namespace mopt {
namespace {

using typed::is_float_v;
using typed::load;
using typed::store;

class ConvTransposeKernel final : public Kernel {
 public:
  explicit ConvTransposeKernel(const KernelInit& init) {
    const Attrs& a = init.attrs;
    auto_pad_ = a.get_string("auto_pad", "NOTSET");
    MOPT_CHECK(auto_pad_ == "NOTSET" || auto_pad_ == "SAME_UPPER" || auto_pad_ == "SAME_LOWER" || auto_pad_ == "VALID",
               ErrorCode::kInvalidModel, "auto_pad '", auto_pad_, "' is not supported");
    dil_ = a.get_ints("dilations", {});
    group_ = a.get_int("group", 1);
    MOPT_CHECK(group_ >= 1, ErrorCode::kInvalidModel, "group must be >= 1");
    out_pad_ = a.get_ints("output_padding", {});
    out_shape_ = a.get_ints("output_shape", {});
    pads_ = a.get_ints("pads", {});
    has_pads_ = a.has("pads");
    strides_ = a.get_ints("strides", {});
    impl = "conv_transpose";
  }

  void run(KernelContext& ctx) override {
    const Tensor& x = ctx.in(0);
    const Tensor& w = ctx.in(1);
    const Tensor* b = ctx.input(2);
    const int64_t r = x.rank() - 2;
    MOPT_ENSURE(r >= 1 && w.rank() == r + 2, "X ", shape_str(x.shape), " and W ", shape_str(w.shape),
                " must be (N, C, spatial...) and (C, M/group, kernel...)");
    const int64_t N = x.shape[0], C = x.shape[1], Mg = w.shape[1], M = Mg * group_;
    MOPT_ENSURE(C % group_ == 0 && w.shape[0] == C, "W ", shape_str(w.shape), " must have ", C,
                " input channels, and group ", group_, " must divide them");
    MOPT_ENSURE(w.dtype == x.dtype, "W type differs from X");
    if (b) MOPT_ENSURE(b->numel() == M && b->dtype == x.dtype, "B must hold ", M, " values of X's type");
    auto per_dim = [&](const std::vector<int64_t>& v, int64_t dflt, const char* what) {
      if (v.empty()) return std::vector<int64_t>(static_cast<size_t>(r), dflt);
      MOPT_ENSURE(static_cast<int64_t>(v.size()) == r, what, " has ", v.size(), " values for ", r, " spatial dims");
      return v;
    };
    const std::vector<int64_t> st = per_dim(strides_, 1, "strides"), dl = per_dim(dil_, 1, "dilations");
    const std::vector<int64_t> op = per_dim(out_pad_, 0, "output_padding");
    for (int64_t i = 0; i < r; ++i) MOPT_ENSURE(st[i] >= 1 && dl[i] >= 1, "strides and dilations must be >= 1");
    Shape in(x.shape.begin() + 2, x.shape.end()), ks(w.shape.begin() + 2, w.shape.end()), out(r);
    std::vector<int64_t> pb(r, 0);  // padding at the start of each spatial dim
    const bool same = auto_pad_ == "SAME_UPPER" || auto_pad_ == "SAME_LOWER";
    for (int64_t i = 0; i < r; ++i) {
      const int64_t full = st[i] * (in[i] - 1) + op[i] + (ks[i] - 1) * dl[i] + 1;
      if (has_pads_ && !same) {
        MOPT_ENSURE(static_cast<int64_t>(pads_.size()) == 2 * r, "pads has ", pads_.size(), " values, needs ", 2 * r);
        pb[i] = pads_[i];
        out[i] = out_shape_.empty() ? full - pads_[i] - pads_[r + i] : out_shape_[out_shape_.size() - r + i];
      } else if (same) {
        out[i] = out_shape_.empty() ? in[i] * st[i] : out_shape_[out_shape_.size() - r + i];
        const int64_t total = full - out[i];
        // floor division, as Python's // (total may be negative)
        const int64_t half = total >= 0 ? total / 2 : -((-total + 1) / 2);
        pb[i] = auto_pad_ == "SAME_UPPER" ? half : total - half;
      } else {
        out[i] = out_shape_.empty() ? full : out_shape_[out_shape_.size() - r + i];
      }
      MOPT_ENSURE(out[i] >= 0, "the output would have a negative size in spatial dim ", i);
    }
    Shape yshape = {N, M};
    yshape.insert(yshape.end(), out.begin(), out.end());
    Tensor& y = ctx.output(0, yshape);
    if (y.numel() == 0) return;
    const int64_t isz = shape_numel(in), osz = shape_numel(out), ksz = shape_numel(ks);
    // per kernel position and input position, the output offset (or -1): computed per dim
    std::vector<std::vector<int64_t>> dst(static_cast<size_t>(r));  // [dim][i * k + kk]
    for (int64_t d = 0; d < r; ++d) {
      dst[d].resize(static_cast<size_t>(in[d] * ks[d]));
      for (int64_t i = 0; i < in[d]; ++i)
        for (int64_t kk = 0; kk < ks[d]; ++kk) {
          const int64_t o = i * st[d] + kk * dl[d] - pb[d];
          dst[d][i * ks[d] + kk] = (o >= 0 && o < out[d]) ? o : -1;
        }
    }
    const std::vector<int64_t> ocs = contiguous_strides(out), ics = contiguous_strides(in), kcs = contiguous_strides(ks);
    typed::dispatch(x.dtype, "ConvTranspose", [&](auto tag) {
      using T = typename decltype(tag)::type;
      if constexpr (!is_float_v<T>) {
        fail(ErrorCode::kUnsupported, "ConvTranspose of ", dtype_name(x.dtype), " has no native kernel");
      } else {
        const T* xp = x.ptr<T>();
        const T* wp = w.ptr<T>();
        T* yp = y.ptr<T>();
        const int64_t Cg = C / group_;
        ctx.pool().parallel_for(N * M, 1, [&](int64_t lo, int64_t hi) {
          std::vector<double> acc(static_cast<size_t>(osz));
          for (int64_t t = lo; t < hi; ++t) {
            const int64_t n = t / M, m = t % M, g = m / Mg, mg = m % Mg;
            std::fill(acc.begin(), acc.end(), b ? static_cast<double>(load(b->ptr<T>()[m])) : 0.0);
            for (int64_t c = g * Cg; c < (g + 1) * Cg; ++c) {
              const T* xc = xp + (n * C + c) * isz;
              const T* wc = wp + (c * Mg + mg) * ksz;
              for (int64_t ii = 0; ii < isz; ++ii) {
                const double xv = static_cast<double>(load(xc[ii]));
                for (int64_t kk = 0; kk < ksz; ++kk) {
                  int64_t off = 0;
                  bool inside = true;
                  for (int64_t d = 0; d < r && inside; ++d) {
                    const int64_t id = (ii / ics[d]) % in[d], kd = (kk / kcs[d]) % ks[d];
                    const int64_t o = dst[d][id * ks[d] + kd];
                    if (o < 0) inside = false;
                    else off += o * ocs[d];
                  }
                  if (inside) acc[off] += xv * static_cast<double>(load(wc[kk]));
                }
              }
            }
            for (int64_t o = 0; o < osz; ++o) yp[t * osz + o] = store<T>(acc[o]);
          }
        });
      }
    });
  }

 private:
  std::string auto_pad_;
  std::vector<int64_t> dil_, out_pad_, out_shape_, pads_, strides_;
  int64_t group_;
  bool has_pads_;
};

std::unique_ptr<Kernel> make_conv_transpose(const KernelInit& i) { return std::make_unique<ConvTransposeKernel>(i); }

}  // namespace

void register_convt_ops(OpRegistry& r) {
  r.add({"", "ConvTranspose", {DType::kF32, DType::kF64, DType::kF16}, &make_conv_transpose});
}

}  // namespace mopt
