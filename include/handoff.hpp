// handoff.hpp: a header-only C++17 layer over libhandoff's C ABI (handoff.h).
//
// Every fallible call throws handoff::error (status + the library's message);
// every handle is a move-only owner that frees its C object exactly once.
// Ownership follows handoff.h, restated on each function below. Nothing here
// adds state the C library does not have: .get() gives the C handle for any
// function this layer does not wrap yet.
//
// Covered: errors, version, lock, inherited, successor, items, incumbent
// (loop-driven requests and the callback form), messages, the frame reader,
// the log callback, and unique_fd for the descriptors the library hands
// over. Not yet: supervisor, spawn spec, outcome, journal.
#ifndef HANDOFF_HPP
#define HANDOFF_HPP

#include "handoff.h"

#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <exception>
#include <functional>
#include <limits>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <unistd.h>

namespace handoff {

// ---- errors -----------------------------------------------------------------

/// A failed call: the C status and the library's message (copied out of the
/// handoff_error, which is freed).
class error : public std::runtime_error {
public:
    error(handoff_status status, const std::string &message)
        : std::runtime_error(message), status_(status) {}
    handoff_status status() const noexcept { return status_; }
    /// "HANDOFF_ERR_IO" etc.; "HANDOFF_UNKNOWN" for a value the library
    /// does not define.
    const char *status_name() const noexcept {
        const char *n = handoff_status_name(static_cast<std::int32_t>(status_));
        return n ? n : "HANDOFF_UNKNOWN";
    }

private:
    handoff_status status_;
};

namespace detail {

struct error_deleter {
    void operator()(handoff_error *e) const noexcept { handoff_error_free(e); }
};

/// The one place a status becomes a throw: takes ownership of `err` (may be
/// NULL) and frees it whatever happens.
[[noreturn]] inline void throw_status(handoff_status status, handoff_error *err) {
    std::unique_ptr<handoff_error, error_deleter> owned(err);
    std::string message = owned ? handoff_error_message(owned.get()) : "";
    if (message.empty()) {
        const char *n = handoff_status_name(static_cast<std::int32_t>(status));
        message = n ? n : "unknown handoff status";
    }
    throw error(status, message);
}

/// Run `f(handoff_error **)`, a C call returning handoff_status, and throw on
/// failure.
template <class F>
inline void call(F &&f) {
    handoff_error *err = nullptr;
    handoff_status st = std::forward<F>(f)(&err);
    if (st != HANDOFF_OK)
        throw_status(st, err);
    handoff_error_free(err);
}

/// A NUL-terminated copy of `s`; a string with a NUL inside would be cut
/// short by the C side, so it is refused.
inline std::string c_str(std::string_view s) {
    if (s.find('\0') != std::string_view::npos)
        throw error(HANDOFF_ERR_INVALID_ARGUMENT, "string argument contains a NUL byte");
    return std::string(s);
}

template <class Rep, class Period>
inline std::uint32_t to_ms_u32(std::chrono::duration<Rep, Period> d) {
    auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(d).count();
    if (ms < 0)
        throw error(HANDOFF_ERR_INVALID_ARGUMENT, "negative duration");
    if (static_cast<unsigned long long>(ms) > std::numeric_limits<std::uint32_t>::max())
        return std::numeric_limits<std::uint32_t>::max();
    return static_cast<std::uint32_t>(ms);
}

/// Move-only owner of a C object freed by `Free` (NULL-safe in the C ABI).
template <class T, void (*Free)(T *)>
class unique_handle {
public:
    unique_handle() noexcept = default;
    explicit unique_handle(T *p) noexcept : p_(p) {}
    unique_handle(const unique_handle &) = delete;
    unique_handle &operator=(const unique_handle &) = delete;
    unique_handle(unique_handle &&o) noexcept : p_(std::exchange(o.p_, nullptr)) {}
    unique_handle &operator=(unique_handle &&o) noexcept {
        if (this != &o)
            reset(o.release());
        return *this;
    }
    ~unique_handle() { reset(); }
    T *get() const noexcept { return p_; }
    T *release() noexcept { return std::exchange(p_, nullptr); }
    void reset(T *p = nullptr) noexcept {
        T *old = std::exchange(p_, p);
        if (old)
            Free(old);
    }
    explicit operator bool() const noexcept { return p_ != nullptr; }

private:
    T *p_ = nullptr;
};

} // namespace detail

/// The library's version ("0.1.0"); static.
inline std::string_view version() noexcept { return handoff_version(); }

// ---- descriptors ----------------------------------------------------------------

/// Owns one file descriptor and closes it once. The library hands descriptors
/// over as plain ints (listeners, adopted connections): wrap them at once so
/// an exception on the way cannot leak them.
class unique_fd {
public:
    unique_fd() noexcept = default;
    explicit unique_fd(int fd) noexcept : fd_(fd) {}
    unique_fd(const unique_fd &) = delete;
    unique_fd &operator=(const unique_fd &) = delete;
    unique_fd(unique_fd &&o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
    unique_fd &operator=(unique_fd &&o) noexcept {
        if (this != &o)
            reset(o.release());
        return *this;
    }
    ~unique_fd() { reset(); }

    int get() const noexcept { return fd_; }
    /// The caller owns it from now on.
    int release() noexcept { return std::exchange(fd_, -1); }
    /// Close the one held (if any), then hold `fd`. close() is not retried on
    /// EINTR: on Linux the descriptor is gone either way.
    void reset(int fd = -1) noexcept {
        int old = std::exchange(fd_, fd);
        if (old >= 0)
            ::close(old);
    }
    explicit operator bool() const noexcept { return fd_ >= 0; }

private:
    int fd_ = -1;
};

// ---- the library's log -----------------------------------------------------------

enum class log_level : std::uint32_t {
    error = HANDOFF_LOG_ERROR,
    warn = HANDOFF_LOG_WARN,
    info = HANDOFF_LOG_INFO,
    debug = HANDOFF_LOG_DEBUG,
};

/// While it lives, every library event goes to its callable, which may run on
/// any of the library's threads, concurrently (so it must be thread-safe),
/// and must not create or destroy a log_route. The destructor restores the
/// default (warnings and errors on stderr); once it returns, the callable is
/// no longer running (the library swaps its logger under a lock). One at a
/// time: a newer route replaces an older one, whose destructor would then
/// restore the default.
class log_route {
public:
    using sink = std::function<void(log_level, std::string_view)>;

