// The two-level ("hierarchical_ring") all-reduce of the MPI backend on emulated nodes
// (--ranks-per-node g): a group whose members lie on N >= 2 nodes with m >= 2 on each
// reduce-scatters inside the node, all-reduces each rank's 1/m across the nodes and
// all-gathers inside the node. Checked against a reference sum in f32, f64 and bf16, for
// counts that divide neither m nor N, below the rank count and 0; every rank must hold
// the same bits; the counted bytes must equal the volume formula exactly.
#include <boost/test/unit_test.hpp>
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "../../lib/comm/mpi/progress.hpp"
#include "../../lib/comm/mpi/schedules.hpp"
#include "comm_test_util.hpp"
#include "mics/comm/mpi_collectives.hpp"
#include "mics/comm/process_groups.hpp"
#include "mpi_test_util.hpp"

using mics::comm::DType;
using mics::comm::Group;
using mics::comm::make_process_groups;
using mics::comm::MpiCollectives;
using mics::comm::ProcessGroups;
using mics::test::Buffer;
using mics::test::world_rank;
using mics::test::world_size;
namespace mpi = mics::comm::mpi;

namespace {

const DType kTypes[] = {DType::f32, DType::f64, DType::bf16};

// Ranks per node that put N >= 2 nodes of m >= 2 ranks in this world.
std::vector<int> node_sizes() {
  std::vector<int> out;
  const int W = world_size();
  for (int g = 2; 2 * g <= W; ++g)
    if (W % g == 0) out.push_back(g);
  return out;
}

// Small integers: every partial sum is exact in every type, so any order matches.
double exact_value(int world, std::size_t e) { return static_cast<double>(world % 5 + 1) * static_cast<double>(e % 7 + 1); }
// Values whose sums round differently in different orders: the bit-identity check.
double rough_value(int world, std::size_t e) {
  return std::sin(0.37 * static_cast<double>(world + 1) + 1.3e-3 * static_cast<double>(e)) * 3.1;
}

// The elements of block b when `count` is split over n (sizes differ by at most one).
std::uint64_t block(std::uint64_t count, std::uint64_t n, std::uint64_t b) {
  auto begin = [&](std::uint64_t x) { return x * (count / n) + std::min(x, count % n); };
  return begin(b + 1) - begin(b);
}

// Elements one rank sends in a one-lane two-level all-reduce of `count`: in the node at
// position j of m, all blocks but its own (reduce-scatter) and all but block j+1
// (all-gather); across the N nodes at position i, the same on its block B = block j.
struct Volume {
  std::uint64_t total, across;
};
Volume two_level_elements(std::uint64_t count, std::uint64_t m, std::uint64_t N, std::uint64_t j, std::uint64_t i) {
  const std::uint64_t B = block(count, m, j);
  const std::uint64_t intra = 2 * count - B - block(count, m, (j + 1) % m);
  const std::uint64_t across = 2 * B - block(B, N, i) - block(B, N, (i + 1) % N);
  return {intra + across, across};
}

// The two-level schedule whatever the size (schedule_all_reduce sends small messages on
// 2^k ranks to recursive doubling instead), progressed on the caller.
void run_two_level(Group& g, void* buf, std::size_t count, DType dt) {
  mpi::Progress progress(false);
  auto op = std::make_shared<mpi::P2POp>();
  op->what = "two-level all_reduce on group '" + g.name() + "'";
  op->comm = g.comm();
  for (int r = 0; r < g.size(); ++r) op->world_of.push_back(g.world_rank_of(r));
  op->traffic = g.traffic();
  mpi::schedule_ring_all_reduce(*op, mpi::ring_of(g), buf, count, dt);
  BOOST_REQUIRE_EQUAL(std::string(op->algorithm), "hierarchical_ring");
  for (auto& lane : op->lanes) lane.tag = g.next_tag();
  progress.submit(op);
  progress.wait(*op);
}

// Wrong elements against the reference sum of exact_value over the world.
long check_exact(const Buffer& b) {
  long wrong = 0;
  for (std::size_t e = 0; e < b.size(); ++e) {
    double expect = 0;
    for (int w = 0; w < world_size(); ++w) expect += exact_value(w, e);
    wrong += b.get(e) != expect;
  }
  return wrong;
}

// Whether this rank's bytes equal rank 0's.
bool same_as_rank0(const Buffer& b) {
  const std::size_t bytes = b.size() * mics::comm::dtype_size(b.dtype());
  std::vector<unsigned char> root(bytes);
  if (bytes > 0) std::memcpy(root.data(), b.data(), bytes);
  MPI_Bcast(root.data(), static_cast<int>(bytes), MPI_BYTE, 0, MPI_COMM_WORLD);
  return bytes == 0 || std::memcmp(root.data(), b.data(), bytes) == 0;
}

// |sum - reference| within n roundings of the type at the magnitude of the terms, on
// about 4096 elements spread over the buffer.
long check_rough(const Buffer& b) {
  const double eps = b.dtype() == DType::f64 ? 0x1p-52 : b.dtype() == DType::f32 ? 0x1p-23 : 0x1p-7;
  Buffer one(b.dtype(), 1);  // an input as the type holds it
  long wrong = 0;
  for (std::size_t e = 0; e < b.size(); e += std::max<std::size_t>(1, b.size() / 4096)) {
    double expect = 0, magnitude = 0;
    for (int w = 0; w < world_size(); ++w) {
      one.set(0, rough_value(w, e));
      expect += one.get(0);
      magnitude += std::fabs(one.get(0));
    }
    wrong += std::fabs(b.get(e) - expect) > 2.0 * world_size() * eps * magnitude;
  }
  return wrong;
}

}  // namespace

