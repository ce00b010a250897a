// The one resolved layout: what the strategy implies, auto from the memory it is given
// (the set-up passes the smallest over all ranks), and the refusals.
#include <boost/test/unit_test.hpp>
#include <string>

#include "mics/core/error.hpp"
#include "mics/layout/resolved.hpp"

using mics::layout::LayoutInputs;
using mics::layout::node_aligned;
using mics::layout::resolve_layout;

namespace {

LayoutInputs inputs(const std::string& strategy, int implied, int requested, bool automatic = false) {
  LayoutInputs in;
  in.world_size = 8;
  in.ranks_per_node = 4;
  in.strategy = strategy;
  in.strategy_partition = implied;
  in.requested_partition = requested;
  in.partition_auto = automatic;
  in.hierarchical = true;
  in.min_memory_bytes = automatic ? 1000 : 0;
  return in;
}

int no_auto(int, int, std::size_t) {
  BOOST_FAIL("auto was asked for");
  return 0;
}

std::string error_of(const LayoutInputs& in) {
  try {
    resolve_layout(in, no_auto);
  } catch (const mics::UsageError& e) {
    return e.what();
  }
  return "";
}

}  // namespace

BOOST_AUTO_TEST_CASE(node_alignment_rule) {
  BOOST_CHECK(node_aligned(1, 4) && node_aligned(2, 4) && node_aligned(4, 4) && node_aligned(8, 4));
  BOOST_CHECK(!node_aligned(3, 4) && !node_aligned(6, 4) && !node_aligned(0, 4) && !node_aligned(2, 0));
}

BOOST_AUTO_TEST_CASE(strategies_imply_their_partition_size) {
  const auto ddp = resolve_layout(inputs("ddp", 1, 0), no_auto);
  BOOST_CHECK_EQUAL(ddp.partition_size(), 1);
  BOOST_CHECK(!ddp.hierarchical());  // requested, but a group of 1 spans no nodes
  BOOST_CHECK(ddp.hierarchical_requested());
  const auto z3 = resolve_layout(inputs("zero3", 8, 0), no_auto);
  BOOST_CHECK_EQUAL(z3.partition_size(), 8);
  BOOST_CHECK(z3.hierarchical());
  const auto m = resolve_layout(inputs("mics", 0, 4), no_auto);
  BOOST_CHECK_EQUAL(m.partition_size(), 4);
  BOOST_CHECK_EQUAL(m.plan().replication_size(), 2);
  BOOST_CHECK_EQUAL(m.strategy(), "mics");
}

BOOST_AUTO_TEST_CASE(auto_uses_the_memory_it_is_given) {
  std::size_t seen = 0;
  const auto l = resolve_layout(inputs("mics", 0, 0, true), [&](int W, int g, std::size_t memory) {
    BOOST_CHECK_EQUAL(W, 8);
    BOOST_CHECK_EQUAL(g, 4);
    seen = memory;
    return 2;
  });
  BOOST_CHECK_EQUAL(seen, 1000u);
  BOOST_CHECK_EQUAL(l.partition_size(), 2);
  BOOST_CHECK(l.partition_auto());
  BOOST_CHECK(l.describe().find("the smallest over ranks") != std::string::npos);
}

BOOST_AUTO_TEST_CASE(inconsistent_requests_are_refused) {
  BOOST_CHECK_EQUAL(error_of(inputs("ddp", 1, 2)),
                    "--partition-size 2 does not apply to --strategy ddp, whose partition size is 1; drop it, "
                    "or use --strategy mics");
  auto in = inputs("mics", 0, 0, true);
  in.min_memory_bytes = 0;
  BOOST_CHECK(error_of(in).find("--partition-size auto needs --memory-per-rank") != std::string::npos);
  BOOST_CHECK(error_of(inputs("mics", 0, 3)).find("partition size 3 does not divide world size 8") != std::string::npos);
  BOOST_CHECK(error_of(inputs("mics", 0, 6)).find("does not divide") != std::string::npos);
}
