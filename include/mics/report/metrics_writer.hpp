#pragma once
// Per-step metrics files: CSV with a header (one row per step) and an optional JSON-lines
// twin with the same fields. Each row is flushed as it is written, so a run that is
// killed keeps every row it finished. Only one rank (rank 0) should own a writer.
//
// CSV columns, in order:
//   step, loss, val_loss, lr, grad_norm, step_ms, tokens_per_s, tflops_per_rank, mfu,
//   exposed_comm_ms, then per communication group G (in the order given at construction)
//   G_comm_ms, G_exposed_ms, G_bytes, then the layout: W, g, p, strategy, hierarchical,
//   grad_sync (the same on every row, so files from several runs can be concatenated),
//   then skipped (1 when the step's update was skipped for a non-finite loss or norm).
// Absent optional values (val_loss, mfu) are empty cells in CSV and null in JSON; non-
// finite numbers are nan/inf in CSV and null in JSON (JSON has no NaN).
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "mics/report/step_log.hpp"

namespace mics::report {

struct RunLayout {
  int world_size = 1;          // W
  int ranks_per_node = 1;      // g
  int partition_size = 1;      // p
  std::string strategy;        // "ddp", "zero2", "zero3", "mics"
  bool hierarchical = false;
  std::string grad_sync;       // "two-hop", "every-micro-step"
};

class MetricsWriter {
public:
  // Creates (truncates) csv_path and, when jsonl_path is not empty, jsonl_path, and
  // writes the CSV header; with append, adds to the files instead (the header only when
  // the CSV is empty), for a resumed run. Every StepRecord written must list exactly
  // comm_groups, in this order. Throws mics::UsageError naming a file that cannot be written.
  MetricsWriter(const std::string& csv_path, RunLayout layout,
                std::vector<std::string> comm_groups = {}, const std::string& jsonl_path = "",
                bool append = false);
  void write(const StepRecord& r);

  static std::vector<std::string> columns(const std::vector<std::string>& comm_groups);

private:
  struct Close {
    void operator()(std::FILE* f) const noexcept { std::fclose(f); }
  };
  std::string csv_path_, jsonl_path_;
  RunLayout layout_;
  std::vector<std::string> groups_;
  std::unique_ptr<std::FILE, Close> csv_, jsonl_;
};

// The JSON-lines twin's default name: "run.csv" -> "run.jsonl", anything else -> "+.jsonl".
std::string default_jsonl_path(const std::string& csv_path);

}  // namespace mics::report
