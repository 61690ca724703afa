/* Listeners: one SO_REUSEPORT socket per shard, multishot accept, EMFILE
 * back-off, and steering by hash or by CPU. Also keel_connect. */
#include <arpa/inet.h>
#include <errno.h>
#include <linux/filter.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"

#define ACCEPT_BACKOFF_NS KEEL_MS(50)

typedef struct lshard {
    keel_listener *l;
    int fd;
    bool armed, closing, closed;
    keel__op op;
    keel__timer backoff;
    uint64_t last_log_ns;
    uint64_t suppressed;
    keel_promise closed_p;
} lshard;

struct keel_listener_s {
    keel_listen_config cfg;
    keel_accept_fn fn;
    void *ctx;
    struct sockaddr_storage addr;
    socklen_t addrlen;
    bool is_unix;
    uint16_t port;
    unsigned nshards;
    _Atomic unsigned live_shards; /* shards listening; the last to exit frees the listener */
    lshard shards[];
};

void keel_listen_config_init(keel_listen_config *c)
{
    memset(c, 0, sizeof(*c));
    c->bind = "0.0.0.0";
    c->backlog = 4096;
    c->steer = KEEL_STEER_HASH;
}

static int take_listen_option(void *ctx, size_t which, const char *val)
{
    keel_listen_config *c = ctx;
    unsigned n;
    int err = 0;
    switch (which) {
    case 0:
        if (!(err = keel__parse_uint("--port", val, 65535, &n)))
            c->port = (uint16_t)n;
        break;
    case 1: c->bind = val; break;
    case 2: err = keel__parse_uint("--max-conns", val, 100000000, &c->max_conns); break;
    case 3:
        if (!strcmp(val, "hash")) {
            c->steer = KEEL_STEER_HASH;
        } else if (!strcmp(val, "cpu")) {
            c->steer = KEEL_STEER_CPU;
        } else {
            fprintf(stderr, "keel: --steer must be 'hash' or 'cpu', got '%s'\n", val);
            err = -KEEL_EBADCONFIG;
        }
        break;
    }
    return err;
}

int keel_listen_config_parse_args(keel_listen_config *c, int *argc, char **argv)
{
    static const char *const opts[] = {"--port", "--bind", "--max-conns", "--steer"};
    return keel__take_options(argc, argv, opts, 4, take_listen_option, c);
}

const char *keel_listen_config_usage(const keel_listen_config *c)
{
    static __thread char text[1024];
    snprintf(text, sizeof(text),
             "  --port N              TCP port (default %u; 0 picks a free one)\n"
             "  --bind ADDR           address: 0.0.0.0, ::, 127.0.0.1, unix:/path (default %s)\n"
             "  --max-conns N         open connections per shard beyond which new ones are\n"
             "                        closed at once (default: no limit)\n"
             "  --steer hash|cpu      how connections are spread over shards (default hash;\n"
             "                        cpu: the shard of the CPU that received the connection,\n"
             "                        for NICs whose RSS spreads receives over the shards' CPUs)\n",
             c->port, c->bind ? c->bind : "0.0.0.0");
    return text;
}

