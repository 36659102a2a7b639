# Row-major GEMM for the Cython kernels, on top of SciPy's Fortran BLAS.
#
# Contract: this file (with _blas.pyx) is the only place in rnnengine that
# cimports scipy.linalg.cython_blas, as sklearn/utils/_cython_blas.pyx is for
# scikit-learn. Matrices are row-major (C order); a leading dimension is the row
# stride in elements, so a kernel can address a column block of a wider matrix
# (the first 2H columns of a (H, 3H) recurrent kernel) without copying it.
# Like every kernel helper, _gemm never allocates, never raises and needs no GIL.
#
# Design: _gemm is `cdef inline` here instead of being exported from the
# compiled rnnengine.kernels._cy_blas module through a C-API capsule. The
# kernels' sources live in src/ but their modules in rnnengine/kernels/; an
# exported function would have to be found as `_blas` by the Cython compiler
# and as `rnnengine.kernels._cy_blas` by the import machinery. Inline, the only
# link is compile-time (src/ is on the Cython include path, see setup.py), and
# the only run-time dependency is the one every build of SciPy provides,
# scipy.linalg.cython_blas, reached through its capsules. Each kernel module
# gets its own copy of these few lines; SciPy's OpenBLAS does the work.
# https://github.com/scikit-learn/scikit-learn/blob/main/sklearn/utils/_cython_blas.pyx
from cpython.exc cimport PyErr_CheckSignals
from cpython.pycapsule cimport PyCapsule_GetPointer
from cython cimport floating
from scipy.linalg.cython_blas cimport dgemm, dgemv, sgemm, sgemv


# BLAS transpose flags, as the characters Fortran BLAS reads ('n', 't').
cdef enum BLAS_Trans:
    NoTrans = 110
    Trans = 116


cdef inline void _gemm(BLAS_Trans ta, BLAS_Trans tb, int m, int n, int k,
                       floating alpha, const floating* A, int lda,
                       const floating* B, int ldb, floating beta,
                       floating* C, int ldc) noexcept nogil:
    """C = alpha * op(A) @ op(B) + beta * C, every matrix row-major.

    op(A) is (m, k), op(B) is (k, n) and C is (m, n); lda, ldb and ldc are the
    row strides of A, B and C as stored. beta = 0 overwrites C (BLAS never
    reads C then, so it may hold garbage or NaN).
    """
    # A row-major C is the column-major C^T = op(B)^T @ op(A)^T, and a
    # row-major X with row stride ldx is the column-major X^T with the same
    # leading dimension: swap the operands and m with n, keep the flags
    # (sklearn's _gemm, RowMajor branch).
    cdef char ta_ = <char>ta
    cdef char tb_ = <char>tb
    cdef int one = 1
    cdef int rows_b, cols_b
    if m <= 0 or n <= 0:
        return
    # Fortran BLAS rejects a leading dimension of 0 (xerbla prints and returns)
    # even when k = 0 makes it irrelevant.
    if lda < 1:
        lda = 1
    if ldb < 1:
        ldb = 1
    if m == 1 and ta == NoTrans and k > 0:
        # A is one contiguous row (batch size 1): C^T = op(B)^T @ A^T is a
        # matrix-vector product, and GEMV skips GEMM's packing of B, which
        # would dominate a (1, H) @ (H, K*H) step. Numba's np.dot does the same.
        # B as stored is column-major (cols_b, rows_b) with leading dimension ldb.
        rows_b = k if tb == NoTrans else n
        cols_b = n if tb == NoTrans else k
        if floating is float:
            sgemv(&tb_, &cols_b, &rows_b, &alpha, <float*>B, &ldb, <float*>A, &one,
                  &beta, C, &one)
        else:
            dgemv(&tb_, &cols_b, &rows_b, &alpha, <double*>B, &ldb, <double*>A, &one,
                  &beta, C, &one)
        return
    # SciPy declares the operands without const; BLAS only reads A and B.
    if floating is float:
        sgemm(&tb_, &ta_, &n, &m, &k, &alpha, <float*>B, &ldb, <float*>A, &lda,
              &beta, C, &ldc)
    else:
        dgemm(&tb_, &ta_, &n, &m, &k, &alpha, <double*>B, &ldb, <double*>A, &lda,
              &beta, C, &ldc)


