// save, load and resolve. Every rank takes part in every HDF5 call (collective MPI-IO);
// rank 0 alone touches the directory (names, rename, `latest`, keep-last), and every
// failure is agreed on so that all ranks leave together with the same message.
#include "mics/checkpoint/checkpoint.hpp"

#include <fcntl.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <regex>
#include <set>
#include <thread>

#include "detail.hpp"
#include "h5.hpp"
#include "mics/core/agree.hpp"
#include "mics/core/check.hpp"
#include "mics/core/error.hpp"
#include "mics/core/watchdog.hpp"

namespace fs = std::filesystem;

namespace mics::checkpoint {

namespace {
inline std::uint64_t fmix64(std::uint64_t k) {
  k ^= k >> 33;
  k *= 0xff51afd7ed558ccdull;
  k ^= k >> 33;
  k *= 0xc4ceb9fe1a85ec53ull;
  k ^= k >> 33;
  return k;
}
}  // namespace

std::uint64_t checksum_terms(const float* data, std::size_t n, std::uint64_t first) {
  std::uint64_t sum = 0;
  for (std::size_t i = 0; i < n; ++i) {
    std::uint32_t bits;
    std::memcpy(&bits, data + i, sizeof bits);
    sum += fmix64(fmix64(first + i) ^ bits);
  }
  return sum;
}

namespace {
using detail::kGroups;

SaveHook& save_hook() {
  static SaveHook hook;
  return hook;
}

void run_hook(const std::string& point, const std::string& path) {
  if (save_hook()) save_hook()(point, path);
}

std::string errno_text() { return std::strerror(errno); }

int comm_rank(MPI_Comm comm) {
  int r = 0;
  MICS_CHECK_MPI(MPI_Comm_rank(comm, &r));
  return r;
}

// The part of tensor t (flat, tensor-local [a, b)) that shard q of its bucket holds.
struct Slice {
  std::uint64_t a = 0, b = 0;       // tensor-local flat range
  std::size_t shard_offset = 0;     // where element a sits in the shard's span
};

Slice slice_of(const model::TensorSpec& t, const model::Sharding& s, int q) {
  const std::size_t lo = std::max(t.offset, s.begin(q));
  const std::size_t hi = std::min(t.offset + t.count, s.begin(q) + s.valid(q));
  if (lo >= hi) return {};
  return {lo - t.offset, hi - t.offset, lo - s.begin(q)};
}

// Checks the caller's state; "" when usable.
std::string check_state(const ShardState& st) {
  const std::string where = "checkpoint: shard state: ";
  if (!st.layout) return where + "no bucket layout given";
  if (st.partition_size < 1) return where + "partition size " + std::to_string(st.partition_size) + " must be >= 1";
  if (st.shard_index < 0 || st.shard_index >= st.partition_size)
    return where + "shard index " + std::to_string(st.shard_index) + " is outside [0, " +
           std::to_string(st.partition_size) + ")";
  if (st.align < 1) return where + "alignment must be >= 1";
  if (st.buckets.size() != st.layout->buckets.size())
    return where + std::to_string(st.buckets.size()) + " bucket shards given for a layout of " +
           std::to_string(st.layout->buckets.size()) + " buckets";
  std::set<std::string> names;
  for (std::size_t i = 0; i < st.buckets.size(); ++i) {
    const auto& b = st.layout->buckets[i];
    const auto s = model::shard_bucket(b.count, st.partition_size, st.align);
    const auto& sh = st.buckets[i];
    for (const auto* span : {&sh.master, &sh.adam_m, &sh.adam_v})
      if (span->size() != s.chunk)
        return where + "bucket '" + b.name + "' has a span of " + std::to_string(span->size()) +
               " floats; its shard (p=" + std::to_string(st.partition_size) + ") holds " +
               std::to_string(s.chunk);
    for (const auto& t : b.tensors) {
      std::size_t n = 1;
      for (auto d : t.shape) {
        if (d < 0) return where + "tensor '" + t.name + "' has a negative dimension";
        n *= static_cast<std::size_t>(d);
      }
      if (n != t.count)
        return where + "tensor '" + t.name + "' has count " + std::to_string(t.count) +
               " but shape " + detail::shape_text(t.shape);
      if (t.offset + t.count > b.count)
        return where + "tensor '" + t.name + "' ends beyond its bucket '" + b.name + "'";
      if (t.name.empty() || t.name.find_first_of("/ \t\n") != std::string::npos || t.name == "." ||
          t.name == "..")
        return where + "tensor name '" + t.name + "' must be non-empty without '/' or spaces";
      if (!names.insert(t.name).second) return where + "tensor name '" + t.name + "' appears twice";
    }
    if (b.name.empty() || b.name.find_first_of(" \t\n") != std::string::npos)
      return where + "bucket name '" + b.name + "' must be non-empty without spaces";
  }
  return "";
}

struct TensorRef {
  std::size_t bucket, tensor;
};

std::vector<TensorRef> tensors_of(const model::BucketLayout& l) {
  std::vector<TensorRef> out;
  for (std::size_t b = 0; b < l.buckets.size(); ++b)
    for (std::size_t t = 0; t < l.buckets[b].tensors.size(); ++t) out.push_back({b, t});
  return out;
}

std::span<float> group_span(const BucketShard& s, int g) {
  return g == 0 ? s.master : g == 1 ? s.adam_m : s.adam_v;
}

// Per tensor: checksums of the slices this rank is responsible for (writers only) and
// the number of elements covered, summed over all ranks. Every element must be covered
// exactly once, or the writer flags do not describe one replica per shard.
struct Sums {
  std::vector<std::uint64_t> sum;    // 3 per tensor
  std::vector<std::uint64_t> covered;
};

Sums shard_sums(const ShardState& st, const std::vector<TensorRef>& refs) {
  Sums s{std::vector<std::uint64_t>(3 * refs.size(), 0), std::vector<std::uint64_t>(refs.size(), 0)};
  if (st.writer)
    for (std::size_t i = 0; i < refs.size(); ++i) {
      const auto& b = st.layout->buckets[refs[i].bucket];
      const auto& t = b.tensors[refs[i].tensor];
      const auto sh = model::shard_bucket(b.count, st.partition_size, st.align);
      const Slice sl = slice_of(t, sh, st.shard_index);
      s.covered[i] = sl.b - sl.a;
      for (int g = 0; g < 3; ++g) {
        const auto span = group_span(st.buckets[refs[i].bucket], g);
        s.sum[3 * i + static_cast<std::size_t>(g)] = checksum_terms(span.data() + sl.shard_offset, sl.b - sl.a, sl.a);
      }
    }
  MICS_CHECK_MPI(MPI_Allreduce(MPI_IN_PLACE, s.sum.data(), static_cast<int>(s.sum.size()),
                               MPI_UINT64_T, MPI_SUM, st.comm));
  MICS_CHECK_MPI(MPI_Allreduce(MPI_IN_PLACE, s.covered.data(), static_cast<int>(s.covered.size()),
                               MPI_UINT64_T, MPI_SUM, st.comm));
  return s;
}

std::string coverage_error(const ShardState& st, const std::vector<TensorRef>& refs, const Sums& s) {
  for (std::size_t i = 0; i < refs.size(); ++i) {
    const auto& t = st.layout->buckets[refs[i].bucket].tensors[refs[i].tensor];
    if (s.covered[i] != t.count)
      return "checkpoint: shard state: the ranks marked writer cover " + std::to_string(s.covered[i]) +
             " of the " + std::to_string(t.count) + " elements of tensor '" + t.name +
             "'; exactly one replica of each shard must be the writer";
  }
  return "";
}

// A checkpoint must never hold NaN or Inf: the run it would resume is already lost.
// Checked on the writers' slices, then agreed.
std::string non_finite_error(const ShardState& st, const std::vector<TensorRef>& refs, std::int64_t step) {
  std::string local;
  if (st.writer)
    for (std::size_t i = 0; i < refs.size() && local.empty(); ++i) {
      const auto& b = st.layout->buckets[refs[i].bucket];
      const auto& t = b.tensors[refs[i].tensor];
      const Slice sl = slice_of(t, model::shard_bucket(b.count, st.partition_size, st.align), st.shard_index);
      for (int g = 0; g < 3 && local.empty(); ++g) {
        const float* x = group_span(st.buckets[refs[i].bucket], g).data() + sl.shard_offset;
        for (std::uint64_t k = 0; k < sl.b - sl.a; ++k)
          if (!std::isfinite(x[k])) {
            local = "checkpoint: refusing to save step " + std::to_string(step) + ": " +
                    detail::dataset_path(g, t.name) + " holds a non-finite value (NaN or Inf); the "
                    "earlier checkpoints are kept";
            break;
          }
      }
    }
  return local;
}

h5::Id mpio_fapl(MPI_Comm comm) {
  h5::Id fapl = h5::checked(H5Pcreate(H5P_FILE_ACCESS), H5Pclose, "creating a property list");
  h5::check(H5Pset_fapl_mpio(fapl, comm, MPI_INFO_NULL), "selecting MPI-IO");
  // Object headers with checksums (format >= 1.8), readable by any HDF5 >= 1.10.
  h5::check(H5Pset_libver_bounds(fapl, H5F_LIBVER_V18, H5F_LIBVER_V110), "setting format bounds");
  return fapl;
}

h5::Id collective_dxpl(bool two_phase) {
  h5::Id dxpl = h5::checked(H5Pcreate(H5P_DATASET_XFER), H5Pclose, "creating a property list");
  h5::check(H5Pset_dxpl_mpio(dxpl, H5FD_MPIO_COLLECTIVE), "selecting collective transfer");
  // Still one collective call per dataset; underneath, each rank moves its own runs.
  if (!two_phase)
    h5::check(H5Pset_dxpl_mpio_collective_opt(dxpl, H5FD_MPIO_INDIVIDUAL_IO), "selecting per-rank I/O");
  return dxpl;
}

// One collective transfer of this rank's slice (possibly empty) of one dataset.
void transfer(hid_t ds, const model::TensorSpec& t, const Slice& sl, float* shard, hid_t dxpl,
              bool write, const std::string& path) {
  h5::Id fspace = h5::checked(H5Dget_space(ds), H5Sclose, "reading the space of " + path);
  h5::select_flat_range(fspace, t.shape, sl.a, sl.b);
  const hsize_t n = std::max<hsize_t>(sl.b - sl.a, 1);
  h5::Id mspace = h5::checked(H5Screate_simple(1, &n, nullptr), H5Sclose, "creating a dataspace");
  float dummy = 0;
  float* buf = &dummy;
  if (sl.b > sl.a) buf = shard + sl.shard_offset;
  else h5::check(H5Sselect_none(mspace), "selecting nothing");
  if (write) {
    h5::check(H5Dwrite(ds, H5T_NATIVE_FLOAT, mspace, fspace, dxpl, buf), "writing " + path);
    run_hook("dataset-written", path);
  } else {
    h5::check(H5Dread(ds, H5T_NATIVE_FLOAT, mspace, fspace, dxpl, buf), "reading " + path);
  }
}

// Runs one stage of work on an open file and agrees on its outcome before anything is
// closed: a rank that failed alone must not leave for a collective close (MPI_File_close)
// while the others are still transferring, so every rank leaves, or goes on, together.
void write_header(hid_t f, const ShardState& st, const Metadata& meta, h5::Id& dcpl, h5::Id& dxpl);

template <class F>
void stage(MPI_Comm comm, const std::string& file, F&& work) {
  std::string err;
  try {
    // HDF5's collective calls can leave one rank waiting for a peer that failed inside
    // the library (a flush on a disk that filled up): the watchdog ends such a wait.
    const watchdog::Scope guard([](const void* f) {
      return "collective HDF5 I/O on " + *static_cast<const std::string*>(f);
    }, &file);
    work();
  } catch (const h5::Fault& f) {
    err = file + ": " + f.what;
  } catch (const std::exception& e) {  // a test's hook, or an allocation
    err = file + ": " + e.what();
  }
  agree(comm, err);
}

// One agreed stage per dataset: create it, its attributes, the collective write.
void write_datasets(const std::string& temp, const ShardState& st, const std::vector<TensorRef>& refs,
                    const Sums& sums, hid_t f, hid_t dcpl, hid_t dxpl) {
  for (std::size_t i = 0; i < refs.size(); ++i) {
    const auto& b = st.layout->buckets[refs[i].bucket];
    const auto& t = b.tensors[refs[i].tensor];
    const auto sh = model::shard_bucket(b.count, st.partition_size, st.align);
    const Slice sl = st.writer ? slice_of(t, sh, st.shard_index) : Slice{};
    for (int g = 0; g < 3; ++g)
      stage(st.comm, temp, [&] {
        const std::string path = detail::dataset_path(g, t.name);
        h5::Id space = h5::make_space(t.shape);
        h5::Id ds = h5::checked(H5Dcreate2(f, path.c_str(), H5T_IEEE_F32LE, space, H5P_DEFAULT, dcpl,
                                           H5P_DEFAULT),
                                H5Dclose, "creating " + path);
        h5::write_u64_attr(ds, "checksum", sums.sum[3 * i + static_cast<std::size_t>(g)]);
        h5::write_string_attr(ds, "bucket", b.name);
        h5::write_i64_attr(ds, "offset_in_bucket", static_cast<std::int64_t>(t.offset));
        transfer(ds, t, sl, group_span(st.buckets[refs[i].bucket], g).data(), dxpl, true, path);
        ds.close("closing " + path);
      });
  }
}

void write_stages(const std::string& temp, const ShardState& st, const Metadata& meta,
                  const std::vector<TensorRef>& refs, const Sums& sums, h5::Id& fapl, h5::Id& f) {
  stage(st.comm, temp, [&] {
    fapl = mpio_fapl(st.comm);
    f = h5::checked(H5Fcreate(temp.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, fapl), H5Fclose, "creating the file");
  });
  h5::Id dcpl, dxpl;
  stage(st.comm, temp, [&] { write_header(f, st, meta, dcpl, dxpl); });
  write_datasets(temp, st, refs, sums, f, dcpl, dxpl);
  stage(st.comm, temp, [&] { h5::check(H5Fflush(f, H5F_SCOPE_GLOBAL), "flushing the file"); });
  stage(st.comm, temp, [&] { f.close("closing the file"); });
}

// After an agreed failure (every rank is here). On a full disk the file's close fails as
// well, and HDF5 keeps it open and crashes closing it again when MPI finalises (issue 11:
// rc 139). So room is made first, by emptying the temporary file, and then every file
// HDF5 still holds is closed (collectively: all ranks run this together).
void close_after_failure(MPI_Comm comm, const std::string& temp, h5::Id& f) {
  if (comm_rank(comm) == 0) (void)::truncate(temp.c_str(), 0);
  MPI_Barrier(comm);
  f.reset();
  const ssize_t open = H5Fget_obj_count(H5F_OBJ_ALL, H5F_OBJ_FILE);
  if (open > 0) {
    std::vector<hid_t> ids(static_cast<std::size_t>(open));
    const ssize_t n = H5Fget_obj_ids(H5F_OBJ_ALL, H5F_OBJ_FILE, ids.size(), ids.data());
    for (ssize_t i = 0; i < n; ++i) H5Fclose(ids[static_cast<std::size_t>(i)]);
  }
  h5::take_error();
}

void write_file(const std::string& temp, const ShardState& st, const Metadata& meta,
                const std::vector<TensorRef>& refs, const Sums& sums) {
  h5::Id fapl, f;
  try {
    write_stages(temp, st, meta, refs, sums, fapl, f);
  } catch (const Error&) {
    close_after_failure(st.comm, temp, f);
    throw;
  }
}

void write_header(hid_t f, const ShardState& st, const Metadata& meta, h5::Id& dcpl, h5::Id& dxpl) {
  const std::string record = detail::layout_record(*st.layout);
  h5::write_string_attr(f, "format", detail::kFormatName);
  h5::write_i64_attr(f, "format_version", meta.format_version);
  h5::write_i64_attr(f, "step", meta.step);
  h5::write_i64_attr(f, "tokens_seen", meta.tokens_seen);
  h5::write_u64_array_attr(f, "rng_state", meta.rng_state);
  h5::write_u64_array_attr(f, "data_position", meta.data_position);
  h5::write_string_attr(f, "model_config", meta.model_config);
  h5::write_string_attr(f, "training_config", meta.training_config);
  h5::write_i64_attr(f, "writer_world_size", meta.layout.world_size);
  h5::write_i64_attr(f, "writer_ranks_per_node", meta.layout.ranks_per_node);
  h5::write_i64_attr(f, "writer_partition_size", meta.layout.partition_size);
  h5::write_string_attr(f, "writer_strategy", meta.layout.strategy);
  h5::write_i64_attr(f, "writer_hierarchical", meta.layout.hierarchical ? 1 : 0);
  h5::write_string_attr(f, "bucket_layout", record);
  h5::write_string_attr(f, "checksum_algorithm", detail::kChecksumAlgorithm);
  h5::write_u64_attr(f, "metadata_checksum", detail::metadata_checksum(meta, record));

  auto make_group = [&](const char* path) {
    return h5::checked(H5Gcreate2(f, path, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT), H5Gclose,
                       std::string("creating group ") + path);
  };
  make_group("/metadata");
  {
    h5::Id g = make_group("/metadata/schedule");
    for (const auto& [k, v] : meta.schedule) h5::write_f64_attr(g, k, v);
  }
  {
    h5::Id g = make_group("/metadata/strings");
    for (const auto& [k, v] : meta.strings) h5::write_string_attr(g, k, v);
  }
  {
    h5::Id g = make_group("/metadata/ints");
    for (const auto& [k, v] : meta.ints) h5::write_i64_attr(g, k, v);
  }
  make_group("/model");
  make_group("/optimizer");
  make_group("/optimizer/adam_m");
  make_group("/optimizer/adam_v");

  dcpl = h5::checked(H5Pcreate(H5P_DATASET_CREATE), H5Pclose, "creating a property list");
  // Every element is written, so HDF5 need not pre-fill the space.
  h5::check(H5Pset_fill_time(dcpl, H5D_FILL_TIME_NEVER), "setting fill time");
  h5::check(H5Pset_alloc_time(dcpl, H5D_ALLOC_TIME_EARLY), "setting allocation time");
  dxpl = collective_dxpl(st.two_phase_io);
}

void fsync_path(const std::string& path, bool directory) {
  const int fd = ::open(path.c_str(), directory ? (O_RDONLY | O_DIRECTORY) : O_RDONLY);
  if (fd < 0) throw h5::Fault{"cannot open " + path + " to sync it: " + errno_text()};
  const int rc = ::fsync(fd);
  ::close(fd);
  if (rc != 0) throw h5::Fault{"fsync of " + path + " failed: " + errno_text()};
}

const std::regex& checkpoint_name() {
  static const std::regex re("^step_([0-9]+)\\.h5$");
  return re;
}

// Checkpoints in dir by step (only finished ones: temporaries end in .tmp).
std::map<long long, std::string> list_checkpoints(const std::string& dir) {
  std::map<long long, std::string> out;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    const std::string name = e.path().filename().string();
    std::smatch m;
    if (std::regex_match(name, m, checkpoint_name()) && e.is_regular_file())
      out[std::stoll(m[1].str())] = name;
  }
  return out;
}

std::string step_name(std::int64_t step) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "step_%08lld.h5", static_cast<long long>(step));
  return buf;
}

