// The listener: binding --listen when none was inherited, and naming it.
#ifndef KV_CPP_NET_HPP
#define KV_CPP_NET_HPP

#include <string>

#include <handoff.hpp>

namespace kv {

/// Bind and listen on tcp://HOST:PORT (HOST may be [v6addr]). Throws
/// std::runtime_error saying why not.
handoff::unique_fd bind_listener(const std::string &url);

/// The listener's own address as tcp://HOST:PORT (tcp://[v6]:PORT).
std::string listener_url(int fd);

} // namespace kv

#endif
