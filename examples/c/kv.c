/*
 * kv-c: a key-value server over TCP that hands itself off with libhandoff.
 *
 *   kv-c --data-dir DIR --control-socket PATH [--listen tcp://HOST:PORT] [--max-conns N]
 *        [--no-moves] [--verbose]
 *
 * Its client connections move to a successor that adopts them (protocol
 * v2), unless --no-moves: then a handoff closes them, as in protocol v1.
 *
 * One thread runs a poll(2) event loop that owns every connection, the log
 * and the table. libhandoff serves the control socket on a thread of its
 * own and hands the loop its work through one descriptor: when it is
 * readable the loop takes the request (drain, seal, resume, or the end of
 * serving), carries it out across as many iterations as it needs and
 * completes it. No lock, condition variable or wake pipe of our own.
 *
 * The protocol, the log format and the lifecycle are in examples/README.md.
 */
#define _GNU_SOURCE /* accept4, pipe2 */

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <arpa/inet.h>
#include <time.h>
#include <unistd.h>

#include <handoff.h>

#include "kv.h"

#define BUILD_ID "kv-c"
/* A request line is at most MAX_LINE bytes before its '\n'. */
#define MAX_LINE 1024
#define IN_CAP (MAX_LINE + 1)
/* Stop reading a connection while this much output waits for it. */
#define OUT_HIGH (64 * 1024)
/* Connections served at once (--max-conns); more wait in the listener's queue. */
#define DEFAULT_MAX_CONNS 1000
/* How long a draining incumbent waits for the first request of a connection
 * it accepted but has heard nothing from yet (capped by half the budget). */
#define DRAIN_GRACE_MS 1000
/* How long a connection closed with shutdown(SHUT_WR) is read and discarded
 * before close(), so that a late request does not turn into a reset. */
#define LINGER_MS 500
#define ACCEPT_RETRY_MS 100
#define BEGIN_TIMEOUT_MS 60000
#define SUCCESSOR_LOCK_MS 5000
#define COLD_LOCK_MS 2000

/* ---- logging --------------------------------------------------------------- */

static long g_pid;
static bool g_verbose;
static size_t g_max_conns = DEFAULT_MAX_CONNS;
static bool g_moves = true; /* hand connections over / adopt them (v2) */

static void say(const char *fmt, ...)
{
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    fprintf(stderr, "kv-c[%ld] %s\n", g_pid, line);
}

static void on_library_log(void *userdata, uint32_t level, const char *message)
{
    (void)userdata;
    static const char *const names[] = {"?", "error", "warn", "info", "debug"};
    if (level > HANDOFF_LOG_INFO && !g_verbose)
        return;
    fprintf(stderr, "kv-c[%ld] handoff %s: %s\n", g_pid, names[level <= 4 ? level : 0],
            message);
}

/* Log a failed library call and free its error. */
static void report(const char *what, handoff_status status, handoff_error *err)
{
    const char *name = handoff_status_name(status);
    say("error: %s: %s (%s)", what, err ? handoff_error_message(err) : "",
        name ? name : "unknown status");
    handoff_error_free(err);
}

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* ---- the server's state ------------------------------------------------------ */

struct conn {
    int fd;
    bool dead;        /* close at the end of this iteration */
    bool eof;         /* the peer closed its side */
    bool discarding;  /* inside an overlong line: skip to its newline */
    bool lingering;   /* shut down for writing; reading and discarding */
    bool moved;       /* handed to the successor: untouched until the outcome */
    uint64_t linger_until;
    uint64_t served;         /* lines answered */
    uint64_t drain_answered; /* lines answered since the drain began */
    char *out;
    size_t out_len, out_off, out_cap;
    size_t in_len;
    char in[IN_CAP];
};

struct server {
    const char *data_dir;
    const char *control_path;
    int listen_fd;
    char listen_url[160];
    struct kvlog log;
    struct kvmap map;
    handoff_incumbent *inc;

    struct conn **conns;
    size_t nconns, conns_cap;
    bool accepting;
    /* Out of descriptors (EMFILE and the like): the listener is not polled
     * until then, so a full descriptor table is not a busy loop. */
    uint64_t accept_resume_at;
    bool accept_starved; /* logged once per episode */

    handoff_hook_context *drain; /* the drain request in progress, if any */
    uint64_t drain_deadline;

    bool finished;      /* serving ended (committed/superseded): step down */
    bool sealed;        /* the log is fsynced and its descriptor kept for a resume */
    int exit_code;
};

static int sig_r = -1, sig_w = -1;

static void on_signal(int sig)
{
    int saved = errno;
    unsigned char b = (unsigned char)sig;
    if (write(sig_w, &b, 1) < 0) {
        /* full pipe: a signal is already pending */
    }
    errno = saved;
}

static void fatal(const char *fmt, ...)
{
    char line[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    say("fatal: %s", line);
    /* No answer may leave after a failed fsync: exit at once. */
    _exit(1);
}

/* ---- handoff requests ------------------------------------------------------------ */

/* Complete a request: done (failure NULL) or failed with that reason. */
static void complete(handoff_hook_context *r, const char *failure)
{
    handoff_error *err = NULL;
    handoff_status st;
    if (failure != NULL && (st = handoff_hook_fail(r, failure, &err)) != HANDOFF_OK)
        report("handoff_hook_fail", st, err);
    st = handoff_hook_complete(r, failure != NULL, &err);
    if (st != HANDOFF_OK)
        report("handoff_hook_complete", st, err);
}

/* ---- connections --------------------------------------------------------------- */

static size_t out_pending(const struct conn *c)
{
    return c->out_len - c->out_off;
}

static void out_append(struct conn *c, const char *data, size_t len)
{
    if (c->out_off > 0 && c->out_off == c->out_len)
        c->out_off = c->out_len = 0;
    if (c->out_len + len > c->out_cap) {
        size_t cap = c->out_cap ? c->out_cap : 512;
        while (cap < c->out_len + len)
            cap *= 2;
        char *grown = realloc(c->out, cap);
        if (grown == NULL)
            fatal("out of memory");
        c->out = grown;
        c->out_cap = cap;
    }
    memcpy(c->out + c->out_len, data, len);
    c->out_len += len;
}

static void reply(struct conn *c, const char *fmt, ...)
{
    char line[MAX_LINE + 64];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof line - 1, fmt, ap);
    va_end(ap);
    if (n < 0)
        n = 0;
    if ((size_t)n > sizeof line - 2)
        n = (int)sizeof line - 2;
    line[n++] = '\n';
    out_append(c, line, (size_t)n);
}

