// RNN, GRU and LSTM (ONNX opset 14/22) in plain C++ for float32 and float64, arithmetic in double.
// One kernel for the three: the input projection X·Wᵀ + Wb is done for every time step up front, then
// each direction steps through time with the recurrent projection H·Rᵀ. Directions forward, reverse
// and bidirectional; optional B, sequence_lens (steps past a sequence's length output zeros and leave
// the state alone, so Y_h / Y_c hold the last valid step), initial_h / initial_c, LSTM peepholes P and
// input_forget, GRU linear_before_reset, clip (on every activation's input), layout 0 and 1, and the
// spec's activation functions. activation_alpha / activation_beta are consumed in the order of the
// activations, each list only by the functions that take that parameter (as onnxruntime does).
#include <cctype>
#include <cmath>
#include <string>
#include <vector>

#include "kernels/ops/typed.h"

namespace mopt {
namespace {

using typed::load;
using typed::store;

enum class Act { kRelu, kTanh, kSigmoid, kAffine, kLeakyRelu, kThresholdedRelu, kScaledTanh, kHardSigmoid, kElu,
                 kSoftsign, kSoftplus };

struct Activation {
  Act kind = Act::kTanh;
  double alpha = 0, beta = 0;
  double operator()(double x) const {
    switch (kind) {
      case Act::kRelu: return x > 0 ? x : 0.0;
      case Act::kTanh: return std::tanh(x);
      case Act::kSigmoid: return 1.0 / (1.0 + std::exp(-x));
      case Act::kAffine: return alpha * x + beta;
      case Act::kLeakyRelu: return x >= 0 ? x : alpha * x;
      case Act::kThresholdedRelu: return x > alpha ? x : 0.0;
      case Act::kScaledTanh: return alpha * std::tanh(beta * x);
      case Act::kHardSigmoid: return std::max(0.0, std::min(1.0, alpha * x + beta));
      case Act::kElu: return x >= 0 ? x : alpha * (std::exp(x) - 1.0);
      case Act::kSoftsign: return x / (1.0 + std::fabs(x));
      case Act::kSoftplus: return x > 30 ? x : std::log1p(std::exp(x));
    }
    return x;
  }
};

// Which of alpha / beta a function takes, and their defaults (the ONNX op of the same name).
bool parse_act(const std::string& name, Act* kind, int* params, double* da, double* db) {
  struct Row {
    const char* name;
    Act kind;
    int params;  // 0 none, 1 alpha, 2 alpha and beta
    double a, b;
  };
  static const Row rows[] = {
      {"relu", Act::kRelu, 0, 0, 0},           {"tanh", Act::kTanh, 0, 0, 0},
      {"sigmoid", Act::kSigmoid, 0, 0, 0},     {"affine", Act::kAffine, 2, 1.0, 0.0},
      {"leakyrelu", Act::kLeakyRelu, 1, 0.01, 0}, {"thresholdedrelu", Act::kThresholdedRelu, 1, 1.0, 0},
      {"scaledtanh", Act::kScaledTanh, 2, 1.0, 1.0}, {"hardsigmoid", Act::kHardSigmoid, 2, 0.2, 0.5},
      {"elu", Act::kElu, 1, 1.0, 0},           {"softsign", Act::kSoftsign, 0, 0, 0},
      {"softplus", Act::kSoftplus, 0, 0, 0},
  };
  std::string low;
  for (char c : name) low += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  for (const Row& r : rows)
    if (low == r.name) {
      *kind = r.kind;
      *params = r.params;
      *da = r.a;
      *db = r.b;
      return true;
    }
  return false;
}

enum class Cell { kRNN, kGRU, kLSTM };

class RecurrentKernel final : public Kernel {
 public:
  RecurrentKernel(const KernelInit& init, Cell cell) : cell_(cell) {
    const char* op = cell == Cell::kRNN ? "RNN" : cell == Cell::kGRU ? "GRU" : "LSTM";
    gates_ = cell == Cell::kRNN ? 1 : cell == Cell::kGRU ? 3 : 4;
    const std::string dir = init.attrs.get_string("direction", "forward");
    MOPT_CHECK(dir == "forward" || dir == "reverse" || dir == "bidirectional", ErrorCode::kInvalidModel, op,
               " direction '", dir, "' is not one of forward, reverse, bidirectional");
    reverse_ = dir == "reverse";
    dirs_ = dir == "bidirectional" ? 2 : 1;
    hidden_ = init.attrs.get_int("hidden_size", -1);
    MOPT_CHECK(!init.attrs.has("hidden_size") || hidden_ > 0, ErrorCode::kInvalidModel, op,
               " hidden_size must be positive, got ", hidden_);
    layout_ = init.attrs.get_int("layout", 0);
    MOPT_CHECK(layout_ == 0 || layout_ == 1, ErrorCode::kInvalidModel, op, " layout must be 0 or 1, got ", layout_);
    has_clip_ = init.attrs.has("clip");
    clip_ = init.attrs.get_float("clip", 0.0);
    MOPT_CHECK(!has_clip_ || clip_ >= 0, ErrorCode::kInvalidModel, op, " clip must be >= 0, got ", clip_);
    lbr_ = cell == Cell::kGRU && init.attrs.get_int("linear_before_reset", 0) != 0;
    input_forget_ = cell == Cell::kLSTM && init.attrs.get_int("input_forget", 0) != 0;

    // activations: per direction, RNN f (Tanh), GRU f, g (Sigmoid, Tanh), LSTM f, g, h (Sigmoid, Tanh, Tanh)
    const size_t per = cell == Cell::kRNN ? 1 : cell == Cell::kGRU ? 2 : 3;
    std::vector<std::string> names;
    if (const Json* a = init.attrs.get("activations")) {
      for (const Json& j : a->as_array("activations")) names.push_back(j.as_string("activations"));
    }
    if (names.empty()) {
      const std::vector<std::string> dflt = cell == Cell::kRNN   ? std::vector<std::string>{"Tanh"}
                                            : cell == Cell::kGRU ? std::vector<std::string>{"Sigmoid", "Tanh"}
                                                                 : std::vector<std::string>{"Sigmoid", "Tanh", "Tanh"};
      for (int d = 0; d < dirs_; ++d) names.insert(names.end(), dflt.begin(), dflt.end());
    } else if (names.size() == per && dirs_ == 2) {
      names.insert(names.end(), names.begin(), names.end());  // one set given: both directions use it
    }
    MOPT_CHECK(names.size() == per * static_cast<size_t>(dirs_), ErrorCode::kInvalidModel, op, " with direction ",
               dir, " needs ", per * dirs_, " activations (", per, " per direction), got ", names.size());
    const std::vector<double> alphas = init.attrs.get_floats("activation_alpha");
    const std::vector<double> betas = init.attrs.get_floats("activation_beta");
    size_t ai = 0, bi = 0;
    for (const std::string& n : names) {
      Activation act;
      int params = 0;
      MOPT_CHECK(parse_act(n, &act.kind, &params, &act.alpha, &act.beta), ErrorCode::kUnsupported, op,
                 " activation '", n, "' is not supported");
      if (params >= 1 && ai < alphas.size()) act.alpha = alphas[ai++];
      if (params >= 2 && bi < betas.size()) act.beta = betas[bi++];
      acts_.push_back(act);
    }
    per_ = static_cast<int>(per);
    op_ = op;
    impl = cell == Cell::kRNN ? "rnn" : cell == Cell::kGRU ? "gru" : "lstm";
  }

