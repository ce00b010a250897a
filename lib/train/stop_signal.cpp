#include "mics/train/stop_signal.hpp"

#include <csignal>

namespace mics::train {
namespace {

volatile std::sig_atomic_t g_bits = 0;
struct sigaction g_old[3];
constexpr int kSignals[3] = {SIGTERM, SIGUSR1, SIGINT};

extern "C" void on_stop_signal(int sig) {
  // Async-signal-safe: one store of a sig_atomic_t.
  const int bit = sig == SIGTERM ? kStopTerm : sig == SIGUSR1 ? kStopUsr1 : kStopInt;
  g_bits = g_bits | bit;
}

}  // namespace

StopSignals::StopSignals() {
  for (int i = 0; i < 3; ++i) {
    struct sigaction sa {};
    sa.sa_handler = on_stop_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;  // blocking calls (file writes, MPI progress) carry on
    sigaction(kSignals[i], &sa, &g_old[i]);
  }
}

StopSignals::~StopSignals() {
  for (int i = 0; i < 3; ++i) sigaction(kSignals[i], &g_old[i], nullptr);
}

unsigned StopSignals::pending() noexcept { return static_cast<unsigned>(g_bits); }

std::string stop_signal_name(unsigned bits) {
  if (bits & kStopTerm) return "SIGTERM";
  if (bits & kStopUsr1) return "SIGUSR1";
  if (bits & kStopInt) return "SIGINT";
  return "a signal";
}

}  // namespace mics::train
