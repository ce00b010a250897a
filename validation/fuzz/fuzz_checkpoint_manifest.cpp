// libFuzzer target: the checkpoint's text and binary records: the bucket-layout record
// (root attribute "bucket_layout"), the packed manifest and metadata that rank 0
// broadcasts, and the metadata checksum over them. Each must either succeed or throw
// (mics::Error, or the library's internal fault type, which its callers turn into one).
#include <cstddef>
#include <cstdint>
#include <string>

#include "detail.hpp"
#include "h5.hpp"
#include "mics/core/error.hpp"

namespace d = mics::checkpoint::detail;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  try {
    const auto layout = d::parse_layout_record(text);
    // What parses must print back to a record that parses to the same thing.
    const std::string again = d::layout_record(layout);
    if (d::layout_record(d::parse_layout_record(again)) != again) __builtin_trap();
  } catch (const mics::checkpoint::h5::Fault&) {
  } catch (const mics::Error&) {
  }
  try {
    const auto m = d::unpack_manifest(text);
    d::metadata_checksum(m.meta, d::layout_record(m.layout));
  } catch (const mics::checkpoint::h5::Fault&) {
  } catch (const mics::Error&) {
  }
  try {
    d::unpack_meta(text);
  } catch (const mics::checkpoint::h5::Fault&) {
  } catch (const mics::Error&) {
  }
  return 0;
}
