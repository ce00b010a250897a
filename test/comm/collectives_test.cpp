// Every collective of the MPI backend, checked element by element, in f32, f64 and bf16,
// on every group of every layout of the current world size; flat against hierarchical
// partition collectives on emulated multi-node layouts; counters; overlapping requests.
#include <boost/test/unit_test.hpp>
#include <algorithm>
#include <chrono>
#include <thread>
#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "comm_test_util.hpp"
#include "mics/comm/mpi_collectives.hpp"
#include "mics/comm/process_groups.hpp"
#include "mics/layout/plan.hpp"
#include "mpi_test_util.hpp"

using mics::comm::DType;
using mics::comm::Group;
using mics::comm::make_process_groups;
using mics::comm::MpiCollectives;
using mics::comm::ProcessGroups;
using mics::comm::Request;
using mics::test::all_ranks;
using mics::test::Buffer;
using mics::test::world_rank;
using mics::test::world_size;

namespace {

const DType kTypes[] = {DType::f32, DType::f64, DType::bf16};

std::vector<int> members(const Group& g) {
  std::vector<int> out(static_cast<std::size_t>(g.size()));
  const int me = world_rank();
  MPI_Allgather(&me, 1, MPI_INT, out.data(), 1, MPI_INT, g.comm());
  return out;
}

// Small integers: exact in bf16 (up to 256) and in every sum the tests form.
double contribution(int world, std::size_t e) { return static_cast<double>(world % 5 + 1) * static_cast<double>(e % 7 + 1); }
double chunk_value(int world, std::size_t e) { return static_cast<double>((world * 13 + static_cast<int>(e)) % 200); }

// All the layouts of this world size, each with every layout's plan spelled out.
std::vector<std::pair<int, int>> layouts() {
  std::vector<std::pair<int, int>> out;
  const int W = world_size();
  for (int g = 1; g <= W; ++g)
    if (W % g == 0)
      for (int p : mics::layout::valid_partition_sizes(W, g)) out.emplace_back(g, p);
  return out;
}

// Runs each basic collective on `group` and checks every element; returns the number of
// wrong elements on this rank.
long check_basic_collectives(MpiCollectives& coll, Group& group, DType dt, std::size_t c) {
  long wrong = 0;
  const auto n = static_cast<std::size_t>(group.size());
  const std::vector<int> who = members(group);
  const int me = world_rank();

  // all_gather: chunk r must be member r's chunk.
  Buffer ag(dt, n * c);
  for (std::size_t i = 0; i < ag.size(); ++i) ag.set(i, -1.0);
  for (std::size_t e = 0; e < c; ++e) ag.set(static_cast<std::size_t>(group.rank()) * c + e, chunk_value(me, e));
  coll.all_gather(ag.data(), c, dt, group).wait();
  for (std::size_t r = 0; r < n; ++r)
    for (std::size_t e = 0; e < c; ++e) wrong += ag.get(r * c + e) != chunk_value(who[r], e);

  // reduce_scatter: element e of chunk rank() summed over members.
  Buffer send(dt, n * c), recv(dt, c);
  for (std::size_t i = 0; i < send.size(); ++i) send.set(i, contribution(me, i));
  coll.reduce_scatter(send.data(), recv.data(), c, dt, group).wait();
  for (std::size_t e = 0; e < c; ++e) {
    double expect = 0;
    for (int w : who) expect += contribution(w, static_cast<std::size_t>(group.rank()) * c + e);
    wrong += recv.get(e) != expect;
  }

  // all_reduce, with a count that is not a multiple of the group size.
  const std::size_t m = c * 3 + 1;
  Buffer ar(dt, m);
  for (std::size_t i = 0; i < m; ++i) ar.set(i, contribution(me, i));
  coll.all_reduce(ar.data(), m, dt, group).wait();
  for (std::size_t i = 0; i < m; ++i) {
    double expect = 0;
    for (int w : who) expect += contribution(w, i);
    wrong += ar.get(i) != expect;
  }

  // broadcast from the last rank of the group.
  const int root = group.size() - 1;
  Buffer bc(dt, m);
  for (std::size_t i = 0; i < m; ++i) bc.set(i, group.rank() == root ? chunk_value(me, i) : -1.0);
  coll.broadcast(bc.data(), m, dt, root, group).wait();
  for (std::size_t i = 0; i < m; ++i) wrong += bc.get(i) != chunk_value(who[static_cast<std::size_t>(root)], i);

  coll.barrier(group);
  return wrong;
}

}  // namespace

