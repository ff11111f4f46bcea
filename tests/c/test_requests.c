/*
 * The incumbent's request API from C: a loop polls handoff_incumbent_request_fd,
 * takes requests and completes them. This test plays the supervisor itself on
 * the real control socket (Hello, HelloAck, PrepareHandoff, then a close), so
 * a real drain and a real resume reach the loop. Bad input answers statuses.
 */
#include "check.h"

#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <sys/stat.h>

extern const char *scratch_dir;

/* Read from `fd` until the reader yields a message; NULL on EOF/error. */
static handoff_message *read_message(int fd, handoff_frame_reader *reader)
{
    for (;;) {
        handoff_message *msg = NULL;
        bool got = false;
        handoff_error *err = NULL;
        if (handoff_frame_reader_next(reader, &msg, &got, &err) != HANDOFF_OK) {
            handoff_error_free(err);
            return NULL;
        }
        if (got)
            return msg;
        uint8_t buf[4096];
        ssize_t n = read(fd, buf, sizeof buf);
        if (n <= 0)
            return NULL;
        if (handoff_frame_reader_feed(reader, buf, (size_t)n, &err) != HANDOFF_OK) {
            handoff_error_free(err);
            return NULL;
        }
    }
}

/* The next message that is not a heartbeat. */
static handoff_message *read_non_heartbeat(int fd, handoff_frame_reader *reader)
{
    for (;;) {
        handoff_message *msg = read_message(fd, reader);
        if (msg == NULL || handoff_message_kind(msg) != HANDOFF_MSG_HEARTBEAT)
            return msg;
        handoff_message_free(msg);
    }
}

static bool send_message(int fd, handoff_message *msg)
{
    uint8_t buf[512];
    size_t needed = 0;
    handoff_error *err = NULL;
    bool ok = CHECK_OK(handoff_message_encode(msg, buf, sizeof buf, &needed, &err), &err);
    handoff_message_free(msg);
    /* MSG_NOSIGNAL: a closed peer is a failed CHECK naming its line, not SIGPIPE. */
    return ok && send(fd, buf, needed, MSG_NOSIGNAL) == (ssize_t)needed;
}

/* Wait (no timeout: the request is coming) for the request descriptor and
 * take one request. */
static uint32_t take(handoff_incumbent *inc, handoff_hook_context **ctx)
{
    struct pollfd p = {.fd = handoff_incumbent_request_fd(inc), .events = POLLIN};
    uint32_t kind = HANDOFF_REQUEST_NONE;
    handoff_error *err = NULL;
    while (kind == HANDOFF_REQUEST_NONE) {
        CHECK(poll(&p, 1, -1) == 1);
        CHECK_OK(handoff_incumbent_take_request(inc, ctx, &kind, &err), &err);
    }
    return kind;
}

static const uint8_t handoff_id[16] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16};

/* Connect to the control socket as the supervisor would and ask for a
 * handoff (Hello in; HelloAck and PrepareHandoff out): the drain follows.
 * Returns the socket; `*reader` reads what the incumbent sends. */
static int prepare_handoff(const char *control, handoff_frame_reader **reader)
{
    handoff_error *err = NULL;
    int sock = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    snprintf(addr.sun_path, sizeof addr.sun_path, "%s", control);
    CHECK(connect(sock, (struct sockaddr *)&addr, sizeof addr) == 0);
    CHECK_OK(handoff_frame_reader_new(reader, &err), &err);
    handoff_message *hello = read_message(sock, *reader);
    CHECK(hello != NULL && handoff_message_kind(hello) == HANDOFF_MSG_HELLO);
    handoff_message_free(hello);
    handoff_message *ack = NULL, *prepare = NULL;
    CHECK_OK(handoff_message_new(HANDOFF_MSG_HELLO_ACK, &ack, &err), &err);
    CHECK_OK(handoff_message_set_uint(ack, HANDOFF_FIELD_PROTO_VERSION_CHOSEN, 1, &err), &err);
    CHECK_OK(handoff_message_set_bytes(ack, HANDOFF_FIELD_HANDOFF_ID, handoff_id, 16, &err),
             &err);
    CHECK(send_message(sock, ack));
    CHECK_OK(handoff_message_new(HANDOFF_MSG_PREPARE_HANDOFF, &prepare, &err), &err);
    CHECK_OK(handoff_message_set_bytes(prepare, HANDOFF_FIELD_HANDOFF_ID, handoff_id, 16, &err),
             &err);
    CHECK_OK(handoff_message_set_uint(prepare, HANDOFF_FIELD_SUCCESSOR_PID, 1, &err), &err);
    CHECK_OK(handoff_message_set_uint(prepare, HANDOFF_FIELD_DEADLINE_MS, 60000, &err), &err);
    CHECK_OK(handoff_message_set_uint(prepare, HANDOFF_FIELD_DRAIN_GRACE_MS, 1000, &err), &err);
    CHECK(send_message(sock, prepare));
    return sock;
}

