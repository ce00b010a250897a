#pragma once
// Predicted step time of one layout: the engine's schedule (lib/engine/engine.cpp)
// replayed on two clocks, compute and the partition group's communication queue.
//
// Per micro-batch, forward: gather the embeddings and (prefetch) block 0; for each block
// wait for its gather, start the next one, compute, release. Backward: the same in
// reverse (blocks are gathered again), each bucket's gradient reduce-scatter starting as
// its backward ends, four gradient slots (a fifth bucket waits for the oldest
// reduce-scatter). Gathers and reduce-scatters share one queue in issue order.
// Hop 2 (two-hop, --overlap-grad-sync): in the last micro-batch each bucket's
// replication all-reduce starts when its reduce-scatter is finished, which the engine
// does when a gradient slot is needed (the embeddings' slot is held through the
// backward, so three slots rotate: a block's reduce-scatter is finished when the third
// block after it starts its backward) and, for the last three blocks and the
// embeddings, after the backward. The all-reduces queue one after another on their own
// queue, or on the partition queue when both groups cross the node's network link; the
// step waits for the last: exposed hop 2 = max(0, hop-2 time - the part of the last
// backward after the first all-reduce started), less where the queue idles. Without
// the overlap they all run exposed after the backward; with every-micro-step one
// all-reduce per bucket per micro-batch, blocking. Hop 2 moves the reduce type when it
// is narrower than the f32 accumulator (bf16: 2 bytes), else f32. Then AdamW
// (memory-bound), then zero2's all-gathers of every bucket, exposed. With overlap =
// false (a backend that progresses only inside its calls) a collective starts only
// when it is waited for. Compute per bucket is the step log's FLOP formula
// (model::training_flops) over peak x compute_efficiency.
//
// These are estimates of a model, not measurements.
#include <cstdint>
#include <ostream>
#include <string>
#include <vector>

#include "mics/model/config.hpp"
#include "mics/planner/cluster.hpp"
#include "mics/planner/memory.hpp"

namespace mics::planner {

// Whose schedule the zero2 and zero3 layouts are replayed with: this engine's, or the
// one DeepSpeed 0.5.6 ran (the MiCS paper's baseline; see deepspeed.hpp). ddp and mics
// layouts are always this engine's.
enum class Baseline { engine, deepspeed_0_5_6 };
const char* baseline_name(Baseline b);
inline std::ostream& operator<<(std::ostream& os, Baseline b) { return os << baseline_name(b); }

struct Workload {
  model::ModelConfig model;
  std::int64_t global_batch = 0;  // sequences per step over all ranks
  std::int64_t micro_batch = 1;   // per rank per micro-step
  bool recompute = false;
  int reduce_bytes = 4;           // gradient reduce-scatter type (f32 4, bf16 2)
  bool two_hop = true;            // false: every-micro-step replication all-reduce
  bool overlap_grad_sync = true;  // two-hop: hop 2 starts during the last backward
  bool prefetch = true;
  Baseline baseline = Baseline::engine;
};

struct Layout {
  Strategy strategy = Strategy::mics;
  int world = 1;
  int ranks_per_node = 1;
  int p = 1;                 // partition size (1 ddp, W zero2/zero3)
  bool hierarchical = false; // requested (used when the group spans nodes)
  int nodes() const { return world / ranks_per_node; }
  int nodes_per_group() const { return p > ranks_per_node ? p / ranks_per_node : 1; }
  bool two_step() const { return hierarchical && nodes_per_group() > 1; }
};

struct Prediction {
  Layout layout;
  Workload workload;
  int accumulation = 1;
  double step_s = 0, compute_s = 0, optimizer_s = 0;
  double partition_comm_s = 0, partition_exposed_s = 0;
  double replication_comm_s = 0, replication_exposed_s = 0;
  double tokens_per_s = 0, tflops_per_gpu = 0, mfu = 0;
  double hw_tflops_per_gpu = 0;  // FLOPs executed, recomputation included (f = 4 with it)
  Baseline baseline = Baseline::engine;  // the schedule this row was replayed with
  MemoryBreakdown memory;
  double memory_capacity = 0;  // bytes usable: memory_gib x (1 - margin)
  bool fits = false;
};

// Seconds of compute of one micro-batch: forward and backward (recomputation included)
// of one transformer block and of the embeddings/head, split as the FLOP formula says.
struct ComputeSplit {
  double fwd_block = 0, bwd_block = 0, fwd_head = 0, bwd_head = 0;
};
ComputeSplit compute_split(const Cluster& c, const Workload& w, const Layout& l);
// AdamW over a rank's shard: memory-bound, about 36 bytes per shard element.
double optimizer_seconds(const Cluster& c, const model::ModelConfig& m, int p);

int compute_bytes(const Cluster& c);
MemoryInputs memory_inputs(const Cluster& c, const Workload& w);

// Throws UsageError (one line) when the layout is invalid or the batch does not divide.
Prediction predict(const Cluster& c, const Workload& w, const Layout& layout);

// Layouts to consider at `world` ranks: ddp, zero2, zero3 and mics at every valid p
// (1 < p < W), each flat and, where its group spans nodes, hierarchical.
std::vector<Layout> candidate_layouts(int world, int ranks_per_node);

}  // namespace mics::planner
