#include "mics/layout/plan.hpp"

#include <sstream>

#include "mics/core/error.hpp"
#include "mics/layout/resolved.hpp"

namespace mics::layout {
namespace {

std::string join(const std::vector<int>& v) {
  std::ostringstream os;
  for (std::size_t i = 0; i < v.size(); ++i) os << (i ? ", " : "") << v[i];
  return os.str();
}

std::vector<int> divisors(int n) {
  std::vector<int> d;
  for (int i = 1; i <= n; ++i)
    if (n % i == 0) d.push_back(i);
  return d;
}

// The valid sizes closest to `p` from below and above, for a short hint.
std::string nearby(const std::vector<int>& valid, int p) {
  int below = 0, above = 0;
  for (int v : valid) {
    if (v < p) below = v;
    if (v > p && above == 0) above = v;
  }
  std::ostringstream os;
  if (below && above) os << below << " or " << above;
  else if (below) os << below;
  else os << above;
  return os.str();
}

}  // namespace

std::vector<int> valid_partition_sizes(int world_size, int ranks_per_node) {
  std::vector<int> out;
  if (world_size <= 0 || ranks_per_node <= 0 || world_size % ranks_per_node != 0) return out;
  for (int p : divisors(world_size)) {
    if (node_aligned(p, ranks_per_node)) out.push_back(p);
  }
  return out;
}

Plan Plan::make(const LayoutRequest& r) {
  const int W = r.world_size, g = r.ranks_per_node, p = r.partition_size;
  if (W <= 0)
    throw UsageError("world size must be positive (got " + std::to_string(W) + ")");
  if (g <= 0)
    throw UsageError("ranks per node must be positive (got " + std::to_string(g) + ")");
  if (p <= 0)
    throw UsageError("partition size must be positive (got " + std::to_string(p) +
                     "); valid partition sizes for " + std::to_string(W) + " ranks: " +
                     join(valid_partition_sizes(W, W % g == 0 ? g : 1)));
  if (W % g != 0)
    throw UsageError("ranks per node " + std::to_string(g) + " does not divide world size " +
                     std::to_string(W) + " (nodes must all have the same number of ranks); valid: " +
                     join(divisors(W)));
  const std::vector<int> valid = valid_partition_sizes(W, g);
  const std::string valid_text = "valid partition sizes for " + std::to_string(W) + " ranks with " +
                                 std::to_string(g) + " per node: " + join(valid);
  if (W % p != 0)
    throw UsageError("partition size " + std::to_string(p) + " does not divide world size " +
                     std::to_string(W) + " (nearest valid: " + nearby(valid, p) + "); " + valid_text);
  if (p >= g && p % g != 0)
    throw UsageError("partition size " + std::to_string(p) + " straddles node boundaries: a group of " +
                     std::to_string(g) + " or more ranks must be whole nodes (a multiple of the " +
                     std::to_string(g) + " ranks per node; nearest valid: " + nearby(valid, p) + "); " +
                     valid_text);
  if (p < g && g % p != 0)
    throw UsageError("partition size " + std::to_string(p) + " straddles node boundaries: a group smaller than a node must divide the " +
                     std::to_string(g) + " ranks per node (nearest valid: " + nearby(valid, p) + "); " +
                     valid_text);
  Plan plan;
  plan.world_ = W;
  plan.per_node_ = g;
  plan.p_ = p;
  plan.k_ = p >= g ? p / g : 1;
  plan.gn_ = p >= g ? g : p;
  plan.hierarchical_ = r.hierarchical;
  plan.hierarchical_all_reduce_ = r.hierarchical_all_reduce;
  return plan;
}

Placement Plan::placement(int rank) const {
  if (rank < 0 || rank >= world_)
    throw Error("rank " + std::to_string(rank) + " is outside the world of " + std::to_string(world_));
  Placement pl;
  pl.rank = rank;
  pl.node = rank / per_node_;
  pl.local = rank % per_node_;
  pl.partition_group = rank / p_;
  const int o = rank % p_;
  pl.group_node = o / gn_;
  pl.group_local = o % gn_;
  pl.partition_rank = pl.group_local * k_ + pl.group_node;
  pl.replication_group = pl.partition_rank;
  pl.replication_rank = pl.partition_group;
  pl.inter_group = pl.partition_group * gn_ + pl.group_local;
  pl.inter_rank = pl.group_node;
  pl.intra_group = pl.partition_group * k_ + pl.group_node;
  pl.intra_rank = pl.group_local;
  return pl;
}

std::vector<int> Plan::members_of_partition_group(int id) const {
  std::vector<int> m(static_cast<std::size_t>(p_));
  for (int o = 0; o < p_; ++o) {
    const int rank = id * p_ + o;
    m[static_cast<std::size_t>(placement(rank).partition_rank)] = rank;
  }
  return m;
}

std::vector<int> Plan::members_of_replication_group(int id) const {
  std::vector<int> m;
  for (int grp = 0; grp < partition_group_count(); ++grp)
    m.push_back(members_of_partition_group(grp)[static_cast<std::size_t>(id)]);
  return m;
}

std::vector<int> Plan::members_of_inter_group(int id) const {
  const int grp = id / gn_, j = id % gn_;
  std::vector<int> m;
  for (int i = 0; i < k_; ++i) m.push_back(grp * p_ + i * gn_ + j);
  return m;
}

std::vector<int> Plan::members_of_intra_group(int id) const {
  const int grp = id / k_, i = id % k_;
  std::vector<int> m;
  for (int j = 0; j < gn_; ++j) m.push_back(grp * p_ + i * gn_ + j);
  return m;
}

std::string Plan::describe() const {
  std::ostringstream os;
  os << "W=" << world_ << " g=" << per_node_ << " p=" << p_ << " (k=" << k_
     << " nodes per group, r=" << replication_size() << " replicas, "
     << (hierarchical() ? "hierarchical" : "flat") << ")";
  return os.str();
}

}  // namespace mics::layout
