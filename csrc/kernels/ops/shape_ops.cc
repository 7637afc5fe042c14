// Data movement for any dtype: views (Reshape, Flatten, Squeeze, Unsqueeze), copies (Concat,
// Transpose) and shape producers (Shape, ConstantOfShape).
#include "kernels/ops/common.h"

namespace mopt {
namespace {

std::vector<int64_t> read_int_tensor(const Tensor& t, const char* what) {
  MOPT_ENSURE(t.dtype == DType::kI64 || t.dtype == DType::kI32, what, " must be int64, got ", dtype_name(t.dtype));
  MOPT_ENSURE(t.rank() <= 1, what, " must be 1-D, got ", shape_str(t.shape));
  std::vector<int64_t> v(static_cast<size_t>(t.numel()));
  for (int64_t i = 0; i < t.numel(); ++i)
    v[i] = t.dtype == DType::kI64 ? t.ptr<int64_t>()[i] : t.ptr<int32_t>()[i];
  return v;
}

class ReshapeKernel final : public Kernel {
 public:
  explicit ReshapeKernel(const KernelInit& init) : allowzero_(init.attrs.get_int("allowzero", 0) != 0) { impl = "view"; }
  void run(KernelContext& ctx) override {
    const Tensor& x = ctx.in(0);
    std::vector<int64_t> spec = read_int_tensor(ctx.in(1), "shape");
    Shape out(spec.size());
    int64_t known = 1, infer = -1;
    for (size_t i = 0; i < spec.size(); ++i) {
      int64_t d = spec[i];
      if (d == 0 && !allowzero_) {
        MOPT_ENSURE(i < x.shape.size(), "shape ", shape_str(spec), " copies dimension ", i, " of ", shape_str(x.shape));
        d = x.shape[i];
      }
      if (d == -1) {
        MOPT_ENSURE(infer < 0, "shape ", shape_str(spec), " has more than one -1");
        infer = static_cast<int64_t>(i);
        continue;
      }
      MOPT_ENSURE(d >= 0, "shape ", shape_str(spec), " has a negative dimension");
      out[i] = d;
      known *= d;
    }
    if (infer >= 0) {
      MOPT_ENSURE(known != 0 && x.numel() % known == 0, "cannot reshape ", shape_str(x.shape), " to ",
                  shape_str(spec));
      out[infer] = x.numel() / known;
    }
    MOPT_ENSURE(shape_numel(out) == x.numel(), "cannot reshape ", shape_str(x.shape), " (", x.numel(),
                " elements) to ", shape_str(out));
    ctx.output_alias(0, x, out);
  }

 private:
  bool allowzero_;
};

class FlattenKernel final : public Kernel {
 public:
  explicit FlattenKernel(const KernelInit& init) : axis_(init.attrs.get_int("axis", 1)) { impl = "view"; }
  void run(KernelContext& ctx) override {
    const Tensor& x = ctx.in(0);
    const int64_t r = x.rank();
    int64_t a = axis_ < 0 ? axis_ + r : axis_;
    MOPT_ENSURE(a >= 0 && a <= r, "axis ", axis_, " is out of range for rank ", r);
    int64_t outer = 1;
    for (int64_t d = 0; d < a; ++d) outer *= x.shape[d];
    int64_t inner = 1;
    for (int64_t d = a; d < r; ++d) inner *= x.shape[d];
    ctx.output_alias(0, x, {outer, inner});
  }

