#pragma once
// Parameter buckets: the unit the sharded engine gathers, reduce-scatters and
// checkpoints. A bucket is one flat array of `count` elements holding named tensors
// back to back; the model describes its buckets with these plain structs, and every
// other part of mics (engine, checkpoint) addresses parameters only through them.
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace mics::model {

struct TensorSpec {
  std::string name;               // unique across the model, e.g. "h3.attn.qkv.weight"
  std::vector<std::int64_t> shape;
  std::size_t offset = 0;         // first element inside its bucket
  std::size_t count = 0;          // product of shape
  bool weight_decay = true;       // false for biases, LayerNorm gains and biases
};

struct BucketSpec {
  std::string name;               // "embeddings", "h0", ..., "ln_f"
  std::vector<TensorSpec> tensors;
  std::size_t count = 0;          // sum of tensor counts, no padding
};

struct BucketLayout {
  std::vector<BucketSpec> buckets;
  std::size_t parameter_count() const {
    std::size_t n = 0;
    for (const auto& b : buckets) n += b.count;
    return n;
  }
};

// How a bucket is split over a partition group of p ranks: padded so that each of the p
// chunks is a multiple of `align` elements. Shard q owns [q*chunk, (q+1)*chunk); the
// part at or beyond `count` is padding, which never reaches the optimizer or a file.
struct Sharding {
  std::size_t count = 0;
  std::size_t chunk = 0;
  int parts = 1;
  std::size_t padded() const { return chunk * static_cast<std::size_t>(parts); }
  std::size_t begin(int q) const { return chunk * static_cast<std::size_t>(q); }
  // Elements of shard q that are real parameters (0 when the shard is all padding).
  std::size_t valid(int q) const {
    const std::size_t b = begin(q);
    return b >= count ? 0 : (count - b < chunk ? count - b : chunk);
  }
};

inline Sharding shard_bucket(std::size_t count, int parts, std::size_t align = 16) {
  const std::size_t p = static_cast<std::size_t>(parts);
  std::size_t chunk = (count + p - 1) / p;
  chunk = (chunk + align - 1) / align * align;
  return Sharding{count, chunk, parts};
}

}  // namespace mics::model
