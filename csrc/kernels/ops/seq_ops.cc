// Sequence-model ops in plain C++ (float types, arithmetic in double): CausalConvWithState (a
// depthwise causal 1-D convolution carrying its last k-1 inputs as state), LinearAttention (the
// linear / gated / delta / gated-delta recurrent state updates, grouped heads) and RotaryEmbedding
// (3-D or 4-D input, optional position_ids, interleaved or half-split pairs, partial rotary dims).
#include <limits>

#include "kernels/ops/typed.h"

namespace mopt {
namespace {

using typed::is_float_v;
using typed::load;
using typed::store;

template <class T>
double ld(const T* p, int64_t i) {
  return static_cast<double>(load(p[i]));
}

// ---- CausalConvWithState ------------------------------------------------------------------------------

class CausalConvKernel final : public Kernel {
 public:
  explicit CausalConvKernel(const KernelInit& init) {
    const std::string act = init.attrs.get_string("activation", "none");
    MOPT_CHECK(act == "none" || act == "silu" || act == "swish", ErrorCode::kInvalidModel, "activation '", act,
               "' is not none, silu or swish");
    silu_ = act != "none";
    impl = "causal_conv_with_state";
  }
  void run(KernelContext& ctx) override {
    const Tensor& x = ctx.in(0);
    const Tensor& w = ctx.in(1);
    const Tensor* bias = ctx.input(2);
    const Tensor* past = ctx.input(3);
    MOPT_ENSURE(x.rank() == 3, "input must be (batch, channels, length), got ", shape_str(x.shape));
    const int64_t B = x.shape[0], C = x.shape[1], L = x.shape[2];
    MOPT_ENSURE(w.rank() == 3 && w.shape[0] == C && w.shape[1] == 1 && w.shape[2] >= 1, "weight must be (", C,
                ", 1, k), got ", shape_str(w.shape));
    const int64_t k = w.shape[2], P = k - 1;
    MOPT_ENSURE(w.dtype == x.dtype, "weight type differs from the input");
    if (bias) MOPT_ENSURE(bias->numel() == C && bias->dtype == x.dtype, "bias must hold ", C, " values of the input type");
    if (past)
      MOPT_ENSURE(past->shape == Shape({B, C, P}) && past->dtype == x.dtype, "past_state must be ",
                  shape_str(Shape{B, C, P}), ", got ", shape_str(past->shape));
    typed::dispatch(x.dtype, "CausalConvWithState", [&](auto tag) {
      using T = typename decltype(tag)::type;
      if constexpr (!is_float_v<T>) {
        fail(ErrorCode::kUnsupported, "no native kernel for ", dtype_name(x.dtype), " inputs");
      } else {
        const T* xp = x.ptr<T>();
        const T* wp = w.ptr<T>();
        // padded[b, c, i], i in [0, P + L): the state, then the input
        auto padded = [&](int64_t b, int64_t c, int64_t i) -> double {
          if (i < P) return past ? ld(past->ptr<T>(), (b * C + c) * P + i) : 0.0;
          return ld(xp, (b * C + c) * L + i - P);
        };
        Tensor& y = ctx.output(0, {B, C, L});
        T* yp = y.ptr<T>();
        for (int64_t b = 0; b < B; ++b)
          for (int64_t c = 0; c < C; ++c)
            for (int64_t t = 0; t < L; ++t) {
              double s = bias ? ld(bias->ptr<T>(), c) : 0.0;
              for (int64_t j = 0; j < k; ++j) s += ld(wp, c * k + j) * padded(b, c, t + j);
              if (silu_) s = static_cast<double>(load(store<T>(s)));  // the reference rounds the conv first
              yp[(b * C + c) * L + t] = store<T>(silu_ ? s / (1.0 + std::exp(-s)) : s);
            }
        if (ctx.num_outputs() > 1 && ctx.output_used(1)) {
          Tensor& st = ctx.output(1, {B, C, P});
          T* sp = st.ptr<T>();
          for (int64_t b = 0; b < B; ++b)
            for (int64_t c = 0; c < C; ++c)
              for (int64_t i = 0; i < P; ++i) sp[(b * C + c) * P + i] = store<T>(padded(b, c, L + i));
        }
      }
    });
  }

