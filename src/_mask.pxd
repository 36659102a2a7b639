# cython: language_level=3
# Keras's mask inside the forward kernels (src/_simple_rnn.pyx, _lstm.pyx,
# _gru.pyx): keep is (B, T) uint8, keep[b, t] = 1 where input time t of row b
# is a real step, or NULL (no mask). A masked step carries the row's state
# through unchanged; its output repeats the previous step's output (zeros
# before the first valid step), or is zeros with zero_output_for_mask; the
# last output is the last step's such output (Keras's backend.rnn). Spec:
# rnnengine/kernels/reference.py masked_forward; contract: kernels/contract.py.
#
# A batch-1 call runs its valid steps as runs of the unmasked kernel (so the
# split pool and the fused step serve it as they serve an unmasked call, and
# padding costs a copy a step); a larger batch skips masked rows inside the
# step loop, and a step with no valid row skips its product.
from cython cimport floating
from libc.string cimport memcpy, memset


cdef inline bint _row_runs(const unsigned char* keep, Py_ssize_t T, Py_ssize_t b,
                           Py_ssize_t t) noexcept nogil:
    return keep == NULL or keep[b * T + t] != 0


cdef inline bint _step_runs(const unsigned char* keep, Py_ssize_t B, Py_ssize_t T,
                            Py_ssize_t t) noexcept nogil:
    """Whether some row computes input time t."""
    cdef Py_ssize_t b
    if keep == NULL:
        return True
    for b in range(B):
        if keep[b * T + t]:
            return True
    return False


cdef inline Py_ssize_t _run_end(const unsigned char* keep, Py_ssize_t T, bint go_backwards,
                                Py_ssize_t s) noexcept nogil:
    """Batch 1: the processing index after the run of valid steps starting at s."""
    while s < T and keep[T - 1 - s if go_backwards else s]:
        s += 1
    return s


cdef inline void _write_output(floating* y_out, const floating* h, const unsigned char* keep,
                               Py_ssize_t B, Py_ssize_t T, Py_ssize_t H, Py_ssize_t s,
                               Py_ssize_t t, bint return_sequences,
                               bint zero_output_for_mask) noexcept nogil:
    """After processing step s (input time t): y_out[:, s] (return_sequences),
    or y_out[:, 0] after the last step, by the rule above."""
    cdef Py_ssize_t b, u
    cdef floating* y_b
    cdef bint valid
    if return_sequences:
        for b in range(B):
            y_b = y_out + (b * T + s) * H
            if _row_runs(keep, T, b, t):
                memcpy(y_b, h + b * H, H * sizeof(floating))
            elif zero_output_for_mask or s == 0:
                memset(y_b, 0, H * sizeof(floating))
            else:
                memcpy(y_b, y_b - H, H * sizeof(floating))
    elif s == T - 1:
        for b in range(B):
            valid = _row_runs(keep, T, b, t)
            if not valid and not zero_output_for_mask:
                for u in range(T):
                    if keep[b * T + u]:
                        valid = True
                        break
            if valid:
                memcpy(y_out + b * H, h + b * H, H * sizeof(floating))
            else:
                memset(y_out + b * H, 0, H * sizeof(floating))
