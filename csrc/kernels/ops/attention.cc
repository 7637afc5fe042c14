// com.mopt.Attention: scaled dot-product attention in one kernel,
//   out = softmax(scale * Q K^T + mask) V        for every batch entry (and head)
// Q, K, V are read where they lie: each input may be given as a transposition of the logical
// [batch..., S, D] operand (attribute q_perm / k_perm / v_perm: logical = Transpose(input, perm)),
// so the head-splitting transposes an exporter writes around attention cost nothing; out_perm
// writes the result transposed the same way. The score matrix lives only as one row block per
// thread (in cache), never as a [batch, heads, S, S] tensor.
//
// Packed form (attribute packed_qkv = [Nq, Nk, Nv], num_heads = H): input 0 is one projection
// [B, S, Nq + Nk + Nv] holding Q, K and V side by side (one GEMM made them); inputs 1 and 2 are
// absent; each is read as [B, H, S, N/H] through strides.
//
// Inputs: q, k, v (same rank R, 3 or 4), optional mask (float32, broadcast to [batch..., Sq, Skv],
// added to the scaled scores). Attributes: scale (default 1/sqrt(D)), nan_to_zero (a probability
// that is NaN, as for a row masked entirely with -inf, becomes 0: the guard exporters write after
// the softmax).
#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/gemm.h"
#include "kernels/ops/common.h"

namespace mopt {
namespace {

constexpr int64_t kRowBlock = 64;  // query rows per task (about): one score block of rows x Skv floats

// Logical strides of an operand given as `perm`-transposed storage of contiguous `t`.
bool logical_view(const Tensor& t, const std::vector<int64_t>& perm, Shape* shape, std::vector<int64_t>* strides) {
  const size_t r = t.shape.size();
  if (perm.size() != r) return false;
  std::vector<int64_t> st(r, 1);
  for (int64_t d = static_cast<int64_t>(r) - 2; d >= 0; --d) st[d] = st[d + 1] * t.shape[d + 1];
  shape->assign(r, 0);
  strides->assign(r, 0);
  for (size_t a = 0; a < r; ++a) {
    (*shape)[a] = t.shape[perm[a]];
    (*strides)[a] = st[perm[a]];
  }
  return true;
}

std::vector<int64_t> identity_perm(size_t r) {
  std::vector<int64_t> p(r);
  for (size_t i = 0; i < r; ++i) p[i] = static_cast<int64_t>(i);
  return p;
}

bool valid_perm(const std::vector<int64_t>& p) {
  std::vector<bool> seen(p.size(), false);
  for (int64_t v : p) {
    if (v < 0 || v >= static_cast<int64_t>(p.size()) || seen[v]) return false;
    seen[v] = true;
  }
  return true;
}

class AttentionKernel final : public Kernel {
 public:
  explicit AttentionKernel(const KernelInit& init) : gemm_(init, &impl) {
    q_perm_ = init.attrs.get_ints("q_perm", {});
    k_perm_ = init.attrs.get_ints("k_perm", {});
    v_perm_ = init.attrs.get_ints("v_perm", {});
    out_perm_ = init.attrs.get_ints("out_perm", {});
    for (const auto* p : {&q_perm_, &k_perm_, &v_perm_, &out_perm_})
      MOPT_CHECK(p->empty() || valid_perm(*p), ErrorCode::kInvalidModel, "Attention: a perm attribute is not a permutation");
    packed_ = init.attrs.get_ints("packed_qkv", {});
    heads_ = init.attrs.get_int("num_heads", 0);
    if (!packed_.empty()) {
      MOPT_CHECK(packed_.size() == 3 && heads_ > 0 && packed_[0] > 0 && packed_[1] == packed_[0] && packed_[2] > 0 &&
                     packed_[0] % heads_ == 0 && packed_[2] % heads_ == 0,
                 ErrorCode::kInvalidModel, "Attention: packed_qkv needs three widths (Q and K equal) that num_heads divides");
      MOPT_CHECK(q_perm_.empty() && k_perm_.empty() && v_perm_.empty(), ErrorCode::kInvalidModel,
                 "Attention: packed_qkv takes no q/k/v perms");
    }
    scale_ = init.attrs.get_float("scale", std::nan(""));
    nan_to_zero_ = init.attrs.get_int("nan_to_zero", 0) != 0;
    softmax_ = init.fn<cpu::SoftmaxF32Fn>("softmax_f32", &impl);
    add_ = init.fn<cpu::BinaryF32Fn>("binary_f32", nullptr);
    impl = "attention_f32," + impl;
  }

