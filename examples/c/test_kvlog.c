/* Unit test of kv.log's open and preload (kvlog.c, kvmap.c) on real files:
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
    struct kvlog log;
    struct kvmap map;
    char err[256];
    kvlog_init(&log);
    kvmap_init(&map);
    struct stat before, after;
    stat(path, &before);
    check(kvlog_preload(&log, dir, &map, err, sizeof err) == 0, "preload: %s", err);
    stat(path, &after);
    check(log.preload_records == 2500, "preloaded %llu", (unsigned long long)log.preload_records);
    check(before.st_size == after.st_size && before.st_mtime == after.st_mtime,
          "the preload changed the file");
    write_records(2500, 3100); /* the incumbent goes on writing */
    check(kvlog_open(&log, dir, &map, err, sizeof err) == 0, "open: %s", err);
    check(log.preload_kept == 2500, "kept %llu", (unsigned long long)log.preload_kept);
    check(log.records == 3100, "records %llu", (unsigned long long)log.records);
    check_table(&map, 3100, "preload + appends");
    kvlog_free(&log);
    kvmap_free(&map);
}

static void test_replaced_file(void)
{
    fresh_dir();
    write_records(0, 1500);
    struct kvlog log;
    struct kvmap map;
    char err[256];
    kvlog_init(&log);
    kvmap_init(&map);
    check(kvlog_preload(&log, dir, &map, err, sizeof err) == 0, "preload: %s", err);
    /* Another file takes kv.log's name: 800 records, fewer than preloaded,
     * then more, so that only the inode tells them apart. */
    check(rename(path, moved) == 0, "rename");
    write_records(0, 1800);
    check(kvlog_open(&log, dir, &map, err, sizeof err) == 0, "open: %s", err);
    check(log.preload_kept == 0, "kept %llu of a replaced file",
          (unsigned long long)log.preload_kept);
    check(log.records == 1800, "records %llu", (unsigned long long)log.records);
    check_table(&map, 1800, "replaced file");
    kvlog_free(&log);
    kvmap_free(&map);
}

static void test_shrunk_file(void)
{
    fresh_dir();
    write_records(0, 1200);
    struct kvlog log;
    struct kvmap map;
    char err[256];
    kvlog_init(&log);
    kvmap_init(&map);
    check(kvlog_preload(&log, dir, &map, err, sizeof err) == 0, "preload: %s", err);
    check(truncate(path, file_size() / 2) == 0, "truncate");
    check(kvlog_open(&log, dir, &map, err, sizeof err) == 0, "open: %s", err);
    check(log.preload_kept == 0, "kept a preload of a file that shrank");
    check(log.records < 1200 && log.records > 0, "records %llu", (unsigned long long)log.records);
    check_table(&map, (int)log.records, "shrunk file");
    kvlog_free(&log);
    kvmap_free(&map);
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
    struct kvlog log;
    struct kvmap map;
    char err[256];
    kvlog_init(&log);
    kvmap_init(&map);
    check(kvlog_preload(&log, dir, &map, err, sizeof err) == 0, "preload: %s", err);
    check(log.preload_records == 1000, "preloaded %llu", (unsigned long long)log.preload_records);
    check(file_size() == full - 10, "the preload cut a torn tail");
    int fd = open(path, O_WRONLY);
    check(pwrite(fd, last + last_len - 10, 10, full - 10) == 10, "complete the record");
    close(fd);
    check(kvlog_open(&log, dir, &map, err, sizeof err) == 0, "open: %s", err);
    check(log.preload_kept == 1000 && log.records == 1001, "kept %llu, records %llu",
          (unsigned long long)log.preload_kept, (unsigned long long)log.records);
    check_table(&map, 1001, "completed record");
    kvlog_free(&log);
    kvmap_free(&map);
}

static void test_no_log(void)
{
    fresh_dir();
    struct kvlog log;
    struct kvmap map;
    char err[256];
    kvlog_init(&log);
    kvmap_init(&map);
    check(kvlog_preload(&log, dir, &map, err, sizeof err) == 0, "preload: %s", err);
    check(!log.preloaded && map.len == 0, "preloaded a missing log");
    check(file_size() == -1 && errno == ENOENT, "the preload created the log");
    check(kvlog_open(&log, dir, &map, err, sizeof err) == 0, "open: %s", err);
    check(log.records == 0 && file_size() == 0, "open of a missing log");
    kvlog_free(&log);
    kvmap_free(&map);
}

static void test_unreadable_and_foreign(void)
{
    fresh_dir();
    struct kvlog log;
    struct kvmap map;
    char err[256];
    kvlog_init(&log);
    kvmap_init(&map);
    /* A directory where the log should be: readable by nobody as a log. */
    check(mkdir(path, 0755) == 0, "mkdir kv.log");
    check(kvlog_preload(&log, dir, &map, err, sizeof err) == 1, "preload of a directory");
    check(!log.preloaded && strstr(err, "cannot read") != NULL, "reason: %s", err);
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
    check(kvlog_preload(&log, dir, &map, err, sizeof err) == -1, "preload of another format");
    check(strstr(err, "not a SET record") != NULL, "reason: %s", err);
    kvlog_free(&log);
    kvmap_free(&map);
}

int main(void)
{
    const char *tmp = getenv("TMPDIR");
    snprintf(dir, sizeof dir, "%s/kvlog-test.%d", tmp ? tmp : "/tmp", (int)getpid());
    snprintf(path, sizeof path, "%s/%s", dir, KV_LOG_FILE);
    snprintf(moved, sizeof moved, "%s.old", path);
    test_preload_then_appends();
    test_replaced_file();
    test_shrunk_file();
    test_torn_tail_completed();
    test_no_log();
    test_unreadable_and_foreign();
    unlink(path);
    unlink(moved);
    if (rmdir(dir) != 0)
        perror(dir);
    if (failures) {
        fprintf(stderr, "test_kvlog: %d failure(s)\n", failures);
        return 1;
    }
    puts("test_kvlog: preload and open, 6 cases ok");
    return 0;
}
