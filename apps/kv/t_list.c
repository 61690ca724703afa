/* List commands and the list object (see t_list.h). Replies and errors are
 * Redis 7.0's, byte for byte, including its argument-parsing order (which
 * decides which error wins when several arguments are wrong). */
#include <limits.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "kv.h"
#include "pack.h"
#include "t_list.h"

/* list-max-listpack-size -2: a node's pack holds at most 8 KiB, unless it
 * is a single larger element. */
#define NODE_MAX_BYTES 8192

typedef struct lnode {
    struct lnode *prev, *next;
    kv_pack *pack; /* never empty while the node is linked */
} lnode;

struct kv_list {
    lnode *head, *tail;
    size_t len; /* elements */
    size_t mem; /* bytes: this header, the nodes and their packs */
};

/* An element: its node, its byte offset in the node's pack and its index
 * there. */
typedef struct lpos {
    lnode *node;
    size_t off;
    size_t idx;
} lpos;

/* ---- nodes ------------------------------------------------------------------------------ */

/* What an element of n bytes takes in a kv_pack: its length before and
 * after it, one byte each below 255, five each from there (pack.h). */
static size_t elem_bytes(size_t n)
{
    return n < 255 ? n + 2 : n + 10;
}

static size_t node_mem(const lnode *nd)
{
    return sizeof(*nd) + kv_pack_mem(nd->pack);
}

static size_t node_count(const lnode *nd)
{
    return kv_pack_count(nd->pack);
}

/* Whether an element of n bytes may join the node. */
static bool node_fits(const lnode *nd, size_t n)
{
    return kv_pack_mem(nd->pack) + elem_bytes(n) <= NODE_MAX_BYTES;
}

/* The offset just past the element at off. */
static size_t elem_end(const kv_pack *p, size_t off)
{
    size_t next = kv_pack_next(p, off);
    return next == KV_PACK_END ? p->bytes : next;
}

/* An unlinked node holding s[0, n), or NULL on out-of-memory. */
static lnode *node_with(const char *s, size_t n)
{
    lnode *nd = malloc(sizeof(*nd));
    if (!nd)
        return NULL;
    nd->prev = nd->next = NULL;
    nd->pack = kv_pack_new();
    if (nd->pack && kv_pack_push(&nd->pack, s, n) != KV_PACK_END)
        return nd;
    kv_pack_free(nd->pack);
    free(nd);
    return NULL;
}

/* Links nd after prev (at the head when prev is NULL). */
static void link_node(kv_list *l, lnode *prev, lnode *nd)
{
    nd->prev = prev;
    nd->next = prev ? prev->next : l->head;
    if (nd->next)
        nd->next->prev = nd;
    else
        l->tail = nd;
    if (prev)
        prev->next = nd;
    else
        l->head = nd;
    l->mem += node_mem(nd);
    l->len += node_count(nd);
}

static void unlink_free(kv_list *l, lnode *nd)
{
    if (nd->prev)
        nd->prev->next = nd->next;
    else
        l->head = nd->next;
    if (nd->next)
        nd->next->prev = nd->prev;
    else
        l->tail = nd->prev;
    l->mem -= node_mem(nd);
    l->len -= node_count(nd);
    kv_pack_free(nd->pack);
    free(nd);
}

/* Inserts s before the element at off of a linked node (KV_PACK_END:
 * appends). Returns false on out-of-memory, the node unchanged. */
static bool node_insert(kv_list *l, lnode *nd, size_t off, const char *s, size_t n)
{
    size_t before = kv_pack_mem(nd->pack);
    if (kv_pack_insert(&nd->pack, off, s, n) == KV_PACK_END)
        return false;
    l->mem += kv_pack_mem(nd->pack) - before;
    l->len++;
    return true;
}

/* Accounts for a node's pack that lost k elements and now holds bytes. */
static void node_shrunk(kv_list *l, lnode *nd, size_t bytes, size_t k)
{
    kv_pack *p = nd->pack;
    l->mem -= kv_pack_mem(p);
    p->bytes = (uint32_t)bytes;
    p->count -= (uint32_t)k;
    /* Shrinking in place cannot fail in practice; if it does, the larger
     * block still holds everything. */
    kv_pack *q = realloc(p, sizeof(*p) + bytes);
    if (q)
        nd->pack = q;
    l->mem += kv_pack_mem(nd->pack);
    l->len -= k;
}

/* Removes the k elements in the node's bytes [from, to). The node may end
 * up empty: the caller unlinks it. (Done here rather than with
 * kv_pack_delete() so that a whole range goes in one move.) */
static void node_cut(kv_list *l, lnode *nd, size_t from, size_t to, size_t k)
{
    kv_pack *p = nd->pack;
    memmove(p->data + from, p->data + to, p->bytes - to);
    node_shrunk(l, nd, p->bytes - (to - from), k);
}

/* Splits a node before the element at off (not its first): the elements
 * from off on move to a new node linked after it. Returns the new node, or
 * NULL on out-of-memory with nothing changed. */
