#include "mics/train/hooks.hpp"

#include <algorithm>
#include <cstdio>
#include <memory>

#include "mics/train/staging.hpp"

namespace mics::train {

Trainer::Hook evaluation_hook(Job& job) {
  const RunOptions& o = job.opt;
  const std::int64_t batches =
      job.data.val ? std::min<std::int64_t>(o.eval_batches,
                                            data::max_eval_batches(*job.data.val, o.train.global_batch,
                                                                   static_cast<int>(o.model.seq)))
                   : 0;
  return [&job, batches](const engine::StepResult& r, report::StepRecord& rec, RunState& st) {
    const int every = job.opt.eval_every;
    if (batches > 0 && ((every > 0 && r.step % every == 0) || st.last_step))
      rec.val_loss = job.engine->evaluate(*job.data.val, batches);
  };
}

Trainer::Hook log_hook(Job& job) {
  auto eta = std::make_shared<report::EtaEstimator>(job.opt.train.steps - job.engine->step());
  return [&job, eta](const engine::StepResult& r, report::StepRecord& rec, RunState& st) {
    const auto eta_s = eta->update(rec.step_ms);
    if (job.lead() && (r.step % job.opt.log_every == 0 || st.last_step || r.step == 1 || r.skipped)) {
      std::printf("%s\n", report::format_step_line(rec, job.opt.train.steps, eta_s).c_str());
      std::fflush(stdout);
    }
  };
}

Trainer::Hook metrics_hook(Job& job) {
  return [&job](const engine::StepResult&, report::StepRecord& rec, RunState&) {
    if (job.metrics) job.metrics->write(rec);
  };
}

Trainer::Hook checkpoint_hook(Job& job) {
  return [&job](const engine::StepResult& r, report::StepRecord&, RunState& st) {
    const RunOptions& o = job.opt;
    if (o.checkpoint_dir.empty() || r.skipped) return;
    if (!((o.checkpoint_every > 0 && r.step % o.checkpoint_every == 0) || st.last_step)) return;
    const Saved s = save_checkpoint(job);
    st.last_checkpoint = s.path;
    st.last_saved_step = r.step;
    job.say("mics-train: saved " + s.path);
    for (const auto& gone : s.removed) job.say("mics-train: --keep-last " + std::to_string(o.keep_last) + ": removed " + gone);
  };
}

}  // namespace mics::train