BOOST_AUTO_TEST_CASE(groups_know_their_nodes_from_the_plan) {
  const int W = world_size();
  for (int g : node_sizes()) {
    ProcessGroups pg = make_process_groups(MPI_COMM_WORLD, g, 1, false);
    BOOST_TEST_CONTEXT(pg.plan().describe()) {
      BOOST_CHECK(pg.world().hierarchical_all_reduce());
      BOOST_CHECK_EQUAL(pg.world().node_count(), W / g);
      BOOST_CHECK_EQUAL(pg.world().members_per_node(), g);
      BOOST_CHECK(pg.replication().hierarchical_all_reduce());  // ddp: the world again
      BOOST_CHECK(!pg.partition().hierarchical_all_reduce());   // one rank
      const std::size_t big = 1u << 16;
      BOOST_CHECK_EQUAL(MpiCollectives::all_reduce_algorithm(big, DType::f32, pg.world()), "hierarchical_ring");
    }
    // Turned off in the layout: one flat ring.
    ProcessGroups flat = make_process_groups(MPI_COMM_WORLD, g, 1, false, false);
    BOOST_CHECK(!flat.world().hierarchical_all_reduce());
    BOOST_CHECK_EQUAL(MpiCollectives::all_reduce_algorithm(1u << 16, DType::f32, flat.world()), "ring");
  }
  // One node, or one rank per node: nothing to split.
  for (int g : {1, W}) {
    ProcessGroups pg = make_process_groups(MPI_COMM_WORLD, g, 1, false);
    BOOST_CHECK(!pg.world().hierarchical_all_reduce());
    BOOST_CHECK_EQUAL(pg.world().node_count(), 1);
  }
}

// mics with p < g: the replication group has g/p members on every node.
BOOST_AUTO_TEST_CASE(a_replication_group_inside_nodes_is_two_level) {
  const int W = world_size();
  for (int g : node_sizes())
    for (int p = 1; 2 * p <= g; ++p) {
      if (g % p != 0) continue;
      ProcessGroups pg = make_process_groups(MPI_COMM_WORLD, g, p, false);
      BOOST_TEST_CONTEXT(pg.plan().describe()) {
        BOOST_CHECK(pg.replication().hierarchical_all_reduce());
        BOOST_CHECK_EQUAL(pg.replication().node_count(), W / g);
        BOOST_CHECK_EQUAL(pg.replication().members_per_node(), g / p);
      }
    }
}

