// Smaller ops in plain C++: SwiGLU, BitCast, LpNormalization, Compress, ReverseSequence,
// CenterCropPad, TensorScatter, and Pow / Clip for the types the float32 kernels do not take
// (integers wrap like numpy; a negative integer exponent is an error, as it is in numpy).
#include <algorithm>
#include <limits>
#include <numeric>

#include "kernels/ops/typed.h"

namespace mopt {
namespace {

using typed::Arith;
using typed::is_float_v;
using typed::load;
using typed::store;

template <class K>
std::unique_ptr<Kernel> make(const KernelInit& init) {
  return std::make_unique<K>(init);
}

// ---- SwiGLU: swish(A) * B, A and B of one shape ---------------------------------------------------------

class SwiGLUKernel final : public Kernel {
 public:
  explicit SwiGLUKernel(const KernelInit& init) : alpha_(init.attrs.get_float("alpha", 1.0)) { impl = "swiglu"; }
  void run(KernelContext& ctx) override {
    const Tensor& a = ctx.in(0);
    const Tensor& b = ctx.in(1);
    MOPT_ENSURE(a.shape == b.shape, "A ", shape_str(a.shape), " and B ", shape_str(b.shape), " must have one shape");
    MOPT_ENSURE(a.dtype == b.dtype, "A and B types differ");
    Tensor& y = ctx.output(0, a.shape);
    typed::dispatch(a.dtype, "SwiGLU", [&](auto tag) {
      using T = typename decltype(tag)::type;
      if constexpr (!is_float_v<T>) {
        fail(ErrorCode::kUnsupported, "SwiGLU of ", dtype_name(a.dtype), " has no native kernel");
      } else {
        using A = Arith<T>;
        const T* ap = a.ptr<T>();
        const T* bp = b.ptr<T>();
        T* yp = y.ptr<T>();
        const A al = static_cast<A>(alpha_);
        for (int64_t i = 0; i < a.numel(); ++i) {
          const A x = load(ap[i]);
          yp[i] = store<T>(x * (A(1) / (A(1) + std::exp(-al * x))) * load(bp[i]));
        }
      }
    });
  }

 private:
  double alpha_;
};

// ---- BitCast: the same bytes as another type of the same width ----------------------------------------

class BitCastKernel final : public Kernel {
 public:
  explicit BitCastKernel(const KernelInit& init) {
    to_ = static_cast<DType>(init.attrs.get_int("to"));
    MOPT_CHECK(dtype_known(static_cast<int32_t>(to_)) && to_ != DType::kString, ErrorCode::kUnsupported,
               "BitCast to type ", static_cast<int>(to_), " has no native kernel");
    impl = "bitcast";
  }
  void run(KernelContext& ctx) override {
    const Tensor& x = ctx.in(0);
    MOPT_ENSURE(dtype_size(x.dtype) == dtype_size(to_), "BitCast from ", dtype_name(x.dtype), " to ", dtype_name(to_),
                " changes the element width");
    Tensor& y = ctx.output(0, x.shape, to_);
    parallel_copy(ctx.pool(), y.data, x.data, x.nbytes());
  }

