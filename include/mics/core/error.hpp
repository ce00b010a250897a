#pragma once
// The project's error types. Everything that can go wrong is reported by throwing one of
// them with one line a user can act on; run_mpi_program (mpi_env.hpp) turns it into a
// message and a non-zero exit.
//
// Whether an error was raised on every rank is never a property of its type: a rank
// cannot know what its peers do. Only mics::agree (agree.hpp) establishes it, and it
// throws AgreedError, whose message is the same on every rank of the communicator.
#include <stdexcept>
#include <string>

namespace mics {

class Error : public std::runtime_error {
public:
  explicit Error(const std::string& what) : std::runtime_error(what) {}
  // Kept for older callers; the flag is ignored (see above: agreement decides).
  Error(const std::string& what, bool /*claimed_on_every_rank*/) : std::runtime_error(what) {}
};

// A user's input is wrong (option, preset, layout, file). Rank-local like any other
// error until it has been agreed on.
class UsageError : public Error {
public:
  explicit UsageError(const std::string& what) : Error(what) {}
};

// Thrown by mics::agree on every rank of its communicator, with the same message.
// world() says whether that communicator spans MPI_COMM_WORLD, i.e. whether the whole
// job can leave cleanly together.
class AgreedError : public Error {
public:
  AgreedError(const std::string& what, bool world) : Error(what), world_(world) {}
  bool world() const noexcept { return world_; }

private:
  bool world_;
};

}  // namespace mics
