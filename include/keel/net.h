/* keel — networking: listeners on every shard, connections as streams.
 *
 * keel_listen() opens one SO_REUSEPORT socket per shard on the same address,
 * so the kernel spreads connections over the shards, and calls the accept
 * callback on the shard that accepted. A connection lives and dies on that
 * shard. Input arrives through a per-shard pool of receive buffers (an
 * io_uring provided-buffer ring with multishot recv), so an idle connection
 * holds no receive buffer. Output is queued and sent with one gathered
 * sendmsg in flight per socket, batched per loop turn.
 *
 * A connection has one reader and one writer at a time: at most one pending
 * read future, one pending write (backpressure) future and one pending
 * flush future.
 */
#ifndef KEEL_NET_H
#define KEEL_NET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <keel/future.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct keel_conn_s keel_conn;
typedef struct keel_listener_s keel_listener;

enum keel_steer {
    /* The kernel's SO_REUSEPORT hash of the 4-tuple picks the shard. Spreads
     * well with many clients; the default. */
    KEEL_STEER_HASH = 0,
    /* A connection lands on the shard of the CPU whose softirq received it
     * (SO_ATTACH_REUSEPORT_CBPF): right when the NIC's RSS spreads receives
     * over the shards' CPUs, so a connection's packets and its shard share a
     * core; wrong on loopback, where the receiving CPU is the client's. */
    KEEL_STEER_CPU = 1,
};

typedef struct keel_listen_config {
    const char *bind;      /* "0.0.0.0", "::", "127.0.0.1", "unix:/path"; "0.0.0.0" */
    uint16_t port;         /* 0: an ephemeral port (read it with keel_listener_port) */
    int backlog;           /* listen(2) backlog; 4096 */
    enum keel_steer steer; /* KEEL_STEER_HASH */
    unsigned max_conns;    /* open connections per shard beyond which new ones are
                              closed at once; 0: no limit */
} keel_listen_config;

void keel_listen_config_init(keel_listen_config *c);

/* Parses and removes the listener options from argv (--port N, --bind ADDR,
 * --max-conns N, --steer hash|cpu), leaving the rest for the app, as
 * keel_config_parse_args does for the runtime's. Returns 0, or
 * -KEEL_EBADCONFIG after printing what is wrong to stderr. */
int keel_listen_config_parse_args(keel_listen_config *c, int *argc, char **argv);

/* The --help text for the options above, one per line, indented 2; the
 * defaults shown are c's. Valid until the next call on this thread. */
const char *keel_listen_config_usage(const keel_listen_config *c);

/* Called on the accepting shard for each new connection, which the callee
 * owns and must eventually keel_conn_close(). */
typedef void (*keel_accept_fn)(void *ctx, keel_conn *c);

/* Listens on every shard. Call on any shard; ctx is shared by all shards
 * (give each shard its own state through keel_sharded if needed). Resolves
 * to 0 once every shard listens (*out, if not NULL, receives the listener),
 * or to the error: -EADDRINUSE when another process already listens on the
 * address (checked with a plain bind first, since SO_REUSEPORT would let a
 * stale instance silently share the port), -EINVAL for a bad address.
 * Listeners close by themselves when the runtime stops. */
keel_future *keel_listen(const keel_listen_config *c, keel_accept_fn fn, void *ctx,
                         keel_listener **out);

/* The port the listener is bound to. */
uint16_t keel_listener_port(const keel_listener *l);

/* Stops accepting on every shard; resolves when all listening sockets are
 * closed. Open connections are not affected. */
keel_future *keel_listener_close(keel_listener *l);

/* Connects to addr ("127.0.0.1", "::1", "localhost", "unix:/path") and port.
 * Resolves to the keel_conn * (result.ptr), or to -ECONNREFUSED,
 * -ETIMEDOUT (after timeout_ns; 0: no timeout), -EINVAL ... */
keel_future *keel_connect(const char *addr, uint16_t port, uint64_t timeout_ns);

/* ---- reading ----------------------------------------------------------- */

/* Resolves to the number of bytes buffered (> 0) as soon as there is any,
 * 0 at end of stream, or an error (-ECONNRESET, -ETIMEDOUT for the read
 * deadline, ...). Data stays buffered until keel_conn_consume. */
keel_future *keel_conn_read(keel_conn *c);
/* Resolves to n once n bytes are buffered, 0 if the stream ends first
 * (-EMSGSIZE for n over 4 GiB). */
keel_future *keel_conn_read_exactly(keel_conn *c, size_t n);
/* Resolves to the length up to and including the first `delim` byte once it
 * is buffered; -EMSGSIZE if max bytes are buffered without one; 0 at end of
 * stream. */
keel_future *keel_conn_read_until(keel_conn *c, uint8_t delim, size_t max);

/* Bytes buffered and not yet consumed. */
size_t keel_conn_buffered(const keel_conn *c);
/* The first contiguous run of buffered bytes; *len receives its length
 * (0 when nothing is buffered). Valid until the next consume. */
