#pragma once
// Shared set-up for the engine's MPI tests: the tiny preset, synthetic data, and a run of
// N steps under one layout that records what the tests compare.
#include <mpi.h>

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "mics/comm/mpi_collectives.hpp"
#include "mics/comm/process_groups.hpp"
#include "mics/data/dataset.hpp"
#include "mics/device/backend.hpp"
#include "mics/engine/engine.hpp"
#include "mics/model/config.hpp"

namespace mics::test {

inline model::ModelConfig tiny_model(model::Variant v = model::Variant::gpt) {
  model::ModelConfig c;
  c.name = "tiny";
  c.variant = v;
  c.layers = 2;
  c.hidden = 16;
  c.heads = 2;
  c.seq = 8;
  c.vocab = 32;
  return c;
}

struct RunResult {
  std::vector<double> losses;
  std::vector<double> norms;
  std::vector<std::vector<double>> params;  // per bucket, unpadded, after the last step
  std::size_t state_bytes = 0;
  bool replicas_identical = true;          // checked after every step
};

// True on every rank when every rank of the replication group holds the same bits.
inline bool replicas_match(engine::Engine& e, comm::ProcessGroups& g) {
  bool same = true;
  for (int b = 0; b < static_cast<int>(e.layout().buckets.size()); ++b) {
    std::vector<double> mine = e.master_shard_f64(b), root = mine;
    MPI_Bcast(root.data(), static_cast<int>(root.size()), MPI_DOUBLE, 0, g.replication().comm());
    same = same && mine == root;
  }
  int ok = same ? 1 : 0;
  MPI_Allreduce(MPI_IN_PLACE, &ok, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
  return ok == 1;
}

// Runs `steps` optimizer steps on `world` (MPI_COMM_WORLD, or MPI_COMM_SELF for the
// single-process reference) with the given configuration, computing, reducing and
// keeping model states in `precision` (model states in `states` when given).
inline RunResult run_layout(MPI_Comm world, const model::ModelConfig& mc,
                            const engine::TrainConfig& tc, int steps,
                            device::DType precision = device::DType::f32,
                            std::optional<device::DType> states = std::nullopt) {
  auto backend = device::make_cpu_backend(1);
  int W = 1;
  MPI_Comm_size(world, &W);
  const int p = engine::partition_size_for(tc.strategy, tc.partition_size, W);
  auto groups = comm::make_process_groups(world, tc.ranks_per_node > 0 ? tc.ranks_per_node : W, p,
                                          tc.hierarchical, tc.hierarchical_all_reduce);
  comm::MpiCollectives coll;
  data::SyntheticDataset data(static_cast<int>(mc.vocab));
  RunResult r;
  {
    engine::Engine e(mc, tc, *backend, coll, groups, precision, precision, states.value_or(precision));
    r.state_bytes = e.model_state_bytes();
    for (int s = 0; s < steps; ++s) {
      const auto res = e.train_step(data);
      r.losses.push_back(res.loss);
      r.norms.push_back(res.grad_norm);
      if (W > 1 && !replicas_match(e, groups)) r.replicas_identical = false;
    }
    for (int b = 0; b < static_cast<int>(e.layout().buckets.size()); ++b)
      r.params.push_back(e.gather_bucket(b));
  }
  return r;
}

}  // namespace mics::test
