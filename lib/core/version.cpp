#include "mics/core/version.hpp"

#ifndef MICS_VERSION
#define MICS_VERSION "unknown"
#endif
#ifndef MICS_GIT_COMMIT
#define MICS_GIT_COMMIT "unknown"
#endif
#ifndef MICS_BUILD_TYPE
#define MICS_BUILD_TYPE "unknown"
#endif

namespace mics {

std::string version_text(const char* program) {
  std::string text = std::string(program) + " " + MICS_VERSION + " (commit " + MICS_GIT_COMMIT + ", " +
                     MICS_BUILD_TYPE + " build)\nbackends: cpu (OpenBLAS + OpenMP, MPI collectives)";
#if MICS_VERSION_CUDA
  text += ", cuda (cuBLAS, NCCL or host-staged MPI)";
#else
  text += "; built without CUDA";
#endif
  return text + "\n";
}

}  // namespace mics
