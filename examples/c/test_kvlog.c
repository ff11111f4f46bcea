/* Unit test of kv.log's open, preload and compaction (kvlog.c, kvmap.c) on real files:
 * `make -C examples/c check` builds it with the sanitizers and runs it. */
#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "kv.h"

static int failures;

static void check(int ok, const char *what, ...)
{
    if (ok)
        return;
    va_list ap;
    va_start(ap, what);
    fprintf(stderr, "FAIL: ");
    vfprintf(stderr, what, ap);
    fputc('\n', stderr);
    va_end(ap);
    failures++;
}

static char dir[256];
static char path[300];

static char moved[320]; /* where test_replaced_file moves kv.log */

/* An empty data directory (the tests make no other files in it). */
static void fresh_dir(void)
{
    unlink(path);
    unlink(moved);
    if (mkdir(dir, 0755) != 0 && errno != EEXIST) {
        perror(dir);
        exit(2);
    }
}

/* A log and the table it replays into, as each case starts them. */
struct fixture {
    struct kvlog log;
    struct kvmap map;
    char err[256];
};

static void fixture_begin(struct fixture *f)
{
    kvlog_init(&f->log);
    kvmap_init(&f->map);
    f->err[0] = '\0';
}

static void fixture_end(struct fixture *f)
{
    kvlog_free(&f->log);
    kvmap_free(&f->map);
}

/* A writer as the incumbent is one: kvlog_open + kvlog_append + sync. */
static void write_records(int from, int to)
{
    struct kvlog log;
    struct kvmap map;
    char err[256];
    kvlog_init(&log);
    kvmap_init(&map);
    if (kvlog_open(&log, dir, &map, err, sizeof err) != 0) {
        fprintf(stderr, "writer open: %s\n", err);
        exit(2);
    }
    for (int i = from; i < to; i++) {
        char key[32], value[32];
        int kl = snprintf(key, sizeof key, "k%d", i % 1000);
        int vl = snprintf(value, sizeof value, "v%d", i);
        if (kvlog_append(&log, 7, key, (size_t)kl, value, (size_t)vl) != 0) {
            perror("append");
            exit(2);
        }
    }
    if (kvlog_close(&log) != 0) {
        perror("close");
        exit(2);
    }
    kvlog_free(&log);
    kvmap_free(&map);
}

/* The table holds, for every key, the value of the last of records [0, n). */
static void check_table(const struct kvmap *map, int n, const char *when)
{
    size_t keys = (size_t)(n < 1000 ? n : 1000);
    check(map->len == keys, "%s: %zu keys, expected %zu", when, map->len, keys);
    for (int k = 0; k < 1000 && k < n; k++) {
        char key[32], want[32];
        int kl = snprintf(key, sizeof key, "k%d", k);
        int last = k + ((n - 1 - k) / 1000) * 1000;
        int wl = snprintf(want, sizeof want, "v%d", last);
        const struct kv_item *item = kvmap_get(map, key, (size_t)kl);
        check(item != NULL && item->value_len == wl &&
                  memcmp(kv_item_value(item), want, (size_t)wl) == 0,
              "%s: %s is not %s", when, key, want);
    }
}

static off_t file_size(void)
{
    struct stat st;
    return stat(path, &st) == 0 ? st.st_size : -1;
}

static void test_preload_then_appends(void)
{
    fresh_dir();
    write_records(0, 2500);
    struct fixture f;
    fixture_begin(&f);
    struct stat before, after;
    stat(path, &before);
    check(kvlog_preload(&f.log, dir, &f.map, f.err, sizeof f.err) == 0, "preload: %s", f.err);
    stat(path, &after);
    check(f.log.preload_records == 2500, "preloaded %llu", (unsigned long long)f.log.preload_records);
    check(before.st_size == after.st_size && before.st_mtime == after.st_mtime,
          "the preload changed the file");
    write_records(2500, 3100); /* the incumbent goes on writing */
    check(kvlog_open(&f.log, dir, &f.map, f.err, sizeof f.err) == 0, "open: %s", f.err);
    check(f.log.preload_kept == 2500, "kept %llu", (unsigned long long)f.log.preload_kept);
    check(f.log.records == 3100, "records %llu", (unsigned long long)f.log.records);
    check_table(&f.map, 3100, "preload + appends");
    fixture_end(&f);
}