    explicit log_route(sink s) : sink_(std::make_unique<sink>(std::move(s))) {
        if (!*sink_)
            throw error(HANDOFF_ERR_NULL_POINTER, "handoff::log_route needs a callable");
        detail::call([&](handoff_error **e) { return handoff_set_log_callback(&forward, sink_.get(), e); });
    }
    log_route(const log_route &) = delete;
    log_route &operator=(const log_route &) = delete;
    ~log_route() { handoff_set_log_callback(nullptr, nullptr, nullptr); }

private:
    // A log line cannot fail: what the callable throws is dropped here rather
    // than unwound into the library.
    static void forward(void *userdata, std::uint32_t level, const char *message) noexcept {
        try {
            (*static_cast<sink *>(userdata))(static_cast<log_level>(level), message ? message : "");
        } catch (...) {
        }
    }

    std::unique_ptr<sink> sink_;
};

// ---- bytes and enums ---------------------------------------------------------

/// A borrowed run of bytes (pointer + size); never owns.
struct byte_view {
    const std::uint8_t *data = nullptr;
    std::size_t size = 0;

    constexpr byte_view() noexcept = default;
    constexpr byte_view(const std::uint8_t *d, std::size_t n) noexcept : data(d), size(n) {}
    byte_view(std::string_view s) noexcept
        : data(reinterpret_cast<const std::uint8_t *>(s.data())), size(s.size()) {}
    /// A NUL-terminated string (NULL: empty).
    byte_view(const char *s) noexcept : byte_view(s ? std::string_view(s) : std::string_view()) {}
    byte_view(const std::string &s) noexcept : byte_view(std::string_view(s)) {}
    byte_view(const std::vector<std::uint8_t> &v) noexcept : data(v.data()), size(v.size()) {}
    template <std::size_t N>
    byte_view(const std::array<std::uint8_t, N> &a) noexcept : data(a.data()), size(N) {}

