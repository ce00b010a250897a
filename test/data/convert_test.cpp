#include <boost/test/unit_test.hpp>

#include <fstream>
#include <string>
#include <vector>

#include "data_test_util.hpp"
#include "mics/core/error.hpp"
#include "mics/data/token_file.hpp"
#include "mics/data/tokenizer.hpp"

using namespace mics::data;
using mics::test::TempDir;

namespace {
void write_text(const std::string& path, const std::string& text) {
  std::ofstream(path, std::ios::binary) << text;
}
std::vector<std::uint16_t> read_all(const std::string& path) {
  TokenFile tf(path, kByteVocab);
  return {tf.tokens().begin(), tf.tokens().end()};
}
}  // namespace

BOOST_AUTO_TEST_CASE(bytes_round_trip) {
  std::string all;
  for (int b = 1; b < 256; ++b) all.push_back(static_cast<char>(b));
  const auto t = encode_bytes(all);
  BOOST_REQUIRE_EQUAL(t.size(), 255u);
  BOOST_CHECK_EQUAL(t[0], 1);
  BOOST_CHECK_EQUAL(t[254], 255);
  BOOST_CHECK(decode_bytes(t) == all);
  BOOST_CHECK_EQUAL(decode_bytes({kEndOfText, 'h', 'i'}), "\n<|endoftext|>\nhi");
}

BOOST_AUTO_TEST_CASE(convert_splits_documents_into_train_and_val) {
  TempDir dir;
  write_text(dir.file("a.txt"), "Hello, world.\n");  // 14 bytes
  write_text(dir.file("b.txt"), "The second document, with \xc3\xa9 (UTF-8).\n");
  const auto r = convert_text_files({dir.file("a.txt"), dir.file("b.txt")},
                                    dir.file("out/sub/corpus"), 0.25);
  BOOST_CHECK_EQUAL(r.documents, 2);
  BOOST_CHECK_EQUAL(r.train_path, dir.file("out/sub/corpus") + "_train.bin");
  BOOST_CHECK_EQUAL(r.val_path, dir.file("out/sub/corpus") + "_val.bin");
  // The stream: EOT + a, EOT + b; the val split is the last ceil(0.25 N) tokens.
  std::vector<std::uint16_t> stream{kEndOfText};
  for (const auto t : encode_bytes("Hello, world.\n")) stream.push_back(t);
  stream.push_back(kEndOfText);
  for (const auto t : encode_bytes("The second document, with \xc3\xa9 (UTF-8).\n")) stream.push_back(t);
  const std::size_t n_val = (stream.size() + 3) / 4;
  BOOST_CHECK_EQUAL(r.val_tokens, static_cast<std::int64_t>(n_val));
  BOOST_CHECK_EQUAL(r.train_tokens + r.val_tokens, static_cast<std::int64_t>(stream.size()));
  auto train = read_all(r.train_path);
  const auto val = read_all(r.val_path);
  train.insert(train.end(), val.begin(), val.end());
  BOOST_CHECK(train == stream);
}

BOOST_AUTO_TEST_CASE(convert_without_val_split) {
  TempDir dir;
  write_text(dir.file("a.txt"), "abc");
  const auto r = convert_text_files({dir.file("a.txt")}, dir.file("x"), 0.0);
  BOOST_CHECK(r.val_path.empty());
  BOOST_CHECK_EQUAL(r.train_tokens, 4);
  BOOST_CHECK_EQUAL(read_all(r.train_path).size(), 4u);
}

BOOST_AUTO_TEST_CASE(convert_rejects_bad_input) {
  TempDir dir;
  write_text(dir.file("bin.dat"), std::string("ab\0cd", 5));
  write_text(dir.file("tiny.txt"), "a");
  write_text(dir.file("ok.txt"), "plenty of text here");
  auto message = [&](const std::vector<std::string>& in, double f) -> std::string {
    try {
      convert_text_files(in, dir.file("o"), f);
    } catch (const mics::UsageError& e) {
      return e.what();
    }
    return "";
  };
  BOOST_CHECK(message({dir.file("bin.dat")}, 0.1).find("NUL byte at offset 2") != std::string::npos);
  BOOST_CHECK(message({dir.file("missing.txt")}, 0.1).find("cannot open") != std::string::npos);
  BOOST_CHECK(message({dir.path.string()}, 0.1).find("is a folder") != std::string::npos);
  BOOST_CHECK(message({}, 0.1).find("at least one --input") != std::string::npos);
  BOOST_CHECK(message({dir.file("ok.txt")}, 0.6).find("--val-fraction 0.6 must lie in [0, 0.5]") != std::string::npos);
  BOOST_CHECK(message({dir.file("ok.txt")}, -0.1).find("--val-fraction") != std::string::npos);
  BOOST_CHECK(message({dir.file("tiny.txt")}, 0.5).find("too few") != std::string::npos);
}