static lnode *node_split(kv_list *l, lnode *nd, size_t off)
{
    kv_pack *p = nd->pack;
    size_t k = 0;
    for (size_t o = off; o != KV_PACK_END; o = kv_pack_next(p, o))
        k++;
    size_t bytes = p->bytes - off;
    lnode *second = malloc(sizeof(*second));
    kv_pack *q = malloc(sizeof(*q) + bytes);
    if (!second || !q) {
        free(second);
        free(q);
        return NULL;
    }
    /* A run of whole elements is itself a valid pack. */
    q->bytes = (uint32_t)bytes;
    q->count = (uint32_t)k;
    memcpy(q->data, p->data + off, bytes);
    second->pack = q;
    node_cut(l, nd, off, p->bytes, k);
    link_node(l, nd, second);
    return second;
}

/* ---- positions ------------------------------------------------------------------------- */

/* The element at index i, 0 <= i < len: walks the nodes from the nearer end. */
static lpos seek(const kv_list *l, size_t i)
{
    lpos p;
    if (i < l->len / 2) {
        lnode *nd = l->head;
        while (i >= node_count(nd)) {
            i -= node_count(nd);
            nd = nd->next;
        }
        p.node = nd;
        p.idx = i;
        p.off = kv_pack_index(nd->pack, (long long)i);
    } else {
        size_t j = l->len - 1 - i; /* from the tail */
        lnode *nd = l->tail;
        while (j >= node_count(nd)) {
            j -= node_count(nd);
            nd = nd->prev;
        }
        p.node = nd;
        p.idx = node_count(nd) - 1 - j;
        p.off = kv_pack_index(nd->pack, -(long long)j - 1);
    }
    return p;
}

/* Moves to the next (or previous) element; false past the end. */
static bool pos_step(lpos *p, bool backward)
{
    const kv_pack *pk = p->node->pack;
    size_t off = backward ? kv_pack_prev(pk, p->off) : kv_pack_next(pk, p->off);
    if (off != KV_PACK_END) {
        p->off = off;
        p->idx = backward ? p->idx - 1 : p->idx + 1;
        return true;
    }
    lnode *nd = backward ? p->node->prev : p->node->next;
    if (!nd)
        return false;
    p->node = nd;
    p->idx = backward ? node_count(nd) - 1 : 0;
    p->off = backward ? kv_pack_last(nd->pack) : kv_pack_first(nd->pack);
    return true;
}

/* Index i (negative: from the tail) as an index from the head, or false if
 * out of range. */
static bool norm_index(const kv_list *l, long long i, size_t *out)
{
    if (i < 0)
        i += (long long)l->len;
    if (i < 0 || (unsigned long long)i >= l->len)
        return false;
    *out = (size_t)i;
    return true;
}

/* Inserts s before or after the element at off of nd. A full node gives
 * the element to its neighbour when it goes at one of its ends and the
 * neighbour has room, else to a new node; in the middle, the node is split
 * there first. Returns 1, or -1 on out-of-memory (the elements unchanged). */
static int insert_at(kv_list *l, lnode *nd, size_t off, bool after, const char *s, size_t n)
{
    size_t at = after ? kv_pack_next(nd->pack, off) : off;
    if (node_fits(nd, n))
        return node_insert(l, nd, at, s, n) ? 1 : -1;
    if (at == 0 || at == KV_PACK_END) {
        lnode *nb = at == 0 ? nd->prev : nd->next;
        if (nb && node_fits(nb, n))
            return node_insert(l, nb, at == 0 ? KV_PACK_END : 0, s, n) ? 1 : -1;
        lnode *fresh = node_with(s, n);
        if (!fresh)
            return -1;
        link_node(l, at == 0 ? nd->prev : nd, fresh);
        return 1;
    }
    lnode *second = node_split(l, nd, at);
    if (!second)
        return -1;
    if (node_fits(nd, n))
        return node_insert(l, nd, KV_PACK_END, s, n) ? 1 : -1;
    if (node_fits(second, n))
        return node_insert(l, second, 0, s, n) ? 1 : -1;
    lnode *fresh = node_with(s, n);
    if (!fresh)
        return -1;
    link_node(l, nd, fresh);
    return 1;
}

/* ---- the object --------------------------------------------------------------------------- */

kv_list *kv_list_new(void)
{
    kv_list *l = calloc(1, sizeof(*l));
    if (l)
        l->mem = sizeof(*l);
    return l;
}

void kv_list_free(void *obj)
{
    kv_list *l = obj;
    if (!l)
        return;
    for (lnode *nd = l->head, *next; nd; nd = next) {
        next = nd->next;
        kv_pack_free(nd->pack);
        free(nd);
    }
    free(l);
}

size_t kv_list_len(const void *obj)
{
    return ((const kv_list *)obj)->len;
}

size_t kv_list_mem(const void *obj)
{
    return ((const kv_list *)obj)->mem;
}