  void run(KernelContext& ctx) override {
    const Tensor* mask = ctx.input(3);
    Shape qs, ks, vs;
    std::vector<int64_t> qst, kst, vst;
    const float *qp = nullptr, *kp = nullptr, *vp = nullptr;
    size_t R = 4;
    if (!packed_.empty()) {
      // One [B, S, Nq + Nk + Nv] projection: Q, K, V are its column ranges, each split into heads.
      const Tensor& y = ctx.in(0);
      MOPT_ENSURE(y.dtype == DType::kF32 && y.rank() == 3 && y.shape[2] == packed_[0] + packed_[1] + packed_[2],
                  "Attention: the packed Q/K/V projection must be float32 [batch, seq, ", packed_[0] + packed_[1] + packed_[2],
                  "], got ", shape_str(y.shape));
      const int64_t B = y.shape[0], S = y.shape[1], Nt = y.shape[2], H = heads_;
      const int64_t offs[3] = {0, packed_[0], packed_[0] + packed_[1]};
      Shape* shapes[3] = {&qs, &ks, &vs};
      std::vector<int64_t>* strides[3] = {&qst, &kst, &vst};
      for (int i = 0; i < 3; ++i) {
        const int64_t Di = packed_[i] / H;
        *shapes[i] = {B, H, S, Di};
        *strides[i] = {S * Nt, Di, Nt, 1};
      }
      const float* base = y.ptr<float>();
      qp = base + offs[0];
      kp = base + offs[1];
      vp = base + offs[2];
    } else {
      const Tensor &q = ctx.in(0), &k = ctx.in(1), &v = ctx.in(2);
      R = q.shape.size();
      MOPT_ENSURE(R >= 3 && R <= 4 && k.shape.size() == R && v.shape.size() == R,
                  "Attention: Q, K and V must all have rank 3 or 4, got ", shape_str(q.shape), ", ", shape_str(k.shape),
                  ", ", shape_str(v.shape));
      for (const Tensor* t : {&q, &k, &v}) MOPT_ENSURE(t->dtype == DType::kF32, "Attention: Q, K and V must be float32");
      MOPT_ENSURE(logical_view(q, q_perm_.empty() ? identity_perm(R) : q_perm_, &qs, &qst) &&
                      logical_view(k, k_perm_.empty() ? identity_perm(R) : k_perm_, &ks, &kst) &&
                      logical_view(v, v_perm_.empty() ? identity_perm(R) : v_perm_, &vs, &vst),
                  "Attention: a perm attribute does not match the rank of its input");
      qp = q.ptr<float>();
      kp = k.ptr<float>();
      vp = v.ptr<float>();
    }
    const size_t nb = R - 2;  // batch dimensions
    const int64_t Sq = qs[nb], D = qs[nb + 1], Skv = ks[nb], Dv = vs[nb + 1];
    MOPT_ENSURE(ks[nb + 1] == D, "Attention: Q has ", D, " features per head but K has ", ks[nb + 1]);
    MOPT_ENSURE(vs[nb] == Skv, "Attention: K has ", Skv, " positions but V has ", vs[nb]);
    // Batch dimensions broadcast like MatMul's: sizes equal or 1 (stride 0).
    Shape batch(nb);
    for (size_t d = 0; d < nb; ++d) {
      int64_t n = 1;
      for (const Shape* s : {&qs, &ks, &vs}) {
        if ((*s)[d] == 1) continue;
        MOPT_ENSURE(n == 1 || n == (*s)[d], "Attention: batch dimensions of Q ", shape_str(qs), ", K ", shape_str(ks),
                    " and V ", shape_str(vs), " cannot be broadcast");
        n = (*s)[d];
      }
      batch[d] = n;
      if (qs[d] == 1) qst[d] = 0;
      if (ks[d] == 1) kst[d] = 0;
      if (vs[d] == 1) vst[d] = 0;
    }
    // The output: logical [batch..., Sq, Dv], stored transposed by out_perm.
    Shape logical(batch);
    logical.push_back(Sq);
    logical.push_back(Dv);
    const std::vector<int64_t> operm = out_perm_.empty() ? identity_perm(R) : out_perm_;
    MOPT_ENSURE(operm.size() == R, "Attention: out_perm does not match the rank of the output");
    Shape oshape(R);
    for (size_t c = 0; c < R; ++c) oshape[c] = logical[operm[c]];
    Tensor& y = ctx.output(0, oshape);
    std::vector<int64_t> ost(R, 0);
    {
      int64_t s = 1;
      for (int64_t c = static_cast<int64_t>(R) - 1; c >= 0; --c) {
        ost[operm[c]] = s;
        s *= oshape[c];
      }
    }
    // Mask: right-aligned broadcast to [batch..., Sq, Skv].
    std::vector<int64_t> mst(R, 0);
    const float* mp = nullptr;
    if (mask && mask->numel() > 0) {
      MOPT_ENSURE(mask->dtype == DType::kF32, "Attention: the mask must be float32");
      const size_t mr = mask->shape.size();
      MOPT_ENSURE(mr <= R, "Attention: mask of shape ", shape_str(mask->shape), " has more dimensions than the scores");
      Shape target(batch);
      target.push_back(Sq);
      target.push_back(Skv);
      int64_t s = 1;
      for (int64_t d = static_cast<int64_t>(mr) - 1; d >= 0; --d) {
        const int64_t td = d + static_cast<int64_t>(R - mr);
        const int64_t md = mask->shape[d];
        MOPT_ENSURE(md == 1 || md == target[td], "Attention: mask of shape ", shape_str(mask->shape),
                    " does not broadcast to the scores ", shape_str(target));
        mst[td] = md == 1 ? 0 : s;
        s *= md;
      }
      mp = mask->ptr<float>();
    } else if (mask) {
      MOPT_ENSURE(mask->numel() == 0 && (y.numel() == 0 || Sq * Skv == 0 || shape_numel(batch) == 0),
                  "Attention: an empty mask for non-empty scores");
    }
    if (y.numel() == 0) return;
    const float scale = !std::isnan(scale_) ? static_cast<float>(scale_) : 1.f / std::sqrt(static_cast<float>(D));
    const int64_t nbatch = shape_numel(batch);
    float* yp = y.ptr<float>();
    if (Skv == 0) {  // softmax over nothing: every weight sum is empty
      std::fill(yp, yp + y.numel(), 0.f);
      return;
    }
    // Keys past the last one a row can see take no part. A key is hidden by a mask of -inf or of a
    // float's lowest values (torch.finfo.min, GPT-2's causal mask): in a row with a visible key its
    // weight is exp(-3.4e38 - max), an exact 0. A row with nothing visible (its softmax spreads over
    // all the keys) keeps them all. seen(mrow) is one past the last visible key of a mask row.
    const int64_t mj = mp ? mst[nb + 1] : 0;
    auto seen = [&](const float* mrow) {
      constexpr float kHidden = -1e30f;
      constexpr int64_t kBlock = 16;
      auto hidden = [&](int64_t j) { return mrow[j * mj] <= kHidden; };  // NaN counts as visible
      // The last keys one by one: a row that ends with a visible key (no causal mask) stops at once.
      const int64_t stop = mj == 1 ? std::max<int64_t>(0, Skv - kBlock) : 0;
      int64_t j = Skv - 1;
      while (j >= stop && hidden(j)) --j;
      if (j < stop && stop > 0) {
        // The rest of a contiguous row forwards, 16 keys at a time: a stream the prefetcher follows,
        // compared as vectors. Read backwards key by key, GPT-2's causal mask came from L3 a line at
        // a time (1.1% of its run at 8 x 128).
        const int64_t whole = stop / kBlock * kBlock;
        j = stop - 1;
        while (j >= whole && hidden(j)) --j;
        if (j < whole) {
          int64_t last = -1;  // the last block with a visible key
          for (int64_t b = 0; b < whole; b += kBlock) {
            int any = 0;
            for (int64_t t = 0; t < kBlock; ++t) any |= !(mrow[b + t] <= kHidden);
            if (any) last = b;
          }
          j = last < 0 ? -1 : last + kBlock - 1;
          while (j >= 0 && hidden(j)) --j;
        }
      }
      return j < 0 ? Skv : j + 1;
    };
    // Each distinct row of the mask is scanned once, up front (every block scanned its rows again:
    // 6% of GPT-2's attention). Where the rows see different numbers of keys (a causal mask), the
    // rows run in blocks of two micro-kernel panels, each over the keys its rows see: about 60% of
    // the full work at 128 positions instead of 75% with 64-row blocks.
    // row_seen[mi * Sq + i]: row i of mask batch entry mi (the batch dimensions the mask varies on).
    std::vector<int64_t> row_seen;
    int64_t mask_entries = 1;
    for (size_t d = 0; d < nb; ++d)
      if (mst[d] != 0) mask_entries *= batch[d];
    auto mask_entry = [&](int64_t bi) {  // batch entry -> mask batch entry
      int64_t mi = 0, place = 1;
      for (int64_t d = static_cast<int64_t>(nb) - 1, rem = bi; d >= 0; --d) {
        const int64_t i = rem % batch[d];
        rem /= batch[d];
        if (mst[d] != 0) {
          mi += i * place;
          place *= batch[d];
        }
      }
      return mi;
    };
    bool trims = false;
    if (mj != 0) {
      row_seen.resize(static_cast<size_t>(mask_entries * Sq));
      // mask offset of mask batch entry mi: its batch indices, most significant first
      std::vector<int64_t> entry_off(static_cast<size_t>(mask_entries), 0);
      for (int64_t mi = 0; mi < mask_entries; ++mi)
        for (int64_t d = static_cast<int64_t>(nb) - 1, rem = mi; d >= 0; --d) {
          if (mst[d] == 0) continue;
          entry_off[mi] += (rem % batch[d]) * mst[d];
          rem /= batch[d];
        }
      ctx.pool().run_tasks(mask_entries, [&](int64_t mi, int) {
        int64_t* r = row_seen.data() + mi * Sq;
        for (int64_t i = 0; i < Sq; ++i) r[i] = mst[nb] == 0 && i > 0 ? r[0] : seen(mp + entry_off[mi] + i * mst[nb]);
      });
      for (int64_t mi = 0; mi < mask_entries && !trims; ++mi)
        for (int64_t i = 1; i < Sq && !trims; ++i) trims = row_seen[mi * Sq + i] != row_seen[mi * Sq];
    }
    const int64_t mr = gemm_.mr(), nblk = (Sq + kRowBlock - 1) / kRowBlock;
    // blocks of at most kRowBlock query rows, as even as whole micro-kernel panels allow: 197
    // queries run as 56 + 56 + 56 + 29 (14 full panels and one row), not 64 + 64 + 64 + 5 (a
    // short panel in every block)
    const int64_t row_block = trims ? std::min(2 * mr, Sq) : ((Sq + nblk - 1) / nblk + mr - 1) / mr * mr;
    const int64_t blocks = (Sq + row_block - 1) / row_block;
    ThreadPool& pool = ctx.pool();
    const int T = pool.num_threads();
    const size_t gemm_bytes = (gemm_.scratch_bytes(1) + 63) / 64 * 64;
    const int64_t skv_wide = (Skv + gemm_.nr() - 1) / gemm_.nr() * gemm_.nr();  // Skv in whole panels
    const size_t score_bytes = (static_cast<size_t>(row_block * skv_wide) * sizeof(float) + 63) / 64 * 64;
    // K^T and V of every batch entry are packed into GEMM panels once, up front, when more than one
    // row block of queries reads them (packing them per block repeated the gather for each block).
    const bool share = blocks > 1;
    const int nr = gemm_.nr();
    const size_t kt_floats = share ? GemmF32::packed_b_floats(D, Skv, nr) : 0;
    const size_t v_floats = share ? GemmF32::packed_b_floats(Skv, Dv, nr) : 0;
    const size_t per_batch = (kt_floats + v_floats + 15) / 16 * 16;
    // With a whole number of batch entries per thread (or many), each task is one entry: its K^T
    // and V are packed by the thread that reads them, into its own buffer, and stay in its cache
    // (packed all up front, GPT-2's 32 entries at 8 x 128 were 2 MB, read back from L3), with no
    // separate packing pass to wait for.
    const bool per_entry = share && (nbatch % T == 0 || nbatch >= 4 * T);
    const size_t packed_bytes = per_batch * static_cast<size_t>(!share ? 0 : per_entry ? T : nbatch) * sizeof(float);
    char* scratch = static_cast<char*>(ctx.scratch((gemm_bytes + score_bytes) * T + packed_bytes));
    float* packed = reinterpret_cast<float*>(scratch + (gemm_bytes + score_bytes) * T);
    auto offsets = [&](int64_t bi, int64_t* oq, int64_t* ok, int64_t* ov, int64_t* oo, int64_t* om) {
      *oq = *ok = *ov = *oo = *om = 0;
      for (int64_t d = static_cast<int64_t>(nb) - 1, rem = bi; d >= 0; --d) {
        const int64_t i = rem % batch[d];
        rem /= batch[d];
        *oq += i * qst[d];
        *ok += i * kst[d];
        *ov += i * vst[d];
        *oo += i * ost[d];
        *om += i * mst[d];
      }
    };
    auto kt_operand = [&](int64_t ok) {
      GemmB b;
      b.data = kp + ok;  // B(d, j) = K(j, d)
      b.rs = kst[nb + 1];
      b.cs = kst[nb];
      return b;
    };
    auto v_operand = [&](int64_t ov) {
      GemmB b;
      b.data = vp + ov;
      b.rs = vst[nb];
      b.cs = vst[nb + 1];
      return b;
    };
    auto pack_entry = [&](int64_t bi, float* dst) {
      int64_t oq, ok, ov, oo, om;
      offsets(bi, &oq, &ok, &ov, &oo, &om);
      // Every line of this entry's K and V rows requested up front: rows of a packed projection
      // are short runs 3 KB apart (GPT-2), which the hardware prefetcher does not follow, and the
      // projection just came from memory (stored past the caches): 4-5% of a cold attention.
      if (kst[nb + 1] == 1 && vst[nb + 1] == 1)
        for (int64_t j = 0; j < Skv; ++j) {
          const char* kr = reinterpret_cast<const char*>(kp + ok + j * kst[nb]);
          const char* vr = reinterpret_cast<const char*>(vp + ov + j * vst[nb]);
          for (int64_t b = 0; b < D * 4; b += 64) __builtin_prefetch(kr + b, 0, 2);
          for (int64_t b = 0; b < Dv * 4; b += 64) __builtin_prefetch(vr + b, 0, 2);
        }
      gemm_.pack_b_isa(kt_operand(ok), D, Skv, dst);
      GemmF32::pack_b(v_operand(ov), Skv, Dv, nr, dst + kt_floats);
    };
    if (share && !per_entry)
      pool.run_tasks(nbatch, [&](int64_t bi, int) { pack_entry(bi, packed + per_batch * static_cast<size_t>(bi)); });
    // Row block `blk` of batch entry bi, K^T and V packed at kt_packed (or null).
    auto block = [&](int64_t bi, int64_t blk, int thread, const float* kt_packed) {
      char* mine = scratch + (gemm_bytes + score_bytes) * thread;
      float* scores = reinterpret_cast<float*>(mine + gemm_bytes);
      const int64_t i0 = blk * row_block, rows = std::min(row_block, Sq - i0);
      int64_t oq, ok, ov, oo, om;
      offsets(bi, &oq, &ok, &ov, &oo, &om);
      int64_t kv = Skv;
      if (!row_seen.empty()) {
        const int64_t* r = row_seen.data() + mask_entry(bi) * Sq + i0;
        kv = *std::max_element(r, r + rows);
      }
      // scores = scale * Q[i0:i0+rows] K^T, over whole panels of keys where K^T is packed (its
      // panels are zero-padded): no edge tile computed aside and copied, no epilogue pass over it
      // (4 of a causal mask's 5 blocks at 128 positions end inside a panel). The softmax and P V
      // read the first kv.
      const int64_t kvn = share ? (kv + nr - 1) / nr * nr : kv;  // the scores' row stride
      GemmProblem p1;
      p1.M = rows;
      p1.N = kvn;
      p1.K = D;
      p1.a.data = qp + oq + i0 * qst[nb];
      p1.a.rs = qst[nb];
      p1.a.cs = qst[nb + 1];
      p1.b = kt_operand(ok);
      p1.b.packed = kt_packed;
      p1.c = scores;
      p1.ldc = kvn;
      p1.ep.alpha = scale;
      gemm_.run_serial(p1, mine);
      for (int64_t i = 0; i < rows; ++i) {
        float* row = scores + i * kvn;
        if (mp) {
          const float* mrow = mp + om + (i0 + i) * mst[nb];
          if (mj <= 1) {  // a row of the mask, or one value for the row: the ISA's vectors
            add_(cpu::BinaryOp::kAdd, row, mrow, row, kv, mj == 0 ? 2 : 0);
          } else {
            for (int64_t j = 0; j < kv; ++j) row[j] += mrow[j * mj];
          }
        }
        softmax_(row, row, kv, 0);
        // A softmax row is NaN everywhere or nowhere (its sum is shared): a row masked entirely
        // with -inf, or reading a NaN, becomes zeros.
        if (nan_to_zero_ && kv > 0 && std::isnan(row[0])) std::fill(row, row + kv, 0.f);
      }
      // out[i0:i0+rows] = P V
      GemmProblem p2;
      p2.M = rows;
      p2.N = Dv;
      p2.K = kv;
      p2.a.data = scores;
      p2.a.rs = kvn;
      p2.a.cs = 1;
      p2.b = v_operand(ov);
      p2.b.packed = share ? kt_packed + kt_floats : nullptr;
      p2.b.packed_k = Skv;
      p2.c = yp + oo + i0 * ost[nb];
      p2.ldc = ost[nb];
      p2.c_cs = ost[nb + 1];
      gemm_.run_serial(p2, mine);
    };
    if (per_entry) {
      pool.run_tasks(nbatch, [&](int64_t bi, int thread) {
        float* dst = packed + per_batch * static_cast<size_t>(thread);
        pack_entry(bi, dst);
        for (int64_t b = 0; b < blocks; ++b) block(bi, b, thread, dst);
      });
    } else {
      pool.run_tasks(nbatch * blocks, [&](int64_t task, int thread) {
        const int64_t bi = task / blocks;
        block(bi, task % blocks, thread, share ? packed + per_batch * static_cast<size_t>(bi) : nullptr);
      });
    }
  }

 private:
  GemmF32 gemm_;
  cpu::SoftmaxF32Fn softmax_ = nullptr;
  cpu::BinaryF32Fn add_ = nullptr;  // the mask added to a row of scores
  std::vector<int64_t> q_perm_, k_perm_, v_perm_, out_perm_;
  std::vector<int64_t> packed_;  // packed_qkv: Q, K, V widths in one projection (input 0)
  int64_t heads_ = 0;
  double scale_ = 0.0;  // NaN: 1/sqrt(D)
  bool nan_to_zero_ = false;
};

std::unique_ptr<Kernel> make_attention(const KernelInit& init) { return std::make_unique<AttentionKernel>(init); }

}  // namespace

void register_fused_attention_ops(OpRegistry& r) {
  r.add({"com.mopt", "Attention", {DType::kF32}, &make_attention, nullptr});
}

}  // namespace mopt
