#pragma once
// The byte-level tokenizer and the text-to-shard converter.
//
// Token = byte value, so the vocabulary is exactly 256 and every text round-trips.
// Token 0 (the NUL byte, which text never contains) is the one special token: the
// end-of-text marker the converter puts *before* each document, as GPT-2's <|endoftext|>
// is used in llm.c's shards. Inputs containing a NUL byte are refused.
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace mics::data {

inline constexpr int kByteVocab = 256;
inline constexpr std::uint16_t kEndOfText = 0;

std::vector<std::uint16_t> encode_bytes(std::string_view text);
// Inverse of encode_bytes; end-of-text tokens become "\n<|endoftext|>\n" so that a decoded
// sample shows document boundaries. Tokens >= 256 are a logic error (std::out_of_range).
std::string decode_bytes(const std::vector<std::uint16_t>& tokens);

struct ConvertResult {
  std::string train_path;        // "<prefix>_train.bin"
  std::string val_path;          // "<prefix>_val.bin", empty when val_fraction == 0
  std::int64_t train_tokens = 0;
  std::int64_t val_tokens = 0;
  int documents = 0;
};

// Encodes each input file as one document (end-of-text, then its bytes), concatenates
// them in the order given, and splits the stream: the last ceil(val_fraction * N) tokens
// go to the validation shard, the rest to the training shard. Creates the parent folder
// of `output_prefix`. val_fraction must lie in [0, 0.5]; each non-empty split must hold at
// least 2 tokens (one input and one target). Faults: mics::UsageError naming the file.
ConvertResult convert_text_files(const std::vector<std::string>& inputs,
                                 const std::string& output_prefix, double val_fraction);

}  // namespace mics::data
