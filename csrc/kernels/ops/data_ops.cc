// The glue ops that exported transformers (BERT, GPT-2, ViT) run between their matrix products:
// indexing (Slice, Gather, GatherND), broadcasting copies (Expand, Tile, Where), Cast, Range, Size,
// comparisons and logic, IsNaN/IsInf, CumSum, ReduceMean/Sum/Max/Min, and Sign/Log.
// They move, compare or convert data and do little arithmetic, so they are plain C++ on the baseline
// ISA; every shape, axis and index is checked before anything is read.
#include <array>
#include <cmath>
#include <limits>
#include <type_traits>

#include "kernels/cpu/isa_fns.h"
#include "kernels/ops/common.h"
#include "kernels/ops/typed.h"

namespace mopt {
namespace {

template <class T>
struct Tag {
  using type = T;
};

struct Half {  // IEEE binary16, as stored
  uint16_t bits;
};
struct Bytes16 {  // complex128: copied, never inspected
  uint64_t lo, hi;
};

// fn(Tag<T>{}) with T an unsigned type of the element size: for ops that only copy elements.
template <class F>
void with_element_size(size_t es, F&& fn) {
  switch (es) {
    case 1: return fn(Tag<uint8_t>{});
    case 2: return fn(Tag<uint16_t>{});
    case 4: return fn(Tag<uint32_t>{});
    case 8: return fn(Tag<uint64_t>{});
    case 16: return fn(Tag<Bytes16>{});
    default: fail(ErrorCode::kUnsupported, "no native copy for elements of ", es, " bytes");
  }
}

// fn(Tag<T>{}) with T the C++ type of a numeric dtype (Half for float16, bool for bool).
template <class F>
void with_numeric(DType t, F&& fn) {
  switch (t) {
    case DType::kF32: return fn(Tag<float>{});
    case DType::kF64: return fn(Tag<double>{});
    case DType::kF16: return fn(Tag<Half>{});
    case DType::kI8: return fn(Tag<int8_t>{});
    case DType::kI16: return fn(Tag<int16_t>{});
    case DType::kI32: return fn(Tag<int32_t>{});
    case DType::kI64: return fn(Tag<int64_t>{});
    case DType::kU8: return fn(Tag<uint8_t>{});
    case DType::kU16: return fn(Tag<uint16_t>{});
    case DType::kU32: return fn(Tag<uint32_t>{});
    case DType::kU64: return fn(Tag<uint64_t>{});
    case DType::kBool: return fn(Tag<bool>{});
    default: fail(ErrorCode::kUnsupported, "no native kernel for type ", dtype_name(t));
  }
}

float half_to_float(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1Fu, mant = h & 0x3FFu;
  if (exp == 0) {  // zero or subnormal: exact in float
    const float v = std::ldexp(static_cast<float>(mant), -24);
    return sign ? -v : v;
  }
  uint32_t bits = exp == 0x1F ? (sign | 0x7F800000u | (mant << 13)) : (sign | ((exp + 112) << 23) | (mant << 13));
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

// Loads an element for arithmetic: float16 widens to float, everything else stays.
template <class T>
auto load(T v) {
  if constexpr (std::is_same_v<T, Half>) {
    return half_to_float(v.bits);
  } else {
    return v;
  }
}

// ---- reading small integer inputs -----------------------------------------------------------------

int64_t read_scalar_int(const Tensor& t, const char* what) {
  MOPT_ENSURE(t.numel() == 1, what, " must hold one value, got shape ", shape_str(t.shape));
  return read_ints(t.rank() == 0 ? Tensor{t.dtype, {1}, t.data} : t, what)[0];
}

// ---- strided copies ---------------------------------------------------------------------------------

// Copies the view of `src` with shape `dims` and element strides `strides` (any sign, 0 = repeat) into
// the contiguous `dst`. Runs of dimensions that are contiguous in the source are merged first, so a
// slice of whole rows becomes one memcpy per row.
void strided_copy(ThreadPool& pool, void* dst, const void* src, const Shape& dims, const std::vector<int64_t>& strides,
                  size_t es) {
  if (shape_numel(dims) == 0) return;
  std::vector<int64_t> md, ms;  // merged dims and strides, outermost first
  for (size_t d = 0; d < dims.size(); ++d) {
    if (dims[d] == 1) continue;
    if (!md.empty() && ms.back() == strides[d] * dims[d]) {
      md.back() *= dims[d];
      ms.back() = strides[d];
    } else {
      md.push_back(dims[d]);
      ms.push_back(strides[d]);
    }
  }
  if (md.empty()) {
    md.push_back(1);
    ms.push_back(1);
  }
  const size_t nd = md.size();
  const int64_t inner = md[nd - 1], istride = ms[nd - 1];
  int64_t outer = 1;
  for (size_t d = 0; d + 1 < nd; ++d) outer *= md[d];
  const char* s = static_cast<const char*>(src);
  char* y = static_cast<char*>(dst);
  with_element_size(es, [&](auto tag) {
    using T = typename decltype(tag)::type;
    pool.parallel_for(outer, std::max<int64_t>(1, 16384 / inner), [&](int64_t b, int64_t e) {
      std::vector<int64_t> idx(nd, 0);
      int64_t rem = b;
      for (int64_t d = static_cast<int64_t>(nd) - 2; d >= 0; --d) {
        idx[d] = rem % md[d];
        rem /= md[d];
      }
      for (int64_t o = b; o < e; ++o) {
        int64_t off = 0;
        for (size_t d = 0; d + 1 < nd; ++d) off += idx[d] * ms[d];
        T* out = reinterpret_cast<T*>(y) + o * inner;
        const T* in = reinterpret_cast<const T*>(s) + off;
        if (istride == 1) {
          std::memcpy(out, in, static_cast<size_t>(inner) * sizeof(T));
        } else if (istride == 0) {
          std::fill(out, out + inner, *in);
        } else {
          for (int64_t i = 0; i < inner; ++i) out[i] = in[i * istride];
        }
        for (int64_t d = static_cast<int64_t>(nd) - 2; d >= 0; --d) {
          if (++idx[d] < md[d]) break;
          idx[d] = 0;
        }
      }
    });
  });
}

// Strides of `src` broadcast to `out` (numpy rules, right-aligned): 0 where src has size 1.
std::vector<int64_t> broadcast_strides(const Shape& src, const Shape& out) {
  const size_t r = out.size(), lead = r - src.size();
  std::vector<int64_t> cs = contiguous_strides(src), st(r, 0);
  for (size_t i = 0; i < src.size(); ++i) st[lead + i] = src[i] == 1 ? 0 : cs[i];
  return st;
}

// Numpy broadcasting of several operands to one output, with runs of dimensions merged where each
// operand either broadcasts or not: the innermost merged dimension has stride 0 or 1 per operand.
struct NaryBroadcast {
  std::vector<int64_t> dims;                  // merged output dims, outermost first
  std::vector<std::vector<int64_t>> strides;  // [operand][dim], in elements (0 = broadcast)
};

Shape broadcast_all(const std::vector<const Tensor*>& ts, const char* names) {
  Shape out = ts[0]->shape;
  for (size_t k = 1; k < ts.size(); ++k) {
    Shape s;
    if (!broadcast_shapes(out, ts[k]->shape, &s)) {
      std::string shapes;
      for (const Tensor* t : ts) shapes += (shapes.empty() ? "" : ", ") + shape_str(t->shape);
      fail(ErrorCode::kRuntime, names, " have shapes ", shapes, " that cannot be broadcast together");
    }
    out = s;
  }
  return out;
}

NaryBroadcast make_nary(const std::vector<const Tensor*>& ts, const Shape& out) {
  const size_t k = ts.size(), r = out.size();
  std::vector<std::vector<int64_t>> full(k);
  for (size_t j = 0; j < k; ++j) full[j] = broadcast_strides(ts[j]->shape, out);
  NaryBroadcast nb;
  nb.strides.assign(k, {});
  std::vector<uint32_t> pat;  // bit j: operand j broadcasts along this merged dim
  for (size_t d = 0; d < r; ++d) {
    if (out[d] == 1) continue;
    uint32_t p = 0;
    for (size_t j = 0; j < k; ++j) p |= (full[j][d] == 0 ? 1u : 0u) << j;
    if (!nb.dims.empty() && pat.back() == p) {
      nb.dims.back() *= out[d];
      for (size_t j = 0; j < k; ++j) nb.strides[j].back() = full[j][d];
    } else {
      nb.dims.push_back(out[d]);
      pat.push_back(p);
      for (size_t j = 0; j < k; ++j) nb.strides[j].push_back(full[j][d]);
    }
  }
  if (nb.dims.empty()) {
    nb.dims.push_back(1);
    for (size_t j = 0; j < k; ++j) nb.strides[j].push_back(0);
  }
  return nb;
}

// fn(offsets, out_offset, n, inner_strides) for every innermost run of a broadcast; parallel over runs.
template <size_t K, class F>
void for_each_row(const NaryBroadcast& nb, ThreadPool& pool, F&& fn) {
  const size_t nd = nb.dims.size();
  const int64_t inner = nb.dims[nd - 1];
  std::array<int64_t, K> is{};
  for (size_t j = 0; j < K; ++j) is[j] = nb.strides[j][nd - 1];
  int64_t outer = 1;
  for (size_t d = 0; d + 1 < nd; ++d) outer *= nb.dims[d];
  pool.parallel_for(outer, std::max<int64_t>(1, 16384 / inner), [&](int64_t b, int64_t e) {
    std::vector<int64_t> idx(nd, 0);
    int64_t rem = b;
    for (int64_t d = static_cast<int64_t>(nd) - 2; d >= 0; --d) {
      idx[d] = rem % nb.dims[d];
      rem /= nb.dims[d];
    }
    for (int64_t o = b; o < e; ++o) {
      std::array<int64_t, K> off{};
      for (size_t d = 0; d + 1 < nd; ++d)
        for (size_t j = 0; j < K; ++j) off[j] += idx[d] * nb.strides[j][d];
      fn(off, o * inner, inner, is);
      for (int64_t d = static_cast<int64_t>(nd) - 2; d >= 0; --d) {
        if (++idx[d] < nb.dims[d]) break;
        idx[d] = 0;
      }
    }
  });
}

// ---- Slice, Gather, GatherND --------------------------------------------------------------------------

// Slice (opset 13): starts, ends, axes, steps as inputs; clamping as the spec says: after adding the
// dimension to a negative value, starts clamp to [0, dim] (step > 0) or [0, dim - 1] (step < 0), ends to
// [0, dim] or [-1, dim - 1].
class SliceKernel final : public Kernel {
 public:
  explicit SliceKernel(const KernelInit&) { impl = "slice"; }
  void run(KernelContext& ctx) override {
    const Tensor& x = ctx.in(0);
    const int64_t r = x.rank();
    std::vector<int64_t> starts = read_ints(ctx.in(1), "starts"), ends = read_ints(ctx.in(2), "ends");
    const size_t n = starts.size();
    MOPT_ENSURE(ends.size() == n, "starts has ", n, " values but ends has ", ends.size());
    std::vector<int64_t> axes, steps(n, 1);
    if (const Tensor* a = ctx.input(3)) {
      axes = read_ints(*a, "axes");
      MOPT_ENSURE(axes.size() == n, "axes has ", axes.size(), " values for ", n, " starts");
    } else {
      MOPT_ENSURE(static_cast<int64_t>(n) <= r, n, " starts for rank ", r, " data ", shape_str(x.shape));
      for (size_t i = 0; i < n; ++i) axes.push_back(static_cast<int64_t>(i));
    }
    if (const Tensor* s = ctx.input(4)) {
      steps = read_ints(*s, "steps");
      MOPT_ENSURE(steps.size() == n, "steps has ", steps.size(), " values for ", n, " starts");
    }
    Shape out = x.shape;
    std::vector<int64_t> first(r, 0), step(r, 1);
    std::vector<bool> seen(r, false);
    for (size_t i = 0; i < n; ++i) {
      const int64_t a = normalize_axis(axes[i], r);
      MOPT_ENSURE(!seen[a], "axis ", axes[i], " is repeated in axes");
      seen[a] = true;
      const int64_t dim = x.shape[a];
      int64_t st = steps[i];
      MOPT_ENSURE(st != 0, "steps must not be 0 (axis ", axes[i], ")");
      // a step longer than the axis takes at most one element; shortening it keeps the index
      // arithmetic below from overflowing (steps may be INT64_MIN)
      if (st > dim || st < -dim) st = st > 0 ? std::max<int64_t>(dim, 1) : -std::max<int64_t>(dim, 1);
      int64_t b = starts[i], e = ends[i];
      if (b < 0) b += dim;
      if (e < 0) e += dim;
      int64_t count;
      if (st > 0) {
        b = std::clamp<int64_t>(b, 0, dim);
        e = std::clamp<int64_t>(e, 0, dim);
        count = e > b ? (e - b - 1) / st + 1 : 0;
      } else {
        b = std::clamp<int64_t>(b, 0, dim - 1);
        e = std::clamp<int64_t>(e, -1, dim - 1);
        count = b > e ? (b - e - 1) / -st + 1 : 0;
      }
      first[a] = b;
      step[a] = st;
      out[a] = count;
    }
    Tensor& y = ctx.output(0, out);
    if (y.numel() == 0) return;
    const std::vector<int64_t> cs = contiguous_strides(x.shape);
    std::vector<int64_t> strides(r);
    int64_t base = 0;
    for (int64_t d = 0; d < r; ++d) {
      base += first[d] * cs[d];
      strides[d] = step[d] * cs[d];
    }
    const size_t es = dtype_size(x.dtype);
    strided_copy(ctx.pool(), y.data, static_cast<const char*>(x.data) + base * static_cast<int64_t>(es), out, strides,
                 es);
  }
};

// Checks every index against the axis size first (an index past it would read outside the tensor),
// then returns them with negative ones wrapped.
std::vector<int64_t> checked_indices(const Tensor& idx, int64_t dim, const char* what) {
  MOPT_ENSURE(idx.dtype == DType::kI64 || idx.dtype == DType::kI32, what, " must be int32 or int64, got ",
              dtype_name(idx.dtype));
  std::vector<int64_t> v(static_cast<size_t>(idx.numel()));
  for (int64_t i = 0; i < idx.numel(); ++i) {
    int64_t k = idx.dtype == DType::kI64 ? idx.ptr<int64_t>()[i] : idx.ptr<int32_t>()[i];
    MOPT_ENSURE(k >= -dim && k < dim, what, " value ", k, " is out of range [", -dim, ", ", dim - 1, "]");
    v[i] = k < 0 ? k + dim : k;
  }
  return v;
}

class GatherKernel final : public Kernel {
 public:
  explicit GatherKernel(const KernelInit& init) : axis_(init.attrs.get_int("axis", 0)) { impl = "gather"; }
  void run(KernelContext& ctx) override {
    const Tensor& x = ctx.in(0);
    const Tensor& idx = ctx.in(1);
    MOPT_ENSURE(x.rank() >= 1, "data must have rank >= 1, got a scalar");
    const int64_t a = normalize_axis(axis_, x.rank());
    const std::vector<int64_t> ix = checked_indices(idx, x.shape[a], "indices");
    Shape out(x.shape.begin(), x.shape.begin() + a);
    out.insert(out.end(), idx.shape.begin(), idx.shape.end());
    out.insert(out.end(), x.shape.begin() + a + 1, x.shape.end());
    Tensor& y = ctx.output(0, out);
    if (y.numel() == 0) return;
    int64_t outer = 1, inner = 1;
    for (int64_t d = 0; d < a; ++d) outer *= x.shape[d];
    for (int64_t d = a + 1; d < x.rank(); ++d) inner *= x.shape[d];
    const int64_t n = static_cast<int64_t>(ix.size()), dim = x.shape[a];
    const size_t es = dtype_size(x.dtype);
    with_element_size(es, [&](auto tag) {
      using T = typename decltype(tag)::type;
      const T* src = x.ptr<T>();
      T* dst = y.ptr<T>();
      // Rows of a few elements (T5's relative-position bias: one float per head, gathered for every
      // query-key pair) are copied element by element: a memcpy call per 16-byte row cost more than
      // the copy. Longer rows (embeddings) go through memcpy.
      const bool short_rows = inner * static_cast<int64_t>(sizeof(T)) <= 64;
      ctx.pool().parallel_for(outer * n, std::max<int64_t>(1, 16384 / inner), [&](int64_t b, int64_t e) {
        int64_t o = b / n, j = b % n;
        for (int64_t t = b; t < e; ++t) {
          const T* s = src + (o * dim + ix[j]) * inner;
          T* d = dst + t * inner;
          if (short_rows) {
            for (int64_t q = 0; q < inner; ++q) d[q] = s[q];
          } else {
            std::memcpy(d, s, static_cast<size_t>(inner) * sizeof(T));
          }
          if (++j == n) {
            j = 0;
            ++o;
          }
        }
      });
    });
  }

 private:
  int64_t axis_;
};

// GatherND with any batch_dims: the leading batch_dims dimensions of data and indices pair up, and
// each index tuple of length k addresses a slice of data's remaining dimensions.
class GatherNDKernel final : public Kernel {
 public:
  explicit GatherNDKernel(const KernelInit& init) : batch_dims_(init.attrs.get_int("batch_dims", 0)) {
    impl = "gather_nd";
  }
  void run(KernelContext& ctx) override {
    const Tensor& x = ctx.in(0);
    const Tensor& idx = ctx.in(1);
    const int64_t r = x.rank(), q = idx.rank(), b = batch_dims_;
    MOPT_ENSURE(idx.dtype == DType::kI64 || idx.dtype == DType::kI32, "indices must be int64, got ",
                dtype_name(idx.dtype));
    MOPT_ENSURE(r >= 1 && q >= 1, "data and indices must have rank >= 1, got ", shape_str(x.shape), " and ",
                shape_str(idx.shape));
    MOPT_ENSURE(b >= 0 && b < std::min(r, q), "batch_dims ", b, " must be in [0, ", std::min(r, q) - 1,
                "] for data ", shape_str(x.shape), " and indices ", shape_str(idx.shape));
    for (int64_t d = 0; d < b; ++d)
      MOPT_ENSURE(x.shape[d] == idx.shape[d], "the first ", b, " dimensions of data ", shape_str(x.shape),
                  " and indices ", shape_str(idx.shape), " must match (batch_dims)");
    const int64_t k = idx.shape[q - 1];
    MOPT_ENSURE(k >= 1 && k <= r - b, "the last dimension of indices ", shape_str(idx.shape), " must be in [1, ",
                r - b, "] for data ", shape_str(x.shape), " with batch_dims ", b);
    Shape out(idx.shape.begin(), idx.shape.end() - 1);
    out.insert(out.end(), x.shape.begin() + b + k, x.shape.end());
    int64_t batches = 1, slice = 1;
    for (int64_t d = 0; d < b; ++d) batches *= x.shape[d];
    for (int64_t d = b + k; d < r; ++d) slice *= x.shape[d];
    const int64_t tuples = batches == 0 ? 0 : shape_numel(idx.shape) / k / batches;  // per batch
    const std::vector<int64_t> cs = contiguous_strides(x.shape);
    const int64_t batch_stride = b > 0 ? cs[b - 1] : 0;
    // Offsets (in elements) of every slice, each index checked against its dimension.
    std::vector<int64_t> offs(static_cast<size_t>(batches * tuples));
    for (int64_t t = 0; t < batches * tuples; ++t) {
      int64_t off = (t / tuples) * batch_stride;
      for (int64_t j = 0; j < k; ++j) {
        const int64_t i = t * k + j;
        int64_t v = idx.dtype == DType::kI64 ? idx.ptr<int64_t>()[i] : idx.ptr<int32_t>()[i];
        const int64_t dim = x.shape[b + j];
        MOPT_ENSURE(v >= -dim && v < dim, "index ", v, " is out of range [", -dim, ", ", dim - 1, "] for dimension ",
                    b + j, " of data ", shape_str(x.shape));
        off += (v < 0 ? v + dim : v) * cs[b + j];
      }
      offs[t] = off;
    }
    Tensor& y = ctx.output(0, out);
    if (y.numel() == 0) return;
    const size_t bytes = static_cast<size_t>(slice) * dtype_size(x.dtype);
    const char* src = static_cast<const char*>(x.data);
    char* dst = static_cast<char*>(y.data);
    const int64_t es = static_cast<int64_t>(dtype_size(x.dtype));
    ctx.pool().parallel_for(static_cast<int64_t>(offs.size()), std::max<int64_t>(1, 65536 / std::max<int64_t>(1, bytes)),
                            [&](int64_t lo, int64_t hi) {
                              for (int64_t t = lo; t < hi; ++t) std::memcpy(dst + t * bytes, src + offs[t] * es, bytes);
                            });
  }

 private:
  int64_t batch_dims_;
};

// ---- broadcasting copies: Expand, Tile, Where ----------------------------------------------------------

class ExpandKernel final : public Kernel {
 public:
  explicit ExpandKernel(const KernelInit&) { impl = "expand"; }
  void run(KernelContext& ctx) override {
    const Tensor& x = ctx.in(0);
    const std::vector<int64_t> spec = read_ints(ctx.in(1), "shape");
    for (int64_t d : spec) MOPT_ENSURE(d >= 0, "shape ", shape_str(spec), " has a negative dimension");
    Shape out;
    if (!broadcast_shapes(x.shape, spec, &out))
      fail(ErrorCode::kRuntime, "input of shape ", shape_str(x.shape), " cannot be expanded to ", shape_str(spec));
    Tensor& y = ctx.output(0, out);
    strided_copy(ctx.pool(), y.data, x.data, out, broadcast_strides(x.shape, out), dtype_size(x.dtype));
  }
};

// Tile as a copy of a broadcast view: output dim d splits into (repeat, size) with source strides
// (0, stride), so the strided copy does the work.
class TileKernel final : public Kernel {
 public:
  explicit TileKernel(const KernelInit&) { impl = "tile"; }
  void run(KernelContext& ctx) override {
    const Tensor& x = ctx.in(0);
    const std::vector<int64_t> reps = read_ints(ctx.in(1), "repeats");
    MOPT_ENSURE(static_cast<int64_t>(reps.size()) == x.rank(), "repeats has ", reps.size(), " values for data ",
                shape_str(x.shape), " of rank ", x.rank());
    Shape out(x.rank()), view;
    std::vector<int64_t> strides;
    const std::vector<int64_t> cs = contiguous_strides(x.shape);
    for (int64_t d = 0; d < x.rank(); ++d) {
      MOPT_ENSURE(reps[d] >= 0, "repeats ", shape_str(reps), " has a negative value");
      out[d] = x.shape[d] * reps[d];
      view.insert(view.end(), {reps[d], x.shape[d]});
      strides.insert(strides.end(), {0, cs[d]});
    }
    Tensor& y = ctx.output(0, out);
    strided_copy(ctx.pool(), y.data, x.data, view, strides, dtype_size(x.dtype));
  }
};

class WhereKernel final : public Kernel {
 public:
  explicit WhereKernel(const KernelInit&) { impl = "where"; }
  void run(KernelContext& ctx) override {
    const Tensor& c = ctx.in(0);
    const Tensor& a = ctx.in(1);
    const Tensor& b = ctx.in(2);
    MOPT_ENSURE(c.dtype == DType::kBool, "condition must be bool, got ", dtype_name(c.dtype));
    MOPT_ENSURE(a.dtype == b.dtype, "X and Y types differ: ", dtype_name(a.dtype), " and ", dtype_name(b.dtype));
    const Shape out = broadcast_all({&c, &a, &b}, "condition, X and Y");
    Tensor& y = ctx.output(0, out);
    if (y.numel() == 0) return;
    const NaryBroadcast nb = make_nary({&c, &a, &b}, out);
    const uint8_t* cp = c.ptr<uint8_t>();
    with_element_size(dtype_size(a.dtype), [&](auto tag) {
      using T = typename decltype(tag)::type;
      const T* ap = a.ptr<T>();
      const T* bp = b.ptr<T>();
      T* yp = y.ptr<T>();
      for_each_row<3>(nb, ctx.pool(), [&](const auto& off, int64_t oo, int64_t n, const auto& is) {
        const uint8_t* cc = cp + off[0];
        const T* aa = ap + off[1];
        const T* bb = bp + off[2];
        // unit or zero strides as constants, so the loops vectorize (GPT-2 selects two scalars by
        // a [batch, 1, seq, seq] mask; the strided loop took 1.3 ns an element)
        T* yo = yp + oo;
        if (is[0] == 1 && is[1] == 0 && is[2] == 0) {
          const T x = aa[0], z = bb[0];
          for (int64_t i = 0; i < n; ++i) yo[i] = cc[i] ? x : z;
        } else if (is[0] == 1 && is[1] == 1 && is[2] == 1) {
          for (int64_t i = 0; i < n; ++i) yo[i] = cc[i] ? aa[i] : bb[i];
        } else {
          for (int64_t i = 0; i < n; ++i) yo[i] = cc[i * is[0]] ? aa[i * is[1]] : bb[i * is[2]];
        }
      });
    });
  }
};

// ---- Cast ------------------------------------------------------------------------------------------------
//
// Float to integer follows numpy's astype (ONNX leaves out-of-range values undefined; the reference
// and ONNX Runtime on x86 both inherit the cvtt instructions): truncation toward zero, and for NaN or
// values the conversion cannot hold, the "integer indefinite" INT_MIN of a 32- or 64-bit conversion,
// whose low bits are what the narrow types keep.

int32_t cvtt32(double x) { return (x > -2147483649.0 && x < 2147483648.0) ? static_cast<int32_t>(x) : INT32_MIN; }
int64_t cvtt64(double x) {
  return (x >= -9223372036854775808.0 && x < 9223372036854775808.0) ? static_cast<int64_t>(x) : INT64_MIN;
}

template <class D>
D float_to_int(double x) {
  if constexpr (std::is_same_v<D, int64_t>) {
    return cvtt64(x);
  } else if constexpr (std::is_same_v<D, uint64_t>) {  // the compilers' unsigned conversion: shift by 2^63
    return x >= 9223372036854775808.0 ? static_cast<uint64_t>(cvtt64(x - 9223372036854775808.0)) ^ (1ull << 63)
                                      : static_cast<uint64_t>(cvtt64(x));
  } else if constexpr (std::is_same_v<D, uint32_t>) {
    return x >= 2147483648.0 ? static_cast<uint32_t>(cvtt32(x - 2147483648.0)) ^ 0x80000000u
                             : static_cast<uint32_t>(cvtt32(x));
  } else {  // 8- and 16-bit types keep the low bits of the 32-bit conversion
    return static_cast<D>(static_cast<uint32_t>(cvtt32(x)));
  }
}

// A small binary float format. kind: how it spends its top codes.
struct MiniFloat {
  enum Kind { kIeee, kFn, kFnuz, kNoSpecials } kind;
  int ebits, mbits, bias;
  uint32_t max_code;  // largest finite magnitude
};
constexpr MiniFloat kF16{MiniFloat::kIeee, 5, 10, 15, 0x7BFF};
constexpr MiniFloat kE4M3FN{MiniFloat::kFn, 4, 3, 7, 0x7E};
constexpr MiniFloat kE4M3FNUZ{MiniFloat::kFnuz, 4, 3, 8, 0x7F};
constexpr MiniFloat kE5M2{MiniFloat::kIeee, 5, 2, 15, 0x7B};
constexpr MiniFloat kE5M2FNUZ{MiniFloat::kFnuz, 5, 2, 16, 0x7F};
constexpr MiniFloat kE2M1{MiniFloat::kNoSpecials, 2, 1, 1, 0x7};

// Rounds x to the nearest value of format f (ties to even), as ml_dtypes and numpy do. Overflow gives
// the largest finite value when saturating (ONNX's saturate=1, which clamps infinities too), otherwise
// infinity (IEEE formats) or NaN (the fn/fnuz float8 formats); float4 has neither and always saturates.
uint32_t encode_minifloat(double x, const MiniFloat& f, bool saturate) {
  const uint32_t sign = 1u << (f.ebits + f.mbits);
  const uint32_t inf = ((1u << f.ebits) - 1) << f.mbits;
  const bool neg = std::signbit(x);
  if (std::isnan(x)) {
    switch (f.kind) {
      case MiniFloat::kIeee: return (neg ? sign : 0) | inf | (1u << (f.mbits - 1));
      case MiniFloat::kFn: return (neg ? sign : 0) | (sign - 1);
      default: return sign;  // fnuz: 0x80; float4 (no NaN): ml_dtypes gives the -0 code
    }
  }
  const uint32_t s = neg ? sign : 0;
  auto overflow = [&]() -> uint32_t {
    if (saturate || f.kind == MiniFloat::kNoSpecials) return s | f.max_code;
    if (f.kind == MiniFloat::kIeee) return s | inf;
    return f.kind == MiniFloat::kFn ? (s | (sign - 1)) : sign;
  };
  const double a = std::fabs(x);
  if (a == 0) return f.kind == MiniFloat::kFnuz ? 0 : s;
  if (std::isinf(a)) return overflow();
  int e2 = 0;
  std::frexp(a, &e2);
  const int min_exp = 1 - f.bias;  // exponent of the smallest normal value
  const int exp = std::max(e2 - 1, min_exp);
  if (exp - min_exp > 40) return overflow();
  // a / quantum is exact (a power-of-two scaling); nearbyint rounds half to even.
  const double n = std::nearbyint(std::ldexp(a, f.mbits - exp));
  const uint64_t code = (static_cast<uint64_t>(exp - min_exp) << f.mbits) + static_cast<uint64_t>(n);
  if (code > f.max_code) return overflow();
  if (code == 0 && f.kind == MiniFloat::kFnuz) return 0;  // no negative zero
  return s | static_cast<uint32_t>(code);
}

uint16_t float_to_bf16(float v) {  // ties to even; what ml_dtypes does for every source type
  uint32_t bits;
  std::memcpy(&bits, &v, 4);
  if (std::isnan(v)) return static_cast<uint16_t>((bits >> 16) & 0x8000u) | 0x7FC0u;
  bits += 0x7FFFu + ((bits >> 16) & 1u);
  return static_cast<uint16_t>(bits >> 16);
}

// float8e8m0 (a bare power-of-two exponent) exactly as onnx.numpy_helper.to_float8e8m0 computes it
// from the float32 bits, which is what the ONNX test data holds.
uint8_t float_to_e8m0(float v, bool saturate, int round_mode) {
  uint32_t bits;
  std::memcpy(&bits, &v, 4);
  uint32_t exp = (bits >> 23) & 0xFFu;
  if (exp == 0xFF) return 0xFF;
  bool up = false;
  if (round_mode == 0) {  // nearest
    const bool g = bits & 0x400000u, r = bits & 0x200000u, st = bits & 0x1FFFFFu, lsb = exp > 0;
    up = g && (r || st || lsb);
  } else if (round_mode == 1) {  // up
    up = (bits & 0x7FFFFFu) != 0;
  }
  if (up && !(saturate && exp == 0xFE)) ++exp;
  return static_cast<uint8_t>(exp);
}

template <class D, class S>
D convert(S v) {
  if constexpr (std::is_same_v<S, Half> && std::is_same_v<D, uint32_t>) {
    // numpy converts float16 through a 64-bit conversion here (NaN -> 0), unlike float32 and float64
    return static_cast<uint32_t>(cvtt64(half_to_float(v.bits)));
  } else if constexpr (std::is_same_v<S, Half>) {
    return convert<D>(half_to_float(v.bits));
  } else if constexpr (std::is_same_v<D, Half>) {
    return Half{static_cast<uint16_t>(encode_minifloat(static_cast<double>(v), kF16, false))};
  } else if constexpr (std::is_same_v<D, bool>) {
    return v != 0;
  } else if constexpr (std::is_floating_point_v<S> && std::is_integral_v<D>) {
    return float_to_int<D>(v);
  } else {
    return static_cast<D>(v);  // int -> int wraps, as numpy does
  }
}

template <class S, class D>
void cast_loop(const Tensor& x, Tensor& y, ThreadPool& pool) {
  const S* s = x.ptr<S>();
  D* d = y.ptr<D>();
  pool.parallel_for(x.numel(), 65536, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) d[i] = convert<D>(s[i]);
  });
}

bool is_exotic(DType t) {
  switch (t) {
    case DType::kBF16: case DType::kF8E4M3FN: case DType::kF8E4M3FNUZ: case DType::kF8E5M2:
    case DType::kF8E5M2FNUZ: case DType::kF8E8M0: case DType::kU4: case DType::kI4: case DType::kU2:
    case DType::kI2: case DType::kF4E2M1:
      return true;
    default:
      return false;
  }
}

// Targets without a C++ arithmetic type: bfloat16, float8, float4 and the 2- and 4-bit integers
// (one element per byte, as mopt stores them). The source is read as a double (floats) or as an exact
// integer (integers, bool).
template <class S>
void cast_exotic(const Tensor& x, Tensor& y, DType to, bool saturate, int round_mode, ThreadPool& pool) {
  const S* s = x.ptr<S>();
  pool.parallel_for(x.numel(), 16384, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      const auto v = load(s[i]);
      constexpr bool kFloat = std::is_floating_point_v<decltype(v)>;
      const double dv = static_cast<double>(v);
      auto low_bits = [&](uint32_t mask) -> uint8_t {  // 2- and 4-bit integers wrap, like ml_dtypes
        if constexpr (kFloat) return static_cast<uint8_t>(static_cast<uint32_t>(cvtt32(dv)) & mask);
        else return static_cast<uint8_t>(static_cast<uint64_t>(v) & mask);
      };
      uint8_t* out = y.ptr<uint8_t>() + i;
      switch (to) {
        case DType::kBF16: y.ptr<uint16_t>()[i] = float_to_bf16(static_cast<float>(v)); break;
        case DType::kF8E4M3FN: *out = static_cast<uint8_t>(encode_minifloat(dv, kE4M3FN, saturate)); break;
        case DType::kF8E4M3FNUZ: *out = static_cast<uint8_t>(encode_minifloat(dv, kE4M3FNUZ, saturate)); break;
        case DType::kF8E5M2: *out = static_cast<uint8_t>(encode_minifloat(dv, kE5M2, saturate)); break;
        case DType::kF8E5M2FNUZ: *out = static_cast<uint8_t>(encode_minifloat(dv, kE5M2FNUZ, saturate)); break;
        case DType::kF4E2M1: *out = static_cast<uint8_t>(encode_minifloat(dv, kE2M1, true)); break;
        case DType::kF8E8M0: *out = float_to_e8m0(static_cast<float>(v), saturate, round_mode); break;
        case DType::kU4: case DType::kI4: *out = low_bits(0xF); break;
        default: *out = low_bits(0x3); break;  // kU2, kI2
      }
    }
  });
}