int keel__parse_addr(const char *addr, uint16_t port, struct sockaddr_storage *ss, socklen_t *len)
{
    memset(ss, 0, sizeof(*ss));
    if (!addr || !*addr)
        addr = "0.0.0.0";
    if (!strncmp(addr, "unix:", 5)) {
        struct sockaddr_un *un = (struct sockaddr_un *)ss;
        const char *path = addr + 5;
        if (!*path || strlen(path) >= sizeof(un->sun_path))
            return -EINVAL;
        un->sun_family = AF_UNIX;
        strcpy(un->sun_path, path);
        *len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + strlen(path) + 1);
        return 0;
    }
    if (!strcmp(addr, "localhost"))
        addr = "127.0.0.1";
    struct sockaddr_in *in4 = (struct sockaddr_in *)ss;
    if (inet_pton(AF_INET, addr, &in4->sin_addr) == 1) {
        in4->sin_family = AF_INET;
        in4->sin_port = htons(port);
        *len = sizeof(*in4);
        return 0;
    }
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)ss;
    const char *a6 = addr;
    char buf[INET6_ADDRSTRLEN + 2];
    size_t alen = strlen(addr);
    if (addr[0] == '[' && alen < sizeof(buf) && addr[alen - 1] == ']') { /* [::1] */
        memcpy(buf, addr + 1, alen - 2);
        buf[alen - 2] = 0;
        a6 = buf;
    }
    if (inet_pton(AF_INET6, a6, &in6->sin6_addr) == 1) {
        in6->sin6_family = AF_INET6;
        in6->sin6_port = htons(port);
        *len = sizeof(*in6);
        return 0;
    }
    return -EINVAL;
}

static uint16_t port_of(const struct sockaddr_storage *ss)
{
    if (ss->ss_family == AF_INET)
        return ntohs(((const struct sockaddr_in *)ss)->sin_port);
    if (ss->ss_family == AF_INET6)
        return ntohs(((const struct sockaddr_in6 *)ss)->sin6_port);
    return 0;
}

static void set_port(struct sockaddr_storage *ss, uint16_t port)
{
    if (ss->ss_family == AF_INET)
        ((struct sockaddr_in *)ss)->sin_port = htons(port);
    else if (ss->ss_family == AF_INET6)
        ((struct sockaddr_in6 *)ss)->sin6_port = htons(port);
}

uint16_t keel_listener_port(const keel_listener *l)
{
    return l->port;
}

/* ---- accepting ------------------------------------------------------------------ */

static void arm_accept(keel__shard *s, lshard *ls)
{
    if (ls->armed || ls->closing)
        return;
    if (s->backend->submit(s, &ls->op) == 0)
        ls->armed = true;
}

static void backoff_fired(keel__timer *t, int err)
{
    lshard *ls = t->ctx;
    if (!err)
        arm_accept(keel__shard_self(), ls);
}

static void finish_close(keel__shard *s, lshard *ls)
{
    (void)s;
    if (ls->closed)
        return;
    ls->closed = true;
    keel__timer_cancel(&ls->backoff);
    close(ls->fd);
    if (ls->l->is_unix)
        unlink(((struct sockaddr_un *)&ls->l->addr)->sun_path);
    if (keel_promise_pending(&ls->closed_p))
        keel_promise_set_value(&ls->closed_p, 0);
}

static void accept_done(keel__op *op, int res, uint32_t flags)
{
    lshard *ls = op->ctx;
    keel__shard *s = keel__shard_self();
    keel__net *n = s->net;
    if (!(flags & KEEL__F_MORE))
        ls->armed = false;
    if (res >= 0) {
        n->stats.accepted++;
        if (ls->closing || (ls->l->cfg.max_conns && n->stats.open >= ls->l->cfg.max_conns)) {
            n->stats.refused++;
            close(res);
        } else {
            keel_conn *c = keel__conn_new(res);
            if (c)
                ls->l->fn(ls->l->ctx, c);
            else
                close(res);
        }
    } else if (res != -ECANCELED) {
        n->stats.accept_errors++;
        /* Out of fds or memory: retrying at once would spin. Back off, and
         * log once a second, not once per failure. */
        if (s->now_ns - ls->last_log_ns >= KEEL_SEC(1)) {
            keel__log("accept failed: %s%s (%llu more since the last report); retrying in 50 ms",
                      keel_strerror(res),
                      (res == -EMFILE || res == -ENFILE) ? ", raise the open-file limit (ulimit -n)"
                                                         : "",
                      (unsigned long long)ls->suppressed);
            ls->last_log_ns = s->now_ns;
            ls->suppressed = 0;
        } else {
            ls->suppressed++;
        }
        if (!ls->armed && !ls->closing && ls->backoff.heap_idx == SIZE_MAX)
            keel__timer_arm(&ls->backoff, s->now_ns + ACCEPT_BACKOFF_NS);
        return;
    }
    if (ls->closing) {
        if (!ls->armed)
            finish_close(s, ls);
        return;
    }
    arm_accept(s, ls); /* the kernel ended the multishot: re-arm */
}

