/* Frames: the 14 golden vectors both ways, then every way a frame can be bad
 * on decode and every way an encode can be refused. */
#include "vectors.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A pointer value no library call may produce: out-params pre-filled with it
 * must come back unchanged from a failing call. */
static char sentinel_object;
#define MSG_SENTINEL ((handoff_message *)(void *)&sentinel_object)
#define SIZE_SENTINEL ((size_t)0x5EE5EE5u)

static void put_u32le(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}

/* Decode `buf` and expect failure `want` with out-params untouched. */
static void expect_decode_error(const uint8_t *buf, size_t len, handoff_status want,
                                const char *what)
{
    handoff_error *err = NULL;
    handoff_message *msg = MSG_SENTINEL;
    size_t consumed = SIZE_SENTINEL;
    if (!CHECK_ERR(handoff_message_decode(buf, len, &msg, &consumed, &err), &err, want))
        fprintf(stderr, "    (input: %s)\n", what);
    CHECK(msg == MSG_SENTINEL);
    CHECK_U64(consumed, SIZE_SENTINEL);
    if (msg != MSG_SENTINEL)
        handoff_message_free(msg);
}

/* Decode a whole frame and expect success. */
static handoff_message *decode_ok(const uint8_t *buf, size_t len, size_t want_consumed)
{
    handoff_error *err = NULL;
    handoff_message *msg = NULL;
    size_t consumed = 0;
    if (!CHECK_OK(handoff_message_decode(buf, len, &msg, &consumed, &err), &err))
        return NULL;
    CHECK(msg != NULL);
    CHECK_U64(consumed, want_consumed);
    return msg;
}

/* ---- the golden vectors ------------------------------------------------ */

static void one_vector(const vector_spec *spec)
{
    blob file = read_blob(vectors_dir, spec->file);
    handoff_error *err = NULL;
    handoff_message *decoded, *built;
    uint8_t *bytes, *big;
    size_t len = 0, needed = 0;
    const char *name;

    /* decode and read every field */
    decoded = decode_ok(file.data, file.len, file.len);
    if (decoded) {
        CHECK_U64(handoff_message_kind(decoded), spec->kind);
        CHECK_U64(handoff_message_proto_version(decoded), VECTOR_VERSION(spec));
        name = handoff_message_kind_name(handoff_message_kind(decoded));
        CHECK(name != NULL && strcmp(name, spec->name) == 0);
        check_fields(decoded, spec);
        /* the decoded message encodes back to the same bytes */
        bytes = encode_alloc(decoded, &len);
        if (bytes)
            CHECK_BYTES(bytes, len, file.data, file.len);
        free(bytes);
        handoff_message_free(decoded);
    }

    /* build from scratch; it encodes to the file's bytes */
    built = build_message(spec);
    if (!built) {
        blob_free(&file);
        return;
    }
    check_fields(built, spec);
    bytes = encode_alloc(built, &len);
    if (bytes)
        CHECK_BYTES(bytes, len, file.data, file.len);
    free(bytes);

    /* a roomier buffer: same bytes, the rest untouched */
    big = malloc(file.len + 16);
    memset(big, 0xEE, file.len + 16);
    if (CHECK_OK(handoff_message_encode(built, big, file.len + 16, &needed, &err), &err)) {
        size_t i;
        bool tail_untouched = true;
        CHECK_U64(needed, file.len);
        CHECK_BYTES(big, needed, file.data, file.len);
        for (i = file.len; i < file.len + 16; i++)
            tail_untouched = tail_untouched && big[i] == 0xEE;
        CHECK(tail_untouched);
    }
    free(big);

    /* the frame's version is the message's; decode keeps what it read */
    if (CHECK_OK(handoff_message_set_proto_version(built, 7, &err), &err)) {
        CHECK_U64(handoff_message_proto_version(built), 7);
        bytes = encode_alloc(built, &len);
        if (bytes && CHECK_U64(len, file.len)) {
            uint8_t *want = copy_bytes(file.data, file.len, 0);
            handoff_message *again;
            want[4] = 7;
            want[5] = 0;
            CHECK_BYTES(bytes, len, want, file.len);
            again = decode_ok(bytes, len, len);
            if (again) {
                CHECK_U64(handoff_message_proto_version(again), 7);
                check_fields(again, spec);
            }
            handoff_message_free(again);
            free(want);
        }
        free(bytes);
    }
    /* a v2 message never goes out in a v1 frame, nor decodes from one */
    if (VECTOR_VERSION(spec) == 2 &&
        CHECK_OK(handoff_message_set_proto_version(built, 1, &err), &err)) {
        uint8_t buf[512];
        size_t written = 0;
        uint8_t *v1 = copy_bytes(file.data, file.len, 0);
        CHECK_ERR(handoff_message_encode(built, buf, sizeof buf, &written, &err), &err,
                  HANDOFF_ERR_ENCODE);
        v1[4] = 1;
        expect_decode_error(v1, file.len, HANDOFF_ERR_UNKNOWN_MESSAGE, "a v2 message, v1 frame");
        free(v1);
    }
    handoff_message_free(built);
    blob_free(&file);
}

