#pragma once
// The end-of-run summary, from plain numbers (no engine types).
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "mics/report/step_log.hpp"

namespace mics::report {

struct GroupTraffic {
  std::string group;
  int size = 0;                   // ranks in the group (0: unknown)
  std::uint64_t bytes = 0;        // bytes this rank handed to the transport on it, whole run
  double ms = 0.0;                // busy time (union of its collectives' intervals), whole run
  double exposed_ms = 0.0;        // time compute was blocked waiting for them, whole run
  std::uint64_t calls = 0;        // collectives completed on it (0: unknown, or none)
};

struct RunSummary {
  std::int64_t steps = 0;
  std::int64_t timed_steps = 0;   // steps the means are over
  double mean_step_ms = 0.0;
  double mean_tokens_per_s = 0.0;
  double mean_tflops_per_rank = 0.0;
  std::optional<double> mean_mfu;
  double mean_exposed_comm_ms = 0.0;
  std::optional<double> final_loss;
  bool values_computed = true;            // false under the emulated backend
  std::optional<double> final_val_loss;
  std::uint64_t model_state_bytes_per_rank = 0;  // 0: not reported
  std::uint64_t peak_bytes_per_rank = 0;         // 0: not reported
  std::vector<GroupTraffic> groups;
  std::string flops_formula;      // printed so the reader knows what "TFLOPS" counts
};

// Collects StepRecords into a RunSummary. Means leave out the first step (warm-up:
// allocation, first gathers, caches) when there are two or more; totals per group
// include every step. Fields the records do not carry (memory, group sizes, formula)
// are filled by the caller on the returned summary.
class SummaryAccumulator {
public:
  void add(const StepRecord& r);
  RunSummary summary() const;

private:
  std::vector<StepRecord> steps_;
};

// Several lines, each "name: value", ending in a newline. Groups of one rank, and groups
// that carried nothing (no calls, bytes or time), are left out.
std::string format_summary(const RunSummary& s);

// Binary units with three significant digits: "512 B", "1.50 KiB", "3.25 GiB".
std::string format_bytes(std::uint64_t bytes);

}  // namespace mics::report