// Sums rank-dependent exactly representable and rough inputs with `sum` (in place) and
// checks both against their closed forms, and the rough sums' bits against rank 0's.
template <class Sum>
void check_sums(std::size_t count, DType dt, Sum sum) {
  Buffer exact(dt, count), rough(dt, count);
  for (std::size_t e = 0; e < count; ++e) {
    exact.set(e, exact_value(world_rank(), e));
    rough.set(e, rough_value(world_rank(), e));
  }
  sum(exact.data());
  sum(rough.data());
  BOOST_CHECK_EQUAL(check_exact(exact), 0);
  BOOST_CHECK_EQUAL(check_rough(rough), 0);
  BOOST_CHECK(mics::test::all_ranks(MPI_COMM_WORLD, same_as_rank0(rough)));
}

BOOST_AUTO_TEST_CASE(sums_equal_the_reference_and_every_rank_holds_the_same_bits) {
  MpiCollectives coll;
  const auto W = static_cast<std::size_t>(world_size());
  for (int g : node_sizes()) {
    ProcessGroups pg = make_process_groups(MPI_COMM_WORLD, g, 1, false);
    // Above the small-message limit in every type (so the public path runs two-level),
    // with and without lanes, dividing neither m nor N.
    for (std::size_t count : {std::size_t{20011}, W * 65536 + 5})
      for (DType dt : kTypes) {
        BOOST_TEST_CONTEXT(pg.plan().describe() << " " << mics::comm::dtype_name(dt) << " count " << count) {
          check_sums(count, dt, [&](void* buf) { coll.all_reduce(buf, count, dt, pg.world()).wait(); });
        }
      }
  }
}

BOOST_AUTO_TEST_CASE(small_and_uneven_counts_run_two_level_too) {
  const auto W = static_cast<std::size_t>(world_size());
  for (int g : node_sizes()) {
    ProcessGroups pg = make_process_groups(MPI_COMM_WORLD, g, 1, false);
    const auto m = static_cast<std::size_t>(g);
    for (std::size_t count : {std::size_t{0}, std::size_t{1}, m - 1, W - 1, W + 1, 3 * W + m + 1})
      for (DType dt : kTypes) {
        BOOST_TEST_CONTEXT(pg.plan().describe() << " " << mics::comm::dtype_name(dt) << " count " << count) {
          check_sums(count, dt, [&](void* buf) { run_two_level(pg.world(), buf, count, dt); });
        }
      }
  }
}

// bytes = what this rank handed to MPI_Isend: exactly the formula, per rank for one lane,
// and 2(n-1) times the message summed over the ranks (as the flat ring) for any lanes.
BOOST_AUTO_TEST_CASE(counted_bytes_equal_the_two_level_volume) {
  MpiCollectives coll;
  const auto W = static_cast<std::uint64_t>(world_size());
  for (int g : node_sizes()) {
    ProcessGroups pg = make_process_groups(MPI_COMM_WORLD, g, 1, false);
    Group& world = pg.world();
    const auto m = static_cast<std::uint64_t>(g), N = W / m;
    const auto pos = static_cast<std::uint64_t>(world.ring_position());
    for (std::uint64_t count : {std::uint64_t{0}, std::uint64_t{3}, std::uint64_t{20011}, W * 65536 + 5})
      for (DType dt : kTypes) {
        const std::uint64_t es = mics::comm::dtype_size(dt);
        BOOST_TEST_CONTEXT(pg.plan().describe() << " " << mics::comm::dtype_name(dt) << " count " << count) {
          Buffer buf(dt, count);
          pg.reset_counters();
          // Small messages on 2^k ranks would go to recursive doubling on the public path.
          if (count * es <= mpi::kSmallAllReduceBytes) run_two_level(world, buf.data(), count, dt);
          else coll.all_reduce(buf.data(), count, dt, world).wait();
          const std::uint64_t bytes = world.counters().bytes;
          if (count * es / W < 128 * 1024)  // one lane
            BOOST_CHECK_EQUAL(bytes, es * two_level_elements(count, m, N, pos % m, pos / m).total);
          std::uint64_t all = 0;
          MPI_Allreduce(&bytes, &all, 1, MPI_UINT64_T, MPI_SUM, MPI_COMM_WORLD);
          BOOST_CHECK_EQUAL(all, 2 * (W - 1) * count * es);
          BOOST_CHECK_EQUAL(world.counters().calls, 1u);
        }
      }
  }
}
