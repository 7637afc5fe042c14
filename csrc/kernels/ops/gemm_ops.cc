// Gemm, MatMul and their fused forms (com.mopt.FusedGemm / FusedMatMul: bias and activation in
// the GEMM's store). Constant B operands are packed at compile time (prepack) into the panels of
// the session's micro-kernel; a blob packed for another ISA is unpacked and repacked at load.
// A B that the compiler found sparse enough (attribute hint `_block_sparse`, set at lowering) is
// packed as block-CSR instead ("bsr_b:nb=8", the same on every ISA) and runs the block-sparse
// kernel, with the same epilogue (alpha, bias or C, residual, activation).
#include <limits>

#include "kernels/gemm.h"
#include "kernels/ops/common.h"
#include "kernels/ops/typed.h"

namespace mopt {
namespace {

// A constant B operand [K x N] in this session's panel format.
struct PackedB {
  const float* data = nullptr;
  std::vector<float> owned;
  int64_t K = 0, N = 0;
};

// A constant B [K x N] in block-CSR over 1 x kBsrCols blocks (see cpu::BsrGemmArgs). Stored as
// int32 ptr[nb + 1], int32 kidx[nnz], float val[nnz * kBsrCols], where nb = ceil(N / kBsrCols).
struct SparseB {
  const int32_t* ptr = nullptr;
  const int32_t* kidx = nullptr;
  const float* val = nullptr;
  int64_t K = 0, N = 0, nb = 0, nnz = 0;
};

constexpr int kBsr = cpu::kBsrCols;

std::string bsr_format() { return pack_format("bsr_b", "nb", kBsr); }
bool is_bsr(const ConstInput& c) { return c.format.rfind("bsr_b:", 0) == 0; }

bool prepack_bsr(const Tensor& w, bool trans, PackedWeight* out) {
  if (w.dtype != DType::kF32 || w.rank() != 2) return false;
  const int64_t K = trans ? w.shape[1] : w.shape[0], N = trans ? w.shape[0] : w.shape[1];
  const int64_t nb = (N + kBsr - 1) / kBsr;
  if (K > std::numeric_limits<int32_t>::max() || K * nb > std::numeric_limits<int32_t>::max()) return false;
  const float* src = w.ptr<float>();
  auto at = [&](int64_t k, int64_t n) { return trans ? src[n * K + k] : src[k * N + n]; };
  std::vector<int32_t> ptr(static_cast<size_t>(nb + 1), 0), kidx;
  std::vector<float> val;
  for (int64_t jb = 0; jb < nb; ++jb) {
    const int64_t cols = std::min<int64_t>(kBsr, N - jb * kBsr);
    for (int64_t k = 0; k < K; ++k) {
      bool any = false;
      for (int64_t j = 0; j < cols && !any; ++j) any = at(k, jb * kBsr + j) != 0.f;
      if (!any) continue;
      kidx.push_back(static_cast<int32_t>(k));
      for (int64_t j = 0; j < kBsr; ++j) val.push_back(j < cols ? at(k, jb * kBsr + j) : 0.f);
    }
    ptr[static_cast<size_t>(jb + 1)] = static_cast<int32_t>(kidx.size());
  }
  out->format = bsr_format();
  out->shape = w.shape;
  const size_t n0 = ptr.size() * 4, n1 = kidx.size() * 4, n2 = val.size() * 4;
  out->bytes.resize(n0 + n1 + n2);
  std::memcpy(out->bytes.data(), ptr.data(), n0);
  if (n1) std::memcpy(out->bytes.data() + n0, kidx.data(), n1);
  if (n2) std::memcpy(out->bytes.data() + n0 + n1, val.data(), n2);
  return true;
}

// Reads a "bsr_b" constant, checking every index against the shape and the stored size, so a
// damaged or hostile model.mopt is an error at load and never an out-of-bounds read at run time.
void load_bsr_b(const ConstInput& c, bool trans, SparseB* out) {
  const Tensor& w = *c.tensor;
  MOPT_CHECK(c.format == bsr_format() && w.rank() == 2, ErrorCode::kInvalidModel, "block-sparse operand B: format '",
             c.format, "' of shape ", shape_str(w.shape), " is not ", bsr_format(), " of a 2-D weight");
  const int64_t K = trans ? w.shape[1] : w.shape[0], N = trans ? w.shape[0] : w.shape[1];
  const int64_t nb = (N + kBsr - 1) / kBsr;
  const size_t bytes = c.nbytes;
  auto bad = [&](const std::string& why) {
    throw Error(ErrorCode::kInvalidModel, str_cat("block-sparse operand B (", K, " x ", N, "): ", why));
  };
  if (bytes % 4 != 0 || bytes / 4 < static_cast<size_t>(nb + 1)) bad(str_cat(bytes, " bytes cannot hold its ", nb + 1, " block pointers"));
  const int32_t* ptr = static_cast<const int32_t*>(w.data);
  const int64_t nnz = ptr[nb];
  if (ptr[0] != 0 || nnz < 0 || nnz > K * nb) bad(str_cat("block pointers run from ", ptr[0], " to ", nnz));
  if (bytes != static_cast<size_t>(nb + 1 + nnz + nnz * kBsr) * 4)
    bad(str_cat(bytes, " bytes stored, ", (nb + 1 + nnz + nnz * kBsr) * 4, " expected for ", nnz, " blocks"));
  for (int64_t jb = 0; jb < nb; ++jb)
    if (ptr[jb + 1] < ptr[jb]) bad(str_cat("block pointers decrease at column block ", jb));
  const int32_t* kidx = ptr + nb + 1;
  for (int64_t p = 0; p < nnz; ++p)
    if (kidx[p] < 0 || kidx[p] >= K) bad(str_cat("block ", p, " sits at row ", kidx[p], ", outside 0..", K - 1));
  out->ptr = ptr;
  out->kidx = kidx;
  out->val = reinterpret_cast<const float*>(kidx + nnz);
  out->K = K;
  out->N = N;
  out->nb = nb;
  out->nnz = nnz;
}

// C[M x N] = epilogue(A[M x K] * B), A row-major with row stride lda, B block-sparse. Tasks are
// (row tile of the kernel's mr rows) x (a run of column blocks), enough for every thread twice.
class SparseGemm {
 public:
  SparseGemm(const KernelInit& init, std::string* impl) {
    k_ = init.fn<const cpu::BsrGemmF32*>("bsr_gemm_f32", nullptr);
    epilogue_ = init.fn<cpu::EpilogueF32Fn>("epilogue_f32", nullptr);
    Isa chosen = Isa::kScalar;
    kernel_table().find("bsr_gemm_f32", init.isa, &chosen);
    *impl += str_cat(impl->empty() ? "" : ",", "bsr_1x", kBsr, "@", isa_name(chosen));
  }
  void run(const SparseB& b, const float* a, int64_t lda, int64_t M, float* c, const cpu::Epilogue& ep,
           KernelContext& ctx) const {
    if (M <= 0 || b.N <= 0) return;
    ThreadPool& pool = ctx.pool();
    const int T = pool.num_threads();
    const int64_t mt = (M + k_->mr - 1) / k_->mr;
    int64_t chunks = std::max<int64_t>(1, std::min<int64_t>(b.nb, (2 * T + mt - 1) / mt));
    const int64_t per = (b.nb + chunks - 1) / chunks;
    chunks = (b.nb + per - 1) / per;
    const size_t scratch = static_cast<size_t>(std::max<int64_t>(b.K, 1) * k_->mr);
    float* buf = static_cast<float*>(ctx.scratch(scratch * sizeof(float) * static_cast<size_t>(T)));
    pool.run_tasks(mt * chunks, [&](int64_t task, int thread) {
      cpu::BsrGemmArgs g;
      const int64_t i0 = (task / chunks) * k_->mr;
      g.rows = std::min<int64_t>(k_->mr, M - i0);
      g.a = a + i0 * lda;
      g.lda = lda;
      g.ptr = b.ptr;
      g.kidx = b.kidx;
      g.val = b.val;
      g.K = b.K;
      g.N = b.N;
      g.jb0 = (task % chunks) * per;
      g.jb1 = std::min(b.nb, g.jb0 + per);
      g.c = c + i0 * b.N;
      g.ldc = b.N;
      g.scratch = buf + scratch * static_cast<size_t>(thread);
      k_->fn(g);
      const int64_t j0 = g.jb0 * kBsr, cols = std::min(b.N, g.jb1 * kBsr) - j0;
      epilogue_(g.c + j0, b.N, g.rows, cols, i0, j0, ep);
    });
  }