static void *obj_dup(const void *obj)
{
    const kv_list *l = obj;
    kv_list *d = kv_list_new();
    if (!d)
        return NULL;
    for (const lnode *nd = l->head; nd; nd = nd->next) {
        lnode *copy = malloc(sizeof(*copy));
        kv_pack *p = kv_pack_dup(nd->pack);
        if (!copy || !p) {
            free(copy);
            kv_pack_free(p);
            kv_list_free(d);
            return NULL;
        }
        copy->pack = p;
        link_node(d, d->tail, copy);
    }
    return d;
}

static const char *obj_encoding(const void *obj)
{
    (void)obj;
    return "quicklist"; /* Redis 7.0: every list, whatever its size */
}

const kv_type_ops kv_list_type = {"list",      kv_list_free, obj_dup,
                                  kv_list_mem, obj_encoding, kv_list_len};

bool kv_list_push(kv_list *l, bool left, const char *s, size_t n)
{
    lnode *nd = left ? l->head : l->tail;
    if (nd && node_fits(nd, n))
        return node_insert(l, nd, left ? 0 : KV_PACK_END, s, n);
    lnode *fresh = node_with(s, n);
    if (!fresh)
        return false;
    link_node(l, left ? NULL : l->tail, fresh);
    return true;
}

bool kv_list_get(const kv_list *l, long long i, const char **s, size_t *n)
{
    size_t at;
    if (!norm_index(l, i, &at))
        return false;
    lpos p = seek(l, at);
    *s = kv_pack_get(p.node->pack, p.off, n);
    return true;
}

int kv_list_set(kv_list *l, long long i, const char *s, size_t n)
{
    size_t at;
    if (!norm_index(l, i, &at))
        return 0;
    lpos p = seek(l, at);
    lnode *nd = p.node;
    size_t old = elem_end(nd->pack, p.off) - p.off;
    if (node_count(nd) == 1 || kv_pack_mem(nd->pack) - old + elem_bytes(n) <= NODE_MAX_BYTES) {
        /* In place: the new element goes in front of the old one, which
         * then leaves. */
        if (!node_insert(l, nd, p.off, s, n))
            return -1;
        size_t o = kv_pack_next(nd->pack, p.off);
        node_cut(l, nd, o, elem_end(nd->pack, o), 1);
        return 1;
    }
    /* Too big for the node: insert after the old element (which stays at
     * p.off whatever insert_at does), then drop it. */
    if (insert_at(l, nd, p.off, true, s, n) < 0)
        return -1;
    node_cut(l, nd, p.off, elem_end(nd->pack, p.off), 1);
    if (!node_count(nd))
        unlink_free(l, nd);
    return 1;
}

int kv_list_insert(kv_list *l, const char *pivot, size_t pn, bool after, const char *s, size_t n)
{
    for (lnode *nd = l->head; nd; nd = nd->next) {
        size_t off = kv_pack_find(nd->pack, 0, pivot, pn, 0);
        if (off != KV_PACK_END)
            return insert_at(l, nd, off, after, s, n);
    }
    return 0;
}

/* Removes up to max elements equal to s from one node in one pass: the
 * first ones, or with from_tail the last ones. Returns how many. */
static size_t node_remove(kv_list *l, lnode *nd, const char *s, size_t n, size_t max,
                          bool from_tail)
{
    kv_pack *p = nd->pack;
    size_t first = kv_pack_find(p, 0, s, n, 0);
    if (first == KV_PACK_END)
        return 0;
    size_t keep = 0; /* matches to keep before removing starts */
    if (from_tail) {
        size_t m = 0;
        for (size_t o = first; o != KV_PACK_END; o = kv_pack_next(p, o))
            m += kv_pack_eq(p, o, s, n);
        keep = m > max ? m - max : 0;
    }
    /* Compact: the kept elements slide down over the removed ones. The
     * write offset never passes the read offset, so each element is read
     * before anything overwrites it. */
    size_t r = first, w = first, seen = 0, k = 0;
    while (r < p->bytes) {
        size_t e = elem_end(p, r);
        bool drop = k < max && kv_pack_eq(p, r, s, n) && seen++ >= keep;
        if (drop) {
            k++;
        } else {
            if (w != r)
                memmove(p->data + w, p->data + r, e - r);
            w += e - r;
        }
        r = e;
    }
    if (k)
        node_shrunk(l, nd, w, k);
    return k;
}

size_t kv_list_rem(kv_list *l, long long count, const char *s, size_t n)
{
    bool from_tail = count < 0;
    /* LLONG_MIN has no positive counterpart; Redis 7.0 ends up removing
     * every match for it, as for 0. */
    size_t max = count == 0 || count == LLONG_MIN ? SIZE_MAX
                 : count < 0                      ? (size_t)-count
                                                  : (size_t)count;
    size_t removed = 0;
    lnode *nd = from_tail ? l->tail : l->head;
    while (nd && removed < max) {
        lnode *next = from_tail ? nd->prev : nd->next;
        removed += node_remove(l, nd, s, n, max - removed, from_tail);
        if (!node_count(nd))
            unlink_free(l, nd);
        nd = next;
    }
    return removed;
}

