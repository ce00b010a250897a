#include <boost/test/unit_test.hpp>

#include <array>
#include <cstdint>
#include <fstream>
#include <string>
#include <vector>

#include "data_test_util.hpp"
#include "mics/core/error.hpp"
#include "mics/data/token_file.hpp"

using namespace mics::data;
using mics::test::TempDir;

namespace {

// Writes a shard by hand, so the reader is tested against the format, not the writer.
void write_raw(const std::string& path, std::int32_t magic, std::int32_t version,
               std::int32_t count, const std::vector<std::uint16_t>& tokens,
               std::size_t header_ints = kShardHeaderInts, std::size_t extra_bytes = 0) {
  std::vector<std::int32_t> header(header_ints, 0);
  if (header_ints > 0) header[0] = magic;
  if (header_ints > 1) header[1] = version;
  if (header_ints > 2) header[2] = count;
  std::ofstream f(path, std::ios::binary);
  f.write(reinterpret_cast<const char*>(header.data()),
          static_cast<std::streamsize>(header.size() * sizeof(std::int32_t)));
  f.write(reinterpret_cast<const char*>(tokens.data()),
          static_cast<std::streamsize>(tokens.size() * sizeof(std::uint16_t)));
  for (std::size_t i = 0; i < extra_bytes; ++i) f.put('x');
}

// The error must be one line that names the file and contains `fault`.
void expect_fault(const std::string& path, const std::string& fault, int vocab = 0) {
  try {
    TokenFile tf(path, vocab);
    BOOST_FAIL("no error for " + fault);
  } catch (const mics::UsageError& e) {
    const std::string what = e.what();
    BOOST_TEST_INFO(what);
    BOOST_CHECK(what.find(path) != std::string::npos);
    BOOST_CHECK(what.find(fault) != std::string::npos);
    BOOST_CHECK(what.find('\n') == std::string::npos);
  }
}

}  // namespace

BOOST_AUTO_TEST_CASE(round_trip_through_writer_and_reader) {
  TempDir dir;
  std::vector<std::uint16_t> tokens;
  for (int i = 0; i < 5000; ++i) tokens.push_back(static_cast<std::uint16_t>((i * 7919) % 65536));
  const auto path = dir.file("a.bin");
  write_token_file(path, tokens);
  const auto h = read_shard_header(path);
  BOOST_CHECK_EQUAL(h.magic, 20240520);
  BOOST_CHECK_EQUAL(h.version, 1);
  BOOST_CHECK_EQUAL(h.token_count, 5000);
  BOOST_CHECK_EQUAL(h.file_bytes, 1024 + 2 * 5000);
  TokenFile tf(path);
  BOOST_CHECK_EQUAL_COLLECTIONS(tf.tokens().begin(), tf.tokens().end(), tokens.begin(), tokens.end());
  // Moving keeps the mapping valid.
  TokenFile moved(std::move(tf));
  BOOST_CHECK_EQUAL(moved.size(), 5000u);
  BOOST_CHECK_EQUAL(moved.tokens()[4999], tokens[4999]);
}

BOOST_AUTO_TEST_CASE(reader_accepts_hand_written_llmc_shard_and_empty_shard) {
  TempDir dir;
  write_raw(dir.file("h.bin"), 20240520, 1, 3, {1, 2, 50256});
  TokenFile tf(dir.file("h.bin"), 50257);
  BOOST_CHECK_EQUAL(tf.tokens()[2], 50256);
  write_token_file(dir.file("e.bin"), {});
  BOOST_CHECK_EQUAL(TokenFile(dir.file("e.bin")).size(), 0u);
}

BOOST_AUTO_TEST_CASE(bad_magic) {
  TempDir dir;
  write_raw(dir.file("m.bin"), 20240521, 1, 2, {1, 2});
  expect_fault(dir.file("m.bin"), "bad magic 20240521");
}

BOOST_AUTO_TEST_CASE(wrong_version) {
  TempDir dir;
  write_raw(dir.file("v.bin"), 20240520, 2, 2, {1, 2});
  expect_fault(dir.file("v.bin"), "unsupported version 2");
}

BOOST_AUTO_TEST_CASE(truncated_header) {
  TempDir dir;
  write_raw(dir.file("t.bin"), 20240520, 1, 0, {}, 100);
  expect_fault(dir.file("t.bin"), "truncated: 400 bytes");
  write_raw(dir.file("z.bin"), 0, 0, 0, {}, 0);
  expect_fault(dir.file("z.bin"), "truncated: 0 bytes");
}

BOOST_AUTO_TEST_CASE(truncated_tokens) {
  TempDir dir;
  write_raw(dir.file("t.bin"), 20240520, 1, 10, {1, 2, 3});
  expect_fault(dir.file("t.bin"), "truncated: header says 10 tokens");
}

BOOST_AUTO_TEST_CASE(token_count_mismatch) {
  TempDir dir;
  write_raw(dir.file("c.bin"), 20240520, 1, 2, {1, 2, 3, 4});
  expect_fault(dir.file("c.bin"), "token count mismatch: header says 2 tokens but the file holds 4");
  write_raw(dir.file("odd.bin"), 20240520, 1, 2, {1, 2}, kShardHeaderInts, 1);
  expect_fault(dir.file("odd.bin"), "holds 2 and a half");
  write_raw(dir.file("neg.bin"), 20240520, 1, -5, {});
  expect_fault(dir.file("neg.bin"), "negative token count -5");
}

BOOST_AUTO_TEST_CASE(token_outside_vocabulary) {
  TempDir dir;
  write_raw(dir.file("o.bin"), 20240520, 1, 4, {0, 255, 256, 3});
  expect_fault(dir.file("o.bin"), "token 256 at position 2 is outside the vocabulary of 256", 256);
  BOOST_CHECK_NO_THROW(TokenFile(dir.file("o.bin"), 257));
  BOOST_CHECK_NO_THROW(TokenFile(dir.file("o.bin")));
}

BOOST_AUTO_TEST_CASE(missing_file_and_folder) {
  TempDir dir;
  expect_fault(dir.file("nope.bin"), "cannot open");
  expect_fault(dir.path.string(), "not a regular file");
  // The header reader reports the same faults.
  BOOST_CHECK_THROW(read_shard_header(dir.file("nope.bin")), mics::UsageError);
}

BOOST_AUTO_TEST_CASE(writer_reports_unwritable_path) {
  TempDir dir;
  try {
    write_token_file(dir.file("no/such/folder/x.bin"), std::vector<std::uint16_t>{1});
    BOOST_FAIL("no error");
  } catch (const mics::UsageError& e) {
    BOOST_CHECK(std::string(e.what()).find("cannot write") != std::string::npos);
  }
}
