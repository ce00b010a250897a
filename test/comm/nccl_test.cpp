// The NCCL backend on device memory. Needs one GPU per rank on the host; otherwise every
// case says so in one line and passes.
#include <cuda_runtime.h>

#include <boost/test/unit_test.hpp>
#include <cstdio>
#include <vector>

#include "mics/comm/cuda_probe.hpp"
#include "mics/comm/nccl_collectives.hpp"
#include "mics/comm/process_groups.hpp"
#include "mics/core/check_cuda.hpp"
#include "mpi_test_util.hpp"

using mics::comm::DType;
using mics::comm::NcclCollectives;
using mics::comm::ProcessGroups;
using mics::test::world_rank;
using mics::test::world_size;

namespace {

// Same verdict on every rank (all ranks of a test share one host).
bool gpus_for_every_rank() {
  int count = 0;
  const bool any = mics::comm::cuda_device_available() && cudaGetDeviceCount(&count) == cudaSuccess;
  int ok = any && count >= world_size() ? 1 : 0, all = 0;
  MPI_Allreduce(&ok, &all, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
  if (!all && world_rank() == 0)
    std::printf("SKIPPED: the NCCL tests need one CUDA device per rank (%d visible for %d ranks)\n",
                count, world_size());
  return all == 1;
}

// Boost.Test precondition: a skipped case is reported as skipped, not as passed.
boost::test_tools::assertion_result have_gpus(boost::unit_test::test_unit_id) {
  boost::test_tools::assertion_result ok(gpus_for_every_rank());
  if (!ok) ok.message() << "no CUDA device for every rank";
  return ok;
}

struct DeviceBuffer {
  explicit DeviceBuffer(std::size_t count) : n(count) { MICS_CHECK_CUDA(cudaMalloc(&p, n * sizeof(float))); }
  ~DeviceBuffer() { cudaFree(p); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  void put(const std::vector<float>& h) { MICS_CHECK_CUDA(cudaMemcpy(p, h.data(), n * sizeof(float), cudaMemcpyHostToDevice)); }
  std::vector<float> get() const {
    std::vector<float> h(n);
    MICS_CHECK_CUDA(cudaMemcpy(h.data(), p, n * sizeof(float), cudaMemcpyDeviceToHost));
    return h;
  }
  void* p = nullptr;
  std::size_t n;
};

}  // namespace

BOOST_AUTO_TEST_CASE(nccl_collectives_on_the_world, *boost::unit_test::precondition(have_gpus)) {
  const int W = world_size(), me = world_rank();
  const std::size_t c = 1000, n = c * static_cast<std::size_t>(W);
  ProcessGroups pg = mics::comm::make_process_groups(MPI_COMM_WORLD, 0, W, false);
  {
    NcclCollectives coll;
    std::vector<float> h(n, -1.0f);
    for (std::size_t e = 0; e < c; ++e) h[static_cast<std::size_t>(me) * c + e] = static_cast<float>(me * 1000 + e % 97);
    DeviceBuffer ag(n);
    ag.put(h);
    coll.gather_partition(ag.p, c, DType::f32, pg, false).wait();
    long wrong = 0;
    const auto got = ag.get();
    for (int r = 0; r < W; ++r)
      for (std::size_t e = 0; e < c; ++e) wrong += got[static_cast<std::size_t>(r) * c + e] != static_cast<float>(r * 1000 + e % 97);
    BOOST_CHECK_EQUAL(wrong, 0);

    std::vector<float> s(n);
    for (std::size_t i = 0; i < n; ++i) s[i] = static_cast<float>((me + 1) * (i % 5));
    DeviceBuffer send(n), recv(c);
    send.put(s);
    coll.reduce_scatter_partition(send.p, recv.p, c, DType::f32, pg, false).wait();
    const auto rs = recv.get();
    wrong = 0;
    for (std::size_t e = 0; e < c; ++e) {
      const std::size_t i = static_cast<std::size_t>(me) * c + e;
      wrong += rs[e] != static_cast<float>(W * (W + 1) / 2 * static_cast<int>(i % 5));
    }
    BOOST_CHECK_EQUAL(wrong, 0);

    DeviceBuffer ar(c);
    ar.put(std::vector<float>(c, 1.0f));
    coll.all_reduce(ar.p, c, DType::f32, pg.world()).wait();
    for (float v : ar.get()) wrong += v != static_cast<float>(W);
    coll.broadcast(ag.p, n, DType::f32, 0, pg.world()).wait();
    coll.barrier(pg.world());
    BOOST_CHECK_EQUAL(wrong, 0);
    BOOST_CHECK_EQUAL(pg.world().counters().calls, 3u);
  }
}
