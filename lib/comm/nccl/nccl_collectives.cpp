#include "mics/comm/nccl_collectives.hpp"

#include <chrono>
#include <cstdio>
#include <string>
#include <thread>

#include "../traffic.hpp"
#include "device_comm.hpp"
#include "mics/comm/cuda_probe.hpp"
#include "mics/core/check.hpp"
#include "mics/core/check_cuda.hpp"
#include "mics/core/error.hpp"

namespace mics::comm {
namespace {

using detail::Pattern;

ncclDataType_t nccl_type(DType dt) {
  switch (dt) {
    case DType::f32: return ncclFloat32;
    case DType::f64: return ncclFloat64;
    case DType::bf16: return ncclBfloat16;
  }
  return ncclFloat32;
}

// Completion through an event recorded behind the operation on the group's stream. Never
// hangs: test() and wait() also check the communicator's asynchronous error and, with a
// timeout (--comm-timeout), the time since the operation was issued; on either they abort
// the communicator (so no rank stays blocked in it) and throw naming group and operation.
class NcclOp final : public detail::PendingOp {
public:
  NcclOp(cudaStream_t stream, const Group& g, std::uint64_t bytes, std::uint64_t message,
         const char* what, ncclComm_t* comm, double timeout_s)
      : counters_(g.shared_counters()), bytes_(bytes), message_(message), what_(what),
        group_(g.name()), comm_(comm), timeout_s_(timeout_s),
        issued_(std::chrono::steady_clock::now()) {
    MICS_CHECK_CUDA(cudaEventCreateWithFlags(&start_, cudaEventDefault));
    MICS_CHECK_CUDA(cudaEventCreateWithFlags(&done_, cudaEventDefault));
    MICS_CHECK_CUDA(cudaEventRecord(start_, stream));
  }
  ~NcclOp() override {
    cudaEventDestroy(start_);
    cudaEventDestroy(done_);
  }
  NcclOp(const NcclOp&) = delete;
  NcclOp& operator=(const NcclOp&) = delete;
  void mark_end(cudaStream_t stream) { MICS_CHECK_CUDA(cudaEventRecord(done_, stream)); }
  bool test() override {
    const cudaError_t rc = cudaEventQuery(done_);
    if (rc == cudaErrorNotReady) {
      check_progress();
      return false;
    }
    MICS_CHECK_CUDA(rc);
    finish();
    return true;
  }
  void wait() override {
    while (!test()) std::this_thread::yield();
  }

private:
  void check_progress() {
    ncclResult_t async = ncclSuccess;
    if (*comm_ != nullptr) ncclCommGetAsyncError(*comm_, &async);
    if (async != ncclSuccess && async != ncclInProgress)
      abort_and_throw(std::string("failed: ") + ncclGetErrorString(async));
    if (timeout_s_ > 0 &&
        std::chrono::duration<double>(std::chrono::steady_clock::now() - issued_).count() > timeout_s_)
    {
      char secs[32];
      std::snprintf(secs, sizeof secs, "%g", timeout_s_);
      abort_and_throw(std::string("did not complete within --comm-timeout ") + secs +
                      " s (a peer may have died or be stuck)");
    }
  }
  [[noreturn]] void abort_and_throw(const std::string& why) {
    if (*comm_ != nullptr) ncclCommAbort(*comm_);
    *comm_ = nullptr;  // the destructor must not destroy an aborted communicator
    throw Error("NCCL " + std::string(what_) + " on group '" + group_ + "' " + why +
                "; its communicator was aborted");
  }
  void finish() {
    float ms = 0.0f;
    MICS_CHECK_CUDA(cudaEventElapsedTime(&ms, start_, done_));
    detail::record(*counters_, bytes_, message_, static_cast<double>(ms) * 1e-3);
  }
  cudaEvent_t start_ = nullptr, done_ = nullptr;
  std::shared_ptr<GroupCounters> counters_;
  std::uint64_t bytes_, message_;
  const char* what_;
  std::string group_;
  ncclComm_t* comm_;
  double timeout_s_;
  std::chrono::steady_clock::time_point issued_;
};

int local_rank() {
  int rank = 0, local = 0;
  MICS_CHECK_MPI(MPI_Comm_rank(MPI_COMM_WORLD, &rank));
  MPI_Comm node = MPI_COMM_NULL;
  MICS_CHECK_MPI(MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, rank, MPI_INFO_NULL, &node));
  MICS_CHECK_MPI(MPI_Comm_rank(node, &local));
  MPI_Comm_free(&node);
  return local;
}

}  // namespace

