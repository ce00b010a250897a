#pragma once
// A communicator and its traffic counters. Group owns its MPI_Comm (freed in the
// destructor), so every Group must be destroyed before MPI_Finalize: keep them in a
// scope inside run_mpi_program's body, never in a static.
#include <mpi.h>

#include <cstdint>
#include <memory>
#include <string>

namespace mics::comm {

// What one rank did on one group. Recorded when an operation completes.
//   calls          collectives completed on this group (a barrier counts, moves 0 bytes)
//   bytes          bytes this rank sends under the ring algorithm: (n-1)/n of the full
//                  message for all-gather, reduce-scatter and broadcast, 2(n-1)/n for
//                  all-reduce (n = group size). This is the model the bandwidth figures
//                  use (mics-design.md section 7), not what a given MPI happens to do.
//   message_bytes  the full message: the gathered buffer (all-gather), the input buffer
//                  (reduce-scatter), the buffer (all-reduce, broadcast).
//   seconds        summed time from each operation's start to the moment this rank saw
//                  it complete (so a late wait() inflates it; blocking use is exact).
// A hierarchical partition collective is recorded on the inter and intra groups, one call
// on each, and not on the partition group.
struct GroupCounters {
  std::uint64_t calls = 0;
  std::uint64_t bytes = 0;
  std::uint64_t message_bytes = 0;
  double seconds = 0.0;
};

class Group {
public:
  Group() = default;  // no communicator: valid() is false
  // Takes ownership of `comm` (MPI_COMM_NULL gives an invalid group). `name` is one of
  // "world", "partition", "replication", "inter", "intra" for the process groups.
  Group(MPI_Comm comm, std::string name);
  ~Group();
  Group(Group&& other) noexcept;
  Group& operator=(Group&& other) noexcept;
  Group(const Group&) = delete;
  Group& operator=(const Group&) = delete;

  bool valid() const noexcept { return comm_ != MPI_COMM_NULL; }
  MPI_Comm comm() const noexcept { return comm_; }
  int rank() const noexcept { return rank_; }
  int size() const noexcept { return size_; }
  const std::string& name() const noexcept { return name_; }

  const GroupCounters& counters() const noexcept { return *counters_; }
  void reset_counters() noexcept { *counters_ = GroupCounters{}; }
  // Shared with pending operations, which record into it when they complete, and with
  // the twin, so that the counters survive a move of the Group.
  const std::shared_ptr<GroupCounters>& shared_counters() const noexcept { return counters_; }

  // A second communicator over the same ranks, in the same rank order, sharing these
  // counters. The hierarchical collectives start their second step on it, at a moment
  // that differs between ranks; a private communicator keeps those starts from being
  // matched against other collectives on this one. Created by enable_twin() (collective
  // over the group).
  void enable_twin();
  bool has_twin() const noexcept { return static_cast<bool>(twin_); }
  Group& twin();

private:
  MPI_Comm comm_ = MPI_COMM_NULL;
  int rank_ = 0;
  int size_ = 0;
  std::string name_;
  std::shared_ptr<GroupCounters> counters_ = std::make_shared<GroupCounters>();
  std::unique_ptr<Group> twin_;
};

}  // namespace mics::comm
