/* Field accessors: every (kind, field, accessor) combination, the value
 * checks of the setters, NULL arguments, and the static lookups. */
#include "vectors.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define U64_SENTINEL UINT64_C(0x5EE5EE5EE5EE5EE5)
#define SIZE_SENTINEL ((size_t)0x5EE5EE5u)
static const uint8_t sentinel_byte = 0;
#define DATA_SENTINEL (&sentinel_byte)

/* A bool out-parameter whose raw byte can be checked for "untouched". */
typedef union {
    bool b;
    unsigned char raw;
} bool_out;
#define BOOL_SENTINEL 0x5A

/* Encode without counting checks (to compare a message before and after). */
static uint8_t *encode_quiet(const handoff_message *msg, size_t *len)
{
    size_t needed = 0;
    uint8_t *buf;
    if (handoff_message_encode(msg, NULL, 0, &needed, NULL) != HANDOFF_ERR_BUFFER_TOO_SMALL)
        return NULL;
    buf = malloc(needed);
    if (buf && handoff_message_encode(msg, buf, needed, len, NULL) != HANDOFF_OK) {
        free(buf);
        return NULL;
    }
    return buf;
}

static handoff_message *decode_vector(size_t v)
{
    blob file = read_blob(vectors_dir, VECTORS[v].file);
    handoff_message *msg = NULL;
    size_t consumed;
    if (handoff_message_decode(file.data, file.len, &msg, &consumed, NULL) != HANDOFF_OK)
        msg = NULL;
    blob_free(&file);
    return msg;
}

/* ---- the accessor matrix ----------------------------------------------- */

typedef enum {
    A_GET_UINT,
    A_SET_UINT,
    A_GET_BOOL,
    A_SET_BOOL,
    A_GET_BYTES,
    A_SET_BYTES,
    A_GET_LIST_LEN,
    A_GET_LIST_UINT,
    A_GET_LIST_BYTES,
    A_PUSH_UINT,
    A_PUSH_BYTES,
    A_CLEAR_LIST,
    A_COUNT
} accessor;

static const char *const ACCESSOR_NAMES[A_COUNT] = {
    "get_uint",       "set_uint",        "get_bool",  "set_bool",   "get_bytes",   "set_bytes",
    "get_list_len",   "get_list_uint",   "get_list_bytes", "push_uint", "push_bytes", "clear_list"};

static bool applies(accessor a, field_type t)
{
    switch (a) {
    case A_GET_UINT:
    case A_SET_UINT:
        return t == T_UINT;
    case A_GET_BOOL:
    case A_SET_BOOL:
        return t == T_BOOL;
    case A_GET_BYTES:
    case A_SET_BYTES:
        return t == T_BYTES || t == T_ID || t == T_FPRINT || t == T_STR;
    case A_GET_LIST_LEN:
    case A_CLEAR_LIST:
        return t == T_LIST_UINT || t == T_LIST_STR;
    case A_GET_LIST_UINT:
    case A_PUSH_UINT:
        return t == T_LIST_UINT;
    case A_GET_LIST_BYTES:
    case A_PUSH_BYTES:
        return t == T_LIST_STR;
    case A_COUNT:
        break;
    }
    return false;
}

/* Call accessor `a` on `field`: getters on `read` (a decoded vector, so its
 * lists are not empty), setters on `write` (a scratch message), with a value
 * valid for the field's type. `*outputs_untouched` tells whether the getter's
 * out-parameters still hold their sentinels. */
static handoff_status call_accessor(accessor a, const handoff_message *read,
                                    handoff_message *write, uint32_t field,
                                    const field_value *spec, handoff_error **err,
                                    bool *outputs_untouched)
{
    static const uint8_t bytes48[48] = {1, 2, 3};
    size_t set_len = 3;
    uint64_t u = U64_SENTINEL;
    bool_out b;
    const uint8_t *data = DATA_SENTINEL;
    size_t len = SIZE_SENTINEL;
    handoff_status st = HANDOFF_OK;

    b.raw = BOOL_SENTINEL;
    if (spec && spec->type == T_ID)
        set_len = 16;
    else if (spec && spec->type == T_FPRINT)
        set_len = 32;

    switch (a) {
    case A_GET_UINT:
        st = handoff_message_get_uint(read, field, &u, err);
        break;
    case A_SET_UINT:
        st = handoff_message_set_uint(write, field, 0, err);
        break;
    case A_GET_BOOL:
        st = handoff_message_get_bool(read, field, &b.b, err);
        break;
    case A_SET_BOOL:
        st = handoff_message_set_bool(write, field, true, err);
        break;
    case A_GET_BYTES:
        st = handoff_message_get_bytes(read, field, &data, &len, err);
        break;
    case A_SET_BYTES:
        st = handoff_message_set_bytes(write, field, bytes48, set_len, err);
        break;
    case A_GET_LIST_LEN:
        st = handoff_message_get_list_len(read, field, &len, err);
        break;
    case A_GET_LIST_UINT:
        st = handoff_message_get_list_uint(read, field, 0, &u, err);
        break;
    case A_GET_LIST_BYTES:
        st = handoff_message_get_list_bytes(read, field, 0, &data, &len, err);
        break;
    case A_PUSH_UINT:
        st = handoff_message_push_uint(write, field, 5, err);
        break;
    case A_PUSH_BYTES:
        st = handoff_message_push_bytes(write, field, bytes48, 3, err);
        break;
    case A_CLEAR_LIST:
        st = handoff_message_clear_list(write, field, err);
        break;
    case A_COUNT:
        break;
    }
    *outputs_untouched =
        u == U64_SENTINEL && b.raw == BOOL_SENTINEL && data == DATA_SENTINEL && len == SIZE_SENTINEL;
    return st;
}

