// The planner over a sweep of layouts: every valid (W, g, p) must give groups of the
// right sizes that cover the world exactly once, the zero-copy shard order, and inter /
// intra sub-groups that tile each partition group; every invalid one must be refused
// with its own message.
#include <boost/test/unit_test.hpp>
#include <set>
#include <string>
#include <vector>

#include "mics/core/error.hpp"
#include "mics/layout/plan.hpp"

using mics::layout::LayoutRequest;
using mics::layout::Plan;
using mics::layout::valid_partition_sizes;

namespace {

bool node_aligned(int g, int p) { return p >= g ? p % g == 0 : g % p == 0; }

std::string refusal(const LayoutRequest& r) {
  try {
    Plan::make(r);
  } catch (const mics::UsageError& e) {
    return e.what();
  }
  return "";
}

// Checks that `members(id)` for id in [0, count) are groups of `size` that partition the
// world, and that `id_of`/`rank_of` of each member agree with its position.
template <class Members, class Id, class Rank>
void check_tiling(const Plan& plan, int count, int size, Members members, Id id_of, Rank rank_of) {
  std::vector<int> seen(static_cast<std::size_t>(plan.world_size()), 0);
  for (int id = 0; id < count; ++id) {
    const std::vector<int> m = members(id);
    BOOST_REQUIRE_EQUAL(static_cast<int>(m.size()), size);
    for (int pos = 0; pos < size; ++pos) {
      const int rank = m[static_cast<std::size_t>(pos)];
      BOOST_REQUIRE(rank >= 0 && rank < plan.world_size());
      ++seen[static_cast<std::size_t>(rank)];
      const auto pl = plan.placement(rank);
      BOOST_REQUIRE_EQUAL(id_of(pl), id);
      BOOST_REQUIRE_EQUAL(rank_of(pl), pos);
    }
  }
  for (int s : seen) BOOST_REQUIRE_EQUAL(s, 1);
}

}  // namespace

BOOST_AUTO_TEST_CASE(sweep_of_valid_layouts) {
  int checked = 0;
  for (int W = 1; W <= 64; ++W)
    for (int g = 1; g <= W; ++g) {
      if (W % g) continue;
      for (int p = 1; p <= W; ++p) {
        if (W % p || !node_aligned(g, p)) continue;
        for (bool hier : {false, true}) {
          const Plan plan = Plan::make({W, g, p, hier});
          ++checked;
          const int k = p >= g ? p / g : 1, gn = p >= g ? g : p;
          BOOST_REQUIRE_EQUAL(plan.nodes_per_group(), k);
          BOOST_REQUIRE_EQUAL(plan.group_ranks_per_node(), gn);
          BOOST_REQUIRE_EQUAL(plan.replication_size(), W / p);
          BOOST_REQUIRE_EQUAL(plan.spans_nodes(), k > 1);
          BOOST_REQUIRE_EQUAL(plan.hierarchical(), hier && k > 1);

          using PL = mics::layout::Placement;
          check_tiling(
              plan, plan.partition_group_count(), p,
              [&](int id) { return plan.members_of_partition_group(id); },
              [](const PL& x) { return x.partition_group; }, [](const PL& x) { return x.partition_rank; });
          check_tiling(
              plan, plan.replication_group_count(), W / p,
              [&](int id) { return plan.members_of_replication_group(id); },
              [](const PL& x) { return x.replication_group; },
              [](const PL& x) { return x.replication_rank; });
          check_tiling(
              plan, plan.inter_group_count(), k, [&](int id) { return plan.members_of_inter_group(id); },
              [](const PL& x) { return x.inter_group; }, [](const PL& x) { return x.inter_rank; });
          check_tiling(
              plan, plan.intra_group_count(), gn, [&](int id) { return plan.members_of_intra_group(id); },
              [](const PL& x) { return x.intra_group; }, [](const PL& x) { return x.intra_rank; });

          for (int rank = 0; rank < W; ++rank) {
            const auto pl = plan.placement(rank);
            BOOST_REQUIRE_EQUAL(pl.node, rank / g);
            BOOST_REQUIRE_EQUAL(pl.local, rank % g);
            // Partition groups are consecutive blocks, hence node-aligned.
            BOOST_REQUIRE_EQUAL(pl.partition_group, rank / p);
            // The zero-copy order of docs/DESIGN.md section 3.
            BOOST_REQUIRE_EQUAL(pl.partition_rank, pl.group_local * k + pl.group_node);
            BOOST_REQUIRE_EQUAL(pl.group_node, (rank % p) / gn);
            if (k == 1) BOOST_REQUIRE_EQUAL(pl.partition_rank, rank % p);
            // Inter members sit on distinct nodes with the same local index; intra members
            // share this rank's node.
            std::set<int> nodes;
            for (int m : plan.members_of_inter_group(pl.inter_group)) {
              nodes.insert(plan.placement(m).node);
              BOOST_REQUIRE_EQUAL(plan.placement(m).local, pl.local);
            }
            BOOST_REQUIRE_EQUAL(static_cast<int>(nodes.size()), k);
            for (int m : plan.members_of_intra_group(pl.intra_group))
              BOOST_REQUIRE_EQUAL(plan.placement(m).node, pl.node);
            // Step 1 of the hierarchical all-gather over inter fills block j with chunks
            // j*k .. j*k+k-1 in inter-rank order; check that the inter group's members
            // have exactly those shard indices, in order.
            const auto inter = plan.members_of_inter_group(pl.inter_group);
            for (int i = 0; i < k; ++i)
              BOOST_REQUIRE_EQUAL(plan.placement(inter[static_cast<std::size_t>(i)]).partition_rank,
                                  pl.group_local * k + i);
            // Replicas of a shard have the same q.
            for (int m : plan.members_of_replication_group(pl.replication_group))
              BOOST_REQUIRE_EQUAL(plan.placement(m).partition_rank, pl.partition_rank);
          }
        }
      }
    }
  BOOST_TEST_MESSAGE("valid layouts checked: " << checked);
  BOOST_CHECK_GT(checked, 500);
}

