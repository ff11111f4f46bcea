#include "server.hpp"

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstring>

#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "protocol.hpp"
#include "say.hpp"

namespace kv {

namespace {

// How long a draining incumbent waits for the first request of a connection
// it accepted but has heard nothing from yet (capped by half the budget).
constexpr auto drain_grace = std::chrono::milliseconds(1000);
constexpr auto accept_retry = std::chrono::milliseconds(100);

void report(const char *what, const handoff::error &e) {
    say("error: ", what, ": ", e.what(), " (", e.status_name(), ")");
}

// Complete `r`: done, or failed with `failure`.
void complete(handoff::request &r, const char *failure = nullptr) {
    try {
        if (failure)
            r.fail(failure);
        else
            r.complete();
    } catch (const handoff::error &e) {
        report("completing a handoff request", e);
    }
}

} // namespace

server::server(options o)
    : opts_(std::move(o)),
      answer_([this](std::string_view line) { return answer(line, store_, inc_.generation()); }) {}

// ---- connections ----------------------------------------------------------------

void server::reap() {
    conns_.erase(std::remove_if(conns_.begin(), conns_.end(), [](const auto &c) { return c->dead; }),
                 conns_.end());
}

std::size_t server::live_connections() const {
    return static_cast<std::size_t>(
        std::count_if(conns_.begin(), conns_.end(), [](const auto &c) { return !c->lingering && !c->moved; }));
}

// The listener's O_NONBLOCK flag is shared with the supervisor and every other
// generation (DESIGN §3) and is never changed here: poll said it is readable;
// a non-blocking listener is accepted from until EAGAIN, a blocking one once.
void server::accept_some() {
    int flags = fcntl(listener_.get(), F_GETFL);
    int tries = (flags >= 0 && (flags & O_NONBLOCK)) ? 64 : 1;
    while (tries-- > 0 && conns_.size() < opts_.max_conns) {
        handoff::unique_fd fd(accept4(listener_.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC));
        if (!fd) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                // The connection stays queued; try again in a tick.
                if (!accept_starved_)
                    say("accept: ", std::strerror(errno), "; retrying every ", accept_retry.count(), " ms");
                accept_starved_ = true;
                accept_resume_at_ = clock::now() + accept_retry;
            } else if (errno != EAGAIN && errno != EWOULDBLOCK) {
                say("accept: ", std::strerror(errno));
            }
            return;
        }
        if (accept_starved_) {
            say("accepting again");
            accept_starved_ = false;
        }
        int one = 1;
        setsockopt(fd.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        conns_.push_back(std::make_unique<connection>(std::move(fd)));
    }
}

// ---- the handoff's requests ---------------------------------------------------------

// Every request waiting on the request descriptor. A drain is only begun
// here: drain_step() completes it in a later iteration.
void server::take_requests() {
    for (;;) {
        handoff::request r;
        try {
            r = inc_.take_request();
        } catch (const handoff::error &e) {
            report("taking a handoff request", e);
            return;
        }
        switch (r.kind()) {
        case handoff::request_kind::none:
            return;
        case handoff::request_kind::drain:
            begin_drain(std::move(r));
            break;
        case handoff::request_kind::seal:
            seal(std::move(r));
            break;
        case handoff::request_kind::resume:
            resume(std::move(r));
            break;
        case handoff::request_kind::ended:
            ended();
            return;
        default:
            say("unknown handoff request ", static_cast<unsigned>(r.kind()));
            return;
        }
    }
}

void server::begin_drain(handoff::request r) {
    auto grace = std::min<std::chrono::milliseconds>(r.time_left() / 2, drain_grace);
    say("draining ", live_connections(), " connection(s)");
    accepting_ = false;
    drain_ = std::move(r);
    drain_deadline_ = clock::now() + grace;
    drain_step();
}

