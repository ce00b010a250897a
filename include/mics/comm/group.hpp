#pragma once
// A communicator and its traffic counters. Group owns its MPI_Comm (freed in the
// destructor), so every Group must be destroyed before MPI_Finalize: keep them in a
// scope inside run_mpi_program's body, never in a static.
#include <mpi.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace mics::comm {

namespace detail {
struct Traffic;  // lib/comm/traffic.hpp: the counters and what guards them
}

// What one rank did on one group.
//   calls           collectives completed on this group (a barrier counts, moves 0 bytes)
//   sends           point-to-point sends this rank handed to the transport (MPI backend:
//                   each MPI_Isend its ring algorithms posted)
//   bytes           bytes this rank handed to the transport. MPI backend: counted at each
//                   MPI_Isend, so it is what was sent (a ring all-gather or reduce-scatter
//                   sends (n-1)/n of the full message, a ring all-reduce 2(n-1)/n; a
//                   small recursive-doubling all-reduce log2(n) times the message; the
//                   hierarchical all-reduce, summed over its intra- and inter-node rounds,
//                   also 2(n-1)/n: it is booked whole to the group it was called on, as
//                   one call, not split into intra and inter). NCCL backend: the ring
//                   model of those volumes (NCCL hides its transfers).
//   message_bytes   the full message: the gathered buffer (all-gather), the input buffer
//                   (reduce-scatter), the buffer (all-reduce, broadcast).
//   seconds         busy time: the union of the intervals during which an operation of
//                   this group (or its twin) was in flight, from its start to its actual
//                   completion (seen by the progress thread, not by a late wait()); never
//                   more than wall time.
//   exposed_seconds time callers spent blocked in wait() (or test()) on this group's
//                   operations: compute that waited for communication.
// A hierarchical partition collective is recorded on the inter and intra groups, one call
// on each, and not on the partition group.
struct GroupCounters {
  std::uint64_t calls = 0;
  std::uint64_t sends = 0;
  std::uint64_t bytes = 0;
  std::uint64_t message_bytes = 0;
  double seconds = 0.0;
  double exposed_seconds = 0.0;
};

class Group {
public:
  Group() = default;  // no communicator: valid() is false
  // Takes ownership of `comm` (MPI_COMM_NULL gives an invalid group). `name` is one of
  // "world", "partition", "replication", "inter", "intra" for the process groups.
  Group(MPI_Comm comm, std::string name);
  ~Group();
  Group(Group&& other) noexcept;
  Group& operator=(Group&& other) noexcept;
  Group(const Group&) = delete;
  Group& operator=(const Group&) = delete;

  bool valid() const noexcept { return comm_ != MPI_COMM_NULL; }
  MPI_Comm comm() const noexcept { return comm_; }
  int rank() const noexcept { return rank_; }
  int size() const noexcept { return size_; }
  const std::string& name() const noexcept { return name_; }

  // The ring the MPI backend runs: group ranks ordered by world rank, i.e. node order
  // (the plan puts node n at world ranks [n*g, (n+1)*g)), whatever order the ranks have
  // in the communicator. ring_position() is this rank's index in it.
  const std::vector<int>& ring() const noexcept { return ring_; }
  int ring_position() const noexcept { return ring_pos_; }
  // World rank of group rank r (for messages that name a peer).
  int world_rank_of(int r) const { return world_of_.at(static_cast<std::size_t>(r)); }

  // Where the members sit: node = world rank / ranks_per_node, the plan's convention (set
  // by make_process_groups from the resolved plan, not from host names, since
  // --ranks-per-node lets one host pose as several nodes). When the members lie on N >= 2
  // nodes with the same m >= 2 on each and `allow` holds (the resolved layout's
  // hierarchical all-reduce choice), all_reduce runs two-level: node_count() is N and
  // members_per_node() m. Otherwise 1 and size(). Every rank derives the same verdict
  // from the same plan. Ring positions t*m .. t*m+m-1 are then node t's members.
  void set_nodes(int ranks_per_node, bool allow);
  bool hierarchical_all_reduce() const noexcept { return nodes_ > 1; }
  int node_count() const noexcept { return nodes_; }
  int members_per_node() const noexcept { return size_ / nodes_; }

  // A snapshot, safe while operations are in flight.
  GroupCounters counters() const;
  void reset_counters();
  // Shared with pending operations, which record into it, and with the twin, so that the
  // counters survive a move of the Group.
  std::shared_ptr<GroupCounters> shared_counters() const;
  const std::shared_ptr<detail::Traffic>& traffic() const noexcept { return traffic_; }

  // The tag of the next point-to-point collective on this communicator. Every rank issues
  // the same operations in the same order, so they agree on it; distinct tags keep
  // operations in flight together from matching each other's messages.
  int next_tag() noexcept;

  // A second communicator over the same ranks, in the same rank order, sharing these
  // counters. The hierarchical collectives start their second step on it, at a moment
  // that differs between ranks; a private communicator keeps those starts from being
  // matched against other collectives on this one. Created by enable_twin() (collective
  // over the group).
  void enable_twin();
  bool has_twin() const noexcept { return static_cast<bool>(twin_); }
  Group& twin();

private:
  void find_ring();
  MPI_Comm comm_ = MPI_COMM_NULL;
  int rank_ = 0;
  int size_ = 0;
  std::string name_;
  std::vector<int> ring_, world_of_;
  int ring_pos_ = 0;
  int nodes_ = 1;  // N of the two-level all-reduce, 1 when it does not apply
  int tag_ = 0;
  std::shared_ptr<detail::Traffic> traffic_;
  std::unique_ptr<Group> twin_;
};

}  // namespace mics::comm
