/* The append-only log: one record per acknowledged SET, each with its
 * length and a CRC-32C, so a torn last record is detected and cut away on
 * open. Format: examples/README.md. */
#define _POSIX_C_SOURCE 200809L /* pread, fdatasync, strdup, O_CLOEXEC */

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "kv.h"

/* ---- CRC-32C (Castagnoli): reflected polynomial 0x82F63B78, initial value
 * 0xFFFFFFFF, final xor 0xFFFFFFFF; "123456789" gives 0xE3069283. ------------ */

static uint32_t crc_table[256];
static bool crc_ready;

static void crc_init(void)
{
    for (uint32_t n = 0; n < 256; n++) {
        uint32_t c = n;
        for (int k = 0; k < 8; k++)
            c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
        crc_table[n] = c;
    }
    crc_ready = true;
}

static uint32_t crc32c_table(uint32_t crc, const unsigned char *p, size_t len)
{
    if (!crc_ready)
        crc_init();
    while (len--)
        crc = crc_table[(crc ^ *p++) & 0xff] ^ (crc >> 8);
    return crc;
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
/* SSE4.2 has a CRC-32C instruction: replay checks every record's CRC, and
 * this makes the check about 8 times cheaper than the table. */
__attribute__((target("sse4.2"))) static uint32_t crc32c_sse42(uint32_t crc,
                                                                 const unsigned char *p,
                                                                 size_t len)
{
    uint64_t c = crc;
    for (; len >= 8; p += 8, len -= 8) {
        uint64_t word;
        memcpy(&word, p, 8);
        c = __builtin_ia32_crc32di(c, word);
    }
    crc = (uint32_t)c;
    for (; len > 0; p++, len--)
        crc = __builtin_ia32_crc32qi(crc, *p);
    return crc;
}

static bool have_sse42(void)
{
    return __builtin_cpu_supports("sse4.2");
}
#else
static uint32_t crc32c_sse42(uint32_t crc, const unsigned char *p, size_t len)
{
    return crc32c_table(crc, p, len);
}

static bool have_sse42(void)
{
    return false;
}
#endif

/* Start with crc = 0; feed pieces by passing the previous result. */
uint32_t kv_crc32c(uint32_t crc, const void *data, size_t len)
{
    const unsigned char *p = data;
    return ~(have_sse42() ? crc32c_sse42(~crc, p, len) : crc32c_table(~crc, p, len));
}

bool kv_item_valid(const char *item, size_t len)
{
    if (len < 1 || len > KV_MAX_ITEM)
        return false;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)item[i];
        if (c < 0x21 || c > 0x7e)
            return false;
    }
    return true;
}

static void put_u16(unsigned char *p, uint16_t v)
{
    p[0] = (unsigned char)v;
    p[1] = (unsigned char)(v >> 8);
}