 private:
  int64_t axis_;
};

// Squeeze and Unsqueeze: axes from input 1 (opset >= 13) or the "axes" attribute.
class SqueezeKernel final : public Kernel {
 public:
  SqueezeKernel(const KernelInit& init, bool unsqueeze) : unsqueeze_(unsqueeze) {
    attr_axes_ = init.attrs.get_ints("axes", {});
    impl = "view";
  }
  void run(KernelContext& ctx) override {
    const Tensor& x = ctx.in(0);
    std::vector<int64_t> axes = attr_axes_;
    if (const Tensor* a = ctx.input(1)) axes = read_int_tensor(*a, "axes");
    Shape out;
    if (unsqueeze_) {
      const int64_t r = x.rank() + static_cast<int64_t>(axes.size());
      std::vector<bool> is_new(r, false);
      for (int64_t ax : axes) {
        int64_t a = normalize_axis(ax, r);
        MOPT_ENSURE(!is_new[a], "axis ", ax, " is repeated");
        is_new[a] = true;
      }
      size_t j = 0;
      for (int64_t i = 0; i < r; ++i) out.push_back(is_new[i] ? 1 : x.shape[j++]);
    } else {
      const int64_t r = x.rank();
      std::vector<bool> drop(r, false);
      if (axes.empty()) {
        for (int64_t i = 0; i < r; ++i) drop[i] = x.shape[i] == 1;
      } else {
        for (int64_t ax : axes) {
          int64_t a = normalize_axis(ax, r);
          MOPT_ENSURE(x.shape[a] == 1, "cannot squeeze axis ", ax, " of size ", x.shape[a], " in ", shape_str(x.shape));
          drop[a] = true;
        }
      }
      for (int64_t i = 0; i < r; ++i)
        if (!drop[i]) out.push_back(x.shape[i]);
    }
    ctx.output_alias(0, x, out);
  }

 private:
  bool unsqueeze_;
  std::vector<int64_t> attr_axes_;
};

class ConcatKernel final : public Kernel {
 public:
  explicit ConcatKernel(const KernelInit& init) : axis_(init.attrs.get_int("axis")) { impl = "concat"; }
  void run(KernelContext& ctx) override {
    const int n = ctx.num_inputs();
    MOPT_ENSURE(n >= 1, "needs at least one input");
    const Tensor& x0 = ctx.in(0);
    const int64_t r = x0.rank();
    MOPT_ENSURE(r >= 1, "cannot concatenate scalars");
    const int64_t a = normalize_axis(axis_, r);
    Shape out = x0.shape;
    out[a] = 0;
    for (int i = 0; i < n; ++i) {
      const Tensor& t = ctx.in(i);
      MOPT_ENSURE(t.rank() == r && t.dtype == x0.dtype, "input ", i, " ", shape_str(t.shape), " does not match ",
                  shape_str(x0.shape));
      for (int64_t d = 0; d < r; ++d)
        MOPT_ENSURE(d == a || t.shape[d] == x0.shape[d], "input ", i, " ", shape_str(t.shape),
                    " differs from input 0 ", shape_str(x0.shape), " outside axis ", a);
      out[a] += t.shape[a];
    }
    Tensor& y = ctx.output(0, out);
    const size_t es = dtype_size(x0.dtype);
    int64_t outer = 1, inner = 1;
    for (int64_t d = 0; d < a; ++d) outer *= out[d];
    for (int64_t d = a + 1; d < r; ++d) inner *= out[d];
    const size_t out_row = static_cast<size_t>(out[a] * inner) * es;
    size_t offset = 0;
    for (int i = 0; i < n; ++i) {
      const Tensor& t = ctx.in(i);
      const size_t row = static_cast<size_t>(t.shape[a] * inner) * es;
      const char* src = static_cast<const char*>(t.data);
      char* dst = static_cast<char*>(y.data) + offset;
      if (outer == 1 && row > 0) {
        // (the session plans inputs inside the output where it can: then they are already there;
        // a plan made for larger inputs leaves them shifted, the copies all going down in order)
        if (src != dst) std::memmove(dst, src, row);
      } else if (row > 0) {
        ctx.pool().parallel_for(outer, std::max<int64_t>(1, 65536 / static_cast<int64_t>(row)), [&](int64_t b, int64_t e) {
          for (int64_t o = b; o < e; ++o) std::memcpy(dst + o * out_row, src + o * row, row);
        });
      }
      offset += row;
    }
  }

