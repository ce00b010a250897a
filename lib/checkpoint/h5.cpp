#include "h5.hpp"

#include <cstring>

namespace mics::checkpoint::h5 {

void quiet() { H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr); }

namespace {
herr_t collect(unsigned n, const H5E_error2_t* err, void* data) {
  auto* out = static_cast<std::vector<std::string>*>(data);
  (void)n;
  out->emplace_back(err->desc ? err->desc : "");
  return 0;
}
}  // namespace

std::string take_error() {
  std::vector<std::string> descs;
  H5Ewalk2(H5E_DEFAULT, H5E_WALK_UPWARD, collect, &descs);
  H5Eclear2(H5E_DEFAULT);
  // The innermost entry says what actually went wrong (e.g. "truncated file: eof = ...");
  // the outer ones only repeat which API call was running.
  for (const auto& d : descs)
    if (!d.empty()) return d;
  return "unknown HDF5 error";
}

void check(long long rc, const std::string& what) {
  if (rc < 0) throw Fault{what + ": " + take_error()};
}

void Id::close(const std::string& what) {
  if (id_ < 0) return;
  const herr_t rc = closer_ ? closer_(id_) : 0;
  id_ = H5I_INVALID_HID;
  check(rc, what);
}

Id checked(hid_t id, Id::Closer closer, const std::string& what) {
  if (id < 0) throw Fault{what + ": " + take_error()};
  return Id(id, closer);
}

namespace {
Id scalar_space() { return checked(H5Screate(H5S_SCALAR), H5Sclose, "creating a dataspace"); }

void write_attr(hid_t obj, const std::string& name, hid_t file_type, hid_t mem_type, hid_t space,
                const void* data) {
  Id a = checked(H5Acreate2(obj, name.c_str(), file_type, space, H5P_DEFAULT, H5P_DEFAULT),
                 H5Aclose, "creating attribute " + name);
  check(H5Awrite(a, mem_type, data), "writing attribute " + name);
  a.close("closing attribute " + name);
}

Id open_attr(hid_t obj, const std::string& name) {
  const htri_t exists = H5Aexists(obj, name.c_str());
  if (exists == 0) throw Fault{"missing attribute '" + name + "'"};
  check(exists, "looking up attribute " + name);
  return checked(H5Aopen(obj, name.c_str(), H5P_DEFAULT), H5Aclose, "opening attribute " + name);
}

std::uint64_t attr_points(hid_t a, const std::string& name) {
  Id space = checked(H5Aget_space(a), H5Sclose, "reading attribute " + name);
  const hssize_t n = H5Sget_simple_extent_npoints(space);
  check(n, "reading attribute " + name);
  return static_cast<std::uint64_t>(n);
}

void read_scalar(hid_t obj, const std::string& name, H5T_class_t cls, hid_t mem_type, void* out) {
  Id a = open_attr(obj, name);
  Id t = checked(H5Aget_type(a), H5Tclose, "reading attribute " + name);
  if (H5Tget_class(t) != cls || attr_points(a, name) != 1)
    throw Fault{"attribute '" + name + "' has the wrong type or size"};
  check(H5Aread(a, mem_type, out), "reading attribute " + name);
}
}  // namespace

void write_string_attr(hid_t obj, const std::string& name, const std::string& value) {
  Id t = checked(H5Tcopy(H5T_C_S1), H5Tclose, "creating a string type");
  // Fixed length, exactly the text (HDF5 refuses size 0, so "" is one NUL byte).
  check(H5Tset_size(t, value.empty() ? 1 : value.size()), "sizing a string type");
  check(H5Tset_strpad(t, H5T_STR_NULLPAD), "padding a string type");
  check(H5Tset_cset(t, H5T_CSET_UTF8), "setting a string type's character set");
  Id s = scalar_space();
  const char nul = '\0';
  write_attr(obj, name, t, t, s, value.empty() ? &nul : value.data());
}

void write_i64_attr(hid_t obj, const std::string& name, std::int64_t value) {
  Id s = scalar_space();
  write_attr(obj, name, H5T_STD_I64LE, H5T_NATIVE_INT64, s, &value);
}

void write_u64_attr(hid_t obj, const std::string& name, std::uint64_t value) {
  Id s = scalar_space();
  write_attr(obj, name, H5T_STD_U64LE, H5T_NATIVE_UINT64, s, &value);
}

void write_f64_attr(hid_t obj, const std::string& name, double value) {
  Id s = scalar_space();
  write_attr(obj, name, H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, s, &value);
}

void write_u64_array_attr(hid_t obj, const std::string& name, const std::vector<std::uint64_t>& v) {
  if (v.empty()) {
    Id s = checked(H5Screate(H5S_NULL), H5Sclose, "creating a dataspace");
    write_attr(obj, name, H5T_STD_U64LE, H5T_NATIVE_UINT64, s, nullptr);
    return;
  }
  const hsize_t n = v.size();
  Id s = checked(H5Screate_simple(1, &n, nullptr), H5Sclose, "creating a dataspace");
  write_attr(obj, name, H5T_STD_U64LE, H5T_NATIVE_UINT64, s, v.data());
}

