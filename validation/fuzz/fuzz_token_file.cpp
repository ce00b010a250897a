// libFuzzer target: the token-file (shard) header reader and the shard loader. The
// input becomes a file; reading it must either succeed or throw mics::Error. Anything
// else (a crash, a sanitizer report, another exception) is a finding.
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <string>

#include "mics/core/error.hpp"
#include "mics/data/dataset.hpp"
#include "mics/data/token_file.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static const std::string path = "/dev/shm/mics-fuzz-token-" + std::to_string(::getpid()) + ".bin";
  std::FILE* f = std::fopen(path.c_str(), "wb");
  if (!f) return 0;
  std::fwrite(data, 1, size, f);
  std::fclose(f);
  try {
    mics::data::read_shard_header(path);
    const mics::data::TokenFileDataset ds(path, size > 0 ? 1 + data[0] * 256 : 256);
    std::int32_t tokens[8], targets[8];
    if (ds.eval_sequences(8) > 0) ds.eval_sequence(0, 8, tokens, targets);
    ds.sequence(1, 0, 0, 8, tokens, targets);
  } catch (const mics::Error&) {
  }
  return 0;
}