void kv_list_del_range(kv_list *l, size_t start, size_t count)
{
    if (!count)
        return;
    lpos p = seek(l, start);
    lnode *nd = p.node;
    size_t off = p.off, idx = p.idx;
    while (count) {
        lnode *next = nd->next;
        size_t have = node_count(nd) - idx;
        size_t k = have < count ? have : count;
        if (k == node_count(nd)) {
            unlink_free(l, nd);
        } else {
            size_t to = off;
            for (size_t j = 0; j < k; j++)
                to = elem_end(nd->pack, to);
            node_cut(l, nd, off, to, k);
        }
        count -= k;
        nd = next;
        off = 0;
        idx = 0;
    }
}

void kv_list_each(const void *obj, void (*fn)(void *arg, const char *s, size_t n), void *arg)
{
    const kv_list *l = obj;
    for (const lnode *nd = l->head; nd; nd = nd->next) {
        const kv_pack *p = nd->pack;
        for (size_t o = kv_pack_first(p); o != KV_PACK_END; o = kv_pack_next(p, o)) {
            size_t n;
            const char *s = kv_pack_get(p, o, &n);
            fn(arg, s, n);
        }
    }
}

bool kv_list__valid(const kv_list *l)
{
    size_t len = 0, mem = sizeof(*l);
    const lnode *prev = NULL;
    for (const lnode *nd = l->head; nd; prev = nd, nd = nd->next) {
        const kv_pack *p = nd->pack;
        if (nd->prev != prev || !p->count)
            return false;
        if (p->count > 1 && kv_pack_mem(p) > NODE_MAX_BYTES)
            return false;
        size_t k = 0, bytes = 0;
        for (size_t o = kv_pack_first(p); o != KV_PACK_END; o = kv_pack_next(p, o)) {
            k++;
            bytes = elem_end(p, o);
        }
        if (k != p->count || bytes != p->bytes)
            return false;
        len += k;
        mem += node_mem(nd);
    }
    return prev == l->tail && len == l->len && mem == l->mem;
}

/* ---- replies ----------------------------------------------------------------------------- */

/* Writes n in decimal at o; returns the end. */
static char *put_len(char *o, size_t n)
{
    if (n < 10) {
        *o++ = (char)('0' + n);
        return o;
    }
    char tmp[24];
    int i = 0;
    while (n) {
        tmp[i++] = (char)('0' + n % 10);
        n /= 10;
    }
    while (i)
        *o++ = tmp[--i];
    return o;
}

/* Replies k elements of one pack as bulks, from off on (backward with
 * reverse), writing straight into the buffer: this is LRANGE's loop. */
static void reply_pack_run(resp_buf *out, const kv_pack *p, size_t off, size_t k, bool reverse)
{
    /* Each element grows by less than 16 bytes from its packed form
     * ("$", up to 20 digits and two CRLFs, against 2 or 10 bytes of
     * lengths), so this covers the run. */
    if (resp_buf_reserve(out, p->bytes + 16 * k))
        return;
    char *o = out->data + out->len;
    while (k--) {
        size_t n;
        const char *s = kv_pack_get(p, off, &n);
        *o++ = '$';
        o = put_len(o, n);
        *o++ = '\r';
        *o++ = '\n';
        memcpy(o, s, n);
        o += n;
        *o++ = '\r';
        *o++ = '\n';
        if (k)
            off = reverse ? kv_pack_prev(p, off) : kv_pack_next(p, off);
    }
    out->len = (size_t)(o - out->data);
}

/* Replies an array of count elements from index start on, walking toward
 * the tail, or toward the head with reverse. */
static void reply_range(resp_buf *out, const kv_list *l, size_t start, size_t count, bool reverse)
{
    resp_add_array(out, count);
    if (!count)
        return;
    lpos p = seek(l, start);
    lnode *nd = p.node;
    size_t off = p.off, idx = p.idx;
    for (;;) {
        size_t have = reverse ? idx + 1 : node_count(nd) - idx;
        size_t k = have < count ? have : count;
        reply_pack_run(out, nd->pack, off, k, reverse);
        count -= k;
        if (!count)
            break;
        nd = reverse ? nd->prev : nd->next;
        off = reverse ? kv_pack_last(nd->pack) : 0;
        idx = reverse ? node_count(nd) - 1 : 0;
    }
}

/* Redis's addReplyErrorArity(). */
static void reply_arity(kv_cmd_ctx *c, const char *name)
{
    resp_add_errorf(c->out, "ERR wrong number of arguments for '%s' command", name);
}

/* ---- primitives shared with the blocking commands ------------------------------------------ */

