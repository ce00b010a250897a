#include "mics/engine/engine.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <deque>
#include <sstream>
#include <utility>

#include "mics/core/check.hpp"
#include "mics/core/error.hpp"
#include "mics/core/watchdog.hpp"
#include "mics/layout/plan.hpp"
#include "mics/model/layout.hpp"
#include "mics/model/masking.hpp"
#include "mics/planner/memory.hpp"

namespace mics::engine {

using device::DType;
using Clock = std::chrono::steady_clock;

namespace {

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// One contiguous range of a shard whose elements share a weight-decay setting.
struct Segment {
  std::int64_t begin = 0, count = 0;
  bool decay = true;
};

std::vector<Segment> shard_segments(const model::BucketSpec& bucket, const model::Sharding& sh,
                                    int q) {
  std::vector<Segment> out;
  const std::size_t lo = sh.begin(q), hi = lo + sh.valid(q);
  for (const auto& t : bucket.tensors) {
    const std::size_t a = std::max(lo, t.offset), b = std::min(hi, t.offset + t.count);
    if (a >= b) continue;
    const auto begin = static_cast<std::int64_t>(a - lo), count = static_cast<std::int64_t>(b - a);
    if (!out.empty() && out.back().decay == t.weight_decay &&
        out.back().begin + out.back().count == begin)
      out.back().count += count;
    else
      out.push_back({begin, count, t.weight_decay});
  }
  return out;
}

}  // namespace

int partition_size_for(Strategy s, int partition_size, int world_size) {
  switch (s) {
    case Strategy::ddp: return 1;
    case Strategy::zero2:
    case Strategy::zero3: return world_size;
    case Strategy::mics: break;
  }
  MICS_ASSERT(partition_size > 0, "mics needs a resolved partition size");
  return partition_size;
}

bool persistent_parameters(Strategy s) { return s == Strategy::ddp || s == Strategy::zero2; }

int auto_partition_size(const model::ModelConfig& model, int world_size, int ranks_per_node,
                        DType compute, std::size_t memory_bytes) {
  // mics-plan's memory function (mics/planner/memory.hpp): model states plus the engine's
  // parameter and gradient slots, as the engine allocates them (fp32 states, f32
  // gradient reduction; activations are not known here and not counted).
  planner::MemoryInputs in;
  in.compute_bytes = static_cast<int>(device::dtype_size(compute));
  in.state_bytes = compute == DType::f64 ? 8 : 4;
  const auto need = [&](int p) {
    in.replicas = world_size / p;
    return planner::rank_memory(model, planner::Strategy::mics, p, 1, false, in).total();
  };
  const std::vector<int> sizes = layout::valid_partition_sizes(world_size, ranks_per_node);
  // No valid size means the layout itself is wrong: let the planner say how, in its words.
  if (sizes.empty()) layout::Plan::make({world_size, ranks_per_node, 1, false});
  for (int p : sizes)
    if (need(p) <= static_cast<double>(memory_bytes)) return p;
  std::ostringstream os;
  os.precision(3);
  os << "--partition-size auto: the model's states need " << need(world_size) / (1024.0 * 1024 * 1024)
     << " GiB per rank even when sharded over all " << world_size << " ranks, more than the "
     << static_cast<double>(memory_bytes) / (1024.0 * 1024 * 1024)
     << " GiB available; use more ranks, a smaller model, or a larger --memory-per-rank";
  throw UsageError(os.str());
}

// ---------------------------------------------------------------------------------------
struct Engine::Impl {
  // A gathered (or persistent) compute copy of one bucket.
  struct ParamSlot {
    device::Buffer buf;     // padded bucket, compute type
    int bucket = -1;        // -1: free
    comm::Request gather;   // in flight until waited
  };
  // A bucket's gradient on its way through the reduce-scatter.
  struct GradSlot {
    device::Buffer grads;   // padded bucket, compute type (the model writes here)
    device::Buffer send;    // padded bucket, reduce type (when it differs from compute)
    device::Buffer recv;    // chunk, reduce type
    int bucket = -1;
    double weight = 0;
    bool last = false;      // of the step's last micro-step: the accumulator is then final
    bool alone = false;     // no reduce ran (see start_reduce): accumulate from grads
    comm::Request reduce;
  };

