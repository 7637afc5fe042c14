// Indexing and rearranging ops in plain C++: Split, Trilu, ArgMax/ArgMin, GatherElements,
// ScatterElements, ScatterND, Pad, TopK, Hardmax, CumProd, OneHot, DepthToSpace/SpaceToDepth, EyeLike.
// Every axis, index, count and size is checked before anything is read or written; data movement
// dispatches on the element size only, arithmetic on the dtype.
#include <algorithm>
#include <limits>
#include <numeric>

#include "kernels/ops/typed.h"

namespace mopt {
namespace {

using typed::Half;
using typed::is_float_v;
using typed::load;
using typed::store;

int64_t checked_index(int64_t v, int64_t dim, const char* what) {
  MOPT_ENSURE(v >= -dim && v < dim, what, " value ", v, " is out of range [", -dim, ", ", dim - 1, "]");
  return v < 0 ? v + dim : v;
}

// ---- Split --------------------------------------------------------------------------------------------

class SplitKernel final : public Kernel {
 public:
  explicit SplitKernel(const KernelInit& init) {
    axis_ = init.attrs.get_int("axis", 0);
    num_outputs_ = init.attrs.get_int("num_outputs", 0);
    attr_split_ = init.attrs.get_ints("split", {});
    impl = "split";
  }
  void run(KernelContext& ctx) override {
    const Tensor& x = ctx.in(0);
    MOPT_ENSURE(x.rank() >= 1, "input must have rank >= 1, got a scalar");
    const int64_t a = normalize_axis(axis_, x.rank());
    const int64_t dim = x.shape[a], n = ctx.num_outputs();
    std::vector<int64_t> sizes = attr_split_;
    if (const Tensor* s = ctx.input(1); s && s->numel() > 0) sizes = typed::ints_of(*s, "split");
    if (sizes.empty()) {
      const int64_t parts = num_outputs_ > 0 ? num_outputs_ : n;
      MOPT_ENSURE(parts == n, "num_outputs is ", parts, " but the node has ", n, " outputs");
      const int64_t chunk = dim % parts == 0 ? dim / parts : dim / parts + 1;  // the last chunk is smaller
      sizes.assign(static_cast<size_t>(parts), chunk);
      sizes.back() = dim - chunk * (parts - 1);
      MOPT_ENSURE(sizes.back() >= 0, "axis of size ", dim, " cannot be split into ", parts, " chunks of ", chunk);
    }
    MOPT_ENSURE(static_cast<int64_t>(sizes.size()) == n, "split has ", sizes.size(), " sizes for ", n, " outputs");
    int64_t total = 0;
    for (int64_t s : sizes) {
      MOPT_ENSURE(s >= 0, "split sizes ", shape_str(sizes), " have a negative value");
      total += s;
    }
    MOPT_ENSURE(total == dim, "split sizes ", shape_str(sizes), " add up to ", total, ", not the axis size ", dim);
    const typed::AxisSplit as = typed::split_at(x.shape, a);
    const size_t es = dtype_size(x.dtype);
    int64_t pos = 0;
    for (int64_t k = 0; k < n; ++k) {
      Shape out = x.shape;
      out[a] = sizes[k];
      Tensor& y = ctx.output(static_cast<int>(k), out);
      const size_t row = static_cast<size_t>(sizes[k] * as.inner) * es;
      const char* src = static_cast<const char*>(x.data) + static_cast<size_t>(pos * as.inner) * es;
      char* dst = static_cast<char*>(y.data);
      if (row > 0)
        for (int64_t o = 0; o < as.outer; ++o)
          std::memcpy(dst + o * row, src + static_cast<size_t>(o * dim * as.inner) * es, row);
      pos += sizes[k];
    }
  }