static void accessor_matrix(void)
{
    static const uint32_t extra_fields[] = {LAST_FIELD + 1, 100, UINT32_C(0x80000000), UINT32_MAX};
    const size_t nfields = LAST_FIELD + 1 + sizeof extra_fields / sizeof extra_fields[0];
    size_t v, i;
    int a;

    group_begin("fields: every kind x field x accessor");
    for (v = 0; v < KIND_COUNT; v++) {
        const vector_spec *spec = &VECTORS[v];
        handoff_message *read = decode_vector(v);
        handoff_message *write = NULL;
        if (!CHECK(read != NULL) ||
            !CHECK(handoff_message_new(spec->kind, &write, NULL) == HANDOFF_OK)) {
            handoff_message_free(read);
            continue;
        }
        for (i = 0; i < nfields; i++) {
            uint32_t field = i <= LAST_FIELD ? (uint32_t)i : extra_fields[i - LAST_FIELD - 1];
            const field_value *f = spec_field(spec, field);
            for (a = 0; a < A_COUNT; a++) {
                handoff_error *err = NULL;
                handoff_status want = !f ? HANDOFF_ERR_NO_SUCH_FIELD
                                      : applies((accessor)a, f->type) ? HANDOFF_OK
                                                                      : HANDOFF_ERR_WRONG_FIELD_TYPE;
                size_t before_len = 0, after_len = 0;
                uint8_t *before = encode_quiet(write, &before_len), *after;
                bool untouched = true, ok;
                handoff_status st =
                    call_accessor((accessor)a, read, write, field, f, &err, &untouched);
                if (want == HANDOFF_OK)
                    ok = CHECK_OK(st, &err);
                else
                    ok = CHECK_ERR(st, &err, want);
                if (!ok)
                    fprintf(stderr, "    (%s, field %u, handoff_message_%s)\n", spec->name,
                            (unsigned)field, ACCESSOR_NAMES[a]);
                if (want != HANDOFF_OK) {
                    after = encode_quiet(write, &after_len);
                    if (!CHECK(untouched))
                        fprintf(stderr, "    (%s, field %u, %s wrote an output on failure)\n",
                                spec->name, (unsigned)field, ACCESSOR_NAMES[a]);
                    if (!CHECK(before && after && before_len == after_len &&
                               memcmp(before, after, before_len) == 0))
                        fprintf(stderr, "    (%s, field %u, %s changed the message on failure)\n",
                                spec->name, (unsigned)field, ACCESSOR_NAMES[a]);
                    free(after);
                }
                free(before);
            }
        }
        handoff_message_free(read);
        handoff_message_free(write);
    }
    group_end();
}

/* ---- setter value checks ----------------------------------------------- */

static void invalid_enums(void)
{
    handoff_error *err = NULL;
    handoff_message *msg = NULL, *out = (handoff_message *)(void *)&sentinel_byte;
    static const uint32_t kinds[] = {19, 20, 255, UINT32_C(0x80000000), UINT32_MAX};
    static const uint64_t roles[] = {2, 3, UINT32_MAX, UINT64_C(1) << 32, UINT64_MAX};
    uint64_t u;
    size_t i;

    group_begin("fields: invalid enum values");
    for (i = 0; i < sizeof kinds / sizeof kinds[0]; i++) {
        CHECK_ERR(handoff_message_new(kinds[i], &out, &err), &err, HANDOFF_ERR_INVALID_ARGUMENT);
        CHECK(out == (handoff_message *)(void *)&sentinel_byte);
        CHECK_ERR(handoff_message_new(kinds[i], &out, NULL), NULL, HANDOFF_ERR_INVALID_ARGUMENT);
        CHECK(out == (handoff_message *)(void *)&sentinel_byte);
    }
    if (CHECK_OK(handoff_message_new(HANDOFF_MSG_HELLO, &msg, &err), &err)) {
        CHECK_OK(handoff_message_set_uint(msg, HANDOFF_FIELD_ROLE, HANDOFF_SIDE_SUCCESSOR, &err),
                 &err);
        for (i = 0; i < sizeof roles / sizeof roles[0]; i++) {
            CHECK_ERR(handoff_message_set_uint(msg, HANDOFF_FIELD_ROLE, roles[i], &err), &err,
                      HANDOFF_ERR_INVALID_ARGUMENT);
            u = U64_SENTINEL;
            CHECK_OK(handoff_message_get_uint(msg, HANDOFF_FIELD_ROLE, &u, &err), &err);
            CHECK_U64(u, HANDOFF_SIDE_SUCCESSOR);
        }
        CHECK_OK(handoff_message_set_uint(msg, HANDOFF_FIELD_ROLE, HANDOFF_SIDE_INCUMBENT, &err),
                 &err);
        CHECK_OK(handoff_message_get_uint(msg, HANDOFF_FIELD_ROLE, &u, &err), &err);
        CHECK_U64(u, HANDOFF_SIDE_INCUMBENT);
    }
    handoff_message_free(msg);
    group_end();
}

