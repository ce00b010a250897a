// mics-train with fault seams, for the reliability tests only (never installed): the
// same program as app/mics-train, after installing the faults that environment
// variables ask for. Production code has the seams (train::test_seams,
// checkpoint::set_save_hook_for_tests) but never sets them.
//   MICS_FAULT_MEMORY=R:BYTES          rank R reports BYTES of memory (--partition-size auto)
//   MICS_FAULT_PAUSE_AFTER_WRITE=S     rank 0 pauses S seconds between writing a checkpoint's
//                                      data and renaming it (prints "pausing")
//   MICS_FAULT_FAIL_WRITE_RANK=R       rank R's first dataset write of every save fails
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <stdexcept>
#include <string>
#include <thread>

#include "mics/checkpoint/checkpoint.hpp"
#include "mics/core/check.hpp"
#include "mics/train/setup.hpp"
#include "mics/train/training_run.hpp"

namespace {

void install_faults() {
  if (const char* m = std::getenv("MICS_FAULT_MEMORY")) {
    const std::string spec = m;
    const int rank = std::stoi(spec.substr(0, spec.find(':')));
    const std::size_t bytes = std::stoull(spec.substr(spec.find(':') + 1));
    mics::train::test_seams().memory = [rank, bytes](int r, std::size_t real) { return r == rank ? bytes : real; };
  }
  const char* pause = std::getenv("MICS_FAULT_PAUSE_AFTER_WRITE");
  const char* fail = std::getenv("MICS_FAULT_FAIL_WRITE_RANK");
  if (!pause && !fail) return;
  const double seconds = pause ? std::atof(pause) : 0.0;
  const int fail_rank = fail ? std::atoi(fail) : -1;
  mics::checkpoint::set_save_hook_for_tests([seconds, fail_rank](const std::string& point, const std::string& path) {
    if (point == "data-written" && seconds > 0) {
      std::fprintf(stderr, "fault seam: data written to %s, pausing %.1f s before the rename\n", path.c_str(), seconds);
      std::fflush(stderr);
      std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
    }
    if (point == "dataset-written" && mics::detail::world_rank_or_minus_one() == fail_rank)
      throw std::runtime_error("injected write failure in " + path);
  });
}

}  // namespace

int main(int argc, char** argv) {
  install_faults();
  return mics::train::train_main(argc, argv);
}