    const std::uint8_t *begin() const noexcept { return data; }
    const std::uint8_t *end() const noexcept { return data + size; }
    bool empty() const noexcept { return size == 0; }
    std::string_view as_string() const noexcept {
        return {reinterpret_cast<const char *>(data), size};
    }
    std::vector<std::uint8_t> to_vector() const { return {begin(), end()}; }
};

enum class request_kind : std::uint32_t {
    none = HANDOFF_REQUEST_NONE,
    drain = HANDOFF_REQUEST_DRAIN,
    seal = HANDOFF_REQUEST_SEAL,
    resume = HANDOFF_REQUEST_RESUME,
    ended = HANDOFF_REQUEST_ENDED,
};

enum class listener_kind : std::uint32_t {
    tcp = HANDOFF_LISTENER_TCP,
    udp = HANDOFF_LISTENER_UDP,
    unix_stream = HANDOFF_LISTENER_UNIX,
};

enum class item_kind : std::uint32_t {
    connection = HANDOFF_ITEM_CONNECTION,
    descriptor = HANDOFF_ITEM_DESCRIPTOR,
    invalid = UINT32_MAX,
};

enum class item_part : std::uint32_t {
    name = HANDOFF_ITEM_PART_NAME,
    unread = HANDOFF_ITEM_PART_UNREAD,
    unwritten = HANDOFF_ITEM_PART_UNWRITTEN,
    state = HANDOFF_ITEM_PART_STATE,
};

enum class serve_outcome : std::uint32_t {
    committed = HANDOFF_SERVE_COMMITTED,
    superseded = HANDOFF_SERVE_SUPERSEDED,
    stopped = HANDOFF_SERVE_STOPPED,
};

enum class message_kind : std::uint32_t {
    hello = HANDOFF_MSG_HELLO,
    hello_ack = HANDOFF_MSG_HELLO_ACK,
    prepare_handoff = HANDOFF_MSG_PREPARE_HANDOFF,
    drained = HANDOFF_MSG_DRAINED,
    seal_request = HANDOFF_MSG_SEAL_REQUEST,
    seal_progress = HANDOFF_MSG_SEAL_PROGRESS,
    seal_complete = HANDOFF_MSG_SEAL_COMPLETE,
    seal_failed = HANDOFF_MSG_SEAL_FAILED,
    begin = HANDOFF_MSG_BEGIN,
    ready = HANDOFF_MSG_READY,
    commit = HANDOFF_MSG_COMMIT,
    abort = HANDOFF_MSG_ABORT,
    resume_after_abort = HANDOFF_MSG_RESUME_AFTER_ABORT,
    heartbeat = HANDOFF_MSG_HEARTBEAT,
    capacity = HANDOFF_MSG_CAPACITY,
    transfer = HANDOFF_MSG_TRANSFER,
    moving = HANDOFF_MSG_MOVING,
    item = HANDOFF_MSG_ITEM,
    adopted = HANDOFF_MSG_ADOPTED,
    invalid = HANDOFF_MSG_INVALID,
};

// ---- lock ---------------------------------------------------------------------

/// A held data-dir lock. Owns its handoff_lock (freed, and so released, by
/// the destructor). After it moves into an incumbent (incumbent::bind,
/// successor::announce_ready) this object is empty.
class lock {
public:
    lock() noexcept = default;
    /// Adopt a C handle (this object frees it).
    explicit lock(handoff_lock *p) noexcept : h_(p) {}

    /// Take the lock without waiting; held by a live process: error
    /// HANDOFF_ERR_LOCK_HELD.
    static lock acquire(std::string_view data_dir) {
        auto dir = detail::c_str(data_dir);
        handoff_lock *out = nullptr;
        detail::call([&](handoff_error **e) { return handoff_lock_acquire(dir.c_str(), &out, e); });
        return lock(out);
    }
    /// Retry every ~20 ms for up to `timeout` (blocks).
    template <class Rep, class Period>
    static lock acquire_with_retry(std::string_view data_dir, std::chrono::duration<Rep, Period> timeout) {
        auto dir = detail::c_str(data_dir);
        auto ms = detail::to_ms_u32(timeout);
        handoff_lock *out = nullptr;
        detail::call([&](handoff_error **e) {
            return handoff_lock_acquire_with_retry(dir.c_str(), ms, &out, e);
        });
        return lock(out);
    }

    struct holder_info {
        bool held;
        std::uint32_t pid; ///< 0 when not held or no live holder recorded
    };
    /// Who holds the lock on `data_dir`, without taking it.
    static holder_info holder(std::string_view data_dir) {
        auto dir = detail::c_str(data_dir);
        bool held = false;
        std::uint32_t pid = 0;
        detail::call([&](handoff_error **e) { return handoff_lock_holder(dir.c_str(), &held, &pid, e); });
        return {held, pid};
    }

    /// The fencing token; 0 for an empty handle (ask the incumbent instead).
    std::uint64_t generation() const noexcept { return handoff_lock_generation(h_.get()); }

    /// Release now, reporting errors. The handle is consumed whatever the
    /// outcome (this object is empty afterwards, even when it throws).
    void unlock() {
        handoff_lock *p = h_.release();
        if (!p)
            return;
        detail::call([&](handoff_error **e) { return handoff_lock_release(p, e); });
    }

    handoff_lock *get() const noexcept { return h_.get(); }
    handoff_lock *release() noexcept { return h_.release(); }
    explicit operator bool() const noexcept { return static_cast<bool>(h_); }

private:
    detail::unique_handle<handoff_lock, handoff_lock_free> h_;
};

// ---- message and frame reader -------------------------------------------------

/// One protocol message. Owns its handoff_message.
class message {
public:
    message() noexcept = default;
    explicit message(handoff_message *p) noexcept : h_(p) {}

    /// A new message of `kind`, every field zero or empty.
    explicit message(message_kind kind) {
        handoff_message *out = nullptr;
        detail::call([&](handoff_error **e) {
            return handoff_message_new(static_cast<std::uint32_t>(kind), &out, e);
        });
        h_.reset(out);
    }

    struct decoded;
    /// Decode the frame at the start of `buf`. An incomplete frame throws
    /// HANDOFF_ERR_INCOMPLETE (use `bytes_needed` to learn how many).
    static decoded decode(byte_view buf);

    /// For an incomplete frame: how many bytes the whole frame needs; 0
    /// when `buf` holds a whole frame (or cannot tell, e.g. malformed).
    static std::size_t bytes_needed(byte_view buf) noexcept {
        handoff_message *out = nullptr;
        std::size_t consumed = 0;
        handoff_status st = handoff_message_decode(buf.data, buf.size, &out, &consumed, nullptr);
        handoff_message_free(out);
        return st == HANDOFF_ERR_INCOMPLETE ? consumed : 0;
    }