void test_vectors(void)
{
    size_t i;
    for (i = 0; i < KIND_COUNT; i++) {
        char *group = format("frame vector %s", VECTORS[i].file);
        group_begin(group);
        CHECK_U64(VECTORS[i].kind, i);
        one_vector(&VECTORS[i]);
        group_end();
        free(group);
    }
}

/* ---- bad frames on decode ---------------------------------------------- */

static void truncated_frames(void)
{
    size_t v, cut;
    handoff_error *err = NULL;
    handoff_message *msg = MSG_SENTINEL;
    size_t consumed = SIZE_SENTINEL;

    group_begin("decode: every truncation of every vector");
    for (v = 0; v < KIND_COUNT; v++) {
        blob file = read_blob(vectors_dir, VECTORS[v].file);
        for (cut = 0; cut < file.len; cut++) {
            /* a heap copy of exactly `cut` bytes, so ASan catches any read
             * past what the library was given */
            uint8_t *part = copy_bytes(file.data, cut, 0);
            msg = MSG_SENTINEL;
            consumed = SIZE_SENTINEL;
            if (!CHECK_ERR(handoff_message_decode(part, cut, &msg, &consumed, &err), &err,
                           HANDOFF_ERR_INCOMPLETE))
                fprintf(stderr, "    (%s cut to %zu bytes)\n", VECTORS[v].file, cut);
            CHECK_U64(consumed, cut < 4 ? 4 : file.len);
            CHECK(msg == MSG_SENTINEL);
            free(part);
        }
        blob_free(&file);
    }
    /* NULL with length 0 is an empty buffer */
    consumed = SIZE_SENTINEL;
    msg = MSG_SENTINEL;
    CHECK_ERR(handoff_message_decode(NULL, 0, &msg, &consumed, &err), &err,
              HANDOFF_ERR_INCOMPLETE);
    CHECK_U64(consumed, 4);
    CHECK(msg == MSG_SENTINEL);
    /* a frame of the largest allowed length, of which only the prefix came */
    {
        uint8_t prefix[4];
        put_u32le(prefix, UINT32_C(1) << 20);
        consumed = SIZE_SENTINEL;
        CHECK_ERR(handoff_message_decode(prefix, 4, &msg, &consumed, &err), &err,
                  HANDOFF_ERR_INCOMPLETE);
        CHECK_U64(consumed, (UINT64_C(1) << 20) + 4);
        CHECK(msg == MSG_SENTINEL);
    }
    group_end();
}

static void bad_lengths(void)
{
    uint8_t buf[8] = {0, 0, 0, 0, 1, 0, 13, 0};
    const uint32_t malformed[] = {0, 1};
    const uint32_t too_large[] = {(UINT32_C(1) << 20) + 1, UINT32_C(1) << 31, UINT32_MAX};
    size_t i;

    group_begin("decode: frame_len out of bounds");
    for (i = 0; i < 2; i++) {
        put_u32le(buf, malformed[i]);
        expect_decode_error(buf, 4, HANDOFF_ERR_FRAME_MALFORMED, "frame_len < 2, prefix only");
        expect_decode_error(buf, sizeof buf, HANDOFF_ERR_FRAME_MALFORMED,
                            "frame_len < 2, more bytes follow");
    }
    for (i = 0; i < 3; i++) {
        put_u32le(buf, too_large[i]);
        expect_decode_error(buf, 4, HANDOFF_ERR_FRAME_TOO_LARGE, "frame_len > 2^20, prefix only");
        expect_decode_error(buf, sizeof buf, HANDOFF_ERR_FRAME_TOO_LARGE,
                            "frame_len > 2^20, more bytes follow");
    }
    /* frame_len 2: a version and no message at all */
    put_u32le(buf, 2);
    expect_decode_error(buf, 6, HANDOFF_ERR_DECODE, "frame_len 2, empty body");
    group_end();
}