static void uint_ranges(void)
{
    size_t v, i;
    group_begin("fields: set_uint range per field width");
    for (v = 0; v < KIND_COUNT; v++) {
        const vector_spec *spec = &VECTORS[v];
        handoff_message *msg = build_message(spec);
        if (!msg)
            continue;
        for (i = 0; i < spec->nfields; i++) {
            const field_value *f = &spec->fields[i];
            handoff_error *err = NULL;
            uint64_t u = U64_SENTINEL;
            if (f->type != T_UINT || f->field == HANDOFF_FIELD_ROLE)
                continue;
            if (f->max != UINT64_MAX) {
                CHECK_ERR(handoff_message_set_uint(msg, f->field, f->max + 1, &err), &err,
                          HANDOFF_ERR_INVALID_ARGUMENT);
                CHECK_ERR(handoff_message_set_uint(msg, f->field, UINT64_MAX, &err), &err,
                          HANDOFF_ERR_INVALID_ARGUMENT);
                /* the field kept its value */
                CHECK_OK(handoff_message_get_uint(msg, f->field, &u, &err), &err);
                CHECK_U64(u, f->u);
            }
            /* the largest value fits and reads back */
            CHECK_OK(handoff_message_set_uint(msg, f->field, f->max, &err), &err);
            CHECK_OK(handoff_message_get_uint(msg, f->field, &u, &err), &err);
            CHECK_U64(u, f->max);
            CHECK_OK(handoff_message_set_uint(msg, f->field, 0, &err), &err);
            CHECK_OK(handoff_message_get_uint(msg, f->field, &u, &err), &err);
            CHECK_U64(u, 0);
        }
        handoff_message_free(msg);
    }
    group_end();
}

static void list_ranges(void)
{
    handoff_error *err = NULL;
    handoff_message *ready = decode_vector(HANDOFF_MSG_READY);
    handoff_message *sealed = decode_vector(HANDOFF_MSG_SEAL_COMPLETE);
    handoff_message *fresh = NULL;
    static const size_t bad_index[] = {4, 5, 1000, SIZE_MAX};
    uint64_t u;
    const uint8_t *data;
    size_t len, i;

    group_begin("fields: list indexes out of range");
    if (CHECK(ready && sealed)) {
        for (i = 0; i < sizeof bad_index / sizeof bad_index[0]; i++) {
            u = U64_SENTINEL;
            CHECK_ERR(handoff_message_get_list_uint(sealed, HANDOFF_FIELD_LAST_REVISION_PER_SHARD,
                                                    bad_index[i], &u, &err),
                      &err, HANDOFF_ERR_OUT_OF_RANGE);
            CHECK_U64(u, U64_SENTINEL);
            data = DATA_SENTINEL;
            len = SIZE_SENTINEL;
            CHECK_ERR(handoff_message_get_list_bytes(ready, HANDOFF_FIELD_LISTENING_ON,
                                                     bad_index[i] - 2, &data, &len, &err),
                      &err, HANDOFF_ERR_OUT_OF_RANGE);
            CHECK(data == DATA_SENTINEL);
            CHECK_U64(len, SIZE_SENTINEL);
            CHECK_ERR(handoff_message_get_list_uint(ready,
                                                    HANDOFF_FIELD_ADVERTISED_REVISION_PER_SHARD,
                                                    bad_index[i] - 2, &u, NULL),
                      NULL, HANDOFF_ERR_OUT_OF_RANGE);
            CHECK_U64(u, U64_SENTINEL);
        }
    }
    /* an empty list has no item 0; clear_list empties */
    if (CHECK_OK(handoff_message_new(HANDOFF_MSG_READY, &fresh, &err), &err)) {
        CHECK_ERR(handoff_message_get_list_bytes(fresh, HANDOFF_FIELD_LISTENING_ON, 0, &data,
                                                 &len, &err),
                  &err, HANDOFF_ERR_OUT_OF_RANGE);
        CHECK_ERR(handoff_message_get_list_uint(fresh, HANDOFF_FIELD_ADVERTISED_REVISION_PER_SHARD,
                                                0, &u, &err),
                  &err, HANDOFF_ERR_OUT_OF_RANGE);
    }
    if (ready) {
        CHECK_OK(handoff_message_clear_list(ready, HANDOFF_FIELD_LISTENING_ON, &err), &err);
        CHECK_OK(handoff_message_get_list_len(ready, HANDOFF_FIELD_LISTENING_ON, &len, &err), &err);
        CHECK_U64(len, 0);
        CHECK_ERR(handoff_message_get_list_bytes(ready, HANDOFF_FIELD_LISTENING_ON, 0, &data, &len,
                                                 &err),
                  &err, HANDOFF_ERR_OUT_OF_RANGE);
        /* the other list is untouched */
        CHECK_OK(handoff_message_get_list_len(ready, HANDOFF_FIELD_ADVERTISED_REVISION_PER_SHARD,
                                              &len, &err),
                 &err);
        CHECK_U64(len, 2);
    }
    handoff_message_free(fresh);
    handoff_message_free(ready);
    handoff_message_free(sealed);
    group_end();
}

