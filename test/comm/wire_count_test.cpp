// The counters against the transport itself: this test interposes MPI_Isend (the PMPI
// profiling interface), so every byte the collectives hand to MPI is seen here, per
// communicator and per destination, and compared with the group counters and with the
// ring volumes: flat rings send only to the world-order successor, so a partition group
// spanning k nodes crosses each node boundary once; the hierarchical path sends
// (p-g)/p of the message per node across nodes. Then an engine run: the counters of all
// groups together equal the bytes handed to MPI, exactly.
#include <boost/test/unit_test.hpp>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "../engine/engine_test_util.hpp"
#include "comm_test_util.hpp"
#include "mics/comm/mpi_collectives.hpp"
#include "mics/comm/process_groups.hpp"
#include "mpi_test_util.hpp"

namespace {

struct Seen {
  std::mutex mu;
  std::map<MPI_Comm, std::uint64_t> bytes_by_comm;
  std::map<int, std::uint64_t> bytes_to_world_rank;
  std::uint64_t total = 0;
  void clear() {
    std::lock_guard<std::mutex> lock(mu);
    bytes_by_comm.clear();
    bytes_to_world_rank.clear();
    total = 0;
  }
};
Seen seen;

int world_rank_in(MPI_Comm comm, int rank) {
  MPI_Group g = MPI_GROUP_NULL, w = MPI_GROUP_NULL;
  PMPI_Comm_group(comm, &g);
  PMPI_Comm_group(MPI_COMM_WORLD, &w);
  int out = -1;
  PMPI_Group_translate_ranks(g, 1, &rank, w, &out);
  PMPI_Group_free(&g);
  PMPI_Group_free(&w);
  return out;
}

}  // namespace

extern "C" int MPI_Isend(const void* buf, int count, MPI_Datatype dt, int dest, int tag, MPI_Comm comm,
                         MPI_Request* req) {
  int size = 0;
  PMPI_Type_size(dt, &size);
  const auto bytes = static_cast<std::uint64_t>(count) * static_cast<std::uint64_t>(size);
  const int to = world_rank_in(comm, dest);
  {
    std::lock_guard<std::mutex> lock(seen.mu);
    seen.bytes_by_comm[comm] += bytes;
    seen.bytes_to_world_rank[to] += bytes;
    seen.total += bytes;
  }
  return PMPI_Isend(buf, count, dt, dest, tag, comm, req);
}

using mics::comm::DType;
using mics::comm::Group;
using mics::comm::MpiCollectives;
using mics::comm::ProcessGroups;
using mics::test::world_rank;
using mics::test::world_size;

namespace {

std::uint64_t seen_on(Group& g) {
  std::lock_guard<std::mutex> lock(seen.mu);
  std::uint64_t b = seen.bytes_by_comm[g.comm()];
  if (g.has_twin()) b += seen.bytes_by_comm[g.twin().comm()];
  return b;
}

// Bytes this rank sent to ranks on other nodes (node = world rank / g).
std::uint64_t cross_node_bytes(int g) {
  std::lock_guard<std::mutex> lock(seen.mu);
  std::uint64_t b = 0;
  for (auto [to, n] : seen.bytes_to_world_rank)
    if (to / g != world_rank() / g) b += n;
  return b;
}

std::uint64_t sum_over_node(std::uint64_t v, int g) {
  MPI_Comm node = MPI_COMM_NULL;
  MPI_Comm_split(MPI_COMM_WORLD, world_rank() / g, world_rank(), &node);
  std::uint64_t s = 0;
  MPI_Allreduce(&v, &s, 1, MPI_UINT64_T, MPI_SUM, node);
  MPI_Comm_free(&node);
  return s;
}

std::vector<std::pair<int, int>> spanning_layouts() {
  std::vector<std::pair<int, int>> out;
  const int W = world_size();
  for (int g : {2, 4})
    if (W % g == 0)
      for (int p = 2 * g; p <= W; p += g)
        if (W % p == 0) out.emplace_back(g, p);
  return out;
}

}  // namespace

BOOST_AUTO_TEST_CASE(counters_equal_the_bytes_handed_to_mpi_and_rings_cross_nodes_once) {
  MpiCollectives coll;
  const std::size_t c = 1000;
  const std::uint64_t es = 4;
  for (auto [g, p] : spanning_layouts()) {
    ProcessGroups pg = mics::comm::make_process_groups(MPI_COMM_WORLD, g, p, true);
    const std::uint64_t M = static_cast<std::uint64_t>(p) * c * es;
    std::vector<float> buf(static_cast<std::size_t>(p) * c, 1.0f), out(c);
    for (bool hier : {false, true})
      for (int op = 0; op < 2; ++op) {
        pg.reset_counters();
        MPI_Barrier(MPI_COMM_WORLD);
        seen.clear();
        if (op == 0) coll.gather_partition(buf.data(), c, DType::f32, pg, hier).wait();
        else coll.reduce_scatter_partition(buf.data(), out.data(), c, DType::f32, pg, hier).wait();
        BOOST_TEST_CONTEXT(pg.plan().describe() << (op == 0 ? " all_gather " : " reduce_scatter ")
                                                << (hier ? "hierarchical" : "flat")) {
          std::uint64_t counted = 0;
          for (Group* grp : pg.groups()) {
            BOOST_CHECK_EQUAL(grp->counters().bytes, seen_on(*grp));
            counted += grp->counters().bytes;
          }
          BOOST_CHECK_EQUAL(counted, seen.total);
          // Per node across nodes: flat (p-1)/p M (one edge of the ring leaves the node),
          // hierarchical (p-g)/p M.
          const std::uint64_t node = sum_over_node(cross_node_bytes(g), g);
          const std::uint64_t expect = hier ? M * static_cast<std::uint64_t>(p - g) / static_cast<std::uint64_t>(p)
                                            : M * static_cast<std::uint64_t>(p - 1) / static_cast<std::uint64_t>(p);
          BOOST_CHECK_EQUAL(node, expect);
        }
      }
  }
}