static void put_u32(unsigned char *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static void put_u64(unsigned char *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static uint16_t get_u16(const unsigned char *p)
{
    return (uint16_t)(p[0] | (p[1] << 8));
}

static uint32_t get_u32(const unsigned char *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) |
           ((uint32_t)p[3] << 24);
}

void kvlog_init(struct kvlog *log)
{
    memset(log, 0, sizeof *log);
    log->fd = -1;
}

static int sync_dir(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    int rc = fsync(fd);
    int saved = errno;
    close(fd);
    errno = saved;
    return rc;
}

static char *join(const char *dir, const char *name)
{
    size_t n = strlen(dir) + 1 + strlen(name) + 1;
    char *path = malloc(n);
    if (path != NULL)
        snprintf(path, n, "%s/%s", dir, name);
    return path;
}

/* Read bytes [from, from+len) of fd. 0: all read; 1: the file shrank under
 * us (parse what was read); -1: error. *got is what was read. */
static int read_range(int fd, unsigned char *buf, size_t len, uint64_t from, size_t *got)
{
    *got = 0;
    while (*got < len) {
        ssize_t n = pread(fd, buf + *got, len - *got, (off_t)(from + *got));
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -1;
        if (n == 0)
            return 1;
        *got += (size_t)n;
    }
    return 0;
}

/* The valid records at the start of `buf` (the log's bytes from offset
 * `base`): calls `each` with each one's offset in `buf`, key and value, in
 * order. Sets *valid_len to their length and *count to their number. 0: ok (a torn or corrupt tail may
 * follow); -1: a record with a good checksum but content this format does
 * not allow, or `each` failed (a reason in errbuf either way). */
static int scan(const unsigned char *buf, uint64_t size, uint64_t base,
                int (*each)(void *ctx, uint64_t off, const char *key, uint16_t key_len,
                            const char *value, uint16_t value_len),
                void *ctx, uint64_t *valid_len, uint64_t *count, char *errbuf, size_t errlen)
{
    uint64_t off = 0;
    *count = 0;
    for (;;) {
        *valid_len = off;
        if (size - off < KV_REC_HEADER)
            return 0; /* end, or a torn header */
        const unsigned char *rec = buf + off;
        uint32_t body_len = get_u32(rec);
        if (body_len < KV_REC_BODY_FIXED + 2 || body_len > KV_REC_BODY_FIXED + 2 * KV_MAX_ITEM)
            return 0; /* garbage length: a torn or zero-filled tail */
        if (size - off - KV_REC_HEADER < body_len)
            return 0; /* torn body */
        const unsigned char *body = rec + KV_REC_HEADER;
        if (kv_crc32c(0, body, body_len) != get_u32(rec + 4))
            return 0; /* corrupt: cut here */
        uint16_t key_len = get_u16(body + 9);
        uint16_t value_len = get_u16(body + 11);
        const char *key = (const char *)body + KV_REC_BODY_FIXED;
        const char *value = key + key_len;
        if (body[0] != KV_OP_SET || body_len != KV_REC_BODY_FIXED + (uint32_t)key_len + value_len ||
            !kv_item_valid(key, key_len) || !kv_item_valid(value, value_len)) {
            snprintf(errbuf, errlen,
                     "record at offset %llu has a valid checksum but is not a SET record of "
                     "this format (op %u, key %u bytes, value %u bytes): refusing to open",
                     (unsigned long long)(base + off), body[0], key_len, value_len);
            return -1;
        }
        if (each(ctx, off, key, key_len, value, value_len) != 0) {
            snprintf(errbuf, errlen, "out of memory replaying the log");
            return -1;
        }
        off += KV_REC_HEADER + body_len;
        (*count)++;
    }
}

static int put_record(void *map, uint64_t off, const char *key, uint16_t key_len,
                      const char *value, uint16_t value_len)
{
    (void)off;
    return kvmap_put(map, key, key_len, value, value_len);
}

/* Offsets of the valid records, for a newest-first replay. */
struct offsets {
    uint64_t *at;
    size_t len, cap;
};

static int note_offset(void *ctx, uint64_t off, const char *key, uint16_t key_len,
                       const char *value, uint16_t value_len)
{
    (void)key, (void)key_len, (void)value, (void)value_len;
    struct offsets *o = ctx;
    if (o->len == o->cap) {
        size_t cap = o->cap ? o->cap * 2 : 1024;
        uint64_t *at = realloc(o->at, cap * sizeof *at);
        if (at == NULL)
            return -1;
        o->at = at;
        o->cap = cap;
    }
    o->at[o->len++] = off;
    return 0;
}

/* Replay `buf`, the bytes of the log from offset `base`, into `map`: later
 * records win. Sets *valid_len to the length of the valid records at its
 * start and adds their count to *records. 0: ok (a torn or corrupt tail may
 * follow); -1: a record of another format, or no memory.
 *
 * Into an empty table the records are put newest first, each key only once:
 * most records of a long log overwrite keys that later ones overwrite again,
 * and a lookup costs less than an allocation and a free. */
static int replay(const unsigned char *buf, uint64_t size, uint64_t base, struct kvmap *map,
                  uint64_t *valid_len, uint64_t *records, char *errbuf, size_t errlen)
{
    uint64_t count = 0;
    if (map->len > 0) {
        int rc = scan(buf, size, base, put_record, map, valid_len, &count, errbuf, errlen);
        *records += count;
        return rc;
    }
    struct offsets o = {0};
    int rc = scan(buf, size, base, note_offset, &o, valid_len, &count, errbuf, errlen);
    for (size_t i = o.len; rc == 0 && i-- > 0;) {
        const unsigned char *body = buf + o.at[i] + KV_REC_HEADER;
        uint16_t key_len = get_u16(body + 9);
        uint16_t value_len = get_u16(body + 11);
        const char *key = (const char *)body + KV_REC_BODY_FIXED;
        if (kvmap_get(map, key, key_len) != NULL)
            continue; /* a later record set it */
        if (kvmap_put(map, key, key_len, key + key_len, value_len) != 0) {
            snprintf(errbuf, errlen, "out of memory replaying the log");
            rc = -1;
        }
    }
    if (rc == 0)
        *records += count;
    free(o.at);
    return rc;
}

/* Replay fd's records from byte `from` (the end of a valid record) to its
 * current end into `map`. Sets *size to the file's size and *valid_end to
 * the end of the last valid record; adds to *records. 0; 1 when the file
 * could not be read; -1 for a record of another format or no memory. */
static int replay_from(int fd, const char *path, uint64_t from, struct kvmap *map,
                       uint64_t *size, uint64_t *valid_end, uint64_t *records, char *errbuf,
                       size_t errlen)
{
    struct stat st;
    if (fstat(fd, &st) != 0) {
        snprintf(errbuf, errlen, "cannot stat %s: %s", path, strerror(errno));
        return 1;
    }
    *size = (uint64_t)st.st_size;
    *valid_end = from;
    if (*size <= from)
        return 0;
    size_t want = (size_t)(*size - from);
    unsigned char *buf = malloc(want);
    if (buf == NULL) {
        snprintf(errbuf, errlen, "out of memory reading %s (%zu bytes)", path, want);
        return -1;
    }
    size_t got = 0;
    if (read_range(fd, buf, want, from, &got) < 0) {
        snprintf(errbuf, errlen, "cannot read %s: %s", path, strerror(errno));
        free(buf);
        return 1;
    }
    uint64_t valid_len = 0;
    int rc = replay(buf, got, from, map, &valid_len, records, errbuf, errlen);
    free(buf);
    *valid_end = from + valid_len;
    return rc;
}

int kvlog_preload(struct kvlog *log, const char *dir, struct kvmap *map, char *errbuf,
                  size_t errlen)
{
    char *path = join(dir, KV_LOG_FILE);
    if (path == NULL) {
        snprintf(errbuf, errlen, "out of memory");
        return -1;
    }
    int rc = 0;
    /* Read-only and never created: the incumbent owns the directory. */
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        if (errno != ENOENT) {
            snprintf(errbuf, errlen, "cannot open %s: %s", path, strerror(errno));
            rc = 1;
        }
        free(path);
        return rc;
    }
    struct stat st;
    uint64_t size = 0, valid_end = 0, records = 0;
    if (fstat(fd, &st) != 0) {
        snprintf(errbuf, errlen, "cannot stat %s: %s", path, strerror(errno));
        rc = 1;
    } else {
        rc = replay_from(fd, path, 0, map, &size, &valid_end, &records, errbuf, errlen);
    }
    close(fd);
    free(path);
    if (rc != 0) {
        kvmap_free(map);
        return rc;
    }
    log->preloaded = true;
    log->preload_dev = (uint64_t)st.st_dev;
    log->preload_ino = (uint64_t)st.st_ino;
    log->preload_end = valid_end;
    log->preload_records = records;
    return 0;
}