BOOST_AUTO_TEST_CASE(basic_collectives_on_every_group_of_every_layout) {
  MpiCollectives coll;
  for (auto [g, p] : layouts()) {
    ProcessGroups pg = make_process_groups(MPI_COMM_WORLD, g, p, true);
    for (Group* group : pg.groups())
      for (DType dt : kTypes)
        for (std::size_t c : {std::size_t{1}, std::size_t{5}, std::size_t{64}}) {
          const long wrong = check_basic_collectives(coll, *group, dt, c);
          BOOST_TEST_CONTEXT(pg.plan().describe() << " group " << group->name() << " "
                                                  << mics::comm::dtype_name(dt) << " chunk " << c) {
            BOOST_CHECK_EQUAL(wrong, 0);
          }
        }
  }
}

// The emulated multi-node layouts of this world size with groups spanning nodes:
// g in {2, 3, 4}, p a multiple of g with p/g >= 2.
std::vector<std::pair<int, int>> spanning_layouts() {
  std::vector<std::pair<int, int>> out;
  const int W = world_size();
  for (int g : {2, 3, 4})
    if (W % g == 0)
      for (int p = 2 * g; p <= W; p += g)
        if (W % p == 0) out.emplace_back(g, p);
  return out;
}

BOOST_AUTO_TEST_CASE(hierarchical_all_gather_is_bitwise_flat) {
  MpiCollectives coll;
  const auto cases = spanning_layouts();
  if (cases.empty()) BOOST_TEST_MESSAGE("no multi-node layout at W=" << world_size() << "; nothing to compare");
  std::mt19937 rng(static_cast<unsigned>(1234 + world_rank()));
  std::uniform_real_distribution<double> u(-1.0, 1.0);
  for (auto [g, p] : cases) {
    ProcessGroups pg = make_process_groups(MPI_COMM_WORLD, g, p, true);
    BOOST_REQUIRE(pg.hierarchical());
    for (DType dt : kTypes)
      for (std::size_t c : {std::size_t{1}, std::size_t{16}, std::size_t{1000}}) {
        Buffer flat(dt, static_cast<std::size_t>(p) * c), hier(dt, static_cast<std::size_t>(p) * c);
        for (std::size_t i = 0; i < flat.size(); ++i) {
          flat.set(i, 99.0);
          hier.set(i, -99.0);
        }
        const std::size_t q = static_cast<std::size_t>(pg.partition().rank());
        for (std::size_t e = 0; e < c; ++e) {
          const double v = u(rng);
          flat.set(q * c + e, v);
          hier.set(q * c + e, v);
        }
        coll.gather_partition(flat.data(), c, dt, pg, false).wait();
        coll.gather_partition(hier.data(), c, dt, pg, true).wait();
        BOOST_TEST_CONTEXT(pg.plan().describe() << " " << mics::comm::dtype_name(dt) << " chunk " << c) {
          BOOST_CHECK(all_ranks(MPI_COMM_WORLD, flat.same_bytes(hier)));
        }
      }
  }
}

BOOST_AUTO_TEST_CASE(hierarchical_reduce_scatter_equals_flat_within_rounding) {
  MpiCollectives coll;
  std::mt19937 rng(static_cast<unsigned>(99 + world_rank()));
  std::uniform_real_distribution<double> u(-1.0, 1.0);
  for (auto [g, p] : spanning_layouts()) {
    ProcessGroups pg = make_process_groups(MPI_COMM_WORLD, g, p, true);
    for (DType dt : kTypes)
      for (std::size_t c : {std::size_t{1}, std::size_t{16}, std::size_t{1000}}) {
        Buffer send(dt, static_cast<std::size_t>(p) * c), flat(dt, c), hier(dt, c), exact(dt, c);
        for (std::size_t i = 0; i < send.size(); ++i) send.set(i, u(rng));
        coll.reduce_scatter_partition(send.data(), flat.data(), c, dt, pg, false).wait();
        coll.reduce_scatter_partition(send.data(), hier.data(), c, dt, pg, true).wait();
        // Reference: the sum in double of the values as stored, over the partition group.
        const std::size_t q = static_cast<std::size_t>(pg.partition().rank());
        // Sum every member's whole send buffer in double; chunk q of it is the answer.
        std::vector<double> all(send.size()), sum(send.size());
        for (std::size_t i = 0; i < send.size(); ++i) all[i] = send.get(i);
        MPI_Allreduce(all.data(), sum.data(), static_cast<int>(all.size()), MPI_DOUBLE, MPI_SUM,
                      pg.partition().comm());
        const double tol = dt == DType::bf16 ? 0.05 * p : (dt == DType::f32 ? 1e-5 * p : 1e-12 * p);
        double worst_fh = 0, worst_ref = 0;
        for (std::size_t e = 0; e < c; ++e) {
          worst_fh = std::max(worst_fh, std::abs(flat.get(e) - hier.get(e)));
          worst_ref = std::max(worst_ref, std::abs(hier.get(e) - sum[q * c + e]));
        }
        BOOST_TEST_CONTEXT(pg.plan().describe() << " " << mics::comm::dtype_name(dt) << " chunk " << c) {
          BOOST_CHECK_LE(worst_fh, tol);
          BOOST_CHECK_LE(worst_ref, tol);
        }
      }
  }
}

