# cython: language_level=3
# Splitting a batch-1 sequence over two cores (the caller and one helper
# thread): each timestep's units are cut into chunks, and every chunk computes
# its columns of the recurrent product and its units' gates, so two cores
# each stream half of the recurrent kernel from L2. The job runner, shared by
# every kernel module, is src/_step_pool.h (compiled into _cy_blas, reached
# here through a capsule); it explains why a caller never waits for the
# helper to arrive, and how it decides, by timing both, whether a kind of
# call runs faster split or alone. float32 forward (inference) only: that is
# where batch-1 latency matters, and float64 keeps one code path.
#
# Measured here (bench/batch1_split.py, public API, 2 vCPUs): an LSTM-128 over
# 50 steps 153 -> 104 us, a GRU-128 114 -> 74 us, LSTM-256 1.6-1.85x, when the
# two vCPUs sit on separate cores; on one core's hyperthreads no gain.
#
# When: at most SMALL_BATCH rows (more take the batch split or the tiled
# pass), at least rnnengine_split_min_step weights in the recurrent kernel
# (H x G: 2**15, 128 KB of float32, about 1 us a step to stream: below it
# the per-step meeting, ~0.1-0.2 us, eats the gain), at least 4 steps (a call
# may pack its weights first), two threads allowed by set_num_threads, and
# not already inside a parallel region.
from cpython.pycapsule cimport PyCapsule_GetPointer

from libc.string cimport memcpy, memset

from _blas cimport _recurrent_product, _stop_pending, _this_thread_watched, rnnengine_sgemm_small2
from _gates cimport rnnengine_gate_threads

ctypedef void (*rnn_chunk_fn)(void* ctx, int stage, int chunk) noexcept nogil
ctypedef struct rnn_pool_api_t:  # src/_step_pool.h
    int (*acquire)(const void* fn, int H, int B, int steps, int chunks, size_t scratch_bytes,
                   int want_wake) noexcept nogil
    void* (*scratch)(int chunk) noexcept nogil
    void (*run)(rnn_chunk_fn fn, void* ctx, int stages, int chunks) noexcept nogil
    void (*release)(int acquired) noexcept nogil

cdef extern from *:
    """
    #ifdef _OPENMP
    #include <omp.h>
    static int rnnengine_in_parallel(void) { return omp_in_parallel(); }
    #else
    static int rnnengine_in_parallel(void) { return 0; }
    #endif
    static void* rnnengine_pool = 0;
    static long long rnnengine_split_min_step = 1LL << 15;
    static long long rnnengine_split_wake_work = 1LL << 20;
    #if defined(__GNUC__) || defined(__clang__)
    #define rnnengine_prefetch(p) __builtin_prefetch((p), 0, 3)
    #else
    #define rnnengine_prefetch(p) ((void)(p))
    #endif
    """
    int rnnengine_in_parallel() noexcept nogil
    void* rnnengine_pool
    long long rnnengine_split_min_step
    long long rnnengine_split_wake_work
    void rnnengine_prefetch(const void* p) noexcept nogil


cdef enum:
    SPLIT_CHUNKS = 2  # the caller and one helper
    SPLIT_MAX_BH = 2048  # B * H at most: the state buffers live on the caller's stack (~25 KB)
    SPLIT_ALIGN = 16  # chunks start at a multiple of 16 units (64-byte columns)
    SPLIT_MAX_ROWS = 4  # = SMALL_BATCH of _blas.pxd
    SPLIT_MIN_STEPS = 4  # a call packs its weights once (~1 us): not worth it for fewer
    # A chunk's own pre-activations (B, gates, n) on its thread's stack: n is
    # at most H / 2 + SPLIT_ALIGN, so 4 gates take 2 * B * H + 4 * 4 * 16
    # floats at most, plus 16 to align the start to a cache line.
    SPLIT_ZBUF = 2 * SPLIT_MAX_BH + 4 * SPLIT_MAX_ROWS * SPLIT_ALIGN + 16
    # The split's state (two h buffers and c, rows padded to SPLIT_ALIGN).
    SPLIT_STATE = 3 * (SPLIT_MAX_BH + SPLIT_MAX_ROWS * SPLIT_ALIGN) + 16


