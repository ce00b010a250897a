// Cluster description files: parsing, validation, writing.
#include "mics/planner/cluster.hpp"

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <sstream>

#include "mics/core/error.hpp"

namespace mics::planner {

namespace {

std::string trim(const std::string& s) {
  const auto a = s.find_first_not_of(" \t\r");
  if (a == std::string::npos) return "";
  const auto b = s.find_last_not_of(" \t\r");
  return s.substr(a, b - a + 1);
}

double parse_number(const std::string& where, const std::string& key, const std::string& v) {
  char* end = nullptr;
  const double x = std::strtod(v.c_str(), &end);
  if (v.empty() || end == v.c_str() || *end != '\0' || !std::isfinite(x))
    throw UsageError(where + ": " + key + " = '" + v + "' is not a number");
  return x;
}

bool parse_bool(const std::string& where, const std::string& key, const std::string& v) {
  if (v == "true" || v == "yes" || v == "1") return true;
  if (v == "false" || v == "no" || v == "0") return false;
  throw UsageError(where + ": " + key + " = '" + v + "' must be true or false");
}

using Setter = std::function<void(Cluster&, const std::string& where, const std::string& key,
                                  const std::string& value)>;

Setter number(double Cluster::*field) {
  return [field](Cluster& c, const std::string& w, const std::string& k, const std::string& v) {
    c.*field = parse_number(w, k, v);
  };
}

const std::map<std::string, Setter>& setters() {
  static const std::map<std::string, Setter> s = {
      {"name", [](Cluster& c, const std::string&, const std::string&, const std::string& v) { c.name = v; }},
      {"algorithms",
       [](Cluster& c, const std::string& w, const std::string& k, const std::string& v) {
         if (v == "nccl") c.algorithms = Algorithms::nccl;
         else if (v == "rings") c.algorithms = Algorithms::rings;
         else if (v == "mpi") c.algorithms = Algorithms::mpi;
         else throw UsageError(w + ": " + k + " = '" + v + "' is not known; choose nccl, rings or mpi");
       }},
      {"overlap", [](Cluster& c, const std::string& w, const std::string& k,
                     const std::string& v) { c.overlap = parse_bool(w, k, v); }},
      {"ranks_per_node",
       [](Cluster& c, const std::string& w, const std::string& k, const std::string& v) {
         const double x = parse_number(w, k, v);
         if (x != std::floor(x) || x < 1 || x > 1e6)
           throw UsageError(w + ": " + k + " = " + v + " must be a whole number from 1 to 1e6");
         c.ranks_per_node = static_cast<int>(x);
       }},
      {"compute_dtype",
       [](Cluster& c, const std::string& w, const std::string& k, const std::string& v) {
         if (v != "bf16" && v != "f32")
           throw UsageError(w + ": " + k + " = '" + v + "' is not known; choose bf16 or f32");
         c.compute_dtype = v;
       }},
      {"memory_gib", number(&Cluster::memory_gib)},
      {"memory_margin", number(&Cluster::memory_margin)},
      {"workspace_gib", number(&Cluster::workspace_gib)},
      {"peak_tflops", number(&Cluster::peak_tflops)},
      {"shared_peak_tflops", number(&Cluster::shared_peak_tflops)},
      {"compute_efficiency", number(&Cluster::compute_efficiency)},
      {"memory_bandwidth_gbs", number(&Cluster::memory_bandwidth_gbs)},
      {"intra_bandwidth_gbs", number(&Cluster::intra_bandwidth_gbs)},
      {"intra_latency_us", number(&Cluster::intra_latency_us)},
      {"inter_bandwidth_gbs", number(&Cluster::inter_bandwidth_gbs)},
      {"inter_latency_us", number(&Cluster::inter_latency_us)},
      {"base_latency_us", number(&Cluster::base_latency_us)},
      {"inter_efficiency", number(&Cluster::inter_efficiency)},
      {"inter_efficiency_nodes", number(&Cluster::inter_efficiency_nodes)},
      {"inter_efficiency_per_doubling", number(&Cluster::inter_efficiency_per_doubling)},
  };
  return s;
}

void require_positive(const std::string& where, const char* key, double v) {
  if (!(v > 0)) {
    std::ostringstream os;
    os << where << ": " << key << " = " << v << "; it must be positive";
    throw UsageError(os.str());
  }
}

}  // namespace

const char* algorithms_name(Algorithms a) {
  switch (a) {
    case Algorithms::nccl: return "nccl";
    case Algorithms::rings: return "rings";
    case Algorithms::mpi: return "mpi";
  }
  return "?";
}

void Cluster::validate(const std::string& where) const {
  require_positive(where, "memory_gib", memory_gib);
  require_positive(where, "peak_tflops", peak_tflops);
  require_positive(where, "memory_bandwidth_gbs", memory_bandwidth_gbs);
  require_positive(where, "intra_bandwidth_gbs", intra_bandwidth_gbs);
  require_positive(where, "inter_bandwidth_gbs", inter_bandwidth_gbs);
  if (!(compute_efficiency > 0 && compute_efficiency <= 1))
    throw UsageError(where + ": compute_efficiency = " + std::to_string(compute_efficiency) +
                     " must be in (0, 1]");
  if (!(inter_efficiency > 0 && inter_efficiency <= 1))
    throw UsageError(where + ": inter_efficiency = " + std::to_string(inter_efficiency) +
                     " must be in (0, 1]");
  if (!(inter_efficiency_per_doubling > 0 && inter_efficiency_per_doubling <= 1))
    throw UsageError(where + ": inter_efficiency_per_doubling = " + std::to_string(inter_efficiency_per_doubling) +
                     " must be in (0, 1]");
  if (!(inter_efficiency_nodes >= 1))
    throw UsageError(where + ": inter_efficiency_nodes = " + std::to_string(inter_efficiency_nodes) +
                     " must be at least 1");
  if (!(memory_margin >= 0 && memory_margin < 1))
    throw UsageError(where + ": memory_margin = " + std::to_string(memory_margin) +
                     " must be in [0, 1)");
  for (auto [key, v] : {std::pair<const char*, double>{"workspace_gib", workspace_gib},
                        {"shared_peak_tflops", shared_peak_tflops},
                        {"intra_latency_us", intra_latency_us},
                        {"inter_latency_us", inter_latency_us},
                        {"base_latency_us", base_latency_us}})
    if (!(v >= 0))
      throw UsageError(where + ": " + key + " = " + std::to_string(v) + " must not be negative");
}

double Cluster::achieved_inter_gbs(int nodes) const {
  const double doublings = std::log2(std::max(1, nodes) / inter_efficiency_nodes);
  const double f = inter_efficiency * std::pow(inter_efficiency_per_doubling, doublings);
  return inter_bandwidth_gbs * std::min(1.0, f);
}

double Cluster::rank_peak_tflops(int world) const {
  if (shared_peak_tflops <= 0 || world <= 0) return peak_tflops;
  return std::min(peak_tflops, shared_peak_tflops / world);
}

Cluster load_cluster(const std::string& path) {
  const std::string where = "cluster file " + path;
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) throw UsageError(where + ": no such file");
  if (std::filesystem::is_directory(path, ec))
    throw UsageError(where + ": is a directory, not a cluster file");
  std::ifstream in(path);
  if (!in) throw UsageError(where + ": cannot be read (permissions?)");
  Cluster c;
  c.name = std::filesystem::path(path).stem().string();
  std::string line;
  int n = 0;
  while (std::getline(in, line)) {
    ++n;
    const auto hash = line.find('#');
    if (hash != std::string::npos) line.resize(hash);
    line = trim(line);
    if (line.empty()) continue;
    const auto eq = line.find('=');
    const std::string at = where + " line " + std::to_string(n);
    if (eq == std::string::npos) throw UsageError(at + ": expected 'key = value', got '" + line + "'");
    const std::string key = trim(line.substr(0, eq)), value = trim(line.substr(eq + 1));
    const auto it = setters().find(key);
    if (it == setters().end())
      throw UsageError(at + ": unknown key '" + key + "' (known: name, algorithms, overlap, "
                       "ranks_per_node, memory_gib, memory_margin, workspace_gib, peak_tflops, "
                       "shared_peak_tflops, compute_efficiency, memory_bandwidth_gbs, "
                       "intra_bandwidth_gbs, intra_latency_us, inter_bandwidth_gbs, "
                       "inter_latency_us, base_latency_us, inter_efficiency, inter_efficiency_nodes, "
                       "inter_efficiency_per_doubling, compute_dtype)");
    it->second(c, at, key, value);
  }
  c.validate(where);
  return c;
}

