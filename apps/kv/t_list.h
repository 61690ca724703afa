/* keel-kv lists: the list object and the pop/move primitives that the
 * blocking commands (BLPOP, BRPOP, BLMOVE, BRPOPLPUSH, BLMPOP) and SORT
 * share with LPOP, LMOVE and LMPOP.
 *
 * The object is Redis's quicklist: a doubly linked list of kv_pack nodes of
 * at most 8 KiB each (list-max-listpack-size -2), with the element count and
 * the bytes used kept up to date, so push and pop at either end, LLEN and
 * MEMORY USAGE are O(1). OBJECT ENCODING answers "quicklist" whatever the
 * size, as Redis 7.0 does (7.2 introduced "listpack" for small lists). */
#ifndef KV_T_LIST_H
#define KV_T_LIST_H

#include <stdbool.h>
#include <stddef.h>

#include "kv.h"

typedef struct kv_list kv_list;

/* An empty list, or NULL on out-of-memory. Not a valid key value until it
 * holds an element (a key whose list is empty is deleted). */
kv_list *kv_list_new(void);
/* Frees the list and its elements (kv_list_type.free). */
void kv_list_free(void *obj);
/* Elements in the list (kv_list_type.len), O(1). */
size_t kv_list_len(const void *obj);
/* Bytes the list uses, O(1) (kv_list_type.mem). */
size_t kv_list_mem(const void *obj);

/* Pushes s[0, n) at the head (left) or the tail. Returns false on
 * out-of-memory, the list unchanged. */
bool kv_list_push(kv_list *l, bool left, const char *s, size_t n);
/* The element at index i (negative: from the tail, -1 the last). Sets *s
 * (valid until the list changes) and *n and returns true, or returns false
 * when i is out of range. */
bool kv_list_get(const kv_list *l, long long i, const char **s, size_t *n);
/* Replaces the element at index i (negative: from the tail). Returns 1,
 * 0 when i is out of range, -1 on out-of-memory (the list unchanged). */
int kv_list_set(kv_list *l, long long i, const char *s, size_t n);
/* Inserts s before (or after) the first element equal to pivot. Returns 1,
 * 0 when there is no such element, -1 on out-of-memory (the list unchanged). */
int kv_list_insert(kv_list *l, const char *pivot, size_t pn, bool after, const char *s, size_t n);
/* Removes the elements equal to s: the first count of them from the head
 * when count > 0, from the tail when count < 0, every one when count is 0.
 * Returns how many were removed. */
size_t kv_list_rem(kv_list *l, long long count, const char *s, size_t n);
/* Removes count elements from index start on (0 <= start, start + count
 * <= len). */
void kv_list_del_range(kv_list *l, size_t start, size_t count);
/* Calls fn for every element, from the head to the tail (SORT). The list
 * must not change during the walk. */
void kv_list_each(const void *obj, void (*fn)(void *arg, const char *s, size_t n), void *arg);
/* Checks the object's invariants (links, counts, node sizes, bytes);
 * for tests. */
bool kv_list__valid(const kv_list *l);

/* ---- commands' primitives -------------------------------------------------------------- */

/* Pops from the list at key at the left or right end and replies as Redis:
 *   count < 0:  one element, as a bulk (LPOP), or [key, element] with
 *               with_key (BLPOP);
 *   count >= 0: up to count elements as an array (LPOP key count: an empty
 *               one for 0, nothing popped), or [key, [elements]] with
 *               with_key (LMPOP, BLMPOP; count >= 1).
 * Deletes the key when it empties. Returns 1 after popping and replying,
 * 0 when the key does not exist (nothing is written: the caller tries the
 * next key, blocks or replies null), -1 after replying WRONGTYPE. A blocked
 * client is served by calling it with the key known to be a non-empty list. */
int kv_list_pop_reply(kv_cmd_ctx *c, const resp_arg *key, bool left, long long count,
                      bool with_key);
/* LMOVE: pops at src's left or right end, pushes at dst's left or right end
 * (creating dst) and replies the element; src and dst may be the same key.
 * Returns 1 after moving and replying, 0 when src does not exist (nothing
 * is written), -1 after replying an error (WRONGTYPE for src or dst, OOM). */
int kv_list_move_reply(kv_cmd_ctx *c, const resp_arg *src, const resp_arg *dst, bool from_left,
                       bool to_left);
/* Parses "LEFT"/"RIGHT" (any case) into *left; replies the syntax error and
 * returns false otherwise (LMOVE, BLMOVE). */
bool kv_list_where_arg(kv_cmd_ctx *c, const resp_arg *a, bool *left);
/* Parses LMPOP's and BLMPOP's "numkeys key... LEFT|RIGHT [COUNT count]"
 * starting at argv[numkeys_idx], replying Redis's error and returning false
 * when malformed. *count is 1 without COUNT. */
bool kv_list_mpop_args(kv_cmd_ctx *c, size_t argc, const resp_arg *argv, size_t numkeys_idx,
                       size_t *numkeys, bool *left, long long *count);
/* A kv_keys_fn body for "numkeys key..." at argv[numkeys_idx]: writes the
 * keys' indexes (at most max) and returns their number, -1 when numkeys is
 * not a count of arguments that follow it (the handler then replies the
 * error). As Redis's key spec, it does not look past the keys: a missing
 * LEFT|RIGHT is the handler's syntax error. */
int kv_list_mpop_keys(size_t argc, const resp_arg *argv, size_t numkeys_idx, size_t *idx,
                      size_t max);

#endif