 private:
  const cpu::BsrGemmF32* k_ = nullptr;
  cpu::EpilogueF32Fn epilogue_ = nullptr;
};

// Makes `out` hold B (logical K x N; stored transposed when `trans`) packed for `nr`.
void load_packed_b(const ConstInput& c, bool trans, int nr, PackedB* out) {
  const Tensor& w = *c.tensor;
  MOPT_ENSURE(w.rank() == 2, "constant B must be 2-D, got ", shape_str(w.shape));
  out->K = trans ? w.shape[1] : w.shape[0];
  out->N = trans ? w.shape[0] : w.shape[1];
  const std::string want = pack_format("gemm_b", "nr", nr);
  if (c.format == want) {
    out->data = w.ptr<float>();
    return;
  }
  std::vector<float> plain;
  GemmB src;
  if (c.format.empty()) {
    src.data = w.ptr<float>();
    src.rs = trans ? 1 : out->N;
    src.cs = trans ? out->K : 1;
  } else {
    std::string kind;
    int n = 0;
    int64_t g = 1;
    MOPT_CHECK(parse_pack_format(c.format, &kind, &n, &g) && kind == "gemm_b", ErrorCode::kInvalidModel,
               "unknown packing '", c.format, "' for operand B");
    plain.resize(static_cast<size_t>(out->K * out->N));
    GemmF32::unpack_b(w.ptr<float>(), out->K, out->N, n, plain.data());
    src.data = plain.data();
    src.rs = out->N;
    src.cs = 1;
  }
  out->owned.resize(GemmF32::packed_b_floats(out->K, out->N, nr));
  GemmF32::pack_b(src, out->K, out->N, nr, out->owned.data());
  out->data = out->owned.data();
}

bool prepack_b(const Attrs& attrs, const Tensor& w, bool trans, Isa isa, PackedWeight* out) {
  if (w.dtype != DType::kF32 || w.rank() != 2) return false;
  if (attrs.get_int("_block_sparse", 0) != 0) return prepack_bsr(w, trans, out);
  const int nr = GemmF32::ukernel_for(isa)->nr;
  const int64_t K = trans ? w.shape[1] : w.shape[0], N = trans ? w.shape[0] : w.shape[1];
  GemmB src;
  src.data = w.ptr<float>();
  src.rs = trans ? 1 : N;
  src.cs = trans ? K : 1;
  out->format = pack_format("gemm_b", "nr", nr);
  out->shape = w.shape;
  out->bytes.resize(GemmF32::packed_b_floats(K, N, nr) * sizeof(float));
  GemmF32::pack_b(src, K, N, nr, reinterpret_cast<float*>(out->bytes.data()));
  return true;
}

// Sets up the epilogue for Gemm's C (or a fused bias) broadcast to [M, N]. A row C becomes the
// bias; so does a single value when `bias_only` (the residual slot is wanted for something else).
void set_c_epilogue(const Tensor* c, float beta, int64_t M, int64_t N, cpu::Epilogue* ep, bool bias_only = false) {
  if (!c || beta == 0.f || c->numel() == 0) return;
  MOPT_ENSURE(c->dtype == DType::kF32, "C must be float32");
  Shape s = c->shape, bs;
  MOPT_ENSURE(s.size() <= 2 && broadcast_shapes(s, {M, N}, &bs) && bs == Shape({M, N}), "C of shape ",
              shape_str(s), " cannot be broadcast to ", shape_str({M, N}));
  int64_t rows = s.size() == 2 ? s[0] : 1, cols = s.empty() ? 1 : s.back();
  if (rows == 1 && cols == N && (N > 1 || bias_only) && beta == 1.f) {
    ep->bias = c->ptr<float>();
    ep->bias_axis = 1;
    return;
  }
  ep->residual = c->ptr<float>();
  ep->res_rs = rows == 1 ? 0 : cols;
  ep->res_cs = cols == 1 ? 0 : 1;
  ep->res_scale = beta;
}

// A fused residual whose shape the compiler could not prove equal to the product's: nullptr when
// it is equal (added in the GEMM's store); else, when it broadcasts to the product, the residual to
// add after the GEMM (the activation then moves after it too); anything else is an error.
const Tensor* residual_after(const Tensor& r, const Shape& yshape, cpu::Epilogue* ep) {
  MOPT_ENSURE(r.dtype == DType::kF32, "the residual must be float32");
  if (r.shape == yshape) return nullptr;
  Shape bs;
  MOPT_ENSURE(broadcast_shapes(yshape, r.shape, &bs) && bs == yshape, "residual of shape ", shape_str(r.shape),
              " does not broadcast to the product's shape ", shape_str(yshape));
  ep->act = cpu::UnaryParams{};
  return &r;
}

// y += r, r broadcast to y's shape.
void add_broadcast(KernelContext& ctx, Tensor& y, const Tensor& r, cpu::BinaryF32Fn bin) {
  const Broadcast bc = make_broadcast(y.shape, r.shape);
  float* yp = y.ptr<float>();
  const float* rp = r.ptr<float>();
  for_each_run(bc, ctx.pool(), [&](int64_t oa, int64_t ob, int64_t oo, int64_t n, int mode) {
    if (mode == 3) {
      yp[oo] = yp[oa] + rp[ob];
      return;
    }
    bin(cpu::BinaryOp::kAdd, yp + oa, rp + ob, yp + oo, n, mode);
  });
}

// One GEMM across the pool with its scratch; a raw A is packed once up front when several column
// blocks would each pack it again.
void run_gemm(KernelContext& ctx, const GemmF32& gemm, const GemmProblem& p) {
  const int T = ctx.pool().num_threads();
  const size_t bytes = gemm.scratch_bytes(T) + gemm.a_pack_floats(p, T) * sizeof(float);
  gemm.run_packing_a(p, ctx.pool(), ctx.scratch(bytes));
}

class GemmKernel final : public Kernel {
 public:
  explicit GemmKernel(const KernelInit& init) : gemm_(init, &impl) {
    trans_a_ = init.attrs.get_int("transA", 0) != 0;
    trans_b_ = init.attrs.get_int("transB", 0) != 0;
    alpha_ = static_cast<float>(init.attrs.get_float("alpha", 1.0));
    beta_ = static_cast<float>(init.attrs.get_float("beta", 1.0));
    act_ = activation_from_attrs(init.attrs);
    binary_ = init.fn<cpu::BinaryF32Fn>("binary_f32");
    unary_ = init.fn<cpu::UnaryF32Fn>("unary_f32");
    if (init.const_input(1) && init.in_dtypes[1] == DType::kF32 && is_bsr(init.consts[1])) {
      MOPT_CHECK(!trans_a_, ErrorCode::kInvalidModel, "a block-sparse B needs transA = 0");
      load_bsr_b(init.consts[1], trans_b_, &sb_);
      sparse_ = std::make_unique<SparseGemm>(init, &impl);
    } else if (init.const_input(1) && init.in_dtypes[1] == DType::kF32) {
      load_packed_b(init.consts[1], trans_b_, gemm_.nr(), &b_);
      impl += ",prepacked_b";
    }
  }
  void run(KernelContext& ctx) override {
    const Tensor& a = ctx.in(0);
    MOPT_ENSURE(a.rank() == 2, "A must be 2-D, got ", shape_str(a.shape));
    const int64_t M = trans_a_ ? a.shape[1] : a.shape[0];
    const int64_t K = trans_a_ ? a.shape[0] : a.shape[1];
    GemmProblem p;
    p.M = M;
    p.K = K;
    if (sparse_) {
      MOPT_ENSURE(sb_.K == K, "A is ", shape_str(a.shape), " but B has inner dimension ", sb_.K);
      p.N = sb_.N;
    } else if (b_.data) {
      MOPT_ENSURE(b_.K == K, "A is ", shape_str(a.shape), " but B has inner dimension ", b_.K);
      p.N = b_.N;
      p.b.packed = b_.data;
    } else {
      const Tensor& b = ctx.in(1);
      MOPT_ENSURE(b.rank() == 2, "B must be 2-D, got ", shape_str(b.shape));
      const int64_t kb = trans_b_ ? b.shape[1] : b.shape[0];
      MOPT_ENSURE(kb == K, "inner dimensions differ: A ", shape_str(a.shape), ", B ", shape_str(b.shape));
      p.N = trans_b_ ? b.shape[0] : b.shape[1];
      p.b.data = b.ptr<float>();
      p.b.rs = trans_b_ ? 1 : p.N;
      p.b.cs = trans_b_ ? K : 1;
    }
    p.a.data = a.ptr<float>();
    p.a.rs = trans_a_ ? 1 : K;
    p.a.cs = trans_a_ ? M : 1;
    Tensor& y = ctx.output(0, {M, p.N});
    p.c = y.ptr<float>();
    p.ldc = p.N;
    p.ep.alpha = alpha_;
    p.ep.act = act_;
    const Tensor* res = ctx.input(3);
    set_c_epilogue(ctx.input(2), beta_, M, p.N, &p.ep, res != nullptr);
    const Tensor* late = nullptr;
    if (res) {  // FusedGemm: a residual of the result's shape (or one broadcast to it, added after)
      MOPT_ENSURE(!p.ep.residual, "a residual input beside a C that is not a bias row");
      late = residual_after(*res, y.shape, &p.ep);
      if (!late) {
        p.ep.residual = res->ptr<float>();
        p.ep.res_rs = p.N;
        p.ep.res_cs = 1;
      }
    }
    if (sparse_) {
      sparse_->run(sb_, p.a.data, K, M, p.c, p.ep, ctx);
    } else {
      run_gemm(ctx, gemm_, p);
    }
    if (late) {
      add_broadcast(ctx, y, *late, binary_);
      if (act_.op != cpu::UnaryOp::kIdentity) unary_(y.ptr<float>(), y.ptr<float>(), y.numel(), act_);
    }
  }

