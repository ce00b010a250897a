#pragma once
// mics-train's set-up, as explicit stages run in this order:
//   options -> host topology -> backend -> collectives -> data -> layout -> engine ->
//   checkpoint staging (resume, folder ownership) -> metrics
// Each stage runs on every rank and ends in mics::agree over the world: whatever one rank
// throws inside a stage (a missing node-local file, a full device, a bad option) becomes
// the same one-line error on every rank, naming the rank and host when only some failed,
// and no rank starts the next stage's collectives alone.
#include <cstddef>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "mics/checkpoint/checkpoint.hpp"
#include "mics/comm/collectives.hpp"
#include "mics/comm/process_groups.hpp"
#include "mics/data/dataset.hpp"
#include "mics/device/backend.hpp"
#include "mics/engine/engine.hpp"
#include "mics/layout/resolved.hpp"
#include "mics/report/metrics_writer.hpp"
#include "mics/train/options.hpp"

namespace mics::train {

// Seams that tests own (test/train/mics_train_faults.cpp sets them; mics-train never
// does). Empty functions mean "no fault".
struct TestSeams {
  // Given this rank's real memory for --partition-size auto, the value to use instead.
  std::function<std::size_t(int world_rank, std::size_t real)> memory;
};
TestSeams& test_seams();

// Runs body on every rank and agrees on its outcome: any exception on any rank becomes the
// same mics::AgreedError on all of them (naming the rank and host when only some failed).
// A body must not start a collective after something that can fail on some ranks only
// (the ranks that failed would skip it): put such a collective between two stages.
void run_stage(const std::function<void()>& body);

// The engine's shards as the checkpoint library wants them: host spans. On a GPU backend
// they are staged through host copies.
class CheckpointBridge {
public:
  CheckpointBridge(engine::Engine& e, device::Backend& be, comm::ProcessGroups& g)
      : engine_(e), be_(be), groups_(g) {}
  checkpoint::ShardState state();
  void to_host() { move(true); }
  void to_device();

private:
  void move(bool down);
  engine::Engine& engine_;
  device::Backend& be_;
  comm::ProcessGroups& groups_;
  std::vector<std::vector<float>> staging_;
};

// Everything a run needs, built by set_up. Members are destroyed in reverse order:
// the engine before the collectives and groups it uses.
struct Job {
  RunOptions opt;                           // the options, with the resumed seed applied
  int rank = 0, world = 1;
  comm::HostTopology host;
  int gpu = -1;
  std::unique_ptr<device::Backend> backend;
  std::unique_ptr<comm::Collectives> collectives;
  data::DataSource data;
  std::optional<layout::ResolvedLayout> layout;  // the one resolved layout
  std::optional<comm::ProcessGroups> groups;
  std::unique_ptr<engine::Engine> engine;
  std::unique_ptr<CheckpointBridge> bridge;
  std::string run_id;                       // owner of the checkpoint folder's files
  std::string resume_path;                  // "" for a fresh run
  std::int64_t resumed_step = -1;
  std::unique_ptr<report::MetricsWriter> metrics;  // rank 0 only
  bool lead() const { return rank == 0; }
  void say(const std::string& line) const;  // rank 0 prints a line to stdout
};

// Runs every stage; throws mics::AgreedError (on every rank alike) when one fails.
std::unique_ptr<Job> set_up(const RunOptions& options);

// The model config as stored in checkpoints (key = value lines).
std::string preset_text(const model::ModelConfig& c);

}  // namespace mics::train
