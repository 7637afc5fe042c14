// NonMaxSuppression and the window functions (HannWindow, HammingWindow, BlackmanWindow) in plain
// C++. NMS computes overlaps in the boxes' own type (float32 stays float32, as the reference does),
// so the threshold comparisons agree at the edges.
#include <algorithm>
#include <limits>
#include <numeric>

#include "kernels/ops/typed.h"

namespace mopt {
namespace {

using typed::is_float_v;
using typed::load;
using typed::store;

class NmsKernel final : public Kernel {
 public:
  explicit NmsKernel(const KernelInit& init) : center_(init.attrs.get_int("center_point_box", 0)) {
    MOPT_CHECK(center_ == 0 || center_ == 1, ErrorCode::kInvalidModel, "center_point_box must be 0 or 1");
    impl = "non_max_suppression";
  }
  void run(KernelContext& ctx) override {
    const Tensor& boxes = ctx.in(0);
    const Tensor& scores = ctx.in(1);
    MOPT_ENSURE(boxes.rank() == 3 && boxes.shape[2] == 4, "boxes must be (batch, boxes, 4), got ", shape_str(boxes.shape));
    MOPT_ENSURE(scores.rank() == 3 && scores.shape[0] == boxes.shape[0] && scores.shape[2] == boxes.shape[1],
                "scores must be (batch, classes, boxes) for boxes ", shape_str(boxes.shape), ", got ",
                shape_str(scores.shape));
    MOPT_ENSURE(scores.dtype == boxes.dtype, "scores and boxes types differ");
    const int64_t B = boxes.shape[0], C = scores.shape[1], NB = boxes.shape[1];
    int64_t max_out = 0;
    if (const Tensor* m = ctx.input(2); m && m->numel() > 0) max_out = std::max<int64_t>(typed::index_at(*m, 0), 0);
    std::vector<int64_t> sel;  // (batch, class, box) triples
    typed::dispatch(boxes.dtype, "NonMaxSuppression", [&](auto tag) {
      using T = typename decltype(tag)::type;
      if constexpr (!is_float_v<T>) {
        fail(ErrorCode::kUnsupported, "NonMaxSuppression of ", dtype_name(boxes.dtype), " has no native kernel");
      } else {
        using A = typed::Arith<T>;
        A iou_t = 0, score_t = 0;
        bool has_score = false;
        if (const Tensor* t = ctx.input(3); t && t->numel() > 0) {
          MOPT_ENSURE(t->dtype == boxes.dtype, "iou_threshold must have the boxes' type");
          iou_t = load(t->ptr<T>()[0]);
        }
        if (const Tensor* t = ctx.input(4); t && t->numel() > 0) {
          MOPT_ENSURE(t->dtype == boxes.dtype, "score_threshold must have the boxes' type");
          score_t = load(t->ptr<T>()[0]);
          has_score = true;
        }
        const T* bp = boxes.ptr<T>();
        const T* sp = scores.ptr<T>();
        for (int64_t b = 0; b < B; ++b)
          for (int64_t c = 0; c < C; ++c) {
            const T* cs = sp + (b * C + c) * NB;
            std::vector<int64_t> cand;
            for (int64_t i = 0; i < NB; ++i)
              if (!has_score || load(cs[i]) > score_t) cand.push_back(i);
            // highest score first, ties by the lower box index
            // (NaN ranks last, so the ordering stays a strict weak one)
            auto key = [&](int64_t i) {
              const A v = load(cs[i]);
              return v != v ? -std::numeric_limits<A>::infinity() : v;
            };
            std::stable_sort(cand.begin(), cand.end(), [&](int64_t u, int64_t v) { return key(u) > key(v); });
            std::vector<int64_t> kept;
            for (int64_t i : cand) {
              if (static_cast<int64_t>(kept.size()) >= max_out) break;
              bool keep = true;
              for (int64_t j : kept)
                if (suppress<T, A>(bp + (b * NB + i) * 4, bp + (b * NB + j) * 4, iou_t)) {
                  keep = false;
                  break;
                }
              if (keep) {
                kept.push_back(i);
                sel.insert(sel.end(), {b, c, i});
              }
            }
          }
      }
    });
    Tensor& y = ctx.output(0, {static_cast<int64_t>(sel.size() / 3), 3});
    std::copy(sel.begin(), sel.end(), y.ptr<int64_t>());
  }

