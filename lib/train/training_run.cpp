#include "mics/train/training_run.hpp"

#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <cstdio>
#include <memory>
#include <new>
#include <optional>
#include <sstream>

#include "mics/checkpoint/checkpoint.hpp"
#include "mics/comm/mpi_collectives.hpp"
#include "mics/comm/process_groups.hpp"
#include "mics/core/agree.hpp"
#include "mics/core/check.hpp"
#include "mics/core/error.hpp"
#include "mics/data/dataset.hpp"
#include "mics/device/backend.hpp"
#include "mics/engine/engine.hpp"
#include "mics/model/layout.hpp"
#include "mics/report/metrics_writer.hpp"
#include "mics/report/step_log.hpp"
#include "mics/report/summary.hpp"
#include "mics/train/tools.hpp"
#if MICS_HAVE_CUDA
#include "mics/comm/nccl_collectives.hpp"
#include "mics/comm/staged_collectives.hpp"
#endif

namespace mics::train {
namespace {

// This rank's place among the ranks sharing its host's memory (one split, done once).
struct HostPlace {
  int rank = 0;
  int size = 1;
};

HostPlace host_place() {
  MPI_Comm local = MPI_COMM_NULL;
  MICS_CHECK_MPI(MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &local));
  HostPlace h;
  MPI_Comm_rank(local, &h.rank);
  MPI_Comm_size(local, &h.size);
  MPI_Comm_free(&local);
  return h;
}

std::string preset_text(const model::ModelConfig& c) {
  std::ostringstream os;
  os << "name = " << c.name << "\nvariant = " << model::variant_name(c.variant) << "\nlayers = " << c.layers
     << "\nhidden = " << c.hidden << "\nheads = " << c.heads << "\nseq = " << c.seq
     << "\nvocab = " << c.vocab << "\n";
  return os.str();
}

std::unique_ptr<comm::Collectives> make_collectives(const RunOptions& o, device::Backend& be,
                                                    int gpu) {
  if (o.comm == "mpi") {
    if (be.is_host_memory()) return std::make_unique<comm::MpiCollectives>();
#if MICS_HAVE_CUDA
    auto staged = std::make_unique<comm::StagedCollectives>();
    staged->set_compute_stream(static_cast<cudaStream_t>(be.compute_stream().native()));
    return staged;
#endif
  }
#if MICS_HAVE_CUDA
  if (o.comm == "nccl") {
    auto nccl = std::make_unique<comm::NcclCollectives>(gpu, o.comm_timeout_s);
    nccl->set_compute_stream(static_cast<cudaStream_t>(be.compute_stream().native()));
    return nccl;
  }
#endif
  (void)gpu;
  throw UsageError("--comm " + o.comm + " is not available in this build (built without CUDA)");
}

// The engine's shards as the checkpoint library wants them: host spans. On a GPU backend
// they are staged through host copies.
class CheckpointBridge {
public:
  CheckpointBridge(engine::Engine& e, device::Backend& be, comm::ProcessGroups& g)
      : engine_(e), be_(be), groups_(g) {}

  checkpoint::ShardState state() {
    const engine::ShardState s = engine_.shard_state();
    checkpoint::ShardState c;
    c.comm = MPI_COMM_WORLD;
    c.layout = &engine_.layout();
    c.partition_size = engine_.partition_size();
    c.shard_index = s.shard_index;
    c.writer = groups_.replication().rank() == 0;
    const std::size_t nb = s.master.size();
    if (!be_.is_host_memory() && staging_.empty()) staging_.resize(nb * 3);
    for (std::size_t b = 0; b < nb; ++b) {
      const std::size_t n = s.sharding[b].chunk;
      float* ptr[3] = {s.master[b], s.adam_m[b], s.adam_v[b]};
      if (!be_.is_host_memory())
        for (int k = 0; k < 3; ++k) {
          staging_[b * 3 + static_cast<std::size_t>(k)].resize(n);
          ptr[k] = staging_[b * 3 + static_cast<std::size_t>(k)].data();
        }
      c.buckets.push_back({{ptr[0], n}, {ptr[1], n}, {ptr[2], n}});
    }
    return c;
  }

  void to_host() { move(true); }
  void to_device() {
    move(false);
    engine_.refresh_compute_copies();
  }

private:
  void move(bool down) {
    if (be_.is_host_memory()) return;
    const engine::ShardState s = engine_.shard_state();
    for (std::size_t b = 0; b < s.master.size(); ++b) {
      float* dev[3] = {s.master[b], s.adam_m[b], s.adam_v[b]};
      for (int k = 0; k < 3; ++k) {
        auto& host = staging_[b * 3 + static_cast<std::size_t>(k)];
        if (down) be_.copy_to_host(host.data(), dev[k], host.size() * sizeof(float));
        else be_.copy_to_device(dev[k], host.data(), host.size() * sizeof(float));
      }
    }
  }
  engine::Engine& engine_;
  device::Backend& be_;
  comm::ProcessGroups& groups_;
  std::vector<std::vector<float>> staging_;
};

}  // namespace