void write_text(const std::string& path, const std::string& text) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd < 0) throw h5::Fault{"cannot create " + path + ": " + errno_text()};
  const bool ok = ::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size()) && ::fsync(fd) == 0;
  const std::string why = errno_text();
  ::close(fd);
  if (!ok) {
    ::unlink(path.c_str());
    throw h5::Fault{"cannot write " + path + ": " + why};
  }
}

std::string run_id_of_meta(const Metadata& m) {
  const auto it = m.strings.find("run_id");
  return it == m.strings.end() ? std::string() : it->second;
}

// Deletes this run's checkpoints beyond the newest keep_last (never `keep`).
void prune(const std::string& dir, const std::string& keep, int keep_last, const std::string& run_id,
           std::vector<std::string>* removed) {
  std::vector<FolderEntry> mine;
  for (const auto& e : list_folder(dir).checkpoints)
    if (e.run_id == run_id && e.file != keep) mine.push_back(e);
  const std::size_t allowed = static_cast<std::size_t>(keep_last - 1);  // the new one counts
  for (std::size_t i = 0; i + allowed < mine.size(); ++i) {
    const std::string path = dir + "/" + mine[i].file;
    if (::unlink(path.c_str()) != 0)
      throw h5::Fault{"cannot delete old checkpoint " + path + ": " + errno_text()};
    if (removed) removed->push_back(path);
  }
  fsync_path(dir, true);
}

