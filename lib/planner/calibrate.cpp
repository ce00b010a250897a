// Reading measurements and fitting link and compute parameters to them.
#include "mics/planner/calibrate.hpp"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <map>
#include <sstream>

#include "mics/core/error.hpp"
#include "mics/planner/collective_cost.hpp"

namespace mics::planner {

namespace {

std::vector<std::string> split(const std::string& line) {
  std::vector<std::string> out;
  std::stringstream ss(line);
  for (std::string f; std::getline(ss, f, ',');) out.push_back(f);
  if (!line.empty() && line.back() == ',') out.emplace_back();
  return out;
}

// A CSV file as header -> column index, and its rows.
struct Table {
  std::map<std::string, std::size_t> col;
  std::vector<std::vector<std::string>> rows;
};

Table read_table(const std::string& path, const std::vector<std::string>& needed) {
  std::ifstream in(path);
  if (!in) throw UsageError("cannot read '" + path + "'");
  Table t;
  std::string line;
  if (!std::getline(in, line)) throw UsageError("'" + path + "' is empty");
  const auto head = split(line);
  for (std::size_t i = 0; i < head.size(); ++i) t.col[head[i]] = i;
  for (const auto& n : needed)
    if (!t.col.count(n)) throw UsageError("'" + path + "' has no column '" + n + "'");
  int number = 1;
  while (std::getline(in, line)) {
    ++number;
    if (line.empty()) continue;
    auto row = split(line);
    if (row.size() != head.size())
      throw UsageError("'" + path + "' line " + std::to_string(number) + " has " +
                       std::to_string(row.size()) + " fields, the header " + std::to_string(head.size()));
    t.rows.push_back(std::move(row));
  }
  return t;
}

double number(const std::string& path, const std::string& v) {
  char* end = nullptr;
  const double x = std::strtod(v.c_str(), &end);
  if (v.empty() || *end != '\0' || !std::isfinite(x))
    throw UsageError("'" + path + "': '" + v + "' is not a number");
  return x;
}

Strategy parse_strategy(const std::string& path, const std::string& s) {
  if (s == "ddp") return Strategy::ddp;
  if (s == "zero2") return Strategy::zero2;
  if (s == "zero3") return Strategy::zero3;
  if (s == "mics") return Strategy::mics;
  throw UsageError("'" + path + "': strategy '" + s + "' is not known");
}

// Nelder-Mead over x (n dimensions), minimising f.
template <std::size_t N>
std::array<double, N> minimise(const std::function<double(const std::array<double, N>&)>& f,
                               std::array<double, N> x0, double step) {
  std::array<std::array<double, N>, N + 1> s;
  std::array<double, N + 1> v;
  for (std::size_t i = 0; i <= N; ++i) {
    s[i] = x0;
    if (i > 0) s[i][i - 1] += step;
    v[i] = f(s[i]);
  }
  for (int iter = 0; iter < 2000; ++iter) {
    std::array<std::size_t, N + 1> o;
    for (std::size_t i = 0; i <= N; ++i) o[i] = i;
    std::sort(o.begin(), o.end(), [&](std::size_t a, std::size_t b) { return v[a] < v[b]; });
    const std::size_t best = o[0], worst = o[N], second = o[N - 1];
    if (v[worst] - v[best] < 1e-12) break;
    std::array<double, N> c{};
    for (std::size_t i = 0; i <= N; ++i)
      if (i != worst)
        for (std::size_t d = 0; d < N; ++d) c[d] += s[i][d] / N;
    const auto along = [&](double t) {
      std::array<double, N> y;
      for (std::size_t d = 0; d < N; ++d) y[d] = c[d] + t * (s[worst][d] - c[d]);
      return y;
    };
    const auto r = along(-1.0);
    const double fr = f(r);
    if (fr < v[best]) {
      const auto e = along(-2.0);
      const double fe = f(e);
      if (fe < fr) { s[worst] = e; v[worst] = fe; } else { s[worst] = r; v[worst] = fr; }
    } else if (fr < v[second]) {
      s[worst] = r; v[worst] = fr;
    } else {
      const auto k = along(0.5);
      const double fk = f(k);
      if (fk < v[worst]) { s[worst] = k; v[worst] = fk; continue; }
      for (std::size_t i = 0; i <= N; ++i)
        if (i != best) {
          for (std::size_t d = 0; d < N; ++d) s[i][d] = s[best][d] + 0.5 * (s[i][d] - s[best][d]);
          v[i] = f(s[i]);
        }
    }
  }
  std::size_t best = 0;
  for (std::size_t i = 1; i <= N; ++i) if (v[i] < v[best]) best = i;
  return s[best];
}

double sq_log(double predicted, double measured) {
  const double e = std::log(std::max(predicted, 1e-12) / measured);
  return e * e;
}

Cluster with_links(Cluster c, const std::array<double, 4>& x) {
  c.intra_bandwidth_gbs = std::exp(x[0]);
  c.intra_latency_us = std::exp(x[1]);
  c.inter_bandwidth_gbs = std::exp(x[2]);
  c.inter_latency_us = std::exp(x[3]);
  return c;
}

double predict_train(const Cluster& c, const Workload& w, const TrainRun& r) {
  Workload x = w;
  x.two_hop = r.two_hop;
  return predict(c, x, r.layout).step_s;
}

}  // namespace

std::vector<BenchRow> read_bench_csv(const std::string& path) {
  const Table t = read_table(path, {"collective", "group", "algo", "group_size", "size_bytes", "time_us", "wrong"});
  int world = 0, p = 0;
  for (const auto& row : t.rows) {
    const int n = static_cast<int>(number(path, row[t.col.at("group_size")]));
    if (row[t.col.at("group")] == "world") world = n;
    if (row[t.col.at("group")] == "partition") p = n;
  }
  if (world < 1 || p < 1) throw UsageError("'" + path + "' needs rows of the world and the partition group");
  std::vector<BenchRow> out;
  for (const auto& row : t.rows) {
    if (number(path, row[t.col.at("wrong")]) != 0) continue;  // a wrong result is no timing
    BenchRow r;
    r.source = path;
    r.op = row[t.col.at("collective")];
    r.group = row[t.col.at("group")];
    r.algo = row[t.col.at("algo")];
    r.group_size = static_cast<int>(number(path, row[t.col.at("group_size")]));
    r.world = world;
    r.p = p;
    r.bytes = number(path, row[t.col.at("size_bytes")]);
    r.seconds = number(path, row[t.col.at("time_us")]) * 1e-6;
    if (r.seconds <= 0 || r.group_size < 2) continue;  // a group of one moves nothing
    out.push_back(r);
  }
  return out;
}

TrainRun read_train_metrics(const std::string& path) {
  const Table t = read_table(path, {"step", "step_ms", "W", "g", "p", "strategy", "hierarchical", "grad_sync"});
  if (t.rows.empty()) throw UsageError("'" + path + "' has no steps");
  const auto& first = t.rows.front();
  TrainRun r;
  r.source = path;
  r.layout.world = static_cast<int>(number(path, first[t.col.at("W")]));
  r.layout.ranks_per_node = static_cast<int>(number(path, first[t.col.at("g")]));
  r.layout.p = static_cast<int>(number(path, first[t.col.at("p")]));
  r.layout.strategy = parse_strategy(path, first[t.col.at("strategy")]);
  const std::string hier = first[t.col.at("hierarchical")];
  r.layout.hierarchical = hier == "true" || hier == "1";
  r.two_hop = first[t.col.at("grad_sync")] != "every-micro-step";
  std::vector<double> ms;
  for (std::size_t i = t.rows.size() > 1 ? 1 : 0; i < t.rows.size(); ++i)
    ms.push_back(number(path, t.rows[i][t.col.at("step_ms")]));
  std::sort(ms.begin(), ms.end());
  r.step_s = ms[ms.size() / 2] * 1e-3;
  r.steps = static_cast<int>(t.rows.size());
  return r;
}

double predict_bench(const Cluster& c, int g, const BenchRow& r) {
  const Collective op = r.op == "all_gather" ? Collective::all_gather
                        : r.op == "reduce_scatter" ? Collective::reduce_scatter
                                                   : Collective::all_reduce;
  if (r.group == "partition") {
    const PartitionShape s{r.p, g, r.algo == "hier"};
    if (op == Collective::all_gather) return partition_gather_seconds(c, s, r.bytes);
    if (op == Collective::reduce_scatter) return partition_reduce_seconds(c, s, r.bytes);
    return collective_seconds(c, op, {r.p, std::min(r.p, g), g}, r.bytes);
  }
  const GroupShape shape = r.group == "replication" ? replication_shape(r.world, g, r.p) : world_shape(r.world, g);
  return collective_seconds(c, op, shape, r.bytes);
}

Calibration calibrate(const Cluster& start, const std::vector<BenchRow>& bench,
                      const std::vector<TrainRun>& train, const Workload& workload) {
  Calibration out;
  out.cluster = start;
  const int g = start.ranks_per_node;
  if (!bench.empty()) {
    const auto cost = [&](const std::array<double, 4>& x) {
      const Cluster c = with_links(start, x);
      double s = 0;
      for (const auto& r : bench) s += sq_log(predict_bench(c, g, r), r.seconds);
      return s;
    };
    const std::array<double, 4> x0{std::log(start.intra_bandwidth_gbs), std::log(std::max(start.intra_latency_us, 1.0)),
                                   std::log(start.inter_bandwidth_gbs), std::log(std::max(start.inter_latency_us, 1.0))};
    out.cluster = with_links(start, minimise<4>(cost, x0, 1.0));
  }
  if (!train.empty()) {
    const auto cost = [&](double log_eff) {
      Cluster c = out.cluster;
      c.compute_efficiency = std::exp(log_eff);
      double s = 0;
      for (const auto& r : train) s += sq_log(predict_train(c, workload, r), r.step_s);
      return s;
    };
    double lo = std::log(1e-4), hi = 0.0;  // efficiency in [1e-4, 1]
    const double phi = (std::sqrt(5.0) - 1) / 2;
    for (int i = 0; i < 100; ++i) {
      const double a = hi - phi * (hi - lo), b = lo + phi * (hi - lo);
      if (cost(a) < cost(b)) hi = b; else lo = a;
    }
    out.cluster.compute_efficiency = std::exp((lo + hi) / 2);
  }
  for (const auto& r : bench)
    out.bench.push_back({r.op + " " + r.group + " " + r.algo + " n=" + std::to_string(r.group_size) + " " +
                             std::to_string(static_cast<long long>(r.bytes)) + " B",
                         r.seconds, predict_bench(out.cluster, g, r)});
  for (const auto& r : train)
    out.train.push_back({r.source + " (" + strategy_name(r.layout.strategy) + " W=" + std::to_string(r.layout.world) +
                             " p=" + std::to_string(r.layout.p) + (r.layout.hierarchical ? " hier" : "") + ")",
                         r.step_s, predict_train(out.cluster, workload, r)});
  return out;
}

}  // namespace mics::planner
