// A fixed pool of worker threads. The calling thread takes part in every job, so a pool of
// n threads starts n-1 workers. Nested calls from inside a job run inline. The caller returns as
// soon as every task has run: a worker the OS has not scheduled yet holds nobody up.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace mopt {

class ThreadPool {
 public:
  explicit ThreadPool(int num_threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int num_threads() const { return num_threads_; }

  // fn(task, thread) for every task in [0, ntasks); thread is in [0, num_threads()).
  void run_tasks(int64_t ntasks, const std::function<void(int64_t task, int thread)>& fn);

  // fn(begin, end) over [0, n), split into about num_threads() chunks of at least `grain`.
  void parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn);

 private:
  // A job: published in a slot (two, alternating), claimed task by task through ticket_.
  struct Job {  // atomics: a worker that woke late may read a slot while it is being reused
    std::atomic<const std::function<void(int64_t, int)>*> fn{nullptr};
    std::atomic<int64_t> ntasks{0};
  };
  void worker_loop(int index);
  // Claims and runs tasks of the current job until none is left (or the job is no longer current).
  void work(int thread);

  int num_threads_;
  std::vector<std::thread> workers_;
  std::mutex mu_;
  std::condition_variable cv_;
  // High 32 bits: the current job's id; low 32 bits: its next unclaimed task. A task is claimed
  // by a compare-and-swap that also checks the id, so a worker that wakes late can never run a
  // task of a job that is over, and the caller waits only for tasks that were actually claimed,
  // never for a worker that has not woken up yet.
  std::atomic<uint64_t> ticket_{0};
  Job jobs_[2];
  std::atomic<int64_t> done_[2] = {0, 0};  // tasks finished, per slot
  uint32_t last_id_ = 0;
  std::atomic<bool> stop_{false};
};

}  // namespace mopt
