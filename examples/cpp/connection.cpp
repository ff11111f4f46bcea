#include "connection.hpp"

#include <algorithm>
#include <cerrno>
#include <cstring>

#include <sys/socket.h>

namespace kv {

namespace {

// Stop reading a connection while this much output waits for it.
constexpr std::size_t out_high = 64 * 1024;
constexpr auto linger_for = std::chrono::milliseconds(500);

} // namespace

bool connection::restore(handoff::byte_view unread, handoff::byte_view unwritten, bool in_overlong_line) {
    if (unread.size > in_cap)
        return false;
    std::copy(unread.begin(), unread.end(), in_.begin());
    in_len_ = unread.size;
    discarding = in_overlong_line;
    out_.assign(unwritten.as_string());
    return true;
}

bool connection::wants_input() const noexcept { return !eof && (lingering || out_pending() < out_high); }

void connection::reply(std::string_view line) {
    if (out_off_ > 0 && out_off_ == out_.size()) {
        out_.clear();
        out_off_ = 0;
    }
    out_.append(line);
    out_.push_back('\n');
}

void connection::process_input(const answerer &answer, bool draining) {
    std::size_t start = 0;
    for (;;) {
        auto nl = static_cast<const char *>(std::memchr(in_.data() + start, '\n', in_len_ - start));
        if (!nl)
            break;
        std::size_t len = static_cast<std::size_t>(nl - (in_.data() + start));
        served++;
        if (draining)
            drain_answered++;
        if (discarding) {
            discarding = false;
            reply(line_too_long());
        } else {
            reply(answer(std::string_view(in_.data() + start, len)));
        }
        start += len + 1;
    }
    std::size_t rest = in_len_ - start;
    if (discarding) {
        rest = 0; // still inside the overlong line
    } else if (rest == in_cap) {
        discarding = true; // a full buffer and no newline
        rest = 0;
    }
    std::memmove(in_.data(), in_.data() + in_len_ - rest, rest);
    in_len_ = rest;
}

void connection::read(const answerer &answer, bool draining) {
    for (int round = 0; round < 16 && !dead && !eof; round++) {
        if (!lingering && out_pending() >= out_high)
            return;
        char discard[4096];
        char *into = lingering ? discard : in_.data() + in_len_;
        std::size_t room = lingering ? sizeof discard : in_cap - in_len_;
        ssize_t n = ::recv(fd_.get(), into, room, 0);
        if (n > 0) {
            if (!lingering) {
                in_len_ += static_cast<std::size_t>(n);
                process_input(answer, draining);
            }
        } else if (n == 0) {
            eof = true;
        } else if (errno == EINTR) {
            continue;
        } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
            return;
        } else {
            dead = true;
        }
    }
}

void connection::flush() {
    while (!dead && out_pending() > 0) {
        ssize_t n = ::send(fd_.get(), out_.data() + out_off_, out_pending(), MSG_NOSIGNAL);
        if (n > 0)
            out_off_ += static_cast<std::size_t>(n);
        else if (n < 0 && errno == EINTR)
            continue;
        else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return;
        else
            dead = true;
    }
    if (out_off_ == out_.size()) {
        out_.clear();
        out_off_ = 0;
    }
}

void connection::linger() {
    if (lingering || dead)
        return;
    if (::shutdown(fd_.get(), SHUT_WR) != 0 || eof) {
        dead = true;
        return;
    }
    lingering = true;
    in_len_ = 0;
    linger_until = clock::now() + linger_for;
}

} // namespace kv
