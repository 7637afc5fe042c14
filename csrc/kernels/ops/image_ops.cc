// AffineGrid (opset 20) and Col2Im (opset 18) in plain C++.
//   AffineGrid  theta (N, 2, 3) or (N, 3, 4), size (N, C, H, W) or (N, C, D, H, W) -> the sampling
//               grid (N, H, W, 2) or (N, D, H, W, 3) of GridSample: theta times the homogeneous
//               coordinates of each output pixel in [-1, 1] (pixel centres, or corners with
//               align_corners), innermost dimension first; in double, as the reference.
//   Col2Im      input (N, C * prod(block), L) -> image (N, C, *image_shape): each column's block is
//               added back at its sliding position (strides, dilations, pads), any number of dims.
#include <cmath>

#include "kernels/ops/typed.h"

namespace mopt {
namespace {

using typed::load;
using typed::store;

class AffineGridKernel final : public Kernel {
 public:
  explicit AffineGridKernel(const KernelInit& init) {
    align_ = init.attrs.get_int("align_corners", 0) != 0;
    impl = "affine_grid";
  }

  void run(KernelContext& ctx) override {
    const Tensor& theta = ctx.in(0);
    const std::vector<int64_t> size = typed::ints_of(ctx.in(1), "size");
    MOPT_ENSURE(size.size() == 4 || size.size() == 5, "size must have 4 (N, C, H, W) or 5 (N, C, D, H, W) values, got ",
                size.size());
    const int64_t r = static_cast<int64_t>(size.size()) - 2, N = size[0];
    MOPT_ENSURE(theta.rank() == 3 && theta.shape[0] == N && theta.shape[1] == r && theta.shape[2] == r + 1, "theta ",
                shape_str(theta.shape), " must be (N, ", r, ", ", r + 1, ") for size N = ", N);
    for (int64_t v : size) MOPT_ENSURE(v >= 0, "size has a negative value ", v);
    Shape out = {N};
    out.insert(out.end(), size.begin() + 2, size.end());
    out.push_back(r);
    Tensor& y = ctx.output(0, out);
    if (y.numel() == 0) return;
    // base coordinates of each dimension (dims in size order: D, H, W)
    std::vector<std::vector<double>> base(r);
    for (int64_t i = 0; i < r; ++i) {
      const int64_t n = size[2 + i];
      base[i].resize(n);
      for (int64_t k = 0; k < n; ++k) {
        if (align_) base[i][k] = n == 1 ? -1.0 : -1.0 + static_cast<double>(k) * (2.0 / static_cast<double>(n - 1));
        else base[i][k] = -1.0 + 1.0 / static_cast<double>(n) + static_cast<double>(k) * (2.0 / static_cast<double>(n));
      }
    }
    const int64_t P = y.numel() / (N * r);
    typed::dispatch(theta.dtype, "AffineGrid", [&](auto tag) {
      using T = typename decltype(tag)::type;
      if constexpr (!typed::is_float_v<T>) {
        fail(ErrorCode::kUnsupported, "AffineGrid of ", dtype_name(theta.dtype), " has no native kernel");
      } else {
        const T* tp = theta.ptr<T>();
        T* yp = y.ptr<T>();
        std::vector<double> h(r + 1);
        for (int64_t n = 0; n < N; ++n)
          for (int64_t p = 0; p < P; ++p) {
            int64_t rem = p;
            // homogeneous coordinates, innermost (W) first: h = (x, y[, z], 1)
            for (int64_t i = r - 1; i >= 0; --i) {
              const int64_t k = rem % size[2 + i];
              rem /= size[2 + i];
              h[r - 1 - i] = base[i][k];
            }
            h[r] = 1.0;
            for (int64_t j = 0; j < r; ++j) {
              double s = 0;
              for (int64_t c = 0; c <= r; ++c) s += static_cast<double>(load(tp[(n * r + j) * (r + 1) + c])) * h[c];
              yp[(n * P + p) * r + j] = store<T>(s);
            }
          }
      }
    });
  }

 private:
  bool align_ = false;
};

class Col2ImKernel final : public Kernel {
 public:
  explicit Col2ImKernel(const KernelInit& init) {
    strides_ = init.attrs.get_ints("strides", {});
    dil_ = init.attrs.get_ints("dilations", {});
    pads_ = init.attrs.get_ints("pads", {});
    impl = "col2im";
  }