cdef extern from "_rec_gemm.h":
    # float32 h @ W (every recurrent product, _rowinv_product): a register-tiled
    # kernel that reads W in place (why not sgemm: src/_rec_gemm.h); 0 where
    # the build has none.
    int rnnengine_sgemm_small(int M, int N, int K, const float* h, int ldh,
                              const float* w, int ldw, float* out, int ldo) noexcept nogil
    # out = bias + a1 @ w1 + a2 @ w2 in one pass (a step's x_t @ kernel and
    # h @ recurrent_kernel together); bias may be NULL.
    int rnnengine_sgemm_small2(int M, int N, const float* bias,
                               int K1, const float* a1, int lda1, const float* w1, int ldw1,
                               int K2, const float* a2, int lda2, const float* w2, int ldw2,
                               float* out, int ldo) noexcept nogil
    # 1 where this build has the vector kernel (GCC/Clang, any ISA build).
    int RNNENGINE_HAVE_REC_GEMM


cdef extern from *:
    """
    /* Deterministic mode (rnnengine.set_deterministic): _cy_blas owns the
     * flag; every kernel module points here at it once imported (_load_det). */
    static int rnnengine_det_own = 0;
    static int* rnnengine_det = &rnnengine_det_own;
    """
    int rnnengine_det_own
    int* rnnengine_det


cdef inline int _load_det() except -1:
    """At module import: share _cy_blas's deterministic-mode flag."""
    global rnnengine_det
    import importlib
    capsule = importlib.import_module("rnnengine.kernels._cy_blas")._det_flag
    rnnengine_det = <int*>PyCapsule_GetPointer(capsule, b"rnnengine.kernels._cy_blas._det_flag")
    return 0


cdef inline bint _det() noexcept nogil:
    """Deterministic mode: every product row- and column-invariant (_rowinv_product)."""
    return rnnengine_det[0] != 0


# Ctrl-C during a long call (src/_interrupt.h): a def that runs a long call
# brackets its nogil block with _watch / _unwatch; the time loops leave early
# when _stopped(); a parallel region's body starts with
# ``was = _join_watch(watched)`` and ends with ``_join_watch(was)``.
ctypedef struct interrupt_api_t:  # the layout of rn_interrupt_api_t in src/_interrupt.h
    volatile int* stop
    int (*watched)() noexcept nogil
    void (*set_watched)(int on) noexcept nogil
    int (*begin)() noexcept
    int (*end)() noexcept
    long long min_work

cdef extern from *:
    """
    static void* rnnengine_interrupt = 0;
    """
    void* rnnengine_interrupt


cdef inline int _load_interrupt() except -1:
    """At module import: share _cy_blas's interrupt state."""
    global rnnengine_interrupt
    import importlib
    capsule = importlib.import_module("rnnengine.kernels._cy_blas")._interrupt_api
    rnnengine_interrupt = PyCapsule_GetPointer(capsule, b"rnnengine.kernels._cy_blas._interrupt_api")
    return 0


cdef inline bint _stopped() noexcept nogil:
    """A SIGINT arrived during the watched call this thread works for."""
    cdef interrupt_api_t* api = <interrupt_api_t*>rnnengine_interrupt
    return api != NULL and api.stop[0] != 0 and api.watched() != 0


cdef inline bint _stop_pending() noexcept nogil:
    """A SIGINT arrived during the watched call (whichever thread asks: the
    batch-1 split's helper, for a caller that works for it)."""
    cdef interrupt_api_t* api = <interrupt_api_t*>rnnengine_interrupt
    return api != NULL and api.stop[0] != 0


