#pragma once
// The group planner: pure arithmetic from (world size W, ranks per node g, partition
// size p) to every rank's place in the partition, replication and hierarchical
// sub-groups. No MPI here; mics::comm turns a Plan into communicators.
//
// Conventions (docs/DESIGN.md sections 2 and 3):
//   node n = rank / g, local index = rank % g; partition group = rank / p (consecutive,
//   node-aligned blocks). Inside a group, let gn = min(p, g) be the group's ranks per
//   node and k = max(1, p / g) the nodes it spans; the member at offset o = rank % p sits
//   on group node i = o / gn with group-local index j = o % gn, and gets the shard index
//       q = j * k + i                                   (the zero-copy order)
//   q is the rank in the partition communicator. It is the same whether or not
//   hierarchical collectives are requested, so a rank owns the same shard either way
//   and flat and hierarchical collectives produce the same bytes. When k == 1 this is
//   plain consecutive order (q = o).
//   replication group id = q, replication rank = partition group id.
//   inter sub-group: the k members with the same j (one per node), rank i;
//   intra sub-group: the gn members on the same node, rank j.
//   Both are defined for every layout; they are only useful when spans_nodes().
#include <string>
#include <vector>

namespace mics::layout {

struct LayoutRequest {
  int world_size = 1;      // W
  int ranks_per_node = 1;  // g
  int partition_size = 1;  // p
  bool hierarchical = false;
  // A group's all-reduce runs two-level (intra-node reduce-scatter, inter-node all-reduce,
  // intra-node all-gather) where its members lie on N >= 2 nodes with m >= 2 on each
  // (comm::Group::set_nodes). Unlike `hierarchical` it applies to every group, replication
  // and world included, and defaults on: it sends the same bytes per rank as the flat
  // ring, in fewer rounds, with 2(N-1)/N instead of 2(n-1)/n of the message per node link.
  bool hierarchical_all_reduce = true;
};

// Everything the plan says about one rank.
struct Placement {
  int rank = 0;
  int node = 0;               // rank / g
  int local = 0;              // rank % g
  int partition_group = 0;    // rank / p
  int partition_rank = 0;     // shard index q
  int replication_group = 0;  // == q
  int replication_rank = 0;   // == partition_group
  int group_node = 0;         // i: which of the group's k nodes
  int group_local = 0;        // j: index among the group's ranks on this node
  int inter_group = 0;        // global id of the inter sub-group
  int inter_rank = 0;         // == i
  int intra_group = 0;        // global id of the intra sub-group
  int intra_rank = 0;         // == j
};

class Plan {
public:
  // Validates the request; throws mics::UsageError with one line per kind of mistake.
  static Plan make(const LayoutRequest& request);

  int world_size() const noexcept { return world_; }
  int ranks_per_node() const noexcept { return per_node_; }
  int partition_size() const noexcept { return p_; }
  int replication_size() const noexcept { return world_ / p_; }
  int node_count() const noexcept { return world_ / per_node_; }
  int partition_group_count() const noexcept { return world_ / p_; }
  int replication_group_count() const noexcept { return p_; }
  // k: nodes one partition group spans (1 when the group fits in a node).
  int nodes_per_group() const noexcept { return k_; }
  // gn: ranks of one partition group on each of its nodes (min(p, g)).
  int group_ranks_per_node() const noexcept { return gn_; }
  bool spans_nodes() const noexcept { return k_ > 1; }
  bool hierarchical_requested() const noexcept { return hierarchical_; }
  // Hierarchical collectives are used when requested and the group spans nodes.
  bool hierarchical() const noexcept { return hierarchical_ && spans_nodes(); }
  // LayoutRequest::hierarchical_all_reduce, as requested (each group applies it where its
  // members' nodes allow).
  bool hierarchical_all_reduce() const noexcept { return hierarchical_all_reduce_; }
  int inter_group_count() const noexcept { return world_ / k_; }
  int intra_group_count() const noexcept { return world_ / gn_; }

  Placement placement(int rank) const;

  // Members as world ranks, ordered by their rank inside the group.
  std::vector<int> members_of_partition_group(int id) const;
  std::vector<int> members_of_replication_group(int id) const;
  std::vector<int> members_of_inter_group(int id) const;
  std::vector<int> members_of_intra_group(int id) const;

  // "W=8 g=4 p=8 (k=2 nodes per group, r=1 replicas, hierarchical)".
  std::string describe() const;

private:
  Plan() = default;
  int world_ = 1, per_node_ = 1, p_ = 1, k_ = 1, gn_ = 1;
  bool hierarchical_ = false;
  bool hierarchical_all_reduce_ = true;
};

// Partition sizes that divide W and respect node boundaries for g ranks per node,
// ascending (empty when g does not divide W or a number is not positive).
std::vector<int> valid_partition_sizes(int world_size, int ranks_per_node);

}  // namespace mics::layout
