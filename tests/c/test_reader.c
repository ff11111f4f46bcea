/* The non-blocking frame reader: feed bytes, take whole messages. */
#include "vectors.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char sentinel_object;
#define MSG_SENTINEL ((handoff_message *)(void *)&sentinel_object)

typedef union {
    bool b;
    unsigned char raw;
} bool_out;
#define BOOL_SENTINEL 0x5A

static handoff_frame_reader *new_reader(void)
{
    handoff_error *err = NULL;
    handoff_frame_reader *reader = NULL;
    if (!CHECK_OK(handoff_frame_reader_new(&reader, &err), &err))
        return NULL;
    CHECK(reader != NULL);
    CHECK_U64(handoff_frame_reader_buffered(reader), 0);
    return reader;
}

/* Take the next message, expecting one; checks it against vector `v`. */
static void expect_message(handoff_frame_reader *reader, size_t v)
{
    handoff_error *err = NULL;
    handoff_message *msg = NULL;
    bool got = false;
    if (CHECK_OK(handoff_frame_reader_next(reader, &msg, &got, &err), &err) && CHECK(got) &&
        CHECK(msg != NULL)) {
        CHECK_U64(handoff_message_proto_version(msg), VECTOR_VERSION(&VECTORS[v]));
        check_fields(msg, &VECTORS[v]);
    }
    if (got)
        handoff_message_free(msg);
}

static void expect_nothing(handoff_frame_reader *reader)
{
    handoff_error *err = NULL;
    handoff_message *msg = MSG_SENTINEL;
    bool got = true;
    CHECK_OK(handoff_frame_reader_next(reader, &msg, &got, &err), &err);
    CHECK(!got);
    CHECK(msg == MSG_SENTINEL);
}

/* next() must fail with `want`, writing neither output. */
static void expect_error(handoff_frame_reader *reader, handoff_status want)
{
    handoff_error *err = NULL;
    handoff_message *msg = MSG_SENTINEL;
    bool_out got;
    got.raw = BOOL_SENTINEL;
    CHECK_ERR(handoff_frame_reader_next(reader, &msg, &got.b, &err), &err, want);
    CHECK(msg == MSG_SENTINEL);
    CHECK(got.raw == BOOL_SENTINEL);
}

static void byte_by_byte(void)
{
    size_t v, i;
    group_begin("reader: every vector fed byte by byte");
    for (v = 0; v < KIND_COUNT; v++) {
        blob file = read_blob(vectors_dir, VECTORS[v].file);
        handoff_frame_reader *reader = new_reader();
        handoff_error *err = NULL;
        if (!reader) {
            blob_free(&file);
            continue;
        }
        for (i = 0; i < file.len; i++) {
            CHECK_OK(handoff_frame_reader_feed(reader, file.data + i, 1, &err), &err);
            if (i + 1 < file.len) {
                expect_nothing(reader);
                CHECK_U64(handoff_frame_reader_buffered(reader), i + 1);
            }
        }
        expect_message(reader, v);
        CHECK_U64(handoff_frame_reader_buffered(reader), 0);
        expect_nothing(reader);
        /* empty feeds change nothing */
        CHECK_OK(handoff_frame_reader_feed(reader, NULL, 0, &err), &err);
        CHECK_OK(handoff_frame_reader_feed(reader, file.data, 0, &err), &err);
        expect_nothing(reader);
        handoff_frame_reader_free(reader);
        blob_free(&file);
    }
    group_end();
}

