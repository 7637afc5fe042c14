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
    stop_ = true;
    generation_.fetch_add(1);
  }
  cv_.notify_all();
  for (auto& t : workers_) t.join();
}

void ThreadPool::work(int thread) {
  for (;;) {
    int64_t t = next_task_.fetch_add(1, std::memory_order_relaxed);
    if (t >= ntasks_) break;
    (*job_)(t, thread);
  }
}

void ThreadPool::worker_loop(int index) {
  uint64_t seen = 0;
  for (;;) {
    uint64_t gen = generation_.load(std::memory_order_acquire);
    for (int spin = 0; gen == seen && spin < kSpinIterations; ++spin) {
      pause_or_yield(spin);
      gen = generation_.load(std::memory_order_acquire);
    }
    if (gen == seen) {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] { return generation_.load(std::memory_order_acquire) != seen; });
      gen = generation_.load(std::memory_order_acquire);
    }
    seen = gen;
    if (stop_) return;
    t_in_pool_job = true;
    work(index);
    t_in_pool_job = false;
    active_.fetch_sub(1, std::memory_order_acq_rel);
  }
}

void ThreadPool::run_tasks(int64_t ntasks, const std::function<void(int64_t, int)>& fn) {
  if (ntasks <= 0) return;
  if (ntasks == 1 || num_threads_ == 1 || t_in_pool_job) {
    for (int64_t t = 0; t < ntasks; ++t) fn(t, 0);
    return;
  }
  job_ = &fn;
  ntasks_ = ntasks;
  next_task_.store(0, std::memory_order_relaxed);
  active_.store(num_threads_ - 1, std::memory_order_relaxed);
  {
    std::lock_guard<std::mutex> lock(mu_);
    generation_.fetch_add(1, std::memory_order_acq_rel);
  }
  cv_.notify_all();
  t_in_pool_job = true;
  work(0);
  t_in_pool_job = false;
  for (int spin = 0; active_.load(std::memory_order_acquire) != 0; ++spin) pause_or_yield(spin);
  job_ = nullptr;
}

void ThreadPool::parallel_for(int64_t n, int64_t grain,
                              const std::function<void(int64_t, int64_t)>& fn) {
  if (n <= 0) return;
  grain = std::max<int64_t>(1, grain);
  int64_t chunks = std::min<int64_t>(num_threads_, (n + grain - 1) / grain);
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
