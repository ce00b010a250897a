// Boost.Test main for tests that need no MPI.
#define BOOST_TEST_MODULE mics
#define BOOST_TEST_DYN_LINK
#include <boost/test/unit_test.hpp>
