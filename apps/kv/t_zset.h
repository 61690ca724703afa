/* Sorted sets: what other keel-kv modules use of t_zset.c.
 *
 * - CONFIG: zset-max-listpack-entries / -value (and Redis's aliases
 *   zset-max-ziplist-entries / -value), defaults 128 and 64, are
 *   kv_zset_max_listpack_entries / _value in zset.h: CONFIG SET calls
 *   kv_zset_set_max_listpack_entries() / _value().
 * - BZPOPMIN, BZPOPMAX, BZMPOP: kv_zset_pop_reply() pops and replies once a
 *   key has members.
 * - SORT: kv_zset_count() and kv_zset_visit() walk a sorted set in order.
 *
 * Sets as inputs: ZUNION, ZINTER, ZDIFF, their STORE forms and ZINTERCARD
 * accept plain sets (every member scoring 1), as Redis does, through
 * t_set.h's kv_set_contains() and kv_set_each().
 */
#ifndef KV_T_ZSET_H
#define KV_T_ZSET_H

#include <stdbool.h>
#include <stddef.h>

#include "kv.h"
#include "zset.h"

/* Pops min(count, length) members from the lowest (max false) or highest
 * end of the sorted set e, the live KV_ZSET entry of key, and replies as
 * Redis's genericZpopCommand() does:
 *   emit_key false, nested false: [m1, s1, m2, s2...]       ZPOPMIN (RESP2, or no count)
 *   emit_key false, nested true:  [[m1, s1], [m2, s2]...]   ZPOPMIN count (RESP3)
 *   emit_key true,  nested false: [key, m1, s1...]          BZPOPMIN
 *   emit_key true,  nested true:  [key, [[m1, s1]...]]      ZMPOP, BZMPOP
 * count >= 1. Calls kv_modified() (which deletes the key once empty); do
 * not touch e afterwards. */
void kv_zset_pop_reply(kv_cmd_ctx *c, const resp_arg *key, kv_entry *e, bool max, long count,
                       bool emit_key, bool nested);

/* For SORT: the number of members of a sorted set object (kv_obj() of a
 * KV_ZSET entry). */
size_t kv_zset_count(const void *obj);

/* For SORT: calls fn on at most count members of the sorted set object
 * from 0-based rank start on, in score order (highest first when
 * reverse). m is valid during the call only; fn must not change the set. */
void kv_zset_visit(const void *obj, bool reverse, size_t start, size_t count,
                   void (*fn)(void *arg, const char *m, size_t n, double score), void *arg);

#endif