// The value of one element of a type without a C++ arithmetic type, exactly, as a double: bfloat16,
// the float8 and float4 formats (NaN and infinity where the format has them), and the 2- and 4-bit
// integers (one per byte, low bits; the signed ones sign-extend).
double minifloat_value(uint32_t code, const MiniFloat& f) {
  const uint32_t sign = 1u << (f.ebits + f.mbits), mag = code & (sign - 1);
  const uint32_t e = mag >> f.mbits, m = mag & ((1u << f.mbits) - 1);
  const double s = (code & sign) ? -1.0 : 1.0;
  switch (f.kind) {
    case MiniFloat::kIeee:
      if (e == (1u << f.ebits) - 1) return m ? std::numeric_limits<double>::quiet_NaN() : s * HUGE_VAL;
      break;
    case MiniFloat::kFn:
      if (mag == sign - 1) return std::numeric_limits<double>::quiet_NaN();
      break;
    case MiniFloat::kFnuz:
      if (code == sign) return std::numeric_limits<double>::quiet_NaN();
      break;
    default: break;
  }
  if (e == 0) return s * std::ldexp(static_cast<double>(m), 1 - f.bias - f.mbits);
  return s * std::ldexp(static_cast<double>(m | (1u << f.mbits)), static_cast<int>(e) - f.bias - f.mbits);
}

