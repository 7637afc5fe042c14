// Control flow: If, Loop and Scan (opset 9+ Scan, 11+ Loop). Each body is a subgraph the compiler
// lowered into the same program (its weights live in the same blob); the kernel runs it as a
// session of its own on the caller's thread pool, so a body's nodes get the same native kernels,
// memory plans and fallback as the main graph.
//
// The lowering passes the values a body reads from enclosing graphs as extra inputs: the node's
// last `_captures` inputs, which every body of the node takes after its own formal inputs.
#include <cstring>
#include <limits>
#include <numeric>

#include "kernels/ops/common.h"
#include "mopt/session.h"

namespace mopt {
namespace {

struct Body {
  GraphInfo graph;
  std::unique_ptr<Session> session;
  std::vector<int> wanted;  // every output, in order
};

std::unique_ptr<Body> make_body(const KernelInit& init, const char* attr, size_t formal_inputs, int captures) {
  const Json* g = init.attrs.get(attr);
  if (!g || !init.program || !init.options || !init.pool)
    fail(ErrorCode::kInvalidArgument, "the subgraph attribute '", attr, "' was not lowered into the program");
  auto b = std::make_unique<Body>();
  init.program->parse_graph(*g, &b->graph);
  if (b->graph.inputs.size() != formal_inputs + static_cast<size_t>(captures))
    fail(ErrorCode::kInvalidArgument, "subgraph '", attr, "' takes ", b->graph.inputs.size(), " inputs; expected ",
         formal_inputs, " plus ", captures, " captured outer values");
  SessionOptions o = *init.options;
  o.check_static_dims = false;
  try {
    b->session = std::make_unique<Session>(init.program, &b->graph, std::move(o), init.pool);
  } catch (const Error& e) {
    throw Error(e.code(), str_cat("in subgraph '", attr, "': ", e.what()));
  }
  b->wanted.resize(b->graph.outputs.size());
  std::iota(b->wanted.begin(), b->wanted.end(), 0);
  return b;
}

std::vector<OwnedTensor> run_body(Body& b, const char* attr, const std::vector<Tensor>& feeds) {
  try {
    return b.session->run(feeds, b.wanted);
  } catch (const Error& e) {
    throw Error(e.code(), str_cat("in subgraph '", attr, "': ", e.what()));
  }
}

int captures_of(const KernelInit& init) {
  const int64_t c = init.attrs.get_int("_captures", 0);
  MOPT_CHECK(c >= 0 && c <= static_cast<int64_t>(init.in_dtypes.size()), ErrorCode::kInvalidArgument,
             "_captures = ", c, " but the node has ", init.in_dtypes.size(), " inputs");
  return static_cast<int>(c);
}

bool read_flag(const Tensor& t, const char* what) {
  MOPT_CHECK(t.numel() == 1, ErrorCode::kRuntime, what, " must hold exactly one element, got shape ",
             shape_str(t.shape));
  return scalar_as_double(t, 0) != 0.0;
}

void copy_out(KernelContext& ctx, int i, const Tensor& t) {
  Tensor& o = ctx.output(i, t.shape, t.dtype);
  if (ctx.output_used(i)) parallel_copy(ctx.pool(), o.data, t.data, t.nbytes());
}

// The shape a scan output of zero iterations has: the body's declared per-iteration shape with its
// unknown sizes 0 (as ONNX Runtime gives it), and the empty scan axis inserted; rank 1 when the body
// declares no shape.
Shape empty_scan_shape(const Body& b, int out_index, int64_t axis) {
  const ValueInfo& v = b.graph.values[b.graph.outputs[out_index]];
  if (!v.has_shape) return Shape{0};
  Shape s;
  for (const Dim& d : v.dims) s.push_back(std::max<int64_t>(d.size, 0));
  const int64_t r = static_cast<int64_t>(s.size());
  int64_t ax = axis < 0 ? axis + r + 1 : axis;
  ax = std::max<int64_t>(0, std::min(ax, r));
  s.insert(s.begin() + ax, 0);
  return s;
}

// Stacks per-iteration tensors of one shape along a new axis `axis` (normalised), in `order`.
void stack_out(KernelContext& ctx, int out, const std::vector<OwnedTensor>& parts, int64_t axis, bool reverse,
               const char* what) {
  const Tensor& first = parts.front().tensor;
  for (const OwnedTensor& p : parts)
    MOPT_CHECK(p.tensor.shape == first.shape && p.tensor.dtype == first.dtype, ErrorCode::kRuntime, what, " ",
               out, " changes from ", dtype_name(first.dtype), " ", shape_str(first.shape), " to ",
               dtype_name(p.tensor.dtype), " ", shape_str(p.tensor.shape), " between iterations");
  const int64_t r = first.rank();
  const int64_t ax = axis < 0 ? axis + r + 1 : axis;
  MOPT_CHECK(ax >= 0 && ax <= r, ErrorCode::kInvalidArgument, what, " axis ", axis, " is out of range for rank ",
             r + 1);
  Shape shape = first.shape;
  const int64_t n = static_cast<int64_t>(parts.size());
  shape.insert(shape.begin() + ax, n);
  Tensor& o = ctx.output(out, shape, first.dtype);
  if (!ctx.output_used(out) || o.numel() == 0) return;
  const size_t es = dtype_size(first.dtype);
  int64_t outer = 1;
  for (int64_t d = 0; d < ax; ++d) outer *= first.shape[d];
  const size_t inner = static_cast<size_t>(first.numel() / std::max<int64_t>(outer, 1)) * es;
  char* dst = static_cast<char*>(o.data);
  for (int64_t t = 0; t < n; ++t) {
    const int64_t pos = reverse ? n - 1 - t : t;
    const char* src = static_cast<const char*>(parts[t].tensor.data);
    for (int64_t j = 0; j < outer; ++j)
      std::memcpy(dst + (static_cast<size_t>(j * n + pos)) * inner, src + static_cast<size_t>(j) * inner, inner);
  }
}

class IfKernel final : public Kernel {
 public:
  explicit IfKernel(const KernelInit& init) : captures_(captures_of(init)) {
    then_ = make_body(init, "then_branch", 0, captures_);
    else_ = make_body(init, "else_branch", 0, captures_);
    impl = "if";
  }

