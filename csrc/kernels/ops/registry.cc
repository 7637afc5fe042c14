// The op kernel registry: one explicit call per family, so the full list is read in one place.
#include "kernels/ops/common.h"

namespace mopt {

void OpRegistry::add(OpDef def) { defs_.push_back(std::move(def)); }

const OpDef* OpRegistry::find(const std::string& domain, const std::string& op) const {
  const std::string d = domain == "ai.onnx" ? "" : domain;
  for (const OpDef& def : defs_)
    if (def.op == op && def.domain == d) return &def;
  return nullptr;
}

const OpRegistry& op_registry() {
  static const OpRegistry reg = [] {
    OpRegistry r;
    register_elementwise_ops(r);
    register_gemm_ops(r);
    register_conv_ops(r);
    register_pool_ops(r);
    register_norm_ops(r);
    register_shape_ops(r);
    register_data_ops(r);
    register_fused_attention_ops(r);
    register_math_ops(r);
    register_reduce_ops(r);
    register_index_ops(r);
    register_loss_ops(r);
    register_attention_ops(r);
    register_misc_ops(r);
    register_resize_ops(r);
    register_seq_ops(r);
    register_grid_ops(r);
    register_convt_ops(r);
    register_detect_ops(r);
    register_quant_ops(r);
    register_einsum_ops(r);
    register_dft_ops(r);
    register_rnn_ops(r);
    register_control_flow_ops(r);
    register_group_norm_ops(r);
    register_roi_ops(r);
    register_pool_nd_ops(r);
    register_qlinear_ops(r);
    register_linalg_ops(r);
    register_image_ops(r);
    register_deform_ops(r);
    return r;
  }();
  return reg;
}

bool broadcast_shapes(const Shape& a, const Shape& b, Shape* out) {
  size_t r = std::max(a.size(), b.size());
  out->assign(r, 1);
  for (size_t i = 0; i < r; ++i) {
    int64_t da = i < r - a.size() ? 1 : a[i - (r - a.size())];
    int64_t db = i < r - b.size() ? 1 : b[i - (r - b.size())];
    if (da == db || db == 1) (*out)[i] = da;
    else if (da == 1) (*out)[i] = db;
    else return false;
  }
  return true;
}

Shape broadcast_inputs(const KernelContext& ctx) {
  const int n = ctx.num_inputs();
  MOPT_ENSURE(n >= 1, "needs at least one input");
  Shape out = ctx.in(0).shape;
  for (int i = 1; i < n; ++i) {
    Shape s;
    if (!broadcast_shapes(out, ctx.in(i).shape, &s))
      fail(ErrorCode::kRuntime, "input ", i, " of shape ", shape_str(ctx.in(i).shape), " cannot be broadcast to ",
           shape_str(out));
    out = s;
  }
  return out;
}

MatMulShape matmul_shape(const Shape& a, const Shape& b) {
  MOPT_ENSURE(!a.empty() && !b.empty(), "MatMul operands must have rank >= 1, got ", shape_str(a), " and ", shape_str(b));
  Shape as = a, bs = b;
  if (a.size() == 1) as.insert(as.begin(), 1);
  if (b.size() == 1) bs.push_back(1);
  MatMulShape r;
  r.M = as[as.size() - 2];
  r.K = as.back();
  r.N = bs.back();
  MOPT_ENSURE(bs[bs.size() - 2] == r.K, "inner dimensions differ: ", shape_str(a), " x ", shape_str(b));
  r.a_batch.assign(as.begin(), as.end() - 2);
  r.b_batch.assign(bs.begin(), bs.end() - 2);
  MOPT_ENSURE(broadcast_shapes(r.a_batch, r.b_batch, &r.batch), "batch dimensions of ", shape_str(a), " and ",
              shape_str(b), " cannot be broadcast");
  r.out = r.batch;
  if (a.size() > 1) r.out.push_back(r.M);
  if (b.size() > 1) r.out.push_back(r.N);
  return r;
}

std::vector<int64_t> read_ints(const Tensor& t, const char* what) {
  MOPT_ENSURE(t.dtype == DType::kI64 || t.dtype == DType::kI32, what, " must be int32 or int64, got ",
              dtype_name(t.dtype));
  MOPT_ENSURE(t.rank() <= 1, what, " must be a scalar or 1-D, got shape ", shape_str(t.shape));
  std::vector<int64_t> v(static_cast<size_t>(t.numel()));
  for (int64_t i = 0; i < t.numel(); ++i) v[i] = t.dtype == DType::kI64 ? t.ptr<int64_t>()[i] : t.ptr<int32_t>()[i];
  return v;
}

ReduceSpec::ReduceSpec(const Attrs& attrs)
    : keepdims(attrs.get_int("keepdims", 1) != 0),
      noop(attrs.get_int("noop_with_empty_axes", 0) != 0),
      attr_axes(attrs.get_ints("axes", {})) {}

bool ReduceSpec::resolve(KernelContext& ctx, const Tensor& x, std::vector<bool>* red, Shape* out) const {
  std::vector<int64_t> axes = attr_axes;
  if (const Tensor* a = ctx.input(1)) axes = read_ints(*a, "axes");
  if (axes.empty() && noop) {
    Tensor& y = ctx.output(0, x.shape);
    parallel_copy(ctx.pool(), y.data, x.data, x.nbytes());
    return false;
  }
  *red = reduced_axes(axes, x.rank());
  out->clear();
  for (int64_t d = 0; d < x.rank(); ++d) {
    if (!(*red)[d]) out->push_back(x.shape[d]);
    else if (keepdims) out->push_back(1);
  }
  return true;
}

std::vector<bool> reduced_axes(const std::vector<int64_t>& axes, int64_t rank) {
  std::vector<bool> red(rank, axes.empty());
  for (int64_t ax : axes) {
    const int64_t a = normalize_axis(ax, rank);
    MOPT_ENSURE(!red[a], "axis ", ax, " is repeated in axes");
    red[a] = true;
  }
  return red;
}

Shape broadcast_or_fail(const Shape& a, const Shape& b) {
  Shape out;
  if (!broadcast_shapes(a, b, &out))
    fail(ErrorCode::kRuntime, "shapes ", shape_str(a), " and ", shape_str(b), " cannot be broadcast");
  return out;
}

Broadcast make_broadcast(const Shape& a, const Shape& b) {
  Broadcast bc;
  bc.out = broadcast_or_fail(a, b);
  const size_t r = bc.out.size();
  std::vector<int64_t> pa(r, 1), pb(r, 1);
  for (size_t i = 0; i < a.size(); ++i) pa[r - a.size() + i] = a[i];
  for (size_t i = 0; i < b.size(); ++i) pb[r - b.size() + i] = b[i];
  // merge dims (skipping size-1 output dims) with the same broadcast pattern
  std::vector<int64_t> dims;
  std::vector<int> pat;  // bit0: a broadcasts, bit1: b broadcasts
  for (size_t i = 0; i < r; ++i) {
    if (bc.out[i] == 1) continue;
    int p = (pa[i] == 1 ? 1 : 0) | (pb[i] == 1 ? 2 : 0);
    if (!dims.empty() && pat.back() == p) dims.back() *= bc.out[i];
    else { dims.push_back(bc.out[i]); pat.push_back(p); }
  }
  if (shape_numel(bc.out) == 0) return bc;  // nothing to index
  if (dims.empty()) { dims.push_back(1); pat.push_back(0); }
  bc.dims = dims;
  bc.sa.assign(dims.size(), 0);
  bc.sb.assign(dims.size(), 0);
  int64_t sa = 1, sb = 1;
  for (int64_t d = static_cast<int64_t>(dims.size()) - 1; d >= 0; --d) {
    if (!(pat[d] & 1)) { bc.sa[d] = sa; sa *= dims[d]; }
    if (!(pat[d] & 2)) { bc.sb[d] = sb; sb *= dims[d]; }
  }
  return bc;
}

bool unary_from_name(const std::string& op, cpu::UnaryParams* p) {
  using U = cpu::UnaryOp;
  static const std::pair<const char*, U> names[] = {
      {"Identity", U::kIdentity}, {"Relu", U::kRelu}, {"LeakyRelu", U::kLeakyRelu}, {"Clip", U::kClip},
      {"Sigmoid", U::kSigmoid}, {"Tanh", U::kTanh}, {"Gelu", U::kGelu}, {"GeluTanh", U::kGeluTanh},
      {"HardSigmoid", U::kHardSigmoid}, {"HardSwish", U::kHardSwish}, {"Elu", U::kElu}, {"Selu", U::kSelu},
      {"Softplus", U::kSoftplus}, {"Exp", U::kExp}, {"Erf", U::kErf}, {"Neg", U::kNeg}, {"Abs", U::kAbs},
      {"Sqrt", U::kSqrt}, {"Reciprocal", U::kReciprocal}, {"Floor", U::kFloor}, {"Ceil", U::kCeil},
      {"Silu", U::kSilu}};
  for (const auto& n : names)
    if (op == n.first) {
      p->op = n.second;
      return true;
    }
  return false;
}

cpu::UnaryParams activation_from_attrs(const Attrs& attrs) {
  cpu::UnaryParams p;
  std::string act = attrs.get_string("activation", "");
  if (act.empty()) return p;
  if (!unary_from_name(act, &p)) fail(ErrorCode::kUnsupported, "fused activation '", act, "' is not supported");
  p.alpha = static_cast<float>(attrs.get_float("activation_alpha", 0.0));
  p.beta = static_cast<float>(attrs.get_float("activation_beta", 0.0));
  return p;
}

double scalar_as_double(const Tensor& t, int64_t i) {
  switch (t.dtype) {
    case DType::kF32: return t.ptr<float>()[i];
    case DType::kF64: return t.ptr<double>()[i];
    case DType::kI64: return static_cast<double>(t.ptr<int64_t>()[i]);
    case DType::kI32: return t.ptr<int32_t>()[i];
    case DType::kI16: return t.ptr<int16_t>()[i];
    case DType::kI8: return t.ptr<int8_t>()[i];
    case DType::kU8: return t.ptr<uint8_t>()[i];
    case DType::kU16: return t.ptr<uint16_t>()[i];
    case DType::kU32: return t.ptr<uint32_t>()[i];
    case DType::kU64: return static_cast<double>(t.ptr<uint64_t>()[i]);
    case DType::kBool: return t.ptr<uint8_t>()[i] ? 1.0 : 0.0;
    default: fail(ErrorCode::kUnsupported, "cannot read a scalar of type ", dtype_name(t.dtype));
  }
}

void parallel_copy(ThreadPool& pool, void* dst, const void* src, size_t nbytes) {
  if (nbytes == 0 || dst == src) return;
  constexpr size_t kChunk = 1 << 20;
  if (nbytes < 2 * kChunk) {
    std::memcpy(dst, src, nbytes);
    return;
  }
  int64_t chunks = static_cast<int64_t>((nbytes + kChunk - 1) / kChunk);
  pool.parallel_for(chunks, 1, [&](int64_t b, int64_t e) {
    size_t lo = static_cast<size_t>(b) * kChunk, hi = std::min(nbytes, static_cast<size_t>(e) * kChunk);
    std::memcpy(static_cast<char*>(dst) + lo, static_cast<const char*>(src) + lo, hi - lo);
  });
}

}  // namespace mopt
