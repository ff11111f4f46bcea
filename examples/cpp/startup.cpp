// The two ways in (examples/README.md, Lifecycle): a cold start and a
// successor's start. Each throws with the reason; what was taken is released
// by the owners' destructors.
#include <chrono>
#include <stdexcept>

#include <fcntl.h>

#include "net.hpp"
#include "say.hpp"
#include "server.hpp"

namespace kv {

namespace {

constexpr auto begin_timeout = std::chrono::seconds(60);
constexpr auto successor_lock_wait = std::chrono::milliseconds(5000);
constexpr auto cold_lock_wait = std::chrono::milliseconds(2000);

// A failed library call, named for the log.
[[noreturn]] void failed(const std::string &what, const handoff::error &e) {
    throw std::runtime_error(what + ": " + e.what() + " (" + e.status_name() + ")");
}

handoff::lock cold_lock(const std::string &data_dir) {
    try {
        return handoff::lock::acquire(data_dir);
    } catch (const handoff::error &e) {
        if (e.status() != HANDOFF_ERR_LOCK_HELD)
            failed("cannot lock the data dir", e);
        say("data dir ", data_dir, " is locked (", e.what(), "); retrying for ", cold_lock_wait.count(), " ms");
    }
    try {
        return handoff::lock::acquire_with_retry(data_dir, cold_lock_wait);
    } catch (const handoff::error &e) {
        failed("cannot lock the data dir", e);
    }
}

bool inherited_kv(const handoff::inherited &inherited) {
    for (std::size_t i = 0; i < inherited.listener_count(); i++)
        if (inherited.listener_name(i) == "kv")
            return true;
    return false;
}

handoff::message ready_message(const std::string &url, std::uint64_t records) {
    handoff::message ready(handoff::message_kind::ready);
    ready.push_bytes(HANDOFF_FIELD_LISTENING_ON, url);
    ready.set_bool(HANDOFF_FIELD_HEALTHZ_OK, true);
    ready.push_uint(HANDOFF_FIELD_ADVERTISED_REVISION_PER_SHARD, records);
    return ready;
}

} // namespace

void server::start_cold(handoff::inherited inherited) {
    // The listener named kv from the supervisor, else --listen.
    if (inherited_kv(inherited))
        listener_.reset(inherited.take_listener("kv", handoff::listener_kind::tcp));
    else if (opts_.listen)
        listener_ = bind_listener(*opts_.listen);
    else
        throw std::runtime_error("no listener named kv was inherited and --listen was not given");
    inherited = handoff::inherited(); // closes the listeners not taken
    handoff::lock held = cold_lock(opts_.data_dir);
    open_log(held.generation());
    inc_ = handoff::incumbent::bind(opts_.control_socket, std::move(held));
    listen_url_ = listener_url(listener_.get());
    say("cold start on ", listen_url_, ": generation ", inc_.generation(), ", ", store_.records(), " record(s)");
}

// What the incumbent moved, taken with the lock held; served from Ready on.
void server::adopt(handoff::successor &succ, const handoff::lock &held) {
    handoff::items moved = succ.adopt(held);
    for (std::size_t i = 0; i < moved.size(); i++) {
        auto unread = moved.bytes(i, handoff::item_part::unread);
        auto unwritten = moved.bytes(i, handoff::item_part::unwritten);
        auto state = moved.bytes(i, handoff::item_part::state);
        if (moved.kind(i) != handoff::item_kind::connection || !unread || !unwritten || !state)
            throw std::runtime_error("moved item " + std::to_string(i) + " is not a connection this service can take");
        handoff::unique_fd fd(moved.take_fd(i));
        int flags = fcntl(fd.get(), F_GETFL);
        if (flags >= 0 && !(flags & O_NONBLOCK))
            fcntl(fd.get(), F_SETFL, flags | O_NONBLOCK);
        auto c = std::make_unique<connection>(std::move(fd));
        if (!c->restore(*unread, *unwritten, !state->empty() && state->data[0] != 0))
            throw std::runtime_error("moved item " + std::to_string(i) + " is not a connection this service can take");
        conns_.push_back(std::move(c));
    }
    if (moved.size() > 0)
        say("adopted ", moved.size(), " connection(s)");
}

void server::start_successor(handoff::inherited inherited) {
    handoff::successor succ = handoff::successor::create(inherited);
    inherited = handoff::inherited();
    // Replayed while the incumbent still serves, so that after the seal only
    // what was appended since is left: nobody is accepted between the drain
    // and Ready. Before the handshake: the supervisor drains the incumbent
    // as soon as our Hello arrives.
    store_.preload(opts_.data_dir);
    succ.set_adopts_descriptors(opts_.moves);
    try {
        succ.handshake(build_id);
    } catch (const handoff::error &e) {
        failed("handshake with the supervisor", e);
    }
    // Before Begin, so that its thread is not started in the blackout; it
    // beats from Begin to Ready.
    succ.start_heartbeats();
    try {
        succ.wait_for_begin(begin_timeout);
    } catch (const handoff::error &e) {
        // ABORTED, PEER_CLOSED or TIMEOUT: the handoff is over; leave the
        // data dir alone.
        failed("the handoff did not begin", e);
    }
    listener_.reset(succ.take_listener("kv", handoff::listener_kind::tcp));
    // Nothing is written before the lock is held.
    handoff::lock held;
    try {
        held = handoff::lock::acquire_with_retry(opts_.data_dir, successor_lock_wait);
    } catch (const handoff::error &e) {
        failed("cannot lock the data dir", e);
    }
    open_log(held.generation());
    adopt(succ, held);
    if (opts_.exit_after_adopt)
        throw std::runtime_error("exiting after adopting, as asked (--exit-after-adopt)");
    listen_url_ = listener_url(listener_.get());
    handoff::message ready = ready_message(listen_url_, store_.records());
    inc_ = succ.announce_ready(opts_.control_socket, std::move(held), &ready);
    say("took over on ", listen_url_, ": generation ", inc_.generation(), ", ", store_.records(), " record(s)");
}

} // namespace kv
