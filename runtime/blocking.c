/* The blocking pool: a few unpinned worker threads for work that would stall
 * a loop. Shards hand jobs over through a mutex-protected FIFO (a job is
 * worth microseconds at least, so the lock is noise); results return through
 * a lock-free stack per shard, and a sleeping shard is woken by its eventfd,
 * since a worker owns no io_uring ring to send IORING_OP_MSG_RING from. */
#include <errno.h>
#include <stdlib.h>
#include <unistd.h>

#include "internal.h"

struct keel__job {
    keel__job *next;
    keel_result (*fn)(void *arg);
    void *arg;
    keel_result result;
    keel__shard *origin;
    keel_promise promise;
};

static struct {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    keel__job *head, *tail;
    bool stopping;
    pthread_t *threads;
    unsigned nthreads;
} pool = {.lock = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER};

static void finish_job(keel__job *j)
{
    keel__shard *s = j->origin;
    void *head = atomic_load_explicit(&s->jobs_done, memory_order_relaxed);
    do {
        j->next = head;
    } while (!atomic_compare_exchange_weak_explicit(&s->jobs_done, &head, j, memory_order_release,
                                                    memory_order_relaxed));
    /* Store-load fence between publishing the job and reading the sleep
     * flag; the shard fences between setting the flag and checking us. */
    atomic_thread_fence(memory_order_seq_cst);
    if (atomic_load_explicit(&s->sleeping, memory_order_relaxed) &&
        atomic_exchange_explicit(&s->sleeping, 0, memory_order_relaxed))
        s->backend->wake(NULL, s);
}

static void *worker_main(void *unused)
{
    (void)unused;
    pthread_mutex_lock(&pool.lock);
    for (;;) {
        while (!pool.head && !pool.stopping)
            pthread_cond_wait(&pool.cond, &pool.lock);
        if (!pool.head)
            break;
        keel__job *j = pool.head;
        pool.head = j->next;
        if (!pool.head)
            pool.tail = NULL;
        pthread_mutex_unlock(&pool.lock);
        j->result = j->fn(j->arg);
        finish_job(j);
        pthread_mutex_lock(&pool.lock);
    }
    pthread_mutex_unlock(&pool.lock);
    return NULL;
}

int keel__blocking_start(unsigned threads)
{
    pool.stopping = false;
    pool.head = pool.tail = NULL;
    pool.threads = calloc(threads, sizeof(pthread_t));
    if (!pool.threads)
        return -ENOMEM;
    for (pool.nthreads = 0; pool.nthreads < threads; pool.nthreads++) {
        int err = pthread_create(&pool.threads[pool.nthreads], NULL, worker_main, NULL);
        if (err) {
            keel__log("pthread_create(blocking worker) failed: %s", keel_strerror(-err));
            keel__blocking_stop();
            return -err;
        }
    }
    return 0;
}

void keel__blocking_stop(void)
{
    pthread_mutex_lock(&pool.lock);
    pool.stopping = true;
    pthread_cond_broadcast(&pool.cond);
    pthread_mutex_unlock(&pool.lock);
    for (unsigned i = 0; i < pool.nthreads; i++)
        pthread_join(pool.threads[i], NULL);
    free(pool.threads);
    pool.threads = NULL;
    pool.nthreads = 0;
}

keel_future *keel_run_blocking(keel_result (*fn)(void *arg), void *arg)
{
    keel__shard *s = keel__shard_self();
    keel__job *j = keel__alloc(sizeof(*j));
    j->fn = fn;
    j->arg = arg;
    j->origin = s;
    j->next = NULL;
    keel_future *f = keel_promise_init(&j->promise);
    s->outstanding++;
    s->stats.blocking_jobs++;
    pthread_mutex_lock(&pool.lock);
    if (pool.tail)
        pool.tail->next = j;
    else
        pool.head = j;
    pool.tail = j;
    pthread_cond_signal(&pool.cond);
    pthread_mutex_unlock(&pool.lock);
    return f;
}

bool keel__blocking_pending_in(keel__shard *s)
{
    return atomic_load_explicit(&s->jobs_done, memory_order_relaxed) != NULL;
}

bool keel__blocking_poll(keel__shard *s)
{
    keel__job *j = atomic_exchange_explicit(&s->jobs_done, NULL, memory_order_acquire);
    if (!j)
        return false;
    /* The stack pops newest first; reverse it so results resolve in the
     * order the workers finished them. */
    keel__job *fifo = NULL;
    while (j) {
        keel__job *next = j->next;
        j->next = fifo;
        fifo = j;
        j = next;
    }
    while (fifo) {
        keel__job *next = fifo->next;
        keel_promise p = fifo->promise;
        keel_result r = fifo->result;
        keel__free(fifo, sizeof(*fifo));
        s->outstanding--;
        keel_promise_resolve(&p, r);
        fifo = next;
    }
    return true;
}
