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

// Ranks per node as MPI sees the hosts. Every rank reaches the same verdict: the checks
// are reduced over `world` before anyone throws.
int detect_ranks_per_node(MPI_Comm world) {
  int rank = 0;
  MICS_CHECK_MPI(MPI_Comm_rank(world, &rank));
  MPI_Comm node = MPI_COMM_NULL;
  MICS_CHECK_MPI(MPI_Comm_split_type(world, MPI_COMM_TYPE_SHARED, rank, MPI_INFO_NULL, &node));
  int local = 0, local_size = 0, first = 0;
  MICS_CHECK_MPI(MPI_Comm_rank(node, &local));
  MICS_CHECK_MPI(MPI_Comm_size(node, &local_size));
  MICS_CHECK_MPI(MPI_Allreduce(&rank, &first, 1, MPI_INT, MPI_MIN, node));
  MPI_Comm_free(&node);

  int sizes[2] = {-local_size, local_size}, extremes[2] = {0, 0};
  MICS_CHECK_MPI(MPI_Allreduce(sizes, extremes, 2, MPI_INT, MPI_MAX, world));
  const int smallest = -extremes[0], largest = extremes[1];
  if (smallest != largest)
    throw UsageError("nodes have unequal numbers of ranks (between " + std::to_string(smallest) +
                     " and " + std::to_string(largest) +
                     " per node); start the same number on every node");
  // The plan puts node n at world ranks [n*g, (n+1)*g).
  int mine = (first % largest == 0 && rank - first == local) ? 1 : 0, all = 0;
  MICS_CHECK_MPI(MPI_Allreduce(&mine, &all, 1, MPI_INT, MPI_MIN, world));
  if (!all)
    throw UsageError("the ranks of each node are not consecutive world ranks; place ranks by "
                     "slot (mpirun --map-by slot) or pass --ranks-per-node");
  return largest;
}

}  // namespace

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
                                  bool hierarchical) {
  int rank = 0, size = 0;
  MICS_CHECK_MPI(MPI_Comm_rank(world, &rank));
  MICS_CHECK_MPI(MPI_Comm_size(world, &size));
  if (ranks_per_node < 0)
    throw UsageError("ranks per node must be positive, or 0 to detect it (got " +
                     std::to_string(ranks_per_node) + ")");
  const int g = ranks_per_node == 0 ? detect_ranks_per_node(world) : ranks_per_node;
  // Pure arithmetic on inputs every rank shares: an invalid layout throws the same
  // UsageError everywhere, before any communicator exists.
  ProcessGroups pg(layout::Plan::make({size, g, partition_size, hierarchical}));
  const layout::Placement& pl = pg.placement_ = pg.plan_.placement(rank);

  MPI_Comm dup = MPI_COMM_NULL;
  MICS_CHECK_MPI(MPI_Comm_dup(world, &dup));
  pg.world_ = Group(dup, "world");
  pg.partition_ = split(world, pl.partition_group, pl.partition_rank, "partition");
  pg.replication_ = split(world, pl.replication_group, pl.replication_rank, "replication");
  if (pg.plan_.spans_nodes()) {
    pg.inter_ = split(world, pl.inter_group, pl.inter_rank, "inter");
    pg.intra_ = split(world, pl.intra_group, pl.intra_rank, "intra");
    pg.inter_.enable_twin();
    pg.intra_.enable_twin();
  }
  return pg;
}

}  // namespace mics::comm