static void many_in_one_feed(void)
{
    blob files[KIND_COUNT];
    size_t v, total = 0, off = 0;
    uint8_t *all;
    handoff_frame_reader *reader;
    handoff_error *err = NULL;

    group_begin("reader: frames sharing one feed");
    for (v = 0; v < KIND_COUNT; v++) {
        files[v] = read_blob(vectors_dir, VECTORS[v].file);
        total += files[v].len;
    }
    all = malloc(total);
    for (v = 0; v < KIND_COUNT; v++) {
        memcpy(all + off, files[v].data, files[v].len);
        off += files[v].len;
    }
    /* two frames in one feed */
    reader = new_reader();
    if (reader) {
        size_t two = files[0].len + files[1].len;
        CHECK_OK(handoff_frame_reader_feed(reader, all, two, &err), &err);
        CHECK_U64(handoff_frame_reader_buffered(reader), two);
        expect_message(reader, 0);
        CHECK_U64(handoff_frame_reader_buffered(reader), files[1].len);
        expect_message(reader, 1);
        expect_nothing(reader);
        CHECK_U64(handoff_frame_reader_buffered(reader), 0);
        handoff_frame_reader_free(reader);
    }
    /* all fourteen at once, then again split at awkward places */
    reader = new_reader();
    if (reader) {
        CHECK_OK(handoff_frame_reader_feed(reader, all, total, &err), &err);
        for (v = 0; v < KIND_COUNT; v++)
            expect_message(reader, v);
        expect_nothing(reader);
        for (off = 0; off < total; off += 7) {
            size_t n = total - off < 7 ? total - off : 7;
            CHECK_OK(handoff_frame_reader_feed(reader, all + off, n, &err), &err);
        }
        CHECK_U64(handoff_frame_reader_buffered(reader), total);
        for (v = 0; v < KIND_COUNT; v++)
            expect_message(reader, v);
        expect_nothing(reader);
        handoff_frame_reader_free(reader);
    }
    /* a reader freed with bytes still buffered leaks nothing */
    reader = new_reader();
    if (reader) {
        CHECK_OK(handoff_frame_reader_feed(reader, all, total - 1, &err), &err);
        handoff_frame_reader_free(reader);
    }
    free(all);
    for (v = 0; v < KIND_COUNT; v++)
        blob_free(&files[v]);
    group_end();
}

static void bad_lengths_poison(void)
{
    static const struct {
        uint8_t prefix[4];
        handoff_status want;
    } cases[] = {
        {{0x01, 0x00, 0x10, 0x00}, HANDOFF_ERR_FRAME_TOO_LARGE}, /* 2^20 + 1 */
        {{0xff, 0xff, 0xff, 0xff}, HANDOFF_ERR_FRAME_TOO_LARGE},
        {{0x00, 0x00, 0x00, 0x00}, HANDOFF_ERR_FRAME_MALFORMED},
        {{0x01, 0x00, 0x00, 0x00}, HANDOFF_ERR_FRAME_MALFORMED},
    };
    blob hb = read_blob(vectors_dir, VECTORS[HANDOFF_MSG_HEARTBEAT].file);
    size_t i;
    int round;

    group_begin("reader: a bad length poisons it for good");
    for (i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        handoff_frame_reader *reader = new_reader();
        handoff_error *err = NULL;
        if (!reader)
            continue;
        /* a good frame first, then the bad prefix */
        CHECK_OK(handoff_frame_reader_feed(reader, hb.data, hb.len, &err), &err);
        CHECK_OK(handoff_frame_reader_feed(reader, cases[i].prefix, 4, &err), &err);
        expect_message(reader, HANDOFF_MSG_HEARTBEAT);
        expect_error(reader, cases[i].want);
        /* every later call, whatever is fed */
        for (round = 0; round < 3; round++) {
            CHECK_OK(handoff_frame_reader_feed(reader, hb.data, hb.len, &err), &err);
            expect_error(reader, cases[i].want);
        }
        /* err == NULL on the poisoned reader */
        {
            handoff_message *msg = MSG_SENTINEL;
            bool got = false;
            CHECK_ERR(handoff_frame_reader_next(reader, &msg, &got, NULL), NULL, cases[i].want);
            CHECK(msg == MSG_SENTINEL);
        }
        handoff_frame_reader_free(reader);
    }
    /* the prefix arriving byte by byte: reported once all 4 bytes are in */
    {
        handoff_frame_reader *reader = new_reader();
        handoff_error *err = NULL;
        if (reader) {
            for (i = 0; i < 3; i++) {
                CHECK_OK(handoff_frame_reader_feed(reader, &cases[0].prefix[i], 1, &err), &err);
                expect_nothing(reader);
            }
            CHECK_OK(handoff_frame_reader_feed(reader, &cases[0].prefix[3], 1, &err), &err);
            expect_error(reader, HANDOFF_ERR_FRAME_TOO_LARGE);
            expect_error(reader, HANDOFF_ERR_FRAME_TOO_LARGE);
            handoff_frame_reader_free(reader);
        }
    }
    blob_free(&hb);
    group_end();
}

