// Test driver for checkpoints across separate jobs:
//   checkpoint_tool write DIR FIRST_STEP COUNT [KEEP_LAST] [P]   saves synthetic states
//   checkpoint_tool fresh-write ...                              the same into an emptied DIR
//   checkpoint_tool read PATH                                    loads at every p <= W, checks bytes
//   checkpoint_tool verify PATH                                  full checksum pass
//   checkpoint_tool corrupt PATH OUTDIR                          bad copies of PATH for CLI tests
//   checkpoint_tool write-model DIR PRESET [wrong-config]        a checkpoint of a real model's
//       layout whose model_config is the preset text (or, with wrong-config, a wider model's)
// `write` records each rank's pid in DIR.pids/ so that a test can kill the job's ranks.
#include <hdf5.h>
#include <unistd.h>

#include <cstdio>
#include <chrono>
#include <cstdlib>
#include <thread>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <regex>
#include <string>

#include "mics/checkpoint/checkpoint.hpp"
#include "mics/core/error.hpp"
#include "mics/core/mpi_env.hpp"
#include "mics/model/config.hpp"
#include "mics/model/layout.hpp"
#include "synthetic.hpp"

namespace ck = mics::checkpoint;
namespace fs = std::filesystem;

namespace {
void flip_byte(const std::string& file, std::uint64_t offset) {
  std::fstream io(file, std::ios::in | std::ios::out | std::ios::binary);
  io.seekg(static_cast<std::streamoff>(offset));
  char c = 0;
  io.read(&c, 1);
  c = static_cast<char>(c ^ 0x5a);
  io.seekp(static_cast<std::streamoff>(offset));
  io.write(&c, 1);
}

// One file per kind of damage a user may meet, made from a good checkpoint.
void make_corrupt_copies(const std::string& good, const std::string& out) {
  fs::remove_all(out);
  fs::create_directories(out + "/empty");
  auto copy = [&](const char* name) {
    const std::string p = out + "/" + name;
    fs::copy_file(good, p);
    return p;
  };
  const std::string truncated = copy("truncated.h5");
  fs::resize_file(truncated, fs::file_size(truncated) * 2 / 3);
  std::ofstream(out + "/notes.h5") << "plain text, not HDF5\n";

  const std::string flipped = copy("flipped.h5");
  {
    const hid_t f = H5Fopen(flipped.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
    const hid_t d = H5Dopen2(f, "/model/h1.mlp.w", H5P_DEFAULT);
    const haddr_t off = H5Dget_offset(d);
    H5Dclose(d);
    H5Fclose(f);
    flip_byte(flipped, off + 123);
  }
  const std::string missing = copy("missing.h5");
  {
    const hid_t f = H5Fopen(missing.c_str(), H5F_ACC_RDWR, H5P_DEFAULT);
    H5Ldelete(f, "/optimizer/adam_m/wpe", H5P_DEFAULT);
    H5Fclose(f);
  }
  // The same name with a shape that does not fit the model the file describes.
  const std::string reshaped = copy("reshaped.h5");
  {
    const hid_t f = H5Fopen(reshaped.c_str(), H5F_ACC_RDWR, H5P_DEFAULT);
    H5Ldelete(f, "/model/wte", H5P_DEFAULT);
    const hsize_t dims[2] = {8, 37};
    const hid_t sp = H5Screate_simple(2, dims, nullptr);
    const hid_t d = H5Dcreate2(f, "/model/wte", H5T_IEEE_F32LE, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    H5Dclose(d);
    H5Sclose(sp);
    H5Fclose(f);
  }
}
}  // namespace

// MICS_CKPT_TEST_PAUSE_AFTER_WRITE=S: pause S seconds between a save's data and its
// rename (kill_during_save.sh kills the job there), through the library's test seam.
void install_pause_hook() {
  const char* s = std::getenv("MICS_CKPT_TEST_PAUSE_AFTER_WRITE");
  const double seconds = s ? std::atof(s) : 0.0;
  if (seconds <= 0) return;
  ck::set_save_hook_for_tests([seconds](const std::string& point, const std::string&) {
    if (point != "data-written") return;
    std::fprintf(stderr, "checkpoint_tool: data written, pausing %.1f s before rename\n", seconds);
    std::fflush(stderr);
    std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
  });
}

int main(int argc, char** argv) {
  install_pause_hook();
  return mics::run_mpi_program("checkpoint_tool", argc, argv, [](int ac, char** av) {
    int rank = 0, size = 1;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    if (ac < 3) throw mics::UsageError("usage: checkpoint_tool write|read|verify PATH ...");
    const std::string cmd = av[1], path = av[2];
    const auto layout = mics::test::synthetic_layout();
    if (cmd == "write" || cmd == "fresh-write") {
      if (ac < 5) throw mics::UsageError("usage: checkpoint_tool write DIR FIRST_STEP COUNT [KEEP_LAST] [P]");
      const long first = std::atol(av[3]), count = std::atol(av[4]);
      const int keep = ac > 5 ? std::atoi(av[5]) : 0;
      const int p = ac > 6 ? std::atoi(av[6]) : size;
      if (cmd == "fresh-write" && rank == 0) std::filesystem::remove_all(path);
      MPI_Barrier(MPI_COMM_WORLD);
      const std::string pids = path + ".pids";
      std::filesystem::create_directories(pids);
      std::ofstream(pids + "/rank" + std::to_string(rank)) << getpid() << "\n";
      auto s = mics::test::make_state(layout, p, rank % p, rank < p, 16, true);
      for (long step = first; step < first + count; ++step) {
        const std::string file = ck::save(path, s->st, mics::test::synthetic_meta(step), keep);
        if (rank == 0) std::printf("saved %s\n", file.c_str());
      }
      return 0;
    }
    if (cmd == "read") {
      unsigned long long wrong = 0;
      long long step = -1;
      for (int p = 1; p <= size; ++p) {
        auto s = mics::test::make_state(layout, p, rank % p, rank < p, p % 2 ? 16 : 1, false);
        step = ck::load(path, s->st).step;
        wrong += mics::test::count_wrong(layout, *s);
      }
      MPI_Allreduce(MPI_IN_PLACE, &wrong, 1, MPI_UNSIGNED_LONG_LONG, MPI_SUM, MPI_COMM_WORLD);
      if (rank == 0) std::printf("read step %lld at p = 1..%d on %d ranks: %llu wrong\n", step, size, size, wrong);
      return wrong == 0 ? 0 : 1;
    }
    if (cmd == "verify") {
      const auto rep = ck::verify(MPI_COMM_WORLD, path, &layout);
      if (rank == 0) {
        for (const auto& f : rep.faults) std::printf("fault: %s\n", f.c_str());
        std::printf("verified %s: %zu datasets, %zu faults\n", rep.info.path.c_str(), rep.datasets_checked,
                    rep.faults.size());
      }
      return rep.faults.empty() ? 0 : 1;
    }
    if (cmd == "write-model") {
      if (ac < 4) throw mics::UsageError("usage: checkpoint_tool write-model DIR PRESET [wrong-config]");
      const auto model_layout = mics::model::make_layout(mics::model::load_model_config(av[3]));
      std::ifstream in(av[3]);
      std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
      if (ac > 4)  // a wider model than the tensors were made for
        text = std::regex_replace(text, std::regex("hidden *= *[0-9]+"), "hidden = 64");
      if (rank == 0) std::filesystem::remove_all(path);
      MPI_Barrier(MPI_COMM_WORLD);
      auto s = mics::test::make_state(model_layout, size, rank, true, 16, true);
      auto meta = mics::test::synthetic_meta(1);
      meta.model_config = text;
      const std::string file = ck::save(path, s->st, meta, 0);
      if (rank == 0) std::printf("saved %s\n", file.c_str());
      return 0;
    }
    if (cmd == "corrupt") {
      if (ac < 4) throw mics::UsageError("usage: checkpoint_tool corrupt PATH OUTDIR");
      if (rank == 0) make_corrupt_copies(ck::resolve(MPI_COMM_SELF, path), av[3]);
      MPI_Barrier(MPI_COMM_WORLD);
      return 0;
    }
    throw mics::UsageError("unknown command '" + cmd + "'");
  });
}
