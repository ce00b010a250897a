#pragma once
// What a training run is asked to do, independent of the model: the sharding strategy,
// the batch arithmetic, the optimizer and its schedule. Parsed from mics-train's options
// and validated here, so that every rank rejects a bad request with the same message.
#include <cstdint>
#include <ostream>
#include <string>

namespace mics::engine {

// ddp:   p = 1, every rank holds every model state; gradients all-reduced once per step.
// zero2: parameters replicated; gradients and optimizer states sharded over the world.
// zero3: every model state sharded over the world (p = W).
// mics:  every model state sharded over a partition group of p ranks, replicated
//        across the W/p groups (two-hop gradient sync).
enum class Strategy { ddp, zero2, zero3, mics };

// two_hop: reduce-scatter in the partition group every micro-step, all-reduce over the
//          replication group once per optimizer step (MiCS).
// every_micro_step: the replication all-reduce after every micro-step (the ablation).
enum class GradSync { two_hop, every_micro_step };

const char* to_string(Strategy s);
const char* to_string(GradSync g);
inline std::ostream& operator<<(std::ostream& os, Strategy s) { return os << to_string(s); }
inline std::ostream& operator<<(std::ostream& os, GradSync g) { return os << to_string(g); }
Strategy parse_strategy(const std::string& text);   // throws UsageError
GradSync parse_grad_sync(const std::string& text);  // throws UsageError

struct OptimizerConfig {
  double lr = 3e-4;          // peak learning rate
  double min_lr = 3e-5;      // floor of the cosine decay
  int warmup_steps = 10;     // linear warm-up from lr/warmup to lr
  int decay_steps = 0;       // cosine decay ends here (0: the run's step count)
  double beta1 = 0.9, beta2 = 0.95, eps = 1e-8;
  double weight_decay = 0.1; // decoupled; never applied to biases and LayerNorm
  double grad_clip = 1.0;    // global-norm clipping; <= 0 turns it off
};

struct TrainConfig {
  Strategy strategy = Strategy::mics;
  int partition_size = 0;       // 0 = auto (mics only)
  bool hierarchical = false;
  bool hierarchical_all_reduce = true;  // layout::LayoutRequest::hierarchical_all_reduce
  GradSync grad_sync = GradSync::two_hop;
  bool prefetch = true;
  // two_hop: start each bucket's replication all-reduce during the last micro-step's
  // backward, as soon as its reduce-scatter is finished, instead of after the backward.
  bool overlap_grad_sync = true;
  bool recompute = false;       // activation recomputation: keep block outputs only
  int ranks_per_node = 0;       // 0 = detect from shared-memory domains
  int global_batch = 8;         // sequences per optimizer step, over all ranks
  int micro_batch = 1;          // sequences per rank per micro-step
  int steps = 20;
  std::uint64_t seed = 1234;
  double memory_per_rank_gib = 0;  // for --partition-size auto; 0 = the device's memory
  OptimizerConfig optimizer;
};

// Learning rate at optimizer step `step` (0-based): linear warm-up, then cosine decay
// from lr to min_lr over [warmup, decay_steps), min_lr after.
double learning_rate(const OptimizerConfig& o, int step, int total_steps);

// Micro-batches per step: global_batch = world * accumulation * micro_batch must hold.
int accumulation_steps(const TrainConfig& c, int world_size);  // throws UsageError

}  // namespace mics::engine
