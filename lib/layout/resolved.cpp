#include "mics/layout/resolved.hpp"

#include <sstream>

#include "mics/core/error.hpp"

namespace mics::layout {

bool node_aligned(int p, int g) noexcept {
  if (p <= 0 || g <= 0) return false;
  return p >= g ? p % g == 0 : g % p == 0;
}

ResolvedLayout resolve_layout(const LayoutInputs& in,
                              const std::function<int(int, int, std::size_t)>& auto_partition) {
  int p = in.strategy_partition;
  const bool mics = in.strategy_partition == 0;
  if (!mics && in.requested_partition > 0 && in.requested_partition != in.strategy_partition)
    throw UsageError("--partition-size " + std::to_string(in.requested_partition) +
                     " does not apply to --strategy " + in.strategy + ", whose partition size is " +
                     std::to_string(in.strategy_partition) + "; drop it, or use --strategy mics");
  if (mics) {
    if (in.partition_auto) {
      if (in.min_memory_bytes == 0)
        throw UsageError("--partition-size auto needs --memory-per-rank GiB on this backend");
      p = auto_partition(in.world_size, in.ranks_per_node, in.min_memory_bytes);
    } else {
      p = in.requested_partition;
    }
  }
  ResolvedLayout out(
      Plan::make({in.world_size, in.ranks_per_node, p, in.hierarchical, in.hierarchical_all_reduce}));
  out.strategy_ = in.strategy;
  out.auto_ = mics && in.partition_auto;
  out.min_memory_ = in.min_memory_bytes;
  return out;
}

std::string ResolvedLayout::describe() const {
  std::ostringstream os;
  os.precision(3);
  os << strategy_ << " " << plan_.describe();
  if (auto_)
    os << ", p chosen by auto for " << static_cast<double>(min_memory_) / (1024.0 * 1024 * 1024)
       << " GiB per rank (the smallest over ranks)";
  return os.str();
}

}  // namespace mics::layout
