#pragma once
// printf-style formatting into std::string, private to mics_report.
#include <cstdarg>
#include <cstdio>
#include <string>

namespace mics::report::detail {

__attribute__((format(printf, 1, 2))) inline std::string sprintf(const char* fmt, ...) {
  char buf[256];
  va_list ap;
  va_start(ap, fmt);
  const int n = std::vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  if (n < 0) return {};
  if (static_cast<std::size_t>(n) < sizeof buf) return std::string(buf, static_cast<std::size_t>(n));
  std::string out(static_cast<std::size_t>(n) + 1, '\0');
  va_start(ap, fmt);
  std::vsnprintf(out.data(), out.size(), fmt, ap);
  va_end(ap);
  out.pop_back();
  return out;
}

}  // namespace mics::report::detail
