#include "mopt/session.h"

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <limits>

#include "kernels/cpu/isa_fns.h"
#include "mopt/status.h"
#include "runtime/f16_adapter.h"

namespace mopt {

namespace {

std::shared_ptr<void> alloc_buffer(size_t nbytes) {
  void* p = nullptr;
  size_t n = std::max<size_t>(64, (nbytes + 63) / 64 * 64);
  if (posix_memalign(&p, 64, n) != 0) throw std::bad_alloc();
  return std::shared_ptr<void>(p, std::free);
}

constexpr size_t kPoolMaxBytes = size_t{1} << 30;  // kept for reuse at most
constexpr size_t kPoolMaxBuffers = 16;

std::string node_label(const NodeInfo& n) {
  std::string op = n.domain.empty() ? n.op : n.domain + "." + n.op;
  return str_cat("node '", n.name, "' (", op, ")");
}

}  // namespace

BufferPool::~BufferPool() {
  for (auto& kv : free_) std::free(kv.second);
}

std::shared_ptr<void> BufferPool::get(const std::shared_ptr<BufferPool>& pool, size_t nbytes) {
  const size_t n = std::max<size_t>(64, (nbytes + 63) / 64 * 64);
  void* p = nullptr;
  size_t cap = n;
  {
    std::lock_guard<std::mutex> lock(pool->mu_);
    auto it = pool->free_.lower_bound(n);
    if (it != pool->free_.end() && it->first <= 2 * n) {  // no more than twice the size asked for
      cap = it->first;
      p = it->second;
      pool->free_bytes_ -= cap;
      pool->free_.erase(it);
    }
  }
  if (!p && posix_memalign(&p, 64, n) != 0) throw std::bad_alloc();
  std::weak_ptr<BufferPool> weak = pool;
  return std::shared_ptr<void>(p, [weak, cap](void* q) {
    if (auto alive = weak.lock()) alive->put(q, cap);
    else std::free(q);
  });
}

void BufferPool::put(void* p, size_t capacity) {
  std::lock_guard<std::mutex> lock(mu_);
  if (free_.size() >= kPoolMaxBuffers || free_bytes_ + capacity > kPoolMaxBytes) {
    std::free(p);
    return;
  }
  free_.emplace(capacity, p);
  free_bytes_ += capacity;
}

// Arena offsets for one input-shape signature, derived from the sizes and lifetimes seen in a run.
struct Session::Plan {
  std::vector<int64_t> offset;  // per value; -1: not in the arena
  std::vector<size_t> size;     // planned bytes per value
  size_t arena_bytes = 0;
  size_t workspace_bytes = 0;
};

class Session::Context final : public KernelContext {
 public:
  Context(Session* s, const NodeInfo* n) : s_(s), n_(n) {}

