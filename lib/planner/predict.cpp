// The engine's step schedule replayed on a compute clock and a communication queue.
#include "mics/planner/predict.hpp"

#include <algorithm>
#include <deque>

#include "mics/core/error.hpp"
#include "mics/layout/plan.hpp"
#include "mics/model/layout.hpp"
#include "mics/planner/collective_cost.hpp"
#include "mics/planner/deepspeed.hpp"

namespace mics::planner {

namespace {

constexpr double kGiB = 1024.0 * 1024.0 * 1024.0;
constexpr int kStateBytes = 4;  // the f32 gradient accumulator hop 2 reduces

// One collective on the partition queue.
struct Op {
  double duration = 0, end = 0;
  bool started = false;
};

// Every accumulator of the replay, so that micro-steps can be extrapolated.
struct Clocks {
  double t = 0, queue = 0, compute = 0;
  double part_comm = 0, part_exposed = 0, rep_comm = 0, rep_exposed = 0;
};

class Replay {
public:
  Replay(const Cluster& c, const Workload& w, const Layout& l) : c_(c), w_(w), l_(l) {
    sizes_ = bucket_sizes(w.model);
    shape_ = PartitionShape{l.p, l.ranks_per_node, l.hierarchical};
    const int cb = compute_bytes(c);
    const auto gather = [&](double n) { return partition_gather_seconds(c, shape_, shard_padded(n, l.p) * cb); };
    const auto reduce = [&](double n) {
      return partition_reduce_seconds(c, shape_, shard_padded(n, l.p) * w.reduce_bytes);
    };
    const GroupShape rep = replication_shape(l.world, l.ranks_per_node, l.p);
    // Two-hop reduces the f32 accumulator, cast to the reduce type when that is narrower;
    // every-micro-step reduces each reduce-scatter's output, in the reduce type.
    const double sync_bytes = w.two_hop ? std::min(w.reduce_bytes, kStateBytes) : w.reduce_bytes;
    const auto sync = [&](double n) {
      return collective_seconds(c, Collective::all_reduce, rep, shard_chunk(n, l.p) * sync_bytes);
    };
    early_sync_ = w.two_hop && w.overlap_grad_sync && c.overlap && rep.size > 1;
    // Hop 2 shares the partition collectives' queue only where both cross the node's
    // network link; otherwise they run side by side on different links.
    shared_link_ = shape_.nodes() > 1 && rep.nodes() > 1;
    for (double n : {sizes_.embeddings, sizes_.block, sizes_.final_norm}) {
      gather_.push_back(persistent(l.strategy) ? 0.0 : gather(n));
      reduce_.push_back(reduce(n));
      sync_.push_back(sync(n));
      refresh_.push_back(persistent(l.strategy) ? gather(n) : 0.0);
    }
    const ComputeSplit split = compute_split(c, w, l);
    fwd_head_ = split.fwd_head;
    bwd_head_ = split.bwd_head;
    fwd_block_ = split.fwd_block;
    bwd_block_ = split.bwd_block;
    gathered_.assign(static_cast<std::size_t>(w.model.layers) + 2, nullptr);
    ops_.resize(gathered_.size());
  }

  // The micro-steps before the last: up to three replayed, the rest extrapolated; then
  // the last one replayed (its backward overlaps hop 2).
  Clocks run(int accumulation) {
    const int before_last = accumulation - 1;
    const int explicit_steps = std::min(before_last, 3);
    Clocks mark;
    for (int a = 0; a < explicit_steps; ++a) {
      mark = k_;
      micro_step();
    }
    if (before_last > explicit_steps) extrapolate(mark, before_last - explicit_steps);
    last_ = true;
    micro_step();
    while (!reducing_.empty()) finish_oldest_reduce();
    step_end();
    return k_;
  }

private:
  // Bucket kinds: 0 embeddings, 1 a block, 2 ln_f.
  int kind(int b) const { return b == 0 ? 0 : (b == last() ? 2 : 1); }
  int last() const { return static_cast<int>(w_.model.layers) + 1; }