// A drain that may move descriptors (protocol v2): every connection goes to
// the successor at once, with its partial line and all its unsent answers,
// instead of being drained. One whose peer closed its side moves too: the
// successor writes what is owed, reads the end of file and closes it.
// Nothing is fsynced or sent here: the seal, which the library queues right
// behind this drain, makes this iteration's writes durable, and no answer to
// them leaves before that (the successor writes carried answers only once it
// holds the lock; after an abort the loop's group commit comes before any
// send). The connections are passed on while that fsync runs.
void server::move_connections() {
    handoff::request r = std::move(drain_);
    std::size_t moved = 0;
    for (auto &c : conns_) {
        if (c->dead || c->lingering)
            continue;
        const std::uint8_t state = c->discarding ? 1 : 0; // inside an overlong line
        try {
            r.move(handoff::item_kind::connection, "kv", c->fd(), c->unread(), c->unwritten(),
                   handoff::byte_view(&state, 1));
        } catch (const handoff::error &e) {
            report("moving a connection", e);
            for (auto &back : conns_)
                back->moved = false;
            complete(r, "cannot move a connection");
            return;
        }
        c->moved = true;
        moved++;
    }
    reap();
    say("moving ", moved, " connection(s) to the successor");
    complete(r);
}

void server::drain_step() {
    if (!drain_.pending())
        return;
    if (drain_.moves()) {
        move_connections();
        return;
    }
    bool late = clock::now() >= drain_deadline_;
    for (auto &c : conns_) {
        if (c->dead || c->lingering)
            continue;
        if (c->out_pending() > 0) {
            c->dead = c->dead || late;
            continue;
        }
        // Answered the request in progress; idle between requests; closed by
        // the peer; or out of time. One that has not sent its first request
        // yet (or sent part of a line) gets until the deadline.
        if (c->drain_answered > 0 || (c->served > 0 && c->unread().empty() && !c->discarding) || c->eof ||
            late)
            c->linger();
    }
    reap();
    if (live_connections() > 0)
        return;
    handoff::request r = std::move(drain_);
    if (!store_.sync())
        fatal("fsync ", store_.path(), ": ", std::strerror(errno));
    complete(r); // the default report: nothing left open, accepting closed
}

void server::seal(handoff::request r) {
    // fsynced, not closed: a resume at the descriptor limit closes this one to
    // reopen the log by its path (a successor may have replaced it). Fatal,
    // as in the group commit: the answers a moving drain carried wait for
    // this fsync, and none may leave after it failed (a later fsync may
    // report success for pages the kernel dropped).
    if (!store_.sync())
        fatal("seal: fsync ", store_.path(), ": ", std::strerror(errno));
    try {
        r.push_revision(store_.records());
    } catch (const handoff::error &e) {
        report("reporting the revision", e);
        complete(r, "cannot report the revision");
        return;
    }
    sealed_ = true;
    say("sealed at revision ", store_.records());
    complete(r);
}

void server::resume(handoff::request r) {
    // Moved connections are ours again, flags restored by the library (and
    // closed by the step-down below if the log cannot be reopened).
    for (auto &c : conns_)
        c->moved = false;
    if (sealed_) {
        sealed_ = false;
        store_.close(); // already fsynced by the seal
        try {
            open_log(inc_.generation());
        } catch (const std::exception &e) {
            say("cannot reopen the log to resume: ", e.what());
            complete(r, e.what());
            finished_ = true;
            exit_code_ = 1;
            return;
        }
    }
    accepting_ = true;
    say("resumed after an aborted handoff (generation ", inc_.generation(), ")");
    complete(r);
}

void server::open_log(std::uint64_t generation) { store_.open(opts_.data_dir, generation); }

// Serving has ended (committed, superseded or stopped): say how, and step down.
void server::ended() {
    finished_ = true;
    accepting_ = false;
    drain_ = handoff::request();
    // The successor has the moved connections: close our copies (never
    // shutdown, which would end them for the successor too).
    for (auto &c : conns_)
        c->dead = c->dead || c->moved;
    reap();
    std::optional<handoff::serve_outcome> outcome;
    try {
        outcome = inc_.wait_for(std::chrono::milliseconds(0));
    } catch (const handoff::error &e) {
        report("asking how serving ended", e);
        exit_code_ = 1;
        return;
    }
    if (outcome == handoff::serve_outcome::committed) {
        say("handoff committed: stepping down");
        exit_code_ = 0;
    } else if (outcome == handoff::serve_outcome::superseded) {
        say("superseded by another holder of the data dir: stepping down without writing");
        exit_code_ = 0;
    } else {
        say("serving stopped (outcome ", outcome ? static_cast<unsigned>(*outcome) : 0u, ")");
        exit_code_ = 1;
    }
}

