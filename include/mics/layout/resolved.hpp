#pragma once
// The one resolved layout of a job: world size W, ranks per node g, strategy, partition
// size p (given, implied by the strategy, or chosen by `auto` from the smallest memory
// over all ranks) and hierarchical collectives. It is built once, during set-up, and is
// the only source the process groups, the engine, checkpoints and metrics read the
// layout from. Pure arithmetic, no MPI: the caller supplies the agreed inputs (the
// detected g and the minimum memory are reductions over the world).
#include <cstddef>
#include <functional>
#include <string>

#include "mics/layout/plan.hpp"

namespace mics::layout {

// The node-alignment rule, in one place: a group of p ranks on nodes of g ranks is either
// whole nodes (p a multiple of g) or a divisor of a node (g a multiple of p).
bool node_aligned(int partition_size, int ranks_per_node) noexcept;

struct LayoutInputs {
  int world_size = 1;
  int ranks_per_node = 1;           // detected or given, > 0
  std::string strategy = "mics";    // ddp, zero2, zero3, mics
  int strategy_partition = 0;       // the p the strategy implies (ddp 1, zero* W), 0 for mics
  int requested_partition = 0;      // --partition-size N, 0 when not given
  bool partition_auto = false;      // --partition-size auto (mics only)
  bool hierarchical = false;
  bool hierarchical_all_reduce = true;  // LayoutRequest::hierarchical_all_reduce
  std::size_t min_memory_bytes = 0; // the smallest per-rank memory over all ranks (auto)
};

class ResolvedLayout {
public:
  const Plan& plan() const noexcept { return plan_; }
  int world_size() const noexcept { return plan_.world_size(); }
  int ranks_per_node() const noexcept { return plan_.ranks_per_node(); }
  int partition_size() const noexcept { return plan_.partition_size(); }
  const std::string& strategy() const noexcept { return strategy_; }
  bool partition_auto() const noexcept { return auto_; }
  // Requested (the user's flag) and effective (requested and the group spans nodes).
  bool hierarchical_requested() const noexcept { return plan_.hierarchical_requested(); }
  bool hierarchical() const noexcept { return plan_.hierarchical(); }
  std::size_t min_memory_bytes() const noexcept { return min_memory_; }
  // "W=8 g=4 mics p=4 (auto from 2.0 GiB per rank, the smallest over ranks), ..."
  std::string describe() const;

private:
  friend ResolvedLayout resolve_layout(const LayoutInputs&,
                                       const std::function<int(int, int, std::size_t)>&);
  explicit ResolvedLayout(const Plan& p) : plan_(p) {}
  Plan plan_;
  std::string strategy_;
  bool auto_ = false;
  std::size_t min_memory_ = 0;
};

// Validates and resolves. auto_partition(W, g, memory) is asked for p when
// inputs.partition_auto (mics-train passes engine::auto_partition_size). Throws
// mics::UsageError with one line for every inconsistent request; the same inputs give
// the same verdict on every rank.
ResolvedLayout resolve_layout(const LayoutInputs& inputs,
                              const std::function<int(int, int, std::size_t)>& auto_partition);

}  // namespace mics::layout
