#pragma once
// Agreement on local failures. Work that may fail on some ranks only (opening a file,
// allocating, validating data read from disk) is followed by mics::agree, which every
// rank of the communicator reaches: if any rank failed, all of them throw the same
// mics::AgreedError. The message is the lowest failing rank's; when only some ranks
// failed it is prefixed with "rank R (host H): " so that a node-local problem is found
// at once. This keeps every collective on a path that all ranks take.
//
// The collectives inside run under a watchdog scope (watchdog.hpp): a peer that never
// arrives ends the job after --comm-timeout seconds instead of hanging it.
#include <mpi.h>

#include <string>

namespace mics {

// local_error empty means this rank succeeded.
void agree(MPI_Comm comm, const std::string& local_error);

// The same for a check that rank 0 makes on behalf of every rank (a shared file, a
// directory): its verdict is everyone's, so the message does not name the rank.
void agree_with_root(MPI_Comm comm, const std::string& root_error);

// Bitwise OR of every rank's flags (one small all-reduce), for decisions that must be
// taken together: "a stop signal arrived", "this step was not finite".
unsigned agree_flags(MPI_Comm comm, unsigned local_flags, const char* what);

// This process's host name (for messages).
std::string host_name();

}  // namespace mics
