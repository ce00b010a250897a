// mics-plan: what a model costs before anything is allocated.
//
//   mics-plan --model M.cfg [--partition-size P]          parameters, FLOPs, model states
//   mics-plan --model M.cfg --cluster C.cfg --nodes 16,32  predicted step time, TFLOPS,
//                                                          memory and scaling of every layout
//   mics-plan calibrate --bench B.csv --train T.csv ...    fit a cluster file to measurements
#include <cmath>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <new>
#include <string>

#include <boost/program_options.hpp>

#include "commands.hpp"
#include "mics/core/error.hpp"
#include "mics/core/version.hpp"
#include "mics/model/config.hpp"
#include "mics/model/layout.hpp"
#include "mics/planner/memory.hpp"

namespace po = boost::program_options;

namespace mics_plan {

void check_model_size(const mics::model::ModelConfig& c) {
  using mics::UsageError;
  if (c.layers > 100000)
    throw UsageError("layers = " + std::to_string(c.layers) + " is beyond what mics-plan models (at most 100000)");
  if (c.hidden > 1000000)
    throw UsageError("hidden = " + std::to_string(c.hidden) + " is beyond what mics-plan models (at most 1000000)");
  if (c.seq > 10000000)
    throw UsageError("seq = " + std::to_string(c.seq) + " is beyond what mics-plan models (at most 1e7)");
  const double n = mics::planner::bucket_sizes(c).parameters();
  if (n > 1e15) {
    char line[160];
    std::snprintf(line, sizeof line, "the model has %.3g parameters, beyond what mics-plan models (at most 1e15)", n);
    throw UsageError(line);
  }
}

void describe_model(const mics::model::ModelConfig& c, long long p) {
  const auto b = mics::planner::bucket_sizes(c);
  const double n = b.parameters();
  std::printf("model            %s (%s)\n", c.name.c_str(), mics::model::variant_name(c.variant));
  std::printf("shape            layers %lld, hidden %lld, heads %lld, seq %lld, vocab %lld\n",
              static_cast<long long>(c.layers), static_cast<long long>(c.hidden),
              static_cast<long long>(c.heads), static_cast<long long>(c.seq),
              static_cast<long long>(c.vocab));
  std::printf("parameters       %.0f (%.4g)\n", n, n);
  std::printf("buckets          %lld, largest %.0f elements\n", static_cast<long long>(c.layers) + 2, b.largest());
  std::printf("FLOPs/token      %.4g (f=3, no recomputation), %.4g (f=4, recomputation)\n",
              mics::model::flops_per_token(c, false), mics::model::flops_per_token(c, true));
  std::printf("FLOPs/sequence   %.4g (f=3)\n", mics::model::training_flops(c, 1.0, false));
  std::printf("model states     %.4g GiB in all, %.4g GiB per rank at p = %lld (16 B/parameter)\n",
              16.0 * n / (1 << 30), 16.0 * n / static_cast<double>(p) / (1 << 30), p);
}

}  // namespace mics_plan

namespace {

int run(int argc, char** argv) {
  if (argc > 1 && std::strcmp(argv[1], "calibrate") == 0) return mics_plan::calibrate_command(argc - 1, argv + 1);
  po::options_description desc(
      "mics-plan: parameters, FLOPs and model-state memory of a model; with --cluster, the predicted\n"
      "step time, TFLOPS, memory and scaling of every layout (a model's estimate, not a measurement).\n"
      "'mics-plan calibrate --help' fits a cluster file to mics-bench and mics-train measurements");
  desc.add_options()("help", "this help")("version", "print the version, commit, build type and backends");
  mics::model::add_model_options(desc);
  mics_plan::add_predict_options(desc);
  po::variables_map vm;
  try {
    po::store(po::parse_command_line(argc, argv, desc), vm);
    po::notify(vm);
  } catch (const po::error& e) {
    throw mics::UsageError(e.what());
  }
  if (vm.count("version")) {
    std::cout << mics::version_text("mics-plan");
    return 0;
  }
  if (vm.count("help")) {
    std::cout << desc;
    return 0;
  }
  const long long p = vm["partition-size"].as<long long>();
  if (p < 1) throw mics::UsageError("--partition-size = " + std::to_string(p) + "; it must be at least 1");
  const mics::model::ModelConfig c = mics::model::model_config_from_variables(vm);
  mics_plan::check_model_size(c);
  mics_plan::describe_model(c, p);
  if (!vm.count("cluster")) return 0;
  return mics_plan::predict_command(vm, c);
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const mics::Error& e) {
    std::fprintf(stderr, "mics-plan: error: %s\n", e.what());
  } catch (const std::bad_alloc&) {
    std::fprintf(stderr, "mics-plan: error: out of memory; the sizes asked for are too large\n");
  } catch (const std::exception& e) {
    std::fprintf(stderr, "mics-plan: error: %s\n", e.what());
  }
  return 1;
}