static handoff_incumbent *bind_incumbent(const char *dir, const char *control)
{
    handoff_error *err = NULL;
    handoff_lock *lock = NULL;
    handoff_incumbent *inc = NULL;
    CHECK_OK(handoff_lock_acquire(dir, &lock, &err), &err);
    CHECK_OK(handoff_incumbent_bind(control, lock, &inc, &err), &err);
    handoff_lock_free(lock);
    return inc;
}

/* What the drain callback saw when it called back into the library. */
struct inside {
    handoff_incumbent *inc;
    handoff_status complete, stop, wait, set_drained;
    int drains, resumes;
};

static int32_t cb_drain(void *userdata, handoff_hook_context *ctx)
{
    struct inside *in = userdata;
    handoff_error *err = NULL;
    uint32_t outcome = 0;
    in->drains++;
    in->set_drained = handoff_hook_set_drained(ctx, 0, true, &err);
    handoff_error_free(err);
    err = NULL;
    in->complete = handoff_hook_complete(ctx, 0, &err);
    handoff_error_free(err);
    err = NULL;
    in->stop = handoff_incumbent_stop(in->inc, &err);
    handoff_error_free(err);
    err = NULL;
    in->wait = handoff_incumbent_wait(in->inc, 0, &outcome, &err);
    handoff_error_free(err);
    return 0;
}

static int32_t cb_seal(void *userdata, handoff_hook_context *ctx)
{
    (void)userdata;
    (void)ctx;
    return 1;
}

static int32_t cb_resume(void *userdata, handoff_hook_context *ctx)
{
    struct inside *in = userdata;
    (void)ctx;
    in->resumes++;
    return 0;
}

static void bad_input(void)
{
    handoff_error *err = NULL;
    handoff_hook_context *ctx = NULL;
    uint32_t kind = 99;
    CHECK_ERR(handoff_incumbent_start_loop(NULL, &err), &err, HANDOFF_ERR_NULL_POINTER);
    CHECK(handoff_incumbent_request_fd(NULL) == -1);
    CHECK_ERR(handoff_incumbent_take_request(NULL, &ctx, &kind, &err), &err,
              HANDOFF_ERR_NULL_POINTER);
    CHECK(ctx == NULL && kind == 99);
    CHECK_ERR(handoff_hook_complete(NULL, 0, &err), &err, HANDOFF_ERR_NULL_POINTER);
    CHECK_ERR(handoff_hook_set_drained(NULL, 0, true, &err), &err, HANDOFF_ERR_NULL_POINTER);
    CHECK_ERR(handoff_hook_fail(NULL, "x", &err), &err, HANDOFF_ERR_NULL_POINTER);
    CHECK(handoff_hook_time_left_ms(NULL) == 0);
    bool begun = true;
    CHECK(handoff_successor_control_fd(NULL) == -1);
    CHECK_ERR(handoff_successor_poll_begin(NULL, &begun, &err), &err, HANDOFF_ERR_NULL_POINTER);
    CHECK(begun);
    /* Protocol v2's moves. */
    CHECK(!handoff_hook_moves(NULL));
    CHECK(handoff_hook_move_limit(NULL) == 0);
    CHECK_ERR(handoff_hook_move(NULL, HANDOFF_ITEM_CONNECTION, "kv", 0, NULL, 0, NULL, 0, NULL, 0,
                                &err),
              &err, HANDOFF_ERR_NULL_POINTER);
    CHECK_ERR(handoff_incumbent_set_moves_descriptors(NULL, true, &err), &err,
              HANDOFF_ERR_NULL_POINTER);
    CHECK_ERR(handoff_successor_set_adopts_descriptors(NULL, true, &err), &err,
              HANDOFF_ERR_NULL_POINTER);
    handoff_items *items = (handoff_items *)(void *)&begun;
    CHECK_ERR(handoff_successor_adopt(NULL, NULL, &items, &err), &err, HANDOFF_ERR_NULL_POINTER);
    CHECK(items == (handoff_items *)(void *)&begun);
    const uint8_t *data = NULL;
    size_t len = 7;
    CHECK(handoff_items_count(NULL) == 0);
    CHECK(handoff_items_kind(NULL, 0) == UINT32_MAX);
    CHECK(handoff_items_take_fd(NULL, 0) == -1);
    CHECK(!handoff_items_bytes(NULL, 0, HANDOFF_ITEM_PART_NAME, &data, &len));
    CHECK(data == NULL && len == 7);
    handoff_items_free(NULL);
}