BOOST_AUTO_TEST_CASE(counters_count_the_ring_volumes_sent) {
  MpiCollectives coll;
  const std::size_t c = 64, es = 4;
  for (auto [g, p] : spanning_layouts()) {
    ProcessGroups pg = make_process_groups(MPI_COMM_WORLD, g, p, true);
    const auto k = static_cast<std::uint64_t>(p / g), gg = static_cast<std::uint64_t>(g),
               pp = static_cast<std::uint64_t>(p);
    std::vector<float> buf(static_cast<std::size_t>(p) * c, 1.0f), out(c);
    const double w0 = MPI_Wtime();
    coll.gather_partition(buf.data(), c, DType::f32, pg, false).wait();
    const double wall = MPI_Wtime() - w0;
    BOOST_CHECK_EQUAL(pg.partition().counters().calls, 1u);
    BOOST_CHECK_EQUAL(pg.partition().counters().sends, pp - 1);
    BOOST_CHECK_EQUAL(pg.partition().counters().bytes, (pp - 1) * c * es);
    BOOST_CHECK_EQUAL(pg.partition().counters().message_bytes, pp * c * es);
    BOOST_CHECK_GT(pg.partition().counters().seconds, 0.0);
    BOOST_CHECK_LE(pg.partition().counters().seconds, wall);
    BOOST_CHECK_LE(pg.partition().counters().exposed_seconds, wall);

    pg.reset_counters();
    coll.gather_partition(buf.data(), c, DType::f32, pg, true).wait();
    BOOST_CHECK_EQUAL(pg.partition().counters().calls, 0u);
    BOOST_CHECK_EQUAL(pg.partition().counters().exposed_seconds, 0.0);
    BOOST_CHECK_EQUAL(pg.inter().counters().calls, 1u);
    BOOST_CHECK_EQUAL(pg.intra().counters().calls, 1u);
    // Per rank: (k-1)c on inter, (g-1)kc on intra; per node g(k-1)c = (p-g)/p of the message.
    BOOST_CHECK_EQUAL(pg.inter().counters().bytes, (k - 1) * c * es);
    BOOST_CHECK_EQUAL(pg.intra().counters().bytes, (gg - 1) * k * c * es);
    BOOST_CHECK_EQUAL(gg * pg.inter().counters().bytes, (pp - gg) * c * es);

    pg.reset_counters();
    coll.reduce_scatter_partition(buf.data(), out.data(), c, DType::f32, pg, true).wait();
    BOOST_CHECK_EQUAL(pg.inter().counters().bytes, (k - 1) * c * es);
    BOOST_CHECK_EQUAL(pg.intra().counters().bytes, (gg - 1) * k * c * es);

    // A large all-reduce runs the ring, two-level here since the world has g >= 2 ranks on
    // each of its nodes (test_comm_hier_all_reduce): 2(n-1)/n of the message per rank
    // either way; a small one on 2^m ranks recursive doubling: m times the message.
    pg.reset_counters();
    const auto W = static_cast<std::uint64_t>(world_size());
    std::vector<float> big(W * 16384, 1.0f);
    coll.all_reduce(big.data(), big.size(), DType::f32, pg.world()).wait();
    BOOST_CHECK_EQUAL(pg.world().counters().bytes, 2 * (W - 1) * big.size() * es / W);
    BOOST_CHECK_EQUAL(MpiCollectives::all_reduce_algorithm(big.size(), DType::f32, pg.world()), "hierarchical_ring");
    pg.reset_counters();
    coll.all_reduce(buf.data(), c, DType::f32, pg.world()).wait();
    if ((W & (W - 1)) == 0) {
      std::uint64_t m = 0;
      for (std::uint64_t v = 1; v < W; v <<= 1) ++m;
      BOOST_CHECK_EQUAL(pg.world().counters().bytes, m * c * es);
    }
    coll.barrier(pg.world());
    BOOST_CHECK_EQUAL(pg.world().counters().calls, 2u);
  }
}

