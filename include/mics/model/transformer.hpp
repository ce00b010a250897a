#pragma once
// The transformer's forward and backward passes, bucket by bucket, on a device backend.
//
// The model owns activations only. Parameters and gradients are passed in per bucket
// (pointers to device memory of the model's compute type, laid out as make_layout() says,
// at least bucket.count elements), so the engine can gather bucket b just before it is
// used and reduce-scatter its gradient right after.
//
// One training micro-step, in this order (the engine interleaves its gathers and
// reduce-scatters between the calls):
//   set_batch(tokens, targets)
//   embed_forward(P[0]); for i in 0..l-1: block_forward(i, P[1+i])
//   loss = head_forward(P[l+1], P[0])
//   head_backward(P[l+1], P[0], G[l+1], G[0])          // writes G[l+1] and all of G[0]
//   for i in l-1..0: block_backward(i, P[1+i], G[1+i])  // writes G[1+i]
//   embed_backward(P[0], G[0])                          // adds into G[0]
// So bucket 0 (the tied wte) is needed at the start and at the head, and its gradient
// buffer must live from head_backward to embed_backward.
//
// Scaling convention: the loss is the MEAN cross-entropy over this micro-batch's counted
// targets (targets >= 0), and the gradients are those of that mean. counted_tokens()
// gives the count: to get the gradient of the mean over several micro-batches or ranks,
// weight each by its count over the total (with BERT's fixed masking and GPT's full
// targets every micro-batch counts the same number, so 1/(W*A) is exact). With no
// counted target the loss is 0 and the gradients are 0.
//
// Activations are allocated once, in the constructor, for [micro_batch, cfg.seq], and
// reused by every step. Calls run on the backend's compute stream.
//
// Activation recomputation (recompute = true): only each block's output (the residual
// stream, [B,T,C] per layer) is kept from the forward pass; one set of block
// intermediates is shared by all layers, and block_backward(i) first re-runs block i's
// forward from its input. Same results bit for bit, one more block forward per block
// (FLOP factor f = 4 instead of 3), activation memory about 1/L of the block part.
#include <cstdint>
#include <vector>

#include "mics/device/backend.hpp"
#include "mics/model/config.hpp"
#include "mics/model/layout.hpp"

namespace mics::model {

class Transformer {
public:
  // compute: the type of parameters, gradients and activations (f64/f32 on CPU, bf16 or
  // f32 on CUDA); must be supported by the backend (else mics::UsageError).
  Transformer(const ModelConfig& cfg, device::Backend& backend, device::DType compute,
              std::int64_t micro_batch, bool recompute = false);
  ~Transformer();
  Transformer(const Transformer&) = delete;
  Transformer& operator=(const Transformer&) = delete;

  const ModelConfig& config() const { return cfg_; }
  const BucketLayout& layout() const { return layout_; }
  device::DType dtype() const { return dt_; }
  device::Backend& backend() const { return *be_; }
  std::int64_t micro_batch() const { return B_; }
  std::int64_t seq() const { return T_; }
  bool recompute() const { return recompute_; }
  // Bytes of activation memory this object holds.
  std::size_t activation_bytes() const { return act_bytes_; }

  // tokens, targets: HOST int32 [B, T]. tokens in [0, V); targets in [0, V) or negative
  // (ignored position). GPT: targets[t] = next token (or -1 at the end); BERT: see
  // bert_mask(). Throws mics::UsageError naming the first out-of-range id.
  void set_batch(const std::int32_t* tokens, const std::int32_t* targets);
  std::int64_t counted_tokens() const { return counted_; }

  void embed_forward(const void* emb_params);
  void block_forward(int layer, const void* block_params);
  // Mean loss over counted targets (see the scaling convention). Keeps the logits for
  // head_backward, which must come next if gradients are wanted.
  double head_forward(const void* lnf_params, const void* emb_params);
  // The logits head_forward left, [B, T, V] in the compute type on the device (until
  // head_backward turns them into their gradient). Sampling reads them.
  const void* logits() const { return logits_; }

  // Writes (overwrites) lnf_grads; writes the whole of emb_grads: wte's gradient from the
  // output head, zeros for wpe.
  void head_backward(const void* lnf_params, const void* emb_params, void* lnf_grads,
                     void* emb_grads);
  // Writes (overwrites) block_grads.
  void block_backward(int layer, const void* block_params, void* block_grads);
  // ADDS into emb_grads: the embedding lookups' contribution to wte, and wpe's gradient.
  void embed_backward(const void* emb_params, void* emb_grads);

  // Whole passes over per-bucket pointers (params[b], grads[b] for b in 0..l+1), for
  // single-process runs and tests. forward_backward overwrites every gradient bucket.
  double forward(const std::vector<const void*>& params);
  double forward_backward(const std::vector<const void*>& params,
                          const std::vector<void*>& grads);

private:
  struct Layer;
  void* act(std::size_t elements, device::DType t);
  const void* layer_input(int layer) const;
  void* saved_lse() const;  // [N] stat: the cross-entropy's row log-sum-exps
  void check_layer(int layer) const;

  ModelConfig cfg_;
  BucketLayout layout_;
  device::Backend* be_;
  device::DType dt_, st_;
  std::int64_t B_, T_, C_, V_, N_;
  std::int64_t counted_ = 0;
  bool recompute_ = false;
  std::size_t act_bytes_ = 0;
  std::vector<device::Buffer> buffers_;
  std::vector<Layer> layers_;
  device::AttentionShape att_;
  // Whole-model activations and backward scratch (device pointers into buffers_).
  std::int32_t* tokens_ = nullptr;
  std::int32_t* targets_ = nullptr;
  void* encoded_ = nullptr;   // [B,T,C] embedding output, the residual stream's start
  void* lnf_ = nullptr;       // [B,T,C]
  void* lnf_mean_ = nullptr;  // [B,T] stat type
  void* lnf_rstd_ = nullptr;
  void* logits_ = nullptr;    // [B,T,V]; becomes dlogits in head_backward
  void* losses_ = nullptr;    // [B,T] stat type
  void* dres_ = nullptr;      // [B,T,C] gradient of the residual stream
  void* dbuf_ = nullptr;      // [B,T,C] gradient of a LayerNorm output / attention output
  void* dqkv_ = nullptr;      // [B,T,3C]
  void* dfch_ = nullptr;      // [B,T,4C]
};

}  // namespace mics::model
