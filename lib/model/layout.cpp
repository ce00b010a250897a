// Bucket layout, parameter count, seeded initialisation and FLOP counting.
#include "mics/model/layout.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <system_error>
#include <thread>
#include <vector>

#include "mics/core/error.hpp"

namespace mics::model {

namespace {

void add_tensor(BucketSpec& b, std::string name, std::vector<std::int64_t> shape, bool decay) {
  TensorSpec t;
  t.name = std::move(name);
  t.count = 1;
  for (auto d : shape) t.count *= static_cast<std::size_t>(d);
  t.shape = std::move(shape);
  t.offset = b.count;
  t.weight_decay = decay;
  b.count += t.count;
  b.tensors.push_back(std::move(t));
}

// SplitMix64: a counter-based generator, so element i of a tensor can be produced without
// the elements before it (a shard initialises only its own range).
std::uint64_t mix(std::uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

std::uint64_t name_hash(const std::string& s) {
  std::uint64_t h = 0xcbf29ce484222325ull;  // FNV-1a
  for (unsigned char ch : s) {
    h ^= ch;
    h *= 0x100000001b3ull;
  }
  return h;
}

// Standard normal from two uniforms derived from (key, i) (Box-Muller).
double normal_at(std::uint64_t key, std::uint64_t i) {
  const std::uint64_t a = mix(key ^ mix(2 * i)), b = mix(key ^ mix(2 * i + 1));
  const double u1 = (static_cast<double>(a >> 11) + 1.0) * 0x1.0p-53;  // (0, 1]
  const double u2 = static_cast<double>(b >> 11) * 0x1.0p-53;          // [0, 1)
  return std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * M_PI * u2);
}

bool ends_with(const std::string& s, const char* suffix) {
  const std::size_t n = std::strlen(suffix);
  return s.size() >= n && s.compare(s.size() - n, n, suffix) == 0;
}

void put(device::DType dt, void* out, std::size_t i, double v) {
  switch (dt) {
    case device::DType::f32: static_cast<float*>(out)[i] = static_cast<float>(v); break;
    case device::DType::f64: static_cast<double*>(out)[i] = v; break;
    case device::DType::bf16:
      static_cast<device::bf16_t*>(out)[i] = device::float_to_bf16(static_cast<float>(v));
      break;
  }
}

}  // namespace

BucketLayout make_layout(const ModelConfig& c) {
  c.validate();
  const std::int64_t h = c.hidden;
  BucketLayout L;
  L.buckets.reserve(static_cast<std::size_t>(c.layers) + 2);
  BucketSpec emb;
  emb.name = "embeddings";
  add_tensor(emb, "wte", {c.vocab, h}, true);
  add_tensor(emb, "wpe", {c.seq, h}, true);
  L.buckets.push_back(std::move(emb));
  for (std::int64_t i = 0; i < c.layers; ++i) {
    BucketSpec b;
    b.name = std::string("h").append(std::to_string(i));
    const std::string p = b.name + ".";
    b.tensors.reserve(kBlockTensorCount);
    add_tensor(b, p + "ln1.weight", {h}, false);
    add_tensor(b, p + "ln1.bias", {h}, false);
    add_tensor(b, p + "attn.qkv.weight", {3 * h, h}, true);
    add_tensor(b, p + "attn.qkv.bias", {3 * h}, false);
    add_tensor(b, p + "attn.proj.weight", {h, h}, true);
    add_tensor(b, p + "attn.proj.bias", {h}, false);
    add_tensor(b, p + "ln2.weight", {h}, false);
    add_tensor(b, p + "ln2.bias", {h}, false);
    add_tensor(b, p + "mlp.fc.weight", {4 * h, h}, true);
    add_tensor(b, p + "mlp.fc.bias", {4 * h}, false);
    add_tensor(b, p + "mlp.proj.weight", {h, 4 * h}, true);
    add_tensor(b, p + "mlp.proj.bias", {h}, false);
    L.buckets.push_back(std::move(b));
  }
  BucketSpec f;
  f.name = "ln_f";
  add_tensor(f, "ln_f.weight", {h}, false);
  add_tensor(f, "ln_f.bias", {h}, false);
  L.buckets.push_back(std::move(f));
  return L;
}

std::size_t parameter_count(const ModelConfig& c) {
  const auto h = static_cast<std::size_t>(c.hidden);
  return static_cast<std::size_t>(c.vocab) * h + static_cast<std::size_t>(c.seq) * h +
         static_cast<std::size_t>(c.layers) * (12 * h * h + 13 * h) + 2 * h;
}

TensorRef find_tensor(const BucketLayout& layout, const std::string& name) {
  for (std::size_t b = 0; b < layout.buckets.size(); ++b)
    for (const auto& t : layout.buckets[b].tensors)
      if (t.name == name) return TensorRef{static_cast<int>(b), &t};
  throw Error("model: no parameter tensor named '" + name + "'");
}

namespace {

// Writes elements [lo, hi) of bucket b (bucket offsets) into out, whose element 0 is the
// bucket's element `begin`. Each value depends only on (seed, tensor, index), so any split
// of a range gives the same bits.
void init_range(const ModelConfig& c, const BucketSpec& b, std::size_t begin, std::size_t lo,
                std::size_t hi, device::DType dt, void* out, std::uint64_t seed) {
  const double residual_std = 0.02 / std::sqrt(2.0 * static_cast<double>(c.layers));
  for (const auto& t : b.tensors) {
    const std::size_t tlo = std::max(lo, t.offset), thi = std::min(hi, t.offset + t.count);
    if (tlo >= thi) continue;
    // The tensors without weight decay are exactly the biases and LayerNorm parameters;
    // of those, the ".weight"s are LayerNorm gains.
    if (!t.weight_decay) {
      const double v = ends_with(t.name, ".weight") ? 1.0 : 0.0;
      for (std::size_t i = tlo; i < thi; ++i) put(dt, out, i - begin, v);
      continue;
    }
    const bool residual = ends_with(t.name, "attn.proj.weight") || ends_with(t.name, "mlp.proj.weight");
    const double stddev = residual ? residual_std : 0.02;
    const std::uint64_t key = mix(seed ^ name_hash(t.name));
    for (std::size_t i = tlo; i < thi; ++i)
      put(dt, out, i - begin, stddev * normal_at(key, static_cast<std::uint64_t>(i - t.offset)));
  }
}

// A 1.3B-parameter model takes 30-45 s on one thread at 20-35 ns per element; below this
// many elements per thread, starting threads costs more than it saves.
constexpr std::size_t kInitPerThread = std::size_t(1) << 16;

unsigned init_threads(std::size_t count) {
  const unsigned hw = std::max(1u, std::thread::hardware_concurrency());
  const std::size_t by_size = std::max<std::size_t>(1, count / kInitPerThread);
  return static_cast<unsigned>(std::min<std::size_t>({hw, by_size, 64}));
}

}  // namespace

void init_bucket(const ModelConfig& c, const BucketLayout& layout, int bucket,
                 std::size_t begin, std::size_t count, device::DType dt, void* out,
                 std::uint64_t seed) {
  if (bucket < 0 || static_cast<std::size_t>(bucket) >= layout.buckets.size())
    throw Error("init_bucket: bucket " + std::to_string(bucket) + " does not exist");
  const BucketSpec& b = layout.buckets[static_cast<std::size_t>(bucket)];
  if (begin + count > b.count)
    throw Error("init_bucket: range [" + std::to_string(begin) + ", " +
                std::to_string(begin + count) + ") exceeds bucket " + b.name + " of " +
                std::to_string(b.count) + " elements");
  const unsigned n = init_threads(count);
  if (n <= 1) {
    init_range(c, b, begin, begin, begin + count, dt, out, seed);
    return;
  }
  // Contiguous slices, one per thread; the caller's thread takes whatever no thread took
  // (the last slice, or more if a thread could not be started).
  std::vector<std::thread> pool;
  pool.reserve(n - 1);
  const std::size_t per = (count + n - 1) / n, end = begin + count;
  try {
    for (unsigned k = 0; k + 1 < n; ++k) {
      const std::size_t lo = begin + k * per, hi = std::min(end, lo + per);
      pool.emplace_back([&c, &b, begin, lo, hi, dt, out, seed] {
        init_range(c, b, begin, lo, hi, dt, out, seed);
      });
    }
  } catch (const std::system_error&) {
  }
  init_range(c, b, begin, std::min(end, begin + pool.size() * per), end, dt, out, seed);
  for (auto& t : pool) t.join();
}

double head_training_flops(const ModelConfig& c, double sequences) {
  return 6.0 * sequences * static_cast<double>(c.seq) * static_cast<double>(c.hidden) *
         static_cast<double>(c.vocab);
}

// Narayanan et al. write eq. 3 for f = 4 only, where their head term V/(16 l h) equals
// 6 B s h V; scaling that term with f would credit a head without recomputation 4.5 B s h V,
// a quarter less than its GEMMs execute.
double training_flops(const ModelConfig& c, double sequences, bool recompute) {
  const double f = recompute ? 4.0 : 3.0;
  const double s = static_cast<double>(c.seq), l = static_cast<double>(c.layers),
               h = static_cast<double>(c.hidden);
  return 24.0 * f * sequences * s * l * h * h * (1.0 + s / (6.0 * h)) +
         head_training_flops(c, sequences);
}

double flops_per_token(const ModelConfig& c, bool recompute) {
  return training_flops(c, 1.0, recompute) / static_cast<double>(c.seq);
}

}  // namespace mics::model
