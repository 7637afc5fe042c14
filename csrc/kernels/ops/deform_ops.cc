// DeformConv (opsets 19/22) in plain C++ for float32/64/16, any number of spatial dimensions: each
// kernel tap reads the input at its regular position plus a learned offset, by multilinear
// interpolation (positions outside the input read zero), scaled by the optional mask. Per sample
// the taps are gathered into columns (input channel, tap, output position) once, shared by every
// output channel of the group, then contracted with the weights; arithmetic in double.
#include <cmath>

#include "kernels/ops/typed.h"

namespace mopt {
namespace {

using typed::load;
using typed::store;

class DeformConvKernel final : public Kernel {
 public:
  explicit DeformConvKernel(const KernelInit& init) {
    group_ = init.attrs.get_int("group", 1);
    offset_group_ = init.attrs.get_int("offset_group", 1);
    MOPT_CHECK(group_ >= 1 && offset_group_ >= 1, ErrorCode::kInvalidModel, "group and offset_group must be >= 1");
    ks_ = init.attrs.get_ints("kernel_shape", {});
    strides_ = init.attrs.get_ints("strides", {});
    dil_ = init.attrs.get_ints("dilations", {});
    pads_ = init.attrs.get_ints("pads", {});
    impl = "deform_conv";
  }

