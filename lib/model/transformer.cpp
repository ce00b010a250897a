// Forward and backward of the pre-LayerNorm transformer, bucket by bucket, written only
// against the device::Backend interface (no BLAS, no CUDA here).
//
// Notation in shape comments: B micro-batch, T sequence, C hidden, V vocabulary,
// N = B*T rows. Linear layers: y[N,OC] = x[N,IC] W^T + b with W stored [OC, IC].
#include "mics/model/transformer.hpp"

#include <string>

#include "mics/core/error.hpp"

namespace mics::model {

using device::DType;
using device::offset;

// Activations of one block, saved from forward for backward.
struct Transformer::Layer {
  void* ln1;       // [N,C]
  void* ln1_mean;  // [N] stat
  void* ln1_rstd;  // [N] stat
  void* qkv;       // [N,3C]
  void* att;       // attention_saved_bytes
  void* atty;      // [N,C] attention output before the projection
  void* res2;      // [N,C] residual after attention
  void* ln2;       // [N,C]
  void* ln2_mean;
  void* ln2_rstd;
  void* fch;       // [N,4C] fc output before GELU
  void* fch_gelu;  // [N,4C]
  void* res3;      // [N,C] residual after the MLP: the block's output
};

namespace {

// Pointers to the tensors of one bucket, in the layout's order.
struct Views {
  std::vector<char*> p;
  Views(const BucketSpec& b, const void* base, DType dt) {
    p.reserve(b.tensors.size());
    for (const auto& t : b.tensors)
      p.push_back(static_cast<char*>(const_cast<void*>(base)) + t.offset * device::dtype_size(dt));
  }
  void* operator[](int i) const { return p[static_cast<std::size_t>(i)]; }
};

}  // namespace

Transformer::Transformer(const ModelConfig& cfg, device::Backend& backend, DType compute,
                         std::int64_t micro_batch, bool recompute)
    : cfg_(cfg), layout_(make_layout(cfg)), be_(&backend), dt_(compute),
      st_(device::accum_dtype(compute)), B_(micro_batch), T_(cfg.seq), C_(cfg.hidden),
      V_(cfg.vocab), N_(micro_batch * cfg.seq), recompute_(recompute) {
  if (micro_batch < 1)
    throw UsageError("micro-batch = " + std::to_string(micro_batch) + "; it must be at least 1");
  if (!backend.supports(compute))
    throw UsageError("compute type " + std::string(device::dtype_name(compute)) +
                     " is not supported by the " + backend.name() + " backend");
  att_ = device::AttentionShape{B_, T_, cfg.heads, cfg.head_size(), cfg.causal()};
  const auto n = static_cast<std::size_t>(N_), c = static_cast<std::size_t>(C_);
  tokens_ = static_cast<std::int32_t*>(act(n, DType::f32));   // int32 has f32's size
  targets_ = static_cast<std::int32_t*>(act(n, DType::f32));
  encoded_ = act(n * c, dt_);
  layers_.resize(static_cast<std::size_t>(cfg.layers));
  const std::size_t att_bytes = be_->attention_saved_bytes(dt_, att_);
  bool first = true;
  for (auto& L : layers_) {
    if (recompute_ && !first) {
      // Every layer shares the first one's intermediates and keeps its own output.
      L = layers_.front();
      L.res3 = act(n * c, dt_);
      continue;
    }
    first = false;
    L.ln1 = act(n * c, dt_);
    L.ln1_mean = act(n, st_);
    L.ln1_rstd = act(n, st_);
    L.qkv = act(3 * n * c, dt_);
    buffers_.emplace_back(*be_, att_bytes);
    act_bytes_ += att_bytes;
    L.att = buffers_.back().get();
    L.atty = act(n * c, dt_);
    L.res2 = act(n * c, dt_);
    L.ln2 = act(n * c, dt_);
    L.ln2_mean = act(n, st_);
    L.ln2_rstd = act(n, st_);
    L.fch = act(4 * n * c, dt_);
    L.fch_gelu = act(4 * n * c, dt_);
    L.res3 = act(n * c, dt_);
  }
  lnf_ = act(n * c, dt_);
  lnf_mean_ = act(n, st_);
  lnf_rstd_ = act(n, st_);
  logits_ = act(n * static_cast<std::size_t>(V_), dt_);
  losses_ = act(n, st_);
  dres_ = act(n * c, dt_);
  dbuf_ = act(n * c, dt_);
  dqkv_ = act(3 * n * c, dt_);
  dfch_ = act(4 * n * c, dt_);
}

Transformer::~Transformer() = default;

void* Transformer::act(std::size_t elements, DType t) {
  const std::size_t bytes = elements * device::dtype_size(t);
  buffers_.emplace_back(*be_, bytes);
  act_bytes_ += bytes;
  return buffers_.back().get();
}

void Transformer::check_layer(int layer) const {
  if (layer < 0 || layer >= static_cast<int>(cfg_.layers))
    throw Error("model: layer " + std::to_string(layer) + " out of range [0, " +
                std::to_string(cfg_.layers) + ")");
}

const void* Transformer::layer_input(int layer) const {
  return layer == 0 ? encoded_ : layers_[static_cast<std::size_t>(layer - 1)].res3;
}

void Transformer::set_batch(const std::int32_t* tokens, const std::int32_t* targets) {
  std::int64_t counted = 0;
  for (std::int64_t i = 0; i < N_; ++i) {
    if (tokens[i] < 0 || tokens[i] >= V_)
      throw UsageError("token id " + std::to_string(tokens[i]) + " at position " +
                       std::to_string(i) + " is outside the vocabulary [0, " +
                       std::to_string(V_) + ")");
    if (targets[i] >= V_)
      throw UsageError("target id " + std::to_string(targets[i]) + " at position " +
                       std::to_string(i) + " is outside the vocabulary [0, " +
                       std::to_string(V_) + ")");
    if (targets[i] >= 0) ++counted;
  }
  const std::size_t bytes = static_cast<std::size_t>(N_) * sizeof(std::int32_t);
  be_->copy_to_device(tokens_, tokens, bytes);
  be_->copy_to_device(targets_, targets, bytes);
  counted_ = counted;
}

// ---------------------------------------------------------------------------------------
// Forward

void Transformer::embed_forward(const void* emb_params) {
  const Views w(layout_.buckets[kEmbeddingBucket], emb_params, dt_);
  // encoded[N,C] = wte[tokens] + wpe[t]
  be_->embedding_forward(dt_, encoded_, tokens_, w[kWte], w[kWpe], B_, T_, C_);
}

void Transformer::block_forward(int layer, const void* block_params) {
  check_layer(layer);
  const Views w(layout_.buckets[static_cast<std::size_t>(block_bucket(layer))], block_params, dt_);
  const Layer& L = layers_[static_cast<std::size_t>(layer)];
  const void* in = layer_input(layer);
  const std::int64_t C = C_, N = N_;

  // ln1[N,C] = LN(in)
  be_->layernorm_forward(dt_, L.ln1, L.ln1_mean, L.ln1_rstd, in, w[kLn1W], w[kLn1B], N, C, cfg_.ln_eps);
  // qkv[N,3C] = ln1 Wqkv^T + bqkv
  be_->linear_forward(dt_, L.qkv, L.ln1, w[kQkvW], w[kQkvB], nullptr, N, 3 * C, C);
  // atty[N,C] = attention(qkv)
  be_->attention_forward(dt_, att_, L.atty, L.att, L.qkv);
  // res2[N,C] = in + atty Wproj^T + bproj
  be_->linear_forward(dt_, L.res2, L.atty, w[kAttnProjW], w[kAttnProjB], in, N, C, C);
  // ln2[N,C] = LN(res2)
  be_->layernorm_forward(dt_, L.ln2, L.ln2_mean, L.ln2_rstd, L.res2, w[kLn2W], w[kLn2B], N, C, cfg_.ln_eps);
  // fch[N,4C] = ln2 Wfc^T + bfc ; fch_gelu = GELU(fch)
  be_->linear_forward(dt_, L.fch, L.ln2, w[kFcW], w[kFcB], nullptr, N, 4 * C, C);
  be_->gelu_forward(dt_, L.fch_gelu, L.fch, N * 4 * C);
  // res3[N,C] = res2 + fch_gelu Wfcproj^T + bfcproj
  be_->linear_forward(dt_, L.res3, L.fch_gelu, w[kFcProjW], w[kFcProjB], L.res2, N, C, 4 * C);
}

// The row log-sum-exps that head_forward saves for head_backward live in dbuf_: it holds
// nothing between the forward pass and head_backward's dlnf GEMM (which runs after the
// cross-entropy backward), so the activation memory does not grow for them.
void* Transformer::saved_lse() const { return dbuf_; }

double Transformer::head_forward(const void* lnf_params, const void* emb_params) {
  const Views f(layout_.buckets[static_cast<std::size_t>(final_norm_bucket(cfg_))], lnf_params, dt_);
  const Views e(layout_.buckets[kEmbeddingBucket], emb_params, dt_);
  const void* last = layer_input(static_cast<int>(cfg_.layers));
  // lnf[N,C] = LN(res3 of the last block)
  be_->layernorm_forward(dt_, lnf_, lnf_mean_, lnf_rstd_, last, f[kLnfW], f[kLnfB], N_, C_, cfg_.ln_eps);
  // logits[N,V] = lnf wte^T  (tied head)
  be_->gemm(dt_, false, true, N_, V_, C_, 1.0, lnf_, C_, e[kWte], C_, 0.0, logits_, V_);
  // losses[N]; the mean over counted targets goes back to the host
  be_->cross_entropy_forward_lse(dt_, losses_, saved_lse(), logits_, targets_, N_, V_, V_);
  if (counted_ == 0) return 0.0;
  return be_->sum(st_, losses_, N_) / static_cast<double>(counted_);
}

// ---------------------------------------------------------------------------------------
// Backward

void Transformer::head_backward(const void* lnf_params, const void* emb_params, void* lnf_grads,
                                void* emb_grads) {
  const BucketSpec& fb = layout_.buckets[static_cast<std::size_t>(final_norm_bucket(cfg_))];
  const BucketSpec& eb = layout_.buckets[kEmbeddingBucket];
  const Views f(fb, lnf_params, dt_), e(eb, emb_params, dt_);
  const Views fg(fb, lnf_grads, dt_), eg(eb, emb_grads, dt_);
  be_->fill(dt_, lnf_grads, static_cast<std::int64_t>(fb.count), 0.0);
  const double scale = counted_ > 0 ? 1.0 / static_cast<double>(counted_) : 0.0;
  // dlogits[N,V] (in place over logits) = (softmax - onehot) / counted
  be_->cross_entropy_backward_lse(dt_, logits_, logits_, saved_lse(), targets_, N_, V_, V_, scale);
  // dwte[V,C] = dlogits^T lnf (written); dwpe = 0 until embed_backward adds into it
  be_->gemm(dt_, true, false, V_, C_, N_, 1.0, logits_, V_, lnf_, C_, 0.0, eg[kWte], C_);
  be_->fill(dt_, eg[kWpe], static_cast<std::int64_t>(eb.tensors[kWpe].count), 0.0);
  // dlnf[N,C] = dlogits wte
  be_->gemm(dt_, false, false, N_, C_, V_, 1.0, logits_, V_, e[kWte], C_, 0.0, dbuf_, C_);
  // dres[N,C] = gradient into the last block's output
  be_->fill(dt_, dres_, N_ * C_, 0.0);
  be_->layernorm_backward(dt_, dres_, fg[kLnfW], fg[kLnfB], dbuf_, layer_input(static_cast<int>(cfg_.layers)),
                          f[kLnfW], lnf_mean_, lnf_rstd_, N_, C_);
}

void Transformer::block_backward(int layer, const void* block_params, void* block_grads) {
  check_layer(layer);
  const BucketSpec& bs = layout_.buckets[static_cast<std::size_t>(block_bucket(layer))];
  const Views w(bs, block_params, dt_), g(bs, block_grads, dt_);
  const Layer& L = layers_[static_cast<std::size_t>(layer)];
  const std::int64_t C = C_, N = N_;
  if (recompute_) block_forward(layer, block_params);  // rebuilds the shared intermediates
  // The four weight gradients are written by their GEMMs (beta = 0: each has one
  // contribution); the biases' and LayerNorms' kernels add into theirs, so only those
  // small tensors are zeroed, not the whole bucket.
  for (int t : {kLn1W, kLn1B, kQkvB, kAttnProjB, kLn2W, kLn2B, kFcB, kFcProjB})
    be_->fill(dt_, g[t], static_cast<std::int64_t>(bs.tensors[static_cast<std::size_t>(t)].count), 0.0);
  // dres holds d loss / d res3. The residual branch passes it to res2 unchanged; the MLP
  // branch adds its part through ln2's backward.

  // MLP projection: dWfcproj[C,4C] = dres^T fch_gelu ; dbfcproj = sum dres ;
  // dfch[N,4C] = dres Wfcproj
  be_->gemm(dt_, true, false, C, 4 * C, N, 1.0, dres_, C, L.fch_gelu, 4 * C, 0.0, g[kFcProjW], 4 * C);
  be_->bias_backward(dt_, g[kFcProjB], dres_, N, C);
  be_->gemm(dt_, false, false, N, 4 * C, C, 1.0, dres_, C, w[kFcProjW], 4 * C, 0.0, dfch_, 4 * C);
  // through GELU, in place, with dbfc = column sums of the result
  be_->gelu_backward_bias(dt_, dfch_, g[kFcB], L.fch, dfch_, N, 4 * C);
  // MLP fc: dWfc[4C,C] = dfch^T ln2 ; dln2[N,C] = dfch Wfc
  be_->gemm(dt_, true, false, 4 * C, C, N, 1.0, dfch_, 4 * C, L.ln2, C, 0.0, g[kFcW], C);
  be_->gemm(dt_, false, false, N, C, 4 * C, 1.0, dfch_, 4 * C, w[kFcW], C, 0.0, dbuf_, C);
  // ln2: dres += LN2 backward  (dres now = d loss / d res2)
  be_->layernorm_backward(dt_, dres_, g[kLn2W], g[kLn2B], dbuf_, L.res2, w[kLn2W], L.ln2_mean, L.ln2_rstd, N, C);

  // Attention projection: dWproj[C,C] = dres^T atty ; dbproj ; datty[N,C] = dres Wproj
  be_->gemm(dt_, true, false, C, C, N, 1.0, dres_, C, L.atty, C, 0.0, g[kAttnProjW], C);
  be_->bias_backward(dt_, g[kAttnProjB], dres_, N, C);
  be_->gemm(dt_, false, false, N, C, C, 1.0, dres_, C, w[kAttnProjW], C, 0.0, dbuf_, C);
  // dqkv[N,3C] = attention backward
  be_->attention_backward(dt_, att_, dqkv_, dbuf_, L.qkv, L.atty, L.att);
  // qkv: dWqkv[3C,C] = dqkv^T ln1 ; dbqkv ; dln1[N,C] = dqkv Wqkv
  be_->gemm(dt_, true, false, 3 * C, C, N, 1.0, dqkv_, 3 * C, L.ln1, C, 0.0, g[kQkvW], C);
  be_->bias_backward(dt_, g[kQkvB], dqkv_, N, 3 * C);
  be_->gemm(dt_, false, false, N, C, 3 * C, 1.0, dqkv_, 3 * C, w[kQkvW], C, 0.0, dbuf_, C);
  // ln1: dres += LN1 backward  (dres now = d loss / d block input)
  be_->layernorm_backward(dt_, dres_, g[kLn1W], g[kLn1B], dbuf_, layer_input(layer), w[kLn1W],
                          L.ln1_mean, L.ln1_rstd, N, C);
}

void Transformer::embed_backward(const void* emb_params, void* emb_grads) {
  (void)emb_params;  // the lookup's gradient does not depend on the weights
  const Views g(layout_.buckets[kEmbeddingBucket], emb_grads, dt_);
  be_->embedding_backward(dt_, g[kWte], g[kWpe], dres_, tokens_, B_, T_, C_);
}

// ---------------------------------------------------------------------------------------
// Whole passes

double Transformer::forward(const std::vector<const void*>& params) {
  const int nb = bucket_count(cfg_);
  if (static_cast<int>(params.size()) != nb)
    throw Error("model: forward needs " + std::to_string(nb) + " parameter buckets, got " +
                std::to_string(params.size()));
  embed_forward(params[kEmbeddingBucket]);
  for (int l = 0; l < static_cast<int>(cfg_.layers); ++l)
    block_forward(l, params[static_cast<std::size_t>(block_bucket(l))]);
  return head_forward(params[static_cast<std::size_t>(final_norm_bucket(cfg_))],
                      params[kEmbeddingBucket]);
}

double Transformer::forward_backward(const std::vector<const void*>& params,
                                     const std::vector<void*>& grads) {
  const int nb = bucket_count(cfg_);
  if (static_cast<int>(grads.size()) != nb)
    throw Error("model: backward needs " + std::to_string(nb) + " gradient buckets, got " +
                std::to_string(grads.size()));
  const double loss = forward(params);
  const auto lnf = static_cast<std::size_t>(final_norm_bucket(cfg_));
  head_backward(params[lnf], params[kEmbeddingBucket], grads[lnf], grads[kEmbeddingBucket]);
  for (int l = static_cast<int>(cfg_.layers) - 1; l >= 0; --l) {
    const auto b = static_cast<std::size_t>(block_bucket(l));
    block_backward(l, params[b], grads[b]);
  }
  embed_backward(params[kEmbeddingBucket], grads[kEmbeddingBucket]);
  return loss;
}

}  // namespace mics::model
