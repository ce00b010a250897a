// The manifest: metadata, layout record and checksums, read by rank 0 with the serial
// driver so that a broken file is diagnosed in one place and the verdict broadcast,
// instead of every rank failing (or not) inside collective HDF5 calls.
#include <sys/stat.h>

#include <cstdio>
#include <cstring>
#include <set>
#include <sstream>

#include "detail.hpp"
#include "h5.hpp"
#include "mics/core/agree.hpp"
#include "mics/core/check.hpp"

namespace mics::checkpoint::detail {

std::string dataset_path(int group, const std::string& tensor) {
  return std::string(kGroups[group]) + "/" + tensor;
}

std::string shape_text(const std::vector<std::int64_t>& shape) {
  std::string s = "[";
  for (std::size_t i = 0; i < shape.size(); ++i) {
    if (i) s += ", ";
    s += std::to_string(shape[i]);
  }
  return s + "]";
}

void bcast_string(MPI_Comm comm, std::string& s, int root) {
  unsigned long long n = s.size();
  MICS_CHECK_MPI(MPI_Bcast(&n, 1, MPI_UNSIGNED_LONG_LONG, root, comm));
  s.resize(n);
  // Chunked so that a count never exceeds INT_MAX.
  for (unsigned long long off = 0; off < n; off += 1ull << 30) {
    const int len = static_cast<int>(std::min<unsigned long long>(n - off, 1ull << 30));
    MICS_CHECK_MPI(MPI_Bcast(s.data() + off, len, MPI_CHAR, root, comm));
  }
}

namespace {
// A plain length-prefixed byte stream, for broadcasting and for the metadata checksum.
struct Packer {
  std::string out;
  void u64(std::uint64_t v) { out.append(reinterpret_cast<const char*>(&v), sizeof v); }
  void i64(std::int64_t v) { u64(static_cast<std::uint64_t>(v)); }
  void f64(double v) {
    std::uint64_t b;
    std::memcpy(&b, &v, sizeof b);
    u64(b);
  }
  void str(const std::string& s) {
    u64(s.size());
    out += s;
  }
};

struct Unpacker {
  const std::string& in;
  std::size_t pos = 0;
  std::uint64_t u64() {
    MICS_ASSERT(pos + 8 <= in.size(), "manifest blob too short");
    std::uint64_t v;
    std::memcpy(&v, in.data() + pos, 8);
    pos += 8;
    return v;
  }
  std::int64_t i64() { return static_cast<std::int64_t>(u64()); }
  double f64() {
    const std::uint64_t b = u64();
    double v;
    std::memcpy(&v, &b, sizeof v);
    return v;
  }
  // A count of items of at least `bytes` each that must still fit in the blob (found by
  // fuzzing: a corrupt count made vector::resize throw std::length_error).
  std::size_t count(std::size_t bytes) {
    const std::uint64_t n = u64();
    MICS_ASSERT(n <= (in.size() - pos) / bytes, "manifest blob too short");
    return static_cast<std::size_t>(n);
  }
  std::string str() {
    const std::size_t n = u64();
    MICS_ASSERT(n <= in.size() - pos, "manifest blob too short");
    std::string s = in.substr(pos, n);
    pos += n;
    return s;
  }
};

void pack_meta_into(Packer& p, const Metadata& m) {
  p.i64(m.format_version);
  p.i64(m.step);
  p.i64(m.tokens_seen);
  p.u64(m.schedule.size());
  for (const auto& [k, v] : m.schedule) { p.str(k); p.f64(v); }
  p.u64(m.rng_state.size());
  for (auto v : m.rng_state) p.u64(v);
  p.u64(m.data_position.size());
  for (auto v : m.data_position) p.u64(v);
  p.str(m.model_config);
  p.str(m.training_config);
  p.i64(m.layout.world_size);
  p.i64(m.layout.ranks_per_node);
  p.i64(m.layout.partition_size);
  p.str(m.layout.strategy);
  p.i64(m.layout.hierarchical ? 1 : 0);
  p.u64(m.strings.size());
  for (const auto& [k, v] : m.strings) { p.str(k); p.str(v); }
  p.u64(m.ints.size());
  for (const auto& [k, v] : m.ints) { p.str(k); p.i64(v); }
}

Metadata unpack_meta_from(Unpacker& u) {
  Metadata m;
  m.format_version = u.i64();
  m.step = u.i64();
  m.tokens_seen = u.i64();
  for (auto n = u.u64(); n > 0; --n) {
    auto k = u.str();
    m.schedule[k] = u.f64();
  }
  m.rng_state.resize(u.count(8));
  for (auto& v : m.rng_state) v = u.u64();
  m.data_position.resize(u.count(8));
  for (auto& v : m.data_position) v = u.u64();
  m.model_config = u.str();
  m.training_config = u.str();
  m.layout.world_size = static_cast<int>(u.i64());
  m.layout.ranks_per_node = static_cast<int>(u.i64());
  m.layout.partition_size = static_cast<int>(u.i64());
  m.layout.strategy = u.str();
  m.layout.hierarchical = u.i64() != 0;
  for (auto n = u.u64(); n > 0; --n) {
    auto k = u.str();
    m.strings[k] = u.str();
  }
  for (auto n = u.u64(); n > 0; --n) {
    auto k = u.str();
    m.ints[k] = u.i64();
  }
  return m;
}
}  // namespace

std::string pack_meta(const Metadata& m) {
  Packer p;
  pack_meta_into(p, m);
  return p.out;
}

Metadata unpack_meta(const std::string& blob) {
  Unpacker u{blob};
  return unpack_meta_from(u);
}

std::string pack(const Manifest& m) {
  Packer p;
  pack_meta_into(p, m.meta);
  p.str(layout_record(m.layout));
  p.u64(m.checksums.size());
  for (const auto& c : m.checksums)
    for (auto v : c) p.u64(v);
  p.u64(m.file_bytes);
  return p.out;
}

Manifest unpack_manifest(const std::string& blob) {
  Unpacker u{blob};
  Manifest m;
  m.meta = unpack_meta_from(u);
  m.layout = parse_layout_record(u.str());
  m.checksums.resize(u.count(24));
  for (auto& c : m.checksums)
    for (auto& v : c) v = u.u64();
  m.file_bytes = u.u64();
  return m;
}

std::string layout_record(const model::BucketLayout& layout) {
  std::ostringstream os;
  for (const auto& b : layout.buckets) {
    os << "bucket " << b.name << ' ' << b.count << ' ' << b.tensors.size() << '\n';
    for (const auto& t : b.tensors) {
      os << "tensor " << t.name << ' ' << t.offset << ' ' << t.count << ' '
         << (t.weight_decay ? 1 : 0) << ' ' << t.shape.size();
      for (auto d : t.shape) os << ' ' << d;
      os << '\n';
    }
  }
  return os.str();
}

model::BucketLayout parse_layout_record(const std::string& text) {
  model::BucketLayout layout;
  std::istringstream is(text);
  std::string word;
  while (is >> word) {
    model::BucketSpec b;
    std::size_t n = 0;
    if (word != "bucket" || !(is >> b.name >> b.count >> n))
      throw h5::Fault{"malformed layout record (attribute 'bucket_layout')"};
    for (std::size_t i = 0; i < n; ++i) {
      model::TensorSpec t;
      int wd = 0;
      std::size_t rank = 0;
      if (!(is >> word) || word != "tensor" || !(is >> t.name >> t.offset >> t.count >> wd >> rank) ||
          rank > 32)
        throw h5::Fault{"malformed layout record (attribute 'bucket_layout')"};
      t.weight_decay = wd != 0;
      t.shape.resize(rank);
      for (auto& d : t.shape)
        if (!(is >> d)) throw h5::Fault{"malformed layout record (attribute 'bucket_layout')"};
      b.tensors.push_back(std::move(t));
    }
    layout.buckets.push_back(std::move(b));
  }
  return layout;
}

std::uint64_t metadata_checksum(const Metadata& meta, const std::string& layout_text) {
  const std::string bytes = pack_meta(meta) + layout_text;
  std::uint64_t h = 0xcbf29ce484222325ull;
  for (unsigned char c : bytes) {
    h ^= c;
    h *= 0x100000001b3ull;
  }
  return h;
}

namespace {
Metadata read_metadata(hid_t file) {
  Metadata m;
  m.format_version = h5::read_i64_attr(file, "format_version");
  m.step = h5::read_i64_attr(file, "step");
  m.tokens_seen = h5::read_i64_attr(file, "tokens_seen");
  m.rng_state = h5::read_u64_array_attr(file, "rng_state");
  m.data_position = h5::read_u64_array_attr(file, "data_position");
  m.model_config = h5::read_string_attr(file, "model_config");
  m.training_config = h5::read_string_attr(file, "training_config");
  m.layout.world_size = static_cast<int>(h5::read_i64_attr(file, "writer_world_size"));
  m.layout.ranks_per_node = static_cast<int>(h5::read_i64_attr(file, "writer_ranks_per_node"));
  m.layout.partition_size = static_cast<int>(h5::read_i64_attr(file, "writer_partition_size"));
  m.layout.strategy = h5::read_string_attr(file, "writer_strategy");
  m.layout.hierarchical = h5::read_i64_attr(file, "writer_hierarchical") != 0;
  auto group = [&](const char* path) {
    return h5::checked(H5Gopen2(file, path, H5P_DEFAULT), H5Gclose,
                       std::string("opening group ") + path);
  };
  {
    h5::Id g = group("/metadata/schedule");
    for (const auto& k : h5::attr_names(g)) m.schedule[k] = h5::read_f64_attr(g, k);
  }
  {
    h5::Id g = group("/metadata/strings");
    for (const auto& k : h5::attr_names(g)) m.strings[k] = h5::read_string_attr(g, k);
  }
  {
    h5::Id g = group("/metadata/ints");
    for (const auto& k : h5::attr_names(g)) m.ints[k] = h5::read_i64_attr(g, k);
  }
  return m;
}

Manifest read_manifest_serial(const std::string& file) {
  struct stat st {};
  if (::stat(file.c_str(), &st) != 0) throw h5::Fault{"no such file"};
  if (!S_ISREG(st.st_mode)) throw h5::Fault{"not a regular file"};
  const htri_t is_h5 = H5Fis_hdf5(file.c_str());
  h5::take_error();
  if (is_h5 <= 0) throw h5::Fault{"not an HDF5 file (no HDF5 signature)"};

  h5::Id fapl = h5::checked(H5Pcreate(H5P_FILE_ACCESS), H5Pclose, "creating a property list");
  const hid_t fid = H5Fopen(file.c_str(), H5F_ACC_RDONLY, fapl);
  if (fid < 0) {
    const std::string why = h5::take_error();
    unsigned long long eof = 0, base = 0, stored = 0;
    if (std::sscanf(why.c_str(), "truncated file: eof = %llu, sblock->base_addr = %llu, stored_eof = %llu", &eof,
                    &base, &stored) == 3)
      throw h5::Fault{"truncated file: " + std::to_string(eof) + " bytes on disk, " + std::to_string(stored) +
                      " expected"};
    throw h5::Fault{"cannot open as HDF5 (corrupt file): " + why};
  }
  h5::Id f(fid, H5Fclose);
  Manifest m;
  m.file_bytes = static_cast<std::uint64_t>(st.st_size);
  {
    const htri_t has = H5Aexists(f, "format");
    if (has <= 0) {
      h5::take_error();
      throw h5::Fault{"not a mics checkpoint (no 'format' attribute at the root)"};
    }
  }
  if (h5::read_string_attr(f, "format") != kFormatName)
    throw h5::Fault{"not a mics checkpoint (attribute 'format' is not '" + std::string(kFormatName) + "')"};
  m.meta = read_metadata(f);
  if (m.meta.format_version != kFormatVersion)
    throw h5::Fault{"format version " + std::to_string(m.meta.format_version) +
                    " is not supported (this mics reads version " + std::to_string(kFormatVersion) + ")"};
  const std::string record = h5::read_string_attr(f, "bucket_layout");
  m.layout = parse_layout_record(record);
  if (h5::read_u64_attr(f, "metadata_checksum") != metadata_checksum(m.meta, record))
    throw h5::Fault{"metadata checksum mismatch (the attributes were altered or corrupted)"};

  std::set<std::string> expected;
  for (const auto& b : m.layout.buckets)
    for (const auto& t : b.tensors) {
      std::array<std::uint64_t, 3> sums{};
      for (int g = 0; g < 3; ++g) {
        const std::string path = dataset_path(g, t.name);
        const htri_t exists = H5Lexists(f, kGroups[g], H5P_DEFAULT) > 0
                                  ? H5Lexists(f, path.c_str(), H5P_DEFAULT)
                                  : 0;
        if (exists <= 0) {
          h5::take_error();
          throw h5::Fault{"missing dataset " + path};
        }
        h5::Id ds = h5::checked(H5Dopen2(f, path.c_str(), H5P_DEFAULT), H5Dclose, "opening " + path);
        h5::Id type = h5::checked(H5Dget_type(ds), H5Tclose, "reading the type of " + path);
        if (H5Tget_class(type) != H5T_FLOAT || H5Tget_size(type) != 4)
          throw h5::Fault{"dataset " + path + " is not 32-bit float"};
        h5::Id space = h5::checked(H5Dget_space(ds), H5Sclose, "reading the shape of " + path);
        const int rank = H5Sget_simple_extent_ndims(space);
        h5::check(rank, "reading the shape of " + path);
        std::vector<hsize_t> dims(static_cast<std::size_t>(rank));
        h5::check(H5Sget_simple_extent_dims(space, dims.data(), nullptr), "reading the shape of " + path);
        const std::vector<std::int64_t> shape(dims.begin(), dims.end());
        if (shape != t.shape)
          throw h5::Fault{"dataset " + path + " has shape " + shape_text(shape) +
                          " but the layout record says " + shape_text(t.shape)};
        sums[static_cast<std::size_t>(g)] = h5::read_u64_attr(ds, "checksum");
      }
      m.checksums.push_back(sums);
      expected.insert(t.name);
    }
  for (int g = 0; g < 3; ++g) {
    h5::Id grp = h5::checked(H5Gopen2(f, kGroups[g], H5P_DEFAULT), H5Gclose,
                             std::string("opening group ") + kGroups[g]);
    for (const auto& name : h5::link_names(grp))
      if (!expected.count(name))
        throw h5::Fault{"dataset " + dataset_path(g, name) + " is not in the layout record"};
  }
  f.close("closing the file");
  return m;
}
}  // namespace

Manifest read_manifest(MPI_Comm comm, const std::string& file) {
  h5::quiet();
  int rank = 0;
  MICS_CHECK_MPI(MPI_Comm_rank(comm, &rank));
  std::string blob, err;
  if (rank == 0) {
    try {
      blob = pack(read_manifest_serial(file));
    } catch (const h5::Fault& f) {
      err = file + ": " + f.what;
    } catch (const std::exception& e) {
      err = file + ": " + e.what();
    }
  }
  agree_with_root(comm, err);
  bcast_string(comm, blob);
  return unpack_manifest(blob);
}

}  // namespace mics::checkpoint::detail

namespace mics::checkpoint::detail {

std::string read_run_id(const std::string& file) {
  if (H5Fis_hdf5(file.c_str()) <= 0) {
    h5::take_error();
    return "";
  }
  const hid_t fid = H5Fopen(file.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
  if (fid < 0) {
    h5::take_error();
    return "";
  }
  h5::Id f(fid, H5Fclose);
  try {
    if (H5Lexists(f, "/metadata", H5P_DEFAULT) <= 0 || H5Lexists(f, "/metadata/strings", H5P_DEFAULT) <= 0) {
      h5::take_error();
      return "";
    }
    h5::Id g = h5::checked(H5Gopen2(f, "/metadata/strings", H5P_DEFAULT), H5Gclose, "opening /metadata/strings");
    if (H5Aexists(g, "run_id") <= 0) {
      h5::take_error();
      return "";
    }
    return h5::read_string_attr(g, "run_id");
  } catch (const h5::Fault&) {
    return "";
  }
}

}  // namespace mics::checkpoint::detail