  void run(KernelContext& ctx) override {
    const Tensor& x = ctx.in(0);
    const Tensor& w = ctx.in(1);
    const Tensor& r = ctx.in(2);
    const Tensor* b = ctx.input(3);
    const Tensor* lens = ctx.num_inputs() > 4 ? ctx.input(4) : nullptr;
    const Tensor* h0 = ctx.num_inputs() > 5 ? ctx.input(5) : nullptr;
    const Tensor* c0 = cell_ == Cell::kLSTM && ctx.num_inputs() > 6 ? ctx.input(6) : nullptr;
    const Tensor* p = cell_ == Cell::kLSTM && ctx.num_inputs() > 7 ? ctx.input(7) : nullptr;
    const int64_t G = gates_, D = dirs_;

    MOPT_ENSURE(x.rank() == 3, op_, " X must be 3-D ([seq, batch, input] for layout 0, [batch, seq, input] for layout 1), got ",
                shape_str(x.shape));
    const int64_t S = layout_ ? x.shape[1] : x.shape[0];
    const int64_t N = layout_ ? x.shape[0] : x.shape[1];
    const int64_t I = x.shape[2];
    MOPT_ENSURE(w.rank() == 3, op_, " W must be 3-D [num_directions, ", G, "*hidden_size, input_size], got ",
                shape_str(w.shape));
    int64_t H = hidden_;
    if (H < 0) {
      MOPT_ENSURE(w.shape[1] % G == 0 && w.shape[1] > 0, op_, " W's dimension 1 (", w.shape[1],
                  ") must be a positive multiple of the gate count ", G);
      H = w.shape[1] / G;
    }
    const Shape wshape = {D, G * H, I};
    MOPT_ENSURE(w.shape == wshape, op_, " W must have shape [num_directions, ", G, "*hidden_size, input_size] = ",
                shape_str(wshape), " (direction ", D == 2 ? "bidirectional" : reverse_ ? "reverse" : "forward",
                ", hidden_size ", H, ", input_size ", I, " from X), got ", shape_str(w.shape));
    const Shape rshape = {D, G * H, H};
    MOPT_ENSURE(r.shape == rshape, op_, " R must have shape [num_directions, ", G,
                "*hidden_size, hidden_size] = ", shape_str(rshape), ", got ", shape_str(r.shape));
    for (const Tensor* t : {&w, &r, b, h0, c0, p})
      if (t) MOPT_ENSURE(t->dtype == x.dtype, op_, " inputs must all be ", dtype_name(x.dtype), ", got ", dtype_name(t->dtype));
    if (b) {
      const Shape bshape = {D, 2 * G * H};
      MOPT_ENSURE(b->shape == bshape, op_, " B must have shape [num_directions, 2*", G, "*hidden_size] = ",
                  shape_str(bshape), ", got ", shape_str(b->shape));
    }
    const Shape hshape = layout_ ? Shape{N, D, H} : Shape{D, N, H};
    const char* hdesc = layout_ ? "[batch, num_directions, hidden_size] = " : "[num_directions, batch, hidden_size] = ";
    if (h0) MOPT_ENSURE(h0->shape == hshape, op_, " initial_h must have shape ", hdesc, shape_str(hshape), ", got ", shape_str(h0->shape));
    if (c0) MOPT_ENSURE(c0->shape == hshape, op_, " initial_c must have shape ", hdesc, shape_str(hshape), ", got ", shape_str(c0->shape));
    if (p) {
      const Shape pshape = {D, 3 * H};
      MOPT_ENSURE(p->shape == pshape, op_, " P must have shape [num_directions, 3*hidden_size] = ", shape_str(pshape),
                  ", got ", shape_str(p->shape));
    }
    std::vector<int64_t> len(static_cast<size_t>(N), S);
    if (lens) {
      MOPT_ENSURE(lens->dtype == DType::kI32 || lens->dtype == DType::kI64, op_, " sequence_lens must be int32, got ",
                  dtype_name(lens->dtype));
      MOPT_ENSURE(lens->rank() == 1 && lens->shape[0] == N, op_, " sequence_lens must have shape [batch] = [", N,
                  "], got ", shape_str(lens->shape));
      for (int64_t i = 0; i < N; ++i) {
        len[i] = typed::index_at(*lens, i);
        MOPT_ENSURE(len[i] >= 0 && len[i] <= S, op_, " sequence_lens[", i, "] = ", len[i], " is outside [0, ", S,
                    "] (the sequence length of X)");
      }
    }

    const bool want_y = ctx.num_outputs() > 0 && ctx.output_used(0);
    const bool want_h = ctx.num_outputs() > 1 && ctx.output_used(1);
    const bool want_c = cell_ == Cell::kLSTM && ctx.num_outputs() > 2 && ctx.output_used(2);
    Tensor* y = want_y ? &ctx.output(0, layout_ ? Shape{N, S, D, H} : Shape{S, D, N, H}) : nullptr;
    Tensor* yh = want_h ? &ctx.output(1, hshape) : nullptr;
    Tensor* yc = want_c ? &ctx.output(2, hshape) : nullptr;

    typed::dispatch(x.dtype, op_, [&](auto tag) {
      using T = typename decltype(tag)::type;
      if constexpr (!std::is_floating_point_v<T>) {
        fail(ErrorCode::kUnsupported, op_, " has no native kernel for ", dtype_name(x.dtype), " inputs");
      } else {
        auto xi = [&](int64_t t, int64_t n) { return layout_ ? (n * S + t) * I : (t * N + n) * I; };
        auto yi = [&](int64_t t, int64_t d, int64_t n) { return layout_ ? ((n * S + t) * D + d) * H : ((t * D + d) * N + n) * H; };
        auto hi = [&](int64_t d, int64_t n) { return layout_ ? (n * D + d) * H : (d * N + n) * H; };
        const T* xp = x.ptr<T>();
        if (y) {
          T* yp = y->ptr<T>();
          for (int64_t i = 0; i < y->numel(); ++i) yp[i] = T(0);
        }
        const int64_t GH = G * H;
        std::vector<double> xw(static_cast<size_t>(S * N * GH)), wd(static_cast<size_t>(GH * I)), rd(static_cast<size_t>(GH * H));
        std::vector<double> wb(static_cast<size_t>(GH)), rb(static_cast<size_t>(GH)), pd(static_cast<size_t>(3 * H));
        std::vector<double> hs(static_cast<size_t>(N * H)), cs(static_cast<size_t>(N * H)), g(static_cast<size_t>(GH)),
            hprev(static_cast<size_t>(H)), tmp(static_cast<size_t>(H));
        auto clip = [&](double v) { return has_clip_ ? std::max(-clip_, std::min(clip_, v)) : v; };
        for (int64_t d = 0; d < D; ++d) {
          const bool rev = reverse_ || d == 1;
          const Activation* act = &acts_[static_cast<size_t>(d * per_)];
          for (int64_t i = 0; i < GH * I; ++i) wd[i] = static_cast<double>(w.ptr<T>()[d * GH * I + i]);
          for (int64_t i = 0; i < GH * H; ++i) rd[i] = static_cast<double>(r.ptr<T>()[d * GH * H + i]);
          for (int64_t i = 0; i < GH; ++i) {
            wb[i] = b ? static_cast<double>(b->ptr<T>()[d * 2 * GH + i]) : 0.0;
            rb[i] = b ? static_cast<double>(b->ptr<T>()[d * 2 * GH + GH + i]) : 0.0;
          }
          for (int64_t i = 0; i < 3 * H; ++i) pd[i] = p ? static_cast<double>(p->ptr<T>()[d * 3 * H + i]) : 0.0;
          // input projection for every step
          for (int64_t t = 0; t < S; ++t)
            for (int64_t n = 0; n < N; ++n) {
              const T* xr = xp + xi(t, n);
              double* o = xw.data() + (t * N + n) * GH;
              for (int64_t j = 0; j < GH; ++j) {
                const double* wr = wd.data() + j * I;
                double s = wb[j];
                for (int64_t k = 0; k < I; ++k) s += static_cast<double>(xr[k]) * wr[k];
                o[j] = s;
              }
            }
          for (int64_t n = 0; n < N; ++n)
            for (int64_t k = 0; k < H; ++k) {
              hs[n * H + k] = h0 ? static_cast<double>(h0->ptr<T>()[hi(d, n) + k]) : 0.0;
              cs[n * H + k] = c0 ? static_cast<double>(c0->ptr<T>()[hi(d, n) + k]) : 0.0;
            }
          for (int64_t s = 0; s < S; ++s)
            for (int64_t n = 0; n < N; ++n) {
              if (s >= len[n]) continue;
              const int64_t t = rev ? len[n] - 1 - s : s;
              const double* xg = xw.data() + (t * N + n) * GH;
              double* h = hs.data() + n * H;
              double* c = cs.data() + n * H;
              std::copy(h, h + H, hprev.begin());
              // recurrent projection (the GRU's h gate is done below, it may need r first)
              const int64_t rows = cell_ == Cell::kGRU ? 2 * H : GH;
              for (int64_t j = 0; j < rows; ++j) {
                const double* rr = rd.data() + j * H;
                double sum = xg[j] + rb[j];
                for (int64_t k = 0; k < H; ++k) sum += hprev[k] * rr[k];
                g[j] = sum;
              }
              if (cell_ == Cell::kRNN) {
                for (int64_t k = 0; k < H; ++k) h[k] = act[0](clip(g[k]));
              } else if (cell_ == Cell::kGRU) {
                // gates z, r, h
                for (int64_t k = 0; k < 2 * H; ++k) g[k] = act[0](clip(g[k]));
                const double* z = g.data();
                const double* rg = g.data() + H;
                if (!lbr_)
                  for (int64_t k = 0; k < H; ++k) tmp[k] = rg[k] * hprev[k];
                for (int64_t j = 0; j < H; ++j) {
                  const double* rr = rd.data() + (2 * H + j) * H;
                  double sum = 0;
                  for (int64_t k = 0; k < H; ++k) sum += (lbr_ ? hprev[k] : tmp[k]) * rr[k];
                  const double pre = lbr_ ? xg[2 * H + j] + rg[j] * (sum + rb[2 * H + j]) : xg[2 * H + j] + sum + rb[2 * H + j];
                  g[2 * H + j] = act[1](clip(pre));
                }
                for (int64_t k = 0; k < H; ++k) h[k] = (1.0 - z[k]) * g[2 * H + k] + z[k] * hprev[k];
              } else {
                // gates i, o, f, c; peepholes P = [p_i, p_o, p_f]
                for (int64_t k = 0; k < H; ++k) {
                  const double ig = act[0](clip(g[k] + pd[k] * c[k]));
                  const double fg = input_forget_ ? 1.0 - ig : act[0](clip(g[2 * H + k] + pd[2 * H + k] * c[k]));
                  const double cg = act[1](clip(g[3 * H + k]));
                  c[k] = fg * c[k] + ig * cg;
                  const double og = act[0](clip(g[H + k] + pd[H + k] * c[k]));
                  h[k] = og * act[2](c[k]);
                }
              }
              if (y) {
                T* yo = y->ptr<T>() + yi(t, d, n);
                for (int64_t k = 0; k < H; ++k) yo[k] = static_cast<T>(h[k]);
              }
            }
          for (int64_t n = 0; n < N; ++n)
            for (int64_t k = 0; k < H; ++k) {
              if (yh) yh->ptr<T>()[hi(d, n) + k] = static_cast<T>(hs[n * H + k]);
              if (yc) yc->ptr<T>()[hi(d, n) + k] = static_cast<T>(cs[n * H + k]);
            }
        }
      }
    });
  }

 private:
  Cell cell_;
  int64_t gates_, dirs_, hidden_, layout_;
  bool reverse_, has_clip_, lbr_, input_forget_;
  double clip_;
  int per_ = 1;
  std::vector<Activation> acts_;
  const char* op_ = "RNN";
};

std::unique_ptr<Kernel> make_rnn(const KernelInit& i) { return std::make_unique<RecurrentKernel>(i, Cell::kRNN); }
std::unique_ptr<Kernel> make_gru(const KernelInit& i) { return std::make_unique<RecurrentKernel>(i, Cell::kGRU); }
std::unique_ptr<Kernel> make_lstm(const KernelInit& i) { return std::make_unique<RecurrentKernel>(i, Cell::kLSTM); }

}  // namespace

void register_rnn_ops(OpRegistry& r) {
  const std::vector<DType> floats = {DType::kF32, DType::kF64};
  r.add({"", "RNN", floats, &make_rnn});
  r.add({"", "GRU", floats, &make_gru});
  r.add({"", "LSTM", floats, &make_lstm});
}

}  // namespace mopt
