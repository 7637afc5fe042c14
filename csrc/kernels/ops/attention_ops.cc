// ONNX Attention (opsets 23-25) in plain C++: 3-D or 4-D Q/K/V, multi-head, grouped-query and
// multi-query heads, past key/value caches (present_* outputs), bool or additive masks (padded with
// "masked" past their last column), offset-aware causal masking, sliding windows, nonpad_kv_seqlen,
// softcap, and every qk_matmul_output_mode. Scores, softmax and the weighted sum run in double; a query
// row whose keys are all masked gives zeros, as the spec says.
#include <limits>

#include "kernels/ops/typed.h"

namespace mopt {
namespace {

using typed::is_float_v;
using typed::load;
using typed::store;

constexpr double kNegInf = -std::numeric_limits<double>::infinity();

// Element (b, h, s, d) of a Q/K/V input given as 4-D (B, H, S, D) or 3-D (B, S, H * D).
struct HeadView {
  int64_t B = 0, H = 0, S = 0, D = 0;
  bool packed = false;  // 3-D
  int64_t at(int64_t b, int64_t h, int64_t s, int64_t d) const {
    return packed ? ((b * S + s) * H + h) * D + d : ((b * H + h) * S + s) * D + d;
  }
};

HeadView view_of(const Tensor& t, int64_t heads, const char* what) {
  HeadView v;
  if (t.rank() == 4) {
    v = {t.shape[0], t.shape[1], t.shape[2], t.shape[3], false};
  } else {
    MOPT_ENSURE(t.rank() == 3, what, " must be 3-D or 4-D, got shape ", shape_str(t.shape));
    MOPT_ENSURE(heads > 0, what, " is 3-D, so q_num_heads and kv_num_heads must be set");
    MOPT_ENSURE(t.shape[2] % heads == 0, what, " hidden size ", t.shape[2], " is not a multiple of ", heads,
                " heads");
    v = {t.shape[0], heads, t.shape[1], t.shape[2] / heads, true};
  }
  return v;
}

class AttentionKernel final : public Kernel {
 public:
  explicit AttentionKernel(const KernelInit& init) {
    const Attrs& a = init.attrs;
    has_scale_ = a.has("scale");
    scale_ = a.get_float("scale", 0.0);
    causal_ = a.get_int("is_causal", 0) != 0;
    qh_ = a.get_int("q_num_heads", 0);
    kvh_ = a.get_int("kv_num_heads", 0);
    softcap_ = a.get_float("softcap", 0.0);
    mode_ = a.get_int("qk_matmul_output_mode", 0);
    left_ = a.get_int("left_window_size", -1);
    right_ = a.get_int("right_window_size", -1);
    MOPT_CHECK(mode_ >= 0 && mode_ <= 3, ErrorCode::kInvalidModel, "qk_matmul_output_mode ", mode_, " is not 0..3");
    MOPT_CHECK(left_ >= -1 && right_ >= -1, ErrorCode::kInvalidModel, "window sizes must be -1 or >= 0");
    impl = "attention";
  }