double exotic_value(DType t, const void* data, int64_t i) {
  const uint8_t c = static_cast<const uint8_t*>(data)[i];
  switch (t) {
    case DType::kBF16: {
      const uint32_t bits = static_cast<uint32_t>(static_cast<const uint16_t*>(data)[i]) << 16;
      float f;
      std::memcpy(&f, &bits, 4);
      return f;
    }
    case DType::kF8E4M3FN: return minifloat_value(c, kE4M3FN);
    case DType::kF8E4M3FNUZ: return minifloat_value(c, kE4M3FNUZ);
    case DType::kF8E5M2: return minifloat_value(c, kE5M2);
    case DType::kF8E5M2FNUZ: return minifloat_value(c, kE5M2FNUZ);
    case DType::kF4E2M1: return minifloat_value(c & 0xF, kE2M1);
    case DType::kF8E8M0: return c == 0xFF ? std::numeric_limits<double>::quiet_NaN() : std::ldexp(1.0, c - 127);
    case DType::kU4: return c & 0xF;
    case DType::kI4: return (c & 0x8) ? static_cast<int>(c & 0xF) - 16 : (c & 0xF);
    case DType::kU2: return c & 0x3;
    case DType::kI2: return (c & 0x2) ? static_cast<int>(c & 0x3) - 4 : (c & 0x3);
    default: fail(ErrorCode::kUnsupported, "no native kernel for type ", dtype_name(t));
  }
}

