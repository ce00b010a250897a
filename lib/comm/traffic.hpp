#pragma once
// The counters behind GroupCounters (see mics/comm/group.hpp) and the helpers backends
// record with. The MPI backend records from its progress thread while the caller reads
// snapshots, hence the mutex.
#include <cstdint>
#include <mutex>

#include "mics/comm/group.hpp"

namespace mics::comm::detail {

struct Traffic {
  std::mutex mu;
  GroupCounters c;
  int active = 0;          // operations in flight (busy-time union)
  double busy_since = 0;   // when `active` last rose from 0 (MPI_Wtime)
};

// An operation starts (issue time) / ends (actual completion): busy time is the union.
inline void begin_busy(Traffic& t, double now) {
  std::lock_guard<std::mutex> lock(t.mu);
  if (t.active++ == 0) t.busy_since = now;
}
inline void end_busy(Traffic& t, double now) {
  std::lock_guard<std::mutex> lock(t.mu);
  if (t.active > 0 && --t.active == 0) t.c.seconds += now - t.busy_since;
}
inline void count_send(Traffic& t, std::uint64_t bytes) {
  std::lock_guard<std::mutex> lock(t.mu);
  t.c.sends += 1;
  t.c.bytes += bytes;
}
inline void count_call(Traffic& t, std::uint64_t message) {
  std::lock_guard<std::mutex> lock(t.mu);
  t.c.calls += 1;
  t.c.message_bytes += message;
}
inline void count_exposed(Traffic& t, double seconds) {
  std::lock_guard<std::mutex> lock(t.mu);
  t.c.exposed_seconds += seconds;
}

// The ring model, for backends that cannot see their transfers (NCCL): what a ring sends
// per rank, (n-1)/n of the message (2(n-1)/n for all-reduce).
enum class Pattern { gather_or_scatter, all_reduce, broadcast, barrier };

inline std::uint64_t ring_bytes(Pattern pattern, int n, std::uint64_t message) {
  if (n <= 1 || pattern == Pattern::barrier) return 0;
  const auto un = static_cast<std::uint64_t>(n);
  const std::uint64_t per_rank = message * (un - 1) / un;
  return pattern == Pattern::all_reduce ? 2 * per_rank : per_rank;
}

// One completed operation of a backend without its own accounting (NCCL): the modelled
// bytes and its duration on the group's stream (operations of one group are serialised
// there, so their sum is the busy time).
inline void record(GroupCounters& c, std::uint64_t bytes, std::uint64_t message, double seconds) {
  c.calls += 1;
  c.bytes += bytes;
  c.message_bytes += message;
  c.seconds += seconds;
}

}  // namespace mics::comm::detail