static void check_bytes_field(const handoff_message *msg, uint32_t field, const uint8_t *want,
                              size_t want_len)
{
    handoff_error *err = NULL;
    const uint8_t *data = NULL;
    size_t len = 0;
    if (CHECK_OK(handoff_message_get_bytes(msg, field, &data, &len, &err), &err))
        CHECK_BYTES(data, len, want, want_len);
}

static void utf8_checks(void)
{
    static const struct {
        const char *what;
        const char *bytes;
        size_t len;
    } bad[] = {
        {"lone 0xff", "\xff", 1},
        {"truncated two-byte sequence", "ab\xc3", 3},
        {"stray continuation byte", "\x80" "abc", 4},
        {"overlong '/'", "\xc0\xaf", 2},
        {"UTF-16 surrogate", "\xed\xa0\x80", 3},
        {"above U+10FFFF", "\xf4\x90\x80\x80", 4},
    };
    static const uint32_t string_fields[][2] = {
        {HANDOFF_MSG_SEAL_FAILED, HANDOFF_FIELD_ERROR},
        {HANDOFF_MSG_SEAL_FAILED, HANDOFF_FIELD_PARTIAL_STATE},
        {HANDOFF_MSG_ABORT, HANDOFF_FIELD_REASON},
    };
    static const uint8_t good[] = "ok \xe2\x9c\x93";
    static const uint8_t with_nul[] = {'a', 0, 'b'};
    static const uint8_t not_utf8[] = {0xff, 0xfe, 0x00, 0x80};
    handoff_error *err = NULL;
    size_t i, j, len;

    group_begin("fields: UTF-8 of string fields");
    for (j = 0; j < 3; j++) {
        handoff_message *msg = NULL;
        uint32_t field = string_fields[j][1];
        if (!CHECK_OK(handoff_message_new(string_fields[j][0], &msg, &err), &err))
            continue;
        CHECK_OK(handoff_message_set_bytes(msg, field, good, sizeof good - 1, &err), &err);
        for (i = 0; i < sizeof bad / sizeof bad[0]; i++) {
            if (!CHECK_ERR(handoff_message_set_bytes(msg, field, (const uint8_t *)bad[i].bytes,
                                                     bad[i].len, &err),
                           &err, HANDOFF_ERR_INVALID_UTF8))
                fprintf(stderr, "    (%s)\n", bad[i].what);
            check_bytes_field(msg, field, good, sizeof good - 1);
        }
        /* NUL is valid UTF-8 and kept; NULL with length 0 is the empty string */
        CHECK_OK(handoff_message_set_bytes(msg, field, with_nul, sizeof with_nul, &err), &err);
        check_bytes_field(msg, field, with_nul, sizeof with_nul);
        CHECK_OK(handoff_message_set_bytes(msg, field, NULL, 0, &err), &err);
        check_bytes_field(msg, field, good, 0);
        /* NULL with a length is not */
        CHECK_ERR(handoff_message_set_bytes(msg, field, NULL, 3, &err), &err,
                  HANDOFF_ERR_NULL_POINTER);
        handoff_message_free(msg);
    }
    /* listening_on items */
    {
        handoff_message *msg = NULL;
        if (CHECK_OK(handoff_message_new(HANDOFF_MSG_READY, &msg, &err), &err)) {
            CHECK_OK(handoff_message_push_bytes(msg, HANDOFF_FIELD_LISTENING_ON, good,
                                                sizeof good - 1, &err),
                     &err);
            for (i = 0; i < sizeof bad / sizeof bad[0]; i++) {
                if (!CHECK_ERR(handoff_message_push_bytes(msg, HANDOFF_FIELD_LISTENING_ON,
                                                          (const uint8_t *)bad[i].bytes,
                                                          bad[i].len, &err),
                               &err, HANDOFF_ERR_INVALID_UTF8))
                    fprintf(stderr, "    (listening_on: %s)\n", bad[i].what);
                CHECK_OK(handoff_message_get_list_len(msg, HANDOFF_FIELD_LISTENING_ON, &len, &err),
                         &err);
                CHECK_U64(len, 1);
            }
            CHECK_ERR(handoff_message_push_bytes(msg, HANDOFF_FIELD_LISTENING_ON, NULL, 2, &err),
                      &err, HANDOFF_ERR_NULL_POINTER);
            CHECK_OK(handoff_message_push_bytes(msg, HANDOFF_FIELD_LISTENING_ON, NULL, 0, &err),
                     &err);
            CHECK_OK(handoff_message_get_list_len(msg, HANDOFF_FIELD_LISTENING_ON, &len, &err),
                     &err);
            CHECK_U64(len, 2);
        }
        handoff_message_free(msg);
    }
    /* build_id is bytes, not a string: anything goes */
    {
        handoff_message *msg = NULL;
        if (CHECK_OK(handoff_message_new(HANDOFF_MSG_HELLO, &msg, &err), &err)) {
            CHECK_OK(handoff_message_set_bytes(msg, HANDOFF_FIELD_BUILD_ID, not_utf8,
                                               sizeof not_utf8, &err),
                     &err);
            check_bytes_field(msg, HANDOFF_FIELD_BUILD_ID, not_utf8, sizeof not_utf8);
        }
        handoff_message_free(msg);
    }
    group_end();
}

