#pragma once
// Fitting a cluster description to measurements: `mics-bench --csv` rows fix the links'
// bandwidths and latencies, `mics-train --metrics` files then fix compute_efficiency.
// Both fits minimise the sum of squared log-ratios predicted / measured (Nelder-Mead on
// the logs of the four link parameters; golden-section search for the efficiency).
#include <string>
#include <vector>

#include "mics/planner/cluster.hpp"
#include "mics/planner/predict.hpp"

namespace mics::planner {

struct BenchRow {
  std::string source, op, group, algo;  // op: all_gather|reduce_scatter|all_reduce
  int group_size = 1, world = 1, p = 1;  // W and p from the file's world and partition rows
  double bytes = 0, seconds = 0;
};

struct TrainRun {
  std::string source;
  Layout layout;
  bool two_hop = true;
  double step_s = 0;  // median over the steps after the first
  int steps = 0;
};

// One-line UsageError for an unreadable file, a missing column or a bad number.
std::vector<BenchRow> read_bench_csv(const std::string& path);
TrainRun read_train_metrics(const std::string& path);

struct Residual {
  std::string what;
  double measured_s = 0, predicted_s = 0;
  double error() const { return predicted_s / measured_s - 1.0; }
};

struct Calibration {
  Cluster cluster;
  std::vector<Residual> bench, train;
};

double predict_bench(const Cluster& c, int ranks_per_node, const BenchRow& r);

// `workload` describes the runs of `train` (model, batch, micro-batch, recomputation);
// its layout comes from each file. Either list may be empty (then that part keeps the
// starting cluster's values).
Calibration calibrate(const Cluster& start, const std::vector<BenchRow>& bench,
                      const std::vector<TrainRun>& train, const Workload& workload);

}  // namespace mics::planner