 private:
  int64_t axis_;
};

class TransposeKernel final : public Kernel {
 public:
  explicit TransposeKernel(const KernelInit& init) : perm_(init.attrs.get_ints("perm", {})) { impl = "transpose"; }
  void run(KernelContext& ctx) override {
    const Tensor& x = ctx.in(0);
    const int64_t r = x.rank();
    std::vector<int64_t> perm = perm_;
    if (perm.empty())
      for (int64_t i = r - 1; i >= 0; --i) perm.push_back(i);
    MOPT_ENSURE(static_cast<int64_t>(perm.size()) == r, "perm has ", perm.size(), " entries for rank ", r);
    std::vector<bool> seen(r, false);
    Shape out(r);
    for (int64_t i = 0; i < r; ++i) {
      int64_t p = perm[i];
      MOPT_ENSURE(p >= 0 && p < r && !seen[p], "perm ", shape_str(perm), " is not a permutation");
      seen[p] = true;
      out[i] = x.shape[p];
    }
    Tensor& y = ctx.output(0, out);
    if (y.numel() == 0) return;
    // Merge output dims that stay adjacent and in order in the input.
    std::vector<int64_t> in_strides = contiguous_strides(x.shape);
    std::vector<int64_t> dims, strides;  // output dims (outermost first) with their input strides
    for (int64_t i = 0; i < r; ++i) {
      if (out[i] == 1) continue;
      int64_t s = in_strides[perm[i]];
      if (!dims.empty() && strides.back() == s * out[i]) {
        dims.back() *= out[i];
        strides.back() = s;
      } else {
        dims.push_back(out[i]);
        strides.push_back(s);
      }
    }
    const size_t es = dtype_size(x.dtype);
    if (dims.empty() || (dims.size() == 1 && strides[0] == 1)) {
      parallel_copy(ctx.pool(), y.data, x.data, y.nbytes());
      return;
    }
    const size_t nd = dims.size();
    const int64_t inner = dims[nd - 1], istride = strides[nd - 1];
    int64_t outer = 1;
    for (size_t d = 0; d + 1 < nd; ++d) outer *= dims[d];
    const char* src = static_cast<const char*>(x.data);
    char* dst = static_cast<char*>(y.data);
    ctx.pool().parallel_for(outer, std::max<int64_t>(1, 16384 / inner), [&](int64_t b, int64_t e) {
      std::vector<int64_t> idx(nd, 0);
      int64_t rem = b;
      for (int64_t d = static_cast<int64_t>(nd) - 2; d >= 0; --d) {
        idx[d] = rem % dims[d];
        rem /= dims[d];
      }
      // one output row from input offset `off`: a contiguous run when the innermost axis stays
      // innermost, else strided elements of es bytes
      auto row = [&](auto tag, int64_t off, char* drow) {
        using T = decltype(tag);
        const T* s = reinterpret_cast<const T*>(src) + off;
        T* dd = reinterpret_cast<T*>(drow);
        for (int64_t i = 0; i < inner; ++i) dd[i] = s[i * istride];
      };
      for (int64_t o = b; o < e; ++o) {
        int64_t off = 0;
        for (size_t d = 0; d + 1 < nd; ++d) off += idx[d] * strides[d];
        char* drow = dst + static_cast<size_t>(o * inner) * es;
        if (istride == 1) {
          std::memcpy(drow, src + static_cast<size_t>(off) * es, static_cast<size_t>(inner) * es);
        } else if (es == 1) {
          row(uint8_t{}, off, drow);
        } else if (es == 2) {  // float16, bfloat16, int16
          row(uint16_t{}, off, drow);
        } else if (es == 4) {
          row(uint32_t{}, off, drow);
        } else if (es == 8) {
          row(uint64_t{}, off, drow);
        } else {
          for (int64_t i = 0; i < inner; ++i)
            std::memcpy(drow + static_cast<size_t>(i) * es, src + static_cast<size_t>(off + i * istride) * es, es);
        }
        for (int64_t d = static_cast<int64_t>(nd) - 2; d >= 0; --d) {
          if (++idx[d] < dims[d]) break;
          idx[d] = 0;
        }
      }
    });
  }

