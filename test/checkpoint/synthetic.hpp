#pragma once
// Synthetic model states for checkpoint tests: a small layout whose tensors have awkward
// shapes (a scalar, odd sizes, 3-D), and shards whose values are a pure function of
// (group, tensor name, flat index), so any reader in any layout knows what to expect.
#include <mpi.h>

#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "mics/checkpoint/checkpoint.hpp"
#include "mics/model/buckets.hpp"

namespace mics::test {

inline model::TensorSpec tensor(const std::string& name, std::vector<std::int64_t> shape) {
  model::TensorSpec t;
  t.name = name;
  t.shape = std::move(shape);
  t.count = 1;
  for (auto d : t.shape) t.count *= static_cast<std::size_t>(d);
  return t;
}

inline model::BucketSpec bucket(const std::string& name, std::vector<model::TensorSpec> ts) {
  model::BucketSpec b;
  b.name = name;
  for (auto& t : ts) {
    t.offset = b.count;
    b.count += t.count;
    b.tensors.push_back(t);
  }
  return b;
}

// scale multiplies the big tensors' first dimension (benchmarks use a large scale).
inline model::BucketLayout synthetic_layout(std::int64_t scale = 1) {
  model::BucketLayout l;
  l.buckets.push_back(bucket("embeddings", {tensor("wte", {37 * scale, 8}), tensor("wpe", {5, 8})}));
  l.buckets.push_back(bucket("h0", {tensor("h0.attn.w", {8, 3, 4}), tensor("h0.attn.b", {13}),
                                    tensor("h0.gain", {})}));
  l.buckets.push_back(bucket("h1", {tensor("h1.mlp.w", {64 * scale, 17}), tensor("h1.mlp.b", {17})}));
  l.buckets.push_back(bucket("ln_f", {tensor("ln_f.g", {8}), tensor("ln_f.b", {8})}));
  return l;
}

inline float synthetic_value(int group, const std::string& name, std::uint64_t i) {
  std::uint64_t h = 1469598103934665603ull ^ static_cast<std::uint64_t>(group + 1);
  for (unsigned char c : name) h = (h ^ c) * 1099511628211ull;
  h ^= i * 0x9E3779B97F4A7C15ull;
  h ^= h >> 29;
  h *= 0xbf58476d1ce4e5b9ull;
  h ^= h >> 32;
  return static_cast<float>(static_cast<double>(h % 2000003) / 1000.0 - 1000.0);
}

// A rank's shard buffers plus the ShardState pointing into them.
struct OwnedState {
  std::vector<std::vector<float>> data[3];
  checkpoint::ShardState st;
};

inline std::unique_ptr<OwnedState> make_state(const model::BucketLayout& layout, int p, int q, bool writer,
                                              std::size_t align, bool fill, MPI_Comm comm = MPI_COMM_WORLD) {
  auto o = std::make_unique<OwnedState>();
  o->st.comm = comm;
  o->st.layout = &layout;
  o->st.partition_size = p;
  o->st.shard_index = q;
  o->st.writer = writer;
  o->st.align = align;
  for (int g = 0; g < 3; ++g) o->data[g].resize(layout.buckets.size());
  for (std::size_t b = 0; b < layout.buckets.size(); ++b) {
    const auto& bk = layout.buckets[b];
    const auto s = model::shard_bucket(bk.count, p, align);
    for (int g = 0; g < 3; ++g) {
      auto& v = o->data[g][b];
      // Garbage in the padding and (when not filled) everywhere: load must overwrite it.
      v.assign(s.chunk, -12345.0f);
      if (fill)
        for (const auto& t : bk.tensors)
          for (std::size_t k = 0; k < t.count; ++k) {
            const std::size_t e = t.offset + k;
            if (e >= s.begin(q) && e < s.begin(q) + s.chunk) v[e - s.begin(q)] = synthetic_value(g, t.name, k);
          }
    }
    o->st.buckets.push_back({o->data[0][b], o->data[1][b], o->data[2][b]});
  }
  return o;
}

// Number of elements of `o` that differ bitwise from the synthetic values (padding must be 0).
inline std::size_t count_wrong(const model::BucketLayout& layout, const OwnedState& o) {
  std::size_t wrong = 0;
  for (std::size_t b = 0; b < layout.buckets.size(); ++b) {
    const auto& bk = layout.buckets[b];
    const auto s = model::shard_bucket(bk.count, o.st.partition_size, o.st.align);
    const std::size_t begin = s.begin(o.st.shard_index);
    for (int g = 0; g < 3; ++g) {
      std::vector<float> want(s.chunk, 0.0f);
      for (const auto& t : bk.tensors)
        for (std::size_t k = 0; k < t.count; ++k) {
          const std::size_t e = t.offset + k;
          if (e >= begin && e < begin + s.chunk) want[e - begin] = synthetic_value(g, t.name, k);
        }
      for (std::size_t k = 0; k < s.chunk; ++k)
        if (std::memcmp(&want[k], &o.data[g][b][k], 4) != 0) ++wrong;
    }
  }
  return wrong;
}

inline checkpoint::Metadata synthetic_meta(std::int64_t step) {
  checkpoint::Metadata m;
  m.step = step;
  m.tokens_seen = step * 4096;
  m.schedule = {{"lr", 3e-4 * static_cast<double>(step) / 100.0}, {"warmup_steps", 10}, {"total_steps", 1000}};
  m.rng_state = {0x123456789abcdefull, static_cast<std::uint64_t>(step), ~0ull};
  m.data_position = {static_cast<std::uint64_t>(step) * 8, 3};
  m.model_config = "n_layer = 2\nn_embd = 8\n# \"quoted\" text\n";
  m.training_config = "lr = 3e-4\nsteps = 1000\n";
  m.layout = {4, 2, 2, "mics", true};
  m.strings = {{"note", "synthetic"}, {"empty", ""}};
  m.ints = {{"micro_batches", 4}, {"negative", -7}};
  return m;
}

}  // namespace mics::test