 private:
  DType to_;
};

// ---- LpNormalization: x / ||x||_p along one axis (0 where the norm is 0) ---------------------------------

class LpNormKernel final : public Kernel {
 public:
  explicit LpNormKernel(const KernelInit& init) {
    axis_ = init.attrs.get_int("axis", -1);
    p_ = init.attrs.get_int("p", 2);
    MOPT_CHECK(p_ == 1 || p_ == 2, ErrorCode::kInvalidModel, "p must be 1 or 2, got ", p_);
    impl = "lp_norm";
  }
  void run(KernelContext& ctx) override {
    const Tensor& x = ctx.in(0);
    MOPT_ENSURE(x.rank() >= 1, "input must have rank >= 1, got a scalar");
    const typed::AxisSplit as = typed::split_at(x.shape, normalize_axis(axis_, x.rank()));
    Tensor& y = ctx.output(0, x.shape);
    typed::dispatch(x.dtype, "LpNormalization", [&](auto tag) {
      using T = typename decltype(tag)::type;
      if constexpr (!is_float_v<T>) {
        fail(ErrorCode::kUnsupported, "LpNormalization of ", dtype_name(x.dtype), " has no native kernel");
      } else {
        const T* xp = x.ptr<T>();
        T* yp = y.ptr<T>();
        for (int64_t t = 0; t < as.outer * as.inner; ++t) {
          const int64_t base = (t / as.inner) * as.dim * as.inner + t % as.inner;
          double n = 0;
          for (int64_t j = 0; j < as.dim; ++j) {
            const double v = static_cast<double>(load(xp[base + j * as.inner]));
            n += p_ == 1 ? std::fabs(v) : v * v;
          }
          if (p_ == 2) n = std::sqrt(n);
          for (int64_t j = 0; j < as.dim; ++j) {
            const int64_t o = base + j * as.inner;
            yp[o] = store<T>(n == 0 ? 0.0 : static_cast<double>(load(xp[o])) / n);
          }
        }
      }
    });
  }

 private:
  int64_t axis_, p_;
};

// ---- Compress ---------------------------------------------------------------------------------------------

class CompressKernel final : public Kernel {
 public:
  explicit CompressKernel(const KernelInit& init) {
    has_axis_ = init.attrs.has("axis");
    axis_ = init.attrs.get_int("axis", 0);
    impl = "compress";
  }
  void run(KernelContext& ctx) override {
    const Tensor& x = ctx.in(0);
    const Tensor& c = ctx.in(1);
    MOPT_ENSURE(c.dtype == DType::kBool && c.rank() == 1, "condition must be a 1-D bool tensor, got ",
                dtype_name(c.dtype), " ", shape_str(c.shape));
    Shape view = has_axis_ ? x.shape : Shape{x.numel()};
    const int64_t a = has_axis_ ? normalize_axis(axis_, x.rank()) : 0;
    const typed::AxisSplit as = typed::split_at(view, a);
    MOPT_ENSURE(c.numel() <= as.dim, "condition has ", c.numel(), " values for an axis of ", as.dim);
    std::vector<int64_t> keep;
    for (int64_t i = 0; i < c.numel(); ++i)
      if (c.ptr<uint8_t>()[i]) keep.push_back(i);
    Shape out = view;
    out[a] = static_cast<int64_t>(keep.size());
    Tensor& y = ctx.output(0, out);
    const size_t es = dtype_size(x.dtype), row = static_cast<size_t>(as.inner) * es;
    const char* xp = static_cast<const char*>(x.data);
    char* yp = static_cast<char*>(y.data);
    for (int64_t o = 0; o < as.outer; ++o)
      for (size_t k = 0; k < keep.size(); ++k)
        std::memcpy(yp + (o * static_cast<int64_t>(keep.size()) + static_cast<int64_t>(k)) * row,
                    xp + (o * as.dim + keep[k]) * row, row);
  }

 private:
  bool has_axis_;
  int64_t axis_;
};

// ---- ReverseSequence -------------------------------------------------------------------------------------

class ReverseSequenceKernel final : public Kernel {
 public:
  explicit ReverseSequenceKernel(const KernelInit& init) {
    batch_axis_ = init.attrs.get_int("batch_axis", 1);
    time_axis_ = init.attrs.get_int("time_axis", 0);
    MOPT_CHECK((batch_axis_ == 0 && time_axis_ == 1) || (batch_axis_ == 1 && time_axis_ == 0),
               ErrorCode::kInvalidModel, "batch_axis and time_axis must be 0 and 1 in some order");
    impl = "reverse_sequence";
  }
  void run(KernelContext& ctx) override {
    const Tensor& x = ctx.in(0);
    const Tensor& lens = ctx.in(1);
    MOPT_ENSURE(x.rank() >= 2, "input must have rank >= 2, got ", shape_str(x.shape));
    const int64_t B = x.shape[batch_axis_], T = x.shape[time_axis_];
    const std::vector<int64_t> sl = typed::ints_of(lens, "sequence_lens");
    MOPT_ENSURE(static_cast<int64_t>(sl.size()) == B, "sequence_lens has ", sl.size(), " values for batch ", B);
    for (int64_t s : sl) MOPT_ENSURE(s >= 0 && s <= T, "sequence length ", s, " is out of range [0, ", T, "]");
    int64_t inner = 1;
    for (int64_t d = 2; d < x.rank(); ++d) inner *= x.shape[d];
    Tensor& y = ctx.output(0, x.shape);
    const size_t es = dtype_size(x.dtype), row = static_cast<size_t>(inner) * es;
    const char* xp = static_cast<const char*>(x.data);
    char* yp = static_cast<char*>(y.data);
    auto off = [&](int64_t b, int64_t t) { return (batch_axis_ == 0 ? b * T + t : t * B + b) * static_cast<int64_t>(row); };
    for (int64_t b = 0; b < B; ++b)
      for (int64_t t = 0; t < T; ++t) std::memcpy(yp + off(b, t), xp + off(b, t < sl[b] ? sl[b] - 1 - t : t), row);
  }