 private:
  std::vector<int64_t> perm_;
};

// Decodes a tensor attribute written by the lowering: {"dtype": code, "shape": [...], "hex": "..."}.
std::vector<uint8_t> tensor_attr_bytes(const Json& j, DType* dtype) {
  *dtype = static_cast<DType>(j.at("dtype").as_int("tensor dtype"));
  const std::string& hex = j.at("hex").as_string("tensor bytes");
  MOPT_CHECK(hex.size() % 2 == 0, ErrorCode::kInvalidModel, "tensor attribute bytes are malformed");
  std::vector<uint8_t> out(hex.size() / 2);
  auto nib = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    fail(ErrorCode::kInvalidModel, "tensor attribute bytes are malformed");
  };
  for (size_t i = 0; i < out.size(); ++i) out[i] = static_cast<uint8_t>(nib(hex[2 * i]) * 16 + nib(hex[2 * i + 1]));
  return out;
}

class ConstantOfShapeKernel final : public Kernel {
 public:
  explicit ConstantOfShapeKernel(const KernelInit& init) {
    value_.assign(4, 0);  // default: float32 zero
    if (const Json* v = init.attrs.get("value")) {
      DType dt;
      value_ = tensor_attr_bytes(*v, &dt);
      MOPT_ENSURE(value_.size() == dtype_size(dt), "value must hold exactly one element");
    }
    impl = "fill";
  }
  void run(KernelContext& ctx) override {
    std::vector<int64_t> dims = read_int_tensor(ctx.in(0), "shape");
    for (int64_t d : dims) MOPT_ENSURE(d >= 0, "shape ", shape_str(dims), " has a negative dimension");
    Tensor& y = ctx.output(0, dims);
    const size_t es = dtype_size(y.dtype);
    MOPT_CHECK(es == value_.size(), ErrorCode::kInternal, "ConstantOfShape value size mismatch");
    char* p = static_cast<char*>(y.data);
    const int64_t n = y.numel();
    bool zero = true;
    for (uint8_t b : value_) zero = zero && b == 0;
    if (zero) {
      std::memset(p, 0, y.nbytes());
      return;
    }
    ctx.pool().parallel_for(n, 65536, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) std::memcpy(p + static_cast<size_t>(i) * es, value_.data(), es);
    });
  }

 private:
  std::vector<uint8_t> value_;
};

class ShapeKernel final : public Kernel {
 public:
  explicit ShapeKernel(const KernelInit& init) {
    start_ = init.attrs.get_int("start", 0);
    end_ = init.attrs.get_int("end", INT64_MAX);
    impl = "shape";
  }
  void run(KernelContext& ctx) override {
    const Tensor& x = ctx.in(0);
    const int64_t r = x.rank();
    auto clampi = [&](int64_t v) { return std::min(r, std::max<int64_t>(0, v < 0 ? v + r : v)); };
    const int64_t s = clampi(start_), e = clampi(end_);
    const int64_t n = std::max<int64_t>(0, e - s);
    Tensor& y = ctx.output(0, {n});
    for (int64_t i = 0; i < n; ++i) y.ptr<int64_t>()[i] = x.shape[s + i];
  }

 private:
  int64_t start_, end_;
};

std::unique_ptr<Kernel> make_reshape(const KernelInit& i) { return std::make_unique<ReshapeKernel>(i); }
std::unique_ptr<Kernel> make_flatten(const KernelInit& i) { return std::make_unique<FlattenKernel>(i); }
std::unique_ptr<Kernel> make_squeeze(const KernelInit& i) { return std::make_unique<SqueezeKernel>(i, false); }
std::unique_ptr<Kernel> make_unsqueeze(const KernelInit& i) { return std::make_unique<SqueezeKernel>(i, true); }
std::unique_ptr<Kernel> make_concat(const KernelInit& i) { return std::make_unique<ConcatKernel>(i); }
std::unique_ptr<Kernel> make_transpose(const KernelInit& i) { return std::make_unique<TransposeKernel>(i); }
std::unique_ptr<Kernel> make_cos(const KernelInit& i) { return std::make_unique<ConstantOfShapeKernel>(i); }
std::unique_ptr<Kernel> make_shape(const KernelInit& i) { return std::make_unique<ShapeKernel>(i); }

}  // namespace

void register_shape_ops(OpRegistry& r) {
  const std::vector<DType> any;
  r.add({"", "Reshape", any, &make_reshape});
  r.add({"", "Flatten", any, &make_flatten});
  r.add({"", "Squeeze", any, &make_squeeze});
  r.add({"", "Unsqueeze", any, &make_unsqueeze});
  r.add({"", "Concat", any, &make_concat});
  r.add({"", "Transpose", any, &make_transpose});
  r.add({"", "ConstantOfShape", {DType::kI64}, &make_cos});
  r.add({"", "Shape", any, &make_shape});
}

}  // namespace mopt