std::string read_string_attr(hid_t obj, const std::string& name) {
  Id a = open_attr(obj, name);
  Id t = checked(H5Aget_type(a), H5Tclose, "reading attribute " + name);
  if (H5Tget_class(t) != H5T_STRING || H5Tis_variable_str(t) != 0 || attr_points(a, name) != 1)
    throw Fault{"attribute '" + name + "' is not a fixed-length string"};
  const std::size_t size = H5Tget_size(t);
  std::string out(size, '\0');
  check(H5Aread(a, t, out.data()), "reading attribute " + name);
  const auto end = out.find('\0');
  if (end != std::string::npos) out.resize(end);
  return out;
}

std::int64_t read_i64_attr(hid_t obj, const std::string& name) {
  std::int64_t v = 0;
  read_scalar(obj, name, H5T_INTEGER, H5T_NATIVE_INT64, &v);
  return v;
}

std::uint64_t read_u64_attr(hid_t obj, const std::string& name) {
  std::uint64_t v = 0;
  read_scalar(obj, name, H5T_INTEGER, H5T_NATIVE_UINT64, &v);
  return v;
}

double read_f64_attr(hid_t obj, const std::string& name) {
  double v = 0;
  read_scalar(obj, name, H5T_FLOAT, H5T_NATIVE_DOUBLE, &v);
  return v;
}

std::vector<std::uint64_t> read_u64_array_attr(hid_t obj, const std::string& name) {
  Id a = open_attr(obj, name);
  Id t = checked(H5Aget_type(a), H5Tclose, "reading attribute " + name);
  if (H5Tget_class(t) != H5T_INTEGER) throw Fault{"attribute '" + name + "' is not an integer array"};
  std::vector<std::uint64_t> v(attr_points(a, name));
  if (!v.empty()) check(H5Aread(a, H5T_NATIVE_UINT64, v.data()), "reading attribute " + name);
  return v;
}

namespace {
herr_t collect_attr(hid_t, const char* name, const H5A_info_t*, void* data) {
  static_cast<std::vector<std::string>*>(data)->emplace_back(name);
  return 0;
}
herr_t collect_link(hid_t, const char* name, const H5L_info_t*, void* data) {
  static_cast<std::vector<std::string>*>(data)->emplace_back(name);
  return 0;
}
}  // namespace

std::vector<std::string> attr_names(hid_t obj) {
  std::vector<std::string> names;
  hsize_t idx = 0;
  check(H5Aiterate2(obj, H5_INDEX_NAME, H5_ITER_INC, &idx, collect_attr, &names),
        "listing attributes");
  return names;
}

std::vector<std::string> link_names(hid_t group) {
  std::vector<std::string> names;
  hsize_t idx = 0;
  check(H5Literate(group, H5_INDEX_NAME, H5_ITER_INC, &idx, collect_link, &names),
        "listing a group");
  return names;
}

Id make_space(const std::vector<std::int64_t>& shape) {
  if (shape.empty()) return scalar_space();
  std::vector<hsize_t> dims(shape.begin(), shape.end());
  return checked(H5Screate_simple(static_cast<int>(dims.size()), dims.data(), nullptr), H5Sclose,
                 "creating a dataspace");
}

namespace {
// Adds to `space` the boxes covering flat range [a, b) of dims[d..], the leading
// coordinates being fixed in start[0..d).
void add_boxes(hid_t space, const std::vector<hsize_t>& dims, std::size_t d, std::vector<hsize_t>& start,
               std::uint64_t a, std::uint64_t b, bool& first) {
  hsize_t inner = 1;
  for (std::size_t k = d + 1; k < dims.size(); ++k) inner *= dims[k];
  auto box = [&](hsize_t row, hsize_t rows) {
    std::vector<hsize_t> s(start), c(dims.size());
    s[d] = row;
    for (std::size_t k = 0; k < d; ++k) c[k] = 1;
    c[d] = rows;
    for (std::size_t k = d + 1; k < dims.size(); ++k) { s[k] = 0; c[k] = dims[k]; }
    check(H5Sselect_hyperslab(space, first ? H5S_SELECT_SET : H5S_SELECT_OR, s.data(), nullptr,
                              c.data(), nullptr),
          "selecting a hyperslab");
    first = false;
  };
  auto partial_row = [&](hsize_t row, std::uint64_t lo, std::uint64_t hi) {
    start[d] = row;
    add_boxes(space, dims, d + 1, start, lo, hi, first);
  };
  hsize_t r0 = a / inner;
  const hsize_t r_end = b / inner;  // rows before r_end are complete up to b
  if (r0 == (b - 1) / inner) {      // within one row
    if (a % inner == 0 && b % inner == 0) box(r0, 1);
    else partial_row(r0, a - r0 * inner, b - r0 * inner);
    return;
  }
  if (a % inner != 0) {
    partial_row(r0, a - r0 * inner, inner);
    ++r0;
  }
  if (r_end > r0) box(r0, r_end - r0);
  if (b % inner != 0) partial_row(r_end, 0, b - r_end * inner);
}
}  // namespace

void select_flat_range(hid_t space, const std::vector<std::int64_t>& shape, std::uint64_t a,
                       std::uint64_t b) {
  if (a >= b) {
    check(H5Sselect_none(space), "selecting nothing");
    return;
  }
  if (shape.empty()) {
    check(H5Sselect_all(space), "selecting a scalar");
    return;
  }
  std::vector<hsize_t> dims(shape.begin(), shape.end());
  std::vector<hsize_t> start(dims.size(), 0);
  bool first = true;
  add_boxes(space, dims, 0, start, a, b, first);
}

}  // namespace mics::checkpoint::h5