cdef inline bint _this_thread_watched() noexcept nogil:
    """Whether this thread works for a watched call."""
    cdef interrupt_api_t* api = <interrupt_api_t*>rnnengine_interrupt
    return api != NULL and api.watched() != 0


cdef inline int _join_watch(int token) noexcept nogil:
    """A parallel region's body: ``was = _join_watch(watched)`` first (1 joins
    the caller's watched call), ``_join_watch(was)`` last; returns what this
    thread was before."""
    cdef interrupt_api_t* api = <interrupt_api_t*>rnnengine_interrupt
    cdef int was = 0
    if api != NULL:
        was = api.watched()
        api.set_watched(token)
    return was


cdef inline int _watch(long long work):
    """Before a long call's nogil block (GIL held): 1 when this call is
    watched. Only the main thread, only when SIGINT's handler is Python's
    default one (a KeyboardInterrupt), only for calls of api.min_work."""
    cdef interrupt_api_t* api = <interrupt_api_t*>rnnengine_interrupt
    if api == NULL or work < api.min_work:
        return 0
    import signal
    import threading
    if threading.current_thread() is not threading.main_thread() or \
            signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        return 0
    return api.begin()


cdef inline int _unwatch(int token) except -1:
    """After the nogil block: restore SIGINT's handler; raise KeyboardInterrupt
    (Python's handler's) when one arrived meanwhile."""
    cdef interrupt_api_t* api = <interrupt_api_t*>rnnengine_interrupt
    if token and api.end():
        PyErr_CheckSignals()  # runs Python's handler: KeyboardInterrupt
        raise KeyboardInterrupt
    return 0


cdef inline void _rowinv_product(floating* out, const floating* a, const floating* w,
                                 int M, int N, int K, int lda, int ldw,
                                 int ldo) noexcept nogil:
    """out[:M, :N] = a[:M, :K] @ w[:K, :N], each element summed in k order from
    zero whatever M, N and its position: a row's result does not depend on the
    rows beside it, nor a column's on the columns (unlike a BLAS GEMM, whose
    blocking follows the shape). float32 takes the tiled kernel; float64 (and a
    build without vector extensions) the plain loop, vectorized over columns."""
    cdef Py_ssize_t i, j, k
    cdef floating s
    cdef floating* o
    cdef const floating* wk
    if M <= 0 or N <= 0:
        return
    if floating is float:
        if rnnengine_sgemm_small(M, N, K, a, lda, w, ldw, out, ldo):
            return
    for i in range(M):
        o = out + i * ldo
        for j in range(N):
            o[j] = 0
        for k in range(K):
            s = a[i * lda + k]
            wk = w + k * ldw
            for j in range(N):
                o[j] += s * wk[j]


cdef inline void _input_product(floating* xproj, const floating* x, const floating* kernel,
                                Py_ssize_t rows, Py_ssize_t C, Py_ssize_t G) noexcept nogil:
    """xproj (rows, G) = x (rows, C) @ kernel (C, G): one GEMM, or in
    deterministic mode the row-invariant product."""
    if _det():
        _rowinv_product(xproj, x, kernel, <int>rows, <int>G, <int>C, <int>C, <int>G, <int>G)
    else:
        _gemm(NoTrans, NoTrans, <int>rows, <int>G, <int>C, 1, x, <int>C, kernel, <int>G, 0,
              xproj, <int>G)


# Up to this many rows the per-step recurrent product is a plain loop (an axpy
# over rows of the weight matrix, which the compiler vectorizes): a BLAS GEMM
# call costs about a microsecond of set-up, more than a batch-1 LSTM-128
# step's arithmetic. Same threshold as kernels/_numba_common.py.
cdef enum:
    SMALL_BATCH = 4