int kv_list_pop_reply(kv_cmd_ctx *c, const resp_arg *key, bool left, long long count, bool with_key)
{
    bool wrong;
    kv_entry *e = kv_lookup_type(c, key, KV_LIST, &wrong);
    if (wrong)
        return -1;
    if (!e)
        return 0;
    kv_list *l = kv_obj(e);
    if (count == 0 && !with_key) {
        resp_add_array(c->out, 0); /* LPOP key 0 on a list: pops nothing */
        return 1;
    }
    if (with_key) {
        resp_add_array(c->out, 2);
        resp_add_bulk(c->out, key->ptr, key->len);
    }
    size_t len = l->len, k = 1;
    if (count < 0) {
        const char *s;
        size_t n;
        kv_list_get(l, left ? 0 : -1, &s, &n);
        resp_add_bulk(c->out, s, n);
    } else {
        k = (unsigned long long)count < len ? (size_t)count : len;
        /* RPOP with a count replies from the tail inward. */
        reply_range(c->out, l, left ? 0 : len - 1, k, !left);
    }
    kv_list_del_range(l, left ? 0 : len - k, k);
    kv_modified(c, key); /* deletes the key when it emptied */
    return 1;
}

int kv_list_move_reply(kv_cmd_ctx *c, const resp_arg *src, const resp_arg *dst, bool from_left,
                       bool to_left)
{
    bool wrong;
    kv_entry *se = kv_lookup_type(c, src, KV_LIST, &wrong);
    if (wrong)
        return -1;
    if (!se)
        return 0;
    kv_list *sl = kv_obj(se);
    kv_entry *de = kv_lookup_type(c, dst, KV_LIST, &wrong);
    if (wrong)
        return -1;
    kv_list *dl = de ? kv_obj(de) : NULL;

    /* A copy: pushing may move the pack the element lives in (src may be
     * dst). */
    const char *s;
    size_t n;
    kv_list_get(sl, from_left ? 0 : -1, &s, &n);
    char small[256];
    char *elem = n <= sizeof(small) ? small : malloc(n);
    if (!elem)
        goto oom;
    memcpy(elem, s, n);

    /* Push first, then pop: nothing has changed if the push fails, and
     * when src is dst the end result is the same as popping first. */
    bool created = !dl;
    if (created && !(dl = kv_list_new()))
        goto oom;
    if (!kv_list_push(dl, to_left, elem, n)) {
        if (created)
            kv_list_free(dl);
        goto oom;
    }
    if (created && !kv_add_obj(c, dst, KV_LIST, dl)) {
        kv_list_free(dl);
        goto oom;
    }
    kv_list_del_range(sl, from_left ? 0 : sl->len - 1, 1);
    kv_modified(c, src);
    if (!created)
        kv_modified(c, dst);
    resp_add_bulk(c->out, elem, n);
    if (elem != small)
        free(elem);
    kv_key_ready(c, dst);
    return 1;
oom:
    if (elem != small)
        free(elem);
    kv_reply_oom(c->out);
    return -1;
}

bool kv_list_where_arg(kv_cmd_ctx *c, const resp_arg *a, bool *left)
{
    if (kv_arg_is(a, "LEFT")) {
        *left = true;
    } else if (kv_arg_is(a, "RIGHT")) {
        *left = false;
    } else {
        kv_reply_syntax(c->out);
        return false;
    }
    return true;
}

bool kv_list_mpop_args(kv_cmd_ctx *c, size_t argc, const resp_arg *argv, size_t numkeys_idx,
                       size_t *numkeys, bool *left, long long *count)
{
    long long nk;
    if (!resp_string2ll(argv[numkeys_idx].ptr, argv[numkeys_idx].len, &nk) || nk < 1) {
        resp_add_error(c->out, "ERR numkeys should be greater than 0");
        return false;
    }
    /* The keys, then LEFT|RIGHT. */
    if ((unsigned long long)nk >= argc - numkeys_idx - 1) {
        kv_reply_syntax(c->out);
        return false;
    }
    size_t where_idx = numkeys_idx + 1 + (size_t)nk;
    if (!kv_list_where_arg(c, &argv[where_idx], left))
        return false;
    *count = -1;
    for (size_t j = where_idx + 1; j < argc; j++) {
        if (*count == -1 && kv_arg_is(&argv[j], "COUNT") && j + 1 < argc) {
            j++;
            if (!resp_string2ll(argv[j].ptr, argv[j].len, count) || *count < 1) {
                resp_add_error(c->out, "ERR count should be greater than 0");
                return false;
            }
        } else {
            kv_reply_syntax(c->out);
            return false;
        }
    }
    if (*count == -1)
        *count = 1;
    *numkeys = (size_t)nk;
    return true;
}

int kv_list_mpop_keys(size_t argc, const resp_arg *argv, size_t numkeys_idx, size_t *idx,
                      size_t max)
{
    long long nk;
    if (numkeys_idx >= argc || !resp_string2ll(argv[numkeys_idx].ptr, argv[numkeys_idx].len, &nk) ||
        nk < 1 || (unsigned long long)nk > argc - numkeys_idx - 1)
        return -1;
    size_t n = (unsigned long long)nk < max ? (size_t)nk : max;
    for (size_t i = 0; i < n; i++)
        idx[i] = numkeys_idx + 1 + i;
    return (int)n;
}

/* ---- commands ------------------------------------------------------------------------------- */

/* LPUSH/RPUSH key element..., and the X forms that only push onto an
 * existing list. */
