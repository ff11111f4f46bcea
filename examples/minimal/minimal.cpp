// minimal-cpp DATA_DIR CONTROL_SOCKET: the smallest real service on handoff.hpp (C++17), to copy as
// a start: a durable counter on the supervisor's TCP listener "counter" (see README.md).
#include "handoff.hpp"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <stdexcept>
#include <string>
#include <system_error>
#include <vector>

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

constexpr std::size_t max_line = 64;

[[noreturn]] static void fail(const char *what) { throw std::system_error(errno, std::generic_category(), what); }

// The log: one line per INCR, each fdatasynced before it is answered.
struct counter_log {
    std::string dir;
    handoff::unique_fd fd;
    std::uint64_t value = 0;

    // Cold start, successor, resume: open it and count its whole lines.
    void open() {
        fd.reset(::open((dir + "/counter.log").c_str(), O_RDWR | O_APPEND | O_CREAT | O_CLOEXEC, 0644));
        handoff::unique_fd d{::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC)};
        if (!fd || !d || fsync(d.get()) != 0) // a new file's name is durable too
            fail("opening the log");
        std::ifstream in(dir + "/counter.log", std::ios::binary);
        value = static_cast<std::uint64_t>(std::count(std::istreambuf_iterator<char>(in), {}, '\n'));
        if (in.bad())
            fail("reading the log");
    }
    std::string incr() {
        std::string record = std::to_string(++value) + "\n"; // the record is the answer
        ssize_t written = write(fd.get(), record.data(), record.size());
        if (written >= 0 && static_cast<std::size_t>(written) < record.size())
            throw std::runtime_error("writing the log: a short write (disk full?)");
        if (written < 0 || fdatasync(fd.get()) != 0) // what reached the disk is unknown: never answer
            fail("writing the log");
        return record;
    }
};

struct conn { handoff::unique_fd fd; std::string in; };

static std::string answer(counter_log &log, const std::string &line) {
    if (line == "INCR")
        return log.incr();
    if (line == "GET")
        return std::to_string(log.value) + "\n";
    if (line == "PING")
        return "PONG " + std::to_string(getpid()) + " cpp\n";
    return "ERR unknown command\n";
}

// Answer every whole line the (readable) connection has sent; false: close it.
static bool serve_conn(counter_log &log, conn &c) {
    char buf[max_line];
    ssize_t n = recv(c.fd.get(), buf, max_line - c.in.size(), MSG_DONTWAIT);
    if (n <= 0)
        return false;
    c.in.append(buf, static_cast<std::size_t>(n));
    std::string out;
    for (std::size_t nl; (nl = c.in.find('\n')) != std::string::npos; c.in.erase(0, nl + 1))
        out += answer(log, c.in.substr(0, nl > 0 && c.in[nl - 1] == '\r' ? nl - 1 : nl));
    // Non-blocking: a client that lets its answers pile up unread is dropped; so is an overlong line.
    return send(c.fd.get(), out.data(), out.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(out.size()) &&
           c.in.size() < max_line;
}

// The service's own loop: the handoff's requests, the listener, the connections.
static int serve(handoff::incumbent &inc, int listener, counter_log &log) {
    std::vector<conn> conns;
    for (bool accepting = true;;) {
        std::vector<pollfd> fds{{inc.request_fd(), POLLIN, 0}, {accepting ? listener : -1, POLLIN, 0}};
        for (const conn &c : conns)
            fds.push_back({c.fd.get(), POLLIN, 0});
        if (poll(fds.data(), fds.size(), -1) < 0 && errno != EINTR)
            fail("poll");
        for (std::size_t i = conns.size(); i-- > 0;)
            if (fds[2 + i].revents && !serve_conn(log, conns[i]))
                conns.erase(conns.begin() + static_cast<std::ptrdiff_t>(i)); // closes it
        if (fds[1].revents) { // poll, then accept: the listener's O_NONBLOCK is shared and either way works
            int fd = accept4(listener, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
            if (fd >= 0) // failures are skipped (kv-cpp backs off when out of descriptors)
                conns.push_back({handoff::unique_fd{fd}, {}});
        }
        if (!(fds[0].revents & POLLIN))
            continue;
        handoff::request req = inc.take_request(); // destroyed uncompleted (an exception): failed
        switch (req.kind()) {
        case handoff::request_kind::drain: // stop accepting (clients wait in the queue); close
            accepting = false;
            conns.clear(); // closed: what they had sent by the poll is answered
            break;
        case handoff::request_kind::seal: // every record is synced already: close the log
            log.fd.reset();
            break;
        case handoff::request_kind::resume: // rolled back: the library holds the lock again
            if (!log.fd)
                log.open();
            accepting = true;
            break;
        case handoff::request_kind::ended: // committed (the successor serves) or superseded
            return inc.wait_for(std::chrono::milliseconds(0)) == handoff::serve_outcome::stopped;
        case handoff::request_kind::none:
            continue;
        }
        req.complete();
    }
}

int main(int argc, char **argv) {
    try {
        if (argc != 3)
            throw std::invalid_argument("usage: minimal-cpp DATA_DIR CONTROL_SOCKET");
        handoff::inherited inherited = handoff::inherited::detect();
        handoff::successor successor;
        if (inherited.is_successor()) { // HANDOFF_ROLE=successor
            successor = handoff::successor::create(inherited);
            successor.handshake("minimal-cpp");
            successor.start_heartbeats(); // Begin to Ready: a slow start is not a dead one
            successor.wait_for_begin(std::chrono::seconds(60)); // meanwhile the incumbent drains, seals: wait
        }
        handoff::unique_fd listener{successor ? successor.take_listener("counter", handoff::listener_kind::tcp)
                                              : inherited.take_listener("counter", handoff::listener_kind::tcp)};
        handoff::lock lock = handoff::lock::acquire_with_retry(argv[1], std::chrono::seconds(5));
        counter_log log{argv[1], {}, 0};
        log.open();
        handoff::incumbent inc = successor ? successor.announce_ready(argv[2], std::move(lock))
                                           : handoff::incumbent::bind(argv[2], std::move(lock));
        inc.start_loop();
        return serve(inc, listener.get(), log); // the destructors free the rest; the seal closed the log
    } catch (const std::exception &e) { // before Ready the supervisor rolls back, after it restarts it
        std::fprintf(stderr, "minimal-cpp[%d]: %s\n", static_cast<int>(getpid()), e.what());
        return 1;
    }
}