const void *keel_conn_peek(const keel_conn *c, size_t *len);
/* Copies up to n buffered bytes from offset 0 to dst without consuming
 * them; returns the count copied. */
size_t keel_conn_copy(const keel_conn *c, void *dst, size_t n);

/* As keel_conn_copy, from offset bytes into the buffered input: lets a
 * protocol walk the headers of several framed messages, then forward them
 * all at once. Returns the count copied (0 when offset is past the end). */
size_t keel_conn_copy_at(const keel_conn *c, size_t offset, void *dst, size_t n);
/* Drops the first n buffered bytes (n <= buffered). */
void keel_conn_consume(keel_conn *c, size_t n);

/* ---- writing ----------------------------------------------------------- */

/* Queues a copy of data for sending. Resolves at once while the output
 * queue is under its limit, else when it has drained below it (that is the
 * backpressure), or to the connection's error. */
keel_future *keel_conn_write(keel_conn *c, const void *data, size_t len);
/* Moves the first n buffered input bytes of src to dst's output queue
 * without copying (dst may be src: an echo). Both on this shard. Same
 * result as keel_conn_write. */
keel_future *keel_conn_forward(keel_conn *dst, keel_conn *src, size_t n);
/* Resolves to 0 once everything queued so far has been handed to the
 * kernel, or to the connection's error. */
keel_future *keel_conn_flush(keel_conn *c);
/* Flushes, then shuts down the sending side (half-close; reading goes on). */
keel_future *keel_conn_shutdown_write(keel_conn *c);
/* Bytes queued and not yet sent. */
size_t keel_conn_queued(const keel_conn *c);

/* ---- lifetime and options ---------------------------------------------- */

/* Flushes what is queued (bounded by the write deadline), stops reading,
 * waits for the connection's in-flight operations, closes the socket and
 * frees the connection. Pending read/write futures fail -ECANCELED. Resolves
 * to 0. c must not be used after the call. */
keel_future *keel_conn_close(keel_conn *c);
/* Stops using c but keeps its socket: flushes what is queued, stops
 * reading, waits for c's in-flight operations, frees c and resolves to the
 * socket's fd, which the caller then owns (to keel_conn_adopt it on another
 * shard: a connection moves between shards this way). If input arrived
 * that was not consumed, or c had failed, the socket is closed instead and
 * the future fails with -EBUSY, so no byte is lost silently. */
keel_future *keel_conn_detach(keel_conn *c);

/* Wraps a connected socket (made non-blocking) as a connection of this
 * shard, which now owns it. NULL on failure (the fd is left open). */
keel_conn *keel_conn_adopt(int fd);

/* Closes at once with a reset (SO_LINGER 0), dropping queued output. */
void keel_conn_abort(keel_conn *c);

/* Deadlines, in ns (0: none): a read pending longer than read_ns fails
 * -ETIMEDOUT; queued output that makes no progress for write_ns (a peer
 * that stopped reading) fails the connection with -ETIMEDOUT, while a slow
 * peer that keeps reading is spared; no traffic for idle_ns fails it too. */
void keel_conn_set_deadlines(keel_conn *c, uint64_t read_ns, uint64_t write_ns, uint64_t idle_ns);
/* Output-queue limit for backpressure (default 1 MiB) and input limit at
 * which receiving pauses until the reader consumes (default 256 KiB; a
 * pending read_exactly/read_until for more raises it while it waits). On
 * io_uring a pause cancels the multishot recv, which may first take what
 * the socket had queued, so buffered input can pass the limit by up to the
 * socket's receive buffer, once; that excess is held in the connection's
 * own memory, never in the shard's shared receive buffers. */
void keel_conn_set_limits(keel_conn *c, size_t out_bytes, size_t in_bytes);
int keel_conn_set_nodelay(keel_conn *c, bool on);
int keel_conn_set_keepalive(keel_conn *c, bool on, unsigned idle_s, unsigned interval_s,
                            unsigned count);
int keel_conn_fd(const keel_conn *c);
void keel_conn_set_data(keel_conn *c, void *data);
void *keel_conn_data(const keel_conn *c);
/* The first error the connection met (0 if none). */
int keel_conn_error(const keel_conn *c);

/* ---- statistics -------------------------------------------------------- */

typedef struct keel_net_stats {
    uint64_t accepted; /* connections accepted by this shard */
    uint64_t open;     /* connections open on this shard now */
    uint64_t refused;  /* closed at accept: over max_conns */
    uint64_t bytes_in, bytes_out;
    uint64_t accept_errors;
    uint64_t recv_rearms; /* multishot recv re-armed (ended, ENOBUFS, resumed) */
    uint64_t bufs_in_use; /* receive buffers held by connections */
    uint64_t errors;      /* connections failed (reset, timed out, I/O error) */
} keel_net_stats;

/* Copies shard's net counters. Returns 0 or -EINVAL. */
int keel_net_stats_get(unsigned shard, keel_net_stats *out);

#ifdef __cplusplus
}
#endif
#endif
