// Tests of include/handoff.hpp against the real library.
//   test_hpp VECTORS_DIR
#include "handoff.hpp"

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <mutex>
#include <fstream>
#include <iterator>
#include <string>
#include <type_traits>
#include <vector>

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

static int failures = 0;

#define CHECK(cond)                                                                  \
    do {                                                                             \
        if (!(cond)) {                                                               \
            std::fprintf(stderr, "FAIL %s:%d: %s\n", __FILE__, __LINE__, #cond);     \
            ++failures;                                                              \
        }                                                                            \
    } while (0)

// Runs `f`, which must throw handoff::error with `status`; returns its message.
template <class F>
static std::string expect_error(handoff_status status, F &&f, int line) {
    try {
        f();
    } catch (const handoff::error &e) {
        if (e.status() != status) {
            std::fprintf(stderr, "FAIL line %d: status %s, expected %s (%s)\n", line, e.status_name(),
                         handoff_status_name(status), e.what());
            ++failures;
        }
        return e.what();
    } catch (const std::exception &e) {
        std::fprintf(stderr, "FAIL line %d: other exception %s\n", line, e.what());
        ++failures;
        return "";
    }
    std::fprintf(stderr, "FAIL line %d: no exception, expected %s\n", line, handoff_status_name(status));
    ++failures;
    return "";
}
#define EXPECT_ERROR(st, ...) expect_error(st, [&] { __VA_ARGS__; }, __LINE__)

static std::vector<std::uint8_t> read_file(const std::string &path) {
    std::ifstream in(path, std::ios::binary);
    return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

static std::vector<std::string> temp_dirs; // removed at the end

static std::string temp_dir() {
    char tmpl[] = "/tmp/handoff-hpp-XXXXXX";
    char *d = mkdtemp(tmpl);
    if (!d) {
        std::perror("mkdtemp");
        std::exit(2);
    }
    temp_dirs.emplace_back(d);
    return d;
}

// ---- the types are what the header promises ---------------------------------

template <class T>
constexpr bool move_only = !std::is_copy_constructible_v<T> && !std::is_copy_assignable_v<T> &&
                           std::is_nothrow_move_constructible_v<T> && std::is_nothrow_move_assignable_v<T>;
static_assert(move_only<handoff::lock>);
static_assert(move_only<handoff::inherited>);
static_assert(move_only<handoff::successor>);
static_assert(move_only<handoff::incumbent>);
static_assert(move_only<handoff::request>);
static_assert(move_only<handoff::message>);
static_assert(move_only<handoff::items>);
static_assert(move_only<handoff::frame_reader>);
static_assert(move_only<handoff::unique_fd>);
static_assert(!std::is_copy_constructible_v<handoff::log_route> && !std::is_move_constructible_v<handoff::log_route>);
static_assert(std::is_base_of_v<std::runtime_error, handoff::error>);

static void test_errors() {
    // A lock under /proc cannot be created.
    std::string msg = EXPECT_ERROR(HANDOFF_ERR_IO, handoff::lock::acquire("/proc/handoff-hpp-test/data"));
    CHECK(!msg.empty());
    CHECK(msg.find("/proc/handoff-hpp-test") != std::string::npos);

    // A truncated frame: incomplete, and bytes_needed says how many.
    auto frame = read_file(std::string(std::getenv("VECTORS")) + "/frames/00_hello.bin");
    CHECK(frame.size() > 4);
    handoff::byte_view half(frame.data(), frame.size() - 3);
    msg = EXPECT_ERROR(HANDOFF_ERR_INCOMPLETE, handoff::message::decode(half));
    CHECK(!msg.empty());
    CHECK(handoff::message::bytes_needed(half) == frame.size());
    CHECK(handoff::message::bytes_needed(frame) == 0);

    // A frame length below 2.
    const std::uint8_t malformed[] = {1, 0, 0, 0, 1};
    EXPECT_ERROR(HANDOFF_ERR_FRAME_MALFORMED, handoff::message::decode({malformed, sizeof malformed}));

    // Field errors and the NUL guard.
    handoff::message hello(handoff::message_kind::hello);
    EXPECT_ERROR(HANDOFF_ERR_NO_SUCH_FIELD, hello.get_uint(HANDOFF_FIELD_SUCCESSOR_PID));
    EXPECT_ERROR(HANDOFF_ERR_WRONG_FIELD_TYPE, hello.get_bool(HANDOFF_FIELD_PID));
    handoff::message begin(handoff::message_kind::begin);
    EXPECT_ERROR(HANDOFF_ERR_INVALID_ARGUMENT, begin.set_bytes(HANDOFF_FIELD_HANDOFF_ID, "short"));
    std::array<std::uint8_t, 16> id{};
    id[0] = 0x5a;
    begin.set_bytes(HANDOFF_FIELD_HANDOFF_ID, id);
    CHECK(begin.get_bytes(HANDOFF_FIELD_HANDOFF_ID).to_vector() == std::vector<std::uint8_t>(id.begin(), id.end()));
    EXPECT_ERROR(HANDOFF_ERR_INVALID_ARGUMENT, handoff::lock::acquire(std::string_view("a\0b", 3)));
    EXPECT_ERROR(HANDOFF_ERR_INVALID_ARGUMENT, handoff::message(static_cast<handoff::message_kind>(999)));

    // The status name helper.
    handoff::error e(HANDOFF_ERR_TIMEOUT, "x");
    CHECK(std::string(e.status_name()) == "HANDOFF_ERR_TIMEOUT");
    CHECK(!handoff::version().empty());
    const char *none = nullptr;
    CHECK(handoff::byte_view(none).empty());
    CHECK(handoff::byte_view("abc").as_string() == "abc");
}

static void test_lock_raii() {
    std::string dir = temp_dir();
    {
        handoff::lock a = handoff::lock::acquire(dir);
        CHECK(a);
        std::uint64_t g = a.generation();
        CHECK(g >= 1);
        // Held by this process: a second acquire fails, naming the holder.
        EXPECT_ERROR(HANDOFF_ERR_LOCK_HELD, handoff::lock::acquire(dir));
        auto h = handoff::lock::holder(dir);
        CHECK(h.held);
        CHECK(h.pid == static_cast<std::uint32_t>(getpid()));

        handoff::lock b = std::move(a); // move: one owner, no double free (ASan)
        CHECK(!a);
        CHECK(b.generation() == g);
        handoff::lock c;
        c = std::move(b);
        c = std::move(c); // self-move is harmless
        CHECK(c.generation() == g);
        c.unlock();
        CHECK(!c);
        CHECK(!handoff::lock::holder(dir).held);

        handoff::lock d = handoff::lock::acquire_with_retry(dir, std::chrono::milliseconds(100));
        CHECK(d.generation() == g + 1);
        handoff::lock e = handoff::lock::acquire(temp_dir());
        d = std::move(e); // the old lock in d is freed, so released
        CHECK(!handoff::lock::holder(dir).held);
        handoff_lock *raw = d.release();
        CHECK(raw != nullptr);
        handoff::lock back(raw);
    } // destructor releases
    CHECK(!handoff::lock::holder(dir).held);
}

// Every golden frame of a directory decoded and re-encoded byte for byte;
// returns how many.
static int roundtrip_dir(const std::string &dir, std::uint16_t proto) {
    DIR *d = opendir(dir.c_str());
    CHECK(d != nullptr);
    if (!d)
        return 0;
    int n = 0;
    while (dirent *ent = readdir(d)) {
        std::string name = ent->d_name;
        if (name.size() < 4 || name.substr(name.size() - 4) != ".bin")
            continue;
        auto frame = read_file(dir + "/" + name);
        // The frame and trailing bytes: consumed is the frame alone.
        std::vector<std::uint8_t> more = frame;
        more.push_back(0xee);
        auto dec = handoff::message::decode(more);
        CHECK(dec.consumed == frame.size());
        CHECK(dec.message.kind() != handoff::message_kind::invalid);
        CHECK(!handoff::message::kind_name(dec.message.kind()).empty());
        CHECK(dec.message.encode() == frame);
        CHECK(dec.message.proto_version() == proto);

        // Moved message encodes the same; the moved-from one is empty.
        handoff::message m = std::move(dec.message);
        CHECK(!dec.message);
        CHECK(m.encode() == frame);

        // The frame reader, fed byte by byte.
        handoff::frame_reader r;
        std::optional<handoff::message> got;
        for (std::size_t i = 0; i < frame.size(); ++i) {
            CHECK(!got);
            r.feed({&frame[i], 1});
            got = r.next();
        }
        CHECK(got && got->encode() == frame);
        CHECK(r.buffered() == 0);
        ++n;
    }
    closedir(d);
    return n;
}

static void test_vectors() {
    std::string vectors = std::getenv("VECTORS");
    CHECK(roundtrip_dir(vectors + "/frames", 1) >= 14);
    CHECK(roundtrip_dir(vectors + "/v2", 2) >= 6);
    std::string dir = vectors + "/frames";

    // Specific fields of two vectors.
    auto hello = handoff::message::decode(read_file(dir + "/00_hello.bin")).message;
    CHECK(hello.kind() == handoff::message_kind::hello);
    CHECK(hello.get_bytes(HANDOFF_FIELD_BUILD_ID).as_string().rfind("build-", 0) == 0);
    auto ready = handoff::message::decode(read_file(dir + "/09_ready.bin")).message;
    CHECK(ready.list_len(HANDOFF_FIELD_LISTENING_ON) == 2);
    CHECK(ready.list_bytes(HANDOFF_FIELD_LISTENING_ON, 0).as_string() == "tcp://127.0.0.1:8080");
    EXPECT_ERROR(HANDOFF_ERR_OUT_OF_RANGE, ready.list_bytes(HANDOFF_FIELD_LISTENING_ON, 2));

    // Built field by field.
    handoff::message b(handoff::message_kind::ready);
    b.push_bytes(HANDOFF_FIELD_LISTENING_ON, "tcp://127.0.0.1:1");
    b.set_bool(HANDOFF_FIELD_HEALTHZ_OK, true);
    b.push_uint(HANDOFF_FIELD_ADVERTISED_REVISION_PER_SHARD, 7);
    auto again = handoff::message::decode(b.encode()).message;
    CHECK(again.get_bool(HANDOFF_FIELD_HEALTHZ_OK));
    CHECK(again.list_uint(HANDOFF_FIELD_ADVERTISED_REVISION_PER_SHARD, 0) == 7);
    b.clear_list(HANDOFF_FIELD_LISTENING_ON);
    CHECK(b.list_len(HANDOFF_FIELD_LISTENING_ON) == 0);
}

// Cold-start pieces without a supervisor: detect, bind (the lock moves),
// start_loop, nothing to take, stop, the callback form's validation.
static void test_incumbent_local() {
    auto inh = handoff::inherited::detect();
    CHECK(!inh.is_successor());
    CHECK(inh.listener_count() == 0);
    EXPECT_ERROR(HANDOFF_ERR_LISTENER, inh.take_listener("kv", handoff::listener_kind::tcp));
    EXPECT_ERROR(HANDOFF_ERR_OUT_OF_RANGE, inh.listener_name(0));
    EXPECT_ERROR(HANDOFF_ERR_WRONG_STATE, handoff::successor::create(inh));

    std::string dir = temp_dir();
    std::string control = dir + "/control.sock";
    handoff::lock l = handoff::lock::acquire(dir);
    std::uint64_t g = l.generation();

    // A bind that fails leaves the lock with the caller.
    EXPECT_ERROR(HANDOFF_ERR_IO, handoff::incumbent::bind("/proc/nope/control.sock", std::move(l)));
    CHECK(l && l.generation() == g);

    handoff::incumbent inc = handoff::incumbent::bind(control, std::move(l));
    CHECK(!l); // moved into the incumbent
    CHECK(inc.generation() == g);
    CHECK(inc.request_fd() == -1);
    inc.set_build_id("hpp-test");
    inc.set_liveness_timeout(std::chrono::seconds(5));
    inc.set_moves_descriptors(true);
    EXPECT_ERROR(HANDOFF_ERR_WRONG_STATE, inc.take_request());
    inc.start_loop();
    CHECK(inc.request_fd() >= 0);
    auto r = inc.take_request();
    CHECK(r.kind() == handoff::request_kind::none);
    CHECK(!r.pending());
    EXPECT_ERROR(HANDOFF_ERR_WRONG_STATE, r.complete());
    CHECK(!inc.wait_for(std::chrono::milliseconds(10)));
    handoff::incumbent moved = std::move(inc);
    CHECK(!inc);
    moved.stop();
    auto out = moved.wait_for(std::chrono::milliseconds(0));
    CHECK(out && *out == handoff::serve_outcome::stopped);

    // The callback form refuses a missing callable before calling C.
    handoff::lock l2 = handoff::lock::acquire(temp_dir());
    handoff::incumbent inc2 = handoff::incumbent::bind(dir + "/control2.sock", std::move(l2));
    EXPECT_ERROR(HANDOFF_ERR_NULL_POINTER, inc2.start(handoff::callbacks{}));
    std::weak_ptr<int> alive;
    {
        handoff::callbacks cbs;
        auto p = std::make_shared<int>(0);
        alive = p;
        cbs.drain = [p](handoff::hook_context &) {};
        cbs.seal = [p](handoff::hook_context &) {};
        cbs.resume_after_abort = [p](handoff::hook_context &) {};
        inc2.start(std::move(cbs));
    }
    CHECK(!alive.expired()); // the library holds the callables
    inc2 = handoff::incumbent(); // freed: destroy runs, once (ASan)
    CHECK(alive.expired());
}

// ---- unique_fd, log_route -------------------------------------------------------

static bool fd_open(int fd) { return fcntl(fd, F_GETFD) != -1; }

static void test_unique_fd() {
    int fds[2];
    if (pipe(fds) != 0) {
        std::perror("pipe");
        std::exit(2);
    }
    int r = fds[0], w = fds[1];
    {
        handoff::unique_fd a(r);
        CHECK(a && a.get() == r);
        handoff::unique_fd b = std::move(a);
        CHECK(!a && a.get() == -1 && b.get() == r);
        CHECK(fd_open(r)); // a move closes nothing
        handoff::unique_fd c(w);
        c = std::move(b); // closes w, takes r
        CHECK(!fd_open(w) && fd_open(r) && c.get() == r);
        int raw = c.release();
        CHECK(!c && raw == r);
        c.reset(raw);
    }
    CHECK(!fd_open(r)); // closed once, by the last owner
    handoff::unique_fd empty;
    CHECK(!empty && empty.get() == -1);
    empty.reset(); // nothing to close: a no-op
}

// A stale pidfile makes the lock log a debug event on acquire: it reaches the
// route while it lives, and not after.
static void test_log_route() {
    EXPECT_ERROR(HANDOFF_ERR_NULL_POINTER, handoff::log_route(handoff::log_route::sink{}));
    std::mutex m;
    std::vector<std::pair<handoff::log_level, std::string>> seen;
    auto stale_lock = [](const std::string &dir) {
        std::ofstream(dir + "/.handoff.pidfile") << "4000000000\n";
        handoff::lock::acquire(dir).unlock();
    };
    {
        handoff::log_route route([&](handoff::log_level level, std::string_view line) {
            std::lock_guard<std::mutex> g(m);
            seen.emplace_back(level, std::string(line));
            throw std::runtime_error("dropped by the route, never seen by the library");
        });
        stale_lock(temp_dir());
    }
    std::size_t while_routed = seen.size();
    bool found = false;
    for (const auto &[level, line] : seen)
        found = found || (level == handoff::log_level::debug && line.find("4000000000") != std::string::npos);
    CHECK(found);
    stale_lock(temp_dir());
    CHECK(seen.size() == while_routed); // the default route again
}

int main(int argc, char **argv) {
    if (argc > 1)
        setenv("VECTORS", argv[1], 1);
    if (!std::getenv("VECTORS")) {
        std::fprintf(stderr, "usage: %s VECTORS_DIR\n", argv[0]);
        return 2;
    }
    test_errors();
    test_lock_raii();
    test_vectors();
    test_incumbent_local();
    test_unique_fd();
    test_log_route();
    for (const auto &d : temp_dirs) {
        std::error_code ec;
        std::filesystem::remove_all(d, ec);
    }
    if (failures) {
        std::fprintf(stderr, "%d check(s) FAILED\n", failures);
        return 1;
    }
    std::printf("ok   handoff.hpp (C++%ld)\n", __cplusplus / 100 % 100);
    return 0;
}