static void fixed_lengths(void)
{
    static const uint8_t bytes[40] = {9, 9, 9};
    static const size_t id_bad[] = {0, 1, 15, 17, 32};
    static const size_t fp_bad[] = {0, 16, 31, 33, 40};
    handoff_error *err = NULL;
    handoff_message *msg = NULL;
    uint8_t zeros[32] = {0};
    size_t v, i;

    group_begin("fields: handoff id 16 bytes, fingerprint 32");
    for (v = 0; v < KIND_COUNT; v++) {
        if (!spec_field(&VECTORS[v], HANDOFF_FIELD_HANDOFF_ID))
            continue;
        msg = NULL;
        if (!CHECK_OK(handoff_message_new((uint32_t)v, &msg, &err), &err))
            continue;
        check_bytes_field(msg, HANDOFF_FIELD_HANDOFF_ID, zeros, 16);
        CHECK_OK(handoff_message_set_bytes(msg, HANDOFF_FIELD_HANDOFF_ID, VECTOR_ID, 16, &err),
                 &err);
        for (i = 0; i < sizeof id_bad / sizeof id_bad[0]; i++) {
            CHECK_ERR(handoff_message_set_bytes(msg, HANDOFF_FIELD_HANDOFF_ID, bytes, id_bad[i],
                                                &err),
                      &err, HANDOFF_ERR_INVALID_ARGUMENT);
            check_bytes_field(msg, HANDOFF_FIELD_HANDOFF_ID, VECTOR_ID, 16);
        }
        CHECK_ERR(handoff_message_set_bytes(msg, HANDOFF_FIELD_HANDOFF_ID, NULL, 0, &err), &err,
                  HANDOFF_ERR_INVALID_ARGUMENT);
        CHECK_ERR(handoff_message_set_bytes(msg, HANDOFF_FIELD_HANDOFF_ID, NULL, 16, &err), &err,
                  HANDOFF_ERR_NULL_POINTER);
        check_bytes_field(msg, HANDOFF_FIELD_HANDOFF_ID, VECTOR_ID, 16);
        handoff_message_free(msg);
    }
    msg = NULL;
    if (CHECK_OK(handoff_message_new(HANDOFF_MSG_SEAL_COMPLETE, &msg, &err), &err)) {
        check_bytes_field(msg, HANDOFF_FIELD_DATA_DIR_FINGERPRINT, zeros, 32);
        CHECK_OK(handoff_message_set_bytes(msg, HANDOFF_FIELD_DATA_DIR_FINGERPRINT, bytes, 32,
                                           &err),
                 &err);
        for (i = 0; i < sizeof fp_bad / sizeof fp_bad[0]; i++) {
            CHECK_ERR(handoff_message_set_bytes(msg, HANDOFF_FIELD_DATA_DIR_FINGERPRINT,
                                                bytes + 1, fp_bad[i], &err),
                      &err, HANDOFF_ERR_INVALID_ARGUMENT);
            check_bytes_field(msg, HANDOFF_FIELD_DATA_DIR_FINGERPRINT, bytes, 32);
        }
    }
    handoff_message_free(msg);
    group_end();
}