    /// The whole frame, freshly allocated.
    std::vector<std::uint8_t> encode() const {
        std::size_t needed = 0;
        handoff_error *err = nullptr;
        handoff_status st = handoff_message_encode(h_.get(), nullptr, 0, &needed, &err);
        if (st != HANDOFF_ERR_BUFFER_TOO_SMALL && st != HANDOFF_OK)
            detail::throw_status(st, err);
        handoff_error_free(err);
        std::vector<std::uint8_t> out(needed);
        detail::call([&](handoff_error **e) {
            return handoff_message_encode(h_.get(), out.data(), out.size(), &needed, e);
        });
        out.resize(needed);
        return out;
    }

    message_kind kind() const noexcept { return static_cast<message_kind>(handoff_message_kind(h_.get())); }
    /// "SealComplete"; empty for an unknown kind.
    static std::string_view kind_name(message_kind k) noexcept {
        const char *n = handoff_message_kind_name(static_cast<std::uint32_t>(k));
        return n ? n : "";
    }
    std::uint16_t proto_version() const noexcept { return handoff_message_proto_version(h_.get()); }
    void set_proto_version(std::uint16_t v) {
        detail::call([&](handoff_error **e) { return handoff_message_set_proto_version(h_.get(), v, e); });
    }

    // Fields are HANDOFF_FIELD_* ids.
    std::uint64_t get_uint(std::uint32_t field) const {
        std::uint64_t v = 0;
        detail::call([&](handoff_error **e) { return handoff_message_get_uint(h_.get(), field, &v, e); });
        return v;
    }
    void set_uint(std::uint32_t field, std::uint64_t v) {
        detail::call([&](handoff_error **e) { return handoff_message_set_uint(h_.get(), field, v, e); });
    }
    bool get_bool(std::uint32_t field) const {
        bool v = false;
        detail::call([&](handoff_error **e) { return handoff_message_get_bool(h_.get(), field, &v, e); });
        return v;
    }
    void set_bool(std::uint32_t field, bool v) {
        detail::call([&](handoff_error **e) { return handoff_message_set_bool(h_.get(), field, v, e); });
    }
    /// Borrowed from the message: valid until it is changed or freed.
    byte_view get_bytes(std::uint32_t field) const {
        const std::uint8_t *d = nullptr;
        std::size_t n = 0;
        detail::call([&](handoff_error **e) { return handoff_message_get_bytes(h_.get(), field, &d, &n, e); });
        return {d, n};
    }
    /// Copied in.
    void set_bytes(std::uint32_t field, byte_view v) {
        detail::call([&](handoff_error **e) {
            return handoff_message_set_bytes(h_.get(), field, v.data, v.size, e);
        });
    }
    std::size_t list_len(std::uint32_t field) const {
        std::size_t n = 0;
        detail::call([&](handoff_error **e) { return handoff_message_get_list_len(h_.get(), field, &n, e); });
        return n;
    }
    std::uint64_t list_uint(std::uint32_t field, std::size_t i) const {
        std::uint64_t v = 0;
        detail::call([&](handoff_error **e) { return handoff_message_get_list_uint(h_.get(), field, i, &v, e); });
        return v;
    }
    /// Borrowed as get_bytes.
    byte_view list_bytes(std::uint32_t field, std::size_t i) const {
        const std::uint8_t *d = nullptr;
        std::size_t n = 0;
        detail::call([&](handoff_error **e) {
            return handoff_message_get_list_bytes(h_.get(), field, i, &d, &n, e);
        });
        return {d, n};
    }
    void push_uint(std::uint32_t field, std::uint64_t v) {
        detail::call([&](handoff_error **e) { return handoff_message_push_uint(h_.get(), field, v, e); });
    }
    void push_bytes(std::uint32_t field, byte_view v) {
        detail::call([&](handoff_error **e) {
            return handoff_message_push_bytes(h_.get(), field, v.data, v.size, e);
        });
    }
    void clear_list(std::uint32_t field) {
        detail::call([&](handoff_error **e) { return handoff_message_clear_list(h_.get(), field, e); });
    }

