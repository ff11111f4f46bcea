// kv-cpp: a key-value server over TCP that hands itself off with libhandoff,
// through the C++ layer include/handoff.hpp.
//
//   kv-cpp --data-dir DIR --control-socket PATH [--listen tcp://HOST:PORT]
//          [--max-conns N] [--no-moves] [--exit-after-adopt] [--verbose]
//
// The protocol, the log format and the lifecycle are in examples/README.md;
// it keeps that contract exactly as kv-c, kv.py and kv-go do, so any of them
// can take over from any other.
#include <cerrno>
#include <csignal>
#include <cstring>
#include <iostream>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>

#include <fcntl.h>
#include <unistd.h>

#include "say.hpp"
#include "server.hpp"

namespace {

constexpr const char *usage_line =
    "usage: kv-cpp --data-dir DIR --control-socket PATH [--listen tcp://HOST:PORT] "
    "[--max-conns N] [--no-moves] [--exit-after-adopt] [--verbose]";

struct usage_error : std::runtime_error {
    using std::runtime_error::runtime_error;
};

std::size_t parse_max_conns(const std::string &text) {
    std::size_t used = 0;
    unsigned long n = 0;
    try {
        if (!text.empty() && text[0] != '-' && text[0] != '+')
            n = std::stoul(text, &used, 10);
    } catch (const std::exception &) {
        used = 0;
    }
    if (used == 0 || used != text.size() || n < 1 || n > 1000000)
        throw usage_error("--max-conns " + text + ": expected 1 to 1000000");
    return n;
}

// `--opt value` and `--opt=value` alike; nullopt for --help.
std::optional<kv::options> parse_args(int argc, char **argv) {
    kv::options o;
    std::optional<std::string> data_dir, control_socket;
    for (int i = 1; i < argc; i++) {
        std::string arg = argv[i];
        if (arg == "--help" || arg == "-h")
            return std::nullopt;
        if (arg == "--verbose" || arg == "--no-moves" || arg == "--exit-after-adopt") {
            o.verbose = o.verbose || arg == "--verbose";
            o.moves = o.moves && arg != "--no-moves";
            o.exit_after_adopt = o.exit_after_adopt || arg == "--exit-after-adopt";
            continue;
        }
        std::string name = arg, value;
        if (auto eq = arg.find('='); eq != std::string::npos) {
            name = arg.substr(0, eq);
            value = arg.substr(eq + 1);
        } else if (name == "--data-dir" || name == "--control-socket" || name == "--listen" ||
                   name == "--max-conns") {
            if (i + 1 >= argc)
                throw usage_error(arg + " needs a value");
            value = argv[++i];
        }
        if (name == "--data-dir")
            data_dir = value;
        else if (name == "--control-socket")
            control_socket = value;
        else if (name == "--listen")
            o.listen = value;
        else if (name == "--max-conns")
            o.max_conns = parse_max_conns(value);
        else
            throw usage_error("unknown argument " + arg);
    }
    if (!data_dir || !control_socket)
        throw usage_error("--data-dir and --control-socket are required");
    o.data_dir = *data_dir;
    o.control_socket = *control_socket;
    return o;
}

// SIGTERM and SIGINT, once serving, write to a pipe the loop polls.
int signal_write_end = -1;

void on_signal(int sig) {
    int saved = errno;
    unsigned char b = static_cast<unsigned char>(sig);
    if (::write(signal_write_end, &b, 1) < 0) {
        // full pipe: a signal is already pending
    }
    errno = saved;
}

struct signal_pipe {
    handoff::unique_fd read_end, write_end;

    signal_pipe() {
        int fds[2];
        if (pipe2(fds, O_NONBLOCK | O_CLOEXEC) != 0)
            throw std::runtime_error(std::string("cannot install signal handlers: ") + std::strerror(errno));
        read_end.reset(fds[0]);
        write_end.reset(fds[1]);
        signal_write_end = fds[1];
        struct sigaction sa {};
        sa.sa_handler = on_signal;
        sigemptyset(&sa.sa_mask);
        sa.sa_flags = SA_RESTART;
        if (sigaction(SIGTERM, &sa, nullptr) != 0 || sigaction(SIGINT, &sa, nullptr) != 0)
            throw std::runtime_error(std::string("cannot install signal handlers: ") + std::strerror(errno));
    }
    ~signal_pipe() {
        std::signal(SIGTERM, SIG_DFL);
        std::signal(SIGINT, SIG_DFL);
        signal_write_end = -1;
    }
};

int run(const kv::options &o) {
    // The library's events as "kv-cpp[pid] handoff <level>: <message>".
    handoff::log_route route([verbose = o.verbose](handoff::log_level level, std::string_view message) {
        static const char *const names[] = {"?", "error", "warn", "info", "debug"};
        if (level > handoff::log_level::info && !verbose)
            return;
        auto at = static_cast<std::uint32_t>(level);
        kv::say("handoff ", names[at <= 4 ? at : 0], ": ", message);
    });
    kv::server server(o);
    handoff::inherited inherited = handoff::inherited::detect();
    if (inherited.is_successor())
        server.start_successor(std::move(inherited));
    else
        server.start_cold(std::move(inherited));
    // From here on SIGTERM/SIGINT stop the service cleanly (before, the
    // default action is right: a successor killed before Ready leaves
    // nothing behind).
    signal_pipe signals;
    int status = server.serve(signals.read_end.get());
    kv::say("exiting with status ", status);
    return status;
}

} // namespace

int main(int argc, char **argv) {
    std::optional<kv::options> o;
    try {
        o = parse_args(argc, argv);
    } catch (const usage_error &e) {
        std::cerr << "kv-cpp: " << e.what() << '\n' << usage_line << '\n';
        return 2;
    }
    if (!o) {
        std::cout << usage_line << '\n';
        return 0;
    }
    std::signal(SIGPIPE, SIG_IGN);
    try {
        return run(*o);
    } catch (const handoff::error &e) {
        kv::say("error: ", e.what(), " (", e.status_name(), ")");
    } catch (const std::exception &e) {
        kv::say("error: ", e.what());
    }
    return 1;
}
