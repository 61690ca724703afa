/* bench-epoll-echo: the baseline keel's echo server is measured against, the
 * best-practice epoll echo server one would write by hand. One thread per
 * core, each with its own SO_REUSEPORT listener and epoll instance, so
 * threads share nothing on the hot path; one read into a per-thread buffer
 * and one write back per readable event; nothing allocated per request, and
 * per connection only when a write comes back short (the unsent rest must
 * live somewhere until the peer drains its window).
 *
 * Level-triggered epoll, deliberately: with edge-triggered events a handler
 * must read until EAGAIN or it may never be told again, and for small
 * request/response traffic that last read is almost always empty, one
 * wasted syscall per request. Level-triggered lets us do exactly one read
 * per event; anything left in the socket is reported again on the next
 * turn, which is also fairer across connections. The cost of LT (epoll
 * re-checking ready sockets on each epoll_wait) is a list walk in the
 * kernel, far cheaper than a syscall.
 *
 * Flags --shards, --cpuset and --backend are accepted as synonyms (the first
 * two) or ignored (the last) so that a driver can start this program with
 * keel-echo's command line. */
#define _GNU_SOURCE
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "cpulist.h"

#define RBUF_SIZE (64 * 1024)
#define MAX_EVENTS 256
#define MAX_THREADS 256

/* The unsent remainder of one short write. */
struct pending {
    size_t off, len;
    char data[];
};

struct worker {
    int id;
    int cpu; /* -1: not pinned */
    int lfd, ep;
    pthread_t th;
    uint64_t accepted, closed, short_writes;
    char *rbuf;
};

/* Indexed by fd: fds are unique process-wide and a connection belongs to
 * one thread only, so threads never touch the same slot. A table instead of
 * a per-connection struct keeps an idle connection at zero user bytes. */
static struct pending **pend;
static int stop_efd = -1;

static void die(const char *what)
{
    fprintf(stderr, "epoll-echo: %s: %s\n", what, strerror(errno));
    exit(1);
}

static void close_conn(struct worker *w, int fd)
{
    free(pend[fd]);
    pend[fd] = NULL;
    close(fd); /* also removes it from the epoll set: nobody dup()s it */
    w->closed++;
}

static void on_readable(struct worker *w, int fd)
{
    ssize_t n = recv(fd, w->rbuf, RBUF_SIZE, 0);
    if (n <= 0) {
        if (n < 0 && (errno == EAGAIN || errno == EINTR))
            return;
        close_conn(w, fd); /* EOF or reset */
        return;
    }
    ssize_t s = send(fd, w->rbuf, (size_t)n, MSG_NOSIGNAL);
    if (s == n)
        return;
    if (s < 0) {
        if (errno != EAGAIN) {
            close_conn(w, fd);
            return;
        }
        s = 0;
    }
    /* The peer's window is full: keep the rest and stop reading this
     * connection until it is sent, so a client that does not read cannot
     * make us buffer without bound. */
    size_t rest = (size_t)(n - s);
    struct pending *p = malloc(sizeof(*p) + rest);
    if (!p) {
        close_conn(w, fd);
        return;
    }
    p->off = 0;
    p->len = rest;
    memcpy(p->data, w->rbuf + s, rest);
    pend[fd] = p;
    w->short_writes++;
    struct epoll_event ev = {.events = EPOLLOUT, .data.fd = fd};
    if (epoll_ctl(w->ep, EPOLL_CTL_MOD, fd, &ev) < 0)
        close_conn(w, fd);
}

static void on_writable(struct worker *w, int fd)
{
    struct pending *p = pend[fd];
    if (!p)
        return; /* stale event */
    ssize_t s = send(fd, p->data + p->off, p->len - p->off, MSG_NOSIGNAL);
    if (s < 0) {
        if (errno != EAGAIN && errno != EINTR)
            close_conn(w, fd);
        return;
    }
    p->off += (size_t)s;
    if (p->off < p->len)
        return;
    free(p);
    pend[fd] = NULL;
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = fd};
    if (epoll_ctl(w->ep, EPOLL_CTL_MOD, fd, &ev) < 0)
        close_conn(w, fd);
}

