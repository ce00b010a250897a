#include "mics/data/tokenizer.hpp"

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <span>
#include <stdexcept>
#include <string>

#include "mics/core/error.hpp"
#include "mics/data/token_file.hpp"

namespace mics::data {

std::vector<std::uint16_t> encode_bytes(std::string_view text) {
  std::vector<std::uint16_t> out;
  out.reserve(text.size());
  for (const char c : text) out.push_back(static_cast<unsigned char>(c));
  return out;
}

std::string decode_bytes(const std::vector<std::uint16_t>& tokens) {
  std::string out;
  out.reserve(tokens.size());
  for (const std::uint16_t t : tokens) {
    if (t >= kByteVocab) throw std::out_of_range("token " + std::to_string(t) + " is not a byte");
    if (t == kEndOfText)
      out += "\n<|endoftext|>\n";
    else
      out.push_back(static_cast<char>(static_cast<unsigned char>(t)));
  }
  return out;
}

namespace {

std::string read_whole_file(const std::string& path) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec))
    throw UsageError("input " + path + ": is a folder, expected a text file");
  std::ifstream in(path, std::ios::binary);
  if (!in) throw UsageError("input " + path + ": cannot open: " + std::strerror(errno));
  in.seekg(0, std::ios::end);
  const std::streamoff size = in.tellg();
  in.seekg(0, std::ios::beg);
  if (size < 0) throw UsageError("input " + path + ": cannot determine its size");
  std::string text(static_cast<std::size_t>(size), '\0');
  in.read(text.data(), size);
  if (in.gcount() != size) throw UsageError("input " + path + ": read failed");
  return text;
}

}  // namespace

ConvertResult convert_text_files(const std::vector<std::string>& inputs,
                                 const std::string& output_prefix, double val_fraction) {
  if (inputs.empty()) throw UsageError("convert needs at least one --input text file");
  if (output_prefix.empty()) throw UsageError("--output-prefix must not be empty");
  if (!(val_fraction >= 0.0 && val_fraction <= 0.5)) {
    char buf[64];
    std::snprintf(buf, sizeof buf, "%g", val_fraction);
    throw UsageError(std::string("--val-fraction ") + buf + " must lie in [0, 0.5]");
  }

  std::vector<std::uint16_t> stream;
  for (const auto& path : inputs) {
    const std::string text = read_whole_file(path);
    const auto nul = text.find('\0');
    if (nul != std::string::npos)
      throw UsageError("input " + path + ": NUL byte at offset " + std::to_string(nul) +
                       "; the converter takes text (token 0 is reserved for end-of-text)");
    stream.push_back(kEndOfText);
    const auto tokens = encode_bytes(text);
    stream.insert(stream.end(), tokens.begin(), tokens.end());
  }

  const auto total = static_cast<std::int64_t>(stream.size());
  const auto n_val = static_cast<std::int64_t>(std::ceil(val_fraction * static_cast<double>(total)));
  const std::int64_t n_train = total - n_val;
  if (n_train < 2 || (val_fraction > 0.0 && n_val < 2))
    throw UsageError("inputs hold " + std::to_string(total) + " tokens, too few for a " +
                     "training split and a validation split of at least 2 tokens each");

  ConvertResult r;
  r.documents = static_cast<int>(inputs.size());
  r.train_path = output_prefix + "_train.bin";
  const auto parent = std::filesystem::path(output_prefix).parent_path();
  if (!parent.empty()) {
    std::error_code ec;
    std::filesystem::create_directories(parent, ec);
    if (ec) throw UsageError("output folder " + parent.string() + ": " + ec.message());
  }
  const std::span<const std::uint16_t> all(stream);
  write_token_file(r.train_path, all.first(static_cast<std::size_t>(n_train)));
  r.train_tokens = n_train;
  if (val_fraction > 0.0) {
    r.val_path = output_prefix + "_val.bin";
    write_token_file(r.val_path, all.subspan(static_cast<std::size_t>(n_train)));
    r.val_tokens = n_val;
  }
  return r;
}

}  // namespace mics::data
