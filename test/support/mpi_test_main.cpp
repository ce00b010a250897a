// Boost.Test main for tests run under mpiexec. Every rank runs every test case; only
// rank 0 reports, and every rank exits with the global verdict, so a failure on any
// rank fails the ctest entry.
#define BOOST_TEST_NO_MAIN
#include <mpi.h>

#include <boost/test/unit_test.hpp>
#include <cstring>
#include <vector>

static bool init_unit_test() { return true; }

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);

  // Ranks other than 0 report nothing and log only errors. A level given on the command
  // line is dropped there: Boost rejects a repeated option, and one rank leaving early
  // would leave the others waiting in their first collective.
  static char quiet_report[] = "--report_level=no";
  static char quiet_log[] = "--log_level=error";
  std::vector<char*> args;
  for (int i = 0; i < argc; ++i) {
    const bool level = std::strncmp(argv[i], "--report_level", 14) == 0 ||
                       std::strncmp(argv[i], "--log_level", 11) == 0;
    if (rank == 0 || i == 0 || !level) args.push_back(argv[i]);
  }
  if (rank != 0) {
    args.push_back(quiet_report);
    args.push_back(quiet_log);
  }
  const int local = boost::unit_test::unit_test_main(&init_unit_test, static_cast<int>(args.size()),
                                                     args.data());
  int failed = local != 0 ? 1 : 0, any_failed = 0;
  MPI_Allreduce(&failed, &any_failed, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
  if (rank == 0 && any_failed && !failed) std::fprintf(stderr, "*** a rank other than 0 failed\n");
  MPI_Finalize();
  return any_failed;
}
