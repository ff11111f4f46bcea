/*
 * A minimal service for the handoff tests: hooks that do nothing, a
 * listener it only polls and accepts on (answering "PONG <pid>\n"), and a
 * report of what sd_listen_fds_with_names() saw at start-up, so the tests
 * can check that libsystemd accepts the listeners libhandoff hands over.
 *
 *   noop-service --data-dir DIR --control-socket PATH [--report FILE]
 *                [--exit-before-ready] [--hang-before-ready] [--fail-seal]
 *                [--forge-hello] [--liveness-ms N] [--delay-hello-ms N]
 *                [--log-file PATH] [--identity NAME] [--crash-after-ready-ms N]
 *                [--fork-and-hang-before-ready]
 *
 * --forge-hello: as a successor, a forked child sends the Hello claiming
 * the successor's pid, as a process that was handed the socket might.
 * --liveness-ms: the incumbent's supervisor-liveness timeout
 * (handoff_incumbent_set_liveness_timeout), so tests need not wait 10 s.
 * --delay-hello-ms: as a successor, wait this long before the handshake, as
 * a service loading its state first does.
 * --log-file: the library's log lines (every level) are appended there
 * instead of going to stderr, so a test can read what the library said.
 * --identity: answer "PONG <pid> NAME", so a test can tell builds apart.
 * --crash-after-ready-ms: abort this long after it starts serving (as an
 * incumbent, cold or after Ready), as a broken build that passes its
 * handoff and then dies does.
 * --fork-and-hang-before-ready: as a successor, fork a child that sleeps
 * (a helper process), then hang before Ready.
 */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <systemd/sd-daemon.h>

#include "handoff.h"

static const char *data_dir, *control_socket, *report_path;
static int exit_before_ready, hang_before_ready, fail_seal, forge_hello, fork_and_hang;
static unsigned long liveness_ms, delay_hello_ms, crash_after_ready_ms;
static const char *identity;
static FILE *log_file;
static volatile int accepting = 1;

static void die(const char *what, handoff_status status, handoff_error *err) {
    fprintf(stderr, "noop-service[%d]: %s: %s (%d)\n", (int)getpid(), what,
            err ? handoff_error_message(err) : "?", (int)status);
    handoff_error_free(err);
    exit(2);
}

#define CHECK(call, what)                                  \
    do {                                                   \
        handoff_error *err_ = NULL;                        \
        handoff_status st_ = (call);                       \
        (void)err_;                                        \
        if (st_ != HANDOFF_OK) die(what, st_, err_);       \
    } while (0)

/* Write what libsystemd sees: "n=<count> names=<a:b> pid_ok=<0|1>". */
static void report_sd_listen_fds(void) {
    char **names = NULL;
    int n = sd_listen_fds_with_names(0, &names);
    FILE *f = report_path ? fopen(report_path, "a") : NULL;
    if (!f) return;
    fprintf(f, "pid=%d n=%d names=", (int)getpid(), n);
    for (int i = 0; n > 0 && i < n; i++) {
        fprintf(f, "%s%s", i ? ":" : "", names[i]);
        int kind = sd_is_socket(SD_LISTEN_FDS_START + i, AF_UNSPEC, 0, 1);
        fprintf(f, "(%s)", kind > 0 ? "listening" : "not-listening");
        free(names[i]);
    }
    free(names);
    fprintf(f, "\n");
    fclose(f);
}

/* A child writes a Hello announcing its parent's pid on the control socket,
 * then the parent waits to be killed. */