static keel_future *lshard_close(lshard *ls)
{
    keel__shard *s = keel__shard_self();
    if (ls->closed)
        return keel_make_ready(0);
    if (ls->closing)
        return keel_make_ready(0);
    ls->closing = true;
    keel_future *f = keel_promise_init(&ls->closed_p);
    if (ls->armed)
        s->backend->cancel(s, &ls->op);
    else
        finish_close(s, ls);
    return f;
}

static keel_future *lshard_exit_hook(void *arg)
{
    lshard *ls = arg;
    return lshard_close(ls);
}

static void listener_release(void *ctx, keel_result r)
{
    (void)r;
    keel_listener *l = ctx;
    if (atomic_fetch_sub(&l->live_shards, 1) == 1)
        free(l);
}

static keel_future *lshard_exit_hook_and_release(void *arg)
{
    lshard *ls = arg;
    return keel_finally(lshard_close(ls), listener_release, ls->l);
}

/* ---- opening ------------------------------------------------------------------------ */

/* Steering by CPU: a classic BPF program returns the index, within the
 * reuseport group, of the socket to pick; sockets are indexed in bind
 * order, which is shard order, so CPU % nshards names the shard pinned to
 * that CPU when shards sit on CPUs 0..n-1. */
static int attach_cpu_steering(int fd, unsigned nshards)
{
    struct sock_filter code[] = {
        {BPF_LD | BPF_W | BPF_ABS, 0, 0, (uint32_t)(SKF_AD_OFF + SKF_AD_CPU)},
        {BPF_ALU | BPF_MOD | BPF_K, 0, 0, nshards},
        {BPF_RET | BPF_A, 0, 0, 0},
    };
    struct sock_fprog prog = {.len = 3, .filter = code};
    if (setsockopt(fd, SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, &prog, sizeof(prog)) < 0)
        return -errno;
    return 0;
}

static int open_socket(keel_listener *l)
{
    int fd = socket(l->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    int one = 1;
    if (!l->is_unix) {
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
        if (setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) < 0)
            goto fail;
        if (l->addr.ss_family == AF_INET6) /* "::" means IPv6 only; 0.0.0.0 is its own listener */
            setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
    }
    if (bind(fd, (struct sockaddr *)&l->addr, l->addrlen) < 0)
        goto fail;
    if (listen(fd, l->cfg.backlog > 0 ? l->cfg.backlog : 4096) < 0)
        goto fail;
    return fd;
fail:;
    int err = -errno;
    close(fd);
    return err;
}

static keel_future *listen_here(void *arg)
{
    keel_listener *l = arg;
    keel__shard *s = keel__shard_self();
    lshard *ls = &l->shards[s->id];
    if (!keel__net_shard())
        return keel_make_error(-ENOMEM);
    int fd = open_socket(l);
    if (fd < 0)
        return keel_make_error(fd);
    if (l->port == 0 && !l->is_unix) { /* ephemeral: the others bind to the port shard 0 got */
        struct sockaddr_storage bound;
        socklen_t len = sizeof(bound);
        getsockname(fd, (struct sockaddr *)&bound, &len);
        l->port = port_of(&bound);
        set_port(&l->addr, l->port);
    }
    if (l->cfg.steer == KEEL_STEER_CPU && s->id == l->nshards - 1 && !l->is_unix) {
        int err = attach_cpu_steering(fd, l->nshards);
        if (err) {
            close(fd);
            keel__log("SO_ATTACH_REUSEPORT_CBPF failed: %s; use --steer hash", keel_strerror(err));
            return keel_make_error(err);
        }
    }
    ls->l = l;
    ls->fd = fd;
    ls->op =
        (keel__op){.type = KEEL__OP_ACCEPT_MULTI, .fd = fd, .complete = accept_done, .ctx = ls};
    ls->backoff = (keel__timer){.heap_idx = SIZE_MAX, .fire = backoff_fired, .ctx = ls};
    atomic_fetch_add(&l->live_shards, 1);
    keel_at_exit(lshard_exit_hook_and_release, ls);
    arm_accept(s, ls);
    return keel_make_ready(0);
}