 private:
  GemmF32 gemm_;
  bool trans_a_ = false, trans_b_ = false;
  float alpha_ = 1.f, beta_ = 1.f;
  cpu::UnaryParams act_;
  PackedB b_;
  SparseB sb_;
  std::unique_ptr<SparseGemm> sparse_;
  cpu::BinaryF32Fn binary_ = nullptr;
  cpu::UnaryF32Fn unary_ = nullptr;
};

std::unique_ptr<Kernel> make_gemm(const KernelInit& init) { return std::make_unique<GemmKernel>(init); }

bool prepack_gemm(const Attrs& attrs, int input, const Tensor& w, Isa isa, PackedWeight* out) {
  return input == 1 && prepack_b(attrs, w, attrs.get_int("transB", 0) != 0, isa, out);
}

// MatMul with numpy semantics (1-D promotion, broadcast batch dimensions); FusedMatMul adds an
// optional bias (input 2, broadcast over the last dimension) and an activation.
class MatMulKernel final : public Kernel {
 public:
  explicit MatMulKernel(const KernelInit& init) : gemm_(init, &impl) {
    act_ = activation_from_attrs(init.attrs);
    alpha_ = static_cast<float>(init.attrs.get_float("alpha", 1.0));
    binary_ = init.fn<cpu::BinaryF32Fn>("binary_f32");
    unary_ = init.fn<cpu::UnaryF32Fn>("unary_f32");
    const Tensor* b = init.const_input(1);
    if (b && b->rank() == 2 && init.in_dtypes[1] == DType::kF32 && is_bsr(init.consts[1])) {
      load_bsr_b(init.consts[1], false, &sb_);
      sparse_ = std::make_unique<SparseGemm>(init, &impl);
    } else if (b && b->rank() == 2 && init.in_dtypes[1] == DType::kF32) {
      load_packed_b(init.consts[1], false, gemm_.nr(), &b_);
      impl += ",prepacked_b";
    }
  }

