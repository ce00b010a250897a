// DeepSpeed 0.5.6's ZeRO-2 and ZeRO-3 schedules (the MiCS paper's baseline) replayed on a
// device clock and one communication queue; see deepspeed.hpp for the facts it uses.
#include "mics/planner/deepspeed.hpp"

#include <algorithm>
#include <cmath>
#include <set>
#include <unordered_map>
#include <vector>

#include "mics/planner/collective_cost.hpp"
#include "mics/planner/memory.hpp"

namespace mics::planner {

namespace {

constexpr double kHalf = 2.0;  // DeepSpeed 0.5.6 gathers and reduces in fp16

// One tensor: `key` names it across the sub-modules that use it (the tied head uses the
// embedding's), `numel` counts its elements.
struct Tensor {
  int key = 0;
  double numel = 0;
};

// One sub-module as the hooks see it: `id` is DeepSpeed's sub_module.id, the same for the
// forward, the recomputed forward and the backward of one module.
struct Module {
  int id = 0;
  std::vector<Tensor> params;
  double compute = 0;  // seconds
  bool grads = false;  // its gradients go to the reduction bucket after it
  bool own = true;     // false: its tensor is another's (the tied head's external parameter)
};

// The sub-modules of transformer block `b` in forward order, their compute in proportion
// to their weight matrices (attention's FLOPs ride with them). Ids and keys from 3 on.
std::vector<Module> block_modules(int b, double h, double fwd) {
  const double w = fwd / 12.0;
  const int id = 3 + 6 * b, key = 4 + 12 * b;
  return {{id, {{key, h}, {key + 1, h}}, 0.0},                              // ln_1
          {id + 1, {{key + 2, 3 * h * h}, {key + 3, 3 * h}}, 3 * w},        // qkv
          {id + 2, {{key + 4, h * h}, {key + 5, h}}, w},                    // attention output
          {id + 3, {{key + 6, h}, {key + 7, h}}, 0.0},                      // ln_2
          {id + 4, {{key + 8, 4 * h * h}, {key + 9, 4 * h}}, 4 * w},        // fc_1
          {id + 5, {{key + 10, 4 * h * h}, {key + 11, h}}, 4 * w}};         // fc_2
}

// Whether each occurrence's tensors stay gathered after it (stage3.py at v0.5.6,
// _keep_for_later, lines 512-520, and the trace's _distance_in_numel, lines 243-291): when
// the same sub-module runs again within this micro-step and the elements of every
// sub-module run in between (all their tensors, repeats counted) stay under
// stage3_max_reuse_distance. Everything is released after the backward in any case
// (_partition_all_parameters, line 2988).
std::vector<bool> kept_after(const std::vector<Module>& trace) {
  std::vector<double> before(trace.size() + 1, 0.0);  // elements of trace[0 .. i)
  for (std::size_t i = 0; i < trace.size(); ++i) {
    before[i + 1] = before[i];
    for (const Tensor& t : trace[i].params) before[i + 1] += t.numel;
  }
  std::vector<bool> kept(trace.size(), false);
  std::unordered_map<int, std::size_t> next;  // module id -> its next occurrence
  for (std::size_t i = trace.size(); i-- > 0;) {
    const auto it = next.find(trace[i].id);
    if (it != next.end()) kept[i] = before[it->second] - before[i + 1] < kDsMaxReuseDistance;
    next[trace[i].id] = i;
  }
  return kept;
}

// One pass over `numel` fp16 elements at the device's memory bandwidth: `touches` = 1 for a
// write (a fill), 2 for a read and a write (a copy, an in-place scale).
double ds_pass_seconds(const Cluster& c, double numel, double touches) {
  return c.memory_bandwidth_gbs > 0 ? touches * numel * kHalf / (c.memory_bandwidth_gbs * 1e9) : 0.0;
}

// contiguous_gradients is on by default (constants.py lines 64-65): the backward hook
// copies each gradient into the reduction bucket on the compute stream (stage3.py lines
// 1947-1953, stage2.py lines 808-815), except a tensor larger than the bucket, which is
// reduced where it lies.
double ds_bucket_copy_seconds(const Cluster& c, double numel) {
  return numel > kDsReduceBucket ? 0.0 : ds_pass_seconds(c, numel, 2);
}

double ds_gather_seconds(const Cluster& c, const GroupShape& g, double n) {
  return collective_seconds(c, Collective::all_gather, g, shard_padded(n, g.size) * kHalf);
}

// One micro-step (forward, then backward) as the hooks run it, on a device clock and one
// communication queue; each tensor NOT_AVAILABLE, INFLIGHT or AVAILABLE as in DeepSpeed.
// `after_step`: the first micro-step after an optimizer step, whose persistent tensors
// _post_step gathered; later ones find them released by the previous backward.
class Zero3Walk {
public:
  Zero3Walk(const Cluster& c, const Layout& l)
      : c_(c), shape_{l.world, std::min(l.world, l.ranks_per_node), l.ranks_per_node} {}

