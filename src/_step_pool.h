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
 * only if it has enough work to pay for the wake-up (want_wake). It also
 * sleeps when calls keep running alone beside it (another Python thread's
 * call owns the pool), rather than take their core.
 *
 * Without POSIX threads (or C11 atomics) rnn_pool_acquire always answers 0:
 * every call runs its serial kernel.
 */
#ifndef RNNENGINE_STEP_POOL_H
#define RNNENGINE_STEP_POOL_H

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* One ticket's work: stage (0 .. stages-1) and chunk (0 .. chunks-1). */
typedef void (*rnn_chunk_fn)(void* ctx, int stage, int chunk);

#if defined(__unix__) && !defined(__STDC_NO_ATOMICS__) && !defined(RNNENGINE_NO_POOL)
#define RNNENGINE_HAVE_POOL 1
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <time.h>
#include <unistd.h>

/* Spins re-read, without the pause instruction: the waits are short (the
 * other half of a step is about a microsecond away), and in a VM a long run
 * of pause instructions can trip the hypervisor's pause-loop exit, which
 * deschedules the spinning vCPU just when its partner needs it. */
#define RNN_POOL_PAUSE() __asm__ __volatile__("" ::: "memory")

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
                 * Python thread's, or the owner's timed alone): sleep rather
                 * than spin beside them, where a vCPU may be a hyperthread
                 * sibling of theirs, and so that a lone call is timed as it
                 * would run without a helper. */
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
    int expected = 0, created;
    pthread_t thread;
    pthread_attr_t attr;
    sigset_t all, old;
    if (atomic_load(&rnn_pool.started))
        return 1;
    if (!atomic_compare_exchange_strong(&rnn_pool.started, &expected, 1))
        return 1;
    if (!atomic_exchange(&atfork_done, 1))
        pthread_atfork(NULL, NULL, rnn_pool_after_fork_child);
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&attr, 1 << 20);
    /* The helper blocks every signal (it inherits the mask it is created
     * with): a process-directed signal such as SIGINT goes to a thread that
     * can run Python's handler, never to one that spins in C. */
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    created = pthread_create(&thread, &attr, rnn_pool_helper, NULL) == 0;
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    pthread_attr_destroy(&attr);
    return created;  /* not created: stays "started", calls run alone */
}

/* Whether splitting pays is measured, not assumed: on a VM whose two vCPUs
 * the host sometimes places on one physical core's SMT siblings, two threads
 * share one L2's bandwidth and a split call ran 15-20% slower than alone
 * (measured here; on separate cores 1.5x faster). So the owner of the pool
 * times its calls, split and alone, per kind of call (the kernel's chunk
 * function, H and B), keeps a moving average of each's time per step, and
 * takes the faster; every RNN_TUNE_EXPLORE calls it tries the other, so a
 * change of placement is noticed. adaptive = 0 (tests): always split. */
#define RNN_TUNE_SLOTS 32
#define RNN_TUNE_EXPLORE 16
#define RNN_TUNE_FIRST 3   /* calls of each mode before choosing */

typedef struct {
    const void* fn;
    int H, B;
    unsigned calls;
    unsigned n[2];       /* timed calls: [0] alone, [1] split */
    double ns_step[2];   /* their moving average, ns per step */
} rnn_tune_t;

static rnn_tune_t rnn_tune[RNN_TUNE_SLOTS];  /* touched only by the pool's owner */
static int rnn_tune_next = 0;
static _Atomic int rnn_pool_adaptive = 1;
static rnn_tune_t* rnn_tune_current = NULL;  /* the owner's slot, until release */
static long long rnn_tune_start_ns = 0;
static int rnn_tune_mode = 0;
static int rnn_tune_record = 1;
static int rnn_tune_steps = 0;

static rnn_tune_t* rnn_tune_slot(const void* fn, int H, int B)
{
    int i;
    rnn_tune_t* t;
    for (i = 0; i < RNN_TUNE_SLOTS; i++) {
        t = &rnn_tune[i];
        if (t->fn == fn && t->H == H && t->B == B)
            return t;
    }
    t = &rnn_tune[rnn_tune_next];  /* the oldest kind makes room */
    rnn_tune_next = (rnn_tune_next + 1) % RNN_TUNE_SLOTS;
    memset(t, 0, sizeof *t);
    t->fn = fn;
    t->H = H;
    t->B = B;
    return t;
}

/* A split-eligible call: acquire, run (split or alone, as told), release.
 *
 * rnn_pool_acquire counts the call as in flight. It returns 0 when another
 * split-eligible call is in flight, the helper thread cannot start, or the
 * helper sleeps and the call is too short to wake it (want_wake = 0): the
 * caller runs its serial kernel and need not report. Otherwise the caller owns
 * the pool until release, and the answer says how to run: 1 split (the
 * helper is woken by rnn_pool_run; each of the chunks has scratch_bytes of
 * 64-byte aligned scratch, rnn_pool_scratch), 2 alone (the serial kernel,
 * timed). fn, H, B and steps name the kind of call and its length. */