  void run(KernelContext& ctx) override {
    const bool cond = read_flag(ctx.in(0), "the condition");
    Body& b = cond ? *then_ : *else_;
    const char* which = cond ? "then_branch" : "else_branch";
    std::vector<Tensor> feeds;
    for (int i = ctx.num_inputs() - captures_; i < ctx.num_inputs(); ++i) feeds.push_back(ctx.in(i));
    std::vector<OwnedTensor> outs = run_body(b, which, feeds);
    MOPT_CHECK(static_cast<int>(outs.size()) == ctx.num_outputs(), ErrorCode::kRuntime, which, " gives ",
               outs.size(), " outputs; the node has ", ctx.num_outputs());
    for (int i = 0; i < ctx.num_outputs(); ++i) copy_out(ctx, i, outs[i].tensor);
  }

 private:
  int captures_;
  std::unique_ptr<Body> then_, else_;
};

class LoopKernel final : public Kernel {
 public:
  explicit LoopKernel(const KernelInit& init) : captures_(captures_of(init)) {
    carried_ = static_cast<int>(init.in_dtypes.size()) - 2 - captures_;
    MOPT_CHECK(carried_ >= 0, ErrorCode::kInvalidArgument, "Loop needs the trip count and condition inputs");
    body_ = make_body(init, "body", 2 + static_cast<size_t>(carried_), captures_);
    scans_ = static_cast<int>(body_->graph.outputs.size()) - 1 - carried_;
    MOPT_CHECK(scans_ >= 0, ErrorCode::kInvalidArgument, "the body gives ", body_->graph.outputs.size(),
               " outputs; it must give the condition and the ", carried_, " loop-carried values");
    MOPT_CHECK(static_cast<int>(init.out_dtypes.size()) == carried_ + scans_, ErrorCode::kInvalidArgument,
               "the node has ", init.out_dtypes.size(), " outputs; the body gives ", carried_,
               " loop-carried values and ", scans_, " scan outputs");
    impl = "loop";
  }

