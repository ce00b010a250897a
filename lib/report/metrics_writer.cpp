#include "mics/report/metrics_writer.hpp"

#include <cerrno>
#include <cmath>
#include <cstring>
#include <initializer_list>
#include <string_view>
#include <optional>

#include "format.hpp"
#include "mics/core/error.hpp"

namespace mics::report {
namespace {

using detail::sprintf;

// Nine significant digits round-trip a float exactly and keep doubles readable; the
// equivalence tests compare losses at 1e-5, far above this.
std::string csv_number(double v) {
  if (std::isnan(v)) return "nan";
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  return sprintf("%.9g", v);
}
std::string csv_number(const std::optional<double>& v) { return v ? csv_number(*v) : ""; }

std::string json_number(double v) { return std::isfinite(v) ? sprintf("%.9g", v) : "null"; }
std::string json_number(const std::optional<double>& v) { return v ? json_number(*v) : "null"; }

// Quotes a CSV cell only when it has to (comma, quote or line break).
std::string csv_text(const std::string& s) {
  if (s.find_first_of(",\"\r\n") == std::string::npos) return s;
  std::string out = "\"";
  for (const char c : s) {
    if (c == '"') out += '"';
    out += c;
  }
  return out + "\"";
}

std::string json_text(const std::string& s) {
  std::string out = "\"";
  for (const char c : s) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default:
        if (static_cast<unsigned char>(c) < 0x20)
          out += sprintf("\\u%04x", static_cast<unsigned>(static_cast<unsigned char>(c)));
        else
          out += c;
    }
  }
  return out + "\"";
}

std::FILE* open_or_throw(const std::string& path, bool append = false) {
  std::FILE* f = std::fopen(path.c_str(), append ? "a" : "w");
  if (f == nullptr)
    throw UsageError("cannot write metrics file " + path + ": " + std::strerror(errno));
  return f;
}

// Appending piece by piece (rather than chains of operator+) also sidesteps GCC 12's
// false -Wrestrict reports on temporary string concatenation.
void append(std::string& out, std::initializer_list<std::string_view> parts) {
  for (const auto p : parts) out.append(p);
}

void put(std::FILE* f, const std::string& path, const std::string& line) {
  if (std::fputs(line.c_str(), f) < 0 || std::fflush(f) != 0)
    throw Error("writing metrics file " + path + " failed: " + std::strerror(errno));
}

}  // namespace

std::vector<std::string> MetricsWriter::columns(const std::vector<std::string>& comm_groups) {
  std::vector<std::string> c{"step",    "loss",         "val_loss",        "lr",  "grad_norm",
                             "step_ms", "tokens_per_s", "tflops_per_rank", "mfu", "exposed_comm_ms"};
  for (const auto& g : comm_groups) {
    c.push_back(g + "_comm_ms");
    c.push_back(g + "_exposed_ms");
    c.push_back(g + "_bytes");
  }
  for (const char* l : {"W", "g", "p", "strategy", "hierarchical", "grad_sync", "skipped"}) c.emplace_back(l);
  return c;
}

MetricsWriter::MetricsWriter(const std::string& csv_path, RunLayout layout,
                             std::vector<std::string> comm_groups, const std::string& jsonl_path,
                             bool append)
    : csv_path_(csv_path), jsonl_path_(jsonl_path), layout_(std::move(layout)),
      groups_(std::move(comm_groups)) {
  for (const auto& g : groups_)
    if (g.empty() || g.find_first_of(",\"\r\n ") != std::string::npos)
      throw UsageError("communication group name '" + g + "' must be non-empty, without commas, quotes or spaces");
  csv_.reset(open_or_throw(csv_path_, append));
  if (!jsonl_path_.empty()) jsonl_.reset(open_or_throw(jsonl_path_, append));
  if (append && std::fseek(csv_.get(), 0, SEEK_END) == 0 && std::ftell(csv_.get()) > 0) return;  // the header is already there
  std::string header;
  for (const auto& c : columns(groups_)) header += (header.empty() ? "" : ",") + c;
  put(csv_.get(), csv_path_, header + "\n");
}

