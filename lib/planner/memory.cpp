// Per-rank memory, mirroring the engine's and the transformer's allocations.
#include "mics/planner/memory.hpp"

#include <algorithm>
#include <cmath>

namespace mics::planner {

const char* strategy_name(Strategy s) {
  switch (s) {
    case Strategy::ddp: return "ddp";
    case Strategy::zero2: return "zero2";
    case Strategy::zero3: return "zero3";
    case Strategy::mics: return "mics";
  }
  return "?";
}

bool persistent(Strategy s) { return s == Strategy::ddp || s == Strategy::zero2; }

double BucketSizes::largest() const {
  return std::max({embeddings, layers > 0 ? block : 0.0, final_norm});
}

BucketSizes bucket_sizes(const model::ModelConfig& c) {
  const double h = static_cast<double>(c.hidden);
  BucketSizes b;
  b.embeddings = static_cast<double>(c.vocab) * h + static_cast<double>(c.seq) * h;
  b.block = 12.0 * h * h + 13.0 * h;
  b.final_norm = 2.0 * h;
  b.layers = c.layers;
  return b;
}

double shard_chunk(double count, int p) {
  const double chunk = std::ceil(count / p);
  return std::ceil(chunk / 16.0) * 16.0;
}

double shard_padded(double count, int p) { return shard_chunk(count, p) * p; }

namespace {

// Sum over the buckets of f(count), with the l identical blocks counted once.
template <class F>
double over_buckets(const BucketSizes& b, F f) {
  return f(b.embeddings) + static_cast<double>(b.layers) * f(b.block) + f(b.final_norm);
}

double largest_padded(const BucketSizes& b, int p) {
  double m = std::max(shard_padded(b.embeddings, p), shard_padded(b.final_norm, p));
  if (b.layers > 0) m = std::max(m, shard_padded(b.block, p));
  return m;
}

double largest_chunk(const BucketSizes& b, int p) {
  double m = std::max(shard_chunk(b.embeddings, p), shard_chunk(b.final_norm, p));
  if (b.layers > 0) m = std::max(m, shard_chunk(b.block, p));
  return m;
}

}  // namespace

double activation_bytes(const model::ModelConfig& c, const MemoryInputs& in) {
  if (in.micro_batch <= 0) return 0.0;
  const double n = static_cast<double>(in.micro_batch) * static_cast<double>(c.seq);
  const double h = static_cast<double>(c.hidden), cb = in.compute_bytes;
  const double sb = in.compute_bytes == 8 ? 8.0 : 4.0;  // LayerNorm statistics, losses
  const double T = static_cast<double>(c.seq);
  // Blocked attention keeps one log-sum-exp per (row, head), in f64 for f64 compute.
  const double scores = in.flash_attention
                            ? sb * static_cast<double>(in.micro_batch) * static_cast<double>(c.heads) * T
                            : cb * static_cast<double>(in.micro_batch) * static_cast<double>(c.heads) * T * T;
  // ln1, qkv (3), atty, res2, ln2, fc (4), gelu (4), res3: 16 activations of n x h,
  // 4 LayerNorm statistics of n, and the attention's saved state.
  const double layer = 16.0 * n * h * cb + 4.0 * n * sb + scores;
  const double L = static_cast<double>(c.layers);
  const double layers = in.recompute ? layer + (L - 1.0) * n * h * cb : L * layer;
  // tokens, targets (int32); encoded, ln_f, dres, dbuf (n x h); dqkv (3), dfch (4);
  // ln_f statistics and losses; logits n x V.
  const double global = 2.0 * n * 4.0 + 11.0 * n * h * cb + 3.0 * n * sb +
                        n * static_cast<double>(c.vocab) * cb;
  return layers + global;
}

MemoryBreakdown rank_memory(const model::ModelConfig& c, Strategy s, int p, int nodes_per_group,
                            bool hierarchical, const MemoryInputs& in) {
  const BucketSizes b = bucket_sizes(c);
  const double cb = in.compute_bytes, rb = in.reduce_bytes, sb = in.state_bytes;
  const bool separate_compute_shard = in.compute_bytes != in.state_bytes;
  // Partition groups of one rank computing in the states' type read the master shard in
  // place: no persistent copy, no parameter slots. With one rank in all and one
  // micro-step of gradients in that type too, the gradients go straight into the
  // accumulator: no gradient slots either (an unknown accumulation counts them).
  const bool master_view = p == 1 && !separate_compute_shard;
  const bool direct_grads = master_view && in.reduce_bytes == in.compute_bytes && in.replicas == 1 &&
                            in.accumulation == 1;
  MemoryBreakdown m;
  // master, Adam m and v, gradient accumulator; the compute shard when it is a separate
  // copy; the whole padded bucket for persistent strategies.
  m.states = over_buckets(b, [&](double n) {
    const double chunk = shard_chunk(n, p);
    return 4.0 * chunk * sb + (separate_compute_shard ? chunk * cb : 0.0) +
           (persistent(s) && !master_view ? shard_padded(n, p) * cb : 0.0);
  });
  const double big = largest_padded(b, p), big_chunk = largest_chunk(b, p);
  // Four parameter slots (non-persistent) and four gradient slots, as the engine holds.
  if (!persistent(s) && !master_view) m.working += 4.0 * big * cb;
  if (!direct_grads)
    m.working += 4.0 * (big * cb + (in.reduce_bytes != in.compute_bytes ? big * rb : 0.0) + big_chunk * rb);
  // A hierarchical reduce-scatter keeps a k-chunk temporary while in flight (up to four).
  if (hierarchical && nodes_per_group > 1) m.working += 4.0 * nodes_per_group * big_chunk * rb;
  // A hop 2 narrower than the accumulator all-reduces a cast copy of every shard.
  if (in.replicas > 1 && rb < sb) m.working += over_buckets(b, [&](double n) { return shard_chunk(n, p) * rb; });
  m.activations = activation_bytes(c, in);
  m.workspace = in.workspace_bytes;
  return m;
}

}  // namespace mics::planner
