#pragma once
// The communicators of one MiCS layout, built from a layout::Plan with MPI_Comm_split,
// and the host topology that layout is resolved from.
#include <mpi.h>

#include <string>
#include <vector>

#include "mics/comm/group.hpp"
#include "mics/layout/plan.hpp"

namespace mics::comm {

// Where this rank sits among the ranks that share its host's memory, from ONE
// MPI_Comm_split_type(MPI_COMM_TYPE_SHARED), with the world-wide checks reduced so that
// every rank holds the same verdict. Collective over `world`.
struct HostTopology {
  int local_rank = 0;       // among the ranks on this host
  int local_size = 1;
  int ranks_per_node = 0;   // the common local size; 0 when hosts differ or are not blocks
  std::string problem;      // why ranks_per_node is 0 (same text on every rank)
};
HostTopology discover_host_topology(MPI_Comm world);

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
  const Group& replication() const noexcept { return replication_; }
  // Inter (rank i) and intra (rank j) sub-groups of the partition group; valid() only
  // when spans_nodes().
  Group& inter() noexcept { return inter_; }
  Group& intra() noexcept { return intra_; }

  // The valid groups, in the order world, partition, replication, inter, intra.
  std::vector<Group*> groups();
  void reset_counters();

private:
  friend ProcessGroups make_process_groups(MPI_Comm, const layout::Plan&);
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
// hierarchical_all_reduce: layout::LayoutRequest's.
ProcessGroups make_process_groups(MPI_Comm world, int ranks_per_node, int partition_size,
                                  bool hierarchical, bool hierarchical_all_reduce = true);
// The groups of a plan already resolved (layout::ResolvedLayout::plan()): no checks left
// that could fail on some ranks only. Collective over `world`, whose size must be the plan's.
ProcessGroups make_process_groups(MPI_Comm world, const layout::Plan& plan);

}  // namespace mics::comm
