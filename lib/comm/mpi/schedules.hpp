#pragma once
// The rounds of each collective of the MPI backend (docs/DESIGN.md section 7 gives the
// volumes). Every ring runs in Group::ring() order, i.e. world-rank (node) order, so a
// ring over ranks on k nodes crosses each node boundary once per direction; chunk and
// block indices stay those of the communicator, so results land where the interface
// says. Per rank, in bytes of the full message M:
//   all_gather      ring, n-1 rounds                         sends (n-1)/n M
//   reduce_scatter  ring, n-1 rounds, sum on receipt           sends (n-1)/n M
//   all_reduce      ring reduce-scatter + ring all-gather      sends 2(n-1)/n M
//                   (small messages on 2^m ranks: recursive doubling, m rounds, m M)
//                   over N >= 2 nodes of m >= 2 members (Group::node_count): ring
//                   reduce-scatter in the node, ring all-reduce of the rank's 1/m across
//                   nodes, ring all-gather in the node ("hierarchical_ring"): still
//                   2(n-1)/n M per rank, but 2(N-1)/N M per node link
//                   (flat: 2(n-1)/n M), in 2(m-1) + 2(N-1) rounds
//   broadcast       chain from the root in ring order          sends M (the last: 0)
// Sums: element-wise, f32/f64 natively, bf16 widened to f32 and rounded once per
// addition. Every element's sum is formed once, at one rank, and copied to the others, so
// all ranks hold the same bits (recursive doubling: both partners add the same pair).
#include <memory>

#include "progress.hpp"

namespace mics::comm::mpi {

struct Ring {
  int n = 1, pos = 0;
  const std::vector<int>* order = nullptr;  // ring position -> communicator rank
  // Group::node_count(): N > 1 when positions t*m .. t*m+m-1 (m = n/N >= 2) are node t's
  // members and all-reduce runs two-level; 1 otherwise.
  int nodes = 1;
  int at(long long position) const {
    const long long m = ((position % n) + n) % n;
    return (*order)[static_cast<std::size_t>(m)];
  }
  int next() const { return at(pos + 1); }
  int prev() const { return at(pos - 1); }
};

Ring ring_of(const Group& g);

void sum_into(void* dst, const void* src, std::size_t count, DType dt);

// Each fills op.lanes (and op.scratch); op.algorithm names what runs. The caller gives
// every lane its tag.
void schedule_all_gather(P2POp& op, const Ring& r, void* buf, std::size_t chunk_bytes);
void schedule_reduce_scatter(P2POp& op, const Ring& r, const void* send, void* recv, std::size_t chunk_count,
                             DType dt);
void schedule_all_reduce(P2POp& op, const Ring& r, void* buf, std::size_t count, DType dt);
// The ring (or, with r.nodes > 1, two-level "hierarchical_ring") all-reduce whatever the
// size: what schedule_all_reduce runs above the small-message limit.
void schedule_ring_all_reduce(P2POp& op, const Ring& r, void* buf, std::size_t count, DType dt);
// What schedule_all_reduce runs for a message of `bytes` on r: "none", "ring",
// "recursive_doubling" or "hierarchical_ring".
const char* all_reduce_algorithm(const Ring& r, std::size_t bytes);
void schedule_broadcast(P2POp& op, const Ring& r, void* buf, std::size_t bytes, int root);

// Messages up to this size on a power-of-two group use recursive doubling.
constexpr std::size_t kSmallAllReduceBytes = 32 * 1024;

// A ring whose rounds carry at least 2 x kLaneBytes runs as several lanes (progress.hpp,
// Lane), up to kMaxLanes, each on its own slice of every chunk.
constexpr std::size_t kLaneBytes = 64 * 1024;
constexpr std::size_t kMaxLanes = 4;

}  // namespace mics::comm::mpi
