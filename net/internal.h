/* keel net — private declarations shared by net/ files. */
#ifndef KEEL_NET_INTERNAL_H
#define KEEL_NET_INTERNAL_H

#include <sys/socket.h>
#include <sys/un.h>

#include <keel/net.h>

#include "../runtime/internal.h"

typedef struct in_seg {
    char *own; /* the connection's own copy, or NULL: receive buffer bid */
    uint32_t off, len;
    uint32_t cap; /* own's size */
    uint16_t bid;
} in_seg;

typedef struct out_seg {
    char *base; /* owned chunk, or the receive buffer */
    uint32_t off, len;
    uint32_t cap; /* owned chunk's size; 0 for a receive buffer */
    int32_t bid;  /* receive buffer id, or -1 */
} out_seg;

/* Segment queues are ring arrays; an idle connection keeps its (small)
 * arrays, which is cheaper than reallocating them per message. */
typedef struct seg_ring {
    void *items;
    uint32_t head, count, cap;
} seg_ring;

enum { READ_NONE = 0, READ_ANY, READ_EXACT, READ_UNTIL };

/* The msghdr and iovecs of one sendmsg, allocated (from the slab) only
 * while it is in flight, so an idle connection carries none. */
typedef struct send_batch {
    struct msghdr msg;
    uint32_t bytes; /* allocation size */
    struct iovec iov[];
} send_batch;

struct keel_conn_s {
    int fd;
    int err;
    uint8_t read_kind;
    uint8_t read_delim;
    bool recv_armed, recv_paused, recv_starved, eof;
    bool send_inflight, send_queued, closing, shut_wr_pending;
    bool fail_on_close;            /* close without flushing */
    bool recv_single;              /* one-shot recvs after a pause: see arm_recv */
    bool detaching;                /* keel_conn_detach: keep the socket open at the end */
    uint32_t pinned;               /* bytes of shard receive buffers this connection holds */
    int inflight;                  /* kernel ops holding this connection's memory */
    uint32_t read_n, read_scanned; /* a read waits for at most 4 GiB (start_read) */
    keel_promise read_p, write_p, flush_p, shut_p, close_p;

    seg_ring in; /* in_seg */
    size_t in_bytes;
    uint32_t in_limit, out_limit; /* 32 bits: a connection's size sets what idle ones cost */
    seg_ring out;                 /* out_seg */
    size_t out_bytes;
    uint64_t queued_total, sent_total, flush_target;
    struct send_batch *batch; /* the sendmsg in flight, if any */

    keel__op recv_op, send_op;
    keel__timer read_timer, write_timer, idle_timer;
    uint64_t read_timeout_ns, write_timeout_ns, idle_timeout_ns, last_activity_ns;

    keel_conn *send_next, *starved_next;
    keel_conn *prev, *next; /* the shard's open connections */
    void *data;
};

typedef struct keel__net {
    keel_net_stats stats;
    keel_conn *send_head, *send_tail;
    keel_conn *starved_head;
    keel_conn open; /* sentinel of the open list */
    bool draining;
    keel_promise drained;
} keel__net;

/* The shard's net state, created (with the receive buffers) on first use. */
keel__net *keel__net_shard(void);
#define NET(s) ((keel__net *)(s)->net)

/* Wraps an accepted or connected socket (non-blocking) in a connection. */
keel_conn *keel__conn_new(int fd);

/* Parses "127.0.0.1", "::1", "localhost", "unix:/path" and port. */
int keel__parse_addr(const char *addr, uint16_t port, struct sockaddr_storage *ss, socklen_t *len);

#endif