  model::ModelConfig mc;
  TrainConfig cfg;
  device::Backend& be;
  comm::Collectives& coll;
  comm::ProcessGroups& groups;
  DType dt, rdt, mdt;  // compute, gradient reduction, model states
  model::BucketLayout layout;
  int p = 1, q = 0, world = 1, rank = 0;
  bool persistent = false;
  // With partition groups of one rank and compute type == state type, a bucket's whole
  // parameters are the master shard itself: the forward and backward passes read it in
  // place instead of a gathered or persistent copy (a pass over the model each saved).
  bool master_view = false;
  // With a world of one rank too, the reduce-scatter of a gradient bucket would only copy
  // it, and the accumulate would add it to zeros with weight 1: the model then writes
  // the micro-step's gradient straight into the accumulator (direct micro-steps).
  bool direct_grads = false;
  bool hierarchical = false;
  std::vector<model::Sharding> shard;
  std::vector<std::vector<Segment>> segments;

  // Model states of shard q, fp32.
  std::vector<device::Buffer> master, adam_m, adam_v, grad_acc;
  std::vector<device::Buffer> compute_shard;   // only when dt != mdt
  std::vector<device::Buffer> persistent_copy; // ddp / zero2
  std::vector<ParamSlot> param_slots;
  std::vector<ParamSlot*> gathered;            // by bucket: the slot holding it, or null
  std::vector<GradSlot> grad_slots;
  std::deque<GradSlot*> reducing;              // in flight, oldest first
  // Hop 2 started during the last micro-step's backward, one bucket at a time as its
  // reduce-scatter is finished (finish_oldest_reduce).
  bool hop2 = false;        // two-hop sync over a replication group of more than one rank
  bool sync_early = false;
  std::size_t largest = 0, largest_chunk = 0;  // elements: padded bucket, shard chunk
  std::size_t working_bytes = 0;               // slots and hop-2 buffers, as allocated
  std::vector<std::pair<int, comm::Request>> syncing;  // (bucket, its all-reduce)
  std::vector<device::Buffer> sync_buf;        // per bucket, when hop 2 is narrowed
  // Host staging of one step's micro-batches (tokens, targets, predicted-token counts).
  std::vector<std::int32_t> batch_tokens, batch_targets, mask_scratch;
  std::vector<std::int64_t> batch_counts;
  CommTime exposed;

  Impl(const model::ModelConfig& m, const TrainConfig& c, device::Backend& b,
       comm::Collectives& co, comm::ProcessGroups& g, DType compute, DType reduce, DType states)
      : mc(m), cfg(c), be(b), coll(co), groups(g), dt(compute), rdt(reduce), mdt(states) {}

  std::size_t padded(int b) const { return shard[static_cast<std::size_t>(b)].padded(); }
  std::size_t chunk(int b) const { return shard[static_cast<std::size_t>(b)].chunk; }
  int buckets() const { return static_cast<int>(layout.buckets.size()); }

  const void* shard_source(int b) const {
    return dt == mdt ? master[static_cast<std::size_t>(b)].get()
                            : compute_shard[static_cast<std::size_t>(b)].get();
  }

  // --- parameters ------------------------------------------------------------------------
  // Start gathering bucket b into a free slot (no-op when persistent or already there).
  void start_gather(int b) {
    if (persistent || master_view || gathered[static_cast<std::size_t>(b)] != nullptr) return;
    ParamSlot* slot = nullptr;
    for (auto& s : param_slots)
      if (s.bucket < 0) { slot = &s; break; }
    MICS_ASSERT(slot != nullptr, "no free parameter slot: the schedule holds too many buckets");
    slot->bucket = b;
    gathered[static_cast<std::size_t>(b)] = slot;
    void* own = device::offset(slot->buf.get(), dt, static_cast<std::int64_t>(shard[static_cast<std::size_t>(b)].begin(q)));
    be.copy(own, shard_source(b), chunk(b) * device::dtype_size(dt));
    slot->gather = coll.gather_partition(slot->buf.get(), chunk(b), dt, groups, hierarchical);
  }

  const void* params(int b) {
    if (master_view) return master[static_cast<std::size_t>(b)].get();
    if (persistent) return persistent_copy[static_cast<std::size_t>(b)].get();
    if (gathered[static_cast<std::size_t>(b)] == nullptr) start_gather(b);
    ParamSlot* slot = gathered[static_cast<std::size_t>(b)];
    if (!slot->gather.done()) {
      const auto t0 = Clock::now();
      slot->gather.wait();
      exposed.gather += seconds_since(t0);
    }
    return slot->buf.get();
  }

