# cython: language_level=3
# rnnengine.kernels._cy_blas: a Python-visible hook on the inline _gemm of
# _blas.pxd, so that tests can check the row-major mapping against NumPy.
#
# Contract: the kernels do not import this module; they cimport _blas.pxd at
# compile time (see the Design note there). gemm() below is for tests only: it
# validates its arguments, then computes C = alpha * op(A) @ op(B) + beta * C in
# place with one BLAS call.
#
# The module is named _cy_blas, so Cython does not pair this file with
# _blas.pxd on its own: the cimport below is explicit, as in the kernels.
from cython cimport floating

from _blas cimport NoTrans, Trans, _gemm


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
