// For the config fuzz target only: lib/device/registry.cpp (parse_dtype) is linked as
// it is, without the CPU backend it can construct (which would pull in BLAS and OpenMP).
#include <memory>

#include "mics/core/error.hpp"
#include "mics/device/backend.hpp"

namespace mics::device {
std::unique_ptr<Backend> make_cpu_backend(int) { throw Error("no backends in the fuzz build"); }
}  // namespace mics::device