int kvlog_open(struct kvlog *log, const char *dir, struct kvmap *map, char *errbuf,
               size_t errlen)
{
    const struct kvlog preload = *log; /* only its preload_* fields are read */
    kvlog_free(log);
    log->dir = strdup(dir);
    log->path = join(dir, KV_LOG_FILE);
    if (log->dir == NULL || log->path == NULL) {
        snprintf(errbuf, errlen, "out of memory");
        goto fail;
    }
    /* A compaction that died before its rename: kv.log is whole without it. */
    char *stale = join(dir, KV_COMPACT_FILE);
    if (stale == NULL) {
        snprintf(errbuf, errlen, "out of memory");
        goto fail;
    }
    if (unlink(stale) != 0 && errno != ENOENT) {
        snprintf(errbuf, errlen, "cannot remove a stale %s: %s", stale, strerror(errno));
        free(stale);
        goto fail;
    }
    free(stale);
    bool created = false;
    int fd = open(log->path, O_RDWR | O_APPEND | O_CLOEXEC);
    if (fd < 0 && errno == ENOENT) {
        fd = open(log->path, O_RDWR | O_APPEND | O_CLOEXEC | O_CREAT | O_EXCL, 0644);
        created = fd >= 0;
    }
    if (fd < 0) {
        snprintf(errbuf, errlen, "cannot open %s: %s", log->path, strerror(errno));
        goto fail;
    }
    log->fd = fd;
    if (created && (fsync(fd) != 0 || sync_dir(dir) != 0)) {
        snprintf(errbuf, errlen, "cannot fsync new %s: %s", log->path, strerror(errno));
        goto fail;
    }
    /* Keep a preload only if it read this very file and the file still holds
     * every byte it read: the writer appends and only ever cuts an
     * incomplete record, so the bytes up to preload_end are unchanged. */
    uint64_t from = 0;
    struct stat st;
    if (preload.preloaded && fstat(fd, &st) == 0 && (uint64_t)st.st_dev == preload.preload_dev &&
        (uint64_t)st.st_ino == preload.preload_ino &&
        (uint64_t)st.st_size >= preload.preload_end) {
        from = preload.preload_end;
        log->records = preload.preload_records;
        log->preload_kept = preload.preload_records;
    } else if (preload.preloaded || map->len > 0) {
        kvmap_free(map);
    }
    uint64_t size = 0, valid_end = 0;
    if (replay_from(fd, log->path, from, map, &size, &valid_end, &log->records, errbuf, errlen) !=
        0)
        goto fail; /* whatever the reason, the service cannot open its state */
    log->truncated = size - valid_end;
    if (valid_end < size) {
        /* A torn or corrupt tail: cut it away and make the cut durable. */
        if (ftruncate(fd, (off_t)valid_end) != 0 || fsync(fd) != 0) {
            snprintf(errbuf, errlen, "cannot truncate the torn tail of %s: %s", log->path,
                     strerror(errno));
            goto fail;
        }
    }
    log->size = valid_end;
    log->dirty = false;
    return 0;
fail:
    kvlog_free(log);
    return -1;
}