cdef inline float* _cache_aligned(float* buf) noexcept nogil:
    """The first 64-byte boundary in buf (buf holds 16 floats more than used)."""
    return <float*>((<size_t>buf + 63) & ~(<size_t>63))


cdef inline Py_ssize_t _padded_units(Py_ssize_t H) noexcept nogil:
    return (H + SPLIT_ALIGN - 1) // SPLIT_ALIGN * SPLIT_ALIGN


cdef inline void _pad_rows(float* dst, const float* src, Py_ssize_t B, Py_ssize_t H,
                           Py_ssize_t Hp) noexcept nogil:
    """dst (B, Hp) = src (B, H), the padding zeroed (it is read as h columns
    past H by nobody, but kept finite)."""
    cdef Py_ssize_t b
    for b in range(B):
        memcpy(dst + b * Hp, src + b * H, H * sizeof(float))
        if Hp > H:
            memset(dst + b * Hp + H, 0, (Hp - H) * sizeof(float))


cdef inline void _unpad_rows(float* dst, const float* src, Py_ssize_t B, Py_ssize_t H,
                             Py_ssize_t Hp) noexcept nogil:
    cdef Py_ssize_t b
    for b in range(B):
        memcpy(dst + b * H, src + b * Hp, H * sizeof(float))


cdef inline int _load_pool() except -1:
    """At module import: the shared job runner (NULL where _cy_blas has none)."""
    global rnnengine_pool
    import importlib
    try:
        # importlib, not PyCapsule_Import: that one only getattr()s past the
        # top-level package, and rnnengine.kernels is still importing.
        capsule = importlib.import_module("rnnengine.kernels._cy_blas")._pool_api
        rnnengine_pool = PyCapsule_GetPointer(capsule, b"rnnengine.kernels._cy_blas._pool_api")
    except Exception:
        rnnengine_pool = NULL
    return 0


cdef inline int _set_split_thresholds(long long min_step, long long wake_work) except -1:
    global rnnengine_split_min_step, rnnengine_split_wake_work
    if min_step < 0 or wake_work < 0:
        raise ValueError(f"set_split_thresholds: expected values >= 0, got {min_step}, {wake_work}.")
    rnnengine_split_min_step = min_step
    rnnengine_split_wake_work = wake_work
    return 0


cdef inline int _split_chunks(Py_ssize_t B, Py_ssize_t T, Py_ssize_t H,
                              Py_ssize_t G) noexcept nogil:
    """Chunks a float32 call of B rows, T steps, H units and G gate columns may
    be cut into; 1 means the serial kernel."""
    if rnnengine_pool == NULL or rnnengine_gate_threads < 2:
        return 1
    if B > SPLIT_MAX_ROWS or B * H > SPLIT_MAX_BH or H < 2 * SPLIT_ALIGN or T < SPLIT_MIN_STEPS:
        return 1
    if H * G < rnnengine_split_min_step or rnnengine_in_parallel():
        return 1
    return SPLIT_CHUNKS


