#include "mics/comm/process_groups.hpp"

#include <string>

#include "mics/core/check.hpp"
#include "mics/core/error.hpp"

namespace mics::comm {
namespace {

Group split(MPI_Comm world, int color, int key, const char* name) {
  MPI_Comm out = MPI_COMM_NULL;
  MICS_CHECK_MPI(MPI_Comm_split(world, color, key, &out));
  return Group(out, name);
}

}  // namespace

HostTopology discover_host_topology(MPI_Comm world) {
  int rank = 0;
  MICS_CHECK_MPI(MPI_Comm_rank(world, &rank));
  MPI_Comm node = MPI_COMM_NULL;
  MICS_CHECK_MPI(MPI_Comm_split_type(world, MPI_COMM_TYPE_SHARED, rank, MPI_INFO_NULL, &node));
  HostTopology h;
  int first = 0;
  MICS_CHECK_MPI(MPI_Comm_rank(node, &h.local_rank));
  MICS_CHECK_MPI(MPI_Comm_size(node, &h.local_size));
  MICS_CHECK_MPI(MPI_Allreduce(&rank, &first, 1, MPI_INT, MPI_MIN, node));
  MPI_Comm_free(&node);

  // One reduction for both checks: {-smallest, largest, not-a-block}.
  const int block = (first % h.local_size == 0 && rank - first == h.local_rank) ? 0 : 1;
  int mine[3] = {-h.local_size, h.local_size, block}, all[3] = {0, 0, 0};
  MICS_CHECK_MPI(MPI_Allreduce(mine, all, 3, MPI_INT, MPI_MAX, world));
  const int smallest = -all[0], largest = all[1];
  if (smallest != largest)
    h.problem = "nodes have unequal numbers of ranks (between " + std::to_string(smallest) + " and " +
                std::to_string(largest) + " per node); start the same number on every node";
  else if (all[2] != 0)
    h.problem = "the ranks of each node are not consecutive world ranks; place ranks by slot "
                "(mpirun --map-by slot) or pass --ranks-per-node";
  else
    h.ranks_per_node = largest;
  return h;
}

std::vector<Group*> ProcessGroups::groups() {
  std::vector<Group*> out;
  for (Group* g : {&world_, &partition_, &replication_, &inter_, &intra_})
    if (g->valid()) out.push_back(g);
  return out;
}

void ProcessGroups::reset_counters() {
  for (Group* g : groups()) g->reset_counters();
}

ProcessGroups make_process_groups(MPI_Comm world, int ranks_per_node, int partition_size,
                                  bool hierarchical, bool hierarchical_all_reduce) {
  int size = 0;
  MICS_CHECK_MPI(MPI_Comm_size(world, &size));
  if (ranks_per_node < 0)
    throw UsageError("ranks per node must be positive, or 0 to detect it (got " +
                     std::to_string(ranks_per_node) + ")");
  int g = ranks_per_node;
  if (g == 0) {
    const HostTopology host = discover_host_topology(world);
    if (host.ranks_per_node == 0) throw UsageError(host.problem);  // same verdict everywhere
    g = host.ranks_per_node;
  }
  // Pure arithmetic on inputs every rank shares: an invalid layout throws the same
  // UsageError everywhere, before any communicator exists.
  return make_process_groups(world, layout::Plan::make({size, g, partition_size, hierarchical, hierarchical_all_reduce}));
}

ProcessGroups make_process_groups(MPI_Comm world, const layout::Plan& plan) {
  int rank = 0, size = 0;
  MICS_CHECK_MPI(MPI_Comm_rank(world, &rank));
  MICS_CHECK_MPI(MPI_Comm_size(world, &size));
  MICS_ASSERT(size == plan.world_size(), "the plan was made for another world size");
  ProcessGroups pg(plan);
  const layout::Placement& pl = pg.placement_ = pg.plan_.placement(rank);

  MPI_Comm dup = MPI_COMM_NULL;
  MICS_CHECK_MPI(MPI_Comm_dup(world, &dup));
  pg.world_ = Group(dup, "world");
  pg.partition_ = split(world, pl.partition_group, pl.partition_rank, "partition");
  pg.replication_ = split(world, pl.replication_group, pl.replication_rank, "replication");
  if (pg.plan_.spans_nodes()) {
    pg.inter_ = split(world, pl.inter_group, pl.inter_rank, "inter");
    pg.intra_ = split(world, pl.intra_group, pl.intra_rank, "intra");
  }
  // Local arithmetic on the plan: every rank reaches the same verdict for each group.
  for (Group* g : pg.groups()) g->set_nodes(plan.ranks_per_node(), plan.hierarchical_all_reduce());
  if (pg.plan_.spans_nodes()) {
    pg.inter_.enable_twin();
    pg.intra_.enable_twin();
  }
  return pg;
}

}  // namespace mics::comm
