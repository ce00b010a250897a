#pragma once
// Check macros for MPI calls: on failure they throw mics::Error naming the call, the
// file and line, the world rank and MPI's own description of the error.
#include <mpi.h>

#include <string>

#include "mics/core/error.hpp"

namespace mics::detail {

// World rank, or -1 before MPI_Init / after MPI_Finalize.
int world_rank_or_minus_one() noexcept;

[[noreturn]] void throw_call_failure(const char* api, const char* call, const std::string& why,
                                     const char* file, int line, const char* hint);

std::string mpi_error_string(int code);

}  // namespace mics::detail

#define MICS_CHECK_MPI(call)                                                                 \
  do {                                                                                       \
    const int mics_rc_ = (call);                                                             \
    if (mics_rc_ != MPI_SUCCESS)                                                             \
      ::mics::detail::throw_call_failure("MPI", #call, ::mics::detail::mpi_error_string(mics_rc_), \
                                         __FILE__, __LINE__,                                 \
                                         "check that every rank runs the same configuration"); \
  } while (0)

// For preconditions inside the library: a broken invariant is a bug, reported the
// same way so that it names where it happened.
#define MICS_ASSERT(cond, msg)                                                               \
  do {                                                                                       \
    if (!(cond))                                                                             \
      ::mics::detail::throw_call_failure("assert", #cond, (msg), __FILE__, __LINE__,         \
                                         "this is a bug in mics; please report it");         \
  } while (0)
