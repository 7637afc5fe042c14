#include "mopt/thread_pool.h"

#include <algorithm>

#if defined(__x86_64__)
#include <immintrin.h>
#define MOPT_PAUSE() _mm_pause()
#elif defined(__aarch64__)
#define MOPT_PAUSE() __asm__ volatile("yield")
#else
#define MOPT_PAUSE() ((void)0)
#endif

namespace mopt {

namespace {
thread_local bool t_in_pool_job = false;
// Spin this many iterations for the next job before sleeping: kernels come back to back,
// and waking a sleeping thread costs tens of microseconds.
constexpr int kSpinIterations = 20000;
// Every this many pause iterations a spinning thread yields its core: on a machine with more
// runnable threads than cores (other processes), the thread it waits for may be queued behind it on
// the same core, and pure spinning would burn the whole time slice before it ran.
constexpr int kYieldEvery = 256;

inline void pause_or_yield(int spin) {
  if (spin % kYieldEvery == kYieldEvery - 1) std::this_thread::yield();
  else MOPT_PAUSE();
}
}  // namespace

ThreadPool::ThreadPool(int num_threads) : num_threads_(std::max(1, num_threads)) {
  for (int i = 1; i < num_threads_; ++i) workers_.emplace_back([this, i] { worker_loop(i); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_.store(true, std::memory_order_release);
    const uint32_t id = ++last_id_;  // a new id, with no job in its slot, wakes every worker
    jobs_[id & 1].fn.store(nullptr, std::memory_order_relaxed);
    jobs_[id & 1].ntasks.store(0, std::memory_order_relaxed);
    ticket_.store(uint64_t{id} << 32, std::memory_order_release);
  }
  cv_.notify_all();
  for (auto& t : workers_) t.join();
}

void ThreadPool::work(int thread) {
  uint64_t s = ticket_.load(std::memory_order_acquire);
  for (;;) {
    const uint64_t id = s >> 32, t = s & 0xffffffffu;
    const Job& job = jobs_[id & 1];
    // Read before the claim; if the slot was reused meanwhile, the id has moved on and the claim fails.
    const auto* fn = job.fn.load(std::memory_order_relaxed);
    const int64_t n = job.ntasks.load(std::memory_order_relaxed);
    if (fn == nullptr || static_cast<int64_t>(t) >= n) return;
    if (!ticket_.compare_exchange_weak(s, s + 1, std::memory_order_acq_rel, std::memory_order_acquire)) continue;
    (*fn)(static_cast<int64_t>(t), thread);
    done_[id & 1].fetch_add(1, std::memory_order_acq_rel);
    s = ticket_.load(std::memory_order_acquire);
  }
}

void ThreadPool::worker_loop(int index) {
  uint64_t seen = 0;
  for (;;) {
    uint64_t id = ticket_.load(std::memory_order_acquire) >> 32;
    for (int spin = 0; id == seen && spin < kSpinIterations; ++spin) {
      pause_or_yield(spin);
      id = ticket_.load(std::memory_order_acquire) >> 32;
    }
    if (id == seen) {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] { return (ticket_.load(std::memory_order_acquire) >> 32) != seen; });
      id = ticket_.load(std::memory_order_acquire) >> 32;
    }
    seen = id;
    if (stop_.load(std::memory_order_acquire)) return;
    t_in_pool_job = true;
    work(index);
    t_in_pool_job = false;
  }
}

void ThreadPool::run_tasks(int64_t ntasks, const std::function<void(int64_t, int)>& fn) {
  if (ntasks <= 0) return;
  if (ntasks == 1 || num_threads_ == 1 || t_in_pool_job || ntasks > int64_t{0xffffffff}) {
    for (int64_t t = 0; t < ntasks; ++t) fn(t, 0);
    return;
  }
  const uint32_t id = ++last_id_;
  Job& job = jobs_[id & 1];
  job.fn.store(&fn, std::memory_order_relaxed);
  job.ntasks.store(ntasks, std::memory_order_relaxed);
  done_[id & 1].store(0, std::memory_order_relaxed);
  {
    std::lock_guard<std::mutex> lock(mu_);  // no worker can miss the new id between its check and its wait
    ticket_.store(uint64_t{id} << 32, std::memory_order_release);
  }
  cv_.notify_all();
  t_in_pool_job = true;
  work(0);
  t_in_pool_job = false;
  for (int spin = 0; done_[id & 1].load(std::memory_order_acquire) != ntasks; ++spin) pause_or_yield(spin);
}

void ThreadPool::parallel_for(int64_t n, int64_t grain,
                              const std::function<void(int64_t, int64_t)>& fn) {
  if (n <= 0) return;
  grain = std::max<int64_t>(1, grain);
  // A few chunks per thread: a worker descheduled in the middle of a chunk holds the caller up for
  // that chunk only, and the others share out the rest.
  int64_t chunks = std::min<int64_t>(num_threads_ == 1 ? 1 : 4 * int64_t{num_threads_}, (n + grain - 1) / grain);
  if (chunks <= 1) {
    fn(0, n);
    return;
  }
  int64_t step = (n + chunks - 1) / chunks;
  run_tasks(chunks, [&](int64_t t, int) {
    int64_t b = t * step, e = std::min(n, b + step);
    if (b < e) fn(b, e);
  });
}

}  // namespace mopt
