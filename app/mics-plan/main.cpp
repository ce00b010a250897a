// mics-plan: what a model costs before anything is allocated: parameters, buckets,
// FLOPs per token (mics-design.md section 6, with and without recomputation) and the
// mixed-precision model-state bytes (16 per parameter) over a partition group.
//
//   mics-plan --model inputs/models/gpt3-175b.cfg [--layers N ...] [--partition-size P]
#include <cstdio>
#include <iostream>
#include <string>

#include <boost/program_options.hpp>

#include "mics/core/error.hpp"
#include "mics/model/config.hpp"
#include "mics/model/layout.hpp"

namespace po = boost::program_options;

namespace {

int run(int argc, char** argv) {
  po::options_description desc("mics-plan: parameter count, FLOPs and model-state memory of a model");
  desc.add_options()("help", "this help")(
      "partition-size", po::value<long long>()->default_value(1),
      "ranks the model states are sharded over (p): bytes per rank = 16 * parameters / p");
  mics::model::add_model_options(desc);
  po::variables_map vm;
  try {
    po::store(po::parse_command_line(argc, argv, desc), vm);
    po::notify(vm);
  } catch (const po::error& e) {
    throw mics::UsageError(e.what());
  }
  if (vm.count("help")) {
    std::cout << desc;
    return 0;
  }
  const long long p = vm["partition-size"].as<long long>();
  if (p < 1)
    throw mics::UsageError("--partition-size = " + std::to_string(p) + "; it must be at least 1");
  const mics::model::ModelConfig c = mics::model::model_config_from_variables(vm);
  const mics::model::BucketLayout L = mics::model::make_layout(c);
  std::size_t largest = 0;
  for (const auto& b : L.buckets) largest = std::max(largest, b.count);
  const double n = static_cast<double>(L.parameter_count());
  std::printf("model            %s (%s)\n", c.name.c_str(), mics::model::variant_name(c.variant));
  std::printf("shape            layers %lld, hidden %lld, heads %lld, seq %lld, vocab %lld\n",
              static_cast<long long>(c.layers), static_cast<long long>(c.hidden),
              static_cast<long long>(c.heads), static_cast<long long>(c.seq),
              static_cast<long long>(c.vocab));
  std::printf("parameters       %zu (%.4g)\n", L.parameter_count(), n);
  std::printf("buckets          %zu, largest %zu elements\n", L.buckets.size(), largest);
  std::printf("FLOPs/token      %.4g (f=3, no recomputation), %.4g (f=4, recomputation)\n",
              mics::model::flops_per_token(c, false), mics::model::flops_per_token(c, true));
  std::printf("FLOPs/sequence   %.4g (f=3)\n", mics::model::training_flops(c, 1.0, false));
  std::printf("model states     %.4g GiB in all, %.4g GiB per rank at p = %lld (16 B/parameter)\n",
              16.0 * n / (1 << 30), 16.0 * n / static_cast<double>(p) / (1 << 30), p);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const mics::Error& e) {
    std::fprintf(stderr, "mics-plan: error: %s\n", e.what());
    return 1;
  }
}