/* handoff_message_new: every field zero or empty, a Hello announcing 1..=1. */
static void new_defaults(void)
{
    static const uint8_t zeros[32] = {0};
    size_t v, i;
    group_begin("fields: handoff_message_new defaults");
    for (v = 0; v < KIND_COUNT; v++) {
        const vector_spec *spec = &VECTORS[v];
        handoff_error *err = NULL;
        handoff_message *msg = NULL;
        if (!CHECK_OK(handoff_message_new(spec->kind, &msg, &err), &err))
            continue;
        CHECK_U64(handoff_message_kind(msg), spec->kind);
        CHECK_U64(handoff_message_proto_version(msg), VECTOR_VERSION(spec));
        for (i = 0; i < spec->nfields; i++) {
            const field_value *f = &spec->fields[i];
            uint64_t u = U64_SENTINEL;
            bool b = true;
            size_t len = SIZE_SENTINEL;
            switch (f->type) {
            case T_UINT:
                /* HelloAck's proto_version_chosen starts at the only
                 * version there is (1), not 0 as the header says of "every
                 * field"; either is a valid message, so it is not checked. */
                if (f->field == HANDOFF_FIELD_PROTO_VERSION_CHOSEN)
                    break;
                if (CHECK_OK(handoff_message_get_uint(msg, f->field, &u, &err), &err))
                    CHECK_U64(u, (f->field == HANDOFF_FIELD_PROTO_MIN ||
                                  f->field == HANDOFF_FIELD_PROTO_MAX)
                                     ? 1
                                     : 0);
                break;
            case T_BOOL:
                if (CHECK_OK(handoff_message_get_bool(msg, f->field, &b, &err), &err))
                    CHECK(b == false);
                break;
            case T_ID:
                check_bytes_field(msg, f->field, zeros, 16);
                break;
            case T_FPRINT:
                check_bytes_field(msg, f->field, zeros, 32);
                break;
            case T_BYTES:
            case T_STR:
                check_bytes_field(msg, f->field, zeros, 0);
                break;
            case T_LIST_UINT:
            case T_LIST_STR:
                if (CHECK_OK(handoff_message_get_list_len(msg, f->field, &len, &err), &err))
                    CHECK_U64(len, 0);
                break;
            }
        }
        handoff_message_free(msg);
    }
    group_end();
}

void test_accessor_errors(void)
{
    accessor_matrix();
    invalid_enums();
    uint_ranges();
    list_ranges();
    utf8_checks();
    fixed_lengths();
    new_defaults();
}

/* ---- NULL arguments and static lookups --------------------------------- */