static void handle_line(struct server *s, struct conn *c, char *line, size_t len)
{
    if (len > 0 && line[len - 1] == '\r')
        len--;
    c->served++;
    if (s->drain != NULL)
        c->drain_answered++;

    /* Split on single spaces: exactly the command's number of fields, none
     * of them empty. */
    const char *field[4];
    size_t flen[4];
    size_t nf = 0;
    bool empty_field = false;
    size_t start = 0;
    for (size_t i = 0; i <= len; i++) {
        if (i == len || line[i] == ' ') {
            if (i == start)
                empty_field = true;
            if (nf < 4) {
                field[nf] = line + start;
                flen[nf] = i - start;
            }
            nf++;
            start = i + 1;
        }
    }
    if (len == 0) {
        reply(c, "ERR empty line");
        return;
    }
#define IS(cmd) (flen[0] == sizeof cmd - 1 && memcmp(field[0], cmd, sizeof cmd - 1) == 0)
    size_t want;
    if (IS("PING"))
        want = 1;
    else if (IS("GET"))
        want = 2;
    else if (IS("SET"))
        want = 3;
    else {
        reply(c, "ERR unknown command");
        return;
    }
    if (empty_field) {
        reply(c, "ERR fields are separated by exactly one space");
        return;
    }
    if (nf != want) {
        reply(c, "ERR wrong number of arguments");
        return;
    }
    if (want >= 2 && !kv_item_valid(field[1], flen[1])) {
        reply(c, "ERR invalid key (1 to 256 printable ASCII bytes, no spaces)");
        return;
    }
    if (want == 3 && !kv_item_valid(field[2], flen[2])) {
        reply(c, "ERR invalid value (1 to 256 printable ASCII bytes, no spaces)");
        return;
    }
    if (IS("PING")) {
        reply(c, "PONG %ld c", g_pid);
    } else if (IS("GET")) {
        const struct kv_item *e = kvmap_get(&s->map, field[1], flen[1]);
        if (e == NULL)
            reply(c, "NOTFOUND");
        else
            reply(c, "VALUE %.*s", (int)e->value_len, kv_item_value(e));
    } else {
        uint64_t generation = handoff_incumbent_generation(s->inc);
        int rc = kvlog_append(&s->log, generation, field[1], flen[1], field[2], flen[2]);
        if (rc == -2)
            fatal("cannot cut a failed write out of %s: %s", s->log.path, strerror(errno));
        if (rc != 0) {
            reply(c, "ERR write failed: %s", strerror(errno));
            return;
        }
        if (kvmap_put(&s->map, field[1], flen[1], field[2], flen[2]) != 0)
            fatal("out of memory");
        /* Queued, and sent only after this iteration's fsync. */
        reply(c, "OK %llu", (unsigned long long)generation);
    }
#undef IS
}

static void process_input(struct server *s, struct conn *c)
{
    size_t start = 0;
    for (;;) {
        char *nl = memchr(c->in + start, '\n', c->in_len - start);
        if (nl == NULL)
            break;
        size_t len = (size_t)(nl - (c->in + start));
        if (c->discarding) {
            c->discarding = false;
            c->served++;
            if (s->drain != NULL)
                c->drain_answered++;
            reply(c, "ERR line too long (at most %d bytes)", MAX_LINE);
        } else {
            handle_line(s, c, c->in + start, len);
        }
        start += len + 1;
    }
    size_t rest = c->in_len - start;
    if (c->discarding) {
        rest = 0; /* still inside the overlong line */
    } else if (rest == IN_CAP) {
        c->discarding = true; /* a full buffer and no newline */
        rest = 0;
    }
    memmove(c->in, c->in + c->in_len - rest, rest);
    c->in_len = rest;
}

static void conn_read(struct server *s, struct conn *c)
{
    for (int round = 0; round < 16 && !c->dead && !c->eof; round++) {
        if (!c->lingering && out_pending(c) >= OUT_HIGH)
            return;
        char discard[4096];
        char *into = c->lingering ? discard : c->in + c->in_len;
        size_t room = c->lingering ? sizeof discard : IN_CAP - c->in_len;
        ssize_t n = recv(c->fd, into, room, 0);
        if (n > 0) {
            if (!c->lingering) {
                c->in_len += (size_t)n;
                process_input(s, c);
            }
        } else if (n == 0) {
            c->eof = true;
        } else if (errno == EINTR) {
            continue;
        } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
            return;
        } else {
            c->dead = true;
        }
    }
}

static void conn_flush(struct conn *c)
{
    while (!c->dead && out_pending(c) > 0) {
        ssize_t n = send(c->fd, c->out + c->out_off, out_pending(c), MSG_NOSIGNAL);
        if (n > 0) {
            c->out_off += (size_t)n;
        } else if (n < 0 && errno == EINTR) {
            continue;
        } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            return;
        } else {
            c->dead = true;
        }
    }
    if (c->out_off == c->out_len)
        c->out_off = c->out_len = 0;
}

/* Close gracefully: FIN after the answers already sent, then read and
 * discard for a while, so that a request racing the close is not answered
 * by a reset that could destroy answers the client has not read yet. */
