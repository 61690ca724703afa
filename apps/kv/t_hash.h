/* keel-kv hashes: the hash object, for the hash commands (t_hash.c) and
 * for the modules that read or build hashes (SORT's BY/GET ->field, CONFIG
 * SET's thresholds, tests).
 *
 * The object is Redis 7.0's: a kv_pack of field,value pairs in insertion
 * order while the hash is small (OBJECT ENCODING "listpack"), a kv_dict
 * once it has more than hash-max-listpack-entries fields or a field or
 * value longer than hash-max-listpack-value bytes ("hashtable"). The change
 * is one-way, as in Redis. The object is an opaque pointer: reach it only
 * through kv_hash_type and the calls below. */
#ifndef KV_T_HASH_H
#define KV_T_HASH_H

#include <stdbool.h>
#include <stddef.h>

/* hash-max-listpack-entries (Redis's default 512) and
 * hash-max-listpack-value (64). Every shard reads them when a hash grows;
 * change them only through the setters (CONFIG SET), which store them
 * atomically. Existing hashes keep their encoding. */
extern size_t kv_hash_max_listpack_entries;
extern size_t kv_hash_max_listpack_value;
void kv_hash_set_max_listpack_entries(size_t n);
void kv_hash_set_max_listpack_value(size_t n);

/* Looks field f up in a hash object. Returns true and sets *v (valid until
 * the hash changes) and *vlen, or returns false when the field is absent. */
bool kv_hash_get(const void *obj, const char *f, size_t flen, const char **v, size_t *vlen);

/* An empty hash (small encoding), or NULL on out-of-memory. Not a valid key
 * value until it holds a field: a key whose hash is empty is deleted. */
void *kv_hash_new(void);
/* Sets field f to v, converting the hash to the large encoding first when
 * f or v is too long for the small one, and after the write when the hash
 * has more fields than the entry limit (Redis's hashTypeSet()). The object may move: *obj is
 * updated. Returns 1 when the field was added, 0 when it was updated,
 * -ENOMEM on out-of-memory (the field then keeps its old value). */
int kv_hash_set(void **obj, const char *f, size_t flen, const char *v, size_t vlen);
/* Removes field f; the object may move (*obj is updated). Returns whether
 * the field was there. Never fails. */
bool kv_hash_del(void **obj, const char *f, size_t flen);

/* Walks a hash's fields: the small encoding in insertion order, the large
 * one in table order. The hash must not change during the walk. */
typedef struct kv_hash_iter {
    const void *_obj;
    size_t _pos;       /* small: the next field's position */
    size_t _bucket;    /* large: the bucket of _next */
    const void *_next; /* large: the next entry */
} kv_hash_iter;

void kv_hash_iter_init(kv_hash_iter *it, const void *obj);
/* The next pair (pointers valid until the hash changes), or false at the end. */
bool kv_hash_iter_next(kv_hash_iter *it, const char **f, size_t *flen, const char **v,
                       size_t *vlen);

#endif
