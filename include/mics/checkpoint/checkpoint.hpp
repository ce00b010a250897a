#pragma once
// Sharded checkpoints in one HDF5 file, written and read collectively with MPI-IO.
//
// A rank hands over its shard of every bucket (fp32 master, Adam m, Adam v) as
// described by model::BucketLayout and model::shard_bucket; the file holds every
// tensor with its true shape and no padding, so any HDF5 tool reads it by name and any
// other layout (world size, partition size, strategy) loads it by reading the slices
// it owns. The format is documented in README.md, "Checkpoint format".
//
// Every function here is collective over state.comm / comm: all ranks call it with the
// same arguments. Every failure (bad file, bad state, I/O error) is agreed on through
// mics::agree, so all ranks throw the same mics::Error naming the file and the fault.
#include <mpi.h>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <span>
#include <string>
#include <vector>

#include "mics/model/buckets.hpp"

namespace mics::checkpoint {

inline constexpr std::int64_t kFormatVersion = 1;

// The layout of the job that wrote a checkpoint (informational: loading works into any
// layout).
struct WriterLayout {
  int world_size = 1;
  int ranks_per_node = 1;
  int partition_size = 1;
  std::string strategy = "mics";   // ddp, zero2, zero3, mics
  bool hierarchical = false;
};

// Everything but the tensors. Must be identical on every rank at save (rank 0's copy is
// the one stored).
struct Metadata {
  std::int64_t format_version = kFormatVersion;  // set by save, checked by load
  std::int64_t step = 0;
  std::int64_t tokens_seen = 0;
  std::map<std::string, double> schedule;       // e.g. lr, warmup_steps, total_steps
  std::vector<std::uint64_t> rng_state;
  std::vector<std::uint64_t> data_position;
  std::string model_config;                     // full text, as the user gave it
  std::string training_config;
  WriterLayout layout;
  std::map<std::string, std::string> strings;   // anything else, free form
  std::map<std::string, std::int64_t> ints;
};

// One bucket's shard on this rank: each span holds `shard_bucket(count, p, align).chunk`
// floats, shard q of the padded bucket. Padding is never saved; load sets it to zero.
struct BucketShard {
  std::span<float> master;
  std::span<float> adam_m;
  std::span<float> adam_v;
};

// A rank's model states as the engine holds them. The spans point into the engine's
// own buffers: save reads them, load fills them.
struct ShardState {
  MPI_Comm comm = MPI_COMM_WORLD;             // every rank of the job
  const model::BucketLayout* layout = nullptr;
  int partition_size = 1;                      // p
  int shard_index = 0;                         // q, the same for every bucket
  bool writer = true;                          // replication rank 0: writes (and checks) shard q
  std::size_t align = 16;                      // as passed to model::shard_bucket
  std::vector<BucketShard> buckets;            // one per layout->buckets entry
  // Every dataset moves in one collective call either way. true: MPI-IO's two-phase
  // collective buffering (aggregators gather the pieces: pays off on parallel file
  // systems with many ranks); false: each rank reads/writes its own contiguous runs
  // (about 2x faster on one node's local disk, see validation/BENCHMARKS.md).
  bool two_phase_io = true;
};

// Writes DIR/step_<8 digits>.h5 for meta.step: under a temporary name first, then
// flush, fsync, rename, then DIR/latest (atomically; its first line names the file, a
// second line `run_id ID` names the run when meta.strings["run_id"] is set), then
// deletes all but the newest keep_last checkpoints OF THE SAME RUN ID (0 keeps all; the
// new one is never deleted; other runs' files are never touched), listing the deleted
// paths in *removed. DIR is created if missing. Refuses to overwrite an existing
// checkpoint and to write a state holding NaN or Inf. On any failure (full disk, read-only
// folder, a rank's I/O error) every rank throws the same error, the temporary file is
// gone and `latest` and earlier checkpoints are untouched. Returns the final path.
std::string save(const std::string& dir, const ShardState& state, const Metadata& meta,
                 int keep_last, std::vector<std::string>* removed = nullptr);

// What a checkpoint folder holds (read by one rank, no MPI): finished checkpoints by
// step, with the run id each file carries ("" for files written without one).
struct FolderEntry {
  std::int64_t step = 0;
  std::string file;    // "step_00000012.h5"
  std::string run_id;
};
struct FolderContents {
  std::vector<FolderEntry> checkpoints;  // ascending step
};
FolderContents list_folder(const std::string& dir);

// A seam for tests only (production code never sets it): called at named points of a
// save on the rank doing the work: "dataset-written" after each dataset's collective
// write (path = the dataset), "data-written" on rank 0 once all data is written and
// before the rename (path = the temporary file). A hook that throws fails that rank's
// stage the way an I/O error would.
using SaveHook = std::function<void(const std::string& point, const std::string& path)>;
void set_save_hook_for_tests(SaveHook hook);

// The checkpoint file that `path` names: a file as is; a directory by its `latest`
// pointer, or (without one) its highest step_*.h5; the word "latest" means the latest
// in checkpoint_dir. Errors when nothing loadable is found.
std::string resolve(MPI_Comm comm, const std::string& path, const std::string& checkpoint_dir = "");

// Fills state's shards (its own p, q: any layout) from the checkpoint at `path` (a file,
// or anything resolve accepts), checks every tensor's shape against state.layout and its
// checksum, and returns the metadata. On error the shards hold unspecified values.
Metadata load(const std::string& path, const ShardState& state);

struct TensorInfo {
  std::string name;                 // as in the model, e.g. "h0.attn.qkv.weight"
  std::string bucket;
  std::vector<std::int64_t> shape;
  std::uint64_t checksum[3] = {0, 0, 0};   // model, adam_m, adam_v as stored
};

struct Info {
  std::string path;
  std::uint64_t file_bytes = 0;
  Metadata meta;
  model::BucketLayout layout;       // the layout record stored in the file
  std::vector<TensorInfo> tensors;  // in layout order
};

// Reads the file's structure and metadata (no tensor data). Throws on a file that is not
// a well-formed checkpoint.
Info info(MPI_Comm comm, const std::string& path);

struct VerifyReport {
  Info info;
  std::size_t datasets_checked = 0;
  std::uint64_t bytes_checked = 0;
  std::vector<std::string> faults;  // one line each; empty when the file is sound
};

// Reads every tensor in full (spread over the ranks of comm) and checks its checksum,
// and every shape against the stored layout record and, when given, against `expected`
// (e.g. the layout built from the stored model config). Structural faults that stop the
// file from being read at all are thrown, like info; data faults are listed.
VerifyReport verify(MPI_Comm comm, const std::string& path,
                    const model::BucketLayout* expected = nullptr);

// Writes the fp32 weights (/model/*) to `output` in the safetensors format (8-byte
// little-endian header length, JSON header, raw little-endian data), after checking
// every checksum. Written by rank 0 under a temporary name and renamed; nothing is left
// behind on error. Refuses an existing output unless overwrite.
void export_safetensors(MPI_Comm comm, const std::string& path, const std::string& output,
                        bool overwrite = false);

// The fp32 weights (/model/*) of a checkpoint, each tensor's checksum checked, put back
// into the stored layout's buckets (unpadded: bucket b holds info.layout.buckets[b].count
// values). Every rank of comm reads the whole file (for single-process tools: sampling,
// export). A damaged file is agreed on and thrown as "<file>: <fault>".
struct Weights {
  Info info;
  std::vector<std::vector<float>> buckets;
};
Weights read_weights(MPI_Comm comm, const std::string& path);

// Writes a GPT model's weights as a Hugging Face GPT-2 folder: DIR/model.safetensors
// (GPT2LMHeadModel's tensor names, Conv1D weights transposed to [in, out]; README.md
// lists the mapping), DIR/config.json and DIR/README.md (the byte tokenizer). The model
// shape comes from the file's tensors; heads and the LayerNorm epsilon from `heads` and
// `ln_eps` (the stored model config). Rank 0 writes, each file under a temporary name
// and renamed. Refuses existing files in DIR unless overwrite. Returns the files written.
std::vector<std::string> export_hf_gpt2(MPI_Comm comm, const std::string& path, const std::string& dir,
                                        int heads, double ln_eps, bool overwrite = false);

// The per-tensor checksum: sum over elements i (flat row-major index) of
// fmix64(fmix64(i) ^ bits(x_i)) modulo 2^64, fmix64 being MurmurHash3's 64-bit
// finaliser. A sum of per-element terms does not depend on how the tensor is split
// among ranks, and since each term is a bijection of the element's bits, any change
// confined to one element always changes it. `first` is the flat index of data[0].
std::uint64_t checksum_terms(const float* data, std::size_t n, std::uint64_t first);

}  // namespace mics::checkpoint
