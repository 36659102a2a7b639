/* A batch-1 sequence split over two cores: the caller and one helper thread
 * share each timestep's work (the recurrent product and the gates for half
 * of the units each), then meet before the next step.
 *
 * Why: at batch 1 a step streams the whole recurrent kernel from L2 (256 KB
 * for an LSTM-128), which bounds one core at about 2.3 us a step here; two
 * cores each stream half (1.4 us a step with the meeting, measured in C).
 * A batch split (src/_gates.pxd) has no rows to give a second thread.
 *
 * Why not an OpenMP parallel region: its end waits for every team member, so
 * a pool thread asleep on a futex (any gap between calls over its spin time)
 * adds its wake-up, tens of microseconds on a VM, to a 100 us call. Here the
 * caller never waits for the helper to arrive: the work is a sequence of
 * tickets (stage s, chunk c), taken in order by whoever comes first. A caller
 * alone takes every ticket and pays a few atomic operations a step; a helper
 * that shows up late joins at the current ticket. The caller returns once
 * every ticket is done, so a helper only ever works on a live call.
 *
 * Stage s may start only when every chunk of stage s - 1 is done (a step needs
 * the whole previous state). A helper that takes a ticket and is then
 * preempted stalls the caller until it runs again; so a call uses the helper
 * only while it is the only split call in flight (two Python threads calling
 * at once run one thread each), and never from inside a parallel region.
 *
 * The helper spins for RNN_POOL_SPIN_NS after its last ticket, so calls back to
 * back find it awake, then sleeps on a condition variable; a call wakes it
 * only if it has enough work to pay for the wake-up (want_wake).
 *
 * Without POSIX threads (or C11 atomics) rnn_pool_run runs every ticket on the
 * caller: the same results, one thread.
 */
#ifndef RNNENGINE_STEP_POOL_H
#define RNNENGINE_STEP_POOL_H

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

/* One ticket's work: stage (0 .. stages-1) and chunk (0 .. chunks-1). */
typedef void (*rnn_chunk_fn)(void* ctx, int stage, int chunk);

static void rnn_pool_serial(rnn_chunk_fn fn, void* ctx, int stages, int chunks)
{
    int s, c;
    for (s = 0; s < stages; s++)
        for (c = 0; c < chunks; c++)
            fn(ctx, s, c);
}

#if defined(__unix__) && !defined(__STDC_NO_ATOMICS__) && !defined(RNNENGINE_NO_POOL)
#define RNNENGINE_HAVE_POOL 1
#include <pthread.h>
#include <stdatomic.h>
#include <time.h>
#include <unistd.h>

#if defined(__x86_64__) || defined(__i386__)
#define RNN_POOL_PAUSE() __asm__ __volatile__("" ::: "memory")
#else
#define RNN_POOL_PAUSE() ((void)0)
#endif

#define RNN_POOL_SPIN_NS 200000LL  /* the helper stays awake 0.2 ms after work */

typedef struct {
    /* The open job: generation << 32 | next ticket. A ticket is valid while
     * the generation is the job's and the ticket is below its total. */
    _Alignas(64) _Atomic uint64_t state;
    _Alignas(64) _Atomic int done;     /* tickets finished in this job */
    _Alignas(64) rnn_chunk_fn fn;      /* the job; stable while it is open */
    void* ctx;
    int chunks;
    uint32_t total;
    _Atomic int busy;                  /* a caller owns the job slot */
    _Atomic int in_flight;             /* split-eligible calls running now */
    _Atomic int sleeping;              /* the helper waits on cond */
    _Atomic int started;               /* the helper thread exists */
    _Atomic long long helper_tickets;  /* tickets the helper ran (tests) */
    _Atomic long long split_calls;     /* calls that owned the pool (tests) */
    char* scratch;                     /* the owner's: chunks x scratch_stride */
    size_t scratch_stride, scratch_capacity;
    pthread_mutex_t lock;
    pthread_cond_t cond;
} rnn_pool_t;

static rnn_pool_t rnn_pool = {
    .lock = PTHREAD_MUTEX_INITIALIZER,
    .cond = PTHREAD_COND_INITIALIZER,
};

static long long rnn_pool_now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (long long)t.tv_sec * 1000000000LL + t.tv_nsec;
}

