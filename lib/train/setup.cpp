// mics-train's set-up stages (see setup.hpp). Every stage function below runs on every
// rank inside run_stage, so that its failures are agreed before the next stage starts.
#include "mics/train/setup.hpp"

#include <unistd.h>

#include <algorithm>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <new>
#include <sstream>

#include "mics/comm/mpi_collectives.hpp"
#include "mics/core/agree.hpp"
#include "mics/core/check.hpp"
#include "mics/core/error.hpp"
#include "mics/core/watchdog.hpp"
#include "mics/model/layout.hpp"
#include "mics/train/staging.hpp"
#include "mics/train/tools.hpp"
#include "mics/train/model_size.hpp"
#if MICS_HAVE_CUDA
#include "mics/comm/nccl_collectives.hpp"
#include "mics/comm/staged_collectives.hpp"
#endif

namespace mics::train {

TestSeams& test_seams() {
  static TestSeams seams;
  return seams;
}

void run_stage(const std::function<void()>& body) {
  std::string problem;
  try {
    body();
  } catch (const AgreedError&) {
    throw;  // already the same on every rank
  } catch (const std::bad_alloc&) {
    problem = "out of host memory";
  } catch (const std::exception& e) {
    problem = e.what();
  }
  agree(MPI_COMM_WORLD, problem);
}

void Job::say(const std::string& line) const {
  if (!lead()) return;
  std::printf("%s\n", line.c_str());
  std::fflush(stdout);
}

std::string preset_text(const model::ModelConfig& c) {
  std::ostringstream os;
  os << "name = " << c.name << "\nvariant = " << model::variant_name(c.variant) << "\nlayers = " << c.layers
     << "\nhidden = " << c.hidden << "\nheads = " << c.heads << "\nseq = " << c.seq
     << "\nvocab = " << c.vocab << "\n";
  return os.str();
}

namespace {

void make_backend(Job& job) {
  const RunOptions& o = job.opt;
  if (o.backend == "cuda") {
#if MICS_HAVE_CUDA
    const int count = device::cuda_device_count();
    if (count == 0) throw UsageError("--backend cuda: no GPU is visible to this process; use --backend cpu");
    job.gpu = o.device >= 0 ? o.device : job.host.local_rank % count;
    if (job.gpu >= count)
      throw UsageError("--device " + std::to_string(job.gpu) + ": this host has " + std::to_string(count) +
                       " GPUs (0.." + std::to_string(count - 1) + ")");
    job.backend = device::make_backend("cuda", 0, job.gpu);
    return;
#else
    throw UsageError("--backend cuda: this mics-train was built without CUDA (MICS_ENABLE_CUDA=OFF); use --backend cpu");
#endif
  }
  if (o.backend == "emulated") {
    job.backend = device::make_emulated_backend(o.emulated_tflops, o.emulated_mem_gbps);
    return;
  }
  // Ranks sharing CPUs each take their share of the affinity mask (tools.hpp), so that
  // oversubscribed OpenMP teams do not spin against each other. Collective: every rank
  // takes this path, since all read the same options.
  const CpuThreads cpu = cpu_threads_per_rank(o.threads);
  job.say("mics-train: " + cpu.note);
  job.backend = device::make_backend("cpu", cpu.threads);
}

std::unique_ptr<comm::Collectives> make_collectives(const RunOptions& o, device::Backend& be, int gpu) {
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

// A rank without the validation file would skip evaluation while the others enter its
// collectives: every rank must have it, or none. Runs after the data stage's agreement,
// never inside it (a rank that failed to open its data would skip this collective).
void agree_on_validation_data(Job& job) {
  const unsigned has_val = agree_flags(MPI_COMM_WORLD, job.data.val ? 1u : 0u, "agreeing on validation data");
  std::string problem;
  if (has_val && !job.data.val)
    problem = "--data " + job.opt.data + ": no validation file (" + job.opt.data +
              "_val.bin) on this rank, while other ranks have one; make the same files visible to every rank";
  agree(MPI_COMM_WORLD, problem);
}

// This rank's memory for --partition-size auto: the flag, the device's, or the host's share.
std::size_t rank_memory(const Job& job) {
  std::size_t memory = static_cast<std::size_t>(job.opt.train.memory_per_rank_gib * 1024.0 * 1024.0 * 1024.0);
  if (memory == 0) memory = job.backend->memory_capacity();
  if (memory == 0 && job.backend->is_host_memory())
    memory = static_cast<std::size_t>(sysconf(_SC_PHYS_PAGES)) * static_cast<std::size_t>(sysconf(_SC_PAGE_SIZE)) /
             static_cast<std::size_t>(job.host.local_size);
  if (test_seams().memory) memory = test_seams().memory(job.rank, memory);
  return memory;
}

// Rank-local part of the layout stage: this rank's memory.
std::size_t local_layout_inputs(const Job& job) { return job.opt.partition_auto ? rank_memory(job) : 0; }

// auto follows the smallest memory of any rank, so that every rank picks the same p.
std::size_t least_memory(std::size_t mine) {
  unsigned long long m = mine, least = 0;
  const watchdog::Scope scope("agreeing on the memory per rank");
  MICS_CHECK_MPI(MPI_Allreduce(&m, &least, 1, MPI_UNSIGNED_LONG_LONG, MPI_MIN, MPI_COMM_WORLD));
  return static_cast<std::size_t>(least);
}

// Pure arithmetic on inputs every rank shares.
void resolve_the_layout(Job& job, std::size_t least) {
  const RunOptions& o = job.opt;
  const engine::TrainConfig& tc = o.train;
  int g = tc.ranks_per_node;
  if (g == 0) {
    if (job.host.ranks_per_node == 0) throw UsageError(job.host.problem);
    g = job.host.ranks_per_node;
  }
  layout::LayoutInputs in;
  in.world_size = job.world;
  in.ranks_per_node = g;
  in.strategy = engine::to_string(tc.strategy);
  in.strategy_partition = tc.strategy == engine::Strategy::mics ? 0 : engine::partition_size_for(tc.strategy, 0, job.world);
  in.requested_partition = tc.partition_size;
  in.partition_auto = o.partition_auto;
  in.hierarchical = tc.hierarchical;
  in.hierarchical_all_reduce = tc.hierarchical_all_reduce;
  in.min_memory_bytes = least;
  job.layout = layout::resolve_layout(in, [&](int W, int gn, std::size_t memory) {
    return engine::auto_partition_size(o.model, W, gn, o.compute, memory);
  });
  // The engine reads its layout from the resolved value only.
  job.opt.train.partition_size = job.layout->partition_size();
  job.opt.train.ranks_per_node = job.layout->ranks_per_node();
}

void make_engine(Job& job) {
  const RunOptions& o = job.opt;
  try {
    job.engine = std::make_unique<engine::Engine>(o.model, o.train, *job.backend, *job.collectives, *job.groups,
                                                  o.compute, o.grad_reduce, device::DType::f32,
                                                  /*defer_collectives=*/true);
  } catch (const std::bad_alloc&) {
    throw Error("out of host memory while allocating the model (" + o.model.name +
                "); use a larger --partition-size, a smaller --micro-batch or a smaller model");
  }
}

}  // namespace

std::unique_ptr<Job> set_up(const RunOptions& options) {
  auto job = std::make_unique<Job>();
  Job& j = *job;
  j.opt = options;
  MPI_Comm_rank(MPI_COMM_WORLD, &j.rank);
  MPI_Comm_size(MPI_COMM_WORLD, &j.world);
  watchdog::set_timeout(options.comm_timeout_s);

  run_stage([&] { engine::accumulation_steps(j.opt.train, j.world); });
  j.host = comm::discover_host_topology(MPI_COMM_WORLD);  // collective; its verdict is shared
  run_stage([&] { make_backend(j); });
  run_stage([&] { check_model_size(j.opt, j.world, *j.backend); });  // before anything sized by it
  run_stage([&] { j.collectives = make_collectives(j.opt, *j.backend, j.gpu); });
  run_stage([&] { j.data = data::open_data(j.opt.data, static_cast<int>(j.opt.model.vocab)); });
  agree_on_validation_data(j);
  std::size_t memory = 0;
  run_stage([&] { memory = local_layout_inputs(j); });
  const std::size_t least = least_memory(memory);
  run_stage([&] { resolve_the_layout(j, least); });
  run_stage([&] { stage_checkpoints(j); });  // resume path, seed, folder ownership
  run_stage([&] { j.groups.emplace(comm::make_process_groups(MPI_COMM_WORLD, j.layout->plan())); });
  // Allocating can fail on some ranks only; every rank agrees before the engine's first
  // collective (refresh_compute_copies is one for zero2).
  run_stage([&] { make_engine(j); });
  j.engine->refresh_compute_copies();
  j.bridge = std::make_unique<CheckpointBridge>(*j.engine, *j.backend, *j.groups);
  if (!j.resume_path.empty()) load_resumed_state(j);
  run_stage([&] { open_metrics(j); });
  return job;
}

// ---- CheckpointBridge --------------------------------------------------------------------

checkpoint::ShardState CheckpointBridge::state() {
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

void CheckpointBridge::to_device() {
  move(false);
  engine_.refresh_compute_copies();
}

void CheckpointBridge::move(bool down) {
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

}  // namespace mics::train