void write_cluster(std::ostream& os, const Cluster& c, const std::string& comment) {
  std::istringstream lines(comment);
  for (std::string l; std::getline(lines, l);) os << "# " << l << "\n";
  os.precision(6);
  os << "name = " << c.name << "\n"
     << "algorithms = " << algorithms_name(c.algorithms) << "\n"
     << "overlap = " << (c.overlap ? "true" : "false") << "\n"
     << "ranks_per_node = " << c.ranks_per_node << "\n"
     << "compute_dtype = " << c.compute_dtype << "\n"
     << "memory_gib = " << c.memory_gib << "\n"
     << "memory_margin = " << c.memory_margin << "\n"
     << "workspace_gib = " << c.workspace_gib << "\n"
     << "peak_tflops = " << c.peak_tflops << "\n"
     << "shared_peak_tflops = " << c.shared_peak_tflops << "\n"
     << "compute_efficiency = " << c.compute_efficiency << "\n"
     << "memory_bandwidth_gbs = " << c.memory_bandwidth_gbs << "\n"
     << "intra_bandwidth_gbs = " << c.intra_bandwidth_gbs << "\n"
     << "intra_latency_us = " << c.intra_latency_us << "\n"
     << "inter_bandwidth_gbs = " << c.inter_bandwidth_gbs << "\n"
     << "inter_latency_us = " << c.inter_latency_us << "\n"
     << "base_latency_us = " << c.base_latency_us << "\n"
     << "inter_efficiency = " << c.inter_efficiency << "\n"
     << "inter_efficiency_nodes = " << c.inter_efficiency_nodes << "\n"
     << "inter_efficiency_per_doubling = " << c.inter_efficiency_per_doubling << "\n";
}

}  // namespace mics::planner