static void unknown_messages(void)
{
    /* after the 6-byte header (frame_len patched in): the variant varint */
    static const struct {
        const char *what;
        uint8_t body[12];
        size_t len;
    } cases[] = {
        {"index 14 (v2's Capacity) in a v1 frame", {14}, 1},
        {"index 14 with a plausible body", {14, 0x10, 1, 2, 3}, 5},
        {"index 127", {0x7f}, 1},
        {"index 128 (two-byte varint)", {0x80, 0x01}, 2},
        {"index 2^32-1 (five-byte varint)", {0xff, 0xff, 0xff, 0xff, 0x0f}, 5},
        {"index 2^32 (five-byte varint)", {0x80, 0x80, 0x80, 0x80, 0x10}, 5},
        {"index 2^64-1 (ten-byte varint)",
         {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01},
         10},
    };
    size_t i;
    group_begin("decode: unknown message index");
    for (i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        uint8_t frame[6 + 12];
        put_u32le(frame, (uint32_t)(2 + cases[i].len));
        frame[4] = 1;
        frame[5] = 0;
        memcpy(frame + 6, cases[i].body, cases[i].len);
        expect_decode_error(frame, 6 + cases[i].len, HANDOFF_ERR_UNKNOWN_MESSAGE, cases[i].what);
    }
    group_end();
}

/* Vector `v` with the byte at `pos` (from the start of the frame) replaced
 * by `value` must fail to decode. */
static void expect_body_error(size_t v, const char *what, size_t pos, uint8_t value)
{
    blob file = read_blob(vectors_dir, VECTORS[v].file);
    uint8_t *bad = copy_bytes(file.data, file.len, 0);
    bad[pos] = value;
    expect_decode_error(bad, file.len, HANDOFF_ERR_DECODE, what);
    free(bad);
    blob_free(&file);
}

static void bad_bodies(void)
{
    size_t v;
    group_begin("decode: bodies that do not decode");
    for (v = 0; v < KIND_COUNT; v++) {
        blob file = read_blob(vectors_dir, VECTORS[v].file);
        uint8_t *bad = copy_bytes(file.data, file.len, 1);
        char *what;
        /* one byte of garbage inside frame_len */
        bad[file.len] = 0;
        put_u32le(bad, (uint32_t)(file.len - 4 + 1));
        what = format("%s + 1 trailing byte inside frame_len", VECTORS[v].file);
        expect_decode_error(bad, file.len + 1, HANDOFF_ERR_DECODE, what);
        free(what);
        /* the last byte of the body missing, frame_len agreeing */
        put_u32le(bad, (uint32_t)(file.len - 4 - 1));
        what = format("%s without its last body byte", VECTORS[v].file);
        expect_decode_error(bad, file.len - 1, HANDOFF_ERR_DECODE, what);
        free(what);
        free(bad);
        blob_free(&file);
    }
    /* invalid field values */
    expect_body_error(HANDOFF_MSG_HELLO, "Hello role 2", 7, 2);
    expect_body_error(HANDOFF_MSG_DRAINED, "Drained accept_closed 2", 8, 2);
    expect_body_error(HANDOFF_MSG_BEGIN, "handoff id length 15", 7, 15);
    expect_body_error(HANDOFF_MSG_BEGIN, "handoff id length 17", 7, 17);
    expect_body_error(HANDOFF_MSG_SEAL_FAILED, "SealFailed error not UTF-8", 25, 0xff);
    expect_body_error(HANDOFF_MSG_READY, "Ready listening_on not UTF-8", 26, 0xc3);
    group_end();
}