// Rank 0, after the collective write: make the file durable, give it its final name,
// point `latest` at it, then prune.
void commit(const std::string& dir, const std::string& temp, const std::string& final_path,
            int keep_last, const std::string& run_id, std::vector<std::string>* removed) {
  fsync_path(temp, false);
  if (::access(final_path.c_str(), F_OK) == 0)
    throw h5::Fault{"a checkpoint appeared under this name during the save; refusing to overwrite it"};
  // `latest` is written first under its own temporary name, so that a failure here (a
  // full disk) leaves both the old `latest` and the old checkpoints as they were.
  const std::string name = fs::path(final_path).filename().string();
  const std::string pointer = name + "\n" + (run_id.empty() ? "" : "run_id " + run_id + "\n");
  const std::string latest_temp = dir + "/latest.tmp";
  write_text(latest_temp, pointer);
  if (::rename(temp.c_str(), final_path.c_str()) != 0) {
    ::unlink(latest_temp.c_str());
    throw h5::Fault{"cannot rename " + temp + ": " + errno_text()};
  }
  if (::rename(latest_temp.c_str(), (dir + "/latest").c_str()) != 0)
    throw h5::Fault{"cannot rename " + latest_temp + ": " + errno_text()};
  fsync_path(dir, true);
  if (keep_last > 0) prune(dir, name, keep_last, run_id, removed);
}
}  // namespace

