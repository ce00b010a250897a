#pragma once
// Internal: RAII for HDF5 ids, HDF5's error stack turned into one readable phrase, and
// the attribute and selection helpers the checkpoint code shares.
#include <hdf5.h>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace mics::checkpoint::h5 {

// Thrown inside this library by every failed HDF5 call; the public functions catch it,
// prefix the file name and agree on it across ranks.
struct Fault {
  std::string what;
};

// Silences HDF5's own printing of its error stack (the user sees only our line).
void quiet();

// The innermost description on HDF5's error stack (where the failure started), then
// clears the stack.
std::string take_error();

// Throws Fault{what + ": " + take_error()} when rc < 0.
void check(long long rc, const std::string& what);

class Id {
public:
  using Closer = herr_t (*)(hid_t);
  Id() = default;
  Id(hid_t id, Closer closer) : id_(id), closer_(closer) {}
  Id(const Id&) = delete;
  Id& operator=(const Id&) = delete;
  Id(Id&& o) noexcept : id_(std::exchange(o.id_, H5I_INVALID_HID)), closer_(o.closer_) {}
  Id& operator=(Id&& o) noexcept {
    if (this != &o) {
      reset();
      id_ = std::exchange(o.id_, H5I_INVALID_HID);
      closer_ = o.closer_;
    }
    return *this;
  }
  ~Id() { reset(); }
  hid_t get() const { return id_; }
  operator hid_t() const { return id_; }  // NOLINT: ids are passed to the C API everywhere
  // Closes now and reports a failure (a file's close is where buffered writes land).
  void close(const std::string& what);
  void reset() {
    if (id_ >= 0 && closer_) closer_(id_);
    id_ = H5I_INVALID_HID;
  }

private:
  hid_t id_ = H5I_INVALID_HID;
  Closer closer_ = nullptr;
};

// Each wraps the matching H5*create/open call and throws Fault naming `what` on failure.
Id checked(hid_t id, Id::Closer closer, const std::string& what);

// Attributes on a group, file or dataset. Readers throw Fault when missing or mistyped.
void write_string_attr(hid_t obj, const std::string& name, const std::string& value);
void write_i64_attr(hid_t obj, const std::string& name, std::int64_t value);
void write_u64_attr(hid_t obj, const std::string& name, std::uint64_t value);
void write_f64_attr(hid_t obj, const std::string& name, double value);
void write_u64_array_attr(hid_t obj, const std::string& name, const std::vector<std::uint64_t>& v);
std::string read_string_attr(hid_t obj, const std::string& name);
std::int64_t read_i64_attr(hid_t obj, const std::string& name);
std::uint64_t read_u64_attr(hid_t obj, const std::string& name);
double read_f64_attr(hid_t obj, const std::string& name);
std::vector<std::uint64_t> read_u64_array_attr(hid_t obj, const std::string& name);
std::vector<std::string> attr_names(hid_t obj);
std::vector<std::string> link_names(hid_t group);

// A dataspace for `shape` (scalar when empty).
Id make_space(const std::vector<std::int64_t>& shape);

// Selects in `space` (of `shape`) the elements whose row-major flat index lies in
// [a, b): a union of at most 2*rank-1 boxes. Selects nothing when a >= b.
void select_flat_range(hid_t space, const std::vector<std::int64_t>& shape, std::uint64_t a,
                       std::uint64_t b);

}  // namespace mics::checkpoint::h5
