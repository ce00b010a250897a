// DeepSpeed 0.5.6's ZeRO-2 and ZeRO-3 schedules (the MiCS paper's baseline) replayed on a
// device clock and one communication queue; see deepspeed.hpp for the facts it uses.
#include "mics/planner/deepspeed.hpp"

#include <algorithm>
#include <cmath>
#include <vector>

#include "mics/planner/collective_cost.hpp"
#include "mics/planner/memory.hpp"

namespace mics::planner {

namespace {

constexpr double kHalf = 2.0;  // DeepSpeed 0.5.6 gathers and reduces in fp16

// One sub-module as the hooks see it.
struct Module {
  std::vector<double> params;  // element counts of its tensors
  double compute = 0;          // seconds
  bool gather = true;          // fetched in this pass (false: still gathered)
  bool grads = false;          // its gradients go to the reduction bucket after it
};

// The sub-modules of one transformer block in forward order, their compute in proportion
// to their weight matrices (attention's FLOPs ride with them).
std::vector<Module> block_modules(double h, double fwd) {
  const double w = fwd / 12.0;
  return {{{h, h}, 0.0},               // ln_1
          {{3 * h * h, 3 * h}, 3 * w},  // qkv
          {{h * h, h}, w},              // attention output
          {{h, h}, 0.0},                // ln_2
          {{4 * h * h, 4 * h}, 4 * w},  // fc_1
          {{4 * h * h, h}, 4 * w}};     // fc_2
}

class Zero3Walk {
public:
  Zero3Walk(const Cluster& c, const Layout& l) : c_(c), shape_{l.world, std::min(l.world, l.ranks_per_node), l.ranks_per_node} {}

  // One pass (forward or backward) over the sub-modules, as the hooks run it.
  void pass(const std::vector<Module>& seq) {
    index(seq);
    for (std::size_t i = 0; i < seq.size(); ++i) {
      if (first_[i] < last_[i]) fetch(i);
      prefetch();
      t_ += seq[i].compute;
      compute_ += seq[i].compute;
      if (seq[i].grads) bucket(seq[i].params);
    }
  }
  // The end of a micro-step's backward: the last bucket, then everything waited for.
  void finish() {
    flush();
    sync();
  }
  double t() const { return t_; }
  double compute() const { return compute_; }
  double comm() const { return comm_; }

private:
  double gather_s(double n) const {
    return collective_seconds(c_, Collective::all_gather, shape_, shard_padded(n, shape_.size) * kHalf);
  }
  // One tensor's reduce-scatter, after the W copies that flatten its list of slices.
  double reduce_s(double n) const {
    return shape_.size * kDsCopyLaunch +
           collective_seconds(c_, Collective::reduce_scatter, shape_, shard_padded(n, shape_.size) * kHalf);
  }
  // The tensors this pass gathers, in trace order (persistent ones never are).
  void index(const std::vector<Module>& seq) {
    items_.clear();
    first_.assign(seq.size(), 0);
    last_.assign(seq.size(), 0);
    for (std::size_t i = 0; i < seq.size(); ++i) {
      first_[i] = items_.size();
      if (seq[i].gather)
        for (double n : seq[i].params)
          if (n >= kDsPersistenceThreshold) items_.push_back(n);
      last_[i] = items_.size();
    }
    next_ = 0;
    in_flight_ = false;
  }
  // torch.cuda.synchronize(): the device clock waits for the queue (gathers and reductions).
  void sync() {
    t_ = std::max(t_, queue_);
    in_flight_ = false;
  }
  void launch(double seconds) {
    queue_ = std::max(queue_, t_) + seconds;
    comm_ += seconds;
  }
  void fetch(std::size_t i) {
    for (; next_ < last_[i]; ++next_) launch(gather_s(items_[next_]));  // not prefetched: blocking
    sync();
  }
  void prefetch() {
    if (in_flight_) return;
    double numel = 0;
    while (next_ < items_.size() && numel < kDsPrefetchBucket) {
      sync();  // each launch first synchronizes the device
      numel += items_[next_];
      launch(gather_s(items_[next_++]));
      in_flight_ = true;
    }
  }
  void bucket(const std::vector<double>& params) {
    for (double n : params) {
      pending_s_ += reduce_s(n);
      pending_numel_ += n;
    }
    if (pending_numel_ >= kDsReduceBucket) flush();
  }
  // reduce_ipg_grads first calls reduction_stream.synchronize(): the host waits for the
  // previous bucket's reductions, so no compute is launched until they are done.
  void flush() {
    if (pending_s_ > 0) {
      t_ = std::max(t_, reduced_);
      launch(pending_s_);
      reduced_ = queue_;
    }
    pending_s_ = pending_numel_ = 0;
  }