  void release(int b) {
    if (persistent || master_view) return;
    ParamSlot* slot = gathered[static_cast<std::size_t>(b)];
    if (slot == nullptr) return;
    slot->gather.wait();
    slot->bucket = -1;
    gathered[static_cast<std::size_t>(b)] = nullptr;
  }

  // --- gradients -----------------------------------------------------------------------
  GradSlot& acquire_grad(int b) {
    // A lone rank with one micro-step writes its gradients in place and holds no slots;
    // a micro-step that cannot (no predicted tokens: weight 0) takes them here.
    if (grad_slots.empty()) make_grad_slots();
    for (;;) {
      for (auto& s : grad_slots)
        if (s.bucket < 0) {
          s.bucket = b;
          // Padding past the bucket's parameters is never written by the model; keep it 0
          // so the reduce-scatter carries zeros there.
          const auto n = static_cast<std::int64_t>(layout.buckets[static_cast<std::size_t>(b)].count);
          const auto pad = static_cast<std::int64_t>(padded(b)) - n;
          if (pad > 0) be.fill(dt, device::offset(s.grads.get(), dt, n), pad, 0.0);
          return s;
        }
      MICS_ASSERT(!reducing.empty(), "no gradient slot free and none in flight");
      finish_oldest_reduce();
    }
  }

  // The embeddings' gradient lives through the whole backward pass; the others overlap
  // their reduce-scatter with the next block's backward.
  void make_grad_slots() {
    const std::size_t cb = device::dtype_size(dt), rb = device::dtype_size(rdt);
    grad_slots.resize(4);
    for (auto& s : grad_slots) {
      s.grads = device::Buffer(be, largest * cb);
      if (rdt != dt) s.send = device::Buffer(be, largest * rb);
      s.recv = device::Buffer(be, largest_chunk * rb);
      working_bytes += largest * cb + (rdt != dt ? largest * rb : 0) + largest_chunk * rb;
    }
  }

  void start_reduce(GradSlot& s, double weight) {
    s.weight = weight;
    s.last = sync_early;
    const int b = s.bucket;
    // A partition group of one rank reduces nothing: its "reduce-scatter" is a copy, and
    // the cast into the reduce type is exact when that type is the compute type or wider
    // (bf16 -> f32), so the accumulator takes the gradient straight from the slot, the same
    // bits without two passes over the bucket. Not when each micro-step's reduced chunk
    // must also cross the replicas (every-micro-step sync), which needs recv.
    s.alone = p == 1 && (rdt == dt || device::dtype_size(dt) < device::dtype_size(rdt)) &&
              !(cfg.grad_sync == GradSync::every_micro_step && groups.replication().size() > 1);
    if (s.alone) {
      reducing.push_back(&s);
      return;
    }
    const void* send = s.grads.get();
    if (rdt != dt) {
      be.cast(rdt, s.send.get(), dt, s.grads.get(), static_cast<std::int64_t>(padded(b)));
      send = s.send.get();
    }
    s.reduce = coll.reduce_scatter_partition(send, s.recv.get(), chunk(b), rdt, groups, hierarchical);
    reducing.push_back(&s);
  }

  void finish_oldest_reduce() {
    GradSlot& s = *reducing.front();
    reducing.pop_front();
    const auto t0 = Clock::now();
    s.reduce.wait();
    exposed.reduce += seconds_since(t0);
    const int b = s.bucket;
    const auto n = static_cast<std::int64_t>(chunk(b));
    if (cfg.grad_sync == GradSync::every_micro_step && groups.replication().size() > 1) {
      const auto t1 = Clock::now();
      coll.all_reduce(s.recv.get(), chunk(b), rdt, groups.replication()).wait();
      exposed.sync += seconds_since(t1);
    }
    be.accumulate(mdt, grad_acc[static_cast<std::size_t>(b)].get(), s.alone ? dt : rdt,
                  s.alone ? s.grads.get() : s.recv.get(), n, s.weight);
    s.bucket = -1;
    // The accumulator of b is final: its all-reduce can cross the replicas while the rest
    // of backward runs. Reduces are finished at the same program points on every rank
    // (when gradient slots run out, then at the end), so every rank issues these in the
    // same order relative to its other collectives.
    if (s.last) start_sync(b);
    s.last = false;
  }