static void conn_linger(struct conn *c)
{
    if (c->lingering || c->dead)
        return;
    if (shutdown(c->fd, SHUT_WR) != 0 || c->eof) {
        c->dead = true;
        return;
    }
    c->lingering = true;
    c->in_len = 0;
    c->linger_until = now_ms() + LINGER_MS;
}

static void conn_free(struct conn *c)
{
    close(c->fd);
    free(c->out);
    free(c);
}

static void add_conn(struct server *s, int fd)
{
    if (s->nconns == s->conns_cap) {
        size_t cap = s->conns_cap ? s->conns_cap * 2 : 16;
        struct conn **grown = realloc(s->conns, cap * sizeof *grown);
        if (grown == NULL)
            fatal("out of memory");
        s->conns = grown;
        s->conns_cap = cap;
    }
    struct conn *c = calloc(1, sizeof *c);
    if (c == NULL)
        fatal("out of memory");
    c->fd = fd;
    s->conns[s->nconns++] = c;
}

static void reap_conns(struct server *s)
{
    size_t kept = 0;
    for (size_t i = 0; i < s->nconns; i++) {
        struct conn *c = s->conns[i];
        if (c->dead)
            conn_free(c);
        else
            s->conns[kept++] = c;
    }
    s->nconns = kept;
}

static size_t live_conns(const struct server *s)
{
    size_t n = 0;
    for (size_t i = 0; i < s->nconns; i++)
        n += !s->conns[i]->lingering && !s->conns[i]->moved;
    return n;
}

/* Accept what is waiting. The listener's O_NONBLOCK flag is shared with the
 * supervisor and every other generation (DESIGN §3) and is never changed
 * here: poll said it is readable; a non-blocking listener is accepted from
 * until EAGAIN, a blocking one once per poll. */
static void accept_some(struct server *s)
{
    int flags = fcntl(s->listen_fd, F_GETFL);
    int tries = (flags >= 0 && (flags & O_NONBLOCK)) ? 64 : 1;
    while (tries-- > 0 && s->nconns < g_max_conns) {
        int fd = accept4(s->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                /* The connection stays queued; try again in a tick. */
                if (!s->accept_starved)
                    say("accept: %s; retrying every %d ms", strerror(errno), ACCEPT_RETRY_MS);
                s->accept_starved = true;
                s->accept_resume_at = now_ms() + ACCEPT_RETRY_MS;
            } else if (errno != EAGAIN && errno != EWOULDBLOCK) {
                say("accept: %s", strerror(errno));
            }
            return;
        }
        if (s->accept_starved) {
            say("accepting again");
            s->accept_starved = false;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        add_conn(s, fd);
    }
}

/* Accept what is queued now, without waiting. */
static void accept_queued(struct server *s)
{
    struct pollfd listener = {.fd = s->listen_fd, .events = POLLIN};
    if (poll(&listener, 1, 0) == 1 && (listener.revents & POLLIN))
        accept_some(s);
}

/* ---- handoff requests, carried out by the event loop -------------------------- */

/* A drain that may move descriptors (protocol v2): every connection goes to
 * the successor at once, with its partial line and all its unsent answers,
 * instead of being drained. One whose peer closed its side moves too: the
 * successor writes what is owed, reads the end of file and closes it.
 * Nothing is fsynced or sent here: the seal, which the library queues right
 * behind this drain, makes this iteration's writes durable, and no answer
 * to them leaves before that: the successor writes the carried answers only
 * once it holds the lock (after the seal), and after an abort this loop's
 * group commit comes before any send. The library and the supervisor pass
 * the connections on while that fsync runs (drain to first accept under
 * load: 1.33 to 1.24 ms at the median, timestamps). */
static void move_conns(struct server *s)
{
    handoff_hook_context *r = s->drain;
    s->drain = NULL;
    size_t moved = 0;
    for (size_t i = 0; i < s->nconns; i++) {
        struct conn *c = s->conns[i];
        if (c->dead || c->lingering)
            continue;
        uint8_t state = c->discarding; /* inside an overlong line */
        handoff_error *err = NULL;
        handoff_status st = handoff_hook_move(
            r, HANDOFF_ITEM_CONNECTION, "kv", c->fd, (const uint8_t *)c->in, c->in_len,
            (const uint8_t *)c->out + c->out_off, out_pending(c), &state, 1, &err);
        if (st != HANDOFF_OK) {
            report("handoff_hook_move", st, err);
            for (size_t j = 0; j < i; j++)
                s->conns[j]->moved = false;
            complete(r, "cannot move a connection");
            return;
        }
        c->moved = true;
        moved++;
    }
    reap_conns(s);
    say("moving %zu connection(s) to the successor", moved);
    complete(r, NULL);
}

static void drain_step(struct server *s)
{
    if (s->drain == NULL)
        return;
    if (handoff_hook_moves(s->drain)) {
        move_conns(s);
        return;
    }
    uint64_t now = now_ms();
    bool late = now >= s->drain_deadline;
    for (size_t i = 0; i < s->nconns; i++) {
        struct conn *c = s->conns[i];
        if (c->dead || c->lingering)
            continue;
        if (out_pending(c) > 0) {
            if (late)
                c->dead = true;
            continue;
        }
        /* Answered the request in progress; idle between requests; closed
         * by the peer; or out of time. A connection that has not sent its
         * first request yet (or sent part of a line) gets until the deadline. */
        if (c->drain_answered > 0 || (c->served > 0 && c->in_len == 0 && !c->discarding) ||
            c->eof || late)
            conn_linger(c);
    }
    reap_conns(s);
    if (live_conns(s) > 0)
        return;
    handoff_hook_context *r = s->drain;
    s->drain = NULL;
    if (kvlog_sync(&s->log) != 0)
        fatal("fsync %s: %s", s->log.path, strerror(errno));
    complete(r, NULL); /* the default report: nothing left open, accepting closed */
}

