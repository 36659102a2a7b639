# cython: language_level=3
# rnnengine.kernels._cy_blas: a Python-visible hook on the inline _gemm of
# _blas.pxd, so that tests can check the row-major mapping against NumPy.
#
# Contract: the kernels cimport _blas.pxd at compile time (see the Design note
# there); at import they take one thing from this module, the batch-1 split's
# job runner (_pool_run, src/_split.pxd). gemm() below is for tests only: it
# validates its arguments, then computes C = alpha * op(A) @ op(B) + beta * C in
# place with one BLAS call; fused_step_product() likewise exposes the tiled
# float32 step kernel (src/_rec_gemm.h).
#
# The module is named _cy_blas, so Cython does not pair this file with
# _blas.pxd on its own: the cimport below is explicit, as in the kernels.
from cpython.pycapsule cimport PyCapsule_New
from cython cimport floating

from _blas cimport NoTrans, Trans, _gemm, _rowinv_product, rnnengine_det_own, rnnengine_sgemm_small2


def gemm(bint trans_a, bint trans_b, double alpha,
         const floating[:, ::1] A,  # IN: (m, k), or (k, m) with trans_a
         const floating[:, ::1] B,  # IN: (k, n), or (n, k) with trans_b
         double beta,
         floating[:, ::1] C):  # IN/OUT: (m, n)
    """C = alpha * op(A) @ op(B) + beta * C in place, op = transpose where asked.

    Every array C-contiguous and of one dtype (float32 or float64).
    """
    cdef int m = C.shape[0]
    cdef int n = C.shape[1]
    cdef int k = A.shape[0] if trans_a else A.shape[1]
    cdef int m_a = A.shape[1] if trans_a else A.shape[0]
    cdef int k_b = B.shape[1] if trans_b else B.shape[0]
    cdef int n_b = B.shape[0] if trans_b else B.shape[1]
    if m_a != m or n_b != n or k_b != k:
        raise ValueError(
            f"gemm: op(A) is ({m_a}, {k}), op(B) is ({k_b}, {n_b}), C is ({m}, {n})"
        )
    if m == 0 or n == 0:
        return
    # A zero-size operand has no element 0 to take the address of: k == 0
    # only scales C.
    if k == 0:
        for i in range(m):
            for j in range(n):
                C[i, j] = <floating>(beta * C[i, j]) if beta != 0 else 0
        return
    with nogil:
        # C = alpha * op(A) @ op(B) + beta * C
        _gemm(Trans if trans_a else NoTrans, Trans if trans_b else NoTrans,
              m, n, k, <floating>alpha, &A[0, 0], A.shape[1], &B[0, 0], B.shape[1],
              <floating>beta, &C[0, 0], n)


def fused_step_product(float[:, ::1] out,  # OUT: (m, n)
                       const float[::1] bias,  # IN: (n,), or empty for none
                       const float[:, :] a1,  # IN: (m, k1), rows any stride
                       const float[:, ::1] w1,  # IN: (k1, n) or wider (row stride ldw1)
                       const float[:, :] a2,  # IN: (m, k2), rows any stride
                       const float[:, ::1] w2,  # IN: (k2, n) or wider
                       ):
    """out = bias + a1 @ w1[:, :n] + a2 @ w2[:, :n] with src/_rec_gemm.h's tiled
    kernel (float32), for tests; False where the build has no such kernel.

    a1 and a2 must have unit column stride (rows may be any number of elements
    apart, as a step's x_t rows are T * C apart in x)."""
    cdef int m = out.shape[0]
    cdef int n = out.shape[1]
    cdef int k1 = a1.shape[1]
    cdef int k2 = a2.shape[1]
    if a1.shape[0] != m or a2.shape[0] != m or w1.shape[0] != k1 or w2.shape[0] != k2 \
            or w1.shape[1] < n or w2.shape[1] < n or (bias.shape[0] not in (0, n)):
        raise ValueError("fused_step_product: shapes do not match")
    if (k1 and a1.strides[1] != sizeof(float)) or (k2 and a2.strides[1] != sizeof(float)):
        raise ValueError("fused_step_product: a1 and a2 need unit column stride")
    if m == 0 or n == 0:
        return True
    cdef const float* b_p = &bias[0] if bias.shape[0] else NULL
    # Zero-size operands: any valid address, never read with k = 0.
    cdef const float* a1_p = &a1[0, 0] if k1 else b_p
    cdef const float* a2_p = &a2[0, 0] if k2 else b_p
    cdef const float* w1_p = &w1[0, 0] if k1 else b_p
    cdef const float* w2_p = &w2[0, 0] if k2 else b_p
    cdef int lda1 = a1.strides[0] // sizeof(float)
    cdef int lda2 = a2.strides[0] // sizeof(float)
    with nogil:
        done = rnnengine_sgemm_small2(m, n, b_p, k1, a1_p, lda1, w1_p, w1.shape[1],
                                      k2, a2_p, lda2, w2_p, w2.shape[1], &out[0, 0], n)
    return bool(done)


