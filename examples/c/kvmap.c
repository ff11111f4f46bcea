/* The in-memory table: open addressing with linear probing, never shrinks,
 * no deletes (the protocol has none). */
#include <stdlib.h>
#include <string.h>

#include "kv.h"

static uint64_t hash_key(const char *key, size_t len)
{
    /* FNV-1a, 64-bit. */
    uint64_t h = 0xcbf29ce484222325u;
    for (size_t i = 0; i < len; i++) {
        h ^= (unsigned char)key[i];
        h *= 0x100000001b3u;
    }
    return h;
}

void kvmap_init(struct kvmap *map)
{
    map->slots = NULL;
    map->cap = 0;
    map->len = 0;
}

static struct kv_entry *find_slot(struct kv_entry *slots, size_t cap, const char *key,
                                  size_t key_len)
{
    size_t i = (size_t)hash_key(key, key_len) & (cap - 1);
    for (;;) {
        struct kv_entry *e = &slots[i];
        if (e->key == NULL ||
            (e->key_len == key_len && memcmp(e->key, key, key_len) == 0))
            return e;
        i = (i + 1) & (cap - 1);
    }
}

static int grow(struct kvmap *map)
{
    size_t cap = map->cap ? map->cap * 2 : 64;
    struct kv_entry *slots = calloc(cap, sizeof *slots);
    if (slots == NULL)
        return -1;
    for (size_t i = 0; i < map->cap; i++) {
        struct kv_entry *old = &map->slots[i];
        if (old->key != NULL)
            *find_slot(slots, cap, old->key, old->key_len) = *old;
    }
    free(map->slots);
    map->slots = slots;
    map->cap = cap;
    return 0;
}

int kvmap_put(struct kvmap *map, const char *key, size_t key_len, const char *value,
              size_t value_len)
{
    /* Keep the load factor at most 1/2. */
    if ((map->len + 1) * 2 > map->cap && grow(map) != 0)
        return -1;
    struct kv_entry *e = find_slot(map->slots, map->cap, key, key_len);
    char *copy = malloc(value_len);
    if (copy == NULL)
        return -1;
    memcpy(copy, value, value_len);
    if (e->key == NULL) {
        char *k = malloc(key_len);
        if (k == NULL) {
            free(copy);
            return -1;
        }
        memcpy(k, key, key_len);
        e->key = k;
        e->key_len = (uint16_t)key_len;
        map->len++;
    } else {
        free(e->value);
    }
    e->value = copy;
    e->value_len = (uint16_t)value_len;
    return 0;
}

const struct kv_entry *kvmap_get(const struct kvmap *map, const char *key, size_t key_len)
{
    if (map->cap == 0)
        return NULL;
    const struct kv_entry *e = find_slot(map->slots, map->cap, key, key_len);
    return e->key != NULL ? e : NULL;
}

void kvmap_free(struct kvmap *map)
{
    for (size_t i = 0; i < map->cap; i++) {
        free(map->slots[i].key);
        free(map->slots[i].value);
    }
    free(map->slots);
    kvmap_init(map);
}