bool is_integer_exotic(DType t) { return t == DType::kU4 || t == DType::kI4 || t == DType::kU2 || t == DType::kI2; }

// Cast (target from the `to` attribute) and CastLike (target: the type of the second input).
class CastKernel final : public Kernel {
 public:
  CastKernel(const KernelInit& init, bool like) {
    if (like) {
      MOPT_CHECK(init.in_dtypes.size() >= 2 && init.in_dtypes[1] != DType::kUndefined, ErrorCode::kInvalidModel,
                 "CastLike needs a target_type input of known type");
      to_ = init.in_dtypes[1];
    } else {
      to_ = static_cast<DType>(init.attrs.get_int("to"));
    }
    MOPT_ENSURE(dtype_known(static_cast<int32_t>(to_)) && to_ != DType::kC64 && to_ != DType::kC128,
                "Cast to type ", static_cast<int>(to_), " (", dtype_name(to_), ") has no native kernel");
    MOPT_CHECK(init.out_dtypes.empty() || init.out_dtypes[0] == DType::kUndefined || init.out_dtypes[0] == to_,
               ErrorCode::kInvalidModel, "Cast to ", dtype_name(to_), " but the output is ",
               dtype_name(init.out_dtypes[0]));
    saturate_ = init.attrs.get_int("saturate", 1) != 0;
    const std::string mode = init.attrs.get_string("round_mode", "up");
    round_mode_ = mode == "nearest" ? 0 : mode == "up" ? 1 : mode == "down" ? 2 : -1;
    MOPT_ENSURE(round_mode_ >= 0, "round_mode '", mode, "' is not one of up, down, nearest");
    impl = "cast";
    // float32 <-> float16: F16C rows (exact widening; narrowing to nearest even, as the loop below)
    const DType from = init.in_dtypes.empty() ? DType::kUndefined : init.in_dtypes[0];
    if (from == DType::kF32 && to_ == DType::kF16) narrow_ = init.fn<cpu::CvtF32F16Fn>("cvt_f32_f16", &impl);
    if (from == DType::kF16 && to_ == DType::kF32) widen_ = init.fn<cpu::CvtF16F32Fn>("cvt_f16_f32", &impl);
  }
  void run(KernelContext& ctx) override {
    const Tensor& x = ctx.in(0);
    Tensor& y = ctx.output(0, x.shape, to_);
    if (x.numel() == 0) return;
    if (x.dtype == to_) {
      parallel_copy(ctx.pool(), y.data, x.data, x.nbytes());
      return;
    }
    if ((narrow_ && x.dtype == DType::kF32) || (widen_ && x.dtype == DType::kF16)) {
      ctx.pool().parallel_for(x.numel(), 1 << 16, [&](int64_t b, int64_t e) {
        if (narrow_) narrow_(x.ptr<float>() + b, y.ptr<uint16_t>() + b, e - b);
        else widen_(x.ptr<uint16_t>() + b, y.ptr<float>() + b, e - b);
      });
      return;
    }
    if (is_exotic(x.dtype)) {  // decoded exactly (every such value is a double) and cast from there
      const bool ints = is_integer_exotic(x.dtype);
      Tensor wide{ints ? DType::kI64 : DType::kF64, x.shape, ctx.scratch(static_cast<size_t>(x.numel()) * 8)};
      ctx.pool().parallel_for(x.numel(), 16384, [&](int64_t b, int64_t e) {
        for (int64_t i = b; i < e; ++i) {
          const double v = exotic_value(x.dtype, x.data, i);
          if (ints) wide.ptr<int64_t>()[i] = static_cast<int64_t>(v);
          else wide.ptr<double>()[i] = v;
        }
      });
      return cast_from(wide, y, ctx.pool());
    }
    cast_from(x, y, ctx.pool());
  }