/* Open the log (going on from a preload) and compact it when due, stamping
 * compacted records with `generation`: the lock generation now held. */
static int reopen_log(struct server *s, uint64_t generation, char *reason, size_t len)
{
    bool preloaded = s->log.preloaded;
    uint64_t preload_records = s->log.preload_records;
    if (!preloaded)
        kvmap_free(&s->map);
    if (kvlog_open(&s->log, s->data_dir, &s->map, reason, len) != 0)
        return -1;
    if (preloaded && s->log.preload_kept == preload_records)
        say("kept %llu preloaded record(s), replayed %llu appended since",
            (unsigned long long)preload_records,
            (unsigned long long)(s->log.records - preload_records));
    else if (preloaded)
        say("the log changed under the preload: replayed all %llu record(s)",
            (unsigned long long)s->log.records);
    if (s->log.truncated > 0)
        say("truncated a torn tail of %llu bytes from %s", (unsigned long long)s->log.truncated,
            s->log.path);
    if (!kvlog_compaction_due(s->log.records, s->map.len))
        return 0;
    uint64_t before = s->log.records, started = now_ms();
    int rc = kvlog_compact(&s->log, &s->map, generation, reason, len);
    if (rc < 0)
        return -1;
    if (rc > 0)
        say("compaction failed (the log is kept as it is): %s", reason);
    else
        say("compacted the log: %llu record(s) -> %llu in %llu ms", (unsigned long long)before,
            (unsigned long long)s->log.records, (unsigned long long)(now_ms() - started));
    return 0;
}

/* Serving has ended (committed, superseded or stopped): say how, and step down. */
static void ended(struct server *s)
{
    uint32_t outcome = 0;
    handoff_error *err = NULL;
    handoff_status st = handoff_incumbent_wait(s->inc, 0, &outcome, &err);
    s->finished = true;
    s->accepting = false;
    s->drain = NULL;
    /* The successor has the moved connections: close our copies (never
     * shutdown, which would end them for the successor too). */
    for (size_t i = 0; i < s->nconns; i++)
        if (s->conns[i]->moved)
            s->conns[i]->dead = true;
    reap_conns(s);
    if (st != HANDOFF_OK) {
        report("handoff_incumbent_wait", st, err);
        s->exit_code = 1;
        return;
    }
    switch (outcome) {
    case HANDOFF_SERVE_COMMITTED:
        say("handoff committed: stepping down");
        s->exit_code = 0;
        break;
    case HANDOFF_SERVE_SUPERSEDED:
        say("superseded by another holder of the data dir: stepping down without writing");
        s->exit_code = 0;
        break;
    default:
        say("serving stopped (outcome %u)", outcome);
        s->exit_code = 1;
        break;
    }
}

static void seal(struct server *s, handoff_hook_context *r)
{
    uint64_t records = s->log.records;
    /* fsynced, not closed: a resume at the descriptor limit closes this one
     * to reopen the log by its path (a successor may have replaced it).
     * Fatal, as in the group commit: the answers a moving drain carried wait
     * for this fsync, and none may leave after it failed (a later fsync may
     * report success for pages the kernel dropped). */
    if (kvlog_sync(&s->log) != 0)
        fatal("seal: fsync %s: %s", s->log.path, strerror(errno));
    handoff_error *err = NULL;
    handoff_status st = handoff_hook_push_revision(r, records, &err);
    if (st != HANDOFF_OK) {
        report("handoff_hook_push_revision", st, err);
        complete(r, "cannot report the revision");
        return;
    }
    s->sealed = true;
    say("sealed at revision %llu", (unsigned long long)records);
    complete(r, NULL);
}

static void resume(struct server *s, handoff_hook_context *r)
{
    char reason[256];
    /* Moved connections are ours again, flags restored by the library (and
     * closed by the step-down below if the log cannot be reopened). */
    for (size_t i = 0; i < s->nconns; i++)
        s->conns[i]->moved = false;
    if (s->sealed) {
        s->sealed = false;
        (void)kvlog_close(&s->log); /* already fsynced by the seal */
        if (reopen_log(s, handoff_incumbent_generation(s->inc), reason, sizeof reason) != 0) {
            say("cannot reopen the log to resume: %s", reason);
            complete(r, reason);
            s->finished = true;
            s->exit_code = 1;
            return;
        }
    }
    s->accepting = true;
    say("resumed after an aborted handoff (generation %llu)",
        (unsigned long long)handoff_incumbent_generation(s->inc));
    complete(r, NULL);
}

/* Take every request waiting on the request descriptor. A drain is only
 * begun here: drain_step() completes it in a later iteration. */
static void take_requests(struct server *s)
{
    for (;;) {
        handoff_hook_context *r = NULL;
        uint32_t kind = HANDOFF_REQUEST_NONE;
        handoff_error *err = NULL;
        handoff_status st = handoff_incumbent_take_request(s->inc, &r, &kind, &err);
        if (st != HANDOFF_OK) {
            report("handoff_incumbent_take_request", st, err);
            return;
        }
        switch (kind) {
        case HANDOFF_REQUEST_NONE:
            return;
        case HANDOFF_REQUEST_DRAIN: {
            uint64_t budget_ms = handoff_hook_time_left_ms(r);
            uint64_t grace = budget_ms / 2 < DRAIN_GRACE_MS ? budget_ms / 2 : DRAIN_GRACE_MS;
            say("draining %zu connection(s)", live_conns(s));
            s->accepting = false;
            s->drain = r;
            s->drain_deadline = now_ms() + grace;
            drain_step(s);
            break;
        }
        case HANDOFF_REQUEST_SEAL:
            seal(s, r);
            break;
        case HANDOFF_REQUEST_RESUME:
            resume(s, r);
            break;
        case HANDOFF_REQUEST_ENDED:
            ended(s);
            return;
        default:
            say("unknown handoff request %u", kind);
            return;
        }
    }
}