typedef struct listen_op {
    keel_listener *l;
    unsigned next;
    keel_listener **out;
} listen_op;

/* Shards bind one after another, in order: the first learns an ephemeral
 * port for the rest, and bind order is the reuseport group's index order,
 * which CPU steering relies on. */
static keel_future *listen_continue(void *ctx, keel_result r)
{
    (void)ctx;
    (void)r;
    return keel_make_ready(KEEL_CONTINUE);
}

static keel_future *listen_step_wrapped(void *ctx)
{
    listen_op *op = ctx;
    if (op->next == op->l->nshards)
        return keel_make_ready(KEEL_STOP);
    return keel_then(keel_submit_to(op->next++, listen_here, op->l), listen_continue, NULL);
}

static keel_future *listen_finished(void *ctx, keel_result r)
{
    listen_op *op = ctx;
    keel_listener *l = op->l;
    unsigned bound = op->next;
    if (r.err) {
        keel__log("cannot listen on %s port %u: %s", l->cfg.bind, l->cfg.port,
                  keel_strerror(r.err));
        /* Shards that did bind close at exit through their hooks; those
         * that did not never registered one. Close the bound ones now. */
        for (unsigned i = 0; i + 1 < bound; i++)
            keel_detach(keel_submit_to(i, (keel_remote_fn)(void *)lshard_exit_hook, &l->shards[i]));
        if (atomic_load(&l->live_shards) == 0)
            free(l); /* no shard bound, so no exit hook will */
    } else if (op->out) {
        *op->out = l;
    }
    free(op);
    return keel_make_result(r.err ? keel_err(r.err) : keel_ok(0));
}

