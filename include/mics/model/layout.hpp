#pragma once
// The transformer's parameters as buckets (mics/model/buckets.hpp), their seeded
// initialisation, and FLOP counting. Everything here is arithmetic on the config: no
// parameter memory is allocated, whatever the model's size.
//
// Buckets, in forward order (index: name: tensors, shapes [rows, cols]):
//   0:      "embeddings": wte [V, h], wpe [s, h]            (wte is also the output head)
//   1..l:   "h<i>" for block i = index-1:
//             h<i>.ln1.weight [h], h<i>.ln1.bias [h],
//             h<i>.attn.qkv.weight [3h, h], h<i>.attn.qkv.bias [3h],
//             h<i>.attn.proj.weight [h, h], h<i>.attn.proj.bias [h],
//             h<i>.ln2.weight [h], h<i>.ln2.bias [h],
//             h<i>.mlp.fc.weight [4h, h], h<i>.mlp.fc.bias [4h],
//             h<i>.mlp.proj.weight [h, 4h], h<i>.mlp.proj.bias [h]
//   l+1:    "ln_f": ln_f.weight [h], ln_f.bias [h]
// Linear weights are [out, in] (y = x W^T + b). Tensors are back to back in their bucket,
// in the order listed. weight_decay is false for every bias and LayerNorm tensor.
#include <cstddef>
#include <cstdint>

#include "mics/device/dtype.hpp"
#include "mics/model/buckets.hpp"
#include "mics/model/config.hpp"

namespace mics::model {

constexpr int kEmbeddingBucket = 0;
inline int block_bucket(int layer) { return layer + 1; }
inline int final_norm_bucket(const ModelConfig& c) { return static_cast<int>(c.layers) + 1; }
inline int bucket_count(const ModelConfig& c) { return static_cast<int>(c.layers) + 2; }

// Index of each tensor inside a block bucket's `tensors` (the order above).
enum BlockTensor : int {
  kLn1W = 0, kLn1B, kQkvW, kQkvB, kAttnProjW, kAttnProjB,
  kLn2W, kLn2B, kFcW, kFcB, kFcProjW, kFcProjB, kBlockTensorCount
};
enum EmbeddingTensor : int { kWte = 0, kWpe = 1 };
enum FinalNormTensor : int { kLnfW = 0, kLnfB = 1 };

BucketLayout make_layout(const ModelConfig& c);

// V*h + s*h + l*(12h^2 + 13h) + 2h, without building the layout.
std::size_t parameter_count(const ModelConfig& c);

// Where a named tensor lives: bucket index and its spec; throws mics::Error if absent.
struct TensorRef {
  int bucket = -1;
  const TensorSpec* spec = nullptr;
};
TensorRef find_tensor(const BucketLayout& layout, const std::string& name);

// Named view: where tensor t starts inside a bucket buffer of element type dt.
inline void* tensor_data(void* bucket, device::DType dt, const TensorSpec& t) {
  return static_cast<char*>(bucket) + t.offset * device::dtype_size(dt);
}
inline const void* tensor_data(const void* bucket, device::DType dt, const TensorSpec& t) {
  return static_cast<const char*>(bucket) + t.offset * device::dtype_size(dt);
}

// Writes elements [begin, begin+count) of bucket `bucket`'s initial values, converted to
// dt, into host memory `out`. Each element's value depends only on (seed, tensor name,
// index inside the tensor), so any sharding of any bucket reproduces the same model.
// GPT-2 style: weights normal(0, 0.02), the two residual projections
// (attn.proj.weight, mlp.proj.weight) normal(0, 0.02/sqrt(2l)), LayerNorm gains 1,
// biases and LayerNorm biases 0.
void init_bucket(const ModelConfig& c, const BucketLayout& layout, int bucket,
                 std::size_t begin, std::size_t count, device::DType dt, void* out,
                 std::uint64_t seed);

// docs/DESIGN.md section 6 (Narayanan et al. 2021, eq. 3): FLOPs for one forward and
// backward pass over `sequences` sequences of c.seq tokens,
//   F = 24 f B s l h^2 (1 + s/(6h)) + 6 B s h V,  f = 4 with recomputation, else 3.
// The head's 6 B s h V does not scale with f: it is never recomputed.
double training_flops(const ModelConfig& c, double sequences, bool recompute = false);
// The head's share of training_flops: forward 2 B s h V, backward 4 B s h V.
double head_training_flops(const ModelConfig& c, double sequences);
// The same per token (B*s = 1).
double flops_per_token(const ModelConfig& c, bool recompute = false);

}  // namespace mics::model
