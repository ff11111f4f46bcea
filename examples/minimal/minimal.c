/* minimal-c DATA_DIR CONTROL_SOCKET: the smallest real service on libhandoff's C ABI, to copy as a
 * start: a durable counter on the supervisor's TCP listener "counter" (see README.md). */
#define _GNU_SOURCE /* accept4 */
#include <handoff.h>

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

enum { MAX_CONNS = 64, MAX_LINE = 64 };
static struct conn { int fd; size_t len; char buf[MAX_LINE]; } conns[MAX_CONNS];
static int nconns, listener = -1, log_fd = -1;
static const char *data_dir;
static unsigned long long value;
static handoff_error *err;

static void die(const char *what, const char *why) {
    fprintf(stderr, "minimal-c[%d]: %s: %s\n", (int)getpid(), what, why);
    exit(1); /* before Ready the supervisor rolls back; after it, it restarts the service */
}
static void check(handoff_status status, const char *what) {
    if (status != HANDOFF_OK)
        die(what, handoff_error_message(err));
}

/* Open the log (cold start, successor, resume) and count its whole lines. */
static void open_log(void) {
    char buf[4096];
    int dir = open(data_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    log_fd = dir < 0 ? -1 : openat(dir, "counter.log", O_RDWR | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (log_fd < 0 || fsync(dir) != 0 || close(dir) != 0) /* a new file's name is durable too */
        die("opening the log", strerror(errno));
    ssize_t n;
    for (value = 0; (n = read(log_fd, buf, sizeof buf)) > 0;)
        for (ssize_t i = 0; i < n; i++)
            value += buf[i] == '\n';
    if (n < 0)
        die("reading the log", strerror(errno));
}

/* The answer to one line, put in out; its length. */
static int answer(const char *line, char *out, size_t size) {
    if (strcmp(line, "GET") == 0)
        return snprintf(out, size, "%llu\n", value);
    if (strcmp(line, "PING") == 0)
        return snprintf(out, size, "PONG %d c\n", (int)getpid());
    if (strcmp(line, "INCR") != 0)
        return snprintf(out, size, "ERR unknown command\n");
    int len = snprintf(out, size, "%llu\n", ++value); /* the record is the answer */
    ssize_t written = write(log_fd, out, (size_t)len);
    if (written != len || fdatasync(log_fd) != 0) /* what reached the disk is unknown: never answer */
        die("writing the log", written >= 0 && written < len ? "a short write (disk full?)" : strerror(errno));
    return len;
}

/* Answer every whole line the (readable) connection has sent; 0: close it (an overlong line too). */
static int serve_conn(struct conn *c) {
    ssize_t n = recv(c->fd, c->buf + c->len, MAX_LINE - c->len, MSG_DONTWAIT);
    if (n <= 0)
        return 0;
    c->len += (size_t)n;
    for (char *nl, out[64]; (nl = memchr(c->buf, '\n', c->len)) != NULL;) {
        c->buf[strcspn(c->buf, "\r\n")] = '\0'; /* a line ends in "\n" or "\r\n" */
        int len = answer(c->buf, out, sizeof out);
        if (send(c->fd, out, (size_t)len, MSG_NOSIGNAL) != len)
            return 0; /* non-blocking: a client that lets its answers pile up unread is dropped */
        c->len -= (size_t)(nl + 1 - c->buf);
        memmove(c->buf, nl + 1, c->len);
    }
    return c->len < MAX_LINE;
}

/* The service's own loop: the handoff's requests, the listener, the connections. */
static int serve(handoff_incumbent *inc) {
    for (int accepting = 1;;) {
        struct pollfd fds[2 + MAX_CONNS] = {{handoff_incumbent_request_fd(inc), POLLIN, 0},
                                            {accepting && nconns < MAX_CONNS ? listener : -1, POLLIN, 0}};
        for (int i = 0; i < nconns; i++)
            fds[2 + i] = (struct pollfd){conns[i].fd, POLLIN, 0};
        if (poll(fds, (nfds_t)(2 + nconns), -1) < 0 && errno != EINTR)
            die("poll", strerror(errno));
        for (int i = nconns - 1; i >= 0; i--) /* backwards: the last one moves to i */
            if (fds[2 + i].revents && !serve_conn(&conns[i])) {
                close(conns[i].fd);
                conns[i] = conns[--nconns];
            }
        int fd = fds[1].revents ? accept4(listener, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC) : -1;
        if (fd >= 0) /* polled first: the shared O_NONBLOCK may be either; else skipped (kv-c backs off) */
            conns[nconns++] = (struct conn){.fd = fd};
        handoff_hook_context *req = NULL;
        uint32_t kind = HANDOFF_REQUEST_NONE, outcome = 0;
        check(handoff_incumbent_take_request(inc, &req, &kind, &err), "taking a request"); /* never waits */
        switch (kind) {
        case HANDOFF_REQUEST_DRAIN: /* stop accepting (clients wait in the queue); close */
            for (accepting = 0; nconns > 0;) /* what they had sent by the poll is answered */
                close(conns[--nconns].fd);
            break;
        case HANDOFF_REQUEST_SEAL: /* every record is synced already: close the log */
            close(log_fd);
            log_fd = -1;
            break;
        case HANDOFF_REQUEST_RESUME: /* rolled back: the library holds the lock again */
            if (log_fd < 0)
                open_log();
            accepting = 1;
            break;
        case HANDOFF_REQUEST_ENDED: /* committed (the successor serves) or superseded */
            check(handoff_incumbent_wait(inc, 0, &outcome, &err), "the end of serving");
            return outcome == HANDOFF_SERVE_STOPPED;
        default:
            continue;
        }
        check(handoff_hook_complete(req, HANDOFF_OK, &err), "completing a request");
    }
}

int main(int argc, char **argv) {
    if (argc != 3)
        die("usage", "minimal-c DATA_DIR CONTROL_SOCKET");
    data_dir = argv[1];
    handoff_inherited *inherited = NULL;
    handoff_successor *s = NULL;
    handoff_lock *lock = NULL;
    handoff_incumbent *inc = NULL;
    check(handoff_inherited_detect(&inherited, &err), "detecting the role");
    if (handoff_inherited_is_successor(inherited)) { /* HANDOFF_ROLE=successor */
        check(handoff_successor_new(inherited, &s, &err), "successor");
        check(handoff_successor_handshake(s, (const uint8_t *)"minimal-c", 9, NULL, &err), "handshake");
        check(handoff_successor_start_heartbeats(s, &err), "heartbeats"); /* Begin to Ready: a slow start is not dead */
        check(handoff_successor_wait_for_begin(s, 60000, &err), "waiting for Begin"); /* it drains, seals */
    }
    check(s ? handoff_successor_take_listener(s, "counter", HANDOFF_LISTENER_TCP, &listener, &err)
            : handoff_inherited_take_listener(inherited, "counter", HANDOFF_LISTENER_TCP, &listener, &err),
          "listener counter (run me under a supervisor)");
    check(handoff_lock_acquire_with_retry(data_dir, 5000, &lock, &err), "data-dir lock");
    open_log();
    check(s ? handoff_successor_announce_ready(s, NULL, argv[2], lock, &inc, &err)
            : handoff_incumbent_bind(argv[2], lock, &inc, &err), "becoming the incumbent");
    handoff_successor_free(s);
    handoff_lock_free(lock);           /* empty: the lock moved into the incumbent */
    handoff_inherited_free(inherited); /* closes the listeners not taken */
    check(handoff_incumbent_start_loop(inc, &err), "serving the control socket");
    int status = serve(inc);
    handoff_incumbent_free(inc); /* the log was closed by the seal */
    close(listener);
    return status;
}