NcclCollectives::NcclCollectives(int device, double timeout_s)
    : timeout_s_(timeout_s), temps_(std::make_unique<detail::DeviceTempPool>()) {
  if (!cuda_device_available())
    throw Error("the NCCL backend needs a CUDA device and none is visible (cudaGetDeviceCount)");
  int count = 0;
  MICS_CHECK_CUDA(cudaGetDeviceCount(&count));
  device_ = device >= 0 ? device : local_rank() % count;
  MICS_CHECK_CUDA(cudaSetDevice(device_));
  MICS_CHECK_CUDA(cudaEventCreateWithFlags(&ready_, cudaEventDisableTiming));
}

NcclCollectives::~NcclCollectives() {
  // NCCL communicators before the streams they use; all of it before MPI_Finalize (the
  // owner's scope guarantees that), and no MPI needed here.
  for (auto& [comm, ch] : channels_) {
    if (ch.comm) ncclCommDestroy(ch.comm);
    ch.stream.reset();
  }
  temps_.reset();
  if (ready_) cudaEventDestroy(ready_);
}

std::size_t NcclCollectives::temp_allocations() const { return temps_->mallocs(); }

NcclCollectives::Channel& NcclCollectives::channel(Group& group) {
  MICS_ASSERT(group.valid(), "NCCL collective on group '" + group.name() + "' without a communicator");
  auto it = channels_.find(group.comm());
  if (it != channels_.end()) return it->second;
  ncclUniqueId id{};
  if (group.rank() == 0) MICS_CHECK_NCCL(ncclGetUniqueId(&id));
  MICS_CHECK_MPI(MPI_Bcast(&id, static_cast<int>(sizeof id), MPI_BYTE, 0, group.comm()));
  Channel ch;
  MICS_CHECK_CUDA(cudaSetDevice(device_));
  MICS_CHECK_NCCL(ncclCommInitRank(&ch.comm, group.size(), id, group.rank()));
  ch.stream = std::make_unique<detail::CommStream>();
  ch.stream->create(compute_);
  return channels_.emplace(group.comm(), std::move(ch)).first->second;
}

cudaStream_t NcclCollectives::stream_of(Group& group) {
  return group.size() > 1 ? channel(group).stream->get() : nullptr;
}

void NcclCollectives::order_after_compute(Channel& ch) {
  if (compute_ == nullptr) {
    // The legacy stream does not order the backend's non-blocking streams: only a device
    // synchronisation makes every earlier kernel's output visible (correct, slower).
    MICS_CHECK_CUDA(cudaDeviceSynchronize());
    return;
  }
  MICS_CHECK_CUDA(cudaEventRecord(ready_, compute_));
  MICS_CHECK_CUDA(cudaStreamWaitEvent(ch.stream->get(), ready_, 0));
}

