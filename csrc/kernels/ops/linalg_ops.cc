// Det: the determinant of each trailing (M, M) matrix of a float32/64/16 tensor, by LU
// decomposition with partial pivoting in double (numpy.linalg.det does the same in LAPACK).
#include <cmath>

#include "kernels/ops/typed.h"

namespace mopt {
namespace {

using typed::load;
using typed::store;

class DetKernel final : public Kernel {
 public:
  explicit DetKernel(const KernelInit&) { impl = "det"; }

  void run(KernelContext& ctx) override {
    const Tensor& x = ctx.in(0);
    MOPT_ENSURE(x.rank() >= 2 && x.shape[x.rank() - 1] == x.shape[x.rank() - 2],
                "X must be (..., M, M), square in its last two dimensions, got ", shape_str(x.shape));
    const int64_t M = x.shape.back();
    Tensor& y = ctx.output(0, Shape(x.shape.begin(), x.shape.end() - 2));
    const int64_t count = y.numel();
    if (count == 0) return;
    typed::dispatch(x.dtype, "Det", [&](auto tag) {
      using T = typename decltype(tag)::type;
      if constexpr (!typed::is_float_v<T>) {
        fail(ErrorCode::kUnsupported, "Det of ", dtype_name(x.dtype), " has no native kernel");
      } else {
        const T* xp = x.ptr<T>();
        T* yp = y.ptr<T>();
        ctx.pool().parallel_for(count, 1, [&](int64_t b, int64_t e) {
          std::vector<double> a(static_cast<size_t>(M * M));
          for (int64_t t = b; t < e; ++t) {
            for (int64_t i = 0; i < M * M; ++i) a[i] = static_cast<double>(load(xp[t * M * M + i]));
            yp[t] = store<T>(lu_det(a.data(), M));
          }
        });
      }
    });
  }

 private:
  static double lu_det(double* a, int64_t n) {
    double det = 1;
    for (int64_t k = 0; k < n; ++k) {
      int64_t p = k;
      for (int64_t i = k + 1; i < n; ++i)
        if (std::fabs(a[i * n + k]) > std::fabs(a[p * n + k])) p = i;
      if (a[p * n + k] == 0) return 0;
      if (p != k) {
        for (int64_t j = 0; j < n; ++j) std::swap(a[k * n + j], a[p * n + j]);
        det = -det;
      }
      const double piv = a[k * n + k];
      det *= piv;
      for (int64_t i = k + 1; i < n; ++i) {
        const double f = a[i * n + k] / piv;
        if (f == 0) continue;
        for (int64_t j = k + 1; j < n; ++j) a[i * n + j] -= f * a[k * n + j];
      }
    }
    return det;
  }
};

std::unique_ptr<Kernel> make_det(const KernelInit& i) { return std::make_unique<DetKernel>(i); }

}  // namespace

void register_linalg_ops(OpRegistry& r) {
  r.add({"", "Det", {DType::kF32, DType::kF64, DType::kF16, DType::kBF16}, &make_det});
}

}  // namespace mopt