  void micro_step(const std::vector<Module>& trace, bool after_step) {
    trace_ = &trace;
    kept_ = kept_after(trace);
    index_occurrences();
    live_ = 0;
    for (const auto& [key, where] : occurrences_) {
      const Tensor& t = (*trace_)[where.front().first].params[where.front().second];
      if (after_step && persistent(t))
        state_[key] = State::available;
      else
        not_available(key, 0);
    }
    for (std::size_t i = 0; i < trace.size(); ++i) {
      fetch(i);
      prefetch(i);
      const double norm = norm_s(trace[i]);
      t_ += trace[i].compute + norm;
      compute_ += trace[i].compute + norm;
      if (!kept_[i]) release(i);
      if (trace[i].grads) bucket(trace[i].params);
    }
    flush();  // the end of the backward: the last bucket, then everything waited for
    sync();
  }
  double t() const { return t_; }
  double compute() const { return compute_; }
  double comm() const { return comm_; }

private:
  enum class State { not_available, in_flight, available };

  double gather_s(double n) const { return ds_gather_seconds(c_, shape_, n); }
  // fetch_sub_module's debug line (stage3.py line 456) is an f-string evaluated whether
  // printed or not: it takes param.norm() of each of the sub-module's own parameters, a
  // read of the whole gathered tensor on the compute stream, at every run.
  double norm_s(const Module& m) const {
    if (!m.own || c_.memory_bandwidth_gbs <= 0) return 0.0;
    double n = 0;
    for (const Tensor& t : m.params) n += t.numel;
    return n * kHalf / (c_.memory_bandwidth_gbs * 1e9);
  }
  // One tensor's reduction on the reduction stream: its share of the bucket's in-place
  // division by W (average_tensor, stage3.py lines 1995-1996), the copies that flatten its
  // list of slices, then the reduce-scatter.
  double reduce_s(double n) const {
    return ds_pass_seconds(c_, n, 2) + ds_flatten_seconds(c_, shape_.size, n * kHalf) +
           collective_seconds(c_, Collective::reduce_scatter, shape_, shard_padded(n, shape_.size) * kHalf);
  }
  static bool persistent(const Tensor& t) { return t.numel < kDsPersistenceThreshold; }
  using Place = std::pair<std::size_t, std::size_t>;  // (trace position, tensor within it)

  // Each tensor's runs in trace order, and for each NOT_AVAILABLE tensor its next run: the
  // order in which prefetch_next_sub_modules would find it, without rescanning the trace.
  void index_occurrences() {
    occurrences_.clear();
    state_.clear();
    wanted_.clear();
    next_.clear();
    for (std::size_t i = 0; i < trace_->size(); ++i)
      for (std::size_t k = 0; k < (*trace_)[i].params.size(); ++k)
        occurrences_[(*trace_)[i].params[k].key].push_back({i, k});
  }
  void not_available(int key, std::size_t from) {
    state_[key] = State::not_available;
    const std::vector<Place>& where = occurrences_.at(key);
    const auto it = std::lower_bound(where.begin(), where.end(), Place{from, 0});
    if (it == where.end()) return;  // not used again in this micro-step
    wanted_.insert({*it, key});
    next_[key] = *it;
  }
  void gathered(int key, State now) {
    state_[key] = now;
    const auto it = next_.find(key);
    if (it == next_.end()) return;
    wanted_.erase({it->second, key});
    next_.erase(it);
  }