static void on_accept(struct worker *w)
{
    static _Atomic bool warned_emfile;
    for (;;) {
        int fd = accept4(w->lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            if ((errno == EMFILE || errno == ENFILE) && !warned_emfile) {
                warned_emfile = true;
                fprintf(stderr, "epoll-echo: accept4: %s (raise the fd limit)\n", strerror(errno));
            }
            return; /* EAGAIN: backlog drained */
        }
        /* Linux copies TCP_NODELAY from the listener, but not every kernel
         * we might be compared on does; one setsockopt per accept is noise. */
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        struct epoll_event ev = {.events = EPOLLIN, .data.fd = fd};
        if (epoll_ctl(w->ep, EPOLL_CTL_ADD, fd, &ev) < 0) {
            close(fd);
            continue;
        }
        w->accepted++;
    }
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    if (w->cpu >= 0) {
        cpu_set_t set;
        CPU_ZERO(&set);
        CPU_SET(w->cpu, &set);
        int err = pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
        if (err) {
            fprintf(stderr, "epoll-echo: pinning thread %d to CPU %d: %s\n", w->id, w->cpu,
                    strerror(err));
            exit(1);
        }
    }
    struct epoll_event evs[MAX_EVENTS];
    for (;;) {
        int n = epoll_wait(w->ep, evs, MAX_EVENTS, -1);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            die("epoll_wait");
        }
        for (int i = 0; i < n; i++) {
            int fd = evs[i].data.fd;
            if (fd == stop_efd)
                return NULL;
            if (fd == w->lfd)
                on_accept(w);
            else if (pend[fd])
                on_writable(w, fd); /* EPOLLOUT, or an error the send reports */
            else
                on_readable(w, fd); /* EPOLLIN, EPOLLHUP or EPOLLERR */
        }
    }
}

static int make_listener(const struct sockaddr_in *addr)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        die("socket");
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) < 0)
        die("SO_REUSEPORT");
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (bind(fd, (const struct sockaddr *)addr, sizeof(*addr)) < 0)
        die("bind");
    /* The kernel caps this at net.core.somaxconn. */
    if (listen(fd, 65535) < 0)
        die("listen");
    return fd;
}

static void usage(FILE *out)
{
    fprintf(out, "usage: bench-epoll-echo --port P [--bind ADDR] [--threads N] [--cpu LIST]\n"
                 "  --port P       TCP port (0: pick one and print it)\n"
                 "  --bind ADDR    IPv4 address (default 127.0.0.1)\n"
                 "  --threads N    event-loop threads (default: size of --cpu, else online CPUs)\n"
                 "  --cpu LIST     pin thread i to the i-th CPU of LIST (e.g. 0 or 0-1 or 0,2)\n"
                 "  --shards N, --cpuset LIST   synonyms of --threads and --cpu\n"
                 "  --backend X    ignored (keel-echo compatibility)\n");
}

