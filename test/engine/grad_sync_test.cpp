// Hop 2 (the replication all-reduce) overlapped with the last micro-step's backward
// (docs/DESIGN.md section 4): the same bits as after the backward, started before the
// step's last reduce-scatter, and in the reduce type when that is narrower than the
// accumulator.
#include <boost/test/unit_test.hpp>
#include <cmath>
#include <cstdlib>
#include <string>
#include <vector>

#include "engine_test_util.hpp"
#include "mpi_test_util.hpp"

using namespace mics;
using device::DType;

namespace {

// More buckets than the engine's gradient slots, so that reduce-scatters are finished
// (and hop 2 can start) before the backward ends.
model::ModelConfig six_layers() {
  model::ModelConfig m = test::tiny_model();
  m.layers = 6;
  return m;
}

engine::TrainConfig mics_p2(int accumulation) {
  engine::TrainConfig c;
  c.strategy = engine::Strategy::mics;
  c.partition_size = 2;
  c.ranks_per_node = 2;
  c.micro_batch = 1;
  c.global_batch = test::world_size() * accumulation;
  c.steps = 6;
  c.seed = 7;
  c.optimizer.lr = 3e-3;
  c.optimizer.warmup_steps = 2;
  return c;
}

// Forwards to the MPI backend and writes down the order of the engine's gradient
// collectives: "rs" for a reduce-scatter, "ar:<type>" for an all-reduce.
class Recording final : public comm::Collectives {
public:
  std::vector<std::string> calls;
  const char* backend() const noexcept override { return "recording"; }
  comm::Request all_gather(void* buf, std::size_t n, DType dt, comm::Group& g) override {
    return inner_.all_gather(buf, n, dt, g);
  }
  comm::Request reduce_scatter(const void* s, void* r, std::size_t n, DType dt,
                               comm::Group& g) override {
    calls.push_back("rs");
    return inner_.reduce_scatter(s, r, n, dt, g);
  }
  comm::Request all_reduce(void* buf, std::size_t n, DType dt, comm::Group& g) override {
    calls.push_back(std::string("ar:") + device::dtype_name(dt));
    return inner_.all_reduce(buf, n, dt, g);
  }
  comm::Request broadcast(void* buf, std::size_t n, DType dt, int root, comm::Group& g) override {
    return inner_.broadcast(buf, n, dt, root, g);
  }
  void barrier(comm::Group& g) override { inner_.barrier(g); }
  void sum_host(double* v, std::size_t n, comm::Group& g) override { inner_.sum_host(v, n, g); }

protected:
  std::shared_ptr<void> allocate_temp(std::size_t bytes) override {
    return {std::malloc(bytes), std::free};
  }

private:
  comm::MpiCollectives inner_;
};

// One step of mics p=2 with the recorder; returns the calls of that step.
std::vector<std::string> record_one_step(bool overlap, DType states) {
  engine::TrainConfig tc = mics_p2(2);
  tc.overlap_grad_sync = overlap;
  auto backend = device::make_cpu_backend(1);
  auto groups = comm::make_process_groups(MPI_COMM_WORLD, 2, 2, false);
  Recording coll;
  data::SyntheticDataset data(static_cast<int>(six_layers().vocab));
  engine::Engine e(six_layers(), tc, *backend, coll, groups, DType::f32, DType::f32, states);
  coll.calls.clear();
  e.train_step(data);
  return coll.calls;
}

std::size_t first_of(const std::vector<std::string>& v, const std::string& prefix) {
  for (std::size_t i = 0; i < v.size(); ++i)
    if (v[i].rfind(prefix, 0) == 0) return i;
  return v.size();
}

std::size_t last_of(const std::vector<std::string>& v, const std::string& prefix) {
  std::size_t at = v.size();
  for (std::size_t i = 0; i < v.size(); ++i)
    if (v[i].rfind(prefix, 0) == 0) at = i;
  return at;
}

}  // namespace

BOOST_AUTO_TEST_CASE(overlapped_hop2_does_not_change_a_bit) {
  if (test::world_size() < 4) return;
  for (DType dt : {DType::f64, DType::f32}) {
    engine::TrainConfig tc = mics_p2(3);
    const test::RunResult on = test::run_layout(MPI_COMM_WORLD, six_layers(), tc, 6, dt);
    tc.overlap_grad_sync = false;
    const test::RunResult off = test::run_layout(MPI_COMM_WORLD, six_layers(), tc, 6, dt);
    BOOST_TEST_CONTEXT(dt) {
      BOOST_TEST(on.losses == off.losses, boost::test_tools::per_element());
      BOOST_TEST(on.params == off.params);
      BOOST_TEST(on.replicas_identical);
    }
  }
}

BOOST_AUTO_TEST_CASE(overlapped_hop2_starts_before_the_last_reduce_scatter) {
  if (test::world_size() < 4) return;
  const auto on = record_one_step(true, DType::f32);
  const auto off = record_one_step(false, DType::f32);
  const std::size_t buckets = six_layers().layers + 2;
  // Two micro-steps: one reduce-scatter per bucket each; one all-reduce per bucket.
  BOOST_TEST(on.size() == 3 * buckets);
  BOOST_TEST(off.size() == 3 * buckets);
  BOOST_TEST(first_of(on, "ar:") < last_of(on, "rs"));
  BOOST_TEST(first_of(on, "ar:") > buckets);  // nothing during the first micro-step
  BOOST_TEST(first_of(off, "ar:") > last_of(off, "rs"));
}

BOOST_AUTO_TEST_CASE(hop2_moves_the_reduce_type_when_it_is_narrower) {
  if (test::world_size() < 4) return;
  // Reduced in f32, accumulated in f64: both hops move f32.
  const auto calls = record_one_step(true, DType::f64);
  for (const auto& c : calls)
    if (c.rfind("ar:", 0) == 0) BOOST_TEST(c == "ar:f32");
  // Equal-width types move the accumulator itself.
  const auto same = record_one_step(true, DType::f32);
  BOOST_TEST(same.at(first_of(same, "ar:")) == "ar:f32");
}

BOOST_AUTO_TEST_CASE(narrowed_hop2_sums_like_the_wide_one) {
  if (test::world_size() < 4) return;
  // f64 states reduced in f32 on both hops against f64 throughout: the same run up to
  // f32 rounding of the gradients (a hop 2 that dropped a replica's sum or skipped the
  // cast back would be off by far more).
  const engine::TrainConfig tc = mics_p2(2);
  const auto narrow = test::run_layout(MPI_COMM_WORLD, six_layers(), tc, 6, DType::f32, DType::f64);
  const auto wide = test::run_layout(MPI_COMM_WORLD, six_layers(), tc, 6, DType::f64);
  for (std::size_t s = 0; s < wide.losses.size(); ++s)
    BOOST_TEST(std::abs(narrow.losses[s] - wide.losses[s]) <= 1e-5 * std::abs(wide.losses[s]));
  BOOST_TEST(narrow.replicas_identical);
}