 private:
  int64_t axis_, num_outputs_;
  std::vector<int64_t> attr_split_;
};

// ---- Trilu --------------------------------------------------------------------------------------------

class TriluKernel final : public Kernel {
 public:
  explicit TriluKernel(const KernelInit& init) : upper_(init.attrs.get_int("upper", 1) != 0) { impl = "trilu"; }
  void run(KernelContext& ctx) override {
    const Tensor& x = ctx.in(0);
    MOPT_ENSURE(x.rank() >= 2, "input must have rank >= 2, got shape ", shape_str(x.shape));
    int64_t k = 0;
    if (const Tensor* kt = ctx.input(1)) {
      MOPT_ENSURE(kt->numel() == 1, "k must hold one value, got shape ", shape_str(kt->shape));
      k = typed::ints_of(kt->rank() == 0 ? Tensor{kt->dtype, {1}, kt->data} : *kt, "k")[0];
    }
    Tensor& y = ctx.output(0, x.shape);
    if (y.numel() == 0) return;
    const int64_t rows = x.shape[x.rank() - 2], cols = x.shape[x.rank() - 1], mats = x.numel() / (rows * cols);
    typed::dispatch_size(dtype_size(x.dtype), [&](auto tag) {
      using T = typename decltype(tag)::type;
      const T* xp = x.ptr<T>();
      T* yp = y.ptr<T>();
      for (int64_t m = 0; m < mats; ++m)
        for (int64_t i = 0; i < rows; ++i)
          for (int64_t j = 0; j < cols; ++j) {
            const int64_t o = (m * rows + i) * cols + j;
            // j - i compared in 128 bits: k may be anything an int64 holds
            const __int128 d = static_cast<__int128>(j) - i;
            const bool keep = upper_ ? d >= k : d <= k;
            if (keep) yp[o] = xp[o];
            else std::memset(&yp[o], 0, sizeof(T));
          }
    });
  }

 private:
  bool upper_;
};

// ---- ArgMax / ArgMin ----------------------------------------------------------------------------------

// NaN wins, as numpy's argmax/argmin: the first one (the last one with select_last_index).
template <bool MAX>
class ArgKernel final : public Kernel {
 public:
  explicit ArgKernel(const KernelInit& init) {
    axis_ = init.attrs.get_int("axis", 0);
    keepdims_ = init.attrs.get_int("keepdims", 1) != 0;
    last_ = init.attrs.get_int("select_last_index", 0) != 0;
    impl = MAX ? "argmax" : "argmin";
  }
  void run(KernelContext& ctx) override {
    const Tensor& x = ctx.in(0);
    MOPT_ENSURE(x.rank() >= 1, "input must have rank >= 1, got a scalar");
    const int64_t a = normalize_axis(axis_, x.rank());
    const typed::AxisSplit as = typed::split_at(x.shape, a);
    Shape out = x.shape;
    if (keepdims_) out[a] = 1;
    else out.erase(out.begin() + a);
    MOPT_ENSURE(as.dim > 0 || as.outer * as.inner == 0, "cannot take the arg", MAX ? "max" : "min",
                " of an empty axis");
    Tensor& y = ctx.output(0, out);
    int64_t* yp = y.ptr<int64_t>();
    typed::dispatch(x.dtype, MAX ? "ArgMax" : "ArgMin", [&](auto tag) {
      using T = typename decltype(tag)::type;
      const T* xp = x.ptr<T>();
      ctx.pool().parallel_for(as.outer * as.inner, 4096, [&](int64_t b, int64_t e) {
        for (int64_t t = b; t < e; ++t) {
          const int64_t o = t / as.inner, i = t % as.inner;
          const T* p = xp + o * as.dim * as.inner + i;
          int64_t best = 0;
          auto bv = load(p[0]);
          bool best_nan = bv != bv;
          for (int64_t j = 1; j < as.dim; ++j) {
            const auto v = load(p[j * as.inner]);
            if (v != v) {  // NaN
              if (!best_nan || last_) best = j;
              best_nan = true;
              continue;
            }
            if (best_nan) continue;
            const bool better = MAX ? (last_ ? v >= bv : v > bv) : (last_ ? v <= bv : v < bv);
            if (better) {
              best = j;
              bv = v;
            }
          }
          yp[t] = best;
        }
      });
    });
  }