static void test_replaced_file(void)
{
    fresh_dir();
    write_records(0, 1500);
    struct fixture f;
    fixture_begin(&f);
    check(kvlog_preload(&f.log, dir, &f.map, f.err, sizeof f.err) == 0, "preload: %s", f.err);
    /* Another file takes kv.log's name: 800 records, fewer than preloaded,
     * then more, so that only the inode tells them apart. */
    check(rename(path, moved) == 0, "rename");
    write_records(0, 1800);
    check(kvlog_open(&f.log, dir, &f.map, f.err, sizeof f.err) == 0, "open: %s", f.err);
    check(f.log.preload_kept == 0, "kept %llu of a replaced file",
          (unsigned long long)f.log.preload_kept);
    check(f.log.records == 1800, "records %llu", (unsigned long long)f.log.records);
    check_table(&f.map, 1800, "replaced file");
    fixture_end(&f);
}

static void test_shrunk_file(void)
{
    fresh_dir();
    write_records(0, 1200);
    struct fixture f;
    fixture_begin(&f);
    check(kvlog_preload(&f.log, dir, &f.map, f.err, sizeof f.err) == 0, "preload: %s", f.err);
    check(truncate(path, file_size() / 2) == 0, "truncate");
    check(kvlog_open(&f.log, dir, &f.map, f.err, sizeof f.err) == 0, "open: %s", f.err);
    check(f.log.preload_kept == 0, "kept a preload of a file that shrank");
    check(f.log.records < 1200 && f.log.records > 0, "records %llu", (unsigned long long)f.log.records);
    check_table(&f.map, (int)f.log.records, "shrunk file");
    fixture_end(&f);
}

static void test_torn_tail_completed(void)
{
    fresh_dir();
    write_records(0, 1001);
    off_t full = file_size();
    /* Keep the last record's bytes, cut it in two: a record being written. */
    unsigned char last[64];
    off_t last_len = 0;
    {
        int fd = open(path, O_RDONLY);
        /* Records of 1001 ("k0", "v1000") are 8+13+2+5 = 28 bytes. */
        last_len = 28;
        check(pread(fd, last, (size_t)last_len, full - last_len) == last_len, "pread");
        close(fd);
    }
    check(truncate(path, full - 10) == 0, "truncate");
    struct fixture f;
    fixture_begin(&f);
    check(kvlog_preload(&f.log, dir, &f.map, f.err, sizeof f.err) == 0, "preload: %s", f.err);
    check(f.log.preload_records == 1000, "preloaded %llu", (unsigned long long)f.log.preload_records);
    check(file_size() == full - 10, "the preload cut a torn tail");
    int fd = open(path, O_WRONLY);
    check(pwrite(fd, last + last_len - 10, 10, full - 10) == 10, "complete the record");
    close(fd);
    check(kvlog_open(&f.log, dir, &f.map, f.err, sizeof f.err) == 0, "open: %s", f.err);
    check(f.log.preload_kept == 1000 && f.log.records == 1001, "kept %llu, records %llu",
          (unsigned long long)f.log.preload_kept, (unsigned long long)f.log.records);
    check_table(&f.map, 1001, "completed record");
    fixture_end(&f);
}

static void test_no_log(void)
{
    fresh_dir();
    struct fixture f;
    fixture_begin(&f);
    check(kvlog_preload(&f.log, dir, &f.map, f.err, sizeof f.err) == 0, "preload: %s", f.err);
    check(!f.log.preloaded && f.map.len == 0, "preloaded a missing log");
    check(file_size() == -1 && errno == ENOENT, "the preload created the log");
    check(kvlog_open(&f.log, dir, &f.map, f.err, sizeof f.err) == 0, "open: %s", f.err);
    check(f.log.records == 0 && file_size() == 0, "open of a missing log");
    fixture_end(&f);
}

static void test_unreadable_and_foreign(void)
{
    fresh_dir();
    struct fixture f;
    fixture_begin(&f);
    /* A directory where the log should be: readable by nobody as a f.log. */
    check(mkdir(path, 0755) == 0, "mkdir kv.log");
    check(kvlog_preload(&f.log, dir, &f.map, f.err, sizeof f.err) == 1, "preload of a directory");
    check(!f.log.preloaded && strstr(f.err, "cannot read") != NULL, "reason: %s", f.err);
    rmdir(path);
    /* A record whose CRC is right but whose op is not SET: another format. */
    unsigned char rec[8 + 13 + 2] = {0};
    unsigned char *body = rec + 8;
    rec[0] = 15; /* body_len */
    body[0] = 9; /* op */
    body[9] = 1; /* key_len */
    body[11] = 1; /* value_len */
    body[13] = 'k';
    body[14] = 'v';
    uint32_t crc = kv_crc32c(0, body, 15);
    for (int i = 0; i < 4; i++)
        rec[4 + i] = (unsigned char)(crc >> (8 * i));
    int fd = open(path, O_WRONLY | O_CREAT, 0644);
    check(write(fd, rec, sizeof rec) == (ssize_t)sizeof rec, "write");
    close(fd);
    check(kvlog_preload(&f.log, dir, &f.map, f.err, sizeof f.err) == -1, "preload of another format");
    check(strstr(f.err, "not a SET record") != NULL, "reason: %s", f.err);
    /* After valid records too: the whole log is refused, naming the offset. */
    unlink(path);
    write_records(0, 10);
    off_t at = file_size();
    fd = open(path, O_WRONLY | O_APPEND);
    check(write(fd, rec, sizeof rec) == (ssize_t)sizeof rec, "write");
    close(fd);
    check(kvlog_preload(&f.log, dir, &f.map, f.err, sizeof f.err) == -1 && f.map.len == 0,
          "preload of valid records then another format");
    char where[64];
    snprintf(where, sizeof where, "record at offset %lld ", (long long)at);
    check(strstr(f.err, where) != NULL, "reason: %s (expected %s)", f.err, where);
    fixture_end(&f);
}

