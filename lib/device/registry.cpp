// Which backends exist in this build and on this machine, and how to make one.
#include <algorithm>
#include <cctype>
#include <sstream>

#include "mics/core/error.hpp"
#include "mics/device/backend.hpp"

namespace mics::device {

DType parse_dtype(const std::string& s) {
  std::string l = s;
  std::transform(l.begin(), l.end(), l.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  if (l == "f32" || l == "fp32" || l == "float32" || l == "float") return DType::f32;
  if (l == "f64" || l == "fp64" || l == "float64" || l == "double") return DType::f64;
  if (l == "bf16" || l == "bfloat16") return DType::bf16;
  throw UsageError("dtype '" + s + "' is not one of f32, f64, bf16");
}

std::vector<std::string> available_backends() {
  std::vector<std::string> names{"cpu"};
#ifdef MICS_HAVE_CUDA
  if (cuda_device_count() > 0) names.emplace_back("cuda");
#endif
  return names;
}

namespace {

// "emulated:TFLOPS[:GBPS]" -> the compute model's rates.
std::unique_ptr<Backend> emulated_from_name(const std::string& name) {
  std::istringstream in(name.substr(std::string("emulated:").size()));
  double tflops = 0, gbps = 0;
  char sep = 0;
  const bool ok = static_cast<bool>(in >> tflops) && (in.eof() || (in >> sep >> gbps && sep == ':' && in.eof()));
  if (!ok)
    throw UsageError("device backend '" + name + "': expected emulated:TFLOPS or emulated:TFLOPS:GBPS");
  return make_emulated_backend(tflops, gbps);
}

}  // namespace

std::unique_ptr<Backend> make_backend(const std::string& name, int threads, int device) {
  (void)device;
  if (name == "cpu") return make_cpu_backend(threads);
  if (name.rfind("emulated:", 0) == 0) return emulated_from_name(name);
#ifdef MICS_HAVE_CUDA
  if (name == "cuda" && cuda_device_count() > 0) return make_cuda_backend(device);
#endif
  std::ostringstream os;
  os << "device backend '" << name << "' is not available here; available:";
  for (const auto& n : available_backends()) os << ' ' << n;
  throw UsageError(os.str());
}

}  // namespace mics::device