  void run(KernelContext& ctx) override {
    const Tensor* m = ctx.input(0);
    const Tensor* c = ctx.input(1);
    int64_t trips = std::numeric_limits<int64_t>::max();
    if (m) {
      MOPT_CHECK(m->numel() == 1, ErrorCode::kRuntime, "the trip count must hold one element, got shape ",
                 shape_str(m->shape));
      trips = static_cast<int64_t>(scalar_as_double(*m, 0));
    }
    bool cond = c ? read_flag(*c, "the initial condition") : true;
    std::vector<Tensor> cur;
    for (int j = 0; j < carried_; ++j) cur.push_back(ctx.in(2 + j));
    std::vector<OwnedTensor> held;  // owns the buffers `cur` points into
    std::vector<std::vector<OwnedTensor>> scanned(scans_);
    int64_t iter = 0;
    uint8_t cond_byte = 1;
    std::vector<Tensor> feeds(2 + carried_ + captures_);
    feeds[0] = Tensor{DType::kI64, {}, &iter};
    feeds[1] = Tensor{DType::kBool, {}, &cond_byte};
    for (int k = 0; k < captures_; ++k) feeds[2 + carried_ + k] = ctx.in(2 + carried_ + k);
    for (; iter < trips && cond; ++iter) {
      cond_byte = cond ? 1 : 0;
      for (int j = 0; j < carried_; ++j) feeds[2 + j] = cur[j];
      std::vector<OwnedTensor> outs = run_body(*body_, "body", feeds);
      if (c) cond = read_flag(outs[0].tensor, "the body's condition output");
      for (int j = 0; j < carried_; ++j) cur[j] = outs[1 + j].tensor;
      for (int k = 0; k < scans_; ++k) scanned[k].push_back(std::move(outs[1 + carried_ + k]));
      held = std::move(outs);
    }
    for (int j = 0; j < carried_; ++j) copy_out(ctx, j, cur[j]);
    for (int k = 0; k < scans_; ++k) {
      if (scanned[k].empty()) {
        ctx.output(carried_ + k, empty_scan_shape(*body_, 1 + carried_ + k, 0), ctx.output_dtype(carried_ + k));
        continue;
      }
      stack_out(ctx, carried_ + k, scanned[k], 0, false, "scan output");
    }
  }

 private:
  int captures_, carried_ = 0, scans_ = 0;
  std::unique_ptr<Body> body_;
};

class ScanKernel final : public Kernel {
 public:
  explicit ScanKernel(const KernelInit& init) : captures_(captures_of(init)) {
    num_scan_in_ = init.attrs.get_int("num_scan_inputs");
    const int64_t n_in = static_cast<int64_t>(init.in_dtypes.size()) - captures_;
    MOPT_CHECK(num_scan_in_ >= 1 && num_scan_in_ <= n_in, ErrorCode::kInvalidArgument, "num_scan_inputs = ",
               num_scan_in_, " with ", n_in, " inputs");
    states_ = static_cast<int>(n_in - num_scan_in_);
    body_ = make_body(init, "body", static_cast<size_t>(n_in), captures_);
    scan_out_ = static_cast<int>(body_->graph.outputs.size()) - states_;
    MOPT_CHECK(scan_out_ >= 0 && static_cast<int>(init.out_dtypes.size()) == states_ + scan_out_,
               ErrorCode::kInvalidArgument, "the body gives ", body_->graph.outputs.size(), " outputs and the node has ",
               init.out_dtypes.size(), "; both must be the ", states_, " states plus the scan outputs");
    in_axes_ = init.attrs.get_ints("scan_input_axes", std::vector<int64_t>(num_scan_in_, 0));
    in_dirs_ = init.attrs.get_ints("scan_input_directions", std::vector<int64_t>(num_scan_in_, 0));
    out_axes_ = init.attrs.get_ints("scan_output_axes", std::vector<int64_t>(scan_out_, 0));
    out_dirs_ = init.attrs.get_ints("scan_output_directions", std::vector<int64_t>(scan_out_, 0));
    MOPT_CHECK(static_cast<int64_t>(in_axes_.size()) == num_scan_in_ &&
                   static_cast<int64_t>(in_dirs_.size()) == num_scan_in_,
               ErrorCode::kInvalidArgument, "scan_input_axes / scan_input_directions need ", num_scan_in_, " entries");
    MOPT_CHECK(static_cast<int>(out_axes_.size()) == scan_out_ && static_cast<int>(out_dirs_.size()) == scan_out_,
               ErrorCode::kInvalidArgument, "scan_output_axes / scan_output_directions need ", scan_out_, " entries");
    impl = "scan";
  }