  // torch.cuda.synchronize(): the device clock waits for the queue (gathers and
  // reductions).
  void device_wait() { t_ = std::max(t_, queue_); }
  // _synchronize_communication: the handles in flight are waited for, then the device;
  // every prefetched tensor is then available.
  void sync() {
    device_wait();
    for (int key : in_flight_) state_[key] = State::available;
    in_flight_.clear();
  }
  void launch(double seconds) {
    queue_ = std::max(queue_, t_) + seconds;
    comm_ += seconds;
  }
  // fetch_sub_module: the blocking gather of what is neither gathered nor in flight, then
  // a wait when anything of this sub-module was fetched or in flight. This path
  // (_allgather_params_coalesced) allocates with torch.empty: no fill, unlike a prefetch.
  void fetch(std::size_t i) {
    bool wait = false;
    for (const Tensor& t : (*trace_)[i].params) {
      const State s = state_.at(t.key);
      if (s == State::in_flight) wait = true;
      if (s != State::not_available) continue;
      launch(gather_s(t.numel));
      gathered(t.key, State::available);
      live_ += persistent(t) ? 0.0 : t.numel;
      wait = true;
    }
    if (wait) sync();
  }
  void prefetch(std::size_t i);
  void release(std::size_t i) {
    for (const Tensor& t : (*trace_)[i].params) {
      if (persistent(t) || state_.at(t.key) != State::available) continue;
      not_available(t.key, i + 1);
      live_ -= t.numel;
    }
  }
  void bucket(const std::vector<Tensor>& params) {
    for (const Tensor& t : params) {
      const double copy = ds_bucket_copy_seconds(c_, t.numel);
      t_ += copy;
      compute_ += copy;
      pending_s_ += reduce_s(t.numel);
      pending_numel_ += t.numel;
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
  const std::vector<Module>* trace_ = nullptr;
  std::vector<bool> kept_;
  std::unordered_map<int, State> state_;
  std::unordered_map<int, std::vector<Place>> occurrences_;
  std::set<std::pair<Place, int>> wanted_;  // (next run, key) of each NOT_AVAILABLE tensor
  std::unordered_map<int, Place> next_;      // key -> its entry in wanted_
  std::vector<int> in_flight_;
  double live_ = 0;  // total_available_parameter_numel: gathered or in flight
  double t_ = 0, queue_ = 0, reduced_ = 0, compute_ = 0, comm_ = 0, pending_s_ = 0, pending_numel_ = 0;
};

// prefetch_next_sub_modules (stage3.py lines 349-370): only when nothing is in flight and
// fewer than stage3_max_live_parameters elements are gathered; then the tensors not yet
// gathered, in trace order from this sub-module on, until stage3_prefetch_bucket_size
// elements. Each launch (_allgather_param, partition_parameters.py lines 870-878) first
// fills the whole gather buffer with torch.zeros on the compute stream, then calls
// torch.cuda.synchronize(), so only the last gather overlaps compute.
void Zero3Walk::prefetch(std::size_t i) {
  if (!in_flight_.empty() || live_ >= kDsMaxLiveParameters) return;
  double numel = 0;
  while (!wanted_.empty() && numel < kDsPrefetchBucket) {
    const auto [place, key] = *wanted_.begin();
    if (place.first < i) break;  // cannot happen: a run fetches what it still lacks
    const Tensor& t = (*trace_)[place.first].params[place.second];
    const double fill = ds_pass_seconds(c_, t.numel, 1);
    t_ += fill;
    compute_ += fill;
    device_wait();
    launch(gather_s(t.numel));
    gathered(key, State::in_flight);
    in_flight_.push_back(key);
    numel += t.numel;
    live_ += persistent(t) ? 0.0 : t.numel;
  }
}

// The sub-modules of one micro-step: forward, then backward (with recomputation, each
// block's forward again, then its backward on the same sub-modules).
std::vector<Module> zero3_trace(const Workload& w, const ComputeSplit& s) {
  const model::ModelConfig& m = w.model;
  const double h = static_cast<double>(m.hidden), wte = static_cast<double>(m.vocab) * h;
  const double other = bucket_sizes(m).embeddings - wte;
  const Module embed{0, {{0, wte}, {1, other}}, 0.0}, ln_f{1, {{2, h}, {3, h}}, 0.0};
  std::vector<Module> trace{embed};
  const int layers = static_cast<int>(m.layers);
  for (int b = 0; b < layers; ++b)
    for (const Module& x : block_modules(b, h, s.fwd_block)) trace.push_back(x);
  trace.push_back(ln_f);
  trace.push_back({2, {{0, wte}}, s.fwd_head, false, false});  // the tied head: the embedding's tensor
  trace.push_back({2, {{0, wte}}, s.bwd_head, false, false});
  trace.push_back({ln_f.id, ln_f.params, 0.0, true});
  const double bwd_only = w.recompute ? s.bwd_block - s.fwd_block : s.bwd_block;
  for (int b = layers; b-- > 0;) {
    const std::vector<Module> mods = block_modules(b, h, s.fwd_block);
    if (w.recompute)
      for (const Module& x : mods) trace.push_back(x);
    for (auto it = mods.rbegin(); it != mods.rend(); ++it)
      trace.push_back({it->id, it->params, it->compute * bwd_only / s.fwd_block, true});
  }
  trace.push_back({embed.id, embed.params, 0.0, true});
  return trace;
}

// _post_step (stage3.py lines 2764-2766) gathers the persistent tensors again after the
// optimizer: one blocking all-gather each, exposed.
double post_step_gather_s(const Cluster& c, const Layout& l, const std::vector<Module>& trace) {
  const GroupShape g{l.world, std::min(l.world, l.ranks_per_node), l.ranks_per_node};
  double s = 0;
  std::unordered_map<int, bool> seen;
  for (const Module& m : trace)
    for (const Tensor& t : m.params)
      if (t.numel < kDsPersistenceThreshold && seen.emplace(t.key, true).second) s += ds_gather_seconds(c, g, t.numel);
  return s;
}

BaselineTimes zero3(const Cluster& c, const Workload& w, const Layout& l, int accumulation) {
  const ComputeSplit s = compute_split(c, w, l);
  const std::vector<Module> trace = zero3_trace(w, s);
  // The first micro-step after a step, then the others: DeepSpeed reduces each one, and
  // the previous backward's _partition_all_parameters released every tensor, persistent
  // ones too (release_and_reset_parameter, stage3.py lines 503-510, has no exception for
  // them; called at line 2988), so a later micro-step gathers them again on first use.
  Zero3Walk first(c, l), later(c, l);
  first.micro_step(trace, true);
  if (accumulation > 1) later.micro_step(trace, false);
  const double rest = accumulation - 1, persist = post_step_gather_s(c, l, trace);
  BaselineTimes r;
  r.optimizer_s = optimizer_seconds(c, w.model, l.p);
  r.compute_s = first.compute() + rest * later.compute();
  r.comm_s = first.comm() + rest * later.comm() + persist;
  r.step_s = first.t() + rest * later.t() + r.optimizer_s + persist;
  r.exposed_s = r.step_s - r.compute_s - r.optimizer_s;
  return r;
}

// The gradient passes ZeRO-2 makes on the compute stream every micro-step (overlap_comm
// is off): each tensor copied into the bucket, then each bucket divided by W in place
// before its reduces (stage2.py average_tensor, line 929).
double zero2_gradient_passes_s(const Cluster& c, const std::vector<Module>& trace) {
  double s = 0;
  std::set<int> seen;
  for (const Module& m : trace)
    for (const Tensor& t : m.params)
      if (seen.insert(t.key).second) s += ds_bucket_copy_seconds(c, t.numel) + ds_pass_seconds(c, t.numel, 2);
  return s;
}

// ZeRO-2: compute, then per micro-step every bucket reduced on the compute stream (one
// ring reduce per owning rank: the whole slice crosses every link, n/(n-1) of a
// reduce-scatter's volume), then after the optimizer the exposed all-gathers.
BaselineTimes zero2(const Cluster& c, const Workload& w, const Layout& l, int accumulation) {
  const ComputeSplit s = compute_split(c, w, l);
  const double passes = zero2_gradient_passes_s(c, zero3_trace(w, s));
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
  r.compute_s = (micro_compute + passes) * accumulation;
  r.comm_s = reduce * accumulation + gather;
  r.exposed_s = r.comm_s;
  r.step_s = r.compute_s + r.comm_s + r.optimizer_s;
  return r;
}

}  // namespace

double ds_flatten_seconds(const Cluster& c, int world, double bytes) {
  const double copy = c.memory_bandwidth_gbs > 0 ? 2.0 * bytes / world / (c.memory_bandwidth_gbs * 1e9) : 0.0;
  return world * std::max(kDsCopyLaunch, copy);
}

BaselineTimes deepspeed_056_step(const Cluster& c, const Workload& w, const Layout& l, int accumulation) {
  return l.strategy == Strategy::zero3 ? zero3(c, w, l, accumulation) : zero2(c, w, l, accumulation);
}

}  // namespace mics::planner