    handoff_message *get() const noexcept { return h_.get(); }
    handoff_message *release() noexcept { return h_.release(); }
    explicit operator bool() const noexcept { return static_cast<bool>(h_); }

private:
    detail::unique_handle<handoff_message, handoff_message_free> h_;
};

struct message::decoded {
    handoff::message message;
    std::size_t consumed; ///< the frame's size; bytes after it were not read
};

inline message::decoded message::decode(byte_view buf) {
    handoff_message *out = nullptr;
    std::size_t consumed = 0;
    detail::call([&](handoff_error **e) { return handoff_message_decode(buf.data, buf.size, &out, &consumed, e); });
    return decoded{message(out), consumed};
}

/// Buffers partial frames between reads. Owns its handoff_frame_reader.
class frame_reader {
public:
    frame_reader() {
        handoff_frame_reader *out = nullptr;
        detail::call([&](handoff_error **e) { return handoff_frame_reader_new(&out, e); });
        h_.reset(out);
    }
    /// Copied into the reader's buffer.
    void feed(byte_view bytes) {
        detail::call([&](handoff_error **e) {
            return handoff_frame_reader_feed(h_.get(), bytes.data, bytes.size, e);
        });
    }
    /// The next whole message, or nullopt when more bytes are needed.
    std::optional<message> next() {
        handoff_message *out = nullptr;
        bool got = false;
        detail::call([&](handoff_error **e) { return handoff_frame_reader_next(h_.get(), &out, &got, e); });
        if (!got)
            return std::nullopt;
        return message(out);
    }
    std::size_t buffered() const noexcept { return handoff_frame_reader_buffered(h_.get()); }
    handoff_frame_reader *get() const noexcept { return h_.get(); }

private:
    detail::unique_handle<handoff_frame_reader, handoff_frame_reader_free> h_;
};

// ---- inherited, items, successor ---------------------------------------------

/// What this process inherited (role, listeners). Owns its
/// handoff_inherited; freeing it closes every listener not taken.
class inherited {
public:
    inherited() noexcept = default;
    explicit inherited(handoff_inherited *p) noexcept : h_(p) {}

    /// Reads and removes HANDOFF_ROLE, LISTEN_FDS, ... from the environment:
    /// call it early, before other threads read the environment.
    static inherited detect() {
        handoff_inherited *out = nullptr;
        detail::call([&](handoff_error **e) { return handoff_inherited_detect(&out, e); });
        return inherited(out);
    }
    bool is_successor() const noexcept { return handoff_inherited_is_successor(h_.get()); }
    std::size_t listener_count() const noexcept { return handoff_inherited_listener_count(h_.get()); }
    /// Borrowed from this object: valid until it is freed.
    std::string_view listener_name(std::size_t index) const {
        const char *name = nullptr;
        detail::call([&](handoff_error **e) { return handoff_inherited_listener_name(h_.get(), index, &name, e); });
        return name;
    }
    /// The listener's descriptor, now the caller's to close() (close-on-exec;
    /// its O_NONBLOCK flag is shared with the incumbent: poll before accept).
    int take_listener(std::string_view name, listener_kind kind) {
        auto n = detail::c_str(name);
        int fd = -1;
        detail::call([&](handoff_error **e) {
            return handoff_inherited_take_listener(h_.get(), n.c_str(), static_cast<std::uint32_t>(kind), &fd, e);
        });
        return fd;
    }
    handoff_inherited *get() const noexcept { return h_.get(); }
    handoff_inherited *release() noexcept { return h_.release(); }
    explicit operator bool() const noexcept { return static_cast<bool>(h_); }

private:
    detail::unique_handle<handoff_inherited, handoff_inherited_free> h_;
};

/// What moved to a successor. Owns its handoff_items; freeing it closes every
/// descriptor not taken.
class items {
public:
    items() noexcept = default;
    explicit items(handoff_items *p) noexcept : h_(p) {}
    std::size_t size() const noexcept { return handoff_items_count(h_.get()); }
    item_kind kind(std::size_t i) const noexcept { return static_cast<item_kind>(handoff_items_kind(h_.get(), i)); }
    /// The descriptor, now the caller's to close() (never shutdown()); -1 if
    /// out of range or taken already.
    int take_fd(std::size_t i) noexcept { return handoff_items_take_fd(h_.get(), i); }
    /// Borrowed from this object (valid until it is freed); nullopt for an
    /// index out of range.
    std::optional<byte_view> bytes(std::size_t i, item_part part) const noexcept {
        const std::uint8_t *d = nullptr;
        std::size_t n = 0;
        if (!handoff_items_bytes(h_.get(), i, static_cast<std::uint32_t>(part), &d, &n))
            return std::nullopt;
        return byte_view(d, n);
    }
    handoff_items *get() const noexcept { return h_.get(); }
    handoff_items *release() noexcept { return h_.release(); }

private:
    detail::unique_handle<handoff_items, handoff_items_free> h_;
};

class incumbent;

/// A successor's side of one handoff. Owns its handoff_successor.
class successor {
public:
    successor() noexcept = default;
    explicit successor(handoff_successor *p) noexcept : h_(p) {}