BOOST_AUTO_TEST_CASE(every_invalid_layout_is_refused_with_its_own_message) {
  int refused = 0;
  for (int W = 1; W <= 48; ++W)
    for (int g = 1; g <= W + 2; ++g)
      for (int p = 1; p <= W + 2; ++p) {
        const std::string msg = refusal({W, g, p, true});
        const bool valid = W % g == 0 && W % p == 0 && node_aligned(g, p);
        BOOST_REQUIRE_EQUAL(msg.empty(), valid);
        if (valid) continue;
        ++refused;
        BOOST_REQUIRE(msg.find('\n') == std::string::npos);
        if (W % g != 0) {
          BOOST_REQUIRE(msg.find("ranks per node " + std::to_string(g) + " does not divide world size " +
                                 std::to_string(W)) != std::string::npos);
        } else if (W % p != 0) {
          BOOST_REQUIRE(msg.find("partition size " + std::to_string(p) + " does not divide world size " +
                                 std::to_string(W)) != std::string::npos);
          BOOST_REQUIRE(msg.find("valid partition sizes") != std::string::npos);
        } else {
          BOOST_REQUIRE(msg.find("straddles node boundaries") != std::string::npos);
          BOOST_REQUIRE(msg.find(std::to_string(g)) != std::string::npos);
        }
      }
  BOOST_CHECK_GT(refused, 1000);
}

BOOST_AUTO_TEST_CASE(messages_name_the_numbers_and_the_valid_choices) {
  BOOST_CHECK_EQUAL(refusal({12, 4, 6, true}),
                    "partition size 6 straddles node boundaries: a group of 4 or more ranks must be "
                    "whole nodes (a multiple of the 4 ranks per node; nearest valid: 4 or 12); valid "
                    "partition sizes for 12 ranks with 4 per node: 1, 2, 4, 12");
  BOOST_CHECK_EQUAL(refusal({8, 4, 3, false}),
                    "partition size 3 does not divide world size 8 (nearest valid: 2 or 4); valid "
                    "partition sizes for 8 ranks with 4 per node: 1, 2, 4, 8");
  BOOST_CHECK(refusal({12, 6, 4, false}).find("must divide the 6 ranks per node") != std::string::npos);
  BOOST_CHECK(refusal({6, 4, 2, false}).find("ranks per node 4 does not divide world size 6") !=
              std::string::npos);
  BOOST_CHECK(refusal({0, 1, 1, false}).find("world size must be positive (got 0)") != std::string::npos);
  BOOST_CHECK(refusal({4, 0, 1, false}).find("ranks per node must be positive (got 0)") != std::string::npos);
  BOOST_CHECK(refusal({4, 2, -1, false}).find("partition size must be positive (got -1)") !=
              std::string::npos);
  // DeepSpeed accepts S=20 on 8-GPU nodes; we must not.
  BOOST_CHECK(refusal({160, 8, 20, true}).find("straddles") != std::string::npos);
  // Distinct kinds get distinct messages.
  std::set<std::string> kinds;
  for (const auto& r : {LayoutRequest{12, 4, 6, true}, LayoutRequest{8, 4, 3, true},
                        LayoutRequest{12, 6, 4, true}, LayoutRequest{6, 4, 2, true},
                        LayoutRequest{0, 1, 1, true}})
    kinds.insert(refusal(r).substr(0, 30));
  BOOST_CHECK_EQUAL(kinds.size(), 5u);
}

BOOST_AUTO_TEST_CASE(zero_copy_order_for_two_nodes_of_four) {
  // W=8, g=4, p=8: k=2. Node 0 holds ranks 0..3 (i=0), node 1 ranks 4..7 (i=1);
  // q = j*2 + i, so rank 0 -> 0, rank 4 -> 1, rank 1 -> 2, rank 5 -> 3, ...
  const Plan plan = Plan::make({8, 4, 8, true});
  const std::vector<int> expected_q{0, 2, 4, 6, 1, 3, 5, 7};
  for (int r = 0; r < 8; ++r) BOOST_CHECK_EQUAL(plan.placement(r).partition_rank, expected_q[static_cast<std::size_t>(r)]);
  BOOST_CHECK(plan.members_of_partition_group(0) == (std::vector<int>{0, 4, 1, 5, 2, 6, 3, 7}));
  BOOST_CHECK(plan.members_of_inter_group(1) == (std::vector<int>{1, 5}));
  BOOST_CHECK(plan.members_of_intra_group(1) == (std::vector<int>{4, 5, 6, 7}));
  BOOST_CHECK(plan.hierarchical());
  BOOST_CHECK_EQUAL(plan.describe(), "W=8 g=4 p=8 (k=2 nodes per group, r=1 replicas, hierarchical)");
}

BOOST_AUTO_TEST_CASE(valid_sizes_helper) {
  BOOST_CHECK(valid_partition_sizes(16, 4) == (std::vector<int>{1, 2, 4, 8, 16}));
  BOOST_CHECK(valid_partition_sizes(24, 6) == (std::vector<int>{1, 2, 3, 6, 12, 24}));
  BOOST_CHECK(valid_partition_sizes(6, 4).empty());
  BOOST_CHECK(valid_partition_sizes(0, 1).empty());
}