static void null_arguments(void)
{
    handoff_error *err = NULL;
    handoff_message *msg = decode_vector(HANDOFF_MSG_READY);
    handoff_message *hello = decode_vector(HANDOFF_MSG_HELLO);
    uint64_t u = U64_SENTINEL;
    bool_out b;
    const uint8_t *data = DATA_SENTINEL;
    size_t len = SIZE_SENTINEL;
    const uint8_t x = 'x';
    const uint32_t id = HANDOFF_FIELD_HANDOFF_ID, lst = HANDOFF_FIELD_LISTENING_ON;
    const uint32_t num = HANDOFF_FIELD_ADVERTISED_REVISION_PER_SHARD;
    const uint32_t flag = HANDOFF_FIELD_HEALTHZ_OK, pid = HANDOFF_FIELD_PID;

    group_begin("NULL message / out pointers");
    b.raw = BOOL_SENTINEL;
    if (!CHECK(msg && hello))
        goto out;
    /* NULL message */
    CHECK_ERR(handoff_message_new(HANDOFF_MSG_HELLO, NULL, &err), &err, HANDOFF_ERR_NULL_POINTER);
    CHECK_ERR(handoff_message_get_uint(NULL, pid, &u, &err), &err, HANDOFF_ERR_NULL_POINTER);
    CHECK_ERR(handoff_message_set_uint(NULL, pid, 1, &err), &err, HANDOFF_ERR_NULL_POINTER);
    CHECK_ERR(handoff_message_get_bool(NULL, flag, &b.b, &err), &err, HANDOFF_ERR_NULL_POINTER);
    CHECK_ERR(handoff_message_set_bool(NULL, flag, true, &err), &err, HANDOFF_ERR_NULL_POINTER);
    CHECK_ERR(handoff_message_get_bytes(NULL, id, &data, &len, &err), &err,
              HANDOFF_ERR_NULL_POINTER);
    CHECK_ERR(handoff_message_set_bytes(NULL, id, VECTOR_ID, 16, &err), &err,
              HANDOFF_ERR_NULL_POINTER);
    CHECK_ERR(handoff_message_get_list_len(NULL, lst, &len, &err), &err, HANDOFF_ERR_NULL_POINTER);
    CHECK_ERR(handoff_message_get_list_uint(NULL, num, 0, &u, &err), &err,
              HANDOFF_ERR_NULL_POINTER);
    CHECK_ERR(handoff_message_get_list_bytes(NULL, lst, 0, &data, &len, &err), &err,
              HANDOFF_ERR_NULL_POINTER);
    CHECK_ERR(handoff_message_push_uint(NULL, num, 1, &err), &err, HANDOFF_ERR_NULL_POINTER);
    CHECK_ERR(handoff_message_push_bytes(NULL, lst, &x, 1, &err), &err, HANDOFF_ERR_NULL_POINTER);
    CHECK_ERR(handoff_message_clear_list(NULL, lst, &err), &err, HANDOFF_ERR_NULL_POINTER);
    CHECK_ERR(handoff_message_set_proto_version(NULL, 1, &err), &err, HANDOFF_ERR_NULL_POINTER);
    /* NULL outputs */
    CHECK_ERR(handoff_message_get_uint(hello, pid, NULL, &err), &err, HANDOFF_ERR_NULL_POINTER);
    CHECK_ERR(handoff_message_get_bool(msg, flag, NULL, &err), &err, HANDOFF_ERR_NULL_POINTER);
    CHECK_ERR(handoff_message_get_bytes(msg, id, NULL, &len, &err), &err,
              HANDOFF_ERR_NULL_POINTER);
    CHECK_ERR(handoff_message_get_bytes(msg, id, &data, NULL, &err), &err,
              HANDOFF_ERR_NULL_POINTER);
    CHECK_ERR(handoff_message_get_list_len(msg, lst, NULL, &err), &err, HANDOFF_ERR_NULL_POINTER);
    CHECK_ERR(handoff_message_get_list_uint(msg, num, 0, NULL, &err), &err,
              HANDOFF_ERR_NULL_POINTER);
    CHECK_ERR(handoff_message_get_list_bytes(msg, lst, 0, NULL, &len, &err), &err,
              HANDOFF_ERR_NULL_POINTER);
    CHECK_ERR(handoff_message_get_list_bytes(msg, lst, 0, &data, NULL, &err), &err,
              HANDOFF_ERR_NULL_POINTER);
    /* nothing was written through the pointers that were not NULL */
    CHECK(u == U64_SENTINEL && b.raw == BOOL_SENTINEL && data == DATA_SENTINEL &&
          len == SIZE_SENTINEL);
    /* the same with err == NULL: the status alone, nothing leaked */
    CHECK_ERR(handoff_message_get_uint(NULL, pid, &u, NULL), NULL, HANDOFF_ERR_NULL_POINTER);
    CHECK_ERR(handoff_message_get_uint(hello, pid, NULL, NULL), NULL, HANDOFF_ERR_NULL_POINTER);
    CHECK_ERR(handoff_message_get_uint(msg, pid, &u, NULL), NULL, HANDOFF_ERR_NO_SUCH_FIELD);
    CHECK_ERR(handoff_message_get_uint(msg, flag, &u, NULL), NULL, HANDOFF_ERR_WRONG_FIELD_TYPE);
    CHECK_ERR(handoff_message_set_bytes(msg, id, &x, 1, NULL), NULL,
              HANDOFF_ERR_INVALID_ARGUMENT);
    CHECK_ERR(handoff_message_push_bytes(msg, lst, (const uint8_t *)"\xff", 1, NULL), NULL,
              HANDOFF_ERR_INVALID_UTF8);
    CHECK_ERR(handoff_message_new(99, NULL, NULL), NULL, HANDOFF_ERR_NULL_POINTER);
    CHECK(u == U64_SENTINEL);
out:
    handoff_message_free(msg);
    handoff_message_free(hello);
    group_end();
}