 private:
  bool silu_;
};

// ---- LinearAttention ----------------------------------------------------------------------------------

class LinearAttentionKernel final : public Kernel {
 public:
  explicit LinearAttentionKernel(const KernelInit& init) {
    qh_ = init.attrs.get_int("q_num_heads", 0);
    kvh_ = init.attrs.get_int("kv_num_heads", 0);
    MOPT_CHECK(qh_ > 0 && kvh_ > 0 && qh_ % kvh_ == 0, ErrorCode::kInvalidModel, "q_num_heads (", qh_,
               ") must be a positive multiple of kv_num_heads (", kvh_, ")");
    scale_ = init.attrs.get_float("scale", 0.0);
    const std::string rule = init.attrs.get_string("update_rule", "gated_delta");
    MOPT_CHECK(rule == "linear" || rule == "gated" || rule == "delta" || rule == "gated_delta", ErrorCode::kInvalidModel,
               "update_rule '", rule, "' is not linear, gated, delta or gated_delta");
    gating_ = rule == "gated" || rule == "gated_delta";
    delta_ = rule == "delta" || rule == "gated_delta";
    impl = "linear_attention";
  }
  void run(KernelContext& ctx) override {
    const Tensor& q = ctx.in(0);
    const Tensor& k = ctx.in(1);
    const Tensor& v = ctx.in(2);
    const Tensor* past = ctx.input(3);
    const Tensor* decay = ctx.input(4);
    const Tensor* beta = ctx.input(5);
    MOPT_ENSURE(gating_ == (decay != nullptr), "this update_rule ", gating_ ? "needs" : "forbids", " the decay input");
    MOPT_ENSURE(delta_ == (beta != nullptr), "this update_rule ", delta_ ? "needs" : "forbids", " the beta input");
    for (const Tensor* t : {&q, &k, &v})
      MOPT_ENSURE(t->rank() == 3 && t->dtype == q.dtype, "query, key and value must be 3-D (B, T, H*D) of one type");
    const int64_t B = q.shape[0], T = q.shape[1];
    MOPT_ENSURE(q.shape[2] % qh_ == 0 && v.shape[2] % kvh_ == 0, "hidden sizes are not multiples of the heads");
    const int64_t dk = q.shape[2] / qh_, dv = v.shape[2] / kvh_, group = qh_ / kvh_;
    MOPT_ENSURE(k.shape[0] == B && k.shape[1] == T && k.shape[2] == kvh_ * dk, "key ", shape_str(k.shape),
                " must be (", B, ", ", T, ", ", kvh_ * dk, ")");
    MOPT_ENSURE(v.shape[0] == B && v.shape[1] == T, "value ", shape_str(v.shape), " does not match query");
    int64_t dlast = 0, blast = 0;
    if (decay) {
      dlast = decay->shape.back();
      MOPT_ENSURE(decay->rank() == 3 && decay->shape[0] == B && decay->shape[1] == T && (dlast == kvh_ || dlast == kvh_ * dk),
                  "decay ", shape_str(decay->shape), " must be (", B, ", ", T, ", ", kvh_, " or ", kvh_ * dk, ")");
    }
    if (beta) {
      blast = beta->shape.back();
      MOPT_ENSURE(beta->rank() == 3 && beta->shape[0] == B && beta->shape[1] == T && (blast == kvh_ || blast == 1),
                  "beta ", shape_str(beta->shape), " must be (", B, ", ", T, ", ", kvh_, " or 1)");
    }
    if (past)
      MOPT_ENSURE(past->shape == Shape({B, kvh_, dk, dv}), "past_state ", shape_str(past->shape), " must be ",
                  shape_str(Shape{B, kvh_, dk, dv}));
    const double scale = scale_ != 0.0 ? scale_ : 1.0 / std::sqrt(static_cast<double>(dk));
    typed::dispatch(q.dtype, "LinearAttention", [&](auto tag) {
      using T_ = typename decltype(tag)::type;
      if constexpr (!is_float_v<T_>) {
        fail(ErrorCode::kUnsupported, "no native kernel for ", dtype_name(q.dtype), " inputs");
      } else {
        Tensor& y = ctx.output(0, {B, T, qh_ * dv});
        T_* yp = y.ptr<T_>();
        std::vector<double> S(static_cast<size_t>(dk * dv)), vt(static_cast<size_t>(dv));
        std::vector<double> states(static_cast<size_t>(B * kvh_ * dk * dv));
        for (int64_t b = 0; b < B; ++b)
          for (int64_t h = 0; h < kvh_; ++h) {
            for (int64_t i = 0; i < dk * dv; ++i)
              S[i] = past ? static_cast<double>(scalar_as_typed(*past, ((b * kvh_ + h) * dk * dv) + i)) : 0.0;
            for (int64_t t = 0; t < T; ++t) {
              const int64_t kb = (b * T + t) * kvh_ * dk + h * dk, vb = (b * T + t) * kvh_ * dv + h * dv;
              if (gating_) {
                for (int64_t d = 0; d < dk; ++d) {
                  const int64_t gi = (b * T + t) * dlast + (dlast == kvh_ ? h : h * dk + d);
                  const double g = std::exp(static_cast<double>(scalar_as_typed(*decay, gi)));
                  for (int64_t m = 0; m < dv; ++m) S[d * dv + m] *= g;
                }
              }
              for (int64_t m = 0; m < dv; ++m) vt[m] = ld(v.ptr<T_>(), vb + m);
              if (delta_) {
                const double bt = static_cast<double>(scalar_as_typed(*beta, (b * T + t) * blast + (blast == 1 ? 0 : h)));
                for (int64_t m = 0; m < dv; ++m) {
                  double r = 0;
                  for (int64_t d = 0; d < dk; ++d) r += S[d * dv + m] * ld(k.ptr<T_>(), kb + d);
                  vt[m] = bt * (vt[m] - r);
                }
              }
              for (int64_t d = 0; d < dk; ++d) {
                const double kd = ld(k.ptr<T_>(), kb + d);
                for (int64_t m = 0; m < dv; ++m) S[d * dv + m] += kd * vt[m];
              }
              for (int64_t g = 0; g < group; ++g) {
                const int64_t hq = h * group + g, qb = (b * T + t) * qh_ * dk + hq * dk;
                for (int64_t m = 0; m < dv; ++m) {
                  double o = 0;
                  for (int64_t d = 0; d < dk; ++d) o += ld(q.ptr<T_>(), qb + d) * S[d * dv + m];
                  yp[(b * T + t) * qh_ * dv + hq * dv + m] = store<T_>(scale * o);
                }
              }
            }
            std::copy(S.begin(), S.end(), states.begin() + (b * kvh_ + h) * dk * dv);
          }
        if (ctx.num_outputs() > 1 && ctx.output_used(1)) {
          const DType st = past ? past->dtype : q.dtype;
          Tensor& ps = ctx.output(1, {B, kvh_, dk, dv}, st);
          typed::dispatch(ps.dtype, "present_state", [&](auto stag) {
            using S_ = typename decltype(stag)::type;
            if constexpr (std::is_same_v<S_, bool>) {
              fail(ErrorCode::kUnsupported, "a bool state has no native kernel");
            } else {
              for (size_t i = 0; i < states.size(); ++i) ps.ptr<S_>()[i] = store<S_>(states[i]);
            }
          });
        }
      }
    });
  }

