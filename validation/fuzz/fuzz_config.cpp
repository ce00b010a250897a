// libFuzzer target: the config parsers. The input is used as a model preset file
// (model::load_model_config) and as an mics-train --config file (train::parse_options).
// Both must either succeed or throw mics::Error.
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <string>

#include "mics/core/error.hpp"
#include "mics/model/config.hpp"
#include "mics/train/options.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static const std::string path = "/dev/shm/mics-fuzz-config-" + std::to_string(::getpid()) + ".cfg";
  std::FILE* f = std::fopen(path.c_str(), "wb");
  if (!f) return 0;
  std::fwrite(data, 1, size, f);
  std::fclose(f);
  try {
    mics::model::load_model_config(path);
  } catch (const mics::Error&) {
  }
  try {
    std::string a0 = "mics-train", a1 = "--config", a2 = path;
    char* argv[] = {a0.data(), a1.data(), a2.data(), nullptr};
    mics::train::RunOptions o;
    std::string help;
    mics::train::parse_options(3, argv, o, help);
  } catch (const mics::Error&) {
  }
  return 0;
}
