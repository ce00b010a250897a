#pragma once
// The collectives interface the engine uses. One backend per memory kind: MpiCollectives
// (host memory, mpi_collectives.hpp) and NcclCollectives (device memory,
// nccl_collectives.hpp, built with CUDA). Every operation is non-blocking and returns a
// Request; blocking use is op(...).wait().
//
// Rules shared by every backend:
// - All ranks of the group call the same operations in the same order (MPI's and NCCL's
//   rule); the hierarchical partition collectives keep this even though their second step
//   starts later.
// - Buffers must stay alive and untouched until the Request completes.
// - Sums are element-wise; bf16 sums are computed in f32 and rounded once per addition.
// - A Collectives object must outlive the Requests it returned, and be destroyed before
//   MPI_Finalize.
#include <cstddef>
#include <deque>
#include <functional>
#include <memory>
#include <string>

#include "mics/comm/dtype.hpp"
#include "mics/comm/group.hpp"
#include "mics/comm/process_groups.hpp"

namespace mics::comm {

namespace detail {
// One operation in flight, as a backend sees it.
class PendingOp {
public:
  virtual ~PendingOp() = default;
  virtual bool test() = 0;  // true once complete; counters are recorded then
  virtual void wait() = 0;
  virtual std::string describe() const { return "a collective"; }
};
}  // namespace detail

// A handle on an operation in flight. Movable, not copyable; a default-constructed
// Request is already complete. Destroying an incomplete Request waits for it (except
// while an exception unwinds, when it is abandoned: the job is about to end).
class Request {
public:
  Request() = default;
  explicit Request(std::unique_ptr<detail::PendingOp> op) : op_(std::move(op)) {}
  Request(Request&&) noexcept = default;
  Request& operator=(Request&& other);  // completes the request it replaces first
  Request(const Request&) = delete;
  Request& operator=(const Request&) = delete;
  ~Request();

  bool done() const noexcept { return !op_; }
  bool test();  // true when complete (then done() too)
  void wait();

private:
  std::unique_ptr<detail::PendingOp> op_;
};

class Collectives {
public:
  Collectives() = default;
  virtual ~Collectives() = default;
  Collectives(const Collectives&) = delete;
  Collectives& operator=(const Collectives&) = delete;

  virtual const char* backend() const noexcept = 0;  // "mpi", "nccl"

  // In place: buf holds group.size() chunks of chunk_count elements; this rank's chunk is
  // at index group.rank() and, on completion, chunk r holds rank r's chunk.
  virtual Request all_gather(void* buf, std::size_t chunk_count, DType dt, Group& group) = 0;
  // send holds group.size() chunks; recv (chunk_count elements, not overlapping send)
  // receives the sum over ranks of chunk group.rank().
  virtual Request reduce_scatter(const void* send, void* recv, std::size_t chunk_count, DType dt,
                                 Group& group) = 0;
  // In place sum of count elements over the group.
  virtual Request all_reduce(void* buf, std::size_t count, DType dt, Group& group) = 0;
  virtual Request broadcast(void* buf, std::size_t count, DType dt, int root, Group& group) = 0;
  virtual void barrier(Group& group) = 0;

  // Over the partition group (chunk q = partition rank). With hierarchical = true and a
  // group spanning nodes, the two-step zero-copy algorithms of docs/DESIGN.md section 3:
  //   all-gather:      inter all-gather into block [j*k*c, (j+1)*k*c), then intra
  //                    all-gather of k*c blocks; no reordering copy.
  //   reduce-scatter:  intra reduce-scatter of k*c blocks into a temporary of k*c
  //                    elements, then inter reduce-scatter of it into recv.
  // Otherwise (flat, or a group inside one node) the plain collective on partition().
  // Flat and hierarchical give identical bytes for the all-gather, and equal sums up to
  // summation order for the reduce-scatter.
  Request gather_partition(void* buf, std::size_t chunk_count, DType dt, ProcessGroups& groups,
                           bool hierarchical);
  Request reduce_scatter_partition(const void* send, void* recv, std::size_t chunk_count, DType dt,
                                   ProcessGroups& groups, bool hierarchical);

protected:
  // Scratch memory of the backend's kind (host or device), freed when the last owner
  // lets go.
  virtual std::shared_ptr<void> allocate_temp(std::size_t bytes) = 0;
  // Called when a two-step collective is issued, for the group its second step will use:
  // a backend that sets up per-group state collectively (NCCL) must do it here, while
  // every rank is at the same call, not later when each rank starts step 2 on its own.
  virtual void prepare(Group& group) { (void)group; }

private:
  struct Chain;
  class ChainOp;
  // Starts step 1 now and step 2 once step 1 has completed, always in the order the
  // chains were created (so every rank starts its second steps in the same order).
  Request chain(Request step1, std::function<Request()> step2, std::shared_ptr<void> keep);
  void start_ready_chains(const Chain* must_start);
  std::deque<std::shared_ptr<Chain>> waiting_;  // step 2 not started yet, oldest first
};

}  // namespace mics::comm
