// The communicators built by make_process_groups agree with the plan, for every valid
// layout of the current world size; invalid layouts fail alike on every rank.
#include <boost/test/unit_test.hpp>
#include <string>
#include <vector>

#include "comm_test_util.hpp"
#include "mics/comm/process_groups.hpp"
#include "mics/core/error.hpp"
#include "mics/layout/plan.hpp"
#include "mpi_test_util.hpp"

using mics::comm::Group;
using mics::comm::make_process_groups;
using mics::comm::ProcessGroups;
using mics::test::all_ranks;
using mics::test::world_rank;
using mics::test::world_size;

namespace {

// The world ranks of a group's members, in group-rank order.
std::vector<int> members(const Group& g) {
  std::vector<int> out(static_cast<std::size_t>(g.size()));
  const int me = world_rank();
  MPI_Allgather(&me, 1, MPI_INT, out.data(), 1, MPI_INT, g.comm());
  return out;
}

void check_against_plan(ProcessGroups& pg) {
  const auto& plan = pg.plan();
  const auto pl = plan.placement(world_rank());
  BOOST_TEST_CONTEXT(plan.describe()) {
    BOOST_CHECK_EQUAL(pg.world().size(), world_size());
    BOOST_CHECK_EQUAL(pg.world().rank(), world_rank());
    BOOST_CHECK_EQUAL(pg.partition().rank(), pl.partition_rank);
    BOOST_CHECK_EQUAL(pg.replication().rank(), pl.replication_rank);
    BOOST_CHECK(members(pg.partition()) == plan.members_of_partition_group(pl.partition_group));
    BOOST_CHECK(members(pg.replication()) == plan.members_of_replication_group(pl.replication_group));
    BOOST_CHECK_EQUAL(pg.partition().name(), "partition");
    BOOST_CHECK_EQUAL(pg.replication().name(), "replication");
    BOOST_CHECK_EQUAL(pg.inter().valid(), plan.spans_nodes());
    BOOST_CHECK_EQUAL(pg.intra().valid(), plan.spans_nodes());
    if (plan.spans_nodes()) {
      BOOST_CHECK_EQUAL(pg.inter().rank(), pl.inter_rank);
      BOOST_CHECK_EQUAL(pg.intra().rank(), pl.intra_rank);
      BOOST_CHECK(members(pg.inter()) == plan.members_of_inter_group(pl.inter_group));
      BOOST_CHECK(members(pg.intra()) == plan.members_of_intra_group(pl.intra_group));
      BOOST_CHECK(members(pg.inter().twin()) == members(pg.inter()));
      BOOST_CHECK(members(pg.intra().twin()) == members(pg.intra()));
      BOOST_CHECK_EQUAL(pg.groups().size(), 5u);
    } else {
      BOOST_CHECK_EQUAL(pg.groups().size(), 3u);
    }
  }
}

}  // namespace

BOOST_AUTO_TEST_CASE(communicators_agree_with_the_plan_for_every_layout) {
  const int W = world_size();
  int layouts = 0;
  for (int g = 1; g <= W; ++g) {
    if (W % g) continue;
    for (int p : mics::layout::valid_partition_sizes(W, g))
      for (bool hier : {false, true}) {
        ProcessGroups pg = make_process_groups(MPI_COMM_WORLD, g, p, hier);
        check_against_plan(pg);
        ++layouts;
      }
  }
  BOOST_TEST_MESSAGE("layouts checked at W=" << W << ": " << layouts);
}

BOOST_AUTO_TEST_CASE(detected_node_size_is_the_whole_host) {
  // All ranks of a test run share one host, so detection finds one node of W ranks.
  ProcessGroups pg = make_process_groups(MPI_COMM_WORLD, 0, world_size(), true);
  BOOST_CHECK_EQUAL(pg.plan().ranks_per_node(), world_size());
  BOOST_CHECK(!pg.spans_nodes());
  check_against_plan(pg);
}

BOOST_AUTO_TEST_CASE(groups_survive_a_move) {
  const int W = world_size();
  ProcessGroups a = make_process_groups(MPI_COMM_WORLD, 1, W, true);
  ProcessGroups b = std::move(a);
  check_against_plan(b);
}

BOOST_AUTO_TEST_CASE(invalid_layouts_fail_alike_on_every_rank) {
  const int W = world_size();
  struct Case { int g, p; const char* expect; };
  const std::vector<Case> cases{{W + 1, 1, "does not divide world size"},
                                {1, W + 1, "does not divide world size"},
                                {1, 0, "must be positive"},
                                {-2, 1, "or 0 to detect it"}};
  for (const Case& c : cases) {
    std::string msg;
    bool raised = false;
    try {
      make_process_groups(MPI_COMM_WORLD, c.g, c.p, true);
    } catch (const mics::UsageError& e) {
      msg = e.what();
      raised = true;
    }
    BOOST_TEST_CONTEXT("g=" << c.g << " p=" << c.p << ": " << msg) {
      BOOST_CHECK(msg.find(c.expect) != std::string::npos);
      BOOST_CHECK(all_ranks(MPI_COMM_WORLD, raised));
      // Same text on every rank: compare with rank 0's.
      int len = static_cast<int>(msg.size());
      MPI_Bcast(&len, 1, MPI_INT, 0, MPI_COMM_WORLD);
      std::string root(static_cast<std::size_t>(len), ' ');
      if (world_rank() == 0) root = msg;
      MPI_Bcast(root.data(), len, MPI_CHAR, 0, MPI_COMM_WORLD);
      BOOST_CHECK(all_ranks(MPI_COMM_WORLD, root == msg));
    }
  }
}
