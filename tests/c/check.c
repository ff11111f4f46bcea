/* The check framework and file helpers declared in check.h. */
#include "check.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

unsigned long checks_passed;
unsigned long checks_failed;

static const char *group_name;
static unsigned long group_passed;
static unsigned long group_failed;

const uint8_t VECTOR_ID[16] = {0x5a, 0x1e, 0x00, 0xff, 0x10, 0x20, 0x40, 0x80,
                               0x90, 0xa0, 0xb0, 0xc0, 0xd0, 0xe0, 0xf0, 0x01};

void group_begin(const char *name)
{
    group_name = name;
    group_passed = 0;
    group_failed = 0;
}

void group_end(void)
{
    if (group_failed == 0)
        printf("ok   %-44s %lu checks\n", group_name, group_passed);
    else
        printf("FAIL %-44s %lu of %lu checks failed\n", group_name, group_failed,
               group_passed + group_failed);
    fflush(stdout);
    group_name = NULL;
}

static bool record(bool ok)
{
    if (ok) {
        checks_passed++;
        group_passed++;
    } else {
        checks_failed++;
        group_failed++;
    }
    return ok;
}

void record_external(unsigned long passed, unsigned long failed)
{
    checks_passed += passed;
    group_passed += passed;
    checks_failed += failed;
    group_failed += failed;
}

static void where(const char *file, int line)
{
    fprintf(stderr, "  %s:%d: [%s] ", file, line, group_name ? group_name : "-");
}

bool check_fail(const char *file, int line, const char *fmt, ...)
{
    va_list ap;
    where(file, line);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    return record(false);
}

bool check_true(bool ok, const char *expr, const char *file, int line)
{
    if (!ok)
        return check_fail(file, line, "check failed: %s", expr);
    return record(true);
}

bool check_u64(uint64_t got, uint64_t want, const char *expr, const char *file, int line)
{
    if (got != want)
        return check_fail(file, line, "%s is %llu, expected %llu", expr,
                          (unsigned long long)got, (unsigned long long)want);
    return record(true);
}

static const char *status_str(handoff_status st)
{
    const char *name = handoff_status_name(st);
    return name ? name : "(unknown status)";
}

bool check_ok(handoff_status st, handoff_error **err, const char *expr, const char *file,
              int line)
{
    if (st != HANDOFF_OK) {
        check_fail(file, line, "%s: expected HANDOFF_OK, got %s (%d): %s", expr,
                   status_str(st), (int)st,
                   err && *err ? handoff_error_message(*err) : "(no error object)");
        if (err) {
            handoff_error_free(*err);
            *err = NULL;
        }
        return false;
    }
    if (err && *err) {
        check_fail(file, line, "%s: HANDOFF_OK but *err was set (%s)", expr,
                   handoff_error_message(*err));
        handoff_error_free(*err);
        *err = NULL;
        return false;
    }
    return record(true);
}

bool check_err(handoff_status st, handoff_error **err, handoff_status want, const char *needle,
               const char *expr, const char *file, int line)
{
    bool ok = true;
    const char *msg = err && *err ? handoff_error_message(*err) : NULL;
    if (st != want) {
        check_fail(file, line, "%s: expected %s, got %s (%d): %s", expr, status_str(want),
                   status_str(st), (int)st, msg ? msg : "(no error object)");
        ok = false;
    } else if (err == NULL) {
        /* the caller asked for no details: only the status is checked */
    } else if (*err == NULL) {
        check_fail(file, line, "%s: %s but *err is NULL", expr, status_str(st));
        ok = false;
    } else if (handoff_error_status(*err) != want) {
        check_fail(file, line, "%s: returned %s but handoff_error_status says %s", expr,
                   status_str(st), status_str(handoff_error_status(*err)));
        ok = false;
    } else if (msg == NULL || msg[0] == '\0') {
        check_fail(file, line, "%s: %s with an empty message", expr, status_str(st));
        ok = false;
    } else if (needle && strstr(msg, needle) == NULL) {
        check_fail(file, line, "%s: message \"%s\" does not contain \"%s\"", expr, msg, needle);
        ok = false;
    }
    if (err) {
        handoff_error_free(*err);
        *err = NULL;
    }
    return ok ? record(true) : false;
}

static void hex(const char *label, const uint8_t *p, size_t n)
{
    size_t i;
    fprintf(stderr, "    %s (%zu):", label, n);
    for (i = 0; i < n && i < 96; i++)
        fprintf(stderr, " %02x", p[i]);
    fprintf(stderr, "%s\n", n > 96 ? " ..." : "");
}

bool check_bytes(const uint8_t *got, size_t got_len, const uint8_t *want, size_t want_len,
                 const char *expr, const char *file, int line)
{
    if (got_len == want_len && (want_len == 0 || memcmp(got, want, want_len) == 0))
        return record(true);
    check_fail(file, line, "bytes differ: %s", expr);
    hex("got ", got, got_len);
    hex("want", want, want_len);
    return false;
}

/* ---- files --------------------------------------------------------------- */

bool read_file(const char *path, blob *out)
{
    FILE *f = fopen(path, "rb");
    uint8_t *data = NULL;
    size_t len = 0, cap = 0;
    if (!f)
        return false;
    for (;;) {
        size_t n;
        if (len == cap) {
            uint8_t *bigger;
            cap = cap ? cap * 2 : 256;
            bigger = realloc(data, cap);
            if (!bigger) {
                free(data);
                fclose(f);
                return false;
            }
            data = bigger;
        }
        n = fread(data + len, 1, cap - len, f);
        len += n;
        if (n == 0)
            break;
    }
    if (ferror(f)) {
        free(data);
        fclose(f);
        return false;
    }
    fclose(f);
    out->data = data;
    out->len = len;
    return true;
}

blob read_blob(const char *dir, const char *name)
{
    blob b;
    char *path = format("%s/%s", dir, name);
    if (!read_file(path, &b)) {
        fprintf(stderr, "cannot read test vector %s: %s\n", path, strerror(errno));
        exit(2);
    }
    free(path);
    return b;
}

bool write_file(const char *path, const uint8_t *data, size_t len)
{
    FILE *f = fopen(path, "wb");
    bool ok;
    if (!f)
        return false;
    ok = fwrite(data, 1, len, f) == len;
    return fclose(f) == 0 && ok;
}

bool file_exists(const char *path)
{
    struct stat st;
    return lstat(path, &st) == 0;
}

void blob_free(blob *b)
{
    free(b->data);
    b->data = NULL;
    b->len = 0;
}

uint8_t *copy_bytes(const uint8_t *data, size_t len, size_t extra)
{
    uint8_t *p = malloc(len + extra + 1);
    if (!p) {
        fprintf(stderr, "out of memory\n");
        exit(2);
    }
    if (len)
        memcpy(p, data, len);
    return p;
}

char *format(const char *fmt, ...)
{
    va_list ap;
    int n;
    char *s;
    va_start(ap, fmt);
    n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0 || !(s = malloc((size_t)n + 1))) {
        fprintf(stderr, "out of memory\n");
        exit(2);
    }
    va_start(ap, fmt);
    vsnprintf(s, (size_t)n + 1, fmt, ap);
    va_end(ap);
    return s;
}