/* Encode one SET record into `rec` (room for KV_REC_MAX bytes); its length. */
static size_t encode_record(unsigned char *rec, uint64_t generation, const char *key,
                            size_t key_len, const char *value, size_t value_len)
{
    uint32_t body_len = KV_REC_BODY_FIXED + (uint32_t)key_len + (uint32_t)value_len;
    unsigned char *body = rec + KV_REC_HEADER;
    body[0] = KV_OP_SET;
    put_u64(body + 1, generation);
    put_u16(body + 9, (uint16_t)key_len);
    put_u16(body + 11, (uint16_t)value_len);
    memcpy(body + KV_REC_BODY_FIXED, key, key_len);
    memcpy(body + KV_REC_BODY_FIXED + key_len, value, value_len);
    put_u32(rec, body_len);
    put_u32(rec + 4, kv_crc32c(0, body, body_len));
    return KV_REC_HEADER + body_len;
}

int kvlog_append(struct kvlog *log, uint64_t generation, const char *key, size_t key_len,
                 const char *value, size_t value_len)
{
    unsigned char rec[KV_REC_MAX];
    if (log->fd < 0) {
        errno = EBADF;
        return -1;
    }
    size_t total = encode_record(rec, generation, key, key_len, value, value_len), done = 0;
    while (done < total) {
        ssize_t n = write(log->fd, rec + done, total - done);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            int saved = n < 0 ? errno : EIO;
            /* Never leave a partial record in the middle of the log: later
             * records would be cut away with it on the next open. */
            if (done > 0 && ftruncate(log->fd, (off_t)log->size) != 0)
                return -2;
            errno = saved;
            return -1;
        }
        done += (size_t)n;
    }
    log->size += total;
    log->records++;
    log->dirty = true;
    return 0;
}