  void start(Op& op) {
    op.started = true;
    const double begin = std::max(k_.t, k_.queue);
    op.end = begin + op.duration;
    k_.queue = op.end;
    k_.part_comm += op.duration;
  }
  Op* issue(Op& op, double duration) {
    op = Op{duration, 0, false};
    if (c_.overlap) start(op);
    return &op;
  }
  void wait(Op& op, double& exposed) {
    if (!op.started) start(op);
    if (op.end > k_.t) {
      exposed += op.end - k_.t;
      k_.t = op.end;
    }
  }
  void compute(double s) {
    k_.t += s;
    k_.compute += s;
  }

  void start_gather(int b) {
    const auto ub = static_cast<std::size_t>(b);
    if (persistent(l_.strategy) || gathered_[ub] != nullptr) return;
    gathered_[ub] = issue(ops_[ub], gather_[static_cast<std::size_t>(kind(b))]);
  }
  void params(int b) {
    start_gather(b);
    if (gathered_[static_cast<std::size_t>(b)] != nullptr)
      wait(*gathered_[static_cast<std::size_t>(b)], k_.part_exposed);
  }
  void release(int b) { gathered_[static_cast<std::size_t>(b)] = nullptr; }

  void acquire_grad() {
    while (slots_used_ >= 4) finish_oldest_reduce();
    ++slots_used_;
  }
  void start_reduce(int b) {
    reducing_.push_back({Op{}, kind(b), last_});
    issue(reducing_.back().op, reduce_[static_cast<std::size_t>(kind(b))]);
  }
  void finish_oldest_reduce() {
    auto r = reducing_.front();
    reducing_.pop_front();
    wait(r.op, k_.part_exposed);
    if (!w_.two_hop) {  // blocking all-reduce over the replicas, per bucket
      const double s = sync_[static_cast<std::size_t>(r.kind)];
      k_.t += s;
      k_.rep_comm += s;
      k_.rep_exposed += s;
    } else if (r.last && early_sync_) {
      start_sync(r.kind);
    }
    --slots_used_;
  }

  // The engine's rule (engine.cpp, finish_oldest_reduce): a bucket's hop-2 all-reduce
  // starts when the last micro-step's reduce-scatter of it is finished, i.e. when a
  // fourth gradient slot is needed (the embeddings' slot is held through the backward,
  // so a block's reduce-scatter is finished as the third block after it acquires its
  // slot), and after the backward for the last three blocks and the embeddings.
  void start_sync(int kind) {
    const double s = sync_[static_cast<std::size_t>(kind)];
    double& queue = shared_link_ ? k_.queue : rep_queue_;
    queue = std::max(k_.t, queue) + s;
    sync_end_ = std::max(sync_end_, queue);
    k_.rep_comm += s;
  }

  void micro_step() {
    const int L = static_cast<int>(w_.model.layers);
    start_gather(0);
    if (w_.prefetch) start_gather(1);
    params(0);
    for (int i = 0; i < L; ++i) {
      params(i + 1);
      if (w_.prefetch) start_gather(i + 2);
      compute(fwd_block_);
      release(i + 1);
    }
    params(last());
    compute(fwd_head_);
    acquire_grad();  // embeddings
    acquire_grad();  // ln_f
    if (w_.prefetch && L > 0) start_gather(L);
    compute(bwd_head_);
    release(last());
    start_reduce(last());
    for (int i = L - 1; i >= 0; --i) {
      params(i + 1);
      if (w_.prefetch && i > 0) start_gather(i);
      acquire_grad();
      compute(bwd_block_);
      release(i + 1);
      start_reduce(i + 1);
    }
    release(0);
    start_reduce(0);
  }

  // Micro-steps beyond the third repeat the third's increments.
  void extrapolate(const Clocks& b, int times) {
    const double n = times;
    k_.t += n * (k_.t - b.t);
    k_.queue += n * (k_.queue - b.queue);
    k_.compute += n * (k_.compute - b.compute);
    k_.part_comm += n * (k_.part_comm - b.part_comm);
    k_.part_exposed += n * (k_.part_exposed - b.part_exposed);
    k_.rep_comm += n * (k_.rep_comm - b.rep_comm);
    k_.rep_exposed += n * (k_.rep_exposed - b.rep_exposed);
    for (auto& r : reducing_)
      if (r.op.started) r.op.end += n * (k_.t - b.t) / (n + 1);
  }