namespace {
// A disk that fills up inside HDF5's collective writes fails on some ranks only and can
// leave the others waiting in the library; so the room a checkpoint needs (its data, plus
// a margin for HDF5's metadata) is checked before the file is created.
std::string space_problem(const std::string& dir, const model::BucketLayout& layout) {
  struct statvfs v {};
  if (::statvfs(dir.c_str(), &v) != 0) return "";  // not knowable: let the writes tell
  const double need = 3.0 * 4.0 * static_cast<double>(layout.parameter_count()) * 1.1 + 256.0 * 1024;
  const double have = static_cast<double>(v.f_bavail) * static_cast<double>(v.f_frsize);
  if (have >= need) return "";
  char buf[256];
  std::snprintf(buf, sizeof buf, "%s: not enough free space for a checkpoint (%.0f bytes needed, %.0f free); "
                "free some space or choose another --checkpoint-dir", dir.c_str(), need, have);
  return buf;
}
}  // namespace

void set_save_hook_for_tests(SaveHook hook) { save_hook() = std::move(hook); }

std::string save(const std::string& dir, const ShardState& st, const Metadata& meta_in, int keep_last,
                 std::vector<std::string>* removed) {
  h5::quiet();
  const int rank = comm_rank(st.comm);
  std::string err = check_state(st);
  if (err.empty() && keep_last < 0) err = "checkpoint: keep-last " + std::to_string(keep_last) + " must be >= 0";
  if (err.empty() && dir.empty()) err = "checkpoint: the checkpoint directory is empty";
  agree_with_root(st.comm, err);

  // Rank 0's metadata is the one stored; every rank must pass identical attribute data
  // to HDF5.
  std::string blob;
  if (rank == 0) {
    Metadata m = meta_in;
    m.format_version = kFormatVersion;
    blob = detail::pack_meta(m);
  }
  detail::bcast_string(st.comm, blob);
  const Metadata meta = detail::unpack_meta(blob);

  const std::string final_path = dir + "/" + step_name(meta.step);
  const std::string temp = final_path + ".tmp";
  if (rank == 0) {
    std::error_code ec;
    fs::create_directories(dir, ec);
    if (ec || !fs::is_directory(dir)) err = dir + ": cannot create the checkpoint directory: " + ec.message();
    else if (fs::exists(final_path))
      err = final_path + ": a checkpoint for step " + std::to_string(meta.step) +
            " already exists; refusing to overwrite it";
    else
      fs::remove(temp, ec);  // left by a save that was killed
    if (err.empty()) err = space_problem(dir, *st.layout);
  }
  agree_with_root(st.comm, err);

  const auto refs = tensors_of(*st.layout);
  const Sums sums = shard_sums(st, refs);
  agree(st.comm, coverage_error(st, refs, sums));
  agree(st.comm, non_finite_error(st, refs, meta.step));

  try {
    write_file(temp, st, meta, refs, sums);
  } catch (const Error&) {
    // Agreed inside write_file, so every rank is here: the file is closed everywhere;
    // no rank returns before the temporary is gone.
    if (rank == 0) ::unlink(temp.c_str());
    MPI_Barrier(st.comm);
    throw;
  }

  if (rank == 0) {
    try {
      run_hook("data-written", temp);
      commit(dir, temp, final_path, keep_last, run_id_of_meta(meta), removed);
    } catch (const h5::Fault& f) {
      err = final_path + ": " + f.what;
    } catch (const std::exception& e) {
      err = final_path + ": " + e.what();
    }
    // Nothing half-done stays behind: the temporary file goes with a failed commit.
    if (!err.empty()) ::unlink(temp.c_str());
  }
  agree_with_root(st.comm, err);
  return final_path;
}