 private:
  int64_t axis_;
  bool keepdims_, last_;
};

// ---- GatherElements, ScatterElements ------------------------------------------------------------------

// The element offset in data of every position of `idx` (same rank as data), the index along `axis`
// replacing the position's own coordinate. Indices are checked against the axis size.
std::vector<int64_t> element_offsets(const Tensor& data, const Tensor& idx, int64_t axis, bool scatter) {
  MOPT_ENSURE(idx.dtype == DType::kI64 || idx.dtype == DType::kI32, "indices must be int32 or int64, got ",
              dtype_name(idx.dtype));
  MOPT_ENSURE(idx.rank() == data.rank(), "indices ", shape_str(idx.shape), " must have the rank of data ",
              shape_str(data.shape));
  for (int64_t d = 0; d < data.rank(); ++d)
    if (d != axis || scatter)
      MOPT_ENSURE(idx.shape[d] <= data.shape[d], "indices ", shape_str(idx.shape), " exceed data ",
                  shape_str(data.shape), " in dimension ", d);
  const std::vector<int64_t> ds = contiguous_strides(data.shape);
  const int64_t n = idx.numel(), r = idx.rank(), dim = data.shape[axis];
  std::vector<int64_t> offs(static_cast<size_t>(n)), pos(static_cast<size_t>(r), 0);
  for (int64_t i = 0; i < n; ++i) {
    int64_t off = 0;
    for (int64_t d = 0; d < r; ++d)
      off += (d == axis ? checked_index(typed::index_at(idx, i), dim, "index") : pos[d]) * ds[d];
    offs[i] = off;
    for (int64_t d = r - 1; d >= 0; --d) {
      if (++pos[d] < idx.shape[d]) break;
      pos[d] = 0;
    }
  }
  return offs;
}

class GatherElementsKernel final : public Kernel {
 public:
  explicit GatherElementsKernel(const KernelInit& init) : axis_(init.attrs.get_int("axis", 0)) {
    impl = "gather_elements";
  }
  void run(KernelContext& ctx) override {
    const Tensor& x = ctx.in(0);
    const Tensor& idx = ctx.in(1);
    MOPT_ENSURE(x.rank() >= 1, "data must have rank >= 1, got a scalar");
    const int64_t a = normalize_axis(axis_, x.rank());
    const std::vector<int64_t> offs = element_offsets(x, idx, a, false);
    Tensor& y = ctx.output(0, idx.shape);
    typed::dispatch_size(dtype_size(x.dtype), [&](auto tag) {
      using T = typename decltype(tag)::type;
      const T* xp = x.ptr<T>();
      T* yp = y.ptr<T>();
      for (size_t i = 0; i < offs.size(); ++i) yp[i] = xp[offs[i]];
    });
  }

 private:
  int64_t axis_;
};

enum class Red { kNone, kAdd, kMul, kMax, kMin };

Red reduction_of(const Attrs& attrs) {
  const std::string r = attrs.get_string("reduction", "none");
  if (r == "none") return Red::kNone;
  if (r == "add") return Red::kAdd;
  if (r == "mul") return Red::kMul;
  if (r == "max") return Red::kMax;
  if (r == "min") return Red::kMin;
  fail(ErrorCode::kInvalidModel, "reduction '", r, "' is not one of none, add, mul, max, min");
}

// dst[offs[i] + j] (op)= upd[i * slice + j], in order; the copy of data is already in dst.
void scatter_into(Tensor& y, const Tensor& upd, const std::vector<int64_t>& offs, int64_t slice, Red red) {
  typed::dispatch(y.dtype, "scatter", [&](auto tag) {
    using T = typename decltype(tag)::type;
    T* yp = y.ptr<T>();
    const T* up = upd.ptr<T>();
    for (size_t i = 0; i < offs.size(); ++i)
      for (int64_t j = 0; j < slice; ++j) {
        T& d = yp[offs[i] + j];
        const T u = up[static_cast<int64_t>(i) * slice + j];
        if (red == Red::kNone) {
          d = u;
        } else if constexpr (std::is_same_v<T, bool>) {
          d = red == Red::kAdd || red == Red::kMax ? (d || u) : (d && u);  // numpy's bool + and *
        } else {
          const auto a = load(d), b = load(u);
          using A = std::remove_const_t<decltype(a)>;
          A v;
          switch (red) {
            case Red::kAdd: v = static_cast<A>(a + b); break;
            case Red::kMul: v = static_cast<A>(a * b); break;
            case Red::kMax: v = a != a ? a : (a > b ? a : b); break;
            default: v = a != a ? a : (a < b ? a : b); break;
          }
          d = store<T>(v);
        }
      }
  });
}

class ScatterElementsKernel final : public Kernel {
 public:
  explicit ScatterElementsKernel(const KernelInit& init)
      : axis_(init.attrs.get_int("axis", 0)), red_(reduction_of(init.attrs)) {
    impl = "scatter_elements";
  }
  void run(KernelContext& ctx) override {
    const Tensor& x = ctx.in(0);
    const Tensor& idx = ctx.in(1);
    const Tensor& upd = ctx.in(2);
    MOPT_ENSURE(x.rank() >= 1, "data must have rank >= 1, got a scalar");
    MOPT_ENSURE(upd.shape == idx.shape, "updates ", shape_str(upd.shape), " must have the shape of indices ",
                shape_str(idx.shape));
    MOPT_ENSURE(upd.dtype == x.dtype, "updates are ", dtype_name(upd.dtype), ", data is ", dtype_name(x.dtype));
    const int64_t a = normalize_axis(axis_, x.rank());
    const std::vector<int64_t> offs = element_offsets(x, idx, a, true);
    Tensor& y = ctx.output(0, x.shape);
    parallel_copy(ctx.pool(), y.data, x.data, x.nbytes());
    scatter_into(y, upd, offs, 1, red_);
  }