cdef extern from "_step_pool.h":
    ctypedef struct rnn_pool_api_t:
        pass
    rnn_pool_api_t rnn_pool_api
    long long rnn_pool_helper_tickets() noexcept nogil
    long long rnn_pool_split_calls() noexcept nogil
    void rnn_pool_set_adaptive(int on) noexcept nogil
    int rnn_pool_tuning(int i, int* H, int* B, unsigned* calls, unsigned* n_alone,
                        unsigned* n_split, double* ns_alone, double* ns_split) noexcept nogil
    const int RNNENGINE_HAVE_POOL

# The batch-1 split's job runner (src/_split.pxd): one copy of its state, and
# one helper thread, for every kernel module; they take this pointer at import.
_pool_api = PyCapsule_New(<void*>&rnn_pool_api, b"rnnengine.kernels._cy_blas._pool_api", NULL)


def pool_available():
    """Whether this build can run a batch-1 step on two threads (POSIX threads)."""
    return bool(RNNENGINE_HAVE_POOL)


def pool_helper_tickets():
    """Chunks the helper thread has run in this process (for tests)."""
    return rnn_pool_helper_tickets()


def pool_split_calls():
    """Calls that ran split over two threads in this process (for tests)."""
    return rnn_pool_split_calls()


def pool_set_adaptive(bint on):
    """on (the default): the pool times split and lone calls of each kind and
    takes the faster (src/_step_pool.h); off: every eligible call splits (tests)."""
    rnn_pool_set_adaptive(on)


def pool_tuning():
    """The split's timing table: one dict per kind of call (H, B) with its
    calls, timed calls alone and split, and their average µs per step."""
    cdef int i, H, B
    cdef unsigned calls, n_alone, n_split
    cdef double ns_alone, ns_split
    rows = []
    for i in range(64):
        if rnn_pool_tuning(i, &H, &B, &calls, &n_alone, &n_split, &ns_alone, &ns_split):
            rows.append({"H": H, "B": B, "calls": calls, "timed_alone": n_alone,
                         "timed_split": n_split, "us_per_step_alone": ns_alone / 1e3,
                         "us_per_step_split": ns_split / 1e3})
    return rows


# Ctrl-C during a long call (src/_interrupt.h): one copy of its state, for
# every kernel module (_blas.pxd, _load_interrupt).
cdef extern from "_interrupt.h":
    ctypedef struct rn_interrupt_api_t:
        long long min_work
    rn_interrupt_api_t rn_interrupt_api
    const int RNNENGINE_HAVE_INTERRUPT

_interrupt_api = PyCapsule_New(<void*>&rn_interrupt_api, b"rnnengine.kernels._cy_blas._interrupt_api", NULL)


def interrupt_available():
    """Whether a long call of this build stops at SIGINT (POSIX signals)."""
    return bool(RNNENGINE_HAVE_INTERRUPT)


def set_watch_min_work(long long n):
    """Multiply-adds from which a call is watched for SIGINT (tests set it low)."""
    rn_interrupt_api.min_work = n


def get_watch_min_work():
    return rn_interrupt_api.min_work


# Deterministic mode's flag, which every kernel module reads (_blas.pxd, _load_det).
_det_flag = PyCapsule_New(<void*>&rnnengine_det_own, b"rnnengine.kernels._cy_blas._det_flag", NULL)


def set_deterministic(bint flag):
    """Deterministic mode on or off for every kernel module (rnnengine.set_deterministic)."""
    global rnnengine_det_own
    rnnengine_det_own = 1 if flag else 0


def rowinv_product(floating[:, ::1] out,  # OUT: (m, n)
                   const floating[:, ::1] a,  # IN: (m, k)
                   const floating[:, ::1] w,  # IN: (k, n)
                   ):
    """out = a @ w with deterministic mode's row-invariant product, for tests."""
    if a.shape[0] != out.shape[0] or w.shape[1] != out.shape[1] or a.shape[1] != w.shape[0]:
        raise ValueError("rowinv_product: shapes do not match")
    if out.shape[0] == 0 or out.shape[1] == 0:
        return
    if a.shape[1] == 0:
        out[:, :] = 0
        return
    with nogil:
        _rowinv_product(&out[0, 0], &a[0, 0], &w[0, 0], <int>out.shape[0], <int>out.shape[1],
                        <int>a.shape[1], <int>a.shape[1], <int>w.shape[1], <int>out.shape[1])