void test_requests(void)
{
    group_begin("incumbent requests: bad input");
    bad_input();
    group_end();

    group_begin("incumbent requests: a loop takes a drain and a resume");
    handoff_error *err = NULL;
    char *dir = format("%s/requests", scratch_dir);
    char *control = format("%s/control.sock", scratch_dir);
    CHECK(mkdir(dir, 0700) == 0);
    handoff_incumbent *inc = bind_incumbent(dir, control);

    /* Before start_loop: no descriptor, no requests. */
    handoff_hook_context *ctx = NULL;
    uint32_t kind = 99;
    CHECK(handoff_incumbent_request_fd(inc) == -1);
    CHECK_ERR(handoff_incumbent_take_request(inc, &ctx, &kind, &err), &err,
              HANDOFF_ERR_WRONG_STATE);
    CHECK_OK(handoff_incumbent_start_loop(inc, &err), &err);
    CHECK_ERR(handoff_incumbent_start_loop(inc, &err), &err, HANDOFF_ERR_WRONG_STATE);
    CHECK(handoff_incumbent_request_fd(inc) >= 0);
    CHECK_ERR(handoff_incumbent_take_request(inc, NULL, &kind, &err), &err,
              HANDOFF_ERR_NULL_POINTER);
    CHECK_ERR(handoff_incumbent_take_request(inc, &ctx, NULL, &err), &err,
              HANDOFF_ERR_NULL_POINTER);
    CHECK_OK(handoff_incumbent_take_request(inc, &ctx, &kind, &err), &err);
    CHECK(kind == HANDOFF_REQUEST_NONE && ctx == NULL);

    handoff_frame_reader *reader = NULL;
    int sock = prepare_handoff(control, &reader);

    /* The drain reaches the loop; only a drain's setters apply to it. */
    CHECK(take(inc, &ctx) == HANDOFF_REQUEST_DRAIN);
    CHECK(ctx != NULL);
    CHECK(handoff_hook_time_left_ms(ctx) > 0);
    CHECK_ERR(handoff_hook_push_revision(ctx, 1, &err), &err, HANDOFF_ERR_WRONG_STATE);
    CHECK_ERR(handoff_hook_seal_progress(ctx, 1, 2, 3, &err), &err, HANDOFF_ERR_WRONG_STATE);
    CHECK_OK(handoff_hook_set_drained(ctx, 0, true, &err), &err);
    /* A v1 handoff moves nothing: the service closes its connections. */
    CHECK(!handoff_hook_moves(ctx));
    CHECK(handoff_hook_move_limit(ctx) == 0);
    CHECK_ERR(handoff_hook_move(ctx, HANDOFF_ITEM_CONNECTION, "kv", 0, NULL, 0, NULL, 0, NULL, 0,
                                &err),
              &err, HANDOFF_ERR_WRONG_STATE);
    CHECK_ERR(handoff_hook_move(ctx, 9, "kv", 0, NULL, 0, NULL, 0, NULL, 0, &err), &err,
              HANDOFF_ERR_INVALID_ARGUMENT);
    CHECK_ERR(handoff_hook_move(ctx, HANDOFF_ITEM_CONNECTION, "kv", -1, NULL, 0, NULL, 0, NULL, 0,
                                &err),
              &err, HANDOFF_ERR_INVALID_ARGUMENT);
    CHECK_ERR(handoff_hook_move(ctx, HANDOFF_ITEM_CONNECTION, "kv", 0, NULL, 3, NULL, 0, NULL, 0,
                                &err),
              &err, HANDOFF_ERR_NULL_POINTER);
    /* Waiting while holding a request could never end. */
    uint32_t outcome = 0;
    CHECK_ERR(handoff_incumbent_wait(inc, -1, &outcome, &err), &err, HANDOFF_ERR_WRONG_STATE);
    CHECK_OK(handoff_hook_complete(ctx, 0, &err), &err);
    CHECK_ERR(handoff_hook_complete(ctx, 0, &err), &err, HANDOFF_ERR_WRONG_STATE);
    CHECK_ERR(handoff_hook_set_drained(ctx, 0, true, &err), &err, HANDOFF_ERR_WRONG_STATE);
    CHECK_ERR(handoff_hook_fail(ctx, "late", &err), &err, HANDOFF_ERR_WRONG_STATE);
    handoff_message *drained = read_non_heartbeat(sock, reader);
    CHECK(drained != NULL && handoff_message_kind(drained) == HANDOFF_MSG_DRAINED);
    handoff_message_free(drained);

    /* The seal follows at once, before the supervisor asks for it (a round
     * trip less in the blackout); the lock stays until the SealRequest. */
    CHECK(take(inc, &ctx) == HANDOFF_REQUEST_SEAL);
    CHECK_OK(handoff_hook_push_revision(ctx, 1, &err), &err);
    CHECK_OK(handoff_hook_complete(ctx, 0, &err), &err);

    /* The supervisor vanishes: the handoff rolls back and the loop resumes. */
    close(sock);
    CHECK(take(inc, &ctx) == HANDOFF_REQUEST_RESUME);
    CHECK(handoff_hook_time_left_ms(ctx) == 0);
    CHECK_OK(handoff_hook_complete(ctx, 0, &err), &err);
    CHECK_ERR(handoff_hook_complete(ctx, 0, &err), &err, HANDOFF_ERR_WRONG_STATE);

    /* Stop from the loop's own thread does not deadlock; afterwards nothing
     * is pending and the outcome is Stopped. */
    CHECK_OK(handoff_incumbent_stop(inc, &err), &err);
    CHECK_OK(handoff_incumbent_take_request(inc, &ctx, &kind, &err), &err);
    CHECK(kind == HANDOFF_REQUEST_NONE && ctx == NULL);
    CHECK_OK(handoff_incumbent_wait(inc, -1, &outcome, &err), &err);
    CHECK(outcome == HANDOFF_SERVE_STOPPED);
    handoff_frame_reader_free(reader);
    handoff_incumbent_free(inc);
    group_end();

    group_begin("incumbent requests: stopped while a drain is held");
    inc = bind_incumbent(dir, control);
    CHECK_OK(handoff_incumbent_start_loop(inc, &err), &err);
    sock = prepare_handoff(control, &reader);
    CHECK(take(inc, &ctx) == HANDOFF_REQUEST_DRAIN);
    /* Stopping fails the drain held, answers the rollback's resume itself,
     * and returns; the context stays valid (and completed) until free. */
    CHECK_OK(handoff_incumbent_stop(inc, &err), &err);
    CHECK_ERR(handoff_hook_complete(ctx, 0, &err), &err, HANDOFF_ERR_WRONG_STATE);
    CHECK_OK(handoff_incumbent_wait(inc, 0, &outcome, &err), &err);
    CHECK(outcome == HANDOFF_SERVE_STOPPED);
    close(sock);
    handoff_frame_reader_free(reader);
    handoff_incumbent_free(inc);
    group_end();

    group_begin("incumbent requests: freed while a drain is held");
    inc = bind_incumbent(dir, control);
    CHECK_OK(handoff_incumbent_start_loop(inc, &err), &err);
    sock = prepare_handoff(control, &reader);
    CHECK(take(inc, &ctx) == HANDOFF_REQUEST_DRAIN);
    handoff_incumbent_free(inc); /* fails the drain; does not wait for it */
    close(sock);
    handoff_frame_reader_free(reader);
    group_end();

    group_begin("incumbent requests: callbacks cannot stop, wait or complete from inside");
    struct inside in = {0};
    inc = bind_incumbent(dir, control);
    in.inc = inc;
    handoff_service_callbacks callbacks = {cb_drain, cb_seal, cb_resume, NULL};
    CHECK_OK(handoff_incumbent_start(inc, &callbacks, &in, &err), &err);
    CHECK(handoff_incumbent_request_fd(inc) == -1);
    CHECK_ERR(handoff_incumbent_take_request(inc, &ctx, &kind, &err), &err,
              HANDOFF_ERR_WRONG_STATE);
    sock = prepare_handoff(control, &reader);
    drained = read_non_heartbeat(sock, reader); /* the drain callback has returned */
    CHECK(drained != NULL && handoff_message_kind(drained) == HANDOFF_MSG_DRAINED);
    handoff_message_free(drained);
    CHECK(in.drains == 1);
    CHECK(in.set_drained == HANDOFF_OK);
    CHECK(in.complete == HANDOFF_ERR_WRONG_STATE);
    CHECK(in.stop == HANDOFF_ERR_WRONG_STATE);
    CHECK(in.wait == HANDOFF_ERR_WRONG_STATE);
    close(sock);
    /* stop waits for the rollback, whose resume callback runs first. */
    CHECK_OK(handoff_incumbent_stop(inc, &err), &err);
    CHECK(in.resumes == 1);
    CHECK_OK(handoff_incumbent_wait(inc, 0, &outcome, &err), &err);
    CHECK(outcome == HANDOFF_SERVE_STOPPED);
    handoff_frame_reader_free(reader);
    handoff_incumbent_free(inc);
    group_end();

    unlink(control);
    free(control);
    free(dir);
}