  const Cluster& c_;
  GroupShape shape_;
  std::vector<double> items_;
  std::vector<std::size_t> first_, last_;
  std::size_t next_ = 0;
  bool in_flight_ = false;
  double t_ = 0, queue_ = 0, reduced_ = 0, compute_ = 0, comm_ = 0, pending_s_ = 0, pending_numel_ = 0;
};

// The sub-modules of one micro-step: forward, then backward (with recomputation, each
// block's forward again, gathering, then its backward on the same tensors).
std::pair<std::vector<Module>, std::vector<Module>> zero3_passes(const Workload& w, const ComputeSplit& s) {
  const model::ModelConfig& m = w.model;
  const double h = static_cast<double>(m.hidden), wte = static_cast<double>(m.vocab) * h;
  const double other = bucket_sizes(m).embeddings - wte;
  std::vector<Module> fwd{{{wte, other}, 0.0}}, bwd;
  for (std::int64_t b = 0; b < m.layers; ++b)
    for (const Module& x : block_modules(h, s.fwd_block)) fwd.push_back(x);
  fwd.push_back({{h, h}, 0.0});       // ln_f
  fwd.push_back({{wte}, s.fwd_head});  // the tied head fetches the embedding again
  bwd.push_back({{wte}, s.bwd_head, false, false});
  bwd.push_back({{h, h}, 0.0, false, true});
  const double bwd_only = w.recompute ? s.bwd_block - s.fwd_block : s.bwd_block;
  for (std::int64_t b = 0; b < m.layers; ++b) {
    const std::vector<Module> mods = block_modules(h, s.fwd_block);
    if (w.recompute)
      for (const Module& x : mods) bwd.push_back(x);
    for (auto it = mods.rbegin(); it != mods.rend(); ++it)
      bwd.push_back({it->params, it->compute * bwd_only / s.fwd_block, !w.recompute, true});
  }
  bwd.push_back({{wte, other}, 0.0, true, true});
  return {fwd, bwd};
}

BaselineTimes zero3(const Cluster& c, const Workload& w, const Layout& l, int accumulation) {
  const ComputeSplit s = compute_split(c, w, l);
  const auto [fwd, bwd] = zero3_passes(w, s);
  Zero3Walk walk(c, l);
  walk.pass(fwd);
  walk.pass(bwd);
  walk.finish();
  // Every micro-step repeats the same walk (DeepSpeed reduces each one).
  BaselineTimes r;
  r.optimizer_s = optimizer_seconds(c, w.model, l.p);
  r.compute_s = walk.compute() * accumulation;
  r.comm_s = walk.comm() * accumulation;
  r.step_s = walk.t() * accumulation + r.optimizer_s;
  r.exposed_s = r.step_s - r.compute_s - r.optimizer_s;
  return r;
}

// ZeRO-2: compute, then per micro-step every bucket reduced on the compute stream (one
// ring reduce per owning rank: the whole slice crosses every link, n/(n-1) of a
// reduce-scatter's volume), then after the optimizer the exposed all-gathers.
BaselineTimes zero2(const Cluster& c, const Workload& w, const Layout& l, int accumulation) {
  const ComputeSplit s = compute_split(c, w, l);
  const GroupShape shape{l.world, std::min(l.world, l.ranks_per_node), l.ranks_per_node};
  const double n = l.world, params = bucket_sizes(w.model).parameters();
  const double L = static_cast<double>(w.model.layers);
  const double micro_compute = L * (s.fwd_block + s.bwd_block) + s.fwd_head + s.bwd_head;
  const double buckets = std::ceil(params / kDsReduceBucket);
  const double reduces = buckets + n - 1;  // each partition boundary splits a bucket once more
  const double reduce = n < 2 ? 0.0
                                : reduces * collective_seconds(c, Collective::reduce_scatter, shape,
                                                               params / reduces * kHalf * n / (n - 1));
  const double shards = std::ceil(params / kDsAllgatherBucket);
  const double gather = shards * collective_seconds(c, Collective::all_gather, shape, params / shards * kHalf);
  BaselineTimes r;
  r.optimizer_s = optimizer_seconds(c, w.model, l.p);
  r.compute_s = micro_compute * accumulation;
  r.comm_s = reduce * accumulation + gather;
  r.exposed_s = r.comm_s;
  r.step_s = r.compute_s + r.comm_s + r.optimizer_s;
  return r;
}

}  // namespace

BaselineTimes deepspeed_056_step(const Cluster& c, const Workload& w, const Layout& l, int accumulation) {
  return l.strategy == Strategy::zero3 ? zero3(c, w, l, accumulation) : zero2(c, w, l, accumulation);
}

}  // namespace mics::planner
