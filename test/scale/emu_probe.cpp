// emu_probe [--fail N]: a tiny MPI program for the emulated-cluster test. Each rank
// prints its host name and the size of its shared-memory (node) communicator, then the
// world all-gathers 1 MiB per rank and checks every byte, so the run must move real data
// between the emulated nodes. With --fail N every rank exits with status N after that.
#include <mpi.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <unistd.h>
#include <vector>

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  int rank = 0, size = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  MPI_Comm node;
  MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &node);
  int local = 0;
  MPI_Comm_size(node, &local);
  char host[256] = {};
  gethostname(host, sizeof host - 1);

  const int chunk = 1 << 20;
  std::vector<unsigned char> mine(chunk, static_cast<unsigned char>(rank + 1));
  std::vector<unsigned char> all(static_cast<size_t>(chunk) * size);
  MPI_Allgather(mine.data(), chunk, MPI_UNSIGNED_CHAR, all.data(), chunk, MPI_UNSIGNED_CHAR,
                MPI_COMM_WORLD);
  long wrong = 0;
  for (size_t i = 0; i < all.size(); ++i) wrong += all[i] != static_cast<unsigned char>(i / chunk + 1);
  std::printf("emu_probe: rank %d of %d on %s, %d ranks on this node, %ld wrong bytes\n", rank,
              size, host, local, wrong);
  std::fflush(stdout);
  int status = wrong ? 1 : 0;
  if (argc == 3 && std::strcmp(argv[1], "--fail") == 0) status = std::atoi(argv[2]);
  MPI_Comm_free(&node);
  MPI_Finalize();
  return status;
}