 private:
  cpu::CvtF32F16Fn narrow_ = nullptr;
  cpu::CvtF16F32Fn widen_ = nullptr;

  void cast_from(const Tensor& x, Tensor& y, ThreadPool& pool) const {
    with_numeric(x.dtype, [&](auto stag) {
      using S = typename decltype(stag)::type;
      if (is_exotic(to_)) return cast_exotic<S>(x, y, to_, saturate_, round_mode_, pool);
      with_numeric(to_, [&](auto dtag) { cast_loop<S, typename decltype(dtag)::type>(x, y, pool); });
    });
  }

  DType to_;
  bool saturate_;
  int round_mode_;
};

// ---- Range, Size -------------------------------------------------------------------------------------------

class RangeKernel final : public Kernel {
 public:
  explicit RangeKernel(const KernelInit&) { impl = "range"; }
  void run(KernelContext& ctx) override {
    const Tensor& s = ctx.in(0);
    const Tensor& l = ctx.in(1);
    const Tensor& d = ctx.in(2);
    MOPT_ENSURE(s.dtype == l.dtype && s.dtype == d.dtype, "start, limit and delta types differ: ",
                dtype_name(s.dtype), ", ", dtype_name(l.dtype), ", ", dtype_name(d.dtype));
    for (const Tensor* t : {&s, &l, &d})
      MOPT_ENSURE(t->numel() == 1, "start, limit and delta must be scalars, got shape ", shape_str(t->shape));
    with_numeric(s.dtype, [&](auto tag) {
      using T = typename decltype(tag)::type;
      if constexpr (std::is_same_v<T, Half> || std::is_same_v<T, bool>) {
        fail(ErrorCode::kUnsupported, "Range of ", dtype_name(s.dtype), " has no native kernel");
      } else {
        const T start = *s.ptr<T>(), limit = *l.ptr<T>(), delta = *d.ptr<T>();
        MOPT_ENSURE(delta != 0, "delta must not be 0");
        int64_t n = 0;
        if constexpr (std::is_floating_point_v<T>) {
          // numpy.arange, the reference, works in double whatever the type
          const double c = std::ceil((static_cast<double>(limit) - start) / static_cast<double>(delta));
          MOPT_ENSURE(!(c > 4e18), "Range of ", c, " elements is too large");
          n = c > 0 ? static_cast<int64_t>(c) : 0;
        } else {
          const __int128 span = static_cast<__int128>(limit) - start;
          if ((span > 0 && delta > 0) || (span < 0 && delta < 0)) {
            const __int128 a = span < 0 ? -span : span, b = delta < 0 ? -static_cast<__int128>(delta) : delta;
            n = static_cast<int64_t>((a + b - 1) / b);
          }
        }
        Tensor& y = ctx.output(0, {n});
        T* yp = y.ptr<T>();
        ctx.pool().parallel_for(n, 65536, [&](int64_t b, int64_t e) {
          for (int64_t i = b; i < e; ++i) {
            if constexpr (std::is_floating_point_v<T>) {
              yp[i] = static_cast<T>(static_cast<double>(start) + static_cast<double>(i) * delta);
            } else {
              yp[i] = static_cast<T>(start + static_cast<T>(i) * delta);
            }
          }
        });
      }
    });
  }
};

