/* The in-memory table: open addressing with linear probing, never shrinks,
 * no deletes (the protocol has none). Each slot keeps its key's hash, so a
 * probe touches the item (a cache miss) only when the hashes match: replay
 * of a long log is mostly probes. */
#include <stdlib.h>
#include <string.h>

#include "kv.h"

static uint64_t hash_key(const char *key, size_t len)
{
    /* FNV-1a, 64-bit, with a final mix so the low bits (the slot) depend on
     * every byte. */
    uint64_t h = 0xcbf29ce484222325u;
    for (size_t i = 0; i < len; i++) {
        h ^= (unsigned char)key[i];
        h *= 0x100000001b3u;
    }
    h ^= h >> 32;
    return h;
}

void kvmap_init(struct kvmap *map)
{
    map->slots = NULL;
    map->cap = 0;
    map->len = 0;
}

static struct kv_slot *find_slot(struct kv_slot *slots, size_t cap, uint64_t hash,
                                 const char *key, size_t key_len)
{
    size_t i = (size_t)hash & (cap - 1);
    for (;;) {
        struct kv_slot *slot = &slots[i];
        if (slot->item == NULL)
            return slot;
        if (slot->hash == hash && slot->item->key_len == key_len &&
            memcmp(slot->item->bytes, key, key_len) == 0)
            return slot;
        i = (i + 1) & (cap - 1);
    }
}

static int grow(struct kvmap *map)
{
    size_t cap = map->cap ? map->cap * 2 : 64;
    struct kv_slot *slots = calloc(cap, sizeof *slots);
    if (slots == NULL)
        return -1;
    for (size_t i = 0; i < map->cap; i++) {
        struct kv_slot old = map->slots[i];
        if (old.item == NULL)
            continue;
        /* Keys are unique, so the first empty slot is the place. */
        size_t j = (size_t)old.hash & (cap - 1);
        while (slots[j].item != NULL)
            j = (j + 1) & (cap - 1);
        slots[j] = old;
    }
    free(map->slots);
    map->slots = slots;
    map->cap = cap;
    return 0;
}

int kvmap_put(struct kvmap *map, const char *key, size_t key_len, const char *value,
              size_t value_len)
{
    uint64_t hash = hash_key(key, key_len);
    struct kv_slot *slot =
        map->cap > 0 ? find_slot(map->slots, map->cap, hash, key, key_len) : NULL;
    /* Keep the load factor at most 1/2, growing only for a new key: an
     * update never rehashes (a replay of updates onto a table filled to the
     * bound would otherwise rehash it all in the handoff's blackout). */
    if (slot == NULL || (slot->item == NULL && (map->len + 1) * 2 > map->cap)) {
        if (grow(map) != 0)
            return -1;
        slot = find_slot(map->slots, map->cap, hash, key, key_len);
    }
    struct kv_item *item = malloc(sizeof *item + key_len + value_len);
    if (item == NULL)
        return -1;
    item->key_len = (uint16_t)key_len;
    item->value_len = (uint16_t)value_len;
    memcpy(item->bytes, key, key_len);
    memcpy(item->bytes + key_len, value, value_len);
    if (slot->item == NULL)
        map->len++;
    free(slot->item);
    slot->hash = hash;
    slot->item = item;
    return 0;
}

const struct kv_item *kvmap_get(const struct kvmap *map, const char *key, size_t key_len)
{
    if (map->cap == 0)
        return NULL;
    return find_slot(map->slots, map->cap, hash_key(key, key_len), key, key_len)->item;
}

void kvmap_free(struct kvmap *map)
{
    for (size_t i = 0; i < map->cap; i++)
        free(map->slots[i].item);
    free(map->slots);
    kvmap_init(map);
}