  void step_end() {
    const double L = static_cast<double>(w_.model.layers);
    const auto total = [&](const std::vector<double>& v) { return v[0] + L * v[1] + v[2]; };
    if (w_.two_hop && early_sync_) {
      // Only what outlasts the last micro-step's backward is exposed.
      const double exposed = std::max(0.0, sync_end_ - k_.t);
      k_.t += exposed;
      k_.rep_exposed += exposed;
    } else if (w_.two_hop) {
      const double s = total(sync_);
      k_.t += s;
      k_.rep_comm += s;
      k_.rep_exposed += s;
    }
    optimizer_ = planner::optimizer_seconds(c_, w_.model, l_.p);
    k_.t += optimizer_;
    const double refresh = l_.p > 1 ? total(refresh_) : 0.0;
    k_.t += refresh;
    k_.part_comm += refresh;
    k_.part_exposed += refresh;
  }

  struct Reducing {
    Op op;
    int kind = 1;
    bool last = false;  // started in the last micro-step: its hop 2 follows it
  };
  const Cluster& c_;
  const Workload& w_;
  const Layout& l_;
  BucketSizes sizes_;
  PartitionShape shape_;
  std::vector<double> gather_, reduce_, sync_, refresh_;  // by bucket kind
  double fwd_head_ = 0, bwd_head_ = 0, fwd_block_ = 0, bwd_block_ = 0;
  std::vector<Op*> gathered_;
  std::vector<Op> ops_;
  std::deque<Reducing> reducing_;
  int slots_used_ = 0;
  bool last_ = false, early_sync_ = false, shared_link_ = false;
  double rep_queue_ = 0, sync_end_ = 0;  // hop 2's own queue, and when its last op ends
  Clocks k_;
  double optimizer_ = 0;

public:
  double optimizer_seconds() const { return optimizer_; }
};

void check_layout(const Layout& l) {
  layout::Plan::make({l.world, l.ranks_per_node, l.p, l.hierarchical});
  const int expected = l.strategy == Strategy::ddp ? 1
                       : (l.strategy == Strategy::mics ? l.p : l.world);
  if (l.p != expected)
    throw UsageError(std::string("--strategy ") + strategy_name(l.strategy) + " at " +
                     std::to_string(l.world) + " ranks has partition size " + std::to_string(expected) +
                     ", not " + std::to_string(l.p));
}

}  // namespace

const char* baseline_name(Baseline b) { return b == Baseline::engine ? "engine" : "deepspeed-0.5.6"; }

ComputeSplit compute_split(const Cluster& c, const Workload& w, const Layout& l) {
  const double rate = c.rank_peak_tflops(l.world) * 1e12 * c.compute_efficiency;
  const model::ModelConfig& m = w.model;
  const double sequences = static_cast<double>(w.micro_batch);
  const double head = model::head_training_flops(m, sequences) / rate;
  const double blocks = model::training_flops(m, sequences, w.recompute) / rate - head;
  const double L = static_cast<double>(m.layers);
  const double f = w.recompute ? 4.0 : 3.0;  // the recomputed forward runs inside the backward
  ComputeSplit out;
  out.fwd_head = head / 3;
  out.bwd_head = head * 2 / 3;
  out.fwd_block = blocks / L / f;
  out.bwd_block = blocks / L * (f - 1) / f;
  return out;
}

// AdamW reads master, m, v, gradient and writes master, m, v; then the gradient is
// zeroed and the compute shard refreshed: about 36 bytes per shard element.
double optimizer_seconds(const Cluster& c, const model::ModelConfig& m, int p) {
  const BucketSizes sizes = bucket_sizes(m);
  const double elements = shard_chunk(sizes.embeddings, p) +
                          static_cast<double>(sizes.layers) * shard_chunk(sizes.block, p) +
                          shard_chunk(sizes.final_norm, p);
  return elements * 36.0 / (c.memory_bandwidth_gbs * 1e9);
}

int compute_bytes(const Cluster& c) { return c.compute_dtype == "f32" ? 4 : 2; }

MemoryInputs memory_inputs(const Cluster& c, const Workload& w) {
  MemoryInputs in;
  in.compute_bytes = compute_bytes(c);
  in.reduce_bytes = w.reduce_bytes;
  in.micro_batch = w.micro_batch;
  in.recompute = w.recompute;
  in.flash_attention = true;  // both backends keep one value per (row, head), no T x T scores
  in.workspace_bytes = c.workspace_gib * kGiB;
  return in;
}

Prediction predict(const Cluster& c, const Workload& w, const Layout& l) {
  check_layout(l);
  if (w.micro_batch < 1) throw UsageError("--micro-batch must be at least 1");
  const std::int64_t per_step = static_cast<std::int64_t>(l.world) * w.micro_batch;
  if (w.global_batch < per_step || w.global_batch % per_step != 0)
    throw UsageError("global batch " + std::to_string(w.global_batch) + " is not a multiple of ranks x micro-batch (" +
                     std::to_string(l.world) + " x " + std::to_string(w.micro_batch) + ")");
  Prediction r;
  r.layout = l;
  r.workload = w;
  r.accumulation = static_cast<int>(w.global_batch / per_step);
  const bool deepspeed = w.baseline == Baseline::deepspeed_0_5_6 &&
                         (l.strategy == Strategy::zero2 || l.strategy == Strategy::zero3);
  r.baseline = deepspeed ? Baseline::deepspeed_0_5_6 : Baseline::engine;
  if (deepspeed) {
    const BaselineTimes k = deepspeed_056_step(c, w, l, r.accumulation);
    r.step_s = k.step_s;
    r.compute_s = k.compute_s;
    r.optimizer_s = k.optimizer_s;
    r.partition_comm_s = k.comm_s;
    r.partition_exposed_s = k.exposed_s;
  } else {
    Replay replay(c, w, l);
    const Clocks k = replay.run(r.accumulation);
    r.step_s = k.t;
    r.compute_s = k.compute;
    r.optimizer_s = replay.optimizer_seconds();
    r.partition_comm_s = k.part_comm;
    r.partition_exposed_s = k.part_exposed;
    r.replication_comm_s = k.rep_comm;
    r.replication_exposed_s = k.rep_exposed;
  }
  const double tokens = static_cast<double>(w.global_batch) * static_cast<double>(w.model.seq);
  r.tokens_per_s = tokens / r.step_s;
  r.tflops_per_gpu = model::training_flops(w.model, static_cast<double>(w.global_batch), false) /
                     (l.world * r.step_s) / 1e12;
  r.mfu = r.tflops_per_gpu / c.rank_peak_tflops(l.world);
  r.hw_tflops_per_gpu = model::training_flops(w.model, static_cast<double>(w.global_batch), w.recompute) /
                        (l.world * r.step_s) / 1e12;
  MemoryInputs in = memory_inputs(c, w);
  in.replicas = l.world / l.p;
  in.accumulation = r.accumulation;
  r.memory = rank_memory(w.model, l.strategy, l.p, l.nodes_per_group(), l.two_step(), in);
  r.memory_capacity = c.memory_gib * kGiB * (1.0 - c.memory_margin);
  r.fits = r.memory.total() <= r.memory_capacity;
  return r;
}

std::vector<Layout> candidate_layouts(int world, int ranks_per_node) {
  std::vector<Layout> out;
  const auto add = [&](Strategy s, int p) {
    out.push_back({s, world, ranks_per_node, p, false});
    if (p > ranks_per_node) out.push_back({s, world, ranks_per_node, p, true});
  };
  add(Strategy::ddp, 1);
  if (world > 1) {
    add(Strategy::zero2, world);
    add(Strategy::zero3, world);
  }
  for (int p : layout::valid_partition_sizes(world, ranks_per_node))
    if (p > 1 && p < world) add(Strategy::mics, p);
  return out;
}

}  // namespace mics::planner
