#pragma once
// The ring model behind GroupCounters::bytes (see mics/comm/group.hpp), shared by the
// backends so that MPI and NCCL count the same way.
#include <cstdint>

#include "mics/comm/group.hpp"

namespace mics::comm::detail {

enum class Pattern { gather_or_scatter, all_reduce, broadcast, barrier };

inline std::uint64_t ring_bytes(Pattern pattern, int n, std::uint64_t message) {
  if (n <= 1 || pattern == Pattern::barrier) return 0;
  const auto un = static_cast<std::uint64_t>(n);
  const std::uint64_t per_rank = message * (un - 1) / un;
  switch (pattern) {
    case Pattern::gather_or_scatter: return per_rank;
    case Pattern::all_reduce: return 2 * per_rank;
    case Pattern::broadcast: return per_rank;
    case Pattern::barrier: return 0;
  }
  return 0;
}

inline void record(GroupCounters& c, std::uint64_t bytes, std::uint64_t message, double seconds) {
  c.calls += 1;
  c.bytes += bytes;
  c.message_bytes += message;
  c.seconds += seconds;
}

}  // namespace mics::comm::detail