/* ---- the event loop -------------------------------------------------------------- */

static void serve(struct server *s)
{
    struct pollfd *pfds = NULL;
    size_t pfds_cap = 0;
    /* Adopted connections: their carried output goes first (the loop
     * flushes it), then their carried input is answered. */
    for (size_t i = 0; i < s->nconns; i++)
        process_input(s, s->conns[i]);
    for (;;) {
        if (s->finished && s->nconns == 0)
            break;
        size_t need = 3 + s->nconns;
        if (need > pfds_cap) {
            struct pollfd *grown = realloc(pfds, need * 2 * sizeof *grown);
            if (grown == NULL)
                fatal("out of memory");
            pfds = grown;
            pfds_cap = need * 2;
        }
        size_t n = 0;
        pfds[n++] = (struct pollfd){.fd = sig_r, .events = POLLIN};
        pfds[n++] = (struct pollfd){.fd = handoff_incumbent_request_fd(s->inc), .events = POLLIN};
        size_t listener_at = SIZE_MAX;
        uint64_t now = now_ms();
        if (s->accepting && !s->finished && s->nconns < g_max_conns &&
            now >= s->accept_resume_at) {
            listener_at = n;
            pfds[n++] = (struct pollfd){.fd = s->listen_fd, .events = POLLIN};
        }
        size_t first_conn = n, polled = s->nconns;
        /* Nothing timed to do: sleep until a descriptor wakes the loop. */
        uint64_t wake_at = UINT64_MAX;
        if (s->accepting && !s->finished && now < s->accept_resume_at)
            wake_at = s->accept_resume_at;
        for (size_t i = 0; i < polled; i++) {
            struct conn *c = s->conns[i];
            if (c->moved) {
                pfds[n++] = (struct pollfd){.fd = -1}; /* poll skips it */
                continue;
            }
            short events = 0;
            if (!c->eof && (c->lingering || out_pending(c) < OUT_HIGH))
                events |= POLLIN;
            if (out_pending(c) > 0)
                events |= POLLOUT;
            if (c->lingering && c->linger_until < wake_at)
                wake_at = c->linger_until;
            pfds[n++] = (struct pollfd){.fd = c->fd, .events = events};
        }
        if (s->drain != NULL && s->drain_deadline < wake_at)
            wake_at = s->drain_deadline;
        int timeout = -1;
        if (wake_at != UINT64_MAX)
            timeout = wake_at <= now ? 0 : wake_at - now > INT_MAX ? INT_MAX : (int)(wake_at - now);

        if (poll(pfds, n, timeout) < 0 && errno != EINTR)
            fatal("poll: %s", strerror(errno));

        if (pfds[0].revents) {
            unsigned char sig = 0;
            if (read(sig_r, &sig, 1) == 1)
                say("signal %d: shutting down", sig);
            break;
        }
        /* Requests that have arrived are read before a drain is taken up,
         * so that they are answered rather than cut off. */
        for (size_t i = 0; i < polled; i++) {
            struct conn *c = s->conns[i];
            short re = pfds[first_conn + i].revents;
            if (re & (POLLIN | POLLHUP | POLLERR))
                conn_read(s, c);
        }
        if (listener_at != SIZE_MAX && (pfds[listener_at].revents & POLLIN) && s->accepting)
            accept_some(s);
        if (pfds[1].revents)
            take_requests(s);

        /* Group commit: every write of this iteration is made durable before
         * any answer leaves, so no client sees a value that could be lost. */
        if (kvlog_sync(&s->log) != 0)
            fatal("fsync %s: %s", s->log.path, strerror(errno));

        now = now_ms();
        for (size_t i = 0; i < s->nconns; i++) {
            struct conn *c = s->conns[i];
            if (c->moved)
                continue;
            conn_flush(c);
            if (c->lingering && (c->eof || now >= c->linger_until))
                c->dead = true;
            else if (!c->lingering && c->eof && out_pending(c) == 0)
                c->dead = true;
        }
        reap_conns(s);
        drain_step(s);
        if (s->finished) {
            /* Stepping down: everything was drained; let lingering
             * connections run out. */
            for (size_t i = 0; i < s->nconns; i++)
                conn_linger(s->conns[i]);
            reap_conns(s);
        }
    }
    free(pfds);
}

/* ---- start-up ------------------------------------------------------------------ */

struct options {
    const char *data_dir;
    const char *control_socket;
    const char *listen;
    const char *max_conns;
};

static void usage(FILE *to)
{
    fprintf(to, "usage: kv-c --data-dir DIR --control-socket PATH [--listen tcp://HOST:PORT] "
                "[--max-conns N] [--no-moves] [--verbose]\n");
}

static int parse_args(int argc, char **argv, struct options *o)
{
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        const char **slot = NULL;
        const char *names[] = {"--data-dir", "--control-socket", "--listen", "--max-conns"};
        const char **slots[] = {&o->data_dir, &o->control_socket, &o->listen, &o->max_conns};
        if (strcmp(arg, "--verbose") == 0) {
            g_verbose = true;
            continue;
        }
        if (strcmp(arg, "--no-moves") == 0) {
            g_moves = false;
            continue;
        }
        if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) {
            usage(stdout);
            exit(0);
        }
        const char *value = NULL;
        for (size_t k = 0; k < 4; k++) {
            size_t len = strlen(names[k]);
            if (strcmp(arg, names[k]) == 0) {
                slot = slots[k];
                if (i + 1 >= argc) {
                    fprintf(stderr, "kv-c: %s needs a value\n", arg);
                    return -1;
                }
                value = argv[++i];
            } else if (strncmp(arg, names[k], len) == 0 && arg[len] == '=') {
                slot = slots[k];
                value = arg + len + 1;
            }
        }
        if (slot == NULL) {
            fprintf(stderr, "kv-c: unknown argument %s\n", arg);
            return -1;
        }
        *slot = value;
    }
    if (o->data_dir == NULL || o->control_socket == NULL) {
        fprintf(stderr, "kv-c: --data-dir and --control-socket are required\n");
        return -1;
    }
    if (o->max_conns != NULL) {
        char *end = NULL;
        errno = 0;
        unsigned long n = strtoul(o->max_conns, &end, 10);
        if (errno != 0 || end == o->max_conns || *end != '\0' || n < 1 || n > 1000000 ||
            o->max_conns[0] == '-') {
            fprintf(stderr, "kv-c: --max-conns %s: expected 1 to 1000000\n", o->max_conns);
            return -1;
        }
        g_max_conns = (size_t)n;
    }
    return 0;
}