  void run(KernelContext& ctx) override {
    const Tensor& a = ctx.in(0);
    const Tensor* bt = ctx.input(1);
    const bool const_b = b_.data || sparse_;
    const Shape cb = sparse_ ? Shape{sb_.K, sb_.N} : Shape{b_.K, b_.N};
    const MatMulShape ms = matmul_shape(a.shape, const_b ? cb : ctx.in(1).shape);
    const int64_t M = ms.M, K = ms.K, N = ms.N;
    const Shape &abatch = ms.a_batch, &bbatch = ms.b_batch, &batch = ms.batch;
    const bool a1 = a.rank() == 1, b1 = (const_b ? cb : ctx.in(1).shape).size() == 1;
    Tensor& y = ctx.output(0, ms.out);
    const int64_t nbatch = shape_numel(batch);
    if (y.numel() == 0) return;

    cpu::Epilogue ep;
    ep.act = act_;
    ep.alpha = alpha_;
    if (const Tensor* bias = ctx.input(2); bias && bias->numel() > 0) {
      MOPT_ENSURE(bias->numel() == N, "bias has ", bias->numel(), " elements, expected ", N);
      ep.bias = bias->ptr<float>();
      ep.bias_axis = 1;
    }
    // FusedMatMul's residual (input 3): of the result's shape, added in the store; one that
    // broadcasts to it (the compiler could not prove the shapes equal) is added after the GEMM.
    const float* res = nullptr;
    const Tensor* late = nullptr;
    if (const Tensor* r = ctx.input(3)) {
      late = residual_after(*r, y.shape, &ep);
      if (!late) {
        res = r->ptr<float>();
        ep.res_rs = N;
        ep.res_cs = 1;
      }
    }
    if (sparse_) {  // B is 2-D: the batch folds into M, A is contiguous
      ep.residual = res;
      sparse_->run(sb_, a.ptr<float>(), K, nbatch * M, y.ptr<float>(), ep, ctx);
    } else {
      gemm_part(ctx, a, bt, M, N, K, nbatch, batch, abatch, bbatch, b1, a1, y, ep, res);
    }
    if (late) finish_residual(ctx, y, *late);
  }