int main(int argc, char **argv)
{
    int port = -1, nthreads = 0, ncpus = 0;
    int cpus[MAX_THREADS];
    const char *bind_addr = "127.0.0.1";
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "epoll-echo: option '%s' needs a value (or is unknown)\n", a);
            usage(stderr);
            return 2;
        }
        const char *v = argv[++i];
        if (!strcmp(a, "--port")) {
            port = atoi(v);
        } else if (!strcmp(a, "--bind")) {
            bind_addr = v;
        } else if (!strcmp(a, "--threads") || !strcmp(a, "--shards")) {
            nthreads = atoi(v);
        } else if (!strcmp(a, "--cpu") || !strcmp(a, "--cpuset")) {
            ncpus = parse_cpus(v, cpus, MAX_THREADS);
            if (ncpus <= 0) {
                fprintf(stderr, "epoll-echo: bad CPU list '%s'\n", v);
                return 2;
            }
        } else if (!strcmp(a, "--backend")) {
            /* always epoll */
        } else {
            fprintf(stderr, "epoll-echo: unknown option '%s'\n", a);
            usage(stderr);
            return 2;
        }
    }
    if (port < 0 || port > 65535) {
        usage(stderr);
        return 2;
    }
    if (nthreads <= 0)
        nthreads = ncpus > 0 ? ncpus : (int)sysconf(_SC_NPROCESSORS_ONLN);
    if (nthreads > MAX_THREADS)
        nthreads = MAX_THREADS;

    /* Many connections need many fds; the hard limit is ours to take. */
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    getrlimit(RLIMIT_NOFILE, &rl);
    /* calloc of this size is mmap'd zero pages: untouched slots cost no RSS. */
    pend = calloc(rl.rlim_cur, sizeof(*pend));
    if (!pend)
        die("calloc");

    /* Block the stop signals before any thread exists so only the main
     * thread's sigwait ever sees them. */
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);

    /* Level-triggered and never read: once written it wakes every thread. */
    stop_efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (stop_efd < 0)
        die("eventfd");

    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    if (inet_pton(AF_INET, bind_addr, &addr.sin_addr) != 1) {
        fprintf(stderr, "epoll-echo: bad IPv4 address '%s'\n", bind_addr);
        return 2;
    }
    struct worker *ws = calloc((size_t)nthreads, sizeof(*ws));
    if (!ws)
        die("calloc");
    for (int i = 0; i < nthreads; i++) {
        struct worker *w = &ws[i];
        w->id = i;
        w->cpu = ncpus > 0 ? cpus[i % ncpus] : -1;
        w->lfd = make_listener(&addr);
        if (i == 0 && port == 0) {
            /* Port 0: the others must join the port the first one got. */
            socklen_t len = sizeof(addr);
            if (getsockname(w->lfd, (struct sockaddr *)&addr, &len) < 0)
                die("getsockname");
            port = ntohs(addr.sin_port);
        }
        w->rbuf = malloc(RBUF_SIZE);
        w->ep = epoll_create1(EPOLL_CLOEXEC);
        if (!w->rbuf || w->ep < 0)
            die("worker setup");
        struct epoll_event ev = {.events = EPOLLIN, .data.fd = w->lfd};
        struct epoll_event sev = {.events = EPOLLIN, .data.fd = stop_efd};
        if (epoll_ctl(w->ep, EPOLL_CTL_ADD, w->lfd, &ev) < 0 ||
            epoll_ctl(w->ep, EPOLL_CTL_ADD, stop_efd, &sev) < 0)
            die("epoll_ctl");
    }
    for (int i = 0; i < nthreads; i++) {
        int err = pthread_create(&ws[i].th, NULL, worker_main, &ws[i]);
        if (err) {
            errno = err;
            die("pthread_create");
        }
    }
    printf("epoll-echo: %d threads listening on %s:%d (level-triggered epoll, SO_REUSEPORT, "
           "cpus ",
           nthreads, bind_addr, port);
    if (ncpus == 0)
        printf("unpinned");
    for (int i = 0; ncpus > 0 && i < nthreads; i++)
        printf(i ? ",%d" : "%d", ws[i].cpu);
    printf(")\n");
    fflush(stdout);

    int sig = 0;
    while (sigwait(&sigs, &sig) != 0)
        ;
    printf("epoll-echo: %s received: stopping\n", sig == SIGINT ? "SIGINT" : "SIGTERM");
    uint64_t one = 1;
    if (write(stop_efd, &one, sizeof(one)) != sizeof(one))
        die("eventfd write");
    for (int i = 0; i < nthreads; i++) {
        pthread_join(ws[i].th, NULL);
        struct worker *w = &ws[i];
        printf("epoll-echo: thread %d (cpu %d): accepted=%llu closed=%llu short_writes=%llu\n", i,
               w->cpu, (unsigned long long)w->accepted, (unsigned long long)w->closed,
               (unsigned long long)w->short_writes);
        close(w->lfd);
        close(w->ep);
        free(w->rbuf);
    }
    /* Connections still open are the kernel's to close at exit. */
    free(ws);
    free(pend);
    return 0;
}
