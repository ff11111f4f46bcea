/* The expected field values of the frame vectors, v1 and v2 (tests/vectors/README.md)
 * and the helpers that read, build and encode them through the C ABI. */
#include "vectors.h"

#include <stdlib.h>
#include <string.h>

#define U16_MAX UINT64_C(0xFFFF)
#define U32_MAX UINT64_C(0xFFFFFFFF)

static const uint8_t BUILD_ID[] = "build-7f3a";
/* "disk full: écrit": the literal is split so that \xa9 does not swallow
 * the 'c' that follows as another hex digit. */
static const uint8_t SEAL_ERROR[] = "disk full: \xc3\xa9" "crit";
static const uint8_t EMPTY[] = "";
static const uint8_t REASON[] = "successor timed out";
static const uint8_t FINGERPRINT[32] = {
    0xab, 0xab, 0xab, 0xab, 0xab, 0xab, 0xab, 0xab, 0xab, 0xab, 0xab,
    0xab, 0xab, 0xab, 0xab, 0xab, 0xab, 0xab, 0xab, 0xab, 0xab, 0xab,
    0xab, 0xab, 0xab, 0xab, 0xab, 0xab, 0xab, 0xab, 0xab, 0xab};
static const uint64_t LAST_REVISIONS[] = {0, 1, 300, UINT64_MAX};
static const char *const LISTENING_ON[] = {"tcp://127.0.0.1:8080", "unix:/run/x.sock"};
static const uint64_t ADVERTISED[] = {7, 8};
static const uint8_t ITEM_NAME[] = "kv";
static const uint8_t ITEM_UNREAD[] = "GET k";
static const uint8_t ITEM_UNWRITTEN[] = "VALUE v\n";
static const uint8_t ITEM_STATE[] = {0x01, 0x00, 0xff};

#define UINT(f, maximum, value) {.field = (f), .type = T_UINT, .max = (maximum), .u = (value)}
#define BOOL(f, value) {.field = (f), .type = T_BOOL, .b = (value)}
#define BYTES(f, t, data, n) {.field = (f), .type = (t), .bytes = (data), .len = (n)}
#define STR(f, literal) BYTES(f, T_STR, literal, sizeof literal - 1)
#define ID BYTES(HANDOFF_FIELD_HANDOFF_ID, T_ID, VECTOR_ID, 16)
#define LIST_UINT(f, array) \
    {.field = (f), .type = T_LIST_UINT, .uints = (array), .count = sizeof array / sizeof array[0]}
#define LIST_STR(f, array) \
    {.field = (f), .type = T_LIST_STR, .strs = (array), .count = sizeof array / sizeof array[0]}