static void bad_body_is_skipped(void)
{
    /* an unknown message, a body with a trailing byte, then a good frame */
    static const uint8_t unknown[] = {3, 0, 0, 0, 1, 0, 99};
    static const uint8_t trailing[] = {5, 0, 0, 0, 1, 0, 13, 1, 0};
    blob hb = read_blob(vectors_dir, VECTORS[HANDOFF_MSG_HEARTBEAT].file);
    handoff_frame_reader *reader;
    handoff_error *err = NULL;

    group_begin("reader: a bad body is dropped, stream stays in sync");
    reader = new_reader();
    if (reader) {
        CHECK_OK(handoff_frame_reader_feed(reader, unknown, sizeof unknown, &err), &err);
        CHECK_OK(handoff_frame_reader_feed(reader, trailing, sizeof trailing, &err), &err);
        CHECK_OK(handoff_frame_reader_feed(reader, hb.data, hb.len, &err), &err);
        expect_error(reader, HANDOFF_ERR_UNKNOWN_MESSAGE);
        CHECK_U64(handoff_frame_reader_buffered(reader), sizeof trailing + hb.len);
        expect_error(reader, HANDOFF_ERR_DECODE);
        CHECK_U64(handoff_frame_reader_buffered(reader), hb.len);
        expect_message(reader, HANDOFF_MSG_HEARTBEAT);
        expect_nothing(reader);
        handoff_frame_reader_free(reader);
    }
    blob_free(&hb);
    group_end();
}

static void reader_null_arguments(void)
{
    handoff_frame_reader *reader = new_reader();
    handoff_error *err = NULL;
    handoff_message *msg = MSG_SENTINEL;
    bool_out got;
    uint8_t byte = 0;

    group_begin("reader: NULL arguments");
    got.raw = BOOL_SENTINEL;
    CHECK_ERR(handoff_frame_reader_new(NULL, &err), &err, HANDOFF_ERR_NULL_POINTER);
    CHECK_ERR(handoff_frame_reader_feed(NULL, &byte, 1, &err), &err, HANDOFF_ERR_NULL_POINTER);
    CHECK_ERR(handoff_frame_reader_next(NULL, &msg, &got.b, &err), &err, HANDOFF_ERR_NULL_POINTER);
    if (reader) {
        CHECK_ERR(handoff_frame_reader_feed(reader, NULL, 1, &err), &err,
                  HANDOFF_ERR_NULL_POINTER);
        CHECK_U64(handoff_frame_reader_buffered(reader), 0);
        CHECK_ERR(handoff_frame_reader_next(reader, NULL, &got.b, &err), &err,
                  HANDOFF_ERR_NULL_POINTER);
        CHECK_ERR(handoff_frame_reader_next(reader, &msg, NULL, &err), &err,
                  HANDOFF_ERR_NULL_POINTER);
        CHECK_ERR(handoff_frame_reader_next(reader, NULL, NULL, NULL), NULL,
                  HANDOFF_ERR_NULL_POINTER);
        CHECK_ERR(handoff_frame_reader_feed(reader, NULL, 5, NULL), NULL,
                  HANDOFF_ERR_NULL_POINTER);
    }
    CHECK(msg == MSG_SENTINEL && got.raw == BOOL_SENTINEL);
    CHECK_ERR(handoff_frame_reader_new(NULL, NULL), NULL, HANDOFF_ERR_NULL_POINTER);
    handoff_frame_reader_free(reader);
    group_end();
}

void test_frame_reader(void)
{
    byte_by_byte();
    many_in_one_feed();
    bad_lengths_poison();
    bad_body_is_skipped();
    reader_null_arguments();
}