    /// The control socket and listeners move from `from` into the successor;
    /// `from` keeps only their names (and must still be destroyed). Not a
    /// successor: HANDOFF_ERR_WRONG_STATE.
    static successor create(inherited &from) {
        handoff_successor *out = nullptr;
        detail::call([&](handoff_error **e) { return handoff_successor_new(from.get(), &out, e); });
        return successor(out);
    }
    /// Before handshake.
    void set_adopts_descriptors(bool adopts) {
        detail::call([&](handoff_error **e) { return handoff_successor_set_adopts_descriptors(h_.get(), adopts, e); });
    }
    /// Hello / HelloAck (waits up to 5 s); returns the handoff id.
    std::array<std::uint8_t, 16> handshake(byte_view build_id) {
        std::array<std::uint8_t, 16> id{};
        detail::call([&](handoff_error **e) {
            return handoff_successor_handshake(h_.get(), build_id.data, build_id.size, id.data(), e);
        });
        return id;
    }
    /// Throws HANDOFF_ERR_ABORTED / _PEER_CLOSED: exit, touch nothing.
    template <class Rep, class Period>
    void wait_for_begin(std::chrono::duration<Rep, Period> timeout) {
        auto ms = detail::to_ms_u32(timeout);
        detail::call([&](handoff_error **e) { return handoff_successor_wait_for_begin(h_.get(), ms, e); });
    }
    /// Owned by the successor: poll it, never read, write or close it.
    int control_fd() const noexcept { return handoff_successor_control_fd(h_.get()); }
    /// True once Begin has arrived.
    bool poll_begin() {
        bool begun = false;
        detail::call([&](handoff_error **e) { return handoff_successor_poll_begin(h_.get(), &begun, e); });
        return begun;
    }
    /// After Begin; the descriptor is the caller's.
    int take_listener(std::string_view name, listener_kind kind) {
        auto n = detail::c_str(name);
        int fd = -1;
        detail::call([&](handoff_error **e) {
            return handoff_successor_take_listener(h_.get(), n.c_str(), static_cast<std::uint32_t>(kind), &fd, e);
        });
        return fd;
    }
    /// Heartbeats from Begin to Ready; best before wait_for_begin (its thread
    /// is then not started in the blackout).
    void start_heartbeats() {
        detail::call([&](handoff_error **e) { return handoff_successor_start_heartbeats(h_.get(), e); });
    }
    /// After Begin, holding `held`: what the incumbent moved.
    handoff::items adopt(const lock &held) {
        handoff_items *out = nullptr;
        detail::call([&](handoff_error **e) { return handoff_successor_adopt(h_.get(), held.get(), &out, e); });
        return handoff::items(out);
    }
    /// Bind `control_path`, announce Ready (with `ready`'s fields, if given)
    /// and become the incumbent. On success the lock moves into it and `held`
    /// is left empty; on failure `held` keeps whatever the C call left in
    /// it. The successor is spent either way (only destroy it).
    incumbent announce_ready(std::string_view control_path, lock &&held, const message *ready = nullptr);

    handoff_successor *get() const noexcept { return h_.get(); }
    handoff_successor *release() noexcept { return h_.release(); }
    explicit operator bool() const noexcept { return static_cast<bool>(h_); }

private:
    detail::unique_handle<handoff_successor, handoff_successor_free> h_;
};

// ---- requests -------------------------------------------------------------------

/// A non-owning view of a request's context (a callback's, or the one inside
/// a `request`): the setters of the report being filled in.
class hook_context {
public:
    explicit hook_context(handoff_hook_context *ctx) noexcept : ctx_(ctx) {}

    /// Before a drain's or seal's deadline (0 when past it, or another request).
    std::chrono::milliseconds time_left() const noexcept {
        return std::chrono::milliseconds(static_cast<std::chrono::milliseconds::rep>(handoff_hook_time_left_ms(ctx_)));
    }
    /// Drain: what is left open, whether accepting stopped.
    void set_drained(std::uint32_t open_conns_remaining, bool accept_closed) {
        detail::call([&](handoff_error **e) {
            return handoff_hook_set_drained(ctx_, open_conns_remaining, accept_closed, e);
        });
    }
    /// Drain: whether it moves descriptors (protocol v2).
    bool moves() const noexcept { return handoff_hook_moves(ctx_); }
    /// Drain that moves: how many descriptors the successor can hold.
    std::uint32_t move_limit() const noexcept { return handoff_hook_move_limit(ctx_); }
    /// Drain that moves: hand `fd` over (the bytes are copied; the descriptor
    /// stays the caller's: keep it open and untouched until the outcome, then
    /// close it on `ended`, or carry on with it on `resume`).
    void move(item_kind kind, std::string_view name, int fd, byte_view unread = {},
              byte_view unwritten = {}, byte_view state = {}) {
        auto n = detail::c_str(name);
        detail::call([&](handoff_error **e) {
            return handoff_hook_move(ctx_, static_cast<std::uint32_t>(kind), n.c_str(), fd, unread.data,
                                     unread.size, unwritten.data, unwritten.size, state.data, state.size, e);
        });
    }
    /// Seal: the last revision of the next shard.
    void push_revision(std::uint64_t revision) {
        detail::call([&](handoff_error **e) { return handoff_hook_push_revision(ctx_, revision, e); });
    }
    /// Seal: the 32-byte data-dir fingerprint.
    void set_fingerprint(byte_view fingerprint) {
        detail::call([&](handoff_error **e) {
            return handoff_hook_set_fingerprint(ctx_, fingerprint.data, fingerprint.size, e);
        });
    }
    /// Seal: progress, sent at once.
    void seal_progress(std::uint32_t sealed, std::uint32_t total, std::uint64_t last_revision) {
        detail::call([&](handoff_error **e) {
            return handoff_hook_seal_progress(ctx_, sealed, total, last_revision, e);
        });
    }
    /// The reason for the failure about to be reported (copied).
    void fail_reason(std::string_view reason) {
        auto r = detail::c_str(reason);
        detail::call([&](handoff_error **e) { return handoff_hook_fail(ctx_, r.c_str(), e); });
    }
    handoff_hook_context *get() const noexcept { return ctx_; }

protected:
    handoff_hook_context *ctx_;
};

/// A request taken by the service's loop (`incumbent::take_request`). The
/// context belongs to the incumbent (there is no C free function): this
/// object only guarantees it is completed once. Destroyed uncompleted, it
/// fails the request ("request dropped uncompleted"), so an exception in the
/// loop rolls the handoff back instead of leaving it to its deadline. It must
/// not outlive the incumbent it came from.
class request : public hook_context {
public:
    request() noexcept : hook_context(nullptr) {}
    request(request_kind kind, handoff_hook_context *ctx) noexcept : hook_context(ctx), kind_(kind) {}
    request(const request &) = delete;
    request &operator=(const request &) = delete;
    request(request &&o) noexcept : hook_context(std::exchange(o.ctx_, nullptr)), kind_(o.kind_) {}
    request &operator=(request &&o) noexcept {
        if (this != &o) {
            drop();
            ctx_ = std::exchange(o.ctx_, nullptr);
            kind_ = o.kind_;
        }
        return *this;
    }
    ~request() { drop(); }