void MetricsWriter::write(const StepRecord& r) {
  if (r.comm.size() != groups_.size())
    throw Error("metrics row for step " + std::to_string(r.step) + " has " +
                std::to_string(r.comm.size()) + " communication groups, the file has " +
                std::to_string(groups_.size()));
  for (std::size_t i = 0; i < groups_.size(); ++i)
    if (r.comm[i].group != groups_[i])
      throw Error("metrics row for step " + std::to_string(r.step) + " lists group '" +
                  r.comm[i].group + "' where the file has '" + groups_[i] + "'");

  const std::string hier = layout_.hierarchical ? "true" : "false";
  std::string row = std::to_string(r.step);
  // Under the emulated backend nothing was computed: the cells say so rather than hold NaN.
  const std::string not_computed = "n/a (emulated compute)";
  const bool v = r.values_computed;
  for (const std::string& cell :
       {v ? csv_number(r.loss) : not_computed, v ? csv_number(r.val_loss) : not_computed,
        csv_number(r.lr), v ? csv_number(r.grad_norm) : not_computed,
        csv_number(r.step_ms), csv_number(r.tokens_per_s), csv_number(r.tflops_per_rank),
        csv_number(r.mfu), csv_number(r.exposed_comm_ms)})
    append(row, {",", cell});
  for (const auto& g : r.comm)
    append(row, {",", csv_number(g.ms), ",", csv_number(g.exposed_ms), ",", std::to_string(g.bytes)});
  append(row, {",", std::to_string(layout_.world_size), ",", std::to_string(layout_.ranks_per_node),
               ",", std::to_string(layout_.partition_size), ",", csv_text(layout_.strategy), ",",
               hier, ",", csv_text(layout_.grad_sync), ",", r.skipped ? "1" : "0", "\n"});
  put(csv_.get(), csv_path_, row);

  if (!jsonl_) return;
  std::string j;
  append(j, {"{\"step\":", std::to_string(r.step), ",\"loss\":", json_number(r.loss),
             ",\"val_loss\":", json_number(r.val_loss), ",\"lr\":", json_number(r.lr),
             ",\"grad_norm\":", json_number(r.grad_norm), ",\"step_ms\":", json_number(r.step_ms),
             ",\"tokens_per_s\":", json_number(r.tokens_per_s),
             ",\"tflops_per_rank\":", json_number(r.tflops_per_rank), ",\"mfu\":", json_number(r.mfu),
             ",\"exposed_comm_ms\":", json_number(r.exposed_comm_ms),
             v ? "" : ",\"values_computed\":false", ",\"comm\":{"});
  for (std::size_t i = 0; i < r.comm.size(); ++i) {
    const auto& g = r.comm[i];
    append(j, {i ? "," : "", json_text(g.group), ":{\"ms\":", json_number(g.ms),
               ",\"exposed_ms\":", json_number(g.exposed_ms), ",\"bytes\":", std::to_string(g.bytes), "}"});
  }
  append(j, {"},\"W\":", std::to_string(layout_.world_size), ",\"g\":",
             std::to_string(layout_.ranks_per_node), ",\"p\":", std::to_string(layout_.partition_size),
             ",\"strategy\":", json_text(layout_.strategy), ",\"hierarchical\":", hier,
             ",\"grad_sync\":", json_text(layout_.grad_sync), ",\"skipped\":", r.skipped ? "true" : "false",
             "}\n"});
  put(jsonl_.get(), jsonl_path_, j);
}

std::string default_jsonl_path(const std::string& csv_path) {
  const std::string ext = ".csv";
  if (csv_path.size() > ext.size() && csv_path.compare(csv_path.size() - ext.size(), ext.size(), ext) == 0)
    return csv_path.substr(0, csv_path.size() - ext.size()) + ".jsonl";
  return csv_path + ".jsonl";
}

}  // namespace mics::report
