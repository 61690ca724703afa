/* keel-kv sets: the set object and what other modules use of it (SORT,
 * CONFIG SET, tests).
 *
 * The object is encoded as Redis 7.0 encodes a set: an "intset" (a sorted
 * array of integers, 2, 4 or 8 bytes each, widened when a member needs it)
 * while every member is an integer as Redis's string2ll() reads it ("12",
 * not "012", "+12" or "-0") and there are at most set-max-intset-entries
 * members; a "hashtable" (a kv_dict without values) otherwise. A set never
 * goes back from hashtable to intset, except that SPOP with a count may
 * rebuild the members it keeps, as Redis does. The bytes used are known in
 * O(1) (kv_set_type.mem). Every call is made by the shard owning the key. */
#ifndef KV_T_SET_H
#define KV_T_SET_H

#include <stdbool.h>
#include <stddef.h>

#include "kv.h"

typedef struct kv_set kv_set;

/* set-max-intset-entries (Redis's default 512; values above 2^30 count as
 * 2^30). Written by CONFIG SET, read by every shard: store it with
 * __atomic_store_n(..., __ATOMIC_RELAXED); a set converts on its next add. */
extern size_t kv_set_max_intset_entries;

/* An empty set (an empty intset), or NULL on out-of-memory. Not a valid key
 * value until it holds a member (a key whose set is empty is deleted). */
kv_set *kv_set_new(void);
/* Frees the set (kv_set_type.free). */
void kv_set_free(void *obj);
/* Members in the set (kv_set_type.len), O(1). */
size_t kv_set_len(const void *obj);
/* Bytes the set uses, O(1) (kv_set_type.mem). */
size_t kv_set_mem(const void *obj);
/* "intset" or "hashtable" (kv_set_type.encoding). */
const char *kv_set_encoding(const void *obj);

/* Adds s[0, n) as Redis's setTypeAdd() does, converting the encoding when
 * needed. The set may move: *set is updated (store it back in the key's
 * entry). Returns 1 if added, 0 if it was a member, -ENOMEM (the set
 * unchanged, though it may have moved). */
int kv_set_add(kv_set **set, const char *s, size_t n);
/* Removes s[0, n). The set may move (*set is updated). Returns whether it
 * was a member. */
bool kv_set_remove(kv_set **set, const char *s, size_t n);
/* Whether s[0, n) is a member. */
bool kv_set_contains(const kv_set *set, const char *s, size_t n);

/* Calls fn for every member, with its bytes (an intset's integers in
 * decimal, valid during the call only), in the order SMEMBERS replies:
 * ascending for an intset. The set must not change during the walk. */
void kv_set_each(const void *obj, void (*fn)(void *arg, const char *s, size_t n), void *arg);

/* Checks the object's invariants (sorted unique integers of the right
 * width, counts, bytes); for tests. */
bool kv_set__valid(const kv_set *set);

#endif
