/* SIGINT/SIGTERM: blocked in every keel thread and read from a signalfd on
 * shard 0. Their disposition is reset to the default first: a process
 * started in the background by a shell inherits SIGINT ignored, and an
 * ignored signal never reaches a signalfd. A second signal while stopping
 * exits at once, for the operator whose shutdown is stuck. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include "internal.h"

/* Handlers an app registered with keel_signal_handle, run on shard 0. */
static struct {
    keel_signal_fn fn;
    void *arg;
} app_handlers[_NSIG];

int keel_signal_handle(int signo, keel_signal_fn fn, void *arg)
{
    if (signo <= 0 || signo >= _NSIG || signo == SIGKILL || signo == SIGSTOP || signo == SIGPIPE)
        return -EINVAL;
    app_handlers[signo].fn = fn;
    app_handlers[signo].arg = arg;
    return 0;
}

static sigset_t stop_signals(void)
{
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    for (int i = 1; i < _NSIG; i++)
        if (app_handlers[i].fn)
            sigaddset(&set, i);
    return set;
}

int keel__signals_setup(sigset_t *old)
{
    sigset_t set = stop_signals();
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = SIG_DFL;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    for (int i = 1; i < _NSIG; i++)
        if (app_handlers[i].fn)
            sigaction(i, &sa, NULL);
    /* A peer that closes mid-write must give EPIPE, not kill the server. */
    sa.sa_handler = SIG_IGN;
    sigaction(SIGPIPE, &sa, NULL);
    int err = pthread_sigmask(SIG_BLOCK, &set, old);
    return -err;
}

void keel__signals_restore(const sigset_t *old)
{
    pthread_sigmask(SIG_SETMASK, old, NULL);
}

typedef struct sigstate {
    keel__op op;
    struct signalfd_siginfo info;
    int fd;
} sigstate;

static sigstate *g_sig;

static void signal_read(keel__op *op, int res, uint32_t flags)
{
    (void)flags;
    sigstate *st = op->ctx;
    int signo = res == (int)sizeof(st->info) ? (int)st->info.ssi_signo : 0;
    if (signo > 0 && signo < _NSIG && app_handlers[signo].fn) {
        app_handlers[signo].fn(signo, app_handlers[signo].arg);
    } else if (res == (int)sizeof(st->info)) {
        const char *name = st->info.ssi_signo == SIGINT ? "SIGINT" : "SIGTERM";
        if (keel_stopping()) {
            keel__log("%s received again while stopping: exiting now", name);
            _exit(1);
        }
        keel__log("%s received: stopping (send it again to exit at once)", name);
        keel_stop();
    } else if (res < 0 && res != -EAGAIN && res != -EINTR && res != -ECANCELED) {
        keel__log("read(signalfd) failed: %s; signals no longer stop the runtime",
                  keel_strerror(res));
        return;
    }
    if (res != -ECANCELED)
        keel__shard_self()->backend->submit(keel__shard_self(), &st->op);
}

int keel__signals_shard_init(keel__shard *s)
{
    sigset_t set = stop_signals();
    int fd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
    if (fd < 0) {
        keel__log("signalfd failed: %s", strerror(errno));
        return -errno;
    }
    sigstate *st = calloc(1, sizeof(*st));
    if (!st) {
        close(fd);
        return -ENOMEM;
    }
    st->fd = fd;
    st->op.type = KEEL__OP_READ;
    st->op.fd = fd;
    st->op.buf = &st->info;
    st->op.len = sizeof(st->info);
    st->op.complete = signal_read;
    st->op.ctx = st;
    g_sig = st;
    return s->backend->submit(s, &st->op);
}

/* Called after the backend is gone, so no read is in flight. */
void keel__signals_shard_fini(keel__shard *s)
{
    (void)s;
    if (!g_sig)
        return;
    close(g_sig->fd);
    free(g_sig);
    g_sig = NULL;
}