int run_training(const RunOptions& o) {
  int rank = 0, world = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &world);
  const bool lead = rank == 0;
  auto say = [&](const std::string& line) {
    if (lead) std::printf("%s\n", line.c_str());
    if (lead) std::fflush(stdout);
  };

  RunOptions opt = o;
  engine::TrainConfig& tc = opt.train;
  // A resumed run continues the stored run: its seed fixes the data order.
  std::string resume_path;
  if (!opt.resume.empty()) {
    try {
      resume_path = checkpoint::resolve(MPI_COMM_WORLD, opt.resume, opt.checkpoint_dir);
      const checkpoint::Info info = checkpoint::info(MPI_COMM_WORLD, resume_path);
      if (!info.meta.rng_state.empty()) tc.seed = info.meta.rng_state.front();
    } catch (const Error& e) {
      // The checkpoint library names the file only; say which option it came from.
      throw Error(std::string("--resume: ") + e.what(), e.everywhere());
    }
  }

  // Every rank validates the same request and fails alike, before any collective.
  engine::accumulation_steps(tc, world);
  const HostPlace host = host_place();
  int gpu = -1;
  std::unique_ptr<device::Backend> backend;
  if (opt.backend == "cuda") {
#if MICS_HAVE_CUDA
    const int count = device::cuda_device_count();
    gpu = opt.device >= 0 ? opt.device : (count > 0 ? host.rank % count : 0);
    // Agreed, since a node without a GPU may sit beside nodes with one.
    agree(MPI_COMM_WORLD, count > 0 ? std::string()
                                    : "--backend cuda: no GPU is visible to this process; use --backend cpu");
#else
    throw UsageError("--backend cuda: this mics-train was built without CUDA (MICS_ENABLE_CUDA=OFF); use --backend cpu");
#endif
    backend = device::make_backend("cuda", 0, gpu);
  } else {
    // Ranks sharing CPUs each take their share of the affinity mask (tools.hpp), so that
    // oversubscribed OpenMP teams do not spin against each other.
    const CpuThreads cpu = cpu_threads_per_rank(opt.threads);
    say("mics-train: " + cpu.note);
    backend = device::make_backend("cpu", cpu.threads);
  }

  const int g = tc.ranks_per_node > 0 ? tc.ranks_per_node : host.size;
  if (opt.partition_auto) {
    std::size_t memory = static_cast<std::size_t>(tc.memory_per_rank_gib * 1024.0 * 1024.0 * 1024.0);
    if (memory == 0) memory = backend->memory_capacity();
    if (memory == 0 && backend->is_host_memory())
      memory = static_cast<std::size_t>(sysconf(_SC_PHYS_PAGES)) *
               static_cast<std::size_t>(sysconf(_SC_PAGE_SIZE)) / static_cast<std::size_t>(host.size);
    if (memory == 0)
      throw UsageError("--partition-size auto needs --memory-per-rank GiB on this backend");
    tc.partition_size = engine::auto_partition_size(opt.model, world, g, opt.compute, memory);
  }
  if (tc.strategy != engine::Strategy::mics && tc.partition_size > 0 &&
      tc.partition_size != engine::partition_size_for(tc.strategy, 0, world))
    throw UsageError("--partition-size " + std::to_string(tc.partition_size) + " does not apply to --strategy " +
                     engine::to_string(tc.strategy) + ", whose partition size is " +
                     std::to_string(engine::partition_size_for(tc.strategy, 0, world)) +
                     "; drop it, or use --strategy mics");
  const int p = engine::partition_size_for(tc.strategy, tc.partition_size, world);
  auto groups = comm::make_process_groups(MPI_COMM_WORLD, tc.ranks_per_node, p, tc.hierarchical);
  auto collectives = make_collectives(opt, *backend, gpu);
  data::DataSource data = data::open_data(opt.data, static_cast<int>(opt.model.vocab));

  // A save must not be the first to find that the directory is unusable: that would come
  // after the training it was meant to keep.
  if (!opt.checkpoint_dir.empty() && !opt.eval_only) {  // --eval-only leaves the folder alone
    std::string problem;
    if (rank == 0) {
      std::error_code ec;
      std::filesystem::create_directories(opt.checkpoint_dir, ec);
      if (ec || ::access(opt.checkpoint_dir.c_str(), W_OK) != 0)
        problem = "--checkpoint-dir " + opt.checkpoint_dir + ": cannot create or write it (" +
                  (ec ? ec.message() : std::string("not writable")) + "); choose a writable directory";
    }
    agree(MPI_COMM_WORLD, problem);
  }

  // Allocating the model states and activations can fail on some ranks only (a full
  // device); every rank reaches the agreement before the engine's first collective.
  std::unique_ptr<engine::Engine> engine_ptr;
  {
    std::string problem;
    try {
      engine_ptr = std::make_unique<engine::Engine>(opt.model, tc, *backend, *collectives, groups,
                                                    opt.compute, opt.grad_reduce, device::DType::f32,
                                                    /*defer_collectives=*/true);
    } catch (const std::bad_alloc&) {
      problem = "out of host memory while allocating the model (" + opt.model.name +
                "); use a larger --partition-size, a smaller --micro-batch or a smaller model";
    } catch (const Error& e) {
      problem = e.what();
    }
    agree(MPI_COMM_WORLD, problem);
  }
  engine::Engine& eng = *engine_ptr;
  eng.refresh_compute_copies();
  CheckpointBridge bridge(eng, *backend, groups);

  const auto& plan = groups.plan();
  {
    std::ostringstream os;
    os << "mics-train: " << opt.model.name << " (" << model::variant_name(opt.model.variant) << ", "
       << model::parameter_count(opt.model) << " parameters, " << opt.model.layers << " layers, hidden "
       << opt.model.hidden << ", seq " << opt.model.seq << ") on " << world << " ranks ("
       << plan.node_count() << " nodes of " << plan.ranks_per_node() << "), strategy "
       << engine::to_string(tc.strategy) << ", p=" << p << (opt.partition_auto ? " (auto)" : "")
       << ", replication " << plan.replication_size() << ", hierarchical "
       << hierarchical_note(tc.hierarchical, groups.hierarchical(), p, plan.ranks_per_node()) << ", grad-sync " << engine::to_string(tc.grad_sync)
       << ", backend " << backend->name() << " " << device::dtype_name(opt.compute) << ", comm "
       << collectives->backend();
    say(os.str());
    std::ostringstream b;
    b << "mics-train: global batch " << tc.global_batch << " = " << world << " ranks x " << tc.micro_batch
      << " sequences x " << eng.accumulation() << " micro-steps; data " << opt.data
      << "; model TFLOPS = 24*3*B*s*l*h^2*(1 + s/(6h) + V/(16lh)) per step / (ranks x step time)"
      << (tc.recompute ? "; activation recomputation ON (hardware does 4/3 of that: f=4)"
                       : "; activation recomputation off");
    say(b.str());
  }

  if (!resume_path.empty()) {
    const checkpoint::Metadata meta = checkpoint::load(resume_path, bridge.state());
    bridge.to_device();
    eng.set_step(static_cast<int>(meta.step));
    say("mics-train: resumed from " + resume_path + " at step " + std::to_string(meta.step) +
        " (written by " + std::to_string(meta.layout.world_size) + " ranks, " + meta.layout.strategy +
        " p=" + std::to_string(meta.layout.partition_size) + ")");
  }
  // Around a trained model (tools.hpp): evaluation only; a checkpoint with nothing left to do.
  if (opt.eval_only) return run_eval_only(opt, eng, data, resume_path, world);
  if (!resume_path.empty() && eng.step() >= tc.steps) return nothing_to_do(resume_path, eng.step(), tc.steps);
  TrainingSampler sampler(opt, eng, *backend, lead);

  auto save = [&]() {
    checkpoint::Metadata meta;
    meta.step = eng.step();
    meta.tokens_seen = static_cast<std::int64_t>(eng.step()) * tc.global_batch * opt.model.seq;
    meta.schedule = {{"lr", tc.optimizer.lr},
                     {"min_lr", tc.optimizer.min_lr},
                     {"warmup_steps", tc.optimizer.warmup_steps},
                     {"decay_steps", tc.optimizer.decay_steps},
                     {"total_steps", tc.steps},
                     {"lr_now", engine::learning_rate(tc.optimizer, std::max(0, eng.step() - 1), tc.steps)}};
    meta.rng_state = {tc.seed};
    meta.data_position = {static_cast<std::uint64_t>(eng.step()), static_cast<std::uint64_t>(tc.global_batch)};
    meta.model_config = preset_text(opt.model);
    meta.training_config = opt.config_text;
    meta.layout = {world, plan.ranks_per_node(), p, engine::to_string(tc.strategy), tc.hierarchical};
    bridge.to_host();
    const std::string path = checkpoint::save(opt.checkpoint_dir, bridge.state(), meta, opt.keep_last);
    say("mics-train: saved " + path);
  };

  std::vector<std::string> group_names;
  for (comm::Group* gr : groups.groups()) group_names.push_back(gr->name());
  std::unique_ptr<report::MetricsWriter> metrics;
  const report::RunLayout run_layout{world, plan.ranks_per_node(), p, engine::to_string(tc.strategy),
                                     groups.hierarchical(), engine::to_string(tc.grad_sync)};
  {
    // Only rank 0 opens the files: the others must learn of a failure here, or they would
    // wait in the first step's collectives for a rank that has left.
    std::string open_error;
    if (lead && (!opt.metrics.empty() || !opt.metrics_jsonl.empty())) {
      try {
        metrics = std::make_unique<report::MetricsWriter>(opt.metrics, run_layout, group_names, opt.metrics_jsonl);
      } catch (const Error& e) {
        open_error = e.what();
      }
    }
    agree(MPI_COMM_WORLD, open_error);
  }

  const double step_flops = model::training_flops(opt.model, tc.global_batch, false);
  std::optional<double> peak;
  if (opt.peak_tflops > 0) peak = opt.peak_tflops;
  else if (backend->peak_flops(opt.compute) > 0) peak = backend->peak_flops(opt.compute) / 1e12;

  const std::int64_t eval_batches =
      data.val ? std::min<std::int64_t>(opt.eval_batches,
                                        data::max_eval_batches(*data.val, tc.global_batch,
                                                               static_cast<int>(opt.model.seq)))
               : 0;
  report::EtaEstimator eta(tc.steps - eng.step());
  report::SummaryAccumulator summary;
  std::vector<comm::GroupCounters> before;
  std::vector<report::GroupTraffic> traffic;
  for (comm::Group* gr : groups.groups()) traffic.push_back({gr->name(), gr->size(), 0, 0.0, 0.0});

  while (eng.step() < tc.steps) {
    before.clear();
    for (comm::Group* gr : groups.groups()) before.push_back(gr->counters());
    const engine::StepResult r = eng.train_step(*data.train);

    report::StepRecord rec;
    rec.step = r.step;
    rec.loss = r.loss;
    rec.lr = r.lr;
    rec.grad_norm = r.grad_norm;
    rec.step_ms = r.seconds * 1e3;
    rec.tokens_per_s = static_cast<double>(r.tokens) / r.seconds;
    rec.tflops_per_rank = step_flops / (world * r.seconds * 1e12);
    if (peak) rec.mfu = rec.tflops_per_rank / *peak;
    rec.exposed_comm_ms = r.exposed.total() * 1e3;
    std::size_t i = 0;
    for (comm::Group* gr : groups.groups()) {
      const auto& now = gr->counters();
      report::GroupComm gc;
      gc.group = gr->name();
      gc.ms = (now.seconds - before[i].seconds) * 1e3;
      gc.bytes = now.bytes - before[i].bytes;
      if (gc.group == "partition") gc.exposed_ms = (r.exposed.gather + r.exposed.reduce) * 1e3;
      if (gc.group == "replication") gc.exposed_ms = r.exposed.sync * 1e3;
      traffic[i].bytes += gc.bytes;
      traffic[i].ms += gc.ms;
      traffic[i].exposed_ms += gc.exposed_ms;
      rec.comm.push_back(gc);
      ++i;
    }
    const bool last = eng.step() == tc.steps;
    if (eval_batches > 0 && ((opt.eval_every > 0 && r.step % opt.eval_every == 0) || last))
      rec.val_loss = eng.evaluate(*data.val, eval_batches);
    const auto eta_s = eta.update(rec.step_ms);
    if (lead && (r.step % opt.log_every == 0 || last || r.step == 1))
      std::printf("%s\n", report::format_step_line(rec, tc.steps, eta_s).c_str()), std::fflush(stdout);
    if (metrics) metrics->write(rec);
    sampler.after_step(r.step);  // --sample-every (tools.hpp)
    summary.add(rec);
    if (!opt.checkpoint_dir.empty() &&
        ((opt.checkpoint_every > 0 && r.step % opt.checkpoint_every == 0) || last))
      save();
  }

  report::RunSummary s = summary.summary();
  s.model_state_bytes_per_rank = eng.model_state_bytes();
  s.peak_bytes_per_rank = backend->peak_bytes_in_use();
  s.groups = traffic;
  s.flops_formula = std::string("model FLOPs 24*3*B*s*l*h^2*(1 + s/(6h) + V/(16lh)) per step (Narayanan et al. 2021)") +
                    (tc.recompute ? ", recomputation on" : ", recomputation off");
  if (lead && s.steps > 0) std::printf("%s", report::format_summary(s).c_str()), std::fflush(stdout);
  return 0;
}

}  // namespace mics::train
