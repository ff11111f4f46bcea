/*
 * kv-c: a small key-value server over TCP that takes part in libhandoff
 * handoffs. See examples/README.md for the wire protocol, the on-disk log
 * format and the lifecycle; the Python and Go examples implement the same
 * contract, so any of them can take over from any other.
 */
#ifndef KV_H
#define KV_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Keys and values: 1 to KV_MAX_ITEM printable ASCII bytes (0x21..0x7e). */
#define KV_MAX_ITEM 256

/* ---- the in-memory table (kvmap.c) --------------------------------------- */

/* One key and its value in one allocation: key bytes, then value bytes. */
struct kv_item {
    uint16_t key_len;
    uint16_t value_len;
    char bytes[];
};

struct kv_slot {
    uint64_t hash;        /* of the key; compared before the key is touched */
    struct kv_item *item; /* NULL: empty */
};

struct kvmap {
    struct kv_slot *slots; /* open addressing, linear probing */
    size_t cap;            /* a power of two, or 0 */
    size_t len;
};

void kvmap_init(struct kvmap *map);
/* 0, or -1 when out of memory (the map is unchanged). */
int kvmap_put(struct kvmap *map, const char *key, size_t key_len, const char *value,
              size_t value_len);
/* The item for `key`, or NULL; valid until the next kvmap_put. */
const struct kv_item *kvmap_get(const struct kvmap *map, const char *key, size_t key_len);
static inline const char *kv_item_value(const struct kv_item *item)
{
    return item->bytes + item->key_len;
}
void kvmap_free(struct kvmap *map);

/* ---- the append-only log (kvlog.c) ---------------------------------------- */

#define KV_LOG_FILE "kv.log"
#define KV_COMPACT_FILE "kv.log.compact"
/* Compaction (examples/README.md): at open, once the log holds this many
 * records and at least twice as many as the table has keys. */
#define KV_COMPACT_MIN_RECORDS 65536u

/* Record layout (little-endian), see examples/README.md:
 *   0  u32 body_len   = 13 + key_len + value_len
 *   4  u32 crc        CRC-32C of the body (bytes 8 .. 8+body_len)
 *   8  u8  op         1 = SET
 *   9  u64 generation the writer's lock generation
 *  17  u16 key_len
 *  19  u16 value_len
 *  21  key, then value                                                     */
#define KV_REC_HEADER 8u
#define KV_REC_MAX (KV_REC_HEADER + KV_REC_BODY_FIXED + 2u * KV_MAX_ITEM)
#define KV_REC_BODY_FIXED 13u
#define KV_OP_SET 1u

struct kvlog {
    int fd;            /* -1 when closed */
    char *path;        /* <data_dir>/kv.log */
    char *dir;         /* the data directory */
    uint64_t size;     /* bytes of valid records */
    uint64_t records;  /* valid records: the revision announced to the supervisor */
    bool dirty;        /* appended since the last sync */
    uint64_t truncated; /* bytes of torn tail cut away by the last open */
    /* What kvlog_preload read, for kvlog_open to go on from. */
    bool preloaded;
    uint64_t preload_dev, preload_ino;
    uint64_t preload_end;     /* end of the last valid record it read */
    uint64_t preload_records; /* records it replayed */
    uint64_t preload_kept;    /* set by kvlog_open: preloaded records it kept */
};

uint32_t kv_crc32c(uint32_t crc, const void *data, size_t len);
bool kv_item_valid(const char *item, size_t len);

void kvlog_init(struct kvlog *log);
/* Open (creating) <dir>/kv.log, replay every valid record into `map` (later
 * records win; `map` must be empty unless a kvlog_preload filled it), and
 * truncate a torn or corrupt tail away (fsyncing).
 * 0 on success; -1 with a reason in `errbuf`. */
int kvlog_open(struct kvlog *log, const char *dir, struct kvmap *map, char *errbuf,
               size_t errlen);
/* A successor's warm-up, before the handoff begins: replay the valid
 * records of <dir>/kv.log as they are now into `map`, read-only, without the
 * lock (the incumbent is still writing; nothing is created or cut). A later
 * kvlog_open with the same log and map replays only what was appended since,
 * or everything again if the file is not the one preloaded. 0 (also when
 * there is no log yet); 1 when the log could not be read (nothing preloaded:
 * kvlog_open will say whether that matters); -1 for a record of another
 * format or no memory. A reason in `errbuf` and the map emptied when not 0. */
int kvlog_preload(struct kvlog *log, const char *dir, struct kvmap *map, char *errbuf,
                  size_t errlen);
/* Append one SET record (not yet durable: call kvlog_sync). On failure the
 * log is cut back to its last valid record. 0, or -1 with errno set. */
int kvlog_append(struct kvlog *log, uint64_t generation, const char *key, size_t key_len,
                 const char *value, size_t value_len);
/* Whether an open log of `records` records holding `keys` keys is to be
 * compacted (examples/README.md, Compaction). */
bool kvlog_compaction_due(uint64_t records, size_t keys);
/* Rewrite the open log as one record per item of `map` (the table it was
 * replayed into) stamped with `generation`: kv.log.compact, fsync, rename
 * over kv.log, fsync the directory; appends then go to the new file.
 * 0; 1 when it failed before the rename (kv.log is as it was, the temporary
 * file removed); -1 when the directory fsync after the rename failed (the
 * caller must not serve). A reason in `errbuf` when not 0. */
int kvlog_compact(struct kvlog *log, const struct kvmap *map, uint64_t generation, char *errbuf,
                  size_t errlen);
/* fdatasync if anything was appended since the last sync. 0, or -1. */
int kvlog_sync(struct kvlog *log);
/* fsync and close; 0 or -1 (closed either way). */
int kvlog_close(struct kvlog *log);
void kvlog_free(struct kvlog *log);

#endif
