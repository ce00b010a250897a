// mics-plan calibrate: fit a cluster file's link and compute parameters to measurements.
#include <cmath>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <string>
#include <vector>

#include "commands.hpp"
#include "mics/core/error.hpp"
#include "mics/planner/calibrate.hpp"

namespace po = boost::program_options;
using mics::UsageError;
using namespace mics::planner;

namespace mics_plan {

namespace {

void print_residuals(const char* title, const std::vector<Residual>& rs) {
  if (rs.empty()) return;
  std::printf("\n%s\n%-72s %12s %12s %8s\n", title, "measurement", "measured_ms", "predicted_ms", "error");
  double worst = 0, sum = 0;
  for (const auto& r : rs) {
    std::printf("%-72s %12.4g %12.4g %+7.1f%%\n", r.what.c_str(), r.measured_s * 1e3, r.predicted_s * 1e3, 100 * r.error());
    worst = std::max(worst, std::fabs(r.error()));
    sum += std::fabs(r.error());
  }
  std::printf("mean |error| %.1f%%, worst %.1f%% over %zu measurements\n", 100 * sum / rs.size(), 100 * worst, rs.size());
}

}  // namespace

int calibrate_command(int argc, char** argv) {
  po::options_description desc(
      "mics-plan calibrate: fit bandwidths and latencies (from mics-bench --csv files) and the compute\n"
      "efficiency (from mics-train --metrics files) of a cluster file; prints the fit's error per measurement");
  desc.add_options()("help", "this help")
    ("cluster", po::value<std::string>(), "starting cluster file (its other values are kept)")
    ("bench", po::value<std::vector<std::string>>()->composing(), "a mics-bench --csv file (repeatable)")
    ("train", po::value<std::vector<std::string>>()->composing(), "a mics-train --metrics file (repeatable)")
    ("global-batch", po::value<long long>()->default_value(0), "the training runs' --global-batch")
    ("micro-batch", po::value<long long>()->default_value(1), "the training runs' --micro-batch")
    ("recompute", po::value<bool>()->default_value(false), "the training runs' --recompute")
    ("grad-reduce-dtype", po::value<std::string>()->default_value("f32"), "the training runs' --grad-reduce-dtype")
    ("output", po::value<std::string>(), "write the fitted cluster file here");
  mics::model::add_model_options(desc);
  po::variables_map vm;
  try {
    po::store(po::parse_command_line(argc, argv, desc), vm);
    po::notify(vm);
  } catch (const po::error& e) {
    throw UsageError(e.what());
  }
  if (vm.count("help")) {
    std::cout << desc;
    return 0;
  }
  if (!vm.count("cluster")) throw UsageError("calibrate needs --cluster FILE to start from");
  if (!vm.count("bench") && !vm.count("train")) throw UsageError("calibrate needs --bench and/or --train files");
  const Cluster start = load_cluster(vm["cluster"].as<std::string>());
  std::vector<BenchRow> bench;
  if (vm.count("bench"))
    for (const auto& f : vm["bench"].as<std::vector<std::string>>())
      for (auto& r : read_bench_csv(f)) bench.push_back(r);
  std::vector<TrainRun> train;
  Workload w;
  if (vm.count("train")) {
    for (const auto& f : vm["train"].as<std::vector<std::string>>()) train.push_back(read_train_metrics(f));
    if (!vm.count("model")) throw UsageError("calibrate --train needs the runs' --model (and any overrides)");
    w.model = mics::model::model_config_from_variables(vm);
    check_model_size(w.model);
    w.global_batch = vm["global-batch"].as<long long>();
    if (w.global_batch <= 0) throw UsageError("calibrate --train needs the runs' --global-batch");
    w.micro_batch = vm["micro-batch"].as<long long>();
    w.recompute = vm["recompute"].as<bool>();
    w.reduce_bytes = vm["grad-reduce-dtype"].as<std::string>() == "bf16" ? 2 : 4;
    for (const auto& t : train)
      if (t.layout.ranks_per_node != start.ranks_per_node)
        throw UsageError("'" + t.source + "' ran " + std::to_string(t.layout.ranks_per_node) +
                         " ranks per node; the cluster file says " + std::to_string(start.ranks_per_node));
  }
  const Calibration fit = calibrate(start, bench, train, w);
  const Cluster& c = fit.cluster;
  std::printf("fitted: intra %.4g GB/s per rank, %.4g us; inter %.4g GB/s per node, %.4g us; compute efficiency %.4g\n",
              c.intra_bandwidth_gbs, c.intra_latency_us, c.inter_bandwidth_gbs, c.inter_latency_us, c.compute_efficiency);
  print_residuals("collectives (mics-bench)", fit.bench);
  print_residuals("training steps (mics-train, median step after the first)", fit.train);
  if (vm.count("output")) {
    const std::string out = vm["output"].as<std::string>();
    std::ofstream f(out);
    if (!f) throw UsageError("cannot write --output file '" + out + "'");
    write_cluster(f, c, "Fitted by mics-plan calibrate from " + std::to_string(bench.size()) + " collective timings and " +
                            std::to_string(train.size()) + " training runs, starting from " +
                            vm["cluster"].as<std::string>() + ".");
    if (!f.flush()) throw UsageError("writing --output file '" + out + "' failed");
    std::printf("\nwrote %s\n", out.c_str());
  }
  return 0;
}

}  // namespace mics_plan