bool kvlog_compaction_due(uint64_t records, size_t keys)
{
    return records >= KV_COMPACT_MIN_RECORDS && records / 2 >= keys;
}

static int write_all(int fd, const unsigned char *buf, size_t len)
{
    while (len > 0) {
        ssize_t n = write(fd, buf, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            if (n == 0)
                errno = EIO;
            return -1;
        }
        buf += n;
        len -= (size_t)n;
    }
    return 0;
}

/* Write every item of `map` as a record to fd, in chunks. 0, or -1 (errno). */
static int write_table(int fd, const struct kvmap *map, uint64_t generation, uint64_t *size)
{
    enum { CHUNK = 1 << 16 };
    unsigned char *buf = malloc(CHUNK);
    if (buf == NULL)
        return -1;
    size_t used = 0;
    *size = 0;
    for (size_t i = 0; i < map->cap; i++) {
        const struct kv_item *item = map->slots[i].item;
        if (item == NULL)
            continue;
        if (CHUNK - used < KV_REC_MAX) {
            if (write_all(fd, buf, used) != 0)
                goto fail;
            *size += used;
            used = 0;
        }
        used += encode_record(buf + used, generation, item->bytes, item->key_len,
                              kv_item_value(item), item->value_len);
    }
    if (write_all(fd, buf, used) != 0)
        goto fail;
    *size += used;
    free(buf);
    return 0;
fail:;
    int saved = errno;
    free(buf);
    errno = saved;
    return -1;
}

int kvlog_compact(struct kvlog *log, const struct kvmap *map, uint64_t generation, char *errbuf,
                  size_t errlen)
{
    char *tmp = join(log->dir, KV_COMPACT_FILE);
    if (tmp == NULL) {
        snprintf(errbuf, errlen, "out of memory");
        return 1;
    }
    uint64_t size = 0;
    int fd = open(tmp, O_RDWR | O_APPEND | O_CLOEXEC | O_CREAT | O_TRUNC, 0644);
    if (fd < 0 || write_table(fd, map, generation, &size) != 0 || fsync(fd) != 0 ||
        rename(tmp, log->path) != 0) {
        snprintf(errbuf, errlen, "%s: %s", tmp, strerror(errno));
        if (fd >= 0)
            close(fd);
        unlink(tmp);
        free(tmp);
        return 1;
    }
    free(tmp);
    /* The new file is kv.log now: append to it from here on. */
    close(log->fd);
    log->fd = fd;
    log->size = size;
    log->records = map->len;
    log->dirty = false;
    if (sync_dir(log->dir) != 0) {
        snprintf(errbuf, errlen, "cannot fsync %s after renaming the compacted log: %s",
                 log->dir, strerror(errno));
        return -1;
    }
    return 0;
}

int kvlog_sync(struct kvlog *log)
{
    if (log->fd < 0 || !log->dirty)
        return 0;
    if (fdatasync(log->fd) != 0)
        return -1;
    log->dirty = false;
    return 0;
}

int kvlog_close(struct kvlog *log)
{
    if (log->fd < 0)
        return 0;
    int rc = fsync(log->fd);
    int saved = errno;
    if (close(log->fd) != 0 && rc == 0) {
        rc = -1;
        saved = errno;
    }
    log->fd = -1;
    log->dirty = false;
    errno = saved;
    return rc;
}

void kvlog_free(struct kvlog *log)
{
    if (log->fd >= 0)
        close(log->fd);
    free(log->path);
    free(log->dir);
    kvlog_init(log);
}
