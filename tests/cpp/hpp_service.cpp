// A tiny service written with handoff.hpp, for the handoff test
// (handoff_test.sh runs it under handoff-supervisor).
//
//   hpp_service --data-dir D --control-socket C --events FILE --fail-seal-file F
//
// A cold start serves with the callback form: its seal throws while F
// exists (the exception must become handoff_hook_fail, and the handoff roll
// back). A successor serves with the loop-driven form; its seal throws while
// F exists too, before completing (the handoff::request's destructor must
// fail the request). Each generation
// appends lines to FILE: "serving ROLE FORM GEN PID", "drain GEN",
// "seal GEN", "seal-throws GEN", "resume GEN", "ended GEN committed".
#include "handoff.hpp"

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <optional>
#include <stdexcept>
#include <string>

#include <poll.h>
#include <sys/mman.h>
#include <unistd.h>

static std::string events_path, fail_seal_file;

static void event(const std::string &line) {
    std::ofstream out(events_path, std::ios::app);
    out << line << '\n';
}

static bool exists(const std::string &path) { return access(path.c_str(), F_OK) == 0; }

static int serve_callbacks(handoff::incumbent &inc) {
    std::string gen = std::to_string(inc.generation());
    handoff::callbacks cbs;
    cbs.drain = [gen](handoff::hook_context &ctx) {
        event("drain " + gen);
        ctx.set_drained(0, true);
    };
    cbs.seal = [gen](handoff::hook_context &ctx) {
        if (exists(fail_seal_file)) {
            event("seal-throws " + gen);
            throw std::runtime_error("hpp test: seal refused while " + fail_seal_file + " exists");
        }
        event("seal " + gen);
        ctx.push_revision(std::stoull(gen));
    };
    cbs.resume_after_abort = [gen](handoff::hook_context &) { event("resume " + gen); };
    inc.start(std::move(cbs));
    event("serving callbacks " + gen + " " + std::to_string(getpid()));
    handoff::serve_outcome out = inc.wait();
    event("ended " + gen + (out == handoff::serve_outcome::committed ? " committed" : " other"));
    return out == handoff::serve_outcome::committed ? 0 : 1;
}

static std::optional<int> serve_one(handoff::incumbent &inc, const std::string &gen);

// The loop form moves one descriptor on a drain that moves (protocol v2): a
// memfd called "memo", with the generation that moved it as its state.
static int memo = -1;

static int serve_loop(handoff::incumbent &inc) {
    std::string gen = std::to_string(inc.generation());
    if (memo < 0)
        memo = memfd_create("memo", MFD_CLOEXEC);
    if (memo < 0)
        throw std::runtime_error("memfd_create failed");
    inc.set_moves_descriptors(true);
    inc.start_loop();
    event("serving loop " + gen + " " + std::to_string(getpid()));
    int fd = inc.request_fd();
    for (;;) {
        pollfd watched{fd, POLLIN, 0};
        if (poll(&watched, 1, -1) < 0) {
            if (errno == EINTR)
                continue;
            std::perror("poll");
            return 1;
        }
        if (!(watched.revents & POLLIN))
            continue;
        try {
            if (auto rc = serve_one(inc, gen))
                return *rc;
        } catch (const std::runtime_error &e) {
            // The request was destroyed uncompleted on the way here: failed.
            event(std::string("loop-caught ") + e.what());
        }
    }
}

// One request of the loop form; a value when serving is over. While the
// fail-seal file exists its seal throws before completing: the request's
// destructor fails it, and the handoff rolls back.
static std::optional<int> serve_one(handoff::incumbent &inc, const std::string &gen) {
    {
        handoff::request req = inc.take_request();
        switch (req.kind()) {
        case handoff::request_kind::none:
            break;
        case handoff::request_kind::drain:
            event("drain " + gen + (req.moves() ? " moves" : ""));
            if (req.moves()) {
                if (req.move_limit() < 1)
                    throw std::runtime_error("move limit 0");
                req.move(handoff::item_kind::descriptor, "memo", memo, {}, {}, "from gen " + gen);
            }
            req.set_drained(0, true);
            req.complete();
            break;
        case handoff::request_kind::seal:
            if (exists(fail_seal_file)) {
                event("seal-throws " + gen);
                throw std::runtime_error("loop seal refused");
            }
            event("seal " + gen);
            req.push_revision(inc.generation());
            req.complete();
            break;
        case handoff::request_kind::resume:
            event("resume " + gen);
            req.complete();
            break;
        case handoff::request_kind::ended: {
            auto out = inc.wait_for(std::chrono::milliseconds(0));
            bool committed = out && *out == handoff::serve_outcome::committed;
            event("ended " + gen + (committed ? " committed" : " other"));
            close(memo); // moved: the successor's now (never shutdown)
            return committed ? 0 : 1;
        }
        }
    }
    return std::nullopt;
}

int main(int argc, char **argv) {
    std::string data_dir, control;
    for (int i = 1; i + 1 < argc; i += 2) {
        std::string a = argv[i];
        if (a == "--data-dir") data_dir = argv[i + 1];
        else if (a == "--control-socket") control = argv[i + 1];
        else if (a == "--events") events_path = argv[i + 1];
        else if (a == "--fail-seal-file") fail_seal_file = argv[i + 1];
    }
    try {
        handoff::inherited inh = handoff::inherited::detect();
        handoff::incumbent inc;
        int listener = -1;
        if (inh.is_successor()) {
            handoff::successor s = handoff::successor::create(inh);
            s.set_adopts_descriptors(true);
            s.handshake("hpp-service-1");
            try {
                s.wait_for_begin(std::chrono::seconds(20));
            } catch (const handoff::error &e) {
                event(std::string("successor-gave-up ") + e.status_name());
                return 1; // touch nothing
            }
            s.start_heartbeats();
            listener = s.take_listener("t", handoff::listener_kind::unix_stream);
            handoff::lock l = handoff::lock::acquire_with_retry(data_dir, std::chrono::seconds(5));
            handoff::items moved = s.adopt(l);
            if (moved.size() == 0) {
                event("adopted none");
            } else {
                auto name = moved.bytes(0, handoff::item_part::name);
                auto state = moved.bytes(0, handoff::item_part::state);
                if (moved.size() != 1 || moved.kind(0) != handoff::item_kind::descriptor || !name ||
                    name->as_string() != "memo" || !state || moved.bytes(1, handoff::item_part::name))
                    throw std::runtime_error("unexpected items moved");
                event("adopted memo " + std::string(state->as_string()));
                memo = moved.take_fd(0);
                if (memo < 0 || moved.take_fd(0) != -1)
                    throw std::runtime_error("take_fd");
            }
            inc = s.announce_ready(control, std::move(l));
            if (l)
                throw std::logic_error("the lock should have moved into the incumbent");
            int rc = serve_loop(inc);
            close(listener);
            return rc;
        }
        listener = inh.take_listener("t", handoff::listener_kind::unix_stream);
        handoff::lock l = handoff::lock::acquire(data_dir);
        inc = handoff::incumbent::bind(control, std::move(l));
        inc.set_build_id("hpp-service-1");
        int rc = serve_callbacks(inc);
        close(listener);
        return rc;
    } catch (const handoff::error &e) {
        event(std::string("error ") + e.status_name() + " " + e.what());
        std::fprintf(stderr, "hpp_service: %s: %s\n", e.status_name(), e.what());
        return 1;
    }
}
