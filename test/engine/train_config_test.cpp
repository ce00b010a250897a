#include <boost/test/unit_test.hpp>
#include <cmath>
#include <string>

#include "mics/core/error.hpp"
#include "mics/engine/engine.hpp"
#include "mics/engine/train_config.hpp"
#include "mics/model/config.hpp"

using namespace mics;
using namespace mics::engine;

BOOST_AUTO_TEST_CASE(schedule_warms_up_linearly_then_decays_by_cosine_to_min_lr) {
  OptimizerConfig o;
  o.lr = 1.0;
  o.min_lr = 0.1;
  o.warmup_steps = 4;
  BOOST_TEST(learning_rate(o, 0, 20) == 0.25, boost::test_tools::tolerance(1e-12));
  BOOST_TEST(learning_rate(o, 3, 20) == 1.0, boost::test_tools::tolerance(1e-12));
  BOOST_TEST(learning_rate(o, 4, 20) == 1.0, boost::test_tools::tolerance(1e-12));
  // Half-way through the decay: the mean of lr and min_lr.
  BOOST_TEST(learning_rate(o, 12, 20) == 0.55, boost::test_tools::tolerance(1e-12));
  BOOST_TEST(learning_rate(o, 20, 20) == 0.1, boost::test_tools::tolerance(1e-12));
  BOOST_TEST(learning_rate(o, 50, 20) == 0.1, boost::test_tools::tolerance(1e-12));
  for (int s = 5; s < 20; ++s) BOOST_TEST(learning_rate(o, s, 20) <= learning_rate(o, s - 1, 20));
}

BOOST_AUTO_TEST_CASE(accumulation_follows_from_global_and_micro_batch) {
  TrainConfig c;
  c.global_batch = 32;
  c.micro_batch = 2;
  BOOST_TEST(accumulation_steps(c, 4) == 4);
  BOOST_TEST(accumulation_steps(c, 16) == 1);
  c.global_batch = 30;
  try {
    accumulation_steps(c, 4);
    BOOST_FAIL("no error");
  } catch (const UsageError& e) {
    BOOST_TEST(std::string(e.what()).find("--global-batch 30 is not a multiple") != std::string::npos);
  }
  c.micro_batch = 0;
  BOOST_CHECK_THROW(accumulation_steps(c, 4), UsageError);
}

BOOST_AUTO_TEST_CASE(strategies_map_to_partition_sizes) {
  BOOST_TEST(partition_size_for(Strategy::ddp, 0, 8) == 1);
  BOOST_TEST(partition_size_for(Strategy::zero2, 0, 8) == 8);
  BOOST_TEST(partition_size_for(Strategy::zero3, 0, 8) == 8);
  BOOST_TEST(partition_size_for(Strategy::mics, 4, 8) == 4);
  BOOST_TEST(persistent_parameters(Strategy::ddp));
  BOOST_TEST(persistent_parameters(Strategy::zero2));
  BOOST_TEST(!persistent_parameters(Strategy::zero3));
  BOOST_TEST(!persistent_parameters(Strategy::mics));
  BOOST_CHECK_THROW(parse_strategy("zero1"), UsageError);
  BOOST_CHECK_THROW(parse_grad_sync("sometimes"), UsageError);
  BOOST_TEST(parse_strategy("mics") == Strategy::mics);
}

BOOST_AUTO_TEST_CASE(auto_partition_picks_the_smallest_node_aligned_group_that_fits) {
  model::ModelConfig c;
  c.layers = 24; c.hidden = 2048; c.heads = 16; c.seq = 1024; c.vocab = 50304;  // ~1.3B
  const double gib = 1024.0 * 1024 * 1024;
  // 1.3B x 16 B = ~21 GiB of states: fits one 80 GiB rank, needs 2 of 16 GiB.
  BOOST_TEST(auto_partition_size(c, 16, 8, device::DType::f32, static_cast<std::size_t>(80 * gib)) == 1);
  const int p16 = auto_partition_size(c, 16, 8, device::DType::f32, static_cast<std::size_t>(16 * gib));
  BOOST_TEST(p16 == 2);
  // Node-aligned: with 8 ranks per node, 5 GiB needs p = 16, not 9 to 15: states 19.6/p GiB
  // plus the engine's four parameter and four gradient slots of the largest bucket (the
  // 105M-element embeddings, 3.1 GiB in f32) leave p = 8 at 5.8 GiB (mics-plan's memory
  // function, which auto_partition_size uses).
  const int p3 = auto_partition_size(c, 16, 8, device::DType::f32, static_cast<std::size_t>(5 * gib));
  BOOST_TEST(p3 == 16);
  BOOST_CHECK_THROW(auto_partition_size(c, 2, 1, device::DType::f32, static_cast<std::size_t>(1 * gib)),
                    UsageError);
}