static void frames_followed_by_more(void)
{
    size_t v;
    group_begin("decode: a frame followed by more bytes");
    for (v = 0; v < KIND_COUNT; v++) {
        blob file = read_blob(vectors_dir, VECTORS[v].file);
        blob next = read_blob(vectors_dir, VECTORS[(v + 1) % KIND_COUNT].file);
        uint8_t *two = copy_bytes(file.data, file.len, next.len + 3);
        handoff_message *msg;
        memcpy(two + file.len, next.data, next.len);
        memset(two + file.len + next.len, 0xff, 3);
        /* a whole second frame after it, then garbage: only the first counts */
        msg = decode_ok(two, file.len + next.len + 3, file.len);
        if (msg)
            check_fields(msg, &VECTORS[v]);
        handoff_message_free(msg);
        /* one stray byte after it */
        msg = decode_ok(two, file.len + 1, file.len);
        handoff_message_free(msg);
        free(two);
        blob_free(&next);
        blob_free(&file);
    }
    group_end();
}

static void decode_null_arguments(void)
{
    blob file = read_blob(vectors_dir, VECTORS[HANDOFF_MSG_HEARTBEAT].file);
    handoff_error *err = NULL;
    handoff_message *msg = MSG_SENTINEL;
    size_t consumed = SIZE_SENTINEL;

    group_begin("decode: NULL arguments");
    CHECK_ERR(handoff_message_decode(NULL, file.len, &msg, &consumed, &err), &err,
              HANDOFF_ERR_NULL_POINTER);
    CHECK(msg == MSG_SENTINEL);
    CHECK_U64(consumed, SIZE_SENTINEL);
    CHECK_ERR(handoff_message_decode(NULL, 1, &msg, &consumed, &err), &err,
              HANDOFF_ERR_NULL_POINTER);
    CHECK_ERR(handoff_message_decode(file.data, file.len, NULL, &consumed, &err), &err,
              HANDOFF_ERR_NULL_POINTER);
    CHECK_U64(consumed, SIZE_SENTINEL);
    CHECK_ERR(handoff_message_decode(file.data, file.len, &msg, NULL, &err), &err,
              HANDOFF_ERR_NULL_POINTER);
    CHECK(msg == MSG_SENTINEL);
    /* NULL out with an incomplete frame: still nothing written anywhere */
    CHECK_ERR(handoff_message_decode(file.data, 2, NULL, &consumed, &err), &err,
              HANDOFF_ERR_NULL_POINTER);
    CHECK_U64(consumed, SIZE_SENTINEL);

    /* err == NULL: the status alone, no crash, nothing leaked */
    CHECK_ERR(handoff_message_decode(NULL, 3, &msg, &consumed, NULL), NULL,
              HANDOFF_ERR_NULL_POINTER);
    CHECK_ERR(handoff_message_decode(file.data, 3, &msg, &consumed, NULL), NULL,
              HANDOFF_ERR_INCOMPLETE);
    CHECK_U64(consumed, 4);
    consumed = SIZE_SENTINEL;
    CHECK_ERR(handoff_message_decode(file.data, file.len - 1, &msg, &consumed, NULL), NULL,
              HANDOFF_ERR_INCOMPLETE);
    CHECK_U64(consumed, file.len);
    CHECK(msg == MSG_SENTINEL);
    {
        uint8_t bad[7] = {3, 0, 0, 0, 1, 0, 14};
        consumed = SIZE_SENTINEL;
        CHECK_ERR(handoff_message_decode(bad, sizeof bad, &msg, &consumed, NULL), NULL,
                  HANDOFF_ERR_UNKNOWN_MESSAGE);
        put_u32le(bad, 1);
        CHECK_ERR(handoff_message_decode(bad, sizeof bad, &msg, &consumed, NULL), NULL,
                  HANDOFF_ERR_FRAME_MALFORMED);
        CHECK(msg == MSG_SENTINEL);
        CHECK_U64(consumed, SIZE_SENTINEL);
    }
    group_end();
    blob_free(&file);
}

void test_bad_frames(void)
{
    truncated_frames();
    bad_lengths();
    unknown_messages();
    bad_bodies();
    frames_followed_by_more();
    decode_null_arguments();
}

/* ---- encode refusals --------------------------------------------------- */

