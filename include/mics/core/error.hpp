#pragma once
// The project's error type. Everything that can go wrong is reported by throwing
// mics::Error with one line a user can act on; the program's main turns it into a
// message and a non-zero exit.
#include <stdexcept>
#include <string>

namespace mics {

class Error : public std::runtime_error {
public:
  // `everywhere` marks an error that every rank of MPI_COMM_WORLD raises together
  // (a bad option, or a failure agreed on through mics::agree). Such an error ends
  // the job cleanly; any other one forces an abort, since peers may be waiting in a
  // collective that this rank will never reach.
  explicit Error(const std::string& what, bool everywhere = false)
      : std::runtime_error(what), everywhere_(everywhere) {}
  bool everywhere() const noexcept { return everywhere_; }

private:
  bool everywhere_;
};

// A user's input is wrong (option, preset, layout, file). Raised on every rank alike,
// since every rank parses the same input.
class UsageError : public Error {
public:
  explicit UsageError(const std::string& what) : Error(what, true) {}
};

}  // namespace mics
