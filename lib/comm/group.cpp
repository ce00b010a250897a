#include "mics/comm/group.hpp"

#include <algorithm>
#include <numeric>
#include <utility>

#include "mics/core/check.hpp"
#include "traffic.hpp"

namespace mics::comm {

Group::Group(MPI_Comm comm, std::string name)
    : comm_(comm), name_(std::move(name)), traffic_(std::make_shared<detail::Traffic>()) {
  if (comm_ == MPI_COMM_NULL) return;
  MICS_CHECK_MPI(MPI_Comm_rank(comm_, &rank_));
  MICS_CHECK_MPI(MPI_Comm_size(comm_, &size_));
  find_ring();
}

// Local: MPI_Group_translate_ranks needs no communication.
void Group::find_ring() {
  MPI_Group mine = MPI_GROUP_NULL, world = MPI_GROUP_NULL;
  MICS_CHECK_MPI(MPI_Comm_group(comm_, &mine));
  MICS_CHECK_MPI(MPI_Comm_group(MPI_COMM_WORLD, &world));
  std::vector<int> ranks(static_cast<std::size_t>(size_));
  std::iota(ranks.begin(), ranks.end(), 0);
  world_of_.assign(ranks.size(), 0);
  const int rc = MPI_Group_translate_ranks(mine, size_, ranks.data(), world, world_of_.data());
  MPI_Group_free(&mine);
  MPI_Group_free(&world);
  MICS_CHECK_MPI(rc);
  ring_ = ranks;
  std::sort(ring_.begin(), ring_.end(), [this](int a, int b) {
    return world_of_[static_cast<std::size_t>(a)] < world_of_[static_cast<std::size_t>(b)];
  });
  ring_pos_ = static_cast<int>(std::find(ring_.begin(), ring_.end(), rank_) - ring_.begin());
}

Group::~Group() {
  twin_.reset();
  if (comm_ == MPI_COMM_NULL) return;
  int finalized = 0;
  MPI_Finalized(&finalized);
  // After MPI_Finalize there is nothing left to free (and calling MPI would be an error);
  // reaching it means a Group outlived the MpiEnvironment, which the header forbids.
  if (!finalized) MPI_Comm_free(&comm_);
}

Group::Group(Group&& o) noexcept
    : comm_(std::exchange(o.comm_, MPI_COMM_NULL)),
      rank_(o.rank_),
      size_(o.size_),
      name_(std::move(o.name_)),
      ring_(std::move(o.ring_)),
      world_of_(std::move(o.world_of_)),
      ring_pos_(o.ring_pos_),
      nodes_(o.nodes_),
      tag_(o.tag_),
      traffic_(std::move(o.traffic_)),
      twin_(std::move(o.twin_)) {}

Group& Group::operator=(Group&& o) noexcept {
  if (this != &o) {
    Group gone(std::move(*this));
    comm_ = std::exchange(o.comm_, MPI_COMM_NULL);
    rank_ = o.rank_;
    size_ = o.size_;
    name_ = std::move(o.name_);
    ring_ = std::move(o.ring_);
    world_of_ = std::move(o.world_of_);
    ring_pos_ = o.ring_pos_;
    nodes_ = o.nodes_;
    tag_ = o.tag_;
    traffic_ = std::move(o.traffic_);
    twin_ = std::move(o.twin_);
  }
  return *this;
}

// The ring is in world-rank order, so each node's members are consecutive in it; the
// two-level all-reduce needs N >= 2 such runs of equal length m >= 2.
void Group::set_nodes(int ranks_per_node, bool allow) {
  MICS_ASSERT(ranks_per_node > 0, "set_nodes needs a positive number of ranks per node");
  nodes_ = 1;
  if (!allow || size_ < 4) return;
  std::vector<int> runs;  // members per node, in ring order
  int last = -1;
  for (int r : ring_) {
    const int node = world_of_[static_cast<std::size_t>(r)] / ranks_per_node;
    if (node != last) runs.push_back(0);
    ++runs.back();
    last = node;
  }
  const bool equal = std::all_of(runs.begin(), runs.end(), [&](int m) { return m == runs.front(); });
  if (runs.size() >= 2 && runs.front() >= 2 && equal) nodes_ = static_cast<int>(runs.size());
}

GroupCounters Group::counters() const {
  if (!traffic_) return {};
  std::lock_guard<std::mutex> lock(traffic_->mu);
  return traffic_->c;
}

void Group::reset_counters() {
  if (!traffic_) return;
  std::lock_guard<std::mutex> lock(traffic_->mu);
  traffic_->c = GroupCounters{};
  // An operation still in flight keeps counting from now on.
  if (traffic_->active > 0) traffic_->busy_since = MPI_Wtime();
}

std::shared_ptr<GroupCounters> Group::shared_counters() const {
  if (!traffic_) return std::make_shared<GroupCounters>();
  return std::shared_ptr<GroupCounters>(traffic_, &traffic_->c);
}

int Group::next_tag() noexcept {
  // 32767 is the smallest MPI_TAG_UB the standard allows.
  const int t = tag_;
  tag_ = (tag_ + 1) % 32768;
  return t;
}

void Group::enable_twin() {
  MICS_ASSERT(valid(), "enable_twin on a group without a communicator");
  if (twin_) return;
  MPI_Comm dup = MPI_COMM_NULL;
  MICS_CHECK_MPI(MPI_Comm_dup(comm_, &dup));
  twin_ = std::make_unique<Group>(dup, name_);
  twin_->traffic_ = traffic_;
  twin_->nodes_ = nodes_;
}

Group& Group::twin() {
  MICS_ASSERT(twin_ != nullptr, "group '" + name_ + "' has no twin communicator");
  return *twin_;
}

}  // namespace mics::comm
