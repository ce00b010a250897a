// mics-plan's prediction mode: every layout at every node count, a table, a CSV, a plot
// and a recommendation.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <string>
#include <unistd.h>
#include <vector>

#include "commands.hpp"
#include "mics/core/error.hpp"
#include "mics/layout/plan.hpp"
#include "mics/planner/cluster.hpp"
#include "mics/planner/predict.hpp"

namespace po = boost::program_options;
using mics::UsageError;
using namespace mics::planner;

namespace mics_plan {

namespace {

constexpr double kGiB = 1024.0 * 1024.0 * 1024.0;
constexpr long long kDefaultBatchPerGpu = 8;

struct Request {
  Cluster cluster;
  std::vector<int> nodes;
  int g = 8;
  long long batch_per_gpu = kDefaultBatchPerGpu, global_batch = 0, micro_batch = 0;  // 0: auto
  std::string recompute = "auto";
  Workload base;
  std::optional<Strategy> strategy;
  int partition_size = 0;
  bool hierarchical = false;
  std::string csv, plot;
};

struct Row {
  Prediction p;
  double weak = 0;
  bool recommended = false;
};

long long whole(const std::string& what, const std::string& text, long long lo, long long hi) {
  char* end = nullptr;
  errno = 0;
  const long long v = std::strtoll(text.c_str(), &end, 10);
  if (text.empty() || *end != '\0' || errno != 0 || v < lo || v > hi)
    throw UsageError(what + " '" + text + "' must be a whole number from " + std::to_string(lo) + " to " +
                     std::to_string(hi));
  return v;
}

// "16,32,64" or "2-8" (every count from 2 to 8), or a mix.
std::vector<int> parse_nodes(const std::string& text) {
  std::vector<int> out;
  std::size_t start = 0;
  while (start <= text.size()) {
    const std::size_t comma = std::min(text.find(',', start), text.size());
    const std::string item = text.substr(start, comma - start);
    const std::size_t dash = item.find('-', 1);
    if (dash == std::string::npos) {
      out.push_back(static_cast<int>(whole("--nodes entry", item, 1, 100000)));
    } else {
      const long long a = whole("--nodes range start", item.substr(0, dash), 1, 100000);
      const long long b = whole("--nodes range end", item.substr(dash + 1), a, 100000);
      if (b - a > 4096) throw UsageError("--nodes range '" + item + "' has more than 4096 node counts");
      for (long long n = a; n <= b; ++n) out.push_back(static_cast<int>(n));
    }
    start = comma + 1;
  }
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  return out;
}

Strategy parse_strategy(const std::string& s) {
  if (s == "ddp") return Strategy::ddp;
  if (s == "zero2") return Strategy::zero2;
  if (s == "zero3") return Strategy::zero3;
  if (s == "mics") return Strategy::mics;
  throw UsageError("--strategy '" + s + "' is not known; choose one of ddp, zero2, zero3, mics");
}

Request parse_request(const po::variables_map& vm, const mics::model::ModelConfig& model) {
  Request r;
  r.cluster = load_cluster(vm["cluster"].as<std::string>());
  r.nodes = parse_nodes(vm["nodes"].as<std::string>());
  r.g = vm.count("ranks-per-node") ? static_cast<int>(whole("--ranks-per-node", vm["ranks-per-node"].as<std::string>(), 1, 100000))
                                   : r.cluster.ranks_per_node;
  r.batch_per_gpu = whole("--batch-per-gpu", vm["batch-per-gpu"].as<std::string>(), 1, 1000000000);
  r.global_batch = whole("--global-batch", vm["global-batch"].as<std::string>(), 0, 1000000000000LL);
  const std::string mb = vm["micro-batch"].as<std::string>();
  r.micro_batch = mb == "auto" ? 0 : whole("--micro-batch", mb, 1, 1000000000);
  r.recompute = vm["recompute"].as<std::string>();
  if (r.recompute != "auto" && r.recompute != "true" && r.recompute != "false")
    throw UsageError("--recompute '" + r.recompute + "' must be auto, true or false");
  r.base.model = model;
  const std::string cd = vm["compute-dtype"].as<std::string>();
  if (cd != "auto" && cd != "f32" && cd != "bf16")
    throw UsageError("--compute-dtype '" + cd + "' must be auto, f32 or bf16");
  if (cd != "auto") r.cluster.compute_dtype = cd;
  std::string rd = vm["grad-reduce-dtype"].as<std::string>();
  if (rd == "auto") rd = r.cluster.compute_dtype;
  if (rd != "f32" && rd != "bf16") throw UsageError("--grad-reduce-dtype '" + rd + "' must be auto, f32 or bf16");
  if (rd == "bf16" && r.cluster.compute_dtype == "f32")
    throw UsageError("--grad-reduce-dtype bf16 needs a bf16 cluster; " + r.cluster.name + " computes in f32");
  r.base.reduce_bytes = rd == "f32" ? 4 : 2;
  const std::string gs = vm["grad-sync"].as<std::string>();
  if (gs != "two-hop" && gs != "every-micro-step")
    throw UsageError("--grad-sync '" + gs + "' is not known; choose two-hop or every-micro-step");
  r.base.two_hop = gs == "two-hop";
  r.base.overlap_grad_sync = vm["overlap-grad-sync"].as<bool>();
  r.base.prefetch = vm["prefetch"].as<bool>();
  r.cluster.two_level_all_reduce = vm["hierarchical-all-reduce"].as<bool>();
  const std::string bl = vm["baseline"].as<std::string>();
  if (bl != "engine" && bl != "deepspeed-0.5.6")
    throw UsageError("--baseline '" + bl + "' is not known; choose engine or deepspeed-0.5.6");
  r.base.baseline = bl == "engine" ? Baseline::engine : Baseline::deepspeed_0_5_6;
  if (vm.count("strategy")) r.strategy = parse_strategy(vm["strategy"].as<std::string>());
  // Without --partition-size every p is considered (the option's default, 1, only sizes
  // the model-state line).
  r.partition_size = vm["partition-size"].defaulted() ? 0 : static_cast<int>(vm["partition-size"].as<long long>());
  r.hierarchical = vm.count("hierarchical") > 0;
  if (vm.count("csv")) r.csv = vm["csv"].as<std::string>();
  if (vm.count("plot")) r.plot = vm["plot"].as<std::string>();
  if (r.partition_size > 0 && !r.strategy) r.strategy = Strategy::mics;
  if (r.hierarchical && !r.strategy)
    throw UsageError("--hierarchical selects one layout and needs --strategy (without it both choices are listed)");
  if (r.strategy && *r.strategy != Strategy::mics && r.partition_size > 0)
    throw UsageError("--partition-size does not apply to --strategy " + std::string(strategy_name(*r.strategy)) +
                     "; drop it, or use --strategy mics");
  if (r.strategy == Strategy::mics && r.partition_size == 0)
    throw UsageError("--strategy mics needs --partition-size P");
  return r;
}

// The layouts asked for at `world` ranks.
std::vector<Layout> layouts_at(const Request& r, int nodes) {
  const int world = nodes * r.g;
  if (!r.strategy) return candidate_layouts(world, r.g);
  Layout l{*r.strategy, world, r.g, 1, r.hierarchical};
  l.p = *r.strategy == Strategy::ddp ? 1 : (*r.strategy == Strategy::mics ? r.partition_size : world);
  try {
    mics::layout::Plan::make({world, r.g, l.p, l.hierarchical});
  } catch (const UsageError& e) {
    throw UsageError("at " + std::to_string(nodes) + " nodes (" + std::to_string(world) + " ranks): " + e.what());
  }
  return {l};
}

// The fastest fitting choice of micro-batch and recomputation the options allow (or the
// least memory-hungry one when none fits).
Prediction best_choice(const Request& r, const Layout& l, long long per_rank) {
  std::vector<long long> micro;
  if (r.micro_batch > 0) micro.push_back(r.micro_batch);
  else
    for (long long m = 1; m <= per_rank; m *= 2)  // powers of two that divide, and the whole batch
      if (per_rank % m == 0) micro.push_back(m);
  if (r.micro_batch == 0 && micro.back() != per_rank) micro.push_back(per_rank);
  std::vector<bool> rec;
  if (r.recompute != "true") rec.push_back(false);
  if (r.recompute != "false") rec.push_back(true);
  std::optional<Prediction> best, smallest;
  for (long long m : micro)
    for (bool re : rec) {
      Workload w = r.base;
      w.global_batch = per_rank * l.world;
      w.micro_batch = m;
      w.recompute = re;
      Prediction p = predict(r.cluster, w, l);
      if (p.fits && (!best || p.step_s < best->step_s)) best = p;
      if (!smallest || p.memory.total() < smallest->memory.total()) smallest = p;
    }
  return best ? *best : *smallest;
}

std::string key_of(const Layout& l) {
  std::string k = strategy_name(l.strategy);
  if (l.strategy == Strategy::mics) k += " p=" + std::to_string(l.p);
  return k + (l.hierarchical ? " hier" : "");
}

// Sequences per rank at n nodes, checked against the batch options.
long long per_rank_batch(const Request& r, int n) {
  const long long world = static_cast<long long>(n) * r.g;
  if (world > 10000000) throw UsageError("--nodes " + std::to_string(n) + " x " + std::to_string(r.g) + " ranks is beyond 1e7 ranks");
  long long per_rank = r.batch_per_gpu;
  if (r.global_batch > 0) {
    if (r.global_batch % world != 0)
      throw UsageError("--global-batch " + std::to_string(r.global_batch) + " is not a multiple of the " +
                       std::to_string(world) + " ranks of " + std::to_string(n) + " nodes");
    per_rank = r.global_batch / world;
  }
  if (per_rank > 1000000)
    throw UsageError(std::to_string(per_rank) + " sequences per rank per step at " + std::to_string(n) +
                     " nodes is beyond what mics-plan models (at most 1e6)");
  if (r.micro_batch > 0 && per_rank % r.micro_batch != 0)
    throw UsageError("--micro-batch " + std::to_string(r.micro_batch) + " does not divide the " +
                     std::to_string(per_rank) + " sequences per rank at " + std::to_string(n) + " nodes");
  return per_rank;
}

std::vector<Row> plan_rows(const Request& r) {
  std::vector<std::pair<long long, std::vector<Layout>>> plan;  // per node count
  double work = 0;
  for (int n : r.nodes) {
    const long long per_rank = per_rank_batch(r, n);
    plan.emplace_back(per_rank, layouts_at(r, n));
    // The replay costs about layers x micro-steps (at most 3) per choice: refuse what
    // would take more than seconds rather than run it.
    work += static_cast<double>(plan.back().second.size()) *
            (r.micro_batch > 0 ? 1.0 : 2.0 + std::log2(static_cast<double>(per_rank))) *
            (r.recompute == "auto" ? 2.0 : 1.0) * 3.0 * static_cast<double>(r.base.model.layers);
  }
  if (work > 3e8)
    throw UsageError("this plan would replay about " + std::to_string(static_cast<long long>(work)) +
                     " bucket steps (at most 3e8); narrow it with fewer --nodes, --strategy or --micro-batch");
  std::vector<Row> rows;
  for (const auto& [per_rank, layouts] : plan)
    for (const Layout& l : layouts) rows.push_back({best_choice(r, l, per_rank)});
  return rows;
}

// Throughput per GPU relative to the same layout (with the same micro-batch and
// recomputation) at the smallest node count it has.
void weak_scaling(std::vector<Row>& rows) {
  std::map<std::string, double> base;
  for (auto& row : rows) {
    const std::string k = key_of(row.p.layout) + " m=" + std::to_string(row.p.workload.micro_batch) +
                          (row.p.workload.recompute ? " r" : "");
    const double per_gpu = row.p.tokens_per_s / row.p.layout.world;
    if (!base.count(k)) base[k] = per_gpu;
    row.weak = per_gpu / base[k];
  }
}

void write_csv(const std::string& path, const std::vector<Row>& rows) {
  std::ofstream f(path);
  if (!f) throw UsageError("cannot write --csv file '" + path + "'");
  f << "strategy,partition_size,hierarchical,nodes,gpus,ranks_per_node,global_batch,micro_batch,accumulation,"
       "recompute,step_ms,compute_ms,tokens_per_s,tflops_per_gpu,mfu,memory_gib_per_gpu,memory_usable_gib,fits,"
       "states_gib,working_gib,activations_gib,partition_comm_ms,partition_exposed_ms,replication_comm_ms,"
       "replication_exposed_ms,optimizer_ms,weak_scaling_efficiency,recommended,hw_tflops_per_gpu,baseline\n";
  char line[1024];
  for (const Row& row : rows) {
    const Prediction& p = row.p;
    const Layout& l = p.layout;
    std::snprintf(line, sizeof line,
                  "%s,%d,%d,%d,%d,%d,%lld,%lld,%d,%d,%.6g,%.6g,%.6g,%.6g,%.6g,%.6g,%.6g,%d,%.6g,%.6g,%.6g,%.6g,%.6g,"
                  "%.6g,%.6g,%.6g,%.6g,%d,%.6g,%s\n",
                  strategy_name(l.strategy), l.p, l.two_step() ? 1 : 0, l.nodes(), l.world, l.ranks_per_node,
                  static_cast<long long>(p.workload.global_batch), static_cast<long long>(p.workload.micro_batch),
                  p.accumulation, p.workload.recompute ? 1 : 0, p.step_s * 1e3, p.compute_s * 1e3, p.tokens_per_s,
                  p.tflops_per_gpu, p.mfu, p.memory.total() / kGiB, p.memory_capacity / kGiB, p.fits ? 1 : 0,
                  p.memory.states / kGiB, p.memory.working / kGiB, p.memory.activations / kGiB,
                  p.partition_comm_s * 1e3, p.partition_exposed_s * 1e3, p.replication_comm_s * 1e3,
                  p.replication_exposed_s * 1e3, p.optimizer_s * 1e3, row.weak, row.recommended ? 1 : 0,
                  p.hw_tflops_per_gpu, baseline_name(p.baseline));
    f << line;
  }
  if (!f.flush()) throw UsageError("writing --csv file '" + path + "' failed");
}

void print_table(const Request& r, const std::vector<Row>& rows) {
  std::printf("\ncluster          %s: %d ranks per node, %.4g GiB and %.4g dense TFLOPS (%s) per rank, efficiency %.3g,\n"
              "                 links %.4g GB/s per rank inside a node, %.4g GB/s per node between nodes (%s;\n"
              "                 achieved: %.3g of it at %.3g nodes, x%.3g per doubling of the nodes)\n",
              r.cluster.name.c_str(), r.g, r.cluster.memory_gib, r.cluster.peak_tflops, r.cluster.compute_dtype.c_str(),
              r.cluster.compute_efficiency, r.cluster.intra_bandwidth_gbs, r.cluster.inter_bandwidth_gbs,
              algorithms_name(r.cluster.algorithms), r.cluster.inter_efficiency, r.cluster.inter_efficiency_nodes,
              r.cluster.inter_efficiency_per_doubling);
  const char* hop2 = !r.base.two_hop ? "every micro-step, blocking"
                     : r.base.overlap_grad_sync && r.cluster.overlap ? "overlapped with the last micro-step's backward"
                                                                     : "after the last backward";
  const char* all_reduce = r.cluster.algorithms != Algorithms::rings ? ""
                           : r.cluster.two_level_all_reduce     ? "; all-reduces across nodes two-level"
                                                                : "; all-reduces one flat ring";
  std::printf("predicted (a model's estimate, not a measurement); memory fits under %.0f%% of each rank's memory;\n"
              "zero2/zero3 rows replay %s's schedule; hop 2 (repl) %s, in %s%s\n\n",
              100.0 * (1.0 - r.cluster.memory_margin),
              r.base.baseline == Baseline::engine ? "this engine" : baseline_name(r.base.baseline), hop2,
              r.base.reduce_bytes == 2 ? "bf16" : "f32", all_reduce);
  std::printf("%-6s %5s %4s %5s %6s %5s %3s %10s %11s %8s %6s %8s %4s %10s %10s %10s %10s %6s\n", "strat", "p", "hier",
              "nodes", "gpus", "micro", "rec", "step_ms", "tokens/s", "TFLOPS", "MFU", "mem_GiB", "fits", "part_ms",
              "part_exp", "repl_ms", "repl_exp", "weak");
  for (const Row& row : rows) {
    const Prediction& p = row.p;
    const Layout& l = p.layout;
    std::printf("%-6s %5d %4s %5d %6d %5lld %3s %10.4g %11.4g %8.4g %5.1f%% %8.4g %4s %10.4g %10.4g %10.4g %10.4g %5.1f%%%s\n",
                strategy_name(l.strategy), l.p, l.two_step() ? "yes" : "no", l.nodes(), l.world,
                static_cast<long long>(p.workload.micro_batch), p.workload.recompute ? "yes" : "no", p.step_s * 1e3,
                p.tokens_per_s, p.tflops_per_gpu, 100 * p.mfu, p.memory.total() / kGiB, p.fits ? "yes" : "NO",
                p.partition_comm_s * 1e3, p.partition_exposed_s * 1e3, p.replication_comm_s * 1e3,
                p.replication_exposed_s * 1e3, 100 * row.weak, row.recommended ? "  <- recommended" : "");
  }
}

std::string describe(const Prediction& p) { return key_of(p.layout); }

// Marks the fastest fitting layout at each node count and prints why, in one sentence.
// Returns false when nothing fits anywhere.
bool recommend(const Request& r, std::vector<Row>& rows, std::vector<std::string>& lines) {
  bool any = false;
  char buf[1024];
  for (int n : r.nodes) {
    Row* best = nullptr;
    Row* second = nullptr;
    const Row* smallest = nullptr;
    for (auto& row : rows) {
      if (row.p.layout.nodes() != n) continue;
      if (!smallest || row.p.memory.total() < smallest->p.memory.total()) smallest = &row;
      if (!row.p.fits) continue;
      if (!best || row.p.step_s < best->p.step_s) { second = best; best = &row; }
      else if (!second || row.p.step_s < second->p.step_s) second = &row;
    }
    if (!best) {
      std::snprintf(buf, sizeof buf, "at %d nodes: no layout fits; the smallest need is %.3g GiB per GPU (%s) against %.3g GiB usable", n,
                    smallest->p.memory.total() / kGiB, describe(smallest->p).c_str(), smallest->p.memory_capacity / kGiB);
      lines.emplace_back(buf);
      continue;
    }
    any = true;
    best->recommended = true;
    const Prediction& b = best->p;
    std::snprintf(buf, sizeof buf, "at %d nodes: %s, %.4g TFLOPS per GPU, because it is the fastest layout that fits (%.3g of %.3g GiB)",
                  n, describe(b).c_str(), b.tflops_per_gpu, b.memory.total() / kGiB, b.memory_capacity / kGiB);
    std::string line = buf;
    if (second)
      std::snprintf(buf, sizeof buf, ", %.2fx as fast as the next one, %s, with %.0f ms of exposed communication per step against its %.0f ms",
                    second->p.step_s / b.step_s, describe(second->p).c_str(),
                    (b.partition_exposed_s + b.replication_exposed_s) * 1e3,
                    (second->p.partition_exposed_s + second->p.replication_exposed_s) * 1e3);
    else
      std::snprintf(buf, sizeof buf, ", and the only one that does");
    lines.push_back(line + buf + ".");
  }
  return any;
}

void plot(const std::string& csv, const std::string& png) {
  char self[4096];
  const ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
  if (n <= 0) throw UsageError("--plot: cannot find mics-plan's own folder");
  self[n] = '\0';
  const auto script = std::filesystem::path(self).parent_path() / "mics-plan-plot.py";
  if (!std::filesystem::exists(script)) throw UsageError("--plot: " + script.string() + " is missing");
  const std::string cmd = "/usr/bin/python3 '" + script.string() + "' '" + csv + "' '" + png + "'";
  if (std::system(cmd.c_str()) != 0)
    throw UsageError("--plot: " + script.string() + " failed (is python3-matplotlib installed?)");
}

}  // namespace

void add_predict_options(po::options_description& desc) {
  desc.add_options()
    ("partition-size", po::value<long long>()->default_value(1),
     "p: model states per rank are shown at p; in prediction mode only mics at this p is considered")
    ("cluster", po::value<std::string>(), "cluster description (inputs/clusters/*.cfg): turns on the prediction mode")
    ("nodes", po::value<std::string>()->default_value("1,2,4,8"), "node counts: a list (16,32,64) and/or ranges (2-8)")
    ("ranks-per-node", po::value<std::string>(), "ranks (GPUs) per node (default: the cluster's)")
    ("batch-per-gpu", po::value<std::string>()->default_value(std::to_string(kDefaultBatchPerGpu)),
     "sequences per GPU per step (weak scaling: the global batch grows with the nodes)")
    ("global-batch", po::value<std::string>()->default_value("0"), "sequences per step over all ranks (0: batch-per-gpu x GPUs)")
    ("micro-batch", po::value<std::string>()->default_value("auto"),
     "sequences per rank per micro-step, or auto: the fastest that fits among the power-of-two divisors "
     "of the per-rank batch and the whole of it")
    ("recompute", po::value<std::string>()->default_value("auto"), "activation recomputation: true, false or auto (the faster that fits)")
    ("grad-reduce-dtype", po::value<std::string>()->default_value("auto"),
     "gradient reduce-scatter type: f32, bf16, or auto: the cluster's compute type (bf16 on GPUs, as large runs "
     "use it: pass mics-train --grad-reduce-dtype bf16 to match)")
    ("compute-dtype", po::value<std::string>()->default_value("auto"),
     "compute type of parameters and activations: f32, bf16, or auto: the cluster's compute_dtype")
    ("grad-sync", po::value<std::string>()->default_value("two-hop"), "two-hop or every-micro-step")
    ("overlap-grad-sync", po::value<bool>()->default_value(true),
     "two-hop: each bucket's replication all-reduce starts during the last micro-step's backward, as soon as "
     "its gradient is reduced, as mics-train does by default (false: all of them after the backward)")
    ("prefetch", po::value<bool>()->default_value(true), "gather the next bucket during the current one")
    ("hierarchical-all-reduce", po::value<bool>()->default_value(true),
     "rings clusters: all-reduces over several nodes of several ranks each run two-level (in the node, across "
     "nodes, in the node), as mics-train does by default; false: one flat ring (mics-train --hierarchical-all-reduce false)")
    ("baseline", po::value<std::string>()->default_value("engine"),
     "whose schedule zero2 and zero3 rows replay: engine (this engine's), or deepspeed-0.5.6 (the MiCS paper's "
     "baseline: per-tensor collectives, blocking fetches, a 5e7-element prefetch, reductions every micro-step; "
     "docs/DESIGN.md section 10); ddp and mics rows are always this engine's; the CSV's baseline column says which")
    ("strategy", po::value<std::string>(), "only this strategy: ddp, zero2, zero3 or mics (with --partition-size)")
    ("hierarchical", "with --strategy: hierarchical collectives where the group spans nodes")
    ("csv", po::value<std::string>(), "write one row per strategy, partition size, hierarchical choice and node count")
    ("plot", po::value<std::string>(), "write a PNG of weak-scaling efficiency and TFLOPS per GPU against nodes");
}

int predict_command(const po::variables_map& vm, const mics::model::ModelConfig& c) {
  Request r = parse_request(vm, c);
  std::vector<Row> rows = plan_rows(r);
  weak_scaling(rows);
  std::vector<std::string> advice;
  const bool any = recommend(r, rows, advice);
  print_table(r, rows);
  std::printf("\nrecommendation (fastest layout that fits, per node count):\n");
  for (const auto& a : advice) std::printf("  %s\n", a.c_str());
  std::string csv = r.csv;
  if (csv.empty() && !r.plot.empty()) csv = r.plot + ".csv";
  if (!csv.empty()) write_csv(csv, rows);  // written even when nothing fits: it says why
  if (!any)
    throw UsageError("the model fits no layout at any of the node counts asked for (see the table: more nodes, "
                     "recomputation or a smaller micro-batch may help)");
  if (!r.plot.empty()) plot(csv, r.plot);
  return 0;
}

}  // namespace mics_plan
