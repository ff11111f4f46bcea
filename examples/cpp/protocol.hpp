// The line protocol (examples/README.md, Line protocol): one request line in,
// one answer line out.
#ifndef KV_CPP_PROTOCOL_HPP
#define KV_CPP_PROTOCOL_HPP

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "store.hpp"

namespace kv {

/// A request line is at most this many bytes before its '\n'.
constexpr std::size_t max_line = 1024;

/// The answer to one request line (without its '\n'; a trailing '\r' is
/// ignored). A SET is appended to `db` stamped with `generation`; its OK is
/// durable only once the caller has synced the log.
std::string answer(std::string_view line, store &db, std::uint64_t generation);

/// The answer to a line longer than max_line, once its '\n' arrives.
std::string line_too_long();

} // namespace kv

#endif