class SizeKernel final : public Kernel {
 public:
  explicit SizeKernel(const KernelInit&) { impl = "size"; }
  void run(KernelContext& ctx) override {
    const int64_t n = ctx.in(0).numel();
    *ctx.output(0, {}).ptr<int64_t>() = n;
  }
};

// ---- comparisons, logic, IsNaN / IsInf -----------------------------------------------------------------------

enum class Cmp { kEq, kLt, kGt, kLe, kGe, kAnd, kOr, kXor };

template <Cmp OP, class T>
bool compare(T a, T b) {
  if constexpr (OP == Cmp::kEq) return a == b;
  if constexpr (OP == Cmp::kLt) return a < b;
  if constexpr (OP == Cmp::kGt) return a > b;
  if constexpr (OP == Cmp::kLe) return a <= b;
  if constexpr (OP == Cmp::kGe) return a >= b;
  if constexpr (OP == Cmp::kAnd) return a && b;
  if constexpr (OP == Cmp::kOr) return a || b;
  if constexpr (OP == Cmp::kXor) return a != b;
}

template <Cmp OP>
class CompareKernel final : public Kernel {
 public:
  explicit CompareKernel(const KernelInit&) { impl = "compare"; }
  void run(KernelContext& ctx) override {
    const Tensor& a = ctx.in(0);
    const Tensor& b = ctx.in(1);
    MOPT_ENSURE(a.dtype == b.dtype, "operand types differ: ", dtype_name(a.dtype), " and ", dtype_name(b.dtype));
    Broadcast bc = make_broadcast(a.shape, b.shape);
    Tensor& y = ctx.output(0, bc.out);
    if (y.numel() == 0) return;
    uint8_t* yp = y.ptr<uint8_t>();
    with_numeric(a.dtype, [&](auto tag) {
      using T = typename decltype(tag)::type;
      const T* ap = a.ptr<T>();
      const T* bp = b.ptr<T>();
      for_each_run(bc, ctx.pool(), [&](int64_t oa, int64_t ob, int64_t oo, int64_t n, int mode) {
        // each broadcast mode its own loop with constant strides, so it vectorizes (GPT-2's mask:
        // an And of two [batch, 1, seq, seq] tensors took 2 ns an element)
        const T* pa = ap + oa;
        const T* pb = bp + ob;
        uint8_t* yo = yp + oo;
        if (mode == 0) {
          for (int64_t i = 0; i < n; ++i) yo[i] = compare<OP>(load(pa[i]), load(pb[i]));
        } else if (mode == 1) {
          const auto x = load(pa[0]);
          for (int64_t i = 0; i < n; ++i) yo[i] = compare<OP>(x, load(pb[i]));
        } else if (mode == 2) {
          const auto z = load(pb[0]);
          for (int64_t i = 0; i < n; ++i) yo[i] = compare<OP>(load(pa[i]), z);
        } else {
          for (int64_t i = 0; i < n; ++i) yo[i] = compare<OP>(load(pa[0]), load(pb[0]));
        }
      });
    });
  }
};

class NotKernel final : public Kernel {
 public:
  explicit NotKernel(const KernelInit&) { impl = "not"; }
  void run(KernelContext& ctx) override {
    const Tensor& x = ctx.in(0);
    MOPT_ENSURE(x.dtype == DType::kBool, "X must be bool, got ", dtype_name(x.dtype));
    Tensor& y = ctx.output(0, x.shape);
    const uint8_t* xp = x.ptr<uint8_t>();
    uint8_t* yp = y.ptr<uint8_t>();
    ctx.pool().parallel_for(x.numel(), 65536, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) yp[i] = xp[i] == 0;
    });
  }
};

// IsNaN, and IsInf with its detect_negative / detect_positive switches.
class FloatClassKernel final : public Kernel {
 public:
  FloatClassKernel(const KernelInit& init, bool nan) : nan_(nan) {
    neg_ = init.attrs.get_int("detect_negative", 1) != 0;
    pos_ = init.attrs.get_int("detect_positive", 1) != 0;
    impl = nan ? "isnan" : "isinf";
  }
  void run(KernelContext& ctx) override {
    const Tensor& x = ctx.in(0);
    Tensor& y = ctx.output(0, x.shape);
    uint8_t* yp = y.ptr<uint8_t>();
    with_numeric(x.dtype, [&](auto tag) {
      using T = typename decltype(tag)::type;
      if constexpr (!std::is_floating_point_v<T> && !std::is_same_v<T, Half>) {
        fail(ErrorCode::kUnsupported, "IsNaN/IsInf of ", dtype_name(x.dtype), " has no native kernel");
      } else {
        const T* xp = x.ptr<T>();
        ctx.pool().parallel_for(x.numel(), 65536, [&](int64_t b, int64_t e) {
          for (int64_t i = b; i < e; ++i) {
            const auto v = load(xp[i]);
            yp[i] = nan_ ? std::isnan(v) : std::isinf(v) && (v > 0 ? pos_ : neg_);
          }
        });
      }
    });
  }

 private:
  bool nan_, neg_ = true, pos_ = true;
};

// ---- CumSum -----------------------------------------------------------------------------------------------