 private:
  int64_t batch_axis_, time_axis_;
};

// ---- CenterCropPad ---------------------------------------------------------------------------------------

class CenterCropPadKernel final : public Kernel {
 public:
  explicit CenterCropPadKernel(const KernelInit& init) : axes_(init.attrs.get_ints("axes", {})) {
    impl = "center_crop_pad";
  }
  void run(KernelContext& ctx) override {
    const Tensor& x = ctx.in(0);
    const std::vector<int64_t> shape = typed::ints_of(ctx.in(1), "shape");
    const int64_t r = x.rank();
    std::vector<int64_t> axes = axes_;
    if (axes.empty())
      for (int64_t d = 0; d < r; ++d) axes.push_back(d);
    MOPT_ENSURE(shape.size() == axes.size(), "shape has ", shape.size(), " values for ", axes.size(), " axes");
    Shape out = x.shape;
    std::vector<int64_t> src_off(r, 0), dst_off(r, 0);  // where the kept block starts in x and in y
    for (size_t i = 0; i < axes.size(); ++i) {
      const int64_t a = normalize_axis(axes[i], r), dim = x.shape[a], want = shape[i];
      MOPT_ENSURE(want >= 0, "shape ", shape_str(shape), " has a negative value");
      out[a] = want;
      if (want < dim) src_off[a] = (dim - want) / 2;
      else dst_off[a] = (want - dim) / 2;
    }
    Tensor& y = ctx.output(0, out);
    std::memset(y.data, 0, y.nbytes());
    Shape block(r);
    for (int64_t d = 0; d < r; ++d) block[d] = std::min(x.shape[d], out[d]);
    const int64_t n = shape_numel(block);
    if (n == 0) return;
    const std::vector<int64_t> xs = contiguous_strides(x.shape), ys = contiguous_strides(out);
    const size_t es = dtype_size(x.dtype);
    std::vector<int64_t> pos(r, 0);
    for (int64_t i = 0; i < n; ++i) {
      int64_t xo = 0, yo = 0;
      for (int64_t d = 0; d < r; ++d) {
        xo += (pos[d] + src_off[d]) * xs[d];
        yo += (pos[d] + dst_off[d]) * ys[d];
      }
      std::memcpy(static_cast<char*>(y.data) + yo * es, static_cast<const char*>(x.data) + xo * es, es);
      for (int64_t d = r - 1; d >= 0; --d) {
        if (++pos[d] < block[d]) break;
        pos[d] = 0;
      }
    }
  }