static void encode_small_buffers(void)
{
    size_t v, cap;
    handoff_error *err = NULL;

    group_begin("encode: buffer too small, then just right");
    for (v = 0; v < KIND_COUNT; v++) {
        blob file = read_blob(vectors_dir, VECTORS[v].file);
        handoff_message *msg = build_message(&VECTORS[v]);
        size_t needed = SIZE_SENTINEL;
        uint8_t *buf;
        if (!msg) {
            blob_free(&file);
            continue;
        }
        /* the size query */
        CHECK_ERR(handoff_message_encode(msg, NULL, 0, &needed, &err), &err,
                  HANDOFF_ERR_BUFFER_TOO_SMALL);
        CHECK_U64(needed, file.len);
        needed = SIZE_SENTINEL;
        CHECK_ERR(handoff_message_encode(msg, NULL, 0, &needed, NULL), NULL,
                  HANDOFF_ERR_BUFFER_TOO_SMALL);
        CHECK_U64(needed, file.len);
        /* every capacity short of the frame, each in a heap block of exactly
         * that size so that ASan sees any write past it */
        for (cap = 0; cap < file.len; cap++) {
            buf = malloc(cap ? cap : 1);
            memset(buf, 0xEE, cap ? cap : 1);
            needed = SIZE_SENTINEL;
            if (!CHECK_ERR(handoff_message_encode(msg, buf, cap, &needed, &err), &err,
                           HANDOFF_ERR_BUFFER_TOO_SMALL))
                fprintf(stderr, "    (%s, cap %zu)\n", VECTORS[v].file, cap);
            CHECK_U64(needed, file.len);
            free(buf);
        }
        /* then the size it asked for */
        buf = malloc(file.len);
        needed = SIZE_SENTINEL;
        if (CHECK_OK(handoff_message_encode(msg, buf, file.len, &needed, &err), &err)) {
            CHECK_U64(needed, file.len);
            CHECK_BYTES(buf, needed, file.data, file.len);
        }
        free(buf);
        handoff_message_free(msg);
        blob_free(&file);
    }
    group_end();
}

static void encode_leaves_short_buffer_alone(void)
{
    size_t v, cap;
    handoff_error *err = NULL;

    /* DESIGN §6: out-parameters are written only on success; the output
     * buffer of a refused encode is one of them. */
    group_begin("encode: a refused buffer is left untouched");
    for (v = 0; v < KIND_COUNT; v++) {
        blob file = read_blob(vectors_dir, VECTORS[v].file);
        handoff_message *msg = build_message(&VECTORS[v]);
        uint8_t *buf = malloc(file.len);
        if (msg && buf) {
            for (cap = 0; cap < file.len; cap++) {
                size_t needed = SIZE_SENTINEL, i;
                bool untouched = true;
                memset(buf, 0xEE, file.len);
                CHECK_ERR(handoff_message_encode(msg, buf, cap, &needed, &err), &err,
                          HANDOFF_ERR_BUFFER_TOO_SMALL);
                for (i = 0; i < file.len; i++)
                    untouched = untouched && buf[i] == 0xEE;
                if (!untouched) {
                    check_fail(__FILE__, __LINE__,
                               "%s: BUFFER_TOO_SMALL with cap %zu (frame is %zu bytes) "
                               "wrote into the buffer",
                               VECTORS[v].file, cap, file.len);
                    break; /* one report per vector is enough */
                }
                CHECK(untouched);
            }
        }
        free(buf);
        handoff_message_free(msg);
        blob_free(&file);
    }
    group_end();
}