const vector_spec VECTORS[KIND_COUNT] = {
    {HANDOFF_MSG_HELLO, "Hello", "frames/00_hello.bin", 6,
     {UINT(HANDOFF_FIELD_ROLE, 1, HANDOFF_SIDE_SUCCESSOR),
      UINT(HANDOFF_FIELD_PID, U32_MAX, 4242),
      BYTES(HANDOFF_FIELD_BUILD_ID, T_BYTES, BUILD_ID, sizeof BUILD_ID - 1),
      UINT(HANDOFF_FIELD_PROTO_MIN, U16_MAX, 1),
      UINT(HANDOFF_FIELD_PROTO_MAX, U16_MAX, 1),
      UINT(HANDOFF_FIELD_CAPABILITIES_RESERVED, UINT64_MAX, 0)}},
    {HANDOFF_MSG_HELLO_ACK, "HelloAck", "frames/01_hello_ack.bin", 2,
     {UINT(HANDOFF_FIELD_PROTO_VERSION_CHOSEN, U16_MAX, 1), ID}},
    {HANDOFF_MSG_PREPARE_HANDOFF, "PrepareHandoff", "frames/02_prepare_handoff.bin", 4,
     {ID, UINT(HANDOFF_FIELD_SUCCESSOR_PID, U32_MAX, 70000),
      UINT(HANDOFF_FIELD_DEADLINE_MS, UINT64_MAX, 300000),
      UINT(HANDOFF_FIELD_DRAIN_GRACE_MS, UINT64_MAX, 60000)}},
    {HANDOFF_MSG_DRAINED, "Drained", "frames/03_drained.bin", 2,
     {UINT(HANDOFF_FIELD_OPEN_CONNS_REMAINING, U32_MAX, 3),
      BOOL(HANDOFF_FIELD_ACCEPT_CLOSED, true)}},
    {HANDOFF_MSG_SEAL_REQUEST, "SealRequest", "frames/04_seal_request.bin", 1, {ID}},
    {HANDOFF_MSG_SEAL_PROGRESS, "SealProgress", "frames/05_seal_progress.bin", 3,
     {UINT(HANDOFF_FIELD_SHARDS_SEALED, U32_MAX, 2),
      UINT(HANDOFF_FIELD_SHARDS_TOTAL, U32_MAX, 8),
      UINT(HANDOFF_FIELD_LAST_REVISION, UINT64_MAX, UINT64_C(1) << 40)}},
    {HANDOFF_MSG_SEAL_COMPLETE, "SealComplete", "frames/06_seal_complete.bin", 3,
     {ID, LIST_UINT(HANDOFF_FIELD_LAST_REVISION_PER_SHARD, LAST_REVISIONS),
      BYTES(HANDOFF_FIELD_DATA_DIR_FINGERPRINT, T_FPRINT, FINGERPRINT, 32)}},
    {HANDOFF_MSG_SEAL_FAILED, "SealFailed", "frames/07_seal_failed.bin", 3,
     {ID, STR(HANDOFF_FIELD_ERROR, SEAL_ERROR), STR(HANDOFF_FIELD_PARTIAL_STATE, EMPTY)}},
    {HANDOFF_MSG_BEGIN, "Begin", "frames/08_begin.bin", 1, {ID}},
    {HANDOFF_MSG_READY, "Ready", "frames/09_ready.bin", 4,
     {ID, LIST_STR(HANDOFF_FIELD_LISTENING_ON, LISTENING_ON),
      BOOL(HANDOFF_FIELD_HEALTHZ_OK, true),
      LIST_UINT(HANDOFF_FIELD_ADVERTISED_REVISION_PER_SHARD, ADVERTISED)}},
    {HANDOFF_MSG_COMMIT, "Commit", "frames/10_commit.bin", 1, {ID}},
    {HANDOFF_MSG_ABORT, "Abort", "frames/11_abort.bin", 2, {ID, STR(HANDOFF_FIELD_REASON, REASON)}},
    {HANDOFF_MSG_RESUME_AFTER_ABORT, "ResumeAfterAbort", "frames/12_resume_after_abort.bin", 1, {ID}},
    {HANDOFF_MSG_HEARTBEAT, "Heartbeat", "frames/13_heartbeat.bin", 1,
     {UINT(HANDOFF_FIELD_TS_MS, UINT64_MAX, UINT64_C(1764000000123))}},
    {HANDOFF_MSG_CAPACITY, "Capacity", "v2/14_capacity.bin", 1,
     {UINT(HANDOFF_FIELD_DESCRIPTORS, U32_MAX, 10000)}},
    {HANDOFF_MSG_TRANSFER, "Transfer", "v2/15_transfer.bin", 2,
     {ID, UINT(HANDOFF_FIELD_ITEMS_MAX, U32_MAX, 65535)}},
    {HANDOFF_MSG_MOVING, "Moving", "v2/16_moving.bin", 2,
     {ID, UINT(HANDOFF_FIELD_ITEMS, U32_MAX, 300)}},
    {HANDOFF_MSG_ITEM, "Item", "v2/17_item_connection.bin", 6,
     {UINT(HANDOFF_FIELD_SEQ, U32_MAX, 7),
      UINT(HANDOFF_FIELD_ITEM_KIND, 1, HANDOFF_ITEM_CONNECTION),
      STR(HANDOFF_FIELD_NAME, ITEM_NAME),
      BYTES(HANDOFF_FIELD_UNREAD, T_BYTES, ITEM_UNREAD, sizeof ITEM_UNREAD - 1),
      BYTES(HANDOFF_FIELD_UNWRITTEN, T_BYTES, ITEM_UNWRITTEN, sizeof ITEM_UNWRITTEN - 1),
      BYTES(HANDOFF_FIELD_STATE, T_BYTES, ITEM_STATE, sizeof ITEM_STATE)}},
    {HANDOFF_MSG_ADOPTED, "Adopted", "v2/18_adopted.bin", 2,
     {ID, UINT(HANDOFF_FIELD_ITEMS, U32_MAX, 300)}},
};

const field_value *spec_field(const vector_spec *spec, uint32_t field)
{
    size_t i;
    for (i = 0; i < spec->nfields; i++)
        if (spec->fields[i].field == field)
            return &spec->fields[i];
    return NULL;
}