// Running sums along one axis, accumulated in the element type in order (numpy's cumsum, which the
// reference uses). Rows along the axis are added whole, so the inner loop runs over contiguous memory.
class CumSumKernel final : public Kernel {
 public:
  explicit CumSumKernel(const KernelInit& init) {
    exclusive_ = init.attrs.get_int("exclusive", 0) != 0;
    reverse_ = init.attrs.get_int("reverse", 0) != 0;
    impl = "cumsum";
  }
  void run(KernelContext& ctx) override {
    const Tensor& x = ctx.in(0);
    MOPT_ENSURE(x.rank() >= 1, "X must have rank >= 1, got a scalar");
    const int64_t a = normalize_axis(read_scalar_int(ctx.in(1), "axis"), x.rank());
    Tensor& y = ctx.output(0, x.shape);
    if (y.numel() == 0) return;
    int64_t outer = 1, inner = 1;
    for (int64_t d = 0; d < a; ++d) outer *= x.shape[d];
    for (int64_t d = a + 1; d < x.rank(); ++d) inner *= x.shape[d];
    const int64_t len = x.shape[a];
    with_numeric(x.dtype, [&](auto tag) {
      using T = typename decltype(tag)::type;
      if constexpr (std::is_same_v<T, Half> || std::is_same_v<T, bool>) {
        fail(ErrorCode::kUnsupported, "CumSum of ", dtype_name(x.dtype), " has no native kernel");
      } else {
        const T* xp = x.ptr<T>();
        T* yp = y.ptr<T>();
        constexpr int64_t kBlock = 1024;  // inner columns per task
        const int64_t blocks = (inner + kBlock - 1) / kBlock;
        ctx.pool().parallel_for(outer * blocks, std::max<int64_t>(1, 16384 / std::max<int64_t>(1, len * kBlock)),
                                [&](int64_t b, int64_t e) {
                                  for (int64_t t = b; t < e; ++t) {
                                    const int64_t o = t / blocks, c0 = (t % blocks) * kBlock;
                                    const int64_t c1 = std::min(inner, c0 + kBlock);
                                    const T* xs = xp + o * len * inner;
                                    T* ys = yp + o * len * inner;
                                    for (int64_t s = 0; s < len; ++s) {
                                      const int64_t k = reverse_ ? len - 1 - s : s;
                                      const int64_t prev = reverse_ ? k + 1 : k - 1;  // the row before, in order
                                      T* row = ys + k * inner;
                                      if (s == 0) {
                                        for (int64_t c = c0; c < c1; ++c) row[c] = exclusive_ ? T(0) : xs[k * inner + c];
                                      } else {
                                        const T* last = ys + prev * inner;
                                        const T* add = xs + (exclusive_ ? prev : k) * inner;
                                        for (int64_t c = c0; c < c1; ++c) row[c] = last[c] + add[c];
                                      }
                                    }
                                  }
                                });
      }
    });
  }

 private:
  bool exclusive_, reverse_;
};

// ---- reductions -------------------------------------------------------------------------------------------

enum class Red { kSum, kMean, kMax, kMin };

// ReduceSum/Mean/Max/Min (opset 18: axes as an optional input), float32. Sums accumulate in double.
// Reducing nothing gives 0 (Sum), NaN (Mean), -inf (Max), +inf (Min); Max and Min propagate NaN as
// numpy does. The reduced dimensions are merged first; the two layouts transformers produce (the last
// axes, or a block of middle axes) run on contiguous rows, anything else on an index walk.
template <Red OP>
class ReduceKernel final : public Kernel {
 public:
  explicit ReduceKernel(const KernelInit& init) : spec_(init.attrs) { impl = "reduce_f32"; }
  void run(KernelContext& ctx) override {
    const Tensor& x = ctx.in(0);
    MOPT_ENSURE(x.dtype == DType::kF32, "data must be float32, got ", dtype_name(x.dtype));
    const int64_t r = x.rank();
    std::vector<bool> red;
    Shape out;
    if (!spec_.resolve(ctx, x, &red, &out)) return;
    int64_t count = 1;
    for (int64_t d = 0; d < r; ++d)
      if (red[d]) count *= x.shape[d];
    Tensor& y = ctx.output(0, out);
    const int64_t n_out = y.numel();
    float* yp = y.ptr<float>();
    if (n_out == 0) return;
    if (count == 0) {
      std::fill(yp, yp + n_out, empty_value());
      return;
    }
    // merged (size, reduced) runs, size-1 dims dropped
    std::vector<int64_t> dims;
    std::vector<bool> rflag;
    for (int64_t d = 0; d < r; ++d) {
      if (x.shape[d] == 1) continue;
      if (!dims.empty() && rflag.back() == red[d]) {
        dims.back() *= x.shape[d];
      } else {
        dims.push_back(x.shape[d]);
        rflag.push_back(red[d]);
      }
    }
    const float* xp = x.ptr<float>();
    size_t nred = 0;
    for (bool f : rflag) nred += f;
    if (nred == 0) {  // only size-1 axes reduced
      parallel_copy(ctx.pool(), yp, xp, x.nbytes());
      return;
    }
    if (nred == 1) {
      size_t k = 0;
      while (!rflag[k]) ++k;
      int64_t outer = 1, inner = 1;
      for (size_t d = 0; d < k; ++d) outer *= dims[d];
      for (size_t d = k + 1; d < dims.size(); ++d) inner *= dims[d];
      if (inner == 1) return reduce_rows(ctx, xp, yp, outer, count);
      return reduce_middle(ctx, xp, yp, outer, count, inner);
    }
    reduce_walk(ctx, xp, yp, dims, rflag, n_out, count);
  }

 private:
  static float empty_value() {
    if constexpr (OP == Red::kSum) return 0.f;
    if constexpr (OP == Red::kMean) return std::numeric_limits<float>::quiet_NaN();
    if constexpr (OP == Red::kMax) return -std::numeric_limits<float>::infinity();
    return std::numeric_limits<float>::infinity();
  }
  using Acc = std::conditional_t<OP == Red::kSum || OP == Red::kMean, double, float>;
  static Acc start() { return OP == Red::kSum || OP == Red::kMean ? Acc(0) : Acc(empty_value()); }
  static Acc step(Acc acc, float v) {
    if constexpr (OP == Red::kSum || OP == Red::kMean) {
      return acc + v;
    } else {
      if (std::isnan(acc) || std::isnan(v)) return std::numeric_limits<float>::quiet_NaN();
      if constexpr (OP == Red::kMax) return v > acc ? v : acc;
      return v < acc ? v : acc;
    }
  }
  static float finish(Acc acc, int64_t count) {
    if constexpr (OP == Red::kMean) return static_cast<float>(acc / static_cast<double>(count));
    return static_cast<float>(acc);
  }

  // y[o] = reduce x[o, 0..len)
  void reduce_rows(KernelContext& ctx, const float* xp, float* yp, int64_t outer, int64_t len) {
    ctx.pool().parallel_for(outer, std::max<int64_t>(1, 16384 / len), [&](int64_t b, int64_t e) {
      for (int64_t o = b; o < e; ++o) {
        const float* row = xp + o * len;
        Acc acc = start();
        if constexpr (OP == Red::kSum || OP == Red::kMean) {
          // four partial sums keep the adds independent
          Acc p[4] = {0, 0, 0, 0};
          int64_t i = 0;
          for (; i + 4 <= len; i += 4)
            for (int j = 0; j < 4; ++j) p[j] += row[i + j];
          for (; i < len; ++i) p[0] += row[i];
          acc = (p[0] + p[1]) + (p[2] + p[3]);
        } else {
          for (int64_t i = 0; i < len; ++i) acc = step(acc, row[i]);
        }
        yp[o] = finish(acc, len);
      }
    });
  }

  // y[o, i] = reduce x[o, 0..len, i]: whole rows of `inner` are combined, in column blocks.
  void reduce_middle(KernelContext& ctx, const float* xp, float* yp, int64_t outer, int64_t len, int64_t inner) {
    constexpr int64_t kBlock = 256;
    const int64_t blocks = (inner + kBlock - 1) / kBlock;
    ctx.pool().parallel_for(outer * blocks, std::max<int64_t>(1, 16384 / (len * kBlock)), [&](int64_t b, int64_t e) {
      Acc acc[kBlock];
      for (int64_t t = b; t < e; ++t) {
        const int64_t o = t / blocks, c0 = (t % blocks) * kBlock, w = std::min(kBlock, inner - c0);
        for (int64_t c = 0; c < w; ++c) acc[c] = start();
        const float* base = xp + o * len * inner + c0;
        for (int64_t k = 0; k < len; ++k) {
          const float* row = base + k * inner;
          for (int64_t c = 0; c < w; ++c) acc[c] = step(acc[c], row[c]);
        }
        for (int64_t c = 0; c < w; ++c) yp[o * inner + c0 + c] = finish(acc[c], len);
      }
    });
  }

