/* Ctrl-C during a long kernel call: compiled into rnnengine.kernels._cy_blas
 * only (one copy of this state per process), reached by every kernel module
 * through the capsule _cy_blas._interrupt_api (src/_blas.pxd, _load_interrupt).
 *
 * Why: a kernel call runs without the GIL, and Python runs a signal's handler
 * only when the main thread is back in the interpreter, so SIGINT during a
 * 3 s call was seen after 3 s. Around a long call made by the main thread
 * (rn_watch_begin / rn_watch_end), our own SIGINT handler is installed: it
 * sets rn_stop and chains to the handler it replaced (Python's, which trips
 * Python's own flag, so the KeyboardInterrupt is Python's usual one). The
 * kernels' time loops read rn_stop at every step and leave the loop; the
 * driver then restores the handler and lets Python raise.
 *
 * Only the threads working for the watched call stop: each marks itself
 * (rn_watched, thread-local: the main thread at begin, a worker of the
 * call's parallel region when it starts its block), so a call another Python
 * thread makes at the same time runs to its end, unaffected. Python's handler
 * for SIGINT must be its default (KeyboardInterrupt, checked by the caller):
 * a handler that does not raise would see the call cut short with nothing
 * telling it, so then nothing is installed and SIGINT waits as before. */
#ifndef RNNENGINE_INTERRUPT_H
#define RNNENGINE_INTERRUPT_H

#include <signal.h>
#include <string.h>

#if defined(_MSC_VER)
#define RN_THREAD_LOCAL __declspec(thread)
#else
#define RN_THREAD_LOCAL __thread
#endif

typedef struct {
    volatile sig_atomic_t* stop;  /* nonzero: a SIGINT arrived during the watched call */
    int (*watched)(void);         /* whether this thread works for the watched call */
    void (*set_watched)(int on);  /* a parallel region's worker joins (1) or leaves (0) it */
    int (*begin)(void);           /* rn_watch_begin */
    int (*end)(void);             /* rn_watch_end */
    long long min_work;           /* multiply-adds from which a call is watched: ~10 ms here;
                                     two sigaction calls cost about a microsecond */
} rn_interrupt_api_t;

static volatile sig_atomic_t rn_stop = 0;
static RN_THREAD_LOCAL int rn_watched = 0;

static int rn_thread_watched(void) { return rn_watched; }
static void rn_set_watched(int on) { rn_watched = on; }

#if defined(__unix__) || defined(__APPLE__)
#define RNNENGINE_HAVE_INTERRUPT 1
static struct sigaction rn_prev_sigint;
static int rn_watching = 0;  /* only the main thread, holding the GIL, changes it */

static void rn_on_sigint(int sig, siginfo_t* info, void* context) {
    rn_stop = 1;
    if (rn_prev_sigint.sa_flags & SA_SIGINFO) {
        if (rn_prev_sigint.sa_sigaction) rn_prev_sigint.sa_sigaction(sig, info, context);
    } else if (rn_prev_sigint.sa_handler != SIG_DFL && rn_prev_sigint.sa_handler != SIG_IGN) {
        rn_prev_sigint.sa_handler(sig);
    }
}

/* 1 when this call watches (the handler installed), 0 when a call already
 * does or the handler cannot be replaced. The caller holds the GIL and is
 * the main thread. */
static int rn_watch_begin(void) {
    struct sigaction mine;
    if (rn_watching) return 0;
    memset(&mine, 0, sizeof mine);
    mine.sa_sigaction = rn_on_sigint;
    mine.sa_flags = SA_SIGINFO | SA_ONSTACK;
    sigemptyset(&mine.sa_mask);
    rn_stop = 0;
    if (sigaction(SIGINT, &mine, &rn_prev_sigint) != 0) return 0;
    if (!(rn_prev_sigint.sa_flags & SA_SIGINFO) &&
        (rn_prev_sigint.sa_handler == SIG_DFL || rn_prev_sigint.sa_handler == SIG_IGN)) {
        sigaction(SIGINT, &rn_prev_sigint, NULL);  /* not Python's: leave it alone */
        return 0;
    }
    rn_watching = 1;
    rn_watched = 1;
    return 1;
}

/* Restores the handler; 1 when a SIGINT arrived meanwhile. */
static int rn_watch_end(void) {
    int stopped;
    sigaction(SIGINT, &rn_prev_sigint, NULL);
    rn_watching = 0;
    rn_watched = 0;
    stopped = rn_stop != 0;
    rn_stop = 0;
    return stopped;
}
#else
#define RNNENGINE_HAVE_INTERRUPT 0
static int rn_watch_begin(void) { return 0; }
static int rn_watch_end(void) { return 0; }
#endif

static rn_interrupt_api_t rn_interrupt_api = {&rn_stop, rn_thread_watched, rn_set_watched,
                                              rn_watch_begin, rn_watch_end, 1LL << 25};

#endif
