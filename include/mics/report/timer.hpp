#pragma once
// Wall-clock timers on std::chrono::steady_clock (monotonic: never jumps with NTP).
// They time the host; device work must be synchronised before reading them.
#include <chrono>

namespace mics::report {

// Time since construction or the last reset().
class Timer {
public:
  Timer() : start_(std::chrono::steady_clock::now()) {}
  void reset() { start_ = std::chrono::steady_clock::now(); }
  double elapsed_s() const {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  }
  double elapsed_ms() const { return 1e3 * elapsed_s(); }

private:
  std::chrono::steady_clock::time_point start_;
};

// Sums the intervals between start() and stop(), e.g. the time compute spent waiting
// for a collective over one step. stop() without start() is ignored.
class Stopwatch {
public:
  void start() {
    running_ = true;
    t0_ = std::chrono::steady_clock::now();
  }
  void stop() {
    if (!running_) return;
    total_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0_).count();
    running_ = false;
  }
  double total_ms() const { return 1e3 * total_; }
  void clear() {
    total_ = 0.0;
    running_ = false;
  }

private:
  std::chrono::steady_clock::time_point t0_{};
  double total_ = 0.0;
  bool running_ = false;
};

}  // namespace mics::report