static void push(kv_cmd_ctx *c, size_t argc, const resp_arg *argv, bool left, bool xx)
{
    const resp_arg *key = &argv[1];
    bool wrong;
    kv_entry *e = kv_lookup_type(c, key, KV_LIST, &wrong);
    if (wrong)
        return;
    if (!e && xx) {
        resp_add_int(c->out, 0);
        return;
    }
    kv_list *l = e ? kv_obj(e) : kv_list_new();
    if (!l) {
        kv_reply_oom(c->out);
        return;
    }
    size_t i = 2;
    while (i < argc && kv_list_push(l, left, argv[i].ptr, argv[i].len))
        i++;
    if (!e && (i < argc || !kv_add_obj(c, key, KV_LIST, l))) {
        kv_list_free(l);
        kv_reply_oom(c->out);
        return;
    }
    if (e)
        kv_modified(c, key);
    if (i < argc)
        kv_reply_oom(c->out); /* some were pushed: the key is still ready */
    else
        resp_add_int(c->out, (long long)l->len);
    kv_key_ready(c, key);
}

static void cmd_lpush(kv_cmd_ctx *c, size_t argc, const resp_arg *argv)
{
    push(c, argc, argv, true, false);
}

static void cmd_rpush(kv_cmd_ctx *c, size_t argc, const resp_arg *argv)
{
    push(c, argc, argv, false, false);
}

static void cmd_lpushx(kv_cmd_ctx *c, size_t argc, const resp_arg *argv)
{
    push(c, argc, argv, true, true);
}

static void cmd_rpushx(kv_cmd_ctx *c, size_t argc, const resp_arg *argv)
{
    push(c, argc, argv, false, true);
}

/* LPOP/RPOP key [count] */
static void pop(kv_cmd_ctx *c, size_t argc, const resp_arg *argv, bool left)
{
    long long count = -1;
    if (argc > 3) {
        reply_arity(c, left ? "lpop" : "rpop");
        return;
    }
    if (argc == 3 && (!resp_string2ll(argv[2].ptr, argv[2].len, &count) || count < 0)) {
        resp_add_error(c->out, "ERR value is out of range, must be positive");
        return;
    }
    if (kv_list_pop_reply(c, &argv[1], left, count, false) == 0) {
        if (argc == 3)
            resp_add_null_array(c->out, c->proto);
        else
            resp_add_null(c->out, c->proto);
    }
}

static void cmd_lpop(kv_cmd_ctx *c, size_t argc, const resp_arg *argv)
{
    pop(c, argc, argv, true);
}

static void cmd_rpop(kv_cmd_ctx *c, size_t argc, const resp_arg *argv)
{
    pop(c, argc, argv, false);
}

static void cmd_llen(kv_cmd_ctx *c, size_t argc, const resp_arg *argv)
{
    (void)argc;
    bool wrong;
    kv_entry *e = kv_lookup_type(c, &argv[1], KV_LIST, &wrong);
    if (!wrong)
        resp_add_int(c->out, e ? (long long)kv_list_len(kv_obj(e)) : 0);
}

/* LRANGE's and LTRIM's key start stop: the indexes, and the list (NULL
 * when missing). Returns false when an error has been replied. */
static bool range_args(kv_cmd_ctx *c, const resp_arg *argv, long long *start, long long *end,
                       kv_entry **e)
{
    if (!kv_arg_ll(c, &argv[2], start, NULL) || !kv_arg_ll(c, &argv[3], end, NULL))
        return false;
    bool wrong;
    *e = kv_lookup_type(c, &argv[1], KV_LIST, &wrong);
    return !wrong;
}

/* LRANGE key start stop */
static void cmd_lrange(kv_cmd_ctx *c, size_t argc, const resp_arg *argv)
{
    (void)argc;
    long long start, end;
    kv_entry *e;
    if (!range_args(c, argv, &start, &end, &e))
        return;
    size_t from, to;
    if (!e || !kv_clamp_range(start, end, kv_list_len(kv_obj(e)), &from, &to)) {
        resp_add_array(c->out, 0);
        return;
    }
    reply_range(c->out, kv_obj(e), from, to - from + 1, false);
}

/* LTRIM key start stop */
static void cmd_ltrim(kv_cmd_ctx *c, size_t argc, const resp_arg *argv)
{
    (void)argc;
    long long start, end;
    kv_entry *e;
    if (!range_args(c, argv, &start, &end, &e))
        return;
    if (e) {
        kv_list *l = kv_obj(e);
        size_t len = l->len, from, to;
        if (kv_clamp_range(start, end, len, &from, &to)) {
            kv_list_del_range(l, to + 1, len - to - 1);
            kv_list_del_range(l, 0, from);
        } else {
            kv_list_del_range(l, 0, len);
        }
        kv_modified(c, &argv[1]);
    }
    resp_add_status(c->out, "OK");
}

