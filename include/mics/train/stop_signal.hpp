#pragma once
// Graceful stops. SIGTERM (scancel, a time limit), SIGUSR1 (Slurm's --signal, or
// `kill -USR1` to mpirun, which forwards it) and SIGINT only set a flag here; the trainer
// agrees on the flags of all ranks at the next step boundary, saves a checkpoint and
// exits with kStoppedExitCode. Further signals while that happens only set the flag again,
// so a second signal during the save cannot interrupt or corrupt it.
#include <string>

namespace mics::train {

// EX_TEMPFAIL: "try again" (resume). Slurm and job scripts test for this value.
inline constexpr int kStoppedExitCode = 75;

// Flags as agreed over the ranks (bitwise OR).
enum StopBits : unsigned { kStopTerm = 1u, kStopUsr1 = 2u, kStopInt = 4u };

// Installs the handlers (idempotent); the previous ones are restored on destruction.
class StopSignals {
public:
  StopSignals();
  ~StopSignals();
  StopSignals(const StopSignals&) = delete;
  StopSignals& operator=(const StopSignals&) = delete;
  // This rank's received signals, as StopBits.
  static unsigned pending() noexcept;
};

// "SIGTERM" for the first signal named in `bits` (TERM, USR1, INT in that order).
std::string stop_signal_name(unsigned bits);

}  // namespace mics::train
