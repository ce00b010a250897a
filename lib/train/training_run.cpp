// mics-train's run: set-up in agreed stages (setup.cpp), the banner, the trainer loop
// with its hooks (trainer.cpp, hooks.cpp) and the summary.
#include "mics/train/training_run.hpp"

#include <cstdio>
#include <cstdlib>
#include <sstream>

#include "mics/comm/mpi_collectives.hpp"
#include "mics/core/mpi_env.hpp"
#include "mics/model/layout.hpp"
#include "mics/report/summary.hpp"
#include "mics/train/hooks.hpp"
#include "mics/train/setup.hpp"
#include "mics/train/stop_signal.hpp"
#include "mics/train/tools.hpp"
#include "mics/train/trainer.hpp"

namespace mics::train {
namespace {

// What the replication group's all-reduce (hop 2; all of ddp's gradient traffic) runs
// for gradient buckets, which are far above the small-message limit: the MPI backend's
// algorithm for a large message on that group, or NCCL's own choice.
std::string hop2_note(const Job& job) {
  const comm::Group& g = job.groups->replication();
  if (g.size() == 1) return "none (one replica)";
  if (std::string(job.collectives->backend()) != "mpi") return "by " + std::string(job.collectives->backend());
  std::string out = comm::MpiCollectives::all_reduce_algorithm(std::size_t{1} << 24, comm::DType::f32, g);
  if (g.hierarchical_all_reduce())
    out += " (" + std::to_string(g.node_count()) + " nodes x " + std::to_string(g.members_per_node()) + " ranks)";
  else if (!job.layout->plan().hierarchical_all_reduce())
    out += " (--hierarchical-all-reduce false)";
  return out;
}

// What bf16 compute on the CPU multiplies with here, and a note where f32 is faster.
std::string bf16_gemm_note() {
  const std::string path = device::cpu_bf16_gemm_path();
  const std::string rest = " (f32 sums); other kernels in f32, outputs rounded to bf16";
  if (path == "amx") return "mics-train: bf16 GEMMs on AMX tiles" + rest;
  if (path == "avx512-bf16") return "mics-train: bf16 GEMMs on AVX-512 BF16 dot products" + rest;
  const char* cap = std::getenv("MICS_BF16_GEMM");
  const std::string why = cap != nullptr && *cap != '\0'
                              ? std::string("MICS_BF16_GEMM=") + cap + " asks for it"
                              : "this CPU has neither AMX nor AVX-512 BF16 usable";
  return "mics-train: note: bf16 GEMMs run through portable loops (" + why +
         "), several times slower than f32 ones: --compute-dtype f32 trains faster here";
}

void print_banner(const Job& job) {
  const RunOptions& opt = job.opt;
  const engine::TrainConfig& tc = opt.train;
  const layout::ResolvedLayout& l = *job.layout;
  const layout::Plan& plan = l.plan();
  std::ostringstream os;
  os << "mics-train: " << opt.model.name << " (" << model::variant_name(opt.model.variant) << ", "
     << model::parameter_count(opt.model) << " parameters, " << opt.model.layers << " layers, hidden "
     << opt.model.hidden << ", seq " << opt.model.seq << ") on " << job.world << " ranks ("
     << plan.node_count() << " nodes of " << plan.ranks_per_node() << "), strategy " << l.strategy()
     << ", p=" << l.partition_size() << (l.partition_auto() ? " (auto)" : "") << ", replication "
     << plan.replication_size() << ", hierarchical "
     << hierarchical_note(tc.hierarchical, l.hierarchical(), l.partition_size(), plan.ranks_per_node())
     << ", grad-sync "
     << engine::to_string(tc.grad_sync) << ", backend " << job.backend->name() << " "
     << device::dtype_name(opt.compute) << ", comm " << job.collectives->backend()
     << ", replication all-reduce " << hop2_note(job);
  job.say(os.str());
  if (opt.backend == "cpu" && opt.compute == device::DType::bf16) job.say(bf16_gemm_note());
  if (opt.backend == "cpu" && opt.compute != device::DType::bf16)
    job.say(std::string("mics-train: ") + device::dtype_name(opt.compute) + " GEMMs by " +
            device::cpu_blas_kernels());
  if (l.partition_auto()) job.say("mics-train: layout " + l.describe());
  std::ostringstream b;
  b << "mics-train: global batch " << tc.global_batch << " = " << job.world << " ranks x " << tc.micro_batch
    << " sequences x " << job.engine->accumulation() << " micro-steps; data " << opt.data
    << "; model TFLOPS = (72*B*s*l*h^2*(1 + s/(6h)) + 6*B*s*h*V) per step / (ranks x step time)"
    << (tc.recompute ? "; activation recomputation ON (the hardware also reruns each block's forward: 96 for 72)"
                     : "; activation recomputation off");
  job.say(b.str());
}

void print_summary(Job& job, Trainer& trainer) {
  report::RunSummary s = trainer.summary().summary();
  s.model_state_bytes_per_rank = job.engine->model_state_bytes();
  s.peak_bytes_per_rank = job.backend->peak_bytes_in_use();
  s.groups = trainer.traffic();
  s.flops_formula = std::string("model FLOPs 72*B*s*l*h^2*(1 + s/(6h)) + 6*B*s*h*V per step (Narayanan et al. 2021)") +
                    (job.opt.train.recompute ? ", recomputation on" : ", recomputation off");
  if (job.lead() && s.steps > 0) std::printf("%s", report::format_summary(s).c_str()), std::fflush(stdout);
  if (trainer.state().skipped_total > 0)
    job.say("mics-train: " + std::to_string(trainer.state().skipped_total) +
            " steps were skipped for a non-finite loss or gradient norm");
}

}  // namespace

int run_training(const RunOptions& o) {
  const StopSignals signals;  // from here on a signal stops the run at a step boundary
  std::unique_ptr<Job> job = set_up(o);
  print_banner(*job);
  const engine::TrainConfig& tc = job->opt.train;
  if (job->opt.eval_only)
    return run_eval_only(job->opt, *job->engine, job->data, job->resume_path, job->world);
  if (!job->resume_path.empty() && job->engine->step() >= tc.steps)
    return nothing_to_do(job->resume_path, job->engine->step(), tc.steps);

  TrainingSampler sampler(job->opt, *job->engine, *job->backend, job->lead());
  Trainer trainer(*job);
  trainer.add_hook("evaluation", evaluation_hook(*job));
  trainer.add_hook("log", log_hook(*job));
  trainer.add_hook("metrics", metrics_hook(*job));
  trainer.add_hook("sample", [&sampler](const engine::StepResult& r, report::StepRecord&, RunState&) {
    sampler.after_step(r.step);
  });
  trainer.add_hook("checkpoint", checkpoint_hook(*job));
  const int code = trainer.run();
  if (code == 0) print_summary(*job, trainer);
  return code;
}

int train_main(int argc, char** argv) {
  return run_mpi_program("mics-train", argc, argv, [](int ac, char** av) {
    RunOptions options;
    std::string help;
    if (!parse_options(ac, av, options, help)) {
      int rank = 0;
      MPI_Comm_rank(MPI_COMM_WORLD, &rank);
      if (rank == 0) std::printf("%s", help.c_str());
      return 0;
    }
    return run_training(options);
  });
}

}  // namespace mics::train