  int num_inputs() const override { return static_cast<int>(n_->inputs.size()); }
  const Tensor* input(int i) const override {
    if (i < 0 || i >= num_inputs()) return nullptr;
    int id = n_->inputs[i];
    return id < 0 ? nullptr : &s_->values_[id];
  }
  int num_outputs() const override { return static_cast<int>(n_->outputs.size()); }
  bool output_used(int i) const override {
    if (i < 0 || i >= num_outputs()) return false;
    int id = n_->outputs[i];
    return id >= 0 && (s_->last_use_[id] >= 0 || s_->is_output_[id]);
  }
  DType output_dtype(int i) const override {
    if (i < 0 || i >= num_outputs()) return DType::kUndefined;
    int id = n_->outputs[i];
    return id < 0 ? DType::kUndefined : s_->graph().values[id].dtype;
  }
  Tensor& output(int i, const Shape& shape) override { return output(i, shape, DType::kUndefined); }
  Tensor& output(int i, const Shape& shape, DType dtype) override {
    MOPT_CHECK(i >= 0 && i < num_outputs(), ErrorCode::kInternal, "output index ", i, " out of range");
    for (int64_t d : shape) MOPT_ENSURE(d >= 0, "negative output dimension in ", shape_str(shape));
    int id = n_->outputs[i];
    if (id < 0) {  // an optional output nobody named: give it a throwaway buffer
      sinks_.emplace_back();
      Tensor& t = sinks_.back().first;
      t.dtype = dtype == DType::kUndefined ? DType::kF64 : dtype;  // widest common element
      t.shape = shape;
      sinks_.back().second = alloc_buffer(t.numel() * 16);
      t.data = sinks_.back().second.get();
      return t;
    }
    return s_->allocate(id, shape, dtype);
  }
  Tensor& output_alias(int i, const Tensor& src, const Shape& shape) override {
    int id = n_->outputs[i];
    if (id < 0) return output(i, shape, src.dtype);
    MOPT_CHECK(shape_numel(shape) * dtype_size(output_dtype(i)) == src.nbytes(), ErrorCode::kInternal,
               "alias of ", src.nbytes(), " bytes as ", shape_str(shape));
    Tensor& t = s_->values_[id];
    t.dtype = s_->graph().values[id].dtype;
    t.shape = shape;
    t.data = src.data;
    const Tensor* base = s_->values_.data();
    if (&src >= base && &src < base + s_->values_.size()) {
      int root = s_->alias_root_[&src - base];
      s_->alias_root_[id] = root;
      int end = s_->is_output_[id] ? static_cast<int>(s_->graph().nodes.size()) : s_->last_use_[id];
      s_->end_[root] = std::max(s_->end_[root], end);
    }
    s_->traced_bytes_[id] = 0;
    return t;
  }
  void* scratch(size_t bytes) override {
    bytes = (bytes + 63) / 64 * 64;
    if (cursor_ + bytes <= s_->workspace_size_) {
      void* p = static_cast<char*>(s_->workspace_.get()) + cursor_;
      cursor_ += bytes;
      used_ = std::max(used_, cursor_);
      return p;
    }
    if (cursor_ == 0) {  // first request of this call: grow the shared workspace
      s_->workspace_ = alloc_buffer(bytes);
      s_->workspace_size_ = bytes;
      s_->stats_.arena_grows++;
      cursor_ = bytes;
      used_ = bytes;
      return s_->workspace_.get();
    }
    extra_.push_back(alloc_buffer(bytes));
    s_->stats_.dynamic_allocs++;
    used_ += bytes;
    return extra_.back().get();
  }
  ThreadPool& pool() override { return *s_->pool_; }

  size_t scratch_used() const { return used_; }