 private:
  std::vector<int64_t> axes_;
};

// ---- TensorScatter: writes a sequence update into a cache at per-batch positions -----------------------

class TensorScatterKernel final : public Kernel {
 public:
  explicit TensorScatterKernel(const KernelInit& init) {
    axis_ = init.attrs.get_int("axis", -2);
    const std::string m = init.attrs.get_string("mode", "linear");
    MOPT_CHECK(m == "linear" || m == "circular", ErrorCode::kInvalidModel, "mode '", m, "' is not linear or circular");
    circular_ = m == "circular";
    impl = "tensor_scatter";
  }
  void run(KernelContext& ctx) override {
    const Tensor& cache = ctx.in(0);
    const Tensor& upd = ctx.in(1);
    const int64_t r = cache.rank();
    MOPT_ENSURE(r >= 2 && upd.rank() == r, "past_cache ", shape_str(cache.shape), " and update ", shape_str(upd.shape),
                " must have one rank >= 2");
    MOPT_ENSURE(upd.dtype == cache.dtype, "update type differs from the cache");
    const int64_t a = normalize_axis(axis_, r);
    MOPT_ENSURE(a >= 1, "axis must not be the batch axis");
    for (int64_t d = 0; d < r; ++d)
      MOPT_ENSURE(d == a ? upd.shape[d] <= cache.shape[d] : upd.shape[d] == cache.shape[d], "update ",
                  shape_str(upd.shape), " does not fit the cache ", shape_str(cache.shape));
    const int64_t B = cache.shape[0], L = cache.shape[a], n = upd.shape[a];
    std::vector<int64_t> wi(static_cast<size_t>(B), 0);
    if (const Tensor* w = ctx.input(2)) {
      wi = typed::ints_of(*w, "write_indices");
      MOPT_ENSURE(static_cast<int64_t>(wi.size()) == B, "write_indices has ", wi.size(), " values for batch ", B);
    }
    for (int64_t b = 0; b < B; ++b) {
      MOPT_ENSURE(wi[b] >= 0, "write index ", wi[b], " is negative");
      if (!circular_) MOPT_ENSURE(wi[b] + n <= L, "write index ", wi[b], " + ", n, " updates run past the cache of ", L);
    }
    Tensor& y = ctx.output(0, cache.shape);
    parallel_copy(ctx.pool(), y.data, cache.data, cache.nbytes());
    int64_t mid = 1, inner = 1;  // dims between batch and axis, and after axis
    for (int64_t d = 1; d < a; ++d) mid *= cache.shape[d];
    for (int64_t d = a + 1; d < r; ++d) inner *= cache.shape[d];
    const size_t es = dtype_size(cache.dtype), row = static_cast<size_t>(inner) * es;
    for (int64_t b = 0; b < B; ++b)
      for (int64_t m = 0; m < mid; ++m)
        for (int64_t s = 0; s < n; ++s) {
          const int64_t t = circular_ ? (wi[b] + s) % L : wi[b] + s;
          std::memcpy(static_cast<char*>(y.data) + ((b * mid + m) * L + t) * static_cast<int64_t>(row),
                      static_cast<const char*>(upd.data) + ((b * mid + m) * n + s) * static_cast<int64_t>(row), row);
        }
  }

 private:
  int64_t axis_;
  bool circular_;
};

// ---- Pow and Clip of the other types ------------------------------------------------------------------

// Pow with any base and exponent types, numpy's way: integer ** integer in wrapping integers,
// anything with a float in double, then converted to the base's type (truncating for integers).
class TypedPowKernel final : public Kernel {
 public:
  explicit TypedPowKernel(const KernelInit&) { impl = "pow_typed"; }
  void run(KernelContext& ctx) override {
    const Tensor& x = ctx.in(0);
    const Tensor& e = ctx.in(1);
    Broadcast bc = make_broadcast(x.shape, e.shape);
    Tensor& y = ctx.output(0, bc.out);
    if (y.numel() == 0) return;
    typed::dispatch(x.dtype, "Pow", [&](auto xt) {
      using X = typename decltype(xt)::type;
      typed::dispatch(e.dtype, "Pow exponent", [&](auto et) {
        using E = typename decltype(et)::type;
        if constexpr (std::is_same_v<X, bool> || std::is_same_v<E, bool>) {
          fail(ErrorCode::kUnsupported, "Pow of bool has no native kernel");
        } else {
          const X* xp = x.ptr<X>();
          const E* ep = e.ptr<E>();
          X* yp = y.ptr<X>();
          for_each_run(bc, ctx.pool(), [&](int64_t oa, int64_t ob, int64_t oo, int64_t n, int mode) {
            const int64_t sa = (mode == 1 || mode == 3) ? 0 : 1, sb = (mode == 2 || mode == 3) ? 0 : 1;
            for (int64_t i = 0; i < n; ++i) yp[oo + i] = one(xp[oa + i * sa], ep[ob + i * sb]);
          });
        }
      });
    });
  }

