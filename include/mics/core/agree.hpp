#pragma once
// Agreement on local failures. Work that may fail on some ranks only (opening a file,
// allocating, validating data read from disk) is followed by mics::agree, which every
// rank of the communicator reaches: if any rank failed, all of them throw the same
// mics::Error (marked `everywhere` when comm spans the world), carrying the message of
// the lowest failing rank. This keeps every collective on a path that all ranks take.
#include <mpi.h>

#include <string>

namespace mics {

// local_error empty means this rank succeeded.
void agree(MPI_Comm comm, const std::string& local_error);

}  // namespace mics
