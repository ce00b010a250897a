// Boost.Test main for tests that need no MPI.
#define BOOST_TEST_MODULE mics
#include <boost/test/unit_test.hpp>