 private:
  template <class X, class E>
  static X one(X xv, E ev) {
    if constexpr (std::is_integral_v<X> && std::is_integral_v<E>) {
      MOPT_ENSURE(!(ev < E(0)), "integers to negative integer powers are not allowed");
      uint64_t base = static_cast<uint64_t>(xv), r = 1, k = static_cast<uint64_t>(ev);
      while (k) {
        if (k & 1) r *= base;
        base *= base;
        k >>= 1;
      }
      return static_cast<X>(r);
    } else {
      const double v = std::pow(static_cast<double>(load(xv)), static_cast<double>(load(ev)));
      if constexpr (std::is_integral_v<X>) {
        if (!(v > -9.2e18 && v < 9.2e18)) return std::numeric_limits<X>::min();
        return static_cast<X>(static_cast<int64_t>(v));
      } else {
        return store<X>(v);
      }
    }
  }
};

class TypedClipKernel final : public Kernel {
 public:
  explicit TypedClipKernel(const KernelInit&) { impl = "clip_typed"; }
  void run(KernelContext& ctx) override {
    const Tensor& x = ctx.in(0);
    Tensor& y = ctx.output(0, x.shape);
    typed::dispatch(x.dtype, "Clip", [&](auto tag) {
      using T = typename decltype(tag)::type;
      if constexpr (std::is_same_v<T, bool>) {
        fail(ErrorCode::kUnsupported, "Clip of bool has no native kernel");
      } else {
        using A = Arith<T>;
        bool has_lo = false, has_hi = false;
        A lo{}, hi{};
        for (int k = 1; k <= 2; ++k)
          if (const Tensor* t = ctx.input(k); t && t->numel() > 0) {
            MOPT_ENSURE(t->dtype == x.dtype && t->numel() == 1, k == 1 ? "min" : "max", " must be one ",
                        dtype_name(x.dtype), " value");
            (k == 1 ? lo : hi) = load(t->ptr<T>()[0]);
            (k == 1 ? has_lo : has_hi) = true;
          }
        const T* xp = x.ptr<T>();
        T* yp = y.ptr<T>();
        for (int64_t i = 0; i < x.numel(); ++i) {
          A v = load(xp[i]);
          if (has_lo && v < lo) v = lo;
          if (has_hi && v > hi) v = hi;  // min(max(x, lo), hi), as numpy.clip
          yp[i] = store<T>(v);
        }
      }
    });
  }
};

// ---- Unique, NonZero, InstanceNormalization -------------------------------------------------------------

// Unique elements (or slices along `axis`): sorted ascending (NaN last, all NaN equal) or in order
// of first occurrence, with first indices, inverse indices and counts.
class UniqueKernel final : public Kernel {
 public:
  explicit UniqueKernel(const KernelInit& init) {
    has_axis_ = init.attrs.has("axis");
    axis_ = init.attrs.get_int("axis", 0);
    sorted_ = init.attrs.get_int("sorted", 1) != 0;
    impl = "unique";
  }
  void run(KernelContext& ctx) override {
    const Tensor& x = ctx.in(0);
    const int64_t a = has_axis_ ? normalize_axis(axis_, x.rank()) : 0;
    const Shape view = has_axis_ ? x.shape : Shape{x.numel()};
    const typed::AxisSplit as = typed::split_at(view, a);
    const int64_t n = as.dim, len = as.outer * as.inner;  // items, values per item
    std::vector<int64_t> order(static_cast<size_t>(n)), group(static_cast<size_t>(n));
    std::vector<int64_t> firsts;  // first index of each unique item, in output order
    typed::dispatch(x.dtype, "Unique", [&](auto tag) {
      using T = typename decltype(tag)::type;
      const T* xp = x.ptr<T>();
      auto at = [&](int64_t item, int64_t j) { return load(xp[((j / as.inner) * as.dim + item) * as.inner + j % as.inner]); };
      // -1, 0, 1 comparing items lexicographically; NaN after every number and equal to NaN
      auto cmp = [&](int64_t u, int64_t v) {
        for (int64_t j = 0; j < len; ++j) {
          const auto p = at(u, j), q = at(v, j);
          const bool pn = p != p, qn = q != q;
          if (pn || qn) {
            if (pn && qn) continue;
            return pn ? 1 : -1;
          }
          if (p < q) return -1;
          if (q < p) return 1;
        }
        return 0;
      };
      std::iota(order.begin(), order.end(), 0);
      std::stable_sort(order.begin(), order.end(), [&](int64_t u, int64_t v) { return cmp(u, v) < 0; });
      std::vector<int64_t> sorted_first;  // per sorted-unique group: its first (lowest) index
      for (int64_t k = 0; k < n; ++k) {
        if (k == 0 || cmp(order[k - 1], order[k]) != 0) sorted_first.push_back(order[k]);
        group[order[k]] = static_cast<int64_t>(sorted_first.size()) - 1;
      }
      std::vector<int64_t> rank(sorted_first.size());
      std::iota(rank.begin(), rank.end(), 0);
      if (!sorted_) {  // groups by first occurrence
        std::vector<int64_t> by_first(sorted_first.size());
        std::iota(by_first.begin(), by_first.end(), 0);
        std::sort(by_first.begin(), by_first.end(), [&](int64_t u, int64_t v) { return sorted_first[u] < sorted_first[v]; });
        for (size_t k = 0; k < by_first.size(); ++k) rank[by_first[k]] = static_cast<int64_t>(k);
      }
      firsts.assign(sorted_first.size(), 0);
      for (size_t g = 0; g < sorted_first.size(); ++g) firsts[rank[g]] = sorted_first[g];
      for (int64_t i = 0; i < n; ++i) group[i] = rank[group[i]];
    });
    const int64_t u = static_cast<int64_t>(firsts.size());
    Shape yshape = view;
    yshape[a] = u;
    Tensor& y = ctx.output(0, yshape);
    const size_t es = dtype_size(x.dtype), row = static_cast<size_t>(as.inner) * es;
    for (int64_t o = 0; o < as.outer; ++o)
      for (int64_t k = 0; k < u; ++k)
        std::memcpy(static_cast<char*>(y.data) + (o * u + k) * static_cast<int64_t>(row),
                    static_cast<const char*>(x.data) + (o * n + firsts[k]) * static_cast<int64_t>(row), row);
    if (ctx.num_outputs() > 1 && ctx.output_used(1)) std::copy(firsts.begin(), firsts.end(), ctx.output(1, {u}).ptr<int64_t>());
    if (ctx.num_outputs() > 2 && ctx.output_used(2)) std::copy(group.begin(), group.end(), ctx.output(2, {n}).ptr<int64_t>());
    if (ctx.num_outputs() > 3 && ctx.output_used(3)) {
      int64_t* cp = ctx.output(3, {u}).ptr<int64_t>();
      std::fill(cp, cp + u, 0);
      for (int64_t g : group) ++cp[g];
    }
  }