 private:
  int64_t axis_;
  Red red_;
};

class ScatterNDKernel final : public Kernel {
 public:
  explicit ScatterNDKernel(const KernelInit& init) : red_(reduction_of(init.attrs)) { impl = "scatter_nd"; }
  void run(KernelContext& ctx) override {
    const Tensor& x = ctx.in(0);
    const Tensor& idx = ctx.in(1);
    const Tensor& upd = ctx.in(2);
    MOPT_ENSURE(idx.dtype == DType::kI64 || idx.dtype == DType::kI32, "indices must be int64, got ",
                dtype_name(idx.dtype));
    MOPT_ENSURE(upd.dtype == x.dtype, "updates are ", dtype_name(upd.dtype), ", data is ", dtype_name(x.dtype));
    MOPT_ENSURE(idx.rank() >= 1, "indices must have rank >= 1");
    const int64_t k = idx.shape.back(), r = x.rank();
    MOPT_ENSURE(k >= 1 && k <= r, "the last dimension of indices ", shape_str(idx.shape), " must be in [1, ", r,
                "] for data ", shape_str(x.shape));
    Shape want(idx.shape.begin(), idx.shape.end() - 1);
    want.insert(want.end(), x.shape.begin() + k, x.shape.end());
    MOPT_ENSURE(upd.shape == want, "updates ", shape_str(upd.shape), " must have shape ", shape_str(want));
    const std::vector<int64_t> cs = contiguous_strides(x.shape);
    int64_t slice = 1;
    for (int64_t d = k; d < r; ++d) slice *= x.shape[d];
    const int64_t tuples = k ? idx.numel() / k : 0;
    std::vector<int64_t> offs(static_cast<size_t>(tuples));
    for (int64_t t = 0; t < tuples; ++t) {
      int64_t off = 0;
      for (int64_t j = 0; j < k; ++j) off += checked_index(typed::index_at(idx, t * k + j), x.shape[j], "index") * cs[j];
      offs[t] = off;
    }
    Tensor& y = ctx.output(0, x.shape);
    parallel_copy(ctx.pool(), y.data, x.data, x.nbytes());
    scatter_into(y, upd, offs, slice, red_);
  }