/* A table filled to its load bound takes updates without growing (the
 * tail replay after a handoff is mostly updates: a rehash of the whole table
 * there was most of the successor's time between Begin and Ready). */
static void test_updates_at_the_bound_do_not_grow(void)
{
    struct kvmap map;
    kvmap_init(&map);
    char key[32];
    for (int k = 0; k < 4096; k++) {
        int kl = snprintf(key, sizeof key, "k%d", k);
        check(kvmap_put(&map, key, (size_t)kl, "a", 1) == 0, "put %s", key);
    }
    size_t cap = map.cap;
    check(map.len * 2 == cap, "filled to the bound: %zu keys in %zu slots", map.len, cap);
    for (int k = 0; k < 4096; k += 7) {
        int kl = snprintf(key, sizeof key, "k%d", k);
        check(kvmap_put(&map, key, (size_t)kl, "b", 1) == 0, "update %s", key);
    }
    check(map.cap == cap && map.len == 4096, "updates kept %zu slots (now %zu, %zu keys)", cap,
          map.cap, map.len);
    const struct kv_item *item = kvmap_get(&map, "k7", 2);
    check(item != NULL && item->value_len == 1 && item->bytes[2] == 'b', "k7 updated");
    check(kvmap_put(&map, "new", 3, "c", 1) == 0 && map.cap == cap * 2 && map.len == 4097,
          "a new key past the bound grows the table");
    check(kvmap_get(&map, "new", 3) != NULL && kvmap_get(&map, "k4095", 5) != NULL,
          "both found after the growth");
    kvmap_free(&map);
}

static char compact_path[320]; /* <dir>/kv.log.compact */

static void test_compaction_policy(void)
{
    check(!kvlog_compaction_due(KV_COMPACT_MIN_RECORDS - 1, 0), "due below the minimum");
    check(kvlog_compaction_due(KV_COMPACT_MIN_RECORDS, KV_COMPACT_MIN_RECORDS / 2),
          "not due at the minimum with half as many keys");
    check(!kvlog_compaction_due(KV_COMPACT_MIN_RECORDS, KV_COMPACT_MIN_RECORDS / 2 + 1),
          "due with more keys than half the records");
}

static uint64_t first_record_generation(void)
{
    unsigned char head[17];
    int fd = open(path, O_RDONLY);
    ssize_t n = pread(fd, head, sizeof head, 0);
    close(fd);
    uint64_t generation = 0;
    for (int i = 7; n == (ssize_t)sizeof head && i >= 0; i--)
        generation = generation << 8 | head[9 + i];
    return generation;
}

