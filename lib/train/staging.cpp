#include "mics/train/staging.hpp"

#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <sstream>

#include "mics/core/agree.hpp"
#include "mics/core/error.hpp"

namespace fs = std::filesystem;

namespace mics::train {
namespace {

std::map<std::string, std::string> key_values(const std::string& text) {
  std::map<std::string, std::string> kv;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    const auto eq = line.find('=');
    if (eq == std::string::npos) continue;
    auto trim = [](std::string s) {
      const auto a = s.find_first_not_of(" \t"), b = s.find_last_not_of(" \t\r");
      return a == std::string::npos ? std::string() : s.substr(a, b - a + 1);
    };
    kv[trim(line.substr(0, eq))] = trim(line.substr(eq + 1));
  }
  return kv;
}

std::string new_run_id() {
  std::random_device rd;
  const auto now = std::chrono::system_clock::now().time_since_epoch().count();
  char buf[40];
  std::snprintf(buf, sizeof buf, "%08x%08x", static_cast<unsigned>(now & 0xffffffffu) ^ rd(), rd());
  return buf;
}

void bcast(std::string& s) {
  int len = static_cast<int>(s.size());
  MPI_Bcast(&len, 1, MPI_INT, 0, MPI_COMM_WORLD);
  s.resize(static_cast<std::size_t>(len));
  MPI_Bcast(s.data(), len, MPI_CHAR, 0, MPI_COMM_WORLD);
}

void resolve_resume(Job& job) {
  RunOptions& o = job.opt;
  try {
    job.resume_path = checkpoint::resolve(MPI_COMM_WORLD, o.resume, o.checkpoint_dir);
    const checkpoint::Info info = checkpoint::info(MPI_COMM_WORLD, job.resume_path);
    if (!info.meta.rng_state.empty()) o.train.seed = info.meta.rng_state.front();
    job.resumed_step = info.meta.step;
    const auto it = info.meta.strings.find("run_id");
    job.run_id = it == info.meta.strings.end() ? std::string() : it->second;
    const std::string diff = model_difference(info.meta.model_config, preset_text(o.model));
    if (!diff.empty())
      throw UsageError(job.resume_path + " holds another model (" + diff +
                       "); resume with the model that wrote it, or start a fresh run");
  } catch (const Error& e) {
    // The checkpoint library names the file only; say which option it came from.
    throw UsageError(std::string("--resume: ") + e.what());
  }
}

// Rank 0: "" when the folder may be used by this run, else the reason.
std::string folder_problem(const Job& job) {
  const RunOptions& o = job.opt;
  std::error_code ec;
  fs::create_directories(o.checkpoint_dir, ec);
  if (ec || ::access(o.checkpoint_dir.c_str(), W_OK) != 0)
    return "--checkpoint-dir " + o.checkpoint_dir + ": cannot create or write it (" +
           (ec ? ec.message() : std::string("not writable")) + "); choose a writable directory";
  const checkpoint::FolderContents f = checkpoint::list_folder(o.checkpoint_dir);
  std::string foreign;  // one checkpoint of another run
  for (const auto& c : f.checkpoints)
    if (job.run_id.empty() || c.run_id != job.run_id) foreign = c.file;
  if (foreign.empty() || o.overwrite_checkpoints) return "";
  if (!job.resume_path.empty() && job.run_id.empty()) return "";  // an old checkpoint without an id
  return "--checkpoint-dir " + o.checkpoint_dir + " holds checkpoints of another run (" + foreign +
         (job.resume_path.empty() ? "" : ", not of the run being resumed") +
         "); resume that run with --resume latest, choose another folder, or pass "
         "--overwrite-checkpoints to remove them";
}

// --overwrite-checkpoints: other runs' checkpoints go, each one named (rank 0).
void take_over_folder(const Job& job) {
  const std::string& dir = job.opt.checkpoint_dir;
  for (const auto& c : checkpoint::list_folder(dir).checkpoints)
    if (c.run_id != job.run_id && fs::path(dir) / c.file != fs::path(job.resume_path)) {
      fs::remove(fs::path(dir) / c.file);
      job.say("mics-train: --overwrite-checkpoints: removed " + dir + "/" + c.file + " (run " +
              (c.run_id.empty() ? std::string("without an id") : c.run_id) + ")");
    }
}

}  // namespace

std::string model_difference(const std::string& stored, const std::string& now) {
  const auto a = key_values(stored), b = key_values(now);
  std::string out;
  for (const char* key : {"variant", "layers", "hidden", "heads", "seq", "vocab"}) {
    const auto x = a.find(key), y = b.find(key);
    const std::string sx = x == a.end() ? "?" : x->second, sy = y == b.end() ? "?" : y->second;
    if (sx != sy) out += (out.empty() ? "" : ", ") + std::string(key) + " " + sx + " in the checkpoint, " + sy + " now";
  }
  return out;
}