    request_kind kind() const noexcept { return kind_; }
    /// Whether it still waits to be completed (false for none/ended).
    bool pending() const noexcept { return ctx_ != nullptr; }

    /// Report it done with what the setters filled in. Once.
    void complete() { finish(HANDOFF_OK); }
    /// Fail it with `reason` (the supervisor sees it). Once.
    void fail(std::string_view reason) {
        if (ctx_) {
            try {
                fail_reason(reason);
            } catch (...) {
                finish(HANDOFF_ERR_HOOK_FAILED);
                throw;
            }
        }
        finish(HANDOFF_ERR_HOOK_FAILED);
    }

private:
    void finish(std::int32_t status) {
        handoff_hook_context *c = std::exchange(ctx_, nullptr);
        if (!c)
            throw error(HANDOFF_ERR_WRONG_STATE, "request completed already (or none taken)");
        detail::call([&](handoff_error **e) { return handoff_hook_complete(c, status, e); });
    }
    void drop() noexcept {
        handoff_hook_context *c = std::exchange(ctx_, nullptr);
        if (!c)
            return;
        handoff_hook_fail(c, "request dropped uncompleted (C++ handoff::request destroyed)", nullptr);
        handoff_hook_complete(c, HANDOFF_ERR_HOOK_FAILED, nullptr);
    }

    request_kind kind_ = request_kind::none;
};

/// The callback form: each is called on a thread of the library's, one at a
/// time. Returning completes the request; throwing fails it with what().
struct callbacks {
    std::function<void(hook_context &)> drain;
    std::function<void(hook_context &)> seal;
    std::function<void(hook_context &)> resume_after_abort;
};

namespace detail {

template <std::function<void(hook_context &)> callbacks::*Member>
std::int32_t trampoline(void *userdata, handoff_hook_context *ctx) noexcept {
    try {
        auto *cb = static_cast<callbacks *>(userdata);
        hook_context view(ctx);
        (cb->*Member)(view);
        return HANDOFF_OK;
    } catch (const std::exception &ex) {
        handoff_hook_fail(ctx, ex.what(), nullptr);
    } catch (...) {
        handoff_hook_fail(ctx, "unknown C++ exception", nullptr);
    }
    return HANDOFF_ERR_HOOK_FAILED;
}

inline void destroy_callbacks(void *userdata) noexcept { delete static_cast<callbacks *>(userdata); }

} // namespace detail

// ---- incumbent -----------------------------------------------------------------

/// A process serving its control socket. Owns its handoff_incumbent (the
/// destructor stops serving, closes the socket and frees every request
/// context taken from it: destroy requests first).
class incumbent {
public:
    incumbent() noexcept = default;
    explicit incumbent(handoff_incumbent *p) noexcept : h_(p) {}

    /// Cold start: bind `control_path` for the holder of `held`. On success
    /// the lock moves into the incumbent and `held` is left empty; on failure
    /// `held` still holds it.
    static incumbent bind(std::string_view control_path, lock &&held) {
        auto path = detail::c_str(control_path);
        handoff_incumbent *out = nullptr;
        detail::call([&](handoff_error **e) { return handoff_incumbent_bind(path.c_str(), held.get(), &out, e); });
        held = lock(); // the C handle is empty now: free it
        return incumbent(out);
    }

