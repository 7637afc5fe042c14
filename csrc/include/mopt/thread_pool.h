// A fixed pool of worker threads. The calling thread takes part in every job, so a pool of
// n threads starts n-1 workers. Nested calls from inside a job run inline.
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
  void worker_loop(int index);
  void work(int thread);

  int num_threads_;
  std::vector<std::thread> workers_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::atomic<uint64_t> generation_{0};
  std::atomic<int64_t> next_task_{0};
  std::atomic<int> active_{0};
  int64_t ntasks_ = 0;
  const std::function<void(int64_t, int)>* job_ = nullptr;
  bool stop_ = false;
};

}  // namespace mopt