Request NcclCollectives::all_gather(void* buf, std::size_t chunk_count, DType dt, Group& group) {
  // One rank: the buffer already holds the one chunk.
  if (group.size() == 1) return detail::one_rank_call(group, chunk_count * dtype_size(dt));
  Channel& ch = channel(group);
  order_after_compute(ch);
  const std::size_t bytes = chunk_count * dtype_size(dt);
  const std::uint64_t message = bytes * static_cast<std::uint64_t>(group.size());
  auto op = std::make_unique<NcclOp>(ch.stream->get(), group, detail::ring_bytes(Pattern::gather_or_scatter, group.size(), message), message,
                                     "all-gather", &ch.comm, timeout_s_);
  // In place: NCCL treats sendbuff == recvbuff + rank*count as the in-place case.
  const void* mine = static_cast<const char*>(buf) + static_cast<std::size_t>(group.rank()) * bytes;
  MICS_CHECK_NCCL(ncclAllGather(mine, buf, chunk_count, nccl_type(dt), ch.comm, ch.stream->get()));
  op->mark_end(ch.stream->get());
  return Request(std::move(op));
}

Request NcclCollectives::reduce_scatter(const void* send, void* recv, std::size_t chunk_count, DType dt,
                                        Group& group) {
  if (group.size() == 1) {
    detail::ordered_device_copy(recv, send, chunk_count * dtype_size(dt), compute_);
    return detail::one_rank_call(group, chunk_count * dtype_size(dt));
  }
  Channel& ch = channel(group);
  order_after_compute(ch);
  const std::uint64_t message = chunk_count * dtype_size(dt) * static_cast<std::uint64_t>(group.size());
  auto op = std::make_unique<NcclOp>(ch.stream->get(), group, detail::ring_bytes(Pattern::gather_or_scatter, group.size(), message), message,
                                     "reduce-scatter", &ch.comm, timeout_s_);
  MICS_CHECK_NCCL(ncclReduceScatter(send, recv, chunk_count, nccl_type(dt), ncclSum, ch.comm, ch.stream->get()));
  op->mark_end(ch.stream->get());
  return Request(std::move(op));
}

Request NcclCollectives::all_reduce(void* buf, std::size_t count, DType dt, Group& group) {
  if (group.size() == 1) return detail::one_rank_call(group, count * dtype_size(dt));
  Channel& ch = channel(group);
  order_after_compute(ch);
  const std::uint64_t message = count * dtype_size(dt);
  auto op = std::make_unique<NcclOp>(ch.stream->get(), group, detail::ring_bytes(Pattern::all_reduce, group.size(), message), message,
                                     "all-reduce", &ch.comm, timeout_s_);
  MICS_CHECK_NCCL(ncclAllReduce(buf, buf, count, nccl_type(dt), ncclSum, ch.comm, ch.stream->get()));
  op->mark_end(ch.stream->get());
  return Request(std::move(op));
}

Request NcclCollectives::broadcast(void* buf, std::size_t count, DType dt, int root, Group& group) {
  if (group.size() == 1) return detail::one_rank_call(group, count * dtype_size(dt));
  Channel& ch = channel(group);
  order_after_compute(ch);
  const std::uint64_t message = count * dtype_size(dt);
  auto op = std::make_unique<NcclOp>(ch.stream->get(), group, detail::ring_bytes(Pattern::broadcast, group.size(), message), message,
                                     "broadcast", &ch.comm, timeout_s_);
  MICS_CHECK_NCCL(ncclBroadcast(buf, buf, count, nccl_type(dt), root, ch.comm, ch.stream->get()));
  op->mark_end(ch.stream->get());
  return Request(std::move(op));
}

void NcclCollectives::barrier(Group& group) {
  // The device work of this group first, then the ranks.
  if (group.size() == 1) {
    detail::one_rank_call(group, 0);
    return;
  }
  Channel& ch = channel(group);
  const double t0 = MPI_Wtime();
  MICS_CHECK_CUDA(cudaStreamSynchronize(ch.stream->get()));
  MICS_CHECK_MPI(MPI_Barrier(group.comm()));
  detail::record(*group.shared_counters(), 0, 0, MPI_Wtime() - t0);
}

std::shared_ptr<void> NcclCollectives::allocate_temp(std::size_t bytes) {
  return temps_->get(bytes);
}

}  // namespace mics::comm
