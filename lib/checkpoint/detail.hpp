#pragma once
// Internal pieces shared by save/load (checkpoint.cpp) and info/verify/export
// (inspect.cpp): the names in the file, the manifest rank 0 reads and broadcasts, and
// small MPI helpers.
#include <mpi.h>

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "mics/checkpoint/checkpoint.hpp"

namespace mics::checkpoint::detail {

// The three datasets of each tensor: group paths in the file, and short labels.
inline constexpr const char* kGroups[3] = {"/model", "/optimizer/adam_m", "/optimizer/adam_v"};
inline constexpr const char* kFormatName = "mics-checkpoint";
inline constexpr const char* kChecksumAlgorithm =
    "mics-sum64: sum over flat row-major index i of fmix64(fmix64(i) xor bits32(x_i)) mod 2^64";

std::string dataset_path(int group, const std::string& tensor);

// What rank 0 learns from a file without reading tensor data, broadcast to every rank.
struct Manifest {
  Metadata meta;
  model::BucketLayout layout;                          // the stored layout record
  std::vector<std::array<std::uint64_t, 3>> checksums; // per tensor, layout order
  std::uint64_t file_bytes = 0;
};

std::string pack(const Manifest& m);
Manifest unpack_manifest(const std::string& blob);
std::string pack_meta(const Metadata& m);
Metadata unpack_meta(const std::string& blob);

// Text form of a layout, stored as the root attribute "bucket_layout".
std::string layout_record(const model::BucketLayout& layout);
model::BucketLayout parse_layout_record(const std::string& text);  // throws h5::Fault

// Integrity of the attributes: FNV-1a 64 over pack_meta(meta) and the layout record.
std::uint64_t metadata_checksum(const Metadata& meta, const std::string& layout_text);

// Rank 0 reads the manifest of `file` with HDF5's serial driver and broadcasts it; any
// fault (missing file, not HDF5, truncated, missing dataset, bad shape) is agreed on
// and thrown on every rank as "<file>: <fault>".
Manifest read_manifest(MPI_Comm comm, const std::string& file);

// The run id a checkpoint file carries (/metadata/strings attribute run_id), "" when it
// has none or cannot be read. Serial HDF5, no MPI.
std::string read_run_id(const std::string& file);

// Root's string to every rank.
void bcast_string(MPI_Comm comm, std::string& s, int root = 0);

// A string as a JSON string's contents (quotes, backslashes, control characters escaped).
std::string json_escape(const std::string& s);

// "[2, 3]"
std::string shape_text(const std::vector<std::int64_t>& shape);

}  // namespace mics::checkpoint::detail