 private:
  bool has_axis_, sorted_;
  int64_t axis_;
};

class NonZeroKernel final : public Kernel {
 public:
  explicit NonZeroKernel(const KernelInit&) { impl = "non_zero"; }
  void run(KernelContext& ctx) override {
    const Tensor& x = ctx.in(0);
    MOPT_ENSURE(x.rank() >= 1, "NonZero of a scalar has no native kernel");
    std::vector<int64_t> hits;
    typed::dispatch(x.dtype, "NonZero", [&](auto tag) {
      using T = typename decltype(tag)::type;
      const T* xp = x.ptr<T>();
      for (int64_t i = 0; i < x.numel(); ++i)
        if (load(xp[i]) != 0) hits.push_back(i);
    });
    const int64_t nnz = static_cast<int64_t>(hits.size()), r = x.rank();
    Tensor& y = ctx.output(0, {r, nnz});
    int64_t* yp = y.ptr<int64_t>();
    for (int64_t k = 0; k < nnz; ++k) {
      int64_t rem = hits[k];
      for (int64_t d = r - 1; d >= 0; --d) {
        yp[d * nnz + k] = rem % x.shape[d];
        rem /= x.shape[d];
      }
    }
  }
};

// (x - mean) / sqrt(var + epsilon) * scale[c] + B[c] over the spatial dims of each (n, c), in double.
class InstanceNormKernel final : public Kernel {
 public:
  explicit InstanceNormKernel(const KernelInit& init) : eps_(init.attrs.get_float("epsilon", 1e-5)) {
    impl = "instance_norm";
  }
  void run(KernelContext& ctx) override {
    const Tensor& x = ctx.in(0);
    const Tensor& s = ctx.in(1);
    const Tensor& b = ctx.in(2);
    MOPT_ENSURE(x.rank() >= 2, "input must be (N, C, ...), got ", shape_str(x.shape));
    const int64_t N = x.shape[0], C = x.shape[1], S = N * C ? x.numel() / (N * C) : 0;
    MOPT_ENSURE(s.numel() == C && b.numel() == C && s.dtype == x.dtype && b.dtype == x.dtype, "scale and B must hold ", C,
                " values of the input type");
    Tensor& y = ctx.output(0, x.shape);
    typed::dispatch(x.dtype, "InstanceNormalization", [&](auto tag) {
      using T = typename decltype(tag)::type;
      if constexpr (!is_float_v<T>) {
        fail(ErrorCode::kUnsupported, "no native kernel for ", dtype_name(x.dtype), " inputs");
      } else {
        const T* xp = x.ptr<T>();
        T* yp = y.ptr<T>();
        for (int64_t t = 0; t < N * C; ++t) {
          const int64_t c = t % C;
          double m = 0, v = 0;
          for (int64_t i = 0; i < S; ++i) m += static_cast<double>(load(xp[t * S + i]));
          m /= static_cast<double>(std::max<int64_t>(S, 1));
          for (int64_t i = 0; i < S; ++i) {
            const double d = static_cast<double>(load(xp[t * S + i])) - m;
            v += d * d;
          }
          v /= static_cast<double>(std::max<int64_t>(S, 1));
          const double k = static_cast<double>(load(s.ptr<T>()[c])) / std::sqrt(v + eps_);
          const double sh = static_cast<double>(load(b.ptr<T>()[c]));
          for (int64_t i = 0; i < S; ++i) yp[t * S + i] = store<T>((static_cast<double>(load(xp[t * S + i])) - m) * k + sh);
        }
      }
    });
  }