  void run(KernelContext& ctx) override {
    const Tensor& x = ctx.in(0);
    const Tensor& w = ctx.in(1);
    const Tensor& off = ctx.in(2);
    const Tensor* b = ctx.input(3);
    const Tensor* mask = ctx.input(4);
    const int64_t r = x.rank() - 2;
    MOPT_ENSURE(r >= 1 && w.rank() == x.rank() && off.rank() == x.rank(), "X ", shape_str(x.shape), ", W ",
                shape_str(w.shape), " and offset ", shape_str(off.shape), " must all be (N or M, C, D1, ...) of one rank");
    const int64_t N = x.shape[0], C = x.shape[1], M = w.shape[0], CG = w.shape[1], G = group_, OG = offset_group_;
    MOPT_ENSURE(C == CG * G && M % G == 0, "W ", shape_str(w.shape), " does not fit X ", shape_str(x.shape), " with group ",
                G);
    MOPT_ENSURE(C % OG == 0, "offset_group (", OG, ") does not divide the ", C, " input channels");
    const Shape in(x.shape.begin() + 2, x.shape.end()), k(w.shape.begin() + 2, w.shape.end());
    MOPT_ENSURE(ks_.empty() || ks_ == std::vector<int64_t>(k.begin(), k.end()), "kernel_shape disagrees with W ",
                shape_str(w.shape));
    const std::vector<int64_t> st = strides_.empty() ? std::vector<int64_t>(r, 1) : strides_;
    const std::vector<int64_t> dl = dil_.empty() ? std::vector<int64_t>(r, 1) : dil_;
    const std::vector<int64_t> pd = pads_.empty() ? std::vector<int64_t>(2 * r, 0) : pads_;
    MOPT_ENSURE(static_cast<int64_t>(st.size()) == r && static_cast<int64_t>(dl.size()) == r &&
                    static_cast<int64_t>(pd.size()) == 2 * r,
                "strides, dilations and pads disagree with the ", r, " spatial dimensions of X");
    Shape out(r);
    for (int64_t i = 0; i < r; ++i) {
      MOPT_ENSURE(st[i] >= 1 && dl[i] >= 1, "strides and dilations must be >= 1");
      out[i] = (in[i] + pd[i] + pd[r + i] - (k[i] - 1) * dl[i] - 1) / st[i] + 1;
    }
    const int64_t KS = shape_numel(k), OS = shape_numel(out), S = shape_numel(in);
    Shape want_off = {N, OG * KS * r};
    want_off.insert(want_off.end(), out.begin(), out.end());
    MOPT_ENSURE(off.shape == want_off, "offset must be ", shape_str(want_off), " (N, offset_group * taps * ", r,
                ", output dims), got ", shape_str(off.shape));
    if (mask) {
      Shape want_mask = {N, OG * KS};
      want_mask.insert(want_mask.end(), out.begin(), out.end());
      MOPT_ENSURE(mask->shape == want_mask, "mask must be ", shape_str(want_mask), ", got ", shape_str(mask->shape));
    }
    if (b) MOPT_ENSURE(b->rank() == 1 && b->numel() == M, "B must be (", M, "), got ", shape_str(b->shape));
    for (const Tensor* t : {&w, &off, b, mask})
      if (t) MOPT_ENSURE(t->dtype == x.dtype, "every input must be ", dtype_name(x.dtype), ", got ", dtype_name(t->dtype));
    Shape ys = {N, M};
    ys.insert(ys.end(), out.begin(), out.end());
    Tensor& y = ctx.output(0, ys);
    if (y.numel() == 0) return;
    for (int64_t d : in) MOPT_ENSURE(d > 0, "X has an empty spatial dimension: ", shape_str(x.shape));
    typed::dispatch(x.dtype, "DeformConv", [&](auto tag) {
      using T = typename decltype(tag)::type;
      if constexpr (!typed::is_float_v<T>) {
        fail(ErrorCode::kUnsupported, "DeformConv of ", dtype_name(x.dtype), " has no native kernel");
      } else {
        const T* xp = x.ptr<T>();
        const T* wp = w.ptr<T>();
        const T* op = off.ptr<T>();
        const T* mp = mask ? mask->ptr<T>() : nullptr;
        T* yp = y.ptr<T>();
        const std::vector<int64_t> ist = contiguous_strides(in);
        const int64_t corners = int64_t{1} << r, CPO = C / OG;
        std::vector<double> cols(static_cast<size_t>(C * KS * OS));
        for (int64_t n = 0; n < N; ++n) {
          // columns: cols[c][tap][p] = mask * the input of channel c sampled at the tap's moved position
          ctx.pool().parallel_for(OG * KS, 1, [&](int64_t lo, int64_t hi) {
            std::vector<int64_t> o(r), kt(r), base(r);
            std::vector<double> frac(r);
            std::vector<int64_t> offs(static_cast<size_t>(corners));
            std::vector<double> wts(static_cast<size_t>(corners));
            for (int64_t t = lo; t < hi; ++t) {
              const int64_t og = t / KS, tap = t % KS;
              int64_t rem = tap;
              for (int64_t i = r - 1; i >= 0; --i) {
                kt[i] = rem % k[i] * dl[i];
                rem /= k[i];
              }
              for (int64_t p = 0; p < OS; ++p) {
                rem = p;
                for (int64_t i = r - 1; i >= 0; --i) {
                  o[i] = rem % out[i];
                  rem /= out[i];
                }
                for (int64_t i = 0; i < r; ++i) {
                  const double dv = static_cast<double>(load(op[((n * OG + og) * KS * r + tap * r + i) * OS + p]));
                  const double pos = static_cast<double>(o[i] * st[i] - pd[i] + kt[i]) + dv;
                  const double f = std::floor(pos);
                  base[i] = static_cast<int64_t>(f);
                  frac[i] = pos - f;
                }
                for (int64_t c = 0; c < corners; ++c) {
                  double wt = 1;
                  int64_t at_off = 0;
                  for (int64_t i = 0; i < r && wt != 0; ++i) {
                    const int64_t hi_bit = (c >> (r - 1 - i)) & 1, at = base[i] + hi_bit;
                    wt *= hi_bit ? frac[i] : 1 - frac[i];
                    if (at < 0 || at >= in[i]) wt = 0;  // outside the input: reads zero
                    at_off += at * ist[i];
                  }
                  wts[c] = wt;
                  offs[c] = wt != 0 ? at_off : 0;
                }
                const double mv = mp ? static_cast<double>(load(mp[((n * OG + og) * KS + tap) * OS + p])) : 1.0;
                for (int64_t ci = og * CPO; ci < (og + 1) * CPO; ++ci) {
                  const T* plane = xp + (n * C + ci) * S;
                  double v = 0;
                  for (int64_t c = 0; c < corners; ++c)
                    if (wts[c] != 0) v += wts[c] * static_cast<double>(load(plane[offs[c]]));
                  cols[(ci * KS + tap) * OS + p] = v * mv;
                }
              }
            }
          });
          ctx.pool().parallel_for(M, 1, [&](int64_t lo, int64_t hi) {
            std::vector<double> acc(static_cast<size_t>(OS));
            for (int64_t m = lo; m < hi; ++m) {
              const int64_t g = m / (M / G);
              std::fill(acc.begin(), acc.end(), b ? static_cast<double>(load(b->ptr<T>()[m])) : 0.0);
              for (int64_t cg = 0; cg < CG; ++cg)
                for (int64_t tap = 0; tap < KS; ++tap) {
                  const double wv = static_cast<double>(load(wp[(m * CG + cg) * KS + tap]));
                  if (wv == 0) continue;
                  const double* col = cols.data() + ((g * CG + cg) * KS + tap) * OS;
                  for (int64_t p = 0; p < OS; ++p) acc[p] += wv * col[p];
                }
              for (int64_t p = 0; p < OS; ++p) yp[(n * M + m) * OS + p] = store<T>(acc[p]);
            }
          });
        }
      }
    });
  }

 private:
  int64_t group_ = 1, offset_group_ = 1;
  std::vector<int64_t> ks_, strides_, dil_, pads_;
};

std::unique_ptr<Kernel> make_deform_conv(const KernelInit& i) { return std::make_unique<DeformConvKernel>(i); }

}  // namespace

void register_deform_ops(OpRegistry& r) {
  r.add({"", "DeformConv", {DType::kF32, DType::kF64, DType::kF16}, &make_deform_conv});
}

}  // namespace mopt