static void describe_listener(struct server *s)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    char host[INET6_ADDRSTRLEN] = "?";
    unsigned port = 0;
    if (getsockname(s->listen_fd, (struct sockaddr *)&ss, &len) == 0) {
        if (ss.ss_family == AF_INET) {
            struct sockaddr_in *in = (struct sockaddr_in *)&ss;
            inet_ntop(AF_INET, &in->sin_addr, host, sizeof host);
            port = ntohs(in->sin_port);
        } else if (ss.ss_family == AF_INET6) {
            struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;
            inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof host);
            port = ntohs(in6->sin6_port);
            char bracketed[INET6_ADDRSTRLEN + 2];
            snprintf(bracketed, sizeof bracketed, "[%s]", host);
            snprintf(s->listen_url, sizeof s->listen_url, "tcp://%s:%u", bracketed, port);
            return;
        }
    }
    snprintf(s->listen_url, sizeof s->listen_url, "tcp://%s:%u", host, port);
}

/* --listen tcp://HOST:PORT (HOST may be [v6]). -1 on failure. */
static int bind_listener(const char *url)
{
    const char *prefix = "tcp://";
    if (strncmp(url, prefix, strlen(prefix)) != 0) {
        say("error: --listen %s: expected tcp://HOST:PORT", url);
        return -1;
    }
    char host[256];
    const char *rest = url + strlen(prefix);
    const char *colon;
    if (rest[0] == '[') {
        const char *close = strchr(rest, ']');
        if (close == NULL || close[1] != ':' || (size_t)(close - rest - 1) >= sizeof host) {
            say("error: --listen %s: bad IPv6 address", url);
            return -1;
        }
        memcpy(host, rest + 1, (size_t)(close - rest - 1));
        host[close - rest - 1] = '\0';
        colon = close + 1;
    } else {
        colon = strrchr(rest, ':');
        if (colon == NULL || (size_t)(colon - rest) >= sizeof host) {
            say("error: --listen %s: expected tcp://HOST:PORT", url);
            return -1;
        }
        memcpy(host, rest, (size_t)(colon - rest));
        host[colon - rest] = '\0';
    }
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
    struct addrinfo *res = NULL;
    int gai = getaddrinfo(host[0] ? host : NULL, colon + 1, &hints, &res);
    if (gai != 0) {
        say("error: --listen %s: %s", url, gai_strerror(gai));
        return -1;
    }
    int fd = -1;
    for (struct addrinfo *ai = res; ai != NULL && fd < 0; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
        if (fd < 0)
            continue;
        int one = 1;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (bind(fd, ai->ai_addr, ai->ai_addrlen) != 0 || listen(fd, SOMAXCONN) != 0) {
            say("error: --listen %s: %s", url, strerror(errno));
            close(fd);
            fd = -1;
        }
    }
    freeaddrinfo(res);
    return fd;
}

/* The listener named "kv" from the supervisor (cold start), else --listen. */
static int cold_listener(handoff_inherited *inherited, const struct options *o)
{
    size_t count = handoff_inherited_listener_count(inherited);
    for (size_t i = 0; i < count; i++) {
        const char *name = NULL;
        handoff_error *err = NULL;
        handoff_status st = handoff_inherited_listener_name(inherited, i, &name, &err);
        if (st != HANDOFF_OK) {
            report("handoff_inherited_listener_name", st, err);
            return -1;
        }
        if (strcmp(name, "kv") == 0) {
            int fd = -1;
            st = handoff_inherited_take_listener(inherited, "kv", HANDOFF_LISTENER_TCP, &fd, &err);
            if (st != HANDOFF_OK) {
                report("taking the inherited listener kv", st, err);
                return -1;
            }
            return fd;
        }
    }
    if (o->listen != NULL)
        return bind_listener(o->listen);
    say("error: no listener named kv was inherited and --listen was not given");
    return -1;
}

static handoff_lock *cold_lock(const char *data_dir)
{
    handoff_lock *lock = NULL;
    handoff_error *err = NULL;
    handoff_status st = handoff_lock_acquire(data_dir, &lock, &err);
    if (st == HANDOFF_ERR_LOCK_HELD) {
        say("data dir %s is locked (%s); retrying for %d ms", data_dir,
            handoff_error_message(err), COLD_LOCK_MS);
        handoff_error_free(err);
        err = NULL;
        st = handoff_lock_acquire_with_retry(data_dir, COLD_LOCK_MS, &lock, &err);
    }
    if (st != HANDOFF_OK) {
        report("cannot lock the data dir", st, err);
        return NULL;
    }
    return lock;
}

static int open_state(struct server *s, const handoff_lock *lock)
{
    char reason[512];
    if (reopen_log(s, handoff_lock_generation(lock), reason, sizeof reason) != 0) {
        say("error: %s", reason);
        return -1;
    }
    return 0;
}