 private:
  Red red_;
};

// ---- Pad ----------------------------------------------------------------------------------------------

// Pad (opset 18+: pads, constant_value and axes as inputs; opset 2's pads/value attributes too).
// Each output coordinate maps to a source coordinate per axis (or to the constant), so negative pads
// (cropping) come for free in constant mode; the other modes need the source axis not to be cropped.
class PadKernel final : public Kernel {
 public:
  explicit PadKernel(const KernelInit& init) {
    const std::string m = init.attrs.get_string("mode", "constant");
    mode_ = m == "constant" ? 0 : m == "reflect" ? 1 : m == "edge" ? 2 : m == "wrap" ? 3 : -1;
    MOPT_CHECK(mode_ >= 0, ErrorCode::kInvalidModel, "mode '", m, "' is not one of constant, reflect, edge, wrap");
    attr_pads_ = init.attrs.get_ints("pads", {});
    attr_value_ = init.attrs.get_float("value", 0.0);
    impl = "pad";
  }
  void run(KernelContext& ctx) override {
    const Tensor& x = ctx.in(0);
    const int64_t r = x.rank();
    std::vector<int64_t> pads = attr_pads_;
    if (const Tensor* p = ctx.input(1)) pads = typed::ints_of(*p, "pads");
    std::vector<int64_t> axes;
    if (const Tensor* a = ctx.input(3); a && a->numel() > 0) {
      axes = typed::ints_of(*a, "axes");
    } else {
      for (int64_t d = 0; d < r; ++d) axes.push_back(d);
    }
    const size_t na = axes.size();
    MOPT_ENSURE(pads.size() == 2 * na, "pads has ", pads.size(), " values for ", na, " axes (needs ", 2 * na, ")");
    std::vector<int64_t> begin(r, 0), end(r, 0);
    std::vector<bool> seen(r, false);
    for (size_t i = 0; i < na; ++i) {
      const int64_t a = normalize_axis(axes[i], r);
      MOPT_ENSURE(!seen[a], "axis ", axes[i], " is repeated in axes");
      seen[a] = true;
      begin[a] = pads[i];
      end[a] = pads[na + i];
    }
    Shape out(r);
    std::vector<std::vector<int64_t>> src(r);  // per axis: source coordinate of each output one, -1 = constant
    for (int64_t d = 0; d < r; ++d) {
      const int64_t n = x.shape[d];
      out[d] = n + begin[d] + end[d];
      MOPT_ENSURE(out[d] >= 0, "pads ", shape_str(pads), " remove more than the ", n, " elements of axis ", d);
      if (mode_ != 0 && (begin[d] != 0 || end[d] != 0)) {
        MOPT_ENSURE(begin[d] >= 0 && end[d] >= 0, "negative pads with mode other than constant");
        MOPT_ENSURE(n > 0, "cannot pad an empty axis ", d, " in this mode");
      }
      src[d].resize(static_cast<size_t>(out[d]));
      for (int64_t o = 0; o < out[d]; ++o) {
        int64_t s = o - begin[d];
        if (s < 0 || s >= n) {
          if (mode_ == 0) {
            s = -1;
          } else if (mode_ == 2) {
            s = std::clamp<int64_t>(s, 0, n - 1);
          } else if (mode_ == 3) {
            s = ((s % n) + n) % n;
          } else if (n == 1) {
            s = 0;
          } else {  // reflect about the edges without repeating them: period 2n - 2
            const int64_t p = 2 * n - 2;
            s = ((s % p) + p) % p;
            if (s >= n) s = p - s;
          }
        }
        src[d][o] = s;
      }
    }
    Tensor& y = ctx.output(0, out);
    if (y.numel() == 0) return;
    const std::vector<int64_t> cs = contiguous_strides(x.shape);
    typed::dispatch(x.dtype, "Pad", [&](auto tag) {
      using T = typename decltype(tag)::type;
      T fill{};
      if (const Tensor* cv = ctx.input(2); cv && cv->numel() > 0) {
        MOPT_ENSURE(cv->dtype == x.dtype, "constant_value is ", dtype_name(cv->dtype), ", data is ", dtype_name(x.dtype));
        fill = *cv->ptr<T>();
      } else if (attr_value_ != 0.0) {
        fill = store<T>(static_cast<typed::Arith<T>>(attr_value_));
      }
      const T* xp = x.ptr<T>();
      T* yp = y.ptr<T>();
      std::vector<int64_t> pos(static_cast<size_t>(r), 0);
      const int64_t n = y.numel();
      for (int64_t i = 0; i < n; ++i) {
        int64_t off = 0;
        bool constant = false;
        for (int64_t d = 0; d < r; ++d) {
          const int64_t s = src[d][pos[d]];
          if (s < 0) {
            constant = true;
            break;
          }
          off += s * cs[d];
        }
        yp[i] = constant ? fill : xp[off];
        for (int64_t d = r - 1; d >= 0; --d) {
          if (++pos[d] < out[d]) break;
          pos[d] = 0;
        }
      }
    });
  }

 private:
  int mode_;
  std::vector<int64_t> attr_pads_;
  double attr_value_;
};

// ---- TopK, Hardmax ------------------------------------------------------------------------------------

// Values in order (largest first, or smallest), ties by the lower index; NaN counts as larger than
// every number, as numpy's sort (the reference) orders it.
class TopKKernel final : public Kernel {
 public:
  explicit TopKKernel(const KernelInit& init) {
    axis_ = init.attrs.get_int("axis", -1);
    largest_ = init.attrs.get_int("largest", 1) != 0;
    impl = "topk";
  }
  void run(KernelContext& ctx) override {
    const Tensor& x = ctx.in(0);
    const Tensor& kt = ctx.in(1);
    MOPT_ENSURE(x.rank() >= 1, "X must have rank >= 1, got a scalar");
    MOPT_ENSURE(kt.numel() == 1, "K must hold one value, got shape ", shape_str(kt.shape));
    const int64_t k = typed::index_at(kt, 0);
    const int64_t a = normalize_axis(axis_, x.rank());
    const typed::AxisSplit as = typed::split_at(x.shape, a);
    MOPT_ENSURE(k >= 0 && k <= as.dim, "K = ", k, " must be in [0, ", as.dim, "] for axis ", a, " of X ",
                shape_str(x.shape));
    Shape out = x.shape;
    out[a] = k;
    Tensor& vals = ctx.output(0, out);
    Tensor& inds = ctx.output(1, out);
    typed::dispatch(x.dtype, "TopK", [&](auto tag) {
      using T = typename decltype(tag)::type;
      const T* xp = x.ptr<T>();
      T* vp = vals.ptr<T>();
      int64_t* ip = inds.ptr<int64_t>();
      ctx.pool().parallel_for(as.outer * as.inner, 64, [&](int64_t b, int64_t e) {
        std::vector<int64_t> order(static_cast<size_t>(as.dim));
        for (int64_t t = b; t < e; ++t) {
          const int64_t o = t / as.inner, i = t % as.inner;
          const T* p = xp + o * as.dim * as.inner + i;
          auto at = [&](int64_t j) { return load(p[j * as.inner]); };
          auto first = [&](int64_t u, int64_t v) {  // true when u goes before v
            const auto a_ = at(u), b_ = at(v);
            const bool na = a_ != a_, nb = b_ != b_;
            if (na || nb) {
              if (na && nb) return u < v;
              return largest_ ? na : nb;
            }
            if (a_ != b_) return largest_ ? a_ > b_ : a_ < b_;
            return u < v;
          };
          std::iota(order.begin(), order.end(), 0);
          std::partial_sort(order.begin(), order.begin() + k, order.end(), first);
          for (int64_t j = 0; j < k; ++j) {
            const int64_t dst = (o * k + j) * as.inner + i;
            vp[dst] = p[order[j] * as.inner];
            ip[dst] = order[j];
          }
        }
      });
    });
  }