/* LINDEX key index: the key is looked up before the index is parsed. */
static void cmd_lindex(kv_cmd_ctx *c, size_t argc, const resp_arg *argv)
{
    (void)argc;
    bool wrong;
    kv_entry *e = kv_lookup_type(c, &argv[1], KV_LIST, &wrong);
    if (wrong)
        return;
    if (!e) {
        resp_add_null(c->out, c->proto);
        return;
    }
    long long i;
    if (!kv_arg_ll(c, &argv[2], &i, NULL))
        return;
    const char *s;
    size_t n;
    if (kv_list_get(kv_obj(e), i, &s, &n))
        resp_add_bulk(c->out, s, n);
    else
        resp_add_null(c->out, c->proto);
}

/* LSET key index element */
static void cmd_lset(kv_cmd_ctx *c, size_t argc, const resp_arg *argv)
{
    (void)argc;
    bool wrong;
    kv_entry *e = kv_lookup_type(c, &argv[1], KV_LIST, &wrong);
    if (wrong)
        return;
    if (!e) {
        resp_add_error(c->out, "ERR no such key");
        return;
    }
    long long i;
    if (!kv_arg_ll(c, &argv[2], &i, NULL))
        return;
    int r = kv_list_set(kv_obj(e), i, argv[3].ptr, argv[3].len);
    if (r == 0) {
        resp_add_error(c->out, "ERR index out of range");
    } else if (r < 0) {
        kv_reply_oom(c->out);
    } else {
        kv_modified(c, &argv[1]);
        resp_add_status(c->out, "OK");
    }
}

/* LINSERT key BEFORE|AFTER pivot element */
static void cmd_linsert(kv_cmd_ctx *c, size_t argc, const resp_arg *argv)
{
    (void)argc;
    bool after;
    if (kv_arg_is(&argv[2], "AFTER")) {
        after = true;
    } else if (kv_arg_is(&argv[2], "BEFORE")) {
        after = false;
    } else {
        kv_reply_syntax(c->out);
        return;
    }
    bool wrong;
    kv_entry *e = kv_lookup_type(c, &argv[1], KV_LIST, &wrong);
    if (wrong)
        return;
    if (!e) {
        resp_add_int(c->out, 0);
        return;
    }
    kv_list *l = kv_obj(e);
    int r = kv_list_insert(l, argv[3].ptr, argv[3].len, after, argv[4].ptr, argv[4].len);
    if (r == 0) {
        resp_add_int(c->out, -1);
    } else if (r < 0) {
        kv_reply_oom(c->out);
    } else {
        kv_modified(c, &argv[1]);
        resp_add_int(c->out, (long long)l->len);
        kv_key_ready(c, &argv[1]);
    }
}

/* LREM key count element */
static void cmd_lrem(kv_cmd_ctx *c, size_t argc, const resp_arg *argv)
{
    (void)argc;
    long long count;
    if (!kv_arg_ll(c, &argv[2], &count, NULL))
        return;
    bool wrong;
    kv_entry *e = kv_lookup_type(c, &argv[1], KV_LIST, &wrong);
    if (wrong)
        return;
    size_t removed = 0;
    if (e) {
        removed = kv_list_rem(kv_obj(e), count, argv[3].ptr, argv[3].len);
        if (removed)
            kv_modified(c, &argv[1]);
    }
    resp_add_int(c->out, (long long)removed);
}

/* LPOS key element [RANK rank] [COUNT num-matches] [MAXLEN len] */
static void cmd_lpos(kv_cmd_ctx *c, size_t argc, const resp_arg *argv)
{
    long long rank = 1, count = -1, maxlen = 0; /* count -1: no COUNT */
    for (size_t j = 3; j < argc; j++) {
        bool more = j + 1 < argc;
        if (kv_arg_is(&argv[j], "RANK") && more) {
            if (!kv_arg_ll(c, &argv[++j], &rank, NULL))
                return;
            if (rank == 0) {
                resp_add_error(c->out, "ERR RANK can't be zero: use 1 to start from the first "
                                       "match, 2 from the second ... or use negative to start "
                                       "from the end of the list");
                return;
            }
        } else if (kv_arg_is(&argv[j], "COUNT") && more) {
            if (!resp_string2ll(argv[j + 1].ptr, argv[j + 1].len, &count) || count < 0) {
                resp_add_error(c->out, "ERR COUNT can't be negative");
                return;
            }
            j++;
        } else if (kv_arg_is(&argv[j], "MAXLEN") && more) {
            if (!resp_string2ll(argv[j + 1].ptr, argv[j + 1].len, &maxlen) || maxlen < 0) {
                resp_add_error(c->out, "ERR MAXLEN can't be negative");
                return;
            }
            j++;
        } else {
            kv_reply_syntax(c->out);
            return;
        }
    }
    /* Redis 7.0 negates LLONG_MIN into itself: the search then runs from
     * the tail, accepts the first match and never reaches COUNT. */
    bool no_count_limit = rank == LLONG_MIN;
    bool backward = rank < 0;
    if (backward)
        rank = no_count_limit ? 1 : -rank;

    bool wrong;
    kv_entry *e = kv_lookup_type(c, &argv[1], KV_LIST, &wrong);
    if (wrong)
        return;
    if (!e) {
        if (count != -1)
            resp_add_array(c->out, 0);
        else
            resp_add_null(c->out, c->proto);
        return;
    }
    const kv_list *l = kv_obj(e);
    size_t at = 0;
    if (count != -1)
        at = resp_add_deferred(c->out);
    const resp_arg *ele = &argv[2];
    lpos p = seek(l, backward ? l->len - 1 : 0);
    long long index = 0, matches = 0, found = -1, emitted = 0;
    for (bool more = true; more && (maxlen == 0 || index < maxlen);
         more = pos_step(&p, backward), index++) {
        if (!kv_pack_eq(p.node->pack, p.off, ele->ptr, ele->len))
            continue;
        matches++;
        if (matches < rank)
            continue;
        found = backward ? (long long)l->len - index - 1 : index;
        if (count == -1)
            break;
        emitted++;
        resp_add_int(c->out, found);
        if (count && !no_count_limit && matches - rank + 1 >= count)
            break;
    }
    if (count != -1)
        resp_set_deferred_array(c->out, at, (size_t)emitted);
    else if (found != -1)
        resp_add_int(c->out, found);
    else
        resp_add_null(c->out, c->proto);
}