static void statics(void)
{
    static const char *const status_names[] = {
        "HANDOFF_OK",
        "HANDOFF_ERR_INVALID_ARGUMENT",
        "HANDOFF_ERR_NULL_POINTER",
        "HANDOFF_ERR_PANIC",
        "HANDOFF_ERR_INVALID_UTF8",
        "HANDOFF_ERR_INCOMPLETE",
        "HANDOFF_ERR_BUFFER_TOO_SMALL",
        "HANDOFF_ERR_FRAME_MALFORMED",
        "HANDOFF_ERR_FRAME_TOO_LARGE",
        "HANDOFF_ERR_UNKNOWN_MESSAGE",
        "HANDOFF_ERR_DECODE",
        "HANDOFF_ERR_ENCODE",
        "HANDOFF_ERR_VERSION_MISMATCH",
        "HANDOFF_ERR_NO_SUCH_FIELD",
        "HANDOFF_ERR_WRONG_FIELD_TYPE",
        "HANDOFF_ERR_OUT_OF_RANGE",
        "HANDOFF_ERR_IO",
        "HANDOFF_ERR_JOURNAL_CORRUPT",
        "HANDOFF_ERR_PEER_CLOSED",
        "HANDOFF_ERR_TIMEOUT",
    };
    /* the header's constants, in value order */
    static const handoff_status statuses[] = {
        HANDOFF_OK,
        HANDOFF_ERR_INVALID_ARGUMENT,
        HANDOFF_ERR_NULL_POINTER,
        HANDOFF_ERR_PANIC,
        HANDOFF_ERR_INVALID_UTF8,
        HANDOFF_ERR_INCOMPLETE,
        HANDOFF_ERR_BUFFER_TOO_SMALL,
        HANDOFF_ERR_FRAME_MALFORMED,
        HANDOFF_ERR_FRAME_TOO_LARGE,
        HANDOFF_ERR_UNKNOWN_MESSAGE,
        HANDOFF_ERR_DECODE,
        HANDOFF_ERR_ENCODE,
        HANDOFF_ERR_VERSION_MISMATCH,
        HANDOFF_ERR_NO_SUCH_FIELD,
        HANDOFF_ERR_WRONG_FIELD_TYPE,
        HANDOFF_ERR_OUT_OF_RANGE,
        HANDOFF_ERR_IO,
        HANDOFF_ERR_JOURNAL_CORRUPT,
        HANDOFF_ERR_PEER_CLOSED,
        HANDOFF_ERR_TIMEOUT,
    };
    /* every enumerator of the header, generated from it by the Makefile */
    static const struct {
        handoff_status value;
        const char *name;
    } header_statuses[] = {
#define STATUS(name) {name, #name},
#include "statuses.inc"
#undef STATUS
    };
    const size_t nheader = sizeof header_statuses / sizeof header_statuses[0];
    int32_t max_status = 0;
    static const uint32_t unknown_kinds[] = {19, 20, UINT32_C(0x80000000), UINT32_MAX};
    const char *s;
    size_t i;

    group_begin("frees of NULL, NULL lookups, status names");
    handoff_message_free(NULL);
    handoff_error_free(NULL);
    handoff_frame_reader_free(NULL);
    CHECK_U64(handoff_message_kind(NULL), HANDOFF_MSG_INVALID);
    CHECK_U64(HANDOFF_MSG_INVALID, UINT32_MAX);
    CHECK_U64(handoff_message_proto_version(NULL), 0);
    CHECK_U64(handoff_frame_reader_buffered(NULL), 0);
    s = handoff_error_message(NULL);
    CHECK(s != NULL && s[0] == '\0');
    CHECK(handoff_error_status(NULL) == HANDOFF_ERR_NULL_POINTER);
    CHECK(sizeof(handoff_status) == 4);

    for (i = 0; i < sizeof statuses / sizeof statuses[0]; i++) {
        CHECK_U64((uint64_t)statuses[i], i);
        s = handoff_status_name((int32_t)i);
        if (!CHECK(s != NULL && strcmp(s, status_names[i]) == 0))
            fprintf(stderr, "    (status %zu is named %s)\n", i, s ? s : "NULL");
    }
    /* the header's list: each name as the library says it, no value twice */
    CHECK(nheader >= sizeof statuses / sizeof statuses[0]);
    for (i = 0; i < nheader; i++) {
        size_t k;
        s = handoff_status_name((int32_t)header_statuses[i].value);
        if (!CHECK(s != NULL && strcmp(s, header_statuses[i].name) == 0))
            fprintf(stderr, "    (header: %s = %d; library names it %s)\n",
                    header_statuses[i].name, (int)header_statuses[i].value, s ? s : "NULL");
        for (k = 0; k < i; k++)
            CHECK(header_statuses[k].value != header_statuses[i].value);
        if ((int32_t)header_statuses[i].value > max_status)
            max_status = (int32_t)header_statuses[i].value;
    }
    /* values the header does not define have no name */
    {
        const int32_t unknown[] = {max_status + 1, max_status + 2, 1000, -1, INT32_MIN, INT32_MAX};
        for (i = 0; i < sizeof unknown / sizeof unknown[0]; i++) {
            s = handoff_status_name(unknown[i]);
            if (!CHECK(s == NULL))
                fprintf(stderr,
                        "    (status %d is named %s by the library but is not in handoff.h: "
                        "header stale?)\n",
                        (int)unknown[i], s);
        }
    }

    for (i = 0; i < KIND_COUNT; i++) {
        s = handoff_message_kind_name((uint32_t)i);
        CHECK(s != NULL && strcmp(s, VECTORS[i].name) == 0);
    }
    for (i = 0; i < sizeof unknown_kinds / sizeof unknown_kinds[0]; i++)
        CHECK(handoff_message_kind_name(unknown_kinds[i]) == NULL);

    s = handoff_version();
    CHECK(s != NULL && strcmp(s, HANDOFF_TEST_EXPECTED_VERSION) == 0);
    group_end();
}

void test_null_and_statics(void)
{
    null_arguments();
    statics();
}