BOOST_AUTO_TEST_CASE(flat_rings_run_in_world_rank_order) {
  // The partition communicator's order is the zero-copy q = j*k + i, which alternates
  // nodes; the ring must follow world ranks (node order) instead.
  for (auto [g, p] : spanning_layouts()) {
    ProcessGroups pg = make_process_groups(MPI_COMM_WORLD, g, p, true);
    for (Group* grp : pg.groups()) {
      const auto& ring = grp->ring();
      BOOST_REQUIRE_EQUAL(ring.size(), static_cast<std::size_t>(grp->size()));
      for (std::size_t i = 1; i < ring.size(); ++i)
        BOOST_CHECK_LT(grp->world_rank_of(ring[i - 1]), grp->world_rank_of(ring[i]));
      BOOST_CHECK_EQUAL(ring[static_cast<std::size_t>(grp->ring_position())], grp->rank());
    }
  }
}

BOOST_AUTO_TEST_CASE(groups_of_one_rank_gather_nothing_and_copy_the_reduce_scatter) {
  MpiCollectives coll;
  MPI_Comm self = MPI_COMM_NULL;
  MPI_Comm_dup(MPI_COMM_SELF, &self);
  Group one(self, "self");
  std::vector<double> buf{1.5, 2.5, 3.5}, out(3, 0.0);
  Request a = coll.all_gather(buf.data(), 3, DType::f64, one);
  BOOST_CHECK(a.done());
  Request r = coll.reduce_scatter(buf.data(), out.data(), 3, DType::f64, one);
  BOOST_CHECK(r.done());
  BOOST_CHECK(out == buf);
  BOOST_CHECK_EQUAL(one.counters().bytes, 0u);
}

// A 1-rank run has nothing to communicate: every collective over a group of one is over
// when the call returns, and no bytes, busy time or waits are booked to the group.
BOOST_AUTO_TEST_CASE(groups_of_one_rank_complete_on_the_caller_and_book_no_time) {
  MpiCollectives coll;
  MPI_Comm self = MPI_COMM_NULL;
  MPI_Comm_dup(MPI_COMM_SELF, &self);
  Group one(self, "self");
  const std::vector<double> init{1.5, -2.5, 3.5, 4.0};
  std::vector<double> buf = init, out(4, 0.0);
  std::vector<Request> reqs;
  reqs.push_back(coll.all_gather(buf.data(), 4, DType::f64, one));
  reqs.push_back(coll.reduce_scatter(init.data(), out.data(), 4, DType::f64, one));
  reqs.push_back(coll.all_reduce(buf.data(), 4, DType::f64, one));
  reqs.push_back(coll.broadcast(buf.data(), 4, DType::f64, 0, one));
  for (auto& r : reqs) BOOST_CHECK(r.done());
  BOOST_CHECK(buf == init);
  BOOST_CHECK(out == init);
  for (auto& r : reqs) r.wait();
  coll.barrier(one);
  const auto c = one.counters();
  BOOST_CHECK_EQUAL(c.calls, 5u);
  BOOST_CHECK_EQUAL(c.sends, 0u);
  BOOST_CHECK_EQUAL(c.bytes, 0u);
  BOOST_CHECK_EQUAL(c.seconds, 0.0);
  BOOST_CHECK_EQUAL(c.exposed_seconds, 0.0);
}