 private:
  void gemm_part(KernelContext& ctx, const Tensor& a, const Tensor* bt, int64_t M, int64_t N, int64_t K, int64_t nbatch,
                 const Shape& batch, const Shape& abatch, const Shape& bbatch, bool b1, bool a1, Tensor& y,
                 const cpu::Epilogue& ep, const float* res) {
    const float* ap = a.ptr<float>();
    float* yp = y.ptr<float>();
    const bool b_is_2d = bbatch.empty() && !b1;
    // B shared by every batch entry and A contiguous: one GEMM with the batch folded into M.
    if (b_is_2d && !a1) {
      GemmProblem p;
      p.M = nbatch * M;
      p.N = N;
      p.K = K;
      p.a.data = ap;
      p.a.rs = K;
      p.a.cs = 1;
      set_b(p, bt, K, N, 0);
      p.c = yp;
      p.ldc = N;
      p.ep = ep;
      p.ep.residual = res;
      run_gemm(ctx, gemm_, p);
      return;
    }
    // General case: one GEMM per broadcast batch index.
    const size_t rb = batch.size();
    std::vector<int64_t> astr(rb, 0), bstr(rb, 0);
    {
      int64_t sa = M * K, sb = K * N;
      for (int64_t d = static_cast<int64_t>(rb) - 1; d >= 0; --d) {
        int64_t ia = d - static_cast<int64_t>(rb - abatch.size());
        int64_t ib = d - static_cast<int64_t>(rb - bbatch.size());
        if (ia >= 0) { astr[d] = abatch[ia] == 1 ? 0 : sa; sa *= abatch[ia]; }
        if (ib >= 0) { bstr[d] = bbatch[ib] == 1 ? 0 : sb; sb *= bbatch[ib]; }
      }
    }
    auto offsets = [&](int64_t bi, int64_t* oa, int64_t* ob) {
      *oa = *ob = 0;
      for (int64_t d = static_cast<int64_t>(rb) - 1; d >= 0; --d) {
        int64_t i = bi % batch[d];
        bi /= batch[d];
        *oa += i * astr[d];
        *ob += i * bstr[d];
      }
    };
    auto problem = [&](int64_t bi) {
      int64_t oa, ob;
      offsets(bi, &oa, &ob);
      GemmProblem p;
      p.M = M;
      p.N = N;
      p.K = K;
      p.a.data = ap + oa;
      p.a.rs = K;
      p.a.cs = 1;
      set_b(p, bt, K, N, ob);
      p.c = yp + bi * M * N;
      p.ldc = N;
      p.ep = ep;
      p.ep.residual = res ? res + bi * M * N : nullptr;
      return p;
    };
    ThreadPool& pool = ctx.pool();
    const int T = pool.num_threads();
    if (nbatch >= T && M * N * K < (int64_t(1) << 21)) {  // many small products: one per thread
      const size_t per = gemm_.scratch_bytes(1);
      char* scratch = static_cast<char*>(ctx.scratch(per * T));
      pool.run_tasks(nbatch, [&](int64_t bi, int thread) { gemm_.run_serial(problem(bi), scratch + per * thread); });
    } else {
      void* scratch = ctx.scratch(gemm_.scratch_bytes(T));
      for (int64_t bi = 0; bi < nbatch; ++bi) gemm_.run(problem(bi), pool, scratch);
    }
  }

