// The planner's memory function against what the engine and the transformer really
// allocate, for every strategy, partition size, hierarchical choice and type mix, at the
// rank counts ctest runs this with.
#include <boost/test/unit_test.hpp>

#include "engine_test_util.hpp"
#include "mics/layout/plan.hpp"
#include "mics/model/transformer.hpp"
#include "mics/planner/memory.hpp"
#include "mpi_test_util.hpp"

using namespace mics;

namespace {

// Odd sizes, so that padding to 16-element chunks matters.
model::ModelConfig odd_model() {
  model::ModelConfig c;
  c.layers = 3;
  c.hidden = 24;
  c.heads = 2;
  c.seq = 10;
  c.vocab = 37;
  return c;
}

planner::Strategy to_planner(engine::Strategy s) {
  switch (s) {
    case engine::Strategy::ddp: return planner::Strategy::ddp;
    case engine::Strategy::zero2: return planner::Strategy::zero2;
    case engine::Strategy::zero3: return planner::Strategy::zero3;
    case engine::Strategy::mics: break;
  }
  return planner::Strategy::mics;
}

struct Types {
  device::DType compute, reduce, states;
};

// micro_steps: micro-batches per optimizer step (a lone f32 rank with one holds no
// gradient slots, with two it does).
void check_layout(engine::Strategy s, int p, bool hierarchical, const Types& t, int micro_steps) {
  const int W = test::world_size(), g = W >= 2 ? 2 : 1;
  const model::ModelConfig mc = odd_model();
  engine::TrainConfig tc;
  tc.strategy = s;
  tc.partition_size = p;
  tc.hierarchical = hierarchical;
  tc.ranks_per_node = g;
  tc.micro_batch = 2;
  tc.global_batch = 2 * W * micro_steps;
  auto backend = device::make_cpu_backend(1);
  auto groups = comm::make_process_groups(MPI_COMM_WORLD, g, p, hierarchical);
  comm::MpiCollectives coll;
  engine::Engine e(mc, tc, *backend, coll, groups, t.compute, t.reduce, t.states);
  planner::MemoryInputs in;
  in.compute_bytes = static_cast<int>(device::dtype_size(t.compute));
  in.reduce_bytes = static_cast<int>(device::dtype_size(t.reduce));
  in.state_bytes = static_cast<int>(device::dtype_size(t.states));
  in.replicas = W / p;
  in.accumulation = e.accumulation();
  // The engine's working set leaves out the hierarchical temporaries, which the
  // collectives allocate per call: compare without them.
  const auto m = planner::rank_memory(mc, to_planner(s), p, 1, false, in);
  BOOST_TEST_CONTEXT(engine::to_string(s) << " p=" << p << (hierarchical ? " hier" : "") << " compute "
                                          << device::dtype_name(t.compute) << " states "
                                          << device::dtype_name(t.states) << " micro-steps " << micro_steps) {
    BOOST_TEST(m.states == static_cast<double>(e.model_state_bytes()));
    BOOST_TEST(m.working == static_cast<double>(e.working_set_bytes()));
  }
}

}  // namespace

BOOST_AUTO_TEST_CASE(model_states_and_working_set_match_the_engine_for_every_layout) {
  const int W = test::world_size(), g = W >= 2 ? 2 : 1;
  for (const Types& t : {Types{device::DType::f32, device::DType::f32, device::DType::f32},
                         Types{device::DType::f32, device::DType::f32, device::DType::f64},
                         Types{device::DType::f64, device::DType::f64, device::DType::f64}})
    for (int a : {1, 2}) {
      check_layout(engine::Strategy::ddp, 1, false, t, a);
      check_layout(engine::Strategy::zero2, W, false, t, a);
      check_layout(engine::Strategy::zero3, W, false, t, a);
      for (int p : layout::valid_partition_sizes(W, g)) {
        check_layout(engine::Strategy::mics, p, false, t, a);
        if (p > g) check_layout(engine::Strategy::mics, p, true, t, a);
      }
    }
}

BOOST_AUTO_TEST_CASE(activation_bytes_match_the_transformer) {
  if (test::world_rank() != 0) return;
  auto backend = device::make_cpu_backend(1);
  for (bool recompute : {false, true})
    for (std::int64_t micro : {1, 3})
      for (auto dt : {device::DType::f32, device::DType::f64}) {
        model::Transformer tm(odd_model(), *backend, dt, micro, recompute);
        planner::MemoryInputs in;
        in.compute_bytes = static_cast<int>(device::dtype_size(dt));
        in.micro_batch = micro;
        in.recompute = recompute;
        in.flash_attention = true;  // one log-sum-exp per (row, head), f64 in f64 runs
        BOOST_TEST_CONTEXT("recompute " << recompute << " micro " << micro << " " << device::dtype_name(dt)) {
          BOOST_TEST(planner::activation_bytes(odd_model(), in) == static_cast<double>(tm.activation_bytes()));
        }
      }
}