  void run(KernelContext& ctx) override {
    // Where each scan input's slices lie: [outer, T, inner] around its scan axis.
    struct In {
      const Tensor* t;
      int64_t axis, outer, inner;  // inner in bytes
      Shape slice_shape;
    };
    std::vector<In> ins;
    int64_t steps = -1;
    for (int64_t i = 0; i < num_scan_in_; ++i) {
      const Tensor& t = ctx.in(states_ + static_cast<int>(i));
      MOPT_CHECK(t.rank() >= 1, ErrorCode::kRuntime, "scan input ", i, " is a scalar; it needs an axis to scan");
      const int64_t ax = normalize_axis(in_axes_[i], t.rank());
      const int64_t len = t.shape[ax];
      MOPT_CHECK(steps < 0 || len == steps, ErrorCode::kRuntime, "scan input ", i, " has ", len,
                 " steps along axis ", ax, "; scan input 0 has ", steps);
      steps = len;
      In in{&t, ax, 1, 0, t.shape};
      for (int64_t d = 0; d < ax; ++d) in.outer *= t.shape[d];
      in.inner = static_cast<int64_t>(dtype_size(t.dtype));
      for (int64_t d = ax + 1; d < t.rank(); ++d) in.inner *= t.shape[d];
      in.slice_shape.erase(in.slice_shape.begin() + ax);
      ins.push_back(std::move(in));
    }
    slices_.resize(ins.size());
    std::vector<Tensor> cur;
    for (int j = 0; j < states_; ++j) cur.push_back(ctx.in(j));
    std::vector<OwnedTensor> held;
    std::vector<std::vector<OwnedTensor>> scanned(scan_out_);
    std::vector<Tensor> feeds(states_ + num_scan_in_ + captures_);
    for (int k = 0; k < captures_; ++k)
      feeds[states_ + num_scan_in_ + k] = ctx.in(states_ + static_cast<int>(num_scan_in_) + k);
    for (int64_t t = 0; t < steps; ++t) {
      for (int j = 0; j < states_; ++j) feeds[j] = cur[j];
      for (size_t i = 0; i < ins.size(); ++i) {
        const In& in = ins[i];
        const int64_t s = in_dirs_[i] ? steps - 1 - t : t;
        const char* base = static_cast<const char*>(in.t->data);
        Tensor slice{in.t->dtype, in.slice_shape, nullptr};
        if (in.outer == 1) {
          slice.data = const_cast<char*>(base) + s * in.inner;
        } else {  // gather the strided slice
          slices_[i].resize(static_cast<size_t>(in.outer * in.inner) + 1);
          for (int64_t o = 0; o < in.outer; ++o)
            std::memcpy(slices_[i].data() + o * in.inner, base + (o * steps + s) * in.inner,
                        static_cast<size_t>(in.inner));
          slice.data = slices_[i].data();
        }
        feeds[states_ + i] = slice;
      }
      std::vector<OwnedTensor> outs = run_body(*body_, "body", feeds);
      for (int j = 0; j < states_; ++j) cur[j] = outs[j].tensor;
      for (int k = 0; k < scan_out_; ++k) scanned[k].push_back(std::move(outs[states_ + k]));
      held = std::move(outs);
    }
    for (int j = 0; j < states_; ++j) copy_out(ctx, j, cur[j]);
    for (int k = 0; k < scan_out_; ++k) {
      if (scanned[k].empty()) {
        ctx.output(states_ + k, empty_scan_shape(*body_, states_ + k, out_axes_[k]), ctx.output_dtype(states_ + k));
        continue;
      }
      stack_out(ctx, states_ + k, scanned[k], out_axes_[k], out_dirs_[k] != 0, "scan output");
    }
  }

 private:
  int captures_, states_ = 0, scan_out_ = 0;
  int64_t num_scan_in_ = 0;
  std::vector<int64_t> in_axes_, in_dirs_, out_axes_, out_dirs_;
  std::unique_ptr<Body> body_;
  std::vector<std::vector<char>> slices_;
};

template <class K>
std::unique_ptr<Kernel> make(const KernelInit& init) {
  return std::make_unique<K>(init);
}

}  // namespace

void register_control_flow_ops(OpRegistry& r) {
  r.add({"", "If", {}, &make<IfKernel>});
  r.add({"", "Loop", {}, &make<LoopKernel>});
  r.add({"", "Scan", {}, &make<ScanKernel>});
}

}  // namespace mopt