  void finish_residual(KernelContext& ctx, Tensor& y, const Tensor& r) {
    add_broadcast(ctx, y, r, binary_);
    if (act_.op != cpu::UnaryOp::kIdentity) unary_(y.ptr<float>(), y.ptr<float>(), y.numel(), act_);
  }

  void set_b(GemmProblem& p, const Tensor* bt, int64_t K, int64_t N, int64_t offset) const {
    if (b_.data) {
      p.b.packed = b_.data;
    } else {
      p.b.data = bt->ptr<float>() + offset;
      p.b.rs = N;
      p.b.cs = 1;
    }
  }

  GemmF32 gemm_;
  cpu::UnaryParams act_;
  float alpha_ = 1.f;
  PackedB b_;
  SparseB sb_;
  std::unique_ptr<SparseGemm> sparse_;
  cpu::BinaryF32Fn binary_ = nullptr;
  cpu::UnaryF32Fn unary_ = nullptr;
};

std::unique_ptr<Kernel> make_matmul(const KernelInit& init) { return std::make_unique<MatMulKernel>(init); }

bool prepack_matmul(const Attrs& attrs, int input, const Tensor& w, Isa isa, PackedWeight* out) {
  return input == 1 && prepack_b(attrs, w, false, isa, out);
}

// com.mopt.FusedMLP: a transformer's feed-forward block, y = act(x W1 + b1) W2 + b2 (+ residual).
// Inputs: x [..., K1], W1 [K1, N1] and W2 [N1, N2] (constants), optional b1 [N1], b2 [N2] and a
// residual of y's shape [..., N2]. The hidden activation h never leaves the kernel: with enough rows,
// each task takes a range of them in blocks whose h (at most 512 KB) stays in the core's L2 between
// the two products; with few, the two products run one after the other over all rows, each split
// across the threads. Either way h's rows are stored a padded stride apart, so the second product
// reads them in place (an [M, 1024] h, 4 KB per row, had to be copied or packed first).
class MLPKernel final : public Kernel {
 public:
  explicit MLPKernel(const KernelInit& init) : gemm_(init, &impl) {
    act_ = activation_from_attrs(init.attrs);
    for (int i : {1, 3})
      MOPT_CHECK(init.const_input(i) && init.in_dtypes[i] == DType::kF32 && init.const_input(i)->rank() == 2,
                 ErrorCode::kInvalidModel, "FusedMLP: W", i == 1 ? 1 : 2, " (input ", i, ") must be a constant float32 matrix");
    load_packed_b(init.consts[1], false, gemm_.nr(), &w1_);
    load_packed_b(init.consts[3], false, gemm_.nr(), &w2_);
    MOPT_CHECK(w2_.K == w1_.N, ErrorCode::kInvalidModel, "FusedMLP: W1 gives ", w1_.N, " hidden features but W2 takes ", w2_.K);
    impl += ",prepacked_b";
  }