/* Take and run tickets of generation gen until none is left. */
static int rnn_pool_work(uint32_t gen, int helper)
{
    int ran = 0;
    for (;;) {
        uint64_t s = atomic_load_explicit(&rnn_pool.state, memory_order_acquire);
        if ((uint32_t)(s >> 32) != gen)
            return ran;
        /* While the state still reads (gen, t) with t < total, job gen is
         * open and its fields are the ones published with it. */
        rnn_chunk_fn fn = rnn_pool.fn;
        void* ctx = rnn_pool.ctx;
        int chunks = rnn_pool.chunks;
        uint32_t total = rnn_pool.total;
        uint32_t t = (uint32_t)s;
        if (t >= total)
            return ran;
        if (!atomic_compare_exchange_weak_explicit(&rnn_pool.state, &s, s + 1,
                                                   memory_order_acq_rel,
                                                   memory_order_acquire))
            continue;
        /* Ticket t is ours: the job stays open until it is done. */
        int stage = (int)(t / (uint32_t)chunks);
        int need = stage * chunks;  /* every chunk of the stages before */
        while (atomic_load_explicit(&rnn_pool.done, memory_order_acquire) < need)
            RNN_POOL_PAUSE();
        fn(ctx, stage, (int)(t % (uint32_t)chunks));
        atomic_fetch_add_explicit(&rnn_pool.done, 1, memory_order_acq_rel);
        ran++;
        if (helper)
            atomic_fetch_add_explicit(&rnn_pool.helper_tickets, 1, memory_order_relaxed);
    }
}

static int rnn_pool_open(uint32_t* gen)
{
    /* seq_cst: against the caller's publish-then-check-sleeping, so that a
     * helper going to sleep either sees the new job or is signalled. */
    uint64_t s = atomic_load(&rnn_pool.state);
    *gen = (uint32_t)(s >> 32);
    return (uint32_t)s < rnn_pool.total;
}

static void* rnn_pool_helper(void* arg)
{
    (void)arg;
    for (;;) {
        long long idle_since = rnn_pool_now_ns();
        int spins = 0, alone = 0;
        for (;;) {
            uint32_t gen;
            if (rnn_pool_open(&gen) && rnn_pool_work(gen, 1)) {
                idle_since = rnn_pool_now_ns();
                continue;
            }
            RNN_POOL_PAUSE();
            if (++spins % 256 == 0) {
                /* Idle long enough, or calls keep running alone (another
                 * holds the job slot): sleep rather than take their core. */
                alone = atomic_load(&rnn_pool.in_flight) > 0 ? alone + 1 : 0;
                if (alone >= 8 || rnn_pool_now_ns() - idle_since > RNN_POOL_SPIN_NS)
                    break;
            }
        }
        pthread_mutex_lock(&rnn_pool.lock);
        atomic_store(&rnn_pool.sleeping, 1);
        for (;;) {
            uint32_t gen;
            if (rnn_pool_open(&gen))
                break;
            pthread_cond_wait(&rnn_pool.cond, &rnn_pool.lock);
        }
        atomic_store(&rnn_pool.sleeping, 0);
        pthread_mutex_unlock(&rnn_pool.lock);
    }
    return NULL;
}

static void rnn_pool_after_fork_child(void)
{
    /* The child has no helper thread: a call there starts a new one. The
     * mutex and condition variable are re-initialized (a fork may have
     * caught them held). */
    pthread_mutex_init(&rnn_pool.lock, NULL);
    pthread_cond_init(&rnn_pool.cond, NULL);
    atomic_store(&rnn_pool.started, 0);
    atomic_store(&rnn_pool.sleeping, 0);
    atomic_store(&rnn_pool.busy, 0);
    atomic_store(&rnn_pool.in_flight, 0);
    atomic_store(&rnn_pool.state, 0);
    rnn_pool.total = 0;
    rnn_pool.scratch = NULL;  /* the parent's copy stays allocated, unused */
    rnn_pool.scratch_capacity = 0;
}

static int rnn_pool_start(void)
{
    static _Atomic int atfork_done = 0;
    int expected = 0;
    pthread_t thread;
    pthread_attr_t attr;
    if (atomic_load(&rnn_pool.started))
        return 1;
    if (!atomic_compare_exchange_strong(&rnn_pool.started, &expected, 1))
        return 1;
    if (!atomic_exchange(&atfork_done, 1))
        pthread_atfork(NULL, NULL, rnn_pool_after_fork_child);
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&attr, 1 << 20);
    if (pthread_create(&thread, &attr, rnn_pool_helper, NULL) != 0) {
        pthread_attr_destroy(&attr);
        return 0;  /* stays "started": calls run alone, as without a helper */
    }
    pthread_attr_destroy(&attr);
    return 1;
}

/* A split call: acquire, then run, then release (always, also after a 0).
 *
 * rnn_pool_acquire counts the call as in flight and returns 1 when the caller
 * now owns the pool: no other split call in flight, the helper thread exists,
 * and it is awake or (want_wake, a call long enough to pay for it) being
 * woken; each of the chunks has scratch_bytes of 64-byte aligned scratch
 * (rnn_pool_scratch) until release. 0: the caller runs its serial kernel. */