static void send_forged_hello(void) {
    const char *fd_var = getenv("HANDOFF_SOCK_FD");
    if (!fd_var) exit(5);
    int fd = atoi(fd_var);
    pid_t child = fork();
    if (child == 0) {
        handoff_message *hello = NULL;
        uint8_t frame[256];
        size_t len = 0;
        if (handoff_message_new(HANDOFF_MSG_HELLO, &hello, NULL) != HANDOFF_OK ||
            handoff_message_set_uint(hello, HANDOFF_FIELD_ROLE, HANDOFF_SIDE_SUCCESSOR, NULL) != HANDOFF_OK ||
            handoff_message_set_uint(hello, HANDOFF_FIELD_PID, (uint64_t)getppid(), NULL) != HANDOFF_OK ||
            handoff_message_encode(hello, frame, sizeof frame, &len, NULL) != HANDOFF_OK)
            _exit(6);
        (void)!write(fd, frame, len);
        handoff_message_free(hello);
        _exit(0);
    }
    for (;;) pause();
}

static int32_t on_drain(void *userdata, handoff_hook_context *ctx) {
    (void)userdata;
    (void)ctx;
    accepting = 0;
    return HANDOFF_OK;
}

static int32_t on_seal(void *userdata, handoff_hook_context *ctx) {
    (void)userdata;
    if (fail_seal) {
        handoff_hook_fail(ctx, "seal failed on purpose", NULL);
        return HANDOFF_ERR_HOOK_FAILED;
    }
    return HANDOFF_OK;
}

static int32_t on_resume(void *userdata, handoff_hook_context *ctx) {
    (void)userdata;
    (void)ctx;
    accepting = 1;
    return HANDOFF_OK;
}

static void log_line(void *userdata, uint32_t level, const char *message) {
    (void)userdata;
    if (log_file) {
        /* One call per line (stdio locks the stream), flushed at once. */
        fprintf(log_file, "noop-service[%d] level=%u %s\n", (int)getpid(), (unsigned)level, message);
        fflush(log_file);
    } else if (level <= HANDOFF_LOG_INFO) {
        fprintf(stderr, "noop-service[%d] %s\n", (int)getpid(), message);
    }
}

/* Serve the listener (poll, then accept: the flag may be either way) until
 * the incumbent's serving ends; answer each connection with PONG <pid>. */
static uint32_t serve(handoff_incumbent *incumbent, int listener) {
    struct timespec started;
    clock_gettime(CLOCK_MONOTONIC, &started);
    for (;;) {
        if (crash_after_ready_ms) {
            struct timespec now;
            clock_gettime(CLOCK_MONOTONIC, &now);
            long ms = (long)(now.tv_sec - started.tv_sec) * 1000 + (now.tv_nsec - started.tv_nsec) / 1000000;
            if (ms >= (long)crash_after_ready_ms) _exit(70);
        }
        uint32_t outcome = 0;
        handoff_status st = handoff_incumbent_wait(incumbent, 0, &outcome, NULL);
        if (st == HANDOFF_OK) return outcome;
        if (st != HANDOFF_ERR_TIMEOUT) die("wait", st, NULL);
        struct pollfd p = {.fd = listener, .events = POLLIN, .revents = 0};
        if (!accepting || poll(&p, 1, 20) <= 0) {
            if (!accepting) nanosleep(&(struct timespec){0, 5000000}, NULL);
            continue;
        }
        if (!accepting) continue; /* drained while polling: accept nothing more */
        int conn = accept(listener, NULL, NULL);
        if (conn < 0) continue; /* EAGAIN: another process took it */
        char line[128];
        int len = identity ? snprintf(line, sizeof line, "PONG %d %s\n", (int)getpid(), identity)
                           : snprintf(line, sizeof line, "PONG %d\n", (int)getpid());
        (void)!write(conn, line, (size_t)len);
        close(conn);
    }
}