// ---- the event loop -----------------------------------------------------------------

int server::serve(int signal_fd) {
    inc_.set_build_id(build_id);
    inc_.set_moves_descriptors(opts_.moves);
    inc_.start_loop();
    accepting_ = true;
    std::vector<pollfd> fds;
    // Adopted connections: their carried output goes first (the loop flushes
    // it), then their carried input is answered.
    for (auto &c : conns_)
        c->process_input(answer_, false);
    for (;;) {
        if (finished_ && conns_.empty())
            break;
        fds.clear();
        fds.push_back({signal_fd, POLLIN, 0});
        fds.push_back({inc_.request_fd(), POLLIN, 0});
        auto now = clock::now();
        std::optional<std::size_t> listener_at;
        if (accepting_ && !finished_ && conns_.size() < opts_.max_conns && now >= accept_resume_at_) {
            listener_at = fds.size();
            fds.push_back({listener_.get(), POLLIN, 0});
        }
        const std::size_t first_conn = fds.size(), polled = conns_.size();
        // Nothing timed to do: sleep until a descriptor wakes the loop.
        std::optional<clock::time_point> wake_at;
        auto wake_by = [&](clock::time_point t) { wake_at = wake_at ? std::min(*wake_at, t) : t; };
        if (accepting_ && !finished_ && now < accept_resume_at_)
            wake_by(accept_resume_at_);
        for (const auto &c : conns_) {
            if (c->moved) {
                fds.push_back({-1, 0, 0}); // poll skips it
                continue;
            }
            short events = 0;
            if (c->wants_input())
                events |= POLLIN;
            if (c->out_pending() > 0)
                events |= POLLOUT;
            if (c->lingering)
                wake_by(c->linger_until);
            fds.push_back({c->fd(), events, 0});
        }
        if (drain_.pending())
            wake_by(drain_deadline_);
        int timeout = -1;
        if (wake_at) {
            auto ms = std::chrono::ceil<std::chrono::milliseconds>(*wake_at - now).count();
            timeout = ms <= 0 ? 0 : ms > INT_MAX ? INT_MAX : static_cast<int>(ms);
        }

        if (poll(fds.data(), fds.size(), timeout) < 0 && errno != EINTR)
            fatal("poll: ", std::strerror(errno));

        if (fds[0].revents) {
            unsigned char sig = 0;
            if (::read(signal_fd, &sig, 1) == 1)
                say("signal ", static_cast<int>(sig), ": shutting down");
            break;
        }
        // Requests that have arrived are read before a drain is taken up, so
        // that they are answered rather than cut off.
        for (std::size_t i = 0; i < polled; i++)
            if (fds[first_conn + i].revents & (POLLIN | POLLHUP | POLLERR))
                conns_[i]->read(answer_, drain_.pending());
        if (listener_at && (fds[*listener_at].revents & POLLIN) && accepting_)
            accept_some();
        if (fds[1].revents)
            take_requests();

        // Group commit: every write of this iteration is made durable before
        // any answer leaves, so no client sees a value that could be lost.
        if (!store_.sync())
            fatal("fsync ", store_.path(), ": ", std::strerror(errno));

        now = clock::now();
        for (auto &c : conns_) {
            if (c->moved)
                continue;
            c->flush();
            if (c->lingering && (c->eof || now >= c->linger_until))
                c->dead = true;
            else if (!c->lingering && c->eof && c->out_pending() == 0)
                c->dead = true;
        }
        reap();
        drain_step();
        if (finished_) {
            // Stepping down: everything was drained; let lingering
            // connections run out.
            for (auto &c : conns_)
                c->linger();
            reap();
        }
    }
    if (!finished_) {
        // Stopped by a signal: roll back a handoff in progress (the drain we
        // hold fails) and stop the serve thread.
        drain_ = handoff::request();
        try {
            inc_.stop();
        } catch (const handoff::error &e) {
            report("stopping the control socket", e);
        }
        exit_code_ = 0;
    }
    return exit_code_;
}

} // namespace kv
