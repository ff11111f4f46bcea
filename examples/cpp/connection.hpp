// One client connection: its buffers, reading, writing and the graceful close.
#ifndef KV_CPP_CONNECTION_HPP
#define KV_CPP_CONNECTION_HPP

#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>

#include <handoff.hpp>

#include "protocol.hpp"

namespace kv {

using clock = std::chrono::steady_clock;

/// What the server answers a request line with (protocol.hpp's answer, bound
/// to the store and the generation).
using answerer = std::function<std::string(std::string_view line)>;

class connection {
public:
    /// A partial line is kept up to this many bytes (max_line and its '\r').
    static constexpr std::size_t in_cap = max_line + 1;

    explicit connection(handoff::unique_fd fd) noexcept : fd_(std::move(fd)) {}

    /// Take over a connection that moved here (protocol v2) with its state.
    /// False when the carried input does not fit.
    bool restore(handoff::byte_view unread, handoff::byte_view unwritten, bool in_overlong_line);

    /// Read what has arrived and answer every whole line (`draining`: a drain
    /// is under way, counted for it). Stops while much output waits.
    void read(const answerer &answer, bool draining);
    /// Answer the whole lines already received (carried by a move).
    void process_input(const answerer &answer, bool draining);
    /// Write what the socket takes.
    void flush();
    /// Close gracefully: FIN after the answers sent, then read and discard for
    /// a while, so a request racing the close does not turn into a reset that
    /// could destroy answers the client has not read yet.
    void linger();

    int fd() const noexcept { return fd_.get(); }
    std::size_t out_pending() const noexcept { return out_.size() - out_off_; }
    std::string_view unwritten() const noexcept { return std::string_view(out_).substr(out_off_); }
    std::string_view unread() const noexcept { return {in_.data(), in_len_}; }
    bool wants_input() const noexcept;

    bool dead = false;       // close at the end of this iteration
    bool eof = false;        // the peer closed its side
    bool discarding = false; // inside an overlong line: skip to its newline
    bool lingering = false;  // shut down for writing; reading and discarding
    bool moved = false;      // handed to the successor: untouched until the outcome
    clock::time_point linger_until{};
    std::uint64_t served = 0;         // lines answered
    std::uint64_t drain_answered = 0; // lines answered since the drain began

private:
    void reply(std::string_view line);

    handoff::unique_fd fd_;
    std::string out_;
    std::size_t out_off_ = 0;
    std::array<char, in_cap> in_{};
    std::size_t in_len_ = 0;
};

} // namespace kv

#endif