  void run(KernelContext& ctx) override {
    const Tensor& x = ctx.in(0);
    const int64_t K1 = w1_.K, N1 = w1_.N, N2 = w2_.N;
    MOPT_ENSURE(x.dtype == DType::kF32 && x.rank() >= 1 && x.shape.back() == K1, "FusedMLP: x must be float32 [..., ", K1,
                "], got ", shape_str(x.shape));
    Shape ys = x.shape;
    ys.back() = N2;
    const int64_t M = K1 > 0 ? x.numel() / K1 : shape_numel(ys) / std::max<int64_t>(N2, 1);
    const float* b1 = bias(ctx, 2, N1);
    const float* b2 = bias(ctx, 4, N2);
    const Tensor* res = ctx.input(5);
    MOPT_ENSURE(!res || (res->dtype == DType::kF32 && res->shape == ys), "FusedMLP: the residual must be float32 ",
                shape_str(ys), ", got ", res ? shape_str(res->shape) : "");
    Tensor& y = ctx.output(0, ys);
    if (y.numel() == 0) return;
    // h's row stride: whole vectors, and never a multiple of 4 KB (rows that share an L1 set)
    int64_t ldh = (N1 + 15) / 16 * 16;
    if (ldh % 1024 == 0) ldh += 16;
    auto up = [&](int64_t r0, int64_t rows, float* h) {
      GemmProblem p;
      p.M = rows;
      p.N = N1;
      p.K = K1;
      p.a.data = x.ptr<float>() + r0 * K1;
      p.a.rs = K1;
      p.a.cs = 1;
      p.b.packed = w1_.data;
      p.c = h;
      p.ldc = ldh;
      p.ep.act = act_;
      p.ep.bias = b1;
      p.ep.bias_axis = 1;
      return p;
    };
    auto down = [&](int64_t r0, int64_t rows, const float* h) {
      GemmProblem p;
      p.M = rows;
      p.N = N2;
      p.K = N1;
      p.a.data = h;
      p.a.rs = ldh;
      p.a.cs = 1;
      p.b.packed = w2_.data;
      p.c = y.ptr<float>() + r0 * N2;
      p.ldc = N2;
      p.ep.bias = b2;
      p.ep.bias_axis = 1;
      if (res) {
        p.ep.residual = res->ptr<float>() + r0 * N2;
        p.ep.res_rs = N2;
        p.ep.res_cs = 1;
      }
      return p;
    };
    ThreadPool& pool = ctx.pool();
    const int T = pool.num_threads();
    const int64_t mr = gemm_.mr(), panels = (M + mr - 1) / mr;
    // Rows per block whose h fits in 512 KB, in whole panels (up to 5: 70 rows of a 1024-wide h).
    // Every block reads both weights again: only for weights that stay in cache (4 MB) and blocks
    // of at least 4 panels. (BERT-base's 768 x 3072 and 3072 x 768, 19 MB, in blocks of 42 rows,
    // ran 7-10% slower than the two products in turn.)
    const int64_t block = mr * std::min<int64_t>(5, (int64_t{512} * 1024 / (ldh * 4)) / mr);
    const double weight_bytes = static_cast<double>(N1) * static_cast<double>(K1 + N2) * sizeof(float);
    if (block >= 4 * mr && panels >= 12 * T && weight_bytes <= 4.0 * (1 << 20)) {
      // Ranges of whole panels, two per thread (as even as panels allow), each run block by block.
      const int64_t ranges = 2 * T;
      const size_t gbytes = (gemm_.scratch_bytes(1) + 63) / 64 * 64;
      const size_t hbytes = (static_cast<size_t>(block * ldh) * sizeof(float) + 63) / 64 * 64;
      char* scratch = static_cast<char*>(ctx.scratch((gbytes + hbytes) * T));
      pool.run_tasks(ranges, [&](int64_t r, int thread) {
        char* mine = scratch + (gbytes + hbytes) * thread;
        float* h = reinterpret_cast<float*>(mine + gbytes);
        const int64_t i0 = r * panels / ranges * mr, i1 = std::min(M, (r + 1) * panels / ranges * mr);
        for (int64_t s = i0; s < i1; s += block) {
          const int64_t rows = std::min(block, i1 - s);
          gemm_.run_serial(up(s, rows, h), mine);
          gemm_.run_serial(down(s, rows, h), mine);
        }
      });
      return;
    }
    // Otherwise (few rows, or large weights): h whole, each product split across the threads.
    const size_t hbytes = (static_cast<size_t>(M * ldh) * sizeof(float) + 63) / 64 * 64;
    GemmProblem p1 = up(0, M, nullptr), p2 = down(0, M, nullptr);
    const size_t gbytes = gemm_.scratch_bytes(T) + std::max(gemm_.a_pack_floats(p1, T), gemm_.a_pack_floats(p2, T)) * sizeof(float);
    char* scratch = static_cast<char*>(ctx.scratch(hbytes + gbytes));
    p1.c = reinterpret_cast<float*>(scratch);  // h, at the front of the scratch
    p2.a.data = p1.c;
    gemm_.run_packing_a(p1, pool, scratch + hbytes);
    gemm_.run_packing_a(p2, pool, scratch + hbytes);
  }

