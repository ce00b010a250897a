// Alpha-beta costs of ring (NCCL) and libnbc (Open MPI) collectives.
#include "mics/planner/collective_cost.hpp"

#include <algorithm>
#include <cmath>
#include <limits>

namespace mics::planner {

namespace {

constexpr double kGB = 1e9;

double log2_ceil(int n) { return n <= 1 ? 0.0 : std::ceil(std::log2(static_cast<double>(n))); }

double alpha(const Cluster& c, const GroupShape& g) {
  return (g.nodes() > 1 ? c.inter_latency_us : c.intra_latency_us) * 1e-6;
}

// Bandwidth one rank's share of traffic sees when every rank pushes the same volume.
double ring_bandwidth(const Cluster& c, const GroupShape& g) {
  double b = std::numeric_limits<double>::infinity();
  if (g.per_node > 1 || g.nodes() == 1) b = c.intra_bandwidth_gbs * kGB;
  if (g.nodes() > 1) b = std::min(b, c.achieved_inter_gbs(g.nodes()) * kGB / g.sharing());
  return b;
}

// NCCL's own latency model of a ring (its tuning tables): a launch cost, then one hop
// latency per pipelined step. Of the n-1 steps of an all-gather or reduce-scatter only
// k-1 cross nodes (2k of the 2(n-1) of an all-reduce); the others ride the node's links.
// The sum still grows with n, which is what hurts a flat ring over hundreds of ranks.
double ring_latency(const Cluster& c, Collective op, const GroupShape& g) {
  const int n = g.size, k = g.nodes();
  const bool ar = op == Collective::all_reduce;
  const double steps = ar ? 2.0 * (n - 1) : n - 1.0;
  const double inter = k > 1 ? std::min(steps, ar ? 2.0 * k : k - 1.0) : 0.0;
  return (c.base_latency_us + (steps - inter) * c.intra_latency_us + inter * c.inter_latency_us) * 1e-6;
}

double ring_seconds(const Cluster& c, Collective op, const GroupShape& g, double bytes) {
  return ring_latency(c, op, g) + bus_factor(op, g.size) * bytes / ring_bandwidth(c, g);
}

// Time to move `intra` bytes through one rank's node-local link and `inter` bytes through
// its node's network link (shared by the groups on the node), whichever is slower.
double links(const Cluster& c, const GroupShape& g, double intra, double inter) {
  const double a = intra / (c.intra_bandwidth_gbs * kGB);
  const double b = g.nodes() > 1 ? inter * g.sharing() / (c.achieved_inter_gbs(g.nodes()) * kGB) : 0.0;
  return std::max(a, b);
}

// A binomial tree over n ranks laid out node by node: the first log2(per_node) rounds stay
// inside nodes, the rest cross them; each round moves the whole buffer once.
double tree_seconds(const Cluster& c, const GroupShape& g, double bytes) {
  const double local = log2_ceil(g.per_node), remote = log2_ceil(g.size) - local;
  return local * (c.intra_latency_us * 1e-6 + bytes / (c.intra_bandwidth_gbs * kGB)) +
         remote * (c.inter_latency_us * 1e-6 + bytes * g.sharing() / (c.achieved_inter_gbs(g.nodes()) * kGB));
}

// This engine's CPU all-reduce of small messages on 2^m ranks (lib/comm/mpi,
// kSmallAllReduceBytes): recursive doubling, log2 n rounds that each exchange the whole
// buffer with a partner; in node order the first log2(per_node) rounds stay inside the
// node, in the others every member of every group on the node sends across its link.
constexpr double kDoublingBytes = 32 * 1024;

bool doubling(const Cluster& c, Collective op, const GroupShape& g, double bytes) {
  const bool pow2 = g.size > 0 && (g.size & (g.size - 1)) == 0;
  return c.algorithms == Algorithms::rings && op == Collective::all_reduce && pow2 && bytes <= kDoublingBytes;
}

double doubling_seconds(const Cluster& c, const GroupShape& g, double bytes) {
  const double local = log2_ceil(g.per_node), remote = log2_ceil(g.size) - local;
  const double across = g.nodes() > 1 ? bytes * g.per_node * g.sharing() / (c.achieved_inter_gbs(g.nodes()) * kGB) : 0.0;
  return c.base_latency_us * 1e-6 + local * (c.intra_latency_us * 1e-6 + bytes / (c.intra_bandwidth_gbs * kGB)) +
         remote * (c.inter_latency_us * 1e-6 + across);
}

// This engine's CPU all-reduce over nodes() >= 2 nodes of per_node >= 2 members (lib/comm/mpi,
// Group::node_count, on by default): a ring reduce-scatter inside the node, a ring
// all-reduce of each member's 1/per_node across the nodes with the same local index, a
// ring all-gather inside the node, as one operation (one launch).
bool two_level(const Cluster& c, Collective op, const GroupShape& g, double bytes) {
  return c.algorithms == Algorithms::rings && c.two_level_all_reduce && op == Collective::all_reduce &&
         g.nodes() > 1 && g.per_node > 1 && !doubling(c, op, g, bytes);
}

// The node's m members each run the inter ring on 1/m of the buffer, so the node link
// carries 2(N-1)/N of it per group (GroupShape{N, 1, g} shares it g ways: m rings times
// g/m groups), instead of the flat ring's 2(n-1)/n.
GroupShape two_level_intra(const GroupShape& g) { return {g.per_node, g.per_node, g.ranks_per_node}; }
GroupShape two_level_inter(const GroupShape& g) { return {g.nodes(), 1, g.ranks_per_node}; }

double two_level_seconds(const Cluster& c, const GroupShape& g, double bytes) {
  const GroupShape intra = two_level_intra(g), inter = two_level_inter(g);
  return ring_seconds(c, Collective::reduce_scatter, intra, bytes) +
         ring_seconds(c, Collective::all_reduce, inter, bytes / g.per_node) +
         ring_seconds(c, Collective::all_gather, intra, bytes) - 2.0 * c.base_latency_us * 1e-6;
}

double mpi_seconds(const Cluster& c, Collective op, const GroupShape& g, double bytes) {
  const int n = g.size;
  const double chunk = bytes / n, a = alpha(c, g);
  const double remote = g.size - g.per_node;  // peers on other nodes
  switch (op) {
    case Collective::all_gather:  // every rank sends its chunk to each peer directly
      return (n - 1) * a + links(c, g, (n - 1) * chunk, g.per_node * remote * chunk);
    case Collective::reduce_scatter:  // reduce to one rank, then it scatters the chunks
      return tree_seconds(c, g, bytes) + (n - 1) * a +
             links(c, g, (n - 1) * chunk, remote * chunk);
    case Collective::all_reduce:  // reduce to one rank, broadcast back
      return 2.0 * tree_seconds(c, g, bytes);
  }
  return 0.0;
}

}  // namespace

double bus_factor(Collective op, int n) {
  if (n <= 1) return 0.0;
  const double f = static_cast<double>(n - 1) / n;
  return op == Collective::all_reduce ? 2.0 * f : f;
}

double collective_seconds(const Cluster& c, Collective op, const GroupShape& g, double bytes) {
  if (g.size <= 1 || bytes <= 0) return 0.0;
  if (c.algorithms == Algorithms::mpi) return mpi_seconds(c, op, g, bytes);
  if (two_level(c, op, g, bytes)) return two_level_seconds(c, g, bytes);
  return doubling(c, op, g, bytes) ? doubling_seconds(c, g, bytes) : ring_seconds(c, op, g, bytes);
}

double inter_node_bytes(const Cluster& c, Collective op, const GroupShape& g, double bytes) {
  if (g.size <= 1 || g.nodes() <= 1) return 0.0;
  const double chunk = bytes / g.size;
  if (doubling(c, op, g, bytes))
    return (log2_ceil(g.size) - log2_ceil(g.per_node)) * bytes * g.per_node * g.sharing();
  if (two_level(c, op, g, bytes)) {
    const GroupShape inter = two_level_inter(g);
    return bus_factor(op, inter.size) * bytes / g.per_node * inter.sharing();
  }
  if (c.algorithms != Algorithms::mpi) return bus_factor(op, g.size) * bytes * g.sharing();
  const double remote = g.size - g.per_node;
  switch (op) {
    case Collective::all_gather: return g.per_node * remote * chunk * g.sharing();
    case Collective::reduce_scatter:
      return (log2_ceil(g.size) - log2_ceil(g.per_node)) * bytes * g.sharing() + remote * chunk * g.sharing();
    case Collective::all_reduce:
      return 2.0 * (log2_ceil(g.size) - log2_ceil(g.per_node)) * bytes * g.sharing();
  }
  return 0.0;
}

namespace {

GroupShape flat(const PartitionShape& s) { return {s.p, s.group_per_node(), s.ranks_per_node}; }
GroupShape inter_step(const PartitionShape& s) { return {s.nodes(), 1, s.ranks_per_node}; }
GroupShape intra_step(const PartitionShape& s) {
  return {s.group_per_node(), s.group_per_node(), s.ranks_per_node};
}

}  // namespace

double partition_gather_seconds(const Cluster& c, const PartitionShape& s, double bytes) {
  if (!s.two_step()) return collective_seconds(c, Collective::all_gather, flat(s), bytes);
  const double block = bytes / s.group_per_node();  // k chunks
  return collective_seconds(c, Collective::all_gather, inter_step(s), block) +
         collective_seconds(c, Collective::all_gather, intra_step(s), bytes);
}

double partition_reduce_seconds(const Cluster& c, const PartitionShape& s, double bytes) {
  if (!s.two_step()) return collective_seconds(c, Collective::reduce_scatter, flat(s), bytes);
  const double block = bytes / s.group_per_node();
  return collective_seconds(c, Collective::reduce_scatter, intra_step(s), bytes) +
         collective_seconds(c, Collective::reduce_scatter, inter_step(s), block);
}

double partition_gather_inter_bytes(const Cluster& c, const PartitionShape& s, double bytes) {
  if (!s.two_step()) return inter_node_bytes(c, Collective::all_gather, flat(s), bytes);
  return inter_node_bytes(c, Collective::all_gather, inter_step(s), bytes / s.group_per_node());
}

GroupShape replication_shape(int world, int ranks_per_node, int p) {
  const int per_node = p >= ranks_per_node ? 1 : ranks_per_node / p;
  return {world / p, std::min(per_node, world / p), ranks_per_node};
}

GroupShape world_shape(int world, int ranks_per_node) {
  return {world, std::min(world, ranks_per_node), ranks_per_node};
}

}  // namespace mics::planner
