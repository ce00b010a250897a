// info, verify and export: whole-file readers for the mics-ckpt tool. They read with the
// serial driver, each rank on its own tensors, so they also work as one process.
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <map>

#include "detail.hpp"
#include "h5.hpp"
#include "mics/checkpoint/checkpoint.hpp"
#include "mics/core/agree.hpp"
#include "mics/core/check.hpp"
#include "mics/core/error.hpp"

namespace mics::checkpoint {

namespace {
Info info_from(const std::string& file, const detail::Manifest& m) {
  Info out;
  out.path = file;
  out.file_bytes = m.file_bytes;
  out.meta = m.meta;
  out.layout = m.layout;
  std::size_t i = 0;
  for (const auto& b : m.layout.buckets)
    for (const auto& t : b.tensors) {
      TensorInfo ti;
      ti.name = t.name;
      ti.bucket = b.name;
      ti.shape = t.shape;
      for (int g = 0; g < 3; ++g) ti.checksum[g] = m.checksums[i][static_cast<std::size_t>(g)];
      out.tensors.push_back(std::move(ti));
      ++i;
    }
  return out;
}

h5::Id open_serial(const std::string& file) {
  return h5::checked(H5Fopen(file.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT), H5Fclose, "opening the file");
}

// Streams a dataset in blocks of flat elements; `sink(data, n, first)` sees them in order.
template <class Sink>
void stream_dataset(hid_t f, const std::string& path, const std::vector<std::int64_t>& shape, Sink&& sink) {
  h5::Id ds = h5::checked(H5Dopen2(f, path.c_str(), H5P_DEFAULT), H5Dclose, "opening " + path);
  h5::Id fspace = h5::checked(H5Dget_space(ds), H5Sclose, "reading the space of " + path);
  std::uint64_t n = 1;
  for (auto d : shape) n *= static_cast<std::uint64_t>(d);
  constexpr std::uint64_t kBlock = 1u << 22;
  std::vector<float> buf(static_cast<std::size_t>(std::min(n, kBlock)));
  for (std::uint64_t a = 0; a < n; a += kBlock) {
    const std::uint64_t b = std::min(n, a + kBlock);
    h5::select_flat_range(fspace, shape, a, b);
    const hsize_t len = b - a;
    h5::Id mspace = h5::checked(H5Screate_simple(1, &len, nullptr), H5Sclose, "creating a dataspace");
    h5::check(H5Dread(ds, H5T_NATIVE_FLOAT, mspace, fspace, H5P_DEFAULT, buf.data()), "reading " + path);
    sink(buf.data(), static_cast<std::size_t>(len), a);
  }
}
}  // namespace

Weights read_weights(MPI_Comm comm, const std::string& path) {
  h5::quiet();
  Weights w;
  w.info = info(comm, path);
  std::string err;
  try {
    h5::Id f = open_serial(w.info.path);
    std::size_t i = 0;
    for (const auto& b : w.info.layout.buckets) {
      w.buckets.emplace_back(b.count, 0.0f);
      for (const auto& t : b.tensors) {
        const TensorInfo& ti = w.info.tensors[i++];
        std::uint64_t sum = 0;
        float* dst = w.buckets.back().data() + t.offset;
        stream_dataset(f, detail::dataset_path(0, t.name), t.shape,
                       [&](const float* x, std::size_t n, std::uint64_t first) {
                         sum += checksum_terms(x, n, first);
                         std::copy(x, x + n, dst + first);
                       });
        if (sum != ti.checksum[0])
          throw h5::Fault{detail::dataset_path(0, t.name) + ": checksum mismatch (the file is damaged)"};
      }
    }
  } catch (const h5::Fault& fault) {
    err = w.info.path + ": " + fault.what;
  }
  agree(comm, err);
  return w;
}

Info info(MPI_Comm comm, const std::string& path) {
  const std::string file = resolve(comm, path);
  return info_from(file, detail::read_manifest(comm, file));
}

VerifyReport verify(MPI_Comm comm, const std::string& path, const model::BucketLayout* expected) {
  h5::quiet();
  const std::string file = resolve(comm, path);
  const detail::Manifest man = detail::read_manifest(comm, file);
  VerifyReport rep;
  rep.info = info_from(file, man);
  int rank = 0, size = 1;
  MICS_CHECK_MPI(MPI_Comm_rank(comm, &rank));
  MICS_CHECK_MPI(MPI_Comm_size(comm, &size));

  const std::size_t nds = 3 * rep.info.tensors.size();
  std::vector<std::uint64_t> computed(nds, 0);
  std::vector<int> read_failed(nds, 0);
  std::vector<std::uint64_t> non_finite(nds, 0);  // NaN and Inf elements
  std::string open_error;
  try {
    h5::Id f = open_serial(file);
    for (std::size_t d = static_cast<std::size_t>(rank); d < nds; d += static_cast<std::size_t>(size)) {
      const auto& t = rep.info.tensors[d / 3];
      const std::string p = detail::dataset_path(static_cast<int>(d % 3), t.name);
      try {
        stream_dataset(f, p, t.shape, [&](const float* x, std::size_t n, std::uint64_t first) {
          computed[d] += checksum_terms(x, n, first);
          for (std::size_t i = 0; i < n; ++i) non_finite[d] += std::isfinite(x[i]) ? 0 : 1;
        });
      } catch (const h5::Fault&) {
        read_failed[d] = 1;
      }
    }
  } catch (const h5::Fault& fault) {
    open_error = file + ": " + fault.what;
  }
  agree(comm, open_error);
  MICS_CHECK_MPI(MPI_Allreduce(MPI_IN_PLACE, computed.data(), static_cast<int>(nds), MPI_UINT64_T, MPI_SUM, comm));
  MICS_CHECK_MPI(MPI_Allreduce(MPI_IN_PLACE, read_failed.data(), static_cast<int>(nds), MPI_INT, MPI_MAX, comm));
  MICS_CHECK_MPI(MPI_Allreduce(MPI_IN_PLACE, non_finite.data(), static_cast<int>(nds), MPI_UINT64_T, MPI_SUM, comm));

  for (std::size_t d = 0; d < nds; ++d) {
    const auto& t = rep.info.tensors[d / 3];
    const std::string p = detail::dataset_path(static_cast<int>(d % 3), t.name);
    std::uint64_t n = 1;
    for (auto x : t.shape) n *= static_cast<std::uint64_t>(x);
    ++rep.datasets_checked;
    rep.bytes_checked += 4 * n;
    if (read_failed[d]) {
      rep.faults.push_back(p + ": cannot be read (corrupt or truncated data)");
    } else if (computed[d] != t.checksum[d % 3]) {
      char buf[96];
      std::snprintf(buf, sizeof buf, " (stored %016llx, computed %016llx)",
                    static_cast<unsigned long long>(t.checksum[d % 3]),
                    static_cast<unsigned long long>(computed[d]));
      rep.faults.push_back(p + ": checksum mismatch" + buf);
    } else if (non_finite[d] > 0) {
      // Intact, but a run resumed from it would be lost: a fault all the same.
      rep.faults.push_back(p + ": " + std::to_string(non_finite[d]) + " of " + std::to_string(n) +
                           " values are not finite (NaN or Inf)");
    }
  }
  // The layout record against itself: tensors inside their buckets, counts = shapes.
  for (const auto& b : man.layout.buckets)
    for (const auto& t : b.tensors) {
      std::uint64_t n = 1;
      for (auto x : t.shape) n *= static_cast<std::uint64_t>(x);
      if (n != t.count || t.offset + t.count > b.count)
        rep.faults.push_back("tensor '" + t.name + "': layout record inconsistent (shape " +
                             detail::shape_text(t.shape) + ", count " + std::to_string(t.count) +
                             ", bucket '" + b.name + "' of " + std::to_string(b.count) + ")");
    }
  if (expected) {
    std::map<std::string, const TensorInfo*> stored;
    for (const auto& t : rep.info.tensors) stored[t.name] = &t;
    std::size_t matched = 0;
    for (const auto& b : expected->buckets)
      for (const auto& t : b.tensors) {
        const auto it = stored.find(t.name);
        if (it == stored.end()) {
          rep.faults.push_back("tensor '" + t.name + "' of the model is missing");
          continue;
        }
        ++matched;
        if (it->second->shape != t.shape)
          rep.faults.push_back("tensor '" + t.name + "' has shape " + detail::shape_text(it->second->shape) +
                               " but the model expects " + detail::shape_text(t.shape));
      }
    if (matched != stored.size())
      rep.faults.push_back(std::to_string(stored.size() - matched) + " stored tensors are not part of the model");
  }
  return rep;
}

namespace {
void write_all(std::FILE* out, const void* data, std::size_t n, const std::string& path) {
  if (std::fwrite(data, 1, n, out) != n) throw h5::Fault{"cannot write " + path + ": " + std::strerror(errno)};
}
}  // namespace

namespace detail {
std::string json_escape(const std::string& s) {
  std::string o;
  for (unsigned char c : s) {
    switch (c) {
      case '"': o += "\\\""; break;
      case '\\': o += "\\\\"; break;
      case '\n': o += "\\n"; break;
      case '\t': o += "\\t"; break;
      case '\r': o += "\\r"; break;
      default:
        if (c < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\u%04x", c);
          o += buf;
        } else {
          o += static_cast<char>(c);
        }
    }
  }
  return o;
}

}  // namespace detail

void export_safetensors(MPI_Comm comm, const std::string& path, const std::string& output, bool overwrite) {
  int rank = 0;
  MICS_CHECK_MPI(MPI_Comm_rank(comm, &rank));
  std::string err;
  if (rank == 0 && !overwrite && std::filesystem::exists(output))
    err = output + ": the output exists; refusing to overwrite it (add --force to replace it)";
  agree(comm, err);
  const VerifyReport rep = verify(comm, path, nullptr);
  if (!rep.faults.empty())
    throw Error(rep.info.path + ": " + rep.faults.front() +
                    (rep.faults.size() > 1 ? " (and " + std::to_string(rep.faults.size() - 1) + " more faults)" : "") +
                    "; nothing exported",
                true);
  if (rank == 0) {
    const std::string temp = output + ".tmp";
    std::FILE* out = nullptr;
    try {
      // Header: {"__metadata__": {...}, name: {dtype, shape, data_offsets}, ...}, data in
      // layout order, offsets relative to the end of the header.
      std::string header = "{\"__metadata__\":{\"format\":\"mics-checkpoint export\",\"step\":\"" +
                           std::to_string(rep.info.meta.step) + "\",\"tokens_seen\":\"" +
                           std::to_string(rep.info.meta.tokens_seen) + "\",\"model_config\":\"" +
                           detail::json_escape(rep.info.meta.model_config) + "\"}";
      std::uint64_t offset = 0;
      for (const auto& t : rep.info.tensors) {
        std::uint64_t n = 1;
        for (auto x : t.shape) n *= static_cast<std::uint64_t>(x);
        header += ",\"" + detail::json_escape(t.name) + "\":{\"dtype\":\"F32\",\"shape\":[";
        for (std::size_t k = 0; k < t.shape.size(); ++k) {
          if (k) header += ',';
          header += std::to_string(t.shape[k]);
        }
        header += "],\"data_offsets\":[" + std::to_string(offset) + "," + std::to_string(offset + 4 * n) + "]}";
        offset += 4 * n;
      }
      header += "}";
      while (header.size() % 8 != 0) header += ' ';  // data starts 8-byte aligned
      out = std::fopen(temp.c_str(), "wb");
      if (!out) throw h5::Fault{"cannot create " + temp + ": " + std::strerror(errno)};
      unsigned char len[8];
      const std::uint64_t hl = header.size();
      for (int k = 0; k < 8; ++k) len[k] = static_cast<unsigned char>(hl >> (8 * k));
      write_all(out, len, 8, temp);
      write_all(out, header.data(), header.size(), temp);
      h5::Id f = open_serial(rep.info.path);
      for (const auto& t : rep.info.tensors)
        stream_dataset(f, detail::dataset_path(0, t.name), t.shape,
                       [&](const float* x, std::size_t n, std::uint64_t) {
                         // little-endian on every platform mics builds for (x86-64, aarch64)
                         write_all(out, x, 4 * n, temp);
                       });
      if (std::fflush(out) != 0 || ::fsync(fileno(out)) != 0)
        throw h5::Fault{"cannot write " + temp + ": " + std::strerror(errno)};
      std::fclose(out);
      out = nullptr;
      if (std::rename(temp.c_str(), output.c_str()) != 0)
        throw h5::Fault{"cannot rename " + temp + " to " + output + ": " + std::strerror(errno)};
    } catch (const h5::Fault& f) {
      err = f.what;
      if (out) std::fclose(out);
      ::unlink(temp.c_str());
    }
  }
  agree(comm, err);
}

}  // namespace mics::checkpoint