/* Cold start: listener, lock, log, control socket. */
static int start_cold(struct server *s, handoff_inherited *inherited, const struct options *o)
{
    s->listen_fd = cold_listener(inherited, o);
    handoff_inherited_free(inherited);
    if (s->listen_fd < 0)
        return -1;
    handoff_lock *lock = cold_lock(s->data_dir);
    if (lock == NULL)
        return -1;
    if (open_state(s, lock) != 0) {
        handoff_lock_free(lock);
        return -1;
    }
    handoff_error *err = NULL;
    handoff_status st = handoff_incumbent_bind(s->control_path, lock, &s->inc, &err);
    handoff_lock_free(lock); /* empty on success; releases it on failure */
    if (st != HANDOFF_OK) {
        report("handoff_incumbent_bind", st, err);
        return -1;
    }
    describe_listener(s);
    say("cold start on %s: generation %llu, %llu record(s)", s->listen_url,
        (unsigned long long)handoff_incumbent_generation(s->inc),
        (unsigned long long)s->log.records);
    return 0;
}

/* Replay the incumbent's log read-only while it still serves, so that after
 * the seal only the records appended since are left to replay: the service
 * accepts nobody between the drain and Ready, and this keeps that short.
 * Done before the handshake, because the supervisor drains the incumbent as
 * soon as the successor's Hello arrives. */
static int preload_state(struct server *s)
{
    char reason[512];
    uint64_t started = now_ms();
    int rc = kvlog_preload(&s->log, s->data_dir, &s->map, reason, sizeof reason);
    if (rc < 0) {
        say("error: preloading the log: %s", reason);
        return -1;
    }
    if (rc > 0) {
        say("no preload (the whole log is replayed after the lock): %s", reason);
        return 0;
    }
    say("preloaded %llu record(s) in %llu ms", (unsigned long long)s->log.preload_records,
        (unsigned long long)(now_ms() - started));
    return 0;
}

/* What the incumbent moved, taken with the lock held; served from Ready on. */
static int adopt_conns(struct server *s, handoff_successor *succ, const handoff_lock *lock)
{
    handoff_items *items = NULL;
    handoff_error *err = NULL;
    handoff_status st = handoff_successor_adopt(succ, lock, &items, &err);
    if (st != HANDOFF_OK) {
        report("handoff_successor_adopt", st, err);
        return -1;
    }
    size_t count = handoff_items_count(items);
    for (size_t i = 0; i < count; i++) {
        const uint8_t *unread = NULL, *unwritten = NULL, *state = NULL;
        size_t unread_len = 0, unwritten_len = 0, state_len = 0;
        if (handoff_items_kind(items, i) != HANDOFF_ITEM_CONNECTION ||
            !handoff_items_bytes(items, i, HANDOFF_ITEM_PART_UNREAD, &unread, &unread_len) ||
            !handoff_items_bytes(items, i, HANDOFF_ITEM_PART_UNWRITTEN, &unwritten,
                                 &unwritten_len) ||
            !handoff_items_bytes(items, i, HANDOFF_ITEM_PART_STATE, &state, &state_len) ||
            unread_len > IN_CAP) {
            say("error: moved item %zu is not a connection this service can take", i);
            handoff_items_free(items);
            return -1;
        }
        int fd = handoff_items_take_fd(items, i);
        int flags = fcntl(fd, F_GETFL);
        if (flags >= 0 && !(flags & O_NONBLOCK))
            fcntl(fd, F_SETFL, flags | O_NONBLOCK);
        add_conn(s, fd);
        struct conn *c = s->conns[s->nconns - 1];
        memcpy(c->in, unread, unread_len);
        c->in_len = unread_len;
        c->discarding = state_len > 0 && state[0] != 0;
        if (unwritten_len > 0)
            out_append(c, (const char *)unwritten, unwritten_len);
    }
    handoff_items_free(items);
    if (count > 0)
        say("adopted %zu connection(s)", count);
    return 0;
}

/* Successor: preload, handshake, Begin, then (and only then) listener, lock,
 * the rest of the log, Ready. -1 on failure; before Begin nothing in the
 * data dir was written. */
