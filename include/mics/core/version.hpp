#pragma once
// What every mics program prints for --version: one place, so that the tools agree.
#include <string>

namespace mics {

// Lines of the form
//   <program> 0.1.0 (commit 6258869, Release build)
//   backends: cpu (OpenBLAS + OpenMP, MPI collectives), cuda (cuBLAS, NCCL)
// ending in a newline. The commit is the source tree's at configure time ("unknown"
// outside a git checkout; "-dirty" when it had uncommitted changes then).
std::string version_text(const char* program);

}  // namespace mics
