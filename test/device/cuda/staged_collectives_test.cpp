// StagedCollectives (--comm mpi over device buffers) under mpirun, with every rank on
// GPU 0: all-gather, reduce-scatter, all-reduce and broadcast in f32 and bf16, checked
// exactly (small integers, exact in bf16), completed both by wait() and by polling test().
// Own main: `--gpu-probe` answers 0 when a GPU is visible, 77 otherwise, without MPI, so
// that CTest can skip the whole mpirun with one line (see CMakeLists.txt).
#define BOOST_TEST_NO_MAIN
#include <boost/test/unit_test.hpp>
#include <mpi.h>

#include <cstring>
#include <vector>

#include "../backend_test_util.hpp"
#include "mics/comm/group.hpp"
#include "mics/comm/process_groups.hpp"
#include "mics/comm/staged_collectives.hpp"

using namespace mics::test;
using mics::device::DType;

namespace {

struct World {
  mics::comm::Group group;
  std::unique_ptr<Backend> be = mics::device::make_backend("cuda", 1, 0);
  World() : group(dup_world(), "world") {}
  static MPI_Comm dup_world() {
    MPI_Comm c = MPI_COMM_NULL;
    MPI_Comm_dup(MPI_COMM_WORLD, &c);
    return c;
  }
};

void complete(mics::comm::Request& r, bool poll) {
  if (poll) {
    while (!r.test()) {
    }
  } else {
    r.wait();
  }
  BOOST_TEST(r.done());
}

}  // namespace

BOOST_AUTO_TEST_SUITE(staged_collectives)

BOOST_AUTO_TEST_CASE(all_operations_exact) {
  World w;
  const int W = w.group.size(), r = w.group.rank();
  mics::comm::StagedCollectives coll;
  coll.set_compute_stream(static_cast<cudaStream_t>(w.be->compute_stream().native()));
  const std::size_t c = 1000;  // elements per chunk
  for (DType dt : {DType::f32, DType::bf16})
    for (bool poll : {false, true}) {
      BOOST_TEST_CONTEXT(dtype_name(dt) << (poll ? " polled" : " waited")) {
        // all-gather in place: chunk q holds q+1+i%5 after it.
        std::vector<double> buf(c * static_cast<std::size_t>(W), -1.0), want(buf.size());
        for (std::size_t q = 0; q < static_cast<std::size_t>(W); ++q)
          for (std::size_t i = 0; i < c; ++i) {
            want[q * c + i] = static_cast<double>(q + 1 + i % 5);
            if (q == static_cast<std::size_t>(r)) buf[q * c + i] = want[q * c + i];
          }
        DevTensor g(*w.be, dt, buf);
        auto req = coll.all_gather(g.get(), c, dt, w.group);
        complete(req, poll);
        BOOST_TEST(g.download() == want);

        // reduce-scatter: rank s sends (s+1)*(q+1) in chunk q; rank r gets sum_s (s+1)*(r+1).
        std::vector<double> send(c * static_cast<std::size_t>(W));
        for (std::size_t q = 0; q < static_cast<std::size_t>(W); ++q)
          for (std::size_t i = 0; i < c; ++i) send[q * c + i] = static_cast<double>((r + 1) * (q + 1));
        DevTensor s(*w.be, dt, send), out(*w.be, dt, c);
        auto rs = coll.reduce_scatter(s.get(), out.get(), c, dt, w.group);
        complete(rs, poll);
        BOOST_TEST(out.download() == std::vector<double>(c, static_cast<double>(W * (W + 1) / 2 * (r + 1))));

        // all-reduce and broadcast from the last rank.
        DevTensor a(*w.be, dt, std::vector<double>(c, static_cast<double>(r + 1)));
        auto ar = coll.all_reduce(a.get(), c, dt, w.group);
        complete(ar, poll);
        BOOST_TEST(a.download() == std::vector<double>(c, static_cast<double>(W * (W + 1) / 2)));
        DevTensor bc(*w.be, dt, std::vector<double>(c, static_cast<double>(r == W - 1 ? 42 : r)));
        auto br = coll.broadcast(bc.get(), c, dt, W - 1, w.group);
        complete(br, poll);
        BOOST_TEST(bc.download() == std::vector<double>(c, 42.0));
      }
    }
  coll.barrier(w.group);
  // Traffic is counted as for host MPI collectives.
  BOOST_TEST(w.group.counters().calls > 0u);
}