static void check_field(const handoff_message *msg, const field_value *f)
{
    handoff_error *err = NULL;
    uint64_t u = 0;
    bool b = false;
    const uint8_t *data = NULL;
    size_t len = 0, i;

    switch (f->type) {
    case T_UINT:
        if (CHECK_OK(handoff_message_get_uint(msg, f->field, &u, &err), &err))
            CHECK_U64(u, f->u);
        break;
    case T_BOOL:
        if (CHECK_OK(handoff_message_get_bool(msg, f->field, &b, &err), &err))
            CHECK(b == f->b);
        break;
    case T_BYTES:
    case T_ID:
    case T_FPRINT:
    case T_STR:
        if (CHECK_OK(handoff_message_get_bytes(msg, f->field, &data, &len, &err), &err))
            CHECK_BYTES(data, len, f->bytes, f->len);
        break;
    case T_LIST_UINT:
        if (!CHECK_OK(handoff_message_get_list_len(msg, f->field, &len, &err), &err) ||
            !CHECK_U64(len, f->count))
            break;
        for (i = 0; i < f->count; i++)
            if (CHECK_OK(handoff_message_get_list_uint(msg, f->field, i, &u, &err), &err))
                CHECK_U64(u, f->uints[i]);
        CHECK_ERR(handoff_message_get_list_uint(msg, f->field, f->count, &u, &err), &err,
                  HANDOFF_ERR_OUT_OF_RANGE);
        break;
    case T_LIST_STR:
        if (!CHECK_OK(handoff_message_get_list_len(msg, f->field, &len, &err), &err) ||
            !CHECK_U64(len, f->count))
            break;
        for (i = 0; i < f->count; i++)
            if (CHECK_OK(handoff_message_get_list_bytes(msg, f->field, i, &data, &len, &err),
                         &err))
                CHECK_BYTES(data, len, (const uint8_t *)f->strs[i], strlen(f->strs[i]));
        CHECK_ERR(handoff_message_get_list_bytes(msg, f->field, f->count, &data, &len, &err),
                  &err, HANDOFF_ERR_OUT_OF_RANGE);
        break;
    }
}

void check_fields(const handoff_message *msg, const vector_spec *spec)
{
    size_t i;
    CHECK_U64(handoff_message_kind(msg), spec->kind);
    for (i = 0; i < spec->nfields; i++)
        check_field(msg, &spec->fields[i]);
}

static void set_field(handoff_message *msg, const field_value *f)
{
    handoff_error *err = NULL;
    size_t i;

    switch (f->type) {
    case T_UINT:
        CHECK_OK(handoff_message_set_uint(msg, f->field, f->u, &err), &err);
        break;
    case T_BOOL:
        CHECK_OK(handoff_message_set_bool(msg, f->field, f->b, &err), &err);
        break;
    case T_BYTES:
    case T_ID:
    case T_FPRINT:
    case T_STR:
        CHECK_OK(handoff_message_set_bytes(msg, f->field, f->bytes, f->len, &err), &err);
        break;
    case T_LIST_UINT:
        for (i = 0; i < f->count; i++)
            CHECK_OK(handoff_message_push_uint(msg, f->field, f->uints[i], &err), &err);
        break;
    case T_LIST_STR:
        for (i = 0; i < f->count; i++)
            CHECK_OK(handoff_message_push_bytes(msg, f->field, (const uint8_t *)f->strs[i],
                                                strlen(f->strs[i]), &err),
                     &err);
        break;
    }
}

handoff_message *build_message(const vector_spec *spec)
{
    handoff_error *err = NULL;
    handoff_message *msg = NULL;
    size_t i;
    if (!CHECK_OK(handoff_message_new(spec->kind, &msg, &err), &err))
        return NULL;
    CHECK(msg != NULL);
    CHECK_U64(handoff_message_kind(msg), spec->kind);
    CHECK_U64(handoff_message_proto_version(msg), VECTOR_VERSION(spec));
    for (i = 0; i < spec->nfields; i++)
        set_field(msg, &spec->fields[i]);
    return msg;
}

uint8_t *encode_alloc(const handoff_message *msg, size_t *len)
{
    handoff_error *err = NULL;
    size_t needed = 0, written = 0;
    uint8_t *buf;
    if (!CHECK_ERR(handoff_message_encode(msg, NULL, 0, &needed, &err), &err,
                   HANDOFF_ERR_BUFFER_TOO_SMALL) ||
        !CHECK(needed >= 6))
        return NULL;
    buf = malloc(needed);
    if (!buf)
        return NULL;
    if (!CHECK_OK(handoff_message_encode(msg, buf, needed, &written, &err), &err) ||
        !CHECK_U64(written, needed)) {
        free(buf);
        return NULL;
    }
    *len = written;
    return buf;
}
