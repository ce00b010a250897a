#include "mics/comm/mpi_collectives.hpp"

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>

#include "mics/core/check.hpp"
#include "mics/core/error.hpp"
#include "progress.hpp"
#include "schedules.hpp"

namespace mics::comm {
namespace {

void check_group(const Group& g, const char* what) {
  MICS_ASSERT(g.valid(), std::string(what) + " on group '" + g.name() + "' without a communicator");
}

bool thread_multiple() {
  int provided = MPI_THREAD_SINGLE;
  MICS_CHECK_MPI(MPI_Query_thread(&provided));
  return provided == MPI_THREAD_MULTIPLE;
}

std::shared_ptr<mpi::P2POp> new_op(const char* what, Group& g, std::uint64_t message) {
  auto op = std::make_shared<mpi::P2POp>();
  op->what = std::string(what) + " on group '" + g.name() + "' (" + std::to_string(g.size()) + " ranks)";
  op->comm = g.comm();
  op->world_of.reserve(static_cast<std::size_t>(g.size()));
  for (int r = 0; r < g.size(); ++r) op->world_of.push_back(g.world_rank_of(r));
  op->traffic = g.traffic();
  op->message = message;
  return op;
}

}  // namespace

MpiCollectives::MpiCollectives() : progress_(std::make_unique<mpi::Progress>(thread_multiple())) {}

MpiCollectives::~MpiCollectives() = default;

bool MpiCollectives::progress_thread() const noexcept { return progress_->threaded(); }

// Groups of one rank have no peer: the collective is over when it is called. It
// completes on the caller, before any operation, tag or progress-thread work exists (a
// reduce-scatter copies its one chunk to recv, the others leave their buffer as it is),
// and only the call is counted: no bytes, no busy or exposed time.
static Request alone(Group& g, std::uint64_t message) {
  detail::count_call(*g.traffic(), message);
  return Request();
}

static Request issue(mpi::Progress& progress, const std::shared_ptr<mpi::P2POp>& op, Group& g) {
  // Every rank schedules the same lanes for the same call, so they agree on the tags.
  for (auto& lane : op->lanes) lane.tag = g.next_tag();
  progress.submit(op);
  return Request(std::make_unique<mpi::MpiOp>(progress, op));
}

Request MpiCollectives::all_gather(void* buf, std::size_t chunk_count, DType dt, Group& group) {
  check_group(group, "all_gather");
  const std::size_t cb = chunk_count * dtype_size(dt);
  if (group.size() == 1) return alone(group, cb);
  auto op = new_op("all_gather", group, cb * static_cast<std::uint64_t>(group.size()));
  mpi::schedule_all_gather(*op, mpi::ring_of(group), buf, cb);
  return issue(*progress_, op, group);
}

Request MpiCollectives::reduce_scatter(const void* send, void* recv, std::size_t chunk_count, DType dt,
                                       Group& group) {
  check_group(group, "reduce_scatter");
  MICS_ASSERT(send != recv, "reduce_scatter needs distinct send and recv buffers");
  const std::size_t cb = chunk_count * dtype_size(dt);
  if (group.size() == 1) {
    if (cb > 0) std::memcpy(recv, send, cb);
    return alone(group, cb);
  }
  auto op = new_op("reduce_scatter", group, cb * static_cast<std::uint64_t>(group.size()));
  mpi::schedule_reduce_scatter(*op, mpi::ring_of(group), send, recv, chunk_count, dt);
  return issue(*progress_, op, group);
}

Request MpiCollectives::all_reduce(void* buf, std::size_t count, DType dt, Group& group) {
  check_group(group, "all_reduce");
  if (group.size() == 1) return alone(group, count * dtype_size(dt));
  auto op = new_op("all_reduce", group, count * dtype_size(dt));
  if (count > 0) mpi::schedule_all_reduce(*op, mpi::ring_of(group), buf, count, dt);
  return issue(*progress_, op, group);
}

Request MpiCollectives::broadcast(void* buf, std::size_t count, DType dt, int root, Group& group) {
  check_group(group, "broadcast");
  MICS_ASSERT(root >= 0 && root < group.size(), "broadcast root outside the group");
  if (group.size() == 1) return alone(group, count * dtype_size(dt));
  auto op = new_op("broadcast", group, count * dtype_size(dt));
  if (count > 0) mpi::schedule_broadcast(*op, mpi::ring_of(group), buf, count * dtype_size(dt), root);
  return issue(*progress_, op, group);
}

const char* MpiCollectives::all_reduce_algorithm(std::size_t count, DType dt, const Group& group) {
  return mpi::all_reduce_algorithm(mpi::ring_of(group), count * dtype_size(dt));
}

// MPI's own barrier on the caller's thread (MPI_THREAD_MULTIPLE allows it beside the
// progress thread's messages; collectives and point-to-point never match each other).
void MpiCollectives::barrier(Group& group) {
  check_group(group, "barrier");
  if (group.size() == 1) {
    detail::count_call(*group.traffic(), 0);
    return;
  }
  const double t0 = MPI_Wtime();
  detail::begin_busy(*group.traffic(), t0);
  MICS_CHECK_MPI(MPI_Barrier(group.comm()));
  const double t1 = MPI_Wtime();
  detail::end_busy(*group.traffic(), t1);
  detail::count_call(*group.traffic(), 0);
  detail::count_exposed(*group.traffic(), t1 - t0);
}

void MpiCollectives::sum_host(double* values, std::size_t n, Group& group) {
  if (group.size() <= 1 || n == 0) return;
  all_reduce(values, n, DType::f64, group).wait();
}

void MpiCollectives::all_gather_host(double* buf, std::size_t chunk_count, Group& group) {
  if (group.size() <= 1 || chunk_count == 0) return;
  all_gather(buf, chunk_count, DType::f64, group).wait();
}

Request MpiCollectives::then(Request step1, std::function<Request()> step2, std::shared_ptr<void> keep) {
  auto c = std::make_shared<mpi::Chain>();
  c->first = mpi::op_of(step1);
  c->what = c->first ? c->first->what.substr(0, c->first->what.find(' ')) + " (two-step, hierarchical)"
                     : std::string("a two-step collective");
  c->step1 = std::move(step1);
  c->start2 = std::move(step2);
  c->keep = std::move(keep);
  progress_->submit(c);
  return Request(std::make_unique<mpi::ChainOp>(*progress_, std::move(c)));
}

std::shared_ptr<void> MpiCollectives::allocate_temp(std::size_t bytes) {
  // 64-byte alignment for vector loads in whatever reduces into it.
  void* p = std::aligned_alloc(64, (bytes + 63) / 64 * 64 + 64);
  if (p == nullptr) throw Error("out of host memory allocating " + std::to_string(bytes) + " bytes");
  return std::shared_ptr<void>(p, [](void* q) { std::free(q); });
}

}  // namespace mics::comm