FolderContents list_folder(const std::string& dir) {
  h5::quiet();
  FolderContents out;
  for (const auto& [step, name] : list_checkpoints(dir)) {
    FolderEntry e;
    e.step = step;
    e.file = name;
    e.run_id = detail::read_run_id(dir + "/" + name);
    out.checkpoints.push_back(std::move(e));
  }
  return out;
}

std::string resolve(MPI_Comm comm, const std::string& path, const std::string& checkpoint_dir) {
  std::string out, err;
  if (comm_rank(comm) == 0) {
    std::string p = path;
    if (p == "latest") {
      if (checkpoint_dir.empty()) err = "resume from 'latest' needs a checkpoint directory";
      p = checkpoint_dir;
    }
    std::error_code ec;
    if (!err.empty()) {
    } else if (!fs::exists(p, ec)) {
      err = p + ": no such file or directory";
    } else if (fs::is_directory(p, ec) || fs::path(p).filename() == "latest") {
      const std::string dir = fs::is_directory(p, ec) ? p : fs::path(p).parent_path().string();
      const std::string pointer = (fs::path(dir) / "latest").string();
      if (fs::exists(pointer, ec)) {
        std::ifstream in(pointer);
        std::string name;
        std::getline(in, name);
        while (!name.empty() && (name.back() == '\r' || name.back() == ' ')) name.pop_back();
        if (name.empty() || name.find('/') != std::string::npos)
          err = pointer + ": malformed pointer (expected one checkpoint file name)";
        else if (!fs::is_regular_file(fs::path(dir) / name, ec))
          err = pointer + ": names " + name + ", which does not exist";
        else
          out = (fs::path(dir) / name).string();
      } else {
        const auto all = list_checkpoints(dir);
        if (all.empty()) err = dir + ": no checkpoints in this directory (no step_*.h5 and no 'latest')";
        else out = (fs::path(dir) / all.rbegin()->second).string();
      }
    } else {
      out = p;
    }
  }
  agree_with_root(comm, err);
  detail::bcast_string(comm, out);
  return out;
}