static int rnn_pool_acquire(const void* fn, int H, int B, int steps, int chunks,
                            size_t scratch_bytes, int want_wake)
{
    int zero = 0, mode;
    rnn_tune_t* t;
    if (atomic_fetch_add(&rnn_pool.in_flight, 1) != 0)
        return 0;
    if (!atomic_compare_exchange_strong(&rnn_pool.busy, &zero, 1))
        return 0;
    if (!rnn_pool_start() || (!want_wake && atomic_load(&rnn_pool.sleeping))) {
        atomic_store(&rnn_pool.busy, 0);
        return 0;
    }
    t = rnn_tune_slot(fn, H, B);
    t->calls++;
    rnn_tune_record = 1;
    if (!atomic_load(&rnn_pool_adaptive) || t->n[1] < RNN_TUNE_FIRST)
        mode = 1;
    else if (t->n[0] < RNN_TUNE_FIRST)
        mode = 0;
    else {
        /* The faster, except two calls in a row every RNN_TUNE_EXPLORE: the
         * first of those only changes the conditions (wakes the sleeping
         * helper, or lets an awake one go to sleep) and is not recorded. */
        unsigned phase = t->calls % RNN_TUNE_EXPLORE;
        mode = t->ns_step[1] < t->ns_step[0];
        if (phase <= 1)
            mode = !mode;
        rnn_tune_record = phase != 0;
    }
    if (mode == 1) {
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
    }
    rnn_tune_current = t;
    rnn_tune_mode = mode;
    rnn_tune_steps = steps > 0 ? steps : 1;
    rnn_tune_start_ns = rnn_pool_now_ns();
    return mode == 1 ? 1 : 2;
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
    /* After the publish, never before: a helper woken earlier would find no
     * job and sleep again. (acquire only let a call with a sleeping helper
     * through if the call is long enough to wake it.) */
    if (atomic_load(&rnn_pool.sleeping)) {
        pthread_mutex_lock(&rnn_pool.lock);
        pthread_cond_signal(&rnn_pool.cond);
        pthread_mutex_unlock(&rnn_pool.lock);
    }
    rnn_pool_work(gen, 0);
    /* Every ticket is taken; wait for the helper's last ones. */
    while (atomic_load_explicit(&rnn_pool.done, memory_order_acquire) < (int)rnn_pool.total)
        RNN_POOL_PAUSE();
}

/* After any acquire, with its answer. */
static void rnn_pool_release(int acquired)
{
    if (acquired) {
        rnn_tune_t* t = rnn_tune_current;
        double ns = (double)(rnn_pool_now_ns() - rnn_tune_start_ns) / rnn_tune_steps;
        int m = rnn_tune_mode;
        /* the first timed call of each mode warms caches (and wakes the
         * helper): it only seeds the average */
        if (rnn_tune_record) {
            t->ns_step[m] = t->n[m] <= 1 ? ns : 0.875 * t->ns_step[m] + 0.125 * ns;
            t->n[m]++;
        }
        rnn_tune_current = NULL;
        atomic_store(&rnn_pool.busy, 0);
    }
    atomic_fetch_sub(&rnn_pool.in_flight, 1);
}

static void rnn_pool_set_adaptive(int on)
{
    atomic_store(&rnn_pool_adaptive, on);
}

/* Slot i of the timing table: 0 where it is empty (tests, bench). */
static int rnn_pool_tuning(int i, int* H, int* B, unsigned* calls, unsigned* n_alone,
                           unsigned* n_split, double* ns_alone, double* ns_split)
{
    rnn_tune_t* t;
    if (i < 0 || i >= RNN_TUNE_SLOTS || !rnn_tune[i].fn)
        return 0;
    t = &rnn_tune[i];
    *H = t->H; *B = t->B; *calls = t->calls; *n_alone = t->n[0]; *n_split = t->n[1];
    *ns_alone = t->ns_step[0]; *ns_split = t->ns_step[1];
    return 1;
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
static int rnn_pool_acquire(const void* fn, int H, int B, int steps, int chunks,
                            size_t scratch_bytes, int want_wake)
{
    (void)fn; (void)H; (void)B; (void)steps; (void)chunks; (void)scratch_bytes;
    (void)want_wake;
    return 0;
}
static void* rnn_pool_scratch(int chunk) { (void)chunk; return 0; }
static void rnn_pool_run(rnn_chunk_fn fn, void* ctx, int stages, int chunks)
{
    int s, c;  /* never called: acquire says 0 */
    for (s = 0; s < stages; s++)
        for (c = 0; c < chunks; c++)
            fn(ctx, s, c);
}
static void rnn_pool_release(int acquired) { (void)acquired; }
static void rnn_pool_set_adaptive(int on) { (void)on; }
static int rnn_pool_tuning(int i, int* H, int* B, unsigned* calls, unsigned* n_alone,
                           unsigned* n_split, double* ns_alone, double* ns_split)
{
    (void)i; (void)H; (void)B; (void)calls; (void)n_alone; (void)n_split;
    (void)ns_alone; (void)ns_split;
    return 0;
}
static long long rnn_pool_helper_tickets(void) { return 0; }
static long long rnn_pool_split_calls(void) { return 0; }
#endif

/* What _cy_blas exports to the kernel modules (one pool per process). */
typedef struct {
    int (*acquire)(const void* fn, int H, int B, int steps, int chunks,
                   size_t scratch_bytes, int want_wake);
    void* (*scratch)(int chunk);
    void (*run)(rnn_chunk_fn fn, void* ctx, int stages, int chunks);
    void (*release)(int acquired);
} rnn_pool_api_t;

static rnn_pool_api_t rnn_pool_api = {
    rnn_pool_acquire, rnn_pool_scratch, rnn_pool_run, rnn_pool_release,
};

#endif /* RNNENGINE_STEP_POOL_H */