  void finish_all_reduces() {
    while (!reducing.empty()) finish_oldest_reduce();
  }

  // Hop 2: gradients cross partition groups once per optimizer step. Started here unless
  // the last micro-step's backward already started them.
  void finish_sync() {
    if (hop2 && !sync_early)
      for (int b = 0; b < buckets(); ++b) start_sync(b);
    sync_early = false;
    const auto t1 = Clock::now();
    for (auto& [b, r] : syncing) r.wait();
    if (!syncing.empty()) exposed.sync += seconds_since(t1);
    if (!sync_buf.empty())
      for (auto& [b, r] : syncing)
        be.cast(mdt, grad_acc[static_cast<std::size_t>(b)].get(), rdt,
                sync_buf[static_cast<std::size_t>(b)].get(), static_cast<std::int64_t>(chunk(b)));
    syncing.clear();
  }

  // Bucket b's hop-2 all-reduce. When gradients are reduced in a type narrower than the
  // accumulator, hop 2 moves that type too (a cast copy of the accumulator, cast back
  // after), as DeepSpeed's MiCS keeps its partitioned gradients in the model's half
  // precision: bf16 moves half the bytes of f32.
  void start_sync(int b) {
    const auto ub = static_cast<std::size_t>(b);
    void* buf = grad_acc[ub].get();
    DType type = mdt;
    if (!sync_buf.empty()) {
      be.cast(rdt, sync_buf[ub].get(), mdt, buf, static_cast<std::int64_t>(chunk(b)));
      buf = sync_buf[ub].get();
      type = rdt;
    }
    syncing.emplace_back(b, coll.all_reduce(buf, chunk(b), type, groups.replication()));
  }

  // --- one micro-step ----------------------------------------------------------------------
  // Forward (and backward when `weight` > 0 is wanted) of the batch already set on `tm`.
  double forward(model::Transformer& tm, bool prefetch) {
    const int L = static_cast<int>(mc.layers);
    const int last = model::final_norm_bucket(mc);
    start_gather(model::kEmbeddingBucket);
    if (prefetch) start_gather(model::block_bucket(0));
    tm.embed_forward(params(model::kEmbeddingBucket));
    for (int i = 0; i < L; ++i) {
      const int b = model::block_bucket(i);
      const void* P = params(b);
      if (prefetch) start_gather(b + 1);  // the next block, or ln_f after the last one
      tm.block_forward(i, P);
      release(b);
    }
    return tm.head_forward(params(last), params(model::kEmbeddingBucket));
  }

  // Where bucket b's gradient of this micro-step goes: a gradient slot on its way through
  // the reduce-scatter, or (direct) the accumulator itself, which holds zeros then.
  GradSlot* grad_slot(int b, bool direct) { return direct ? nullptr : &acquire_grad(b); }
  void* grad_target(GradSlot* s, int b) {
    return s != nullptr ? s->grads.get() : grad_acc[static_cast<std::size_t>(b)].get();
  }
  void finish_grad(GradSlot* s, double weight) {
    if (s != nullptr) start_reduce(*s, weight);
  }

  // direct: the gradient goes straight into the accumulator (see direct_grads); the
  // caller allows it only where that gives the reduce path's bits (first micro-step,
  // weight 1).
  void backward(model::Transformer& tm, bool prefetch, double weight, bool direct) {
    const int L = static_cast<int>(mc.layers);
    const int emb = model::kEmbeddingBucket, last = model::final_norm_bucket(mc);
    GradSlot* g0 = grad_slot(emb, direct);
    GradSlot* gf = grad_slot(last, direct);
    if (prefetch && L > 0) start_gather(model::block_bucket(L - 1));
    tm.head_backward(params(last), params(emb), grad_target(gf, last), grad_target(g0, emb));
    release(last);
    finish_grad(gf, weight);
    for (int i = L - 1; i >= 0; --i) {
      const int b = model::block_bucket(i);
      const void* P = params(b);
      if (prefetch && i > 0) start_gather(b - 1);
      GradSlot* g = grad_slot(b, direct);
      tm.block_backward(i, P, grad_target(g, b));
      release(b);
      finish_grad(g, weight);
    }
    tm.embed_backward(params(emb), grad_target(g0, emb));
    release(emb);
    finish_grad(g0, weight);
  }

