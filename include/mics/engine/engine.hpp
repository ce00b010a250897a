#pragma once
// The MiCS sharded training engine (docs/DESIGN.md section 4).
//
// Every rank is a data-parallel worker. Each bucket of the model is padded and split into
// p chunks over the partition group; this rank owns chunk q (its partition rank) of every
// bucket as fp32 master weights, Adam m and v, and an fp32 gradient accumulator. The
// strategies differ only in p and in whether the compute copy of the parameters persists:
//
//   strategy   p        compute copy of the parameters      gradient path
//   ddp        1        persistent, whole model              all-reduce over the world, once per step
//   zero2      W        persistent, refreshed by all-gather  reduce-scatter over the world
//   zero3      W        gathered per bucket, then released   reduce-scatter over the world
//   mics       p        gathered per bucket, then released   reduce-scatter in the group,
//                                                           all-reduce over replicas per step
//
// The engine talks to the model only through its bucket-by-bucket calls, to the device
// only through device::Backend and to other ranks only through comm::Collectives (device
// buffers, and host scalars through its sum_host/all_gather_host).
#include <chrono>
#include <cstdint>
#include <memory>
#include <vector>

#include "mics/comm/collectives.hpp"
#include "mics/comm/process_groups.hpp"
#include "mics/data/dataset.hpp"
#include "mics/device/backend.hpp"
#include "mics/engine/train_config.hpp"
#include "mics/model/buckets.hpp"
#include "mics/model/config.hpp"
#include "mics/model/transformer.hpp"

namespace mics::engine {

// The partition size a strategy implies for a world of W ranks (partition_size is the
// --partition-size value for mics; 0 there means auto and must be resolved first).
int partition_size_for(Strategy s, int partition_size, int world_size);
// Whether the strategy keeps a whole compute copy of the parameters on every rank.
bool persistent_parameters(Strategy s);

// --partition-size auto: the smallest node-aligned p whose per-rank memory, as mics-plan
// counts it (planner::rank_memory: fp32 master, m, v and gradient shards over p, a compute
// shard when the compute type is not fp32, and the engine's parameter and gradient slots
// of the largest bucket; activations are not counted), fits `memory_bytes`. Throws
// UsageError naming the need when even p = W does not fit.
int auto_partition_size(const model::ModelConfig& model, int world_size, int ranks_per_node,
                        device::DType compute, std::size_t memory_bytes);

// Where time went in one step, in seconds. "exposed" is time the compute stream waited
// for communication (host time inside waits on the CPU backend).
struct CommTime {
  double gather = 0;        // parameter all-gathers (partition group)
  double reduce = 0;        // gradient reduce-scatters (partition group)
  double sync = 0;          // gradient all-reduce over the replication group (hop 2)
  double total() const { return gather + reduce + sync; }
};

struct StepResult {
  int step = 0;                  // 1-based optimizer step just taken
  double loss = 0;               // mean over the global batch's counted tokens
  double grad_norm = 0;          // global norm before clipping
  double lr = 0;
  double seconds = 0;            // wall time of the whole step on this rank
  std::int64_t tokens = 0;       // tokens processed by all ranks (global batch x seq)
  CommTime exposed;
  // The loss or the gradient norm was not finite on some rank: every rank skipped the
  // update (parameters and Adam states unchanged, gradients dropped) and moved on.
  bool skipped = false;
};

// The shards of this rank, for checkpoints: per bucket `chunk` fp32 values of shard q.
struct ShardState {
  std::vector<model::Sharding> sharding;  // per bucket
  int shard_index = 0;                    // q
  std::vector<float*> master, adam_m, adam_v;  // device pointers, chunk elements each
};

class Engine {
public:
  // groups must have been made with partition_size_for(cfg.strategy, ...) ranks per
  // partition group. compute: the model's compute type; reduce: the type gradients are
  // reduce-scattered in (f32, or the compute type); states: master weights, Adam moments
  // and the gradient accumulator (f32; f64 lets tests separate the engine's logic from
  // float32 rounding). The constructor allocates everything first and then fills the
  // compute copies, which is collective for zero2; with defer_collectives the caller does
  // that with refresh_compute_copies(), so that it can first agree that every rank's
  // allocations succeeded.
  Engine(const model::ModelConfig& model, const TrainConfig& cfg, device::Backend& backend,
         comm::Collectives& collectives, comm::ProcessGroups& groups,
         device::DType compute = device::DType::f32, device::DType reduce = device::DType::f32,
         device::DType states = device::DType::f32, bool defer_collectives = false);
  ~Engine();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  // One optimizer step over this rank's micro-batches of the global batch of step
  // `step()` (0-based before the call). Collective over the world.
  StepResult train_step(const data::Dataset& data);
  // Mean loss over `batches` evaluation batches (each the size of a global batch).
  // Collective over the world.
  double evaluate(const data::Dataset& data, std::int64_t batches);

  int step() const noexcept { return step_; }
  void set_step(int step) noexcept { step_ = step; }
  int accumulation() const noexcept { return accumulation_; }
  int partition_size() const noexcept { return p_; }
  const model::Transformer& transformer() const { return *model_; }
  const model::BucketLayout& layout() const;

  // Model-state bytes this rank holds (master, Adam m and v, gradient accumulator, the
  // compute shard when it is a separate copy, and persistent compute copies), from the
  // engine's own allocation accounting; and the working set's bytes (parameter and
  // gradient slots, hop-2 buffers) as allocated so far.
  std::size_t model_state_bytes() const noexcept { return state_bytes_; }
  std::size_t working_set_bytes() const noexcept;

  ShardState shard_state();
  // After the master shards were overwritten (checkpoint load): refresh every derived copy.
  void refresh_compute_copies();

  // Master values of bucket b, unpadded, assembled from the shards (collective over the
  // partition group); on every rank of the group.
  std::vector<double> gather_bucket(int bucket);
  // This rank's master shard of bucket b (chunk values, padding included), on the host,
  // converted to float when the states are f64.
  std::vector<float> master_shard(int bucket);
  // The same in double precision, without conversion loss.
  std::vector<double> master_shard_f64(int bucket);

private:
  StepResult skip_step(double loss, double norm, std::chrono::steady_clock::time_point t0);
  struct Impl;
  std::unique_ptr<Impl> impl_;
  std::unique_ptr<model::Transformer> model_;
  int step_ = 0;
  int accumulation_ = 1;
  int p_ = 1;
  std::size_t state_bytes_ = 0;
};

}  // namespace mics::engine
