// The server: one poll(2) loop owning the incumbent's request descriptor, the
// listener and the connections, the log and the table (examples/README.md).
#ifndef KV_CPP_SERVER_HPP
#define KV_CPP_SERVER_HPP

#include <cstddef>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <handoff.hpp>

#include "connection.hpp"
#include "store.hpp"

namespace kv {

struct options {
    std::string data_dir;
    std::string control_socket;
    std::optional<std::string> listen;
    std::size_t max_conns = 1000; // more wait in the listener's queue
    bool moves = true;            // hand connections over / adopt them (v2)
    bool exit_after_adopt = false;
    bool verbose = false;
};

class server {
public:
    explicit server(options o);
    server(const server &) = delete;
    server &operator=(const server &) = delete;

    // Start-up (startup.cpp); each throws with the reason on failure.
    /// Cold start: listener, lock, log, control socket.
    void start_cold(handoff::inherited inherited);
    /// Successor: preload, handshake, Begin, then listener, lock, the rest of
    /// the log, the moved connections, Ready. Before Begin nothing in the data
    /// dir is written.
    void start_successor(handoff::inherited inherited);

    /// Serve until serving ends or `signal_fd` is readable; the exit status.
    int serve(int signal_fd);

private:
    // The handoff's requests, carried out by the loop (server.cpp).
    void take_requests();
    void begin_drain(handoff::request r);
    void drain_step();
    void move_connections();
    void seal(handoff::request r);
    void resume(handoff::request r);
    void ended();
    void open_log(std::uint64_t generation);

    // Connections.
    void accept_some();
    void reap();
    std::size_t live_connections() const;
    void adopt(handoff::successor &succ, const handoff::lock &held);

    const options opts_;
    const answerer answer_;
    // Declared before what it hands out (requests), destroyed after.
    handoff::incumbent inc_;
    store store_;
    handoff::unique_fd listener_;
    std::string listen_url_;
    std::vector<std::unique_ptr<connection>> conns_;
    bool accepting_ = false;
    // Out of descriptors (EMFILE and the like): the listener is not polled
    // until then, so a full descriptor table is not a busy loop.
    clock::time_point accept_resume_at_{};
    bool accept_starved_ = false; // logged once per episode
    handoff::request drain_;      // the drain in progress, if pending()
    clock::time_point drain_deadline_{};
    bool finished_ = false; // serving ended (committed/superseded): step down
    bool sealed_ = false;   // the log is fsynced and its descriptor kept for a resume
    int exit_code_ = 0;
};

} // namespace kv

#endif
