#include "mics/comm/mpi_collectives.hpp"

#include <climits>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>

#include "../traffic.hpp"
#include "mics/core/check.hpp"
#include "mics/core/error.hpp"

namespace mics::comm {
namespace {

using detail::Pattern;

MPI_Datatype mpi_type(DType dt) {
  switch (dt) {
    case DType::f32: return MPI_FLOAT;
    case DType::f64: return MPI_DOUBLE;
    case DType::bf16: return MPI_UINT16_T;  // raw bits; sums go through bf16_sum
  }
  return MPI_DATATYPE_NULL;
}

int mpi_count(std::size_t count, const char* what) {
  if (count > static_cast<std::size_t>(INT_MAX))
    throw Error(std::string(what) + ": " + std::to_string(count) +
                " elements exceed MPI's int count limit (2^31-1); split the message");
  return static_cast<int>(count);
}

void check_group(const Group& g, const char* what) {
  MICS_ASSERT(g.valid(), std::string(what) + " on group '" + g.name() + "' without a communicator");
}

// bf16 sum: widen both operands to f32, add, round to nearest even.
void bf16_sum(void* in, void* inout, int* len, MPI_Datatype*) {
  const auto* a = static_cast<const std::uint16_t*>(in);
  auto* b = static_cast<std::uint16_t*>(inout);
  for (int i = 0; i < *len; ++i) {
    const float s = mics::device::bf16_to_float({a[i]}) + mics::device::bf16_to_float({b[i]});
    b[i] = mics::device::float_to_bf16(s).bits;
  }
}

class MpiOp final : public detail::PendingOp {
public:
  MpiOp(MPI_Request req, const Group& g, std::uint64_t bytes, std::uint64_t message, double t0)
      : req_(req), counters_(g.shared_counters()), bytes_(bytes), message_(message), t0_(t0) {}
  bool test() override {
    int flag = 0;
    MICS_CHECK_MPI(MPI_Test(&req_, &flag, MPI_STATUS_IGNORE));
    if (flag) finish();
    return flag != 0;
  }
  void wait() override {
    MICS_CHECK_MPI(MPI_Wait(&req_, MPI_STATUS_IGNORE));
    finish();
  }

private:
  void finish() { detail::record(*counters_, bytes_, message_, MPI_Wtime() - t0_); }
  MPI_Request req_;
  std::shared_ptr<GroupCounters> counters_;
  std::uint64_t bytes_, message_;
  double t0_;
};

Request make_request(MPI_Request req, const Group& g, Pattern pattern, std::uint64_t message, double t0) {
  return Request(std::make_unique<MpiOp>(req, g, detail::ring_bytes(pattern, g.size(), message), message, t0));
}

}  // namespace

MpiCollectives::MpiCollectives() {
  MICS_CHECK_MPI(MPI_Op_create(&bf16_sum, 1, &bf16_sum_));
}

MpiCollectives::~MpiCollectives() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized && bf16_sum_ != MPI_OP_NULL) MPI_Op_free(&bf16_sum_);
}

Request MpiCollectives::all_gather(void* buf, std::size_t chunk_count, DType dt, Group& group) {
  check_group(group, "all_gather");
  const int n = mpi_count(chunk_count, "all_gather");
  const std::uint64_t message = chunk_count * dtype_size(dt) * static_cast<std::uint64_t>(group.size());
  const double t0 = MPI_Wtime();
  MPI_Request req = MPI_REQUEST_NULL;
  MICS_CHECK_MPI(MPI_Iallgather(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, buf, n, mpi_type(dt), group.comm(), &req));
  return make_request(req, group, Pattern::gather_or_scatter, message, t0);
}

Request MpiCollectives::reduce_scatter(const void* send, void* recv, std::size_t chunk_count, DType dt,
                                       Group& group) {
  check_group(group, "reduce_scatter");
  MICS_ASSERT(send != recv, "reduce_scatter needs distinct send and recv buffers");
  const int n = mpi_count(chunk_count, "reduce_scatter");
  const std::uint64_t message = chunk_count * dtype_size(dt) * static_cast<std::uint64_t>(group.size());
  const double t0 = MPI_Wtime();
  MPI_Request req = MPI_REQUEST_NULL;
  MICS_CHECK_MPI(MPI_Ireduce_scatter_block(send, recv, n, mpi_type(dt),
                                           dt == DType::bf16 ? bf16_sum_ : MPI_SUM, group.comm(), &req));
  return make_request(req, group, Pattern::gather_or_scatter, message, t0);
}

Request MpiCollectives::all_reduce(void* buf, std::size_t count, DType dt, Group& group) {
  check_group(group, "all_reduce");
  const int n = mpi_count(count, "all_reduce");
  const double t0 = MPI_Wtime();
  MPI_Request req = MPI_REQUEST_NULL;
  MICS_CHECK_MPI(MPI_Iallreduce(MPI_IN_PLACE, buf, n, mpi_type(dt), dt == DType::bf16 ? bf16_sum_ : MPI_SUM,
                                group.comm(), &req));
  return make_request(req, group, Pattern::all_reduce, count * dtype_size(dt), t0);
}

Request MpiCollectives::broadcast(void* buf, std::size_t count, DType dt, int root, Group& group) {
  check_group(group, "broadcast");
  MICS_ASSERT(root >= 0 && root < group.size(), "broadcast root outside the group");
  const int n = mpi_count(count, "broadcast");
  const double t0 = MPI_Wtime();
  MPI_Request req = MPI_REQUEST_NULL;
  MICS_CHECK_MPI(MPI_Ibcast(buf, n, mpi_type(dt), root, group.comm(), &req));
  return make_request(req, group, Pattern::broadcast, count * dtype_size(dt), t0);
}

void MpiCollectives::barrier(Group& group) {
  check_group(group, "barrier");
  const double t0 = MPI_Wtime();
  MICS_CHECK_MPI(MPI_Barrier(group.comm()));
  detail::record(*group.shared_counters(), 0, 0, MPI_Wtime() - t0);
}

std::shared_ptr<void> MpiCollectives::allocate_temp(std::size_t bytes) {
  // 64-byte alignment for vector loads in whatever reduces into it.
  void* p = std::aligned_alloc(64, (bytes + 63) / 64 * 64 + 64);
  if (p == nullptr) throw Error("out of host memory allocating " + std::to_string(bytes) + " bytes");
  return std::shared_ptr<void>(p, [](void* q) { std::free(q); });
}

}  // namespace mics::comm