static void test_compaction(void)
{
    fresh_dir();
    const int n = (int)KV_COMPACT_MIN_RECORDS + 5000;
    write_records(0, n);
    struct stat before, after;
    stat(path, &before);
    struct fixture f;
    fixture_begin(&f);
    check(kvlog_open(&f.log, dir, &f.map, f.err, sizeof f.err) == 0, "open: %s", f.err);
    check(kvlog_compaction_due(f.log.records, f.map.len), "%llu records, %zu keys: not due",
          (unsigned long long)f.log.records, f.map.len);
    check(kvlog_compact(&f.log, &f.map, 9, f.err, sizeof f.err) == 0, "compact: %s", f.err);
    stat(path, &after);
    check(f.log.records == 1000, "compacted to %llu records", (unsigned long long)f.log.records);
    check(after.st_ino != before.st_ino, "compaction kept the inode");
    check((off_t)f.log.size == after.st_size && after.st_size < before.st_size / 50,
          "size %lld of %lld bytes", (long long)after.st_size, (long long)before.st_size);
    check(access(compact_path, F_OK) != 0, "%s left behind", compact_path);
    check(first_record_generation() == 9, "compacted records stamped %llu",
          (unsigned long long)first_record_generation());
    /* Appends after the compaction go to the new file. */
    check(kvlog_append(&f.log, 9, "k0", 2, "after", 5) == 0, "append");
    check(kvlog_close(&f.log) == 0, "close");
    fixture_end(&f);

    fixture_begin(&f);
    check(kvlog_open(&f.log, dir, &f.map, f.err, sizeof f.err) == 0, "reopen: %s", f.err);
    check(f.log.records == 1001, "reopened %llu records", (unsigned long long)f.log.records);
    const struct kv_item *k0 = kvmap_get(&f.map, "k0", 2);
    check(k0 != NULL && k0->value_len == 5 && memcmp(kv_item_value(k0), "after", 5) == 0,
          "k0 lost the append after the compaction");
    check(kvmap_put(&f.map, "k0", 2, "v70000", 6) == 0, "put");
    check_table(&f.map, n, "compacted then reopened");
    check(!kvlog_compaction_due(f.log.records, f.map.len), "due again after compacting");
    fixture_end(&f);
}

static void test_stale_compaction_removed(void)
{
    fresh_dir();
    write_records(0, 300);
    off_t size = file_size();
    int fd = open(compact_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    check(fd >= 0 && write(fd, "half a compaction", 17) == 17, "write %s", compact_path);
    close(fd);
    struct fixture f;
    fixture_begin(&f);
    check(kvlog_open(&f.log, dir, &f.map, f.err, sizeof f.err) == 0, "open: %s", f.err);
    check(access(compact_path, F_OK) != 0 && errno == ENOENT, "stale %s kept", compact_path);
    check(file_size() == size && f.log.records == 300, "kv.log changed: %lld bytes, %llu records",
          (long long)file_size(), (unsigned long long)f.log.records);
    check_table(&f.map, 300, "beside a stale compaction");
    fixture_end(&f);
}

static void test_compaction_failure_keeps_the_log(void)
{
    fresh_dir();
    write_records(0, 3000);
    off_t size = file_size();
    struct fixture f;
    fixture_begin(&f);
    check(kvlog_open(&f.log, dir, &f.map, f.err, sizeof f.err) == 0, "open: %s", f.err);
    /* A directory in the temporary file's place: creating it fails (the
     * tests run as root, so permissions cannot make it fail). */
    check(mkdir(compact_path, 0755) == 0, "mkdir %s", compact_path);
    check(kvlog_compact(&f.log, &f.map, 9, f.err, sizeof f.err) == 1, "compaction did not fail");
    check(strstr(f.err, KV_COMPACT_FILE) != NULL, "reason: %s", f.err);
    check(file_size() == size && f.log.records == 3000, "kv.log changed by a failed compaction");
    check(kvlog_append(&f.log, 9, "k1", 2, "still", 5) == 0 && kvlog_close(&f.log) == 0,
          "the old log is no longer writable");
    rmdir(compact_path);
    fixture_end(&f);
    fixture_begin(&f);
    check(kvlog_open(&f.log, dir, &f.map, f.err, sizeof f.err) == 0, "reopen: %s", f.err);
    check(f.log.records == 3001, "reopened %llu records", (unsigned long long)f.log.records);
    fixture_end(&f);
}

int main(void)
{
    const char *tmp = getenv("TMPDIR");
    snprintf(dir, sizeof dir, "%s/kvlog-test.%d", tmp ? tmp : "/tmp", (int)getpid());
    snprintf(path, sizeof path, "%s/%s", dir, KV_LOG_FILE);
    snprintf(moved, sizeof moved, "%s.old", path);
    snprintf(compact_path, sizeof compact_path, "%s/%s", dir, KV_COMPACT_FILE);
    test_preload_then_appends();
    test_replaced_file();
    test_shrunk_file();
    test_torn_tail_completed();
    test_no_log();
    test_unreadable_and_foreign();
    test_compaction_policy();
    test_compaction();
    test_stale_compaction_removed();
    test_compaction_failure_keeps_the_log();
    test_updates_at_the_bound_do_not_grow();
    unlink(path);
    unlink(moved);
    if (rmdir(dir) != 0)
        perror(dir);
    if (failures) {
        fprintf(stderr, "test_kvlog: %d failure(s)\n", failures);
        return 1;
    }
    puts("test_kvlog: preload, open, compaction and the table, 11 cases ok");
    return 0;
}