cdef inline void _recurrent_product(floating* out, const floating* h,
                                    const floating* weights, int B, int H, int N,
                                    int ldw, int ldo) noexcept nogil:
    """out[:, :N] = h (B, H) @ weights[:, :N]; weights' rows are ldw apart, out's ldo.

    float32 at every row count (and float64 in deterministic mode): the
    row-invariant tiled kernel. At batch 1 it keeps a strip of sums in
    registers over the whole k loop, where the four-row loop below reads and
    writes out once per four k: L1's LSTM 183 -> 159 us on one thread, 139 ->
    114 us split over two (bench/results/2026-12-04-isa.md's machine). And it
    makes a row's recurrent product the same bits at any batch size, and a
    column's at any column offset, so a batch-1 split (units cut in two)
    computes what the unsplit call does. float64: the loop up to SMALL_BATCH
    rows, else one GEMM."""
    cdef Py_ssize_t b, k, j
    cdef floating h0, h1, h2, h3
    cdef floating* o
    cdef const floating* hb
    cdef const floating* w0
    cdef const floating* w1
    cdef const floating* w2
    cdef const floating* w3
    if floating is float or _det():
        _rowinv_product(out, h, weights, B, N, H, H, ldw, ldo)
        return
    if B > SMALL_BATCH:
        _gemm(NoTrans, NoTrans, B, N, H, 1, h, H, weights, ldw, 0, out, ldo)
        return
    # Four weight rows per pass over out: out is read and written a quarter as
    # often as with one row a pass, and the step runs at the speed the weights
    # stream in from L2 (measured: 2.9 -> 2.2 us for an LSTM-128's 128 x 512).
    # Four separate row pointers, not w[2 * ldw + j]: Python's -fwrapv keeps GCC
    # from vectorizing that index arithmetic.
    for b in range(B):
        o = out + b * ldo
        hb = h + b * H
        for j in range(N):
            o[j] = 0
        k = 0
        while k + 4 <= H:
            h0 = hb[k]
            h1 = hb[k + 1]
            h2 = hb[k + 2]
            h3 = hb[k + 3]
            w0 = weights + k * ldw
            w1 = w0 + ldw
            w2 = w1 + ldw
            w3 = w2 + ldw
            for j in range(N):
                o[j] += h0 * w0[j] + h1 * w1[j] + h2 * w2[j] + h3 * w3[j]
            k += 4
        while k < H:
            h0 = hb[k]
            w0 = weights + k * ldw
            for j in range(N):
                o[j] += h0 * w0[j]
            k += 1


cdef inline bint _fused_step(const floating* x, Py_ssize_t B) noexcept nogil:
    """Whether a step of B rows in x's dtype takes _step_product: float32 at
    every row count, in a build with the vector kernel (x only picks the dtype).
    The batch-1 split fuses its chunks' steps the same way (src/_split.pxd), so
    a row's pre-activation is the same sums in the same order at any batch
    size, split or not (deterministic mode needs nothing more here)."""
    return floating is float and RNNENGINE_HAVE_REC_GEMM


cdef inline void _step_product(floating* rec, const floating* h, const floating* x,
                               const floating* kernel, const floating* recurrent_kernel,
                               const floating* bias, Py_ssize_t B, Py_ssize_t T,
                               Py_ssize_t C, Py_ssize_t H, Py_ssize_t N,
                               Py_ssize_t t) noexcept nogil:
    """rec[:, :N] = bias + x[:, t] @ kernel + h @ recurrent_kernel in one tiled
    pass: a SimpleRNN's (N = H) or an LSTM's (N = 4H) whole pre-activation.

    float32 only (a float64 call does nothing): callers take this path where
    _fused_step says so. x is (B, T, C), so step t's
    rows are T * C apart; kernel (C, N), recurrent_kernel (H, N), bias (N,) and
    rec (B, N) are contiguous."""
    if floating is float:
        rnnengine_sgemm_small2(<int>B, <int>N, bias,
                               <int>C, x + t * C, <int>(T * C), kernel, <int>N,
                               <int>H, h, <int>H, recurrent_kernel, <int>N,
                               rec, <int>N)

