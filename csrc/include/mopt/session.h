// A loaded program bound to kernels, a thread pool and a memory planner; runs it on inputs.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "mopt/cpu_features.h"
#include "mopt/kernel.h"
#include "mopt/program.h"
#include "mopt/thread_pool.h"

namespace mopt {

// Creates kernels for nodes the native registry does not handle (the Python fallback).
using ExternalKernelFactory = std::function<std::unique_ptr<Kernel>(const KernelInit&)>;

struct SessionOptions {
  int intra_op_threads = 0;  // 0 = all logical cores
  Isa isa = Isa::kScalar;    // dispatch cap (use default_isa() for the environment's choice)
  ExternalKernelFactory external;
  // false for a control-flow body: its declared input shapes are hints (a loop-carried value may
  // change shape between iterations); only dtypes are checked.
  bool check_static_dims = true;
};

// An output handed to the caller: owns its bytes.
struct OwnedTensor {
  Tensor tensor;
  std::shared_ptr<void> owner;
};

// Output buffers come back here when the caller drops them, so the next run writes into memory
// whose pages are already mapped: a fresh 32 MB output (GPT-2's logits at batch 8) page-faults on
// every run and halves the speed of the GEMM that fills it.
class BufferPool {
 public:
  ~BufferPool();
  static std::shared_ptr<void> get(const std::shared_ptr<BufferPool>& pool, size_t nbytes);

 private:
  void put(void* p, size_t capacity);
  std::mutex mu_;
  std::multimap<size_t, void*> free_;  // capacity -> buffer
  size_t free_bytes_ = 0;
};

struct SessionStats {
  int64_t runs = 0;
  int64_t plans = 0;            // memory plans built (one per input-shape signature)
  int64_t arena_bytes = 0;      // current arena size
  int64_t arena_grows = 0;      // times the arena or the scratch workspace was (re)allocated
  int64_t dynamic_allocs = 0;   // intermediate buffers allocated outside a plan
};

class Session {
 public:
  Session(std::shared_ptr<const Program> program, SessionOptions options);
  // A session over a subgraph of `program` (a control-flow body), running on the caller's pool.
  // `graph` and `pool` must outlive the session.
  Session(std::shared_ptr<const Program> program, const GraphInfo* graph, SessionOptions options,
          ThreadPool* pool);
  ~Session();

  const GraphInfo& graph() const { return *graph_; }
  const std::vector<std::string>& kernel_impls() const { return impls_; }  // per node
  SessionStats stats() const;
  int num_threads() const { return pool_->num_threads(); }
  Isa isa() const { return options_.isa; }

  // feeds: one per graph input, in order. Returns the requested outputs (indices into outputs()).
  // profile (optional): receives per-node seconds.
  std::vector<OwnedTensor> run(const std::vector<Tensor>& feeds, const std::vector<int>& wanted,
                               std::vector<double>* profile = nullptr);

 private:
  struct Plan;
  class Context;
  void check_feeds(const std::vector<Tensor>& feeds) const;
  std::string signature(const std::vector<Tensor>& feeds) const;
  void build_plan(const std::string& sig, const std::vector<size_t>& scratch);
  Tensor& allocate(int id, const Shape& shape, DType dtype);

  void init_kernels();

  std::shared_ptr<const Program> program_;
  const GraphInfo* graph_;
  SessionOptions options_;
  std::unique_ptr<ThreadPool> own_pool_;  // null for a subgraph session (it borrows its parent's)
  ThreadPool* pool_;
  std::vector<std::unique_ptr<Kernel>> kernels_;
  std::vector<std::string> impls_;
  std::vector<int> last_use_;        // per value: last node index reading it
  std::vector<int> producer_;        // per value: node index producing it (-1: input/const)
  std::vector<bool> is_output_;      // per value
  std::vector<bool> is_const_;       // per value
  std::vector<ConstInfo> wide_;      // per constant: its float32 copy when the blob stores it as float16
  std::vector<std::shared_ptr<void>> wide_bufs_;  // the bytes of those copies

  // Per-run state (guarded by run_mu_).
  std::mutex run_mu_;
  std::vector<Tensor> values_;
  std::vector<std::shared_ptr<void>> owned_;  // dynamic buffers and output buffers, per value
  std::vector<int> alias_root_;      // per value: the value whose bytes it views (itself if none)
  std::vector<int> end_;             // per value: last node reading it or any view of it, this run
  std::vector<size_t> traced_bytes_; // per value, bytes allocated in the last unplanned run
  std::map<std::string, std::unique_ptr<Plan>> plans_;
  Plan* plan_ = nullptr;             // plan for the current run, if any
  bool plan_ok_ = true;
  std::shared_ptr<void> arena_;
  size_t arena_size_ = 0;
  std::shared_ptr<void> workspace_;
  std::shared_ptr<BufferPool> out_pool_ = std::make_shared<BufferPool>();
  size_t workspace_size_ = 0;
  SessionStats stats_;
};

}  // namespace mopt