 private:
  int64_t axis_;
  bool largest_;
};

// Hardmax (opset 13): 1 at the first largest value along the axis, 0 elsewhere.
class HardmaxKernel final : public Kernel {
 public:
  explicit HardmaxKernel(const KernelInit& init) : axis_(init.attrs.get_int("axis", -1)) { impl = "hardmax"; }
  void run(KernelContext& ctx) override {
    const Tensor& x = ctx.in(0);
    MOPT_ENSURE(x.rank() >= 1, "input must have rank >= 1, got a scalar");
    const int64_t a = normalize_axis(axis_, x.rank());
    const typed::AxisSplit as = typed::split_at(x.shape, a);
    Tensor& y = ctx.output(0, x.shape);
    typed::dispatch(x.dtype, "Hardmax", [&](auto tag) {
      using T = typename decltype(tag)::type;
      if constexpr (!is_float_v<T>) {
        fail(ErrorCode::kUnsupported, "Hardmax of ", dtype_name(x.dtype), " has no native kernel");
      } else {
        const T* xp = x.ptr<T>();
        T* yp = y.ptr<T>();
        for (int64_t t = 0; t < as.outer * as.inner; ++t) {
          const int64_t o = t / as.inner, i = t % as.inner, base = o * as.dim * as.inner + i;
          int64_t best = 0;
          for (int64_t j = 0; j < as.dim; ++j) {
            const auto v = load(xp[base + j * as.inner]), bv = load(xp[base + best * as.inner]);
            if (bv != bv) break;  // numpy's argmax: the first NaN
            if (v != v || v > bv) best = j;
          }
          for (int64_t j = 0; j < as.dim; ++j)
            yp[base + j * as.inner] = store<T>(static_cast<typed::Arith<T>>(j == best ? 1 : 0));
        }
      }
    });
  }

 private:
  int64_t axis_;
};

// ---- CumProd ------------------------------------------------------------------------------------------

class CumProdKernel final : public Kernel {
 public:
  explicit CumProdKernel(const KernelInit& init) {
    exclusive_ = init.attrs.get_int("exclusive", 0) != 0;
    reverse_ = init.attrs.get_int("reverse", 0) != 0;
    impl = "cumprod";
  }
  void run(KernelContext& ctx) override {
    const Tensor& x = ctx.in(0);
    MOPT_ENSURE(x.rank() >= 1, "X must have rank >= 1, got a scalar");
    const Tensor& at = ctx.in(1);
    MOPT_ENSURE(at.numel() == 1, "axis must hold one value, got shape ", shape_str(at.shape));
    const int64_t a = normalize_axis(typed::index_at(at, 0), x.rank());
    const typed::AxisSplit as = typed::split_at(x.shape, a);
    Tensor& y = ctx.output(0, x.shape);
    typed::dispatch(x.dtype, "CumProd", [&](auto tag) {
      using T = typename decltype(tag)::type;
      if constexpr (std::is_same_v<T, bool>) {
        fail(ErrorCode::kUnsupported, "CumProd of bool has no native kernel");
      } else {
        const T* xp = x.ptr<T>();
        T* yp = y.ptr<T>();
        for (int64_t t = 0; t < as.outer * as.inner; ++t) {
          const int64_t o = t / as.inner, i = t % as.inner, base = o * as.dim * as.inner + i;
          auto acc = load(T{});
          acc = static_cast<decltype(acc)>(1);
          for (int64_t s = 0; s < as.dim; ++s) {
            const int64_t j = reverse_ ? as.dim - 1 - s : s;
            const auto v = load(xp[base + j * as.inner]);
            if (exclusive_) {
              yp[base + j * as.inner] = store<T>(acc);
              acc = static_cast<decltype(acc)>(acc * v);
            } else {
              acc = static_cast<decltype(acc)>(acc * v);
              yp[base + j * as.inner] = store<T>(acc);
            }
          }
        }
      }
    });
  }

