#pragma once
// Alpha-beta cost of the collectives the engine runs (lib/comm), with the links inside a
// node and between nodes kept apart. Pure arithmetic: no MPI, nothing allocated.
//
// A group of n ranks has `per_node` members on each of its n / per_node nodes; the other
// ranks of those nodes run the same collective in their own groups at the same time
// (the engine's groups are uniform), so a node's network link is shared by
// g / per_node such groups.
//
// nccl (rings): all-gather and reduce-scatter take n-1 steps and move (n-1)/n of the
// buffer M through every rank; all-reduce takes 2(n-1) steps and moves 2(n-1)/n M (the
// bus-bandwidth factors nccl-tests uses). A ring that spans nodes pushes that volume
// through each node's network link once per group sharing it, and through each rank's
// intra-node link:
//   t = steps * alpha + factor * M / min(B_intra, B_inter_node * per_node / g)
// (B_intra only when per_node > 1; alpha is the inter-node latency when the group spans
// nodes). rings (this engine's CPU collectives, docs/DESIGN.md section 9): the same ring
// formulas, except all-reduces of at most 32 KiB on 2^m ranks, which run as recursive
// doubling (log2 n rounds of the whole buffer), and all-reduces over N >= 2 nodes of m >= 2
// members, which run two-level ("hierarchical_ring": ring reduce-scatter in the node, ring
// all-reduce of 1/m across the N nodes, ring all-gather in the node; one launch):
//   t = t_rs(m ranks, M) + t_ar(N ranks one per node, M/m) + t_ag(m ranks, M) - 2 launches
// so a node's link carries 2(N-1)/N M per group instead of 2(n-1)/n M. mpi (Open MPI 4.1 libnbc, as measured on the wire): linear all-gather (each
// rank sends its chunk to every other), reduce-scatter as a binomial reduce to one rank
// plus a linear scatter, all-reduce as a binomial reduce plus a binomial broadcast.
//
// Hierarchical partition collectives (Collectives::gather_partition): the all-gather is
// an inter-node all-gather over the k nodes of the group (chunk c, one member per node),
// then an intra-node all-gather of k*c blocks over the gn members of a node; the
// reduce-scatter is the mirror (intra first, then inter). The two steps of one bucket
// run one after the other.
#include "mics/planner/cluster.hpp"

namespace mics::planner {

enum class Collective { all_gather, reduce_scatter, all_reduce };

struct GroupShape {
  int size = 1;            // n
  int per_node = 1;        // members on each node the group touches
  int ranks_per_node = 1;  // g of the cluster
  int nodes() const { return size / per_node; }
  int sharing() const { return ranks_per_node / per_node; }  // groups per node link
};

// nccl-tests' bus-bandwidth factor: (n-1)/n for all-gather and reduce-scatter, 2(n-1)/n
// for all-reduce.
double bus_factor(Collective op, int n);

// Seconds for one collective over a buffer of `bytes` (the whole gathered buffer for
// all-gather and reduce-scatter, the reduced buffer for all-reduce). 0 when n == 1.
double collective_seconds(const Cluster& c, Collective op, const GroupShape& g, double bytes);

// Bytes this collective puts on each node's network link (all groups sharing it).
double inter_node_bytes(const Cluster& c, Collective op, const GroupShape& g, double bytes);

// The partition group of a layout: p ranks, gn = min(p, g) per node, k = p / gn nodes.
struct PartitionShape {
  int p = 1;
  int ranks_per_node = 1;  // g
  bool hierarchical = false;  // requested; used only when k > 1
  int group_per_node() const { return p < ranks_per_node ? p : ranks_per_node; }
  int nodes() const { return p / group_per_node(); }
  bool two_step() const { return hierarchical && nodes() > 1; }
};

// gather_partition / reduce_scatter_partition of a bucket of `bytes` (padded, whole).
double partition_gather_seconds(const Cluster& c, const PartitionShape& s, double bytes);
double partition_reduce_seconds(const Cluster& c, const PartitionShape& s, double bytes);
// Network bytes per node of one gather_partition (for the flat vs hierarchical check).
double partition_gather_inter_bytes(const Cluster& c, const PartitionShape& s, double bytes);

// The replication group (W/p ranks, one per partition group) and the world.
GroupShape replication_shape(int world, int ranks_per_node, int p);
GroupShape world_shape(int world, int ranks_per_node);

}  // namespace mics::planner
