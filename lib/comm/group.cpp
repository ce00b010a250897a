#include "mics/comm/group.hpp"

#include <utility>

#include "mics/core/check.hpp"

namespace mics::comm {

Group::Group(MPI_Comm comm, std::string name) : comm_(comm), name_(std::move(name)) {
  if (comm_ == MPI_COMM_NULL) return;
  MICS_CHECK_MPI(MPI_Comm_rank(comm_, &rank_));
  MICS_CHECK_MPI(MPI_Comm_size(comm_, &size_));
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
      counters_(std::exchange(o.counters_, std::make_shared<GroupCounters>())),
      twin_(std::move(o.twin_)) {}

Group& Group::operator=(Group&& o) noexcept {
  if (this != &o) {
    Group gone(std::move(*this));
    comm_ = std::exchange(o.comm_, MPI_COMM_NULL);
    rank_ = o.rank_;
    size_ = o.size_;
    name_ = std::move(o.name_);
    counters_ = std::exchange(o.counters_, std::make_shared<GroupCounters>());
    twin_ = std::move(o.twin_);
  }
  return *this;
}

void Group::enable_twin() {
  MICS_ASSERT(valid(), "enable_twin on a group without a communicator");
  if (twin_) return;
  MPI_Comm dup = MPI_COMM_NULL;
  MICS_CHECK_MPI(MPI_Comm_dup(comm_, &dup));
  twin_ = std::make_unique<Group>(dup, name_);
  twin_->counters_ = counters_;
}

Group& Group::twin() {
  MICS_ASSERT(twin_ != nullptr, "group '" + name_ + "' has no twin communicator");
  return *twin_;
}

}  // namespace mics::comm