cdef inline Py_ssize_t _unit_bound(Py_ssize_t H, int chunk, int chunks) noexcept nogil:
    """First unit of chunk (H for chunk == chunks): equal shares, each starting
    at a multiple of SPLIT_ALIGN."""
    if chunk >= chunks:
        return H
    return (H * chunk // chunks) // SPLIT_ALIGN * SPLIT_ALIGN


cdef inline bint _needs_pack(const float* recurrent_kernel, Py_ssize_t H) noexcept nogil:
    """Whether a chunk's columns of the recurrent kernel start mid cache line:
    the kernel's rows are not 64-byte aligned (a layer's own weights are,
    rnnengine/_validation.aligned_empty; training's flat views may not be) or
    H is not a multiple of 16. Such columns run 1.5x slower in place (a 64-float
    row segment spans 5 lines, every load split; measured), so each call then
    packs them first (_pack_columns), which costs about a step's time."""
    return (<size_t>recurrent_kernel) % 64 != 0 or H % SPLIT_ALIGN != 0


cdef inline Py_ssize_t _chunk_scratch(const float* recurrent_kernel, Py_ssize_t H,
                                      Py_ssize_t gates, int chunks) noexcept nogil:
    """Floats of scratch a chunk needs: its packed recurrent-kernel columns, or
    none where they are read in place."""
    if not _needs_pack(recurrent_kernel, H):
        return 0
    return gates * H * (H - _unit_bound(H, chunks - 1, chunks))


cdef inline int _pool_acquire(rnn_chunk_fn fn, Py_ssize_t H, Py_ssize_t B, Py_ssize_t T,
                              int chunks, Py_ssize_t scratch_floats,
                              long long work) noexcept nogil:
    """How a split-eligible call runs (src/_step_pool.h, rnn_pool_acquire): 1
    split, 2 alone (timed: the pool measures which is faster for this kind of
    call), 0 alone (another call owns the pool, or its helper sleeps and this
    call is too short to wake it: under rnnengine_split_wake_work
    multiply-adds, about 10 us). Pair with _pool_release(answer) either way."""
    return (<rnn_pool_api_t*>rnnengine_pool).acquire(
        <const void*>fn, <int>H, <int>B, <int>T, chunks, <size_t>scratch_floats * sizeof(float),
        work >= rnnengine_split_wake_work)


cdef inline float* _pool_scratch(int chunk) noexcept nogil:
    return <float*>(<rnn_pool_api_t*>rnnengine_pool).scratch(chunk)


cdef inline void _pool_run(rnn_chunk_fn fn, void* ctx, Py_ssize_t stages, int chunks) noexcept nogil:
    (<rnn_pool_api_t*>rnnengine_pool).run(fn, ctx, <int>stages, chunks)


cdef inline void _pool_release(int acquired) noexcept nogil:
    (<rnn_pool_api_t*>rnnengine_pool).release(acquired)


cdef inline void _pack_columns(float* dst, const float* w, Py_ssize_t K, Py_ssize_t ldw,
                               Py_ssize_t H, Py_ssize_t gates, Py_ssize_t u0,
                               Py_ssize_t n) noexcept nogil:
    """dst (gates, K, n) = w[:K, g * H + u0 : g * H + u0 + n] for each gate g:
    one chunk's columns of a recurrent kernel, each gate's panel contiguous so
    that a step streams it front to back (the kernel's own rows, cut to n
    columns, would start mid cache line wherever NumPy put the array: 1.5x
    slower, measured)."""
    cdef Py_ssize_t g, k, j
    cdef float* d
    cdef const float* src
    for g in range(gates):
        for k in range(K):
            # a loop, not memcpy: 4 * K calls of 256 bytes took ~10 us a call
            d = dst + (g * K + k) * n
            src = w + k * ldw + g * H + u0
            for j in range(n):
                d[j] = src[j]


ctypedef struct SplitCall:
    # One float32 forward call cut into chunks of units: stage 0 projects the
    # input and packs each chunk's recurrent-kernel columns (_split_stage0),
    # stage 1 + s runs timestep s (the cell's chunk function). The state lives
    # in the split's own buffers, rows Hp (H rounded up to 16) apart from a
    # cache-line boundary, so that no two chunks write to one cache line.
    float* y_out
    float* hs[2]  # (B, Hp): h_tm1 of even steps, then of odd steps
    float* c  # (B, Hp): an LSTM's cell state, else unused
    float* xproj  # (B, T, G); NULL: fused steps (bias + x_t @ kernel + h @ W per chunk)
    const float* x
    const float* kernel  # (C, G)
    const float* recurrent_kernel  # (H, G)
    const float* bias  # (G,)
    const float* recurrent_bias  # (G,): a GRU's, else NULL
    Py_ssize_t B, T, C, H, Hp, G, gates
    int activation, recurrent_activation, chunks
    bint go_backwards, return_sequences
    bint packed  # the chunks read their columns from packed panels (_needs_pack)
    bint watched  # the caller works for a watched call: a SIGINT skips the steps left (_blas.pxd)


cdef inline void _split_begin(SplitCall* a, float* state, float* y_out, const float* h,
                              const float* c, float* xproj, const float* x,
                              const float* kernel, const float* recurrent_kernel,
                              const float* bias, const float* recurrent_bias,
                              Py_ssize_t B, Py_ssize_t T, Py_ssize_t C, Py_ssize_t H,
                              Py_ssize_t gates, int activation, int recurrent_activation,
                              bint go_backwards, bint return_sequences,
                              int chunks) noexcept nogil:
    """Fill a for one call; state holds SPLIT_STATE floats (the caller's stack)."""
    cdef Py_ssize_t Hp = _padded_units(H)
    a.watched = _this_thread_watched()
    a.hs[0] = _cache_aligned(state)
    a.hs[1] = a.hs[0] + B * Hp
    a.c = a.hs[1] + B * Hp
    _pad_rows(a.hs[0], h, B, H, Hp)
    if c != NULL:
        _pad_rows(a.c, c, B, H, Hp)
    a.y_out = y_out
    a.xproj = xproj
    a.x = x
    a.kernel = kernel
    a.recurrent_kernel = recurrent_kernel
    a.bias = bias
    a.recurrent_bias = recurrent_bias
    a.B = B
    a.T = T
    a.C = C
    a.H = H
    a.Hp = Hp
    a.G = gates * H
    a.gates = gates
    a.activation = activation
    a.recurrent_activation = recurrent_activation
    a.chunks = chunks
    a.go_backwards = go_backwards
    a.return_sequences = return_sequences
    a.packed = _needs_pack(recurrent_kernel, H)


cdef inline void _split_end(SplitCall* a, float* h, float* c) noexcept nogil:
    """The final state back into the caller's h (and c)."""
    _unpad_rows(h, a.hs[a.T % 2], a.B, a.H, a.Hp)
    if c != NULL:
        _unpad_rows(c, a.c, a.B, a.H, a.Hp)


cdef inline void _split_input_product(float* xproj, const float* x, const float* kernel,
                                      Py_ssize_t rows, Py_ssize_t C, Py_ssize_t G, int chunk,
                                      int chunks) noexcept nogil:
    """xproj rows r0:r1 (chunk's share of rows) = x[r0:r1] @ kernel: the same
    product as a step's h @ W (the tiled kernel where the build has it, so the
    helper thread makes no BLAS call). It is row-invariant, so a split-eligible
    call that runs alone gets the same bits from one _recurrent_product over
    all its rows: whether it splits (decided by timing, src/_step_pool.h) never
    changes them."""
    cdef Py_ssize_t r0 = rows * chunk // chunks
    cdef Py_ssize_t r1 = rows * (chunk + 1) // chunks
    if r1 > r0:
        _recurrent_product(xproj + r0 * G, x + r0 * C, kernel, <int>(r1 - r0),
                           <int>C, <int>G, <int>G, <int>G)


cdef inline void _split_stage0(SplitCall* a, int chunk, Py_ssize_t u0, Py_ssize_t n) noexcept nogil:
    """xproj rows r0:r1 (of B * T) = x[r0:r1] @ kernel (rows, not columns, so
    the two chunks share at most one cache line), and where the call packs,
    this chunk's columns of the recurrent kernel into its scratch."""
    if a.xproj != NULL:
        _split_input_product(a.xproj, a.x, a.kernel, a.B * a.T, a.C, a.G, chunk, a.chunks)
    if a.packed:
        _pack_columns(_pool_scratch(chunk), a.recurrent_kernel, a.H, a.G, a.H, a.gates, u0, n)


cdef inline void _split_product(SplitCall* a, float* z, const float* h_cur, int chunk,
                                Py_ssize_t u0, Py_ssize_t n, Py_ssize_t t) noexcept nogil:
    """z (B, gates, n) = h_tm1 @ this chunk's columns, gate by gate: from its
    packed panel (each gate's (H, n) contiguous) or in place. A fused call
    (xproj NULL) adds bias + x_t @ kernel's columns in the same tiled pass, as
    the unsplit step does (_step_product): the same sums in the same order,
    so a split call's bits are the unsplit call's."""
    cdef const float* w
    cdef Py_ssize_t b, g, ldw, j
    # h_tm1's other half was just written by the other core: ask for all its
    # cache lines at once, rather than miss on them one by one in the k loop.
    for b in range(a.B):
        for j in range(0, a.H, 16):
            rnnengine_prefetch(h_cur + b * a.Hp + j)
    for b in range(a.B):
        for g in range(a.gates):
            if a.packed:
                w = <const float*>_pool_scratch(chunk) + g * a.H * n
                ldw = n
            else:
                w = a.recurrent_kernel + g * a.H + u0
                ldw = a.G
            if a.xproj == NULL:
                rnnengine_sgemm_small2(1, <int>n, a.bias + g * a.H + u0,
                                       <int>a.C, a.x + (b * a.T + t) * a.C, <int>a.C,
                                       a.kernel + g * a.H + u0, <int>a.G,
                                       <int>a.H, h_cur + b * a.Hp, <int>a.Hp, w, <int>ldw,
                                       z + (b * a.gates + g) * n, <int>(a.gates * n))
            else:
                _recurrent_product(z + (b * a.gates + g) * n, h_cur + b * a.Hp, w, 1, <int>a.H,
                                   <int>n, <int>ldw, <int>(a.gates * n))


cdef inline bint _split_step(SplitCall* a, float* z, int stage, int chunk, Py_ssize_t* u0,
                             Py_ssize_t* n, Py_ssize_t* s, Py_ssize_t* t) noexcept nogil:
    """The shared part of a ticket: this chunk's units u0 : u0 + n. Stage 0
    projects and packs (_split_stage0) and answers False. A step's stage sets
    s (the step) and t (its input time), computes z (B, gates, n) = h_tm1 @
    this chunk's columns and answers True: the cell then writes its units' new
    state into hs[1 - s % 2] and calls _split_output."""
    u0[0] = _unit_bound(a.H, chunk, a.chunks)
    n[0] = _unit_bound(a.H, chunk + 1, a.chunks) - u0[0]
    if stage == 0:
        _split_stage0(a, chunk, u0[0], n[0])
        return False
    if a.watched and _stop_pending():  # both threads skip the steps left: the driver raises
        return False
    s[0] = stage - 1
    t[0] = a.T - 1 - s[0] if a.go_backwards else s[0]
    _split_product(a, z, a.hs[s[0] % 2], chunk, u0[0], n[0], t[0])
    return True


cdef inline void _split_call(rnn_chunk_fn fn, float* y_out, float* h, float* c, float* xproj,
                             const float* x, const float* kernel,
                             const float* recurrent_kernel, const float* bias,
                             const float* recurrent_bias, Py_ssize_t B, Py_ssize_t T,
                             Py_ssize_t C, Py_ssize_t H, Py_ssize_t gates, int activation,
                             int recurrent_activation, bint go_backwards,
                             bint return_sequences, int chunks) noexcept nogil:
    """One forward call split: T + 1 stages of chunks tickets of fn (the cell's
    chunk function) on the pool, after _pool_acquire answered 1. c and
    recurrent_bias may be NULL (not an LSTM, not a GRU)."""
    cdef float state[SPLIT_STATE]
    cdef SplitCall job[3]  # job[1] is used: its neighbours keep its cache lines read-only
    _split_begin(&job[1], state, y_out, h, c, xproj, x, kernel, recurrent_kernel, bias,
                 recurrent_bias, B, T, C, H, gates, activation, recurrent_activation,
                 go_backwards, return_sequences, chunks)
    _pool_run(fn, &job[1], T + 1, chunks)
    _split_end(&job[1], h, c)


cdef inline void _split_output(SplitCall* a, const float* h_nxt, Py_ssize_t s, Py_ssize_t u0,
                               Py_ssize_t n) noexcept nogil:
    """y_out[:, s] (every step) or y_out[:, 0] (last step only) = h, this chunk's units."""
    cdef Py_ssize_t b
    if a.return_sequences:
        for b in range(a.B):
            memcpy(a.y_out + (b * a.T + s) * a.H + u0, h_nxt + b * a.Hp + u0, n * sizeof(float))
    elif s == a.T - 1:
        for b in range(a.B):
            memcpy(a.y_out + b * a.H + u0, h_nxt + b * a.Hp + u0, n * sizeof(float))