 private:
  double eps_;
};

}  // namespace

std::unique_ptr<Kernel> make_typed_pow(const KernelInit& init) { return std::make_unique<TypedPowKernel>(init); }
std::unique_ptr<Kernel> make_typed_clip(const KernelInit& init) { return std::make_unique<TypedClipKernel>(init); }

void register_misc_ops(OpRegistry& r) {
  const std::vector<DType> any;
  const std::vector<DType> floats = {DType::kF32, DType::kF64, DType::kF16};
  r.add({"", "SwiGLU", floats, &make<SwiGLUKernel>});
  r.add({"", "BitCast", any, &make<BitCastKernel>});
  r.add({"", "LpNormalization", floats, &make<LpNormKernel>});
  r.add({"", "Compress", any, &make<CompressKernel>});
  r.add({"", "ReverseSequence", any, &make<ReverseSequenceKernel>});
  r.add({"", "CenterCropPad", any, &make<CenterCropPadKernel>});
  r.add({"", "TensorScatter", any, &make<TensorScatterKernel>});
  std::vector<DType> num_bool = {DType::kF32, DType::kF64, DType::kF16, DType::kBF16, DType::kI8, DType::kI16, DType::kI32,
                                 DType::kI64, DType::kU8, DType::kU16, DType::kU32, DType::kU64, DType::kBool};
  r.add({"", "Unique", num_bool, &make<UniqueKernel>});
  r.add({"", "NonZero", num_bool, &make<NonZeroKernel>});
  r.add({"", "InstanceNormalization", floats, &make<InstanceNormKernel>});
}

}  // namespace mopt
