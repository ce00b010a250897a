#pragma once
// Token shard files in llm.c's format, so shards made by either project are read by the
// other: a header of 256 little-endian int32 (magic 20240520, version 1, token count,
// the rest zero), then `token count` uint16 tokens. The count is an int32, so one shard
// holds at most 2^31-1 tokens; bigger corpora are several shards.
//
// Every fault is a mics::UsageError of one line that names the file and the fault.
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>

namespace mics::data {

inline constexpr std::int32_t kShardMagic = 20240520;
inline constexpr std::int32_t kShardVersion = 1;
inline constexpr int kShardHeaderInts = 256;
inline constexpr std::size_t kShardHeaderBytes = kShardHeaderInts * sizeof(std::int32_t);

struct ShardHeader {
  std::int32_t magic = 0;
  std::int32_t version = 0;
  std::int64_t token_count = 0;  // as stored (header[2])
  std::int64_t file_bytes = 0;   // size of the file on disk
};

// Reads and checks only the header: magic, version, and that the file size is exactly
// header + 2 * token_count bytes.
ShardHeader read_shard_header(const std::string& path);

// A whole shard, memory-mapped read-only (the OS pages it in on demand, so a shard larger
// than RAM still works). Construction validates the header and size; when `vocab` > 0 it
// also scans every token and rejects one >= vocab (naming its position).
class TokenFile {
public:
  explicit TokenFile(const std::string& path, int vocab = 0);
  ~TokenFile();
  TokenFile(TokenFile&& other) noexcept;
  TokenFile& operator=(TokenFile&& other) noexcept;
  TokenFile(const TokenFile&) = delete;
  TokenFile& operator=(const TokenFile&) = delete;

  const std::string& path() const noexcept { return path_; }
  std::span<const std::uint16_t> tokens() const noexcept { return {tokens_, count_}; }
  std::size_t size() const noexcept { return count_; }

private:
  void release() noexcept;
  std::string path_;
  void* map_ = nullptr;
  std::size_t map_bytes_ = 0;
  const std::uint16_t* tokens_ = nullptr;
  std::size_t count_ = 0;
};

// Writes a shard. The data go to "<path>.tmp" first and are renamed into place, so a
// reader never sees a half-written shard. Throws UsageError when the file cannot be
// written or the tokens do not fit one shard.
void write_token_file(const std::string& path, std::span<const std::uint16_t> tokens);

}  // namespace mics::data
