#include "mics/core/watchdog.hpp"

#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <mutex>
#include <thread>
#include <vector>

#include "mics/core/agree.hpp"
#include "mics/core/check.hpp"

namespace mics::watchdog {
namespace {

using Clock = std::chrono::steady_clock;

struct Entry {
  Scope::Describe describe;
  const void* context;
  Clock::time_point since;
};

std::string static_text(const void* text) { return static_cast<const char*>(text); }

class Watchdog {
public:
  static Watchdog& get() {
    static Watchdog w;
    return w;
  }
  ~Watchdog() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stop_ = true;
    }
    wake_.notify_all();
    if (thread_.joinable()) thread_.join();
  }

  void set_timeout(double s) {
    std::lock_guard<std::mutex> lock(mutex_);
    timeout_ = s;
    // The rank is known now (MPI is up); it is read by the thread without MPI calls.
    rank_ = detail::world_rank_or_minus_one();
    host_ = host_name();
  }
  double timeout() {
    std::lock_guard<std::mutex> lock(mutex_);
    return timeout_;
  }
  void set_program(const std::string& p) {
    std::lock_guard<std::mutex> lock(mutex_);
    program_ = p;
  }

  bool push(Scope::Describe d, const void* ctx) {
    std::lock_guard<std::mutex> lock(mutex_);
    if (timeout_ <= 0) return false;
    open_.push_back({d, ctx, Clock::now()});
    if (!thread_.joinable()) thread_ = std::thread([this] { run(); });
    return true;
  }
  void pop() {
    std::lock_guard<std::mutex> lock(mutex_);
    if (!open_.empty()) open_.pop_back();
  }

private:
  void run() {
    std::unique_lock<std::mutex> lock(mutex_);
    while (!stop_) {
      wake_.wait_for(lock, std::chrono::milliseconds(100));
      if (stop_ || open_.empty() || timeout_ <= 0) continue;
      const Entry& e = open_.back();
      const double waited = std::chrono::duration<double>(Clock::now() - e.since).count();
      if (waited < timeout_) continue;
      // The waiting thread is blocked inside its scope (its pop needs this lock), so the
      // context is alive while it is described.
      const std::string what = e.describe(e.context);
      std::fprintf(stderr,
                   "%s: error on rank %d (host %s): no progress for %.0f s in %s; a peer is "
                   "stalled or gone (see --comm-timeout)\n",
                   program_.c_str(), rank_, host_.c_str(), waited, what.c_str());
      std::fflush(stderr);
      // Not MPI_Abort (its banner) and not exit() (static destructors would run while
      // the main thread sits in MPI): mpirun sees the status and ends the other ranks.
      ::_exit(1);
    }
  }

  std::mutex mutex_;
  std::condition_variable wake_;
  std::thread thread_;
  std::vector<Entry> open_;
  double timeout_ = 0;
  bool stop_ = false;
  int rank_ = -1;
  std::string host_ = "?", program_ = "mics";
};

}  // namespace

void set_timeout(double seconds) { Watchdog::get().set_timeout(seconds); }
double timeout() noexcept { return Watchdog::get().timeout(); }
void set_program(const std::string& name) { Watchdog::get().set_program(name); }

Scope::Scope(Describe describe, const void* context) noexcept {
  try {
    active_ = Watchdog::get().push(describe, context);
  } catch (...) {
    active_ = false;  // no watchdog for this wait rather than no wait
  }
}
Scope::Scope(const char* text) noexcept : Scope(static_text, text) {}
Scope::~Scope() {
  if (active_) Watchdog::get().pop();
}

}  // namespace mics::watchdog