 private:
  bool exclusive_, reverse_;
};

// ---- OneHot, EyeLike ----------------------------------------------------------------------------------

double value_at(const Tensor& t, int64_t i) {
  double v = 0;
  typed::dispatch(t.dtype, "OneHot", [&](auto tag) {
    using T = typename decltype(tag)::type;
    v = static_cast<double>(load(t.ptr<T>()[i]));
  });
  return v;
}

class OneHotKernel final : public Kernel {
 public:
  explicit OneHotKernel(const KernelInit& init) : axis_(init.attrs.get_int("axis", -1)) { impl = "one_hot"; }
  void run(KernelContext& ctx) override {
    const Tensor& idx = ctx.in(0);
    const Tensor& dt = ctx.in(1);
    const Tensor& vals = ctx.in(2);
    MOPT_ENSURE(dt.numel() == 1, "depth must hold one value, got shape ", shape_str(dt.shape));
    MOPT_ENSURE(vals.numel() == 2, "values must hold [off, on], got shape ", shape_str(vals.shape));
    const double dd = value_at(dt, 0);
    MOPT_ENSURE(dd >= 1 && dd < 1e12, "depth must be >= 1, got ", dd);
    const int64_t depth = static_cast<int64_t>(dd);
    const int64_t r = idx.rank() + 1;
    const int64_t a = normalize_axis(axis_, r);
    Shape out = idx.shape;
    out.insert(out.begin() + a, depth);
    Tensor& y = ctx.output(0, out);
    const typed::AxisSplit as = typed::split_at(out, a);
    typed::dispatch_size(dtype_size(vals.dtype), [&](auto tag) {
      using T = typename decltype(tag)::type;
      const T off = vals.ptr<T>()[0], on = vals.ptr<T>()[1];
      T* yp = y.ptr<T>();
      std::fill(yp, yp + y.numel(), off);
      for (int64_t t = 0; t < as.outer * as.inner; ++t) {
        double v = value_at(idx, t);
        if (v < 0) v += static_cast<double>(depth);
        if (!(v >= 0 && v < static_cast<double>(depth))) continue;  // out of range: all off
        const int64_t k = static_cast<int64_t>(v);
        const int64_t o = t / as.inner, i = t % as.inner;
        yp[(o * depth + k) * as.inner + i] = on;
      }
    });
  }

 private:
  int64_t axis_;
};

class EyeLikeKernel final : public Kernel {
 public:
  explicit EyeLikeKernel(const KernelInit& init) : k_(init.attrs.get_int("k", 0)) {
    to_ = init.attrs.has("dtype") ? static_cast<DType>(init.attrs.get_int("dtype"))
                                  : (init.in_dtypes.empty() ? DType::kF32 : init.in_dtypes[0]);
    impl = "eye_like";
  }
  void run(KernelContext& ctx) override {
    const Tensor& x = ctx.in(0);
    MOPT_ENSURE(x.rank() == 2, "input must be 2-D, got shape ", shape_str(x.shape));
    Tensor& y = ctx.output(0, x.shape, to_);
    const int64_t rows = x.shape[0], cols = x.shape[1];
    typed::dispatch(y.dtype, "EyeLike", [&](auto tag) {
      using T = typename decltype(tag)::type;
      T* yp = y.ptr<T>();
      for (int64_t i = 0; i < rows; ++i)
        for (int64_t j = 0; j < cols; ++j)
          yp[i * cols + j] = store<T>(static_cast<typed::Arith<T>>(static_cast<__int128>(j) - i == k_ ? 1 : 0));
    });
  }