/* LMOVE source destination LEFT|RIGHT LEFT|RIGHT */
static void cmd_lmove(kv_cmd_ctx *c, size_t argc, const resp_arg *argv)
{
    (void)argc;
    bool from_left, to_left;
    if (!kv_list_where_arg(c, &argv[3], &from_left) || !kv_list_where_arg(c, &argv[4], &to_left))
        return;
    if (kv_list_move_reply(c, &argv[1], &argv[2], from_left, to_left) == 0)
        resp_add_null(c->out, c->proto);
}

/* RPOPLPUSH source destination */
static void cmd_rpoplpush(kv_cmd_ctx *c, size_t argc, const resp_arg *argv)
{
    (void)argc;
    if (kv_list_move_reply(c, &argv[1], &argv[2], false, true) == 0)
        resp_add_null(c->out, c->proto);
}

/* LMPOP numkeys key [key ...] LEFT|RIGHT [COUNT count] */
static void cmd_lmpop(kv_cmd_ctx *c, size_t argc, const resp_arg *argv)
{
    size_t numkeys;
    bool left;
    long long count;
    if (!kv_list_mpop_args(c, argc, argv, 1, &numkeys, &left, &count))
        return;
    for (size_t i = 0; i < numkeys; i++)
        if (kv_list_pop_reply(c, &argv[2 + i], left, count, true) != 0)
            return;
    resp_add_null_array(c->out, c->proto);
}

static int lmpop_keys(size_t argc, const resp_arg *argv, size_t *idx, size_t max)
{
    return kv_list_mpop_keys(argc, argv, 1, idx, max);
}

#define W (KV_CMD_WRITE)
#define WD (KV_CMD_WRITE | KV_CMD_DENYOOM)
#define R (KV_CMD_READONLY)
#define F (KV_CMD_FAST)
const kv_command kv_list_commands[] = {
    {"lpush", -3, WD | F, 1, 1, 1, cmd_lpush, NULL, "@write @list @fast"},
    {"rpush", -3, WD | F, 1, 1, 1, cmd_rpush, NULL, "@write @list @fast"},
    {"lpushx", -3, WD | F, 1, 1, 1, cmd_lpushx, NULL, "@write @list @fast"},
    {"rpushx", -3, WD | F, 1, 1, 1, cmd_rpushx, NULL, "@write @list @fast"},
    {"lpop", -2, W | F, 1, 1, 1, cmd_lpop, NULL, "@write @list @fast"},
    {"rpop", -2, W | F, 1, 1, 1, cmd_rpop, NULL, "@write @list @fast"},
    {"llen", 2, R | F, 1, 1, 1, cmd_llen, NULL, "@read @list @fast"},
    {"lrange", 4, R, 1, 1, 1, cmd_lrange, NULL, "@read @list @slow"},
    {"lindex", 3, R, 1, 1, 1, cmd_lindex, NULL, "@read @list @slow"},
    {"lset", 4, WD, 1, 1, 1, cmd_lset, NULL, "@write @list @slow"},
    {"lrem", 4, W, 1, 1, 1, cmd_lrem, NULL, "@write @list @slow"},
    {"ltrim", 4, W, 1, 1, 1, cmd_ltrim, NULL, "@write @list @slow"},
    {"linsert", 5, WD, 1, 1, 1, cmd_linsert, NULL, "@write @list @slow"},
    {"lpos", -3, R, 1, 1, 1, cmd_lpos, NULL, "@read @list @slow"},
    {"lmove", 5, WD, 1, 2, 1, cmd_lmove, NULL, "@write @list @slow"},
    {"rpoplpush", 3, WD, 1, 2, 1, cmd_rpoplpush, NULL, "@write @list @slow"},
    {"lmpop", -4, W, 0, 0, 0, cmd_lmpop, lmpop_keys, "@write @list @slow"},
    {NULL},
};