int main(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--data-dir") && i + 1 < argc) data_dir = argv[++i];
        else if (!strcmp(argv[i], "--control-socket") && i + 1 < argc) control_socket = argv[++i];
        else if (!strcmp(argv[i], "--report") && i + 1 < argc) report_path = argv[++i];
        else if (!strcmp(argv[i], "--exit-before-ready")) exit_before_ready = 1;
        else if (!strcmp(argv[i], "--hang-before-ready")) hang_before_ready = 1;
        else if (!strcmp(argv[i], "--fail-seal")) fail_seal = 1;
        else if (!strcmp(argv[i], "--forge-hello")) forge_hello = 1;
        else if (!strcmp(argv[i], "--liveness-ms") && i + 1 < argc) liveness_ms = strtoul(argv[++i], NULL, 10);
        else if (!strcmp(argv[i], "--delay-hello-ms") && i + 1 < argc) delay_hello_ms = strtoul(argv[++i], NULL, 10);
        else if (!strcmp(argv[i], "--identity") && i + 1 < argc) identity = argv[++i];
        else if (!strcmp(argv[i], "--crash-after-ready-ms") && i + 1 < argc) crash_after_ready_ms = strtoul(argv[++i], NULL, 10);
        else if (!strcmp(argv[i], "--fork-and-hang-before-ready")) fork_and_hang = 1;
        else if (!strcmp(argv[i], "--log-file") && i + 1 < argc) {
            log_file = fopen(argv[++i], "a");
            if (!log_file) { perror(argv[i]); return 64; }
        }
        else { fprintf(stderr, "usage: noop-service --data-dir DIR --control-socket PATH\n"); return 64; }
    }
    if (!data_dir || !control_socket) return 64;
    report_sd_listen_fds();
    if (forge_hello) send_forged_hello();
    CHECK(handoff_set_log_callback(log_line, NULL, &err_), "log callback");

    handoff_inherited *inherited = NULL;
    CHECK(handoff_inherited_detect(&inherited, &err_), "detect");
    handoff_lock *lock = NULL;
    handoff_incumbent *incumbent = NULL;
    int listener = -1;
    if (handoff_inherited_is_successor(inherited)) {
        handoff_successor *successor = NULL;
        if (delay_hello_ms)
            nanosleep(&(struct timespec){(time_t)(delay_hello_ms / 1000),
                                        (long)(delay_hello_ms % 1000) * 1000000L},
                      NULL);
        CHECK(handoff_successor_new(inherited, &successor, &err_), "successor");
        CHECK(handoff_successor_handshake(successor, (const uint8_t *)"noop", 4, NULL, &err_), "handshake");
        CHECK(handoff_successor_wait_for_begin(successor, 60000, &err_), "wait for Begin");
        if (exit_before_ready) return 3;
        if (fork_and_hang && fork() == 0) {
            /* A helper process: it sleeps until it is killed. */
            for (;;) pause();
        }
        while (hang_before_ready || fork_and_hang) pause();
        CHECK(handoff_successor_take_listener(successor, "kv", HANDOFF_LISTENER_TCP, &listener, &err_), "listener");
        CHECK(handoff_lock_acquire_with_retry(data_dir, 5000, &lock, &err_), "lock");
        CHECK(handoff_successor_announce_ready(successor, NULL, control_socket, lock, &incumbent, &err_), "ready");
        handoff_successor_free(successor);
    } else {
        CHECK(handoff_inherited_take_listener(inherited, "kv", HANDOFF_LISTENER_TCP, &listener, &err_), "listener");
        CHECK(handoff_lock_acquire_with_retry(data_dir, 2000, &lock, &err_), "lock");
        CHECK(handoff_incumbent_bind(control_socket, lock, &incumbent, &err_), "bind");
    }
    handoff_lock_free(lock);
    handoff_inherited_free(inherited);
    if (liveness_ms)
        CHECK(handoff_incumbent_set_liveness_timeout(incumbent, (uint32_t)liveness_ms, &err_), "liveness");

    handoff_service_callbacks callbacks = {on_drain, on_seal, on_resume, NULL};
    CHECK(handoff_incumbent_start(incumbent, &callbacks, NULL, &err_), "start");
    uint32_t outcome = serve(incumbent, listener);
    handoff_incumbent_free(incumbent);
    close(listener);
    fprintf(stderr, "noop-service[%d] serving ended (%u)\n", (int)getpid(), outcome);
    return outcome == HANDOFF_SERVE_COMMITTED ? 0 : 4;
}
