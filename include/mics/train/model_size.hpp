#pragma once
// A guard against sizes no machine can hold (layers = 10^12, vocab = 10^10, ...): before
// anything is allocated, the bytes the request would need are worked out in floating
// point and compared with what a rank has, so the user gets one line with the figure
// instead of std::bad_alloc.
#include <cstddef>

#include "mics/device/backend.hpp"
#include "mics/train/options.hpp"

namespace mics::train {

// Model-state bytes per rank with the states sharded over all W ranks (the least any
// layout needs), plus the activations of one micro-batch (a lower bound). An estimate.
double minimum_bytes_per_rank(const RunOptions& o, int world_size);

// Throws UsageError naming the bytes needed when they exceed the backend's memory (the
// host's physical memory on the CPU).
void check_model_size(const RunOptions& o, int world_size, const device::Backend& backend);

}  // namespace mics::train
