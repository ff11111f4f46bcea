// The service's stderr lines: "kv-cpp[pid] ...", one per event.
#ifndef KV_CPP_SAY_HPP
#define KV_CPP_SAY_HPP

#include <cstdlib>
#include <iostream>
#include <sstream>
#include <string_view>

#include <unistd.h>

namespace kv {

/// The build id announced in Hello, and the prefix of every line logged.
inline constexpr std::string_view build_id = "kv-cpp";

template <class... Parts>
void say(const Parts &...parts) {
    std::ostringstream line;
    line << build_id << "[" << ::getpid() << "] ";
    (line << ... << parts);
    line << '\n';
    std::cerr << line.str() << std::flush;
}

/// No answer may leave after a failed fsync: log and exit at once, running
/// no destructors (they would flush and close the log).
template <class... Parts>
[[noreturn]] void fatal(const Parts &...parts) {
    say("fatal: ", parts...);
    std::_Exit(1);
}

} // namespace kv

#endif