  void run(KernelContext& ctx) override {
    const Tensor& x = ctx.in(0);
    const std::vector<int64_t> img = typed::ints_of(ctx.in(1), "image_shape");
    const std::vector<int64_t> blk = typed::ints_of(ctx.in(2), "block_shape");
    const int64_t sp = static_cast<int64_t>(img.size());
    MOPT_ENSURE(sp >= 1 && blk.size() == img.size(), "image_shape and block_shape must have the same length (>= 1)");
    const std::vector<int64_t> st = strides_.empty() ? std::vector<int64_t>(sp, 1) : strides_;
    const std::vector<int64_t> dl = dil_.empty() ? std::vector<int64_t>(sp, 1) : dil_;
    const std::vector<int64_t> pd = pads_.empty() ? std::vector<int64_t>(2 * sp, 0) : pads_;
    MOPT_ENSURE(static_cast<int64_t>(st.size()) == sp && static_cast<int64_t>(dl.size()) == sp &&
                    static_cast<int64_t>(pd.size()) == 2 * sp,
                "strides, dilations and pads disagree with the ", sp, " dimensions of image_shape");
    MOPT_ENSURE(x.rank() == 3, "input must be (N, C * prod(block_shape), L), got ", shape_str(x.shape));
    int64_t KS = 1, L = 1;
    std::vector<int64_t> nb(sp);
    for (int64_t i = 0; i < sp; ++i) {
      MOPT_ENSURE(blk[i] >= 1 && img[i] >= 1 && st[i] >= 1 && dl[i] >= 1,
                  "image_shape, block_shape, strides and dilations must be >= 1");
      KS *= blk[i];
      nb[i] = (img[i] + pd[i] + pd[sp + i] - dl[i] * (blk[i] - 1) - 1) / st[i] + 1;
      MOPT_ENSURE(nb[i] >= 1, "the block does not fit the padded image in dimension ", i);
      L *= nb[i];
    }
    MOPT_ENSURE(x.shape[1] % KS == 0, "input dimension 1 (", x.shape[1], ") is not a multiple of prod(block_shape) = ", KS);
    MOPT_ENSURE(x.shape[2] == L, "input dimension 2 (", x.shape[2], ") must be the number of blocks, ", L);
    const int64_t N = x.shape[0], C = x.shape[1] / KS;
    Shape ys = {N, C};
    ys.insert(ys.end(), img.begin(), img.end());
    Tensor& y = ctx.output(0, ys);
    if (y.numel() == 0) return;
    const int64_t S = shape_numel(Shape(img.begin(), img.end()));
    const std::vector<int64_t> ist = contiguous_strides(Shape(img.begin(), img.end()));
    typed::dispatch(x.dtype, "Col2Im", [&](auto tag) {
      using T = typename decltype(tag)::type;
      if constexpr (std::is_same_v<T, bool>) {
        fail(ErrorCode::kUnsupported, "Col2Im of bool has no native kernel");
      } else {
        const T* xp = x.ptr<T>();
        T* yp = y.ptr<T>();
        ctx.pool().parallel_for(N * C, 1, [&](int64_t b, int64_t e) {
          std::vector<typed::Arith<T>> acc(static_cast<size_t>(S));
          std::vector<int64_t> kpos(sp), bpos(sp);
          for (int64_t t = b; t < e; ++t) {
            std::fill(acc.begin(), acc.end(), typed::Arith<T>{});
            const T* col = xp + t * KS * L;
            for (int64_t k = 0; k < KS; ++k) {
              int64_t rem = k;
              for (int64_t i = sp - 1; i >= 0; --i) {
                kpos[i] = rem % blk[i] * dl[i] - pd[i];
                rem /= blk[i];
              }
              for (int64_t l = 0; l < L; ++l) {
                int64_t r2 = l, off = 0;
                bool inside = true;
                for (int64_t i = sp - 1; i >= 0; --i) {
                  const int64_t at = r2 % nb[i] * st[i] + kpos[i];
                  r2 /= nb[i];
                  if (at < 0 || at >= img[i]) inside = false;
                  off += at * ist[i];
                }
                if (inside) acc[off] += load(col[k * L + l]);
              }
            }
            for (int64_t i = 0; i < S; ++i) yp[t * S + i] = store<T>(acc[i]);
          }
        });
      }
    });
  }

 private:
  std::vector<int64_t> strides_, dil_, pads_;
};

std::unique_ptr<Kernel> make_affine_grid(const KernelInit& i) { return std::make_unique<AffineGridKernel>(i); }
std::unique_ptr<Kernel> make_col2im(const KernelInit& i) { return std::make_unique<Col2ImKernel>(i); }

}  // namespace

void register_image_ops(OpRegistry& r) {
  r.add({"", "AffineGrid", {DType::kF32, DType::kF64, DType::kF16, DType::kBF16}, &make_affine_grid});
  r.add({"", "Col2Im", {}, &make_col2im});
}

}  // namespace mopt