static void encode_null_arguments(void)
{
    handoff_error *err = NULL;
    handoff_message *msg = NULL;
    uint8_t buf[64];
    size_t needed = SIZE_SENTINEL;

    group_begin("encode: NULL arguments");
    CHECK_ERR(handoff_message_encode(NULL, buf, sizeof buf, &needed, &err), &err,
              HANDOFF_ERR_NULL_POINTER);
    CHECK_U64(needed, SIZE_SENTINEL);
    if (CHECK_OK(handoff_message_new(HANDOFF_MSG_HEARTBEAT, &msg, &err), &err)) {
        CHECK_ERR(handoff_message_encode(msg, buf, sizeof buf, NULL, &err), &err,
                  HANDOFF_ERR_NULL_POINTER);
        CHECK_ERR(handoff_message_encode(msg, NULL, 16, &needed, &err), &err,
                  HANDOFF_ERR_NULL_POINTER);
        CHECK_U64(needed, SIZE_SENTINEL);
        CHECK_ERR(handoff_message_encode(msg, NULL, 16, &needed, NULL), NULL,
                  HANDOFF_ERR_NULL_POINTER);
        CHECK_ERR(handoff_message_encode(NULL, NULL, 0, &needed, NULL), NULL,
                  HANDOFF_ERR_NULL_POINTER);
        CHECK_U64(needed, SIZE_SENTINEL);
        /* a Heartbeat with ts 0: 4 + 2 + index + one-byte varint */
        if (CHECK_OK(handoff_message_encode(msg, buf, sizeof buf, &needed, &err), &err)) {
            static const uint8_t want[] = {4, 0, 0, 0, 1, 0, 13, 0};
            CHECK_BYTES(buf, needed, want, sizeof want);
        }
    }
    handoff_message_free(msg);
    group_end();
}

/* A Hello whose build_id makes frame_len exactly 2^20, then one byte more. */
static void encode_frame_size_limit(void)
{
    const size_t limit = (size_t)1 << 20;
    /* body: index, role, pid 0, build_id (3-byte length + bytes), proto_min,
     * proto_max, reserved = build_id + 9; frame_len = body + 2 */
    const size_t id_len = limit - 11;
    handoff_error *err = NULL;
    handoff_message *msg = NULL, *back;
    uint8_t *build_id = malloc(id_len + 1), *buf = malloc(limit + 4 + 64);
    size_t needed = SIZE_SENTINEL;

    group_begin("encode/decode: the 1 MiB frame limit");
    memset(build_id, 'b', id_len + 1);
    if (CHECK_OK(handoff_message_new(HANDOFF_MSG_HELLO, &msg, &err), &err) &&
        CHECK_OK(handoff_message_set_bytes(msg, HANDOFF_FIELD_BUILD_ID, build_id, id_len, &err),
                 &err)) {
        CHECK_ERR(handoff_message_encode(msg, NULL, 0, &needed, &err), &err,
                  HANDOFF_ERR_BUFFER_TOO_SMALL);
        CHECK_U64(needed, limit + 4);
        if (CHECK_OK(handoff_message_encode(msg, buf, limit + 4, &needed, &err), &err)) {
            CHECK_U64(needed, limit + 4);
            CHECK(buf[0] == 0 && buf[1] == 0 && buf[2] == 0x10 && buf[3] == 0);
            back = decode_ok(buf, needed, needed);
            if (back) {
                const uint8_t *data = NULL;
                size_t len = 0;
                if (CHECK_OK(handoff_message_get_bytes(back, HANDOFF_FIELD_BUILD_ID, &data,
                                                       &len, &err),
                             &err))
                    CHECK_BYTES(data, len, build_id, id_len);
            }
            handoff_message_free(back);
        }
        /* one byte more: refused as too large, whatever the buffer */
        if (CHECK_OK(handoff_message_set_bytes(msg, HANDOFF_FIELD_BUILD_ID, build_id,
                                               id_len + 1, &err),
                     &err)) {
            needed = SIZE_SENTINEL;
            CHECK_ERR(handoff_message_encode(msg, NULL, 0, &needed, &err), &err,
                      HANDOFF_ERR_FRAME_TOO_LARGE);
            CHECK_U64(needed, SIZE_SENTINEL);
            CHECK_ERR(handoff_message_encode(msg, buf, limit + 4 + 64, &needed, &err), &err,
                      HANDOFF_ERR_FRAME_TOO_LARGE);
            CHECK_U64(needed, SIZE_SENTINEL);
            CHECK_ERR(handoff_message_encode(msg, buf, 100, &needed, &err), &err,
                      HANDOFF_ERR_FRAME_TOO_LARGE);
            CHECK_U64(needed, SIZE_SENTINEL);
        }
    }
    handoff_message_free(msg);
    free(build_id);
    free(buf);
    group_end();
}

void test_encode_errors(void)
{
    encode_small_buffers();
    encode_leaves_short_buffer_alone();
    encode_null_arguments();
    encode_frame_size_limit();
}
