/*
 * Tiny check framework shared by the C test program's files.
 *
 * CHECK(cond)                  a plain condition
 * CHECK_OK(status, err)        status is HANDOFF_OK and err stayed NULL
 * CHECK_ERR(status, err, code) status is `code`, err holds a non-empty
 *                              message and handoff_error_status(err) == code;
 *                              frees err and resets it to NULL
 * CHECK_ERR_MSG(status, err, code, needle)
 *                              as CHECK_ERR, and the message contains needle
 * CHECK_BYTES(got, got_len, want, want_len)
 *                              equal byte strings (hex dump on mismatch)
 * CHECK_U64(got, want)         equal integers (both printed on mismatch)
 *
 * Checks are counted in groups: group_begin("name") ... group_end() prints
 * one line per group. Failures print file:line and what differed.
 */
#ifndef HANDOFF_TEST_CHECK_H
#define HANDOFF_TEST_CHECK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <handoff.h>

void group_begin(const char *name);
void group_end(void);

/* Totals over all groups (and over forked children that reported back). */
extern unsigned long checks_passed;
extern unsigned long checks_failed;

/* Add checks counted elsewhere (a forked child) to the group and totals. */
void record_external(unsigned long passed, unsigned long failed);

bool check_true(bool ok, const char *expr, const char *file, int line);
bool check_ok(handoff_status st, handoff_error **err, const char *expr,
              const char *file, int line);
bool check_err(handoff_status st, handoff_error **err, handoff_status want,
               const char *needle, const char *expr, const char *file, int line);
bool check_bytes(const uint8_t *got, size_t got_len, const uint8_t *want,
                 size_t want_len, const char *expr, const char *file, int line);
/* Report a failure with a printf-style explanation. */
bool check_fail(const char *file, int line, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;

#define CHECK(cond) check_true((cond), #cond, __FILE__, __LINE__)
#define CHECK_OK(st, errp) check_ok((st), (errp), #st, __FILE__, __LINE__)
#define CHECK_ERR(st, errp, want) \
    check_err((st), (errp), (want), NULL, #st, __FILE__, __LINE__)
#define CHECK_ERR_MSG(st, errp, want, needle) \
    check_err((st), (errp), (want), (needle), #st, __FILE__, __LINE__)
#define CHECK_BYTES(got, got_len, want, want_len) \
    check_bytes((got), (got_len), (want), (want_len), #got " == " #want, __FILE__, __LINE__)
#define CHECK_U64(got, want) check_u64((got), (want), #got, __FILE__, __LINE__)

bool check_u64(uint64_t got, uint64_t want, const char *expr, const char *file, int line);

/* ---- shared fixtures ---------------------------------------------------- */

/* A whole file read into memory (malloc'd; free with free()). */
typedef struct {
    uint8_t *data;
    size_t len;
} blob;

/* Read `dir/name`; aborts the program if the file cannot be read (a missing
 * vector is a broken test setup, not a test result). */
blob read_blob(const char *dir, const char *name);
/* Read a file; returns false if it cannot be opened. */
bool read_file(const char *path, blob *out);
bool write_file(const char *path, const uint8_t *data, size_t len);
bool file_exists(const char *path);
void blob_free(blob *b);
/* A malloc'd copy of a blob with room for `extra` more bytes. */
uint8_t *copy_bytes(const uint8_t *data, size_t len, size_t extra);
/* A malloc'd, printf-formatted string. */
char *format(const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 1, 2)))
#endif
    ;

/* The handoff id every vector carries. */
extern const uint8_t VECTOR_ID[16];

/* Paths given on the command line / made at startup. */
extern const char *vectors_dir;  /* tests/vectors */
extern const char *scratch_dir;  /* a fresh temporary directory */

/* Test groups, one file each. */
void test_vectors(void);
void test_journal_vectors(void);
void test_bad_frames(void);
void test_encode_errors(void);
void test_accessor_errors(void);
void test_null_and_statics(void);
void test_requests(void);
void test_frame_reader(void);
void test_journal_errors(void);

#endif /* HANDOFF_TEST_CHECK_H */