    /// Before start: the build id announced in Hello (copied).
    void set_build_id(byte_view id) {
        detail::call([&](handoff_error **e) { return handoff_incumbent_set_build_id(h_.get(), id.data, id.size, e); });
    }
    /// Before start (default 10 s; at least 1 ms).
    template <class Rep, class Period>
    void set_liveness_timeout(std::chrono::duration<Rep, Period> timeout) {
        auto ms = detail::to_ms_u32(timeout);
        detail::call([&](handoff_error **e) { return handoff_incumbent_set_liveness_timeout(h_.get(), ms, e); });
    }
    /// Before start: offer protocol v2 and move connections on a drain.
    void set_moves_descriptors(bool moves) {
        detail::call([&](handoff_error **e) { return handoff_incumbent_set_moves_descriptors(h_.get(), moves, e); });
    }
    /// The fencing token of this tenure.
    std::uint64_t generation() const noexcept { return handoff_incumbent_generation(h_.get()); }

    /// The loop-driven form: poll request_fd() for reading, take_request().
    void start_loop() {
        detail::call([&](handoff_error **e) { return handoff_incumbent_start_loop(h_.get(), e); });
    }
    /// Owned by the incumbent; poll it for reading, never read it. -1 unless
    /// started with start_loop().
    int request_fd() const noexcept { return handoff_incumbent_request_fd(h_.get()); }
    /// The next request without waiting (kind none: nothing waits; ended:
    /// serving is over, call wait_for(0ms)).
    request take_request() {
        handoff_hook_context *ctx = nullptr;
        std::uint32_t kind = HANDOFF_REQUEST_NONE;
        detail::call([&](handoff_error **e) { return handoff_incumbent_take_request(h_.get(), &ctx, &kind, e); });
        return request(static_cast<request_kind>(kind), ctx);
    }

    /// The callback form. The callables are moved into the library, which
    /// destroys them when it no longer needs them; an exception from one is
    /// caught in a noexcept trampoline and fails the request with what().
    void start(callbacks cbs) {
        if (!cbs.drain || !cbs.seal || !cbs.resume_after_abort)
            throw error(HANDOFF_ERR_NULL_POINTER, "handoff::callbacks needs drain, seal and resume_after_abort");
        auto owned = std::make_unique<callbacks>(std::move(cbs));
        handoff_service_callbacks c{};
        c.drain = &detail::trampoline<&callbacks::drain>;
        c.seal = &detail::trampoline<&callbacks::seal>;
        c.resume_after_abort = &detail::trampoline<&callbacks::resume_after_abort>;
        c.destroy = &detail::destroy_callbacks;
        detail::call([&](handoff_error **e) { return handoff_incumbent_start(h_.get(), &c, owned.get(), e); });
        owned.release(); // the library calls destroy from now on
    }

    /// Wait for serving to end.
    serve_outcome wait() {
        std::uint32_t out = 0;
        detail::call([&](handoff_error **e) { return handoff_incumbent_wait(h_.get(), -1, &out, e); });
        return static_cast<serve_outcome>(out);
    }
    /// Wait up to `timeout`: nullopt while still serving.
    template <class Rep, class Period>
    std::optional<serve_outcome> wait_for(std::chrono::duration<Rep, Period> timeout) {
        auto ms = detail::to_ms_u32(timeout);
        std::int32_t t = ms > static_cast<std::uint32_t>(std::numeric_limits<std::int32_t>::max())
                             ? std::numeric_limits<std::int32_t>::max()
                             : static_cast<std::int32_t>(ms);
        std::uint32_t out = 0;
        handoff_error *err = nullptr;
        handoff_status st = handoff_incumbent_wait(h_.get(), t, &out, &err);
        if (st == HANDOFF_ERR_TIMEOUT) {
            handoff_error_free(err);
            return std::nullopt;
        }
        if (st != HANDOFF_OK)
            detail::throw_status(st, err);
        handoff_error_free(err);
        return static_cast<serve_outcome>(out);
    }
    /// Stop serving (rolling back a handoff in progress).
    void stop() {
        detail::call([&](handoff_error **e) { return handoff_incumbent_stop(h_.get(), e); });
    }

    handoff_incumbent *get() const noexcept { return h_.get(); }
    handoff_incumbent *release() noexcept { return h_.release(); }
    explicit operator bool() const noexcept { return static_cast<bool>(h_); }

private:
    detail::unique_handle<handoff_incumbent, handoff_incumbent_free> h_;
};

inline incumbent successor::announce_ready(std::string_view control_path, lock &&held, const message *ready) {
    auto path = detail::c_str(control_path);
    handoff_incumbent *out = nullptr;
    detail::call([&](handoff_error **e) {
        return handoff_successor_announce_ready(h_.get(), ready ? ready->get() : nullptr, path.c_str(), held.get(),
                                                &out, e);
    });
    held = lock();
    return incumbent(out);
}

} // namespace handoff

#endif // HANDOFF_HPP