static int start_successor(struct server *s, handoff_inherited *inherited)
{
    handoff_successor *succ = NULL;
    handoff_error *err = NULL;
    handoff_status st = handoff_successor_new(inherited, &succ, &err);
    handoff_inherited_free(inherited);
    if (st != HANDOFF_OK) {
        report("handoff_successor_new", st, err);
        return -1;
    }
    int rc = -1;
    handoff_lock *lock = NULL;
    handoff_message *ready = NULL;

    if (preload_state(s) != 0)
        goto out;
    st = handoff_successor_set_adopts_descriptors(succ, g_moves, &err);
    if (st != HANDOFF_OK) {
        report("handoff_successor_set_adopts_descriptors", st, err);
        goto out;
    }
    st = handoff_successor_handshake(succ, (const uint8_t *)BUILD_ID, strlen(BUILD_ID), NULL,
                                     &err);
    if (st != HANDOFF_OK) {
        report("handshake with the supervisor", st, err);
        goto out;
    }
    /* Started before Begin so that its thread is not started in the
     * blackout; it beats from Begin to Ready. */
    st = handoff_successor_start_heartbeats(succ, &err);
    if (st != HANDOFF_OK) {
        report("handoff_successor_start_heartbeats", st, err);
        goto out;
    }
    st = handoff_successor_wait_for_begin(succ, BEGIN_TIMEOUT_MS, &err);
    if (st != HANDOFF_OK) {
        /* ABORTED, PEER_CLOSED or TIMEOUT: the handoff is over; leave the
         * data dir alone. */
        report("the handoff did not begin", st, err);
        goto out;
    }
    st = handoff_successor_take_listener(succ, "kv", HANDOFF_LISTENER_TCP, &s->listen_fd, &err);
    if (st != HANDOFF_OK) {
        report("taking the listener kv", st, err);
        goto out;
    }
    /* Invariant 5: nothing is written before the lock is held. */
    st = handoff_lock_acquire_with_retry(s->data_dir, SUCCESSOR_LOCK_MS, &lock, &err);
    if (st != HANDOFF_OK) {
        report("cannot lock the data dir", st, err);
        goto out;
    }
    if (open_state(s, lock) != 0)
        goto out;
    if (adopt_conns(s, succ, lock) != 0)
        goto out;
    describe_listener(s);

    st = handoff_message_new(HANDOFF_MSG_READY, &ready, &err);
    if (st == HANDOFF_OK)
        st = handoff_message_push_bytes(ready, HANDOFF_FIELD_LISTENING_ON,
                                        (const uint8_t *)s->listen_url, strlen(s->listen_url),
                                        &err);
    if (st == HANDOFF_OK)
        st = handoff_message_set_bool(ready, HANDOFF_FIELD_HEALTHZ_OK, true, &err);
    if (st == HANDOFF_OK)
        st = handoff_message_push_uint(ready, HANDOFF_FIELD_ADVERTISED_REVISION_PER_SHARD,
                                       s->log.records, &err);
    if (st != HANDOFF_OK) {
        report("building the Ready message", st, err);
        goto out;
    }
    st = handoff_successor_announce_ready(succ, ready, s->control_path, lock, &s->inc, &err);
    if (st != HANDOFF_OK) {
        report("handoff_successor_announce_ready", st, err);
        goto out;
    }
    say("took over on %s: generation %llu, %llu record(s)", s->listen_url,
        (unsigned long long)handoff_incumbent_generation(s->inc),
        (unsigned long long)s->log.records);
    rc = 0;
out:
    handoff_message_free(ready);
    handoff_lock_free(lock); /* empty once it moved into the incumbent */
    handoff_successor_free(succ);
    return rc;
}

static int server_init(struct server *s, const struct options *o)
{
    memset(s, 0, sizeof *s);
    s->data_dir = o->data_dir;
    s->control_path = o->control_socket;
    s->listen_fd = -1;
    kvlog_init(&s->log);
    kvmap_init(&s->map);
    return 0;
}

static void server_free(struct server *s)
{
    /* The log is closed (fsynced) before the lock goes with the incumbent. */
    if (s->log.fd >= 0 && kvlog_close(&s->log) != 0)
        say("closing the log: %s", strerror(errno));
    handoff_incumbent_free(s->inc);
    s->inc = NULL;
    for (size_t i = 0; i < s->nconns; i++)
        conn_free(s->conns[i]);
    free(s->conns);
    if (s->listen_fd >= 0)
        close(s->listen_fd);
    kvlog_free(&s->log);
    kvmap_free(&s->map);
}

static int install_signals(void)
{
    int fds[2];
    if (pipe2(fds, O_NONBLOCK | O_CLOEXEC) != 0)
        return -1;
    sig_r = fds[0];
    sig_w = fds[1];
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    if (sigaction(SIGTERM, &sa, NULL) != 0 || sigaction(SIGINT, &sa, NULL) != 0)
        return -1;
    return 0;
}

int main(int argc, char **argv)
{
    g_pid = (long)getpid();
    struct options o = {0};
    if (parse_args(argc, argv, &o) != 0) {
        usage(stderr);
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);

    handoff_error *err = NULL;
    handoff_status st = handoff_set_log_callback(on_library_log, NULL, &err);
    if (st != HANDOFF_OK) {
        report("handoff_set_log_callback", st, err);
        return 1;
    }
    struct server s;
    int rc = 1;
    if (server_init(&s, &o) != 0)
        goto done;

    handoff_inherited *inherited = NULL;
    st = handoff_inherited_detect(&inherited, &err);
    if (st != HANDOFF_OK) {
        report("handoff_inherited_detect", st, err);
        goto done;
    }
    bool successor = handoff_inherited_is_successor(inherited);
    if ((successor ? start_successor(&s, inherited) : start_cold(&s, inherited, &o)) != 0)
        goto done;
    s.accepting = true;
    /* A successor is in the handoff's blackout until its first accept:
     * the connections queued meanwhile are taken before the signal
     * handlers and the library's loop thread start (0.08 ms here). */
    if (successor)
        accept_queued(&s);

    /* From here on SIGTERM/SIGINT stop the service cleanly (before, the
     * default action is right: a successor killed before Ready leaves
     * nothing behind). */
    if (install_signals() != 0) {
        say("error: cannot install signal handlers: %s", strerror(errno));
        goto done;
    }
    st = handoff_incumbent_set_build_id(s.inc, (const uint8_t *)BUILD_ID, strlen(BUILD_ID), &err);
    if (st != HANDOFF_OK) {
        report("handoff_incumbent_set_build_id", st, err);
        goto done;
    }
    st = handoff_incumbent_set_moves_descriptors(s.inc, g_moves, &err);
    if (st == HANDOFF_OK)
        st = handoff_incumbent_start_loop(s.inc, &err);
    if (st != HANDOFF_OK) {
        report("handoff_incumbent_start_loop", st, err);
        goto done;
    }
    serve(&s);
    if (!s.finished) {
        /* Stopped by a signal: roll back a handoff in progress (the drain
         * we hold fails) and stop the serve thread. */
        st = handoff_incumbent_stop(s.inc, &err);
        if (st != HANDOFF_OK)
            report("handoff_incumbent_stop", st, err);
        s.exit_code = 0;
    }
    rc = s.exit_code;
    say("exiting with status %d", rc);
done:
    server_free(&s);
    if (sig_r >= 0)
        close(sig_r);
    if (sig_w >= 0)
        close(sig_w);
    st = handoff_set_log_callback(NULL, NULL, &err);
    if (st != HANDOFF_OK)
        report("handoff_set_log_callback", st, err);
    return rc;
}