void stage_checkpoints(Job& job) {
  if (!job.opt.resume.empty()) resolve_resume(job);
  if (job.run_id.empty()) job.run_id = new_run_id();
  bcast(job.run_id);  // rank 0's draw, or the checkpoint's id (the same everywhere)
  // --eval-only reads its checkpoint and leaves the folder as it is.
  if (job.opt.checkpoint_dir.empty() || job.opt.eval_only) return;
  // Rank 0 looks at the folder for everyone; whatever it finds (or throws) is agreed.
  std::string problem;
  if (job.lead()) try {
      problem = folder_problem(job);
      if (problem.empty() && job.opt.overwrite_checkpoints) take_over_folder(job);
    } catch (const std::exception& e) {
      problem = "--checkpoint-dir " + job.opt.checkpoint_dir + ": " + e.what();
    }
  agree_with_root(MPI_COMM_WORLD, problem);
}

void load_resumed_state(Job& job) {
  const checkpoint::Metadata meta = checkpoint::load(job.resume_path, job.bridge->state());
  job.bridge->to_device();
  job.engine->set_step(static_cast<int>(meta.step));
  job.say("mics-train: resumed from " + job.resume_path + " at step " + std::to_string(meta.step) +
          " (written by " + std::to_string(meta.layout.world_size) + " ranks, " + meta.layout.strategy +
          " p=" + std::to_string(meta.layout.partition_size) + "; run " + job.run_id + ")");
}

int truncate_metrics_rows(const std::string& path, std::int64_t step, bool json) {
  std::ifstream in(path);
  if (!in) return 0;
  std::vector<std::string> keep;
  std::string line;
  int dropped = 0;
  bool first = true;
  while (std::getline(in, line)) {
    std::int64_t s = 0;
    const bool header = !json && first;
    first = false;
    bool parsed = false;
    if (json) parsed = std::sscanf(line.c_str(), "{\"step\":%lld", reinterpret_cast<long long*>(&s)) == 1;
    else if (!header) parsed = std::sscanf(line.c_str(), "%lld", reinterpret_cast<long long*>(&s)) == 1;
    if (parsed && s > step) ++dropped;
    else keep.push_back(line);
  }
  in.close();
  const std::string temp = path + ".tmp";
  {
    std::ofstream out(temp, std::ios::trunc);
    for (const auto& l : keep) out << l << "\n";
    if (!out.flush()) throw UsageError("cannot rewrite metrics file " + path + " to resume it");
  }
  fs::rename(temp, path);
  return dropped;
}

void open_metrics(Job& job) {
  const RunOptions& o = job.opt;
  if (!job.lead() || o.eval_only || (o.metrics.empty() && o.metrics_jsonl.empty())) return;
  const bool resumed = !job.resume_path.empty();
  if (resumed) {
    const int a = truncate_metrics_rows(o.metrics, job.resumed_step, false);
    const int b = o.metrics_jsonl.empty() ? 0 : truncate_metrics_rows(o.metrics_jsonl, job.resumed_step, true);
    if (a + b > 0)
      job.say("mics-train: dropped " + std::to_string(a) + " CSV and " + std::to_string(b) +
              " JSON rows past step " + std::to_string(job.resumed_step) + " from the metrics files");
  }
  std::vector<std::string> names;
  for (comm::Group* gr : job.groups->groups()) names.push_back(gr->name());
  const layout::ResolvedLayout& l = *job.layout;
  const report::RunLayout run_layout{l.world_size(), l.ranks_per_node(), l.partition_size(), l.strategy(),
                                     l.hierarchical(), engine::to_string(o.train.grad_sync)};
  job.metrics = std::make_unique<report::MetricsWriter>(o.metrics, run_layout, names, o.metrics_jsonl, resumed);
}

Saved save_checkpoint(Job& job) {
  const RunOptions& o = job.opt;
  const engine::TrainConfig& tc = o.train;
  const engine::Engine& eng = *job.engine;
  checkpoint::Metadata meta;
  meta.step = eng.step();
  meta.tokens_seen = static_cast<std::int64_t>(eng.step()) * tc.global_batch * o.model.seq;
  meta.schedule = {{"lr", tc.optimizer.lr},
                   {"min_lr", tc.optimizer.min_lr},
                   {"warmup_steps", tc.optimizer.warmup_steps},
                   {"decay_steps", tc.optimizer.decay_steps},
                   {"total_steps", tc.steps},
                   {"lr_now", engine::learning_rate(tc.optimizer, std::max(0, eng.step() - 1), tc.steps)}};
  meta.rng_state = {tc.seed};
  meta.data_position = {static_cast<std::uint64_t>(eng.step()), static_cast<std::uint64_t>(tc.global_batch)};
  meta.model_config = preset_text(o.model);
  meta.training_config = o.config_text;
  const layout::ResolvedLayout& l = *job.layout;
  meta.layout = {l.world_size(), l.ranks_per_node(), l.partition_size(), l.strategy(), l.hierarchical_requested()};
  meta.strings["run_id"] = job.run_id;
  job.bridge->to_host();
  Saved s;
  s.path = checkpoint::save(o.checkpoint_dir, job.bridge->state(), meta, o.keep_last, &s.removed);
  return s;
}

}  // namespace mics::train