  // Any other pattern: for each output element, walk the reduced dimensions.
  void reduce_walk(KernelContext& ctx, const float* xp, float* yp, const std::vector<int64_t>& dims,
                   const std::vector<bool>& rflag, int64_t n_out, int64_t count) {
    const std::vector<int64_t> cs = contiguous_strides(dims);
    std::vector<int64_t> kd, ks, rd, rs;  // kept / reduced dims and their strides
    for (size_t d = 0; d < dims.size(); ++d) {
      (rflag[d] ? rd : kd).push_back(dims[d]);
      (rflag[d] ? rs : ks).push_back(cs[d]);
    }
    ctx.pool().parallel_for(n_out, std::max<int64_t>(1, 16384 / count), [&](int64_t b, int64_t e) {
      std::vector<int64_t> ridx(rd.size());
      for (int64_t o = b; o < e; ++o) {
        int64_t base = 0, rem = o;
        for (int64_t d = static_cast<int64_t>(kd.size()) - 1; d >= 0; --d) {
          base += (rem % kd[d]) * ks[d];
          rem /= kd[d];
        }
        std::fill(ridx.begin(), ridx.end(), 0);
        Acc acc = start();
        int64_t off = base;
        for (int64_t i = 0; i < count; ++i) {
          acc = step(acc, xp[off]);
          for (int64_t d = static_cast<int64_t>(rd.size()) - 1; d >= 0; --d) {
            off += rs[d];
            if (++ridx[d] < rd[d]) break;
            off -= rd[d] * rs[d];
            ridx[d] = 0;
          }
        }
        yp[o] = finish(acc, count);
      }
    });
  }

  ReduceSpec spec_;
};

// ---- Sign, Log (float32) ------------------------------------------------------------------------------------
// Plain loops rather than rows of the ISA unary tables: neither is hot in the models mopt targets.

class SignLogKernel final : public Kernel {
 public:
  SignLogKernel(const KernelInit&, bool log) : log_(log) { impl = log ? "log_f32" : "sign_f32"; }
  void run(KernelContext& ctx) override {
    const Tensor& x = ctx.in(0);
    MOPT_ENSURE(x.dtype == DType::kF32, "X must be float32, got ", dtype_name(x.dtype));
    Tensor& y = ctx.output(0, x.shape);
    const float* xp = x.ptr<float>();
    float* yp = y.ptr<float>();
    ctx.pool().parallel_for(x.numel(), log_ ? 2048 : 16384, [&](int64_t b, int64_t e) {  // (log: ~10 ns each)
      if (log_) {
        for (int64_t i = b; i < e; ++i) yp[i] = std::log(xp[i]);
      } else {  // zeros (either sign) and NaN map to themselves
        for (int64_t i = b; i < e; ++i) yp[i] = xp[i] > 0.f ? 1.f : xp[i] < 0.f ? -1.f : xp[i];
      }
    });
  }

 private:
  bool log_;
};

template <class K>
std::unique_ptr<Kernel> make(const KernelInit& init) {
  return std::make_unique<K>(init);
}
std::unique_ptr<Kernel> make_cast(const KernelInit& i) { return std::make_unique<CastKernel>(i, false); }
std::unique_ptr<Kernel> make_cast_like(const KernelInit& i) { return std::make_unique<CastKernel>(i, true); }
std::unique_ptr<Kernel> make_isnan(const KernelInit& i) { return std::make_unique<FloatClassKernel>(i, true); }
std::unique_ptr<Kernel> make_isinf(const KernelInit& i) { return std::make_unique<FloatClassKernel>(i, false); }
std::unique_ptr<Kernel> make_sign(const KernelInit& i) { return std::make_unique<SignLogKernel>(i, false); }
std::unique_ptr<Kernel> make_log(const KernelInit& i) { return std::make_unique<SignLogKernel>(i, true); }

}  // namespace

void register_data_ops(OpRegistry& r) {
  using D = DType;
  const std::vector<DType> any;
  const std::vector<DType> ints = {D::kI8, D::kI16, D::kI32, D::kI64, D::kU8, D::kU16, D::kU32, D::kU64};
  std::vector<DType> num = {D::kF32, D::kF64, D::kF16};
  num.insert(num.end(), ints.begin(), ints.end());
  std::vector<DType> num_bool = num;
  num_bool.push_back(D::kBool);
  const std::vector<DType> boolean = {D::kBool};
  const std::vector<DType> floats = {D::kF32, D::kF64, D::kF16};
  const std::vector<DType> f32 = {D::kF32};
  r.add({"", "Slice", any, &make<SliceKernel>});
  r.add({"", "Gather", any, &make<GatherKernel>});
  r.add({"", "GatherND", any, &make<GatherNDKernel>});
  r.add({"", "Expand", any, &make<ExpandKernel>});
  r.add({"", "Tile", any, &make<TileKernel>});
  r.add({"", "Where", boolean, &make<WhereKernel>});
  // input types only: string sources stay on the fallback
  std::vector<DType> castable = num_bool;
  castable.insert(castable.end(), {D::kBF16, D::kF8E4M3FN, D::kF8E4M3FNUZ, D::kF8E5M2, D::kF8E5M2FNUZ, D::kF8E8M0,
                                   D::kF4E2M1, D::kU4, D::kI4, D::kU2, D::kI2});
  r.add({"", "Cast", castable, &make_cast});
  r.add({"", "CastLike", castable, &make_cast_like});
  r.add({"", "Range", {D::kF32, D::kF64, D::kI16, D::kI32, D::kI64}, &make<RangeKernel>});
  r.add({"", "Size", any, &make<SizeKernel>});
  r.add({"", "Equal", num_bool, &make<CompareKernel<Cmp::kEq>>});
  r.add({"", "Less", num, &make<CompareKernel<Cmp::kLt>>});
  r.add({"", "Greater", num, &make<CompareKernel<Cmp::kGt>>});
  r.add({"", "LessOrEqual", num, &make<CompareKernel<Cmp::kLe>>});
  r.add({"", "GreaterOrEqual", num, &make<CompareKernel<Cmp::kGe>>});
  r.add({"", "And", boolean, &make<CompareKernel<Cmp::kAnd>>});
  r.add({"", "Or", boolean, &make<CompareKernel<Cmp::kOr>>});
  r.add({"", "Xor", boolean, &make<CompareKernel<Cmp::kXor>>});
  r.add({"", "Not", boolean, &make<NotKernel>});
  r.add({"", "IsNaN", floats, &make_isnan});
  r.add({"", "IsInf", floats, &make_isinf});
  r.add({"", "CumSum", {D::kF32, D::kF64, D::kI32, D::kI64, D::kU32, D::kU64}, &make<CumSumKernel>});
  // the other types: reduce_ops.cc
  std::vector<DType> red_num = num, red_floats = floats, red_num_bool = num_bool;  // + bfloat16
  for (auto* v : {&red_num, &red_floats, &red_num_bool}) v->push_back(D::kBF16);
  r.add({"", "ReduceSum", red_num, &route_by_dtype<&make<ReduceKernel<Red::kSum>>, &make_typed_reduce, D::kF32>});
  r.add({"", "ReduceMean", red_floats, &route_by_dtype<&make<ReduceKernel<Red::kMean>>, &make_typed_reduce, D::kF32>});
  r.add({"", "ReduceMax", red_num_bool, &route_by_dtype<&make<ReduceKernel<Red::kMax>>, &make_typed_reduce, D::kF32>});
  r.add({"", "ReduceMin", red_num_bool, &route_by_dtype<&make<ReduceKernel<Red::kMin>>, &make_typed_reduce, D::kF32>});
  r.add({"", "Sign", floats, &route_by_dtype<&make_sign, &make_typed_unary, D::kF32>});
  r.add({"", "Log", floats, &route_by_dtype<&make_log, &make_typed_unary, D::kF32>});
}

}  // namespace mopt
