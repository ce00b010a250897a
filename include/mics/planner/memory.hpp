#pragma once
// Memory per rank of a layout, counted the way the engine and the transformer allocate
// (lib/engine/engine.cpp, lib/model/transformer.cpp), from the model's shape alone:
// nothing of the model is allocated, whatever its size. mics-train's
// --partition-size auto (engine::auto_partition_size) uses this function.
#include <cstddef>
#include <cstdint>

#include "mics/model/config.hpp"

namespace mics::planner {

enum class Strategy { ddp, zero2, zero3, mics };
const char* strategy_name(Strategy s);
// Parameters replicated on every rank as a compute copy (ddp, zero2).
bool persistent(Strategy s);

// Element counts of the buckets (embeddings, every block alike, ln_f), from the shape.
struct BucketSizes {
  double embeddings = 0, block = 0, final_norm = 0;
  std::int64_t layers = 0;
  double parameters() const { return embeddings + final_norm + block * static_cast<double>(layers); }
  double largest() const;
};
BucketSizes bucket_sizes(const model::ModelConfig& c);

// Element counts of one bucket sharded over p (model::shard_bucket's rule, in doubles).
double shard_chunk(double count, int p);
double shard_padded(double count, int p);

struct MemoryInputs {
  int compute_bytes = 2;        // parameters, gradients and activations (bf16 2, f32 4)
  int reduce_bytes = 4;         // gradients as reduce-scattered (--grad-reduce-dtype)
  int state_bytes = 4;          // master weights, Adam moments, gradient accumulator
  std::int64_t micro_batch = 0; // 0: no activations counted
  bool recompute = false;
  bool flash_attention = true;  // 4 B per (row, head) (both backends); false: T x T scores
  double workspace_bytes = 0;
  int replicas = 1;             // partition groups (W / p): hop 2 runs when above 1
  int accumulation = 0;         // micro-steps per optimizer step; 0: not known (see rank_memory)
};

struct MemoryBreakdown {
  double states = 0;       // = Engine::model_state_bytes()
  double working = 0;      // = Engine::working_set_bytes() (+ hierarchical temporaries)
  double activations = 0;  // = Transformer::activation_bytes()
  double workspace = 0;
  double total() const { return states + working + activations + workspace; }
};

// p: the partition size (1 for ddp, W for zero2/zero3); nodes_per_group: k, for the
// hierarchical reduce-scatter's temporaries (1 when flat).
MemoryBreakdown rank_memory(const model::ModelConfig& c, Strategy s, int p, int nodes_per_group,
                            bool hierarchical, const MemoryInputs& in);

// The activation bytes of one micro-batch, as the transformer allocates them.
double activation_bytes(const model::ModelConfig& c, const MemoryInputs& in);

}  // namespace mics::planner
