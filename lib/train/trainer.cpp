#include "mics/train/trainer.hpp"

#include <cstdio>

#include "mics/core/agree.hpp"
#include "mics/core/error.hpp"
#include "mics/model/layout.hpp"
#include "mics/train/staging.hpp"
#include "mics/train/stop_signal.hpp"

namespace mics::train {

Trainer::Trainer(Job& job) : job_(job) {
  state_.last_checkpoint = job.resume_path;
  step_flops_ = model::training_flops(job.opt.model, job.opt.train.global_batch, false);
  if (job.opt.peak_tflops > 0) peak_ = job.opt.peak_tflops;
  else if (job.backend->peak_flops(job.opt.compute) > 0) peak_ = job.backend->peak_flops(job.opt.compute) / 1e12;
  for (comm::Group* gr : job.groups->groups()) traffic_.push_back({gr->name(), gr->size(), 0, 0.0, 0.0, 0});
}

report::StepRecord Trainer::record(const engine::StepResult& r) {
  report::StepRecord rec;
  rec.step = r.step;
  rec.loss = r.loss;
  rec.values_computed = job_.backend->computes_values();
  rec.lr = r.lr;
  rec.grad_norm = r.grad_norm;
  rec.step_ms = r.seconds * 1e3;
  rec.tokens_per_s = static_cast<double>(r.tokens) / r.seconds;
  rec.tflops_per_rank = step_flops_ / (job_.world * r.seconds * 1e12);
  if (peak_) rec.mfu = rec.tflops_per_rank / *peak_;
  rec.exposed_comm_ms = r.exposed.total() * 1e3;
  rec.skipped = r.skipped;
  return rec;
}

// Each group's bytes and time during this step, from its counters.
void Trainer::book_group_traffic(report::StepRecord& rec) {
  std::size_t i = 0;
  for (comm::Group* gr : job_.groups->groups()) {
    const auto& now = gr->counters();
    report::GroupComm gc;
    gc.group = gr->name();
    gc.ms = (now.seconds - before_[i].seconds) * 1e3;  // busy time, from the counters
    gc.bytes = now.bytes - before_[i].bytes;           // handed to the transport
    gc.exposed_ms = (now.exposed_seconds - before_[i].exposed_seconds) * 1e3;
    traffic_[i].calls += now.calls - before_[i].calls;
    traffic_[i].bytes += gc.bytes;
    traffic_[i].ms += gc.ms;
    traffic_[i].exposed_ms += gc.exposed_ms;
    rec.comm.push_back(gc);
    ++i;
  }
}

// The engine agreed on the verdict, so every rank counts the same and stops together.
void Trainer::guard_bad_steps(const engine::StepResult& r) {
  if (!r.skipped) {
    state_.bad_in_a_row = 0;
    return;
  }
  ++state_.bad_in_a_row;
  ++state_.skipped_total;
  if (state_.bad_in_a_row < job_.opt.max_bad_steps) return;
  const std::string where = state_.last_checkpoint.empty()
                                ? std::string("no checkpoint was written; start again with a smaller --lr")
                                : "the last good checkpoint is " + state_.last_checkpoint +
                                      "; resume from it with a smaller --lr";
  agree(MPI_COMM_WORLD, std::to_string(state_.bad_in_a_row) + " steps in a row (to step " + std::to_string(r.step) +
                            ") had a non-finite loss or gradient norm and were skipped (--max-bad-steps " +
                            std::to_string(job_.opt.max_bad_steps) + "); " + where);
}

int Trainer::stop(unsigned signals) {
  const std::string name = stop_signal_name(signals);
  const int step = job_.engine->step();
  std::string line = "mics-train: stopped by " + name + " at step " + std::to_string(step) + "; ";
  if (job_.opt.checkpoint_dir.empty()) {
    line += "nothing was saved (no --checkpoint-dir)";
  } else if (state_.last_saved_step == step || (step == job_.resumed_step && !job_.resume_path.empty())) {
    line += "saved " + state_.last_checkpoint + "; resume with --resume latest";
  } else {
    const Saved s = save_checkpoint(job_);
    line += "saved " + s.path + "; resume with --resume latest";
  }
  job_.say(line);
  return kStoppedExitCode;
}

int Trainer::run() {
  engine::Engine& eng = *job_.engine;
  const int steps = job_.opt.train.steps;
  while (eng.step() < steps) {
    // The step boundary: one small agreement, so that a signal seen by any rank stops all.
    const unsigned signals = agree_flags(MPI_COMM_WORLD, StopSignals::pending(), "agreeing on stop signals");
    if (signals != 0) return stop(signals);
    before_.clear();
    for (comm::Group* gr : job_.groups->groups()) before_.push_back(gr->counters());
    const engine::StepResult r = eng.train_step(*job_.data.train);
    report::StepRecord rec = record(r);
    book_group_traffic(rec);
    state_.last_step = eng.step() == steps;
    for (auto& [name, hook] : hooks_) hook(r, rec, state_);
    summary_.add(rec);
    guard_bad_steps(r);
  }
  return 0;
}

}  // namespace mics::train
