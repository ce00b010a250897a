#include <sched.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>

#include "mics/core/check.hpp"
#include "mics/train/tools.hpp"

namespace mics::train {

int threads_for_mask(int cpus, int sharing) { return std::max(1, cpus / std::max(1, sharing)); }

namespace {
// CPUs this process may run on, and a hash of which ones (ranks with equal masks share).
int affinity_cpus(unsigned& hash) {
  cpu_set_t set;
  CPU_ZERO(&set);
  hash = 2166136261u;
  if (sched_getaffinity(0, sizeof set, &set) != 0) {
    hash = 0;
    return static_cast<int>(std::max(1L, sysconf(_SC_NPROCESSORS_ONLN)));
  }
  for (int c = 0; c < CPU_SETSIZE; ++c)
    if (CPU_ISSET(c, &set)) hash = (hash ^ static_cast<unsigned>(c)) * 16777619u;
  return std::max(1, CPU_COUNT(&set));
}
}  // namespace

CpuThreads cpu_threads_per_rank(int requested) {
  unsigned hash = 0;
  const int cpus = affinity_cpus(hash);
  // Every rank takes part, whatever it decides below: the splits are collective.
  MPI_Comm local = MPI_COMM_NULL, same = MPI_COMM_NULL;
  MICS_CHECK_MPI(MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &local));
  MICS_CHECK_MPI(MPI_Comm_split(local, static_cast<int>(hash & 0x7fffffff), 0, &same));
  int sharing = 1;
  MPI_Comm_size(same, &sharing);
  MPI_Comm_free(&same);
  MPI_Comm_free(&local);
  CpuThreads t;
  if (requested > 0) {
    t.threads = requested;
    t.note = "CPU threads per rank: " + std::to_string(requested) + " (--threads)";
  } else if (const char* env = std::getenv("OMP_NUM_THREADS")) {
    t.threads = 0;
    t.note = std::string("CPU threads per rank: OMP_NUM_THREADS=") + env;
  } else {
    t.threads = threads_for_mask(cpus, sharing);
    t.note = "CPU threads per rank: " + std::to_string(t.threads) + " (" + std::to_string(cpus) +
             (cpus == 1 ? " CPU" : " CPUs") + " in the process's affinity mask, shared by " + std::to_string(sharing) +
             (sharing == 1 ? " rank" : " ranks") + " on this host)";
  }
  return t;
}

std::string hierarchical_note(bool requested, bool active, int partition_size, int ranks_per_node) {
  if (active) return "on";
  const bool fits = partition_size <= ranks_per_node;
  const std::string group = "the partition group of " + std::to_string(partition_size) +
                            (partition_size == 1 ? " rank" : " ranks") + " fits in one node of " +
                            std::to_string(ranks_per_node);
  if (fits) return "off (" + group + (requested ? ": nothing to split across nodes)" : ")");
  return "off (--hierarchical not given)";
}

}  // namespace mics::train