static int rnn_pool_acquire(int chunks, size_t scratch_bytes, int want_wake)
{
    int zero = 0;
    if (atomic_fetch_add(&rnn_pool.in_flight, 1) != 0)
        return 0;
    if (!atomic_compare_exchange_strong(&rnn_pool.busy, &zero, 1))
        return 0;
    if (!rnn_pool_start() || (!want_wake && atomic_load(&rnn_pool.sleeping))) {
        atomic_store(&rnn_pool.busy, 0);
        return 0;
    }
    scratch_bytes = (scratch_bytes + 63) & ~(size_t)63;
    if (scratch_bytes * (size_t)chunks > rnn_pool.scratch_capacity) {
        /* grown by the owner only, before the helper can see the job; kept
         * for later calls (one buffer per process, the largest asked for) */
        void* p = NULL;
        free(rnn_pool.scratch);
        rnn_pool.scratch = NULL;
        rnn_pool.scratch_capacity = 0;
        if (posix_memalign(&p, 64, scratch_bytes * (size_t)chunks) != 0) {
            atomic_store(&rnn_pool.busy, 0);
            return 0;
        }
        rnn_pool.scratch = (char*)p;
        rnn_pool.scratch_capacity = scratch_bytes * (size_t)chunks;
    }
    rnn_pool.scratch_stride = scratch_bytes;
    atomic_fetch_add_explicit(&rnn_pool.split_calls, 1, memory_order_relaxed);
    if (atomic_load(&rnn_pool.sleeping)) {
        pthread_mutex_lock(&rnn_pool.lock);
        pthread_cond_signal(&rnn_pool.cond);
        pthread_mutex_unlock(&rnn_pool.lock);
    }
    return 1;
}

static void* rnn_pool_scratch(int chunk)
{
    return rnn_pool.scratch + (size_t)chunk * rnn_pool.scratch_stride;
}

/* Run stages x chunks tickets on the owner and the helper; returns when all
 * are done. Only after rnn_pool_acquire returned 1. */
static void rnn_pool_run(rnn_chunk_fn fn, void* ctx, int stages, int chunks)
{
    uint64_t s = atomic_load(&rnn_pool.state);
    uint32_t gen = (uint32_t)(s >> 32) + 1;
    /* Publish: the fields first, then the new generation with ticket 0. */
    rnn_pool.fn = fn;
    rnn_pool.ctx = ctx;
    rnn_pool.chunks = chunks;
    rnn_pool.total = (uint32_t)stages * (uint32_t)chunks;
    atomic_store(&rnn_pool.done, 0);
    atomic_store(&rnn_pool.state, (uint64_t)gen << 32);
    rnn_pool_work(gen, 0);
    /* Every ticket is taken; wait for the helper's last ones. */
    while (atomic_load_explicit(&rnn_pool.done, memory_order_acquire) < (int)rnn_pool.total)
        RNN_POOL_PAUSE();
}

static void rnn_pool_release(int acquired)
{
    if (acquired)
        atomic_store(&rnn_pool.busy, 0);
    atomic_fetch_sub(&rnn_pool.in_flight, 1);
}

static long long rnn_pool_helper_tickets(void)
{
    return atomic_load(&rnn_pool.helper_tickets);
}

static long long rnn_pool_split_calls(void)
{
    return atomic_load(&rnn_pool.split_calls);
}

#else /* no threads: calls run their serial kernels */
#define RNNENGINE_HAVE_POOL 0
static int rnn_pool_acquire(int chunks, size_t scratch_bytes, int want_wake)
{
    (void)chunks; (void)scratch_bytes; (void)want_wake;
    return 0;
}
static void* rnn_pool_scratch(int chunk) { (void)chunk; return 0; }
static void rnn_pool_run(rnn_chunk_fn fn, void* ctx, int stages, int chunks)
{
    rnn_pool_serial(fn, ctx, stages, chunks);
}
static void rnn_pool_release(int acquired) { (void)acquired; }
static long long rnn_pool_helper_tickets(void) { return 0; }
static long long rnn_pool_split_calls(void) { return 0; }
#endif

/* What _cy_blas exports to the kernel modules (one pool per process). */
typedef struct {
    int (*acquire)(int chunks, size_t scratch_bytes, int want_wake);
    void* (*scratch)(int chunk);
    void (*run)(rnn_chunk_fn fn, void* ctx, int stages, int chunks);
    void (*release)(int acquired);
} rnn_pool_api_t;

static rnn_pool_api_t rnn_pool_api = {
    rnn_pool_acquire, rnn_pool_scratch, rnn_pool_run, rnn_pool_release,
};

#endif /* RNNENGINE_STEP_POOL_H */