  void run(KernelContext& ctx) override {
    const Tensor& q = ctx.in(0);
    const Tensor& k = ctx.in(1);
    const Tensor& v = ctx.in(2);
    const Tensor* mask = ctx.input(3);
    const Tensor* pk = ctx.input(4);
    const Tensor* pv = ctx.input(5);
    const Tensor* nonpad = ctx.input(6);
    MOPT_ENSURE(q.rank() == k.rank() && q.rank() == v.rank(), "Q, K and V must have the same rank, got ",
                shape_str(q.shape), ", ", shape_str(k.shape), ", ", shape_str(v.shape));
    MOPT_ENSURE(k.dtype == q.dtype && v.dtype == q.dtype, "Q, K and V types differ");
    MOPT_ENSURE((pk == nullptr) == (pv == nullptr), "past_key and past_value must be given together");
    MOPT_ENSURE(!(nonpad && pk), "nonpad_kv_seqlen cannot be combined with past_key/past_value");
    const HeadView Q = view_of(q, qh_, "Q"), K = view_of(k, kvh_, "K"), V = view_of(v, kvh_, "V");
    const int64_t B = Q.B, Hq = Q.H, Sq = Q.S, Dk = Q.D, Hk = K.H, Dv = V.D;
    MOPT_ENSURE(K.B == B && V.B == B, "batch sizes of Q, K, V differ");
    MOPT_ENSURE(K.D == Dk, "K head size ", K.D, " differs from Q head size ", Dk);
    MOPT_ENSURE(V.H == Hk && V.S == K.S, "V ", shape_str(v.shape), " does not match K ", shape_str(k.shape));
    MOPT_ENSURE(Hk > 0 && Hq % Hk == 0, "q heads ", Hq, " are not a multiple of kv heads ", Hk);
    int64_t P = 0;
    if (pk) {
      MOPT_ENSURE(pk->rank() == 4 && pv->rank() == 4, "past_key and past_value must be 4-D");
      P = pk->shape[2];
      MOPT_ENSURE(pk->shape == Shape({B, Hk, P, Dk}), "past_key ", shape_str(pk->shape), " must be ",
                  shape_str(Shape{B, Hk, P, Dk}));
      MOPT_ENSURE(pv->shape == Shape({B, Hk, P, Dv}), "past_value ", shape_str(pv->shape), " must be ",
                  shape_str(Shape{B, Hk, P, Dv}));
      MOPT_ENSURE(pk->dtype == q.dtype && pv->dtype == q.dtype, "past_key/past_value types differ from Q");
    }
    const int64_t S = P + K.S;  // total kv length
    std::vector<int64_t> np;
    if (nonpad) {
      MOPT_ENSURE(nonpad->dtype == DType::kI64 || nonpad->dtype == DType::kI32, "nonpad_kv_seqlen must be int64");
      MOPT_ENSURE(nonpad->numel() == B, "nonpad_kv_seqlen must have ", B, " values, got shape ",
                  shape_str(nonpad->shape));
      for (int64_t b = 0; b < B; ++b) np.push_back(typed::index_at(*nonpad, b));
    }
    // the mask, right-aligned to (B, Hq, Sq, kv): strides (0 = broadcast) and its own kv length
    std::vector<int64_t> ms(4, 0);
    int64_t mkv = 0;
    if (mask) {
      MOPT_ENSURE(mask->rank() >= 1 && mask->rank() <= 4, "attn_mask must have rank 1 to 4, got ",
                  shape_str(mask->shape));
      MOPT_ENSURE(mask->dtype == DType::kBool || mask->dtype == q.dtype, "attn_mask must be bool or ",
                  dtype_name(q.dtype), ", got ", dtype_name(mask->dtype));
      const Shape full = {B, Hq, Sq, S};
      const std::vector<int64_t> cs = contiguous_strides(mask->shape);
      const int64_t off = 4 - mask->rank();
      for (int64_t d = 0; d < mask->rank(); ++d) {
        const int64_t m = mask->shape[d], want = full[off + d];
        if (off + d == 3) {
          MOPT_ENSURE(m <= S, "attn_mask has ", m, " key columns, more than the ", S, " keys");
          mkv = m;
        } else {
          MOPT_ENSURE(m == 1 || m == want, "attn_mask ", shape_str(mask->shape), " does not broadcast to ",
                      shape_str(full));
        }
        ms[off + d] = m == 1 && off + d != 3 ? 0 : cs[d];
      }
    }
    const bool want_qk = ctx.num_outputs() > 3 && ctx.output_used(3);
    typed::dispatch(q.dtype, "Attention", [&](auto tag) {
      using T = typename decltype(tag)::type;
      if constexpr (!is_float_v<T>) {
        fail(ErrorCode::kUnsupported, "Attention of ", dtype_name(q.dtype), " has no native kernel");
      } else {
        // present_key / present_value: the past followed by the new keys and values, (B, Hk, S, D)
        // (in scratch memory when the node has no such output)
        auto buffer = [&](int idx, const Shape& shape) -> T* {
          if (ctx.num_outputs() > idx) return ctx.output(idx, shape).template ptr<T>();
          return static_cast<T*>(ctx.scratch(static_cast<size_t>(shape_numel(shape)) * sizeof(T)));
        };
        T* kp = buffer(1, {B, Hk, S, Dk});
        T* vp = buffer(2, {B, Hk, S, Dv});
        for (int64_t b = 0; b < B; ++b)
          for (int64_t h = 0; h < Hk; ++h)
            for (int64_t s = 0; s < S; ++s) {
              for (int64_t d = 0; d < Dk; ++d)
                kp[((b * Hk + h) * S + s) * Dk + d] =
                    s < P ? pk->ptr<T>()[((b * Hk + h) * P + s) * Dk + d] : k.ptr<T>()[K.at(b, h, s - P, d)];
              for (int64_t d = 0; d < Dv; ++d)
                vp[((b * Hk + h) * S + s) * Dv + d] =
                    s < P ? pv->ptr<T>()[((b * Hk + h) * P + s) * Dv + d] : v.ptr<T>()[V.at(b, h, s - P, d)];
            }
        Shape yshape = q.rank() == 4 ? Shape{B, Hq, Sq, Dv} : Shape{B, Sq, Hq * Dv};
        Tensor& y = ctx.output(0, yshape);
        T* yp = y.ptr<T>();
        T* qkp = want_qk ? ctx.output(3, {B, Hq, Sq, S}).ptr<T>() : nullptr;
        const HeadView Y = {B, Hq, Sq, Dv, q.rank() == 3};
        const double scale = has_scale_ ? scale_ : 1.0 / std::sqrt(static_cast<double>(Dk));
        const T* qp = q.ptr<T>();
        const int64_t group = Hq / Hk;
        ctx.pool().parallel_for(B * Hq * Sq, 1, [&](int64_t lo, int64_t hi) {
          std::vector<double> score(static_cast<size_t>(S)), bias(static_cast<size_t>(S)), acc(static_cast<size_t>(Dv));
          for (int64_t t = lo; t < hi; ++t) {
            const int64_t b = t / (Hq * Sq), h = (t / Sq) % Hq, i = t % Sq, hk = h / group;
            const int64_t offset = pk ? P : nonpad ? np[b] - Sq : 0;
            double bmax = kNegInf;
            for (int64_t j = 0; j < S; ++j) {
              double bj = 0;
              if (mask) {
                if (j >= mkv) {
                  bj = kNegInf;
                } else {
                  const int64_t mo = b * ms[0] + h * ms[1] + i * ms[2] + j * ms[3];
                  if (mask->dtype == DType::kBool) bj = mask->ptr<uint8_t>()[mo] ? 0.0 : kNegInf;
                  else bj = static_cast<double>(load(mask->ptr<T>()[mo]));
                }
              }
              const int64_t diff = i + offset - j;  // how far key j lies before query i
              if (causal_ && diff < 0) bj += kNegInf;
              if (left_ >= 0 && diff > left_) bj += kNegInf;
              if (right_ >= 0 && -diff > right_) bj += kNegInf;
              if (nonpad && j >= np[b]) bj += kNegInf;
              bias[j] = bj;
              bmax = std::max(bmax, bj);
              double s = 0;
              for (int64_t d = 0; d < Dk; ++d)
                s += static_cast<double>(load(qp[Q.at(b, h, i, d)])) *
                     static_cast<double>(load(kp[((b * Hk + hk) * S + j) * Dk + d]));
              s *= scale;
              if (qkp && mode_ == 0) qkp[t * S + j] = store<T>(s);
              if (softcap_ > 0) s = softcap_ * std::tanh(s / softcap_);
              if (qkp && mode_ == 1) qkp[t * S + j] = store<T>(s);
              s += bj;
              if (qkp && mode_ == 2) qkp[t * S + j] = store<T>(s);
              score[j] = s;
            }
            const bool all_masked = S == 0 || (std::isinf(bmax) && bmax < 0);
            double m = kNegInf;
            for (int64_t j = 0; j < S; ++j) m = std::max(m, score[j]);
            if (std::isinf(m) && m < 0) m = 0;
            double sum = 0;
            for (int64_t j = 0; j < S; ++j) {
              score[j] = std::exp(score[j] - m);
              sum += score[j];
            }
            if (sum == 0) sum = 1;
            std::fill(acc.begin(), acc.end(), 0.0);
            for (int64_t j = 0; j < S; ++j) {
              const double p = all_masked ? 0.0 : score[j] / sum;
              if (qkp && mode_ == 3) qkp[t * S + j] = store<T>(p);
              const T* vr = vp + ((b * Hk + hk) * S + j) * Dv;
              for (int64_t d = 0; d < Dv; ++d) acc[d] += p * static_cast<double>(load(vr[d]));
            }
            for (int64_t d = 0; d < Dv; ++d) yp[Y.at(b, h, i, d)] = store<T>(acc[d]);
          }
        });
      }
    });
  }

 private:
  bool has_scale_, causal_;
  double scale_, softcap_;
  int64_t qh_, kvh_, mode_, left_, right_;
};

std::unique_ptr<Kernel> make_attention(const KernelInit& i) { return std::make_unique<AttentionKernel>(i); }

}  // namespace

void register_attention_ops(OpRegistry& r) {
  r.add({"", "Attention", {DType::kF32, DType::kF64, DType::kF16}, &make_attention});
}

}  // namespace mopt
