#include "mics/report/device_peak.hpp"

#include <cctype>
#include <cmath>
#include <string>

#include "format.hpp"
#include "mics/core/error.hpp"

namespace mics::report {
namespace {

std::string lower(std::string_view s) {
  std::string out(s);
  for (auto& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

bool has(const std::string& s, const char* part) { return s.find(part) != std::string::npos; }

}  // namespace

std::optional<double> device_peak_tflops(std::string_view device_name) {
  const std::string n = lower(device_name);
  // Most specific first: the PCIe and NVL boards share the chip's name with the SXM part.
  if (has(n, "gh200")) return 989.0;
  if (has(n, "h200")) return has(n, "nvl") ? 835.0 : 989.0;
  if (has(n, "h100")) {
    if (has(n, "pcie")) return 756.0;
    if (has(n, "nvl")) return 835.0;
    return 989.0;
  }
  if (has(n, "a100")) return 312.0;
  if (has(n, "v100")) return has(n, "pcie") ? 112.0 : 125.0;
  return std::nullopt;
}

std::optional<double> resolve_peak_tflops(std::string_view device_name,
                                          std::optional<double> user_peak_tflops) {
  if (user_peak_tflops) {
    if (!(std::isfinite(*user_peak_tflops) && *user_peak_tflops > 0.0))
      throw UsageError(detail::sprintf("--peak-tflops %g must be a positive number", *user_peak_tflops));
    return user_peak_tflops;
  }
  return device_peak_tflops(device_name);
}

}  // namespace mics::report