 private:
  template <class T, class A>
  bool suppress(const T* b1, const T* b2, A thr) const {
    A x1lo, x1hi, x2lo, x2hi, y1lo, y1hi, y2lo, y2hi;
    auto mm = [](A a, A b, A& lo, A& hi) {
      lo = a >= b ? b : a;
      hi = a >= b ? a : b;
    };
    if (center_ == 0) {
      mm(load(b1[1]), load(b1[3]), x1lo, x1hi);
      mm(load(b2[1]), load(b2[3]), x2lo, x2hi);
      mm(load(b1[0]), load(b1[2]), y1lo, y1hi);
      mm(load(b2[0]), load(b2[2]), y2lo, y2hi);
    } else {
      const A w1 = load(b1[2]) / A(2), h1 = load(b1[3]) / A(2), w2 = load(b2[2]) / A(2), h2 = load(b2[3]) / A(2);
      x1lo = load(b1[0]) - w1;
      x1hi = load(b1[0]) + w1;
      x2lo = load(b2[0]) - w2;
      x2hi = load(b2[0]) + w2;
      y1lo = load(b1[1]) - h1;
      y1hi = load(b1[1]) + h1;
      y2lo = load(b2[1]) - h2;
      y2hi = load(b2[1]) + h2;
    }
    const A ixlo = std::max(x1lo, x2lo), ixhi = std::min(x1hi, x2hi);
    if (ixhi <= ixlo) return false;
    const A iylo = std::max(y1lo, y2lo), iyhi = std::min(y1hi, y2hi);
    if (iyhi <= iylo) return false;
    const A inter = (ixhi - ixlo) * (iyhi - iylo);
    if (inter <= 0) return false;
    const A a1 = (x1hi - x1lo) * (y1hi - y1lo), a2 = (x2hi - x2lo) * (y2hi - y2lo);
    const A uni = a1 + a2 - inter;
    if (a1 <= 0 || a2 <= 0 || uni <= 0) return false;
    return inter / uni > thr;
  }
  int64_t center_;
};

// ---- window functions ---------------------------------------------------------------------------------

class WindowKernel final : public Kernel {
 public:
  explicit WindowKernel(const KernelInit& init) {
    const std::string& op = init.node->op;
    kind_ = op == "HannWindow" ? 0 : op == "HammingWindow" ? 1 : 2;
    periodic_ = init.attrs.get_int("periodic", 1) != 0;
    to_ = static_cast<DType>(init.attrs.get_int("output_datatype", 1));
    impl = "window";
  }
  void run(KernelContext& ctx) override {
    const Tensor& s = ctx.in(0);
    MOPT_ENSURE(s.numel() == 1, "size must hold one value, got shape ", shape_str(s.shape));
    const int64_t n = typed::index_at(s, 0);
    MOPT_ENSURE(n >= 0, "size must not be negative, got ", n);
    Tensor& y = ctx.output(0, {n}, to_);
    const double N1 = static_cast<double>(periodic_ ? n : n - 1), pi = 3.14159265358979323846;
    typed::dispatch(y.dtype, "window", [&](auto tag) {
      using T = typename decltype(tag)::type;
      if constexpr (std::is_same_v<T, bool>) {
        fail(ErrorCode::kUnsupported, "a bool window has no native kernel");
      } else {
        T* yp = y.ptr<T>();
        for (int64_t i = 0; i < n; ++i) {
          const double k = static_cast<double>(i);
          double v;
          if (kind_ == 0) {
            const double sn = std::sin(k * pi / N1);
            v = sn * sn;
          } else if (kind_ == 1) {
            const double alpha = 25.0 / 46.0;
            v = alpha - std::cos(k * pi * 2 / N1) * (1 - alpha);
          } else {
            v = 0.42 - 0.5 * std::cos(k * pi * 2 / N1) + 0.08 * std::cos(k * pi * 4 / N1);
          }
          if constexpr (std::is_integral_v<T>) yp[i] = static_cast<T>(static_cast<int64_t>(v));
          else yp[i] = store<T>(v);
        }
      }
    });
  }

 private:
  int kind_;
  bool periodic_;
  DType to_;
};

std::unique_ptr<Kernel> make_nms(const KernelInit& i) { return std::make_unique<NmsKernel>(i); }
std::unique_ptr<Kernel> make_window(const KernelInit& i) { return std::make_unique<WindowKernel>(i); }

}  // namespace

void register_detect_ops(OpRegistry& r) {
  r.add({"", "NonMaxSuppression", {DType::kF32, DType::kF64, DType::kF16}, &make_nms});
  for (const char* op : {"HannWindow", "HammingWindow", "BlackmanWindow"})
    r.add({"", op, {DType::kI32, DType::kI64}, &make_window});
}

}  // namespace mopt