  // --- the optimizer step ---------------------------------------------------------------------
  void refresh_compute() {
    std::vector<comm::Request> gathers;  // all buckets in flight at once, then one wait
    for (int b = 0; b < buckets(); ++b) {
      const auto ub = static_cast<std::size_t>(b);
      if (dt != mdt)
        be.cast(dt, compute_shard[ub].get(), mdt, master[ub].get(),
                static_cast<std::int64_t>(chunk(b)));
      if (!persistent || master_view) continue;
      void* own = device::offset(persistent_copy[ub].get(), dt,
                                 static_cast<std::int64_t>(shard[ub].begin(q)));
      be.copy(own, shard_source(b), chunk(b) * device::dtype_size(dt));
      if (p > 1)
        gathers.push_back(coll.gather_partition(persistent_copy[ub].get(), chunk(b), dt, groups, hierarchical));
    }
    for (auto& g : gathers) g.wait();
  }
};

// ---------------------------------------------------------------------------------------
Engine::Engine(const model::ModelConfig& model, const TrainConfig& cfg, device::Backend& backend,
               comm::Collectives& collectives, comm::ProcessGroups& groups, DType compute,
               DType reduce, DType states, bool defer_collectives)
    : impl_(std::make_unique<Impl>(model, cfg, backend, collectives, groups, compute, reduce,
                                   states)) {
  Impl& m = *impl_;
  m.world = groups.world().size();
  m.rank = groups.world().rank();
  m.p = groups.partition().size();
  m.q = groups.partition().rank();
  p_ = m.p;
  const int expected = partition_size_for(cfg.strategy, cfg.partition_size, m.world);
  if (expected != m.p)
    throw UsageError("internal layout mismatch: strategy " + std::string(to_string(cfg.strategy)) +
                     " needs partition groups of " + std::to_string(expected) + " ranks, the groups have " +
                     std::to_string(m.p));
  m.persistent = persistent_parameters(cfg.strategy);
  m.master_view = m.p == 1 && compute == states;
  m.direct_grads = m.master_view && reduce == compute && groups.replication().size() == 1;
  m.hierarchical = cfg.hierarchical;
  accumulation_ = accumulation_steps(cfg, m.world);
  if (states != DType::f32 && states != DType::f64)
    throw UsageError(std::string("model states must be f32 or f64, not ") + device::dtype_name(states));
  if (!backend.supports(compute))
    throw UsageError(std::string("the ") + backend.name() + " backend cannot compute in " +
                     device::dtype_name(compute));

  model_ = std::make_unique<model::Transformer>(model, backend, compute, cfg.micro_batch,
                                                cfg.recompute);
  m.layout = model_->layout();
  const int nb = m.buckets();
  m.shard.resize(static_cast<std::size_t>(nb));
  m.segments.resize(static_cast<std::size_t>(nb));
  std::size_t largest = 0, largest_chunk = 0;
  for (int b = 0; b < nb; ++b) {
    const auto ub = static_cast<std::size_t>(b);
    m.shard[ub] = model::shard_bucket(m.layout.buckets[ub].count, m.p);
    m.segments[ub] = shard_segments(m.layout.buckets[ub], m.shard[ub], m.q);
    largest = std::max(largest, m.shard[ub].padded());
    largest_chunk = std::max(largest_chunk, m.shard[ub].chunk);
  }

  // Model states of shard q, initialised from the seed so that every layout starts from
  // the same model.
  const std::size_t sb = device::dtype_size(states);
  std::vector<double> host;
  for (int b = 0; b < nb; ++b) {
    const auto ub = static_cast<std::size_t>(b);
    const std::size_t c = m.shard[ub].chunk;
    for (auto* v : {&m.master, &m.adam_m, &m.adam_v, &m.grad_acc}) {
      v->emplace_back(backend, c * sb);
      backend.fill(states, v->back().get(), static_cast<std::int64_t>(c), 0.0);
    }
    state_bytes_ += 4 * c * sb;
    host.assign(c, 0.0);
    const std::size_t valid = m.shard[ub].valid(m.q);
    if (valid > 0)
      model::init_bucket(model, m.layout, b, m.shard[ub].begin(m.q), valid, states, host.data(),
                         cfg.seed);
    backend.copy_to_device(m.master[ub].get(), host.data(), c * sb);
    if (compute != states) {
      m.compute_shard.emplace_back(backend, compute, static_cast<std::int64_t>(c));
      state_bytes_ += c * device::dtype_size(compute);
    }
    if (m.persistent && !m.master_view) {  // the master shard is read in place otherwise
      m.persistent_copy.emplace_back(backend, compute, static_cast<std::int64_t>(m.shard[ub].padded()));
      state_bytes_ += m.shard[ub].padded() * device::dtype_size(compute);
    }
  }

  m.largest = largest;
  m.largest_chunk = largest_chunk;
  const std::size_t cb = device::dtype_size(compute), rb = device::dtype_size(reduce);
  // Parameter slots only where passes read gathered copies (not persistent, not the
  // master shard in place).
  if (!m.persistent && !m.master_view) {
    // Embeddings (held through the micro-step), the current bucket, the prefetched one,
    // and ln_f alongside the last block at the turn from forward to backward.
    m.param_slots.resize(4);
    for (auto& s : m.param_slots) {
      s.buf = device::Buffer(backend, largest * cb);
      m.working_bytes += largest * cb;
    }
  }
  m.gathered.assign(static_cast<std::size_t>(nb), nullptr);
  // A lone rank whose step is one micro-batch writes every gradient into the accumulator
  // (direct_grads): the slots would never be touched.
  if (!(m.direct_grads && accumulation_ == 1)) m.make_grad_slots();
  m.hop2 = cfg.grad_sync == GradSync::two_hop && groups.replication().size() > 1;
  if (m.hop2 && rb < sb)
    for (int b = 0; b < nb; ++b) {
      m.sync_buf.emplace_back(backend, m.chunk(b) * rb);
      m.working_bytes += m.chunk(b) * rb;
    }
  if (!defer_collectives) m.refresh_compute();
}

Engine::~Engine() {
  if (impl_) {
    // Never leave collectives in flight behind freed buffers.
    for (auto& s : impl_->param_slots) s.gather.wait();
    impl_->finish_all_reduces();
    for (auto& [b, r] : impl_->syncing) r.wait();
  }
}

const model::BucketLayout& Engine::layout() const { return impl_->layout; }

std::size_t Engine::working_set_bytes() const noexcept { return impl_->working_bytes; }

StepResult Engine::skip_step(double loss, double norm, std::chrono::steady_clock::time_point t0) {
  Impl& m = *impl_;
  for (int b = 0; b < m.buckets(); ++b)
    m.be.fill(m.mdt, m.grad_acc[static_cast<std::size_t>(b)].get(), static_cast<std::int64_t>(m.chunk(b)), 0.0);
  m.be.synchronize();
  StepResult r;
  r.lr = learning_rate(m.cfg.optimizer, step_, m.cfg.steps);
  r.step = ++step_;
  r.loss = loss;
  r.grad_norm = norm;
  r.tokens = m.cfg.global_batch * m.mc.seq;
  r.exposed = m.exposed;
  r.seconds = seconds_since(t0);
  r.skipped = true;
  return r;
}

StepResult Engine::train_step(const data::Dataset& data) {
  Impl& m = *impl_;
  const auto t0 = Clock::now();
  m.exposed = CommTime{};
  const int T = static_cast<int>(m.mc.seq);
  const int A = accumulation_;
  const std::int64_t mb = m.cfg.micro_batch;
  const data::BatchLayout bl{m.cfg.global_batch, m.world, m.cfg.micro_batch};

  // This rank's micro-batches, then the global count of predicted tokens, so that each
  // micro-batch's mean-loss gradient is weighted by its share of the global batch.
  const std::size_t per = static_cast<std::size_t>(mb * T);
  // Host staging reused across steps: sized on the first step, never reallocated after.
  std::vector<std::int32_t>& tokens = m.batch_tokens;
  std::vector<std::int32_t>& targets = m.batch_targets;
  std::vector<std::int64_t>& count_of = m.batch_counts;
  tokens.resize(per * static_cast<std::size_t>(A));
  targets.resize(tokens.size());
  count_of.resize(static_cast<std::size_t>(A));
  m.mask_scratch.resize(per);
  double total = 0;  // predicted tokens: this rank's, then (after the sum) the global batch's
  for (int a = 0; a < A; ++a) {
    std::int32_t* tk = tokens.data() + per * static_cast<std::size_t>(a);
    std::int32_t* tg = targets.data() + per * static_cast<std::size_t>(a);
    data::fill_micro_batch(data, m.cfg.seed, step_, bl, m.rank, a, T, tk, tg);
    if (m.mc.variant == model::Variant::bert) {
      std::copy(tk, tk + per, m.mask_scratch.begin());
      model::bert_mask(m.mask_scratch.data(), mb, T, m.mc.vocab,
                       data::mix3(m.cfg.seed, static_cast<std::uint64_t>(step_), 0x6d61736bULL),
                       bl.sequence_index(m.rank, a, 0), tk, tg);
    }
    std::int64_t n = 0;
    for (std::size_t i = 0; i < per; ++i) n += tg[i] >= 0 ? 1 : 0;
    count_of[static_cast<std::size_t>(a)] = n;
    total += static_cast<double>(n);
  }
  m.coll.sum_host(&total, 1, m.groups.world());

  double loss_sum = 0;
  for (int a = 0; a < A; ++a) {
    m.sync_early = m.hop2 && m.cfg.overlap_grad_sync && a == A - 1;
    model_->set_batch(tokens.data() + per * static_cast<std::size_t>(a),
                      targets.data() + per * static_cast<std::size_t>(a));
    const double loss = m.forward(*model_, m.cfg.prefetch);
    const double weight = total > 0 ? static_cast<double>(count_of[static_cast<std::size_t>(a)]) / total : 0.0;
    loss_sum += loss * weight;
    m.backward(*model_, m.cfg.prefetch, weight, m.direct_grads && a == 0 && weight == 1.0);
  }
  m.finish_all_reduces();

  m.finish_sync();

  // Global gradient norm: replicas hold identical shards, so the partition group's shards
  // cover the model exactly once. The weighted loss is summed over the whole world.
  double norm2 = 0;
  for (int b = 0; b < m.buckets(); ++b)
    norm2 += m.be.sum_squares(m.mdt, m.grad_acc[static_cast<std::size_t>(b)].get(),
                              static_cast<std::int64_t>(m.chunk(b)));
  m.coll.sum_host(&norm2, 1, m.groups.partition());
  // A non-finite loss or norm anywhere skips the update everywhere: each rank's verdict
  // rides in the same world sum as the loss, so the decision is agreed at no extra cost.
  double loss_and_bad[2] = {loss_sum, std::isfinite(norm2) ? 0.0 : 1.0};
  m.coll.sum_host(loss_and_bad, 2, m.groups.world());
  loss_sum = loss_and_bad[0];
  const double norm = std::sqrt(norm2);
  // A compute model (the emulated backend) computes no values: nothing to judge there.
  const bool bad = loss_and_bad[1] != 0 || !std::isfinite(loss_sum);
  if (bad && m.be.computes_values()) return skip_step(loss_sum, norm, t0);
  const double clip = m.cfg.optimizer.grad_clip > 0 && norm > m.cfg.optimizer.grad_clip
                          ? m.cfg.optimizer.grad_clip / (norm + 1e-6)
                          : 1.0;

  const double lr = learning_rate(m.cfg.optimizer, step_, m.cfg.steps);
  device::AdamWParams hp;
  hp.lr = lr;
  hp.beta1 = m.cfg.optimizer.beta1;
  hp.beta2 = m.cfg.optimizer.beta2;
  hp.eps = m.cfg.optimizer.eps;
  hp.grad_scale = clip;
  hp.step = step_ + 1;
  for (int b = 0; b < m.buckets(); ++b) {
    const auto ub = static_cast<std::size_t>(b);
    for (const Segment& s : m.segments[ub]) {
      hp.weight_decay = s.decay ? m.cfg.optimizer.weight_decay : 0.0;
      // The accumulator is zeroed for the next step in the same pass.
      m.be.adamw_zero_grad(m.mdt, device::offset(m.master[ub].get(), m.mdt, s.begin),
                           device::offset(m.adam_m[ub].get(), m.mdt, s.begin),
                           device::offset(m.adam_v[ub].get(), m.mdt, s.begin), m.mdt,
                           device::offset(m.grad_acc[ub].get(), m.mdt, s.begin), s.count, hp);
    }
    // Past the segments (the shard's padding) the accumulator only ever adds zeros; keep
    // the zeroing explicit anyway, it is at most one chunk's tail.
    const auto valid = static_cast<std::int64_t>(m.shard[ub].valid(m.q));
    const auto tail = static_cast<std::int64_t>(m.chunk(b)) - valid;
    if (tail > 0) m.be.fill(m.mdt, device::offset(m.grad_acc[ub].get(), m.mdt, valid), tail, 0.0);
  }
  m.refresh_compute();
  m.be.synchronize();
  ++step_;

  StepResult r;
  r.step = step_;
  r.loss = loss_sum;
  r.grad_norm = norm;
  r.lr = lr;
  r.tokens = m.cfg.global_batch * m.mc.seq;
  r.exposed = m.exposed;
  r.seconds = seconds_since(t0);
  return r;
}

double Engine::evaluate(const data::Dataset& data, std::int64_t batches) {
  Impl& m = *impl_;
  const int T = static_cast<int>(m.mc.seq);
  const data::BatchLayout bl{m.cfg.global_batch, m.world, m.cfg.micro_batch};
  const std::size_t per = static_cast<std::size_t>(m.cfg.micro_batch) * static_cast<std::size_t>(T);
  std::vector<std::int32_t> tokens(per), targets(per), raw(per);
  double sums[2] = {0, 0};  // {loss x count, count}
  for (std::int64_t e = 0; e < batches; ++e)
    for (int a = 0; a < accumulation_; ++a) {
      data::fill_eval_micro_batch(data, e, bl, m.rank, a, T, tokens.data(), targets.data());
      if (m.mc.variant == model::Variant::bert) {
        raw = tokens;
        model::bert_mask(raw.data(), m.cfg.micro_batch, T, m.mc.vocab, 0x6576616cULL,
                         e * m.cfg.global_batch + bl.sequence_index(m.rank, a, 0), tokens.data(),
                         targets.data());
      }
      model_->set_batch(tokens.data(), targets.data());
      const double loss = m.forward(*model_, m.cfg.prefetch);
      for (int b = 0; b < m.buckets(); ++b) m.release(b);
      const auto n = static_cast<double>(model_->counted_tokens());
      sums[0] += loss * n;
      sums[1] += n;
    }
  m.coll.sum_host(sums, 2, m.groups.world());
  return sums[1] > 0 ? sums[0] / sums[1] : 0.0;
}

ShardState Engine::shard_state() {
  Impl& m = *impl_;
  MICS_ASSERT(m.mdt == DType::f32, "checkpoints hold fp32 model states");
  ShardState s;
  s.sharding = m.shard;
  s.shard_index = m.q;
  for (int b = 0; b < m.buckets(); ++b) {
    const auto ub = static_cast<std::size_t>(b);
    s.master.push_back(m.master[ub].as<float>());
    s.adam_m.push_back(m.adam_m[ub].as<float>());
    s.adam_v.push_back(m.adam_v[ub].as<float>());
  }
  return s;
}

void Engine::refresh_compute_copies() { impl_->refresh_compute(); }

std::vector<double> Engine::master_shard_f64(int bucket) {
  Impl& m = *impl_;
  const std::size_t n = m.chunk(bucket);
  std::vector<double> out(n);
  if (m.mdt == DType::f64) {
    m.be.copy_to_host(out.data(), m.master[static_cast<std::size_t>(bucket)].get(), n * sizeof(double));
  } else {
    std::vector<float> f(n);
    m.be.copy_to_host(f.data(), m.master[static_cast<std::size_t>(bucket)].get(), n * sizeof(float));
    std::copy(f.begin(), f.end(), out.begin());
  }
  return out;
}

std::vector<float> Engine::master_shard(int bucket) {
  const std::vector<double> d = master_shard_f64(bucket);
  return std::vector<float>(d.begin(), d.end());
}

std::vector<double> Engine::gather_bucket(int bucket) {
  Impl& m = *impl_;
  const auto ub = static_cast<std::size_t>(bucket);
  std::vector<double> all(m.shard[ub].padded());
  const std::vector<double> mine = master_shard_f64(bucket);
  std::copy(mine.begin(), mine.end(), all.begin() + static_cast<std::ptrdiff_t>(m.shard[ub].begin(m.q)));
  m.coll.all_gather_host(all.data(), m.chunk(bucket), m.groups.partition());
  all.resize(m.layout.buckets[ub].count);
  return all;
}

}  // namespace mics::engine