keel_future *keel_listen(const keel_listen_config *c, keel_accept_fn fn, void *ctx,
                         keel_listener **out)
{
    unsigned n = keel_shard_count();
    keel_listener *l = calloc(1, sizeof(*l) + n * sizeof(lshard));
    listen_op *op = calloc(1, sizeof(*op));
    if (!l || !op) {
        free(l);
        free(op);
        return keel_make_error(-ENOMEM);
    }
    l->cfg = *c;
    if (!l->cfg.bind)
        l->cfg.bind = "0.0.0.0";
    l->fn = fn;
    l->ctx = ctx;
    int err = keel__parse_addr(l->cfg.bind, c->port, &l->addr, &l->addrlen);
    if (err) {
        keel__log("cannot listen on '%s': not an IPv4/IPv6 address or unix:/path", l->cfg.bind);
        goto fail;
    }
    l->is_unix = l->addr.ss_family == AF_UNIX;
    /* Unix sockets have no SO_REUSEPORT: shard 0 alone accepts on them. */
    l->nshards = l->is_unix ? 1 : n;
    l->port = c->port;
    for (unsigned i = 0; i < n; i++)
        l->shards[i].fd = -1;

    /* A plain bind (no SO_REUSEPORT) fails if anyone listens already: with
     * SO_REUSEPORT a stale instance would silently share the port. */
    if (l->is_unix) {
        const char *path = ((struct sockaddr_un *)&l->addr)->sun_path;
        int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (probe >= 0 && connect(probe, (struct sockaddr *)&l->addr, l->addrlen) == 0) {
            close(probe);
            err = -EADDRINUSE;
            keel__log("another process listens on unix:%s; stop it first", path);
            goto fail;
        }
        if (probe >= 0)
            close(probe);
        unlink(path); /* a stale socket file from a crashed run */
    } else if (c->port) {
        int probe = socket(l->addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
        int one = 1;
        setsockopt(probe, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
        if (probe >= 0 && bind(probe, (struct sockaddr *)&l->addr, l->addrlen) < 0) {
            err = -errno;
            close(probe);
            if (err == -EADDRINUSE)
                keel__log("another process already listens on %s port %u; stop it or pick another "
                          "port",
                          l->cfg.bind, c->port);
            goto fail;
        }
        if (probe >= 0)
            close(probe);
    }
    op->l = l;
    op->out = out;
    return keel_then_wrapped(keel_repeat(listen_step_wrapped, op), listen_finished, op);
fail:
    free(l);
    free(op);
    return keel_make_error(err);
}

static keel_future *close_here(void *arg)
{
    keel_listener *l = arg;
    unsigned id = keel_shard_id();
    if (id >= l->nshards)
        return keel_make_ready(0);
    return lshard_close(&l->shards[id]);
}

keel_future *keel_listener_close(keel_listener *l)
{
    /* The listener's memory goes when the runtime stops (each shard's exit
     * hook releases it), so a close racing shutdown is safe. */
    return keel_invoke_on_all(close_here, l);
}

/* ---- connecting ------------------------------------------------------------------------ */

typedef struct connector {
    keel__op op;
    struct sockaddr_storage addr;
    keel__timer timer;
    keel_promise p;
    bool timed_out;
} connector;

static void connect_done(keel__op *op, int res, uint32_t flags)
{
    (void)flags;
    connector *k = op->ctx;
    keel__timer_cancel(&k->timer);
    keel_promise p = k->p;
    int fd = op->fd;
    bool timed_out = k->timed_out;
    free(k);
    if (res < 0) {
        close(fd);
        keel_promise_set_error(&p, timed_out && res == -ECANCELED ? -ETIMEDOUT : res);
        return;
    }
    keel_conn *c = keel__conn_new(fd);
    if (!c) {
        close(fd);
        keel_promise_set_error(&p, -ENOMEM);
        return;
    }
    keel_promise_resolve(&p, keel_ok_ptr(c));
}

static void connect_timeout(keel__timer *t, int err)
{
    connector *k = t->ctx;
    k->timed_out = true;
    (void)err;
    keel__shard_self()->backend->cancel(keel__shard_self(), &k->op);
}

keel_future *keel_connect(const char *addr, uint16_t port, uint64_t timeout_ns)
{
    keel__shard *s = keel__shard_self();
    if (!keel__net_shard())
        return keel_make_error(-ENOMEM);
    connector *k = calloc(1, sizeof(*k));
    if (!k)
        return keel_make_error(-ENOMEM);
    socklen_t len;
    int err = keel__parse_addr(addr, port, &k->addr, &len);
    if (err) {
        free(k);
        return keel_make_error(err);
    }
    int fd = socket(k->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        err = -errno;
        free(k);
        return keel_make_error(err);
    }
    k->op = (keel__op){.type = KEEL__OP_CONNECT,
                       .fd = fd,
                       .addr = (struct sockaddr *)&k->addr,
                       .addrlen = len,
                       .complete = connect_done,
                       .ctx = k};
    k->timer = (keel__timer){.heap_idx = SIZE_MAX, .fire = connect_timeout, .ctx = k};
    keel_future *f = keel_promise_init(&k->p);
    if ((err = s->backend->submit(s, &k->op))) {
        keel_promise_set_error(&k->p, err);
        close(fd);
        free(k);
        return f;
    }
    if (timeout_ns)
        keel__timer_arm(&k->timer, keel__clock_ns() + timeout_ns);
    return f;
}
