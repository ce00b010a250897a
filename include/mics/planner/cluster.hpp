#pragma once
// A cluster description for the cost model (inputs/clusters/*.cfg): what one node holds
// and how fast its links and devices are. A plain `key = value` file like the model
// presets; every key is listed in kClusterKeys (cluster.cpp) and documented in the README.
#include <ostream>
#include <string>

namespace mics::planner {

// The collective algorithms the engine's communication backend runs.
enum class Algorithms {
  nccl,   // rings (all-gather, reduce-scatter, all-reduce); progress overlaps compute
  rings,  // this engine's CPU rings over MPI point-to-point (--comm mpi, docs/DESIGN.md
          // section 9): rings in node order, small all-reduces on 2^m ranks by recursive
          // doubling, a progress thread that overlaps compute
  mpi,    // Open MPI's libnbc (the CPU path before the engine's own rings): linear
          // all-gather, reduce + scatter, tree all-reduce
};

struct Cluster {
  std::string name = "custom";
  Algorithms algorithms = Algorithms::nccl;
  bool overlap = true;              // communication progresses while compute runs
  // rings: all-reduces over N >= 2 nodes of m >= 2 members run two-level, as mics-train
  // does unless --hierarchical-all-reduce false (a run option, not a cluster file key).
  bool two_level_all_reduce = true;
  int ranks_per_node = 8;           // g: GPUs (ranks) per node
  double memory_gib = 0;            // device memory per rank
  double memory_margin = 0.1;       // fraction of memory_gib kept free (fragmentation, ...)
  double workspace_gib = 0;         // per-rank runtime overhead (context, comm buffers, BLAS)
  double peak_tflops = 0;           // dense peak of one rank in the compute type
  double shared_peak_tflops = 0;    // > 0: all ranks of a job share this much (one host)
  double compute_efficiency = 0.5;  // achieved fraction of peak for the model's FLOPs
  double memory_bandwidth_gbs = 0;  // device memory GB/s per rank (optimizer step)
  double intra_bandwidth_gbs = 0;   // GB/s per rank, one direction, inside a node
  double intra_latency_us = 0;      // per algorithm step (ring hop) inside a node
  double inter_bandwidth_gbs = 0;   // GB/s per node, one direction, between nodes (line rate)
  double inter_latency_us = 0;      // per algorithm step (ring hop) that crosses nodes
  // nccl: fixed cost of launching one collective (NCCL's own tuning model has one per
  // algorithm and protocol); 0 keeps the pure per-step model.
  double base_latency_us = 0;
  // Fraction of inter_bandwidth_gbs that collectives achieve once a ring crosses nodes
  // (nccl-tests' busbw over the line rate, measured at inter_efficiency_nodes nodes);
  // 1 = the line rate.
  double inter_efficiency = 1;
  double inter_efficiency_nodes = 1;
  // Measured busbw keeps falling as a ring spans more nodes: the factor per doubling of
  // the nodes beyond inter_efficiency_nodes (1 = flat).
  double inter_efficiency_per_doubling = 1;
  std::string compute_dtype = "bf16";  // bf16 or f32 (the compute copy and activations)

  // Throws mics::UsageError with one line naming the key and its rule.
  void validate(const std::string& where = "cluster") const;
  // Dense TFLOPS one rank gets in a job of `world` ranks (shared_peak_tflops split).
  double rank_peak_tflops(int world) const;
  // The network bandwidth per node a collective whose ring spans `nodes` nodes gets:
  // line rate x inter_efficiency, scaled by inter_efficiency_per_doubling per doubling of
  // the nodes from inter_efficiency_nodes, never above the line rate.
  double achieved_inter_gbs(int nodes) const;
};

const char* algorithms_name(Algorithms a);
inline std::ostream& operator<<(std::ostream& os, Algorithms a) { return os << algorithms_name(a); }

// Reads a cluster file; missing file, unknown key, bad value: one-line UsageError naming
// the file and the key.
Cluster load_cluster(const std::string& path);
// Writes the file load_cluster reads back (calibrate's output). `comment` lines go first.
void write_cluster(std::ostream& os, const Cluster& c, const std::string& comment);

}  // namespace mics::planner
