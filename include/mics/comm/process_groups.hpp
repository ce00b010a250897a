#pragma once
// The communicators of one MiCS layout, built from a layout::Plan with MPI_Comm_split.
#include <mpi.h>

#include <vector>

#include "mics/comm/group.hpp"
#include "mics/layout/plan.hpp"

namespace mics::comm {

class ProcessGroups {
public:
  const layout::Plan& plan() const noexcept { return plan_; }
  const layout::Placement& placement() const noexcept { return placement_; }
  bool spans_nodes() const noexcept { return plan_.spans_nodes(); }
  // Hierarchical collectives were requested and the partition group spans nodes.
  bool hierarchical() const noexcept { return plan_.hierarchical(); }

  Group& world() noexcept { return world_; }
  // Rank in the partition group = shard index q (zero-copy order, see layout/plan.hpp).
  Group& partition() noexcept { return partition_; }
  // Rank in the replication group = partition group id.
  Group& replication() noexcept { return replication_; }
  // Inter (rank i) and intra (rank j) sub-groups of the partition group; valid() only
  // when spans_nodes().
  Group& inter() noexcept { return inter_; }
  Group& intra() noexcept { return intra_; }

  // The valid groups, in the order world, partition, replication, inter, intra.
  std::vector<Group*> groups();
  void reset_counters();

private:
  friend ProcessGroups make_process_groups(MPI_Comm, int, int, bool);
  explicit ProcessGroups(const layout::Plan& plan) : plan_(plan) {}
  layout::Plan plan_;
  layout::Placement placement_;
  Group world_, partition_, replication_, inter_, intra_;
};

// Collective over `world`. ranks_per_node = 0 detects it with
// MPI_Comm_split_type(MPI_COMM_TYPE_SHARED) (nodes of unequal size, or ranks not placed
// in consecutive blocks per node, are a UsageError); a positive value lets one host pose
// as several nodes. An invalid layout throws the same mics::UsageError on every rank
// before any communicator is split.
ProcessGroups make_process_groups(MPI_Comm world, int ranks_per_node, int partition_size,
                                  bool hierarchical);

}  // namespace mics::comm