// The two-level all-reduce of a world spanning W/g nodes of g ranks: the counters equal
// what was handed to MPI, and each node sends 2(N-1)/N of the message to other nodes
// (the flat ring in node order: 2(n-1)/n), exactly, for a count that N*g divides.
BOOST_AUTO_TEST_CASE(two_level_all_reduce_sends_2_n_minus_1_over_n_per_node_across) {
  MpiCollectives coll;
  const int W = world_size();
  for (int g : {2, 4}) {
    if (W % g != 0 || W / g < 2) continue;
    const auto N = static_cast<std::uint64_t>(W / g), n = static_cast<std::uint64_t>(W);
    const std::size_t count = static_cast<std::size_t>(W) * 4099;  // > 32 KiB, one lane
    const std::uint64_t M = count * 4;
    for (bool two_level : {true, false}) {
      ProcessGroups pg = mics::comm::make_process_groups(MPI_COMM_WORLD, g, 1, false, two_level);
      std::vector<float> buf(count, 1.0f);
      pg.reset_counters();
      MPI_Barrier(MPI_COMM_WORLD);
      seen.clear();
      coll.all_reduce(buf.data(), count, DType::f32, pg.world()).wait();
      BOOST_TEST_CONTEXT(pg.plan().describe() << (two_level ? " two-level" : " flat ring")) {
        BOOST_CHECK_EQUAL(pg.world().counters().bytes, seen_on(pg.world()));
        BOOST_CHECK_EQUAL(pg.world().counters().bytes, seen.total);
        const std::uint64_t node = sum_over_node(cross_node_bytes(g), g);
        BOOST_CHECK_EQUAL(node, two_level ? 2 * (N - 1) * M / N : 2 * (n - 1) * M / n);
        BOOST_CHECK(buf[count - 1] == static_cast<float>(W));
      }
    }
  }
}

BOOST_AUTO_TEST_CASE(engine_counters_equal_the_bytes_handed_to_mpi) {
  const int W = world_size();
  if (W < 4 || W % 2 != 0) {
    BOOST_TEST_MESSAGE("needs an even world of 4 or more ranks");
    return;
  }
  const auto mc = mics::test::tiny_model();
  for (auto [strategy, hier] : {std::pair{mics::engine::Strategy::zero3, false},
                                std::pair{mics::engine::Strategy::mics, true}}) {
    mics::engine::TrainConfig tc;
    tc.strategy = strategy;
    tc.partition_size = strategy == mics::engine::Strategy::mics ? 4 : 0;
    tc.ranks_per_node = 2;
    tc.hierarchical = hier;
    tc.global_batch = W;
    tc.micro_batch = 1;
    tc.steps = 2;
    auto backend = mics::device::make_cpu_backend(1);
    const int p = mics::engine::partition_size_for(tc.strategy, tc.partition_size, W);
    ProcessGroups pg = mics::comm::make_process_groups(MPI_COMM_WORLD, 2, p, hier);
    MpiCollectives coll;
    mics::data::SyntheticDataset data(static_cast<int>(mc.vocab));
    mics::engine::Engine e(mc, tc, *backend, coll, pg);
    pg.reset_counters();
    MPI_Barrier(MPI_COMM_WORLD);
    seen.clear();
    for (int s = 0; s < 2; ++s) e.train_step(data);
    std::uint64_t counted = 0;
    for (Group* grp : pg.groups()) {
      BOOST_CHECK_EQUAL(grp->counters().bytes, seen_on(*grp));
      counted += grp->counters().bytes;
    }
    BOOST_TEST_CONTEXT(mics::engine::to_string(strategy)) {
      BOOST_CHECK_GT(counted, 0u);
      BOOST_CHECK_EQUAL(counted, seen.total);
      // Hierarchical: the partition group carries only the gradient norm's scalar sum
      // (recursive doubling over 4 ranks: 2 rounds of 8 bytes, per step).
      if (hier) BOOST_CHECK_EQUAL(pg.partition().counters().bytes, 2u * 2u * 8u);
    }
  }
}

BOOST_AUTO_TEST_CASE(a_wait_names_the_operation_and_the_peer_it_waits_for) {
  // Rank 0 starts an all-gather the others join only later: meanwhile its request says
  // what it is and whom it waits for (the ring predecessor, the last world rank).
  const int W = world_size();
  if (W < 2) return;
  MpiCollectives coll;
  MPI_Comm dup = MPI_COMM_NULL;
  MPI_Comm_dup(MPI_COMM_WORLD, &dup);
  Group world(dup, "world");
  std::vector<double> buf(static_cast<std::size_t>(W) * 4, 1.0);
  std::string said;
  mics::comm::Request r;
  if (world_rank() == 0) {
    r = coll.all_gather(buf.data(), 4, DType::f64, world);
    for (int i = 0; i < 50 && r.pending() != nullptr; ++i) {
      r.test();
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
    said = r.pending() != nullptr ? r.pending()->describe() : "completed early";
  }
  MPI_Barrier(MPI_COMM_WORLD);
  if (world_rank() != 0) r = coll.all_gather(buf.data(), 4, DType::f64, world);
  r.wait();
  if (world_rank() == 0) {
    const std::string want = "all_gather on group 'world' (" + std::to_string(W) +
                             " ranks), waiting for world rank " + std::to_string(W - 1);
    BOOST_CHECK_EQUAL(said, want);
  }
}