Metadata load(const std::string& path, const ShardState& st) {
  h5::quiet();
  agree(st.comm, check_state(st));
  const std::string file = resolve(st.comm, path);
  const detail::Manifest man = detail::read_manifest(st.comm, file);

  // The model this rank runs must match the file tensor for tensor.
  std::map<std::string, std::size_t> stored;  // name -> index in man.checksums
  {
    std::size_t i = 0;
    for (const auto& b : man.layout.buckets)
      for (const auto& t : b.tensors) stored[t.name] = i++;
  }
  std::vector<const model::TensorSpec*> stored_spec(stored.size());
  {
    std::size_t i = 0;
    for (const auto& b : man.layout.buckets)
      for (const auto& t : b.tensors) stored_spec[i++] = &t;
  }
  const auto refs = tensors_of(*st.layout);
  std::vector<std::size_t> index(refs.size());
  std::string err;
  for (std::size_t i = 0; i < refs.size() && err.empty(); ++i) {
    const auto& t = st.layout->buckets[refs[i].bucket].tensors[refs[i].tensor];
    const auto it = stored.find(t.name);
    if (it == stored.end()) err = file + ": the model's tensor '" + t.name + "' is missing from the checkpoint";
    else if (stored_spec[it->second]->shape != t.shape)
      err = file + ": tensor '" + t.name + "' has shape " + detail::shape_text(stored_spec[it->second]->shape) +
            " in the checkpoint but " + detail::shape_text(t.shape) + " in the model";
    else index[i] = it->second;
  }
  if (err.empty() && refs.size() != stored.size())
    err = file + ": the checkpoint holds " + std::to_string(stored.size()) + " tensors, the model " +
          std::to_string(refs.size()) + " (a different model?)";
  agree(st.comm, err);

  for (const auto& sh : st.buckets)
    for (int g = 0; g < 3; ++g) {
      auto s = group_span(sh, g);
      std::fill(s.begin(), s.end(), 0.0f);
    }
  {
    h5::Id fapl, f, dxpl;
    stage(st.comm, file, [&] {
      fapl = mpio_fapl(st.comm);
      f = h5::checked(H5Fopen(file.c_str(), H5F_ACC_RDONLY, fapl), H5Fclose, "opening the file");
      dxpl = collective_dxpl(st.two_phase_io);
    });
    for (std::size_t i = 0; i < refs.size(); ++i) {
      const auto& b = st.layout->buckets[refs[i].bucket];
      const auto& t = b.tensors[refs[i].tensor];
      const Slice sl = slice_of(t, model::shard_bucket(b.count, st.partition_size, st.align), st.shard_index);
      for (int g = 0; g < 3; ++g)
        stage(st.comm, file, [&] {
          const std::string p = detail::dataset_path(g, t.name);
          h5::Id ds = h5::checked(H5Dopen2(f, p.c_str(), H5P_DEFAULT), H5Dclose, "opening " + p);
          transfer(ds, t, sl, group_span(st.buckets[refs[i].bucket], g).data(), dxpl, false, p);
        });
    }
    stage(st.comm, file, [&] { f.close("closing the file"); });
  }

  // Every element was read by some writer rank; together their partial sums give each
  // tensor's checksum whatever the layout.
  const Sums sums = shard_sums(st, refs);
  agree(st.comm, coverage_error(st, refs, sums));
  for (std::size_t i = 0; i < refs.size() && err.empty(); ++i)
    for (int g = 0; g < 3 && err.empty(); ++g)
      if (sums.sum[3 * i + static_cast<std::size_t>(g)] != man.checksums[index[i]][static_cast<std::size_t>(g)]) {
        const auto& t = st.layout->buckets[refs[i].bucket].tensors[refs[i].tensor];
        char buf[96];
        std::snprintf(buf, sizeof buf, " (stored %016llx, read %016llx)",
                      static_cast<unsigned long long>(man.checksums[index[i]][static_cast<std::size_t>(g)]),
                      static_cast<unsigned long long>(sums.sum[3 * i + static_cast<std::size_t>(g)]));
        err = file + ": checksum mismatch in " + detail::dataset_path(g, t.name) + buf +
              ": the data is corrupt";
      }
  agree(st.comm, err);
  return man.meta;
}

}  // namespace mics::checkpoint