 private:
  static double scalar_as_typed(const Tensor& t, int64_t i) {
    double v = 0;
    typed::dispatch(t.dtype, "LinearAttention", [&](auto tag) {
      using T = typename decltype(tag)::type;
      v = static_cast<double>(load(t.ptr<T>()[i]));
    });
    return v;
  }
  int64_t qh_, kvh_;
  double scale_;
  bool gating_, delta_;
};

// ---- RotaryEmbedding ----------------------------------------------------------------------------------

class RotaryKernel final : public Kernel {
 public:
  explicit RotaryKernel(const KernelInit& init) {
    interleaved_ = init.attrs.get_int("interleaved", 0) != 0;
    rdim_ = init.attrs.get_int("rotary_embedding_dim", 0);
    heads_ = init.attrs.get_int("num_heads", 0);
    impl = "rotary_embedding";
  }
  void run(KernelContext& ctx) override {
    const Tensor& x = ctx.in(0);
    const Tensor& cosc = ctx.in(1);
    const Tensor& sinc = ctx.in(2);
    const Tensor* pos = ctx.input(3);
    MOPT_ENSURE(x.rank() == 3 || x.rank() == 4, "input must be 3-D or 4-D, got ", shape_str(x.shape));
    int64_t B, S, H, D;
    if (x.rank() == 4) {
      B = x.shape[0];
      H = x.shape[1];
      S = x.shape[2];
      D = x.shape[3];
    } else {
      MOPT_ENSURE(heads_ > 0 && x.shape[2] % heads_ == 0, "3-D input needs num_heads dividing the hidden size ",
                  x.shape[2]);
      B = x.shape[0];
      S = x.shape[1];
      H = heads_;
      D = x.shape[2] / heads_;
    }
    const int64_t rd = rdim_ == 0 ? D : rdim_;
    MOPT_ENSURE(rd > 0 && rd <= D && rd % 2 == 0, "rotary_embedding_dim ", rd, " must be even and at most the head size ",
                D);
    const int64_t half = rd / 2;
    MOPT_ENSURE(cosc.shape.back() == half && sinc.shape.back() == half, "cos_cache and sin_cache must end in ", half,
                " values, got ", shape_str(cosc.shape), " and ", shape_str(sinc.shape));
    MOPT_ENSURE(cosc.shape == sinc.shape && cosc.dtype == x.dtype && sinc.dtype == x.dtype,
                "cos_cache and sin_cache must have one shape and the input's type");
    std::vector<int64_t> row(static_cast<size_t>(B * S));  // cache row of each (b, s)
    if (pos) {
      MOPT_ENSURE(cosc.rank() == 2, "with position_ids the caches must be 2-D, got ", shape_str(cosc.shape));
      MOPT_ENSURE(pos->numel() == B * S, "position_ids must be (", B, ", ", S, "), got ", shape_str(pos->shape));
      for (int64_t i = 0; i < B * S; ++i) {
        const int64_t p = typed::index_at(*pos, i);
        MOPT_ENSURE(p >= 0 && p < cosc.shape[0], "position id ", p, " is out of range [0, ", cosc.shape[0], ")");
        row[i] = p;
      }
    } else {
      MOPT_ENSURE(cosc.rank() == 3 && cosc.shape[0] == B && cosc.shape[1] == S, "without position_ids the caches must be (",
                  B, ", ", S, ", ", half, "), got ", shape_str(cosc.shape));
      for (int64_t i = 0; i < B * S; ++i) row[i] = i;
    }
    Tensor& y = ctx.output(0, x.shape);
    typed::dispatch(x.dtype, "RotaryEmbedding", [&](auto tag) {
      using T = typename decltype(tag)::type;
      if constexpr (!is_float_v<T>) {
        fail(ErrorCode::kUnsupported, "no native kernel for ", dtype_name(x.dtype), " inputs");
      } else {
        const T* xp = x.ptr<T>();
        T* yp = y.ptr<T>();
        const T* cp = cosc.ptr<T>();
        const T* sp = sinc.ptr<T>();
        for (int64_t b = 0; b < B; ++b)
          for (int64_t s = 0; s < S; ++s)
            for (int64_t h = 0; h < H; ++h) {
              const int64_t base = x.rank() == 4 ? ((b * H + h) * S + s) * D : ((b * S + s) * H + h) * D;
              const int64_t cr = row[b * S + s] * half;
              for (int64_t i = 0; i < half; ++i) {
                const int64_t i1 = interleaved_ ? 2 * i : i, i2 = interleaved_ ? 2 * i + 1 : i + half;
                const double c = ld(cp, cr + i), sn = ld(sp, cr + i);
                const double x1 = ld(xp, base + i1), x2 = ld(xp, base + i2);
                yp[base + i1] = store<T>(c * x1 - sn * x2);
                yp[base + i2] = store<T>(sn * x1 + c * x2);
              }
              for (int64_t d = rd; d < D; ++d) yp[base + d] = xp[base + d];
            }
      }
    });
  }

 private:
  bool interleaved_;
  int64_t rdim_, heads_;
};

std::unique_ptr<Kernel> make_causal_conv(const KernelInit& i) { return std::make_unique<CausalConvKernel>(i); }
std::unique_ptr<Kernel> make_linear_attention(const KernelInit& i) { return std::make_unique<LinearAttentionKernel>(i); }
std::unique_ptr<Kernel> make_rotary(const KernelInit& i) { return std::make_unique<RotaryKernel>(i); }

}  // namespace

void register_seq_ops(OpRegistry& r) {
  const std::vector<DType> floats = {DType::kF32, DType::kF64, DType::kF16};
  r.add({"", "CausalConvWithState", floats, &make_causal_conv});
  r.add({"", "LinearAttention", floats, &make_linear_attention});
  r.add({"", "RotaryEmbedding", floats, &make_rotary});
}

}  // namespace mopt
