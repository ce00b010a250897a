#include "mics/data/token_file.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <bit>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <limits>
#include <string>

#include "mics/core/error.hpp"

namespace mics::data {

// The format is little-endian on disk and read by mapping it straight into memory.
static_assert(std::endian::native == std::endian::little, "token shards assume a little-endian host");

namespace {

[[noreturn]] void fail(const std::string& path, const std::string& fault) {
  throw UsageError("token file " + path + ": " + fault);
}

// An fd closed on every path out of the function.
struct Fd {
  int fd = -1;
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
};

ShardHeader check_header(const std::string& path, int fd) {
  struct stat st {};
  if (::fstat(fd, &st) != 0) fail(path, std::strerror(errno));
  if (!S_ISREG(st.st_mode)) fail(path, "not a regular file");
  ShardHeader h;
  h.file_bytes = st.st_size;
  if (static_cast<std::size_t>(h.file_bytes) < kShardHeaderBytes)
    fail(path, "truncated: " + std::to_string(h.file_bytes) + " bytes, shorter than the " +
                   std::to_string(kShardHeaderBytes) + "-byte header");
  std::array<std::int32_t, kShardHeaderInts> header{};
  std::size_t got = 0;
  auto* dst = reinterpret_cast<char*>(header.data());
  while (got < kShardHeaderBytes) {
    const ssize_t n = ::pread(fd, dst + got, kShardHeaderBytes - got, static_cast<off_t>(got));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) fail(path, n < 0 ? std::strerror(errno) : "truncated header");
    got += static_cast<std::size_t>(n);
  }
  h.magic = header[0];
  h.version = header[1];
  h.token_count = header[2];
  if (h.magic != kShardMagic)
    fail(path, "bad magic " + std::to_string(h.magic) + ", expected " + std::to_string(kShardMagic) +
                   " (not an llm.c token shard)");
  if (h.version != kShardVersion)
    fail(path, "unsupported version " + std::to_string(h.version) + ", expected " +
                   std::to_string(kShardVersion) + " (uint16 tokens)");
  if (h.token_count < 0) fail(path, "negative token count " + std::to_string(h.token_count));
  const std::int64_t expected =
      static_cast<std::int64_t>(kShardHeaderBytes) + 2 * h.token_count;
  if (h.file_bytes < expected)
    fail(path, "truncated: header says " + std::to_string(h.token_count) + " tokens (" +
                   std::to_string(expected) + " bytes) but the file has " +
                   std::to_string(h.file_bytes) + " bytes");
  if (h.file_bytes > expected)
    fail(path, "token count mismatch: header says " + std::to_string(h.token_count) +
                   " tokens but the file holds " +
                   std::to_string((h.file_bytes - static_cast<std::int64_t>(kShardHeaderBytes)) / 2) +
                   (((h.file_bytes - static_cast<std::int64_t>(kShardHeaderBytes)) % 2) ? " and a half" : ""));
  return h;
}

int open_for_read(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail(path, std::string("cannot open: ") + std::strerror(errno));
  return fd;
}

}  // namespace

ShardHeader read_shard_header(const std::string& path) {
  Fd fd{open_for_read(path)};
  return check_header(path, fd.fd);
}

TokenFile::TokenFile(const std::string& path, int vocab) : path_(path) {
  Fd fd{open_for_read(path)};
  const ShardHeader h = check_header(path, fd.fd);
  count_ = static_cast<std::size_t>(h.token_count);
  map_bytes_ = static_cast<std::size_t>(h.file_bytes);
  void* p = ::mmap(nullptr, map_bytes_, PROT_READ, MAP_PRIVATE, fd.fd, 0);
  if (p == MAP_FAILED) fail(path, std::string("cannot map: ") + std::strerror(errno));
  map_ = p;
  // The header is 1024 bytes, so the tokens are 2-byte aligned inside a page-aligned map.
  tokens_ = reinterpret_cast<const std::uint16_t*>(static_cast<const char*>(p) + kShardHeaderBytes);
  if (vocab > 0) {
    for (std::size_t i = 0; i < count_; ++i) {
      if (tokens_[i] >= vocab) {
        const std::string msg = "token " + std::to_string(tokens_[i]) + " at position " +
                                std::to_string(i) + " is outside the vocabulary of " +
                                std::to_string(vocab);
        release();
        fail(path, msg);
      }
    }
  }
}

TokenFile::~TokenFile() { release(); }

void TokenFile::release() noexcept {
  if (map_ != nullptr) ::munmap(map_, map_bytes_);
  map_ = nullptr;
  map_bytes_ = 0;
  tokens_ = nullptr;
  count_ = 0;
}

TokenFile::TokenFile(TokenFile&& o) noexcept
    : path_(std::move(o.path_)), map_(o.map_), map_bytes_(o.map_bytes_), tokens_(o.tokens_),
      count_(o.count_) {
  o.map_ = nullptr;
  o.map_bytes_ = 0;
  o.tokens_ = nullptr;
  o.count_ = 0;
}

TokenFile& TokenFile::operator=(TokenFile&& o) noexcept {
  if (this != &o) {
    release();
    path_ = std::move(o.path_);
    map_ = o.map_;
    map_bytes_ = o.map_bytes_;
    tokens_ = o.tokens_;
    count_ = o.count_;
    o.map_ = nullptr;
    o.map_bytes_ = 0;
    o.tokens_ = nullptr;
    o.count_ = 0;
  }
  return *this;
}

void write_token_file(const std::string& path, std::span<const std::uint16_t> tokens) {
  if (tokens.size() > static_cast<std::size_t>(std::numeric_limits<std::int32_t>::max()))
    fail(path, std::to_string(tokens.size()) +
                   " tokens do not fit one shard (at most 2147483647); split the input");
  std::array<std::int32_t, kShardHeaderInts> header{};
  header[0] = kShardMagic;
  header[1] = kShardVersion;
  header[2] = static_cast<std::int32_t>(tokens.size());
  const std::string tmp = path + ".tmp";
  std::FILE* f = std::fopen(tmp.c_str(), "wb");
  if (f == nullptr) fail(path, std::string("cannot write: ") + std::strerror(errno));
  bool ok = std::fwrite(header.data(), sizeof(std::int32_t), header.size(), f) == header.size();
  ok = ok && std::fwrite(tokens.data(), sizeof(std::uint16_t), tokens.size(), f) == tokens.size();
  const int saved = errno;
  ok = (std::fclose(f) == 0) && ok;
  if (!ok) {
    std::remove(tmp.c_str());
    fail(path, std::string("write failed: ") + std::strerror(saved));
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    const int e = errno;
    std::remove(tmp.c_str());
    fail(path, std::string("cannot rename into place: ") + std::strerror(e));
  }
}

}  // namespace mics::data