 private:
  Session* s_;
  const NodeInfo* n_;
  size_t cursor_ = 0, used_ = 0;
  std::vector<std::shared_ptr<void>> extra_;
  std::vector<std::pair<Tensor, std::shared_ptr<void>>> sinks_;
};

const Tensor& KernelContext::in(int i) const {
  const Tensor* t = input(i);
  if (!t) fail(ErrorCode::kRuntime, "required input ", i, " is missing");
  return *t;
}

Session::Session(std::shared_ptr<const Program> program, SessionOptions options)
    : program_(std::move(program)),
      graph_(&program_->graph()),
      options_(std::move(options)),
      own_pool_(std::make_unique<ThreadPool>(options_.intra_op_threads > 0 ? options_.intra_op_threads
                                                                           : cpu_features().logical_cores)),
      pool_(own_pool_.get()) {
  init_kernels();
}

Session::Session(std::shared_ptr<const Program> program, const GraphInfo* graph, SessionOptions options,
                 ThreadPool* pool)
    : program_(std::move(program)), graph_(graph), options_(std::move(options)), pool_(pool) {
  init_kernels();
}

void Session::init_kernels() {
  if (!isa_supported(options_.isa))
    fail(ErrorCode::kInvalidArgument, "ISA '", isa_name(options_.isa), "' is not supported on this machine");
  const GraphInfo& g = graph();
  size_t nv = g.values.size();
  last_use_.assign(nv, -1);
  producer_.assign(nv, -1);
  is_output_.assign(nv, false);
  is_const_.assign(nv, false);
  for (size_t i = 0; i < nv; ++i) is_const_[i] = g.values[i].const_index >= 0;
  for (int id : g.outputs) is_output_[id] = true;
  for (size_t k = 0; k < g.nodes.size(); ++k) {
    for (int id : g.nodes[k].inputs)
      if (id >= 0) last_use_[id] = static_cast<int>(k);
    for (int id : g.nodes[k].outputs)
      if (id >= 0) producer_[id] = static_cast<int>(k);
  }
  values_.resize(nv);
  owned_.resize(nv);
  alias_root_.resize(nv);
  end_.resize(nv);
  traced_bytes_.assign(nv, 0);
  // float16-stored weights are widened once here, with this session's ISA (F16C where allowed), so
  // kernels and their packers only ever see float32
  wide_ = g.consts;
  for (size_t c = 0; c < wide_.size(); ++c) {
    ConstInfo& ci = wide_[c];
    if (!ci.f16) continue;
    const int64_t n = static_cast<int64_t>(ci.nbytes / 2);
    wide_bufs_.push_back(alloc_buffer(static_cast<size_t>(n) * sizeof(float)));
    auto cvt = kernel_table().get<cpu::CvtF16F32Fn>("cvt_f16_f32", options_.isa);
    cvt(static_cast<const uint16_t*>(g.consts[c].tensor.data), static_cast<float*>(wide_bufs_.back().get()), n);
    ci.tensor.data = wide_bufs_.back().get();
    ci.nbytes = static_cast<size_t>(n) * sizeof(float);
    ci.f16 = false;
  }
  for (size_t i = 0; i < nv; ++i) {
    if (g.values[i].const_index >= 0) values_[i] = wide_[g.values[i].const_index].tensor;
  }

  const OpRegistry& ops = op_registry();
  for (const NodeInfo& n : g.nodes) {
    KernelInit init;
    init.node = &n;
    init.attrs = Attrs(n.attrs);
    init.isa = options_.isa;
    init.table = &kernel_table();
    init.program = program_;
    init.options = &options_;
    init.pool = pool_;
    for (int id : n.inputs) {
      ConstInput c;
      if (id >= 0 && g.values[id].const_index >= 0) {
        const ConstInfo& ci = wide_[g.values[id].const_index];
        c.tensor = &ci.tensor;
        c.format = ci.format;
        c.nbytes = ci.nbytes;
      }
      init.consts.push_back(c);
      init.in_dtypes.push_back(id >= 0 ? g.values[id].dtype : DType::kUndefined);
    }
    for (int id : n.outputs) init.out_dtypes.push_back(id >= 0 ? g.values[id].dtype : DType::kUndefined);
    std::unique_ptr<Kernel> k;
    try {
      const OpDef* def = ops.find(n.domain, n.op);
      if (def && !init.in_dtypes.empty() && init.in_dtypes[0] == DType::kF16 && f16_via_f32(*def)) {
        k = make_f16_adapter(*def, init);
      } else if (def) {
        if (!def->dtypes.empty() && !init.in_dtypes.empty()) {
          DType t = init.in_dtypes[0];
          if (std::find(def->dtypes.begin(), def->dtypes.end(), t) == def->dtypes.end())
            fail(ErrorCode::kUnsupported, "no native kernel for input type ", dtype_name(t));
        }
        k = def->factory(init);
      } else if (options_.external) {
        k = options_.external(init);
      } else {
        fail(ErrorCode::kUnsupported, "no native kernel for this op, and no fallback is available");
      }
    } catch (const Error& e) {
      throw Error(e.code(), node_label(n) + ": " + e.what());
    }
    impls_.push_back(k->impl);
    kernels_.push_back(std::move(k));
  }
}

Session::~Session() = default;

SessionStats Session::stats() const { return stats_; }

Tensor& Session::allocate(int id, const Shape& shape, DType dtype) {
  Tensor& t = values_[id];
  t.dtype = graph().values[id].dtype;
  if (t.dtype == DType::kUndefined) t.dtype = dtype;
  MOPT_CHECK(t.dtype != DType::kUndefined, ErrorCode::kInternal, "value '", graph().values[id].name,
             "' has no known dtype");
  MOPT_CHECK(dtype == DType::kUndefined || dtype == t.dtype, ErrorCode::kRuntime, "value '",
             graph().values[id].name, "' is ", dtype_name(t.dtype), " in the program, the kernel produced ",
             dtype_name(dtype));
  t.shape = shape;
  size_t nb = t.nbytes();
  alias_root_[id] = id;
  traced_bytes_[id] = nb;
  if (is_output_[id]) {
    owned_[id] = BufferPool::get(out_pool_, nb);
    t.data = owned_[id].get();
    return t;
  }
  if (plan_ && plan_->offset[id] >= 0 && nb <= plan_->size[id]) {
    t.data = static_cast<char*>(arena_.get()) + plan_->offset[id];
    return t;
  }
  if (plan_) plan_ok_ = false;
  owned_[id] = alloc_buffer(nb);
  stats_.dynamic_allocs++;
  t.data = owned_[id].get();
  return t;
}

void Session::check_feeds(const std::vector<Tensor>& feeds) const {
  const GraphInfo& g = graph();
  if (feeds.size() != g.inputs.size())
    fail(ErrorCode::kInvalidArgument, "expected ", g.inputs.size(), " inputs, got ", feeds.size());
  for (size_t i = 0; i < feeds.size(); ++i) {
    const ValueInfo& v = g.values[g.inputs[i]];
    const Tensor& t = feeds[i];
    if (t.dtype != v.dtype)
      fail(ErrorCode::kInvalidArgument, "input '", v.name, "' expects ", dtype_name(v.dtype), ", got ",
           dtype_name(t.dtype));
    if (!v.has_shape) continue;
    if (t.shape.size() != v.dims.size() && options_.check_static_dims)
      fail(ErrorCode::kInvalidArgument, "input '", v.name, "' expects rank ", v.dims.size(), ", got shape ",
           shape_str(t.shape));
    for (size_t d = 0; d < v.dims.size() && options_.check_static_dims; ++d)
      if (v.dims[d].size >= 0 && v.dims[d].size != t.shape[d])
        fail(ErrorCode::kInvalidArgument, "input '", v.name, "': dimension ", d, " must be ", v.dims[d].size,
             ", got shape ", shape_str(t.shape));
  }
}

std::string Session::signature(const std::vector<Tensor>& feeds) const {
  std::string s;
  for (const Tensor& t : feeds) {
    for (int64_t d : t.shape) s += std::to_string(d) + ",";
    s += ";";
  }
  return s;
}

void Session::build_plan(const std::string& sig, const std::vector<size_t>& scratch) {
  const GraphInfo& g = graph();
  auto plan = std::make_unique<Plan>();
  size_t nv = g.values.size();
  plan->offset.assign(nv, -1);
  plan->size.assign(nv, 0);
  struct Item {
    int id;
    size_t bytes;
    int begin, end;
  };
  auto plannable = [&](int i) {
    return producer_[i] >= 0 && !is_output_[i] && alias_root_[i] == i && traced_bytes_[i] > 0;
  };
  // Concatenations computed in place: along an axis with only size-1 dimensions before it, each
  // input is a contiguous segment of the output, so an input whose producer can write it there is
  // planned inside the output (parent: the concatenation's output; rel: its byte offset there) and
  // the Concat kernel finds it already in place. DenseNet concatenates every layer's features to
  // all the ones before (8% of its time was these copies); nested concatenations nest.
  std::vector<int> parent(nv, -1);
  std::vector<size_t> rel(nv, 0);
  for (const NodeInfo& n : g.nodes) {
    if (n.op != "Concat" || !n.domain.empty() || n.outputs.size() != 1 || n.outputs[0] < 0) continue;
    const int o = n.outputs[0];
    if (!plannable(o)) continue;
    const Tensor& out = values_[o];
    const int64_t r = out.rank();
    int64_t axis = Attrs(n.attrs).get_int("axis", 0);
    if (axis < 0) axis += r;
    if (axis < 0 || axis >= r) continue;
    int64_t outer = 1;
    for (int64_t d = 0; d < axis; ++d) outer *= out.shape[d];
    size_t total = 0;
    bool present = true;
    for (int id : n.inputs) {
      present = present && id >= 0;
      total += id >= 0 ? values_[id].nbytes() : 0;
    }
    if (!present || outer != 1 || total != out.nbytes() || traced_bytes_[o] != out.nbytes()) continue;
    size_t off = 0;
    for (size_t k = 0; k < n.inputs.size(); ++k) {
      const int id = n.inputs[k];
      const size_t nb = values_[id].nbytes();
      const bool once = std::count(n.inputs.begin(), n.inputs.end(), id) == 1;
      if (id != o && once && plannable(id) && parent[id] < 0 && traced_bytes_[id] == nb && off % 64 == 0 &&
          values_[id].dtype == out.dtype) {
        parent[id] = o;
        rel[id] = off;
      }
      off += nb;
    }
  }
  // each value's outermost enclosing concatenation, and its byte offset there
  std::vector<int> root(nv);
  std::vector<size_t> root_off(nv, 0);
  for (size_t i = 0; i < nv; ++i) {
    int v = static_cast<int>(i);
    size_t off = 0;
    while (parent[v] >= 0) {
      off += rel[v];
      v = parent[v];
    }
    root[i] = v;
    root_off[i] = off;
  }
  std::vector<int> begin(nv, 0), end(nv, 0);
  for (size_t i = 0; i < nv; ++i) {
    begin[i] = producer_[i];
    end[i] = std::max(producer_[i], end_[i]);
  }
  for (size_t i = 0; i < nv; ++i) {  // a block lives from its first member's producer to its last reader
    if (root[i] == static_cast<int>(i) || !plannable(static_cast<int>(i))) continue;
    begin[root[i]] = std::min(begin[root[i]], producer_[i]);
    end[root[i]] = std::max(end[root[i]], std::max(producer_[i], end_[i]));
  }
  std::vector<Item> items;
  for (size_t i = 0; i < nv; ++i) {
    if (!plannable(static_cast<int>(i)) || root[i] != static_cast<int>(i)) continue;
    size_t b = (traced_bytes_[i] + 63) / 64 * 64;
    items.push_back({static_cast<int>(i), b, begin[i], end[i]});
  }
  std::stable_sort(items.begin(), items.end(), [](const Item& a, const Item& b) { return a.bytes > b.bytes; });
  struct Placed {
    size_t off, bytes;
    int begin, end;
  };
  std::vector<Placed> placed;
  size_t total = 0;
  for (const Item& it : items) {
    // Lowest offset whose [off, off+bytes) overlaps no placed block alive at the same time.
    std::vector<std::pair<size_t, size_t>> busy;
    for (const Placed& p : placed)
      if (p.begin <= it.end && it.begin <= p.end) busy.emplace_back(p.off, p.off + p.bytes);
    std::sort(busy.begin(), busy.end());
    size_t off = 0;
    for (const auto& b : busy) {
      if (off + it.bytes <= b.first) break;
      off = std::max(off, b.second);
    }
    placed.push_back({off, it.bytes, it.begin, it.end});
    plan->offset[it.id] = static_cast<int64_t>(off);
    plan->size[it.id] = it.bytes;
    total = std::max(total, off + it.bytes);
  }
  for (size_t i = 0; i < nv; ++i) {
    if (root[i] == static_cast<int>(i) || plan->offset[root[i]] < 0) continue;
    plan->offset[i] = plan->offset[root[i]] + static_cast<int64_t>(root_off[i]);
    plan->size[i] = traced_bytes_[i];
  }
  plan->arena_bytes = total;
  plan->workspace_bytes = scratch.empty() ? 0 : *std::max_element(scratch.begin(), scratch.end());
  plans_[sig] = std::move(plan);
  stats_.plans++;
}

std::vector<OwnedTensor> Session::run(const std::vector<Tensor>& feeds, const std::vector<int>& wanted,
                                      std::vector<double>* profile) {
  std::lock_guard<std::mutex> lock(run_mu_);
  const GraphInfo& g = graph();
  check_feeds(feeds);
  for (int w : wanted)
    MOPT_CHECK(w >= 0 && w < static_cast<int>(g.outputs.size()), ErrorCode::kInvalidArgument,
               "output index ", w, " out of range");
  const std::string sig = signature(feeds);
  auto it = plans_.find(sig);
  plan_ = it == plans_.end() ? nullptr : it->second.get();
  plan_ok_ = true;
  if (plan_) {
    if (plan_->arena_bytes > arena_size_) {
      arena_ = alloc_buffer(plan_->arena_bytes);
      arena_size_ = plan_->arena_bytes;
      stats_.arena_grows++;
    }
    if (plan_->workspace_bytes > workspace_size_) {
      workspace_ = alloc_buffer(plan_->workspace_bytes);
      workspace_size_ = plan_->workspace_bytes;
      stats_.arena_grows++;
    }
  }
  for (size_t i = 0; i < g.values.size(); ++i) {
    alias_root_[i] = static_cast<int>(i);
    end_[i] = last_use_[i];
    if (is_output_[i]) end_[i] = static_cast<int>(g.nodes.size());
  }
  for (size_t i = 0; i < feeds.size(); ++i) values_[g.inputs[i]] = feeds[i];
  std::vector<size_t> scratch(g.nodes.size(), 0);
  if (profile) profile->assign(g.nodes.size(), 0.0);

  struct Cleanup {  // drop per-run buffers even when a kernel throws
    Session* s;
    ~Cleanup() {
      for (auto& o : s->owned_) o.reset();
      s->plan_ = nullptr;
    }
  } cleanup{this};

  for (size_t k = 0; k < g.nodes.size(); ++k) {
    const NodeInfo& n = g.nodes[k];
    Context ctx(this, &n);
    auto t0 = std::chrono::steady_clock::now();
    try {
      kernels_[k]->run(ctx);
    } catch (const Error& e) {
      throw Error(e.code(), node_label(n) + ": " + e.what());
    } catch (const std::bad_alloc&) {
      fail(ErrorCode::kRuntime, node_label(n), ": out of memory");
    } catch (const std::exception& e) {
      fail(ErrorCode::kInternal, node_label(n), ": ", e.what());
    }
    if (profile)
      (*profile)[k] = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    scratch[k] = ctx.scratch_used();
    for (int id : n.outputs)
      if (id >= 0 && values_[id].data == nullptr && values_[id].numel() != 0)
        fail(ErrorCode::kInternal, node_label(n), ": did not produce output '", g.values[id].name, "'");
    // Release dynamic buffers whose last reader (through any alias) was this node.
    auto release = [&](int id) {
      if (id < 0) return;
      int r = alias_root_[id];
      if (end_[r] <= static_cast<int>(k) && !is_output_[r] && owned_[r]) owned_[r].reset();
    };
    for (int id : n.inputs) release(id);
    for (int id : n.outputs) release(id);
  }

  std::vector<OwnedTensor> result;
  for (int w : wanted) {
    int id = g.outputs[w];
    OwnedTensor o;
    o.tensor = values_[id];
    if (owned_[id] && values_[id].data == owned_[id].get() && alias_root_[id] == id) {
      o.owner = owned_[id];
    } else {  // a view, an input or a constant: hand out a copy
      o.owner = BufferPool::get(out_pool_, o.tensor.nbytes());
      if (o.tensor.nbytes()) std::memcpy(o.owner.get(), o.tensor.data, o.tensor.nbytes());
      o.tensor.data = o.owner.get();
    }
    result.push_back(std::move(o));
  }
  if (!plan_ || !plan_ok_) build_plan(sig, scratch);
  stats_.runs++;
  stats_.arena_bytes = static_cast<int64_t>(arena_size_);
  for (size_t i = 0; i < feeds.size(); ++i) values_[g.inputs[i]] = Tensor();
  return result;
}

}  // namespace mopt