BOOST_AUTO_TEST_CASE(overlapping_requests_complete_in_any_wait_order) {
  // The engine's prefetch pattern: several partition gathers and reduce-scatters in
  // flight, flat collectives on the sub-groups in between, waits in another order, and
  // test() polling. Results must be exact.
  MpiCollectives coll;
  const std::size_t c = 256;
  for (auto [g, p] : spanning_layouts()) {
    ProcessGroups pg = make_process_groups(MPI_COMM_WORLD, g, p, true);
    const std::size_t q = static_cast<std::size_t>(pg.partition().rank());
    const std::vector<int> who = members(pg.partition());
    const int me = world_rank();
    constexpr int B = 4;
    std::vector<std::vector<float>> bufs(B, std::vector<float>(static_cast<std::size_t>(p) * c, -1.0f));
    std::vector<std::vector<float>> sends(B, std::vector<float>(static_cast<std::size_t>(p) * c));
    std::vector<std::vector<float>> recvs(B, std::vector<float>(c, -1.0f));
    std::vector<float> side_intra(c, 1.0f), side_inter(c, 1.0f);
    std::vector<Request> reqs;
    for (int b = 0; b < B; ++b) {
      for (std::size_t e = 0; e < c; ++e)
        bufs[static_cast<std::size_t>(b)][q * c + e] = static_cast<float>(chunk_value(me + b, e));
      for (std::size_t i = 0; i < sends[0].size(); ++i)
        sends[static_cast<std::size_t>(b)][i] = static_cast<float>(contribution(me + b, i));
      reqs.push_back(coll.gather_partition(bufs[static_cast<std::size_t>(b)].data(), c, DType::f32, pg, true));
      reqs.push_back(coll.reduce_scatter_partition(sends[static_cast<std::size_t>(b)].data(),
                                                   recvs[static_cast<std::size_t>(b)].data(), c, DType::f32, pg, true));
      if (b == 1) reqs.push_back(coll.all_reduce(side_intra.data(), c, DType::f32, pg.intra()));
      if (b == 2) reqs.push_back(coll.all_reduce(side_inter.data(), c, DType::f32, pg.inter()));
    }
    // Poll a little (ranks see different completion times), then wait newest first.
    for (int spin = 0; spin < 10; ++spin)
      for (auto& r : reqs) r.test();
    for (auto it = reqs.rbegin(); it != reqs.rend(); ++it) it->wait();
    long wrong = 0;
    for (int b = 0; b < B; ++b) {
      for (std::size_t r = 0; r < static_cast<std::size_t>(p); ++r)
        for (std::size_t e = 0; e < c; ++e)
          wrong += bufs[static_cast<std::size_t>(b)][r * c + e] != static_cast<float>(chunk_value(who[r] + b, e));
      for (std::size_t e = 0; e < c; ++e) {
        double expect = 0;
        for (int w : who) expect += contribution(w + b, q * c + e);
        wrong += recvs[static_cast<std::size_t>(b)][e] != static_cast<float>(expect);
      }
    }
    for (float v : side_intra) wrong += v != static_cast<float>(g);
    for (float v : side_inter) wrong += v != static_cast<float>(p / g);
    BOOST_TEST_CONTEXT(pg.plan().describe()) { BOOST_CHECK_EQUAL(wrong, 0); }
  }
}

BOOST_AUTO_TEST_CASE(default_request_is_complete) {
  Request r;
  BOOST_CHECK(r.done());
  BOOST_CHECK(r.test());
  r.wait();
}

