#pragma once
// The training loop: one optimizer step at a time, then the hooks in the order they were
// added (evaluation, step line, metrics, checkpoints: see hooks.hpp), then the step
// boundary, where the ranks agree on stop signals and the run may stop. Hooks run on
// every rank and may be collective; each decides for itself whether this step concerns it.
#include <functional>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "mics/engine/engine.hpp"
#include "mics/report/step_log.hpp"
#include "mics/report/summary.hpp"
#include "mics/train/setup.hpp"

namespace mics::train {

// What the hooks see of the run so far.
struct RunState {
  std::string last_checkpoint;   // the newest good checkpoint ("" when none)
  int last_saved_step = -1;
  int bad_in_a_row = 0;          // consecutive skipped (non-finite) steps
  int skipped_total = 0;
  bool last_step = false;        // the step just taken is the run's last
};

class Trainer {
public:
  using Hook = std::function<void(const engine::StepResult&, report::StepRecord&, RunState&)>;
  explicit Trainer(Job& job);
  void add_hook(std::string name, Hook hook) { hooks_.emplace_back(std::move(name), std::move(hook)); }
  // Runs to --steps, or to an agreed stop. Returns the exit code: 0, or kStoppedExitCode.
  int run();
  const RunState& state() const { return state_; }
  report::SummaryAccumulator& summary() { return summary_; }
  const std::vector<report::GroupTraffic>& traffic() const { return traffic_; }

private:
  report::StepRecord record(const engine::StepResult& r);
  void book_group_traffic(const engine::StepResult& r, report::StepRecord& rec);
  void guard_bad_steps(const engine::StepResult& r);
  int stop(unsigned signals);

  Job& job_;
  RunState state_;
  std::vector<std::pair<std::string, Hook>> hooks_;
  double step_flops_ = 0;
  std::optional<double> peak_;
  report::SummaryAccumulator summary_;
  std::vector<comm::GroupCounters> before_;
  std::vector<report::GroupTraffic> traffic_;
};

}  // namespace mics::train