 private:
  int64_t k_;
  DType to_;
};

// ---- DepthToSpace, SpaceToDepth -----------------------------------------------------------------------

class DepthSpaceKernel final : public Kernel {
 public:
  DepthSpaceKernel(const KernelInit& init, bool to_space) : to_space_(to_space) {
    bs_ = init.attrs.get_int("blocksize");
    const std::string mode = init.attrs.get_string("mode", "DCR");  // SpaceToDepth has it since opset 25
    MOPT_CHECK(mode == "DCR" || mode == "CRD", ErrorCode::kInvalidModel, "mode '", mode, "' is not DCR or CRD");
    crd_ = mode == "CRD";
    MOPT_CHECK(bs_ >= 1, ErrorCode::kInvalidModel, "blocksize must be >= 1, got ", bs_);
    impl = to_space ? "depth_to_space" : "space_to_depth";
  }
  void run(KernelContext& ctx) override {
    const Tensor& x = ctx.in(0);
    MOPT_ENSURE(x.rank() == 4, "input must be 4-D (N, C, H, W), got shape ", shape_str(x.shape));
    const int64_t N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3], b = bs_;
    Shape view, out;
    std::vector<int64_t> perm;
    if (to_space_) {
      MOPT_ENSURE(C % (b * b) == 0, "channels ", C, " are not a multiple of blocksize^2 = ", b * b);
      const int64_t c = C / (b * b);
      if (crd_) {
        view = {N, c, b, b, H, W};
        perm = {0, 1, 4, 2, 5, 3};
      } else {
        view = {N, b, b, c, H, W};
        perm = {0, 3, 4, 1, 5, 2};
      }
      out = {N, c, H * b, W * b};
    } else {
      MOPT_ENSURE(H % b == 0 && W % b == 0, "height ", H, " and width ", W, " must be multiples of blocksize ", b);
      view = {N, C, H / b, b, W / b, b};
      if (crd_) perm = {0, 1, 3, 5, 2, 4};
      else perm = {0, 3, 5, 1, 2, 4};
      out = {N, C * b * b, H / b, W / b};
    }
    Tensor& y = ctx.output(0, out);
    if (y.numel() == 0) return;
    const std::vector<int64_t> vs = contiguous_strides(view);
    Shape pdims(6);
    std::vector<int64_t> pstr(6);
    for (int d = 0; d < 6; ++d) {
      pdims[d] = view[perm[d]];
      pstr[d] = vs[perm[d]];
    }
    typed::dispatch_size(dtype_size(x.dtype), [&](auto tag) {
      using T = typename decltype(tag)::type;
      const T* xp = x.ptr<T>();
      T* yp = y.ptr<T>();
      std::vector<int64_t> pos(6, 0);
      for (int64_t i = 0; i < y.numel(); ++i) {
        int64_t off = 0;
        for (int d = 0; d < 6; ++d) off += pos[d] * pstr[d];
        yp[i] = xp[off];
        for (int d = 5; d >= 0; --d) {
          if (++pos[d] < pdims[d]) break;
          pos[d] = 0;
        }
      }
    });
  }

 private:
  bool to_space_, crd_ = false;
  int64_t bs_;
};

template <class K>
std::unique_ptr<Kernel> make(const KernelInit& init) {
  return std::make_unique<K>(init);
}
std::unique_ptr<Kernel> make_d2s(const KernelInit& i) { return std::make_unique<DepthSpaceKernel>(i, true); }
std::unique_ptr<Kernel> make_s2d(const KernelInit& i) { return std::make_unique<DepthSpaceKernel>(i, false); }

}  // namespace

void register_index_ops(OpRegistry& r) {
  using D = DType;
  const std::vector<DType> any;
  std::vector<DType> num = {D::kF32, D::kF64, D::kF16, D::kBF16, D::kI8, D::kI16, D::kI32, D::kI64,
                            D::kU8,  D::kU16, D::kU32, D::kU64};
  std::vector<DType> num_bool = num;
  num_bool.push_back(D::kBool);
  const std::vector<DType> floats = {D::kF32, D::kF64, D::kF16};
  r.add({"", "Split", any, &make<SplitKernel>});
  r.add({"", "Trilu", any, &make<TriluKernel>});
  r.add({"", "ArgMax", num, &make<ArgKernel<true>>});
  r.add({"", "ArgMin", num, &make<ArgKernel<false>>});
  r.add({"", "GatherElements", any, &make<GatherElementsKernel>});
  r.add({"", "ScatterElements", num_bool, &make<ScatterElementsKernel>});
  r.add({"", "ScatterND", num_bool, &make<ScatterNDKernel>});
  r.add({"", "Pad", num_bool, &make<PadKernel>});
  r.add({"", "TopK", num, &make<TopKKernel>});
  r.add({"", "Hardmax", floats, &make<HardmaxKernel>});
  r.add({"", "CumProd", num, &make<CumProdKernel>});
  r.add({"", "OneHot", num, &make<OneHotKernel>});
  r.add({"", "EyeLike", num_bool, &make<EyeLikeKernel>});
  r.add({"", "DepthToSpace", any, &make_d2s});
  r.add({"", "SpaceToDepth", any, &make_s2d});
}

}  // namespace mopt
