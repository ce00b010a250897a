#include <boost/test/unit_test.hpp>
#include <string>

#include "mics/core/agree.hpp"
#include "mics/core/error.hpp"
#include "mpi_test_util.hpp"

using mics::test::world_rank;
using mics::test::world_size;

BOOST_AUTO_TEST_CASE(no_failure_returns_normally) {
  BOOST_CHECK_NO_THROW(mics::agree(MPI_COMM_WORLD, ""));
}

BOOST_AUTO_TEST_CASE(one_failing_rank_makes_every_rank_throw_its_message) {
  const int failing = world_size() - 1;
  const std::string mine = world_rank() == failing ? "file x.h5 is truncated" : "";
  try {
    mics::agree(MPI_COMM_WORLD, mine);
    BOOST_FAIL("agree did not throw");
  } catch (const mics::AgreedError& e) {
    const std::string expect = world_size() == 1 ? "file x.h5 is truncated"
                                                 : "rank " + std::to_string(failing) + " (host " +
                                                       mics::host_name() + "): file x.h5 is truncated";
    BOOST_CHECK_EQUAL(std::string(e.what()), expect);
    BOOST_CHECK(e.world());
  }
}

BOOST_AUTO_TEST_CASE(lowest_failing_rank_wins) {
  const std::string mine = "rank " + std::to_string(world_rank());
  try {
    mics::agree(MPI_COMM_WORLD, mine);
    BOOST_FAIL("agree did not throw");
  } catch (const mics::Error& e) {
    BOOST_CHECK_EQUAL(std::string(e.what()), "rank 0");
  }
}
