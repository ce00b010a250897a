// A 1-rank step does no communication work (issue 14): every group is of one rank, so
// each collective completes on the caller and the groups' counters book no bytes, no busy
// time and no waits; the engine's exposed time is only the cost of looking at a request
// that is already complete.
#include <boost/test/unit_test.hpp>

#include "engine_test_util.hpp"

using namespace mics;

namespace {

struct OneRankRun {
  std::vector<double> losses;
  double exposed = 0;  // engine's exposed communication, summed over the steps
  std::uint64_t bytes = 0, sends = 0;
  double busy = 0, waited = 0;  // the groups' counters
};

OneRankRun run_alone(engine::Strategy strategy, int steps, int global_batch = 4) {
  const model::ModelConfig mc = test::tiny_model();
  engine::TrainConfig tc;
  tc.strategy = strategy;
  tc.micro_batch = 2;
  tc.global_batch = global_batch;  // 4: two micro-steps, the accumulation path too
  tc.steps = steps;
  tc.seed = 7;
  tc.ranks_per_node = 1;
  tc.partition_size = 1;
  auto backend = device::make_cpu_backend(1);
  auto groups = comm::make_process_groups(MPI_COMM_SELF, 1, 1, false);
  comm::MpiCollectives coll;
  data::SyntheticDataset data(static_cast<int>(mc.vocab));
  OneRankRun r;
  engine::Engine e(mc, tc, *backend, coll, groups, device::DType::f32, device::DType::f32,
                   device::DType::f32);
  for (int s = 0; s < steps; ++s) {
    const auto res = e.train_step(data);
    r.losses.push_back(res.loss);
    r.exposed += res.exposed.total();
  }
  for (comm::Group* g : groups.groups()) {
    const auto c = g->counters();
    r.bytes += c.bytes;
    r.sends += c.sends;
    r.busy += c.seconds;
    r.waited += c.exposed_seconds;
  }
  return r;
}

}  // namespace

BOOST_AUTO_TEST_CASE(one_rank_steps_communicate_nothing_under_every_strategy) {
  const int steps = 4;
  const OneRankRun ref = run_alone(engine::Strategy::ddp, steps);
  for (auto s : {engine::Strategy::ddp, engine::Strategy::zero2, engine::Strategy::zero3,
                 engine::Strategy::mics}) {
    BOOST_TEST_CONTEXT("strategy " << engine::to_string(s)) {
      const OneRankRun r = run_alone(s, steps);
      BOOST_CHECK_EQUAL(r.bytes, 0u);
      BOOST_CHECK_EQUAL(r.sends, 0u);
      BOOST_CHECK_EQUAL(r.busy, 0.0);
      BOOST_CHECK_EQUAL(r.waited, 0.0);
      // Two clock reads per complete request; a generous bound for a loaded machine.
      BOOST_CHECK_LT(r.exposed, 1e-3 * steps);
      // One process, one set of states: every strategy is the same computation.
      BOOST_CHECK(r.losses == ref.losses);
    }
  }
}

// With one micro-step per step the engine has nothing to wait for at all: the parameters
// are read in place from the master shard and the gradient goes straight into the
// accumulator, so no request is even made and the step books exactly zero.
BOOST_AUTO_TEST_CASE(one_rank_single_micro_step_books_no_communication_time) {
  const int steps = 3;
  const OneRankRun ref = run_alone(engine::Strategy::ddp, steps, 2);
  for (auto s : {engine::Strategy::ddp, engine::Strategy::zero2, engine::Strategy::zero3,
                 engine::Strategy::mics}) {
    BOOST_TEST_CONTEXT("strategy " << engine::to_string(s)) {
      const OneRankRun r = run_alone(s, steps, 2);
      BOOST_CHECK_EQUAL(r.exposed, 0.0);
      BOOST_CHECK_EQUAL(r.bytes, 0u);
      BOOST_CHECK(r.losses == ref.losses);
    }
  }
}
