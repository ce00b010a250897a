#pragma once
// One optimizer step as the log and the metrics files see it, and rank 0's step line.
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace mics::report {

// One communication group's traffic during one step, as measured on this rank.
struct GroupComm {
  std::string group;          // "partition", "replication", "inter", "intra", "world", ...
  double ms = 0.0;            // busy time: union of the intervals with one of its
                              // collectives in flight (overlapping ones count once)
  double exposed_ms = 0.0;    // time the caller (compute) was blocked waiting for them
  std::uint64_t bytes = 0;    // bytes this rank handed to the transport on this group
};

struct StepRecord {
  std::int64_t step = 0;             // 1-based optimizer step
  double loss = 0.0;                 // mean training loss over the global batch
  std::optional<double> val_loss;    // on steps that evaluate
  double lr = 0.0;
  double grad_norm = 0.0;            // global norm before clipping
  double step_ms = 0.0;
  double tokens_per_s = 0.0;         // global batch tokens / step time (whole job)
  double tflops_per_rank = 0.0;      // model TFLOPS per rank (model::training_flops)
  std::optional<double> mfu;         // fraction of the device peak, when the peak is known
  double exposed_comm_ms = 0.0;      // communication time compute waited for, all groups
  std::vector<GroupComm> comm;       // per group, in a fixed order across steps
  bool skipped = false;              // non-finite loss or norm: no update was made
  // False under the emulated backend (a compute model): loss, val loss and norm were not
  // computed, and the step line and metrics say so instead of printing them.
  bool values_computed = true;
};

// Rank 0's line for one step, e.g.
//   step   12/100 | loss 5.4321 | lr 3.00e-04 | norm 1.234 | 123.4 ms | 12345 tok/s |
//   0.0123 TFLOPS/rank | MFU 12.3% | exposed comm 1.2 ms | ETA 1 min 05 s
// (one line). total_steps <= 0 leaves out "/total"; MFU, val loss and ETA appear only
// when given. Non-finite values print as nan/inf so a diverging run is visible.
std::string format_step_line(const StepRecord& r, std::int64_t total_steps,
                             std::optional<double> eta_s = std::nullopt);

// "45 s", "3 min 05 s", "2 h 03 min", "3 d 04 h".
std::string format_duration(double seconds);

// Projects the time left from the mean duration of the steps so far, leaving out the
// first (it carries one-off costs) once there are two or more; after one step, from that
// step alone, so that the first logged line has an ETA. None after the last step.
class EtaEstimator {
public:
  explicit EtaEstimator(std::int64_t total_steps);
  // Records one finished step and returns the seconds left, or nullopt (see above).
  std::optional<double> update(double step_ms);

private:
  std::int64_t total_;
  std::int64_t done_ = 0;
  double first_ms_ = 0.0;
  double rest_ms_ = 0.0;  // sum over steps 2..done
};

}  // namespace mics::report