BOOST_AUTO_TEST_CASE(kernel_output_is_ordered_before_the_copy_out) {
  // A kernel queued on the compute stream just before the collective must be seen by it.
  World w;
  mics::comm::StagedCollectives coll;
  coll.set_compute_stream(static_cast<cudaStream_t>(w.be->compute_stream().native()));
  const std::int64_t n = 1 << 22;
  mics::device::Buffer x(*w.be, DType::f32, n);
  w.be->fill(DType::f32, x.get(), n, 1.0);
  w.be->scale(DType::f32, x.get(), n, 3.0);  // no host synchronisation in between
  auto req = coll.all_reduce(x.get(), static_cast<std::size_t>(n), DType::f32, w.group);
  req.wait();
  std::vector<float> host(static_cast<std::size_t>(n));
  w.be->copy_to_host(host.data(), x.get(), host.size() * 4);
  const float want = 3.0f * static_cast<float>(w.group.size());
  bool ok = true;
  for (float v : host) ok = ok && v == want;
  BOOST_TEST(ok);
}

BOOST_AUTO_TEST_CASE(hierarchical_reduce_scatter_pools_its_temporary) {
  // Two emulated nodes, one partition group of all ranks, hierarchical: step 1 sums over
  // the node into a temporary from allocate_temp, step 2 over the nodes. Repeated calls
  // must reuse one pooled temporary (no cudaMalloc/cudaFree per call). At 2 ranks the
  // intra-node step is a group of one (a copy on the compute stream).
  World w;
  const int W = w.group.size();
  if (W < 2) {
    BOOST_TEST_MESSAGE("one rank: no group spans nodes, nothing to check");
    return;
  }
  auto pg = mics::comm::make_process_groups(MPI_COMM_WORLD, W / 2, W, true);
  BOOST_TEST_REQUIRE(pg.spans_nodes());
  mics::comm::StagedCollectives coll;
  coll.set_compute_stream(static_cast<cudaStream_t>(w.be->compute_stream().native()));
  const std::size_t c = 512;
  const int me = w.group.rank(), q = pg.partition().rank();
  std::vector<double> send(c * static_cast<std::size_t>(W));
  for (std::size_t k = 0; k < static_cast<std::size_t>(W); ++k)
    for (std::size_t i = 0; i < c; ++i) send[k * c + i] = static_cast<double>((me + 1) * (k + 1));
  DevTensor s(*w.be, DType::f32, send), out(*w.be, DType::f32, c);
  for (int rep = 0; rep < 4; ++rep) {
    w.be->fill(DType::f32, out.get(), static_cast<std::int64_t>(c), -1.0);
    auto r = coll.reduce_scatter_partition(s.get(), out.get(), c, DType::f32, pg, true);
    r.wait();
    BOOST_TEST(out.download() == std::vector<double>(c, static_cast<double>(W * (W + 1) / 2 * (q + 1))));
  }
  BOOST_TEST(coll.temp_allocations() == 1u);
}

BOOST_AUTO_TEST_SUITE_END()

static bool init_unit_test() { return true; }

int main(int argc, char** argv) {
  if (argc > 1 && std::strcmp(argv[1], "--gpu-probe") == 0)
    return mics::device::cuda_device_count() > 0 ? 0 : 77;
  MPI_Init(&argc, &argv);
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  std::vector<char*> args(argv, argv + argc);
  static char quiet_report[] = "--report_level=no";
  static char quiet_log[] = "--log_level=error";
  if (rank != 0) {
    args.push_back(quiet_report);
    args.push_back(quiet_log);
  }
  const int local = boost::unit_test::unit_test_main(&init_unit_test,
                                                     static_cast<int>(args.size()), args.data());
  int failed = local != 0 ? 1 : 0, any = 0;
  MPI_Allreduce(&failed, &any, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
  MPI_Finalize();
  return any;
}
