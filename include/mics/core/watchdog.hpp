#pragma once
// The stall watchdog. Blocking waits on peers (a collective's Request::wait, the host-side
// agreements) open a Scope; a background thread checks the innermost open scope and,
// when it has been open longer than the timeout, prints one line naming what was being
// waited for and ends the process with exit status 1 (mpirun then ends the others).
// Nothing is printed or changed while waits finish in time.
//
// The thread makes no MPI call and touches nothing but its own state, so it is safe with
// MPI_THREAD_FUNNELED. The timeout is --comm-timeout (default 300 s); 0 turns it off.
#include <string>

namespace mics::watchdog {

void set_timeout(double seconds);
double timeout() noexcept;
// The program name used in the line ("mics-train").
void set_program(const std::string& name);

class Scope {
public:
  using Describe = std::string (*)(const void* context);
  // describe(context) is called only when the wait has timed out, from the watchdog
  // thread, while the waiting thread is still inside the scope.
  Scope(Describe describe, const void* context) noexcept;
  explicit Scope(const char* text) noexcept;  // static text
  ~Scope();
  Scope(const Scope&) = delete;
  Scope& operator=(const Scope&) = delete;

private:
  bool active_ = false;  // the watchdog was on when the scope opened
};

}  // namespace mics::watchdog