BOOST_AUTO_TEST_CASE(random_interleavings_with_rank_dependent_completion_order) {
  // The same sequence of operations on every rank (as MPI requires), but each rank tests
  // and waits in its own random order: the second steps of the two-step collectives then
  // start at different moments on different ranks, which must not mismatch them.
  MpiCollectives coll;
  for (auto [g, p] : spanning_layouts()) {
    ProcessGroups pg = make_process_groups(MPI_COMM_WORLD, g, p, true);
    const std::size_t q = static_cast<std::size_t>(pg.partition().rank());
    const std::vector<int> who = members(pg.partition());
    const int me = world_rank();
    std::mt19937 same(7);                                    // identical on every rank
    std::mt19937 mine(static_cast<unsigned>(1000 + me));     // differs between ranks
    long wrong = 0;
    for (int round = 0; round < 5; ++round) {
      constexpr int N = 12;
      struct Slot {
        int kind = 0;
        std::size_t c = 0;
        std::vector<double> buf, out;
        Request req;
      };
      std::vector<Slot> slots(N);
      for (int s = 0; s < N; ++s) {
        Slot& sl = slots[static_cast<std::size_t>(s)];
        sl.kind = static_cast<int>(same() % 4);  // 0 hier gather, 1 hier rs, 2 flat gather, 3 intra all-reduce
        sl.c = 1 + same() % 300;
        const std::size_t n = static_cast<std::size_t>(p) * sl.c;
        if (sl.kind == 0 || sl.kind == 2) {
          sl.buf.assign(n, -1.0);
          for (std::size_t e = 0; e < sl.c; ++e) sl.buf[q * sl.c + e] = chunk_value(me + s, e);
          sl.req = coll.gather_partition(sl.buf.data(), sl.c, DType::f64, pg, sl.kind == 0);
        } else if (sl.kind == 1) {
          sl.buf.resize(n);
          for (std::size_t i = 0; i < n; ++i) sl.buf[i] = contribution(me + s, i);
          sl.out.assign(sl.c, -1.0);
          sl.req = coll.reduce_scatter_partition(sl.buf.data(), sl.out.data(), sl.c, DType::f64, pg, true);
        } else {
          sl.buf.assign(sl.c, 1.0);
          sl.req = coll.all_reduce(sl.buf.data(), sl.c, DType::f64, pg.intra());
        }
        if (mine() % 3 == 0) slots[mine() % (static_cast<std::size_t>(s) + 1)].req.test();
      }
      std::vector<std::size_t> order(N);
      for (std::size_t i = 0; i < order.size(); ++i) order[i] = i;
      std::shuffle(order.begin(), order.end(), mine);
      for (std::size_t i : order) {
        if (mine() % 2) slots[i].req.test();
        slots[i].req.wait();
      }
      for (int s = 0; s < N; ++s) {
        const Slot& sl = slots[static_cast<std::size_t>(s)];
        if (sl.kind == 0 || sl.kind == 2) {
          for (std::size_t r = 0; r < static_cast<std::size_t>(p); ++r)
            for (std::size_t e = 0; e < sl.c; ++e) wrong += sl.buf[r * sl.c + e] != chunk_value(who[r] + s, e);
        } else if (sl.kind == 1) {
          for (std::size_t e = 0; e < sl.c; ++e) {
            double expect = 0;
            for (int w : who) expect += contribution(w + s, q * sl.c + e);
            wrong += sl.out[e] != expect;
          }
        } else {
          for (double v : sl.buf) wrong += v != static_cast<double>(g);
        }
      }
    }
    BOOST_TEST_CONTEXT(pg.plan().describe()) { BOOST_CHECK_EQUAL(wrong, 0); }
  }
}

BOOST_AUTO_TEST_CASE(operations_progress_while_the_caller_computes) {
  // With the progress thread, an operation completes while the caller makes no MPI call
  // at all (here: sleeps, as compute would run); test() then only reads a flag. Several
  // operations in flight at once count once in the group's busy time.
  MpiCollectives coll;
  if (!coll.progress_thread()) {
    BOOST_TEST_MESSAGE("no progress thread at this MPI thread level; nothing to check");
    return;
  }
  MPI_Comm dup = MPI_COMM_NULL;
  MPI_Comm_dup(MPI_COMM_WORLD, &dup);
  Group world(dup, "world");
  const auto W = static_cast<std::size_t>(world_size());
  std::vector<std::vector<float>> bufs(4, std::vector<float>(W * 65536, 1.0f));
  MPI_Barrier(MPI_COMM_WORLD);
  const double t0 = MPI_Wtime();
  std::vector<Request> reqs;
  for (auto& b : bufs) reqs.push_back(coll.all_reduce(b.data(), b.size(), DType::f32, world));
  bool finished_alone = false;
  for (int i = 0; i < 600 && !finished_alone; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    finished_alone = true;
    for (auto& r : reqs) finished_alone = r.test() && finished_alone;  // test() only reads a flag here
  }
  for (auto& r : reqs) r.wait();
  const double wall = MPI_Wtime() - t0;
  BOOST_CHECK(all_ranks(MPI_COMM_WORLD, finished_alone));
  long wrong = 0;
  for (auto& b : bufs)
    for (float v : b) wrong += v != static_cast<float>(W);
  BOOST_CHECK_EQUAL(wrong, 0);
  if (W > 1) {
    BOOST_CHECK_GT(world.counters().seconds, 0.0);
    BOOST_CHECK_LE(world.counters().seconds, wall);
    BOOST_CHECK_EQUAL(world.counters().calls, 4u);
  }
}
