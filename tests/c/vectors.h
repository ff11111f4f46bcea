/*
 * The expected contents of tests/vectors/ (see its README.md), as data: for
 * each of the 14 v1 frames and the 5 of v2 (the Item one: its connection
 * vector), every field of the message with its type and value.
 * The tables list *every* field each message kind has; test_fields.c checks
 * that every field not listed answers HANDOFF_ERR_NO_SUCH_FIELD, so a field
 * missing here would show up as a failure.
 */
#ifndef HANDOFF_TEST_VECTORS_H
#define HANDOFF_TEST_VECTORS_H

#include "check.h"

#define KIND_COUNT 19
/* The frame version of a kind's vector: 2 for the kinds v2 adds. */
#define VECTOR_VERSION(spec) ((spec)->kind >= HANDOFF_MSG_CAPACITY ? 2u : 1u)
#define MAX_FIELDS 6
/* Field numbers run 1..LAST_FIELD; 0 is not a field. */
#define LAST_FIELD HANDOFF_FIELD_STATE

typedef enum {
    T_UINT,      /* get_uint / set_uint */
    T_BOOL,      /* get_bool / set_bool */
    T_BYTES,     /* get_bytes / set_bytes, any bytes */
    T_ID,        /* get_bytes / set_bytes, exactly 16 bytes */
    T_FPRINT,    /* get_bytes / set_bytes, exactly 32 bytes */
    T_STR,       /* get_bytes / set_bytes, UTF-8 */
    T_LIST_UINT, /* get_list_len / get_list_uint / push_uint / clear_list */
    T_LIST_STR   /* get_list_len / get_list_bytes / push_bytes / clear_list */
} field_type;

typedef struct {
    uint32_t field;
    field_type type;
    uint64_t max;               /* T_UINT: largest value the field takes */
    uint64_t u;                 /* T_UINT */
    bool b;                     /* T_BOOL */
    const uint8_t *bytes;       /* T_BYTES, T_ID, T_FPRINT, T_STR */
    size_t len;
    const uint64_t *uints;      /* T_LIST_UINT */
    const char *const *strs;    /* T_LIST_STR */
    size_t count;               /* list length */
} field_value;

typedef struct {
    uint32_t kind;
    const char *name;  /* handoff_message_kind_name() */
    const char *file;  /* relative to the vectors directory */
    size_t nfields;
    field_value fields[MAX_FIELDS];
} vector_spec;

extern const vector_spec VECTORS[KIND_COUNT];

/* The spec's entry for `field` of a kind, NULL if the kind has no such field. */
const field_value *spec_field(const vector_spec *spec, uint32_t field);

/* Check every field of `msg` against `spec` with the get accessors. */
void check_fields(const handoff_message *msg, const vector_spec *spec);
/* Build the spec's message from scratch with handoff_message_new and the
 * set/push accessors (every step checked). NULL if new failed. */
handoff_message *build_message(const vector_spec *spec);
/* Encode `msg` into a malloc'd buffer (size query first); NULL on failure. */
uint8_t *encode_alloc(const handoff_message *msg, size_t *len);

#endif /* HANDOFF_TEST_VECTORS_H */