 private:
  // Input i, a bias of n floats, or null where absent.
  static const float* bias(KernelContext& ctx, int i, int64_t n) {
    const Tensor* b = ctx.input(i);
    if (!b || b->numel() == 0) return nullptr;
    MOPT_ENSURE(b->dtype == DType::kF32 && b->numel() == n, "FusedMLP: input ", i, " must be a float32 bias of ", n,
                " values, got ", shape_str(b->shape));
    return b->ptr<float>();
  }

  GemmF32 gemm_;
  cpu::UnaryParams act_;
  PackedB w1_, w2_;
};

std::unique_ptr<Kernel> make_mlp(const KernelInit& init) { return std::make_unique<MLPKernel>(init); }

bool prepack_mlp(const Attrs& attrs, int input, const Tensor& w, Isa isa, PackedWeight* out) {
  return (input == 1 || input == 3) && prepack_b(attrs, w, false, isa, out);
}

}  // namespace

void register_gemm_ops(OpRegistry& r) {
  const std::vector<DType> f32 = {DType::kF32};
  r.add({"", "Gemm", f32, &make_gemm, &prepack_gemm});
  r.add({"com.mopt", "FusedGemm", f32, &make_gemm, &prepack_gemm});
  r.add({"", "MatMul", {DType::kF32, DType::kF64, DType::kF16}, &route_by_dtype<&make_matmul, &make_typed_matmul, DType::kF32>, &prepack_matmul});
  r.add({"com.mopt", "FusedMatMul", f32, &make_matmul, &prepack_matmul});
  r.add({"com.mopt", "FusedMLP", f32, &make_mlp, &prepack_mlp});
}

}  // namespace mopt
